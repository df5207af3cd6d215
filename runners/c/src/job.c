/* Jobs: a fresh workspace, an optional checkout, the node graph in dependency order with
 * independent nodes in parallel, each node's output streamed, artifacts after a node
 * succeeds, then the job's result once every log byte is durable at the coordinator. A failed
 * node fails the job and the nodes that need it are skipped. A cancel ends every node's
 * process tree (SIGTERM, SIGKILL after the grace period); an abandon (the lease is gone)
 * does too, and nothing more is sent about that assignment. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

#define HELPER_OUTPUT_LIMIT (64u << 10)

static int advance(job_t *job);
void node_spawn(node_t *node);
void node_uploaded(node_t *node, char *failure);
static void check_finishing(job_t *job);

static const char *status_name(int status) {
    switch (status) {
    case HEDDLE__V1__STATUS__STATUS_SUCCEEDED: return "succeeded";
    case HEDDLE__V1__STATUS__STATUS_FAILED: return "failed";
    case HEDDLE__V1__STATUS__STATUS_CANCELLED: return "cancelled";
    case HEDDLE__V1__STATUS__STATUS_SKIPPED: return "skipped";
    case HEDDLE__V1__STATUS__STATUS_RUNNING: return "running";
    default: return "unknown";
    }
}

size_t jobs_count(void) {
    size_t n = 0;
    for (job_t *job = R.jobs; job; job = job->next) n++;
    return n;
}

Heddle__V1__JobRef job_ref(const job_t *job) {
    Heddle__V1__JobRef ref = HEDDLE__V1__JOB_REF__INIT;
    ref.job_id = job->job_id;
    ref.attempt = job->attempt;
    ref.epoch = job->epoch;
    return ref;
}

/* ------------------------------------------------------------------ environment */

typedef struct {
    char **entries;
    size_t n, cap;
} env_t;

static void env_set(env_t *env, const char *key, const char *value) {
    size_t key_len = strlen(key);
    char *entry = xasprintf("%s=%s", key, value);
    for (size_t i = 0; i < env->n; i++) {
        if (strncmp(env->entries[i], key, key_len) == 0 && env->entries[i][key_len] == '=') {
            free(env->entries[i]);
            env->entries[i] = entry;
            return;
        }
    }
    if (env->n + 2 > env->cap) {
        env->cap = env->cap ? env->cap * 2 : 64;
        char **entries = realloc(env->entries, env->cap * sizeof *entries);
        if (!entries) abort();
        env->entries = entries;
    }
    env->entries[env->n++] = entry;
    env->entries[env->n] = NULL;
}

static env_t env_base(void) {
    env_t env = {0};
    for (char **entry = R.environ_base; entry && *entry; entry++) {
        char *eq = strchr(*entry, '=');
        if (!eq || eq == *entry) continue;
        char *key = xstrdup(*entry);
        key[eq - *entry] = 0;
        env_set(&env, key, eq + 1);
        free(key);
    }
    if (!env.entries) env_set(&env, "PATH", "/usr/local/bin:/usr/bin:/bin");
    return env;
}

static void env_free(env_t *env) {
    for (size_t i = 0; i < env->n; i++) free(env->entries[i]);
    free(env->entries);
}

/* ------------------------------------------------------------------ reporting */

static void on_node_reported(request_t *request, const Heddle__V1__Envelope *response, int code, const char *message) {
    (void)response;
    node_t *node = request->node;
    if (code != 0) logmsg(LOG_WARNING, "cannot report a node's status node=%s error=%s", node->spec->name, message);
    if (node->phase == NODE_STARTING) {
        /* The running status is answered: the node's shell starts. */
        node_spawn(node);
    } else if (node->phase == NODE_REPORTING) {
        node->phase = NODE_DONE;
    }
    advance(node->job);
}

static void report(node_t *node, int status, int exited, int exit_code, const char *reason) {
    job_t *job = node->job;
    if (job->abandoned) return;
    Heddle__V1__JobRef ref = job_ref(job);
    Heddle__V1__NodeUpdate update = HEDDLE__V1__NODE_UPDATE__INIT;
    update.job = &ref;
    update.node = node->spec->name;
    update.status = status;
    update.exited = exited;
    update.exit_code = exited ? exit_code : 0;
    update.at_ms = now_ms();
    update.reason = (char *)(reason ? reason : "");
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_NODE_UPDATE;
    envelope.node_update = &update;
    /* Its last status after every byte of its log (its RUNNING status comes before any). */
    if (status == HEDDLE__V1__STATUS__STATUS_RUNNING) link_request(&envelope, on_node_reported, job, node);
    else link_request_after_log(&envelope, on_node_reported, node);
}

/* The node's last status: reported, then the node counts as done. `failure` (owned) says why
 * a failed node failed; the first one is the job's reason. */
