#include "net/tls.h"

#include "core/invariant.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* What a file looked like when the context was built, to notice a change on SIGHUP. */
typedef struct {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_stamp_t;

struct tt_tls_client {
    tt_tls_options_t opts;
    const char *name; /* verified, and sent as SNI unless an IP address */
    int name_is_ip;
    file_stamp_t ca, cert, key;
    /* Guards ctx and session: taken once per new connection and per session ticket, never per
     * request. */
    pthread_mutex_t lock;
    SSL_CTX *ctx;
    SSL_SESSION *session; /* the endpoint's latest resumable session */
};

static const struct {
    const char *name, *phrase, *proxy_status;
} failures[TT_TLS_FAIL__COUNT] = {
    [TT_TLS_FAIL_UNTRUSTED] = {"untrusted", "certificate not trusted", "tls_certificate_error"},
    [TT_TLS_FAIL_NAME_MISMATCH] = {"name_mismatch", "name mismatch", "tls_certificate_error"},
    [TT_TLS_FAIL_EXPIRED] = {"expired", "certificate expired", "tls_certificate_error"},
    [TT_TLS_FAIL_PROTOCOL_VERSION] = {"protocol_version", "protocol version", "tls_protocol_error"},
    [TT_TLS_FAIL_TIMEOUT] = {"timeout", "handshake timeout", "connection_timeout"},
    [TT_TLS_FAIL_REJECTED] = {"rejected", "rejected by upstream", "tls_alert_received"},
    [TT_TLS_FAIL_CLOSED] = {"closed", "connection closed", "connection_terminated"},
    [TT_TLS_FAIL_OTHER] = {"other", "handshake error", "tls_protocol_error"},
};

const char *tt_tls_failure_name(tt_tls_failure_t f)
{
    return f < TT_TLS_FAIL__COUNT ? failures[f].name : "other";
}

const char *tt_tls_failure_phrase(tt_tls_failure_t f)
{
    return f < TT_TLS_FAIL__COUNT ? failures[f].phrase : "handshake error";
}

const char *tt_proxy_status_for_tls(tt_tls_failure_t f)
{
    return f < TT_TLS_FAIL__COUNT ? failures[f].proxy_status : "tls_protocol_error";
}

/* ---- building the context ------------------------------------------------------------------ */

static void stamp_file(const char *path, file_stamp_t *st)
{
    struct stat sb;
    memset(st, 0, sizeof(*st));
    if (path != NULL && stat(path, &sb) == 0)
        *st = (file_stamp_t){sb.st_dev, sb.st_ino, sb.st_size, sb.st_mtim};
}

static int same_stamp(const file_stamp_t *a, const file_stamp_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Writes "FILE:LINE: KEY: PATH: reason", with OpenSSL's reason appended when it has one. */
static void file_error(const tt_tls_client_t *tc, tt_tls_opt_t key, const char *path, char *err,
                       size_t errlen, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void file_error(const tt_tls_client_t *tc, tt_tls_opt_t key, const char *path, char *err,
                       size_t errlen, const char *fmt, ...)
{
    const tt_tls_options_t *o = &tc->opts;
    int n = snprintf(err, errlen, "%s:%d: %s: %s: ", o->file, o->line[key], o->key_name[key], path);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    unsigned long e = ERR_peek_last_error();
    if (e != 0 && m >= 0 && (size_t)(n + m) < errlen)
        snprintf(err + n + m, errlen - (size_t)(n + m), " (%s)", ERR_reason_error_string(e));
    ERR_clear_error();
}

static int readable_file(const tt_tls_client_t *tc, tt_tls_opt_t key, const char *path, char *err,
                         size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        file_error(tc, key, path, err, errlen, "cannot read: %s", strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* A private key others can read is a leaked key (ssh refuses such keys for the same reason). */
static int private_key_guarded(const tt_tls_client_t *tc, const char *path, char *err,
                               size_t errlen)
{
    struct stat sb;
    if (stat(path, &sb) < 0) {
        file_error(tc, TT_TLS_OPT_KEY, path, err, errlen, "cannot read: %s", strerror(errno));
        return -1;
    }
    if (sb.st_mode & (S_IRWXO | S_IWGRP)) {
        file_error(tc, TT_TLS_OPT_KEY, path, err, errlen,
                   "permissions %04o are too open: others may read or change the private key "
                   "(chmod 600, or 640 for a group)",
                   (unsigned)(sb.st_mode & 07777));
        return -1;
    }
    return readable_file(tc, TT_TLS_OPT_KEY, path, err, errlen);
}

static int refuse_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1; /* never prompt on a terminal: an encrypted key is a configuration error */
}

static int on_new_session(SSL *ssl, SSL_SESSION *session);

/* SSL app data records what the upstream said about client certificates: */
#define CERT_REQUESTED ((void *)1) /* it asked for one: TLS 1.3 may still refuse us */
#define CERT_ACCEPTED  ((void *)2) /* it then sent a session ticket: it accepted us */

static int on_cert_request(SSL *ssl, void *arg)
{
    (void)arg;
    SSL_set_app_data(ssl, CERT_REQUESTED);
    return 1;
}

static SSL_CTX *build_ctx(tt_tls_client_t *tc, char *err, size_t errlen)
{
    const tt_tls_options_t *o = &tc->opts;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "upstream %s: cannot create a TLS context", o->upstream);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, o->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* Partial writes and a moving buffer make SSL_write behave like send(); released buffers
     * keep an idle pooled connection at a few hundred bytes of OpenSSL state. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1); /* a record in one read(), not header then body */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);
    SSL_CTX_set_cert_cb(ctx, on_cert_request, NULL);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    if (o->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (o->ca != NULL) {
            if (readable_file(tc, TT_TLS_OPT_CA, o->ca, err, errlen) < 0)
                goto fail;
            if (SSL_CTX_load_verify_file(ctx, o->ca) != 1) {
                file_error(tc, TT_TLS_OPT_CA, o->ca, err, errlen, "no PEM certificate in it");
                goto fail;
            }
        } else {
            SSL_CTX_set_default_verify_paths(ctx);
        }
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        /* subjectAltName only: the subject's CN is not a name (RFC 6125). */
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                                   X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
        int ok = tc->name_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, tc->name)
                                : X509_VERIFY_PARAM_set1_host(param, tc->name, 0);
        if (ok != 1) {
            snprintf(err, errlen, "%s:%d: %s: %s: not a valid name to verify", o->file,
                     o->line[TT_TLS_OPT_SERVER_NAME], o->key_name[TT_TLS_OPT_SERVER_NAME],
                     tc->name);
            goto fail;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (o->cert != NULL) {
        if (readable_file(tc, TT_TLS_OPT_CERT, o->cert, err, errlen) < 0 ||
            private_key_guarded(tc, o->key, err, errlen) < 0)
            goto fail;
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
            file_error(tc, TT_TLS_OPT_CERT, o->cert, err, errlen, "not a PEM certificate");
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) {
            if (ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
                file_error(tc, TT_TLS_OPT_KEY, o->key, err, errlen,
                           "not an unencrypted PEM private key");
                goto fail;
            }
        }
        if (ERR_peek_last_error() != 0 || SSL_CTX_check_private_key(ctx) != 1) {
            ERR_clear_error();
            file_error(tc, TT_TLS_OPT_KEY, o->key, err, errlen,
                       "does not match the certificate in tls_cert (%s)", o->cert);
            goto fail;
        }
    }
    if (o->session_reuse) {
        /* Sessions are kept by tether (on_new_session), not in OpenSSL's internal cache. */
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    SSL_CTX_set_app_data(ctx, tc);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

tt_tls_client_t *tt_tls_client_new(const tt_tls_options_t *opts, char *err, size_t errlen)
{
    TT_ASSERT(opts->server_name != NULL);
    tt_tls_client_t *tc = tt_calloc(1, sizeof(*tc));
    tc->opts = *opts;
    const tt_tls_options_t *o = &tc->opts;
    tc->name = o->server_name;
    tc->name_is_ip = is_ip_literal(tc->name);
    pthread_mutex_init(&tc->lock, NULL);
    stamp_file(o->ca, &tc->ca);
    stamp_file(o->cert, &tc->cert);
    stamp_file(o->key, &tc->key);
    tc->ctx = build_ctx(tc, err, errlen);
    if (tc->ctx == NULL) {
        tt_tls_client_free(tc);
        return NULL;
    }
    if (!o->verify)
        tt_warn("upstream %s: tls_verify = no: the certificate of %s is NOT verified, so anyone "
                "on the path can impersonate it and read the traffic; trust a private CA with "
                "tls_ca instead",
                o->upstream, tc->name);
    return tc;
}

void tt_tls_client_free(tt_tls_client_t *tc)
{
    if (tc == NULL)
        return;
    SSL_SESSION_free(tc->session);
    SSL_CTX_free(tc->ctx);
    pthread_mutex_destroy(&tc->lock);
    free(tc);
}

int tt_tls_client_awaits_session(tt_tls_client_t *tc)
{
    if (!tc->opts.session_reuse)
        return 0;
    pthread_mutex_lock(&tc->lock);
    int none = tc->session == NULL;
    pthread_mutex_unlock(&tc->lock);
    return none;
}

int tt_tls_client_reload(tt_tls_client_t *tc, char *err, size_t errlen)
{
    const tt_tls_options_t *o = &tc->opts;
    file_stamp_t ca, cert, key;
    stamp_file(o->ca, &ca);
    stamp_file(o->cert, &cert);
    stamp_file(o->key, &key);
    if (same_stamp(&ca, &tc->ca) && same_stamp(&cert, &tc->cert) && same_stamp(&key, &tc->key))
        return 0;
    SSL_CTX *fresh = build_ctx(tc, err, errlen);
    if (fresh == NULL)
        return -1;
    pthread_mutex_lock(&tc->lock);
    SSL_CTX *old = tc->ctx;
    tc->ctx = fresh;
    /* A session resumed from before would keep the old client identity. */
    SSL_SESSION *stale = tc->session;
    tc->session = NULL;
    tc->ca = ca, tc->cert = cert, tc->key = key;
    pthread_mutex_unlock(&tc->lock);
    SSL_SESSION_free(stale);
    SSL_CTX_free(old); /* connections made with it hold their own reference */
    return 1;
}

/* OpenSSL hands over each new session (TLS 1.3: each ticket, after the handshake). */
static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    tt_tls_client_t *tc = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (SSL_get_app_data(ssl) == CERT_REQUESTED)
        SSL_set_app_data(ssl, CERT_ACCEPTED);
    if (!SSL_SESSION_is_resumable(session))
        return 0;
    pthread_mutex_lock(&tc->lock);
    if (SSL_get_SSL_CTX(ssl) != tc->ctx) { /* made before a reload */
        pthread_mutex_unlock(&tc->lock);
        return 0;
    }
    /* A private copy: the connection keeps the original, and OpenSSL marks it not resumable
     * when that connection ends without close_notify. */
    SSL_SESSION *copy = SSL_SESSION_dup(session);
    if (copy == NULL) {
        pthread_mutex_unlock(&tc->lock);
        return 0;
    }
    SSL_SESSION *old = tc->session;
    tc->session = copy;
    pthread_mutex_unlock(&tc->lock);
    SSL_SESSION_free(old);
    return 0; /* OpenSSL keeps ownership of its own */
}

void tt_tls_client_drop_session(tt_tls_client_t *tc)
{
    pthread_mutex_lock(&tc->lock);
    SSL_SESSION *old = tc->session;
    tc->session = NULL;
    pthread_mutex_unlock(&tc->lock);
    SSL_SESSION_free(old);
}

/* ---- connections --------------------------------------------------------------------------- */

tt_tls_t *tt_tls_new(tt_tls_client_t *tc, int fd)
{
    pthread_mutex_lock(&tc->lock);
    SSL *ssl = SSL_new(tc->ctx);
    /* A copy per connection: once a TLS 1.3 handshake resumes, OpenSSL marks the session it used
     * as no longer resumable, which would send every connection opened before the next ticket
     * arrives to a full handshake. */
    SSL_SESSION *copy = ssl != NULL && tc->session != NULL ? SSL_SESSION_dup(tc->session) : NULL;
    pthread_mutex_unlock(&tc->lock);
    if (copy != NULL) {
        SSL_set_session(ssl, copy);
        SSL_SESSION_free(copy); /* the connection holds its own reference */
    }
    if (ssl == NULL) {
        ERR_clear_error();
        return NULL;
    }
    if (SSL_set_fd(ssl, fd) != 1 ||
        (!tc->name_is_ip && SSL_set_tlsext_host_name(ssl, tc->name) != 1)) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

tt_tls_step_t tt_tls_handshake(tt_tls_t *t)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t);
    if (r == 1)
        return TT_TLS_DONE;
    switch (SSL_get_error(t, r)) {
    case SSL_ERROR_WANT_READ:
        return TT_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TT_TLS_WANT_WRITE;
    default:
        return TT_TLS_FAILED;
    }
}

static int is_version_reason(int reason)
{
    return reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_PROTOCOLS_AVAILABLE ||
           reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION ||
           reason == SSL_R_UNSUPPORTED_SSL_VERSION || reason == SSL_R_VERSION_TOO_LOW ||
           reason == SSL_R_VERSION_TOO_HIGH;
}

tt_tls_failure_t tt_tls_failure(tt_tls_t *t, char *detail, size_t len)
{
    int saved_errno = errno;
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);
    long verify = SSL_get_verify_result(t);
    tt_tls_failure_t f;
    if (e != 0 && reason == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK) {
        snprintf(detail, len, "%s", X509_verify_cert_error_string(verify));
        switch (verify) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            f = TT_TLS_FAIL_NAME_MISMATCH;
            break;
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
            f = TT_TLS_FAIL_EXPIRED;
            break;
        default:
            f = TT_TLS_FAIL_UNTRUSTED;
            break;
        }
    } else if (e != 0 && is_version_reason(reason)) {
        snprintf(detail, len, "%s", ERR_reason_error_string(e));
        f = TT_TLS_FAIL_PROTOCOL_VERSION;
    } else if (e != 0 && reason == SSL_R_WRONG_VERSION_NUMBER) {
        snprintf(detail, len, "the upstream does not answer in TLS (a plain http:// server?)");
        f = TT_TLS_FAIL_OTHER;
    } else if (e != 0 && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        snprintf(detail, len, "the upstream closed the connection during the handshake");
        f = TT_TLS_FAIL_CLOSED;
    } else if (e != 0 && reason > SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        /* An alert from the upstream: it refused us (often: no or an unknown client cert). */
        int alert = reason - SSL_AD_REASON_OFFSET;
        /* OpenSSL 3.0 has no text for TLS 1.3's certificate_required. */
        snprintf(detail, len, "alert from the upstream: %s",
                 alert == TLS13_AD_CERTIFICATE_REQUIRED
                     ? "certificate required (set tls_cert and tls_key)"
                     : SSL_alert_desc_string_long(alert));
        f = TT_TLS_FAIL_REJECTED;
    } else if (e == 0) {
        snprintf(detail, len, "%s",
                 saved_errno != 0 && saved_errno != EAGAIN ? strerror(saved_errno)
                                                           : "the upstream closed the connection");
        f = TT_TLS_FAIL_CLOSED;
    } else {
        ERR_error_string_n(e, detail, len);
        f = TT_TLS_FAIL_OTHER;
    }
    ERR_clear_error();
    return f;
}

