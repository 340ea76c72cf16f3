#include "upstream/upstream.h"

#include "core/invariant.h"
#include "core/log.h"
#include "upstream/endpoint.h"
#include "upstream/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTO_DEFAULT_MS  60000
#define AUTO_MIN_EXPIRY  100
#define OBSERVE_FLOOR_MS 500 /* quicker closes are decisions, not idle timeouts */

static int initial_endpoints(tt_upstream_t *up, char *err, size_t errlen)
{
    const tt_upstream_conf_t *conf = up->conf;
    tt_addr_t *a = tt_calloc(TT_ENDPOINTS_MAX, sizeof(*a));
    size_t n;
    if (conf->endpoints != NULL) {
        n = TT_MIN(conf->nendpoints, TT_ENDPOINTS_MAX);
        memcpy(a, conf->endpoints, n * sizeof(*a));
    } else {
        const char *why;
        int got = tt_addr_resolve(conf->host, conf->port, a, TT_ENDPOINTS_MAX, &why);
        if (got < 0 && conf->dns_refresh == 0) {
            snprintf(err, errlen, "upstream %s: cannot resolve %s: %s", conf->name, conf->host,
                     why);
            free(a);
            return -1;
        }
        if (got < 0)
            tt_warn("upstream %s: cannot resolve %s at startup: %s; requests get 503 (no "
                    "endpoints yet) until a lookup succeeds",
                    conf->name, conf->host, why);
        n = got < 0 ? 0 : (size_t)got;
    }
    up->ep_naddrs = tt_addr_sort_unique(a, n);
    up->ep_addrs = a;
    atomic_store(&up->ep_version, 1);
    return 0;
}

void tt_upstream_publish_endpoints(tt_upstream_t *up, const tt_addr_t *addrs, size_t n)
{
    tt_addr_t *copy = tt_calloc(n ? n : 1, sizeof(*copy));
    if (n > 0)
        memcpy(copy, addrs, n * sizeof(*copy));
    n = tt_addr_sort_unique(copy, n);
    pthread_mutex_lock(&up->ep_lock);
    tt_addr_t *old = up->ep_addrs;
    up->ep_addrs = copy;
    up->ep_naddrs = n;
    atomic_fetch_add_explicit(&up->ep_version, 1, memory_order_release);
    pthread_mutex_unlock(&up->ep_lock);
    free(old);
    for (size_t i = 0; i < up->nworkers; i++)
        if (up->pools[i] != NULL)
            tt_loop_wakeup(up->pools[i]->loop);
}

size_t tt_upstream_copy_endpoints(tt_upstream_t *up, tt_addr_t **out, uint64_t *version)
{
    pthread_mutex_lock(&up->ep_lock);
    size_t n = up->ep_naddrs;
    *out = NULL;
    if (n > 0) {
        *out = tt_malloc(n * sizeof(**out));
        memcpy(*out, up->ep_addrs, n * sizeof(**out));
    }
    *version = atomic_load_explicit(&up->ep_version, memory_order_acquire);
    pthread_mutex_unlock(&up->ep_lock);
    return n;
}

void tt_upstream_reconfigure(tt_upstream_t *up)
{
    const tt_upstream_conf_t *conf = up->conf;
    up->sockopts.keepalive_idle_s = (int)((conf->tcp_keepalive + 999) / 1000);
    /* Give up on an unacknowledged write when keep-alive probing would have: a dead peer is
     * noticed in bounded time even with data in flight. */
    up->sockopts.user_timeout_ms =
        conf->tcp_keepalive > 0 ? (int)TT_MIN(conf->tcp_keepalive * 2, 600000) : 0;
    if (up->probe != NULL) {
        up->probe->interval = (tt_msec_t)conf->probe_interval;
        up->probe->timeout = (tt_msec_t)conf->probe_timeout;
    }
    if (up->check != NULL) {
        up->check->hysteresis = (tt_health_conf_t){.rise = (unsigned)conf->health_rise,
                                                   .fall = (unsigned)conf->health_fall};
        up->check->interval = (tt_msec_t)conf->health_interval;
        up->check->timeout = (tt_msec_t)conf->health_timeout;
    }
}

int tt_upstream_init(tt_upstream_t *up, const tt_upstream_conf_t *conf, const char *conf_path,
                     size_t index, size_t nworkers, char *err, size_t errlen)
{
    memset(up, 0, sizeof(*up));
    up->conf = conf;
    up->index = index;
    pthread_mutex_init(&up->ep_lock, NULL);
    int v6 = strchr(conf->host, ':') != NULL;
    snprintf(up->addr_str, sizeof(up->addr_str), v6 ? "[%s]:%d" : "%s:%d", conf->host, conf->port);
    if (initial_endpoints(up, err, errlen) < 0)
        return -1;
    if (conf->port == (conf->tls ? 443 : 80))
        snprintf(up->host_header, sizeof(up->host_header), v6 ? "[%s]" : "%s", conf->host);
    else
        snprintf(up->host_header, sizeof(up->host_header), v6 ? "[%s]:%d" : "%s:%d", conf->host,
                 conf->port);
    if (conf->tls) {
        tt_tls_options_t opts;
        tt_upstream_tls_options(conf, conf_path, &opts);
        if ((up->tls = tt_tls_client_new(&opts, err, errlen)) == NULL) {
            free(up->ep_addrs);
            up->ep_addrs = NULL;
            pthread_mutex_destroy(&up->ep_lock);
            return -1;
        }
    }
    if (conf->probe != NULL) {
        /* Validated when the configuration was read. */
        const char *why;
        up->probe = tt_calloc(1, sizeof(*up->probe));
        tt_request_line_parse(conf->probe, &up->probe->line, &why);
        if (conf->probe_expect != NULL)
            tt_status_set_parse(conf->probe_expect, &up->probe->expect, &why);
    }
    if (conf->health_check != NULL) {
        const char *why; /* validated when the configuration was read */
        up->check = tt_calloc(1, sizeof(*up->check));
        tt_request_line_parse(conf->health_check, &up->check->line, &why);
        tt_status_set_parse(conf->health_expect ? conf->health_expect : "200-399",
                            &up->check->expect, &why);
        snprintf(up->check->host, sizeof(up->check->host), "%s",
                 conf->health_host ? conf->health_host : up->host_header);
    }
    tt_upstream_reconfigure(up);
    up->nworkers = nworkers;
    up->pools = tt_calloc(nworkers, sizeof(*up->pools));
    return 0;
}

