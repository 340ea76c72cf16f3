#include "config/config.h"

#include "config/values.h"
#include "core/buf.h"
#include "core/invariant.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef enum {
    F_INT,
    F_BOOL,
    F_SIZE,
    F_DURATION,
    F_DURATION_OFF, /* a duration, or "off" / 0 */
    F_IDLE,         /* a duration, or "auto" */
    F_WORKERS,      /* a count, or "auto" (kept as 0) */
    F_LOGLEVEL,
    F_ADDR,
    F_LISTEN, /* F_ADDR, or unix:/path */
    F_MODE,   /* octal permission bits */
    F_USER,   /* a user name or uid */
    F_GROUP,  /* a group name or gid */
    F_URL,
    F_HOSTS,
    F_PATH,        /* a file name */
    F_STRING,      /* free text */
    F_TLSVER,      /* 1.2 or 1.3, kept as 12 or 13 */
    F_ENUM,        /* one of names, kept as its index */
    F_DNS_REFRESH, /* ttl, off, or a duration */
    F_ENDPOINTS,   /* IP[:PORT], ... */
    F_RESOLVERS,   /* IP[:PORT], ... */
    F_PERCENT,     /* 0..100, with or without a trailing % */
    F_REQLINE,     /* "METHOD TARGET" or off, kept as text (NULL: off) */
    F_STATUSES,    /* "200-399,404", kept as text */
} field_type_t;

typedef struct {
    const char *key;
    field_type_t type;
    size_t offset;     /* of the int64_t value, tt_addr_t, or char * */
    size_t has_offset; /* F_ADDR: int flag set when present */
    int64_t def;
    int64_t min, max;
    const char *const *names; /* F_ENUM, NULL-terminated */
} field_t;

#define G(k, t, f, d, lo, hi)                                                                      \
    {                                                                                              \
        k, t, offsetof(tt_conf_t, f), 0, d, lo, hi, NULL                                           \
    }
#define U(k, t, f, d, lo, hi)                                                                      \
    {                                                                                              \
        k, t, offsetof(tt_upstream_conf_t, f), 0, d, lo, hi, NULL                                  \
    }
#define E(k, f, d, n)                                                                              \
    {                                                                                              \
        k, F_ENUM, offsetof(tt_upstream_conf_t, f), 0, d, 0, 0, n                                  \
    }
#define DAY (24LL * 3600 * 1000)

/* Index order matches tt_dns_empty_t and tt_balance_t. */
static const char *const dns_empty_names[] = {"keep", "clear", NULL};
static const char *const balance_names[] = {"least_request", "round_robin", "random", NULL};

/* Every key, its type and its default: the one place defaults live (docs/configuration.md). */
static const field_t global_fields[] = {
    G("workers", F_WORKERS, workers, 0, 0, 256),
    {"proxy_listen", F_LISTEN, offsetof(tt_conf_t, proxy_listen),
     offsetof(tt_conf_t, has_proxy_listen), 0, 0, 0, NULL},
    G("proxy_listen_mode", F_MODE, proxy_listen_mode, 0660, 0, 0777),
    G("proxy_listen_owner", F_USER, proxy_listen_owner, -1, 0, UINT32_MAX - 1),
    G("proxy_listen_group", F_GROUP, proxy_listen_group, -1, 0, UINT32_MAX - 1),
    {"admin", F_ADDR, offsetof(tt_conf_t, admin), offsetof(tt_conf_t, has_admin), 0, 0, 0, NULL},
    G("admin_allow_remote", F_BOOL, admin_allow_remote, 0, 0, 1),
    G("log_level", F_LOGLEVEL, log_level, TT_LOG_INFO, 0, 3),
    G("max_head_size", F_SIZE, max_head_size, 65536, 1024, 1 << 24),
    G("client_header_timeout", F_DURATION, client_header_timeout, 10000, 1, DAY),
    G("client_idle_timeout", F_DURATION, client_idle_timeout, 60000, 1, DAY),
    G("lingering_timeout", F_DURATION_OFF, lingering_timeout, 5000, 0, 600000),
    G("request_buffer", F_SIZE, request_buffer, 65536, 0, 1 << 24),
    G("client_body_timeout", F_DURATION, client_body_timeout, 60000, 1, DAY),
    G("drain_timeout", F_DURATION, drain_timeout, 10000, 0, DAY),
    G("tcp_defer_accept", F_DURATION_OFF, tcp_defer_accept, 1000, 0, 600000),
    G("max_client_connections", F_WORKERS, max_client_connections, 0, 0, 100000000),
    {"access_log", F_PATH, offsetof(tt_conf_t, access_log), 0, 0, 0, 0, NULL},
    {"control_socket", F_PATH, offsetof(tt_conf_t, control_socket), 0, 0, 0, 0, NULL},
    {"resolver", F_RESOLVERS, offsetof(tt_conf_t, resolvers), 0, 0, 0, 0, NULL},
};

