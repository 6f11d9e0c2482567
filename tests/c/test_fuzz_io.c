/* test_fuzz_io.c: a deterministic mutation fuzzer for the parsers over untrusted bytes (safetensors, JSON,
 * config.json, llama2.c, and filling a model from a parsed file). Small valid seeds are truncated at every
 * length, have every byte replaced by hostile values, get hostile header lengths and header tokens, and then
 * random stacked mutations from a fixed seed. Under the ASan+UBSan build this proves no crash, hang or
 * out-of-bounds access; in every build it checks that a failure always carries a message and that whatever
 * is accepted really satisfies the format's invariants. */
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "io/json.h"
#include "st_fixture.h"
#include "testutil.h"
#include "wl_io.h"

/* ---- deterministic randomness ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* ---- oracles ---- */

static long n_runs, n_accepted;
static wl_model *g_llama, *g_gpt2; /* small models that accepted files are poured into */

/* A status must be WL_OK or carry a message. */
static void check_status(wl_status st, const char *what) {
    if (st != WL_OK && wl_last_error()[0] == '\0') {
        wl_test_failures++;
        fprintf(stderr, "FAIL %s: status %d without a message\n", what, (int)st);
    }
}

/* Everything an accepted safetensors file promises, checked by touching every byte it points at. */
static void check_accepted_st(const wl_safetensors *st, const uint8_t *buf, size_t len, int whole) {
    int bad = 0;
    if (st->data_start != 8 + st->header_size) bad = 1;
    if (whole && st->file_size != len) bad = 2;
    uint64_t total = 0;
    for (int i = 0; i < st->n_tensors && !bad; i++) {
        const wl_st_tensor *t = &st->tensors[i];
        size_t esize = wl_dtype_size(t->dtype);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
        if (!esize || t->ndim < 0 || t->ndim > WL_ST_MAX_DIMS || numel != t->numel) bad = 3;
        else if (t->end < t->begin || t->end - t->begin != numel * esize) bad = 4;
        else if (st->data_start + t->end > st->file_size) bad = 5;
        else if (wl_st_find(st, t->name) != i) bad = 6;
        total += t->end - t->begin;
        if (bad || !whole) continue;
        /* Read the tensor's bytes: ASan reports any read outside the buffer. */
        const uint8_t *p = buf + st->data_start + t->begin;
        float tmp[64];
        for (uint64_t k = 0; k < numel; k += 64) {
            size_t n = numel - k < 64 ? (size_t)(numel - k) : 64;
            if (t->dtype == WL_DTYPE_F32 || t->dtype == WL_DTYPE_F16 || t->dtype == WL_DTYPE_BF16 || t->dtype == WL_DTYPE_F64)
                wl_convert_to_f32(tmp, p + k * esize, t->dtype, n);
            else
                memcpy(tmp, p + k * esize, n * esize > sizeof tmp ? sizeof tmp : n * esize);
        }
    }
    if (!bad && total != st->file_size - st->data_start) bad = 7; /* tiled exactly */
    for (int i = 0; i < st->n_metadata && !bad; i++)
        if (wl_st_metadata(st, st->metadata_keys[i]) != st->metadata_values[i]) bad = 8;
    if (bad) {
        wl_test_failures++;
        fprintf(stderr, "FAIL accepted safetensors breaks invariant %d\n", bad);
    }
}

static void run_st(const uint8_t *buf, size_t len) {
    wl_safetensors *st = NULL;
    wl_clear_error();
    wl_status s = wl_st_parse(buf, len, &st);
    n_runs++;
    check_status(s, "wl_st_parse");
    if (s == WL_OK) {
        n_accepted++;
        check_accepted_st(st, buf, len, 1);
        /* Pour it into the small models: any status is fine, a crash is not. */
        wl_model *models[2] = {g_llama, g_gpt2};
        for (int m = 0; m < 2; m++) {
            if (!models[m]) continue;
            uint8_t seen[256] = {0};
            wl_clear_error();
            check_status(wl_model_fill_from_safetensors(models[m], st, buf, len, seen), "fill");
        }
    }
    wl_st_free(st);
    /* The same bytes as a header-only prefix of a longer file. */
    st = NULL;
    wl_clear_error();
    s = wl_st_parse_header(buf, len, (uint64_t)len + 16, &st);
    check_status(s, "wl_st_parse_header");
    if (s == WL_OK) {
        check_accepted_st(st, buf, len, 0);
        if (len >= 8 && st->data_start > len) {
            wl_test_failures++;
            fprintf(stderr, "FAIL header-only parse accepted a header beyond the buffer\n");
        }
    }
    wl_st_free(st);
}

