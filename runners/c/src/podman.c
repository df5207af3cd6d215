/* Nodes that name a container image run in it with podman, as heddle-runner does
 * (Sources/Runner/Podman.swift): one container per node, `heddle-PID-JOB-EPOCH-NODE`, removed
 * when the node ends; the workspace at its own path as the only host directory; podman's
 * limits; the node's variables passed by name (`--env NAME`), so no value is on the command
 * line; the node's marker among them, so a stop finds every process in the container. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

typedef struct {
    char **items;
    size_t n, cap;
} strv_t;

static void strv_add(strv_t *v, char *owned) {
    if (v->n + 2 > v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        char **items = realloc(v->items, v->cap * sizeof *items);
        if (!items) abort();
        v->items = items;
    }
    v->items[v->n++] = owned;
    v->items[v->n] = NULL;
}

static void strv_add_name(strv_t *v, const char *name) {
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->items[i], name) == 0) return;
    strv_add(v, xasprintf("%s", name));
}

char *podman_name(const node_t *node) {
    const job_t *job = node->job;
    return xasprintf("heddle-%d-%llu-%llu-%s", (int)getpid(), (unsigned long long)job->job_id,
                     (unsigned long long)job->epoch, node->spec->name);
}

char **podman_argv(const char *podman, const node_t *node, const char *name) {
    const job_t *job = node->job;
    const Heddle__V1__Assignment *a = job->assignment;
    strv_t v = {0};
    const char *fixed[] = {"run", "--rm", "--pull=missing", "--name"};
    strv_add(&v, xasprintf("%s", podman));
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) strv_add(&v, xasprintf("%s", fixed[i]));
    strv_add(&v, xasprintf("%s", name));
    strv_add(&v, xasprintf("--label"));
    strv_add(&v, xasprintf("heddle.runner=%d", (int)getpid()));
    strv_add(&v, xasprintf("--network"));
    strv_add(&v, xasprintf("%s", node->spec->no_network ? "none" : "host"));
    strv_add(&v, xasprintf("--security-opt"));
    strv_add(&v, xasprintf("no-new-privileges"));
    strv_add(&v, xasprintf("--volume"));
    strv_add(&v, xasprintf("%s:%s", job->workspace, job->workspace));
    strv_add(&v, xasprintf("--workdir"));
    strv_add(&v, xasprintf("%s", job->workspace));
    if (node->limits.memory) {
        strv_add(&v, xasprintf("--memory"));
        strv_add(&v, xasprintf("%lld", node->limits.memory));
        strv_add(&v, xasprintf("--memory-swap"));
        strv_add(&v, xasprintf("%lld", node->limits.memory));
    }
    if (node->limits.cpu_millis) {
        strv_add(&v, xasprintf("--cpus"));
        strv_add(&v, xasprintf("%.3f", node->limits.cpu_millis / 1000.0));
    }
    if (node->limits.pids) {
        strv_add(&v, xasprintf("--pids-limit"));
        strv_add(&v, xasprintf("%lld", (long long)node->limits.pids));
    }
    /* The node's variables by name (their values are in podman's environment). */
    strv_t names = {0};
    for (size_t i = 0; i < a->n_env; i++) strv_add_name(&names, a->env[i]->key);
    for (size_t i = 0; i < node->spec->n_env; i++) strv_add_name(&names, node->spec->env[i]->key);
    for (size_t i = 0; i < node->spec->n_secrets; i++) strv_add_name(&names, node->spec->secrets[i]->key);
    const char *own[] = {"HEDDLE_NODE", "HEDDLE_WORKSPACE", "HEDDLE_COMMIT", "HEDDLE_NODE_TOKEN"};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++) strv_add_name(&names, own[i]);
    for (size_t i = 0; i < names.n; i++) {
        strv_add(&v, xasprintf("--env"));
        strv_add(&v, names.items[i]);
    }
    free(names.items);
    strv_add(&v, xasprintf("%s", node->spec->image));
    strv_add(&v, xasprintf("/bin/sh"));
    strv_add(&v, xasprintf("-c"));
    strv_add(&v, xasprintf("%s", node->spec->run));
    return v.items;
}

/* Runs podman with these arguments, its output discarded; waits when `wait` (at most 30 s),
 * else leaves the child to jobs_reap. */
static void podman_run(const char *podman, char *const args[], int wait) {
    pid_t pid = fork();
    if (pid < 0) return;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execv(podman, args);
        _exit(127);
    }
    if (!wait) return;
    for (int i = 0; i < 3000; i++) {
        int status;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid || (done < 0 && errno != EINTR)) return;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Removes a node's container if it is still there (its podman was killed before it could);
 * the removal runs on without the runner waiting for it. */
void podman_remove(const char *podman, const char *name, int wait) {
    char *args[] = {(char *)podman, "rm", "--force", "--ignore", "--time", "0", (char *)name, NULL};
    podman_run(podman, args, wait);
}

/* Containers that runners now gone left (heddle-PID-... whose PID is no process). */
void podman_remove_leftovers(const char *podman) {
    char *command = xasprintf("'%s' ps --all --filter label=heddle.runner --format '{{.Names}}' 2>/dev/null", podman);
    FILE *list = popen(command, "r");
    free(command);
    if (!list) return;
    char line[512];
    while (fgets(line, sizeof line, list)) {
        line[strcspn(line, "\n")] = 0;
        if (strncmp(line, "heddle-", 7) != 0) continue;
        long pid = strtol(line + 7, NULL, 10);
        if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        podman_remove(podman, line, 1);
    }
    pclose(list);
}

char *podman_find(void) { return find_program("podman"); }
