#include "churn/report.h"

#include "core/invariant.h"
#include "core/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SUGGEST_MIN_OPENS_PER_S 1.0
#define SUGGEST_FIRST_PORT      9001

/* ceil() for the small non-negative values here, without linking libm. */
static long ceil_pos(double v)
{
    long n = (long)v;
    return (double)n < v ? n + 1 : n;
}

static const char *source_name(tt_churn_source_t s)
{
    return s == TT_CHURN_SOURCE_TRACE ? "trace" : "sample";
}

const tt_churn_addr_t *tt_churn_row_endpoint(const tt_churn_row_t *row)
{
    return row->dir == TT_CHURN_OUT ? &row->remote : &row->local;
}

static int row_rank_cmp(const void *a, const void *b)
{
    const tt_churn_row_t *x = a, *y = b;
    if (x->opens_per_s != y->opens_per_s)
        return x->opens_per_s < y->opens_per_s ? 1 : -1;
    if (x->dir != y->dir)
        return x->dir == TT_CHURN_OUT ? -1 : 1;
    if (x->established != y->established)
        return x->established < y->established ? 1 : -1;
    return x->time_wait < y->time_wait ? 1 : x->time_wait > y->time_wait ? -1 : 0;
}

static int pair_selected(const tt_churn_pair_t *p, const tt_churn_filter_t *f)
{
    if (f && f->port && p->remote.port != f->port && p->local.port != f->port)
        return 0;
    if (f && f->pid && p->pid != f->pid)
        return 0;
    return p->opens || p->closes || p->established || p->time_wait || p->close_wait || p->syn_sent;
}

void tt_churn_report_build(const tt_churn_t *c, const tt_churn_filter_t *f, const char *netns,
                           tt_churn_report_t *r)
{
    memset(r, 0, sizeof(*r));
    r->source = c->source;
    r->seconds = (double)(c->end_ns - c->start_ns) / 1e9;
    if (r->seconds <= 0)
        r->seconds = 1e-3;
    r->total_opens = tt_churn_total_opens(c);
    r->lost_events = c->lost_events;
    snprintf(r->netns, sizeof(r->netns), "%s", netns ? netns : "");
    r->rows = tt_calloc(c->npairs ? c->npairs : 1, sizeof(*r->rows));
    for (uint32_t i = 0; i < c->npairs; i++) {
        const tt_churn_pair_t *p = &c->pairs[i];
        if (!pair_selected(p, f))
            continue;
        tt_churn_row_t *row = &r->rows[r->nrows++];
        row->dir = p->dir;
        snprintf(row->process, sizeof(row->process), "%s", p->process);
        row->pid = p->pid;
        row->local = p->local;
        row->remote = p->remote;
        row->opens = p->opens;
        row->closes = p->closes;
        row->failed = p->failed;
        row->opens_per_s = (double)p->opens / r->seconds;
        row->closes_per_s = (double)p->closes / r->seconds;
        for (unsigned s = 0; s < c->window_s; s++)
            row->peak_opens_per_s = TT_MAX(row->peak_opens_per_s, (double)p->opens_per_sec[s]);
        if (row->peak_opens_per_s < row->opens_per_s)
            row->peak_opens_per_s = row->opens_per_s;
        row->share_pct = r->total_opens ? 100.0 * (double)p->opens / (double)r->total_opens : 0;
        row->lifetimes = p->lifetime_us.count;
        row->p50_ms = (double)tt_hist_quantile(&p->lifetime_us, 0.5) / 1000.0;
        row->p90_ms = (double)tt_hist_quantile(&p->lifetime_us, 0.9) / 1000.0;
        row->max_ms = (double)p->lifetime_us.max / 1000.0;
        row->mean_ms = p->lifetime_us.count
                           ? (double)p->lifetime_us.sum / (double)p->lifetime_us.count / 1000.0
                           : 0;
        row->established = p->established;
        row->peak_established = p->peak_established;
        row->mean_established = c->nsnap ? (double)p->established_sum / c->nsnap : 0;
        row->time_wait = p->time_wait;
        row->close_wait = p->close_wait;
        row->syn_sent = p->syn_sent;
        row->mem_bytes = p->mem_bytes;
        row->retransmits = p->retransmits;
        uint64_t n = p->lifetime_us.count + p->open_count;
        row->mean_age_s =
            n ? ((double)p->lifetime_us.sum / 1e6 + (double)p->open_age_sum_ms / 1e3) / (double)n
              : -1;
        row->age_at_least = p->open_preexisting > 0;
    }
    qsort(r->rows, r->nrows, sizeof(*r->rows), row_rank_cmp);
}

