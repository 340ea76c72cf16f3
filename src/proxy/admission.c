#include "proxy/admission.h"

/* The admin endpoint's listener and a few of its connections, stdio, the access log, c-ares. */
#define FIXED_RESERVE 64

void tt_admission_init(tt_admission_t *a, int64_t max, tt_loop_t **loops, size_t nloops)
{
    a->max = max;
    atomic_init(&a->open, 0);
    atomic_init(&a->waiting, 0);
    a->loops = loops;
    a->nloops = nloops;
}

int tt_admission_take(tt_admission_t *a)
{
    if (atomic_fetch_add(&a->open, 1) < a->max)
        return 1;
    atomic_fetch_sub(&a->open, 1);
    return 0;
}

void tt_admission_release(tt_admission_t *a)
{
    atomic_fetch_sub(&a->open, 1);
    /* Sequentially consistent with wait-then-take: either this sees the waiter, or the waiter's
     * second take sees the freed slot. */
    if (atomic_load(&a->waiting) > 0)
        for (size_t i = 0; i < a->nloops; i++)
            if (a->loops[i] != NULL) /* NULL: a worker whose setup failed (none runs then) */
                tt_loop_wakeup(a->loops[i]);
}

void tt_admission_wait(tt_admission_t *a)
{
    atomic_fetch_add(&a->waiting, 1);
}

void tt_admission_unwait(tt_admission_t *a)
{
    atomic_fetch_sub(&a->waiting, 1);
}

int64_t tt_admission_default_max(int64_t nofile, int64_t upstream_conns, size_t nworkers,
                                 size_t nlisteners)
{
    int64_t fixed = FIXED_RESERVE + (int64_t)nworkers * (int64_t)(2 + nlisteners);
    int64_t left = nofile - fixed;
    if (left < 2)
        return 1;
    int64_t upstream = upstream_conns < left / 2 ? upstream_conns : left / 2;
    return left - upstream;
}
