/* Log-linear histogram: 16 linear sub-buckets per power of two, so any recorded value is known to
 * within 1/16 of itself (the reported bucket midpoint is within 3.2%). Values are unsigned integers
 * in the caller's unit (microseconds for durations); values above 2^36 are clamped. Recording is a
 * few instructions with no allocation. A histogram belongs to one worker; readers merge copies. */
#ifndef TT_CORE_HISTOGRAM_H
#define TT_CORE_HISTOGRAM_H

#include <stdint.h>

#define TT_HIST_SUB_BITS 4
#define TT_HIST_MAX_EXP  36
#define TT_HIST_BUCKETS  ((1 << TT_HIST_SUB_BITS) * (TT_HIST_MAX_EXP - TT_HIST_SUB_BITS + 2))

typedef struct {
    uint64_t count;
    uint64_t sum;
    uint64_t max;
    uint64_t buckets[TT_HIST_BUCKETS];
} tt_hist_t;

void tt_hist_record(tt_hist_t *h, uint64_t value);
/* Adds src's observations to dst. */
void tt_hist_merge(tt_hist_t *dst, const tt_hist_t *src);
/* The value at quantile q (0..1): the midpoint of the bucket holding it, at most the maximum
 * recorded. 0 for an empty histogram. */
uint64_t tt_hist_quantile(const tt_hist_t *h, double q);
/* Bucket index of a value, and the inclusive range a bucket covers. */
unsigned tt_hist_bucket_of(uint64_t value);
void tt_hist_bucket_range(unsigned bucket, uint64_t *low, uint64_t *high);
/* Number of observations <= value, counting whole buckets whose upper bound is <= value (what a
 * Prometheus "le" bucket needs). */
uint64_t tt_hist_count_le(const tt_hist_t *h, uint64_t value);

#endif
