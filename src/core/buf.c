#include "core/buf.h"

#include "core/invariant.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void tt_bufpool_init(tt_bufpool_t *bp, size_t max_free)
{
    tt_recycle_init(&bp->recycle, offsetof(tt_buf_t, _next_free), max_free);
}

static void buf_free(tt_buf_t *b)
{
    free(b->data);
    free(b);
}

void tt_bufpool_destroy(tt_bufpool_t *bp)
{
    tt_buf_t *b;
    while ((b = tt_recycle_pop(&bp->recycle)) != NULL)
        buf_free(b);
}

void tt_buf_init(tt_buf_t *b, size_t cap)
{
    memset(b, 0, sizeof(*b));
    b->data = tt_malloc(cap);
    b->cap = cap;
}

tt_buf_t *tt_buf_acquire(tt_bufpool_t *bp)
{
    tt_buf_t *b = tt_recycle_pop(&bp->recycle);
    if (b == NULL) {
        b = tt_malloc(sizeof(*b));
        b->data = tt_malloc(TT_BUF_SIZE);
        b->cap = TT_BUF_SIZE;
    }
    b->rpos = b->wpos = 0;
    b->_next_free = NULL;
    return b;
}

void tt_buf_release(tt_bufpool_t *bp, tt_buf_t *b)
{
    if (b == NULL)
        return;
    /* A buffer grown for a large head goes back to malloc: the pool keeps the standard size. */
    if (b->cap != TT_BUF_SIZE || tt_recycle_push(&bp->recycle, b) < 0)
        buf_free(b);
}

void tt_buf_compact(tt_buf_t *b)
{
    if (b->rpos == 0)
        return;
    size_t len = tt_buf_len(b);
    memmove(b->data, b->data + b->rpos, len);
    b->rpos = 0;
    b->wpos = len;
}

int tt_buf_reserve(tt_buf_t *b, size_t n, size_t limit)
{
    if (tt_buf_room(b) >= n)
        return 0;
    tt_buf_compact(b);
    if (tt_buf_room(b) >= n)
        return 0;
    if (n > limit || b->wpos > limit - n)
        return -1;
    size_t need = b->wpos + n;
    /* Doubling keeps appends amortized O(1); a zeroed buffer (cap 0) starts small. */
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > limit)
        cap = limit;
    b->data = tt_realloc(b->data, cap);
    b->cap = cap;
    return 0;
}

void tt_buf_append(tt_buf_t *b, const void *p, size_t n)
{
    tt_buf_reserve(b, n, SIZE_MAX);
    memcpy(b->data + b->wpos, p, n);
    b->wpos += n;
}

void tt_buf_appendf(tt_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    TT_BUG_ON(n < 0);
    tt_buf_reserve(b, (size_t)n + 1, SIZE_MAX);
    va_start(ap, fmt);
    vsnprintf(b->data + b->wpos, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->wpos += (size_t)n;
}

ssize_t tt_buf_recv(tt_buf_t *b, int fd)
{
    if (tt_buf_room(b) == 0)
        tt_buf_compact(b);
    ssize_t n;
    do {
        n = recv(fd, b->data + b->wpos, tt_buf_room(b), 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        b->wpos += (size_t)n;
    return n;
}

ssize_t tt_buf_fill(tt_buf_t *b, int fd, uint8_t *readable)
{
    if (tt_buf_room(b) == 0)
        tt_buf_compact(b);
    size_t room = tt_buf_room(b);
    ssize_t n = tt_buf_recv(b, fd);
    if (n > 0 && (size_t)n < room)
        *readable = 0;
    else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        *readable = 0;
    return n;
}
