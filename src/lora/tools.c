/* tools.c: adapters made from other adapters or from weights: a PiSSA adapter as plain LoRA for the original
 * base, rank reduction, extraction from a fine-tuned model, and PEFT-style combination. Each result is a new
 * adapter; the inputs are only read. The updates are decomposed with the SVD tools of wl_svd.h. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"
#include "wl_optim.h"
#include "wl_svd.h"

/* Same model shape; a slot of 0 x 0 is unknown (an adapter made from files alone) and agrees with anything. */
static int same_shape(const wl_adapter *a, const wl_adapter *b) {
    if (a->arch != b->arch || a->n_layers != b->n_layers || a->n_slots != b->n_slots) return 0;
    for (int s = 0; s < a->n_slots; s++) {
        int known_a = a->in_features[s] || a->out_features[s], known_b = b->in_features[s] || b->out_features[s];
        if (known_a && known_b && (a->in_features[s] != b->in_features[s] || a->out_features[s] != b->out_features[s]))
            return 0;
    }
    return 1;
}

/* Hand the new adapter to the caller, or free it when something failed on the way. */
static wl_status finish(wl_status st, wl_adapter *r, wl_adapter **out) {
    if (st != WL_OK) {
        wl_adapter_free(r);
        return st;
    }
    *out = r;
    return WL_OK;
}

/* min(r, in, out) of a module: how many singular values its update can have. */
static int full_rank(const wl_lora_module *mod) {
    int p = mod->in_features < mod->out_features ? mod->in_features : mod->out_features;
    return mod->rank < p ? mod->rank : p;
}

/* New adapter of a's shape with the given (L * S) ranks and scales, or NULL (status set). */
static wl_adapter *make_like(const wl_adapter *a, const int *ranks, const float *scales, wl_status *st) {
    wl_adapter *out = NULL;
    *st = wl_adapter_create_like(a, ranks, scales, &out);
    return out;
}