void tt_upstream_tls_options(const tt_upstream_conf_t *conf, const char *conf_path,
                             tt_tls_options_t *opts)
{
    static const char *const keys[TT_TLS_OPT__COUNT] = {
        [TT_TLS_OPT_CA] = "tls_ca",
        [TT_TLS_OPT_CERT] = "tls_cert",
        [TT_TLS_OPT_KEY] = "tls_key",
        [TT_TLS_OPT_SERVER_NAME] = "tls_server_name",
    };
    *opts = (tt_tls_options_t){
        .upstream = conf->name,
        .server_name = conf->tls_server_name != NULL ? conf->tls_server_name : conf->host,
        .ca = conf->tls_ca,
        .cert = conf->tls_cert,
        .key = conf->tls_key,
        .verify = conf->tls_verify != 0,
        .min_version = (int)conf->tls_min_version,
        .session_reuse = conf->tls_session_reuse != 0,
        .file = conf_path,
    };
    for (size_t i = 0; i < TT_TLS_OPT__COUNT; i++) {
        opts->key_name[i] = keys[i];
        opts->line[i] = tt_conf_key_line(conf, keys[i]);
    }
}

void tt_upstream_destroy(tt_upstream_t *up)
{
    tt_tls_client_free(up->tls);
    up->tls = NULL;
    free(up->pools);
    up->pools = NULL;
    free(up->ep_addrs);
    up->ep_addrs = NULL;
    free(up->probe);
    up->probe = NULL;
    free(up->check);
    up->check = NULL;
    pthread_mutex_destroy(&up->ep_lock);
}

static tt_msec_t under(tt_msec_t ms)
{
    tt_msec_t margin = TT_MAX(ms / 10, 100);
    return ms > margin + AUTO_MIN_EXPIRY ? ms - margin : AUTO_MIN_EXPIRY;
}

tt_msec_t tt_upstream_learned_ms(const tt_upstream_t *up)
{
    int64_t hint = atomic_load_explicit(&up->hint_ms, memory_order_relaxed);
    int64_t seen = atomic_load_explicit(&up->observed_ms, memory_order_relaxed);
    if (hint > 0 && seen > 0)
        return (tt_msec_t)TT_MIN(hint, seen);
    return (tt_msec_t)(hint > 0 ? hint : seen);
}

tt_msec_t tt_upstream_idle_timeout(const tt_upstream_t *up)
{
    if (up->conf->idle_timeout != TT_IDLE_AUTO)
        return (tt_msec_t)up->conf->idle_timeout;
    tt_msec_t learned = tt_upstream_learned_ms(up);
    return learned > 0 ? under(learned) : AUTO_DEFAULT_MS;
}

static void log_learned(const tt_upstream_t *up, const char *source)
{
    if (up->conf->idle_timeout == TT_IDLE_AUTO)
        tt_info("upstream %s: learned idle timeout %llums from %s; idle connections now expire "
                "after %llums",
                up->conf->name, (unsigned long long)tt_upstream_learned_ms(up), source,
                (unsigned long long)tt_upstream_idle_timeout(up));
}

void tt_upstream_learn_hint(tt_upstream_t *up, int seconds)
{
    if (seconds <= 0)
        return;
    int64_t ms = (int64_t)seconds * 1000;
    if (atomic_exchange_explicit(&up->hint_ms, ms, memory_order_relaxed) != ms)
        log_learned(up, "the Keep-Alive header");
}

void tt_upstream_learn_idle_close(tt_upstream_t *up, tt_msec_t idle_ms)
{
    if (idle_ms < OBSERVE_FLOOR_MS)
        return;
    int64_t cur = atomic_load_explicit(&up->observed_ms, memory_order_relaxed);
    while (cur == 0 || (int64_t)idle_ms < cur) {
        if (atomic_compare_exchange_weak_explicit(&up->observed_ms, &cur, (int64_t)idle_ms,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            log_learned(up, "an idle close by the upstream");
            return;
        }
    }
}

void tt_upstream_tls_failed(tt_upstream_t *up, tt_tls_failure_t why, const char *detail)
{
    uint32_t bit = 1u << why;
    if (atomic_fetch_or_explicit(&up->tls_failures_logged, bit, memory_order_relaxed) & bit)
        return;
    tt_warn("upstream %s (%s): TLS handshake failed: %s (%s); further failures for this cause "
            "are counted in tether_upstream_tls_handshake_failures_total{cause=\"%s\"}, not "
            "logged, until a handshake succeeds",
            up->conf->name, up->addr_str, tt_tls_failure_phrase(why), detail,
            tt_tls_failure_name(why));
}

void tt_upstream_tls_succeeded(tt_upstream_t *up)
{
    if (atomic_load_explicit(&up->tls_failures_logged, memory_order_relaxed) != 0 &&
        atomic_exchange_explicit(&up->tls_failures_logged, 0, memory_order_relaxed) != 0)
        tt_info("upstream %s (%s): TLS handshakes succeed again", up->conf->name, up->addr_str);
}
