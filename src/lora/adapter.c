/* adapter.c: LoRA adapters: creation from a per-module rank/alpha table, initialisation, accessors, and
 * attaching adapters to a model (with the scratch memory the attached set needs). */
#include <math.h>
#include <string.h>

#include "model/model.h"

/* Model-level modules: ranks and alphas of [WL_LORA_EMBED, WL_LORA_HEAD] and the model's V and C. */
typedef struct model_level {
    int ranks[2];
    float alphas[2];
    int V, C;
} model_level;

/* in and out features of model-level module slot: the embedding maps V one-hot inputs to C, the head C to V. */
static int model_in(const model_level *ml, int slot) { return slot == WL_LORA_EMBED ? ml->V : ml->C; }
static int model_out(const model_level *ml, int slot) { return slot == WL_LORA_EMBED ? ml->C : ml->V; }

/* Place module mod's factors (and DoRA magnitudes) at *off in the adapter's buffers. */
static void set_module(wl_adapter *a, wl_lora_module *mod, int layer, int slot, int r, float alpha, int in, int outf,
                       size_t *off) {
    mod->layer = layer;
    mod->slot = slot;
    mod->rank = r;
    mod->in_features = in;
    mod->out_features = outf;
    mod->alpha = alpha;
    mod->scale = a->use_rslora ? alpha / sqrtf((float)r) : alpha / (float)r;
    mod->A = a->params + *off;
    mod->dA = a->grads + *off;
    *off += (size_t)r * in;
    mod->B = a->params + *off;
    mod->dB = a->grads + *off;
    *off += (size_t)outf * r;
    if (a->dora) {
        mod->magnitude = a->params + *off;
        mod->dmagnitude = a->grads + *off;
        *off += (size_t)outf;
    }
    if (r > a->max_rank) a->max_rank = r;
}

/* Build an adapter for a model shape: per-slot in/out features, per-module ranks and alphas (L * S tables), and the
 * model-level modules. */