wl_status wl_adapter_pissa_to_lora(const wl_adapter *a, wl_adapter **out) {
    if (!a || !out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_pissa_to_lora: NULL argument");
    *out = NULL;
    if (!a->pissa_init) return wl_fail(WL_STATUS_BAD_STATE, "the adapter was not initialised with PiSSA");
    const int n = a->n_layers * a->n_slots;
    int *ranks = wl_alloc_array((size_t)n, sizeof(int), "ranks");
    float *scales = wl_alloc_array((size_t)n, sizeof(float), "scales");
    wl_status st = ranks && scales ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
    wl_adapter *r = NULL;
    if (st == WL_OK) {
        for (int i = 0; i < a->n_modules; i++) {
            const wl_lora_module *mod = &a->modules[i];
            ranks[mod->layer * a->n_slots + mod->slot] = 2 * mod->rank;
            scales[mod->layer * a->n_slots + mod->slot] = mod->scale;
        }
        r = make_like(a, ranks, scales, &st);
    }
    for (int i = 0; st == WL_OK && i < a->n_modules; i++) {
        /* s [B | B0] [A ; -A0] = s (B A - B0 A0): on the original W this equals the residual base plus s B A. */
        const wl_lora_module *mod = &a->modules[i];
        const wl_lora_module *dst = &r->modules[i];
        const size_t off_a = (size_t)(mod->A - a->params), off_b = (size_t)(mod->B - a->params);
        const float *A0 = a->pissa_init + off_a, *B0 = a->pissa_init + off_b;
        const int rk = mod->rank, in = mod->in_features, outf = mod->out_features;
        memcpy(dst->A, mod->A, (size_t)rk * in * sizeof(float));
        for (size_t j = 0; j < (size_t)rk * in; j++) dst->A[(size_t)rk * in + j] = -A0[j];
        for (int o = 0; o < outf; o++) {
            memcpy(dst->B + (size_t)o * 2 * rk, mod->B + (size_t)o * rk, (size_t)rk * sizeof(float));
            memcpy(dst->B + (size_t)o * 2 * rk + rk, B0 + (size_t)o * rk, (size_t)rk * sizeof(float));
        }
    }
    wl_free(ranks);
    wl_free(scales);
    return finish(st, r, out);
}

/* Rank that reaches `energy` of the squared Frobenius norm given all singular values s[0..n). */
static int rank_for_energy(const float *s, int n, float energy) {
    double total = 0.0, acc = 0.0;
    for (int i = 0; i < n; i++) total += (double)s[i] * s[i];
    if (total == 0.0) return 1;
    for (int i = 0; i < n; i++) {
        acc += (double)s[i] * s[i];
        if (acc >= energy * total) return i + 1;
    }
    return n;
}

/* Write U diag(S) Vt (k of them) as B (out, k) and A (k, in) with B A = (U S Vt) / scale, sqrt split. */
static void split_into(const wl_lora_module *dst, const float *U, int ldu, const float *S, const float *Vt, float scale) {
    const int k = dst->rank;
    for (int j = 0; j < k; j++) {
        float root = sqrtf(S[j] / scale);
        for (int i = 0; i < dst->in_features; i++) dst->A[(size_t)j * dst->in_features + i] = root * Vt[(size_t)j * dst->in_features + i];
        for (int o = 0; o < dst->out_features; o++) dst->B[(size_t)o * k + j] = U[(size_t)o * ldu + j] * root;
    }
}

wl_status wl_adapter_resize(const wl_adapter *a, int rank, float energy, wl_adapter **out, double *rel_errors,
                            double *total_rel_error) {
    if (!a || !out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_resize: NULL argument");
    *out = NULL;
    if (a->dora)
        return wl_fail(WL_STATUS_UNSUPPORTED, "resize: a DoRA adapter cannot be resized: its magnitudes were learned for the "
                       "norms of its rank-r update, so a truncated update would change every row's scale; merge it instead");
    if (a->vocab)
        return wl_fail(WL_STATUS_UNSUPPORTED, "resize: adapters on the token embedding or LM head are not resized here; "
                       "train them at the rank you want");
    if (!(energy >= 0.0f && energy <= 1.0f)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "resize: energy %g must be in [0, 1]", (double)energy);
    if (rank < 0 || (rank == 0 && energy == 0.0f))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "resize: give a rank >= 1 or an energy threshold in (0, 1], got rank %d", rank);
    const int n = a->n_layers * a->n_slots;
    int *ranks = wl_alloc_array((size_t)n, sizeof(int), "ranks");
    float *scales = wl_alloc_array((size_t)n, sizeof(float), "scales");
    size_t max_out = 0, max_in = 0, max_r = 0;
    for (int i = 0; i < a->n_modules; i++) {
        if ((size_t)a->modules[i].out_features > max_out) max_out = (size_t)a->modules[i].out_features;
        if ((size_t)a->modules[i].in_features > max_in) max_in = (size_t)a->modules[i].in_features;
        if ((size_t)a->modules[i].rank > max_r) max_r = (size_t)a->modules[i].rank;
    }
    /* Per module: every singular triplet of s B A (at most r of them) is kept until the new adapter is built. */
    float *U = wl_alloc_array((size_t)a->n_modules * max_out * max_r, sizeof(float), "resize U");
    float *Vt = wl_alloc_array((size_t)a->n_modules * max_r * max_in, sizeof(float), "resize Vt");
    float *S = wl_alloc_array((size_t)a->n_modules * max_r, sizeof(float), "resize S");
    float *sB = wl_alloc_array(max_out * max_r, sizeof(float), "resize scaled B");
    double *norms = wl_alloc_array((size_t)a->n_modules, sizeof(double), "norms");
    double *errs = wl_alloc_array((size_t)a->n_modules, sizeof(double), "errors");
    wl_status st = ranks && scales && U && Vt && S && sB && norms && errs ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
    if (st == WL_OK && !wl_all_finite(a->params, a->n_params)) st = wl_fail(WL_STATUS_NUMERIC, "the adapter holds NaN or infinite weights");
    for (int i = 0; st == WL_OK && i < a->n_modules; i++) {
        const wl_lora_module *mod = &a->modules[i];
        const int full = full_rank(mod);
        for (size_t j = 0; j < (size_t)mod->out_features * mod->rank; j++) sB[j] = mod->scale * mod->B[j];
        wl_lowrank_info info;
        float *Ui = U + (size_t)i * max_out * max_r, *Vi = Vt + (size_t)i * max_r * max_in, *Si = S + (size_t)i * max_r;
        st = wl_svd_of_product(sB, mod->out_features, mod->rank, mod->rank, mod->A, mod->in_features, mod->in_features,
                               full, Ui, Si, Vi, &info);
        if (st != WL_OK) break;
        int k = energy > 0.0f ? rank_for_energy(Si, full, energy) : full;
        if (rank > 0 && k > rank) k = rank;
        if (k > full) k = full;
        ranks[mod->layer * a->n_slots + mod->slot] = k;
        /* The scale stays what it was (positive scales only; otherwise 1), so alpha / r keeps its meaning. */
        scales[mod->layer * a->n_slots + mod->slot] = mod->scale > 0.0f ? mod->scale : 1.0f;
        double dropped = 0.0;
        for (int j = k; j < full; j++) dropped += (double)Si[j] * Si[j];
        norms[i] = info.norm;
        errs[i] = info.norm > 0.0 ? sqrt(dropped) / info.norm : 0.0;
    }
    wl_adapter *r = st == WL_OK ? make_like(a, ranks, scales, &st) : NULL;
    double num = 0.0, den = 0.0;
    for (int i = 0; st == WL_OK && i < a->n_modules; i++) {
        const wl_lora_module *mod = &a->modules[i];
        const int full = full_rank(mod);
        split_into(&r->modules[i], U + (size_t)i * max_out * max_r, full, S + (size_t)i * max_r,
                   Vt + (size_t)i * max_r * max_in, r->modules[i].scale);
        if (rel_errors) rel_errors[i] = errs[i];
        num += errs[i] * errs[i] * norms[i] * norms[i];
        den += norms[i] * norms[i];
    }
    if (st == WL_OK && total_rel_error) *total_rel_error = den > 0.0 ? sqrt(num / den) : 0.0;
    wl_free(ranks);
    wl_free(scales);
    wl_free(U);
    wl_free(Vt);
    wl_free(S);
    wl_free(sB);
    wl_free(norms);
    wl_free(errs);
    return finish(st, r, out);
}

wl_status wl_adapter_extract(const wl_model *base, const wl_model *tuned, const int *ranks, float energy,
                             const wl_svd_options *opt, wl_adapter **out, double *rel_errors, double *total_rel_error) {
    if (!base || !tuned || !ranks || !out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_extract: NULL argument");
    *out = NULL;
    if (!(energy >= 0.0f && energy <= 1.0f)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "extract: energy %g must be in [0, 1]", (double)energy);
    if (base->storage != WL_STORAGE_F32 || tuned->storage != WL_STORAGE_F32)
        return wl_fail(WL_STATUS_UNSUPPORTED, "extract: both models must be loaded in f32, not quantised");
    const wl_config *cb = &base->cfg, *ct = &tuned->cfg;
    if (cb->arch != ct->arch || cb->dim != ct->dim || cb->hidden_dim != ct->hidden_dim || cb->n_layers != ct->n_layers ||
        cb->n_heads != ct->n_heads || cb->n_kv_heads != ct->n_kv_heads || cb->head_dim != ct->head_dim ||
        cb->vocab_size != ct->vocab_size)
        return wl_fail(WL_STATUS_SHAPE_MISMATCH, "extract: the two models have different shapes (%d x %d layers vs %d x %d)",
                       cb->dim, cb->n_layers, ct->dim, ct->n_layers);
    const int L = cb->n_layers, Sn = base->n_slots;
    int n_mod = 0;
    size_t max_out = 0, max_in = 0, max_r = 0, total = 0;
    for (int i = 0; i < L * Sn; i++) {
        if (ranks[i] == 0) continue;
        const wl_module_info *mi = &base->slot_info[i % Sn];
        int p = mi->in_features < mi->out_features ? mi->in_features : mi->out_features;
        if (ranks[i] < 0 || ranks[i] > p)
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "extract: rank %d for layer %d %s is out of range [1, %d]", ranks[i],
                           i / Sn, mi->name, p);
        n_mod++;
        if ((size_t)mi->out_features > max_out) max_out = (size_t)mi->out_features;
        if ((size_t)mi->in_features > max_in) max_in = (size_t)mi->in_features;
        if ((size_t)ranks[i] > max_r) max_r = (size_t)ranks[i];
        total += (size_t)ranks[i] * (mi->in_features + mi->out_features);
    }
    if (n_mod == 0) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "extract: no module selected (every rank is 0)");
    int *final = wl_alloc_array((size_t)L * Sn, sizeof(int), "ranks");
    float *scales = wl_alloc_array((size_t)L * Sn, sizeof(float), "scales");
    float *delta = wl_alloc_array(max_out * max_in, sizeof(float), "weight delta");
    float *fac = wl_alloc_array(total, sizeof(float), "factors"); /* L then R per module, at max rank */
    double *norms = wl_alloc_array((size_t)L * Sn, sizeof(double), "norms");
    double *errs = wl_alloc_array((size_t)L * Sn, sizeof(double), "errors");
    wl_status st = final && scales && delta && fac && norms && errs ? WL_OK : WL_STATUS_OUT_OF_MEMORY;
    size_t off = 0;
    for (int i = 0; st == WL_OK && i < L * Sn; i++) {
        if (ranks[i] == 0) continue;
        const wl_linear *wb = &base->blocks[i / Sn].lin[i % Sn], *wt = &tuned->blocks[i / Sn].lin[i % Sn];
        const size_t nw = (size_t)wb->out * wb->in;
        for (size_t j = 0; j < nw; j++) delta[j] = wt->w[j] - wb->w[j];
        wl_lowrank_info info;
        float *Lf = fac + off, *Rf = fac + off + (size_t)ranks[i] * wb->out;
        st = wl_lowrank_approx(delta, wb->out, wb->in, wb->in, ranks[i], energy, WL_SPLIT_BALANCED, opt, Lf, Rf, NULL, &info);
        if (st != WL_OK) {
            char why[300];
            snprintf(why, sizeof why, "%s", wl_last_error());
            st = wl_fail(st, "extract: layer %d %s: %s", i / Sn, base->slot_info[i % Sn].name, why);
            break;
        }
        final[i] = info.rank;
        scales[i] = 1.0f;
        norms[i] = info.norm;
        errs[i] = info.rel_error;
        off += (size_t)ranks[i] * (wb->out + wb->in);
    }
    wl_adapter *r = NULL;
    if (st == WL_OK) {
        /* the shape of the new adapter comes from the base model */
        int in_f[WL_MAX_SLOTS], out_f[WL_MAX_SLOTS];
        for (int s = 0; s < Sn; s++) {
            in_f[s] = base->slot_info[s].in_features;
            out_f[s] = base->slot_info[s].out_features;
        }
        wl_adapter shape;
        memset(&shape, 0, sizeof shape);
        shape.arch = cb->arch;
        shape.n_layers = L;
        shape.n_slots = Sn;
        memcpy(shape.in_features, in_f, sizeof in_f);
        memcpy(shape.out_features, out_f, sizeof out_f);
        r = make_like(&shape, final, scales, &st);
    }
    off = 0;
    double num = 0.0, den = 0.0;
    int m_index = 0;
    for (int i = 0; st == WL_OK && i < L * Sn; i++) {
        if (ranks[i] == 0) continue;
        const wl_lora_module *dst = &r->modules[m_index];
        const int k = dst->rank, outf = dst->out_features, in = dst->in_features;
        const float *Lf = fac + off, *Rf = fac + off + (size_t)ranks[i] * outf;
        /* wl_lowrank_approx wrote L (out, k) with row stride k and R (k, in). */
        memcpy(dst->B, Lf, (size_t)outf * k * sizeof(float));
        memcpy(dst->A, Rf, (size_t)k * in * sizeof(float));
        if (rel_errors) rel_errors[m_index] = errs[i];
        num += errs[i] * errs[i] * norms[i] * norms[i];
        den += norms[i] * norms[i];
        off += (size_t)ranks[i] * (outf + in);
        m_index++;
    }
    if (st == WL_OK && total_rel_error) *total_rel_error = den > 0.0 ? sqrt(num / den) : 0.0;
    wl_free(final);
    wl_free(scales);
    wl_free(delta);
    wl_free(fac);
    wl_free(norms);
    wl_free(errs);
    return finish(st, r, out);
}

