#include "proxy/session.h"

#include "core/invariant.h"
#include "core/log.h"
#include "http/rewrite.h"

#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

typedef enum {
    S_HEAD,      /* reading a request head, or idle between requests */
    S_WAIT_CONN, /* waiting for an upstream connection (connecting or queued) */
    S_EXCHANGE,  /* relaying the request and the response */
    S_TUNNEL,    /* after 101 Switching Protocols: raw bytes both ways */
    S_FLUSH,     /* writing the rest of a response, then the next request or close */
    S_CLOSED,
} session_state_t;

typedef struct tt_session {
    tt_io_t io;
    tt_worker_t *worker;
    tt_list_t link;
    tt_upstream_t *listener_upstream;
    char peer[TT_ADDR_STRLEN];
    tt_buf_t *cin;  /* bytes from the client */
    tt_buf_t *cout; /* response heads, errors and de-chunked bodies for the client */
    tt_http_reader_t req, resp;
    tt_http_head_t *head; /* borrowed while a request or response head is parsed */
    size_t head_parsed;
    session_state_t state;
    tt_timer_t timer;
    tt_deferred_t free_later;

    /* The exchange in progress. */
    tt_upstream_t *up;
    tt_upconn_t *conn;
    tt_pool_waiter_t waiter;
    tt_buf_t *uout; /* request head, plus the body kept for a safe retry */
    size_t uout_sent;
    size_t req_pending;  /* parsed request body bytes at the front of cin, not yet sent */
    size_t resp_pending; /* parsed response body bytes at the front of conn->in, not yet sent */
    size_t retained;     /* request body bytes kept in uout */
    uint8_t method;
    uint8_t http10;
    uint8_t client_keepalive;
    uint8_t upgrade;
    uint8_t retryable;
    uint8_t retaining;
    uint8_t retried;
    uint8_t req_read_done; /* the whole request was read from the client */
    uint8_t req_sent;      /* the whole request was written to the upstream */
    uint8_t resp_started;  /* a byte of the response arrived */
    uint8_t resp_head_done;
    uint8_t resp_done;
    uint8_t resp_keepalive;
    uint8_t close_after;
    uint8_t ends_at_close; /* the client learns the response's end from the close alone */
    uint8_t client_eof;
    /* epoll said readable and no read has returned EAGAIN since: reading is worth a syscall. */
    uint8_t client_readable;
    uint8_t up_readable;
    uint8_t client_gone;  /* reset or hung up: nothing more can be written */
    uint8_t in_request;   /* a request head was read and its outcome is not yet counted */
    uint8_t generated;    /* the response is tether's own */
    uint8_t quickack_set; /* wait_for_client acknowledged this request's first part */
    uint16_t status;      /* status sent to the client; 0 before a response head */
    uint8_t reused;       /* the exchange ran on a connection that served a request before */
    uint8_t path_len;
    uint32_t send_queue; /* the client socket's unacknowledged bytes when the send timer started */
    uint64_t started_us;
    uint64_t bytes_out; /* response bytes written to the client for this request */
    char path[200];     /* request target, for the access log */

    /* Interest wanted after this round of progress. */
    uint8_t want_client_in, want_client_out, want_up_in, want_up_out;
} tt_session_t;

/* s->method of a request refused before its head was understood. */
#define METHOD_UNKNOWN 0xff

static void session_run(tt_session_t *s);
static void waiter_cb(tt_pool_waiter_t *w, tt_upconn_t *conn, tt_pool_result_t result,
                      const tt_pool_error_t *err);
static void upstream_handler(tt_upconn_t *conn, uint32_t events);

static tt_loop_t *loop_of(tt_session_t *s)
{
    return s->worker->loop;
}

static void session_free_cb(tt_deferred_t *d)
{
    free(tt_container_of(d, tt_session_t, free_later));
}

static void release_buffers(tt_session_t *s)
{
    tt_worker_t *w = s->worker;
    tt_buf_release(&w->bufs, s->cin);
    tt_buf_release(&w->bufs, s->cout);
    tt_buf_release(&w->bufs, s->uout);
    tt_http_head_release(&w->heads, s->head);
    s->cin = s->cout = s->uout = NULL;
    s->head = NULL;
}

/* Ends the exchange's hold on its upstream connection: back to the pool when verdict allows. */
static void drop_conn(tt_session_t *s, tt_close_reason_t verdict)
{
    tt_pool_cancel(&s->waiter);
    if (s->conn == NULL)
        return;
    tt_upconn_t *c = s->conn;
    s->conn = NULL;
    if (verdict == TT_REUSE_OK)
        tt_pool_release(c, verdict);
    else
        tt_conn_close(c, verdict);
}

static void maybe_finish_drain(tt_worker_t *w);

static void log_access(tt_session_t *s, uint64_t duration_us)
{
    tt_accesslog_t *al = &s->worker->access_log;
    if (!tt_accesslog_enabled(al))
        return;
    tt_access_entry_t e = {
        .client = s->peer,
        .upstream = s->up != NULL ? s->up->conf->name : NULL,
        .endpoint = s->up != NULL ? s->up->addr_str : NULL,
        .method =
            s->method == METHOD_UNKNOWN ? "-" : llhttp_method_name((llhttp_method_t)s->method),
        .path = s->path,
        .path_len = s->path_len,
        .status = s->status,
        .bytes = s->bytes_out,
        .duration_us = duration_us,
        .reused = s->reused,
        .retried = s->retried,
    };
    tt_accesslog_write(al, &e);
}

/* Counts the outcome of the current request, once. */
static void end_request(tt_session_t *s)
{
    if (!s->in_request)
        return;
    s->in_request = 0;
    unsigned cls = s->status >= 100 && s->status < 600 ? s->status / 100 : 0;
    if (s->up == NULL) {
        s->worker->unrouted[cls]++;
        log_access(s, tt_clock_monotonic_us() - s->started_us);
        return;
    }
    tt_upstream_stats_t *st = &tt_worker_pool(s->worker, s->up)->stats;
    st->responses[cls]++;
    if (s->generated)
        st->generated[cls]++;
    uint64_t duration = tt_clock_monotonic_us() - s->started_us;
    tt_hist_record(&st->request_duration_us, duration);
    log_access(s, duration);
}

