/* Passing the listening sockets from a running tetherd to its successor (HAProxy's `-x`), so an
 * upgrade or a reload never refuses a connection: the successor accepts from the very sockets the
 * predecessor listened on, connections waiting in their backlogs included.
 *
 * The conversation runs over a Unix SOCK_SEQPACKET connection, one message each:
 *
 *   successor    "takeover 1 pid=N"
 *   predecessor  "sockets 1 pid=N"
 *   predecessor  "proxy", "proxy-shared" or "admin", with one descriptor (SCM_RIGHTS),
 *                one message per socket
 *   predecessor  "end"
 *   successor    "ready"       (sent once its workers accept from the sockets)
 *
 * The predecessor keeps accepting until "ready" arrives and only then starts its drain, so there
 * is no moment when nobody accepts. A successor that dies before "ready" leaves the predecessor
 * running as it was. The connection is either the control socket (control_socket in [tether],
 * `tetherd --takeover`) or a socket pair a reload hands to the process it starts. */
#ifndef TT_NET_TAKEOVER_H
#define TT_NET_TAKEOVER_H

#include "net/listeners.h"

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    int fd; /* listening; -1: none */
    const char *path;
    ino_t ino; /* of the socket file at path, to tell whether a successor replaced it */
    dev_t dev;
} tt_control_t;

/* Listens on the Unix socket path (mode 0600): bound under a temporary name and renamed over
 * path, so a successor replaces its predecessor's control socket without a moment where path is
 * missing. path must outlive c. Returns 0, or -1 with a reason in err. */
int tt_control_listen(tt_control_t *c, const char *path, char *err, size_t errlen);

/* Closes the control socket and removes its file unless a successor replaced it. */
void tt_control_close(tt_control_t *c);

/* Connects to the control socket at path. Returns the fd, or -1 with a reason in err. */
int tt_control_connect(const char *path, char *err, size_t errlen);

/* Predecessor: accepts the conversation on conn (a connection from the control socket or the
 * reload's socket pair), sends every socket of ls and waits up to timeout_ms for "ready".
 * Connections from another user are refused. Returns 0 once the successor has confirmed (*peer:
 * its pid), or -1 with a reason in err. Does not close conn. */
int tt_takeover_serve(int conn, const tt_listenset_t *ls, int timeout_ms, pid_t *peer, char *err,
                      size_t errlen);

/* Successor: asks for the sockets on conn and adopts them into ls. Returns the number adopted,
 * or -1 with a reason in err; *peer is the predecessor's pid. */
int tt_takeover_receive(int conn, tt_listenset_t *ls, int timeout_ms, pid_t *peer, char *err,
                        size_t errlen);

/* Successor: tells the predecessor its workers accept now (it starts draining) and closes conn. */
void tt_takeover_confirm(int conn);

#endif