static const field_t upstream_fields[] = {
    {"url", F_URL, offsetof(tt_upstream_conf_t, url), 0, 0, 0, 0, NULL},
    {"listen", F_LISTEN, offsetof(tt_upstream_conf_t, listen),
     offsetof(tt_upstream_conf_t, has_listen), 0, 0, 0, NULL},
    U("listen_mode", F_MODE, listen_mode, 0660, 0, 0777),
    U("listen_owner", F_USER, listen_owner, -1, 0, UINT32_MAX - 1),
    U("listen_group", F_GROUP, listen_group, -1, 0, UINT32_MAX - 1),
    {"hosts", F_HOSTS, offsetof(tt_upstream_conf_t, hosts), 0, 0, 0, 0, NULL},
    U("preserve_host", F_BOOL, preserve_host, 0, 0, 1),
    {"endpoints", F_ENDPOINTS, offsetof(tt_upstream_conf_t, endpoints), 0, 0, 0, 0, NULL},
    U("dns_refresh", F_DNS_REFRESH, dns_refresh, TT_DNS_REFRESH_BY_TTL, 100, DAY),
    U("dns_min_ttl", F_DURATION, dns_min_ttl, 1000, 100, DAY),
    U("dns_max_ttl", F_DURATION, dns_max_ttl, 300000, 100, DAY),
    E("dns_empty", dns_empty, 0, dns_empty_names),
    E("balance", balance, 0, balance_names),
    U("connect_retries", F_INT, connect_retries, 2, 0, 8),
    U("breaker_failures", F_INT, breaker_failures, 5, 0, 1000),
    U("breaker_cooldown", F_DURATION, breaker_cooldown, 5000, 100, 3600000),
    U("breaker_max_cooldown", F_DURATION, breaker_max_cooldown, 60000, 100, DAY),
    U("breaker_on_5xx", F_BOOL, breaker_on_5xx, 0, 0, 1),
    U("splice", F_BOOL, splice, 1, 0, 1),
    U("max_ejected", F_PERCENT, max_ejected, 50, 0, 100),
    U("probe", F_REQLINE, probe, 0, 0, 0),
    U("probe_interval", F_DURATION, probe_interval, 10000, 100, 3600000),
    U("probe_timeout", F_DURATION, probe_timeout, 1000, 10, 60000),
    U("probe_expect", F_STATUSES, probe_expect, 0, 0, 0),
    U("health_check", F_REQLINE, health_check, 0, 0, 0),
    U("health_interval", F_DURATION, health_interval, 5000, 100, 3600000),
    U("health_timeout", F_DURATION, health_timeout, 1000, 10, 60000),
    U("health_rise", F_INT, health_rise, 2, 1, 100),
    U("health_fall", F_INT, health_fall, 2, 1, 100),
    U("health_expect", F_STATUSES, health_expect, 0, 0, 0),
    U("health_host", F_STRING, health_host, 0, 0, 0),
    U("max_connections", F_INT, max_connections, 256, 1, 1000000),
    U("max_idle", F_INT, max_idle, 64, 0, 1000000),
    U("min_idle", F_INT, min_idle, 0, 0, 1000000),
    U("max_queue", F_INT, max_queue, 1024, 0, 1000000),
    U("max_requests", F_INT, max_requests, 0, 0, INT64_MAX),
    U("retry_buffer", F_SIZE, retry_buffer, 65536, 0, 1 << 24),
    U("idle_timeout", F_IDLE, idle_timeout, TT_IDLE_AUTO, 1, DAY),
    U("connect_timeout", F_DURATION, connect_timeout, 5000, 1, DAY),
    U("response_timeout", F_DURATION, response_timeout, 30000, 1, DAY),
    U("response_idle_timeout", F_DURATION_OFF, response_idle_timeout, 60000, 0, DAY),
    U("queue_timeout", F_DURATION, queue_timeout, 1000, 1, DAY),
    U("max_lifetime", F_DURATION_OFF, max_lifetime, 600000, 0, 365 * DAY),
    U("tcp_keepalive", F_DURATION_OFF, tcp_keepalive, 30000, 0, DAY),
    U("lease_warn", F_DURATION_OFF, lease_warn, 30000, 0, DAY),
    U("lease_timeout", F_DURATION_OFF, lease_timeout, 0, 0, DAY),
    U("tls_server_name", F_STRING, tls_server_name, 0, 0, 0),
    U("tls_ca", F_PATH, tls_ca, 0, 0, 0),
    U("tls_verify", F_BOOL, tls_verify, 1, 0, 1),
    U("tls_min_version", F_TLSVER, tls_min_version, 12, 12, 13),
    U("tls_cert", F_PATH, tls_cert, 0, 0, 0),
    U("tls_key", F_PATH, tls_key, 0, 0, 0),
    U("tls_session_reuse", F_BOOL, tls_session_reuse, 1, 0, 1),
};

_Static_assert(TT_ARRAY_SIZE(upstream_fields) <= TT_UPSTREAM_KEYS_MAX, "key_line too small");

/* Fields that hold a pointer or an address rather than an int64_t (no UNSET, no default). */
static int is_scalar(field_type_t t)
{
    return t != F_ADDR && t != F_LISTEN && t != F_URL && t != F_HOSTS && t != F_PATH &&
           t != F_STRING && t != F_ENDPOINTS && t != F_RESOLVERS && t != F_REQLINE &&
           t != F_STATUSES;
}

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

int tt_parse_duration_ms(const char *s, int64_t *out)
{
    /* Plain decimal only: strtod would also take hex ("0x10") and exponents ("1e3"). */
    size_t digits = strspn(s, "0123456789.");
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (digits == 0 || end != s + digits || errno != 0 || v < 0 || !isdigit((unsigned char)s[0]))
        return -1;
    double scale;
    if (*end == '\0' || strcmp(end, "s") == 0)
        scale = 1000;
    else if (strcmp(end, "ms") == 0)
        scale = 1;
    else if (strcmp(end, "m") == 0)
        scale = 60000;
    else if (strcmp(end, "h") == 0)
        scale = 3600000;
    else
        return -1;
    double ms = v * scale;
    if (ms > 1e15)
        return -1;
    *out = (int64_t)(ms + 0.5);
    return 0;
}

int tt_parse_size(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno != 0 || v < 0 || !isdigit((unsigned char)s[0]))
        return -1;
    long long scale = 1;
    if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0 || strcasecmp(end, "kib") == 0)
        scale = 1024;
    else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0 || strcasecmp(end, "mib") == 0)
        scale = 1024 * 1024;
    else if (*end != '\0')
        return -1;
    if (v > INT64_MAX / scale)
        return -1;
    *out = v * scale;
    return 0;
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int64_t *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Splits "http[s]://host:port[/]" into host, port and whether it is TLS. Returns a static reason
 * on failure. */
static const char *parse_url(const char *url, char **host, int *port, int *tls)
{
    const char *p;
    int default_port;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        default_port = 80;
        *tls = 0;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        default_port = 443;
        *tls = 1;
    } else {
        return "must start with http:// or https://";
    }
    const char *end = p + strcspn(p, "/?#");
    if (*end != '\0' && strcmp(end, "/") != 0)
        return "a path, query or fragment is not allowed (tether forwards the client's path)";
    const char *hstart = p, *hend, *colon;
    if (*p == '[') {
        hend = memchr(p, ']', (size_t)(end - p));
        if (hend == NULL)
            return "unterminated IPv6 address";
        hstart = p + 1;
        colon = hend + 1 < end && hend[1] == ':' ? hend + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        hend = colon != NULL ? colon : end;
    }
    if (hend == hstart)
        return "missing host";
    *port = default_port;
    if (colon != NULL) {
        char buf[8];
        size_t n = (size_t)(end - colon - 1);
        if (n == 0 || n >= sizeof(buf))
            return "bad port";
        memcpy(buf, colon + 1, n);
        buf[n] = '\0';
        int64_t v;
        if (parse_int(buf, &v) < 0 || v < 1 || v > 65535)
            return "bad port";
        *port = (int)v;
    }
    *host = tt_strndup(hstart, (size_t)(hend - hstart));
    return NULL;
}

static void free_hosts(char **hosts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(hosts[i]);
    free(hosts);
}