static void session_close(tt_session_t *s, tt_close_reason_t conn_verdict)
{
    if (s->state == S_CLOSED)
        return;
    end_request(s);
    drop_conn(s, conn_verdict);
    s->state = S_CLOSED;
    /* A response cut short whose end the client learns from the close alone ends in a reset,
     * never a FIN, which would make it look complete. */
    if (conn_verdict == TT_CLOSE_RESPONSE_PARTIAL && s->resp_head_done && s->ends_at_close &&
        s->io.fd >= 0)
        setsockopt(s->io.fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger));
    tt_io_close(loop_of(s), &s->io);
    tt_loop_timer_stop(loop_of(s), &s->timer);
    release_buffers(s);
    tt_list_remove(&s->link);
    s->worker->nsessions--;
    tt_loop_defer(loop_of(s), &s->free_later, session_free_cb);
    maybe_finish_drain(s->worker);
}

static void arm_timer(tt_session_t *s, int64_t ms)
{
    tt_loop_timer_after(loop_of(s), &s->timer, (tt_msec_t)ms);
}

/* ---- client output ------------------------------------------------------------------------ */

static int client_output_pending(const tt_session_t *s)
{
    return (s->cout != NULL && tt_buf_len(s->cout) > 0) || s->resp_pending > 0;
}

/* Bytes written to the client socket that the client has not acknowledged yet. */
static uint32_t client_send_queue(const tt_session_t *s)
{
    int n = 0;
    return ioctl(s->io.fd, SIOCOUTQ, &n) == 0 && n > 0 ? (uint32_t)n : 0;
}

/* A client that takes no byte of a response for client_idle_timeout is cut (nginx's send_timeout
 * is the model): otherwise a client that stops reading holds its upstream connection for ever,
 * and a few of them starve a small pool. The timer starts when a write blocks; it restarts when a
 * write made progress first, and when it fires, a send queue shorter than at its start shows that
 * the client is still reading (the kernel may hold megabytes, drained long before tether can
 * write again), so only a client that took nothing is cut. A slow upstream sets the body's pace
 * unbounded, as before. Only while a response body or tether's own error is written: the timer
 * has other jobs before the response head, and none in a tunnel. */
static void arm_send_timer(tt_session_t *s, int progressed)
{
    if (!((s->state == S_EXCHANGE && s->resp_head_done) || s->state == S_FLUSH))
        return;
    if (progressed || !tt_timer_armed(&s->timer)) {
        s->send_queue = client_send_queue(s);
        arm_timer(s, s->worker->conf->client_idle_timeout);
    }
}

/* The send timer fired: 1 if the client took nothing since it started (then it is cut), 0 if it
 * read meanwhile (the timer restarts) or is not behind any more. */
static int client_stalled(tt_session_t *s)
{
    if (!client_output_pending(s))
        return 0;
    uint32_t queue = client_send_queue(s);
    if (queue == 0 || queue >= s->send_queue)
        return 1;
    s->send_queue = queue;
    arm_timer(s, s->worker->conf->client_idle_timeout);
    return 0;
}

/* Writes cout, then the raw response body waiting in conn->in. Returns 1 when all is written,
 * 0 when the socket is full, -1 when the client is gone. */
static int flush_client(tt_session_t *s)
{
    int progressed = 0;
    while (client_output_pending(s)) {
        struct iovec iov[2];
        int n = 0;
        size_t head = s->cout != NULL ? tt_buf_len(s->cout) : 0;
        if (head > 0)
            iov[n++] = (struct iovec){tt_buf_rptr(s->cout), head};
        if (s->resp_pending > 0)
            iov[n++] = (struct iovec){tt_buf_rptr(s->conn->in), s->resp_pending};
        /* The last bytes before a close: MSG_MORE holds them back until close(), so the FIN
         * leaves in the same segment and the client acknowledges both at once. */
        int last = s->close_after && s->resp_done;
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(s->io.fd, &msg, MSG_NOSIGNAL | (last ? MSG_MORE : 0));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                s->want_client_out = 1;
                arm_send_timer(s, progressed);
                return 0;
            }
            s->client_gone = 1;
            return -1;
        }
        progressed = 1;
        size_t done = (size_t)w;
        s->bytes_out += done;
        size_t from_head = TT_MIN(done, head);
        if (from_head > 0)
            tt_buf_consume(s->cout, from_head);
        done -= from_head;
        if (done > 0) {
            tt_buf_consume(s->conn->in, done);
            s->resp_pending -= done;
        }
    }
    return 1;
}

static tt_buf_t *cout_of(tt_session_t *s)
{
    if (s->cout == NULL)
        s->cout = tt_buf_acquire(&s->worker->bufs);
    return s->cout;
}

/* Answers the current request with an error generated by tether and ends the exchange. The client
 * connection stays open only when the request was read whole and the client wants keep-alive. */
