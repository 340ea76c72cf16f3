/* Head rewriting: hop-by-hop headers (Connection and what it names, Keep-Alive, Proxy-Connection,
 * TE, Trailer, Upgrade) are dropped and everything else is copied in order, byte for byte; Host,
 * target and tether's own Connection header; generated error responses; absolute-form targets;
 * Keep-Alive timeouts. Heads are parsed with the real reader so the spans are the ones tether
 * works with. */
#include "http/rewrite.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "leakcheck.h"

typedef struct {
    tt_leakcheck_t lc;
    tt_bufpool_t bufs;
    tt_http_headpool_t heads;
    tt_http_head_t *h;
    tt_buf_t *in;  /* the parsed head's bytes */
    tt_buf_t *out; /* what tether writes */
} fx_t;

static void fx_init(fx_t *f)
{
    f->lc = tt_leakcheck_begin();
    tt_bufpool_init(&f->bufs, 2);
    tt_http_headpool_init(&f->heads, 1);
    f->h = tt_http_head_acquire(&f->heads);
    f->in = tt_buf_acquire(&f->bufs);
    f->out = tt_buf_acquire(&f->bufs);
}

static void fx_done(fx_t *f)
{
    tt_http_head_release(&f->heads, f->h);
    tt_buf_release(&f->bufs, f->in);
    tt_buf_release(&f->bufs, f->out);
    tt_http_headpool_destroy(&f->heads);
    tt_bufpool_destroy(&f->bufs);
    tt_leakcheck_end(f->lc);
}

/* Parses text as one head into f->h (f->in holds it); skip_body for a response to HEAD. */
static void parse(fx_t *f, llhttp_type_t kind, const char *text)
{
    tt_http_reader_t r;
    tt_http_reader_init(&r, kind);
    tt_http_reader_begin_head(&r, f->h, 0);
    f->in->rpos = f->in->wpos = 0;
    f->out->rpos = f->out->wpos = 0;
    tt_buf_append(f->in, text, strlen(text));
    size_t parsed = 0;
    assert_int_equal(tt_http_reader_head(&r, f->in, &parsed, 65536), TT_HTTP_HEAD_DONE);
    assert_int_equal(parsed, strlen(text));
}

static tt_span_t span(const char *s)
{
    tt_span_t sp = {s, strlen(s)};
    return sp;
}

#define assert_out(f, expected)                                                                    \
    do {                                                                                           \
        size_t n_ = tt_buf_len((f)->out), e_ = strlen(expected);                                   \
        if (n_ != e_ || memcmp(tt_buf_rptr((f)->out), (expected), e_) != 0)                        \
            fail_msg("wrote:\n%.*s\nexpected:\n%s", (int)n_, tt_buf_rptr((f)->out), (expected));   \
    } while (0)

/* --- request heads ---------------------------------------------------------------------------- */

static const char HOP_REQUEST[] = "GET /a/b?c=d HTTP/1.1\r\n"
                                  "Host: client.example\r\n"
                                  "Connection: keep-alive, X-Foo\r\n"
                                  "X-Foo: dropped because named\r\n"
                                  "Accept: */*\r\n"
                                  "connection:  x-bar ,X-Baz\r\n"
                                  "x-BAR: dropped too\r\n"
                                  "X-Dup: one\r\n"
                                  "X-BAZ: and this\r\n"
                                  "Keep-Alive: timeout=5\r\n"
                                  "Proxy-Connection: keep-alive\r\n"
                                  "TE: trailers\r\n"
                                  "Trailer: X-Checksum\r\n"
                                  "Upgrade: websocket\r\n"
                                  "X-Dup: two\r\n"
                                  "Cookie: a=b; c=\"d, e\"\r\n"
                                  "X-Foo-Bar: kept (a different name)\r\n"
                                  "X-Inner:  value  with   spaces\r\n"
                                  "Content-Type: text/plain; charset=utf-8\r\n"
                                  "\r\n";

static void test_request_drops_hop_by_hop(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    parse(&f, HTTP_REQUEST, HOP_REQUEST);
    tt_http_request_out_t o = {.target = span("/a/b?c=d")};
    tt_http_write_request_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "GET /a/b?c=d HTTP/1.1\r\n"
                   "Host: client.example\r\n"
                   "Accept: */*\r\n"
                   "X-Dup: one\r\n"
                   "X-Dup: two\r\n"
                   "Cookie: a=b; c=\"d, e\"\r\n"
                   "X-Foo-Bar: kept (a different name)\r\n"
                   "X-Inner: value  with   spaces\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "\r\n");
    fx_done(&f);
}

