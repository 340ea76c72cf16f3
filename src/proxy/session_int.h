/* Private to src/proxy/: the session's state and what its files share. session.c drives a
 * session (events, timers, client output, errors, close); request.c reads and routes a request
 * head; relay.c runs the exchange with the upstream (acquire, send, response, retry); tunnel.c
 * relays raw bytes after 101 Switching Protocols. See docs/internals/session.md. */
#ifndef TT_PROXY_SESSION_INT_H
#define TT_PROXY_SESSION_INT_H

#include "event/sock.h"
#include "net/splice.h"
#include "proxy/session.h"

typedef enum {
    S_HEAD,      /* reading a request head, or idle between requests */
    S_BODY,      /* reading a request body whole before asking for a connection (request_buffer) */
    S_WAIT_CONN, /* waiting for an upstream connection (connecting or queued) */
    S_EXCHANGE,  /* relaying the request and the response */
    S_TUNNEL,    /* after 101 Switching Protocols: raw bytes both ways */
    S_FLUSH,     /* writing the rest of a response, then the next request or close */
    S_LINGER,    /* response sent and write side shut: discarding input until EOF or timeout */
    S_CLOSED,
} session_state_t;

typedef struct tt_session {
    tt_io_t io;
    tt_worker_t *worker;
    tt_list_t link;
    tt_upstream_t *listener_upstream;
    char peer[TT_ADDR_STRLEN];
    tt_buf_t *cin;  /* bytes from the client */
    tt_buf_t *cout; /* response heads, errors and de-chunked bodies for the client */
    tt_http_reader_t req, resp;
    tt_http_head_t *head; /* borrowed while a request or response head is parsed */
    size_t head_parsed;
    session_state_t state;
    tt_timer_t timer;
    tt_deferred_t free_later;

    /* The exchange in progress. */
    tt_upstream_t *up;
    tt_conn_t *conn;
    tt_pool_waiter_t waiter;
    char endpoint[TT_ADDR_STRLEN]; /* the endpoint of this exchange, once known */
    tt_buf_t *uout;                /* request head, plus the body kept for a safe retry */
    size_t uout_sent;
    size_t req_pending;  /* parsed request body bytes at the front of cin, not yet sent */
    size_t resp_pending; /* parsed response body bytes at the front of conn->in, not yet sent */
    size_t retained;     /* request body bytes kept in uout */
    tt_pipe_t *pipe;     /* while the response body is spliced: its bytes not yet sent */
    tt_pipe_t *req_pipe; /* while the request body is spliced: its bytes not yet sent */
    uint8_t method;
    uint8_t http10;
    uint8_t client_keepalive;
    uint8_t upgrade;
    uint8_t idempotent; /* by method, or an Idempotency-Key header */
    uint8_t retryable;
    uint8_t retaining;
    uint8_t retried;
    uint8_t req_read_done; /* the whole request was read from the client */
    uint8_t req_sent;      /* the whole request was written to the upstream */
    uint8_t resp_started;  /* a byte of the response arrived */
    uint8_t resp_head_done;
    uint8_t resp_done;
    uint8_t resp_cut; /* closed after the response head, before the response's end */
    uint8_t resp_keepalive;
    uint8_t close_after;
    uint8_t ends_at_close; /* the client learns the response's end from the close alone */
    uint8_t client_eof;
    /* epoll said readable and no read has returned EAGAIN since: reading is worth a syscall. */
    uint8_t client_readable;
    uint8_t up_readable;
    uint8_t client_gone; /* reset or hung up: nothing more can be written */
    uint8_t in_request;  /* a request head was read and its outcome is not yet counted */
    uint8_t generated;   /* the response is tether's own */
    /* tt_sock_ack_now() ran on that socket and tetherd has not written to it since: the
     * kernel acknowledges what arrives as it is read (docs/internals/tuning.md). */
    uint8_t client_acking;
    uint8_t up_acking;
    /* A tunnel read data from that end since the last write to it or ack_now on it. */
    uint8_t client_unacked, up_unacked;
    uint8_t client_tcp; /* not a Unix-domain client, which has no ACKs to tune */
    uint8_t host_len;
    const char *proxy_error; /* with generated: the RFC 9209 error type */
    /* With generated, a finer cause than proxy_error for the access log's error (breaker_open,
     * endpoint_down: both are destination_unavailable to RFC 9209); NULL for most errors. */
    const char *log_error;
    uint16_t status; /* status sent to the client; 0 before a response head */
    uint8_t reused;  /* the exchange ran on a connection that served a request before */
    uint8_t path_len;
    uint32_t send_queue; /* the client socket's unacknowledged bytes when the send timer started */
    /* After the response head, what the session timer waits for: the client to take bytes (the
     * send timer) or the upstream to send more of the body (response_idle_timeout). */
    uint8_t timer_on_client;
    uint64_t idle_mark; /* bytes_out when response_idle_timeout was armed */
    uint64_t started_us;
    uint64_t bytes_out;      /* response bytes written to the client for this request */
    uint64_t final_head_at;  /* offset in bytes_out where the final response head starts */
    tt_msec_t body_deadline; /* S_BODY: the whole body by then (client_body_timeout) */
    char path[200];          /* request target, for the access log */
    char host[100];          /* Host header (or absolute-form authority), for the access log */

    /* Interest wanted after this round of progress. */
    uint8_t want_client_in, want_client_out, want_up_in, want_up_out;
} tt_session_t;

