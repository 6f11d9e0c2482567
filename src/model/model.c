/* model.c: building a model from its config: the tensor table, weight pointers, activation planning and the
 * accessors of wl_model.h. The forward and backward passes are in forward.c and backward.c. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers/layers.h"
#include "model/model.h"
#include "wl_io.h"
#include "wl_threads.h"

static const wl_module_info LLAMA_SLOTS[WL_LLAMA_N_SLOTS] = {
    {"self_attn.q_proj", 0, 0, 0, 0}, {"self_attn.k_proj", 0, 0, 0, 0}, {"self_attn.v_proj", 0, 0, 0, 0},
    {"self_attn.o_proj", 0, 0, 0, 0}, {"mlp.gate_proj", 0, 0, 0, 0},    {"mlp.up_proj", 0, 0, 0, 0},
    {"mlp.down_proj", 0, 0, 0, 0},
};
static const int LLAMA_STAGE[WL_LLAMA_N_SLOTS] = {0, 0, 0, 1, 2, 2, 3};
static const wl_module_info GPT2_SLOTS[WL_GPT2_N_SLOTS] = {
    {"attn.c_attn", 0, 0, 1, 1}, {"attn.c_proj", 0, 0, 1, 1}, {"mlp.c_fc", 0, 0, 1, 1}, {"mlp.c_proj", 0, 0, 1, 1},
};
static const int GPT2_STAGE[WL_GPT2_N_SLOTS] = {0, 1, 2, 3};

const wl_module_info *wl_arch_slots(int arch, int *n_slots) {
    int n = arch == WL_ARCH_LLAMA ? WL_LLAMA_N_SLOTS : arch == WL_ARCH_GPT2 ? WL_GPT2_N_SLOTS : 0;
    if (n_slots) *n_slots = n;
    return arch == WL_ARCH_LLAMA ? LLAMA_SLOTS : arch == WL_ARCH_GPT2 ? GPT2_SLOTS : NULL;
}

const char *wl_arch_block_prefix(int arch) {
    return arch == WL_ARCH_LLAMA ? "model.layers" : arch == WL_ARCH_GPT2 ? "transformer.h" : NULL;
}

/* ---- tensor table ---- */

typedef struct table_builder {
    wl_model *m;
    size_t offset;
    int count;
    int capacity;
    wl_status status;
    int n_q;           /* quantised matrices so far */
    size_t q_bytes;    /* their quants and scales */
    int q_max_cols;    /* widest of them */
    size_t q_max_numel; /* largest of them */
} table_builder;

#define WL_NO_OFFSET SIZE_MAX

/* A quantised model holds its matrices (linear weights, embedding, head: every 2-D tensor that takes weight decay;
 * not GPT-2's position table) quantised. */
static int held_quantized(const wl_model *m, int ndim, int decay) {
    return m->storage != WL_STORAGE_F32 && ndim == 2 && decay;
}

/* How a quantised matrix is stored: in the model's storage, except that a Q4 model keeps its token embedding and LM
 * head (the matrices outside the layers) in Q8, as llama.cpp's 4-bit mixes keep output.weight at 6 or 8 bits: 4 bits
 * there cost stories260K's perplexity 11.5% against 8.4% (quant.h). */
static int matrix_storage(const wl_model *m, int layer) {
    return m->storage == WL_STORAGE_Q4 && layer < 0 ? WL_STORAGE_Q8 : m->storage;
}

/* Register a tensor; returns its offset in floats (memory for it starts there), or WL_NO_OFFSET for a tensor held
 * quantised (its wl_qweight is then allocated in the filling walk). rows/cols are the shape in memory for 2-D
 * tensors ((out, in) for linears); transposed tensors are stored (cols, rows) in files. */
static size_t add_tensor(table_builder *tb, const char *name, int layer, int ndim, int64_t rows, int64_t cols,
                         int transposed, int decay) {
    const int quantized = held_quantized(tb->m, ndim, decay);
    size_t at = quantized ? WL_NO_OFFSET : tb->offset;
    size_t numel = (size_t)rows * (size_t)(ndim == 2 ? cols : 1);
    int qindex = -1;
    if (quantized) {
        qindex = tb->n_q++;
        const int storage = matrix_storage(tb->m, layer);
        tb->q_bytes += wl_qweight_bytes_for(storage, (int)rows, (int)cols);
        if (cols > tb->q_max_cols) tb->q_max_cols = (int)cols;
        if (numel > tb->q_max_numel) tb->q_max_numel = numel;
        if (tb->m->qweights && tb->status == WL_OK) {
            wl_status st = wl_qweight_alloc(&tb->m->qweights[qindex], storage, (int)rows, (int)cols);
            if (st != WL_OK) tb->status = st;
        }
    }
    if (tb->m->tensors && tb->status == WL_OK) {
        WL_ASSERT(tb->count < tb->capacity);
        wl_tensor_rec *t = &tb->m->tensors[tb->count];
        size_t len = strlen(name) + 1;
        t->name = wl_alloc(len, "tensor name");
        if (!t->name) {
            tb->status = WL_STATUS_OUT_OF_MEMORY;
        } else {
            memcpy(t->name, name, len);
        }
        t->offset = at;
        t->numel = numel;
        t->ndim = ndim;
        t->shape[0] = transposed ? cols : rows;
        t->shape[1] = ndim == 2 ? (transposed ? rows : cols) : 0;
        t->transposed = transposed;
        t->layer = layer;
        t->decay = decay;
        t->qindex = qindex;
        if (quantized) {
            t->samples = wl_alloc_array(WL_TENSOR_SAMPLES, sizeof(float), "tensor samples");
            if (!t->samples) tb->status = WL_STATUS_OUT_OF_MEMORY;
        }
    }
    tb->count++;
    /* Keep every tensor 16-float aligned so SIMD loads of rows start aligned where shapes allow. */
    if (!quantized) tb->offset += (numel + 15) & ~(size_t)15;
    return at;
}

