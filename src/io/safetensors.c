/* safetensors.c: the safetensors parser (whole file or header only) and lookups; files are written by
 * web/formats/safetensors.js, from values JavaScript holds. The rules follow huggingface/safetensors; every check reports
 * the tensor, field and values involved. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"
#include "io/json.h"

#define NAME_FMT "%.200s" /* names in messages are cut so a hostile name cannot flood them */

static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Reads a JSON value as a non-negative int64 (an integer literal). */
static int get_index(const wl_json *v, int64_t *out) {
    if (!v || v->type != WL_JSON_NUMBER || !v->is_int || v->integer < 0) return 0;
    *out = v->integer;
    return 1;
}

static int has_nul(const char *s, size_t len) { return memchr(s, '\0', len) != NULL; }

/* Validate one tensor entry and fill t (name set by the caller). */
static wl_status parse_entry(const wl_json *v, const char *name, wl_st_tensor *t) {
    if (v->type != WL_JSON_OBJECT)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": entry must be an object, got %s",
                       name, wl_json_type_name(v->type));
    const wl_json *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (size_t i = 0; i < v->n; i++) {
        const wl_json *f = &v->items[i];
        if (wl_json_str_eq(f->key, f->key_len, "dtype")) dtype = f;
        else if (wl_json_str_eq(f->key, f->key_len, "shape")) shape = f;
        else if (wl_json_str_eq(f->key, f->key_len, "data_offsets")) offsets = f;
        else
            return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": unexpected field \"%.64s\"",
                           name, f->key);
    }
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offsets ? "data_offsets" : NULL;
    if (missing)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": missing field \"%s\"", name,
                       missing);

    if (dtype->type != WL_JSON_STRING)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": dtype must be a string, got %s",
                       name, wl_json_type_name(dtype->type));
    t->dtype = wl_dtype_from_name(dtype->str, dtype->str_len);
    if (t->dtype < 0)
        return wl_fail(WL_STATUS_UNSUPPORTED, "safetensors: tensor \"" NAME_FMT "\": unknown dtype \"%.32s\"", name,
                       dtype->str);

    if (shape->type != WL_JSON_ARRAY)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": shape must be an array, got %s",
                       name, wl_json_type_name(shape->type));
    if (shape->n > WL_ST_MAX_DIMS)
        return wl_fail(WL_STATUS_UNSUPPORTED, "safetensors: tensor \"" NAME_FMT "\": %zu dimensions, at most %d supported",
                       name, shape->n, WL_ST_MAX_DIMS);
    t->ndim = (int)shape->n;
    char sbuf[200];
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        const wl_json *e = &shape->items[d];
        if (!get_index(e, &t->shape[d])) {
            if (e->type == WL_JSON_NUMBER)
                return wl_fail(WL_STATUS_BAD_FORMAT,
                               "safetensors: tensor \"" NAME_FMT "\": shape[%d] = %g is not a non-negative integer",
                               name, d, e->number);
            return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": shape[%d] is a %s, not an integer",
                           name, d, wl_json_type_name(e->type));
        }
        uint64_t dim = (uint64_t)t->shape[d];
        /* Like the reference, a product that overflows is an error even if a later dimension is 0. */
        if (dim != 0 && numel > UINT64_MAX / dim) {
            fmt_shape(sbuf, sizeof sbuf, t->shape, d + 1);
            return wl_fail(WL_STATUS_BAD_FORMAT,
                           "safetensors: tensor \"" NAME_FMT "\": shape starting %s has more than 2^64 elements", name, sbuf);
        }
        numel *= dim;
    }
    t->numel = numel;

    if (offsets->type != WL_JSON_ARRAY || offsets->n != 2)
        return wl_fail(WL_STATUS_BAD_FORMAT,
                       "safetensors: tensor \"" NAME_FMT "\": data_offsets must be an array of two integers", name);
    int64_t b, e;
    if (!get_index(&offsets->items[0], &b) || !get_index(&offsets->items[1], &e))
        return wl_fail(WL_STATUS_BAD_FORMAT,
                       "safetensors: tensor \"" NAME_FMT "\": data_offsets must be two non-negative integers", name);
    if (e < b)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": data_offsets [%lld, %lld] end before they begin",
                       name, (long long)b, (long long)e);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    uint64_t esize = wl_dtype_size(t->dtype);
    fmt_shape(sbuf, sizeof sbuf, t->shape, t->ndim);
    if (numel > UINT64_MAX / esize)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\": shape %s of %s overflows 64-bit byte sizes",
                       name, sbuf, wl_dtype_name(t->dtype));
    if (t->end - t->begin != numel * esize)
        return wl_fail(WL_STATUS_BAD_FORMAT,
                       "safetensors: tensor \"" NAME_FMT "\": data_offsets [%lld, %lld] span %llu bytes but shape %s of %s needs %llu",
                       name, (long long)b, (long long)e, (unsigned long long)(t->end - t->begin), sbuf,
                       wl_dtype_name(t->dtype), (unsigned long long)(numel * esize));
    return WL_OK;
}

