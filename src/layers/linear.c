/* linear.c: a frozen linear layer with any number of attached LoRA adapters, forward and backward.
 * The unmerged LoRA path computes s * (x A^T) B^T: two thin GEMMs, never the (out, in) product B A. */
#include <string.h>

#include "layers/layers.h"

/* LoRA dropout keeps x[n, i] with probability 1 - p and scales it by 1 / (1 - p). The mask comes from a
 * counter-based hash of (seed, step, module, element), so backward regenerates it instead of storing it. */
static uint64_t dropout_stream(const wl_model *m) { return wl_hash64(m->dropout_seed, m->dropout_step); }

static uint64_t dropout_counter(int layer, int slot, size_t element) {
    return ((uint64_t)(layer * WL_MAX_SLOTS + slot) << 40) ^ (uint64_t)element;
}

/* dst = mask(x) / (1 - p), elementwise over (N, in). */
static void apply_dropout(const wl_model *m, int layer, int slot, float *dst, const float *x, size_t n) {
    const uint64_t stream = dropout_stream(m);
    const float p = m->dropout_p, keep_scale = 1.0f / (1.0f - p);
    for (size_t e = 0; e < n; e++) {
        float u = wl_hash_uniform(stream, dropout_counter(layer, slot, e));
        dst[e] = u >= p ? x[e] * keep_scale : 0.0f;
    }
}

static int dropout_active(const wl_model *m, const wl_adapter *a, int train) {
    return train && a == m->trainable && m->dropout_p > 0.0f;
}

static void add_bias(const wl_kernels *k, float *out, const float *b, int N, int n_out) {
    for (int n = 0; n < N; n++) k->axpy(out + (size_t)n * n_out, 1.0f, b, (size_t)n_out);
}

void wl_linear_forward(wl_model *m, int layer, int slot, float *out, const float *x, int N, int accumulate,
                       int train) {
    const wl_kernels *k = m->k;
    const wl_linear *lin = &m->blocks[layer].lin[slot];
    const int in = lin->in, n_out = lin->out;
    k->sgemm(0, 1, N, n_out, in, 1.0f, x, in, lin->w, in, accumulate ? 1.0f : 0.0f, out, n_out);
    if (lin->b) add_bias(k, out, lin->b, N, n_out);

    for (int i = 0; i < m->n_adapters; i++) {
        const wl_adapter *a = m->adapters[i];
        int idx = wl_adapter_find(a, layer, slot);
        if (idx < 0) continue;
        const wl_lora_module *mod = &a->modules[idx];
        const int r = mod->rank;
        const float s = m->adapter_weights[i] * mod->scale;
        const float *xin = x;
        float *xa = m->acts.lora_xa;
        if (train && a == m->trainable) xa = m->acts.lora_saved + m->acts.lora_saved_off[idx];
        if (dropout_active(m, a, train)) {
            apply_dropout(m, layer, slot, m->acts.lora_x, x, (size_t)N * in);
            xin = m->acts.lora_x;
        }
        k->sgemm(0, 1, N, r, in, 1.0f, xin, in, mod->A, in, 0.0f, xa, r);     /* xa = x A^T      (N, r)   */
        k->sgemm(0, 1, N, n_out, r, s, xa, r, mod->B, r, 1.0f, out, n_out);   /* out += s xa B^T (N, out) */
    }
}

void wl_linear_backward(wl_model *m, int layer, int slot, float *dx, int accumulate, const float *dout,
                        const float *x, int N) {
    const wl_kernels *k = m->k;
    const wl_linear *lin = &m->blocks[layer].lin[slot];
    const int in = lin->in, n_out = lin->out;

    /* out = x W^T + b  =>  dx = dout W, dW += dout^T x, db += sum_n dout */
    if (dx) k->sgemm(0, 0, N, in, n_out, 1.0f, dout, n_out, lin->w, in, accumulate ? 1.0f : 0.0f, dx, in);
    if (m->grads) {
        k->sgemm(1, 0, n_out, in, N, 1.0f, dout, n_out, x, in, 1.0f, wl_grad_of(m, lin->w), in);
        if (lin->b) {
            float *db = wl_grad_of(m, lin->b);
            for (int n = 0; n < N; n++) k->axpy(db, 1.0f, dout + (size_t)n * n_out, (size_t)n_out);
        }
    }

    for (int i = 0; i < m->n_adapters; i++) {
        const wl_adapter *a = m->adapters[i];
        int idx = wl_adapter_find(a, layer, slot);
        if (idx < 0) continue;
        const wl_lora_module *mod = &a->modules[idx];
        const int r = mod->rank;
        const float s = m->adapter_weights[i] * mod->scale;
        float *dxa = m->acts.lora_dxa;
        /* out += s xa B^T  =>  dxa = s dout B   (N, r) */
        k->sgemm(0, 0, N, r, n_out, s, dout, n_out, mod->B, r, 0.0f, dxa, r);
        const int dropped = dropout_active(m, a, 1);
        if (a == m->trainable) {
            const float *xa = m->acts.lora_saved + m->acts.lora_saved_off[idx];
            const float *xin = x;
            if (dropped) {
                apply_dropout(m, layer, slot, m->acts.lora_x, x, (size_t)N * in);
                xin = m->acts.lora_x;
            }
            k->sgemm(1, 0, n_out, r, N, s, dout, n_out, xa, r, 1.0f, mod->dB, r);  /* dB += s dout^T xa  (out, r) */
            k->sgemm(1, 0, r, in, N, 1.0f, dxa, r, xin, in, 1.0f, mod->dA, in);   /* dA += dxa^T x'     (r, in)  */
        }
        if (!dx) continue;
        /* xa = x' A^T  =>  dx' = dxa A; through dropout dx = mask(dx') / (1 - p) */
        if (dropped) {
            float *dxl = m->acts.lora_dx;
            k->sgemm(0, 0, N, in, r, 1.0f, dxa, r, mod->A, in, 0.0f, dxl, in);
            apply_dropout(m, layer, slot, dxl, dxl, (size_t)N * in);
            k->axpy(dx, 1.0f, dxl, (size_t)N * in);
        } else {
            k->sgemm(0, 0, N, in, r, 1.0f, dxa, r, mod->A, in, 1.0f, dx, in);
        }
    }
}
