/* A snapshot: every figure tether exports, gathered at one moment and merged over workers.
 *
 * The admin endpoint builds one per scrape (see proxy/introspect.h, which asks each worker for its
 * share) and renders it as Prometheus text (metrics/prometheus.h) or JSON (metrics/stats_json.h).
 * The snapshot is plain data owned by whoever called tt_snapshot_new(); the names it points to
 * (upstream names) belong to the configuration, which outlives every snapshot. Nothing here is
 * shared with a worker: the request path never sees a snapshot. */
#ifndef TT_METRICS_SNAPSHOT_H
#define TT_METRICS_SNAPSHOT_H

#include "upstream/stats.h"

#include <stddef.h>
#include <stdint.h>

#define TT_SNAPSHOT_ENDPOINT_LEN 120 /* TT_ADDR_STRLEN */

/* Live figures of an upstream's pools, summed over workers (tt_pool_gauges plus the requests the
 * live connections have served, so a reuse ratio can count connections that have not closed). */
typedef struct {
    uint64_t idle, active, connecting, queued;
    uint64_t age_sum_ms;       /* over all live connections */
    uint64_t socket_mem_bytes; /* SO_MEMINFO of the pooled sockets */
    uint64_t live_requests;    /* requests started on the live connections */
} tt_live_gauges_t;

/* One endpoint of an upstream, merged over the workers' views by address. */
typedef struct {
    char address[TT_SNAPSHOT_ENDPOINT_LEN];
    int draining;      /* in every worker's view */
    uint64_t requests; /* requests the balancers sent to it */
    uint64_t connections, idle, outstanding;
    /* Health, over the workers' views (each checks and ejects on its own): how many see it down
     * (health checks), ejected (breaker open) or half-open, and the newest transition. */
    uint32_t views, down, ejected, half_open;
    uint64_t changed_ago_ms; /* since its last down/up transition; UINT64_MAX: never */
} tt_endpoint_row_t;

/* "up", "down", "ejected" or "half_open": the worst state any worker's view has. */
const char *tt_endpoint_row_state(const tt_endpoint_row_t *r);

typedef struct {
    const char *name;
    char endpoint[TT_SNAPSHOT_ENDPOINT_LEN];
    tt_upstream_stats_t stats; /* summed over workers */
    tt_live_gauges_t live;
    uint64_t idle_timeout_ms;         /* in force now */
    uint64_t learned_idle_timeout_ms; /* what idle_timeout = auto learned; 0: nothing yet */
    int idle_timeout_auto;
    int tls; /* https:// upstream */
    int64_t max_connections, max_idle, min_idle;
    tt_endpoint_row_t *endpoints; /* [nendpoints], sorted as the workers' sets */
    size_t nendpoints;
    uint64_t endpoints_active, endpoints_draining; /* the largest worker view */
    int dns_followed;                              /* the url's host is re-resolved */
    uint64_t dns_lookups[3];                       /* ok, empty, error */
    uint64_t dns_last_change_ms;                   /* wall clock; 0: never changed */
} tt_upstream_snapshot_t;

/* The row for address in u, added (zeroed) if new. */
tt_endpoint_row_t *tt_snapshot_endpoint(tt_upstream_snapshot_t *u, const char *address);

/* The process, from /proc/self (tt_process_read). */
typedef struct {
    int ok;              /* 0 if /proc could not be read: the figures below are 0 */
    double start_time_s; /* since the epoch */
    double cpu_seconds;  /* user + system */
    uint64_t open_fds;   /* entries of /proc/self/fd */
    uint64_t max_fds;    /* RLIMIT_NOFILE soft limit */
    uint64_t resident_bytes;
    uint64_t virtual_bytes;
} tt_process_info_t;

/* Why accept() failed: the reason label of tether_downstream_accept_errors_total. */
typedef enum {
    TT_ACCEPT_EMFILE, /* the process's descriptor limit */
    TT_ACCEPT_ENFILE, /* the system's */
    TT_ACCEPT_NOMEM,  /* ENOBUFS, ENOMEM */
    TT_ACCEPT_OTHER,
    TT_ACCEPT_ERRORS
} tt_accept_error_t;

extern const char *const tt_accept_error_names[TT_ACCEPT_ERRORS];

typedef struct {
    const char *version;
    double time_s;   /* wall clock when taken, seconds since the epoch */
    double uptime_s; /* monotonic seconds since tetherd started (rates divide by its deltas) */
    int ready;
    size_t nworkers;
    uint64_t accepted; /* downstream connections accepted */
    uint64_t active;   /* downstream connections open now */
    uint64_t
        unrouted[TT_STATUS_CLASSES]; /* responses by class to requests that reached no upstream */
    uint64_t accept_errors[TT_ACCEPT_ERRORS];
    uint64_t limit_pauses; /* times a worker stopped accepting at max_client_connections */
    int64_t max_client_connections;
    tt_process_info_t process;
    size_t nupstreams;
    tt_upstream_snapshot_t *ups; /* [nupstreams] */
} tt_snapshot_t;

/* A zeroed snapshot with room for nupstreams upstreams. The caller frees it (tt_snapshot_free). */
tt_snapshot_t *tt_snapshot_new(size_t nupstreams);
void tt_snapshot_free(tt_snapshot_t *s);

/* Requests sent to the upstream (every lease of a connection, retries included): those counted by
 * connections that closed plus those of live connections. The denominator of the reuse ratio. */
uint64_t tt_snapshot_sent(const tt_upstream_snapshot_t *u);

/* Requests clients sent that were routed to this upstream (responses of every class, plus those
 * the client abandoned before a response head). */
uint64_t tt_snapshot_requests(const tt_upstream_snapshot_t *u);

/* Fills p from /proc/self; p->ok says whether it could. */
void tt_process_read(tt_process_info_t *p);

/* One upstream connection as /pools shows it. */
typedef enum { TT_ROW_CONNECTING, TT_ROW_IDLE, TT_ROW_ACTIVE } tt_conn_row_state_t;

typedef struct {
    const char *upstream; /* owned by the configuration */
    char endpoint[TT_SNAPSHOT_ENDPOINT_LEN];
    uint32_t worker;
    tt_conn_row_state_t state;
    uint64_t id;
    uint64_t age_ms;
    int64_t idle_ms; /* time since it became idle; -1 when not idle */
    uint64_t requests;
    uint64_t socket_mem_bytes;
} tt_conn_row_t;

/* A growable list of rows; zero-initialise, append with tt_conn_list_push, free with
 * tt_conn_list_free. */
typedef struct {
    tt_conn_row_t *rows;
    size_t n, cap;
} tt_conn_list_t;

tt_conn_row_t *tt_conn_list_push(tt_conn_list_t *l);
void tt_conn_list_free(tt_conn_list_t *l);
const char *tt_conn_row_state_name(tt_conn_row_state_t s);

#endif
