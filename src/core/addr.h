/* Socket addresses: parsing, resolution and formatting. Below the event layer, so configuration
 * can hold addresses without knowing about sockets or the loop. */
#ifndef TT_CORE_ADDR_H
#define TT_CORE_ADDR_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct {
    struct sockaddr_storage ss;
    socklen_t len;
} tt_addr_t;

#define TT_ADDR_STRLEN 64

/* Parses a numeric "IPv4:port" or "[IPv6]:port". Returns 0, or -1 if malformed. */
int tt_addr_parse(const char *s, tt_addr_t *out);
/* Resolves host (name or numeric) and port with getaddrinfo; fills up to max addresses.
 * Returns the number found, or -1 with a reason in *err (a static string). Blocking. */
int tt_addr_resolve(const char *host, int port, tt_addr_t *out, int max, const char **err);
/* Formats "1.2.3.4:80" or "[::1]:80" into buf (TT_ADDR_STRLEN bytes). */
const char *tt_addr_format(const tt_addr_t *a, char *buf);
int tt_addr_is_loopback(const tt_addr_t *a);

#endif
