/* Configuration: INI files written to a temporary directory and loaded. A full file with every key
 * gives the right typed values; omitted keys get the documented defaults; every error names
 * "FILE:LINE: KEY: reason"; the zero-config form; the duration and size parsers; the dump holds
 * every key and loads back to the same configuration. config.c is included to reach its field
 * tables (so a key added later is covered automatically) and its URL parser. */
#include "config/config.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"

static char g_dir[64];

static int setup_dir(void **state)
{
    (void)state;
    /* The C library loads its user and group databases on first use and keeps them: done here,
     * before any test counts the heap. */
    char buf[4096];
    struct passwd pw, *pwp;
    struct group gr, *grp;
    getpwnam_r("root", &pw, buf, sizeof(buf), &pwp);
    getgrnam_r("root", &gr, buf, sizeof(buf), &grp);
    snprintf(g_dir, sizeof(g_dir), "/tmp/tether-test-config-XXXXXX");
    return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state)
{
    (void)state;
    return rmdir(g_dir); /* fails if a test left a file behind */
}

/* Writes text to DIR/name; the path goes to path (256 bytes). */
static void write_ini(const char *name, const char *text, char *path)
{
    snprintf(path, 256, "%s/%s", g_dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
    assert_int_equal(fclose(fp), 0);
}

/* Loads text from a file named name; the file is removed again. */
static tt_conf_t *load_text(const char *name, const char *text, tt_conf_error_t *err, char *path)
{
    write_ini(name, text, path);
    memset(err->msg, 0, sizeof(err->msg));
    tt_conf_t *c = tt_conf_load(path, err);
    assert_int_equal(unlink(path), 0);
    return c;
}

static tt_upstream_conf_t *find_upstream(tt_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->nupstreams; i++)
        if (strcmp(c->upstreams[i].name, name) == 0)
            return &c->upstreams[i];
    fail_msg("no [upstream %s]", name);
    return NULL;
}

static void assert_addr(const tt_addr_t *a, const char *expected)
{
    char buf[TT_ADDR_STRLEN];
    assert_string_equal(tt_addr_format(a, buf), expected);
}

/* --- a full file --------------------------------------------------------------------------- */

static const char FULL[] = "; every key, with comments and odd spacing\n"
                           "# another comment style\n"
                           "[tether]\n"
                           "workers = 4\n"
                           "proxy_listen = unix:/run/tether/proxy.sock\n"
                           "proxy_listen_mode = 0666\n"
                           "proxy_listen_owner = 0\n"
                           "proxy_listen_group = 0\n"
                           "admin = [::1]:9900\n"
                           "admin_allow_remote = no\n"
                           "log_level = debug\n"
                           "max_head_size = 32k\n"
                           "client_header_timeout = 1500ms\n"
                           "client_idle_timeout = 2m\n"
                           "lingering_timeout = 3s\n"
                           "request_buffer = 8k\n"
                           "client_body_timeout = 7s\n"
                           "drain_timeout = 0.5s ; inline comment\n"
                           "tcp_defer_accept = 2s\n"
                           "max_client_connections = 5000\n"
                           "access_log = /var/log/tether/access.log\n"
                           "control_socket = /run/tether/tetherd.sock\n"
                           "resolver = 127.0.0.1:5353, [::1]\n"
                           "\n"
                           "[upstream users]\n"
                           "url = https://127.0.0.1:8443\n"
                           "listen = 127.0.0.1:9001\n"
                           "hosts = Users.Internal,users.internal:8080 ,\tu.example\n"
                           "preserve_host = yes\n"
                           "max_connections = 100\n"
                           "max_idle = 50\n"
                           "min_idle = 5\n"
                           "max_queue = 10\n"
                           "max_requests = 1000\n"
                           "retry_buffer = 1m\n"
                           "idle_timeout = 55s\n"
                           "connect_timeout = 2s\n"
                           "response_timeout = 1h\n"
                           "response_idle_timeout = off\n"
                           "queue_timeout = 250ms\n"
                           "max_lifetime = 10m\n"
                           "tcp_keepalive = off\n"
                           "lease_warn = 45\n"
                           "lease_timeout = 2m\n"
                           "tls_server_name = users.internal\n"
                           "tls_ca = /etc/tether/ca.pem\n"
                           "tls_verify = yes\n"
                           "tls_min_version = 1.3\n"
                           "tls_cert = /etc/tether/client.pem\n"
                           "tls_key = /etc/tether/client.key\n"
                           "tls_session_reuse = no\n"
                           "endpoints = 127.0.0.2:8443, 127.0.0.3, [::1]:9443\n"
                           "dns_refresh = off\n"
                           "dns_min_ttl = 2s\n"
                           "dns_max_ttl = 1m\n"
                           "dns_empty = clear\n"
                           "balance = round_robin\n"
                           "connect_retries = 1\n"
                           "breaker_failures = 3\n"
                           "breaker_cooldown = 2s\n"
                           "breaker_max_cooldown = 30s\n"
                           "max_ejected = 34%\n"
                           "probe = OPTIONS *\n"
                           "probe_interval = 5s\n"
                           "probe_timeout = 500ms\n"
                           "probe_expect = 200-299, 405\n"
                           "breaker_on_5xx = yes\n"
                           "splice = off\n"
                           "health_check = HEAD /ready\n"
                           "health_interval = 2s\n"
                           "health_timeout = 300ms\n"
                           "health_rise = 3\n"
                           "health_fall = 4\n"
                           "health_expect = 200\n"
                           "health_host = users.check\n"
                           "\n"
                           "[upstream orders]\n"
                           "url = http://orders.internal/\n"
                           "dns_refresh = 30s\n"
                           "balance = random\n"
                           "idle_timeout = auto\n"
                           "max_lifetime = 0\n"
                           "preserve_host = false\n"
                           "max_idle = 500\n"
                           "\n"
                           "[upstream local]\n"
                           "url = http://127.0.0.1:8082\n"
                           "listen = unix:/run/tether/local.sock\n"
                           "listen_mode = 600\n"
                           "listen_owner = root\n"
                           "listen_group = 12345\n"
                           "\n"
                           "[upstream v6]\n"
                           "url = http://[::1]:8081\n"
                           "listen = [::1]:9002\n"
                           "preserve_host = 1\n"
                           "workers_not_here = 1\n";

/* FULL without its last line (a deliberate unknown key, tested below). */
static char *full_text(void)
{
    char *t = tt_strdup(FULL);
    *strstr(t, "workers_not_here") = '\0';
    return t;
}

/* Loads text that must be valid; fails the test with the loader's message otherwise. */
static tt_conf_t *load_ok(const char *name, const char *text)
{
    tt_conf_error_t err;
    char path[256];
    tt_conf_t *c = load_text(name, text, &err, path);
    if (c == NULL)
        fail_msg("refused: %s", err.msg);
    return c;
}

static void test_full_file_has_every_key(void **state)
{
    (void)state;
    /* Every key of both tables appears in FULL: a new key must be added to this test. */
    for (size_t i = 0; i < TT_ARRAY_SIZE(global_fields); i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "\n%s = ", global_fields[i].key);
        if (strstr(FULL, needle) == NULL)
            fail_msg("FULL lacks [tether] %s", global_fields[i].key);
    }
    for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "\n%s = ", upstream_fields[i].key);
        if (strstr(strstr(FULL, "[upstream users]"), needle) == NULL)
            fail_msg("FULL's [upstream users] lacks %s", upstream_fields[i].key);
    }
}

