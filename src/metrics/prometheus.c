#include "metrics/prometheus.h"

#include "core/invariant.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* A coarse "le" bound: its text as exported and its value in the histogram's own unit. */
typedef struct {
    const char *le;
    uint64_t native;
} bound_t;

/* Request durations and queue waits, recorded in microseconds: 100 us to 30 s. */
static const bound_t duration_bounds[] = {
    {"0.0001", 100},  {"0.00025", 250}, {"0.0005", 500},  {"0.001", 1000},  {"0.0025", 2500},
    {"0.005", 5000},  {"0.01", 10000},  {"0.025", 25000}, {"0.05", 50000},  {"0.1", 100000},
    {"0.25", 250000}, {"0.5", 500000},  {"1", 1000000},   {"2.5", 2500000}, {"5", 5000000},
    {"10", 10000000}, {"30", 30000000},
};

/* Connection age at close, recorded in milliseconds: the article's "under a second" is the
 * interesting edge, an hour the far end (max_lifetime defaults to 10 minutes). */
static const bound_t age_bounds[] = {
    {"0.01", 10},    {"0.1", 100},      {"0.5", 500},      {"1", 1000},     {"5", 5000},
    {"10", 10000},   {"30", 30000},     {"60", 60000},     {"120", 120000}, {"300", 300000},
    {"600", 600000}, {"1800", 1800000}, {"3600", 3600000},
};

/* Requests served per connection: 1 is pure churn. */
static const bound_t requests_bounds[] = {
    {"1", 1},     {"2", 2},     {"5", 5},     {"10", 10},     {"20", 20},       {"50", 50},
    {"100", 100}, {"200", 200}, {"500", 500}, {"1000", 1000}, {"10000", 10000}, {"100000", 100000},
};

void tt_prom_put_label_value(tt_buf_t *out, const char *v)
{
    tt_buf_append(out, "\"", 1);
    for (; *v != '\0'; v++) {
        if (*v == '\\')
            tt_buf_append(out, "\\\\", 2);
        else if (*v == '"')
            tt_buf_append(out, "\\\"", 2);
        else if (*v == '\n')
            tt_buf_append(out, "\\n", 2);
        else
            tt_buf_append(out, v, 1);
    }
    tt_buf_append(out, "\"", 1);
}

