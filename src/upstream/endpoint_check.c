/* Active health checks of one worker's endpoints (health_check = GET /healthz): a timer per
 * endpoint, and for each check a connection of its own — TCP, then TLS for an https upstream —
 * that sends one request with "Connection: close", has its head judged (health/check.h) and is
 * closed. The rise/fall hysteresis decides when the endpoint goes down or comes back
 * (tt_pool_endpoint_health, pool_endpoints.c). Each worker checks its own view of the endpoints:
 * see docs/internals/health.md for that choice and its cost. */
#include "core/invariant.h"
#include "core/log.h"
#include "core/rand.h"
#include "upstream/pool_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { CHECK_WAITING, CHECK_CONNECTING, CHECK_HANDSHAKE, CHECK_READING } check_phase_t;

struct tt_endpoint_check {
    tt_pool_t *pool;
    tt_endpoint_t *ep;
    tt_timer_t timer; /* the next check, or the deadline of the one out */
    tt_io_t io;
    tt_tls_t *tls;
    tt_judge_t judge;
    tt_buf_t req; /* the request, built once */
    size_t sent;  /* of req, on the connection out */
    check_phase_t phase;
    tt_health_t health;
    tt_rand_t rng; /* jitter: spreads schedules, nothing more */
};

static void check_io_cb(tt_io_t *io, uint32_t events);

/* The next check after delay ms, +-10% (tt_check_next_delay). */
static void schedule(tt_endpoint_check_t *k, tt_msec_t delay)
{
    k->phase = CHECK_WAITING;
    tt_loop_timer_after(k->pool->loop, &k->timer,
                        tt_check_next_delay(delay, tt_rand_next(&k->rng)));
}

/* Ends the check out (if any): its socket, TLS and judge go. */
static void check_close(tt_endpoint_check_t *k)
{
    if (k->phase == CHECK_WAITING)
        return;
    if (k->tls != NULL) {
        tt_tls_free(k->tls, 0);
        k->tls = NULL;
    }
    tt_io_close(k->pool->loop, &k->io);
    if (k->phase == CHECK_READING)
        tt_judge_free(&k->judge);
    k->phase = CHECK_WAITING;
}

static void check_done(tt_endpoint_check_t *k, tt_health_result_t result, const char *why)
{
    tt_pool_t *pool = k->pool;
    check_close(k);
    tt_loop_timer_stop(pool->loop, &k->timer);
    pool->stats.health_checks[result]++;
    tt_debug("upstream %s: endpoint %s: health check %s%s%s", pool->up->conf->name, k->ep->name,
             tt_health_result_name(result), why ? ": " : "", why ? why : "");
    tt_msec_t now = tt_loop_now(pool->loop);
    /* A half-open breaker with no trial request out takes the check as its trial. */
    if (tt_breaker_state(&k->ep->breaker, now) == TT_BREAKER_HALF_OPEN &&
        tt_breaker_allows(&k->ep->breaker, now)) {
        tt_breaker_on_attempt(&k->ep->breaker, now);
        if (result == TT_HEALTH_OK)
            tt_pool_endpoint_succeeded(pool, k->ep, "health check");
        else
            tt_pool_endpoint_failed(pool, k->ep, TT_EJECT_HEALTH_CHECK,
                                    tt_health_result_name(result));
    }
    int was_up = k->health.up;
    if (tt_health_record(&k->health, &pool->up->check->hysteresis, result == TT_HEALTH_OK, now))
        tt_pool_endpoint_health(pool, k->ep, !was_up, why);
    schedule(k, pool->up->check->interval);
}

static void send_request(tt_endpoint_check_t *k)
{
    while (k->sent < k->req.wpos) {
        ssize_t n =
            k->tls ? tt_tls_write(k->tls, k->req.data + k->sent, k->req.wpos - k->sent)
                   : send(k->io.fd, k->req.data + k->sent, k->req.wpos - k->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            tt_io_set_events(k->pool->loop, &k->io, EPOLLOUT | EPOLLIN);
            return;
        }
        if (n <= 0) {
            check_done(k, TT_HEALTH_CLOSED, "send failed");
            return;
        }
        k->sent += (size_t)n;
    }
    tt_io_set_events(k->pool->loop, &k->io, EPOLLIN | EPOLLRDHUP);
}

static void read_answer(tt_endpoint_check_t *k)
{
    char buf[4096];
    for (;;) {
        uint8_t more = 0;
        ssize_t n = k->tls ? tt_tls_read(k->tls, buf, sizeof(buf), &more)
                           : recv(k->io.fd, buf, sizeof(buf), 0);
        tt_judge_verdict_t v;
        if (n > 0)
            v = tt_judge_feed(&k->judge, buf, (size_t)n);
        else if (n < 0 && errno == EAGAIN && !more)
            return;
        else
            v = tt_judge_eof(&k->judge);
        if (v == TT_JUDGE_AGAIN)
            continue;
        static _Thread_local char why[48];
        tt_health_result_t r = tt_health_result_of(&k->judge);
        if (r == TT_HEALTH_STATUS)
            snprintf(why, sizeof(why), "status %u", tt_judge_status(&k->judge));
        else
            snprintf(why, sizeof(why), "%s", r == TT_HEALTH_OK ? "" : tt_judge_reason(&k->judge));
        check_done(k, r, r == TT_HEALTH_OK ? NULL : why);
        return;
    }
}

