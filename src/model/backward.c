/* backward.c: gradients of the mean next-token cross-entropy through the frozen network into the trainable
 * LoRA adapter (and every weight in full-parameter training). Work stops at the lowest trainable module: nothing
 * below it needs a gradient. Each block's backward mirrors its forward in forward.c, bottom to top reversed. */
#include <string.h>

#include "layers/layers.h"

/* Stages of a block in forward order; a module's stage is m->slot_stage[slot]. Global stage g = 4 * layer + s. */
#define WL_STAGES 4

/* The lowest global stage holding a trainable parameter; -1 when the embeddings train (full-parameter mode). */
static int lowest_trainable_stage(const wl_model *m) {
    if (m->grads) return -1;
    int lowest = WL_STAGES * m->cfg.n_layers;
    const wl_adapter *a = m->trainable;
    for (int i = 0; i < a->n_modules; i++) {
        const wl_lora_module *mod = &a->modules[i];
        /* the embedding's update needs dL/d(embedding output), the gradient below every block; the head none */
        if (mod->layer == WL_LORA_MODEL_LAYER && mod->slot == WL_LORA_EMBED) return -1;
        if (mod->layer == WL_LORA_MODEL_LAYER) continue;
        int g = WL_STAGES * mod->layer + m->slot_stage[mod->slot];
        if (g < lowest) lowest = g;
    }
    return lowest;
}

static float *grad_or_null(const wl_model *m, const float *p) { return p ? wl_grad_of(m, p) : NULL; }

static void rope_backward(wl_model *m, float *d, int N, int n_heads) {
    const wl_config *c = &m->cfg;
    wl_rope(m->k, d, N, n_heads, c->head_dim, n_heads * c->head_dim, m->acts.positions, m->rope_cos, m->rope_sin,
            c->rope_layout, 1);
}

/* On entry acts.d_res holds dL/d(block output); on return dL/d(block input), unless the block is the lowest. */
static void llama_block_backward(wl_model *m, int l, int lowest) {
    const wl_config *c = &m->cfg;
    const wl_kernels *k = m->k;
    const wl_block *blk = &m->blocks[l];
    wl_layer_acts *la = &m->acts.layers[l];
    wl_acts *a = &m->acts;
    const int B = m->last_B, T = m->last_T, N = B * T, C = c->dim, I = c->hidden_dim;
    const int g = WL_STAGES * l;

    /* out = res2 + down(act) */
    int need = g + 3 > lowest;
    wl_linear_backward(m, l, WL_LLAMA_DOWN, need ? a->d_act : NULL, 0, a->d_res, la->act, N);
    if (!need) return;
    /* act = silu(gate(ln2)) * up(ln2) */
    wl_swiglu_backward(k, a->d_h1, a->d_h2, a->d_act, la->h1, la->h2, (size_t)N * I);
    need = g + 2 > lowest;
    wl_linear_backward(m, l, WL_LLAMA_GATE, need ? a->d_ln : NULL, 0, a->d_h1, la->ln2, N);
    wl_linear_backward(m, l, WL_LLAMA_UP, need ? a->d_ln : NULL, 1, a->d_h2, la->ln2, N);
    if (!need) return;
    /* ln2 = rmsnorm(res2): d_res becomes dL/d(res2) */
    wl_rmsnorm_backward(k, a->d_res, grad_or_null(m, blk->norm2_w), a->d_ln, la->res2, blk->norm2_w, la->ln2_rstd, N,
                        C);
    /* res2 = res + o(atty) */
    need = g + 1 > lowest;
    wl_linear_backward(m, l, WL_LLAMA_O, need ? a->d_atty : NULL, 0, a->d_res, la->atty, N);
    if (!need) return;
    /* atty = attention(rope(q), rope(k), v) */
    wl_attention_backward(k, a->d_q, a->d_k, a->d_v, a->scores, a->scores_floats, a->d_atty, la->q, a->k_cache[l],
                          a->v_cache[l], B, T, c->n_heads, c->n_kv_heads, c->head_dim);
    rope_backward(m, a->d_q, N, c->n_heads);
    rope_backward(m, a->d_k, N, c->n_kv_heads);
    need = g > lowest;
    wl_linear_backward(m, l, WL_LLAMA_Q, need ? a->d_ln : NULL, 0, a->d_q, la->ln1, N);
    wl_linear_backward(m, l, WL_LLAMA_K, need ? a->d_ln : NULL, 1, a->d_k, la->ln1, N);
    wl_linear_backward(m, l, WL_LLAMA_V, need ? a->d_ln : NULL, 1, a->d_v, la->ln1, N);
    if (!need) return;
    /* ln1 = rmsnorm(res): d_res becomes dL/d(res) */
    wl_rmsnorm_backward(k, a->d_res, grad_or_null(m, blk->norm1_w), a->d_ln, la->res, blk->norm1_w, la->ln1_rstd, N,
                        C);
}

