/* Endpoint sets and balancing: the diff of an update (added, removed into draining, kept,
 * re-added), reaping, and each balancing policy with a seeded generator: spread over three
 * endpoints, the warm-connection tie break, load awareness, exclusions and unusable endpoints. */
#include "upstream/balancer.h"
#include "upstream/endpoint.h"

#include "core/invariant.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "leakcheck.h"

static tt_addr_t addr(const char *s)
{
    tt_addr_t a;
    assert_int_equal(tt_addr_parse(s, &a), 0);
    return a;
}

typedef struct {
    int added, removed, readded, freed;
    char log[512];
} changes_t;

static void change_cb(tt_endpoint_t *ep, tt_endpoint_change_t c, void *arg)
{
    changes_t *ch = arg;
    static const char *const word[] = {"+", "-", "*"};
    size_t len = strlen(ch->log);
    snprintf(ch->log + len, sizeof(ch->log) - len, "%s%s ", word[c], ep->name);
    if (c == TT_ENDPOINT_ADDED) {
        assert_null(ep->check);
        ch->added++;
    } else if (c == TT_ENDPOINT_REMOVED) {
        ch->removed++;
    } else {
        ch->readded++;
    }
}

static void free_cb(tt_endpoint_t *ep, void *arg)
{
    ((changes_t *)arg)->freed++;
}

static void test_update_diff(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_endpoint_set_t set;
    tt_endpoint_set_init(&set);
    changes_t ch = {0};
    tt_addr_t a1[] = {addr("127.0.0.3:80"), addr("127.0.0.2:80"), addr("127.0.0.3:80"),
                      addr("[::1]:80")};
    tt_endpoint_diff_t d = tt_endpoint_set_update(&set, a1, 4, change_cb, &ch);
    assert_int_equal(d.added, 3);
    assert_int_equal(d.removed + d.kept, 0);
    assert_int_equal(set.n, 3);
    assert_int_equal(set.nactive, 3);
    /* Sorted by family, then address: a stable order for round robin. */
    assert_string_equal(tt_endpoint_set_at(&set, 0)->name, "127.0.0.2:80");
    assert_string_equal(tt_endpoint_set_at(&set, 1)->name, "127.0.0.3:80");
    assert_string_equal(tt_endpoint_set_at(&set, 2)->name, "[::1]:80");
    tt_endpoint_t *kept = tt_endpoint_set_at(&set, 1);

    /* .2 leaves, .4 arrives, .3 and ::1 stay. */
    ch = (changes_t){0};
    tt_addr_t a2[] = {addr("[::1]:80"), addr("127.0.0.4:80"), addr("127.0.0.3:80")};
    d = tt_endpoint_set_update(&set, a2, 3, change_cb, &ch);
    assert_int_equal(d.added, 1);
    assert_int_equal(d.removed, 1);
    assert_int_equal(d.kept, 2);
    assert_string_equal(ch.log, "-127.0.0.2:80 +127.0.0.4:80 ");
    assert_int_equal(set.n, 4); /* .2 drains until reaped */
    assert_int_equal(set.nactive, 3);
    assert_ptr_equal(tt_endpoint_set_find(&set, &a2[2]), kept);
    tt_addr_t gone = addr("127.0.0.2:80");
    tt_endpoint_t *draining = tt_endpoint_set_find(&set, &gone);
    assert_non_null(draining);
    assert_int_equal(draining->state, TT_ENDPOINT_DRAINING);

    /* The same list again changes nothing. */
    ch = (changes_t){0};
    d = tt_endpoint_set_update(&set, a2, 3, change_cb, &ch);
    assert_int_equal(d.added + d.removed, 0);
    assert_int_equal(d.kept, 3);
    assert_string_equal(ch.log, "");

    /* A draining endpoint listed again is active again: the same object, its state kept. */
    draining->nconns = 2;
    tt_addr_t a3[] = {addr("127.0.0.2:80"), addr("127.0.0.3:80")};
    ch = (changes_t){0};
    d = tt_endpoint_set_update(&set, a3, 2, change_cb, &ch);
    assert_int_equal(d.added, 1);
    assert_int_equal(d.removed, 2);
    assert_int_equal(ch.readded, 1);
    assert_ptr_equal(tt_endpoint_set_find(&set, &a3[0]), draining);
    assert_int_equal(draining->state, TT_ENDPOINT_ACTIVE);
    assert_int_equal(draining->nconns, 2);

    /* Reaping frees draining endpoints that hold nothing, and only those. */
    tt_addr_t v6 = addr("[::1]:80");
    tt_endpoint_set_find(&set, &v6)->outstanding = 1;
    assert_int_equal(tt_endpoint_set_reap(&set, free_cb, &ch), 1); /* .4 */
    assert_int_equal(ch.freed, 1);
    assert_int_equal(set.n, 3);
    tt_endpoint_set_find(&set, &v6)->outstanding = 0;
    assert_int_equal(tt_endpoint_set_reap(&set, free_cb, &ch), 1);
    assert_int_equal(set.n, 2);

    /* An empty answer drains everything. */
    d = tt_endpoint_set_update(&set, NULL, 0, NULL, NULL);
    assert_int_equal(d.removed, 2);
    assert_int_equal(set.nactive, 0);
    tt_endpoint_set_destroy(&set, free_cb, &ch);
    assert_int_equal(ch.freed, 4);
    tt_leakcheck_end(lc);
}

