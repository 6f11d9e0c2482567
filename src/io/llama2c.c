/* llama2c.c: karpathy/llama2.c checkpoints (version 0 .bin files) as Llama models with interleaved RoPE.
 * The header is checked against the exact file size it implies before anything is allocated. */
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"
#include "wl_io.h"

#define HEADER_BYTES 28

/* a * b in 64 bits, or 0 (and *ok cleared) on overflow. */
static uint64_t mul64(uint64_t a, uint64_t b, int *ok) {
    if (a != 0 && b > UINT64_MAX / a) {
        *ok = 0;
        return 0;
    }
    return a * b;
}

static uint64_t add64(uint64_t a, uint64_t b, int *ok) {
    if (b > UINT64_MAX - a) {
        *ok = 0;
        return 0;
    }
    return a + b;
}

typedef struct l2c_header {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    int shared; /* classifier shares the token embedding */
} l2c_header;

/* Floats in the file after the header, computed as run.c walks them. */
static uint64_t l2c_floats(const l2c_header *h, int *ok) {
    uint64_t C = (uint64_t)h->dim, I = (uint64_t)h->hidden_dim, L = (uint64_t)h->n_layers;
    uint64_t V = (uint64_t)h->vocab, T = (uint64_t)h->seq_len;
    uint64_t hs = C / (uint64_t)h->n_heads, kv = C / (uint64_t)h->n_heads * (uint64_t)h->n_kv_heads;
    uint64_t n = mul64(V, C, ok);                                     /* token_embedding */
    n = add64(n, mul64(L, C, ok), ok);                                /* rms_att */
    n = add64(n, mul64(L, mul64(C, C, ok), ok), ok);                  /* wq */
    n = add64(n, mul64(2, mul64(L, mul64(kv, C, ok), ok), ok), ok);   /* wk, wv */
    n = add64(n, mul64(L, mul64(C, C, ok), ok), ok);                  /* wo */
    n = add64(n, mul64(L, C, ok), ok);                                /* rms_ffn */
    n = add64(n, mul64(3, mul64(L, mul64(I, C, ok), ok), ok), ok);    /* w1, w2, w3 */
    n = add64(n, C, ok);                                              /* rms_final */
    n = add64(n, mul64(2, mul64(T, hs, ok) / 2, ok), ok);             /* freq_cis_real, freq_cis_imag */
    if (!h->shared) n = add64(n, mul64(V, C, ok), ok);                /* wcls */
    return n;
}

/* The header from its first 28 bytes at buf (avail bytes there), checked against the file's length len. */
static wl_status read_header_of(const uint8_t *buf, size_t avail, uint64_t len, l2c_header *h) {
    if (!buf && avail) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "llama2.c: buffer is NULL");
    if (len < HEADER_BYTES || avail < HEADER_BYTES)
        return wl_fail(WL_STATUS_BAD_FORMAT, "llama2.c: %llu bytes is too short for the %d-byte header",
                       (unsigned long long)(avail < len ? avail : len), HEADER_BYTES);
    int32_t v[7];
    for (int i = 0; i < 7; i++) v[i] = (int32_t)wl_rd_u32(buf + 4 * i);
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        if (i == 5) continue;
        if (v[i] <= 0) return wl_fail(WL_STATUS_BAD_FORMAT, "llama2.c: header %s = %d must be positive", names[i], (int)v[i]);
    }
    if (v[5] == 0 || v[5] == INT32_MIN)
        return wl_fail(WL_STATUS_BAD_FORMAT, "llama2.c: header vocab_size = %d is invalid", (int)v[5]);
    h->dim = v[0];
    h->hidden_dim = v[1];
    h->n_layers = v[2];
    h->n_heads = v[3];
    h->n_kv_heads = v[4];
    h->shared = v[5] > 0;
    h->vocab = v[5] > 0 ? v[5] : -v[5];
    h->seq_len = v[6];
    if (h->dim % h->n_heads != 0)
        return wl_fail(WL_STATUS_BAD_FORMAT, "llama2.c: dim %d is not a multiple of n_heads %d", h->dim, h->n_heads);
    if (h->n_kv_heads > h->n_heads || h->n_heads % h->n_kv_heads != 0)
        return wl_fail(WL_STATUS_BAD_FORMAT, "llama2.c: n_heads %d is not a multiple of n_kv_heads %d", h->n_heads,
                       h->n_kv_heads);
    int ok = 1;
    uint64_t floats = l2c_floats(h, &ok);
    uint64_t want = add64(HEADER_BYTES, mul64(floats, 4, &ok), &ok);
    if (!ok)
        return wl_fail(WL_STATUS_BAD_FORMAT, "llama2.c: header dims %d/%d/%d/%d/%d/%d/%d imply a size beyond 2^64 bytes",
                       (int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5], (int)v[6]);
    if (want != (uint64_t)len)
        return wl_fail(WL_STATUS_BAD_FORMAT,
                       "llama2.c: the header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, seq_len %d) "
                       "implies %llu bytes but the file has %llu",
                       (int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5], (int)v[6],
                       (unsigned long long)want, (unsigned long long)len);
    return WL_OK;
}

