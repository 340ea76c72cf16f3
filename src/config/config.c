#include "config/config.h"

#include "core/buf.h"
#include "core/invariant.h"

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
    F_PATH,   /* a file name */
    F_STRING, /* free text */
    F_TLSVER, /* 1.2 or 1.3, kept as 12 or 13 */
} field_type_t;

typedef struct {
    const char *key;
    field_type_t type;
    size_t offset;     /* of the int64_t value, tt_addr_t, or char * */
    size_t has_offset; /* F_ADDR: int flag set when present */
    int64_t def;
    int64_t min, max;
} field_t;

#define G(k, t, f, d, lo, hi)                                                                      \
    {                                                                                              \
        k, t, offsetof(tt_conf_t, f), 0, d, lo, hi                                                 \
    }
#define U(k, t, f, d, lo, hi)                                                                      \
    {                                                                                              \
        k, t, offsetof(tt_upstream_conf_t, f), 0, d, lo, hi                                        \
    }
#define DAY (24LL * 3600 * 1000)

/* Every key, its type and its default: the one place defaults live (docs/configuration.md). */
static const field_t global_fields[] = {
    G("workers", F_WORKERS, workers, 0, 0, 256),
    {"proxy_listen", F_LISTEN, offsetof(tt_conf_t, proxy_listen),
     offsetof(tt_conf_t, has_proxy_listen), 0, 0, 0},
    G("proxy_listen_mode", F_MODE, proxy_listen_mode, 0660, 0, 0777),
    G("proxy_listen_owner", F_USER, proxy_listen_owner, -1, 0, UINT32_MAX - 1),
    G("proxy_listen_group", F_GROUP, proxy_listen_group, -1, 0, UINT32_MAX - 1),
    {"admin", F_ADDR, offsetof(tt_conf_t, admin), offsetof(tt_conf_t, has_admin), 0, 0, 0},
    G("admin_allow_remote", F_BOOL, admin_allow_remote, 0, 0, 1),
    G("log_level", F_LOGLEVEL, log_level, TT_LOG_INFO, 0, 3),
    G("max_head_size", F_SIZE, max_head_size, 65536, 1024, 1 << 24),
    G("client_header_timeout", F_DURATION, client_header_timeout, 10000, 1, DAY),
    G("client_idle_timeout", F_DURATION, client_idle_timeout, 60000, 1, DAY),
    G("drain_timeout", F_DURATION, drain_timeout, 10000, 0, DAY),
    G("tcp_defer_accept", F_DURATION_OFF, tcp_defer_accept, 1000, 0, 600000),
    G("max_client_connections", F_WORKERS, max_client_connections, 0, 0, 100000000),
    {"access_log", F_PATH, offsetof(tt_conf_t, access_log), 0, 0, 0, 0},
};

static const field_t upstream_fields[] = {
    {"url", F_URL, offsetof(tt_upstream_conf_t, url), 0, 0, 0, 0},
    {"listen", F_LISTEN, offsetof(tt_upstream_conf_t, listen),
     offsetof(tt_upstream_conf_t, has_listen), 0, 0, 0},
    U("listen_mode", F_MODE, listen_mode, 0660, 0, 0777),
    U("listen_owner", F_USER, listen_owner, -1, 0, UINT32_MAX - 1),
    U("listen_group", F_GROUP, listen_group, -1, 0, UINT32_MAX - 1),
    {"hosts", F_HOSTS, offsetof(tt_upstream_conf_t, hosts), 0, 0, 0, 0},
    U("preserve_host", F_BOOL, preserve_host, 0, 0, 1),
    U("max_connections", F_INT, max_connections, 256, 1, 1000000),
    U("max_idle", F_INT, max_idle, 64, 0, 1000000),
    U("min_idle", F_INT, min_idle, 0, 0, 1000000),
    U("max_queue", F_INT, max_queue, 1024, 0, 1000000),
    U("max_requests", F_INT, max_requests, 0, 0, INT64_MAX),
    U("retry_buffer", F_SIZE, retry_buffer, 65536, 0, 1 << 24),
    U("idle_timeout", F_IDLE, idle_timeout, TT_IDLE_AUTO, 1, DAY),
    U("connect_timeout", F_DURATION, connect_timeout, 5000, 1, DAY),
    U("response_timeout", F_DURATION, response_timeout, 30000, 1, DAY),
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
           t != F_STRING;
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
    int global_line[32]; /* line of each [tether] key set, 0 if not */
} parser_t;

_Static_assert(TT_ARRAY_SIZE(global_fields) <= 32, "global_line too small");

static void fail(parser_t *p, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(parser_t *p, int line, const char *key, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = 1;
    int n = snprintf(p->err->msg, sizeof(p->err->msg), "%s:%d: %s%s", p->conf->path, line,
                     key ? key : "", key ? ": " : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->msg + n, sizeof(p->err->msg) - (size_t)n, fmt, ap);
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
    } else if (*s != '\0' && *s != ';' && *s != '#' && strpbrk(s, "=:") == NULL) {
        fail(p, p->line, NULL, "syntax error: expected [section], key = value, or a comment");
    } else if (*s != '\0' && *s != ';' && *s != '#' && s != str) {
        fail(p, p->line, NULL, "syntax error: indented line (values cannot span lines)");
    }
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
        const char *why = set_field(&fields[i], base, value, p);
        if (why != NULL) {
            if (strcmp(why, "out of range") == 0)
                fail(p, p->line, name, "%s: out of range (%lld..%lld)", value,
                     (long long)fields[i].min, (long long)fields[i].max);
            else
                fail(p, p->line, name, "%s: %s", value, why);
            return 0;
        }
        return 1;
    }
    fail(p, p->line, name, "unknown key in [%s]", section);
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

int tt_conf_key_line(const tt_upstream_conf_t *u, const char *key)
{
    for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++)
        if (strcmp(upstream_fields[i].key, key) == 0 && u->key_line[i] != 0)
            return u->key_line[i];
    return u->line;
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
        if (check_tls_keys(p, u) < 0)
            return -1;
        char section[300];
        snprintf(section, sizeof(section), "[upstream %s]", u->name);
        if (check_unix_keys(p, upstream_fields, TT_ARRAY_SIZE(upstream_fields), u->key_line,
                            "listen_", &u->listen, u->has_listen, section) < 0)
            return -1;
        if (u->max_idle > u->max_connections)
            u->max_idle = u->max_connections;
        if (u->min_idle > u->max_idle) {
            fail(p, u->line, "min_idle", "%lld exceeds max_idle %lld in [upstream %s]",
                 (long long)u->min_idle, (long long)u->max_idle, u->name);
            return -1;
        }
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
    conf->path = tt_strdup("command line");
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
    }
    free(conf->upstreams);
    free(conf->access_log);
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
        case F_PATH:
        case F_STRING:
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
