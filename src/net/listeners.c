#include "net/listeners.h"

#include "core/invariant.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void tt_listenset_init(tt_listenset_t *s)
{
    memset(s, 0, sizeof(*s));
}

static void push(tt_listenset_t *s, const tt_listen_sock_t *ls)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->socks = tt_realloc(s->socks, s->cap * sizeof(*s->socks));
    }
    s->socks[s->n++] = *ls;
}

static int same_addr(const tt_addr_t *a, const tt_addr_t *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

int tt_listenset_adopt(tt_listenset_t *s, int fd, tt_listen_kind_t kind)
{
    tt_listen_sock_t ls = {.fd = fd, .kind = kind};
    int listening = 0;
    socklen_t len = sizeof(listening);
    ls.addr.len = sizeof(ls.addr.ss);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening ||
        getsockname(fd, (struct sockaddr *)&ls.addr.ss, &ls.addr.len) < 0 ||
        (ls.addr.ss.ss_family != AF_INET && ls.addr.ss.ss_family != AF_INET6)) {
        close(fd);
        return -1;
    }
    push(s, &ls);
    return 0;
}

int tt_listenset_adopt_systemd(tt_listenset_t *s, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (pid == NULL || fds == NULL || atol(pid) != (long)getpid())
        return 0;
    int n = atoi(fds);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    for (int i = 0; i < n; i++) {
        int fd = 3 + i;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (tt_listenset_adopt(s, fd, TT_LISTEN_PROXY) < 0) {
            snprintf(err, errlen,
                     "socket activation: fd %d is not a listening TCP socket (ListenStream= in "
                     "the .socket unit takes IP:PORT addresses)",
                     fd);
            return -1;
        }
        s->socks[s->n - 1].shared = 1;
    }
    return n;
}

size_t tt_listenset_count(const tt_listenset_t *s, const tt_addr_t *addr)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += s->socks[i].kind == TT_LISTEN_PROXY && same_addr(&s->socks[i].addr, addr);
    return n;
}

int tt_listenset_ensure(tt_listenset_t *s, const tt_addr_t *addr, size_t count, int backlog,
                        int defer_accept_s, char *err, size_t errlen)
{
    char a[TT_ADDR_STRLEN];
    size_t have = 0;
    for (size_t i = 0; i < s->n; i++) {
        tt_listen_sock_t *ls = &s->socks[i];
        if (ls->kind != TT_LISTEN_PROXY || !same_addr(&ls->addr, addr))
            continue;
        ls->wanted = 1;
        have = ls->shared ? count : have + 1;
        setsockopt(ls->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_accept_s, sizeof(defer_accept_s));
    }
    for (; have < count; have++) {
        tt_listen_sock_t ls = {.addr = *addr, .kind = TT_LISTEN_PROXY, .wanted = 1};
        ls.fd = tt_sock_listen(addr, backlog, defer_accept_s);
        if (ls.fd < 0) {
            snprintf(err, errlen, "%s: %s", tt_addr_format(addr, a),
                     errno == EADDRINUSE ? "in use by another process" : strerror(errno));
            return -1;
        }
        push(s, &ls);
    }
    return 0;
}

int tt_listenset_admin(tt_listenset_t *s, const tt_addr_t *addr, char *err, size_t errlen)
{
    char a[TT_ADDR_STRLEN];
    tt_addr_format(addr, a);
    for (size_t i = 0; i < s->n; i++) {
        tt_listen_sock_t *ls = &s->socks[i];
        /* Port 0 asks for any port: an inherited admin socket on the same host address is it. */
        if (ls->shared && ls->kind == TT_LISTEN_PROXY && same_addr(&ls->addr, addr))
            ls->kind = TT_LISTEN_ADMIN; /* systemd does not say which socket is which */
        if (ls->kind == TT_LISTEN_ADMIN && ls->addr.ss.ss_family == addr->ss.ss_family) {
            tt_addr_t want = *addr, have = ls->addr;
            ((struct sockaddr_in *)&have.ss)->sin_port = 0;
            ((struct sockaddr_in *)&want.ss)->sin_port = 0;
            const struct sockaddr_in *in = (const struct sockaddr_in *)&addr->ss;
            if (same_addr(&ls->addr, addr) || (in->sin_port == 0 && same_addr(&have, &want))) {
                ls->wanted = 1;
                return ls->fd;
            }
        }
    }
    /* No SO_REUSEPORT: a second tetherd on the same admin port fails to start instead of
     * silently sharing (and splitting) the scrapes. */
    tt_listen_sock_t ls = {.kind = TT_LISTEN_ADMIN, .wanted = 1};
    ls.fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls.fd < 0) {
        snprintf(err, errlen, "admin %s: socket: %s", a, strerror(errno));
        return -1;
    }
    setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
    ls.addr.len = sizeof(ls.addr.ss);
    if (bind(ls.fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(ls.fd, 64) < 0 ||
        getsockname(ls.fd, (struct sockaddr *)&ls.addr.ss, &ls.addr.len) < 0) {
        snprintf(err, errlen, "admin: cannot listen on %s: %s", a,
                 errno == EADDRINUSE ? "in use by another process" : strerror(errno));
        close(ls.fd);
        return -1;
    }
    push(s, &ls);
    return ls.fd;
}

