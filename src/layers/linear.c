/* linear.c: a frozen linear layer with any number of attached LoRA adapters, forward and backward.
 * The unmerged LoRA path computes s * (x A^T) B^T: a thin GEMM for x A^T, whose result is kept for backward,
 * and the (N, out) update as a second term of the base GEMM, never the (out, in) product B A. */
#include <string.h>

#include "core/parallel.h"
#include "layers/layers.h"

/* LoRA dropout keeps x[n, i] with probability 1 - p and scales it by 1 / (1 - p). The mask comes from a
 * counter-based hash of (seed, step, module, element), so backward regenerates it instead of storing it. */
static uint64_t dropout_stream(const wl_model *m) { return wl_hash64(m->dropout_seed, m->dropout_step); }

static uint64_t dropout_counter(int layer, int slot, size_t element) {
    return ((uint64_t)(layer * WL_MAX_SLOTS + slot) << 40) ^ (uint64_t)element;
}

typedef struct dropout_job {
    float *dst;
    const float *x;
    size_t n;
    uint64_t stream;
    int layer, slot, pieces;
    float p, keep_scale;
} dropout_job;

static void dropout_task(void *ctx, int piece) {
    const dropout_job *j = ctx;
    size_t e0 = j->n * (size_t)piece / (size_t)j->pieces, e1 = j->n * (size_t)(piece + 1) / (size_t)j->pieces;
    for (size_t e = e0; e < e1; e++) {
        float u = wl_hash_uniform(j->stream, dropout_counter(j->layer, j->slot, e));
        j->dst[e] = u >= j->p ? j->x[e] * j->keep_scale : 0.0f;
    }
}

/* dst = mask(x) / (1 - p), elementwise over (N, in). */
static void apply_dropout(const wl_model *m, int layer, int slot, float *dst, const float *x, size_t n) {
    dropout_job j = {dst, x, n, dropout_stream(m), layer, slot, 1, m->dropout_p, 1.0f / (1.0f - m->dropout_p)};
    j.pieces = wl_parallel_pieces(n > 0x7fffffff ? 0x7fffffff : (int)n, 16384);
    wl_parallel_for(j.pieces, dropout_task, &j);
}

static int dropout_active(const wl_model *m, const wl_adapter *a, int train) {
    return train && a == m->trainable && m->dropout_p > 0.0f;
}

/* The LoRA update term s (x' A^T) B^T of attached adapter i, after computing x' A^T (kept for backward when the
 * adapter trains). NULL when the adapter does not adapt this module. */
static int lora_term(wl_model *m, int i, int layer, int slot, const float *x, int N, int train, wl_gemm_term *term) {
    const wl_adapter *a = m->adapters[i];
    int idx = wl_adapter_find(a, layer, slot);
    if (idx < 0) return 0;
    const wl_lora_module *mod = &a->modules[idx];
    const int r = mod->rank, in = wl_linear_of(m, layer, slot)->in;
    const float *xin = x;
    float *xa = m->acts.lora_xa;
    if (train && a == m->trainable) xa = m->acts.lora_saved + m->acts.lora_saved_off[idx];
    if (dropout_active(m, a, train)) {
        apply_dropout(m, layer, slot, m->acts.lora_x, x, (size_t)N * in);
        xin = m->acts.lora_x;
    }
    wl_sgemm(m->k, 0, 1, N, r, in, 1.0f, xin, in, mod->A, in, 0.0f, xa, r); /* xa = x A^T  (N, r) */
    *term = (wl_gemm_term){xa, mod->B, r, r, r, 0, 1, m->adapter_weights[i] * mod->scale}; /* s xa B^T (N, out) */
    return 1;
}

/* The DoRA module of this layer (a DoRA adapter is attached alone), or NULL; *index gets its module index. */
static const wl_lora_module *dora_module(const wl_model *m, int layer, int slot, int *index) {
    if (m->n_adapters != 1 || !m->adapters[0]->dora) return NULL;
    *index = wl_adapter_find(m->adapters[0], layer, slot);
    return *index >= 0 ? &m->adapters[0]->modules[*index] : NULL;
}

/* DoRA: z = x W^T + s (x A^T) B^T into a buffer (kept for backward when the adapter trains), then
 * out = add + (m / ||W + s B A||_row) z + b. */
