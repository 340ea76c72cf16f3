/* I/O buffers: the free list recycles standard buffers up to its bound and frees the rest,
 * reserve grows up to a limit and no further, compact, append/appendf, and recv on a socket. */
#include "core/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"

static void fill_pattern(tt_buf_t *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b->data[b->wpos + i] = (char)('a' + (i * 7 + seed) % 26);
    b->wpos += n;
}

static int has_pattern(const char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (char)('a' + (i * 7 + seed) % 26))
            return 0;
    return 1;
}

static void test_recycles_up_to_max_free(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_bufpool_t bp;
    tt_bufpool_init(&bp, 2);
    tt_buf_t *a = tt_buf_acquire(&bp), *b = tt_buf_acquire(&bp), *c = tt_buf_acquire(&bp);
    assert_true(a != b && b != c && a != c);
    assert_int_equal(bp.recycle.nfree, 0);
    for (tt_buf_t *x = a; x != NULL; x = x == a ? b : x == b ? c : NULL) {
        assert_int_equal(x->cap, TT_BUF_SIZE);
        assert_int_equal(x->rpos, 0);
        assert_int_equal(x->wpos, 0);
        assert_int_equal(tt_buf_room(x), TT_BUF_SIZE);
    }
    fill_pattern(a, 100, 1);
    tt_buf_consume(a, 10);
    tt_buf_release(&bp, a);
    assert_int_equal(bp.recycle.nfree, 1);
    tt_buf_release(&bp, b);
    assert_int_equal(bp.recycle.nfree, 2);
    tt_buf_release(&bp, c); /* pool full: freed */
    assert_int_equal(bp.recycle.nfree, 2);
    tt_buf_release(&bp, NULL); /* ignored */
    assert_int_equal(bp.recycle.nfree, 2);

    /* The cached ones come back (warm end first), emptied; then fresh ones. */
    tt_buf_t *x = tt_buf_acquire(&bp), *y = tt_buf_acquire(&bp);
    assert_ptr_equal(x, b);
    assert_ptr_equal(y, a);
    assert_int_equal(y->rpos, 0);
    assert_int_equal(y->wpos, 0);
    assert_int_equal(tt_buf_len(y), 0);
    assert_int_equal(bp.recycle.nfree, 0);
    tt_buf_t *z = tt_buf_acquire(&bp);
    assert_int_equal(z->cap, TT_BUF_SIZE);
    tt_buf_release(&bp, x);
    tt_buf_release(&bp, y);
    tt_buf_release(&bp, z);
    assert_int_equal(bp.recycle.nfree, 2);
    tt_bufpool_destroy(&bp);
    assert_int_equal(bp.recycle.nfree, 0);
    assert_int_equal(bp.recycle.nfree, 0);

    /* max_free 0: nothing is ever cached. */
    tt_bufpool_init(&bp, 0);
    a = tt_buf_acquire(&bp);
    tt_buf_release(&bp, a);
    assert_int_equal(bp.recycle.nfree, 0);
    assert_int_equal(bp.recycle.nfree, 0);
    tt_bufpool_destroy(&bp);
    tt_leakcheck_end(lc);
}

static void test_oversized_freed_not_recycled(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_bufpool_t bp;
    tt_bufpool_init(&bp, 8);
    tt_buf_t *b = tt_buf_acquire(&bp);
    fill_pattern(b, TT_BUF_SIZE, 3);
    assert_int_equal(tt_buf_reserve(b, 1, 4 * TT_BUF_SIZE), 0);
    assert_true(b->cap > TT_BUF_SIZE);
    tt_buf_release(&bp, b);
    assert_int_equal(bp.recycle.nfree, 0); /* freed, not cached */
    assert_int_equal(bp.recycle.nfree, 0);
    tt_buf_t *c = tt_buf_acquire(&bp);
    assert_int_equal(c->cap, TT_BUF_SIZE);
    tt_buf_release(&bp, c);
    assert_int_equal(bp.recycle.nfree, 1);
    tt_bufpool_destroy(&bp);
    tt_leakcheck_end(lc);
}

