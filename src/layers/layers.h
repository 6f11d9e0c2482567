/* layers.h: the layers of a transformer block that need the model's context (attached LoRA adapters, the
 * kernel table): linear layers with LoRA and causal self-attention. Each forward sits next to its backward. */
#ifndef WL_LAYERS_H
#define WL_LAYERS_H

#include "model/model.h"

/* out (N, out) = add + x (N, in) W^T + sum over attached adapters of w_a s (x' A^T) B^T + b, where x' is x after
 * LoRA dropout for the trainable adapter in training and add (N, out) is NULL (none), out itself or a residual.
 * The first adapter's update is one more term of the same GEMM, so out is written once. In training, x A^T of
 * the trainable adapter's module is kept for the backward pass. */
void wl_linear_forward(wl_model *m, int layer, int slot, float *out, const float *x, int N, const float *add,
                       int train);

/* Backward of wl_linear_forward: dx (N, in) = dout W + LoRA paths (overwritten, or added when accumulate; skipped
 * when dx is NULL), the trainable adapter's dA, dB and, in full-parameter training, dW and db are accumulated. */
void wl_linear_backward(wl_model *m, int layer, int slot, float *dx, int accumulate, const float *dout,
                        const float *x, int N);

/* Token embedding LoRA of every attached adapter with one: res (N, C) += w s (one_hot(tokens) A^T) B^T, with the
 * gathered columns of A kept for backward in training. */
void wl_embedding_lora_forward(wl_model *m, float *res, const int *tokens, int N, int train);
/* Backward: the trainable adapter's embedding dA, dB from dres = dL/d(embedding output) (N, C). */
void wl_embedding_lora_backward(wl_model *m, const float *dres, const int *tokens, int N);

/* Queries per block of a head: a block computes scores only against the keys its last query can see. A multiple of
 * the GEMM's 6-row register tile and 8-column panels; 16, 32 and 64 ran attention 1-15% slower at 128 and 512
 * tokens. */
#define WL_ATTENTION_ROWS 48

/* Scratch floats one head needs, for T queries over Tk keys (forward) or T over T (backward), or SIZE_MAX when that
 * does not fit a size_t; a scratch that holds this once per thread lets the heads run in parallel. */
size_t wl_attention_scratch_floats(int T, int Tk);

/* Causal attention of B sequences of T new queries at positions pos0 .. pos0+T-1 over the KV cache.
 * q (N, H*hs) rows b*T + t; k_cache, v_cache rows b*T + position (pos0 > 0 only with B = 1); out (N, H*hs).
 * scores: scratch of scores_floats >= wl_attention_scratch_floats(T, pos0 + T). */
void wl_attention_forward(const wl_kernels *k, float *out, float *scores, size_t scores_floats, const float *q,
                          const float *k_cache, const float *v_cache, int B, int T, int pos0, int H, int Hkv, int hs);

/* Backward for pos0 = 0: dq (N, H*hs) overwritten; dk, dv (N, Hkv*hs) overwritten (summed over the heads that
 * share a KV head). The probabilities are recomputed from q and k. scratch_floats >=
 * wl_attention_scratch_floats(T, T). */
void wl_attention_backward(const wl_kernels *k, float *dq, float *dk, float *dv, float *scratch, size_t scratch_floats,
                           const float *dout, const float *q, const float *k_cache, const float *v_cache, int B, int T,
                           int H, int Hkv, int hs);

#endif
