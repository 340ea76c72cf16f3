#include "metrics/stats_json.h"

#include "core/invariant.h"
#include "core/json.h"

#include <inttypes.h>

static void key(tt_buf_t *b, const char *k)
{
    tt_json_put_str(b, k);
    tt_buf_append(b, ":", 1);
}

static void kv_u(tt_buf_t *b, const char *k, uint64_t v, int comma)
{
    key(b, k);
    tt_buf_appendf(b, "%" PRIu64 "%s", v, comma ? "," : "");
}

static void kv_str(tt_buf_t *b, const char *k, const char *v, int comma)
{
    key(b, k);
    tt_json_put_str(b, v);
    if (comma)
        tt_buf_append(b, ",", 1);
}

static void kv_num(tt_buf_t *b, const char *k, double v, int comma)
{
    key(b, k);
    tt_json_put_num(b, v, 15);
    if (comma)
        tt_buf_append(b, ",", 1);
}

static void classes(tt_buf_t *b, const char *k, const uint64_t v[TT_STATUS_CLASSES], int comma)
{
    key(b, k);
    tt_buf_append(b, "{", 1);
    for (unsigned c = 0; c < TT_STATUS_CLASSES; c++)
        kv_u(b, tt_status_class_name(c), v[c], c + 1 < TT_STATUS_CLASSES);
    tt_buf_append(b, "},", comma ? 2 : 1);
}

static void histogram(tt_buf_t *b, const char *k, const tt_hist_t *h)
{
    key(b, k);
    tt_buf_append(b, "{", 1);
    kv_u(b, "count", h->count, 1);
    kv_u(b, "sum", h->sum, 1);
    kv_u(b, "max", h->max, 1);
    kv_u(b, "p50", tt_hist_quantile(h, 0.50), 1);
    kv_u(b, "p90", tt_hist_quantile(h, 0.90), 1);
    kv_u(b, "p99", tt_hist_quantile(h, 0.99), 1);
    kv_u(b, "p999", tt_hist_quantile(h, 0.999), 1);
    /* [highest value of the fine bucket, count] for every non-empty bucket. */
    key(b, "buckets");
    tt_buf_append(b, "[", 1);
    int first = 1;
    for (unsigned i = 0; i < TT_HIST_BUCKETS; i++) {
        if (h->buckets[i] == 0)
            continue;
        uint64_t low, high;
        tt_hist_bucket_range(i, &low, &high);
        tt_buf_appendf(b, "%s[%" PRIu64 ",%" PRIu64 "]", first ? "" : ",", high, h->buckets[i]);
        first = 0;
    }
    tt_buf_append(b, "]}", 2);
}

/* The names of the counted enumerations, for named_counts. */
static const char *close_reason_name(int i)
{
    return tt_close_reason_name((tt_close_reason_t)i);
}

static const char *reject_reason_name(int i)
{
    return tt_reject_reason_name((tt_reject_reason_t)i);
}

static const char *tls_failure_name(int i)
{
    return tt_tls_failure_name((tt_tls_failure_t)i);
}

/* "k":{"name":count,...} for counts[from..to), every value, zeros included. */
static void named_counts(tt_buf_t *b, const char *k, const uint64_t *counts, int from, int to,
                         const char *(*name)(int))
{
    key(b, k);
    tt_buf_append(b, "{", 1);
    for (int i = from; i < to; i++)
        kv_u(b, name(i), counts[i], i < to - 1);
    tt_buf_append(b, "}", 1);
}

/* "tls": handshakes, failures by cause and handshake time; null for an http:// upstream. */
static void tls(tt_buf_t *b, const tt_upstream_snapshot_t *u)
{
    const tt_upstream_stats_t *st = &u->stats;
    key(b, "tls");
    if (!u->tls) {
        tt_buf_append(b, "null,", 5);
        return;
    }
    tt_buf_append(b, "{", 1);
    kv_u(b, "handshakes_full", st->tls_full, 1);
    kv_u(b, "handshakes_resumed", st->tls_resumed, 1);
    named_counts(b, "failures", st->tls_failures, 0, TT_TLS_FAIL__COUNT, tls_failure_name);
    tt_buf_append(b, ",", 1);
    histogram(b, "handshake_duration_us", &st->tls_handshake_us);
    tt_buf_append(b, "},", 2);
}

/* "health" and, once it changed, "last_change_seconds_ago", each followed by a comma: the same
 * in /stats and /pools. */
static void endpoint_health(tt_buf_t *b, const tt_endpoint_row_t *r)
{
    tt_buf_appendf(b, "\"health\":\"%s\",", tt_endpoint_row_state(r));
    if (r->changed_ago_ms != UINT64_MAX)
        kv_num(b, "last_change_seconds_ago", (double)r->changed_ago_ms / 1000.0, 1);
}

