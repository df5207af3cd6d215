/* The link to the coordinator: one mutual-TLS connection at a time, to the coordinators of
 * the list in turn, with exponential backoff and jitter; Hello and Welcome; heartbeats both
 * ways (a coordinator silent for three intervals is gone); requests matched to their answers
 * by id and sent again on the next connection when one ends first. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runner.h"

runner_t R;

#define CONNECT_TIMEOUT 10.0
#define MAX_DECODED_FRAME (64u << 20)

static void link_fail(const char *why, double now);

static size_t read_limit(void) {
    link_t *l = &R.link;
    if (l->state != LINK_READY || l->max_frame <= FRAME_DEFAULT_MAX) return FRAME_DEFAULT_MAX;
    return l->max_frame < MAX_DECODED_FRAME ? l->max_frame : MAX_DECODED_FRAME;
}

int link_ready(void) { return R.link.state == LINK_READY; }

int link_has_room(void) { return R.link.state == LINK_READY && R.link.out.len < OUT_HIGH_WATER; }

static void request_free(request_t *request) {
    free(request->packed);
    free(request);
}

/* Removes `request` from the list and tells its maker how it ended. */
static void request_finish(request_t *request, const Heddle__V1__Envelope *response, int code, const char *message) {
    for (request_t **link = &R.link.requests; *link; link = &(*link)->next) {
        if (*link == request) {
            *link = request->next;
            break;
        }
    }
    if (request->job) request->job->inflight--;
    if (request->done) request->done(request, response, code, message);
    request_free(request);
}

static void flush_requests(double now) {
    link_t *l = &R.link;
    if (l->state != LINK_READY) return;
    for (request_t *request = l->requests; request; request = request->next) {
        if (request->id != 0 || request->not_before > now) continue;
        if (request->after_log && request->after_log->log.sent < request->after_log->log.end) continue;
        request->id = l->next_id++;
        frame_encode_packed(&l->out, request->id, request->packed, request->len);
    }
}

static request_t *enqueue(const Heddle__V1__Envelope *envelope, request_done_fn done, job_t *job, node_t *node,
                          const node_t *after_log) {
    request_t *request = xcalloc(1, sizeof *request);
    request->after_log = after_log;
    request->packed = envelope_pack(envelope, &request->len);
    request->done = done;
    request->job = job;
    request->node = node;
    request->resend = 1;
    request->pause = 1;
    if (job) job->inflight++;
    request_t **tail = &R.link.requests;
    while (*tail) tail = &(*tail)->next;
    *tail = request;
    flush_requests(now_mono());
    return request;
}

request_t *link_request(const Heddle__V1__Envelope *envelope, request_done_fn done, job_t *job, node_t *node) {
    return enqueue(envelope, done, job, node, NULL);
}

request_t *link_request_after_log(const Heddle__V1__Envelope *envelope, request_done_fn done, node_t *node) {
    return enqueue(envelope, done, node->job, node, node);
}

void link_send_oneway(const Heddle__V1__Envelope *envelope) {
    if (R.link.state != LINK_READY) return;
    frame_encode(&R.link.out, 0, envelope);
}

void link_drop_requests_of(job_t *job) {
    request_t **link = &R.link.requests;
    while (*link) {
        request_t *request = *link;
        if (request->job == job) {
            *link = request->next;
            request_free(request);
        } else {
            link = &request->next;
        }
    }
    job->inflight = 0;
}

void link_drain_self(void) {
    if (R.link.state != LINK_READY) return;
    Heddle__V1__DrainSelf drain = HEDDLE__V1__DRAIN_SELF__INIT;
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_DRAIN_SELF;
    envelope.drain_self = &drain;
    /* Not sent again: every new connection of a draining runner sends its own. */
    link_request(&envelope, NULL, NULL, NULL)->resend = 0;
}

