/* The process's listening sockets and their takeover: one socket per worker and address,
 * inherited sockets kept and spread over the workers, a foreign listener on a port refused, and
 * every socket passed to a successor over a socket pair, the same sockets on both sides. */
#include "net/listeners.h"
#include "net/takeover.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "leakcheck.h"

static tt_addr_t loopback_any_port(void)
{
    tt_addr_t a;
    assert_int_equal(tt_addr_parse("127.0.0.1:0", &a), 0);
    return a;
}

/* A free port, found by binding port 0 with SO_REUSEPORT and keeping the socket (a foreign
 * listener for the exclusivity test) or closing it. */
static tt_addr_t bound_port(int *keep_fd)
{
    tt_addr_t a = loopback_any_port();
    int fd = tt_sock_listen(&a, 16, 0);
    assert_true(fd >= 0);
    a.len = sizeof(a.ss);
    getsockname(fd, (struct sockaddr *)&a.ss, &a.len);
    if (keep_fd != NULL)
        *keep_fd = fd;
    else
        close(fd);
    return a;
}

static ino_t inode(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_ino;
}

static void test_one_socket_per_worker_spread_over_workers(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_listenset_t ls;
    tt_listenset_init(&ls);
    char err[256];
    tt_addr_t a = bound_port(NULL);
    assert_int_equal(tt_listenset_ensure(&ls, &a, 3, 16, 0, err, sizeof(err)), 0);
    assert_int_equal(tt_listenset_count(&ls, &a), 3);
    assert_int_equal(tt_listenset_check_exclusive(&ls, err, sizeof(err)), 0);
    /* Two workers over three sockets: worker 0 takes the first and third. */
    int fds[4], shared[4];
    assert_int_equal(tt_listenset_for_worker(&ls, &a, 0, 2, fds, shared, 4), 2);
    assert_false(shared[0] || shared[1]);
    assert_int_equal(fds[0], ls.socks[0].fd);
    assert_int_equal(fds[1], ls.socks[2].fd);
    assert_int_equal(tt_listenset_for_worker(&ls, &a, 1, 2, fds, shared, 4), 1);
    assert_int_equal(fds[0], ls.socks[1].fd);
    /* Asking again for as many binds nothing more. */
    assert_int_equal(tt_listenset_ensure(&ls, &a, 3, 16, 0, err, sizeof(err)), 0);
    assert_int_equal(ls.n, 3);
    tt_listenset_close(&ls);
    tt_leakcheck_end(lc);
}

/* A socket systemd passed is shared: it alone serves every worker, nothing more is bound. */
static void test_a_shared_socket_serves_every_worker(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_listenset_t ls;
    tt_listenset_init(&ls);
    char err[256];
    int fd;
    tt_addr_t a = bound_port(&fd);
    assert_int_equal(tt_listenset_adopt(&ls, fd, TT_LISTEN_PROXY), 0);
    ls.socks[0].shared = 1;
    assert_int_equal(tt_listenset_ensure(&ls, &a, 4, 16, 0, err, sizeof(err)), 0);
    assert_int_equal(ls.n, 1);
    for (size_t id = 0; id < 4; id++) {
        int fds[2], shared[2];
        assert_int_equal(tt_listenset_for_worker(&ls, &a, id, 4, fds, shared, 2), 1);
        assert_int_equal(fds[0], fd);
        assert_true(shared[0]);
    }
    tt_listenset_close(&ls);
    tt_leakcheck_end(lc);
}