/* s->method of a request refused before its head was understood. */
#define TT_METHOD_UNKNOWN 0xff

/* What a step of the session says about itself (nginx's NGX_OK / NGX_AGAIN / NGX_DECLINED /
 * NGX_ERROR), the one vocabulary of every step function here:
 *   OK        the step did its work or made progress (all written, a head parsed, bytes moved);
 *   AGAIN     nothing could be done now: a socket is full or empty and the want_* flags say
 *             which readiness to wait for;
 *   DECLINED  the step handed the session on: it replied, retried, closed, or moved it to
 *             another state, so the caller returns to the driver without touching it further;
 *   ERROR     the peer this step talks to failed (the client is gone, a tunnel end closed); the
 *             caller decides how the session ends. */
typedef enum { TT_STEP_OK, TT_STEP_AGAIN, TT_STEP_DECLINED, TT_STEP_ERROR } tt_step_t;

/* OK when a step moved something before it had to wait, else AGAIN. */
static inline tt_step_t tt_step_progress(int moved)
{
    return moved ? TT_STEP_OK : TT_STEP_AGAIN;
}

static inline tt_loop_t *tt_session_loop(tt_session_t *s)
{
    return s->worker->loop;
}

/* ---- session.c ---- */

/* Runs the session's state machine until it waits, then sets its epoll interest. */
void tt_session_run(tt_session_t *s);
/* Closes the client connection and ends the exchange: the upstream connection goes back to the
 * pool when conn_verdict is TT_REUSE_OK, else it is closed for that reason. Idempotent. */
void tt_session_close(tt_session_t *s, tt_close_reason_t conn_verdict);
void tt_session_arm_timer(tt_session_t *s, int64_t ms);
/* After the response head, waiting for more of the body: response_idle_timeout runs. */
void tt_session_arm_idle_timer(tt_session_t *s);
/* Counts the outcome of the current request, once. */
void tt_session_end_request(tt_session_t *s);
/* Whether response bytes wait to be written to the client. */
int tt_session_output_pending(const tt_session_t *s);
/* Writes cout, then the raw response body waiting in conn->in. OK when all is written, AGAIN
 * when the socket is full, ERROR when the client is gone. */
tt_step_t tt_session_flush_client(tt_session_t *s);
/* Gives the response's splice pipe back to the worker (kept when empty, else closed). */
void tt_session_release_pipe(tt_session_t *s);
/* Gives the request body's splice pipe back: its bytes were for the upstream connection, so it
 * goes when that connection is dropped (kept when empty, else closed). */
void tt_session_release_req_pipe(tt_session_t *s);
/* The client output buffer, taken from the worker on first use. */
tt_buf_t *tt_session_cout(tt_session_t *s);
/* The endpoint for logs and errors: the one the request went to, else the upstream's url. */
static inline const char *tt_session_endpoint(const tt_session_t *s)
{
    return s->endpoint[0] != '\0' ? s->endpoint : s->up->addr_str;
}

/* Answers the current request with an error generated by tether and ends the exchange. The client
 * connection stays open only when the request was read whole and the client wants keep-alive.
 * proxy_error is the RFC 9209 error type (a static string), for Proxy-Status and the access log. */
void tt_session_reply_error(tt_session_t *s, int status, tt_close_reason_t conn_verdict,
                            const char *proxy_error, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Whether closing now could destroy the response just sent: with bytes of the client's still
 * unread (the rest of a refused head, a body the upstream did not wait for), close() sends a
 * reset, which may discard the response before the client reads it. */
int tt_session_should_linger(const tt_session_t *s);
/* The lingering close of nginx and Apache: the write side is shut (the client reads the response
 * and then EOF), and input is read and discarded (S_LINGER) until the client closes or
 * lingering_timeout passes. The request is counted and the upstream connection dropped first. */
void tt_session_start_linger(tt_session_t *s);

/* ---- request.c ---- */

/* Readies the session for the next request: buffers an idle client need not hold go back. */
void tt_session_begin_request(tt_session_t *s);
/* Reads and parses a request head. OK when the state moved on (the request started or was
 * refused), AGAIN while waiting for the client, ERROR when the session closed. */
tt_step_t tt_session_step_head(tt_session_t *s);
/* Reads a buffered request body (S_BODY) until it is whole, outgrows request_buffer or fails.
 * OK when the state moved on, AGAIN while waiting for the client, DECLINED when it closed. */
tt_step_t tt_session_step_body(tt_session_t *s);
/* Waits for the client's next bytes (mid_request: acknowledge what came at once). */
void tt_session_wait_for_client(tt_session_t *s, int mid_request);

/* ---- relay.c ---- */

/* Asks the pool for a connection for the routed request (flags: TT_ACQUIRE_*). */
void tt_session_acquire_conn(tt_session_t *s, int flags);
/* Ends the exchange's hold on its upstream connection: back to the pool when verdict allows. */
void tt_session_drop_conn(tt_session_t *s, tt_close_reason_t verdict);
/* Relays the request and the response as far as the sockets allow. */
void tt_session_step_exchange(tt_session_t *s);

/* ---- tunnel.c ---- */

/* Relays raw bytes both ways until either side ends, then closes the session. */
void tt_session_step_tunnel(tt_session_t *s);

#endif