static void test_update_caps_the_set(void **state)
{
    tt_endpoint_set_t set;
    tt_endpoint_set_init(&set);
    tt_addr_t many[TT_ENDPOINTS_MAX + 10];
    for (size_t i = 0; i < TT_ARRAY_SIZE(many); i++) {
        char s[32];
        snprintf(s, sizeof(s), "10.0.%zu.%zu:80", i / 200, i % 200);
        many[i] = addr(s);
    }
    tt_endpoint_diff_t d = tt_endpoint_set_update(&set, many, TT_ARRAY_SIZE(many), NULL, NULL);
    assert_int_equal(d.added, TT_ENDPOINTS_MAX);
    assert_int_equal(set.n, TT_ENDPOINTS_MAX);
    tt_endpoint_set_destroy(&set, NULL, NULL);
}

/* Three endpoints on 127.0.0.2..4. */
static void three(tt_endpoint_set_t *set)
{
    tt_endpoint_set_init(set);
    tt_addr_t a[] = {addr("127.0.0.2:80"), addr("127.0.0.3:80"), addr("127.0.0.4:80")};
    tt_endpoint_set_update(set, a, 3, NULL, NULL);
}

static void assert_thirds(const unsigned *count, unsigned total)
{
    for (int i = 0; i < 3; i++) {
        double share = (double)count[i] / total;
        if (share < 1.0 / 3 * 0.85 || share > 1.0 / 3 * 1.15)
            fail_msg("endpoint %d got %.3f of the requests", i, share);
    }
}

/* Requests that finish at once: every policy spreads them evenly. */
static void spread(tt_balance_t policy)
{
    tt_endpoint_set_t set;
    three(&set);
    tt_balancer_t b;
    tt_balancer_init(&b, policy, 42);
    unsigned count[3] = {0};
    for (unsigned i = 0; i < 30000; i++) {
        tt_endpoint_t *ep = tt_balancer_pick(&b, &set, NULL, 0, 0);
        assert_non_null(ep);
        count[ep->name[8] - '2']++;
    }
    assert_thirds(count, 30000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tt_endpoint_set_at(&set, (size_t)i)->picked, count[i]);
    tt_endpoint_set_destroy(&set, NULL, NULL);
}

static void test_spread_least_request(void **state)
{
    spread(TT_BALANCE_LEAST_REQUEST);
}

static void test_spread_round_robin(void **state)
{
    spread(TT_BALANCE_ROUND_ROBIN);
}

