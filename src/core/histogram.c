#include "core/histogram.h"

#define SUB ((uint64_t)1 << TT_HIST_SUB_BITS)

unsigned tt_hist_bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    if (v >> TT_HIST_MAX_EXP)
        v = ((uint64_t)1 << (TT_HIST_MAX_EXP + 1)) - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* v in [2^e, 2^(e+1)) */
    unsigned sub = (unsigned)((v >> (e - TT_HIST_SUB_BITS)) & (SUB - 1));
    return (unsigned)SUB + (e - TT_HIST_SUB_BITS) * (unsigned)SUB + sub;
}

void tt_hist_bucket_range(unsigned b, uint64_t *low, uint64_t *high)
{
    if (b < SUB) {
        *low = *high = b;
        return;
    }
    unsigned e = (b - (unsigned)SUB) / (unsigned)SUB + TT_HIST_SUB_BITS;
    uint64_t sub = (b - SUB) % SUB;
    uint64_t width = (uint64_t)1 << (e - TT_HIST_SUB_BITS);
    *low = ((uint64_t)1 << e) + sub * width;
    *high = *low + width - 1;
}

void tt_hist_record(tt_hist_t *h, uint64_t v)
{
    h->buckets[tt_hist_bucket_of(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

void tt_hist_merge(tt_hist_t *dst, const tt_hist_t *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < TT_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t tt_hist_quantile(const tt_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < TT_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t low, high;
            tt_hist_bucket_range(i, &low, &high);
            uint64_t mid = low + (high - low) / 2;
            return mid < h->max ? mid : h->max;
        }
    }
    return h->max;
}

uint64_t tt_hist_count_le(const tt_hist_t *h, uint64_t value)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < TT_HIST_BUCKETS; i++) {
        uint64_t low, high;
        tt_hist_bucket_range(i, &low, &high);
        if (high > value)
            break;
        n += h->buckets[i];
    }
    return n;
}
