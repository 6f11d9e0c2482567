/* wl_lora.h: LoRA adapters over a frozen wl_model.
 *
 * A LoRA module on a linear layer y = W x + b (W is out x in) adds s * B (A x) with A (r, in), B (out, r) and
 * s = alpha / r (rsLoRA: alpha / sqrt(r)). The unmerged path computes s * (x A^T) B^T and never forms B A.
 * An adapter holds one optional module per (layer, slot) (slots in wl_model.h), each with its own rank and
 * scale, so PEFT's rank_pattern and alpha_pattern map onto it directly.
 *
 * Memory: all A and B matrices live in one contiguous f32 buffer (module order: the embedding module, block modules
 * layer-major and slot-minor, the head module; A then B), with a gradient buffer of the same layout, so an
 * optimizer is one flat loop.
 *
 * Several adapters can be attached to one model at once, each with a weight; the forward pass adds every
 * attached adapter's update, scaled by its weight. Attaching or switching copies no base weights.
 *
 * Model-level modules (PEFT's LoRA on nn.Embedding and on the lm_head Linear) sit at layer WL_LORA_MODEL_LAYER:
 *  - WL_LORA_EMBED on the token embedding wte (V, C): in = V, out = C, A (r, V), B (C, r), PEFT's
 *    lora_embedding_A and lora_embedding_B. The lookup of token t gains s * B A[:, t], i.e. the embedding matrix
 *    gains s (B A)^T. A starts at zero and B ~ N(0, 1), as PEFT initialises it, so a new adapter changes nothing
 *    and A learns first.
 *  - WL_LORA_HEAD on the LM head (V, C): an ordinary linear module, in = C, out = V.
 * On a model with a tied embedding and head the two uses stay separate as in PEFT's unmerged forward: an embedding
 * module changes only the lookup, a head module only the logits. Merging such an adapter into a tied weight would
 * change both uses (PEFT warns about tied target modules and merges into the shared tensor); here that merge is
 * refused: untie the model (an untied head) to merge.
 *
 * DoRA (weight-decomposed LoRA, PEFT use_dora): each module also learns a magnitude m (out), one per output row,
 * and computes y = (m / ||W + s B A||_row) * (W x + s B A x) + b, where the row norms (the paper's column norms of
 * the (in, out) weight) are treated as constants in backward, as the DoRA paper and PEFT do. The magnitudes follow
 * each module's B in the parameter buffer. The norms are cached in the adapter and recomputed when its factors or
 * scales, or the model's weights (loads, merges), change, and on every training pass. A DoRA adapter applies alone
 * (its magnitude rescales the whole layer output): it attaches only by itself, with weight 1.
 */
#ifndef WL_LORA_H
#define WL_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "wl_model.h"
#include "wl_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wl_adapter wl_adapter;

typedef enum wl_lora_init {
    WL_LORA_INIT_DEFAULT = 0,  /* A ~ kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0 */
    WL_LORA_INIT_GAUSSIAN = 1, /* A ~ N(0, 1/r^2) as PEFT's init_lora_weights="gaussian"; B = 0 */
    WL_LORA_INIT_ZERO = 2,     /* A = 0, B = 0 (to be filled by a loader) */
} wl_lora_init;

/* Which modules get LoRA and how. ranks and alphas are (L * n_slots) arrays indexed [layer * n_slots + slot];
 * rank 0 means no LoRA on that module. use_rslora picks s = alpha / sqrt(r) instead of alpha / r. */
typedef struct wl_lora_spec {
    const int *ranks;
    const float *alphas;
    int use_rslora;
    int use_dora;     /* 1: DoRA modules (magnitudes start at 0: set them with wl_adapter_init_dora or a loader) */
    int embed_rank;   /* LoRA on the token embedding (0: none); not with DoRA */
    float embed_alpha;
    int head_rank;    /* LoRA on the LM head (0: none); not with DoRA */
    float head_alpha;
} wl_lora_spec;

/* The layer and slots of model-level modules (wl_adapter_find, wl_lora_module.layer / .slot). */
#define WL_LORA_MODEL_LAYER (-1)
enum { WL_LORA_EMBED = 0, WL_LORA_HEAD = 1 };

/* Create an adapter for `model`'s shapes (the model is only read, not referenced afterwards). */
wl_status wl_adapter_create(const wl_model *model, const wl_lora_spec *spec, wl_adapter **out);
void wl_adapter_free(wl_adapter *adapter); /* NULL is fine; the adapter must be detached first */
/* 1 while the adapter is attached to a model or its update is in a model's weights (merged, PiSSA residual): freeing it
 * then is a caller bug that aborts, so callers that cannot know (the JS binding) ask first. */
int wl_adapter_in_use(const wl_adapter *adapter);

/* Initialise A and B (B = 0, or for an embedding module A = 0 and B ~ N(0, 1), so the new adapter leaves the
 * model's output unchanged). */
