/* test_io_json.c: the strict JSON reader and writer (src/io/json.h): RFC 8259 acceptance and rejection,
 * UTF-8 and \u escapes, exact integers and correctly rounded doubles, duplicate keys, depth, and writer
 * round trips. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "testutil.h"
#include "wl_status.h"

static wl_json_doc *parse_ok(const char *text, size_t len) {
    wl_json_doc *doc = NULL;
    wl_clear_error();
    wl_status st = wl_json_parse(text, len, &doc);
    CHECK_MSG(st == WL_OK && doc, "parse of \"%.60s\" failed: %s", text, wl_last_error());
    return st == WL_OK ? doc : NULL;
}

#define PARSE_OK(lit) parse_ok(lit, sizeof(lit) - 1)

/* The text must be rejected as BAD_FORMAT with a message, and the output left NULL. */
static void reject(const char *text, size_t len, const char *why) {
    wl_json_doc *doc = (wl_json_doc *)1;
    wl_clear_error();
    wl_status st = wl_json_parse(text, len, &doc);
    CHECK_MSG(st == WL_STATUS_BAD_FORMAT && wl_last_error()[0] && doc == NULL, "%s: \"%.60s\" gave status %d (%s)", why,
              text, (int)st, wl_last_error());
    if (st == WL_OK) wl_json_free(doc);
}

#define REJECT(lit, why) reject(lit, sizeof(lit) - 1, why)

static void test_values(void) {
    wl_json_doc *doc = PARSE_OK(" {\"a\": [1, -2, 3.5, true, false, null, \"x\", {}, []], \"b\": {\"c\": \"d\"}}\r\n\t");
    if (!doc) return;
    const wl_json *r = wl_json_root(doc);
    CHECK(r->type == WL_JSON_OBJECT && r->n == 2);
    const wl_json *a = wl_json_get(r, "a");
    CHECK(a && a->type == WL_JSON_ARRAY && a->n == 9);
    if (a && a->n == 9) {
        CHECK(a->items[0].type == WL_JSON_NUMBER && a->items[0].is_int && a->items[0].integer == 1);
        CHECK(a->items[1].is_int && a->items[1].integer == -2 && a->items[1].number == -2.0);
        CHECK(!a->items[2].is_int && a->items[2].number == 3.5);
        CHECK(a->items[3].type == WL_JSON_BOOL && a->items[3].boolean == 1);
        CHECK(a->items[4].type == WL_JSON_BOOL && a->items[4].boolean == 0);
        CHECK(a->items[5].type == WL_JSON_NULL);
        CHECK(a->items[6].type == WL_JSON_STRING && a->items[6].str_len == 1 && strcmp(a->items[6].str, "x") == 0);
        CHECK(a->items[7].type == WL_JSON_OBJECT && a->items[7].n == 0 && a->items[7].items == NULL);
        CHECK(a->items[8].type == WL_JSON_ARRAY && a->items[8].n == 0);
        CHECK(a->items[0].key == NULL);
    }
    const wl_json *b = wl_json_get(r, "b");
    CHECK(b && b->key && strcmp(b->key, "b") == 0 && b->key_len == 1);
    const wl_json *c = wl_json_get(b, "c");
    CHECK(c && c->type == WL_JSON_STRING && strcmp(c->str, "d") == 0);
    CHECK(wl_json_get(r, "z") == NULL);
    CHECK(wl_json_get(a, "a") == NULL); /* not an object */
    CHECK(wl_json_get(NULL, "a") == NULL);
    wl_json_free(doc);

    /* Any value may be the top level. */
    doc = PARSE_OK("\"top\"");
    if (doc) CHECK(wl_json_root(doc)->type == WL_JSON_STRING);
    wl_json_free(doc);
    doc = PARSE_OK(" 42 ");
    if (doc) CHECK(wl_json_root(doc)->integer == 42);
    wl_json_free(doc);
    wl_json_free(NULL);
}

