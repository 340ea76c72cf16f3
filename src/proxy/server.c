#include "proxy/server.h"

#include "core/invariant.h"
#include "core/log.h"
#include "metrics/accesslog.h"
#include "metrics/admin.h"
#include "net/unixsock.h"
#include "proxy/introspect.h"
#include "proxy/session.h"
#include "proxy/worker.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define UNIX_BACKLOG 4096

static size_t cpus_available(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (size_t)CPU_COUNT(&set);
    return 1;
}

/* The descriptor limit, with the soft limit raised to the hard one first (as Go's runtime and
 * HAProxy do): the soft default of 1024 is a relic of select(2), which tetherd does not use. */
static int64_t descriptor_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)1 << 30)
        return (int64_t)1 << 30;
    return (int64_t)rl.rlim_cur;
}

/* max_client_connections: as configured, or what the descriptor limit leaves after the
 * reserves (tt_admission_default_max). */
static int64_t client_connection_limit(const tt_conf_t *conf, size_t nworkers)
{
    int64_t nofile = descriptor_limit();
    int64_t upstream_conns = 0;
    size_t nlisteners = conf->has_proxy_listen ? 1 : 0;
    for (size_t i = 0; i < conf->nupstreams; i++) {
        upstream_conns += conf->upstreams[i].max_connections;
        nlisteners += conf->upstreams[i].has_listen ? 1 : 0;
    }
    int64_t fit = tt_admission_default_max(nofile, upstream_conns, nworkers, nlisteners);
    if (conf->max_client_connections == 0) {
        tt_info("max_client_connections %lld (auto: descriptor limit %lld, less a reserve for "
                "up to %lld upstream connections and the admin endpoint)",
                (long long)fit, (long long)nofile, (long long)upstream_conns);
        return fit;
    }
    if (conf->max_client_connections > fit)
        tt_warn("max_client_connections %lld leaves too few of the %lld descriptors for "
                "upstream connections and the admin endpoint (%lld would); accepting pauses "
                "when they run out",
                (long long)conf->max_client_connections, (long long)nofile, (long long)fit);
    return conf->max_client_connections;
}

static int open_unix_listener(const tt_addr_t *addr, int64_t mode, int64_t owner, int64_t group,
                              tt_unix_listener_t *l, int *fd)
{
    char err[512];
    tt_unix_perms_t perms = {.mode = (int)mode, .uid = (long)owner, .gid = (long)group};
    if (tt_unix_listen(l, addr, UNIX_BACKLOG, &perms, err, sizeof(err)) < 0) {
        tt_error("%s", err);
        return -1;
    }
    *fd = l->fd;
    return 0;
}

static int open_unix_listeners(const tt_conf_t *conf, tt_unix_listener_t *ls, int *fds)
{
    if (conf->has_proxy_listen && tt_addr_is_unix(&conf->proxy_listen) &&
        open_unix_listener(&conf->proxy_listen, conf->proxy_listen_mode, conf->proxy_listen_owner,
                           conf->proxy_listen_group, &ls[0], &fds[0]) < 0)
        return -1;
    for (size_t i = 0; i < conf->nupstreams; i++) {
        const tt_upstream_conf_t *u = &conf->upstreams[i];
        if (u->has_listen && tt_addr_is_unix(&u->listen) &&
            open_unix_listener(&u->listen, u->listen_mode, u->listen_owner, u->listen_group,
                               &ls[1 + i], &fds[1 + i]) < 0)
            return -1;
    }
    return 0;
}

static void log_ready(const tt_conf_t *conf, size_t nworkers)
{
    char a[TT_ADDR_STRLEN];
    if (conf->has_proxy_listen)
        tt_info("forward proxy (HTTP_PROXY) on %s", tt_addr_format(&conf->proxy_listen, a));
    for (size_t i = 0; i < conf->nupstreams; i++) {
        const tt_upstream_conf_t *u = &conf->upstreams[i];
        if (u->has_listen)
            tt_info("upstream %s: %s on %s", u->name, u->url, tt_addr_format(&u->listen, a));
        else
            tt_info("upstream %s: %s via the forward proxy", u->name, u->url);
    }
    tt_info("tetherd ready: %zu worker%s", nworkers, nworkers == 1 ? "" : "s");
}

/* SIGHUP: certificates and keys that changed on disk are loaded for new connections. The rest
 * of the configuration is not reloaded. */
static void reload_tls(tt_upstream_t *ups, size_t nup)
{
    char err[512];
    int any_tls = 0;
    for (size_t i = 0; i < nup; i++) {
        if (ups[i].tls == NULL)
            continue;
        any_tls = 1;
        int rc = tt_tls_client_reload(ups[i].tls, err, sizeof(err));
        if (rc > 0)
            tt_info("SIGHUP: upstream %s: reloaded TLS certificates and keys; new connections use "
                    "them",
                    ups[i].conf->name);
        else if (rc < 0)
            tt_error("SIGHUP: upstream %s: keeping the TLS files loaded before: %s",
                     ups[i].conf->name, err);
    }
    tt_warn("SIGHUP: %s; restart tetherd to apply configuration changes",
            any_tls ? "only TLS certificates and keys are reloaded"
                    : "configuration reload is not supported");
}

