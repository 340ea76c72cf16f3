/* Configuration: the INI file (or the zero-config command line) read into typed fields.
 *
 * Every field starts UNSET; tt_conf_finish() fills in the defaults in one place and validates
 * the whole. Errors name file, line and key ("tether.ini:12: idle_timeout: not a duration"). Once
 * workers start, only a reload changes it: tt_conf_apply_live() writes new numbers in place while
 * every reader is paused; workers only read it. */
#ifndef TT_CONFIG_CONFIG_H
#define TT_CONFIG_CONFIG_H

#include "core/addr.h"
#include "core/clock.h"
#include "core/log.h"

#include <stddef.h>
#include <stdint.h>

#define TT_UNSET -1

/* idle_timeout = auto: learn the upstream's idle timeout and stay under it. */
#define TT_IDLE_AUTO -2

/* dns_refresh = ttl: follow the records' TTL (clamped by dns_min_ttl and dns_max_ttl). */
#define TT_DNS_REFRESH_BY_TTL -2

/* Bounds on the lists of endpoints and resolvers one key may give. */
#define TT_CONF_ENDPOINTS_MAX 256
#define TT_CONF_RESOLVERS_MAX 8

/* Room for the line of every upstream key (tt_conf_key_line). */
#define TT_UPSTREAM_KEYS_MAX 64

typedef struct {
    char *name;
    int line; /* line of the section header, for errors about missing keys */
    int key_line[TT_UPSTREAM_KEYS_MAX];

    char *url;
    char *host;       /* from url */
    int port;         /* from url */
    int tls;          /* https:// */
    tt_addr_t listen; /* TCP, or AF_UNIX (listen = unix:/path) */
    int has_listen;
    int64_t listen_mode;  /* a unix: listen's permission bits */
    int64_t listen_owner; /* its uid; -1: this process's */
    int64_t listen_group; /* its gid; -1: this process's */
    char **hosts;
    size_t nhosts;
    int preserve_host;
    tt_addr_t *endpoints; /* explicit list (NULL: the url's host, resolved) */
    size_t nendpoints;

    int64_t dns_refresh; /* ms, TT_DNS_REFRESH_BY_TTL, or 0: off (always 0 for literals) */
    int64_t dns_min_ttl;
    int64_t dns_max_ttl;
    int64_t dns_empty;            /* tt_dns_empty_t: 0 keep, 1 clear */
    int64_t balance;              /* tt_balance_t */
    int64_t connect_retries;      /* other endpoints tried after a failed connect */
    int64_t breaker_failures;     /* failed connects in a row that eject an endpoint; 0: off */
    int64_t breaker_cooldown;     /* ms */
    int64_t breaker_max_cooldown; /* ms */
    int64_t max_ejected;          /* percent of the endpoints */
    int64_t breaker_on_5xx;       /* a 502/503/504 from the upstream counts as a failure */
    int64_t splice;               /* large plain-TCP bodies go socket -> pipe -> socket */
    char *probe;                  /* request line of idle-connection probes; NULL: off */
    int64_t probe_interval;
    int64_t probe_timeout;
    char *probe_expect; /* status set; NULL: any status */
    char *health_check; /* request line of active health checks; NULL: off */
    int64_t health_interval;
    int64_t health_timeout;
    int64_t health_rise; /* passed checks in a row that bring a down endpoint back */
    int64_t health_fall; /* failed checks in a row that take an endpoint down */
    char *health_expect; /* status set; NULL: 200-399 */
    char *health_host;   /* Host of the checks; NULL: the upstream's */

    int64_t max_connections;
    int64_t max_idle;
    int64_t min_idle;
    int64_t max_queue;
    int64_t max_requests; /* 0: unlimited */
    int64_t retry_buffer; /* bytes of request body kept for a safe retry */
    int64_t idle_timeout; /* ms, or TT_IDLE_AUTO */
    int64_t connect_timeout;
    int64_t response_timeout;
    int64_t response_idle_timeout; /* 0: off */
    int64_t queue_timeout;
    int64_t max_lifetime;  /* 0: unlimited */
    int64_t tcp_keepalive; /* 0: off */
    int64_t lease_warn;
    int64_t lease_timeout; /* 0: off */

    char *tls_server_name; /* NULL: the url's host */
    char *tls_ca;          /* NULL: the system store */
    char *tls_cert, *tls_key;
    int64_t tls_verify;
    int64_t tls_min_version; /* 12 or 13 */
    int64_t tls_session_reuse;
} tt_upstream_conf_t;

