#include "health/breaker.h"

#include "core/invariant.h"

void tt_breaker_init(tt_breaker_t *b)
{
    *b = (tt_breaker_t){._state = TT_BREAKER_CLOSED};
}

tt_breaker_state_t tt_breaker_state(tt_breaker_t *b, tt_msec_t now)
{
    if (b->_state == TT_BREAKER_OPEN && now >= b->_until) {
        b->_state = TT_BREAKER_HALF_OPEN;
        b->_trial = 0;
    }
    return b->_state;
}

int tt_breaker_allows(tt_breaker_t *b, tt_msec_t now)
{
    switch (tt_breaker_state(b, now)) {
    case TT_BREAKER_CLOSED:
        return 1;
    case TT_BREAKER_HALF_OPEN:
        return !b->_trial;
    case TT_BREAKER_OPEN:
        break;
    }
    return 0;
}

void tt_breaker_on_attempt(tt_breaker_t *b, tt_msec_t now)
{
    if (tt_breaker_state(b, now) == TT_BREAKER_HALF_OPEN)
        b->_trial = 1;
}

/* The doubling level after a quiet spell: one level is forgiven per max_cooldown spent closed. */
static unsigned decayed_level(const tt_breaker_t *b, const tt_breaker_conf_t *conf, tt_msec_t now)
{
    if (b->_state != TT_BREAKER_CLOSED || b->_level == 0 || conf->max_cooldown == 0)
        return b->_level;
    tt_msec_t quiet = now > b->_closed_at ? now - b->_closed_at : 0;
    tt_msec_t forgiven = quiet / conf->max_cooldown;
    return forgiven >= b->_level ? 0 : b->_level - (unsigned)forgiven;
}

tt_msec_t tt_breaker_next_cooldown(const tt_breaker_t *b, const tt_breaker_conf_t *conf,
                                   tt_msec_t now)
{
    unsigned level = decayed_level(b, conf, now);
    tt_msec_t c = conf->cooldown;
    for (unsigned i = 0; i < level && c < conf->max_cooldown; i++)
        c *= 2;
    return TT_MIN(c, TT_MAX(conf->max_cooldown, conf->cooldown));
}

static void open_now(tt_breaker_t *b, const tt_breaker_conf_t *conf, tt_msec_t now)
{
    tt_msec_t cooldown = tt_breaker_next_cooldown(b, conf, now);
    b->_level = decayed_level(b, conf, now) + 1;
    if (b->_level > 30)
        b->_level = 30;
    b->_state = TT_BREAKER_OPEN;
    b->_until = now + cooldown;
    b->_trial = 0;
    b->_consecutive = 0;
}

int tt_breaker_on_failure(tt_breaker_t *b, const tt_breaker_conf_t *conf, tt_msec_t now,
                          int may_eject)
{
    switch (tt_breaker_state(b, now)) {
    case TT_BREAKER_OPEN:
        /* A request sent before the breaker opened: its failure is already accounted for. */
        return 0;
    case TT_BREAKER_HALF_OPEN:
        /* The trial failed. The endpoint was already counted as ejected, so max_ejected does
         * not hold it back. */
        open_now(b, conf, now);
        return 1;
    case TT_BREAKER_CLOSED:
        break;
    }
    if (conf->failures == 0)
        return 0;
    if (b->_consecutive < conf->failures)
        b->_consecutive++;
    if (b->_consecutive < conf->failures || !may_eject)
        return 0;
    open_now(b, conf, now);
    return 1;
}

int tt_breaker_on_success(tt_breaker_t *b, const tt_breaker_conf_t *conf, tt_msec_t now)
{
    (void)conf;
    tt_breaker_state_t s = tt_breaker_state(b, now);
    if (s == TT_BREAKER_CLOSED) {
        b->_consecutive = 0;
        return 0;
    }
    if (s == TT_BREAKER_OPEN)
        return 0; /* a late success of a request sent before the breaker opened */
    b->_state = TT_BREAKER_CLOSED;
    b->_consecutive = 0;
    b->_trial = 0;
    b->_closed_at = now;
    return 1;
}

void tt_breaker_on_abandon(tt_breaker_t *b)
{
    if (b->_state == TT_BREAKER_HALF_OPEN)
        b->_trial = 0;
}

int tt_breaker_may_eject(size_t nendpoints, size_t nejected, unsigned max_pct)
{
    if (max_pct == 0 || nendpoints == 0)
        return 0;
    size_t cap = nendpoints * max_pct / 100;
    if (cap < 1)
        cap = 1;
    return nejected < cap;
}

const char *tt_breaker_state_name(tt_breaker_state_t s)
{
    switch (s) {
    case TT_BREAKER_CLOSED:
        return "closed";
    case TT_BREAKER_OPEN:
        return "open";
    case TT_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "?";
}
