/* I/O buffers. A buffer is a contiguous byte array with a read position and a write position.
 * Buffers of the standard size come from a per-worker free list (tt_bufpool_t), so an idle
 * connection holds none and an active one costs no malloc on the steady-state path. A buffer may
 * grow past the standard size up to a caller-given limit (a large request head); such buffers are
 * freed instead of recycled. */
#ifndef TT_CORE_BUF_H
#define TT_CORE_BUF_H

#include "core/recycle.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TT_BUF_SIZE 16384

typedef struct tt_buf {
    char *data;
    size_t rpos; /* first unread byte */
    size_t wpos; /* one past the last written byte */
    size_t cap;
    void *_next_free; /* while kept by a tt_bufpool_t */
} tt_buf_t;

typedef struct {
    tt_recycle_t recycle; /* of buffers of TT_BUF_SIZE */
} tt_bufpool_t;

void tt_bufpool_init(tt_bufpool_t *bp, size_t max_free);
/* Frees every cached buffer. Buffers still lent out must have been returned first. */
void tt_bufpool_destroy(tt_bufpool_t *bp);

/* Sets up a buffer of its own (not from a pool) with room for cap bytes; it grows with
 * tt_buf_reserve. The caller frees b->data. */
void tt_buf_init(tt_buf_t *b, size_t cap);

/* Lends an empty buffer of TT_BUF_SIZE. The caller returns it with tt_buf_release(). */
tt_buf_t *tt_buf_acquire(tt_bufpool_t *bp);
/* Returns a buffer (or NULL, ignored) to the pool, or frees it when oversized or the pool is full.
 */
void tt_buf_release(tt_bufpool_t *bp, tt_buf_t *b);

static inline size_t tt_buf_len(const tt_buf_t *b)
{
    return b->wpos - b->rpos;
}
static inline char *tt_buf_rptr(tt_buf_t *b)
{
    return b->data + b->rpos;
}
static inline char *tt_buf_wptr(tt_buf_t *b)
{
    return b->data + b->wpos;
}
static inline size_t tt_buf_room(const tt_buf_t *b)
{
    return b->cap - b->wpos;
}
static inline void tt_buf_consume(tt_buf_t *b, size_t n)
{
    b->rpos += n;
    if (b->rpos == b->wpos)
        b->rpos = b->wpos = 0;
}

/* Moves unread bytes to the front so the whole tail is writable. */
void tt_buf_compact(tt_buf_t *b);
/* Ensures room for n more bytes, growing up to limit bytes in total; -1 if that would exceed it. */
int tt_buf_reserve(tt_buf_t *b, size_t n, size_t limit);
/* Appends bytes, growing without a limit beyond the data given (used for small generated heads). */
void tt_buf_append(tt_buf_t *b, const void *p, size_t n);
void tt_buf_appendf(tt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* recv(2) from a socket into the free tail (not read(2): its file layer costs about 1% of the
 * proxy's CPU per request). Returns bytes read, 0 on EOF, -1 with errno set (EAGAIN included). */
ssize_t tt_buf_recv(tt_buf_t *b, int fd);

/* tt_buf_recv for a level-triggered epoll loop: a short read means the socket is drained, so
 * *readable is cleared and no read is tried until epoll reports the fd again (no read ends in
 * EAGAIN on the usual path). */
ssize_t tt_buf_fill(tt_buf_t *b, int fd, uint8_t *readable);

#endif
