/* The request side: reading and parsing a request head, refusing what must not reach an
 * upstream, routing it (dedicated port or Host) and starting the exchange. */
#include "proxy/session_int.h"

#include "core/invariant.h"
#include "core/log.h"
#include "http/rewrite.h"
#include "proxy/route.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

static int method_is_idempotent(uint8_t m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE ||
           m == HTTP_PUT || m == HTTP_DELETE;
}

void tt_session_begin_request(tt_session_t *s)
{
    TT_ASSERT(s->conn == NULL && !s->in_request && s->state != S_CLOSED);
    s->state = S_HEAD;
    s->up = NULL;
    s->endpoint[0] = '\0';
    s->uout_sent = s->req_pending = s->resp_pending = s->retained = 0;
    s->idempotent = s->retryable = s->retaining = s->retried = 0;
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
    tt_session_arm_timer(s, s->worker->conf->client_idle_timeout);
}

/* Chooses the upstream and the target and Host to send. Returns 0, or -1 after replying. */
static int route_request(tt_session_t *s, const tt_http_head_t *h, const char *base,
                         tt_http_request_out_t *out)
{
    tt_http_target_t t;
    const char *bad = tt_http_request_target(h, base, &t);
    if (bad != NULL) {
        tt_session_reply_error(s, 400, TT_CLOSE_ERROR, "http_request_error", "%s", bad);
        return -1;
    }
    out->target = t.target;
    if (s->listener_upstream != NULL) {
        s->up = s->listener_upstream;
        /* An HTTP/1.0 request may come without Host; the upstream gets HTTP/1.1, which must
         * have one (RFC 9112 3.2). */
        if (!s->up->conf->preserve_host || t.host.len == 0)
            out->host = (tt_span_t){s->up->host_header, strlen(s->up->host_header)};
        else if (t.absolute)
            out->host = t.host;
        return 0;
    }
    if (t.host.len == 0) {
        tt_session_reply_error(s, 400, TT_CLOSE_ERROR, "http_request_error", "missing Host header");
        return -1;
    }
    s->up = tt_route_host(s->worker->upstreams, s->worker->nupstreams, t.host.str, t.host.len);
    if (s->up == NULL) {
        tt_session_reply_error(
            s, 403, TT_CLOSE_ERROR, "destination_not_found",
            "no upstream is configured for host %.*s (tether is not an open proxy)",
            (int)TT_MIN(t.host.len, 200), t.host.str);
        return -1;
    }
    if (t.absolute)
        out->host = t.host;
    return 0;
}

/* Parses the body bytes that arrived with the head before an upstream connection is asked for, so
 * that a body whose framing is broken there (a bad chunk size, a folded trailer) is refused
 * before any of the request reaches an upstream. They stay at the front of cin (req_pending) to
 * be sent as usual. Returns 0, or -1 after replying. */
static int check_body_read(tt_session_t *s)
{
    size_t avail = tt_buf_len(s->cin), consumed;
    if (s->req_read_done || avail == 0)
        return 0;
    tt_http_status_t st = tt_http_reader_body(&s->req, tt_buf_rptr(s->cin), avail, &consumed);
    if (st == TT_HTTP_ERROR) {
        tt_session_reply_error(s, 400, TT_CLOSE_ERROR, "http_request_error",
                               "malformed request body: %s", tt_http_reader_error(&s->req));
        return -1;
    }
    s->req_pending = consumed;
    s->req_read_done = st == TT_HTTP_MESSAGE_DONE;
    return 0;
}

/* A buffered body must be whole by body_deadline and may pause for client_idle_timeout at most,
 * as a streamed one may. */
static void arm_body_timer(tt_session_t *s)
{
    tt_msec_t now = tt_loop_now(tt_session_loop(s));
    int64_t left = s->body_deadline > now ? (int64_t)(s->body_deadline - now) : 0;
    tt_session_arm_timer(s, TT_MIN(left, s->worker->conf->client_idle_timeout));
}

/* Acts on a complete request head: refuses it, or routes it and asks the pool for a connection.
 * Either way the head's bytes leave cin and the head returns to the worker. */
