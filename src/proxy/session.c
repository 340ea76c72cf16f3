/* The session driver: a client connection's events and timers, the state machine that runs its
 * steps (request.c, relay.c, tunnel.c), client output and errors, and the one close path. */
#include "proxy/session_int.h"

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
    tt_session_release_pipe(s);
    tt_session_release_req_pipe(s);
}

void tt_session_release_pipe(tt_session_t *s)
{
    if (s->pipe != NULL)
        tt_pipe_put(&s->worker->pipes, s->pipe);
    s->pipe = NULL;
}

void tt_session_release_req_pipe(tt_session_t *s)
{
    if (s->req_pipe != NULL)
        tt_pipe_put(&s->worker->pipes, s->req_pipe);
    s->req_pipe = NULL;
}

static void log_access(tt_session_t *s, uint64_t duration_us)
{
    tt_accesslog_t *al = &s->worker->access_log;
    const char *error = !s->generated ? NULL : s->log_error != NULL ? s->log_error : s->proxy_error;
    s->log_error = NULL; /* it was this request's */
    if (!tt_accesslog_enabled(al))
        return;
    tt_access_entry_t e = {
        .client = s->peer,
        .upstream = s->up != NULL ? s->up->conf->name : NULL,
        .endpoint = s->up != NULL ? tt_session_endpoint(s) : NULL,
        .method =
            s->method == TT_METHOD_UNKNOWN ? "-" : llhttp_method_name((llhttp_method_t)s->method),
        .path = s->path,
        .path_len = s->path_len,
        .host = s->host,
        .host_len = s->host_len,
        .generated_by = s->status == 0 ? NULL
                        : s->generated ? "tether"
                                       : "upstream",
        .error = error,
        .status = s->status,
        .bytes = s->bytes_out,
        .duration_us = duration_us,
        .reused = s->reused,
        .retried = s->retried,
        .cut = s->resp_cut,
    };
    tt_accesslog_write(al, &e);
}

/* Counts the outcome of the current request, once. */
void tt_session_end_request(tt_session_t *s)
{
    if (!s->in_request)
        return;
    s->in_request = 0;
    unsigned cls = tt_status_class(s->status);
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

void tt_session_close(tt_session_t *s, tt_close_reason_t conn_verdict)
{
    if (s->state == S_CLOSED)
        return;
    /* Too late for an error response: the close is the client's signal, the log says so. */
    s->resp_cut =
        (conn_verdict == TT_CLOSE_RESPONSE_PARTIAL || conn_verdict == TT_CLOSE_RESPONSE_TIMEOUT) &&
        s->resp_head_done;
    tt_session_end_request(s);
    tt_session_drop_conn(s, conn_verdict);
    s->state = S_CLOSED;
    /* A response cut short whose end the client learns from the close alone ends in a reset,
     * never a FIN, which would make it look complete. */
    if (s->resp_cut && s->ends_at_close && s->io.fd >= 0)
        setsockopt(s->io.fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger));
    tt_io_close(tt_session_loop(s), &s->io);
    tt_loop_timer_stop(tt_session_loop(s), &s->timer);
    release_buffers(s);
    tt_list_remove(&s->link);
    tt_loop_defer(tt_session_loop(s), &s->free_later, session_free_cb);
    tt_worker_session_closed(s->worker);
}

void tt_session_arm_timer(tt_session_t *s, int64_t ms)
{
    tt_loop_timer_after(tt_session_loop(s), &s->timer, (tt_msec_t)ms);
}

/* ---- lingering close ------------------------------------------------------------------------ */

int tt_session_should_linger(const tt_session_t *s)
{
    return s->worker->conf->lingering_timeout > 0 && !s->client_eof && !s->client_gone &&
           !s->worker->draining &&
           (!s->req_read_done || s->req_pending > 0 || (s->cin != NULL && tt_buf_len(s->cin) > 0));
}

void tt_session_start_linger(tt_session_t *s)
{
    tt_session_end_request(s);
    tt_session_drop_conn(s, TT_CLOSE_ERROR);
    shutdown(s->io.fd, SHUT_WR);
    release_buffers(s);
    s->state = S_LINGER;
    tt_session_arm_timer(s, s->worker->conf->lingering_timeout);
}

