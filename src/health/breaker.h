/* Passive outlier ejection: a circuit breaker per endpoint, judged by the outcomes of real
 * requests.
 *
 *   closed --(failures consecutive failures, and max_ejected allows)--> open
 *   open   --(cooldown passed)--> half_open
 *   half_open --(the one trial succeeds)--> closed
 *   half_open --(the trial fails)--> open, with the cooldown doubled (up to max_cooldown)
 *
 * The doubling level decays: an endpoint that stays closed for max_cooldown without being
 * ejected again starts over at the base cooldown. A breaker belongs to one worker (no locks);
 * time comes from the caller, so tests drive it with a fake clock. See docs/internals/health.md. */
#ifndef TT_HEALTH_BREAKER_H
#define TT_HEALTH_BREAKER_H

#include "core/clock.h"

#include <stddef.h>

typedef enum {
    TT_BREAKER_CLOSED,
    TT_BREAKER_OPEN,
    TT_BREAKER_HALF_OPEN,
} tt_breaker_state_t;

typedef struct {
    unsigned failures;      /* consecutive failures that open the breaker; 0: never opens */
    tt_msec_t cooldown;     /* first ejection */
    tt_msec_t max_cooldown; /* cap of the doubling */
} tt_breaker_conf_t;

typedef struct {
    tt_breaker_state_t _state;
    unsigned _consecutive; /* failures in a row while closed */
    unsigned _level;       /* ejections in a row: cooldown << level */
    int _trial;            /* half-open: the trial request is out */
    tt_msec_t _until;      /* open: end of the cooldown */
    tt_msec_t _closed_at;  /* when it last closed, for the decay of _level */
} tt_breaker_t;

void tt_breaker_init(tt_breaker_t *b);

/* The state at now: an open breaker whose cooldown has passed reads as half-open (and is). */
tt_breaker_state_t tt_breaker_state(tt_breaker_t *b, tt_msec_t now);

/* Whether a new request may go to this endpoint now: closed, or half-open with no trial out. */
int tt_breaker_allows(tt_breaker_t *b, tt_msec_t now);

/* A request was sent to this endpoint; in half-open state it is the trial and no other request
 * is allowed until its outcome is known. */
void tt_breaker_on_attempt(tt_breaker_t *b, tt_msec_t now);

/* Outcome of a request. may_eject says whether the upstream's max_ejected still allows one more
 * endpoint out (tt_breaker_may_eject). Returns 1 if this failure opened the breaker. */
int tt_breaker_on_failure(tt_breaker_t *b, const tt_breaker_conf_t *conf, tt_msec_t now,
                          int may_eject);
/* Returns 1 if this success closed a half-open breaker. */
int tt_breaker_on_success(tt_breaker_t *b, const tt_breaker_conf_t *conf, tt_msec_t now);

/* A request given the trial ended without an outcome (the client went away before anything was
 * sent): another request may be the trial. */
void tt_breaker_on_abandon(tt_breaker_t *b);

/* Cooldown the next ejection would get. */
tt_msec_t tt_breaker_next_cooldown(const tt_breaker_t *b, const tt_breaker_conf_t *conf,
                                   tt_msec_t now);

/* End of the current cooldown (open state), else TT_TIME_NEVER. */
static inline tt_msec_t tt_breaker_open_until(const tt_breaker_t *b)
{
    return b->_state == TT_BREAKER_OPEN ? b->_until : TT_TIME_NEVER;
}

/* max_ejected: whether one more of nendpoints may be ejected while nejected already are, with at
 * most max_pct percent out at once. At least one endpoint may always be ejected (so a single
 * endpoint can fail fast), none when max_pct is 0. */
int tt_breaker_may_eject(size_t nendpoints, size_t nejected, unsigned max_pct);

const char *tt_breaker_state_name(tt_breaker_state_t s);

#endif
