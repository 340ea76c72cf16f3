/* Prometheus exposition: a known snapshot renders the expected lines (names, labels, units,
 * exact decimal sums, coarse buckets from the fine histogram), label values are escaped, the
 * text is well formed (every family declared once with HELP and TYPE before its samples,
 * cumulative buckets ending in +Inf = _count), and promtool accepts it when installed. */
#include "metrics/prometheus.h"

#include "core/invariant.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"

static tt_snapshot_t *known_snapshot(void)
{
    tt_snapshot_t *s = tt_snapshot_new(2);
    s->version = "9.8.7";
    s->ready = 1;
    s->nworkers = 4;
    s->accepted = 1000;
    s->active = 7;
    s->unrouted[4] = 3;
    s->process.ok = 1;
    s->process.start_time_s = 1700000000.25;
    s->process.cpu_seconds = 1.5;
    s->process.open_fds = 42;
    s->process.max_fds = 1024;
    s->process.resident_bytes = 5 << 20;
    s->process.virtual_bytes = 100 << 20;

    tt_upstream_snapshot_t *u = &s->ups[0];
    u->name = "app";
    snprintf(u->endpoint, sizeof(u->endpoint), "10.0.0.1:8080");
    u->stats.responses[0] = 1;
    u->stats.responses[2] = 90;
    u->stats.responses[5] = 9;
    u->stats.generated[5] = 4;
    u->stats.requests_on_reused = 80;
    u->stats.retries = 2;
    u->stats.conns_opened = 12;
    u->stats.conns_closed[TT_CLOSE_PEER_CLOSED] = 3;
    u->stats.conns_closed[TT_CLOSE_IDLE_EXPIRED] = 6;
    u->stats.rejected[TT_REJECT_QUEUE_FULL] = 5;
    u->stats.queued = 11;
    u->stats.lease_warnings = 1;
    /* 100 requests: 50 at 200 us, 40 at 2 ms, 10 at 150 ms = 1.5 s + 80 ms + 10 ms. */
    for (int i = 0; i < 50; i++)
        tt_hist_record(&u->stats.request_duration_us, 200);
    for (int i = 0; i < 40; i++)
        tt_hist_record(&u->stats.request_duration_us, 2000);
    for (int i = 0; i < 10; i++)
        tt_hist_record(&u->stats.request_duration_us, 150000);
    tt_hist_record(&u->stats.conn_age_ms, 250);   /* 0.25 s */
    tt_hist_record(&u->stats.conn_age_ms, 70000); /* 70 s */
    for (int i = 0; i < 9; i++)
        tt_hist_record(&u->stats.conn_requests, 1 + (uint64_t)i);
    u->live.idle = 2;
    u->live.active = 1;
    u->live.age_sum_ms = 4500; /* mean 1.5 s over 3 connections */
    u->live.socket_mem_bytes = 8192;
    u->live.live_requests = 55;
    u->live.queued = 0;
    u->idle_timeout_ms = 55000;
    u->learned_idle_timeout_ms = 60000;
    u->max_connections = 100;

    u = &s->ups[1];
    u->name = "we\"ird\\name\n";
    snprintf(u->endpoint, sizeof(u->endpoint), "[::1]:9000");
    return s;
}

static char *render(const tt_snapshot_t *s)
{
    tt_buf_t b = {.data = tt_malloc(1024), .cap = 1024};
    tt_prom_render(s, &b);
    tt_buf_append(&b, "", 1);
    return b.data;
}

static void expect_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    fail_msg("missing line: %s", line);
}

