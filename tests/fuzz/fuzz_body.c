/* Body framing in both directions: a request or a response head with chunked, Content-Length or
 * (responses) close-delimited framing, chosen by the first input byte, then the fuzzed body,
 * fed once in one piece and once in reads split anywhere, raw or de-chunked.
 *
 * Invariants: the split never changes where the message ends, whether it is refused, or the
 * de-chunked bytes; a Content-Length body ends after exactly that many bytes; de-chunked output
 * is never longer than the framed input. */
#include "fuzz_http.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    tt_http_status_t st; /* last status: AGAIN (input ran out), MESSAGE_DONE or ERROR */
    size_t consumed;
    int eof; /* the status after the end of input, when input ran out */
} outcome_t;

static outcome_t run(const char *head, size_t head_len, const uint8_t *body, size_t n,
                     fuzz_split_t *s, tt_buf_t *decoded)
{
    tt_http_reader_t r;
    tt_http_head_t *h = tt_http_head_acquire(&heads);
    tt_buf_t *b = tt_buf_acquire(&bufs);
    tt_buf_append(b, head, head_len);
    int response = head[0] == 'H';
    tt_http_reader_init(&r, response ? HTTP_RESPONSE : HTTP_REQUEST);
    tt_http_reader_begin_head(&r, h, 0);
    size_t parsed = 0;
    FUZZ_CHECK(tt_http_reader_head(&r, b, &parsed, 65536) == TT_HTTP_HEAD_DONE);
    tt_http_reader_decode_into(&r, decoded);
    outcome_t o = {.st = TT_HTTP_AGAIN};
    if (tt_http_reader_message_done(&r))
        o.st = TT_HTTP_MESSAGE_DONE;
    size_t off = 0;
    while (o.st == TT_HTTP_AGAIN && off < n) {
        size_t len = s != NULL ? fuzz_split_next(s, n - off) : n - off, c = SIZE_MAX;
        o.st = tt_http_reader_body(&r, (const char *)body + off, len, &c);
        if (o.st == TT_HTTP_ERROR)
            break;
        FUZZ_CHECK(c <= len);
        if (o.st == TT_HTTP_AGAIN)
            FUZZ_CHECK(c == len);
        off += c;
    }
    o.consumed = off;
    if (o.st == TT_HTTP_AGAIN)
        o.eof = (int)tt_http_reader_eof(&r);
    if (h->has_length && o.st == TT_HTTP_MESSAGE_DONE)
        FUZZ_CHECK(o.consumed == h->content_length);
    tt_buf_release(&bufs, b);
    tt_http_head_release(&heads, h);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint8_t sel = data[0];
    unsigned length = data[1];
    data += 2;
    size -= 2;
    fuzz_split_t split;
    if (!fuzz_split_init(&split, &data, &size))
        return 0;
    fuzz_http_pools_init();
    char head[160];
    int response = sel & 1, framing = (sel >> 1) % 3;
    const char *start = response ? "HTTP/1.1 200 OK" : "POST / HTTP/1.1\r\nHost: a";
    if (framing == 0)
        snprintf(head, sizeof(head), "%s\r\nTransfer-Encoding: chunked\r\n\r\n", start);
    else if (framing == 1 || !response)
        snprintf(head, sizeof(head), "%s\r\nContent-Length: %u\r\n\r\n", start, length);
    else
        snprintf(head, sizeof(head), "%s\r\n\r\n", start);
    int decode = (sel & 8) != 0;
    tt_buf_t *d1 = decode ? tt_buf_acquire(&bufs) : NULL,
             *d2 = decode ? tt_buf_acquire(&bufs) : NULL;
    outcome_t a = run(head, strlen(head), data, size, NULL, d1);
    outcome_t b = run(head, strlen(head), data, size, &split, d2);
    FUZZ_CHECK(a.st == b.st);
    if (a.st != TT_HTTP_ERROR) {
        FUZZ_CHECK(a.consumed == b.consumed && a.eof == b.eof);
        if (decode) {
            FUZZ_CHECK(tt_buf_len(d1) == tt_buf_len(d2));
            FUZZ_CHECK(memcmp(d1->data, d2->data, tt_buf_len(d1)) == 0);
            FUZZ_CHECK(tt_buf_len(d1) <= a.consumed);
        }
    }
    if (decode) {
        tt_buf_release(&bufs, d1);
        tt_buf_release(&bufs, d2);
    }
    return 0;
}