int tt_server_run(const tt_conf_t *conf)
{
    char err[512];
    tt_log_set_level((tt_log_level_t)conf->log_level);
    size_t nworkers = conf->workers > 0 ? (size_t)conf->workers : cpus_available();
    size_t nup = conf->nupstreams;
    tt_upstream_t *ups = tt_calloc(nup, sizeof(*ups));
    tt_worker_t *workers = tt_calloc(nworkers, sizeof(*workers));
    int status = 1;
    size_t inited_up = 0, inited_w = 0, started = 0;
    tt_introspect_t introspect;
    tt_introspect_init(&introspect, conf, ups, nup, workers, nworkers);
    tt_admin_t *admin = NULL;
    tt_admission_t admission;
    /* Unix-domain listeners, shared by every worker: [0] proxy_listen, [1 + i] upstream i. */
    tt_unix_listener_t *unix_listeners = tt_calloc(nup + 1, sizeof(*unix_listeners));
    int *shared_fds = tt_calloc(nup + 1, sizeof(*shared_fds));
    for (size_t i = 0; i <= nup; i++)
        unix_listeners[i].fd = shared_fds[i] = -1;
    tt_loop_t **loops = tt_calloc(nworkers, sizeof(*loops));
    tt_admission_init(&admission, client_connection_limit(conf, nworkers), loops, nworkers);

    int access_log_fd = -1;
    if (conf->access_log != NULL && (access_log_fd = tt_accesslog_open(conf->access_log)) < 0) {
        tt_error("access_log: cannot open %s: %s", conf->access_log, strerror(errno));
        goto out;
    }
    for (; inited_up < nup; inited_up++) {
        if (tt_upstream_init(&ups[inited_up], &conf->upstreams[inited_up], conf->path, inited_up,
                             nworkers, err, sizeof(err)) < 0) {
            tt_error("%s", err);
            goto out;
        }
    }
    /* Workers inherit this mask: signals are taken by the main thread alone, with sigwait. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (open_unix_listeners(conf, unix_listeners, shared_fds) < 0)
        goto out;
    for (; inited_w < nworkers; inited_w++) {
        if (tt_worker_init(&workers[inited_w], inited_w, conf, ups, nup, &tt_session_handlers,
                           access_log_fd, &admission, shared_fds, err, sizeof(err)) < 0) {
            tt_error("%s", err);
            inited_w++; /* partly initialised: joined below without a thread */
            goto out;
        }
        loops[inited_w] = workers[inited_w].loop;
    }
    if (conf->has_admin) {
        /* Bound before workers start, so a taken port stops startup before any traffic. */
        tt_admin_ops_t ops = tt_introspect_admin_ops(&introspect);
        admin = tt_admin_open(&conf->admin, &ops, err, sizeof(err));
        if (admin == NULL) {
            tt_error("%s", err);
            goto out;
        }
    }
    for (; started < nworkers; started++) {
        if (tt_worker_start(&workers[started]) != 0) {
            tt_error("cannot start worker thread: %s", strerror(errno));
            goto out;
        }
    }
    tt_introspect_set_running(&introspect);
    if (admin != NULL) {
        int rc = tt_admin_start(admin);
        if (rc != 0) {
            tt_error("cannot start admin thread: %s", strerror(rc));
            goto out;
        }
        char a[TT_ADDR_STRLEN];
        tt_info("admin endpoint on http://%s (/metrics /stats /healthz /ready /pools /config)",
                tt_addr_format(&conf->admin, a));
    }
    log_ready(conf, nworkers);
    for (;;) {
        int sig;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload_tls(ups, nup);
            continue;
        }
        tt_info("%s: draining (up to %lldms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                (long long)conf->drain_timeout);
        break;
    }
    status = 0;
out:
    /* The admin thread reads workers through tt_worker_call: stop it before they drain. */
    tt_admin_close(admin);
    for (size_t i = 0; i < started; i++)
        tt_worker_request_drain(&workers[i]);
    for (size_t i = 0; i < started; i++)
        tt_worker_join(&workers[i]);
    for (size_t i = 0; i < inited_w; i++)
        tt_worker_destroy(&workers[i]);
    for (size_t i = 0; i < inited_up; i++)
        tt_upstream_destroy(&ups[i]);
    for (size_t i = 0; i <= nup; i++)
        tt_unix_listener_close(&unix_listeners[i]);
    free(unix_listeners);
    free(shared_fds);
    free(workers);
    free(loops);
    free(ups);
    if (access_log_fd >= 0)
        close(access_log_fd);
    if (status == 0)
        tt_info("tetherd stopped");
    return status;
}
