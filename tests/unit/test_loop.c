/* Event loop: I/O watchers on socketpairs, interest changes, stale events of a watcher stopped
 * earlier in the same batch, deferred work, timers through the loop, the cross-thread wakeup, and
 * many timers with cancellation and re-arming. Every test ends with the loop destroyed and as many
 * descriptors open as before it was created. */
#include "event/loop.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* A timer that stops the loop: ends a run after a while, or guards against a hang. */
typedef struct {
    tt_timer_t t;
    tt_loop_t *loop;
    int fired;
} stopper_t;

static void stopper_cb(tt_timer_t *t)
{
    stopper_t *s = tt_container_of(t, stopper_t, t);
    s->fired++;
    tt_loop_stop(s->loop);
}

/* Runs the loop until something stops it or ms pass; returns 1 if the time ran out. */
static int run_for(tt_loop_t *loop, tt_msec_t ms)
{
    stopper_t s = {.loop = loop};
    tt_timer_init(&s.t, stopper_cb);
    tt_loop_timer_after(loop, &s.t, ms);
    assert_int_equal(tt_loop_run(loop), 0);
    tt_loop_timer_stop(loop, &s.t);
    return s.fired;
}

/* --- readability, writability, interest changes --------------------------------------------- */

typedef struct {
    tt_io_t io;
    tt_loop_t *loop;
    int calls;
    uint32_t events;
    char got[64];
    ssize_t nread;
} rw_probe_t;

static void rw_cb(tt_io_t *io, uint32_t events)
{
    rw_probe_t *p = tt_container_of(io, rw_probe_t, io);
    p->calls++;
    p->events = events;
    if (events & EPOLLIN)
        p->nread = read(io->fd, p->got, sizeof(p->got));
    tt_loop_stop(p->loop);
}

