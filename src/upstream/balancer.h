/* Choosing an endpoint for a request.
 *
 * least_request: two distinct usable endpoints drawn at random, the one with fewer outstanding
 *   requests wins; on a tie the one with a warm idle connection wins, so balancing never costs a
 *   reuse that picking either would have had, as long as it is not more than a few picks ahead
 *   of the other (unbounded, the preference feeds itself: an endpoint holding more connections
 *   is warm more often); then the one this balancer picked less often. (Power of two choices: near
 * the best spread at the cost of two reads, with no herd on the one least-loaded endpoint.)
 * round_robin: the next usable endpoint in the set's order.
 * random: a uniform draw among the usable endpoints.
 *
 * A balancer belongs to one worker and sees that worker's outstanding counts only: with W workers
 * the load an endpoint sees from the others is unknown to it, so least_request balances each
 * worker's share and the total is the sum of W balanced shares (docs/internals/endpoints.md). */
#ifndef TT_UPSTREAM_BALANCER_H
#define TT_UPSTREAM_BALANCER_H

#include "core/rand.h"
#include "upstream/endpoint.h"

typedef enum {
    TT_BALANCE_LEAST_REQUEST,
    TT_BALANCE_ROUND_ROBIN,
    TT_BALANCE_RANDOM,
} tt_balance_t;

typedef struct {
    tt_balance_t policy;
    tt_rand_t rng;
    size_t _next; /* round robin cursor */
} tt_balancer_t;

/* seed: per worker, so workers do not move in step (round robin starts at a random place). */
void tt_balancer_init(tt_balancer_t *b, tt_balance_t policy, uint64_t seed);

/* Picks a usable endpoint (tt_endpoint_usable) that is not among the nexclude in exclude (the
 * endpoints a failed-over request already tried), or NULL if there is none. The pick is counted
 * in ep->picked; the caller accounts for the request in ep->outstanding. */
tt_endpoint_t *tt_balancer_pick(tt_balancer_t *b, const tt_endpoint_set_t *set,
                                tt_endpoint_t *const *exclude, size_t nexclude, tt_msec_t now);

/* Parses "least_request", "round_robin" or "random". Returns 0, or -1. */
int tt_balance_parse(const char *s, tt_balance_t *out);
const char *tt_balance_name(tt_balance_t b);

#endif
