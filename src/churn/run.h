/* `tether churn` end to end: open the sources, sample for the window, print. The CLI parses the
 * flags into tt_churn_opts_t and calls tt_churn_run; everything else lives in src/churn/. */
#ifndef TT_CHURN_RUN_H
#define TT_CHURN_RUN_H

#include <signal.h>
#include <stdio.h>

typedef enum { TT_CHURN_WANT_AUTO, TT_CHURN_WANT_TRACE, TT_CHURN_WANT_SAMPLE } tt_churn_want_t;

typedef struct {
    double seconds;
    unsigned top;
    int json, suggest;
    int port, pid;
    const char *netns;
    const char *save;
    tt_churn_want_t source;
    /* Set (by the caller's SIGINT/SIGTERM handler) to end sampling early: what was measured so
     * far is reported and the tracing instance removed. */
    volatile sig_atomic_t *stop;
} tt_churn_opts_t;

/* Samples and prints to out (progress on err when it is a terminal). Returns the exit status:
 * 0, 1 for a runtime failure (reason on err). */
int tt_churn_run(const tt_churn_opts_t *o, FILE *out, FILE *err);

/* --compare BEFORE AFTER. Returns the exit status. */
int tt_churn_compare_files(const char *before, const char *after, unsigned top, int json, FILE *out,
                           FILE *err);

#endif
