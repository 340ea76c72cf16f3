/* The exchange with the upstream: leasing a connection, sending the request (with the body kept
 * for a safe retry), reading and relaying the response, and what happens when the connection
 * fails: a retry on a fresh connection when that is safe, else an error response. */
#include "proxy/session_int.h"

#include "core/invariant.h"
#include "core/log.h"
#include "http/rewrite.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define TT_BODY_BUF_MAX (256 * 1024)
/* Body bytes still to come from which splicing them pays for its pipe (docs/internals/tuning.md
 * "bulk bodies"): a smaller body is a few buffered reads. */
#define TT_SPLICE_MIN (256 * 1024)

static void upstream_cb(tt_conn_t *conn, uint32_t events);
static void waiter_cb(tt_pool_waiter_t *w, tt_conn_t *conn, tt_pool_result_t result,
                      const tt_pool_error_t *err);

/* Ends the exchange's hold on its upstream connection: back to the pool when verdict allows. */
void tt_session_drop_conn(tt_session_t *s, tt_close_reason_t verdict)
{
    tt_pool_cancel(&s->waiter);
    tt_session_release_req_pipe(s);
    if (s->conn == NULL)
        return;
    tt_conn_t *c = s->conn;
    s->conn = NULL;
    if (verdict == TT_REUSE_OK)
        tt_pool_release(c, verdict);
    else
        tt_conn_close(c, verdict);
}

static void attach_conn(tt_session_t *s, tt_conn_t *conn)
{
    TT_ASSERT(s->conn == NULL && conn->state == TT_CONN_ACTIVE && s->uout != NULL);
    s->conn = conn;
    snprintf(s->endpoint, sizeof(s->endpoint), "%s", conn->ep->name);
    /* For the access log, as for requests_on_reused: served a request before this one (the lease
     * counted this one). A pre-warmed connection's first request is not a reuse. */
    s->reused = conn->requests > 1;
    s->uout_sent = 0;
    s->resp_pending = 0;
    s->resp_started = s->resp_head_done = s->resp_done = 0;
    s->req_sent = 0;
    tt_http_reader_init(&s->resp, HTTP_RESPONSE);
    s->head_parsed = 0;
    s->up_readable = 0; /* an idle connection had nothing to read, or it would be closed */
    s->up_acking = 0;
    s->timer_on_client = 0;
    tt_conn_set_handler(conn, upstream_cb, s, EPOLLIN | EPOLLRDHUP);
    /* Until the request is read whole, a client that stops sending holds an upstream
     * connection: the idle timeout bounds that. Then the response timeout takes over. */
    if (!s->req_read_done)
        tt_session_arm_timer(s, s->worker->conf->client_idle_timeout);
    else
        tt_loop_timer_stop(tt_session_loop(s), &s->timer);
    s->state = S_EXCHANGE;
}

/* The upstream has no endpoint at all (a name that has not resolved yet, or whose answer was
 * emptied with dns_empty = clear): fail at once, with no connect attempt and no queueing. */
static void reply_no_endpoints(tt_session_t *s)
{
    const tt_upstream_conf_t *conf = s->up->conf;
    if (conf->endpoints == NULL && conf->dns_refresh != 0)
        tt_session_reply_error(s, 503, TT_CLOSE_ERROR, "dns_error",
                               "upstream %s: no endpoints yet (%s has no address from DNS)",
                               conf->name, conf->host);
    else
        tt_session_reply_error(s, 503, TT_CLOSE_ERROR, "destination_not_found",
                               "upstream %s: no endpoints", conf->name);
}

/* Every endpoint is down or ejected: fail fast, and say why and when the next trial is due. The
 * access log names which of the two (Proxy-Status has one type for both). */
static void reply_breaker_open(tt_session_t *s)
{
    const tt_upstream_conf_t *conf = s->up->conf;
    const char *cause;
    int checks_failing;
    tt_msec_t ms = tt_pool_next_trial_ms(tt_worker_pool(s->worker, s->up), &cause, &checks_failing);
    if (checks_failing) {
        s->log_error = "endpoint_down";
        tt_session_reply_error(s, 503, TT_CLOSE_ERROR, "destination_unavailable",
                               "upstream %s: every endpoint is down or ejected (health checks "
                               "failing: %s); next check in %llums",
                               conf->name, conf->health_check, (unsigned long long)ms);
        return;
    }
    s->log_error = "breaker_open";
    tt_session_reply_error(s, 503, TT_CLOSE_ERROR, "destination_unavailable",
                           "upstream %s: circuit breaker open: every endpoint failed %lld "
                           "times in a row (last: %s); next trial in %llums",
                           conf->name, (long long)conf->breaker_failures, cause,
                           (unsigned long long)ms);
}