static void node_finish(node_t *node, node_final_t final, int exited, int exit_code, char *failure) {
    job_t *job = node->job;
    node->final = final;
    if (job->abandoned) {
        node->phase = NODE_DONE;
    } else {
        static const int statuses[] = {
            [FINAL_SUCCEEDED] = HEDDLE__V1__STATUS__STATUS_SUCCEEDED,
            [FINAL_FAILED] = HEDDLE__V1__STATUS__STATUS_FAILED,
            [FINAL_SKIPPED] = HEDDLE__V1__STATUS__STATUS_SKIPPED,
            [FINAL_CANCELLED] = HEDDLE__V1__STATUS__STATUS_CANCELLED,
        };
        node->phase = NODE_REPORTING;
        report(node, statuses[final], exited, exit_code, final == FINAL_FAILED ? failure : NULL);
    }
    if (failure && !job->failure) job->failure = failure;
    else free(failure);
}

/* ------------------------------------------------------------------ processes */

static double grace_of(const node_t *node) {
    return node->spec->kill_grace_seconds > 0 ? node->spec->kill_grace_seconds : R.config.kill_grace;
}

/* SIGTERM to the node's tree now, SIGKILL to what is left after its grace period. */
static void terminate(node_t *node, double now) {
    if (node->phase != NODE_RUNNING || node->exited || node->kill_at > 0) return;
    node->kill_at = now + grace_of(node);
    signal_tree(node->pid, node->token, SIGTERM);
}

void node_spawn(node_t *node) {
    job_t *job = node->job;
    double now = now_mono();
    if (job->cancel_reason) {
        node_finish(node, FINAL_CANCELLED, 0, 0, NULL);
        return;
    }
    env_t env = env_base();
    Heddle__V1__Assignment *a = job->assignment;
    for (size_t i = 0; i < a->n_env; i++) env_set(&env, a->env[i]->key, a->env[i]->value);
    for (size_t i = 0; i < node->spec->n_env; i++) env_set(&env, node->spec->env[i]->key, node->spec->env[i]->value);
    for (size_t i = 0; i < node->spec->n_secrets; i++)
        env_set(&env, node->spec->secrets[i]->key, node->spec->secrets[i]->value);
    env_set(&env, "HEDDLE_NODE", node->spec->name);
    env_set(&env, "HEDDLE_WORKSPACE", job->workspace);
    env_set(&env, "HEDDLE_COMMIT", job->commit ? job->commit : "");
    make_token(node->token);
    env_set(&env, "HEDDLE_NODE_TOKEN", node->token);
    int contained = node->spec->image && node->spec->image[0];
    if (contained && !R.podman) {
        env_free(&env);
        node_finish(node, FINAL_FAILED, 0, 0,
                    xasprintf("node '%s' runs in image '%s', and this runner has no podman (Debian: apt-get install podman)",
                              node->spec->name, node->spec->image));
        return;
    }
    if (node->spec->no_network && !R.sandbox.program && !contained) {
        env_free(&env);
        node_finish(node, FINAL_FAILED, 0, 0,
                    xasprintf("node '%s' has `network: none`, which needs the sandbox: this runner runs with --isolation none",
                              node->spec->name));
        return;
    }
    node->limits.memory = node->spec->memory_limit_bytes ? (long long)node->spec->memory_limit_bytes : R.config.limits.memory;
    node->limits.cpu_millis = node->spec->cpu_limit_millis ? node->spec->cpu_limit_millis : R.config.limits.cpu_millis;
    node->limits.pids = node->spec->pids_limit ? node->spec->pids_limit : R.config.limits.pids;
    char err[300];
    char **procs = NULL;
    /* A container's limits are podman's. */
    if (!contained && (node->limits.memory || node->limits.cpu_millis || node->limits.pids)) {
        if (R.cgroups.n == 0) {
            env_free(&env);
            node_finish(node, FINAL_FAILED, 0, 0,
                        xasprintf("node '%s' has resource limits, which need a cgroup this runner can write, and it has none (%s)",
                                  node->spec->name, R.cgroups_why));
            return;
        }
        /* Named after this runner's process, the job, its lease and the node (unique on the machine). */
        node->cgroup = xasprintf("heddle-%d-%llu-%llu-%s", (int)getpid(), (unsigned long long)a->job->job_id,
                                 (unsigned long long)a->job->epoch, node->spec->name);
        if (cgroups_make(&R.cgroups, node->cgroup, &node->limits, &procs, err, sizeof err) != 0) {
            env_free(&env);
            sandbox_argv_free(procs);
            cgroups_remove(&R.cgroups, node->cgroup);
            free(node->cgroup);
            node->cgroup = NULL;
            node_finish(node, FINAL_FAILED, 1, 127, xasprintf("node '%s' could not start: %s", node->spec->name, err));
            return;
        }
    }
    char *command[] = {"/bin/sh", "-c", node->spec->run, NULL};
    char **argv = NULL;
    if (contained) {
        node->container = podman_name(node);
        argv = podman_argv(R.podman, node, node->container);
    } else if (R.sandbox.program) {
        argv = sandbox_argv(&R.sandbox, job->workspace, !node->spec->no_network, command);
    }
    char **joined = procs ? cgroups_joining(procs, argv ? argv : command) : NULL;
    node->pid = spawn_process(joined ? joined : argv ? argv : command, env.entries, job->workspace, &node->out_fd, err, sizeof err);
    sandbox_argv_free(joined);
    sandbox_argv_free(procs);
    sandbox_argv_free(argv);
    env_free(&env);
    if (node->pid < 0) {
        node->pid = 0;
        free(node->container);
        node->container = NULL;
        if (node->cgroup) {
            cgroups_remove(&R.cgroups, node->cgroup);
            free(node->cgroup);
            node->cgroup = NULL;
        }
        node_finish(node, FINAL_FAILED, 1, 127, xasprintf("node '%s' could not start: %s", node->spec->name, err));
        return;
    }
    node->phase = NODE_RUNNING;
    node->timeout_at = node->spec->timeout_seconds ? now + node->spec->timeout_seconds : 0;
}

