/* test_lora_tools.c: merging and unmerging (bit-exact restore, idempotence, merged logits = unmerged logits, the
 * GPT-2 Conv1D orientation), several adapters at once, PiSSA (unchanged output at step 0, conversion to plain LoRA),
 * rank reduction, extraction from weights and PEFT-style combination, with their error cases. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "weblora.h"
#include "wl_svd.h"

static wl_model *load_stories(void) {
    size_t len;
    uint8_t *buf = wl_test_read_file(wl_shared_path("models/stories260K/stories260K.bin"), &len);
    wl_model *m = NULL;
    if (buf) CHECK_OK(wl_model_load_llama2c(buf, len, &m));
    free(buf);
    return m;
}

static wl_model *small_gpt2(void) {
    wl_config c = {0};
    c.arch = WL_ARCH_GPT2;
    c.dim = 16;
    c.hidden_dim = 40;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.vocab_size = 37;
    c.max_seq_len = 32;
    c.tied_embeddings = 1;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.bos_id = -1;
    c.eos_id = 36;
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&c, &m));
    size_t n;
    float *p = wl_model_params(m, &n);
    wl_test_fill(p, n, 5, 0.3f);
    for (int i = 0; i < wl_model_n_tensors(m); i++) {
        wl_tensor_info t;
        wl_model_tensor(m, i, &t);
        if (strstr(t.name, "ln_") && strstr(t.name, "weight"))
            for (size_t j = 0; j < t.numel; j++) t.data[j] += 1.0f;
    }
    return m;
}

static wl_adapter *random_adapter(wl_model *m, int rank, float alpha, uint64_t seed, int slot_mask) {
    const int L = wl_model_config(m)->n_layers, S = wl_model_n_slots(m);
    int *ranks = calloc((size_t)L * S, sizeof(int));
    float *alphas = calloc((size_t)L * S, sizeof(float));
    for (int i = 0; i < L * S; i++) {
        if (slot_mask & (1 << (i % S))) {
            ranks[i] = rank;
            alphas[i] = alpha;
        }
    }
    wl_lora_spec spec = {ranks, alphas, 0};
    wl_adapter *a = NULL;
    CHECK_OK(wl_adapter_create(m, &spec, &a));
    free(ranks);
    free(alphas);
    size_t n;
    float *p = wl_adapter_params(a, &n);
    wl_test_fill(p, n, seed, 0.2f);
    return a;
}

static float *logits_of(wl_model *m, const int32_t *ids, int T) {
    CHECK_OK(wl_model_forward(m, ids, NULL, 1, T, 0, 0, -100, NULL));
    size_t n = (size_t)T * wl_model_config(m)->vocab_size;
    float *out = malloc(n * sizeof(float));
    memcpy(out, wl_model_logits(m), n * sizeof(float));
    return out;
}

static void merge_case(const char *what, wl_model *m, int slot_mask) {
    printf(" %s\n", what);
    const int T = 9, V = wl_model_config(m)->vocab_size;
    int32_t ids[9] = {1, 5, 9, 14, 3, 22, 7, 11, 30};
    CHECK_OK(wl_model_reserve(m, 1, T, 0));
    size_t np;
    float *params = wl_model_params(m, &np);
    float *orig = malloc(np * sizeof(float));
    memcpy(orig, params, np * sizeof(float));
    wl_adapter *a = random_adapter(m, 4, 8.0f, 3, slot_mask);
    CHECK_OK(wl_model_set_adapters(m, &a, (float[]){0.7f}, 1));
    float *unmerged = logits_of(m, ids, T);
    CHECK_OK(wl_model_merge(m, a, 0.7f));
    CHECK(wl_model_is_merged(m, a));
    CHECK(wl_model_edit_bytes(m) > 0);
    float *merged = logits_of(m, ids, T); /* merging detached it: no double application */
    wl_test_close("merged vs unmerged logits", merged, unmerged, (size_t)T * V, 2e-5f, 1e-4f);
    CHECK_OK(wl_model_merge(m, a, 0.7f)); /* twice: no change */
    float *again = logits_of(m, ids, T);
    CHECK_MSG(memcmp(again, merged, (size_t)T * V * sizeof(float)) == 0, "merging twice changed the weights");
    CHECK_STATUS(wl_model_set_adapters(m, &a, NULL, 1), WL_STATUS_BAD_STATE);
    /* the merge is s B A in memory layout: check one module against an explicit product */
    wl_lora_module mod;
    wl_adapter_module(a, 0, &mod);
    float *w;
    wl_model_module_weights(m, mod.layer, mod.slot, &w, NULL);
    size_t off = (size_t)(w - params);
    double maxd = 0.0;
    for (int o = 0; o < mod.out_features; o++) {
        for (int i = 0; i < mod.in_features; i++) {
            double d = 0.0;
            for (int k = 0; k < mod.rank; k++) d += (double)mod.B[o * mod.rank + k] * mod.A[k * mod.in_features + i];
            double want = orig[off + (size_t)o * mod.in_features + i] + 0.7 * mod.scale * d;
            double diff = fabs(want - w[(size_t)o * mod.in_features + i]);
            if (diff > maxd) maxd = diff;
        }
    }
    CHECK_MSG(maxd < 1e-5, "merged weight differs from W + w s B A by %g", maxd);
    CHECK_OK(wl_model_unmerge(m, a));
    CHECK_MSG(memcmp(params, orig, np * sizeof(float)) == 0, "unmerge did not restore the weights bit for bit");
    CHECK(!wl_model_is_merged(m, a));
    CHECK(wl_model_edit_bytes(m) == 0);
    CHECK_STATUS(wl_model_unmerge(m, a), WL_STATUS_BAD_STATE);
    /* two merged adapters on the same modules: undo in order */
    wl_adapter *b = random_adapter(m, 2, 2.0f, 9, slot_mask);
    CHECK_OK(wl_model_merge(m, a, 1.0f));
    CHECK_OK(wl_model_merge(m, b, 1.0f));
    CHECK_STATUS(wl_model_unmerge(m, a), WL_STATUS_BAD_STATE);
    CHECK_OK(wl_model_unmerge(m, b));
    CHECK_OK(wl_model_unmerge(m, a));
    CHECK_MSG(memcmp(params, orig, np * sizeof(float)) == 0, "unmerging two adapters did not restore the weights");
    /* several adapters attached at once: mixing = sum of scaled updates = merging both */
    CHECK_OK(wl_model_set_adapters(m, (wl_adapter *[]){a, b}, (float[]){0.5f, -1.5f}, 2));
    float *mixed = logits_of(m, ids, T);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    CHECK_OK(wl_model_merge(m, a, 0.5f));
    CHECK_OK(wl_model_merge(m, b, -1.5f));
    float *both = logits_of(m, ids, T);
    wl_test_close("two adapters mixed vs merged", mixed, both, (size_t)T * V, 2e-5f, 1e-4f);
    CHECK_OK(wl_model_unmerge(m, b));
    CHECK_OK(wl_model_unmerge(m, a));
    wl_adapter_free(b);
    wl_adapter_free(a);
    free(orig);
    free(unmerged);
    free(merged);
    free(again);
    free(mixed);
    free(both);
}