static void test_reserve_grows_to_limit(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_bufpool_t bp;
    tt_bufpool_init(&bp, 1);
    tt_buf_t *b = tt_buf_acquire(&bp);

    /* Enough room already: nothing moves. */
    fill_pattern(b, 1000, 5);
    char *data = b->data;
    assert_int_equal(tt_buf_reserve(b, TT_BUF_SIZE - 1000, TT_BUF_SIZE), 0);
    assert_ptr_equal(b->data, data);
    assert_int_equal(b->cap, TT_BUF_SIZE);

    /* Growing doubles, but never past the limit. */
    assert_int_equal(tt_buf_reserve(b, 19001, 20000), -1); /* 1000 + 19001 > 20000 */
    assert_int_equal(b->cap, TT_BUF_SIZE);                 /* failure changes nothing */
    assert_int_equal(b->wpos, 1000);
    assert_int_equal(tt_buf_reserve(b, 19000, 20000), 0);
    assert_int_equal(b->cap, 20000); /* 32768 clamped to the limit */
    assert_true(tt_buf_room(b) >= 19000);
    assert_true(has_pattern(b->data, 1000, 5));
    fill_pattern(b, 19000, 6);
    assert_int_equal(tt_buf_room(b), 0);
    assert_int_equal(tt_buf_reserve(b, 1, 20000), -1);
    assert_int_equal(tt_buf_reserve(b, 0, 20000), 0);
    assert_int_equal(tt_buf_reserve(b, 1, 20001), 0);
    assert_int_equal(b->cap, 20001);
    assert_true(has_pattern(b->data, 1000, 5));
    assert_true(has_pattern(b->data + 1000, 19000, 6));

    /* A large limit doubles rather than growing byte by byte. */
    assert_int_equal(tt_buf_reserve(b, 1000, SIZE_MAX), 0);
    assert_int_equal(b->cap, 40002);
    tt_buf_release(&bp, b); /* oversized: freed */
    assert_int_equal(bp.recycle.nfree, 0);

    /* Reserve compacts before it grows: consumed bytes make room. */
    b = tt_buf_acquire(&bp);
    fill_pattern(b, TT_BUF_SIZE, 7);
    tt_buf_consume(b, 10000);
    data = b->data;
    assert_int_equal(tt_buf_reserve(b, 8000, TT_BUF_SIZE), 0);
    assert_int_equal(b->cap, TT_BUF_SIZE);
    assert_ptr_equal(b->data, data);
    assert_int_equal(b->rpos, 0);
    assert_int_equal(b->wpos, TT_BUF_SIZE - 10000);
    assert_int_equal(tt_buf_room(b), 10000);
    for (size_t i = 0; i < TT_BUF_SIZE - 10000; i++)
        assert_int_equal(b->data[i], (char)('a' + ((i + 10000) * 7 + 7) % 26));
    /* Unread bytes count against the limit; consumed ones do not. */
    assert_int_equal(tt_buf_reserve(b, 10001, TT_BUF_SIZE), -1);
    assert_int_equal(tt_buf_len(b), TT_BUF_SIZE - 10000);
    tt_buf_release(&bp, b);
    assert_int_equal(bp.recycle.nfree, 1);
    tt_bufpool_destroy(&bp);
    tt_leakcheck_end(lc);
}

static void test_compact_and_consume(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_bufpool_t bp;
    tt_bufpool_init(&bp, 1);
    tt_buf_t *b = tt_buf_acquire(&bp);
    tt_buf_append(b, "hello, world", 12);
    tt_buf_compact(b); /* nothing consumed: no-op */
    assert_int_equal(b->rpos, 0);
    assert_int_equal(b->wpos, 12);
    tt_buf_consume(b, 7);
    assert_int_equal(tt_buf_len(b), 5);
    assert_memory_equal(tt_buf_rptr(b), "world", 5);
    assert_int_equal(tt_buf_room(b), TT_BUF_SIZE - 12);
    tt_buf_compact(b);
    assert_int_equal(b->rpos, 0);
    assert_int_equal(b->wpos, 5);
    assert_memory_equal(b->data, "world", 5);
    assert_ptr_equal(tt_buf_wptr(b), b->data + 5);
    assert_int_equal(tt_buf_room(b), TT_BUF_SIZE - 5);
    /* Consuming everything rewinds both positions. */
    tt_buf_consume(b, 5);
    assert_int_equal(b->rpos, 0);
    assert_int_equal(b->wpos, 0);
    tt_buf_release(&bp, b);
    tt_bufpool_destroy(&bp);
    tt_leakcheck_end(lc);
}

