/* DNS re-resolution against a DNS responder of the test's own: a UDP socket on 127.0.0.1 served
 * by the same event loop, whose answers (A and AAAA records, TTL, NXDOMAIN, SERVFAIL, silence)
 * each test sets. Covers the set and its changes, TTL clamping, fixed and off refresh,
 * stale-if-error, dns_empty, a resolver that is down, the hosts file, and freeing a watch with a
 * lookup in flight. Every test ends with no descriptor left open. */
#include "net/dns.h"

#include "core/invariant.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"

/* ---- the responder ---- */

typedef enum { ANSWER, NXDOMAIN, SERVFAIL, SILENT } mode_t_;

typedef struct {
    tt_io_t io;
    tt_addr_t addr;
    mode_t_ mode;
    uint32_t ttl;
    struct in_addr v4[8];
    size_t nv4;
    struct in6_addr v6[8];
    size_t nv6;
    unsigned queries;
} responder_t;

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void responder_cb(tt_io_t *io, uint32_t events)
{
    responder_t *d = tt_container_of(io, responder_t, io);
    uint8_t q[512], a[1024];
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(io->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
    if (n < 12)
        return;
    d->queries++;
    if (d->mode == SILENT)
        return;
    /* The question: the name's labels, then type and class. */
    size_t p = 12;
    while (p < (size_t)n && q[p] != 0)
        p += (size_t)q[p] + 1;
    if (p + 5 > (size_t)n)
        return;
    uint16_t qtype = (uint16_t)(q[p + 1] << 8 | q[p + 2]);
    size_t qend = p + 5;
    memcpy(a, q, qend);
    uint8_t rcode = d->mode == NXDOMAIN ? 3 : d->mode == SERVFAIL ? 2 : 0;
    a[2] = (uint8_t)(0x80 | (q[2] & 0x01)); /* QR, RD copied */
    a[3] = (uint8_t)(0x80 | rcode);         /* RA */
    put16(a + 6, 0);
    put16(a + 8, 0);
    put16(a + 10, 0);
    size_t len = qend, count = 0;
    if (d->mode == ANSWER) {
        size_t nrec = qtype == 1 ? d->nv4 : qtype == 28 ? d->nv6 : 0;
        for (size_t i = 0; i < nrec; i++) {
            size_t rdlen = qtype == 1 ? 4 : 16;
            put16(a + len, 0xc00c); /* the question's name */
            put16(a + len + 2, qtype);
            put16(a + len + 4, 1);
            a[len + 6] = (uint8_t)(d->ttl >> 24);
            a[len + 7] = (uint8_t)(d->ttl >> 16);
            a[len + 8] = (uint8_t)(d->ttl >> 8);
            a[len + 9] = (uint8_t)d->ttl;
            put16(a + len + 10, (uint16_t)rdlen);
            memcpy(a + len + 12, qtype == 1 ? (void *)&d->v4[i] : (void *)&d->v6[i], rdlen);
            len += 12 + rdlen;
            count++;
        }
    }
    put16(a + 6, (uint16_t)count);
    sendto(io->fd, a, len, 0, (struct sockaddr *)&from, flen);
}

static void responder_start(tt_loop_t *loop, responder_t *d)
{
    memset(d, 0, sizeof(*d));
    d->io.fd = -1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    d->addr.len = sizeof(d->addr.ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&d->addr.ss, &d->addr.len), 0);
    assert_int_equal(tt_io_start(loop, &d->io, fd, EPOLLIN, responder_cb), 0);
}

static void responder_stop(tt_loop_t *loop, responder_t *d)
{
    int fd = d->io.fd;
    tt_io_stop(loop, &d->io);
    if (fd >= 0)
        close(fd);
}

static void set_v4(responder_t *d, const char *a, const char *b, const char *c)
{
    const char *list[] = {a, b, c};
    d->nv4 = 0;
    for (int i = 0; i < 3; i++)
        if (list[i] != NULL)
            assert_int_equal(inet_pton(AF_INET, list[i], &d->v4[d->nv4++]), 1);
}

/* ---- driving the loop ---- */

typedef struct {
    tt_loop_t *loop;
    int calls, changes;
    tt_dns_result_t last;
    int stop_on_change; /* else stop after any lookup */
} seen_t;

static void watch_cb(tt_dns_watch_t *w, tt_dns_result_t result, int changed, void *data)
{
    seen_t *s = data;
    s->calls++;
    s->changes += changed;
    s->last = result;
    if (!s->stop_on_change || changed)
        tt_loop_stop(s->loop);
}

