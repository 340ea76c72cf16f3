/* tether churn: the decoders against bytes recorded from a real kernel (tests/unit/data, made by
 * record_churn.py in a fresh network namespace: three IPv4 and two IPv6 connections closed by
 * the server first, one IPv4 connection kept open), the aggregation of both sources, the
 * report's JSON and its round trip through --save/--compare, and the hash map under churn. */
#include "churn/addr.h"
#include "churn/pairs.h"
#include "churn/report.h"
#include "churn/sockdiag.h"
#include "churn/trace_format.h"
#include "churn/u64map.h"
#include "core/invariant.h"
#include "core/json.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "leakcheck.h"

#define PORT4 40001
#define PORT6 40002

static char *load(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", TT_TEST_DATA, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("fixture %s missing", path);
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static void load_format(tt_trace_format_t *f)
{
    char *format = load("churn_format.txt", NULL), *header = load("churn_header_page.txt", NULL);
    char err[128];
    assert_int_equal(tt_trace_format_parse(f, format, header, err, sizeof(err)), 0);
    free(format);
    free(header);
}

typedef struct {
    tt_trace_event_t ev[64];
    int n;
} events_t;

static void collect_event_cb(const tt_trace_event_t *ev, void *arg)
{
    events_t *e = arg;
    assert_true(e->n < 64);
    e->ev[e->n++] = *ev;
}

/* Every page of the recorded trace, decoded. */
static void load_events(events_t *e)
{
    tt_trace_format_t f;
    load_format(&f);
    size_t len;
    uint8_t *raw = (uint8_t *)load("churn_trace.raw", &len);
    memset(e, 0, sizeof(*e));
    size_t page = tt_trace_page_size(&f);
    assert_int_equal(len % page, 0);
    for (size_t off = 0; off < len; off += page) {
        int missed;
        assert_true(tt_trace_page_decode(&f, raw + off, page, collect_event_cb, e, &missed) >= 0);
        assert_int_equal(missed, 0);
    }
    free(raw);
}

static void test_format_from_the_kernel(void **state)
{
    tt_trace_format_t f;
    load_format(&f);
    assert_true(f.id > 0);
    assert_int_equal(f.skaddr.off, 8);
    assert_int_equal(f.newstate.off, 20);
    assert_int_equal(f.saddr_v6.size, 16);
    assert_int_equal(f.daddr_v6.off, 56);
    assert_int_equal(tt_trace_page_size(&f), 4096);

    char err[128];
    tt_trace_format_t g;
    assert_int_equal(tt_trace_format_parse(&g,
                                           "name: x\nID: 7\nformat:\n\tfield:int oldstate;"
                                           "\toffset:16;\tsize:4;\tsigned:1;\n",
                                           "", err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "no field"));
}

static void test_page_decode(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    events_t e;
    load_events(&e);
    int syn_sent = 0, syn_recv = 0, closed = 0;
    for (int i = 0; i < e.n; i++) {
        const tt_trace_event_t *ev = &e.ev[i];
        assert_int_equal(ev->protocol, IPPROTO_TCP);
        assert_true(ev->skaddr != 0);
        if (i > 0)
            assert_true(ev->ts_ns >= e.ev[i - 1].ts_ns);
        if (ev->newstate == TT_TCP_SYN_SENT) {
            syn_sent++;
            assert_true(ev->remote.port == PORT4 || ev->remote.port == PORT6);
            assert_true(ev->pid > 0);
        } else if (ev->newstate == TT_TCP_SYN_RECV) {
            syn_recv++;
            assert_true(ev->local.port == PORT4 || ev->local.port == PORT6);
        } else {
            assert_int_equal(ev->newstate, TT_TCP_CLOSE);
            closed++;
        }
        char s[TT_CHURN_ADDR_STRLEN];
        tt_churn_addr_str(&ev->local, s);
        if (ev->local.port == PORT6 || ev->remote.port == PORT6)
            assert_int_equal(ev->local.family, AF_INET6);
    }
    assert_int_equal(syn_sent, 6); /* 3 + 2 closed, 1 kept */
    assert_int_equal(syn_recv, 6);
    assert_int_equal(closed, 10); /* both sides of the five closed connections */

    /* Damaged pages: a commit larger than the page, an entry running past the end. */
    tt_trace_format_t f;
    load_format(&f);
    uint8_t page[4096] = {0};
    uint64_t commit = 5000;
    memcpy(page + f.page_commit_off, &commit, 8);
    int missed;
    events_t none = {0};
    assert_int_equal(tt_trace_page_decode(&f, page, sizeof(page), collect_event_cb, &none, &missed),
                     -1);
    commit = 8;
    memcpy(page + f.page_commit_off, &commit, 8);
    uint32_t hdr = 28; /* type_len 28: 112 bytes of payload, only 4 in the commit */
    memcpy(page + f.page_data_off, &hdr, 4);
    assert_int_equal(tt_trace_page_decode(&f, page, sizeof(page), collect_event_cb, &none, &missed),
                     -1);
    assert_int_equal(none.n, 0);
    tt_leakcheck_end(lc);
}

typedef struct {
    tt_sockdiag_sock_t s[64];
    size_t n;
} socks_t;

static void collect_sock_cb(const tt_sockdiag_sock_t *s, void *arg)
{
    socks_t *v = arg;
    assert_true(v->n < 64);
    v->s[v->n++] = *s;
}

static void load_socks(socks_t *v)
{
    memset(v, 0, sizeof(*v));
    const char *files[] = {"churn_diag4.bin", "churn_diag6.bin"};
    for (int i = 0; i < 2; i++) {
        size_t len;
        char *raw = load(files[i], &len), err[128];
        assert_int_equal(
            tt_sockdiag_parse((uint8_t *)raw, len, collect_sock_cb, v, err, sizeof(err)), 1);
        free(raw);
    }
}

static void test_sockdiag_parse(void **state)
{
    socks_t v;
    load_socks(&v);
    int listen4 = 0, listen6 = 0, tw4 = 0, tw6 = 0, estab = 0;
    for (size_t i = 0; i < v.n; i++) {
        const tt_sockdiag_sock_t *s = &v.s[i];
        assert_true(s->cookie != 0);
        char l[TT_CHURN_ADDR_STRLEN];
        tt_churn_addr_str(&s->local, l);
        switch (s->state) {
        case TT_TCP_LISTEN:
            listen4 += strcmp(l, "127.0.0.1:40001") == 0;
            listen6 += strcmp(l, "[::1]:40002") == 0;
            assert_true(s->inode != 0);
            break;
        case TT_TCP_TIME_WAIT:
            tw4 += s->local.port == PORT4 && s->local.family == AF_INET;
            tw6 += s->local.port == PORT6 && s->local.family == AF_INET6;
            assert_int_equal(s->inode, 0);
            break;
        case TT_TCP_ESTABLISHED:
            estab++;
            assert_true(s->has_info);
            assert_true(s->rtt_us > 0);
            assert_true(s->mem_bytes < (1 << 24));
            break;
        default:
            fail_msg("unexpected state %d", s->state);
        }
    }
    assert_int_equal(listen4, 1);
    assert_int_equal(listen6, 1);
    assert_int_equal(tw4, 3);
    assert_int_equal(tw6, 2);
    assert_int_equal(estab, 2);

    /* An error reply and a truncated message. */
    struct {
        struct nlmsghdr_ {
            uint32_t len;
            uint16_t type, flags;
            uint32_t seq, pid;
        } h;
        int32_t error;
        uint8_t pad[16];
    } msg = {{sizeof(msg), 2 /* NLMSG_ERROR */, 0, 0, 0}, -13, {0}};
    char err[128];
    socks_t none = {0};
    assert_int_equal(
        tt_sockdiag_parse((uint8_t *)&msg, sizeof(msg), collect_sock_cb, &none, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "Permission denied"));
    size_t len;
    char *raw = load("churn_diag4.bin", &len);
    assert_int_equal(
        tt_sockdiag_parse((uint8_t *)raw, 100, collect_sock_cb, &none, err, sizeof(err)), -1);
    free(raw);
}

static const tt_churn_pair_t *find_pair(const tt_churn_t *c, tt_churn_dir_t dir, const char *ep)
{
    for (uint32_t i = 0; i < c->npairs; i++) {
        char s[TT_CHURN_ADDR_STRLEN];
        if (c->pairs[i].dir == dir &&
            strcmp(tt_churn_addr_str(tt_churn_pair_endpoint(&c->pairs[i]), s), ep) == 0)
            return &c->pairs[i];
    }
    fail_msg("no %s pair %s", dir == TT_CHURN_OUT ? "out" : "in", ep);
    return NULL;
}

/* Trace source: the listeners come from a dump, the opens, closes and lifetimes from events. */
static void test_aggregate_trace(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    events_t e;
    socks_t v, listeners = {0};
    load_events(&e);
    load_socks(&v);
    for (size_t i = 0; i < v.n; i++)
        if (v.s[i].state == TT_TCP_LISTEN)
            listeners.s[listeners.n++] = v.s[i];
    uint64_t start = e.ev[0].ts_ns - 1000000, end = e.ev[e.n - 1].ts_ns + 1000000;
    tt_churn_t c;
    tt_churn_init(&c, TT_CHURN_SOURCE_TRACE, 0, start, 2);
    c.resolve_procs = 0;
    tt_churn_on_snapshot(&c, listeners.s, listeners.n, start, 1);
    for (int i = 0; i < e.n; i++)
        tt_churn_on_event(&c, &e.ev[i]);
    tt_churn_on_snapshot(&c, v.s, v.n, end, 1);
    tt_churn_finish(&c, end);

    const tt_churn_pair_t *out4 = find_pair(&c, TT_CHURN_OUT, "127.0.0.1:40001");
    const tt_churn_pair_t *in4 = find_pair(&c, TT_CHURN_IN, "127.0.0.1:40001");
    const tt_churn_pair_t *out6 = find_pair(&c, TT_CHURN_OUT, "[::1]:40002");
    const tt_churn_pair_t *in6 = find_pair(&c, TT_CHURN_IN, "[::1]:40002");
    assert_int_equal(out4->opens, 4);
    assert_int_equal(out4->closes, 3);
    assert_int_equal(in4->opens, 4);
    assert_int_equal(in4->closes, 3);
    assert_int_equal(out6->opens, 2);
    assert_int_equal(in6->closes, 2);
    /* Each lived at least the 2 ms the recorder waited, far less than a second. */
    assert_int_equal(in4->lifetime_us.count, 3);
    assert_true(tt_hist_quantile(&in4->lifetime_us, 0.5) >= 1900);
    assert_true(in4->lifetime_us.max < 1000000);
    /* The server closed first: TIME_WAIT on the accepted side, the kept connection open. */
    assert_int_equal(in4->time_wait, 3);
    assert_int_equal(in6->time_wait, 2);
    assert_int_equal(in4->established, 1);
    assert_int_equal(out4->established, 1);
    assert_int_equal(out4->time_wait, 0);
    assert_int_equal(in4->open_count, 1); /* the kept one, traced from its open */
    assert_int_equal(tt_churn_total_opens(&c), 12);
    assert_int_equal(c.npairs, 4);

    /* Restricted to another namespace, the listeners of this dump are not there. */
    tt_churn_t other;
    tt_churn_init(&other, TT_CHURN_SOURCE_TRACE, 12345, start, 2);
    other.resolve_procs = 0;
    for (int i = 0; i < e.n; i++)
        tt_churn_on_event(&other, &e.ev[i]);
    uint64_t inbound = 0;
    for (uint32_t i = 0; i < other.npairs; i++)
        inbound += other.pairs[i].dir == TT_CHURN_IN ? other.pairs[i].opens : 0;
    assert_int_equal(inbound, 0);
    tt_churn_free(&other);
    tt_churn_free(&c);
    tt_leakcheck_end(lc);
}

/* Sample source: new cookies are opens, TIME_WAIT arrivals closes, lifetimes upper bounds. */
static void test_aggregate_sample(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    socks_t v, listeners = {0};
    load_socks(&v);
    for (size_t i = 0; i < v.n; i++)
        if (v.s[i].state == TT_TCP_LISTEN)
            listeners.s[listeners.n++] = v.s[i];
    const uint64_t s0 = 1000000000ULL, s1 = s0 + 1000000000ULL, s2 = s1 + 1000000000ULL;
    tt_churn_t c;
    tt_churn_init(&c, TT_CHURN_SOURCE_SAMPLE, 0, s0, 2);
    c.resolve_procs = 0;
    tt_churn_on_snapshot(&c, listeners.s, listeners.n, s0, 1);
    tt_churn_on_snapshot(&c, v.s, v.n, s1, 1);
    const tt_churn_pair_t *in4 = find_pair(&c, TT_CHURN_IN, "127.0.0.1:40001");
    assert_int_equal(in4->opens, 4); /* three in TIME_WAIT, one open */
    assert_int_equal(in4->closes, 3);
    assert_int_equal(in4->lifetime_us.max, 1000000); /* the bound: one interval */
    /* The clients' sides of the three closed connections left nothing in the dump: they are
     * counted from the servers' TIME_WAIT; the kept one is listed itself. */
    const tt_churn_pair_t *out4 = find_pair(&c, TT_CHURN_OUT, "127.0.0.1:40001");
    assert_int_equal(out4->opens, 4);
    assert_int_equal(out4->closes, 3);
    /* The same dump again: nothing new. Then everything gone: the open ones closed. */
    tt_churn_on_snapshot(&c, v.s, v.n, s2, 1);
    in4 = find_pair(&c, TT_CHURN_IN, "127.0.0.1:40001");
    assert_int_equal(in4->opens, 4);
    assert_int_equal(in4->closes, 3);
    tt_churn_on_snapshot(&c, listeners.s, listeners.n, s2 + 1000000000ULL, 1);
    in4 = find_pair(&c, TT_CHURN_IN, "127.0.0.1:40001");
    assert_int_equal(in4->closes, 4);
    assert_int_equal(in4->time_wait, 0);
    tt_churn_free(&c);
    tt_leakcheck_end(lc);
}

/* The report: the JSON field names the issue fixes, and --save/--compare round trips. */
static void test_report_json_and_compare(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    events_t e;
    socks_t v;
    load_events(&e);
    load_socks(&v);
    uint64_t start = e.ev[0].ts_ns - 1000000;
    tt_churn_t c;
    tt_churn_init(&c, TT_CHURN_SOURCE_TRACE, 0, start, 1);
    c.resolve_procs = 0;
    tt_churn_on_snapshot(&c, v.s, v.n, start, 1);
    for (int i = 0; i < e.n; i++)
        tt_churn_on_event(&c, &e.ev[i]);
    tt_churn_finish(&c, start + 1000000000ULL); /* one second: opens/s = opens */
    tt_churn_report_t r;
    tt_churn_report_build(&c, NULL, NULL, &r);
    assert_true(r.nrows >= 4);
    assert_true(r.rows[0].opens_per_s >= r.rows[r.nrows - 1].opens_per_s);
    assert_int_equal(r.rows[0].dir, TT_CHURN_OUT); /* ties: the client's side first */

    tt_buf_t sug = {.data = malloc(4096), .cap = 4096}, js = {.data = malloc(8192), .cap = 8192};
    tt_churn_suggest(&r, 10, &sug);
    tt_buf_append(&sug, "", 1);
    assert_non_null(strstr(sug.data, "[upstream 127.0.0.1_40001]\nurl = http://127.0.0.1:40001"));
    assert_non_null(strstr(sug.data, "]\nurl = http://[::1]:40002\n"));
    /* One section per service, not one per side of the loopback. */
    const char *first = strstr(sug.data, "[upstream 127.0.0.1_40001]");
    assert_null(strstr(first + 1, "[upstream 127.0.0.1_40001]"));
    tt_churn_report_json(&r, 0, sug.data, &js);
    char err[128];
    tt_json_t *root = tt_json_parse(js.data, js.wpos, err, sizeof(err));
    assert_non_null(root);
    assert_string_equal(tt_json_str(tt_json_get(root, "source"), ""), "trace");
    assert_non_null(tt_json_get(root, "seconds"));
    assert_non_null(tt_json_get(root, "suggest"));
    const tt_json_t *p0 = tt_json_at(tt_json_get(root, "pairs"), 0);
    static const char *const names[] = {"direction",    "process",     "pid",
                                        "local",        "remote",      "opens_per_s",
                                        "closes_per_s", "lifetime_ms", "established",
                                        "time_wait",    "close_wait",  "socket_memory_bytes",
                                        "retransmits"};
    for (size_t i = 0; i < TT_ARRAY_SIZE(names); i++)
        if (!tt_json_get(p0, names[i]))
            fail_msg("field %s missing", names[i]);
    assert_non_null(tt_json_path(p0, "lifetime_ms.p90"));
    assert_string_equal(tt_json_str(tt_json_get(p0, "remote"), ""), "127.0.0.1:40001");
    assert_int_equal(tt_json_num(tt_json_get(p0, "opens_per_s"), 0), 4);
    tt_json_free(root);

    /* Loaded back, then compared with an AFTER where the churn is gone. */
    tt_churn_report_t before, after;
    assert_int_equal(tt_churn_report_load(js.data, js.wpos, &before, err, sizeof(err)), 0);
    assert_int_equal(before.nrows, r.nrows);
    assert_true(tt_churn_addr_eq(&before.rows[0].remote, &r.rows[0].remote));
    assert_int_equal(before.rows[0].time_wait, r.rows[0].time_wait);
    assert_int_equal(tt_churn_report_load(js.data, js.wpos, &after, err, sizeof(err)), 0);
    for (size_t i = 0; i < after.nrows; i++)
        after.rows[i].opens_per_s = 0, after.rows[i].time_wait = 0;
    tt_buf_t cmp = {.data = malloc(8192), .cap = 8192};
    tt_churn_compare(&before, &after, 10, 1, &cmp);
    root = tt_json_parse(cmp.data, cmp.wpos, err, sizeof(err));
    assert_non_null(root);
    const tt_json_t *c0 = tt_json_at(tt_json_get(root, "pairs"), 0);
    assert_string_equal(tt_json_str(tt_json_get(c0, "endpoint"), ""), "127.0.0.1:40001");
    assert_int_equal(tt_json_num(tt_json_path(c0, "before.opens_per_s"), -1), 4);
    assert_true(tt_json_num(tt_json_path(c0, "change_pct.opens_per_s"), 0) == -100);
    tt_json_free(root);
    tt_churn_report_t bad;
    assert_int_equal(tt_churn_report_load("{\"x\":1}", 7, &bad, err, sizeof(err)), -1);
    cmp.wpos = 0;
    tt_churn_compare(&before, &before, 10, 0, &cmp);
    tt_buf_append(&cmp, "", 1);
    assert_non_null(strstr(cmp.data, "churn (opens/s)"));

    /* The table fits 80 columns. */
    tt_buf_t tab = {.data = malloc(8192), .cap = 8192};
    tt_churn_report_table(&r, 10, &tab);
    tt_buf_append(&tab, "", 1);
    for (char *line = tab.data, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n > 80)
            fail_msg("line of %zu columns: %.*s", n, (int)n, line);
    }
    free(tab.data);
    free(cmp.data);
    free(js.data);
    free(sug.data);
    tt_churn_report_free(&before);
    tt_churn_report_free(&after);
    tt_churn_report_free(&r);
    tt_churn_free(&c);
    tt_leakcheck_end(lc);
}

