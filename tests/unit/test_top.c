/* tether top (src/cli/top.c): what /stats renders parses back into the same figures top shows,
 * rates over the interval included; a body that is not /stats is refused; without a tetherd to
 * reach it says so and exits 1. (Reading a live admin endpoint is in test_admin.c.) */
#include "cli/top.h"

#include "core/invariant.h"
#include "core/json.h"
#include "metrics/stats_json.h"

#include <arpa/inet.h>
#include <math.h>
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

static tt_snapshot_t *stats_at(double uptime, uint64_t requests, uint64_t opened, uint64_t fast,
                               uint64_t slow)
{
    tt_snapshot_t *s = tt_snapshot_new(2);
    s->version = "1.2.3";
    s->ready = 1;
    s->uptime_s = uptime;
    s->accepted = requests;
    s->active = 3;
    tt_upstream_snapshot_t *u = &s->ups[0];
    u->name = "users \"svc\"";
    snprintf(u->endpoint, sizeof(u->endpoint), "10.1.2.3:443");
    u->stats.responses[2] = requests - requests / 10;
    u->stats.responses[5] = requests / 10;
    u->stats.conns_opened = opened;
    u->stats.requests_on_reused = requests - opened;
    u->stats.conn_requests.sum = requests; /* sent = closed connections' requests + live */
    for (uint64_t i = 0; i < fast; i++)
        tt_hist_record(&u->stats.request_duration_us, 1000);
    for (uint64_t i = 0; i < slow; i++)
        tt_hist_record(&u->stats.request_duration_us, 100000);
    u->live.idle = 4;
    u->live.active = 2;
    u->live.age_sum_ms = 6 * 2500;
    u->live.queued = 1;
    s->ups[1].name = "quiet";
    return s;
}