static void pissa_case(wl_model *m) {
    printf(" PiSSA on stories260K\n");
    const int T = 9, V = wl_model_config(m)->vocab_size;
    int32_t ids[9] = {1, 403, 407, 261, 378, 430, 375, 259, 271};
    CHECK_OK(wl_model_reserve(m, 1, T, 0));
    size_t np;
    float *params = wl_model_params(m, &np);
    float *orig = malloc(np * sizeof(float));
    memcpy(orig, params, np * sizeof(float));
    float *base = logits_of(m, ids, T);
    for (int variant = 0; variant < 2; variant++) {
        wl_adapter *a = random_adapter(m, 4, 8.0f, 1, 0x7f);
        CHECK_OK(wl_adapter_init_pissa(m, a, variant ? 2 : -1, 11));
        CHECK(wl_adapter_is_pissa(a));
        CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
        float *step0 = logits_of(m, ids, T);
        wl_test_close(variant ? "pissa fast: step-0 logits = base" : "pissa: step-0 logits = base", step0, base, (size_t)T * V,
                      3e-4f, 1e-4f);
        /* B really carries the top singular directions: the residual is smaller than W for the first module */
        wl_lora_module mod;
        wl_adapter_module(a, 0, &mod);
        double nb = 0.0;
        for (size_t j = 0; j < (size_t)mod.out_features * mod.rank; j++) nb += mod.B[j] * mod.B[j];
        CHECK(nb > 0.0);
        /* after "training", the rank-2r export applies to the original base */
        size_t na;
        float *p = wl_adapter_params(a, &na);
        for (size_t j = 0; j < na; j++) p[j] += 0.01f * sinf((float)j);
        float *trained = logits_of(m, ids, T);
        wl_adapter *plain = NULL;
        CHECK_OK(wl_adapter_pissa_to_lora(a, &plain));
        CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
        CHECK_OK(wl_model_unmerge(m, a)); /* back to the original base */
        CHECK_MSG(memcmp(params, orig, np * sizeof(float)) == 0, "PiSSA residual not restored bit for bit");
        wl_adapter_module(plain, 0, &mod);
        CHECK(mod.rank == 8);
        CHECK_OK(wl_model_set_adapters(m, &plain, NULL, 1));
        float *converted = logits_of(m, ids, T);
        wl_test_close("pissa as rank-2r LoRA on the original base", converted, trained, (size_t)T * V, 3e-4f, 1e-4f);
        CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
        wl_adapter_free(plain);
        wl_adapter_free(a);
        free(step0);
        free(trained);
        free(converted);
    }
    wl_adapter *plain = random_adapter(m, 2, 2.0f, 4, 1);
    wl_adapter *out = NULL;
    CHECK_STATUS(wl_adapter_pissa_to_lora(plain, &out), WL_STATUS_BAD_STATE);
    wl_adapter_free(plain);
    free(orig);
    free(base);
}

