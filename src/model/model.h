/* model.h: the internal layout of wl_model and wl_adapter, shared by the model, layer, LoRA and export code. */
#ifndef WL_MODEL_INTERNAL_H
#define WL_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "wl_lora.h"
#include "wl_model.h"

#define WL_MAX_ADAPTERS 16

/* A frozen linear layer y = x W^T + b. */
typedef struct wl_linear {
    float *w;   /* (out, in), or NULL when the model is quantised */
    wl_qweight *qw; /* (out, in) quantised, or NULL when the model is f32 */
    float *b;   /* (out) or NULL */
    int in, out;
} wl_linear;

typedef struct wl_block {
    float *norm1_w, *norm1_b; /* (C); b only for GPT-2 LayerNorm */
    float *norm2_w, *norm2_b; /* (C) */
    wl_linear lin[WL_MAX_SLOTS];
} wl_block;

typedef struct wl_tensor_rec {
    char *name;
    size_t offset;     /* into params, in floats */
    size_t numel;
    int ndim;
    int64_t shape[2];  /* file shape */
    int transposed;
    int layer;
    int decay;
    int qindex;        /* index into the model's qweights when the tensor is held quantised, else -1 */
    uint64_t written;  /* elements a quantised tensor has received (they arrive in order) */
    float *stage;      /* f32 values of a quantised tensor waiting for the rest of their row (or, transposed, of
                        * the whole tensor); NULL when none wait */
    float *samples;    /* quantised tensors: the values written at the sample positions of wl_model_tensor_sample */
} wl_tensor_rec;

/* Activations of one block. In a training pass each layer has its own set (backward needs them), or with
 * recompute its own res only, the rest pointing into the inference set; inference passes reuse one set for every
 * layer. N = B*T rows (row = b*T + t). */
typedef struct wl_layer_acts {
    float *res;       /* (N, C) input of the block (the residual stream); training sets only */
    float *ln1;       /* (N, C) */
    float *ln1_mean;  /* (N) GPT-2 only */
    float *ln1_rstd;  /* (N) */
    float *q;         /* (N, H*hs) after RoPE */
    float *atty;      /* (N, H*hs) attention output, input of o_proj / attn.c_proj */
    float *res2;      /* (N, C) residual after attention */
    float *ln2;       /* (N, C) */
    float *ln2_mean;  /* (N) GPT-2 only */
    float *ln2_rstd;  /* (N) */
    float *h1;        /* (N, I) Llama gate / GPT-2 c_fc output */
    float *h2;        /* (N, I) Llama up (NULL for GPT-2) */
    float *act;       /* (N, I) input of down_proj / mlp.c_proj */
} wl_layer_acts;

/* Memory planned by wl_model_reserve. The KV cache of layer l has row b*T + position: for a batch (pos0 = 0) that
 * is the row of the token, and for one sequence (B = 1) the absolute position, so decoding appends to it.
 * Attention probabilities are not kept: backward recomputes them from q and k, which costs one extra Q K^T per
 * head and saves H*T floats per token per layer. */
typedef struct wl_acts {
    float *buffer;    /* one allocation holding everything below */
    size_t n_floats;
    wl_layer_acts *layers; /* [L] training activations, (Ntrain) rows each; NULL without a training plan */
    wl_layer_acts infer;   /* inference activations shared by every layer, (Ncap) rows */
    float **k_cache, **v_cache; /* [L] (Ncap, Hkv*hs) keys (after RoPE) and values */
    float *res_ping, *res_pong; /* (Ncap, C) residual stream between blocks in inference passes */
    float *res_final; /* (Ncap, C) output of the last block */
    float *lnf;       /* (Ncap, C) */
    float *lnf_mean, *lnf_rstd; /* (Ncap) */
    float *logits;    /* (logit rows, V) */
    float *losses;    /* (Ncap) */
    int *targets;     /* (Ncap) copy of the last targets */
    int *tokens;      /* (Ncap) copy of the last tokens */
    int *positions;   /* (Ncap) absolute position of each row */
    float *qkv;       /* (Ncap, 3C) GPT-2 fused c_attn output / gradient */
    float *scores;    /* attention probabilities and their gradient for a block of one head's queries over the
                       * whole KV cache (wl_attention_scratch_floats), or more so each thread can work on a head of
                       * its own in training (capped) */
    size_t scores_floats;
    /* backward scratch, (Ntrain) rows */
    float *d_res;     /* (N, C) */
    float *d_ln;      /* (N, C) */
    float *d_atty;    /* (N, H*hs) */
    float *d_q, *d_k, *d_v; /* (N, H*hs), (N, Hkv*hs) x2 */
    float *d_h1, *d_h2, *d_act; /* (N, I) */
    /* LoRA scratch, one allocation sized by the attached adapters (wl_model_plan_lora_scratch) */
    float *lora_buffer;
    size_t lora_n_floats;
    float *lora_x;    /* (N, max in) LoRA input after dropout */
    float *lora_xa;   /* (N, max r) */
    float *lora_dxa;  /* (N, max r) */
    float *lora_dx;   /* (N, max in) */
    float *lora_z;    /* (N, max out) a DoRA module's W x + s B A x in inference, its scaled gradient in backward */
    float *lora_rows; /* (WL_DORA_ROWS, max in) rows of W + s B A while DoRA norms are computed */
    float *lora_saved;      /* x A^T of every trainable module, (N, r_i) each, and for DoRA its z (N, out_i): each
                             * module's own, or with recompute one per slot, which the block's recomputation refills */
    size_t *lora_saved_off; /* [n_modules of the trainable adapter] offsets of x A^T into lora_saved */
    size_t *lora_z_off;     /* [n_modules] offsets of a DoRA module's z into lora_saved */
} wl_acts;

