#include "churn/pairs.h"

#include "core/invariant.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define NO_PAIR   UINT32_MAX
#define NS_PER_MS 1000000ULL

void tt_churn_init(tt_churn_t *c, tt_churn_source_t source, uint64_t netns, uint64_t start_ns,
                   unsigned window_s)
{
    memset(c, 0, sizeof(*c));
    c->source = source;
    c->netns = netns;
    c->start_ns = c->end_ns = c->last_snap_ns = start_ns;
    c->window_s = window_s ? window_s : 1;
    c->free_conn = c->free_cookie = NO_PAIR;
    c->resolve_procs = 1;
    c->ephemeral_lo = 32768;
    c->ephemeral_hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
    unsigned lo, hi;
    if (f && fscanf(f, "%u %u", &lo, &hi) == 2 && lo <= hi && hi <= 65535) {
        c->ephemeral_lo = (uint16_t)lo;
        c->ephemeral_hi = (uint16_t)hi;
    }
    if (f)
        fclose(f);
    tt_u64map_init(&c->pair_index);
    tt_u64map_init(&c->remote_index);
    tt_u64map_init(&c->conn_index);
    tt_u64map_init(&c->cookie_index);
    tt_u64map_init(&c->tuple_index);
    tt_procs_init(&c->procs);
}

void tt_churn_free(tt_churn_t *c)
{
    for (uint32_t i = 0; i < c->npairs; i++)
        free(c->pairs[i].opens_per_sec);
    free(c->pairs);
    free(c->conns);
    free(c->cookies);
    free(c->listeners);
    tt_u64map_free(&c->pair_index);
    tt_u64map_free(&c->remote_index);
    tt_u64map_free(&c->conn_index);
    tt_u64map_free(&c->cookie_index);
    tt_u64map_free(&c->tuple_index);
    tt_procs_free(&c->procs);
}

const tt_churn_addr_t *tt_churn_pair_endpoint(const tt_churn_pair_t *p)
{
    return p->dir == TT_CHURN_OUT ? &p->remote : &p->local;
}

uint64_t tt_churn_total_opens(const tt_churn_t *c)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < c->npairs; i++)
        n += c->pairs[i].opens;
    return n;
}

/* --- pairs --------------------------------------------------------------------------------- */

static uint64_t nonzero(uint64_t h)
{
    return h ? h : 1;
}

