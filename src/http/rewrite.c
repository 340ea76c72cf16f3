#include "http/rewrite.h"

#include "core/invariant.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *name;
    size_t len;
} name_t;

#define NAME(s)                                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }

/* Upgrade comes first: a tunnel keeps it (see is_hop_by_hop). */
enum { HOP_UPGRADE = 0 };
static const name_t hop_by_hop[] = {
    [HOP_UPGRADE] = NAME("upgrade"), NAME("connection"), NAME("keep-alive"),
    NAME("proxy-connection"),        NAME("te"),         NAME("trailer"),
};

static const name_t never_hop_by_hop[] = {
    NAME("content-length"),
    NAME("transfer-encoding"),
    NAME("host"),
};

static int named_in_connection(const tt_http_head_t *h, const char *base,
                               const tt_http_header_t *hdr)
{
    char name[128];
    if (hdr->name_len >= sizeof(name))
        return 0;
    memcpy(name, base + hdr->name, hdr->name_len);
    name[hdr->name_len] = '\0';
    for (uint32_t i = 0; i < h->nheaders; i++) {
        const tt_http_header_t *c = &h->headers[i];
        if (tt_http_header_is(base, c, "connection", 10) &&
            tt_http_value_has_token(base + c->value, c->value_len, name))
            return 1;
    }
    return 0;
}

/* keep_upgrade: a tunnel keeps Upgrade (and tether writes its own Connection: upgrade). */
static int is_hop_by_hop(const tt_http_head_t *h, const char *base, const tt_http_header_t *hdr,
                         int keep_upgrade)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(hop_by_hop); i++) {
        if (tt_http_header_is(base, hdr, hop_by_hop[i].name, hop_by_hop[i].len))
            return !(keep_upgrade && i == HOP_UPGRADE);
    }
    /* "Connection: content-length" must not strip the framing tether relays the body by (the
     * body would reach the upstream as a second, smuggled request), nor the Host it routed by. */
    for (size_t i = 0; i < TT_ARRAY_SIZE(never_hop_by_hop); i++) {
        if (tt_http_header_is(base, hdr, never_hop_by_hop[i].name, never_hop_by_hop[i].len))
            return 0;
    }
    return named_in_connection(h, base, hdr);
}

static void append_header(tt_buf_t *out, const char *base, const tt_http_header_t *hdr)
{
    tt_buf_reserve(out, hdr->name_len + hdr->value_len + 4, SIZE_MAX);
    char *w = tt_buf_wptr(out);
    memcpy(w, base + hdr->name, hdr->name_len);
    w += hdr->name_len;
    *w++ = ':';
    *w++ = ' ';
    memcpy(w, base + hdr->value, hdr->value_len);
    w += hdr->value_len;
    *w++ = '\r';
    *w++ = '\n';
    out->wpos += hdr->name_len + hdr->value_len + 4;
}

void tt_http_write_request_head(tt_buf_t *out, const tt_http_head_t *h, const char *base,
                                const tt_http_request_out_t *o)
{
    const char *method = llhttp_method_name((llhttp_method_t)h->method);
    /* "http://host?q" has an empty path: origin form needs the "/" (RFC 9112 3.2.1). */
    tt_buf_append(out, method, strlen(method));
    tt_buf_append(out, " ", 1);
    if (o->target.len > 0 && o->target.str[0] == '?')
        tt_buf_append(out, "/", 1);
    tt_buf_append(out, o->target.str, o->target.len);
    tt_buf_append(out, " HTTP/1.1\r\n", 11);
    if (o->host.len > 0) {
        tt_buf_append(out, "Host: ", 6);
        tt_buf_append(out, o->host.str, o->host.len);
        tt_buf_append(out, "\r\n", 2);
    }
    for (uint32_t i = 0; i < h->nheaders; i++) {
        const tt_http_header_t *hdr = &h->headers[i];
        if (o->host.len > 0 && tt_http_header_is(base, hdr, "host", 4))
            continue;
        if (is_hop_by_hop(h, base, hdr, o->tunnel))
            continue;
        append_header(out, base, hdr);
    }
    if (o->tunnel)
        tt_buf_append(out, "Connection: upgrade\r\n", 21);
    tt_buf_append(out, "\r\n", 2);
}

void tt_http_write_response_head(tt_buf_t *out, const tt_http_head_t *h, const char *base,
                                 const tt_http_response_out_t *o)
{
    /* Plain copies, no format parsing: this runs for every response. llhttp guarantees a
     * three-digit status. */
    char status[14] = "HTTP/1.1 000 ";
    status[9] = (char)('0' + h->status / 100 % 10);
    status[10] = (char)('0' + h->status / 10 % 10);
    status[11] = (char)('0' + h->status % 10);
    tt_buf_append(out, status, 13);
    if (h->reason_len > 0) {
        tt_buf_append(out, base + h->reason, h->reason_len);
    } else {
        const char *reason = tt_http_reason(h->status);
        tt_buf_append(out, reason, strlen(reason));
    }
    tt_buf_append(out, "\r\n", 2);
    for (uint32_t i = 0; i < h->nheaders; i++) {
        const tt_http_header_t *hdr = &h->headers[i];
        if (is_hop_by_hop(h, base, hdr, o->tunnel))
            continue;
        if (o->dechunk && tt_http_header_is(base, hdr, "transfer-encoding", 17))
            continue;
        append_header(out, base, hdr);
    }
    if (o->tunnel)
        tt_buf_append(out, "Connection: upgrade\r\n", 21);
    else if (o->close)
        tt_buf_append(out, "Connection: close\r\n", 19);
    else if (o->keep_alive_10)
        tt_buf_append(out, "Connection: keep-alive\r\n", 24);
    tt_buf_append(out, "\r\n", 2);
}