static wl_status read_header(const uint8_t *buf, size_t len, l2c_header *h) { return read_header_of(buf, len, len, h); }

static void header_to_config(const l2c_header *h, wl_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = WL_ARCH_LLAMA;
    c->dim = h->dim;
    c->hidden_dim = h->hidden_dim;
    c->n_layers = h->n_layers;
    c->n_heads = h->n_heads;
    c->n_kv_heads = h->n_kv_heads;
    c->head_dim = h->dim / h->n_heads;
    c->vocab_size = h->vocab;
    c->max_seq_len = h->seq_len;
    c->tied_embeddings = h->shared;
    c->qkv_bias = 0;
    c->rope_layout = WL_ROPE_INTERLEAVED;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->bos_id = 1;
    c->eos_id = 2;
}

wl_status wl_config_from_llama2c(const uint8_t *buf, size_t len, wl_config *cfg) {
    return wl_config_from_llama2c_header(buf, len, len, cfg);
}

wl_status wl_config_from_llama2c_header(const uint8_t *header, size_t header_len, uint64_t file_len, wl_config *cfg) {
    if (!cfg) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_config_from_llama2c: cfg is NULL");
    l2c_header h;
    wl_status st = read_header_of(header, header_len, file_len, &h);
    if (st != WL_OK) return st;
    wl_config c;
    header_to_config(&h, &c);
    st = wl_config_validate(&c);
    if (st != WL_OK) return st;
    *cfg = c;
    return WL_OK;
}

/* Calls visit(ctx, model tensor name, byte offset in the file, f32 element count) for every tensor of the checkpoint,
 * in file order, until one fails. */
typedef wl_status (*part_visitor)(void *ctx, const char *name, uint64_t offset, uint64_t numel);

static wl_status walk(const l2c_header *h, part_visitor visit, void *ctx) {
    const uint64_t C = (uint64_t)h->dim, I = (uint64_t)h->hidden_dim, L = (uint64_t)h->n_layers;
    const uint64_t V = (uint64_t)h->vocab, kv = C / (uint64_t)h->n_heads * (uint64_t)h->n_kv_heads;
    const uint64_t hs = C / (uint64_t)h->n_heads, T = (uint64_t)h->seq_len;
    /* The header check proved the file holds every offset below, so none of this can overflow. Per-layer tensors
     * are stored stacked: all layers of wq, then all of wk, ... */
    const struct {
        const char *suffix; /* NULL: not per layer */
        const char *name;
        uint64_t numel;     /* per layer */
    } order[] = {
        {NULL, "model.embed_tokens.weight", V * C},
        {"input_layernorm.weight", NULL, C},
        {"self_attn.q_proj.weight", NULL, C * C},
        {"self_attn.k_proj.weight", NULL, kv * C},
        {"self_attn.v_proj.weight", NULL, kv * C},
        {"self_attn.o_proj.weight", NULL, C * C},
        {"post_attention_layernorm.weight", NULL, C},
        {"mlp.gate_proj.weight", NULL, I * C},
        {"mlp.down_proj.weight", NULL, C * I},
        {"mlp.up_proj.weight", NULL, I * C},
        {NULL, "model.norm.weight", C},
        {NULL, NULL, 2 * (T * hs / 2)}, /* legacy RoPE tables: skipped */
        {NULL, h->shared ? NULL : "lm_head.weight", h->shared ? 0 : V * C}, /* an unshared classifier */
    };
    uint64_t at = HEADER_BYTES;
    char name[128];
    wl_status st = WL_OK;
    for (size_t k = 0; k < sizeof order / sizeof *order && st == WL_OK; k++) {
        if (order[k].suffix) {
            for (uint64_t l = 0; l < L && st == WL_OK; l++) {
                snprintf(name, sizeof name, "model.layers.%llu.%s", (unsigned long long)l, order[k].suffix);
                st = visit(ctx, name, at, order[k].numel);
                at += order[k].numel * 4;
            }
            continue;
        }
        if (order[k].name) st = visit(ctx, order[k].name, at, order[k].numel);
        at += order[k].numel * 4;
    }
    return st;
}

