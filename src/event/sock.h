/* Socket helpers: non-blocking listeners and connects, and the socket options tether sets on
 * upstream connections. Addresses are core/addr.h. */
#ifndef TT_EVENT_SOCK_H
#define TT_EVENT_SOCK_H

#include "core/addr.h"

#include <stdint.h>

/* A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT, so each worker binds its
 * own, and TCP_NODELAY, which accepted sockets inherit. With defer_accept_s > 0, TCP_DEFER_ACCEPT:
 * a connection is handed to accept() when its first data arrives (or after about that many
 * seconds), so an HTTP connection is accepted with its request. Returns the fd, or -1 with errno
 * set. */
int tt_sock_listen(const tt_addr_t *a, int backlog, int defer_accept_s);
/* Starts a non-blocking connect. Returns the fd (connected or in progress), or -1 with errno. */
int tt_sock_connect(const tt_addr_t *a);
/* Waits (blocking, with poll) until fd is ready for events or deadline_ms on the monotonic clock
 * passes; stop_fd (-1: none) becoming readable ends the wait early. Returns 0 when fd is ready,
 * -1 on timeout, error or stop. For the threads that block: the admin endpoint, the CLI. */
int tt_sock_wait(int fd, short events, uint64_t deadline_ms, int stop_fd);
/* Returns 0 if a non-blocking connect completed, else the pending socket error. */
int tt_sock_connect_result(int fd);

typedef struct {
    int keepalive_idle_s;  /* 0: TCP keep-alive probes off */
    int keepalive_intvl_s; /* 0: derived from idle */
    int keepalive_count;   /* 0: derived */
    int user_timeout_ms;   /* 0: kernel default */
} tt_sockopts_t;

/* Sets TCP_NODELAY and the given keep-alive and user-timeout options; failures are ignored
 * because every option only tunes an already working socket. */
void tt_sock_tune(int fd, const tt_sockopts_t *o);

#endif
