#include "upstream/stats.h"

#include "core/invariant.h"

const char *tt_status_class_name(unsigned cls)
{
    static const char *const names[TT_STATUS_CLASSES] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    return cls < TT_STATUS_CLASSES ? names[cls] : "none";
}

const char *tt_reject_reason_name(tt_reject_reason_t r)
{
    switch (r) {
    case TT_REJECT_QUEUE_FULL:
        return "queue_full";
    case TT_REJECT_QUEUE_TIMEOUT:
        return "queue_timeout";
    case TT_REJECT_NO_ENDPOINTS:
        return "no_endpoints";
    case TT_REJECT_BREAKER_OPEN:
        return "breaker_open";
    default:
        return "unknown";
    }
}

void tt_upstream_stats_merge(tt_upstream_stats_t *dst, const tt_upstream_stats_t *src)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(dst->responses); i++) {
        dst->responses[i] += src->responses[i];
        dst->generated[i] += src->generated[i];
    }
    dst->requests_on_reused += src->requests_on_reused;
    dst->retries += src->retries;
    dst->spliced_bytes += src->spliced_bytes;
    dst->spliced_request_bytes += src->spliced_request_bytes;
    dst->connect_failovers += src->connect_failovers;
    for (size_t i = 0; i < TT_EJECT__COUNT; i++)
        dst->ejections[i] += src->ejections[i];
    for (size_t i = 0; i < TT_PROBE_RESULTS; i++)
        dst->probes[i] += src->probes[i];
    for (size_t i = 0; i < TT_HEALTH_RESULTS; i++)
        dst->health_checks[i] += src->health_checks[i];
    dst->conns_opened += src->conns_opened;
    for (size_t i = 0; i < TT_CLOSE__COUNT; i++)
        dst->conns_closed[i] += src->conns_closed[i];
    for (size_t i = 0; i < TT_REJECT__COUNT; i++)
        dst->rejected[i] += src->rejected[i];
    dst->queued += src->queued;
    dst->lease_warnings += src->lease_warnings;
    dst->handed_over += src->handed_over;
    dst->tls_full += src->tls_full;
    dst->tls_resumed += src->tls_resumed;
    for (size_t i = 0; i < TT_TLS_FAIL__COUNT; i++)
        dst->tls_failures[i] += src->tls_failures[i];
    tt_hist_merge(&dst->tls_handshake_us, &src->tls_handshake_us);
    tt_hist_merge(&dst->request_duration_us, &src->request_duration_us);
    tt_hist_merge(&dst->queue_wait_us, &src->queue_wait_us);
    tt_hist_merge(&dst->conn_age_ms, &src->conn_age_ms);
    tt_hist_merge(&dst->conn_requests, &src->conn_requests);
}

const char *tt_eject_cause_name(tt_eject_cause_t c)
{
    static const char *const names[TT_EJECT__COUNT] = {
        [TT_EJECT_CONNECT] = "connect",           [TT_EJECT_RESET] = "reset",
        [TT_EJECT_TIMEOUT] = "timeout",           [TT_EJECT_5XX] = "5xx",
        [TT_EJECT_HEALTH_CHECK] = "health_check",
    };
    return (unsigned)c < TT_EJECT__COUNT ? names[c] : "unknown";
}