static wl_status adapter_build(int arch, int L, int S, const int *in_f, const int *out_f, const char *const *names,
                               const int *ranks, const float *alphas, int use_rslora, int use_dora,
                               const model_level *ml, wl_adapter **out) {
    *out = NULL;
    int n_modules = 0;
    size_t n_params = 0;
    static const char *const model_names[2] = {"token embedding", "LM head"};
    for (int slot = 0; slot < 2; slot++) {
        int r = ml->ranks[slot];
        if (r == 0) continue;
        int in = model_in(ml, slot), outf = model_out(ml, slot), max_r = in < outf ? in : outf;
        if (r < 0 || r > max_r)
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "LoRA rank %d for the %s is out of range [1, %d]", r,
                           model_names[slot], max_r);
        if (!isfinite(ml->alphas[slot]))
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "LoRA alpha for the %s is not finite", model_names[slot]);
        if (use_dora)
            return wl_fail(WL_STATUS_UNSUPPORTED, "DoRA on the %s is not supported: adapt it with plain LoRA",
                           model_names[slot]);
        if (!wl_add_size(n_params, (size_t)r * in + (size_t)outf * r, &n_params))
            return wl_fail(WL_STATUS_OUT_OF_MEMORY, "adapter size overflows");
        n_modules++;
    }
    for (int i = 0; i < L * S; i++) {
        int r = ranks[i];
        if (r == 0) continue;
        int s = i % S;
        int max_r = in_f[s] < out_f[s] ? in_f[s] : out_f[s];
        if (r < 0 || r > max_r)
            return wl_fail(WL_STATUS_INVALID_ARGUMENT,
                           "LoRA rank %d for layer %d %s is out of range [1, %d] (min of in %d and out %d features)",
                           r, i / S, names[s], max_r, in_f[s], out_f[s]);
        if (!isfinite(alphas[i]))
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "LoRA alpha for layer %d %s is not finite", i / S, names[s]);
        size_t per = (size_t)r * in_f[s] + (size_t)out_f[s] * r + (use_dora ? (size_t)out_f[s] : 0);
        if (!wl_add_size(n_params, per, &n_params))
            return wl_fail(WL_STATUS_OUT_OF_MEMORY, "adapter size overflows");
        n_modules++;
    }
    if (n_modules == 0) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "the adapter targets no module (every rank is 0)");

    wl_adapter *a = wl_alloc(sizeof *a, "adapter");
    if (!a) return WL_STATUS_OUT_OF_MEMORY;
    a->arch = arch;
    a->n_layers = L;
    a->n_slots = S;
    a->use_rslora = use_rslora;
    a->dora = use_dora != 0;
    for (int s = 0; s < S; s++) {
        a->in_features[s] = in_f[s];
        a->out_features[s] = out_f[s];
    }
    a->n_modules = n_modules;
    a->n_params = n_params;
    a->modules = wl_alloc_array((size_t)n_modules, sizeof *a->modules, "adapter modules");
    a->index = wl_alloc_array((size_t)L * S, sizeof *a->index, "adapter index");
    a->params = wl_alloc_array(n_params, sizeof(float), "adapter weights");
    a->grads = wl_alloc_array(n_params, sizeof(float), "adapter gradients");
    if (a->dora) {
        size_t n_norms = 0;
        for (int i = 0; i < L * S; i++) n_norms += ranks[i] ? (size_t)out_f[i % S] : 0;
        a->dora_norms = wl_alloc_array(n_norms, sizeof(float), "DoRA norms");
        a->dora_seen = wl_alloc_array(n_params + (size_t)n_modules, sizeof(float), "DoRA norm inputs");
    }
    if (!a->modules || !a->index || !a->params || !a->grads || (a->dora && (!a->dora_norms || !a->dora_seen))) {
        wl_adapter_free(a);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    size_t off = 0;
    int mi_index = 0;
    a->model_index[WL_LORA_EMBED] = a->model_index[WL_LORA_HEAD] = -1;
    if (ml->ranks[WL_LORA_EMBED] || ml->ranks[WL_LORA_HEAD]) {
        a->vocab = ml->V;
        a->dim = ml->C;
    }
    /* buffer order follows the forward pass: embedding, blocks, head */
    if (ml->ranks[WL_LORA_EMBED]) {
        set_module(a, &a->modules[mi_index], WL_LORA_MODEL_LAYER, WL_LORA_EMBED, ml->ranks[WL_LORA_EMBED],
                   ml->alphas[WL_LORA_EMBED], ml->V, ml->C, &off);
        a->model_index[WL_LORA_EMBED] = mi_index++;
    }
    for (int i = 0; i < L * S; i++) {
        a->index[i] = -1;
        if (ranks[i] == 0) continue;
        int s = i % S;
        set_module(a, &a->modules[mi_index], i / S, s, ranks[i], alphas[i], in_f[s], out_f[s], &off);
        a->index[i] = mi_index++;
    }
    if (ml->ranks[WL_LORA_HEAD]) {
        set_module(a, &a->modules[mi_index], WL_LORA_MODEL_LAYER, WL_LORA_HEAD, ml->ranks[WL_LORA_HEAD],
                   ml->alphas[WL_LORA_HEAD], ml->C, ml->V, &off);
        a->model_index[WL_LORA_HEAD] = mi_index++;
    }
    *out = a;
    return WL_OK;
}

wl_status wl_adapter_create(const wl_model *m, const wl_lora_spec *spec, wl_adapter **out) {
    if (!m || !spec || !out || !spec->ranks || !spec->alphas)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_create: NULL argument");
    int in_f[WL_MAX_SLOTS], out_f[WL_MAX_SLOTS];
    const char *names[WL_MAX_SLOTS];
    for (int s = 0; s < m->n_slots; s++) {
        in_f[s] = m->slot_info[s].in_features;
        out_f[s] = m->slot_info[s].out_features;
        names[s] = m->slot_info[s].name;
    }
    const model_level ml = {{spec->embed_rank, spec->head_rank}, {spec->embed_alpha, spec->head_alpha},
                            m->cfg.vocab_size, m->cfg.dim};
    return adapter_build(m->cfg.arch, m->cfg.n_layers, m->n_slots, in_f, out_f, names, spec->ranks, spec->alphas,
                         spec->use_rslora, spec->use_dora, &ml, out);
}