static const char *parse_hosts(const char *value, char ***out, size_t *n)
{
    char **hosts = NULL;
    size_t count = 0;
    const char *p = value;
    while (*p != '\0') {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        size_t len = strcspn(p, ", \t");
        if (len == 0)
            break;
        hosts = tt_realloc(hosts, (count + 1) * sizeof(*hosts));
        hosts[count] = tt_strndup(p, len);
        for (char *c = hosts[count]; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        count++;
        p += len;
    }
    if (count == 0) {
        free(hosts);
        return "empty list";
    }
    *out = hosts;
    *n = count;
    return NULL;
}

/* "IP[:PORT], ..." (no port: the url's, filled in later). */
static const char *parse_endpoints(const char *value, tt_addr_t **out, size_t *n)
{
    tt_addr_t *list = tt_calloc(TT_CONF_ENDPOINTS_MAX, sizeof(*list));
    const char *why;
    int count = tt_addr_parse_list(value, 0, list, TT_CONF_ENDPOINTS_MAX, &why);
    if (count < 0) {
        free(list);
        return why;
    }
    *out = list;
    *n = (size_t)count;
    return NULL;
}

/* Parsing state shared by the line reader and the inih handler. */
typedef struct {
    tt_conf_t *conf;
    tt_conf_error_t *err;
    FILE *fp;
    int line;
    int failed;
    tt_upstream_conf_t *current; /* NULL in [tether] */
    int in_global;
    uint64_t seen; /* bit per field of the current section, to refuse duplicates */
    int admin_line;
    int global_line[32];      /* line of each [tether] key set, 0 if not */
    int indented;             /* the line being parsed starts with white space */
    char line_key[64];        /* its text before '=' or ':', trimmed */
    const field_t *last_list; /* the list key the previous key line set, for continuations */
} parser_t;

_Static_assert(TT_ARRAY_SIZE(global_fields) <= 32, "global_line too small");

/* How much of the configuration path an error shows: its last bytes. */
#define TT_CONF_PATH_SHOWN 200

static void fail(parser_t *p, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(parser_t *p, int line, const char *key, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = 1;
    /* The command line has no line numbers: "command line: listen: ...". */
    char where[32] = "";
    if (line > 0)
        snprintf(where, sizeof(where), ":%d", line);
    /* A very long path keeps its tail (the file's name), so line, key and reason still fit. */
    const char *path = p->conf->path;
    size_t plen = strlen(path);
    const char *cut = plen > TT_CONF_PATH_SHOWN ? "..." : "";
    if (plen > TT_CONF_PATH_SHOWN)
        path += plen - TT_CONF_PATH_SHOWN;
    char *msg = p->err->msg;
    size_t room = sizeof(p->err->msg);
    int n = snprintf(msg, room, "%s%s%s: %s%s", cut, path, where, key ? key : "", key ? ": " : "");
    if (n < 0 || (size_t)n >= room) /* cannot happen with the cut path, but never write past */
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, room - (size_t)n, fmt, ap);
    va_end(ap);
}

static void init_upstream(tt_upstream_conf_t *u)
{
    memset(u, 0, sizeof(*u));
    for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++) {
        const field_t *f = &upstream_fields[i];
        if (is_scalar(f->type))
            *(int64_t *)((char *)u + f->offset) = TT_UNSET;
    }
}

static void init_global(tt_conf_t *c)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(global_fields); i++) {
        const field_t *f = &global_fields[i];
        if (is_scalar(f->type))
            *(int64_t *)((char *)c + f->offset) = TT_UNSET;
    }
}

static void begin_section(parser_t *p, const char *name)
{
    p->seen = 0;
    p->last_list = NULL; /* an indented line never continues a list of the section before */
    p->current = NULL;
    p->in_global = 0;
    if (strcmp(name, "tether") == 0) {
        p->in_global = 1;
        return;
    }
    if (strncmp(name, "upstream", 8) != 0 || !isspace((unsigned char)name[8])) {
        fail(p, p->line, NULL, "[%s]: unknown section (expected [tether] or [upstream NAME])",
             name);
        return;
    }
    const char *uname = name + 9;
    while (isspace((unsigned char)*uname))
        uname++;
    for (const char *c = uname; *c; c++) {
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.') {
            fail(p, p->line, NULL, "[%s]: upstream names use letters, digits, '-', '_' and '.'",
                 name);
            return;
        }
    }
    tt_conf_t *c = p->conf;
    for (size_t i = 0; i < c->nupstreams; i++) {
        if (strcmp(c->upstreams[i].name, uname) == 0) {
            fail(p, p->line, NULL, "[%s]: upstream defined twice (first on line %d)", name,
                 c->upstreams[i].line);
            return;
        }
    }
    c->upstreams = tt_realloc(c->upstreams, (c->nupstreams + 1) * sizeof(*c->upstreams));
    p->current = &c->upstreams[c->nupstreams++];
    init_upstream(p->current);
    p->current->name = tt_strdup(uname);
    p->current->line = p->line;
}

/* Reads one line for inih, counting lines and noticing section headers (inih does not report
 * empty sections or line numbers). */
static char *read_line(char *str, int num, void *stream)
{
    parser_t *p = stream;
    if (fgets(str, num, p->fp) == NULL)
        return NULL;
    p->line++;
    size_t len = strlen(str);
    if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(p->fp))
        fail(p, p->line, NULL, "line longer than %d characters", num - 2);
    if (p->line == 1 && strncmp(str, "\xEF\xBB\xBF", 3) == 0) /* UTF-8 byte order mark */
        memmove(str, str + 3, len - 2);
    const char *s = str;
    while (isspace((unsigned char)*s))
        s++;
    /* Syntax errors are reported here, as the line is read, so the first error in the file is
     * the one reported (inih would only say so after reading on). */
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL) {
            fail(p, p->line, NULL, "syntax error: section header without ']'");
            return str;
        }
        char name[128];
        size_t n = TT_MIN((size_t)(close - s - 1), sizeof(name) - 1);
        memcpy(name, s + 1, n);
        name[n] = '\0';
        begin_section(p, name);
    } else if (s == str && *s != '\0' && *s != ';' && *s != '#' && strpbrk(s, "=:") == NULL) {
        fail(p, p->line, NULL, "syntax error: expected [section], key = value, or a comment");
    }
    /* inih joins an indented line to the key above (a continuation); handle_key decides. */
    p->indented = s != str && *s != '\0' && *s != ';' && *s != '#';
    size_t klen = strcspn(s, "=:");
    while (klen > 0 && isspace((unsigned char)s[klen - 1]))
        klen--;
    klen = TT_MIN(klen, sizeof(p->line_key) - 1);
    memcpy(p->line_key, s, klen);
    p->line_key[klen] = '\0';
    return str;
}