static void test_spread_random(void **state)
{
    spread(TT_BALANCE_RANDOM);
}

/* Requests that stay outstanding a while (a simulated clock of ticks): least_request keeps the
 * outstanding counts within one of each other over three endpoints with equal service times, and
 * sends less to an endpoint that is slower. */
static void test_least_request_follows_load(void **state)
{
    tt_endpoint_set_t set;
    three(&set);
    tt_balancer_t b;
    tt_balancer_init(&b, TT_BALANCE_LEAST_REQUEST, 7);
    enum { SLOTS = 64 };
    /* In-flight requests: endpoint and the tick they finish. Endpoint 0 is four times slower. */
    struct {
        tt_endpoint_t *ep;
        unsigned done;
    } inflight[SLOTS] = {{0}};
    unsigned count[3] = {0};
    for (unsigned tick = 0; tick < 20000; tick++) {
        for (int s = 0; s < SLOTS; s++) {
            if (inflight[s].ep != NULL && inflight[s].done == tick) {
                inflight[s].ep->outstanding--;
                inflight[s].ep = NULL;
            }
            if (inflight[s].ep == NULL && (tick + (unsigned)s) % 4 == 0) {
                tt_endpoint_t *ep = tt_balancer_pick(&b, &set, NULL, 0, 0);
                int i = ep->name[8] - '2';
                ep->outstanding++;
                count[i]++;
                inflight[s].ep = ep;
                inflight[s].done = tick + (i == 0 ? 16 : 4);
            }
        }
    }
    /* The slow endpoint holds each request four times as long: it gets clearly fewer. */
    assert_true(count[0] * 2 < count[1]);
    assert_true(count[0] * 2 < count[2]);
    double ratio = (double)count[1] / count[2];
    assert_true(ratio > 0.85 && ratio < 1.15);
    tt_endpoint_set_destroy(&set, NULL, NULL);
}

/* On a tie of outstanding requests, the endpoint with a warm idle connection wins. */
static void test_least_request_prefers_warm(void **state)
{
    tt_endpoint_set_t set;
    three(&set);
    tt_balancer_t b;
    tt_balancer_init(&b, TT_BALANCE_LEAST_REQUEST, 1);
    tt_endpoint_set_at(&set, 1)->nidle = 1;
    unsigned warm = 0;
    for (int i = 0; i < 60; i++)
        warm += tt_balancer_pick(&b, &set, NULL, 0, 0) == tt_endpoint_set_at(&set, 1);
    /* Picked whenever it is one of the two drawn (2 of 3 pairs) while it is not far ahead. */
    assert_true(warm > 30 && warm < 50);
    /* Over many picks the preference is bounded: the shares stay level. */
    for (int i = 0; i < 2940; i++)
        tt_balancer_pick(&b, &set, NULL, 0, 0);
    for (size_t i = 0; i < 3; i++) {
        uint64_t p = tt_endpoint_set_at(&set, i)->picked;
        assert_true(p > 1000 - 40 && p < 1000 + 40);
    }
    /* Fewer outstanding still beats a warm connection. */
    tt_endpoint_set_at(&set, 1)->outstanding = 1;
    for (int i = 0; i < 100; i++)
        assert_ptr_not_equal(tt_balancer_pick(&b, &set, NULL, 0, 0), tt_endpoint_set_at(&set, 1));
    tt_endpoint_set_destroy(&set, NULL, NULL);
}

static void test_round_robin_order_and_skips(void **state)
{
    tt_endpoint_set_t set;
    three(&set);
    tt_balancer_t b;
    tt_balancer_init(&b, TT_BALANCE_ROUND_ROBIN, 3);
    tt_endpoint_t *first = tt_balancer_pick(&b, &set, NULL, 0, 0);
    size_t at = 0;
    while (tt_endpoint_set_at(&set, at) != first)
        at++;
    for (size_t i = 1; i < 7; i++)
        assert_ptr_equal(tt_balancer_pick(&b, &set, NULL, 0, 0),
                         tt_endpoint_set_at(&set, (at + i) % 3));
    tt_endpoint_set_at(&set, 1)->down = 1;
    for (int i = 0; i < 10; i++)
        assert_ptr_not_equal(tt_balancer_pick(&b, &set, NULL, 0, 0), tt_endpoint_set_at(&set, 1));
    tt_endpoint_set_destroy(&set, NULL, NULL);
}

