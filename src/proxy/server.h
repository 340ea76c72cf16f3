/* The process: resolves upstreams, starts one worker per CPU (or as configured), waits for a
 * signal, drains the workers and returns the exit status. */
#ifndef TT_PROXY_SERVER_H
#define TT_PROXY_SERVER_H

#include "config/config.h"

typedef struct {
    const char *exe;   /* this binary's path, run again by a reload */
    char *const *argv; /* the arguments to run it with (NULL-terminated) */
    int takeover;      /* --takeover: take the sockets over through conf->control_socket */
    int takeover_fd;   /* --takeover-fd: a reload's socket pair to the predecessor; -1: none */
} tt_server_opts_t;

/* Runs tetherd with conf until SIGTERM or SIGINT, or until a successor took its listening
 * sockets over (control socket or reload; net/takeover.h), then drains. SIGHUP reloads: an
 * invalid file changes nothing; a change of numbers (limits, timeouts, breaker and probe
 * timing) is written into conf in place and applied to the live pools; any other change starts
 * a successor with the new file; TLS files are checked either way. SIGUSR1 reopens the access
 * log. Returns the process exit status. */
int tt_server_run(tt_conf_t *conf, const tt_server_opts_t *opts);

#endif