/* Every input a plain LoRA adapter of the same model with finite weights; a linear combination also needs
 * non-negative weights and scales (it takes their square roots). */
static wl_status check_combine_inputs(const wl_adapter *const *as, const float *weights, int n, int type) {
    for (int i = 0; i < n; i++) {
        if (!as[i]) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: adapter %d is NULL", i);
        if (as[i]->dora)
            return wl_fail(WL_STATUS_UNSUPPORTED, "combine: adapter %d is a DoRA adapter; combinations are defined for plain "
                           "LoRA adapters only (a DoRA magnitude rescales the whole layer, not an additive update)", i);
        if (as[i]->vocab)
            return wl_fail(WL_STATUS_UNSUPPORTED, "combine: adapter %d adapts the token embedding or LM head; combinations "
                           "are supported for adapters on block modules only", i);
        if (!same_shape(as[i], as[0])) return wl_fail(WL_STATUS_SHAPE_MISMATCH, "combine: adapter %d was made for a model of another shape", i);
        if (!isfinite(weights[i])) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: weight %d is not finite", i);
        if (type == WL_COMBINE_LINEAR && weights[i] < 0.0f)
            return wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: linear combination takes sqrt(weight * scale): weight %d = %g is negative", i,
                           (double)weights[i]);
        for (int j = 0; type == WL_COMBINE_LINEAR && j < as[i]->n_modules; j++) {
            if (as[i]->modules[j].scale < 0.0f)
                return wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: linear combination takes sqrt(weight * scale): adapter %d has a negative scale", i);
        }
        if (!wl_all_finite(as[i]->params, as[i]->n_params))
            return wl_fail(WL_STATUS_NUMERIC, "combine: adapter %d holds NaN or infinite weights", i);
    }
    return WL_OK;
}