/* The node's shell exited and its pipe reached EOF: decide its outcome. */
static void node_ended(node_t *node) {
    job_t *job = node->job;
    const char *name = node->spec->name;
    int out_of_memory = 0;
    int container_failed = 0;
    if (node->container) {
        /* Podman does not say here whether the kernel killed a container for memory: one with
         * a memory limit killed by SIGKILL (137) that nobody stopped was. */
        out_of_memory = node->limits.memory && node->exit_code == 137 && !job->cancel_reason && !node->timed_out;
        container_failed = node->exit_code == 125;
        podman_remove(R.podman, node->container, 0);
        free(node->container);
        node->container = NULL;
    }
    if (node->cgroup) {
        out_of_memory = node->limits.memory && cgroups_out_of_memory(&R.cgroups, node->cgroup);
        cgroups_remove(&R.cgroups, node->cgroup);
        free(node->cgroup);
        node->cgroup = NULL;
    }
    if (job->abandoned) {
        node->phase = NODE_DONE;
        return;
    }
    char size[32];
    if (job->cancel_reason) {
        node_finish(node, FINAL_CANCELLED, 1, node->exit_code, NULL);
    } else if (node->timed_out) {
        node_finish(node, FINAL_FAILED, 1, node->exit_code,
                    xasprintf("timeout: node '%s' ran longer than %us", name, node->spec->timeout_seconds));
    } else if (out_of_memory) {
        limits_size(node->limits.memory, size, sizeof size);
        node_finish(node, FINAL_FAILED, 1, node->exit_code,
                    xasprintf("node '%s' failed: memory limit %s exceeded (exit code %d)", name, size, node->exit_code));
    } else if (container_failed) {
        node_finish(node, FINAL_FAILED, 1, node->exit_code,
                    xasprintf("node '%s' could not start its container: podman failed (exit code 125; the node's log says why: "
                              "say, image '%s' is not on this runner and cannot be pulled)", name, node->spec->image));
    } else if (node->exit_code != 0) {
        node_finish(node, FINAL_FAILED, 1, node->exit_code,
                    xasprintf("node '%s' failed with exit code %d", name, node->exit_code));
    } else if (node->spec->n_artifacts > 0) {
        node->phase = NODE_UPLOADING;
        artifacts_match(node);
        artifacts_step(node);
    } else {
        node_finish(node, FINAL_SUCCEEDED, 1, 0, NULL);
    }
}

/* Called by the artifact uploader when it is done with a node. */
void node_uploaded(node_t *node, char *failure) {
    if (failure) node_finish(node, FINAL_FAILED, 1, node->exit_code, failure);
    else node_finish(node, FINAL_SUCCEEDED, 1, node->exit_code, NULL);
}

/* ------------------------------------------------------------------ the job's life */

