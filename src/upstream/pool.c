/* Acquire, release, the queue, trimming and pre-warming. A connection's own life is conn.c, the
 * moves between workers handoff.c (see pool_int.h). */
#include "upstream/pool_int.h"

#include "core/invariant.h"
#include "core/log.h"

#include <errno.h>
#include <string.h>

static void replenish_cb(tt_timer_t *t);

#define TRIM_INTERVAL_MS 5000

/* Lets other workers see whether this pool still has queued requests, so a takeover request of
 * ours that is no longer needed is dropped instead of moving a connection. */
void tt_pool_publish_waiting(tt_pool_t *pool)
{
    atomic_store_explicit(&pool->_has_waiters, pool->_nwaiters > 0, memory_order_release);
}

/* This worker's part of min_idle: spread over workers, the remainder to the first ones. */
static size_t min_idle_share(const tt_upstream_t *up, size_t worker)
{
    size_t n = up->nworkers, total = (size_t)up->conf->min_idle;
    return total / n + (worker < total % n ? 1 : 0);
}

void tt_pool_init(tt_pool_t *pool, tt_upstream_t *up, tt_loop_t *loop, tt_bufpool_t *bufs,
                  size_t worker)
{
    memset(pool, 0, sizeof(*pool));
    pool->up = up;
    pool->loop = loop;
    pool->_bufs = bufs;
    pool->worker = worker;
    tt_list_init(&pool->_idle);
    tt_list_init(&pool->_busy);
    tt_list_init(&pool->_waiters);
    pool->_min_idle = min_idle_share(up, worker);
    tt_timer_init(&pool->_trim_timer, NULL);
    tt_timer_init(&pool->_replenish_timer, replenish_cb);
    pthread_mutex_init(&pool->_handoff_lock, NULL);
    tt_list_init(&pool->_handoff);
    tt_pool_endpoints_init(pool);
}

void tt_pool_destroy(tt_pool_t *pool)
{
    TT_ASSERT(tt_list_empty(&pool->_idle) && tt_list_empty(&pool->_busy));
    tt_pool_drop_handoffs(pool);
    pthread_mutex_destroy(&pool->_handoff_lock);
    tt_pool_endpoints_destroy(pool);
}

int tt_pool_reserve_capacity(tt_upstream_t *up)
{
    int64_t n = atomic_fetch_add_explicit(&up->nconns, 1, memory_order_acq_rel);
    if (n < up->conf->max_connections)
        return 0;
    atomic_fetch_sub_explicit(&up->nconns, 1, memory_order_acq_rel);
    return -1;
}

void tt_pool_unreserve_capacity(tt_upstream_t *up)
{
    atomic_fetch_sub_explicit(&up->nconns, 1, memory_order_acq_rel);
}

/* The idle list is shared by the endpoints; ep->nidle stops the walk once ep has none, and with
 * connections spread over E endpoints the first match is about E steps from the warm end. With
 * ep NULL (any endpoint), only one that may take a request: not down, not ejected. */
tt_conn_t *tt_pool_warmest_live_idle(tt_pool_t *pool, tt_endpoint_t *ep)
{
    tt_msec_t now = tt_loop_now(pool->loop);
    tt_list_t *l = pool->_idle.next;
    while (l != &pool->_idle && (ep == NULL || ep->nidle > 0)) {
        tt_conn_t *c = tt_container_of(l, tt_conn_t, _link);
        l = l->next;
        if (ep != NULL ? c->ep != ep : !tt_endpoint_usable(c->ep, now))
            continue;
        tt_close_reason_t why = tt_conn_checkout_check(pool, c);
        if (why == TT_REUSE_OK)
            return c;
        tt_conn_close(c, why);
    }
    return NULL;
}

/* Takes a queued request off the queue and its deadline off the wheel (harmless if it fired). */
static void unqueue(tt_pool_t *pool, tt_pool_waiter_t *w)
{
    TT_ASSERT(tt_list_linked(&w->_link) && pool->_nwaiters > 0);
    tt_list_remove(&w->_link);
    pool->_nwaiters--;
    tt_pool_publish_waiting(pool);
    atomic_fetch_sub_explicit(&pool->up->nwaiting, 1, memory_order_relaxed);
    tt_loop_timer_stop(pool->loop, &w->_timer);
}

/* Takes the first queued request off the queue, recording how long it waited. */
tt_pool_waiter_t *tt_pool_dequeue(tt_pool_t *pool)
{
    tt_pool_waiter_t *w = tt_container_of(tt_list_first(&pool->_waiters), tt_pool_waiter_t, _link);
    unqueue(pool, w);
    tt_hist_record(&pool->stats.queue_wait_us, (tt_loop_now(pool->loop) - w->_queued_at) * 1000);
    return w;
}

