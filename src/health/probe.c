#include "health/probe.h"

#include <string.h>

tt_msec_t tt_probe_next(const tt_probe_conf_t *c, tt_msec_t idle_since, tt_msec_t last_probe,
                        tt_msec_t expires_at)
{
    tt_msec_t at = (last_probe > idle_since ? last_probe : idle_since) + c->interval;
    if (expires_at != TT_TIME_NEVER && at + c->timeout >= expires_at)
        return TT_TIME_NEVER;
    return at;
}

void tt_probe_begin(tt_probe_t *p, const tt_probe_conf_t *c, const char *host, tt_msec_t now,
                    tt_buf_t *out)
{
    tt_check_request(&c->line, host, 1, out);
    tt_judge_init(&p->_judge, &c->expect, 1, strcmp(c->line.method, "HEAD") == 0);
    p->deadline = now + c->timeout;
}

static tt_probe_result_t result_of(const tt_judge_t *j)
{
    const char *why = tt_judge_reason(j);
    if (why == NULL)
        return TT_PROBE_OK;
    if (strcmp(why, "unexpected status") == 0)
        return TT_PROBE_STATUS;
    if (strcmp(why, "connection close") == 0)
        return TT_PROBE_NO_REUSE;
    if (strcmp(why, "closed without a response") == 0)
        return TT_PROBE_CLOSED;
    return TT_PROBE_MALFORMED;
}

int tt_probe_feed(tt_probe_t *p, const char *data, size_t n, tt_probe_result_t *result)
{
    if (tt_judge_feed(&p->_judge, data, n) == TT_JUDGE_AGAIN)
        return 0;
    *result = result_of(&p->_judge);
    return 1;
}

tt_probe_result_t tt_probe_closed(tt_probe_t *p)
{
    /* Whatever had arrived, the connection is gone: the pool closes its side too. */
    (void)p;
    return TT_PROBE_CLOSED;
}

void tt_probe_end(tt_probe_t *p)
{
    tt_judge_free(&p->_judge);
}

const char *tt_probe_result_name(tt_probe_result_t r)
{
    static const char *const names[] = {"ok",        "timeout", "closed",
                                        "malformed", "status",  "no_reuse"};
    return names[r];
}
