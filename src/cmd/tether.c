/* tether: the command-line companion of tetherd. */
#include <stdio.h>
#include <string.h>

#ifndef TETHER_VERSION
#define TETHER_VERSION "0.1.0"
#endif

static void usage(FILE *out)
{
    fprintf(out, "usage: tether COMMAND\n"
                 "commands:\n"
                 "  version    print the version\n"
                 "  help       this help\n");
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
    fprintf(stderr, "tether: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