static int by_length_descending(const void *a, const void *b) {
    size_t la = strlen(*(const char *const *)a), lb = strlen(*(const char *const *)b);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

static void job_free(job_t *job) {
    for (job_t **link = &R.jobs; *link; link = &(*link)->next) {
        if (*link == job) {
            *link = job->next;
            break;
        }
    }
    link_drop_requests_of(job);
    for (size_t i = 0; i < job->n_nodes; i++) {
        node_t *node = &job->nodes[i];
        if (node->out_fd >= 0) close(node->out_fd);
        free(node->cgroup);
        if (node->container) podman_remove(R.podman, node->container, 0);
        free(node->container);
        buf_free(&node->log.pending);
        buf_free(&node->held);
        free(node->log.marks);
        for (size_t m = 0; m < node->n_matches; m++) free(node->matches[m]);
        free(node->matches);
        if (node->upload.fd >= 0) close(node->upload.fd);
        free(node->upload.name);
    }
    if (job->helper_fd >= 0) close(job->helper_fd);
    buf_free(&job->helper_output);
    if (job->workspace) remove_tree(job->workspace);
    free(job->workspace);
    free(job->commit);
    free(job->cancel_reason);
    free(job->failure);
    free(job->nodes);
    free(job->secrets);
    message_free(job->message);
    free(job);
    if (R.draining && !R.jobs) R.exit_now = 1;
}

static int processes_alive(const job_t *job) {
    if (job->helper_pid > 0 && (!job->helper_exited || !job->helper_eof)) return 1;
    for (size_t i = 0; i < job->n_nodes; i++) {
        const node_t *node = &job->nodes[i];
        if (node->phase == NODE_RUNNING && (!node->exited || !node->eof)) return 1;
    }
    return 0;
}

static void on_job_finished(request_t *request, const Heddle__V1__Envelope *response, int code, const char *message) {
    (void)response;
    job_t *job = request->job;
    if (code != 0) logmsg(LOG_ERROR, "cannot report the job's result job.id=%llu error=%s",
                          (unsigned long long)job->job_id, message);
    job->phase = JOB_DONE;
    advance(job);
}

static void finish_job(job_t *job) {
    int status;
    const char *reason;
    int all_succeeded = 1;
    for (size_t i = 0; i < job->n_nodes; i++) all_succeeded &= job->nodes[i].final == FINAL_SUCCEEDED;
    if (job->cancel_reason) {
        status = HEDDLE__V1__STATUS__STATUS_CANCELLED;
        reason = job->cancel_reason;
    } else if (job->failure) {
        status = HEDDLE__V1__STATUS__STATUS_FAILED;
        reason = job->failure;
    } else if (all_succeeded) {
        status = HEDDLE__V1__STATUS__STATUS_SUCCEEDED;
        reason = "";
    } else {
        status = HEDDLE__V1__STATUS__STATUS_FAILED;
        reason = "not every node succeeded";
    }
    Heddle__V1__JobRef ref = job_ref(job);
    Heddle__V1__JobFinish finish = HEDDLE__V1__JOB_FINISH__INIT;
    finish.job = &ref;
    finish.status = status;
    finish.reason = (char *)reason;
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_JOB_FINISH;
    envelope.job_finish = &finish;
    logmsg(LOG_INFO, "job finished job.id=%llu status=%s reason=%s", (unsigned long long)job->job_id,
           status_name(status), reason);
    job->phase = JOB_REPORTING;
    link_request(&envelope, on_job_finished, job, NULL);
}

static node_t *node_named(job_t *job, const char *name) {
    for (size_t i = 0; i < job->n_nodes; i++) {
        if (strcmp(job->nodes[i].spec->name, name) == 0) return &job->nodes[i];
    }
    return NULL;
}

/* Skips what can never run, starts what is ready, finishes the job when every node is done.
 * Returns 0 when the job is over and was freed (abandoned with no process left, or its result
 * answered). */
static int advance(job_t *job) {
    if ((job->abandoned && !processes_alive(job)) || job->phase == JOB_DONE) {
        job_free(job);
        return 0;
    }
    if (job->abandoned) return 1;
    if (job->phase == JOB_FINISHING) check_finishing(job);
    if (job->phase != JOB_RUNNING) return 1;
    int changed = 1;
    while (changed) {
        changed = 0;
        for (size_t i = 0; i < job->n_nodes; i++) {
            node_t *node = &job->nodes[i];
            if (node->phase != NODE_PENDING) continue;
            int blocked = job->cancel_reason != NULL, ready = 1;
            for (size_t k = 0; k < node->spec->n_needs; k++) {
                node_t *need = node_named(job, node->spec->needs[k]);
                node_final_t final = need ? need->final : FINAL_FAILED;
                if (final == FINAL_FAILED || final == FINAL_SKIPPED || final == FINAL_CANCELLED) blocked = 1;
                if (!need || need->phase != NODE_DONE || final != FINAL_SUCCEEDED) ready = 0;
            }
            if (blocked) {
                node_finish(node, job->cancel_reason ? FINAL_CANCELLED : FINAL_SKIPPED, 0, 0, NULL);
                changed = 1;
            } else if (ready) {
                node->phase = NODE_STARTING;
                report(node, HEDDLE__V1__STATUS__STATUS_RUNNING, 0, 0, NULL);
                changed = 1;
            }
        }
    }
    int active = 0, pending = 0;
    for (size_t i = 0; i < job->n_nodes; i++) {
        active += job->nodes[i].phase != NODE_DONE && job->nodes[i].phase != NODE_PENDING;
        pending += job->nodes[i].phase == NODE_PENDING;
    }
    if (active > 0) return 1;
    if (pending > 0) {
        /* Nodes that wait for each other (a cycle) can never start: the job fails. */
        for (size_t i = 0; i < job->n_nodes; i++) {
            if (job->nodes[i].phase == NODE_PENDING) job->nodes[i].phase = NODE_DONE;
        }
    }
    job->phase = JOB_FINISHING;
    check_finishing(job);
    return 1;
}

/* The result goes only once every node's status is answered and every log byte is durable at
 * the coordinator. */
static void check_finishing(job_t *job) {
    if (job->phase != JOB_FINISHING || job->inflight > 0 || job->abandoned) return;
    for (size_t i = 0; i < job->n_nodes; i++) {
        if (!logstream_durable(&job->nodes[i])) return;
    }
    finish_job(job);
}

/* ------------------------------------------------------------------ checkout */

static const char checkout_script[] =
    "if [ -z \"$3\" ]; then\n"
    "  git clone --quiet --depth 1 --single-branch --branch \"$2\" -- \"$1\" . || exit\n"
    "else\n"
    "  git init --quiet . && git remote add origin -- \"$1\" || exit\n"
    "  git fetch --quiet --depth 1 origin \"$3\" 2>/dev/null ||"
    " git fetch --quiet origin \"+refs/heads/$2:refs/remotes/origin/$2\" || exit\n"
    "  git checkout --quiet --detach \"$3\" 2>/dev/null ||"
    " { echo \"commit $3 is not in $1 (branch $2)\"; exit 1; }\n"
    "fi\n"
    "printf 'heddle-commit:'; git rev-parse HEAD\n";

static void on_job_started(request_t *request, const Heddle__V1__Envelope *response, int code, const char *message) {
    (void)response;
    job_t *job = request->job;
    if (code != 0) logmsg(LOG_WARNING, "cannot report the job's start job.id=%llu error=%s",
                          (unsigned long long)job->job_id, message);
    job->phase = JOB_RUNNING;
    advance(job);
}

static void start_graph(job_t *job) {
    if (job->cancel_reason) {
        job->phase = JOB_RUNNING; /* every node is reported cancelled */
        advance(job);
        return;
    }
    Heddle__V1__JobRef ref = job_ref(job);
    Heddle__V1__JobStarted started = HEDDLE__V1__JOB_STARTED__INIT;
    started.job = &ref;
    started.commit = job->commit ? job->commit : "";
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_JOB_STARTED;
    envelope.job_started = &started;
    job->phase = JOB_STARTING;
    link_request(&envelope, on_job_started, job, NULL);
}

/* The job fails before any node runs (no workspace, no checkout). */
static void fail_before_nodes(job_t *job, char *reason) {
    free(job->failure);
    job->failure = reason;
    for (size_t i = 0; i < job->n_nodes; i++) job->nodes[i].phase = NODE_DONE;
    job->phase = JOB_FINISHING;
    advance(job);
}

static void checkout_start(job_t *job) {
    Heddle__V1__Assignment *a = job->assignment;
    env_t env = env_base();
    env_set(&env, "GIT_TERMINAL_PROMPT", "0");
    char *argv[] = {"/bin/sh", "-c", (char *)checkout_script, "heddle-checkout", a->repository, a->branch, a->commit, NULL};
    char err[300];
    job->helper_pid = spawn_process(argv, env.entries, job->workspace, &job->helper_fd, err, sizeof err);
    env_free(&env);
    if (job->helper_pid < 0) {
        job->helper_pid = 0;
        fail_before_nodes(job, xasprintf("checkout of %s (branch %s) failed: %s", a->repository, a->branch, err));
        return;
    }
    job->phase = JOB_CHECKOUT;
}

static void checkout_ended(job_t *job) {
    Heddle__V1__Assignment *a = job->assignment;
    buf_append(&job->helper_output, "", 1); /* a C string from here on */
    char *output = (char *)buf_bytes(&job->helper_output);
    char *marker = strstr(output, "heddle-commit:");
    job->helper_pid = 0;
    if (job->abandoned) {
        advance(job);
        return;
    }
    if (job->cancel_reason) {
        start_graph(job);
        return;
    }
    if (job->helper_status == 0 && marker) {
        char *commit = marker + strlen("heddle-commit:");
        commit[strcspn(commit, "\r\n")] = 0;
        job->commit = xstrdup(commit);
        logmsg(LOG_INFO, "checked out job.id=%llu commit=%s branch=%s", (unsigned long long)job->job_id, job->commit,
               a->branch);
        start_graph(job);
        return;
    }
    /* What git said, without its warnings, on one line. */
    size_t cap = strlen(output) + 1;
    char *said = xcalloc(cap, 1);
    for (char *line = strtok(output, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "warning:", 8) == 0 || strncmp(line, "heddle-commit:", 14) == 0 || !*line) continue;
        if (*said) strcat(said, " ");
        strcat(said, line);
    }
    int code = WIFEXITED(job->helper_status) ? WEXITSTATUS(job->helper_status) : 128 + WTERMSIG(job->helper_status);
    fail_before_nodes(job, xasprintf("checkout of %s (branch %s) failed: git failed (exit %d): %s", a->repository,
                                     a->branch, code, said));
    free(said);
}

