/* json.c: the strict JSON reader and the small writer declared in json.h.
 *
 * The reader is one recursive-descent pass. Finished values wait on a stack; when a container closes, its
 * items move from the top of the stack into the node pool in one block, so every container's items end up
 * contiguous without counting them first. Offsets (not pointers) are kept until the end because the pool and
 * the string arena grow by reallocation. */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/json.h"

/* ---- reader ---- */

typedef struct jnode {
    wl_json_type type;
    int boolean, is_int, has_key;
    int64_t integer;
    double number;
    size_t str_off, str_len; /* into the string arena */
    size_t key_off, key_len;
    size_t first, n;         /* items in the pool */
} jnode;

typedef struct jparser {
    const unsigned char *s;
    size_t len, pos;
    int depth;
    jnode *stack;
    size_t n_stack, cap_stack;
    jnode *pool;
    size_t n_pool, cap_pool;
    char *strs;
    size_t n_strs, cap_strs;
} jparser;

struct wl_json_doc {
    wl_json *nodes; /* pool items, then the root */
    char *strs;
    const wl_json *root;
};

/* Grow an array to hold at least `need` elements (doubling); 0 on failure (message recorded). */
static int grow(void **buf, size_t *cap, size_t need, size_t elem, const char *what) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc = nc > SIZE_MAX / 4 ? need : nc * 2;
    void *nb = wl_alloc_array(nc, elem, what);
    if (!nb) return 0;
    if (*cap) memcpy(nb, *buf, *cap * elem);
    wl_free(*buf);
    *buf = nb;
    *cap = nc;
    return 1;
}

static wl_status syntax(const jparser *p, const char *what) {
    return wl_fail(WL_STATUS_BAD_FORMAT, "JSON: %s at byte %zu", what, p->pos);
}

static void skip_ws(jparser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int str_push(jparser *p, const void *bytes, size_t n) {
    size_t need;
    if (!wl_add_size(p->n_strs, n, &need) || !grow((void **)&p->strs, &p->cap_strs, need, 1, "JSON strings"))
        return 0;
    memcpy(p->strs + p->n_strs, bytes, n);
    p->n_strs += n;
    return 1;
}

/* Length of the valid UTF-8 sequence (RFC 3629) starting at s[0] >= 0x80 within n bytes, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;      /* no overlong forms */
        if (c == 0xed) hi = 0x9f;      /* no UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;      /* no overlong forms */
        if (c == 0xf4) hi = 0x8f;      /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

static int hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

static size_t utf8_encode(unsigned cp, unsigned char *o) {
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* At an opening quote: decode into the arena (NUL-terminated), report its offset and length. */
static wl_status parse_string(jparser *p, size_t *off, size_t *out_len) {
    p->pos++; /* opening quote */
    *off = p->n_strs;
    for (;;) {
        /* Copy a run of plain characters at once. */
        size_t run = p->pos;
        while (run < p->len) {
            unsigned char c = p->s[run];
            if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
            run++;
        }
        if (run > p->pos) {
            if (!str_push(p, p->s + p->pos, run - p->pos)) return WL_STATUS_OUT_OF_MEMORY;
            p->pos = run;
        }
        if (p->pos >= p->len) return syntax(p, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) return syntax(p, "control character in string (must be escaped)");
        if (c >= 0x80) {
            size_t n = utf8_seq(p->s + p->pos, p->len - p->pos);
            if (!n) return syntax(p, "invalid UTF-8 in string");
            if (!str_push(p, p->s + p->pos, n)) return WL_STATUS_OUT_OF_MEMORY;
            p->pos += n;
            continue;
        }
        /* Backslash escape. */
        if (p->pos + 1 >= p->len) return syntax(p, "unterminated escape");
        unsigned char e = p->s[p->pos + 1], ch;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p->len - p->pos < 6 || !hex4(p->s + p->pos + 2, &cp)) return syntax(p, "bad \\u escape");
            if (cp >= 0xdc00 && cp <= 0xdfff) return syntax(p, "lone low surrogate in \\u escape");
            size_t used = 6;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                /* A high surrogate must be followed by an escaped low surrogate. */
                if (p->len - p->pos < 12 || p->s[p->pos + 6] != '\\' || p->s[p->pos + 7] != 'u' ||
                    !hex4(p->s + p->pos + 8, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return syntax(p, "high surrogate not followed by a low surrogate in \\u escape");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                used = 12;
            }
            unsigned char buf[4];
            if (!str_push(p, buf, utf8_encode(cp, buf))) return WL_STATUS_OUT_OF_MEMORY;
            p->pos += used;
            continue;
        }
        default: return syntax(p, "invalid escape in string");
        }
        if (!str_push(p, &ch, 1)) return WL_STATUS_OUT_OF_MEMORY;
        p->pos += 2;
    }
    *out_len = p->n_strs - *off;
    if (!str_push(p, "", 1)) return WL_STATUS_OUT_OF_MEMORY;
    return WL_OK;
}

