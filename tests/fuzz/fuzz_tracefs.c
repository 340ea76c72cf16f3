/* The tracefs event decoder of `tether churn`: the text of the event's format file, a NUL, the
 * text of events/header_page, a NUL, then raw ring-buffer pages, each read of trace_pipe_raw one
 * page of the size the header gives (the last one short, as a damaged or partial read would be).
 * Every text and page is copied into a buffer of its exact size, so a read past it is reported.
 *
 * Invariants: a parsed format's page holds its data area; a page decodes to -1 or to a count of
 * entries no smaller than the events handed to the callback; missed is 0 or 1; every event's
 * addresses are IPv4 or IPv6. */
#include "churn/trace_format.h"
#include "fuzz_split.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void count_event(const tt_trace_event_t *ev, void *arg)
{
    FUZZ_CHECK(ev->local.family == AF_INET || ev->local.family == AF_INET6);
    FUZZ_CHECK(ev->remote.family == AF_INET || ev->remote.family == AF_INET6);
    (*(int *)arg)++;
}

/* The bytes up to the next NUL as a string of their own; advances past the NUL. NULL when the
 * input holds no further NUL. */
static char *take_text(const uint8_t **data, size_t *size)
{
    const uint8_t *nul = memchr(*data, '\0', *size);
    if (nul == NULL)
        return NULL;
    size_t len = (size_t)(nul - *data);
    char *text = malloc(len + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, *data, len + 1);
    *data += len + 1;
    *size -= len + 1;
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *format = take_text(&data, &size);
    char *header = format != NULL ? take_text(&data, &size) : NULL;
    tt_trace_format_t f;
    char err[128];
    if (header == NULL || tt_trace_format_parse(&f, format, header, err, sizeof(err)) < 0) {
        free(format);
        free(header);
        return 0;
    }
    size_t page_size = tt_trace_page_size(&f);
    FUZZ_CHECK(page_size >= f.page_data_off);
    while (size > 0) {
        size_t len = page_size > 0 && page_size < size ? page_size : size;
        uint8_t *page = malloc(len);
        FUZZ_CHECK(page != NULL);
        memcpy(page, data, len);
        int events = 0, missed = -1;
        int n = tt_trace_page_decode(&f, page, len, count_event, &events, &missed);
        FUZZ_CHECK(n == -1 || (n >= 0 && events <= n));
        FUZZ_CHECK(missed == 0 || missed == 1);
        free(page);
        data += len;
        size -= len;
    }
    free(format);
    free(header);
    return 0;
}
