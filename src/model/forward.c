/* forward.c: the forward pass of Llama-family and GPT-2 blocks over a batch, with the KV cache that makes
 * prefill and token-by-token decoding the same code path. */
#include <math.h>
#include <string.h>

#include "layers/layers.h"

/* Where block l's new keys (or values) go: the N cache rows b * T + pos0 + t, contiguous from row pos0 (pos0 > 0
 * only when B = 1), so the projections write straight into the cache. */
static float *new_kv_rows(float *cache, int pos0, int kvd) { return cache + (size_t)pos0 * kvd; }

static void attention(wl_model *m, int l, wl_layer_acts *la, int B, int T, int pos0) {
    const wl_config *c = &m->cfg;
    wl_attention_forward(m->k, la->atty, m->acts.scores, m->acts.scores_floats, la->q, m->acts.k_cache[l],
                         m->acts.v_cache[l], B, T, pos0, c->n_heads, c->n_kv_heads, c->head_dim);
}

/* Input and output of block l: the training activations, or two buffers taking turns in inference. */
static float *block_input(wl_model *m, int l, int train) {
    if (train) return m->acts.layers[l].res;
    return l % 2 == 0 ? m->acts.res_ping : m->acts.res_pong;
}

static float *block_output(wl_model *m, int l, int train) {
    if (l + 1 == m->cfg.n_layers) return m->acts.res_final;
    return block_input(m, l + 1, train);
}

static wl_layer_acts *block_acts(wl_model *m, int l, int train) { return train ? &m->acts.layers[l] : &m->acts.infer; }

/* 1 when a DoRA adapter trains on a recompute plan: its modules' z are kept per slot, not per layer, so the block's
 * output projection must run again to refill its own (lora_z_off). Otherwise the output projection's LoRA input
 * x A^T (or a DoRA module's z) stays saved per module from the first pass and the recomputation skips it. */
static int dora_z_shared(const wl_model *m) { return m->recompute && m->trainable && m->trainable->dora; }

/* recompute: fill block l's activations again for backward; the block output (the next block's input, which is kept)
 * only when dora_z_shared. */
static void llama_block_forward(wl_model *m, int l, int B, int T, int pos0, int train, int recompute) {
    const wl_config *c = &m->cfg;
    const wl_kernels *k = m->k;
    const wl_block *blk = &m->blocks[l];
    wl_layer_acts *la = block_acts(m, l, train);
    const float *res = block_input(m, l, train);
    const int N = B * T, C = c->dim, I = c->hidden_dim;
    const int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int *pos = m->acts.positions;

    wl_rmsnorm_forward(k, la->ln1, la->ln1_rstd, res, blk->norm1_w, N, C, c->norm_eps);
    wl_linear_forward(m, l, WL_LLAMA_Q, la->q, la->ln1, N, NULL, train);
    float *k_new = new_kv_rows(m->acts.k_cache[l], pos0, kvd), *v_new = new_kv_rows(m->acts.v_cache[l], pos0, kvd);
    wl_linear_forward(m, l, WL_LLAMA_K, k_new, la->ln1, N, NULL, train);
    wl_linear_forward(m, l, WL_LLAMA_V, v_new, la->ln1, N, NULL, train);
    wl_rope(k, la->q, N, c->n_heads, c->head_dim, qd, pos, m->rope_cos, m->rope_sin, c->rope_layout, 0);
    wl_rope(k, k_new, N, c->n_kv_heads, c->head_dim, kvd, pos, m->rope_cos, m->rope_sin, c->rope_layout, 0);
    attention(m, l, la, B, T, pos0);

    /* The residual adds happen in the GEMMs' write-out: res2 = res + o(atty), out = res2 + down(act). */
    wl_linear_forward(m, l, WL_LLAMA_O, la->res2, la->atty, N, res, train);

    wl_rmsnorm_forward(k, la->ln2, la->ln2_rstd, la->res2, blk->norm2_w, N, C, c->norm_eps);
    wl_linear_forward(m, l, WL_LLAMA_GATE, la->h1, la->ln2, N, NULL, train);
    wl_linear_forward(m, l, WL_LLAMA_UP, la->h2, la->ln2, N, NULL, train);
    wl_swiglu_forward(k, la->act, la->h1, la->h2, (size_t)N * I);
    if (recompute && !dora_z_shared(m)) return;
    wl_linear_forward(m, l, WL_LLAMA_DOWN, block_output(m, l, train), la->act, N, la->res2, train);
}