static void dora_forward(wl_model *m, int layer, int slot, int index, float *out, const float *x, int N,
                         const float *add, int train) {
    const wl_linear *lin = wl_linear_of(m, layer, slot);
    const wl_adapter *a = m->adapters[0];
    const wl_lora_module *mod = &a->modules[index];
    const int in = lin->in, n_out = lin->out;
    wl_gemm_term terms[2];
    terms[0] = (wl_gemm_term){x, lin->w, in, in, in, 0, 1, 1.0f};
    lora_term(m, 0, layer, slot, x, N, train, &terms[1]);
    float *z = m->acts.lora_z;
    if (train && a == m->trainable) z = m->acts.lora_saved + m->acts.lora_z_off[index];
    if (lin->qw) {
        wl_qgemm_nt(m->k, N, x, in, lin->qw, &terms[1], NULL, NULL, z, n_out, m->qtile, m->qtile_floats,
                    train ? WL_QGEMM_EXACT : WL_QGEMM_FORWARD);
    } else {
        m->k->gemm(N, n_out, terms, 2, NULL, NULL, z, n_out);
    }
    const float *norms = wl_dora_norms_of(a, index);
    for (int n = 0; n < N; n++) {
        const float *zr = z + (size_t)n * n_out;
        const float *ar = add ? add + (size_t)n * n_out : NULL;
        float *o = out + (size_t)n * n_out;
        for (int j = 0; j < n_out; j++) {
            float v = mod->magnitude[j] / norms[j] * zr[j];
            if (lin->b) v += lin->b[j];
            o[j] = ar ? ar[j] + v : v;
        }
    }
}

void wl_linear_forward(wl_model *m, int layer, int slot, float *out, const float *x, int N, const float *add,
                       int train) {
    const wl_linear *lin = wl_linear_of(m, layer, slot);
    const int in = lin->in, n_out = lin->out;
    int dora_index;
    if (dora_module(m, layer, slot, &dora_index)) {
        dora_forward(m, layer, slot, dora_index, out, x, N, add, train);
        return;
    }
    wl_gemm_term terms[2];
    terms[0] = (wl_gemm_term){x, lin->w, in, in, in, 0, 1, 1.0f};
    int n_terms = 1, i = 0;
    /* The first adapter on this module joins the base GEMM; any further ones (mixes) add to out after it. Their
     * x A^T share one buffer, so each is computed right before its own GEMM. */
    for (; i < m->n_adapters && n_terms == 1; i++) n_terms += lora_term(m, i, layer, slot, x, N, train, &terms[1]);
    if (lin->qw) {
        wl_qgemm_nt(m->k, N, x, in, lin->qw, n_terms > 1 ? &terms[1] : NULL, add, lin->b, out, n_out, m->qtile,
                    m->qtile_floats, train ? WL_QGEMM_EXACT : WL_QGEMM_FORWARD);
    } else {
        m->k->gemm(N, n_out, terms, n_terms, add, lin->b, out, n_out);
    }
    for (; i < m->n_adapters; i++) {
        if (lora_term(m, i, layer, slot, x, N, train, &terms[1]))
            m->k->gemm(N, n_out, &terms[1], 1, out, NULL, out, n_out);
    }
}

/* dx += dxa A for adapter module mod (through the dropout mask when it trains with dropout). */
static void lora_dx(wl_model *m, int layer, int slot, const wl_lora_module *mod, const float *dxa, int dropped,
                    float *dx, int N) {
    const int in = wl_linear_of(m, layer, slot)->in, r = mod->rank;
    if (dropped) {
        float *dxl = m->acts.lora_dx;
        wl_sgemm(m->k, 0, 0, N, in, r, 1.0f, dxa, r, mod->A, in, 0.0f, dxl, in);
        apply_dropout(m, layer, slot, dxl, dxl, (size_t)N * in);
        wl_axpy(m->k, dx, 1.0f, dxl, (size_t)N * in);
    } else {
        wl_sgemm(m->k, 0, 0, N, in, r, 1.0f, dxa, r, mod->A, in, 1.0f, dx, in);
    }
}

/* dx = add + dout W (terms[0]) + terms[1] when n_terms is 2, from the f32 or the quantised weight. */
static void base_dx(wl_model *m, const wl_linear *lin, const wl_gemm_term *terms, int n_terms, const float *add,
                    float *dx, int N) {
    if (lin->qw) {
        wl_qgemm_nn(m->k, N, terms[0].A, terms[0].lda, lin->qw, n_terms > 1 ? &terms[1] : NULL, add, dx, lin->in,
                    m->qtile, m->qtile_floats);
    } else {
        m->k->gemm(N, lin->in, terms, n_terms, add, NULL, dx, lin->in);
    }
}