static void test_request_host_and_target(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    static const char req[] = "POST http://client.example/submit?x=1 HTTP/1.0\r\n"
                              "User-Agent: t\r\n"
                              "Host: client.example\r\n"
                              "Content-Length: 3\r\n"
                              "\r\n";
    parse(&f, HTTP_REQUEST, req);

    /* Host replaced (and moved first), target written as given, HTTP/1.1 upstream. */
    tt_http_request_out_t o = {.target = span("/submit?x=1"), .host = span("10.0.0.7:8080")};
    tt_http_write_request_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "POST /submit?x=1 HTTP/1.1\r\n"
                   "Host: 10.0.0.7:8080\r\n"
                   "User-Agent: t\r\n"
                   "Content-Length: 3\r\n"
                   "\r\n");

    /* Host kept where it was when none is given. */
    f.out->rpos = f.out->wpos = 0;
    o.host.len = 0;
    o.host.str = NULL;
    tt_http_write_request_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "POST /submit?x=1 HTTP/1.1\r\n"
                   "User-Agent: t\r\n"
                   "Host: client.example\r\n"
                   "Content-Length: 3\r\n"
                   "\r\n");

    /* Appends after what the buffer holds. */
    static const char methods[][8] = {"PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char text[128], expected[128];
        snprintf(text, sizeof(text), "%s /m HTTP/1.1\r\nHost: h\r\n\r\n", methods[i]);
        snprintf(expected, sizeof(expected), "%s /m HTTP/1.1\r\nHost: h\r\n\r\n", methods[i]);
        parse(&f, HTTP_REQUEST, text);
        tt_buf_append(f.out, "before", 6);
        tt_http_request_out_t mo = {.target = span("/m")};
        tt_http_write_request_head(f.out, f.h, f.in->data, &mo);
        assert_memory_equal(tt_buf_rptr(f.out), "before", 6);
        tt_buf_consume(f.out, 6);
        assert_out(&f, expected);
    }
    fx_done(&f);
}

static void test_request_tunnel_keeps_upgrade(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    static const char req[] = "GET /chat HTTP/1.1\r\n"
                              "Host: a\r\n"
                              "Connection: Upgrade, HTTP2-Settings\r\n"
                              "Upgrade: websocket\r\n"
                              "HTTP2-Settings: x\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "Keep-Alive: 300\r\n"
                              "\r\n";
    parse(&f, HTTP_REQUEST, req);
    tt_http_request_out_t o = {.target = span("/chat"), .tunnel = 1};
    tt_http_write_request_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "GET /chat HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "Upgrade: websocket\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "Connection: upgrade\r\n"
                   "\r\n");

    /* Not a tunnel: Upgrade goes too, and tether adds no Connection header. */
    f.out->rpos = f.out->wpos = 0;
    o.tunnel = 0;
    tt_http_write_request_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "GET /chat HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "\r\n");
    fx_done(&f);
}

/* --- response heads --------------------------------------------------------------------------- */

static const char RESPONSE[] = "HTTP/1.1 200 Fine, Thanks\r\n"
                               "Connection: keep-alive, X-Hop\r\n"
                               "Keep-Alive: timeout=5, max=100\r\n"
                               "X-Hop: gone\r\n"
                               "Content-Type: text/html\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "Set-Cookie: a=1\r\n"
                               "Set-Cookie: b=2\r\n"
                               "Trailer: X-Sum\r\n"
                               "\r\n";