void tt_session_acquire_conn(tt_session_t *s, int flags)
{
    TT_ASSERT(s->up != NULL && s->conn == NULL && s->state != S_CLOSED);
    tt_pool_t *pool = tt_worker_pool(s->worker, s->up);
    const tt_upstream_conf_t *conf = s->up->conf;
    tt_conn_t *conn = NULL;
    s->waiter.cb = waiter_cb;
    switch (tt_pool_acquire(pool, &s->waiter, flags, &conn)) {
    case TT_POOL_OK:
        attach_conn(s, conn);
        return;
    case TT_POOL_WAIT:
        s->state = S_WAIT_CONN;
        return;
    case TT_POOL_QUEUE_FULL:
        tt_session_reply_error(
            s, 503, TT_CLOSE_ERROR, "connection_limit_reached",
            "upstream %s: %lld requests already waiting for a connection (max_queue)", conf->name,
            (long long)conf->max_queue);
        return;
    case TT_POOL_CONNECT_FAILED:
        tt_session_reply_error(s, 502, TT_CLOSE_ERROR, tt_proxy_status_for_errno(errno),
                               "upstream %s (%s): connect failed: %s", conf->name,
                               tt_session_endpoint(s), strerror(errno));
        return;
    case TT_POOL_NO_ENDPOINTS:
        reply_no_endpoints(s);
        return;
    case TT_POOL_BREAKER_OPEN:
        reply_breaker_open(s);
        return;
    case TT_POOL_SHUTDOWN:
    default:
        tt_session_reply_error(s, 503, TT_CLOSE_ERROR, "proxy_internal_response", "shutting down");
        return;
    }
}

static void upstream_cb(tt_conn_t *conn, uint32_t events);
static void waiter_cb(tt_pool_waiter_t *w, tt_conn_t *conn, tt_pool_result_t result,
                      const tt_pool_error_t *err)
{
    tt_session_t *s = tt_container_of(w, tt_session_t, waiter);
    TT_ASSERT(s->state == S_WAIT_CONN && s->conn == NULL);
    const tt_upstream_conf_t *conf = s->up->conf;
    if (err != NULL && err->endpoint != NULL)
        snprintf(s->endpoint, sizeof(s->endpoint), "%s", err->endpoint);
    switch (result) {
    case TT_POOL_OK:
        attach_conn(s, conn);
        break;
    case TT_POOL_QUEUE_TIMEOUT:
        tt_session_reply_error(s, 503, TT_CLOSE_ERROR, "connection_limit_reached",
                               "upstream %s: no connection available within queue_timeout (%lldms, "
                               "max_connections %lld)",
                               conf->name, (long long)conf->queue_timeout,
                               (long long)conf->max_connections);
        break;
    case TT_POOL_CONNECT_TIMEOUT:
        tt_session_reply_error(s, 504, TT_CLOSE_ERROR, "connection_timeout",
                               "upstream %s (%s): connect timed out after %lldms", conf->name,
                               tt_session_endpoint(s), (long long)conf->connect_timeout);
        break;
    case TT_POOL_CONNECT_FAILED:
        tt_session_reply_error(s, 502, TT_CLOSE_ERROR, tt_proxy_status_for_errno(err->errno_value),
                               "upstream %s (%s): connect failed: %s", conf->name,
                               tt_session_endpoint(s), strerror(err->errno_value));
        break;
    case TT_POOL_TLS_FAILED:
        tt_session_reply_error(s, 502, TT_CLOSE_ERROR, tt_proxy_status_for_tls(err->tls),
                               "upstream %s (%s): TLS handshake failed: %s (%s)", conf->name,
                               tt_session_endpoint(s), tt_tls_failure_phrase(err->tls),
                               err->detail);
        break;
    case TT_POOL_NO_ENDPOINTS:
        reply_no_endpoints(s);
        break;
    case TT_POOL_BREAKER_OPEN:
        reply_breaker_open(s);
        break;
    default:
        tt_session_reply_error(s, 503, TT_CLOSE_ERROR, "proxy_internal_response", "shutting down");
        break;
    }
    tt_session_run(s);
}

/* Handles a failed upstream connection before or while the request is sent. A request that met a
 * stale reused connection before any response byte is sent again once on a fresh connection when
 * that is safe; anything else gets 502. */
