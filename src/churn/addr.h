/* Socket endpoints as `tether churn` compares and prints them.
 *
 * One representation for what the tracepoint, sock_diag and the saved JSON give: the family, the
 * address in network byte order (IPv4 in the first four bytes) and the port in host order. An
 * IPv4-mapped IPv6 address (a v4 peer of a dual-stack socket) is stored as IPv4, so one service
 * reached both ways is one pair. */
#ifndef TT_CHURN_ADDR_H
#define TT_CHURN_ADDR_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t family; /* AF_INET, AF_INET6, or 0 for "none" */
    uint8_t addr[16];
    uint16_t port;
} tt_churn_addr_t;

/* Sets a from raw bytes (4 for AF_INET, 16 for AF_INET6) and a host-order port, folding
 * IPv4-mapped IPv6 addresses to IPv4. */
void tt_churn_addr_set(tt_churn_addr_t *a, int family, const void *raw, uint16_t port);

int tt_churn_addr_eq(const tt_churn_addr_t *a, const tt_churn_addr_t *b);
int tt_churn_addr_is_any(const tt_churn_addr_t *a);

/* "ip:port", "[v6]:port", or "*" for family 0. out holds TT_CHURN_ADDR_STRLEN bytes. */
#define TT_CHURN_ADDR_STRLEN 56
const char *tt_churn_addr_str(const tt_churn_addr_t *a, char *out);

/* Parses "ip:port" or "[v6]:port" (what tt_churn_addr_str writes). Returns 0 or -1. */
int tt_churn_addr_parse(tt_churn_addr_t *a, const char *s);

/* A 64-bit hash of the endpoint (FNV-1a), for the hash maps of this module. */
uint64_t tt_churn_addr_hash(const tt_churn_addr_t *a, uint64_t seed);

#endif