static void start_request(tt_session_t *s)
{
    tt_http_head_t *h = s->head;
    const char *base = s->cin->data;
    tt_loop_timer_stop(tt_session_loop(s), &s->timer);
    s->in_request = 1;
    s->started_us = tt_clock_monotonic_us();
    s->status = 0;
    s->generated = 0;
    s->bytes_out = 0;
    s->reused = 0;
    s->path_len = (uint8_t)TT_MIN(h->target_len, sizeof(s->path));
    memcpy(s->path, base + h->target, s->path_len);
    tt_span_t target = {base + h->target, h->target_len}, authority, path;
    const tt_http_header_t *hh = tt_http_head_find(h, base, "host");
    if (tt_http_split_absolute(target, &authority, &path) < 0)
        authority = hh != NULL ? (tt_span_t){base + hh->value, hh->value_len} : (tt_span_t){"", 0};
    s->host_len = (uint8_t)TT_MIN(authority.len, sizeof(s->host));
    memcpy(s->host, authority.str, s->host_len);
    s->method = h->method;
    s->http10 = h->minor == 0;
    s->client_keepalive = h->keep_alive;
    s->req_read_done = (uint8_t)tt_http_reader_message_done(&s->req);
    tt_http_request_out_t out = {.tunnel = h->upgrade};
    int routed = 0;
    if (h->method == HTTP_CONNECT)
        tt_session_reply_error(
            s, 405, TT_CLOSE_ERROR, "http_request_denied",
            "CONNECT is not supported: tether pools plain HTTP/1.1 connections to its "
            "configured upstreams; send plain http:// requests");
    else if (h->chunked && !tt_http_transfer_coding_is_chunked(h, base))
        /* RFC 9112 6.1: a coding tether does not implement (stacked under chunked); the
         * upstream would have to agree on every layer of it. */
        tt_session_reply_error(s, 501, TT_CLOSE_ERROR, "http_request_error",
                               "transfer codings other than chunked are not supported");
    else
        routed = route_request(s, h, base, &out) == 0;
    if (routed) {
        s->upgrade = h->upgrade;
        int has_body = h->chunked || (h->has_length && h->content_length > 0);
        s->idempotent = method_is_idempotent(h->method) ||
                        tt_http_head_find(h, base, "idempotency-key") != NULL;
        int64_t limit = s->up->conf->retry_buffer;
        s->retryable = s->idempotent && !s->upgrade &&
                       (!has_body || h->chunked || (int64_t)h->content_length <= limit);
        s->retaining = s->retryable && has_body;
        s->uout = tt_buf_acquire(&s->worker->bufs);
        tt_http_write_request_head(s->uout, h, base, &out);
    }
    int buffer = routed && s->worker->conf->request_buffer > 0 && !h->upgrade &&
                 (h->chunked || h->content_length <= (uint64_t)s->worker->conf->request_buffer) &&
                 tt_http_head_find(h, base, "expect") == NULL; /* it waits for a 100 first */
    tt_buf_consume(s->cin, h->head_len);
    tt_http_head_release(&s->worker->heads, s->head);
    s->head = NULL;
    if (!routed || check_body_read(s) < 0)
        return;
    if (buffer && !s->req_read_done) {
        s->state = S_BODY;
        s->body_deadline =
            tt_loop_now(tt_session_loop(s)) + (tt_msec_t)s->worker->conf->client_body_timeout;
        arm_body_timer(s);
        return;
    }
    tt_session_acquire_conn(s, 0);
}

/* Reads a request body into cin before an upstream connection is asked for, as nginx's request
 * buffering does: a client that uploads slowly then holds its own connection, not one of the
 * pool's. A chunked body that outgrows request_buffer streams from there. */