static const char *set_field(const field_t *f, void *base, const char *value, parser_t *p)
{
    int64_t v = 0;
    int64_t *slot = (int64_t *)((char *)base + f->offset);
    switch (f->type) {
    case F_INT:
        if (parse_int(value, &v) < 0)
            return "not an integer";
        break;
    case F_BOOL:
        if (parse_bool(value, &v) < 0)
            return "expected yes or no";
        break;
    case F_SIZE:
        if (tt_parse_size(value, &v) < 0)
            return "not a size (examples: 4096, 64k, 1m)";
        break;
    case F_DURATION:
    case F_DURATION_OFF:
    case F_IDLE:
        if (f->type == F_IDLE && strcasecmp(value, "auto") == 0) {
            *slot = TT_IDLE_AUTO;
            return NULL;
        }
        if (f->type == F_DURATION_OFF && strcasecmp(value, "off") == 0) {
            *slot = 0;
            return NULL;
        }
        if (tt_parse_duration_ms(value, &v) < 0)
            return f->type == F_IDLE ? "not a duration or auto (examples: 500ms, 55s, 10m)"
                                     : "not a duration (examples: 500ms, 55s, 10m)";
        break;
    case F_WORKERS:
        if (strcasecmp(value, "auto") == 0) {
            *slot = 0;
            return NULL;
        }
        if (parse_int(value, &v) < 0 || v < 1)
            return "expected auto or a positive number";
        break;
    case F_LOGLEVEL: {
        tt_log_level_t level;
        if (tt_log_level_parse(value, &level) < 0)
            return "expected error, warn, info or debug";
        *slot = level;
        return NULL;
    }
    case F_ADDR:
        if (tt_addr_parse(value, (tt_addr_t *)slot) < 0)
            return "expected IP:PORT or [IPv6]:PORT";
        *(int *)((char *)base + f->has_offset) = 1;
        return NULL;
    case F_LISTEN:
        if (tt_addr_parse_listen(value, (tt_addr_t *)slot) < 0)
            return strncmp(value, "unix:", 5) == 0
                       ? "expected unix:/absolute/path (at most 107 bytes)"
                       : "expected IP:PORT, [IPv6]:PORT or unix:/absolute/path";
        *(int *)((char *)base + f->has_offset) = 1;
        return NULL;
    case F_MODE: {
        char *end;
        if (strspn(value, "01234567") != strlen(value) || strlen(value) > 4)
            return "expected octal permission bits (examples: 0660, 0600)";
        v = strtoll(value, &end, 8);
        break;
    }
    case F_USER:
    case F_GROUP:
        if (strspn(value, "0123456789") == strlen(value)) {
            if (parse_int(value, &v) < 0)
                return "not a number";
            break;
        }
        char buf[4096];
        if (f->type == F_USER) {
            struct passwd pw, *found = NULL;
            if (getpwnam_r(value, &pw, buf, sizeof(buf), &found) != 0 || found == NULL)
                return "no such user";
            v = pw.pw_uid;
        } else {
            struct group gr, *found = NULL;
            if (getgrnam_r(value, &gr, buf, sizeof(buf), &found) != 0 || found == NULL)
                return "no such group";
            v = gr.gr_gid;
        }
        break;
    case F_URL: {
        tt_upstream_conf_t *u = base;
        const char *why = parse_url(value, &u->host, &u->port, &u->tls);
        if (why != NULL)
            return why;
        u->url = tt_strdup(value);
        return NULL;
    }
    case F_HOSTS: {
        tt_upstream_conf_t *u = base;
        return parse_hosts(value, &u->hosts, &u->nhosts);
    }
    case F_PATH:
    case F_STRING:
        *(char **)slot = tt_strdup(value);
        return NULL;
    case F_REQLINE: {
        tt_request_line_t rl;
        const char *why;
        if (strcasecmp(value, "off") == 0)
            return NULL;
        if (tt_request_line_parse(value, &rl, &why) < 0)
            return why;
        *(char **)slot = tt_strdup(value);
        return NULL;
    }
    case F_STATUSES: {
        tt_status_set_t set;
        const char *why;
        if (tt_status_set_parse(value, &set, &why) < 0)
            return why;
        *(char **)slot = tt_strdup(value);
        return NULL;
    }
    case F_ENUM:
        for (int64_t i = 0; f->names[i] != NULL; i++) {
            if (strcmp(value, f->names[i]) == 0) {
                *slot = i;
                return NULL;
            }
        }
        return f->names == balance_names ? "expected least_request, round_robin or random"
                                         : "expected keep or clear";
    case F_DNS_REFRESH:
        if (strcasecmp(value, "ttl") == 0) {
            *slot = TT_DNS_REFRESH_BY_TTL;
            return NULL;
        }
        if (strcasecmp(value, "off") == 0) {
            *slot = 0;
            return NULL;
        }
        if (tt_parse_duration_ms(value, &v) < 0)
            return "expected ttl, off or a duration (examples: 30s, 5m)";
        break;
    case F_PERCENT: {
        char num[24];
        size_t len = strlen(value);
        if (len > 0 && value[len - 1] == '%')
            len--;
        if (len == 0 || len >= sizeof(num))
            return "expected a percentage (examples: 50%, 100)";
        memcpy(num, value, len);
        num[len] = '\0';
        if (parse_int(num, &v) < 0)
            return "expected a percentage (examples: 50%, 100)";
        break;
    }
    case F_ENDPOINTS: {
        tt_upstream_conf_t *u = base;
        return parse_endpoints(value, &u->endpoints, &u->nendpoints);
    }
    case F_RESOLVERS: {
        tt_conf_t *c = base;
        const char *why;
        int n = tt_addr_parse_list(value, 53, c->resolvers, TT_CONF_RESOLVERS_MAX, &why);
        if (n < 0)
            return why;
        c->nresolvers = (size_t)n;
        return NULL;
    }
    case F_TLSVER:
        if (strcmp(value, "1.2") == 0)
            *slot = 12;
        else if (strcmp(value, "1.3") == 0)
            *slot = 13;
        else
            return "expected 1.2 or 1.3";
        return NULL;
    }
    (void)p;
    if (v < f->min || v > f->max)
        return "out of range";
    *slot = v;
    return NULL;
}

/* Edit distance between two short keys (insertions, deletions, substitutions, swaps). */
static size_t key_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return SIZE_MAX;
    size_t d[41][41];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t best = TT_MIN(d[i - 1][j] + 1, d[i][j - 1] + 1);
            best = TT_MIN(best, d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                best = TT_MIN(best, d[i - 2][j - 2] + 1);
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

static const char *closest_key(const field_t *fields, size_t n, const char *name)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX, limit = strlen(name) <= 4 ? 1 : 2;
    for (size_t i = 0; i < n; i++) {
        size_t d = key_distance(fields[i].key, name);
        if (d < best_d) {
            best_d = d;
            best = fields[i].key;
        }
    }
    return best_d <= limit ? best : NULL;
}

static int has_key(const field_t *fields, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i].key, name) == 0)
            return 1;
    return 0;
}

/* An unknown key: a key of the other kind of section, or a near miss, says so. */
static void unknown_key(parser_t *p, const char *name, const char *section)
{
    const field_t *mine = p->in_global ? global_fields : upstream_fields;
    size_t nmine = p->in_global ? TT_ARRAY_SIZE(global_fields) : TT_ARRAY_SIZE(upstream_fields);
    const field_t *other = p->in_global ? upstream_fields : global_fields;
    size_t nother = p->in_global ? TT_ARRAY_SIZE(upstream_fields) : TT_ARRAY_SIZE(global_fields);
    const char *near = closest_key(mine, nmine, name);
    if (has_key(other, nother, name))
        fail(p, p->line, name, "unknown key in [%s]: it belongs in %s", section,
             p->in_global ? "an [upstream NAME] section" : "[tether]");
    else if (near != NULL)
        fail(p, p->line, name, "unknown key in [%s] (did you mean %s?)", section, near);
    else
        fail(p, p->line, name, "unknown key in [%s]", section);
}

/* inih strips inline comments that start with ';' only: "55s # why" reaches us whole. */
static int hash_comment(parser_t *p, const char *name, const char *value)
{
    const char *hash = strchr(value, '#');
    if (hash == NULL || hash == value || !isspace((unsigned char)hash[-1]))
        return 0;
    fail(p, p->line, name,
         "%s: only ';' starts an inline comment ('#' only at the start of a line); write "
         "\"%.*s ; %s\"",
         value, (int)(hash - value - 1), value, hash + 1 + strspn(hash + 1, " \t"));
    return 1;
}

