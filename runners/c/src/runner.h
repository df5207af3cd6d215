/* heddle-runner-c: a Heddle runner in C on libprotobuf-c and OpenSSL.
 *
 * One thread, one poll(2) loop: the TLS connection to a coordinator, every node's output
 * pipe, a self-pipe for signals, and timers. Everything a runner keeps is bounded: a node's
 * unacknowledged log bytes (LOG_BUFFER_LIMIT; past it the node's pipe is not read and the
 * node blocks), the bytes queued for the socket (OUT_HIGH_WATER plus one frame), a frame read
 * (the frame limit), a decoded message (the allocator's cap). */
#ifndef HEDDLE_RUNNER_H
#define HEDDLE_RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <sys/types.h>

#include "heddle/v1/heddle.pb-c.h"

#define HEDDLE_SOFTWARE_VERSION "0.2.0"
#define HEDDLE_PROTOCOL_VERSION 1
#define HEDDLE_PROTOCOL_MINOR 1

/* Frames: 1 flags byte (0), 4-byte big-endian length, one Envelope. */
#define FRAME_HEADER 5
#define FRAME_DEFAULT_MAX (4u << 20)
/* What one decoded message may allocate (a hostile frame fails cleanly past it). */
#define DECODE_ALLOCATION_CAP (32u << 20)
/* Unacknowledged log bytes kept per node. */
#define LOG_BUFFER_LIMIT (8u << 20)
/* The largest LogAppend payload (or half the coordinator's frame limit when smaller). */
#define LOG_CHUNK_MAX (1u << 20)
/* No new log or artifact frame is queued while this many bytes wait for the socket. */
#define OUT_HIGH_WATER (2u << 20)
/* After a second SIGTERM, how long past the kill grace the runner waits for the coordinator to
 * take its cancelled jobs' results before it exits without them (status 1). */
#define SHUTDOWN_REPORT_SECONDS 10.0
#define MAX_COORDINATORS 32

/* ---------------------------------------------------------------- util.c */

typedef struct {
    uint8_t *data;
    size_t start, len, cap; /* bytes data[start .. start+len) */
} buf_t;

/* Makes room for n more bytes at the end (data + start + len). */
int buf_reserve(buf_t *b, size_t n);
int buf_append(buf_t *b, const void *bytes, size_t n);
void buf_consume(buf_t *b, size_t n);
void buf_free(buf_t *b);
static inline uint8_t *buf_bytes(const buf_t *b) { return b->data + b->start; }

