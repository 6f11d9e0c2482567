/* config.c: validation of a model blueprint and the sizes it implies. */
#include <math.h>

#include "core/core.h"
#include "wl_model.h"

/* Limits far above any model a browser can hold, low enough that every product below fits in 64 bits. */
#define WL_MAX_DIM (1 << 16)
#define WL_MAX_HIDDEN (1 << 20)
#define WL_MAX_LAYERS 1024
#define WL_MAX_HEADS 1024
#define WL_MAX_HEAD_DIM 1024
#define WL_MAX_VOCAB (1 << 22)
#define WL_MAX_POSITIONS (1 << 20)

uint64_t wl_config_n_params(const wl_config *c) {
    uint64_t C = (uint64_t)c->dim, I = (uint64_t)c->hidden_dim, V = (uint64_t)c->vocab_size;
    uint64_t L = (uint64_t)c->n_layers;
    uint64_t q = (uint64_t)c->n_heads * c->head_dim, kv = (uint64_t)c->n_kv_heads * c->head_dim;
    uint64_t n = V * C;
    if (c->arch == WL_ARCH_GPT2) {
        n += (uint64_t)c->max_seq_len * C;                               /* wpe */
        n += L * (2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * I + I) + (I * C + C));
        n += 2 * C;                                                      /* ln_f */
    } else {
        uint64_t per = C + q * C + 2 * kv * C + C * q + C + 3 * C * I;
        if (c->qkv_bias) per += q + 2 * kv;
        n += L * per + C;
        if (!c->tied_embeddings) n += V * C;
    }
    return n;
}

static wl_status bad(const char *what, long long value) {
    return wl_fail(WL_STATUS_BAD_FORMAT, "model config: %s = %lld is out of range", what, value);
}

wl_status wl_config_validate(const wl_config *c) {
    if (!c) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "model config: NULL");
    if (c->arch != WL_ARCH_LLAMA && c->arch != WL_ARCH_GPT2)
        return wl_fail(WL_STATUS_UNSUPPORTED, "model config: unknown architecture %d", c->arch);
    if (c->dim <= 0 || c->dim > WL_MAX_DIM) return bad("dim", c->dim);
    if (c->hidden_dim <= 0 || c->hidden_dim > WL_MAX_HIDDEN) return bad("hidden_dim", c->hidden_dim);
    if (c->n_layers <= 0 || c->n_layers > WL_MAX_LAYERS) return bad("n_layers", c->n_layers);
    if (c->n_heads <= 0 || c->n_heads > WL_MAX_HEADS) return bad("n_heads", c->n_heads);
    if (c->n_kv_heads <= 0 || c->n_kv_heads > c->n_heads) return bad("n_kv_heads", c->n_kv_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return wl_fail(WL_STATUS_BAD_FORMAT, "model config: n_heads %d is not a multiple of n_kv_heads %d",
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim <= 0 || c->head_dim > WL_MAX_HEAD_DIM) return bad("head_dim", c->head_dim);
    if (c->vocab_size <= 0 || c->vocab_size > WL_MAX_VOCAB) return bad("vocab_size", c->vocab_size);
    if (c->max_seq_len <= 0 || c->max_seq_len > WL_MAX_POSITIONS) return bad("max_seq_len", c->max_seq_len);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps) || c->norm_eps > 1.0f)
        return wl_fail(WL_STATUS_BAD_FORMAT, "model config: norm_eps = %g is out of range", (double)c->norm_eps);
    if (c->bos_id < -1 || c->bos_id >= c->vocab_size) return bad("bos_id", c->bos_id);
    if (c->eos_id < -1 || c->eos_id >= c->vocab_size) return bad("eos_id", c->eos_id);
    if (c->arch == WL_ARCH_GPT2) {
        if (c->n_kv_heads != c->n_heads) return bad("n_kv_heads (GPT-2 needs n_heads)", c->n_kv_heads);
        if (c->head_dim * c->n_heads != c->dim)
            return wl_fail(WL_STATUS_BAD_FORMAT, "model config: GPT-2 needs n_embd %d divisible by n_head %d",
                           c->dim, c->n_heads);
        if (!c->tied_embeddings) return wl_fail(WL_STATUS_UNSUPPORTED, "model config: GPT-2 with an untied head");
        if (c->qkv_bias) return wl_fail(WL_STATUS_BAD_FORMAT, "model config: qkv_bias is a Llama-family option");
    } else {
        if (c->head_dim % 2 != 0) return wl_fail(WL_STATUS_BAD_FORMAT, "model config: RoPE needs an even head_dim, got %d", c->head_dim);
        if (c->rope_layout != WL_ROPE_HALF && c->rope_layout != WL_ROPE_INTERLEAVED) return bad("rope_layout", c->rope_layout);
        if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
            return wl_fail(WL_STATUS_BAD_FORMAT, "model config: rope_theta = %g is out of range", (double)c->rope_theta);
    }
    uint64_t n = wl_config_n_params(c);
    /* 2^34 floats (64 GB) is beyond any device we run on; the allocation reports the real limit. */
    if (n > (1ull << 34)) return wl_fail(WL_STATUS_BAD_FORMAT, "model config: %llu parameters is absurd", (unsigned long long)n);
    return WL_OK;
}
