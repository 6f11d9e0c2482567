/* merge.c: changes to the base weights that belong to an adapter and can be undone bit for bit: merging an
 * adapter (W += w s B A) and PiSSA initialisation (W -= s B0 A0 after A0, B0 are taken from W's top singular
 * triplets; on a quantised base the residual is quantised again). Each change keeps the original weights of the
 * modules it touched (f32, or the quantised blocks), which is what an exact restore needs: adding and then
 * subtracting the same update does not give W back in floating point. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/parallel.h"
#include "model/model.h"
#include "wl_optim.h"
#include "wl_svd.h"

int wl_model_find_edit(const wl_model *m, const wl_adapter *a) {
    for (int i = m->n_edits - 1; i >= 0; i--) {
        if (m->edits[i].adapter == a) return i;
    }
    return -1;
}

static void free_edit(wl_base_edit *e) {
    for (int i = 0; e->backup && i < e->n_modules; i++) wl_free(e->backup[i]);
    for (int i = 0; e->qbackup && i < e->n_modules; i++) wl_qweight_free(&e->qbackup[i]);
    wl_free(e->backup);
    wl_free(e->qbackup);
    wl_free(e->layers);
    wl_free(e->slots);
    memset(e, 0, sizeof *e);
}

wl_status wl_model_push_edit(wl_model *m, const wl_adapter *a, int kind, float weight) {
    WL_ASSERT(m->storage == WL_STORAGE_F32 || kind == WL_EDIT_PISSA); /* merge refuses quantised bases first */
    const int quantised = m->storage != WL_STORAGE_F32;
    wl_base_edit e;
    memset(&e, 0, sizeof e);
    e.adapter = a;
    e.kind = kind;
    e.weight = weight;
    e.n_modules = a->n_modules;
    e.layers = wl_alloc_array((size_t)a->n_modules, sizeof(int), "edit modules");
    e.slots = wl_alloc_array((size_t)a->n_modules, sizeof(int), "edit modules");
    if (quantised)
        e.qbackup = wl_alloc_array((size_t)a->n_modules, sizeof(wl_qweight), "edit backups");
    else
        e.backup = wl_alloc_array((size_t)a->n_modules, sizeof(float *), "edit backups");
    wl_base_edit *grown = wl_alloc_array((size_t)m->n_edits + 1, sizeof *grown, "edit list");
    if (!e.layers || !e.slots || !(e.backup || e.qbackup) || !grown) {
        wl_free(grown);
        free_edit(&e);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    for (int i = 0; i < a->n_modules; i++) {
        const wl_lora_module *mod = &a->modules[i];
        const wl_linear *lin = wl_linear_of(m, mod->layer, mod->slot);
        size_t n = (size_t)lin->out * lin->in;
        e.layers[i] = mod->layer;
        e.slots[i] = mod->slot;
        if (quantised) {
            if (wl_qweight_clone(&e.qbackup[i], lin->qw) != WL_OK) {
                wl_free(grown);
                free_edit(&e);
                return WL_STATUS_OUT_OF_MEMORY;
            }
            continue;
        }
        e.backup[i] = wl_alloc_array(n, sizeof(float), "original weights of a merged module");
        if (!e.backup[i]) {
            wl_free(grown);
            free_edit(&e);
            return WL_STATUS_OUT_OF_MEMORY;
        }
        memcpy(e.backup[i], lin->w, n * sizeof(float));
    }
    if (m->n_edits) memcpy(grown, m->edits, (size_t)m->n_edits * sizeof *grown);
    m->weights_epoch++;
    grown[m->n_edits] = e;
    wl_free(m->edits);
    m->edits = grown;
    m->n_edits++;
    ((wl_adapter *)a)->base_edits++;
    return WL_OK;
}

/* Undo edit `index`: only if no later edit still in place touched one of its modules. */
wl_status wl_model_pop_edit(wl_model *m, int index) {
    wl_base_edit *e = &m->edits[index];
    for (int j = index + 1; j < m->n_edits; j++) {
        const wl_base_edit *later = &m->edits[j];
        for (int a = 0; a < e->n_modules; a++) {
            for (int b = 0; b < later->n_modules; b++) {
                if (e->layers[a] == later->layers[b] && e->slots[a] == later->slots[b])
                    return wl_fail(WL_STATUS_BAD_STATE,
                                   "another adapter was merged into the same weights afterwards (layer %d, %s): undo that first",
                                   e->layers[a], wl_slot_name(m, e->layers[a], e->slots[a]));
            }
        }
    }
    for (int i = 0; i < e->n_modules; i++) {
        wl_linear *lin = wl_linear_of(m, e->layers[i], e->slots[i]);
        if (e->qbackup)
            wl_qweight_copy(lin->qw, &e->qbackup[i]);
        else
            memcpy(lin->w, e->backup[i], (size_t)lin->out * lin->in * sizeof(float));
    }
    m->weights_epoch++;
    ((wl_adapter *)e->adapter)->base_edits--;
    free_edit(e);
    memmove(&m->edits[index], &m->edits[index + 1], (size_t)(m->n_edits - index - 1) * sizeof *m->edits);
    m->n_edits--;
    return WL_OK;
}