static void test_full_file_loads_typed_values(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_error_t err;
    char path[256];
    char *text = full_text();
    tt_conf_t *c = load_text("full.ini", text, &err, path);
    free(text);
    if (c == NULL)
        fail_msg("%s", err.msg);
    assert_string_equal(c->path, path);
    assert_int_equal(c->workers, 4);
    assert_true(c->has_proxy_listen);
    assert_addr(&c->proxy_listen, "unix:/run/tether/proxy.sock");
    assert_int_equal(c->proxy_listen_mode, 0666);
    assert_int_equal(c->proxy_listen_owner, 0);
    assert_int_equal(c->proxy_listen_group, 0);
    assert_true(c->has_admin);
    assert_addr(&c->admin, "[::1]:9900");
    assert_int_equal(c->admin_allow_remote, 0);
    assert_int_equal(c->log_level, TT_LOG_DEBUG);
    assert_int_equal(c->max_head_size, 32 * 1024);
    assert_int_equal(c->client_header_timeout, 1500);
    assert_int_equal(c->client_idle_timeout, 120000);
    assert_int_equal(c->lingering_timeout, 3000);
    assert_int_equal(c->request_buffer, 8192);
    assert_int_equal(c->client_body_timeout, 7000);
    assert_int_equal(c->drain_timeout, 500);
    assert_int_equal(c->tcp_defer_accept, 2000);
    assert_int_equal(c->max_client_connections, 5000);
    assert_string_equal(c->control_socket, "/run/tether/tetherd.sock");
    assert_string_equal(c->access_log, "/var/log/tether/access.log");
    assert_int_equal(c->nupstreams, 4);

    tt_upstream_conf_t *u = find_upstream(c, "users");
    assert_int_equal(u->line, 25);
    assert_string_equal(u->url, "https://127.0.0.1:8443");
    assert_string_equal(u->host, "127.0.0.1");
    assert_int_equal(u->port, 8443);
    assert_true(u->tls);
    assert_true(u->has_listen);
    assert_addr(&u->listen, "127.0.0.1:9001");
    assert_int_equal(u->nhosts, 3);
    assert_string_equal(u->hosts[0], "users.internal"); /* lower-cased */
    assert_string_equal(u->hosts[1], "users.internal:8080");
    assert_string_equal(u->hosts[2], "u.example");
    assert_int_equal(u->preserve_host, 1);
    assert_int_equal(u->max_connections, 100);
    assert_int_equal(u->max_idle, 50);
    assert_int_equal(u->min_idle, 5);
    assert_int_equal(u->max_queue, 10);
    assert_int_equal(u->max_requests, 1000);
    assert_int_equal(u->retry_buffer, 1024 * 1024);
    assert_int_equal(u->idle_timeout, 55000);
    assert_int_equal(u->connect_timeout, 2000);
    assert_int_equal(u->response_timeout, 3600000);
    assert_int_equal(u->response_idle_timeout, 0);
    assert_int_equal(u->queue_timeout, 250);
    assert_int_equal(u->max_lifetime, 600000);
    assert_int_equal(u->tcp_keepalive, 0);
    assert_int_equal(u->lease_warn, 45000); /* a bare number is seconds */
    assert_int_equal(u->lease_timeout, 120000);
    assert_string_equal(u->tls_server_name, "users.internal");
    assert_string_equal(u->tls_ca, "/etc/tether/ca.pem");
    assert_int_equal(u->tls_verify, 1);
    assert_int_equal(u->tls_min_version, 13);
    assert_string_equal(u->tls_cert, "/etc/tether/client.pem");
    assert_string_equal(u->tls_key, "/etc/tether/client.key");
    assert_int_equal(u->tls_session_reuse, 0);
    assert_int_equal(tt_conf_key_line(u, "tls_key"), 50);
    assert_int_equal(tt_conf_key_line(u, "tls_verify"), 47);
    assert_int_equal(tt_conf_key_line(u, "max_idle"), 31);
    assert_int_equal(u->nendpoints, 3);
    assert_addr(&u->endpoints[0], "127.0.0.2:8443");
    assert_addr(&u->endpoints[1], "127.0.0.3:8443"); /* the url's port */
    assert_addr(&u->endpoints[2], "[::1]:9443");
    assert_int_equal(u->dns_refresh, 0);
    assert_int_equal(u->dns_min_ttl, 2000);
    assert_int_equal(u->dns_max_ttl, 60000);
    assert_int_equal(u->dns_empty, 1);
    assert_int_equal(u->balance, 1);
    assert_int_equal(u->connect_retries, 1);
    assert_int_equal(u->breaker_failures, 3);
    assert_int_equal(u->breaker_cooldown, 2000);
    assert_int_equal(u->breaker_max_cooldown, 30000);
    assert_int_equal(u->max_ejected, 34);
    assert_string_equal(u->probe, "OPTIONS *");
    assert_int_equal(u->probe_interval, 5000);
    assert_int_equal(u->probe_timeout, 500);
    assert_string_equal(u->probe_expect, "200-299, 405");
    assert_int_equal(u->breaker_on_5xx, 1);
    assert_int_equal(u->splice, 0);
    assert_string_equal(u->health_check, "HEAD /ready");
    assert_int_equal(u->health_interval, 2000);
    assert_int_equal(u->health_timeout, 300);
    assert_int_equal(u->health_rise, 3);
    assert_int_equal(u->health_fall, 4);
    assert_string_equal(u->health_expect, "200");
    assert_string_equal(u->health_host, "users.check");
    assert_int_equal(c->nresolvers, 2);
    assert_addr(&c->resolvers[0], "127.0.0.1:5353");
    assert_addr(&c->resolvers[1], "[::1]:53");

    u = find_upstream(c, "orders");
    assert_false(u->tls);
    assert_int_equal(tt_conf_key_line(u, "tls_key"), u->line); /* not set: the section's line */
    assert_string_equal(u->host, "orders.internal");
    assert_int_equal(u->port, 80);
    assert_false(u->has_listen);                         /* reached through proxy_listen */
    assert_string_equal(u->hosts[0], "orders.internal"); /* default: the url's host */
    assert_int_equal(u->idle_timeout, TT_IDLE_AUTO);
    assert_int_equal(u->max_lifetime, 0);
    assert_int_equal(u->preserve_host, 0);
    assert_int_equal(u->max_idle, 256); /* clamped to max_connections */
    assert_int_equal(u->dns_refresh, 30000);
    assert_int_equal(u->balance, 2);
    assert_null(u->endpoints);

    u = find_upstream(c, "local");
    assert_addr(&u->listen, "unix:/run/tether/local.sock");
    assert_int_equal(u->listen_mode, 0600);
    assert_int_equal(u->listen_owner, 0); /* root */
    assert_int_equal(u->listen_group, 12345);

    u = find_upstream(c, "v6");
    assert_int_equal(u->listen_mode, 0660); /* the default, unused on a TCP port */
    assert_int_equal(u->listen_owner, -1);
    assert_string_equal(u->host, "::1");
    assert_int_equal(u->port, 8081);
    assert_addr(&u->listen, "[::1]:9002");
    assert_int_equal(u->dns_refresh, 0); /* an IP address: nothing to re-resolve */
    assert_int_equal(u->preserve_host, 1);
    tt_conf_free(c);
    tt_leakcheck_end(lc);
}

/* --- defaults -------------------------------------------------------------------------------- */