/* ------------------------------------------------------------------ events from the coordinator */

static void abandon_job(job_t *job, const char *reason, double now) {
    if (job->abandoned) return;
    logmsg(LOG_WARNING, "job abandoned: its lease is gone job.id=%llu job.epoch=%llu reason=%s",
           (unsigned long long)job->job_id, (unsigned long long)job->epoch, reason);
    job->abandoned = 1;
    if (!job->cancel_reason) job->cancel_reason = xstrdup(reason);
    link_drop_requests_of(job);
    for (size_t i = 0; i < job->n_nodes; i++) {
        node_t *node = &job->nodes[i];
        terminate(node, now);
        if (node->phase != NODE_RUNNING) node->phase = NODE_DONE;
        if (node->upload.fd >= 0) {
            close(node->upload.fd);
            node->upload.fd = -1;
        }
    }
    if (job->helper_pid > 0) kill(-job->helper_pid, SIGKILL);
    advance(job);
}

static void cancel_job(job_t *job, const char *reason, double now) {
    if (!job->cancel_reason) job->cancel_reason = xstrdup(reason);
    for (size_t i = 0; i < job->n_nodes; i++) terminate(&job->nodes[i], now);
    if (job->helper_pid > 0) kill(-job->helper_pid, SIGKILL);
    advance(job);
}