static void reply_error(tt_session_t *s, int status, tt_close_reason_t conn_verdict,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void reply_error(tt_session_t *s, int status, tt_close_reason_t conn_verdict,
                        const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    drop_conn(s, conn_verdict);
    if (s->resp_head_done || s->client_gone) { /* too late for an error response */
        session_close(s, conn_verdict);
        return;
    }
    s->resp_pending = 0;
    int keep = s->req_read_done && s->req_pending == 0 && s->client_keepalive &&
               !s->worker->draining && status != 400 && status != 405 && status != 408 &&
               status != 431;
    s->close_after = !keep;
    s->status = (uint16_t)status;
    s->generated = 1;
    size_t before = tt_buf_len(cout_of(s));
    tt_http_write_error(s->cout, status, s->close_after, "%s", msg);
    if (!s->in_request) { /* refused while its head was read */
        s->in_request = 1;
        s->started_us = tt_clock_monotonic_us();
        s->path_len = 0;
        s->method = METHOD_UNKNOWN;
    }
    s->bytes_out = tt_buf_len(s->cout) - before; /* counted now: logged before it is written */
    end_request(s);
    tt_debug("client %s: %d %s", s->peer, status, msg);
    tt_loop_timer_stop(loop_of(s), &s->timer);
    s->state = S_FLUSH;
}

/* ---- request head ---------------------------------------------------------------------------- */

static int method_is_idempotent(uint8_t m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE ||
           m == HTTP_PUT || m == HTTP_DELETE;
}

static void begin_request(tt_session_t *s)
{
    s->state = S_HEAD;
    s->up = NULL;
    s->uout_sent = s->req_pending = s->resp_pending = s->retained = 0;
    s->retryable = s->retaining = s->retried = 0;
    s->req_read_done = s->req_sent = s->resp_started = s->resp_head_done = s->resp_done = 0;
    s->resp_keepalive = s->close_after = s->upgrade = s->quickack_set = 0;
    s->head_parsed = 0;
    tt_http_head_release(&s->worker->heads, s->head);
    s->head = NULL;
    tt_buf_release(&s->worker->bufs, s->uout);
    s->uout = NULL;
    /* An idle keep-alive client holds no buffer. */
    if (s->cin != NULL && tt_buf_len(s->cin) == 0) {
        tt_buf_release(&s->worker->bufs, s->cin);
        s->cin = NULL;
    }
    if (s->cout != NULL && tt_buf_len(s->cout) == 0) {
        tt_buf_release(&s->worker->bufs, s->cout);
        s->cout = NULL;
    }
    arm_timer(s, s->worker->conf->client_idle_timeout);
}

static void attach_conn(tt_session_t *s, tt_upconn_t *conn)
{
    s->conn = conn;
    s->reused = tt_conn_reused(conn);
    s->uout_sent = 0;
    s->resp_pending = 0;
    s->resp_started = s->resp_head_done = s->resp_done = 0;
    s->req_sent = 0;
    tt_http_reader_init(&s->resp, HTTP_RESPONSE);
    s->head_parsed = 0;
    s->up_readable = 0; /* an idle connection had nothing to read, or it would be closed */
    tt_conn_set_handler(conn, upstream_handler, s, EPOLLIN | EPOLLRDHUP);
    /* Until the request is read whole, a client that stops sending holds an upstream
     * connection: the idle timeout bounds that. Then the response timeout takes over. */
    if (!s->req_read_done)
        arm_timer(s, s->worker->conf->client_idle_timeout);
    else
        tt_loop_timer_stop(loop_of(s), &s->timer);
    s->state = S_EXCHANGE;
}

static void acquire_conn(tt_session_t *s, int flags)
{
    tt_pool_t *pool = tt_worker_pool(s->worker, s->up);
    const tt_upstream_conf_t *conf = s->up->conf;
    tt_upconn_t *conn = NULL;
    s->waiter.cb = waiter_cb;
    switch (tt_pool_acquire(pool, &s->waiter, flags, &conn)) {
    case TT_POOL_OK:
        attach_conn(s, conn);
        return;
    case TT_POOL_WAIT:
        s->state = S_WAIT_CONN;
        return;
    case TT_POOL_QUEUE_FULL:
        reply_error(s, 503, TT_CLOSE_ERROR,
                    "upstream %s: %lld requests already waiting for a connection (max_queue)",
                    conf->name, (long long)conf->max_queue);
        return;
    case TT_POOL_CONNECT_FAILED:
        reply_error(s, 502, TT_CLOSE_ERROR, "upstream %s (%s): connect failed: %s", conf->name,
                    s->up->addr_str, strerror(errno));
        return;
    case TT_POOL_SHUTDOWN:
    default:
        reply_error(s, 503, TT_CLOSE_ERROR, "shutting down");
        return;
    }
}

static void waiter_cb(tt_pool_waiter_t *w, tt_upconn_t *conn, tt_pool_result_t result,
                      const tt_pool_error_t *err)
{
    tt_session_t *s = tt_container_of(w, tt_session_t, waiter);
    const tt_upstream_conf_t *conf = s->up->conf;
    switch (result) {
    case TT_POOL_OK:
        attach_conn(s, conn);
        break;
    case TT_POOL_QUEUE_TIMEOUT:
        reply_error(s, 503, TT_CLOSE_ERROR,
                    "upstream %s: no connection available within queue_timeout (%lldms, "
                    "max_connections %lld)",
                    conf->name, (long long)conf->queue_timeout, (long long)conf->max_connections);
        break;
    case TT_POOL_CONNECT_TIMEOUT:
        reply_error(s, 504, TT_CLOSE_ERROR, "upstream %s (%s): connect timed out after %lldms",
                    conf->name, s->up->addr_str, (long long)conf->connect_timeout);
        break;
    case TT_POOL_CONNECT_FAILED:
        reply_error(s, 502, TT_CLOSE_ERROR, "upstream %s (%s): connect failed: %s", conf->name,
                    s->up->addr_str, strerror(err->errno_value));
        break;
    case TT_POOL_TLS_FAILED:
        reply_error(s, 502, TT_CLOSE_ERROR, "upstream %s (%s): TLS handshake failed: %s (%s)",
                    conf->name, s->up->addr_str, tt_tls_failure_phrase(err->tls), err->detail);
        break;
    default:
        reply_error(s, 503, TT_CLOSE_ERROR, "shutting down");
        break;
    }
    session_run(s);
}

static unsigned count_headers(const tt_http_head_t *h, const char *base, const char *name,
                              size_t len)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < h->nheaders; i++)
        n += (unsigned)tt_http_header_is(base, &h->headers[i], name, len);
    return n;
}

/* Chooses the upstream and the target and Host to send. Returns 0, or -1 after replying. */
static int route_request(tt_session_t *s, const tt_http_head_t *h, const char *base,
                         tt_http_request_out_t *out)
{
    tt_span_t target = {base + h->target, h->target_len}, authority = {NULL, 0}, host = {NULL, 0};
    int absolute = tt_http_split_absolute(target, &authority, &out->target) == 0;
    if (!absolute) {
        int asterisk = target.len == 1 && target.str[0] == '*' && h->method == HTTP_OPTIONS;
        if (target.len == 0 || (target.str[0] != '/' && !asterisk)) {
            reply_error(s, 400, TT_CLOSE_ERROR, "invalid request target");
            return -1;
        }
        out->target = target;
    }
    if (absolute) {
        host = authority;
    } else {
        const tt_http_header_t *hh = tt_http_head_find(h, base, "host");
        if (hh != NULL)
            host = (tt_span_t){base + hh->value, hh->value_len};
    }
    if (count_headers(h, base, "host", 4) > 1) { /* RFC 9112 3.2: which one would win? */
        reply_error(s, 400, TT_CLOSE_ERROR, "more than one Host header");
        return -1;
    }
    if (s->listener_upstream != NULL) {
        s->up = s->listener_upstream;
        if (!s->up->conf->preserve_host)
            out->host = (tt_span_t){s->up->host_header, strlen(s->up->host_header)};
        else if (absolute)
            out->host = authority;
        return 0;
    }
    if (host.len == 0) {
        reply_error(s, 400, TT_CLOSE_ERROR, "missing Host header");
        return -1;
    }
    s->up = tt_worker_route(s->worker, host.str, host.len);
    if (s->up == NULL) {
        reply_error(s, 403, TT_CLOSE_ERROR,
                    "no upstream is configured for host %.*s (tether is not an open proxy)",
                    (int)TT_MIN(host.len, 200), host.str);
        return -1;
    }
    if (absolute)
        out->host = authority;
    return 0;
}