/* Decimal text (digits, optional point, optional exponent) to the nearest double, independent of the C
 * locale: the point is removed and the exponent adjusted, so strtod never sees a decimal separator.
 * lit has been checked against the JSON number grammar (a leading '-' allowed). Returns WL_OK,
 * WL_STATUS_BAD_FORMAT when the value is beyond the double range, or WL_STATUS_OUT_OF_MEMORY. */
static wl_status decimal_to_double(const char *lit, size_t len, double *out) {
    char small[128];
    char *buf = small;
    if (len + 32 > sizeof small) {
        buf = wl_alloc(len + 32, "JSON number");
        if (!buf) return WL_STATUS_OUT_OF_MEMORY;
    }
    size_t o = 0, i = 0;
    long long frac_digits = 0;
    if (lit[i] == '-') buf[o++] = lit[i++];
    while (i < len && lit[i] >= '0' && lit[i] <= '9') buf[o++] = lit[i++];
    if (i < len && lit[i] == '.') {
        i++;
        while (i < len && lit[i] >= '0' && lit[i] <= '9') {
            buf[o++] = lit[i++];
            frac_digits++;
        }
    }
    long long exp = 0;
    if (i < len && (lit[i] == 'e' || lit[i] == 'E')) {
        i++;
        int neg = 0;
        if (i < len && (lit[i] == '+' || lit[i] == '-')) neg = lit[i++] == '-';
        /* Clamp huge exponents: beyond 10^9 the value is 0 or infinity for any digit string we accept. */
        while (i < len && lit[i] >= '0' && lit[i] <= '9') {
            if (exp < 1000000000LL) exp = exp * 10 + (lit[i] - '0');
            i++;
        }
        if (neg) exp = -exp;
    }
    exp -= frac_digits;
    snprintf(buf + o, 32, "e%lld", exp);
    double v = strtod(buf, NULL);
    if (buf != small) wl_free(buf);
    *out = v;
    return isfinite(v) ? WL_OK : WL_STATUS_BAD_FORMAT;
}