void tt_listenset_prune(tt_listenset_t *s)
{
    size_t keep = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->socks[i].wanted) {
            s->socks[keep++] = s->socks[i];
            continue;
        }
        if (s->socks[i].shared) {
            char a[TT_ADDR_STRLEN];
            tt_warn("socket activation: %s is not in the configuration; its connections wait "
                    "unanswered: remove it from the .socket unit",
                    tt_addr_format(&s->socks[i].addr, a));
        }
        close(s->socks[i].fd);
    }
    s->n = keep;
}

size_t tt_listenset_for_worker(const tt_listenset_t *s, const tt_addr_t *addr, size_t id,
                               size_t nworkers, int *fds, int *shared, size_t max)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < s->n; i++) {
        const tt_listen_sock_t *ls = &s->socks[i];
        if (ls->kind != TT_LISTEN_PROXY || !same_addr(&ls->addr, addr))
            continue;
        if ((ls->shared || k++ % nworkers == id) && n < max) {
            shared[n] = ls->shared;
            fds[n++] = ls->fd;
        }
    }
    return n;
}

void tt_listenset_close(tt_listenset_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        close(s->socks[i].fd);
    free(s->socks);
    tt_listenset_init(s);
}

/* --- one tetherd per port ---------------------------------------------------------------- */

typedef struct {
    uint16_t port; /* network order */
    int family;
    uint32_t addr[4]; /* network order, as inet_diag reports it */
} diag_addr_t;

static diag_addr_t to_diag(const tt_addr_t *a)
{
    diag_addr_t d = {.family = a->ss.ss_family};
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a->ss;
        d.port = v4->sin_port;
        memcpy(d.addr, &v4->sin_addr, 4);
    } else {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a->ss;
        d.port = v6->sin6_port;
        memcpy(d.addr, &v6->sin6_addr, 16);
    }
    return d;
}

static int is_wildcard(const diag_addr_t *d)
{
    return d->addr[0] == 0 && (d->family == AF_INET || (d->addr[1] | d->addr[2] | d->addr[3]) == 0);
}

/* Two listeners compete for connections when their ports match and their addresses are equal
 * or either is a wildcard. */
static int overlaps(const diag_addr_t *a, const diag_addr_t *b)
{
    if (a->port != b->port)
        return 0;
    if (is_wildcard(a) || is_wildcard(b))
        return 1;
    size_t words = a->family == AF_INET ? 1 : 4;
    return a->family == b->family && memcmp(a->addr, b->addr, words * 4) == 0;
}

static int ours(const tt_listenset_t *s, unsigned long inode)
{
    for (size_t i = 0; i < s->n; i++) {
        struct stat st;
        if (fstat(s->socks[i].fd, &st) == 0 && (unsigned long)st.st_ino == inode)
            return 1;
    }
    return 0;
}

/* Dumps the TCP listeners of one family; returns 0 when every one that overlaps an address of
 * the set is the set's own, 1 with *clash set when one is not, -1 if sock_diag failed. */
static int scan_family(const tt_listenset_t *s, int family, const tt_listen_sock_t **clash)
{
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0)
        return -1;
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } msg = {
        .nlh = {.nlmsg_len = sizeof(msg),
                .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
        .req = {.sdiag_family = (uint8_t)family,
                .sdiag_protocol = IPPROTO_TCP,
                .idiag_states = 1u << TCP_LISTEN},
    };
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    struct timeval tv = {.tv_sec = 2};
    setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (sendto(nl, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        close(nl);
        return -1;
    }
    long buf[8192 / sizeof(long)];
    int result = 0;
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof(buf), 0);
        if (n <= 0) {
            result = -1;
            break;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE)
                goto done;
            if (h->nlmsg_type == NLMSG_ERROR) {
                result = -1;
                goto done;
            }
            const struct inet_diag_msg *m = NLMSG_DATA(h);
            diag_addr_t them = {.family = m->idiag_family, .port = m->id.idiag_sport};
            memcpy(them.addr, m->id.idiag_src, sizeof(them.addr));
            for (size_t i = 0; i < s->n && result == 0; i++) {
                diag_addr_t mine = to_diag(&s->socks[i].addr);
                if (overlaps(&mine, &them) && !ours(s, m->idiag_inode)) {
                    *clash = &s->socks[i];
                    result = 1;
                }
            }
        }
    }
done:
    close(nl);
    return result;
}

int tt_listenset_check_exclusive(const tt_listenset_t *s, char *err, size_t errlen)
{
    if (s->n == 0)
        return 0;
    const int families[] = {AF_INET, AF_INET6};
    for (size_t f = 0; f < TT_ARRAY_SIZE(families); f++) {
        const tt_listen_sock_t *clash = NULL;
        int rc = scan_family(s, families[f], &clash);
        if (rc == 1) {
            char a[TT_ADDR_STRLEN];
            const tt_addr_t *ad = &clash->addr;
            int port = ntohs(((const struct sockaddr_in *)&ad->ss)->sin_port);
            snprintf(err, errlen,
                     "%s%s: in use by another process (ss -ltnp 'sport = :%d' shows it; to "
                     "replace a running tetherd use --takeover)",
                     clash->kind == TT_LISTEN_ADMIN ? "admin " : "", tt_addr_format(ad, a), port);
            return -1;
        }
        /* Without sock_diag (a sandbox without netlink) the check is skipped: binding worked,
         * which is what every other daemon settles for. */
    }
    return 0;
}
