#include "churn/run.h"

#include "churn/pairs.h"
#include "churn/report.h"
#include "churn/sockdiag.h"
#include "churn/tracefs.h"
#include "core/invariant.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TRACE_BUFFER_KB 8192 /* per CPU: ~0.1 s of 100k events/s with room to spare */
#define DRAIN_INTERVAL  50   /* ms between reads of the ring buffers */
#define SNAPSHOT_EVERY  1000 /* ms */
#define ALL_STATES      0xffffffffU
#define NO_TW_STATES    (ALL_STATES & ~(1U << TT_TCP_TIME_WAIT))

/* ceil() for the small non-negative values here, without linking libm. */
static long ceil_pos(double v)
{
    long n = (long)v;
    return (double)n < v ? n + 1 : n;
}

typedef struct {
    tt_sockdiag_sock_t *v;
    size_t n, cap;
} sockvec_t;

static void collect_cb(const tt_sockdiag_sock_t *s, void *arg)
{
    sockvec_t *sv = arg;
    if (sv->n == sv->cap) {
        sv->cap = sv->cap ? sv->cap * 2 : 1024;
        sv->v = tt_realloc(sv->v, sizeof(*sv->v) * sv->cap);
    }
    sv->v[sv->n++] = *s;
}

static int snapshot(tt_churn_t *c, int diag, sockvec_t *sv, int with_tw, char *err, size_t errlen)
{
    uint32_t states = with_tw ? ALL_STATES : NO_TW_STATES;
    sv->n = 0;
    if (tt_sockdiag_dump(diag, AF_INET, states, collect_cb, sv, err, errlen) < 0 ||
        tt_sockdiag_dump(diag, AF_INET6, states, collect_cb, sv, err, errlen) < 0)
        return -1;
    tt_churn_on_snapshot(c, sv->v, sv->n, tt_tracefs_now_ns(), with_tw);
    return 0;
}

typedef struct {
    tt_trace_event_t *v;
    size_t n, cap;
} eventvec_t;

static void event_cb(const tt_trace_event_t *ev, void *arg)
{
    eventvec_t *ev_vec = arg;
    if (ev_vec->n == ev_vec->cap) {
        ev_vec->cap = ev_vec->cap ? ev_vec->cap * 2 : 4096;
        ev_vec->v = tt_realloc(ev_vec->v, sizeof(*ev_vec->v) * ev_vec->cap);
    }
    ev_vec->v[ev_vec->n++] = *ev;
}

static int event_ts_cmp(const void *a, const void *b)
{
    const tt_trace_event_t *x = a, *y = b;
    return x->ts_ns < y->ts_ns ? -1 : x->ts_ns > y->ts_ns;
}

/* Reads every CPU's buffer and applies the events in time order: a socket closed on one CPU and
 * its memory reused for a connect on another must be seen in that order. */
static int drain(tt_tracefs_t *trace, eventvec_t *evs, tt_churn_t *c, char *why, size_t len)
{
    evs->n = 0;
    if (tt_tracefs_drain(trace, event_cb, evs, why, len) < 0)
        return -1;
    if (evs->n > 1)
        qsort(evs->v, evs->n, sizeof(*evs->v), event_ts_cmp);
    for (size_t i = 0; i < evs->n; i++)
        tt_churn_on_event(c, &evs->v[i]);
    return 0;
}

