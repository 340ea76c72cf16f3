/* JSON: the reader accepts exactly RFC 8259 (literals, numbers, escapes and surrogate pairs,
 * nesting up to the bound) and rejects the rest with an offset; lookups give defaults instead of
 * failing; the writer helpers escape what must be escaped; and what /stats renders parses back
 * into the same figures `tether top` shows, rates included. */
#include "core/json.h"

#include "cli/top.h"
#include "core/invariant.h"
#include "metrics/stats_json.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "leakcheck.h"

static tt_json_t *parse(const char *text)
{
    char err[128];
    tt_json_t *v = tt_json_parse(text, strlen(text), err, sizeof(err));
    if (v == NULL)
        fail_msg("parse failed: %s: %s", text, err);
    return v;
}

static void test_scalars(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_json_t *v = parse(" true ");
    assert_int_equal(v->type, TT_JSON_TRUE);
    assert_int_equal(tt_json_bool(v, 0), 1);
    tt_json_free(v);
    v = parse("null");
    assert_int_equal(v->type, TT_JSON_NULL);
    assert_int_equal(tt_json_bool(v, 7), 7);
    tt_json_free(v);
    v = parse("-12.5e1");
    assert_true(tt_json_num(v, 0) == -125.0);
    assert_true(tt_json_u64(v, 99) == 99); /* negative: no exact unsigned value */
    tt_json_free(v);
    v = parse("18446744073709551615");
    assert_true(tt_json_u64(v, 0) == UINT64_MAX);
    tt_json_free(v);
    v = parse("18446744073709551616"); /* 2^64: a number, but not an exact u64 */
    assert_true(tt_json_u64(v, 5) == 5);
    assert_true(tt_json_num(v, 0) > 1.8e19);
    tt_json_free(v);
    v = parse("0");
    assert_true(tt_json_u64(v, 5) == 0);
    tt_json_free(v);
    v = parse("1.0");
    assert_true(tt_json_u64(v, 5) == 5); /* fractional syntax is not an integer */
    tt_json_free(v);
    tt_leakcheck_end(lc);
}

static void test_strings(void **state)
{
    (void)state;
    tt_json_t *v = parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20ac\\ud83d\\ude00\"");
    const char expect[] = "a\"b\\c/d\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    assert_int_equal(v->len, sizeof(expect) - 1);
    assert_memory_equal(v->str, expect, sizeof(expect) - 1);
    tt_json_free(v);
    v = parse("\"nul\\u0000inside\"");
    assert_int_equal(v->len, 10);
    assert_int_equal(v->str[3], '\0');
    tt_json_free(v);
    v = parse("\"raw \xc3\xa9 utf-8\"");
    assert_string_equal(tt_json_str(v, NULL), "raw \xc3\xa9 utf-8");
    tt_json_free(v);
}

static void test_containers_and_lookup(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_json_t *v = parse("{\"a\": [1, 2, {\"b\": \"x\"}], \"c\": {\"d\": {\"e\": 5}}, \"a\": 0,"
                         " \"empty\": {}, \"none\": []}");
    assert_int_equal(v->len, 5);
    const tt_json_t *a = tt_json_get(v, "a"); /* the first of duplicate names */
    assert_int_equal(a->type, TT_JSON_ARRAY);
    assert_int_equal(a->len, 3);
    assert_true(tt_json_u64(tt_json_at(a, 1), 0) == 2);
    assert_null(tt_json_at(a, 3));
    assert_string_equal(tt_json_str(tt_json_get(tt_json_at(a, 2), "b"), NULL), "x");
    assert_true(tt_json_u64(tt_json_path(v, "c.d.e"), 0) == 5);
    assert_null(tt_json_path(v, "c.x.e"));
    assert_null(tt_json_path(v, "a.b")); /* a is an array */
    assert_int_equal(tt_json_get(v, "empty")->len, 0);
    assert_int_equal(tt_json_get(v, "none")->len, 0);
    /* Wrong types and NULL give the default. */
    assert_true(tt_json_num(tt_json_get(v, "a"), 3.5) == 3.5);
    assert_string_equal(tt_json_str(tt_json_get(v, "c"), "def"), "def");
    assert_null(tt_json_get(NULL, "a"));
    assert_true(tt_json_u64(NULL, 9) == 9);
    tt_json_free(v);
    tt_leakcheck_end(lc);
}

static void test_rejects(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "[1 2]",
        "{\"a\" 1}",
        "{a:1}",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "tru",
        "nul",
        "\"unterminated",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"a\nb\"",
        "[1]]",
        "{} {}",
        "NaN",
        "\"\\ud800\\u0041\"",
        "[\"a\"\"b\"]",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        char err[128] = "";
        tt_json_t *v = tt_json_parse(bad[i], strlen(bad[i]), err, sizeof(err));
        if (v != NULL)
            fail_msg("accepted invalid JSON: %s", bad[i]);
        assert_non_null(strstr(err, "offset "));
    }
    /* Not NUL-terminated input: the parser stops at len. */
    tt_json_t *v = tt_json_parse("[1]garbage", 3, NULL, 0);
    assert_non_null(v);
    tt_json_free(v);
    tt_leakcheck_end(lc);
}

static void test_depth_bound(void **state)
{
    (void)state;
    char deep[2 * (TT_JSON_MAX_DEPTH + 2) + 1];
    size_t d = TT_JSON_MAX_DEPTH + 1; /* root at depth 0: MAX_DEPTH + 1 levels are allowed */
    memset(deep, '[', d);
    memset(deep + d, ']', d);
    deep[2 * d] = '\0';
    tt_json_t *v = parse(deep);
    tt_json_free(v);
    d++;
    memset(deep, '[', d);
    memset(deep + d, ']', d);
    deep[2 * d] = '\0';
    char err[128];
    assert_null(tt_json_parse(deep, strlen(deep), err, sizeof(err)));
    assert_non_null(strstr(err, "deep"));
}

static void test_writer(void **state)
{
    (void)state;
    tt_buf_t b = {.data = tt_malloc(16), .cap = 16};
    tt_json_put_str(&b, "q\"b\\n\n\x01 \xc3\xa9");
    tt_buf_append(&b, " ", 1);
    tt_json_put_num(&b, 0.25, 6);
    tt_buf_append(&b, " ", 1);
    tt_json_put_num(&b, NAN, 6);
    tt_buf_append(&b, "", 1);
    assert_string_equal(b.data, "\"q\\\"b\\\\n\\u000a\\u0001 \xc3\xa9\" 0.25 0");
    /* And the string reads back. */
    b.wpos = 0;
    tt_json_put_str(&b, "q\"b\\n\n\x01 \xc3\xa9");
    tt_json_t *v = tt_json_parse(b.data, tt_buf_len(&b), NULL, 0);
    assert_non_null(v);
    assert_string_equal(v->str, "q\"b\\n\n\x01 \xc3\xa9");
    tt_json_free(v);
    free(b.data);
}

/* ---- /stats round trip into `tether top` -------------------------------------------------- */

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_containers_and_lookup),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_depth_bound),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_stats_round_trip),
        cmocka_unit_test(test_sample_rejects_non_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
