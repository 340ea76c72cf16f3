/* tether: the command-line companion of tetherd. */
#include "cli/top.h"
#include "config/config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: tether COMMAND\n"
                 "commands:\n"
                 "  top        live view of a running tetherd (tether top --help)\n"
                 "  reload     reload tetherd's configuration file [--admin ADDR:PORT]\n"
                 "  version    print the version\n"
                 "  help       this help\n");
}

static void top_usage(FILE *out)
{
    fprintf(out,
            "usage: tether top [--once] [--json] [--admin ADDR:PORT] [--interval DURATION]\n"
            "  live view of a running tetherd, read from its admin endpoint's /stats:\n"
            "  one row per upstream with req/s, new connections/s (churn), reuse %%,\n"
            "  active/idle connections, mean connection age, p50/p99, queue, 5xx/s\n"
            "options:\n"
            "  --once              print one snapshot (two samples an interval apart), exit\n"
            "  --json              JSON instead of the table (one object per interval)\n"
            "  --admin ADDR:PORT   tetherd's admin address (default " TT_TOP_DEFAULT_ADMIN ")\n"
            "  --interval DURATION refresh interval: seconds, or with a unit (500ms, 2s, 1m;\n"
            "                      default 1, at most 1h)\n");
}

static int cmd_top(int argc, char **argv)
{
    static const struct option opts[] = {
        {"once", no_argument, NULL, 'o'},        {"json", no_argument, NULL, 'j'},
        {"admin", required_argument, NULL, 'a'}, {"interval", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    tt_top_opts_t o = {.admin = TT_TOP_DEFAULT_ADMIN, .interval_s = 1.0};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            o.once = 1;
            break;
        case 'j':
            o.json = 1;
            break;
        case 'a':
            o.admin = optarg;
            break;
        case 'i': { /* a duration as in the configuration: a bare number is seconds */
            int64_t ms;
            o.interval_s = tt_parse_duration_ms(optarg, &ms) == 0 ? (double)ms / 1000 : -1;
            break;
        }
        case 'h':
            top_usage(stdout);
            return 0;
        default:
            top_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        top_usage(stderr);
        return 2;
    }
    return tt_top_run(&o, stdout, stderr);
}

/* tether reload: POST /reload on the admin endpoint, which checks the file first. */
static int cmd_reload(int argc, char **argv)
{
    static const struct option opts[] = {
        {"admin", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *admin = TT_TOP_DEFAULT_ADMIN;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'a') {
            admin = optarg;
        } else {
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: tether reload [--admin ADDR:PORT]\n"
                    "  reloads the configuration of the tetherd whose admin endpoint is ADDR:PORT\n"
                    "  (default " TT_TOP_DEFAULT_ADMIN "), as SIGHUP does: an invalid file is\n"
                    "  refused with its error and the running configuration stays\n");
            return c == 'h' ? 0 : 2;
        }
    }
    tt_addr_t addr;
    if (optind < argc || tt_top_parse_admin(admin, &addr) < 0) {
        fprintf(stderr, "tether reload: --admin %s: expected ADDR:PORT\n", admin);
        return 2;
    }
    tt_buf_t body = {0};
    char err[1024];
    int rc = tt_admin_request(&addr, "POST", "/reload", &body, err, sizeof(err));
    if (rc == 0)
        printf("%.*s", (int)tt_buf_len(&body), tt_buf_rptr(&body));
    else
        fprintf(stderr, "tether reload: %.*s\n", (int)strcspn(err, "\n"), err);
    free(body.data);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("tether %s\n", TETHER_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "top") == 0)
        return cmd_top(argc - 1, argv + 1);
    if (strcmp(argv[1], "reload") == 0)
        return cmd_reload(argc - 1, argv + 1);
    fprintf(stderr, "tether: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