/* The result's rank of each (layer, slot) cell, as PEFT's add_weighted_adapter defines them, and its scale 1. */
static wl_status combine_ranks(const wl_adapter *const *as, int n, int type, int svd_rank, int *ranks, float *scales) {
    const wl_adapter *a0 = as[0];
    const int cells = a0->n_layers * a0->n_slots;
    wl_status st = WL_OK;
    for (int c = 0; c < cells && st == WL_OK; c++) {
        int sum = 0, maxr = 0, common = -1;
        for (int i = 0; i < n; i++) {
            int idx = as[i]->index[c];
            if (idx < 0) continue;
            int r = as[i]->modules[idx].rank;
            sum += r;
            if (r > maxr) maxr = r;
            if (common < 0) common = r;
            else if (common != r && type == WL_COMBINE_LINEAR)
                st = wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: a linear combination needs equal ranks (layer %d has %d and %d): use cat or svd",
                             c / a0->n_slots, common, r);
        }
        if (sum == 0) continue;
        int p = 0;
        for (int i = 0; i < n; i++) {
            int idx = as[i]->index[c];
            if (idx < 0) continue;
            const wl_lora_module *mod = &as[i]->modules[idx];
            p = mod->in_features < mod->out_features ? mod->in_features : mod->out_features;
        }
        int r = type == WL_COMBINE_LINEAR ? common : type == WL_COMBINE_CAT ? sum : (svd_rank > 0 ? svd_rank : maxr);
        if (type == WL_COMBINE_SVD && svd_rank > p)
            st = wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: svd rank %d exceeds the module size %d", svd_rank, p);
        ranks[c] = r < p ? r : p;
        if (type == WL_COMBINE_CAT && sum > p)
            st = wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: concatenated rank %d exceeds the module size %d: use svd", sum, p);
        scales[c] = 1.0f; /* PEFT sets lora_alpha = r for the result */
    }
    return st;
}