/* An indented line after a list key: more entries of the list (inih's continuation lines). */
static int continue_list(parser_t *p, const char *name, const char *value)
{
    if (strchr(value, '=') != NULL) {
        fail(p, p->line, NULL,
             "indented line: it continues %s above; a key = value line must not be indented", name);
        return 0;
    }
    /* inih leaves the inline comment on a continuation line: cut it as it does elsewhere. */
    char line[256];
    snprintf(line, sizeof(line), "%s", value);
    for (char *c = line; *c; c++)
        if (*c == ';' && c > line && isspace((unsigned char)c[-1])) {
            *c = '\0';
            break;
        }
    value = line;
    if (hash_comment(p, name, value))
        return 0;
    tt_upstream_conf_t *u = p->current;
    char **more;
    size_t nmore;
    if (parse_hosts(value, &more, &nmore) != NULL)
        return 1; /* nothing but separators */
    u->hosts = tt_realloc(u->hosts, (u->nhosts + nmore) * sizeof(*u->hosts));
    memcpy(u->hosts + u->nhosts, more, nmore * sizeof(*more));
    u->nhosts += nmore;
    free(more);
    return 1;
}

static int handle_key(void *user, const char *section, const char *name, const char *value)
{
    parser_t *p = user;
    if (p->failed)
        return 0;
    const field_t *fields;
    size_t nfields;
    void *base;
    if (p->in_global) {
        fields = global_fields;
        nfields = TT_ARRAY_SIZE(global_fields);
        base = p->conf;
    } else if (p->current != NULL) {
        fields = upstream_fields;
        nfields = TT_ARRAY_SIZE(upstream_fields);
        base = p->current;
    } else {
        fail(p, p->line, name, "key outside of a section");
        return 0;
    }
    (void)section;
    if (p->indented && strcmp(name, p->line_key) != 0) { /* a continuation of name */
        if (p->last_list != NULL && strcmp(p->last_list->key, name) == 0)
            return continue_list(p, name, value);
        fail(p, p->line, NULL,
             "indented line: it would continue %s above, and only a list (hosts) may span "
             "lines; remove the indentation",
             name);
        return 0;
    }
    p->last_list = NULL;
    for (size_t i = 0; i < nfields; i++) {
        if (strcmp(fields[i].key, name) != 0)
            continue;
        if (p->seen & ((uint64_t)1 << i)) {
            fail(p, p->line, name, "set twice in this section");
            return 0;
        }
        p->seen |= (uint64_t)1 << i;
        if (!p->in_global)
            p->current->key_line[i] = p->line;
        else if (i < TT_ARRAY_SIZE(p->global_line))
            p->global_line[i] = p->line;
        if (p->in_global && fields[i].type == F_ADDR && strcmp(name, "admin") == 0)
            p->admin_line = p->line;
        if (*value == '\0') {
            fail(p, p->line, name, "empty value");
            return 0;
        }
        if (hash_comment(p, name, value))
            return 0;
        const char *why = set_field(&fields[i], base, value, p);
        if (why != NULL) {
            if (strcmp(why, "out of range") == 0)
                fail(p, p->line, name, "%s: out of range (%lld..%lld)", value,
                     (long long)fields[i].min, (long long)fields[i].max);
            else
                fail(p, p->line, name, "%s: %s", value, why);
            return 0;
        }
        if (fields[i].type == F_HOSTS)
            p->last_list = &fields[i];
        return 1;
    }
    unknown_key(p, name, section);
    return 0;
}

static void apply_defaults(const field_t *fields, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        const field_t *f = &fields[i];
        if (!is_scalar(f->type))
            continue;
        int64_t *slot = (int64_t *)((char *)base + f->offset);
        if (*slot == TT_UNSET)
            *slot = f->def;
    }
}

static int same_addr(const tt_addr_t *a, const tt_addr_t *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* TLS keys make sense only for an https:// upstream, and a client certificate needs its key. The
 * files themselves are checked when the TLS context is built (net/tls.h). */
static int check_tls_keys(parser_t *p, tt_upstream_conf_t *u)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++) {
        if (!u->tls && strncmp(upstream_fields[i].key, "tls_", 4) == 0 && u->key_line[i] != 0) {
            fail(p, u->key_line[i], upstream_fields[i].key,
                 "only for https:// upstreams ([upstream %s] has url = %s)", u->name, u->url);
            return -1;
        }
    }
    if ((u->tls_cert == NULL) != (u->tls_key == NULL)) {
        const char *set = u->tls_cert ? "tls_cert" : "tls_key";
        fail(p, tt_conf_key_line(u, set), set, "needs %s too (a client certificate and its key)",
             u->tls_cert ? "tls_key" : "tls_cert");
        return -1;
    }
    return 0;
}

/* The mode, owner and group keys of a listener (prefix "listen_" or "proxy_listen_") apply to a
 * unix: address only. */
static int check_unix_keys(parser_t *p, const field_t *fields, size_t n, const int *lines,
                           const char *prefix, const tt_addr_t *addr, int has_addr,
                           const char *section)
{
    if (has_addr && tt_addr_is_unix(addr))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (lines[i] == 0 || strncmp(fields[i].key, prefix, strlen(prefix)) != 0)
            continue;
        char a[TT_ADDR_STRLEN];
        fail(p, lines[i], fields[i].key, "only for a unix: address (%s has %.*s %s)", section,
             (int)strlen(prefix) - 1, prefix, has_addr ? tt_addr_format(addr, a) : "unset");
        return -1;
    }
    return 0;
}

static int host_is_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Where the endpoints come from: an explicit list or an IP literal are fixed, so dns_refresh
 * (other than off) has nothing to do there; a name is followed unless dns_refresh = off. */
static int check_endpoints(parser_t *p, tt_upstream_conf_t *u)
{
    int fixed = u->endpoints != NULL || host_is_literal(u->host);
    int line = tt_conf_key_line(u, "dns_refresh");
    if (fixed && line != u->line && u->dns_refresh != 0) {
        fail(p, line, "dns_refresh",
             "nothing to re-resolve: [upstream %s] has %s (remove dns_refresh or set it off)",
             u->name, u->endpoints ? "an endpoints list" : "an IP address in url");
        return -1;
    }
    if (fixed)
        u->dns_refresh = 0;
    for (size_t i = 0; i < u->nendpoints; i++)
        if (tt_addr_port(&u->endpoints[i]) == 0)
            tt_addr_set_port(&u->endpoints[i], u->port);
    if (u->breaker_cooldown > u->breaker_max_cooldown) {
        fail(p, tt_conf_key_line(u, "breaker_cooldown"), "breaker_cooldown",
             "%lldms exceeds breaker_max_cooldown %lldms in [upstream %s]",
             (long long)u->breaker_cooldown, (long long)u->breaker_max_cooldown, u->name);
        return -1;
    }
    if (u->health_check != NULL && u->health_timeout >= u->health_interval) {
        fail(p, tt_conf_key_line(u, "health_timeout"), "health_timeout",
             "%lldms must be shorter than health_interval %lldms in [upstream %s]",
             (long long)u->health_timeout, (long long)u->health_interval, u->name);
        return -1;
    }
    if (u->dns_min_ttl > u->dns_max_ttl) {
        fail(p, tt_conf_key_line(u, "dns_min_ttl"), "dns_min_ttl",
             "%lldms exceeds dns_max_ttl %lldms in [upstream %s]", (long long)u->dns_min_ttl,
             (long long)u->dns_max_ttl, u->name);
        return -1;
    }
    return 0;
}