static void gpt2_block_forward(wl_model *m, int l, int B, int T, int pos0, int train, int recompute) {
    const wl_config *c = &m->cfg;
    const wl_kernels *k = m->k;
    const wl_block *blk = &m->blocks[l];
    wl_layer_acts *la = block_acts(m, l, train);
    const float *res = block_input(m, l, train);
    const int N = B * T, C = c->dim, I = c->hidden_dim;

    wl_layernorm_forward(k, la->ln1, la->ln1_mean, la->ln1_rstd, res, blk->norm1_w, blk->norm1_b, N, C, c->norm_eps);
    float *qkv = m->acts.qkv;
    wl_linear_forward(m, l, WL_GPT2_C_ATTN, qkv, la->ln1, N, NULL, train);
    float *k_new = new_kv_rows(m->acts.k_cache[l], pos0, C), *v_new = new_kv_rows(m->acts.v_cache[l], pos0, C);
    for (int n = 0; n < N; n++) {
        const float *row = qkv + (size_t)n * 3 * C;
        memcpy(la->q + (size_t)n * C, row, (size_t)C * sizeof(float));
        memcpy(k_new + (size_t)n * C, row + C, (size_t)C * sizeof(float));
        memcpy(v_new + (size_t)n * C, row + 2 * C, (size_t)C * sizeof(float));
    }
    attention(m, l, la, B, T, pos0);

    wl_linear_forward(m, l, WL_GPT2_ATTN_C_PROJ, la->res2, la->atty, N, res, train);

    wl_layernorm_forward(k, la->ln2, la->ln2_mean, la->ln2_rstd, la->res2, blk->norm2_w, blk->norm2_b, N, C,
                         c->norm_eps);
    wl_linear_forward(m, l, WL_GPT2_C_FC, la->h1, la->ln2, N, NULL, train);
    wl_gelu_forward(k, la->act, la->h1, (size_t)N * I);
    if (recompute && !dora_z_shared(m)) return;
    wl_linear_forward(m, l, WL_GPT2_MLP_C_PROJ, block_output(m, l, train), la->act, N, la->res2, train);
}

void wl_model_recompute_block(wl_model *m, int l) {
    WL_ASSERT(m->recompute && m->acts.layers);
    /* The same kernels on the same input (and LoRA dropout on the same (seed, step) mask) give the same values as
     * the training pass did. */
    if (m->cfg.arch == WL_ARCH_GPT2) {
        gpt2_block_forward(m, l, m->last_B, m->last_T, 0, 1, 1);
    } else {
        llama_block_forward(m, l, m->last_B, m->last_T, 0, 1, 1);
    }
}