/* Values from docs/configuration.md, and from the field table for keys the document omits. */
static void check_defaults(tt_conf_t *c)
{
    assert_int_equal(c->workers, 0); /* auto */
    assert_false(c->has_proxy_listen);
    assert_false(c->has_admin);
    assert_int_equal(c->admin_allow_remote, 0);
    assert_int_equal(c->log_level, TT_LOG_INFO);
    assert_int_equal(c->max_head_size, 64 * 1024);
    assert_int_equal(c->client_header_timeout, 10000);
    assert_int_equal(c->client_idle_timeout, 60000);
    assert_int_equal(c->lingering_timeout, 5000);
    assert_int_equal(c->request_buffer, 65536);
    assert_int_equal(c->client_body_timeout, 60000);
    assert_int_equal(c->drain_timeout, 10000);
    assert_int_equal(c->tcp_defer_accept, 1000);
    assert_int_equal(c->max_client_connections, 0); /* auto */
    assert_null(c->access_log);
    assert_int_equal(c->nupstreams, 1);
    tt_upstream_conf_t *u = &c->upstreams[0];
    assert_int_equal(u->preserve_host, 0);
    assert_int_equal(u->max_connections, 256);
    assert_int_equal(u->max_idle, 64);
    assert_int_equal(u->min_idle, 0);
    assert_int_equal(u->max_queue, 1024);
    assert_int_equal(u->max_requests, 0);
    assert_int_equal(u->retry_buffer, 64 * 1024);
    assert_int_equal(u->idle_timeout, TT_IDLE_AUTO);
    assert_int_equal(u->connect_timeout, 5000);
    assert_int_equal(u->response_timeout, 30000);
    assert_int_equal(u->response_idle_timeout, 60000);
    assert_int_equal(u->queue_timeout, 1000);
    assert_int_equal(u->max_lifetime, 600000);
    assert_int_equal(u->tcp_keepalive, 30000);
    assert_int_equal(u->lease_warn, 30000);
    assert_int_equal(u->lease_timeout, 0);
    assert_null(u->endpoints);
    assert_int_equal(u->dns_refresh, 0); /* url has an IP address */
    assert_int_equal(u->dns_min_ttl, 1000);
    assert_int_equal(u->dns_max_ttl, 300000);
    assert_int_equal(u->dns_empty, 0); /* keep */
    assert_int_equal(u->balance, 0);   /* least_request */
    assert_int_equal(u->connect_retries, 2);
    assert_int_equal(u->breaker_failures, 5);
    assert_int_equal(u->breaker_cooldown, 5000);
    assert_int_equal(u->breaker_max_cooldown, 60000);
    assert_int_equal(u->max_ejected, 50);
    assert_null(u->probe); /* off */
    assert_int_equal(u->probe_interval, 10000);
    assert_int_equal(u->probe_timeout, 1000);
    assert_null(u->probe_expect);
    assert_int_equal(u->breaker_on_5xx, 0);
    assert_int_equal(u->splice, 1);
    assert_null(u->health_check); /* off */
    assert_int_equal(u->health_interval, 5000);
    assert_int_equal(u->health_timeout, 1000);
    assert_int_equal(u->health_rise, 2);
    assert_int_equal(u->health_fall, 2);
    assert_null(u->health_expect);
    assert_null(u->health_host);
    assert_int_equal(c->nresolvers, 0);
    /* hosts defaults to the url's authority (whether the bare host is added too is open). */
    int authority = 0;
    for (size_t i = 0; i < u->nhosts; i++)
        authority += strcmp(u->hosts[i], "127.0.0.1:8080") == 0;
    assert_int_equal(authority, 1);
    /* Nothing is left UNSET, except where the default means "unchanged" (a socket's owner). */
    for (size_t i = 0; i < TT_ARRAY_SIZE(global_fields); i++) {
        const field_t *f = &global_fields[i];
        if (is_scalar(f->type) && f->def != TT_UNSET)
            assert_int_not_equal(*(int64_t *)((char *)c + f->offset), TT_UNSET);
    }
    for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++) {
        const field_t *f = &upstream_fields[i];
        if (is_scalar(f->type) && f->def != TT_UNSET)
            assert_int_not_equal(*(int64_t *)((char *)u + f->offset), TT_UNSET);
    }
    assert_int_equal(u->listen_mode, 0660);
    assert_int_equal(u->listen_owner, -1);
    assert_int_equal(u->listen_group, -1);
}

static void test_defaults_for_omitted_keys(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_t *c =
        load_ok("min.ini", "[upstream a]\nurl = http://127.0.0.1:8080\nlisten = 127.0.0.1:9001\n");
    check_defaults(c);
    tt_conf_free(c);

    /* The same with CRLF line ends and an empty [tether] section. */
    c = load_ok("crlf.ini", "[tether]\r\n\r\n[upstream a]\r\nurl = http://127.0.0.1:8080\r\n"
                            "listen = 127.0.0.1:9001\r\n");
    check_defaults(c);
    tt_conf_free(c);
    tt_leakcheck_end(lc);
}

/* --- errors ---------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *text;
    int line;
    const char *key;      /* NULL: the message names no key (a section, or the file) */
    const char *contains; /* part of the reason */
} bad_t;

#define UP_A "[upstream a]\nurl = http://127.0.0.1:8080\nlisten = 127.0.0.1:9001\n"

