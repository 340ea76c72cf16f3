/* Forward-proxy routing: which configured upstream serves a Host. tether is never an open proxy,
 * so a host no upstream names routes nowhere. */
#ifndef TT_PROXY_ROUTE_H
#define TT_PROXY_ROUTE_H

#include "upstream/upstream.h"

#include <stddef.h>

/* Finds the upstream of the table ups[0..n) whose hosts list names host (a Host header value or an
 * absolute-URI authority; "name:80" is "name"), or NULL. Case-insensitive. */
tt_upstream_t *tt_route_host(tt_upstream_t *const *ups, size_t n, const char *host, size_t len);

#endif
