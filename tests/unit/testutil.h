/* Helpers shared by unit tests: a loopback listener on a free port, and what a FILE received.
 * Include after <cmocka.h>. */
#ifndef TT_TESTS_TESTUTIL_H
#define TT_TESTS_TESTUTIL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A listening TCP socket on 127.0.0.1 and a port the kernel chose; flags as for socket(2)
 * (SOCK_NONBLOCK). Stores the port; returns the fd. */
static inline int tt_test_listen_loopback(int flags, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

#ifdef TT_CONFIG_CONFIG_H
/* The zero-config configuration of one upstream "default" at a new loopback listener (its fd in
 * *listen_fd, socket flags as for tt_test_listen_loopback), for that many workers. */
static inline tt_conf_t *tt_test_origin(int flags, const char *workers, int *listen_fd)
{
    int port;
    *listen_fd = tt_test_listen_loopback(flags, &port);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    tt_conf_error_t err;
    tt_conf_t *conf = tt_conf_from_args("127.0.0.1:1", url, workers, NULL, &err);
    assert_non_null(conf);
    conf->upstreams[0].idle_timeout = 60000;
    conf->upstreams[0].min_idle = 0;
    return conf;
}

static inline void tt_test_origin_free(tt_conf_t *conf, int listen_fd)
{
    tt_conf_free(conf);
    close(listen_fd);
}

#ifdef TT_UPSTREAM_UPSTREAM_H
/* Resolving the endpoint (getaddrinfo) loads the resolver's state once per process: done before
 * the first test, so that test's leak check sees only what the test itself left. */
static inline int tt_test_warm_up(void **state)
{
    (void)state;
    /* The first log line's gmtime_r() makes glibc read the time zone once (tzset allocates and
     * keeps it): not a leak of the code under test. */
    struct tm tm;
    gmtime_r(&(time_t){0}, &tm);
    int fd;
    tt_conf_t *conf = tt_test_origin(0, "1", &fd);
    tt_upstream_t up;
    char msg[256];
    int rc = tt_upstream_init(&up, &conf->upstreams[0], "test", 0, 1, msg, sizeof(msg));
    if (rc == 0)
        tt_upstream_destroy(&up);
    tt_test_origin_free(conf, fd);
    return rc;
}
#endif
#endif

/* Everything written to fp so far, NUL-terminated; the caller frees it. */
static inline char *tt_test_read_all(FILE *fp)
{
    fflush(fp);
    long n = ftell(fp);
    rewind(fp);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, fp), (size_t)n);
    return s;
}

#endif
