#include "cli/top.h"

#include "core/clock.h"
#include "core/invariant.h"
#include "core/json.h"
#include "event/sock.h"

#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 2000
#define FETCH_TIMEOUT_MS   5000
#define BODY_LIMIT         (64u << 20)

/* ---- parsing a /stats sample -------------------------------------------------------------- */

static void copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src != NULL ? src : "");
}

static void read_hist(const tt_json_t *j, tt_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    const tt_json_t *b = tt_json_get(j, "buckets");
    for (size_t i = 0; b != NULL && i < b->len; i++) {
        const tt_json_t *pair = tt_json_at(b, i);
        uint64_t high = tt_json_u64(tt_json_at(pair, 0), 0);
        uint64_t n = tt_json_u64(tt_json_at(pair, 1), 0);
        h->buckets[tt_hist_bucket_of(high)] += n;
        h->count += n;
    }
    h->sum = tt_json_u64(tt_json_get(j, "sum"), 0);
    h->max = tt_json_u64(tt_json_get(j, "max"), 0);
}

static void read_endpoints(const tt_json_t *list, tt_top_upstream_t *t)
{
    if (list == NULL || list->type != TT_JSON_ARRAY || list->len == 0)
        return;
    t->eps = tt_calloc(list->len, sizeof(*t->eps));
    for (size_t i = 0; i < list->len; i++) {
        const tt_json_t *j = tt_json_at(list, i);
        tt_top_endpoint_t *e = &t->eps[t->neps++];
        copy_str(e->address, sizeof(e->address), tt_json_str(tt_json_get(j, "address"), "?"));
        copy_str(e->health, sizeof(e->health), tt_json_str(tt_json_get(j, "health"), "up"));
        e->draining = strcmp(tt_json_str(tt_json_get(j, "state"), ""), "draining") == 0;
        e->requests = tt_json_u64(tt_json_get(j, "requests_total"), 0);
        e->connections = tt_json_u64(tt_json_get(j, "connections"), 0);
        e->idle = tt_json_u64(tt_json_get(j, "idle"), 0);
        e->outstanding = tt_json_u64(tt_json_get(j, "outstanding"), 0);
        if (strcmp(e->health, "up") == 0)
            t->nup++;
        else if (t->not_up[0] == '\0')
            snprintf(t->not_up, sizeof(t->not_up), "%s %s", e->address, e->health);
    }
}

int tt_top_sample_parse(const char *json, size_t len, tt_top_sample_t *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    char jerr[128];
    tt_json_t *root = tt_json_parse(json, len, jerr, sizeof(jerr));
    if (root == NULL) {
        snprintf(err, errlen, "/stats is not valid JSON (%s)", jerr);
        return -1;
    }
    const tt_json_t *ups = tt_json_get(root, "upstreams");
    if (ups == NULL || ups->type != TT_JSON_ARRAY) {
        snprintf(err, errlen, "/stats has no upstreams list: not a tetherd admin endpoint?");
        tt_json_free(root);
        return -1;
    }
    copy_str(s->version, sizeof(s->version), tt_json_str(tt_json_get(root, "version"), "?"));
    s->ready = tt_json_bool(tt_json_get(root, "ready"), 0);
    s->uptime_s = tt_json_num(tt_json_get(root, "uptime_seconds"), 0);
    s->accepted = tt_json_u64(tt_json_path(root, "downstream.connections_accepted_total"), 0);
    s->active = tt_json_u64(tt_json_path(root, "downstream.connections_active"), 0);
    s->nups = ups->len;
    s->ups = s->nups > 0 ? tt_calloc(s->nups, sizeof(*s->ups)) : NULL;
    for (size_t i = 0; i < s->nups; i++) {
        const tt_json_t *u = tt_json_at(ups, i);
        tt_top_upstream_t *t = &s->ups[i];
        copy_str(t->name, sizeof(t->name), tt_json_str(tt_json_get(u, "name"), "?"));
        copy_str(t->endpoint, sizeof(t->endpoint), tt_json_str(tt_json_get(u, "endpoint"), ""));
        t->requests = tt_json_u64(tt_json_get(u, "requests_total"), 0);
        t->sent = tt_json_u64(tt_json_get(u, "requests_sent_total"), 0);
        t->reused = tt_json_u64(tt_json_get(u, "requests_reused_total"), 0);
        t->errors = tt_json_u64(tt_json_path(u, "responses.5xx"), 0);
        t->opened = tt_json_u64(tt_json_path(u, "connections.opened_total"), 0);
        t->active = tt_json_u64(tt_json_path(u, "connections.active"), 0);
        t->idle = tt_json_u64(tt_json_path(u, "connections.idle"), 0);
        t->connecting = tt_json_u64(tt_json_path(u, "connections.connecting"), 0);
        t->mean_age_ms = tt_json_u64(tt_json_path(u, "connections.mean_age_ms"), 0);
        t->socket_mem = tt_json_u64(tt_json_path(u, "connections.socket_memory_bytes"), 0);
        t->queue = tt_json_u64(tt_json_path(u, "queue.length"), 0);
        read_hist(tt_json_get(u, "request_duration_us"), &t->duration_us);
        read_endpoints(tt_json_path(u, "endpoints.list"), t);
    }
    tt_json_free(root);
    return 0;
}

