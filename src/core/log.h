/* Leveled logging to stderr. The level is set once at startup, before workers start, and only
 * read afterwards. Ordinary network failures log at info or below; warnings that can repeat per
 * request go through a tt_ratelimit_t owned by the object they concern. */
#ifndef TT_CORE_LOG_H
#define TT_CORE_LOG_H

#include "core/clock.h"

typedef enum { TT_LOG_ERROR, TT_LOG_WARN, TT_LOG_INFO, TT_LOG_DEBUG } tt_log_level_t;

void tt_log_set_level(tt_log_level_t level);
tt_log_level_t tt_log_get_level(void);

/* Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int tt_log_level_parse(const char *s, tt_log_level_t *out);

void tt_log(tt_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tt_log_enabled(level) ((level) <= tt_log_get_level())
#define tt_error(...)         tt_log(TT_LOG_ERROR, __VA_ARGS__)
#define tt_warn(...)          tt_log(TT_LOG_WARN, __VA_ARGS__)
#define tt_info(...)          tt_log(TT_LOG_INFO, __VA_ARGS__)
#define tt_debug(...)                                                                              \
    do {                                                                                           \
        if (tt_log_enabled(TT_LOG_DEBUG))                                                          \
            tt_log(TT_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

/* Allows one message per interval; counts what it suppressed so the next message can say so. */
typedef struct {
    tt_msec_t next_allowed;
    unsigned suppressed;
} tt_ratelimit_t;

/* Returns 1 if a message may be logged now (and resets the suppressed count into *suppressed),
 * 0 if it must be dropped. */
int tt_ratelimit_allow(tt_ratelimit_t *rl, tt_msec_t now, tt_msec_t interval, unsigned *suppressed);

#endif