static const bad_t bad[] = {
    {"unknown key", "[tether]\nworkers = 1\nbogus_key = 1\n" UP_A, 3, "bogus_key", "unknown key"},
    {"unknown key in upstream", UP_A "max_conns = 5\n", 4, "max_conns", "[upstream a]"},
    {"unknown section", "[tether]\n\n[bogus]\nx = 1\n" UP_A, 3, NULL, "[bogus]: unknown section"},
    {"bad upstream name", "[upstream a/b]\nurl = http://127.0.0.1:1\n", 1, NULL, "[upstream a/b]"},
    {"bad duration", UP_A "idle_timeout = 5 parsecs\n", 4, "idle_timeout", "not a duration"},
    {"bad duration unit", UP_A "connect_timeout = 10d\n", 4, "connect_timeout", "10d"},
    {"negative duration", "[tether]\ndrain_timeout = -1s\n" UP_A, 2, "drain_timeout",
     "not a duration"},
    {"bad size", "[tether]\nmax_head_size = 12q\n" UP_A, 2, "max_head_size", "not a size"},
    {"bad size unit", UP_A "retry_buffer = 1g\n", 4, "retry_buffer", "not a size"},
    {"fractional size", UP_A "retry_buffer = 1.5k\n", 4, "retry_buffer", "not a size"},
    {"not an integer", UP_A "max_queue = 10k\n", 4, "max_queue", "not an integer"},
    {"bad workers", "[tether]\n\nworkers = many\n" UP_A, 3, "workers", "auto or a positive"},
    {"zero workers", "[tether]\nworkers = 0\n" UP_A, 2, "workers", "auto or a positive"},
    {"too many workers", "[tether]\nworkers = 1000\n" UP_A, 2, "workers", "out of range"},
    {"zero client connections", "[tether]\nmax_client_connections = 0\n" UP_A, 2,
     "max_client_connections", "expected auto or a positive number"},
    {"max_connections 0", UP_A "max_connections = 0\n", 4, "max_connections",
     "0: out of range (1..1000000)"},
    {"negative max_idle", UP_A "max_idle = -1\n", 4, "max_idle", "out of range"},
    {"max_head_size too small", "[tether]\nmax_head_size = 512\n" UP_A, 2, "max_head_size",
     "out of range"},
    {"max_head_size too large", "[tether]\nmax_head_size = 17m\n" UP_A, 2, "max_head_size",
     "out of range"},
    {"zero timeout", UP_A "connect_timeout = 0\n", 4, "connect_timeout", "out of range"},
    {"timeout over a day", UP_A "response_timeout = 25h\n", 4, "response_timeout", "out of range"},
    {"off where off is not allowed", UP_A "connect_timeout = off\n", 4, "connect_timeout",
     "not a duration"},
    {"auto where auto is not allowed", UP_A "queue_timeout = auto\n", 4, "queue_timeout",
     "not a duration"},
    {"bad bool", UP_A "preserve_host = maybe\n", 4, "preserve_host", "yes or no"},
    {"bad log level", "[tether]\nlog_level = loud\n" UP_A, 2, "log_level", "error, warn"},
    {"bad listen", "[upstream a]\nurl = http://127.0.0.1:8080\nlisten = localhost:9001\n", 3,
     "listen", "IP:PORT"},
    {"listen without port", "[upstream a]\nurl = http://127.0.0.1:8080\nlisten = 127.0.0.1\n", 3,
     "listen", "IP:PORT"},
    {"empty value", "[tether]\nlog_level =\n" UP_A, 2, "log_level", "empty value"},
    {"empty hosts", UP_A "hosts = , ,\n", 4, "hosts", "empty list"},
    {"duplicate key", "[tether]\nworkers = 2\nlog_level = info\nworkers = 3\n" UP_A, 4, "workers",
     "set twice"},
    {"duplicate key in upstream", UP_A "max_idle = 1\nmax_idle = 2\n", 5, "max_idle", "set twice"},
    {"duplicate upstream",
     UP_A "\n[upstream a]\nurl = http://127.0.0.1:8081\nlisten = 127.0.0.1:9002\n", 5, NULL,
     "[upstream a]: upstream defined twice (first on line 1)"},
    {"missing url", "[tether]\nworkers = 1\n\n[upstream api]\nlisten = 127.0.0.1:9001\n", 4, "url",
     "required in [upstream api]"},
    {"tls key on an http upstream", UP_A "tls_ca = /etc/ca.pem\n", 4, "tls_ca",
     "only for https:// upstreams"},
    {"client certificate without its key",
     "[upstream a]\nlisten = 127.0.0.1:9001\nurl = https://127.0.0.1:8443\ntls_cert = /c.pem\n", 4,
     "tls_cert", "needs tls_key too"},
    {"bad tls version",
     "[upstream a]\nlisten = 127.0.0.1:9001\nurl = https://127.0.0.1:8443\ntls_min_version = 1.1\n",
     4, "tls_min_version", "expected 1.2 or 1.3"},
    {"not http", "[upstream a]\nurl = ftp://127.0.0.1:21\n", 2, "url", "http:// or https://"},
    {"url with a path", "[upstream a]\nurl = http://127.0.0.1:8080/api\n", 2, "url", "path"},
    {"url with a query", "[upstream a]\nurl = http://127.0.0.1:8080?x=1\n", 2, "url", "query"},
    {"url with a bad port", "[upstream a]\nurl = http://127.0.0.1:99999\n", 2, "url", "bad port"},
    {"url without a host", "[upstream a]\nurl = http://:8080\n", 2, "url", "missing host"},
    {"unreachable upstream", "[tether]\nworkers = 1\n\n[upstream a]\nurl = http://127.0.0.1:8080\n",
     4, "listen", "unreachable"},
    {"two upstreams claim a host",
     "[tether]\nproxy_listen = 127.0.0.1:15001\n"
     "[upstream a]\nurl = http://10.0.0.1\nhosts = api.internal\n"
     "[upstream b]\nurl = http://10.0.0.2\nhosts = other.internal, API.internal\n",
     6, "hosts", "api.internal is claimed by [upstream a] and [upstream b]"},
    {"same listen twice",
     UP_A "[upstream b]\nurl = http://10.0.0.2:8080\nlisten = 127.0.0.1:9001\n", 4, "listen",
     "same address as [upstream a]"},
    {"listen on proxy_listen", "[tether]\nproxy_listen = 127.0.0.1:9001\n" UP_A, 3, "listen",
     "proxy_listen"},
    {"min_idle over max_idle", UP_A "max_idle = 4\nmin_idle = 5\n", 5, "min_idle",
     "5 exceeds max_idle = 4 (line 4) in [upstream a]"},
    {"min_idle over max_connections", UP_A "max_connections = 3\nmin_idle = 4\n", 5, "min_idle",
     "4 exceeds max_idle 3 (its default), capped by max_connections = 3 (line 4)"},
    {"did you mean", UP_A "max_idel = 5\n", 4, "max_idel", "(did you mean max_idle?)"},
    {"did you mean in tether", "[tether]\ndrain_timeuot = 1s\n" UP_A, 2, "drain_timeuot",
     "did you mean drain_timeout?"},
    {"key of the other section", "[tether]\nmax_idle = 5\n" UP_A, 2, "max_idle",
     "it belongs in an [upstream NAME] section"},
    {"hash comment", UP_A "idle_timeout = 55s # the LB closes at 60s\n", 4, "idle_timeout",
     "only ';' starts an inline comment ('#' only at the start of a line); write \"55s ; the LB "
     "closes at 60s\""},
    {"hash comment in a list", UP_A "hosts = a.internal # old name\n", 4, "hosts",
     "only ';' starts an inline comment"},
    {"indented key", UP_A "max_idle = 5\n  min_idle = 2\n", 5, NULL,
     "it would continue max_idle above"},
    {"indented key after a list", UP_A "hosts = a.internal\n  min_idle = 2\n", 5, NULL,
     "it continues hosts above; a key = value line must not be indented"},
    {"url to its own listener",
     UP_A "[upstream b]\nurl = http://127.0.0.1:9001\nlisten = 127.0.0.1:9002\n", 5, "url",
     "http://127.0.0.1:9001 is tetherd's own listener (listen of [upstream a], line 3)"},
    {"url to localhost listener",
     UP_A "[upstream b]\nurl = http://localhost:9001\nlisten = 127.0.0.1:9002\n", 5, "url",
     "tetherd's own listener"},
    {"url to proxy_listen",
     "[tether]\nproxy_listen = 127.0.0.1:15001\n[upstream a]\n"
     "url = http://127.0.0.1:15001\n",
     4, "url", "tetherd's own proxy_listen address"},
    {"syntax error", "[tether]\nworkers 4\n" UP_A, 2, NULL, "syntax error"},
    {"endpoint with a name", UP_A "endpoints = 127.0.0.2:80, api.internal:80\n", 4, "endpoints",
     "IP[:PORT]"},
    {"endpoint with port 0", UP_A "endpoints = 127.0.0.2:0\n", 4, "endpoints", "IP[:PORT]"},
    {"endpoint with a bad port", UP_A "endpoints = 127.0.0.2:70000\n", 4, "endpoints", "IP[:PORT]"},
    {"empty endpoints", UP_A "endpoints = ,\n", 4, "endpoints", "empty list"},
    {"endpoints with dns_refresh",
     "[upstream a]\nurl = http://api.internal:8080\nlisten = 127.0.0.1:9001\n"
     "endpoints = 127.0.0.2\ndns_refresh = 30s\n",
     5, "dns_refresh", "nothing to re-resolve"},
    {"ip literal with dns_refresh", UP_A "dns_refresh = ttl\n", 4, "dns_refresh",
     "an IP address in url"},
    {"bad dns_refresh", UP_A "dns_refresh = sometimes\n", 4, "dns_refresh", "ttl, off or"},
    {"dns_refresh too short",
     "[upstream a]\nurl = http://a.internal\nlisten = 127.0.0.1:9001\n"
     "dns_refresh = 10ms\n",
     4, "dns_refresh", "out of range"},
    {"min ttl over max ttl",
     "[upstream a]\nurl = http://a.internal\nlisten = 127.0.0.1:9001\n"
     "dns_max_ttl = 10s\ndns_min_ttl = 20s\n",
     5, "dns_min_ttl", "exceeds dns_max_ttl"},
    {"bad dns_empty", UP_A "dns_empty = drop\n", 4, "dns_empty", "keep or clear"},
    {"bad balance", UP_A "balance = leastconn\n", 4, "balance", "least_request, round_robin"},
    {"bad probe", UP_A "probe = ping\n", 4, "probe", "METHOD TARGET"},
    {"probe star with GET", UP_A "probe = GET *\n", 4, "probe", "OPTIONS only"},
    {"bad probe_expect", UP_A "probe_expect = 2xx\n", 4, "probe_expect", "statuses"},
    {"probe_timeout too short", UP_A "probe_timeout = 1ms\n", 4, "probe_timeout", "out of range"},
    {"bad max_ejected", UP_A "max_ejected = half\n", 4, "max_ejected", "percentage"},
    {"bad health_check", UP_A "health_check = /healthz\n", 4, "health_check", "METHOD TARGET"},
    {"bad health_expect", UP_A "health_expect = ok\n", 4, "health_expect", "statuses"},
    {"health_fall zero", UP_A "health_fall = 0\n", 4, "health_fall", "out of range"},
    {"health_timeout not under interval",
     UP_A "health_check = GET /healthz\nhealth_interval = 1s\nhealth_timeout = 1s\n", 6,
     "health_timeout", "shorter than health_interval"},
    {"max_ejected over 100", UP_A "max_ejected = 150%\n", 4, "max_ejected", "out of range"},
    {"cooldown over max", UP_A "breaker_max_cooldown = 1s\nbreaker_cooldown = 2s\n", 5,
     "breaker_cooldown", "exceeds breaker_max_cooldown"},
    {"connect_retries too high", UP_A "connect_retries = 100\n", 4, "connect_retries",
     "out of range"},
    {"resolver with a name", "[tether]\nresolver = dns.internal\n" UP_A, 2, "resolver",
     "IP[:PORT]"},
    {"too many resolvers",
     "[tether]\nresolver = 10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6,10.0.0.7,"
     "10.0.0.8,10.0.0.9\n" UP_A,
     2, "resolver", "too many"},
    {"key outside a section", "workers = 1\n[tether]\n" UP_A, 1, "workers", "outside"},
    {"no upstream", "[tether]\nworkers = 2\n", 2, NULL, "no [upstream NAME] section"},
};

