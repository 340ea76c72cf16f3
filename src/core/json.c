#include "core/json.h"

#include "core/invariant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end, *start;
    char *err;
    size_t errlen;
    int failed;
} parser_t;

static void fail(parser_t *ps, const char *what)
{
    if (!ps->failed)
        snprintf(ps->err, ps->errlen, "offset %zu: %s", (size_t)(ps->p - ps->start), what);
    ps->failed = 1;
}

static void skip_ws(parser_t *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int literal(parser_t *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        fail(ps, "invalid literal");
        return -1;
    }
    ps->p += n;
    return 0;
}

static int hex4(parser_t *ps, unsigned *out)
{
    if (ps->end - ps->p < 4) {
        fail(ps, "truncated \\u escape");
        return -1;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else {
            fail(ps, "bad hex digit in \\u escape");
            return -1;
        }
    }
    ps->p += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes a string literal at ps->p (the opening quote). The decoded form is never longer than
 * the literal (every escape shrinks or keeps its length), so one allocation of the literal's size
 * suffices. */
static char *parse_string(parser_t *ps, size_t *len)
{
    ps->p++; /* opening quote */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= ps->end) {
        fail(ps, "unterminated string");
        return NULL;
    }
    char *out = tt_malloc((size_t)(q - ps->p) + 1);
    size_t n = 0;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            fail(ps, "control character in string");
            goto bad;
        }
        if (c != '\\') {
            out[n++] = (char)c;
            ps->p++;
            continue;
        }
        ps->p++;
        char e = *ps->p++;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[n++] = e;
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'u': {
            unsigned cp;
            if (hex4(ps, &cp) < 0)
                goto bad;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                    fail(ps, "unpaired surrogate");
                    goto bad;
                }
                ps->p += 2;
                if (hex4(ps, &lo) < 0)
                    goto bad;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(ps, "unpaired surrogate");
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(ps, "unpaired surrogate");
                goto bad;
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            ps->p--;
            fail(ps, "invalid escape");
            goto bad;
        }
    }
    ps->p++; /* closing quote */
    out[n] = '\0';
    *len = n;
    return out;
bad:
    free(out);
    return NULL;
}

static int parse_number(parser_t *ps, tt_json_t *v)
{
    const char *s = ps->p, *q = s;
    if (q < ps->end && *q == '-')
        q++;
    if (q < ps->end && *q == '0')
        q++;
    else if (q < ps->end && *q >= '1' && *q <= '9')
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    else
        goto bad;
    int integer = 1;
    if (q < ps->end && *q == '.') {
        integer = 0;
        q++;
        if (q >= ps->end || *q < '0' || *q > '9')
            goto bad;
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        integer = 0;
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || *q < '0' || *q > '9')
            goto bad;
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    /* strtod needs a terminated copy: the text is not NUL-terminated in general. */
    char tmp[64];
    size_t n = (size_t)(q - s);
    if (n >= sizeof(tmp)) {
        fail(ps, "number too long");
        return -1;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    v->type = TT_JSON_NUMBER;
    v->num = strtod(tmp, NULL);
    if (integer && s[0] != '-') {
        uint64_t u = 0;
        int exact = 1;
        for (size_t i = 0; i < n; i++) {
            unsigned d = (unsigned)(tmp[i] - '0');
            if (u > (UINT64_MAX - d) / 10) {
                exact = 0;
                break;
            }
            u = u * 10 + d;
        }
        v->u64 = u;
        v->is_u64 = exact;
    }
    ps->p = q;
    return 0;
bad:
    fail(ps, "invalid number");
    return -1;
}

static tt_json_t *parse_value(parser_t *ps, int depth);

/* Parses the members or elements of an object or array after its opening bracket. */
static int parse_children(parser_t *ps, tt_json_t *v, int depth, char close)
{
    tt_json_t **tail = &v->head;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        if (v->type == TT_JSON_OBJECT) {
            size_t klen;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a member name");
                return -1;
            }
            key = parse_string(ps, &klen);
            if (key == NULL)
                return -1;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                free(key);
                fail(ps, "expected ':'");
                return -1;
            }
            ps->p++;
        }
        tt_json_t *child = parse_value(ps, depth + 1);
        if (child == NULL) {
            free(key);
            return -1;
        }
        child->key = key;
        *tail = child;
        tail = &child->next;
        v->len++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return 0;
        }
        fail(ps, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        return -1;
    }
}

