#include "upstream/conn.h"

#include "upstream/pool.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>

ssize_t tt_conn_read(tt_upconn_t *c, tt_buf_t *b, uint8_t *readable)
{
    if (c->tls == NULL)
        return tt_buf_fill(b, c->io.fd, readable);
    if (tt_buf_room(b) == 0)
        tt_buf_compact(b);
    ssize_t n = tt_tls_read(c->tls, tt_buf_wptr(b), tt_buf_room(b), readable);
    c->tls_read_wants_write = n < 0 && errno == EAGAIN && tt_tls_wants_write(c->tls);
    if (n > 0)
        b->wpos += (size_t)n;
    return n;
}

ssize_t tt_conn_send(tt_upconn_t *c, const void *p, size_t len)
{
    if (c->tls == NULL) {
        ssize_t n;
        do {
            n = send(c->io.fd, p, len, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        return n;
    }
    ssize_t n = tt_tls_write(c->tls, p, len);
    c->tls_write_wants_read = n < 0 && errno == EAGAIN && !tt_tls_wants_write(c->tls);
    return n;
}

void tt_conn_tls_error(tt_upconn_t *c, char *buf, size_t len)
{
    char detail[160];
    tt_tls_failure_t why = tt_tls_failure(c->tls, detail, sizeof(detail));
    snprintf(buf, len, "%s (%s)", tt_tls_failure_phrase(why), detail);
    /* On its first request a connection fails like this when the upstream refuses the
     * handshake after the client finished it (TLS 1.3 and a missing client certificate): count
     * and log it as the handshake failure it is. */
    if (!tt_conn_reused(c)) {
        c->pool->stats.tls_failures[why]++;
        tt_upstream_tls_failed(c->pool->up, why, detail);
    }
}
