/* Resource limits through cgroups, the same as the Swift runner's (Sources/Runner/Cgroups.swift):
 * each node in cgroups of its own made under this runner's, its limits written before it
 * starts, its first process joining them itself (a shell writes its pid, then execs the
 * sandbox), and the memory cgroup read afterwards for whether the kernel killed for memory.
 * cgroup v1 (a directory in each of the memory, pids and cpu hierarchies) where the memory
 * controller is v1; cgroup v2 (a delegated cgroup offering memory: the runner moves itself into
 * a leaf `runner` and makes nodes' cgroups beside it) otherwise. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner.h"

static const char *v1_controllers[] = {"memory", "pids", "cpu"};

static char *read_all(const char *path) {
    FILE *file = fopen(path, "re");
    if (!file) return NULL;
    size_t cap = 4096, n = 0;
    char *text = malloc(cap);
    if (!text) abort();
    size_t got;
    while ((got = fread(text + n, 1, cap - n - 1, file)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            text = realloc(text, cap);
            if (!text) abort();
        }
    }
    fclose(file);
    text[n] = '\0';
    return text;
}

static int write_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int write_at(const char *dir, const char *file, const char *text) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return write_text(path, text);
}

static int write_number(const char *dir, const char *file, long long value) {
    char text[32];
    snprintf(text, sizeof text, "%lld", value);
    return write_at(dir, file, text);
}

/* The probe: make and remove a cgroup in every parent. */
static int probe(cgroups_t *c, char *why, size_t whylen) {
    for (size_t i = 0; i < c->n; i++) {
        char *dir = xasprintf("%s/heddle-probe-%d", c->parents[i], (int)getpid());
        if (mkdir(dir, 0755) != 0) {
            snprintf(why, whylen, "cannot make a cgroup in %s (%s): %s", c->parents[i], c->controllers[i], strerror(errno));
            free(dir);
            return -1;
        }
        rmdir(dir);
        free(dir);
    }
    return 0;
}

