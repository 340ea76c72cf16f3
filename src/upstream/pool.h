/* The per-worker pool of upstream connections for one upstream.
 *
 * Idle connections form an LRU list: checkout and check-in at the warm end, expiry and trimming
 * at the cold end, so after a burst the surplus ages out. max_connections and max_idle hold across
 * workers through the upstream's atomic counts; a request that finds the upstream at its cap waits
 * in this worker's FIFO queue (bounded by max_queue and queue_timeout), and other workers holding
 * idle connections are asked to give one up so no worker starves. A connection returns to the pool
 * only when the reuse checklist (tt_pool_release) passes. See docs/internals/pool.md. */
#ifndef TT_UPSTREAM_POOL_H
#define TT_UPSTREAM_POOL_H

#include "core/buf.h"
#include "event/loop.h"
#include "upstream/balancer.h"
#include "upstream/conn.h"
#include "upstream/endpoint.h"
#include "upstream/stats.h"
#include "upstream/upstream.h"

#include <pthread.h>
#include <stdatomic.h>

typedef enum {
    TT_POOL_OK,
    TT_POOL_WAIT,            /* the waiter's callback will deliver the outcome */
    TT_POOL_QUEUE_FULL,      /* max_queue requests already waiting */
    TT_POOL_QUEUE_TIMEOUT,   /* waited queue_timeout */
    TT_POOL_CONNECT_FAILED,  /* new connection refused or unreachable */
    TT_POOL_CONNECT_TIMEOUT, /* new connection not established in connect_timeout */
    TT_POOL_TLS_FAILED,      /* TLS handshake failed or timed out */
    TT_POOL_SHUTDOWN,
    TT_POOL_NO_ENDPOINTS, /* the upstream has no endpoint at all */
    TT_POOL_BREAKER_OPEN, /* every endpoint is ejected (breaker open or its trial out) */
} tt_pool_result_t;

/* Bound on the endpoints one request tries before its connect failure is final (the first one
 * and connect_retries others). */
#define TT_POOL_MAX_TRIES 9

/* Why a new connection failed, for the client's error response. */
typedef struct {
    const char *endpoint; /* the endpoint that failed ("10.0.0.5:8080"); valid during the call */
    int errno_value;      /* CONNECT_FAILED, CONNECT_TIMEOUT */
    tt_tls_failure_t tls; /* TLS_FAILED */
    const char *detail;   /* TLS_FAILED: OpenSSL's words; valid during the callback only */
} tt_pool_error_t;

struct tt_pool_waiter {
    tt_list_t _link;
    tt_timer_t _timer;
    tt_pool_t *_pool;
    tt_conn_t *_conn; /* the new connection being opened for this waiter */
    tt_msec_t _queued_at;
    tt_endpoint_t *_tried[TT_POOL_MAX_TRIES]; /* endpoints whose connect failed for it */
    uint8_t _ntried;
    /* Delivers a leased connection (result OK) or a failure (conn NULL; err says more for
     * CONNECT_FAILED, CONNECT_TIMEOUT and TLS_FAILED, else is NULL). Called from the event loop;
     * the waiter is no longer linked anywhere. */
    void (*cb)(tt_pool_waiter_t *w, tt_conn_t *conn, tt_pool_result_t result,
               const tt_pool_error_t *err);
};

/* up, loop, worker and stats may be read by the pool's worker; the _private fields are
 * src/upstream/'s alone. */
struct tt_pool {
    tt_upstream_t *up;
    tt_loop_t *loop;
    size_t worker;
    tt_upstream_stats_t stats;
    tt_endpoint_set_t endpoints; /* this worker's view of the upstream's endpoints */

    tt_bufpool_t *_bufs;
    tt_balancer_t _balancer;
    tt_breaker_conf_t _breaker;
    uint64_t _ep_version; /* of the upstream's addresses last applied */
    tt_list_t _idle;      /* LRU: head is warmest */
    tt_list_t _busy;      /* connecting and leased */
    size_t _nidle, _nbusy;
    tt_list_t _waiters; /* FIFO */
    size_t _nwaiters;
    size_t _min_idle;  /* this worker's share of min_idle */
    size_t _peak_busy; /* most connections leased at once this trim window */
    size_t _prev_peak; /* of the window before */
    tt_timer_t _trim_timer;
    tt_timer_t _replenish_timer;  /* refills min_idle, with backoff while connects fail */
    unsigned _connect_failures;   /* in a row, for that backoff */
    tt_ratelimit_t _prewarm_warn; /* failed pre-warming connects (conn.c) */
    int _shutting_down;
    int _checking; /* active health checks run: from tt_pool_start to tt_pool_shutdown */
    /* A worker at the cap wants one of our idle connections: its index and size, packed; 0 none.
     * The connection is handed over, socket and all: no close, no new handshake. */
    _Atomic int64_t _takeover_requested;
    _Atomic int _has_waiters;      /* nwaiters > 0, for other workers */
    _Atomic int _capacity_freed;   /* a connection closed somewhere: retry queued requests */
    pthread_mutex_t _handoff_lock; /* guards _handoff only; never taken on the request path */
    tt_list_t _handoff;            /* connections other workers handed to this pool */
};