int tt_conf_key_line(const tt_upstream_conf_t *u, const char *key)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++)
        if (strcmp(upstream_fields[i].key, key) == 0 && u->key_line[i] != 0)
            return u->key_line[i];
    return u->line;
}

static int key_was_set(const tt_upstream_conf_t *u, const char *key)
{
    return tt_conf_key_line(u, key) != u->line;
}

/* min_idle <= max_idle <= max_connections. A max_idle above max_connections is capped quietly
 * (it is only a ceiling); a min_idle above what max_idle allows is an error that names every key
 * involved and where it was set, or that it is a default. */
static int check_idle_limits(parser_t *p, tt_upstream_conf_t *u)
{
    int capped = u->max_idle > u->max_connections;
    if (capped)
        u->max_idle = u->max_connections;
    if (u->min_idle <= u->max_idle)
        return 0;
    char idle[96], conns[96];
    if (key_was_set(u, "max_idle"))
        snprintf(idle, sizeof(idle), "max_idle = %lld (line %d)", (long long)u->max_idle,
                 tt_conf_key_line(u, "max_idle"));
    else
        snprintf(idle, sizeof(idle), "max_idle %lld (its default)", (long long)u->max_idle);
    conns[0] = '\0';
    if (capped && key_was_set(u, "max_connections"))
        snprintf(conns, sizeof(conns), ", capped by max_connections = %lld (line %d)",
                 (long long)u->max_connections, tt_conf_key_line(u, "max_connections"));
    else if (capped)
        snprintf(conns, sizeof(conns), ", capped by max_connections %lld (its default)",
                 (long long)u->max_connections);
    fail(p, tt_conf_key_line(u, "min_idle"), "min_idle",
         "%lld exceeds %s%s in [upstream %s]: pre-warmed connections must fit in the idle pool",
         (long long)u->min_idle, idle, conns, u->name);
    return -1;
}

/* A url that points at one of tetherd's own listeners would send every request around in a
 * loop until the connections ran out. Only numeric hosts and localhost are known here; names
 * are resolved at startup. */
static int check_not_self(parser_t *p, const tt_conf_t *c, const tt_upstream_conf_t *u)
{
    char text[300];
    snprintf(text, sizeof(text), strchr(u->host, ':') ? "[%s]:%d" : "%s:%d",
             strcasecmp(u->host, "localhost") == 0 ? "127.0.0.1" : u->host, u->port);
    tt_addr_t target;
    if (tt_addr_parse(text, &target) < 0)
        return 0;
    for (size_t i = 0; i < c->nupstreams; i++) {
        const tt_upstream_conf_t *o = &c->upstreams[i];
        if (o->has_listen && same_addr(&o->listen, &target)) {
            fail(p, tt_conf_key_line(u, "url"), "url",
                 "%s is tetherd's own listener (listen of [upstream %s], line %d): requests "
                 "would loop through tetherd",
                 u->url, o->name, tt_conf_key_line(o, "listen"));
            return -1;
        }
    }
    if ((c->has_proxy_listen && same_addr(&c->proxy_listen, &target)) ||
        (c->has_admin && same_addr(&c->admin, &target))) {
        fail(p, tt_conf_key_line(u, "url"), "url",
             "%s is tetherd's own %s address: requests would loop through tetherd", u->url,
             c->has_proxy_listen && same_addr(&c->proxy_listen, &target) ? "proxy_listen"
                                                                         : "admin");
        return -1;
    }
    return 0;
}

/* Fills defaults and checks what no single key can: required keys and cross-key rules. */
static int conf_finish(parser_t *p)
{
    tt_conf_t *c = p->conf;
    apply_defaults(global_fields, TT_ARRAY_SIZE(global_fields), c);
    if (check_unix_keys(p, global_fields, TT_ARRAY_SIZE(global_fields), p->global_line,
                        "proxy_listen_", &c->proxy_listen, c->has_proxy_listen, "[tether]") < 0)
        return -1;
    if (c->nupstreams == 0) {
        fail(p, p->line, NULL, "no [upstream NAME] section: nothing to proxy to");
        return -1;
    }
    for (size_t i = 0; i < c->nupstreams; i++) {
        tt_upstream_conf_t *u = &c->upstreams[i];
        apply_defaults(upstream_fields, TT_ARRAY_SIZE(upstream_fields), u);
        if (u->url == NULL) {
            fail(p, u->line, "url", "required in [upstream %s]", u->name);
            return -1;
        }
        if (!u->has_listen && !c->has_proxy_listen) {
            fail(p, u->line, "listen",
                 "[upstream %s] is unreachable: set listen here or proxy_listen in [tether]",
                 u->name);
            return -1;
        }
        if (u->hosts == NULL) {
            /* The authority clients use for this upstream: "host:port", and the bare host too
             * when the port is HTTP's default. IPv6 literals are bracketed as in a Host header. */
            char host[280], hp[600];
            snprintf(host, sizeof(host), strchr(u->host, ':') ? "[%s]" : "%s", u->host);
            int default_port = u->tls ? 443 : 80;
            if (u->port == default_port)
                snprintf(hp, sizeof(hp), "%s, %s:%d", host, host, default_port);
            else
                snprintf(hp, sizeof(hp), "%s:%d", host, u->port);
            parse_hosts(hp, &u->hosts, &u->nhosts);
        }
        if (check_tls_keys(p, u) < 0 || check_endpoints(p, u) < 0)
            return -1;
        char section[300];
        snprintf(section, sizeof(section), "[upstream %s]", u->name);
        if (check_unix_keys(p, upstream_fields, TT_ARRAY_SIZE(upstream_fields), u->key_line,
                            "listen_", &u->listen, u->has_listen, section) < 0)
            return -1;
        if (check_idle_limits(p, u) < 0 || check_not_self(p, c, u) < 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            tt_upstream_conf_t *o = &c->upstreams[j];
            if (u->has_listen && o->has_listen && same_addr(&u->listen, &o->listen)) {
                fail(p, u->line, "listen", "[upstream %s] uses the same address as [upstream %s]",
                     u->name, o->name);
                return -1;
            }
            for (size_t a = 0; a < u->nhosts; a++)
                for (size_t b = 0; b < o->nhosts; b++)
                    if (strcmp(u->hosts[a], o->hosts[b]) == 0) {
                        fail(p, u->line, "hosts",
                             "%s is claimed by [upstream %s] and [upstream %s]", u->hosts[a],
                             o->name, u->name);
                        return -1;
                    }
        }
        if (c->has_proxy_listen && u->has_listen && same_addr(&u->listen, &c->proxy_listen)) {
            fail(p, u->line, "listen", "[upstream %s] uses the proxy_listen address", u->name);
            return -1;
        }
    }
    if (c->has_admin && !c->admin_allow_remote && !tt_addr_is_loopback(&c->admin)) {
        fail(p, p->admin_line, "admin",
             "not a loopback address (set admin_allow_remote = yes to allow)");
        return -1;
    }
    return 0;
}

