#include "net/splice.h"

#include "core/invariant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

void tt_pipepool_init(tt_pipepool_t *pp)
{
    pp->_nfree = 0;
    pp->_nheld = 0;
}

static void pipe_close(tt_pipe_t *p)
{
    close(p->rfd);
    close(p->wfd);
    free(p);
}

void tt_pipepool_destroy(tt_pipepool_t *pp)
{
    while (pp->_nfree > 0) {
        pipe_close(pp->_free[--pp->_nfree]);
        pp->_nheld--;
    }
}

/* The largest capacity the system grants, halving from TT_PIPE_SIZE: F_SETPIPE_SZ refuses
 * past /proc/sys/fs/pipe-max-size (EPERM) or once the user's pipe quota is spent. The default
 * (64 KiB, or a single page when over the soft quota) stays when every size is refused. */
static size_t pipe_grow(int fd)
{
    for (int want = TT_PIPE_SIZE; want >= 128 * 1024; want /= 2) {
        int got = fcntl(fd, F_SETPIPE_SZ, want);
        if (got > 0)
            return (size_t)got;
    }
    int got = fcntl(fd, F_GETPIPE_SZ);
    return got > 0 ? (size_t)got : 4096;
}

tt_pipe_t *tt_pipe_get(tt_pipepool_t *pp)
{
    tt_pipe_t *p;
    if (pp->_nfree > 0) {
        p = pp->_free[--pp->_nfree];
    } else if (pp->_nheld >= TT_PIPES_MAX) {
        return NULL;
    } else {
        p = malloc(sizeof(*p));
        int fds[2];
        if (p == NULL)
            return NULL;
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
            free(p);
            return NULL;
        }
        p->rfd = fds[0];
        p->wfd = fds[1];
        p->size = pipe_grow(p->wfd);
        p->len = 0;
        pp->_nheld++;
    }
    return p;
}

void tt_pipe_put(tt_pipepool_t *pp, tt_pipe_t *p)
{
    TT_ASSERT(pp->_nheld > pp->_nfree);
    if (p->len == 0) {
        pp->_free[pp->_nfree++] = p;
        return;
    }
    pipe_close(p);
    pp->_nheld--;
}

ssize_t tt_pipe_fill(tt_pipe_t *p, int fd, size_t n)
{
    size_t room = p->size - p->len;
    if (n > room)
        n = room;
    if (n == 0) {
        errno = EAGAIN;
        return -1;
    }
    ssize_t got;
    do
        got = splice(fd, NULL, p->wfd, NULL, n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    while (got < 0 && errno == EINTR);
    if (got > 0)
        p->len += (size_t)got;
    return got;
}

ssize_t tt_pipe_drain(tt_pipe_t *p, int fd)
{
    ssize_t put;
    do
        put = splice(p->rfd, NULL, fd, NULL, p->len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    while (put < 0 && errno == EINTR);
    if (put > 0)
        p->len -= (size_t)put;
    return put;
}