/* Discards what the client sends, a bounded amount per wake-up (the loop is level-triggered). */
static void step_linger(tt_session_t *s)
{
    char sink[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(s->io.fd, sink, sizeof(sink), 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        tt_session_close(s, TT_CLOSE_ERROR); /* EOF or error: the client is done */
        return;
    }
    s->want_client_in = 1;
}

/* ---- client output ------------------------------------------------------------------------ */

int tt_session_output_pending(const tt_session_t *s)
{
    return (s->cout != NULL && tt_buf_len(s->cout) > 0) || s->resp_pending > 0 ||
           (s->pipe != NULL && s->pipe->len > 0);
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
    if (progressed || !tt_timer_armed(&s->timer) || !s->timer_on_client) {
        s->send_queue = client_send_queue(s);
        s->timer_on_client = 1;
        tt_session_arm_timer(s, s->worker->conf->client_idle_timeout);
    }
}

/* The upstream paused inside a response body: the head is out, so a 504 is impossible and the
 * close is the client's signal (as nginx's proxy_read_timeout does). Armed each time the session
 * waits for more of the body with nothing left to write; the timer fires only if no wait came
 * since, so a body that moved meanwhile (bytes_out grew) restarts it. */
void tt_session_arm_idle_timer(tt_session_t *s)
{
    int64_t ms = s->up->conf->response_idle_timeout;
    if (ms == 0 || !s->req_sent || tt_session_output_pending(s))
        return;
    s->timer_on_client = 0;
    s->idle_mark = s->bytes_out;
    tt_session_arm_timer(s, ms);
}

static void upstream_paused(tt_session_t *s)
{
    if (s->bytes_out != s->idle_mark) {
        tt_session_arm_idle_timer(s);
        return;
    }
    unsigned suppressed;
    if (tt_ratelimit_allow(&s->worker->error_warn, tt_loop_now(tt_session_loop(s)), 5000,
                           &suppressed))
        tt_warn("client %s: upstream %s (%s) paused the response body for %lldms; cut (%u "
                "similar suppressed)",
                s->peer, s->up->conf->name, tt_session_endpoint(s),
                (long long)s->up->conf->response_idle_timeout, suppressed);
    if (s->conn != NULL)
        tt_conn_report(s->conn, TT_OUTCOME_TIMEOUT, "response_idle_timeout");
    tt_session_close(s, TT_CLOSE_RESPONSE_TIMEOUT);
}

/* The send timer fired: 1 if the client took nothing since it started (then it is cut), 0 if it
 * read meanwhile (the timer restarts) or is not behind any more. */
static int client_stalled(tt_session_t *s)
{
    if (!tt_session_output_pending(s))
        return 0;
    uint32_t queue = client_send_queue(s);
    if (queue == 0 || queue >= s->send_queue)
        return 1;
    s->send_queue = queue;
    tt_session_arm_timer(s, s->worker->conf->client_idle_timeout);
    return 0;
}

/* Writes cout, then the spliced body bytes in the pipe, then the raw response body waiting in
 * conn->in. OK when all is written, AGAIN when the socket is full, ERROR when the client is
 * gone. */
tt_step_t tt_session_flush_client(tt_session_t *s)
{
    int progressed = 0;
    while (tt_session_output_pending(s)) {
        struct iovec iov[2];
        int n = 0;
        size_t head = s->cout != NULL ? tt_buf_len(s->cout) : 0;
        /* The pipe is released before the body's last byte is read into conn->in. */
        TT_ASSERT(s->pipe == NULL || s->resp_pending == 0);
        if (head > 0)
            iov[n++] = (struct iovec){tt_buf_rptr(s->cout), head};
        if (s->resp_pending > 0)
            iov[n++] = (struct iovec){tt_buf_rptr(s->conn->in), s->resp_pending};
        /* The last bytes before a close: MSG_MORE holds them back until close(), so the FIN
         * leaves in the same segment and the client acknowledges both at once. */
        int last = s->close_after && s->resp_done;
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = n == 0 ? tt_pipe_drain(s->pipe, s->io.fd)
                           : sendmsg(s->io.fd, &msg, MSG_NOSIGNAL | (last ? MSG_MORE : 0));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                s->want_client_out = 1;
                arm_send_timer(s, progressed);
                return TT_STEP_AGAIN;
            }
            s->client_gone = 1;
            return TT_STEP_ERROR;
        }
        progressed = 1;
        size_t done = (size_t)w;
        s->client_acking = 0; /* the write put the socket back into delayed ACKs */
        s->bytes_out += done;
        if (n == 0)
            continue; /* tt_pipe_drain counted them out of the pipe */
        size_t from_head = TT_MIN(done, head);
        if (from_head > 0)
            tt_buf_consume(s->cout, from_head);
        done -= from_head;
        if (done > 0) {
            tt_buf_consume(s->conn->in, done);
            s->resp_pending -= done;
        }
    }
    return TT_STEP_OK;
}

tt_buf_t *tt_session_cout(tt_session_t *s)
{
    if (s->cout == NULL)
        s->cout = tt_buf_acquire(&s->worker->bufs);
    return s->cout;
}

