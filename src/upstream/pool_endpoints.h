/* The endpoints as one worker's pool sees them: its view of the upstream's addresses, kept in
 * step when the upstream publishes a change, and the choice of an endpoint for each new
 * connection. Internal to the pool (pool.c, conn.c); see docs/internals/endpoints.md. */
#ifndef TT_UPSTREAM_POOL_ENDPOINTS_H
#define TT_UPSTREAM_POOL_ENDPOINTS_H

#include "upstream/pool.h"

/* Sets up the view and the balancer and takes the addresses in force. */
void tt_pool_endpoints_init(tt_pool_t *pool);
/* Takes the breaker settings of pool->up->conf again (a reload changed them in place). */
void tt_pool_endpoints_reconfigure(tt_pool_t *pool);
/* Frees the view; every connection must be closed. */
void tt_pool_endpoints_destroy(tt_pool_t *pool);

/* Applies the upstream's addresses if they changed since the last call: a removed endpoint takes
 * no new request, its idle and spare connecting connections close (endpoint_removed), its leased
 * ones close when released; endpoints left without connections are freed. Returns 1 if anything
 * changed. */
int tt_pool_endpoints_sync(tt_pool_t *pool);

/* The endpoint for a new request (balancing), skipping the nexclude endpoints in exclude; NULL if
 * no endpoint can take it. */
tt_endpoint_t *tt_pool_pick_endpoint(tt_pool_t *pool, tt_endpoint_t *const *exclude,
                                     size_t nexclude);

/* The endpoint a pre-warmed connection should go to: the usable one with the fewest
 * connections of this pool, so min_idle spreads over the endpoints. NULL if none is usable. */
tt_endpoint_t *tt_pool_warm_endpoint(tt_pool_t *pool);

/* The active endpoint the connected socket fd leads to, or NULL (for a connection handed over by
 * another worker, whose endpoint objects are its own). */
tt_endpoint_t *tt_pool_endpoint_of_socket(tt_pool_t *pool, int fd);

/* Outcomes for the endpoint's circuit breaker: breaker_failures failures in a row (connects
 * refused, timed out or whose TLS handshake failed; requests reset or closed before a response,
 * response_timeout; with breaker_on_5xx a 502/503/504) eject it while max_ejected allows; after
 * the cooldown one trial (a request, or a health check) decides. why is a static phrase, trial
 * names what succeeded in the log ("connect", "request", "health check"). Transitions are
 * logged once each. */
void tt_pool_endpoint_failed(tt_pool_t *pool, tt_endpoint_t *ep, tt_eject_cause_t cause,
                             const char *why);
void tt_pool_endpoint_connect_failed(tt_pool_t *pool, tt_endpoint_t *ep, tt_close_reason_t reason,
                                     const tt_pool_error_t *err);
void tt_pool_endpoint_succeeded(tt_pool_t *pool, tt_endpoint_t *ep, const char *trial);

/* Counts of this pool's endpoints by state. */
void tt_pool_endpoint_counts(const tt_pool_t *pool, size_t *active, size_t *draining);

#endif