static void test_io_readable_writable(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_loop_t *loop = tt_loop_create();
    assert_non_null(loop);
    assert_int_equal(tt_test_count_fds(), lc.fds + 2); /* epoll and eventfd */
    int sv[2];
    make_pair(sv);
    rw_probe_t p = {.loop = loop};
    assert_int_equal(tt_io_start(loop, &p.io, sv[0], EPOLLIN, rw_cb), 0);
    assert_int_equal(p.io.fd, sv[0]);
    assert_int_equal(p.io.events, EPOLLIN);

    /* Nothing to read: no callback. */
    assert_int_equal(run_for(loop, 30), 1);
    assert_int_equal(p.calls, 0);

    /* Readable. */
    assert_int_equal(write(sv[1], "ping", 4), 4);
    assert_int_equal(run_for(loop, 2000), 0);
    assert_int_equal(p.calls, 1);
    assert_true(p.events & EPOLLIN);
    assert_false(p.events & EPOLLOUT);
    assert_int_equal(p.nread, 4);
    assert_memory_equal(p.got, "ping", 4);

    /* Interest changed to writability: fires at once, without EPOLLIN. */
    assert_int_equal(tt_io_set_events(loop, &p.io, EPOLLOUT), 0);
    assert_int_equal(p.io.events, EPOLLOUT);
    assert_int_equal(run_for(loop, 2000), 0);
    assert_int_equal(p.calls, 2);
    assert_true(p.events & EPOLLOUT);
    assert_false(p.events & EPOLLIN);

    /* Both at once. */
    assert_int_equal(tt_io_set_events(loop, &p.io, EPOLLIN | EPOLLOUT), 0);
    assert_int_equal(write(sv[1], "pong", 4), 4);
    assert_int_equal(run_for(loop, 2000), 0);
    assert_int_equal(p.calls, 3);
    assert_true(p.events & EPOLLIN);
    assert_true(p.events & EPOLLOUT);
    assert_memory_equal(p.got, "pong", 4);

    /* Back to reading only: writability no longer reported (level-triggered would spin). */
    assert_int_equal(tt_io_set_events(loop, &p.io, EPOLLIN), 0);
    assert_int_equal(tt_io_set_events(loop, &p.io, EPOLLIN), 0); /* unchanged: no-op */
    assert_int_equal(p.io.events, EPOLLIN);
    assert_int_equal(run_for(loop, 50), 1);
    assert_int_equal(p.calls, 3);

    /* Interest in nothing: even a readable socket stays quiet. */
    assert_int_equal(tt_io_set_events(loop, &p.io, 0), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    assert_int_equal(run_for(loop, 30), 1);
    assert_int_equal(p.calls, 3);
    assert_int_equal(tt_io_set_events(loop, &p.io, EPOLLIN), 0);
    assert_int_equal(run_for(loop, 2000), 0);
    assert_int_equal(p.calls, 4);
    assert_int_equal(p.nread, 1);

    /* The peer closes: readable, read gives EOF. */
    close(sv[1]);
    assert_int_equal(run_for(loop, 2000), 0);
    assert_int_equal(p.calls, 5);
    assert_true(p.events & EPOLLIN);
    assert_int_equal(p.nread, 0);

    /* Stopped: no more callbacks, stop twice is harmless, set_events on it is a no-op. */
    tt_io_stop(loop, &p.io);
    assert_int_equal(p.io.fd, -1);
    tt_io_stop(loop, &p.io);
    assert_int_equal(tt_io_set_events(loop, &p.io, EPOLLOUT), 0);
    assert_int_equal(run_for(loop, 30), 1);
    assert_int_equal(p.calls, 5);

    /* A descriptor epoll refuses. */
    rw_probe_t bad = {.loop = loop};
    bad.io.fd = -1;
    assert_int_equal(tt_io_start(loop, &bad.io, sv[1] /* closed */, EPOLLIN, rw_cb), -1);
    assert_int_equal(bad.io.fd, -1);

    close(sv[0]);
    assert_int_equal(tt_timerwheel_count(tt_loop_timers(loop)), 0);
    tt_loop_destroy(loop);
    tt_leakcheck_end(lc);
}

/* --- a watcher stopped earlier in the same batch -------------------------------------------- */

typedef struct owner owner_t;
struct owner {
    tt_io_t io;
    tt_deferred_t free_d;
    tt_loop_t *loop;
    int id;
    int peer;
    owner_t *other; /* the watcher this one closes when it runs first */
};

static int g_calls[3];  /* per owner id; owners are freed, so counts live here */
static int g_freed;     /* owners freed by deferred callbacks */
static int g_batch_end; /* g_freed seen by the replacement watcher's first callback */
static char g_log[32];
static size_t g_logn;

static void log_char(char c)
{
    if (g_logn < sizeof(g_log) - 1)
        g_log[g_logn++] = c;
    g_log[g_logn] = '\0';
}

static void owner_free_cb(tt_deferred_t *d)
{
    owner_t *o = tt_container_of(d, owner_t, free_d);
    g_freed++;
    log_char('F');
    free(o);
}

/* Closes an owner from anywhere, including its own callback: the watcher stops at once, the
 * memory goes after the batch. */
static void owner_close(owner_t *o)
{
    int fd = o->io.fd;
    tt_io_stop(o->loop, &o->io);
    close(fd);
    close(o->peer);
    tt_loop_defer(o->loop, &o->free_d, owner_free_cb);
}

static void owner_cb(tt_io_t *io, uint32_t events);

static owner_t *owner_new(tt_loop_t *loop, int id)
{
    owner_t *o = calloc(1, sizeof(*o));
    int sv[2];
    make_pair(sv);
    o->loop = loop;
    o->id = id;
    o->peer = sv[1];
    assert_int_equal(write(sv[1], "r", 1), 1); /* readable from the start */
    assert_int_equal(tt_io_start(loop, &o->io, sv[0], EPOLLIN, owner_cb), 0);
    return o;
}

static void owner_cb(tt_io_t *io, uint32_t events)
{
    owner_t *o = tt_container_of(io, owner_t, io);
    (void)events;
    g_calls[o->id]++;
    log_char((char)('A' + o->id));
    if (o->id == 2) { /* the replacement: runs in a later batch */
        g_batch_end = g_freed;
        owner_close(o);
        tt_loop_stop(o->loop);
        return;
    }
    owner_t *victim = o->other;
    if (victim != NULL) {
        victim->other = NULL;
        owner_close(victim);
        /* A new connection probably gets the descriptor numbers just closed. Its watcher must
         * not receive the stale event queued for the old one. */
        owner_t *repl = owner_new(o->loop, 2);
        (void)repl;
    }
    owner_close(o); /* closes itself from inside its own callback */
}

static void test_stopped_watcher_gets_no_later_event(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_loop_t *loop = tt_loop_create();
    memset(g_calls, 0, sizeof(g_calls));
    g_freed = 0;
    g_batch_end = -1;
    g_logn = 0;
    /* Both readable before the loop runs, so one epoll_wait reports both. Whichever runs first
     * stops and closes the other. */
    owner_t *a = owner_new(loop, 0), *b = owner_new(loop, 1);
    a->other = b;
    b->other = a;
    assert_int_equal(run_for(loop, 2000), 0);
    assert_int_equal(g_calls[0] + g_calls[1], 1); /* the second never ran */
    assert_int_equal(g_calls[2], 1);              /* the replacement got its own event */
    assert_int_equal(g_batch_end, 2);             /* after the first batch's owners were freed */
    assert_int_equal(g_freed, 3);
    /* First callback, both frees after the batch, then the replacement and its free. */
    assert_true(strcmp(g_log, "AFFCF") == 0 || strcmp(g_log, "BFFCF") == 0);
    assert_int_equal(tt_timerwheel_count(tt_loop_timers(loop)), 0);
    tt_loop_destroy(loop);
    tt_leakcheck_end(lc);
}

/* --- deferred work --------------------------------------------------------------------------- */

typedef struct {
    tt_io_t io;
    int peer;
    tt_loop_t *loop;
} reader_t;

static tt_deferred_t g_d1, g_d2, g_d3;
static tt_loop_t *g_loop;

static void d2_cb(tt_deferred_t *d)
{
    (void)d;
    log_char('E');
    tt_loop_stop(g_loop);
}

static void d1_cb(tt_deferred_t *d)
{
    (void)d;
    log_char('D');
    tt_loop_defer(g_loop, &g_d2, d2_cb); /* deferred from deferred: same drain */
}

static void reader_cb(tt_io_t *io, uint32_t events)
{
    reader_t *r = tt_container_of(io, reader_t, io);
    (void)events;
    char c;
    assert_int_equal(read(io->fd, &c, 1), 1);
    log_char('I');
    if (!tt_list_linked(&g_d1._link) && g_logn == 1)
        tt_loop_defer(r->loop, &g_d1, d1_cb);
}

static void d3_cb(tt_deferred_t *d)
{
    (void)d;
    log_char('F');
}

static void timer_t_cb(tt_timer_t *t)
{
    (void)t;
    log_char('T');
    tt_loop_defer(g_loop, &g_d3, d3_cb);
}

static void timer_u_cb(tt_timer_t *t)
{
    (void)t;
    log_char('U');
}

static void test_defer_runs_after_batch(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_loop_t *loop = tt_loop_create();
    g_loop = loop;
    g_logn = 0;
    g_log[0] = '\0';
    tt_list_init(&g_d1._link);
    reader_t r[3];
    for (int i = 0; i < 3; i++) {
        int sv[2];
        make_pair(sv);
        r[i].peer = sv[1];
        r[i].loop = loop;
        assert_int_equal(write(sv[1], "x", 1), 1);
        assert_int_equal(tt_io_start(loop, &r[i].io, sv[0], EPOLLIN, reader_cb), 0);
    }
    assert_int_equal(run_for(loop, 2000), 0);
    /* The first callback deferred D; it ran after all three callbacks of the batch. */
    assert_string_equal(g_log, "IIIDE");

    /* From timers: the deferred item runs after every timer due in the same run. */
    g_logn = 0;
    tt_timer_t t1, t2;
    tt_timer_init(&t1, timer_t_cb);
    tt_timer_init(&t2, timer_u_cb);
    tt_loop_timer_after(loop, &t1, 5);
    tt_loop_timer_after(loop, &t2, 5);
    assert_int_equal(run_for(loop, 60), 1);
    assert_true(strcmp(g_log, "TUF") == 0 || strcmp(g_log, "UTF") == 0);

    /* After the loop returned: queued work runs with tt_loop_run_deferred(). */
    g_logn = 0;
    g_log[0] = '\0';
    tt_loop_defer(loop, &g_d3, d3_cb);
    assert_string_equal(g_log, "");
    tt_loop_run_deferred(loop);
    assert_string_equal(g_log, "F");
    tt_loop_run_deferred(loop); /* empty: nothing */
    assert_string_equal(g_log, "F");

    for (int i = 0; i < 3; i++) {
        int fd = r[i].io.fd;
        tt_io_stop(loop, &r[i].io);
        close(fd);
        close(r[i].peer);
    }
    tt_loop_destroy(loop);
    tt_leakcheck_end(lc);
}

/* --- timers through the loop ----------------------------------------------------------------- */

typedef struct {
    tt_timer_t t;
    tt_loop_t *loop;
    char name;
    tt_msec_t due;
    tt_msec_t fired_at;
    int stop;
} named_timer_t;

static void named_cb(tt_timer_t *t)
{
    named_timer_t *n = tt_container_of(t, named_timer_t, t);
    n->fired_at = tt_loop_now(n->loop);
    log_char(n->name);
    if (n->stop)
        tt_loop_stop(n->loop);
}

static void test_timers_in_order_and_stop(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_loop_t *loop = tt_loop_create();
    g_logn = 0;
    g_log[0] = '\0';
    named_timer_t n[6] = {
        {.name = 'd', .due = 30, .stop = 1},
        {.name = 'b', .due = 10},
        {.name = 'c', .due = 20},
        {.name = 'a', .due = 0},
        {.name = 'x', .due = 15},
        {.name = 'e', .due = 1000},
    };
    tt_msec_t base = tt_loop_now(loop);
    for (int i = 0; i < 6; i++) {
        n[i].loop = loop;
        tt_timer_init(&n[i].t, named_cb);
        tt_loop_timer_after(loop, &n[i].t, n[i].due);
    }
    tt_loop_timer_stop(loop, &n[4].t); /* cancelled: never fires */
    stopper_t guard = {.loop = loop};
    tt_timer_init(&guard.t, stopper_cb);
    tt_loop_timer_after(loop, &guard.t, 5000);
    assert_int_equal(tt_loop_run(loop), 0);
    tt_msec_t after = tt_clock_monotonic_ms();
    assert_int_equal(guard.fired, 0);
    assert_string_equal(g_log, "abcd");
    for (int i = 0; i < 4; i++)
        assert_true(n[i].fired_at >= base + n[i].due);
    assert_true(tt_loop_now(loop) >= base + 30);
    assert_true(after >= base + 30);
    assert_true(after < base + 1000); /* returned at the stop, not at the next timer */
    assert_true(tt_timer_armed(&n[5].t));
    tt_loop_timer_stop(loop, &n[5].t);
    tt_loop_timer_stop(loop, &guard.t);
    assert_int_equal(tt_timerwheel_count(tt_loop_timers(loop)), 0);

    /* The loop runs again after a stop, and now has moved on. */
    tt_msec_t before = tt_loop_now(loop);
    sleep_ms(5);
    assert_int_equal(run_for(loop, 10), 1);
    assert_true(tt_loop_now(loop) >= before + 10); /* from the cached now, not the real one */
    assert_int_equal(tt_timerwheel_validate(tt_loop_timers(loop)), 0);
    tt_loop_destroy(loop);
    tt_leakcheck_end(lc);
}

/* --- cross-thread wakeup --------------------------------------------------------------------- */

typedef struct {
    tt_loop_t *loop;
    pthread_t loop_thread;
    int calls;
    int on_loop_thread;
    int stop;
    int burst; /* wakeups the helper thread sends */
    long delay_ms;
} wake_ctx_t;

static void wake_cb(tt_loop_t *loop, void *data)
{
    wake_ctx_t *w = data;
    assert_ptr_equal(loop, w->loop);
    w->calls++;
    w->on_loop_thread += pthread_equal(pthread_self(), w->loop_thread) != 0;
    if (w->stop)
        tt_loop_stop(loop);
}

static void *waker_main(void *arg)
{
    wake_ctx_t *w = arg;
    sleep_ms(w->delay_ms);
    for (int i = 0; i < w->burst; i++)
        tt_loop_wakeup(w->loop);
    return NULL;
}

static void *noop_main(void *arg)
{
    return arg;
}

static void test_wakeup_from_thread(void **state)
{
    (void)state;
    /* The C library keeps a finished thread's stack and TLS for the next thread: start one first
     * so that cache is not counted as a leak of this test. */
    pthread_t warm;
    assert_int_equal(pthread_create(&warm, NULL, noop_main, NULL), 0);
    assert_int_equal(pthread_join(warm, NULL), 0);
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_loop_t *loop = tt_loop_create();
    wake_ctx_t w = {.loop = loop, .loop_thread = pthread_self(), .stop = 1, .burst = 1};
    w.delay_ms = 30;
    tt_loop_on_wakeup(loop, wake_cb, &w);

    /* No timer is armed but the guard: only the wakeup can end this run early. */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waker_main, &w), 0);
    assert_int_equal(run_for(loop, 5000), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.on_loop_thread, 1);

    /* Wakeups coalesce: a burst sent while the loop is not running runs the callback once. */
    w.calls = w.on_loop_thread = 0;
    w.stop = 0;
    w.burst = 1000;
    w.delay_ms = 0;
    assert_int_equal(pthread_create(&th, NULL, waker_main, &w), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(run_for(loop, 50), 1);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.on_loop_thread, 1);

    /* A wakeup without a callback set is drained quietly. */
    tt_loop_on_wakeup(loop, NULL, NULL);
    tt_loop_wakeup(loop);
    assert_int_equal(run_for(loop, 20), 1);
    assert_int_equal(w.calls, 1);

    assert_int_equal(tt_timerwheel_count(tt_loop_timers(loop)), 0);
    tt_loop_destroy(loop);
    tt_leakcheck_end(lc);
}

