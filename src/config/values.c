#include "config/values.h"

#include <ctype.h>
#include <string.h>

static int parse_status(const char **p, unsigned *out)
{
    const char *s = *p;
    unsigned v = 0;
    size_t n = 0;
    while (isdigit((unsigned char)s[n]) && n < 4)
        v = v * 10 + (unsigned)(s[n++] - '0');
    if (n != 3 || v < 100 || v > 599)
        return -1;
    *p = s + n;
    *out = v;
    return 0;
}

int tt_status_set_parse(const char *s, tt_status_set_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        unsigned lo, hi;
        if (parse_status(&p, &lo) < 0) {
            *why = "expected statuses (100-599) or ranges, such as 200-399 or 200,204";
            return -1;
        }
        hi = lo;
        if (*p == '-') {
            p++;
            if (parse_status(&p, &hi) < 0 || hi < lo) {
                *why = "a range goes from a lower to a higher status, such as 200-399";
                return -1;
            }
        }
        if (out->n == TT_STATUS_RANGES_MAX) {
            *why = "too many ranges";
            return -1;
        }
        out->r[out->n].lo = (uint16_t)lo;
        out->r[out->n].hi = (uint16_t)hi;
        out->n++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return 0;
        if (*p++ != ',') {
            *why = "expected statuses (100-599) or ranges, such as 200-399 or 200,204";
            return -1;
        }
    }
}

int tt_status_set_has(const tt_status_set_t *s, unsigned status)
{
    if (s == NULL || s->n == 0)
        return 1;
    for (size_t i = 0; i < s->n; i++)
        if (status >= s->r[i].lo && status <= s->r[i].hi)
            return 1;
    return 0;
}

int tt_request_line_parse(const char *s, tt_request_line_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    size_t m = 0;
    while (s[m] >= 'A' && s[m] <= 'Z')
        m++;
    if (m == 0 || m >= sizeof(out->method) || (s[m] != ' ' && s[m] != '\t')) {
        *why = "expected METHOD TARGET, such as GET /healthz or OPTIONS *";
        return -1;
    }
    memcpy(out->method, s, m);
    const char *t = s + m;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof(out->target)) {
        *why = "expected METHOD TARGET, such as GET /healthz or OPTIONS *";
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= ' ' || c >= 0x7f) {
            *why = "the target has a space or a control character";
            return -1;
        }
    }
    if (n == 1 && t[0] == '*') {
        if (strcmp(out->method, "OPTIONS") != 0) {
            *why = "the target * is for OPTIONS only";
            return -1;
        }
    } else if (t[0] != '/') {
        *why = "the target is a path starting with / (or * with OPTIONS)";
        return -1;
    }
    memcpy(out->target, t, n);
    return 0;
}
