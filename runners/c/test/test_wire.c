/* Unit tests of the frame layer (built with ASan and UBSan by `make check`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"

static int failures;
#define CHECK(condition)                                                        \
    do {                                                                        \
        if (!(condition)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

static int decode(const uint8_t *bytes, size_t len, size_t max, message_t **message, char *err) {
    size_t consumed = 0;
    return frame_decode(bytes, len, max, &consumed, message, err, 256);
}

static void a_welcome_round_trips_with_its_id(void) {
    Heddle__V1__Welcome welcome = HEDDLE__V1__WELCOME__INIT;
    welcome.heartbeat_interval_ms = 5000;
    welcome.peer_name = "runner-1";
    Heddle__V1__Envelope envelope = HEDDLE__V1__ENVELOPE__INIT;
    envelope.body_case = HEDDLE__V1__ENVELOPE__BODY_WELCOME;
    envelope.welcome = &welcome;
    size_t len;
    uint8_t *packed = envelope_pack(&envelope, &len);
    buf_t out = {0};
    CHECK(frame_encode_packed(&out, 300, packed, len) == 0);
    CHECK(frame_encode(&out, 7, &envelope) == 0);
    free(packed);
    message_t *message = NULL;
    char err[256];
    size_t consumed = 0;
    /* Byte by byte: nothing until the whole frame is there. */
    for (size_t n = 0; n < out.len; n++) {
        int result = frame_decode(buf_bytes(&out), n, FRAME_DEFAULT_MAX, &consumed, &message, err, sizeof err);
        if (result == FRAME_OK) {
            CHECK(message->envelope->id == 300);
            CHECK(message->envelope->body_case == HEDDLE__V1__ENVELOPE__BODY_WELCOME);
            CHECK(strcmp(message->envelope->welcome->peer_name, "runner-1") == 0);
            message_free(message);
            buf_consume(&out, consumed);
            n = 0;
            break;
        }
        CHECK(result == FRAME_NEED_MORE);
    }
    CHECK(decode(buf_bytes(&out), out.len, FRAME_DEFAULT_MAX, &message, err) == FRAME_OK);
    CHECK(message && message->envelope->id == 7 && message->envelope->welcome->heartbeat_interval_ms == 5000);
    message_free(message);
    buf_free(&out);
}

static void broken_frames_are_refused_with_a_reason(void) {
    message_t *message = NULL;
    char err[256];
    const uint8_t flags[] = {1, 0, 0, 0, 0};
    CHECK(decode(flags, sizeof flags, FRAME_DEFAULT_MAX, &message, err) == FRAME_ERROR);
    CHECK(strstr(err, "flags must be 0") != NULL);
    const uint8_t huge[] = {0, 0xFF, 0xFF, 0xFF, 0xFF};
    CHECK(decode(huge, sizeof huge, FRAME_DEFAULT_MAX, &message, err) == FRAME_ERROR);
    CHECK(strstr(err, "over the maximum of 4194304 bytes") != NULL);
    const uint8_t garbage[] = {0, 0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF};
    CHECK(decode(garbage, sizeof garbage, FRAME_DEFAULT_MAX, &message, err) == FRAME_ERROR);
    const uint8_t empty[] = {0, 0, 0, 0, 0};
    CHECK(decode(empty, sizeof empty, FRAME_DEFAULT_MAX, &message, err) == FRAME_ERROR);
    CHECK(strstr(err, "no message") != NULL);
    CHECK(message == NULL);
}

/* 4 MB on the wire that would take hundreds of MB decoded: two million empty RunSummary
 * entries of a RunList. The capped allocator refuses it; nothing is left allocated. */
static void an_allocation_bomb_fails_at_the_cap(void) {
    size_t entries = 2000000;
    size_t inner = entries * 2;
    buf_t frame = {0};
    uint8_t header[5] = {0};
    buf_append(&frame, header, 5);
    uint8_t key[] = {0xFA, 0x02}; /* field 47, length-delimited */
    buf_append(&frame, key, 2);
    uint8_t length[5];
    size_t n = 0;
    size_t v = inner;
    for (; v >= 0x80; v >>= 7) length[n++] = (uint8_t)(v | 0x80);
    length[n++] = (uint8_t)v;
    buf_append(&frame, length, n);
    uint8_t entry[] = {0x0A, 0x00};
    for (size_t i = 0; i < entries; i++) buf_append(&frame, entry, 2);
    size_t payload = frame.len - 5;
    uint8_t *bytes = buf_bytes(&frame);
    bytes[1] = (uint8_t)(payload >> 24);
    bytes[2] = (uint8_t)(payload >> 16);
    bytes[3] = (uint8_t)(payload >> 8);
    bytes[4] = (uint8_t)payload;
    message_t *message = NULL;
    char err[256];
    CHECK(decode(bytes, frame.len, FRAME_DEFAULT_MAX, &message, err) == FRAME_ERROR);
    CHECK(strstr(err, "needs more than") != NULL);
    buf_free(&frame);

    /* The allocator itself: the count goes up and down, and stops at the cap. */
    ProtobufCAllocator allocator;
    capped_allocator_t state;
    capped_allocator_init(&allocator, &state, 1000);
    void *a = allocator.alloc(allocator.allocator_data, 600);
    CHECK(a != NULL && state.used == 600);
    CHECK(allocator.alloc(allocator.allocator_data, 600) == NULL);
    CHECK(allocator.alloc(allocator.allocator_data, (size_t)-1) == NULL);
    allocator.free(allocator.allocator_data, a);
    CHECK(state.used == 0);
}

int main(void) {
    a_welcome_round_trips_with_its_id();
    broken_frames_are_refused_with_a_reason();
    an_allocation_bomb_fails_at_the_cap();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_wire: all checks passed\n");
    return 0;
}
