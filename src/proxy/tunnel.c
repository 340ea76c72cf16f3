/* The tunnel after 101 Switching Protocols: raw bytes both ways between the client's socket and
 * the upstream connection (maybe TLS), until either side ends. */
#include "proxy/session_int.h"

#include <errno.h>
#include <sys/socket.h>

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

void tt_session_step_tunnel(tt_session_t *s)
{
    tt_conn_t *c = s->conn;
    for (int progress = 1; progress;) {
        progress = 0;
        s->want_client_in = s->want_client_out = s->want_up_in = s->want_up_out = 0;
        int r = tt_session_flush_client(s); /* the 101 head */
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
        if (tt_buf_len(c->in) == 0 && !tt_session_output_pending(s)) {
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
    tt_session_flush_client(s);
    tunnel_write(s, TO_CLIENT, c->in);
    tunnel_write(s, TO_UPSTREAM, s->cin);
    tt_session_close(s, TT_CLOSE_UPGRADED);
}
