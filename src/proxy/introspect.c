#include "proxy/introspect.h"
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/invariant.h"
#include "net/dns.h"
#include "upstream/pool_endpoints.h"

#include <stdio.h>
#include <string.h>

void tt_introspect_init(tt_introspect_t *in, const tt_conf_t *conf, tt_upstream_t **ups,
                        size_t nups, tt_worker_t *workers, size_t nworkers)
{
    memset(in, 0, sizeof(*in));
    in->conf = conf;
    in->ups = ups;
    in->nups = nups;
    in->workers = workers;
    in->nworkers = nworkers;
    in->started_us = tt_clock_monotonic_us();
    pthread_mutex_init(&in->conf_lock, NULL);
    atomic_init(&in->running, 0);
}

void tt_introspect_destroy(tt_introspect_t *in)
{
    pthread_mutex_destroy(&in->conf_lock);
}

void tt_introspect_set_running(tt_introspect_t *in)
{
    int64_t longest = 0;
    for (size_t i = 0; i < in->nups; i++)
        longest = TT_MAX(longest, in->ups[i]->conf->connect_timeout);
    in->warm_deadline_ms = tt_clock_monotonic_ms() + (tt_msec_t)longest + 1000;
    atomic_store_explicit(&in->running, 1, memory_order_release);
}

/* ---- snapshot: runs on each worker's thread ----------------------------------------------- */

static void add_live_requests(const tt_conn_t *c, void *arg)
{
    uint64_t *n = arg;
    *n += c->requests;
}

static void collect_cb(tt_worker_t *w, void *arg)
{
    tt_snapshot_t *s = arg;
    s->accepted += w->accepted;
    s->active += w->nsessions;
    for (size_t c = 0; c < TT_ARRAY_SIZE(s->unrouted); c++)
        s->unrouted[c] += w->unrouted[c];
    for (size_t e = 0; e < TT_ACCEPT_ERRORS; e++)
        s->accept_errors[e] += w->accept_errors[e];
    s->limit_pauses += w->accept_limit_pauses;
    s->max_client_connections = w->admission->max;
    for (size_t i = 0; i < w->nupstreams; i++) {
        tt_pool_t *pool = w->pools[i];
        tt_upstream_snapshot_t *u = &s->ups[i];
        tt_upstream_stats_merge(&u->stats, &pool->stats);
        tt_pool_gauges_t g;
        tt_pool_gauges(pool, &g);
        u->live.idle += g.idle;
        u->live.active += g.active;
        u->live.connecting += g.connecting;
        u->live.queued += g.queued;
        u->live.age_sum_ms += g.age_sum_ms;
        u->live.socket_mem_bytes += g.socket_mem_bytes;
        tt_pool_foreach_conn(pool, add_live_requests, &u->live.live_requests);
        size_t active, draining;
        tt_pool_endpoint_counts(pool, &active, &draining);
        u->endpoints_active = TT_MAX(u->endpoints_active, active);
        u->endpoints_draining = TT_MAX(u->endpoints_draining, draining);
        tt_msec_t now = tt_loop_now(pool->loop);
        for (size_t e = 0; e < pool->endpoints.n; e++) {
            tt_endpoint_t *ep = tt_endpoint_set_at(&pool->endpoints, e);
            tt_endpoint_row_t *r = tt_snapshot_endpoint(u, ep->name);
            r->draining &= ep->state == TT_ENDPOINT_DRAINING;
            r->requests += ep->picked;
            r->connections += ep->nconns;
            r->idle += ep->nidle;
            r->outstanding += ep->outstanding;
            tt_breaker_state_t b = tt_breaker_state(&ep->breaker, now);
            r->views++;
            r->down += ep->down;
            r->ejected += b == TT_BREAKER_OPEN;
            r->half_open += b == TT_BREAKER_HALF_OPEN;
            if (ep->changed_at != 0)
                r->changed_ago_ms = TT_MIN(r->changed_ago_ms, now - ep->changed_at);
        }
    }
}