/* The quantised matrix of the tensor just added, or NULL. */
static wl_qweight *last_qweight(const table_builder *tb) {
    const wl_model *m = tb->m;
    if (!m->qweights || !m->tensors || tb->count == 0) return NULL;
    const int q = m->tensors[tb->count - 1].qindex;
    return q >= 0 ? &m->qweights[q] : NULL;
}

/* Walk the architecture once to count and once to fill; pointers are set in the second walk. */
static void build_table(table_builder *tb) {
    wl_model *m = tb->m;
    const wl_config *c = &m->cfg;
    const int C = c->dim, I = c->hidden_dim, V = c->vocab_size;
    const int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    const int filling = m->params != NULL;
    char name[160];
    size_t off;
#define PTR(o) (filling && (o) != WL_NO_OFFSET ? m->params + (o) : NULL)

    if (c->arch == WL_ARCH_GPT2) {
        off = add_tensor(tb, "transformer.wte.weight", -1, 2, V, C, 0, 1);
        m->wte = PTR(off);
        m->wte_q = last_qweight(tb);
        off = add_tensor(tb, "transformer.wpe.weight", -1, 2, c->max_seq_len, C, 0, 0);
        m->wpe = PTR(off);
        for (int l = 0; l < c->n_layers; l++) {
            wl_block *b = filling ? &m->blocks[l] : NULL;
            const int outs[4] = {3 * C, C, I, C}, ins[4] = {C, C, C, I};
            snprintf(name, sizeof name, "transformer.h.%d.ln_1.weight", l);
            off = add_tensor(tb, name, l, 1, C, 0, 0, 0);
            if (b) b->norm1_w = PTR(off);
            snprintf(name, sizeof name, "transformer.h.%d.ln_1.bias", l);
            off = add_tensor(tb, name, l, 1, C, 0, 0, 0);
            if (b) b->norm1_b = PTR(off);
            for (int s = 0; s < WL_GPT2_N_SLOTS; s++) {
                if (s == WL_GPT2_C_FC) {
                    snprintf(name, sizeof name, "transformer.h.%d.ln_2.weight", l);
                    off = add_tensor(tb, name, l, 1, C, 0, 0, 0);
                    if (b) b->norm2_w = PTR(off);
                    snprintf(name, sizeof name, "transformer.h.%d.ln_2.bias", l);
                    off = add_tensor(tb, name, l, 1, C, 0, 0, 0);
                    if (b) b->norm2_b = PTR(off);
                }
                snprintf(name, sizeof name, "transformer.h.%d.%s.weight", l, GPT2_SLOTS[s].name);
                off = add_tensor(tb, name, l, 2, outs[s], ins[s], 1, 1);
                if (b) {
                    b->lin[s].w = PTR(off);
                    b->lin[s].qw = last_qweight(tb);
                    b->lin[s].in = ins[s];
                    b->lin[s].out = outs[s];
                }
                snprintf(name, sizeof name, "transformer.h.%d.%s.bias", l, GPT2_SLOTS[s].name);
                off = add_tensor(tb, name, l, 1, outs[s], 0, 0, 0);
                if (b) b->lin[s].b = PTR(off);
            }
        }
        off = add_tensor(tb, "transformer.ln_f.weight", -1, 1, C, 0, 0, 0);
        m->normf_w = PTR(off);
        off = add_tensor(tb, "transformer.ln_f.bias", -1, 1, C, 0, 0, 0);
        m->normf_b = PTR(off);
        m->lm_head = m->wte;
        m->lm_head_q = m->wte_q;
    } else {
        off = add_tensor(tb, "model.embed_tokens.weight", -1, 2, V, C, 0, 1);
        m->wte = PTR(off);
        m->wte_q = last_qweight(tb);
        for (int l = 0; l < c->n_layers; l++) {
            wl_block *b = filling ? &m->blocks[l] : NULL;
            const int outs[7] = {q_dim, kv_dim, kv_dim, C, I, I, C}, ins[7] = {C, C, C, q_dim, C, C, I};
            snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
            off = add_tensor(tb, name, l, 1, C, 0, 0, 0);
            if (b) b->norm1_w = PTR(off);
            for (int s = 0; s < WL_LLAMA_N_SLOTS; s++) {
                if (s == WL_LLAMA_GATE) {
                    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
                    off = add_tensor(tb, name, l, 1, C, 0, 0, 0);
                    if (b) b->norm2_w = PTR(off);
                }
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, LLAMA_SLOTS[s].name);
                off = add_tensor(tb, name, l, 2, outs[s], ins[s], 0, 1);
                if (b) {
                    b->lin[s].w = PTR(off);
                    b->lin[s].qw = last_qweight(tb);
                    b->lin[s].in = ins[s];
                    b->lin[s].out = outs[s];
                }
                if (c->qkv_bias && s <= WL_LLAMA_V) {
                    snprintf(name, sizeof name, "model.layers.%d.%s.bias", l, LLAMA_SLOTS[s].name);
                    off = add_tensor(tb, name, l, 1, outs[s], 0, 0, 0);
                    if (b) b->lin[s].b = PTR(off);
                }
            }
        }
        off = add_tensor(tb, "model.norm.weight", -1, 1, C, 0, 0, 0);
        m->normf_w = PTR(off);
        if (c->tied_embeddings) {
            m->lm_head = m->wte;
            m->lm_head_q = m->wte_q;
        } else {
            off = add_tensor(tb, "lm_head.weight", -1, 2, V, C, 0, 1);
            m->lm_head = PTR(off);
            m->lm_head_q = last_qweight(tb);
        }
    }
