/* The admin endpoint's request handling (tt_admin_respond) with fake operations: the request
 * bytes arrive in reads split anywhere, as the server loop hands them over. The ops fail or
 * succeed by the first input byte, so error paths are reached too.
 *
 * Invariants: a response comes exactly when the bytes so far hold a head (or prove it malformed
 * or too large), and once it comes it is one well-formed HTTP/1.1 response: a status line, a
 * Content-Length equal to the body that follows (none for HEAD), Connection: close. */
#include "fuzz_split.h"
#include "http/message.h"
#include "metrics/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail_ops;

static tt_snapshot_t *fake_snapshot(void *ctx, char *err, size_t errlen)
{
    if (fail_ops & 1) {
        snprintf(err, errlen, "worker 0 did not answer");
        return NULL;
    }
    tt_snapshot_t *s = tt_snapshot_new(1);
    s->version = "fuzz";
    s->ready = 1;
    s->nworkers = 1;
    s->ups[0].name = "users";
    snprintf(s->ups[0].endpoint, sizeof(s->ups[0].endpoint), "127.0.0.1:8080");
    s->ups[0].stats.responses[2] = 5;
    tt_hist_record(&s->ups[0].stats.request_duration_us, 500);
    return s;
}

static int fake_pools(void *ctx, tt_conn_list_t *out, char *err, size_t errlen)
{
    if (fail_ops & 2) {
        snprintf(err, errlen, "worker 0 did not answer");
        return -1;
    }
    tt_conn_row_t *r = tt_conn_list_push(out);
    r->upstream = "users";
    snprintf(r->endpoint, sizeof(r->endpoint), "127.0.0.1:8080");
    r->state = TT_ROW_IDLE;
    r->idle_ms = 5;
    return 0;
}

static int fake_ready(void *ctx, char *why, size_t whylen)
{
    snprintf(why, whylen, "%s", fail_ops & 4 ? "pre-warming" : "listening");
    return !(fail_ops & 4);
}

static char *fake_config(void *ctx)
{
    if (fail_ops & 8)
        return NULL;
    return strdup("[upstream users]\nurl = http://alice:s3cret@users.internal/\n"
                  "tls_key_password = hunter2\n");
}

static const tt_admin_ops_t ops = {
    .snapshot = fake_snapshot, .pools = fake_pools, .ready = fake_ready, .config = fake_config};

/* Checks one response as a client would read it. */
static void check_response(const tt_buf_t *out, int head_only)
{
    static tt_bufpool_t bufs;
    static tt_http_headpool_t heads;
    static int ready;
    if (!ready) {
        tt_bufpool_init(&bufs, 2);
        tt_http_headpool_init(&heads, 2);
        ready = 1;
    }
    tt_buf_t *b = tt_buf_acquire(&bufs);
    tt_buf_append(b, out->data, out->wpos);
    tt_http_reader_t r;
    tt_http_head_t *h = tt_http_head_acquire(&heads);
    tt_http_reader_init(&r, HTTP_RESPONSE);
    tt_http_reader_begin_head(&r, h, head_only);
    size_t parsed = 0;
    FUZZ_CHECK(tt_http_reader_head(&r, b, &parsed, SIZE_MAX / 2) == TT_HTTP_HEAD_DONE);
    FUZZ_CHECK(h->has_length && !h->keep_alive);
    FUZZ_CHECK(h->status >= 200 && h->status <= 599);
    /* A HEAD that parsed gets the head alone; one refused as malformed gets its error body. */
    size_t body = out->wpos - parsed;
    FUZZ_CHECK(body == h->content_length || (head_only && body == 0));
    tt_http_head_release(&heads, h);
    tt_buf_release(&bufs, b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fail_ops = data[0];
    data++;
    size--;
    fuzz_split_t split;
    if (!fuzz_split_init(&split, &data, &size))
        return 0;
    tt_buf_t out = {0};
    size_t len = 0;
    int done = 0;
    while (!done && len < size) {
        len += fuzz_split_next(&split, size - len);
        done = tt_admin_respond(&ops, fail_ops & 16, (const char *)data, len, &out);
        FUZZ_CHECK(done || out.wpos == 0);
    }
    if (done) {
        size_t skip = 0; /* llhttp skips empty lines before a request line */
        while (skip < len && (data[skip] == '\r' || data[skip] == '\n'))
            skip++;
        check_response(&out, len - skip >= 5 && memcmp(data + skip, "HEAD ", 5) == 0);
    }
    free(out.data);
    return 0;
}
