#include "proxy/server.h"

#include "core/clock.h"
#include "core/invariant.h"
#include "core/log.h"
#include "metrics/accesslog.h"
#include "metrics/admin.h"
#include "net/splice.h"
#include "net/unixsock.h"
#include "proxy/introspect.h"
#include "proxy/session.h"
#include "proxy/worker.h"
#include "upstream/discovery.h"

#include "net/takeover.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096
/* How long one side of a takeover waits for the other (the successor has resolved its upstreams
 * and loaded its TLS files before it asks). */
#define TAKEOVER_TIMEOUT_MS 10000

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
    /* Per worker and listener two descriptors: the worker's dup and the listener set's own; per
     * worker two for each splice pipe it may hold. */
    int64_t fit = tt_admission_default_max(nofile, upstream_conns, nworkers,
                                           2 * nlisteners + 2 * TT_PIPES_MAX);
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
    tt_info("tetherd ready: %zu worker%s (pid %d)", nworkers, nworkers == 1 ? "" : "s",
            (int)getpid());
}

/* A TCP address gets one SO_REUSEPORT socket per worker; a Unix one a single socket every
 * worker accepts from (Linux does not balance AF_UNIX over SO_REUSEPORT). */
static int ensure_listener(const tt_conf_t *conf, tt_listenset_t *ls, const tt_addr_t *addr,
                           size_t nworkers, int64_t mode, int64_t owner, int64_t group, char *err,
                           size_t errlen)
{
    if (tt_addr_is_unix(addr)) {
        tt_unix_perms_t perms = {.mode = (int)mode, .uid = (long)owner, .gid = (long)group};
        return tt_listenset_ensure_unix(ls, addr, LISTEN_BACKLOG, &perms, err, errlen);
    }
    int defer_s = (int)((conf->tcp_defer_accept + 999) / 1000);
    return tt_listenset_ensure(ls, addr, nworkers, LISTEN_BACKLOG, defer_s, err, errlen);
}

/* Binds (or keeps, after a takeover) one listening socket per worker on every address of the
 * configuration, then refuses to run beside another process on any of them. */
static int open_listeners(const tt_conf_t *conf, size_t nworkers, tt_listenset_t *ls, char *err,
                          size_t errlen)
{
    if (conf->has_proxy_listen &&
        ensure_listener(conf, ls, &conf->proxy_listen, nworkers, conf->proxy_listen_mode,
                        conf->proxy_listen_owner, conf->proxy_listen_group, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < conf->nupstreams; i++) {
        const tt_upstream_conf_t *u = &conf->upstreams[i];
        if (u->has_listen && ensure_listener(conf, ls, &u->listen, nworkers, u->listen_mode,
                                             u->listen_owner, u->listen_group, err, errlen) < 0)
            return -1;
    }
    if (tt_listenset_check_exclusive(ls, err, errlen) < 0)
        return -1;
    if (conf->has_admin && tt_listenset_admin(ls, &conf->admin, err, errlen) < 0)
        return -1;
    tt_listenset_prune(ls);
    return 0;
}

/* Every reload without a takeover: certificates and keys that changed on disk are loaded for
 * new connections, and everything else (pools, learned idle timeouts, TLS sessions) stays. */
static void reload_tls(tt_upstream_t **ups, size_t nup)
{
    char err[512];
    for (size_t i = 0; i < nup; i++) {
        if (ups[i]->tls == NULL)
            continue;
        int rc = tt_tls_client_reload(ups[i]->tls, err, sizeof(err));
        if (rc > 0)
            tt_info("SIGHUP: upstream %s: reloaded TLS certificates and keys; new connections use "
                    "them",
                    ups[i]->conf->name);
        else if (rc < 0)
            tt_error("SIGHUP: upstream %s: keeping the TLS files loaded before: %s",
                     ups[i]->conf->name, err);
    }
}

/* What a reload changes while every worker waits (tt_worker_while_paused). */
typedef struct {
    tt_conf_t *running;
    const tt_conf_t *next;
    tt_upstream_t **ups;
    size_t nup;
} live_change_t;

static void apply_while_paused(void *arg)
{
    live_change_t *lc = arg;
    tt_conf_apply_live(lc->running, lc->next);
    for (size_t i = 0; i < lc->nup; i++)
        tt_upstream_reconfigure(lc->ups[i]);
}

static void reconfigure_pools(tt_worker_t *w, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < w->nupstreams; i++)
        tt_pool_reconfigure(w->pools[i]);
}

/* A change of numbers only: written into the running configuration while every worker waits
 * between events and the admin endpoint holds off, then each worker in turn applies them to its
 * pools (lowered limits close idle connections, never active ones). Pools, learned idle
 * timeouts and TLS sessions stay. */