static void start_exchange(tt_endpoint_check_t *k)
{
    tt_judge_init(&k->judge, &k->pool->up->check->expect, 0,
                  strcmp(k->pool->up->check->line.method, "HEAD") == 0);
    k->phase = CHECK_READING;
    k->sent = 0;
    send_request(k);
}

static void handshake(tt_endpoint_check_t *k)
{
    switch (tt_tls_handshake(k->tls)) {
    case TT_TLS_WANT_READ:
        tt_io_set_events(k->pool->loop, &k->io, EPOLLIN);
        return;
    case TT_TLS_WANT_WRITE:
        tt_io_set_events(k->pool->loop, &k->io, EPOLLOUT);
        return;
    case TT_TLS_FAILED: {
        char detail[160];
        tt_health_result_t r = TT_HEALTH_TLS_FAILED;
        tt_tls_failure_t why = tt_tls_failure(k->tls, detail, sizeof(detail));
        check_done(k, r, tt_tls_failure_phrase(why));
        return;
    }
    case TT_TLS_DONE:
        start_exchange(k);
        return;
    }
}

static void check_io_cb(tt_io_t *io, uint32_t events)
{
    tt_endpoint_check_t *k = tt_container_of(io, tt_endpoint_check_t, io);
    switch (k->phase) {
    case CHECK_CONNECTING: {
        int err = tt_sock_connect_result(io->fd);
        if (err == 0 && (events & (EPOLLERR | EPOLLHUP)))
            err = ECONNREFUSED;
        if (err != 0) {
            check_done(k, TT_HEALTH_CONNECT_FAILED,
                       err == ECONNREFUSED ? "connect refused" : strerror(err));
            return;
        }
        if (k->pool->up->tls == NULL) {
            start_exchange(k);
            return;
        }
        if ((k->tls = tt_tls_new(k->pool->up->tls, io->fd)) == NULL) {
            check_done(k, TT_HEALTH_TLS_FAILED, "out of memory");
            return;
        }
        k->phase = CHECK_HANDSHAKE;
        handshake(k);
        return;
    }
    case CHECK_HANDSHAKE:
        handshake(k);
        return;
    case CHECK_READING:
        if (k->sent < k->req.wpos && (events & EPOLLOUT))
            send_request(k);
        if (k->phase == CHECK_READING && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
            read_answer(k);
        return;
    case CHECK_WAITING:
        return;
    }
}

static void check_timer_cb(tt_timer_t *t)
{
    tt_endpoint_check_t *k = tt_container_of(t, tt_endpoint_check_t, timer);
    tt_pool_t *pool = k->pool;
    if (k->phase != CHECK_WAITING) {
        check_done(k, TT_HEALTH_TIMEOUT, "timed out");
        return;
    }
    int fd = tt_sock_connect(&k->ep->addr);
    if (fd < 0) {
        check_done(k, TT_HEALTH_CONNECT_FAILED, strerror(errno));
        return;
    }
    if (tt_io_start(pool->loop, &k->io, fd, EPOLLOUT, check_io_cb) < 0) {
        int err = errno;
        close(fd);
        check_done(k, TT_HEALTH_CONNECT_FAILED, strerror(err));
        return;
    }
    k->phase = CHECK_CONNECTING;
    tt_loop_timer_after(pool->loop, &k->timer, pool->up->check->timeout);
}

static tt_endpoint_check_t *check_new(tt_pool_t *pool, tt_endpoint_t *ep)
{
    tt_endpoint_check_t *k = tt_calloc(1, sizeof(*k));
    k->pool = pool;
    k->ep = ep;
    k->io.fd = -1;
    /* Seeded by the clock and the check's address: tetherds and endpoints check out of step. */
    tt_rand_seed(&k->rng, (uint64_t)(uintptr_t)k ^ tt_clock_monotonic_us());
    tt_health_init(&k->health);
    k->health.up = !ep->down; /* an endpoint that drained while down and came back stays down */
    tt_check_request(&pool->up->check->line, pool->up->check->host, 0, &k->req);
    tt_timer_init(&k->timer, check_timer_cb);
    k->phase = CHECK_WAITING;
    tt_loop_timer_after(pool->loop, &k->timer,
                        tt_check_first_delay(pool->up->check->interval, tt_rand_next(&k->rng)));
    return k;
}

void tt_endpoint_check_free(tt_pool_t *pool, tt_endpoint_t *ep)
{
    tt_endpoint_check_t *k = ep->check;
    if (k == NULL)
        return;
    check_close(k);
    tt_loop_timer_stop(pool->loop, &k->timer);
    free(k->req.data);
    free(k);
    ep->check = NULL;
}

void tt_endpoint_checks_sync(tt_pool_t *pool)
{
    if (pool->up->check == NULL)
        return;
    for (size_t i = 0; i < pool->endpoints.n; i++) {
        tt_endpoint_t *ep = tt_endpoint_set_at(&pool->endpoints, i);
        int wanted = ep->state == TT_ENDPOINT_ACTIVE && pool->_checking;
        if (wanted && ep->check == NULL)
            ep->check = check_new(pool, ep);
        else if (!wanted)
            tt_endpoint_check_free(pool, ep);
    }
}
