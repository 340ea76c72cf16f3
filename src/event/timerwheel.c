#include "event/timerwheel.h"

#include "core/invariant.h"

#include <stdio.h>

#define SLOT_MASK   ((tt_msec_t)TT_WHEEL_SLOTS - 1)
#define WHEEL_RANGE ((tt_msec_t)1 << (TT_WHEEL_BITS * TT_WHEEL_LEVELS))

static inline tt_msec_t level_span(unsigned level)
{
    return (tt_msec_t)1 << (TT_WHEEL_BITS * level);
}

static inline unsigned digit(tt_msec_t t, unsigned level)
{
    return (unsigned)((t >> (TT_WHEEL_BITS * level)) & SLOT_MASK);
}

void tt_timerwheel_init(tt_timerwheel_t *w, tt_msec_t now)
{
    w->_cursor = now;
    w->_count = 0;
    for (unsigned l = 0; l < TT_WHEEL_LEVELS; l++) {
        w->_occupied[l] = 0;
        for (unsigned s = 0; s < TT_WHEEL_SLOTS; s++)
            tt_list_init(&w->_slots[l][s]);
    }
}

void tt_timer_init(tt_timer_t *t, tt_timer_cb cb)
{
    tt_list_init(&t->_link);
    t->expire_at = TT_TIME_NEVER;
    t->cb = cb;
    t->_slot = 0;
}

/* The slot is chosen by distance from the cursor: level l holds deadlines 64^l..64^(l+1)-1 ms
 * away, in the slot of the deadline's level-l digit. That slot is first reached (cascaded) no
 * later than the deadline and no earlier than one level-l tick before it. */
static void place(tt_timerwheel_t *w, tt_timer_t *t)
{
    tt_msec_t c = w->_cursor;
    tt_msec_t e = t->expire_at < c ? c : t->expire_at;
    if (e - c >= WHEEL_RANGE)
        e = c + WHEEL_RANGE - 1;
    tt_msec_t delta = e - c;
    unsigned level =
        delta < TT_WHEEL_SLOTS ? 0 : (unsigned)(63 - __builtin_clzll(delta)) / TT_WHEEL_BITS;
    unsigned slot = digit(e, level);
    tt_list_push_back(&w->_slots[level][slot], &t->_link);
    w->_occupied[level] |= (uint64_t)1 << slot;
    t->_slot = (uint16_t)(level * TT_WHEEL_SLOTS + slot);
}

static void unlink_timer(tt_timerwheel_t *w, tt_timer_t *t)
{
    unsigned level = t->_slot / TT_WHEEL_SLOTS, slot = t->_slot % TT_WHEEL_SLOTS;
    tt_list_remove(&t->_link);
    if (tt_list_empty(&w->_slots[level][slot]))
        w->_occupied[level] &= ~((uint64_t)1 << slot);
    w->_count--;
}

void tt_timer_start(tt_timerwheel_t *w, tt_timer_t *t, tt_msec_t expire_at)
{
    if (tt_timer_armed(t))
        unlink_timer(w, t);
    t->expire_at = expire_at;
    place(w, t);
    w->_count++;
}

void tt_timer_stop(tt_timerwheel_t *w, tt_timer_t *t)
{
    if (tt_timer_armed(t))
        unlink_timer(w, t);
}

/* Detaches a whole slot into out. */
static void take_slot(tt_timerwheel_t *w, unsigned level, unsigned slot, tt_list_t *out)
{
    tt_list_init(out);
    tt_list_splice_back(out, &w->_slots[level][slot]);
    w->_occupied[level] &= ~((uint64_t)1 << slot);
}

/* Moves the cursor to c and redistributes the higher-level slots whose tick starts at c. */
static void advance(tt_timerwheel_t *w, tt_msec_t c)
{
    w->_cursor = c;
    for (unsigned l = 1; l < TT_WHEEL_LEVELS; l++) {
        if ((c & (level_span(l) - 1)) != 0)
            break;
        unsigned slot = digit(c, l);
        if (!(w->_occupied[l] & ((uint64_t)1 << slot)))
            continue;
        tt_list_t moving;
        take_slot(w, l, slot, &moving);
        while (!tt_list_empty(&moving)) {
            tt_list_t *n = tt_list_first(&moving);
            tt_list_remove(n);
            place(w, tt_container_of(n, tt_timer_t, _link));
        }
    }
}

/* When slot s of level l is next reached from the cursor. At level 0 a slot equal to the cursor's
 * digit is due now; at higher levels it was cascaded on arrival, so it means the next rotation. */
