#include "upstream/pool.h"

#include "core/invariant.h"
#include "core/log.h"
#include "upstream/pool_endpoints.h"

#include <errno.h>
#include <linux/sock_diag.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TRIM_INTERVAL_MS 5000

static void conn_connect_cb(tt_io_t *io, uint32_t events);
static void probe_start(tt_pool_t *pool, tt_upconn_t *c);
static void probe_finish(tt_pool_t *pool, tt_upconn_t *c, tt_probe_result_t result);
static void arm_idle_timer(tt_pool_t *pool, tt_upconn_t *c);
static tt_pool_waiter_t *dequeue(tt_pool_t *pool);
static void conn_idle_cb(tt_io_t *io, uint32_t events);
static void conn_timer_cb(tt_timer_t *t);
static void conn_io_cb(tt_io_t *io, uint32_t events);
static void service_waiters(tt_pool_t *pool);
static void replenish(tt_pool_t *pool);
static void replenish_cb(tt_timer_t *t);
static void schedule_replenish(tt_pool_t *pool, int failed);
static void adopt_handoffs(tt_pool_t *pool);
static void try_hand_over(tt_pool_t *pool);

/* Lets other workers see whether this pool still has queued requests, so a takeover request of
 * ours that is no longer needed is dropped instead of moving a connection. */
static void publish_waiting(tt_pool_t *pool)
{
    atomic_store_explicit(&pool->has_waiters, pool->nwaiters > 0, memory_order_release);
}

static tt_upconn_t *conn_of_io(tt_io_t *io)
{
    return tt_container_of(io, tt_upconn_t, io);
}

static uint64_t pool_random(tt_pool_t *pool)
{
    /* xorshift64*, seeded per pool: only spreads deadlines, never security-relevant. */
    static _Thread_local uint64_t state;
    if (state == 0)
        state = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)(uintptr_t)pool << 7) ^ tt_loop_now(pool->loop);
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
}

void tt_pool_init(tt_pool_t *pool, tt_upstream_t *up, tt_loop_t *loop, tt_bufpool_t *bufs,
                  size_t worker)
{
    memset(pool, 0, sizeof(*pool));
    pool->up = up;
    pool->loop = loop;
    pool->bufs = bufs;
    pool->worker = worker;
    tt_list_init(&pool->idle);
    tt_list_init(&pool->busy);
    tt_list_init(&pool->waiters);
    /* Spread min_idle over workers, the remainder to the first ones. */
    size_t n = up->nworkers, total = (size_t)up->conf->min_idle;
    pool->min_idle = total / n + (worker < total % n ? 1 : 0);
    tt_timer_init(&pool->trim_timer, NULL);
    tt_timer_init(&pool->replenish_timer, replenish_cb);
    pthread_mutex_init(&pool->handoff_lock, NULL);
    tt_list_init(&pool->handoff);
    tt_pool_endpoints_init(pool);
}

void tt_pool_destroy(tt_pool_t *pool)
{
    TT_ASSERT(tt_list_empty(&pool->idle) && tt_list_empty(&pool->busy));
    /* A handover that arrived after this worker's loop stopped: nobody will adopt it. */
    while (!tt_list_empty(&pool->handoff)) {
        tt_upconn_t *c = tt_container_of(tt_list_first(&pool->handoff), tt_upconn_t, link);
        tt_list_remove(&c->link);
        tt_tls_free(c->tls, 0);
        close(c->_handoff_fd);
        atomic_fetch_sub_explicit(&pool->up->nidle, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&pool->up->nconns, 1, memory_order_acq_rel);
        free(c);
    }
    pthread_mutex_destroy(&pool->handoff_lock);
    tt_pool_endpoints_destroy(pool);
}

/* ---- connection lifecycle ---------------------------------------------------------------- */

static void conn_free_cb(tt_deferred_t *d)
{
    free(tt_container_of(d, tt_upconn_t, _free));
}

static int reserve_capacity(tt_upstream_t *up)
{
    int64_t n = atomic_fetch_add_explicit(&up->nconns, 1, memory_order_acq_rel);
    if (n < up->conf->max_connections)
        return 0;
    atomic_fetch_sub_explicit(&up->nconns, 1, memory_order_acq_rel);
    return -1;
}

/* Tells other workers with queued requests that a connection slot is free. */
static void announce_capacity(tt_pool_t *self)
{
    tt_upstream_t *up = self->up;
    if (atomic_load_explicit(&up->nwaiting, memory_order_acquire) <= (int64_t)self->nwaiters)
        return;
    for (size_t i = 0; i < up->nworkers; i++) {
        tt_pool_t *p = up->pools[i];
        if (p == NULL || p == self)
            continue;
        atomic_store_explicit(&p->capacity_freed, 1, memory_order_release);
        tt_loop_wakeup(p->loop);
    }
}

/* Whether the connection is healthy and closed by tether's choice, so a TLS close_notify is due
 * (the upstream then logs an orderly close, not a truncation). */
static int close_is_orderly(tt_close_reason_t reason)
{
    switch (reason) {
    case TT_CLOSE_IDLE_EXPIRED:
    case TT_CLOSE_LIFETIME:
    case TT_CLOSE_MAX_REQUESTS:
    case TT_CLOSE_NOT_KEEPALIVE:
    case TT_CLOSE_UPGRADED:
    case TT_CLOSE_POOL_FULL:
    case TT_CLOSE_TRIMMED:
    case TT_CLOSE_SHUTDOWN:
        return 1;
    default:
        return 0;
    }
}