wl_status wl_model_forward(wl_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, int pos0,
                           int flags, int32_t ignore_id, float *loss) {
    if (!m || !tokens) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_forward: NULL argument");
    const wl_config *c = &m->cfg;
    const int train = (flags & WL_FORWARD_TRAIN) != 0, last_only = (flags & WL_FORWARD_LAST_LOGITS) != 0;
    if (B <= 0 || T <= 0) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "forward: B = %d and T = %d must be positive", B, T);
    if (pos0 < 0) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "forward: negative start position %d", pos0);
    if ((int64_t)B * T > m->N_cap || T > m->T_cap)
        return wl_fail(WL_STATUS_BAD_STATE, "forward: B = %d, T = %d exceed the reserved %d tokens of up to %d per sequence "
                       "(call wl_model_reserve)", B, T, m->N_cap, m->T_cap);
    if ((int64_t)pos0 + T > m->N_cap || (int64_t)pos0 + T > c->max_seq_len)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "forward: position %d is beyond the context (%d reserved, %d in the model)",
                       pos0 + T - 1, m->N_cap, c->max_seq_len);
    if (train && (int64_t)B * T > m->N_train_cap)
        return wl_fail(WL_STATUS_BAD_STATE, "forward: training on %d tokens needs wl_model_reserve(..., WL_RESERVE_TRAIN) "
                       "for at least that many (reserved %d)", B * T, m->N_train_cap);
    if ((last_only ? B : B * T) > m->logit_cap)
        return wl_fail(WL_STATUS_BAD_STATE, "forward: logits for %d rows exceed the %d reserved (reserve without "
                       "WL_RESERVE_LAST_LOGITS to compute every position)", last_only ? B : B * T, m->logit_cap);
    if (pos0 > 0 && (B != 1 || train))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "forward: continuing from the KV cache needs B = 1 and no training");
    if (targets && last_only)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "forward: the loss needs logits at every position");
    if (train && !targets) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "forward: training needs targets");
    if (train && m->trainable && m->trainable->dora && m->dropout_p > 0.0f)
        return wl_fail(WL_STATUS_UNSUPPORTED, "LoRA dropout is not supported with DoRA: train it with dropout 0");
    const int N = B * T, C = c->dim, V = c->vocab_size;
    for (int n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= V)
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "token id %d at position %d is outside the vocabulary [0, %d)",
                           tokens[n], n, V);
        if (targets && targets[n] != ignore_id && (targets[n] < 0 || targets[n] >= V))
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "target id %d at position %d is outside the vocabulary [0, %d)",
                           targets[n], n, V);
    }
    m->backward_ready = 0;
    /* A training pass follows an optimizer step, and full-parameter training moves W: recompute the norms then. */
    wl_dora_refresh(m, train || m->grads != NULL);
    const wl_kernels *k = m->k;
    wl_acts *a = &m->acts;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) a->positions[b * T + t] = pos0 + t;
    }
    for (int n = 0; n < N; n++) a->tokens[n] = tokens[n];

    /* embeddings */
    float *res = block_input(m, 0, train);
    for (int n = 0; n < N; n++) {
        if (m->wte_q) {
            wl_qkernels_for(k)->dequantize_rows(m->wte_q, tokens[n], 1, res + (size_t)n * C, C);
        } else {
            memcpy(res + (size_t)n * C, m->wte + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
        }
        if (m->wpe) k->axpy(res + (size_t)n * C, 1.0f, m->wpe + (size_t)a->positions[n] * C, (size_t)C);
    }
    wl_embedding_lora_forward(m, res, a->tokens, N, train);

    for (int l = 0; l < c->n_layers; l++) {
        if (c->arch == WL_ARCH_GPT2) {
            gpt2_block_forward(m, l, B, T, pos0, train, 0);
        } else {
            llama_block_forward(m, l, B, T, pos0, train, 0);
        }
    }

    /* final norm and head; with last_only only the last row of each sequence goes through the head */
    const float *rows = a->res_final;
    int n_rows = N;
    if (last_only) {
        /* the residual buffers are free once the last block has written res_final */
        for (int b = 0; b < B; b++)
            memcpy(a->res_ping + (size_t)b * C, a->res_final + ((size_t)b * T + T - 1) * C, (size_t)C * sizeof(float));
        rows = a->res_ping;
        n_rows = B;
    }
    if (c->arch == WL_ARCH_GPT2) {
        wl_layernorm_forward(k, a->lnf, a->lnf_mean, a->lnf_rstd, rows, m->normf_w, m->normf_b, n_rows, C, c->norm_eps);
    } else {
        wl_rmsnorm_forward(k, a->lnf, a->lnf_rstd, rows, m->normf_w, n_rows, C, c->norm_eps);
    }
    if (wl_model_head_adapted(m)) {
        wl_linear_forward(m, WL_LORA_MODEL_LAYER, WL_LORA_HEAD, a->logits, a->lnf, n_rows, NULL, train);
    } else if (m->lm_head_q) {
        wl_qgemm_nt(k, n_rows, a->lnf, C, m->lm_head_q, NULL, NULL, NULL, a->logits, V, m->qtile, m->qtile_floats,
                    train ? WL_QGEMM_EXACT : WL_QGEMM_FORWARD);
    } else {
        wl_sgemm(k, 0, 1, n_rows, V, C, 1.0f, a->lnf, C, m->lm_head, C, 0.0f, a->logits, V);
    }

    m->last_B = B;
    m->last_T = T;
    m->last_pos0 = pos0;
    m->last_flags = flags;
    m->last_ignore_id = ignore_id;
    if (targets) {
        int n_valid = 0;
        for (int n = 0; n < N; n++) {
            a->targets[n] = targets[n];
            n_valid += targets[n] != ignore_id;
        }
        double total = wl_xent_forward(k, a->losses, a->logits, a->targets, N, V, ignore_id);
        m->last_n_valid = n_valid;
        if (loss) *loss = n_valid ? (float)(total / n_valid) : NAN;
        m->backward_ready = train && n_valid > 0;
    } else if (loss) {
        *loss = NAN;
    }
    return WL_OK;
}
