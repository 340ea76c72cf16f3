/* The tunnel after 101 Switching Protocols: raw bytes both ways between the client's socket and
 * the upstream connection (maybe TLS), until either side ends. */
#include "proxy/session_int.h"

#include "core/invariant.h"

#include <errno.h>
#include <sys/socket.h>

/* The tunnel's two ends: the client's socket, or the upstream connection (maybe TLS). */
typedef enum { TO_CLIENT, TO_UPSTREAM } tunnel_end_t;

/* Moves bytes from src (already holding data) to one end. OK if src drained, AGAIN if that end
 * is full, ERROR on error. */
static tt_step_t tunnel_write(tt_session_t *s, tunnel_end_t end, tt_buf_t *src)
{
    while (tt_buf_len(src) > 0) {
        ssize_t n = end == TO_UPSTREAM
                        ? tt_conn_send(s->conn, tt_buf_rptr(src), tt_buf_len(src))
                        : send(s->io.fd, tt_buf_rptr(src), tt_buf_len(src), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? TT_STEP_AGAIN : TT_STEP_ERROR;
        }
        tt_buf_consume(src, (size_t)n);
    }
    return TT_STEP_OK;
}

/* Reads from one end into dst. OK on data, AGAIN when nothing is ready, ERROR on EOF or
 * error. */
static tt_step_t tunnel_read(tt_session_t *s, tunnel_end_t end, tt_buf_t *dst)
{
    if (tt_buf_room(dst) == 0)
        tt_buf_compact(dst);
    if (tt_buf_room(dst) == 0)
        return TT_STEP_AGAIN;
    uint8_t readable = 1;
    ssize_t n =
        end == TO_UPSTREAM ? tt_conn_read(s->conn, dst, &readable) : tt_buf_recv(dst, s->io.fd);
    if (n > 0)
        return TT_STEP_OK;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? TT_STEP_AGAIN : TT_STEP_ERROR;
}

void tt_session_step_tunnel(tt_session_t *s)
{
    TT_ASSERT(s->state == S_TUNNEL && s->conn != NULL && s->resp_head_done);
    tt_conn_t *c = s->conn;
    for (int progress = 1; progress;) {
        progress = 0;
        s->want_client_in = s->want_client_out = s->want_up_in = s->want_up_out = 0;
        tt_step_t r = tt_session_flush_client(s); /* the 101 head */
        if (r == TT_STEP_ERROR)
            goto done;
        if (r == TT_STEP_OK) {
            r = tunnel_write(s, TO_CLIENT, c->in);
            if (r == TT_STEP_ERROR)
                goto done;
            if (r == TT_STEP_AGAIN)
                s->want_client_out = 1;
        } else {
            s->want_client_out = 1;
        }
        r = tunnel_write(s, TO_UPSTREAM, s->cin);
        if (r == TT_STEP_ERROR)
            goto done;
        if (r == TT_STEP_AGAIN)
            s->want_up_out = 1;
        if (tt_buf_len(s->cin) == 0) {
            r = tunnel_read(s, TO_CLIENT, s->cin);
            if (r == TT_STEP_ERROR)
                goto done;
            progress |= r == TT_STEP_OK;
            s->want_client_in = r == TT_STEP_AGAIN;
        }
        if (tt_buf_len(c->in) == 0 && !tt_session_output_pending(s)) {
            r = tunnel_read(s, TO_UPSTREAM, c->in);
            if (r == TT_STEP_ERROR)
                goto done;
            progress |= r == TT_STEP_OK;
            s->want_up_in = r == TT_STEP_AGAIN;
        }
    }
    return;
done:
    /* Either side ending ends the tunnel; what was read is delivered first where possible. */
    tt_session_flush_client(s);
    tunnel_write(s, TO_CLIENT, c->in);
    tunnel_write(s, TO_UPSTREAM, s->cin);
    tt_session_close(s, TT_CLOSE_UPGRADED);
}
