/* One epoll event loop per worker thread: I/O watchers, a timer wheel, deferred work and a
 * cross-thread wakeup. Nothing here is thread-safe except tt_loop_wakeup().
 *
 * Ownership: watchers (tt_io_t), timers and deferred items are embedded in their owners. An owner
 * that closes itself from inside a callback stops its watcher and timers at once and frees its
 * memory through tt_loop_defer(), which runs after the current batch of events: later events of
 * the same batch for the stopped watcher are dropped, never delivered to freed memory. A stopped
 * watcher is not started again; a new connection gets a new owner. See docs/internals/loop.md. */
#ifndef TT_EVENT_LOOP_H
#define TT_EVENT_LOOP_H

#include "core/clock.h"
#include "core/list.h"
#include "event/timerwheel.h"

#include <stdint.h>
#include <sys/epoll.h>

typedef struct tt_loop tt_loop_t;
typedef struct tt_io tt_io_t;

typedef void (*tt_io_cb)(tt_io_t *io, uint32_t events);

struct tt_io {
    int fd; /* -1 when not registered */
    uint32_t events;
    tt_io_cb cb;
};

typedef struct tt_deferred {
    tt_list_t _link;
    void (*cb)(struct tt_deferred *d);
} tt_deferred_t;

typedef void (*tt_wakeup_cb)(tt_loop_t *loop, void *data);

/* Where a loop reads the time: the monotonic clock, or a test's fake one. */
typedef tt_msec_t (*tt_clock_cb)(void *arg);

/* Creates a loop; returns NULL (errno set) if epoll or eventfd cannot be created. */
tt_loop_t *tt_loop_create(void);
/* Frees the loop. Every watcher and timer must have been stopped by its owner first. */
void tt_loop_destroy(tt_loop_t *loop);

/* Runs until tt_loop_stop(). Returns 0, or -1 if epoll_wait fails for a reason other than EINTR. */
int tt_loop_run(tt_loop_t *loop);
/* Makes tt_loop_run() return after the current iteration. Loop thread only. */
void tt_loop_stop(tt_loop_t *loop);

/* Runs one iteration: reads the clock, fires the timers due, waits for I/O at most max_wait_ms
 * (0: only what is ready; -1: until the next timer), dispatches the events and runs deferred
 * work. Returns the number of I/O events, or -1 if epoll_wait fails. For tests that drive a
 * loop step by step (with a fake clock, see tt_loop_set_clock). */
int tt_loop_run_once(tt_loop_t *loop, int max_wait_ms);

/* Makes the loop read the time from clock(arg) instead of the monotonic clock; the timer wheel
 * restarts at that time, so no timer may be armed. For tests: idle expiry, lifetimes and queue
 * deadlines then move only when the test moves its clock. */
void tt_loop_set_clock(tt_loop_t *loop, tt_clock_cb clock, void *arg);

/* Milliseconds of the loop's clock, read once per loop iteration. */
tt_msec_t tt_loop_now(const tt_loop_t *loop);
tt_timerwheel_t *tt_loop_timers(tt_loop_t *loop);

/* Arms timer t to fire after ms milliseconds (from the cached now). */
void tt_loop_timer_after(tt_loop_t *loop, tt_timer_t *t, tt_msec_t ms);
void tt_loop_timer_stop(tt_loop_t *loop, tt_timer_t *t);

/* Registers fd for events (EPOLLIN/EPOLLOUT/...; edge-triggered is not used). Returns 0 or -1. */
int tt_io_start(tt_loop_t *loop, tt_io_t *io, int fd, uint32_t events, tt_io_cb cb);
/* Changes the event mask; a no-op when unchanged. Returns 0 or -1. */
int tt_io_set_events(tt_loop_t *loop, tt_io_t *io, uint32_t events);
/* Unregisters the watcher (the owner still closes the fd). Pending events of this batch are
 * dropped. Harmless when not registered. */
void tt_io_stop(tt_loop_t *loop, tt_io_t *io);

/* Closes the watcher's fd, which also removes it from epoll (tether never duplicates an fd), so
 * no EPOLL_CTL_DEL is needed. Pending events of this batch are dropped. */
void tt_io_close(tt_loop_t *loop, tt_io_t *io);

/* Queues d->cb to run once after the current batch of events (or timers). */
void tt_loop_defer(tt_loop_t *loop, tt_deferred_t *d, void (*cb)(tt_deferred_t *d));

/* Runs the deferred queue now; for final cleanup after tt_loop_run() returned. */
void tt_loop_run_deferred(tt_loop_t *loop);

/* Sets the function run on the loop thread after tt_loop_wakeup(). */
void tt_loop_on_wakeup(tt_loop_t *loop, tt_wakeup_cb cb, void *data);
/* Wakes the loop from any thread; wakeups coalesce. Async-signal-safe. */
void tt_loop_wakeup(tt_loop_t *loop);

#endif