/* Walk a parsed JSON tree checking its shape. */
static int check_tree(const wl_json *v, int depth) {
    if (depth > WL_JSON_MAX_DEPTH + 1) return 0;
    switch (v->type) {
    case WL_JSON_STRING:
        if (!v->str || v->str[v->str_len] != '\0') return 0;
        return 1;
    case WL_JSON_ARRAY:
    case WL_JSON_OBJECT:
        if (v->n && !v->items) return 0;
        for (size_t i = 0; i < v->n; i++) {
            const wl_json *c = &v->items[i];
            if ((v->type == WL_JSON_OBJECT) != (c->key != NULL)) return 0;
            if (c->key && c->key[c->key_len] != '\0') return 0;
            if (!check_tree(c, depth + 1)) return 0;
        }
        return 1;
    case WL_JSON_NUMBER: return v->number == v->number; /* never NaN */
    default: return 1;
    }
}

static void run_json(const uint8_t *text, size_t len) {
    wl_json_doc *doc = NULL;
    wl_clear_error();
    wl_status s = wl_json_parse((const char *)text, len, &doc);
    n_runs++;
    check_status(s, "wl_json_parse");
    if (s == WL_OK) {
        n_accepted++;
        if (!check_tree(wl_json_root(doc), 0)) {
            wl_test_failures++;
            fprintf(stderr, "FAIL accepted JSON has a malformed tree\n");
        }
    }
    wl_json_free(doc);
    wl_config c;
    wl_clear_error();
    s = wl_config_from_hf_json((const char *)text, len, &c);
    check_status(s, "wl_config_from_hf_json");
    if (s == WL_OK) {
        wl_clear_error();
        if (wl_config_validate(&c) != WL_OK) {
            wl_test_failures++;
            fprintf(stderr, "FAIL accepted config.json gives an invalid config: %s\n", wl_last_error());
        }
    }
}

static void run_l2c(const uint8_t *buf, size_t len) {
    wl_config c;
    wl_clear_error();
    wl_status s = wl_config_from_llama2c(buf, len, &c);
    n_runs++;
    check_status(s, "wl_config_from_llama2c");
    wl_model *m = NULL;
    wl_clear_error();
    wl_status s2 = wl_model_load_llama2c(buf, len, &m);
    check_status(s2, "wl_model_load_llama2c");
    if ((s == WL_OK) != (s2 == WL_OK) && s2 != WL_STATUS_OUT_OF_MEMORY) {
        wl_test_failures++;
        fprintf(stderr, "FAIL llama2.c header accepted by one function and not the other (%d, %d)\n", (int)s, (int)s2);
    }
    if (s2 == WL_OK) n_accepted++;
    wl_model_free(m);
}

typedef void (*runner)(const uint8_t *, size_t);

/* ---- mutation schedules ---- */