int tt_pool_claim(tt_pool_t *pool, tt_conn_t *c)
{
    /* Not to a queued request when its endpoint is ejected (a probed idle connection): it stays
     * idle for after the cooldown. */
    if (!tt_list_empty(&pool->_waiters) && tt_endpoint_usable(c->ep, tt_loop_now(pool->loop))) {
        tt_pool_waiter_t *w = tt_pool_dequeue(pool);
        c->state = TT_CONN_ACTIVE;
        tt_conn_lease(pool, c); /* stays on the busy list; tt_conn_lease() counts the new request */
        w->cb(w, c, TT_POOL_OK, NULL);
        return 1;
    }
    int64_t idle = atomic_fetch_add_explicit(&pool->up->nidle, 1, memory_order_relaxed);
    if (idle >= pool->up->conf->max_idle) {
        atomic_fetch_sub_explicit(&pool->up->nidle, 1, memory_order_relaxed);
        tt_conn_close(c, TT_CLOSE_POOL_FULL);
        return 1;
    }
    return 0;
}

/* Hands a connection to the first queued request, or keeps it idle; closes it if neither. */
void tt_pool_check_in(tt_pool_t *pool, tt_conn_t *c)
{
    TT_ASSERT(c->state == TT_CONN_ACTIVE && c->_handler == NULL);
    if (c->ep->state == TT_ENDPOINT_DRAINING || c->ep->down) {
        tt_conn_close(c, c->ep->down ? TT_CLOSE_ENDPOINT_DOWN : TT_CLOSE_ENDPOINT_REMOVED);
        return;
    }
    if (!tt_pool_claim(pool, c))
        tt_conn_make_idle(pool, c);
}

/* ---- acquire and release --------------------------------------------------------------------- */

static void queue_timer_cb(tt_timer_t *t)
{
    tt_pool_waiter_t *w = tt_container_of(t, tt_pool_waiter_t, _timer);
    tt_pool_t *pool = w->_pool;
    unqueue(pool, w);
    pool->stats.rejected[TT_REJECT_QUEUE_TIMEOUT]++;
    w->cb(w, NULL, TT_POOL_QUEUE_TIMEOUT, NULL);
}

static tt_pool_result_t enqueue(tt_pool_t *pool, tt_pool_waiter_t *w)
{
    tt_upstream_t *up = pool->up;
    int64_t n = atomic_fetch_add_explicit(&up->nwaiting, 1, memory_order_relaxed);
    if (n >= up->conf->max_queue) {
        atomic_fetch_sub_explicit(&up->nwaiting, 1, memory_order_relaxed);
        pool->stats.rejected[TT_REJECT_QUEUE_FULL]++;
        return TT_POOL_QUEUE_FULL;
    }
    tt_list_push_back(&pool->_waiters, &w->_link);
    pool->_nwaiters++;
    tt_pool_publish_waiting(pool);
    pool->stats.queued++;
    w->_queued_at = tt_loop_now(pool->loop);
    tt_timer_init(&w->_timer, queue_timer_cb);
    tt_loop_timer_after(pool->loop, &w->_timer, (tt_msec_t)up->conf->queue_timeout);
    /* At the cap: a worker holding few of the connections would wait on the others' traffic
     * for a slot. Ask for one of their idle connections instead. */
    tt_pool_request_takeover(pool);
    return TT_POOL_WAIT;
}

int tt_pool_connect_elsewhere(tt_pool_t *pool, tt_pool_waiter_t *w, tt_endpoint_t *failed, int *err)
{
    const tt_upstream_conf_t *conf = pool->up->conf;
    if (failed != NULL && w->_ntried < TT_POOL_MAX_TRIES)
        w->_tried[w->_ntried++] = failed;
    while (!pool->_shutting_down && w->_ntried <= conf->connect_retries &&
           w->_ntried < TT_POOL_MAX_TRIES) {
        tt_endpoint_t *ep = tt_pool_pick_endpoint(pool, w->_tried, w->_ntried);
        if (ep == NULL)
            return 0;
        pool->stats.connect_failovers++;
        tt_debug("upstream %s: connect to %s failed; trying %s", conf->name,
                 failed != NULL ? failed->name : "?", ep->name);
        if (tt_pool_reserve_capacity(pool->up) < 0)
            return enqueue(pool, w) == TT_POOL_WAIT;
        if (tt_conn_open(pool, ep, w, err) != NULL)
            return 1;
        w->_tried[w->_ntried++] = failed = ep;
    }
    return 0;
}