void job_assign(message_t *message) {
    Heddle__V1__Assignment *a = message->envelope->assignment;
    double now = now_mono();
    if (!a || !a->job || a->job->job_id == 0) {
        logmsg(LOG_ERROR, "an assignment without a job was ignored");
        message_free(message);
        return;
    }
    for (job_t *job = R.jobs; job; job = job->next) {
        if (job->job_id == a->job->job_id && job->epoch == a->job->epoch) {
            message_free(message); /* already running this assignment */
            return;
        }
    }
    job_t *job = xcalloc(1, sizeof *job);
    job->message = message;
    job->assignment = a;
    job->job_id = a->job->job_id;
    job->epoch = a->job->epoch;
    job->attempt = a->job->attempt;
    job->helper_fd = -1;
    job->n_nodes = a->n_nodes;
    job->nodes = xcalloc(a->n_nodes, sizeof *job->nodes);
    for (size_t i = 0; i < a->n_nodes; i++) {
        node_t *node = &job->nodes[i];
        node->job = job;
        node->spec = a->nodes[i];
        node->out_fd = -1;
        node->upload.fd = -1;
        node->log.pause = 1;
        job->n_secrets += a->nodes[i]->n_secrets;
    }
    /* Every node's log is masked with every secret value the job was given, longest first. */
    if (job->n_secrets) {
        job->secrets = xcalloc(job->n_secrets, sizeof *job->secrets);
        size_t n = 0;
        for (size_t i = 0; i < a->n_nodes; i++)
            for (size_t s = 0; s < a->nodes[i]->n_secrets; s++)
                if (a->nodes[i]->secrets[s]->value[0]) job->secrets[n++] = a->nodes[i]->secrets[s]->value;
        job->n_secrets = n;
        qsort(job->secrets, n, sizeof *job->secrets, by_length_descending);
    }
    job->workspace = xasprintf("%s/job-%llu-%llu", R.config.work_dir, (unsigned long long)job->job_id,
                               (unsigned long long)job->epoch);
    if (job->epoch > R.assigned_through) R.assigned_through = job->epoch;
    /* An older assignment of the same job lost its lease: the coordinator gave it out again. */
    for (job_t *old = R.jobs; old;) {
        job_t *next = old->next;
        if (old->job_id == job->job_id && old->epoch < job->epoch) {
            char reason[128];
            snprintf(reason, sizeof reason, "job %llu was assigned again (epoch %llu)", (unsigned long long)job->job_id,
                     (unsigned long long)job->epoch);
            abandon_job(old, reason, now);
        }
        old = next;
    }
    job->next = R.jobs;
    R.jobs = job;
    logmsg(LOG_INFO, "job assigned job.id=%llu job.epoch=%llu run.id=%llu job=%s", (unsigned long long)job->job_id,
           (unsigned long long)job->epoch, (unsigned long long)a->run_id, a->job_name);
    remove_tree(job->workspace);
    if (mkdir_p(job->workspace) != 0) {
        fail_before_nodes(job, xasprintf("cannot prepare the workspace %s: %s", job->workspace, strerror(errno)));
        return;
    }
    if (a->repository && *a->repository) checkout_start(job);
    else start_graph(job);
}

