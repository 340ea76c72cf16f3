/* The process's listening sockets: for each local address, one SO_REUSEPORT socket per worker
 * (or the sockets a takeover brought from the tetherd that ran before), plus the admin socket.
 *
 * The set is built on the main thread before the workers start and owns one descriptor of every
 * socket: a worker registers its own dup, so the set can pass every socket to a successor
 * (net/takeover.h) at any time while the workers keep accepting. A socket closes when both the
 * worker's and the set's descriptor are closed (and, after a takeover, the successor's). */
#ifndef TT_NET_LISTENERS_H
#define TT_NET_LISTENERS_H

#include "event/sock.h"

#include <stddef.h>

typedef enum { TT_LISTEN_PROXY, TT_LISTEN_ADMIN } tt_listen_kind_t;

typedef struct {
    tt_addr_t addr; /* as bound (getsockname) */
    int fd;
    tt_listen_kind_t kind;
    int wanted; /* the configuration names it; unwanted inherited sockets close in prune */
    /* Every worker accepts from it (EPOLLEXCLUSIVE wakes one): a socket systemd passed (socket
     * activation), one per address, whose accept queue outlives any tetherd process. */
    int shared;
} tt_listen_sock_t;

typedef struct {
    tt_listen_sock_t *socks;
    size_t n, cap;
} tt_listenset_t;

void tt_listenset_init(tt_listenset_t *s);

/* Takes ownership of fd, a listening socket inherited from a predecessor. Returns 0, or -1 if
 * it is not a listening TCP socket (fd is then closed). */
int tt_listenset_adopt(tt_listenset_t *s, int fd, tt_listen_kind_t kind);

/* Adopts the sockets systemd passed (LISTEN_PID is this process, LISTEN_FDS of them from fd 3,
 * sd_listen_fds(3)) as shared proxy sockets, and unsets those variables. Returns how many, or -1
 * with a reason in err (a passed fd that is not a listening TCP socket). */
int tt_listenset_adopt_systemd(tt_listenset_t *s, char *err, size_t errlen);

/* Makes sure count proxy sockets listen on addr: inherited ones are kept (and get defer_accept_s
 * applied, which the new configuration may have changed), missing ones are bound with
 * SO_REUSEPORT (tt_sock_listen); a shared socket on addr serves every worker alone. Returns 0, or
 * -1 with "ADDR: reason" in err. */
int tt_listenset_ensure(tt_listenset_t *s, const tt_addr_t *addr, size_t count, int backlog,
                        int defer_accept_s, char *err, size_t errlen);

/* The admin socket on addr: inherited, or bound without SO_REUSEPORT. Returns the set's fd (the
 * caller dups it), or -1 with a reason in err. */
int tt_listenset_admin(tt_listenset_t *s, const tt_addr_t *addr, char *err, size_t errlen);

/* Closes inherited sockets the configuration no longer names (a removed listener). */
void tt_listenset_prune(tt_listenset_t *s);

/* Fails with "ADDR: in use by another process" if a listening socket that is not one of the
 * set's shares a port with one of the set's (SO_REUSEPORT lets a second tetherd bind it, and
 * the kernel would split the connections between the two). Checked after binding, through
 * sock_diag, so two tetherds started at the same moment both fail rather than both share.
 * Returns 0, or -1 with the reason in err. */
int tt_listenset_check_exclusive(const tt_listenset_t *s, char *err, size_t errlen);

/* The fds of the proxy sockets on addr that worker id of nworkers accepts from: every shared
 * one, and every nworkers-th other one starting at id (so with more inherited sockets than
 * workers, a worker accepts from several and no socket's backlog is orphaned). Fills up to max,
 * with shared[i] telling which are shared; returns how many. */
size_t tt_listenset_for_worker(const tt_listenset_t *s, const tt_addr_t *addr, size_t id,
                               size_t nworkers, int *fds, int *shared, size_t max);

/* How many proxy sockets listen on addr. */
size_t tt_listenset_count(const tt_listenset_t *s, const tt_addr_t *addr);

/* Closes every descriptor of the set (the sockets stay open where other descriptors of them
 * remain) and empties it. */
void tt_listenset_close(tt_listenset_t *s);

#endif
