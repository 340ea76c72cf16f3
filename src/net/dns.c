#include "net/dns.h"

#include "core/invariant.h"
#include "core/log.h"

#include <ares.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* With servers of its own: fail over quickly, a lookup is off the request path but a dead
 * server should not hide a scale-down for long. */
#define SERVER_TIMEOUT_MS 1000
#define SERVER_TRIES      2

/* One c-ares socket as a loop watcher. Slots are never freed while the resolver lives: a slot
 * whose socket closed keeps fd -1, so an event of this batch for it is dropped by the loop; a
 * reused slot may see one spurious wakeup, which c-ares answers with a non-blocking read. */
typedef struct {
    tt_io_t io;
    tt_resolver_t *r;
    tt_list_t link;
} dns_sock_t;

struct tt_resolver {
    tt_loop_t *loop;
    ares_channel channel;
    tt_timer_t timer; /* c-ares's next query timeout */
    tt_list_t socks;
    size_t nwatches;
};

/* One query in flight. The watch may go away first: then the query is orphaned and only freed
 * when c-ares reports its end. */
typedef struct {
    tt_dns_watch_t *w;
} query_t;

struct tt_dns_watch {
    tt_resolver_t *r;
    char *host;
    int port;
    char label[96];
    tt_dns_policy_t policy;
    tt_dns_cb cb;
    void *data;
    tt_timer_t timer; /* the next lookup */
    query_t *query;   /* in flight, or NULL */
    tt_addr_t *addrs;
    size_t naddrs;
    int resolved;      /* a good answer was seen */
    unsigned failures; /* lookups in a row that were not OK */
    int warned;        /* a failure was logged and no success since */
    tt_dns_stats_t stats;
};

int tt_dns_global_init(void)
{
    return ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS ? 0 : -1;
}

void tt_dns_global_cleanup(void)
{
    ares_library_cleanup();
}

static void update_timer(tt_resolver_t *r)
{
    struct timeval tv, *t = ares_timeout(r->channel, NULL, &tv);
    if (t == NULL) {
        tt_loop_timer_stop(r->loop, &r->timer);
        return;
    }
    tt_msec_t ms = (tt_msec_t)t->tv_sec * 1000 + (tt_msec_t)(t->tv_usec + 999) / 1000;
    tt_loop_timer_after(r->loop, &r->timer, ms);
}

static void timer_cb(tt_timer_t *t)
{
    tt_resolver_t *r = tt_container_of(t, tt_resolver_t, timer);
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    update_timer(r);
}

static void sock_io_cb(tt_io_t *io, uint32_t events)
{
    dns_sock_t *s = tt_container_of(io, dns_sock_t, io);
    tt_resolver_t *r = s->r;
    int fd = io->fd;
    /* An error or hangup is read as readable: c-ares's read sees it and fails the query. */
    int rd = (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0, wr = (events & EPOLLOUT) != 0;
    ares_process_fd(r->channel, rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
    update_timer(r);
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    tt_resolver_t *r = data;
    dns_sock_t *s = NULL, *free_slot = NULL;
    for (tt_list_t *n = r->socks.next; n != &r->socks; n = n->next) {
        dns_sock_t *x = tt_container_of(n, dns_sock_t, link);
        if (x->io.fd == fd)
            s = x;
        else if (x->io.fd < 0 && free_slot == NULL)
            free_slot = x;
    }
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    if (ev == 0) {
        if (s != NULL)
            tt_io_stop(r->loop, &s->io);
        return;
    }
    if (s != NULL) {
        tt_io_set_events(r->loop, &s->io, ev);
        return;
    }
    if (free_slot == NULL) {
        free_slot = tt_calloc(1, sizeof(*free_slot));
        free_slot->r = r;
        free_slot->io.fd = -1;
        tt_list_push_back(&r->socks, &free_slot->link);
    }
    if (tt_io_start(r->loop, &free_slot->io, fd, ev, sock_io_cb) < 0)
        tt_warn("dns: cannot watch resolver socket %d: %m", fd);
}

tt_resolver_t *tt_resolver_new(tt_loop_t *loop, const tt_addr_t *servers, size_t nservers,
                               char *err, size_t errlen)
{
    tt_resolver_t *r = tt_calloc(1, sizeof(*r));
    r->loop = loop;
    tt_list_init(&r->socks);
    tt_timer_init(&r->timer, timer_cb);
    struct ares_options o = {0};
    int mask = ARES_OPT_SOCK_STATE_CB;
    o.sock_state_cb = sock_state_cb;
    o.sock_state_cb_data = r;
    if (nservers > 0) {
        o.lookups = (char *)"b";
        o.timeout = SERVER_TIMEOUT_MS;
        o.tries = SERVER_TRIES;
        mask |= ARES_OPT_LOOKUPS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    }
    int rc = ares_init_options(&r->channel, &o, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "cannot start the DNS resolver: %s", ares_strerror(rc));
        free(r);
        return NULL;
    }
    if (nservers > 0) {
        char csv[2048], one[TT_ADDR_STRLEN];
        size_t len = 0;
        for (size_t i = 0; i < nservers && len < sizeof(csv); i++)
            len += (size_t)snprintf(csv + len, sizeof(csv) - len, "%s%s", i ? "," : "",
                                    tt_addr_format(&servers[i], one));
        rc = ares_set_servers_ports_csv(r->channel, csv);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "resolver %s: %s", csv, ares_strerror(rc));
            ares_destroy(r->channel);
            free(r);
            return NULL;
        }
    }
    return r;
}