/* The jobs this runner holds, as Hello and heartbeats list them. */
static Heddle__V1__JobRef **running_refs(size_t *count, Heddle__V1__JobRef **storage) {
    size_t n = jobs_count();
    Heddle__V1__JobRef *refs = xcalloc(n, sizeof *refs);
    Heddle__V1__JobRef **pointers = xcalloc(n, sizeof *pointers);
    size_t i = 0;
    for (job_t *job = R.jobs; job; job = job->next, i++) {
        refs[i] = job_ref(job);
        pointers[i] = &refs[i];
    }
    *count = n;
    *storage = refs;
    return pointers;
}

static void send_hello(void) {
    link_t *l = &R.link;
    Heddle__V1__Hello hello = HEDDLE__V1__HELLO__INIT;
    hello.protocol_version = HEDDLE_PROTOCOL_VERSION;
    hello.protocol_minor = HEDDLE_PROTOCOL_MINOR;
    hello.software_version = (char *)HEDDLE_SOFTWARE_VERSION "-c";
    hello.n_labels = R.config.n_labels;
    hello.labels = R.config.labels;
    hello.capacity = R.config.capacity;
    Heddle__V1__JobRef *storage;
    hello.running_jobs = running_refs(&hello.n_running_jobs, &storage);
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_HELLO;
    envelope.hello = &hello;
    l->hello_id = l->next_id++;
    frame_encode(&l->out, l->hello_id, &envelope);
    free(hello.running_jobs);
    free(storage);
}

static void send_heartbeat(void) {
    Heddle__V1__RunningJobs running = HEDDLE__V1__RUNNING_JOBS__INIT;
    Heddle__V1__JobRef *storage;
    running.jobs = running_refs(&running.n_jobs, &storage);
    running.assigned_through_epoch = R.assigned_through;
    Heddle__V1__Heartbeat heartbeat = HEDDLE__V1__HEARTBEAT__INIT;
    heartbeat.sent_at_ms = now_ms();
    heartbeat.running = &running;
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_HEARTBEAT;
    envelope.heartbeat = &heartbeat;
    frame_encode(&R.link.out, 0, &envelope);
    free(running.jobs);
    free(storage);
}

/* A connection attempt that failed, said with the coordinator's address. */
static void connect_failed(const endpoint_t *endpoint, const char *reason, double now) {
    char why[600];
    snprintf(why, sizeof why, "cannot connect to the coordinator at %s:%s: %s", endpoint->host, endpoint->port, reason);
    link_fail(why, now);
}

static void link_start(double now) {
    link_t *l = &R.link;
    endpoint_t *endpoint = &R.config.coordinators[l->index % R.config.n_coordinators];
    /* The TLS files are read again for every connection: a renewed certificate is used
     * without a restart. */
    char err[600];
    SSL_CTX *ctx = tls_client_context(R.config.ca, R.config.cert, R.config.key, err, sizeof err);
    if (!ctx) {
        link_fail(err, now);
        return;
    }
    SSL_CTX_free(l->ctx);
    l->ctx = ctx;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found = NULL;
    int status = getaddrinfo(endpoint->host, endpoint->port, &hints, &found);
    if (status != 0) {
        connect_failed(endpoint, gai_strerror(status), now);
        return;
    }
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(found);
        connect_failed(endpoint, strerror(errno), now);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int result = connect(fd, found->ai_addr, found->ai_addrlen);
    int error = errno;
    freeaddrinfo(found);
    l->fd = fd;
    l->generation++;
    l->deadline = now + CONNECT_TIMEOUT;
    l->connected_at = now;
    if (result != 0 && error != EINPROGRESS) {
        connect_failed(endpoint, strerror(error), now);
        return;
    }
    l->state = LINK_CONNECTING;
}

