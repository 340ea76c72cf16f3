#include "churn/trace_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Ring-buffer entry types (kernel/trace/ring_buffer.c). */
#define RB_TYPE_PADDING     29
#define RB_TYPE_TIME_EXTEND 30
#define RB_TYPE_TIME_STAMP  31
#define RB_TS_SHIFT         27
#define RB_COMMIT_FLAGS     (3UL << 30) /* RB_MISSED_EVENTS | RB_MISSED_STORED */
#define RB_MISSED_EVENTS    (1UL << 31)

/* Finds "field:<decl> <name>;\toffset:N;\tsize:M;" for name (the last word of the declaration,
 * before any [array]) and stores offset and size. Returns 0 or -1. */
static int find_field(const char *text, const char *name, tt_trace_field_t *out)
{
    size_t nlen = strlen(name);
    for (const char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *f = strstr(line, "field:");
        const char *eol = strchr(line, '\n');
        if (!f || (eol && f > eol))
            continue;
        const char *semi = strchr(f, ';');
        if (!semi || (eol && semi > eol))
            continue;
        const char *end = semi;
        const char *bracket = memchr(f, '[', (size_t)(semi - f));
        if (bracket)
            end = bracket;
        if ((size_t)(end - f) < nlen || memcmp(end - nlen, name, nlen) != 0)
            continue;
        char before = *(end - nlen - 1);
        if (before != ' ' && before != '*' && before != '\t' && before != ':')
            continue;
        const char *o = strstr(semi, "offset:");
        const char *s = strstr(semi, "size:");
        if (!o || !s || (eol && (o > eol || s > eol)))
            return -1;
        out->off = atoi(o + 7);
        out->size = atoi(s + 5);
        return out->off >= 0 && out->size > 0 ? 0 : -1;
    }
    return -1;
}

int tt_trace_format_parse(tt_trace_format_t *f, const char *event_format, const char *header_page,
                          char *err, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    const char *id = strstr(event_format, "\nID: ");
    if (!id && strncmp(event_format, "ID: ", 4) == 0)
        id = event_format - 1;
    if (!id) {
        snprintf(err, errlen, "event format: no ID line");
        return -1;
    }
    f->id = (unsigned)strtoul(id + 5, NULL, 10);
    static const struct {
        const char *name;
        size_t off;
        int size; /* required size, or 0 for "any" */
    } want[] = {
        {"common_type", offsetof(tt_trace_format_t, common_type), 2},
        {"common_pid", offsetof(tt_trace_format_t, common_pid), 4},
        {"skaddr", offsetof(tt_trace_format_t, skaddr), 8},
        {"oldstate", offsetof(tt_trace_format_t, oldstate), 4},
        {"newstate", offsetof(tt_trace_format_t, newstate), 4},
        {"sport", offsetof(tt_trace_format_t, sport), 2},
        {"dport", offsetof(tt_trace_format_t, dport), 2},
        {"family", offsetof(tt_trace_format_t, family), 2},
        {"protocol", offsetof(tt_trace_format_t, protocol), 2},
        {"saddr", offsetof(tt_trace_format_t, saddr), 4},
        {"daddr", offsetof(tt_trace_format_t, daddr), 4},
        {"saddr_v6", offsetof(tt_trace_format_t, saddr_v6), 16},
        {"daddr_v6", offsetof(tt_trace_format_t, daddr_v6), 16},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        tt_trace_field_t *fld = (tt_trace_field_t *)((char *)f + want[i].off);
        if (find_field(event_format, want[i].name, fld) < 0) {
            snprintf(err, errlen, "event format: no field %s", want[i].name);
            return -1;
        }
        /* skaddr is a pointer: 4 bytes on a 32-bit kernel are fine too. */
        if (fld->size != want[i].size && !(i == 2 && fld->size == 4)) {
            snprintf(err, errlen, "event format: field %s has size %d, expected %d", want[i].name,
                     fld->size, want[i].size);
            return -1;
        }
    }
    tt_trace_field_t ts, commit, data;
    if (find_field(header_page, "timestamp", &ts) < 0 ||
        find_field(header_page, "commit", &commit) < 0 ||
        find_field(header_page, "data", &data) < 0 || ts.size != 8 ||
        (commit.size != 4 && commit.size != 8) ||
        /* The page header precedes the data: a page of data_off bytes holds both stamps. */
        (size_t)ts.off + 8 > (size_t)data.off ||
        (size_t)commit.off + (size_t)commit.size > (size_t)data.off) {
        snprintf(err, errlen, "header_page: unexpected layout");
        return -1;
    }
    f->page_ts_off = (size_t)ts.off;
    f->page_commit_off = (size_t)commit.off;
    f->page_commit_size = (size_t)commit.size;
    f->page_data_off = (size_t)data.off;
    f->page_data_size = (size_t)data.size;
    return 0;
}

size_t tt_trace_page_size(const tt_trace_format_t *f)
{
    return f->page_data_off + f->page_data_size;
}