void wl_linear_backward(wl_model *m, int layer, int slot, float *dx, int accumulate, const float *dout,
                        const float *x, int N) {
    const wl_kernels *k = m->k;
    const wl_linear *lin = wl_linear_of(m, layer, slot);
    const int in = lin->in, n_out = lin->out;

    /* db += sum_n dout (a DoRA layer adds b after its scaling too) */
    if (m->grads && lin->b) {
        float *db = wl_grad_of(m, lin->b);
        for (int n = 0; n < N; n++) k->axpy(db, 1.0f, dout + (size_t)n * n_out, (size_t)n_out);
    }
    /* DoRA: out = g z + b with g = m / ||W + s B A||_row constant (detached)  =>  dm += sum_n dout z / norm, and
     * z = x W^T + s xa B^T sees dz = g dout, which flows on exactly like a plain LoRA layer's dout. */
    int dora_index;
    const wl_lora_module *dmod = dora_module(m, layer, slot, &dora_index);
    if (dmod) {
        const wl_adapter *a = m->adapters[0];
        const float *norms = wl_dora_norms_of(a, dora_index);
        float *dz = m->acts.lora_z;
        if (a == m->trainable) {
            const float *z = m->acts.lora_saved + m->acts.lora_z_off[dora_index];
            for (int n = 0; n < N; n++) {
                for (int j = 0; j < n_out; j++)
                    dmod->dmagnitude[j] += dout[(size_t)n * n_out + j] * z[(size_t)n * n_out + j] / norms[j];
            }
        }
        for (int n = 0; n < N; n++) {
            for (int j = 0; j < n_out; j++) dz[(size_t)n * n_out + j] = dmod->magnitude[j] / norms[j] * dout[(size_t)n * n_out + j];
        }
        dout = dz;
    }

    /* out = x W^T + b  =>  dW += dout^T x */
    if (m->grads) wl_sgemm(k, 1, 0, n_out, in, N, 1.0f, dout, n_out, x, in, 1.0f, wl_grad_of(m, lin->w), in);

    /* dx = dout W + sum over adapters of dxa A: the first adapter without dropout joins the base GEMM. */
    wl_gemm_term terms[2];
    terms[0] = (wl_gemm_term){dout, lin->w, n_out, in, n_out, 0, 0, 1.0f};
    int n_terms = 1, base_done = dx == NULL;
    for (int i = 0; i < m->n_adapters; i++) {
        const wl_adapter *a = m->adapters[i];
        int idx = wl_adapter_find(a, layer, slot);
        if (idx < 0) continue;
        const wl_lora_module *mod = &a->modules[idx];
        const int r = mod->rank;
        const float s = m->adapter_weights[i] * mod->scale;
        float *dxa = m->acts.lora_dxa;
        /* out += s xa B^T  =>  dxa = s dout B   (N, r) */
        wl_sgemm(k, 0, 0, N, r, n_out, s, dout, n_out, mod->B, r, 0.0f, dxa, r);
        const int dropped = dropout_active(m, a, 1);
        if (a == m->trainable) {
            const float *xa = m->acts.lora_saved + m->acts.lora_saved_off[idx];
            const float *xin = x;
            if (dropped) {
                apply_dropout(m, layer, slot, m->acts.lora_x, x, (size_t)N * in);
                xin = m->acts.lora_x;
            }
            wl_sgemm(k, 1, 0, n_out, r, N, s, dout, n_out, xa, r, 1.0f, mod->dB, r); /* dB += s dout^T xa  (out, r) */
            wl_lora_mask_blocks(mod, mod->dB); /* MergedLinear: B stays zero outside its blocks */
            wl_sgemm(k, 1, 0, r, in, N, 1.0f, dxa, r, xin, in, 1.0f, mod->dA, in);  /* dA += dxa^T x'     (r, in)  */
        }
        if (!dx) continue;
        /* xa = x' A^T  =>  dx' = dxa A; through dropout dx = mask(dx') / (1 - p) */
        if (!base_done && !dropped) {
            terms[n_terms++] = (wl_gemm_term){dxa, mod->A, r, in, r, 0, 0, 1.0f};
            base_dx(m, lin, terms, n_terms, accumulate ? dx : NULL, dx, N);
            base_done = 1;
        } else {
            if (!base_done) {
                base_dx(m, lin, terms, 1, accumulate ? dx : NULL, dx, N);
                base_done = 1;
            }
            lora_dx(m, layer, slot, mod, dxa, dropped, dx, N);
        }
    }
    if (!base_done) base_dx(m, lin, terms, 1, accumulate ? dx : NULL, dx, N);
}