static int by_offset(const void *a, const void *b) {
    const wl_st_tensor *x = *(const wl_st_tensor *const *)a, *y = *(const wl_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x < y ? -1 : x > y; /* header order: deterministic messages */
}

/* Sorted by begin, the tensors must tile [0, data_len) exactly. Returns data_len in *data_len. */
static wl_status check_tiling(wl_safetensors *st, uint64_t *data_len) {
    *data_len = 0;
    if (st->n_tensors == 0) return WL_OK;
    const wl_st_tensor **order = wl_alloc_array((size_t)st->n_tensors, sizeof *order, "safetensors offsets");
    if (!order) return WL_STATUS_OUT_OF_MEMORY;
    for (int i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n_tensors, sizeof *order, by_offset);
    uint64_t at = 0;
    const wl_st_tensor *prev = NULL;
    wl_status status = WL_OK;
    for (int i = 0; i < st->n_tensors && status == WL_OK; i++) {
        const wl_st_tensor *t = order[i];
        if (t->begin > at)
            status = wl_fail(WL_STATUS_BAD_FORMAT,
                             "safetensors: bytes [%llu, %llu) of the data are not covered by any tensor (hole before tensor \"" NAME_FMT "\")",
                             (unsigned long long)at, (unsigned long long)t->begin, t->name);
        else if (t->begin < at)
            status = wl_fail(WL_STATUS_BAD_FORMAT,
                             "safetensors: tensor \"" NAME_FMT "\" at [%llu, %llu) overlaps tensor \"" NAME_FMT "\" which ends at %llu",
                             t->name, (unsigned long long)t->begin, (unsigned long long)t->end, prev->name,
                             (unsigned long long)at);
        at = t->end;
        prev = t;
    }
    wl_free(order);
    *data_len = at;
    return status;
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

/* The arguments and the 8-byte header length: the header must fit the buffer and the limit, and start with '{'. */
static wl_status check_header_length(const uint8_t *buf, size_t len, uint64_t file_size, uint64_t *header_len) {
    if (!buf && len) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "safetensors: buffer is NULL");
    if ((uint64_t)len > file_size)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "safetensors: buffer of %zu bytes is longer than the file size %llu",
                       len, (unsigned long long)file_size);
    if (len < 8)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: %zu bytes is too short for the 8-byte header length", len);
    uint64_t n = wl_rd_u64(buf);
    if (n > WL_ST_MAX_HEADER)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: header length %llu exceeds the limit of %llu bytes",
                       (unsigned long long)n, WL_ST_MAX_HEADER);
    if (8 + n > (uint64_t)len)
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: header length %llu needs %llu bytes but only %zu are there",
                       (unsigned long long)n, (unsigned long long)(8 + n), len);
    if (n == 0 || buf[8] != '{')
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: the header does not start with '{'");
    *header_len = n;
    return WL_OK;
}

/* What a parsed header holds, counted before anything is allocated. */
typedef struct header_counts {
    const wl_json *meta; /* the __metadata__ member, or NULL */
    size_t n_tensors, n_meta;
    size_t chars; /* bytes of every tensor name and metadata key and value, with their NULs */
} header_counts;

/* Count the tensors, the metadata entries and the bytes of their strings, checking that metadata values are
 * strings and that no name, key or value holds a NUL. */
static wl_status count_header(const wl_json *root, header_counts *counts) {
    *counts = (header_counts){0};
    for (size_t i = 0; i < root->n; i++) {
        const wl_json *m = &root->items[i];
        if (wl_json_str_eq(m->key, m->key_len, "__metadata__")) {
            counts->meta = m;
            if (m->type != WL_JSON_OBJECT)
                return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: __metadata__ must be an object of strings, got %s",
                               wl_json_type_name(m->type));
            counts->n_meta = m->n;
            for (size_t j = 0; j < m->n; j++) {
                const wl_json *kv = &m->items[j];
                if (kv->type != WL_JSON_STRING)
                    return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: __metadata__ value of \"%.64s\" must be a string, got %s",
                                   kv->key, wl_json_type_name(kv->type));
                if (has_nul(kv->key, kv->key_len) || has_nul(kv->str, kv->str_len))
                    return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: __metadata__ entry \"%.64s\" contains a NUL character",
                                   kv->key);
                counts->chars += kv->key_len + kv->str_len + 2;
            }
        } else {
            if (has_nul(m->key, m->key_len))
                return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor name \"%.64s\" contains a NUL character", m->key);
            counts->n_tensors++;
            counts->chars += m->key_len + 1;
        }
    }
    return WL_OK;
}

/* The result as one allocation freed by one wl_free: the struct, the tensors, the metadata pointers, then every
 * string; each tensor entry is parsed into it. *out is set as soon as the block exists, for the caller to free
 * when a later step fails. */