/* A change to base weights that can be undone bit for bit: a merged adapter or a PiSSA residual. */
enum { WL_EDIT_MERGE = 1, WL_EDIT_PISSA = 2 };
typedef struct wl_base_edit {
    const wl_adapter *adapter; /* the adapter it belongs to (identity only) */
    int kind;                  /* WL_EDIT_* */
    float weight;
    int n_modules;
    int *layers, *slots;       /* [n_modules] */
    float **backup;            /* [n_modules] original (out, in) weights of an f32 base, else NULL */
    wl_qweight *qbackup;       /* [n_modules] original quantised weights of a quantised base, else NULL */
} wl_base_edit;

struct wl_adapter {
    /* the model shape this adapter fits */
    int arch, n_layers, n_slots;
    int in_features[WL_MAX_SLOTS], out_features[WL_MAX_SLOTS];
    int vocab, dim;          /* V and C, the shape of model-level modules (0 when it has none) */
    int model_index[2];      /* [WL_LORA_EMBED, WL_LORA_HEAD] module index or -1 */
    int n_modules;
    wl_lora_module *modules; /* A/B/dA/dB point into params/grads */
    int *index;              /* [L * n_slots] module index or -1 */
    float *params;
    float *grads;
    size_t n_params;
    int max_rank;
    int attached;            /* number of models it is attached to */
    int base_edits;          /* number of base edits (merges, PiSSA residuals) that belong to it */
    float *pissa_init;       /* PiSSA initial A and B (same layout as params) or NULL */
    int use_rslora;          /* how alpha maps to scale, for derived adapters */
    /* DoRA: ||W + s B A||_row of every module (module order, out_i each) and what they were computed from */
    int dora;
    float *dora_norms;
    float *dora_seen;          /* (n_params + n_modules) the params and scales the norms belong to */
    const wl_model *dora_model;
    uint64_t dora_epoch;       /* the model's weights_epoch then */
    int dora_valid;
};

struct wl_model {
    wl_config cfg;
    const wl_kernels *k;
    int n_slots;
    wl_module_info slot_info[WL_MAX_SLOTS];
    int slot_stage[WL_MAX_SLOTS]; /* position of the slot in a block: 0 qkv, 1 attention out, 2 MLP in, 3 MLP out */

    float *params;    /* every weight, one buffer */
    float *grads;     /* same layout, full-parameter training only */
    size_t n_params;
    int n_tensors;
    wl_tensor_rec *tensors;

    float *wte;       /* (V, C) */
    float *wpe;       /* (maxT, C) GPT-2 */
    float *normf_w, *normf_b; /* (C) */
    float *lm_head;   /* (V, C), == wte when tied */
    wl_block *blocks; /* [L] */
    /* The token embedding and the head as LoRA targets (layer WL_LORA_MODEL_LAYER): [WL_LORA_EMBED] has w = wte
     * (V, C), which is the transpose of its (out = C, in = V) view; [WL_LORA_HEAD] has w = lm_head (V, C). */
    wl_linear model_lin[2];

    int storage;      /* wl_storage of the matrices */
    wl_qweight *qweights; /* [n_qweights] quantised matrices (linear weights, embedding, untied head) */
    int n_qweights;
    wl_qweight *wte_q, *lm_head_q; /* (V, C) when quantised, else NULL; lm_head_q == wte_q when tied */
    float *qtile;     /* dequantisation panel of the quantised products (qgemm.c) */
    size_t qtile_floats;

    float *rope_cos, *rope_sin; /* (rope_positions, hs/2) Llama family */
    int rope_positions;

