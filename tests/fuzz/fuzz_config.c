/* The configuration loader on arbitrary file contents: a load either succeeds or fails with an
 * error that names the file ("PATH:LINE: KEY: reason" or "PATH: reason"); either way nothing
 * leaks (LeakSanitizer) and nothing is read out of bounds. */
#include "config/config.h"
#include "fuzz_split.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("tether-fuzz.ini", 0);
        FUZZ_CHECK(fd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0);
    FUZZ_CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
    tt_conf_error_t err;
    memset(&err, 0, sizeof(err));
    tt_conf_t *c = tt_conf_load(path, &err);
    if (c != NULL) {
        FUZZ_CHECK(c->nupstreams > 0);
        tt_conf_free(c);
    } else {
        FUZZ_CHECK(strncmp(err.msg, path, strlen(path)) == 0);
        FUZZ_CHECK(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
    }
    return 0;
}
