/* Hierarchical timer wheel for many coarse timers (idle expiry, header and response timeouts).
 *
 * Five levels of 64 slots at millisecond resolution cover 2^30 ms (12 days); later deadlines are
 * parked at the far end and re-placed when reached. Starting, stopping and firing a timer is O(1);
 * a 64-bit occupancy map per level finds the next due slot without scanning empty ones. Timers are
 * embedded in their owners (no allocation) and a stopped timer may be started again at once.
 * Not thread-safe: a wheel belongs to one event loop. See docs/internals/loop.md. */
#ifndef TT_EVENT_TIMERWHEEL_H
#define TT_EVENT_TIMERWHEEL_H

#include "core/clock.h"
#include "core/list.h"

#include <stddef.h>
#include <stdint.h>

#define TT_WHEEL_BITS   6
#define TT_WHEEL_SLOTS  (1u << TT_WHEEL_BITS)
#define TT_WHEEL_LEVELS 5

typedef struct tt_timer tt_timer_t;
typedef void (*tt_timer_cb)(tt_timer_t *timer);

struct tt_timer {
    tt_list_t _link;
    tt_msec_t expire_at;
    tt_timer_cb cb;
    uint16_t _slot; /* level * TT_WHEEL_SLOTS + slot while linked */
};

typedef struct {
    tt_msec_t _cursor; /* every event before this tick has been processed */
    size_t _count;
    uint64_t _occupied[TT_WHEEL_LEVELS];
    tt_list_t _slots[TT_WHEEL_LEVELS][TT_WHEEL_SLOTS];
} tt_timerwheel_t;

void tt_timerwheel_init(tt_timerwheel_t *w, tt_msec_t now);

/* Prepares an embedded timer; cb runs once when it expires, from tt_timerwheel_run(). */
void tt_timer_init(tt_timer_t *t, tt_timer_cb cb);

/* (Re)arms t to fire at expire_at (absolute ms). A deadline in the past fires on the next run. */
void tt_timer_start(tt_timerwheel_t *w, tt_timer_t *t, tt_msec_t expire_at);

/* Disarms t; harmless if it is not armed. Safe from any callback, including t's own. */
void tt_timer_stop(tt_timerwheel_t *w, tt_timer_t *t);

static inline int tt_timer_armed(const tt_timer_t *t)
{
    return tt_list_linked(&t->_link);
}

/* Fires every timer due at or before now, in deadline order slot by slot. Callbacks may start and
 * stop any timer; one re-armed for a time <= now fires on the next run, not this one. Returns the
 * number fired. */
size_t tt_timerwheel_run(tt_timerwheel_t *w, tt_msec_t now);

/* Earliest time at which tt_timerwheel_run() has work (fire or cascade), or TT_TIME_NEVER. May be
 * earlier than the earliest deadline, never later, except that a deadline already passed when it
 * was armed counts as the next millisecond after the last run. */
tt_msec_t tt_timerwheel_next(const tt_timerwheel_t *w);

static inline size_t tt_timerwheel_count(const tt_timerwheel_t *w)
{
    return w->_count;
}

/* Checks every internal invariant; returns 0 if sound, -1 (and prints why) if not. For tests. */
int tt_timerwheel_validate(const tt_timerwheel_t *w);

#endif