wl_status wl_adapter_create_shaped(int arch, int n_layers, int n_slots, const int *in_features, const int *out_features,
                                   const wl_lora_spec *spec, wl_adapter **out) {
    if (!in_features || !out_features || !spec || !spec->ranks || !spec->alphas || !out)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_create_shaped: NULL argument");
    if (arch != WL_ARCH_LLAMA && arch != WL_ARCH_GPT2) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "unknown architecture %d", arch);
    if (n_layers < 1 || n_layers > 1024 || n_slots < 1 || n_slots > WL_MAX_SLOTS)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter shape: %d layers and %d module slots are out of range", n_layers, n_slots);
    const char *names[WL_MAX_SLOTS];
    for (int s = 0; s < n_slots; s++) {
        names[s] = "module";
        if (in_features[s] < 0 || out_features[s] < 0 || in_features[s] > (1 << 20) || out_features[s] > (1 << 20))
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter shape: slot %d has %d inputs and %d outputs", s, in_features[s],
                           out_features[s]);
    }
    if (spec->embed_rank || spec->head_rank)
        return wl_fail(WL_STATUS_UNSUPPORTED, "an adapter on the token embedding or LM head needs the model's shape: "
                       "create it for a loaded model");
    const model_level none = {{0, 0}, {0.0f, 0.0f}, 0, 0};
    return adapter_build(arch, n_layers, n_slots, in_features, out_features, names, spec->ranks, spec->alphas,
                         spec->use_rslora, spec->use_dora, &none, out);
}

