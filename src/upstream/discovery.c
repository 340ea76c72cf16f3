#include "upstream/discovery.h"

#include "core/invariant.h"
#include "core/log.h"
#include "net/dns.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    tt_discovery_t *d;
    tt_upstream_t *up;
    tt_dns_watch_t *watch;
    char label[96];
} followed_t;

struct tt_discovery {
    tt_loop_t *loop;
    tt_resolver_t *resolver;
    followed_t *items;
    size_t n;
    pthread_t thread;
    int started;
    _Atomic int stop;
};

/* Logs the difference between the set before (old) and after (new), both sorted. */
static void log_change(const followed_t *f, const tt_addr_t *old, size_t nold, const tt_addr_t *new,
                       size_t nnew)
{
    char text[1024];
    size_t len = 0, i = 0, j = 0;
    char a[TT_ADDR_STRLEN];
    text[0] = '\0';
    while ((i < nold || j < nnew) && len < sizeof(text) - TT_ADDR_STRLEN - 8) {
        int c = i == nold ? 1 : j == nnew ? -1 : tt_addr_compare(&old[i], &new[j]);
        if (c == 0) {
            i++, j++;
            continue;
        }
        const tt_addr_t *x = c < 0 ? &old[i++] : &new[j++];
        len += (size_t)snprintf(text + len, sizeof(text) - len, " %s%s", c < 0 ? "-" : "+",
                                tt_addr_format(x, a));
    }
    if (i < nold || j < nnew)
        snprintf(text + len, sizeof(text) - len, " ...");
    tt_info("%s: endpoints of %s changed:%s (now %zu)", f->label, f->up->conf->host, text, nnew);
}

static void watch_cb(tt_dns_watch_t *w, tt_dns_result_t result, int changed, void *data)
{
    followed_t *f = data;
    if (!changed)
        return;
    size_t n;
    const tt_addr_t *addrs = tt_dns_watch_addrs(w, &n);
    tt_addr_t *old;
    uint64_t version;
    size_t nold = tt_upstream_copy_endpoints(f->up, &old, &version);
    if (nold != n || (n > 0 && memcmp(old, addrs, n * sizeof(*addrs)) != 0)) {
        log_change(f, old, nold, addrs, n);
        tt_upstream_publish_endpoints(f->up, addrs, n);
    }
    free(old);
}

tt_discovery_t *tt_discovery_new(const tt_conf_t *conf, tt_upstream_t **ups, size_t nups, char *err,
                                 size_t errlen)
{
    err[0] = '\0';
    size_t n = 0;
    for (size_t i = 0; i < nups; i++)
        n += ups[i]->conf->dns_refresh != 0;
    if (n == 0) {
        if (conf->nresolvers > 0)
            tt_warn("resolver is set, but no upstream follows a name in DNS (each has an IP "
                    "address, an endpoints list or dns_refresh = off): it is not used");
        return NULL;
    }
    tt_discovery_t *d = tt_calloc(1, sizeof(*d));
    d->loop = tt_loop_create();
    if (d->loop == NULL) {
        snprintf(err, errlen, "cannot create the DNS thread's event loop: %m");
        free(d);
        return NULL;
    }
    if (tt_dns_global_init() < 0 ||
        (d->resolver = tt_resolver_new(d->loop, conf->resolvers, conf->nresolvers, err, errlen)) ==
            NULL) {
        if (err[0] == '\0')
            snprintf(err, errlen, "cannot initialise c-ares");
        tt_loop_destroy(d->loop);
        free(d);
        return NULL;
    }
    d->items = tt_calloc(n, sizeof(*d->items));
    for (size_t i = 0; i < nups; i++) {
        const tt_upstream_conf_t *u = ups[i]->conf;
        if (u->dns_refresh == 0)
            continue;
        followed_t *f = &d->items[d->n++];
        f->d = d;
        f->up = ups[i];
        snprintf(f->label, sizeof(f->label), "upstream %s", u->name);
        tt_dns_policy_t p = {
            .refresh =
                u->dns_refresh == TT_DNS_REFRESH_BY_TTL ? TT_DNS_REFRESH_TTL : TT_DNS_REFRESH_FIXED,
            .interval = (tt_msec_t)(u->dns_refresh > 0 ? u->dns_refresh : 0),
            .min_ttl = (tt_msec_t)u->dns_min_ttl,
            .max_ttl = (tt_msec_t)u->dns_max_ttl,
            .empty = u->dns_empty ? TT_DNS_EMPTY_CLEAR : TT_DNS_EMPTY_KEEP,
        };
        f->watch = tt_dns_watch_new(d->resolver, u->host, u->port, &p, f->label, watch_cb, f);
        ups[i]->dns_stats = tt_dns_watch_stats(f->watch);
        atomic_store(&ups[i]->dns_followed, 1);
    }
    return d;
}

static void stop_cb(tt_loop_t *loop, void *data)
{
    tt_discovery_t *d = data;
    if (atomic_load(&d->stop))
        tt_loop_stop(loop);
}

static void *thread_main(void *arg)
{
    tt_discovery_t *d = arg;
    tt_loop_run(d->loop);
    return NULL;
}

int tt_discovery_start(tt_discovery_t *d)
{
    tt_loop_on_wakeup(d->loop, stop_cb, d);
    int rc = pthread_create(&d->thread, NULL, thread_main, d);
    d->started = rc == 0;
    return rc;
}

void tt_discovery_free(tt_discovery_t *d)
{
    if (d == NULL)
        return;
    if (d->started) {
        atomic_store(&d->stop, 1);
        tt_loop_wakeup(d->loop);
        pthread_join(d->thread, NULL);
    }
    for (size_t i = 0; i < d->n; i++) {
        d->items[i].up->dns_stats = NULL;
        tt_dns_watch_free(d->items[i].watch);
    }
    tt_resolver_free(d->resolver);
    tt_loop_run_deferred(d->loop);
    tt_loop_destroy(d->loop);
    free(d->items);
    free(d);
    tt_dns_global_cleanup();
}