void tt_top_sample_free(tt_top_sample_t *s)
{
    for (size_t i = 0; i < s->nups; i++)
        free(s->ups[i].eps);
    free(s->ups);
    memset(s, 0, sizeof(*s));
}

/* ---- rows ----------------------------------------------------------------------------------- */

static const tt_top_upstream_t *find(const tt_top_sample_t *s, const char *name)
{
    for (size_t i = 0; s != NULL && i < s->nups; i++)
        if (strcmp(s->ups[i].name, name) == 0)
            return &s->ups[i];
    return NULL;
}

static uint64_t delta(uint64_t cur, uint64_t prev)
{
    return cur >= prev ? cur - prev : 0;
}

double tt_top_rows(const tt_top_sample_t *prev, const tt_top_sample_t *cur, tt_top_row_t *rows)
{
    /* No previous sample, or tetherd restarted in between: rates since its start. */
    if (prev != NULL && prev->uptime_s >= cur->uptime_s)
        prev = NULL;
    double dt = cur->uptime_s - (prev != NULL ? prev->uptime_s : 0);
    if (dt <= 0)
        dt = 1e-9;
    static const tt_top_upstream_t zero;
    tt_hist_t *d = tt_malloc(sizeof(*d));
    for (size_t i = 0; i < cur->nups; i++) {
        const tt_top_upstream_t *c = &cur->ups[i];
        const tt_top_upstream_t *p = find(prev, c->name);
        if (p == NULL)
            p = &zero;
        tt_top_row_t *r = &rows[i];
        memset(r, 0, sizeof(*r));
        r->name = c->name;
        r->endpoint = c->endpoint;
        r->sample = c;
        r->prev = p;
        r->dt = dt;
        r->req_s = (double)delta(c->requests, p->requests) / dt;
        r->conn_s = (double)delta(c->opened, p->opened) / dt;
        r->err_s = (double)delta(c->errors, p->errors) / dt;
        uint64_t sent = delta(c->sent, p->sent);
        r->reuse_pct = sent > 0 ? 100.0 * (double)delta(c->reused, p->reused) / (double)sent : -1;
        r->active = c->active;
        r->idle = c->idle;
        r->connecting = c->connecting;
        r->queue = c->queue;
        r->socket_mem = c->socket_mem;
        r->mean_age_s =
            c->active + c->idle + c->connecting > 0 ? (double)c->mean_age_ms / 1000.0 : -1;
        /* Percentiles of this interval only: the difference of the bucket counts. */
        memset(d, 0, sizeof(*d));
        for (unsigned b = 0; b < TT_HIST_BUCKETS; b++) {
            d->buckets[b] = delta(c->duration_us.buckets[b], p->duration_us.buckets[b]);
            d->count += d->buckets[b];
        }
        d->max = c->duration_us.max;
        r->p50_ms = d->count > 0 ? (double)tt_hist_quantile(d, 0.50) / 1000.0 : -1;
        r->p99_ms = d->count > 0 ? (double)tt_hist_quantile(d, 0.99) / 1000.0 : -1;
    }
    free(d);
    return dt;
}

