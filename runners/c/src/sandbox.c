/* A node's sandbox, built with bubblewrap (`bwrap`), the same as the Swift runner's
 * (Sources/Runner/Sandbox.swift has the full list of what a node sees): its own PID, IPC and
 * UTS namespaces and session; the host's /usr, /etc and /opt read-only, /bin, /sbin and /lib*
 * as on the host; a fresh /dev and /proc; a private /tmp (also HOME) and /var/tmp; the job's
 * workspace as its only writable place; --work-dir emptied and the runner's key replaced by
 * an empty file; no capabilities; the network cut when the node has none. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

static const char *read_only_trees[] = {"/usr", "/etc", "/opt"};
static const char *system_links[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};

typedef struct {
    char **items;
    size_t n, cap;
} args_t;

static void add(args_t *a, const char *item) {
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->items = realloc(a->items, a->cap * sizeof *a->items);
        if (!a->items) abort();
    }
    a->items[a->n++] = xstrdup(item);
    a->items[a->n] = NULL;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* An absolute path with its symbolic links resolved; the path itself when it does not exist. */
static char *resolved(const char *path) {
    char buffer[PATH_MAX];
    if (realpath(path, buffer)) return xstrdup(buffer);
    return xstrdup(path);
}

static int under_read_only_tree(const char *path) {
    for (size_t i = 0; i < sizeof read_only_trees / sizeof *read_only_trees; i++) {
        size_t n = strlen(read_only_trees[i]);
        if (strncmp(path, read_only_trees[i], n) == 0 && path[n] == '/') return 1;
    }
    return 0;
}

char *find_program(const char *name) {
    const char *path = getenv("PATH");
    char *list = xasprintf("%s:/usr/bin:/bin:/usr/local/bin", path ? path : "");
    char *found = NULL;
    for (char *dir = strtok(list, ":"); dir && !found; dir = strtok(NULL, ":")) {
        if (!*dir) continue;
        char *candidate = xasprintf("%s/%s", dir, name);
        if (access(candidate, X_OK) == 0) found = candidate;
        else free(candidate);
    }
    free(list);
    return found;
}

/* The host's system trees as a node sees them (--ro-bind and --symlink arguments), read once
 * when the runner starts. */
static char **system_mounts(void) {
    args_t a = {0};
    for (size_t i = 0; i < sizeof read_only_trees / sizeof *read_only_trees; i++) {
        if (!exists(read_only_trees[i])) continue;
        add(&a, "--ro-bind");
        add(&a, read_only_trees[i]);
        add(&a, read_only_trees[i]);
    }
    for (size_t i = 0; i < sizeof system_links / sizeof *system_links; i++) {
        char target[PATH_MAX];
        ssize_t n = readlink(system_links[i], target, sizeof target - 1);
        if (n > 0) {
            target[n] = '\0';
            add(&a, "--symlink");
            add(&a, target);
            add(&a, system_links[i]);
        } else if (exists(system_links[i])) {
            add(&a, "--ro-bind");
            add(&a, system_links[i]);
            add(&a, system_links[i]);
        }
    }
    /* systemd-resolved's stub (where /etc/resolv.conf points on such hosts). */
    add(&a, "--ro-bind-try");
    add(&a, "/run/systemd/resolve");
    add(&a, "/run/systemd/resolve");
    return a.items;
}

char **sandbox_argv(const sandbox_t *s, const char *workspace, int network, char *const command[]) {
    args_t a = {0};
    add(&a, s->program);
    const char *fixed[] = {"--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) add(&a, fixed[i]);
    if (geteuid() == 0) {
        add(&a, "--cap-drop");
        add(&a, "ALL");
    }
    if (!network) add(&a, "--unshare-net");
    for (size_t i = 0; s->system[i]; i++) add(&a, s->system[i]);
    const char *rest[] = {"--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs"};
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++) add(&a, rest[i]);
    add(&a, s->work_dir);
    if (under_read_only_tree(s->key) && exists(s->key)) {
        add(&a, "--ro-bind");
        add(&a, s->empty);
        add(&a, s->key);
    }
    char *space = resolved(workspace);
    const char *bind[] = {"--bind", space, space, "--chdir", space, "--setenv", "HOME", "/tmp", "--"};
    for (size_t i = 0; i < sizeof bind / sizeof *bind; i++) add(&a, bind[i]);
    free(space);
    for (size_t i = 0; command[i]; i++) add(&a, command[i]);
    return a.items;
}

void sandbox_argv_free(char **argv) {
    if (!argv) return;
    for (size_t i = 0; argv[i]; i++) free(argv[i]);
    free(argv);
}

int sandbox_init(sandbox_t *s, const char *work_dir, const char *key, char *err, size_t errlen) {
    s->program = find_program("bwrap");
    if (!s->program) {
        snprintf(err, errlen, "--isolation bwrap (the default): bubblewrap's `bwrap` is not installed (Debian: apt-get install "
                              "bubblewrap); or run jobs unisolated with --isolation none");
        return -1;
    }
    s->work_dir = resolved(work_dir);
    s->key = resolved(key);
    s->system = system_mounts();
    /* An empty file, bound over each hidden one. */
    s->empty = xasprintf("%s/.sandbox-empty", s->work_dir);
    unlink(s->empty); /* read-only: made anew */
    int empty = open(s->empty, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (empty < 0) {
        snprintf(err, errlen, "cannot create %s for the job sandbox: %s", s->empty, strerror(errno));
        return -1;
    }
    close(empty);
    /* Build one sandbox and run /bin/true in it. */
    char *scratch = xasprintf("%s/.sandbox-probe-%d", s->work_dir, (int)getpid());
    mkdir(scratch, 0700);
    char *command[] = {"/bin/true", NULL};
    char **argv = sandbox_argv(s, scratch, 1, command);
    int fds[2];
    int status = -1;
    char said[400] = "";
    if (pipe(fds) == 0) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
        posix_spawn_file_actions_addclose(&actions, fds[0]);
        pid_t pid;
        if (posix_spawn(&pid, s->program, &actions, NULL, argv, environ) == 0) {
            close(fds[1]);
            size_t got = 0;
            ssize_t n;
            while (got < sizeof said - 1 && ((n = read(fds[0], said + got, sizeof said - 1 - got)) > 0 || (n < 0 && errno == EINTR)))
                if (n > 0) got += (size_t)n;
            said[got] = '\0';
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        } else {
            close(fds[1]);
        }
        close(fds[0]);
        posix_spawn_file_actions_destroy(&actions);
    }
    sandbox_argv_free(argv);
    rmdir(scratch);
    free(scratch);
    if (status != 0) {
        char *end = said + strlen(said);
        while (end > said && (end[-1] == '\n' || end[-1] == ' ')) *--end = '\0';
        snprintf(err, errlen,
                 "--isolation bwrap (the default): cannot build a sandbox here (%s); jobs would run unisolated: allow user "
                 "namespaces or run as root, or run with --isolation none",
                 *said ? said : "bwrap did not run /bin/true");
        return -1;
    }
    return 0;
}
