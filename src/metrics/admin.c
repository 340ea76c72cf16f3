#include "metrics/admin.h"

#include "core/clock.h"
#include "core/invariant.h"
#include "core/log.h"
#include "metrics/prometheus.h"
#include "metrics/stats_json.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_LIMIT        8192
#define URL_LIMIT         2048
#define MAX_CONNS         64    /* connections served at once; more wait in the listen backlog */
#define READ_TIMEOUT_MS   5000  /* the whole request head, from accept */
#define SEND_TIMEOUT_MS   10000 /* the whole response */
#define LINGER_MS         200
#define ACCEPT_BACKOFF_MS 100 /* out of descriptors: accept again after this */

#define JSON_TYPE "application/json"
#define TEXT_TYPE "text/plain; charset=utf-8"

typedef enum { C_FREE, C_READ, C_WRITE, C_LINGER } conn_state_t;

/* One client connection: its head being read, then its response being written. */
typedef struct {
    int fd;
    conn_state_t state;
    uint64_t deadline_ms;
    char *in; /* HEAD_LIMIT bytes while reading */
    size_t in_len;
    tt_buf_t out;
    size_t sent;
    int loopback; /* the client is on this host (POST /reload) */
} admin_conn_t;

struct tt_admin {
    int fd;
    int stop_fd; /* eventfd: readable once tt_admin_close asks the thread to stop */
    /* Descriptors held in reserve: when the process runs out, they are closed so that the admin
     * endpoint can still accept a connection and read /proc for it, then taken back. */
    int spare[2];
    int port;
    int started;
    pthread_t thread;
    tt_admin_ops_t ops;
    uint64_t accept_after_ms; /* accepting paused (EMFILE) until then */
    size_t nconns;
    admin_conn_t conns[MAX_CONNS];
};

/* One request being parsed. */
typedef struct {
    llhttp_t parser;
    char url[URL_LIMIT];
    size_t url_len;
    int url_too_long;
    int head_done;
} request_t;

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    request_t *r = p->data;
    if (r->url_len + len >= sizeof(r->url)) {
        r->url_too_long = 1;
        return 0;
    }
    memcpy(r->url + r->url_len, at, len);
    r->url_len += len;
    r->url[r->url_len] = '\0';
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    request_t *r = p->data;
    r->head_done = 1;
    return HPE_PAUSED; /* the head is all we need; a body, if any, is never read */
}

static const llhttp_settings_t settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
};

static void respond(tt_buf_t *out, int head_only, int status, const char *reason, const char *type,
                    const char *extra, const char *body, size_t len)
{
    tt_buf_appendf(out,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                   status, reason, type, len, extra != NULL ? extra : "");
    if (!head_only)
        tt_buf_append(out, body, len);
}

static void respond_text(tt_buf_t *out, int head_only, int status, const char *reason,
                         const char *text)
{
    respond(out, head_only, status, reason, TEXT_TYPE, NULL, text, strlen(text));
}

static void serve_snapshot(const tt_admin_ops_t *ops, tt_buf_t *out, int head_only, int json)
{
    char err[256] = "";
    tt_snapshot_t *s = ops->snapshot(ops->ctx, err, sizeof(err));
    if (s == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "tether: statistics unavailable: %s\n", err);
        respond_text(out, head_only, 503, "Service Unavailable", msg);
        return;
    }
    tt_buf_t b;
    tt_buf_init(&b, 65536);
    if (json)
        tt_stats_json_render(s, &b);
    else
        tt_prom_render(s, &b);
    respond(out, head_only, 200, "OK", json ? JSON_TYPE : TT_PROM_CONTENT_TYPE, NULL, b.data,
            tt_buf_len(&b));
    free(b.data);
    tt_snapshot_free(s);
}

