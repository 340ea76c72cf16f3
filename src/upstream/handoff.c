/* Moving idle connections between workers (HAProxy's idle-connection takeover): a worker at the
 * global cap with queued requests asks the others for one of their idle connections, and one that
 * holds clearly more hands its coldest over, socket and TLS state and all: no close, no new
 * handshake. Every cross-thread word is an atomic or the handoff list under its lock; the request
 * path takes no lock. */
#include "upstream/pool_int.h"

#include "core/invariant.h"

#include <stdlib.h>
#include <unistd.h>

/* Tells other workers with queued requests that a connection slot is free. */
void tt_pool_announce_capacity(tt_pool_t *self)
{
    tt_upstream_t *up = self->up;
    if (atomic_load_explicit(&up->nwaiting, memory_order_acquire) <= (int64_t)self->_nwaiters)
        return;
    for (size_t i = 0; i < up->nworkers; i++) {
        tt_pool_t *p = up->pools[i];
        if (p == NULL || p == self)
            continue;
        atomic_store_explicit(&p->_capacity_freed, 1, memory_order_release);
        tt_loop_wakeup(p->loop);
    }
}

/* A takeover request: who asks, and how many connections it holds (so only a worker holding
 * clearly more gives one up, and connections never ping-pong between equals). */
#define TAKEOVER_PACK(worker, size) ((int64_t)(size) << 16 | (int64_t)((worker) + 1))
#define TAKEOVER_WORKER(v)          ((size_t)((v)&0xffff) - 1)
#define TAKEOVER_SIZE(v)            ((size_t)((v) >> 16))

/* Asks the other workers for one of their idle connections, so this worker need not wait for a
 * slot under max_connections. The request stays posted until a worker can honour it. */
void tt_pool_request_takeover(tt_pool_t *self)
{
    tt_upstream_t *up = self->up;
    int64_t v = TAKEOVER_PACK(self->worker, tt_pool_size(self));
    for (size_t i = 0; i < up->nworkers; i++) {
        tt_pool_t *p = up->pools[i];
        if (p == NULL || p == self)
            continue;
        atomic_store_explicit(&p->_takeover_requested, v, memory_order_release);
        tt_loop_wakeup(p->loop);
    }
}

/* Runs after the batch that decided the handover, so no event of that batch can reach the
 * connection once the other worker owns it. */
static void deliver_handoff_cb(tt_deferred_t *d)
{
    tt_conn_t *c = tt_container_of(d, tt_conn_t, _handoff);
    tt_pool_t *to = c->_pool;
    pthread_mutex_lock(&to->_handoff_lock);
    tt_list_push_back(&to->_handoff, &c->_link);
    pthread_mutex_unlock(&to->_handoff_lock);
    tt_loop_wakeup(to->loop);
}

/* Honours a posted takeover request with our coldest idle connection when we hold at least two
 * more connections than the requester did. Without an idle connection the request stays posted
 * and is tried again whenever one becomes idle here. */
void tt_pool_try_hand_over(tt_pool_t *pool)
{
    tt_upstream_t *up = pool->up;
    int64_t v = atomic_load_explicit(&pool->_takeover_requested, memory_order_acquire);
    if (v == 0 || pool->_nidle == 0 || pool->_shutting_down)
        return;
    size_t requester = TAKEOVER_WORKER(v);
    if (requester >= up->nworkers || tt_pool_size(pool) < TAKEOVER_SIZE(v) + 2 ||
        !atomic_load_explicit(&up->pools[requester]->_has_waiters, memory_order_acquire)) {
        atomic_compare_exchange_strong(&pool->_takeover_requested, &v, 0);
        return;
    }
    if (!atomic_compare_exchange_strong(&pool->_takeover_requested, &v, 0))
        return; /* a newer request arrived: decide on that one next time */
    tt_pool_t *to = up->pools[requester];
    tt_conn_t *c = tt_container_of(tt_list_last(&pool->_idle), tt_conn_t, _link);
    tt_list_remove(&c->_link);
    pool->_nidle--;
    /* Endpoint objects are per worker: the adopter finds its own by the socket's peer. */
    c->ep->nidle--;
    c->ep->nconns--;
    c->ep = NULL;
    /* It changes hands, not state: still open, still counted as idle. */
    c->_handoff_fd = c->_io.fd;
    tt_io_stop(pool->loop, &c->_io);
    tt_loop_timer_stop(pool->loop, &c->_timer);
    c->_pool = to;
    tt_loop_defer(pool->loop, &c->_handoff, deliver_handoff_cb);
}

