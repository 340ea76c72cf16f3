/* One upstream connection's life: connect, TLS handshake, lease, idle watch, its timer, and the
 * one place it is closed; then the transport calls a leased connection's owner uses. */
#include "upstream/conn.h"

#include "core/invariant.h"
#include "core/log.h"
#include "upstream/pool_int.h"

#include <errno.h>
#include <linux/sock_diag.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void conn_connect_cb(tt_io_t *io, uint32_t events);
static void conn_timer_cb(tt_timer_t *t);
static void conn_io_cb(tt_io_t *io, uint32_t events);
static void conn_established(tt_conn_t *c);
static void probe_start(tt_pool_t *pool, tt_conn_t *c);
static void probe_finish(tt_pool_t *pool, tt_conn_t *c, tt_probe_result_t result);

static tt_conn_t *conn_of_io(tt_io_t *io)
{
    return tt_container_of(io, tt_conn_t, _io);
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

static void conn_free_cb(tt_deferred_t *d)
{
    free(tt_container_of(d, tt_conn_t, _free));
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

void tt_conn_close(tt_conn_t *c, tt_close_reason_t reason)
{
    TT_ASSERT(c->state != TT_CONN_CLOSED);
    tt_pool_t *pool = c->_pool;
    tt_upstream_t *up = pool->up;
    TT_ASSERT(c->state == TT_CONN_IDLE ? pool->_nidle > 0 : pool->_nbusy > 0);
    TT_ASSERT(c->state != TT_CONN_CONNECTING || c->in == NULL);
    tt_endpoint_t *ep = c->ep;
    if (c->state == TT_CONN_IDLE) {
        pool->_nidle--;
        atomic_fetch_sub_explicit(&up->nidle, 1, memory_order_relaxed);
        if (ep != NULL)
            ep->nidle--;
    } else {
        pool->_nbusy--;
    }
    if (ep != NULL) {
        ep->nconns--;
        if (c->_counted)
            ep->outstanding--;
        c->_counted = 0;
        /* A trial closed before its outcome (shutdown, endpoint removed, the client gone)
         * decides nothing. */
        if (c->_trial && reason != TT_CLOSE_CONNECT_FAILED && reason != TT_CLOSE_TLS_FAILED)
            tt_breaker_on_abandon(&ep->breaker);
        c->_trial = 0;
    }
    tt_list_remove(&c->_link);
    c->state = TT_CONN_CLOSED;
    if (c->_tls != NULL) {
        tt_tls_free(c->_tls, close_is_orderly(reason));
        c->_tls = NULL;
    }
    tt_io_close(pool->loop, &c->_io);
    tt_loop_timer_stop(pool->loop, &c->_timer);
    tt_buf_release(pool->_bufs, c->in);
    c->in = NULL;
    if (c->_probe != NULL) {
        tt_probe_end(c->_probe);
        free(c->_probe);
        c->_probe = NULL;
    }
    tt_msec_t age = tt_loop_now(pool->loop) - c->created_at;
    pool->stats.conns_closed[reason]++;
    tt_hist_record(&pool->stats.conn_age_ms, age);
    tt_hist_record(&pool->stats.conn_requests, c->requests);
    if (!c->_uncapped)
        atomic_fetch_sub_explicit(&up->nconns, 1, memory_order_acq_rel);
    tt_debug("upstream %s: connection %llu to %s closed: %s (age %llums, %llu requests)",
             up->conf->name, (unsigned long long)c->id, ep ? ep->name : up->addr_str,
             tt_close_reason_name(reason), (unsigned long long)age,
             (unsigned long long)c->requests);
    tt_loop_defer(pool->loop, &c->_free, conn_free_cb);
    tt_pool_announce_capacity(
        pool); /* other workers' queued requests may take the slot, even now */
    if (!pool->_shutting_down) {
        tt_pool_service_waiters(pool);
        tt_pool_schedule_replenish(pool, reason == TT_CLOSE_CONNECT_FAILED ||
                                             reason == TT_CLOSE_TLS_FAILED ||
                                             (reason == TT_CLOSE_PEER_CLOSED && age < 1000));
    }
}

/* Opens a connection to ep under capacity already reserved by the caller. */
tt_conn_t *tt_conn_open(tt_pool_t *pool, tt_endpoint_t *ep, tt_pool_waiter_t *w, int *err)
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
    tt_conn_t *c = tt_calloc(1, sizeof(*c));
    c->_pool = pool;
    c->ep = ep;
    ep->nconns++;
    if (w != NULL) { /* a request is waiting for it: it counts as that request's */
        c->_counted = 1;
        ep->outstanding++;
    }
    /* The trial, if half-open: its request's outcome (or a pre-warming connect's) decides. */
    c->_trial = tt_breaker_state(&ep->breaker, tt_loop_now(pool->loop)) == TT_BREAKER_HALF_OPEN;
    tt_breaker_on_attempt(&ep->breaker, tt_loop_now(pool->loop));
    c->id = atomic_fetch_add_explicit(&up->next_conn_id, 1, memory_order_relaxed) + 1;
    c->state = TT_CONN_CONNECTING;
    c->created_at = tt_loop_now(pool->loop);
    c->_retire_at = TT_TIME_NEVER;
    if (up->conf->max_lifetime > 0) {
        /* +-10% jitter so a fleet of connections does not reconnect at once. */
        tt_msec_t life = (tt_msec_t)up->conf->max_lifetime;
        tt_msec_t spread = life / 5;
        c->_retire_at =
            c->created_at + life - life / 10 + (spread ? pool_random(pool) % spread : 0);
    }
    c->_waiter = w;
    c->_handoff_fd = -1;
    if (w != NULL)
        w->_conn = c;
    tt_list_init(&c->_link);
    tt_list_push_back(&pool->_busy, &c->_link);
    pool->_nbusy++;
    pool->stats.conns_opened++;
    if (pool->_nbusy > pool->_peak_busy)
        pool->_peak_busy = pool->_nbusy;
    tt_timer_init(&c->_timer, conn_timer_cb);
    tt_loop_timer_after(pool->loop, &c->_timer, (tt_msec_t)up->conf->connect_timeout);
    if (tt_io_start(pool->loop, &c->_io, fd, EPOLLOUT, conn_connect_cb) < 0) {
        *err = errno;
        c->_io.fd = -1;
        close(fd);
        if (w != NULL)
            w->_conn = NULL;
        c->_waiter = NULL;
        tt_conn_close(c, TT_CLOSE_CONNECT_FAILED);
        return NULL;
    }
    tt_sock_tune(fd, &up->sockopts);
    return c;
}

void tt_conn_report(tt_conn_t *c, tt_request_outcome_t outcome, const char *why)
{
    tt_pool_t *pool = c->_pool;
    static const tt_eject_cause_t causes[] = {
        [TT_OUTCOME_RESET] = TT_EJECT_RESET,
        [TT_OUTCOME_TIMEOUT] = TT_EJECT_TIMEOUT,
        [TT_OUTCOME_5XX] = TT_EJECT_5XX,
    };
    if (c->ep == NULL)
        return;
    c->_trial = 0;
    if (outcome == TT_OUTCOME_OK)
        tt_pool_endpoint_succeeded(pool, c->ep, "request");
    else
        tt_pool_endpoint_failed(pool, c->ep, causes[outcome], why);
}

/* Arms the connection's timer for the next lease event still due: the warning, then the
 * timeout (each optional, in either order). */
static void arm_lease_timer(tt_pool_t *pool, tt_conn_t *c)
{
    const tt_upstream_conf_t *conf = pool->up->conf;
    tt_msec_t next = TT_TIME_NEVER;
    if (conf->lease_warn > 0 && !c->_lease_warned)
        next = c->leased_at + (tt_msec_t)conf->lease_warn;
    if (conf->lease_timeout > 0)
        next = TT_MIN(next, c->leased_at + (tt_msec_t)conf->lease_timeout);
    if (next != TT_TIME_NEVER)
        tt_timer_start(tt_loop_timers(pool->loop), &c->_timer, next);
}

void tt_conn_lease(tt_pool_t *pool, tt_conn_t *c)
{
    TT_ASSERT(c->state != TT_CONN_CLOSED && c->_pool == pool);
    tt_msec_t now = tt_loop_now(pool->loop);
    if (c->state == TT_CONN_IDLE) {
        tt_list_remove(&c->_link);
        pool->_nidle--;
        atomic_fetch_sub_explicit(&pool->up->nidle, 1, memory_order_relaxed);
        c->ep->nidle--;
        tt_list_push_back(&pool->_busy, &c->_link);
        pool->_nbusy++;
    }
    if (!c->_counted) {
        c->_counted = 1;
        c->ep->outstanding++;
    }
    if (pool->_nbusy > pool->_peak_busy)
        pool->_peak_busy = pool->_nbusy;
    c->state = TT_CONN_ACTIVE;
    c->leased_at = now;
    c->requests++;
    if (c->requests > 1)
        pool->stats.requests_on_reused++;
    c->_waiter = NULL;
    c->_lease_warned = 0;
    if (c->in == NULL)
        c->in = tt_buf_acquire(pool->_bufs);
    tt_loop_timer_stop(pool->loop, &c->_timer);
    arm_lease_timer(pool, c);
}

/* Looks at an idle connection without taking its data. Returns 0 if nothing arrived (over TLS:
 * nothing but session tickets), 1 if the upstream sent bytes, -1 if it closed or reset. */
static int probe_idle(tt_conn_t *c)
{
    if (c->_tls != NULL)
        return tt_tls_probe_idle(c->_tls);
    char byte;
    ssize_t n = recv(c->_io.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 1;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
}

/* Cheap liveness check at checkout: a closed or chattering idle socket is readable. */
tt_close_reason_t tt_conn_checkout_check(tt_pool_t *pool, tt_conn_t *c)
{
    tt_msec_t now = tt_loop_now(pool->loop);
    if (now >= c->_retire_at)
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
    if (state < 0 && c->_tls_unconfirmed) {
        char detail[160];
        tt_conn_tls_refused(c, detail, sizeof(detail));
        return TT_CLOSE_TLS_FAILED;
    }
    if (state < 0)
        tt_upstream_learn_idle_close(pool->up, now - c->idle_since);
    return TT_CLOSE_CHECKOUT_FAILED;
}

/* When an idle connection must close: its idle expiry or its lifetime, whichever is first. */
static tt_msec_t idle_deadline(tt_pool_t *pool, const tt_conn_t *c)
{
    return TT_MIN(c->idle_since + tt_upstream_idle_timeout(pool->up), c->_retire_at);
}

/* The next probe, if probes are on and one can finish before the idle deadline. */
static tt_msec_t next_probe(tt_pool_t *pool, const tt_conn_t *c)
{
    if (pool->up->probe == NULL)
        return TT_TIME_NEVER;
    return tt_probe_next(pool->up->probe, c->idle_since, c->_probed_at, idle_deadline(pool, c));
}

/* Arms an idle connection's timer for its next probe or its idle deadline. */
void tt_conn_arm_idle_timer(tt_pool_t *pool, tt_conn_t *c)
{
    tt_timer_start(tt_loop_timers(pool->loop), &c->_timer,
                   TT_MIN(idle_deadline(pool, c), next_probe(pool, c)));
}

void tt_conn_make_idle(tt_pool_t *pool, tt_conn_t *c)
{
    TT_ASSERT(c->state == TT_CONN_ACTIVE && pool->_nbusy > 0);
    tt_msec_t now = tt_loop_now(pool->loop);
    tt_list_remove(&c->_link);
    pool->_nbusy--;
    tt_list_push_front(&pool->_idle, &c->_link);
    pool->_nidle++;
    c->ep->nidle++;
    if (c->_counted) {
        c->_counted = 0;
        c->ep->outstanding--;
    }
    c->state = TT_CONN_IDLE;
    c->idle_since = now;
    c->_handler = NULL;
    c->owner = NULL;
    tt_buf_release(pool->_bufs, c->in);
    c->in = NULL;
    c->_tls_read_wants_write = c->_tls_write_wants_read = 0;
    if (c->_tls != NULL)
        tt_tls_release_buffers(c->_tls);
    c->_probed_at = 0;
    tt_conn_arm_idle_timer(pool, c);
    c->_io.cb = tt_conn_idle_cb;
    tt_io_set_events(pool->loop, &c->_io, EPOLLIN | EPOLLRDHUP);
    tt_pool_try_hand_over(pool);
}

/* A pre-warming connect (no request waits for it) failed: nobody else would say so. At most one
 * line per 10 s per worker and upstream, with the count of the ones held back. A failed TLS
 * handshake has its own line, once per cause (tt_upstream_tls_failed). */
static void warn_prewarm_failed(tt_pool_t *pool, tt_pool_result_t result,
                                const tt_pool_error_t *err)
{
    unsigned suppressed;
    if (result == TT_POOL_TLS_FAILED ||
        !tt_ratelimit_allow(&pool->_prewarm_warn, tt_loop_now(pool->loop), 10000, &suppressed))
        return;
    const char *why =
        result == TT_POOL_CONNECT_TIMEOUT ? "connect timed out" : strerror(err->errno_value);
    tt_warn("upstream %s (%s): pre-warming a connection (min_idle) failed: %s (%u similar "
            "suppressed)",
            pool->up->conf->name, pool->up->addr_str, why, suppressed);
}

/* Closes a connection that never got established and tells the request waiting for it, unless
 * another endpoint takes the request (nothing of it was sent, so any method may go elsewhere). */
static void conn_open_failed(tt_conn_t *c, tt_close_reason_t reason, tt_pool_result_t result,
                             tt_pool_error_t *err)
{
    tt_pool_t *pool = c->_pool;
    tt_pool_waiter_t *w = c->_waiter;
    tt_endpoint_t *ep = c->ep;
    char name[sizeof(ep->name)];
    memcpy(name, ep->name, sizeof(name));
    c->_waiter = NULL;
    if (w == NULL)
        warn_prewarm_failed(c->_pool, result, err);
    if (w != NULL)
        w->_conn = NULL;
    tt_pool_endpoint_connect_failed(pool, ep, reason, err);
    tt_conn_close(c, reason);
    if (w == NULL)
        return;
    int open_err;
    if (tt_pool_connect_elsewhere(pool, w, ep, &open_err))
        return;
    err->endpoint = name;
    w->cb(w, NULL, result, err);
}

static void conn_tls_failed(tt_conn_t *c, tt_tls_failure_t why, const char *detail)
{
    tt_tls_client_drop_session(c->_pool->up->tls); /* if it offered one, that may be the cause */
    c->_pool->stats.tls_failures[why]++;
    tt_upstream_tls_failed(c->_pool->up, why, detail);
    tt_pool_error_t err = {.tls = why, .detail = detail};
    conn_open_failed(c, TT_CLOSE_TLS_FAILED, TT_POOL_TLS_FAILED, &err);
}

static void conn_handshake_cb(tt_io_t *io, uint32_t events)
{
    tt_conn_t *c = conn_of_io(io);
    tt_pool_t *pool = c->_pool;
    switch (tt_tls_handshake(c->_tls)) {
    case TT_TLS_WANT_READ:
        tt_io_set_events(pool->loop, io, EPOLLIN);
        return;
    case TT_TLS_WANT_WRITE:
        tt_io_set_events(pool->loop, io, EPOLLOUT);
        return;
    case TT_TLS_FAILED: {
        char detail[160];
        tt_tls_failure_t why = tt_tls_failure(c->_tls, detail, sizeof(detail));
        conn_tls_failed(c, why, detail);
        return;
    }
    case TT_TLS_DONE:
        break;
    }
    c->_tls_handshake_us =
        (uint32_t)TT_MIN(tt_clock_monotonic_us() - c->_tls_started_us, UINT32_MAX);
    if (tt_tls_awaits_verdict(c->_tls))
        c->_tls_unconfirmed = 1; /* counted when the upstream answers or sends a ticket */
    else
        tt_conn_tls_established(c);
    conn_established(c);
}

static void conn_connect_cb(tt_io_t *io, uint32_t events)
{
    tt_conn_t *c = conn_of_io(io);
    TT_ASSERT(c->state == TT_CONN_CONNECTING);
    tt_pool_t *pool = c->_pool;
    int err = tt_sock_connect_result(io->fd);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
        if (err == 0)
            err = ECONNREFUSED;
        c->_connect_error = err;
        conn_open_failed(c, TT_CLOSE_CONNECT_FAILED, TT_POOL_CONNECT_FAILED,
                         &(tt_pool_error_t){.errno_value = err});
        return;
    }
    if (pool->up->tls == NULL) {
        conn_established(c);
        return;
    }
    /* TCP is up; the TLS handshake runs under the same connect_timeout. */
    c->_tls = tt_tls_new(pool->up->tls, io->fd);
    if (c->_tls == NULL) {
        conn_tls_failed(c, TT_TLS_FAIL_OTHER, "out of memory");
        return;
    }
    c->_tls_started_us = tt_clock_monotonic_us();
    io->cb = conn_handshake_cb;
    conn_handshake_cb(io, 0);
}

/* The connection is ready for requests: its request gets it, or it joins the pool. */
static void conn_established(tt_conn_t *c)
{
    tt_pool_t *pool = c->_pool;
    tt_pool_waiter_t *w = c->_waiter;
    tt_loop_timer_stop(pool->loop, &c->_timer);
    pool->_connect_failures = 0;
    if (w == NULL && c->_trial) { /* no request on it: the connect was the trial */
        c->_trial = 0;
        tt_pool_endpoint_succeeded(pool, c->ep, "connect");
    }
    if (w != NULL) {
        w->_conn = NULL;
        tt_conn_lease(pool, c);
        w->cb(w, c, TT_POOL_OK, NULL);
        return;
    }
    /* Pre-warmed, or its request went away: offer it to the queue or keep it idle. */
    c->state = TT_CONN_ACTIVE;
    if (pool->_shutting_down) {
        tt_conn_close(c, TT_CLOSE_SHUTDOWN);
        return;
    }
    tt_pool_check_in(pool, c);
    if (c->_tls != NULL)
        tt_pool_replenish(
            pool); /* the rest of min_idle, now that a session may be there to resume */
}

void tt_conn_idle_cb(tt_io_t *io, uint32_t events)
{
    tt_conn_t *c = conn_of_io(io);
    tt_pool_t *pool = c->_pool;
    int state = probe_idle(c);
    if (state == 0 && !(events & (EPOLLERR | EPOLLHUP))) {
        if (c->_tls != NULL) { /* session tickets were read: the read buffer is not needed now */
            if (c->_tls_unconfirmed && !tt_tls_awaits_verdict(c->_tls))
                tt_conn_tls_established(c); /* a ticket after client authentication: accepted */
            tt_tls_release_buffers(c->_tls);
        }
        return;
    }
    if (state < 0 && c->_tls_unconfirmed) {
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
static void probe_finish(tt_pool_t *pool, tt_conn_t *c, tt_probe_result_t result)
{
    pool->stats.probes[result]++;
    tt_probe_end(c->_probe);
    free(c->_probe);
    c->_probe = NULL;
    tt_buf_release(pool->_bufs, c->in);
    c->in = NULL;
    if (result != TT_PROBE_OK) {
        tt_debug("upstream %s: connection %llu to %s: probe failed (%s)", pool->up->conf->name,
                 (unsigned long long)c->id, c->ep->name, tt_probe_result_name(result));
        tt_conn_close(c, TT_CLOSE_PROBE_FAILED);
        return;
    }
    if (pool->_shutting_down || c->ep->state == TT_ENDPOINT_DRAINING || c->ep->down) {
        tt_conn_close(c, pool->_shutting_down ? TT_CLOSE_SHUTDOWN
                         : c->ep->down        ? TT_CLOSE_ENDPOINT_DOWN
                                              : TT_CLOSE_ENDPOINT_REMOVED);
        return;
    }
    if (tt_pool_claim(pool, c))
        return;
    tt_list_remove(&c->_link);
    pool->_nbusy--;
    tt_list_push_front(&pool->_idle, &c->_link);
    pool->_nidle++;
    c->ep->nidle++;
    c->state = TT_CONN_IDLE;
    if (c->_tls != NULL)
        tt_tls_release_buffers(c->_tls);
    c->_io.cb = tt_conn_idle_cb;
    tt_io_set_events(pool->loop, &c->_io, EPOLLIN | EPOLLRDHUP);
    tt_conn_arm_idle_timer(pool, c);
}

static void conn_probe_cb(tt_io_t *io, uint32_t events)
{
    tt_conn_t *c = conn_of_io(io);
    tt_pool_t *pool = c->_pool;
    uint8_t readable = 1;
    while (readable) {
        ssize_t n = tt_conn_read(c, c->in, &readable);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            probe_finish(pool, c, tt_probe_closed(c->_probe));
            return;
        }
        if (n < 0)
            return;
        tt_probe_result_t result;
        int decided = tt_probe_feed(c->_probe, tt_buf_rptr(c->in), (size_t)n, &result);
        c->in->rpos = c->in->wpos = 0; /* the judge keeps what it needs */
        if (decided) {
            probe_finish(pool, c, result);
            return;
        }
    }
}

/* Sends a probe on an idle connection, taking it off the idle list meanwhile. */
static void probe_start(tt_pool_t *pool, tt_conn_t *c)
{
    tt_upstream_t *up = pool->up;
    tt_msec_t now = tt_loop_now(pool->loop);
    tt_list_remove(&c->_link);
    pool->_nidle--;
    c->ep->nidle--;
    atomic_fetch_sub_explicit(&up->nidle, 1, memory_order_relaxed);
    tt_list_push_back(&pool->_busy, &c->_link);
    pool->_nbusy++;
    c->state = TT_CONN_PROBING;
    c->_probed_at = now;
    c->in = tt_buf_acquire(pool->_bufs);
    c->_probe = tt_malloc(sizeof(*c->_probe));
    tt_buf_t req = {0};
    tt_probe_begin(c->_probe, up->probe, up->host_header, now, &req);
    /* A few dozen bytes on an idle socket: they fit in its send buffer, or the path is bad. */
    ssize_t sent = tt_conn_send(c, req.data, req.wpos);
    int complete = sent == (ssize_t)req.wpos;
    free(req.data);
    if (!complete) {
        probe_finish(pool, c, TT_PROBE_CLOSED);
        return;
    }
    c->_io.cb = conn_probe_cb;
    tt_io_set_events(pool->loop, &c->_io, EPOLLIN | EPOLLRDHUP);
    tt_timer_start(tt_loop_timers(pool->loop), &c->_timer, c->_probe->deadline);
}

static void conn_timer_cb(tt_timer_t *t)
{
    tt_conn_t *c = tt_container_of(t, tt_conn_t, _timer);
    tt_pool_t *pool = c->_pool;
    const tt_upstream_conf_t *conf = pool->up->conf;
    switch (c->state) {
    case TT_CONN_CONNECTING:
        if (c->_tls != NULL) {
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
        tt_conn_close(c, now >= c->_retire_at ? TT_CLOSE_LIFETIME : TT_CLOSE_IDLE_EXPIRED);
        return;
    }
    case TT_CONN_PROBING:
        probe_finish(pool, c, TT_PROBE_TIMEOUT);
        return;
    case TT_CONN_ACTIVE: {
        if (c->_handler == NULL)
            return;
        tt_msec_t held = tt_loop_now(pool->loop) - c->leased_at;
        if (conf->lease_warn > 0 && !c->_lease_warned && held >= (tt_msec_t)conf->lease_warn) {
            c->_lease_warned = 1;
            c->_handler(c, TT_CONN_EV_LEASE_WARN);
        }
        if (conf->lease_timeout > 0 && held >= (tt_msec_t)conf->lease_timeout) {
            c->_handler(c, TT_CONN_EV_LEASE_TIMEOUT); /* the owner closes the connection */
            return;
        }
        arm_lease_timer(pool, c);
        return;
    }
    case TT_CONN_CLOSED:
        break;
    }
}

void tt_conn_set_handler(tt_conn_t *c, tt_conn_handler_t handler, void *owner, uint32_t events)
{
    c->_handler = handler;
    c->owner = owner;
    c->_io.cb = conn_io_cb;
    tt_conn_set_events(c, events);
}

void tt_conn_set_events(tt_conn_t *c, uint32_t events)
{
    /* TLS turns the direction round now and then: a read may first have to write (a key
     * update), a write may first have to read. */
    if (c->_tls_read_wants_write && (events & EPOLLIN))
        events |= EPOLLOUT;
    if (c->_tls_write_wants_read && (events & EPOLLOUT))
        events |= EPOLLIN | EPOLLRDHUP;
    tt_io_set_events(c->_pool->loop, &c->_io, events);
}

static void conn_io_cb(tt_io_t *io, uint32_t events)
{
    tt_conn_t *c = conn_of_io(io);
    c->_handler(c, events);
}

uint64_t tt_conn_socket_memory(const tt_conn_t *c)
{
    uint32_t mem[SK_MEMINFO_VARS] = {0};
    socklen_t len = sizeof(mem);
    if (c->_io.fd < 0 || getsockopt(c->_io.fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0)
        return 0;
    return (uint64_t)mem[SK_MEMINFO_RMEM_ALLOC] + mem[SK_MEMINFO_WMEM_QUEUED] +
           mem[SK_MEMINFO_FWD_ALLOC] + mem[SK_MEMINFO_OPTMEM] + mem[SK_MEMINFO_BACKLOG];
}

int tt_conn_plain_fd(const tt_conn_t *c)
{
    return c->_tls == NULL ? c->_io.fd : -1;
}

ssize_t tt_conn_read(tt_conn_t *c, tt_buf_t *b, uint8_t *readable)
{
    if (c->_tls == NULL)
        return tt_buf_fill(b, c->_io.fd, readable);
    if (tt_buf_room(b) == 0)
        tt_buf_compact(b);
    ssize_t n = tt_tls_read(c->_tls, tt_buf_wptr(b), tt_buf_room(b), readable);
    c->_tls_read_wants_write = n < 0 && errno == EAGAIN && tt_tls_wants_write(c->_tls);
    if (n > 0) {
        b->wpos += (size_t)n;
        if (c->_tls_unconfirmed) /* it answered: it accepted us */
            tt_conn_tls_established(c);
    }
    return n;
}

ssize_t tt_conn_send(tt_conn_t *c, const void *p, size_t len)
{
    return tt_conn_send_pair(c, p, len, NULL, 0);
}

ssize_t tt_conn_send_pair(tt_conn_t *c, const void *p, size_t len, const void *more,
                          size_t more_len)
{
    if (c->_tls == NULL) {
        struct iovec iov[2] = {{(void *)p, len}, {(void *)more, more_len}};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = more_len > 0 ? 2 : 1};
        ssize_t n;
        do {
            n = sendmsg(c->_io.fd, &msg, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        return n;
    }
    /* One TLS record at a time: the rest goes on the next call. */
    ssize_t n = tt_tls_write(c->_tls, p, len);
    c->_tls_write_wants_read = n < 0 && errno == EAGAIN && !tt_tls_wants_write(c->_tls);
    return n;
}

void tt_conn_tls_established(tt_conn_t *c)
{
    tt_pool_t *pool = c->_pool;
    c->_tls_unconfirmed = 0;
    if (tt_tls_resumed(c->_tls))
        pool->stats.tls_resumed++;
    else
        pool->stats.tls_full++;
    tt_hist_record(&pool->stats.tls_handshake_us, c->_tls_handshake_us);
    tt_upstream_tls_succeeded(pool->up);
}

tt_tls_failure_t tt_conn_tls_refused(tt_conn_t *c, char *detail, size_t len)
{
    tt_tls_failure_t why = tt_tls_failure(c->_tls, detail, len);
    c->_tls_unconfirmed = 0;
    c->_pool->stats.tls_failures[why]++;
    tt_upstream_tls_failed(c->_pool->up, why, detail);
    return why;
}

const char *tt_conn_tls_failure(tt_conn_t *c, int err, char *buf, size_t len)
{
    if (c->_tls == NULL)
        return NULL;
    if (err != EPROTO && c->_tls_unconfirmed) {
        char scratch[64];
        uint8_t more;
        if (tt_tls_read(c->_tls, scratch, sizeof(scratch), &more) < 0 && errno == EPROTO)
            err = EPROTO;
    }
    if (err == TT_TLS_ETRUNCATED)
        return "closed without a TLS close_notify";
    if (err != EPROTO)
        return NULL;
    char detail[160];
    if (c->_tls_unconfirmed) { /* the upstream refused the handshake after all */
        tt_tls_failure_t why = tt_conn_tls_refused(c, detail, sizeof(detail));
        snprintf(buf, len, TT_CONN_TLS_ERROR ": %s (%s)", tt_tls_failure_phrase(why), detail);
    } else {
        tt_tls_failure(c->_tls, detail, sizeof(detail));
        snprintf(buf, len, TT_CONN_TLS_ERROR " (%s)", detail);
    }
    return buf;
}