static void family(tt_buf_t *b, const char *name, const char *type, const char *help)
{
    tt_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* "name{labels} value" for an unsigned integer value; labels may be empty. */
static void sample_u(tt_buf_t *b, const char *name, const char *labels, uint64_t v)
{
    if (labels[0] != '\0')
        tt_buf_appendf(b, "%s{%s} %" PRIu64 "\n", name, labels, v);
    else
        tt_buf_appendf(b, "%s %" PRIu64 "\n", name, v);
}

/* A value in a unit 10^-digits of the exported one (microseconds as seconds: digits = 6), written
 * in exact decimal: no float rounding in counters and sums. */
static void put_scaled(tt_buf_t *b, uint64_t v, int digits)
{
    uint64_t div = 1;
    for (int i = 0; i < digits; i++)
        div *= 10;
    if (digits == 0)
        tt_buf_appendf(b, "%" PRIu64, v);
    else
        tt_buf_appendf(b, "%" PRIu64 ".%0*" PRIu64, v / div, digits, v % div);
}

static void sample_scaled(tt_buf_t *b, const char *name, const char *labels, uint64_t v, int digits)
{
    tt_buf_appendf(b, "%s{%s} ", name, labels);
    put_scaled(b, v, digits);
    tt_buf_append(b, "\n", 1);
}

static void histogram(tt_buf_t *b, const char *name, const char *labels, const tt_hist_t *h,
                      const bound_t *bounds, size_t nbounds, int digits)
{
    for (size_t i = 0; i < nbounds; i++)
        tt_buf_appendf(b, "%s_bucket{%s,le=\"%s\"} %" PRIu64 "\n", name, labels, bounds[i].le,
                       tt_hist_count_le(h, bounds[i].native));
    tt_buf_appendf(b, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, labels, h->count);
    tt_buf_appendf(b, "%s_sum{%s} ", name, labels);
    put_scaled(b, h->sum, digits);
    tt_buf_appendf(b, "\n%s_count{%s} %" PRIu64 "\n", name, labels, h->count);
}

/* Label sets of one upstream, escaped once per render. */
typedef struct {
    tt_buf_t up; /* upstream="name" */
    tt_buf_t ep; /* upstream="name",endpoint="addr" */
} labels_t;

static void labels_init(labels_t *l, const tt_upstream_snapshot_t *u)
{
    tt_buf_init(&l->up, 128);
    tt_buf_init(&l->ep, 192);
    tt_buf_append(&l->up, "upstream=", 9);
    tt_prom_put_label_value(&l->up, u->name);
    tt_buf_append(&l->up, "", 1);
    tt_buf_append(&l->ep, "upstream=", 9);
    tt_prom_put_label_value(&l->ep, u->name);
    tt_buf_append(&l->ep, ",endpoint=", 10);
    tt_prom_put_label_value(&l->ep, u->endpoint);
    tt_buf_append(&l->ep, "", 1);
}

static void labels_free(labels_t *l)
{
    free(l->up.data);
    free(l->ep.data);
}

static void render_process(const tt_snapshot_t *s, tt_buf_t *b)
{
    char labels[64];
    family(b, "tether_build_info", "gauge", "Build of tetherd; the value is always 1.");
    tt_buf_append(b, "tether_build_info{version=", 26);
    tt_prom_put_label_value(b, s->version != NULL ? s->version : "unknown");
    tt_buf_append(b, "} 1\n", 4);
    family(b, "tether_ready", "gauge",
           "1 when listeners are bound, workers run and pre-warming is done (what /ready says).");
    sample_u(b, "tether_ready", "", s->ready ? 1 : 0);
    family(b, "tether_workers", "gauge", "Worker threads.");
    sample_u(b, "tether_workers", "", s->nworkers);
    if (s->process.ok) {
        family(b, "process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.");
        tt_buf_appendf(b, "process_start_time_seconds %.2f\n", s->process.start_time_s);
        family(b, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.");
        tt_buf_appendf(b, "process_cpu_seconds_total %.2f\n", s->process.cpu_seconds);
        family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        sample_u(b, "process_open_fds", "", s->process.open_fds);
        if (s->process.max_fds > 0) {
            family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
            sample_u(b, "process_max_fds", "", s->process.max_fds);
        }
        family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        sample_u(b, "process_resident_memory_bytes", "", s->process.resident_bytes);
        family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        sample_u(b, "process_virtual_memory_bytes", "", s->process.virtual_bytes);
    }
    family(b, "tether_downstream_connections_accepted_total", "counter",
           "Client connections accepted.");
    sample_u(b, "tether_downstream_connections_accepted_total", "", s->accepted);
    family(b, "tether_downstream_connections_active", "gauge", "Client connections open now.");
    sample_u(b, "tether_downstream_connections_active", "", s->active);
    family(b, "tether_downstream_connections_max", "gauge",
           "Client connections tetherd accepts at most (max_client_connections).");
    sample_u(b, "tether_downstream_connections_max", "", (uint64_t)s->max_client_connections);
    family(b, "tether_downstream_limit_reached_total", "counter",
           "Times a worker stopped accepting at max_client_connections.");
    sample_u(b, "tether_downstream_limit_reached_total", "", s->limit_pauses);
    family(b, "tether_downstream_accept_errors_total", "counter",
           "Failed accept() calls, by reason; out of descriptors (emfile, enfile) or memory "
           "pauses accepting for a short backoff.");
    for (int e = 0; e < TT_ACCEPT_ERRORS; e++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", tt_accept_error_names[e]);
        sample_u(b, "tether_downstream_accept_errors_total", labels, s->accept_errors[e]);
    }
    family(b, "tether_unrouted_responses_total", "counter",
           "Responses to requests that matched no upstream (unknown Host), by status class.");
    for (unsigned c = 1; c < TT_STATUS_CLASSES; c++) {
        snprintf(labels, sizeof(labels), "code=\"%s\"", tt_status_class_name(c));
        sample_u(b, "tether_unrouted_responses_total", labels, s->unrouted[c]);
    }
}

/* Pieces of the per-upstream families: each emits one family's samples for every upstream. */
typedef void (*emit_fn)(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l);

static void each(tt_buf_t *b, const tt_snapshot_t *s, const labels_t *l, emit_fn fn)
{
    for (size_t i = 0; i < s->nupstreams; i++)
        fn(b, &s->ups[i], &l[i]);
}

static void emit_info(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_info", l->ep.data, 1);
}

static void emit_requests(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_requests_total", l->up.data, tt_snapshot_requests(u));
}

static void emit_responses(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (unsigned c = 1; c < TT_STATUS_CLASSES; c++) {
        tt_buf_appendf(b, "tether_upstream_responses_total{%s,code=\"%s\"} %" PRIu64 "\n",
                       l->up.data, tt_status_class_name(c), u->stats.responses[c]);
    }
}

static void emit_abandoned(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_requests_abandoned_total", l->up.data, u->stats.responses[0]);
}

static void emit_generated(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (unsigned c = 1; c < TT_STATUS_CLASSES; c++)
        tt_buf_appendf(b, "tether_upstream_generated_responses_total{%s,code=\"%s\"} %" PRIu64 "\n",
                       l->up.data, tt_status_class_name(c), u->stats.generated[c]);
}

static void emit_sent(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_requests_sent_total", l->up.data, tt_snapshot_sent(u));
}

static void emit_reused(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_requests_reused_total", l->up.data, u->stats.requests_on_reused);
}

static void emit_retries(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    tt_buf_appendf(b, "tether_upstream_retries_total{%s,reason=\"stale_connection\"} %" PRIu64 "\n",
                   l->up.data, u->stats.retries);
}

static void emit_spliced(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_spliced_bytes_total", l->up.data, u->stats.spliced_bytes);
}

static void emit_spliced_request(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_spliced_request_bytes_total", l->up.data,
             u->stats.spliced_request_bytes);
}

static void emit_duration(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    histogram(b, "tether_upstream_request_duration_seconds", l->up.data,
              &u->stats.request_duration_us, duration_bounds, TT_ARRAY_SIZE(duration_bounds), 6);
}

static void emit_opened(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_connections_opened_total", l->ep.data, u->stats.conns_opened);
}

static void emit_handshakes(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    tt_buf_appendf(b, "tether_upstream_handshakes_total{%s,kind=\"tcp\"} %" PRIu64 "\n", l->ep.data,
                   u->stats.conns_opened);
}

static void emit_tls_handshakes(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    if (!u->tls)
        return;
    tt_buf_appendf(b, "tether_upstream_tls_handshakes_total{%s,kind=\"full\"} %" PRIu64 "\n",
                   l->ep.data, u->stats.tls_full);
    tt_buf_appendf(b, "tether_upstream_tls_handshakes_total{%s,kind=\"resumed\"} %" PRIu64 "\n",
                   l->ep.data, u->stats.tls_resumed);
}

static void emit_tls_failures(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    if (!u->tls)
        return;
    for (int f = 0; f < TT_TLS_FAIL__COUNT; f++)
        tt_buf_appendf(
            b, "tether_upstream_tls_handshake_failures_total{%s,cause=\"%s\"} %" PRIu64 "\n",
            l->ep.data, tt_tls_failure_name((tt_tls_failure_t)f), u->stats.tls_failures[f]);
}

static void emit_tls_duration(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    if (u->tls)
        histogram(b, "tether_upstream_tls_handshake_duration_seconds", l->up.data,
                  &u->stats.tls_handshake_us, duration_bounds, TT_ARRAY_SIZE(duration_bounds), 6);
}

static void emit_handed_over(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_connections_handed_over_total", l->ep.data, u->stats.handed_over);
}

static void emit_closed(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    /* Every reason, zeros included, so rate() works from the first close of a new kind. */
    for (int r = 1; r < TT_CLOSE__COUNT; r++)
        tt_buf_appendf(
            b, "tether_upstream_connections_closed_total{%s,reason=\"%s\"} %" PRIu64 "\n",
            l->ep.data, tt_close_reason_name((tt_close_reason_t)r), u->stats.conns_closed[r]);
}

static void emit_states(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    tt_buf_appendf(b, "tether_upstream_connections{%s,state=\"connecting\"} %" PRIu64 "\n",
                   l->ep.data, u->live.connecting);
    tt_buf_appendf(b, "tether_upstream_connections{%s,state=\"idle\"} %" PRIu64 "\n", l->ep.data,
                   u->live.idle);
    tt_buf_appendf(b, "tether_upstream_connections{%s,state=\"active\"} %" PRIu64 "\n", l->ep.data,
                   u->live.active);
}

static void emit_age(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    histogram(b, "tether_upstream_connection_age_seconds", l->up.data, &u->stats.conn_age_ms,
              age_bounds, TT_ARRAY_SIZE(age_bounds), 3);
}

static void emit_mean_age(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    uint64_t n = u->live.idle + u->live.active + u->live.connecting;
    sample_scaled(b, "tether_upstream_connection_mean_age_seconds", l->up.data,
                  n > 0 ? u->live.age_sum_ms / n : 0, 3);
}

static void emit_per_conn(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    histogram(b, "tether_upstream_requests_per_connection", l->up.data, &u->stats.conn_requests,
              requests_bounds, TT_ARRAY_SIZE(requests_bounds), 0);
}

static void emit_queue_length(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_queue_length", l->up.data, u->live.queued);
}

static void emit_queued(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_queued_total", l->up.data, u->stats.queued);
}

static void emit_queue_wait(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    histogram(b, "tether_upstream_queue_wait_seconds", l->up.data, &u->stats.queue_wait_us,
              duration_bounds, TT_ARRAY_SIZE(duration_bounds), 6);
}

static void emit_rejected(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (int r = 0; r < TT_REJECT__COUNT; r++)
        tt_buf_appendf(b, "tether_upstream_rejected_total{%s,reason=\"%s\"} %" PRIu64 "\n",
                       l->up.data, tt_reject_reason_name((tt_reject_reason_t)r),
                       u->stats.rejected[r]);
}

static void emit_lease_warnings(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_lease_warnings_total", l->up.data, u->stats.lease_warnings);
}

static void emit_idle_timeout(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_scaled(b, "tether_upstream_idle_timeout_seconds", l->up.data, u->idle_timeout_ms, 3);
}

static void emit_learned(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_scaled(b, "tether_upstream_learned_idle_timeout_seconds", l->up.data,
                  u->learned_idle_timeout_ms, 3);
}

static void emit_socket_mem(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_socket_memory_bytes", l->ep.data, u->live.socket_mem_bytes);
}

static void emit_failovers(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_connect_failovers_total", l->up.data, u->stats.connect_failovers);
}

static void emit_ejections(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (int c = 0; c < TT_EJECT__COUNT; c++)
        tt_buf_appendf(b, "tether_ejections_total{%s,cause=\"%s\"} %" PRIu64 "\n", l->up.data,
                       tt_eject_cause_name((tt_eject_cause_t)c), u->stats.ejections[c]);
}

/* The 503s of tether_upstream_rejected_total{reason="breaker_open"} under the name the health
 * docs and dashboards use for them: one counter, two names. */
static void emit_fast_failures(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_fast_failures_total", l->up.data,
             u->stats.rejected[TT_REJECT_BREAKER_OPEN]);
}

