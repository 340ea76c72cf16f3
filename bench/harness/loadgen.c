/* A small bounded HTTP/1.1 load generator for the bench's Unix-socket scenarios, where wrk cannot
 * go (it only dials TCP). It runs the same way against a TCP address, so the scenarios that
 * compare a Unix listener with a TCP one use one client for both.
 *
 *   loadgen (--unix PATH | --tcp HOST:PORT) -c CONNS -d SECONDS [--close] [--path /]
 *
 * One thread, one epoll loop, CONNS connections each with one request in flight (as wrk does).
 * A response is complete when its head and Content-Length bytes of body have arrived (the bench
 * upstream always sends Content-Length). With --close every request says `Connection: close`
 * and the connection is reopened after its response. At the end it prints one line in the
 * format of bench/harness/wrk_report.lua, so the harness reads both clients alike. Every
 * request has a deadline of 2 s (a timeout error); the run stops after SECONDS. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS          4096
#define REQUEST_TIMEOUT_US 2000000
#define READ_SIZE          16384

enum { E_CONNECT, E_READ, E_WRITE, E_TIMEOUT, E_STATUS, E_COUNT };

typedef struct {
    int fd;
    int64_t started_us; /* the request's first write */
    size_t sent;
    size_t got; /* bytes of the response so far */
    long need;  /* the response's total size once its head is read, else -1 */
    char head[4096];
    size_t head_len;
} conn_t;

static struct sockaddr_storage g_addr;
static socklen_t g_addr_len;
static char g_request[512];
static size_t g_request_len;
static int g_close;
static int g_epoll;
static long g_errors[E_COUNT];
static uint32_t *g_lat; /* microseconds, one per completed request */
static size_t g_nlat, g_caplat;
static uint64_t g_bytes;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void record(uint32_t us)
{
    if (g_nlat == g_caplat) {
        g_caplat = g_caplat ? g_caplat * 2 : 65536;
        g_lat = realloc(g_lat, g_caplat * sizeof(*g_lat));
        if (g_lat == NULL) {
            perror("loadgen: realloc");
            exit(1);
        }
    }
    g_lat[g_nlat++] = us;
}

static int open_conn(conn_t *c)
{
    c->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    if (g_addr.ss_family == AF_INET) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (connect(c->fd, (struct sockaddr *)&g_addr, g_addr_len) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->sent = c->got = c->head_len = 0;
    c->need = -1;
    c->started_us = now_us();
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(g_epoll, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static void drop_conn(conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void restart(conn_t *c, int reconnect)
{
    if (reconnect) {
        drop_conn(c);
        if (open_conn(c) < 0)
            g_errors[E_CONNECT]++;
        return;
    }
    c->sent = c->got = c->head_len = 0;
    c->need = -1;
    c->started_us = now_us();
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(g_epoll, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Finds the end of the head and its Content-Length; -1 while the head is incomplete. */
static long response_size(conn_t *c, int *status)
{
    char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
    if (end == NULL)
        return -1;
    *status = c->head_len > 12 ? atoi(c->head + 9) : 0;
    long length = 0;
    const char *p = strcasestr(c->head, "\r\ncontent-length:");
    if (p != NULL && p < end)
        length = strtol(p + 17, NULL, 10);
    return (long)(end + 4 - c->head) + length;
}

static void on_ready(conn_t *c, uint32_t events)
{
    if (c->sent < g_request_len) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            g_errors[c->sent ? E_WRITE : E_CONNECT]++;
            restart(c, 1);
            return;
        }
        ssize_t n = send(c->fd, g_request + c->sent, g_request_len - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == ENOTCONN)
                return;
            g_errors[E_WRITE]++;
            restart(c, 1);
            return;
        }
        c->sent += (size_t)n;
        if (c->sent == g_request_len) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(g_epoll, EPOLL_CTL_MOD, c->fd, &ev);
        }
        return;
    }
    char buf[READ_SIZE];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            g_errors[E_READ]++;
            restart(c, 1);
            return;
        }
        g_bytes += (uint64_t)n;
        if (c->need < 0) {
            size_t take = (size_t)n;
            if (take > sizeof(c->head) - 1 - c->head_len)
                take = sizeof(c->head) - 1 - c->head_len;
            memcpy(c->head + c->head_len, buf, take);
            c->head_len += take;
            c->head[c->head_len] = '\0';
            int status = 0;
            c->need = response_size(c, &status);
            if (c->need < 0 && c->head_len == sizeof(c->head) - 1) {
                g_errors[E_READ]++;
                restart(c, 1);
                return;
            }
            if (c->need >= 0 && status > 399)
                g_errors[E_STATUS]++;
        }
        c->got += (size_t)n;
        if (c->need >= 0 && (long)c->got >= c->need) {
            record((uint32_t)(now_us() - c->started_us));
            restart(c, g_close);
            return;
        }
    }
}