void tt_session_reply_error(tt_session_t *s, int status, tt_close_reason_t conn_verdict,
                            const char *proxy_error, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tt_session_drop_conn(s, conn_verdict);
    if (s->resp_head_done || s->client_gone) { /* too late for an error response */
        tt_session_close(s, conn_verdict);
        return;
    }
    s->resp_pending = 0;
    int keep = s->req_read_done && s->req_pending == 0 && s->client_keepalive &&
               !s->worker->draining && status != 400 && status != 405 && status != 408 &&
               status != 431;
    s->close_after = !keep;
    s->status = (uint16_t)status;
    s->generated = 1;
    s->proxy_error = proxy_error;
    size_t before = tt_buf_len(tt_session_cout(s));
    tt_http_write_error(s->cout, status, s->close_after, proxy_error, "%s", msg);
    if (!s->in_request) { /* refused while its head was read */
        s->in_request = 1;
        s->started_us = tt_clock_monotonic_us();
        s->path_len = s->host_len = 0;
        s->method = TT_METHOD_UNKNOWN;
    }
    s->bytes_out = tt_buf_len(s->cout) - before; /* counted now: logged before it is written */
    tt_session_end_request(s);
    /* A failure of the upstream or of tetherd (5xx) is worth a warning, at most one per 5 s per
     * worker with the count held back; the client's own mistakes (4xx) only at debug. Failed
     * TLS handshakes have their own log line, once per cause (tt_upstream_tls_failed). */
    unsigned suppressed;
    if (status >= 500 && strncmp(proxy_error, "tls_", 4) != 0 &&
        tt_ratelimit_allow(&s->worker->error_warn, tt_loop_now(tt_session_loop(s)), 5000,
                           &suppressed))
        tt_warn("client %s: %d %s (%u similar suppressed)", s->peer, status, msg, suppressed);
    else
        tt_debug("client %s: %d %s", s->peer, status, msg);
    tt_loop_timer_stop(tt_session_loop(s), &s->timer);
    s->state = S_FLUSH;
}

/* ---- driving --------------------------------------------------------------------------------- */

static void apply_interest(tt_session_t *s)
{
    if (s->state == S_CLOSED)
        return;
    uint32_t ev = (s->want_client_in ? EPOLLIN : 0) | (s->want_client_out ? EPOLLOUT : 0);
    tt_io_set_events(tt_session_loop(s), &s->io, ev);
    /* EPOLLIN | EPOLLRDHUP is also the idle interest: leasing and releasing change nothing. */
    if (s->conn != NULL)
        tt_conn_set_events(s->conn, (s->want_up_in ? EPOLLIN | EPOLLRDHUP : 0) |
                                        (s->want_up_out ? EPOLLOUT : 0));
}