/* --- many timers ----------------------------------------------------------------------------- */

#define MANY 10000

typedef struct {
    tt_timer_t t;
    tt_msec_t deadline;
    int expected; /* fires expected */
    int fired;
    int rearm_in_cb;
    int cancels; /* index of a timer this one cancels when it fires, or -1 */
} many_t;

static many_t *g_many;
static tt_timer_t *g_many_guard;
static tt_msec_t g_last_deadline;
static int g_order_errors, g_early;

static void many_cb(tt_timer_t *t)
{
    many_t *m = tt_container_of(t, many_t, t);
    tt_msec_t now = tt_loop_now(g_loop);
    m->fired++;
    if (now < m->deadline)
        g_early++;
    if (m->deadline < g_last_deadline)
        g_order_errors++;
    g_last_deadline = m->deadline;
    if (m->rearm_in_cb) {
        m->rearm_in_cb = 0;
        tt_msec_t d = 1 + (tt_msec_t)(rand() % 19); /* 0 would count as now + 1 */
        tt_loop_timer_after(g_loop, &m->t, d);
        m->deadline = now + d;
    }
    if (m->cancels >= 0) {
        many_t *v = &g_many[m->cancels];
        if (tt_timer_armed(&v->t)) {
            tt_loop_timer_stop(g_loop, &v->t);
            v->expected = v->fired;
        }
    }
    if (tt_timerwheel_count(tt_loop_timers(g_loop)) == 1 && tt_timer_armed(g_many_guard))
        tt_loop_stop(g_loop);
}

