/* wl_model.h: a frozen transformer (Llama family or GPT-2), its forward pass, backward pass and decoding.
 *
 * Shape legend: B batch, T time (tokens per sequence), N = B*T rows, C model dim, V vocab, L layers,
 * H query heads, Hkv key/value heads, hs head size, I MLP hidden size, r LoRA rank.
 *
 * Ownership: wl_model_* objects own every buffer they allocate; pointers returned by accessors stay valid
 * until the model is freed or wl_model_reserve() grows the activation buffers.
 *
 * Weights live in one contiguous f32 buffer, except in a quantised model (wl_model_create_quantized): there every
 * linear weight, the token embedding and the LM head are held in 8-bit or 4-bit blocks (kernels/quant.h) and only
 * norms, biases and position tables stay in the f32 buffer. Every linear weight is stored (out, in) row-major, as in
 * torch.nn.Linear; GPT-2's Conv1D tensors, which files store (in, out), are transposed when loaded and saved.
 * Tensor names are Hugging Face names; llama2.c checkpoints are mapped onto the Llama names
 * (w1 -> gate_proj, w2 -> down_proj, w3 -> up_proj) and keep their interleaved RoPE layout.
 */
#ifndef WL_MODEL_H
#define WL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "wl_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum wl_arch {
    WL_ARCH_LLAMA = 1, /* LlamaForCausalLM (Llama, SmolLM/SmolLM2, TinyLlama, llama2.c; Qwen2 via qkv_bias) */
    WL_ARCH_GPT2 = 2,  /* GPT2LMHeadModel */
} wl_arch;

typedef enum wl_rope_layout {
    WL_ROPE_HALF = 0,        /* Hugging Face rotate_half: pairs (i, i + hs/2) */
    WL_ROPE_INTERLEAVED = 1, /* llama2.c: pairs (2i, 2i+1) */
} wl_rope_layout;

/* The blueprint of a model. All sizes are validated by wl_config_validate(). */
typedef struct wl_config {
    int arch;          /* wl_arch */
    int dim;           /* C */
    int hidden_dim;    /* I: Llama intermediate_size, GPT-2 n_inner (4C when absent) */
    int n_layers;      /* L */
    int n_heads;       /* H */
    int n_kv_heads;    /* Hkv (GPT-2: = H) */
    int head_dim;      /* hs (Llama: may differ from C/H when the config says so) */
    int vocab_size;    /* V */
    int max_seq_len;   /* positions the model supports (GPT-2 n_positions; llama max_position_embeddings) */
    int tied_embeddings; /* 1: lm_head shares the token embedding */
    int qkv_bias;      /* Llama family only: q/k/v projections carry a bias (Qwen2) */
    int rope_layout;   /* wl_rope_layout (Llama family) */
    float rope_theta;  /* Llama family */
    float norm_eps;    /* RMSNorm / LayerNorm epsilon */
    int bos_id;        /* -1 when unknown */
    int eos_id;        /* -1 when unknown */
} wl_config;

/* Checks every field for consistency and sane limits (no absurd dimensions, products that fit in memory). */
wl_status wl_config_validate(const wl_config *cfg);

/* Number of parameters the config implies (weights of the base model, counting a tied head once). */
uint64_t wl_config_n_params(const wl_config *cfg);

typedef struct wl_model wl_model;

/* Allocate a model with zeroed weights. Weights are then filled by a loader or by wl_model_tensor(). */
wl_status wl_model_create(const wl_config *cfg, wl_model **out);

/* How the frozen matrices (linear weights, token embedding, LM head) are stored. Norms and biases stay f32. */
typedef enum wl_storage {
    WL_STORAGE_F32 = 0,
    WL_STORAGE_Q8 = 1, /* int8 blocks of 32 along the input dimension, one f16 scale each (llama.cpp Q8_0) */
    WL_STORAGE_Q4 = 2, /* 4-bit blocks of 32 with an f16 scale and minimum (llama.cpp Q4_1); the token embedding
                        * and LM head in Q8 */
} wl_storage;

/* wl_model_create with the matrices stored as `storage`. The weights are quantised as wl_model_write_tensor
 * receives them, so the full-precision model is never held. A quantised model runs forward and LoRA backward
 * exactly with respect to its dequantised weights; full-parameter training, merging and PiSSA are refused. */
wl_status wl_model_create_quantized(const wl_config *cfg, int storage, wl_model **out);
int wl_model_storage(const wl_model *model); /* wl_storage */
/* Bytes wl_model_create_quantized would allocate for the weights (no activations), without allocating. */
wl_status wl_model_weight_bytes_for(const wl_config *cfg, int storage, uint64_t *bytes);
void wl_model_free(wl_model *model); /* NULL is fine */
const wl_config *wl_model_config(const wl_model *model);