static uint64_t pair_hash(tt_churn_dir_t dir, const char *process, const tt_churn_addr_t *ep)
{
    uint64_t h = tt_churn_addr_hash(ep, dir);
    for (const char *s = dir == TT_CHURN_OUT ? process : ""; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return nonzero(h);
}

static int pair_is(const tt_churn_pair_t *p, tt_churn_dir_t dir, const char *process,
                   const tt_churn_addr_t *ep)
{
    return p->dir == dir && tt_churn_addr_eq(tt_churn_pair_endpoint(p), ep) &&
           (dir == TT_CHURN_IN || strcmp(p->process, process) == 0);
}

/* The pair for (dir, process, endpoint), created on first use. process is ignored for inbound
 * pairs (their process is the listener's owner, set by the caller). */
static uint32_t pair_get(tt_churn_t *c, tt_churn_dir_t dir, const char *process, int pid,
                         const tt_churn_addr_t *ep)
{
    uint64_t h = pair_hash(dir, process, ep);
    uint32_t idx;
    if (tt_u64map_get(&c->pair_index, h, &idx) && pair_is(&c->pairs[idx], dir, process, ep))
        return idx;
    for (idx = 0; idx < c->npairs; idx++) /* a hash collision: rare, so a scan is fine */
        if (pair_is(&c->pairs[idx], dir, process, ep))
            return idx;
    if (c->npairs == c->cap_pairs) {
        c->cap_pairs = c->cap_pairs ? c->cap_pairs * 2 : 32;
        c->pairs = tt_realloc(c->pairs, sizeof(*c->pairs) * c->cap_pairs);
    }
    idx = c->npairs++;
    tt_churn_pair_t *p = &c->pairs[idx];
    memset(p, 0, sizeof(*p));
    p->dir = dir;
    p->pid = pid;
    snprintf(p->process, sizeof(p->process), "%s", process);
    if (dir == TT_CHURN_OUT)
        p->remote = *ep;
    else
        p->local = *ep;
    p->opens_per_sec = tt_calloc(c->window_s + 1, sizeof(uint32_t));
    tt_u64map_put(&c->pair_index, h, idx);
    if (dir == TT_CHURN_OUT && pid > 0)
        tt_u64map_put(&c->remote_index, nonzero(tt_churn_addr_hash(ep, 7)), idx);
    return idx;
}

static void count_open(tt_churn_t *c, uint32_t pair, uint64_t ts_ns)
{
    tt_churn_pair_t *p = &c->pairs[pair];
    p->opens++;
    uint64_t sec = ts_ns > c->start_ns ? (ts_ns - c->start_ns) / 1000000000ULL : 0;
    p->opens_per_sec[sec < c->window_s ? sec : c->window_s]++;
}

/* The listener a local address belongs to: the exact address first, then a wildcard one of the
 * same port (a dual-stack [::] listener also accepts IPv4). */
static const tt_churn_listener_t *find_listener(const tt_churn_t *c, const tt_churn_addr_t *local)
{
    const tt_churn_listener_t *wild = NULL;
    for (uint32_t i = 0; i < c->nlisteners; i++) {
        const tt_churn_listener_t *l = &c->listeners[i];
        if (l->addr.port != local->port)
            continue;
        if (tt_churn_addr_eq(&l->addr, local))
            return l;
        if (tt_churn_addr_is_any(&l->addr) &&
            (l->addr.family == local->family || l->addr.family == AF_INET6))
            wild = wild && wild->addr.family == local->family ? wild : l;
    }
    return wild;
}

static uint32_t inbound_pair(tt_churn_t *c, const tt_churn_listener_t *l,
                             const tt_churn_addr_t *local)
{
    if (!l)
        return pair_get(c, TT_CHURN_IN, "?", 0, local);
    uint32_t idx = pair_get(c, TT_CHURN_IN, l->process, l->pid, &l->addr);
    tt_churn_pair_t *p = &c->pairs[idx];
    if (p->pid == 0 && l->pid > 0) { /* first seen before its owner was known */
        p->pid = l->pid;
        snprintf(p->process, sizeof(p->process), "%s", l->process);
    }
    return idx;
}

/* --- trace events ---------------------------------------------------------------------------- */

static uint32_t conn_alloc(tt_churn_t *c)
{
    if (c->free_conn != NO_PAIR) {
        uint32_t i = c->free_conn;
        c->free_conn = c->conns[i].pair;
        return i;
    }
    if (c->nconns == c->cap_conns) {
        c->cap_conns = c->cap_conns ? c->cap_conns * 2 : 1024;
        c->conns = tt_realloc(c->conns, sizeof(*c->conns) * c->cap_conns);
    }
    return c->nconns++;
}

static void conn_release(tt_churn_t *c, uint32_t i)
{
    c->conns[i].birth_ns = 0;
    c->conns[i].pair = c->free_conn;
    c->free_conn = i;
}

static void track_open(tt_churn_t *c, const tt_trace_event_t *ev, uint32_t pair)
{
    uint32_t i;
    if (tt_u64map_get(&c->conn_index, ev->skaddr, &i)) { /* reused socket: a new connection */
        c->conns[i].birth_ns = ev->ts_ns;
        c->conns[i].pair = pair;
    } else {
        i = conn_alloc(c);
        c->conns[i] = (tt_churn_conn_t){.birth_ns = ev->ts_ns, .pair = pair};
        tt_u64map_put(&c->conn_index, ev->skaddr, i);
    }
    count_open(c, pair, ev->ts_ns);
}

static uint64_t tuple_hash(const tt_churn_addr_t *local, const tt_churn_addr_t *remote)
{
    return nonzero(tt_churn_addr_hash(local, tt_churn_addr_hash(remote, 3)));
}

void tt_churn_on_event(tt_churn_t *c, const tt_trace_event_t *ev)
{
    if (ev->protocol != IPPROTO_TCP || ev->skaddr == 0)
        return;
    c->events++;
    if (ev->newstate == TT_TCP_SYN_SENT) {
        tt_proc_t unresolved = {.pid = ev->pid, .comm = "?"};
        const tt_proc_t *proc =
            c->resolve_procs ? tt_procs_by_tid(&c->procs, ev->pid) : &unresolved;
        if (c->netns && proc->netns && proc->netns != c->netns) {
            c->ignored_events++;
            return;
        }
        track_open(c, ev, pair_get(c, TT_CHURN_OUT, proc->comm, proc->pid, &ev->remote));
    } else if (ev->newstate == TT_TCP_SYN_RECV) {
        /* The child socket is cloned from its listener: local is the listener's own address
         * (a wildcard one included) and the peer is not filled in yet. */
        const tt_churn_listener_t *l = find_listener(c, &ev->local);
        if (c->netns && !l) {
            c->ignored_events++;
            return;
        }
        track_open(c, ev, inbound_pair(c, l, &ev->local));
    } else if (ev->newstate == TT_TCP_CLOSE) {
        uint32_t i, pair;
        if (tt_u64map_del(&c->conn_index, ev->skaddr, &i)) {
            tt_churn_pair_t *p = &c->pairs[c->conns[i].pair];
            p->closes++;
            if (ev->oldstate == TT_TCP_SYN_SENT)
                p->failed++;
            else if (ev->ts_ns >= c->conns[i].birth_ns) /* cross-CPU stamps never run back */
                tt_hist_record(&p->lifetime_us, (ev->ts_ns - c->conns[i].birth_ns) / 1000);
            conn_release(c, i);
        } else if (ev->oldstate != TT_TCP_LISTEN &&
                   tt_u64map_get(&c->tuple_index, tuple_hash(&ev->local, &ev->remote), &pair)) {
            /* Opened before sampling began (listed by a snapshot): a close without a lifetime. */
            c->pairs[pair].closes++;
        } else {
            c->ignored_events++;
        }
    }
}

/* --- snapshots ------------------------------------------------------------------------------- */

static uint32_t cookie_alloc(tt_churn_t *c)
{
    if (c->free_cookie != NO_PAIR) {
        uint32_t i = c->free_cookie;
        c->free_cookie = c->cookies[i].pair;
        return i;
    }
    if (c->ncookies == c->cap_cookies) {
        c->cap_cookies = c->cap_cookies ? c->cap_cookies * 2 : 1024;
        c->cookies = tt_realloc(c->cookies, sizeof(*c->cookies) * c->cap_cookies);
    }
    return c->ncookies++;
}

static void cookie_release(tt_churn_t *c, uint32_t i)
{
    tt_u64map_del(&c->cookie_index, c->cookies[i].cookie, NULL);
    c->cookies[i].in_use = 0;
    c->cookies[i].pair = c->free_cookie;
    c->free_cookie = i;
}

static void add_listener(tt_churn_t *c, const tt_sockdiag_sock_t *s)
{
    if (c->nlisteners == c->cap_listeners) {
        c->cap_listeners = c->cap_listeners ? c->cap_listeners * 2 : 64;
        c->listeners = tt_realloc(c->listeners, sizeof(*c->listeners) * c->cap_listeners);
    }
    tt_churn_listener_t *l = &c->listeners[c->nlisteners++];
    memset(l, 0, sizeof(*l));
    l->addr = s->local;
    snprintf(l->process, sizeof(l->process), "?");
    const tt_proc_t *owner = tt_procs_by_inode(&c->procs, s->inode);
    if (owner) {
        l->pid = owner->pid;
        snprintf(l->process, sizeof(l->process), "%s", owner->comm);
    }
}

/* The outbound pair of a socket that has no owner (TIME_WAIT, or one /proc does not show): the
 * known client of that remote, else an unknown one. */
static uint32_t orphan_pair(tt_churn_t *c, const tt_churn_addr_t *remote)
{
    uint32_t idx;
    if (tt_u64map_get(&c->remote_index, nonzero(tt_churn_addr_hash(remote, 7)), &idx))
        return idx;
    return pair_get(c, TT_CHURN_OUT, "?", 0, remote);
}

static int is_ephemeral(const tt_churn_t *c, uint16_t port)
{
    return port >= c->ephemeral_lo && port <= c->ephemeral_hi;
}

static uint32_t classify(tt_churn_t *c, const tt_sockdiag_sock_t *s)
{
    const tt_churn_listener_t *l = find_listener(c, &s->local);
    if (l)
        return inbound_pair(c, l, &s->local);
    const tt_proc_t *owner = tt_procs_by_inode(&c->procs, s->inode);
    if (owner)
        return pair_get(c, TT_CHURN_OUT, owner->comm, owner->pid, &s->remote);
    /* No owner and no listener (any more): the accepted side of a server that closed its
     * listening socket, when the peer's port is ephemeral and the own one is not. */
    if (is_ephemeral(c, s->remote.port) && !is_ephemeral(c, s->local.port))
        return pair_get(c, TT_CHURN_IN, "?", 0, &s->local);
    return orphan_pair(c, &s->remote);
}

/* Whether the owners must be looked up again (a readlink per open file of the host): on the
 * first dump, for a new listener, and with the sample source for sockets not seen before. The
 * trace source knows the connecting process from the event, so its later dumps file unknown
 * client sockets under the traced pair of the same remote (orphan_pair). */
static int needs_owner_scan(const tt_churn_t *c, const tt_sockdiag_sock_t *socks, size_t n)
{
    if (c->nsnap == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if (!socks[i].inode || tt_procs_by_inode(&c->procs, socks[i].inode))
            continue;
        uint32_t k;
        if (socks[i].state == TT_TCP_LISTEN ||
            (c->source == TT_CHURN_SOURCE_SAMPLE &&
             !tt_u64map_get(&c->cookie_index, socks[i].cookie, &k)))
            return 1;
    }
    return 0;
}

static int is_closed_state(int state)
{
    return state == TT_TCP_TIME_WAIT;
}

/* Sample source: a connection ended. Its lifetime is known to within the snapshot interval, so
 * the bound recorded is the upper one (from the snapshot before it was first seen). */
static void sample_close(tt_churn_t *c, tt_churn_cookie_t *k, uint64_t now_ns)
{
    tt_churn_pair_t *p = &c->pairs[k->pair];
    p->closes++;
    if (!k->preexisting)
        tt_hist_record(&p->lifetime_us, (now_ns - k->before_first_ns) / 1000);
}

static int is_loopback(const tt_churn_addr_t *a)
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    return a->family == AF_INET ? a->addr[0] == 127 : memcmp(a->addr, v6_loopback, 16) == 0;
}

