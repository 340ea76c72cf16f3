#include "upstream/endpoint.h"

#include "core/invariant.h"

#include <stdlib.h>
#include <string.h>

static int cmp_addr_cb(const void *a, const void *b)
{
    return tt_addr_compare(a, b);
}

void tt_endpoint_set_init(tt_endpoint_set_t *set)
{
    *set = (tt_endpoint_set_t){0};
}

void tt_endpoint_set_destroy(tt_endpoint_set_t *set, tt_endpoint_free_cb free_cb, void *arg)
{
    for (size_t i = 0; i < set->n; i++) {
        if (free_cb != NULL)
            free_cb(set->_items[i], arg);
        free(set->_items[i]);
    }
    free(set->_items);
    *set = (tt_endpoint_set_t){0};
}

tt_endpoint_t *tt_endpoint_set_find(const tt_endpoint_set_t *set, const tt_addr_t *addr)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = tt_addr_compare(&set->_items[mid]->addr, addr);
        if (c == 0)
            return set->_items[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static tt_endpoint_t *endpoint_new(const tt_addr_t *addr)
{
    tt_endpoint_t *ep = tt_calloc(1, sizeof(*ep));
    ep->addr = *addr;
    tt_addr_format(addr, ep->name);
    ep->state = TT_ENDPOINT_ACTIVE;
    tt_breaker_init(&ep->breaker);
    return ep;
}

tt_endpoint_diff_t tt_endpoint_set_update(tt_endpoint_set_t *set, const tt_addr_t *addrs,
                                          size_t naddrs, tt_endpoint_change_cb cb, void *arg)
{
    /* The new list, sorted and without duplicates. */
    tt_addr_t *want = tt_malloc((naddrs ? naddrs : 1) * sizeof(*want));
    if (naddrs > 0)
        memcpy(want, addrs, naddrs * sizeof(*want));
    qsort(want, naddrs, sizeof(*want), cmp_addr_cb);
    size_t nwant = 0;
    for (size_t i = 0; i < naddrs; i++)
        if (nwant == 0 || tt_addr_compare(&want[nwant - 1], &want[i]) != 0)
            want[nwant++] = want[i];
    if (nwant > TT_ENDPOINTS_MAX)
        nwant = TT_ENDPOINTS_MAX;

    /* Merge the two sorted lists: the old set (draining ones included) and want. */
    tt_endpoint_t **merged = tt_malloc((set->n + nwant + 1) * sizeof(*merged));
    uint8_t *change = tt_calloc(set->n + nwant + 1, 1); /* 1 + tt_endpoint_change_t, 0 none */
    size_t i = 0, j = 0, n = 0;
    tt_endpoint_diff_t d = {0};
    while (i < set->n || j < nwant) {
        int c = i == set->n  ? 1
                : j == nwant ? -1
                             : tt_addr_compare(&set->_items[i]->addr, &want[j]);
        if (c < 0) { /* no longer listed */
            tt_endpoint_t *ep = set->_items[i++];
            if (ep->state == TT_ENDPOINT_ACTIVE) {
                ep->state = TT_ENDPOINT_DRAINING;
                change[n] = 1 + TT_ENDPOINT_REMOVED;
                d.removed++;
            }
            merged[n++] = ep;
        } else if (c > 0) { /* new */
            change[n] = 1 + TT_ENDPOINT_ADDED;
            merged[n++] = endpoint_new(&want[j++]);
            d.added++;
        } else { /* listed before and now */
            tt_endpoint_t *ep = set->_items[i++];
            j++;
            if (ep->state == TT_ENDPOINT_DRAINING) {
                ep->state = TT_ENDPOINT_ACTIVE;
                change[n] = 1 + TT_ENDPOINT_READDED;
                d.added++;
            } else {
                d.kept++;
            }
            merged[n++] = ep;
        }
    }
    free(set->_items);
    free(want);
    set->_items = merged;
    set->n = n;
    set->nactive = d.added + d.kept;
    if (cb != NULL)
        for (size_t k = 0; k < n; k++)
            if (change[k] != 0)
                cb(merged[k], (tt_endpoint_change_t)(change[k] - 1), arg);
    free(change);
    return d;
}

size_t tt_endpoint_set_reap(tt_endpoint_set_t *set, tt_endpoint_free_cb free_cb, void *arg)
{
    size_t n = 0, gone = 0;
    for (size_t i = 0; i < set->n; i++) {
        tt_endpoint_t *ep = set->_items[i];
        if (ep->state == TT_ENDPOINT_DRAINING && ep->nconns == 0 && ep->outstanding == 0) {
            if (free_cb != NULL)
                free_cb(ep, arg);
            free(ep);
            gone++;
        } else {
            set->_items[n++] = ep;
        }
    }
    set->n = n;
    return gone;
}

int tt_endpoint_usable(tt_endpoint_t *ep, tt_msec_t now)
{
    return ep->state == TT_ENDPOINT_ACTIVE && !ep->down && tt_breaker_allows(&ep->breaker, now);
}

const char *tt_endpoint_state_name(tt_endpoint_state_t s)
{
    return s == TT_ENDPOINT_ACTIVE ? "active" : "draining";
}