static wl_status parse_number(jparser *p, jnode *out) {
    size_t start = p->pos;
    const unsigned char *s = p->s;
    int neg = 0, is_int = 1;
    if (s[p->pos] == '-') {
        neg = 1;
        p->pos++;
    }
    if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return syntax(p, "invalid number");
    if (s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') return syntax(p, "leading zero in number");
    } else {
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && s[p->pos] == '.') {
        is_int = 0;
        p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return syntax(p, "digit expected after '.'");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        is_int = 0;
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return syntax(p, "digit expected in exponent");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    out->type = WL_JSON_NUMBER;
    if (is_int) {
        /* Exact integer when it fits in int64 (magnitude up to 2^63 for negatives). */
        uint64_t mag = 0;
        int fits = 1;
        for (size_t i = start + (size_t)neg; i < p->pos; i++) {
            unsigned d = (unsigned)(s[i] - '0');
            if (mag > (UINT64_MAX - d) / 10) {
                fits = 0;
                break;
            }
            mag = mag * 10 + d;
        }
        if (fits && (neg ? mag <= (uint64_t)INT64_MAX + 1 : mag <= (uint64_t)INT64_MAX)) {
            out->is_int = 1;
            out->integer = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
            out->number = neg && mag == 0 ? -0.0 : (double)out->integer;
            return WL_OK;
        }
    }
    wl_status st = decimal_to_double((const char *)s + start, p->pos - start, &out->number);
    if (st == WL_STATUS_BAD_FORMAT) {
        p->pos = start;
        return syntax(p, "number out of range");
    }
    return st;
}

static int match_literal(jparser *p, const char *lit) {
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static wl_status parse_value(jparser *p, jnode *out);

static int push(jparser *p, const jnode *node) {
    if (!grow((void **)&p->stack, &p->cap_stack, p->n_stack + 1, sizeof *p->stack, "JSON parse stack")) return 0;
    p->stack[p->n_stack++] = *node;
    return 1;
}

/* Move the items above `base` from the stack to the pool; they become out's items. */
static int close_container(jparser *p, size_t base, jnode *out) {
    size_t n = p->n_stack - base;
    out->first = p->n_pool;
    out->n = n;
    if (n == 0) return 1;
    if (!grow((void **)&p->pool, &p->cap_pool, p->n_pool + n, sizeof *p->pool, "JSON nodes")) return 0;
    memcpy(p->pool + p->n_pool, p->stack + base, n * sizeof *p->stack);
    p->n_pool += n;
    p->n_stack = base;
    return 1;
}

typedef struct keyref {
    const char *s;
    size_t n;
} keyref;

static int keyref_cmp(const void *a, const void *b) {
    const keyref *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static wl_status duplicate_key(const keyref *k) {
    return wl_fail(WL_STATUS_BAD_FORMAT, "JSON: duplicate key \"%.*s\" in an object", k->n > 200 ? 200 : (int)k->n,
                   k->s);
}

/* Reject an object whose members (stack[base..]) repeat a key: pairwise for small objects, sorted otherwise. */
static wl_status check_unique_keys(jparser *p, size_t base) {
    size_t n = p->n_stack - base;
    if (n < 2) return WL_OK;
    if (n <= 16) {
        for (size_t i = 0; i < n; i++) {
            const jnode *a = &p->stack[base + i];
            for (size_t j = i + 1; j < n; j++) {
                const jnode *b = &p->stack[base + j];
                if (a->key_len == b->key_len && memcmp(p->strs + a->key_off, p->strs + b->key_off, a->key_len) == 0) {
                    keyref k = {p->strs + a->key_off, a->key_len};
                    return duplicate_key(&k);
                }
            }
        }
        return WL_OK;
    }
    keyref *keys = wl_alloc_array(n, sizeof *keys, "JSON key check");
    if (!keys) return WL_STATUS_OUT_OF_MEMORY;
    for (size_t i = 0; i < n; i++) {
        keys[i].s = p->strs + p->stack[base + i].key_off;
        keys[i].n = p->stack[base + i].key_len;
    }
    qsort(keys, n, sizeof *keys, keyref_cmp);
    wl_status st = WL_OK;
    for (size_t i = 1; i < n && st == WL_OK; i++)
        if (keyref_cmp(&keys[i - 1], &keys[i]) == 0) st = duplicate_key(&keys[i]);
    wl_free(keys);
    return st;
}

static wl_status parse_array(jparser *p, jnode *out) {
    out->type = WL_JSON_ARRAY;
    p->pos++;
    size_t base = p->n_stack;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return close_container(p, base, out) ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
    }
    for (;;) {
        jnode item;
        wl_status st = parse_value(p, &item);
        if (st != WL_OK) return st;
        if (!push(p, &item)) return WL_STATUS_OUT_OF_MEMORY;
        skip_ws(p);
        if (p->pos >= p->len) return syntax(p, "unterminated array");
        unsigned char c = p->s[p->pos++];
        if (c == ']') break;
        if (c != ',') {
            p->pos--;
            return syntax(p, "expected ',' or ']'");
        }
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ']') return syntax(p, "trailing comma in array");
    }
    return close_container(p, base, out) ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
}

static wl_status parse_object(jparser *p, jnode *out) {
    out->type = WL_JSON_OBJECT;
    p->pos++;
    size_t base = p->n_stack;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return close_container(p, base, out) ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
    }
    for (;;) {
        if (p->pos >= p->len) return syntax(p, "unterminated object");
        if (p->s[p->pos] != '"') return syntax(p, p->s[p->pos] == '}' ? "trailing comma in object" : "expected a string key");
        size_t key_off, key_len;
        wl_status st = parse_string(p, &key_off, &key_len);
        if (st != WL_OK) return st;
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') return syntax(p, "expected ':' after a key");
        p->pos++;
        jnode item;
        st = parse_value(p, &item);
        if (st != WL_OK) return st;
        item.has_key = 1;
        item.key_off = key_off;
        item.key_len = key_len;
        if (!push(p, &item)) return WL_STATUS_OUT_OF_MEMORY;
        skip_ws(p);
        if (p->pos >= p->len) return syntax(p, "unterminated object");
        unsigned char c = p->s[p->pos++];
        if (c == '}') break;
        if (c != ',') {
            p->pos--;
            return syntax(p, "expected ',' or '}'");
        }
        skip_ws(p);
    }
    wl_status st = check_unique_keys(p, base);
    if (st != WL_OK) return st;
    return close_container(p, base, out) ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
}

