#include "upstream/balancer.h"

#include <string.h>

/* How many picks ahead of a cold endpoint a warm one may get through the warm preference. */
#define WARM_SLACK 32

static const char *const names[] = {"least_request", "round_robin", "random"};

void tt_balancer_init(tt_balancer_t *b, tt_balance_t policy, uint64_t seed)
{
    b->policy = policy;
    tt_rand_seed(&b->rng, seed);
    b->_next = (size_t)tt_rand_next(&b->rng);
}

int tt_balance_parse(const char *s, tt_balance_t *out)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (tt_balance_t)i;
            return 0;
        }
    }
    return -1;
}

const char *tt_balance_name(tt_balance_t b)
{
    return names[b];
}

static int candidate(tt_endpoint_t *ep, tt_endpoint_t *const *exclude, size_t nexclude,
                     tt_msec_t now)
{
    for (size_t i = 0; i < nexclude; i++)
        if (exclude[i] == ep)
            return 0;
    return tt_endpoint_usable(ep, now);
}

/* The k-th candidate in set order (k < number of candidates). */
static tt_endpoint_t *nth_candidate(const tt_endpoint_set_t *set, size_t k,
                                    tt_endpoint_t *const *exclude, size_t nexclude, tt_msec_t now)
{
    for (size_t i = 0; i < set->n; i++) {
        tt_endpoint_t *ep = tt_endpoint_set_at(set, i);
        if (candidate(ep, exclude, nexclude, now) && k-- == 0)
            return ep;
    }
    return NULL;
}

static tt_endpoint_t *pick(tt_balancer_t *b, const tt_endpoint_set_t *set,
                           tt_endpoint_t *const *exclude, size_t nexclude, tt_msec_t now)
{
    if (b->policy == TT_BALANCE_ROUND_ROBIN) {
        for (size_t tries = 0; tries < set->n; tries++) {
            tt_endpoint_t *ep = tt_endpoint_set_at(set, b->_next++ % set->n);
            if (candidate(ep, exclude, nexclude, now))
                return ep;
        }
        return NULL;
    }
    size_t ncand = 0;
    tt_endpoint_t *only = NULL;
    for (size_t i = 0; i < set->n; i++) {
        tt_endpoint_t *ep = tt_endpoint_set_at(set, i);
        if (candidate(ep, exclude, nexclude, now)) {
            ncand++;
            only = ep;
        }
    }
    if (ncand <= 1)
        return only;
    uint32_t x = tt_rand_below(&b->rng, (uint32_t)ncand);
    if (b->policy == TT_BALANCE_RANDOM)
        return nth_candidate(set, x, exclude, nexclude, now);
    /* Two distinct draws: the second from the ncand - 1 others. */
    uint32_t y = tt_rand_below(&b->rng, (uint32_t)ncand - 1);
    if (y >= x)
        y++;
    tt_endpoint_t *e1 = nth_candidate(set, x, exclude, nexclude, now);
    tt_endpoint_t *e2 = nth_candidate(set, y, exclude, nexclude, now);
    if (e1->outstanding != e2->outstanding)
        return e1->outstanding < e2->outstanding ? e1 : e2;
    if ((e1->nidle > 0) != (e2->nidle > 0)) {
        /* The warm one, unless it is already ahead: an endpoint that holds more connections has
         * an idle one more often, so an unbounded preference would feed itself (a loaded test
         * run split 0.82 : 1.14). Bounded, it costs at most WARM_SLACK picks of imbalance. */
        tt_endpoint_t *warm = e1->nidle > 0 ? e1 : e2, *cold = warm == e1 ? e2 : e1;
        return warm->picked <= cold->picked + WARM_SLACK ? warm : cold;
    }
    /* Still tied: the one picked less so far. */
    if (e1->picked != e2->picked)
        return e1->picked < e2->picked ? e1 : e2;
    return e1;
}

tt_endpoint_t *tt_balancer_pick(tt_balancer_t *b, const tt_endpoint_set_t *set,
                                tt_endpoint_t *const *exclude, size_t nexclude, tt_msec_t now)
{
    if (set->n == 0)
        return NULL;
    tt_endpoint_t *ep = pick(b, set, exclude, nexclude, now);
    if (ep != NULL)
        ep->picked++;
    return ep;
}
