#include "churn/tracefs.h"

#include "core/invariant.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MOUNT   "/sys/kernel/tracing"
#define INSTANCE_PREFIX "tether-churn-"
#define EVENT_DIR       "events/sock/inet_sock_set_state"
/* Opens (SYN_SENT: connect, SYN_RECV: accept) and ends (CLOSE, whose oldstate tells a failed
 * connect from a finished connection). Every other transition is dropped in the kernel. */
#define EVENT_FILTER "protocol == 6 && (newstate == 2 || newstate == 3 || newstate == 7)"

struct tt_tracefs {
    char root[256];     /* the tracefs mount */
    char instance[320]; /* root/instances/tether-churn-<pid> */
    int mounted_here;
    int ncpu;
    int *fds; /* per-CPU trace_pipe_raw, -1 for an offline CPU */
    uint8_t *page;
    size_t page_size;
    uint64_t missed_pages;
    tt_trace_format_t fmt;
};

uint64_t tt_tracefs_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static char *read_text(const char *path, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *buf = tt_malloc(max + 1);
    size_t len = 0;
    ssize_t n;
    while (len < max && (n = read(fd, buf + len, max - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    return buf;
}

static int write_text(const char *dir, const char *file, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)len ? 0 : -1;
}

/* The tracefs mount point from /proc/self/mounts, or "" when tracefs is not mounted. */
static void find_mount(char *out, size_t outlen)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/self/mounts", "re");
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        char dev[256], dir[256], type[64];
        if (sscanf(line, "%255s %255s %63s", dev, dir, type) == 3 && strcmp(type, "tracefs") == 0) {
            snprintf(out, outlen, "%s", dir);
            /* Prefer the canonical place when tracefs is mounted twice. */
            if (strcmp(dir, DEFAULT_MOUNT) == 0)
                break;
        }
    }
    fclose(f);
}

/* Removes instances named tether-churn-<pid> whose process no longer exists (a run killed with
 * SIGKILL cannot clean up after itself). */
static void remove_stale_instances(const char *root)
{
    char dir[320];
    snprintf(dir, sizeof(dir), "%s/instances", root);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, INSTANCE_PREFIX, strlen(INSTANCE_PREFIX)) != 0)
            continue;
        long pid = strtol(e->d_name + strlen(INSTANCE_PREFIX), NULL, 10);
        if (pid <= 0 || pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[640];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        rmdir(path);
    }
    closedir(d);
}

static int open_pipes(tt_tracefs_t *t, char *err, size_t errlen)
{
    long n = sysconf(_SC_NPROCESSORS_CONF);
    t->ncpu = n > 0 ? (int)n : 1;
    t->fds = tt_malloc(sizeof(int) * (size_t)t->ncpu);
    int opened = 0;
    for (int cpu = 0; cpu < t->ncpu; cpu++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/per_cpu/cpu%d/trace_pipe_raw", t->instance, cpu);
        t->fds[cpu] = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        opened += t->fds[cpu] >= 0;
    }
    if (!opened) {
        snprintf(err, errlen, "%s/per_cpu/cpu*/trace_pipe_raw: %s", t->instance, strerror(errno));
        return -1;
    }
    return 0;
}

static int setup(tt_tracefs_t *t, size_t buffer_kb, char *err, size_t errlen)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/" EVENT_DIR "/format", t->root);
    char *format = read_text(path, 65536);
    snprintf(path, sizeof(path), "%s/events/header_page", t->root);
    char *header = read_text(path, 4096);
    int rc = -1;
    if (!format || !header) {
        snprintf(err, errlen, "%s: %s (no sock:inet_sock_set_state tracepoint?)", path,
                 strerror(errno));
        goto out;
    }
    if (tt_trace_format_parse(&t->fmt, format, header, err, errlen) < 0)
        goto out;
    t->page_size = tt_trace_page_size(&t->fmt);
    t->page = tt_malloc(t->page_size);

    if (mkdir(t->instance, 0700) < 0) {
        snprintf(err, errlen, "mkdir %s: %s", t->instance, strerror(errno));
        t->instance[0] = '\0';
        goto out;
    }
    char kb[32];
    snprintf(kb, sizeof(kb), "%zu", buffer_kb);
    /* The monotonic clock makes stamps comparable with the sock_diag snapshots' times. */
    if (write_text(t->instance, "trace_clock", "mono") < 0 ||
        write_text(t->instance, "buffer_size_kb", kb) < 0 ||
        write_text(t->instance, EVENT_DIR "/filter", EVENT_FILTER) < 0 ||
        write_text(t->instance, EVENT_DIR "/enable", "1") < 0) {
        snprintf(err, errlen, "configuring %s: %s", t->instance, strerror(errno));
        goto out;
    }
    rc = open_pipes(t, err, errlen);