/* Sample source: a connection between two sockets of this host that was born and ended between
 * two dumps leaves one TIME_WAIT socket, on the side that closed first; the other side is gone
 * without a trace. Its open and close are counted for that other side's pair too, unless the
 * dump lists the other side itself. */
static void mirror_short_connection(tt_churn_t *c, const tt_sockdiag_sock_t *s,
                                    const tt_u64map_t *listed, uint64_t now_ns)
{
    uint32_t any;
    if (!is_loopback(&s->remote) && !tt_churn_addr_eq(&s->remote, &s->local))
        return;
    if (tt_u64map_get(listed, tuple_hash(&s->remote, &s->local), &any))
        return;
    const tt_churn_listener_t *l = find_listener(c, &s->local);
    uint32_t peer;
    if (l) /* the server side closed first: the peer was a client connecting to l */
        peer = orphan_pair(c, &s->local);
    else if ((l = find_listener(c, &s->remote)))
        peer = inbound_pair(c, l, &s->remote);
    else
        return;
    count_open(c, peer, now_ns);
    c->pairs[peer].closes++;
    tt_hist_record(&c->pairs[peer].lifetime_us, (now_ns - c->last_snap_ns) / 1000);
}

static void follow_cookie(tt_churn_t *c, const tt_sockdiag_sock_t *s, uint32_t pair,
                          uint64_t now_ns, const tt_u64map_t *listed)
{
    int sample = c->source == TT_CHURN_SOURCE_SAMPLE;
    uint32_t i;
    tt_churn_cookie_t *k;
    if (!s->cookie)
        return;
    if (!tt_u64map_get(&c->cookie_index, s->cookie, &i)) {
        i = cookie_alloc(c);
        k = &c->cookies[i];
        *k = (tt_churn_cookie_t){.cookie = s->cookie,
                                 .first_ns = now_ns,
                                 .before_first_ns = c->last_snap_ns,
                                 .pair = pair,
                                 .retrans = c->nsnap == 0 ? s->total_retrans : 0,
                                 .state = (uint8_t)s->state,
                                 .preexisting = c->nsnap == 0,
                                 .in_use = 1};
        tt_u64map_put(&c->cookie_index, s->cookie, i);
        if (sample && c->nsnap > 0) {
            count_open(c, pair, now_ns);
            if (is_closed_state(s->state)) {
                sample_close(c, k, now_ns);
                mirror_short_connection(c, s, listed, now_ns);
            }
        }
    } else {
        k = &c->cookies[i];
        /* A socket keeps its pair once classified (TIME_WAIT loses its owner). */
        if (sample && !is_closed_state(k->state) && is_closed_state(s->state))
            sample_close(c, k, now_ns);
        k->state = (uint8_t)s->state;
    }
    if (s->has_info && s->total_retrans > k->retrans) {
        c->pairs[k->pair].retransmits += s->total_retrans - k->retrans;
        k->retrans = s->total_retrans;
    }
    k->last_snap = c->nsnap;
}

