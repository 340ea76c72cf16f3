/* HTTP/1.1 reading (llhttp adapter): heads parsed in one piece and in small pieces give the same
 * spans; the reader stops exactly at the end of each head and each message, so pipelined bytes are
 * never read ahead; Content-Length, chunked, close-delimited, HEAD and 1xx framing; malformed and
 * oversized input; token lists. Every buffer and head goes back to its pool and the pools are
 * destroyed at the end of each test. */
#include "http/message.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "leakcheck.h"

#define MAX_HEAD 65536

/* Per-test pools and the leak snapshot taken before them. */
typedef struct {
    tt_leakcheck_t lc;
    tt_bufpool_t bufs;
    tt_http_headpool_t heads;
} pools_t;

static void pools_init(pools_t *p)
{
    p->lc = tt_leakcheck_begin();
    tt_bufpool_init(&p->bufs, 4);
    tt_http_headpool_init(&p->heads, 4);
}

static void pools_done(pools_t *p)
{
    tt_bufpool_destroy(&p->bufs);
    tt_http_headpool_destroy(&p->heads);
    tt_leakcheck_end(p->lc);
}

/* The input still to be delivered, as a socket would deliver it. */
typedef struct {
    const char *p;
    size_t len;
    size_t step; /* bytes per read; 0: everything at once */
} input_t;

static input_t input(const char *p, size_t len, size_t step)
{
    input_t in = {p, len, step};
    return in;
}

#define INPUT(s, step) input((s), sizeof(s) - 1, (step))

/* Moves the next read's worth of input into b; returns 0 when the input is exhausted. */
static int deliver(input_t *in, tt_buf_t *b)
{
    if (in->len == 0)
        return 0;
    size_t n = in->step == 0 || in->step > in->len ? in->len : in->step;
    tt_buf_append(b, in->p, n);
    in->p += n;
    in->len -= n;
    return 1;
}

/* Reads a head: parses what b holds (the message starts at offset 0), then delivers input until
 * the reader stops asking for more. */
static tt_http_status_t read_head(tt_http_reader_t *r, tt_buf_t *b, input_t *in, size_t max_head,
                                  size_t *parsed)
{
    *parsed = 0;
    tt_http_status_t st = tt_http_reader_head(r, b, parsed, max_head);
    while (st == TT_HTTP_AGAIN && deliver(in, b)) {
        st = tt_http_reader_head(r, b, parsed, max_head);
        assert_true(*parsed <= b->wpos);
    }
    return st;
}

/* Reads a body: b holds the unread bytes after the head (rpos at the body). Feeds them, at most
 * in->step bytes per call, then more input, until the message ends. Consumed body bytes leave b;
 * what follows the message stays in b, compacted to offset 0. */
static tt_http_status_t read_body(tt_http_reader_t *r, tt_buf_t *b, input_t *in, size_t *body)
{
    *body = 0;
    for (;;) {
        size_t n = tt_buf_len(b);
        if (in->step != 0 && n > in->step)
            n = in->step;
        size_t consumed = SIZE_MAX;
        tt_http_status_t st = tt_http_reader_body(r, tt_buf_rptr(b), n, &consumed);
        if (st == TT_HTTP_ERROR)
            return st;
        assert_true(consumed <= n);
        tt_buf_consume(b, consumed);
        *body += consumed;
        if (st == TT_HTTP_MESSAGE_DONE) {
            tt_buf_compact(b);
            return st;
        }
        assert_int_equal(st, TT_HTTP_AGAIN);
        assert_int_equal(consumed, n); /* AGAIN takes everything given */
        if (tt_buf_len(b) == 0 && !deliver(in, b))
            return TT_HTTP_AGAIN;
    }
}

/* Reads one whole message (head, then body). Returns the first status that is not HEAD_DONE. */
static tt_http_status_t read_message(tt_http_reader_t *r, tt_http_head_t *h, tt_buf_t *b,
                                     input_t *in, int skip_body, size_t max_head)
{
    size_t parsed, body;
    tt_http_reader_begin_head(r, h, skip_body);
    tt_http_status_t st = read_head(r, b, in, max_head, &parsed);
    if (st != TT_HTTP_HEAD_DONE)
        return st;
    assert_int_equal(parsed, h->head_len);
    tt_buf_consume(b, parsed);
    return read_body(r, b, in, &body);
}

static int span_is(const char *base, uint32_t off, uint32_t len, const char *s)
{
    return len == strlen(s) && memcmp(base + off, s, len) == 0;
}

#define assert_span(base, off, len, s)                                                             \
    do {                                                                                           \
        if (!span_is((base), (off), (len), (s)))                                                   \
            fail_msg("span \"%.*s\" != \"%s\"", (int)(len), (base) + (off), (s));                  \
    } while (0)