static const tt_top_endpoint_t *find_endpoint(const tt_top_upstream_t *u, const char *address)
{
    for (size_t i = 0; i < u->neps; i++)
        if (strcmp(u->eps[i].address, address) == 0)
            return &u->eps[i];
    return NULL;
}

void tt_top_endpoint_rows(const tt_top_row_t *row, tt_top_endpoint_row_t *out)
{
    const tt_top_upstream_t *c = row->sample;
    uint64_t total = 0;
    for (size_t i = 0; i < c->neps; i++) {
        const tt_top_endpoint_t *p = find_endpoint(row->prev, c->eps[i].address);
        uint64_t n = delta(c->eps[i].requests, p != NULL ? p->requests : 0);
        out[i] = (tt_top_endpoint_row_t){.ep = &c->eps[i], .req_s = (double)n / row->dt};
        total += n;
    }
    for (size_t i = 0; i < c->neps; i++)
        out[i].share_pct = total > 0 ? 100.0 * out[i].req_s * row->dt / (double)total : -1;
}

/* ---- rendering ------------------------------------------------------------------------------ */

/* Compact figures, at most 6 characters, so the table fits 80 columns. */
static void fmt_ms(char *buf, size_t size, double ms)
{
    if (ms < 0)
        snprintf(buf, size, "-");
    else if (ms < 10)
        snprintf(buf, size, "%.2fms", ms);
    else if (ms < 100)
        snprintf(buf, size, "%.1fms", ms);
    else if (ms < 1000)
        snprintf(buf, size, "%.0fms", ms);
    else
        snprintf(buf, size, "%.1fs", ms / 1000);
}