static void test_u64map_against_reference(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    enum { KEYS = 5000 };
    static uint32_t ref[KEYS];
    static int present[KEYS];
    memset(present, 0, sizeof(present));
    tt_u64map_t m;
    tt_u64map_init(&m);
    srandom(42);
    for (int step = 0; step < 200000; step++) {
        uint32_t k = (uint32_t)random() % KEYS, val;
        uint64_t key = (uint64_t)k * 0x9e3779b97f4a7c15ULL | 1; /* spread, nonzero */
        switch (random() % 3) {
        case 0:
            ref[k] = (uint32_t)step;
            present[k] = 1;
            tt_u64map_put(&m, key, (uint32_t)step);
            break;
        case 1:
            assert_int_equal(tt_u64map_del(&m, key, &val), present[k]);
            if (present[k])
                assert_int_equal(val, ref[k]);
            present[k] = 0;
            break;
        default:
            assert_int_equal(tt_u64map_get(&m, key, &val), present[k]);
            if (present[k])
                assert_int_equal(val, ref[k]);
        }
    }
    size_t n = 0;
    for (int k = 0; k < KEYS; k++)
        n += present[k];
    assert_int_equal(m.count, n);
    tt_u64map_free(&m);
    tt_leakcheck_end(lc);
}

static void test_addr(void **state)
{
    tt_churn_addr_t a, b;
    char s[TT_CHURN_ADDR_STRLEN];
    uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 7};
    tt_churn_addr_set(&a, AF_INET6, mapped, 443);
    assert_string_equal(tt_churn_addr_str(&a, s), "10.0.0.7:443");
    assert_int_equal(tt_churn_addr_parse(&b, "10.0.0.7:443"), 0);
    assert_true(tt_churn_addr_eq(&a, &b));
    assert_int_equal(tt_churn_addr_parse(&b, "[2001:db8::1]:8080"), 0);
    assert_string_equal(tt_churn_addr_str(&b, s), "[2001:db8::1]:8080");
    assert_int_equal(tt_churn_addr_parse(&b, "*"), -1);
    assert_int_equal(tt_churn_addr_parse(&b, "1.2.3.4:70000"), -1);
    assert_int_equal(tt_churn_addr_parse(&b, "[::1:80"), -1);
    memset(&b, 0, sizeof(b));
    assert_string_equal(tt_churn_addr_str(&b, s), "*");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_from_the_kernel),
        cmocka_unit_test(test_page_decode),
        cmocka_unit_test(test_sockdiag_parse),
        cmocka_unit_test(test_aggregate_trace),
        cmocka_unit_test(test_aggregate_sample),
        cmocka_unit_test(test_report_json_and_compare),
        cmocka_unit_test(test_u64map_against_reference),
        cmocka_unit_test(test_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