tt_snapshot_t *tt_introspect_snapshot(tt_introspect_t *in, char *err, size_t errlen)
{
    tt_snapshot_t *s = tt_snapshot_new(in->nups);
    s->version = TETHER_VERSION;
    s->time_s = (double)tt_clock_wall_ms() / 1000.0;
    s->uptime_s = (double)(tt_clock_monotonic_us() - in->started_us) / 1e6;
    s->nworkers = in->nworkers;
    for (size_t i = 0; i < in->nups; i++) {
        const tt_upstream_t *up = in->ups[i];
        tt_upstream_snapshot_t *u = &s->ups[i];
        u->name = up->conf->name;
        snprintf(u->endpoint, sizeof(u->endpoint), "%s", up->addr_str);
        u->idle_timeout_ms = tt_upstream_idle_timeout(up);
        u->learned_idle_timeout_ms = tt_upstream_learned_ms(up);
        u->idle_timeout_auto = up->conf->idle_timeout == TT_IDLE_AUTO;
        u->tls = up->conf->tls;
        u->max_connections = up->conf->max_connections;
        u->max_idle = up->conf->max_idle;
        u->min_idle = up->conf->min_idle;
        if (up->dns_stats != NULL) {
            u->dns_followed = 1;
            for (size_t r = 0; r < TT_DNS_RESULTS; r++)
                u->dns_lookups[r] =
                    atomic_load_explicit(&up->dns_stats->lookups[r], memory_order_relaxed);
            u->dns_last_change_ms =
                atomic_load_explicit(&up->dns_stats->last_change_wall_ms, memory_order_relaxed);
        }
    }
    for (size_t i = 0; i < in->nworkers; i++) {
        if (tt_worker_call(&in->workers[i], collect_cb, s, TT_INTROSPECT_CALL_TIMEOUT_MS) < 0) {
            snprintf(err, errlen, "worker %zu did not answer within %dms", i,
                     TT_INTROSPECT_CALL_TIMEOUT_MS);
            tt_snapshot_free(s);
            return NULL;
        }
    }
    char why[8];
    s->ready = tt_introspect_ready(in, why, sizeof(why));
    tt_process_read(&s->process);
    return s;
}

/* ---- connection list: runs on each worker's thread ---------------------------------------- */

typedef struct {
    tt_conn_list_t *out;
    const tt_upstream_t *up;
    size_t worker;
    tt_msec_t now;
} pools_walk_t;

static void add_row(const tt_conn_t *c, void *arg)
{
    pools_walk_t *pw = arg;
    tt_conn_row_t *r = tt_conn_list_push(pw->out);
    r->upstream = pw->up->conf->name;
    snprintf(r->endpoint, sizeof(r->endpoint), "%s", c->ep != NULL ? c->ep->name : "?");
    r->worker = (uint32_t)pw->worker;
    r->id = c->id;
    r->state = c->state == TT_CONN_IDLE || c->state == TT_CONN_PROBING ? TT_ROW_IDLE
               : c->state == TT_CONN_CONNECTING                        ? TT_ROW_CONNECTING
                                                                       : TT_ROW_ACTIVE;
    r->age_ms = pw->now - c->created_at;
    r->idle_ms = c->state == TT_CONN_IDLE || c->state == TT_CONN_PROBING
                     ? (int64_t)(pw->now - c->idle_since)
                     : -1;
    r->requests = c->requests;
    r->socket_mem_bytes = tt_conn_socket_memory(c);
}

static void pools_cb(tt_worker_t *w, void *arg)
{
    pools_walk_t pw = {.out = arg, .worker = w->id, .now = tt_loop_now(w->loop)};
    for (size_t i = 0; i < w->nupstreams; i++) {
        pw.up = w->upstreams[i];
        tt_pool_foreach_conn(w->pools[i], add_row, &pw);
    }
}

int tt_introspect_pools(tt_introspect_t *in, tt_conn_list_t *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < in->nworkers; i++) {
        if (tt_worker_call(&in->workers[i], pools_cb, out, TT_INTROSPECT_CALL_TIMEOUT_MS) < 0) {
            snprintf(err, errlen, "worker %zu did not answer within %dms", i,
                     TT_INTROSPECT_CALL_TIMEOUT_MS);
            return -1;
        }
    }
    return 0;
}

/* ---- readiness ------------------------------------------------------------------------------ */