#undef PTR
}

static wl_status check_storage(int storage) {
    if (storage != WL_STORAGE_F32 && storage != WL_STORAGE_Q8 && storage != WL_STORAGE_Q4)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "unknown weight storage %d (0 f32, 1 q8, 2 q4)", storage);
    return WL_OK;
}

wl_status wl_model_weight_bytes_for(const wl_config *cfg, int storage, uint64_t *bytes) {
    if (!bytes) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_weight_bytes_for: bytes is NULL");
    wl_status st = wl_config_validate(cfg);
    if (st == WL_OK) st = check_storage(storage);
    if (st != WL_OK) return st;
    wl_model m;
    memset(&m, 0, sizeof m);
    m.cfg = *cfg;
    m.storage = storage;
    table_builder tb = {&m, 0, 0, 0, WL_OK, 0, 0, 0, 0};
    build_table(&tb);
    *bytes = (uint64_t)tb.offset * sizeof(float) + tb.q_bytes +
             (tb.n_q ? wl_qgemm_tile_floats(tb.q_max_cols, tb.q_max_numel) * sizeof(float) : 0);
    return WL_OK;
}

wl_status wl_model_create(const wl_config *cfg, wl_model **out) { return wl_model_create_quantized(cfg, WL_STORAGE_F32, out); }

int wl_model_storage(const wl_model *m) { return m ? m->storage : WL_STORAGE_F32; }

