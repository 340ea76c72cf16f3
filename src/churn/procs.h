/* Who owns a socket, and in which network namespace a task runs: the /proc side of
 * `tether churn`.
 *
 * Socket inodes map to processes by scanning /proc/PID/fd links ("socket:[INODE]"), which is what
 * ss -p does; the scan is repeated at most once per call to tt_procs_refresh and only when asked,
 * because it costs a readlink per open file on the host. Tasks (the tid a tracepoint reports)
 * map to their process id, name and network namespace through /proc/TID/status and
 * /proc/TID/ns/net, cached: a task that has exited by the time its event is read is named
 * "?". Processes the caller may not inspect simply stay
 * unknown (pid 0, name "?"). */
#ifndef TT_CHURN_PROCS_H
#define TT_CHURN_PROCS_H

#include "churn/u64map.h"

#include <stdint.h>

#define TT_PROCS_COMM_LEN 16

typedef struct {
    int pid; /* process (tgid); 0 when unknown */
    char comm[TT_PROCS_COMM_LEN];
    uint64_t netns; /* inode of its network namespace; 0 when unknown */
} tt_proc_t;

typedef struct {
    tt_u64map_t inode_to_proc; /* socket inode -> index in procs */
    tt_u64map_t tid_to_proc;   /* task id + 1 -> index in procs */
    tt_proc_t *procs;
    uint32_t nprocs, cap;
} tt_procs_t;

void tt_procs_init(tt_procs_t *p);
void tt_procs_free(tt_procs_t *p);

/* Rescans /proc/PID/fd for socket inodes (keeping what earlier scans found). */
void tt_procs_refresh(tt_procs_t *p);

/* The owner of a socket inode, or NULL. */
const tt_proc_t *tt_procs_by_inode(const tt_procs_t *p, uint32_t inode);

/* The process of task tid (resolved on first use and cached; never NULL: pid 0 and "?" when
 * /proc has nothing). */
const tt_proc_t *tt_procs_by_tid(tt_procs_t *p, int tid);

#endif