static tt_json_t *parse_value(parser_t *ps, int depth)
{
    if (depth > TT_JSON_MAX_DEPTH) {
        fail(ps, "nested too deeply");
        return NULL;
    }
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end of text");
        return NULL;
    }
    tt_json_t *v = tt_calloc(1, sizeof(*v));
    int rc = 0;
    switch (*ps->p) {
    case '{':
        v->type = TT_JSON_OBJECT;
        rc = parse_children(ps, v, depth, '}');
        break;
    case '[':
        v->type = TT_JSON_ARRAY;
        rc = parse_children(ps, v, depth, ']');
        break;
    case '"':
        v->type = TT_JSON_STRING;
        v->str = parse_string(ps, &v->len);
        rc = v->str == NULL ? -1 : 0;
        break;
    case 't':
        v->type = TT_JSON_TRUE;
        rc = literal(ps, "true");
        break;
    case 'f':
        v->type = TT_JSON_FALSE;
        rc = literal(ps, "false");
        break;
    case 'n':
        v->type = TT_JSON_NULL;
        rc = literal(ps, "null");
        break;
    default:
        rc = parse_number(ps, v);
        break;
    }
    if (rc < 0) {
        tt_json_free(v);
        return NULL;
    }
    return v;
}

tt_json_t *tt_json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    char dummy[1];
    parser_t ps = {.p = text, .end = text + len, .start = text};
    ps.err = errlen > 0 ? err : dummy;
    ps.errlen = errlen > 0 ? errlen : sizeof(dummy);
    tt_json_t *root = parse_value(&ps, 0);
    if (root == NULL)
        return NULL;
    skip_ws(&ps);
    if (ps.p != ps.end) {
        fail(&ps, "unexpected text after the value");
        tt_json_free(root);
        return NULL;
    }
    return root;
}

void tt_json_free(tt_json_t *v)
{
    /* Siblings iteratively, children recursively: depth is bounded by the parser. */
    while (v != NULL) {
        tt_json_t *next = v->next;
        tt_json_free(v->head);
        free(v->key);
        free(v->str);
        free(v);
        v = next;
    }
}

const tt_json_t *tt_json_get(const tt_json_t *v, const char *key)
{
    if (v == NULL || v->type != TT_JSON_OBJECT)
        return NULL;
    for (const tt_json_t *c = v->head; c != NULL; c = c->next)
        if (strcmp(c->key, key) == 0)
            return c;
    return NULL;
}

const tt_json_t *tt_json_path(const tt_json_t *v, const char *path)
{
    char name[128];
    while (v != NULL && *path != '\0') {
        const char *dot = strchr(path, '.');
        size_t n = dot != NULL ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(name))
            return NULL;
        memcpy(name, path, n);
        name[n] = '\0';
        v = tt_json_get(v, name);
        path += n + (dot != NULL);
    }
    return v;
}

const tt_json_t *tt_json_at(const tt_json_t *v, size_t i)
{
    if (v == NULL || v->type != TT_JSON_ARRAY)
        return NULL;
    const tt_json_t *c = v->head;
    while (c != NULL && i-- > 0)
        c = c->next;
    return c;
}

double tt_json_num(const tt_json_t *v, double def)
{
    return v != NULL && v->type == TT_JSON_NUMBER ? v->num : def;
}

uint64_t tt_json_u64(const tt_json_t *v, uint64_t def)
{
    return v != NULL && v->type == TT_JSON_NUMBER && v->is_u64 ? v->u64 : def;
}

const char *tt_json_str(const tt_json_t *v, const char *def)
{
    return v != NULL && v->type == TT_JSON_STRING ? v->str : def;
}

int tt_json_bool(const tt_json_t *v, int def)
{
    if (v == NULL)
        return def;
    if (v->type == TT_JSON_TRUE)
        return 1;
    if (v->type == TT_JSON_FALSE)
        return 0;
    return def;
}

void tt_json_put_str(tt_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    tt_buf_append(b, "\"", 1);
    const char *run = s;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        tt_buf_append(b, run, (size_t)(s - run));
        run = s + 1;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            tt_buf_append(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            tt_buf_append(b, esc, 6);
        }
    }
    tt_buf_append(b, run, (size_t)(s - run));
    tt_buf_append(b, "\"", 1);
}

void tt_json_put_num(tt_buf_t *b, double v, int digits)
{
    if (!isfinite(v))
        v = 0;
    tt_buf_appendf(b, "%.*g", digits, v);
}