void tt_churn_report_free(tt_churn_report_t *r)
{
    free(r->rows);
    memset(r, 0, sizeof(*r));
}

/* --- table ----------------------------------------------------------------------------------- */

static const char *human_bytes(uint64_t v, char *out, size_t len)
{
    if (v < 10240)
        snprintf(out, len, "%lluB", (unsigned long long)v);
    else if (v < 10ULL << 20)
        snprintf(out, len, "%.0fK", (double)v / 1024);
    else
        snprintf(out, len, "%.0fM", (double)v / (1 << 20));
    return out;
}

static const char *human_ms(double ms, char *out, size_t len)
{
    if (ms < 10)
        snprintf(out, len, "%.1fms", ms);
    else if (ms < 10000)
        snprintf(out, len, "%.0fms", ms);
    else
        snprintf(out, len, "%.0fs", ms / 1000);
    return out;
}

static void source_line(const tt_churn_report_t *r, tt_buf_t *out)
{
    tt_buf_appendf(out, "tether churn: %.1f s, %llu connections opened\nsource: %s%s\n", r->seconds,
                   (unsigned long long)r->total_opens, source_name(r->source),
                   r->source == TT_CHURN_SOURCE_TRACE
                       ? " (tracepoint sock:inet_sock_set_state: exact)"
                       : " (sock_diag each second: opens and lifetimes estimated)");
    if (r->netns[0])
        tt_buf_appendf(out, "network namespace: %s\n", r->netns);
    if (r->lost_events)
        tt_buf_appendf(out,
                       "warning: the kernel dropped %llu trace events (buffer full); opens are "
                       "undercounted\n",
                       (unsigned long long)r->lost_events);
}

void tt_churn_report_table(const tt_churn_report_t *r, size_t top, tt_buf_t *out)
{
    source_line(r, out);
    if (!r->nrows) {
        tt_buf_appendf(out, "no TCP connections seen\n");
        return;
    }
    size_t n = top && top < r->nrows ? top : r->nrows;
    tt_buf_appendf(out, "\n%-3s %-3s %-22s %-25s %8s %8s %5s\n", "#", "DIR", "PROCESS[PID]",
                   "REMOTE / LISTENER", "OPENS/s", "CLOSES/s", "SHARE");
    tt_buf_appendf(out, "    %-26s %7s %9s %10s %7s %7s\n",
                   r->source == TT_CHURN_SOURCE_TRACE ? "lifetime p50/p90/max"
                                                      : "lifetime <= p50/p90/max",
                   "ESTAB", "TIME_WAIT", "CLOSE_WAIT", "SKMEM", "RETRANS");
    for (size_t i = 0; i < n; i++) {
        const tt_churn_row_t *row = &r->rows[i];
        char proc[64], ep[TT_CHURN_ADDR_STRLEN], a[16], b[16], c[16], mem[16], life[3 * 16 + 8];
        if (row->pid > 0)
            snprintf(proc, sizeof(proc), "%s[%d]", row->process, row->pid);
        else
            snprintf(proc, sizeof(proc), "%s", row->process);
        tt_churn_addr_str(tt_churn_row_endpoint(row), ep);
        if (row->lifetimes)
            snprintf(life, sizeof(life), "%s / %s / %s", human_ms(row->p50_ms, a, sizeof(a)),
                     human_ms(row->p90_ms, b, sizeof(b)), human_ms(row->max_ms, c, sizeof(c)));
        else
            snprintf(life, sizeof(life), "-");
        tt_buf_appendf(out, "%-3zu %-3s %-22.22s %-25.25s %8.1f %8.1f %4.0f%%\n", i + 1,
                       row->dir == TT_CHURN_OUT ? "out" : "in", proc, ep, row->opens_per_s,
                       row->closes_per_s, row->share_pct);
        tt_buf_appendf(out, "    %-26s %7u %9u %10u %7s %7llu\n", life, row->established,
                       row->time_wait, row->close_wait,
                       human_bytes(row->mem_bytes, mem, sizeof(mem)),
                       (unsigned long long)row->retransmits);
    }
    if (n < r->nrows)
        tt_buf_appendf(out, "(%zu more; --top 0 shows all)\n", r->nrows - n);
}

