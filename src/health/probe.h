/* Probes of idle pooled connections: what is sent, when, and how the answer is judged.
 *
 * A connection idle for probe_interval gets one request (probe = OPTIONS * by default when on);
 * any complete, well-formed, keep-alive response whose status is in probe_expect (any, unless
 * narrowed) proves it alive and it goes back to the idle list. No answer within probe_timeout,
 * a reset, a malformed answer, "Connection: close" or bytes after the response: the connection
 * is closed (close reason probe_failed). A probe never keeps a connection past its idle expiry:
 * the schedule skips a probe that could not finish before the connection expires anyway.
 * The state here is per connection and holds no socket: the pool does the I/O. */
#ifndef TT_HEALTH_PROBE_H
#define TT_HEALTH_PROBE_H

#include "health/check.h"

typedef struct {
    tt_request_line_t line;
    tt_msec_t interval, timeout;
    tt_status_set_t expect; /* empty: any status */
} tt_probe_conf_t;

typedef enum {
    TT_PROBE_OK,
    TT_PROBE_TIMEOUT,   /* no complete answer in probe_timeout */
    TT_PROBE_CLOSED,    /* reset or closed by the upstream */
    TT_PROBE_MALFORMED, /* not a well-formed HTTP/1.1 response, or bytes after it */
    TT_PROBE_STATUS,    /* outside probe_expect */
    TT_PROBE_NO_REUSE,  /* the upstream answered but will not keep the connection */
} tt_probe_result_t;

#define TT_PROBE_RESULTS 6

/* When the connection, idle since idle_since and last probed at last_probe (0: never since it
 * went idle), is due for a probe; TT_TIME_NEVER if it expires (expires_at) before a probe sent
 * then could be judged. */
tt_msec_t tt_probe_next(const tt_probe_conf_t *c, tt_msec_t idle_since, tt_msec_t last_probe,
                        tt_msec_t expires_at);

typedef struct {
    tt_judge_t _judge;
    tt_msec_t deadline;
} tt_probe_t;

/* Starts a probe at now: appends the request to out and prepares the judge. */
void tt_probe_begin(tt_probe_t *p, const tt_probe_conf_t *c, const char *host, tt_msec_t now,
                    tt_buf_t *out);
/* Bytes read from the connection: returns 1 with *result once decided, else 0. */
int tt_probe_feed(tt_probe_t *p, const char *data, size_t n, tt_probe_result_t *result);
/* The connection closed or reset while the probe was out. */
tt_probe_result_t tt_probe_closed(tt_probe_t *p);
/* Frees the probe's state, decided or not (a timeout is decided by the caller's timer). */
void tt_probe_end(tt_probe_t *p);

/* "ok", "timeout", "closed", "malformed", "status", "no_reuse": metric labels. */
const char *tt_probe_result_name(tt_probe_result_t r);

#endif
