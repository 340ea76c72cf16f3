/* Circuit breaker: the state machine with a fake clock (the caller's now), the doubling of the
 * cooldown and its decay, the single half-open trial, and the max_ejected rule. */
#include "health/breaker.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static const tt_breaker_conf_t conf = {.failures = 3, .cooldown = 5000, .max_cooldown = 60000};

static void fail_n(tt_breaker_t *b, int n, tt_msec_t now)
{
    for (int i = 0; i < n; i++)
        tt_breaker_on_failure(b, &conf, now, 1);
}

static void test_opens_after_consecutive_failures(void **state)
{
    tt_breaker_t b;
    tt_breaker_init(&b);
    assert_int_equal(tt_breaker_on_failure(&b, &conf, 100, 1), 0);
    assert_int_equal(tt_breaker_on_failure(&b, &conf, 100, 1), 0);
    assert_true(tt_breaker_allows(&b, 100));
    assert_int_equal(tt_breaker_on_failure(&b, &conf, 100, 1), 1);
    assert_int_equal(tt_breaker_state(&b, 100), TT_BREAKER_OPEN);
    assert_false(tt_breaker_allows(&b, 100));
    assert_int_equal(tt_breaker_open_until(&b), 5100);
    /* Failures of requests sent before it opened change nothing. */
    assert_int_equal(tt_breaker_on_failure(&b, &conf, 200, 1), 0);
    assert_int_equal(tt_breaker_open_until(&b), 5100);
}

static void test_success_resets_the_count(void **state)
{
    tt_breaker_t b;
    tt_breaker_init(&b);
    fail_n(&b, 2, 0);
    tt_breaker_on_success(&b, &conf, 0);
    fail_n(&b, 2, 0);
    assert_int_equal(tt_breaker_state(&b, 0), TT_BREAKER_CLOSED);
    fail_n(&b, 1, 0);
    assert_int_equal(tt_breaker_state(&b, 0), TT_BREAKER_OPEN);
}

static void test_half_open_allows_one_trial(void **state)
{
    tt_breaker_t b;
    tt_breaker_init(&b);
    fail_n(&b, 3, 0);
    assert_false(tt_breaker_allows(&b, 4999));
    assert_int_equal(tt_breaker_state(&b, 5000), TT_BREAKER_HALF_OPEN);
    assert_true(tt_breaker_allows(&b, 5000));
    tt_breaker_on_attempt(&b, 5000);
    assert_false(tt_breaker_allows(&b, 5001));
    /* The trial's client left before anything was sent: another request may try. */
    tt_breaker_on_abandon(&b);
    assert_true(tt_breaker_allows(&b, 5002));
    tt_breaker_on_attempt(&b, 5002);
    assert_int_equal(tt_breaker_on_success(&b, &conf, 5010), 1);
    assert_int_equal(tt_breaker_state(&b, 5010), TT_BREAKER_CLOSED);
    assert_true(tt_breaker_allows(&b, 5010));
}

static void test_cooldown_doubles_up_to_max(void **state)
{
    tt_breaker_t b;
    tt_breaker_init(&b);
    fail_n(&b, 3, 0);
    tt_msec_t now = 0, expect[] = {5000, 10000, 20000, 40000, 60000, 60000};
    assert_int_equal(tt_breaker_open_until(&b) - now, expect[0]);
    for (size_t i = 1; i < sizeof(expect) / sizeof(expect[0]); i++) {
        now = tt_breaker_open_until(&b);
        assert_int_equal(tt_breaker_state(&b, now), TT_BREAKER_HALF_OPEN);
        tt_breaker_on_attempt(&b, now);
        /* A failed trial opens it again at once, max_ejected or not. */
        assert_int_equal(tt_breaker_on_failure(&b, &conf, now, 0), 1);
        assert_int_equal(tt_breaker_open_until(&b) - now, expect[i]);
    }
}

static void test_level_decays_while_closed(void **state)
{
    tt_breaker_t b;
    tt_breaker_init(&b);
    fail_n(&b, 3, 0); /* 5 s */
    tt_breaker_on_attempt(&b, 5000);
    tt_breaker_on_failure(&b, &conf, 5000, 1); /* 10 s */
    tt_breaker_on_attempt(&b, 15000);
    tt_breaker_on_success(&b, &conf, 15000);
    /* Ejected again soon: the doubling goes on. */
    assert_int_equal(tt_breaker_next_cooldown(&b, &conf, 16000), 20000);
    /* One max_cooldown closed forgives one level, two forgive both. */
    assert_int_equal(tt_breaker_next_cooldown(&b, &conf, 15000 + 60000), 10000);
    assert_int_equal(tt_breaker_next_cooldown(&b, &conf, 15000 + 120000), 5000);
    fail_n(&b, 3, 15000 + 120000);
    assert_int_equal(tt_breaker_open_until(&b), 15000 + 120000 + 5000);
}

static void test_max_ejected_holds_it_closed(void **state)
{
    tt_breaker_t b;
    tt_breaker_init(&b);
    for (int i = 0; i < 10; i++)
        assert_int_equal(tt_breaker_on_failure(&b, &conf, 0, 0), 0);
    assert_int_equal(tt_breaker_state(&b, 0), TT_BREAKER_CLOSED);
    /* The next failure once an ejection is allowed opens it: the count was kept. */
    assert_int_equal(tt_breaker_on_failure(&b, &conf, 0, 1), 1);
}

static void test_zero_failures_never_opens(void **state)
{
    tt_breaker_conf_t off = conf;
    off.failures = 0;
    tt_breaker_t b;
    tt_breaker_init(&b);
    for (int i = 0; i < 100; i++)
        assert_int_equal(tt_breaker_on_failure(&b, &off, 0, 1), 0);
    assert_true(tt_breaker_allows(&b, 0));
}

static void test_may_eject(void **state)
{
    assert_true(tt_breaker_may_eject(1, 0, 50)); /* one endpoint can still fail fast */
    assert_false(tt_breaker_may_eject(1, 1, 50));
    assert_true(tt_breaker_may_eject(3, 0, 50));
    assert_false(tt_breaker_may_eject(3, 1, 50)); /* 50% of 3 is 1 */
    assert_true(tt_breaker_may_eject(4, 1, 50));
    assert_false(tt_breaker_may_eject(4, 2, 50));
    assert_true(tt_breaker_may_eject(4, 3, 100));
    assert_false(tt_breaker_may_eject(4, 4, 100));
    assert_false(tt_breaker_may_eject(4, 0, 0));
    assert_false(tt_breaker_may_eject(0, 0, 50));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_consecutive_failures),
        cmocka_unit_test(test_success_resets_the_count),
        cmocka_unit_test(test_half_open_allows_one_trial),
        cmocka_unit_test(test_cooldown_doubles_up_to_max),
        cmocka_unit_test(test_level_decays_while_closed),
        cmocka_unit_test(test_max_ejected_holds_it_closed),
        cmocka_unit_test(test_zero_failures_never_opens),
        cmocka_unit_test(test_may_eject),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