static void test_a_foreign_listener_on_the_port_is_refused(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    int foreign;
    tt_addr_t a = bound_port(&foreign);
    tt_listenset_t ls;
    tt_listenset_init(&ls);
    char err[256], a_text[TT_ADDR_STRLEN], want[128];
    /* SO_REUSEPORT lets the bind succeed: only the check stops it. */
    assert_int_equal(tt_listenset_ensure(&ls, &a, 1, 16, 0, err, sizeof(err)), 0);
    assert_int_equal(tt_listenset_check_exclusive(&ls, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: in use by another process", tt_addr_format(&a, a_text));
    assert_non_null(strstr(err, want));
    tt_listenset_close(&ls);
    /* A wildcard listener on the same port competes too. */
    tt_addr_t any;
    assert_int_equal(tt_addr_parse("0.0.0.0:0", &any), 0);
    ((struct sockaddr_in *)&any.ss)->sin_port = ((struct sockaddr_in *)&a.ss)->sin_port;
    tt_listenset_init(&ls);
    assert_int_equal(tt_listenset_ensure(&ls, &any, 1, 16, 0, err, sizeof(err)), 0);
    assert_int_equal(tt_listenset_check_exclusive(&ls, err, sizeof(err)), -1);
    tt_listenset_close(&ls);
    close(foreign);
    tt_leakcheck_end(lc);
}

static void test_adopt_refuses_what_is_not_a_listener(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_listenset_t ls;
    tt_listenset_init(&ls);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(tt_listenset_adopt(&ls, sv[0], TT_LISTEN_PROXY), -1); /* and closed */
    close(sv[1]);
    assert_int_equal(ls.n, 0);
    tt_listenset_close(&ls);
    tt_leakcheck_end(lc);
}

typedef struct {
    int conn;
    tt_listenset_t *ls;
    int rc;
    pid_t peer;
    char err[256];
} serve_arg_t;

static void *serve_thread(void *arg)
{
    serve_arg_t *s = arg;
    s->rc = tt_takeover_serve(s->conn, s->ls, 5000, &s->peer, s->err, sizeof(s->err));
    return NULL;
}

static void test_takeover_passes_the_same_sockets(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    char err[256];
    tt_listenset_t old, successor;
    tt_listenset_init(&old);
    tt_listenset_init(&successor);
    tt_addr_t a = bound_port(NULL), any = loopback_any_port();
    assert_int_equal(tt_listenset_ensure(&old, &a, 2, 16, 0, err, sizeof(err)), 0);
    assert_true(tt_listenset_admin(&old, &any, err, sizeof(err)) >= 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    serve_arg_t s = {.conn = sv[0], .ls = &old};
    pthread_t t;
    pthread_create(&t, NULL, serve_thread, &s);
    pid_t peer;
    assert_int_equal(tt_takeover_receive(sv[1], &successor, 5000, &peer, err, sizeof(err)), 3);
    assert_int_equal(peer, getpid());
    tt_takeover_confirm(sv[1]);
    pthread_join(t, NULL);
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.peer, getpid());
    close(sv[0]);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(inode(successor.socks[i].fd), inode(old.socks[i].fd));
        assert_int_equal(successor.socks[i].kind, old.socks[i].kind);
    }
    /* The successor keeps the two and the admin socket; the sockets are its own now. */
    assert_int_equal(tt_listenset_ensure(&successor, &a, 2, 16, 0, err, sizeof(err)), 0);
    assert_int_equal(tt_listenset_admin(&successor, &any, err, sizeof(err)), successor.socks[2].fd);
    tt_listenset_prune(&successor);
    assert_int_equal(successor.n, 3);
    assert_int_equal(tt_listenset_check_exclusive(&successor, err, sizeof(err)), 0);
    tt_listenset_close(&old);
    tt_listenset_close(&successor);
    tt_leakcheck_end(lc);
}

static void test_a_successor_that_goes_away_leaves_the_predecessor_as_it_was(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    char err[256];
    tt_listenset_t old;
    tt_listenset_init(&old);
    tt_addr_t a = bound_port(NULL);
    assert_int_equal(tt_listenset_ensure(&old, &a, 1, 16, 0, err, sizeof(err)), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    serve_arg_t s = {.conn = sv[0], .ls = &old};
    pthread_t t;
    pthread_create(&t, NULL, serve_thread, &s);
    tt_listenset_t successor;
    tt_listenset_init(&successor);
    pid_t peer;
    assert_int_equal(tt_takeover_receive(sv[1], &successor, 5000, &peer, err, sizeof(err)), 1);
    close(sv[1]); /* no "ready" */
    pthread_join(t, NULL);
    assert_int_equal(s.rc, -1);
    assert_non_null(strstr(s.err, "went away"));
    close(sv[0]);
    tt_listenset_close(&successor);
    assert_int_equal(old.n, 1);
    tt_listenset_close(&old);
    tt_leakcheck_end(lc);
}

static void *nothing(void *arg)
{
    return arg;
}

int main(void)
{
    /* The first thread of a process allocates once-only state (thread descriptors, sanitizer
     * bookkeeping) that the leak check would blame on the first test that starts one. */
    pthread_t t;
    pthread_create(&t, NULL, nothing, NULL);
    pthread_join(t, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_socket_per_worker_spread_over_workers),
        cmocka_unit_test(test_a_shared_socket_serves_every_worker),
        cmocka_unit_test(test_a_foreign_listener_on_the_port_is_refused),
        cmocka_unit_test(test_adopt_refuses_what_is_not_a_listener),
        cmocka_unit_test(test_takeover_passes_the_same_sockets),
        cmocka_unit_test(test_a_successor_that_goes_away_leaves_the_predecessor_as_it_was),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