static void test_response_connection_management(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    parse(&f, HTTP_RESPONSE, RESPONSE);
    static const char kept[] = "Content-Type: text/html\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "Set-Cookie: a=1\r\n"
                               "Set-Cookie: b=2\r\n";
    char expected[512];

    tt_http_response_out_t o = {0};
    tt_http_write_response_head(f.out, f.h, f.in->data, &o);
    snprintf(expected, sizeof(expected), "HTTP/1.1 200 Fine, Thanks\r\n%s\r\n", kept);
    assert_out(&f, expected);

    f.out->rpos = f.out->wpos = 0;
    o.close = 1;
    tt_http_write_response_head(f.out, f.h, f.in->data, &o);
    snprintf(expected, sizeof(expected), "HTTP/1.1 200 Fine, Thanks\r\n%sConnection: close\r\n\r\n",
             kept);
    assert_out(&f, expected);

    /* close wins over keep-alive for an HTTP/1.0 client. */
    f.out->rpos = f.out->wpos = 0;
    o.keep_alive_10 = 1;
    tt_http_write_response_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, expected);

    f.out->rpos = f.out->wpos = 0;
    o.close = 0;
    tt_http_write_response_head(f.out, f.h, f.in->data, &o);
    snprintf(expected, sizeof(expected),
             "HTTP/1.1 200 Fine, Thanks\r\n%sConnection: keep-alive\r\n\r\n", kept);
    assert_out(&f, expected);

    /* Dechunked for an HTTP/1.0 client: no Transfer-Encoding. */
    f.out->rpos = f.out->wpos = 0;
    tt_http_response_out_t d = {.close = 1, .dechunk = 1};
    tt_http_write_response_head(f.out, f.h, f.in->data, &d);
    assert_out(&f, "HTTP/1.1 200 Fine, Thanks\r\n"
                   "Content-Type: text/html\r\n"
                   "Set-Cookie: a=1\r\n"
                   "Set-Cookie: b=2\r\n"
                   "Connection: close\r\n"
                   "\r\n");
    fx_done(&f);
}

