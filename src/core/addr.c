#include "core/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    } else {
        snprintf(buf, TT_ADDR_STRLEN, "unknown");
    }
    return buf;
}

int tt_addr_compare(const tt_addr_t *a, const tt_addr_t *b)
{
    int fa = a->ss.ss_family, fb = b->ss.ss_family;
    if (fa != fb)
        return fa < fb ? -1 : 1;
    const void *pa, *pb;
    size_t len;
    in_port_t porta, portb;
    if (fa == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        pa = &x->sin_addr, pb = &y->sin_addr, len = sizeof(x->sin_addr);
        porta = x->sin_port, portb = y->sin_port;
    } else if (fa == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        pa = &x->sin6_addr, pb = &y->sin6_addr, len = sizeof(x->sin6_addr);
        porta = x->sin6_port, portb = y->sin6_port;
    } else {
        return memcmp(&a->ss, &b->ss, sizeof(a->ss));
    }
    int c = memcmp(pa, pb, len);
    if (c != 0)
        return c < 0 ? -1 : 1;
    porta = ntohs(porta), portb = ntohs(portb);
    return porta == portb ? 0 : porta < portb ? -1 : 1;
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

int tt_addr_port(const tt_addr_t *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

void tt_addr_set_port(tt_addr_t *a, int port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
}

int tt_addr_parse_list(const char *s, int default_port, tt_addr_t *out, size_t max,
                       const char **why)
{
    static const char bad[] = "expected IP[:PORT] or [IPv6][:PORT], separated by commas";
    size_t n = 0;
    const char *p = s;
    for (;;) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, ", \t");
        char one[80], with_port[96];
        if (len >= sizeof(one)) {
            *why = bad;
            return -1;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        p += len;
        if (n == max) {
            *why = "too many addresses";
            return -1;
        }
        struct in6_addr a6;
        int bare = 1;
        if (one[0] == '[' && one[len - 1] == ']')
            snprintf(with_port, sizeof(with_port), "%s:%d", one, default_port);
        else if (inet_pton(AF_INET6, one, &a6) == 1)
            snprintf(with_port, sizeof(with_port), "[%s]:%d", one, default_port);
        else if (strchr(one, ':') == NULL)
            snprintf(with_port, sizeof(with_port), "%s:%d", one, default_port);
        else {
            snprintf(with_port, sizeof(with_port), "%s", one);
            bare = 0;
        }
        if (tt_addr_parse(with_port, &out[n]) < 0 || (!bare && tt_addr_port(&out[n]) == 0)) {
            *why = bad;
            return -1;
        }
        n++;
    }
    if (n == 0) {
        *why = "empty list";
        return -1;
    }
    return (int)n;
}