static void serve_pools(const tt_admin_ops_t *ops, tt_buf_t *out, int head_only)
{
    char err[256] = "";
    tt_conn_list_t l = {0};
    if (ops->pools(ops->ctx, &l, err, sizeof(err)) < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "tether: connection list unavailable: %s\n", err);
        respond_text(out, head_only, 503, "Service Unavailable", msg);
        tt_conn_list_free(&l);
        return;
    }
    /* The endpoints' health is the snapshot's: merged over the workers' views, as in /stats. */
    tt_snapshot_t *s = ops->snapshot(ops->ctx, err, sizeof(err));
    if (s == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "tether: endpoint states unavailable: %s\n", err);
        respond_text(out, head_only, 503, "Service Unavailable", msg);
        tt_conn_list_free(&l);
        return;
    }
    tt_buf_t b;
    tt_buf_init(&b, 4096 + l.n * 200);
    tt_pools_json_render(&l, s, &b);
    respond(out, head_only, 200, "OK", JSON_TYPE, NULL, b.data, tt_buf_len(&b));
    free(b.data);
    tt_snapshot_free(s);
    tt_conn_list_free(&l);
}

static void serve_config(const tt_admin_ops_t *ops, tt_buf_t *out, int head_only)
{
    char *text = ops->config != NULL ? ops->config(ops->ctx) : NULL;
    if (text == NULL) {
        respond_text(out, head_only, 503, "Service Unavailable",
                     "tether: configuration unavailable\n");
        return;
    }
    char *safe = tt_admin_redact_config(text);
    free(text);
    respond_text(out, head_only, 200, "OK", safe);
    free(safe);
}

/* POST /reload: what SIGHUP does, for `tether reload`. It changes the running process, so only
 * a client on this host may ask, whatever admin_allow_remote lets read. */
static void serve_reload(const tt_admin_ops_t *ops, tt_buf_t *out, int method, int loopback)
{
    if (method != HTTP_POST) {
        respond(out, 0, 405, "Method Not Allowed", TEXT_TYPE, "Allow: POST\r\n",
                "tether: POST /reload\n", 21);
        return;
    }
    if (!loopback) {
        respond_text(out, 0, 403, "Forbidden", "tether: /reload is for loopback clients only\n");
        return;
    }
    char msg[600] = "";
    int rc = ops->reload != NULL ? ops->reload(ops->ctx, msg, sizeof(msg) - 1) : -1;
    size_t len = strlen(msg);
    msg[len++] = '\n';
    msg[len] = '\0';
    if (rc == 0)
        respond_text(out, 0, 202, "Accepted", msg);
    else
        respond_text(out, 0, rc == -1 ? 400 : 503, rc == -1 ? "Bad Request" : "Service Unavailable",
                     msg);
}

