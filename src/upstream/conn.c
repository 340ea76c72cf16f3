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
    if (n > 0) {
        b->wpos += (size_t)n;
        if (c->tls_unconfirmed) /* it answered: it accepted us */
            tt_conn_tls_established(c);
    }
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

void tt_conn_tls_established(tt_upconn_t *c)
{
    tt_pool_t *pool = c->pool;
    c->tls_unconfirmed = 0;
    if (tt_tls_resumed(c->tls))
        pool->stats.tls_resumed++;
    else
        pool->stats.tls_full++;
    tt_hist_record(&pool->stats.tls_handshake_us, c->tls_handshake_us);
    tt_upstream_tls_succeeded(pool->up);
}

tt_tls_failure_t tt_conn_tls_refused(tt_upconn_t *c, char *detail, size_t len)
{
    tt_tls_failure_t why = tt_tls_failure(c->tls, detail, len);
    c->tls_unconfirmed = 0;
    c->pool->stats.tls_failures[why]++;
    tt_upstream_tls_failed(c->pool->up, why, detail);
    return why;
}

const char *tt_conn_tls_failure(tt_upconn_t *c, int err, char *buf, size_t len)
{
    if (c->tls == NULL)
        return NULL;
    if (err != EPROTO && c->tls_unconfirmed) {
        char scratch[64];
        uint8_t more;
        if (tt_tls_read(c->tls, scratch, sizeof(scratch), &more) < 0 && errno == EPROTO)
            err = EPROTO;
    }
    if (err == TT_TLS_ETRUNCATED)
        return "closed without a TLS close_notify";
    if (err != EPROTO)
        return NULL;
    char detail[160];
    if (c->tls_unconfirmed) { /* the upstream refused the handshake after all */
        tt_tls_failure_t why = tt_conn_tls_refused(c, detail, sizeof(detail));
        snprintf(buf, len, "failed with a TLS error: %s (%s)", tt_tls_failure_phrase(why), detail);
    } else {
        tt_tls_failure(c->tls, detail, sizeof(detail));
        snprintf(buf, len, "failed with a TLS error (%s)", detail);
    }
    return buf;
}