static int check_error(const bad_t *b)
{
    tt_conf_error_t err;
    char path[256], prefix[512];
    tt_conf_t *c = load_text("bad.ini", b->text, &err, path);
    if (c != NULL) {
        print_error("%s: loaded, expected an error at line %d\n", b->name, b->line);
        tt_conf_free(c);
        return 1;
    }
    if (b->key != NULL)
        snprintf(prefix, sizeof(prefix), "%s:%d: %s: ", path, b->line, b->key);
    else
        snprintf(prefix, sizeof(prefix), "%s:%d: ", path, b->line);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0 ||
        (b->contains != NULL && strstr(err.msg, b->contains) == NULL)) {
        print_error("%s: got \"%s\", expected \"%s...%s\"\n", b->name, err.msg, prefix,
                    b->contains ? b->contains : "");
        return 1;
    }
    return 0;
}

/* A list longer than inih's 198-character line goes on indented continuation lines. */
static void test_hosts_span_lines(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    char text[2048];
    int n = snprintf(text, sizeof(text),
                     "[tether]\nproxy_listen = 127.0.0.1:15001\n"
                     "[upstream a]\nurl = http://10.0.0.1\nhosts = a0.internal");
    for (int line = 0; line < 4; line++) {
        n += snprintf(text + n, sizeof(text) - (size_t)n, ",\n   ");
        for (int i = 0; i < 8; i++)
            n += snprintf(text + n, sizeof(text) - (size_t)n, "%sservice-%d-%d.internal",
                          i ? ", " : "", line, i);
    }
    snprintf(text + n, sizeof(text) - (size_t)n,
             "\n    ; a comment between does not end the list\n    last.internal ; and this\n"
             "max_idle = 3\n");
    tt_conf_t *c = load_ok("span.ini", text);
    assert_non_null(c);
    tt_upstream_conf_t *u = &c->upstreams[0];
    assert_int_equal(u->nhosts, 1 + 4 * 8 + 1);
    assert_string_equal(u->hosts[0], "a0.internal");
    assert_string_equal(u->hosts[1], "service-0-0.internal");
    assert_string_equal(u->hosts[32], "service-3-7.internal");
    assert_string_equal(u->hosts[33], "last.internal");
    assert_int_equal(u->max_idle, 3);
    tt_conf_free(c);
    tt_leakcheck_end(lc);
}

/* The zero-config form has no line numbers, and its errors show none. */
static void test_command_line_errors_have_no_line(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_error_t err;
    assert_null(tt_conf_from_args("127.0.0.1", "http://127.0.0.1:8080", NULL, NULL, &err));
    assert_string_equal(err.msg,
                        "command line: listen: 127.0.0.1: expected IP:PORT, [IPv6]:PORT or "
                        "unix:/absolute/path");
    tt_leakcheck_end(lc);
}

static void test_errors_name_file_line_key(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    int failures = 0;
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        failures += check_error(&bad[i]);
    }
    /* An unreadable file. */
    tt_conf_error_t err;
    char path[256];
    snprintf(path, sizeof(path), "%s/missing.ini", g_dir);
    assert_null(tt_conf_load(path, &err));
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "%s: cannot open: ", path);
    assert_int_equal(strncmp(err.msg, prefix, strlen(prefix)), 0);
    assert_int_equal(failures, 0);
    tt_leakcheck_end(lc);
}

/* A cross-key error about admin names admin's own line, not the end of the file. */
static void test_admin_error_names_its_line(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    static const bad_t admin = {"admin on a non-loopback address",
                                "[tether]\nadmin = 0.0.0.0:9900\nlog_level = info\n\n" UP_A
                                "max_idle = 2\n",
                                2, "admin", "loopback"};
    int failures = check_error(&admin);

    /* Allowed with admin_allow_remote, and on a loopback address. */
    tt_conf_t *c =
        load_ok("admin.ini", "[tether]\nadmin = 0.0.0.0:9900\nadmin_allow_remote = yes\n" UP_A);
    assert_int_equal(c->admin_allow_remote, 1);
    tt_conf_free(c);
    c = load_ok("admin.ini", "[tether]\nadmin = 127.0.0.2:9900\n" UP_A);
    tt_conf_free(c);
    assert_int_equal(failures, 0);
    tt_leakcheck_end(lc);
}

/* The first error in the file is the one reported: inih reads on after a line it cannot parse,
 * and a later line must not replace the real cause with a consequence of it. */
static void test_first_error_wins(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    static const bad_t cases[] = {
        {"unterminated section header", "[tether\nworkers = 4\n" UP_A, 1, NULL, "syntax error"},
        {"syntax error, then a bad key", "[tether]\nworkers 4\nbogus_key = 1\n" UP_A, 2, NULL,
         "syntax error"},
    };
    int failures = 0;
    for (size_t i = 0; i < TT_ARRAY_SIZE(cases); i++)
        failures += check_error(&cases[i]);
    assert_int_equal(failures, 0);
    tt_leakcheck_end(lc);
}

/* A Host header names an IPv6 literal in brackets ("[::1]:8081", RFC 9110 7.2), so the default
 * hosts of an upstream at http://[::1]:8081 must be written that way to ever match. */
