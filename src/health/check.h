/* Health of an endpoint: the rise/fall hysteresis of active checks, and the pieces of an HTTP
 * check that judge what was sent and what came back (shared with probes of idle connections,
 * health/probe.h).
 *
 * Rise/fall: an endpoint starts up; `fall` failed checks in a row take it down, `rise` passed
 * checks in a row bring it back, so one lost check never flaps it. The judge reads one response
 * with the project's HTTP reader: a malformed answer, a truncated one, or a status outside the
 * expected set fails; a probe (reuse = 1) also needs the whole message, the connection kept alive
 * and no byte after the response. See docs/internals/health.md. */
#ifndef TT_HEALTH_CHECK_H
#define TT_HEALTH_CHECK_H

#include "config/values.h"
#include "core/buf.h"
#include "core/clock.h"
#include "http/message.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    unsigned rise, fall;
} tt_health_conf_t;

/* An upstream's active checks, from its health_* keys. */
typedef struct {
    tt_request_line_t line;
    tt_status_set_t expect;
    tt_health_conf_t hysteresis;
    tt_msec_t interval, timeout;
    char host[300]; /* the Host header sent */
} tt_check_conf_t;

typedef struct {
    uint8_t up;
    unsigned _run;        /* checks in a row that disagree with the current state */
    tt_msec_t changed_at; /* last transition (0: none yet) */
} tt_health_t;

/* What one active check found: the result label of tether_health_checks_total. */
typedef enum {
    TT_HEALTH_OK,
    TT_HEALTH_CONNECT_FAILED, /* refused, unreachable */
    TT_HEALTH_TLS_FAILED,     /* the handshake of an https upstream's check */
    TT_HEALTH_TIMEOUT,        /* no verdict within health_timeout */
    TT_HEALTH_CLOSED,         /* closed or reset before a whole head */
    TT_HEALTH_MALFORMED,      /* not an HTTP/1.x response head */
    TT_HEALTH_STATUS,         /* a status outside health_expect */
} tt_health_result_t;

#define TT_HEALTH_RESULTS 7

/* "ok", "connect_failed", "tls_failed", "timeout", "closed", "malformed", "status". */
const char *tt_health_result_name(tt_health_result_t r);

void tt_health_init(tt_health_t *h);

/* Records one check's outcome. Returns 1 if the endpoint went up or down with it. */
int tt_health_record(tt_health_t *h, const tt_health_conf_t *conf, int passed, tt_msec_t now);

/* When the next check is due, delay ms after the last one give or take 10% (random picks where),
 * so that many tetherds (and workers) do not check in step: in [0.9 delay, 1.1 delay). */
tt_msec_t tt_check_next_delay(tt_msec_t interval, uint64_t random);

/* When an endpoint's first check is due: anywhere in [0, interval), so that a restart of many
 * tetherds does not start them in step either. */
tt_msec_t tt_check_first_delay(tt_msec_t interval, uint64_t random);

/* Appends the request tether sends: the line, Host, User-Agent, and "Connection: close" unless
 * keep_alive (a probe keeps its connection). */
void tt_check_request(const tt_request_line_t *rl, const char *host, int keep_alive, tt_buf_t *out);

typedef enum {
    TT_JUDGE_AGAIN, /* need more bytes */
    TT_JUDGE_PASS,
    TT_JUDGE_FAIL, /* tt_judge_reason() says why */
} tt_judge_verdict_t;

/* Bounds: a health answer's head, and a probe answer's body, which is read and dropped. */
#define TT_JUDGE_MAX_HEAD 8192
#define TT_JUDGE_MAX_BODY 65536

typedef struct {
    tt_http_reader_t _reader;
    tt_http_head_t *_head;
    tt_buf_t _buf; /* the head, from offset 0 */
    size_t _parsed;
    uint64_t _body;
    const tt_status_set_t *_expect;
    uint8_t _reuse, _head_request, _head_done;
    tt_judge_verdict_t _verdict;
    const char *_why;
} tt_judge_t;

/* expect may be NULL (any status). reuse: judge as a probe (see above). head_request: the
 * request was HEAD (no body follows). */
void tt_judge_init(tt_judge_t *j, const tt_status_set_t *expect, int reuse, int head_request);
void tt_judge_free(tt_judge_t *j);

/* Feeds bytes read from the connection; once PASS or FAIL, the verdict stays. */
tt_judge_verdict_t tt_judge_feed(tt_judge_t *j, const char *p, size_t n);
/* The connection closed (EOF). */
tt_judge_verdict_t tt_judge_eof(tt_judge_t *j);

/* The status read (0 before the head), and why the verdict is FAIL (a static string). */
unsigned tt_judge_status(const tt_judge_t *j);
const char *tt_judge_reason(const tt_judge_t *j);

/* The result a FAIL verdict of the judge stands for (CLOSED, STATUS or MALFORMED); OK on PASS. */
tt_health_result_t tt_health_result_of(const tt_judge_t *j);

#endif