/* with_weights 0: the tensor table alone (wl_model_create_layout), nothing the weights or the dequantisation need */
static wl_status create_model(const wl_config *cfg, int storage, int with_weights, wl_model **out) {
    if (!out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_create: out is NULL");
    *out = NULL;
    wl_status st = wl_config_validate(cfg);
    if (st == WL_OK) st = check_storage(storage);
    if (st != WL_OK) return st;

    wl_model *m = wl_alloc(sizeof *m, "model");
    if (!m) return WL_STATUS_OUT_OF_MEMORY;
    m->cfg = *cfg;
    m->storage = storage;
    m->k = wl_kernels_default();
    const wl_config *c = &m->cfg;
    const int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    if (c->arch == WL_ARCH_GPT2) {
        m->n_slots = WL_GPT2_N_SLOTS;
        const int ins[4] = {c->dim, c->dim, c->dim, c->hidden_dim};
        const int outs[4] = {3 * c->dim, c->dim, c->hidden_dim, c->dim};
        for (int s = 0; s < m->n_slots; s++) {
            m->slot_info[s] = GPT2_SLOTS[s];
            m->slot_info[s].in_features = ins[s];
            m->slot_info[s].out_features = outs[s];
            m->slot_stage[s] = GPT2_STAGE[s];
        }
    } else {
        m->n_slots = WL_LLAMA_N_SLOTS;
        const int ins[7] = {c->dim, c->dim, c->dim, q_dim, c->dim, c->dim, c->hidden_dim};
        const int outs[7] = {q_dim, kv_dim, kv_dim, c->dim, c->hidden_dim, c->hidden_dim, c->dim};
        for (int s = 0; s < m->n_slots; s++) {
            m->slot_info[s] = LLAMA_SLOTS[s];
            m->slot_info[s].in_features = ins[s];
            m->slot_info[s].out_features = outs[s];
            m->slot_info[s].has_bias = c->qkv_bias && s <= WL_LLAMA_V;
            m->slot_stage[s] = LLAMA_STAGE[s];
        }
    }

    table_builder tb = {m, 0, 0, 0, WL_OK, 0, 0, 0, 0};
    build_table(&tb); /* count */
    m->n_params = tb.offset;
    m->n_tensors = tb.count;
    m->n_qweights = tb.n_q;
    m->tensors = wl_alloc_array((size_t)tb.count, sizeof *m->tensors, "tensor table");
    m->blocks = wl_alloc_array((size_t)c->n_layers, sizeof *m->blocks, "model blocks");
    /* a layout is created in f32 storage, so it has no quantised matrices either */
    m->params = with_weights ? wl_alloc_array(m->n_params, sizeof(float), "model weights") : NULL;
    if (tb.n_q) {
        m->qweights = wl_alloc_array((size_t)tb.n_q, sizeof *m->qweights, "quantised weight table");
        m->qtile_floats = wl_qgemm_tile_floats(tb.q_max_cols, tb.q_max_numel);
        m->qtile = wl_alloc_array(m->qtile_floats, sizeof(float), "dequantisation panel");
    }
    if (!m->tensors || !m->blocks || (with_weights && !m->params) || (tb.n_q && (!m->qweights || !m->qtile))) {
        wl_model_free(m);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    tb = (table_builder){m, 0, 0, m->n_tensors, WL_OK, 0, 0, 0, 0};
    build_table(&tb); /* fill */
    if (tb.status != WL_OK) {
        wl_model_free(m);
        return tb.status;
    }
    WL_ASSERT(tb.offset == m->n_params && tb.count == m->n_tensors);
    m->model_lin[WL_LORA_EMBED] = (wl_linear){.w = m->wte, .qw = m->wte_q, .in = c->vocab_size, .out = c->dim};
    m->model_lin[WL_LORA_HEAD] = (wl_linear){.w = m->lm_head, .qw = m->lm_head_q, .in = c->dim, .out = c->vocab_size};
    *out = m;
    return WL_OK;
}

wl_status wl_model_create_quantized(const wl_config *cfg, int storage, wl_model **out) {
    return create_model(cfg, storage, 1, out);
}

wl_status wl_model_create_layout(const wl_config *cfg, wl_model **out) { return create_model(cfg, WL_STORAGE_F32, 0, out); }

static void free_act_buffers(wl_acts *a) {
    wl_free(a->buffer);
    wl_free(a->layers);
    wl_free(a->k_cache);
    wl_free(a->v_cache);
    wl_free(a->lora_buffer);
    memset(a, 0, sizeof *a);
}

static void free_acts(wl_model *m) {
    free_act_buffers(&m->acts);
    wl_free(m->rope_cos);
    wl_free(m->rope_sin);
    m->rope_cos = m->rope_sin = NULL;
    m->N_cap = m->T_cap = m->N_train_cap = m->logit_cap = 0;
    m->backward_ready = 0;
}

void wl_model_free(wl_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_adapters; i++) m->adapters[i]->attached--;
    wl_model_free_edits(m);
    free_acts(m);
    if (m->tensors) {
        for (int i = 0; i < m->n_tensors; i++) {
            wl_free(m->tensors[i].name);
            wl_free(m->tensors[i].stage);
            wl_free(m->tensors[i].samples);
        }
    }
    if (m->qweights) {
        for (int i = 0; i < m->n_qweights; i++) wl_qweight_free(&m->qweights[i]);
    }
    wl_free(m->qweights);
    wl_free(m->qtile);
    wl_free(m->tensors);
    wl_free(m->blocks);
    wl_free(m->params);
    wl_free(m->grads);
    wl_free(m);
}

const wl_config *wl_model_config(const wl_model *m) { return m ? &m->cfg : NULL; }

int wl_model_n_tensors(const wl_model *m) { return m ? m->n_tensors : 0; }

wl_status wl_model_tensor(const wl_model *m, int index, wl_tensor_info *info) {
    if (!m || !info) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_tensor: NULL argument");
    if (index < 0 || index >= m->n_tensors)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_tensor: index %d out of range [0, %d)", index, m->n_tensors);
    const wl_tensor_rec *t = &m->tensors[index];
    info->name = t->name;
    info->data = t->qindex < 0 && m->params ? m->params + t->offset : NULL; /* NULL: quantised, or a layout */
    info->grad = m->grads && t->qindex < 0 ? m->grads + t->offset : NULL;
    info->storage = t->qindex < 0 ? WL_STORAGE_F32 : m->qweights[t->qindex].storage;
    info->ndim = t->ndim;
    info->shape[0] = t->shape[0];
    info->shape[1] = t->shape[1];
    info->transposed = t->transposed;
    info->numel = t->numel;
    info->layer = t->layer;
    info->decay = t->decay;
    return WL_OK;
}

wl_status wl_model_find_tensor(const wl_model *m, const char *name, int *index) {
    if (!m || !name || !index) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_find_tensor: NULL argument");
    for (int i = 0; i < m->n_tensors; i++) {
        if (strcmp(m->tensors[i].name, name) == 0) {
            *index = i;
            return WL_OK;
        }
    }
    *index = -1;
    return wl_fail(WL_STATUS_NOT_FOUND, "the model has no tensor named \"%s\"", name);
}

static int sample_count(size_t numel) { return numel < WL_TENSOR_SAMPLES ? (int)numel : WL_TENSOR_SAMPLES; }

/* Memory-layout element of sample k. */
static size_t sample_element(size_t numel, int k) { return (size_t)((uint64_t)k * numel / (uint64_t)sample_count(numel)); }

/* Keep the values of a quantised tensor's sample positions among memory-layout elements [e0, e0 + n) at v. */
static void keep_samples(wl_tensor_rec *t, size_t e0, size_t n, const float *v) {
    for (int k = 0; k < sample_count(t->numel); k++) {
        const size_t e = sample_element(t->numel, k);
        if (e >= e0 && e < e0 + n) t->samples[k] = v[e - e0];
    }
}

wl_status wl_model_tensor_sample(const wl_model *m, int index, int k, float *value) {
    if (!m || !value) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_tensor_sample: NULL argument");
    if (index < 0 || index >= m->n_tensors)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_tensor_sample: index %d out of range", index);
    const wl_tensor_rec *t = &m->tensors[index];
    if (k < 0 || k >= sample_count(t->numel))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "tensor %s: sample %d out of range", t->name, k);
    const size_t e = sample_element(t->numel, k);
    *value = t->qindex < 0 ? m->params[t->offset + e] : t->samples[k];
    return WL_OK;
}