wl_status wl_adapter_create_like(const wl_adapter *shape, const int *ranks, const float *scales, wl_adapter **out) {
    if (!shape || !ranks || !scales || !out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_create_like: NULL argument");
    const int n = shape->n_layers * shape->n_slots;
    float *alphas = wl_alloc_array((size_t)n, sizeof(float), "adapter alphas");
    if (!alphas) return WL_STATUS_OUT_OF_MEMORY;
    /* alpha = s r, so the plain LoRA scale alpha / r is exactly s for every module. */
    for (int i = 0; i < n; i++) alphas[i] = scales[i] * (float)ranks[i];
    const char *names[WL_MAX_SLOTS];
    static const char *generic = "module";
    for (int s = 0; s < shape->n_slots; s++) names[s] = generic;
    const model_level none = {{0, 0}, {0.0f, 0.0f}, 0, 0};
    wl_status st = adapter_build(shape->arch, shape->n_layers, shape->n_slots, shape->in_features, shape->out_features,
                                 names, ranks, alphas, 0, 0, &none, out);
    if (st == WL_OK) {
        for (int i = 0; i < (*out)->n_modules; i++) {
            wl_lora_module *mod = &(*out)->modules[i];
            mod->scale = scales[mod->layer * shape->n_slots + mod->slot];
        }
    }
    wl_free(alphas);
    return st;
}

int wl_adapter_in_use(const wl_adapter *a) { return a && (a->attached != 0 || a->base_edits != 0); }

void wl_adapter_free(wl_adapter *a) {
    if (!a) return;
    /* Freeing an attached or merged adapter would leave the model with a dangling pointer: a caller bug. */
    WL_ASSERT(a->attached == 0 && a->base_edits == 0);
    wl_free(a->pissa_init);
    wl_free(a->dora_norms);
    wl_free(a->dora_seen);
    wl_free(a->modules);
    wl_free(a->index);
    wl_free(a->params);
    wl_free(a->grads);
    wl_free(a);
}

wl_status wl_adapter_init(wl_adapter *a, int init, uint64_t seed) {
    if (!a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_init: NULL adapter");
    if (init != WL_LORA_INIT_DEFAULT && init != WL_LORA_INIT_GAUSSIAN && init != WL_LORA_INIT_ZERO)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "unknown LoRA init %d", init);
    wl_rng rng;
    wl_rng_seed(&rng, seed);
    for (int i = 0; i < a->n_modules; i++) {
        wl_lora_module *mod = &a->modules[i];
        size_t na = (size_t)mod->rank * mod->in_features, nb = (size_t)mod->out_features * mod->rank;
        if (mod->layer == WL_LORA_MODEL_LAYER && mod->slot == WL_LORA_EMBED) {
            /* PEFT's Embedding (for "gaussian" too): A = 0 and B ~ N(0, 1), loralib's nn.Embedding default; the
             * zero A keeps the new adapter a no-op. */
            memset(mod->A, 0, na * sizeof(float));
            for (size_t j = 0; j < nb; j++) mod->B[j] = init == WL_LORA_INIT_ZERO ? 0.0f : wl_rng_normal(&rng);
            continue;
        }
        if (init == WL_LORA_INIT_DEFAULT) {
            /* kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in) = 1/sqrt(in). */
            float bound = 1.0f / sqrtf((float)mod->in_features);
            for (size_t j = 0; j < na; j++) mod->A[j] = wl_rng_range(&rng, -bound, bound);
        } else if (init == WL_LORA_INIT_GAUSSIAN) {
            float std = 1.0f / (float)mod->rank;
            for (size_t j = 0; j < na; j++) mod->A[j] = std * wl_rng_normal(&rng);
        } else {
            memset(mod->A, 0, na * sizeof(float));
        }
        memset(mod->B, 0, nb * sizeof(float));
        if (mod->magnitude) memset(mod->magnitude, 0, (size_t)mod->out_features * sizeof(float));
    }
    a->dora_valid = 0;
    return WL_OK;
}

int wl_adapter_is_dora(const wl_adapter *a) { return a && a->dora; }

/* ---- MergedLinear row blocks ---- */

static int popcount(unsigned x) {
    int n = 0;
    for (; x; x &= x - 1) n++;
    return n;
}

void wl_lora_mask_blocks(const wl_lora_module *mod, float *b) {
    if (!mod->row_blocks) return;
    const int r = mod->rank, rows = mod->out_features / mod->row_blocks;
    const int slice = r / popcount((unsigned)mod->block_mask);
    for (int blk = 0, k = 0; blk < mod->row_blocks; blk++) {
        const int on = (mod->block_mask >> blk) & 1;
        for (int o = blk * rows; o < (blk + 1) * rows; o++) {
            float *row = b + (size_t)o * r;
            for (int c = 0; c < r; c++) {
                if (!on || c < k * slice || c >= (k + 1) * slice) row[c] = 0.0f;
            }
        }
        k += on;
    }
}

wl_status wl_adapter_set_row_blocks(wl_adapter *a, int index, int row_blocks, int block_mask) {
    if (!a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_set_row_blocks: NULL adapter");
    if (index < 0 || index >= a->n_modules)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter module %d out of range [0, %d)", index, a->n_modules);
    wl_lora_module *mod = &a->modules[index];
    if (row_blocks == 0) {
        mod->row_blocks = mod->block_mask = 0;
        return WL_OK;
    }
    if (row_blocks < 2 || row_blocks > 16 || mod->out_features % row_blocks != 0)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%d row blocks do not split the module's %d outputs evenly (2 to 16 blocks)",
                       row_blocks, mod->out_features);
    if (block_mask <= 0 || block_mask >= (1 << row_blocks))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "block mask %d selects no block of %d, or one beyond them", block_mask, row_blocks);
    const int k = popcount((unsigned)block_mask);
    if (mod->rank % k != 0)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "rank %d does not split into %d equal slices, one per adapted block", mod->rank, k);
    if (a->pissa_init) return wl_fail(WL_STATUS_UNSUPPORTED, "a PiSSA adapter's modules cannot be split into row blocks");
    mod->row_blocks = row_blocks;
    mod->block_mask = block_mask;
    wl_lora_mask_blocks(mod, mod->B);
    return WL_OK;
}

/* ---- DoRA norms ---- */

void wl_dora_row_norms(const wl_kernels *k, const wl_linear *lin, const wl_lora_module *mod, float *norms, float *rows) {
    const int in = mod->in_features, r = mod->rank;
    for (int o0 = 0; o0 < mod->out_features; o0 += WL_DORA_ROWS) {
        const int n = mod->out_features - o0 < WL_DORA_ROWS ? mod->out_features - o0 : WL_DORA_ROWS;
        /* A quantised base's norms are those of its dequantised rows, the weights its products compute with. */
        if (lin->qw) wl_qweight_dequantize_rows(k, lin->qw, o0, n, rows, in);
        else memcpy(rows, lin->w + (size_t)o0 * in, (size_t)n * in * sizeof(float));
        /* rows (n, in) += s B[o0 : o0 + n] (n, r) A (r, in) */
        wl_sgemm(k, 0, 0, n, in, r, mod->scale, mod->B + (size_t)o0 * r, r, mod->A, in, 1.0f, rows, in);
        for (int j = 0; j < n; j++) {
            double sum = 0.0;
            for (int i = 0; i < in; i++) sum += (double)rows[(size_t)j * in + i] * rows[(size_t)j * in + i];
            norms[o0 + j] = (float)sqrt(sum);
        }
    }
}

