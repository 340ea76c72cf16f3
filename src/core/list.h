/* Intrusive circular doubly linked list: the node lives inside its owner, so linking never
 * allocates and unlinking from anywhere is O(1). */
#ifndef TT_CORE_LIST_H
#define TT_CORE_LIST_H

#include <stddef.h>

typedef struct tt_list {
    struct tt_list *prev, *next;
} tt_list_t;

#define tt_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void tt_list_init(tt_list_t *l)
{
    l->prev = l->next = l;
}

static inline int tt_list_empty(const tt_list_t *l)
{
    return l->next == l;
}

/* A node that is not on any list points at itself, so tt_list_linked() is meaningful after
 * tt_list_init() and tt_list_remove(). */
static inline int tt_list_linked(const tt_list_t *n)
{
    return n->next != n;
}

static inline void tt_list_insert_after(tt_list_t *pos, tt_list_t *n)
{
    n->prev = pos;
    n->next = pos->next;
    pos->next->prev = n;
    pos->next = n;
}

static inline void tt_list_push_front(tt_list_t *l, tt_list_t *n)
{
    tt_list_insert_after(l, n);
}

static inline void tt_list_push_back(tt_list_t *l, tt_list_t *n)
{
    tt_list_insert_after(l->prev, n);
}

static inline void tt_list_remove(tt_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Moves every node of src to the end of dst; src becomes empty. */
static inline void tt_list_splice_back(tt_list_t *dst, tt_list_t *src)
{
    if (tt_list_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    tt_list_init(src);
}

#define tt_list_first(l) ((l)->next)
#define tt_list_last(l)  ((l)->prev)

#define tt_list_foreach_safe(pos, tmp, l)                                                          \
    for ((pos) = (l)->next, (tmp) = (pos)->next; (pos) != (l); (pos) = (tmp), (tmp) = (pos)->next)

#endif