static void test_known_lines(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_snapshot_t *s = known_snapshot();
    char *t = render(s);
    expect_line(t, "# TYPE tether_build_info gauge");
    expect_line(t, "tether_build_info{version=\"9.8.7\"} 1");
    expect_line(t, "tether_ready 1");
    expect_line(t, "tether_workers 4");
    expect_line(t, "process_start_time_seconds 1700000000.25");
    expect_line(t, "process_cpu_seconds_total 1.50");
    expect_line(t, "process_open_fds 42");
    expect_line(t, "process_max_fds 1024");
    expect_line(t, "process_resident_memory_bytes 5242880");
    expect_line(t, "tether_downstream_connections_accepted_total 1000");
    expect_line(t, "tether_downstream_connections_active 7");
    expect_line(t, "tether_unrouted_responses_total{code=\"4xx\"} 3");

    expect_line(t, "tether_upstream_info{upstream=\"app\",endpoint=\"10.0.0.1:8080\"} 1");
    expect_line(t, "tether_upstream_requests_total{upstream=\"app\"} 100");
    expect_line(t, "tether_upstream_responses_total{upstream=\"app\",code=\"2xx\"} 90");
    expect_line(t, "tether_upstream_responses_total{upstream=\"app\",code=\"5xx\"} 9");
    expect_line(t, "tether_upstream_requests_abandoned_total{upstream=\"app\"} 1");
    expect_line(t, "tether_upstream_generated_responses_total{upstream=\"app\",code=\"5xx\"} 4");
    /* Sent = requests of closed connections (1+...+9 = 45) + of live ones (55). */
    expect_line(t, "tether_upstream_requests_sent_total{upstream=\"app\"} 100");
    expect_line(t, "tether_upstream_requests_reused_total{upstream=\"app\"} 80");
    expect_line(t, "tether_upstream_retries_total{upstream=\"app\",reason=\"stale_connection\"} 2");
    expect_line(t, "# TYPE tether_upstream_connections_opened_total counter");
    expect_line(t, "tether_upstream_connections_opened_total{upstream=\"app\","
                   "endpoint=\"10.0.0.1:8080\"} 12");
    expect_line(t, "tether_upstream_handshakes_total{upstream=\"app\",endpoint=\"10.0.0.1:8080\","
                   "kind=\"tcp\"} 12");
    expect_line(t, "tether_upstream_connections_closed_total{upstream=\"app\","
                   "endpoint=\"10.0.0.1:8080\",reason=\"peer_closed\"} 3");
    expect_line(t, "tether_upstream_connections_closed_total{upstream=\"app\","
                   "endpoint=\"10.0.0.1:8080\",reason=\"idle_expired\"} 6");
    expect_line(t, "tether_upstream_connections_closed_total{upstream=\"app\","
                   "endpoint=\"10.0.0.1:8080\",reason=\"shutdown\"} 0");
    assert_null(strstr(t, "reason=\"reused\"")); /* not a close reason */
    expect_line(t, "tether_upstream_connections{upstream=\"app\",endpoint=\"10.0.0.1:8080\","
                   "state=\"idle\"} 2");
    expect_line(t, "tether_upstream_connections{upstream=\"app\",endpoint=\"10.0.0.1:8080\","
                   "state=\"active\"} 1");
    expect_line(t, "tether_upstream_connection_mean_age_seconds{upstream=\"app\"} 1.500");

    expect_line(t, "# TYPE tether_upstream_request_duration_seconds histogram");
    expect_line(
        t, "tether_upstream_request_duration_seconds_bucket{upstream=\"app\",le=\"0.0001\"} 0");
    expect_line(
        t, "tether_upstream_request_duration_seconds_bucket{upstream=\"app\",le=\"0.00025\"} 50");
    expect_line(
        t, "tether_upstream_request_duration_seconds_bucket{upstream=\"app\",le=\"0.0025\"} 90");
    expect_line(t,
                "tether_upstream_request_duration_seconds_bucket{upstream=\"app\",le=\"0.1\"} 90");
    expect_line(
        t, "tether_upstream_request_duration_seconds_bucket{upstream=\"app\",le=\"0.25\"} 100");
    expect_line(
        t, "tether_upstream_request_duration_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 100");
    expect_line(t, "tether_upstream_request_duration_seconds_sum{upstream=\"app\"} 1.590000");
    expect_line(t, "tether_upstream_request_duration_seconds_count{upstream=\"app\"} 100");

    expect_line(t, "tether_upstream_connection_age_seconds_bucket{upstream=\"app\",le=\"0.1\"} 0");
    expect_line(t, "tether_upstream_connection_age_seconds_bucket{upstream=\"app\",le=\"0.5\"} 1");
    expect_line(t, "tether_upstream_connection_age_seconds_bucket{upstream=\"app\",le=\"60\"} 1");
    expect_line(t, "tether_upstream_connection_age_seconds_bucket{upstream=\"app\",le=\"120\"} 2");
    expect_line(t, "tether_upstream_connection_age_seconds_sum{upstream=\"app\"} 70.250");

    expect_line(t, "tether_upstream_requests_per_connection_bucket{upstream=\"app\",le=\"1\"} 1");
    expect_line(t, "tether_upstream_requests_per_connection_bucket{upstream=\"app\",le=\"5\"} 5");
    expect_line(t, "tether_upstream_requests_per_connection_bucket{upstream=\"app\",le=\"10\"} 9");
    expect_line(t, "tether_upstream_requests_per_connection_sum{upstream=\"app\"} 45");

    expect_line(t, "tether_upstream_queue_length{upstream=\"app\"} 0");
    expect_line(t, "tether_upstream_queued_total{upstream=\"app\"} 11");
    expect_line(t, "tether_upstream_rejected_total{upstream=\"app\",reason=\"queue_full\"} 5");
    expect_line(t, "tether_upstream_rejected_total{upstream=\"app\",reason=\"queue_timeout\"} 0");
    expect_line(t, "tether_upstream_lease_warnings_total{upstream=\"app\"} 1");
    expect_line(t, "tether_upstream_idle_timeout_seconds{upstream=\"app\"} 55.000");
    expect_line(t, "tether_upstream_learned_idle_timeout_seconds{upstream=\"app\"} 60.000");
    expect_line(t, "tether_upstream_socket_memory_bytes{upstream=\"app\","
                   "endpoint=\"10.0.0.1:8080\"} 8192");
    expect_line(t, "tether_upstream_max_connections{upstream=\"app\"} 100");

    /* Escaped label values: backslash, quote, newline. */
    expect_line(t, "tether_upstream_info{upstream=\"we\\\"ird\\\\name\\n\","
                   "endpoint=\"[::1]:9000\"} 1");
    expect_line(t, "tether_upstream_connection_mean_age_seconds{upstream=\"we\\\"ird\\\\name\\n\"} "
                   "0.000");
    free(t);
    tt_snapshot_free(s);
    tt_leakcheck_end(lc);
}

