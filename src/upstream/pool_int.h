/* Private to src/upstream/: what the pool's three files share. conn.c runs one connection's life
 * (connect, handshake, lease, idle watch, timers, close); pool.c acquires, releases, queues and
 * trims; handoff.c moves idle connections between workers. Nothing outside src/upstream/ includes
 * this header. */
#ifndef TT_UPSTREAM_POOL_INT_H
#define TT_UPSTREAM_POOL_INT_H

#include "upstream/pool.h"
#include "upstream/pool_endpoints.h"

/* ---- conn.c ---- */

/* Opens a connection to ep for waiter w (NULL: pre-warming) under capacity the caller reserved.
 * NULL with *err an errno when the connect could not start; the reservation is then returned. */
tt_conn_t *tt_conn_open(tt_pool_t *pool, tt_endpoint_t *ep, tt_pool_waiter_t *w, int *err);
/* Leases a connection (idle or just established) for one request: it counts the request, takes a
 * buffer and arms the lease timer. */
void tt_conn_lease(tt_pool_t *pool, tt_conn_t *c);
/* Arms an idle connection's timer for its next probe or its idle deadline (an adopted one). */
void tt_conn_arm_idle_timer(tt_pool_t *pool, tt_conn_t *c);
/* Puts a connection back in the idle LRU at its warm end, watched for reading. */
void tt_conn_make_idle(tt_pool_t *pool, tt_conn_t *c);
/* The cheap liveness check at checkout: TT_REUSE_OK, or why the idle connection must close. */
tt_close_reason_t tt_conn_checkout_check(tt_pool_t *pool, tt_conn_t *c);
/* The idle watch: an idle connection became readable (a close, or stray bytes). */
void tt_conn_idle_cb(tt_io_t *io, uint32_t events);

/* ---- pool.c ---- */

/* Takes a slot under max_connections. Returns 0, or -1 at the cap. */
int tt_pool_reserve_capacity(tt_upstream_t *up);
/* Gives back a slot reserved for a connection that will not be opened. */
void tt_pool_unreserve_capacity(tt_upstream_t *up);
/* Another endpoint for waiter w after its connect to failed did not work out: up to
 * connect_retries others, each tried once. Opens the connection (or queues the request at the
 * cap) and returns 1; 0 when none is left to try. *err: errno of the last connect that failed
 * at once. */
int tt_pool_connect_elsewhere(tt_pool_t *pool, tt_pool_waiter_t *w, tt_endpoint_t *failed,
                              int *err);
/* Lets other workers see whether this pool has queued requests. */
void tt_pool_publish_waiting(tt_pool_t *pool);
/* The warmest idle connection to ep (any endpoint when NULL) that passes its checkout check,
 * left idle; the ones that fail are closed on the way. NULL when none is left. */
tt_conn_t *tt_pool_warmest_live_idle(tt_pool_t *pool, tt_endpoint_t *ep);
/* Takes the first queued request off the queue, recording how long it waited. */
tt_pool_waiter_t *tt_pool_dequeue(tt_pool_t *pool);
/* A connection free for another request goes to the first queued request (leased, returns 1),
 * or takes one of the upstream's max_idle slots (returns 0: the caller makes it idle), or is
 * closed as pool_full when none is left (returns 1). */
int tt_pool_claim(tt_pool_t *pool, tt_conn_t *c);
/* Hands a connection to the first queued request, or keeps it idle; closes it if neither. */
void tt_pool_check_in(tt_pool_t *pool, tt_conn_t *c);
/* Opens connections for queued requests while capacity allows. */
void tt_pool_service_waiters(tt_pool_t *pool);
/* Keeps this worker's share of min_idle open. */
void tt_pool_replenish(tt_pool_t *pool);
/* Replaces closed connections up to min_idle from a timer, backing off while connects fail. */
void tt_pool_schedule_replenish(tt_pool_t *pool, int failed);

/* ---- endpoint_check.c ---- */

/* Starts the active checks of endpoints new to the set and stops those of endpoints draining
 * (all of them once the pool shuts down). Does nothing without health_check. */
void tt_endpoint_checks_sync(tt_pool_t *pool);
/* Stops and frees ep's checks, one out included. */
void tt_endpoint_check_free(tt_pool_t *pool, tt_endpoint_t *ep);

/* ---- pool_endpoints.c (and pool_endpoints.h) ---- */

/* ep's checks moved it up or down (why: the last failed check's cause, when down). Down: no new
 * request goes to it, its idle connections close (endpoint_down), requests in flight finish. */
void tt_pool_endpoint_health(tt_pool_t *pool, tt_endpoint_t *ep, int up, const char *why);

/* ---- handoff.c ---- */

/* Tells other workers with queued requests that a connection slot is free. */
void tt_pool_announce_capacity(tt_pool_t *self);
/* Asks the other workers for one of their idle connections. */
void tt_pool_request_takeover(tt_pool_t *self);
/* Honours a posted takeover request with the coldest idle connection, when fair. */
void tt_pool_try_hand_over(tt_pool_t *pool);
/* Takes in connections handed over by other workers and serves queued requests with them. */
void tt_pool_adopt_handoffs(tt_pool_t *pool);
/* Frees connections handed over after this worker's loop stopped (nobody will adopt them). */
void tt_pool_drop_handoffs(tt_pool_t *pool);

#endif