void tt_conn_close(tt_upconn_t *c, tt_close_reason_t reason)
{
    TT_ASSERT(c->state != TT_CONN_CLOSED);
    tt_pool_t *pool = c->pool;
    tt_upstream_t *up = pool->up;
    tt_endpoint_t *ep = c->ep;
    if (c->state == TT_CONN_IDLE) {
        pool->nidle--;
        atomic_fetch_sub_explicit(&up->nidle, 1, memory_order_relaxed);
        if (ep != NULL)
            ep->nidle--;
    } else {
        pool->nbusy--;
    }
    if (ep != NULL) {
        ep->nconns--;
        if (c->counted)
            ep->outstanding--;
        c->counted = 0;
        /* A connect closed before its outcome (shutdown, endpoint removed) decides nothing. */
        if (c->state == TT_CONN_CONNECTING && reason != TT_CLOSE_CONNECT_FAILED &&
            reason != TT_CLOSE_TLS_FAILED)
            tt_breaker_on_abandon(&ep->breaker);
    }
    tt_list_remove(&c->link);
    c->state = TT_CONN_CLOSED;
    if (c->tls != NULL) {
        tt_tls_free(c->tls, close_is_orderly(reason));
        c->tls = NULL;
    }
    tt_io_close(pool->loop, &c->io);
    tt_loop_timer_stop(pool->loop, &c->timer);
    tt_buf_release(pool->bufs, c->in);
    c->in = NULL;
    if (c->probe != NULL) {
        tt_probe_end(c->probe);
        free(c->probe);
        c->probe = NULL;
    }
    tt_msec_t age = tt_loop_now(pool->loop) - c->created_at;
    pool->stats.conns_closed[reason]++;
    tt_hist_record(&pool->stats.conn_age_ms, age);
    tt_hist_record(&pool->stats.conn_requests, c->requests);
    atomic_fetch_sub_explicit(&up->nconns, 1, memory_order_acq_rel);
    tt_debug("upstream %s: connection %llu to %s closed: %s (age %llums, %llu requests)",
             up->conf->name, (unsigned long long)c->id, ep ? ep->name : up->addr_str,
             tt_close_reason_name(reason), (unsigned long long)age,
             (unsigned long long)c->requests);
    tt_loop_defer(pool->loop, &c->_free, conn_free_cb);
    announce_capacity(pool); /* other workers' queued requests may take the slot, even now */
    if (!pool->shutting_down) {
        service_waiters(pool);
        schedule_replenish(pool, reason == TT_CLOSE_CONNECT_FAILED ||
                                     reason == TT_CLOSE_TLS_FAILED ||
                                     (reason == TT_CLOSE_PEER_CLOSED && age < 1000));
    }
}

/* Gives back a connection slot reserved for a connection that will not be opened. */
static void unreserve_capacity(tt_upstream_t *up)
{
    atomic_fetch_sub_explicit(&up->nconns, 1, memory_order_acq_rel);
}

/* Opens a connection to ep under capacity already reserved by the caller. */
static tt_upconn_t *conn_open(tt_pool_t *pool, tt_endpoint_t *ep, tt_pool_waiter_t *w, int *err)
{
    tt_upstream_t *up = pool->up;
    int fd = tt_sock_connect(&ep->addr);
    if (fd < 0) {
        *err = errno;
        atomic_fetch_sub_explicit(&up->nconns, 1, memory_order_acq_rel);
        pool->stats.conns_opened++; /* an attempt, so opened == closed + live holds */
        pool->stats.conns_closed[TT_CLOSE_CONNECT_FAILED]++;
        return NULL;
    }
    tt_upconn_t *c = tt_calloc(1, sizeof(*c));
    c->pool = pool;
    c->ep = ep;
    ep->nconns++;
    tt_breaker_on_attempt(&ep->breaker, tt_loop_now(pool->loop)); /* the trial, if half-open */
    if (w != NULL) { /* a request is waiting for it: it counts as that request's */
        c->counted = 1;
        ep->outstanding++;
    }
    c->id = atomic_fetch_add_explicit(&up->next_conn_id, 1, memory_order_relaxed) + 1;
    c->state = TT_CONN_CONNECTING;
    c->created_at = tt_loop_now(pool->loop);
    c->retire_at = TT_TIME_NEVER;
    if (up->conf->max_lifetime > 0) {
        /* +-10% jitter so a fleet of connections does not reconnect at once. */
        tt_msec_t life = (tt_msec_t)up->conf->max_lifetime;
        tt_msec_t spread = life / 5;
        c->retire_at = c->created_at + life - life / 10 + (spread ? pool_random(pool) % spread : 0);
    }
    c->waiter = w;
    c->_handoff_fd = -1;
    if (w != NULL)
        w->_conn = c;
    tt_list_init(&c->link);
    tt_list_push_back(&pool->busy, &c->link);
    pool->nbusy++;
    pool->stats.conns_opened++;
    if (pool->nbusy > pool->peak_busy)
        pool->peak_busy = pool->nbusy;
    tt_timer_init(&c->timer, conn_timer_cb);
    tt_loop_timer_after(pool->loop, &c->timer, (tt_msec_t)up->conf->connect_timeout);
    if (tt_io_start(pool->loop, &c->io, fd, EPOLLOUT, conn_connect_cb) < 0) {
        *err = errno;
        c->io.fd = -1;
        close(fd);
        if (w != NULL)
            w->_conn = NULL;
        c->waiter = NULL;
        tt_conn_close(c, TT_CLOSE_CONNECT_FAILED);
        return NULL;
    }
    tt_sock_tune(fd, &up->sockopts);
    return c;
}

/* Arms the connection's timer for the next lease event still due: the warning, then the
 * timeout (each optional, in either order). */
static void arm_lease_timer(tt_pool_t *pool, tt_upconn_t *c)
{
    const tt_upstream_conf_t *conf = pool->up->conf;
    tt_msec_t next = TT_TIME_NEVER;
    if (conf->lease_warn > 0 && !c->lease_warned)
        next = c->leased_at + (tt_msec_t)conf->lease_warn;
    if (conf->lease_timeout > 0)
        next = TT_MIN(next, c->leased_at + (tt_msec_t)conf->lease_timeout);
    if (next != TT_TIME_NEVER)
        tt_timer_start(tt_loop_timers(pool->loop), &c->timer, next);
}

static void lease(tt_pool_t *pool, tt_upconn_t *c)
{
    tt_msec_t now = tt_loop_now(pool->loop);
    if (c->state == TT_CONN_IDLE) {
        tt_list_remove(&c->link);
        pool->nidle--;
        atomic_fetch_sub_explicit(&pool->up->nidle, 1, memory_order_relaxed);
        c->ep->nidle--;
        tt_list_push_back(&pool->busy, &c->link);
        pool->nbusy++;
    }
    if (!c->counted) {
        c->counted = 1;
        c->ep->outstanding++;
    }
    if (pool->nbusy > pool->peak_busy)
        pool->peak_busy = pool->nbusy;
    c->state = TT_CONN_ACTIVE;
    c->leased_at = now;
    c->requests++;
    if (c->requests > 1)
        pool->stats.requests_on_reused++;
    c->waiter = NULL;
    c->lease_warned = 0;
    if (c->in == NULL)
        c->in = tt_buf_acquire(pool->bufs);
    tt_loop_timer_stop(pool->loop, &c->timer);
    arm_lease_timer(pool, c);
}