/* "endpoints": counts by state, each endpoint with its share of requests, and DNS. */
static void endpoints(tt_buf_t *b, const tt_upstream_snapshot_t *u)
{
    uint64_t total = 0;
    for (size_t i = 0; i < u->nendpoints; i++)
        total += u->endpoints[i].requests;
    key(b, "endpoints");
    tt_buf_append(b, "{", 1);
    kv_u(b, "active", u->endpoints_active, 1);
    kv_u(b, "draining", u->endpoints_draining, 1);
    key(b, "list");
    tt_buf_append(b, "[", 1);
    for (size_t i = 0; i < u->nendpoints; i++) {
        const tt_endpoint_row_t *r = &u->endpoints[i];
        tt_buf_append(b, i ? ",{" : "{", i ? 2 : 1);
        key(b, "address");
        tt_json_put_str(b, r->address);
        tt_buf_appendf(b, ",\"state\":\"%s\",", r->draining ? "draining" : "active");
        endpoint_health(b, r);
        kv_u(b, "requests_total", r->requests, 1);
        kv_num(b, "share", total ? (double)r->requests / (double)total : 0, 1);
        kv_u(b, "connections", r->connections, 1);
        kv_u(b, "idle", r->idle, 1);
        kv_u(b, "outstanding", r->outstanding, 0);
        tt_buf_append(b, "}", 1);
    }
    tt_buf_append(b, "]", 1);
    if (u->dns_followed) {
        tt_buf_append(b, ",", 1);
        key(b, "dns");
        tt_buf_appendf(
            b, "{\"lookups\":{\"ok\":%" PRIu64 ",\"empty\":%" PRIu64 ",\"error\":%" PRIu64 "},",
            u->dns_lookups[0], u->dns_lookups[1], u->dns_lookups[2]);
        kv_num(b, "last_change_time", (double)u->dns_last_change_ms / 1000.0, 0);
        tt_buf_append(b, "}", 1);
    }
    tt_buf_append(b, "},", 2);
}

static void upstream(tt_buf_t *b, const tt_upstream_snapshot_t *u)
{
    const tt_upstream_stats_t *st = &u->stats;
    tt_buf_append(b, "{", 1);
    kv_str(b, "name", u->name, 1);
    kv_str(b, "endpoint", u->endpoint, 1);
    kv_u(b, "requests_total", tt_snapshot_requests(u), 1);
    classes(b, "responses", st->responses, 1);
    classes(b, "generated", st->generated, 1);
    kv_u(b, "requests_sent_total", tt_snapshot_sent(u), 1);
    kv_u(b, "requests_reused_total", st->requests_on_reused, 1);
    key(b, "retries");
    tt_buf_appendf(b, "{\"stale_connection\":%" PRIu64 ",\"connect_failover\":%" PRIu64 "},",
                   st->retries, st->connect_failovers);
    kv_u(b, "spliced_bytes_total", st->spliced_bytes, 1);
    kv_u(b, "spliced_request_bytes_total", st->spliced_request_bytes, 1);
    endpoints(b, u);

    key(b, "connections");
    tt_buf_append(b, "{", 1);
    kv_u(b, "opened_total", st->conns_opened, 1);
    kv_u(b, "handed_over_total", st->handed_over, 1);
    named_counts(b, "closed", st->conns_closed, 1, TT_CLOSE__COUNT, close_reason_name);
    tt_buf_append(b, ",", 1);
    uint64_t live = u->live.idle + u->live.active + u->live.connecting;
    kv_u(b, "idle", u->live.idle, 1);
    kv_u(b, "active", u->live.active, 1);
    kv_u(b, "connecting", u->live.connecting, 1);
    kv_u(b, "mean_age_ms", live > 0 ? u->live.age_sum_ms / live : 0, 1);
    kv_u(b, "socket_memory_bytes", u->live.socket_mem_bytes, 1);
    kv_u(b, "max", (uint64_t)u->max_connections, 1);
    kv_u(b, "max_idle", (uint64_t)u->max_idle, 1);
    kv_u(b, "min_idle", (uint64_t)u->min_idle, 0);
    tt_buf_append(b, "},", 2);
    key(b, "handshakes");
    tt_buf_appendf(b, "{\"tcp\":%" PRIu64 "},", st->conns_opened);
    tls(b, u);

    key(b, "queue");
    tt_buf_append(b, "{", 1);
    kv_u(b, "length", u->live.queued, 1);
    kv_u(b, "queued_total", st->queued, 1);
    named_counts(b, "rejected", st->rejected, 0, TT_REJECT__COUNT, reject_reason_name);
    tt_buf_append(b, "},", 2);

    kv_u(b, "lease_warnings_total", st->lease_warnings, 1);
    key(b, "idle_timeout");
    tt_buf_appendf(b, "{\"mode\":\"%s\",", u->idle_timeout_auto ? "auto" : "fixed");
    kv_u(b, "in_force_ms", u->idle_timeout_ms, 1);
    kv_u(b, "learned_ms", u->learned_idle_timeout_ms, 0);
    tt_buf_append(b, "},", 2);

    histogram(b, "request_duration_us", &st->request_duration_us);
    tt_buf_append(b, ",", 1);
    histogram(b, "queue_wait_us", &st->queue_wait_us);
    tt_buf_append(b, ",", 1);
    histogram(b, "connection_age_ms", &st->conn_age_ms);
    tt_buf_append(b, ",", 1);
    histogram(b, "requests_per_connection", &st->conn_requests);
    tt_buf_append(b, "}", 1);
}