const char *tt_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

const char *tt_proxy_status_for_errno(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return "connection_refused";
    case ETIMEDOUT:
        return "connection_timeout";
    case EHOSTUNREACH:
    case ENETUNREACH:
        return "destination_ip_unroutable";
    case ECONNRESET:
    case EPIPE:
        return "connection_terminated";
    default:
        return "destination_unavailable";
    }
}

/* Appends text as the content of an RFC 8941 sf-string: printable ASCII only (anything else
 * becomes '?'), with '"' and '\\' escaped. */
static void append_sf_string(tt_buf_t *out, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            tt_buf_append(out, esc, 2);
        } else {
            char plain = c >= 0x20 && c < 0x7f ? (char)c : '?';
            tt_buf_append(out, &plain, 1);
        }
    }
}

void tt_http_write_error(tt_buf_t *out, int status, int close, const char *proxy_error,
                         const char *fmt, ...)
{
    char body[512];
    int n = snprintf(body, sizeof(body), "tether: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(body + n, sizeof(body) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = TT_MIN((size_t)n + (size_t)(m < 0 ? 0 : m), sizeof(body) - 2);
    tt_buf_appendf(out, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n", status,
                   tt_http_reason(status));
    tt_buf_appendf(out, "Proxy-Status: tether; error=%s; details=\"", proxy_error);
    append_sf_string(out, body + n, len - (size_t)n);
    tt_buf_append(out, "\"\r\n", 3);
    if (status == 503) /* a queue or a drain: worth a retry in a moment */
        tt_buf_appendf(out, "Retry-After: 1\r\n");
    if (status == 405) /* CONNECT, the one method refused */
        tt_buf_appendf(out, "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH\r\n");
    body[len++] = '\n';
    tt_buf_appendf(out, "Content-Length: %zu\r\n%s\r\n", len, close ? "Connection: close\r\n" : "");
    tt_buf_append(out, body, len);
}

int tt_http_split_absolute(tt_span_t target, tt_span_t *authority, tt_span_t *path)
{
    if (target.len < 7 || strncasecmp(target.str, "http://", 7) != 0)
        return -1;
    const char *p = target.str + 7, *end = target.str + target.len, *a = p;
    while (p < end && *p != '/' && *p != '?')
        p++;
    if (p == a)
        return -1;
    /* Userinfo stays in the authority, for tt_http_host_is_valid() to refuse (RFC 9110 4.2.4:
     * it serves to obscure the authority). */
    authority->str = a;
    authority->len = (size_t)(p - a);
    if (p == end) {
        path->str = "/";
        path->len = 1;
    } else {
        path->str = p;
        path->len = (size_t)(end - p);
    }
    return 0;
}

const char *tt_http_request_target(const tt_http_head_t *h, const char *base, tt_http_target_t *t)
{
    tt_span_t target = {base + h->target, h->target_len};
    t->host = (tt_span_t){NULL, 0};
    t->absolute = tt_http_split_absolute(target, &t->host, &t->target) == 0;
    if (!t->absolute) {
        int asterisk = target.len == 1 && target.str[0] == '*' && h->method == HTTP_OPTIONS;
        if (target.len == 0 || (target.str[0] != '/' && !asterisk))
            return "invalid request target";
        t->target = target;
    }
    const tt_http_header_t *hh = NULL;
    for (uint32_t i = 0; i < h->nheaders; i++) {
        if (!tt_http_header_is(base, &h->headers[i], "host", 4))
            continue;
        if (hh != NULL) /* which one would win? */
            return "more than one Host header";
        hh = &h->headers[i];
    }
    if (hh == NULL && h->minor == 1 && !t->absolute)
        return "HTTP/1.1 request without a Host header";
    if (!t->absolute && hh != NULL)
        t->host = (tt_span_t){base + hh->value, hh->value_len};
    if (t->host.len > 0 && !tt_http_host_is_valid(t->host.str, t->host.len))
        return t->absolute ? "invalid host in the request target" : "invalid Host header";
    return NULL;
}

int tt_http_keepalive_timeout(const char *value, size_t len)
{
    const char *p = value, *end = value + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ',' || *p == '\t'))
            p++;
        if ((size_t)(end - p) > 8 && strncasecmp(p, "timeout=", 8) == 0) {
            p += 8;
            int v = 0, digits = 0;
            while (p < end && *p >= '0' && *p <= '9' && v < 1000000) {
                v = v * 10 + (*p++ - '0');
                digits++;
            }
            return digits > 0 ? v : -1;
        }
        while (p < end && *p != ',')
            p++;
    }
    return -1;
}
