/* What `tether churn` prints: the ranked pairs as a table or JSON, the suggested tetherd
 * configuration, and the before/after comparison of two saved runs.
 *
 * A report is plain data (strings and numbers), built from a tally or loaded back from the JSON
 * that --save wrote, so --compare works on files from another host or an older run. */
#ifndef TT_CHURN_REPORT_H
#define TT_CHURN_REPORT_H

#include "churn/pairs.h"
#include "core/buf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    tt_churn_dir_t dir;
    char process[TT_PROCS_COMM_LEN];
    int pid;
    tt_churn_addr_t local, remote;
    double opens_per_s, closes_per_s, peak_opens_per_s, share_pct;
    uint64_t opens, closes, failed, lifetimes;
    double p50_ms, p90_ms, max_ms, mean_ms;
    uint32_t established, peak_established, time_wait, close_wait, syn_sent;
    double mean_established;
    uint64_t mem_bytes, retransmits;
    double mean_age_s; /* -1: nothing was open in the window */
    int age_at_least;  /* some connections were open for the whole window */
} tt_churn_row_t;

typedef struct {
    tt_churn_source_t source;
    double seconds;
    uint64_t total_opens, lost_events;
    char netns[64];
    tt_churn_row_t *rows; /* ranked by opens/s */
    size_t nrows;
} tt_churn_report_t;

typedef struct {
    int port; /* 0: any */
    int pid;  /* 0: any */
} tt_churn_filter_t;

/* Builds the ranked rows of a finished tally (pairs without any activity are left out). */
void tt_churn_report_build(const tt_churn_t *c, const tt_churn_filter_t *f, const char *netns,
                           tt_churn_report_t *r);
void tt_churn_report_free(tt_churn_report_t *r);

/* The endpoint of a row (remote for out, the listener for in). */
const tt_churn_addr_t *tt_churn_row_endpoint(const tt_churn_row_t *row);

/* The ranked table, top rows at most (0: all), fitting 80 columns. */
void tt_churn_report_table(const tt_churn_report_t *r, size_t top, tt_buf_t *out);

/* The JSON document (--json, --save): every row when top is 0; suggest may be NULL. */
void tt_churn_report_json(const tt_churn_report_t *r, size_t top, const char *suggest,
                          tt_buf_t *out);

/* The [upstream ...] sections for the top pairs that churn (at least one open per second), with
 * the expected effect as comments. Appends nothing when no pair churns. */
void tt_churn_suggest(const tt_churn_report_t *r, size_t top, tt_buf_t *out);

/* Loads a report written by tt_churn_report_json. Returns 0 or -1 with a reason in err. */
int tt_churn_report_load(const char *json, size_t len, tt_churn_report_t *r, char *err,
                         size_t errlen);

/* The before/after table (or JSON) of the mission's figures per endpoint: churn (opens/s),
 * mean connection age, socket memory, TIME_WAIT, CLOSE_WAIT, open connections. Endpoints are
 * matched by direction and address whatever the process (tetherd replaces the client on the
 * wire); the top ones of `before` first, then ones that are new in `after`. */
void tt_churn_compare(const tt_churn_report_t *before, const tt_churn_report_t *after, size_t top,
                      int json, tt_buf_t *out);

#endif