static void emit_health_checks(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (int r = 0; r < TT_HEALTH_RESULTS; r++)
        tt_buf_appendf(b, "tether_health_checks_total{%s,result=\"%s\"} %" PRIu64 "\n", l->up.data,
                       tt_health_result_name((tt_health_result_t)r), u->stats.health_checks[r]);
}

static void emit_endpoint_up(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (size_t i = 0; i < u->nendpoints; i++) {
        const tt_endpoint_row_t *r = &u->endpoints[i];
        tt_buf_appendf(b, "tether_endpoint_up{%s,endpoint=", l->up.data);
        tt_prom_put_label_value(b, r->address);
        tt_buf_appendf(b, "} %d\n", strcmp(tt_endpoint_row_state(r), "up") == 0);
    }
}

static void emit_endpoint_state(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    static const char *const states[] = {"up", "down", "ejected", "half_open"};
    for (size_t i = 0; i < u->nendpoints; i++) {
        const char *now = tt_endpoint_row_state(&u->endpoints[i]);
        for (size_t s = 0; s < TT_ARRAY_SIZE(states); s++) {
            tt_buf_appendf(b, "tether_endpoint_state{%s,endpoint=", l->up.data);
            tt_prom_put_label_value(b, u->endpoints[i].address);
            tt_buf_appendf(b, ",state=\"%s\"} %d\n", states[s], strcmp(now, states[s]) == 0);
        }
    }
}

