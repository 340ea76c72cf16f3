/* Admin endpoint over real loopback sockets with fake operations: every path, status codes for
 * unknown paths, other methods, HEAD, oversized and malformed heads, a client that sends nothing,
 * failing operations, redaction of /config; then `tether top` reading it (fetch, --once table and
 * JSON) and its message when nothing listens. Every test ends with no descriptor left open. */
#include "metrics/admin.h"

#include "cli/top.h"
#include "core/invariant.h"
#include "core/json.h"

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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"
#include "testutil.h"

static int g_ready = 1;
static int g_fail = 0;
static int g_snapshots = 0;

static tt_snapshot_t *fake_snapshot(void *ctx, char *err, size_t errlen)
{
    (void)ctx;
    if (g_fail) {
        snprintf(err, errlen, "worker 3 did not answer");
        return NULL;
    }
    g_snapshots++;
    tt_snapshot_t *s = tt_snapshot_new(1);
    s->version = "0.0.test";
    s->ready = g_ready;
    s->uptime_s = 5.0 + g_snapshots; /* one second per scrape: deterministic rates */
    s->nworkers = 2;
    tt_upstream_snapshot_t *u = &s->ups[0];
    u->name = "users";
    snprintf(u->endpoint, sizeof(u->endpoint), "127.0.0.1:8080");
    u->stats.responses[2] = 100 * (uint64_t)g_snapshots;
    u->stats.conns_opened = 3;
    u->stats.requests_on_reused = 100 * (uint64_t)g_snapshots - 3;
    u->live.live_requests = 100 * (uint64_t)g_snapshots;
    u->live.idle = 3;
    u->live.age_sum_ms = 3 * 4000;
    for (int i = 0; i < 100 * g_snapshots; i++)
        tt_hist_record(&u->stats.request_duration_us, 500);
    return s;
}

static int fake_pools(void *ctx, tt_conn_list_t *out, char *err, size_t errlen)
{
    (void)ctx;
    if (g_fail) {
        snprintf(err, errlen, "worker 1 did not answer");
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        tt_conn_row_t *r = tt_conn_list_push(out);
        r->upstream = "users";
        snprintf(r->endpoint, sizeof(r->endpoint), "127.0.0.1:8080");
        r->worker = (uint32_t)i;
        r->id = 10 + (uint64_t)i;
        r->state = i == 0 ? TT_ROW_IDLE : TT_ROW_ACTIVE;
        r->age_ms = 1500;
        r->idle_ms = i == 0 ? 250 : -1;
        r->requests = 7;
        r->socket_mem_bytes = 4096;
    }
    return 0;
}

static int fake_ready(void *ctx, char *why, size_t whylen)
{
    (void)ctx;
    snprintf(why, whylen, "%s", g_ready ? "listening" : "pre-warming upstream users");
    return g_ready;
}

static char *fake_config(void *ctx)
{
    (void)ctx;
    return tt_strdup("[tether]\nadmin = 127.0.0.1:9901\n\n[upstream users]\n"
                     "url = http://alice:s3cret@users.internal:8080/\n"
                     "tls_key = /etc/tether/users.key\n"
                     "tls_key_password = hunter2\n"
                     "max_idle = 50\n"
                     "; api_token = commented out stays\n");
}

static int g_reloads, g_reload_rc;

static int fake_reload(void *ctx, char *msg, size_t msglen)
{
    (void)ctx;
    g_reloads++;
    snprintf(msg, msglen, "%s", g_reload_rc == 0 ? "reloading" : "tether.ini:3: workers: bad");
    return g_reload_rc;
}

static const tt_admin_ops_t fake_ops = {
    .ctx = NULL,
    .snapshot = fake_snapshot,
    .pools = fake_pools,
    .ready = fake_ready,
    .config = fake_config,
    .reload = fake_reload,
};

