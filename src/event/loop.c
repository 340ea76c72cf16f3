#include "event/loop.h"

#include "core/invariant.h"
#include "core/log.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_EVENTS 256

struct tt_loop {
    int epfd;
    int running;
    tt_msec_t now;
    tt_clock_cb clock; /* NULL: the monotonic clock */
    void *clock_arg;
    tt_timerwheel_t timers;
    tt_list_t deferred;
    tt_io_t wakeup_io;
    tt_wakeup_cb wakeup_cb;
    void *wakeup_data;
};

static void wakeup_read_cb(tt_io_t *io, uint32_t events)
{
    tt_loop_t *loop = tt_container_of(io, tt_loop_t, wakeup_io);
    uint64_t value;
    while (read(io->fd, &value, sizeof(value)) > 0)
        ;
    if (loop->wakeup_cb != NULL)
        loop->wakeup_cb(loop, loop->wakeup_data);
}

tt_loop_t *tt_loop_create(void)
{
    tt_loop_t *loop = tt_calloc(1, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->epfd < 0 || efd < 0) {
        int saved = errno;
        if (loop->epfd >= 0)
            close(loop->epfd);
        if (efd >= 0)
            close(efd);
        free(loop);
        errno = saved;
        return NULL;
    }
    loop->now = tt_clock_monotonic_ms();
    tt_timerwheel_init(&loop->timers, loop->now);
    tt_list_init(&loop->deferred);
    loop->wakeup_io.fd = -1;
    if (tt_io_start(loop, &loop->wakeup_io, efd, EPOLLIN, wakeup_read_cb) < 0) {
        close(efd);
        close(loop->epfd);
        free(loop);
        return NULL;
    }
    return loop;
}

void tt_loop_destroy(tt_loop_t *loop)
{
    int efd = loop->wakeup_io.fd;
    tt_io_stop(loop, &loop->wakeup_io);
    close(efd);
    TT_ASSERT(tt_list_empty(&loop->deferred));
    close(loop->epfd);
    free(loop);
}

tt_msec_t tt_loop_now(const tt_loop_t *loop)
{
    return loop->now;
}

tt_timerwheel_t *tt_loop_timers(tt_loop_t *loop)
{
    return &loop->timers;
}

void tt_loop_timer_after(tt_loop_t *loop, tt_timer_t *t, tt_msec_t ms)
{
    tt_timer_start(&loop->timers, t, loop->now + ms);
}

void tt_loop_timer_stop(tt_loop_t *loop, tt_timer_t *t)
{
    tt_timer_stop(&loop->timers, t);
}

int tt_io_start(tt_loop_t *loop, tt_io_t *io, int fd, uint32_t events, tt_io_cb cb)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -1;
    io->fd = fd;
    io->events = events;
    io->cb = cb;
    return 0;
}

int tt_io_set_events(tt_loop_t *loop, tt_io_t *io, uint32_t events)
{
    if (io->fd < 0 || io->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
        return -1;
    io->events = events;
    return 0;
}

void tt_io_stop(tt_loop_t *loop, tt_io_t *io)
{
    if (io->fd < 0)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->fd = -1;
}

void tt_io_close(tt_loop_t *loop, tt_io_t *io)
{
    (void)loop;
    if (io->fd < 0)
        return;
    close(io->fd);
    io->fd = -1;
}

void tt_loop_defer(tt_loop_t *loop, tt_deferred_t *d, void (*cb)(tt_deferred_t *d))
{
    d->cb = cb;
    tt_list_push_back(&loop->deferred, &d->_link);
}

void tt_loop_run_deferred(tt_loop_t *loop)
{
    while (!tt_list_empty(&loop->deferred)) {
        tt_list_t *n = tt_list_first(&loop->deferred);
        tt_list_remove(n);
        tt_deferred_t *d = tt_container_of(n, tt_deferred_t, _link);
        d->cb(d);
    }
}

void tt_loop_on_wakeup(tt_loop_t *loop, tt_wakeup_cb cb, void *data)
{
    loop->wakeup_cb = cb;
    loop->wakeup_data = data;
}

void tt_loop_wakeup(tt_loop_t *loop)
{
    uint64_t one = 1;
    ssize_t n = write(loop->wakeup_io.fd, &one, sizeof(one));
    (void)n; /* EAGAIN means a wakeup is already pending */
}

void tt_loop_stop(tt_loop_t *loop)
{
    loop->running = 0;
}

static tt_msec_t read_clock(const tt_loop_t *loop)
{
    return loop->clock != NULL ? loop->clock(loop->clock_arg) : tt_clock_monotonic_ms();
}

void tt_loop_set_clock(tt_loop_t *loop, tt_clock_cb clock, void *arg)
{
    TT_ASSERT(tt_timerwheel_count(&loop->timers) == 0);
    loop->clock = clock;
    loop->clock_arg = arg;
    loop->now = read_clock(loop);
    tt_timerwheel_init(&loop->timers, loop->now);
}

static int next_timeout_ms(tt_loop_t *loop)
{
    if (!tt_list_empty(&loop->deferred))
        return 0;
    tt_msec_t next = tt_timerwheel_next(&loop->timers);
    if (next == TT_TIME_NEVER)
        return -1;
    if (next <= loop->now)
        return 0;
    tt_msec_t wait = next - loop->now;
    return wait > 60000 ? 60000 : (int)wait;
}

/* One iteration; max_wait_ms < 0: wait until the next timer. Returns the events dispatched, 0
 * when stopped by a timer or deferred callback, or -1 if epoll_wait failed. */
static int iterate(tt_loop_t *loop, int max_wait_ms)
{
    struct epoll_event events[MAX_EVENTS];
    loop->now = read_clock(loop);
    tt_timerwheel_run(&loop->timers, loop->now);
    tt_loop_run_deferred(loop);
    if (!loop->running)
        return 0;
    int timeout = next_timeout_ms(loop);
    if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms))
        timeout = max_wait_ms;
    int n = epoll_wait(loop->epfd, events, MAX_EVENTS, timeout);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    loop->now = read_clock(loop);
    for (int i = 0; i < n; i++) {
        tt_io_t *io = events[i].data.ptr;
        if (io->fd >= 0) /* stopped earlier in this batch: its owner awaits deferred free */
            io->cb(io, events[i].events);
    }
    tt_loop_run_deferred(loop);
    return n;
}

int tt_loop_run(tt_loop_t *loop)
{
    loop->running = 1;
    while (loop->running) {
        if (iterate(loop, -1) < 0) {
            tt_error("epoll_wait: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

int tt_loop_run_once(tt_loop_t *loop, int max_wait_ms)
{
    loop->running = 1;
    int n = iterate(loop, max_wait_ms);
    loop->running = 0;
    return n;
}