static void emit_probes(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (int r = 0; r < TT_PROBE_RESULTS; r++)
        tt_buf_appendf(b, "tether_probes_total{%s,result=\"%s\"} %" PRIu64 "\n", l->up.data,
                       tt_probe_result_name((tt_probe_result_t)r), u->stats.probes[r]);
}

static void emit_endpoints(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    tt_buf_appendf(b, "tether_upstream_endpoints{%s,state=\"active\"} %" PRIu64 "\n", l->up.data,
                   u->endpoints_active);
    tt_buf_appendf(b, "tether_upstream_endpoints{%s,state=\"draining\"} %" PRIu64 "\n", l->up.data,
                   u->endpoints_draining);
}

static void emit_endpoint_requests(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    for (size_t i = 0; i < u->nendpoints; i++) {
        tt_buf_appendf(b, "tether_upstream_endpoint_requests_total{%s,endpoint=", l->up.data);
        tt_prom_put_label_value(b, u->endpoints[i].address);
        tt_buf_appendf(b, "} %" PRIu64 "\n", u->endpoints[i].requests);
    }
}

static void emit_dns_lookups(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    static const char *const results[] = {"ok", "empty", "error"};
    if (!u->dns_followed)
        return;
    for (size_t r = 0; r < 3; r++)
        tt_buf_appendf(b, "tether_dns_lookups_total{%s,result=\"%s\"} %" PRIu64 "\n", l->up.data,
                       results[r], u->dns_lookups[r]);
}