/* Acts on a complete request head: refuses it, or routes it and asks the pool for a connection.
 * Either way the head's bytes leave cin and the head returns to the worker. */
static void start_request(tt_session_t *s)
{
    tt_http_head_t *h = s->head;
    const char *base = s->cin->data;
    tt_loop_timer_stop(loop_of(s), &s->timer);
    s->in_request = 1;
    s->started_us = tt_clock_monotonic_us();
    s->status = 0;
    s->generated = 0;
    s->bytes_out = 0;
    s->reused = 0;
    s->path_len = (uint8_t)TT_MIN(h->target_len, sizeof(s->path));
    memcpy(s->path, base + h->target, s->path_len);
    s->method = h->method;
    s->http10 = h->minor == 0;
    s->client_keepalive = h->keep_alive;
    s->req_read_done = (uint8_t)tt_http_reader_message_done(&s->req);
    tt_http_request_out_t out = {.tunnel = h->upgrade};
    int routed = 0;
    if (h->method == HTTP_CONNECT)
        reply_error(s, 405, TT_CLOSE_ERROR,
                    "CONNECT is not supported: tether pools plain HTTP/1.1 connections to its "
                    "configured upstreams; send plain http:// requests");
    else
        routed = route_request(s, h, base, &out) == 0;
    if (routed) {
        s->upgrade = h->upgrade;
        int has_body = h->chunked || (h->has_length && h->content_length > 0);
        int idempotent = method_is_idempotent(h->method) ||
                         tt_http_head_find(h, base, "idempotency-key") != NULL;
        int64_t limit = s->up->conf->retry_buffer;
        s->retryable = idempotent && !s->upgrade &&
                       (!has_body || h->chunked || (int64_t)h->content_length <= limit);
        s->retaining = s->retryable && has_body;
        s->uout = tt_buf_acquire(&s->worker->bufs);
        tt_http_write_request_head(s->uout, h, base, &out);
    }
    tt_buf_consume(s->cin, h->head_len);
    tt_http_head_release(&s->worker->heads, s->head);
    s->head = NULL;
    if (routed)
        acquire_conn(s, 0);
}

/* Waits for the client's next bytes. Listeners delay their ACKs (TCP_QUICKACK off) so that the
 * response carries them; but a client with Nagle's algorithm on holds the rest of a request until
 * its first part is acknowledged, so in the middle of a request the ACK goes out now rather than
 * when the delayed-ACK timer fires (40 ms or more). Once per request. */
static void wait_for_client(tt_session_t *s, int mid_request)
{
    s->want_client_in = 1;
    if (mid_request && !s->quickack_set) {
        s->quickack_set = 1;
        /* A failure only leaves the ACK to the kernel's timer: nothing to handle. */
        setsockopt(s->io.fd, IPPROTO_TCP, TCP_QUICKACK, &(int){1}, sizeof(int));
    }
}

/* Reads and parses a request head. Returns 1 if the state moved on. */
static int step_head(tt_session_t *s)
{
    tt_worker_t *w = s->worker;
    const tt_conf_t *conf = w->conf;
    size_t max_head = (size_t)conf->max_head_size;
    if (s->cin == NULL)
        s->cin = tt_buf_acquire(&w->bufs);
    if (s->head == NULL) {
        s->head = tt_http_head_acquire(&w->heads);
        tt_http_reader_init(&s->req, HTTP_REQUEST);
        tt_http_reader_begin_head(&s->req, s->head, 0);
        tt_buf_compact(s->cin); /* heads are parsed from offset 0 */
        s->head_parsed = 0;
    }
    for (;;) {
        if (s->head_parsed < s->cin->wpos) {
            switch (tt_http_reader_head(&s->req, s->cin, &s->head_parsed, max_head)) {
            case TT_HTTP_HEAD_DONE:
                start_request(s);
                return 1;
            case TT_HTTP_ERROR:
                reply_error(s, 400, TT_CLOSE_ERROR, "malformed request: %s",
                            tt_http_reader_error(&s->req));
                return 1;
            case TT_HTTP_HEAD_TOO_LARGE:
                reply_error(s, 431, TT_CLOSE_ERROR,
                            "request head larger than max_head_size (%zu bytes) or with too many "
                            "header fields",
                            max_head);
                return 1;
            default:
                break;
            }
        }
        if (w->draining && s->cin->wpos == 0) {
            session_close(s, TT_CLOSE_SHUTDOWN);
            return 0;
        }
        if (tt_buf_room(s->cin) == 0 && tt_buf_reserve(s->cin, TT_BUF_SIZE, max_head) < 0) {
            reply_error(s, 431, TT_CLOSE_ERROR,
                        "request head larger than max_head_size (%zu bytes)", max_head);
            return 1;
        }
        if (s->client_eof) { /* closed after its last (pipelined) request */
            session_close(s, TT_CLOSE_ERROR);
            return 0;
        }
        if (!s->client_readable) {
            wait_for_client(s, s->cin->wpos > 0);
            return 0;
        }
        size_t before = s->cin->wpos;
        ssize_t n = tt_buf_fill(s->cin, s->io.fd, &s->client_readable);
        if (n > 0) {
            if (before == 0)
                arm_timer(s, conf->client_header_timeout);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_for_client(s, s->cin->wpos > 0);
            return 0;
        }
        /* EOF or error: a client closing between requests is ordinary. */
        session_close(s, TT_CLOSE_ERROR);
        return 0;
    }
}

/* ---- relaying ----------------------------------------------------------------------------------
 */

/* Handles a failed upstream connection before or while the request is sent. A request that met a
 * stale reused connection before any response byte is sent again once on a fresh connection when
 * that is safe; anything else gets 502. */
