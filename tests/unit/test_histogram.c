/* Log-linear histogram: every value falls in a bucket whose range holds it, ranges tile the
 * value space without gaps, quantiles over random data (fixed seed, several distributions) stay
 * within the stated bound of 1/32 (3.2%) of the exact sorted quantile, count_le is what a
 * Prometheus "le" bucket needs, and merging equals recording everything in one histogram. */
#include "core/histogram.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "leakcheck.h"

/* The bound the header states: the midpoint of a bucket 1/16 of its low edge wide. */
#define BOUND (1.0 / 32.0)

static uint64_t rng_state;

static uint64_t rng(void)
{
    /* xorshift64*: small, fixed-seed, good enough for test data. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static double unit(void)
{
    return (double)(rng() >> 11) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_buckets_tile_the_range(void **state)
{
    (void)state;
    uint64_t expect_low = 0, clamp = (uint64_t)1 << TT_HIST_MAX_EXP;
    for (unsigned b = 0; b < TT_HIST_BUCKETS; b++) {
        uint64_t low, high;
        tt_hist_bucket_range(b, &low, &high);
        if (low >= clamp)
            break; /* values from 2^MAX_EXP up are clamped into the last bucket */
        assert_true(low == expect_low);
        assert_true(high >= low);
        /* Width at most 1/16 of the low edge: the source of the error bound. */
        if (low >= 16)
            assert_true((high - low + 1) * 16 <= low);
        assert_int_equal(tt_hist_bucket_of(low), b);
        assert_int_equal(tt_hist_bucket_of(high), b);
        expect_low = high + 1;
    }
    assert_true(expect_low == clamp);
    assert_int_equal(tt_hist_bucket_of(clamp), TT_HIST_BUCKETS - 1);
    assert_int_equal(tt_hist_bucket_of(UINT64_MAX), TT_HIST_BUCKETS - 1);
}

static void test_every_value_lands_in_its_range(void **state)
{
    (void)state;
    rng_state = 0x5eed;
    for (int i = 0; i < 200000; i++) {
        uint64_t v = rng() >> (rng() % 64);
        if (v >> TT_HIST_MAX_EXP)
            continue; /* clamped: see above */
        uint64_t low, high;
        tt_hist_bucket_range(tt_hist_bucket_of(v), &low, &high);
        assert_true(low <= v && v <= high);
    }
}

typedef uint64_t (*gen_fn)(void);

static uint64_t gen_log_uniform(void)
{
    /* 1 us .. 60 s, evenly spread over orders of magnitude: every bucket width in play. */
    return (uint64_t)exp(unit() * log(60e6));
}

static uint64_t gen_exponential(void)
{
    /* Latency-like: mean 2 ms, long tail. */
    return (uint64_t)(-log(1.0 - unit()) * 2000.0) + 1;
}

static uint64_t gen_bimodal(void)
{
    /* Fast cache hits and slow misses. */
    return unit() < 0.9 ? 200 + rng() % 50 : 50000 + rng() % 20000;
}

static uint64_t gen_small(void)
{
    /* Requests per connection: small integers are exact. */
    return 1 + rng() % 40;
}

static void check_quantiles(gen_fn gen, size_t n, uint64_t seed)
{
    rng_state = seed;
    uint64_t *v = malloc(n * sizeof(*v));
    tt_hist_t *h = calloc(1, sizeof(*h));
    uint64_t sum = 0, max = 0;
    for (size_t i = 0; i < n; i++) {
        v[i] = gen();
        tt_hist_record(h, v[i]);
        sum += v[i];
        max = v[i] > max ? v[i] : max;
    }
    qsort(v, n, sizeof(*v), cmp_u64);
    assert_true(h->count == n);
    assert_true(h->sum == sum);
    assert_true(h->max == max);
    static const double qs[] = {0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        /* The same rank definition as tt_hist_quantile: nearest rank, at least 1. */
        uint64_t rank = (uint64_t)(qs[i] * (double)n + 0.5);
        if (rank == 0)
            rank = 1;
        uint64_t exact = v[rank - 1];
        uint64_t est = tt_hist_quantile(h, qs[i]);
        double err = fabs((double)est - (double)exact) / (double)exact;
        if (err > BOUND)
            fail_msg("q=%g: estimate %llu, exact %llu, relative error %.4f > %.4f", qs[i],
                     (unsigned long long)est, (unsigned long long)exact, err, BOUND);
    }
    free(v);
    free(h);
}

