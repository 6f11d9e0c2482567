/* wl_lora.h: LoRA adapters over a frozen wl_model.
 *
 * A LoRA module on a linear layer y = W x + b (W is out x in) adds s * B (A x) with A (r, in), B (out, r) and
 * s = alpha / r (rsLoRA: alpha / sqrt(r)). The unmerged path computes s * (x A^T) B^T and never forms B A.
 * An adapter holds one optional module per (layer, slot) (slots in wl_model.h), each with its own rank and
 * scale, so PEFT's rank_pattern and alpha_pattern map onto it directly.
 *
 * Memory: all A and B matrices live in one contiguous f32 buffer (module order: layer-major, slot-minor, A then
 * B), with a gradient buffer of the same layout, so an optimizer is one flat loop.
 *
 * Several adapters can be attached to one model at once, each with a weight; the forward pass adds every
 * attached adapter's update, scaled by its weight. Attaching or switching copies no base weights.
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
} wl_lora_spec;

/* Create an adapter for `model`'s shapes (the model is only read, not referenced afterwards). */
wl_status wl_adapter_create(const wl_model *model, const wl_lora_spec *spec, wl_adapter **out);
void wl_adapter_free(wl_adapter *adapter); /* NULL is fine; the adapter must be detached first */

/* Initialise A and B (B = 0 always, so the new adapter leaves the model's output unchanged). */
wl_status wl_adapter_init(wl_adapter *adapter, int init, uint64_t seed);

typedef struct wl_lora_module {
    int layer, slot;
    int rank;          /* r */
    int in_features;   /* in */
    int out_features;  /* out */
    float scale;       /* s = alpha / r or alpha / sqrt(r) */
    float alpha;
    float *A;          /* (r, in) */
    float *B;          /* (out, r) */
    float *dA;         /* (r, in) gradient */
    float *dB;         /* (out, r) gradient */
} wl_lora_module;

/* Modules in buffer order. */
int wl_adapter_n_modules(const wl_adapter *adapter);
wl_status wl_adapter_module(const wl_adapter *adapter, int index, wl_lora_module *module);
/* Index of the module at (layer, slot), or -1. */
int wl_adapter_find(const wl_adapter *adapter, int layer, int slot);

/* The flat parameter and gradient buffers. */
float *wl_adapter_params(wl_adapter *adapter, size_t *n_params);
float *wl_adapter_grads(wl_adapter *adapter);
wl_status wl_adapter_zero_grad(wl_adapter *adapter);

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

#ifdef __cplusplus
}
#endif
#endif