static void to_sample(const tt_snapshot_t *s, tt_top_sample_t *out)
{
    tt_buf_t b = {.data = tt_malloc(256), .cap = 256};
    tt_stats_json_render(s, &b);
    char err[256];
    if (tt_top_sample_parse(b.data, tt_buf_len(&b), out, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    free(b.data);
}

static void test_stats_round_trip(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_snapshot_t *a = stats_at(10.0, 1000, 10, 900, 100);
    tt_snapshot_t *b = stats_at(12.0, 3000, 14, 900 + 2000, 100);
    tt_top_sample_t sa, sb;
    to_sample(a, &sa);
    to_sample(b, &sb);
    assert_string_equal(sb.version, "1.2.3");
    assert_int_equal(sb.nups, 2);
    assert_string_equal(sb.ups[0].name, "users \"svc\"");
    assert_string_equal(sb.ups[0].endpoint, "10.1.2.3:443");
    assert_true(sb.ups[0].requests == 3000);
    assert_true(sb.ups[0].duration_us.count == 3000);
    /* The fine buckets survive the trip exactly. */
    assert_memory_equal(sb.ups[0].duration_us.buckets, b->ups[0].stats.request_duration_us.buckets,
                        sizeof(sb.ups[0].duration_us.buckets));

    tt_top_row_t rows[2];
    double dt = tt_top_rows(&sa, &sb, rows);
    assert_true(fabs(dt - 2.0) < 1e-9);
    assert_true(fabs(rows[0].req_s - 1000.0) < 1e-6);   /* 2000 requests in 2 s */
    assert_true(fabs(rows[0].conn_s - 2.0) < 1e-6);     /* 4 connections in 2 s */
    assert_true(fabs(rows[0].err_s - 100.0) < 1e-6);    /* 200 5xx in 2 s */
    assert_true(fabs(rows[0].reuse_pct - 99.8) < 1e-6); /* 1996 of 2000 reused */
    assert_true(fabs(rows[0].mean_age_s - 2.5) < 1e-9);
    assert_true(rows[0].active == 2 && rows[0].idle == 4 && rows[0].queue == 1);
    /* Percentiles of the interval: only the 2000 fast requests happened in it, while the
     * cumulative p99 would be the slow 100 ms. */
    assert_true(fabs(rows[0].p99_ms - 1.0) <= 1.0 / 32);
    assert_true(fabs(rows[0].p50_ms - 1.0) <= 1.0 / 32);
    assert_true(rows[1].reuse_pct < 0 && rows[1].p50_ms < 0 && rows[1].mean_age_s < 0);

    /* Without a previous sample: rates since start. */
    tt_top_rows(NULL, &sa, rows);
    assert_true(fabs(rows[0].req_s - 100.0) < 1e-6);
    /* A restart between samples (uptime went down) also counts from start. */
    tt_top_rows(&sb, &sa, rows);
    assert_true(fabs(rows[0].req_s - 100.0) < 1e-6);

    tt_buf_t out = {.data = tt_malloc(256), .cap = 256};
    tt_top_render_table("127.0.0.1:9901", &sa, &sb, &out);
    tt_buf_append(&out, "", 1);
    assert_non_null(strstr(out.data, "UPSTREAM"));
    assert_non_null(strstr(out.data, "users \"svc\""));
    assert_non_null(strstr(out.data, "1000.0"));
    assert_non_null(strstr(out.data, "99.8"));
    out.wpos = 0;
    tt_top_render_json("127.0.0.1:9901", &sa, &sb, &out);
    tt_json_t *j = tt_json_parse(out.data, tt_buf_len(&out), NULL, 0);
    assert_non_null(j);
    const tt_json_t *u0 = tt_json_at(tt_json_get(j, "upstreams"), 0);
    assert_true(fabs(tt_json_num(tt_json_get(u0, "requests_per_second"), 0) - 1000) < 1e-3);
    assert_int_equal(tt_json_get(tt_json_at(tt_json_get(j, "upstreams"), 1), "p99_ms")->type,
                     TT_JSON_NULL);
    tt_json_free(j);
    free(out.data);
    tt_top_sample_free(&sa);
    tt_top_sample_free(&sb);
    tt_snapshot_free(a);
    tt_snapshot_free(b);
    tt_leakcheck_end(lc);
}

/* Three endpoints: requests over the interval split 600/300/100 (cumulative counts that would
 * give other shares), one down and draining. */
static tt_snapshot_t *endpoints_at(double uptime, uint64_t base)
{
    tt_snapshot_t *s = stats_at(uptime, 1000 + base, 10, 10, 0);
    tt_upstream_snapshot_t *u = &s->ups[0];
    static const char *const addrs[] = {"127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"};
    static const uint64_t before[] = {100, 500, 400}, during[] = {600, 300, 100};
    for (size_t i = 0; i < 3; i++) {
        tt_endpoint_row_t *r = tt_snapshot_endpoint(u, addrs[i]);
        r->requests = before[i] + (base ? during[i] : 0);
        r->connections = 3;
        r->idle = 2;
        r->views = 1;
        r->draining = 0;
    }
    u->endpoints[2].down = 1;
    u->endpoints[2].draining = 1;
    u->endpoints[2].changed_ago_ms = 1500;
    return s;
}

static void test_endpoint_rows(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_snapshot_t *a = endpoints_at(10.0, 0), *b = endpoints_at(12.0, 1000);
    tt_top_sample_t sa, sb;
    to_sample(a, &sa);
    to_sample(b, &sb);
    assert_int_equal(sb.ups[0].neps, 3);
    assert_true(sb.ups[0].nup == 2);
    assert_string_equal(sb.ups[0].not_up, "127.0.0.4:8080 down");
    assert_true(sb.ups[0].eps[2].draining && !sb.ups[0].eps[0].draining);

    tt_top_row_t rows[2];
    tt_top_rows(&sa, &sb, rows);
    tt_top_endpoint_row_t eps[3];
    tt_top_endpoint_rows(&rows[0], eps);
    assert_true(fabs(eps[0].req_s - 300.0) < 1e-6); /* 600 in 2 s */
    assert_true(fabs(eps[0].share_pct - 60.0) < 1e-6);
    assert_true(fabs(eps[1].share_pct - 30.0) < 1e-6);
    assert_true(fabs(eps[2].share_pct - 10.0) < 1e-6);
    /* An endpoint new in the second sample counts from zero. */
    tt_top_endpoint_rows(&(tt_top_row_t){.sample = &sb.ups[0], .prev = &sb.ups[1], .dt = 1}, eps);
    assert_true(fabs(eps[0].req_s - 700.0) < 1e-6);

    tt_buf_t out = {.data = tt_malloc(256), .cap = 256};
    tt_top_render_table("127.0.0.1:9901", &sa, &sb, &out);
    tt_buf_append(&out, "", 1);
    assert_non_null(strstr(out.data, "  UP 2/3, 127.0.0.4:8080 down\n"));
    assert_non_null(strstr(out.data, "ENDPOINT"));
    assert_non_null(strstr(out.data, "     127.0.0.2:8080          300.0  60.0%    1    2  up\n"));
    assert_non_null(
        strstr(out.data, "127.0.0.4:8080           50.0  10.0%    1    2  down, draining\n"));
    for (char *line = out.data; *line;) {
        char *end = strchr(line, '\n');
        assert_true(end - line <= 80);
        line = end + 1;
    }
    out.wpos = 0;
    tt_top_render_json("127.0.0.1:9901", &sa, &sb, &out);
    tt_json_t *j = tt_json_parse(out.data, tt_buf_len(&out), NULL, 0);
    assert_non_null(j);
    const tt_json_t *e =
        tt_json_at(tt_json_get(tt_json_at(tt_json_get(j, "upstreams"), 0), "endpoints"), 1);
    assert_string_equal(tt_json_str(tt_json_get(e, "address"), ""), "127.0.0.3:8080");
    assert_true(fabs(tt_json_num(tt_json_get(e, "share_percent"), 0) - 30.0) < 1e-6);
    assert_string_equal(tt_json_str(tt_json_get(e, "health"), ""), "up");
    /* The quiet upstream: no endpoints listed, an empty list. */
    assert_int_equal(tt_json_get(tt_json_at(tt_json_get(j, "upstreams"), 1), "endpoints")->len, 0);
    tt_json_free(j);
    free(out.data);
    tt_top_sample_free(&sa);
    tt_top_sample_free(&sb);
    tt_snapshot_free(a);
    tt_snapshot_free(b);
    tt_leakcheck_end(lc);
}

/* More endpoints than the view has lines for: the rest are counted. */
static void test_endpoint_lines_are_capped(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_snapshot_t *a = stats_at(10.0, 1000, 10, 10, 0);
    for (int i = 0; i < TT_TOP_MAX_ENDPOINT_LINES + 3; i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%d:80", i + 1);
        tt_snapshot_endpoint(&a->ups[0], addr)->views = 1;
    }
    tt_top_sample_t sa;
    to_sample(a, &sa);
    tt_buf_t out = {.data = tt_malloc(256), .cap = 256};
    tt_top_render_table("127.0.0.1:9901", NULL, &sa, &out);
    tt_buf_append(&out, "", 1);
    assert_non_null(strstr(out.data, "10.0.0.8:80"));
    assert_null(strstr(out.data, "10.0.0.9:80"));
    assert_non_null(strstr(out.data, "... 3 more endpoints"));
    free(out.data);
    tt_top_sample_free(&sa);
    tt_snapshot_free(a);
    tt_leakcheck_end(lc);
}

static void test_sample_rejects_non_stats(void **state)
{
    (void)state;
    tt_top_sample_t s;
    char err[256];
    const char *notjson = "<html>";
    assert_int_equal(tt_top_sample_parse(notjson, strlen(notjson), &s, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not valid JSON"));
    const char *other = "{\"status\": \"ok\"}";
    assert_int_equal(tt_top_sample_parse(other, strlen(other), &s, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "upstreams"));
}

static void test_top_without_tetherd(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    /* A port that was free a moment ago: bind, read it, close. */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
    getsockname(s, (struct sockaddr *)&sin, &len);
    close(s);
    char admin[64];
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", ntohs(sin.sin_port));
    FILE *out = tmpfile(), *errf = tmpfile();
    tt_top_opts_t o = {.admin = admin, .once = 1, .interval_s = 0.05};
    assert_int_equal(tt_top_run(&o, out, errf), 1);
    char *msg = tt_test_read_all(errf);
    assert_non_null(strstr(msg, "cannot reach tetherd"));
    assert_non_null(strstr(msg, "connection refused"));
    free(msg);
    o.admin = "not-an-address";
    assert_int_equal(tt_top_run(&o, out, errf), 2);
    fclose(out);
    fclose(errf);
    tt_leakcheck_end(lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_round_trip),
        cmocka_unit_test(test_endpoint_rows),
        cmocka_unit_test(test_endpoint_lines_are_capped),
        cmocka_unit_test(test_sample_rejects_non_stats),
        cmocka_unit_test(test_top_without_tetherd),
    };
    return cmocka_run_group_tests_name("top", tests, NULL, NULL);
}