static void test_append_and_appendf(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_bufpool_t bp;
    tt_bufpool_init(&bp, 1);
    tt_buf_t *b = tt_buf_acquire(&bp);
    tt_buf_append(b, "GET ", 4);
    tt_buf_appendf(b, "%s %d%c", "/x", 42, '!');
    assert_int_equal(tt_buf_len(b), 10);
    assert_memory_equal(b->data, "GET /x 42!", 10);
    tt_buf_appendf(b, "%s", ""); /* empty: nothing added, not even the NUL */
    assert_int_equal(tt_buf_len(b), 10);

    /* appendf exactly up to the end of the buffer: needs room for vsnprintf's NUL. */
    size_t fill = TT_BUF_SIZE - 10 - 5;
    char *pad = malloc(fill);
    memset(pad, 'p', fill);
    tt_buf_append(b, pad, fill);
    assert_int_equal(tt_buf_room(b), 5);
    tt_buf_appendf(b, "%05d", 12345);
    assert_int_equal(tt_buf_len(b), TT_BUF_SIZE);
    assert_memory_equal(b->data + TT_BUF_SIZE - 5, "12345", 5);
    assert_memory_equal(b->data + 10, pad, fill);

    /* Appending past the standard size grows the buffer and keeps every byte. */
    tt_buf_append(b, "tail", 4);
    assert_true(b->cap > TT_BUF_SIZE);
    assert_int_equal(tt_buf_len(b), TT_BUF_SIZE + 4);
    assert_memory_equal(b->data, "GET /x 42!", 10);
    assert_memory_equal(b->data + TT_BUF_SIZE, "tail", 4);
    size_t before = tt_buf_len(b);
    char big[3000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (int i = 0; i < 20; i++)
        tt_buf_appendf(b, "[%d:%s]", i, big);
    size_t each = sizeof(big) - 1 + 4;
    assert_int_equal(tt_buf_len(b), before + 10 * each + 10 * (each + 1));
    assert_memory_equal(b->data + before, "[0:qq", 5);
    assert_memory_equal(tt_buf_wptr(b) - (each + 1), "[19:qq", 6);
    assert_memory_equal(tt_buf_wptr(b) - 2, "q]", 2);
    assert_memory_equal(b->data + TT_BUF_SIZE, "tail", 4);
    free(pad);
    tt_buf_release(&bp, b); /* grown: freed */
    assert_int_equal(bp.recycle.nfree, 0);
    tt_bufpool_destroy(&bp);
    tt_leakcheck_end(lc);
}

static void test_recv_on_socket(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_bufpool_t bp;
    tt_bufpool_init(&bp, 1);
    tt_buf_t *b = tt_buf_acquire(&bp);
    int p[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p), 0);

    /* Nothing to read yet. */
    errno = 0;
    assert_int_equal(tt_buf_recv(b, p[0]), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(tt_buf_len(b), 0);

    assert_int_equal(write(p[1], "abcdef", 6), 6);
    assert_int_equal(tt_buf_recv(b, p[0]), 6);
    assert_int_equal(tt_buf_len(b), 6);
    assert_memory_equal(tt_buf_rptr(b), "abcdef", 6);

    /* Reads go after what is there. */
    assert_int_equal(write(p[1], "ghi", 3), 3);
    assert_int_equal(tt_buf_recv(b, p[0]), 3);
    assert_memory_equal(tt_buf_rptr(b), "abcdefghi", 9);

    /* A buffer with no tail room but consumed bytes compacts before reading. */
    tt_buf_consume(b, 4);
    fill_pattern(b, tt_buf_room(b), 9);
    assert_int_equal(tt_buf_room(b), 0);
    assert_int_equal(write(p[1], "XYZ", 3), 3);
    assert_int_equal(tt_buf_recv(b, p[0]), 3);
    assert_int_equal(b->rpos, 0);
    assert_int_equal(tt_buf_len(b), TT_BUF_SIZE - 4 + 3);
    assert_memory_equal(b->data, "efghi", 5);
    assert_memory_equal(tt_buf_wptr(b) - 3, "XYZ", 3);
    assert_int_equal(tt_buf_room(b), 1);

    /* Only the free tail is filled: a large write is read in buffer-sized pieces. */
    tt_buf_consume(b, tt_buf_len(b));
    char chunk[TT_BUF_SIZE + 100];
    memset(chunk, 'z', sizeof(chunk));
    assert_int_equal(write(p[1], chunk, sizeof(chunk)), (ssize_t)sizeof(chunk));
    assert_int_equal(tt_buf_recv(b, p[0]), TT_BUF_SIZE);
    assert_int_equal(b->cap, TT_BUF_SIZE);
    tt_buf_consume(b, TT_BUF_SIZE);
    assert_int_equal(tt_buf_recv(b, p[0]), 100);

    /* End of stream. */
    close(p[1]);
    assert_int_equal(tt_buf_recv(b, p[0]), 0);
    assert_int_equal(tt_buf_len(b), 100);

    /* A bad descriptor is an error with errno, not EOF. */
    close(p[0]);
    errno = 0;
    assert_int_equal(tt_buf_recv(b, p[0]), -1);
    assert_int_equal(errno, EBADF);

    tt_buf_release(&bp, b);
    tt_bufpool_destroy(&bp);
    tt_leakcheck_end(lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recycles_up_to_max_free),
        cmocka_unit_test(test_oversized_freed_not_recycled),
        cmocka_unit_test(test_reserve_grows_to_limit),
        cmocka_unit_test(test_compact_and_consume),
        cmocka_unit_test(test_append_and_appendf),
        cmocka_unit_test(test_recv_on_socket),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