/* Looks at an idle connection without taking its data. Returns 0 if nothing arrived (over TLS:
 * nothing but session tickets), 1 if the upstream sent bytes, -1 if it closed or reset. */
static int probe_idle(tt_upconn_t *c)
{
    if (c->tls != NULL)
        return tt_tls_probe_idle(c->tls);
    char byte;
    ssize_t n = recv(c->io.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 1;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
}

/* Cheap liveness check at checkout: a closed or chattering idle socket is readable. */
static tt_close_reason_t checkout_check(tt_pool_t *pool, tt_upconn_t *c)
{
    tt_msec_t now = tt_loop_now(pool->loop);
    if (now >= c->retire_at)
        return TT_CLOSE_LIFETIME;
    if (now - c->idle_since >= tt_upstream_idle_timeout(pool->up))
        return TT_CLOSE_IDLE_EXPIRED;
    /* Released this very millisecond: the idle watch has had no chance to miss a close yet,
     * and the peer has had no time to time it out. Skip the syscall on the hot path. */
    if (now == c->idle_since)
        return TT_REUSE_OK;
    int state = probe_idle(c);
    if (state == 0)
        return TT_REUSE_OK;
    if (state < 0 && c->tls_unconfirmed) {
        char detail[160];
        tt_conn_tls_refused(c, detail, sizeof(detail));
        return TT_CLOSE_TLS_FAILED;
    }
    if (state < 0)
        tt_upstream_learn_idle_close(pool->up, now - c->idle_since);
    return TT_CLOSE_CHECKOUT_FAILED;
}

/* The warmest idle connection to ep (any endpoint when NULL) that passes its checkout check,
 * left idle; the ones that fail are closed on the way. NULL when none is left. The idle list is
 * shared by the endpoints; ep->nidle stops the walk once ep has none, and with connections spread
 * over E endpoints the first match is about E steps from the warm end. */
static tt_upconn_t *warmest_live_idle(tt_pool_t *pool, tt_endpoint_t *ep)
{
    tt_list_t *l = pool->idle.next;
    while (l != &pool->idle && (ep == NULL || ep->nidle > 0)) {
        tt_upconn_t *c = tt_container_of(l, tt_upconn_t, link);
        l = l->next;
        if (ep != NULL && c->ep != ep)
            continue;
        tt_close_reason_t why = checkout_check(pool, c);
        if (why == TT_REUSE_OK)
            return c;
        tt_conn_close(c, why);
    }
    return NULL;
}

/* When an idle connection must close: its idle expiry or its lifetime, whichever is first. */
static tt_msec_t idle_deadline(tt_pool_t *pool, const tt_upconn_t *c)
{
    return TT_MIN(c->idle_since + tt_upstream_idle_timeout(pool->up), c->retire_at);
}

/* The next probe, if probes are on and one can finish before the idle deadline. */
static tt_msec_t next_probe(tt_pool_t *pool, const tt_upconn_t *c)
{
    if (pool->up->probe == NULL)
        return TT_TIME_NEVER;
    return tt_probe_next(pool->up->probe, c->idle_since, c->probed_at, idle_deadline(pool, c));
}

/* Arms an idle connection's timer for its next probe or its idle deadline. */
static void arm_idle_timer(tt_pool_t *pool, tt_upconn_t *c)
{
    tt_timer_start(tt_loop_timers(pool->loop), &c->timer,
                   TT_MIN(idle_deadline(pool, c), next_probe(pool, c)));
}

static void make_idle(tt_pool_t *pool, tt_upconn_t *c)
{
    tt_msec_t now = tt_loop_now(pool->loop);
    tt_list_remove(&c->link);
    pool->nbusy--;
    tt_list_push_front(&pool->idle, &c->link);
    pool->nidle++;
    c->ep->nidle++;
    if (c->counted) {
        c->counted = 0;
        c->ep->outstanding--;
    }
    c->state = TT_CONN_IDLE;
    c->idle_since = now;
    c->handler = NULL;
    c->owner = NULL;
    tt_buf_release(pool->bufs, c->in);
    c->in = NULL;
    c->tls_read_wants_write = c->tls_write_wants_read = 0;
    if (c->tls != NULL)
        tt_tls_release_buffers(c->tls);
    c->probed_at = 0;
    arm_idle_timer(pool, c);
    c->io.cb = conn_idle_cb;
    tt_io_set_events(pool->loop, &c->io, EPOLLIN | EPOLLRDHUP);
    try_hand_over(pool);
}

/* Takes the first queued request off the queue, recording how long it waited. */
static tt_pool_waiter_t *dequeue(tt_pool_t *pool)
{
    tt_pool_waiter_t *w = tt_container_of(tt_list_first(&pool->waiters), tt_pool_waiter_t, _link);
    tt_list_remove(&w->_link);
    pool->nwaiters--;
    publish_waiting(pool);
    atomic_fetch_sub_explicit(&pool->up->nwaiting, 1, memory_order_relaxed);
    tt_loop_timer_stop(pool->loop, &w->_timer);
    tt_hist_record(&pool->stats.queue_wait_us, (tt_loop_now(pool->loop) - w->_queued_at) * 1000);
    return w;
}

/* Hands a connection to the first queued request, or keeps it idle; closes it if neither. */
static void check_in(tt_pool_t *pool, tt_upconn_t *c)
{
    if (c->ep->state == TT_ENDPOINT_DRAINING) {
        tt_conn_close(c, TT_CLOSE_ENDPOINT_REMOVED);
        return;
    }
    if (!tt_list_empty(&pool->waiters)) {
        tt_pool_waiter_t *w = dequeue(pool);
        lease(pool, c); /* stays on the busy list; lease() counts the new request */
        w->cb(w, c, TT_POOL_OK, NULL);
        return;
    }
    int64_t idle = atomic_fetch_add_explicit(&pool->up->nidle, 1, memory_order_relaxed);
    if (idle >= pool->up->conf->max_idle) {
        atomic_fetch_sub_explicit(&pool->up->nidle, 1, memory_order_relaxed);
        tt_conn_close(c, TT_CLOSE_POOL_FULL);
        return;
    }
    make_idle(pool, c);
}

/* Closes a connection that never got established and tells the request waiting for it. */
static int connect_elsewhere(tt_pool_t *pool, tt_pool_waiter_t *w, tt_endpoint_t *failed, int *err);

/* Closes a connection that never got established and tells the request waiting for it, unless
 * another endpoint takes the request (nothing of it was sent, so any method may go elsewhere). */
static void conn_open_failed(tt_upconn_t *c, tt_close_reason_t reason, tt_pool_result_t result,
                             tt_pool_error_t *err)
{
    tt_pool_t *pool = c->pool;
    tt_pool_waiter_t *w = c->waiter;
    tt_endpoint_t *ep = c->ep;
    char name[sizeof(ep->name)];
    memcpy(name, ep->name, sizeof(name));
    c->waiter = NULL;
    if (w != NULL)
        w->_conn = NULL;
    tt_pool_endpoint_failed(pool, ep, reason, err->errno_value);
    tt_conn_close(c, reason);
    if (w == NULL)
        return;
    int open_err;
    if (connect_elsewhere(pool, w, ep, &open_err))
        return;
    err->endpoint = name;
    w->cb(w, NULL, result, err);
}

static void conn_tls_failed(tt_upconn_t *c, tt_tls_failure_t why, const char *detail)
{
    tt_tls_client_drop_session(c->pool->up->tls); /* if it offered one, that may be the cause */
    c->pool->stats.tls_failures[why]++;
    tt_upstream_tls_failed(c->pool->up, why, detail);
    tt_pool_error_t err = {.tls = why, .detail = detail};
    conn_open_failed(c, TT_CLOSE_TLS_FAILED, TT_POOL_TLS_FAILED, &err);
}

static void conn_established(tt_upconn_t *c);

static void conn_handshake_cb(tt_io_t *io, uint32_t events)
{
    tt_upconn_t *c = conn_of_io(io);
    tt_pool_t *pool = c->pool;
    switch (tt_tls_handshake(c->tls)) {
    case TT_TLS_WANT_READ:
        tt_io_set_events(pool->loop, io, EPOLLIN);
        return;
    case TT_TLS_WANT_WRITE:
        tt_io_set_events(pool->loop, io, EPOLLOUT);
        return;
    case TT_TLS_FAILED: {
        char detail[160];
        tt_tls_failure_t why = tt_tls_failure(c->tls, detail, sizeof(detail));
        conn_tls_failed(c, why, detail);
        return;
    }
    case TT_TLS_DONE:
        break;
    }
    c->tls_handshake_us = (uint32_t)TT_MIN(tt_clock_monotonic_us() - c->tls_started_us, UINT32_MAX);
    if (tt_tls_awaits_verdict(c->tls))
        c->tls_unconfirmed = 1; /* counted when the upstream answers or sends a ticket */
    else
        tt_conn_tls_established(c);
    conn_established(c);
}

static void conn_connect_cb(tt_io_t *io, uint32_t events)
{
    tt_upconn_t *c = conn_of_io(io);
    tt_pool_t *pool = c->pool;
    int err = tt_sock_connect_result(io->fd);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
        if (err == 0)
            err = ECONNREFUSED;
        c->connect_error = err;
        conn_open_failed(c, TT_CLOSE_CONNECT_FAILED, TT_POOL_CONNECT_FAILED,
                         &(tt_pool_error_t){.errno_value = err});
        return;
    }
    if (pool->up->tls == NULL) {
        conn_established(c);
        return;
    }
    /* TCP is up; the TLS handshake runs under the same connect_timeout. */
    c->tls = tt_tls_new(pool->up->tls, io->fd);
    if (c->tls == NULL) {
        conn_tls_failed(c, TT_TLS_FAIL_OTHER, "out of memory");
        return;
    }
    c->tls_started_us = tt_clock_monotonic_us();
    io->cb = conn_handshake_cb;
    conn_handshake_cb(io, 0);
}