/* Quantise the values of a quantised tensor as they arrive: in order, each row as soon as it is complete (a row's
 * start waits in t->stage across calls). A transposed (GPT-2 Conv1D) tensor's rows are columns of the file, so it is
 * gathered whole, then quantised. A write starting at element 0 starts the tensor over. */
static wl_status write_quantized(wl_model *m, int index, int dtype, uint64_t first, uint64_t n_elems, const void *src) {
    wl_tensor_rec *t = &m->tensors[index];
    wl_qweight *w = &m->qweights[t->qindex];
    const size_t esize = wl_dtype_size(dtype), cols = (size_t)w->cols;
    if (first == 0) t->written = 0;
    if (first != t->written)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT,
                       "tensor %s is stored quantised and must arrive in order: got elements from %llu, expected %llu",
                       t->name, (unsigned long long)first, (unsigned long long)t->written);
    if (n_elems == 0) return WL_OK;
    if (!t->stage) {
        t->stage = wl_alloc_array(t->transposed ? t->numel : cols, sizeof(float), "quantisation staging");
        if (!t->stage) return WL_STATUS_OUT_OF_MEMORY;
    }
    const uint8_t *bytes = src;
    wl_status st = WL_OK;
    if (t->transposed) {
        /* File (in, out) into memory (out, in), then every row once all have arrived. */
        const size_t in = (size_t)t->shape[0], outf = (size_t)t->shape[1];
        float block[256];
        for (uint64_t done = 0; done < n_elems && st == WL_OK;) {
            size_t n = n_elems - done < 256 ? (size_t)(n_elems - done) : 256;
            st = wl_convert_to_f32(block, bytes + done * esize, dtype, n);
            for (size_t j = 0; j < n && st == WL_OK; j++) {
                size_t e = (size_t)(first + done) + j;
                t->stage[(e % outf) * in + e / outf] = block[j];
            }
            done += n;
        }
        t->written = first + n_elems;
        if (st == WL_OK && t->written == t->numel) {
            keep_samples(t, 0, t->numel, t->stage);
            for (int r = 0; r < w->rows && st == WL_OK; r++)
                st = wl_qweight_quantize_row(w, r, t->stage + (size_t)r * cols, t->name);
        }
    } else {
        for (uint64_t done = 0; done < n_elems && st == WL_OK;) {
            const size_t e = (size_t)(first + done), col = e % cols;
            size_t n = cols - col;
            if (n > n_elems - done) n = (size_t)(n_elems - done);
            st = wl_convert_to_f32(t->stage + col, bytes + done * esize, dtype, n);
            if (st == WL_OK) keep_samples(t, e, n, t->stage + col);
            if (st == WL_OK && col + n == cols) st = wl_qweight_quantize_row(w, (int)(e / cols), t->stage, t->name);
            done += n;
        }
        t->written = first + n_elems;
    }
    if (st != WL_OK) {
        t->written = 0; /* the tensor must be written again from its start */
    }
    if (st != WL_OK || t->written == t->numel) {
        wl_free(t->stage);
        t->stage = NULL;
    }
    return st;
}

wl_status wl_model_write_tensor(wl_model *m, int index, int dtype, uint64_t first, uint64_t n_elems, const void *src) {
    if (!m || (!src && n_elems)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_write_tensor: NULL argument");
    if (index < 0 || index >= m->n_tensors)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_write_tensor: index %d out of range", index);
    const wl_tensor_rec *t = &m->tensors[index];
    if (first > t->numel || n_elems > t->numel - first)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "tensor %s: elements [%llu, %llu) out of range (%zu elements)",
                       t->name, (unsigned long long)first, (unsigned long long)(first + n_elems), t->numel);
    size_t esize = wl_dtype_size(dtype);
    if (dtype != WL_DTYPE_F32 && dtype != WL_DTYPE_F16 && dtype != WL_DTYPE_BF16 && dtype != WL_DTYPE_F64)
        return wl_fail(WL_STATUS_UNSUPPORTED, "tensor %s: dtype %s cannot hold weights (need F32, F16, BF16 or F64)",
                       t->name, wl_dtype_name(dtype));
    m->weights_epoch++;
    if (t->qindex >= 0) return write_quantized(m, index, dtype, first, n_elems, src);
    float *dst = m->params + t->offset;
    if (!t->transposed) return wl_convert_to_f32(dst + first, src, dtype, (size_t)n_elems);

    /* File layout (in, out) = (shape[0], shape[1]); memory layout (out, in). Convert in small blocks, scatter. */
    const size_t in = (size_t)t->shape[0], outf = (size_t)t->shape[1];
    float block[256];
    const uint8_t *bytes = src;
    for (uint64_t done = 0; done < n_elems;) {
        size_t n = n_elems - done < 256 ? (size_t)(n_elems - done) : 256;
        wl_status st = wl_convert_to_f32(block, bytes + done * esize, dtype, n);
        if (st != WL_OK) return st;
        for (size_t j = 0; j < n; j++) {
            size_t e = (size_t)(first + done) + j;
            size_t i = e / outf, o = e % outf;
            dst[o * in + i] = block[j];
        }
        done += n;
    }
    return WL_OK;
}

