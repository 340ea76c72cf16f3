/* Typed values the configuration reads and other layers use: the request line of a probe or
 * health check ("OPTIONS *", "GET /healthz") and a set of expected statuses ("200-399,404"). They
 * live here, below every user, so the configuration can refuse a bad value with its file, line
 * and key, and the modules that send requests can use the same parse. */
#ifndef TT_CONFIG_VALUES_H
#define TT_CONFIG_VALUES_H

#include <stddef.h>
#include <stdint.h>

/* A set of expected statuses, "200-399" or "200,204,300-302"; empty means any status. */
#define TT_STATUS_RANGES_MAX 8
typedef struct {
    struct {
        uint16_t lo, hi;
    } r[TT_STATUS_RANGES_MAX];
    size_t n;
} tt_status_set_t;

/* Parses a status set. Returns 0, or -1 with a reason in *why. */
int tt_status_set_parse(const char *s, tt_status_set_t *out, const char **why);
int tt_status_set_has(const tt_status_set_t *s, unsigned status);

/* The request line of a check or probe: "GET /healthz", "OPTIONS *", "HEAD /". */
typedef struct {
    char method[16];
    char target[256];
} tt_request_line_t;

/* Parses a method (upper-case token) and an origin-form target ('/' ...; '*' with OPTIONS only).
 * Returns 0, or -1 with a reason in *why. */
int tt_request_line_parse(const char *s, tt_request_line_t *out, const char **why);

#endif
