/* The endpoints of an upstream as one worker sees them: every address its url's name resolves to,
 * or its explicit `endpoints` list.
 *
 * A set belongs to one worker (no locks). An update brings the set to a new list of addresses and
 * says what changed: an address new to the set is added (active); one no longer listed becomes
 * draining (no new requests; its owner closes its idle connections and lets requests in flight
 * finish); a draining one listed again is active again. A draining endpoint leaves the set, and
 * its memory is freed, only when tt_endpoint_set_reap() finds it without connections or requests.
 * The order of the set is the order of the addresses (stable across updates), which makes round
 * robin deterministic. See docs/internals/endpoints.md. */
#ifndef TT_UPSTREAM_ENDPOINT_H
#define TT_UPSTREAM_ENDPOINT_H

#include "core/clock.h"
#include "event/sock.h"
#include "health/breaker.h"

#include <stddef.h>
#include <stdint.h>

/* Bound on the endpoints of one upstream; a longer DNS answer is cut (and logged). */
#define TT_ENDPOINTS_MAX 256

typedef enum {
    TT_ENDPOINT_ACTIVE,
    TT_ENDPOINT_DRAINING,
} tt_endpoint_state_t;

typedef struct tt_endpoint_check tt_endpoint_check_t;

typedef struct tt_endpoint {
    tt_addr_t addr;
    char name[TT_ADDR_STRLEN]; /* "10.0.0.5:8080", for logs and metric labels */
    tt_endpoint_state_t state;
    /* Maintained by the owner (the pool), read by the balancer and by reaping. */
    uint32_t outstanding;     /* requests assigned to it and not finished (queued ones included) */
    uint32_t nidle;           /* idle connections ready for reuse */
    uint32_t nconns;          /* all its connections */
    uint8_t down;             /* health_fall active checks in a row failed it */
    tt_msec_t changed_at;     /* when it last went down or up (0: never) */
    char down_why[48];        /* while down: the cause of the check that took it down */
    uint64_t picked;          /* times the balancer chose it, for its share in /stats */
    const char *last_failure; /* why its last connect failed (a static phrase), or NULL */
    tt_breaker_t breaker;
    tt_endpoint_check_t *check; /* its active health checks (the pool's), or NULL */
} tt_endpoint_t;

typedef struct {
    tt_endpoint_t **_items; /* sorted by address */
    size_t n;
    size_t nactive;
} tt_endpoint_set_t;

typedef enum {
    TT_ENDPOINT_ADDED,
    TT_ENDPOINT_REMOVED, /* now draining */
    TT_ENDPOINT_READDED, /* was draining, active again */
} tt_endpoint_change_t;

typedef struct {
    size_t added, removed, kept; /* READDED counts as added */
} tt_endpoint_diff_t;

/* Called once per change during an update, after the set is consistent again; an ADDED endpoint
 * is in the set, its check NULL. */
typedef void (*tt_endpoint_change_cb)(tt_endpoint_t *ep, tt_endpoint_change_t change, void *arg);
/* Called for each endpoint leaving the set for good; ep is freed after. */
typedef void (*tt_endpoint_free_cb)(tt_endpoint_t *ep, void *arg);

void tt_endpoint_set_init(tt_endpoint_set_t *set);
/* Frees every endpoint (free_cb for each, may be NULL), whatever its state. */
void tt_endpoint_set_destroy(tt_endpoint_set_t *set, tt_endpoint_free_cb free_cb, void *arg);

/* Brings the set to addrs (any order; duplicates count once; at most TT_ENDPOINTS_MAX are taken,
 * the lowest addresses). An empty list drains every endpoint. Returns the counts of the change. */
tt_endpoint_diff_t tt_endpoint_set_update(tt_endpoint_set_t *set, const tt_addr_t *addrs,
                                          size_t naddrs, tt_endpoint_change_cb cb, void *arg);

/* Frees draining endpoints with no connection and no request left. Returns how many left. */
size_t tt_endpoint_set_reap(tt_endpoint_set_t *set, tt_endpoint_free_cb free_cb, void *arg);

static inline tt_endpoint_t *tt_endpoint_set_at(const tt_endpoint_set_t *set, size_t i)
{
    return set->_items[i];
}

/* The endpoint with this address, or NULL. */
tt_endpoint_t *tt_endpoint_set_find(const tt_endpoint_set_t *set, const tt_addr_t *addr);

/* Whether a new request may go to ep now: active, not down, breaker allowing. */
int tt_endpoint_usable(tt_endpoint_t *ep, tt_msec_t now);

const char *tt_endpoint_state_name(tt_endpoint_state_t s);

#endif