tt_step_t tt_session_step_body(tt_session_t *s)
{
    size_t limit = (size_t)s->worker->conf->request_buffer;
    for (;;) {
        size_t unparsed = tt_buf_len(s->cin) - s->req_pending, consumed;
        if (unparsed > 0) {
            tt_http_status_t st = tt_http_reader_body(&s->req, tt_buf_rptr(s->cin) + s->req_pending,
                                                      unparsed, &consumed);
            if (st == TT_HTTP_ERROR) {
                tt_session_reply_error(s, 400, TT_CLOSE_ERROR, "http_request_error",
                                       "malformed request body: %s", tt_http_reader_error(&s->req));
                return TT_STEP_OK;
            }
            s->req_pending += consumed;
            s->req_read_done = st == TT_HTTP_MESSAGE_DONE;
        }
        if (s->req_read_done || s->req_pending >= limit ||
            tt_buf_reserve(s->cin, 4096, limit + TT_BUF_SIZE) < 0) {
            tt_loop_timer_stop(tt_session_loop(s), &s->timer);
            tt_session_acquire_conn(s, 0);
            return TT_STEP_OK;
        }
        if (s->client_eof) {
            tt_session_close(s, TT_CLOSE_REQUEST_PARTIAL);
            return TT_STEP_DECLINED;
        }
        if (!s->client_readable) {
            tt_session_wait_for_client(s, 1);
            return TT_STEP_AGAIN;
        }
        ssize_t n = tt_buf_fill(s->cin, s->io.fd, &s->client_readable);
        if (n > 0) {
            arm_body_timer(s);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            tt_session_wait_for_client(s, 1);
            return TT_STEP_AGAIN;
        }
        if (n == 0) {
            s->client_eof = 1;
            continue;
        }
        s->client_gone = 1;
        tt_session_close(s, TT_CLOSE_REQUEST_PARTIAL);
        return TT_STEP_DECLINED;
    }
}

/* Waits for the client's next bytes. Listeners delay their ACKs (TCP_QUICKACK off) so that the
 * response carries them; but a client with Nagle's algorithm on holds the rest of a request until
 * its first part is acknowledged, so in the middle of a request the ACK goes out now rather than
 * when the delayed-ACK timer fires (40 ms or more). Once per request. */
void tt_session_wait_for_client(tt_session_t *s, int mid_request)
{
    s->want_client_in = 1;
    if (mid_request && !s->quickack_set) {
        s->quickack_set = 1;
        /* A failure only leaves the ACK to the kernel's timer: nothing to handle. */
        setsockopt(s->io.fd, IPPROTO_TCP, TCP_QUICKACK, &(int){1}, sizeof(int));
    }
}

/* Reads and parses a request head. OK when the state moved on, AGAIN while waiting for the
 * client, ERROR when the session closed. */
tt_step_t tt_session_step_head(tt_session_t *s)
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
                return TT_STEP_OK;
            case TT_HTTP_ERROR:
                tt_session_reply_error(s, 400, TT_CLOSE_ERROR, "http_request_error",
                                       "malformed request: %s", tt_http_reader_error(&s->req));
                return TT_STEP_OK;
            case TT_HTTP_HEAD_TOO_LARGE:
                tt_session_reply_error(
                    s, 431, TT_CLOSE_ERROR, "http_request_error",
                    "request head larger than max_head_size (%zu bytes) or with too many "
                    "header fields",
                    max_head);
                return TT_STEP_OK;
            default:
                break;
            }
        }
        if (w->draining && s->cin->wpos == 0) {
            tt_session_close(s, TT_CLOSE_SHUTDOWN);
            return TT_STEP_ERROR;
        }
        if (tt_buf_room(s->cin) == 0 && tt_buf_reserve(s->cin, TT_BUF_SIZE, max_head) < 0) {
            tt_session_reply_error(s, 431, TT_CLOSE_ERROR, "http_request_error",
                                   "request head larger than max_head_size (%zu bytes)", max_head);
            return TT_STEP_OK;
        }
        if (s->client_eof) { /* closed after its last (pipelined) request */
            tt_session_close(s, TT_CLOSE_ERROR);
            return TT_STEP_ERROR;
        }
        if (!s->client_readable) {
            tt_session_wait_for_client(s, s->cin->wpos > 0);
            return TT_STEP_AGAIN;
        }
        size_t before = s->cin->wpos;
        ssize_t n = tt_buf_fill(s->cin, s->io.fd, &s->client_readable);
        if (n > 0) {
            if (before == 0)
                tt_session_arm_timer(s, conf->client_header_timeout);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            tt_session_wait_for_client(s, s->cin->wpos > 0);
            return TT_STEP_AGAIN;
        }
        /* EOF or error: a client closing between requests is ordinary. */
        tt_session_close(s, TT_CLOSE_ERROR);
        return TT_STEP_ERROR;
    }
}