void tt_session_run(tt_session_t *s)
{
    for (;;) {
        s->want_client_in = s->want_client_out = s->want_up_in = s->want_up_out = 0;
        switch (s->state) {
        case S_HEAD:
            if (tt_session_step_head(s) == TT_STEP_OK)
                continue;
            break;
        case S_BODY:
            if (tt_session_step_body(s) == TT_STEP_OK)
                continue;
            break;
        case S_WAIT_CONN:
            TT_ASSERT(s->conn == NULL);
            break;
        case S_EXCHANGE: {
            tt_session_step_exchange(s);
            if (s->state == S_HEAD || s->state == S_TUNNEL || s->state == S_FLUSH ||
                s->state == S_LINGER)
                continue;
            break;
        }
        case S_TUNNEL:
            tt_session_step_tunnel(s);
            break;
        case S_FLUSH: {
            tt_step_t r = tt_session_flush_client(s);
            if (r == TT_STEP_OK && s->close_after && tt_session_should_linger(s)) {
                tt_session_start_linger(s);
                continue;
            }
            if (r == TT_STEP_ERROR || (r == TT_STEP_OK && s->close_after)) {
                tt_session_close(s, TT_CLOSE_ERROR);
                return;
            }
            if (r == TT_STEP_OK) {
                tt_session_begin_request(s);
                continue;
            }
            break;
        }
        case S_LINGER:
            step_linger(s);
            break;
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
        tt_session_close(s,
                         s->resp_head_done ? TT_CLOSE_RESPONSE_PARTIAL : TT_CLOSE_REQUEST_PARTIAL);
        return;
    }
    tt_session_run(s);
}

static void session_timer_cb(tt_timer_t *t)
{
    tt_session_t *s = tt_container_of(t, tt_session_t, timer);
    switch (s->state) {
    case S_HEAD:
        if (s->cin != NULL && s->cin->wpos > 0) {
            tt_session_reply_error(s, 408, TT_CLOSE_ERROR, "http_request_error",
                                   "request head not received within %lldms",
                                   (long long)s->worker->conf->client_header_timeout);
            tt_session_run(s);
        } else {
            tt_session_close(s, TT_CLOSE_ERROR);
        }
        return;
    case S_BODY:
        if (tt_loop_now(tt_session_loop(s)) >= s->body_deadline)
            tt_session_reply_error(s, 408, TT_CLOSE_ERROR, "http_request_error",
                                   "request body not received within client_body_timeout (%lldms)",
                                   (long long)s->worker->conf->client_body_timeout);
        else
            tt_session_reply_error(s, 408, TT_CLOSE_ERROR, "http_request_error",
                                   "request body stalled for %lldms",
                                   (long long)s->worker->conf->client_idle_timeout);
        tt_session_run(s);
        return;
    case S_EXCHANGE:
        if (s->resp_head_done && s->req_sent && !s->timer_on_client) {
            upstream_paused(s);
            return;
        }
        if (s->resp_head_done && client_stalled(s)) {
            tt_debug("client %s: took no response byte for %lldms; closing", s->peer,
                     (long long)s->worker->conf->client_idle_timeout);
            tt_session_close(s, TT_CLOSE_RESPONSE_PARTIAL);
            return;
        }
        if (s->resp_head_done && (s->req_sent || tt_timer_armed(&s->timer)))
            return; /* the client reads, or is not behind: the upstream sets the pace */
        if (!s->req_sent) {
            tt_session_reply_error(s, 408, TT_CLOSE_REQUEST_PARTIAL, "http_request_error",
                                   "request body stalled for %lldms",
                                   (long long)s->worker->conf->client_idle_timeout);
        } else {
            if (s->conn != NULL)
                tt_conn_report(s->conn, TT_OUTCOME_TIMEOUT, "response_timeout");
            tt_session_reply_error(s, 504, TT_CLOSE_RESPONSE_TIMEOUT, "http_response_timeout",
                                   "upstream %s (%s) did not respond within %lldms",
                                   s->up->conf->name, tt_session_endpoint(s),
                                   (long long)s->up->conf->response_timeout);
        }
        tt_session_run(s);
        return;
    case S_WAIT_CONN: {
        /* Only a retry waits with the timer armed: the first attempt's deadline still holds, and
         * the client is owed an answer (the pool withdraws the queued request). */
        int64_t ms =
            s->req_sent ? s->up->conf->response_timeout : s->worker->conf->client_idle_timeout;
        tt_session_reply_error(s, 504, TT_CLOSE_ERROR, "http_response_timeout",
                               "upstream %s (%s) did not respond within %lldms: its connection "
                               "failed and the retry found no connection in time",
                               s->up->conf->name, tt_session_endpoint(s), (long long)ms);
        tt_session_run(s);
        return;
    }
    case S_FLUSH:
        if (!client_stalled(s) && tt_timer_armed(&s->timer))
            return;
        tt_session_close(s, TT_CLOSE_ERROR);
        return;
    default:
        tt_session_close(s, TT_CLOSE_ERROR);
        return;
    }
}

int tt_session_start(tt_listener_t *l, int fd, const tt_addr_t *peer)
{
    tt_worker_t *w = l->worker;
    tt_session_t *s = tt_calloc(1, sizeof(*s));
    s->worker = w;
    s->listener_upstream = l->upstream;
    tt_addr_format(peer, s->peer);
    s->client_tcp = peer->ss.ss_family != AF_UNIX;
    tt_timer_init(&s->timer, session_timer_cb);
    tt_list_init(&s->link);
    tt_list_init(&s->waiter._link);
    if (tt_io_start(w->loop, &s->io, fd, EPOLLIN, client_io_cb) < 0) {
        close(fd);
        free(s);
        return -1;
    }
    tt_list_push_back(&w->sessions, &s->link);
    tt_worker_session_opened(w);
    s->client_readable = 1; /* the request usually arrives with the connection: try at once */
    tt_session_begin_request(s);
    /* The first request must start within the header timeout; later ones within the idle one. */
    tt_session_arm_timer(s, w->conf->client_header_timeout);
    tt_session_run(s);
    return 0;
}

void tt_session_drain(tt_worker_t *w)
{
    tt_list_t *l, *tmp;
    tt_list_foreach_safe(l, tmp, &w->sessions)
    {
        tt_session_t *s = tt_container_of(l, tt_session_t, link);
        if ((s->state == S_HEAD && (s->cin == NULL || s->cin->wpos == 0)) || s->state == S_LINGER)
            tt_session_close(s, TT_CLOSE_SHUTDOWN);
        else
            s->close_after = 1;
    }
}

void tt_session_close_all(tt_worker_t *w)
{
    while (!tt_list_empty(&w->sessions))
        tt_session_close(tt_container_of(tt_list_first(&w->sessions), tt_session_t, link),
                         TT_CLOSE_SHUTDOWN);
}

const tt_worker_handlers_t tt_session_handlers = {
    .accept_cb = tt_session_start,
    .drain_cb = tt_session_drain,
    .close_all_cb = tt_session_close_all,
};