void tt_resolver_free(tt_resolver_t *r)
{
    if (r == NULL)
        return;
    TT_BUG_ON(r->nwatches != 0);
    ares_destroy(r->channel); /* ends orphaned queries (their callbacks free them) */
    tt_loop_timer_stop(r->loop, &r->timer);
    tt_list_t *n, *tmp;
    tt_list_foreach_safe(n, tmp, &r->socks)
    {
        dns_sock_t *s = tt_container_of(n, dns_sock_t, link);
        tt_io_stop(r->loop, &s->io);
        free(s);
    }
    free(r);
}

const char *tt_dns_result_name(tt_dns_result_t r)
{
    static const char *const names[] = {"ok", "empty", "error"};
    return names[r];
}

static int cmp_addr_cb(const void *a, const void *b)
{
    return tt_addr_compare(a, b);
}

static void start_lookup(tt_dns_watch_t *w);

static void lookup_timer_cb(tt_timer_t *t)
{
    start_lookup(tt_container_of(t, tt_dns_watch_t, timer));
}

/* Delay before the next lookup after a good answer whose lowest TTL is ttl_s. */
static tt_msec_t refresh_after(const tt_dns_watch_t *w, int ttl_s)
{
    const tt_dns_policy_t *p = &w->policy;
    if (p->refresh == TT_DNS_REFRESH_FIXED)
        return p->interval;
    tt_msec_t ms = ttl_s > 0 ? (tt_msec_t)ttl_s * 1000 : 0;
    return TT_MIN(TT_MAX(ms, p->min_ttl), p->max_ttl);
}

/* Backoff after failures in a row: min_ttl, doubling, up to the refresh interval. */
static tt_msec_t retry_after(const tt_dns_watch_t *w)
{
    const tt_dns_policy_t *p = &w->policy;
    tt_msec_t cap = p->refresh == TT_DNS_REFRESH_FIXED ? p->interval : p->max_ttl;
    tt_msec_t ms = TT_MAX(p->min_ttl, 1);
    for (unsigned i = 1; i < w->failures && ms < cap; i++)
        ms *= 2;
    return TT_MIN(ms, TT_MAX(cap, p->min_ttl));
}

/* Replaces the set in force; returns 1 if it differs from the old one. */
static int set_addrs(tt_dns_watch_t *w, tt_addr_t *addrs, size_t n)
{
    int changed = n != w->naddrs || (n > 0 && memcmp(addrs, w->addrs, n * sizeof(*addrs)) != 0);
    free(w->addrs);
    w->addrs = addrs;
    w->naddrs = n;
    if (changed)
        atomic_store_explicit(&w->stats.last_change_wall_ms, tt_clock_wall_ms(),
                              memory_order_relaxed);
    return changed;
}

/* The answer's addresses, sorted, deduplicated, with the watch's port; *ttl_s the lowest TTL. */
static size_t collect(const tt_dns_watch_t *w, const struct ares_addrinfo *ai, tt_addr_t **out,
                      int *ttl_s)
{
    size_t cap = 0, n = 0;
    for (const struct ares_addrinfo_node *nd = ai ? ai->nodes : NULL; nd; nd = nd->ai_next)
        cap++;
    tt_addr_t *a = tt_calloc(cap ? cap : 1, sizeof(*a));
    *ttl_s = -1;
    for (const struct ares_addrinfo_node *nd = ai ? ai->nodes : NULL; nd; nd = nd->ai_next) {
        tt_addr_t *x = &a[n];
        if (nd->ai_family == AF_INET && nd->ai_addrlen >= sizeof(struct sockaddr_in)) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&x->ss;
            memcpy(sin, nd->ai_addr, sizeof(*sin));
            sin->sin_port = htons((uint16_t)w->port);
            x->len = sizeof(*sin);
        } else if (nd->ai_family == AF_INET6 && nd->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&x->ss;
            memcpy(sin6, nd->ai_addr, sizeof(*sin6));
            sin6->sin6_port = htons((uint16_t)w->port);
            x->len = sizeof(*sin6);
        } else {
            continue;
        }
        if (*ttl_s < 0 || nd->ai_ttl < *ttl_s)
            *ttl_s = nd->ai_ttl;
        n++;
    }
    qsort(a, n, sizeof(*a), cmp_addr_cb);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || tt_addr_compare(&a[m - 1], &a[i]) != 0)
            a[m++] = a[i];
    *out = a;
    return m;
}