/* A = sum sqrt(w s) A_i, B = sum sqrt(w s) B_i (PEFT's definition since its task-arithmetic rewrite; it is not the
 * weighted sum of updates: cross terms mix). */
static void combine_linear(const wl_adapter *const *as, const float *weights, int n, int c, const wl_lora_module *dst) {
    const int in = dst->in_features, outf = dst->out_features;
    for (int i = 0; i < n; i++) {
        int idx = as[i]->index[c];
        if (idx < 0) continue;
        const wl_lora_module *src = &as[i]->modules[idx];
        float root = sqrtf(weights[i] * src->scale);
        for (size_t j = 0; j < (size_t)dst->rank * in; j++) dst->A[j] += root * src->A[j];
        for (size_t j = 0; j < (size_t)outf * dst->rank; j++) dst->B[j] += root * src->B[j];
    }
}

/* A = [w_i s_i A_i] stacked by rows, B = [B_i] side by side: exactly sum_i w_i s_i B_i A_i. */
static void combine_cat(const wl_adapter *const *as, const float *weights, int n, int c, const wl_lora_module *dst) {
    const int in = dst->in_features, outf = dst->out_features;
    int at = 0;
    for (int i = 0; i < n; i++) {
        int idx = as[i]->index[c];
        if (idx < 0) continue;
        const wl_lora_module *src = &as[i]->modules[idx];
        for (size_t j = 0; j < (size_t)src->rank * in; j++) dst->A[(size_t)at * in + j] = weights[i] * src->scale * src->A[j];
        for (int o = 0; o < outf; o++)
            memcpy(dst->B + (size_t)o * dst->rank + at, src->B + (size_t)o * src->rank, (size_t)src->rank * sizeof(float));
        at += src->rank;
    }
}