typedef struct {
    tt_timer_t t;
    tt_loop_t *loop;
    int fired;
} guard_t;

static void guard_cb(tt_timer_t *t)
{
    guard_t *g = tt_container_of(t, guard_t, t);
    g->fired = 1;
    tt_loop_stop(g->loop);
}

/* Runs until the watch callback stops the loop; fails the test after ms. */
static void run_until(tt_loop_t *loop, tt_msec_t ms)
{
    guard_t g = {.loop = loop};
    tt_timer_init(&g.t, guard_cb);
    tt_loop_timer_after(loop, &g.t, ms);
    assert_int_equal(tt_loop_run(loop), 0);
    tt_loop_timer_stop(loop, &g.t);
    if (g.fired)
        fail_msg("no DNS outcome within %llu ms", (unsigned long long)ms);
}

typedef struct {
    tt_leakcheck_t lc;
    tt_loop_t *loop;
    responder_t dns;
    tt_resolver_t *r;
    seen_t seen;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = tt_calloc(1, sizeof(*f));
    f->lc = tt_leakcheck_begin();
    f->loop = tt_loop_create();
    assert_non_null(f->loop);
    responder_start(f->loop, &f->dns);
    char err[256];
    f->r = tt_resolver_new(f->loop, &f->dns.addr, 1, err, sizeof(err));
    assert_non_null(f->r);
    f->seen.loop = f->loop;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tt_resolver_free(f->r);
    responder_stop(f->loop, &f->dns);
    tt_loop_run_deferred(f->loop);
    tt_loop_destroy(f->loop);
    tt_leakcheck_t lc = f->lc;
    free(f);
    assert_int_equal(tt_test_count_fds(), lc.fds);
    return 0;
}

static const tt_dns_policy_t fast = {
    .refresh = TT_DNS_REFRESH_TTL, .min_ttl = 50, .max_ttl = 60000, .empty = TT_DNS_EMPTY_KEEP};

static void expect_addrs(tt_dns_watch_t *w, const char *want)
{
    size_t n;
    const tt_addr_t *a = tt_dns_watch_addrs(w, &n);
    char got[512] = "", s[TT_ADDR_STRLEN];
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(got);
        snprintf(got + len, sizeof(got) - len, "%s%s", i ? " " : "", tt_addr_format(&a[i], s));
    }
    assert_string_equal(got, want);
}

static void test_a_and_aaaa_and_changes(void **state)
{
    fixture_t *f = *state;
    set_v4(&f->dns, "127.0.0.4", "127.0.0.2", "127.0.0.3");
    assert_int_equal(inet_pton(AF_INET6, "::1", &f->dns.v6[0]), 1);
    f->dns.nv6 = 1;
    f->dns.ttl = 0;
    tt_dns_watch_t *w =
        tt_dns_watch_new(f->r, "svc.tether.test", 8080, &fast, "upstream t", watch_cb, &f->seen);
    expect_addrs(w, "");
    run_until(f->loop, 5000);
    assert_int_equal(f->seen.last, TT_DNS_OK);
    assert_int_equal(f->seen.changes, 1);
    expect_addrs(w, "127.0.0.2:8080 127.0.0.3:8080 127.0.0.4:8080 [::1]:8080");
    assert_true(tt_dns_watch_stats(w)->last_change_wall_ms > 0);

    /* The same answer again is no change; a new one is, at the next refresh. */
    run_until(f->loop, 5000);
    assert_int_equal(f->seen.changes, 1);
    set_v4(&f->dns, "127.0.0.2", "127.0.0.5", NULL);
    f->dns.nv6 = 0;
    f->seen.stop_on_change = 1;
    run_until(f->loop, 5000);
    expect_addrs(w, "127.0.0.2:8080 127.0.0.5:8080");
    assert_true(tt_dns_watch_stats(w)->lookups[TT_DNS_OK] >= 3);
    tt_dns_watch_free(w);
}

