/* The pool without tetherd: real connections to a loopback listener of the test, a loop driven
 * step by step on a fake clock (tt_loop_set_clock), so time-driven behaviour is exact and fast:
 * idle expiry, trimming toward recent demand, lifetime jitter, the queue deadline, and the
 * takeover of an idle connection by a worker at the global cap. Every test ends with the pool
 * empty and no descriptor left. pool_int.h is included to check internal state. */
#include "upstream/pool_int.h"

#include "config/config.h"
#include "core/invariant.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"
#include "testutil.h"

#define NWORKERS 2

typedef struct {
    tt_msec_t now; /* the fake clock of every loop */
    int listen_fd;
    tt_conf_t *conf;
    tt_upstream_conf_t *uconf;
    tt_upstream_t up;
    tt_loop_t *loop[NWORKERS];
    tt_bufpool_t bufs[NWORKERS];
    tt_pool_t pool[NWORKERS];
    tt_leakcheck_t lc;
} fixture_t;

typedef struct {
    tt_pool_waiter_t w;
    int done;
    tt_pool_result_t result;
    tt_conn_t *conn;
} waiter_t;

static tt_msec_t fake_clock(void *arg)
{
    return ((fixture_t *)arg)->now;
}

static void wakeup_cb(tt_loop_t *loop, void *data)
{
    tt_pool_on_wakeup(data);
}

/* What a session does with a leased connection: installs its handler (nothing arrives here). */
static void lease_handler(tt_conn_t *c, uint32_t events)
{
    fail_msg("connection %llu: unexpected events %x", (unsigned long long)c->id, events);
}

static void waiter_cb(tt_pool_waiter_t *w, tt_conn_t *conn, tt_pool_result_t result,
                      const tt_pool_error_t *err)
{
    waiter_t *wt = tt_container_of(w, waiter_t, w);
    wt->done = 1;
    wt->result = result;
    wt->conn = conn;
    if (conn != NULL) /* as a session does, before the loop runs on */
        tt_conn_set_handler(conn, lease_handler, wt, EPOLLIN | EPOLLRDHUP);
}

/* Sets up an upstream "default" at a loopback listener (which never accepts: the kernel completes
 * the handshakes) with settings the test adjusts in tune before the pools start. */
static fixture_t *fixture_new(void (*tune)(tt_upstream_conf_t *u))
{
    tt_leakcheck_t lc = tt_leakcheck_begin(); /* before the fixture, which is freed too */
    fixture_t *f = tt_calloc(1, sizeof(*f));
    f->lc = lc;
    f->now = 1000000;
    f->conf = tt_test_origin(0, "2", &f->listen_fd);
    f->uconf = &f->conf->upstreams[0];
    f->uconf->connect_timeout = 5000;
    f->uconf->max_lifetime = 0;
    if (tune != NULL)
        tune(f->uconf);
    char msg[256];
    assert_int_equal(tt_upstream_init(&f->up, f->uconf, "test", 0, NWORKERS, msg, sizeof(msg)), 0);
    for (size_t i = 0; i < NWORKERS; i++) {
        f->loop[i] = tt_loop_create();
        assert_non_null(f->loop[i]);
        tt_loop_set_clock(f->loop[i], fake_clock, f);
        tt_bufpool_init(&f->bufs[i], 4);
        tt_pool_init(&f->pool[i], &f->up, f->loop[i], &f->bufs[i], i);
        f->up.pools[i] = &f->pool[i];
        tt_loop_on_wakeup(f->loop[i], wakeup_cb, &f->pool[i]);
        tt_pool_start(&f->pool[i]);
    }
    return f;
}

static void fixture_free(fixture_t *f)
{
    for (size_t i = 0; i < NWORKERS; i++) {
        tt_pool_shutdown(&f->pool[i]);
        tt_loop_run_deferred(f->loop[i]);
        TT_ASSERT(tt_pool_size(&f->pool[i]) == 0);
        tt_pool_destroy(&f->pool[i]);
        tt_loop_destroy(f->loop[i]);
        tt_bufpool_destroy(&f->bufs[i]);
    }
    assert_int_equal(atomic_load(&f->up.nconns), 0);
    tt_upstream_destroy(&f->up);
    tt_test_origin_free(f->conf, f->listen_fd);
    tt_leakcheck_t lc = f->lc;
    free(f);
    tt_leakcheck_end(lc);
}

/* Runs both loops (I/O ready now, and timers due at the fake now) a few rounds. */
static void settle(fixture_t *f)
{
    for (int round = 0; round < 4; round++)
        for (size_t i = 0; i < NWORKERS; i++)
            tt_loop_run_once(f->loop[i], 0);
}

/* Advances the fake clock by ms and lets both loops act on it. */
static void advance(fixture_t *f, tt_msec_t ms)
{
    f->now += ms;
    settle(f);
}

/* Acquires a connection on pool i, running the loops (with real waits for the connect) until the
 * waiter is answered, and takes the lease as a session does. */
