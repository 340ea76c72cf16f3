/* Timer wheel: ordering, cancellation, re-arming from callbacks, far deadlines, and a randomized
 * comparison against a brute-force model with the validator run after every step. */
#include "event/timerwheel.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

typedef struct {
    tt_timer_t t;
    tt_msec_t fired_at; /* 0: not fired */
    int fired;
} probe_t;

static tt_msec_t g_now;

static void probe_cb(tt_timer_t *t)
{
    probe_t *p = (probe_t *)((char *)t - offsetof(probe_t, t));
    p->fired_at = g_now;
    p->fired++;
}

static void run_to(tt_timerwheel_t *w, tt_msec_t now)
{
    g_now = now;
    tt_timerwheel_run(w, now);
    assert_int_equal(tt_timerwheel_validate(w), 0);
}

static void test_fires_at_deadline(void **state)
{
    (void)state;
    tt_timerwheel_t w;
    tt_timerwheel_init(&w, 1000);
    probe_t p[4] = {0};
    tt_msec_t deadlines[4] = {1000, 1063, 1064, 5000};
    for (int i = 0; i < 4; i++) {
        tt_timer_init(&p[i].t, probe_cb);
        tt_timer_start(&w, &p[i].t, deadlines[i]);
    }
    assert_int_equal(tt_timerwheel_validate(&w), 0);
    assert_int_equal(tt_timerwheel_count(&w), 4);
    for (tt_msec_t now = 1000; now <= 5001; now++) {
        run_to(&w, now);
        for (int i = 0; i < 4; i++) {
            if (now < deadlines[i])
                assert_int_equal(p[i].fired, 0);
            else
                assert_int_equal(p[i].fired_at, deadlines[i]);
        }
    }
    assert_int_equal(tt_timerwheel_count(&w), 0);
    assert_int_equal(tt_timerwheel_next(&w), TT_TIME_NEVER);
}

static void test_stop_and_rearm(void **state)
{
    (void)state;
    tt_timerwheel_t w;
    tt_timerwheel_init(&w, 0);
    probe_t a = {0}, b = {0};
    tt_timer_init(&a.t, probe_cb);
    tt_timer_init(&b.t, probe_cb);
    tt_timer_start(&w, &a.t, 100);
    tt_timer_start(&w, &b.t, 100);
    tt_timer_stop(&w, &a.t);
    tt_timer_stop(&w, &a.t); /* harmless twice */
    assert_false(tt_timer_armed(&a.t));
    tt_timer_start(&w, &b.t, 300); /* re-arm moves it */
    run_to(&w, 200);
    assert_int_equal(a.fired + b.fired, 0);
    run_to(&w, 300);
    assert_int_equal(b.fired, 1);
    assert_int_equal(a.fired, 0);
}

static void test_big_jump_and_far_deadline(void **state)
{
    (void)state;
    tt_timerwheel_t w;
    tt_timerwheel_init(&w, 7);
    probe_t near = {0}, far = {0};
    tt_timer_init(&near.t, probe_cb);
    tt_timer_init(&far.t, probe_cb);
    tt_timer_start(&w, &near.t, 7 + 3600000);
    tt_timer_start(&w, &far.t, 7 + 40ULL * 24 * 3600 * 1000); /* beyond the wheel's range */
    assert_int_equal(tt_timerwheel_validate(&w), 0);
    assert_true(tt_timerwheel_next(&w) <= 7 + 3600000);
    run_to(&w, 7 + 3599999);
    assert_int_equal(near.fired, 0);
    run_to(&w, 7 + 3600000 + 5000);
    assert_int_equal(near.fired, 1);
    run_to(&w, 7 + 20ULL * 24 * 3600 * 1000);
    assert_int_equal(far.fired, 0);
    run_to(&w, 7 + 40ULL * 24 * 3600 * 1000);
    assert_int_equal(far.fired, 1);
}

/* Callback that re-arms itself for "now": must fire on the next run, not loop forever. */
static tt_timerwheel_t *g_wheel;
static void rearm_cb(tt_timer_t *t)
{
    probe_cb(t);
    tt_timer_start(g_wheel, t, g_now);
}

/* Callback that stops its batch partner before it fires. */
static probe_t *g_partner;
static void stop_partner_cb(tt_timer_t *t)
{
    probe_cb(t);
    tt_timer_stop(g_wheel, &g_partner->t);
}

static void test_callbacks_modify_wheel(void **state)
{
    (void)state;
    tt_timerwheel_t w;
    g_wheel = &w;
    tt_timerwheel_init(&w, 0);
    probe_t a = {0}, b = {0}, c = {0};
    tt_timer_init(&a.t, rearm_cb);
    tt_timer_start(&w, &a.t, 10);
    run_to(&w, 10);
    assert_int_equal(a.fired, 1);
    run_to(&w, 11);
    assert_int_equal(a.fired, 2);
    tt_timer_stop(&w, &a.t);

    tt_timer_init(&b.t, stop_partner_cb);
    tt_timer_init(&c.t, probe_cb);
    g_partner = &c;
    tt_timer_start(&w, &b.t, 50);
    tt_timer_start(&w, &c.t, 50);
    run_to(&w, 60);
    assert_int_equal(b.fired, 1);
    assert_int_equal(c.fired, 0);
    assert_int_equal(tt_timerwheel_count(&w), 0);
}