tt_conf_t *tt_conf_load(const char *path, tt_conf_error_t *err)
{
    tt_conf_t *conf = tt_calloc(1, sizeof(*conf));
    conf->path = tt_strdup(path);
    init_global(conf);
    parser_t p = {.conf = conf, .err = err};
    p.fp = fopen(path, "r");
    if (p.fp == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: cannot open: %s", path, strerror(errno));
        tt_conf_free(conf);
        return NULL;
    }
    int rc = ini_parse_stream(read_line, &p, handle_key, &p);
    fclose(p.fp);
    if (rc > 0 && !p.failed)
        fail(&p, rc, NULL, "syntax error (expected [section], key = value, or a comment)");
    if (p.failed || conf_finish(&p) < 0) {
        tt_conf_free(conf);
        return NULL;
    }
    return conf;
}

tt_conf_t *tt_conf_from_args(const char *listen, const char *url, const char *workers,
                             const char *log_level, tt_conf_error_t *err)
{
    tt_conf_t *conf = tt_calloc(1, sizeof(*conf));
    conf->path = tt_strdup(TT_CONF_COMMAND_LINE);
    init_global(conf);
    parser_t p = {.conf = conf, .err = err};
    p.in_global = 1;
    if ((workers != NULL && handle_key(&p, "tether", "workers", workers) == 0) ||
        (log_level != NULL && handle_key(&p, "tether", "log_level", log_level) == 0)) {
        tt_conf_free(conf);
        return NULL;
    }
    begin_section(&p, "upstream default");
    if (handle_key(&p, "upstream default", "url", url) == 0 ||
        handle_key(&p, "upstream default", "listen", listen) == 0 || conf_finish(&p) < 0) {
        tt_conf_free(conf);
        return NULL;
    }
    return conf;
}

void tt_conf_free(tt_conf_t *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i < conf->nupstreams; i++) {
        tt_upstream_conf_t *u = &conf->upstreams[i];
        free(u->name);
        free(u->url);
        free(u->host);
        free_hosts(u->hosts, u->nhosts);
        free(u->tls_server_name);
        free(u->tls_ca);
        free(u->tls_cert);
        free(u->tls_key);
        free(u->endpoints);
        free(u->probe);
        free(u->probe_expect);
        free(u->health_check);
        free(u->health_expect);
        free(u->health_host);
    }
    free(conf->upstreams);
    free(conf->access_log);
    free(conf->control_socket);
    free(conf->path);
    free(conf);
}

static void dump_fields(tt_buf_t *b, const field_t *fields, size_t n, const void *base)
{
    char addr[TT_ADDR_STRLEN];
    for (size_t i = 0; i < n; i++) {
        const field_t *f = &fields[i];
        const char *p = (const char *)base + f->offset;
        int64_t v = is_scalar(f->type) ? *(const int64_t *)p : 0;
        const tt_upstream_conf_t *u = base;
        if (fields == upstream_fields && !u->tls && strncmp(f->key, "tls_", 4) == 0)
            continue;
        if (fields == upstream_fields && strncmp(f->key, "listen_", 7) == 0 &&
            !(u->has_listen && tt_addr_is_unix(&u->listen)))
            continue;
        const tt_conf_t *c = base;
        if (fields == global_fields && strncmp(f->key, "proxy_listen_", 13) == 0 &&
            !(c->has_proxy_listen && tt_addr_is_unix(&c->proxy_listen)))
            continue;
        switch (f->type) {
        case F_TLSVER:
            tt_buf_appendf(b, "%s = 1.%d\n", f->key, (int)(v - 10));
            break;
        case F_ENUM:
            tt_buf_appendf(b, "%s = %s\n", f->key, f->names[v]);
            break;
        case F_DNS_REFRESH:
            if (v == TT_DNS_REFRESH_BY_TTL)
                tt_buf_appendf(b, "%s = ttl\n", f->key);
            else if (v == 0)
                tt_buf_appendf(b, "%s = off\n", f->key);
            else
                tt_buf_appendf(b, "%s = %lldms\n", f->key, (long long)v);
            break;
        case F_ENDPOINTS:
        case F_RESOLVERS: {
            const tt_addr_t *list =
                f->type == F_ENDPOINTS ? u->endpoints : ((const tt_conf_t *)base)->resolvers;
            size_t count =
                f->type == F_ENDPOINTS ? u->nendpoints : ((const tt_conf_t *)base)->nresolvers;
            if (count == 0)
                break;
            tt_buf_appendf(b, "%s = ", f->key);
            for (size_t k = 0; k < count; k++)
                tt_buf_appendf(b, "%s%s", k ? ", " : "", tt_addr_format(&list[k], addr));
            tt_buf_appendf(b, "\n");
            break;
        }
        case F_REQLINE:
            tt_buf_appendf(b, "%s = %s\n", f->key, *(char *const *)p ? *(char *const *)p : "off");
            break;
        case F_PATH:
        case F_STRING:
        case F_STATUSES:
            if (*(char *const *)p != NULL)
                tt_buf_appendf(b, "%s = %s\n", f->key, *(char *const *)p);
            break;
        case F_MODE:
            tt_buf_appendf(b, "%s = %04llo\n", f->key, (unsigned long long)v);
            break;
        case F_USER:
        case F_GROUP:
            if (v >= 0)
                tt_buf_appendf(b, "%s = %lld\n", f->key, (long long)v);
            break;
        case F_ADDR:
        case F_LISTEN:
            if (*(const int *)((const char *)base + f->has_offset))
                tt_buf_appendf(b, "%s = %s\n", f->key, tt_addr_format((const tt_addr_t *)p, addr));
            break;
        case F_URL:
            tt_buf_appendf(b, "%s = %s\n", f->key, *(char *const *)p);
            break;
        case F_HOSTS: {
            tt_buf_appendf(b, "%s = ", f->key);
            for (size_t h = 0; h < u->nhosts; h++)
                tt_buf_appendf(b, "%s%s", h ? ", " : "", u->hosts[h]);
            tt_buf_appendf(b, "\n");
            break;
        }
        case F_BOOL:
            tt_buf_appendf(b, "%s = %s\n", f->key, v ? "yes" : "no");
            break;
        case F_WORKERS:
            if (v == 0)
                tt_buf_appendf(b, "%s = auto\n", f->key);
            else
                tt_buf_appendf(b, "%s = %lld\n", f->key, (long long)v);
            break;
        case F_LOGLEVEL:
            tt_buf_appendf(b, "%s = %s\n", f->key, log_level_names[v]);
            break;
        case F_IDLE:
        case F_DURATION:
        case F_DURATION_OFF:
            if (v == TT_IDLE_AUTO)
                tt_buf_appendf(b, "%s = auto\n", f->key);
            else if (v == 0 && f->type == F_DURATION_OFF)
                tt_buf_appendf(b, "%s = off\n", f->key);
            else
                tt_buf_appendf(b, "%s = %lldms\n", f->key, (long long)v);
            break;
        case F_PERCENT:
            tt_buf_appendf(b, "%s = %lld%%\n", f->key, (long long)v);
            break;
        case F_INT:
        case F_SIZE:
            tt_buf_appendf(b, "%s = %lld\n", f->key, (long long)v);
            break;
        }
    }
}