static tt_conn_t *acquire(fixture_t *f, size_t i, waiter_t *wt, int flags)
{
    memset(wt, 0, sizeof(*wt));
    wt->w.cb = waiter_cb;
    tt_conn_t *c = NULL;
    tt_pool_result_t r = tt_pool_acquire(&f->pool[i], &wt->w, flags, &c);
    if (r != TT_POOL_OK) {
        assert_int_equal(r, TT_POOL_WAIT);
        for (int n = 0; n < 200 && !wt->done; n++)
            tt_loop_run_once(f->loop[i], 10);
        assert_true(wt->done);
        assert_int_equal(wt->result, TT_POOL_OK);
        c = wt->conn;
    }
    tt_conn_set_handler(c, lease_handler, wt, EPOLLIN | EPOLLRDHUP);
    return c;
}

static uint64_t closed(const fixture_t *f, size_t i, tt_close_reason_t why)
{
    return f->pool[i].stats.conns_closed[why];
}

static void test_idle_connection_expires_at_idle_timeout(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(NULL);
    waiter_t wt;
    tt_conn_t *c = acquire(f, 0, &wt, 0);
    assert_int_equal(c->state, TT_CONN_ACTIVE);
    tt_pool_release(c, TT_REUSE_OK);
    assert_int_equal(f->pool[0]._nidle, 1);
    advance(f, 59999);
    assert_int_equal(f->pool[0]._nidle, 1);
    /* Still warm: a new request reuses it. */
    tt_conn_t *again = acquire(f, 0, &wt, 0);
    assert_ptr_equal(again, c);
    assert_int_equal(again->requests, 2);
    tt_pool_release(again, TT_REUSE_OK);
    advance(f, 59999); /* idle time counts from the last release */
    assert_int_equal(f->pool[0]._nidle, 1);
    advance(f, 1);
    assert_int_equal(f->pool[0]._nidle, 0);
    assert_int_equal(closed(f, 0, TT_CLOSE_IDLE_EXPIRED), 1);
    fixture_free(f);
}

static void tune_trim(tt_upstream_conf_t *u)
{
    u->max_idle = 16;
}

/* A burst of three at once, then nothing: the trim estimate is the busiest of the last two 5 s
 * windows, so the surplus goes in the third window, coldest first. */
static void test_trim_closes_the_surplus_after_two_windows(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(tune_trim);
    waiter_t wt[3];
    tt_conn_t *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = acquire(f, 0, &wt[i], 0);
    for (int i = 0; i < 3; i++)
        tt_pool_release(c[i], TT_REUSE_OK);
    assert_int_equal(f->pool[0]._nidle, 3);
    advance(f, 5000); /* window 1 saw 3 busy: keep 3 */
    advance(f, 5000); /* window 2 saw none, window 1 still counts */
    assert_int_equal(f->pool[0]._nidle, 3);
    assert_int_equal(closed(f, 0, TT_CLOSE_TRIMMED), 0);
    advance(f, 5000);
    assert_int_equal(f->pool[0]._nidle, 0);
    assert_int_equal(closed(f, 0, TT_CLOSE_TRIMMED), 3);
    fixture_free(f);
}

static void tune_lifetime(tt_upstream_conf_t *u)
{
    u->max_lifetime = 10000;
    u->max_idle = 32;
    u->max_connections = 32;
}

/* max_lifetime 10 s with +-10% jitter: every deadline in [9 s, 11 s), not all the same, and each
 * idle connection closes for its lifetime at its own deadline. */
static void test_lifetime_has_jitter_and_retires_connections(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(tune_lifetime);
    enum { N = 20 };
    waiter_t wt[N];
    tt_conn_t *c[N];
    tt_msec_t first = TT_TIME_NEVER, last = 0;
    for (int i = 0; i < N; i++) {
        c[i] = acquire(f, 0, &wt[i], 0);
        tt_msec_t life = c[i]->_retire_at - c[i]->created_at;
        assert_true(life >= 9000 && life < 11000);
        first = TT_MIN(first, c[i]->_retire_at);
        last = TT_MAX(last, c[i]->_retire_at);
    }
    assert_true(last > first); /* spread, not a thundering herd */
    for (int i = 0; i < N; i++)
        tt_pool_release(c[i], TT_REUSE_OK);
    f->now = first - 1;
    settle(f);
    assert_int_equal(f->pool[0]._nidle, N);
    f->now = first;
    settle(f);
    assert_true(closed(f, 0, TT_CLOSE_LIFETIME) >= 1);
    assert_int_equal(closed(f, 0, TT_CLOSE_LIFETIME) + f->pool[0]._nidle, N);
    f->now = last;
    settle(f);
    assert_int_equal(f->pool[0]._nidle, 0);
    assert_int_equal(closed(f, 0, TT_CLOSE_LIFETIME), N);
    fixture_free(f);
}