/* The norms of every module of a for model m's current weights; rows as in wl_dora_row_norms. */
static void dora_compute(const wl_model *m, wl_adapter *a, float *rows) {
    size_t off = 0;
    for (int i = 0; i < a->n_modules; i++) {
        const wl_lora_module *mod = &a->modules[i];
        wl_dora_row_norms(m->k, &m->blocks[mod->layer].lin[mod->slot], mod, a->dora_norms + off, rows);
        off += (size_t)mod->out_features;
    }
    memcpy(a->dora_seen, a->params, a->n_params * sizeof(float));
    for (int i = 0; i < a->n_modules; i++) a->dora_seen[a->n_params + i] = a->modules[i].scale;
    a->dora_model = m;
    a->dora_epoch = m->weights_epoch;
    a->dora_valid = 1;
}

void wl_dora_refresh(wl_model *m, int force) {
    for (int i = 0; i < m->n_adapters; i++) {
        wl_adapter *a = m->adapters[i];
        if (!a->dora) continue;
        int fresh = !force && a->dora_valid && a->dora_model == m && a->dora_epoch == m->weights_epoch &&
                    memcmp(a->dora_seen, a->params, a->n_params * sizeof(float)) == 0;
        for (int j = 0; fresh && j < a->n_modules; j++) fresh = a->dora_seen[a->n_params + j] == a->modules[j].scale;
        if (!fresh) dora_compute(m, a, m->acts.lora_rows);
    }
}

wl_status wl_adapter_init_dora(const wl_model *m, wl_adapter *a) {
    if (!m || !a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_init_dora: NULL argument");
    if (!a->dora) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "the adapter was not created with DoRA modules");
    if (!wl_adapter_fits(a, m)) return wl_fail(WL_STATUS_SHAPE_MISMATCH, "the adapter was made for a model of another shape");
    int max_in = 0;
    for (int i = 0; i < a->n_modules; i++) max_in = a->modules[i].in_features > max_in ? a->modules[i].in_features : max_in;
    float *rows = wl_alloc_array((size_t)WL_DORA_ROWS * (size_t)max_in, sizeof(float), "DoRA norm rows");
    if (!rows) return WL_STATUS_OUT_OF_MEMORY;
    dora_compute(m, a, rows);
    wl_free(rows);
    size_t off = 0;
    for (int i = 0; i < a->n_modules; i++) {
        memcpy(a->modules[i].magnitude, a->dora_norms + off, (size_t)a->modules[i].out_features * sizeof(float));
        off += (size_t)a->modules[i].out_features;
    }
    a->dora_valid = 0; /* the params changed */
    return WL_OK;
}

int wl_adapter_n_modules(const wl_adapter *a) { return a ? a->n_modules : 0; }

wl_status wl_adapter_module(const wl_adapter *a, int index, wl_lora_module *module) {
    if (!a || !module) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_module: NULL argument");
    if (index < 0 || index >= a->n_modules)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter module %d out of range [0, %d)", index, a->n_modules);
    *module = a->modules[index];
    return WL_OK;
}

int wl_adapter_find(const wl_adapter *a, int layer, int slot) {
    if (a && layer == WL_LORA_MODEL_LAYER) return slot == WL_LORA_EMBED || slot == WL_LORA_HEAD ? a->model_index[slot] : -1;
    if (!a || layer < 0 || layer >= a->n_layers || slot < 0 || slot >= a->n_slots) return -1;
    return a->index[layer * a->n_slots + slot];
}

float *wl_adapter_params(wl_adapter *a, size_t *n) {
    if (!a) return NULL;
    if (n) *n = a->n_params;
    return a->params;
}

float *wl_adapter_grads(wl_adapter *a) { return a ? a->grads : NULL; }

