#include "upstream/pool_endpoints.h"

#include "upstream/pool_int.h"

#include "core/invariant.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

void tt_pool_endpoints_reconfigure(tt_pool_t *pool)
{
    const tt_upstream_conf_t *conf = pool->up->conf;
    pool->_breaker = (tt_breaker_conf_t){
        .failures = (unsigned)conf->breaker_failures,
        .cooldown = (tt_msec_t)conf->breaker_cooldown,
        .max_cooldown = (tt_msec_t)conf->breaker_max_cooldown,
    };
}

void tt_pool_endpoints_init(tt_pool_t *pool)
{
    tt_pool_endpoints_reconfigure(pool);
    tt_endpoint_set_init(&pool->endpoints);
    /* Seeded per worker and upstream: workers do not draw the same endpoints in step. */
    tt_balancer_init(&pool->_balancer, (tt_balance_t)pool->up->conf->balance,
                     (uint64_t)pool->worker * 1000003u + pool->up->index);
    pool->_ep_version = 0;
    tt_pool_endpoints_sync(pool);
}

void tt_pool_endpoints_destroy(tt_pool_t *pool)
{
    tt_endpoint_set_destroy(&pool->endpoints, NULL, NULL);
}

/* An endpoint left the set or went down: nothing new goes to it, and what it holds idle closes
 * now. */
static void drain_endpoint(tt_pool_t *pool, tt_endpoint_t *ep, tt_close_reason_t reason)
{
    tt_list_t *l, *tmp;
    tt_list_foreach_safe(l, tmp, &pool->_idle)
    {
        tt_conn_t *c = tt_container_of(l, tt_conn_t, _link);
        if (c->ep == ep)
            tt_conn_close(c, reason);
    }
    /* Pre-warming connections nobody waits for are not wanted either; a connection opened for a
     * request finishes it and closes at release. */
    tt_list_foreach_safe(l, tmp, &pool->_busy)
    {
        tt_conn_t *c = tt_container_of(l, tt_conn_t, _link);
        if (c->ep == ep &&
            ((c->state == TT_CONN_CONNECTING && c->_waiter == NULL) || c->state == TT_CONN_PROBING))
            tt_conn_close(c, reason);
    }
}

typedef struct {
    tt_pool_t *pool;
    tt_endpoint_t *removed[TT_ENDPOINTS_MAX];
    size_t nremoved;
} sync_t;

static void change_cb(tt_endpoint_t *ep, tt_endpoint_change_t change, void *arg)
{
    sync_t *s = arg;
    tt_debug("upstream %s: worker %zu: endpoint %s %s", s->pool->up->conf->name, s->pool->worker,
             ep->name,
             change == TT_ENDPOINT_REMOVED ? "removed (draining)"
             : change == TT_ENDPOINT_ADDED ? "added"
                                           : "added again");
    if (change == TT_ENDPOINT_REMOVED && s->nremoved < TT_ENDPOINTS_MAX)
        s->removed[s->nremoved++] = ep;
}

int tt_pool_endpoints_sync(tt_pool_t *pool)
{
    tt_upstream_t *up = pool->up;
    if (atomic_load_explicit(&up->ep_version, memory_order_acquire) == pool->_ep_version)
        return 0;
    tt_addr_t *addrs;
    uint64_t version;
    size_t n = tt_upstream_copy_endpoints(up, &addrs, &version);
    pool->_ep_version = version;
    /* Closing connections runs pool code that looks at the set: drain once the set is
     * consistent again, not from inside the update. */
    sync_t *s = tt_calloc(1, sizeof(*s));
    s->pool = pool;
    tt_endpoint_diff_t d = tt_endpoint_set_update(&pool->endpoints, addrs, n, change_cb, s);
    free(addrs);
    for (size_t i = 0; i < s->nremoved; i++)
        drain_endpoint(pool, s->removed[i], TT_CLOSE_ENDPOINT_REMOVED);
    free(s);
    tt_endpoint_checks_sync(pool);
    tt_endpoint_set_reap(&pool->endpoints, NULL, NULL);
    return d.added + d.removed > 0;
}