wl_status wl_adapter_init(wl_adapter *adapter, int init, uint64_t seed);

typedef struct wl_lora_module {
    int layer, slot;   /* block and slot, or WL_LORA_MODEL_LAYER and WL_LORA_EMBED / WL_LORA_HEAD */
    int rank;          /* r */
    int in_features;   /* in */
    int out_features;  /* out */
    float scale;       /* s = alpha / r or alpha / sqrt(r) */
    float alpha;
    float *A;          /* (r, in) */
    float *B;          /* (out, r) */
    float *dA;         /* (r, in) gradient */
    float *dB;         /* (out, r) gradient */
    float *magnitude;  /* (out) DoRA magnitude, or NULL for plain LoRA */
    float *dmagnitude; /* (out) its gradient, or NULL */
    int row_blocks;    /* 0: the whole matrix; else loralib MergedLinear (wl_adapter_set_row_blocks) */
    int block_mask;    /* bit i set: output row block i has an update */
} wl_lora_module;

/* Modules in buffer order: the embedding module, then block modules layer-major and slot-minor, then the head. */
int wl_adapter_n_modules(const wl_adapter *adapter);
wl_status wl_adapter_module(const wl_adapter *adapter, int index, wl_lora_module *module);
/* Index of the module at (layer, slot) (layer WL_LORA_MODEL_LAYER: the model-level modules), or -1. */
int wl_adapter_find(const wl_adapter *adapter, int layer, int slot);

/* The flat parameter and gradient buffers. */
float *wl_adapter_params(wl_adapter *adapter, size_t *n_params);
float *wl_adapter_grads(wl_adapter *adapter);
wl_status wl_adapter_zero_grad(wl_adapter *adapter);

/* loralib's MergedLinear on a fused projection (GPT-2 c_attn = [q; k; v]): the module's output rows split into
 * row_blocks equal blocks, and only the blocks in block_mask (bit i: block i) are adapted, each by its own slice of
 * rank r / popcount(mask): block i gets s B_i A_i x with A_i the i-th r/k rows of A and B_i its own rows and the
 * i-th r/k columns of B. So B is zero outside those (row block, column slice) pairs; this zeroes it there, and
 * backward keeps it so (the gradient there is dropped). The rank-r module is then exactly PEFT's rank-stacked LoRA
 * of the same function. row_blocks 0 makes the module whole again. */
wl_status wl_adapter_set_row_blocks(wl_adapter *adapter, int index, int row_blocks, int block_mask);

/* 1 if the adapter's modules are DoRA modules. */
int wl_adapter_is_dora(const wl_adapter *adapter);
/* DoRA initialisation: every magnitude becomes ||W + s B A||_row of the model's current weights (PEFT's), so the
 * adapter computes the same function as the plain LoRA of its A and B (the base model's output when B = 0). */
wl_status wl_adapter_init_dora(const wl_model *model, wl_adapter *adapter);

/* Set a module's scale (s). Used for alpha_pattern-style overrides after creation. */
wl_status wl_adapter_set_scale(wl_adapter *adapter, int index, float scale);

/* ---- Attaching adapters to a model ---- */

/* Replace the set of adapters applied by the forward pass: update = sum_i weights[i] * s * B_i A_i x.
 * n = 0 detaches all. An adapter must have been created for this model's shapes. weights may be NULL (all 1).
 * The model keeps the pointers: do not free an attached adapter. */
wl_status wl_model_set_adapters(wl_model *model, wl_adapter *const *adapters, const float *weights, int n);

/* The adapter whose gradients wl_model_backward computes (must be attached), or NULL for none. */
wl_status wl_model_set_trainable(wl_model *model, wl_adapter *adapter);

/* LoRA dropout on the trainable adapter's inputs during WL_FORWARD_TRAIN passes (PEFT lora_dropout).
 * The mask of each step derives from (seed, step) by a counter-based generator, so it is not stored. */
wl_status wl_model_set_lora_dropout(wl_model *model, float p, uint64_t seed, uint64_t step);

/* Create an adapter from an explicit model shape (no model needed: tools that work on adapter files alone). Slots
 * whose shape is unknown have 0 inputs and outputs and must have rank 0. No model-level modules (their shape is the
 * model's vocabulary). Such an adapter attaches only to a model
 * whose every slot shape it knows. */
wl_status wl_adapter_create_shaped(int arch, int n_layers, int n_slots, const int *in_features, const int *out_features,
                                   const wl_lora_spec *spec, wl_adapter **out);

/* Create an adapter of another adapter's model shape with explicit per-module ranks and scales ((L * n_slots)
 * tables, rank 0 = no module). alpha is recorded as scale * rank. A and B start at zero. */
wl_status wl_adapter_create_like(const wl_adapter *shape, const int *ranks, const float *scales, wl_adapter **out);

/* ---- Merging into the base weights ---- */