static void reload_in_place(tt_conf_t *conf, const tt_conf_t *next, tt_upstream_t **ups, size_t nup,
                            tt_worker_t *workers, size_t nworkers, tt_introspect_t *introspect)
{
    live_change_t lc = {.running = conf, .next = next, .ups = ups, .nup = nup};
    pthread_mutex_lock(&introspect->conf_lock);
    uint64_t paused_at = tt_clock_monotonic_us();
    tt_worker_while_paused(workers, nworkers, apply_while_paused, &lc);
    uint64_t paused_us = tt_clock_monotonic_us() - paused_at;
    pthread_mutex_unlock(&introspect->conf_lock);
    for (size_t i = 0; i < nworkers; i++)
        if (tt_worker_call(&workers[i], reconfigure_pools, NULL, TAKEOVER_TIMEOUT_MS) < 0)
            tt_error("reload: worker %zu did not apply the new limits to its pools within %dms", i,
                     TAKEOVER_TIMEOUT_MS);
    tt_info("reload: applied in place (workers paused %lluus); pools, learned idle timeouts and "
            "TLS sessions kept",
            (unsigned long long)paused_us);
}

/* Starts the successor for a reload: this binary (as installed now, so a reload after an upgrade
 * runs the new one) with the same arguments and --takeover-fd. Double fork: the successor is
 * nobody's child here, so it needs no reaping when this process is gone. Returns 0 once it took
 * the sockets over, -1 if it failed (this process carries on as it was). */
static int reload_by_takeover(const tt_server_opts_t *opts, tt_listenset_t *ls)
{
    char err[512], fdarg[32];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        tt_error("reload: socketpair: %s", strerror(errno));
        return -1;
    }
    snprintf(fdarg, sizeof(fdarg), "--takeover-fd=%d", sv[1]);
    size_t argc = 0;
    while (opts->argv[argc] != NULL)
        argc++;
    char **argv = tt_calloc(argc + 2, sizeof(*argv));
    size_t n = 0;
    for (size_t i = 0; i < argc; i++)
        if (strcmp(opts->argv[i], "--takeover") != 0 &&
            strncmp(opts->argv[i], "--takeover-fd", 13) != 0)
            argv[n++] = opts->argv[i];
    argv[n++] = fdarg;
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec: this process has threads. */
        if (fork() != 0)
            _exit(0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        fcntl(sv[1], F_SETFD, 0);
        execv(opts->exe, argv);
        _exit(127);
    }
    free(argv);
    close(sv[1]);
    if (pid < 0) {
        tt_error("reload: fork: %s", strerror(errno));
        close(sv[0]);
        return -1;
    }
    waitpid(pid, NULL, 0);
    pid_t peer;
    int rc = tt_takeover_serve(sv[0], ls, TAKEOVER_TIMEOUT_MS, &peer, err, sizeof(err));
    close(sv[0]);
    if (rc < 0) {
        tt_error("reload: %s; the running configuration stays", err);
        return -1;
    }
    tt_listenset_disown_files(ls); /* the successor removes them at its shutdown */
    tt_info("reload: pid %d took over the listening sockets with the new configuration; "
            "draining",
            (int)peer);
    return 0;
}

/* Which way a reload goes: an invalid file leaves everything as it was (logged with
 * file:line:key), an unchanged one reloads TLS files, a change of numbers applies in place, and
 * anything else needs a new process (tt_conf_diff names the key). Returns 1 if a successor took
 * over, else 0. The zero-config form has no file: nothing to reload. */
static int reload(const tt_server_opts_t *opts, tt_conf_t *conf, tt_upstream_t **ups, size_t nup,
                  tt_worker_t *workers, size_t nworkers, tt_introspect_t *introspect,
                  tt_listenset_t *ls)
{
    if (strcmp(conf->path, TT_CONF_COMMAND_LINE) == 0)
        return 0;
    tt_conf_error_t cerr;
    tt_conf_t *next = tt_conf_load(conf->path, &cerr);
    if (next == NULL) {
        tt_error("reload: %s; the running configuration stays", cerr.msg);
        return 0;
    }
    char why[256];
    tt_conf_change_t change = tt_conf_diff(conf, next, why, sizeof(why));
    if (change == TT_CONF_LIVE)
        reload_in_place(conf, next, ups, nup, workers, nworkers, introspect);
    tt_conf_free(next);
    if (change != TT_CONF_RESTART) {
        reload_tls(ups, nup);
        if (change == TT_CONF_SAME)
            tt_info("reload: the configuration is unchanged; TLS files checked");
        return 0;
    }
    tt_info("reload: %s, which needs a new process: taking over", why);
    return reload_by_takeover(opts, ls) == 0;
}

