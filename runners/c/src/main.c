/* heddle-runner-c: flags as heddle-runner's, then one poll loop until drained. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "runner.h"

extern char **environ;

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    int saved = errno;
    unsigned char byte = (unsigned char)sig;
    ssize_t ignored = write(signal_pipe[1], &byte, 1);
    (void)ignored;
    errno = saved;
}

static void usage(FILE *out) {
    fprintf(out,
            "OVERVIEW: Connects to a coordinator over mutual TLS and runs the jobs whose labels it carries.\n"
            "(heddle-runner in C, on libprotobuf-c and OpenSSL)\n\n"
            "USAGE: heddle-runner-c [--coordinator <coordinator>] --ca <ca> --cert <cert> --key <key> [--labels <labels>]\n"
            "                       --work-dir <work-dir> [--capacity <capacity>] [--kill-grace <kill-grace>] [--isolation <isolation>]\n"
            "                       [--log-level <log-level>]\n\n"
            "OPTIONS:\n"
            "  --coordinator <coordinator>\n"
            "                          The coordinator, HOST:PORT, or several sharing one database, HOST:PORT,HOST:PORT: the runner\n"
            "                          moves to the next when it cannot reach its own (env HEDDLE_COORDINATOR).\n"
            "  --ca <ca>               The fabric's CA certificate (PEM).\n"
            "  --cert <cert>           This runner's certificate (PEM), issued with the runner role.\n"
            "  --key <key>             This runner's private key (PEM).\n"
            "  --labels <labels>       Comma-separated labels, e.g. linux,x86. (default: none)\n"
            "  --work-dir <work-dir>   Directory for job workspaces.\n"
            "  --capacity <capacity>   Jobs run at once. (default: 1)\n"
            "  --kill-grace <kill-grace>\n"
            "                          Seconds between SIGTERM and SIGKILL when a node is stopped. (default: 10.0)\n"
            "  --isolation <isolation> How each node is isolated: bwrap (a bubblewrap sandbox: its own processes, /tmp and\n"
            "                          workspace, the host's /usr, /etc and /opt read-only, no runner key, no other jobs) or none\n"
            "                          (as this runner's user, seeing what it sees; logged as a warning). (default: bwrap)\n"
            "  --limits <limits>       Resource limits of each node that sets none, e.g. memory=2G,cpus=2,pids=1000 (needs a\n"
            "                          cgroup the runner can write; README, \"Resource limits\").\n"
            "  --log-level <log-level> Log level: debug, info, warning, error. (default: info)\n"
            "  --version               Show the version.\n"
            "  -h, --help              Show help information.\n");
}

static void fail_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail_usage(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "Error: ");
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\nUsage: heddle-runner-c --ca <ca> --cert <cert> --key <key> --work-dir <work-dir> [options]\n"
                    "  See 'heddle-runner-c --help' for more information.\n");
    exit(64);
}

/* Why `label` is no label (1 to 100 letters, digits, '.', '_' or '-', not '.' or '..'). */
static const char *label_problem(const char *label) {
    size_t n = strlen(label);
    if (n == 0) return "label is empty";
    if (n > 100) return "a label is longer than 100 characters";
    if (strspn(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
        return "labels may use only letters, digits, '.', '_' and '-'";
    if (strcmp(label, ".") == 0 || strcmp(label, "..") == 0) return "a label may not be '.' or '..'";
    return NULL;
}

static void parse_coordinators(const char *text) {
    config_t *c = &R.config;
    char *copy = xstrdup(text);
    char *rest = copy;
    for (;;) {
        char *comma = strchr(rest, ',');
        if (comma) *comma = 0;
        char *part = trim(rest);
        char *host, *port;
        if (*part == '[') {
            char *close = strchr(part, ']');
            if (!close || close[1] != ':') fail_usage("'%s' is not HOST:PORT", part);
            *close = 0;
            host = part + 1;
            port = close + 2;
        } else {
            char *colon = strrchr(part, ':');
            if (!colon) fail_usage("'%s' is not HOST:PORT or a list HOST:PORT,HOST:PORT", text);
            *colon = 0;
            host = part;
            port = colon + 1;
        }
        char *end;
        long number = strtol(port, &end, 10);
        if (!*host || !*port || *end || number < 0 || number > 65535)
            fail_usage("'%s' is not HOST:PORT (the port must be 0 to 65535)", text);
        if (c->n_coordinators == MAX_COORDINATORS) fail_usage("%s: at most 32 coordinators", text);
        c->coordinators[c->n_coordinators].host = xstrdup(host);
        c->coordinators[c->n_coordinators].port = xstrdup(port);
        c->n_coordinators++;
        if (!comma) break;
        rest = comma + 1;
    }
    free(copy);
}

static void parse_arguments(int argc, char **argv) {
    config_t *c = &R.config;
    const char *coordinator = NULL, *labels = "";
    c->capacity = 1;
    c->kill_grace = 10;
    static const struct option options[] = {
        {"coordinator", required_argument, NULL, 'C'}, {"ca", required_argument, NULL, 'a'},
        {"cert", required_argument, NULL, 'c'},        {"key", required_argument, NULL, 'k'},
        {"labels", required_argument, NULL, 'l'},      {"work-dir", required_argument, NULL, 'w'},
        {"capacity", required_argument, NULL, 'n'},    {"kill-grace", required_argument, NULL, 'g'},
        {"log-level", required_argument, NULL, 'L'},   {"version", no_argument, NULL, 'V'},
        {"isolation", required_argument, NULL, 'I'},   {"limits", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int option;
    while ((option = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        char *end;
        switch (option) {
        case 'C': coordinator = optarg; break;
        case 'a': c->ca = optarg; break;
        case 'c': c->cert = optarg; break;
        case 'k': c->key = optarg; break;
        case 'l': labels = optarg; break;
        case 'w': c->work_dir = optarg; break;
        case 'n': {
            long n = strtol(optarg, &end, 10);
            if (*end || end == optarg || n < 1 || n > 1000) fail_usage("--capacity must be 1 to 1000, not '%s'", optarg);
            c->capacity = (unsigned)n;
            break;
        }
        case 'g':
            c->kill_grace = strtod(optarg, &end);
            if (*end || end == optarg || c->kill_grace < 0 || c->kill_grace > 86400)
                fail_usage("--kill-grace must be 0 to 86400 seconds, not '%s'", optarg);
            break;
        case 'M': {
            char problem[300];
            if (limits_parse(optarg, &c->limits, problem, sizeof problem) != 0) fail_usage("--limits: %s", problem);
            break;
        }
        case 'I':
            if (strcmp(optarg, "none") == 0) c->unisolated = 1;
            else if (strcmp(optarg, "bwrap") != 0) fail_usage("--isolation: '%s' is not one of bwrap, none", optarg);
            break;
        case 'L':
            if (strcmp(optarg, "debug") == 0 || strcmp(optarg, "trace") == 0) log_threshold = LOG_DEBUG;
            else if (strcmp(optarg, "info") == 0 || strcmp(optarg, "notice") == 0) log_threshold = LOG_INFO;
            else if (strcmp(optarg, "warning") == 0) log_threshold = LOG_WARNING;
            else if (strcmp(optarg, "error") == 0 || strcmp(optarg, "critical") == 0) log_threshold = LOG_ERROR;
            else fail_usage("--log-level: '%s' is not one of debug, info, warning, error", optarg);
            break;
        case 'V':
            printf("%s (protocol %d.%d)\n", HEDDLE_SOFTWARE_VERSION, HEDDLE_PROTOCOL_VERSION, HEDDLE_PROTOCOL_MINOR);
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            fail_usage("Unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) fail_usage("Unexpected argument '%s'", argv[optind]);
    if (!coordinator || !*coordinator) coordinator = getenv("HEDDLE_COORDINATOR");
    if (!coordinator || !*coordinator) fail_usage("%s", "missing --coordinator (or the environment variable HEDDLE_COORDINATOR)");
    if (!c->ca) fail_usage("%s", "Missing expected argument '--ca <ca>'");
    if (!c->cert) fail_usage("%s", "Missing expected argument '--cert <cert>'");
    if (!c->key) fail_usage("%s", "Missing expected argument '--key <key>'");
    if (!c->work_dir) fail_usage("%s", "Missing expected argument '--work-dir <work-dir>'");
    parse_coordinators(coordinator);
    char *copy = xstrdup(labels);
    for (char *label = strtok(copy, ","); label; label = strtok(NULL, ",")) {
        label = trim(label);
        if (!*label) continue;
        const char *problem = label_problem(label);
        if (problem) fail_usage("--labels: %s", problem);
        char **list = realloc(c->labels, (c->n_labels + 1) * sizeof *list);
        if (!list) abort();
        c->labels = list;
        c->labels[c->n_labels++] = xstrdup(label);
    }
    free(copy);
}

int main(int argc, char **argv) {
    parse_arguments(argc, argv);
    R.environ_base = environ;
    R.link.fd = -1;
    R.link.backoff = 0.25;
    R.link.next_id = 1;
    unsigned seed;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) seed = (unsigned)getpid();
    srandom(seed);

    if (mkdir_p(R.config.work_dir) != 0) {
        fprintf(stderr, "Error: cannot create the work directory %s: %s\n", R.config.work_dir, strerror(errno));
        return 1;
    }
    char err[600];
    R.link.ctx = tls_client_context(R.config.ca, R.config.cert, R.config.key, err, sizeof err);
    if (!R.link.ctx) {
        fprintf(stderr, "Error: %s\n", err);
        return 1;
    }
    remove_leftovers();
    if (R.config.unisolated) {
        logmsg(LOG_WARNING, "jobs run unisolated (--isolation none): every node can read this runner's key, other jobs' "
                             "workspaces and whatever this user can");
    } else if (sandbox_init(&R.sandbox, R.config.work_dir, R.config.key, err, sizeof err) != 0) {
        fprintf(stderr, "Error: %s\n", err);
        return 1;
    } else {
        logmsg(LOG_INFO, "jobs run isolated: each node in a bubblewrap sandbox (%s)", R.sandbox.program);
    }
    int limited = R.config.limits.memory || R.config.limits.cpu_millis || R.config.limits.pids;
    if (cgroups_detect(&R.cgroups, R.cgroups_why, sizeof R.cgroups_why) == 0) {
        cgroups_remove_leftovers(&R.cgroups);
        logmsg(LOG_INFO, "resource limits: %s", R.cgroups_why);
    } else if (limited) {
        fprintf(stderr, "Error: --limits: resource limits need a cgroup this runner can write, and it has none (%s); see README, "
                        "\"Resource limits\"\n", R.cgroups_why);
        return 1;
    } else {
        logmsg(LOG_WARNING, "resource limits: none available (%s): a node with limits fails, saying so", R.cgroups_why);
    }

    R.podman = podman_find();
    if (R.podman) {
        podman_remove_leftovers(R.podman);
        logmsg(LOG_INFO, "container images: podman (%s): a node with `image:` runs in its own container", R.podman);
    } else {
        logmsg(LOG_INFO, "container images: none (podman is not installed): a node with `image:` fails, saying so");
    }

    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return 1;
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGCHLD, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A parent may have started us with signals blocked (threads of a test harness do):
     * SIGCHLD and SIGTERM must reach the handlers. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    size_t max_fds = 2 + (size_t)R.config.capacity * 256;
    struct pollfd *fds = xcalloc(max_fds, sizeof *fds);
    int terms = 0;
    /* After a second SIGTERM: when to stop waiting for the coordinator to take the cancelled
     * jobs' results (0: not yet asked to). */
    double give_up_at = 0;
    int gave_up = 0;
    while (!R.exit_now) {
        double now = now_mono();
        if (give_up_at > 0 && now >= give_up_at && R.jobs) {
            logmsg(LOG_ERROR, "exiting with %zu jobs unreported: the coordinator did not take their results within %.0f s "
                              "of the second shutdown signal (it counts them lost when their leases end)",
                   jobs_count(), R.config.kill_grace + SHUTDOWN_REPORT_SECONDS);
            gave_up = 1;
            break;
        }
        link_tick(now);
        jobs_tick(now);
        cgroups_sweep();
        if (R.exit_now) break;
        if (R.link.state == LINK_READY && R.link.out.len > 0) link_tick(now); /* write what the jobs queued */
        size_t n = 0;
        fds[n].fd = signal_pipe[0];
        fds[n].events = POLLIN;
        fds[n++].revents = 0;
        size_t link_at = n;
        link_poll_fds(fds, &n);
        size_t jobs_at = n;
        jobs_poll_fds(fds, &n, max_fds);
        double next = link_next_timer(now);
        double jobs_next = jobs_next_timer(now);
        if (jobs_next < next) next = jobs_next;
        if (give_up_at > 0 && give_up_at < next) next = give_up_at;
        int timeout = next <= now ? 0 : (int)((next - now) * 1000) + 1;
        if (link_has_room() && jobs_want_send(now)) timeout = 0; /* more to queue at once */
        int ready = poll(fds, (nfds_t)n, timeout);
        if (ready < 0 && errno != EINTR) {
            logmsg(LOG_ERROR, "poll failed: %s", strerror(errno));
            return 1;
        }
        now = now_mono();
        if (fds[0].revents) {
            unsigned char signals[64];
            ssize_t got = read(signal_pipe[0], signals, sizeof signals);
            for (ssize_t i = 0; i < got; i++) {
                if (signals[i] == SIGCHLD) continue;
                if (signals[i] == SIGTERM && ++terms == 1) {
                    R.draining = 1;
                    logmsg(LOG_INFO, "draining: running jobs finish, no new ones start jobs=%zu", jobs_count());
                    link_drain_self();
                    if (!R.jobs) R.exit_now = 1;
                } else {
                    R.draining = 1;
                    logmsg(LOG_WARNING, "second shutdown signal: cancelling the running jobs jobs=%zu", jobs_count());
                    jobs_cancel_all("the runner is shutting down");
                    if (!R.jobs) R.exit_now = 1;
                    if (give_up_at == 0) give_up_at = now + R.config.kill_grace + SHUTDOWN_REPORT_SECONDS;
                }
            }
        }
        jobs_reap(); /* every turn: a lost SIGCHLD costs at most the poll timeout */
        if (link_at < jobs_at) link_handle(&fds[link_at], now);
        jobs_handle(fds + jobs_at, n - jobs_at);
    }
    /* Drained: what is queued for the coordinator goes out before the connection closes. */
    if (R.link.state == LINK_READY && R.link.out.len > 0) link_tick(now_mono());
    if (gave_up) jobs_free_all();
    logmsg(LOG_INFO, "runner stopped");
    free(fds);
    link_shutdown();
    for (size_t i = 0; i < R.config.n_coordinators; i++) {
        free(R.config.coordinators[i].host);
        free(R.config.coordinators[i].port);
    }
    for (size_t i = 0; i < R.config.n_labels; i++) free(R.config.labels[i]);
    free(R.config.labels);
    return gave_up ? 1 : 0;
}