static void upstream_failed(tt_session_t *s, tt_close_reason_t reason, const char *why)
{
    tt_upconn_t *c = s->conn;
    const tt_upstream_conf_t *conf = s->up->conf;
    if (!s->resp_started && c != NULL && tt_conn_reused(c)) {
        tt_upstream_learn_idle_close(s->up, c->leased_at - c->idle_since);
        if (s->retryable && !s->retried) {
            tt_debug("upstream %s: connection %llu %s before responding; retrying on a fresh "
                     "connection",
                     conf->name, (unsigned long long)c->id, why);
            drop_conn(s, reason);
            tt_worker_pool(s->worker, s->up)->stats.retries++;
            s->retried = 1;
            s->uout_sent = 0;
            acquire_conn(s, TT_ACQUIRE_FRESH);
            return;
        }
    }
    if (s->resp_head_done) {
        session_close(s, reason);
        return;
    }
    if (!s->retryable && tt_conn_reused(c) && !s->resp_started)
        reply_error(s, 502, reason,
                    "upstream %s (%s): connection %s before responding; not retried because "
                    "%s %s",
                    conf->name, s->up->addr_str, why,
                    llhttp_method_name((llhttp_method_t)s->method),
                    s->retaining ? "is not idempotent"
                                 : "is not idempotent or its body exceeds retry_buffer");
    else
        reply_error(s, 502, reason, "upstream %s (%s): connection %s", conf->name, s->up->addr_str,
                    why);
}

/* Words for a failed upstream read or write, as in "connection %s before responding". */
static const char *io_why(tt_session_t *s, int err, char *buf, size_t len)
{
    const char *tls = tt_conn_tls_failure(s->conn, err, buf, len);
    if (tls != NULL)
        return tls;
    return err == ECONNRESET ? "reset" : err == EPIPE ? "closed" : strerror(err);
}

/* Writes request bytes to the upstream. Returns the bytes written; 0 when the socket is full
 * (write interest is then wanted); -1 when the connection failed, after upstream_failed() has
 * decided between a retry and an error response. */
static ssize_t send_upstream(tt_session_t *s, const char *p, size_t len)
{
    ssize_t n = tt_conn_send(s->conn, p, len);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s->want_up_out = 1;
        return 0;
    }
    char why[256];
    upstream_failed(s, TT_CLOSE_ERROR, io_why(s, errno, why, sizeof(why)));
    return -1;
}

/* Sends the request head and body. Returns 1 on progress, 0 when waiting, -1 if the exchange
 * ended. */
static int step_request(tt_session_t *s)
{
    int moved = 0;
    for (;;) {
        if (s->uout_sent < s->uout->wpos) {
            ssize_t n =
                send_upstream(s, s->uout->data + s->uout_sent, s->uout->wpos - s->uout_sent);
            if (n <= 0)
                return n < 0 ? -1 : moved;
            s->uout_sent += (size_t)n;
            moved = 1;
            continue;
        }
        if (!s->retryable && s->uout->wpos > 0) { /* nothing will be sent twice: drop it */
            s->uout->rpos = s->uout->wpos = 0;
            s->uout_sent = 0;
        }
        if (s->req_pending > 0) {
            if (s->retaining) {
                if (s->retained + s->req_pending <= (size_t)s->up->conf->retry_buffer) {
                    tt_buf_append(s->uout, tt_buf_rptr(s->cin), s->req_pending);
                    s->retained += s->req_pending;
                    tt_buf_consume(s->cin, s->req_pending);
                    s->req_pending = 0;
                    continue;
                }
                s->retaining = 0;
                s->retryable = 0;
                continue; /* flush what was kept, then stream the rest directly */
            }
            ssize_t n = send_upstream(s, tt_buf_rptr(s->cin), s->req_pending);
            if (n <= 0)
                return n < 0 ? -1 : moved;
            tt_buf_consume(s->cin, (size_t)n);
            s->req_pending -= (size_t)n;
            moved = 1;
            continue;
        }
        if (s->req_read_done) {
            s->req_sent = 1;
            if (!s->resp_head_done)
                arm_timer(s, s->up->conf->response_timeout);
            return 1;
        }
        size_t avail = tt_buf_len(s->cin);
        if (avail > 0) {
            size_t consumed;
            tt_http_status_t st =
                tt_http_reader_body(&s->req, tt_buf_rptr(s->cin), avail, &consumed);
            if (st == TT_HTTP_ERROR) {
                reply_error(s, 400, TT_CLOSE_REQUEST_PARTIAL, "malformed request body: %s",
                            tt_http_reader_error(&s->req));
                return -1;
            }
            s->req_pending = consumed;
            if (st == TT_HTTP_MESSAGE_DONE)
                s->req_read_done = 1;
            moved = 1;
            continue;
        }
        if (s->client_eof) {
            session_close(s, TT_CLOSE_REQUEST_PARTIAL);
            return -1;
        }
        if (!s->client_readable) {
            wait_for_client(s, 1);
            return moved;
        }
        ssize_t n = tt_buf_fill(s->cin, s->io.fd, &s->client_readable);
        if (n > 0) {
            arm_timer(s, s->worker->conf->client_idle_timeout);
            moved = 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_for_client(s, 1);
            return moved;
        }
        s->client_eof = 1;
    }
}

static void on_final_response_head(tt_session_t *s, tt_http_head_t *h, const char *base)
{
    tt_worker_t *w = s->worker;
    const tt_http_header_t *ka = tt_http_head_find(h, base, "keep-alive");
    if (ka != NULL)
        tt_upstream_learn_hint(s->up, tt_http_keepalive_timeout(base + ka->value, ka->value_len));
    int needs_eof = tt_http_reader_needs_eof(&s->resp);
    int dechunk = s->http10 && h->chunked;
    s->ends_at_close = needs_eof || dechunk;
    s->resp_keepalive = h->keep_alive && !needs_eof;
    s->close_after =
        !s->client_keepalive || needs_eof || dechunk || w->draining || !s->req_read_done;
    tt_http_response_out_t out = {
        .close = s->close_after,
        .keep_alive_10 = s->http10 && !s->close_after,
        .dechunk = dechunk,
    };
    s->status = h->status;
    tt_http_write_response_head(cout_of(s), h, base, &out);
    if (dechunk)
        tt_http_reader_decode_into(&s->resp, s->cout);
}

/* Parses a response head in conn->in. Returns 1 if it completed, 0 if more bytes are needed,
 * -1 if the exchange ended. */