/* Serves one connection to the control socket. Returns 1 if a successor took over. */
static int serve_control(int control_fd, tt_listenset_t *ls)
{
    char err[512];
    int c = accept4(control_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return 0;
    pid_t peer;
    int rc = tt_takeover_serve(c, ls, TAKEOVER_TIMEOUT_MS, &peer, err, sizeof(err));
    close(c);
    if (rc < 0) {
        tt_error("control socket: %s", err);
        return 0;
    }
    tt_listenset_disown_files(ls); /* the successor removes them at its shutdown */
    tt_info("takeover: pid %d took over the listening sockets; draining", (int)peer);
    return 1;
}

/* SIGUSR1: the access log is opened again under its name (logrotate moved the old file away)
 * and put in place of the old descriptor, which every worker writes to, in one dup3. */
static void reopen_access_log(const tt_conf_t *conf, int fd)
{
    if (fd < 0) {
        tt_info("SIGUSR1: no access_log to reopen");
        return;
    }
    int fresh = tt_accesslog_open(conf->access_log);
    if (fresh < 0 || dup3(fresh, fd, O_CLOEXEC) < 0) {
        tt_error("SIGUSR1: cannot reopen access_log %s: %s; writing to the old file",
                 conf->access_log, strerror(errno));
    } else {
        tt_info("SIGUSR1: reopened access_log %s", conf->access_log);
    }
    if (fresh >= 0)
        close(fresh);
}

/* systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram to
 * $NOTIFY_SOCKET. MAINPID lets a successor started by a reload become the service's main
 * process (NotifyAccess=all in the unit). */
static void notify_systemd(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, len);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    char msg[128];
    snprintf(msg, sizeof(msg), "%s\nMAINPID=%d", state, (int)getpid());
    sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    close(fd);
}

/* The sockets of the running tetherd, for --takeover and for a reload's successor. */
static int take_over(const tt_conf_t *conf, const tt_server_opts_t *opts, tt_listenset_t *ls,
                     int *conn)
{
    char err[512];
    *conn = opts->takeover_fd;
    if (*conn < 0) {
        if (conf->control_socket == NULL) {
            tt_error("--takeover: set control_socket in [tether] (the running tetherd must "
                     "have it too)");
            return -1;
        }
        *conn = tt_control_connect(conf->control_socket, err, sizeof(err));
        if (*conn < 0) {
            tt_error("--takeover: %s", err);
            return -1;
        }
    }
    pid_t peer;
    int n = tt_takeover_receive(*conn, ls, TAKEOVER_TIMEOUT_MS, &peer, err, sizeof(err));
    if (n < 0) {
        tt_error("%s", err);
        close(*conn);
        *conn = -1;
        return -1;
    }
    tt_info("takeover: received %d listening sockets from pid %d", n, (int)peer);
    return 0;
}