static void tune_queue(tt_upstream_conf_t *u)
{
    u->max_connections = 1;
    u->queue_timeout = 300;
}

/* At max_connections a request waits in the queue; it gets the connection released within
 * queue_timeout, and a 503 (QUEUE_TIMEOUT) when none comes in time. */
static void test_queue_deadline(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(tune_queue);
    waiter_t holder, queued;
    tt_conn_t *c = acquire(f, 0, &holder, 0);
    memset(&queued, 0, sizeof(queued));
    queued.w.cb = waiter_cb;
    tt_conn_t *none = NULL;
    assert_int_equal(tt_pool_acquire(&f->pool[0], &queued.w, 0, &none), TT_POOL_WAIT);
    assert_int_equal(f->pool[0]._nwaiters, 1);
    advance(f, 200);
    assert_false(queued.done);
    tt_pool_release(c, TT_REUSE_OK); /* handed straight to the queued request */
    assert_true(queued.done);
    assert_int_equal(queued.result, TT_POOL_OK);
    assert_ptr_equal(queued.conn, c);
    tt_conn_set_handler(c, lease_handler, &queued, EPOLLIN | EPOLLRDHUP);
    assert_int_equal(f->pool[0]._nwaiters, 0);

    waiter_t late;
    memset(&late, 0, sizeof(late));
    late.w.cb = waiter_cb;
    assert_int_equal(tt_pool_acquire(&f->pool[0], &late.w, 0, &none), TT_POOL_WAIT);
    advance(f, 299);
    assert_false(late.done);
    advance(f, 1);
    assert_true(late.done);
    assert_int_equal(late.result, TT_POOL_QUEUE_TIMEOUT);
    assert_null(late.conn);
    assert_int_equal(f->pool[0].stats.rejected[TT_REJECT_QUEUE_TIMEOUT], 1);
    assert_int_equal(atomic_load(&f->up.nwaiting), 0);
    tt_pool_release(queued.conn, TT_REUSE_OK);
    fixture_free(f);
}

static void tune_takeover(tt_upstream_conf_t *u)
{
    u->max_connections = 2;
    u->queue_timeout = 5000;
}

/* Worker 0 holds both connections the cap allows, idle; worker 1 gets a request. It queues and
 * asks for a takeover; worker 0 hands over its coldest idle connection, socket and all, and the
 * request runs on it in worker 1 without a new connect. */
static void test_takeover_moves_an_idle_connection_to_the_worker_at_the_cap(void **state)
{
    (void)state;
    fixture_t *f = fixture_new(tune_takeover);
    waiter_t a, b, r;
    tt_conn_t *ca = acquire(f, 0, &a, 0), *cb = acquire(f, 0, &b, 0);
    /* Worker 0's loop caches a time 1 ms later than the one worker 1 will act at, as two threads'
     * cached clocks differ: the handed-over connection's idle_since lies in worker 1's future. */
    f->now += 1;
    tt_loop_run_once(f->loop[0], 0);
    tt_pool_release(ca, TT_REUSE_OK);
    tt_pool_release(cb, TT_REUSE_OK); /* cb is the warm end, ca the coldest */
    f->now -= 1;
    uint64_t cold_id = ca->id;
    uint64_t opened = f->pool[0].stats.conns_opened;
    memset(&r, 0, sizeof(r));
    r.w.cb = waiter_cb;
    tt_conn_t *none = NULL;
    assert_int_equal(tt_pool_acquire(&f->pool[1], &r.w, 0, &none), TT_POOL_WAIT);
    for (int n = 0; n < 100 && !r.done; n++)
        settle(f);
    assert_true(r.done);
    assert_int_equal(r.result, TT_POOL_OK);
    assert_int_equal(r.conn->id, cold_id);
    assert_ptr_equal(r.conn->_pool, &f->pool[1]);
    assert_int_equal(f->pool[1].stats.handed_over, 1);
    assert_int_equal(closed(f, 1, TT_CLOSE_IDLE_EXPIRED), 0); /* it was warm, not expired */
    tt_conn_set_handler(r.conn, lease_handler, &r, EPOLLIN | EPOLLRDHUP);
    assert_int_equal(f->pool[0]._nidle, 1);
    assert_int_equal(f->pool[0].stats.conns_opened + f->pool[1].stats.conns_opened, opened);
    tt_pool_release(r.conn, TT_REUSE_OK);
    assert_int_equal(f->pool[1]._nidle, 1);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_connection_expires_at_idle_timeout),
        cmocka_unit_test(test_trim_closes_the_surplus_after_two_windows),
        cmocka_unit_test(test_lifetime_has_jitter_and_retires_connections),
        cmocka_unit_test(test_queue_deadline),
        cmocka_unit_test(test_takeover_moves_an_idle_connection_to_the_worker_at_the_cap),
    };
    return cmocka_run_group_tests_name("pool", tests, tt_test_warm_up, NULL);
}