void tt_stats_json_render(const tt_snapshot_t *s, tt_buf_t *b)
{
    tt_buf_append(b, "{", 1);
    kv_str(b, "version", s->version != NULL ? s->version : "unknown", 1);
    kv_num(b, "time", s->time_s, 1);
    kv_num(b, "uptime_seconds", s->uptime_s, 1);
    key(b, "ready");
    tt_buf_appendf(b, "%s,", s->ready ? "true" : "false");
    kv_u(b, "workers", s->nworkers, 1);

    key(b, "process");
    tt_buf_append(b, "{", 1);
    kv_num(b, "start_time_seconds", s->process.start_time_s, 1);
    kv_num(b, "cpu_seconds", s->process.cpu_seconds, 1);
    kv_u(b, "open_fds", s->process.open_fds, 1);
    kv_u(b, "max_fds", s->process.max_fds, 1);
    kv_u(b, "resident_memory_bytes", s->process.resident_bytes, 1);
    kv_u(b, "virtual_memory_bytes", s->process.virtual_bytes, 0);
    tt_buf_append(b, "},", 2);

    key(b, "downstream");
    tt_buf_append(b, "{", 1);
    kv_u(b, "connections_accepted_total", s->accepted, 1);
    kv_u(b, "connections_active", s->active, 1);
    kv_u(b, "connections_max", (uint64_t)s->max_client_connections, 1);
    kv_u(b, "limit_reached_total", s->limit_pauses, 1);
    key(b, "accept_errors_total");
    tt_buf_append(b, "{", 1);
    for (int e = 0; e < TT_ACCEPT_ERRORS; e++)
        kv_u(b, tt_accept_error_names[e], s->accept_errors[e], e + 1 < TT_ACCEPT_ERRORS);
    tt_buf_append(b, "},", 2);
    classes(b, "unrouted_responses", s->unrouted, 0);
    tt_buf_append(b, "},", 2);

    key(b, "upstreams");
    tt_buf_append(b, "[", 1);
    for (size_t i = 0; i < s->nupstreams; i++) {
        if (i > 0)
            tt_buf_append(b, ",", 1);
        upstream(b, &s->ups[i]);
    }
    tt_buf_append(b, "]}\n", 3);
}

void tt_pools_json_render(const tt_conn_list_t *l, const tt_snapshot_t *s, tt_buf_t *b)
{
    tt_buf_appendf(b, "{\"endpoints\":[");
    size_t n = 0;
    for (size_t i = 0; i < s->nupstreams; i++) {
        const tt_upstream_snapshot_t *u = &s->ups[i];
        for (size_t j = 0; j < u->nendpoints; j++, n++) {
            const tt_endpoint_row_t *r = &u->endpoints[j];
            tt_buf_append(b, n > 0 ? ",\n{" : "\n{", n > 0 ? 3 : 2);
            kv_str(b, "upstream", u->name, 1);
            kv_str(b, "endpoint", r->address, 1);
            endpoint_health(b, r);
            kv_u(b, "connections", r->connections, 0);
            tt_buf_append(b, "}", 1);
        }
    }
    tt_buf_appendf(b, "\n],\n\"connections\":[");
    for (size_t i = 0; i < l->n; i++) {
        const tt_conn_row_t *r = &l->rows[i];
        tt_buf_append(b, i > 0 ? ",\n{" : "\n{", i > 0 ? 3 : 2);
        kv_str(b, "upstream", r->upstream, 1);
        kv_str(b, "endpoint", r->endpoint, 1);
        kv_u(b, "worker", r->worker, 1);
        kv_u(b, "id", r->id, 1);
        kv_str(b, "state", tt_conn_row_state_name(r->state), 1);
        kv_u(b, "age_ms", r->age_ms, 1);
        key(b, "idle_ms");
        if (r->idle_ms < 0)
            tt_buf_append(b, "null,", 5);
        else
            tt_buf_appendf(b, "%" PRId64 ",", r->idle_ms);
        kv_u(b, "requests", r->requests, 1);
        kv_u(b, "socket_memory_bytes", r->socket_mem_bytes, 0);
        tt_buf_append(b, "}", 1);
    }
    tt_buf_append(b, "\n]}\n", 4);
}