static void handshake(double now) {
    link_t *l = &R.link;
    endpoint_t *endpoint = &R.config.coordinators[l->index % R.config.n_coordinators];
    int result = SSL_connect(l->ssl);
    if (result == 1) {
        l->state = LINK_HELLO;
        l->last_read = now;
        send_hello();
        return;
    }
    int code = SSL_get_error(l->ssl, result);
    if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
        l->want_write = code == SSL_ERROR_WANT_WRITE;
        return;
    }
    char what[300], why[700];
    snprintf(what, sizeof what, "cannot connect to the coordinator at %s:%s", endpoint->host, endpoint->port);
    tls_error_text(why, sizeof why, what, l->ssl, result);
    link_fail(why, now);
}

static void finish_connect(double now) {
    link_t *l = &R.link;
    endpoint_t *endpoint = &R.config.coordinators[l->index % R.config.n_coordinators];
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error != 0) {
        connect_failed(endpoint, strerror(error), now);
        return;
    }
    char err[300];
    l->ssl = tls_new(l->ctx, l->fd, endpoint->host, err, sizeof err);
    if (!l->ssl) {
        link_fail(err, now);
        return;
    }
    l->state = LINK_HANDSHAKE;
    handshake(now);
}

/* The socket and TLS state go, and the bytes queued either way. */
static void close_connection(int say_goodbye) {
    link_t *l = &R.link;
    if (l->ssl) {
        if (say_goodbye) SSL_shutdown(l->ssl);
        SSL_free(l->ssl);
        l->ssl = NULL;
    }
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
    buf_free(&l->in);
    buf_free(&l->out);
    l->want_write = 0;
}

/* Ends the connection (or the attempt) and schedules the next one. */
static void link_fail(const char *why, double now) {
    link_t *l = &R.link;
    int was_ready = l->state == LINK_READY;
    if (why) logmsg(was_ready ? LOG_WARNING : LOG_ERROR, "%s%s", was_ready ? "disconnected: " : "", why);
    close_connection(0);
    /* Requests in flight go again on the next connection, or their makers hear of the loss. */
    request_t *request = l->requests;
    while (request) {
        request_t *next = request->next;
        if (request->id != 0) {
            request->id = 0;
            if (!request->resend) request_finish(request, NULL, -1, "the connection ended");
        }
        request = next;
    }
    /* Only a connection that lasted resets the backoff: one the coordinator keeps ending at
     * once is not retried several times a second. */
    if (was_ready && now - l->connected_at >= 10) l->backoff = 0.25;
    l->state = LINK_IDLE;
    l->index++;
    double limit = 30;
    if (R.jobs && l->heartbeat_ms > 0) {
        double lease = 1.5 * l->heartbeat_ms / 1000.0;
        if (lease < limit) limit = lease;
    }
    if (l->backoff > limit) l->backoff = limit;
    double jitter = 0.5 + (double)random() / (double)RAND_MAX;
    l->retry_at = now + l->backoff * jitter;
    l->backoff = l->backoff * 2 < limit ? l->backoff * 2 : limit;
}

static void on_welcome(const Heddle__V1__Welcome *welcome, double now) {
    link_t *l = &R.link;
    l->state = LINK_READY;
    l->connected_at = now;
    l->heartbeat_ms = welcome->heartbeat_interval_ms;
    l->max_frame = welcome->max_frame_bytes ? welcome->max_frame_bytes : FRAME_DEFAULT_MAX;
    l->max_chunk = welcome->max_artifact_chunk_bytes;
    l->next_heartbeat = now + l->heartbeat_ms / 1000.0;
    endpoint_t *endpoint = &R.config.coordinators[l->index % R.config.n_coordinators];
    logmsg(LOG_INFO, "connected coordinator=%s:%s name=%s reattaching=%zu", endpoint->host, endpoint->port,
           welcome->peer_name, jobs_count());
    jobs_on_connect(); /* the logs rewind to what was acknowledged, before any request goes */
    flush_requests(now);
    if (R.draining) link_drain_self();
}

