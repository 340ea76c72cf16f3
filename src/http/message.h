/* HTTP/1.1 message reading on top of llhttp (strict mode).
 *
 * A reader follows one direction of one connection, message after message. Heads are parsed in
 * place: header names and values are spans (offsets) into the caller's buffer, which must hold the
 * head from offset 0 until the caller is done with it. The reader stops at the end of the head and
 * at the end of each message, so bodies can be relayed byte for byte (chunked framing included)
 * and pipelined messages are never read ahead. */
#ifndef TT_HTTP_MESSAGE_H
#define TT_HTTP_MESSAGE_H

#include "core/buf.h"
#include "core/recycle.h"

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#define TT_HTTP_MAX_HEADERS 128

typedef struct {
    uint32_t name, name_len, value, value_len; /* offsets into the head's buffer */
} tt_http_header_t;

/* A parsed head. Large (about 2 KiB): borrowed from a tt_http_headpool_t only while a head is
 * being read and turned into the head tether sends on. */
typedef struct tt_http_head {
    uint32_t target, target_len; /* request target */
    uint32_t reason, reason_len; /* response reason phrase */
    uint32_t head_len;           /* bytes of the head, from offset 0 */
    uint16_t status;
    uint8_t method; /* llhttp_method_t */
    uint8_t major, minor;
    uint8_t keep_alive; /* the sender allows another message on this connection */
    uint8_t upgrade;    /* Upgrade (or CONNECT) requested or accepted */
    uint8_t chunked;
    uint8_t has_length;
    uint64_t content_length;
    uint32_t nheaders;
    tt_http_header_t headers[TT_HTTP_MAX_HEADERS];
    void *_next_free; /* while kept by a tt_http_headpool_t */
} tt_http_head_t;

typedef struct {
    tt_recycle_t recycle;
} tt_http_headpool_t;

void tt_http_headpool_init(tt_http_headpool_t *hp, size_t max_free);
void tt_http_headpool_destroy(tt_http_headpool_t *hp);
tt_http_head_t *tt_http_head_acquire(tt_http_headpool_t *hp);
void tt_http_head_release(tt_http_headpool_t *hp, tt_http_head_t *h);

typedef enum {
    TT_HTTP_AGAIN,         /* need more bytes */
    TT_HTTP_HEAD_DONE,     /* head complete: head->head_len bytes */
    TT_HTTP_MESSAGE_DONE,  /* message complete */
    TT_HTTP_ERROR,         /* malformed: see tt_http_reader_error() */
    TT_HTTP_HEAD_TOO_LARGE /* head over the limit or too many headers */
} tt_http_status_t;

typedef struct {
    llhttp_t _parser;
    tt_http_head_t *_head; /* while reading a head */
    const char *_base;     /* buffer start, while reading a head */
    tt_buf_t *_decoded;    /* when set, body bytes without chunk framing are appended here */
    const char *_error;    /* a head llhttp accepted but tether refuses */
    uint32_t _ext_len;     /* chunk extension bytes on the current chunk-size line */
    uint8_t _in_head;
    uint8_t _head_done;
    uint8_t _message_done;
    uint8_t _skip_body; /* response to HEAD */
    uint8_t _last_was_value;
    uint8_t _too_many;
    uint8_t _trailers_begin; /* paused at the start of a chunked body's trailer section */
    uint8_t _in_trailers;
    uint8_t _trailer_lf; /* the last trailer byte seen was LF */
} tt_http_reader_t;

/* Bounds beyond which a length is refused rather than relayed: nginx refuses chunk sizes past
 * its off_t range, and a length near 2^64 is a desync waiting for the first signed conversion
 * downstream. 2^60 - 1 bytes (an exabyte) is far past any real body. */
#define TT_HTTP_MAX_BODY_LENGTH ((UINT64_C(1) << 60) - 1)
/* Chunk extensions carry no meaning tether uses; a long one is only a way to hide bytes. */
#define TT_HTTP_MAX_CHUNK_EXT 1024

/* kind is HTTP_REQUEST or HTTP_RESPONSE. */
void tt_http_reader_init(tt_http_reader_t *r, llhttp_type_t kind);

/* Starts reading the next head into h. For a response, skip_body says the request was HEAD. */
void tt_http_reader_begin_head(tt_http_reader_t *r, tt_http_head_t *h, int skip_body);

/* Parses the head from buf (which holds the message from offset 0; *parsed bytes of it were
 * already fed). Returns AGAIN, HEAD_DONE (and MESSAGE_DONE is then queryable with
 * tt_http_reader_message_done() for body-less messages), ERROR or HEAD_TOO_LARGE. */
tt_http_status_t tt_http_reader_head(tt_http_reader_t *r, const tt_buf_t *buf, size_t *parsed,
                                     size_t max_head);

/* Feeds body bytes. *consumed is set to the bytes that belong to this message (the rest belongs
 * to the next one). Returns AGAIN, MESSAGE_DONE or ERROR. */
tt_http_status_t tt_http_reader_body(tt_http_reader_t *r, const char *p, size_t n,
                                     size_t *consumed);

/* Signals end of stream: completes a close-delimited body (MESSAGE_DONE) or reports a truncated
 * message (ERROR). */
tt_http_status_t tt_http_reader_eof(tt_http_reader_t *r);

/* Body bytes arriving from now on are decoded into out (chunk framing removed); NULL stops it. */
void tt_http_reader_decode_into(tt_http_reader_t *r, tt_buf_t *out);

int tt_http_reader_message_done(const tt_http_reader_t *r);
/* Whether body bytes are being decoded into a buffer (see tt_http_reader_decode_into). */
int tt_http_reader_decoding(const tt_http_reader_t *r);
/* The Content-Length body bytes still to come (0 for any other framing, or once done). */
uint64_t tt_http_reader_body_left(const tt_http_reader_t *r);
/* Counts n body bytes as read without parsing them (they were relayed out of band); n is less
 * than tt_http_reader_body_left(), so the parser still sees the body's last byte and ends the
 * message itself. */
void tt_http_reader_skip_body(tt_http_reader_t *r, uint64_t n);
/* The message's body ends only when the connection closes. */
int tt_http_reader_needs_eof(const tt_http_reader_t *r);
/* Why parsing failed, a short static text. */
const char *tt_http_reader_error(const tt_http_reader_t *r);

/* Helpers over a parsed head. base is the buffer the head was parsed from. */
static inline int tt_http_header_is(const char *base, const tt_http_header_t *h, const char *name,
                                    size_t len)
{
    return h->name_len == len && strncasecmp(base + h->name, name, len) == 0;
}
/* Finds the first header with this name, or NULL. */
const tt_http_header_t *tt_http_head_find(const tt_http_head_t *h, const char *base,
                                          const char *name);
/* Whether the head's transfer coding is exactly "chunked": one Transfer-Encoding field holding
 * that one token and nothing else. */
int tt_http_transfer_coding_is_chunked(const tt_http_head_t *h, const char *base);
/* Whether a Host value (or an absolute-form target's authority) is uri-host [":" port]. */
int tt_http_host_is_valid(const char *p, size_t len);
/* Whether a comma-separated header value list contains token (case-insensitive). */
int tt_http_value_has_token(const char *value, size_t len, const char *token);

#endif
