/* embedding.c: LoRA on the token embedding (PEFT's lora.Embedding): the lookup of token t gains s B A[:, t], i.e.
 * s (one_hot(t) A^T) B^T, computed as a gather of A's column t and a thin GEMM, never forming B A (C, V). */
#include "layers/layers.h"

/* x A^T for one-hot rows: xa[n, k] = A[k, tokens[n]]  (N, r) */
static void gather_columns(float *xa, const float *A, const int *tokens, int N, int r, int V) {
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < r; k++) xa[(size_t)n * r + k] = A[(size_t)k * V + tokens[n]];
    }
}

void wl_embedding_lora_forward(wl_model *m, float *res, const int *tokens, int N, int train) {
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    for (int i = 0; i < m->n_adapters; i++) {
        const wl_adapter *a = m->adapters[i];
        const int idx = a->model_index[WL_LORA_EMBED];
        if (idx < 0) continue;
        const wl_lora_module *mod = &a->modules[idx];
        float *xa = train && a == m->trainable ? m->acts.lora_saved + m->acts.lora_saved_off[idx] : m->acts.lora_xa;
        gather_columns(xa, mod->A, tokens, N, mod->rank, V);
        /* res (N, C) += w s xa B^T */
        wl_sgemm(m->k, 0, 1, N, C, mod->rank, m->adapter_weights[i] * mod->scale, xa, mod->rank, mod->B, mod->rank,
                 1.0f, res, C);
    }
}

void wl_embedding_lora_backward(wl_model *m, const float *dres, const int *tokens, int N) {
    const wl_adapter *a = m->trainable;
    const int idx = a ? a->model_index[WL_LORA_EMBED] : -1;
    if (idx < 0) return;
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    const wl_lora_module *mod = &a->modules[idx];
    const int r = mod->rank;
    float s = 0.0f;
    for (int i = 0; i < m->n_adapters; i++) {
        if (m->adapters[i] == a) s = m->adapter_weights[i] * mod->scale;
    }
    const float *xa = m->acts.lora_saved + m->acts.lora_saved_off[idx];
    float *dxa = m->acts.lora_dxa;
    /* res += s xa B^T  =>  dB += s dres^T xa  (C, r);  dxa = s dres B  (N, r) */
    wl_sgemm(m->k, 1, 0, C, r, N, s, dres, C, xa, r, 1.0f, mod->dB, r);
    wl_sgemm(m->k, 0, 0, N, r, C, s, dres, C, mod->B, r, 0.0f, dxa, r);
    /* xa[n, k] = A[k, tokens[n]]  =>  dA[k, tokens[n]] += dxa[n, k] (a scatter-add: repeated tokens accumulate) */
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < r; k++) mod->dA[(size_t)k * V + tokens[n]] += dxa[(size_t)n * r + k];
    }
}