static void test_numbers(void) {
    struct {
        const char *text;
        int is_int;
        long long integer;
        double number;
    } cases[] = {
        {"0", 1, 0, 0.0},
        {"-0", 1, 0, -0.0},
        {"9007199254740992", 1, 9007199254740992LL, 9007199254740992.0},       /* 2^53 */
        {"9007199254740993", 1, 9007199254740993LL, 9007199254740992.0},       /* exact int, nearest double */
        {"9223372036854775807", 1, 9223372036854775807LL, 9223372036854775807.0},
        {"-9223372036854775808", 1, -9223372036854775807LL - 1, -9223372036854775808.0},
        {"9223372036854775808", 0, 0, 9223372036854775808.0},                  /* beyond int64: double only */
        {"18446744073709551616", 0, 0, 18446744073709551616.0},
        {"0.1", 0, 0, 0.1},
        {"1e-6", 0, 0, 1e-6},
        {"1E+2", 0, 0, 100.0},
        {"10000.0", 0, 0, 10000.0},
        {"-2.5e-3", 0, 0, -2.5e-3},
        {"1.7976931348623157e308", 0, 0, 1.7976931348623157e308},
        {"4.9406564584124654e-324", 0, 0, 4.9406564584124654e-324},
        {"2.2250738585072011e-308", 0, 0, 2.2250738585072011e-308},
        {"1e-400", 0, 0, 0.0}, /* underflow to zero is a value, not an error */
        {"0.30000000000000004", 0, 0, 0.30000000000000004},
        {"123456789012345678901234567890e-20", 0, 0, 1234567890.1234567890123456789},
        {"0.000000000000000000000000000000000000000001e42", 0, 0, 1.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wl_json_doc *doc = parse_ok(cases[i].text, strlen(cases[i].text));
        if (!doc) continue;
        const wl_json *v = wl_json_root(doc);
        CHECK_MSG(v->type == WL_JSON_NUMBER && v->is_int == cases[i].is_int, "%s: is_int %d", cases[i].text, v->is_int);
        if (cases[i].is_int) CHECK_MSG(v->integer == cases[i].integer, "%s: integer %lld", cases[i].text, (long long)v->integer);
        CHECK_MSG(v->number == cases[i].number && !signbit(v->number) == !signbit(cases[i].number), "%s: number %.17g",
                  cases[i].text, v->number);
        wl_json_free(doc);
    }
    /* A long literal goes through the heap path. */
    char big[3000];
    memset(big, '0', sizeof big);
    big[0] = '0';
    big[1] = '.';
    big[sizeof big - 2] = '5';
    big[sizeof big - 1] = 0; /* 0.000...05 */
    wl_json_doc *doc = parse_ok(big, strlen(big));
    if (doc) CHECK(wl_json_root(doc)->number == 0.0 || wl_json_root(doc)->number < 1e-300);
    wl_json_free(doc);
}

static void test_strings(void) {
    wl_json_doc *doc = PARSE_OK("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u20AC\", \"\\ud83d\\ude00\", \"x\\u0000y\", "
                                "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\", \"\"]");
    if (!doc) return;
    const wl_json *r = wl_json_root(doc);
    CHECK(r->n == 6);
    if (r->n == 6) {
        CHECK(strcmp(r->items[0].str, "a\"b\\c/d\b\f\n\r\t") == 0);
        CHECK(strcmp(r->items[1].str, "\xc3\xa9\xe2\x82\xac") == 0);
        CHECK(strcmp(r->items[2].str, "\xf0\x9f\x98\x80") == 0);
        CHECK(r->items[3].str_len == 3 && memcmp(r->items[3].str, "x\0y", 4) == 0);
        CHECK(strcmp(r->items[4].str, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0);
        CHECK(r->items[5].str_len == 0 && r->items[5].str[0] == 0);
    }
    wl_json_free(doc);
    /* Keys are decoded like strings; lookups compare decoded bytes. */
    doc = PARSE_OK("{\"\\u0061b\": 1}");
    if (doc) CHECK(wl_json_get(wl_json_root(doc), "ab") != NULL);
    wl_json_free(doc);
    CHECK(wl_json_str_eq("abc", 3, "abc") && !wl_json_str_eq("abc", 2, "abc") && !wl_json_str_eq(NULL, 0, ""));
}

static void test_rejections(void) {
    REJECT("", "empty");
    REJECT("  \n", "whitespace only");
    REJECT("{", "unterminated object");
    REJECT("[", "unterminated array");
    REJECT("[1", "unterminated array after item");
    REJECT("[1,]", "trailing comma");
    REJECT("{\"a\":1,}", "trailing comma in object");
    REJECT("{\"a\" 1}", "missing colon");
    REJECT("{a:1}", "unquoted key");
    REJECT("{1:1}", "number key");
    REJECT("[1 2]", "missing comma");
    REJECT("01", "leading zero");
    REJECT("-01", "leading zero after minus");
    REJECT("1.", "no fraction digits");
    REJECT(".5", "no integer part");
    REJECT("+1", "plus sign");
    REJECT("1e", "no exponent digits");
    REJECT("1e+", "no exponent digits after sign");
    REJECT("-", "lone minus");
    REJECT("NaN", "NaN");
    REJECT("Infinity", "Infinity");
    REJECT("-Infinity", "-Infinity");
    REJECT("1e400", "overflowing number");
    REJECT("-1e309", "overflowing negative number");
    REJECT("tru", "bad literal");
    REJECT("nul", "bad literal");
    REJECT("True", "capitalised literal");
    REJECT("'a'", "single quotes");
    REJECT("\"abc", "unterminated string");
    REJECT("\"a\\", "unterminated escape");
    REJECT("\"\\x\"", "bad escape");
    REJECT("\"\\u12\"", "short \\u escape");
    REJECT("\"\\u12g4\"", "bad hex digit");
    REJECT("\"\\ud800\"", "lone high surrogate");
    REJECT("\"\\udc00\"", "lone low surrogate");
    REJECT("\"\\ud800\\u0041\"", "high surrogate with a non-surrogate");
    REJECT("\"\\ud800\\ud800\"", "two high surrogates");
    REJECT("\"a\tb\"", "raw tab");
    REJECT("\"a\nb\"", "raw newline");
    REJECT("\"\x01\"", "raw control character");
    REJECT("\"\x80\"", "stray continuation byte");
    REJECT("\"\xc0\xaf\"", "overlong 2-byte");
    REJECT("\"\xc1\xbf\"", "overlong 2-byte (C1)");
    REJECT("\"\xe0\x80\xaf\"", "overlong 3-byte");
    REJECT("\"\xf0\x80\x80\xaf\"", "overlong 4-byte");
    REJECT("\"\xed\xa0\x80\"", "encoded surrogate");
    REJECT("\"\xf4\x90\x80\x80\"", "above U+10FFFF");
    REJECT("\"\xf5\x80\x80\x80\"", "F5 lead byte");
    REJECT("\"\xe2\x82\"", "truncated 3-byte sequence");
    REJECT("\"\xe2\x82", "truncated sequence at the end");
    REJECT("\"\xff\"", "FF byte");
    REJECT("1 2", "two values");
    REJECT("{} x", "garbage after the value");
    REJECT("/*c*/1", "comment");
    REJECT("[1]//c", "line comment");
    REJECT("\xef\xbb\xbf{}", "byte order mark");
    REJECT("{\"a\":1,\"a\":2}", "duplicate key");
    REJECT("{\"a\":{\"b\":1,\"b\":1}}", "nested duplicate key");
    REJECT("{\"\\u0061\":1,\"a\":2}", "duplicate key after decoding");
    REJECT("[1\x00]", "NUL byte");
    {
        /* A large object (sorted duplicate check). */
        char text[2000];
        size_t o = 0;
        o += (size_t)snprintf(text + o, sizeof text - o, "{");
        for (int i = 0; i < 40; i++) o += (size_t)snprintf(text + o, sizeof text - o, "%s\"k%d\":%d", i ? "," : "", i % 39, i);
        snprintf(text + o, sizeof text - o, "}");
        reject(text, strlen(text), "duplicate among 40 keys");
        CHECK(strstr(wl_last_error(), "k0") != NULL);
        o = 0;
        o += (size_t)snprintf(text + o, sizeof text - o, "{");
        for (int i = 0; i < 40; i++) o += (size_t)snprintf(text + o, sizeof text - o, "%s\"k%d\":%d", i ? "," : "", i, i);
        snprintf(text + o, sizeof text - o, "}");
        wl_json_doc *doc = parse_ok(text, strlen(text));
        if (doc) CHECK(wl_json_root(doc)->n == 40 && wl_json_get(wl_json_root(doc), "k39")->integer == 39);
        wl_json_free(doc);
    }
    /* The message names the byte offset. */
    REJECT("[1, 2, x]", "bad value");
    CHECK(strstr(wl_last_error(), "byte 7") != NULL);
    /* Arguments. */
    wl_json_doc *doc = NULL;
    CHECK_STATUS(wl_json_parse("1", 1, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_json_parse(NULL, 3, &doc), WL_STATUS_INVALID_ARGUMENT);
}

static void test_depth(void) {
    enum { N = 200000 };
    char *text = malloc(2 * N + 1);
    if (!text) return;
    for (int depth = WL_JSON_MAX_DEPTH; depth <= WL_JSON_MAX_DEPTH + 1; depth++) {
        for (int i = 0; i < depth; i++) text[i] = '[';
        for (int i = 0; i < depth; i++) text[depth + i] = ']';
        wl_json_doc *doc = NULL;
        wl_status st = wl_json_parse(text, 2 * (size_t)depth, &doc);
        if (depth == WL_JSON_MAX_DEPTH) {
            CHECK_MSG(st == WL_OK, "depth %d: %s", depth, wl_last_error());
        } else {
            CHECK_MSG(st == WL_STATUS_BAD_FORMAT && strstr(wl_last_error(), "nesting"), "depth %d: %s", depth, wl_last_error());
        }
        wl_json_free(doc);
    }
    /* Deep hostile input fails fast without exhausting the C stack. */
    memset(text, '[', N);
    reject(text, N, "200000 open brackets");
    for (int i = 0; i < N; i++) text[i] = i % 2 ? '[' : '{';
    reject(text, N, "alternating openers");
    free(text);
}

static void test_writer(void) {
    wl_json_writer w;
    wl_jw_init(&w);
    char all[128];
    for (int i = 0; i < 127; i++) all[i] = (char)(i + 1);
    all[127] = 0;
    const char *uni = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    wl_jw_raw(&w, "[", 1);
    wl_jw_string(&w, all, 127);
    wl_jw_raw(&w, ",", 1);
    wl_jw_string(&w, uni, strlen(uni));
    wl_jw_raw(&w, ",", 1);
    wl_jw_string(&w, "a\0b", 3);
    const double doubles[] = {0.1, 1.0 / 3.0, 1e-300, 5e-324, 1.7976931348623157e308, 16.0, -2.5, 1e21, 0.0,
                              123456789.125, 3.0517578125e-05};
    for (size_t i = 0; i < sizeof doubles / sizeof doubles[0]; i++) {
        wl_jw_raw(&w, ",", 1);
        wl_jw_double(&w, doubles[i]);
    }
    wl_jw_raw(&w, ",", 1);
    wl_jw_int(&w, INT64_MIN);
    wl_jw_raw(&w, ",", 1);
    wl_jw_int(&w, 8);
    wl_jw_raw(&w, "]", 1);
    CHECK_OK(wl_jw_finish(&w));
    CHECK(strstr(w.data, ",16,") != NULL);  /* shortest forms */
    CHECK(strstr(w.data, ",0.1,") != NULL);
    CHECK(strstr(w.data, ",-2.5,") != NULL);
    wl_json_doc *doc = parse_ok(w.data, w.len);
    if (doc) {
        const wl_json *r = wl_json_root(doc);
        size_t nd = sizeof doubles / sizeof doubles[0];
        CHECK(r->n == 3 + nd + 2);
        if (r->n == 3 + nd + 2) {
            CHECK(r->items[0].str_len == 127 && memcmp(r->items[0].str, all, 127) == 0);
            CHECK(strcmp(r->items[1].str, uni) == 0);
            CHECK(r->items[2].str_len == 3 && memcmp(r->items[2].str, "a\0b", 3) == 0);
            for (size_t i = 0; i < nd; i++)
                CHECK_MSG(r->items[3 + i].number == doubles[i], "double %.17g read back as %.17g", doubles[i],
                          r->items[3 + i].number);
            CHECK(r->items[3 + nd].is_int && r->items[3 + nd].integer == INT64_MIN);
            CHECK(r->items[4 + nd].integer == 8);
        }
    }
    wl_json_free(doc);
    wl_jw_free(&w);

    /* Failures stick: invalid UTF-8 and non-finite numbers. */
    wl_jw_init(&w);
    wl_jw_string(&w, "\xc0\xaf", 2);
    wl_jw_raw(&w, "x", 1);
    CHECK(wl_jw_finish(&w) == WL_STATUS_INVALID_ARGUMENT && wl_last_error()[0]);
    wl_jw_free(&w);
    wl_jw_init(&w);
    wl_jw_double(&w, NAN);
    CHECK(wl_jw_finish(&w) == WL_STATUS_INVALID_ARGUMENT);
    wl_jw_free(&w);
    wl_jw_init(&w);
    wl_jw_double(&w, INFINITY);
    CHECK(wl_jw_finish(&w) == WL_STATUS_INVALID_ARGUMENT);
    wl_jw_free(&w);
}

int main(void) {
    test_values();
    test_numbers();
    test_strings();
    test_rejections();
    test_depth();
    test_writer();
    return wl_test_summary("test_io_json");
}
