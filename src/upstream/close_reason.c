#include "upstream/close_reason.h"

static const char *const names[TT_CLOSE__COUNT] = {
    [TT_REUSE_OK] = "reused",
    [TT_CLOSE_IDLE_EXPIRED] = "idle_expired",
    [TT_CLOSE_LIFETIME] = "lifetime",
    [TT_CLOSE_MAX_REQUESTS] = "max_requests",
    [TT_CLOSE_PEER_CLOSED] = "peer_closed",
    [TT_CLOSE_STRAY_DATA] = "stray_data",
    [TT_CLOSE_CHECKOUT_FAILED] = "checkout_failed",
    [TT_CLOSE_NOT_KEEPALIVE] = "not_keepalive",
    [TT_CLOSE_RESPONSE_PARTIAL] = "response_partial",
    [TT_CLOSE_REQUEST_PARTIAL] = "request_partial",
    [TT_CLOSE_UPGRADED] = "upgraded",
    [TT_CLOSE_ERROR] = "error",
    [TT_CLOSE_CONNECT_FAILED] = "connect_failed",
    [TT_CLOSE_TLS_FAILED] = "tls_failed",
    [TT_CLOSE_RESPONSE_TIMEOUT] = "response_timeout",
    [TT_CLOSE_LEASE_TIMEOUT] = "lease_timeout",
    [TT_CLOSE_POOL_FULL] = "pool_full",
    [TT_CLOSE_TRIMMED] = "trimmed",
    [TT_CLOSE_SHUTDOWN] = "shutdown",
    [TT_CLOSE_ENDPOINT_REMOVED] = "endpoint_removed",
    [TT_CLOSE_PROBE_FAILED] = "probe_failed",
    [TT_CLOSE_ENDPOINT_DOWN] = "endpoint_down",
};

const char *tt_close_reason_name(tt_close_reason_t r)
{
    return (unsigned)r < TT_CLOSE__COUNT ? names[r] : "unknown";
}