static void test_quantiles_log_uniform(void **state)
{
    (void)state;
    check_quantiles(gen_log_uniform, 100000, 42);
}

static void test_quantiles_exponential(void **state)
{
    (void)state;
    check_quantiles(gen_exponential, 100000, 7);
}

static void test_quantiles_bimodal(void **state)
{
    (void)state;
    check_quantiles(gen_bimodal, 50000, 1234);
}

static void test_quantiles_small_integers_exact(void **state)
{
    (void)state;
    rng_state = 99;
    tt_hist_t *h = calloc(1, sizeof(*h));
    for (int i = 0; i < 16; i++)
        tt_hist_record(h, (uint64_t)i);
    /* Below 16 every value has its own bucket. */
    for (int i = 1; i <= 16; i++)
        assert_int_equal(tt_hist_quantile(h, (double)i / 16.0), (uint64_t)(i - 1));
    free(h);
    check_quantiles(gen_small, 20000, 5);
}

static void test_quantile_edges(void **state)
{
    (void)state;
    tt_hist_t *h = calloc(1, sizeof(*h));
    assert_int_equal(tt_hist_quantile(h, 0.5), 0);
    tt_hist_record(h, 1000);
    /* One value: every quantile is that value (the midpoint is clamped to the max). */
    assert_int_equal(tt_hist_quantile(h, 0.0), tt_hist_quantile(h, 1.0));
    assert_true(tt_hist_quantile(h, 1.0) <= 1000);
    assert_true(tt_hist_quantile(h, 1.0) >= 1000 - 1000 / 32);
    /* Out-of-range q is clamped. */
    assert_int_equal(tt_hist_quantile(h, -1), tt_hist_quantile(h, 0));
    assert_int_equal(tt_hist_quantile(h, 2), tt_hist_quantile(h, 1));
    free(h);
}

static void test_count_le(void **state)
{
    (void)state;
    tt_hist_t *h = calloc(1, sizeof(*h));
    for (uint64_t v = 1; v <= 1000; v++)
        tt_hist_record(h, v);
    assert_int_equal(tt_hist_count_le(h, 0), 0);
    assert_int_equal(tt_hist_count_le(h, 1), 1);
    assert_int_equal(tt_hist_count_le(h, 15), 15);
    /* Exact where a bound is a bucket's high edge, conservative (never over) elsewhere, and
     * within one bucket (1/16) of the truth. */
    uint64_t prev = 0;
    for (uint64_t bound = 1; bound <= 2000; bound++) {
        uint64_t n = tt_hist_count_le(h, bound);
        uint64_t truth = bound < 1000 ? bound : 1000;
        assert_true(n <= truth);
        assert_true(n >= prev);
        assert_true((double)(truth - n) <= (double)bound / 16.0 + 1);
        uint64_t low, high;
        tt_hist_bucket_range(tt_hist_bucket_of(bound), &low, &high);
        if (high == bound)
            assert_int_equal(n, truth);
        prev = n;
    }
    assert_int_equal(tt_hist_count_le(h, UINT64_MAX >> 1), 1000);
    free(h);
}

static void test_merge_equals_one_histogram(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    rng_state = 2024;
    tt_hist_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    tt_hist_t *all = calloc(1, sizeof(*all)), *m = calloc(1, sizeof(*m));
    for (int i = 0; i < 10000; i++) {
        uint64_t v = gen_exponential();
        tt_hist_record(i % 3 ? a : b, v);
        tt_hist_record(all, v);
    }
    tt_hist_merge(m, a);
    tt_hist_merge(m, b);
    tt_hist_t empty;
    memset(&empty, 0, sizeof(empty));
    tt_hist_merge(m, &empty);
    assert_memory_equal(m, all, sizeof(*m));
    free(a);
    free(b);
    free(all);
    free(m);
    tt_leakcheck_end(lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_tile_the_range),
        cmocka_unit_test(test_every_value_lands_in_its_range),
        cmocka_unit_test(test_quantiles_log_uniform),
        cmocka_unit_test(test_quantiles_exponential),
        cmocka_unit_test(test_quantiles_bimodal),
        cmocka_unit_test(test_quantiles_small_integers_exact),
        cmocka_unit_test(test_quantile_edges),
        cmocka_unit_test(test_count_le),
        cmocka_unit_test(test_merge_equals_one_histogram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