/* --- JSON ------------------------------------------------------------------------------------ */

static void put_key(tt_buf_t *b, const char *k)
{
    tt_json_put_str(b, k);
    tt_buf_append(b, ":", 1);
}

static void put_num(tt_buf_t *b, const char *k, double v, int comma)
{
    put_key(b, k);
    tt_json_put_num(b, v, 10);
    if (comma)
        tt_buf_append(b, ",", 1);
}

void tt_churn_report_json(const tt_churn_report_t *r, size_t top, const char *suggest,
                          tt_buf_t *out)
{
    tt_buf_appendf(out, "{\"source\":\"%s\",", source_name(r->source));
    put_num(out, "seconds", r->seconds, 1);
    put_num(out, "total_opens", (double)r->total_opens, 1);
    put_num(out, "lost_events", (double)r->lost_events, 1);
    put_key(out, "lifetimes");
    tt_json_put_str(out, r->source == TT_CHURN_SOURCE_TRACE ? "exact" : "upper bound");
    tt_buf_appendf(out, ",");
    if (r->netns[0]) {
        put_key(out, "netns");
        tt_json_put_str(out, r->netns);
        tt_buf_appendf(out, ",");
    }
    tt_buf_appendf(out, "\"pairs\":[");
    size_t n = top && top < r->nrows ? top : r->nrows;
    for (size_t i = 0; i < n; i++) {
        const tt_churn_row_t *row = &r->rows[i];
        char local[TT_CHURN_ADDR_STRLEN], remote[TT_CHURN_ADDR_STRLEN];
        tt_buf_appendf(out, "%s{\"direction\":\"%s\",", i ? "," : "",
                       row->dir == TT_CHURN_OUT ? "out" : "in");
        put_key(out, "process");
        tt_json_put_str(out, row->process);
        tt_buf_appendf(out, ",");
        put_num(out, "pid", row->pid, 1);
        put_key(out, "local");
        tt_json_put_str(out, tt_churn_addr_str(&row->local, local));
        tt_buf_appendf(out, ",");
        put_key(out, "remote");
        tt_json_put_str(out, tt_churn_addr_str(&row->remote, remote));
        tt_buf_appendf(out, ",");
        put_num(out, "opens_per_s", row->opens_per_s, 1);
        put_num(out, "closes_per_s", row->closes_per_s, 1);
        put_num(out, "peak_opens_per_s", row->peak_opens_per_s, 1);
        put_num(out, "opens", (double)row->opens, 1);
        put_num(out, "closes", (double)row->closes, 1);
        put_num(out, "failed_connects", (double)row->failed, 1);
        put_num(out, "share_pct", row->share_pct, 1);
        tt_buf_appendf(out, "\"lifetime_ms\":{");
        put_num(out, "p50", row->p50_ms, 1);
        put_num(out, "p90", row->p90_ms, 1);
        put_num(out, "max", row->max_ms, 1);
        put_num(out, "mean", row->mean_ms, 1);
        put_num(out, "count", (double)row->lifetimes, 0);
        tt_buf_appendf(out, "},");
        put_num(out, "established", row->established, 1);
        put_num(out, "peak_established", row->peak_established, 1);
        put_num(out, "mean_established", row->mean_established, 1);
        put_num(out, "time_wait", row->time_wait, 1);
        put_num(out, "close_wait", row->close_wait, 1);
        put_num(out, "syn_sent", row->syn_sent, 1);
        put_num(out, "socket_memory_bytes", (double)row->mem_bytes, 1);
        put_num(out, "retransmits", (double)row->retransmits, 1);
        if (row->mean_age_s >= 0)
            put_num(out, "mean_age_s", row->mean_age_s, 1);
        else
            tt_buf_appendf(out, "\"mean_age_s\":null,");
        tt_buf_appendf(out, "\"mean_age_at_least\":%s}", row->age_at_least ? "true" : "false");
    }
    tt_buf_appendf(out, "]");
    if (suggest) {
        tt_buf_appendf(out, ",");
        put_key(out, "suggest");
        tt_json_put_str(out, suggest);
    }
    tt_buf_appendf(out, "}\n");
}

static double num_or(const tt_json_t *v, const char *key, double def)
{
    return tt_json_num(tt_json_get(v, key), def);
}

