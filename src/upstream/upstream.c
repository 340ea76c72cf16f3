#include "upstream/upstream.h"

#include "core/invariant.h"
#include "core/log.h"

#include <stdio.h>
#include <string.h>

#define AUTO_DEFAULT_MS  60000
#define AUTO_MIN_EXPIRY  100
#define OBSERVE_FLOOR_MS 500 /* quicker closes are decisions, not idle timeouts */

int tt_upstream_init(tt_upstream_t *up, const tt_upstream_conf_t *conf, const char *conf_path,
                     size_t index, size_t nworkers, char *err, size_t errlen)
{
    memset(up, 0, sizeof(*up));
    up->conf = conf;
    up->index = index;
    const char *why;
    if (tt_addr_resolve(conf->host, conf->port, &up->addr, 1, &why) < 0) {
        snprintf(err, errlen, "upstream %s: cannot resolve %s: %s", conf->name, conf->host, why);
        return -1;
    }
    tt_addr_format(&up->addr, up->addr_str);
    int v6 = strchr(conf->host, ':') != NULL;
    if (conf->port == (conf->tls ? 443 : 80))
        snprintf(up->host_header, sizeof(up->host_header), v6 ? "[%s]" : "%s", conf->host);
    else
        snprintf(up->host_header, sizeof(up->host_header), v6 ? "[%s]:%d" : "%s:%d", conf->host,
                 conf->port);
    up->sockopts.keepalive_idle_s = (int)((conf->tcp_keepalive + 999) / 1000);
    /* Give up on an unacknowledged write when keep-alive probing would have: a dead peer is
     * noticed in bounded time even with data in flight. */
    if (conf->tcp_keepalive > 0)
        up->sockopts.user_timeout_ms = (int)TT_MIN(conf->tcp_keepalive * 2, 600000);
    if (conf->tls) {
        tt_tls_options_t opts;
        tt_upstream_tls_options(conf, conf_path, &opts);
        if ((up->tls = tt_tls_client_new(&opts, err, errlen)) == NULL)
            return -1;
    }
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