static void test_ttl_is_clamped(void **state)
{
    fixture_t *f = *state;
    set_v4(&f->dns, "127.0.0.2", NULL, NULL);
    tt_dns_policy_t p = {.refresh = TT_DNS_REFRESH_TTL, .min_ttl = 2000, .max_ttl = 30000};
    struct {
        uint32_t ttl;
        tt_msec_t expect;
    } cases[] = {{0, 2000}, {1, 2000}, {7, 7000}, {3600, 30000}};
    for (size_t i = 0; i < TT_ARRAY_SIZE(cases); i++) {
        f->dns.ttl = cases[i].ttl;
        tt_dns_watch_t *w =
            tt_dns_watch_new(f->r, "svc.tether.test", 80, &p, "upstream t", watch_cb, &f->seen);
        run_until(f->loop, 5000);
        assert_int_equal(tt_dns_watch_next_lookup(w) - tt_loop_now(f->loop), cases[i].expect);
        tt_dns_watch_free(w);
    }
    /* A fixed interval ignores the TTL; off never looks again after a good answer. */
    f->dns.ttl = 5;
    p = (tt_dns_policy_t){
        .refresh = TT_DNS_REFRESH_FIXED, .interval = 1500, .min_ttl = 100, .max_ttl = 30000};
    tt_dns_watch_t *w =
        tt_dns_watch_new(f->r, "svc.tether.test", 80, &p, "upstream t", watch_cb, &f->seen);
    run_until(f->loop, 5000);
    assert_int_equal(tt_dns_watch_next_lookup(w) - tt_loop_now(f->loop), 1500);
    tt_dns_watch_free(w);
    p.refresh = TT_DNS_REFRESH_OFF;
    w = tt_dns_watch_new(f->r, "svc.tether.test", 80, &p, "upstream t", watch_cb, &f->seen);
    run_until(f->loop, 5000);
    assert_int_equal(tt_dns_watch_next_lookup(w), TT_TIME_NEVER);
    expect_addrs(w, "127.0.0.2:80");
    tt_dns_watch_free(w);
}

static void test_stale_if_error_and_empty(void **state)
{
    fixture_t *f = *state;
    set_v4(&f->dns, "127.0.0.2", "127.0.0.3", NULL);
    tt_dns_watch_t *w =
        tt_dns_watch_new(f->r, "svc.tether.test", 80, &fast, "upstream t", watch_cb, &f->seen);
    run_until(f->loop, 5000);
    expect_addrs(w, "127.0.0.2:80 127.0.0.3:80");

    f->dns.mode = SERVFAIL;
    run_until(f->loop, 5000);
    assert_int_equal(f->seen.last, TT_DNS_ERROR);
    expect_addrs(w, "127.0.0.2:80 127.0.0.3:80");
    /* Failures back off: the second retry waits twice the first. */
    tt_msec_t first = tt_dns_watch_next_lookup(w) - tt_loop_now(f->loop);
    run_until(f->loop, 5000);
    assert_int_equal(tt_dns_watch_next_lookup(w) - tt_loop_now(f->loop), first * 2);

    f->dns.mode = NXDOMAIN;
    run_until(f->loop, 5000);
    assert_int_equal(f->seen.last, TT_DNS_EMPTY);
    expect_addrs(w, "127.0.0.2:80 127.0.0.3:80");
    f->dns.mode = ANSWER;
    f->dns.nv4 = 0; /* NOERROR without records */
    run_until(f->loop, 5000);
    assert_int_equal(f->seen.last, TT_DNS_EMPTY);
    expect_addrs(w, "127.0.0.2:80 127.0.0.3:80");
    assert_int_equal(f->seen.changes, 1);
    const tt_dns_stats_t *st = tt_dns_watch_stats(w);
    assert_int_equal(st->lookups[TT_DNS_ERROR], 2);
    assert_int_equal(st->lookups[TT_DNS_EMPTY], 2);
    tt_dns_watch_free(w);

    /* dns_empty = clear: NXDOMAIN empties the set. */
    tt_dns_policy_t clear = fast;
    clear.empty = TT_DNS_EMPTY_CLEAR;
    set_v4(&f->dns, "127.0.0.2", NULL, NULL);
    f->seen.changes = 0;
    w = tt_dns_watch_new(f->r, "svc.tether.test", 80, &clear, "upstream t", watch_cb, &f->seen);
    run_until(f->loop, 5000);
    expect_addrs(w, "127.0.0.2:80");
    f->dns.mode = NXDOMAIN;
    run_until(f->loop, 5000);
    assert_int_equal(f->seen.changes, 2);
    expect_addrs(w, "");
    /* ... but an error still keeps what there is. */
    f->dns.mode = ANSWER;
    run_until(f->loop, 5000);
    expect_addrs(w, "127.0.0.2:80");
    f->dns.mode = SERVFAIL;
    run_until(f->loop, 5000);
    expect_addrs(w, "127.0.0.2:80");
    tt_dns_watch_free(w);
}

/* The resolver's port closes: lookups fail fast (ICMP port unreachable on loopback), the set
 * stays, and it heals when the server is back. */