static void test_many_timers(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_loop_t *loop = tt_loop_create();
    g_loop = loop;
    many_t *m = calloc(MANY, sizeof(*m));
    g_many = m;
    g_last_deadline = 0;
    g_order_errors = g_early = 0;
    srand(4242);
    tt_msec_t now = tt_loop_now(loop);
    for (int i = 0; i < MANY; i++) {
        tt_timer_init(&m[i].t, many_cb);
        tt_msec_t d = (tt_msec_t)(rand() % 200);
        tt_loop_timer_after(loop, &m[i].t, d);
        m[i].deadline = now + d;
        m[i].expected = 1;
        m[i].cancels = -1;
    }
    assert_int_equal(tt_timerwheel_count(tt_loop_timers(loop)), MANY);
    int cancelled = 0;
    for (int i = 0; i < MANY; i += 2) { /* half cancelled */
        tt_loop_timer_stop(loop, &m[i].t);
        m[i].expected = 0;
        cancelled++;
    }
    for (int i = 1; i < MANY; i += 2) {
        if (i % 6 == 1) { /* re-armed before running, later or earlier */
            tt_msec_t d = (tt_msec_t)(rand() % 250);
            tt_loop_timer_after(loop, &m[i].t, d);
            m[i].deadline = now + d;
        } else if (i % 10 == 3) { /* re-arms itself once when it fires */
            m[i].rearm_in_cb = 1;
            m[i].expected = 2;
        } else if (i % 10 == 5 && i + 2 < MANY) { /* cancels a later neighbour if still armed */
            m[i].cancels = i + 2;
        }
    }
    /* A cancelled timer re-armed: fires after all. */
    for (int i = 0; i < MANY; i += 500) {
        tt_loop_timer_after(loop, &m[i].t, 100);
        m[i].deadline = now + 100;
        m[i].expected = 1;
        cancelled--;
    }
    assert_int_equal(tt_timerwheel_count(tt_loop_timers(loop)), MANY - cancelled);
    assert_int_equal(tt_timerwheel_validate(tt_loop_timers(loop)), 0);

    stopper_t guard = {.loop = loop};
    tt_timer_init(&guard.t, stopper_cb);
    tt_loop_timer_after(loop, &guard.t, 10000);
    g_many_guard = &guard.t;
    assert_int_equal(tt_loop_run(loop), 0);
    assert_int_equal(guard.fired, 0);
    tt_loop_timer_stop(loop, &guard.t);

    int fired = 0, neighbour_cancels = 0;
    for (int i = 0; i < MANY; i++) {
        if (m[i].fired != m[i].expected)
            fail_msg("timer %d fired %d times, expected %d", i, m[i].fired, m[i].expected);
        fired += m[i].fired;
        if (i % 2 == 1 && i % 10 == 7 && m[i].fired == 0)
            neighbour_cancels++;
    }
    assert_true(fired > MANY / 2);
    assert_true(neighbour_cancels > 0); /* the cancel-from-callback path was taken */
    assert_int_equal(g_early, 0);
    assert_int_equal(g_order_errors, 0);
    assert_int_equal(tt_timerwheel_count(tt_loop_timers(loop)), 0);
    assert_int_equal(tt_timerwheel_validate(tt_loop_timers(loop)), 0);
    free(m);
    g_many = NULL;
    tt_loop_destroy(loop);
    tt_leakcheck_end(lc);
}

/* --- creation and destruction ---------------------------------------------------------------- */

static void test_create_destroy_leaves_nothing(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    for (int i = 0; i < 200; i++) {
        tt_loop_t *loop = tt_loop_create();
        assert_non_null(loop);
        tt_loop_wakeup(loop); /* a pending wakeup does not keep anything alive */
        tt_loop_destroy(loop);
    }
    tt_leakcheck_end(lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_readable_writable),
        cmocka_unit_test(test_stopped_watcher_gets_no_later_event),
        cmocka_unit_test(test_defer_runs_after_batch),
        cmocka_unit_test(test_timers_in_order_and_stop),
        cmocka_unit_test(test_wakeup_from_thread),
        cmocka_unit_test(test_many_timers),
        cmocka_unit_test(test_create_destroy_leaves_nothing),
    };
    return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