tt_endpoint_t *tt_pool_pick_endpoint(tt_pool_t *pool, tt_endpoint_t *const *exclude,
                                     size_t nexclude)
{
    return tt_balancer_pick(&pool->_balancer, &pool->endpoints, exclude, nexclude,
                            tt_loop_now(pool->loop));
}

int tt_pool_other_endpoint_usable(tt_pool_t *pool, const tt_endpoint_t *ep)
{
    tt_msec_t now = tt_loop_now(pool->loop);
    for (size_t i = 0; i < pool->endpoints.n; i++) {
        tt_endpoint_t *other = tt_endpoint_set_at(&pool->endpoints, i);
        if (other != ep && tt_endpoint_usable(other, now))
            return 1;
    }
    return 0;
}

tt_endpoint_t *tt_pool_warm_endpoint(tt_pool_t *pool)
{
    tt_endpoint_t *best = NULL;
    tt_msec_t now = tt_loop_now(pool->loop);
    for (size_t i = 0; i < pool->endpoints.n; i++) {
        tt_endpoint_t *ep = tt_endpoint_set_at(&pool->endpoints, i);
        if (tt_endpoint_usable(ep, now) && (best == NULL || ep->nconns < best->nconns))
            best = ep;
    }
    return best;
}

tt_endpoint_t *tt_pool_endpoint_of_socket(tt_pool_t *pool, int fd)
{
    tt_addr_t peer = {.len = sizeof(peer.ss)};
    if (getpeername(fd, (struct sockaddr *)&peer.ss, &peer.len) < 0)
        return NULL;
    tt_endpoint_t *ep = tt_endpoint_set_find(&pool->endpoints, &peer);
    return ep != NULL && ep->state == TT_ENDPOINT_ACTIVE ? ep : NULL;
}

static size_t count_ejected(tt_pool_t *pool, tt_msec_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < pool->endpoints.n; i++) {
        tt_endpoint_t *ep = tt_endpoint_set_at(&pool->endpoints, i);
        n += ep->state == TT_ENDPOINT_ACTIVE &&
             tt_breaker_state(&ep->breaker, now) != TT_BREAKER_CLOSED;
    }
    return n;
}

/* ep went down or was ejected: the requests it still carries hold slots of max_connections that
 * it will not use again, and requests queued for a slot would wait for them (a hung endpoint:
 * for response_timeout). Each such connection gives its slot back now and closes at release;
 * the queued requests get connections to the other endpoints. The upstream may briefly have more
 * than max_connections open, the excess all to an endpoint that takes no new request. */
static void uncap_endpoint(tt_pool_t *pool, tt_endpoint_t *ep)
{
    size_t n = 0;
    for (tt_list_t *l = pool->_busy.next; l != &pool->_busy; l = l->next) {
        tt_conn_t *c = tt_container_of(l, tt_conn_t, _link);
        if (c->ep == ep && !c->_uncapped) {
            c->_uncapped = 1;
            tt_pool_unreserve_capacity(pool->up);
            n++;
        }
    }
    if (n == 0)
        return;
    tt_pool_announce_capacity(pool);
    tt_pool_service_waiters(pool);
}

