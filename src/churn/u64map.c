#include "churn/u64map.h"

#include "core/invariant.h"

#include <stdlib.h>
#include <string.h>

#define INITIAL_CAP 1024

static size_t slot_of(const tt_u64map_t *m, uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & m->mask;
}

void tt_u64map_init(tt_u64map_t *m)
{
    m->keys = tt_calloc(INITIAL_CAP, sizeof(*m->keys));
    m->vals = tt_calloc(INITIAL_CAP, sizeof(*m->vals));
    m->mask = INITIAL_CAP - 1;
    m->count = 0;
}

void tt_u64map_free(tt_u64map_t *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

void tt_u64map_clear(tt_u64map_t *m)
{
    memset(m->keys, 0, (m->mask + 1) * sizeof(*m->keys));
    m->count = 0;
}

int tt_u64map_get(const tt_u64map_t *m, uint64_t key, uint32_t *val)
{
    TT_ASSERT(key != 0);
    for (size_t i = slot_of(m, key);; i = (i + 1) & m->mask) {
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return 1;
        }
        if (m->keys[i] == 0)
            return 0;
    }
}

static void grow(tt_u64map_t *m)
{
    tt_u64map_t bigger = {
        .keys = tt_calloc((m->mask + 1) * 2, sizeof(uint64_t)),
        .vals = tt_calloc((m->mask + 1) * 2, sizeof(uint32_t)),
        .mask = (m->mask + 1) * 2 - 1,
    };
    for (size_t i = 0; i <= m->mask; i++)
        if (m->keys[i])
            tt_u64map_put(&bigger, m->keys[i], m->vals[i]);
    free(m->keys);
    free(m->vals);
    *m = bigger;
}

void tt_u64map_put(tt_u64map_t *m, uint64_t key, uint32_t val)
{
    TT_ASSERT(key != 0);
    if ((m->count + 1) * 4 > (m->mask + 1) * 3) /* load factor 3/4 */
        grow(m);
    size_t i = slot_of(m, key);
    while (m->keys[i] != 0 && m->keys[i] != key)
        i = (i + 1) & m->mask;
    if (m->keys[i] == 0)
        m->count++;
    m->keys[i] = key;
    m->vals[i] = val;
}

int tt_u64map_del(tt_u64map_t *m, uint64_t key, uint32_t *val)
{
    size_t i = slot_of(m, key);
    while (m->keys[i] != key) {
        if (m->keys[i] == 0)
            return 0;
        i = (i + 1) & m->mask;
    }
    if (val)
        *val = m->vals[i];
    /* Backward shift: move later members of the probe run into the hole when their home slot
     * does not lie cyclically in (hole, their slot]. */
    size_t hole = i;
    for (size_t j = (i + 1) & m->mask; m->keys[j] != 0; j = (j + 1) & m->mask) {
        size_t home = slot_of(m, m->keys[j]);
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->keys[hole] = 0;
    m->count--;
    return 1;
}