int tt_churn_report_load(const char *json, size_t len, tt_churn_report_t *r, char *err,
                         size_t errlen)
{
    memset(r, 0, sizeof(*r));
    tt_json_t *root = tt_json_parse(json, len, err, errlen);
    if (!root)
        return -1;
    const tt_json_t *pairs = tt_json_get(root, "pairs");
    const char *source = tt_json_str(tt_json_get(root, "source"), NULL);
    if (!pairs || pairs->type != TT_JSON_ARRAY || !source) {
        snprintf(err, errlen, "not a tether churn --save file (no \"source\" and \"pairs\")");
        tt_json_free(root);
        return -1;
    }
    r->source = strcmp(source, "trace") == 0 ? TT_CHURN_SOURCE_TRACE : TT_CHURN_SOURCE_SAMPLE;
    r->seconds = num_or(root, "seconds", 1);
    r->total_opens = tt_json_u64(tt_json_get(root, "total_opens"), 0);
    r->lost_events = tt_json_u64(tt_json_get(root, "lost_events"), 0);
    snprintf(r->netns, sizeof(r->netns), "%s", tt_json_str(tt_json_get(root, "netns"), ""));
    r->rows = tt_calloc(pairs->len ? pairs->len : 1, sizeof(*r->rows));
    for (const tt_json_t *p = pairs->head; p; p = p->next) {
        tt_churn_row_t *row = &r->rows[r->nrows++];
        row->dir = strcmp(tt_json_str(tt_json_get(p, "direction"), "out"), "in") == 0
                       ? TT_CHURN_IN
                       : TT_CHURN_OUT;
        snprintf(row->process, sizeof(row->process), "%s",
                 tt_json_str(tt_json_get(p, "process"), "?"));
        row->pid = (int)num_or(p, "pid", 0);
        tt_churn_addr_parse(&row->local, tt_json_str(tt_json_get(p, "local"), "*"));
        tt_churn_addr_parse(&row->remote, tt_json_str(tt_json_get(p, "remote"), "*"));
        row->opens_per_s = num_or(p, "opens_per_s", 0);
        row->closes_per_s = num_or(p, "closes_per_s", 0);
        row->peak_opens_per_s = num_or(p, "peak_opens_per_s", row->opens_per_s);
        row->opens = (uint64_t)num_or(p, "opens", 0);
        row->closes = (uint64_t)num_or(p, "closes", 0);
        row->failed = (uint64_t)num_or(p, "failed_connects", 0);
        row->share_pct = num_or(p, "share_pct", 0);
        const tt_json_t *life = tt_json_get(p, "lifetime_ms");
        row->p50_ms = num_or(life, "p50", 0);
        row->p90_ms = num_or(life, "p90", 0);
        row->max_ms = num_or(life, "max", 0);
        row->mean_ms = num_or(life, "mean", 0);
        row->lifetimes = (uint64_t)num_or(life, "count", 0);
        row->established = (uint32_t)num_or(p, "established", 0);
        row->peak_established = (uint32_t)num_or(p, "peak_established", row->established);
        row->mean_established = num_or(p, "mean_established", row->established);
        row->time_wait = (uint32_t)num_or(p, "time_wait", 0);
        row->close_wait = (uint32_t)num_or(p, "close_wait", 0);
        row->syn_sent = (uint32_t)num_or(p, "syn_sent", 0);
        row->mem_bytes = (uint64_t)num_or(p, "socket_memory_bytes", 0);
        row->retransmits = (uint64_t)num_or(p, "retransmits", 0);
        row->mean_age_s = num_or(p, "mean_age_s", -1);
        row->age_at_least = tt_json_bool(tt_json_get(p, "mean_age_at_least"), 0);
    }
    tt_json_free(root);
    return 0;
}

/* --- suggestion ------------------------------------------------------------------------------ */

static int port_listened(const tt_churn_report_t *r, int port)
{
    for (size_t i = 0; i < r->nrows; i++)
        if (r->rows[i].dir == TT_CHURN_IN && r->rows[i].local.port == port)
            return 1;
    return 0;
}

static void upstream_name(const tt_churn_addr_t *ep, char *out, size_t len)
{
    char s[TT_CHURN_ADDR_STRLEN];
    tt_churn_addr_str(ep, s);
    size_t j = 0;
    if (ep->family == AF_INET6) /* "v6-" keeps the name from starting with the '-' of "::" */
        j = (size_t)snprintf(out, len, "v6-");
    for (const char *c = s; *c && j + 1 < len; c++) {
        if (*c == '[' || *c == ']')
            continue;
        out[j++] = *c == ':' ? (c == strrchr(s, ':') ? '_' : '-') : *c;
    }
    out[j] = '\0';
}