wl_status wl_model_read_tensor(const wl_model *m, int index, uint64_t first, uint64_t n, float *dst) {
    if (!m || (!dst && n)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_read_tensor: NULL argument");
    if (index < 0 || index >= m->n_tensors)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_read_tensor: index %d out of range", index);
    const wl_tensor_rec *t = &m->tensors[index];
    if (first > t->numel || n > t->numel - first)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "tensor %s: elements [%llu, %llu) out of range (%zu elements)", t->name,
                       (unsigned long long)first, (unsigned long long)(first + n), t->numel);
    if (t->qindex < 0) {
        memcpy(dst, m->params + t->offset + first, (size_t)n * sizeof(float));
        return WL_OK;
    }
    const wl_qweight *w = &m->qweights[t->qindex];
    for (uint64_t e = first; e < first + n; e++) dst[e - first] = wl_qweight_value(w, (int)(e / w->cols), (int)(e % w->cols));
    return WL_OK;
}

wl_status wl_model_read_tensor_file(const wl_model *m, int index, float *dst) {
    if (!m || !dst) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_read_tensor_file: NULL argument");
    if (index < 0 || index >= m->n_tensors)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_read_tensor_file: index %d out of range", index);
    const wl_tensor_rec *t = &m->tensors[index];
    if (!t->transposed) return wl_model_read_tensor(m, index, 0, t->numel, dst);
    /* Conv1D: memory (out, in), file (in, out). */
    size_t in = (size_t)t->shape[0], out = (size_t)t->shape[1];
    const wl_qweight *w = t->qindex < 0 ? NULL : &m->qweights[t->qindex];
    const float *mem = m->params + t->offset;
    for (size_t o = 0; o < out; o++)
        for (size_t i = 0; i < in; i++) dst[i * out + o] = w ? wl_qweight_value(w, (int)o, (int)i) : mem[o * in + i];
    return WL_OK;
}

/* ---- modules ---- */

int wl_model_n_slots(const wl_model *m) { return m ? m->n_slots : 0; }

wl_status wl_model_module(const wl_model *m, int slot, wl_module_info *info) {
    if (!m || !info) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_module: NULL argument");
    if (slot < 0 || slot >= m->n_slots)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "module slot %d out of range [0, %d)", slot, m->n_slots);
    *info = m->slot_info[slot];
    return WL_OK;
}

wl_status wl_model_module_path(const wl_model *m, int layer, int slot, char *buf, size_t cap) {
    if (!m || !buf) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_module_path: NULL argument");
    if (layer == WL_LORA_MODEL_LAYER && (slot == WL_LORA_EMBED || slot == WL_LORA_HEAD)) {
        const char *path = slot == WL_LORA_HEAD ? "lm_head"
                           : m->cfg.arch == WL_ARCH_GPT2 ? "transformer.wte" : "model.embed_tokens";
        int n = snprintf(buf, cap, "%s", path);
        if (n < 0 || (size_t)n >= cap) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "module path buffer too small");
        return WL_OK;
    }
    if (layer < 0 || layer >= m->cfg.n_layers || slot < 0 || slot >= m->n_slots)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "module (%d, %d) out of range", layer, slot);
    int n = snprintf(buf, cap, "%s.%d.%s", wl_arch_block_prefix(m->cfg.arch), layer, m->slot_info[slot].name);
    if (n < 0 || (size_t)n >= cap) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "module path buffer too small");
    return WL_OK;
}

wl_status wl_model_module_weights(wl_model *m, int layer, int slot, float **weight, float **bias) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_module_weights: NULL model");
    if (layer < 0 || layer >= m->cfg.n_layers || slot < 0 || slot >= m->n_slots)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "module (%d, %d) out of range", layer, slot);
    if (weight) *weight = m->blocks[layer].lin[slot].w;
    if (bias) *bias = m->blocks[layer].lin[slot].b;
    return WL_OK;
}

/* ---- activation planning ---- */

typedef struct planner {
    size_t total;
    float *base;
    int overflow;
} planner;

/* Reserve a * b floats (16-float aligned), with every size checked for overflow. */
static float *take2(planner *p, size_t a, size_t b) {
    size_t n, rounded, total;
    if (!wl_mul_size(a, b, &n) || !wl_add_size(n, 15, &rounded) || !wl_add_size(p->total, rounded & ~(size_t)15, &total) ||
        total > SIZE_MAX / sizeof(float)) {
        p->overflow = 1;
        return NULL;
    }
    float *at = p->base ? p->base + p->total : NULL;
    p->total = total;
    return at;
}

static float *take(planner *p, size_t n) { return take2(p, n, 1); }

/* One block's activations for n rows (res only when with_res). */
static void plan_layer(planner *p, wl_layer_acts *la, size_t n, const wl_config *c, int with_res) {
    const size_t C = c->dim, I = c->hidden_dim, qd = (size_t)c->n_heads * c->head_dim;
    const int gpt2 = c->arch == WL_ARCH_GPT2;
    la->res = with_res ? take2(p, n, C) : NULL;
    la->ln1 = take2(p, n, C);
    la->ln1_mean = gpt2 ? take(p, n) : NULL;
    la->ln1_rstd = take(p, n);
    la->q = take2(p, n, qd);
    la->atty = take2(p, n, qd);
    la->res2 = take2(p, n, C);
    la->ln2 = take2(p, n, C);
    la->ln2_mean = gpt2 ? take(p, n) : NULL;
    la->ln2_rstd = take(p, n);
    la->h1 = take2(p, n, I);
    la->h2 = gpt2 ? NULL : take2(p, n, I);
    la->act = take2(p, n, I);
}