static void test_ipv6_default_hosts(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_t *c = load_ok("v6.ini", "[tether]\nproxy_listen = 127.0.0.1:15001\n"
                                     "[upstream v6]\nurl = http://[::1]:8081\n");
    tt_upstream_conf_t *u = &c->upstreams[0];
    int bracketed = 0;
    for (size_t i = 0; i < u->nhosts; i++)
        bracketed += strcmp(u->hosts[i], "[::1]:8081") == 0;
    if (!bracketed)
        print_error("default hosts: %s, %s\n", u->hosts[0], u->nhosts > 1 ? u->hosts[1] : "");
    tt_conf_free(c);
    assert_int_equal(bracketed, 1);
    tt_leakcheck_end(lc);
}

/* Several local services on one host, each on its own port: the sidecar's ordinary setup. With
 * no proxy_listen, hosts route nothing, and the default hosts ("127.0.0.1") must not collide. */
static void test_upstreams_on_one_host_with_own_ports(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_t *c = load_ok("two.ini", "[upstream users]\nurl = http://127.0.0.1:8080\n"
                                      "listen = 127.0.0.1:9001\n\n"
                                      "[upstream orders]\nurl = http://127.0.0.1:8081\n"
                                      "listen = 127.0.0.1:9002\n");
    assert_int_equal(c->nupstreams, 2);
    tt_conf_free(c);
    tt_leakcheck_end(lc);
}

/* inih skips a UTF-8 byte order mark (INI_ALLOW_BOM); a file saved with one must load. */
static void test_file_with_bom(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_t *c = load_ok("bom.ini", "\xEF\xBB\xBF[tether]\nworkers = 2\n" UP_A);
    assert_int_equal(c->workers, 2);
    tt_conf_free(c);
    tt_leakcheck_end(lc);
}

/* --- zero-config --------------------------------------------------------------------------- */

static void test_from_args(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_error_t err;
    tt_conf_t *c = tt_conf_from_args("127.0.0.1:9000", "http://127.0.0.1:8080", "4", "debug", &err);
    if (c == NULL)
        fail_msg("%s", err.msg);
    assert_string_equal(c->path, "command line");
    assert_int_equal(c->workers, 4);
    assert_int_equal(c->log_level, TT_LOG_DEBUG);
    assert_int_equal(c->nupstreams, 1);
    tt_upstream_conf_t *u = &c->upstreams[0];
    assert_string_equal(u->name, "default");
    assert_string_equal(u->url, "http://127.0.0.1:8080");
    assert_string_equal(u->host, "127.0.0.1");
    assert_int_equal(u->port, 8080);
    assert_true(u->has_listen);
    assert_addr(&u->listen, "127.0.0.1:9000");
    assert_int_equal(u->max_connections, 256);
    assert_int_equal(u->idle_timeout, TT_IDLE_AUTO);
    tt_conf_free(c);

    /* Optional arguments omitted: defaults. */
    c = tt_conf_from_args("[::1]:9000", "http://[::1]:8080/", NULL, NULL, &err);
    if (c == NULL)
        fail_msg("%s", err.msg);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->log_level, TT_LOG_INFO);
    assert_string_equal(c->upstreams[0].host, "::1");
    tt_conf_free(c);

    static const struct {
        const char *listen, *url, *workers, *log_level, *key;
    } badargs[] = {
        {"127.0.0.1:9000", "http://127.0.0.1:8080/api", NULL, NULL, "url"},
        {"127.0.0.1:9000", "127.0.0.1:8080", NULL, NULL, "url"},
        {"localhost:9000", "http://127.0.0.1:8080", NULL, NULL, "listen"},
        {"9000", "http://127.0.0.1:8080", NULL, NULL, "listen"},
        {"127.0.0.1:9000", "http://127.0.0.1:8080", "0", NULL, "workers"},
        {"127.0.0.1:9000", "http://127.0.0.1:8080", "lots", NULL, "workers"},
        {"127.0.0.1:9000", "http://127.0.0.1:8080", NULL, "verbose", "log_level"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(badargs); i++) {
        memset(err.msg, 0, sizeof(err.msg));
        c = tt_conf_from_args(badargs[i].listen, badargs[i].url, badargs[i].workers,
                              badargs[i].log_level, &err);
        if (c != NULL) {
            tt_conf_free(c);
            fail_msg("accepted %s %s", badargs[i].listen, badargs[i].url);
        }
        char needle[64];
        snprintf(needle, sizeof(needle), ": %s: ", badargs[i].key);
        if (strncmp(err.msg, "command line:", 13) != 0 || strstr(err.msg, needle) == NULL)
            fail_msg("case %zu: \"%s\" does not name %s", i, err.msg, badargs[i].key);
    }
    tt_leakcheck_end(lc);
}

/* --- parsers -------------------------------------------------------------------------------- */

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ms;
    } good[] = {
        {"0", 0},         {"5", 5000},
        {"5s", 5000},     {"500ms", 500},
        {"2m", 120000},   {"1h", 3600000},
        {"1.5s", 1500},   {"0.25s", 250},
        {"1.5", 1500},    {"0ms", 0},
        {"90m", 5400000}, {"24h", 86400000},
        {"0.5m", 30000},  {"1000000h", 3600000000000LL},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(good); i++) {
        int64_t v = -7;
        if (tt_parse_duration_ms(good[i].s, &v) != 0 || v != good[i].ms)
            fail_msg("\"%s\": %lld, expected %lld", good[i].s, (long long)v, (long long)good[i].ms);
    }
    static const char *const badv[] = {
        "",    "s",  "ms",  "-1",  "-1s",   " 5s", "5 s",        "5sec", "5d", "5ms ",
        ".5s", "+5", "nan", "inf", "1e400", "5s5", "300000000h", "h1",   "5 ", "1,5s",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(badv); i++) {
        int64_t v = -7;
        if (tt_parse_duration_ms(badv[i], &v) == 0)
            fail_msg("\"%s\" accepted as %lld", badv[i], (long long)v);
        assert_int_equal(v, -7); /* untouched on failure */
    }
}

/* The documented forms are decimal numbers with a unit; strtod's hexadecimal and exponent forms
 * are not durations (tt_parse_size already refuses "0x10"). */
static void test_parse_duration_rejects_non_decimal(void **state)
{
    (void)state;
    static const char *const badv[] = {"0x10", "0x1p4s", "1e3", "2E2ms"};
    int accepted = 0;
    for (size_t i = 0; i < TT_ARRAY_SIZE(badv); i++) {
        int64_t v = -7;
        if (tt_parse_duration_ms(badv[i], &v) == 0) {
            print_error("\"%s\" accepted as %lld ms\n", badv[i], (long long)v);
            accepted++;
        }
    }
    int64_t v;
    assert_int_equal(tt_parse_size("0x10", &v), -1);
    assert_int_equal(accepted, 0);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t v;
    } good[] = {
        {"0", 0},
        {"4096", 4096},
        {"64k", 65536},
        {"64K", 65536},
        {"64kb", 65536},
        {"64KiB", 65536},
        {"1m", 1048576},
        {"2MB", 2097152},
        {"3mib", 3145728},
        {"9223372036854775807", INT64_MAX},
        {"8796093022207k", 8796093022207LL * 1024},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(good); i++) {
        int64_t v = -7;
        if (tt_parse_size(good[i].s, &v) != 0 || v != good[i].v)
            fail_msg("\"%s\": %lld, expected %lld", good[i].s, (long long)v, (long long)good[i].v);
    }
    static const char *const badv[] = {
        "",
        "k",
        "-1",
        "1g",
        "1.5k",
        " 1",
        "1 k",
        "+1",
        "1kk",
        "1b",
        "9223372036854775807k",
        "99999999999999999999",
        "9007199254740992m",
        "0x10",
        "1e3",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(badv); i++) {
        int64_t v = -7;
        if (tt_parse_size(badv[i], &v) == 0)
            fail_msg("\"%s\" accepted as %lld", badv[i], (long long)v);
        assert_int_equal(v, -7);
    }
}

