#include "metrics/snapshot.h"

#include "core/invariant.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

const char *const tt_accept_error_names[TT_ACCEPT_ERRORS] = {"emfile", "enfile", "nomem", "other"};

tt_snapshot_t *tt_snapshot_new(size_t nupstreams)
{
    tt_snapshot_t *s = tt_calloc(1, sizeof(*s));
    s->nupstreams = nupstreams;
    s->ups = nupstreams > 0 ? tt_calloc(nupstreams, sizeof(*s->ups)) : NULL;
    return s;
}

void tt_snapshot_free(tt_snapshot_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nupstreams; i++)
        free(s->ups[i].endpoints);
    free(s->ups);
    free(s);
}

tt_endpoint_row_t *tt_snapshot_endpoint(tt_upstream_snapshot_t *u, const char *address)
{
    for (size_t i = 0; i < u->nendpoints; i++)
        if (strcmp(u->endpoints[i].address, address) == 0)
            return &u->endpoints[i];
    u->endpoints = tt_realloc(u->endpoints, (u->nendpoints + 1) * sizeof(*u->endpoints));
    tt_endpoint_row_t *r = &u->endpoints[u->nendpoints++];
    memset(r, 0, sizeof(*r));
    snprintf(r->address, sizeof(r->address), "%s", address);
    r->draining = 1;
    r->changed_ago_ms = UINT64_MAX;
    return r;
}

uint64_t tt_snapshot_sent(const tt_upstream_snapshot_t *u)
{
    return u->stats.conn_requests.sum + u->live.live_requests;
}

uint64_t tt_snapshot_requests(const tt_upstream_snapshot_t *u)
{
    uint64_t n = 0;
    for (size_t i = 0; i < TT_ARRAY_SIZE(u->stats.responses); i++)
        n += u->stats.responses[i];
    return n;
}

/* The boot time from /proc/stat, for turning a process start in ticks since boot into wall time. */
static int boot_time(double *out)
{
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL)
        return -1;
    char line[256];
    int rc = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long bt;
        if (sscanf(line, "btime %llu", &bt) == 1) {
            *out = (double)bt;
            rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

static uint64_t count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0; /* the directory stream's own descriptor */
}

void tt_process_read(tt_process_info_t *p)
{
    memset(p, 0, sizeof(*p));
    FILE *f = fopen("/proc/self/stat", "re");
    if (f == NULL)
        return;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields resume after the last ')'. */
    const char *rest = strrchr(buf, ')');
    if (rest == NULL)
        return;
    unsigned long long utime, stime, start, vsize;
    long long rss;
    /* Fields 3..24 of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss. */
    if (sscanf(rest + 1,
               " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %llu %lld",
               &utime, &stime, &start, &vsize, &rss) != 5)
        return;
    double tick = (double)sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    double btime;
    if (tick <= 0 || page <= 0 || boot_time(&btime) < 0)
        return;
    p->start_time_s = btime + (double)start / tick;
    p->cpu_seconds = (double)(utime + stime) / tick;
    p->virtual_bytes = vsize;
    p->resident_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)page : 0;
    p->open_fds = count_fds();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        p->max_fds = rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur;
    p->ok = 1;
}

tt_conn_row_t *tt_conn_list_push(tt_conn_list_t *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->rows = tt_realloc(l->rows, l->cap * sizeof(*l->rows));
    }
    tt_conn_row_t *r = &l->rows[l->n++];
    memset(r, 0, sizeof(*r));
    return r;
}

void tt_conn_list_free(tt_conn_list_t *l)
{
    free(l->rows);
    l->rows = NULL;
    l->n = l->cap = 0;
}

const char *tt_conn_row_state_name(tt_conn_row_state_t s)
{
    switch (s) {
    case TT_ROW_CONNECTING:
        return "connecting";
    case TT_ROW_IDLE:
        return "idle";
    case TT_ROW_ACTIVE:
        return "active";
    }
    return "unknown";
}

const char *tt_endpoint_row_state(const tt_endpoint_row_t *r)
{
    return r->down ? "down" : r->ejected ? "ejected" : r->half_open ? "half_open" : "up";
}
