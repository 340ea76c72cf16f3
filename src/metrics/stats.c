#include "metrics/stats.h"

const char *tt_reject_reason_name(tt_reject_reason_t r)
{
    switch (r) {
    case TT_REJECT_QUEUE_FULL:
        return "queue_full";
    case TT_REJECT_QUEUE_TIMEOUT:
        return "queue_timeout";
    case TT_REJECT_NO_ENDPOINTS:
        return "no_endpoints";
    case TT_REJECT_BREAKER_OPEN:
        return "breaker_open";
    default:
        return "unknown";
    }
}
