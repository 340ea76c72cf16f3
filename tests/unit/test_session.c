/* A client session without tetherd: one worker's loop driven step by step on a fake clock, the
 * client on a socketpair, the upstream a loopback listener the test answers by hand. A request
 * is relayed and its connection returns to the pool; a partial head gets 408 at
 * client_header_timeout; an upstream that does not answer gets 504 at response_timeout and its
 * connection is closed, never reused. Each test ends with no session, connection or descriptor
 * left. session_int.h is included to check the session's state. */
#include "proxy/session_int.h"

#include "config/config.h"
#include "core/invariant.h"
#include "upstream/pool_int.h"

#include <arpa/inet.h>
#include <errno.h>
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

typedef struct {
    tt_msec_t now;
    int listen_fd; /* the upstream's listener */
    int client;    /* the test's end of the client socketpair */
    int upstream;  /* the test's end of the accepted upstream connection, or -1 */
    tt_conf_t *conf;
    tt_upstream_t up;
    tt_upstream_t *ups[1]; /* the worker's table: up */
    tt_pool_t pool;
    tt_pool_t *pools[1]; /* the worker's pools: pool */
    tt_worker_t w;
    tt_admission_t admission;
    tt_listener_t l;
    tt_leakcheck_t lc;
} fixture_t;

static tt_msec_t fake_clock(void *arg)
{
    return ((fixture_t *)arg)->now;
}

static fixture_t *fixture_new(void)
{
    tt_leakcheck_t lc = tt_leakcheck_begin(); /* before the fixture, which is freed too */
    fixture_t *f = tt_calloc(1, sizeof(*f));
    f->lc = lc;
    f->now = 5000000;
    f->upstream = -1;
    f->conf = tt_test_origin(SOCK_NONBLOCK, "1", &f->listen_fd);
    tt_upstream_conf_t *u = &f->conf->upstreams[0];
    u->response_timeout = 3000;
    f->conf->client_header_timeout = 2000;
    char msg[256];
    assert_int_equal(tt_upstream_init(&f->up, u, "test", 0, 1, msg, sizeof(msg)), 0);

    tt_worker_t *w = &f->w;
    w->conf = f->conf;
    f->ups[0] = &f->up;
    w->upstreams = f->ups;
    w->nupstreams = 1;
    w->loop = tt_loop_create();
    assert_non_null(w->loop);
    tt_loop_set_clock(w->loop, fake_clock, f);
    tt_admission_init(&f->admission, 16, &w->loop, 1);
    w->admission = &f->admission;
    tt_list_init(&w->sessions);
    tt_bufpool_init(&w->bufs, 8);
    tt_http_headpool_init(&w->heads, 4);
    tt_accesslog_init(&w->access_log, -1, w->loop);
    f->pools[0] = &f->pool;
    w->pools = f->pools;
    tt_pool_init(&f->pool, &f->up, w->loop, &w->bufs, 0);
    f->up.pools[0] = &f->pool;
    tt_pool_start(&f->pool);
    f->l = (tt_listener_t){.worker = w, .upstream = &f->up, .handler = tt_session_start};
    f->l.io.fd = -1;

    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    f->client = sv[0];
    tt_addr_t peer;
    assert_int_equal(tt_addr_parse("127.0.0.1:40000", &peer), 0);
    assert_true(tt_admission_take(w->admission)); /* as the worker's accept does */
    f->l.handler(&f->l, sv[1], &peer);
    return f;
}

static void fixture_free(fixture_t *f)
{
    tt_worker_t *w = &f->w;
    close(f->client);
    if (f->upstream >= 0)
        close(f->upstream);
    tt_session_close_all(w);
    tt_pool_shutdown(&f->pool);
    tt_loop_run_deferred(w->loop);
    assert_int_equal(w->nsessions, 0);
    assert_int_equal(tt_pool_size(&f->pool), 0);
    tt_pool_destroy(&f->pool);
    tt_accesslog_destroy(&w->access_log);
    tt_loop_destroy(w->loop);
    tt_http_headpool_destroy(&w->heads);
    tt_bufpool_destroy(&w->bufs);
    tt_upstream_destroy(&f->up);
    tt_test_origin_free(f->conf, f->listen_fd);
    tt_leakcheck_t lc = f->lc;
    free(f);
    tt_leakcheck_end(lc);
}

static tt_session_t *the_session(fixture_t *f)
{
    assert_int_equal(f->w.nsessions, 1);
    return tt_container_of(tt_list_first(&f->w.sessions), tt_session_t, link);
}

