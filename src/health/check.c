#include "health/check.h"

#include "core/invariant.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tt_health_init(tt_health_t *h)
{
    *h = (tt_health_t){.up = 1};
}

int tt_health_record(tt_health_t *h, const tt_health_conf_t *conf, int passed, tt_msec_t now)
{
    if ((passed != 0) == (h->up != 0)) {
        h->_run = 0;
        return 0;
    }
    unsigned need = h->up ? conf->fall : conf->rise;
    if (++h->_run < (need ? need : 1))
        return 0;
    h->up = !h->up;
    h->_run = 0;
    h->changed_at = now;
    return 1;
}

tt_msec_t tt_check_next_delay(tt_msec_t interval, uint64_t random)
{
    tt_msec_t spread = interval / 5;
    return interval - interval / 10 + (spread ? random % spread : 0);
}

tt_msec_t tt_check_first_delay(tt_msec_t interval, uint64_t random)
{
    return interval ? random % interval : 0;
}

void tt_check_request(const tt_request_line_t *rl, const char *host, int keep_alive, tt_buf_t *out)
{
    tt_buf_appendf(out, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tether-health\r\n%s\r\n",
                   rl->method, rl->target, host, keep_alive ? "" : "Connection: close\r\n");
}

void tt_judge_init(tt_judge_t *j, const tt_status_set_t *expect, int reuse, int head_request)
{
    memset(j, 0, sizeof(*j));
    tt_http_reader_init(&j->_reader, HTTP_RESPONSE);
    j->_head = tt_malloc(sizeof(*j->_head));
    j->_expect = expect;
    j->_reuse = (uint8_t)reuse;
    j->_head_request = (uint8_t)head_request;
    tt_http_reader_begin_head(&j->_reader, j->_head, head_request);
}

void tt_judge_free(tt_judge_t *j)
{
    free(j->_head);
    free(j->_buf.data);
    j->_head = NULL;
    j->_buf.data = NULL;
}

static tt_judge_verdict_t verdict(tt_judge_t *j, tt_judge_verdict_t v, const char *why)
{
    j->_verdict = v;
    j->_why = why;
    return v;
}

/* The head is complete: judge the status and, for a probe, keep-alive. */
static tt_judge_verdict_t judge_head(tt_judge_t *j)
{
    unsigned status = j->_head->status;
    if (status < 200) /* 1xx: tether sends no Expect, so none is due */
        return verdict(j, TT_JUDGE_FAIL, "interim response");
    if (!tt_status_set_has(j->_expect, status))
        return verdict(j, TT_JUDGE_FAIL, "unexpected status");
    if (!j->_reuse)
        return verdict(j, TT_JUDGE_PASS, NULL);
    if (!j->_head->keep_alive)
        return verdict(j, TT_JUDGE_FAIL, "connection close");
    if (j->_head_request) /* no body follows, whatever the head announces */
        return verdict(j, j->_buf.wpos > j->_parsed ? TT_JUDGE_FAIL : TT_JUDGE_PASS,
                       j->_buf.wpos > j->_parsed ? "bytes after the response" : NULL);
    return TT_JUDGE_AGAIN;
}

static tt_judge_verdict_t feed_body(tt_judge_t *j, const char *p, size_t n)
{
    if (tt_http_reader_message_done(&j->_reader)) {
        if (n > 0)
            return verdict(j, TT_JUDGE_FAIL, "bytes after the response");
        return verdict(j, TT_JUDGE_PASS, NULL);
    }
    size_t used = 0;
    tt_http_status_t st = tt_http_reader_body(&j->_reader, p, n, &used);
    j->_body += used;
    if (st == TT_HTTP_ERROR)
        return verdict(j, TT_JUDGE_FAIL, "malformed response");
    if (j->_body > TT_JUDGE_MAX_BODY)
        return verdict(j, TT_JUDGE_FAIL, "response too large");
    if (st == TT_HTTP_MESSAGE_DONE) {
        if (used < n)
            return verdict(j, TT_JUDGE_FAIL, "bytes after the response");
        if (tt_http_reader_needs_eof(&j->_reader))
            return verdict(j, TT_JUDGE_FAIL, "connection close");
        return verdict(j, TT_JUDGE_PASS, NULL);
    }
    if (tt_http_reader_needs_eof(&j->_reader))
        return verdict(j, TT_JUDGE_FAIL, "connection close"); /* close-delimited body */
    return TT_JUDGE_AGAIN;
}

tt_judge_verdict_t tt_judge_feed(tt_judge_t *j, const char *p, size_t n)
{
    if (j->_verdict != TT_JUDGE_AGAIN)
        return j->_verdict;
    if (j->_head_done)
        return feed_body(j, p, n);
    if (n == 0)
        return TT_JUDGE_AGAIN;
    if (tt_buf_reserve(&j->_buf, n, TT_JUDGE_MAX_HEAD + TT_JUDGE_MAX_BODY) < 0)
        return verdict(j, TT_JUDGE_FAIL, "response head too large");
    memcpy(tt_buf_wptr(&j->_buf), p, n);
    j->_buf.wpos += n;
    tt_http_status_t st =
        tt_http_reader_head(&j->_reader, &j->_buf, &j->_parsed, TT_JUDGE_MAX_HEAD);
    if (st == TT_HTTP_AGAIN)
        return TT_JUDGE_AGAIN;
    if (st == TT_HTTP_HEAD_TOO_LARGE)
        return verdict(j, TT_JUDGE_FAIL, "response head too large");
    if (st == TT_HTTP_ERROR)
        return verdict(j, TT_JUDGE_FAIL, "malformed response");
    j->_head_done = 1;
    tt_judge_verdict_t v = judge_head(j);
    if (v != TT_JUDGE_AGAIN)
        return v;
    return feed_body(j, j->_buf.data + j->_parsed, j->_buf.wpos - j->_parsed);
}

tt_judge_verdict_t tt_judge_eof(tt_judge_t *j)
{
    if (j->_verdict != TT_JUDGE_AGAIN)
        return j->_verdict;
    if (!j->_head_done)
        return verdict(j, TT_JUDGE_FAIL,
                       j->_buf.wpos == 0 ? "closed without a response" : "truncated response");
    return verdict(j, TT_JUDGE_FAIL, "connection close");
}

unsigned tt_judge_status(const tt_judge_t *j)
{
    return j->_head_done ? j->_head->status : 0;
}

const char *tt_judge_reason(const tt_judge_t *j)
{
    return j->_why;
}

const char *tt_health_result_name(tt_health_result_t r)
{
    static const char *const names[TT_HEALTH_RESULTS] = {
        [TT_HEALTH_OK] = "ok",
        [TT_HEALTH_CONNECT_FAILED] = "connect_failed",
        [TT_HEALTH_TLS_FAILED] = "tls_failed",
        [TT_HEALTH_TIMEOUT] = "timeout",
        [TT_HEALTH_CLOSED] = "closed",
        [TT_HEALTH_MALFORMED] = "malformed",
        [TT_HEALTH_STATUS] = "status",
    };
    return (unsigned)r < TT_HEALTH_RESULTS ? names[r] : "unknown";
}

tt_health_result_t tt_health_result_of(const tt_judge_t *j)
{
    const char *why = tt_judge_reason(j);
    if (why == NULL)
        return TT_HEALTH_OK;
    if (strcmp(why, "unexpected status") == 0)
        return TT_HEALTH_STATUS;
    if (strcmp(why, "closed without a response") == 0)
        return TT_HEALTH_CLOSED;
    return TT_HEALTH_MALFORMED;
}