wl_status wl_adapter_zero_grad(wl_adapter *a) {
    if (!a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_zero_grad: NULL adapter");
    memset(a->grads, 0, a->n_params * sizeof(float));
    return WL_OK;
}

wl_status wl_adapter_set_scale(wl_adapter *a, int index, float scale) {
    if (!a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_set_scale: NULL adapter");
    if (index < 0 || index >= a->n_modules)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter module %d out of range [0, %d)", index, a->n_modules);
    if (!isfinite(scale)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "LoRA scale is not finite");
    a->modules[index].scale = scale;
    return WL_OK;
}

int wl_adapter_fits(const wl_adapter *a, const wl_model *m) {
    if (a->arch != m->cfg.arch || a->n_layers != m->cfg.n_layers || a->n_slots != m->n_slots) return 0;
    if (a->vocab && (a->vocab != m->cfg.vocab_size || a->dim != m->cfg.dim)) return 0;
    for (int s = 0; s < a->n_slots; s++) {
        if (a->in_features[s] != m->slot_info[s].in_features || a->out_features[s] != m->slot_info[s].out_features)
            return 0;
    }
    return 1;
}

/* ---- attaching ---- */

wl_status wl_model_plan_lora_scratch(wl_model *m) {
    wl_acts *a = &m->acts;
    wl_free(a->lora_buffer);
    a->lora_buffer = NULL;
    a->lora_n_floats = 0;
    a->lora_x = a->lora_xa = a->lora_dxa = a->lora_dx = a->lora_z = a->lora_rows = a->lora_saved = NULL;
    a->lora_saved_off = a->lora_z_off = NULL;
    if (m->n_adapters == 0 || m->N_cap == 0) return WL_OK;

    const size_t N = (size_t)m->N_cap;
    size_t max_in = 0, max_r = 0, saved = 0;
    for (int s = 0; s < m->n_slots; s++) {
        if ((size_t)m->slot_info[s].in_features > max_in) max_in = (size_t)m->slot_info[s].in_features;
    }
    for (int i = 0; i < m->n_adapters; i++) {
        if ((size_t)m->adapters[i]->max_rank > max_r) max_r = (size_t)m->adapters[i]->max_rank;
    }
    size_t max_out = 0;
    int any_dora = 0;
    for (int s = 0; s < m->n_slots; s++) {
        if ((size_t)m->slot_info[s].out_features > max_out) max_out = (size_t)m->slot_info[s].out_features;
    }
    for (int i = 0; i < m->n_adapters; i++) any_dora |= m->adapters[i]->dora;
    const wl_adapter *t = m->trainable;
    /* With recompute, backward refills a block's DoRA z just before that block's backward: one z per slot serves
     * every layer. */
    const int shared_z = t && t->dora && m->recompute;
    if (t) {
        for (int i = 0; i < t->n_modules; i++)
            saved += (size_t)t->modules[i].rank + (t->dora && !shared_z ? (size_t)t->modules[i].out_features : 0);
    }
    for (int s = 0; shared_z && s < m->n_slots; s++) saved += (size_t)m->slot_info[s].out_features;
    size_t n_off = t ? 2 * (size_t)t->n_modules : 0;
    /* offsets are stored as size_t inside the same float buffer: round their space up to floats */
    size_t off_floats = (n_off * sizeof(size_t) + sizeof(float) - 1) / sizeof(float);
    size_t total = 0, part;
    enum { N_PARTS = 7 };
    size_t parts[N_PARTS];
    const size_t widths[N_PARTS] = {max_in, max_r, max_r, max_in, any_dora ? max_out : 0, 0, saved};
    for (int i = 0; i < N_PARTS; i++) {
        if (!wl_mul_size(N, widths[i], &parts[i]) || parts[i] > SIZE_MAX / 8)
            return wl_fail(WL_STATUS_OUT_OF_MEMORY, "LoRA scratch for %zu tokens overflows the address space", N);
    }
    parts[5] = any_dora ? (size_t)WL_DORA_ROWS * max_in : 0; /* DoRA norm rows: not per token */
    for (int i = 0; i < N_PARTS; i++) {
        if (!wl_add_size(total, (parts[i] + 15) & ~(size_t)15, &total))
            return wl_fail(WL_STATUS_OUT_OF_MEMORY, "LoRA scratch size overflows");
    }
    if (!wl_add_size(total, off_floats + 16, &total) || total > SIZE_MAX / sizeof(float))
        return wl_fail(WL_STATUS_OUT_OF_MEMORY, "LoRA scratch size overflows");
    float *buf = wl_alloc_array(total, sizeof(float), "LoRA activations");
    if (!buf) return WL_STATUS_OUT_OF_MEMORY;
    a->lora_buffer = buf;
    a->lora_n_floats = total;
    float *p = buf;
    float **dst[N_PARTS] = {&a->lora_x, &a->lora_xa, &a->lora_dxa, &a->lora_dx, &a->lora_z, &a->lora_rows, &a->lora_saved};
    for (int i = 0; i < N_PARTS; i++) {
        *dst[i] = p;
        part = (parts[i] + 15) & ~(size_t)15;
        p += part;
    }
    a->lora_saved_off = (size_t *)(void *)p;
    a->lora_z_off = a->lora_saved_off + n_off / 2;
    size_t acc = 0;
    for (size_t i = 0; i < n_off / 2; i++) {
        const wl_lora_module *mod = &t->modules[i];
        a->lora_saved_off[i] = acc;
        acc += N * (size_t)mod->rank;
        a->lora_z_off[i] = acc;
        if (t->dora && !shared_z) acc += N * (size_t)mod->out_features;
    }
    size_t slot_z[WL_MAX_SLOTS];
    for (int s = 0; shared_z && s < m->n_slots; s++) {
        slot_z[s] = acc;
        acc += N * (size_t)m->slot_info[s].out_features;
    }
    for (size_t i = 0; shared_z && i < n_off / 2; i++) a->lora_z_off[i] = slot_z[t->modules[i].slot];
    m->backward_ready = 0;
    return WL_OK;
}

wl_status wl_model_set_adapters(wl_model *m, wl_adapter *const *adapters, const float *weights, int n) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_set_adapters: NULL model");
    if (n < 0 || n > WL_MAX_ADAPTERS)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "between 0 and %d adapters can be attached, not %d", WL_MAX_ADAPTERS, n);
    if (n > 0 && !adapters) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_set_adapters: NULL adapter list");
    for (int i = 0; i < n; i++) {
        if (!adapters[i]) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter %d is NULL", i);
        if (!wl_adapter_fits(adapters[i], m))
            return wl_fail(WL_STATUS_SHAPE_MISMATCH, "adapter %d was made for a model of another shape", i);
        if (weights && !isfinite(weights[i])) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter weight %d is not finite", i);
        int edit = wl_model_find_edit(m, adapters[i]);
        if (edit >= 0 && m->edits[edit].kind == WL_EDIT_MERGE)
            return wl_fail(WL_STATUS_BAD_STATE, "adapter %d is merged into the weights: applying it again would double it", i);
        for (int j = 0; j < i; j++) {
            if (adapters[j] == adapters[i]) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "adapter %d is listed twice", i);
        }
        if (adapters[i]->dora && (n > 1 || (weights && weights[i] != 1.0f)))
            return wl_fail(WL_STATUS_UNSUPPORTED, "a DoRA adapter applies alone and with weight 1: its magnitudes rescale "
                           "the whole layer output, so mixing it with other adapters or weighting it is not defined");
    }
    for (int i = 0; i < m->n_adapters; i++) m->adapters[i]->attached--;
    int keep_trainable = 0;
    for (int i = 0; i < n; i++) {
        m->adapters[i] = adapters[i];
        m->adapter_weights[i] = weights ? weights[i] : 1.0f;
        adapters[i]->attached++;
        if (adapters[i] == m->trainable) keep_trainable = 1;
    }
    m->n_adapters = n;
    if (!keep_trainable) m->trainable = NULL;
    return wl_model_plan_lora_scratch(m);
}

wl_status wl_model_set_trainable(wl_model *m, wl_adapter *a) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_set_trainable: NULL model");
    if (a) {
        int found = 0;
        for (int i = 0; i < m->n_adapters; i++) found |= m->adapters[i] == a;
        if (!found) return wl_fail(WL_STATUS_BAD_STATE, "the trainable adapter must be attached to the model first");
    }
    m->trainable = a;
    return wl_model_plan_lora_scratch(m);
}

wl_status wl_model_set_lora_dropout(wl_model *m, float p, uint64_t seed, uint64_t step) {
    if (!m) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_set_lora_dropout: NULL model");
    if (!(p >= 0.0f && p < 1.0f)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "LoRA dropout %g must be in [0, 1)", (double)p);
    m->dropout_p = p;
    m->dropout_seed = seed;
    m->dropout_step = step;
    return WL_OK;
}
