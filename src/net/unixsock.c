#include "net/unixsock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A file at the path: 0 if none is left (or a stale socket was removed), -1 with err if it
 * must stay. */
static int clear_stale(const tt_addr_t *addr, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "cannot listen on unix:%s: the file exists and is not a socket",
                 path);
        return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        snprintf(err, errlen, "cannot listen on unix:%s: socket: %s", path, strerror(errno));
        return -1;
    }
    int rc = connect(probe, (const struct sockaddr *)&addr->ss, addr->len);
    int saved = errno;
    close(probe);
    if (rc == 0) {
        snprintf(err, errlen,
                 "cannot listen on unix:%s: another process is listening there (another "
                 "tetherd?)",
                 path);
        return -1;
    }
    if (saved == ENOENT)
        return 0;
    if (saved != ECONNREFUSED) {
        snprintf(err, errlen, "cannot listen on unix:%s: checking the socket file: %s", path,
                 strerror(saved));
        return -1;
    }
    /* Refused: nobody listens. Removed only if it is still the file just probed. */
    struct stat again;
    if (lstat(path, &again) == 0 && again.st_dev == st.st_dev && again.st_ino == st.st_ino &&
        unlink(path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot listen on unix:%s: removing the stale socket file: %s", path,
                 strerror(errno));
        return -1;
    }
    return 0;
}

int tt_unix_listen(tt_unix_listener_t *l, const tt_addr_t *addr, int backlog,
                   const tt_unix_perms_t *perms, char *err, size_t errlen)
{
    l->fd = -1;
    snprintf(l->path, sizeof(l->path), "%s", tt_addr_unix_path(addr));
    if (clear_stale(addr, l->path, err, errlen) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on unix:%s: socket: %s", l->path, strerror(errno));
        return -1;
    }
    const char *step = "bind";
    struct stat st;
    int bound = 0;
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0)
        goto fail;
    bound = 1;
    step = "stat";
    if (stat(l->path, &st) < 0)
        goto fail;
    step = "chown (listen_owner, listen_group)";
    if ((perms->uid >= 0 || perms->gid >= 0) &&
        chown(l->path, (uid_t)perms->uid, (gid_t)perms->gid) < 0)
        goto fail;
    step = "chmod (listen_mode)";
    if (chmod(l->path, (mode_t)perms->mode) < 0)
        goto fail;
    step = "listen";
    if (listen(fd, backlog) < 0)
        goto fail;
    l->fd = fd;
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    return 0;
fail:
    snprintf(err, errlen, "cannot listen on unix:%s: %s: %s", l->path, step, strerror(errno));
    close(fd);
    if (bound)
        unlink(l->path);
    return -1;
}

void tt_unix_adopt_file(tt_unix_listener_t *l, int fd, const tt_addr_t *addr)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&addr->ss;
    struct stat st;
    l->fd = -1;
    snprintf(l->path, sizeof(l->path), "%s", un->sun_path);
    if (l->path[0] == '\0' || stat(l->path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return;
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->fd = fd;
}

void tt_unix_listener_close(tt_unix_listener_t *l)
{
    if (l->fd < 0)
        return;
    close(l->fd);
    l->fd = -1;
    struct stat st;
    if (stat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
        unlink(l->path);
}
