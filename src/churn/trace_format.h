/* Decoding the kernel's binary trace ring buffer for `sock:inet_sock_set_state`.
 *
 * Nothing here touches the file system: the caller hands in the text of the event's `format`
 * file and of `events/header_page`, then whole pages read from `trace_pipe_raw`. Field offsets
 * come from the format file, never from a compiled-in layout, so a kernel that moves a field
 * still decodes (a missing required field is an error, not a guess). Pages follow the ring
 * buffer's documented encoding (header_event): a 32-bit header per entry with a 5-bit type_len
 * and a 27-bit time delta, padding, time-extend and absolute-timestamp entries. */
#ifndef TT_CHURN_TRACE_FORMAT_H
#define TT_CHURN_TRACE_FORMAT_H

#include "churn/addr.h"

#include <stddef.h>
#include <stdint.h>

/* Kernel TCP states (include/net/tcp_states.h), as the tracepoint reports them. */
enum {
    TT_TCP_ESTABLISHED = 1,
    TT_TCP_SYN_SENT = 2,
    TT_TCP_SYN_RECV = 3,
    TT_TCP_FIN_WAIT1 = 4,
    TT_TCP_FIN_WAIT2 = 5,
    TT_TCP_TIME_WAIT = 6,
    TT_TCP_CLOSE = 7,
    TT_TCP_CLOSE_WAIT = 8,
    TT_TCP_LAST_ACK = 9,
    TT_TCP_LISTEN = 10,
    TT_TCP_CLOSING = 11,
    TT_TCP_NEW_SYN_RECV = 12,
};

typedef struct {
    int off, size;
} tt_trace_field_t;

/* Where everything is: the event's id and fields, and the page layout. */
typedef struct {
    unsigned id;
    tt_trace_field_t common_type, common_pid, skaddr, oldstate, newstate, sport, dport, family,
        protocol, saddr, daddr, saddr_v6, daddr_v6;
    size_t page_ts_off, page_commit_off, page_commit_size, page_data_off, page_data_size;
} tt_trace_format_t;

/* One state change, decoded. local is the socket's own address (saddr/sport), remote its peer. */
typedef struct {
    uint64_t ts_ns;
    uint64_t skaddr;
    int pid; /* the task in whose context the change happened (tid) */
    int oldstate, newstate;
    int protocol;
    tt_churn_addr_t local, remote;
} tt_trace_event_t;

/* Fills f from the event's format file text and the header_page text. Returns 0, or -1 with a
 * reason in err (a field missing or of an unexpected size). */
int tt_trace_format_parse(tt_trace_format_t *f, const char *event_format, const char *header_page,
                          char *err, size_t errlen);

/* The size of one ring-buffer page (what one read of trace_pipe_raw returns at most). */
size_t tt_trace_page_size(const tt_trace_format_t *f);

typedef void (*tt_trace_event_cb)(const tt_trace_event_t *ev, void *arg);

/* Decodes one page of len bytes, calling cb for each inet_sock_set_state entry (other event ids
 * are skipped). *missed is set when the kernel flagged events lost before this page. Returns the
 * number of entries decoded, or -1 for a page that is not well formed (decoding stops there). */
int tt_trace_page_decode(const tt_trace_format_t *f, const uint8_t *page, size_t len,
                         tt_trace_event_cb cb, void *arg, int *missed);

#endif