/* ---- Tensor table (drives loading, saving, full-parameter training) ---- */

typedef struct wl_tensor_info {
    const char *name;  /* Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    float *data;       /* model memory, in the layout described above */
    float *grad;       /* gradient buffer in full-parameter training, else NULL */
    int ndim;          /* 1 or 2 */
    int64_t shape[2];  /* shape as stored in a Hugging Face file */
    int transposed;    /* 1: file stores (in, out) (GPT-2 Conv1D); memory holds (out, in) */
    size_t numel;
    int layer;         /* block index, or -1 for embeddings / final norm / head */
    int decay;         /* 1 for matrices (weight decay applies), 0 for norms, biases, position tables */
    int storage;       /* wl_storage: not F32 means data is NULL (the tensor is held quantised) */
} wl_tensor_info;

int wl_model_n_tensors(const wl_model *model);
wl_status wl_model_tensor(const wl_model *model, int index, wl_tensor_info *info);
wl_status wl_model_find_tensor(const wl_model *model, const char *name, int *index);

/* Write n_elems elements of tensor `index`, starting at element `first` of the tensor in its file layout,
 * converting from `dtype` (wl_dtype in wl_io.h) and transposing if needed. Used by loaders and by the
 * JavaScript streamer, which delivers a tensor in chunks. src must hold n_elems values of dtype. A quantised
 * tensor is quantised row by row as its values arrive; its chunks must come in order (a GPT-2 Conv1D tensor, whose
 * rows are columns of the file, is gathered whole first, one tensor at a time). */
wl_status wl_model_write_tensor(wl_model *model, int index, int dtype, uint64_t first, uint64_t n_elems,
                                const void *src);

/* Read elements [first, first + n) of tensor `index` in memory layout into dst: a copy of an f32 tensor, the
 * dequantised values of a quantised one. */
wl_status wl_model_read_tensor(const wl_model *model, int index, uint64_t first, uint64_t n, float *dst);
/* The whole tensor `index` in its Hugging Face file layout (the inverse of wl_model_write_tensor's): a GPT-2 Conv1D
 * weight transposed back to (in, out), every other tensor as in memory; dequantised when held quantised. dst holds
 * numel floats. */
wl_status wl_model_read_tensor_file(const wl_model *model, int index, float *dst);

/* The value written at element floor(k * numel / n) (memory layout), n = min(WL_TENSOR_SAMPLES, numel), k < n: for a
 * quantised tensor the full-precision value it received, not its dequantised one, so a model's identity
 * (web/engine/engine.js fingerprintModel) does not depend on how it is stored. */
#define WL_TENSOR_SAMPLES 64
wl_status wl_model_tensor_sample(const wl_model *model, int index, int k, float *value);

/* ---- Linear modules (LoRA targets) ---- */

/* Per-layer linear module slots. Llama: q, k, v, o, gate, up, down. GPT-2: c_attn, attn.c_proj, c_fc,
 * mlp.c_proj. */
enum {
    WL_LLAMA_Q = 0, WL_LLAMA_K, WL_LLAMA_V, WL_LLAMA_O, WL_LLAMA_GATE, WL_LLAMA_UP, WL_LLAMA_DOWN,
    WL_LLAMA_N_SLOTS
};
enum { WL_GPT2_C_ATTN = 0, WL_GPT2_ATTN_C_PROJ, WL_GPT2_C_FC, WL_GPT2_MLP_C_PROJ, WL_GPT2_N_SLOTS };
#define WL_MAX_SLOTS 7

typedef struct wl_module_info {
    const char *name;   /* path inside a block: "self_attn.q_proj", "mlp.down_proj", "attn.c_attn", ... */
    int in_features;
    int out_features;
    int has_bias;
    int conv1d;         /* 1: stored (in, out) in files (GPT-2); PEFT calls this fan_in_fan_out */
} wl_module_info;

/* The slots of an architecture (wl_arch): *n_slots modules whose in/out features are 0 (they depend on the config),
 * or NULL for an unknown architecture. */
const wl_module_info *wl_arch_slots(int arch, int *n_slots);
/* Where an architecture's blocks sit in Hugging Face names: "model.layers" or "transformer.h" (NULL if unknown). */
const char *wl_arch_block_prefix(int arch);

