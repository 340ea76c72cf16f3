/* One upstream connection, over TCP or TLS. Its fd, TLS state, epoll registration, timer and
 * buffer are released in exactly one place (tt_conn_close). While idle it belongs to its pool and
 * is watched for reading, so an upstream close (a TLS close_notify too) or stray bytes evict it at
 * once; while leased, the session drives its I/O through the handler it installs and the
 * transport calls below, which hide whether TLS is in between. States: CONNECTING (TCP, then the
 * TLS handshake) -> ACTIVE <-> IDLE -> closed. */
#ifndef TT_UPSTREAM_CONN_H
#define TT_UPSTREAM_CONN_H

#include "core/buf.h"
#include "core/clock.h"
#include "core/list.h"
#include "event/loop.h"
#include "event/sock.h"
#include "health/probe.h"
#include "net/tls.h"
#include "upstream/close_reason.h"
#include "upstream/endpoint.h"

#include <stdint.h>

typedef struct tt_pool tt_pool_t;
typedef struct tt_pool_waiter tt_pool_waiter_t;
typedef struct tt_conn tt_conn_t;

/* PROBING: an idle connection whose probe is out (health/probe.h): off the idle list, so no
 * request takes it, and back to IDLE with its idle clock unchanged when the answer is good. */
typedef enum {
    TT_CONN_CONNECTING,
    TT_CONN_ACTIVE,
    TT_CONN_IDLE,
    TT_CONN_PROBING,
    TT_CONN_CLOSED
} tt_conn_state_t;

/* Pseudo-events delivered to the handler by the lease timer (outside the epoll bit range). */
#define TT_CONN_EV_LEASE_WARN    (1u << 28)
#define TT_CONN_EV_LEASE_TIMEOUT (1u << 29)

/* Called for I/O events (and the lease pseudo-events) while the connection is leased. */
typedef void (*tt_conn_handler_t)(tt_conn_t *conn, uint32_t events);

/* Fields without a leading underscore may be read by the connection's owner and the admin
 * endpoint; only src/upstream/ writes any field, and only it reads the _private ones. */
struct tt_conn {
    uint64_t id;
    tt_conn_state_t state;
    tt_msec_t created_at;
    tt_msec_t idle_since; /* when it last became idle; 0 until it first does */
    tt_msec_t leased_at;
    uint64_t requests; /* requests started on it */
    tt_buf_t *in;      /* bytes from the upstream; only while leased */
    void *owner;       /* the lease holder's argument to tt_conn_set_handler */
    tt_endpoint_t *ep; /* where it leads, in its pool's view (NULL only while handed over) */

    tt_io_t _io;
    tt_pool_t *_pool;
    tt_list_t _link;           /* pool's idle LRU, or its busy list */
    tt_msec_t _retire_at;      /* lifetime deadline with jitter; TT_TIME_NEVER if unlimited */
    tt_timer_t _timer;         /* connect timeout, idle expiry, or the lease timer */
    tt_pool_waiter_t *_waiter; /* the request this new connection was opened for */
    tt_conn_handler_t _handler;
    int _connect_error; /* errno of a failed connect */
    tt_tls_t *_tls;     /* NULL over plain TCP */
    uint64_t _tls_started_us;
    uint32_t _tls_handshake_us; /* counted once the upstream accepted the handshake */
    uint8_t _retired;           /* do not reuse after the current request */
    uint8_t _lease_warned;
    uint8_t _tls_read_wants_write; /* the last TLS read waits for the socket to be writable */
    uint8_t _tls_write_wants_read; /* the last TLS write waits for it to be readable */
    uint8_t _tls_unconfirmed;      /* handshake done, the upstream's verdict not yet heard */
    uint8_t _counted;              /* counts in ep->outstanding (leased, or opened for a request) */
    uint8_t _trial; /* carries its half-open endpoint's trial: its outcome is still to report */
    /* Its endpoint went down or was ejected while it carried a request: it gave its slot of
     * max_connections back then (so queued requests need not wait for it) and closes at release. */
    uint8_t _uncapped;
    tt_msec_t _probed_at; /* last probe sent since it went idle (0: none) */
    tt_probe_t *_probe;   /* while PROBING */
    tt_deferred_t _free;
    /* While handed over to another worker: the socket (_io.fd stays -1, so events of the giving
     * worker's current batch are dropped) and the delivery that runs after that batch. */
    int _handoff_fd;
    tt_deferred_t _handoff;
};

