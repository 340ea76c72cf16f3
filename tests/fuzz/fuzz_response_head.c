/* The response head as the session handles it: parsed from reads split anywhere (as the answer
 * to a HEAD request or not), rewritten for the client with the connection handling the session
 * may choose (tt_http_write_response_head), then the body that follows parsed in its own split,
 * de-chunked or raw.
 *
 * Invariants beyond "no crash, no sanitizer report": the split never changes the verdict; an
 * accepted status is 100-599; a rewritten head parses again, whole, with the same status and
 * framing (or, de-chunked, with no framing of its own but the close). */
#include "fuzz_http.h"
#include "http/rewrite.h"

#include <string.h>

#define MAX_HEAD 16384

typedef struct {
    tt_http_status_t st;
    uint32_t head_len;
    uint16_t status;
    uint8_t chunked, has_length, done;
    uint64_t content_length;
} verdict_t;

static verdict_t read_head(const uint8_t *data, size_t size, fuzz_split_t *s, int skip_body,
                           tt_buf_t *b, tt_http_reader_t *r, tt_http_head_t *h)
{
    tt_http_reader_init(r, HTTP_RESPONSE);
    tt_http_reader_begin_head(r, h, skip_body);
    size_t fed, parsed;
    verdict_t v;
    memset(&v, 0, sizeof(v));
    v.st = fuzz_feed_head(r, b, data, size, s, MAX_HEAD, &fed, &parsed);
    if (v.st == TT_HTTP_HEAD_DONE) {
        v.head_len = h->head_len;
        v.status = h->status;
        v.chunked = h->chunked;
        v.has_length = h->has_length;
        v.content_length = h->content_length;
        v.done = (uint8_t)tt_http_reader_message_done(r);
        FUZZ_CHECK(h->status >= 100 && h->status <= 599);
        FUZZ_CHECK(h->head_len == parsed);
    }
    return v;
}

static void check_rewrite(const tt_http_head_t *h, const char *base, uint8_t flags, int skip_body)
{
    tt_http_response_out_t out = {
        .close = flags & 1,
        .keep_alive_10 = (flags & 3) == 2,
        .dechunk = (flags & 4) && h->chunked,
        .tunnel = h->status == 101,
    };
    tt_buf_t *w = tt_buf_acquire(&bufs);
    tt_http_write_response_head(w, h, base, &out);
    tt_http_head_t *h2 = tt_http_head_acquire(&heads);
    if (!fuzz_reparse_head(w, HTTP_RESPONSE, skip_body, h, h2))
        goto done;
    FUZZ_CHECK(h2->status == h->status);
    if (!out.dechunk) {
        FUZZ_CHECK(h2->chunked == h->chunked && h2->has_length == h->has_length);
        FUZZ_CHECK(h2->content_length == h->content_length);
    } else {
        FUZZ_CHECK(!h2->chunked);
    }
done:
    tt_http_head_release(&heads, h2);
    tt_buf_release(&bufs, w);
}

static void read_body(tt_http_reader_t *r, const char *p, size_t n, fuzz_split_t *s, int decode)
{
    tt_buf_t *decoded = decode ? tt_buf_acquire(&bufs) : NULL;
    tt_http_reader_decode_into(r, decoded);
    size_t off = 0, raw = 0;
    int failed = 0;
    while (off < n) {
        size_t len = fuzz_split_next(s, n - off), consumed = SIZE_MAX;
        tt_http_status_t st = tt_http_reader_body(r, p + off, len, &consumed);
        if (st == TT_HTTP_ERROR) {
            failed = 1; /* part of what was decoded belongs to no complete chunk */
            break;
        }
        FUZZ_CHECK(consumed <= len);
        off += consumed;
        raw += consumed;
        if (st == TT_HTTP_MESSAGE_DONE)
            break;
        FUZZ_CHECK(consumed == len);
    }
    if (off == n)
        (void)tt_http_reader_eof(r);
    if (decoded != NULL) {
        FUZZ_CHECK(failed || tt_buf_len(decoded) <= raw);
        tt_buf_release(&bufs, decoded);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_split_t split;
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;
    if (!fuzz_split_init(&split, &data, &size))
        return 0;
    fuzz_http_pools_init();
    int skip_body = (flags & 8) != 0;
    tt_buf_t *whole = tt_buf_acquire(&bufs), *pieces = tt_buf_acquire(&bufs);
    tt_http_head_t *h1 = tt_http_head_acquire(&heads), *h2 = tt_http_head_acquire(&heads);
    tt_http_reader_t r1, r2;
    verdict_t a = read_head(data, size, NULL, skip_body, whole, &r1, h1);
    verdict_t b = read_head(data, size, &split, skip_body, pieces, &r2, h2);
    if (a.st != TT_HTTP_AGAIN && b.st != TT_HTTP_AGAIN)
        FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);
    if (b.st == TT_HTTP_HEAD_DONE) {
        check_rewrite(h2, pieces->data, flags, skip_body);
        if (!tt_http_reader_message_done(&r2))
            read_body(&r2, (const char *)data + h2->head_len, size - h2->head_len, &split,
                      (flags & 4) && h2->chunked);
    }
    tt_http_head_release(&heads, h1);
    tt_http_head_release(&heads, h2);
    tt_buf_release(&bufs, whole);
    tt_buf_release(&bufs, pieces);
    return 0;
}