static void upstream_failed(tt_session_t *s, tt_close_reason_t reason, const char *why)
{
    tt_conn_t *c = s->conn;
    const tt_upstream_conf_t *conf = s->up->conf;
    int fresh = c != NULL && !tt_conn_reused(c);
    /* A fresh connection that fails before a response speaks against its endpoint; a reused one
     * may only have met the keep-alive race (the upstream closing it as it was reused). */
    if (!s->resp_started && fresh)
        tt_conn_report(c, TT_OUTCOME_RESET, "reset or closed before a response");
    else if (!s->resp_started && c != NULL)
        tt_upstream_learn_idle_close(s->up, c->leased_at - c->idle_since);
    /* Nothing of a response came: an idempotent request whose body was kept goes again, once,
     * on a fresh connection. When the connection was fresh too, its endpoint (not the
     * keep-alive race) is the likely cause: only another endpoint gets the retry. */
    if (!s->resp_started && c != NULL && s->retryable && !s->retried &&
        (!fresh || (c->ep != NULL &&
                    tt_pool_other_endpoint_usable(tt_worker_pool(s->worker, s->up), c->ep)))) {
        tt_debug("upstream %s: connection %llu %s before responding; retrying on a fresh "
                 "connection%s",
                 conf->name, (unsigned long long)c->id, why, fresh ? " elsewhere" : "");
        tt_pool_avoid(&s->waiter, fresh ? c->ep : NULL);
        tt_session_drop_conn(s, reason);
        tt_worker_pool(s->worker, s->up)->stats.retries++;
        s->retried = 1;
        s->uout_sent = 0;
        tt_session_acquire_conn(s, TT_ACQUIRE_FRESH | TT_ACQUIRE_ELSEWHERE);
        return;
    }
    if (s->resp_head_done) {
        tt_session_close(s, reason);
        return;
    }
    /* A TLS error on a read or write (a TLS 1.3 upstream refusing the client certificate after
     * the handshake) is the TLS layer's failure, and is logged as such, once per cause. */
    const char *perr = strncmp(why, TT_CONN_TLS_ERROR, strlen(TT_CONN_TLS_ERROR)) == 0
                           ? "tls_protocol_error"
                           : "connection_terminated";
    if (!s->retryable && tt_conn_reused(c) && !s->resp_started) {
        char because[96];
        if (!s->idempotent)
            snprintf(because, sizeof(because), "%s is not idempotent",
                     llhttp_method_name((llhttp_method_t)s->method));
        else if (s->upgrade)
            snprintf(because, sizeof(because), "it asks for a protocol upgrade");
        else
            snprintf(because, sizeof(because), "its body exceeds retry_buffer (%lld bytes)",
                     (long long)conf->retry_buffer);
        tt_session_reply_error(s, 502, reason, perr,
                               "upstream %s (%s): connection %s before responding; not retried "
                               "because %s",
                               conf->name, tt_session_endpoint(s), why, because);
    } else
        tt_session_reply_error(s, 502, reason, perr, "upstream %s (%s): connection %s", conf->name,
                               tt_session_endpoint(s), why);
}

/* Words for a failed upstream read or write, as in "connection %s before responding". */
static const char *io_why(tt_session_t *s, int err, char *buf, size_t len)
{
    const char *tls = tt_conn_tls_failure(s->conn, err, buf, len);
    if (tls != NULL)
        return tls;
    return err == ECONNRESET ? "reset" : err == EPIPE ? "closed" : strerror(err);
}

/* Waits for the upstream's next bytes. A pooled connection that carried requests a few ms
 * apart is in the kernel's interactive mode, which delays the ACK of what the upstream sends;
 * an upstream with Nagle's algorithm on that writes a response in parts (head, then body) holds
 * the next part until that ACK. So a response incomplete after a read gets its ACK now, once per
 * response, and the rest is acknowledged as it is read. A response read whole costs nothing. */
static void wait_for_upstream(tt_session_t *s)
{
    s->want_up_in = 1;
    if (s->resp_head_done && s->state == S_EXCHANGE)
        tt_session_arm_idle_timer(s);
    if (s->resp_started && !s->up_acking) {
        s->up_acking = 1;
        tt_conn_ack_now(s->conn);
    }
}

/* Writes request bytes to the upstream: p, then more (a prefix of the two). Returns the bytes
 * written; 0 when the socket is full (write interest is then wanted); -1 when the connection
 * failed, after upstream_failed() has decided between a retry and an error response. */
static ssize_t send_upstream(tt_session_t *s, const char *p, size_t len, const char *more,
                             size_t more_len)
{
    ssize_t n = tt_conn_send_pair(s->conn, p, len, more, more_len);
    if (n >= 0) {
        s->up_acking = 0;
        return n;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s->want_up_out = 1;
        return 0;
    }
    char why[256];
    upstream_failed(s, TT_CLOSE_ERROR, io_why(s, errno, why, sizeof(why)));
    return -1;
}

/* A body read that filled the buffer left more waiting in the socket: the buffer doubles, up to
 * TT_BODY_BUF_MAX, so a large body moves in fewer, larger reads and writes (a 50 MB download made
 * 3,200 recv/send pairs of 16 KiB). A slow reader still holds at most TT_BODY_BUF_MAX here. The
 * grown buffer is freed, not recycled, when it goes back to the worker. */