static void test_parse_url(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    static const struct {
        const char *url, *host;
        int port;
    } good[] = {
        {"http://h", "h", 80},
        {"http://h/", "h", 80},
        {"HTTP://Svc.Internal:81", "Svc.Internal", 81},
        {"http://10.1.2.3:65535/", "10.1.2.3", 65535},
        {"http://[::1]", "::1", 80},
        {"http://[fe80::1]:8080", "fe80::1", 8080},
        {"https://h", "h", 443},
        {"HTTPS://api.example:8443/", "api.example", 8443},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(good); i++) {
        char *host = NULL;
        int port = 0;
        int tls = -1;
        const char *why = parse_url(good[i].url, &host, &port, &tls);
        if (why != NULL)
            fail_msg("%s: %s", good[i].url, why);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
        assert_int_equal(tls, strncasecmp(good[i].url, "https", 5) == 0);
        free(host);
    }
    static const char *const badv[] = {
        "https://",           "h:80",       "http://",     "http://:80",
        "http://h:",          "http://h:0", "http://h:x",  "http://h:65536",
        "http://h/x",         "http://h#f", "http://[::1", "http://[]:80",
        "http://h:123456789",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(badv); i++) {
        char *host = NULL;
        int port = -1;
        int tls;
        const char *why = parse_url(badv[i], &host, &port, &tls);
        if (why == NULL) {
            free(host);
            fail_msg("%s accepted", badv[i]);
        }
        assert_null(host);
    }
    tt_leakcheck_end(lc);
}

/* --- dump ------------------------------------------------------------------------------------ */

static void test_dump_has_every_key_and_loads_back(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_error_t err;
    char path[256];
    char *text = full_text();
    tt_conf_t *c = load_ok("full.ini", text);
    free(text);
    char *dump = tt_conf_dump(c);
    assert_non_null(dump);
    assert_int_equal(strncmp(dump, "[tether]\n", 9), 0);

    /* Every key of [tether], and every key of each upstream section. */
    for (size_t i = 0; i < TT_ARRAY_SIZE(global_fields); i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "\n%s = ", global_fields[i].key);
        const char *end = strstr(dump, "\n[upstream ");
        const char *at = strstr(dump, needle);
        if (at == NULL || (end != NULL && at > end))
            fail_msg("dump lacks [tether] %s:\n%s", global_fields[i].key, dump);
    }
    for (size_t u = 0; u < c->nupstreams; u++) {
        char header[128];
        snprintf(header, sizeof(header), "\n[upstream %s]\n", c->upstreams[u].name);
        const char *sec = strstr(dump, header);
        if (sec == NULL)
            fail_msg("dump lacks %s", header);
        const char *next = strstr(sec + 1, "\n[upstream ");
        for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++) {
            if (strcmp(upstream_fields[i].key, "listen") == 0 && !c->upstreams[u].has_listen)
                continue; /* no listen of its own */
            if (strcmp(upstream_fields[i].key, "endpoints") == 0 && !c->upstreams[u].endpoints)
                continue; /* the url's host */
            if (strcmp(upstream_fields[i].key, "probe_expect") == 0 &&
                !c->upstreams[u].probe_expect)
                continue; /* any status */
            if ((strcmp(upstream_fields[i].key, "health_expect") == 0 &&
                 !c->upstreams[u].health_expect) ||
                (strcmp(upstream_fields[i].key, "health_host") == 0 &&
                 !c->upstreams[u].health_host))
                continue; /* 200-399; the upstream's Host */
            if (strncmp(upstream_fields[i].key, "tls_", 4) == 0 && !c->upstreams[u].tls)
                continue; /* TLS keys only for https:// upstreams */
            if (strncmp(upstream_fields[i].key, "listen_", 7) == 0 &&
                !(c->upstreams[u].has_listen && tt_addr_is_unix(&c->upstreams[u].listen)))
                continue; /* socket file keys only for unix: listeners */
            if (upstream_fields[i].def == TT_UNSET &&
                *(const int64_t *)((const char *)&c->upstreams[u] + upstream_fields[i].offset) ==
                    TT_UNSET)
                continue; /* an owner left unchanged */
            char needle[64];
            snprintf(needle, sizeof(needle), "\n%s = ", upstream_fields[i].key);
            const char *at = strstr(sec, needle);
            if (at == NULL || (next != NULL && at > next))
                fail_msg("dump lacks %s in [upstream %s]:\n%s", upstream_fields[i].key,
                         c->upstreams[u].name, dump);
        }
    }

    /* The dump is a configuration file of its own, and the same one. */
    tt_conf_t *again = load_text("dump.ini", dump, &err, path);
    if (again == NULL)
        fail_msg("dump does not load: %s\n%s", err.msg, dump);
    char *dump2 = tt_conf_dump(again);
    assert_string_equal(dump2, dump);
    assert_int_equal(again->nupstreams, c->nupstreams);
    for (size_t u = 0; u < c->nupstreams; u++) {
        const tt_upstream_conf_t *a = &c->upstreams[u], *b = &again->upstreams[u];
        assert_string_equal(a->name, b->name);
        assert_string_equal(a->url, b->url);
        assert_int_equal(a->port, b->port);
        assert_int_equal(a->has_listen, b->has_listen);
        for (size_t i = 0; i < TT_ARRAY_SIZE(upstream_fields); i++) {
            const field_t *f = &upstream_fields[i];
            if (is_scalar(f->type))
                assert_int_equal(*(const int64_t *)((const char *)a + f->offset),
                                 *(const int64_t *)((const char *)b + f->offset));
        }
    }
    free(dump2);
    tt_conf_free(again);

    /* Defaults are dumped too. */
    free(dump);
    tt_conf_free(c);
    c = load_ok("min.ini", UP_A);
    dump = tt_conf_dump(c);
    assert_non_null(strstr(dump, "\nworkers = auto\n"));
    assert_non_null(strstr(dump, "\nidle_timeout = auto\n"));
    assert_non_null(strstr(dump, "\nmax_connections = 256\n"));
    assert_non_null(strstr(dump, "\nlease_timeout = off\n"));
    assert_non_null(strstr(dump, "\nconnect_timeout = 5000ms\n"));
    assert_non_null(strstr(dump, "\nlog_level = info\n"));
    assert_non_null(strstr(dump, "\nhosts = "));
    assert_non_null(strstr(dump, "127.0.0.1:8080"));
    free(dump);
    tt_conf_free(c);
    tt_leakcheck_end(lc);
}

/* The deliberate unknown key at the end of FULL: errors come from the whole file, and the
 * configuration read so far is freed. */
static void test_error_after_a_full_file_frees_everything(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_error_t err;
    char path[256];
    assert_null(load_text("full.ini", FULL, &err, path));
    char prefix[512];
    int line = 1;
    for (const char *p = FULL; *p != '\0' && strncmp(p, "workers_not_here", 16) != 0; p++)
        line += *p == '\n';
    snprintf(prefix, sizeof(prefix), "%s:%d: workers_not_here: unknown key in [upstream v6]", path,
             line);
    assert_string_equal(err.msg, prefix);
    tt_leakcheck_end(lc);
}

/* A configuration path longer than the error buffer: the error keeps the path's tail, the line,
 * key and reason, and nothing is written past the buffer (fail() once wrote at msg + n after a
 * truncated snprintf: a stack overflow with a path of about 500 characters). */
