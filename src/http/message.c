#include "http/message.h"

#include "core/invariant.h"
#include "core/list.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>

void tt_http_headpool_init(tt_http_headpool_t *hp, size_t max_free)
{
    tt_recycle_init(&hp->recycle, offsetof(tt_http_head_t, _next_free), max_free);
}

void tt_http_headpool_destroy(tt_http_headpool_t *hp)
{
    tt_http_head_t *h;
    while ((h = tt_recycle_pop(&hp->recycle)) != NULL)
        free(h);
}

tt_http_head_t *tt_http_head_acquire(tt_http_headpool_t *hp)
{
    tt_http_head_t *h = tt_recycle_pop(&hp->recycle);
    return h != NULL ? h : tt_malloc(sizeof(*h));
}

void tt_http_head_release(tt_http_headpool_t *hp, tt_http_head_t *h)
{
    if (h != NULL && tt_recycle_push(&hp->recycle, h) < 0)
        free(h);
}

static tt_http_reader_t *reader_of(llhttp_t *p)
{
    return tt_container_of(p, tt_http_reader_t, _parser);
}

static int on_message_begin(llhttp_t *p)
{
    tt_http_reader_t *r = reader_of(p);
    r->_head_done = r->_message_done = 0;
    return 0;
}

static uint32_t offset_of(tt_http_reader_t *r, const char *at)
{
    return (uint32_t)(at - r->_base);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    tt_http_reader_t *r = reader_of(p);
    if (r->_head->target_len == 0)
        r->_head->target = offset_of(r, at);
    r->_head->target_len += (uint32_t)len;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    tt_http_reader_t *r = reader_of(p);
    if (r->_head->reason_len == 0)
        r->_head->reason = offset_of(r, at);
    r->_head->reason_len += (uint32_t)len;
    return 0;
}

/* llhttp may report a name or value in pieces when it arrives across reads; the buffer is
 * contiguous, so pieces only extend the current span. */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    tt_http_reader_t *r = reader_of(p);
    tt_http_head_t *h = r->_head;
    if (!r->_in_head) /* a chunked body's trailer fields: relayed as body bytes, not parsed */
        return 0;
    if (h->nheaders == 0 || r->_last_was_value) {
        if (h->nheaders == TT_HTTP_MAX_HEADERS) {
            r->_too_many = 1;
            return HPE_USER;
        }
        tt_http_header_t *hdr = &h->headers[h->nheaders++];
        hdr->name = offset_of(r, at);
        hdr->name_len = 0;
        hdr->value = 0;
        hdr->value_len = 0;
        r->_last_was_value = 0;
    }
    h->headers[h->nheaders - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    tt_http_reader_t *r = reader_of(p);
    if (!r->_in_head)
        return 0;
    tt_http_header_t *hdr = &r->_head->headers[r->_head->nheaders - 1];
    /* Pieces of one value are contiguous: a folded value (which would not be) is refused once
     * the head is complete (check_head). */
    if (!r->_last_was_value) {
        hdr->value = offset_of(r, at);
        r->_last_was_value = 1;
    }
    hdr->value_len += (uint32_t)len;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    tt_http_reader_t *r = reader_of(p);
    tt_http_head_t *h = r->_head;
    h->method = (uint8_t)p->method;
    h->status = (uint16_t)p->status_code;
    h->major = p->http_major;
    h->minor = p->http_minor;
    h->keep_alive = (uint8_t)llhttp_should_keep_alive(p);
    h->upgrade = p->upgrade;
    h->chunked = (p->flags & F_CHUNKED) != 0;
    h->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    h->content_length = h->has_length ? p->content_length : 0;
    r->_head_done = 1;
    /* A response to HEAD, an interim response, 204 and 304 have no body whatever their headers
     * say (RFC 9112 6.3). llhttp then completes the message at once and pauses there, which
     * also marks the end of the head. 101 stays on the upgrade path. */
    int bodiless = p->type == HTTP_RESPONSE &&
                   ((h->status < 200 && h->status != 101) || h->status == 204 || h->status == 304);
    return r->_skip_body || bodiless ? 1 : HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    tt_http_reader_t *r = reader_of(p);
    if (r->_decoded != NULL)
        tt_buf_append(r->_decoded, at, len);
    return 0;
}

