/* A worker thread: one event loop, its own SO_REUSEPORT listeners, its own pools (one per
 * upstream) and the client sessions it accepted. The request path never leaves the worker and
 * takes no lock; other threads reach a worker only through its loop's wakeup. */
#ifndef TT_PROXY_WORKER_H
#define TT_PROXY_WORKER_H

#include "config/config.h"
#include "core/buf.h"
#include "core/list.h"
#include "event/loop.h"
#include "http/message.h"
#include "metrics/accesslog.h"
#include "metrics/snapshot.h"
#include "net/listeners.h"
#include "net/splice.h"
#include "proxy/admission.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct tt_worker tt_worker_t;
typedef struct tt_listener tt_listener_t;

/* Takes an accepted, non-blocking client fd from listener l; the callee owns fd from then on.
 * peer is valid during the call only. Returns 0, or -1 if the connection could not be served (fd
 * closed, and tt_worker_session_opened/closed not called for it). */
typedef int (*tt_listener_handler_cb)(tt_listener_t *l, int fd, const tt_addr_t *peer);

struct tt_listener {
    tt_io_t io; /* registered only while the worker accepts (io.fd -1 while it pauses) */
    int fd;     /* the listening socket, -1 once closed */
    int shared; /* every worker polls it (EPOLLEXCLUSIVE): a pause deletes, a resume re-adds */
    tt_worker_t *worker;
    tt_upstream_t *upstream; /* dedicated port; NULL for the forward-proxy port */
    tt_listener_handler_cb handler;
};

/* What serves the client connections a worker accepts (nginx's ls->handler): the worker knows
 * their number, never their kind, so it calls nothing above itself. server.c wires in the
 * session's handlers (tt_session_handlers). */
/* Why a worker stopped polling its listeners (bits of _accept_paused). */
#define TT_ACCEPT_PAUSED_FDS   1 /* out of descriptors: retried after a backoff or a close */
#define TT_ACCEPT_PAUSED_LIMIT 2 /* max_client_connections reached: resumed by a close */

typedef struct {
    tt_listener_handler_cb accept_cb;
    /* Drain began: idle connections close now, busy ones after their response. */
    void (*drain_cb)(tt_worker_t *w);
    /* The drain timed out (or the worker stops): close every connection at once. */
    void (*close_all_cb)(tt_worker_t *w);
} tt_worker_handlers_t;

/* The fields without a leading underscore are the worker's resources its sessions and the admin
 * collection (on the worker's thread) use; the _private ones are worker.c's alone. */
struct tt_worker {
    size_t id;
    size_t nworkers;
    tt_loop_t *loop;
    const tt_conf_t *conf;
    /* The upstream table in force and this worker's pool of each, index for index; every
     * upstream and pool is its own allocation, so a table can be rebuilt around them. */
    tt_upstream_t **upstreams; /* [nupstreams] */
    size_t nupstreams;
    tt_pool_t **pools; /* [nupstreams] */
    tt_bufpool_t bufs;
    tt_pipepool_t pipes; /* for spliced response bodies */
    tt_http_headpool_t heads;
    tt_list_t sessions; /* the handlers' own list of their connections */
    size_t nsessions;   /* counted by tt_worker_session_opened/closed */
    int draining;
    tt_ratelimit_t error_warn; /* the 5xx its sessions generate */
    tt_accesslog_t access_log;
    tt_admission_t *admission; /* shared by every worker */
    uint64_t accept_errors[TT_ACCEPT_ERRORS];
    uint64_t accept_limit_pauses; /* times this worker stopped accepting at the cap */
    uint64_t accepted;            /* client connections accepted */
    uint64_t
        unrouted[TT_STATUS_CLASSES]; /* responses by class to requests that reached no upstream */

    pthread_t _thread;
    tt_listener_t *_listeners;
    size_t _nlisteners;
    tt_worker_handlers_t _handlers;
    tt_timer_t _drain_timer;
    _Atomic int _drain_requested;
    tt_ratelimit_t _accept_warn;
    tt_timer_t _accept_timer;  /* ends an accept pause for lack of descriptors */
    tt_msec_t _accept_backoff; /* its current length; 0 after an accept succeeds */
    uint8_t _accept_paused;    /* TT_ACCEPT_PAUSED_* */
    /* A function another thread asked this worker to run (tt_worker_call). */
    pthread_mutex_t _call_lock;
    pthread_cond_t _call_done;
    void (*_call_fn)(tt_worker_t *w, void *arg);
    void *_call_arg;
    int _call_state; /* 0 none, 1 posted, 2 running, 3 done */
    /* A pause of every worker another thread asked for (tt_worker_while_paused). */
    struct tt_worker_pause *_Atomic _pause;
};

/* Prepares worker id of nworkers: creates its loop and pools and registers its share of the
 * listening sockets in ls, TCP and Unix alike (dups; ls keeps its own), whose connections go to
 * handlers; access_log_fd is the shared access log (-1: off); admission the global client
 * connection cap, which every worker shares and the caller owns. Returns 0, or -1 with a reason
 * in err. Runs on the main thread before any worker starts. */
int tt_worker_init(tt_worker_t *w, size_t id, size_t nworkers, const tt_conf_t *conf,
                   tt_upstream_t **upstreams, size_t nupstreams, const tt_listenset_t *ls,
                   const tt_worker_handlers_t *handlers, int access_log_fd,
                   tt_admission_t *admission, char *err, size_t errlen);

/* The handlers' hooks: a client connection began, or ended. The worker counts them, and once
 * draining finishes when the last one ends; an end frees its slot under max_client_connections
 * and, after a lack of descriptors paused accepting, accepts again at once (a descriptor just
 * freed). Worker thread only. */
void tt_worker_session_opened(tt_worker_t *w);
void tt_worker_session_closed(tt_worker_t *w);

/* Starts the worker's thread. */
int tt_worker_start(tt_worker_t *w);

/* Asks the worker to drain: stop accepting, finish requests in flight within drain_timeout, then
 * return from its thread. Thread-safe. */
void tt_worker_request_drain(tt_worker_t *w);

/* Waits for the worker's thread to return (after a drain). */
void tt_worker_join(tt_worker_t *w);

/* Frees everything the worker owns. Its thread has returned or never started (a failed startup,
 * partly initialised included). Other workers reach a worker's pools until their own threads
 * return, so every thread is joined before any worker is destroyed. */
void tt_worker_destroy(tt_worker_t *w);

/* Runs fn(w, arg) on the worker's thread and waits for it to return; for the admin endpoint,
 * which reads worker-owned state (stats, connection lists) only this way. Returns 0, or -1 if the
 * worker did not start it within timeout_ms (it then never runs). Never call from a worker. */
int tt_worker_call(tt_worker_t *w, void (*fn)(tt_worker_t *w, void *arg), void *arg,
                   int timeout_ms);

/* Runs fn(arg) on the calling thread while every one of the n workers waits at a safe point:
 * inside its loop's wakeup, between events, so no callback is half done and nothing of theirs
 * is read or written meanwhile. Blocks until all have stopped, and returns once all run again.
 * For a reload, which changes the numbers of the configuration the workers read. Never call
 * from a worker; every worker must be running (started, not yet joined). */
void tt_worker_while_paused(tt_worker_t *workers, size_t n, void (*fn)(void *arg), void *arg);

/* The pool of upstream up in this worker. */
static inline tt_pool_t *tt_worker_pool(tt_worker_t *w, const tt_upstream_t *up)
{
    return w->pools[up->index];
}

#endif