void tt_churn_suggest(const tt_churn_report_t *r, size_t top, tt_buf_t *out)
{
    size_t limit = top ? top : r->nrows, done = 0;
    int next_port = SUGGEST_FIRST_PORT;
    tt_churn_addr_t seen[64];
    size_t nseen = 0;
    for (size_t i = 0; i < r->nrows && done < limit && nseen < TT_ARRAY_SIZE(seen); i++) {
        const tt_churn_row_t *row = &r->rows[i];
        const tt_churn_addr_t *ep = tt_churn_row_endpoint(row);
        if (row->opens_per_s < SUGGEST_MIN_OPENS_PER_S)
            break; /* ranked: the rest churn even less */
        int dup = 0;
        for (size_t k = 0; k < nseen; k++)
            dup |= seen[k].port == ep->port &&
                   (tt_churn_addr_eq(&seen[k], ep) || tt_churn_addr_is_any(&seen[k]) ||
                    tt_churn_addr_is_any(ep));
        if (dup) /* loopback: the client's side and the server's side of one service */
            continue;
        seen[nseen++] = *ep;
        done++;

        /* Totals for this service, both sides when they are on this host. */
        double tw = 0, mem = 0, estab = 0;
        for (size_t k = 0; k < r->nrows; k++) {
            const tt_churn_addr_t *e2 = tt_churn_row_endpoint(&r->rows[k]);
            if (e2->port == ep->port && (tt_churn_addr_eq(e2, ep) || tt_churn_addr_is_any(e2) ||
                                         tt_churn_addr_is_any(ep))) {
                tw += r->rows[k].time_wait;
                mem += (double)r->rows[k].mem_bytes;
                estab += r->rows[k].established;
            }
        }
        /* Little's law: connections busy at once = arrival rate x time each is held. A pooled
         * connection is held for about what a whole short connection lived. */
        double hold_s = (row->lifetimes ? row->p90_ms
                                        : 1000.0 * row->mean_established /
                                              (row->opens_per_s ? row->opens_per_s : 1)) /
                        1000.0;
        double peak = TT_MAX(row->peak_opens_per_s * hold_s, (double)row->peak_established);
        double mean = row->opens_per_s * (row->lifetimes ? row->mean_ms / 1000.0 : hold_s);
        long max_conn = TT_MAX(4L, (long)ceil_pos(peak * 2.0));
        long max_idle = TT_MIN(max_conn, TT_MAX(2L, (long)ceil_pos(peak * 1.5)));
        long min_idle = TT_MIN(max_idle, TT_MAX(1L, (long)ceil_pos(mean)));
        while (port_listened(r, next_port))
            next_port++;

        char name[64], epstr[TT_CHURN_ADDR_STRLEN], memstr[16];
        tt_churn_addr_t url_ep = *ep;
        if (tt_churn_addr_is_any(&url_ep)) /* a local listener on every address */
            tt_churn_addr_parse(&url_ep, url_ep.family == AF_INET6 ? "[::1]:0" : "127.0.0.1:0"),
                url_ep.port = ep->port;
        upstream_name(&url_ep, name, sizeof(name));
        tt_churn_addr_str(&url_ep, epstr);
        int tls = ep->port == 443 || ep->port == 8443;
        tt_buf_appendf(out,
                       "; %s %s[%d] -> %s: %.1f new connections/s (peak %.0f/s), lifetime p90 "
                       "%.1f ms\n",
                       row->dir == TT_CHURN_OUT ? "outbound"
                                                : "inbound (run tetherd next to "
                                                  "its clients)",
                       row->process, row->pid, epstr, row->opens_per_s, row->peak_opens_per_s,
                       row->p90_ms);
        tt_buf_appendf(out,
                       "; expected with pooling (churn typically drops 80-95%%): about %.0f of "
                       "%.0f handshakes/s avoided,\n",
                       row->opens_per_s * 0.95, row->opens_per_s);
        tt_buf_appendf(out,
                       "; %.0f TIME_WAIT sockets now -> near 0, %.0f sockets now (%s of socket "
                       "memory) -> at most %ld pooled\n",
                       tw, tw + estab, human_bytes((uint64_t)mem, memstr, sizeof(memstr)),
                       max_conn);
        tt_buf_appendf(out, "[upstream %s]\n", name);
        tt_buf_appendf(out, "url = %s://%s\n", tls ? "https" : "http", epstr);
        tt_buf_appendf(out, "listen = 127.0.0.1:%d ; point the client here\n", next_port++);
        tt_buf_appendf(out, "max_connections = %ld ; peak %.1f busy at once (Little's law) x 2\n",
                       max_conn, peak);
        tt_buf_appendf(out, "max_idle = %ld\n", max_idle);
        tt_buf_appendf(out, "min_idle = %ld\n", min_idle);
        tt_buf_appendf(out, "idle_timeout = auto\n\n");
    }
}

