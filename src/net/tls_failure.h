/* Why a TLS handshake with an upstream failed: the cause a client's 502 names, the label of
 * tether_upstream_tls_handshake_failures_total, and the unit of "logged once per endpoint". */
#ifndef TT_NET_TLS_FAILURE_H
#define TT_NET_TLS_FAILURE_H

typedef enum {
    TT_TLS_FAIL_UNTRUSTED,        /* chain does not lead to a trusted CA */
    TT_TLS_FAIL_NAME_MISMATCH,    /* certificate is not for tls_server_name */
    TT_TLS_FAIL_EXPIRED,          /* or not yet valid */
    TT_TLS_FAIL_PROTOCOL_VERSION, /* no TLS version both sides accept */
    TT_TLS_FAIL_TIMEOUT,          /* not done within connect_timeout */
    TT_TLS_FAIL_REJECTED,         /* the upstream sent an alert (a client certificate missing?) */
    TT_TLS_FAIL_CLOSED,           /* the upstream closed the connection mid-handshake */
    TT_TLS_FAIL_OTHER,
    TT_TLS_FAIL__COUNT,
} tt_tls_failure_t;

/* Metric label: "untrusted", "name_mismatch", ... */
const char *tt_tls_failure_name(tt_tls_failure_t f);
/* For people: "certificate not trusted", "name mismatch", ... */
const char *tt_tls_failure_phrase(tt_tls_failure_t f);
/* The RFC 9209 Proxy-Status error type: "tls_certificate_error", "tls_alert_received", ... */
const char *tt_proxy_status_for_tls(tt_tls_failure_t f);

#endif