/* Scratch of the svd type: the stacked factors of all contributions to a module, and their SVD. */
typedef struct combine_scratch {
    float *Bs, *As, *U, *S, *Vt;
} combine_scratch;

/* The best rank-k approximation of sum_i w_i s_i B_i A_i; B = U S, A = Vt (PEFT's svd type, no clamping). */
static wl_status combine_svd(const wl_adapter *const *as, const float *weights, int n, int c, const wl_lora_module *dst,
                             const combine_scratch *w, double *rel_error) {
    const int in = dst->in_features, outf = dst->out_features;
    float *Bs = w->Bs, *As = w->As, *U = w->U, *S = w->S, *Vt = w->Vt;
    int total_r = 0;
    for (int i = 0; i < n; i++) total_r += as[i]->index[c] >= 0 ? as[i]->modules[as[i]->index[c]].rank : 0;
    int at = 0;
    for (int i = 0; i < n; i++) {
        int idx = as[i]->index[c];
        if (idx < 0) continue;
        const wl_lora_module *src = &as[i]->modules[idx];
        for (int o = 0; o < outf; o++) {
            for (int k = 0; k < src->rank; k++)
                Bs[(size_t)o * total_r + at + k] = weights[i] * src->scale * src->B[(size_t)o * src->rank + k];
        }
        memcpy(As + (size_t)at * in, src->A, (size_t)src->rank * in * sizeof(float));
        at += src->rank;
    }
    wl_lowrank_info info;
    wl_status st = wl_svd_of_product(Bs, outf, total_r, total_r, As, in, in, dst->rank, U, S, Vt, &info);
    if (st != WL_OK) return st;
    for (int o = 0; o < outf; o++) {
        for (int k = 0; k < dst->rank; k++) dst->B[(size_t)o * dst->rank + k] = U[(size_t)o * dst->rank + k] * S[k];
    }
    memcpy(dst->A, Vt, (size_t)dst->rank * in * sizeof(float));
    *rel_error = info.rel_error;
    return WL_OK;
}

