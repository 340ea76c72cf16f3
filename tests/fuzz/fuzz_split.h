/* Shared by the libFuzzer harnesses: the split of an input into reads, as a socket would deliver
 * it. The first two bytes of every input seed the split, so that libFuzzer explores splits along
 * with contents and a crash input replays the same reads. */
#ifndef TT_FUZZ_SPLIT_H
#define TT_FUZZ_SPLIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    uint32_t state;
} fuzz_split_t;

/* Takes the seed from the first two bytes; returns 0 when the input is too short. */
static inline int fuzz_split_init(fuzz_split_t *s, const uint8_t **data, size_t *size)
{
    if (*size < 2)
        return 0;
    s->state = ((uint32_t)(*data)[0] << 8 | (*data)[1]) * 2654435761u + 1;
    *data += 2;
    *size -= 2;
    return 1;
}

/* The length of the next read, 1..left: mostly short reads, sometimes everything. */
static inline size_t fuzz_split_next(fuzz_split_t *s, size_t left)
{
    s->state ^= s->state << 13;
    s->state ^= s->state >> 17;
    s->state ^= s->state << 5;
    uint32_t r = s->state;
    size_t n = (r & 3) == 0 ? left : 1 + (r >> 2) % 16;
    return n > left ? left : n;
}

/* An invariant of tether's broke: a crash libFuzzer records with its input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#endif