static void truncations(const uint8_t *seed, size_t len, runner run) {
    for (size_t n = 0; n <= len; n++) {
        /* A fresh exact-size copy so ASan sees reads past n. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, seed, n);
        run(cut, n);
        free(cut);
    }
}

/* Every byte in [0, limit) replaced by each hostile value (beyond a safetensors header only data changes). */
static void byte_replacements(const uint8_t *seed, size_t len, size_t limit, runner run) {
    static const uint8_t values[] = {0x00, 0xff, 0x80, 0x7f, ' ', '{', '}', '[', ']', '"', ',', ':', '0', '9',
                                     '-', '.', 'e', '\\', 'n', 0xc3, 0xed};
    uint8_t *buf = malloc(len ? len : 1);
    for (size_t i = 0; i < len && i < limit; i++) {
        for (size_t v = 0; v < sizeof values + 2; v++) {
            memcpy(buf, seed, len);
            buf[i] = v < sizeof values ? values[v] : (uint8_t)(seed[i] ^ (v == sizeof values ? 0x01 : 0x20));
            if (buf[i] == seed[i]) continue;
            run(buf, len);
        }
    }
    free(buf);
}

/* Hostile values for the u64 header length. */
static void header_lengths(const uint8_t *seed, size_t len) {
    if (len < 8) return;
    uint64_t n0 = wl_rd_u64(seed);
    const uint64_t vals[] = {0, 1, 2, 7, 8, n0 - 1, n0 + 1, n0 + 8, len - 8, len - 7, len, 100000000ull, 100000001ull,
                             1ull << 31, 1ull << 32, (1ull << 63) - 1, 1ull << 63, UINT64_MAX - 7, UINT64_MAX};
    uint8_t *buf = malloc(len);
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        memcpy(buf, seed, len);
        for (int b = 0; b < 8; b++) buf[b] = (uint8_t)(vals[i] >> (8 * b));
        run_st(buf, len);
    }
    free(buf);
}

/* Replace one JSON token in a safetensors header with a hostile one, keeping the length field right. */
static void header_tokens(const uint8_t *seed, size_t len) {
    static const char *const tokens[] = {
        "-1", "0", "1", "4.0", "1e3", "4294967296", "9223372036854775807", "9223372036854775808",
        "18446744073709551616", "1e999", "-0", "[]", "[0]", "[0,0]", "[0,0,0]", "[-1,4]", "[4,0]",
        "[4294967296,4294967296]", "[1,1,1,1,1,1,1,1,1]", "{}", "null", "true", "\"F4\"", "\"F8_E4M3\"", "\"BOOL\"",
        "\"F64\"", "\"BF16\"", "\"U64\"", "\"\"", "\"\\u0000\"", "\"\\ud800\"", "\"__metadata__\"", "\"dtype\"",
        "\"shape\"", "\"data_offsets\""};
    uint64_t n = wl_rd_u64(seed);
    if (n > len - 8) return;
    const char *hdr = (const char *)seed + 8;
    /* Token starts: after any of {[:, */
    for (size_t i = 0; i < n; i++) {
        if (hdr[i] != ':' && hdr[i] != '[' && hdr[i] != ',' && hdr[i] != '{') continue;
        size_t s = i + 1, e = s;
        if (e < n && hdr[e] == '"') {
            e++;
            while (e < n && hdr[e] != '"') e++;
            e++;
        } else if (e < n && hdr[e] == '[') {
            while (e < n && hdr[e] != ']') e++;
            e++;
        } else {
            while (e < n && hdr[e] != ',' && hdr[e] != '}' && hdr[e] != ']') e++;
        }
        if (e > n) continue;
        for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++) {
            size_t tl = strlen(tokens[t]);
            size_t new_n = n - (e - s) + tl, new_len = len - (e - s) + tl;
            uint8_t *buf = malloc(new_len);
            memcpy(buf + 8, hdr, s);
            memcpy(buf + 8 + s, tokens[t], tl);
            memcpy(buf + 8 + s + tl, hdr + e, (size_t)n - e);
            memcpy(buf + 8 + new_n, seed + 8 + n, len - 8 - (size_t)n);
            for (int b = 0; b < 8; b++) buf[b] = (uint8_t)((uint64_t)new_n >> (8 * b));
            run_st(buf, new_len);
            free(buf);
        }
    }
}

/* Shift integers in a safetensors header by small amounts: one number alone, or a whole [begin, end] pair
 * together (same size, moved: holes and overlaps that pass the per-tensor size check). */