static void test_resolver_down(void **state)
{
    fixture_t *f = *state;
    set_v4(&f->dns, "127.0.0.3", NULL, NULL);
    tt_dns_watch_t *w =
        tt_dns_watch_new(f->r, "svc.tether.test", 80, &fast, "upstream t", watch_cb, &f->seen);
    run_until(f->loop, 5000);
    int fd = f->dns.io.fd;
    tt_io_stop(f->loop, &f->dns.io);
    close(fd);
    run_until(f->loop, 10000);
    assert_int_equal(f->seen.last, TT_DNS_ERROR);
    expect_addrs(w, "127.0.0.3:80");

    /* Back on the same port, with a new answer. */
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&f->dns.addr.ss, f->dns.addr.len), 0);
    assert_int_equal(tt_io_start(f->loop, &f->dns.io, fd, EPOLLIN, responder_cb), 0);
    set_v4(&f->dns, "127.0.0.4", NULL, NULL);
    f->seen.stop_on_change = 1;
    run_until(f->loop, 10000);
    expect_addrs(w, "127.0.0.4:80");
    tt_dns_watch_free(w);
}

/* A watch freed while its lookup waits for an answer that never comes: nothing is delivered to
 * it, nothing leaks (the ASan build checks), and the resolver frees cleanly. */
static void test_free_with_lookup_in_flight(void **state)
{
    fixture_t *f = *state;
    f->dns.mode = SILENT;
    tt_dns_watch_t *w =
        tt_dns_watch_new(f->r, "svc.tether.test", 80, &fast, "upstream t", watch_cb, &f->seen);
    guard_t g = {.loop = f->loop};
    tt_timer_init(&g.t, guard_cb);
    tt_loop_timer_after(f->loop, &g.t, 200);
    tt_loop_run(f->loop);
    assert_true(f->dns.queries >= 1);
    assert_int_equal(f->seen.calls, 0);
    tt_dns_watch_free(w);
}

/* Without servers of its own the resolver reads /etc/hosts (no network involved). */
static void test_system_hosts_file(void **state)
{
    tt_loop_t *loop = tt_loop_create();
    int fds = tt_test_count_fds();
    char err[256];
    tt_resolver_t *r = tt_resolver_new(loop, NULL, 0, err, sizeof(err));
    assert_non_null(r);
    seen_t seen = {.loop = loop};
    tt_dns_watch_t *w = tt_dns_watch_new(r, "localhost", 9, &fast, "upstream t", watch_cb, &seen);
    run_until(loop, 5000);
    assert_int_equal(seen.last, TT_DNS_OK);
    size_t n;
    const tt_addr_t *a = tt_dns_watch_addrs(w, &n);
    assert_true(n >= 1);
    char s[TT_ADDR_STRLEN];
    assert_string_equal(tt_addr_format(&a[0], s), "127.0.0.1:9");
    tt_dns_watch_free(w);
    tt_resolver_free(r);
    tt_loop_run_deferred(loop);
    assert_int_equal(tt_test_count_fds(), fds);
    tt_loop_destroy(loop);
}

static void test_parse_servers(void **state)
{
    tt_addr_t a[4];
    const char *why;
    char s[TT_ADDR_STRLEN];
    assert_int_equal(tt_addr_parse_list("127.0.0.1:5353, 10.0.0.1 ,[::1]:53,::2", 53, a, 4, &why),
                     4);
    assert_string_equal(tt_addr_format(&a[0], s), "127.0.0.1:5353");
    assert_string_equal(tt_addr_format(&a[1], s), "10.0.0.1:53");
    assert_string_equal(tt_addr_format(&a[2], s), "[::1]:53");
    assert_string_equal(tt_addr_format(&a[3], s), "[::2]:53");
    assert_int_equal(tt_addr_parse_list("dns.example:53", 53, a, 4, &why), -1);
    assert_int_equal(tt_addr_parse_list("127.0.0.1:0", 53, a, 4, &why), -1);
    assert_int_equal(tt_addr_parse_list("127.0.0.1:99999", 53, a, 4, &why), -1);
    assert_int_equal(tt_addr_parse_list(" , ", 53, a, 4, &why), -1);
    assert_int_equal(tt_addr_parse_list("1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5", 53, a, 4, &why),
                     -1);
}

int main(void)
{
    tt_dns_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_and_aaaa_and_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_is_clamped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_if_error_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolver_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_lookup_in_flight, setup, teardown),
        cmocka_unit_test(test_system_hosts_file),
        cmocka_unit_test(test_parse_servers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tt_dns_global_cleanup();
    return rc;
}
