/* Asynchronous DNS re-resolution (c-ares) on a tether event loop.
 *
 * A resolver is one c-ares channel driven by one loop: its sockets are loop watchers and its
 * query timeouts one loop timer, so lookups never block the loop. A watch keeps one name
 * resolved: every A and AAAA record, refreshed when the answer's TTL runs out (clamped to
 * [min_ttl, max_ttl]), at a fixed interval, or never again after the first good answer.
 *
 * What a failed lookup does: an error (timeout, refused, SERVFAIL) keeps the last good set
 * (stale-if-error); so does an empty answer or NXDOMAIN, unless the policy says to clear the set.
 * Either is logged once at warn until a lookup succeeds again; failed lookups are retried with a
 * backoff from min_ttl up to the refresh interval. Neither objects are thread-safe: a resolver and
 * its watches belong to the loop's thread. See docs/internals/endpoints.md. */
#ifndef TT_NET_DNS_H
#define TT_NET_DNS_H

#include "event/loop.h"
#include "event/sock.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tt_resolver tt_resolver_t;
typedef struct tt_dns_watch tt_dns_watch_t;

/* Process-wide c-ares setup; call once before any thread creates a resolver. Returns 0 or -1. */
int tt_dns_global_init(void);
void tt_dns_global_cleanup(void);

/* Creates a resolver on loop. With nservers > 0 it asks exactly those servers (and skips
 * /etc/hosts); with none, it follows resolv.conf and /etc/hosts. Returns NULL with a reason in
 * err on failure. */
tt_resolver_t *tt_resolver_new(tt_loop_t *loop, const tt_addr_t *servers, size_t nservers,
                               char *err, size_t errlen);
/* Frees the resolver; every watch on it must have been freed. Not from a watch's callback. */
void tt_resolver_free(tt_resolver_t *r);

typedef enum {
    TT_DNS_REFRESH_TTL,   /* when the answer's TTL runs out, clamped */
    TT_DNS_REFRESH_FIXED, /* every interval */
    TT_DNS_REFRESH_OFF,   /* resolve until the first good answer, then never again */
} tt_dns_refresh_t;

typedef enum {
    TT_DNS_EMPTY_KEEP,  /* an empty answer or NXDOMAIN keeps the last set */
    TT_DNS_EMPTY_CLEAR, /* ... empties it */
} tt_dns_empty_t;

typedef struct {
    tt_dns_refresh_t refresh;
    tt_msec_t interval; /* TT_DNS_REFRESH_FIXED */
    tt_msec_t min_ttl, max_ttl;
    tt_dns_empty_t empty;
} tt_dns_policy_t;

typedef enum {
    TT_DNS_OK,    /* at least one address */
    TT_DNS_EMPTY, /* NXDOMAIN, or no A or AAAA record */
    TT_DNS_ERROR, /* no answer (timeout, refused, server failure) */
} tt_dns_result_t;

#define TT_DNS_RESULTS 3

/* After every lookup: its result, and whether the set in force changed (read it with
 * tt_dns_watch_addrs()). Runs on the loop; must not free the watch or its resolver. */
typedef void (*tt_dns_cb)(tt_dns_watch_t *w, tt_dns_result_t result, int changed, void *data);

/* Starts watching host; the first lookup starts at once. Addresses get port. label names the
 * owner in logs ("upstream users"). The policy is copied. */
tt_dns_watch_t *tt_dns_watch_new(tt_resolver_t *r, const char *host, int port,
                                 const tt_dns_policy_t *policy, const char *label, tt_dns_cb cb,
                                 void *data);
/* Stops and frees a watch; a lookup in flight is forgotten. Not from its own callback. */
void tt_dns_watch_free(tt_dns_watch_t *w);

/* The set in force, sorted by tt_addr_compare(), without duplicates; valid until the next
 * lookup completes. Empty until a first good answer. */
const tt_addr_t *tt_dns_watch_addrs(const tt_dns_watch_t *w, size_t *n);
/* When the next lookup is due (loop time), or TT_TIME_NEVER when none is scheduled. */
tt_msec_t tt_dns_watch_next_lookup(const tt_dns_watch_t *w);

/* Lookups by result, and the wall-clock time of the last change of the set (0: never), for
 * metrics. Readable from any thread. */
typedef struct tt_dns_stats {
    _Atomic uint64_t lookups[TT_DNS_RESULTS];
    _Atomic uint64_t last_change_wall_ms;
} tt_dns_stats_t;

const tt_dns_stats_t *tt_dns_watch_stats(const tt_dns_watch_t *w);

/* "ok", "empty", "error": metric labels. */
const char *tt_dns_result_name(tt_dns_result_t r);

#endif
