/* A bounded free list of objects of one kind (H2O's h2o_mem_recycle_t): released objects are kept
 * for the next acquire instead of going back to malloc, up to max_free of them; beyond that the
 * owner frees them. The list is intrusive: each kept object stores the next one's address in a
 * pointer member of its own (named when the recycler is set up), so keeping costs no memory.
 * Not thread-safe: a recycler belongs to one worker. */
#ifndef TT_CORE_RECYCLE_H
#define TT_CORE_RECYCLE_H

#include <stddef.h>

typedef struct {
    size_t max_free; /* bound on kept objects: nothing grows without a limit */
    size_t nfree;
    size_t _link_offset; /* offset of the void * member that links kept objects */
    void *_first;
} tt_recycle_t;

/* Sets up r for objects whose pointer member at link_offset (offsetof(type, member)) may be
 * overwritten while they are kept. */
static inline void tt_recycle_init(tt_recycle_t *r, size_t link_offset, size_t max_free)
{
    r->max_free = max_free;
    r->nfree = 0;
    r->_link_offset = link_offset;
    r->_first = NULL;
}

static inline void **tt_recycle__link(const tt_recycle_t *r, void *obj)
{
    return (void **)((char *)obj + r->_link_offset);
}

/* Takes a kept object (its contents as released, the link member excepted), or NULL if none. */
static inline void *tt_recycle_pop(tt_recycle_t *r)
{
    void *obj = r->_first;
    if (obj != NULL) {
        r->_first = *tt_recycle__link(r, obj);
        r->nfree--;
    }
    return obj;
}

/* Keeps obj for a later pop. Returns 0, or -1 when max_free are kept already: the caller then
 * frees obj itself. */
static inline int tt_recycle_push(tt_recycle_t *r, void *obj)
{
    if (r->nfree >= r->max_free)
        return -1;
    *tt_recycle__link(r, obj) = r->_first;
    r->_first = obj;
    r->nfree++;
    return 0;
}

#endif