static void on_frame(message_t *message, double now) {
    link_t *l = &R.link;
    Heddle__V1__Envelope *envelope = message->envelope;
    if (envelope->id != 0 && envelope->id == l->hello_id && l->state == LINK_HELLO) {
        l->hello_id = 0;
        if (envelope->body_case == HEDDLE__V1__ENVELOPE__BODY_WELCOME) {
            on_welcome(envelope->welcome, now);
        } else {
            char why[600];
            snprintf(why, sizeof why, "the coordinator refused this runner: %s",
                     envelope->body_case == HEDDLE__V1__ENVELOPE__BODY_ERROR ? envelope->error->message
                                                                            : "it answered Hello with something else");
            link_fail(why, now);
        }
        message_free(message);
        return;
    }
    if (envelope->id != 0) {
        request_t *request = l->requests;
        while (request && request->id != envelope->id) request = request->next;
        if (request) {
            if (envelope->body_case == HEDDLE__V1__ENVELOPE__BODY_ERROR) {
                Heddle__V1__Error *error = envelope->error;
                if (error->code == HEDDLE__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE && request->resend) {
                    /* The coordinator cannot store it now (its storage is full): again later. */
                    request->id = 0;
                    request->not_before = now + request->pause;
                    request->pause = request->pause * 2 < 30 ? request->pause * 2 : 30;
                } else {
                    request_finish(request, NULL, (int)error->code, error->message);
                }
            } else {
                request_finish(request, envelope, 0, NULL);
            }
        }
        message_free(message);
        return;
    }
    switch (envelope->body_case) {
    case HEDDLE__V1__ENVELOPE__BODY_ASSIGNMENT:
        job_assign(message); /* the job keeps the message */
        return;
    case HEDDLE__V1__ENVELOPE__BODY_STOP_JOB:
        job_stop(envelope->stop_job->job_id, envelope->stop_job->epoch, envelope->stop_job->abandon,
                 envelope->stop_job->reason);
        break;
    case HEDDLE__V1__ENVELOPE__BODY_LOG_ACK:
        job_ack(envelope->log_ack);
        break;
    case HEDDLE__V1__ENVELOPE__BODY_ERROR:
        logmsg(LOG_ERROR, "coordinator error code=%d error=%s", envelope->error->code, envelope->error->message);
        break;
    default:
        break;
    }
    message_free(message);
}

static void read_frames(double now) {
    link_t *l = &R.link;
    uint8_t block[1 << 16];
    for (;;) {
        int n = SSL_read(l->ssl, block, sizeof block);
        if (n <= 0) {
            int code = SSL_get_error(l->ssl, n);
            if (code == SSL_ERROR_WANT_READ) return;
            if (code == SSL_ERROR_WANT_WRITE) {
                l->want_write = 1;
                return;
            }
            char why[600];
            if (code == SSL_ERROR_ZERO_RETURN || (code == SSL_ERROR_SYSCALL && errno == 0)) {
                snprintf(why, sizeof why, "the coordinator closed the connection");
                ERR_clear_error();
            } else {
                tls_error_text(why, sizeof why, "the connection to the coordinator failed", l->ssl, n);
            }
            link_fail(why, now);
            return;
        }
        l->last_read = now;
        if (buf_append(&l->in, block, (size_t)n) != 0) {
            link_fail("out of memory", now);
            return;
        }
        for (;;) {
            size_t consumed = 0;
            message_t *message = NULL;
            char err[256];
            int result = frame_decode(buf_bytes(&l->in), l->in.len, read_limit(), &consumed, &message, err, sizeof err);
            if (result == FRAME_NEED_MORE) break;
            if (result == FRAME_ERROR) {
                char why[400];
                snprintf(why, sizeof why, "a broken frame from the coordinator: %s", err);
                link_fail(why, now);
                return;
            }
            buf_consume(&l->in, consumed);
            uint64_t generation = l->generation;
            on_frame(message, now);
            if (l->state == LINK_IDLE || l->generation != generation) return;
        }
    }
}