int tt_server_run(tt_conf_t *conf, const tt_server_opts_t *opts)
{
    char err[512];
    tt_log_set_level((tt_log_level_t)conf->log_level);
    size_t nworkers = conf->workers > 0 ? (size_t)conf->workers : cpus_available();
    size_t nup = conf->nupstreams;
    tt_upstream_t **ups = tt_calloc(nup, sizeof(*ups));
    tt_worker_t *workers = tt_calloc(nworkers, sizeof(*workers));
    int status = 1, takeover_conn = -1, sigfd = -1;
    size_t inited_up = 0, inited_w = 0, started = 0;
    tt_introspect_t introspect;
    tt_introspect_init(&introspect, conf, ups, nup, workers, nworkers);
    tt_admin_t *admin = NULL;
    tt_admission_t admission;
    tt_loop_t **loops = tt_calloc(nworkers, sizeof(*loops));
    tt_admission_init(&admission, client_connection_limit(conf, nworkers), loops, nworkers);
    tt_discovery_t *discovery = NULL;
    tt_listenset_t ls;
    tt_listenset_init(&ls);
    tt_control_t control = {.fd = -1};

    int access_log_fd = -1;
    if (conf->access_log != NULL && (access_log_fd = tt_accesslog_open(conf->access_log)) < 0) {
        tt_error("access_log: cannot open %s: %s", conf->access_log, strerror(errno));
        goto out;
    }
    for (; inited_up < nup; inited_up++) {
        ups[inited_up] = tt_calloc(1, sizeof(*ups[inited_up]));
        if (tt_upstream_init(ups[inited_up], &conf->upstreams[inited_up], conf->path, inited_up,
                             nworkers, err, sizeof(err)) < 0) {
            tt_error("%s", err);
            goto out;
        }
    }
    discovery = tt_discovery_new(conf, ups, nup, err, sizeof(err));
    if (discovery == NULL && err[0] != '\0') {
        tt_error("%s", err);
        goto out;
    }
    /* Workers inherit this mask: signals are taken by the main thread alone, from a signalfd. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sigfd < 0) {
        tt_error("signalfd: %s", strerror(errno));
        goto out;
    }

    /* Last before the sockets: what can fail slowly (DNS, TLS files) has been done, so the
     * predecessor waits as briefly as possible. */
    if ((opts->takeover || opts->takeover_fd >= 0) &&
        take_over(conf, opts, &ls, &takeover_conn) < 0)
        goto out;
    if (takeover_conn < 0) {
        int n = tt_listenset_adopt_systemd(&ls, err, sizeof(err));
        if (n < 0) {
            tt_error("%s", err);
            goto out;
        }
        if (n > 0)
            tt_info("socket activation: %d listening socket%s from systemd", n, n == 1 ? "" : "s");
    }
    if (open_listeners(conf, nworkers, &ls, err, sizeof(err)) < 0) {
        tt_error("%s", err);
        goto out;
    }
    for (; inited_w < nworkers; inited_w++) {
        if (tt_worker_init(&workers[inited_w], inited_w, nworkers, conf, ups, nup, &ls,
                           &tt_session_handlers, access_log_fd, &admission, err, sizeof(err)) < 0) {
            tt_error("%s", err);
            inited_w++; /* partly initialised: joined below without a thread */
            goto out;
        }
        loops[inited_w] = workers[inited_w].loop;
    }
    if (conf->has_admin) {
        tt_admin_ops_t ops = tt_introspect_admin_ops(&introspect);
        int fd = fcntl(tt_listenset_admin(&ls, &conf->admin, err, sizeof(err)), F_DUPFD_CLOEXEC, 0);
        admin = fd < 0 ? NULL : tt_admin_open_fd(fd, &ops, err, sizeof(err));
        if (admin == NULL) {
            tt_error("admin: %s", fd < 0 ? strerror(errno) : err);
            goto out;
        }
    }
    for (; started < nworkers; started++) {
        if (tt_worker_start(&workers[started]) != 0) {
            tt_error("cannot start worker thread: %s", strerror(errno));
            goto out;
        }
    }
    if (discovery != NULL) {
        int rc = tt_discovery_start(discovery);
        if (rc != 0) {
            tt_error("cannot start the DNS thread: %s", strerror(rc));
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
    if (takeover_conn >= 0) {
        /* Our workers accept from the sockets now: the predecessor may stop. */
        tt_takeover_confirm(takeover_conn);
        takeover_conn = -1;
    }
    if (conf->control_socket != NULL &&
        tt_control_listen(&control, conf->control_socket, err, sizeof(err)) < 0)
        tt_error("%s; takeovers (tetherd --takeover) will not find this process", err);
    log_ready(conf, nworkers);
    notify_systemd("READY=1");
    for (;;) {
        struct pollfd p[2] = {{.fd = sigfd, .events = POLLIN},
                              {.fd = control.fd, .events = POLLIN}};
        if (poll(p, control.fd >= 0 ? 2 : 1, -1) < 0)
            continue;
        if ((p[1].revents & POLLIN) && serve_control(control.fd, &ls))
            break;
        struct signalfd_siginfo si;
        if (!(p[0].revents & POLLIN) || read(sigfd, &si, sizeof(si)) != sizeof(si))
            continue;
        if (si.ssi_signo == SIGUSR1) {
            reopen_access_log(conf, access_log_fd);
            continue;
        }
        if (si.ssi_signo == SIGHUP) {
            if (reload(opts, conf, ups, nup, workers, nworkers, &introspect, &ls))
                break;
            continue;
        }
        tt_info("%s: draining (up to %lldms)", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT",
                (long long)conf->drain_timeout);
        break;
    }
    status = 0;
out:
    if (takeover_conn >= 0)
        close(takeover_conn);
    tt_control_close(&control);
    /* The admin thread reads workers through tt_worker_call: stop it before they drain. */
    tt_admin_close(admin);
    /* Discovery wakes workers when it publishes: stop it while they all exist. */
    tt_discovery_free(discovery);
    for (size_t i = 0; i < started; i++)
        tt_worker_request_drain(&workers[i]);
    /* With the workers' descriptors the sockets close, and new connections are refused; after a
     * takeover the successor holds them open. */
    tt_listenset_close(&ls);
    for (size_t i = 0; i < started; i++)
        tt_worker_join(&workers[i]);
    for (size_t i = 0; i < inited_w; i++)
        tt_worker_destroy(&workers[i]);
    for (size_t i = 0; i < inited_up; i++) {
        tt_upstream_destroy(ups[i]);
        free(ups[i]);
    }
    tt_introspect_destroy(&introspect);
    free(workers);
    free(loops);
    free(ups);
    if (access_log_fd >= 0)
        close(access_log_fd);
    if (sigfd >= 0)
        close(sigfd);
    if (status == 0)
        tt_info("tetherd stopped");
    return status;
}