static void dispatch(const tt_admin_ops_t *ops, int loopback, tt_buf_t *out, const request_t *r)
{
    int method = llhttp_get_method((llhttp_t *)&r->parser);
    int head_only = method == HTTP_HEAD;
    /* Origin-form only; the query string is ignored. */
    size_t plen = strcspn(r->url, "?#");
    char path[URL_LIMIT];
    memcpy(path, r->url, plen);
    path[plen] = '\0';
    if (strcmp(path, "/reload") == 0) {
        serve_reload(ops, out, method, loopback);
        return;
    }
    if (method != HTTP_GET && method != HTTP_HEAD) {
        respond(out, 0, 405, "Method Not Allowed", TEXT_TYPE, "Allow: GET, HEAD\r\n",
                "tether: only GET and HEAD\n", 26);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        serve_snapshot(ops, out, head_only, 0);
    } else if (strcmp(path, "/stats") == 0) {
        serve_snapshot(ops, out, head_only, 1);
    } else if (strcmp(path, "/healthz") == 0) {
        respond_text(out, head_only, 200, "OK", "ok\n");
    } else if (strcmp(path, "/ready") == 0) {
        char why[256] = "", msg[300];
        int ready = ops->ready(ops->ctx, why, sizeof(why));
        snprintf(msg, sizeof(msg), "%s%s%s\n", ready ? "ready" : "not ready", why[0] ? ": " : "",
                 why);
        respond_text(out, head_only, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", msg);
    } else if (strcmp(path, "/pools") == 0) {
        serve_pools(ops, out, head_only);
    } else if (strcmp(path, "/config") == 0) {
        serve_config(ops, out, head_only);
    } else if (strcmp(path, "/") == 0) {
        respond_text(
            out, head_only, 200, "OK",
            "tetherd admin: /metrics /stats /healthz /ready /pools /config, POST /reload\n");
    } else {
        respond_text(out, head_only, 404, "Not Found", "tether: no such admin path\n");
    }
}

int tt_admin_respond(const tt_admin_ops_t *ops, int loopback, const char *in, size_t len,
                     tt_buf_t *out)
{
    /* The head is parsed again from its start on every read: it is at most HEAD_LIMIT bytes,
     * and the connection then needs no parser state of its own. */
    request_t *r = tt_calloc(1, sizeof(*r));
    llhttp_init(&r->parser, HTTP_REQUEST, &settings);
    r->parser.data = r;
    llhttp_errno_t e = llhttp_execute(&r->parser, in, TT_MIN(len, (size_t)HEAD_LIMIT));
    int done = 1;
    if (r->head_done) {
        if (r->url_too_long)
            respond_text(out, 0, 414, "URI Too Long", "tether: request target too long\n");
        else
            dispatch(ops, loopback, out, r);
    } else if (e != HPE_OK) {
        respond_text(out, 0, 400, "Bad Request", "tether: malformed request\n");
    } else if (len >= HEAD_LIMIT) {
        respond_text(out, 0, 431, "Request Header Fields Too Large",
                     "tether: request head too large\n");
    } else {
        done = 0;
    }
    free(r);
    return done;
}

/* ---- the connections ------------------------------------------------------------------------ */

static void take_spares(tt_admin_t *a);

static void conn_close(tt_admin_t *a, admin_conn_t *c)
{
    close(c->fd);
    free(c->in);
    free(c->out.data);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->state = C_FREE;
    a->nconns--;
    take_spares(a); /* after an exhaustion, the descriptor just freed is a spare again */
}

/* Half-close, then read briefly what the client still sends, so an unread request body does not
 * turn the close into a reset that destroys the response in flight. */
static void conn_linger(admin_conn_t *c, uint64_t now)
{
    shutdown(c->fd, SHUT_WR);
    c->state = C_LINGER;
    c->deadline_ms = now + LINGER_MS;
}

static void conn_write(tt_admin_t *a, admin_conn_t *c, uint64_t now)
{
    while (c->sent < c->out.wpos) {
        ssize_t n = send(c->fd, c->out.data + c->sent, c->out.wpos - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* POLLOUT */
        conn_close(a, c);
        return;
    }
    conn_linger(c, now);
}

static void conn_read(tt_admin_t *a, admin_conn_t *c, uint64_t now)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, HEAD_LIMIT - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) { /* gone before its request: nothing worth answering */
            conn_close(a, c);
            return;
        }
        c->in_len += (size_t)n;
        if (tt_admin_respond(&a->ops, c->loopback, c->in, c->in_len, &c->out)) {
            free(c->in);
            c->in = NULL;
            c->state = C_WRITE;
            c->deadline_ms = now + SEND_TIMEOUT_MS;
            conn_write(a, c, now);
            return;
        }
    }
}

static void conn_drain(tt_admin_t *a, admin_conn_t *c)
{
    char sink[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break;
    }
    conn_close(a, c); /* EOF, error, or more than it is worth reading */
}