static int parse_address(const char *unix_path, const char *tcp)
{
    memset(&g_addr, 0, sizeof(g_addr));
    if (unix_path != NULL) {
        struct sockaddr_un *un = (struct sockaddr_un *)&g_addr;
        if (strlen(unix_path) >= sizeof(un->sun_path))
            return -1;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, unix_path);
        g_addr_len = sizeof(*un);
        return 0;
    }
    char host[64];
    const char *colon = tcp ? strrchr(tcp, ':') : NULL;
    if (colon == NULL || (size_t)(colon - tcp) >= sizeof(host))
        return -1;
    memcpy(host, tcp, (size_t)(colon - tcp));
    host[colon - tcp] = '\0';
    struct sockaddr_in *in = (struct sockaddr_in *)&g_addr;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
        return -1;
    g_addr_len = sizeof(*in);
    return 0;
}

static int by_value(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t percentile(double p)
{
    if (g_nlat == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(g_nlat - 1) + 0.5);
    return g_lat[i];
}

int main(int argc, char **argv)
{
    const char *unix_path = NULL, *tcp = NULL, *path = "/";
    int conns = 64;
    double seconds = 10;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unix") && i + 1 < argc)
            unix_path = argv[++i];
        else if (!strcmp(argv[i], "--tcp") && i + 1 < argc)
            tcp = argv[++i];
        else if (!strcmp(argv[i], "-c") && i + 1 < argc)
            conns = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-d") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--path") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--close"))
            g_close = 1;
        else {
            fprintf(stderr, "usage: loadgen (--unix PATH | --tcp HOST:PORT) -c CONNS -d SECONDS "
                            "[--close] [--path /]\n");
            return 2;
        }
    }
    if (conns < 1 || conns > MAX_CONNS || seconds <= 0 || seconds > 3600 ||
        parse_address(unix_path, tcp) < 0) {
        fprintf(stderr, "loadgen: bad address, connection count (1-%d) or duration\n", MAX_CONNS);
        return 2;
    }
    g_request_len = (size_t)snprintf(g_request, sizeof(g_request),
                                     "GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", path,
                                     g_close ? "Connection: close\r\n" : "");
    g_epoll = epoll_create1(EPOLL_CLOEXEC);
    conn_t *all = calloc((size_t)conns, sizeof(conn_t));
    if (all == NULL || g_epoll < 0) {
        perror("loadgen");
        return 1;
    }
    int64_t start = now_us(), end = start + (int64_t)(seconds * 1e6);
    for (int i = 0; i < conns; i++)
        if (open_conn(&all[i]) < 0)
            g_errors[E_CONNECT]++;
    struct epoll_event events[256];
    int64_t now = start, last_sweep = start;
    while (now < end) {
        int n = epoll_wait(g_epoll, events, 256, 10);
        for (int i = 0; i < n; i++)
            on_ready(events[i].data.ptr, events[i].events);
        now = now_us();
        if (now - last_sweep >= 100000) { /* deadlines, and slots a failed connect left empty */
            last_sweep = now;
            for (int i = 0; i < conns; i++) {
                if (all[i].fd < 0) {
                    if (open_conn(&all[i]) < 0)
                        g_errors[E_CONNECT]++;
                } else if (now - all[i].started_us > REQUEST_TIMEOUT_US) {
                    g_errors[E_TIMEOUT]++;
                    restart(&all[i], 1);
                }
            }
        }
    }
    int64_t elapsed = now_us() - start;
    for (int i = 0; i < conns; i++)
        drop_conn(&all[i]);
    qsort(g_lat, g_nlat, sizeof(*g_lat), by_value);
    double sum = 0;
    for (size_t i = 0; i < g_nlat; i++)
        sum += g_lat[i];
    printf("TETHER_WRK_JSON {\"requests\":%zu,\"duration_us\":%lld,\"bytes\":%llu,"
           "\"errors\":{\"connect\":%ld,\"read\":%ld,\"write\":%ld,\"timeout\":%ld,\"status\":%ld},"
           "\"latency_us\":{\"p50\":%u,\"p90\":%u,\"p99\":%u,\"p999\":%u,\"mean\":%.1f,"
           "\"max\":%u}}\n",
           g_nlat, (long long)elapsed, (unsigned long long)g_bytes, g_errors[E_CONNECT],
           g_errors[E_READ], g_errors[E_WRITE], g_errors[E_TIMEOUT], g_errors[E_STATUS],
           percentile(50), percentile(90), percentile(99), percentile(99.9),
           g_nlat ? sum / (double)g_nlat : 0.0, g_nlat ? g_lat[g_nlat - 1] : 0);
    free(all);
    free(g_lat);
    return 0;
}