/* --- compare --------------------------------------------------------------------------------- */

typedef struct {
    tt_churn_dir_t dir;
    tt_churn_addr_t ep;
    double opens_per_s, age_s, age_weight, mem, tw, cw, estab;
    int age_at_least, present;
} side_t;

static void side_of(const tt_churn_report_t *r, tt_churn_dir_t dir, const tt_churn_addr_t *ep,
                    side_t *s)
{
    memset(s, 0, sizeof(*s));
    s->dir = dir;
    s->ep = *ep;
    for (size_t i = 0; i < r->nrows; i++) {
        const tt_churn_row_t *row = &r->rows[i];
        if (row->dir != dir || !tt_churn_addr_eq(tt_churn_row_endpoint(row), ep))
            continue;
        s->present = 1;
        s->opens_per_s += row->opens_per_s;
        s->mem += (double)row->mem_bytes;
        s->tw += row->time_wait;
        s->cw += row->close_wait;
        s->estab += row->established;
        if (row->mean_age_s >= 0) {
            double w = (double)row->lifetimes + row->established + 1;
            s->age_s += row->mean_age_s * w;
            s->age_weight += w;
            s->age_at_least |= row->age_at_least;
        }
    }
    s->age_s = s->age_weight ? s->age_s / s->age_weight : -1;
}

static double change_pct(double before, double after)
{
    return before > 0 ? 100.0 * (after - before) / before : (after > 0 ? 100.0 : 0.0);
}

static void compare_row_json(tt_buf_t *out, const side_t *b, const side_t *a, int first)
{
    char ep[TT_CHURN_ADDR_STRLEN];
    tt_buf_appendf(out, "%s{\"direction\":\"%s\",\"endpoint\":", first ? "" : ",",
                   b->dir == TT_CHURN_OUT ? "out" : "in");
    tt_json_put_str(out, tt_churn_addr_str(&b->ep, ep));
    tt_buf_appendf(out, ",\"new\":%s", b->present ? "false" : "true");
    const side_t *sides[2] = {b, a};
    const char *names[2] = {"before", "after"};
    for (int i = 0; i < 2; i++) {
        tt_buf_appendf(out, ",\"%s\":{", names[i]);
        put_num(out, "opens_per_s", sides[i]->opens_per_s, 1);
        if (sides[i]->age_s >= 0)
            put_num(out, "mean_age_s", sides[i]->age_s, 1);
        else
            tt_buf_appendf(out, "\"mean_age_s\":null,");
        tt_buf_appendf(out, "\"mean_age_at_least\":%s,", sides[i]->age_at_least ? "true" : "false");
        put_num(out, "socket_memory_bytes", sides[i]->mem, 1);
        put_num(out, "time_wait", sides[i]->tw, 1);
        put_num(out, "close_wait", sides[i]->cw, 1);
        put_num(out, "established", sides[i]->estab, 0);
        tt_buf_appendf(out, "}");
    }
    tt_buf_appendf(out, ",\"change_pct\":{");
    put_num(out, "opens_per_s", change_pct(b->opens_per_s, a->opens_per_s), 1);
    put_num(out, "time_wait", change_pct(b->tw, a->tw), 1);
    put_num(out, "socket_memory_bytes", change_pct(b->mem, a->mem), 0);
    tt_buf_appendf(out, "}}");
}

static void age_str(const side_t *s, char *out, size_t len)
{
    if (s->age_s < 0)
        snprintf(out, len, "-");
    else if (s->age_s < 10)
        snprintf(out, len, "%s%.3f s", s->age_at_least ? ">=" : "", s->age_s);
    else
        snprintf(out, len, "%s%.0f s", s->age_at_least ? ">=" : "", s->age_s);
}

