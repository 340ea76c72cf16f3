/* What the admin endpoint sees of the running proxy: snapshots of every worker's statistics and
 * pools, the connection list, readiness and the effective configuration.
 *
 * Worker-owned state is read only through tt_worker_call(): each worker in turn runs a short
 * function on its own thread that adds its counters, histograms and pool gauges into the
 * caller's snapshot (or appends its connections to the caller's list) while the admin thread
 * waits. So the request path keeps plain increments with no lock and no atomic, and a snapshot
 * is consistent per worker (not across workers, which no reader needs). The cost to a worker is
 * one wakeup and a merge of a few kilobytes of counters per upstream per scrape.
 *
 * The server owns the tt_introspect_t, the workers and the upstreams; it stops the admin thread
 * before workers drain. */
#ifndef TT_PROXY_INTROSPECT_H
#define TT_PROXY_INTROSPECT_H

#include "config/config.h"
#include "metrics/admin.h"
#include "metrics/snapshot.h"
#include "proxy/worker.h"
#include "upstream/upstream.h"

#include <pthread.h>
#include <stdatomic.h>

/* How long the admin thread waits for one worker to answer. */
#define TT_INTROSPECT_CALL_TIMEOUT_MS 1000

typedef struct {
    const tt_conf_t *conf;
    tt_upstream_t **ups;
    size_t nups;
    tt_worker_t *workers;
    size_t nworkers;
    uint64_t started_us;        /* monotonic: when tetherd started (uptime) */
    tt_msec_t warm_deadline_ms; /* monotonic: ready even if not pre-warmed after this */
    _Atomic int running;        /* listeners bound and workers started */
    int warmed;                 /* pre-warming seen complete (admin thread only) */
    /* Held by the admin operations that read the configuration, and by a reload while it
     * writes the configuration's numbers in place (proxy/server.c). */
    pthread_mutex_t conf_lock;
} tt_introspect_t;

/* Prepares in for the given server state; not yet running. */
void tt_introspect_init(tt_introspect_t *in, const tt_conf_t *conf, tt_upstream_t **ups,
                        size_t nups, tt_worker_t *workers, size_t nworkers);

/* Frees what init made. */
void tt_introspect_destroy(tt_introspect_t *in);

/* Records that every worker has started (listeners were bound before): /ready may now say ready
 * once pre-warming is done. Pre-warming counts as done when every upstream holds min_idle idle
 * connections, or after its longest connect_timeout plus one second: an unreachable upstream is
 * the pool's and the breaker's business, not a reason to keep the whole sidecar out of service. */
void tt_introspect_set_running(tt_introspect_t *in);

/* A snapshot merged over every worker, or NULL with a reason in err. Never call from a worker. */
tt_snapshot_t *tt_introspect_snapshot(tt_introspect_t *in, char *err, size_t errlen);

/* Appends every upstream connection of every worker to out. Returns 0, or -1 with a reason. */
int tt_introspect_pools(tt_introspect_t *in, tt_conn_list_t *out, char *err, size_t errlen);

/* 1 if ready, else 0; why explains either. */
int tt_introspect_ready(tt_introspect_t *in, char *why, size_t whylen);

/* The admin operations backed by in. */
tt_admin_ops_t tt_introspect_admin_ops(tt_introspect_t *in);

#endif