static uint64_t load_uint(const uint8_t *p, int size)
{
    uint64_t v = 0;
    switch (size) {
    case 1:
        return *p;
    case 2: {
        uint16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case 4: {
        uint32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    default:
        memcpy(&v, p, 8);
        return v;
    }
}

static void decode_event(const tt_trace_format_t *f, const uint8_t *rec, size_t len, uint64_t ts,
                         tt_trace_event_cb cb, void *arg)
{
    /* Every field must lie inside the record (the format file, not a fixed layout, placed
     * them). */
    const tt_trace_field_t *fields[] = {
        &f->common_type, &f->common_pid, &f->skaddr,   &f->oldstate, &f->newstate,
        &f->sport,       &f->dport,      &f->family,   &f->protocol, &f->saddr,
        &f->daddr,       &f->saddr_v6,   &f->daddr_v6,
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if ((size_t)fields[i]->off + (size_t)fields[i]->size > len)
            return;
    if (load_uint(rec + f->common_type.off, 2) != f->id)
        return;
    tt_trace_event_t ev = {
        .ts_ns = ts,
        .skaddr = load_uint(rec + f->skaddr.off, f->skaddr.size),
        .pid = (int)(int32_t)load_uint(rec + f->common_pid.off, 4),
        .oldstate = (int)(int32_t)load_uint(rec + f->oldstate.off, 4),
        .newstate = (int)(int32_t)load_uint(rec + f->newstate.off, 4),
        .protocol = (int)load_uint(rec + f->protocol.off, 2),
    };
    int family = (int)load_uint(rec + f->family.off, 2);
    uint16_t sport = (uint16_t)load_uint(rec + f->sport.off, 2);
    uint16_t dport = (uint16_t)load_uint(rec + f->dport.off, 2);
    if (family == AF_INET) {
        tt_churn_addr_set(&ev.local, AF_INET, rec + f->saddr.off, sport);
        tt_churn_addr_set(&ev.remote, AF_INET, rec + f->daddr.off, dport);
    } else if (family == AF_INET6) {
        tt_churn_addr_set(&ev.local, AF_INET6, rec + f->saddr_v6.off, sport);
        tt_churn_addr_set(&ev.remote, AF_INET6, rec + f->daddr_v6.off, dport);
    } else {
        return;
    }
    cb(&ev, arg);
}

int tt_trace_page_decode(const tt_trace_format_t *f, const uint8_t *page, size_t len,
                         tt_trace_event_cb cb, void *arg, int *missed)
{
    *missed = 0;
    if (len < f->page_data_off)
        return len == 0 ? 0 : -1;
    uint64_t ts = load_uint(page + f->page_ts_off, 8);
    uint64_t commit = load_uint(page + f->page_commit_off, (int)f->page_commit_size);
    if (commit & RB_MISSED_EVENTS)
        *missed = 1;
    size_t size = (size_t)(commit & ~RB_COMMIT_FLAGS);
    if (f->page_commit_size == 8)
        size = (size_t)(commit & 0xffffffffULL & ~RB_COMMIT_FLAGS);
    if (size > f->page_data_size || f->page_data_off + size > len)
        return -1;
    const uint8_t *p = page + f->page_data_off, *end = p + size;
    int n = 0;
    /* Bounds compare lengths with what is left, never a pointer past the end. */
    while (end - p >= 4) {
        size_t left = (size_t)(end - p);
        uint32_t hdr = (uint32_t)load_uint(p, 4);
        unsigned type_len = hdr & 0x1f;
        uint32_t delta = hdr >> 5;
        if (type_len == RB_TYPE_PADDING) {
            if (delta == 0) /* the rest of the page is unused */
                break;
            if (left < 8)
                return -1;
            size_t skip = (uint32_t)load_uint(p + 4, 4) + 4;
            if (skip < 8 || skip > left)
                return -1;
            ts += delta;
            p += skip;
            continue;
        }
        if (type_len == RB_TYPE_TIME_EXTEND || type_len == RB_TYPE_TIME_STAMP) {
            if (left < 8)
                return -1;
            uint64_t v = ((uint64_t)load_uint(p + 4, 4) << RB_TS_SHIFT) | delta;
            if (type_len == RB_TYPE_TIME_EXTEND) {
                ts += v;
            } else {
                /* Absolute stamps carry the low 59 bits; the page's time gives the rest. */
                const uint64_t low = (1ULL << 59) - 1;
                ts = (ts & ~low) | (v & low);
            }
            p += 8;
            continue;
        }
        const uint8_t *rec;
        size_t rlen;
        if (type_len == 0) {
            if (left < 8)
                return -1;
            uint32_t l = (uint32_t)load_uint(p + 4, 4);
            if (l < 4 || l > left - 4)
                return -1;
            rec = p + 8;
            rlen = l - 4;
            p += 4 + l;
        } else {
            rlen = (size_t)type_len * 4;
            if (rlen > left - 4)
                return -1;
            rec = p + 4;
            p += 4 + rlen;
        }
        ts += delta;
        decode_event(f, rec, rlen, ts, cb, arg);
        n++;
    }
    return n;
}
