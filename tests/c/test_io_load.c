/* test_io_load.c: the model loaders. llama2.c checkpoints (both real ones, and a synthetic unshared one)
 * land tensor by tensor where DATA.md says; the real HF models load with every weight equal to the file
 * (GPT-2's Conv1D transposed); rewritten variants cover F16/BF16/F64 data, shards, GPT-2 names without the
 * "transformer." prefix, ignorable buffers, a tied head, and every refusal (unknown, missing, duplicate,
 * misshapen, wrong dtype). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "testutil.h"
#include "wl_io.h"

/* ---- a tensor set: real files decoded to f32, re-encoded with any dtype ---- */

#define MAX_T 64

typedef struct ftensor {
    char name[160];
    int dtype; /* dtype to write */
    int ndim;
    int64_t shape[4];
    float *data;
    size_t numel;
} ftensor;

typedef struct fset {
    ftensor t[MAX_T];
    int n;
} fset;

static int load_set(const char *rel, fset *s) {
    memset(s, 0, sizeof *s);
    size_t len;
    uint8_t *buf = wl_test_read_file(wl_shared_path(rel), &len);
    CHECK_MSG(buf != NULL, "missing %s", rel);
    if (!buf) return 0;
    wl_safetensors *st = NULL;
    CHECK_OK(wl_st_parse(buf, len, &st));
    if (!st || st->n_tensors > MAX_T) {
        free(buf);
        wl_st_free(st);
        return 0;
    }
    for (int i = 0; i < st->n_tensors; i++) {
        ftensor *t = &s->t[s->n++];
        snprintf(t->name, sizeof t->name, "%s", st->tensors[i].name);
        t->dtype = WL_DTYPE_F32;
        t->ndim = st->tensors[i].ndim;
        for (int d = 0; d < t->ndim; d++) t->shape[d] = st->tensors[i].shape[d];
        t->numel = (size_t)st->tensors[i].numel;
        t->data = malloc(t->numel * 4 + 4);
        wl_convert_to_f32(t->data, buf + st->data_start + st->tensors[i].begin, st->tensors[i].dtype, t->numel);
    }
    wl_st_free(st);
    free(buf);
    return 1;
}

static void free_set(fset *s) {
    for (int i = 0; i < s->n; i++) free(s->t[i].data);
    s->n = 0;
}

static int find_in_set(const fset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0) return i;
    return -1;
}

/* Append a tensor (copying data; data may be NULL for zeros). */
static ftensor *add_tensor(fset *s, const char *name, int dtype, int ndim, const int64_t *shape, const float *data) {
    ftensor *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= (size_t)shape[d];
    }
    t->data = calloc(t->numel + 1, 4);
    if (data) memcpy(t->data, data, t->numel * 4);
    return t;
}

static void remove_tensor(fset *s, int i) {
    free(s->t[i].data);
    memmove(&s->t[i], &s->t[i + 1], (size_t)(s->n - i - 1) * sizeof s->t[0]);
    s->n--;
}

/* The value a loader should see after storing x with dtype. */
static float stored(float x, int dtype) {
    switch (dtype) {
    case WL_DTYPE_F16: return wl_f16_to_f32(wl_f32_to_f16(x));
    case WL_DTYPE_BF16: return wl_bf16_to_f32(wl_f32_to_bf16(x));
    default: return x;
    }
}

