/* Frames and messages: the decoder checks every length before it is used, and every decode
 * allocates through a capped allocator, so a hostile frame fails with an error, never with
 * unbounded memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"

/* Each block carries its size in front, so `free` can give it back to the count. */
typedef struct {
    size_t size;
    size_t pad;
} block_header_t;

static void *capped_alloc(void *data, size_t size) {
    capped_allocator_t *state = data;
    if (size > state->cap || state->used > state->cap - size) return NULL;
    block_header_t *block = malloc(sizeof(block_header_t) + size);
    if (!block) return NULL;
    block->size = size;
    state->used += size;
    return block + 1;
}

static void capped_free(void *data, void *pointer) {
    capped_allocator_t *state = data;
    if (!pointer) return;
    block_header_t *block = (block_header_t *)pointer - 1;
    state->used -= block->size;
    free(block);
}

void capped_allocator_init(ProtobufCAllocator *allocator, capped_allocator_t *state, size_t cap) {
    state->used = 0;
    state->cap = cap;
    allocator->alloc = capped_alloc;
    allocator->free = capped_free;
    allocator->allocator_data = state;
}

int frame_decode(const uint8_t *bytes, size_t len, size_t max_frame, size_t *consumed, message_t **out,
                 char *err, size_t errlen) {
    *out = NULL;
    *consumed = 0;
    if (len < FRAME_HEADER) return FRAME_NEED_MORE;
    if (bytes[0] != 0) {
        snprintf(err, errlen, "frame flags must be 0, got %u", bytes[0]);
        return FRAME_ERROR;
    }
    uint32_t length = ((uint32_t)bytes[1] << 24) | ((uint32_t)bytes[2] << 16) | ((uint32_t)bytes[3] << 8) | bytes[4];
    if (length > max_frame) {
        snprintf(err, errlen, "frame of %u bytes is over the maximum of %zu bytes", length, max_frame);
        return FRAME_ERROR;
    }
    if (len - FRAME_HEADER < length) return FRAME_NEED_MORE;
    message_t *message = malloc(sizeof *message);
    if (!message) {
        snprintf(err, errlen, "out of memory");
        return FRAME_ERROR;
    }
    capped_allocator_init(&message->allocator, &message->state, DECODE_ALLOCATION_CAP);
    message->envelope = heddle__v1__envelope__unpack(&message->allocator, length, bytes + FRAME_HEADER);
    if (!message->envelope) {
        free(message);
        snprintf(err, errlen, "a frame of %u bytes is not a valid Envelope (or needs more than %u bytes decoded)",
                 length, DECODE_ALLOCATION_CAP);
        return FRAME_ERROR;
    }
    if (message->envelope->body_case == HEDDLE__V1__ENVELOPE__BODY__NOT_SET &&
        message->envelope->base.n_unknown_fields == 0) {
        message_free(message);
        snprintf(err, errlen, "frame holds an envelope with no message");
        return FRAME_ERROR;
    }
    *out = message;
    *consumed = FRAME_HEADER + (size_t)length;
    return FRAME_OK;
}

void message_free(message_t *message) {
    if (!message) return;
    heddle__v1__envelope__free_unpacked(message->envelope, &message->allocator);
    free(message);
}

static size_t put_varint(uint8_t *out, uint64_t value) {
    size_t n = 0;
    while (value >= 0x80) {
        out[n++] = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    out[n++] = (uint8_t)value;
    return n;
}

int frame_encode_packed(buf_t *out, uint64_t id, const uint8_t *packed, size_t len) {
    uint8_t prefix[16];
    size_t prefix_len = 0;
    if (id != 0) {
        prefix[0] = 0x08; /* field 1, varint */
        prefix_len = 1 + put_varint(prefix + 1, id);
    }
    size_t length = prefix_len + len;
    uint8_t header[FRAME_HEADER] = {0, (uint8_t)(length >> 24), (uint8_t)(length >> 16), (uint8_t)(length >> 8),
                                    (uint8_t)length};
    if (buf_append(out, header, sizeof header) != 0) return -1;
    if (buf_append(out, prefix, prefix_len) != 0) return -1;
    return buf_append(out, packed, len);
}

uint8_t *envelope_pack(const Heddle__V1__Envelope *envelope, size_t *len) {
    *len = heddle__v1__envelope__get_packed_size(envelope);
    uint8_t *packed = malloc(*len ? *len : 1);
    if (!packed) abort();
    heddle__v1__envelope__pack(envelope, packed);
    return packed;
}

int frame_encode(buf_t *out, uint64_t id, const Heddle__V1__Envelope *envelope) {
    Heddle__V1__Envelope copy = *envelope;
    copy.id = id;
    size_t length = heddle__v1__envelope__get_packed_size(&copy);
    uint8_t header[FRAME_HEADER] = {0, (uint8_t)(length >> 24), (uint8_t)(length >> 16), (uint8_t)(length >> 8),
                                    (uint8_t)length};
    if (buf_append(out, header, sizeof header) != 0) return -1;
    /* Packed in place, at the end of the buffer: no copy of a chunk's bytes in between. */
    if (buf_reserve(out, length) != 0) return -1;
    heddle__v1__envelope__pack(&copy, out->data + out->start + out->len);
    out->len += length;
    return 0;
}