#define assert_header(base, h, i, n, v)                                                            \
    do {                                                                                           \
        assert_true((uint32_t)(i) < (h)->nheaders);                                                \
        assert_span((base), (h)->headers[i].name, (h)->headers[i].name_len, (n));                  \
        assert_span((base), (h)->headers[i].value, (h)->headers[i].value_len, (v));                \
    } while (0)

/* --- heads in one piece and in pieces --------------------------------------------------------- */

static const char REQ_HEAD[] = "POST /path/to?q=1&r=%20 HTTP/1.1\r\n"
                               "Host: example.com\r\n"
                               "X-Dup: one\r\n"
                               "Accept: */*\r\n"
                               "x-dup: two\r\n"
                               "X-Empty:\r\n"
                               "Cookie: a=b; c=d\r\n"
                               "X-Inner-Space: several   spaced  words\r\n"
                               "Content-Length: 5\r\n"
                               "\r\n";
static const char REQ_REST[] = "hello"
                               "GET /next HTTP/1.1\r\nHost: n\r\n\r\n";

static void check_req_head(const tt_http_head_t *h, const char *base)
{
    assert_int_equal(h->method, HTTP_POST);
    assert_int_equal(h->major, 1);
    assert_int_equal(h->minor, 1);
    assert_span(base, h->target, h->target_len, "/path/to?q=1&r=%20");
    assert_int_equal(h->head_len, sizeof(REQ_HEAD) - 1);
    assert_int_equal(h->nheaders, 8);
    assert_header(base, h, 0, "Host", "example.com");
    assert_header(base, h, 1, "X-Dup", "one");
    assert_header(base, h, 2, "Accept", "*/*");
    assert_header(base, h, 3, "x-dup", "two");
    assert_header(base, h, 4, "X-Empty", "");
    assert_header(base, h, 5, "Cookie", "a=b; c=d");
    assert_header(base, h, 6, "X-Inner-Space", "several   spaced  words");
    assert_header(base, h, 7, "Content-Length", "5");
    assert_true(h->has_length);
    assert_int_equal(h->content_length, 5);
    assert_false(h->chunked);
    assert_true(h->keep_alive);
    assert_false(h->upgrade);
    assert_ptr_equal(tt_http_head_find(h, base, "x-DUP"), &h->headers[1]); /* the first one */
    assert_ptr_equal(tt_http_head_find(h, base, "cookie"), &h->headers[5]);
    assert_null(tt_http_head_find(h, base, "X-Du"));
    assert_null(tt_http_head_find(h, base, "Missing"));
}

static void test_head_pieces_give_same_spans(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    char msg[sizeof(REQ_HEAD) + sizeof(REQ_REST)];
    size_t len = (size_t)snprintf(msg, sizeof(msg), "%s%s", REQ_HEAD, REQ_REST);
    static const size_t steps[] = {0, 1, 2, 3, 7, 13, 64};
    tt_http_head_t ref;
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_REQUEST);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        input_t in = input(msg, len, steps[s]);
        size_t parsed;
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        /* Exactly the head: nothing after it was taken, whatever the buffer held. */
        assert_int_equal(parsed, sizeof(REQ_HEAD) - 1);
        assert_false(tt_http_reader_message_done(&r));
        check_req_head(h, b->data);
        if (s == 0) {
            ref = *h;
        } else {
            assert_int_equal(h->target, ref.target);
            assert_int_equal(h->target_len, ref.target_len);
            assert_int_equal(h->nheaders, ref.nheaders);
            assert_memory_equal(h->headers, ref.headers, ref.nheaders * sizeof(ref.headers[0]));
        }

        /* The body ends after 5 bytes; the pipelined request stays. */
        tt_buf_consume(b, parsed);
        size_t body;
        assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
        assert_int_equal(body, 5);
        assert_true(tt_http_reader_message_done(&r));
        size_t again = 99;
        assert_int_equal(tt_http_reader_body(&r, tt_buf_rptr(b), tt_buf_len(b), &again),
                         TT_HTTP_MESSAGE_DONE);
        assert_int_equal(again, 0);

        /* The next request on the same reader. */
        tt_http_reader_begin_head(&r, h, 0);
        assert_false(tt_http_reader_message_done(&r));
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(h->method, HTTP_GET);
        assert_span(b->data, h->target, h->target_len, "/next");
        assert_int_equal(h->nheaders, 1);
        assert_header(b->data, h, 0, "Host", "n");
        assert_int_equal(h->head_len, sizeof("GET /next HTTP/1.1\r\nHost: n\r\n\r\n") - 1);
        assert_true(tt_http_reader_message_done(&r)); /* body-less: complete at once */
        assert_int_equal(in.len, 0);
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
}

