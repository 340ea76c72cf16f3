/* tetherd: the connection-pooling sidecar. */
#include "config/config.h"
#include "net/tls.h"
#include "proxy/server.h"
#include "upstream/upstream.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#ifndef TETHER_VERSION
#define TETHER_VERSION "0.1.0"
#endif

static void usage(FILE *out)
{
    fprintf(out, "usage: tetherd -c FILE            run with a configuration file\n"
                 "       tetherd --check -c FILE    validate the configuration and exit\n"
                 "       tetherd --listen ADDR:PORT --upstream http://HOST:PORT [--workers N]\n"
                 "                                  zero-config: one upstream on one local port\n"
                 "options:\n"
                 "  -c, --config FILE   configuration file (INI; see docs/configuration.md)\n"
                 "  --check             validate and exit (status 0 if valid, 2 if not)\n"
                 "  --listen ADDR:PORT  local address for the zero-config form\n"
                 "  --upstream URL      upstream for the zero-config form\n"
                 "  --workers N|auto    worker threads (zero-config form)\n"
                 "  --log-level LEVEL   error, warn, info or debug (zero-config form)\n"
                 "  -h, --help          this help\n"
                 "  -V, --version       print the version\n");
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
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"listen", required_argument, NULL, 'l'},
        {"upstream", required_argument, NULL, 'u'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *listen = NULL, *upstream = NULL, *workers = NULL, *level = NULL;
    int check = 0, c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            check = 1;
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
    if (optind < argc || (config == NULL) == (listen == NULL && upstream == NULL) ||
        (config == NULL && (listen == NULL || upstream == NULL))) {
        usage(stderr);
        return 2;
    }
    tt_conf_error_t err;
    tt_conf_t *conf = config != NULL ? tt_conf_load(config, &err)
                                     : tt_conf_from_args(listen, upstream, workers, level, &err);
    if (conf == NULL) {
        fprintf(stderr, "tetherd: %s\n", err.msg);
        return 2;
    }
    if (check) {
        if (check_tls_files(conf) < 0) {
            tt_conf_free(conf);
            return 2;
        }
        printf("%s: ok\n", conf->path);
        tt_conf_free(conf);
        return 0;
    }
    int status = tt_server_run(conf);
    tt_conf_free(conf);
    return status;
}
