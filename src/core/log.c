#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Written once by the main thread before workers start; read-only afterwards. */
static tt_log_level_t log_level = TT_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void tt_log_set_level(tt_log_level_t level)
{
    log_level = level;
}

tt_log_level_t tt_log_get_level(void)
{
    return log_level;
}

int tt_log_level_parse(const char *s, tt_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (tt_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void tt_log(tt_log_level_t level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0
                                    : ((size_t)m < sizeof(line) - (size_t)n - 2
                                           ? (size_t)m
                                           : sizeof(line) - (size_t)n - 2));
    line[len++] = '\n';
    /* One write per line keeps lines from different workers whole. */
    fwrite(line, 1, len, stderr);
}

int tt_ratelimit_allow(tt_ratelimit_t *rl, tt_msec_t now, tt_msec_t interval, unsigned *suppressed)
{
    if (now < rl->next_allowed) {
        rl->suppressed++;
        return 0;
    }
    rl->next_allowed = now + interval;
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    return 1;
}