/* Why no endpoint can take a request: none at all, or every one ejected. Counted. */
static tt_pool_result_t no_endpoint(tt_pool_t *pool)
{
    if (pool->endpoints.nactive == 0) {
        pool->stats.rejected[TT_REJECT_NO_ENDPOINTS]++;
        return TT_POOL_NO_ENDPOINTS;
    }
    pool->stats.rejected[TT_REJECT_BREAKER_OPEN]++;
    return TT_POOL_BREAKER_OPEN;
}

tt_pool_result_t tt_pool_acquire(tt_pool_t *pool, tt_pool_waiter_t *w, int flags, tt_conn_t **conn)
{
    TT_ASSERT(w->cb != NULL && (w->_pool == NULL || !tt_list_linked(&w->_link)));
    w->_pool = pool;
    w->_conn = NULL;
    if (!(flags & TT_ACQUIRE_ELSEWHERE))
        w->_ntried = 0;
    tt_list_init(&w->_link);
    if (pool->_shutting_down)
        return TT_POOL_SHUTDOWN;
    tt_endpoint_t *ep = tt_pool_pick_endpoint(pool, w->_tried, w->_ntried);
    if (ep == NULL && w->_ntried > 0) { /* no other endpoint: the same one, once more */
        w->_ntried = 0;
        ep = tt_pool_pick_endpoint(pool, NULL, 0);
    }
    if (ep == NULL)
        return no_endpoint(pool);
    tt_conn_t *c = NULL;
    if (!(flags & TT_ACQUIRE_FRESH) && (c = tt_pool_warmest_live_idle(pool, ep)) != NULL) {
        tt_conn_lease(pool, c);
        *conn = c;
        return TT_POOL_OK;
    }
    if (!tt_list_empty(&pool->_waiters) || tt_pool_reserve_capacity(pool->up) < 0) {
        /* At the cap: a warm connection to another endpoint beats waiting for a slot. */
        if (!(flags & TT_ACQUIRE_FRESH) && tt_list_empty(&pool->_waiters) &&
            (c = tt_pool_warmest_live_idle(pool, NULL)) != NULL) {
            tt_conn_lease(pool, c);
            *conn = c;
            return TT_POOL_OK;
        }
        return enqueue(pool, w);
    }
    int err;
    if (tt_conn_open(pool, ep, w, &err) != NULL)
        return TT_POOL_WAIT;
    if (tt_pool_connect_elsewhere(pool, w, ep, &err))
        return TT_POOL_WAIT;
    errno = err;
    return TT_POOL_CONNECT_FAILED;
}

void tt_pool_cancel(tt_pool_waiter_t *w)
{
    tt_pool_t *pool = w->_pool;
    if (pool == NULL)
        return;
    if (tt_list_linked(&w->_link))
        unqueue(pool, w);
    if (w->_conn != NULL) { /* it will join the pool when it connects */
        tt_conn_t *c = w->_conn;
        c->_waiter = NULL;
        if (c->_counted) {
            c->_counted = 0;
            c->ep->outstanding--;
        }
        w->_conn = NULL;
    }
}

void tt_pool_release(tt_conn_t *c, tt_close_reason_t verdict)
{
    tt_pool_t *pool = c->_pool;
    const tt_upstream_conf_t *conf = pool->up->conf;
    TT_ASSERT(c->state == TT_CONN_ACTIVE);
    if (c->_trial) { /* the trial's request reported no outcome: another may be the trial */
        c->_trial = 0;
        tt_breaker_on_abandon(&c->ep->breaker);
    }
    if (verdict == TT_REUSE_OK && c->in != NULL && tt_buf_len(c->in) > 0)
        verdict = TT_CLOSE_STRAY_DATA;
    /* Over TLS, bytes after the response may wait inside OpenSSL, where neither c->in nor epoll
     * shows them: a body sent with a HEAD or 304, or a close_notify. */
    if (verdict == TT_REUSE_OK && c->_tls != NULL && tt_tls_pending(c->_tls)) {
        int state = tt_tls_probe_idle(c->_tls);
        if (state != 0)
            verdict = state > 0 ? TT_CLOSE_STRAY_DATA : TT_CLOSE_PEER_CLOSED;
    }
    if (verdict == TT_REUSE_OK && pool->_shutting_down)
        verdict = TT_CLOSE_SHUTDOWN;
    if (verdict == TT_REUSE_OK && c->ep->state == TT_ENDPOINT_DRAINING)
        verdict = TT_CLOSE_ENDPOINT_REMOVED;
    if (verdict == TT_REUSE_OK && (c->ep->down || c->_uncapped))
        verdict = TT_CLOSE_ENDPOINT_DOWN;
    if (verdict == TT_REUSE_OK && (c->_retired || tt_loop_now(pool->loop) >= c->_retire_at))
        verdict = TT_CLOSE_LIFETIME;
    if (verdict == TT_REUSE_OK && conf->max_requests > 0 &&
        c->requests >= (uint64_t)conf->max_requests)
        verdict = TT_CLOSE_MAX_REQUESTS;
    c->_handler = NULL;
    c->owner = NULL;
    if (verdict != TT_REUSE_OK) {
        tt_conn_close(c, verdict);
        return;
    }
    tt_pool_check_in(pool, c);
}