char *tt_conf_dump(const tt_conf_t *conf)
{
    tt_buf_t b = {.data = tt_malloc(1024), .cap = 1024};
    tt_buf_appendf(&b, "[tether]\n");
    dump_fields(&b, global_fields, TT_ARRAY_SIZE(global_fields), conf);
    for (size_t i = 0; i < conf->nupstreams; i++) {
        tt_buf_appendf(&b, "\n[upstream %s]\n", conf->upstreams[i].name);
        dump_fields(&b, upstream_fields, TT_ARRAY_SIZE(upstream_fields), &conf->upstreams[i]);
    }
    tt_buf_append(&b, "", 1);
    return b.data;
}

/* ---- reload: what changed, and whether it can apply in place ------------------------------ */

/* Scalar keys whose value something copies once at startup, where a change in place would not
 * take: the thread count, sockets and their permissions, the process-wide client cap, the log
 * level (a plain global every thread reads), what the DNS thread follows, the balancer's
 * policy and the TLS context. A new key that is read through the configuration at use time
 * needs no entry: it applies in place. Non-scalar keys (addresses, strings, lists) always take
 * the takeover path: their text is shared with threads that are not paused. */
static const char *const restart_keys[] = {
    "workers",
    "proxy_listen_mode",
    "proxy_listen_owner",
    "proxy_listen_group",
    "admin_allow_remote",
    "log_level",
    "tcp_defer_accept",
    "max_client_connections",
    "listen_mode",
    "listen_owner",
    "listen_group",
    "dns_refresh",
    "dns_min_ttl",
    "dns_max_ttl",
    "dns_empty",
    "balance",
    "tls_verify",
    "tls_min_version",
    "tls_session_reuse",
};

static int needs_restart(const field_t *f)
{
    if (!is_scalar(f->type))
        return 1;
    for (size_t i = 0; i < TT_ARRAY_SIZE(restart_keys); i++)
        if (strcmp(f->key, restart_keys[i]) == 0)
            return 1;
    return 0;
}

static int same_string(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_addrs(const tt_addr_t *a, size_t na, const tt_addr_t *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (tt_addr_compare(&a[i], &b[i]) != 0)
            return 0;
    return 1;
}

/* 1 if field f holds the same value in sections a and b. */
static int same_field(const field_t *f, const void *a, const void *b)
{
    const char *pa = (const char *)a + f->offset, *pb = (const char *)b + f->offset;
    const tt_upstream_conf_t *ua = a, *ub = b;
    switch (f->type) {
    case F_ADDR:
    case F_LISTEN: {
        int ha = *(const int *)((const char *)a + f->has_offset);
        int hb = *(const int *)((const char *)b + f->has_offset);
        return ha == hb &&
               (!ha || tt_addr_compare((const tt_addr_t *)pa, (const tt_addr_t *)pb) == 0);
    }
    case F_URL:
    case F_PATH:
    case F_STRING:
    case F_STATUSES:
    case F_REQLINE:
        return same_string(*(char *const *)pa, *(char *const *)pb);
    case F_HOSTS:
        if (ua->nhosts != ub->nhosts)
            return 0;
        for (size_t i = 0; i < ua->nhosts; i++)
            if (strcmp(ua->hosts[i], ub->hosts[i]) != 0)
                return 0;
        return 1;
    case F_ENDPOINTS:
        return same_addrs(ua->endpoints, ua->nendpoints, ub->endpoints, ub->nendpoints);
    case F_RESOLVERS:
        return same_addrs(((const tt_conf_t *)a)->resolvers, ((const tt_conf_t *)a)->nresolvers,
                          ((const tt_conf_t *)b)->resolvers, ((const tt_conf_t *)b)->nresolvers);
    default:
        return *(const int64_t *)pa == *(const int64_t *)pb;
    }
}

/* Compares one section; the first key that needs a takeover is named in why. */
static tt_conf_change_t diff_fields(const field_t *fields, size_t n, const void *a, const void *b,
                                    const char *section, char *why, size_t whylen)
{
    tt_conf_change_t change = TT_CONF_SAME;
    for (size_t i = 0; i < n; i++) {
        if (same_field(&fields[i], a, b))
            continue;
        if (needs_restart(&fields[i])) {
            snprintf(why, whylen, "%s: %s changed", section, fields[i].key);
            return TT_CONF_RESTART;
        }
        change = TT_CONF_LIVE;
    }
    return change;
}

tt_conf_change_t tt_conf_diff(const tt_conf_t *running, const tt_conf_t *next, char *why,
                              size_t whylen)
{
    char section[TT_CONF_SECTION_MAX];
    why[0] = '\0';
    tt_conf_change_t change = diff_fields(global_fields, TT_ARRAY_SIZE(global_fields), running,
                                          next, "[tether]", why, whylen);
    if (change == TT_CONF_RESTART)
        return change;
    if (running->nupstreams != next->nupstreams) {
        snprintf(why, whylen, "upstreams %s",
                 running->nupstreams < next->nupstreams ? "added" : "removed");
        return TT_CONF_RESTART;
    }
    for (size_t i = 0; i < running->nupstreams; i++) {
        const tt_upstream_conf_t *a = &running->upstreams[i], *b = &next->upstreams[i];
        if (strcmp(a->name, b->name) != 0) {
            snprintf(why, whylen, "upstream %s replaced by %s", a->name, b->name);
            return TT_CONF_RESTART;
        }
        snprintf(section, sizeof(section), "[upstream %s]", a->name);
        tt_conf_change_t c = diff_fields(upstream_fields, TT_ARRAY_SIZE(upstream_fields), a, b,
                                         section, why, whylen);
        if (c == TT_CONF_RESTART)
            return c;
        if (c == TT_CONF_LIVE)
            change = c;
    }
    return change;
}

/* Writes only the numbers that differ: the ones that did not change may be read meanwhile by
 * threads a reload does not pause (the DNS thread reads dns_refresh). */
static void copy_scalars(const field_t *fields, size_t n, void *to, const void *from)
{
    for (size_t i = 0; i < n; i++) {
        int64_t *dst = (int64_t *)((char *)to + fields[i].offset);
        const int64_t *src = (const int64_t *)((const char *)from + fields[i].offset);
        if (is_scalar(fields[i].type) && *dst != *src)
            *dst = *src;
    }
}

void tt_conf_apply_live(tt_conf_t *running, const tt_conf_t *next)
{
    copy_scalars(global_fields, TT_ARRAY_SIZE(global_fields), running, next);
    for (size_t i = 0; i < running->nupstreams; i++) {
        tt_upstream_conf_t *u = &running->upstreams[i];
        copy_scalars(upstream_fields, TT_ARRAY_SIZE(upstream_fields), u, &next->upstreams[i]);
        memcpy(u->key_line, next->upstreams[i].key_line, sizeof(u->key_line));
    }
}
