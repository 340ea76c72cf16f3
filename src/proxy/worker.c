#include "proxy/worker.h"

#include "core/invariant.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_FREE_BUFS  256
#define MAX_FREE_HEADS 64

#define ACCEPT_BACKOFF_MIN_MS 50
#define ACCEPT_BACKOFF_MAX_MS 1000

static void accept_cb(tt_io_t *io, uint32_t events);

/* A shared listener wakes one of the workers polling it, not all of them. */
static uint32_t listen_events(const tt_listener_t *l)
{
    return EPOLLIN | (l->shared ? EPOLLEXCLUSIVE : 0);
}

/* Listeners are polled only while the worker accepts: a pause takes them out of epoll (a
 * listener that stays registered is reported readable again at once and the worker spins), and
 * the kernel's backlog holds what arrives meanwhile. */
static void update_listening(tt_worker_t *w)
{
    int want = !w->draining && w->_accept_paused == 0;
    for (size_t i = 0; i < w->_nlisteners; i++) {
        tt_listener_t *l = &w->_listeners[i];
        if (want && l->io.fd < 0 && l->fd >= 0) {
            if (tt_io_start(w->loop, &l->io, l->fd, listen_events(l), accept_cb) < 0)
                tt_error("worker %zu: epoll: %s: listener not polled", w->id, strerror(errno));
        } else if (!want && l->io.fd >= 0) {
            tt_io_stop(w->loop, &l->io);
        }
    }
}

static void resume_accepting(tt_worker_t *w, uint8_t reason)
{
    if (!(w->_accept_paused & reason))
        return;
    w->_accept_paused &= (uint8_t)~reason;
    if (reason == TT_ACCEPT_PAUSED_LIMIT)
        tt_admission_unwait(w->admission);
    else
        tt_loop_timer_stop(w->loop, &w->_accept_timer);
    update_listening(w);
}

static void accept_timer_cb(tt_timer_t *t)
{
    resume_accepting(tt_container_of(t, tt_worker_t, _accept_timer), TT_ACCEPT_PAUSED_FDS);
}

/* Takes a slot under max_client_connections, or stops accepting until one frees. */
static int admit(tt_worker_t *w)
{
    if (tt_admission_take(w->admission))
        return 1;
    if (!(w->_accept_paused & TT_ACCEPT_PAUSED_LIMIT)) {
        w->_accept_paused |= TT_ACCEPT_PAUSED_LIMIT;
        w->accept_limit_pauses++;
        tt_admission_wait(w->admission);
        unsigned suppressed;
        if (tt_ratelimit_allow(&w->_accept_warn, tt_loop_now(w->loop), 5000, &suppressed))
            tt_warn("worker %zu: max_client_connections (%lld) reached: new connections wait in "
                    "the listen backlog until one closes (%u similar suppressed)",
                    w->id, (long long)w->admission->max, suppressed);
    }
    if (tt_admission_take(w->admission)) { /* freed before the wait was seen */
        resume_accepting(w, TT_ACCEPT_PAUSED_LIMIT);
        return 1;
    }
    update_listening(w);
    return 0;
}

static void accept_failed(tt_worker_t *w, int err)
{
    tt_accept_error_t why = err == EMFILE                     ? TT_ACCEPT_EMFILE
                            : err == ENFILE                   ? TT_ACCEPT_ENFILE
                            : err == ENOBUFS || err == ENOMEM ? TT_ACCEPT_NOMEM
                                                              : TT_ACCEPT_OTHER;
    w->accept_errors[why]++;
    unsigned suppressed;
    int say = tt_ratelimit_allow(&w->_accept_warn, tt_loop_now(w->loop), 5000, &suppressed);
    if (why == TT_ACCEPT_OTHER) {
        if (say)
            tt_warn("worker %zu: accept: %s (%u similar suppressed)", w->id, strerror(err),
                    suppressed);
        return;
    }
    /* Out of descriptors or memory: stop polling the listeners (they stay readable, so the
     * worker would spin) until a connection of this worker closes or the backoff ends. */
    w->_accept_backoff = w->_accept_backoff == 0
                             ? ACCEPT_BACKOFF_MIN_MS
                             : TT_MIN(w->_accept_backoff * 2, ACCEPT_BACKOFF_MAX_MS);
    w->_accept_paused |= TT_ACCEPT_PAUSED_FDS;
    tt_loop_timer_after(w->loop, &w->_accept_timer, w->_accept_backoff);
    update_listening(w);
    if (say)
        tt_warn("worker %zu: accept: %s: not accepting for %lldms or until a connection closes; "
                "lower max_client_connections or raise the descriptor limit (%u similar "
                "suppressed)",
                w->id, strerror(err), (long long)w->_accept_backoff, suppressed);
}

