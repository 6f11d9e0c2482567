/* test_io_safetensors.c: the safetensors parser on the real files in ../shared (models and PEFT adapters),
 * header-only parsing, a file of every shape with escaped names and metadata, and one hostile input for every
 * validation rule. (Files are written by web/formats/safetensors.js, tested in tests/js/peft.test.js.) */
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "st_fixture.h"
#include "testutil.h"
#include "wl_io.h"

/* ---- helpers ---- */

/* A file from header text and data_len bytes of data (byte i = i & 0xff). Caller frees. */
static uint8_t *make_file_n(const char *header, size_t n, size_t data_len, size_t *len) {
    *len = 8 + n + data_len;
    uint8_t *buf = malloc(*len ? *len : 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i < data_len; i++) buf[8 + n + i] = (uint8_t)i;
    return buf;
}

static uint8_t *make_file(const char *header, size_t data_len, size_t *len) {
    return make_file_n(header, strlen(header), data_len, len);
}

/* Parse must fail with `want` and a message containing `needle` (if given). */
static void expect_fail(const char *header, size_t data_len, wl_status want, const char *needle, const char *why) {
    size_t len;
    uint8_t *buf = make_file(header, data_len, &len);
    wl_safetensors *st = (wl_safetensors *)1;
    wl_clear_error();
    wl_status got = wl_st_parse(buf, len, &st);
    CHECK_MSG(got == want && wl_last_error()[0] && st == NULL, "%s: status %d (want %d), message \"%s\"", why, (int)got,
              (int)want, wl_last_error());
    if (needle) CHECK_MSG(strstr(wl_last_error(), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", why, wl_last_error(), needle);
    if (got == WL_OK) wl_st_free(st);
    free(buf);
}

static wl_safetensors *expect_ok(const char *header, size_t data_len, const char *why) {
    size_t len;
    uint8_t *buf = make_file(header, data_len, &len);
    wl_safetensors *st = NULL;
    wl_status got = wl_st_parse(buf, len, &st);
    CHECK_MSG(got == WL_OK, "%s: %s", why, wl_last_error());
    free(buf);
    return st;
}

static int shape_is(const wl_st_tensor *t, int ndim, int64_t a, int64_t b) {
    if (t->ndim != ndim) return 0;
    if (ndim >= 1 && t->shape[0] != a) return 0;
    if (ndim >= 2 && t->shape[1] != b) return 0;
    return 1;
}

static float tensor_value(const uint8_t *buf, const wl_safetensors *st, int index, uint64_t i) {
    float v = 0;
    const wl_st_tensor *t = &st->tensors[index];
    wl_convert_to_f32(&v, buf + st->data_start + t->begin + i * wl_dtype_size(t->dtype), t->dtype, 1);
    return v;
}

/* ---- real files ---- */

static void test_real_models(void) {
    size_t len;
    uint8_t *buf = wl_test_read_file(wl_shared_path("models/tiny-random-llama/model.safetensors"), &len);
    CHECK_MSG(buf != NULL, "missing %s", wl_shared_path("models/tiny-random-llama/model.safetensors"));
    if (buf) {
        wl_safetensors *st = NULL;
        CHECK_OK(wl_st_parse(buf, len, &st));
        if (st) {
            CHECK(st->n_tensors == 21);
            CHECK(st->header_size == 2184 && st->data_start == 2192 && st->file_size == 4131280 && len == 4131280);
            CHECK(st->n_metadata == 1 && wl_st_metadata(st, "format") && strcmp(wl_st_metadata(st, "format"), "pt") == 0);
            CHECK(wl_st_metadata(st, "nope") == NULL);
            int head = wl_st_find(st, "lm_head.weight"), norm = wl_st_find(st, "model.norm.weight");
            int q = wl_st_find(st, "model.layers.1.self_attn.q_proj.weight");
            int down = wl_st_find(st, "model.layers.0.mlp.down_proj.weight");
            CHECK(head >= 0 && norm >= 0 && q >= 0 && down >= 0);
            CHECK(wl_st_find(st, "model.layers.2.self_attn.q_proj.weight") == -1 && wl_st_find(st, "") == -1);
            if (head >= 0 && norm >= 0 && q >= 0 && down >= 0) {
                const wl_st_tensor *t = &st->tensors[head];
                CHECK(t->dtype == WL_DTYPE_F32 && shape_is(t, 2, 32000, 16) && t->numel == 512000);
                CHECK(t->begin == 0 && t->end == 2048000);
                CHECK(shape_is(&st->tensors[norm], 1, 16, 0));
                CHECK(shape_is(&st->tensors[q], 2, 16, 16));
                CHECK(shape_is(&st->tensors[down], 2, 16, 64));
                CHECK(tensor_value(buf, st, norm, 0) == 1.0f);
                CHECK(tensor_value(buf, st, head, 0) == -0.000732421875f);
                CHECK(tensor_value(buf, st, head, 1) == 0.022186279296875f);
                CHECK(tensor_value(buf, st, head, 511999) == 0.025634765625f);
            }
            /* Header-only: the first 8 + N bytes and the true file size are enough. */
            wl_safetensors *hdr = NULL;
            CHECK_OK(wl_st_parse_header(buf, (size_t)st->data_start, len, &hdr));
            if (hdr) CHECK(hdr->n_tensors == 21 && hdr->file_size == len);
            wl_st_free(hdr);
            CHECK_OK(wl_st_parse_header(buf, 70000, len, &hdr)); /* more than the header is fine */
            wl_st_free(hdr);
            CHECK_STATUS(wl_st_parse_header(buf, (size_t)st->data_start, len - 1, &hdr), WL_STATUS_BAD_FORMAT);
            CHECK_STATUS(wl_st_parse_header(buf, (size_t)st->data_start, len + 4, &hdr), WL_STATUS_BAD_FORMAT);
            CHECK_STATUS(wl_st_parse_header(buf, (size_t)st->data_start - 1, len, &hdr), WL_STATUS_BAD_FORMAT);
            CHECK_STATUS(wl_st_parse_header(buf, 100, 50, &hdr), WL_STATUS_INVALID_ARGUMENT);
            /* Truncated or extended by one byte, the whole-file parse refuses. */
            CHECK_STATUS(wl_st_parse(buf, len - 1, &hdr), WL_STATUS_BAD_FORMAT);
            CHECK(strstr(wl_last_error(), "4131279") != NULL);
        }
        wl_st_free(st);
        free(buf);
    }

    buf = wl_test_read_file(wl_shared_path("models/tiny-gpt2/model.safetensors"), &len);
    CHECK_MSG(buf != NULL, "missing tiny-gpt2");
    if (buf) {
        wl_safetensors *st = NULL;
        CHECK_OK(wl_st_parse(buf, len, &st));
        if (st) {
            CHECK(st->n_tensors == 28 && st->file_size == 413296);
            int wte = wl_st_find(st, "transformer.wte.weight"), wpe = wl_st_find(st, "transformer.wpe.weight");
            int attn = wl_st_find(st, "transformer.h.0.attn.c_attn.weight");
            int proj = wl_st_find(st, "transformer.h.1.mlp.c_proj.weight");
            CHECK(wte >= 0 && wpe >= 0 && attn >= 0 && proj >= 0);
            CHECK(wl_st_find(st, "lm_head.weight") == -1);
            if (wte >= 0 && wpe >= 0 && attn >= 0 && proj >= 0) {
                CHECK(shape_is(&st->tensors[wte], 2, 50257, 2));
                CHECK(shape_is(&st->tensors[wpe], 2, 1024, 2));
                CHECK(shape_is(&st->tensors[attn], 2, 2, 6)); /* Conv1D: (in, out) */
                CHECK(shape_is(&st->tensors[proj], 2, 8, 2));
                CHECK(tensor_value(buf, st, wte, 0) == 0.003458114806562662f);
                CHECK(tensor_value(buf, st, wte, 100513) == -0.018208039924502373f);
                CHECK(tensor_value(buf, st, proj, 1) == -0.03281345218420029f);
            }
        }
        wl_st_free(st);
        free(buf);
    }
}

static void test_real_adapters(void) {
    static const struct {
        const char *path;
        int n_tensors, n_layers;
    } files[] = {
        {"adapters/gpt2-lora-r8-causallm/adapter_model.safetensors", 72, 12},
        {"adapters/gpt2-lora-r8-seqcls/adapter_model.safetensors", 25, 12},
        {"adapters/smollm-135m-lora-r16/adapter_model.safetensors", 120, 30},
    };
    for (int f = 0; f < 3; f++) {
        size_t len;
        uint8_t *buf = wl_test_read_file(wl_shared_path(files[f].path), &len);
        CHECK_MSG(buf != NULL, "missing %s", files[f].path);
        if (!buf) continue;
        wl_safetensors *st = NULL;
        CHECK_OK(wl_st_parse(buf, len, &st));
        if (!st) {
            free(buf);
            continue;
        }
        CHECK_MSG(st->n_tensors == files[f].n_tensors, "%s: %d tensors", files[f].path, st->n_tensors);
        CHECK(wl_st_metadata(st, "format") && strcmp(wl_st_metadata(st, "format"), "pt") == 0);
        int bad = 0;
        char name[160];
        for (int l = 0; l < files[f].n_layers; l++) {
            if (f == 0 || f == 1) {
                snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_attn.lora_A.weight", l);
                int a = wl_st_find(st, name);
                snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_attn.lora_B.weight", l);
                int b = wl_st_find(st, name);
                if (a < 0 || b < 0 || !shape_is(&st->tensors[a], 2, 8, 768) || !shape_is(&st->tensors[b], 2, 2304, 8)) bad++;
            }
            if (f == 0) {
                snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_proj.lora_B.weight", l);
                int b = wl_st_find(st, name);
                snprintf(name, sizeof name, "base_model.model.transformer.h.%d.mlp.c_proj.lora_A.weight", l);
                int a = wl_st_find(st, name);
                if (a < 0 || b < 0 || !shape_is(&st->tensors[a], 2, 8, 3072) || !shape_is(&st->tensors[b], 2, 768, 8)) bad++;
            }
            if (f == 2) {
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.q_proj.lora_A.weight", l);
                int qa = wl_st_find(st, name);
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.q_proj.lora_B.weight", l);
                int qb = wl_st_find(st, name);
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.v_proj.lora_A.weight", l);
                int va = wl_st_find(st, name);
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.v_proj.lora_B.weight", l);
                int vb = wl_st_find(st, name);
                if (qa < 0 || qb < 0 || va < 0 || vb < 0 || !shape_is(&st->tensors[qa], 2, 16, 576) ||
                    !shape_is(&st->tensors[qb], 2, 576, 16) || !shape_is(&st->tensors[va], 2, 16, 576) ||
                    !shape_is(&st->tensors[vb], 2, 192, 16))
                    bad++;
            }
        }
        CHECK_MSG(bad == 0, "%s: %d layers with missing or misshapen LoRA tensors", files[f].path, bad);
        if (f == 1) {
            int score = wl_st_find(st, "base_model.model.score.weight");
            CHECK(score >= 0 && shape_is(&st->tensors[score], 2, 6, 768));
        }
        if (f == 2) {
            int vb = wl_st_find(st, "base_model.model.model.layers.29.self_attn.v_proj.lora_B.weight");
            if (vb >= 0) {
                CHECK(tensor_value(buf, st, vb, 0) == -0.14623518288135529f);
                CHECK(tensor_value(buf, st, vb, 192 * 16 - 1) == -0.007097513880580664f);
            }
        }
        for (int i = 0; i < st->n_tensors; i++) CHECK(st->tensors[i].dtype == WL_DTYPE_F32);
        wl_st_free(st);
        free(buf);
    }
}

/* ---- a valid file of every shape, escaped names and metadata ---- */

static void test_parse_round_trip(void) {
    float a[12], b[5], s[1] = {42.5f};
    wl_test_fill(a, 12, 1, 3.0f);
    wl_test_fill(b, 5, 2, 1.0f);
    /* Names as they stand in the header (JSON-escaped) and as the parser must give them back. */
    const wl_test_tensor t[5] = {
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", a, 2, {3, 4}},
        {"b \\\"quoted\\\" \\\\ \\u00e9\\n", b, 1, {5}},
        {"scalar", s, 0, {0}},
        {"empty", NULL, 2, {0, 7}},
        {"cube", a, 3, {2, 3, 2}},
    };
    const char *names[5] = {t[0].name, "b \"quoted\" \\ \xc3\xa9\n", "scalar", "empty", "cube"};
    size_t len = 0;
    uint8_t *file = wl_test_safetensors(t, 5, "\"format\":\"pt\",\"note\":\"line1\\nline2 \\\"q\\\" \\u20ac\"", &len);
    CHECK(file != NULL);
    if (!file) return;
    wl_safetensors *st = NULL;
    CHECK_OK(wl_st_parse(file, len, &st));
    if (st) {
        CHECK(st->n_tensors == 5 && st->n_metadata == 2);
        CHECK(strcmp(wl_st_metadata(st, "format"), "pt") == 0);
        CHECK(strcmp(wl_st_metadata(st, "note"), "line1\nline2 \"q\" \xe2\x82\xac") == 0);
        for (int i = 0; i < 5; i++) {
            const wl_st_tensor *got = &st->tensors[i];
            CHECK_MSG(strcmp(got->name, names[i]) == 0, "name %d: %s", i, got->name);
            CHECK(got->dtype == WL_DTYPE_F32 && got->ndim == t[i].ndim);
            uint64_t numel = 1;
            for (int d = 0; d < got->ndim; d++) {
                CHECK(got->shape[d] == t[i].shape[d]);
                numel *= (uint64_t)t[i].shape[d];
            }
            CHECK(got->numel == numel);
            float values[12];
            if (numel) {
                CHECK_OK(wl_convert_to_f32(values, file + st->data_start + got->begin, WL_DTYPE_F32, (size_t)numel));
                CHECK(memcmp(values, t[i].data, (size_t)numel * 4) == 0);
            }
        }
        CHECK(wl_st_find(st, "scalar") == 2 && st->tensors[2].numel == 1);
    }
    wl_st_free(st);
    free(file);
}

/* ---- hostile inputs, one per rule ---- */

#define T1(name, dtype, shape, offs) "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static void test_length_rules(void) {
    /* Shorter than the length field. */
    uint8_t small[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    for (size_t n = 0; n < 8; n++) CHECK_STATUS(wl_st_parse(small, n, &(wl_safetensors *){NULL}), WL_STATUS_BAD_FORMAT);
    wl_safetensors *st = NULL;
    CHECK_STATUS(wl_st_parse(NULL, 0, &st), WL_STATUS_BAD_FORMAT);
    CHECK_STATUS(wl_st_parse(NULL, 10, &st), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_st_parse(small, 8, NULL), WL_STATUS_INVALID_ARGUMENT);

    /* Hostile header lengths. */
    uint8_t buf[64];
    memset(buf, ' ', sizeof buf);
    const uint64_t lengths[] = {100000001ull, 1ull << 32, 1ull << 63, UINT64_MAX, 100000000ull, 57, 1000};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        for (int b = 0; b < 8; b++) buf[b] = (uint8_t)(lengths[i] >> (8 * b));
        CHECK_STATUS(wl_st_parse(buf, sizeof buf, &st), WL_STATUS_BAD_FORMAT);
        if (lengths[i] > 100000000ull) CHECK(strstr(wl_last_error(), "limit") != NULL);
        CHECK_STATUS(wl_st_parse_header(buf, sizeof buf, UINT64_MAX, &st), WL_STATUS_BAD_FORMAT);
    }
    /* Header length 0 and one that cuts the JSON short. */
    memset(buf, 0, 8);
    CHECK_STATUS(wl_st_parse(buf, 8, &st), WL_STATUS_BAD_FORMAT);
    expect_fail("{\"a\":", 0, WL_STATUS_BAD_FORMAT, "JSON", "header cut short");
}

static void test_header_rules(void) {
    expect_fail(" {}", 0, WL_STATUS_BAD_FORMAT, "'{'", "leading space");
    expect_fail("[]", 0, WL_STATUS_BAD_FORMAT, "'{'", "array header");
    expect_fail("{}x", 0, WL_STATUS_BAD_FORMAT, "JSON", "trailing garbage");
    {
        size_t len;
        uint8_t *buf = make_file_n("{}\0\0\0\0\0\0", 8, 0, &len);
        wl_safetensors *st = NULL;
        CHECK_STATUS(wl_st_parse(buf, len, &st), WL_STATUS_BAD_FORMAT); /* NUL padding is not whitespace */
        free(buf);
    }
    expect_fail("{\"a\xff\":{}}", 0, WL_STATUS_BAD_FORMAT, "UTF-8", "invalid UTF-8 in a name");
    wl_safetensors *st = expect_ok("{}      ", 0, "space padding");
    wl_st_free(st);
    st = expect_ok("{}\n\t \r", 0, "whitespace padding");
    wl_st_free(st);
    /* Duplicate names. */
    expect_fail("{" T1("w", "F32", "[1]", "[0,4]") "," T1("w", "F32", "[1]", "[4,8]") "}", 8, WL_STATUS_BAD_FORMAT,
                "duplicate key \"w\"", "duplicate tensor");
    /* __metadata__ */
    expect_fail("{\"__metadata__\":[]}", 0, WL_STATUS_BAD_FORMAT, "__metadata__", "metadata array");
    expect_fail("{\"__metadata__\":\"pt\"}", 0, WL_STATUS_BAD_FORMAT, "__metadata__", "metadata string");
    expect_fail("{\"__metadata__\":{\"format\":1}}", 0, WL_STATUS_BAD_FORMAT, "format", "metadata number value");
    expect_fail("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0, WL_STATUS_BAD_FORMAT, "\"a\"", "nested metadata");
    expect_fail("{\"__metadata__\":{\"a\":\"x\\u0000y\"}}", 0, WL_STATUS_BAD_FORMAT, "NUL", "NUL in metadata");
    expect_fail("{\"__metadata__\":{\"a\":\"b\"},\"__metadata__\":{}}", 0, WL_STATUS_BAD_FORMAT, "duplicate",
                "two metadata objects");
    st = expect_ok("{\"__metadata__\":{}}", 0, "empty metadata");
    if (st) CHECK(st->n_metadata == 0 && st->n_tensors == 0);
    wl_st_free(st);
    /* Tensor entries. */
    expect_fail("{\"w\":[]}", 0, WL_STATUS_BAD_FORMAT, "\"w\"", "entry not an object");
    expect_fail("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, WL_STATUS_BAD_FORMAT, "dtype", "missing dtype");
    expect_fail("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, WL_STATUS_BAD_FORMAT, "shape", "missing shape");
    expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, WL_STATUS_BAD_FORMAT, "data_offsets", "missing offsets");
    expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4, WL_STATUS_BAD_FORMAT,
                "extra", "extra field");
    expect_fail("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"dtype\":\"F32\"}}", 4,
                WL_STATUS_BAD_FORMAT, "duplicate", "repeated field");
    expect_fail("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, WL_STATUS_BAD_FORMAT,
                "NUL", "NUL in a tensor name");
}

static void test_entry_rules(void) {
    /* dtype */
    expect_fail("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, WL_STATUS_BAD_FORMAT, "dtype",
                "numeric dtype");
    expect_fail("{" T1("w", "F4", "[2]", "[0,1]") "}", 1, WL_STATUS_UNSUPPORTED, "F4", "newer dtype F4");
    expect_fail("{" T1("w", "F8_E8M0", "[1]", "[0,1]") "}", 1, WL_STATUS_UNSUPPORTED, "F8_E8M0", "dtype F8_E8M0");
    expect_fail("{" T1("w", "f32", "[1]", "[0,4]") "}", 4, WL_STATUS_UNSUPPORTED, "f32", "lowercase dtype");
    /* shape */
    expect_fail("{" T1("w", "F32", "{}", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT, "shape", "shape object");
    expect_fail("{" T1("w", "F32", "[-1]", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT, "shape[0]", "negative dim");
    expect_fail("{" T1("w", "F32", "[1.5]", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT, "1.5", "fractional dim");
    expect_fail("{" T1("w", "F32", "[1e0]", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT, "shape[0]", "exponent dim");
    expect_fail("{" T1("w", "F32", "[1,\"2\"]", "[0,8]") "}", 8, WL_STATUS_BAD_FORMAT, "shape[1]", "string dim");
    expect_fail("{" T1("w", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, WL_STATUS_UNSUPPORTED, "9 dimensions",
                "nine dims");
    expect_fail("{" T1("w", "U8", "[4294967296,4294967296]", "[0,0]") "}", 0, WL_STATUS_BAD_FORMAT, "2^64",
                "element count overflow");
    expect_fail("{" T1("w", "U8", "[4294967296,4294967296,0]", "[0,0]") "}", 0, WL_STATUS_BAD_FORMAT, "2^64",
                "overflow before a zero dim");
    expect_fail("{" T1("w", "F64", "[4611686018427387904]", "[0,0]") "}", 0, WL_STATUS_BAD_FORMAT, "overflows",
                "byte size overflow");
    expect_fail("{" T1("w", "F32", "[9223372036854775808]", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT, "shape[0]",
                "dim beyond int64");
    expect_fail("{" T1("w", "F32", "[1000000,1000000]", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT, "needs 4000000000000",
                "shape larger than its bytes");
    /* data_offsets */
    expect_fail("{" T1("w", "F32", "[1]", "4") "}", 4, WL_STATUS_BAD_FORMAT, "data_offsets", "offsets scalar");
    expect_fail("{" T1("w", "F32", "[1]", "[0]") "}", 4, WL_STATUS_BAD_FORMAT, "data_offsets", "one offset");
    expect_fail("{" T1("w", "F32", "[1]", "[0,4,8]") "}", 4, WL_STATUS_BAD_FORMAT, "data_offsets", "three offsets");
    expect_fail("{" T1("w", "F32", "[1]", "[-4,0]") "}", 4, WL_STATUS_BAD_FORMAT, "non-negative", "negative offset");
    expect_fail("{" T1("w", "F32", "[1]", "[0,4.0]") "}", 4, WL_STATUS_BAD_FORMAT, "non-negative", "float offset");
    expect_fail("{" T1("w", "F32", "[1]", "[0,18446744073709551616]") "}", 4, WL_STATUS_BAD_FORMAT, "data_offsets",
                "offset beyond 2^64");
    expect_fail("{" T1("w", "F32", "[0]", "[4,0]") "}", 0, WL_STATUS_BAD_FORMAT, "end before", "end before begin");
    expect_fail("{" T1("w", "F32", "[2]", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT, "span 4 bytes", "too few bytes");
    expect_fail("{" T1("w", "F16", "[2]", "[0,8]") "}", 8, WL_STATUS_BAD_FORMAT, "needs 4", "too many bytes");
}

static void test_layout_rules(void) {
    expect_fail("{" T1("w", "F32", "[1]", "[4,8]") "}", 8, WL_STATUS_BAD_FORMAT, "[0, 4)", "first tensor not at 0");
    expect_fail("{" T1("a", "F32", "[1]", "[0,4]") "," T1("b", "F32", "[1]", "[8,12]") "}", 12, WL_STATUS_BAD_FORMAT,
                "hole before tensor \"b\"", "hole between tensors");
    expect_fail("{" T1("a", "F32", "[2]", "[0,8]") "," T1("b", "F32", "[1]", "[4,8]") "}", 8, WL_STATUS_BAD_FORMAT,
                "overlaps", "overlap");
    expect_fail("{" T1("a", "F32", "[1]", "[0,4]") "," T1("b", "F32", "[1]", "[0,4]") "}", 4, WL_STATUS_BAD_FORMAT,
                "overlaps", "same range twice");
    expect_fail("{" T1("a", "F32", "[1]", "[0,4]") "}", 5, WL_STATUS_BAD_FORMAT, "implies", "trailing byte");
    expect_fail("{" T1("a", "F32", "[1]", "[0,4]") "}", 3, WL_STATUS_BAD_FORMAT, "implies", "missing byte");
    expect_fail("{}", 1, WL_STATUS_BAD_FORMAT, "implies", "data without tensors");
    expect_fail("{" T1("a", "F32", "[1]", "[0,4]") "," T1("b", "F32", "[1]", "[9223372036854775803,9223372036854775807]") "}",
                4, WL_STATUS_BAD_FORMAT, "hole", "far offsets");

    /* Accepted layouts: any header order, zero-size tensors (also sharing an offset), scalars. */
    wl_safetensors *st = expect_ok("{" T1("late", "BF16", "[3]", "[8,14]") "," T1("z", "F32", "[0,5]", "[8,8]") ","
                                   T1("first", "F64", "[]", "[0,8]") "," T1("z2", "I8", "[0]", "[14,14]") ","
                                   T1("last", "BOOL", "[2]", "[14,16]") "}",
                                   16, "out-of-order header with empty tensors");
    if (st) {
        CHECK(st->n_tensors == 5 && st->file_size == 8 + st->header_size + 16);
        CHECK(strcmp(st->tensors[0].name, "late") == 0); /* header order is kept */
        int first = wl_st_find(st, "first");
        CHECK(first == 2 && st->tensors[first].ndim == 0 && st->tensors[first].numel == 1);
        CHECK(st->tensors[1].numel == 0 && st->tensors[1].ndim == 2);
    }
    wl_st_free(st);

    /* Many tensors: every one is found. */
    enum { N = 3000 };
    char *hdr = malloc(N * 80 + 16);
    size_t o = (size_t)sprintf(hdr, "{");
    for (int i = 0; i < N; i++)
        o += (size_t)sprintf(hdr + o, "%s\"t.%d\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}", i ? "," : "",
                             N - 1 - i, N - 1 - i, N - i);
    sprintf(hdr + o, "}");
    st = expect_ok(hdr, N, "3000 tensors in reverse offset order");
    if (st) {
        int bad = 0;
        char name[32];
        for (int i = 0; i < N; i++) {
            snprintf(name, sizeof name, "t.%d", i);
            int k = wl_st_find(st, name);
            if (k < 0 || st->tensors[k].begin != (uint64_t)i) bad++;
        }
        CHECK(bad == 0);
    }
    wl_st_free(st);
    free(hdr);
    CHECK(wl_st_find(NULL, "x") == -1 && wl_st_metadata(NULL, "x") == NULL);
    wl_st_free(NULL);
}

int main(void) {
    test_real_models();
    test_real_adapters();
    test_parse_round_trip();
    test_length_rules();
    test_header_rules();
    test_entry_rules();
    test_layout_rules();
    return wl_test_summary("test_io_safetensors");
}