static void fmt_age(char *buf, size_t size, double s)
{
    if (s < 0)
        snprintf(buf, size, "-");
    else if (s < 60)
        snprintf(buf, size, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else if (s < 100 * 3600)
        snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(buf, size, "%dd", (int)(s / 86400));
}

static void fmt_bytes(char *buf, size_t size, uint64_t v)
{
    if (v < 10000)
        snprintf(buf, size, "%" PRIu64, v);
    else if (v < 10000 * 1024ULL)
        snprintf(buf, size, "%.0fK", (double)v / 1024);
    else if (v < 10000 * 1024ULL * 1024)
        snprintf(buf, size, "%.0fM", (double)v / (1024 * 1024));
    else
        snprintf(buf, size, "%.0fG", (double)v / (1024.0 * 1024 * 1024));
}

/* A rate in at most 7 characters. */
static void fmt_rate(char *buf, size_t size, double v)
{
    if (v < 100000)
        snprintf(buf, size, "%.1f", v);
    else
        snprintf(buf, size, "%.0fk", v / 1000);
}

#define NAME_WIDTH 10

/* Under an upstream of several endpoints, one line each: address, requests per second, share of
 * the interval's requests, connections leased and idle, health (and draining), under a header of
 * their own. 72 columns at most for an IPv4 address; a longer one pushes its line past them rather
 * than being cut. */
static void render_endpoint_lines(const tt_top_row_t *r, tt_buf_t *out)
{
    size_t n = r->sample->neps;
    tt_top_endpoint_row_t *eps = tt_calloc(n, sizeof(*eps));
    tt_top_endpoint_rows(r, eps);
    tt_buf_appendf(out, "     %-21s %7s %6s %4s %4s  %s\n", "ENDPOINT", "REQ/S", "SHARE", "ACT",
                   "IDLE", "HEALTH");
    for (size_t i = 0; i < n && i < TT_TOP_MAX_ENDPOINT_LINES; i++) {
        const tt_top_endpoint_t *e = eps[i].ep;
        char req[16], share[16];
        fmt_rate(req, sizeof(req), eps[i].req_s);
        if (eps[i].share_pct < 0)
            snprintf(share, sizeof(share), "-");
        else
            snprintf(share, sizeof(share), "%.1f%%", eps[i].share_pct);
        uint64_t idle = e->idle < e->connections ? e->idle : e->connections;
        tt_buf_appendf(out, "     %-21s %7s %6s %4" PRIu64 " %4" PRIu64 "  %s%s\n", e->address, req,
                       share, e->connections - idle, idle, e->health,
                       e->draining ? ", draining" : "");
    }
    if (n > TT_TOP_MAX_ENDPOINT_LINES)
        tt_buf_appendf(out, "     ... %zu more endpoints (tether top --json lists all)\n",
                       n - TT_TOP_MAX_ENDPOINT_LINES);
    free(eps);
}

void tt_top_render_table(const char *admin, const tt_top_sample_t *prev, const tt_top_sample_t *cur,
                         tt_buf_t *out)
{
    tt_top_row_t *rows = tt_calloc(cur->nups ? cur->nups : 1, sizeof(*rows));
    double dt = tt_top_rows(prev, cur, rows);
    int valid_prev = prev != NULL && prev->uptime_s < cur->uptime_s;
    double acc = (double)delta(cur->accepted, valid_prev ? prev->accepted : 0) / dt;
    char up[32];
    fmt_age(up, sizeof(up), cur->uptime_s);
    tt_buf_appendf(out, "tetherd %s at %s  up %s  %s  (rates over %.1fs)\n", cur->version, admin,
                   up, cur->ready ? "ready" : "NOT READY", dt);
    tt_buf_appendf(out, "clients: %.1f new connections/s, %" PRIu64 " open\n", acc, cur->active);
    /* 79 columns (the P50/P99/AGE/SKMEM figures are at most 6 characters); the endpoint, of any
     * length, goes on a line of its own under its row. */
    tt_buf_appendf(out, "%-*s %7s %6s %6s %4s %4s %5s %6s %6s %4s %5s %5s\n", NAME_WIDTH,
                   "UPSTREAM", "REQ/S", "CONN/S", "REUSE%", "ACT", "IDLE", "AGE", "P50", "P99",
                   "QUE", "5XX/S", "SKMEM");
    for (size_t i = 0; i < cur->nups; i++) {
        const tt_top_row_t *r = &rows[i];
        char reuse[16], age[16], p50[16], p99[16], mem[16], req[16], conn[16], err[16];
        if (r->reuse_pct < 0)
            snprintf(reuse, sizeof(reuse), "-");
        else
            snprintf(reuse, sizeof(reuse), "%.1f", r->reuse_pct);
        fmt_age(age, sizeof(age), r->mean_age_s);
        fmt_ms(p50, sizeof(p50), r->p50_ms);
        fmt_ms(p99, sizeof(p99), r->p99_ms);
        fmt_bytes(mem, sizeof(mem), r->socket_mem);
        fmt_rate(req, sizeof(req), r->req_s);
        fmt_rate(conn, sizeof(conn), r->conn_s);
        fmt_rate(err, sizeof(err), r->err_s);
        tt_buf_appendf(
            out, "%-*.*s %7s %6s %6s %4" PRIu64 " %4" PRIu64 " %5s %6s %6s %4" PRIu64 " %5s %5s\n",
            NAME_WIDTH, NAME_WIDTH, r->name, req, conn, reuse, r->active + r->connecting, r->idle,
            age, p50, p99, r->queue, err, mem);
        /* The full name where the row had to cut it. */
        int cut = strlen(r->name) > NAME_WIDTH;
        tt_buf_appendf(out, "  %s%s-> %s", cut ? r->name : "", cut ? " " : "", r->endpoint);
        /* UP/DOWN: how many endpoints are up, and the first that is not. */
        if (r->sample->neps > 0)
            tt_buf_appendf(out, "  UP %" PRIu64 "/%zu%s%s", r->sample->nup, r->sample->neps,
                           r->sample->not_up[0] ? ", " : "", r->sample->not_up);
        tt_buf_append(out, "\n", 1);
        if (r->sample->neps > 1)
            render_endpoint_lines(r, out);
    }
    if (cur->nups == 0)
        tt_buf_appendf(out, "(no upstreams configured)\n");
    free(rows);
}

static void put_opt(tt_buf_t *out, const char *key, double v, int comma)
{
    tt_json_put_str(out, key);
    if (v < 0)
        tt_buf_append(out, ":null", 5);
    else {
        tt_buf_append(out, ":", 1);
        tt_json_put_num(out, v, 6);
    }
    if (comma)
        tt_buf_append(out, ",", 1);
}

static void render_endpoints_json(const tt_top_row_t *r, tt_buf_t *out)
{
    size_t n = r->sample->neps;
    tt_top_endpoint_row_t *eps = tt_calloc(n ? n : 1, sizeof(*eps));
    tt_top_endpoint_rows(r, eps);
    tt_buf_append(out, "\"endpoints\":[", 13);
    for (size_t i = 0; i < n; i++) {
        const tt_top_endpoint_t *e = eps[i].ep;
        tt_buf_append(out, i > 0 ? ",{" : "{", i > 0 ? 2 : 1);
        tt_buf_append(out, "\"address\":", 10);
        tt_json_put_str(out, e->address);
        tt_buf_append(out, ",\"health\":", 10);
        tt_json_put_str(out, e->health);
        tt_buf_appendf(out, ",\"state\":\"%s\",", e->draining ? "draining" : "active");
        put_opt(out, "requests_per_second", eps[i].req_s, 1);
        put_opt(out, "share_percent", eps[i].share_pct, 1);
        tt_buf_appendf(
            out, "\"connections\":%" PRIu64 ",\"idle\":%" PRIu64 ",\"outstanding\":%" PRIu64 "}",
            e->connections, e->idle, e->outstanding);
    }
    tt_buf_append(out, "]", 1);
    free(eps);
}

void tt_top_render_json(const char *admin, const tt_top_sample_t *prev, const tt_top_sample_t *cur,
                        tt_buf_t *out)
{
    tt_top_row_t *rows = tt_calloc(cur->nups ? cur->nups : 1, sizeof(*rows));
    double dt = tt_top_rows(prev, cur, rows);
    int valid_prev = prev != NULL && prev->uptime_s < cur->uptime_s;
    tt_buf_append(out, "{\"admin\":", 9);
    tt_json_put_str(out, admin);
    tt_buf_append(out, ",\"version\":", 11);
    tt_json_put_str(out, cur->version);
    tt_buf_appendf(out, ",\"ready\":%s,", cur->ready ? "true" : "false");
    put_opt(out, "uptime_seconds", cur->uptime_s, 1);
    put_opt(out, "interval_seconds", dt, 1);
    tt_buf_append(out, "\"downstream\":{", 14);
    put_opt(out, "accepted_per_second",
            (double)delta(cur->accepted, valid_prev ? prev->accepted : 0) / dt, 1);
    tt_buf_appendf(out, "\"active\":%" PRIu64 "},\"upstreams\":[", cur->active);
    for (size_t i = 0; i < cur->nups; i++) {
        const tt_top_row_t *r = &rows[i];
        tt_buf_append(out, i > 0 ? ",{" : "{", i > 0 ? 2 : 1);
        tt_buf_append(out, "\"name\":", 7);
        tt_json_put_str(out, r->name);
        tt_buf_append(out, ",\"endpoint\":", 12);
        tt_json_put_str(out, r->endpoint);
        tt_buf_append(out, ",", 1);
        put_opt(out, "requests_per_second", r->req_s, 1);
        put_opt(out, "new_connections_per_second", r->conn_s, 1);
        put_opt(out, "reuse_percent", r->reuse_pct, 1);
        tt_buf_appendf(out,
                       "\"active\":%" PRIu64 ",\"connecting\":%" PRIu64 ",\"idle\":%" PRIu64
                       ",\"queue\":%" PRIu64 ",\"socket_memory_bytes\":%" PRIu64 ",",
                       r->active, r->connecting, r->idle, r->queue, r->socket_mem);
        put_opt(out, "mean_age_seconds", r->mean_age_s, 1);
        put_opt(out, "p50_ms", r->p50_ms, 1);
        put_opt(out, "p99_ms", r->p99_ms, 1);
        put_opt(out, "errors_per_second", r->err_s, 1);
        render_endpoints_json(r, out);
        tt_buf_append(out, "}", 1);
    }
    tt_buf_append(out, "]}\n", 3);
    free(rows);
}

/* ---- fetching ------------------------------------------------------------------------------- */

typedef struct {
    tt_buf_t *body;
    int done;
    int too_big;
} fetch_t;

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    fetch_t *f = p->data;
    if (tt_buf_len(f->body) + len > BODY_LIMIT) {
        f->too_big = 1;
        return -1;
    }
    tt_buf_append(f->body, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    fetch_t *f = p->data;
    f->done = 1;
    return HPE_PAUSED;
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
    return tt_sock_wait(fd, events, deadline, -1);
}

static int connect_to(const tt_addr_t *addr, const char *text, char *err, size_t errlen)
{
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int rc = connect(fd, (const struct sockaddr *)&addr->ss, addr->len);
    if (rc < 0 && errno == EINPROGRESS) {
        if (wait_fd(fd, POLLOUT, tt_clock_monotonic_ms() + CONNECT_TIMEOUT_MS) < 0) {
            snprintf(err, errlen, "no answer from %s within %dms", text, CONNECT_TIMEOUT_MS);
            close(fd);
            return -1;
        }
        socklen_t len = sizeof(rc);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &rc, &len) < 0)
            rc = errno;
        errno = rc;
        rc = rc == 0 ? 0 : -1;
    }
    if (rc < 0) {
        if (errno == ECONNREFUSED)
            snprintf(err, errlen,
                     "cannot reach tetherd at %s: connection refused (is tetherd running, with "
                     "admin = %s in its [tether] section?)",
                     text, text);
        else
            snprintf(err, errlen, "cannot reach tetherd at %s: %s", text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int tt_top_fetch(const tt_addr_t *addr, const char *path, tt_buf_t *body, char *err, size_t errlen)
{
    return tt_admin_request(addr, "GET", path, body, err, errlen);
}

int tt_admin_request(const tt_addr_t *addr, const char *method, const char *path, tt_buf_t *body,
                     char *err, size_t errlen)
{
    char text[TT_ADDR_STRLEN];
    tt_addr_format(addr, text);
    int fd = connect_to(addr, text, err, errlen);
    if (fd < 0)
        return -1;
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tether\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n",
                     method, path, text);
    uint64_t deadline = tt_clock_monotonic_ms() + FETCH_TIMEOUT_MS;
    for (int off = 0; off < n;) {
        ssize_t w = send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w > 0) {
            off += (int)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EINTR) && wait_fd(fd, POLLOUT, deadline) == 0)
            continue;
        snprintf(err, errlen, "%s: sending the request: %s", text, strerror(errno));
        close(fd);
        return -1;
    }
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    fetch_t f = {.body = body};
    parser.data = &f;
    char buf[16384];
    int rc = -1;
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN) {
            if (wait_fd(fd, POLLIN, deadline) == 0)
                continue;
            snprintf(err, errlen, "%s: no complete answer within %dms", text, FETCH_TIMEOUT_MS);
            break;
        }
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", text, strerror(errno));
            break;
        }
        llhttp_errno_t e =
            r == 0 ? llhttp_finish(&parser) : llhttp_execute(&parser, buf, (size_t)r);
        if (f.done) {
            rc = 0;
            break;
        }
        if (f.too_big) {
            snprintf(err, errlen, "%s: answer larger than %u bytes", text, BODY_LIMIT);
            break;
        }
        if (e != HPE_OK || r == 0) {
            snprintf(err, errlen, "%s: not an HTTP answer (%s)", text,
                     r == 0 ? "connection closed early" : llhttp_errno_name(e));
            break;
        }
    }
    int status = llhttp_get_status_code(&parser);
    if (rc == 0 && (status < 200 || status > 299)) {
        snprintf(err, errlen, "%s%s: HTTP %d: %.*s", text, path, status,
                 (int)TT_MIN(tt_buf_len(body), 400), tt_buf_rptr(body));
        rc = -1;
    }
    close(fd);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------------
 */