void job_stop(uint64_t job_id, uint64_t epoch, int abandon, const char *reason) {
    double now = now_mono();
    int found = 0;
    for (job_t *job = R.jobs; job;) {
        job_t *next = job->next;
        if (job->job_id == job_id && (epoch == 0 || job->epoch == epoch)) {
            found++;
            if (abandon) abandon_job(job, reason, now);
            else cancel_job(job, reason, now);
        }
        job = next;
    }
    logmsg(LOG_INFO, "stop job job.id=%llu job.epoch=%llu reason=%s found=%d", (unsigned long long)job_id,
           (unsigned long long)epoch, reason, found);
}

void job_ack(const Heddle__V1__LogAck *ack) {
    double now = now_mono();
    for (job_t *job = R.jobs; job; job = job->next) {
        if (job->job_id != ack->job_id || job->epoch != ack->epoch || job->abandoned) continue;
        node_t *node = node_named(job, ack->node);
        if (!node) return;
        logstream_t *log = &node->log;
        if (ack->resend) {
            /* The coordinator could not store the bytes after durable_offset: again after a pause. */
            if (ack->durable_offset > log->acked && ack->durable_offset <= log->end) {
                buf_consume(&log->pending, ack->durable_offset - log->acked);
                log->acked = ack->durable_offset;
                logstream_acked(log);
            }
            log->sent = log->acked;
            log->paused_until = now + log->pause;
            log->pause = log->pause * 2 < 30 ? log->pause * 2 : 30;
            return;
        }
        log->pause = 1;
        if (ack->durable_offset > log->acked && ack->durable_offset <= log->end) {
            buf_consume(&log->pending, ack->durable_offset - log->acked);
            log->acked = ack->durable_offset;
            logstream_acked(log);
            if (log->sent < log->acked) log->sent = log->acked;
        }
        check_finishing(job);
        return;
    }
}

void jobs_on_connect(void) {
    for (job_t *job = R.jobs; job; job = job->next) {
        for (size_t i = 0; i < job->n_nodes; i++) {
            node_t *node = &job->nodes[i];
            node->log.sent = node->log.acked; /* everything not acknowledged goes again */
            artifacts_on_connect(node);
        }
    }
}

/* Giving up on reporting (the coordinator is unreachable after a second SIGTERM): what is
 * still alive of the jobs' processes is killed, and the jobs are forgotten. */
void jobs_free_all(void) {
    while (R.jobs) {
        job_t *job = R.jobs;
        for (size_t i = 0; i < job->n_nodes; i++) {
            node_t *node = &job->nodes[i];
            if (node->phase == NODE_RUNNING && !node->exited) signal_tree(node->pid, node->token, SIGKILL);
        }
        if (job->helper_pid > 0 && !job->helper_exited) kill(-job->helper_pid, SIGKILL);
        job_free(job);
    }
}

void jobs_cancel_all(const char *reason) {
    double now = now_mono();
    for (job_t *job = R.jobs; job;) {
        job_t *next = job->next;
        cancel_job(job, reason, now);
        job = next;
    }
}

/* ------------------------------------------------------------------ the poll loop's part */

void jobs_poll_fds(struct pollfd *fds, size_t *n, size_t max) {
    for (job_t *job = R.jobs; job && *n < max; job = job->next) {
        if (job->helper_fd >= 0) {
            fds[*n].fd = job->helper_fd;
            fds[*n].events = POLLIN;
            fds[(*n)++].revents = 0;
        }
        for (size_t i = 0; i < job->n_nodes && *n < max; i++) {
            node_t *node = &job->nodes[i];
            /* A node whose unacknowledged bytes reached the limit is not read: it blocks. */
            if (node->out_fd < 0 || !logstream_has_room(node)) continue;
            fds[*n].fd = node->out_fd;
            fds[*n].events = POLLIN;
            fds[(*n)++].revents = 0;
        }
    }
}

static int read_some(int fd, buf_t *into, size_t room, int *eof) {
    uint8_t block[1 << 16];
    size_t want = room < sizeof block ? room : sizeof block;
    ssize_t n = read(fd, block, want);
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : (*eof = 1, 0);
    if (n == 0) {
        *eof = 1;
        return 0;
    }
    if (into) buf_append(into, block, (size_t)n);
    return (int)n;
}