/* The contract of a re-arm for "now" holds when one run spans many milliseconds (a loop that
 * woke late): the timer fires once in that run, and again in the next. Before the fix the wheel
 * placed it after the cursor it was still walking and fired it again in the same run. Also a
 * timer of a later tick that an earlier callback stops or re-arms does not fire. */
static void test_rearm_for_now_waits_for_next_run_across_a_long_run(void **state)
{
    (void)state;
    tt_timerwheel_t w;
    g_wheel = &w;
    tt_timerwheel_init(&w, 0);
    probe_t a = {0}, b = {0};
    tt_timer_init(&a.t, rearm_cb);
    tt_timer_init(&b.t, stop_partner_cb);
    tt_timer_start(&w, &a.t, 5);
    g_now = 100;
    assert_int_equal(tt_timerwheel_run(&w, 100), 1);
    assert_int_equal(tt_timerwheel_validate(&w), 0);
    assert_int_equal(a.fired, 1);
    assert_true(tt_timer_armed(&a.t));
    assert_int_equal(tt_timerwheel_run(&w, 101), 1); /* the next run */
    assert_int_equal(a.fired, 2);
    tt_timer_stop(&w, &a.t);

    /* b (due at 110) stops a (due at 150) within one run to 200: a never fires. */
    probe_t c = {0};
    tt_timer_init(&c.t, probe_cb);
    g_partner = &c;
    tt_timer_start(&w, &b.t, 110);
    tt_timer_start(&w, &c.t, 150);
    g_now = 200;
    assert_int_equal(tt_timerwheel_run(&w, 200), 1);
    assert_int_equal(b.fired, 1);
    assert_int_equal(c.fired, 0);
    assert_int_equal(tt_timerwheel_count(&w), 0);
    assert_int_equal(tt_timerwheel_validate(&w), 0);
}

#define N 20000

static void test_randomized_against_model(void **state)
{
    (void)state;
    static probe_t p[N];
    static tt_msec_t deadline[N]; /* TT_TIME_NEVER: not armed */
    tt_timerwheel_t w;
    srand(12345);
    tt_msec_t now = 123456;
    tt_timerwheel_init(&w, now);
    for (int i = 0; i < N; i++) {
        tt_timer_init(&p[i].t, probe_cb);
        deadline[i] = TT_TIME_NEVER;
    }
    for (int step = 0; step < 400; step++) {
        for (int k = 0; k < 200; k++) {
            int i = rand() % N;
            int op = rand() % 4;
            if (op == 0 && deadline[i] != TT_TIME_NEVER) {
                tt_timer_stop(&w, &p[i].t);
                deadline[i] = TT_TIME_NEVER;
            } else {
                /* Mix of short, idle-timeout-like and long delays. */
                static const tt_msec_t spans[] = {64, 5000, 300000, 20000000};
                tt_msec_t d = now + (tt_msec_t)rand() % spans[rand() % 4];
                tt_timer_start(&w, &p[i].t, d);
                deadline[i] = d;
                p[i].fired = 0;
            }
        }
        assert_int_equal(tt_timerwheel_validate(&w), 0);
        tt_msec_t next = tt_timerwheel_next(&w), earliest = TT_TIME_NEVER;
        for (int i = 0; i < N; i++)
            if (deadline[i] < earliest)
                earliest = deadline[i];
        /* Deadlines of "now" were armed after the run of "now": they count as now + 1. */
        assert_true(next <= (earliest > now + 1 ? earliest : now + 1));
        now += (tt_msec_t)(rand() % 4 == 0 ? rand() % 2000000 : rand() % 3000);
        run_to(&w, now);
        size_t armed = 0;
        for (int i = 0; i < N; i++) {
            if (deadline[i] == TT_TIME_NEVER)
                continue;
            if (deadline[i] <= now) {
                assert_int_equal(p[i].fired, 1);
                assert_false(tt_timer_armed(&p[i].t));
                deadline[i] = TT_TIME_NEVER;
            } else {
                assert_int_equal(p[i].fired, 0);
                armed++;
            }
        }
        assert_int_equal(tt_timerwheel_count(&w), armed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_at_deadline),
        cmocka_unit_test(test_stop_and_rearm),
        cmocka_unit_test(test_big_jump_and_far_deadline),
        cmocka_unit_test(test_callbacks_modify_wheel),
        cmocka_unit_test(test_rearm_for_now_waits_for_next_run_across_a_long_run),
        cmocka_unit_test(test_randomized_against_model),
    };
    return cmocka_run_group_tests_name("timerwheel", tests, NULL, NULL);
}