/* The connection is ready for requests: its request gets it, or it joins the pool. */
static void conn_established(tt_upconn_t *c)
{
    tt_pool_t *pool = c->pool;
    tt_pool_waiter_t *w = c->waiter;
    tt_loop_timer_stop(pool->loop, &c->timer);
    pool->connect_failures = 0;
    tt_pool_endpoint_succeeded(pool, c->ep);
    if (w != NULL) {
        w->_conn = NULL;
        lease(pool, c);
        w->cb(w, c, TT_POOL_OK, NULL);
        return;
    }
    /* Pre-warmed, or its request went away: offer it to the queue or keep it idle. */
    c->state = TT_CONN_ACTIVE;
    if (pool->shutting_down) {
        tt_conn_close(c, TT_CLOSE_SHUTDOWN);
        return;
    }
    check_in(pool, c);
    if (c->tls != NULL)
        replenish(pool); /* the rest of min_idle, now that a session may be there to resume */
}

static void conn_idle_cb(tt_io_t *io, uint32_t events)
{
    tt_upconn_t *c = conn_of_io(io);
    tt_pool_t *pool = c->pool;
    int state = probe_idle(c);
    if (state == 0 && !(events & (EPOLLERR | EPOLLHUP))) {
        if (c->tls != NULL) { /* session tickets were read: the read buffer is not needed now */
            if (c->tls_unconfirmed && !tt_tls_awaits_verdict(c->tls))
                tt_conn_tls_established(c); /* a ticket after client authentication: accepted */
            tt_tls_release_buffers(c->tls);
        }
        return;
    }
    if (state < 0 && c->tls_unconfirmed) {
        char detail[160];
        tt_conn_tls_refused(c, detail, sizeof(detail));
        tt_conn_close(c, TT_CLOSE_TLS_FAILED);
        return;
    }
    if (state > 0) {
        tt_conn_close(c, TT_CLOSE_STRAY_DATA);
        return;
    }
    tt_upstream_learn_idle_close(pool->up, tt_loop_now(pool->loop) - c->idle_since);
    tt_conn_close(c, TT_CLOSE_PEER_CLOSED);
}

/* ---- probes of idle connections (health/probe.h) ----------------------------------------- */

/* The probe's answer is in (or it failed): back to the idle list with its idle clock unchanged,
 * or closed. A request queued meanwhile takes it at once. */