static void grow_body_buffer(tt_buf_t *in)
{
    if (in->cap < TT_BODY_BUF_MAX)
        (void)tt_buf_reserve(in, in->cap, TT_BODY_BUF_MAX);
}

/* Whether the rest of the request body should go client -> pipe -> upstream with splice(2): a
 * Content-Length body with at least TT_SPLICE_MIN bytes still to come, from a TCP client to a
 * plain TCP upstream, once the head and every body byte read with it were sent. A body kept for
 * a retry never is: spliced bytes cannot be sent again, so only a request that will not be
 * retried anyway (not idempotent, or larger than retry_buffer) is spliced. A Unix-domain client
 * is not: its socket splices one write's segment at a time (22 KiB from curl), no cheaper than
 * the 256 KiB buffer (docs/internals/tuning.md). */
static int req_splice_wanted(const tt_session_t *s)
{
    return s->req_pipe == NULL && !s->retryable && !s->retaining && s->up->conf->splice &&
           s->client_tcp && s->req_pending == 0 && tt_buf_len(s->cin) == 0 &&
           s->uout_sent == s->uout->wpos && tt_http_reader_body_left(&s->req) >= TT_SPLICE_MIN &&
           tt_conn_plain_fd(s->conn) >= 0;
}

/* Moves the request body's bytes in the pipe to the upstream (send_upstream's conventions). */
static ssize_t req_splice_out(tt_session_t *s)
{
    ssize_t n = tt_pipe_drain(s->req_pipe, tt_conn_plain_fd(s->conn));
    if (n > 0) {
        s->up_acking = 0;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->want_up_out = 1;
        return 0;
    }
    char why[256];
    upstream_failed(s, TT_CLOSE_ERROR, io_why(s, n < 0 ? errno : EPIPE, why, sizeof(why)));
    return -1;
}

/* Splices request body bytes from the client into the pipe (recv conventions). Never more than
 * the body's length less its last byte: a pipelined request stays in the socket, and the last
 * byte goes through the parser, which ends the message. */
static ssize_t req_splice_in(tt_session_t *s)
{
    uint64_t left = tt_http_reader_body_left(&s->req) - 1;
    ssize_t n = tt_pipe_fill(s->req_pipe, s->io.fd, (size_t)TT_MIN(left, SIZE_MAX));
    if (n > 0) {
        tt_http_reader_skip_body(&s->req, (uint64_t)n);
        tt_worker_pool(s->worker, s->up)->stats.spliced_request_bytes += (uint64_t)n;
    } else if (n < 0 && errno == EAGAIN && s->req_pipe->len == 0) {
        s->client_readable = 0; /* an empty pipe refused nothing: the socket is drained */
    }
    return n;
}

/* Sends the request head and body. OK on progress, AGAIN when waiting, DECLINED if the exchange
 * ended. */
