/* JSON: the reader accepts exactly RFC 8259 (literals, numbers, escapes and surrogate pairs,
 * nesting up to the bound) and rejects the rest with an offset; lookups give defaults instead of
 * failing; and the writer helpers escape what must be escaped. */
#include "core/json.h"

#include "core/invariant.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "leakcheck.h"

static tt_json_t *parse(const char *text)
{
    char err[128];
    tt_json_t *v = tt_json_parse(text, strlen(text), err, sizeof(err));
    if (v == NULL)
        fail_msg("parse failed: %s: %s", text, err);
    return v;
}

static void test_scalars(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_json_t *v = parse(" true ");
    assert_int_equal(v->type, TT_JSON_TRUE);
    assert_int_equal(tt_json_bool(v, 0), 1);
    tt_json_free(v);
    v = parse("null");
    assert_int_equal(v->type, TT_JSON_NULL);
    assert_int_equal(tt_json_bool(v, 7), 7);
    tt_json_free(v);
    v = parse("-12.5e1");
    assert_true(tt_json_num(v, 0) == -125.0);
    assert_true(tt_json_u64(v, 99) == 99); /* negative: no exact unsigned value */
    tt_json_free(v);
    v = parse("18446744073709551615");
    assert_true(tt_json_u64(v, 0) == UINT64_MAX);
    tt_json_free(v);
    v = parse("18446744073709551616"); /* 2^64: a number, but not an exact u64 */
    assert_true(tt_json_u64(v, 5) == 5);
    assert_true(tt_json_num(v, 0) > 1.8e19);
    tt_json_free(v);
    v = parse("0");
    assert_true(tt_json_u64(v, 5) == 0);
    tt_json_free(v);
    v = parse("1.0");
    assert_true(tt_json_u64(v, 5) == 5); /* fractional syntax is not an integer */
    tt_json_free(v);
    tt_leakcheck_end(lc);
}

static void test_strings(void **state)
{
    (void)state;
    tt_json_t *v = parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20ac\\ud83d\\ude00\"");
    const char expect[] = "a\"b\\c/d\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    assert_int_equal(v->len, sizeof(expect) - 1);
    assert_memory_equal(v->str, expect, sizeof(expect) - 1);
    tt_json_free(v);
    v = parse("\"nul\\u0000inside\"");
    assert_int_equal(v->len, 10);
    assert_int_equal(v->str[3], '\0');
    tt_json_free(v);
    v = parse("\"raw \xc3\xa9 utf-8\"");
    assert_string_equal(tt_json_str(v, NULL), "raw \xc3\xa9 utf-8");
    tt_json_free(v);
}

static void test_containers_and_lookup(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    tt_json_t *v = parse("{\"a\": [1, 2, {\"b\": \"x\"}], \"c\": {\"d\": {\"e\": 5}}, \"a\": 0,"
                         " \"empty\": {}, \"none\": []}");
    assert_int_equal(v->len, 5);
    const tt_json_t *a = tt_json_get(v, "a"); /* the first of duplicate names */
    assert_int_equal(a->type, TT_JSON_ARRAY);
    assert_int_equal(a->len, 3);
    assert_true(tt_json_u64(tt_json_at(a, 1), 0) == 2);
    assert_null(tt_json_at(a, 3));
    assert_string_equal(tt_json_str(tt_json_get(tt_json_at(a, 2), "b"), NULL), "x");
    assert_true(tt_json_u64(tt_json_path(v, "c.d.e"), 0) == 5);
    assert_null(tt_json_path(v, "c.x.e"));
    assert_null(tt_json_path(v, "a.b")); /* a is an array */
    assert_int_equal(tt_json_get(v, "empty")->len, 0);
    assert_int_equal(tt_json_get(v, "none")->len, 0);
    /* Wrong types and NULL give the default. */
    assert_true(tt_json_num(tt_json_get(v, "a"), 3.5) == 3.5);
    assert_string_equal(tt_json_str(tt_json_get(v, "c"), "def"), "def");
    assert_null(tt_json_get(NULL, "a"));
    assert_true(tt_json_u64(NULL, 9) == 9);
    tt_json_free(v);
    tt_leakcheck_end(lc);
}

static void test_rejects(void **state)
{
    (void)state;
    tt_leakcheck_t lc = tt_leakcheck_begin();
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "[1 2]",
        "{\"a\" 1}",
        "{a:1}",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "tru",
        "nul",
        "\"unterminated",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"a\nb\"",
        "[1]]",
        "{} {}",
        "NaN",
        "\"\\ud800\\u0041\"",
        "[\"a\"\"b\"]",
    };
    for (size_t i = 0; i < TT_ARRAY_SIZE(bad); i++) {
        char err[128] = "";
        tt_json_t *v = tt_json_parse(bad[i], strlen(bad[i]), err, sizeof(err));
        if (v != NULL)
            fail_msg("accepted invalid JSON: %s", bad[i]);
        assert_non_null(strstr(err, "offset "));
    }
    /* Not NUL-terminated input: the parser stops at len. */
    tt_json_t *v = tt_json_parse("[1]garbage", 3, NULL, 0);
    assert_non_null(v);
    tt_json_free(v);
    tt_leakcheck_end(lc);
}

static void test_depth_bound(void **state)
{
    (void)state;
    char deep[2 * (TT_JSON_MAX_DEPTH + 2) + 1];
    size_t d = TT_JSON_MAX_DEPTH + 1; /* root at depth 0: MAX_DEPTH + 1 levels are allowed */
    memset(deep, '[', d);
    memset(deep + d, ']', d);
    deep[2 * d] = '\0';
    tt_json_t *v = parse(deep);
    tt_json_free(v);
    d++;
    memset(deep, '[', d);
    memset(deep + d, ']', d);
    deep[2 * d] = '\0';
    char err[128];
    assert_null(tt_json_parse(deep, strlen(deep), err, sizeof(err)));
    assert_non_null(strstr(err, "deep"));
}

static void test_writer(void **state)
{
    (void)state;
    tt_buf_t b = {.data = tt_malloc(16), .cap = 16};
    tt_json_put_str(&b, "q\"b\\n\n\x01 \xc3\xa9");
    tt_buf_append(&b, " ", 1);
    tt_json_put_num(&b, 0.25, 6);
    tt_buf_append(&b, " ", 1);
    tt_json_put_num(&b, NAN, 6);
    tt_buf_append(&b, "", 1);
    assert_string_equal(b.data, "\"q\\\"b\\\\n\\u000a\\u0001 \xc3\xa9\" 0.25 0");
    /* And the string reads back. */
    b.wpos = 0;
    tt_json_put_str(&b, "q\"b\\n\n\x01 \xc3\xa9");
    tt_json_t *v = tt_json_parse(b.data, tt_buf_len(&b), NULL, 0);
    assert_non_null(v);
    assert_string_equal(v->str, "q\"b\\n\n\x01 \xc3\xa9");
    tt_json_free(v);
    free(b.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_containers_and_lookup),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_depth_bound),
        cmocka_unit_test(test_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