void tt_pool_endpoint_failed(tt_pool_t *pool, tt_endpoint_t *ep, tt_eject_cause_t cause,
                             const char *why)
{
    tt_msec_t now = tt_loop_now(pool->loop);
    ep->last_failure = why;
    int may = tt_breaker_may_eject(pool->endpoints.nactive, count_ejected(pool, now),
                                   (unsigned)pool->up->conf->max_ejected);
    int retrial = tt_breaker_state(&ep->breaker, now) == TT_BREAKER_HALF_OPEN;
    if (!tt_breaker_on_failure(&ep->breaker, &pool->_breaker, now, may))
        return;
    uncap_endpoint(pool, ep);
    pool->stats.ejections[cause]++;
    tt_msec_t cooldown = tt_breaker_open_until(&ep->breaker) - now;
    if (retrial)
        tt_warn("upstream %s: endpoint %s still failing (trial %s: %s); ejected again for "
                "%llums (worker %zu)",
                pool->up->conf->name, ep->name, tt_eject_cause_name(cause), why,
                (unsigned long long)cooldown, pool->worker);
    else
        tt_warn("upstream %s: endpoint %s ejected for %llums: %u %s in a row failed (%s) "
                "(worker %zu)",
                pool->up->conf->name, ep->name, (unsigned long long)cooldown,
                pool->_breaker.failures, cause == TT_EJECT_CONNECT ? "connects" : "requests", why,
                pool->worker);
}

void tt_pool_endpoint_connect_failed(tt_pool_t *pool, tt_endpoint_t *ep, tt_close_reason_t reason,
                                     const tt_pool_error_t *err)
{
    tt_pool_endpoint_failed(pool, ep, TT_EJECT_CONNECT,
                            reason == TT_CLOSE_TLS_FAILED   ? tt_tls_failure_phrase(err->tls)
                            : err->errno_value == ETIMEDOUT ? "connect timed out"
                                                            : strerror(err->errno_value));
}

void tt_pool_endpoint_succeeded(tt_pool_t *pool, tt_endpoint_t *ep, const char *trial)
{
    if (tt_breaker_on_success(&ep->breaker, &pool->_breaker, tt_loop_now(pool->loop)))
        tt_info("upstream %s: endpoint %s back: its trial %s succeeded (worker %zu)",
                pool->up->conf->name, ep->name, trial, pool->worker);
}

void tt_pool_endpoint_health(tt_pool_t *pool, tt_endpoint_t *ep, int up, const char *why)
{
    const tt_check_conf_t *check = pool->up->check;
    ep->down = (uint8_t)!up;
    ep->changed_at = tt_loop_now(pool->loop);
    if (up) {
        ep->down_why[0] = '\0';
        tt_info("upstream %s: endpoint %s up: %u health checks passed (worker %zu)",
                pool->up->conf->name, ep->name, check->hysteresis.rise, pool->worker);
        tt_pool_replenish(pool);
        return;
    }
    snprintf(ep->down_why, sizeof(ep->down_why), "%s", why ? why : "failed");
    tt_warn("upstream %s: endpoint %s down: %u health checks failed (%s) (worker %zu)",
            pool->up->conf->name, ep->name, check->hysteresis.fall, ep->down_why, pool->worker);
    drain_endpoint(pool, ep, TT_CLOSE_ENDPOINT_DOWN);
    uncap_endpoint(pool, ep);
}

tt_msec_t tt_pool_next_trial_ms(tt_pool_t *pool, const char **cause, int *checks_failing)
{
    tt_msec_t now = tt_loop_now(pool->loop), next = TT_TIME_NEVER;
    *cause = "connect failed";
    *checks_failing = 0;
    for (size_t i = 0; i < pool->endpoints.n; i++) {
        tt_endpoint_t *ep = tt_endpoint_set_at(&pool->endpoints, i);
        if (ep->state == TT_ENDPOINT_ACTIVE && ep->down) {
            *checks_failing = 1;
            if (pool->up->check != NULL)
                next = TT_MIN(next, now + pool->up->check->interval);
            continue;
        }
        if (ep->state == TT_ENDPOINT_ACTIVE && tt_breaker_open_until(&ep->breaker) < next) {
            next = tt_breaker_open_until(&ep->breaker);
            if (ep->last_failure != NULL) {
                *cause = ep->last_failure;
                *checks_failing = 0;
            }
        }
    }
    return next == TT_TIME_NEVER || next <= now ? 1 : next - now;
}

void tt_pool_endpoint_counts(const tt_pool_t *pool, size_t *active, size_t *draining)
{
    *active = pool->endpoints.nactive;
    *draining = pool->endpoints.n - pool->endpoints.nactive;
}
