/* One node's log on its way to the coordinator: the bytes from the last offset the
 * coordinator acknowledged as durable are kept (up to LOG_BUFFER_LIMIT; past it the node's
 * pipe is not read) and sent as LogAppend frames; after a reconnect everything not
 * acknowledged goes again, and the coordinator drops what it already has. */
#include <string.h>

#include "runner.h"

int logstream_has_room(const node_t *node) { return node->log.pending.len < LOG_BUFFER_LIMIT; }

int logstream_durable(const node_t *node) { return node->log.acked == node->log.end; }

void logstream_append(node_t *node, const uint8_t *bytes, size_t n) {
    if (buf_append(&node->log.pending, bytes, n) != 0) return;
    node->log.end += n;
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
        Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
        envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_LOG_APPEND;
        envelope.log_append = &append;
        link_send_oneway(&envelope);
        log->sent += count;
    }
}
