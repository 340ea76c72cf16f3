/* Monotonic milliseconds. The event loop caches one reading per iteration (tt_loop_now()); this
 * module only reads the kernel clock. 64-bit milliseconds do not wrap in practice, so plain
 * comparisons are safe; TT_TIME_NEVER is the reserved "no deadline". */
#ifndef TT_CORE_CLOCK_H
#define TT_CORE_CLOCK_H

#include <stdint.h>

typedef uint64_t tt_msec_t;

#define TT_TIME_NEVER UINT64_MAX

/* Reads CLOCK_MONOTONIC in milliseconds. */
tt_msec_t tt_clock_monotonic_ms(void);

/* Reads CLOCK_MONOTONIC in microseconds, for request timing finer than the loop's cached ms. */
uint64_t tt_clock_monotonic_us(void);

/* Wall-clock time in milliseconds since the epoch, for logs and metrics only. */
uint64_t tt_clock_wall_ms(void);

#endif