    wl_acts acts;
    int N_cap;        /* rows (B*T) an inference pass may have; also the longest context of one sequence */
    int T_cap;        /* longest sequence of a batch */
    int N_train_cap;  /* rows a training pass may have (per-layer activations are kept for them) */
    int recompute;    /* training keeps only each block's input; backward recomputes the block (WL_RESERVE_RECOMPUTE) */
    int logit_cap;    /* rows of logits a pass may compute */

    wl_adapter *adapters[WL_MAX_ADAPTERS];
    float adapter_weights[WL_MAX_ADAPTERS];
    int n_adapters;
    wl_adapter *trainable;
    float dropout_p;
    uint64_t dropout_seed, dropout_step;

    wl_base_edit *edits;      /* in the order they were applied */
    int n_edits;
    uint64_t weights_epoch;   /* bumped whenever the C side changes frozen weights (DoRA norms depend on them) */

    /* state of the last forward pass */
    int last_B, last_T, last_pos0, last_flags;
    int last_n_valid;
    int32_t last_ignore_id;
    int backward_ready;
};

/* Gradient of a weight pointer in full-parameter mode. */
static inline float *wl_grad_of(const wl_model *m, const float *p) {
    return m->grads ? m->grads + (p - m->params) : NULL;
}

/* The frozen linear a LoRA module at (layer, slot) adapts (layer WL_LORA_MODEL_LAYER: embedding or head). */
static inline wl_linear *wl_linear_of(wl_model *m, int layer, int slot) {
    return layer == WL_LORA_MODEL_LAYER ? &m->model_lin[slot] : &m->blocks[layer].lin[slot];
}
static inline const wl_linear *wl_linear_of_const(const wl_model *m, int layer, int slot) {
    return layer == WL_LORA_MODEL_LAYER ? &m->model_lin[slot] : &m->blocks[layer].lin[slot];
}
/* 1 if an attached adapter adapts the LM head (the head then runs as a LoRA linear). */
static inline int wl_model_head_adapted(const wl_model *m) {
    for (int i = 0; i < m->n_adapters; i++) {
        if (m->adapters[i]->model_index[WL_LORA_HEAD] >= 0) return 1;
    }
    return 0;
}
/* Name of a module slot for messages. */
static inline const char *wl_slot_name(const wl_model *m, int layer, int slot) {
    if (layer == WL_LORA_MODEL_LAYER) return slot == WL_LORA_EMBED ? "token embedding" : "LM head";
    return m->slot_info[slot].name;
}

/* Shape compatibility of an adapter with a model. */
int wl_adapter_fits(const wl_adapter *a, const wl_model *m);

/* The tensor table of a model of cfg without its weights (names, shapes, order), so that files can be checked
 * against the config before a model is allocated. Only wl_model_n_tensors / tensor / find_tensor / match_tensor /
 * plan_shard / check_loaded / config and wl_model_free may be given it. */
wl_status wl_model_create_layout(const wl_config *cfg, wl_model **out);

/* Apply / undo a base edit: backup the touched weights of a's modules, or restore them. */
wl_status wl_model_push_edit(wl_model *m, const wl_adapter *a, int kind, float weight);
int wl_model_find_edit(const wl_model *m, const wl_adapter *a);
wl_status wl_model_pop_edit(wl_model *m, int index);
void wl_model_free_edits(wl_model *m);

/* Zero the entries of b (a module's B or dB, (out, r)) outside its MergedLinear blocks; nothing for whole modules. */
void wl_lora_mask_blocks(const wl_lora_module *mod, float *b);

/* DoRA norms are computed WL_DORA_ROWS rows of W + s B A at a time. */
#define WL_DORA_ROWS 32

/* ||W + s B A||_row of one module into norms (out); rows: WL_DORA_ROWS * in floats of scratch. */
void wl_dora_row_norms(const wl_kernels *k, const wl_linear *lin, const wl_lora_module *mod, float *norms, float *rows);
/* Bring the DoRA norms of the attached adapters up to date (always when force). */
void wl_dora_refresh(wl_model *m, int force);
/* The DoRA norms of module index of adapter a. */
static inline const float *wl_dora_norms_of(const wl_adapter *a, int index) {
    size_t off = 0;
    for (int i = 0; i < index; i++) off += (size_t)a->modules[i].out_features;
    return a->dora_norms + off;
}

/* Recompute the activations of block l of the last training pass from its kept input (recompute plans), all but
 * the block's output, which backward does not need. */
void wl_model_recompute_block(wl_model *m, int l);

/* Recompute scratch sizes that depend on attached adapters (called when adapters change). */
wl_status wl_model_plan_lora_scratch(wl_model *m);

#endif