static tt_msec_t slot_reach_time(tt_msec_t c, unsigned level, unsigned s)
{
    tt_msec_t span = level_span(level), rotation = span * TT_WHEEL_SLOTS;
    tt_msec_t base = c & ~(rotation - 1);
    unsigned d = digit(c, level);
    if (s > d || (level == 0 && s == d))
        return base + s * span;
    return base + rotation + s * span;
}

tt_msec_t tt_timerwheel_next(const tt_timerwheel_t *w)
{
    tt_msec_t best = TT_TIME_NEVER, c = w->_cursor;
    for (unsigned l = 0; l < TT_WHEEL_LEVELS; l++) {
        uint64_t mask = w->_occupied[l];
        if (mask == 0)
            continue;
        unsigned d = digit(c, l), first_ahead = l == 0 ? d : d + 1;
        uint64_t ahead = first_ahead >= 64 ? 0 : mask & (~(uint64_t)0 << first_ahead);
        unsigned s = (unsigned)__builtin_ctzll(ahead ? ahead : mask);
        tt_msec_t t = slot_reach_time(c, l, s);
        if (t < best)
            best = t;
    }
    return best;
}

size_t tt_timerwheel_run(tt_timerwheel_t *w, tt_msec_t now)
{
    /* Everything due is collected first and the cursor moved past now before any callback runs
     * (as libuv and H2O do): a timer re-armed for a time <= now from a callback is placed after
     * the cursor and waits for the next run, however many milliseconds this run spans. Collected
     * timers stay armed, so a callback may still stop or re-arm one that has not fired yet. */
    tt_list_t due;
    tt_list_init(&due);
    for (;;) {
        tt_msec_t t = tt_timerwheel_next(w);
        if (t == TT_TIME_NEVER || t > now)
            break;
        if (t != w->_cursor)
            advance(w, t);
        unsigned slot = digit(t, 0);
        if (!(w->_occupied[0] & ((uint64_t)1 << slot)))
            continue; /* t was a cascade only */
        tt_list_t batch;
        take_slot(w, 0, slot, &batch);
        advance(w, t + 1);
        while (!tt_list_empty(&batch)) {
            tt_list_t *n = tt_list_first(&batch);
            tt_timer_t *timer = tt_container_of(n, tt_timer_t, _link);
            tt_list_remove(n);
            if (timer->expire_at > now) /* parked beyond the wheel's range */
                place(w, timer);
            else
                tt_list_push_back(&due, n);
        }
    }
    if (w->_cursor <= now)
        advance(w, now + 1);
    size_t fired = 0;
    while (!tt_list_empty(&due)) {
        tt_list_t *n = tt_list_first(&due);
        tt_timer_t *timer = tt_container_of(n, tt_timer_t, _link);
        tt_list_remove(n);
        w->_count--;
        fired++;
        timer->cb(timer);
    }
    return fired;
}

int tt_timerwheel_validate(const tt_timerwheel_t *w)
{
    size_t count = 0;
    for (unsigned l = 0; l < TT_WHEEL_LEVELS; l++) {
        for (unsigned s = 0; s < TT_WHEEL_SLOTS; s++) {
            const tt_list_t *head = &w->_slots[l][s];
            int bit = (w->_occupied[l] >> s) & 1;
            if (bit != !tt_list_empty(head)) {
                fprintf(stderr, "timerwheel: level %u slot %u: bit %d, list %s\n", l, s, bit,
                        tt_list_empty(head) ? "empty" : "non-empty");
                return -1;
            }
            for (const tt_list_t *n = head->next; n != head; n = n->next) {
                const tt_timer_t *t = tt_container_of(n, tt_timer_t, _link);
                tt_msec_t reach = slot_reach_time(w->_cursor, l, s);
                tt_msec_t e = t->expire_at < w->_cursor ? w->_cursor : t->expire_at;
                if (t->_slot != l * TT_WHEEL_SLOTS + s || reach > e ||
                    (e - w->_cursor < WHEEL_RANGE && e - reach >= level_span(l))) {
                    fprintf(stderr,
                            "timerwheel: timer expiring %llu misplaced at level %u slot %u "
                            "(cursor %llu, reach %llu)\n",
                            (unsigned long long)t->expire_at, l, s, (unsigned long long)w->_cursor,
                            (unsigned long long)reach);
                    return -1;
                }
                count++;
            }
        }
    }
    if (count != w->_count) {
        fprintf(stderr, "timerwheel: %zu timers linked, count says %zu\n", count, w->_count);
        return -1;
    }
    return 0;
}