static void probe_finish(tt_pool_t *pool, tt_upconn_t *c, tt_probe_result_t result)
{
    pool->stats.probes[result]++;
    tt_probe_end(c->probe);
    free(c->probe);
    c->probe = NULL;
    tt_buf_release(pool->bufs, c->in);
    c->in = NULL;
    if (result != TT_PROBE_OK) {
        tt_debug("upstream %s: connection %llu to %s: probe failed (%s)", pool->up->conf->name,
                 (unsigned long long)c->id, c->ep->name, tt_probe_result_name(result));
        tt_conn_close(c, TT_CLOSE_PROBE_FAILED);
        return;
    }
    if (pool->shutting_down || c->ep->state == TT_ENDPOINT_DRAINING) {
        tt_conn_close(c, pool->shutting_down ? TT_CLOSE_SHUTDOWN : TT_CLOSE_ENDPOINT_REMOVED);
        return;
    }
    if (!tt_list_empty(&pool->waiters)) {
        tt_pool_waiter_t *w = dequeue(pool);
        c->state = TT_CONN_ACTIVE;
        lease(pool, c);
        w->cb(w, c, TT_POOL_OK, NULL);
        return;
    }
    int64_t idle = atomic_fetch_add_explicit(&pool->up->nidle, 1, memory_order_relaxed);
    if (idle >= pool->up->conf->max_idle) {
        atomic_fetch_sub_explicit(&pool->up->nidle, 1, memory_order_relaxed);
        tt_conn_close(c, TT_CLOSE_POOL_FULL);
        return;
    }
    tt_list_remove(&c->link);
    pool->nbusy--;
    tt_list_push_front(&pool->idle, &c->link);
    pool->nidle++;
    c->ep->nidle++;
    c->state = TT_CONN_IDLE;
    if (c->tls != NULL)
        tt_tls_release_buffers(c->tls);
    c->io.cb = conn_idle_cb;
    tt_io_set_events(pool->loop, &c->io, EPOLLIN | EPOLLRDHUP);
    arm_idle_timer(pool, c);
}

static void conn_probe_cb(tt_io_t *io, uint32_t events)
{
    tt_upconn_t *c = conn_of_io(io);
    tt_pool_t *pool = c->pool;
    uint8_t readable = 1;
    while (readable) {
        ssize_t n = tt_conn_read(c, c->in, &readable);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            probe_finish(pool, c, tt_probe_closed(c->probe));
            return;
        }
        if (n < 0)
            return;
        tt_probe_result_t result;
        int decided = tt_probe_feed(c->probe, tt_buf_rptr(c->in), (size_t)n, &result);
        c->in->rpos = c->in->wpos = 0; /* the judge keeps what it needs */
        if (decided) {
            probe_finish(pool, c, result);
            return;
        }
    }
}

/* Sends a probe on an idle connection, taking it off the idle list meanwhile. */
static void probe_start(tt_pool_t *pool, tt_upconn_t *c)
{
    tt_upstream_t *up = pool->up;
    tt_msec_t now = tt_loop_now(pool->loop);
    tt_list_remove(&c->link);
    pool->nidle--;
    c->ep->nidle--;
    atomic_fetch_sub_explicit(&up->nidle, 1, memory_order_relaxed);
    tt_list_push_back(&pool->busy, &c->link);
    pool->nbusy++;
    c->state = TT_CONN_PROBING;
    c->probed_at = now;
    c->in = tt_buf_acquire(pool->bufs);
    c->probe = tt_malloc(sizeof(*c->probe));
    tt_buf_t req = {0};
    tt_probe_begin(c->probe, up->probe, up->host_header, now, &req);
    /* A few dozen bytes on an idle socket: they fit in its send buffer, or the path is bad. */
    ssize_t sent = tt_conn_send(c, req.data, req.wpos);
    int complete = sent == (ssize_t)req.wpos;
    free(req.data);
    if (!complete) {
        probe_finish(pool, c, TT_PROBE_CLOSED);
        return;
    }
    c->io.cb = conn_probe_cb;
    tt_io_set_events(pool->loop, &c->io, EPOLLIN | EPOLLRDHUP);
    tt_timer_start(tt_loop_timers(pool->loop), &c->timer, c->probe->deadline);
}

static void conn_timer_cb(tt_timer_t *t)
{
    tt_upconn_t *c = tt_container_of(t, tt_upconn_t, timer);
    tt_pool_t *pool = c->pool;
    const tt_upstream_conf_t *conf = pool->up->conf;
    switch (c->state) {
    case TT_CONN_CONNECTING:
        if (c->tls != NULL) {
            char detail[96];
            snprintf(detail, sizeof(detail), "not done within connect_timeout (%lldms)",
                     (long long)conf->connect_timeout);
            conn_tls_failed(c, TT_TLS_FAIL_TIMEOUT, detail);
            return;
        }
        conn_open_failed(c, TT_CLOSE_CONNECT_FAILED, TT_POOL_CONNECT_TIMEOUT,
                         &(tt_pool_error_t){.errno_value = ETIMEDOUT});
        return;
    case TT_CONN_IDLE: {
        tt_msec_t now = tt_loop_now(pool->loop);
        if (now < idle_deadline(pool, c) && now >= next_probe(pool, c)) {
            probe_start(pool, c);
            return;
        }
        tt_conn_close(c, now >= c->retire_at ? TT_CLOSE_LIFETIME : TT_CLOSE_IDLE_EXPIRED);
        return;
    }
    case TT_CONN_PROBING:
        probe_finish(pool, c, TT_PROBE_TIMEOUT);
        return;
    case TT_CONN_ACTIVE: {
        if (c->handler == NULL)
            return;
        tt_msec_t held = tt_loop_now(pool->loop) - c->leased_at;
        if (conf->lease_warn > 0 && !c->lease_warned && held >= (tt_msec_t)conf->lease_warn) {
            c->lease_warned = 1;
            c->handler(c, TT_CONN_EV_LEASE_WARN);
        }
        if (conf->lease_timeout > 0 && held >= (tt_msec_t)conf->lease_timeout) {
            c->handler(c, TT_CONN_EV_LEASE_TIMEOUT); /* the owner closes the connection */
            return;
        }
        arm_lease_timer(pool, c);
        return;
    }
    case TT_CONN_CLOSED:
        break;
    }
}

void tt_conn_set_handler(tt_upconn_t *c, tt_conn_handler_t handler, void *owner, uint32_t events)
{
    c->handler = handler;
    c->owner = owner;
    c->io.cb = conn_io_cb;
    tt_conn_set_events(c, events);
}

void tt_conn_set_events(tt_upconn_t *c, uint32_t events)
{
    /* TLS turns the direction round now and then: a read may first have to write (a key
     * update), a write may first have to read. */
    if (c->tls_read_wants_write && (events & EPOLLIN))
        events |= EPOLLOUT;
    if (c->tls_write_wants_read && (events & EPOLLOUT))
        events |= EPOLLIN | EPOLLRDHUP;
    tt_io_set_events(c->pool->loop, &c->io, events);
}

