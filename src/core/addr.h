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
/* Parses a list of numeric addresses separated by commas and/or spaces: "IP", "IP:PORT",
 * "[IPv6]", "[IPv6]:PORT" or a bare IPv6 address; an omitted port is default_port (which may be 0
 * for "filled in later"), a given one is 1..65535. Returns the count (at least 1), or -1 with a
 * reason in *why: a malformed entry, an empty list, more than max. */
int tt_addr_parse_list(const char *s, int default_port, tt_addr_t *out, size_t max,
                       const char **why);
/* The port of a, host order. */
int tt_addr_port(const tt_addr_t *a);
/* Sets the port of a. */
void tt_addr_set_port(tt_addr_t *a, int port);

/* Orders addresses by family, address bytes, then port. Returns <0, 0 or >0. */
int tt_addr_compare(const tt_addr_t *a, const tt_addr_t *b);

#endif
