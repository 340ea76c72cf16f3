/* The access log: one JSON line per request, off unless `access_log` is set. Each worker buffers
 * its lines and writes them in one write(2) when the buffer passes 32 KiB or a second after the
 * first buffered line, so logging costs a copy per request, not a syscall. All workers share one
 * O_APPEND file descriptor; each write holds whole lines. */
#ifndef TT_METRICS_ACCESSLOG_H
#define TT_METRICS_ACCESSLOG_H

#include "core/buf.h"
#include "event/loop.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *client;   /* "addr:port" */
    const char *upstream; /* NULL: the request reached no upstream */
    const char *endpoint;
    const char *method;
    const char *path;
    size_t path_len;
    const char *host; /* Host header or absolute-form authority; host_len 0: none */
    size_t host_len;
    const char *generated_by; /* "tether" or "upstream"; NULL: no response was sent */
    const char *error;        /* tether's own response: its RFC 9209 error type, else NULL */
    unsigned status;          /* 0: no response was sent */
    uint64_t bytes;           /* response bytes written to the client */
    uint64_t duration_us;
    int reused;  /* served on a connection that served a request before */
    int retried; /* sent again after meeting a stale connection */
    int cut;     /* the response head went out, then the connection closed before its end */
} tt_access_entry_t;

typedef struct {
    int fd; /* -1: off */
    tt_loop_t *loop;
    tt_buf_t buf;
    tt_timer_t flush_timer;
} tt_accesslog_t;

/* Opens path for appending (created 0640). Returns the fd, or -1 with errno set. */
int tt_accesslog_open(const char *path);

/* Prepares a worker's log writing to fd (-1: logging off). */
void tt_accesslog_init(tt_accesslog_t *al, int fd, tt_loop_t *loop);
/* Writes what is buffered and frees the buffer. */
void tt_accesslog_destroy(tt_accesslog_t *al);

static inline int tt_accesslog_enabled(const tt_accesslog_t *al)
{
    return al->fd >= 0;
}

/* Buffers one line; flushes when the buffer is large. */
void tt_accesslog_write(tt_accesslog_t *al, const tt_access_entry_t *e);

/* Writes every buffered line now. */
void tt_accesslog_flush(tt_accesslog_t *al);

#endif
