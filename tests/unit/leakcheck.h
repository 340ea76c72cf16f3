/* What a unit test leaves behind: open file descriptors and heap bytes in use. A test takes a
 * snapshot first and checks it last, so a leak fails the test that caused it, not only the
 * sanitizer's report at exit. Heap bytes are exact only under AddressSanitizer (its allocator
 * counts them); glibc's own figures count chunks parked in the per-thread cache as in use, so a
 * plain build checks descriptors only and leaves allocations to the sanitizer build.
 * Include after <cmocka.h>. */
#ifndef TT_TESTS_LEAKCHECK_H
#define TT_TESTS_LEAKCHECK_H

#include <dirent.h>
#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define TT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TT_TEST_ASAN 1
#endif
#endif

#ifdef TT_TEST_ASAN
#include <sanitizer/allocator_interface.h>
#endif

/* Open descriptors of this process, not counting the one used to list them. */
static inline int tt_test_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* Heap bytes in use, or 0 when they cannot be known exactly (no sanitizer). */
static inline size_t tt_test_heap_in_use(void)
{
#ifdef TT_TEST_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    return 0;
#endif
}

typedef struct {
    int fds;
    size_t heap;
} tt_leakcheck_t;

static inline tt_leakcheck_t tt_leakcheck_begin(void)
{
    tt_leakcheck_t lc;
    lc.fds = tt_test_count_fds();
    lc.heap = tt_test_heap_in_use();
    return lc;
}

#define tt_leakcheck_end(lc)                                                                       \
    do {                                                                                           \
        assert_int_equal(tt_test_count_fds(), (lc).fds);                                           \
        assert_int_equal(tt_test_heap_in_use(), (lc).heap);                                        \
    } while (0)

#endif