/* Whether the connection could have gone stale before the current request (a failure on such a
 * connection may be a keep-alive race; on a brand-new one it is not). */
static inline int tt_conn_reused(const tt_conn_t *c)
{
    /* Served a request before, or waited in the pool (a pre-warmed connection): either way the
     * upstream may have closed it meanwhile. idle_since is 0 until it first goes idle. */
    return c->requests > 1 || c->idle_since != 0;
}

/* Acknowledges at once what the upstream sent, and what it sends until this side next writes
 * (tt_sock_ack_now). */
static inline void tt_conn_ack_now(tt_conn_t *c)
{
    tt_sock_ack_now(c->_io.fd);
}

/* Whether the owner's interest includes reading (so a hang-up will also show as a failed read). */
static inline int tt_conn_reading(const tt_conn_t *c)
{
    return (c->_io.events & EPOLLIN) != 0;
}

/* Whether the last read (over TLS) waits for the socket to become writable: then EPOLLOUT means
 * a read is worth trying. */
static inline int tt_conn_read_waits_write(const tt_conn_t *c)
{
    return c->_tls_read_wants_write;
}

/* Reads what the upstream sent into b's free tail (recv conventions: bytes, 0 at the end, -1 with
 * errno, EAGAIN included). *readable is cleared once the socket is known drained, so no read is
 * tried until epoll reports it again; over TLS it stays set while OpenSSL holds unread bytes. */
ssize_t tt_conn_read(tt_conn_t *c, tt_buf_t *b, uint8_t *readable);
/* The socket, for splice(2), over plain TCP; -1 over TLS, whose bytes must pass OpenSSL. */
int tt_conn_plain_fd(const tt_conn_t *c);
/* Sends request bytes (send conventions: bytes written, possibly fewer; -1 with errno). */
ssize_t tt_conn_send(tt_conn_t *c, const void *p, size_t len);
/* Sends p then more in one system call over plain TCP (a prefix of the two is written); over
 * TLS only from p. The same conventions. */
ssize_t tt_conn_send_pair(tt_conn_t *c, const void *p, size_t len, const void *more,
                          size_t more_len);
/* The upstream accepted the TLS handshake: counts it (full or resumed, and its time) and re-arms
 * failure logging. */
void tt_conn_tls_established(tt_conn_t *c);
/* The upstream refused a handshake it had let finish (TLS 1.3 client authentication; call right
 * after the failed read): counts and logs it like a failed handshake. Returns the cause. */
tt_tls_failure_t tt_conn_tls_refused(tt_conn_t *c, char *detail, size_t len);
#define TT_CONN_TLS_ERROR "failed with a TLS error"

/* Explains a failed read or write (errno err) when TLS is the cause, as "failed with a TLS error:
 * PHRASE (DETAIL)" in buf (starting with TT_CONN_TLS_ERROR). On a connection still awaiting the
 * upstream's verdict, what the upstream sent is read first: its alert explains the reset that
 * follows it. NULL when TLS is not the cause. */
const char *tt_conn_tls_failure(tt_conn_t *c, int err, char *buf, size_t len);

/* Installs the handler and interest for a leased connection. */
void tt_conn_set_handler(tt_conn_t *c, tt_conn_handler_t handler, void *owner, uint32_t events);
void tt_conn_set_events(tt_conn_t *c, uint32_t events);

/* Kernel memory held by the connection's socket (SO_MEMINFO), in bytes; 0 if unknown. */
uint64_t tt_conn_socket_memory(const tt_conn_t *c);

/* The outcome of the request a leased connection carried, for its endpoint's circuit breaker
 * (upstream/pool_endpoints.h): a complete response, the connection reset or closed before a
 * response, response_timeout, or (breaker_on_5xx) a 502/503/504. why: a static phrase. */
typedef enum {
    TT_OUTCOME_OK,
    TT_OUTCOME_RESET,
    TT_OUTCOME_TIMEOUT,
    TT_OUTCOME_5XX,
} tt_request_outcome_t;

void tt_conn_report(tt_conn_t *c, tt_request_outcome_t outcome, const char *why);

/* Closes the connection for reason: stops its watcher and timer, closes the fd, returns its
 * buffer, updates the pool's counts and frees the memory after the current event batch. The
 * connection must not be idle-listed or queued elsewhere by the caller (the pool unlinks it). */
void tt_conn_close(tt_conn_t *c, tt_close_reason_t reason);

#endif
