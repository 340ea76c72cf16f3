/* Prometheus text exposition (format 0.0.4) of a snapshot: what /metrics serves.
 *
 * Names follow the Prometheus conventions: a tether_ prefix (process_ for the standard process
 * metrics), base units in the name (_seconds, _bytes), _total on counters, and labels upstream,
 * endpoint (on figures that belong to connections) and reason. Every metric is documented in
 * docs/metrics.md; a change here changes that page.
 *
 * Histograms are exported with a fixed, coarse set of "le" bounds (the same for every scrape, as
 * Prometheus requires) computed from the fine log-linear tt_hist_t: a bucket counts the fine
 * buckets whose whole range lies at or below the bound, so an observation within 1/16 under a
 * bound may be counted in the next bucket up. _sum and _count are exact. */
#ifndef TT_METRICS_PROMETHEUS_H
#define TT_METRICS_PROMETHEUS_H

#include "core/buf.h"
#include "metrics/snapshot.h"

#define TT_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the exposition of s to out (which the caller owns and may reuse). */
void tt_prom_render(const tt_snapshot_t *s, tt_buf_t *out);

/* Appends v as a Prometheus label value: quoted, with backslash, double quote and newline
 * escaped. */
void tt_prom_put_label_value(tt_buf_t *out, const char *v);

#endif