static void lookup_done_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    query_t *q = arg;
    tt_dns_watch_t *w = q->w;
    free(q);
    if (w == NULL || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        ares_freeaddrinfo(ai);
        return;
    }
    w->query = NULL;
    tt_addr_t *addrs = NULL;
    int ttl_s = -1;
    size_t n = status == ARES_SUCCESS ? collect(w, ai, &addrs, &ttl_s) : 0;
    ares_freeaddrinfo(ai);

    tt_dns_result_t result;
    if (n > 0)
        result = TT_DNS_OK;
    else if (status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND)
        result = TT_DNS_EMPTY;
    else
        result = TT_DNS_ERROR;
    atomic_fetch_add_explicit(&w->stats.lookups[result], 1, memory_order_relaxed);

    int changed = 0;
    tt_msec_t next;
    if (result == TT_DNS_OK) {
        changed = set_addrs(w, addrs, n);
        addrs = NULL;
        if (w->warned)
            tt_info("%s: DNS lookup of %s succeeds again (%zu address%s)", w->label, w->host, n,
                    n == 1 ? "" : "es");
        w->resolved = 1;
        w->failures = 0;
        w->warned = 0;
        next = w->policy.refresh == TT_DNS_REFRESH_OFF ? TT_TIME_NEVER : refresh_after(w, ttl_s);
    } else {
        w->failures++;
        int clear = result == TT_DNS_EMPTY && w->policy.empty == TT_DNS_EMPTY_CLEAR;
        if (!w->warned) {
            const char *why =
                result == TT_DNS_EMPTY
                    ? (status == ARES_ENOTFOUND ? "no such name (NXDOMAIN)" : "no A or AAAA record")
                    : ares_strerror(status);
            if (clear)
                tt_warn("%s: DNS lookup of %s: %s; the endpoint set is now empty (dns_empty = "
                        "clear)",
                        w->label, w->host, why);
            else if (w->naddrs > 0)
                tt_warn("%s: DNS lookup of %s failed: %s; keeping the last %zu address%s until "
                        "a lookup succeeds",
                        w->label, w->host, why, w->naddrs, w->naddrs == 1 ? "" : "es");
            else
                tt_warn("%s: DNS lookup of %s failed: %s; no endpoints until a lookup succeeds",
                        w->label, w->host, why);
            w->warned = 1;
        }
        if (clear)
            changed = set_addrs(w, tt_calloc(1, sizeof(tt_addr_t)), 0);
        next = retry_after(w);
    }
    free(addrs);
    (void)timeouts;
    if (next != TT_TIME_NEVER)
        tt_loop_timer_after(w->r->loop, &w->timer, next);
    w->cb(w, result, changed, w->data);
}

static void start_lookup(tt_dns_watch_t *w)
{
    if (w->query != NULL)
        return;
    query_t *q = tt_calloc(1, sizeof(*q));
    q->w = w;
    w->query = q;
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT};
    /* May complete at once (the hosts file): the callback runs before this returns. */
    ares_getaddrinfo(w->r->channel, w->host, NULL, &hints, lookup_done_cb, q);
    update_timer(w->r);
}

tt_dns_watch_t *tt_dns_watch_new(tt_resolver_t *r, const char *host, int port,
                                 const tt_dns_policy_t *policy, const char *label, tt_dns_cb cb,
                                 void *data)
{
    tt_dns_watch_t *w = tt_calloc(1, sizeof(*w));
    w->r = r;
    w->host = tt_strdup(host);
    w->port = port;
    w->policy = *policy;
    snprintf(w->label, sizeof(w->label), "%s", label);
    w->cb = cb;
    w->data = data;
    tt_timer_init(&w->timer, lookup_timer_cb);
    r->nwatches++;
    tt_loop_timer_after(r->loop, &w->timer, 0);
    return w;
}

void tt_dns_watch_free(tt_dns_watch_t *w)
{
    if (w == NULL)
        return;
    if (w->query != NULL)
        w->query->w = NULL;
    tt_loop_timer_stop(w->r->loop, &w->timer);
    w->r->nwatches--;
    free(w->addrs);
    free(w->host);
    free(w);
}

const tt_addr_t *tt_dns_watch_addrs(const tt_dns_watch_t *w, size_t *n)
{
    *n = w->naddrs;
    return w->addrs;
}

tt_msec_t tt_dns_watch_next_lookup(const tt_dns_watch_t *w)
{
    return tt_timer_armed(&w->timer) ? w->timer.expire_at : TT_TIME_NEVER;
}

const tt_dns_stats_t *tt_dns_watch_stats(const tt_dns_watch_t *w)
{
    return &w->stats;
}