static int parse_response_head(tt_session_t *s)
{
    tt_upconn_t *c = s->conn;
    tt_worker_t *w = s->worker;
    if (s->head == NULL) {
        s->head = tt_http_head_acquire(&w->heads);
        tt_http_reader_begin_head(&s->resp, s->head, s->method == HTTP_HEAD);
        tt_buf_compact(c->in);
        s->head_parsed = 0;
    }
    tt_http_status_t st =
        tt_http_reader_head(&s->resp, c->in, &s->head_parsed, (size_t)w->conf->max_head_size);
    if (st == TT_HTTP_AGAIN)
        return 0;
    if (st != TT_HTTP_HEAD_DONE) {
        reply_error(s, 502, TT_CLOSE_ERROR, "upstream %s sent an invalid response head: %s",
                    s->up->conf->name,
                    st == TT_HTTP_ERROR ? tt_http_reader_error(&s->resp) : "too large");
        return -1;
    }
    tt_http_head_t *h = s->head;
    const char *base = c->in->data;
    if (h->status >= 100 && h->status < 200 && !(h->status == 101 && s->upgrade)) {
        /* Interim response: pass it on to HTTP/1.1 clients, then read the final one. */
        if (!s->http10) {
            tt_http_response_out_t out = {0};
            tt_http_write_response_head(cout_of(s), h, base, &out);
        }
        tt_buf_consume(c->in, h->head_len);
        tt_http_head_release(&w->heads, s->head);
        s->head = NULL;
        return 1;
    }
    if (h->status == 101 && !s->req_sent) {
        /* The tunnel would interleave its bytes with the rest of the request (and over TLS
         * break OpenSSL's rule that a pending write is retried with the same bytes). */
        reply_error(s, 502, TT_CLOSE_ERROR,
                    "upstream %s switched protocols before the request was sent whole",
                    s->up->conf->name);
        return -1;
    }
    if (h->status == 101) {
        tt_http_response_out_t out = {.tunnel = 1};
        s->status = 101;
        tt_http_write_response_head(cout_of(s), h, base, &out);
        s->state = S_TUNNEL;
    } else {
        on_final_response_head(s, h, base);
    }
    tt_buf_consume(c->in, h->head_len);
    tt_http_head_release(&w->heads, s->head);
    s->head = NULL;
    s->resp_head_done = 1;
    tt_loop_timer_stop(loop_of(s), &s->timer);
    if (s->state != S_TUNNEL && tt_http_reader_message_done(&s->resp))
        s->resp_done = 1;
    return 1;
}

static void finish_exchange(tt_session_t *s)
{
    tt_close_reason_t verdict = !s->req_sent         ? TT_CLOSE_REQUEST_PARTIAL
                                : !s->resp_keepalive ? TT_CLOSE_NOT_KEEPALIVE
                                                     : TT_REUSE_OK;
    end_request(s);
    drop_conn(s, verdict);
    /* Body bytes read but never sent (the upstream answered early) must not be parsed as the
     * next request: this client connection ends with its response. */
    if (s->close_after || s->client_gone || s->req_pending > 0) {
        session_close(s, TT_CLOSE_ERROR);
        return;
    }
    begin_request(s);
}

/* Whether conn->in holds response bytes not yet parsed. */
static int response_parseable(const tt_session_t *s)
{
    if (s->resp_done || s->state == S_TUNNEL)
        return 0;
    const tt_buf_t *in = s->conn->in;
    if (s->resp_head_done)
        return tt_buf_len(in) > s->resp_pending;
    return tt_buf_len(in) > 0 && (s->head == NULL || s->head_parsed < in->wpos);
}

/* Parses the response body bytes read so far: they stay in conn->in to be relayed raw, or for an
 * HTTP/1.0 client their de-chunked copy goes to cout. Returns 1, or -1 if the exchange ended. */
static int parse_response_body(tt_session_t *s)
{
    tt_buf_t *in = s->conn->in;
    size_t consumed;
    tt_http_status_t st = tt_http_reader_body(&s->resp, tt_buf_rptr(in) + s->resp_pending,
                                              tt_buf_len(in) - s->resp_pending, &consumed);
    if (st == TT_HTTP_ERROR) {
        tt_debug("upstream %s: invalid response body: %s", s->up->conf->name,
                 tt_http_reader_error(&s->resp));
        session_close(s, TT_CLOSE_ERROR);
        return -1;
    }
    if (tt_http_reader_decoding(&s->resp))
        tt_buf_consume(in, consumed);
    else
        s->resp_pending += consumed;
    if (st == TT_HTTP_MESSAGE_DONE)
        s->resp_done = 1;
    return 1;
}

/* Reads the response and relays it. Returns 1 on progress, 0 when waiting, -1 if the exchange
 * ended (or moved to another state). */
static int step_response(tt_session_t *s)
{
    tt_upconn_t *c = s->conn;
    int moved = 0;
    for (;;) {
        /* Parse everything already read before writing, so the head and the body it arrived
         * with leave in one writev. */
        if (!response_parseable(s) && client_output_pending(s)) {
            int r = flush_client(s);
            if (r < 0) {
                session_close(s, TT_CLOSE_RESPONSE_PARTIAL);
                return -1;
            }
            if (r == 0)
                return moved; /* the client is slow: stop reading the upstream */
            moved = 1;
        }
        if (s->resp_done) {
            finish_exchange(s);
            return -1;
        }
        if (s->state == S_TUNNEL)
            return 1;
        if (response_parseable(s)) {
            int r = s->resp_head_done ? parse_response_body(s) : parse_response_head(s);
            if (r < 0)
                return -1;
            if (r > 0) {
                moved = 1;
                continue;
            }
        }
        if (tt_buf_room(c->in) == 0) {
            if (s->resp_head_done || s->resp_pending > 0)
                tt_buf_compact(c->in);
            else if (tt_buf_reserve(c->in, TT_BUF_SIZE, (size_t)s->worker->conf->max_head_size) <
                     0) {
                reply_error(s, 502, TT_CLOSE_ERROR,
                            "upstream %s sent a response head over %lld bytes", s->up->conf->name,
                            (long long)s->worker->conf->max_head_size);
                return -1;
            }
            if (tt_buf_room(c->in) == 0)
                return moved;
        }
        if (!s->up_readable) {
            s->want_up_in = 1;
            return moved;
        }
        ssize_t n = tt_conn_read(c, c->in, &s->up_readable);
        if (n > 0) {
            s->resp_started = 1;
            moved = 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s->want_up_in = 1;
            return moved;
        }
        int err = n < 0 ? errno : 0;
        if (!s->resp_started) {
            char why[256];
            upstream_failed(s, n == 0 ? TT_CLOSE_PEER_CLOSED : TT_CLOSE_ERROR,
                            n == 0 ? "closed" : io_why(s, err, why, sizeof(why)));
            return -1;
        }
        /* Only an orderly end completes a body delimited by the close: a reset, or over TLS an
         * end without close_notify, may have cut it. */
        if (n == 0 && s->resp_head_done && tt_http_reader_eof(&s->resp) == TT_HTTP_MESSAGE_DONE) {
            s->resp_done = 1; /* close-delimited body */
            s->resp_keepalive = 0;
            continue;
        }
        if (!s->resp_head_done) {
            reply_error(s, 502, TT_CLOSE_RESPONSE_PARTIAL,
                        "upstream %s closed the connection in the middle of the response head",
                        s->up->conf->name);
            return -1;
        }
        /* Truncated body: the client must see the connection end, never a complete-looking
         * response. */
        flush_client(s);
        session_close(s, TT_CLOSE_RESPONSE_PARTIAL);
        return -1;
    }
}