static wl_status parse_value(jparser *p, jnode *out) {
    memset(out, 0, sizeof *out);
    skip_ws(p);
    if (p->pos >= p->len) return syntax(p, "expected a value");
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{':
    case '[': {
        if (++p->depth > WL_JSON_MAX_DEPTH)
            return wl_fail(WL_STATUS_BAD_FORMAT, "JSON: nesting deeper than %d at byte %zu", WL_JSON_MAX_DEPTH,
                           p->pos);
        wl_status st = c == '{' ? parse_object(p, out) : parse_array(p, out);
        p->depth--;
        return st;
    }
    case '"':
        out->type = WL_JSON_STRING;
        return parse_string(p, &out->str_off, &out->str_len);
    case 't':
    case 'f':
        out->type = WL_JSON_BOOL;
        out->boolean = c == 't';
        if (!match_literal(p, c == 't' ? "true" : "false")) return syntax(p, "invalid literal");
        return WL_OK;
    case 'n':
        out->type = WL_JSON_NULL;
        if (!match_literal(p, "null")) return syntax(p, "invalid literal");
        return WL_OK;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, out);
        return syntax(p, "expected a value");
    }
}

static void convert(const jparser *p, const jnode *j, wl_json *v, wl_json *nodes) {
    v->type = j->type;
    v->boolean = j->boolean;
    v->is_int = j->is_int;
    v->integer = j->integer;
    v->number = j->number;
    v->str = j->type == WL_JSON_STRING ? p->strs + j->str_off : NULL;
    v->str_len = j->str_len;
    v->key = j->has_key ? p->strs + j->key_off : NULL;
    v->key_len = j->key_len;
    v->n = j->n;
    v->items = j->n ? nodes + j->first : NULL;
}

