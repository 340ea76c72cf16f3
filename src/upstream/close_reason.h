/* Why an upstream connection was closed or not reused: one enumeration, one log word, one metric
 * label each, so "why was this connection not reused?" always has an answer. */
#ifndef TT_UPSTREAM_CLOSE_REASON_H
#define TT_UPSTREAM_CLOSE_REASON_H

typedef enum {
    TT_REUSE_OK = 0,           /* every checklist item passed: keep it */
    TT_CLOSE_IDLE_EXPIRED,     /* idle longer than the idle timeout */
    TT_CLOSE_LIFETIME,         /* max_lifetime reached */
    TT_CLOSE_MAX_REQUESTS,     /* max_requests served */
    TT_CLOSE_PEER_CLOSED,      /* upstream closed it while idle */
    TT_CLOSE_STRAY_DATA,       /* upstream sent bytes while idle */
    TT_CLOSE_CHECKOUT_FAILED,  /* liveness check at checkout failed */
    TT_CLOSE_NOT_KEEPALIVE,    /* upstream said close, or the response ended at close */
    TT_CLOSE_RESPONSE_PARTIAL, /* response not fully read (client went away, error) */
    TT_CLOSE_REQUEST_PARTIAL,  /* request not fully sent */
    TT_CLOSE_UPGRADED,         /* became a tunnel */
    TT_CLOSE_ERROR,            /* I/O or protocol error */
    TT_CLOSE_CONNECT_FAILED,   /* connect refused, unreachable or timed out */
    TT_CLOSE_TLS_FAILED,       /* TLS handshake failed or timed out */
    TT_CLOSE_RESPONSE_TIMEOUT, /* no response in response_timeout */
    TT_CLOSE_LEASE_TIMEOUT,    /* leased longer than lease_timeout */
    TT_CLOSE_POOL_FULL,        /* max_idle reached */
    TT_CLOSE_TRIMMED,          /* surplus idle connection after a burst */
    TT_CLOSE_SHUTDOWN,         /* tetherd is stopping */
    TT_CLOSE_ENDPOINT_REMOVED, /* its endpoint left the upstream's set (DNS) */
    TT_CLOSE_PROBE_FAILED,     /* a probe while idle got no good answer in probe_timeout */
    TT_CLOSE_ENDPOINT_DOWN,    /* its endpoint failed health_fall active checks in a row */
    TT_CLOSE__COUNT
} tt_close_reason_t;

/* Short snake_case name, for logs and metric labels. */
const char *tt_close_reason_name(tt_close_reason_t r);

#endif
