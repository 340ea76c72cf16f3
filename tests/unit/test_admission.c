/* The global client connection cap: slots taken and given back, the default derived from the
 * descriptor limit, and the wake-up of a waiting worker's loop when a slot frees. */
#include "proxy/admission.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "leakcheck.h"

static int woken;

static void wakeup_cb(tt_loop_t *loop, void *data)
{
    (void)data;
    woken++;
    tt_loop_stop(loop);
}

static void test_slots_up_to_the_cap(void **state)
{
    (void)state;
    tt_admission_t a;
    tt_admission_init(&a, 3, NULL, 0);
    for (int i = 0; i < 3; i++)
        assert_true(tt_admission_take(&a));
    assert_false(tt_admission_take(&a));
    assert_false(tt_admission_take(&a)); /* a refused take leaves the count alone */
    tt_admission_release(&a);
    assert_true(tt_admission_take(&a));
    assert_false(tt_admission_take(&a));
}

static void test_release_wakes_a_waiting_loop(void **state)
{
    (void)state;
    tt_leakcheck_t leaks = tt_leakcheck_begin();
    tt_loop_t *loop = tt_loop_create();
    assert_non_null(loop);
    tt_loop_on_wakeup(loop, wakeup_cb, NULL);
    tt_loop_t *loops[] = {loop};
    tt_admission_t a;
    tt_admission_init(&a, 1, loops, 1);
    assert_true(tt_admission_take(&a));
    woken = 0;
    tt_admission_release(&a); /* nobody waits: no wake-up */
    assert_true(tt_admission_take(&a));
    assert_false(tt_admission_take(&a));
    tt_admission_wait(&a);
    tt_admission_release(&a);
    tt_loop_run(loop); /* returns once the wake-up ran */
    assert_int_equal(woken, 1);
    tt_admission_unwait(&a);
    tt_loop_destroy(loop);
    tt_leakcheck_end(leaks);
}

static void test_default_from_the_descriptor_limit(void **state)
{
    (void)state;
    /* 512 descriptors, 2 workers with one listener each: 64 + 2 * 3 kept, then the upstream
     * connections (256 asked, at most half of the 442 left, 221). */
    assert_int_equal(tt_admission_default_max(512, 256, 2, 1), 221);
    assert_int_equal(tt_admission_default_max(512, 100, 2, 1), 342);
    assert_int_equal(tt_admission_default_max(1048576, 256, 4, 2), 1048576 - 64 - 16 - 256);
    assert_int_equal(tt_admission_default_max(60, 10, 1, 1), 1); /* never 0 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_up_to_the_cap),
        cmocka_unit_test(test_release_wakes_a_waiting_loop),
        cmocka_unit_test(test_default_from_the_descriptor_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
