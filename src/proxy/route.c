#include "proxy/route.h"

#include <string.h>
#include <strings.h>

static int host_matches(const char *pattern, const char *host, size_t len)
{
    return strlen(pattern) == len && strncasecmp(pattern, host, len) == 0;
}

tt_upstream_t *tt_route_host(tt_upstream_t *const *ups, size_t n, const char *host, size_t len)
{
    /* "name:80" and "name" are the same origin for plain HTTP. */
    size_t bare = len;
    if (len > 3 && strncmp(host + len - 3, ":80", 3) == 0)
        bare = len - 3;
    for (size_t i = 0; i < n; i++) {
        const tt_upstream_conf_t *u = ups[i]->conf;
        for (size_t h = 0; h < u->nhosts; h++)
            if (host_matches(u->hosts[h], host, len) || host_matches(u->hosts[h], host, bare))
                return ups[i];
    }
    return NULL;
}
