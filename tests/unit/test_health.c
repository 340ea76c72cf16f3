/* Health pieces: rise/fall hysteresis with a fake clock, status sets and request lines as the
 * configuration gives them, the request bytes, the response judge for checks and probes (fed
 * whole and byte by byte), and the probe schedule against the idle expiry. */
#include "health/check.h"
#include "health/probe.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "leakcheck.h"

static void test_rise_and_fall(void **state)
{
    const tt_health_conf_t c = {.rise = 2, .fall = 3};
    tt_health_t h;
    tt_health_init(&h);
    assert_true(h.up);
    /* Failures interrupted by a pass never take it down. */
    assert_int_equal(tt_health_record(&h, &c, 0, 10), 0);
    assert_int_equal(tt_health_record(&h, &c, 0, 20), 0);
    assert_int_equal(tt_health_record(&h, &c, 1, 30), 0);
    assert_int_equal(tt_health_record(&h, &c, 0, 40), 0);
    assert_int_equal(tt_health_record(&h, &c, 0, 50), 0);
    assert_int_equal(tt_health_record(&h, &c, 0, 60), 1);
    assert_false(h.up);
    assert_int_equal(h.changed_at, 60);
    assert_int_equal(tt_health_record(&h, &c, 0, 70), 0);
    assert_int_equal(tt_health_record(&h, &c, 1, 80), 0);
    assert_int_equal(tt_health_record(&h, &c, 0, 90), 0);
    assert_int_equal(tt_health_record(&h, &c, 1, 100), 0);
    assert_int_equal(tt_health_record(&h, &c, 1, 110), 1);
    assert_true(h.up);
    assert_int_equal(h.changed_at, 110);
}

static void test_status_set(void **state)
{
    tt_status_set_t s;
    const char *why;
    assert_int_equal(tt_status_set_parse("200-399", &s, &why), 0);
    assert_true(tt_status_set_has(&s, 200));
    assert_true(tt_status_set_has(&s, 399));
    assert_false(tt_status_set_has(&s, 404));
    assert_int_equal(tt_status_set_parse("200, 204,300-302", &s, &why), 0);
    assert_int_equal(s.n, 3);
    assert_true(tt_status_set_has(&s, 301));
    assert_false(tt_status_set_has(&s, 201));
    assert_true(tt_status_set_has(NULL, 503));
    const char *bad[] = {"",        "20",      "2000",
                         "600",     "399-200", "200-",
                         "200;204", "abc",     "200,201,202,203,204,205,206,207,208"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tt_status_set_parse(bad[i], &s, &why), -1);
}

static void test_request_line(void **state)
{
    tt_request_line_t rl;
    const char *why;
    assert_int_equal(tt_request_line_parse("GET /healthz", &rl, &why), 0);
    assert_string_equal(rl.method, "GET");
    assert_string_equal(rl.target, "/healthz");
    assert_int_equal(tt_request_line_parse("OPTIONS  *  ", &rl, &why), 0);
    assert_string_equal(rl.target, "*");
    const char *bad[] = {"GET",      "get /",     "GET healthz", "HEAD *",
                         "GET /a b", "GET /\x01", "/healthz",    ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tt_request_line_parse(bad[i], &rl, &why), -1);

    tt_buf_t b = {0};
    tt_request_line_parse("GET /healthz", &rl, &why);
    tt_check_request(&rl, "users.internal:8443", 0, &b);
    tt_buf_append(&b, "", 1);
    assert_string_equal(b.data, "GET /healthz HTTP/1.1\r\nHost: users.internal:8443\r\n"
                                "User-Agent: tether-health\r\nConnection: close\r\n\r\n");
    b.wpos = 0;
    tt_request_line_parse("OPTIONS *", &rl, &why);
    tt_check_request(&rl, "h", 1, &b);
    tt_buf_append(&b, "", 1);
    assert_string_equal(b.data,
                        "OPTIONS * HTTP/1.1\r\nHost: h\r\nUser-Agent: tether-health\r\n\r\n");
    free(b.data);
}

