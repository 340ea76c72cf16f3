#include "event/sock.h"

#include "core/clock.h"
#include "core/invariant.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int tt_sock_listen(const tt_addr_t *a, int backlog, int defer_accept_s)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        /* Accepted sockets inherit it: no setsockopt per client connection. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        (defer_accept_s > 0 && setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_accept_s,
                                          sizeof(defer_accept_s)) < 0) ||
        bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, backlog) < 0 ||
        /* After listen(), which resets it; accepted sockets inherit it, so the kernel delays the
         * ACK of a new connection's request and the response carries it. */
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &(int){0}, sizeof(int)) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int tt_sock_connect(const tt_addr_t *a)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int tt_sock_wait(int fd, short events, uint64_t deadline_ms, int stop_fd)
{
    for (;;) {
        uint64_t now = tt_clock_monotonic_ms();
        if (now >= deadline_ms)
            return -1;
        struct pollfd pfd[2] = {{.fd = fd, .events = events}, {.fd = stop_fd, .events = POLLIN}};
        int n = poll(pfd, stop_fd >= 0 ? 2 : 1, (int)TT_MIN(deadline_ms - now, 1u << 30));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (stop_fd >= 0 && pfd[1].revents != 0))
            return -1;
        if (pfd[0].revents != 0)
            return 0;
    }
}

int tt_sock_connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

void tt_sock_tune(int fd, const tt_sockopts_t *o)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (o->keepalive_idle_s > 0) {
        int idle = o->keepalive_idle_s;
        int intvl = o->keepalive_intvl_s > 0 ? o->keepalive_intvl_s : (idle / 3 > 0 ? idle / 3 : 1);
        int count = o->keepalive_count > 0 ? o->keepalive_count : 3;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
    }
    if (o->user_timeout_ms > 0) {
        unsigned ut = (unsigned)o->user_timeout_ms;
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    }
}
