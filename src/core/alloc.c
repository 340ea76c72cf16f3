#include "core/invariant.h"

#include <string.h>

static void *checked(void *p, size_t size)
{
    if (p == NULL && size != 0) {
        fprintf(stderr, "tether: out of memory allocating %zu bytes\n", size);
        abort();
    }
    return p;
}

void *tt_malloc(size_t size)
{
    return checked(malloc(size), size);
}

void *tt_calloc(size_t n, size_t size)
{
    return checked(calloc(n, size), n * size);
}

void *tt_realloc(void *p, size_t size)
{
    return checked(realloc(p, size), size);
}

char *tt_strdup(const char *s)
{
    return tt_strndup(s, strlen(s));
}

char *tt_strndup(const char *s, size_t n)
{
    char *d = tt_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}