/* An empty value followed by another header must not merge the two. */
static void test_empty_values_in_pieces(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const char msg[] = "GET / HTTP/1.1\r\nA:\r\nB: \r\nC:x\r\nD:\r\n\r\n";
    for (size_t step = 0; step <= 4; step++) {
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_REQUEST);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        input_t in = INPUT(msg, step);
        size_t parsed;
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(h->nheaders, 4);
        assert_header(b->data, h, 0, "A", "");
        assert_header(b->data, h, 1, "B", "");
        assert_header(b->data, h, 2, "C", "x");
        assert_header(b->data, h, 3, "D", "");
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
}

static void test_bodyless_messages_complete_at_once(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const struct {
        llhttp_type_t kind;
        const char *text;
    } cases[] = {
        {HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
        {HTTP_REQUEST, "DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"},
        {HTTP_REQUEST, "GET / HTTP/1.0\r\n\r\n"},
        {HTTP_RESPONSE, "HTTP/1.1 204 No Content\r\nX: y\r\n\r\n"},
        {HTTP_RESPONSE, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"},
        {HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t step = 0; step <= 1; step++) {
            size_t len = strlen(cases[i].text);
            /* Pipelined bytes after the message must not be touched. */
            char msg[256];
            snprintf(msg, sizeof(msg), "%sNEXT", cases[i].text);
            tt_http_reader_t r;
            tt_http_reader_init(&r, cases[i].kind);
            tt_http_head_t *h = tt_http_head_acquire(&p.heads);
            tt_buf_t *b = tt_buf_acquire(&p.bufs);
            input_t in = input(msg, len + 4, step);
            size_t parsed;
            tt_http_reader_begin_head(&r, h, 0);
            assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
            assert_int_equal(parsed, len);
            assert_int_equal(h->head_len, len);
            assert_true(tt_http_reader_message_done(&r));
            assert_false(tt_http_reader_needs_eof(&r));
            tt_buf_consume(b, parsed);
            size_t body;
            assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
            assert_int_equal(body, 0);
            tt_buf_release(&p.bufs, b);
            tt_http_head_release(&p.heads, h);
        }
    }
    pools_done(&p);
}

/* RFC 9112 6.3: a 1xx, 204 or 304 response ends at its empty line whatever its headers say. A
 * 304 may carry the Content-Length of the representation it stands for (RFC 9110 8.6); reading
 * that many body bytes would stall the response until the upstream closes. */
static void test_no_content_statuses_have_no_body(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const char *const names[] = {"304 with Content-Length", "204 with Content-Length",
                                        "304 with Transfer-Encoding"};
    static const char *const heads[] = {
        "HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nContent-Length: 1234\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    static const char next[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    int failures = 0;
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        char msg[256];
        int len = snprintf(msg, sizeof(msg), "%s%s", heads[i], next);
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_RESPONSE);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        input_t in = input(msg, (size_t)len, 0);
        size_t parsed, body = 0;
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(parsed, strlen(heads[i]));
        tt_buf_consume(b, parsed);
        tt_http_status_t st = read_body(&r, b, &in, &body);
        if (st != TT_HTTP_MESSAGE_DONE || body != 0) {
            print_error("%s: status %d after %zu body bytes; expected the message to end with "
                        "its head\n",
                        names[i], (int)st, body);
            failures++;
        }
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
    assert_int_equal(failures, 0);
}

/* --- bodies ----------------------------------------------------------------------------------- */

static const char CL_MSG[] = "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
                             "0123456789"
                             "POST /v HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab";

static const char CHUNKED_BODY[] = "5\r\nhello\r\n"
                                   "6;ext=\"x\"\r\n world\r\n"
                                   "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                                   "0\r\nX-Trailer: t\r\n\r\n";

static void test_content_length_body_stops_at_end(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    for (size_t step = 0; step <= 11; step++) {
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_REQUEST);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        tt_buf_t *decoded = tt_buf_acquire(&p.bufs);
        input_t in = INPUT(CL_MSG, step);
        size_t parsed, body;
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(h->content_length, 10);
        assert_false(tt_http_reader_decoding(&r));
        tt_http_reader_decode_into(&r, decoded);
        assert_true(tt_http_reader_decoding(&r));
        tt_buf_consume(b, parsed);
        assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
        assert_int_equal(body, 10);
        assert_int_equal(tt_buf_len(decoded), 10);
        assert_memory_equal(decoded->data, "0123456789", 10);
        /* What is left is the next request, untouched. */
        const char *next = strstr(CL_MSG, "POST /v");
        size_t left = tt_buf_len(b) + in.len;
        assert_int_equal(left, strlen(next));
        assert_memory_equal(tt_buf_rptr(b), next, tt_buf_len(b));

        /* Beginning a head stops decoding. */
        tt_http_reader_begin_head(&r, h, 0);
        assert_false(tt_http_reader_decoding(&r));
        tt_buf_consume(decoded, tt_buf_len(decoded));
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_span(b->data, h->target, h->target_len, "/v");
        tt_buf_consume(b, parsed);
        assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
        assert_int_equal(body, 2);
        assert_int_equal(tt_buf_len(decoded), 0);
        assert_int_equal(tt_buf_len(b) + in.len, 0);
        tt_buf_release(&p.bufs, decoded);
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
}

static void test_chunked_body_stops_at_end_and_decodes(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const char head[] = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char next[] = "GET /after HTTP/1.1\r\nHost: a\r\n\r\n";
    char msg[512];
    size_t len = (size_t)snprintf(msg, sizeof(msg), "%s%s%s", head, CHUNKED_BODY, next);
    srand(777);
    for (int round = 0; round < 40; round++) {
        size_t step = round < 8 ? (size_t)round : 1 + (size_t)(rand() % 40);
        for (int decode = 0; decode <= 1; decode++) {
            tt_http_reader_t r;
            tt_http_reader_init(&r, HTTP_REQUEST);
            tt_http_head_t *h = tt_http_head_acquire(&p.heads);
            tt_buf_t *b = tt_buf_acquire(&p.bufs);
            tt_buf_t *out = tt_buf_acquire(&p.bufs);
            input_t in = input(msg, len, step);
            size_t parsed, body;
            tt_http_reader_begin_head(&r, h, 0);
            assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
            assert_int_equal(parsed, sizeof(head) - 1);
            assert_true(h->chunked);
            assert_false(h->has_length);
            assert_false(tt_http_reader_message_done(&r));
            if (decode)
                tt_http_reader_decode_into(&r, out);
            tt_buf_consume(b, parsed);
            assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
            /* The framing counts as message bytes: consumed ends after the last CRLF. */
            assert_int_equal(body, sizeof(CHUNKED_BODY) - 1);
            if (decode) {
                static const char payload[] = "hello worldabcdefghijklmnopqrstuvwxyz";
                assert_int_equal(tt_buf_len(out), sizeof(payload) - 1);
                assert_memory_equal(tt_buf_rptr(out), payload, sizeof(payload) - 1);
            } else {
                assert_int_equal(tt_buf_len(out), 0);
            }
            assert_int_equal(tt_buf_len(b) + in.len, sizeof(next) - 1);
            assert_memory_equal(tt_buf_rptr(b), next, tt_buf_len(b));
            tt_http_reader_begin_head(&r, h, 0);
            assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
            assert_span(b->data, h->target, h->target_len, "/after");
            assert_true(tt_http_reader_message_done(&r));
            tt_buf_release(&p.bufs, out);
            tt_buf_release(&p.bufs, b);
            tt_http_head_release(&p.heads, h);
        }
    }
    pools_done(&p);
}

/* The head is lent only while it is read (message.h): a caller returns it to the pool before
 * relaying the body, and another connection of the worker may borrow it at once. Trailer fields
 * at the end of a chunked body must not be written into it. */
static void test_trailers_leave_released_head_alone(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const char msg[] = "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-Other: 5\r\n\r\n";
    int failures = 0;
    for (size_t step = 0; step <= 1; step++) {
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_REQUEST);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        input_t in = INPUT(msg, step);
        size_t parsed, body;
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(h->nheaders, 2);
        tt_buf_consume(b, parsed);
        tt_http_head_release(&p.heads, h);

        /* Someone else's head now lives there. */
        tt_http_head_t *other = tt_http_head_acquire(&p.heads);
        assert_ptr_equal(other, h);
        memset(other, 0, sizeof(*other));
        other->nheaders = 1;
        other->headers[0] = (tt_http_header_t){0, 4, 6, 5};
        tt_http_head_t copy = *other;

        assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
        assert_int_equal(body, sizeof(msg) - 1 - parsed);
        if (memcmp(other, &copy, offsetof(tt_http_head_t, _next_free)) != 0) {
            print_error("%s: the trailers changed a released head (nheaders %u, was 1)\n",
                        step ? "byte by byte" : "one piece", other->nheaders);
            failures++;
        }
        tt_http_head_release(&p.heads, other);
        tt_buf_release(&p.bufs, b);
    }
    pools_done(&p);
    assert_int_equal(failures, 0);
}

/* A chunked response decoded for an HTTP/1.0 client: decoding may start and stop mid-body. */
static void test_decode_into_switch_midway(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const char msg[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    tt_http_reader_t r;
    tt_http_reader_init(&r, HTTP_RESPONSE);
    tt_http_head_t *h = tt_http_head_acquire(&p.heads);
    tt_buf_t *b = tt_buf_acquire(&p.bufs), *out = tt_buf_acquire(&p.bufs);
    input_t in = INPUT(msg, 0);
    size_t parsed, consumed;
    tt_http_reader_begin_head(&r, h, 0);
    assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
    tt_buf_consume(b, parsed);
    assert_int_equal(tt_http_reader_body(&r, tt_buf_rptr(b), 8, &consumed), TT_HTTP_AGAIN);
    assert_int_equal(consumed, 8); /* "3\r\nabc\r\n" not decoded */
    tt_buf_consume(b, consumed);
    tt_http_reader_decode_into(&r, out);
    assert_int_equal(tt_http_reader_body(&r, tt_buf_rptr(b), tt_buf_len(b), &consumed),
                     TT_HTTP_MESSAGE_DONE);
    assert_int_equal(tt_buf_len(out), 3);
    assert_memory_equal(tt_buf_rptr(out), "def", 3);
    tt_http_reader_decode_into(&r, NULL);
    assert_false(tt_http_reader_decoding(&r));
    tt_buf_release(&p.bufs, out);
    tt_buf_release(&p.bufs, b);
    tt_http_head_release(&p.heads, h);
    pools_done(&p);
}

/* --- responses: HEAD, 1xx, close-delimited -----------------------------------------------------
 */

static void test_head_response_ends_after_head(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const char first[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: x\r\n\r\n";
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char last[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
    char msg[512];
    size_t len = (size_t)snprintf(msg, sizeof(msg), "%s%s%s", first, chunked, last);
    for (size_t step = 0; step <= 5; step++) {
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_RESPONSE);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        input_t in = input(msg, len, step);
        size_t parsed, body;

        /* Response to HEAD with a Content-Length: no body follows. */
        tt_http_reader_begin_head(&r, h, 1);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(parsed, sizeof(first) - 1);
        assert_int_equal(h->head_len, sizeof(first) - 1);
        assert_int_equal(h->status, 200);
        assert_int_equal(h->content_length, 100);
        assert_true(tt_http_reader_message_done(&r));
        assert_false(tt_http_reader_needs_eof(&r));
        tt_buf_consume(b, parsed);
        assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
        assert_int_equal(body, 0);

        /* Response to HEAD, chunked: no body either. */
        tt_http_reader_begin_head(&r, h, 1);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(parsed, sizeof(chunked) - 1);
        assert_true(tt_http_reader_message_done(&r));
        tt_buf_consume(b, parsed);
        tt_buf_compact(b);

        /* A response to GET on the same connection reads its body. */
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(h->status, 404);
        assert_span(b->data, h->reason, h->reason_len, "Not Found");
        assert_false(tt_http_reader_message_done(&r));
        tt_buf_consume(b, parsed);
        assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
        assert_int_equal(body, 3);
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
}

static void test_informational_then_final(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const char *const heads[] = {
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    };
    static const int statuses[] = {100, 103, 200};
    char msg[256];
    snprintf(msg, sizeof(msg), "%s%s%sok", heads[0], heads[1], heads[2]);
    for (size_t step = 0; step <= 3; step++) {
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_RESPONSE);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        input_t in = input(msg, strlen(msg), step);
        for (int i = 0; i < 3; i++) {
            size_t parsed, body;
            tt_http_reader_begin_head(&r, h, 0);
            assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
            assert_int_equal(h->status, statuses[i]);
            assert_int_equal(parsed, strlen(heads[i]));
            if (i == 1)
                assert_header(b->data, h, 0, "Link", "</a.css>; rel=preload");
            assert_int_equal(tt_http_reader_message_done(&r), i < 2);
            tt_buf_consume(b, parsed);
            assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_MESSAGE_DONE);
            assert_int_equal(body, i < 2 ? 0 : 2);
        }
        assert_int_equal(tt_buf_len(b) + in.len, 0);
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
}

static void test_close_delimited_and_truncated(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    tt_http_reader_t r;
    tt_http_head_t *h = tt_http_head_acquire(&p.heads);
    tt_buf_t *b = tt_buf_acquire(&p.bufs), *out = tt_buf_acquire(&p.bufs);
    size_t parsed, body;

    /* No length and not chunked: the body runs to the end of the connection. */
    static const char close_msg[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                                    "some body bytes, HTTP/1.1 200 OK\r\n\r\n included";
    tt_http_reader_init(&r, HTTP_RESPONSE);
    input_t in = INPUT(close_msg, 7);
    tt_http_reader_begin_head(&r, h, 0);
    assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
    assert_true(tt_http_reader_needs_eof(&r));
    assert_false(tt_http_reader_message_done(&r));
    assert_false(h->keep_alive);
    tt_http_reader_decode_into(&r, out);
    tt_buf_consume(b, parsed);
    assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_AGAIN);
    assert_int_equal(body, sizeof(close_msg) - 1 - parsed);
    assert_int_equal(tt_buf_len(out), body);
    assert_int_equal(tt_http_reader_eof(&r), TT_HTTP_MESSAGE_DONE);
    assert_true(tt_http_reader_message_done(&r));
    assert_int_equal(tt_http_reader_eof(&r), TT_HTTP_MESSAGE_DONE); /* stays done */

    /* Content-Length not reached before the end: truncated. */
    static const char short_cl[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345";
    tt_http_reader_init(&r, HTTP_RESPONSE);
    tt_buf_consume(b, tt_buf_len(b));
    in = INPUT(short_cl, 0);
    tt_http_reader_begin_head(&r, h, 0);
    assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
    assert_false(tt_http_reader_needs_eof(&r));
    tt_buf_consume(b, parsed);
    assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_AGAIN);
    assert_int_equal(body, 5);
    assert_int_equal(tt_http_reader_eof(&r), TT_HTTP_ERROR);
    assert_false(tt_http_reader_message_done(&r));

    /* Chunked, cut inside a chunk. */
    static const char short_chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        "5\r\nhel";
    tt_http_reader_init(&r, HTTP_RESPONSE);
    tt_buf_consume(b, tt_buf_len(b));
    in = INPUT(short_chunked, 0);
    tt_http_reader_begin_head(&r, h, 0);
    assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
    tt_buf_consume(b, parsed);
    assert_int_equal(read_body(&r, b, &in, &body), TT_HTTP_AGAIN);
    assert_int_equal(tt_http_reader_eof(&r), TT_HTTP_ERROR);

    /* A complete Content-Length message, then the end: fine. */
    static const char full[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    tt_http_reader_init(&r, HTTP_RESPONSE);
    tt_buf_consume(b, tt_buf_len(b));
    in = INPUT(full, 0);
    assert_int_equal(read_message(&r, h, b, &in, 0, MAX_HEAD), TT_HTTP_MESSAGE_DONE);
    assert_int_equal(tt_http_reader_eof(&r), TT_HTTP_MESSAGE_DONE);

    tt_buf_release(&p.bufs, out);
    tt_buf_release(&p.bufs, b);
    tt_http_head_release(&p.heads, h);
    pools_done(&p);
}

/* --- malformed and oversized input ------------------------------------------------------------ */

typedef struct {
    const char *name;
    llhttp_type_t kind;
    const char *text;
    size_t len; /* includes NUL bytes */
} bad_case_t;

#define BAD(name, kind, s)                                                                         \
    {                                                                                              \
        name, kind, s, sizeof(s) - 1                                                               \
    }

static const bad_case_t bad_cases[] = {
    BAD("no space after method", HTTP_REQUEST, "GET/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("junk after version", HTTP_REQUEST, "GET / HTTP/1.1x\r\nHost: a\r\n\r\n"),
    BAD("not HTTP", HTTP_REQUEST, "GET / FOO/1.1\r\nHost: a\r\n\r\n"),
    BAD("space before CRLF of request line", HTTP_REQUEST, "GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    BAD("bad method", HTTP_REQUEST, "G@T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("header without colon", HTTP_REQUEST, "GET / HTTP/1.1\r\nHost a\r\n\r\n"),
    BAD("empty header name", HTTP_REQUEST, "GET / HTTP/1.1\r\n: v\r\n\r\n"),
    BAD("space before colon", HTTP_REQUEST, "GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    BAD("bare LF", HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\n\n"),
    BAD("Content-Length with Transfer-Encoding", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n"),
    BAD("Transfer-Encoding with Content-Length", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        "0\r\n\r\n"),
    BAD("two different Content-Lengths", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"),
    BAD("negative Content-Length", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
    BAD("chunked not last", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
    BAD("invalid chunk size", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    BAD("chunk size with a space", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    BAD("chunk data not followed by CRLF", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    BAD("NUL in target", HTTP_REQUEST, "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("NUL in header name", HTTP_REQUEST, "GET / HTTP/1.1\r\nX\0Y: a\r\n\r\n"),
    BAD("NUL in header value", HTTP_REQUEST, "GET / HTTP/1.1\r\nX-Y: a\0b\r\n\r\n"),
    BAD("obsolete line folding", HTTP_REQUEST, "GET / HTTP/1.1\r\nX-Y: a\r\n b\r\nHost: a\r\n\r\n"),
    BAD("obsolete line folding, tab", HTTP_REQUEST,
        "GET / HTTP/1.1\r\nHost: a\r\nX-Y: a\r\n\tb\r\n\r\n"),
    BAD("bad status", HTTP_RESPONSE, "HTTP/1.1 2x0 OK\r\n\r\n"),
    BAD("bad response Content-Length", HTTP_RESPONSE,
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"),
    BAD("obsolete line folding in a response", HTTP_RESPONSE,
        "HTTP/1.1 200 OK\r\nX-Y: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    BAD("fold after an empty first line", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    BAD("fold after an empty first line in a response", HTTP_RESPONSE,
        "HTTP/1.1 200 OK\r\nContent-Length:\r\n 2\r\n\r\nok"),
    BAD("fold in a trailer", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1\r\na\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
    BAD("fold after an empty trailer line", HTTP_RESPONSE,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T:\r\n\tb\r\n\r\n"),
    BAD("Transfer-Encoding in an HTTP/1.0 request", HTTP_REQUEST,
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    BAD("Transfer-Encoding in an HTTP/1.0 response", HTTP_RESPONSE,
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    BAD("chunk size 2^63", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        "8000000000000000\r\nab"),
    BAD("chunk size 2^64 - 1", HTTP_RESPONSE,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab"),
    BAD("chunk size 2^60", HTTP_RESPONSE,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\nab"),
    BAD("chunk extension over 1 KiB", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;x="
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aa"
        "\r\na\r\n0\r\n\r\n"),
    BAD("Content-Length 2^63", HTTP_REQUEST,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n"),
    BAD("status 000", HTTP_RESPONSE, "HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok"),
    BAD("status 099", HTTP_RESPONSE, "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok"),
    BAD("status 600", HTTP_RESPONSE, "HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok"),
    BAD("control byte in reason phrase", HTTP_RESPONSE,
        "HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok"),
    BAD("DEL in reason phrase", HTTP_RESPONSE,
        "HTTP/1.1 200 OK\x7f\r\nContent-Length: 2\r\n\r\nok"),
};

static void test_malformed_input_is_an_error(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    int failures = 0;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        for (size_t step = 0; step <= 1; step++) {
            const bad_case_t *c = &bad_cases[i];
            tt_http_reader_t r;
            tt_http_reader_init(&r, c->kind);
            tt_http_head_t *h = tt_http_head_acquire(&p.heads);
            tt_buf_t *b = tt_buf_acquire(&p.bufs);
            input_t in = input(c->text, c->len, step);
            tt_http_status_t st = read_message(&r, h, b, &in, 0, MAX_HEAD);
            if (st != TT_HTTP_ERROR) {
                print_error("%s (%s): status %d, expected TT_HTTP_ERROR\n", c->name,
                            step ? "byte by byte" : "one piece", (int)st);
                failures++;
            } else {
                const char *why = tt_http_reader_error(&r);
                assert_non_null(why);
                assert_true(strlen(why) > 0);
            }
            tt_buf_release(&p.bufs, b);
            tt_http_head_release(&p.heads, h);
        }
    }
    pools_done(&p);
    assert_int_equal(failures, 0);
}

/* Builds a request head with n headers. */
static size_t many_headers(char *out, size_t size, int n)
{
    size_t len = (size_t)snprintf(out, size, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, size - len, "X-H%d: v%d\r\n", i, i);
    len += (size_t)snprintf(out + len, size - len, "\r\n");
    assert_true(len < size);
    return len;
}

static void test_too_many_headers_or_too_large(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static char text[16384];
    for (size_t step = 0; step <= 1; step++) {
        tt_http_reader_t r;
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        size_t parsed;

        /* Exactly the maximum: fine, every header kept. */
        size_t len = many_headers(text, sizeof(text), TT_HTTP_MAX_HEADERS);
        tt_http_reader_init(&r, HTTP_REQUEST);
        input_t in = input(text, len, step);
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(h->nheaders, TT_HTTP_MAX_HEADERS);
        assert_header(b->data, h, TT_HTTP_MAX_HEADERS - 1, "X-H127", "v127");

        /* One more. */
        len = many_headers(text, sizeof(text), TT_HTTP_MAX_HEADERS + 1);
        tt_http_reader_init(&r, HTTP_REQUEST);
        tt_buf_consume(b, tt_buf_len(b));
        in = input(text, len, step);
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_TOO_LARGE);
        assert_string_equal(tt_http_reader_error(&r), "too many header fields");

        /* A head of exactly max_head bytes fits; one byte less of limit does not. */
        len = many_headers(text, sizeof(text), 20);
        for (int extra = 0; extra <= 1; extra++) {
            tt_http_reader_init(&r, HTTP_REQUEST);
            tt_buf_consume(b, tt_buf_len(b));
            in = input(text, len, step);
            tt_http_reader_begin_head(&r, h, 0);
            tt_http_status_t st = read_head(&r, b, &in, len - (size_t)extra, &parsed);
            assert_int_equal(st, extra ? TT_HTTP_HEAD_TOO_LARGE : TT_HTTP_HEAD_DONE);
            assert_true(parsed <= len - (size_t)extra);
        }

        /* Far over the limit, with more bytes arriving after it was reached. */
        tt_http_reader_init(&r, HTTP_REQUEST);
        tt_buf_consume(b, tt_buf_len(b));
        in = input(text, len, step);
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, 64, &parsed), TT_HTTP_HEAD_TOO_LARGE);
        assert_true(parsed <= 64);
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
}

/* --- flags and helpers ------------------------------------------------------------------------ */

static void test_keep_alive_and_upgrade_flags(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    static const struct {
        const char *text;
        int keep_alive, upgrade, major, minor;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, 0, 1, 1},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0, 0, 1, 1},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", 0, 0, 1, 1},
        {"GET / HTTP/1.0\r\n\r\n", 0, 0, 1, 0},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1, 0, 1, 0},
        {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 1, 1,
         1, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tt_http_reader_t r;
        tt_http_reader_init(&r, HTTP_REQUEST);
        tt_http_head_t *h = tt_http_head_acquire(&p.heads);
        tt_buf_t *b = tt_buf_acquire(&p.bufs);
        size_t len = strlen(cases[i].text), parsed;
        char msg[256];
        snprintf(msg, sizeof(msg), "%sTUNNEL BYTES", cases[i].text);
        input_t in = input(msg, cases[i].upgrade ? len + 12 : len, 0);
        tt_http_reader_begin_head(&r, h, 0);
        assert_int_equal(read_head(&r, b, &in, MAX_HEAD, &parsed), TT_HTTP_HEAD_DONE);
        assert_int_equal(parsed, len); /* an upgrade's tunnel bytes are not taken */
        assert_int_equal(h->keep_alive, cases[i].keep_alive);
        assert_int_equal(h->upgrade, cases[i].upgrade);
        assert_int_equal(h->major, cases[i].major);
        assert_int_equal(h->minor, cases[i].minor);
        tt_buf_release(&p.bufs, b);
        tt_http_head_release(&p.heads, h);
    }
    pools_done(&p);
}

static void test_value_has_token(void **state)
{
    (void)state;
    static const struct {
        const char *value, *token;
        int has;
    } cases[] = {
        {"close", "close", 1},
        {"Close", "close", 1},
        {"keep-alive, Upgrade", "upgrade", 1},
        {"keep-alive, Upgrade", "keep-alive", 1},
        {"keep-alive,Upgrade", "UPGRADE", 1},
        {"  keep-alive  ,   upgrade  ", "upgrade", 1},
        {"a,\tb\t,c", "b", 1},
        {"a,,b", "b", 1},
        {",,,close,,,", "close", 1},
        {"closed", "close", 0},
        {"x-close", "close", 0},
        {"clo se", "close", 0},
        {"close-ish, keep", "close", 0},
        {"", "close", 0},
        {" , ", "close", 0},
        {"keep-alive", "keep", 0},
        {"TE, X-Custom-Header", "x-custom-header", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = tt_http_value_has_token(cases[i].value, strlen(cases[i].value), cases[i].token);
        if (got != cases[i].has)
            fail_msg("\"%s\" has \"%s\": %d, expected %d", cases[i].value, cases[i].token, got,
                     cases[i].has);
    }
    /* The length bounds the value: nothing past it is looked at. */
    assert_false(tt_http_value_has_token("a, close", 3, "close"));
    assert_true(tt_http_value_has_token("close, a", 5, "close"));
    assert_false(tt_http_value_has_token("closex", 5, "closex"));
}

static void test_headpool_recycles(void **state)
{
    (void)state;
    pools_t p;
    pools_init(&p);
    tt_http_head_t *a = tt_http_head_acquire(&p.heads), *b = tt_http_head_acquire(&p.heads);
    tt_http_head_t *c = tt_http_head_acquire(&p.heads);
    p.heads.recycle.max_free = 2;
    tt_http_head_release(&p.heads, a);
    tt_http_head_release(&p.heads, b);
    tt_http_head_release(&p.heads, c); /* over max_free: freed */
    tt_http_head_release(&p.heads, NULL);
    assert_int_equal(p.heads.recycle.nfree, 2);
    assert_ptr_equal(tt_http_head_acquire(&p.heads), b);
    assert_ptr_equal(tt_http_head_acquire(&p.heads), a);
    assert_int_equal(p.heads.recycle.nfree, 0);
    tt_http_head_release(&p.heads, a);
    tt_http_head_release(&p.heads, b);
    pools_done(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_pieces_give_same_spans),
        cmocka_unit_test(test_empty_values_in_pieces),
        cmocka_unit_test(test_bodyless_messages_complete_at_once),
        cmocka_unit_test(test_no_content_statuses_have_no_body),
        cmocka_unit_test(test_content_length_body_stops_at_end),
        cmocka_unit_test(test_chunked_body_stops_at_end_and_decodes),
        cmocka_unit_test(test_trailers_leave_released_head_alone),
        cmocka_unit_test(test_decode_into_switch_midway),
        cmocka_unit_test(test_head_response_ends_after_head),
        cmocka_unit_test(test_informational_then_final),
        cmocka_unit_test(test_close_delimited_and_truncated),
        cmocka_unit_test(test_malformed_input_is_an_error),
        cmocka_unit_test(test_too_many_headers_or_too_large),
        cmocka_unit_test(test_keep_alive_and_upgrade_flags),
        cmocka_unit_test(test_value_has_token),
        cmocka_unit_test(test_headpool_recycles),
    };
    return cmocka_run_group_tests_name("http_message", tests, NULL, NULL);
}