static void header_number_shifts(const uint8_t *seed, size_t len) {
    static const long long deltas[] = {-8, -4, -2, -1, 1, 2, 4, 8};
    uint64_t n = wl_rd_u64(seed);
    if (n > len - 8) return;
    const char *hdr = (const char *)seed + 8;
    char *out = malloc((size_t)n + 64);
    for (size_t i = 0; i < n; i++) {
        if (hdr[i] < '0' || hdr[i] > '9' || (i > 0 && hdr[i - 1] >= '0' && hdr[i - 1] <= '9')) continue;
        size_t e1 = i;
        long long v1 = 0;
        while (e1 < n && hdr[e1] >= '0' && hdr[e1] <= '9' && v1 < (1LL << 50)) v1 = v1 * 10 + (hdr[e1++] - '0');
        /* A following number in the same array ("a,b") is shifted with it in the paired variants. */
        size_t s2 = e1 < n && hdr[e1] == ',' ? e1 + 1 : e1, e2 = s2;
        long long v2 = 0;
        while (e2 < n && hdr[e2] >= '0' && hdr[e2] <= '9' && v2 < (1LL << 50)) v2 = v2 * 10 + (hdr[e2++] - '0');
        int paired = e2 > s2;
        for (int pair = 0; pair <= paired; pair++) {
            for (size_t d = 0; d < sizeof deltas / sizeof deltas[0]; d++) {
                size_t o = 0;
                memcpy(out, hdr, i);
                o = i;
                o += (size_t)snprintf(out + o, 32, "%lld", v1 + deltas[d]);
                size_t rest = e1;
                if (pair) {
                    o += (size_t)snprintf(out + o, 32, ",%lld", v2 + deltas[d]);
                    rest = e2;
                }
                memcpy(out + o, hdr + rest, (size_t)n - rest);
                o += (size_t)n - rest;
                /* With the data as it was, and resized by the same delta (a moved last tensor). */
                size_t data = len - 8 - (size_t)n;
                for (int resize = 0; resize < 2; resize++) {
                    long long nd = (long long)data + (resize ? deltas[d] : 0);
                    if (nd < 0) continue;
                    size_t new_len = 8 + o + (size_t)nd;
                    uint8_t *buf = calloc(new_len, 1);
                    for (int b = 0; b < 8; b++) buf[b] = (uint8_t)((uint64_t)o >> (8 * b));
                    memcpy(buf + 8, out, o);
                    memcpy(buf + 8 + o, seed + 8 + n, (size_t)nd < data ? (size_t)nd : data);
                    run_st(buf, new_len);
                    free(buf);
                }
            }
        }
    }
    free(out);
}

/* Random stacked mutations; for safetensors the length field is usually kept consistent. */
static void random_mutations(const uint8_t *seed, size_t len, runner run, int iterations, int fix_st_length) {
    size_t cap = len + 64;
    uint8_t *work = malloc(cap);
    for (int it = 0; it < iterations; it++) {
        size_t n = len;
        memcpy(work, seed, len);
        int ops = 1 + (int)rnd_below(4);
        for (int o = 0; o < ops; o++) {
            size_t at = rnd_below(n ? n : 1);
            switch (rnd_below(6)) {
            case 0:
                if (n) work[at] ^= (uint8_t)(1u << rnd_below(8));
                break;
            case 1:
                if (n) work[at] = (uint8_t)rnd();
                break;
            case 2: /* insert a byte */
                if (n + 1 < cap) {
                    memmove(work + at + 1, work + at, n - at);
                    work[at] = (uint8_t)"{}[]\",:0-1e \\"[rnd_below(14)];
                    n++;
                }
                break;
            case 3: /* delete a run */
                if (n) {
                    size_t k = 1 + rnd_below(8);
                    if (at + k > n) k = n - at;
                    memmove(work + at, work + at + k, n - at - k);
                    n -= k;
                }
                break;
            case 4: /* copy a chunk over another place */
                if (n > 8) {
                    size_t k = 1 + rnd_below(16), from = rnd_below(n);
                    if (from + k > n) k = n - from;
                    if (at + k > n) k = n - at;
                    memmove(work + at, work + from, k);
                }
                break;
            default: /* digits: shift a number */
                if (n && work[at] >= '0' && work[at] <= '9') work[at] = (uint8_t)('0' + rnd_below(10));
                break;
            }
        }
        if (fix_st_length && n >= 8 && rnd_below(4) != 0) {
            /* Keep the header length consistent with the seed's data size so parsing reaches the JSON. */
            uint64_t data = len - 8 - wl_rd_u64(seed);
            uint64_t hn = n >= 8 + data ? n - 8 - data : 0;
            for (int b = 0; b < 8; b++) work[b] = (uint8_t)(hn >> (8 * b));
        }
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, work, n);
        run(exact, n);
        free(exact);
    }
    free(work);
}

/* ---- seeds ---- */

typedef struct seed {
    uint8_t *data;
    size_t len;
} seed;