wl_status wl_adapter_combine(const wl_adapter *const *as, const float *weights, int n, int type, int svd_rank,
                             wl_adapter **out, double *rel_errors) {
    if (!as || !weights || !out || n < 1) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adapter_combine: needs at least one adapter");
    *out = NULL;
    if (type != WL_COMBINE_LINEAR && type != WL_COMBINE_CAT && type != WL_COMBINE_SVD)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "combine: unknown combination type %d", type);
    wl_status st = check_combine_inputs(as, weights, n, type);
    if (st != WL_OK) return st;
    const wl_adapter *a0 = as[0];
    const int cells = a0->n_layers * a0->n_slots;
    int *ranks = wl_alloc_array((size_t)cells, sizeof(int), "ranks");
    float *scales = wl_alloc_array((size_t)cells, sizeof(float), "scales");
    if (!ranks || !scales) {
        wl_free(ranks);
        wl_free(scales);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    st = combine_ranks(as, n, type, svd_rank, ranks, scales);
    /* The result's shape: every slot any input knows. */
    wl_adapter shape;
    memset(&shape, 0, sizeof shape);
    shape.arch = a0->arch;
    shape.n_layers = a0->n_layers;
    shape.n_slots = a0->n_slots;
    for (int i = 0; i < n; i++) {
        for (int s = 0; s < a0->n_slots; s++) {
            if (as[i]->in_features[s] || as[i]->out_features[s]) {
                shape.in_features[s] = as[i]->in_features[s];
                shape.out_features[s] = as[i]->out_features[s];
            }
        }
    }
    wl_adapter *r = st == WL_OK ? make_like(&shape, ranks, scales, &st) : NULL;
    /* Scratch for the svd type: the stacked factors of all contributions. */
    size_t max_sum = 0;
    for (int c = 0; c < cells; c++) {
        size_t s = 0;
        for (int i = 0; i < n; i++) s += as[i]->index[c] >= 0 ? (size_t)as[i]->modules[as[i]->index[c]].rank : 0;
        if (s > max_sum) max_sum = s;
    }
    int max_io = 0;
    for (int i = 0; i < n; i++) {
        for (int s = 0; s < as[i]->n_slots; s++) {
            if (as[i]->in_features[s] > max_io) max_io = as[i]->in_features[s];
            if (as[i]->out_features[s] > max_io) max_io = as[i]->out_features[s];
        }
    }
    float *Bs = NULL, *As = NULL, *U = NULL, *S = NULL, *Vt = NULL;
    if (st == WL_OK && type == WL_COMBINE_SVD) {
        Bs = wl_alloc_array((size_t)max_io * max_sum, sizeof(float), "stacked B");
        As = wl_alloc_array(max_sum * (size_t)max_io, sizeof(float), "stacked A");
        U = wl_alloc_array((size_t)max_io * max_sum, sizeof(float), "U");
        S = wl_alloc_array(max_sum, sizeof(float), "S");
        Vt = wl_alloc_array(max_sum * (size_t)max_io, sizeof(float), "Vt");
        if (!Bs || !As || !U || !S || !Vt) st = WL_STATUS_OUT_OF_MEMORY;
    }
    combine_scratch scratch = {Bs, As, U, S, Vt};
    for (int m = 0; st == WL_OK && m < r->n_modules; m++) {
        const wl_lora_module *dst = &r->modules[m];
        const int c = dst->layer * a0->n_slots + dst->slot;
        double rel_error = 0.0;
        if (type == WL_COMBINE_LINEAR) combine_linear(as, weights, n, c, dst);
        else if (type == WL_COMBINE_CAT) combine_cat(as, weights, n, c, dst);
        else st = combine_svd(as, weights, n, c, dst, &scratch, &rel_error);
        if (rel_errors) rel_errors[m] = rel_error;
    }
    wl_free(Bs);
    wl_free(As);
    wl_free(U);
    wl_free(S);
    wl_free(Vt);
    wl_free(ranks);
    wl_free(scales);
    return finish(st, r, out);
}