void jobs_handle(struct pollfd *fds, size_t n) {
    for (size_t f = 0; f < n; f++) {
        if (fds[f].revents == 0) continue;
        int fd = fds[f].fd;
        for (job_t *job = R.jobs; job; job = job->next) {
            if (job->helper_fd == fd) {
                int eof = 0;
                size_t room = job->helper_output.len < HELPER_OUTPUT_LIMIT ? HELPER_OUTPUT_LIMIT - job->helper_output.len : 0;
                if (room == 0) {
                    uint8_t sink[4096];
                    if (read(fd, sink, sizeof sink) == 0) eof = 1;
                } else {
                    read_some(fd, &job->helper_output, room, &eof);
                }
                if (eof) {
                    close(job->helper_fd);
                    job->helper_fd = -1;
                    job->helper_eof = 1;
                }
                break;
            }
            for (size_t i = 0; i < job->n_nodes; i++) {
                node_t *node = &job->nodes[i];
                if (node->out_fd != fd) continue;
                /* What the pipe holds, up to 1 MiB a turn (the next LogAppend carries it all). */
                static uint8_t block[1 << 16];
                for (size_t taken = 0; taken < (1u << 20) && logstream_has_room(node);) {
                    ssize_t got = read(fd, block, sizeof block);
                    if (got > 0) {
                        if (!job->abandoned) logstream_output(node, block, (size_t)got, 0);
                        taken += (size_t)got;
                        continue;
                    }
                    if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                        if (!job->abandoned) logstream_output(node, NULL, 0, 1);
                        close(node->out_fd);
                        node->out_fd = -1;
                        node->eof = 1;
                    }
                    break;
                }
            }
        }
    }
}

void jobs_reap(void) {
    for (;;) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        for (job_t *job = R.jobs; job; job = job->next) {
            if (job->helper_pid == pid) {
                job->helper_exited = 1;
                job->helper_status = status;
                kill(-pid, SIGKILL); /* whatever git left behind */
            }
            for (size_t i = 0; i < job->n_nodes; i++) {
                node_t *node = &job->nodes[i];
                if (node->pid != pid || node->exited) continue;
                node->exited = 1;
                node->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                /* The shell is gone: what it left running goes too, so the pipe reaches EOF
                 * and nothing outlives its node; while the node is being stopped, leftovers
                 * get the rest of the grace period. */
                if (node->kill_at == 0) {
                    signal_tree(node->pid, node->token, SIGKILL);
                    node->kill_sent = 1;
                }
            }
        }
    }
}

void jobs_tick(double now) {
    for (job_t *job = R.jobs; job;) {
        job_t *next = job->next;
        if (job->helper_pid > 0 && job->helper_exited && job->helper_eof) {
            checkout_ended(job);
            job = next;
            continue;
        }
        for (size_t i = 0; i < job->n_nodes; i++) {
            node_t *node = &job->nodes[i];
            if (node->phase == NODE_RUNNING) {
                if (node->timeout_at > 0 && now >= node->timeout_at && !node->timed_out && !node->exited) {
                    node->timed_out = 1;
                    terminate(node, now);
                }
                if (node->kill_at > 0 && now >= node->kill_at && !node->kill_sent) {
                    signal_tree(node->pid, node->token, SIGKILL);
                    node->kill_sent = 1;
                }
                if (node->exited && node->eof) {
                    node_ended(node);
                    if (!advance(job)) break; /* the job is over and freed */
                }
            }
            if (node->phase == NODE_UPLOADING && !job->abandoned) artifacts_step(node);
            if (!job->abandoned) logstream_pump(node, now);
        }
        job = next;
    }
}

/* Whether a node has log bytes or artifact chunks to send now (the loop then does not sleep). */
int jobs_want_send(double now) {
    for (job_t *job = R.jobs; job; job = job->next) {
        if (job->abandoned) continue;
        for (size_t i = 0; i < job->n_nodes; i++) {
            const node_t *node = &job->nodes[i];
            if (node->log.sent < node->log.end && node->log.paused_until <= now) return 1;
            if (node->phase == NODE_UPLOADING && node->upload.active && node->upload.phase == UP_SENDING &&
                node->upload.offset < node->upload.size)
                return 1;
        }
    }
    return 0;
}

double jobs_next_timer(double now) {
    double next = now + 1;
    for (job_t *job = R.jobs; job; job = job->next) {
        for (size_t i = 0; i < job->n_nodes; i++) {
            node_t *node = &job->nodes[i];
            if (node->timeout_at > now && node->timeout_at < next && !node->timed_out) next = node->timeout_at;
            if (node->kill_at > now && node->kill_at < next && !node->kill_sent) next = node->kill_at;
            if (node->log.paused_until > now && node->log.paused_until < next) next = node->log.paused_until;
        }
    }
    return next;
}

/* Workspaces a previous process of this runner left (it crashed): no job of this one uses them. */
void remove_leftovers(void) {
    DIR *dir = opendir(R.config.work_dir);
    if (!dir) return;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, "job-", 4) != 0) continue;
        char *path = xasprintf("%s/%s", R.config.work_dir, entry->d_name);
        remove_tree(path);
        free(path);
    }
    closedir(dir);
}