typedef struct fill_ctx {
    wl_model *m;
    uint8_t *seen;
    const uint8_t *buf;
} fill_ctx;

/* Write one checkpoint tensor (numel f32 values in the file at offset) into the model tensor `name`; mark it seen. */
static wl_status put(void *ctx, const char *name, uint64_t offset, uint64_t numel) {
    fill_ctx *f = ctx;
    int index;
    wl_status st = wl_model_find_tensor(f->m, name, &index);
    if (st != WL_OK) return wl_fail(WL_STATUS_BAD_STATE, "llama2.c: the model has no tensor \"%s\"", name);
    wl_tensor_info info;
    st = wl_model_tensor(f->m, index, &info);
    if (st != WL_OK) return st;
    if ((uint64_t)info.numel != numel)
        return wl_fail(WL_STATUS_SHAPE_MISMATCH, "llama2.c: tensor \"%s\" has %zu elements in the model, %llu in the file",
                       name, info.numel, (unsigned long long)numel);
    if (f->buf) {
        st = wl_model_write_tensor(f->m, index, WL_DTYPE_F32, 0, numel, f->buf + offset);
        if (st != WL_OK) return st;
    }
    f->seen[index] = 1;
    return WL_OK;
}

/* The seen flags cover every model tensor, or the first one left out is named. */
static wl_status check_all_seen(const wl_model *m, const uint8_t *seen) {
    for (int i = 0; i < wl_model_n_tensors(m); i++) {
        if (!seen[i]) {
            wl_tensor_info info;
            wl_status st = wl_model_tensor(m, i, &info);
            if (st != WL_OK) return st;
            return wl_fail(WL_STATUS_BAD_STATE, "llama2.c: the model tensor \"%s\" has no source in the checkpoint",
                           info.name);
        }
    }
    return WL_OK;
}

typedef struct parts_ctx {
    fill_ctx fill;
    wl_llama2c_part *parts;
    int cap, n;
} parts_ctx;

static wl_status record_part(void *ctx, const char *name, uint64_t offset, uint64_t numel) {
    parts_ctx *p = ctx;
    wl_status st = put(&p->fill, name, offset, numel);
    if (st != WL_OK) return st;
    if (p->n >= p->cap) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "llama2.c: more than %d tensors", p->cap);
    int index;
    wl_model_find_tensor(p->fill.m, name, &index);
    p->parts[p->n++] = (wl_llama2c_part){index, (double)offset, (double)numel};
    return WL_OK;
}

wl_status wl_llama2c_parts(const wl_model *model, const uint8_t *header, size_t header_len, uint64_t file_len,
                           wl_llama2c_part *parts, int cap, int *n_parts) {
    if (!model || !parts || !n_parts) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_llama2c_parts: NULL argument");
    *n_parts = 0;
    l2c_header h;
    wl_status st = read_header_of(header, header_len, file_len, &h);
    if (st != WL_OK) return st;
    const int n = wl_model_n_tensors(model);
    uint8_t *seen = wl_alloc((size_t)n, "llama2.c tensor flags");
    if (!seen) return WL_STATUS_OUT_OF_MEMORY;
    parts_ctx p = {{(wl_model *)model, seen, NULL}, parts, cap, 0};
    st = walk(&h, record_part, &p);
    if (st == WL_OK) st = check_all_seen(model, seen);
    wl_free(seen);
    if (st == WL_OK) *n_parts = p.n;
    return st;
}

wl_status wl_model_load_llama2c(const uint8_t *buf, size_t len, wl_model **out) {
    return wl_model_load_llama2c_quantized(buf, len, WL_STORAGE_F32, out);
}

wl_status wl_model_load_llama2c_quantized(const uint8_t *buf, size_t len, int storage, wl_model **out) {
    if (!out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_load_llama2c: out is NULL");
    *out = NULL;
    l2c_header h;
    wl_status st = read_header(buf, len, &h);
    if (st != WL_OK) return st;
    wl_config c;
    header_to_config(&h, &c);
    wl_model *m = NULL;
    st = wl_model_create_quantized(&c, storage, &m);
    if (st != WL_OK) return st;
    int n = wl_model_n_tensors(m);
    uint8_t *seen = wl_alloc((size_t)n, "llama2.c tensor flags");
    if (!seen) st = WL_STATUS_OUT_OF_MEMORY;
    fill_ctx f = {m, seen, buf};
    if (st == WL_OK) st = walk(&h, put, &f);
    if (st == WL_OK) st = check_all_seen(m, seen);
    wl_free(seen);
    if (st != WL_OK) {
        wl_model_free(m);
        return st;
    }
    *out = m;
    return WL_OK;
}