typedef struct {
    char *path;      /* "command line" for the zero-config form */
    int64_t workers; /* 0: auto */
    tt_addr_t proxy_listen;
    int has_proxy_listen;
    int64_t proxy_listen_mode; /* for a unix: proxy_listen, as listen_mode */
    int64_t proxy_listen_owner;
    int64_t proxy_listen_group;
    tt_addr_t admin;
    int has_admin;
    int64_t admin_allow_remote;
    int64_t log_level;
    int64_t max_head_size;
    int64_t client_header_timeout;
    int64_t client_idle_timeout;
    int64_t lingering_timeout;   /* ms; 0: off */
    int64_t request_buffer;      /* bytes of a request body read before a connection is taken */
    int64_t client_body_timeout; /* ms for the whole buffered body */
    int64_t drain_timeout;
    int64_t tcp_defer_accept;       /* ms; 0: off */
    int64_t max_client_connections; /* 0: auto, from RLIMIT_NOFILE */
    char *access_log;               /* path; NULL: off */
    char *control_socket;           /* Unix socket for takeovers (net/takeover.h); NULL: none */
    tt_addr_t resolvers[TT_CONF_RESOLVERS_MAX]; /* none: resolv.conf and /etc/hosts */
    size_t nresolvers;

    tt_upstream_conf_t *upstreams;
    size_t nupstreams;
} tt_conf_t;

/* conf->path of the zero-config form. */
#define TT_CONF_COMMAND_LINE "command line"

/* Error text of a failed load, "FILE:LINE: KEY: reason". */
typedef struct {
    char msg[512];
} tt_conf_error_t;

/* Reads and validates path into a new configuration. Returns NULL and fills err on failure. */
tt_conf_t *tt_conf_load(const char *path, tt_conf_error_t *err);

/* Builds the zero-config form: one upstream "default" at url, reached on listen. */
tt_conf_t *tt_conf_from_args(const char *listen, const char *url, const char *workers,
                             const char *log_level, tt_conf_error_t *err);

void tt_conf_free(tt_conf_t *conf);

/* Where key was set in upstream u's section (its header line if it was not), for errors found
 * after loading, such as a TLS key that does not match its certificate. */
int tt_conf_key_line(const tt_upstream_conf_t *u, const char *key);

/* Writes the effective configuration (defaults filled in) as INI text to a newly allocated
 * string the caller frees. */
char *tt_conf_dump(const tt_conf_t *conf);

/* What a reload would change (tt_conf_diff). */
typedef enum {
    TT_CONF_SAME,    /* the same effective configuration */
    TT_CONF_LIVE,    /* only keys that apply in place (tt_conf_apply_live) */
    TT_CONF_RESTART, /* a key only a new process can apply: the takeover path */
} tt_conf_change_t;

/* Room for "[upstream NAME]" in tt_conf_diff's reason. */
#define TT_CONF_SECTION_MAX 160

/* Compares the running configuration with the next one, section by section and key by key
 * (upstreams by name, in order). With TT_CONF_RESTART, why names the first key that needs a new
 * process ("[upstream users]: url changed", "upstreams added"). A key applies in place when it is
 * a number read through the configuration at use time; the few numbers copied once at startup
 * and every address, string or list need a takeover (config.c: restart_keys). */
tt_conf_change_t tt_conf_diff(const tt_conf_t *running, const tt_conf_t *next, char *why,
                              size_t whylen);

/* Copies every number of next into running, in place, after tt_conf_diff() said
 * TT_CONF_LIVE: the sections match one to one and no string changed, so the pointers others
 * hold into running stay valid. The caller makes sure no thread reads the numbers meanwhile
 * (proxy/server.c pauses the workers and holds the admin endpoint's lock). */
void tt_conf_apply_live(tt_conf_t *running, const tt_conf_t *next);

/* Parsers shared with the command line and tests. Return 0 on success, -1 if malformed. */
int tt_parse_duration_ms(const char *s, int64_t *out);
int tt_parse_size(const char *s, int64_t *out);

#endif