/* W += weight * s * B A for every module of the adapter (weights are (out, in) in memory for both architectures,
 * so GPT-2's Conv1D needs no special case); a DoRA adapter merges with weight 1 as W = (m / ||W + s B A||_row)
 * (W + s B A), PEFT's merge. The original weights of the touched modules are kept so that
 * wl_model_unmerge restores them bit for bit; that costs their size once more (e.g. 53 MB for q_proj and v_proj of
 * SmolLM2-135M; the whole embedding or head for a model-level module). Merging an adapter already merged into this
 * model changes nothing. A merged adapter is detached
 * (the forward pass then runs with no LoRA work for it) and cannot be attached until unmerged. */
wl_status wl_model_merge(wl_model *model, wl_adapter *adapter, float weight);
/* Restore the weights a merge (or a PiSSA initialisation) of this adapter changed. Fails (WL_STATUS_BAD_STATE) if
 * it is not merged, or if a later merge touched the same modules and is still in place. */
wl_status wl_model_unmerge(wl_model *model, wl_adapter *adapter);
int wl_model_is_merged(const wl_model *model, const wl_adapter *adapter);
/* Merging an adapter with an embedding or head module into a model whose embedding and head are one tensor fails with
 * WL_STATUS_UNSUPPORTED: the merged weight would change the other use too, which the unmerged adapter does not. */
/* Bytes of original weights kept for undoing merges and PiSSA residuals. */
size_t wl_model_edit_bytes(const wl_model *model);

/* ---- SVD-based adapter tools (need wl_svd.h's SVD) ---- */

/* PiSSA: A and B from the top-r singular triplets of each target W (A = sqrt(S_r / s) Vt_r, B = U_r sqrt(S_r / s),
 * as PEFT's init_lora_weights="pissa"), and the base keeps the residual W - s B A, so the model's output is unchanged
 * at step 0. power_iters < 0 is the accurate variant (exact SVD for small modules, 16 power iterations otherwise);
 * 0..64 is the fast variant with that many power iterations (PEFT's "pissa_niter_<n>"). The residual is a base edit
 * of this adapter: wl_model_unmerge restores the original weights bit for bit. */
wl_status wl_adapter_init_pissa(wl_model *model, wl_adapter *adapter, int power_iters, uint64_t seed);
int wl_adapter_is_pissa(const wl_adapter *adapter);
/* A trained PiSSA adapter as a plain LoRA of rank 2r for the original base: B' = [B | B0], A' = [A ; -A0] (same
 * scale), as PEFT converts PiSSA adapters. */
wl_status wl_adapter_pissa_to_lora(const wl_adapter *adapter, wl_adapter **out);

/* Rank reduction: each module's update s B A is replaced by its best approximation of rank `rank` (or, when
 * energy > 0, the smallest rank keeping that fraction of its squared Frobenius norm, capped by rank if rank > 0),
 * computed from the SVD of the product without forming it. The scale stays. rel_errors (one per module, may be NULL)
 * and total_rel_error (over all modules, may be NULL) receive ||s B A - s' B' A'||_F / ||s B A||_F. */
wl_status wl_adapter_resize(const wl_adapter *adapter, int rank, float energy, wl_adapter **out, double *rel_errors,
                            double *total_rel_error);

/* Extraction: for each (layer, slot) with ranks[layer * n_slots + slot] > 0, the best rank-r (or energy-chosen)
 * approximation of W_tuned - W_base, as an adapter with scale 1 (B = U sqrt(S), A = sqrt(S) Vt). The models must
 * have the same shape; biases and other weights are not part of a LoRA adapter and are not compared.
 * rel_errors: one per module of the result (may be NULL). */
struct wl_svd_options;
wl_status wl_adapter_extract(const wl_model *base, const wl_model *tuned, const int *ranks, float energy,
                             const struct wl_svd_options *opt, wl_adapter **out, double *rel_errors,
                             double *total_rel_error);

/* Combination of adapters over the same base, as PEFT's add_weighted_adapter defines it (result scale 1):
 *  WL_COMBINE_LINEAR: equal ranks; A = sum sqrt(w_i s_i) A_i, B = sum sqrt(w_i s_i) B_i (PEFT's definition, which
 *                     mixes cross terms; weights and scales must be >= 0);
 *  WL_COMBINE_CAT:    A = [w_i s_i A_i] stacked, B = [B_i] side by side: exactly sum w_i s_i B_i A_i, rank sum r_i;
 *  WL_COMBINE_SVD:    best rank-k approximation of sum w_i s_i B_i A_i (k = svd_rank, or the largest r_i when 0),
 *                     B = U S, A = Vt; rel_errors (one per result module, may be NULL) give the truncation error. */
enum { WL_COMBINE_LINEAR = 0, WL_COMBINE_CAT = 1, WL_COMBINE_SVD = 2 };
wl_status wl_adapter_combine(const wl_adapter *const *adapters, const float *weights, int n, int type, int svd_rank,
                             wl_adapter **out, double *rel_errors);

#ifdef __cplusplus
}
#endif
#endif
