/* A small, fast pseudo-random generator (xorshift64*) for decisions that need spread, not
 * secrecy: balancing and jitter. Each owner (a worker, a test) keeps its own state, seeded
 * explicitly, so a test with a fixed seed sees the same sequence every run. */
#ifndef TT_CORE_RAND_H
#define TT_CORE_RAND_H

#include <stdint.h>

typedef struct {
    uint64_t s;
} tt_rand_t;

/* Any seed works, 0 included (it is mixed first). */
static inline void tt_rand_seed(tt_rand_t *r, uint64_t seed)
{
    /* splitmix64 step: spreads nearby seeds (worker ids) over the state space. */
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    r->s = z != 0 ? z : 0x2545f4914f6cdd1dULL;
}

static inline uint64_t tt_rand_next(tt_rand_t *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dULL;
}

/* Uniform in [0, n) for n > 0 (Lemire's multiply-shift; the bias is below 2^-32 for the small
 * n balancing uses). */
static inline uint32_t tt_rand_below(tt_rand_t *r, uint32_t n)
{
    return (uint32_t)(((tt_rand_next(r) >> 32) * (uint64_t)n) >> 32);
}

#endif
