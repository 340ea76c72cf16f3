/* A client session: one accepted client connection and the request it is currently serving.
 *
 * The session reads a request head, routes it, leases an upstream connection from the pool,
 * relays the request and the response (bodies streamed, never buffered whole), and returns the
 * connection to the pool through the reuse checklist. Pipelined requests are served one after
 * another. See docs/internals/session.md for the states. */
#ifndef TT_PROXY_SESSION_H
#define TT_PROXY_SESSION_H

#include "proxy/worker.h"

/* The worker's handlers for client connections: each accepted one becomes a session. */
extern const tt_worker_handlers_t tt_session_handlers;

/* Takes ownership of an accepted, non-blocking client fd of listener l (a dedicated port routes
 * to its upstream, the forward-proxy port by host). */
void tt_session_start(tt_listener_t *l, int fd, const tt_addr_t *peer);

/* Drain: an idle session closes now; a busy one closes after its current response. */
void tt_session_drain(tt_worker_t *w);

/* Closes every session at once (drain timeout or final shutdown). */
void tt_session_close_all(tt_worker_t *w);

#endif
