/* An upstream service as all workers share it: its configuration, the addresses of its endpoints,
 * and the few counters that must hold across workers (connections against max_connections, idle
 * connections against max_idle, the learned idle timeout). Everything else lives in per-worker
 * pools, each with its own view of the endpoints (upstream/endpoint.h). */
#ifndef TT_UPSTREAM_UPSTREAM_H
#define TT_UPSTREAM_UPSTREAM_H

#include "config/config.h"
#include "core/clock.h"
#include "event/sock.h"
#include "health/probe.h"
#include "net/tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tt_pool tt_pool_t;
typedef struct tt_dns_stats tt_dns_stats_t;

typedef struct tt_upstream {
    const tt_upstream_conf_t *conf;
    size_t index;
    char addr_str[TT_ADDR_STRLEN]; /* the url's authority, "host:port" (cut if long), for logs */
    char host_header[300];         /* Host sent on dedicated ports: "host" or "host:port" */
    tt_sockopts_t sockopts;
    tt_tls_client_t *tls;   /* NULL for http:// */
    tt_probe_conf_t *probe; /* probes of idle connections; NULL: off */
    tt_check_conf_t *check; /* active health checks of each endpoint; NULL: off */

    _Atomic int64_t nconns;      /* connecting + active + idle, all workers */
    _Atomic int64_t nidle;       /* idle, all workers */
    _Atomic int64_t nwaiting;    /* requests queued, all workers */
    _Atomic int64_t hint_ms;     /* from Keep-Alive: timeout=N; 0 = none seen */
    _Atomic int64_t observed_ms; /* shortest idle time after which the upstream closed; 0 = none */
    _Atomic uint64_t next_conn_id;
    _Atomic uint32_t tls_failures_logged; /* bit per tt_tls_failure_t, since the last success */

    /* The endpoint addresses in force: fixed at startup for an explicit list or an IP address,
     * else published by discovery after each change. Workers copy them when ep_version moves. */
    pthread_mutex_t ep_lock;
    tt_addr_t *ep_addrs; /* under ep_lock */
    size_t ep_naddrs;    /* under ep_lock */
    _Atomic uint64_t ep_version;
    _Atomic int dns_followed;        /* discovery re-resolves the url's host */
    const tt_dns_stats_t *dns_stats; /* the lookups, when followed; set before workers start */

    size_t nworkers;
    tt_pool_t **pools; /* one per worker, indexed by worker id; set before workers start */
} tt_upstream_t;

/* Prepares the shared state, TLS included, and the first endpoint set: the explicit list, the
 * url's IP address, or every address its host resolves to now (blocking). A name that does not
 * resolve is an error with dns_refresh = off; otherwise the upstream starts without endpoints
 * and discovery keeps trying. conf_path names the configuration file in errors. Returns 0, or -1
 * with a reason in err. */
int tt_upstream_init(tt_upstream_t *up, const tt_upstream_conf_t *conf, const char *conf_path,
                     size_t index, size_t nworkers, char *err, size_t errlen);
void tt_upstream_destroy(tt_upstream_t *up);

/* Derives again what init copied from the numbers of up->conf (socket options, probe timing),
 * after a reload changed them in place. New connections and the next probes use them. Called
 * at init, and by a reload while every worker is paused. */
void tt_upstream_reconfigure(tt_upstream_t *up);

/* The TLS options of an https:// upstream's configuration; errors name conf_path and the line of
 * each key. The strings stay conf's. */
void tt_upstream_tls_options(const tt_upstream_conf_t *conf, const char *conf_path,
                             tt_tls_options_t *opts);

/* Replaces the endpoint addresses (sorted, without duplicates) and wakes every worker to take
 * them. Thread-safe. */
void tt_upstream_publish_endpoints(tt_upstream_t *up, const tt_addr_t *addrs, size_t n);

/* Copies the endpoint addresses in force into a new array the caller frees (*out may be NULL
 * when there is none) and returns their count; *version is the version copied. Thread-safe. */
size_t tt_upstream_copy_endpoints(tt_upstream_t *up, tt_addr_t **out, uint64_t *version);

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
