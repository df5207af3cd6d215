/* libFuzzer target: the frame decoder and the protobuf-c decode behind it, fed any bytes.
 * Every frame found is decoded with the capped allocator and freed; nothing may crash, leak
 * or read out of bounds (ASan, UBSan). The limit is small here so the length check is hit. */
#include <stddef.h>
#include <stdint.h>

#include "runner.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t offset = 0;
    while (offset < size) {
        size_t consumed = 0;
        message_t *message = NULL;
        char err[256];
        int result = frame_decode(data + offset, size - offset, 1u << 16, &consumed, &message, err, sizeof err);
        if (result != FRAME_OK) break;
        /* Touch what a runner reads of the pushes it handles. */
        Heddle__V1__Envelope *envelope = message->envelope;
        if (envelope->body_case == HEDDLE__V1__ENVELOPE__BODY_ASSIGNMENT && envelope->assignment->job) {
            volatile uint64_t epoch = envelope->assignment->job->epoch;
            (void)epoch;
        }
        message_free(message);
        offset += consumed;
    }
    return 0;
}
