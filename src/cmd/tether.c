/* tether: the command-line companion of tetherd. */
#include "cli/top.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TETHER_VERSION
#define TETHER_VERSION "0.1.0"
#endif

static void usage(FILE *out)
{
    fprintf(out, "usage: tether COMMAND\n"
                 "commands:\n"
                 "  top        live view of a running tetherd (tether top --help)\n"
                 "  version    print the version\n"
                 "  help       this help\n");
}

static void top_usage(FILE *out)
{
    fprintf(out,
            "usage: tether top [--once] [--json] [--admin ADDR:PORT] [--interval SECONDS]\n"
            "  live view of a running tetherd, read from its admin endpoint's /stats:\n"
            "  one row per upstream with req/s, new connections/s (churn), reuse %%,\n"
            "  active/idle connections, mean connection age, p50/p99, queue, 5xx/s\n"
            "options:\n"
            "  --once              print one snapshot (two samples an interval apart), exit\n"
            "  --json              JSON instead of the table (one object per interval)\n"
            "  --admin ADDR:PORT   tetherd's admin address (default " TT_TOP_DEFAULT_ADMIN ")\n"
            "  --interval SECONDS  refresh interval (default 1)\n");
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
        case 'i': {
            char *end;
            o.interval_s = strtod(optarg, &end);
            if (end == optarg || *end != '\0')
                o.interval_s = -1;
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
    fprintf(stderr, "tether: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