/* Judges resp fed at once and byte by byte; both must agree. Returns the verdict. */
static tt_judge_verdict_t judge(const char *resp, const tt_status_set_t *expect, int reuse, int eof,
                                const char **why)
{
    tt_judge_verdict_t v[2];
    for (int mode = 0; mode < 2; mode++) {
        tt_judge_t j;
        tt_judge_init(&j, expect, reuse, 0);
        size_t n = strlen(resp);
        v[mode] = TT_JUDGE_AGAIN;
        if (mode == 0)
            v[mode] = tt_judge_feed(&j, resp, n);
        else
            for (size_t i = 0; i < n && v[mode] == TT_JUDGE_AGAIN; i++)
                v[mode] = tt_judge_feed(&j, resp + i, 1);
        if (v[mode] == TT_JUDGE_AGAIN && eof)
            v[mode] = tt_judge_eof(&j);
        if (mode == 0)
            *why = tt_judge_reason(&j);
        tt_judge_free(&j);
    }
    /* Byte by byte a probe cannot see bytes after the response in the same read: only the
     * whole-buffer feed judges that. */
    if (v[0] != v[1] && !(v[0] == TT_JUDGE_FAIL && v[1] == TT_JUDGE_PASS))
        fail_msg("whole feed: %d, byte by byte: %d", v[0], v[1]);
    return v[0];
}

/* The result label of a health check, from the judge's verdict. */
static tt_health_result_t result_of(const char *resp, const tt_status_set_t *expect)
{
    tt_judge_t j;
    tt_judge_init(&j, expect, 0, 0);
    if (tt_judge_feed(&j, resp, strlen(resp)) == TT_JUDGE_AGAIN)
        tt_judge_eof(&j);
    tt_health_result_t r = tt_health_result_of(&j);
    tt_judge_free(&j);
    return r;
}

static void test_health_result_labels(void **state)
{
    (void)state;
    tt_status_set_t ok;
    const char *why;
    tt_status_set_parse("200-399", &ok, &why);
    assert_int_equal(result_of("HTTP/1.1 200 OK\r\n\r\n", &ok), TT_HEALTH_OK);
    assert_int_equal(result_of("HTTP/1.1 503 No\r\n\r\n", &ok), TT_HEALTH_STATUS);
    assert_int_equal(result_of("", &ok), TT_HEALTH_CLOSED);
    assert_int_equal(result_of("SSH-2.0-OpenSSH_9.2\r\n", &ok), TT_HEALTH_MALFORMED);
    assert_int_equal(result_of("HTTP/1.1 200 OK\r\nContent-Le", &ok), TT_HEALTH_MALFORMED);
    assert_string_equal(tt_health_result_name(TT_HEALTH_CONNECT_FAILED), "connect_failed");
    assert_string_equal(tt_health_result_name(TT_HEALTH_STATUS), "status");
    assert_string_equal(tt_health_result_name((tt_health_result_t)99), "unknown");
}

static void test_judge_health_check(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_status_set_t ok;
    const char *why;
    tt_status_set_parse("200-399", &ok, &why);
    assert_int_equal(judge("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", &ok, 0, 0, &why),
                     TT_JUDGE_PASS);
    /* The head decides a check; the body need not come. */
    assert_int_equal(judge("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", &ok, 0, 0, &why),
                     TT_JUDGE_PASS);
    assert_int_equal(
        judge("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", &ok, 0, 0, &why),
        TT_JUDGE_FAIL);
    assert_string_equal(why, "unexpected status");
    assert_int_equal(judge("HTTP/1.1 200 OK\r\nContent-Le", &ok, 0, 1, &why), TT_JUDGE_FAIL);
    assert_string_equal(why, "truncated response");
    assert_int_equal(judge("", &ok, 0, 1, &why), TT_JUDGE_FAIL);
    assert_string_equal(why, "closed without a response");
    assert_int_equal(judge("SSH-2.0-OpenSSH_9.2\r\n", &ok, 0, 1, &why), TT_JUDGE_FAIL);
    assert_string_equal(why, "malformed response");
    assert_int_equal(judge("HTTP/1.1 100 Continue\r\n\r\n", NULL, 0, 0, &why), TT_JUDGE_FAIL);
    tt_leakcheck_end(lc);
}