static void take_spares(tt_admin_t *a)
{
    for (int i = 0; i < 2; i++)
        if (a->spare[i] < 0)
            a->spare[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void release_spares(tt_admin_t *a)
{
    for (int i = 0; i < 2; i++) {
        if (a->spare[i] >= 0)
            close(a->spare[i]);
        a->spare[i] = -1;
    }
}

static void conn_step(tt_admin_t *a, admin_conn_t *c, uint64_t now)
{
    if (c->state == C_FREE)
        return;
    if (now >= c->deadline_ms) { /* too slow to send its head, to read its response, or done */
        conn_close(a, c);
        return;
    }
    switch (c->state) {
    case C_READ:
        conn_read(a, c, now);
        break;
    case C_WRITE:
        conn_write(a, c, now);
        break;
    case C_LINGER:
        conn_drain(a, c);
        break;
    case C_FREE: /* returned above */
        break;
    }
}

static void accept_conns(tt_admin_t *a, uint64_t now)
{
    while (a->nconns < MAX_CONNS) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && a->spare[0] >= 0) {
            /* The workers took every descriptor: the spares make room for a probe of
             * /healthz; conn_close takes them back. */
            release_spares(a);
            fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                a->accept_after_ms = now + ACCEPT_BACKOFF_MS; /* rather than spin */
            return;
        }
        admin_conn_t *c = NULL;
        for (size_t i = 0; i < MAX_CONNS && c == NULL; i++)
            if (a->conns[i].state == C_FREE)
                c = &a->conns[i];
        TT_BUG_ON(c == NULL);
        tt_addr_t peer;
        peer.len = sizeof(peer.ss);
        c->loopback = getpeername(fd, (struct sockaddr *)&peer.ss, &peer.len) == 0 &&
                      tt_addr_is_loopback(&peer);
        c->fd = fd;
        c->state = C_READ;
        c->deadline_ms = now + READ_TIMEOUT_MS;
        c->in = tt_malloc(HEAD_LIMIT);
        c->in_len = 0;
        tt_buf_init(&c->out, 512);
        c->sent = 0;
        a->nconns++;
        conn_read(a, c, now); /* the request usually arrived with the connection */
    }
}

/* The admin thread's loop: poll(2) over the listener and at most MAX_CONNS connections, each
 * bounded by its deadline, so that a silent or slow client delays no other (a probe of /healthz
 * stays fast). poll rather than tt_loop: a few dozen descriptors, no timers beyond deadlines. */
static void *admin_main(void *arg)
{
    tt_admin_t *a = arg;
    struct pollfd pfd[2 + MAX_CONNS];
    admin_conn_t *polled[MAX_CONNS];
    for (;;) {
        uint64_t now = tt_clock_monotonic_ms();
        int accepting = a->nconns < MAX_CONNS && now >= a->accept_after_ms;
        pfd[0] = (struct pollfd){.fd = a->stop_fd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = a->fd, .events = accepting ? POLLIN : 0};
        nfds_t n = 2;
        uint64_t wake = accepting ? UINT64_MAX : a->accept_after_ms;
        if (a->nconns == MAX_CONNS)
            wake = UINT64_MAX;
        for (size_t i = 0; i < MAX_CONNS; i++) {
            admin_conn_t *c = &a->conns[i];
            if (c->state == C_FREE)
                continue;
            polled[n - 2] = c;
            pfd[n++] =
                (struct pollfd){.fd = c->fd, .events = c->state == C_WRITE ? POLLOUT : POLLIN};
            wake = TT_MIN(wake, c->deadline_ms);
        }
        int timeout = wake == UINT64_MAX ? -1 : wake <= now ? 0 : (int)TT_MIN(wake - now, 60000);
        int ready = poll(pfd, n, timeout);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0) {
            tt_error("admin: poll: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents != 0)
            break;
        now = tt_clock_monotonic_ms();
        for (nfds_t i = 2; i < n; i++)
            if (pfd[i].revents != 0 || now >= polled[i - 2]->deadline_ms)
                conn_step(a, polled[i - 2], now);
        if (pfd[1].revents != 0)
            accept_conns(a, now);
    }
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (a->conns[i].state != C_FREE)
            conn_close(a, &a->conns[i]);
    return NULL;
}

tt_admin_t *tt_admin_open(const tt_addr_t *addr, const tt_admin_ops_t *ops, char *err,
                          size_t errlen)
{
    char text[TT_ADDR_STRLEN];
    tt_addr_format(addr, text);
    /* Not tt_sock_listen: no SO_REUSEPORT, so a second tetherd on the same admin port fails to
     * start instead of silently sharing (and splitting) the scrapes. */
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "admin %s: socket: %s", text, strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "admin: cannot listen on %s: %s", text, strerror(errno));
        close(fd);
        return NULL;
    }
    return tt_admin_open_fd(fd, ops, err, errlen);
}