static void write_out(double now) {
    link_t *l = &R.link;
    l->want_write = 0;
    while (l->out.len > 0) {
        size_t chunk = l->out.len < (1u << 20) ? l->out.len : (1u << 20);
        int n = SSL_write(l->ssl, buf_bytes(&l->out), (int)chunk);
        if (n > 0) {
            buf_consume(&l->out, (size_t)n);
            continue;
        }
        int code = SSL_get_error(l->ssl, n);
        if (code == SSL_ERROR_WANT_WRITE) {
            l->want_write = 1;
            return;
        }
        if (code == SSL_ERROR_WANT_READ) return;
        char why[600];
        tls_error_text(why, sizeof why, "the connection to the coordinator failed", l->ssl, n);
        link_fail(why, now);
        return;
    }
}

void link_poll_fds(struct pollfd *fds, size_t *n) {
    link_t *l = &R.link;
    if (l->state == LINK_IDLE || l->fd < 0) return;
    struct pollfd *pfd = &fds[(*n)++];
    pfd->fd = l->fd;
    pfd->revents = 0;
    if (l->state == LINK_CONNECTING) {
        pfd->events = POLLOUT;
    } else {
        pfd->events = POLLIN;
        if (l->want_write || l->out.len > 0) pfd->events |= POLLOUT;
    }
}

void link_handle(struct pollfd *pfd, double now) {
    link_t *l = &R.link;
    if (pfd->fd != l->fd || pfd->revents == 0) return;
    switch (l->state) {
    case LINK_CONNECTING:
        finish_connect(now);
        break;
    case LINK_HANDSHAKE:
        handshake(now);
        break;
    case LINK_HELLO:
    case LINK_READY:
        if (pfd->revents & (POLLIN | POLLHUP | POLLERR)) read_frames(now);
        if (l->state != LINK_IDLE && l->fd == pfd->fd && (pfd->revents & POLLOUT)) write_out(now);
        break;
    default:
        break;
    }
}

/* Timers and the work that is not a socket event: connect, heartbeats, silence, deadlines,
 * requests whose pause is over, and writing what was queued since the last poll. */
void link_tick(double now) {
    link_t *l = &R.link;
    if (l->state == LINK_IDLE) {
        if (now >= l->retry_at && !R.exit_now) link_start(now);
        return;
    }
    if (l->state != LINK_READY) {
        if (now >= l->deadline) link_fail("the coordinator did not complete the connection within 10 s", now);
        else if (l->state == LINK_HELLO && l->out.len > 0) write_out(now);
        return;
    }
    double interval = l->heartbeat_ms / 1000.0;
    if (interval > 0 && now - l->last_read > 3 * interval) {
        link_fail("the coordinator was silent for three heartbeat intervals", now);
        return;
    }
    if (interval > 0 && now >= l->next_heartbeat) {
        send_heartbeat();
        while (l->next_heartbeat <= now) l->next_heartbeat += interval;
    }
    flush_requests(now);
    if (l->out.len > 0) write_out(now);
}

double link_next_timer(double now) {
    link_t *l = &R.link;
    double next = now + 1;
    if (l->state == LINK_IDLE) return l->retry_at < next ? l->retry_at : next;
    if (l->state != LINK_READY) return l->deadline < next ? l->deadline : next;
    if (l->next_heartbeat < next) next = l->next_heartbeat;
    for (request_t *request = l->requests; request; request = request->next) {
        if (request->id == 0 && request->not_before > now && request->not_before < next) next = request->not_before;
    }
    return next;
}

/* At exit: the connection closed, what is left freed. */
void link_shutdown(void) {
    link_t *l = &R.link;
    close_connection(1);
    while (l->requests) {
        request_t *request = l->requests;
        l->requests = request->next;
        request_free(request);
    }
    SSL_CTX_free(l->ctx);
    l->ctx = NULL;
}