/* Called after each chunk-size line. The size bound is nginx's reason: a size past the range of
 * signed offsets reads differently in every implementation that converts it. The last chunk
 * pauses the parser so that the trailer section can be checked byte by byte (see
 * tt_http_reader_body). */
static int on_chunk_header(llhttp_t *p)
{
    tt_http_reader_t *r = reader_of(p);
    r->_ext_len = 0;
    if (p->content_length > TT_HTTP_MAX_BODY_LENGTH) {
        r->_error = "chunk size too large";
        return HPE_USER;
    }
    if (p->content_length == 0) {
        r->_trailers_begin = 1;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
    tt_http_reader_t *r = reader_of(p);
    r->_ext_len += (uint32_t)TT_MIN(len, TT_HTTP_MAX_CHUNK_EXT + 1);
    if (r->_ext_len > TT_HTTP_MAX_CHUNK_EXT) {
        r->_error = "chunk extensions too long";
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    reader_of(p)->_message_done = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_message_complete = on_message_complete,
};

void tt_http_reader_init(tt_http_reader_t *r, llhttp_type_t kind)
{
    memset(r, 0, sizeof(*r));
    llhttp_init(&r->_parser, kind, &settings);
}

void tt_http_reader_begin_head(tt_http_reader_t *r, tt_http_head_t *h, int skip_body)
{
    memset(h, 0, offsetof(tt_http_head_t, headers));
    r->_head = h;
    r->_in_head = 1;
    r->_head_done = 0;
    r->_message_done = 0;
    r->_skip_body = (uint8_t)skip_body;
    r->_last_was_value = 0;
    r->_too_many = 0;
    r->_error = NULL;
    r->_decoded = NULL;
    r->_ext_len = 0;
    r->_trailers_begin = r->_in_trailers = r->_trailer_lf = 0;
}

/* Runs llhttp over [p, p+n) and reports how much it took before pausing. */
static llhttp_errno_t execute(tt_http_reader_t *r, const char *p, size_t n, size_t *consumed)
{
    llhttp_errno_t rc = llhttp_execute(&r->_parser, p, n);
    if (rc == HPE_PAUSED) {
        *consumed = (size_t)(llhttp_get_error_pos(&r->_parser) - p);
        llhttp_resume(&r->_parser);
        return HPE_OK;
    }
    if (rc == HPE_PAUSED_UPGRADE) {
        *consumed = (size_t)(llhttp_get_error_pos(&r->_parser) - p);
        llhttp_resume_after_upgrade(&r->_parser);
        return HPE_OK;
    }
    *consumed = n;
    return rc;
}

/* Checks the line ends of a head in its raw bytes: each LF must follow a CR (llhttp takes a bare
 * LF for the empty line that ends a head), and no line may start with whitespace, which is an
 * obsolete line fold (RFC 9112 5.2), refused because implementations disagree on where the
 * folded field ends (llhttp reports a fold after an empty first line as a plain value). */
static const char *check_line_ends(const char *p, size_t len)
{
    const char *end = p + len;
    for (const char *lf = memchr(p, '\n', len); lf != NULL;
         lf = memchr(lf + 1, '\n', (size_t)(end - lf - 1))) {
        if (lf == p || lf[-1] != '\r')
            return "bare LF in the head";
        if (lf + 1 < end && (lf[1] == ' ' || lf[1] == '\t'))
            return "obsolete line folding in a header value";
    }
    return NULL;
}

/* "METHOD SP target SP HTTP/x.y": llhttp lets more than one space through, which another parser
 * may read as part of the target. */
static int request_line_is_exact(const tt_http_head_t *h, const char *base)
{
    size_t mlen = strlen(llhttp_method_name((llhttp_method_t)h->method));
    return h->target == mlen + 1 && base[mlen] == ' ' && base[h->target + h->target_len] == ' ' &&
           base[h->target + h->target_len + 1] == 'H';
}

/* A reason phrase is HTAB, SP, VCHAR and obs-text (RFC 9112 4): a control byte in it ends up in
 * a log or a client's status line as something else. */
static int reason_is_valid(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

/* What llhttp lets through but a proxy must refuse (RFC 9112): HTTP/0.9 and HTTP/2+ request
 * lines, folded lines, whitespace between a field name and its colon (a request smuggling
 * vector), Transfer-Encoding in an HTTP/1.0 message (6.1: its framing is faulty), lengths past
 * TT_HTTP_MAX_BODY_LENGTH, and for responses a status outside 100-599 or a reason phrase with
 * control bytes. */
static const char *check_head(const tt_http_reader_t *r, const tt_http_head_t *h, const char *base)
{
    if (h->major != 1)
        return "unsupported HTTP version";
    const char *why = check_line_ends(base, h->head_len);
    if (why != NULL)
        return why;
    if (r->_parser.type == HTTP_REQUEST && !request_line_is_exact(h, base))
        return "more than one space in the request line";
    for (uint32_t i = 0; i < h->nheaders; i++) {
        const tt_http_header_t *hdr = &h->headers[i];
        if (hdr->name_len == 0)
            return "empty header name";
        char last = base[hdr->name + hdr->name_len - 1];
        if (last == ' ' || last == '\t')
            return "whitespace between header name and colon";
        if (h->minor == 0 && tt_http_header_is(base, hdr, "transfer-encoding", 17))
            return "Transfer-Encoding in an HTTP/1.0 message";
    }
    if (h->has_length && h->content_length > TT_HTTP_MAX_BODY_LENGTH)
        return "Content-Length too large";
    if (r->_parser.type == HTTP_RESPONSE) {
        if (h->status < 100 || h->status > 599)
            return "status code outside 100-599";
        if (!reason_is_valid(base + h->reason, h->reason_len))
            return "control character in the reason phrase";
    }
    return NULL;
}

tt_http_status_t tt_http_reader_head(tt_http_reader_t *r, const tt_buf_t *buf, size_t *parsed,
                                     size_t max_head)
{
    TT_ASSERT(r->_in_head && buf->rpos == 0);
    r->_base = buf->data;
    size_t avail = buf->wpos - *parsed, consumed;
    if (avail > max_head - TT_MIN(*parsed, max_head))
        avail = max_head - TT_MIN(*parsed, max_head);
    llhttp_errno_t rc = execute(r, buf->data + *parsed, avail, &consumed);
    *parsed += consumed;
    if (rc != HPE_OK)
        return r->_too_many ? TT_HTTP_HEAD_TOO_LARGE : TT_HTTP_ERROR;
    if (!r->_head_done)
        return *parsed >= max_head ? TT_HTTP_HEAD_TOO_LARGE : TT_HTTP_AGAIN;
    r->_in_head = 0;
    r->_head->head_len = (uint32_t)*parsed;
    if ((r->_error = check_head(r, r->_head, buf->data)) != NULL)
        return TT_HTTP_ERROR;
    if (!r->_message_done && !r->_skip_body) {
        /* Body-less messages complete without consuming input; learn that now. */
        size_t none;
        if (execute(r, buf->data + *parsed, 0, &none) != HPE_OK)
            return TT_HTTP_ERROR;
    }
    return TT_HTTP_HEAD_DONE;
}

/* A trailer section is relayed as body bytes and not parsed into a head, but it must not fold
 * either: a line starting with whitespace is refused, with the state carried across reads. */
static int trailer_folds(tt_http_reader_t *r, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r->_trailer_lf && (p[i] == ' ' || p[i] == '\t'))
            return 1;
        r->_trailer_lf = p[i] == '\n';
    }
    return 0;
}

tt_http_status_t tt_http_reader_body(tt_http_reader_t *r, const char *p, size_t n, size_t *consumed)
{
    if (r->_message_done) {
        *consumed = 0;
        return TT_HTTP_MESSAGE_DONE;
    }
    size_t used = 0;
    do {
        const char *from = p + used;
        size_t took;
        if (execute(r, from, n - used, &took) != HPE_OK)
            return TT_HTTP_ERROR;
        if (r->_in_trailers && trailer_folds(r, from, took)) {
            r->_error = "obsolete line folding in a trailer field";
            return TT_HTTP_ERROR;
        }
        used += took;
        if (!r->_trailers_begin)
            break;
        /* Paused after the last chunk's size line: the trailer section starts at a line start. */
        r->_trailers_begin = 0;
        r->_in_trailers = 1;
        r->_trailer_lf = 1;
    } while (!r->_message_done);
    *consumed = used;
    return r->_message_done ? TT_HTTP_MESSAGE_DONE : TT_HTTP_AGAIN;
}

tt_http_status_t tt_http_reader_eof(tt_http_reader_t *r)
{
    if (r->_message_done)
        return TT_HTTP_MESSAGE_DONE;
    llhttp_errno_t rc = llhttp_finish(&r->_parser);
    if ((rc == HPE_OK || rc == HPE_PAUSED) && r->_message_done)
        return TT_HTTP_MESSAGE_DONE;
    return TT_HTTP_ERROR;
}

void tt_http_reader_decode_into(tt_http_reader_t *r, tt_buf_t *out)
{
    r->_decoded = out;
}

int tt_http_reader_message_done(const tt_http_reader_t *r)
{
    return r->_message_done;
}

int tt_http_reader_decoding(const tt_http_reader_t *r)
{
    return r->_decoded != NULL;
}

uint64_t tt_http_reader_body_left(const tt_http_reader_t *r)
{
    const llhttp_t *p = &r->_parser;
    if (!r->_head_done || r->_message_done || r->_skip_body || (p->flags & F_CHUNKED) ||
        !(p->flags & F_CONTENT_LENGTH))
        return 0;
    return p->content_length;
}

void tt_http_reader_skip_body(tt_http_reader_t *r, uint64_t n)
{
    TT_ASSERT(n < tt_http_reader_body_left(r));
    r->_parser.content_length -= n;
}

int tt_http_reader_needs_eof(const tt_http_reader_t *r)
{
    return llhttp_message_needs_eof(&r->_parser);
}

const char *tt_http_reader_error(const tt_http_reader_t *r)
{
    if (r->_error != NULL)
        return r->_error;
    if (r->_too_many)
        return "too many header fields";
    const char *reason = llhttp_get_error_reason(&r->_parser);
    return reason != NULL ? reason : llhttp_errno_name(llhttp_get_errno(&r->_parser));
}

const tt_http_header_t *tt_http_head_find(const tt_http_head_t *h, const char *base,
                                          const char *name)
{
    size_t len = strlen(name);
    for (uint32_t i = 0; i < h->nheaders; i++)
        if (tt_http_header_is(base, &h->headers[i], name, len))
            return &h->headers[i];
    return NULL;
}

int tt_http_transfer_coding_is_chunked(const tt_http_head_t *h, const char *base)
{
    const tt_http_header_t *te = NULL;
    for (uint32_t i = 0; i < h->nheaders; i++) {
        if (!tt_http_header_is(base, &h->headers[i], "transfer-encoding", 17))
            continue;
        if (te != NULL)
            return 0;
        te = &h->headers[i];
    }
    if (te == NULL)
        return 0;
    const char *v = base + te->value;
    size_t len = te->value_len;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    return len == 7 && strncasecmp(v, "chunked", 7) == 0;
}

int tt_http_host_is_valid(const char *p, size_t len)
{
    /* uri-host [":" port] (RFC 3986): reg-name, IPv4 or [IP-literal]. No userinfo ('@'), no
     * path, query, whitespace or control byte: any of those makes two parsers pick different
     * hosts. */
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789-._~%!$&'()*+,;=:[]";
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '\0' || strchr(allowed, p[i]) == NULL)
            return 0;
    return 1;
}

int tt_http_value_has_token(const char *value, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = value, *end = value + len;
    while (p < end) {
        while (p < end && (*p == ',' || *p == ' ' || *p == '\t'))
            p++;
        const char *start = p;
        while (p < end && *p != ',')
            p++;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        if ((size_t)(stop - start) == tlen && strncasecmp(start, token, tlen) == 0)
            return 1;
    }
    return 0;
}