typedef struct {
    tt_leakcheck_t lc;
    tt_admin_t *admin;
    int port;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->lc = tt_leakcheck_begin();
    g_ready = 1;
    g_fail = 0;
    g_snapshots = 0;
    tt_addr_t addr;
    assert_int_equal(tt_addr_parse("127.0.0.1:0", &addr), 0);
    char err[256];
    f->admin = tt_admin_open(&addr, &fake_ops, err, sizeof(err));
    if (f->admin == NULL)
        fail_msg("%s", err);
    f->port = tt_admin_port(f->admin);
    assert_true(f->port > 0);
    assert_int_equal(tt_admin_start(f->admin), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tt_admin_close(f->admin);
    tt_leakcheck_end(f->lc);
    free(f);
    return 0;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Sends raw bytes and returns everything until the server closes (caller frees). */
static char *exchange(int port, const char *raw, size_t len)
{
    int fd = dial(port);
    assert_int_equal(send(fd, raw, len, MSG_NOSIGNAL), (ssize_t)len);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    for (;;) {
        if (n + 1 == cap)
            out = realloc(out, cap *= 2);
        ssize_t r = recv(fd, out + n, cap - n - 1, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    close(fd);
    return out;
}

static char *get(int port, const char *method, const char *path)
{
    char req[8192];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", method, path);
    assert_true(n > 0 && (size_t)n < sizeof(req));
    return exchange(port, req, (size_t)n);
}

static int status_of(const char *resp)
{
    int status = 0;
    sscanf(resp, "HTTP/1.1 %d", &status);
    return status;
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    return p != NULL ? p + 4 : "";
}

static void test_paths(void **state)
{
    fixture_t *f = *state;
    char *r = get(f->port, "GET", "/healthz");
    assert_int_equal(status_of(r), 200);
    assert_string_equal(body_of(r), "ok\n");
    assert_non_null(strstr(r, "Connection: close\r\n"));
    assert_non_null(strstr(r, "Content-Length: 3\r\n"));
    free(r);

    r = get(f->port, "GET", "/metrics");
    assert_int_equal(status_of(r), 200);
    assert_non_null(strstr(r, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(body_of(r), "tether_upstream_requests_total{upstream=\"users\"} 100\n"));
    free(r);

    r = get(f->port, "GET", "/stats?pretty=1"); /* the query is ignored */
    assert_int_equal(status_of(r), 200);
    assert_non_null(strstr(r, "Content-Type: application/json"));
    tt_json_t *j = tt_json_parse(body_of(r), strlen(body_of(r)), NULL, 0);
    assert_non_null(j);
    assert_string_equal(tt_json_str(tt_json_path(j, "version"), ""), "0.0.test");
    const tt_json_t *u = tt_json_at(tt_json_get(j, "upstreams"), 0);
    assert_string_equal(tt_json_str(tt_json_get(u, "name"), ""), "users");
    assert_true(tt_json_u64(tt_json_get(u, "requests_total"), 0) == 200);
    assert_true(tt_json_u64(tt_json_path(u, "connections.idle"), 0) == 3);
    assert_true(tt_json_u64(tt_json_path(u, "request_duration_us.count"), 0) == 200);
    tt_json_free(j);
    free(r);

    r = get(f->port, "GET", "/pools");
    assert_int_equal(status_of(r), 200);
    j = tt_json_parse(body_of(r), strlen(body_of(r)), NULL, 0);
    assert_non_null(j);
    const tt_json_t *conns = tt_json_get(j, "connections");
    assert_int_equal(conns->len, 2);
    const tt_json_t *c0 = tt_json_at(conns, 0), *c1 = tt_json_at(conns, 1);
    assert_string_equal(tt_json_str(tt_json_get(c0, "state"), ""), "idle");
    assert_true(tt_json_u64(tt_json_get(c0, "idle_ms"), 0) == 250);
    assert_true(tt_json_u64(tt_json_get(c0, "socket_memory_bytes"), 0) == 4096);
    assert_string_equal(tt_json_str(tt_json_get(c1, "state"), ""), "active");
    assert_int_equal(tt_json_get(c1, "idle_ms")->type, TT_JSON_NULL);
    assert_true(tt_json_u64(tt_json_get(c1, "worker"), 0) == 1);
    tt_json_free(j);
    free(r);

    r = get(f->port, "GET", "/ready");
    assert_int_equal(status_of(r), 200);
    assert_string_equal(body_of(r), "ready: listening\n");
    free(r);
    g_ready = 0;
    r = get(f->port, "GET", "/ready");
    assert_int_equal(status_of(r), 503);
    assert_string_equal(body_of(r), "not ready: pre-warming upstream users\n");
    free(r);

    r = get(f->port, "GET", "/");
    assert_int_equal(status_of(r), 200);
    free(r);
    r = get(f->port, "GET", "/metrics/extra");
    assert_int_equal(status_of(r), 404);
    free(r);
    r = get(f->port, "GET", "/nope");
    assert_int_equal(status_of(r), 404);
    free(r);
}

static void test_config_is_redacted(void **state)
{
    fixture_t *f = *state;
    char *r = get(f->port, "GET", "/config");
    assert_int_equal(status_of(r), 200);
    const char *b = body_of(r);
    assert_null(strstr(b, "s3cret"));
    assert_null(strstr(b, "hunter2"));
    assert_null(strstr(b, "users.key"));
    assert_non_null(strstr(b, "url = http://alice:<redacted>@users.internal:8080/\n"));
    assert_non_null(strstr(b, "tls_key = <redacted>\n"));
    assert_non_null(strstr(b, "tls_key_password = <redacted>\n"));
    assert_non_null(strstr(b, "max_idle = 50\n"));
    assert_non_null(strstr(b, "admin = 127.0.0.1:9901\n"));
    assert_non_null(strstr(b, "[upstream users]\n"));
    free(r);

    char *t = tt_admin_redact_config("url = http://h:80/path\nhosts = a, b\nsecret=x");
    assert_string_equal(t, "url = http://h:80/path\nhosts = a, b\nsecret=<redacted>");
    free(t);
}

static void test_methods_and_bad_requests(void **state)
{
    fixture_t *f = *state;
    char *r = get(f->port, "POST", "/metrics");
    assert_int_equal(status_of(r), 405);
    assert_non_null(strstr(r, "Allow: GET, HEAD\r\n"));
    free(r);
    r = get(f->port, "DELETE", "/pools");
    assert_int_equal(status_of(r), 405);
    free(r);

    r = get(f->port, "HEAD", "/stats");
    assert_int_equal(status_of(r), 200);
    assert_non_null(strstr(r, "Content-Length: "));
    assert_string_equal(body_of(r), ""); /* head only */
    free(r);

    const char junk[] = "NOT HTTP AT ALL\r\n\r\n";
    r = exchange(f->port, junk, sizeof(junk) - 1);
    assert_int_equal(status_of(r), 400);
    free(r);

    /* A head over the limit: 431, not a hang or a crash. */
    size_t big = 20000;
    char *huge = malloc(big + 64);
    int n = snprintf(huge, 64, "GET /metrics HTTP/1.1\r\nX-Fill: ");
    memset(huge + n, 'a', big);
    memcpy(huge + n + big, "\r\n\r\n", 4);
    r = exchange(f->port, huge, (size_t)n + big + 4);
    assert_int_equal(status_of(r), 431);
    free(r);
    free(huge);

    /* A long target: 414. */
    char target[3000];
    target[0] = '/';
    memset(target + 1, 'x', sizeof(target) - 2);
    target[sizeof(target) - 1] = '\0';
    r = get(f->port, "GET", target);
    assert_int_equal(status_of(r), 414);
    free(r);

    /* A GET with a body: answered, and the unread body does not reset the answer away. */
    const char with_body[] = "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    r = exchange(f->port, with_body, sizeof(with_body) - 1);
    assert_int_equal(status_of(r), 200);
    free(r);

    /* A client that connects and closes without a word does not stop the server. */
    int fd = dial(f->port);
    close(fd);
    r = get(f->port, "GET", "/healthz");
    assert_int_equal(status_of(r), 200);
    free(r);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Regression: the server took one connection at a time, so one silent local connection delayed
 * /healthz by the 5 s read deadline, enough to fail a Kubernetes probe. Now silent connections,
 * one with half a head and one that never reads its response each hold only their own slot. */
static void test_silent_connections_do_not_delay_healthz(void **state)
{
    fixture_t *f = *state;
    int silent[8];
    for (size_t i = 0; i < 8; i++)
        silent[i] = dial(f->port);
    const char half[] = "GET /metrics HTTP/1.1\r\nHost:";
    assert_int_equal(send(silent[0], half, sizeof(half) - 1, MSG_NOSIGNAL),
                     (ssize_t)sizeof(half) - 1);
    for (int round = 0; round < 3; round++) {
        double start = now_ms();
        char *r = get(f->port, "GET", "/healthz");
        double took = now_ms() - start;
        assert_int_equal(status_of(r), 200);
        free(r);
        if (took >= 500)
            fail_msg("/healthz took %.0f ms with silent connections open", took);
    }
    for (size_t i = 0; i < 8; i++)
        close(silent[i]);
}

/* More connections than the server serves at once: the rest wait in the backlog and are served
 * as slots free; nothing is refused or crashes. */
static void test_connections_past_the_limit_wait(void **state)
{
    fixture_t *f = *state;
    enum { N = 80 };
    int fds[N];
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t i = 0; i < N; i++) {
        fds[i] = dial(f->port);
        assert_int_equal(send(fds[i], req, sizeof(req) - 1, MSG_NOSIGNAL),
                         (ssize_t)sizeof(req) - 1);
    }
    for (size_t i = 0; i < N; i++) {
        char buf[512];
        ssize_t n = recv(fds[i], buf, sizeof(buf) - 1, 0);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_int_equal(status_of(buf), 200);
        close(fds[i]);
    }
}

/* tt_admin_respond: an incomplete head asks for more, in any split. */
static void test_respond_needs_the_whole_head(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t len = 0; len < sizeof(req) - 1; len++) {
        tt_buf_t out = {0};
        assert_int_equal(tt_admin_respond(&fake_ops, 1, req, len, &out), 0);
        assert_int_equal(out.wpos, 0);
        free(out.data);
    }
    tt_buf_t out = {0};
    assert_int_equal(tt_admin_respond(&fake_ops, 1, req, sizeof(req) - 1, &out), 1);
    assert_true(out.wpos > 0 && strncmp(out.data, "HTTP/1.1 200 OK\r\n", 17) == 0);
    free(out.data);
    tt_leakcheck_end(lc);
}

static void test_failing_operations(void **state)
{
    fixture_t *f = *state;
    g_fail = 1;
    char *r = get(f->port, "GET", "/metrics");
    assert_int_equal(status_of(r), 503);
    assert_non_null(strstr(body_of(r), "worker 3 did not answer"));
    free(r);
    r = get(f->port, "GET", "/pools");
    assert_int_equal(status_of(r), 503);
    free(r);
    r = get(f->port, "GET", "/healthz"); /* alive all the same */
    assert_int_equal(status_of(r), 200);
    free(r);
}

static void test_top_reads_the_endpoint(void **state)
{
    fixture_t *f = *state;
    char admin[64];
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", f->port);

    tt_addr_t addr;
    assert_int_equal(tt_addr_parse(admin, &addr), 0);
    tt_buf_t body = {.data = tt_malloc(64), .cap = 64};
    char err[512];
    assert_int_equal(tt_top_fetch(&addr, "/healthz", &body, err, sizeof(err)), 0);
    assert_int_equal(tt_buf_len(&body), 3);
    body.wpos = 0;
    assert_int_equal(tt_top_fetch(&addr, "/nope", &body, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "HTTP 404"));
    free(body.data);

    FILE *out = tmpfile(), *errf = tmpfile();
    tt_top_opts_t o = {.admin = admin, .once = 1, .interval_s = 0.05};
    assert_int_equal(tt_top_run(&o, out, errf), 0);
    char *text = tt_test_read_all(out);
    /* Two scrapes, 1 s apart in the fake's uptime, 100 requests apart. */
    assert_non_null(strstr(text, "tetherd 0.0.test at 127.0.0.1:"));
    assert_non_null(strstr(text, "UPSTREAM"));
    char *row = strstr(text, "\nusers ");
    assert_non_null(row);
    double req_s, conn_s, reuse;
    assert_int_equal(sscanf(row, "\nusers %lf %lf %lf", &req_s, &conn_s, &reuse), 3);
    assert_true(req_s == 100.0);
    assert_true(conn_s == 0.0);
    assert_true(reuse == 100.0);
    assert_non_null(strstr(row, "127.0.0.1:8080"));
    free(text);
    fclose(out);

    out = tmpfile();
    o.json = 1;
    assert_int_equal(tt_top_run(&o, out, errf), 0);
    text = tt_test_read_all(out);
    tt_json_t *j = tt_json_parse(text, strlen(text), NULL, 0);
    assert_non_null(j);
    const tt_json_t *u = tt_json_at(tt_json_get(j, "upstreams"), 0);
    assert_string_equal(tt_json_str(tt_json_get(u, "name"), ""), "users");
    assert_true(tt_json_num(tt_json_get(u, "requests_per_second"), 0) == 100.0);
    assert_true(tt_json_u64(tt_json_get(u, "idle"), 0) == 3);
    tt_json_free(j);
    free(text);
    fclose(out);
    fclose(errf);
}

/* glibc keeps a finished thread's stack and TLS for the next thread: run the admin thread once
 * before any leak check so that one-time cache is not counted against the first test. */
static void warm_up_thread_cache(void)
{
    tt_addr_t addr;
    char err[256];
    tt_addr_parse("127.0.0.1:0", &addr);
    tt_admin_t *a = tt_admin_open(&addr, &fake_ops, err, sizeof(err));
    if (a != NULL) {
        tt_admin_start(a);
        tt_admin_close(a); /* joins the thread if it started */
    }
}

/* POST /reload runs the reload op: 202 when it started, 400 with the error for a bad file; any
 * other method is 405 with Allow: POST and never reloads. */
static void test_reload(void **state)
{
    fixture_t *f = *state;
    g_reloads = g_reload_rc = 0;
    char *r = get(f->port, "POST", "/reload");
    assert_int_equal(status_of(r), 202);
    assert_string_equal(body_of(r), "reloading\n");
    free(r);
    g_reload_rc = -1;
    r = get(f->port, "POST", "/reload");
    assert_int_equal(status_of(r), 400);
    assert_string_equal(body_of(r), "tether.ini:3: workers: bad\n");
    free(r);
    assert_int_equal(g_reloads, 2);
    r = get(f->port, "GET", "/reload");
    assert_int_equal(status_of(r), 405);
    assert_non_null(strstr(r, "Allow: POST\r\n"));
    free(r);
    r = get(f->port, "POST", "/metrics");
    assert_int_equal(status_of(r), 405);
    free(r);
    assert_int_equal(g_reloads, 2);
}

int main(void)
{
    warm_up_thread_cache();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_is_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_methods_and_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_operations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_connections_do_not_delay_healthz, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connections_past_the_limit_wait, setup, teardown),
        cmocka_unit_test(test_respond_needs_the_whole_head),
        cmocka_unit_test_setup_teardown(test_top_reads_the_endpoint, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