/* Lay out every buffer for Nc inference rows, Ntr training rows, sequences up to Tc and Lg rows of logits; with
 * base == NULL only counts. With recompute, a training pass keeps only each block's input (Ntr, C) and every block
 * works in the one set of inference activations (Nc >= Ntr rows), which backward fills again block by block.
 * Integer arrays share the float buffer (same size and alignment). Pointer tables (layers, k_cache, v_cache) must
 * be allocated by the caller before the second pass. Returns 0 if a size overflows. */
static int plan_acts(wl_model *m, wl_acts *a, int Nc, int Ntr, int Tc, int Lg, int recompute, float *base,
                     size_t *total) {
    const wl_config *c = &m->cfg;
    const size_t N = (size_t)Nc, Nt = (size_t)Ntr, C = c->dim, I = c->hidden_dim, V = c->vocab_size;
    const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    planner p = {0, base, 0};
    wl_layer_acts scratch;
    for (int l = 0; l < c->n_layers; l++) {
        float *k = take2(&p, N, kvd), *v = take2(&p, N, kvd);
        if (base) {
            a->k_cache[l] = k;
            a->v_cache[l] = v;
        }
        if (Nt && recompute) {
            float *checkpoint = take2(&p, Nt, C);
            if (base) a->layers[l].res = checkpoint;
        } else if (Nt) {
            plan_layer(&p, base ? &a->layers[l] : &scratch, Nt, c, 1);
        }
    }
    plan_layer(&p, base ? &a->infer : &scratch, N, c, 0);
    if (base && Nt && recompute) {
        for (int l = 0; l < c->n_layers; l++) {
            float *checkpoint = a->layers[l].res;
            a->layers[l] = a->infer;
            a->layers[l].res = checkpoint;
        }
    }
    float *ping = take2(&p, N, C), *pong = take2(&p, N, C);
    wl_acts counting;
    wl_acts *t = base ? a : &counting;
    t->res_ping = ping;
    t->res_pong = pong;
    t->res_final = take2(&p, N, C);
    t->lnf = take2(&p, N, C);
    t->lnf_mean = take(&p, N);
    t->lnf_rstd = take(&p, N);
    t->logits = take2(&p, (size_t)Lg, V);
    t->losses = take(&p, N);
    t->targets = (int *)take(&p, N);
    t->tokens = (int *)take(&p, N);
    t->positions = (int *)take(&p, N);
    t->qkv = c->arch == WL_ARCH_GPT2 ? take2(&p, N, 3 * C) : NULL;
    /* One head's scores for any call: up to Tc queries over up to Nc keys (one sequence may fill the whole KV cache).
     * Or, when larger (up to 16 MB), a head's scores over Tc keys for each thread, so the heads of a training pass
     * run in parallel. */
    size_t all_threads = 0;
    const size_t one_head = wl_attention_scratch_floats(Tc, Nc > Tc ? Nc : Tc);
    if (!wl_mul_size(wl_attention_scratch_floats(Tc, Tc), (size_t)wl_threads_count(), &all_threads)) p.overflow = 1;
    const size_t cap = (size_t)4 << 20;
    size_t scores = all_threads < cap ? all_threads : cap;
    if (one_head > scores) scores = one_head;
    t->scores = take(&p, scores);
    t->scores_floats = scores;
    t->d_res = take2(&p, Nt, C);
    t->d_ln = take2(&p, Nt, C);
    t->d_atty = take2(&p, Nt, qd);
    t->d_q = take2(&p, Nt, qd);
    t->d_k = take2(&p, Nt, kvd);
    t->d_v = take2(&p, Nt, kvd);
    t->d_h1 = take2(&p, Nt, I);
    t->d_h2 = take2(&p, Nt, I);
    t->d_act = take2(&p, Nt, I);
    *total = p.total;
    return !p.overflow;
}

