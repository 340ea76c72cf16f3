/* The sock_diag reply parser of `tether churn`: the input is the payload of one recv() on the
 * NETLINK_SOCK_DIAG socket (a run of netlink messages, possibly cut short by a truncated read),
 * copied into a buffer of its exact size and netlink alignment, as recv() leaves it.
 *
 * Invariants: the result is -1 (with a reason), 0 or 1; each address of a socket is IPv4, IPv6
 * or none (each on its own: an IPv4-mapped address folds to IPv4, its peer may not); has_info is
 * a flag. */
#include "churn/sockdiag.h"
#include "fuzz_split.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void check_sock(const tt_sockdiag_sock_t *s, void *arg)
{
    (void)arg;
    FUZZ_CHECK(s->local.family == 0 || s->local.family == AF_INET || s->local.family == AF_INET6);
    FUZZ_CHECK(s->remote.family == 0 || s->remote.family == AF_INET ||
               s->remote.family == AF_INET6);
    FUZZ_CHECK(s->has_info == 0 || s->has_info == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size > 0 ? size : 1); /* malloc's alignment covers struct nlmsghdr */
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, size);
    char err[128] = "";
    int rc = tt_sockdiag_parse(buf, size, check_sock, NULL, err, sizeof(err));
    FUZZ_CHECK(rc == -1 || rc == 0 || rc == 1);
    if (rc == -1)
        FUZZ_CHECK(strncmp(err, "sock_diag: ", 11) == 0);
    free(buf);
    return 0;
}