static void gpt2_block_backward(wl_model *m, int l, int lowest) {
    const wl_config *c = &m->cfg;
    const wl_kernels *k = m->k;
    const wl_block *blk = &m->blocks[l];
    wl_layer_acts *la = &m->acts.layers[l];
    wl_acts *a = &m->acts;
    const int B = m->last_B, T = m->last_T, N = B * T, C = c->dim, I = c->hidden_dim;
    const int g = WL_STAGES * l;

    /* out = res2 + mlp.c_proj(gelu(c_fc(ln2))) */
    int need = g + 3 > lowest;
    wl_linear_backward(m, l, WL_GPT2_MLP_C_PROJ, need ? a->d_act : NULL, 0, a->d_res, la->act, N);
    if (!need) return;
    wl_gelu_backward(k, a->d_h1, la->h1, a->d_act, (size_t)N * I);
    need = g + 2 > lowest;
    wl_linear_backward(m, l, WL_GPT2_C_FC, need ? a->d_ln : NULL, 0, a->d_h1, la->ln2, N);
    if (!need) return;
    wl_layernorm_backward(k, a->d_res, grad_or_null(m, blk->norm2_w), grad_or_null(m, blk->norm2_b), a->d_ln, la->res2,
                          blk->norm2_w, la->ln2_mean, la->ln2_rstd, N, C);
    /* res2 = res + attn.c_proj(atty) */
    need = g + 1 > lowest;
    wl_linear_backward(m, l, WL_GPT2_ATTN_C_PROJ, need ? a->d_atty : NULL, 0, a->d_res, la->atty, N);
    if (!need) return;
    wl_attention_backward(k, a->d_q, a->d_k, a->d_v, a->scores, a->scores_floats, a->d_atty, la->q, a->k_cache[l],
                          a->v_cache[l], B, T, c->n_heads, c->n_kv_heads, c->head_dim);
    /* q, k, v were column slices of the fused c_attn output */
    float *dqkv = a->qkv;
    for (int n = 0; n < N; n++) {
        float *row = dqkv + (size_t)n * 3 * C;
        memcpy(row, a->d_q + (size_t)n * C, (size_t)C * sizeof(float));
        memcpy(row + C, a->d_k + (size_t)n * C, (size_t)C * sizeof(float));
        memcpy(row + 2 * C, a->d_v + (size_t)n * C, (size_t)C * sizeof(float));
    }
    need = g > lowest;
    wl_linear_backward(m, l, WL_GPT2_C_ATTN, need ? a->d_ln : NULL, 0, dqkv, la->ln1, N);
    if (!need) return;
    wl_layernorm_backward(k, a->d_res, grad_or_null(m, blk->norm1_w), grad_or_null(m, blk->norm1_b), a->d_ln, la->res,
                          blk->norm1_w, la->ln1_mean, la->ln1_rstd, N, C);
}

wl_status wl_model_backward(wl_model *m) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_backward: NULL model");
    if (!m->backward_ready)
        return wl_fail(WL_STATUS_BAD_STATE,
                       "backward needs a training forward pass (WL_FORWARD_TRAIN) with at least one target just before it");
    if (!m->trainable && !m->grads)
        return wl_fail(WL_STATUS_BAD_STATE, "nothing to train: set a trainable adapter or full-parameter training");
    m->backward_ready = 0; /* the logits are about to become their gradient */

    const wl_config *c = &m->cfg;
    const wl_kernels *k = m->k;
    wl_acts *a = &m->acts;
    const int N = m->last_B * m->last_T, C = c->dim, V = c->vocab_size;
    const int lowest = lowest_trainable_stage(m);

    /* loss = mean over valid rows of xent(logits)  =>  dlogits = (softmax - onehot) / n_valid, in place */
    float *dlogits = a->logits;
    wl_xent_backward(k, dlogits, a->targets, N, V, m->last_ignore_id, 1.0f / (float)m->last_n_valid);
    /* logits = lnf lm_head^T  =>  d_lnf = dlogits lm_head, d_lm_head += dlogits^T lnf */
    if (wl_model_head_adapted(m)) {
        wl_linear_backward(m, WL_LORA_MODEL_LAYER, WL_LORA_HEAD, a->d_ln, 0, dlogits, a->lnf, N);
    } else if (m->lm_head_q) {
        wl_qgemm_nn(k, N, dlogits, V, m->lm_head_q, NULL, NULL, a->d_ln, C, m->qtile, m->qtile_floats);
    } else {
        wl_sgemm(k, 0, 0, N, C, V, 1.0f, dlogits, V, m->lm_head, C, 0.0f, a->d_ln, C);
        if (m->grads) wl_sgemm(k, 1, 0, V, C, N, 1.0f, dlogits, V, a->lnf, C, 1.0f, wl_grad_of(m, m->lm_head), C);
    }
    memset(a->d_res, 0, (size_t)N * C * sizeof(float));
    if (c->arch == WL_ARCH_GPT2) {
        wl_layernorm_backward(k, a->d_res, grad_or_null(m, m->normf_w), grad_or_null(m, m->normf_b), a->d_ln,
                              a->res_final, m->normf_w, a->lnf_mean, a->lnf_rstd, N, C);
    } else {
        wl_rmsnorm_backward(k, a->d_res, grad_or_null(m, m->normf_w), a->d_ln, a->res_final, m->normf_w, a->lnf_rstd, N,
                            C);
    }

    for (int l = c->n_layers - 1; l >= 0; l--) {
        if (WL_STAGES * l + WL_STAGES - 1 < lowest) break;
        /* Recompute plans share one set of block activations, which still holds the last block's. */
        if (m->recompute && l < c->n_layers - 1) wl_model_recompute_block(m, l);
        if (c->arch == WL_ARCH_GPT2) {
            gpt2_block_backward(m, l, lowest);
        } else {
            llama_block_backward(m, l, lowest);
        }
    }

    if (lowest < 0 && m->trainable) wl_embedding_lora_backward(m, a->d_res, a->tokens, N);
    if (m->grads) {
        /* res0 = wte[token] (+ wpe[position]) */
        float *dwte = wl_grad_of(m, m->wte);
        float *dwpe = m->wpe ? wl_grad_of(m, m->wpe) : NULL;
        for (int n = 0; n < N; n++) {
            const float *d = a->d_res + (size_t)n * C;
            k->axpy(dwte + (size_t)a->tokens[n] * C, 1.0f, d, (size_t)C);
            if (dwpe) k->axpy(dwpe + (size_t)a->positions[n] * C, 1.0f, d, (size_t)C);
        }
    }
    return WL_OK;
}
