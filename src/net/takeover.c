#include "net/takeover.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PROTO_VERSION "1"

static int unix_addr(const char *path, struct sockaddr_un *sun, char *err, size_t errlen)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun->sun_path)) {
        snprintf(err, errlen, "control_socket %s: path too long (at most %zu bytes)", path,
                 sizeof(sun->sun_path) - 1);
        return -1;
    }
    strcpy(sun->sun_path, path);
    return 0;
}

int tt_control_listen(tt_control_t *c, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    char tmp[sizeof(sun.sun_path) + 32];
    c->fd = -1;
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    if (unix_addr(path, &sun, err, errlen) < 0 || unix_addr(tmp, &sun, err, errlen) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control_socket %s: socket: %s", path, strerror(errno));
        return -1;
    }
    unlink(tmp);
    mode_t old = umask(077);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    struct stat st;
    if (rc < 0 || listen(fd, 8) < 0 || rename(tmp, path) < 0 || stat(path, &st) < 0) {
        snprintf(err, errlen, "control_socket %s: %s", path, strerror(errno));
        unlink(tmp);
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->ino = st.st_ino;
    c->dev = st.st_dev;
    c->path = path;
    return 0;
}

void tt_control_close(tt_control_t *c)
{
    if (c->fd < 0)
        return;
    struct stat st;
    /* A successor renamed its own socket over the path: that one stays. */
    if (stat(c->path, &st) == 0 && st.st_ino == c->ino && st.st_dev == c->dev)
        unlink(c->path);
    close(c->fd);
    c->fd = -1;
}

int tt_control_connect(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    if (unix_addr(path, &sun, err, errlen) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        snprintf(err, errlen, "control_socket %s: %s (is a tetherd running with it?)", path,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* One message into buf (NUL-terminated), and its descriptor in *fd when one came (else -1).
 * Returns the length, 0 at EOF, or -1 on error or timeout. */
static ssize_t recv_msg(int conn, char *buf, size_t len, int *fd, int timeout_ms)
{
    struct pollfd p = {.fd = conn, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc == 0)
        errno = ETIMEDOUT;
    if (rc <= 0)
        return -1;
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = len - 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
    ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    if (fd != NULL)
        *fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int got;
            memcpy(&got, CMSG_DATA(c), sizeof(got));
            if (fd != NULL)
                *fd = got;
            else
                close(got);
        }
    }
    return n;
}

static int send_msg(int conn, const char *text, int fd)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = &ctl;
        msg.msg_controllen = sizeof(ctl);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(fd));
    }
    ssize_t n;
    do
        n = sendmsg(conn, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)iov.iov_len ? 0 : -1;
}

int tt_takeover_serve(int conn, const tt_listenset_t *ls, int timeout_ms, pid_t *peer, char *err,
                      size_t errlen)
{
    char buf[64];
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    *peer = 0;
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
        if (cred.uid != geteuid() && cred.uid != 0) {
            snprintf(err, errlen, "refused a takeover by uid %u (pid %d): not tetherd's user",
                     (unsigned)cred.uid, (int)cred.pid);
            return -1;
        }
    }
    ssize_t n = recv_msg(conn, buf, sizeof(buf), NULL, timeout_ms);
    int pid;
    if (n > 0 && sscanf(buf, "takeover " PROTO_VERSION " pid=%d", &pid) == 1)
        *peer = pid;
    else if (n > 0)
        n = -2;
    if (n <= 0) {
        snprintf(err, errlen, "takeover: %s",
                 n == -2 ? "not a takeover request"
                 : n < 0 ? strerror(errno)
                         : "the new process went away");
        return -1;
    }
    snprintf(buf, sizeof(buf), "sockets " PROTO_VERSION " pid=%d", (int)getpid());
    if (send_msg(conn, buf, -1) < 0)
        goto send_failed;
    for (size_t i = 0; i < ls->n; i++)
        if (send_msg(conn,
                     ls->socks[i].kind == TT_LISTEN_ADMIN ? "admin"
                     : ls->socks[i].shared                ? "proxy-shared"
                                                          : "proxy",
                     ls->socks[i].fd) < 0)
            goto send_failed;
    if (send_msg(conn, "end", -1) < 0)
        goto send_failed;
    n = recv_msg(conn, buf, sizeof(buf), NULL, timeout_ms);
    if (n <= 0 || strcmp(buf, "ready") != 0) {
        snprintf(err, errlen, "takeover: the new process %s before it was ready",
                 n < 0 && errno == ETIMEDOUT ? "timed out" : "went away");
        return -1;
    }
    return 0;
send_failed:
    snprintf(err, errlen, "takeover: send: %s", strerror(errno));
    return -1;
}

int tt_takeover_receive(int conn, tt_listenset_t *ls, int timeout_ms, pid_t *peer, char *err,
                        size_t errlen)
{
    char buf[64];
    int adopted = 0;
    *peer = 0;
    snprintf(buf, sizeof(buf), "takeover " PROTO_VERSION " pid=%d", (int)getpid());
    if (send_msg(conn, buf, -1) < 0) {
        snprintf(err, errlen, "takeover: send: %s", strerror(errno));
        return -1;
    }
    ssize_t n = recv_msg(conn, buf, sizeof(buf), NULL, timeout_ms);
    int pid;
    if (n <= 0 || sscanf(buf, "sockets " PROTO_VERSION " pid=%d", &pid) != 1) {
        snprintf(err, errlen, "takeover: %s",
                 n < 0   ? strerror(errno)
                 : n > 0 ? "the running tetherd speaks another takeover protocol"
                         : "the running tetherd closed the connection");
        return -1;
    }
    *peer = pid;
    for (;;) {
        int fd;
        n = recv_msg(conn, buf, sizeof(buf), &fd, timeout_ms);
        if (n > 0 && strcmp(buf, "end") == 0 && fd < 0)
            return adopted;
        int shared = n > 0 && strcmp(buf, "proxy-shared") == 0;
        int kind = n > 0 && strcmp(buf, "admin") == 0               ? TT_LISTEN_ADMIN
                   : n > 0 && (shared || strcmp(buf, "proxy") == 0) ? TT_LISTEN_PROXY
                                                                    : -1;
        if (kind < 0 || fd < 0) {
            if (fd >= 0)
                close(fd);
            snprintf(err, errlen, "takeover: %s after %d sockets",
                     n < 0 ? strerror(errno) : "unexpected message", adopted);
            return -1;
        }
        if (tt_listenset_adopt(ls, fd, (tt_listen_kind_t)kind) == 0) {
            ls->socks[ls->n - 1].shared = shared;
            adopted++;
        }
    }
}

void tt_takeover_confirm(int conn)
{
    send_msg(conn, "ready", -1);
    close(conn);
}