/* Resize: an adapter whose update has true rank 3 inside rank 8 is recovered exactly at rank 3. */
static void resize_case(wl_model *m) {
    printf(" resize\n");
    wl_adapter *a = random_adapter(m, 8, 16.0f, 21, 0x7f);
    /* make B's columns 3..7 combinations of 0..2, so every B A has rank 3 */
    for (int i = 0; i < wl_adapter_n_modules(a); i++) {
        wl_lora_module mod;
        wl_adapter_module(a, i, &mod);
        for (int o = 0; o < mod.out_features; o++)
            for (int k = 3; k < 8; k++) mod.B[o * 8 + k] = 0.5f * mod.B[o * 8 + k % 3] - 0.25f * mod.B[o * 8 + (k + 1) % 3];
    }
    int n_mod = wl_adapter_n_modules(a);
    double *errs = calloc((size_t)n_mod, sizeof(double));
    double total = -1;
    wl_adapter *r3 = NULL, *r2 = NULL, *re = NULL;
    CHECK_OK(wl_adapter_resize(a, 3, 0.0f, &r3, errs, &total));
    CHECK_MSG(total < 1e-5, "rank-3 update resized to 3 kept error %g", total);
    CHECK_OK(wl_adapter_resize(a, 2, 0.0f, &r2, errs, &total));
    CHECK_MSG(total > 1e-3 && total < 1.0, "resize to 2 reports error %g", total);
    wl_adapter_free(r2);
    r2 = NULL;
    CHECK_OK(wl_adapter_resize(a, 0, 0.999f, &re, NULL, &total));
    wl_lora_module mod;
    wl_adapter_module(re, 0, &mod);
    CHECK(mod.rank <= 3);
    /* the resized update equals the original one */
    wl_lora_module a0, b0;
    wl_adapter_module(a, 0, &a0);
    wl_adapter_module(r3, 0, &b0);
    double maxd = 0.0, maxv = 0.0;
    for (int o = 0; o < a0.out_features; o++) {
        for (int i = 0; i < a0.in_features; i++) {
            double x = 0, y = 0;
            for (int k = 0; k < a0.rank; k++) x += a0.scale * (double)a0.B[o * a0.rank + k] * a0.A[k * a0.in_features + i];
            for (int k = 0; k < b0.rank; k++) y += b0.scale * (double)b0.B[o * b0.rank + k] * b0.A[k * b0.in_features + i];
            if (fabs(x - y) > maxd) maxd = fabs(x - y);
            if (fabs(x) > maxv) maxv = fabs(x);
        }
    }
    CHECK_MSG(maxd < 1e-5 * (maxv + 1), "resized update differs by %g (max %g)", maxd, maxv);
    CHECK(b0.rank == 3 && fabsf(b0.scale - a0.scale) == 0.0f);
    CHECK_STATUS(wl_adapter_resize(a, 0, 0.0f, &r2, NULL, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_adapter_resize(a, 2, 1.5f, &r2, NULL, NULL), WL_STATUS_INVALID_ARGUMENT);
    wl_adapter_module(a, 0, &mod);
    mod.A[0] = NAN;
    CHECK_STATUS(wl_adapter_resize(a, 2, 0.0f, &r2, NULL, NULL), WL_STATUS_NUMERIC);
    free(errs);
    wl_adapter_free(r3);
    wl_adapter_free(re);
    wl_adapter_free(a);
}

/* Extract: merge a known rank-4 adapter into a copy of the model and recover it. */
static void extract_case(void) {
    printf(" extract\n");
    wl_model *base = load_stories(), *tuned = load_stories();
    if (!base || !tuned) return;
    wl_adapter *a = random_adapter(base, 4, 8.0f, 31, (1 << WL_LLAMA_Q) | (1 << WL_LLAMA_DOWN));
    CHECK_OK(wl_model_merge(tuned, a, 1.0f));
    const int L = wl_model_config(base)->n_layers, S = wl_model_n_slots(base);
    int *ranks = calloc((size_t)L * S, sizeof(int));
    for (int l = 0; l < L; l++) {
        ranks[l * S + WL_LLAMA_Q] = 4;
        ranks[l * S + WL_LLAMA_DOWN] = 4;
        ranks[l * S + WL_LLAMA_V] = 2; /* unchanged weights: a zero update */
    }
    wl_adapter *x = NULL;
    double errs[64], total = -1;
    CHECK_OK(wl_adapter_extract(base, tuned, ranks, 0.0f, NULL, &x, errs, &total));
    CHECK_MSG(total < 1e-3, "extracting a rank-4 update at rank 4 kept error %g", total);
    /* the extracted adapter on the base reproduces the tuned model */
    int32_t ids[7] = {1, 403, 407, 261, 378, 430, 375};
    CHECK_OK(wl_model_reserve(base, 1, 7, 0));
    CHECK_OK(wl_model_reserve(tuned, 1, 7, 0));
    float *want = logits_of(tuned, ids, 7);
    CHECK_OK(wl_model_set_adapters(base, &x, NULL, 1));
    float *got = logits_of(base, ids, 7);
    wl_test_close("base + extracted adapter vs tuned model", got, want, (size_t)7 * 512, 2e-4f, 1e-4f);
    CHECK_OK(wl_model_set_adapters(base, NULL, NULL, 0));
    wl_adapter *x2 = NULL;
    for (int l = 0; l < L; l++) ranks[l * S + WL_LLAMA_Q] = 2;
    CHECK_OK(wl_adapter_extract(base, tuned, ranks, 0.0f, NULL, &x2, errs, &total));
    CHECK_MSG(total > 1e-3, "rank 2 of a rank-4 update should lose something, got %g", total);
    wl_adapter_free(x2);
    x2 = NULL;
    ranks[0] = 100;
    CHECK_STATUS(wl_adapter_extract(base, tuned, ranks, 0.0f, NULL, &x2, NULL, NULL), WL_STATUS_INVALID_ARGUMENT);
    wl_model *other = small_gpt2();
    CHECK_STATUS(wl_adapter_extract(base, other, ranks, 0.0f, NULL, &x2, NULL, NULL), WL_STATUS_SHAPE_MISMATCH);
    wl_model_free(other);
    CHECK_OK(wl_model_unmerge(tuned, a));
    wl_adapter_free(x);
    wl_adapter_free(a);
    free(ranks);
    free(want);
    free(got);
    wl_model_free(base);
    wl_model_free(tuned);
}

static void combine_case(wl_model *m) {
    printf(" combine\n");
    const int T = 8, V = wl_model_config(m)->vocab_size;
    int32_t ids[8] = {1, 403, 407, 261, 378, 430, 375, 259};
    CHECK_OK(wl_model_reserve(m, 1, T, 0));
    wl_adapter *a = random_adapter(m, 4, 8.0f, 41, 0x7f), *b = random_adapter(m, 4, 4.0f, 42, 0x0f);
    const wl_adapter *both[2] = {a, b};
    const float w[2] = {0.6f, 1.3f};
    /* the weighted mix of the two is the reference for cat (exact) and svd at full rank */
    CHECK_OK(wl_model_set_adapters(m, (wl_adapter *[]){a, b}, w, 2));
    float *mix = logits_of(m, ids, T);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter *cat = NULL, *svd = NULL, *lin = NULL, *svd2 = NULL;
    CHECK_OK(wl_adapter_combine(both, w, 2, WL_COMBINE_CAT, 0, &cat, NULL));
    CHECK_OK(wl_model_set_adapters(m, &cat, NULL, 1));
    float *got = logits_of(m, ids, T);
    wl_test_close("combine cat = weighted sum", got, mix, (size_t)T * V, 2e-4f, 1e-4f);
    free(got);
    double errs[64];
    CHECK_OK(wl_adapter_combine(both, w, 2, WL_COMBINE_SVD, 8, &svd, errs));
    CHECK_OK(wl_model_set_adapters(m, &svd, NULL, 1));
    got = logits_of(m, ids, T);
    wl_test_close("combine svd at full rank = weighted sum", got, mix, (size_t)T * V, 2e-4f, 1e-4f);
    free(got);
    CHECK_OK(wl_adapter_combine(both, w, 2, WL_COMBINE_SVD, 2, &svd2, errs));
    CHECK_MSG(errs[0] > 1e-3, "svd rank 2 of a rank-8 sum should report an error, got %g", errs[0]);
    /* linear: PEFT's A = sum sqrt(w) s A, B = sum sqrt(w) B on one module */
    CHECK_OK(wl_adapter_combine(both, w, 2, WL_COMBINE_LINEAR, 0, &lin, NULL));
    wl_lora_module la, ma, mb;
    wl_adapter_module(lin, 0, &la);
    wl_adapter_module(a, 0, &ma);
    wl_adapter_module(b, 0, &mb);
    float wantA = sqrtf(w[0]) * ma.scale * ma.A[5] + sqrtf(w[1]) * mb.scale * mb.A[5];
    float wantB = sqrtf(w[0]) * ma.B[7] + sqrtf(w[1]) * mb.B[7];
    CHECK(fabsf(la.A[5] - wantA) < 1e-6f && fabsf(la.B[7] - wantB) < 1e-6f && la.scale == 1.0f);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter *c = random_adapter(m, 2, 2.0f, 43, 0x7f);
    const wl_adapter *mixed[2] = {a, c};
    wl_adapter *bad = NULL;
    CHECK_STATUS(wl_adapter_combine(mixed, w, 2, WL_COMBINE_LINEAR, 0, &bad, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_adapter_combine(both, (float[]){-1.0f, 1.0f}, 2, WL_COMBINE_LINEAR, 0, &bad, NULL), WL_STATUS_INVALID_ARGUMENT);
    wl_model *g = small_gpt2();
    wl_adapter *ga = random_adapter(g, 2, 2.0f, 1, 1);
    const wl_adapter *other[2] = {a, ga};
    CHECK_STATUS(wl_adapter_combine(other, w, 2, WL_COMBINE_CAT, 0, &bad, NULL), WL_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(wl_adapter_combine(both, w, 2, WL_COMBINE_SVD, 1000, &bad, NULL), WL_STATUS_INVALID_ARGUMENT);
    wl_adapter_free(ga);
    wl_model_free(g);
    wl_adapter_free(c);
    wl_adapter_free(cat);
    wl_adapter_free(svd);
    wl_adapter_free(svd2);
    wl_adapter_free(lin);
    wl_adapter_free(a);
    wl_adapter_free(b);
    free(mix);
}

static void merge_errors(wl_model *m) {
    wl_model *g = small_gpt2();
    wl_adapter *ga = random_adapter(g, 2, 2.0f, 1, 0xf);
    CHECK_STATUS(wl_model_merge(m, ga, 1.0f), WL_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(wl_model_merge(g, ga, NAN), WL_STATUS_INVALID_ARGUMENT);
    size_t n;
    wl_adapter_params(ga, &n)[3] = INFINITY;
    CHECK_STATUS(wl_model_merge(g, ga, 1.0f), WL_STATUS_NUMERIC);
    wl_adapter_free(ga);
    wl_model_free(g);
}

int main(void) {
    wl_model *g = small_gpt2();
    merge_case("merge GPT-2 (Conv1D orientation, c_attn + mlp.c_proj)", g, (1 << WL_GPT2_C_ATTN) | (1 << WL_GPT2_MLP_C_PROJ));
    wl_model_free(g);
    /* The rest needs the real checkpoint; without it the load above counted a failure naming the path. */
    wl_model *m = load_stories();
    if (m) {
        merge_case("merge stories260K (all modules)", m, 0x7f);
        merge_errors(m);
        pissa_case(m);
        resize_case(m);
        extract_case();
        combine_case(m);
        wl_model_free(m);
    }
    return wl_test_summary("test_lora_tools");
}
