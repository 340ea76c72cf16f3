/* Discovery: the thread that keeps the endpoints of every upstream named by a host (not an IP
 * address, not an explicit list, dns_refresh not off) in step with DNS.
 *
 * One thread with its own event loop and c-ares resolver ([tether] resolver, or resolv.conf and
 * /etc/hosts) runs a DNS watch per such upstream, so no lookup ever runs on a worker. When a
 * watch's set changes, the new addresses are published to the upstream (which wakes the workers
 * to apply them) and the change is logged at info: which addresses came and went. */
#ifndef TT_UPSTREAM_DISCOVERY_H
#define TT_UPSTREAM_DISCOVERY_H

#include "config/config.h"
#include "upstream/upstream.h"

typedef struct tt_discovery tt_discovery_t;

/* Prepares watches for the upstreams that need one (NULL with *err empty when none does) and
 * points each such upstream's dns_stats at its watch's counters. Returns NULL with a reason in
 * err on failure. Main thread, before workers start. */
tt_discovery_t *tt_discovery_new(const tt_conf_t *conf, tt_upstream_t **ups, size_t nups, char *err,
                                 size_t errlen);
/* Starts the thread (the first lookups go out at once). Returns 0 or an errno value. */
int tt_discovery_start(tt_discovery_t *d);
/* Stops the thread and frees everything; the upstreams keep the last addresses published.
 * Harmless with NULL. */
void tt_discovery_free(tt_discovery_t *d);

#endif
