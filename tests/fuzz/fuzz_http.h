/* Shared by the HTTP harnesses (request_head, response_head, body): their buffer and head pools,
 * and the second parse of a head tether wrote. */
#ifndef TT_FUZZ_HTTP_H
#define TT_FUZZ_HTTP_H

#include "fuzz_split.h"
#include "http/message.h"

static tt_bufpool_t bufs;
static tt_http_headpool_t heads;

/* Sets the pools up on the first input. */
static inline void fuzz_http_pools_init(void)
{
    static int ready;
    if (!ready) {
        tt_bufpool_init(&bufs, 8);
        tt_http_headpool_init(&heads, 4);
        ready = 1;
    }
}

/* Feeds data to r (whose head was begun) in reads split as s says (NULL: in one piece) until the
 * head is complete or refused, or the input is used up. Returns the reader's status; *fed is
 * what was given, *parsed what the reader took. */
static inline tt_http_status_t fuzz_feed_head(tt_http_reader_t *r, tt_buf_t *b, const uint8_t *data,
                                              size_t size, fuzz_split_t *s, size_t max_head,
                                              size_t *fed, size_t *parsed)
{
    tt_http_status_t st = TT_HTTP_AGAIN;
    *fed = *parsed = 0;
    while (st == TT_HTTP_AGAIN && *fed < size) {
        size_t n = s != NULL ? fuzz_split_next(s, size - *fed) : size - *fed;
        tt_buf_append(b, data + *fed, n);
        *fed += n;
        st = tt_http_reader_head(r, b, parsed, max_head);
        FUZZ_CHECK(*parsed <= b->wpos);
    }
    return st;
}

/* Parses the head tether wrote for `orig` (all of w) into h2 with a fresh reader of `kind`.
 * Returns 1 when it is exactly one complete head, 0 when the copy holds more fields than the
 * reader takes: tether adds up to two (Host, Connection) to a head that may hold the most the
 * reader takes, which is fine to relay. Anything else breaks an invariant. */
static inline int fuzz_reparse_head(tt_buf_t *w, llhttp_type_t kind, int skip_body,
                                    const tt_http_head_t *orig, tt_http_head_t *h2)
{
    tt_http_reader_t r2;
    tt_http_reader_init(&r2, kind);
    tt_http_reader_begin_head(&r2, h2, skip_body);
    size_t parsed = 0;
    tt_http_status_t st = tt_http_reader_head(&r2, w, &parsed, SIZE_MAX / 2);
    if (st == TT_HTTP_HEAD_TOO_LARGE && orig->nheaders + 2 > TT_HTTP_MAX_HEADERS)
        return 0;
    FUZZ_CHECK(st == TT_HTTP_HEAD_DONE);
    FUZZ_CHECK(parsed == w->wpos);
    return 1;
}

#endif