static seed st_from_header(const char *hdr, size_t data_len) {
    seed s;
    size_t n = strlen(hdr);
    s.len = 8 + n + data_len;
    s.data = malloc(s.len);
    for (int b = 0; b < 8; b++) s.data[b] = (uint8_t)((uint64_t)n >> (8 * b));
    memcpy(s.data + 8, hdr, n);
    for (size_t i = 0; i < data_len; i++) s.data[8 + n + i] = (uint8_t)(i * 37 + 11);
    return s;
}

/* A safetensors file holding every tensor of a model (values from the model, F32). */
static seed st_from_model(const wl_model *m) {
    seed s = {NULL, 0};
    int n = wl_model_n_tensors(m);
    wl_test_tensor *t = calloc((size_t)n, sizeof *t);
    if (!t) return s;
    for (int i = 0; i < n; i++) {
        wl_tensor_info info;
        wl_model_tensor(m, i, &info);
        t[i] = (wl_test_tensor){info.name, info.data, info.ndim, {info.shape[0], info.shape[1]}};
    }
    s.data = wl_test_safetensors(t, n, "\"format\":\"pt\"", &s.len);
    if (!s.data) s.len = 0;
    free(t);
    return s;
}

static seed l2c_seed(void) {
    const int32_t h[7] = {8, 12, 1, 2, 1, -6, 4};
    size_t floats = 6 * 8 + 8 + 64 + 2 * 4 * 8 + 64 + 8 + 3 * 12 * 8 + 8 + 2 * (4 * 4 / 2) + 6 * 8;
    seed s;
    s.len = 28 + 4 * floats;
    s.data = malloc(s.len);
    memcpy(s.data, h, 28);
    for (size_t i = 0; i < floats; i++) {
        float v = (float)i / 64.0f;
        memcpy(s.data + 28 + 4 * i, &v, 4);
    }
    return s;
}

