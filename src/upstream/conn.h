/* One upstream connection. Its fd, epoll registration, timer and buffer are released in exactly
 * one place (tt_conn_close). While idle it belongs to its pool and is watched for reading, so an
 * upstream close or stray bytes evict it at once; while leased, the session drives its I/O through
 * the handler it installs. States: CONNECTING -> ACTIVE <-> IDLE -> closed. */
#ifndef TT_UPSTREAM_CONN_H
#define TT_UPSTREAM_CONN_H

#include "core/buf.h"
#include "core/clock.h"
#include "core/list.h"
#include "event/loop.h"
#include "upstream/close_reason.h"

#include <stdint.h>

typedef struct tt_pool tt_pool_t;
typedef struct tt_pool_waiter tt_pool_waiter_t;
typedef struct tt_upconn tt_upconn_t;

typedef enum { TT_CONN_CONNECTING, TT_CONN_ACTIVE, TT_CONN_IDLE, TT_CONN_CLOSED } tt_conn_state_t;

/* Pseudo-events delivered to the handler by the lease timer (outside the epoll bit range). */
#define TT_CONN_EV_LEASE_WARN    (1u << 28)
#define TT_CONN_EV_LEASE_TIMEOUT (1u << 29)

/* Called for I/O events (and the lease pseudo-events) while the connection is leased. */
typedef void (*tt_conn_handler_t)(tt_upconn_t *conn, uint32_t events);

struct tt_upconn {
    tt_io_t io;
    tt_pool_t *pool;
    tt_list_t link; /* pool's idle LRU, or its busy list */
    tt_conn_state_t state;
    uint64_t id;
    tt_msec_t created_at;
    tt_msec_t retire_at;  /* lifetime deadline with jitter; TT_TIME_NEVER if unlimited */
    tt_msec_t idle_since; /* when it last became idle */
    tt_msec_t leased_at;
    uint64_t requests;        /* requests started on it */
    tt_timer_t timer;         /* connect timeout, or idle expiry */
    tt_buf_t *in;             /* bytes from the upstream; only while leased */
    tt_pool_waiter_t *waiter; /* the request this new connection was opened for */
    tt_conn_handler_t handler;
    void *owner;
    int connect_error; /* errno of a failed connect */
    uint8_t retired;   /* do not reuse after the current request */
    uint8_t lease_warned;
    tt_deferred_t _free;
    /* While handed over to another worker: the socket (io.fd stays -1, so events of the giving
     * worker's current batch are dropped) and the delivery that runs after that batch. */
    int _handoff_fd;
    tt_deferred_t _handoff;
};

/* Whether the connection could have gone stale before the current request (a failure on such a
 * connection may be a keep-alive race; on a brand-new one it is not). */
static inline int tt_conn_reused(const tt_upconn_t *c)
{
    /* Served a request before, or waited in the pool (a pre-warmed connection): either way the
     * upstream may have closed it meanwhile. idle_since is 0 until it first goes idle. */
    return c->requests > 1 || c->idle_since != 0;
}

/* Installs the handler and interest for a leased connection. */
void tt_conn_set_handler(tt_upconn_t *c, tt_conn_handler_t handler, void *owner, uint32_t events);
void tt_conn_set_events(tt_upconn_t *c, uint32_t events);

/* Closes the connection for reason: stops its watcher and timer, closes the fd, returns its
 * buffer, updates the pool's counts and frees the memory after the current event batch. The
 * connection must not be idle-listed or queued elsewhere by the caller (the pool unlinks it). */
void tt_conn_close(tt_upconn_t *c, tt_close_reason_t reason);

#endif