void tt_churn_on_snapshot(tt_churn_t *c, const tt_sockdiag_sock_t *socks, size_t n, uint64_t now_ns,
                          int with_time_wait)
{
    if (c->resolve_procs && needs_owner_scan(c, socks, n))
        tt_procs_refresh(&c->procs);
    c->nlisteners = 0;
    for (size_t i = 0; i < n; i++)
        if (socks[i].state == TT_TCP_LISTEN)
            add_listener(c, &socks[i]);
    for (uint32_t i = 0; i < c->npairs; i++) {
        tt_churn_pair_t *p = &c->pairs[i];
        p->established = p->close_wait = p->syn_sent = 0;
        p->mem_bytes = 0;
        if (with_time_wait)
            p->time_wait = 0;
    }
    tt_u64map_clear(&c->tuple_index);
    tt_u64map_t listed; /* sample source: every (local, remote) of this dump */
    tt_u64map_init(&listed);
    for (size_t i = 0; c->source == TT_CHURN_SOURCE_SAMPLE && i < n; i++)
        if (socks[i].state != TT_TCP_LISTEN)
            tt_u64map_put(&listed, tuple_hash(&socks[i].local, &socks[i].remote), 1);
    for (size_t i = 0; i < n; i++) {
        const tt_sockdiag_sock_t *s = &socks[i];
        if (s->state == TT_TCP_LISTEN)
            continue;
        uint32_t known, pair;
        if (s->cookie && tt_u64map_get(&c->cookie_index, s->cookie, &known))
            pair = c->cookies[known].pair;
        else
            pair = classify(c, s);
        follow_cookie(c, s, pair, now_ns, &listed);
        tt_churn_pair_t *p = &c->pairs[pair];
        p->mem_bytes += s->mem_bytes;
        switch (s->state) {
        case TT_TCP_ESTABLISHED:
            p->established++;
            break;
        case TT_TCP_TIME_WAIT:
            p->time_wait++;
            break;
        case TT_TCP_CLOSE_WAIT:
            p->close_wait++;
            break;
        case TT_TCP_SYN_SENT:
            p->syn_sent++;
            break;
        default:
            break;
        }
        if (s->state != TT_TCP_TIME_WAIT)
            tt_u64map_put(&c->tuple_index, tuple_hash(&s->local, &s->remote), pair);
    }
    tt_u64map_free(&listed);
    for (uint32_t i = 0; i < c->npairs; i++) {
        tt_churn_pair_t *p = &c->pairs[i];
        p->peak_established = TT_MAX(p->peak_established, p->established);
        p->established_sum += p->established;
    }
    /* Sockets this dump no longer lists: closed (sample source), or out of TIME_WAIT. A dump
     * without TIME_WAIT says nothing about the TIME_WAIT sockets of the one before. */
    for (uint32_t i = 0; i < c->ncookies; i++) {
        tt_churn_cookie_t *k = &c->cookies[i];
        if (!k->in_use || k->last_snap == c->nsnap)
            continue;
        if (is_closed_state(k->state) && !with_time_wait)
            continue;
        if (c->source == TT_CHURN_SOURCE_SAMPLE && !is_closed_state(k->state))
            sample_close(c, k, now_ns);
        cookie_release(c, i);
    }
    c->nsnap++;
    c->last_snap_ns = now_ns;
}