static void conn_io_cb(tt_io_t *io, uint32_t events)
{
    tt_upconn_t *c = conn_of_io(io);
    c->handler(c, events);
}

/* ---- acquire and release --------------------------------------------------------------------- */

static void queue_timer_cb(tt_timer_t *t)
{
    tt_pool_waiter_t *w = tt_container_of(t, tt_pool_waiter_t, _timer);
    tt_pool_t *pool = w->_pool;
    tt_list_remove(&w->_link);
    pool->nwaiters--;
    publish_waiting(pool);
    atomic_fetch_sub_explicit(&pool->up->nwaiting, 1, memory_order_relaxed);
    pool->stats.rejected[TT_REJECT_QUEUE_TIMEOUT]++;
    w->cb(w, NULL, TT_POOL_QUEUE_TIMEOUT, NULL);
}

/* A takeover request: who asks, and how many connections it holds (so only a worker holding
 * clearly more gives one up, and connections never ping-pong between equals). */
#define TAKEOVER_PACK(worker, size) ((int64_t)(size) << 16 | (int64_t)((worker) + 1))
#define TAKEOVER_WORKER(v)          ((size_t)((v)&0xffff) - 1)
#define TAKEOVER_SIZE(v)            ((size_t)((v) >> 16))

/* Asks the other workers for one of their idle connections, so this worker need not wait for a
 * slot under max_connections. The request stays posted until a worker can honour it. */
static void request_takeover(tt_pool_t *self)
{
    tt_upstream_t *up = self->up;
    int64_t v = TAKEOVER_PACK(self->worker, tt_pool_size(self));
    for (size_t i = 0; i < up->nworkers; i++) {
        tt_pool_t *p = up->pools[i];
        if (p == NULL || p == self)
            continue;
        atomic_store_explicit(&p->takeover_requested, v, memory_order_release);
        tt_loop_wakeup(p->loop);
    }
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
    tt_list_push_back(&pool->waiters, &w->_link);
    pool->nwaiters++;
    publish_waiting(pool);
    pool->stats.queued++;
    w->_queued_at = tt_loop_now(pool->loop);
    tt_timer_init(&w->_timer, queue_timer_cb);
    tt_loop_timer_after(pool->loop, &w->_timer, (tt_msec_t)up->conf->queue_timeout);
    /* At the cap: a worker holding few of the connections would wait on the others' traffic
     * for a slot. Ask for one of their idle connections instead. */
    request_takeover(pool);
    return TT_POOL_WAIT;
}

/* Another endpoint for a request whose connect to failed did not work out: up to
 * connect_retries others, each tried once. Opens the connection (or queues the request when the
 * upstream is at its cap) and returns 1; 0 when there is none left to try. *err is the errno of
 * the last connect that failed at once. */