int tt_top_parse_admin(const char *s, tt_addr_t *out)
{
    if (strncmp(s, "http://", 7) == 0)
        s += 7;
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", s);
    size_t n = strlen(tmp);
    if (n > 0 && tmp[n - 1] == '/')
        tmp[n - 1] = '\0';
    if (tt_addr_parse(tmp, out) == 0)
        return 0;
    /* A name ("localhost:9901"): resolve it. */
    char *colon = strrchr(tmp, ':');
    if (colon == NULL || colon == tmp)
        return -1;
    *colon = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
        return -1;
    const char *why;
    return tt_addr_resolve(tmp, (int)port, out, 1, &why) == 1 ? 0 : -1;
}

static int sample(const tt_addr_t *addr, tt_top_sample_t *s, char *err, size_t errlen)
{
    tt_buf_t body = {.data = tt_malloc(65536), .cap = 65536};
    int rc = tt_top_fetch(addr, "/stats", &body, err, errlen);
    if (rc == 0)
        rc = tt_top_sample_parse(tt_buf_rptr(&body), tt_buf_len(&body), s, err, errlen);
    free(body.data);
    return rc;
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void emit(const tt_top_opts_t *o, const tt_top_sample_t *prev, const tt_top_sample_t *cur,
                 int clear, FILE *out)
{
    tt_buf_t b = {.data = tt_malloc(8192), .cap = 8192};
    if (clear)
        tt_buf_append(&b, "\033[H\033[2J", 7);
    if (o->json)
        tt_top_render_json(o->admin, prev, cur, &b);
    else
        tt_top_render_table(o->admin, prev, cur, &b);
    fwrite(b.data, 1, tt_buf_len(&b), out);
    fflush(out);
    free(b.data);
}

int tt_top_run(const tt_top_opts_t *o, FILE *out, FILE *errf)
{
    tt_addr_t addr;
    if (tt_top_parse_admin(o->admin, &addr) < 0) {
        fprintf(errf, "tether top: --admin %s: expected ADDR:PORT (for example %s)\n", o->admin,
                TT_TOP_DEFAULT_ADMIN);
        return 2;
    }
    if (!(o->interval_s > 0 && o->interval_s <= 3600)) {
        fprintf(errf, "tether top: --interval: expected a duration above 0 and up to 1h "
                      "(examples: 1, 0.5, 500ms, 2s, 1m)\n");
        return 2;
    }
    char err[512];
    tt_top_sample_t prev, cur;
    if (sample(&addr, &prev, err, sizeof(err)) < 0) {
        fprintf(errf, "tether top: %s\n", err);
        return 1;
    }
    int live = !o->once;
    int clear = live && !o->json && isatty(fileno(out));
    if (live && !o->json) /* something on screen at once: rates since tetherd started */
        emit(o, NULL, &prev, clear, out);
    for (;;) {
        sleep_s(o->interval_s);
        if (sample(&addr, &cur, err, sizeof(err)) < 0) {
            if (!live) {
                fprintf(errf, "tether top: %s\n", err);
                tt_top_sample_free(&prev);
                return 1;
            }
            /* Keep watching: tetherd may be restarting. */
            fprintf(out, "%s%s: %s (retrying)\n", clear ? "\033[H\033[2J" : "", "tether top", err);
            fflush(out);
            continue;
        }
        emit(o, &prev, &cur, clear, out);
        tt_top_sample_free(&prev);
        prev = cur;
        if (!live)
            break;
    }
    tt_top_sample_free(&prev);
    return 0;
}