int tt_introspect_ready(tt_introspect_t *in, char *why, size_t whylen)
{
    if (!atomic_load_explicit(&in->running, memory_order_acquire)) {
        snprintf(why, whylen, "starting");
        return 0;
    }
    if (in->warmed) {
        snprintf(why, whylen, "listening, %zu workers", in->nworkers);
        return 1;
    }
    /* The shared idle counts are atomics: no worker call needed. */
    for (size_t i = 0; i < in->nups; i++) {
        const tt_upstream_t *up = in->ups[i];
        int64_t want = up->conf->min_idle;
        int64_t have = atomic_load_explicit(&up->nidle, memory_order_relaxed);
        if (have >= want)
            continue;
        if (tt_clock_monotonic_ms() < in->warm_deadline_ms) {
            snprintf(why, whylen, "pre-warming upstream %s (%lld of %lld idle connections)",
                     up->conf->name, (long long)have, (long long)want);
            return 0;
        }
        /* Deadline passed: ready, and say why the pool is cold. Not latched, so the message
         * stays accurate until it warms. */
        snprintf(why, whylen, "listening; upstream %s not pre-warmed (%lld of %lld idle)",
                 up->conf->name, (long long)have, (long long)want);
        return 1;
    }
    in->warmed = 1;
    snprintf(why, whylen, "listening, %zu workers", in->nworkers);
    return 1;
}

/* ---- admin operations ----------------------------------------------------------------------- */

/* The operations that read the configuration's numbers hold conf_lock: a reload writes them. */
static tt_snapshot_t *op_snapshot(void *ctx, char *err, size_t errlen)
{
    tt_introspect_t *in = ctx;
    pthread_mutex_lock(&in->conf_lock);
    tt_snapshot_t *s = tt_introspect_snapshot(in, err, errlen);
    pthread_mutex_unlock(&in->conf_lock);
    return s;
}

static int op_pools(void *ctx, tt_conn_list_t *out, char *err, size_t errlen)
{
    return tt_introspect_pools(ctx, out, err, errlen);
}

static int op_ready(void *ctx, char *why, size_t whylen)
{
    tt_introspect_t *in = ctx;
    pthread_mutex_lock(&in->conf_lock);
    int ready = tt_introspect_ready(in, why, whylen);
    pthread_mutex_unlock(&in->conf_lock);
    return ready;
}

static char *op_config(void *ctx)
{
    tt_introspect_t *in = ctx;
    pthread_mutex_lock(&in->conf_lock);
    char *text = tt_conf_dump(in->conf);
    pthread_mutex_unlock(&in->conf_lock);
    return text;
}

/* The file is checked here, so `tether reload` reports an invalid one and says which way a
 * valid one will apply; the reload itself is the main thread's, on the SIGHUP this sends
 * (proxy/server.c), which loads the file again. */
static int op_reload(void *ctx, char *msg, size_t msglen)
{
    tt_introspect_t *in = ctx;
    if (strcmp(in->conf->path, TT_CONF_COMMAND_LINE) == 0) {
        snprintf(msg, msglen, "tether: nothing to reload: tetherd runs from the command line");
        return -2;
    }
    tt_conf_error_t err;
    tt_conf_t *next = tt_conf_load(in->conf->path, &err);
    if (next == NULL) {
        snprintf(msg, msglen, "tether: %s; the running configuration stays", err.msg);
        return -1;
    }
    char why[256];
    pthread_mutex_lock(&in->conf_lock);
    tt_conf_change_t change = tt_conf_diff(in->conf, next, why, sizeof(why));
    pthread_mutex_unlock(&in->conf_lock);
    tt_conf_free(next);
    if (kill(getpid(), SIGHUP) < 0) {
        snprintf(msg, msglen, "tether: cannot signal tetherd: %s", strerror(errno));
        return -2;
    }
    if (change == TT_CONF_SAME)
        snprintf(msg, msglen, "reloading %s: it is valid and unchanged; TLS files are checked",
                 in->conf->path);
    else if (change == TT_CONF_LIVE)
        snprintf(msg, msglen,
                 "reloading %s: it is valid; the change applies in place (pools, learned idle "
                 "timeouts and TLS sessions kept)",
                 in->conf->path);
    else
        snprintf(msg, msglen, "reloading %s: it is valid; %s, so a new tetherd takes over",
                 in->conf->path, why);
    return 0;
}

tt_admin_ops_t tt_introspect_admin_ops(tt_introspect_t *in)
{
    tt_admin_ops_t ops = {
        .ctx = in,
        .snapshot = op_snapshot,
        .pools = op_pools,
        .ready = op_ready,
        .config = op_config,
        .reload = op_reload,
    };
    return ops;
}