int cgroups_detect(cgroups_t *c, char *why, size_t whylen) {
    memset(c, 0, sizeof *c);
    char *own = read_all("/proc/self/cgroup"), *mounts = read_all("/proc/self/mountinfo");
    if (!own || !mounts) {
        free(own);
        free(mounts);
        snprintf(why, whylen, "no /proc/self/cgroup");
        return -1;
    }
    char *v2_mount = NULL, *v1_mount[3] = {NULL, NULL, NULL};
    for (char *save = NULL, *line = strtok_r(mounts, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *dash = strstr(line, " - ");
        if (!dash) continue;
        *dash = '\0';
        char *fields[6] = {0};
        size_t nf = 0;
        for (char *s2 = NULL, *f = strtok_r(line, " ", &s2); f && nf < 6; f = strtok_r(NULL, " ", &s2)) fields[nf++] = f;
        char *tail = dash + 3, *s3 = NULL;
        char *type = strtok_r(tail, " ", &s3), *source = strtok_r(NULL, " ", &s3), *options = strtok_r(NULL, " ", &s3);
        (void)source;
        if (nf < 5 || !type || !options) continue;
        if (strcmp(type, "cgroup2") == 0 && !v2_mount) v2_mount = xstrdup(fields[4]);
        if (strcmp(type, "cgroup") == 0) {
            for (char *s4 = NULL, *o = strtok_r(options, ",", &s4); o; o = strtok_r(NULL, ",", &s4))
                for (size_t i = 0; i < 3; i++)
                    if (strcmp(o, v1_controllers[i]) == 0 && !v1_mount[i]) v1_mount[i] = xstrdup(fields[4]);
        }
    }
    char *v2_path = NULL, *v1_path[3] = {NULL, NULL, NULL};
    for (char *save = NULL, *line = strtok_r(own, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *first = strchr(line, ':');
        if (!first) continue;
        char *second = strchr(first + 1, ':');
        if (!second) continue;
        *first = *second = '\0';
        char *controllers = first + 1, *path = second + 1;
        if (strcmp(line, "0") == 0 && !*controllers) v2_path = xstrdup(path);
        for (char *s2 = NULL, *k = strtok_r(controllers, ",", &s2); k; k = strtok_r(NULL, ",", &s2))
            for (size_t i = 0; i < 3; i++)
                if (strcmp(k, v1_controllers[i]) == 0 && !v1_path[i]) v1_path[i] = xstrdup(path);
    }
    int result = -1;
    if (v1_mount[0] && v1_path[0]) {
        c->v2 = 0;
        for (size_t i = 0; i < 3; i++) {
            if (!v1_mount[i] || !v1_path[i]) continue;
            c->controllers[c->n] = v1_controllers[i];
            c->parents[c->n++] = xasprintf("%s%s", v1_mount[i], strcmp(v1_path[i], "/") == 0 ? "" : v1_path[i]);
        }
        result = probe(c, why, whylen);
        if (result == 0) snprintf(why, whylen, "cgroup v1 (%s%s%s)", c->controllers[0], c->n > 1 ? ", ..." : "", "");
    } else if (v2_mount && v2_path) {
        char *dir = xasprintf("%s%s", v2_mount, strcmp(v2_path, "/") == 0 ? "" : v2_path);
        char *controllers_file = xasprintf("%s/cgroup.controllers", dir);
        char *offered = read_all(controllers_file);
        free(controllers_file);
        if (!offered || !strstr(offered, "memory")) {
            snprintf(why, whylen, "cgroup v2 without the memory controller delegated to this runner (%s)", dir);
            free(dir);
        } else {
            char *leaf = xasprintf("%s/runner", dir);
            mkdir(leaf, 0755);
            char *procs = xasprintf("%s/cgroup.procs", leaf), pid[32];
            snprintf(pid, sizeof pid, "%d", (int)getpid());
            if (write_text(procs, pid) != 0) {
                snprintf(why, whylen, "cgroup v2: cannot move this runner into %s", leaf);
                free(dir);
            } else {
                char *subtree = xasprintf("%s/cgroup.subtree_control", dir);
                write_text(subtree, "+memory");
                write_text(subtree, "+pids");
                write_text(subtree, "+cpu");
                free(subtree);
                c->v2 = 1;
                c->controllers[0] = "unified";
                c->parents[0] = dir;
                c->n = 1;
                result = probe(c, why, whylen);
                if (result == 0) snprintf(why, whylen, "cgroup v2 (%s)", dir);
            }
            free(procs);
            free(leaf);
        }
        free(offered);
    } else {
        snprintf(why, whylen, "no cgroup hierarchy with the memory controller");
    }
    if (result != 0) {
        for (size_t i = 0; i < c->n; i++) free(c->parents[i]);
        c->n = 0;
    }
    free(v2_mount);
    free(v2_path);
    for (size_t i = 0; i < 3; i++) {
        free(v1_mount[i]);
        free(v1_path[i]);
    }
    free(own);
    free(mounts);
    return result;
}

int cgroups_make(const cgroups_t *c, const char *name, const limits_t *limits, char ***procs, char *err, size_t errlen) {
    *procs = calloc(c->n + 1, sizeof **procs);
    if (!*procs) abort();
    for (size_t i = 0; i < c->n; i++) {
        char *dir = xasprintf("%s/%s", c->parents[i], name);
        if (mkdir(dir, 0755) != 0) {
            snprintf(err, errlen, "cannot make its cgroup %s: %s", dir, strerror(errno));
            free(dir);
            return -1;
        }
        (*procs)[i] = xasprintf("%s/cgroup.procs", dir);
        const char *k = c->controllers[i];
        if (c->v2) {
            if (limits->memory) {
                write_number(dir, "memory.max", limits->memory);
                write_at(dir, "memory.swap.max", "0");
            }
            if (limits->pids) write_number(dir, "pids.max", limits->pids);
            if (limits->cpu_millis) {
                char quota[64];
                snprintf(quota, sizeof quota, "%lld 100000", limits->cpu_millis * 100);
                write_at(dir, "cpu.max", quota);
            }
        } else if (strcmp(k, "memory") == 0 && limits->memory) {
            write_number(dir, "memory.limit_in_bytes", limits->memory);
            write_number(dir, "memory.memsw.limit_in_bytes", limits->memory); /* swap too, where accounted */
        } else if (strcmp(k, "pids") == 0 && limits->pids) {
            write_number(dir, "pids.max", limits->pids);
        } else if (strcmp(k, "cpu") == 0 && limits->cpu_millis) {
            write_number(dir, "cpu.cfs_period_us", 100000);
            write_number(dir, "cpu.cfs_quota_us", limits->cpu_millis * 100);
        }
        free(dir);
    }
    return 0;
}

int cgroups_out_of_memory(const cgroups_t *c, const char *name) {
    if (c->n == 0) return 0;
    size_t memory = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->v2 || strcmp(c->controllers[i], "memory") == 0) memory = i;
    char *path = xasprintf("%s/%s/%s", c->parents[memory], name, c->v2 ? "memory.events" : "memory.oom_control");
    char *text = read_all(path);
    free(path);
    int killed = 0, counted = 0;
    if (text) {
        char *at = strstr(text, "oom_kill ");
        if (at) {
            counted = 1;
            killed = atol(at + 9) > 0;
        }
        free(text);
    }
    if (!counted && !c->v2) { /* v1 kernels before 4.13 count no kills: the limit was hit */
        char *fails = xasprintf("%s/%s/memory.failcnt", c->parents[memory], name);
        char *count = read_all(fails);
        killed = count && atol(count) > 0;
        free(count);
        free(fails);
    }
    return killed;
}

/* Cgroups of ended nodes whose processes were not yet gone: tried again at each removal. */
static char **pending;
static size_t n_pending;

void cgroups_sweep(void) {
    size_t kept = 0;
    for (size_t i = 0; i < n_pending; i++) {
        if (rmdir(pending[i]) != 0 && errno == EBUSY) pending[kept++] = pending[i];
        else free(pending[i]);
    }
    n_pending = kept;
}

void cgroups_remove_leftovers(const cgroups_t *c) {
    for (size_t i = 0; i < c->n; i++) {
        DIR *dir = opendir(c->parents[i]);
        if (!dir) continue;
        struct dirent *entry;
        while ((entry = readdir(dir))) {
            /* heddle-PID-...: a runner's whose process is gone (another runner's stay). */
            if (strncmp(entry->d_name, "heddle-", 7) != 0) continue;
            long pid = atol(entry->d_name + 7);
            if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
            char *path = xasprintf("%s/%s", c->parents[i], entry->d_name);
            rmdir(path);
            free(path);
        }
        closedir(dir);
    }
}

void cgroups_remove(const cgroups_t *c, const char *name) {
    cgroups_sweep();
    for (size_t i = 0; i < c->n; i++) {
        char *dir = xasprintf("%s/%s", c->parents[i], name);
        if (rmdir(dir) != 0 && errno == EBUSY) {
            pending = realloc(pending, (n_pending + 1) * sizeof *pending);
            if (!pending) abort();
            pending[n_pending++] = dir;
        } else {
            free(dir);
        }
    }
}

/* "64M" -> 67108864; plain digits are bytes; -1 when not a size. */
static long long parse_bytes(const char *text) {
    char *end;
    errno = 0;
    long long n = strtoll(text, &end, 10);
    if (end == text || errno || n < 0) return -1;
    long long unit = 1;
    if (*end) {
        switch (*end) {
        case 'K': case 'k': unit = 1LL << 10; break;
        case 'M': case 'm': unit = 1LL << 20; break;
        case 'G': case 'g': unit = 1LL << 30; break;
        case 'T': case 't': unit = 1LL << 40; break;
        default: return -1;
        }
        if (end[1]) return -1;
    }
    if (n > (1LL << 62) / unit) return -1;
    return n * unit;
}

int limits_parse(const char *text, limits_t *limits, char *err, size_t errlen) {
    memset(limits, 0, sizeof *limits);
    char *copy = xstrdup(text);
    int result = 0;
    for (char *save = NULL, *part = strtok_r(copy, ",", &save); part && result == 0; part = strtok_r(NULL, ",", &save)) {
        part = trim(part);
        if (!*part) continue;
        char *eq = strchr(part, '=');
        if (!eq) {
            snprintf(err, errlen, "'%s' is not NAME=VALUE (memory=2G,cpus=2,pids=1000)", part);
            result = -1;
            break;
        }
        *eq = '\0';
        char *name = trim(part), *value = trim(eq + 1), *end;
        if (strcmp(name, "memory") == 0) {
            long long bytes = parse_bytes(value);
            if (bytes < (4LL << 20)) {
                snprintf(err, errlen, "memory limit '%s' is not a size of at least 4M (bytes, or with K, M, G or T: 512M, 2G)", value);
                result = -1;
            }
            limits->memory = bytes;
        } else if (strcmp(name, "cpus") == 0) {
            double cpus = strtod(value, &end);
            if (end == value || *end || cpus < 0.01 || cpus > 1024) {
                snprintf(err, errlen, "cpus limit '%s' is not a number of CPUs from 0.01 to 1024 (2, 0.5)", value);
                result = -1;
            }
            limits->cpu_millis = (long long)(cpus * 1000 + 0.5);
        } else if (strcmp(name, "pids") == 0) {
            long long count = strtoll(value, &end, 10);
            if (end == value || *end || count < 1 || count > 4194304) {
                snprintf(err, errlen, "pids limit '%s' is not a number from 1 to 4194304", value);
                result = -1;
            }
            limits->pids = count;
        } else {
            snprintf(err, errlen, "unknown limit '%s'; the limits are memory, cpus and pids", name);
            result = -1;
        }
    }
    free(copy);
    return result;
}

/* A size as a person writes it: 67108864 -> "64M". */
void limits_size(long long bytes, char *out, size_t len) {
    static const char units[] = "TGMK";
    for (int i = 0; i < 4; i++) {
        long long factor = 1LL << (10 * (4 - i));
        if (bytes >= factor && bytes % factor == 0) {
            snprintf(out, len, "%lld%c", bytes / factor, units[i]);
            return;
        }
    }
    snprintf(out, len, "%lld", bytes);
}

char **cgroups_joining(char **procs, char *const argv[]) {
    size_t n = 0, m = 0;
    while (procs[n]) n++;
    while (argv[m]) m++;
    char **out = calloc(n + m + 6, sizeof *out);
    if (!out) abort();
    size_t k = 0;
    out[k++] = xstrdup("/bin/sh");
    out[k++] = xstrdup("-c");
    out[k++] = xstrdup("while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 125; shift; done; shift; exec \"$@\"");
    out[k++] = xstrdup("heddle-cgroup");
    for (size_t i = 0; i < n; i++) out[k++] = xstrdup(procs[i]);
    out[k++] = xstrdup("--");
    for (size_t i = 0; i < m; i++) out[k++] = xstrdup(argv[i]);
    out[k] = NULL;
    return out;
}