/* Folds an ownerless outbound pair into the pair of the process that turned out to talk to that
 * remote (its TIME_WAIT sockets were listed before the process's first connect was). */
static void merge_orphans(tt_churn_t *c)
{
    for (uint32_t i = 0; i < c->npairs; i++) {
        tt_churn_pair_t *o = &c->pairs[i];
        uint32_t k;
        if (o->dir != TT_CHURN_OUT || o->pid != 0 ||
            !tt_u64map_get(&c->remote_index, nonzero(tt_churn_addr_hash(&o->remote, 7)), &k) ||
            k == i)
            continue;
        tt_churn_pair_t *p = &c->pairs[k];
        p->opens += o->opens;
        p->closes += o->closes;
        p->failed += o->failed;
        tt_hist_merge(&p->lifetime_us, &o->lifetime_us);
        for (unsigned s = 0; s <= c->window_s; s++)
            p->opens_per_sec[s] += o->opens_per_sec[s];
        p->established += o->established;
        p->time_wait += o->time_wait;
        p->close_wait += o->close_wait;
        p->syn_sent += o->syn_sent;
        p->mem_bytes += o->mem_bytes;
        p->peak_established = TT_MAX(p->peak_established, o->peak_established);
        p->established_sum += o->established_sum;
        p->retransmits += o->retransmits;
        p->open_age_sum_ms += o->open_age_sum_ms;
        p->open_count += o->open_count;
        p->open_preexisting += o->open_preexisting;
        uint32_t *per_sec = o->opens_per_sec;
        memset(o, 0, sizeof(*o)); /* empty: left out of every report */
        o->dir = TT_CHURN_OUT;
        memset(per_sec, 0, sizeof(uint32_t) * (c->window_s + 1));
        o->opens_per_sec = per_sec;
        snprintf(o->process, sizeof(o->process), "?");
    }
}