static void accept_cb(tt_io_t *io, uint32_t events)
{
    (void)events;
    tt_listener_t *l = tt_container_of(io, tt_listener_t, io);
    tt_worker_t *w = l->worker;
    /* Bounded per wakeup so one busy listener cannot starve the loop. */
    for (int i = 0; i < 64 && l->io.fd >= 0; i++) {
        if (!admit(w))
            return;
        tt_addr_t peer;
        peer.len = sizeof(peer.ss);
        int fd =
            accept4(l->fd, (struct sockaddr *)&peer.ss, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            tt_admission_release(w->admission);
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            /* A connection that failed while queued: the next one may be fine (accept(2)). */
            if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
                err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
                err == EOPNOTSUPP || err == ENETUNREACH || err == EPERM)
                continue;
            accept_failed(w, err);
            return;
        }
        w->accepted++;
        w->_accept_backoff = 0;
        if (l->handler(l, fd, &peer) < 0)
            tt_admission_release(w->admission);
    }
}

/* Registers this worker's share of the sockets on addr (net/listeners.h), TCP or Unix alike. The
 * worker owns a dup of each, so closing it at the drain leaves the set's descriptor for a
 * successor. A socket every worker accepts from (shared) is polled with EPOLLEXCLUSIVE, which
 * wakes one of them per connection; such a registration cannot be modified, so a pause deletes
 * it and a resume adds it again (update_listening). */
static int add_listeners(tt_worker_t *w, const tt_listenset_t *ls, const tt_addr_t *addr,
                         tt_upstream_t *up, char *err, size_t errlen)
{
    int fds[64], shared[64];
    size_t n =
        tt_listenset_for_worker(ls, addr, w->id, w->nworkers, fds, shared, TT_ARRAY_SIZE(fds));
    for (size_t i = 0; i < n; i++) {
        int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(err, errlen, "dup: %s", strerror(errno));
            return -1;
        }
        tt_listener_t *l = &w->_listeners[w->_nlisteners++];
        l->worker = w;
        l->upstream = up;
        l->handler = w->_handlers.accept_cb;
        l->fd = fd;
        l->shared = shared[i];
        l->io.fd = -1;
        if (tt_io_start(w->loop, &l->io, fd, listen_events(l), accept_cb) < 0) {
            snprintf(err, errlen, "epoll: %s", strerror(errno));
            close(fd);
            l->fd = -1;
            w->_nlisteners--;
            return -1;
        }
    }
    return 0;
}

static void stop_listeners(tt_worker_t *w)
{
    tt_loop_timer_stop(w->loop, &w->_accept_timer);
    for (size_t i = 0; i < w->_nlisteners; i++) {
        tt_listener_t *l = &w->_listeners[i];
        tt_io_stop(w->loop, &l->io);
        if (l->fd >= 0) /* this worker's dup; the set keeps its own for a successor */
            close(l->fd);
        l->fd = -1;
    }
}

static void drain_timer_cb(tt_timer_t *t)
{
    tt_worker_t *w = tt_container_of(t, tt_worker_t, _drain_timer);
    if (w->nsessions > 0)
        tt_info("worker %zu: drain timeout: closing %zu connections still busy", w->id,
                w->nsessions);
    w->_handlers.close_all_cb(w);
    tt_loop_stop(w->loop);
}

/* A drain ends when the last client connection has closed. */
static void finish_drain_if_idle(tt_worker_t *w)
{
    if (w->draining && w->nsessions == 0)
        tt_loop_stop(w->loop);
}

static void begin_drain(tt_worker_t *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    stop_listeners(w);
    tt_loop_timer_after(w->loop, &w->_drain_timer, (tt_msec_t)w->conf->drain_timeout);
    w->_handlers.drain_cb(w);
    finish_drain_if_idle(w);
}

