/* The admin endpoint: a small HTTP/1.1 server on its own thread, off the request path.
 *
 *   /metrics  Prometheus text          /stats   the same figures as JSON
 *   /healthz  200 while the process    /ready   200 once ready (ops->ready), else 503
 *             answers                  /pools   every upstream connection now (JSON)
 *   /config   the effective configuration, secrets redacted
 *   POST /reload   reload the configuration file (ops->reload), loopback clients only
 *
 * Only GET and HEAD (POST for /reload); anything else is 405, an unknown path 404. Up to 64
 * connections are served at once by a non-blocking loop (more wait in the listen backlog), one
 * request per connection (Connection: close), the request head bounded (8 KiB) and read within a
 * deadline (5 s) and the response written within another (10 s): a slow or silent client costs one
 * slot for at most that, and delays no other request (a /healthz probe). Scrapers open a connection
 * per scrape anyway.
 *
 * The server knows nothing of workers: what it serves comes from tt_admin_ops_t, which the proxy
 * implements (proxy/introspect.h) and tests fake. The ops are called on the admin thread. */
#ifndef TT_METRICS_ADMIN_H
#define TT_METRICS_ADMIN_H

#include "core/buf.h"
#include "event/sock.h"
#include "metrics/snapshot.h"

#include <stddef.h>

typedef struct {
    void *ctx;
    /* A new snapshot the server frees, or NULL with a reason in err (a worker did not answer). */
    tt_snapshot_t *(*snapshot)(void *ctx, char *err, size_t errlen);
    /* Fills out (empty on entry; the server frees it). Returns 0, or -1 with a reason in err. */
    int (*pools)(void *ctx, tt_conn_list_t *out, char *err, size_t errlen);
    /* 1 if ready, 0 if not; either way a one-line explanation in why. */
    int (*ready)(void *ctx, char *why, size_t whylen);
    /* The effective configuration as INI text (malloc'd, the server frees it), or NULL. The
     * server redacts it before serving. */
    char *(*config)(void *ctx);
    /* Validates the configuration file and starts a reload: 0 (started), -1 (the file is
     * invalid), -2 (cannot reload now); a one-line explanation in msg either way. NULL: none. */
    int (*reload)(void *ctx, char *msg, size_t msglen);
} tt_admin_ops_t;

typedef struct tt_admin tt_admin_t;

/* Binds and listens on addr (port 0 picks a free port; see tt_admin_port). The loopback policy
 * (admin_allow_remote) is the configuration's job, checked before this is called. Returns the
 * server, not yet serving, or NULL with a reason in err. ops is copied. */
tt_admin_t *tt_admin_open(const tt_addr_t *addr, const tt_admin_ops_t *ops, char *err,
                          size_t errlen);

/* The same on fd, a listening socket the server takes ownership of (closed on failure too). */
tt_admin_t *tt_admin_open_fd(int fd, const tt_admin_ops_t *ops, char *err, size_t errlen);

/* Starts the serving thread. Call after the state the ops read exists (workers started).
 * Returns 0, or an errno value. */
int tt_admin_start(tt_admin_t *a);

/* Stops the thread (an in-flight request is cut short), closes the socket and frees a. Must run
 * before anything the ops read goes away. NULL is ignored. */
void tt_admin_close(tt_admin_t *a);

/* The port actually bound. */
int tt_admin_port(const tt_admin_t *a);

/* Answers a request head: in holds the len bytes received so far on a connection. Returns 1 with
 * the complete response (Connection: close) appended to out, or 0 when the head is incomplete
 * (call again with more bytes). loopback: the client is on this host (POST /reload is refused
 * otherwise). Calls the ops; used by the server loop and the fuzzer. */
int tt_admin_respond(const tt_admin_ops_t *ops, int loopback, const char *in, size_t len,
                     tt_buf_t *out);

/* A copy of INI text with secret values replaced by "<redacted>": keys naming a key, password,
 * secret, token or credential, and the password part of URLs with user information. The caller
 * frees the result. */
char *tt_admin_redact_config(const char *text);

#endif
