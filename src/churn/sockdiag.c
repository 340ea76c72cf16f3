#include "churn/sockdiag.h"

#include "churn/trace_format.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECV_BUF (64 * 1024)

/* RTA_OK and RTA_NEXT with an unsigned length: RTA_NEXT subtracts the aligned length, which
 * passes the end when the last attribute's length is not a multiple of 4. */
static int attr_ok(const struct rtattr *a, size_t rest)
{
    return rest >= sizeof(*a) && a->rta_len >= sizeof(*a) && a->rta_len <= rest;
}

static const struct rtattr *next_attr(const struct rtattr *a, size_t *rest)
{
    size_t step = RTA_ALIGN(a->rta_len);
    *rest = step < *rest ? *rest - step : 0;
    return (const struct rtattr *)((const char *)a + step);
}

static void parse_msg(const struct nlmsghdr *h, tt_sockdiag_sock_cb cb, void *arg)
{
    const struct inet_diag_msg *m = NLMSG_DATA(h);
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
        return;
    tt_sockdiag_sock_t s = {
        .state = m->idiag_state,
        .inode = m->idiag_inode,
        .uid = m->idiag_uid,
        .cookie = (uint64_t)m->id.idiag_cookie[0] | ((uint64_t)m->id.idiag_cookie[1] << 32),
    };
    tt_churn_addr_set(&s.local, m->idiag_family, m->id.idiag_src, ntohs(m->id.idiag_sport));
    tt_churn_addr_set(&s.remote, m->idiag_family, m->id.idiag_dst, ntohs(m->id.idiag_dport));
    size_t rest = h->nlmsg_len - NLMSG_LENGTH(sizeof(*m));
    const struct rtattr *a = (const struct rtattr *)((const char *)m + NLMSG_ALIGN(sizeof(*m)));
    for (; attr_ok(a, rest); a = next_attr(a, &rest)) {
        size_t plen = RTA_PAYLOAD(a);
        if (a->rta_type == INET_DIAG_SKMEMINFO && plen >= sizeof(uint32_t) * SK_MEMINFO_VARS) {
            uint32_t mem[SK_MEMINFO_VARS];
            memcpy(mem, RTA_DATA(a), sizeof(mem));
            s.mem_bytes = (uint64_t)mem[SK_MEMINFO_RMEM_ALLOC] + mem[SK_MEMINFO_WMEM_QUEUED] +
                          mem[SK_MEMINFO_FWD_ALLOC] + mem[SK_MEMINFO_OPTMEM] +
                          mem[SK_MEMINFO_BACKLOG];
        } else if (a->rta_type == INET_DIAG_INFO &&
                   plen >= offsetof(struct tcp_info, tcpi_total_retrans) + sizeof(uint32_t)) {
            /* Older kernels send a shorter tcp_info: copy what came, zero the rest. */
            struct tcp_info ti;
            memset(&ti, 0, sizeof(ti));
            memcpy(&ti, RTA_DATA(a), plen < sizeof(ti) ? plen : sizeof(ti));
            s.total_retrans = ti.tcpi_total_retrans;
            s.rtt_us = ti.tcpi_rtt;
            s.has_info = 1;
        }
    }
    cb(&s, arg);
}

/* NLMSG_OK and NLMSG_NEXT with an unsigned length (the macros mix signs). */
static int message_ok(const struct nlmsghdr *h, size_t rest)
{
    return rest >= sizeof(*h) && h->nlmsg_len >= sizeof(*h) && h->nlmsg_len <= rest;
}

static const struct nlmsghdr *next_message(const struct nlmsghdr *h, size_t *rest)
{
    size_t step = NLMSG_ALIGN(h->nlmsg_len);
    *rest = step < *rest ? *rest - step : 0;
    return (const struct nlmsghdr *)((const char *)h + step);
}

int tt_sockdiag_parse(const uint8_t *buf, size_t len, tt_sockdiag_sock_cb cb, void *arg, char *err,
                      size_t errlen)
{
    size_t rest = len;
    const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
    for (; message_ok(h, rest); h = next_message(h, &rest)) {
        if (h->nlmsg_type == NLMSG_DONE)
            return 1;
        if (h->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *e = NLMSG_DATA(h);
            /* The kernel sends -errno; INT_MIN (a damaged reply) has no negation. */
            int code = h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error != INT_MIN ? -e->error
                                                                                       : EPROTO;
            snprintf(err, errlen, "sock_diag: %s", strerror(code));
            return -1;
        }
        if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY)
            parse_msg(h, cb, arg);
    }
    if (rest != 0) {
        snprintf(err, errlen, "sock_diag: truncated message");
        return -1;
    }
    return 0;
}

uint64_t tt_sockdiag_netns_inode(const char *netns)
{
    char path[300];
    if (netns)
        snprintf(path, sizeof(path), "/var/run/netns/%s", netns);
    else
        snprintf(path, sizeof(path), "/proc/self/ns/net");
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

int tt_sockdiag_open(const char *netns, char *err, size_t errlen)
{
    int home = -1, target = -1, fd = -1;
    if (netns) {
        char path[300];
        if (strchr(netns, '/')) {
            snprintf(err, errlen, "--netns %s: a name from `ip netns list`, not a path", netns);
            return -1;
        }
        snprintf(path, sizeof(path), "/var/run/netns/%s", netns);
        home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        target = open(path, O_RDONLY | O_CLOEXEC);
        if (home < 0 || target < 0) {
            snprintf(err, errlen, "%s: %s", home < 0 ? "/proc/thread-self/ns/net" : path,
                     strerror(errno));
            goto out;
        }
        if (setns(target, CLONE_NEWNET) < 0) {
            snprintf(err, errlen, "setns %s: %s", path, strerror(errno));
            goto out;
        }
    }
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        snprintf(err, errlen, "NETLINK_SOCK_DIAG socket: %s", strerror(errno));
    if (netns && setns(home, CLONE_NEWNET) < 0) {
        snprintf(err, errlen, "returning to the own network namespace: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
out:
    if (home >= 0)
        close(home);
    if (target >= 0)
        close(target);
    return fd;
}

long tt_sockdiag_dump(int fd, int family, uint32_t states, tt_sockdiag_sock_cb cb, void *arg,
                      char *err, size_t errlen)
{
    struct {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
    } req = {
        .h = {.nlmsg_len = sizeof(req),
              .nlmsg_type = SOCK_DIAG_BY_FAMILY,
              .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
        .r = {.sdiag_family = (uint8_t)family,
              .sdiag_protocol = IPPROTO_TCP,
              .idiag_ext = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_SKMEMINFO - 1)),
              .idiag_states = states},
    };
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        snprintf(err, errlen, "sock_diag request: %s", strerror(errno));
        return -1;
    }
    uint8_t buf[RECV_BUF];
    long n = 0;
    for (;;) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            snprintf(err, errlen, "sock_diag reply: %s", got < 0 ? strerror(errno) : "EOF");
            return -1;
        }
        /* Count messages to report how many sockets the dump held. */
        size_t rest = (size_t)got;
        for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; message_ok(h, rest);
             h = next_message(h, &rest))
            n += h->nlmsg_type == SOCK_DIAG_BY_FAMILY;
        int rc = tt_sockdiag_parse(buf, (size_t)got, cb, arg, err, errlen);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return n;
    }
}