static void test_judge_probe(void **state)
{
    tt_leakcheck_t lc = tt_leakcheck_begin();
    const char *why;
    /* Any status proves the connection alive unless narrowed. */
    assert_int_equal(
        judge("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 3\r\n\r\nno!", NULL, 1, 0, &why),
        TT_JUDGE_PASS);
    assert_int_equal(
        judge("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", NULL, 1,
              0, &why),
        TT_JUDGE_PASS);
    /* The body must be read whole before the verdict. */
    tt_judge_t j;
    tt_judge_init(&j, NULL, 1, 0);
    assert_int_equal(tt_judge_feed(&j, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", 40),
                     TT_JUDGE_AGAIN);
    assert_int_equal(tt_judge_feed(&j, "cd", 2), TT_JUDGE_PASS);
    assert_int_equal(tt_judge_status(&j), 200);
    tt_judge_free(&j);
    assert_int_equal(judge("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                           NULL, 1, 0, &why),
                     TT_JUDGE_FAIL);
    assert_string_equal(why, "connection close");
    /* HTTP/1.0 without keep-alive, and a close-delimited body: not reusable. */
    assert_int_equal(judge("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", NULL, 1, 0, &why),
                     TT_JUDGE_FAIL);
    assert_int_equal(judge("HTTP/1.1 200 OK\r\n\r\nbody until close", NULL, 1, 0, &why),
                     TT_JUDGE_FAIL);
    assert_int_equal(
        judge("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n", NULL, 1, 0, &why),
        TT_JUDGE_FAIL);
    assert_string_equal(why, "bytes after the response");
    tt_status_set_t only204;
    tt_status_set_parse("204", &only204, &why);
    assert_int_equal(judge("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &only204, 1, 0, &why),
                     TT_JUDGE_FAIL);
    /* A body over the bound fails instead of being read forever. */
    tt_judge_init(&j, NULL, 1, 0);
    assert_int_equal(tt_judge_feed(&j, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", 44),
                     TT_JUDGE_AGAIN);
    char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    tt_judge_verdict_t v = TT_JUDGE_AGAIN;
    for (int i = 0; i < 100 && v == TT_JUDGE_AGAIN; i++)
        v = tt_judge_feed(&j, chunk, sizeof(chunk));
    assert_int_equal(v, TT_JUDGE_FAIL);
    assert_string_equal(tt_judge_reason(&j), "response too large");
    tt_judge_free(&j);
    /* HEAD: no body follows a Content-Length. */
    tt_judge_init(&j, NULL, 1, 1);
    assert_int_equal(tt_judge_feed(&j, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 39),
                     TT_JUDGE_PASS);
    tt_judge_free(&j);
    tt_leakcheck_end(lc);
}

static void test_probe_schedule_and_results(void **state)
{
    tt_probe_conf_t c = {.interval = 10000, .timeout = 1000};
    const char *why;
    tt_request_line_parse("OPTIONS *", &c.line, &why);
    /* Idle since 0, expiring at 55 s: probes at 10, 20, ... 50 s; none at 60 s. */
    assert_int_equal(tt_probe_next(&c, 0, 0, 55000), 10000);
    assert_int_equal(tt_probe_next(&c, 0, 10000, 55000), 20000);
    assert_int_equal(tt_probe_next(&c, 0, 40000, 55000), 50000);
    assert_int_equal(tt_probe_next(&c, 0, 50000, 55000), TT_TIME_NEVER);
    /* One that could not be judged before expiry is not sent. */
    assert_int_equal(tt_probe_next(&c, 0, 0, 10500), TT_TIME_NEVER);
    assert_int_equal(tt_probe_next(&c, 5000, 0, TT_TIME_NEVER), 15000);

    tt_buf_t out = {0};
    tt_probe_t p;
    tt_probe_begin(&p, &c, "h", 100, &out);
    assert_int_equal(p.deadline, 1100);
    assert_true(out.wpos > 0 && memcmp(out.data, "OPTIONS * HTTP/1.1\r\n", 20) == 0);
    tt_probe_result_t r;
    assert_int_equal(tt_probe_feed(&p, "HTTP/1.1 200 OK\r\n", 17, &r), 0);
    assert_int_equal(tt_probe_feed(&p, "Content-Length: 0\r\n\r\n", 21, &r), 1);
    assert_int_equal(r, TT_PROBE_OK);
    tt_probe_end(&p);
    tt_probe_begin(&p, &c, "h", 100, &out);
    assert_int_equal(tt_probe_feed(&p, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 38, &r), 1);
    assert_int_equal(r, TT_PROBE_NO_REUSE);
    tt_probe_end(&p);
    tt_probe_begin(&p, &c, "h", 100, &out);
    assert_int_equal(tt_probe_feed(&p, "garbage\r\n\r\n", 11, &r), 1);
    assert_int_equal(r, TT_PROBE_MALFORMED);
    tt_probe_end(&p);
    tt_probe_begin(&p, &c, "h", 100, &out);
    assert_int_equal(tt_probe_closed(&p), TT_PROBE_CLOSED);
    tt_probe_end(&p);
    assert_string_equal(tt_probe_result_name(TT_PROBE_NO_REUSE), "no_reuse");
    free(out.data);
}

/* The check schedule under every kind of random value: the next check within +-10% of the
 * interval, the first within the first interval. Pure arithmetic: the random value is the
 * test's, no clock, loop or socket. */
static void test_check_schedule(void **state)
{
    (void)state;
    const uint64_t randoms[] = {0, 1, 59, 60, 12345, UINT64_MAX / 2, UINT64_MAX};
    const tt_msec_t intervals[] = {1, 9, 10, 300, 5000, 60000};
    for (size_t i = 0; i < sizeof(intervals) / sizeof(intervals[0]); i++) {
        tt_msec_t iv = intervals[i];
        for (size_t j = 0; j < sizeof(randoms) / sizeof(randoms[0]); j++) {
            tt_msec_t next = tt_check_next_delay(iv, randoms[j]);
            assert_true(next >= iv - iv / 10);
            assert_true(next <= iv + iv / 10);
            assert_true(next > 0);
            assert_true(tt_check_first_delay(iv, randoms[j]) < iv);
        }
    }
    /* 300 ms: 270 at the low end, 329 at the high end, 300 in the middle. */
    assert_int_equal(tt_check_next_delay(300, 0), 270);
    assert_int_equal(tt_check_next_delay(300, 59), 329);
    assert_int_equal(tt_check_next_delay(300, 60), 270);
    assert_int_equal(tt_check_next_delay(300, 30), 300);
    /* Spread over the range: 1000 consecutive randoms cover every value of [900, 1100). */
    int seen[200] = {0};
    for (uint64_t r = 0; r < 1000; r++)
        seen[tt_check_next_delay(1000, r * 7919) - 900] = 1;
    for (size_t k = 0; k < 200; k++)
        assert_int_equal(seen[k], 1);
    assert_int_equal(tt_check_first_delay(300, 299), 299);
    assert_int_equal(tt_check_first_delay(300, 300), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rise_and_fall),
        cmocka_unit_test(test_status_set),
        cmocka_unit_test(test_request_line),
        cmocka_unit_test(test_judge_health_check),
        cmocka_unit_test(test_health_result_labels),
        cmocka_unit_test(test_judge_probe),
        cmocka_unit_test(test_probe_schedule_and_results),
        cmocka_unit_test(test_check_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