/* One loop iteration with a short real wait (sockets move in real time, timers on the fake). */
static void pump(fixture_t *f)
{
    tt_loop_run_once(f->w.loop, 2);
}

static void send_all(int fd, const char *s)
{
    size_t len = strlen(s);
    assert_int_equal(send(fd, s, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Pumps the loop while reading fd until buf holds needle (or the peer closed). Returns the
 * bytes read. */
static size_t read_until(fixture_t *f, int fd, char *buf, size_t cap, const char *needle)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < 1000 && strstr(buf, needle) == NULL; i++) {
        pump(f);
        ssize_t r = recv(fd, buf + n, cap - 1 - n, MSG_DONTWAIT);
        if (r == 0)
            break;
        if (r > 0) {
            n += (size_t)r;
            buf[n] = '\0';
        }
    }
    return n;
}

/* Pumps until the upstream connection arrives at the listener, and accepts it. */
static void accept_upstream(fixture_t *f)
{
    for (int i = 0; i < 1000 && f->upstream < 0; i++) {
        pump(f);
        f->upstream = accept4(f->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    assert_true(f->upstream >= 0);
}

static void test_request_is_relayed_and_the_connection_pooled(void **state)
{
    (void)state;
    fixture_t *f = fixture_new();
    send_all(f->client, "GET /x HTTP/1.1\r\nHost: app\r\nConnection: keep-alive\r\n\r\n");
    accept_upstream(f);
    char buf[4096];
    read_until(f, f->upstream, buf, sizeof(buf), "\r\n\r\n");
    assert_true(strncmp(buf, "GET /x HTTP/1.1\r\n", 17) == 0);
    assert_null(strstr(buf, "Connection: keep-alive")); /* hop-by-hop: not forwarded */
    assert_int_equal(the_session(f)->state, S_EXCHANGE);
    send_all(f->upstream, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    read_until(f, f->client, buf, sizeof(buf), "\r\n\r\nok");
    assert_true(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    tt_session_t *s = the_session(f);
    assert_int_equal(s->state, S_HEAD); /* ready for the next request */
    assert_null(s->conn);
    assert_int_equal(f->pool._nidle, 1); /* the connection went back */
    assert_int_equal(f->pool.stats.responses[2], 1);
    fixture_free(f);
}

static void test_partial_head_gets_408_at_client_header_timeout(void **state)
{
    (void)state;
    fixture_t *f = fixture_new();
    send_all(f->client, "GET / HTTP/1.1\r\nHo");
    for (int i = 0; i < 5; i++)
        pump(f);
    f->now += 1999;
    pump(f);
    char buf[1024];
    assert_int_equal(recv(f->client, buf, sizeof(buf), MSG_DONTWAIT), -1);
    f->now += 1;
    read_until(f, f->client, buf, sizeof(buf), "\r\n\r\n");
    assert_true(strncmp(buf, "HTTP/1.1 408 ", 13) == 0);
    /* A 408 ends the client connection: tetherd shuts its side at once and, as the client may
     * still be sending (lingering close), the session ends when the client closes. */
    shutdown(f->client, SHUT_WR);
    for (int i = 0; i < 5 && f->w.nsessions > 0; i++)
        pump(f);
    assert_int_equal(f->w.nsessions, 0);
    fixture_free(f);
}

static void test_silent_upstream_gets_504_at_response_timeout(void **state)
{
    (void)state;
    fixture_t *f = fixture_new();
    send_all(f->client, "GET /slow HTTP/1.1\r\nHost: app\r\n\r\n");
    accept_upstream(f);
    char buf[4096];
    read_until(f, f->upstream, buf, sizeof(buf), "\r\n\r\n");
    assert_true(the_session(f)->req_sent);
    f->now += 2999;
    pump(f);
    assert_int_equal(the_session(f)->state, S_EXCHANGE);
    f->now += 1;
    read_until(f, f->client, buf, sizeof(buf), "\r\n\r\n");
    assert_true(strncmp(buf, "HTTP/1.1 504 ", 13) == 0);
    tt_pool_t *pool = &f->pool;
    assert_int_equal(pool->stats.conns_closed[TT_CLOSE_RESPONSE_TIMEOUT], 1);
    assert_int_equal(tt_pool_size(pool), 0); /* a late response must never meet a new request */
    assert_int_equal(pool->stats.generated[5], 1);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_is_relayed_and_the_connection_pooled),
        cmocka_unit_test(test_partial_head_gets_408_at_client_header_timeout),
        cmocka_unit_test(test_silent_upstream_gets_504_at_response_timeout),
    };
    return cmocka_run_group_tests_name("session", tests, tt_test_warm_up, NULL);
}
