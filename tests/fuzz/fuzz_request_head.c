/* The request head as the session handles it: parsed from reads split anywhere, checked and
 * routed (tt_http_request_target, the transfer-coding rule), rewritten for the upstream
 * (tt_http_write_request_head), then the body bytes that follow parsed in their own split.
 *
 * Invariants beyond "no crash, no sanitizer report": the split never changes the verdict or the
 * head's framing; a head tether accepts and rewrites parses again, whole, as one head with the
 * same method, target and framing (what the upstream reads is what tether read). */
#include "fuzz_http.h"
#include "http/rewrite.h"

#include <string.h>

#define MAX_HEAD 16384

typedef struct {
    tt_http_status_t st;
    uint32_t head_len, nheaders;
    uint8_t method, chunked, has_length;
    uint64_t content_length;
} verdict_t;

/* Parses a head from data, fed split as s says (NULL: in one piece). */
static verdict_t read_head(const uint8_t *data, size_t size, fuzz_split_t *s, tt_buf_t *b,
                           tt_http_reader_t *r, tt_http_head_t *h)
{
    tt_http_reader_init(r, HTTP_REQUEST);
    tt_http_reader_begin_head(r, h, 0);
    size_t fed, parsed;
    verdict_t v;
    memset(&v, 0, sizeof(v)); /* compared with memcmp: padding included */
    v.st = fuzz_feed_head(r, b, data, size, s, MAX_HEAD, &fed, &parsed);
    if (v.st == TT_HTTP_HEAD_DONE) {
        v.head_len = h->head_len;
        v.nheaders = h->nheaders;
        v.method = h->method;
        v.chunked = h->chunked;
        v.has_length = h->has_length;
        v.content_length = h->content_length;
        FUZZ_CHECK(h->head_len == parsed && h->head_len <= fed);
        FUZZ_CHECK(!(h->chunked && h->has_length)); /* llhttp strict refuses both */
    }
    return v;
}

static void check_rewrite(const tt_http_head_t *h, const char *base)
{
    tt_http_target_t t;
    if (tt_http_request_target(h, base, &t) != NULL)
        return; /* 400 */
    if (h->chunked && !tt_http_transfer_coding_is_chunked(h, base))
        return; /* 501 */
    if (h->method == HTTP_CONNECT)
        return; /* 405 */
    /* A dedicated port with preserve_host: the client's Host goes on, the upstream's own when
     * there is none (an HTTP/1.0 request), the authority of an absolute-form target. */
    tt_http_request_out_t out = {.target = t.target, .tunnel = h->upgrade};
    if (t.absolute)
        out.host = t.host;
    else if (t.host.len == 0)
        out.host = (tt_span_t){"upstream.test", 13};
    tt_buf_t *w = tt_buf_acquire(&bufs);
    tt_http_write_request_head(w, h, base, &out);

    tt_buf_t *again = tt_buf_acquire(&bufs);
    tt_buf_append(again, w->data, w->wpos);
    tt_http_head_t *h2 = tt_http_head_acquire(&heads);
    if (!fuzz_reparse_head(again, HTTP_REQUEST, 0, h, h2))
        goto done;
    FUZZ_CHECK(h2->method == h->method);
    FUZZ_CHECK(h2->chunked == h->chunked && h2->has_length == h->has_length);
    FUZZ_CHECK(h2->content_length == h->content_length);
    FUZZ_CHECK(h2->target_len == t.target.len + (t.target.len > 0 && t.target.str[0] == '?'));
    tt_http_target_t t2;
    FUZZ_CHECK(tt_http_request_target(h2, again->data, &t2) == NULL);
done:
    tt_http_head_release(&heads, h2);
    tt_buf_release(&bufs, again);
    tt_buf_release(&bufs, w);
}

/* The body after the head, fed in its own split: consumption never exceeds what was given and
 * stops for good at the message's end. */
static void read_body(tt_http_reader_t *r, const char *p, size_t n, fuzz_split_t *s)
{
    size_t off = 0;
    while (off < n) {
        size_t len = fuzz_split_next(s, n - off), consumed = SIZE_MAX;
        tt_http_status_t st = tt_http_reader_body(r, p + off, len, &consumed);
        if (st == TT_HTTP_ERROR)
            return;
        FUZZ_CHECK(consumed <= len);
        off += consumed;
        if (st == TT_HTTP_MESSAGE_DONE) {
            FUZZ_CHECK(tt_http_reader_body(r, p + off, n - off, &consumed) ==
                           TT_HTTP_MESSAGE_DONE &&
                       consumed == 0);
            return;
        }
        FUZZ_CHECK(consumed == len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_split_t split;
    if (!fuzz_split_init(&split, &data, &size))
        return 0;
    fuzz_http_pools_init();
    tt_buf_t *whole = tt_buf_acquire(&bufs), *pieces = tt_buf_acquire(&bufs);
    tt_http_head_t *h1 = tt_http_head_acquire(&heads), *h2 = tt_http_head_acquire(&heads);
    tt_http_reader_t r1, r2;
    verdict_t a = read_head(data, size, NULL, whole, &r1, h1);
    verdict_t b = read_head(data, size, &split, pieces, &r2, h2);
    /* A verdict in one piece may come before all bytes are in when split, never differ. */
    if (a.st != TT_HTTP_AGAIN && b.st != TT_HTTP_AGAIN)
        FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);
    if (b.st == TT_HTTP_HEAD_DONE) {
        check_rewrite(h2, pieces->data);
        read_body(&r2, (const char *)data + h2->head_len, size - h2->head_len, &split);
    }
    tt_http_head_release(&heads, h1);
    tt_http_head_release(&heads, h2);
    tt_buf_release(&bufs, whole);
    tt_buf_release(&bufs, pieces);
    return 0;
}
