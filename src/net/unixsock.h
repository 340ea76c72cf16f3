/* Unix-domain listening sockets (listen = unix:/run/tether/users.sock).
 *
 * A TCP port is bound by every worker with SO_REUSEPORT; Linux has no such balancing for
 * AF_UNIX, so a Unix listener is one socket, opened here by the main thread before workers start
 * and registered in every worker's epoll with EPOLLEXCLUSIVE (a connection wakes one worker, not
 * all). Its owner (the server) closes it after every worker has returned.
 *
 * The socket file: a file left by a process that is gone (connect() is refused) is replaced; a
 * live one (connect() succeeds: another tetherd) or a file that is not a socket stops startup.
 * The mode, owner and group are set between bind() and listen(), so that no client connects
 * before they apply. At close the file is removed if it is still the one this process created
 * (same device and inode), never a successor's. */
#ifndef TT_NET_UNIXSOCK_H
#define TT_NET_UNIXSOCK_H

#include "event/sock.h"

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    int fd; /* -1: not open */
    char path[108];
    dev_t dev;
    ino_t ino;
} tt_unix_listener_t;

typedef struct {
    int mode; /* permission bits, e.g. 0660 */
    long uid; /* -1: unchanged */
    long gid; /* -1: unchanged */
} tt_unix_perms_t;

/* Opens a non-blocking listening socket at addr (AF_UNIX) with the given permissions. Returns 0,
 * or -1 with a reason naming the path in err; l->fd is -1 then. */
int tt_unix_listen(tt_unix_listener_t *l, const tt_addr_t *addr, int backlog,
                   const tt_unix_perms_t *perms, char *err, size_t errlen);

/* Makes l own the file of fd, a listening socket at addr inherited from a predecessor (which
 * gave it up with the socket): l->fd becomes fd, the file's device and inode are recorded so
 * that a clean shutdown removes it. l->fd stays -1 (nothing to remove) if the path no longer
 * names a socket file. */
void tt_unix_adopt_file(tt_unix_listener_t *l, int fd, const tt_addr_t *addr);

/* Closes the socket and removes its file if it is still this process's. Harmless when closed. */
void tt_unix_listener_close(tt_unix_listener_t *l);

#endif