void tt_pool_init(tt_pool_t *pool, tt_upstream_t *up, tt_loop_t *loop, tt_bufpool_t *bufs,
                  size_t worker);
/* Frees what tt_pool_init set up; every connection must be closed. */
void tt_pool_destroy(tt_pool_t *pool);

/* Opens connections up to this worker's share of min_idle and starts the trim timer. */
void tt_pool_start(tt_pool_t *pool);

enum {
    TT_ACQUIRE_FRESH = 1,     /* never reuse an idle connection (a retry) */
    TT_ACQUIRE_ELSEWHERE = 2, /* a retry: another endpoint than the one set by tt_pool_avoid(),
                                 when one is usable */
};

/* Whether an endpoint other than ep could take a request now (a retry elsewhere). */
int tt_pool_other_endpoint_usable(tt_pool_t *pool, const tt_endpoint_t *ep);

/* Before an acquire with TT_ACQUIRE_ELSEWHERE: the endpoint the request just failed on. */
static inline void tt_pool_avoid(tt_pool_waiter_t *w, tt_endpoint_t *ep)
{
    w->_tried[0] = ep;
    w->_ntried = ep != NULL;
}

/* Gets a connection for one request. OK: *conn is a leased connection (an idle one that passed
 * its checkout check). WAIT: a new connection is being opened or the request is queued; w->cb
 * delivers the outcome later. QUEUE_FULL: answer 503 now. The caller owns a leased connection
 * until tt_pool_release(). */
tt_pool_result_t tt_pool_acquire(tt_pool_t *pool, tt_pool_waiter_t *w, int flags, tt_conn_t **conn);

/* Withdraws a waiting request (the client went away). Harmless if not waiting. */
void tt_pool_cancel(tt_pool_waiter_t *w);

/* Ends a lease. verdict is TT_REUSE_OK when the session's part of the checklist passed (response
 * complete and keep-alive, request fully sent, no error); the pool adds its own items (lifetime,
 * max_requests, max_idle, shutdown) and then hands the connection to a queued request, keeps it
 * idle, or closes it with the first failing reason. */
void tt_pool_release(tt_conn_t *conn, tt_close_reason_t verdict);

/* Closes idle connections and fails queued requests; later releases close. Used when draining. */
void tt_pool_shutdown(tt_pool_t *pool);

/* Applies a reload's new numbers (up->conf changed in place): this worker's share of min_idle,
 * the breaker settings, and idle connections closed (coldest first, as trimmed) while the
 * upstream holds more than its new max_connections or max_idle, across all workers; never an
 * active one. Raised limits serve queued requests and pre-warm. Worker thread only, one worker
 * at a time (the global counts are read as each closes). */
void tt_pool_reconfigure(tt_pool_t *pool);

/* Handles requests from other workers (hand over an idle connection, adopt one handed over,
 * capacity freed). Called on the pool's loop after a wakeup. */
void tt_pool_on_wakeup(tt_pool_t *pool);

/* Milliseconds until the first ejected endpoint may take a trial request, or a down one its next
 * health check (at least 1), for the 503's text. *checks_failing: the answer is about endpoints
 * down by health checks; else *cause is why the endpoint due first last failed (a static
 * phrase). */
tt_msec_t tt_pool_next_trial_ms(tt_pool_t *pool, const char **cause, int *checks_failing);

/* Live figures of one pool, for the admin endpoint. Worker thread only. */
typedef struct {
    size_t idle, active, connecting, queued;
    uint64_t age_sum_ms;       /* over all live connections */
    uint64_t socket_mem_bytes; /* kernel memory of the pooled sockets (SO_MEMINFO) */
} tt_pool_gauges_t;

void tt_pool_gauges(tt_pool_t *pool, tt_pool_gauges_t *g);

/* Calls fn for every connection of the pool (idle, then connecting and leased). Worker thread
 * only; fn must not close connections. */
void tt_pool_foreach_conn(tt_pool_t *pool, void (*fn)(const tt_conn_t *c, void *arg), void *arg);

/* Number of connections this pool owns (idle + connecting + leased). */
static inline size_t tt_pool_size(const tt_pool_t *pool)
{
    return pool->_nidle + pool->_nbusy;
}

#endif