static void test_unusable_and_excluded(void **state)
{
    static const tt_balance_t policies[] = {TT_BALANCE_LEAST_REQUEST, TT_BALANCE_ROUND_ROBIN,
                                            TT_BALANCE_RANDOM};
    const tt_breaker_conf_t bc = {.failures = 1, .cooldown = 1000, .max_cooldown = 1000};
    for (size_t p = 0; p < 3; p++) {
        tt_endpoint_set_t set;
        three(&set);
        tt_balancer_t b;
        tt_balancer_init(&b, policies[p], 5);
        tt_endpoint_t *e0 = tt_endpoint_set_at(&set, 0), *e1 = tt_endpoint_set_at(&set, 1),
                      *e2 = tt_endpoint_set_at(&set, 2);
        /* e0 drains, e1's breaker opens at t=0: only e2 is left; excluding it leaves none. */
        tt_addr_t keep[] = {e1->addr, e2->addr};
        tt_endpoint_set_update(&set, keep, 2, NULL, NULL);
        tt_breaker_on_failure(&e1->breaker, &bc, 0, 1);
        for (int i = 0; i < 20; i++)
            assert_ptr_equal(tt_balancer_pick(&b, &set, NULL, 0, 10), e2);
        assert_null(tt_balancer_pick(&b, &set, &e2, 1, 10));
        /* After the cooldown e1 is half-open: it takes the trial, then nothing until the
         * outcome. */
        assert_ptr_equal(tt_balancer_pick(&b, &set, &e2, 1, 1000), e1);
        tt_breaker_on_attempt(&e1->breaker, 1000);
        assert_null(tt_balancer_pick(&b, &set, &e2, 1, 1000));
        tt_breaker_on_success(&e1->breaker, &bc, 1001);
        assert_ptr_equal(tt_balancer_pick(&b, &set, &e2, 1, 1001), e1);
        (void)e0;
        tt_endpoint_set_destroy(&set, NULL, NULL);
    }
}

static void test_seeded_is_repeatable(void **state)
{
    tt_endpoint_set_t set;
    three(&set);
    tt_balancer_t a, b;
    tt_balancer_init(&a, TT_BALANCE_RANDOM, 99);
    tt_balancer_init(&b, TT_BALANCE_RANDOM, 99);
    for (int i = 0; i < 100; i++)
        assert_ptr_equal(tt_balancer_pick(&a, &set, NULL, 0, 0),
                         tt_balancer_pick(&b, &set, NULL, 0, 0));
    tt_endpoint_set_destroy(&set, NULL, NULL);
}

static void test_parse(void **state)
{
    tt_balance_t b;
    assert_int_equal(tt_balance_parse("round_robin", &b), 0);
    assert_int_equal(b, TT_BALANCE_ROUND_ROBIN);
    assert_string_equal(tt_balance_name(TT_BALANCE_LEAST_REQUEST), "least_request");
    assert_int_equal(tt_balance_parse("leastconn", &b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_update_diff),
        cmocka_unit_test(test_update_caps_the_set),
        cmocka_unit_test(test_spread_least_request),
        cmocka_unit_test(test_spread_round_robin),
        cmocka_unit_test(test_spread_random),
        cmocka_unit_test(test_least_request_follows_load),
        cmocka_unit_test(test_least_request_prefers_warm),
        cmocka_unit_test(test_round_robin_order_and_skips),
        cmocka_unit_test(test_unusable_and_excluded),
        cmocka_unit_test(test_seeded_is_repeatable),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