/* Takes in connections handed over by other workers and serves queued requests with them. */
void tt_pool_adopt_handoffs(tt_pool_t *pool)
{
    tt_list_t incoming;
    tt_list_init(&incoming);
    pthread_mutex_lock(&pool->_handoff_lock);
    tt_list_splice_back(&incoming, &pool->_handoff);
    pthread_mutex_unlock(&pool->_handoff_lock);
    while (!tt_list_empty(&incoming)) {
        tt_conn_t *c = tt_container_of(tt_list_first(&incoming), tt_conn_t, _link);
        tt_list_remove(&c->_link);
        int fd = c->_handoff_fd;
        c->_handoff_fd = -1;
        /* Its stamps are the giving worker's cached time, which may be a millisecond ahead of
         * ours: in our time they must not lie in the future, or "idle for now - idle_since"
         * wraps around and the checkout check closes a warm connection as idle_expired. */
        tt_msec_t now = tt_loop_now(pool->loop);
        c->idle_since = TT_MIN(c->idle_since, now);
        c->created_at = TT_MIN(c->created_at, now);
        tt_list_push_front(&pool->_idle, &c->_link);
        pool->_nidle++;
        c->ep = tt_pool_endpoint_of_socket(pool, fd);
        if (c->ep != NULL) {
            c->ep->nidle++;
            c->ep->nconns++;
        }
        if (tt_io_start(pool->loop, &c->_io, fd, EPOLLIN | EPOLLRDHUP, tt_conn_idle_cb) < 0) {
            close(fd);
            tt_conn_close(c, TT_CLOSE_ERROR);
            continue;
        }
        pool->stats.handed_over++;
        if (pool->_shutting_down || c->ep == NULL) {
            tt_conn_close(c, c->ep == NULL ? TT_CLOSE_ENDPOINT_REMOVED : TT_CLOSE_SHUTDOWN);
            continue;
        }
        tt_conn_arm_idle_timer(pool, c);
    }
    while (!tt_list_empty(&pool->_waiters)) {
        tt_conn_t *c = tt_pool_warmest_live_idle(pool, NULL);
        if (c == NULL || tt_list_empty(&pool->_waiters)) /* a close may have served them */
            break;
        tt_pool_waiter_t *w = tt_pool_dequeue(pool);
        tt_conn_lease(pool, c);
        w->cb(w, c, TT_POOL_OK, NULL);
    }
}

void tt_pool_on_wakeup(tt_pool_t *pool)
{
    if (!pool->_shutting_down && tt_pool_endpoints_sync(pool))
        tt_pool_replenish(pool); /* new endpoints get their share of min_idle */
    tt_pool_try_hand_over(pool);
    tt_pool_adopt_handoffs(pool);
    if (atomic_exchange_explicit(&pool->_capacity_freed, 0, memory_order_acq_rel) &&
        !pool->_shutting_down)
        tt_pool_service_waiters(pool);
}

void tt_pool_drop_handoffs(tt_pool_t *pool)
{
    while (!tt_list_empty(&pool->_handoff)) {
        tt_conn_t *c = tt_container_of(tt_list_first(&pool->_handoff), tt_conn_t, _link);
        tt_list_remove(&c->_link);
        tt_tls_free(c->_tls, 0);
        close(c->_handoff_fd);
        atomic_fetch_sub_explicit(&pool->up->nidle, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&pool->up->nconns, 1, memory_order_acq_rel);
        free(c);
    }
}
