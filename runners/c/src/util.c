/* Buffers, logging, clocks and small file helpers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"

int log_threshold = LOG_INFO;

int buf_reserve(buf_t *b, size_t n) {
    if (b->start > 0 && b->start + b->len + n > b->cap) {
        memmove(b->data, b->data + b->start, b->len);
        b->start = 0;
    }
    if (b->start + b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->start + b->len + n) cap *= 2;
        uint8_t *data = realloc(b->data, cap);
        if (!data) return -1;
        b->data = data;
        b->cap = cap;
    }
    return 0;
}

int buf_append(buf_t *b, const void *bytes, size_t n) {
    if (n == 0) return 0;
    if (buf_reserve(b, n) != 0) return -1;
    memcpy(b->data + b->start + b->len, bytes, n);
    b->len += n;
    return 0;
}

void buf_consume(buf_t *b, size_t n) {
    if (n >= b->len) {
        b->start = 0;
        b->len = 0;
        /* A buffer that grew for a burst gives the memory back once empty. */
        if (b->cap > (1u << 20)) {
            free(b->data);
            b->data = NULL;
            b->cap = 0;
        }
        return;
    }
    b->start += n;
    b->len -= n;
}

void buf_free(buf_t *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void logmsg(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warning", "error"};
    if (level < log_threshold) return;
    char stamp[40];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S%z", &tm);
    char line[2048];
    va_list args;
    va_start(args, fmt);
    vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    fprintf(stderr, "%s %s heddle.runner: %s\n", stamp, names[level], line);
    fflush(stderr);
}

double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        logmsg(LOG_ERROR, "out of memory");
        abort();
    }
    return p;
}

char *xstrdup(const char *s) {
    char *p = strdup(s ? s : "");
    if (!p) {
        logmsg(LOG_ERROR, "out of memory");
        abort();
    }
    return p;
}

char *xasprintf(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    char *out = NULL;
    int n = vasprintf(&out, fmt, args);
    va_end(args);
    if (n < 0) {
        logmsg(LOG_ERROR, "out of memory");
        abort();
    }
    return out;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) {
        /* A directory a job made unwritable: make it writable and try again. */
        char *parent = xstrdup(path);
        char *slash = strrchr(parent, '/');
        if (slash) {
            *slash = 0;
            chmod(parent, 0700);
        }
        free(parent);
        chmod(path, 0700);
        remove(path);
    }
    return 0;
}

int remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

int mkdir_p(const char *path) {
    char *copy = xstrdup(path);
    for (char *p = copy + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
                free(copy);
                return -1;
            }
            *p = '/';
        }
    }
    int result = mkdir(copy, 0755);
    free(copy);
    return (result == 0 || errno == EEXIST) ? 0 : -1;
}

char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
    return s;
}