void tt_worker_session_opened(tt_worker_t *w)
{
    w->nsessions++;
}

void tt_worker_session_closed(tt_worker_t *w)
{
    TT_ASSERT(w->nsessions > 0);
    w->nsessions--;
    tt_admission_release(w->admission);
    resume_accepting(w, TT_ACCEPT_PAUSED_FDS);
    finish_drain_if_idle(w);
}

static void run_posted_call(tt_worker_t *w)
{
    pthread_mutex_lock(&w->_call_lock);
    if (w->_call_state != 1) {
        pthread_mutex_unlock(&w->_call_lock);
        return;
    }
    w->_call_state = 2;
    pthread_mutex_unlock(&w->_call_lock);
    w->_call_fn(w, w->_call_arg);
    pthread_mutex_lock(&w->_call_lock);
    w->_call_state = 3;
    pthread_cond_broadcast(&w->_call_done);
    pthread_mutex_unlock(&w->_call_lock);
}

int tt_worker_call(tt_worker_t *w, void (*fn)(tt_worker_t *w, void *arg), void *arg, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->_call_lock);
    while (w->_call_state != 0) /* one caller at a time */
        if (pthread_cond_timedwait(&w->_call_done, &w->_call_lock, &deadline) != 0)
            break;
    if (w->_call_state != 0) {
        pthread_mutex_unlock(&w->_call_lock);
        return -1;
    }
    w->_call_fn = fn;
    w->_call_arg = arg;
    w->_call_state = 1;
    tt_loop_wakeup(w->loop);
    int rc = 0;
    while (w->_call_state != 3) {
        if (w->_call_state == 2) { /* running: it finishes, deadline or not */
            pthread_cond_wait(&w->_call_done, &w->_call_lock);
            continue;
        }
        if (pthread_cond_timedwait(&w->_call_done, &w->_call_lock, &deadline) != 0 &&
            w->_call_state == 1) {
            w->_call_state = 0; /* withdrawn before it started */
            rc = -1;
            break;
        }
    }
    if (rc == 0)
        w->_call_state = 0;
    pthread_cond_broadcast(&w->_call_done);
    pthread_mutex_unlock(&w->_call_lock);
    return rc;
}

struct tt_worker_pause {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    size_t paused;  /* workers waiting */
    size_t resumed; /* workers that went on after the release */
    int released;
};

/* Waits in the wakeup for tt_worker_while_paused() to release every worker. */
static void wait_while_paused(struct tt_worker_pause *p)
{
    pthread_mutex_lock(&p->lock);
    p->paused++;
    pthread_cond_broadcast(&p->changed);
    while (!p->released)
        pthread_cond_wait(&p->changed, &p->lock);
    p->resumed++;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

void tt_worker_while_paused(tt_worker_t *workers, size_t n, void (*fn)(void *arg), void *arg)
{
    struct tt_worker_pause p = {.paused = 0};
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.changed, NULL);
    for (size_t i = 0; i < n; i++) {
        atomic_store_explicit(&workers[i]._pause, &p, memory_order_release);
        tt_loop_wakeup(workers[i].loop);
    }
    pthread_mutex_lock(&p.lock);
    while (p.paused < n)
        pthread_cond_wait(&p.changed, &p.lock);
    pthread_mutex_unlock(&p.lock);
    fn(arg);
    pthread_mutex_lock(&p.lock);
    p.released = 1;
    pthread_cond_broadcast(&p.changed);
    while (p.resumed < n) /* p lives on this stack: every worker must be done with it */
        pthread_cond_wait(&p.changed, &p.lock);
    pthread_mutex_unlock(&p.lock);
    pthread_cond_destroy(&p.changed);
    pthread_mutex_destroy(&p.lock);
}

static void wakeup_cb(tt_loop_t *loop, void *data)
{
    tt_worker_t *w = data;
    struct tt_worker_pause *pause =
        atomic_exchange_explicit(&w->_pause, NULL, memory_order_acq_rel);
    if (pause != NULL)
        wait_while_paused(pause);
    run_posted_call(w);
    /* A slot under max_client_connections freed (tt_admission_release): try again. */
    resume_accepting(w, TT_ACCEPT_PAUSED_LIMIT);
    if (atomic_exchange_explicit(&w->_drain_requested, 0, memory_order_acq_rel))
        begin_drain(w);
    for (size_t i = 0; i < w->nupstreams; i++)
        tt_pool_on_wakeup(w->pools[i]);
}