static wl_status build_header(const wl_json *root, const header_counts *counts, uint64_t header_len, wl_safetensors **out) {
    /* Header bytes bound every count and length (n <= 10^8), so none of these sums can overflow. */
    size_t n_tensors = counts->n_tensors, n_meta = counts->n_meta;
    size_t off_tensors = align8(sizeof(wl_safetensors));
    size_t off_keys = off_tensors + align8(n_tensors * sizeof(wl_st_tensor));
    size_t off_values = off_keys + align8(n_meta * sizeof(char *));
    size_t off_chars = off_values + align8(n_meta * sizeof(char *));
    wl_safetensors *st = wl_alloc(off_chars + counts->chars, "safetensors header");
    if (!st) return WL_STATUS_OUT_OF_MEMORY;
    *out = st;
    uint8_t *base = (uint8_t *)st;
    st->header_size = header_len;
    st->data_start = 8 + header_len;
    st->n_tensors = (int)n_tensors;
    st->tensors = n_tensors ? (wl_st_tensor *)(void *)(base + off_tensors) : NULL;
    st->n_metadata = (int)n_meta;
    st->metadata_keys = n_meta ? (char **)(void *)(base + off_keys) : NULL;
    st->metadata_values = n_meta ? (char **)(void *)(base + off_values) : NULL;
    char *c = (char *)(base + off_chars);
    const wl_json *meta = counts->meta;
    if (meta) {
        for (size_t j = 0; j < n_meta; j++) {
            const wl_json *kv = &meta->items[j];
            st->metadata_keys[j] = c;
            memcpy(c, kv->key, kv->key_len + 1);
            c += kv->key_len + 1;
            st->metadata_values[j] = c;
            memcpy(c, kv->str, kv->str_len + 1);
            c += kv->str_len + 1;
        }
    }
    size_t t = 0;
    for (size_t i = 0; i < root->n; i++) {
        const wl_json *m = &root->items[i];
        if (m == meta) continue;
        wl_st_tensor *tensor = &st->tensors[t++];
        tensor->name = c;
        memcpy(c, m->key, m->key_len + 1);
        c += m->key_len + 1;
        wl_status status = parse_entry(m, tensor->name, tensor);
        if (status != WL_OK) return status;
    }
    return WL_OK;
}

/* The tensors must tile the data exactly, and the data must end where the file does. */
static wl_status check_data_size(wl_safetensors *st, uint64_t file_size) {
    uint64_t data_len = 0;
    wl_status status = check_tiling(st, &data_len);
    if (status != WL_OK) return status;
    /* data_len <= INT64_MAX (offsets are int64), so the sum cannot wrap. */
    st->file_size = 8 + st->header_size + data_len;
    if (st->file_size != file_size)
        return wl_fail(WL_STATUS_BAD_FORMAT,
                       "safetensors: the file is %llu bytes but the header implies %llu (8 + header %llu + data %llu)",
                       (unsigned long long)file_size, (unsigned long long)st->file_size,
                       (unsigned long long)st->header_size, (unsigned long long)data_len);
    return WL_OK;
}

static wl_status parse_impl(const uint8_t *buf, size_t len, uint64_t file_size, wl_safetensors **out) {
    if (!out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "safetensors: out is NULL");
    *out = NULL;
    uint64_t n = 0;
    wl_status status = check_header_length(buf, len, file_size, &n);
    if (status != WL_OK) return status;

    wl_json_doc *doc = NULL;
    status = wl_json_parse((const char *)buf + 8, (size_t)n, &doc);
    if (status != WL_OK) {
        char why[400];
        snprintf(why, sizeof why, "%s", wl_last_error());
        return wl_fail(status, "safetensors header: %s", why);
    }
    const wl_json *root = wl_json_root(doc);
    /* A header that starts with '{' and parsed completely is an object. */
    WL_ASSERT(root->type == WL_JSON_OBJECT);

    header_counts counts;
    wl_safetensors *st = NULL;
    status = count_header(root, &counts);
    if (status == WL_OK) status = build_header(root, &counts, n, &st);
    wl_json_free(doc);
    if (status == WL_OK) status = check_data_size(st, file_size);
    if (status != WL_OK) {
        wl_free(st);
        return status;
    }
    *out = st;
    return WL_OK;
}

wl_status wl_st_parse(const uint8_t *buf, size_t len, wl_safetensors **out) {
    return parse_impl(buf, len, (uint64_t)len, out);
}

wl_status wl_st_parse_header(const uint8_t *buf, size_t len, uint64_t file_size, wl_safetensors **out) {
    return parse_impl(buf, len, file_size, out);
}

void wl_st_free(wl_safetensors *st) { wl_free(st); }

int wl_st_find(const wl_safetensors *st, const char *name) {
    if (!st || !name) return -1;
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return i;
    return -1;
}

const char *wl_st_metadata(const wl_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_metadata; i++)
        if (strcmp(st->metadata_keys[i], key) == 0) return st->metadata_values[i];
    return NULL;
}
