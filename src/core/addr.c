#include "core/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static int parse_port(const char *s, int *port)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

int tt_addr_parse(const char *s, tt_addr_t *out)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon;
    int port;
    memset(out, 0, sizeof(*out));
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host))
            return -1;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
            return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    if (parse_port(colon + 1, &port) < 0)
        return -1;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*v6);
        return 0;
    }
    return -1;
}

int tt_addr_parse_listen(const char *s, tt_addr_t *out)
{
    if (strncmp(s, "unix:", 5) != 0)
        return tt_addr_parse(s, out);
    const char *path = s + 5;
    struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
    size_t len = strlen(path);
    if (path[0] != '/' || len >= sizeof(un->sun_path))
        return -1;
    memset(out, 0, sizeof(*out));
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, len + 1);
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

int tt_addr_is_unix(const tt_addr_t *a)
{
    return a->ss.ss_family == AF_UNIX;
}

const char *tt_addr_unix_path(const tt_addr_t *a)
{
    return ((const struct sockaddr_un *)&a->ss)->sun_path;
}

int tt_addr_resolve(const char *host, int port, tt_addr_t *out, int max, const char **err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *res, *ai;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        *err = gai_strerror(rc);
        return -1;
    }
    int n = 0;
    for (ai = res; ai != NULL && n < max; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(out[n].ss))
            continue;
        memset(&out[n], 0, sizeof(out[n]));
        memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
        out[n].len = ai->ai_addrlen;
        n++;
    }
    freeaddrinfo(res);
    if (n == 0)
        *err = "no usable address";
    return n == 0 ? -1 : n;
}

const char *tt_addr_format(const tt_addr_t *a, char *buf)
{
    char host[INET6_ADDRSTRLEN];
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
        snprintf(buf, TT_ADDR_STRLEN, "%s:%d", host, ntohs(v4->sin_port));
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
        snprintf(buf, TT_ADDR_STRLEN, "[%s]:%d", host, ntohs(v6->sin6_port));
    } else if (a->ss.ss_family == AF_UNIX) {
        /* An unnamed peer's address ends before sun_path. */
        const char *path =
            a->len > offsetof(struct sockaddr_un, sun_path) ? tt_addr_unix_path(a) : "";
        snprintf(buf, TT_ADDR_STRLEN, path[0] != '\0' ? "unix:%s" : "unix", path);
    } else {
        snprintf(buf, TT_ADDR_STRLEN, "unknown");
    }
    return buf;
}

int tt_addr_is_loopback(const tt_addr_t *a)
{
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a->ss;
        return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a->ss;
        return IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
    }
    return 0;
}
