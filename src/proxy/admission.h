/* The global cap on client connections (max_client_connections), shared by every worker.
 *
 * A worker takes a slot before each accept() and gives it back when the connection closes, so
 * tetherd never accepts more than the cap: at the cap a worker stops polling its listeners and
 * the kernel's backlog holds the connections that wait. A worker that stopped calls
 * tt_admission_wait(); whichever worker frees a slot while any waits wakes every worker's loop
 * (tt_loop_wakeup), and the woken ones try again. The counters are atomic: any worker thread may
 * call anything here. See docs/operations.md ("File descriptors and connection limits"). */
#ifndef TT_PROXY_ADMISSION_H
#define TT_PROXY_ADMISSION_H

#include "event/loop.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t max;
    _Atomic int64_t open; /* slots taken: connections accepted (or being accepted) */
    _Atomic int waiting;  /* workers that stopped accepting at the cap */
    tt_loop_t **loops;    /* every worker's loop, woken when a slot frees while one waits */
    size_t nloops;
} tt_admission_t;

/* Sets the cap; loops (owned by the caller, filled in before workers start) are the loops to
 * wake. */
void tt_admission_init(tt_admission_t *a, int64_t max, tt_loop_t **loops, size_t nloops);

/* Takes a slot. Returns 1, or 0 at the cap. */
int tt_admission_take(tt_admission_t *a);

/* Gives a slot back and, if a worker waits for one, wakes every loop. */
void tt_admission_release(tt_admission_t *a);

/* A worker stopped accepting at the cap: the next release wakes it. The caller takes again after
 * this (a slot freed just before is otherwise missed) and calls tt_admission_unwait() once it
 * accepts again. */
void tt_admission_wait(tt_admission_t *a);
void tt_admission_unwait(tt_admission_t *a);

/* The default of max_client_connections for a file descriptor limit of nofile: what is left
 * after a fixed reserve (the admin endpoint and its connections, logs, DNS, each worker's epoll,
 * eventfd and listeners) and a reserve for upstream connections (upstream_conns, the sum of
 * max_connections, at most half of what remains). At least 1. */
int64_t tt_admission_default_max(int64_t nofile, int64_t upstream_conns, size_t nworkers,
                                 size_t nlisteners);

#endif