/* cos/sin of every position a forward pass can reach (at most the model's maximum). */
static wl_status compute_rope_tables(wl_model *m, int Tc) {
    const wl_config *c = &m->cfg;
    if (c->arch == WL_ARCH_GPT2) return WL_OK;
    const int half = c->head_dim / 2;
    float *cs = wl_alloc_array((size_t)Tc * half, sizeof(float), "RoPE table");
    float *sn = wl_alloc_array((size_t)Tc * half, sizeof(float), "RoPE table");
    if (!cs || !sn) {
        wl_free(cs);
        wl_free(sn);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    for (int j = 0; j < half; j++) {
        /* The angles in float32, as the checkpoints' reference code computes them and the models were trained
         * with: Hugging Face inv_freq = 1.0 / (base ** (arange(0, hs, 2).float() / hs)), angle = pos.float() *
         * inv_freq; llama2.c run.c freq = 1.0f / powf(10000.0f, i / (float)hs), val = pos * freq. At long
         * positions an exact (double) angle differs from these by up to pos * 2^-24 radians. */
        const float inv_freq = 1.0f / powf(c->rope_theta, (float)(2 * j) / (float)c->head_dim);
        for (int t = 0; t < Tc; t++) {
            const float angle = (float)t * inv_freq;
            cs[(size_t)t * half + j] = (float)cos((double)angle);
            sn[(size_t)t * half + j] = (float)sin((double)angle);
        }
    }
    wl_free(m->rope_cos);
    wl_free(m->rope_sin);
    m->rope_cos = cs;
    m->rope_sin = sn;
    m->rope_positions = Tc;
    return WL_OK;
}

wl_status wl_model_reserve(wl_model *m, int B, int T, int flags) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_reserve: NULL model");
    if (B <= 0 || T <= 0) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_reserve: B = %d, T = %d must be positive", B, T);
    if (flags & ~(WL_RESERVE_TRAIN | WL_RESERVE_LAST_LOGITS | WL_RESERVE_RECOMPUTE))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_reserve: unknown flags 0x%x", (unsigned)flags);
    if (T > m->cfg.max_seq_len)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "sequence length %d exceeds the model's maximum of %d positions", T,
                       m->cfg.max_seq_len);
    if ((int64_t)B * T > (1 << 24))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_reserve: B * T = %lld tokens is too many", (long long)B * T);
    if ((flags & WL_RESERVE_RECOMPUTE) && !(flags & WL_RESERVE_TRAIN))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_reserve: WL_RESERVE_RECOMPUTE plans training: pass it with "
                       "WL_RESERVE_TRAIN");
    const int need = B * T, train = (flags & WL_RESERVE_TRAIN) != 0;
    const int logits = (flags & WL_RESERVE_LAST_LOGITS) && !train ? B : need;
    int Nc = need > m->N_cap ? need : m->N_cap, Tc = T > m->T_cap ? T : m->T_cap;
    int Ntr = train && need > m->N_train_cap ? need : m->N_train_cap;
    int Lg = logits > m->logit_cap ? logits : m->logit_cap;
    /* The latest training reservation chooses how training activations are kept; other reservations keep it. */
    const int recompute = train ? (flags & WL_RESERVE_RECOMPUTE) != 0 : m->recompute;
    if (Nc == m->N_cap && Tc == m->T_cap && Ntr == m->N_train_cap && Lg == m->logit_cap && recompute == m->recompute &&
        m->acts.buffer)
        return WL_OK;

    wl_acts a;
    memset(&a, 0, sizeof a);
    size_t total;
    const size_t L = (size_t)m->cfg.n_layers;
    if (!plan_acts(m, &a, Nc, Ntr, Tc, Lg, recompute, NULL, &total))
        return wl_fail(WL_STATUS_OUT_OF_MEMORY, "activations for %d tokens overflow the address space", Nc);
    a.k_cache = wl_alloc_array(L, sizeof(float *), "KV cache table");
    a.v_cache = wl_alloc_array(L, sizeof(float *), "KV cache table");
    a.layers = Ntr ? wl_alloc_array(L, sizeof *a.layers, "activations") : NULL;
    a.buffer = a.k_cache && a.v_cache && (a.layers || !Ntr) ? wl_alloc_array(total, sizeof(float), "activations") : NULL;
    if (!a.buffer) {
        wl_free(a.k_cache);
        wl_free(a.v_cache);
        wl_free(a.layers);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    plan_acts(m, &a, Nc, Ntr, Tc, Lg, recompute, a.buffer, &total);
    a.n_floats = total;
    /* The LoRA scratch depends on N too: drop it here and plan it again below. */
    free_act_buffers(&m->acts);
    m->acts = a;
    m->N_cap = Nc;
    m->T_cap = Tc;
    m->N_train_cap = Ntr;
    m->logit_cap = Lg;
    m->recompute = recompute;
    m->backward_ready = 0;
    wl_status st = compute_rope_tables(m, Nc < m->cfg.max_seq_len ? Nc : m->cfg.max_seq_len);
    if (st != WL_OK) return st;
    return wl_model_plan_lora_scratch(m);
}

wl_status wl_model_set_full_training(wl_model *m, int on) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_set_full_training: NULL model");
    if (!on) {
        wl_free(m->grads);
        m->grads = NULL;
        return WL_OK;
    }
    if (m->grads) return WL_OK;
    if (m->storage != WL_STORAGE_F32)
        return wl_fail(WL_STATUS_UNSUPPORTED,
                       "full-parameter training needs the base in f32; this model holds its weights quantised");
    m->grads = wl_alloc_array(m->n_params, sizeof(float), "full-parameter gradients");
    return m->grads ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
}

wl_status wl_model_zero_grad(wl_model *m) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_zero_grad: NULL model");
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
    return WL_OK;
}

float *wl_model_params(wl_model *m, size_t *n) {
    if (!m) return NULL;
    if (n) *n = m->n_params;
    return m->params;
}

float *wl_model_grads(wl_model *m) { return m ? m->grads : NULL; }

float *wl_model_logits(wl_model *m) { return m ? m->acts.logits : NULL; }

void wl_model_memory_split(const wl_model *m, size_t *weights, size_t *activations) {
    size_t w = 0, a = 0;
    if (m) {
        w = m->n_params * sizeof(float) * (m->grads ? 2 : 1);
        for (int i = 0; i < m->n_qweights; i++) w += wl_qweight_bytes(&m->qweights[i]);
        a = m->acts.n_floats * sizeof(float);
        a += m->acts.lora_n_floats * sizeof(float);
        a += m->qtile_floats * sizeof(float);
        if (m->rope_cos) a += 2 * (size_t)m->rope_positions * (m->cfg.head_dim / 2) * sizeof(float);
    }
    if (weights) *weights = w;
    if (activations) *activations = a;
}

size_t wl_model_memory_bytes(const wl_model *m) {
    size_t w, a;
    wl_model_memory_split(m, &w, &a);
    return w + a;
}