static int connect_elsewhere(tt_pool_t *pool, tt_pool_waiter_t *w, tt_endpoint_t *failed, int *err)
{
    const tt_upstream_conf_t *conf = pool->up->conf;
    if (failed != NULL && w->_ntried < TT_POOL_MAX_TRIES)
        w->_tried[w->_ntried++] = failed;
    while (!pool->shutting_down && w->_ntried <= conf->connect_retries &&
           w->_ntried < TT_POOL_MAX_TRIES) {
        tt_endpoint_t *ep = tt_pool_pick_endpoint(pool, w->_tried, w->_ntried);
        if (ep == NULL)
            return 0;
        pool->stats.connect_failovers++;
        tt_debug("upstream %s: connect to %s failed; trying %s", conf->name,
                 failed != NULL ? failed->name : "?", ep->name);
        if (reserve_capacity(pool->up) < 0)
            return enqueue(pool, w) == TT_POOL_WAIT;
        if (conn_open(pool, ep, w, err) != NULL)
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

tt_pool_result_t tt_pool_acquire(tt_pool_t *pool, tt_pool_waiter_t *w, int flags,
                                 tt_upconn_t **conn)
{
    w->_pool = pool;
    w->_conn = NULL;
    w->_ntried = 0;
    tt_list_init(&w->_link);
    if (pool->shutting_down)
        return TT_POOL_SHUTDOWN;
    tt_endpoint_t *ep = tt_pool_pick_endpoint(pool, NULL, 0);
    if (ep == NULL)
        return no_endpoint(pool);
    tt_upconn_t *c = NULL;
    if (!(flags & TT_ACQUIRE_FRESH) && (c = warmest_live_idle(pool, ep)) != NULL) {
        lease(pool, c);
        *conn = c;
        return TT_POOL_OK;
    }
    if (!tt_list_empty(&pool->waiters) || reserve_capacity(pool->up) < 0) {
        /* At the cap: a warm connection to another endpoint beats waiting for a slot. */
        if (!(flags & TT_ACQUIRE_FRESH) && tt_list_empty(&pool->waiters) &&
            (c = warmest_live_idle(pool, NULL)) != NULL) {
            lease(pool, c);
            *conn = c;
            return TT_POOL_OK;
        }
        return enqueue(pool, w);
    }
    int err;
    if (conn_open(pool, ep, w, &err) != NULL)
        return TT_POOL_WAIT;
    if (connect_elsewhere(pool, w, ep, &err))
        return TT_POOL_WAIT;
    errno = err;
    return TT_POOL_CONNECT_FAILED;
}

void tt_pool_cancel(tt_pool_waiter_t *w)
{
    tt_pool_t *pool = w->_pool;
    if (pool == NULL)
        return;
    if (tt_list_linked(&w->_link)) {
        tt_list_remove(&w->_link);
        pool->nwaiters--;
        publish_waiting(pool);
        atomic_fetch_sub_explicit(&pool->up->nwaiting, 1, memory_order_relaxed);
        tt_loop_timer_stop(pool->loop, &w->_timer);
    }
    if (w->_conn != NULL) { /* it will join the pool when it connects */
        tt_upconn_t *c = w->_conn;
        c->waiter = NULL;
        if (c->counted) {
            c->counted = 0;
            c->ep->outstanding--;
        }
        w->_conn = NULL;
    }
}

void tt_pool_release(tt_upconn_t *c, tt_close_reason_t verdict)
{
    tt_pool_t *pool = c->pool;
    const tt_upstream_conf_t *conf = pool->up->conf;
    TT_ASSERT(c->state == TT_CONN_ACTIVE);
    if (verdict == TT_REUSE_OK && c->in != NULL && tt_buf_len(c->in) > 0)
        verdict = TT_CLOSE_STRAY_DATA;
    /* Over TLS, bytes after the response may wait inside OpenSSL, where neither c->in nor epoll
     * shows them: a body sent with a HEAD or 304, or a close_notify. */
    if (verdict == TT_REUSE_OK && c->tls != NULL && tt_tls_pending(c->tls)) {
        int state = tt_tls_probe_idle(c->tls);
        if (state != 0)
            verdict = state > 0 ? TT_CLOSE_STRAY_DATA : TT_CLOSE_PEER_CLOSED;
    }
    if (verdict == TT_REUSE_OK && pool->shutting_down)
        verdict = TT_CLOSE_SHUTDOWN;
    if (verdict == TT_REUSE_OK && c->ep->state == TT_ENDPOINT_DRAINING)
        verdict = TT_CLOSE_ENDPOINT_REMOVED;
    if (verdict == TT_REUSE_OK && (c->retired || tt_loop_now(pool->loop) >= c->retire_at))
        verdict = TT_CLOSE_LIFETIME;
    if (verdict == TT_REUSE_OK && conf->max_requests > 0 &&
        c->requests >= (uint64_t)conf->max_requests)
        verdict = TT_CLOSE_MAX_REQUESTS;
    c->handler = NULL;
    c->owner = NULL;
    if (verdict != TT_REUSE_OK) {
        tt_conn_close(c, verdict);
        return;
    }
    check_in(pool, c);
}

/* Opens connections for queued requests while capacity allows. */
static void service_waiters(tt_pool_t *pool)
{
    while (!tt_list_empty(&pool->waiters) && reserve_capacity(pool->up) == 0) {
        tt_pool_waiter_t *w = dequeue(pool);
        tt_endpoint_t *ep = tt_pool_pick_endpoint(pool, w->_tried, w->_ntried);
        if (ep == NULL) {
            unreserve_capacity(pool->up);
            w->cb(w, NULL, no_endpoint(pool), NULL);
            continue;
        }
        int err;
        if (conn_open(pool, ep, w, &err) == NULL && !connect_elsewhere(pool, w, ep, &err))
            w->cb(w, NULL, TT_POOL_CONNECT_FAILED,
                  &(tt_pool_error_t){.endpoint = ep->name, .errno_value = err});
    }
}

static size_t warming(const tt_pool_t *pool)
{
    size_t n = 0;
    const tt_list_t *l;
    for (l = pool->busy.next; l != &pool->busy; l = l->next) {
        const tt_upconn_t *c = tt_container_of(l, tt_upconn_t, link);
        if (c->state == TT_CONN_CONNECTING && c->waiter == NULL)
            n++;
    }
    return n;
}

/* Keeps this worker's share of min_idle open, so the first requests never pay a handshake. */
static void replenish(tt_pool_t *pool)
{
    if (pool->shutting_down || pool->min_idle == 0)
        return;
    size_t busy_warming = warming(pool);
    size_t have = pool->nidle + busy_warming;
    /* Over TLS the first connection alone, then the rest: they resume its session instead of
     * each paying a full handshake. conn_established() calls back here. */
    int one_first = pool->up->tls != NULL && tt_tls_client_awaits_session(pool->up->tls);
    if (one_first && busy_warming > 0)
        return;
    while (have < pool->min_idle && reserve_capacity(pool->up) == 0) {
        tt_endpoint_t *ep = tt_pool_warm_endpoint(pool);
        if (ep == NULL) {
            unreserve_capacity(pool->up);
            break;
        }
        int err;
        if (conn_open(pool, ep, NULL, &err) == NULL || one_first)
            break;
        have++;
    }
}

/* Closes idle connections beyond what recent demand needs, coldest first. */
static void trim_cb(tt_timer_t *t)
{
    tt_pool_t *pool = tt_container_of(t, tt_pool_t, trim_timer);
    size_t estimate = TT_MAX(pool->peak_busy, pool->prev_peak);
    size_t keep = estimate > pool->nbusy ? estimate - pool->nbusy : 0;
    keep = TT_MAX(keep, pool->min_idle);
    while (pool->nidle > keep) {
        tt_upconn_t *c = tt_container_of(tt_list_last(&pool->idle), tt_upconn_t, link);
        tt_conn_close(c, TT_CLOSE_TRIMMED);
    }
    pool->prev_peak = pool->peak_busy;
    pool->peak_busy = pool->nbusy;
    /* Removed endpoints whose last connection has closed since. */
    tt_endpoint_set_reap(&pool->endpoints, NULL, NULL);
    tt_loop_timer_after(pool->loop, &pool->trim_timer, TRIM_INTERVAL_MS);
}

static void replenish_cb(tt_timer_t *t)
{
    replenish(tt_container_of(t, tt_pool_t, replenish_timer));
}

/* Replaces closed connections up to min_idle from a timer: at once after an ordinary close, with
 * exponential backoff (100 ms to 6.4 s) while connects fail or die young, so an upstream that is
 * down is not hammered with connects. */
static void schedule_replenish(tt_pool_t *pool, int failed)
{
    if (pool->min_idle == 0)
        return;
    if (failed && pool->connect_failures < 7)
        pool->connect_failures++;
    tt_msec_t delay = pool->connect_failures ? (tt_msec_t)100 << (pool->connect_failures - 1) : 0;
    if (!tt_timer_armed(&pool->replenish_timer))
        tt_loop_timer_after(pool->loop, &pool->replenish_timer, delay);
}

void tt_pool_start(tt_pool_t *pool)
{
    tt_timer_init(&pool->trim_timer, trim_cb);
    tt_loop_timer_after(pool->loop, &pool->trim_timer, TRIM_INTERVAL_MS);
    replenish(pool);
}

void tt_pool_shutdown(tt_pool_t *pool)
{
    pool->shutting_down = 1;
    adopt_handoffs(pool);
    tt_loop_timer_stop(pool->loop, &pool->trim_timer);
    tt_loop_timer_stop(pool->loop, &pool->replenish_timer);
    while (!tt_list_empty(&pool->waiters)) {
        tt_pool_waiter_t *w = dequeue(pool);
        w->cb(w, NULL, TT_POOL_SHUTDOWN, NULL);
    }
    while (!tt_list_empty(&pool->idle))
        tt_conn_close(tt_container_of(tt_list_first(&pool->idle), tt_upconn_t, link),
                      TT_CLOSE_SHUTDOWN);
    /* Connections still connecting for no request are not needed any more. */
    tt_list_t *l, *tmp;
    tt_list_foreach_safe(l, tmp, &pool->busy)
    {
        tt_upconn_t *c = tt_container_of(l, tt_upconn_t, link);
        if ((c->state == TT_CONN_CONNECTING && c->waiter == NULL) || c->state == TT_CONN_PROBING)
            tt_conn_close(c, TT_CLOSE_SHUTDOWN);
    }
}

/* Runs after the batch that decided the handover, so no event of that batch can reach the
 * connection once the other worker owns it. */
static void deliver_handoff_cb(tt_deferred_t *d)
{
    tt_upconn_t *c = tt_container_of(d, tt_upconn_t, _handoff);
    tt_pool_t *to = c->pool;
    pthread_mutex_lock(&to->handoff_lock);
    tt_list_push_back(&to->handoff, &c->link);
    pthread_mutex_unlock(&to->handoff_lock);
    tt_loop_wakeup(to->loop);
}

/* Honours a posted takeover request with our coldest idle connection when we hold at least two
 * more connections than the requester did. Without an idle connection the request stays posted
 * and is tried again whenever one becomes idle here. */
static void try_hand_over(tt_pool_t *pool)
{
    tt_upstream_t *up = pool->up;
    int64_t v = atomic_load_explicit(&pool->takeover_requested, memory_order_acquire);
    if (v == 0 || pool->nidle == 0 || pool->shutting_down)
        return;
    size_t requester = TAKEOVER_WORKER(v);
    if (requester >= up->nworkers || tt_pool_size(pool) < TAKEOVER_SIZE(v) + 2 ||
        !atomic_load_explicit(&up->pools[requester]->has_waiters, memory_order_acquire)) {
        atomic_compare_exchange_strong(&pool->takeover_requested, &v, 0);
        return;
    }
    if (!atomic_compare_exchange_strong(&pool->takeover_requested, &v, 0))
        return; /* a newer request arrived: decide on that one next time */
    tt_pool_t *to = up->pools[requester];
    tt_upconn_t *c = tt_container_of(tt_list_last(&pool->idle), tt_upconn_t, link);
    tt_list_remove(&c->link);
    pool->nidle--;
    /* Endpoint objects are per worker: the adopter finds its own by the socket's peer. */
    c->ep->nidle--;
    c->ep->nconns--;
    c->ep = NULL;
    /* It changes hands, not state: still open, still counted as idle. */
    c->_handoff_fd = c->io.fd;
    tt_io_stop(pool->loop, &c->io);
    tt_loop_timer_stop(pool->loop, &c->timer);
    c->pool = to;
    tt_loop_defer(pool->loop, &c->_handoff, deliver_handoff_cb);
}

/* Takes in connections handed over by other workers and serves queued requests with them. */
static void adopt_handoffs(tt_pool_t *pool)
{
    tt_list_t incoming;
    tt_list_init(&incoming);
    pthread_mutex_lock(&pool->handoff_lock);
    tt_list_splice_back(&incoming, &pool->handoff);
    pthread_mutex_unlock(&pool->handoff_lock);
    while (!tt_list_empty(&incoming)) {
        tt_upconn_t *c = tt_container_of(tt_list_first(&incoming), tt_upconn_t, link);
        tt_list_remove(&c->link);
        int fd = c->_handoff_fd;
        c->_handoff_fd = -1;
        tt_list_push_front(&pool->idle, &c->link);
        pool->nidle++;
        c->ep = tt_pool_endpoint_of_socket(pool, fd);
        if (c->ep != NULL) {
            c->ep->nidle++;
            c->ep->nconns++;
        }
        if (tt_io_start(pool->loop, &c->io, fd, EPOLLIN | EPOLLRDHUP, conn_idle_cb) < 0) {
            close(fd);
            tt_conn_close(c, TT_CLOSE_ERROR);
            continue;
        }
        pool->stats.handed_over++;
        if (pool->shutting_down || c->ep == NULL) {
            tt_conn_close(c, c->ep == NULL ? TT_CLOSE_ENDPOINT_REMOVED : TT_CLOSE_SHUTDOWN);
            continue;
        }
        arm_idle_timer(pool, c);
    }
    while (!tt_list_empty(&pool->waiters)) {
        tt_upconn_t *c = warmest_live_idle(pool, NULL);
        if (c == NULL || tt_list_empty(&pool->waiters)) /* a close may have served them */
            break;
        tt_pool_waiter_t *w = dequeue(pool);
        lease(pool, c);
        w->cb(w, c, TT_POOL_OK, NULL);
    }
}

void tt_pool_on_wakeup(tt_pool_t *pool)
{
    if (!pool->shutting_down && tt_pool_endpoints_sync(pool))
        replenish(pool); /* new endpoints get their share of min_idle */
    try_hand_over(pool);
    adopt_handoffs(pool);
    if (atomic_exchange_explicit(&pool->capacity_freed, 0, memory_order_acq_rel) &&
        !pool->shutting_down)
        service_waiters(pool);
}

void tt_pool_foreach_conn(tt_pool_t *pool, void (*fn)(const tt_upconn_t *c, void *arg), void *arg)
{
    const tt_list_t *l;
    for (l = pool->idle.next; l != &pool->idle; l = l->next)
        fn(tt_container_of(l, tt_upconn_t, link), arg);
    for (l = pool->busy.next; l != &pool->busy; l = l->next)
        fn(tt_container_of(l, tt_upconn_t, link), arg);
}

uint64_t tt_conn_socket_memory(const tt_upconn_t *c)
{
    uint32_t mem[SK_MEMINFO_VARS] = {0};
    socklen_t len = sizeof(mem);
    if (c->io.fd < 0 || getsockopt(c->io.fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0)
        return 0;
    return (uint64_t)mem[SK_MEMINFO_RMEM_ALLOC] + mem[SK_MEMINFO_WMEM_QUEUED] +
           mem[SK_MEMINFO_FWD_ALLOC] + mem[SK_MEMINFO_OPTMEM] + mem[SK_MEMINFO_BACKLOG];
}

typedef struct {
    tt_pool_gauges_t *g;
    tt_msec_t now;
} gauge_walk_t;

static void add_gauges(const tt_upconn_t *c, void *arg)
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
    g->queued = pool->nwaiters;
}