void tt_churn_finish(tt_churn_t *c, uint64_t end_ns)
{
    c->end_ns = end_ns;
    uint64_t window_ms = (end_ns - c->start_ns) / NS_PER_MS;
    for (uint32_t i = 0; i < c->npairs; i++)
        c->pairs[i].open_age_sum_ms = c->pairs[i].open_count = c->pairs[i].open_preexisting = 0;
    /* Ages of the connections still open: from their birth when it was seen (traced, or first
     * listed after the start), else at least the whole window. */
    for (uint32_t i = 0; i < c->nconns; i++) {
        if (!c->conns[i].birth_ns)
            continue;
        tt_churn_pair_t *p = &c->pairs[c->conns[i].pair];
        p->open_age_sum_ms += (end_ns - c->conns[i].birth_ns) / NS_PER_MS;
        p->open_count++;
    }
    for (uint32_t i = 0; i < c->ncookies; i++) {
        const tt_churn_cookie_t *k = &c->cookies[i];
        if (!k->in_use || is_closed_state(k->state) || k->state == TT_TCP_LISTEN)
            continue;
        tt_churn_pair_t *p = &c->pairs[k->pair];
        if (k->preexisting) {
            p->open_age_sum_ms += window_ms;
            p->open_count++;
            p->open_preexisting++;
        } else if (c->source == TT_CHURN_SOURCE_SAMPLE) {
            p->open_age_sum_ms += (end_ns - k->before_first_ns) / NS_PER_MS;
            p->open_count++;
        }
    }
    merge_orphans(c);
}
