/* Processes: a node's shell in its own process group with one pipe for stdout and stderr
 * (their bytes stay in write order), and the node's whole tree found by a marker every
 * descendant inherits, HEDDLE_NODE_TOKEN=<token>, so even a `setsid` grandchild is ended. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "runner.h"

pid_t spawn_process(char *const argv[], char *const env[], const char *directory, int *out_fd, char *err,
                    size_t errlen) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    /* Nothing else the runner holds (descriptors its own parent left it) reaches a node. */
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    if (directory) posix_spawn_file_actions_addchdir_np(&actions, directory);

    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    int reset[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGQUIT};
    for (size_t i = 0; i < sizeof reset / sizeof reset[0]; i++) sigaddset(&defaults, reset[i]);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setpgroup(&attributes, 0);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    pid_t pid = 0;
    int result = posix_spawn(&pid, argv[0], &actions, &attributes, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    close(fds[1]);
    if (result != 0) {
        close(fds[0]);
        snprintf(err, errlen, "cannot start %s: %s", argv[0], strerror(result));
        return -1;
    }
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    *out_fd = fds[0];
    return pid;
}

void make_token(char out[33]) {
    uint8_t bytes[16];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
        /* Unique enough within this runner: the time and a counter. */
        static unsigned counter;
        snprintf(out, 33, "%016llx%08x%08x", (unsigned long long)now_ms(), (unsigned)getpid(), ++counter);
        return;
    }
    for (size_t i = 0; i < sizeof bytes; i++) snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

/* Whether /proc/PID/environ holds needle (an entry "NAME=VALUE\0"). */
static int environ_holds(const char *pid, const char *needle, size_t needle_len) {
    char path[300];
    snprintf(path, sizeof path, "/proc/%s/environ", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    /* Read in blocks; an entry may straddle two of them, so keep the tail of the last. */
    char block[8192 + 256];
    size_t kept = 0;
    int found = 0;
    int at_entry_start = 1;
    for (;;) {
        ssize_t n = read(fd, block + kept, sizeof block - kept - 1);
        if (n <= 0) break;
        size_t len = kept + (size_t)n;
        size_t i = 0;
        while (i < len) {
            if (at_entry_start) {
                if (len - i < needle_len) break; /* maybe in the next block */
                if (memcmp(block + i, needle, needle_len) == 0) {
                    found = 1;
                    break;
                }
            }
            char *nul = memchr(block + i, 0, len - i);
            if (!nul) {
                at_entry_start = 0;
                i = len;
                break;
            }
            i = (size_t)(nul - block) + 1;
            at_entry_start = 1;
        }
        if (found) break;
        kept = len - i;
        if (kept > 256) kept = 0; /* an entry longer than the needle, not ours */
        memmove(block, block + i, kept);
    }
    close(fd);
    return found;
}

static int is_zombie(const char *pid) {
    char path[300], text[512];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return 1;
    text[n] = 0;
    char *close_paren = strrchr(text, ')');
    if (!close_paren || close_paren[1] == 0 || close_paren[2] == 0) return 1;
    return close_paren[2] == 'Z' || close_paren[2] == 'X';
}

int signal_tree(pid_t group, const char *token, int sig) {
    if (group > 0) kill(-group, sig);
    char needle[80];
    int needle_len = snprintf(needle, sizeof needle, "HEDDLE_NODE_TOKEN=%s", token) + 1; /* with the NUL */
    DIR *proc = opendir("/proc");
    if (!proc) return 0;
    int found = 0;
    pid_t me = getpid();
    struct dirent *entry;
    while ((entry = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end != 0 || pid <= 0 || pid == me) continue;
        if (environ_holds(entry->d_name, needle, (size_t)needle_len) && !is_zombie(entry->d_name)) {
            kill((pid_t)pid, sig);
            found++;
        }
    }
    closedir(proc);
    return found;
}