static void compare_row_table(tt_buf_t *out, const side_t *b, const side_t *a)
{
    char ep[TT_CHURN_ADDR_STRLEN], ab[24], aa[24], mb[16], ma[16];
    tt_buf_appendf(out, "\n%s %s%s\n", b->dir == TT_CHURN_OUT ? "to" : "listener",
                   tt_churn_addr_str(&b->ep, ep), b->present ? "" : " (new in AFTER)");
    tt_buf_appendf(out, "  %-22s %14s %14s %9s\n", "", "BEFORE", "AFTER", "CHANGE");
    tt_buf_appendf(out, "  %-22s %14.1f %14.1f %8.0f%%\n", "churn (opens/s)", b->opens_per_s,
                   a->opens_per_s, change_pct(b->opens_per_s, a->opens_per_s));
    age_str(b, ab, sizeof(ab));
    age_str(a, aa, sizeof(aa));
    tt_buf_appendf(out, "  %-22s %14s %14s %9s\n", "mean connection age", ab, aa, "");
    tt_buf_appendf(out, "  %-22s %14s %14s %8.0f%%\n", "socket memory",
                   human_bytes((uint64_t)b->mem, mb, sizeof(mb)),
                   human_bytes((uint64_t)a->mem, ma, sizeof(ma)), change_pct(b->mem, a->mem));
    tt_buf_appendf(out, "  %-22s %14.0f %14.0f %8.0f%%\n", "TIME_WAIT", b->tw, a->tw,
                   change_pct(b->tw, a->tw));
    tt_buf_appendf(out, "  %-22s %14.0f %14.0f\n", "CLOSE_WAIT", b->cw, a->cw);
    tt_buf_appendf(out, "  %-22s %14.0f %14.0f\n", "open (ESTABLISHED)", b->estab, a->estab);
}

static int listed(const tt_churn_addr_t *eps, const tt_churn_dir_t *dirs, size_t n,
                  tt_churn_dir_t dir, const tt_churn_addr_t *ep)
{
    for (size_t i = 0; i < n; i++)
        if (dirs[i] == dir && tt_churn_addr_eq(&eps[i], ep))
            return 1;
    return 0;
}

void tt_churn_compare(const tt_churn_report_t *before, const tt_churn_report_t *after, size_t top,
                      int json, tt_buf_t *out)
{
    size_t cap = before->nrows + after->nrows + 1, n = 0;
    tt_churn_addr_t *eps = tt_calloc(cap, sizeof(*eps));
    tt_churn_dir_t *dirs = tt_calloc(cap, sizeof(*dirs));
    size_t limit = top ? top : cap;
    /* Endpoints ranked in BEFORE (already sorted), then new ones from AFTER. */
    const tt_churn_report_t *reports[2] = {before, after};
    for (int r = 0; r < 2; r++) {
        size_t taken = 0;
        for (size_t i = 0; i < reports[r]->nrows && taken < limit; i++) {
            const tt_churn_row_t *row = &reports[r]->rows[i];
            const tt_churn_addr_t *ep = tt_churn_row_endpoint(row);
            if (listed(eps, dirs, n, row->dir, ep))
                continue;
            if (r == 1 && row->opens_per_s < SUGGEST_MIN_OPENS_PER_S)
                continue; /* only new churn is worth a row */
            eps[n] = *ep;
            dirs[n++] = row->dir;
            taken++;
        }
    }
    if (json) {
        tt_buf_appendf(out, "{\"before\":{\"source\":\"%s\",", source_name(before->source));
        put_num(out, "seconds", before->seconds, 0);
        tt_buf_appendf(out, "},\"after\":{\"source\":\"%s\",", source_name(after->source));
        put_num(out, "seconds", after->seconds, 0);
        tt_buf_appendf(out, "},\"pairs\":[");
    } else {
        tt_buf_appendf(out, "tether churn --compare: BEFORE %.1f s (%s), AFTER %.1f s (%s)\n",
                       before->seconds, source_name(before->source), after->seconds,
                       source_name(after->source));
    }
    for (size_t i = 0; i < n; i++) {
        side_t b, a;
        side_of(before, dirs[i], &eps[i], &b);
        side_of(after, dirs[i], &eps[i], &a);
        if (json)
            compare_row_json(out, &b, &a, i == 0);
        else
            compare_row_table(out, &b, &a);
    }
    if (json)
        tt_buf_appendf(out, "]}\n");
    free(eps);
    free(dirs);
}