/* Once the request is read, the client stays readable while the response is relayed: what it
 * sends next (a pipelined request) waits in cin and its EOF or reset is noticed, and its epoll
 * interest never has to change. Returns 1 on data, 0 when waiting, -1 if the client is gone. */
static int read_ahead(tt_session_t *s)
{
    if (s->client_eof)
        return 0;
    if (tt_buf_room(s->cin) == 0)
        tt_buf_compact(s->cin);
    if (tt_buf_room(s->cin) == 0)
        return 0; /* full: the client waits until this response is done */
    s->want_client_in = 1;
    if (!s->client_readable)
        return 0;
    ssize_t n = tt_buf_fill(s->cin, s->io.fd, &s->client_readable);
    if (n > 0)
        return 1;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n == 0) { /* a half-close still gets its response */
        s->client_eof = 1;
        s->want_client_in = 0;
        return 0;
    }
    s->client_gone = 1;
    return -1;
}

static void step_exchange(tt_session_t *s)
{
    for (;;) {
        int progress = 0;
        if (!s->req_sent) {
            int r = step_request(s);
            if (r < 0 || s->state != S_EXCHANGE)
                return;
            progress |= r;
        }
        if (s->req_read_done) {
            int r = read_ahead(s);
            if (r < 0) {
                session_close(s, s->resp_head_done ? TT_CLOSE_RESPONSE_PARTIAL
                                                   : TT_CLOSE_REQUEST_PARTIAL);
                return;
            }
            progress |= r;
        }
        int r = step_response(s);
        if (r < 0 || s->state != S_EXCHANGE)
            return;
        progress |= r;
        if (!progress)
            return;
        s->want_client_in = s->want_client_out = s->want_up_in = s->want_up_out = 0;
    }
}

/* ---- tunnel ------------------------------------------------------------------------------------
 */

/* The tunnel's two ends: the client's socket, or the upstream connection (maybe TLS). */
typedef enum { TO_CLIENT, TO_UPSTREAM } tunnel_end_t;

/* Moves bytes from src (already holding data) to one end. Returns 1 if src drained, 0 if that
 * end is full, -1 on error. */