out:
    free(format);
    free(header);
    return rc;
}

tt_tracefs_t *tt_tracefs_open(size_t buffer_kb_per_cpu, char *err, size_t errlen)
{
    tt_tracefs_t *t = tt_calloc(1, sizeof(*t));
    find_mount(t->root, sizeof(t->root));
    if (!t->root[0]) {
        if (mount("nodev", DEFAULT_MOUNT, "tracefs", 0, NULL) < 0) {
            snprintf(err, errlen,
                     "tracefs is not mounted and mounting it at " DEFAULT_MOUNT " failed: %s",
                     strerror(errno));
            free(t);
            return NULL;
        }
        snprintf(t->root, sizeof(t->root), DEFAULT_MOUNT);
        t->mounted_here = 1;
    }
    remove_stale_instances(t->root);
    snprintf(t->instance, sizeof(t->instance), "%s/instances/" INSTANCE_PREFIX "%ld", t->root,
             (long)getpid());
    if (setup(t, buffer_kb_per_cpu, err, errlen) < 0) {
        tt_tracefs_close(t);
        return NULL;
    }
    return t;
}

long tt_tracefs_drain(tt_tracefs_t *t, tt_trace_event_cb cb, void *arg, char *err, size_t errlen)
{
    long total = 0;
    for (int cpu = 0; cpu < t->ncpu; cpu++) {
        if (t->fds[cpu] < 0)
            continue;
        for (;;) {
            ssize_t n = read(t->fds[cpu], t->page, t->page_size);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (n < 0) {
                snprintf(err, errlen, "reading cpu%d/trace_pipe_raw: %s", cpu, strerror(errno));
                return -1;
            }
            if (n == 0)
                break;
            int missed;
            int got = tt_trace_page_decode(&t->fmt, t->page, (size_t)n, cb, arg, &missed);
            t->missed_pages += missed;
            if (got > 0)
                total += got;
        }
    }
    return total;
}

uint64_t tt_tracefs_lost(tt_tracefs_t *t)
{
    uint64_t lost = 0;
    for (int cpu = 0; cpu < t->ncpu; cpu++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/per_cpu/cpu%d/stats", t->instance, cpu);
        char *stats = read_text(path, 4096);
        if (!stats)
            continue;
        const char *o = strstr(stats, "overrun: ");
        if (o)
            lost += strtoull(o + 9, NULL, 10);
        const char *d = strstr(stats, "dropped events: ");
        if (d)
            lost += strtoull(d + 16, NULL, 10);
        free(stats);
    }
    return lost ? lost : t->missed_pages;
}

const char *tt_tracefs_instance(const tt_tracefs_t *t)
{
    return t->instance;
}

void tt_tracefs_close(tt_tracefs_t *t)
{
    if (!t)
        return;
    if (t->instance[0])
        write_text(t->instance, EVENT_DIR "/enable", "0");
    for (int cpu = 0; t->fds && cpu < t->ncpu; cpu++)
        if (t->fds[cpu] >= 0)
            close(t->fds[cpu]);
    if (t->instance[0])
        rmdir(t->instance);
    if (t->mounted_here)
        umount2(t->root, 0); /* EBUSY when another tracer began using it meanwhile: leave it */
    free(t->fds);
    free(t->page);
    free(t);
}
