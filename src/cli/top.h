/* `tether top`: a live view of a running tetherd, read from its admin endpoint's /stats.
 *
 * Two /stats samples an interval apart give the rates (requests, new connections, errors per
 * second), the reuse percentage and the latency percentiles *of that interval* (from the
 * difference of the fine histogram buckets /stats carries); gauges (active, idle, queue, mean age)
 * come from the newer sample. The pieces are separate so tests can drive them without a terminal
 * or a socket: fetch, parse a sample, compute rows, render. Everything here runs in the `tether`
 * command, never in tetherd. */
#ifndef TT_CLI_TOP_H
#define TT_CLI_TOP_H

#include "core/addr.h"
#include "core/buf.h"
#include "core/histogram.h"

#include <stdint.h>
#include <stdio.h>

#define TT_TOP_DEFAULT_ADMIN "127.0.0.1:9901"

/* One endpoint of an upstream in one /stats sample. */
typedef struct {
    char address[64];
    char health[16]; /* up, down, ejected, half_open */
    int draining;
    uint64_t requests; /* cumulative: the requests the balancers sent to it */
    uint64_t connections, idle, outstanding;
} tt_top_endpoint_t;

/* One upstream in one /stats sample. */
typedef struct {
    char name[128];
    char endpoint[64];
    uint64_t requests, sent, reused, opened, errors; /* cumulative; errors: 5xx responses */
    uint64_t active, idle, connecting, queue, mean_age_ms, socket_mem;
    tt_hist_t duration_us; /* rebuilt from the non-empty buckets /stats lists */
    tt_top_endpoint_t *eps;
    size_t neps;
    uint64_t nup;    /* endpoints whose health is up */
    char not_up[96]; /* the first that is not: "127.0.0.2:8080 down" ("" if none) */
} tt_top_upstream_t;

typedef struct {
    char version[32];
    int ready;
    double uptime_s;
    uint64_t accepted, active;
    size_t nups;
    tt_top_upstream_t *ups;
} tt_top_sample_t;

/* Parses a /stats document into s (which the caller frees with tt_top_sample_free). Returns 0,
 * or -1 with a reason in err. */
int tt_top_sample_parse(const char *json, size_t len, tt_top_sample_t *s, char *err, size_t errlen);
void tt_top_sample_free(tt_top_sample_t *s);

/* One row of the view. Rates are per second over the interval between two samples; -1 marks a
 * figure that does not exist (no requests in the interval: no reuse % or percentile; no live
 * connection: no mean age). */
typedef struct {
    const char *name, *endpoint;
    const tt_top_upstream_t *sample, *prev; /* now, and the previous sample (never NULL) */
    double dt;                              /* the interval, seconds */
    double req_s, conn_s, err_s;
    double reuse_pct;
    double p50_ms, p99_ms;
    uint64_t active, idle, connecting, queue, socket_mem;
    double mean_age_s;
} tt_top_row_t;

/* Rows for cur, with rates against prev (matched by upstream name; an upstream absent from prev
 * counts from zero). rows must hold cur->nups entries. Returns the interval in seconds. */
double tt_top_rows(const tt_top_sample_t *prev, const tt_top_sample_t *cur, tt_top_row_t *rows);

/* One endpoint's figures over the interval of its upstream's row: requests per second and its
 * share of the upstream's requests in percent (-1: no request in the interval). */
typedef struct {
    const tt_top_endpoint_t *ep;
    double req_s, share_pct;
} tt_top_endpoint_row_t;

/* Fills out[row->sample->neps] (matched to the previous sample by address). */
void tt_top_endpoint_rows(const tt_top_row_t *row, tt_top_endpoint_row_t *out);

/* Appends the table to out: a header, one line per upstream, then its endpoint's name and health
 * and, with more than one endpoint, a line per endpoint (the first TT_TOP_MAX_ENDPOINT_LINES). */
#define TT_TOP_MAX_ENDPOINT_LINES 8
void tt_top_render_table(const char *admin, const tt_top_sample_t *prev, const tt_top_sample_t *cur,
                         tt_buf_t *out);

/* Appends the same as one JSON object. */
void tt_top_render_json(const char *admin, const tt_top_sample_t *prev, const tt_top_sample_t *cur,
                        tt_buf_t *out);

/* GETs path from the admin endpoint at addr (Connection: close, bounded time and size) and
 * appends the body of a 200 response to body. Returns 0, or -1 with a message for a human in err
 * (connection refused: "is tetherd running with admin = ...?"). */
int tt_top_fetch(const tt_addr_t *addr, const char *path, tt_buf_t *body, char *err, size_t errlen);

/* The same with another method (POST /reload for `tether reload`); any 2xx answer is success. */
int tt_admin_request(const tt_addr_t *addr, const char *method, const char *path, tt_buf_t *body,
                     char *err, size_t errlen);

/* Parses an admin address as `--admin` takes it: ADDR:PORT, [v6]:PORT, NAME:PORT, optionally
 * with http:// and a trailing '/'. Returns 0, or -1 if malformed or unresolvable. */
int tt_top_parse_admin(const char *s, tt_addr_t *out);

typedef struct {
    const char *admin; /* "ADDR:PORT" as given */
    int once;          /* one snapshot (two samples interval apart) and exit */
    int json;
    double interval_s;
} tt_top_opts_t;

/* Runs `tether top`. Returns the exit status: 0, 1 if tetherd cannot be reached or answers
 * badly, 2 for a bad argument. Output goes to out, messages to err. */
int tt_top_run(const tt_top_opts_t *o, FILE *out, FILE *err);

#endif