/* Encode tensors [from, to) of s as a safetensors file (each with its own dtype). Caller frees. */
static uint8_t *encode(const fset *s, int from, int to, size_t *len) {
    size_t cap = 256 + (size_t)(to - from) * 256, o = 0, data = 0;
    char *hdr = malloc(cap);
    o += (size_t)snprintf(hdr + o, cap - o, "{");
    for (int i = from; i < to; i++) {
        const ftensor *t = &s->t[i];
        size_t bytes = t->numel * wl_dtype_size(t->dtype);
        o += (size_t)snprintf(hdr + o, cap - o, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i > from ? "," : "", t->name,
                              wl_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) o += (size_t)snprintf(hdr + o, cap - o, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        o += (size_t)snprintf(hdr + o, cap - o, "],\"data_offsets\":[%zu,%zu]}", data, data + bytes);
        data += bytes;
    }
    o += (size_t)snprintf(hdr + o, cap - o, "}");
    *len = 8 + o + data;
    uint8_t *buf = malloc(*len);
    for (int b = 0; b < 8; b++) buf[b] = (uint8_t)((uint64_t)o >> (8 * b));
    memcpy(buf + 8, hdr, o);
    uint8_t *p = buf + 8 + o;
    for (int i = from; i < to; i++) {
        const ftensor *t = &s->t[i];
        for (size_t k = 0; k < t->numel; k++) {
            float x = t->data[k];
            switch (t->dtype) {
            case WL_DTYPE_F32: memcpy(p, &x, 4), p += 4; break;
            case WL_DTYPE_F16: {
                uint16_t h = wl_f32_to_f16(x);
                memcpy(p, &h, 2), p += 2;
                break;
            }
            case WL_DTYPE_BF16: {
                uint16_t h = wl_f32_to_bf16(x);
                memcpy(p, &h, 2), p += 2;
                break;
            }
            case WL_DTYPE_F64: {
                double d = x;
                memcpy(p, &d, 8), p += 8;
                break;
            }
            case WL_DTYPE_I32: {
                int32_t v = (int32_t)x;
                memcpy(p, &v, 4), p += 4;
                break;
            }
            default: memset(p, 0, wl_dtype_size(t->dtype)), p += wl_dtype_size(t->dtype); break;
            }
        }
    }
    free(hdr);
    return buf;
}

/* Every model tensor must equal the set's tensor of the same name (after `prefix` is stripped from model
 * names), converted through its dtype; transposed tensors compared in their file layout, in memory and as
 * wl_model_read_tensor_file gives them back. */
static void check_model_equals(const wl_model *m, const fset *s, const char *strip, const char *what) {
    int n = wl_model_n_tensors(m), bad = 0, missing = 0;
    for (int i = 0; i < n; i++) {
        wl_tensor_info info;
        CHECK_OK(wl_model_tensor(m, i, &info));
        const char *name = info.name;
        if (strip && strncmp(name, strip, strlen(strip)) == 0) name += strlen(strip);
        int k = find_in_set(s, name);
        if (k < 0) {
            if (missing++ < 3) fprintf(stderr, "%s: model tensor %s not in the set\n", what, info.name);
            continue;
        }
        const ftensor *t = &s->t[k];
        if (t->numel != info.numel) {
            bad++;
            continue;
        }
        float *file = malloc(t->numel ? t->numel * sizeof *file : 1);
        CHECK(file != NULL);
        if (!file) return;
        CHECK_OK(wl_model_read_tensor_file(m, i, file));
        for (size_t e = 0; e < t->numel; e++) {
            size_t at = e;
            if (info.transposed) { /* file (in, out) element e -> memory (out, in) */
                size_t in = (size_t)info.shape[0], out = (size_t)info.shape[1];
                at = (e % out) * in + e / out;
            }
            float want = stored(t->data[e], t->dtype);
            int same = (info.data[at] == want || (isnan(want) && isnan(info.data[at]))) &&
                       (file[e] == want || (isnan(want) && isnan(file[e])));
            if (!same) {
                if (bad++ < 3)
                    fprintf(stderr, "%s: %s[%zu] = %.9g in memory, %.9g read back in file layout, want %.9g\n", what,
                            info.name, e, (double)info.data[at], (double)file[e], (double)want);
                break;
            }
        }
        free(file);
    }
    CHECK_MSG(bad == 0 && missing == 0, "%s: %d tensors differ, %d missing", what, bad, missing);
}

static const char *LLAMA_CONFIG =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":4,\"vocab_size\":32000,\"rms_norm_eps\":1e-6%s}";

static wl_status load_llama_variant(const fset *s, const char *extra_config, wl_model **m) {
    char cfg[1024];
    snprintf(cfg, sizeof cfg, LLAMA_CONFIG, extra_config);
    size_t len;
    uint8_t *buf = encode(s, 0, s->n, &len);
    wl_buffer shard = {buf, len};
    wl_clear_error();
    wl_status st = wl_model_load_hf(cfg, strlen(cfg), &shard, 1, m);
    free(buf);
    return st;
}

static void expect_llama_fail(const fset *s, const char *extra_config, wl_status want, const char *needle, const char *why) {
    wl_model *m = (wl_model *)1;
    wl_status st = load_llama_variant(s, extra_config, &m);
    CHECK_MSG(st == want && wl_last_error()[0] && m == NULL, "%s: status %d (want %d): %s", why, (int)st, (int)want,
              wl_last_error());
    if (needle) CHECK_MSG(strstr(wl_last_error(), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", why, wl_last_error(), needle);
    if (st == WL_OK) wl_model_free(m);
}

/* ---- llama2.c ---- */

/* Compare every model tensor with the file at offsets computed from DATA.md's order. */
static void check_llama2c_model(const wl_model *m, const uint8_t *buf, size_t len, const char *what) {
    int32_t h[7];
    memcpy(h, buf, 28);
    size_t C = (size_t)h[0], I = (size_t)h[1], L = (size_t)h[2], H = (size_t)h[3], KV = (size_t)h[4];
    size_t V = (size_t)(h[5] < 0 ? -h[5] : h[5]), T = (size_t)h[6], hs = C / H, kvd = hs * KV;
    const float *f = (const float *)(const void *)(buf + 28);
    size_t o = 0;
    size_t emb = o;
    o += V * C;
    size_t rms_att = o;
    o += L * C;
    size_t wq = o;
    o += L * C * C;
    size_t wk = o;
    o += L * kvd * C;
    size_t wv = o;
    o += L * kvd * C;
    size_t wo = o;
    o += L * C * C;
    size_t rms_ffn = o;
    o += L * C;
    size_t w1 = o;
    o += L * I * C;
    size_t w2 = o;
    o += L * C * I;
    size_t w3 = o;
    o += L * I * C;
    size_t rms_final = o;
    o += C + 2 * (T * hs / 2);
    size_t wcls = o;
    if (h[5] < 0) o += V * C;
    CHECK_MSG(28 + 4 * o == len, "%s: test's own layout disagrees with the file size", what);

    struct {
        const char *name;
        size_t at, numel;
    } want[64];
    int n = 0;
    char names[64][96];
    snprintf(names[n], 96, "model.embed_tokens.weight");
    want[n].name = names[n], want[n].at = emb, want[n].numel = V * C, n++;
    for (size_t l = 0; l < L && n < 60; l++) {
        const char *suffix[9] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                 "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                 "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight"};
        size_t base[9] = {rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3};
        size_t size[9] = {C, C * C, kvd * C, kvd * C, C * C, C, I * C, C * I, I * C};
        for (int k = 0; k < 9 && n < 63; k++) {
            snprintf(names[n], 96, "model.layers.%zu.%s", l, suffix[k]);
            want[n].name = names[n], want[n].at = base[k] + l * size[k], want[n].numel = size[k], n++;
        }
    }
    snprintf(names[n], 96, "model.norm.weight");
    want[n].name = names[n], want[n].at = rms_final, want[n].numel = C, n++;
    if (h[5] < 0) {
        snprintf(names[n], 96, "lm_head.weight");
        want[n].name = names[n], want[n].at = wcls, want[n].numel = V * C, n++;
    }
    CHECK_MSG(wl_model_n_tensors(m) == n, "%s: %d model tensors, want %d", what, wl_model_n_tensors(m), n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int index;
        wl_tensor_info info;
        if (wl_model_find_tensor(m, want[i].name, &index) != WL_OK || wl_model_tensor(m, index, &info) != WL_OK ||
            info.numel != want[i].numel || memcmp(info.data, f + want[i].at, want[i].numel * 4) != 0) {
            if (bad++ < 3) fprintf(stderr, "%s: tensor %s does not match the file\n", what, want[i].name);
        }
    }
    CHECK_MSG(bad == 0, "%s: %d tensors differ from the checkpoint", what, bad);
}

static void test_llama2c_real(void) {
    const char *paths[2] = {"models/stories260K/stories260K.bin", "models/aidreams260K/aidreams260K.bin"};
    for (int r = 0; r < 2; r++) {
        size_t len;
        uint8_t *buf = wl_test_read_file(wl_shared_path(paths[r]), &len);
        CHECK_MSG(buf != NULL, "missing %s", paths[r]);
        if (!buf) continue;
        wl_model *m = NULL;
        CHECK_OK(wl_model_load_llama2c(buf, len, &m));
        if (m) {
            const wl_config *c = wl_model_config(m);
            CHECK(c->rope_layout == WL_ROPE_INTERLEAVED && c->tied_embeddings == 1 && c->vocab_size == 512);
            check_llama2c_model(m, buf, len, paths[r]);
            if (r == 0) CHECK(wl_config_n_params(c) == 260032);
        }
        wl_model_free(m);
        m = (wl_model *)1;
        CHECK_STATUS(wl_model_load_llama2c(buf, len - 4, &m), WL_STATUS_BAD_FORMAT);
        CHECK(m == NULL);
        free(buf);
    }
    CHECK_STATUS(wl_model_load_llama2c(NULL, 0, NULL), WL_STATUS_INVALID_ARGUMENT);
}

static void test_llama2c_unshared(void) {
    /* dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab 16 unshared, seq_len 4: every float distinct. */
    const int32_t h[7] = {8, 12, 2, 2, 1, -16, 4};
    size_t floats = 16 * 8 + 2 * 8 + 2 * 64 + 2 * 2 * 4 * 8 + 2 * 64 + 2 * 8 + 3 * 2 * 12 * 8 + 8 + 2 * (4 * 4 / 2) + 16 * 8;
    size_t len = 28 + 4 * floats;
    uint8_t *buf = malloc(len);
    memcpy(buf, h, 28);
    for (size_t i = 0; i < floats; i++) {
        float v = (float)i * 0.5f - 100.0f;
        memcpy(buf + 28 + 4 * i, &v, 4);
    }
    wl_model *m = NULL;
    CHECK_OK(wl_model_load_llama2c(buf, len, &m));
    if (m) {
        CHECK(wl_model_config(m)->tied_embeddings == 0 && wl_model_config(m)->n_kv_heads == 1);
        check_llama2c_model(m, buf, len, "synthetic unshared checkpoint");
        int index;
        CHECK_OK(wl_model_find_tensor(m, "lm_head.weight", &index));
    }
    wl_model_free(m);
    free(buf);
}

/* ---- Hugging Face ---- */

static void test_hf_real(void) {
    size_t cfg_len, len;
    char *cfg = (char *)wl_test_read_file(wl_shared_path("models/tiny-random-llama/config.json"), &cfg_len);
    uint8_t *buf = wl_test_read_file(wl_shared_path("models/tiny-random-llama/model.safetensors"), &len);
    fset s;
    if (cfg && buf && load_set("models/tiny-random-llama/model.safetensors", &s)) {
        wl_buffer shard = {buf, len};
        wl_model *m = NULL;
        CHECK_OK(wl_model_load_hf(cfg, cfg_len, &shard, 1, &m));
        if (m) {
            CHECK(wl_model_n_tensors(m) == 21);
            check_model_equals(m, &s, NULL, "tiny-random-llama");
        }
        wl_model_free(m);
        /* The same through wl_model_fill_from_safetensors on a header-only parse of the real file. */
        wl_config c;
        CHECK_OK(wl_config_from_hf_json(cfg, cfg_len, &c));
        m = NULL;
        CHECK_OK(wl_model_create(&c, &m));
        wl_safetensors *st = NULL;
        CHECK_OK(wl_st_parse_header(buf, 4096, len, &st));
        if (m && st) {
            uint8_t seen[21] = {0};
            CHECK_STATUS(wl_model_fill_from_safetensors(m, st, buf, 4096, seen), WL_STATUS_BAD_FORMAT);
            CHECK(strstr(wl_last_error(), "beyond") != NULL);
            memset(seen, 0, sizeof seen);
            CHECK_OK(wl_model_fill_from_safetensors(m, st, buf, len, seen));
            int all = 1;
            for (int i = 0; i < 21; i++) all &= seen[i];
            CHECK(all);
            check_model_equals(m, &s, NULL, "tiny-random-llama via fill");
            CHECK_STATUS(wl_model_fill_from_safetensors(m, st, buf, len, seen), WL_STATUS_BAD_FORMAT); /* seen twice */
            CHECK_OK(wl_model_fill_from_safetensors(m, st, buf, len, NULL));
            CHECK_STATUS(wl_model_fill_from_safetensors(NULL, st, buf, len, NULL), WL_STATUS_INVALID_ARGUMENT);
            CHECK_STATUS(wl_model_fill_from_safetensors(m, NULL, buf, len, NULL), WL_STATUS_INVALID_ARGUMENT);
        }
        wl_st_free(st);
        wl_model_free(m);
        free_set(&s);
    }
    free(cfg);
    free(buf);

    cfg = (char *)wl_test_read_file(wl_shared_path("models/tiny-gpt2/config.json"), &cfg_len);
    buf = wl_test_read_file(wl_shared_path("models/tiny-gpt2/model.safetensors"), &len);
    if (cfg && buf && load_set("models/tiny-gpt2/model.safetensors", &s)) {
        wl_buffer shard = {buf, len};
        wl_model *m = NULL;
        CHECK_OK(wl_model_load_hf(cfg, cfg_len, &shard, 1, &m));
        if (m) {
            CHECK(wl_model_n_tensors(m) == 28);
            check_model_equals(m, &s, NULL, "tiny-gpt2");
            /* The transpose is real: c_attn (in 2, out 6) in memory is (6, 2). */
            int index;
            wl_tensor_info info;
            CHECK_OK(wl_model_find_tensor(m, "transformer.h.0.attn.c_attn.weight", &index));
            CHECK_OK(wl_model_tensor(m, index, &info));
            int k = find_in_set(&s, "transformer.h.0.attn.c_attn.weight");
            CHECK(info.transposed == 1 && info.shape[0] == 2 && info.shape[1] == 6 && k >= 0);
            if (k >= 0) CHECK(info.data[1] == s.t[k].data[6] && info.data[2] == s.t[k].data[1]);
        }
        wl_model_free(m);

        /* GPT2Model-style names (no "transformer."), the mask buffers and a stored tied head: all fine. */
        fset v;
        memset(&v, 0, sizeof v);
        for (int i = 0; i < s.n; i++) {
            const char *name = s.t[i].name + strlen("transformer.");
            add_tensor(&v, name, i % 3 == 0 ? WL_DTYPE_BF16 : WL_DTYPE_F32, s.t[i].ndim, s.t[i].shape, s.t[i].data);
        }
        int64_t mask[4] = {1, 1, 4, 4}, head[2] = {50257, 2}, one[1] = {1};
        add_tensor(&v, "h.0.attn.bias", WL_DTYPE_U8, 4, mask, NULL);
        add_tensor(&v, "h.1.attn.masked_bias", WL_DTYPE_F32, 1, one, NULL);
        add_tensor(&v, "lm_head.weight", WL_DTYPE_F32, 2, head, NULL);
        size_t vlen;
        uint8_t *vbuf = encode(&v, 0, v.n, &vlen);
        shard = (wl_buffer){vbuf, vlen};
        m = NULL;
        CHECK_OK(wl_model_load_hf(cfg, cfg_len, &shard, 1, &m));
        if (m) check_model_equals(m, &v, "transformer.", "tiny-gpt2 without prefix");
        wl_model_free(m);
        free(vbuf);

        /* One tensor under both names: refused as stored twice. */
        int64_t two[1] = {2};
        add_tensor(&v, "transformer.ln_f.bias", WL_DTYPE_F32, 1, two, NULL);
        vbuf = encode(&v, 0, v.n, &vlen);
        shard = (wl_buffer){vbuf, vlen};
        m = (wl_model *)1;
        CHECK_STATUS(wl_model_load_hf(cfg, cfg_len, &shard, 1, &m), WL_STATUS_BAD_FORMAT);
        CHECK(strstr(wl_last_error(), "ln_f.bias") != NULL && strstr(wl_last_error(), "more than once") != NULL);
        CHECK(m == NULL);
        free(vbuf);
        remove_tensor(&v, v.n - 1);

        /* Not ignorable for GPT-2: a rotary buffer, a malformed mask name. */
        const char *foreign[3] = {"h.0.attn.rotary_emb.inv_freq", "h.x.attn.bias", "h.0.attn.biasx"};
        for (int f = 0; f < 3; f++) {
            add_tensor(&v, foreign[f], WL_DTYPE_F32, 1, one, NULL);
            vbuf = encode(&v, 0, v.n, &vlen);
            shard = (wl_buffer){vbuf, vlen};
            CHECK_STATUS(wl_model_load_hf(cfg, cfg_len, &shard, 1, &m), WL_STATUS_BAD_FORMAT);
            CHECK_MSG(strstr(wl_last_error(), foreign[f]) != NULL, "message \"%s\"", wl_last_error());
            free(vbuf);
            remove_tensor(&v, v.n - 1);
        }
        free_set(&v);
        free_set(&s);
    }
    free(cfg);
    free(buf);
}

static void test_hf_variants(void) {
    fset s;
    if (!load_set("models/tiny-random-llama/model.safetensors", &s)) return;
    wl_model *m = NULL;

    /* Half, bfloat and double precision files, and a mix. */
    const int dtypes[3] = {WL_DTYPE_F16, WL_DTYPE_BF16, WL_DTYPE_F64};
    for (int d = 0; d < 4; d++) {
        for (int i = 0; i < s.n; i++) s.t[i].dtype = d < 3 ? dtypes[d] : dtypes[i % 3];
        m = NULL;
        CHECK_OK(load_llama_variant(&s, "", &m));
        if (m) check_model_equals(m, &s, NULL, d < 3 ? wl_dtype_name(dtypes[d]) : "mixed dtypes");
        wl_model_free(m);
    }
    for (int i = 0; i < s.n; i++) s.t[i].dtype = WL_DTYPE_F32;

    /* A weight in an integer dtype. */
    int q = find_in_set(&s, "model.layers.1.self_attn.q_proj.weight");
    s.t[q].dtype = WL_DTYPE_I32;
    expect_llama_fail(&s, "", WL_STATUS_UNSUPPORTED, "I32", "integer weights");
    CHECK(strstr(wl_last_error(), "q_proj") != NULL);
    s.t[q].dtype = WL_DTYPE_F32;

    /* Shapes must match exactly: transposed, and 2-D for 1-D. */
    int down = find_in_set(&s, "model.layers.0.mlp.down_proj.weight");
    s.t[down].shape[0] = 64, s.t[down].shape[1] = 16;
    expect_llama_fail(&s, "", WL_STATUS_SHAPE_MISMATCH, "[64, 16] but the model expects [16, 64]", "transposed down_proj");
    s.t[down].shape[0] = 16, s.t[down].shape[1] = 64;
    int norm = find_in_set(&s, "model.norm.weight");
    s.t[norm].ndim = 2, s.t[norm].shape[0] = 1, s.t[norm].shape[1] = 16;
    expect_llama_fail(&s, "", WL_STATUS_SHAPE_MISMATCH, "model.norm.weight", "2-D norm");
    s.t[norm].ndim = 1, s.t[norm].shape[0] = 16;

    /* Extra tensors: a rotary buffer is fine, anything else is named. */
    int64_t eight[1] = {2};
    add_tensor(&s, "model.layers.0.self_attn.rotary_emb.inv_freq", WL_DTYPE_F32, 1, eight, NULL);
    m = NULL;
    CHECK_OK(load_llama_variant(&s, "", &m));
    wl_model_free(m);
    /* ... but not one that makes the file larger than the config's model and buffers could ever use */
    int64_t huge[1] = {1 << 16};
    add_tensor(&s, "model.layers.1.self_attn.rotary_emb.inv_freq", WL_DTYPE_F32, 1, huge, NULL);
    expect_llama_fail(&s, "", WL_STATUS_BAD_FORMAT, "declares 65536 values; this model's config allows it at most 2",
                      "a buffer beyond what the config gives it");
    remove_tensor(&s, s.n - 1);
    add_tensor(&s, "model.layers.0.self_attn.q_norm.weight", WL_DTYPE_F32, 1, eight, NULL);
    expect_llama_fail(&s, "", WL_STATUS_BAD_FORMAT, "model.layers.0.self_attn.q_norm.weight", "unknown tensor");
    remove_tensor(&s, s.n - 1);
    add_tensor(&s, "transformer.h.0.attn.bias", WL_DTYPE_F32, 1, eight, NULL); /* a GPT-2 buffer means nothing here */
    expect_llama_fail(&s, "", WL_STATUS_BAD_FORMAT, "transformer.h.0.attn.bias", "GPT-2 buffer in a Llama file");
    remove_tensor(&s, s.n - 1);
    remove_tensor(&s, s.n - 1);

    /* Missing tensors are named (the first in table order). */
    ftensor saved = s.t[norm];
    saved.data = malloc(saved.numel * 4);
    memcpy(saved.data, s.t[norm].data, saved.numel * 4);
    remove_tensor(&s, norm);
    expect_llama_fail(&s, "", WL_STATUS_NOT_FOUND, "model.norm.weight", "missing final norm");
    s.t[s.n++] = saved;

    /* A tied config ignores the stored lm_head and loads embed_tokens. */
    m = NULL;
    CHECK_OK(load_llama_variant(&s, ",\"tie_word_embeddings\":true", &m));
    if (m) {
        CHECK(wl_model_n_tensors(m) == 20);
        check_model_equals(m, &s, NULL, "tied llama");
    }
    wl_model_free(m);
    /* A Qwen2-style config wants q/k/v biases this file does not have. */
    {
        char cfg[1024];
        snprintf(cfg, sizeof cfg,
                 "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,"
                 "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":32000}");
        size_t len;
        uint8_t *buf = encode(&s, 0, s.n, &len);
        wl_buffer shard = {buf, len};
        m = (wl_model *)1;
        CHECK_STATUS(wl_model_load_hf(cfg, strlen(cfg), &shard, 1, &m), WL_STATUS_NOT_FOUND);
        CHECK(strstr(wl_last_error(), "q_proj.bias") != NULL && m == NULL);
        free(buf);
    }

    /* A config far bigger than the files (TinyLlama-1.1B sizes with this 4 MB file) is refused before the
     * model is allocated. */
    {
        const char *big = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":2048,\"intermediate_size\":5632,"
                          "\"num_hidden_layers\":22,\"num_attention_heads\":32,\"num_key_value_heads\":4,"
                          "\"vocab_size\":32000}";
        size_t len;
        uint8_t *buf = encode(&s, 0, s.n, &len);
        wl_buffer shard = {buf, len};
        m = (wl_model *)1;
        CHECK_STATUS(wl_model_load_hf(big, strlen(big), &shard, 1, &m), WL_STATUS_NOT_FOUND);
        CHECK(strstr(wl_last_error(), "parameters") != NULL && m == NULL);
        free(buf);
    }

    /* The bounds on what the files of a config may declare, at their edges: far fewer values than its parameters
     * (the config is not theirs) or far more than its weights plus the buffers a checkpoint carries (an inv_freq
     * per layer and one for the model) are refused before anything is allocated. */
    {
        char text[1024];
        snprintf(text, sizeof text, LLAMA_CONFIG, "");
        wl_config c;
        CHECK_OK(wl_config_from_hf_json(text, strlen(text), &c));
        uint64_t need = wl_config_n_params(&c);
        uint64_t most = 2 * (need + (uint64_t)(c.n_layers + 1) * (uint64_t)(c.head_dim / 2)) + 65536;
        uint64_t fewest = (need - 65536 + 1) / 2; /* the least values with need <= 2 * values + 65536 */
        CHECK_OK(wl_config_check_file_values(&c, most, 1));
        CHECK_STATUS(wl_config_check_file_values(&c, most + 1, 2), WL_STATUS_BAD_FORMAT);
        CHECK(strstr(wl_last_error(), "safetensors files declare") != NULL);
        CHECK_OK(wl_config_check_file_values(&c, fewest, 1));
        CHECK_STATUS(wl_config_check_file_values(&c, fewest - 1, 1), WL_STATUS_NOT_FOUND);
        CHECK_STATUS(wl_config_check_file_values(&c, UINT64_MAX, 1), WL_STATUS_BAD_FORMAT);
        CHECK_STATUS(wl_config_check_file_values(NULL, need, 1), WL_STATUS_INVALID_ARGUMENT);
    }

    /* Shards: a clean split loads the same model; an overlap is refused naming the shard. */
    char cfg[1024];
    snprintf(cfg, sizeof cfg, LLAMA_CONFIG, "");
    size_t len1, len2;
    uint8_t *a = encode(&s, 0, 9, &len1), *b = encode(&s, 9, s.n, &len2);
    wl_buffer shards[2] = {{a, len1}, {b, len2}};
    m = NULL;
    CHECK_OK(wl_model_load_hf(cfg, strlen(cfg), shards, 2, &m));
    if (m) check_model_equals(m, &s, NULL, "two shards");
    wl_model_free(m);
    free(b);
    b = encode(&s, 8, s.n, &len2);
    shards[1] = (wl_buffer){b, len2};
    CHECK_STATUS(wl_model_load_hf(cfg, strlen(cfg), shards, 2, &m), WL_STATUS_BAD_FORMAT);
    CHECK(strstr(wl_last_error(), "shard 2 of 2") != NULL && strstr(wl_last_error(), s.t[8].name) != NULL);
    /* Only the first shard: the rest is missing. */
    CHECK_STATUS(wl_model_load_hf(cfg, strlen(cfg), shards, 1, &m), WL_STATUS_NOT_FOUND);
    /* A broken shard. */
    b[9] ^= 0x20;
    CHECK_STATUS(wl_model_load_hf(cfg, strlen(cfg), shards, 2, &m), WL_STATUS_BAD_FORMAT);
    CHECK(strstr(wl_last_error(), "shard 2") != NULL);
    free(a);
    free(b);
    CHECK_STATUS(wl_model_load_hf(cfg, strlen(cfg), shards, 0, &m), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_load_hf(cfg, strlen(cfg), NULL, 1, &m), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_load_hf(cfg, strlen(cfg), shards, 1, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_load_hf("{", 1, shards, 1, &m), WL_STATUS_BAD_FORMAT);
    free_set(&s);
}

static void test_match_tensor(void) {
    wl_config lc = {WL_ARCH_LLAMA, 16, 64, 2, 4, 4, 4, 32000, 2048, 0, 0, WL_ROPE_HALF, 10000.0f, 1e-6f, 0, 1};
    wl_config gc = {WL_ARCH_GPT2, 2, 8, 2, 2, 2, 1, 50257, 1024, 1, 0, WL_ROPE_HALF, 10000.0f, 1e-5f, -1, -1};
    wl_model *llama = NULL, *gpt2 = NULL;
    CHECK_OK(wl_model_create(&lc, &llama));
    CHECK_OK(wl_model_create(&gc, &gpt2));
    if (!llama || !gpt2) return;
    int index = -7, want;
    const int64_t q_shape[2] = {16, 16}, head[2] = {32000, 16}, wrong[2] = {16, 64}, inv[1] = {2};
    CHECK_OK(wl_model_find_tensor(llama, "model.layers.1.self_attn.q_proj.weight", &want));
    CHECK_OK(wl_model_match_tensor(llama, "model.layers.1.self_attn.q_proj.weight", WL_DTYPE_BF16, 2, q_shape, &index));
    CHECK(index == want);
    CHECK_OK(wl_model_match_tensor(llama, "lm_head.weight", WL_DTYPE_F32, 2, head, &index));
    CHECK(index >= 0);
    CHECK_OK(wl_model_match_tensor(llama, "model.layers.0.self_attn.rotary_emb.inv_freq", WL_DTYPE_F32, 1, inv, &index));
    CHECK(index == -1);
    CHECK_STATUS(wl_model_match_tensor(llama, "model.layers.9.self_attn.q_proj.weight", WL_DTYPE_F32, 2, q_shape, &index),
                 WL_STATUS_BAD_FORMAT);
    CHECK(strstr(wl_last_error(), "layers.9") != NULL);
    CHECK_STATUS(wl_model_match_tensor(llama, "model.layers.1.self_attn.q_proj.weight", WL_DTYPE_I8, 2, q_shape, &index),
                 WL_STATUS_UNSUPPORTED);
    CHECK(strstr(wl_last_error(), "I8") != NULL);
    CHECK_STATUS(wl_model_match_tensor(llama, "model.layers.1.self_attn.q_proj.weight", WL_DTYPE_F32, 2, wrong, &index),
                 WL_STATUS_SHAPE_MISMATCH);
    CHECK(strstr(wl_last_error(), "[16, 64]") != NULL && strstr(wl_last_error(), "[16, 16]") != NULL);
    CHECK_STATUS(wl_model_match_tensor(llama, "model.norm.weight", WL_DTYPE_F32, -1, NULL, &index), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_match_tensor(llama, "model.norm.weight", WL_DTYPE_F32, 1, NULL, &index), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_match_tensor(llama, NULL, WL_DTYPE_F32, 0, NULL, &index), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_match_tensor(NULL, "x", WL_DTYPE_F32, 0, NULL, &index), WL_STATUS_INVALID_ARGUMENT);
    /* GPT-2: both name forms, the tied head and the mask buffers. */
    const int64_t attn_shape[2] = {2, 6}, mask[4] = {1, 1, 1024, 1024}, wte[2] = {50257, 2};
    CHECK_OK(wl_model_find_tensor(gpt2, "transformer.h.1.attn.c_attn.weight", &want));
    CHECK_OK(wl_model_match_tensor(gpt2, "h.1.attn.c_attn.weight", WL_DTYPE_F16, 2, attn_shape, &index));
    CHECK(index == want);
    CHECK_OK(wl_model_match_tensor(gpt2, "transformer.h.1.attn.c_attn.weight", WL_DTYPE_F32, 2, attn_shape, &index));
    CHECK(index == want);
    const int64_t memory_layout[2] = {6, 2};
    CHECK_STATUS(wl_model_match_tensor(gpt2, "h.1.attn.c_attn.weight", WL_DTYPE_F32, 2, memory_layout, &index),
                 WL_STATUS_SHAPE_MISMATCH); /* Conv1D files are (in, out) */
    CHECK_OK(wl_model_match_tensor(gpt2, "lm_head.weight", WL_DTYPE_F32, 2, wte, &index));
    CHECK(index == -1);
    CHECK_OK(wl_model_match_tensor(gpt2, "h.0.attn.bias", WL_DTYPE_U8, 4, mask, &index));
    CHECK(index == -1);
    CHECK_OK(wl_model_match_tensor(gpt2, "transformer.h.1.attn.masked_bias", WL_DTYPE_F32, 0, NULL, &index));
    CHECK(index == -1);
    CHECK_STATUS(wl_model_match_tensor(gpt2, "h.0.attn.rotary_emb.inv_freq", WL_DTYPE_F32, 1, inv, &index),
                 WL_STATUS_BAD_FORMAT);
    wl_model_free(llama);
    wl_model_free(gpt2);
}

int main(void) {
    test_match_tensor();
    test_llama2c_real();
    test_llama2c_unshared();
    test_hf_real();
    test_hf_variants();
    return wl_test_summary("test_io_load");
}