/* Opens connections for queued requests while capacity allows. */
void tt_pool_service_waiters(tt_pool_t *pool)
{
    while (!tt_list_empty(&pool->_waiters) && tt_pool_reserve_capacity(pool->up) == 0) {
        tt_pool_waiter_t *w = tt_pool_dequeue(pool);
        tt_endpoint_t *ep = tt_pool_pick_endpoint(pool, w->_tried, w->_ntried);
        if (ep == NULL) {
            tt_pool_unreserve_capacity(pool->up);
            w->cb(w, NULL, no_endpoint(pool), NULL);
            continue;
        }
        int err;
        if (tt_conn_open(pool, ep, w, &err) == NULL &&
            !tt_pool_connect_elsewhere(pool, w, ep, &err))
            w->cb(w, NULL, TT_POOL_CONNECT_FAILED,
                  &(tt_pool_error_t){.endpoint = ep->name, .errno_value = err});
    }
}

static size_t warming(const tt_pool_t *pool)
{
    size_t n = 0;
    const tt_list_t *l;
    for (l = pool->_busy.next; l != &pool->_busy; l = l->next) {
        const tt_conn_t *c = tt_container_of(l, tt_conn_t, _link);
        if (c->state == TT_CONN_CONNECTING && c->_waiter == NULL)
            n++;
    }
    return n;
}

/* Keeps this worker's share of min_idle open, so the first requests never pay a handshake. */
void tt_pool_replenish(tt_pool_t *pool)
{
    if (pool->_shutting_down || pool->_min_idle == 0)
        return;
    size_t busy_warming = warming(pool);
    size_t have = pool->_nidle + busy_warming;
    /* Over TLS the first connection alone, then the rest: they resume its session instead of
     * each paying a full handshake. conn_established() calls back here. */
    int one_first = pool->up->tls != NULL && tt_tls_client_awaits_session(pool->up->tls);
    if (one_first && busy_warming > 0)
        return;
    while (have < pool->_min_idle && tt_pool_reserve_capacity(pool->up) == 0) {
        tt_endpoint_t *ep = tt_pool_warm_endpoint(pool);
        if (ep == NULL) {
            tt_pool_unreserve_capacity(pool->up);
            break;
        }
        int err;
        if (tt_conn_open(pool, ep, NULL, &err) == NULL || one_first)
            break;
        have++;
    }
}

/* Closes idle connections beyond what recent demand needs, coldest first. */
static void trim_cb(tt_timer_t *t)
{
    tt_pool_t *pool = tt_container_of(t, tt_pool_t, _trim_timer);
    size_t estimate = TT_MAX(pool->_peak_busy, pool->_prev_peak);
    size_t keep = estimate > pool->_nbusy ? estimate - pool->_nbusy : 0;
    keep = TT_MAX(keep, pool->_min_idle);
    while (pool->_nidle > keep) {
        tt_conn_t *c = tt_container_of(tt_list_last(&pool->_idle), tt_conn_t, _link);
        tt_conn_close(c, TT_CLOSE_TRIMMED);
    }
    pool->_prev_peak = pool->_peak_busy;
    pool->_peak_busy = pool->_nbusy;
    /* Removed endpoints whose last connection has closed since. */
    tt_endpoint_set_reap(&pool->endpoints, NULL, NULL);
    tt_loop_timer_after(pool->loop, &pool->_trim_timer, TRIM_INTERVAL_MS);
}

static void replenish_cb(tt_timer_t *t)
{
    tt_pool_replenish(tt_container_of(t, tt_pool_t, _replenish_timer));
}

/* Replaces closed connections up to min_idle from a timer: at once after an ordinary close, with
 * exponential backoff (100 ms to 6.4 s) while connects fail or die young, so an upstream that is
 * down is not hammered with connects. */