static void test_error_with_a_very_long_path_stays_in_its_buffer(void **state)
{
    (void)state;
    char path[256], longpath[700];
    write_ini("long.ini", "[tether]\nno_such_key = 1\n", path);
    /* "/./" repeated names the same file by a path of about 600 characters. */
    size_t n = (size_t)snprintf(longpath, sizeof(longpath), "%s", g_dir);
    while (n < 600)
        n += (size_t)snprintf(longpath + n, sizeof(longpath) - n, "/.");
    snprintf(longpath + n, sizeof(longpath) - n, "/long.ini");
    struct {
        tt_conf_error_t err;
        char guard[512];
    } out;
    memset(&out, 'G', sizeof(out));
    tt_conf_t *c = tt_conf_load(longpath, &out.err);
    assert_int_equal(unlink(path), 0);
    assert_null(c);
    for (size_t i = 0; i < sizeof(out.guard); i++)
        assert_int_equal(out.guard[i], 'G');
    assert_non_null(memchr(out.err.msg, '\0', sizeof(out.err.msg)));
    assert_true(strncmp(out.err.msg, "...", 3) == 0);
    assert_non_null(strstr(out.err.msg, "/./long.ini:2: no_such_key: "));
}

/* --- reload: the diff ----------------------------------------------------------------------- */

static const char BASE[] =
    "[tether]\nworkers = 2\nclient_idle_timeout = 30s\nproxy_listen = 127.0.0.1:15001\n"
    "[upstream a]\nurl = http://127.0.0.1:8080\nlisten = 127.0.0.1:9001\n"
    "max_connections = 10\n"
    "[upstream b]\nurl = http://127.0.0.1:8081\n";

/* The diff of BASE against BASE with `from` replaced by `to` (the first occurrence). */
static tt_conf_change_t diff_against(const char *from, const char *to, char *why, size_t len)
{
    char text[1024];
    const char *at = strstr(BASE, from);
    assert_non_null(at);
    snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - BASE), BASE, to, at + strlen(from));
    tt_conf_t *a = load_ok("a.ini", BASE), *b = load_ok("b.ini", text);
    tt_conf_change_t change = tt_conf_diff(a, b, why, len);
    tt_conf_free(a);
    tt_conf_free(b);
    return change;
}

static void test_diff_same_file(void **state)
{
    (void)state;
    char why[256];
    /* The same effective values, written differently, are no change. */
    assert_int_equal(
        diff_against("max_connections = 10\n", "max_connections=10 ; same\n", why, sizeof(why)),
        TT_CONF_SAME);
    assert_string_equal(why, "");
}

static void test_diff_numbers_apply_in_place(void **state)
{
    (void)state;
    char why[256];
    const char *live[][2] = {
        {"max_connections = 10\n", "max_connections = 3\n"},
        {"max_connections = 10\n", "max_connections = 10\nmax_idle = 2\nmin_idle = 1\n"},
        {"max_connections = 10\n", "max_connections = 10\nqueue_timeout = 2s\n"},
        {"max_connections = 10\n", "max_connections = 10\nbreaker_cooldown = 9s\n"},
        {"max_connections = 10\n", "max_connections = 10\nprobe_interval = 3s\n"},
        {"max_connections = 10\n", "max_connections = 10\nidle_timeout = 20s\n"},
        {"client_idle_timeout = 30s\n", "client_idle_timeout = 31s\n"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(live); i++)
        if (diff_against(live[i][0], live[i][1], why, sizeof(why)) != TT_CONF_LIVE)
            fail_msg("%s -> %s: not in place (%s)", live[i][0], live[i][1], why);
}

static void test_diff_names_the_key_that_needs_a_new_process(void **state)
{
    (void)state;
    char why[256];
    const char *restart[][3] = {
        {"workers = 2\n", "workers = 3\n", "[tether]: workers changed"},
        {"url = http://127.0.0.1:8080\n", "url = http://127.0.0.1:8090\n",
         "[upstream a]: url changed"},
        {"listen = 127.0.0.1:9001\n", "listen = 127.0.0.1:9002\n", "[upstream a]: listen changed"},
        {"max_connections = 10\n", "max_connections = 10\nbalance = random\n",
         "[upstream a]: balance changed"},
        {"max_connections = 10\n", "max_connections = 10\nprobe = OPTIONS *\n",
         "[upstream a]: probe changed"},
        {"[upstream b]\n", "[upstream c]\n", "upstream b replaced by c"},
        {"[upstream b]\nurl = http://127.0.0.1:8081\n", "", "upstreams removed"},
        {"[upstream b]\n", "[upstream z]\nurl = http://127.0.0.1:8082\n[upstream b]\n",
         "upstreams added"},
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(restart); i++) {
        tt_conf_change_t change = diff_against(restart[i][0], restart[i][1], why, sizeof(why));
        if (change != TT_CONF_RESTART || strcmp(why, restart[i][2]) != 0)
            fail_msg("%s -> %s: %d \"%s\", expected \"%s\"", restart[i][0], restart[i][1],
                     (int)change, why, restart[i][2]);
    }
}

static void test_apply_live_copies_the_numbers_and_keeps_the_strings(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_conf_t *a = load_ok("a.ini", BASE);
    tt_conf_t *b = load_ok(
        "b.ini", "[tether]\nworkers = 2\nclient_idle_timeout = 5s\nproxy_listen = 127.0.0.1:15001\n"
                 "[upstream a]\nurl = http://127.0.0.1:8080\n"
                 "listen = 127.0.0.1:9001\n\n"
                 "max_connections = 4\nmax_idle = 3\n"
                 "[upstream b]\nurl = http://127.0.0.1:8081\n");
    char why[256];
    assert_int_equal(tt_conf_diff(a, b, why, sizeof(why)), TT_CONF_LIVE);
    const char *name = a->upstreams[0].name, *url = a->upstreams[0].url;
    tt_conf_apply_live(a, b);
    assert_int_equal(a->client_idle_timeout, 5000);
    assert_int_equal(a->upstreams[0].max_connections, 4);
    assert_int_equal(a->upstreams[0].max_idle, 3);
    assert_ptr_equal(a->upstreams[0].name, name); /* pointers others hold stay valid */
    assert_ptr_equal(a->upstreams[0].url, url);
    assert_int_equal(tt_conf_key_line(&a->upstreams[0], "max_idle"),
                     10); /* errors name the file as it is now */
    assert_int_equal(tt_conf_diff(a, b, why, sizeof(why)), TT_CONF_SAME);
    tt_conf_free(a);
    tt_conf_free(b);
    tt_leakcheck_end(lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file_has_every_key),
        cmocka_unit_test(test_full_file_loads_typed_values),
        cmocka_unit_test(test_defaults_for_omitted_keys),
        cmocka_unit_test(test_errors_name_file_line_key),
        cmocka_unit_test(test_hosts_span_lines),
        cmocka_unit_test(test_command_line_errors_have_no_line),
        cmocka_unit_test(test_admin_error_names_its_line),
        cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_ipv6_default_hosts),
        cmocka_unit_test(test_upstreams_on_one_host_with_own_ports),
        cmocka_unit_test(test_file_with_bom),
        cmocka_unit_test(test_from_args),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_duration_rejects_non_decimal),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_dump_has_every_key_and_loads_back),
        cmocka_unit_test(test_error_after_a_full_file_frees_everything),
        cmocka_unit_test(test_error_with_a_very_long_path_stays_in_its_buffer),
        cmocka_unit_test(test_diff_same_file),
        cmocka_unit_test(test_diff_numbers_apply_in_place),
        cmocka_unit_test(test_diff_names_the_key_that_needs_a_new_process),
        cmocka_unit_test(test_apply_live_copies_the_numbers_and_keeps_the_strings),
    };
    return cmocka_run_group_tests_name("config", tests, setup_dir, remove_dir);
}