/* The name of a sample line: up to '{' or ' '. */
static size_t name_len(const char *line)
{
    return strcspn(line, "{ ");
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static void test_well_formed(void **state)
{
    (void)state;
    tt_snapshot_t *s = known_snapshot();
    char *t = render(s);
    char declared[128][128];
    char types[128][16];
    size_t nfam = 0;
    char current[128] = "";
    char last_hist_series[512] = "";
    double last_bucket = -1;
    for (char *line = strtok(t, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char name[128], type[16];
        if (sscanf(line, "# TYPE %127s %15s", name, type) == 2) {
            for (size_t i = 0; i < nfam; i++)
                if (strcmp(declared[i], name) == 0)
                    fail_msg("family %s declared twice", name);
            assert_true(nfam < 128);
            snprintf(declared[nfam], sizeof(declared[nfam]), "%s", name);
            snprintf(types[nfam], sizeof(types[nfam]), "%s", type);
            nfam++;
            snprintf(current, sizeof(current), "%s", name);
            continue;
        }
        if (strncmp(line, "# HELP ", 7) == 0) {
            /* HELP comes right before its TYPE, for a family not yet declared. */
            assert_true(strlen(line) > 8 + strcspn(line + 7, " "));
            continue;
        }
        assert_true(line[0] != '#');
        size_t n = name_len(line);
        assert_true(nfam > 0);
        const char *ftype = types[nfam - 1];
        size_t cl = strlen(current);
        /* A sample belongs to the family declared last: same name, or name + a histogram
         * suffix. */
        int ok = n == cl && memcmp(line, current, n) == 0;
        if (strcmp(ftype, "histogram") == 0 && n > cl && memcmp(line, current, cl) == 0)
            ok = ends_with(line, n, "_bucket") || ends_with(line, n, "_sum") ||
                 ends_with(line, n, "_count");
        if (!ok)
            fail_msg("sample %s outside its family %s", line, current);
        if (strcmp(ftype, "counter") == 0)
            assert_true(ends_with(current, cl, "_total"));
        else
            assert_false(ends_with(current, cl, "_total"));
        if (ends_with(line, n, "_bucket")) {
            /* Cumulative within one series; the series restarts at each first bucket. */
            const char *le = strstr(line, ",le=\"");
            assert_non_null(le);
            char series[512];
            snprintf(series, sizeof(series), "%.*s", (int)(le - line), line);
            double v = strtod(strrchr(line, ' ') + 1, NULL);
            if (strcmp(series, last_hist_series) == 0)
                assert_true(v >= last_bucket);
            snprintf(last_hist_series, sizeof(last_hist_series), "%s", series);
            last_bucket = v;
        }
    }
    assert_true(nfam >= 30);
    free(t);
    tt_snapshot_free(s);
}

static void test_promtool_accepts(void **state)
{
    (void)state;
    const char *promtool = "/usr/bin/promtool";
    if (access(promtool, X_OK) != 0)
        skip();
    tt_snapshot_t *s = known_snapshot();
    char *t = render(s);
    char path[] = "/tmp/tt-prom-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t, strlen(t)), (ssize_t)strlen(t));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "%s check metrics < %s 2>&1", promtool, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    unlink(path);
    if (rc != 0 || n != 0)
        fail_msg("promtool check metrics (status %d):\n%s", rc, out);
    free(t);
    tt_snapshot_free(s);
}

static void test_empty_snapshot(void **state)
{
    (void)state;
    tt_snapshot_t *s = tt_snapshot_new(0);
    char *t = render(s);
    expect_line(t, "tether_build_info{version=\"unknown\"} 1");
    expect_line(t, "tether_ready 0");
    assert_null(strstr(t, "process_open_fds")); /* /proc unread: omitted, not zero */
    assert_null(strstr(t, "tether_upstream_"));
    free(t);
    tt_snapshot_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_lines),
        cmocka_unit_test(test_well_formed),
        cmocka_unit_test(test_promtool_accepts),
        cmocka_unit_test(test_empty_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
