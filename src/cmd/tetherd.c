/* tetherd: the connection-pooling sidecar. */
#include "config/config.h"
#include "net/tls.h"
#include "proxy/server.h"
#include "upstream/upstream.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: tetherd -c FILE            run with a configuration file\n"
                 "       tetherd --check [--resolve] -c FILE\n"
                 "                                  validate the configuration and exit\n"
                 "       tetherd --listen ADDR:PORT --upstream http://HOST:PORT [--workers N]\n"
                 "                                  zero-config: one upstream on one local port\n"
                 "options:\n"
                 "  -c, --config FILE   configuration file (INI; see docs/configuration.md)\n"
                 "  --check             validate and exit (status 0 if valid, 2 if not)\n"
                 "  --resolve           with --check: resolve every upstream host name too\n"
                 "  --listen ADDR:PORT  local address for the zero-config form\n"
                 "  --upstream URL      upstream for the zero-config form\n"
                 "  --workers N|auto    worker threads (zero-config form)\n"
                 "  --log-level LEVEL   error, warn, info or debug (overrides log_level)\n"
                 "  --takeover          take the listening sockets over from the tetherd on\n"
                 "                      control_socket, which then drains (upgrades)\n"
                 "  -h, --help          this help\n"
                 "  -V, --version       print the version\n");
}

/* --check --resolve: every upstream host name resolves (what startup would do first). */
static int check_names(const tt_conf_t *conf)
{
    int failed = 0;
    for (size_t i = 0; i < conf->nupstreams; i++) {
        const tt_upstream_conf_t *u = &conf->upstreams[i];
        tt_addr_t addr;
        const char *why;
        if (tt_addr_resolve(u->host, u->port, &addr, 1, &why) < 0) {
            fprintf(stderr, "tetherd: %s:%d: url: upstream %s: cannot resolve %s: %s\n", conf->path,
                    tt_conf_key_line(u, "url"), u->name, u->host, why);
            failed = 1;
        } else {
            char a[TT_ADDR_STRLEN];
            printf("upstream %s: %s -> %s\n", u->name, u->host, tt_addr_format(&addr, a));
        }
    }
    return failed ? -1 : 0;
}

/* --check loads the TLS files too: they need no network, so a bad key is caught before a
 * deploy rather than at startup. */
static int check_tls_files(const tt_conf_t *conf)
{
    char err[512];
    for (size_t i = 0; i < conf->nupstreams; i++) {
        if (!conf->upstreams[i].tls)
            continue;
        tt_tls_options_t opts;
        tt_upstream_tls_options(&conf->upstreams[i], conf->path, &opts);
        tt_tls_client_t *tc = tt_tls_client_new(&opts, err, sizeof(err));
        if (tc == NULL) {
            fprintf(stderr, "tetherd: %s\n", err);
            return -1;
        }
        tt_tls_client_free(tc);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},      {"check", no_argument, NULL, 'k'},
        {"resolve", no_argument, NULL, 'r'},           {"listen", required_argument, NULL, 'l'},
        {"upstream", required_argument, NULL, 'u'},    {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'L'},   {"takeover", no_argument, NULL, 'T'},
        {"takeover-fd", required_argument, NULL, 'F'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},           {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *listen = NULL, *upstream = NULL, *workers = NULL, *level = NULL;
    int check = 0, resolve = 0, takeover = 0, takeover_fd = -1, c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            check = 1;
            break;
        case 'r':
            resolve = 1;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'u':
            upstream = optarg;
            break;
        case 'w':
            workers = optarg;
            break;
        case 'L':
            level = optarg;
            break;
        case 'T':
            takeover = 1;
            break;
        case 'F': /* internal: a reload's socket pair to the predecessor */
            takeover_fd = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("tetherd %s\n", TETHER_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (resolve && !check) {
        fprintf(stderr, "tetherd: --resolve goes with --check\n");
        return 2;
    }
    if (optind < argc || (config == NULL) == (listen == NULL && upstream == NULL) ||
        (config == NULL && (listen == NULL || upstream == NULL))) {
        usage(stderr);
        return 2;
    }
    if (config != NULL && workers != NULL) {
        fprintf(stderr, "tetherd: --workers is for the zero-config form: set workers in %s\n",
                config);
        return 2;
    }
    tt_conf_error_t err;
    tt_conf_t *conf = config != NULL ? tt_conf_load(config, &err)
                                     : tt_conf_from_args(listen, upstream, workers, level, &err);
    if (conf == NULL) {
        fprintf(stderr, "tetherd: %s\n", err.msg);
        return 2;
    }
    if (config != NULL && level != NULL) {
        tt_log_level_t l;
        if (tt_log_level_parse(level, &l) < 0) {
            fprintf(stderr, "tetherd: --log-level %s: expected error, warn, info or debug\n",
                    level);
            tt_conf_free(conf);
            return 2;
        }
        conf->log_level = l;
    }
    if (check) {
        if (check_tls_files(conf) < 0 || (resolve && check_names(conf) < 0)) {
            tt_conf_free(conf);
            return 2;
        }
        printf("%s: ok\n", conf->path);
        tt_conf_free(conf);
        return 0;
    }
    /* The path, not /proc/self/exe itself: a reload after an upgrade runs the new binary. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        fprintf(stderr, "tetherd: /proc/self/exe: %s\n", strerror(errno));
        tt_conf_free(conf);
        return 1;
    }
    exe[n] = '\0';
    tt_server_opts_t run = {
        .exe = exe, .argv = argv, .takeover = takeover, .takeover_fd = takeover_fd};
    int status = tt_server_run(conf, &run);
    tt_conf_free(conf);
    return status;
}