void wl_model_free_edits(wl_model *m) {
    for (int i = 0; i < m->n_edits; i++) {
        ((wl_adapter *)m->edits[i].adapter)->base_edits--;
        free_edit(&m->edits[i]);
    }
    wl_free(m->edits);
    m->edits = NULL;
    m->n_edits = 0;
}

wl_status wl_model_merge(wl_model *m, wl_adapter *a, float weight) {
    if (!m || !a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_merge: NULL argument");
    if (m->storage != WL_STORAGE_F32)
        return wl_fail(WL_STATUS_UNSUPPORTED, "merging needs the base in f32; this model holds its weights quantised "
                                              "(load it with dtype 'f32' to merge, or keep the adapter unmerged)");
    if (!isfinite(weight)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "merge weight is not finite");
    if (!wl_adapter_fits(a, m)) return wl_fail(WL_STATUS_SHAPE_MISMATCH, "the adapter was made for a model of another shape");
    int at = wl_model_find_edit(m, a);
    if (at >= 0 && m->edits[at].kind == WL_EDIT_MERGE) return WL_OK; /* merged already: merging again changes nothing */
    if (at >= 0) return wl_fail(WL_STATUS_BAD_STATE, "a PiSSA adapter cannot be merged while its residual is in the base; export it as LoRA first");
    if (!wl_all_finite(a->params, a->n_params)) return wl_fail(WL_STATUS_NUMERIC, "the adapter holds NaN or infinite weights");
    if (a->dora && weight != 1.0f)
        return wl_fail(WL_STATUS_UNSUPPORTED, "a DoRA adapter merges with weight 1 only (its magnitudes set the rows' norms)");
    if (a->vocab && m->wte == m->lm_head)
        return wl_fail(WL_STATUS_UNSUPPORTED, "this model's token embedding and LM head are one tensor, and the adapter "
                       "adapts the %s: merging would change the %s as well, which the adapter does not; keep it unmerged "
                       "(or use a model with an untied head)",
                       a->model_index[WL_LORA_EMBED] >= 0 ? "embedding" : "head",
                       a->model_index[WL_LORA_EMBED] >= 0 ? "head" : "embedding");

    /* The update moves into W: stop applying it in the forward pass. */
    for (int i = 0; i < m->n_adapters; i++) {
        if (m->adapters[i] == a) {
            wl_adapter *rest[WL_MAX_ADAPTERS];
            float w[WL_MAX_ADAPTERS];
            int n = 0;
            for (int j = 0; j < m->n_adapters; j++) {
                if (m->adapters[j] == a) continue;
                rest[n] = m->adapters[j];
                w[n++] = m->adapter_weights[j];
            }
            wl_status st = wl_model_set_adapters(m, rest, w, n);
            if (st != WL_OK) return st;
            break;
        }
    }
    wl_status st = wl_model_push_edit(m, a, WL_EDIT_MERGE, weight);
    if (st != WL_OK) return st;
    for (int i = 0; i < a->n_modules; i++) {
        const wl_lora_module *mod = &a->modules[i];
        wl_linear *lin = wl_linear_of(m, mod->layer, mod->slot);
        if (mod->layer == WL_LORA_MODEL_LAYER && mod->slot == WL_LORA_EMBED) {
            /* the embedding is stored (V, C), the transpose of its (out, in) view: wte += weight * s A^T B^T */
            wl_sgemm(m->k, 1, 1, lin->in, lin->out, mod->rank, weight * mod->scale, mod->A, lin->in, mod->B, mod->rank,
                     1.0f, lin->w, lin->out);
            continue;
        }
        /* W (out, in) += weight * s * B (out, r) A (r, in) */
        wl_sgemm(m->k, 0, 0, lin->out, lin->in, mod->rank, weight * mod->scale, mod->B, mod->rank, mod->A, lin->in,
                 1.0f, lin->w, lin->in);
        if (!a->dora) continue;
        /* DoRA (PEFT's merge): W = (m / ||W + s B A||_row) (W + s B A); each row of the sum is now in W. */
        for (int o = 0; o < lin->out; o++) {
            float *row = lin->w + (size_t)o * lin->in;
            double sum = 0.0;
            for (int j = 0; j < lin->in; j++) sum += (double)row[j] * row[j];
            const float g = mod->magnitude[o] / (float)sqrt(sum);
            for (int j = 0; j < lin->in; j++) row[j] *= g;
        }
    }
    return WL_OK;
}

wl_status wl_model_unmerge(wl_model *m, wl_adapter *a) {
    if (!m || !a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_unmerge: NULL argument");
    int at = wl_model_find_edit(m, a);
    if (at < 0) return wl_fail(WL_STATUS_BAD_STATE, "the adapter is not merged into this model");
    return wl_model_pop_edit(m, at);
}

int wl_model_is_merged(const wl_model *m, const wl_adapter *a) {
    if (!m || !a) return 0;
    int at = wl_model_find_edit(m, a);
    return at >= 0 && m->edits[at].kind == WL_EDIT_MERGE;
}

size_t wl_model_edit_bytes(const wl_model *m) {
    size_t n = 0;
    for (int i = 0; m && i < m->n_edits; i++) {
        for (int j = 0; j < m->edits[i].n_modules; j++) {
            const wl_linear *lin = wl_linear_of_const(m, m->edits[i].layers[j], m->edits[i].slots[j]);
            n += lin->qw ? wl_qweight_bytes(lin->qw) : (size_t)lin->out * lin->in * sizeof(float);
        }
    }
    return n;
}

/* ---- PiSSA ---- */

/* A quantised base's residual W - s B A of one module, in place over the dequantised W (out, in), rows split
 * between threads. Each value sums the rank-r products in double (each product of two floats is exact there, so
 * neither the order of threads nor fused multiply-adds change it) and is rounded to f32 once: a value anyone can
 * recompute bit for bit. */
typedef struct residual_job {
    const wl_lora_module *mod;
    float *w;
    int pieces;
} residual_job;

static void residual_task(void *ctx, int p) {
    const residual_job *j = ctx;
    const wl_lora_module *mod = j->mod;
    const int in = mod->in_features, r = mod->rank;
    int begin, end;
    wl_split(mod->out_features, j->pieces, p, &begin, &end);
    for (int o = begin; o < end; o++) {
        const float *b = mod->B + (size_t)o * r;
        float *row = j->w + (size_t)o * in;
        for (int c = 0; c < in; c++) {
            double sum = 0.0;
            for (int k = 0; k < r; k++) sum += (double)b[k] * mod->A[(size_t)k * in + c];
            const double update = (double)mod->scale * sum;
            row[c] = (float)((double)row[c] - update);
        }
    }
}

wl_status wl_adapter_init_pissa(wl_model *m, wl_adapter *a, int power_iters, uint64_t seed) {
    if (!m || !a) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_init_pissa: NULL argument");
    if (!wl_adapter_fits(a, m)) return wl_fail(WL_STATUS_SHAPE_MISMATCH, "the adapter was made for a model of another shape");
    if (wl_model_find_edit(m, a) >= 0) return wl_fail(WL_STATUS_BAD_STATE, "the adapter already changed this model's weights");
    if (a->dora) return wl_fail(WL_STATUS_UNSUPPORTED, "PiSSA initialisation of a DoRA adapter is not supported");
    if (a->vocab) return wl_fail(WL_STATUS_UNSUPPORTED, "PiSSA initialisation of the token embedding or LM head is not supported");
    if (power_iters > 64) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "PiSSA: at most 64 power iterations, got %d", power_iters);
    for (int i = 0; i < a->n_modules; i++) {
        if (a->modules[i].scale == 0.0f) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "PiSSA needs a non-zero LoRA scale");
    }
    size_t max_out = 0, max_in = 0, max_r = 0;
    for (int i = 0; i < a->n_modules; i++) {
        if ((size_t)a->modules[i].out_features > max_out) max_out = (size_t)a->modules[i].out_features;
        if ((size_t)a->modules[i].in_features > max_in) max_in = (size_t)a->modules[i].in_features;
        if ((size_t)a->modules[i].rank > max_r) max_r = (size_t)a->modules[i].rank;
    }
    float *U = wl_alloc_array(max_out * max_r, sizeof(float), "PiSSA U");
    float *Vt = wl_alloc_array(max_r * max_in, sizeof(float), "PiSSA Vt");
    float *S = wl_alloc_array(max_r, sizeof(float), "PiSSA S");
    float *init = a->pissa_init ? a->pissa_init : wl_alloc_array(a->n_params, sizeof(float), "PiSSA initial factors");
    /* the adapter's weights as they were, for a failure after the factors have replaced them */
    float *saved = wl_alloc_array(a->n_params, sizeof(float), "adapter weights before PiSSA");
    /* a quantised base: one module's weight dequantised, then its residual before it is quantised again */
    const int quantised = m->storage != WL_STORAGE_F32;
    float *dense = quantised ? wl_alloc_array(max_out * max_in, sizeof(float), "PiSSA dequantised weight") : NULL;
    if (!U || !Vt || !S || !init || !saved || (quantised && !dense)) {
        wl_free(U);
        wl_free(Vt);
        wl_free(S);
        wl_free(dense);
        wl_free(saved);
        if (init != a->pissa_init) wl_free(init);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    memcpy(saved, a->params, a->n_params * sizeof(float));
    wl_svd_options opt = wl_svd_default_options();
    /* power_iters < 0: the accurate variant (exact for small modules, otherwise many power iterations). */
    opt.power_iters = power_iters < 0 ? 16 : power_iters;
    opt.seed = seed;
    wl_status st = WL_OK;
    for (int i = 0; i < a->n_modules && st == WL_OK; i++) {
        wl_lora_module *mod = &a->modules[i];
        const wl_linear *lin = &m->blocks[mod->layer].lin[mod->slot];
        const float *w = lin->w;
        if (quantised) {
            wl_qweight_dequantize_rows(m->k, lin->qw, 0, lin->out, dense, lin->in);
            w = dense;
        }
        st = wl_svd_truncated(w, lin->out, lin->in, lin->in, mod->rank, &opt, U, S, Vt);
        if (st != WL_OK) break;
        /* PEFT: S_r /= s; A = diag(sqrt(S_r)) Vt_r; B = U_r diag(sqrt(S_r)); the base keeps W - s B A. */
        for (int k = 0; k < mod->rank; k++) {
            float root = sqrtf(S[k] / mod->scale > 0.0f ? S[k] / mod->scale : 0.0f);
            for (int j = 0; j < mod->in_features; j++) mod->A[(size_t)k * mod->in_features + j] = root * Vt[(size_t)k * mod->in_features + j];
            for (int o = 0; o < mod->out_features; o++) mod->B[(size_t)o * mod->rank + k] = U[(size_t)o * mod->rank + k] * root;
        }
    }
    wl_free(U);
    wl_free(Vt);
    wl_free(S);
    if (st == WL_OK) st = wl_model_push_edit(m, a, WL_EDIT_PISSA, 1.0f);
    if (st != WL_OK) {
        memcpy(a->params, saved, a->n_params * sizeof(float));
        wl_free(saved);
        wl_free(dense);
        if (init != a->pissa_init) wl_free(init);
        return st;
    }
    for (int i = 0; i < a->n_modules && st == WL_OK; i++) {
        const wl_lora_module *mod = &a->modules[i];
        wl_linear *lin = &m->blocks[mod->layer].lin[mod->slot];
        if (!quantised) {
            wl_sgemm(m->k, 0, 0, lin->out, lin->in, mod->rank, -mod->scale, mod->B, mod->rank, mod->A, lin->in, 1.0f,
                     lin->w, lin->in);
            continue;
        }
        /* QPiSSA (the PiSSA paper, Meng et al. 2024): the residual W - s B A is quantised, where QLoRA quantises W
         * itself. Without its top singular directions, which the f32 adapter now holds, its blocks span a smaller
         * range on real weights and quantise with a smaller error. W here is the dequantised base (the
         * full-precision weights are never held), so the adapter on the residual gives back dequant(W) within the
         * residual's quantisation error, on top of the error W already has from its own quantisation. */
        wl_qweight_dequantize_rows(m->k, lin->qw, 0, lin->out, dense, lin->in);
        residual_job job = {mod, dense, wl_parallel_pieces(lin->out, 16384 / (lin->in * mod->rank) + 1)};
        wl_parallel_for(job.pieces, residual_task, &job);
        for (int r = 0; r < lin->out && st == WL_OK; r++)
            st = wl_qweight_quantize_row(lin->qw, r, dense + (size_t)r * lin->in, "PiSSA residual");
        if (st != WL_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", wl_last_error());
            st = wl_fail(st, "PiSSA cannot keep the residual of layer %d %s in this %s base (%s); the base and the adapter "
                         "are unchanged (load the model with dtype 'f32' for PiSSA on these weights)",
                         mod->layer, wl_slot_name(m, mod->layer, mod->slot), m->storage == WL_STORAGE_Q8 ? "q8" : "q4", why);
        }
    }
    wl_free(dense);
    if (st != WL_OK) {
        /* a residual that cannot be quantised (too large for f16 scales): the base and the adapter as they were */
        wl_model_pop_edit(m, m->n_edits - 1);
        memcpy(a->params, saved, a->n_params * sizeof(float));
        wl_free(saved);
        if (init != a->pissa_init) wl_free(init);
        return st;
    }
    wl_free(saved);
    memcpy(init, a->params, a->n_params * sizeof(float));
    a->pissa_init = init;
    return WL_OK;
}

int wl_adapter_is_pissa(const wl_adapter *a) { return a && a->pissa_init != NULL; }