static tt_step_t step_request(tt_session_t *s)
{
    int moved = 0;
    for (;;) {
        /* Body bytes already read are framed first, so the head and the body that came with it
         * leave in one write (a POST is one segment to the upstream, not two). */
        if (!s->req_read_done && s->req_pending == 0 && tt_buf_len(s->cin) > 0) {
            size_t consumed;
            tt_http_status_t st =
                tt_http_reader_body(&s->req, tt_buf_rptr(s->cin), tt_buf_len(s->cin), &consumed);
            if (st == TT_HTTP_ERROR) {
                tt_session_reply_error(s, 400, TT_CLOSE_REQUEST_PARTIAL, "http_request_error",
                                       "malformed request body: %s", tt_http_reader_error(&s->req));
                return TT_STEP_DECLINED;
            }
            s->req_pending = consumed;
            if (st == TT_HTTP_MESSAGE_DONE)
                s->req_read_done = 1;
            moved = 1;
            continue;
        }
        if (s->req_pending > 0 && s->retaining) {
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
        if (s->uout_sent < s->uout->wpos) {
            size_t head = s->uout->wpos - s->uout_sent;
            ssize_t n = send_upstream(s, s->uout->data + s->uout_sent, head, tt_buf_rptr(s->cin),
                                      s->req_pending);
            if (n <= 0)
                return n < 0 ? TT_STEP_DECLINED : tt_step_progress(moved);
            size_t from_head = TT_MIN((size_t)n, head);
            s->uout_sent += from_head;
            tt_buf_consume(s->cin, (size_t)n - from_head);
            s->req_pending -= (size_t)n - from_head;
            moved = 1;
            continue;
        }
        if (!s->retryable && s->uout->wpos > 0) { /* nothing will be sent twice: drop it */
            s->uout->rpos = s->uout->wpos = 0;
            s->uout_sent = 0;
        }
        if (s->req_pending > 0) {
            ssize_t n = send_upstream(s, tt_buf_rptr(s->cin), s->req_pending, NULL, 0);
            if (n <= 0)
                return n < 0 ? TT_STEP_DECLINED : tt_step_progress(moved);
            tt_buf_consume(s->cin, (size_t)n);
            s->req_pending -= (size_t)n;
            moved = 1;
            continue;
        }
        if (s->req_pipe != NULL && s->req_pipe->len > 0) {
            ssize_t n = req_splice_out(s);
            if (n <= 0)
                return n < 0 ? TT_STEP_DECLINED : tt_step_progress(moved);
            moved = 1;
            continue;
        }
        /* The body's last byte takes the buffered path once the pipe is empty. */
        if (s->req_pipe != NULL && tt_http_reader_body_left(&s->req) <= 1)
            tt_session_release_req_pipe(s);
        if (s->req_read_done) {
            s->req_sent = 1;
            if (!s->resp_head_done)
                tt_session_arm_timer(s, s->up->conf->response_timeout);
            return TT_STEP_OK;
        }
        if (s->client_eof) {
            tt_session_close(s, TT_CLOSE_REQUEST_PARTIAL);
            return TT_STEP_DECLINED;
        }
        if (!s->client_readable) {
            tt_session_wait_for_client(s, 1);
            return tt_step_progress(moved);
        }
        if (req_splice_wanted(s))
            s->req_pipe = tt_pipe_get(&s->worker->pipes); /* NULL: the buffered path, silently */
        ssize_t n;
        if (s->req_pipe != NULL) {
            n = req_splice_in(s);
            /* A pipe out of slots is drained first, as a full buffer would be. */
            if (n < 0 && errno == EAGAIN && s->req_pipe->len > 0)
                continue;
        } else {
            size_t room = tt_buf_room(s->cin);
            n = tt_buf_fill(s->cin, s->io.fd, &s->client_readable);
            if (n > 0 && (size_t)n == room)
                grow_body_buffer(s->cin);
        }
        if (n > 0) {
            tt_session_arm_timer(s, s->worker->conf->client_idle_timeout);
            moved = 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            tt_session_wait_for_client(s, 1);
            return tt_step_progress(moved);
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
    s->final_head_at = s->bytes_out + tt_buf_len(tt_session_cout(s));
    tt_http_write_response_head(s->cout, h, base, &out);
    if (dechunk)
        tt_http_reader_decode_into(&s->resp, s->cout);
}

/* Parses a response head in conn->in. OK if it completed, AGAIN if more bytes are needed,
 * DECLINED if the exchange ended. */
static tt_step_t parse_response_head(tt_session_t *s)
{
    tt_conn_t *c = s->conn;
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
        return TT_STEP_AGAIN;
    if (st != TT_HTTP_HEAD_DONE) {
        tt_session_reply_error(s, 502, TT_CLOSE_ERROR, "http_protocol_error",
                               "upstream %s sent an invalid response head: %s", s->up->conf->name,
                               st == TT_HTTP_ERROR ? tt_http_reader_error(&s->resp) : "too large");
        return TT_STEP_DECLINED;
    }
    tt_http_head_t *h = s->head;
    const char *base = c->in->data;
    if (h->status == 101 && !s->upgrade) {
        /* A client that did not ask to switch would read whatever follows as a new protocol,
         * or as the next response. */
        tt_session_reply_error(s, 502, TT_CLOSE_ERROR, "http_protocol_error",
                               "upstream %s switched protocols unasked (101)", s->up->conf->name);
        return TT_STEP_DECLINED;
    }
    if (h->status >= 100 && h->status < 200 && h->status != 101) {
        /* Interim response: pass it on to HTTP/1.1 clients, then read the final one. */
        if (!s->http10) {
            tt_http_response_out_t out = {0};
            tt_http_write_response_head(tt_session_cout(s), h, base, &out);
        }
        tt_buf_consume(c->in, h->head_len);
        tt_http_head_release(&w->heads, s->head);
        s->head = NULL;
        return TT_STEP_OK;
    }
    if (h->status == 101 && !s->req_sent) {
        /* The tunnel would interleave its bytes with the rest of the request (and over TLS
         * break OpenSSL's rule that a pending write is retried with the same bytes). */
        tt_session_reply_error(s, 502, TT_CLOSE_ERROR, "http_protocol_error",
                               "upstream %s switched protocols before the request was sent whole",
                               s->up->conf->name);
        return TT_STEP_DECLINED;
    }
    if (h->status == 101) {
        tt_http_response_out_t out = {.tunnel = 1};
        s->status = 101;
        tt_http_write_response_head(tt_session_cout(s), h, base, &out);
        s->state = S_TUNNEL;
        s->up_unacked = !s->up_acking; /* the 101 itself, read from the upstream */
    } else {
        on_final_response_head(s, h, base);
    }
    tt_buf_consume(c->in, h->head_len);
    tt_http_head_release(&w->heads, s->head);
    s->head = NULL;
    s->resp_head_done = 1;
    tt_loop_timer_stop(tt_session_loop(s), &s->timer);
    if (s->state != S_TUNNEL && tt_http_reader_message_done(&s->resp))
        s->resp_done = 1;
    return TT_STEP_OK;
}

static void finish_exchange(tt_session_t *s)
{
    TT_ASSERT(s->resp_done && s->resp_pending == 0 && s->state == S_EXCHANGE);
    tt_close_reason_t verdict = !s->req_sent         ? TT_CLOSE_REQUEST_PARTIAL
                                : !s->resp_keepalive ? TT_CLOSE_NOT_KEEPALIVE
                                                     : TT_REUSE_OK;
    int gateway_error = s->status == 502 || s->status == 503 || s->status == 504;
    if (gateway_error && s->up->conf->breaker_on_5xx)
        tt_conn_report(s->conn, TT_OUTCOME_5XX, "502/503/504 from the upstream");
    else
        tt_conn_report(s->conn, TT_OUTCOME_OK, NULL);
    tt_session_end_request(s);
    tt_session_drop_conn(s, verdict);
    /* Body bytes read but never sent (the upstream answered early) must not be parsed as the
     * next request: this client connection ends with its response. */
    if (s->close_after || s->client_gone || s->req_pending > 0) {
        if (tt_session_should_linger(s))
            tt_session_start_linger(s);
        else
            tt_session_close(s, TT_CLOSE_ERROR);
        return;
    }
    tt_session_begin_request(s);
}

/* A response found broken after its head was accepted: while no byte of its head has reached the
 * client, the head and what was queued after it are withdrawn (interim responses before it stay)
 * so that the client gets a 502 in its place rather than a connection that just ends. Returns
 * whether it was withdrawn. */
static int withdraw_response(tt_session_t *s)
{
    if (!s->resp_head_done || s->state != S_EXCHANGE || s->bytes_out > s->final_head_at)
        return 0;
    s->cout->wpos = s->cout->rpos + (size_t)(s->final_head_at - s->bytes_out);
    s->resp_pending = 0;
    s->resp_head_done = 0;
    tt_http_reader_decode_into(&s->resp, NULL);
    return 1;
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
 * HTTP/1.0 client their de-chunked copy goes to cout. OK, or DECLINED if the exchange ended. */
static tt_step_t parse_response_body(tt_session_t *s)
{
    tt_buf_t *in = s->conn->in;
    size_t consumed;
    tt_http_status_t st = tt_http_reader_body(&s->resp, tt_buf_rptr(in) + s->resp_pending,
                                              tt_buf_len(in) - s->resp_pending, &consumed);
    if (st == TT_HTTP_ERROR) {
        if (withdraw_response(s)) {
            tt_session_reply_error(s, 502, TT_CLOSE_ERROR, "http_protocol_error",
                                   "upstream %s sent an invalid response body: %s",
                                   s->up->conf->name, tt_http_reader_error(&s->resp));
            return TT_STEP_DECLINED;
        }
        tt_debug("upstream %s: invalid response body: %s", s->up->conf->name,
                 tt_http_reader_error(&s->resp));
        tt_session_close(s, TT_CLOSE_ERROR);
        return TT_STEP_DECLINED;
    }
    if (tt_http_reader_decoding(&s->resp))
        tt_buf_consume(in, consumed);
    else
        s->resp_pending += consumed;
    if (st == TT_HTTP_MESSAGE_DONE)
        s->resp_done = 1;
    return TT_STEP_OK;
}

/* Whether the rest of the body should go socket -> pipe -> socket with splice(2): a
 * Content-Length body with at least TT_SPLICE_MIN bytes still to come from a plain TCP
 * upstream, relayed as it is (not de-chunked), once every byte read before it was sent. */
static int splice_wanted(const tt_session_t *s)
{
    return s->pipe == NULL && s->resp_head_done && !s->resp_done && s->up->conf->splice &&
           tt_buf_len(s->conn->in) == 0 && !tt_session_output_pending(s) &&
           !tt_http_reader_decoding(&s->resp) &&
           tt_http_reader_body_left(&s->resp) >= TT_SPLICE_MIN && tt_conn_plain_fd(s->conn) >= 0;
}

/* Splices body bytes from the upstream into the pipe (recv conventions). Never more than the
 * body's length less its last byte: the next response on this connection stays in the socket,
 * and the last byte goes through the parser, which ends the message. */
static ssize_t splice_in(tt_session_t *s)
{
    uint64_t left = tt_http_reader_body_left(&s->resp) - 1;
    ssize_t n = tt_pipe_fill(s->pipe, tt_conn_plain_fd(s->conn), (size_t)TT_MIN(left, SIZE_MAX));
    if (n > 0) {
        tt_http_reader_skip_body(&s->resp, (uint64_t)n);
        tt_worker_pool(s->worker, s->up)->stats.spliced_bytes += (uint64_t)n;
    } else if (n < 0 && errno == EAGAIN && s->pipe->len == 0) {
        s->up_readable = 0; /* an empty pipe refused nothing: the socket is drained */
    }
    return n;
}

/* Reads the response and relays it. OK on progress, AGAIN when waiting, DECLINED if the exchange
 * ended (or moved to another state). */
static tt_step_t step_response(tt_session_t *s)
{
    tt_conn_t *c = s->conn;
    int moved = 0;
    for (;;) {
        /* Parse everything already read before writing, so the head and the body it arrived
         * with leave in one writev. */
        if (!response_parseable(s) && tt_session_output_pending(s)) {
            tt_step_t r = tt_session_flush_client(s);
            if (r == TT_STEP_ERROR) {
                tt_session_close(s, TT_CLOSE_RESPONSE_PARTIAL);
                return TT_STEP_DECLINED;
            }
            if (r == TT_STEP_AGAIN)
                return tt_step_progress(moved); /* the client is slow: stop reading the upstream */
            moved = 1;
        }
        if (s->resp_done) {
            finish_exchange(s);
            return TT_STEP_DECLINED;
        }
        if (s->state == S_TUNNEL)
            return TT_STEP_OK;
        if (response_parseable(s)) {
            tt_step_t r = s->resp_head_done ? parse_response_body(s) : parse_response_head(s);
            if (r == TT_STEP_DECLINED)
                return TT_STEP_DECLINED;
            if (r == TT_STEP_OK) {
                moved = 1;
                continue;
            }
        }
        if (tt_buf_room(c->in) == 0) {
            if (s->resp_head_done || s->resp_pending > 0)
                tt_buf_compact(c->in);
            else if (tt_buf_reserve(c->in, TT_BUF_SIZE, (size_t)s->worker->conf->max_head_size) <
                     0) {
                tt_session_reply_error(s, 502, TT_CLOSE_ERROR, "http_response_header_section_size",
                                       "upstream %s sent a response head over %lld bytes",
                                       s->up->conf->name,
                                       (long long)s->worker->conf->max_head_size);
                return TT_STEP_DECLINED;
            }
            if (tt_buf_room(c->in) == 0)
                return tt_step_progress(moved);
        }
        if (!s->up_readable) {
            wait_for_upstream(s);
            return tt_step_progress(moved);
        }
        if (splice_wanted(s))
            s->pipe = tt_pipe_get(&s->worker->pipes); /* NULL: the buffered path, silently */
        if (s->pipe != NULL && tt_http_reader_body_left(&s->resp) <= 1) {
            /* The body's last byte takes the buffered path once the pipe is empty: the
             * response then never ends (nor moves to cout) with bytes still in the pipe. */
            if (s->pipe->len > 0)
                continue; /* the flush above drains it, or waits for the client */
            tt_session_release_pipe(s);
        }
        ssize_t n;
        if (s->pipe != NULL) {
            n = splice_in(s);
            if (n > 0) {
                moved = 1;
                continue;
            }
            /* A full pipe (or one out of slots) is drained first, as a full buffer would be:
             * while the client takes nothing, the upstream is not read. */
            if (n < 0 && errno == EAGAIN && s->pipe->len > 0)
                continue;
        } else {
            size_t room = tt_buf_room(c->in);
            n = tt_conn_read(c, c->in, &s->up_readable);
            if (n > 0) {
                s->resp_started = 1;
                moved = 1;
                if (s->resp_head_done && (size_t)n == room)
                    grow_body_buffer(c->in);
                continue;
            }
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_for_upstream(s);
            return tt_step_progress(moved);
        }
        int err = n < 0 ? errno : 0;
        if (!s->resp_started) {
            char why[256];
            upstream_failed(s, n == 0 ? TT_CLOSE_PEER_CLOSED : TT_CLOSE_ERROR,
                            n == 0 ? "closed" : io_why(s, err, why, sizeof(why)));
            return TT_STEP_DECLINED;
        }
        /* Only an orderly end completes a body delimited by the close: a reset, or over TLS an
         * end without close_notify, may have cut it. */
        if (n == 0 && s->resp_head_done && tt_http_reader_eof(&s->resp) == TT_HTTP_MESSAGE_DONE) {
            s->resp_done = 1; /* close-delimited body */
            s->resp_keepalive = 0;
            continue;
        }
        if (!s->resp_head_done) {
            tt_session_reply_error(
                s, 502, TT_CLOSE_RESPONSE_PARTIAL, "http_response_incomplete",
                "upstream %s closed the connection in the middle of the response head",
                s->up->conf->name);
            return TT_STEP_DECLINED;
        }
        /* Truncated body: the client must see a 502 or the connection end, never a
         * complete-looking response. */
        if (withdraw_response(s)) {
            tt_session_reply_error(
                s, 502, TT_CLOSE_RESPONSE_PARTIAL, "http_response_incomplete",
                "upstream %s closed the connection in the middle of the response body",
                s->up->conf->name);
            return TT_STEP_DECLINED;
        }
        tt_session_flush_client(s);
        tt_session_close(s, TT_CLOSE_RESPONSE_PARTIAL);
        return TT_STEP_DECLINED;
    }
}

/* Once the request is read, the client stays readable while the response is relayed: what it
 * sends next (a pipelined request) waits in cin and its EOF or reset is noticed, and its epoll
 * interest never has to change. OK on data, AGAIN when waiting, ERROR if the client is gone. */
static tt_step_t read_ahead(tt_session_t *s)
{
    if (s->client_eof)
        return TT_STEP_AGAIN;
    if (tt_buf_room(s->cin) == 0)
        tt_buf_compact(s->cin);
    if (tt_buf_room(s->cin) == 0)
        return TT_STEP_AGAIN; /* full: the client waits until this response is done */
    s->want_client_in = 1;
    if (!s->client_readable)
        return TT_STEP_AGAIN;
    ssize_t n = tt_buf_fill(s->cin, s->io.fd, &s->client_readable);
    if (n > 0)
        return TT_STEP_OK;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return TT_STEP_AGAIN;
    if (n == 0) { /* a half-close still gets its response */
        s->client_eof = 1;
        s->want_client_in = 0;
        return TT_STEP_AGAIN;
    }
    s->client_gone = 1;
    return TT_STEP_ERROR;
}

void tt_session_step_exchange(tt_session_t *s)
{
    for (;;) {
        int progress = 0;
        if (!s->req_sent) {
            tt_step_t r = step_request(s);
            if (r == TT_STEP_DECLINED || s->state != S_EXCHANGE)
                return;
            progress |= r == TT_STEP_OK;
        }
        if (s->req_read_done) {
            tt_step_t r = read_ahead(s);
            if (r == TT_STEP_ERROR) {
                tt_session_close(s, s->resp_head_done ? TT_CLOSE_RESPONSE_PARTIAL
                                                      : TT_CLOSE_REQUEST_PARTIAL);
                return;
            }
            progress |= r == TT_STEP_OK;
        }
        tt_step_t r = step_response(s);
        if (r == TT_STEP_DECLINED || s->state != S_EXCHANGE)
            return;
        progress |= r == TT_STEP_OK;
        if (!progress)
            return;
        s->want_client_in = s->want_client_out = s->want_up_in = s->want_up_out = 0;
    }
}

/* The upstream connection failed after the whole response was read, while a slow client still
 * receives it: the response bytes move to cout and the connection is closed (it cannot be reused
 * after a reset), so the client still gets every byte. */
static void keep_response_drop_conn(tt_session_t *s)
{
    tt_buf_append(tt_session_cout(s), tt_buf_rptr(s->conn->in), s->resp_pending);
    tt_buf_consume(s->conn->in, s->resp_pending);
    s->resp_pending = 0;
    s->req_sent = 1; /* nothing more can be sent; req_pending still ends the client connection */
    tt_session_drop_conn(s, TT_CLOSE_ERROR);
}

static void upstream_cb(tt_conn_t *conn, uint32_t events)
{
    tt_session_t *s = conn->owner;
    TT_ASSERT(s->conn == conn && (s->state == S_EXCHANGE || s->state == S_TUNNEL));
    const tt_upstream_conf_t *conf = s->up->conf;
    if (events & TT_CONN_EV_LEASE_WARN) {
        tt_warn("upstream %s: connection %llu to %s leased for over %lldms by client %s "
                "(a client not reading its response?)",
                conf->name, (unsigned long long)conn->id, tt_session_endpoint(s),
                (long long)conf->lease_warn, s->peer);
        tt_worker_pool(s->worker, s->up)->stats.lease_warnings++;
        return;
    }
    if (events & TT_CONN_EV_LEASE_TIMEOUT) {
        tt_warn("upstream %s: reclaiming connection %llu leased for over %lldms by client %s",
                conf->name, (unsigned long long)conn->id, (long long)conf->lease_timeout, s->peer);
        tt_session_close(s, TT_CLOSE_LEASE_TIMEOUT);
        return;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ||
        ((events & EPOLLOUT) && tt_conn_read_waits_write(conn)))
        s->up_readable = 1;
    if ((events & (EPOLLERR | EPOLLHUP)) && !tt_conn_reading(conn)) {
        if (s->resp_done) { /* only the client is slow: the response is all here */
            keep_response_drop_conn(s);
            tt_session_run(s);
            return;
        }
        upstream_failed(s, TT_CLOSE_ERROR, "failed");
        tt_session_run(s);
        return;
    }
    tt_session_run(s);
}
