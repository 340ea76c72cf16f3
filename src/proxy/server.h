/* The process: resolves upstreams, starts one worker per CPU (or as configured), waits for a
 * signal, drains the workers and returns the exit status. */
#ifndef TT_PROXY_SERVER_H
#define TT_PROXY_SERVER_H

#include "config/config.h"

/* Runs tetherd with conf until SIGTERM or SIGINT. Returns the process exit status. */
int tt_server_run(const tt_conf_t *conf);

#endif
