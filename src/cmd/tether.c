/* tether: the command-line companion of tetherd. */
#include "churn/run.h"
#include "cli/top.h"
#include "config/config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: tether COMMAND\n"
                 "commands:\n"
                 "  churn      find the service pair that churns most (tether churn --help)\n"
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

static void churn_usage(FILE *out)
{
    fprintf(out,
            "usage: tether churn [--seconds N] [--top N] [--json] [--suggest] [--port P]\n"
            "                    [--pid PID] [--netns NAME] [--save FILE] [--source trace|sample]\n"
            "       tether churn --compare BEFORE AFTER [--json] [--top N]\n"
            "  ranks the host's TCP service pairs by new connections per second: outbound by\n"
            "  (process, remote address:port), inbound by listening socket; with lifetimes,\n"
            "  ESTABLISHED/TIME_WAIT/CLOSE_WAIT, socket memory and retransmits (docs/churn.md)\n"
            "options:\n"
            "  --seconds N      sampling window (default 10)\n"
            "  --top N          pairs shown (default 10, 0: all)\n"
            "  --json           JSON instead of the table\n"
            "  --suggest        [upstream] sections for tetherd for the pairs that churn\n"
            "  --port P         only pairs with P as remote or listening port\n"
            "  --pid PID        only pairs of process PID\n"
            "  --netns NAME     the network namespace /var/run/netns/NAME\n"
            "  --save FILE      also write the JSON report to FILE (for --compare)\n"
            "  --source S       trace (the sock:inet_sock_set_state tracepoint, exact; needs\n"
            "                   root) or sample (sock_diag snapshots, estimated); default:\n"
            "                   trace when available\n"
            "  --compare B A    before/after table of two --save files\n");
}

static volatile sig_atomic_t churn_stop;

static void churn_stop_cb(int sig)
{
    (void)sig;
    churn_stop = 1;
}

static int parse_count(const char *s, double max, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= 0) || v > max)
        return -1;
    *out = v;
    return 0;
}

static int cmd_churn(int argc, char **argv)
{
    static const struct option opts[] = {
        {"seconds", required_argument, NULL, 's'}, {"top", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},          {"suggest", no_argument, NULL, 'g'},
        {"port", required_argument, NULL, 'p'},    {"pid", required_argument, NULL, 'P'},
        {"netns", required_argument, NULL, 'n'},   {"save", required_argument, NULL, 'w'},
        {"source", required_argument, NULL, 'S'},  {"compare", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    tt_churn_opts_t o = {.seconds = 10, .top = 10, .stop = &churn_stop};
    int compare = 0, c;
    double v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (parse_count(optarg, 86400, &o.seconds) < 0 || o.seconds < 0.1) {
                fprintf(stderr, "tether churn: --seconds %s: 0.1 to 86400\n", optarg);
                return 2;
            }
            break;
        case 't':
        case 'p':
        case 'P':
            if (parse_count(optarg, c == 'p' ? 65535 : 1e9, &v) < 0 || v != (int)v) {
                fprintf(stderr, "tether churn: %s: not a valid number\n", optarg);
                return 2;
            }
            *(c == 't' ? (int *)&o.top : c == 'p' ? &o.port : &o.pid) = (int)v;
            break;
        case 'j':
            o.json = 1;
            break;
        case 'g':
            o.suggest = 1;
            break;
        case 'n':
            o.netns = optarg;
            break;
        case 'w':
            o.save = optarg;
            break;
        case 'S':
            if (strcmp(optarg, "trace") != 0 && strcmp(optarg, "sample") != 0) {
                fprintf(stderr, "tether churn: --source %s: trace or sample\n", optarg);
                return 2;
            }
            o.source = optarg[0] == 't' ? TT_CHURN_WANT_TRACE : TT_CHURN_WANT_SAMPLE;
            break;
        case 'c':
            compare = 1;
            break;
        case 'h':
            churn_usage(stdout);
            return 0;
        default:
            churn_usage(stderr);
            return 2;
        }
    }
    if (compare) {
        if (argc - optind != 2) {
            churn_usage(stderr);
            return 2;
        }
        return tt_churn_compare_files(argv[optind], argv[optind + 1], o.top, o.json, stdout,
                                      stderr);
    }
    if (optind < argc) {
        churn_usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = churn_stop_cb};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return tt_churn_run(&o, stdout, stderr);
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
    if (strcmp(argv[1], "churn") == 0)
        return cmd_churn(argc - 1, argv + 1);
    if (strcmp(argv[1], "reload") == 0)
        return cmd_reload(argc - 1, argv + 1);
    fprintf(stderr, "tether: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
