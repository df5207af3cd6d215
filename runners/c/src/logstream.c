/* One node's log on its way to the coordinator: the bytes from the last offset the
 * coordinator acknowledged as durable are kept (up to LOG_BUFFER_LIMIT; past it the node's
 * pipe is not read) and sent as LogAppend frames; after a reconnect everything not
 * acknowledged goes again, and the coordinator drops what it already has. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runner.h"

int logstream_has_room(const node_t *node) { return node->log.pending.len < LOG_BUFFER_LIMIT; }

int logstream_durable(const node_t *node) { return node->log.acked == node->log.end; }

static int64_t wall_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

void logstream_append(node_t *node, const uint8_t *bytes, size_t n) {
    logstream_t *log = &node->log;
    int64_t now = wall_ms();
    if (log->n_marks == 0 || now >= log->marks[log->n_marks - 1].at_ms + 100) {
        if (log->n_marks == log->cap_marks) {
            size_t cap = log->cap_marks ? log->cap_marks * 2 : 16;
            log_mark_t *marks = realloc(log->marks, cap * sizeof *marks);
            if (!marks) return;
            log->marks = marks;
            log->cap_marks = cap;
        }
        log->marks[log->n_marks++] = (log_mark_t){log->end, now};
    }
    if (buf_append(&log->pending, bytes, n) != 0) return;
    log->end += n;
}

void logstream_acked(logstream_t *log) {
    size_t keep = 0;
    for (size_t i = 0; i < log->n_marks && log->marks[i].offset <= log->acked; i++) keep = i;
    if (keep == 0) return;
    memmove(log->marks, log->marks + keep, (log->n_marks - keep) * sizeof *log->marks);
    log->n_marks -= keep;
}

/* The job's secret values are replaced with *** as output streams. The end of a read that
 * could be the start of a value is held back (node->held) until the next read shows whether
 * it is one, or the output ends. */
void logstream_output(node_t *node, const uint8_t *bytes, size_t n, int final) {
    const job_t *job = node->job;
    if (job->n_secrets == 0) {
        if (n) logstream_append(node, bytes, n);
        return;
    }
    buf_t *held = &node->held;
    if (n && buf_append(held, bytes, n) != 0) return;
    const uint8_t *in = buf_bytes(held);
    size_t len = held->len, copied = 0, i = 0;
    while (i < len) {
        size_t rest = len - i;
        int matched = 0, partial = 0;
        for (size_t s = 0; s < job->n_secrets; s++) {
            const char *value = job->secrets[s];
            size_t vlen = strlen(value);
            if ((uint8_t)value[0] != in[i]) continue;
            if (rest >= vlen) {
                if (memcmp(in + i, value, vlen) == 0) {
                    if (i > copied) logstream_append(node, in + copied, i - copied);
                    logstream_append(node, (const uint8_t *)"***", 3);
                    i += vlen;
                    copied = i;
                    matched = 1;
                    break;
                }
            } else if (!final && memcmp(in + i, value, rest) == 0) {
                partial = 1;
                break;
            }
        }
        if (partial) break;
        if (!matched) i++;
    }
    if (i > copied) logstream_append(node, in + copied, i - copied);
    buf_consume(held, i);
    if (final) buf_consume(held, held->len);
}

void logstream_pump(node_t *node, double now) {
    logstream_t *log = &node->log;
    if (log->sent >= log->end || log->paused_until > now) return;
    size_t limit = R.link.max_frame / 2;
    if (limit > LOG_CHUNK_MAX) limit = LOG_CHUNK_MAX;
    if (limit < 4096) limit = 4096;
    while (log->sent < log->end && link_has_room()) {
        uint64_t count = log->end - log->sent;
        if (count > limit) count = limit;
        Heddle__V1__JobRef ref = job_ref(node->job);
        Heddle__V1__LogAppend append = HEDDLE__V1__LOG_APPEND__INIT;
        append.job = &ref;
        append.node = node->spec->name;
        append.offset = log->sent;
        append.data.data = buf_bytes(&log->pending) + (log->sent - log->acked);
        append.data.len = (size_t)count;
        /* The marks in the chunk, the one in force at its start first (moved there). */
        Heddle__V1__LogTime times[64];
        Heddle__V1__LogTime *pointers[64];
        size_t n_times = 0;
        for (size_t i = 0; i < log->n_marks && n_times < 64; i++) {
            const log_mark_t *mark = &log->marks[i];
            int in_force = mark->offset <= log->sent && (i + 1 == log->n_marks || log->marks[i + 1].offset > log->sent);
            if (!in_force && (mark->offset <= log->sent || mark->offset >= log->sent + count)) continue;
            Heddle__V1__LogTime time = HEDDLE__V1__LOG_TIME__INIT;
            time.offset = in_force ? log->sent : mark->offset;
            time.at_ms = mark->at_ms;
            times[n_times] = time;
            pointers[n_times] = &times[n_times];
            n_times++;
        }
        append.n_times = n_times;
        append.times = pointers;
        Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
        envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_LOG_APPEND;
        envelope.log_append = &append;
        link_send_oneway(&envelope);
        log->sent += count;
    }
}
