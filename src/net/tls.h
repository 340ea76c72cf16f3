/* TLS origination to an upstream (OpenSSL 3), for the event loop: nothing here blocks.
 *
 * A tt_tls_client_t is one upstream's TLS setup, shared by all workers: the context (trust store,
 * client certificate, minimum version, ALPN http/1.1, verification of tls_server_name) and the
 * most recent session, so a new connection to the endpoint resumes instead of paying a full
 * handshake. Workers create one tt_tls_t per connection; it then belongs to that connection
 * alone. The I/O calls follow recv/send conventions (-1 with errno EAGAIN when the socket is not
 * ready), so the session relays over TLS exactly as over TCP. See docs/internals/tls.md. */
#ifndef TT_NET_TLS_H
#define TT_NET_TLS_H

#include "net/tls_failure.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tt_tls_client tt_tls_client_t;
typedef struct ssl_st tt_tls_t; /* OpenSSL's SSL */

/* Where a setting was made, for errors ("FILE:LINE: KEY: reason"). */
typedef enum {
    TT_TLS_OPT_CA,
    TT_TLS_OPT_CERT,
    TT_TLS_OPT_KEY,
    TT_TLS_OPT_SERVER_NAME,
    TT_TLS_OPT__COUNT,
} tt_tls_opt_t;

/* What TLS origination to one upstream needs. Strings are borrowed: they must outlive the client
 * built from them. The TLS layer knows nothing of the configuration file beyond these. */
typedef struct {
    const char *upstream;    /* name, for log lines */
    const char *server_name; /* verified and sent as SNI (an IP literal is verified, not sent) */
    const char *ca;          /* PEM file; NULL: the system store */
    const char *cert, *key;  /* client certificate and key; NULL: none */
    int verify;
    int min_version; /* 12 or 13 */
    int session_reuse;
    const char *file;                        /* for errors: the configuration file */
    int line[TT_TLS_OPT__COUNT];             /* for errors: where each setting was made */
    const char *key_name[TT_TLS_OPT__COUNT]; /* for errors: the key's name ("tls_ca") */
} tt_tls_options_t;

/* Builds the TLS setup of an https:// upstream: loads and checks the CA, certificate and key
 * files (key permissions, key matching the certificate). Returns NULL with "FILE:LINE: KEY:
 * reason" in err on failure. Warns loudly when verification is off. */
tt_tls_client_t *tt_tls_client_new(const tt_tls_options_t *opts, char *err, size_t errlen);
void tt_tls_client_free(tt_tls_client_t *tc);

/* Rebuilds the context when tls_ca, tls_cert or tls_key changed on disk since it was built, so
 * new connections use the new files; connections already open keep theirs. Returns 1 if
 * reloaded, 0 if nothing changed, -1 (with err; the old setup stays) if the new files are bad.
 * Any thread. */
int tt_tls_client_reload(tt_tls_client_t *tc, char *err, size_t errlen);

/* Forgets the endpoint's session (a handshake offering it failed: it may be the cause). */
void tt_tls_client_drop_session(tt_tls_client_t *tc);

/* Whether session reuse is on but no session has arrived yet: connections opened now would all
 * pay a full handshake. Any thread. */
int tt_tls_client_awaits_session(tt_tls_client_t *tc);

/* A client TLS connection over connected socket fd, set to resume the endpoint's last session.
 * NULL if OpenSSL is out of memory. */
tt_tls_t *tt_tls_new(tt_tls_client_t *tc, int fd);

typedef enum { TT_TLS_DONE, TT_TLS_WANT_READ, TT_TLS_WANT_WRITE, TT_TLS_FAILED } tt_tls_step_t;

/* Advances the handshake. On TT_TLS_FAILED, tt_tls_failure() tells why. */
tt_tls_step_t tt_tls_handshake(tt_tls_t *t);
/* Classifies a failed handshake (or a failed first exchange: TLS 1.3 servers reject a missing
 * client certificate only after the client finished). detail gets OpenSSL's own words. */
tt_tls_failure_t tt_tls_failure(tt_tls_t *t, char *detail, size_t len);
/* Whether the upstream may still refuse the finished handshake: with TLS 1.3 a server that asked
 * for a client certificate judges it only after the client finished, and says so with an alert
 * on the first read (or accepts with a session ticket). */
int tt_tls_awaits_verdict(tt_tls_t *t);
/* Whether the finished handshake resumed a session. */
int tt_tls_resumed(tt_tls_t *t);

/* errno of a read that met the end of the stream without close_notify: the upstream, or anyone on
 * the path, cut the stream; a body that ends at the close may be truncated. */
#define TT_TLS_ETRUNCATED ECONNABORTED

/* Reads decrypted bytes. Returns n > 0; 0 after close_notify; -1 with errno EAGAIN (see
 * tt_tls_wants_write), TT_TLS_ETRUNCATED, EPROTO or a socket error. *more is set when OpenSSL
 * holds bytes already read from the socket, which epoll will not report. */
ssize_t tt_tls_read(tt_tls_t *t, void *buf, size_t len, uint8_t *more);
/* Writes; may write part. Returns n >= 0, or -1 with errno as tt_tls_read. */
ssize_t tt_tls_write(tt_tls_t *t, const void *buf, size_t len);
/* Whether OpenSSL holds bytes already taken from the socket (epoll will not report them). */
int tt_tls_pending(const tt_tls_t *t);
/* After EAGAIN: whether the call waits for the socket to be writable rather than readable (a
 * TLS read can need to write, and a write to read). */
int tt_tls_wants_write(const tt_tls_t *t);

/* Checks an idle connection without taking application data: processes what the upstream sent
 * (TLS 1.3 session tickets are normal). Returns 0 if still usable, 1 if it sent data (stray
 * bytes), -1 if it closed (close_notify, alert or EOF). */
int tt_tls_probe_idle(tt_tls_t *t);

/* Frees OpenSSL's record buffers (about 34 KB) while the connection idles; they come back on the
 * next read or write. SSL_MODE_RELEASE_BUFFERS alone leaves them allocated after a handshake or a
 * read that found nothing. */
void tt_tls_release_buffers(tt_tls_t *t);

/* Frees the connection's TLS state; with polite, first sends close_notify (never waits for the
 * reply). The socket is the caller's to close. */
void tt_tls_free(tt_tls_t *t, int polite);

#endif
