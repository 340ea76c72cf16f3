#include "churn/procs.h"

#include "core/invariant.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void tt_procs_init(tt_procs_t *p)
{
    memset(p, 0, sizeof(*p));
    tt_u64map_init(&p->inode_to_proc);
    tt_u64map_init(&p->tid_to_proc);
}

void tt_procs_free(tt_procs_t *p)
{
    tt_u64map_free(&p->inode_to_proc);
    tt_u64map_free(&p->tid_to_proc);
    free(p->procs);
    memset(p, 0, sizeof(*p));
}

static uint32_t add_proc(tt_procs_t *p, const tt_proc_t *proc)
{
    if (p->nprocs == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->procs = tt_realloc(p->procs, sizeof(*p->procs) * p->cap);
    }
    p->procs[p->nprocs] = *proc;
    return p->nprocs++;
}

/* Fills proc from /proc/<tid>: Tgid and Name from status, the namespace from ns/net. */
static void read_task(int tid, tt_proc_t *proc)
{
    memset(proc, 0, sizeof(*proc));
    snprintf(proc->comm, sizeof(proc->comm), "?");
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", tid);
    FILE *f = fopen(path, "re");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "Name:\t", 6) == 0) {
                size_t n = strcspn(line + 6, "\n");
                n = n < sizeof(proc->comm) - 1 ? n : sizeof(proc->comm) - 1;
                memcpy(proc->comm, line + 6, n);
                proc->comm[n] = '\0';
            } else if (strncmp(line, "Tgid:\t", 6) == 0) {
                proc->pid = atoi(line + 6);
                break;
            }
        }
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%d/ns/net", tid);
    struct stat st;
    if (stat(path, &st) == 0)
        proc->netns = st.st_ino;
}

const tt_proc_t *tt_procs_by_tid(tt_procs_t *p, int tid)
{
    uint32_t idx;
    uint64_t key = (uint64_t)(uint32_t)tid + 1;
    if (tt_u64map_get(&p->tid_to_proc, key, &idx))
        return &p->procs[idx];
    tt_proc_t proc;
    read_task(tid, &proc);
    idx = add_proc(p, &proc);
    tt_u64map_put(&p->tid_to_proc, key, idx);
    return &p->procs[idx];
}

const tt_proc_t *tt_procs_by_inode(const tt_procs_t *p, uint32_t inode)
{
    uint32_t idx;
    if (inode && tt_u64map_get(&p->inode_to_proc, inode, &idx))
        return &p->procs[idx];
    return NULL;
}

void tt_procs_refresh(tt_procs_t *p)
{
    DIR *proc = opendir("/proc");
    if (!proc)
        return;
    struct dirent *e;
    while ((e = readdir(proc))) {
        int pid = atoi(e->d_name);
        if (pid <= 0)
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", pid);
        DIR *fds = opendir(path);
        if (!fds)
            continue;
        int proc_idx = -1;
        struct dirent *fe;
        while ((fe = readdir(fds))) {
            char link[320], target[64];
            if (fe->d_name[0] == '.')
                continue;
            snprintf(link, sizeof(link), "%s/%s", path, fe->d_name);
            ssize_t n = readlink(link, target, sizeof(target) - 1);
            if (n < 9 || memcmp(target, "socket:[", 8) != 0)
                continue;
            target[n] = '\0';
            uint64_t inode = strtoull(target + 8, NULL, 10);
            if (!inode)
                continue;
            if (proc_idx < 0)
                proc_idx = (int)(tt_procs_by_tid(p, pid) - p->procs);
            tt_u64map_put(&p->inode_to_proc, inode, (uint32_t)proc_idx);
        }
        closedir(fds);
    }
    closedir(proc);
}