int tt_worker_init(tt_worker_t *w, size_t id, size_t nworkers, const tt_conf_t *conf,
                   tt_upstream_t **upstreams, size_t nupstreams, const tt_listenset_t *ls,
                   const tt_worker_handlers_t *handlers, int access_log_fd,
                   tt_admission_t *admission, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->_handlers = *handlers;
    w->id = id;
    w->nworkers = nworkers;
    w->conf = conf;
    w->upstreams = upstreams;
    w->nupstreams = nupstreams;
    tt_list_init(&w->sessions);
    tt_timer_init(&w->_drain_timer, drain_timer_cb);
    tt_timer_init(&w->_accept_timer, accept_timer_cb);
    w->admission = admission;
    pthread_mutex_init(&w->_call_lock, NULL);
    pthread_cond_init(&w->_call_done, NULL);
    tt_bufpool_init(&w->bufs, MAX_FREE_BUFS);
    tt_pipepool_init(&w->pipes);
    tt_http_headpool_init(&w->heads, MAX_FREE_HEADS);
    w->loop = tt_loop_create();
    if (w->loop == NULL) {
        snprintf(err, errlen, "cannot create event loop: %s", strerror(errno));
        return -1;
    }
    tt_loop_on_wakeup(w->loop, wakeup_cb, w);
    tt_accesslog_init(&w->access_log, access_log_fd, w->loop);
    w->pools = tt_calloc(nupstreams, sizeof(*w->pools));
    for (size_t i = 0; i < nupstreams; i++) {
        w->pools[i] = tt_calloc(1, sizeof(*w->pools[i]));
        tt_pool_init(w->pools[i], upstreams[i], w->loop, &w->bufs, id);
        upstreams[i]->pools[id] = w->pools[i];
    }
    w->_listeners = tt_calloc(ls->n, sizeof(*w->_listeners));
    if (conf->has_proxy_listen && add_listeners(w, ls, &conf->proxy_listen, NULL, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < nupstreams; i++) {
        const tt_upstream_conf_t *u = &conf->upstreams[i];
        if (u->has_listen && add_listeners(w, ls, &u->listen, upstreams[i], err, errlen) < 0)
            return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    tt_worker_t *w = arg;
    for (size_t i = 0; i < w->nupstreams; i++)
        tt_pool_start(w->pools[i]);
    if (tt_loop_run(w->loop) < 0)
        tt_error("worker %zu: event loop failed", w->id);
    /* Sessions are gone: close what the pools still hold. */
    tt_loop_timer_stop(w->loop, &w->_drain_timer);
    tt_loop_timer_stop(w->loop, &w->_accept_timer);
    for (size_t i = 0; i < w->nupstreams; i++)
        tt_pool_shutdown(w->pools[i]);
    tt_loop_run_deferred(w->loop);
    tt_accesslog_flush(&w->access_log);
    return NULL;
}

int tt_worker_start(tt_worker_t *w)
{
    return pthread_create(&w->_thread, NULL, worker_main, w);
}

void tt_worker_request_drain(tt_worker_t *w)
{
    atomic_store_explicit(&w->_drain_requested, 1, memory_order_release);
    tt_loop_wakeup(w->loop);
}

void tt_worker_join(tt_worker_t *w)
{
    pthread_join(w->_thread, NULL);
}

void tt_worker_destroy(tt_worker_t *w)
{
    for (size_t i = 0; w->pools != NULL && i < w->nupstreams; i++) {
        tt_pool_destroy(w->pools[i]);
        free(w->pools[i]);
    }
    if (w->loop != NULL) {
        stop_listeners(w);
        tt_accesslog_destroy(&w->access_log);
        tt_loop_destroy(w->loop);
    }
    free(w->_listeners);
    free(w->pools);
    tt_http_headpool_destroy(&w->heads);
    tt_bufpool_destroy(&w->bufs);
    tt_pipepool_destroy(&w->pipes);
    pthread_mutex_destroy(&w->_call_lock);
    pthread_cond_destroy(&w->_call_done);
}
