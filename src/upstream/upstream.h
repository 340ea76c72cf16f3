/* An upstream service as all workers share it: its configuration, its endpoint, and the few
 * counters that must hold across workers (connections against max_connections, idle connections
 * against max_idle, the learned idle timeout). Everything else lives in per-worker pools. */
#ifndef TT_UPSTREAM_UPSTREAM_H
#define TT_UPSTREAM_UPSTREAM_H

#include "config/config.h"
#include "core/clock.h"
#include "event/sock.h"
#include "net/tls.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tt_pool tt_pool_t;

typedef struct tt_upstream {
    const tt_upstream_conf_t *conf;
    size_t index;
    tt_addr_t addr; /* the endpoint (DNS re-resolution will make this a set) */
    char addr_str[TT_ADDR_STRLEN];
    char host_header[300]; /* Host sent on dedicated ports: "host" or "host:port" */
    tt_sockopts_t sockopts;
    tt_tls_client_t *tls; /* NULL for http:// */

    _Atomic int64_t nconns;      /* connecting + active + idle, all workers */
    _Atomic int64_t nidle;       /* idle, all workers */
    _Atomic int64_t nwaiting;    /* requests queued, all workers */
    _Atomic int64_t hint_ms;     /* from Keep-Alive: timeout=N; 0 = none seen */
    _Atomic int64_t observed_ms; /* shortest idle time after which the upstream closed; 0 = none */
    _Atomic uint64_t next_conn_id;
    _Atomic uint32_t tls_failures_logged; /* bit per tt_tls_failure_t, since the last success */

    size_t nworkers;
    tt_pool_t **pools; /* one per worker, indexed by worker id; set before workers start */
} tt_upstream_t;

/* Resolves the endpoint and prepares the shared state, TLS included (conf_path names the
 * configuration file in errors). Returns 0, or -1 with a reason in err. */
int tt_upstream_init(tt_upstream_t *up, const tt_upstream_conf_t *conf, const char *conf_path,
                     size_t index, size_t nworkers, char *err, size_t errlen);
void tt_upstream_destroy(tt_upstream_t *up);

/* The TLS options of an https:// upstream's configuration; errors name conf_path and the line of
 * each key. The strings stay conf's. */
void tt_upstream_tls_options(const tt_upstream_conf_t *conf, const char *conf_path,
                             tt_tls_options_t *opts);

/* Idle expiry in force: the configured idle_timeout, or with "auto" a safe margin under what was
 * learned (60 s until anything is). */
tt_msec_t tt_upstream_idle_timeout(const tt_upstream_t *up);

/* Learns from a Keep-Alive: timeout=N response hint. Thread-safe. */
void tt_upstream_learn_hint(tt_upstream_t *up, int seconds);
/* Learns from the upstream closing a connection that had been idle idle_ms. Thread-safe. */
void tt_upstream_learn_idle_close(tt_upstream_t *up, tt_msec_t idle_ms);

/* Logs a TLS handshake failure once per cause until a handshake succeeds again, so an upstream
 * with a bad certificate does not flood the log at the request rate. Thread-safe. */
void tt_upstream_tls_failed(tt_upstream_t *up, tt_tls_failure_t why, const char *detail);
/* A handshake succeeded: failures are worth a log line again. Thread-safe. */
void tt_upstream_tls_succeeded(tt_upstream_t *up);

/* What auto mode has learned so far, in ms (0: nothing yet). */
tt_msec_t tt_upstream_learned_ms(const tt_upstream_t *up);

#endif
