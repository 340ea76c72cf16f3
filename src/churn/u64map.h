/* A map from nonzero 64-bit keys to 32-bit values: open addressing with linear probing and
 * backward-shift deletion (no tombstones, so a long run of opens and closes does not degrade it).
 * It holds the connections `tether churn` is following (kernel socket address or socket cookie ->
 * record index); it grows by doubling and never shrinks. Key 0 is reserved for "empty". */
#ifndef TT_CHURN_U64MAP_H
#define TT_CHURN_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *keys;
    uint32_t *vals;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t count;
} tt_u64map_t;

void tt_u64map_init(tt_u64map_t *m);
void tt_u64map_free(tt_u64map_t *m);
void tt_u64map_clear(tt_u64map_t *m);

/* The value stored for key in *val: returns 1, or 0 when the key is absent. */
int tt_u64map_get(const tt_u64map_t *m, uint64_t key, uint32_t *val);

/* Inserts or replaces key -> val. */
void tt_u64map_put(tt_u64map_t *m, uint64_t key, uint32_t val);

/* Removes key; returns 1 if it was present (its value in *val when val is not NULL). */
int tt_u64map_del(tt_u64map_t *m, uint64_t key, uint32_t *val);

#endif