static void test_response_reason_and_tunnel(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    /* An upstream speaking HTTP/1.0 with its own reason phrase. */
    parse(&f, HTTP_RESPONSE, "HTTP/1.0 404 Nothing Here At All\r\nContent-Length: 0\r\n\r\n");
    tt_http_response_out_t o = {0};
    tt_http_write_response_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "HTTP/1.1 404 Nothing Here At All\r\nContent-Length: 0\r\n\r\n");

    /* No reason phrase: the standard one. */
    parse(&f, HTTP_RESPONSE, "HTTP/1.1 503 \r\nRetry-After: 5\r\n\r\n");
    tt_http_write_response_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n");

    parse(&f, HTTP_RESPONSE,
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
    tt_http_response_out_t t = {.tunnel = 1};
    tt_http_write_response_head(f.out, f.h, f.in->data, &t);
    assert_out(&f, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   "Connection: upgrade\r\n\r\n");

    assert_string_equal(tt_http_reason(200), "OK");
    assert_string_equal(tt_http_reason(502), "Bad Gateway");
    assert_string_equal(tt_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(tt_http_reason(299), "Unknown");
    fx_done(&f);
}

/* --- generated errors ------------------------------------------------------------------------- */

/* Parses a generated response and checks its framing: the body is exactly Content-Length bytes,
 * starts with "tether: " and ends with a newline. Returns the body length. */
static size_t check_error_response(fx_t *f, int status, int close, const char *body)
{
    tt_http_reader_t r;
    tt_http_reader_init(&r, HTTP_RESPONSE);
    tt_http_reader_begin_head(&r, f->h, 0);
    size_t parsed = 0;
    assert_int_equal(tt_http_reader_head(&r, f->out, &parsed, 65536), TT_HTTP_HEAD_DONE);
    const char *base = f->out->data;
    assert_int_equal(f->h->status, status);
    assert_int_equal(f->h->major, 1);
    assert_int_equal(f->h->minor, 1);
    const char *reason = tt_http_reason(status);
    assert_int_equal(f->h->reason_len, strlen(reason));
    assert_memory_equal(base + f->h->reason, reason, strlen(reason));
    assert_true(f->h->has_length);
    const tt_http_header_t *ct = tt_http_head_find(f->h, base, "content-type");
    assert_non_null(ct);
    assert_int_equal(strncmp(base + ct->value, "text/plain", 10), 0);
    const tt_http_header_t *conn = tt_http_head_find(f->h, base, "connection");
    if (close) {
        assert_non_null(conn);
        assert_true(tt_http_value_has_token(base + conn->value, conn->value_len, "close"));
        assert_false(f->h->keep_alive);
    } else {
        assert_null(conn);
        assert_true(f->h->keep_alive);
    }
    size_t blen = tt_buf_len(f->out) - parsed;
    assert_int_equal(f->h->content_length, blen);
    size_t consumed;
    assert_int_equal(tt_http_reader_body(&r, base + parsed, blen, &consumed), TT_HTTP_MESSAGE_DONE);
    assert_int_equal(consumed, blen);
    assert_true(blen >= 9);
    assert_memory_equal(base + parsed, "tether: ", 8);
    assert_int_equal(base[parsed + blen - 1], '\n');
    if (body != NULL) {
        assert_int_equal(blen, strlen(body));
        assert_memory_equal(base + parsed, body, blen);
    }
    return blen;
}

static void test_write_error(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    tt_http_write_error(f.out, 502, 1, "connection_refused", "upstream %s (%s): connect failed: %s",
                        "users", "127.0.0.1:8080", "Connection refused");
    check_error_response(&f, 502, 1,
                         "tether: upstream users (127.0.0.1:8080): connect failed: "
                         "Connection refused\n");

    f.out->rpos = f.out->wpos = 0;
    tt_http_write_error(f.out, 404, 0, "destination_not_found", "no route");
    check_error_response(&f, 404, 0, "tether: no route\n");

    f.out->rpos = f.out->wpos = 0;
    tt_http_write_error(f.out, 431, 1, "http_request_error", "%s", "");
    check_error_response(&f, 431, 1, "tether: \n");

    /* A message too long for the body buffer is cut, and Content-Length still matches. */
    char *huge = malloc(5000);
    memset(huge, 'x', 4999);
    huge[4999] = '\0';
    f.out->rpos = f.out->wpos = 0;
    tt_http_write_error(f.out, 400, 1, "http_request_error", "bad: %s", huge);
    size_t blen = check_error_response(&f, 400, 1, NULL);
    assert_true(blen < 5000);
    free(huge);

    /* Appended after what is already queued for the client. */
    f.out->rpos = f.out->wpos = 0;
    tt_buf_append(f.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    tt_http_write_error(f.out, 504, 1, "connection_timeout", "timeout");
    assert_memory_equal(tt_buf_rptr(f.out), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    tt_buf_consume(f.out, 25);
    tt_buf_compact(f.out);
    check_error_response(&f, 504, 1, "tether: timeout\n");

    fx_done(&f);
}

static const char *header_of(fx_t *f, const char *name, size_t *len)
{
    const tt_http_header_t *h = tt_http_head_find(f->h, f->out->data, name);
    if (h == NULL)
        return NULL;
    *len = h->value_len;
    return f->out->data + h->value;
}

static void test_write_error_says_who_failed(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    size_t len = 0;
    tt_http_write_error(f.out, 502, 1, "connection_refused", "upstream %s: connect failed",
                        "users");
    check_error_response(&f, 502, 1, NULL);
    const char *v = header_of(&f, "proxy-status", &len);
    const char *want =
        "tether; error=connection_refused; details=\"upstream users: connect failed\"";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
    assert_null(header_of(&f, "retry-after", &len));
    assert_null(header_of(&f, "allow", &len));

    /* details is an sf-string: quotes and backslashes escaped, nothing but printable ASCII. */
    f.out->rpos = f.out->wpos = 0;
    tt_http_write_error(f.out, 403, 0, "destination_not_found", "host \"a\\b\"\x01\xc3\xa9");
    check_error_response(&f, 403, 0, NULL);
    v = header_of(&f, "proxy-status", &len);
    want = "tether; error=destination_not_found; details=\"host \\\"a\\\\b\\\"???\"";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);

    f.out->rpos = f.out->wpos = 0;
    tt_http_write_error(f.out, 503, 1, "connection_limit_reached", "queue full");
    check_error_response(&f, 503, 1, "tether: queue full\n");
    v = header_of(&f, "retry-after", &len);
    assert_non_null(v);
    assert_memory_equal(v, "1", len);

    f.out->rpos = f.out->wpos = 0;
    tt_http_write_error(f.out, 405, 1, "http_request_denied", "no CONNECT");
    check_error_response(&f, 405, 1, NULL);
    v = header_of(&f, "allow", &len);
    assert_non_null(v);
    assert_null(memmem(v, len, "CONNECT", 7));
    assert_non_null(memmem(v, len, "GET", 3));
    fx_done(&f);
}

static void test_proxy_status_for_errno(void **state)
{
    (void)state;
    assert_string_equal(tt_proxy_status_for_errno(ECONNREFUSED), "connection_refused");
    assert_string_equal(tt_proxy_status_for_errno(ETIMEDOUT), "connection_timeout");
    assert_string_equal(tt_proxy_status_for_errno(EHOSTUNREACH), "destination_ip_unroutable");
    assert_string_equal(tt_proxy_status_for_errno(ECONNRESET), "connection_terminated");
    assert_string_equal(tt_proxy_status_for_errno(EACCES), "destination_unavailable");
}

/* --- absolute-form targets -------------------------------------------------------------------- */

typedef struct {
    const char *target;
    int rc;
    const char *authority, *path;
} split_case_t;

static void test_split_absolute(void **state)
{
    (void)state;
    static const split_case_t cases[] = {
        {"http://example.com:8080/p/q?x=1", 0, "example.com:8080", "/p/q?x=1"},
        {"http://example.com/", 0, "example.com", "/"},
        {"http://example.com", 0, "example.com", "/"},
        {"HTTP://Example.COM/A", 0, "Example.COM", "/A"},
        {"http://[::1]:9000/v6", 0, "[::1]:9000", "/v6"},
        {"http://user:pw@example.com:81/secret", 0, "user:pw@example.com:81", "/secret"},
        {"http://user@example.com", 0, "user@example.com", "/"},
        {"http://example.com/a@b", 0, "example.com", "/a@b"},
        {"https://example.com/", -1, NULL, NULL},
        {"ftp://example.com/", -1, NULL, NULL},
        {"/origin/form", -1, NULL, NULL},
        {"*", -1, NULL, NULL},
        {"http:/", -1, NULL, NULL},
        {"http://", -1, NULL, NULL},
        {"http:///path", -1, NULL, NULL},
        {"example.com:443", -1, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const split_case_t *c = &cases[i];
        tt_span_t a = {NULL, 0}, p = {NULL, 0};
        int rc = tt_http_split_absolute(span(c->target), &a, &p);
        if (rc != c->rc)
            fail_msg("%s: rc %d, expected %d", c->target, rc, c->rc);
        if (rc < 0)
            continue;
        if (a.len != strlen(c->authority) || memcmp(a.str, c->authority, a.len) != 0)
            fail_msg("%s: authority \"%.*s\"", c->target, (int)a.len, a.str);
        if (p.len != strlen(c->path) || memcmp(p.str, c->path, p.len) != 0)
            fail_msg("%s: path \"%.*s\"", c->target, (int)p.len, p.str);
    }
    /* Only target.len bytes are read. */
    tt_span_t a, p, t = {"http://host/path", 11};
    assert_int_equal(tt_http_split_absolute(t, &a, &p), 0);
    assert_int_equal(a.len, 4);
    assert_memory_equal(a.str, "host", 4);
    assert_int_equal(p.len, 1);
    assert_memory_equal(p.str, "/", 1);
}

/* route_request (session.c) sends the split path as the origin-form target. For an absolute form
 * with a query and no path the request line must still read "GET /?x=1" (RFC 9112 3.2.1: an
 * empty path is sent as "/"). */
static void test_absolute_query_only_gives_origin_form(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f);
    parse(&f, HTTP_REQUEST, "GET http://example.com?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    tt_span_t target = {f.in->data + f.h->target, f.h->target_len}, a = {NULL, 0}, p = {NULL, 0};
    assert_int_equal(tt_http_split_absolute(target, &a, &p), 0);
    assert_int_equal(a.len, strlen("example.com"));
    assert_memory_equal(a.str, "example.com", a.len);
    tt_http_request_out_t o = {.target = p, .host = a};
    tt_http_write_request_head(f.out, f.h, f.in->data, &o);
    assert_out(&f, "GET /?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    fx_done(&f);
}

/* Userinfo is left in the authority, and the authority check refuses it (RFC 9110 4.2.4), as it
 * refuses anything that is not uri-host [":" port]. */
static void test_userinfo_and_bad_hosts_are_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "user@/x", "user@example.com", "a@b@c",   "a b", "a/b", "a?b", "a#b", "a\tb",
        "",        "a\x01b",           "\xc3\xa9"};
    static const char *const good[] = {"example.com", "example.com:8080", "[::1]:9000",
                                       "10.0.0.1",    "a-b_c.d~e",        "xn--bcher-kva.example"};
    tt_span_t a = {NULL, 0}, p = {NULL, 0};
    assert_int_equal(tt_http_split_absolute(span("http://user@/x"), &a, &p), 0);
    assert_false(tt_http_host_is_valid(a.str, a.len));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (tt_http_host_is_valid(bad[i], strlen(bad[i])))
            fail_msg("host \"%s\" accepted", bad[i]);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!tt_http_host_is_valid(good[i], strlen(good[i])))
            fail_msg("host \"%s\" refused", good[i]);
}

/* tt_http_request_target: the target forms and Host rules of RFC 9112 3.2, as the session routes
 * by them. NULL reason: accepted, with the host to route by and the target to send. */
static void test_request_target_rules(void **state)
{
    (void)state;
    static const struct {
        const char *head, *reason, *host, *target;
    } cases[] = {
        {"GET /a?b HTTP/1.1\r\nHost: x.test\r\n\r\n", NULL, "x.test", "/a?b"},
        {"GET http://a.test:81/p HTTP/1.1\r\nHost: b.test\r\n\r\n", NULL, "a.test:81", "/p"},
        {"GET http://a.test HTTP/1.1\r\n\r\n", NULL, "a.test", "/"},
        {"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", NULL, "x", "*"},
        {"GET / HTTP/1.0\r\n\r\n", NULL, "", "/"},
        {"GET / HTTP/1.1\r\nHost:\r\n\r\n", NULL, "", "/"},
        {"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 request without a Host header", NULL, NULL},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "more than one Host header", NULL, NULL},
        {"GET * HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target", NULL, NULL},
        {"GET https://a/ HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target", NULL, NULL},
        {"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", "invalid Host header", NULL, NULL},
        {"GET http://u@a/ HTTP/1.1\r\n\r\n", "invalid host in the request target", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fx_t f;
        fx_init(&f);
        parse(&f, HTTP_REQUEST, cases[i].head);
        tt_http_target_t t;
        const char *why = tt_http_request_target(f.h, f.in->data, &t);
        if (cases[i].reason == NULL) {
            if (why != NULL)
                fail_msg("%s: refused: %s", cases[i].head, why);
            assert_int_equal(t.host.len, strlen(cases[i].host));
            assert_memory_equal(t.host.str, cases[i].host, t.host.len);
            assert_int_equal(t.target.len, strlen(cases[i].target));
            assert_memory_equal(t.target.str, cases[i].target, t.target.len);
        } else if (why == NULL || strcmp(why, cases[i].reason) != 0) {
            fail_msg("%s: got \"%s\", expected \"%s\"", cases[i].head, why ? why : "(accepted)",
                     cases[i].reason);
        }
        fx_done(&f);
    }
}

/* --- Keep-Alive: timeout=N -------------------------------------------------------------------- */

static void test_keepalive_timeout(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        int timeout;
    } cases[] = {
        {"timeout=5, max=100", 5},
        {"max=1, timeout=3", 3},
        {"timeout=5", 5},
        {"Timeout=7", 7},
        {"  timeout=10  ,max=2", 10},
        {"max=100,timeout=0", 0},
        {"max=100", -1},
        {"", -1},
        {"timeout=", -1},
        {"timeout=abc", -1},
        {"timeout= 5", -1},
        {"xtimeout=5", -1},
        {"max=5, xtimeout=5", -1},
        {"garbage;;==", -1},
        {"300", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = tt_http_keepalive_timeout(cases[i].value, strlen(cases[i].value));
        if (got != cases[i].timeout)
            fail_msg("\"%s\": %d, expected %d", cases[i].value, got, cases[i].timeout);
    }
    /* Only len bytes are read. */
    assert_int_equal(tt_http_keepalive_timeout("max=1, timeout=9", 6), -1);
    assert_int_equal(tt_http_keepalive_timeout("timeout=42", 9), 4);
    /* Absurd values are bounded, never overflow. */
    int big = tt_http_keepalive_timeout("timeout=99999999999999999999", 28);
    assert_true(big > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_drops_hop_by_hop),
        cmocka_unit_test(test_request_host_and_target),
        cmocka_unit_test(test_request_tunnel_keeps_upgrade),
        cmocka_unit_test(test_response_connection_management),
        cmocka_unit_test(test_response_reason_and_tunnel),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_write_error_says_who_failed),
        cmocka_unit_test(test_proxy_status_for_errno),
        cmocka_unit_test(test_split_absolute),
        cmocka_unit_test(test_absolute_query_only_gives_origin_form),
        cmocka_unit_test(test_userinfo_and_bad_hosts_are_refused),
        cmocka_unit_test(test_request_target_rules),
        cmocka_unit_test(test_keepalive_timeout),
    };
    return cmocka_run_group_tests_name("http_rewrite", tests, NULL, NULL);
}
