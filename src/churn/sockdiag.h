/* The snapshot source of `tether churn`: NETLINK_SOCK_DIAG dumps of the TCP sockets (IPv4 and
 * IPv6) with their state, socket memory (INET_DIAG_SKMEMINFO), tcp_info (RTT, retransmits),
 * cookie (which follows a connection from one dump to the next, also into TIME_WAIT) and inode
 * (which leads to the owning process through /proc/PID/fd).
 *
 * The reply parser is separate from the socket so tests feed it recorded dump bytes. */
#ifndef TT_CHURN_SOCKDIAG_H
#define TT_CHURN_SOCKDIAG_H

#include "churn/addr.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t cookie;
    int state; /* TT_TCP_* */
    tt_churn_addr_t local, remote;
    uint32_t inode; /* 0 for TIME_WAIT and orphaned sockets */
    uint32_t uid;
    uint64_t mem_bytes;     /* rmem_alloc + wmem_queued + fwd_alloc + optmem + backlog */
    uint32_t total_retrans; /* tcpi_total_retrans (0 when tcp_info is absent) */
    uint32_t rtt_us;
    int has_info;
} tt_sockdiag_sock_t;

typedef void (*tt_sockdiag_sock_cb)(const tt_sockdiag_sock_t *s, void *arg);

/* Parses len bytes of netlink messages from a sock_diag dump, calling cb per socket. Returns 1
 * when the dump's NLMSG_DONE was seen, 0 when more messages are to come, -1 for an NLMSG_ERROR or
 * malformed bytes (reason in err). */
int tt_sockdiag_parse(const uint8_t *buf, size_t len, tt_sockdiag_sock_cb cb, void *arg, char *err,
                      size_t errlen);

/* A NETLINK_SOCK_DIAG socket, created inside the network namespace /var/run/netns/<netns> when
 * netns is not NULL (the calling thread returns to its own namespace before this returns: only
 * the socket lives there). Returns the fd or -1 with the reason in err. */
int tt_sockdiag_open(const char *netns, char *err, size_t errlen);

/* Dumps the sockets of one family (AF_INET or AF_INET6) whose state bit (1 << TT_TCP_*) is in
 * states, calling cb per socket. Returns the number of sockets or -1 (reason in err). */
long tt_sockdiag_dump(int fd, int family, uint32_t states, tt_sockdiag_sock_cb cb, void *arg,
                      char *err, size_t errlen);

/* The inode of the network namespace /var/run/netns/<netns>, or of this process's own when
 * netns is NULL; 0 when it cannot be found. */
uint64_t tt_sockdiag_netns_inode(const char *netns);

#endif
