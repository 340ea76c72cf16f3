#include "churn/addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void tt_churn_addr_set(tt_churn_addr_t *a, int family, const void *raw, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    a->port = port;
    if (family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->addr, raw, 4);
    } else if (family == AF_INET6) {
        if (memcmp(raw, v4mapped_prefix, 12) == 0) {
            a->family = AF_INET;
            memcpy(a->addr, (const uint8_t *)raw + 12, 4);
        } else {
            a->family = AF_INET6;
            memcpy(a->addr, raw, 16);
        }
    }
}

int tt_churn_addr_eq(const tt_churn_addr_t *a, const tt_churn_addr_t *b)
{
    return a->family == b->family && a->port == b->port &&
           memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

int tt_churn_addr_is_any(const tt_churn_addr_t *a)
{
    static const uint8_t zero[16];
    return memcmp(a->addr, zero, a->family == AF_INET ? 4 : 16) == 0;
}

const char *tt_churn_addr_str(const tt_churn_addr_t *a, char *out)
{
    char ip[INET6_ADDRSTRLEN];
    if (a->family != AF_INET && a->family != AF_INET6) {
        snprintf(out, TT_CHURN_ADDR_STRLEN, "*");
        return out;
    }
    inet_ntop(a->family, a->addr, ip, sizeof(ip));
    snprintf(out, TT_CHURN_ADDR_STRLEN, a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
             (unsigned)a->port);
    return out;
}

int tt_churn_addr_parse(tt_churn_addr_t *a, const char *s)
{
    char ip[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(ip))
        return -1;
    size_t n = (size_t)(colon - s);
    memcpy(ip, s, n);
    ip[n] = '\0';
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port > 65535)
        return -1;
    uint8_t raw[16];
    if (ip[0] == '[' && n > 2 && ip[n - 1] == ']') {
        ip[n - 1] = '\0';
        if (inet_pton(AF_INET6, ip + 1, raw) != 1)
            return -1;
        tt_churn_addr_set(a, AF_INET6, raw, (uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET, ip, raw) != 1)
        return -1;
    tt_churn_addr_set(a, AF_INET, raw, (uint16_t)port);
    return 0;
}

uint64_t tt_churn_addr_hash(const tt_churn_addr_t *a, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    uint8_t bytes[19];
    bytes[0] = a->family;
    memcpy(bytes + 1, a->addr, 16);
    bytes[17] = (uint8_t)(a->port >> 8);
    bytes[18] = (uint8_t)a->port;
    for (size_t i = 0; i < sizeof(bytes); i++) {
        h ^= bytes[i];
        h *= 1099511628211ULL;
    }
    return h;
}