static void emit_dns_change(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    if (u->dns_followed)
        sample_scaled(b, "tether_dns_last_change_timestamp_seconds", l->up.data,
                      u->dns_last_change_ms, 3);
}

static void emit_max_conns(tt_buf_t *b, const tt_upstream_snapshot_t *u, const labels_t *l)
{
    sample_u(b, "tether_upstream_max_connections", l->up.data, (uint64_t)u->max_connections);
}

static const struct {
    const char *name, *type, *help;
    emit_fn fn;
} upstream_families[] = {
    {"tether_upstream_info", "gauge", "Configured upstream and its endpoint; always 1.", emit_info},
    {"tether_upstream_requests_total", "counter", "Client requests routed to the upstream.",
     emit_requests},
    {"tether_upstream_responses_total", "counter",
     "Responses sent to clients for the upstream, by status class (tether's own included).",
     emit_responses},
    {"tether_upstream_requests_abandoned_total", "counter",
     "Requests whose client went away before a response head was sent.", emit_abandoned},
    {"tether_upstream_generated_responses_total", "counter",
     "Responses generated by tether itself (errors such as 502, 503, 504), by status class.",
     emit_generated},
    {"tether_upstream_requests_sent_total", "counter",
     "Requests sent on upstream connections (retries included): the reuse ratio's denominator.",
     emit_sent},
    {"tether_upstream_requests_reused_total", "counter",
     "Requests sent on a connection that had served a request before.", emit_reused},
    {"tether_upstream_retries_total", "counter",
     "Requests retried on a fresh connection, by reason.", emit_retries},
    {"tether_upstream_spliced_bytes_total", "counter",
     "Response body bytes relayed with splice(2), never copied into tetherd.", emit_spliced},
    {"tether_upstream_spliced_request_bytes_total", "counter",
     "Request body bytes relayed with splice(2), never copied into tetherd.", emit_spliced_request},
    {"tether_upstream_request_duration_seconds", "histogram",
     "Time from a request head received to its response complete.", emit_duration},
    {"tether_upstream_connections_opened_total", "counter",
     "Upstream connections opened (TCP connects started).", emit_opened},
    {"tether_upstream_handshakes_total", "counter", "Handshakes with the upstream, by kind.",
     emit_handshakes},
    {"tether_upstream_tls_handshakes_total", "counter",
     "TLS handshakes completed with the upstream: full, or resuming a session.",
     emit_tls_handshakes},
    {"tether_upstream_tls_handshake_failures_total", "counter",
     "TLS handshakes with the upstream that failed, by cause.", emit_tls_failures},
    {"tether_upstream_tls_handshake_duration_seconds", "histogram",
     "Time from TCP connected to TLS handshake done.", emit_tls_duration},
    {"tether_upstream_connections_closed_total", "counter",
     "Upstream connections closed, by the pool's reason.", emit_closed},
    {"tether_upstream_connections_handed_over_total", "counter",
     "Idle connections one worker took over from another (no close, no new handshake).",
     emit_handed_over},
    {"tether_upstream_connections", "gauge", "Upstream connections now, by state.", emit_states},
    {"tether_upstream_connection_age_seconds", "histogram",
     "Age of upstream connections when they closed.", emit_age},
    {"tether_upstream_connection_mean_age_seconds", "gauge",
     "Mean age of the upstream connections open now.", emit_mean_age},
    {"tether_upstream_requests_per_connection", "histogram",
     "Requests served by each upstream connection, counted when it closed.", emit_per_conn},
    {"tether_upstream_queue_length", "gauge", "Requests waiting for a connection now.",
     emit_queue_length},
    {"tether_upstream_queued_total", "counter", "Requests that waited for a connection.",
     emit_queued},
    {"tether_upstream_queue_wait_seconds", "histogram",
     "Time requests waited in the queue for a connection.", emit_queue_wait},
    {"tether_upstream_rejected_total", "counter",
     "Requests refused without reaching the upstream, by reason.", emit_rejected},
    {"tether_upstream_lease_warnings_total", "counter",
     "Connections leased longer than lease_warn.", emit_lease_warnings},
    {"tether_upstream_idle_timeout_seconds", "gauge",
     "Idle expiry in force for pooled connections.", emit_idle_timeout},
    {"tether_upstream_learned_idle_timeout_seconds", "gauge",
     "Upstream idle timeout learned by idle_timeout = auto (0: nothing learned yet).",
     emit_learned},
    {"tether_upstream_socket_memory_bytes", "gauge",
     "Kernel memory held by the pooled sockets (SO_MEMINFO).", emit_socket_mem},
    {"tether_upstream_max_connections", "gauge", "Configured max_connections.", emit_max_conns},
    {"tether_upstream_endpoints", "gauge",
     "Endpoints of the upstream, by state (draining: left the set, connections finishing).",
     emit_endpoints},
    {"tether_upstream_endpoint_requests_total", "counter",
     "Requests the balancer sent to each endpoint (those still in the set).",
     emit_endpoint_requests},
    {"tether_upstream_connect_failovers_total", "counter",
     "Failed connects tried again on another endpoint (connect_retries).", emit_failovers},
    {"tether_probes_total", "counter",
     "Probes of idle upstream connections, by result (anything but ok closed the connection).",
     emit_probes},
    {"tether_health_checks_total", "counter",
     "Active health checks of endpoints (health_check), by result; every worker checks.",
     emit_health_checks},
    {"tether_endpoint_up", "gauge",
     "1 while no worker sees the endpoint down (health checks) or ejected (breaker), else 0.",
     emit_endpoint_up},
    {"tether_endpoint_state", "gauge",
     "1 for the endpoint's state (the worst over the workers' views): up, down, ejected or "
     "half_open.",
     emit_endpoint_state},
    {"tether_ejections_total", "counter",
     "Endpoints ejected by their circuit breaker, by cause (re-ejections after a failed trial "
     "included).",
     emit_ejections},
    {"tether_fast_failures_total", "counter",
     "Requests answered 503 at once because every endpoint was down or ejected.",
     emit_fast_failures},
    {"tether_dns_lookups_total", "counter",
     "DNS lookups of the upstream's host, by result (ok, empty: NXDOMAIN or no address, error).",
     emit_dns_lookups},
    {"tether_dns_last_change_timestamp_seconds", "gauge",
     "When DNS last changed the upstream's endpoint set (seconds since the epoch; 0: never).",
     emit_dns_change},
};

void tt_prom_render(const tt_snapshot_t *s, tt_buf_t *b)
{
    render_process(s, b);
    if (s->nupstreams == 0)
        return;
    labels_t *l = tt_calloc(s->nupstreams, sizeof(*l));
    for (size_t i = 0; i < s->nupstreams; i++)
        labels_init(&l[i], &s->ups[i]);
    for (size_t f = 0; f < TT_ARRAY_SIZE(upstream_families); f++) {
        family(b, upstream_families[f].name, upstream_families[f].type, upstream_families[f].help);
        each(b, s, l, upstream_families[f].fn);
    }
    for (size_t i = 0; i < s->nupstreams; i++)
        labels_free(&l[i]);
    free(l);
}
