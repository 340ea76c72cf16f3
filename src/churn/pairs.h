/* Aggregation for `tether churn`: connections grouped into service pairs.
 *
 * Outbound connections group by (process name, remote address:port): a pre-forking service's
 * workers, or a script run once per call, are one client. Inbound connections group by the local
 * listening socket they were accepted on (who is being churned). Two inputs feed a tally:
 *
 *  - trace events (tt_churn_on_event): an open at SYN_SENT (connect) or SYN_RECV (accept), an end
 *    at CLOSE, with the exact lifetime between them;
 *  - sock_diag snapshots (tt_churn_on_snapshot): the gauges (ESTABLISHED, TIME_WAIT, CLOSE_WAIT,
 *    SYN_SENT, socket memory), retransmits followed per socket cookie, the listeners and owners.
 *    With the sample source, snapshots are also the only view of opens and closes: a cookie not
 *    seen before is an open, a socket found in TIME_WAIT or gone is a close, and lifetimes are
 *    upper bounds at the snapshot interval's resolution.
 *
 * Tracepoints fire in every network namespace; a tally restricted to one (netns != 0) keeps an
 * outbound open only when the connecting task runs in that namespace and an inbound one only when
 * the accepting listener exists in that namespace's snapshot. Not thread-safe; one owner. */
#ifndef TT_CHURN_PAIRS_H
#define TT_CHURN_PAIRS_H

#include "churn/addr.h"
#include "churn/procs.h"
#include "churn/sockdiag.h"
#include "churn/trace_format.h"
#include "churn/u64map.h"
#include "core/histogram.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { TT_CHURN_OUT, TT_CHURN_IN } tt_churn_dir_t;
typedef enum { TT_CHURN_SOURCE_TRACE, TT_CHURN_SOURCE_SAMPLE } tt_churn_source_t;

typedef struct {
    tt_churn_dir_t dir;
    char process[TT_PROCS_COMM_LEN];
    int pid;                        /* first process seen (0: unknown) */
    tt_churn_addr_t local;          /* in: the listening socket's address; out: unset */
    tt_churn_addr_t remote;         /* out: the peer; in: unset */
    uint64_t opens, closes, failed; /* failed: connects that ended in SYN_SENT */
    tt_hist_t lifetime_us;          /* connections both opened and closed while sampling */
    uint32_t *opens_per_sec;        /* one counter per second of the window */
    /* gauges of the last snapshot (TIME_WAIT: of the last one that listed TIME_WAIT) */
    uint32_t established, time_wait, close_wait, syn_sent;
    uint64_t mem_bytes;
    uint32_t peak_established;
    uint64_t established_sum; /* over snapshots, for the mean */
    uint64_t retransmits;
    uint64_t open_age_sum_ms; /* connections open at the end: their age so far */
    uint32_t open_count, open_preexisting;
} tt_churn_pair_t;

typedef struct {
    uint64_t birth_ns;
    uint32_t pair;
} tt_churn_conn_t;

typedef struct {
    uint64_t cookie;
    uint64_t first_ns, before_first_ns; /* seen first; the snapshot before that one */
    uint32_t pair, last_snap, retrans;
    uint8_t state, preexisting, in_use;
} tt_churn_cookie_t;

typedef struct {
    tt_churn_addr_t addr;
    int pid;
    char process[TT_PROCS_COMM_LEN];
} tt_churn_listener_t;

typedef struct {
    tt_churn_source_t source;
    uint64_t netns; /* 0: every namespace */
    uint64_t start_ns, end_ns, last_snap_ns;
    unsigned window_s; /* size of opens_per_sec */
    tt_churn_pair_t *pairs;
    uint32_t npairs, cap_pairs;
    tt_u64map_t pair_index;   /* hash of the key -> pair */
    tt_u64map_t remote_index; /* hash of a remote -> the out pair with a known process */
    tt_churn_conn_t *conns;   /* trace: connections opened while sampling */
    uint32_t nconns, cap_conns, free_conn;
    tt_u64map_t conn_index; /* skaddr -> conn */
    tt_churn_cookie_t *cookies;
    uint32_t ncookies, cap_cookies, free_cookie;
    tt_u64map_t cookie_index; /* cookie -> cookies[] */
    tt_u64map_t tuple_index;  /* hash of (local, remote) in the last snapshot -> pair */
    tt_churn_listener_t *listeners;
    uint32_t nlisteners, cap_listeners;
    uint32_t nsnap;
    uint64_t events, ignored_events, lost_events;
    tt_procs_t procs;
    int resolve_procs; /* look owners up in /proc (off for recorded data in tests) */
    uint16_t ephemeral_lo, ephemeral_hi; /* net.ipv4.ip_local_port_range */
} tt_churn_t;

/* Starts a tally at start_ns (CLOCK_MONOTONIC) for a window of window_s seconds. */
void tt_churn_init(tt_churn_t *c, tt_churn_source_t source, uint64_t netns, uint64_t start_ns,
                   unsigned window_s);
void tt_churn_free(tt_churn_t *c);

/* One tracepoint event (trace source). */
void tt_churn_on_event(tt_churn_t *c, const tt_trace_event_t *ev);

/* One complete sock_diag dump (IPv4 and IPv6 together) taken at now_ns. with_time_wait says
 * whether TIME_WAIT sockets were asked for (the trace source skips them between the first and the
 * last dump: they cost a netlink message each and the trace already counts the closes). */
void tt_churn_on_snapshot(tt_churn_t *c, const tt_sockdiag_sock_t *socks, size_t n, uint64_t now_ns,
                          int with_time_wait);

/* Ends the window at end_ns: ages of connections still open are taken here. */
void tt_churn_finish(tt_churn_t *c, uint64_t end_ns);

/* Opens of every pair together (the host's total, for the share column). */
uint64_t tt_churn_total_opens(const tt_churn_t *c);

/* The pair's endpoint: remote for out, the listener for in. */
const tt_churn_addr_t *tt_churn_pair_endpoint(const tt_churn_pair_t *p);

#endif