enum { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR };
extern int log_threshold;
void logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double now_mono(void);   /* seconds, monotonic */
int64_t now_ms(void);    /* wall clock, ms since the epoch */
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);
/* Without leading and trailing spaces and tabs (in place). */
char *trim(char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int remove_tree(const char *path);
int mkdir_p(const char *path);

/* ---------------------------------------------------------------- wire.c */

/* The allocator every decode uses: fails once a message has taken DECODE_ALLOCATION_CAP. */
typedef struct {
    size_t used, cap;
} capped_allocator_t;
void capped_allocator_init(ProtobufCAllocator *allocator, capped_allocator_t *state, size_t cap);

enum frame_result { FRAME_NEED_MORE = 0, FRAME_OK = 1, FRAME_ERROR = -1 };
/* A decoded envelope with the allocator that owns its memory. */
typedef struct {
    Heddle__V1__Envelope *envelope;
    ProtobufCAllocator allocator;
    capped_allocator_t state;
} message_t;
/* Decodes one frame from bytes[0..len): FRAME_OK with *message set and *consumed bytes used;
 * FRAME_NEED_MORE; or FRAME_ERROR with a sentence in err. The length is checked against
 * max_frame before anything past the header is read. */
int frame_decode(const uint8_t *bytes, size_t len, size_t max_frame, size_t *consumed, message_t **message,
                 char *err, size_t errlen);
void message_free(message_t *message);
/* Appends a frame holding envelope (with id) to out. */
int frame_encode(buf_t *out, uint64_t id, const Heddle__V1__Envelope *envelope);
/* Appends a frame whose payload is `id` followed by an envelope packed without id. */
int frame_encode_packed(buf_t *out, uint64_t id, const uint8_t *packed, size_t len);
uint8_t *envelope_pack(const Heddle__V1__Envelope *envelope, size_t *len);

/* ---------------------------------------------------------------- tls.c */

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
SSL_CTX *tls_client_context(const char *ca, const char *cert, const char *key, char *err, size_t errlen);
SSL *tls_new(SSL_CTX *ctx, int fd, const char *host, char *err, size_t errlen);
void tls_error_text(char *err, size_t errlen, const char *what, SSL *ssl, int result);

/* ---------------------------------------------------------------- sha256 (OpenSSL EVP) */

int sha256_file(int fd, uint64_t *size, uint8_t digest[32]);

/* ---------------------------------------------------------------- proc.c */

/* Starts argv[0] (an absolute path) with argv in directory, in its own process group, stdin /dev/null, stdout
 * and stderr on one pipe (*out_fd, non-blocking, close-on-exec). */
pid_t spawn_process(char *const argv[], char *const env[], const char *directory, int *out_fd, char *err,
                    size_t errlen);
/* SIGNAL to process group `group` and to every process whose environment holds
 * HEDDLE_NODE_TOKEN=token. Returns how many marked processes were found. */
int signal_tree(pid_t group, const char *token, int sig);
void make_token(char out[33]);

/* ---------------------------------------------------------------- sandbox.c */

typedef struct {
    char *program;  /* bwrap */
    char *work_dir; /* resolved: emptied in the sandbox but for the job's workspace */
    char *key;      /* resolved: replaced by an empty file */
    char *empty;    /* that empty file */
    char **system;  /* the host's system trees' arguments, read at start (NULL-ended) */
} sandbox_t;

/* Finds bwrap and builds one sandbox (running /bin/true in it); -1 with err set when it
 * cannot: the runner then refuses to start. */
int sandbox_init(sandbox_t *s, const char *work_dir, const char *key, char *err, size_t errlen);
/* bwrap ARGS -- command..., heap-allocated (sandbox_argv_free). */
char **sandbox_argv(const sandbox_t *s, const char *workspace, int network, char *const command[]);
void sandbox_argv_free(char **argv);

/* ---------------------------------------------------------------- podman.c */

/* A program on PATH (or /usr/bin, /bin, /usr/local/bin), heap-allocated; NULL when none. */
char *find_program(const char *name);
/* podman on PATH (heap), or NULL. */
char *podman_find(void);
/* A node's container name, heddle-PID-JOB-EPOCH-NODE (heap). */
struct node;
char *podman_name(const struct node *node);
/* podman run ... IMAGE /bin/sh -c RUN for a node with an image (free with sandbox_argv_free). */
char **podman_argv(const char *podman, const struct node *node, const char *name);
void podman_remove(const char *podman, const char *name, int wait);
void podman_remove_leftovers(const char *podman);

/* ---------------------------------------------------------------- cgroups.c */

typedef struct {
    long long memory;     /* bytes; 0: none */
    long long cpu_millis; /* thousandths of a CPU; 0: none */
    long long pids;       /* 0: none */
} limits_t;

typedef struct {
    int v2;
    size_t n;
    const char *controllers[3];
    char *parents[3]; /* where nodes' cgroups are made, per controller (v2: one) */
} cgroups_t;

/* Finds where this runner can make node cgroups; -1 with why set when nowhere (why then says
 * which on success). */
int cgroups_detect(cgroups_t *c, char *why, size_t whylen);
/* Makes the node's cgroups with its limits; *procs: the cgroup.procs files to join (NULL-ended). */
int cgroups_make(const cgroups_t *c, const char *name, const limits_t *limits, char ***procs, char *err, size_t errlen);
int cgroups_out_of_memory(const cgroups_t *c, const char *name);
void cgroups_remove(const cgroups_t *c, const char *name);
/* Tries again to remove cgroups whose processes were not gone when their node ended. */
void cgroups_sweep(void);
/* Removes empty node cgroups runners that are gone left (`heddle-PID-*`). */
void cgroups_remove_leftovers(const cgroups_t *c);
/* /bin/sh -c 'join the cgroups; exec "$@"' ... -- argv, heap-allocated (sandbox_argv_free). */
char **cgroups_joining(char **procs, char *const argv[]);
/* memory=2G,cpus=2,pids=1000 */
int limits_parse(const char *text, limits_t *limits, char *err, size_t errlen);
void limits_size(long long bytes, char *out, size_t len);

/* ---------------------------------------------------------------- jobs */

typedef enum { NODE_PENDING, NODE_STARTING, NODE_RUNNING, NODE_UPLOADING, NODE_REPORTING, NODE_DONE } node_phase_t;
typedef enum { FINAL_NONE, FINAL_SUCCEEDED, FINAL_FAILED, FINAL_SKIPPED, FINAL_CANCELLED } node_final_t;

typedef struct {
    uint64_t offset;
    int64_t at_ms;
} log_mark_t;

typedef struct logstream {
    uint64_t acked, sent, end;
    log_mark_t *marks;        /* when the bytes from each offset on were read: one per read 100 ms or
                                 more after the last, from the last one at or before `acked` */
    size_t n_marks, cap_marks;
    buf_t pending;            /* bytes acked .. end */
    double paused_until;      /* after a `resend` ack: nothing sent before this */
    double pause;
} logstream_t;

struct job;

typedef struct upload {
    int active;
    int fd;
    char *name;
    uint64_t size, upload_id, offset;
    uint8_t sha256[32];
    enum { UP_DECLARE, UP_DECLARING, UP_SENDING, UP_COMMITTING } phase;
    uint64_t generation;      /* the connection the chunks go on */
    size_t next;              /* index in the node's matches */
} upload_t;

typedef struct node {
    struct job *job;
    Heddle__V1__NodeSpec *spec;
    node_phase_t phase;
    node_final_t final;
    pid_t pid;
    int out_fd;
    int exited, eof, exit_code;
    char token[33];
    double kill_at;           /* SIGKILL to the tree at this time (0: not stopping) */
    int kill_sent;
    double timeout_at;
    int timed_out;
    logstream_t log;
    char **matches;           /* artifact names to upload */
    size_t n_matches;
    upload_t upload;
    limits_t limits;          /* its own over the runner's --limits */
    char *cgroup;             /* its cgroups' name, when it has limits */
    buf_t held;               /* output that may be the start of a secret, until the next read */
    char *container;          /* its container's name, when it runs in an image */
} node_t;

typedef enum { JOB_CHECKOUT, JOB_STARTING, JOB_RUNNING, JOB_FINISHING, JOB_REPORTING, JOB_DONE } job_phase_t;

typedef struct job {
    struct job *next;
    message_t *message;       /* owns the assignment */
    Heddle__V1__Assignment *assignment;
    uint64_t job_id, epoch;
    uint32_t attempt;
    char *workspace;
    char *commit;
    job_phase_t phase;
    node_t *nodes;
    size_t n_nodes;
    char *cancel_reason;
    int abandoned;
    int inflight;              /* requests sent about this job and not answered */
    char *failure;             /* the first node failure */
    const char **secrets;      /* every secret value its nodes are given, longest first (into the assignment) */
    size_t n_secrets;
    /* checkout helper */
    pid_t helper_pid;
    int helper_fd;
    int helper_exited, helper_eof, helper_status;
    buf_t helper_output;
} job_t;

/* ---------------------------------------------------------------- link.c (connection + requests) */

typedef struct request request_t;
typedef void (*request_done_fn)(request_t *request, const Heddle__V1__Envelope *response, int code, const char *message);

struct request {
    request_t *next;
    uint64_t id;              /* on the current connection; 0: waiting to be sent */
    uint8_t *packed;          /* the envelope without id */
    size_t len;
    request_done_fn done;
    job_t *job;
    node_t *node;
    /* Sent again by the link after the connection ends before the answer, and after an
     * UNAVAILABLE answer (following a pause); else `done` hears of either (code -1, or
     * UNAVAILABLE) and its maker starts over (an artifact commit: declare again). */
    int resend;
    double not_before;        /* UNAVAILABLE: sent again after a pause */
    /* A node's last status goes only once every byte of its log was sent on the connection
     * before it: the coordinator commits the chunks it received before it stores the status. */
    const node_t *after_log;
    double pause;
};

typedef struct {
    char *host;
    char *port;
} endpoint_t;

typedef struct {
    endpoint_t coordinators[MAX_COORDINATORS];
    size_t n_coordinators;
    char *ca, *cert, *key;
    char **labels;
    size_t n_labels;
    char *work_dir;
    char *spool_dir;
    unsigned capacity;
    double kill_grace;
    int unisolated; /* --isolation none */
    limits_t limits; /* --limits: of nodes that set none */
} config_t;

typedef enum { LINK_IDLE, LINK_CONNECTING, LINK_HANDSHAKE, LINK_HELLO, LINK_READY } link_state_t;

typedef struct {
    link_state_t state;
    int fd;
    SSL *ssl;
    SSL_CTX *ctx;
    size_t index;             /* coordinator in the list */
    buf_t in, out;
    uint64_t next_id;
    uint64_t hello_id;
    uint64_t generation;      /* counts connections */
    double deadline;          /* connect and handshake */
    double connected_at, last_read, next_heartbeat, retry_at;
    double backoff;
    uint32_t heartbeat_ms, max_frame, max_chunk;
    int want_write;
    request_t *requests;      /* in the order they were made */
} link_t;

typedef struct {
    config_t config;
    sandbox_t sandbox; /* program NULL: unisolated */
    cgroups_t cgroups; /* n 0: none (cgroups_why says why) */
    char *podman;      /* NULL: none, and nodes with an image fail */
    char cgroups_why[400];
    link_t link;
    job_t *jobs;
    uint64_t assigned_through;
    int draining;
    int exit_now;
    char **environ_base;
} runner_t;

extern runner_t R;

/* link.c */
void link_tick(double now);
void link_poll_fds(struct pollfd *fds, size_t *n);
void link_handle(struct pollfd *pfd, double now);
double link_next_timer(double now);
int link_ready(void);
int link_has_room(void);
request_t *link_request(const Heddle__V1__Envelope *envelope, request_done_fn done, job_t *job, node_t *node);
/* The same, sent only once the node's log bytes are all sent (its last status). */
request_t *link_request_after_log(const Heddle__V1__Envelope *envelope, request_done_fn done, node_t *node);
void link_send_oneway(const Heddle__V1__Envelope *envelope);
void link_drop_requests_of(job_t *job);
void link_drain_self(void);
void link_shutdown(void);

/* job.c */
/* The JobRef every write about `job` carries (its id, attempt and lease epoch). */
Heddle__V1__JobRef job_ref(const job_t *job);
void job_assign(message_t *message);
void job_stop(uint64_t job_id, uint64_t epoch, int abandon, const char *reason);
void job_ack(const Heddle__V1__LogAck *ack);
void jobs_on_connect(void);
void jobs_tick(double now);
void jobs_poll_fds(struct pollfd *fds, size_t *n, size_t max);
void jobs_handle(struct pollfd *fds, size_t n);
void jobs_reap(void);
double jobs_next_timer(double now);
int jobs_want_send(double now);
void jobs_cancel_all(const char *reason);
void jobs_free_all(void);
size_t jobs_count(void);
void remove_leftovers(void);

/* artifact.c */
void artifacts_match(node_t *node);
void artifacts_step(node_t *node);
void artifacts_on_connect(node_t *node);

/* logstream.c */
void logstream_append(node_t *node, const uint8_t *bytes, size_t n);
/* The coordinator acknowledged bytes up to log.acked: marks before the one in force there go. */
void logstream_acked(logstream_t *log);
/* A node's output, its job's secrets masked as ***; `final` at its end (nothing held back). */
void logstream_output(node_t *node, const uint8_t *bytes, size_t n, int final);
void logstream_pump(node_t *node, double now);
int logstream_has_room(const node_t *node);
int logstream_durable(const node_t *node);

#endif
