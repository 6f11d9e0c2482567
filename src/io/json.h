/* json.h: a small strict JSON (RFC 8259) reader and writer for the C core: safetensors headers, config.json,
 * adapter_config.json. Untrusted text in, a read-only tree out; every failure is a status with a message
 * that names the byte offset.
 *
 * Reader rules: UTF-8 is validated (no overlong forms, no surrogates, nothing above U+10FFFF); \u escapes
 * are decoded, surrogate pairs joined and lone surrogates rejected; control characters in strings, leading
 * zeros, trailing commas, comments, NaN/Infinity and duplicate keys within one object are errors; nesting is
 * limited to WL_JSON_MAX_DEPTH; whitespace may surround the single top-level value. Numbers keep both the
 * nearest double and, for integer literals (no fraction or exponent) that fit, the exact int64 value.
 */
#ifndef WL_JSON_H
#define WL_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "wl_status.h"

#define WL_JSON_MAX_DEPTH 128

typedef enum wl_json_type {
    WL_JSON_NULL = 0,
    WL_JSON_BOOL,
    WL_JSON_NUMBER,
    WL_JSON_STRING,
    WL_JSON_ARRAY,
    WL_JSON_OBJECT,
} wl_json_type;

typedef struct wl_json wl_json;
struct wl_json {
    wl_json_type type;
    int boolean;          /* WL_JSON_BOOL: 0 or 1 */
    int is_int;           /* WL_JSON_NUMBER: an integer literal whose value fits in int64 */
    int64_t integer;      /* exact value when is_int */
    double number;        /* WL_JSON_NUMBER: the nearest double (finite; out-of-range literals are errors) */
    const char *str;      /* WL_JSON_STRING: decoded UTF-8, NUL-terminated; may hold a NUL from \u0000 */
    size_t str_len;       /* bytes in str, without the terminator */
    const char *key;      /* member name when this value sits in an object (same rules as str), else NULL */
    size_t key_len;
    size_t n;             /* WL_JSON_ARRAY / WL_JSON_OBJECT: number of items */
    const wl_json *items; /* the n items in document order (object members carry their key) */
};

typedef struct wl_json_doc wl_json_doc;

/* Parse len bytes of text (no terminator needed). On success *out owns the whole tree. */
wl_status wl_json_parse(const char *text, size_t len, wl_json_doc **out);
const wl_json *wl_json_root(const wl_json_doc *doc);
void wl_json_free(wl_json_doc *doc); /* NULL is fine */

/* Member of an object by key (exact bytes), or NULL if v is not an object or has no such key. */
const wl_json *wl_json_get(const wl_json *v, const char *key);
/* 1 if the string (or key) of len bytes s equals the C string z. */
int wl_json_str_eq(const char *s, size_t len, const char *z);
/* Short name of a type for messages: "null", "bool", "number", "string", "array", "object". */
const char *wl_json_type_name(wl_json_type type);

/* Writer: appends to a growing buffer; the first failure sticks and later calls do nothing, so a caller
 * checks once at the end (wl_jw_finish). */
typedef struct wl_json_writer {
    char *data; /* NUL-terminated text so far (owned; NULL until something is written) */
    size_t len;
    size_t cap;
    wl_status status;
} wl_json_writer;

void wl_jw_init(wl_json_writer *w);
void wl_jw_raw(wl_json_writer *w, const char *s, size_t len);   /* verbatim */
void wl_jw_string(wl_json_writer *w, const char *s, size_t len); /* quoted, escaped; fails on bad UTF-8 */
void wl_jw_int(wl_json_writer *w, int64_t v);
void wl_jw_double(wl_json_writer *w, double v); /* shortest form that reads back exactly; fails on NaN/Inf */
/* Status of everything written; on failure the message says what was wrong. */
wl_status wl_jw_finish(const wl_json_writer *w);
void wl_jw_free(wl_json_writer *w);

#endif
