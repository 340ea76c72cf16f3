/* Invariant checks. TT_ASSERT states something the code relies on; TT_BUG_ON marks a state that
 * must never happen. Both abort with file and line in debug builds and in tests; release builds
 * (NDEBUG) keep TT_BUG_ON, because continuing after a broken invariant would corrupt state. */
#ifndef TT_CORE_INVARIANT_H
#define TT_CORE_INVARIANT_H

#include <stdio.h>
#include <stdlib.h>

#define TT_BUG_ON(cond)                                                                            \
    do {                                                                                           \
        if (__builtin_expect(!!(cond), 0)) {                                                       \
            fprintf(stderr, "BUG at %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#ifdef NDEBUG
#define TT_ASSERT(cond) ((void)0)
#else
#define TT_ASSERT(cond) TT_BUG_ON(!(cond))
#endif

#define TT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TT_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define TT_MAX(a, b)     ((a) > (b) ? (a) : (b))

/* Allocation failure is not a recoverable network condition for a sidecar: fail loudly. */
void *tt_malloc(size_t size);
void *tt_calloc(size_t n, size_t size);
void *tt_realloc(void *p, size_t size);
char *tt_strdup(const char *s);
char *tt_strndup(const char *s, size_t n);

#endif
