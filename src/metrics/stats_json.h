/* JSON renderings of a snapshot (/stats) and of the connection list (/pools).
 *
 * /stats holds the same figures as /metrics, in the histograms' own integer units (the member name
 * says which: _us, _ms), plus quantiles and the non-empty fine buckets of every histogram so that a
 * reader comparing two snapshots (tether top) can compute percentiles over the interval. Counters
 * are cumulative since start: rates are differences over "uptime_seconds". The layout is
 * documented in docs/metrics.md and read back by src/cli/top.c; change both together. */
#ifndef TT_METRICS_STATS_JSON_H
#define TT_METRICS_STATS_JSON_H

#include "core/buf.h"
#include "metrics/snapshot.h"

/* Appends /stats for s to out. */
void tt_stats_json_render(const tt_snapshot_t *s, tt_buf_t *out);

/* Appends /pools: each endpoint of s with its health, then one object per connection in l. */
void tt_pools_json_render(const tt_conn_list_t *l, const tt_snapshot_t *s, tt_buf_t *out);

#endif
