/* A small JSON reader and the two writer helpers tether needs.
 *
 * The reader builds a tree of tt_json_t nodes from one complete text (RFC 8259: strict grammar,
 * strings decoded to UTF-8 with \u escapes and surrogate pairs, nesting bounded by
 * TT_JSON_MAX_DEPTH). It exists for `tether top`, which reads tetherd's /stats; it is not on any
 * request path. The tree is one allocation owner: tt_json_free() on the root frees every node and
 * string. Lookups never fail loudly: a missing member or a value of the wrong type gives the
 * caller's default, so a reader of an older or newer /stats degrades to blanks instead of crashing.
 *
 * The writer helpers append to a tt_buf_t (growing it); the caller owns the buffer. */
#ifndef TT_CORE_JSON_H
#define TT_CORE_JSON_H

#include "core/buf.h"

#include <stddef.h>
#include <stdint.h>

#define TT_JSON_MAX_DEPTH 64

typedef enum {
    TT_JSON_NULL,
    TT_JSON_FALSE,
    TT_JSON_TRUE,
    TT_JSON_NUMBER,
    TT_JSON_STRING,
    TT_JSON_ARRAY,
    TT_JSON_OBJECT,
} tt_json_type_t;

typedef struct tt_json tt_json_t;

struct tt_json {
    tt_json_type_t type;
    char *key;       /* member name when the parent is an object, else NULL */
    char *str;       /* TT_JSON_STRING: decoded, NUL-terminated (may hold NULs: see len) */
    size_t len;      /* TT_JSON_STRING: bytes in str; ARRAY/OBJECT: number of children */
    double num;      /* TT_JSON_NUMBER */
    uint64_t u64;    /* TT_JSON_NUMBER that is a non-negative integer < 2^64: exact value */
    int is_u64;      /* whether u64 holds the exact value */
    tt_json_t *head; /* first child of an array or object */
    tt_json_t *next; /* next sibling */
};

/* Parses text[0..len) as one JSON value (surrounding whitespace allowed). Returns the root, owned
 * by the caller (tt_json_free), or NULL with a message naming the byte offset in err. */
tt_json_t *tt_json_parse(const char *text, size_t len, char *err, size_t errlen);

/* Frees a tree returned by tt_json_parse (NULL is ignored). */
void tt_json_free(tt_json_t *root);

/* The first member named key of an object, or NULL (also when v is NULL or not an object). */
const tt_json_t *tt_json_get(const tt_json_t *v, const char *key);

/* Follows a dot-separated chain of member names ("connections.opened_total"); NULL if any link is
 * missing. */
const tt_json_t *tt_json_path(const tt_json_t *v, const char *path);

/* Element i of an array, or NULL. */
const tt_json_t *tt_json_at(const tt_json_t *v, size_t i);

/* The value as a number, an exact unsigned integer, a string or a boolean; def when v is NULL or
 * of another type. tt_json_u64 also gives def for negative or fractional numbers. */
double tt_json_num(const tt_json_t *v, double def);
uint64_t tt_json_u64(const tt_json_t *v, uint64_t def);
const char *tt_json_str(const tt_json_t *v, const char *def);
int tt_json_bool(const tt_json_t *v, int def);

/* Appends s as a JSON string literal (quotes included); bytes below 0x20, '"' and '\\' are
 * escaped, other bytes are copied as they are. */
void tt_json_put_str(tt_buf_t *b, const char *s);

/* Appends a finite double with up to `digits` significant digits; NaN and infinities become 0
 * (JSON has no spelling for them). */
void tt_json_put_num(tt_buf_t *b, double v, int digits);

#endif