void tt_pool_schedule_replenish(tt_pool_t *pool, int failed)
{
    if (pool->_min_idle == 0)
        return;
    if (failed && pool->_connect_failures < 7)
        pool->_connect_failures++;
    tt_msec_t delay = pool->_connect_failures ? (tt_msec_t)100 << (pool->_connect_failures - 1) : 0;
    if (!tt_timer_armed(&pool->_replenish_timer))
        tt_loop_timer_after(pool->loop, &pool->_replenish_timer, delay);
}

void tt_pool_start(tt_pool_t *pool)
{
    tt_timer_init(&pool->_trim_timer, trim_cb);
    tt_loop_timer_after(pool->loop, &pool->_trim_timer, TRIM_INTERVAL_MS);
    pool->_checking = 1;
    tt_endpoint_checks_sync(pool);
    tt_pool_replenish(pool);
}

void tt_pool_reconfigure(tt_pool_t *pool)
{
    tt_upstream_t *up = pool->up;
    pool->_min_idle = min_idle_share(up, pool->worker);
    tt_pool_endpoints_reconfigure(pool);
    /* Over a lowered max_connections or max_idle: idle connections close, coldest first; an
     * active one finishes its request and is then refused a slot by the ordinary check-in. */
    while (!tt_list_empty(&pool->_idle) &&
           (atomic_load_explicit(&up->nconns, memory_order_acquire) > up->conf->max_connections ||
            atomic_load_explicit(&up->nidle, memory_order_acquire) > up->conf->max_idle)) {
        tt_conn_t *c = tt_container_of(tt_list_last(&pool->_idle), tt_conn_t, _link);
        tt_conn_close(c, TT_CLOSE_TRIMMED);
    }
    /* A raised limit lets queued requests connect, a raised min_idle pre-warms more. */
    tt_pool_service_waiters(pool);
    tt_pool_replenish(pool);
}

void tt_pool_shutdown(tt_pool_t *pool)
{
    pool->_shutting_down = 1;
    pool->_checking = 0;
    tt_endpoint_checks_sync(pool);
    tt_pool_adopt_handoffs(pool);
    tt_loop_timer_stop(pool->loop, &pool->_trim_timer);
    tt_loop_timer_stop(pool->loop, &pool->_replenish_timer);
    while (!tt_list_empty(&pool->_waiters)) {
        tt_pool_waiter_t *w = tt_pool_dequeue(pool);
        w->cb(w, NULL, TT_POOL_SHUTDOWN, NULL);
    }
    while (!tt_list_empty(&pool->_idle))
        tt_conn_close(tt_container_of(tt_list_first(&pool->_idle), tt_conn_t, _link),
                      TT_CLOSE_SHUTDOWN);
    /* Connections still connecting for no request are not needed any more. */
    tt_list_t *l, *tmp;
    tt_list_foreach_safe(l, tmp, &pool->_busy)
    {
        tt_conn_t *c = tt_container_of(l, tt_conn_t, _link);
        if ((c->state == TT_CONN_CONNECTING && c->_waiter == NULL) || c->state == TT_CONN_PROBING)
            tt_conn_close(c, TT_CLOSE_SHUTDOWN);
    }
}

void tt_pool_foreach_conn(tt_pool_t *pool, void (*fn)(const tt_conn_t *c, void *arg), void *arg)
{
    const tt_list_t *l;
    for (l = pool->_idle.next; l != &pool->_idle; l = l->next)
        fn(tt_container_of(l, tt_conn_t, _link), arg);
    for (l = pool->_busy.next; l != &pool->_busy; l = l->next)
        fn(tt_container_of(l, tt_conn_t, _link), arg);
}

typedef struct {
    tt_pool_gauges_t *g;
    tt_msec_t now;
} gauge_walk_t;

static void add_gauges(const tt_conn_t *c, void *arg)
{
    gauge_walk_t *walk = arg;
    tt_pool_gauges_t *g = walk->g;
    if (c->state == TT_CONN_IDLE || c->state == TT_CONN_PROBING)
        g->idle++;
    else if (c->state == TT_CONN_CONNECTING)
        g->connecting++;
    else
        g->active++;
    g->age_sum_ms += walk->now - c->created_at;
    g->socket_mem_bytes += tt_conn_socket_memory(c);
}

void tt_pool_gauges(tt_pool_t *pool, tt_pool_gauges_t *g)
{
    memset(g, 0, sizeof(*g));
    gauge_walk_t walk = {g, tt_loop_now(pool->loop)};
    tt_pool_foreach_conn(pool, add_gauges, &walk);
    g->queued = pool->_nwaiters;
}