int wl_model_n_slots(const wl_model *model);
wl_status wl_model_module(const wl_model *model, int slot, wl_module_info *info);
/* Full module path of (layer, slot) as in Hugging Face: "model.layers.3.self_attn.q_proj",
 * "transformer.h.0.attn.c_attn"; layer -1 (WL_LORA_MODEL_LAYER in wl_lora.h) with slot 0 is the token embedding
 * ("model.embed_tokens", "transformer.wte") and slot 1 the head ("lm_head", also when tied). Writes a
 * NUL-terminated string; fails if cap is too small. */
wl_status wl_model_module_path(const wl_model *model, int layer, int slot, char *buf, size_t cap);
/* Pointers to the frozen weight (out, in) and bias (out) or NULL of a module. */
wl_status wl_model_module_weights(wl_model *model, int layer, int slot, float **weight, float **bias);

/* ---- Running the model ---- */

/* Plan memory for forward passes over up to B sequences of up to T tokens (B*T also bounds the KV cache a single
 * sequence can grow to while decoding). Flags:
 *   WL_RESERVE_TRAIN        keep every layer's activations for wl_model_backward (needed by WL_FORWARD_TRAIN);
 *   WL_RESERVE_RECOMPUTE    with WL_RESERVE_TRAIN: keep only each layer's input (B*T x dim floats) and recompute
 *                           the layer's other activations just before its backward (activation checkpointing):
 *                           about one more forward pass per step for a fraction of the memory; gradients are
 *                           bit for bit those of the full plan. A training reservation without it returns to the
 *                           full plan;
 *   WL_RESERVE_LAST_LOGITS  inference that needs logits only for the last position of each sequence
 *                           (generation): B rows of logits instead of B*T.
 * Without WL_RESERVE_TRAIN one set of block activations is shared by every layer, so a long generation context
 * costs its KV cache plus one layer's scratch. Sizes grow only (the largest plan so far is kept); the forward and
 * backward passes then allocate nothing. */
enum { WL_RESERVE_TRAIN = 1 << 0, WL_RESERVE_LAST_LOGITS = 1 << 1, WL_RESERVE_RECOMPUTE = 1 << 2 };
wl_status wl_model_reserve(wl_model *model, int B, int T, int flags);

enum {
    WL_FORWARD_TRAIN = 1 << 0,       /* keep activations for wl_model_backward, apply LoRA dropout */
    WL_FORWARD_LAST_LOGITS = 1 << 1, /* compute logits only for the last position of each sequence */
};

/* Forward pass over tokens (B, T) at positions pos0 .. pos0+T-1. pos0 > 0 continues from the KV cache of an
 * earlier call (then B must be 1 and WL_FORWARD_TRAIN is not allowed): prefill is a call with pos0 = 0 and
 * decoding is a call per token with T = 1. targets (B, T) may be NULL; entries equal to ignore_id are skipped.
 * With targets, *loss receives the mean next-token cross-entropy over non-ignored targets (NaN if none).
 * Logits are left in wl_model_logits(). */
wl_status wl_model_forward(wl_model *model, const int32_t *tokens, const int32_t *targets, int B, int T,
                           int pos0, int flags, int32_t ignore_id, float *loss);

/* Logits of the last forward: (B, T, V), or (B, V) with WL_FORWARD_LAST_LOGITS. Overwritten by backward. */
float *wl_model_logits(wl_model *model);

/* Backward pass of the last WL_FORWARD_TRAIN forward (which needed targets). Adds gradients of the mean loss
 * into the trainable adapter's gradients (wl_model_set_trainable) and, in full-parameter mode, into every
 * weight's gradient. Gradients accumulate: clear them with wl_adapter_zero_grad / wl_model_zero_grad. */
wl_status wl_model_backward(wl_model *model);

/* Full-parameter training: allocate (on=1) or free (on=0) gradients for every weight. */
wl_status wl_model_set_full_training(wl_model *model, int on);
wl_status wl_model_zero_grad(wl_model *model);
/* The contiguous weight buffer and its gradient (NULL unless full training), in tensor-table order. */
float *wl_model_params(wl_model *model, size_t *n_params);
float *wl_model_grads(wl_model *model);

/* Bytes currently held by the model (weights, gradients, activations, caches). */
size_t wl_model_memory_bytes(const wl_model *model);
/* The same, split: weights (f32 buffer, quantised blocks, full-parameter gradients, merge backups) and the rest
 * (activations, KV cache, LoRA scratch, RoPE tables, dequantisation tile). */
void wl_model_memory_split(const wl_model *model, size_t *weights, size_t *activations);

#ifdef __cplusplus
}
#endif
#endif
