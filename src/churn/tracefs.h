/* The exact source of `tether churn`: the `sock:inet_sock_set_state` tracepoint, read from a
 * tracing instance of its own.
 *
 * tt_tracefs_open finds tracefs (mounting it at /sys/kernel/tracing when it is mounted nowhere),
 * creates instances/tether-churn-<pid>, sets its clock to CLOCK_MONOTONIC, a per-CPU buffer, a
 * kernel-side filter (TCP only; only the SYN_SENT, SYN_RECV and CLOSE transitions, which are all
 * the profiler needs) and enables the event. An instance has its own ring buffers and event
 * switches, so other tracers on the host are neither disturbed nor disturb it.
 * tt_tracefs_close disables the event, closes the pipes, removes the instance and unmounts tracefs
 * if this process mounted it. Both are for the `tether` command only (not async-signal-safe; the
 * CLI turns signals into a flag and closes from its loop). */
#ifndef TT_CHURN_TRACEFS_H
#define TT_CHURN_TRACEFS_H

#include "churn/trace_format.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tt_tracefs tt_tracefs_t;

/* Opens the source. Returns NULL with the reason in err (no tracefs, not permitted, no such
 * event...); the caller then falls back to sampling. Instances left by a tether churn that was
 * killed (its pid is gone) are removed first. */
tt_tracefs_t *tt_tracefs_open(size_t buffer_kb_per_cpu, char *err, size_t errlen);

/* Reads every page available now from every CPU's trace_pipe_raw (non-blocking) and calls cb for
 * each event. Returns the number of events, or -1 on a read error (reason in err). */
long tt_tracefs_drain(tt_tracefs_t *t, tt_trace_event_cb cb, void *arg, char *err, size_t errlen);

/* Events the kernel dropped because the buffer was full (sum of the per-CPU overrun counters and
 * pages flagged as having missed events). */
uint64_t tt_tracefs_lost(tt_tracefs_t *t);

/* The instance's directory (for messages and tests). */
const char *tt_tracefs_instance(const tt_tracefs_t *t);

/* Tears everything down (see above); NULL is ignored. */
void tt_tracefs_close(tt_tracefs_t *t);

/* The CLOCK_MONOTONIC time in ns, the clock the instance's timestamps use. */
uint64_t tt_tracefs_now_ns(void);

#endif