static int write_file(const char *path, const tt_buf_t *b, FILE *err)
{
    FILE *f = fopen(path, "we");
    if (!f || fwrite(b->data + b->rpos, 1, b->wpos - b->rpos, f) != b->wpos - b->rpos) {
        fprintf(err, "tether churn: --save %s: %s\n", path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    if (fclose(f) != 0) {
        fprintf(err, "tether churn: --save %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void print_report(const tt_churn_t *c, const tt_churn_opts_t *o, FILE *out, FILE *err,
                         int *status)
{
    tt_churn_filter_t f = {.port = o->port, .pid = o->pid};
    tt_churn_report_t r;
    tt_churn_report_build(c, &f, o->netns, &r);
    tt_buf_t suggest = {.data = tt_malloc(4096), .cap = 4096};
    tt_buf_t text = {.data = tt_malloc(16384), .cap = 16384};
    if (o->suggest)
        tt_churn_suggest(&r, o->top, &suggest);
    tt_buf_append(&suggest, "", 1); /* NUL-terminate */
    if (o->json) {
        tt_churn_report_json(&r, o->top, o->suggest ? suggest.data : NULL, &text);
    } else {
        tt_churn_report_table(&r, o->top, &text);
        if (o->suggest)
            tt_buf_appendf(&text, "\n%s",
                           suggest.data[0] ? suggest.data
                                           : "; --suggest: no pair opens 1 connection/s or more\n");
    }
    fwrite(text.data, 1, text.wpos, out);
    fflush(out);
    if (o->save) {
        text.wpos = 0;
        tt_churn_report_json(&r, 0, o->suggest ? suggest.data : NULL, &text);
        if (write_file(o->save, &text, err) < 0)
            *status = 1;
    }
    free(text.data);
    free(suggest.data);
    tt_churn_report_free(&r);
}

int tt_churn_run(const tt_churn_opts_t *o, FILE *out, FILE *err)
{
    char why[512] = "";
    int diag = tt_sockdiag_open(o->netns, why, sizeof(why));
    if (diag < 0) {
        fprintf(err, "tether churn: %s\n", why);
        return 1;
    }
    uint64_t netns = tt_sockdiag_netns_inode(o->netns);
    tt_tracefs_t *trace = NULL;
    if (o->source != TT_CHURN_WANT_SAMPLE) {
        trace = tt_tracefs_open(TRACE_BUFFER_KB, why, sizeof(why));
        if (!trace && o->source == TT_CHURN_WANT_TRACE) {
            fprintf(err, "tether churn: --source trace: %s\n", why);
            close(diag);
            return 1;
        }
        if (!trace)
            fprintf(err,
                    "tether churn: no tracepoint (%s); sampling sock_diag instead: opens and "
                    "lifetimes are estimates\n",
                    why);
    }
    unsigned window = (unsigned)ceil_pos(o->seconds);
    tt_churn_t c;
    uint64_t start = tt_tracefs_now_ns();
    tt_churn_init(&c, trace ? TT_CHURN_SOURCE_TRACE : TT_CHURN_SOURCE_SAMPLE, netns, start, window);
    sockvec_t sv = {0};
    eventvec_t evs = {0};
    int status = 0, progress = isatty(fileno(err));
    /* The first dump comes before any event is read: it names the listeners and the connections
     * already open, so events can be attributed from the start. */
    if (snapshot(&c, diag, &sv, 1, why, sizeof(why)) < 0)
        goto fail;
    uint64_t deadline = start + (uint64_t)(o->seconds * 1e9);
    uint64_t next_snap = start + SNAPSHOT_EVERY * 1000000ULL;
    for (;;) {
        if (trace && drain(trace, &evs, &c, why, sizeof(why)) < 0)
            goto fail;
        uint64_t now = tt_tracefs_now_ns();
        if (now >= deadline || (o->stop && *o->stop))
            break;
        if (now >= next_snap) {
            if (snapshot(&c, diag, &sv, !trace, why, sizeof(why)) < 0)
                goto fail;
            next_snap += SNAPSHOT_EVERY * 1000000ULL;
            if (progress)
                fprintf(err, "\rsampling (%s): %.0f/%.0f s, %llu connections opened ",
                        trace ? "trace" : "sample", (double)(now - start) / 1e9, o->seconds,
                        (unsigned long long)tt_churn_total_opens(&c));
        }
        uint64_t wake = TT_MIN(deadline, trace ? now + DRAIN_INTERVAL * 1000000ULL : next_snap);
        wake = TT_MIN(wake, next_snap);
        poll(NULL, 0, (int)((wake - now + 999999) / 1000000));
    }
    if (snapshot(&c, diag, &sv, 1, why, sizeof(why)) < 0)
        goto fail;
    if (trace) {
        drain(trace, &evs, &c, why, sizeof(why));
        c.lost_events = tt_tracefs_lost(trace);
    }
    if (progress)
        fprintf(err, "\r%60s\r", "");
    tt_churn_finish(&c, tt_tracefs_now_ns());
    tt_tracefs_close(trace);
    trace = NULL;
    print_report(&c, o, out, err, &status);
    goto done;
fail:
    fprintf(err, "%stether churn: %s\n", progress ? "\n" : "", why);
    status = 1;
done:
    tt_tracefs_close(trace);
    tt_churn_free(&c);
    free(sv.v);
    free(evs.v);
    close(diag);
    return status;
}

static char *slurp(const char *path, size_t *len, FILE *err)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(err, "tether churn --compare: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 65536, n = 0, got;
    char *buf = tt_malloc(cap);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = tt_realloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

int tt_churn_compare_files(const char *before, const char *after, unsigned top, int json, FILE *out,
                           FILE *err)
{
    const char *paths[2] = {before, after};
    tt_churn_report_t r[2];
    int loaded = 0, status = 1;
    for (; loaded < 2; loaded++) {
        size_t len;
        char why[256];
        char *text = slurp(paths[loaded], &len, err);
        if (!text)
            break;
        int rc = tt_churn_report_load(text, len, &r[loaded], why, sizeof(why));
        free(text);
        if (rc < 0) {
            fprintf(err, "tether churn --compare: %s: %s\n", paths[loaded], why);
            break;
        }
    }
    if (loaded == 2) {
        tt_buf_t b = {.data = tt_malloc(16384), .cap = 16384};
        tt_churn_compare(&r[0], &r[1], top, json, &b);
        fwrite(b.data, 1, b.wpos, out);
        free(b.data);
        status = 0;
    }
    while (loaded-- > 0)
        tt_churn_report_free(&r[loaded]);
    return status;
}