int main(void) {
    /* Small models that accepted files are poured into (their tensor names seed the model-shaped files). */
    wl_config lc = {WL_ARCH_LLAMA, 8, 12, 1, 2, 1, 4, 6, 8, 1, 1, WL_ROPE_HALF, 10000.0f, 1e-5f, -1, -1};
    wl_config gc = {WL_ARCH_GPT2, 4, 8, 1, 2, 2, 2, 5, 3, 1, 0, WL_ROPE_HALF, 10000.0f, 1e-5f, -1, -1};
    CHECK_OK(wl_model_create(&lc, &g_llama));
    CHECK_OK(wl_model_create(&gc, &g_gpt2));
    CHECK(wl_model_n_tensors(g_llama) < 256 && wl_model_n_tensors(g_gpt2) < 256);

    seed st_seeds[5];
    st_seeds[0] = st_from_header(
        "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\\u00e9\"},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
        "\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
        "\"c\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[16,20]},"
        "\"z\":{\"dtype\":\"I8\",\"shape\":[0,3],\"data_offsets\":[20,20]},"
        "\"d\":{\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[20,28]}}   ",
        28);
    st_seeds[1] = st_from_header("{}      ", 0);
    st_seeds[2] = st_from_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3);
    st_seeds[3] = st_from_model(g_llama);
    st_seeds[4] = st_from_model(g_gpt2);
    for (int i = 0; i < 5; i++) {
        CHECK_MSG(st_seeds[i].len > 0, "seed %d not built", i);
        wl_safetensors *st = NULL;
        CHECK_OK(wl_st_parse(st_seeds[i].data, st_seeds[i].len, &st)); /* seeds are valid */
        wl_st_free(st);
    }
    /* The model-shaped seeds fill their models completely. */
    for (int m = 0; m < 2; m++) {
        wl_model *model = m ? g_gpt2 : g_llama;
        wl_safetensors *st = NULL;
        uint8_t seen[256] = {0};
        CHECK_OK(wl_st_parse(st_seeds[3 + m].data, st_seeds[3 + m].len, &st));
        if (st) CHECK_OK(wl_model_fill_from_safetensors(model, st, st_seeds[3 + m].data, st_seeds[3 + m].len, seen));
        wl_st_free(st);
    }

    for (int i = 0; i < 5; i++) {
        long before = n_runs;
        truncations(st_seeds[i].data, st_seeds[i].len, run_st);
        byte_replacements(st_seeds[i].data, st_seeds[i].len, 8 + (size_t)wl_rd_u64(st_seeds[i].data) + 32, run_st);
        header_lengths(st_seeds[i].data, st_seeds[i].len);
        header_tokens(st_seeds[i].data, st_seeds[i].len);
        header_number_shifts(st_seeds[i].data, st_seeds[i].len);
        random_mutations(st_seeds[i].data, st_seeds[i].len, run_st, 6000, 1);
        printf("  safetensors seed %d (%zu bytes): %ld inputs\n", i, st_seeds[i].len, n_runs - before);
    }

    static const char *const json_seeds[] = {
        "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,\"num_hidden_layers\":2,"
        "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":100,\"rms_norm_eps\":1e-06,"
        "\"rope_theta\":10000.0,\"tie_word_embeddings\":false,\"bos_token_id\":1,\"eos_token_id\":[2,3],"
        "\"rope_scaling\":null,\"hidden_act\":\"silu\"}",
        "{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":8,\"n_layer\":2,\"n_head\":2,\"vocab_size\":50,"
        "\"n_inner\":null,\"activation_function\":\"gelu_new\",\"layer_norm_epsilon\":1e-05,\"n_positions\":64}",
        "{\"model_type\":\"qwen2\",\"hidden_size\":16,\"intermediate_size\":64,\"num_hidden_layers\":2,"
        "\"num_attention_heads\":4,\"vocab_size\":100,\"use_sliding_window\":false,\"sliding_window\":4096}",
        "[1, -0.5e-3, \"a\\\"\\u00e9\\ud83d\\ude00\", {\"k\": [true, false, null]}, 12345678901234567890]",
    };
    for (size_t i = 0; i < sizeof json_seeds / sizeof json_seeds[0]; i++) {
        long before = n_runs;
        const uint8_t *s = (const uint8_t *)json_seeds[i];
        size_t len = strlen(json_seeds[i]);
        truncations(s, len, run_json);
        byte_replacements(s, len, len, run_json);
        random_mutations(s, len, run_json, 6000, 0);
        printf("  JSON seed %zu (%zu bytes): %ld inputs\n", i, len, n_runs - before);
    }

    /* llama2.c: the header fields get hostile values, then the usual schedules on the first bytes. */
    seed l2c = l2c_seed();
    {
        long before = n_runs;
        run_l2c(l2c.data, l2c.len);
        CHECK(n_accepted > 0);
        const int32_t vals[] = {0, 1, 2, -1, -2, 3, 4, 7, 8, 16, 1 << 16, 1 << 20, 1 << 30, INT32_MAX, INT32_MIN};
        uint8_t *buf = malloc(l2c.len);
        for (int f = 0; f < 7; f++) {
            for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
                memcpy(buf, l2c.data, l2c.len);
                memcpy(buf + 4 * f, &vals[v], 4);
                run_l2c(buf, l2c.len);
                /* and with a second field changed too */
                for (int g = 0; g < 7; g++) {
                    if (g == f) continue;
                    memcpy(buf + 4 * g, &vals[(v + (size_t)g) % (sizeof vals / sizeof vals[0])], 4);
                    run_l2c(buf, l2c.len);
                    memcpy(buf + 4 * g, l2c.data + 4 * g, 4);
                }
            }
        }
        free(buf);
        truncations(l2c.data, 64, run_l2c);
        for (size_t n = l2c.len - 40; n <= l2c.len + 8; n++) {
            uint8_t *exact = calloc(n, 1); /* exact size, so ASan sees any read past the end */
            memcpy(exact, l2c.data, n < l2c.len ? n : l2c.len);
            run_l2c(exact, n);
            free(exact);
        }
        printf("  llama2.c seed (%zu bytes): %ld inputs\n", l2c.len, n_runs - before);
    }

    printf("  %ld inputs, %ld accepted\n", n_runs, n_accepted);
    CHECK(n_runs > 100000);
    for (int i = 0; i < 5; i++) free(st_seeds[i].data);
    free(l2c.data);
    wl_model_free(g_llama);
    wl_model_free(g_gpt2);
    return wl_test_summary("test_fuzz_io");
}