static int tunnel_write(tt_session_t *s, tunnel_end_t end, tt_buf_t *src)
{
    while (tt_buf_len(src) > 0) {
        ssize_t n = end == TO_UPSTREAM
                        ? tt_conn_send(s->conn, tt_buf_rptr(src), tt_buf_len(src))
                        : send(s->io.fd, tt_buf_rptr(src), tt_buf_len(src), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        tt_buf_consume(src, (size_t)n);
    }
    return 1;
}

/* Reads from one end into dst. Returns 1 on data, 0 when nothing is ready, -1 on EOF or
 * error. */
static int tunnel_read(tt_session_t *s, tunnel_end_t end, tt_buf_t *dst)
{
    if (tt_buf_room(dst) == 0)
        tt_buf_compact(dst);
    if (tt_buf_room(dst) == 0)
        return 0;
    uint8_t readable = 1;
    ssize_t n =
        end == TO_UPSTREAM ? tt_conn_read(s->conn, dst, &readable) : tt_buf_recv(dst, s->io.fd);
    if (n > 0)
        return 1;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
}

static void step_tunnel(tt_session_t *s)
{
    tt_upconn_t *c = s->conn;
    for (int progress = 1; progress;) {
        progress = 0;
        s->want_client_in = s->want_client_out = s->want_up_in = s->want_up_out = 0;
        int r = flush_client(s); /* the 101 head */
        if (r < 0)
            goto done;
        if (r > 0) {
            r = tunnel_write(s, TO_CLIENT, c->in);
            if (r < 0)
                goto done;
            if (r == 0)
                s->want_client_out = 1;
        } else {
            s->want_client_out = 1;
        }
        r = tunnel_write(s, TO_UPSTREAM, s->cin);
        if (r < 0)
            goto done;
        if (r == 0)
            s->want_up_out = 1;
        if (tt_buf_len(s->cin) == 0) {
            r = tunnel_read(s, TO_CLIENT, s->cin);
            if (r < 0)
                goto done;
            progress |= r;
            s->want_client_in = r == 0;
        }
        if (tt_buf_len(c->in) == 0 && !client_output_pending(s)) {
            r = tunnel_read(s, TO_UPSTREAM, c->in);
            if (r < 0)
                goto done;
            progress |= r;
            s->want_up_in = r == 0;
        }
    }
    return;
done:
    /* Either side ending ends the tunnel; what was read is delivered first where possible. */
    flush_client(s);
    tunnel_write(s, TO_CLIENT, c->in);
    tunnel_write(s, TO_UPSTREAM, s->cin);
    session_close(s, TT_CLOSE_UPGRADED);
}

/* ---- driving --------------------------------------------------------------------------------- */

static void apply_interest(tt_session_t *s)
{
    if (s->state == S_CLOSED)
        return;
    uint32_t ev = (s->want_client_in ? EPOLLIN : 0) | (s->want_client_out ? EPOLLOUT : 0);
    tt_io_set_events(loop_of(s), &s->io, ev);
    /* EPOLLIN | EPOLLRDHUP is also the idle interest: leasing and releasing change nothing. */
    if (s->conn != NULL)
        tt_conn_set_events(s->conn, (s->want_up_in ? EPOLLIN | EPOLLRDHUP : 0) |
                                        (s->want_up_out ? EPOLLOUT : 0));
}

static void session_run(tt_session_t *s)
{
    for (;;) {
        s->want_client_in = s->want_client_out = s->want_up_in = s->want_up_out = 0;
        switch (s->state) {
        case S_HEAD:
            if (step_head(s))
                continue;
            break;
        case S_WAIT_CONN:
            break;
        case S_EXCHANGE: {
            step_exchange(s);
            if (s->state == S_HEAD || s->state == S_TUNNEL || s->state == S_FLUSH)
                continue;
            break;
        }
        case S_TUNNEL:
            step_tunnel(s);
            break;
        case S_FLUSH: {
            int r = flush_client(s);
            if (r < 0 || (r > 0 && s->close_after)) {
                session_close(s, TT_CLOSE_ERROR);
                return;
            }
            if (r > 0) {
                begin_request(s);
                continue;
            }
            break;
        }
        case S_CLOSED:
            return;
        }
        break;
    }
    apply_interest(s);
}

static void client_io_cb(tt_io_t *io, uint32_t events)
{
    tt_session_t *s = tt_container_of(io, tt_session_t, io);
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->client_readable = 1;
    if ((events & (EPOLLERR | EPOLLHUP)) && !(io->events & EPOLLIN)) {
        /* The client is gone while tether was not reading from it: nothing can reach it. */
        s->client_gone = 1;
        session_close(s, s->resp_head_done ? TT_CLOSE_RESPONSE_PARTIAL : TT_CLOSE_REQUEST_PARTIAL);
        return;
    }
    session_run(s);
}

/* The upstream connection failed after the whole response was read, while a slow client still
 * receives it: the response bytes move to cout and the connection is closed (it cannot be reused
 * after a reset), so the client still gets every byte. */
static void keep_response_drop_conn(tt_session_t *s)
{
    tt_buf_append(cout_of(s), tt_buf_rptr(s->conn->in), s->resp_pending);
    tt_buf_consume(s->conn->in, s->resp_pending);
    s->resp_pending = 0;
    s->req_sent = 1; /* nothing more can be sent; req_pending still ends the client connection */
    drop_conn(s, TT_CLOSE_ERROR);
}

static void upstream_handler(tt_upconn_t *conn, uint32_t events)
{
    tt_session_t *s = conn->owner;
    const tt_upstream_conf_t *conf = s->up->conf;
    if (events & TT_CONN_EV_LEASE_WARN) {
        tt_warn("upstream %s: connection %llu to %s leased for over %lldms by client %s "
                "(a client not reading its response?)",
                conf->name, (unsigned long long)conn->id, s->up->addr_str,
                (long long)conf->lease_warn, s->peer);
        tt_worker_pool(s->worker, s->up)->stats.lease_warnings++;
        return;
    }
    if (events & TT_CONN_EV_LEASE_TIMEOUT) {
        tt_warn("upstream %s: reclaiming connection %llu leased for over %lldms by client %s",
                conf->name, (unsigned long long)conn->id, (long long)conf->lease_timeout, s->peer);
        session_close(s, TT_CLOSE_LEASE_TIMEOUT);
        return;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ||
        ((events & EPOLLOUT) && conn->tls_read_wants_write))
        s->up_readable = 1;
    if ((events & (EPOLLERR | EPOLLHUP)) && !(conn->io.events & EPOLLIN)) {
        if (s->resp_done) { /* only the client is slow: the response is all here */
            keep_response_drop_conn(s);
            session_run(s);
            return;
        }
        upstream_failed(s, TT_CLOSE_ERROR, "failed");
        session_run(s);
        return;
    }
    session_run(s);
}

static void session_timer_cb(tt_timer_t *t)
{
    tt_session_t *s = tt_container_of(t, tt_session_t, timer);
    switch (s->state) {
    case S_FLUSH:
        if (!client_stalled(s) && tt_timer_armed(&s->timer))
            return;
        session_close(s, TT_CLOSE_ERROR);
        return;
    case S_HEAD:
        if (s->cin != NULL && s->cin->wpos > 0) {
            reply_error(s, 408, TT_CLOSE_ERROR, "request head not received within %lldms",
                        (long long)s->worker->conf->client_header_timeout);
            session_run(s);
        } else {
            session_close(s, TT_CLOSE_ERROR);
        }
        return;
    case S_EXCHANGE:
        if (s->resp_head_done && client_stalled(s)) {
            tt_debug("client %s: took no response byte for %lldms; closing", s->peer,
                     (long long)s->worker->conf->client_idle_timeout);
            session_close(s, TT_CLOSE_RESPONSE_PARTIAL);
            return;
        }
        if (s->resp_head_done && (s->req_sent || tt_timer_armed(&s->timer)))
            return; /* the client reads, or is not behind: the upstream sets the pace */
        if (!s->req_sent) {
            reply_error(s, 408, TT_CLOSE_REQUEST_PARTIAL, "request body stalled for %lldms",
                        (long long)s->worker->conf->client_idle_timeout);
        } else {
            reply_error(s, 504, TT_CLOSE_RESPONSE_TIMEOUT,
                        "upstream %s (%s) did not respond within %lldms", s->up->conf->name,
                        s->up->addr_str, (long long)s->up->conf->response_timeout);
        }
        session_run(s);
        return;
    default:
        session_close(s, TT_CLOSE_ERROR);
        return;
    }
}

void tt_session_start(tt_worker_t *w, int fd, const tt_addr_t *peer, tt_upstream_t *upstream)
{
    tt_session_t *s = tt_calloc(1, sizeof(*s));
    s->worker = w;
    s->listener_upstream = upstream;
    tt_addr_format(peer, s->peer);
    tt_timer_init(&s->timer, session_timer_cb);
    tt_list_init(&s->link);
    tt_list_init(&s->waiter._link);
    if (tt_io_start(w->loop, &s->io, fd, EPOLLIN, client_io_cb) < 0) {
        close(fd);
        free(s);
        return;
    }
    tt_list_push_back(&w->sessions, &s->link);
    w->nsessions++;
    s->client_readable = 1; /* the request usually arrives with the connection: try at once */
    begin_request(s);
    /* The first request must start within the header timeout; later ones within the idle one. */
    arm_timer(s, w->conf->client_header_timeout);
    session_run(s);
}

static void maybe_finish_drain(tt_worker_t *w)
{
    if (w->draining && w->nsessions == 0)
        tt_loop_stop(w->loop);
}

void tt_session_drain(tt_worker_t *w)
{
    tt_list_t *l, *tmp;
    tt_list_foreach_safe(l, tmp, &w->sessions)
    {
        tt_session_t *s = tt_container_of(l, tt_session_t, link);
        if (s->state == S_HEAD && (s->cin == NULL || s->cin->wpos == 0))
            session_close(s, TT_CLOSE_SHUTDOWN);
        else
            s->close_after = 1;
    }
    maybe_finish_drain(w);
}

void tt_session_close_all(tt_worker_t *w)
{
    while (!tt_list_empty(&w->sessions))
        session_close(tt_container_of(tt_list_first(&w->sessions), tt_session_t, link),
                      TT_CLOSE_SHUTDOWN);
}