int tt_tls_awaits_verdict(tt_tls_t *t)
{
    return SSL_version(t) == TLS1_3_VERSION && SSL_get_app_data(t) == CERT_REQUESTED;
}

int tt_tls_resumed(tt_tls_t *t)
{
    return SSL_session_reused(t);
}

static int clamp_len(size_t len)
{
    return len > INT_MAX ? INT_MAX : (int)len;
}

/* Maps a failed SSL_read/SSL_write to the recv/send convention. Returns 0 for an end of stream
 * (reads only), else -1 with errno set. */
static ssize_t io_failed(tt_tls_t *t, int r, int reading)
{
    int saved_errno = errno;
    switch (SSL_get_error(t, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
        if (reading)
            return 0;
        errno = EPIPE;
        return -1;
    case SSL_ERROR_SYSCALL:
        if (saved_errno == 0 || saved_errno == EAGAIN) /* EOF without close_notify */
            saved_errno = reading ? TT_TLS_ETRUNCATED : EPIPE;
        errno = saved_errno;
        return -1;
    default:
        if (reading && ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            errno = TT_TLS_ETRUNCATED;
        else
            errno = EPROTO;
        return -1;
    }
}

ssize_t tt_tls_read(tt_tls_t *t, void *buf, size_t len, uint8_t *more)
{
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(t, buf, clamp_len(len));
    if (n > 0) {
        *more = (uint8_t)SSL_has_pending(t);
        return n;
    }
    *more = 0;
    return io_failed(t, n, 1);
}

ssize_t tt_tls_write(tt_tls_t *t, const void *buf, size_t len)
{
    if (len == 0)
        return 0;
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(t, buf, clamp_len(len));
    if (n > 0)
        return n;
    return io_failed(t, n, 0);
}

int tt_tls_pending(const tt_tls_t *t)
{
    return SSL_has_pending(t);
}

int tt_tls_wants_write(const tt_tls_t *t)
{
    return SSL_want_write(t);
}

int tt_tls_probe_idle(tt_tls_t *t)
{
    char byte;
    uint8_t more;
    ssize_t n = tt_tls_read(t, &byte, 1, &more);
    if (n > 0)
        return 1;
    return n < 0 && errno == EAGAIN ? 0 : -1;
}

void tt_tls_release_buffers(tt_tls_t *t)
{
    SSL_free_buffers(t); /* refused, harmlessly, while bytes are pending */
}

void tt_tls_free(tt_tls_t *t, int polite)
{
    if (t == NULL)
        return;
    if (polite)
        SSL_shutdown(t); /* sends close_notify; the reply is not awaited */
    ERR_clear_error();
    SSL_free(t);
}