tt_admin_t *tt_admin_open_fd(int fd, const tt_admin_ops_t *ops, char *err, size_t errlen)
{
    tt_addr_t bound;
    bound.len = sizeof(bound.ss);
    getsockname(fd, (struct sockaddr *)&bound.ss, &bound.len);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    tt_admin_t *a = tt_calloc(1, sizeof(*a));
    a->fd = fd;
    a->ops = *ops;
    for (size_t i = 0; i < MAX_CONNS; i++)
        a->conns[i].fd = -1;
    a->port = ntohs(bound.ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound.ss)->sin6_port
                                                   : ((struct sockaddr_in *)&bound.ss)->sin_port);
    a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->stop_fd < 0) {
        snprintf(err, errlen, "admin: eventfd: %s", strerror(errno));
        close(fd);
        free(a);
        return NULL;
    }
    a->spare[0] = a->spare[1] = -1;
    take_spares(a);
    return a;
}

int tt_admin_start(tt_admin_t *a)
{
    int rc = pthread_create(&a->thread, NULL, admin_main, a);
    if (rc == 0)
        a->started = 1;
    return rc;
}

void tt_admin_close(tt_admin_t *a)
{
    if (a == NULL)
        return;
    if (a->started) {
        uint64_t one = 1;
        ssize_t n = write(a->stop_fd, &one, sizeof(one));
        (void)n; /* an eventfd write of 1 cannot fail short of overflow */
        pthread_join(a->thread, NULL);
    }
    close(a->fd);
    close(a->stop_fd);
    release_spares(a);
    free(a);
}

int tt_admin_port(const tt_admin_t *a)
{
    return a->port;
}

/* Whether a configuration key names something secret. */
static int secret_key(const char *k, size_t n)
{
    static const char *const words[] = {"key",    "password", "passwd",
                                        "secret", "token",    "credential"};
    char lower[128];
    if (n >= sizeof(lower))
        n = sizeof(lower) - 1;
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)k[i]);
    lower[n] = '\0';
    for (size_t i = 0; i < TT_ARRAY_SIZE(words); i++)
        if (strstr(lower, words[i]) != NULL)
            return 1;
    return 0;
}

/* Appends a value, with the password of any "scheme://user:password@" replaced. */
static void put_value(tt_buf_t *b, const char *v, size_t n)
{
    const char *end = v + n;
    while (v < end) {
        const char *scheme = NULL;
        for (const char *p = v; p + 3 <= end; p++)
            if (memcmp(p, "://", 3) == 0) {
                scheme = p + 3;
                break;
            }
        if (scheme == NULL)
            break;
        const char *auth_end = scheme;
        while (auth_end < end && *auth_end != '/' && *auth_end != '@' && *auth_end != ' ' &&
               *auth_end != ',')
            auth_end++;
        const char *colon = memchr(scheme, ':', (size_t)(auth_end - scheme));
        if (auth_end < end && *auth_end == '@' && colon != NULL) {
            tt_buf_append(b, v, (size_t)(colon + 1 - v));
            tt_buf_append(b, "<redacted>", 10);
            v = auth_end;
        } else {
            tt_buf_append(b, v, (size_t)(auth_end - v));
            v = auth_end;
        }
    }
    tt_buf_append(b, v, (size_t)(end - v));
}

char *tt_admin_redact_config(const char *text)
{
    tt_buf_t b;
    tt_buf_init(&b, strlen(text) + 64);
    const char *line = text;
    while (*line != '\0') {
        const char *eol = strchr(line, '\n');
        size_t len = eol != NULL ? (size_t)(eol - line) : strlen(line);
        const char *eq = memchr(line, '=', len);
        const char *k = line;
        while (k < line + len && isspace((unsigned char)*k))
            k++;
        if (eq != NULL && *k != ';' && *k != '#' && *k != '[') {
            const char *kend = eq;
            while (kend > k && isspace((unsigned char)kend[-1]))
                kend--;
            const char *v = eq + 1;
            while (v < line + len && isspace((unsigned char)*v))
                v++;
            tt_buf_append(&b, line, (size_t)(v - line));
            if (secret_key(k, (size_t)(kend - k)) && v < line + len)
                tt_buf_append(&b, "<redacted>", 10);
            else
                put_value(&b, v, (size_t)(line + len - v));
        } else {
            tt_buf_append(&b, line, len);
        }
        if (eol == NULL)
            break;
        tt_buf_append(&b, "\n", 1);
        line = eol + 1;
    }
    tt_buf_append(&b, "", 1);
    return b.data;
}