wl_status wl_json_parse(const char *text, size_t len, wl_json_doc **out) {
    if (!out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_json_parse: out is NULL");
    *out = NULL;
    if (!text && len) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_json_parse: text is NULL");
    jparser p;
    memset(&p, 0, sizeof p);
    p.s = (const unsigned char *)text;
    p.len = len;
    jnode root;
    wl_status st;
    skip_ws(&p);
    if (p.pos >= p.len) {
        st = wl_fail(WL_STATUS_BAD_FORMAT, "JSON: empty text");
    } else {
        st = parse_value(&p, &root);
        if (st == WL_OK) {
            skip_ws(&p);
            if (p.pos != p.len) st = syntax(&p, "unexpected data after the value");
        }
    }
    wl_json_doc *doc = NULL;
    if (st == WL_OK && !str_push(&p, "", 1)) st = WL_STATUS_OUT_OF_MEMORY; /* the arena exists even if empty */
    if (st == WL_OK) {
        doc = wl_alloc(sizeof *doc, "JSON document");
        if (doc) doc->nodes = wl_alloc_array(p.n_pool + 1, sizeof *doc->nodes, "JSON nodes");
        if (!doc || !doc->nodes) {
            wl_free(doc);
            doc = NULL;
            st = WL_STATUS_OUT_OF_MEMORY;
        }
    }
    if (st == WL_OK) {
        for (size_t i = 0; i < p.n_pool; i++) convert(&p, &p.pool[i], &doc->nodes[i], doc->nodes);
        convert(&p, &root, &doc->nodes[p.n_pool], doc->nodes);
        doc->root = &doc->nodes[p.n_pool];
        doc->strs = p.strs; /* the tree points into the arena: the document takes it over */
        p.strs = NULL;
        *out = doc;
    }
    wl_free(p.stack);
    wl_free(p.pool);
    wl_free(p.strs);
    return st;
}

const wl_json *wl_json_root(const wl_json_doc *doc) { return doc ? doc->root : NULL; }

void wl_json_free(wl_json_doc *doc) {
    if (!doc) return;
    wl_free(doc->nodes);
    wl_free(doc->strs);
    wl_free(doc);
}

int wl_json_str_eq(const char *s, size_t len, const char *z) {
    return s && z && strlen(z) == len && memcmp(s, z, len) == 0;
}

const wl_json *wl_json_get(const wl_json *v, const char *key) {
    if (!v || v->type != WL_JSON_OBJECT || !key) return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (wl_json_str_eq(v->items[i].key, v->items[i].key_len, key)) return &v->items[i];
    return NULL;
}

const char *wl_json_type_name(wl_json_type type) {
    switch (type) {
    case WL_JSON_NULL: return "null";
    case WL_JSON_BOOL: return "bool";
    case WL_JSON_NUMBER: return "number";
    case WL_JSON_STRING: return "string";
    case WL_JSON_ARRAY: return "array";
    case WL_JSON_OBJECT: return "object";
    }
    return "unknown";
}

/* ---- writer ---- */

void wl_jw_init(wl_json_writer *w) { memset(w, 0, sizeof *w); }

void wl_jw_free(wl_json_writer *w) {
    if (!w) return;
    wl_free(w->data);
    memset(w, 0, sizeof *w);
}

wl_status wl_jw_finish(const wl_json_writer *w) { return w->status; }

void wl_jw_raw(wl_json_writer *w, const char *s, size_t len) {
    if (w->status != WL_OK) return;
    size_t need;
    if (!wl_add_size(w->len, len, &need) || !wl_add_size(need, 1, &need)) {
        w->status = wl_fail(WL_STATUS_OUT_OF_MEMORY, "JSON writer: text too large");
        return;
    }
    if (!grow((void **)&w->data, &w->cap, need, 1, "JSON text")) {
        w->status = WL_STATUS_OUT_OF_MEMORY;
        return;
    }
    memcpy(w->data + w->len, s, len);
    w->len += len;
    w->data[w->len] = '\0';
}

void wl_jw_string(wl_json_writer *w, const char *s, size_t len) {
    if (w->status != WL_OK) return;
    if (!s && len) {
        w->status = wl_fail(WL_STATUS_INVALID_ARGUMENT, "JSON writer: NULL string");
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    wl_jw_raw(w, "\"", 1);
    size_t i = 0;
    while (i < len && w->status == WL_OK) {
        size_t run = i;
        while (run < len && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\') run++;
        if (run > i) {
            wl_jw_raw(w, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t n = utf8_seq(u + i, len - i);
            if (!n) {
                w->status = wl_fail(WL_STATUS_INVALID_ARGUMENT, "JSON writer: invalid UTF-8 at byte %zu of a string", i);
                return;
            }
            wl_jw_raw(w, s + i, n);
            i += n;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"': memcpy(esc, "\\\"", 3); break;
        case '\\': memcpy(esc, "\\\\", 3); break;
        case '\n': memcpy(esc, "\\n", 3); break;
        case '\r': memcpy(esc, "\\r", 3); break;
        case '\t': memcpy(esc, "\\t", 3); break;
        case '\b': memcpy(esc, "\\b", 3); break;
        case '\f': memcpy(esc, "\\f", 3); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", c); break;
        }
        wl_jw_raw(w, esc, strlen(esc));
        i++;
    }
    wl_jw_raw(w, "\"", 1);
}

void wl_jw_int(wl_json_writer *w, int64_t v) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    wl_jw_raw(w, buf, (size_t)n);
}

/* printf honours the C locale's decimal separator; JSON needs '.'. */
static void fix_decimal_point(char *buf) {
    const char *dp = localeconv()->decimal_point;
    size_t dl = dp ? strlen(dp) : 0;
    if (dl == 0 || (dl == 1 && dp[0] == '.')) return;
    char *at = strstr(buf, dp);
    if (!at) return;
    *at = '.';
    memmove(at + 1, at + dl, strlen(at + dl) + 1);
}

void wl_jw_double(wl_json_writer *w, double v) {
    if (w->status != WL_OK) return;
    if (!isfinite(v)) {
        w->status = wl_fail(WL_STATUS_INVALID_ARGUMENT, "JSON writer: %g has no JSON form", v);
        return;
    }
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        fix_decimal_point(buf);
        double back;
        if (decimal_to_double(buf, strlen(buf), &back) == WL_OK && back == v) break;
    }
    wl_jw_raw(w, buf, strlen(buf));
}
