#include "metrics/accesslog.h"

#include "core/clock.h"
#include "core/invariant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_BYTES    32768
#define FLUSH_AFTER_MS 1000

int tt_accesslog_open(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

static void flush_timer_cb(tt_timer_t *t)
{
    tt_accesslog_flush(tt_container_of(t, tt_accesslog_t, flush_timer));
}

void tt_accesslog_init(tt_accesslog_t *al, int fd, tt_loop_t *loop)
{
    al->fd = fd;
    al->loop = loop;
    al->buf = (tt_buf_t){0};
    tt_timer_init(&al->flush_timer, flush_timer_cb);
}

void tt_accesslog_destroy(tt_accesslog_t *al)
{
    tt_accesslog_flush(al);
    free(al->buf.data);
    al->buf = (tt_buf_t){0};
}

void tt_accesslog_flush(tt_accesslog_t *al)
{
    tt_loop_timer_stop(al->loop, &al->flush_timer);
    while (tt_buf_len(&al->buf) > 0) {
        ssize_t n = write(al->fd, tt_buf_rptr(&al->buf), tt_buf_len(&al->buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* a full disk must not stall proxying: drop the lines */
            al->buf.rpos = al->buf.wpos = 0;
            break;
        }
        tt_buf_consume(&al->buf, (size_t)n);
    }
}

/* Appends s as a JSON string body (quotes not included). */
static void append_escaped(tt_buf_t *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            tt_buf_append(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            tt_buf_appendf(b, "\\u%04x", c);
        } else {
            tt_buf_append(b, &s[i], 1);
        }
    }
}

static void append_field(tt_buf_t *b, const char *name, const char *value, size_t len)
{
    tt_buf_appendf(b, ",\"%s\":\"", name);
    append_escaped(b, value, len);
    tt_buf_append(b, "\"", 1);
}

void tt_accesslog_write(tt_accesslog_t *al, const tt_access_entry_t *e)
{
    if (al->fd < 0)
        return;
    tt_buf_t *b = &al->buf;
    int was_empty = tt_buf_len(b) == 0;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    tt_buf_appendf(b, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000);
    append_field(b, "client", e->client, strlen(e->client));
    if (e->upstream != NULL) {
        append_field(b, "upstream", e->upstream, strlen(e->upstream));
        append_field(b, "endpoint", e->endpoint, strlen(e->endpoint));
    }
    append_field(b, "method", e->method, strlen(e->method));
    append_field(b, "path", e->path, e->path_len);
    if (e->host_len > 0)
        append_field(b, "host", e->host, e->host_len);
    if (e->generated_by != NULL)
        append_field(b, "generated_by", e->generated_by, strlen(e->generated_by));
    if (e->error != NULL)
        append_field(b, "error", e->error, strlen(e->error));
    if (e->cut)
        tt_buf_append(b, ",\"cut\":true", 11);
    tt_buf_appendf(b,
                   ",\"status\":%u,\"bytes\":%llu,\"duration_ms\":%.3f,\"reused\":%s,"
                   "\"retried\":%s}\n",
                   e->status, (unsigned long long)e->bytes, (double)e->duration_us / 1000.0,
                   e->reused ? "true" : "false", e->retried ? "true" : "false");
    if (tt_buf_len(b) >= FLUSH_BYTES)
        tt_accesslog_flush(al);
    else if (was_empty)
        tt_loop_timer_after(al->loop, &al->flush_timer, FLUSH_AFTER_MS);
}
