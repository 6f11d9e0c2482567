/* test_model_grad.c: the whole model's backward pass against central finite differences of its loss, for Llama
 * (GQA, both RoPE layouts, q/k/v bias, tied and untied heads) and GPT-2, LoRA and full-parameter training, with and
 * without LoRA dropout, DoRA magnitudes and MergedLinear blocks; plus the attention layer alone, KV-cache decoding
 * against whole-sequence logits, a fresh adapter leaving logits bit-identical, activation recomputation leaving a
 * training step bit-identical (also on 2 threads), and the errors of the forward/backward API. Runs once per kernel
 * table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_fixture.h"
#include "kernels/kernels.h"
#include "layers/layers.h"
#include "testutil.h"
#include "weblora.h"
#include "wl_threads.h"

static wl_config llama_config(int rope_layout, int qkv_bias, int tied) {
    wl_config c = {0};
    c.arch = WL_ARCH_LLAMA;
    c.dim = 16;
    c.hidden_dim = 24;
    c.n_layers = 3;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 6; /* != dim / heads on purpose */
    c.vocab_size = 23;
    c.max_seq_len = 32;
    c.tied_embeddings = tied;
    c.qkv_bias = qkv_bias;
    c.rope_layout = rope_layout;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

static wl_config gpt2_config(void) {
    wl_config c = {0};
    c.arch = WL_ARCH_GPT2;
    c.dim = 12;
    c.hidden_dim = 20;
    c.n_layers = 2;
    c.n_heads = 3;
    c.n_kv_heads = 3;
    c.head_dim = 4;
    c.vocab_size = 19;
    c.max_seq_len = 16;
    c.tied_embeddings = 1;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.bos_id = -1;
    c.eos_id = 18;
    return c;
}

/* Random weights; norm weights around 1 so the network is well conditioned. */
static void randomize(wl_model *m, uint64_t seed) {
    for (int i = 0; i < wl_model_n_tensors(m); i++) {
        wl_tensor_info t;
        wl_model_tensor(m, i, &t);
        int is_norm_w = t.ndim == 1 && strstr(t.name, "norm") && strstr(t.name, "weight");
        if (!is_norm_w) is_norm_w = t.ndim == 1 && strstr(t.name, "ln_") && strstr(t.name, "weight");
        /* a quantised model's matrices are written through the quantiser (their data is NULL) */
        float *v = t.data ? t.data : malloc(t.numel * sizeof(float));
        wl_test_fill(v, t.numel, seed + (uint64_t)i * 7919, 0.5f);
        if (is_norm_w) {
            for (size_t j = 0; j < t.numel; j++) v[j] = 1.0f + 0.3f * v[j];
        }
        if (!t.data) {
            CHECK_OK(wl_model_write_tensor(m, i, WL_DTYPE_F32, 0, t.numel, v));
            free(v);
        }
    }
}

static wl_adapter *make_adapter(wl_model *m, const int *slot_rank, int first_layer, uint64_t seed, int rslora, int dora) {
    return wl_test_adapter(m, &(wl_test_adapter_spec){.slot_rank = slot_rank, .first_layer = first_layer, .alpha = 2.0f,
                                                      .alpha_per_rank = 2.0f, .rslora = rslora, .dora = dora,
                                                      .fill_seed = seed, .fill_scale = 0.3f});
}

typedef struct batch {
    int B, T;
    int32_t tokens[64], targets[64];
} batch;

static batch make_batch(int B, int T, int V, uint64_t seed, int ignore_some) {
    batch b = {B, T, {0}, {0}};
    uint64_t s = seed;
    for (int n = 0; n < B * T; n++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        b.tokens[n] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    for (int n = 0; n < B * T; n++) {
        int t = n % T;
        b.targets[n] = t + 1 < T ? b.tokens[n + 1] : (int32_t)((n * 7 + 3) % V);
        if (ignore_some && n % 5 == 2) b.targets[n] = -100;
    }
    return b;
}

static double loss_of(wl_model *m, const batch *b) {
    float loss = NAN;
    CHECK_OK(wl_model_forward(m, b->tokens, b->targets, b->B, b->T, 0, WL_FORWARD_TRAIN, -100, &loss));
    return loss;
}

/* Central difference along d with step e, Richardson-extrapolated ((4 D(e/2) - D(e)) / 3) so the O(e^2) term
 * cancels: the LoRA scales make the loss curved enough for plain differences to mislead at float32 step sizes. */
static double directional_fd(wl_model *m, const batch *b, float *params, const float *d, size_t n, double e) {
    double D[2];
    for (int k = 0; k < 2; k++) {
        double h = k ? e / 2 : e;
        float *saved = malloc(n * sizeof(float));
        memcpy(saved, params, n * sizeof(float));
        for (size_t i = 0; i < n; i++) params[i] = saved[i] + (float)h * d[i];
        double lp = loss_of(m, b);
        for (size_t i = 0; i < n; i++) params[i] = saved[i] - (float)h * d[i];
        double lm = loss_of(m, b);
        memcpy(params, saved, n * sizeof(float));
        free(saved);
        D[k] = (lp - lm) / (2 * h);
    }
    return (4 * D[1] - D[0]) / 3;
}

/* For random directions d over the trainable buffer the extrapolated difference must equal g . d; then the largest
 * gradient coordinates one by one. The Richardson-extrapolated difference of a float32 loss is good to about 1e-4
 * relative (measured max over all cases and both kernel tables: 1.2e-3); 1e-2 is a factor 8 above, while a
 * missing or misweighted term of a backward is off by far more. */
static void check_grad(const char *what, wl_model *m, const batch *b, float *params, const float *grads, size_t n) {
    float *g = malloc(n * sizeof(float));
    float *d = malloc(n * sizeof(float));
    memcpy(g, grads, n * sizeof(float));
    double max_rel = 0.0;
    for (int trial = 0; trial < 4; trial++) {
        wl_test_fill(d, n, 1000 + trial, 1.0f);
        double gd = 0.0;
        for (size_t i = 0; i < n; i++) gd += (double)g[i] * d[i];
        double fd = directional_fd(m, b, params, d, n, 2e-3);
        double rel = fabs(fd - gd) / (fabs(gd) + 1e-3);
        if (rel > max_rel) max_rel = rel;
        CHECK_MSG(rel < 1e-2, "%s: direction %d: finite difference %.6g, analytic %.6g", what, trial, fd, gd);
    }
    for (int pick = 0; pick < 3; pick++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            if (fabsf(g[i]) > fabsf(g[best])) best = i;
        }
        memset(d, 0, n * sizeof(float));
        d[best] = 1.0f;
        double fd = directional_fd(m, b, params, d, n, 4e-3);
        double rel = fabs(fd - g[best]) / (fabs(g[best]) + 1e-3);
        if (rel > max_rel) max_rel = rel;
        CHECK_MSG(rel < 1e-2, "%s: coordinate %zu: finite difference %.6g, analytic %.6g", what, best, fd, (double)g[best]);
        g[best] = 0.0f;
    }
    printf("  %-56s params=%-6zu max rel err=%.2e\n", what, n, max_rel);
    free(g);
    free(d);
}

/* storage: WL_STORAGE_F32, or a quantised base (the LoRA gradients must still match the loss it computes). */
static void lora_case(const char *what, wl_config cfg, const int *slot_rank, int first_layer, int rslora,
                      float dropout, int B, int T, int ignore_some, int storage) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create_quantized(&cfg, storage, &m));
    if (!m) return;
    randomize(m, 11);
    CHECK_OK(wl_model_reserve(m, B, T, WL_RESERVE_TRAIN));
    wl_adapter *a = make_adapter(m, slot_rank, first_layer, 5, rslora, 0);
    CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
    CHECK_OK(wl_model_set_trainable(m, a));
    CHECK_OK(wl_model_set_lora_dropout(m, dropout, 77, 3));
    batch b = make_batch(B, T, cfg.vocab_size, 99, ignore_some);
    CHECK_OK(wl_adapter_zero_grad(a));
    loss_of(m, &b);
    CHECK_OK(wl_model_backward(m));
    size_t n;
    float *p = wl_adapter_params(a, &n);
    check_grad(what, m, &b, p, wl_adapter_grads(a), n);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
    wl_model_free(m);
}

/* Logits of one inference pass over b into a new buffer. */
static float *logits_of(wl_model *m, const batch *b) {
    const size_t n = (size_t)b->B * b->T * wl_model_config(m)->vocab_size;
    CHECK_OK(wl_model_forward(m, b->tokens, NULL, b->B, b->T, 0, 0, -100, NULL));
    float *out = malloc(n * sizeof(float));
    memcpy(out, wl_model_logits(m), n * sizeof(float));
    return out;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float worst = 0.0f;
    for (size_t i = 0; i < n; i++) worst = fmaxf(worst, fabsf(a[i] - b[i]));
    return worst;
}

/* Attach a alone, trainable, and run one forward and backward pass over b. */
static void train_pass(wl_model *m, wl_adapter *a, const batch *b) {
    CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
    CHECK_OK(wl_model_set_trainable(m, a));
    CHECK_OK(wl_adapter_zero_grad(a));
    loss_of(m, b);
    CHECK_OK(wl_model_backward(m));
}

/* Finite difference of the loss along the gradient itself (zero where a parameter is not trained) against |g|^2. */
static void check_along_gradient(const char *what, wl_model *m, const batch *b, float *params, const float *d, size_t n) {
    double gd = 0.0;
    for (size_t i = 0; i < n; i++) gd += (double)d[i] * d[i];
    double fd = directional_fd(m, b, params, d, n, 2e-3);
    double rel = fabs(fd - gd) / (fabs(gd) + 1e-3);
    CHECK_MSG(gd > 1e-6 && rel < 1e-2, "%s: finite difference %.6g along the gradient, |g|^2 %.6g", what, fd, gd);
    printf("  %-56s |g|^2=%-9.3g rel err=%.2e\n", what, gd, rel);
}

/* DoRA: the gradients of A and B hold the row norm of W + s B A constant (PEFT, the DoRA paper), so they are not the
 * loss's derivative and are checked against PyTorch (tests/ref dora_*); the magnitudes' gradient is one (the norm does
 * not depend on them). Merge against the unmerged logits, exact unmerge, and the refusals. */
static void dora_case(const char *what, wl_config cfg, const int *slot_rank) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    if (!m) return;
    randomize(m, 31);
    CHECK_OK(wl_model_reserve(m, 2, 5, WL_RESERVE_TRAIN));
    wl_adapter *a = make_adapter(m, slot_rank, 0, 13, 0, 1);
    CHECK_OK(wl_adapter_init_dora(m, a));
    size_t n;
    float *p = wl_adapter_params(a, &n);
    float *d = calloc(n, sizeof(float));
    float jitter[64];
    wl_test_fill(jitter, 64, 3, 0.2f);
    for (int i = 0; i < wl_adapter_n_modules(a); i++) {
        wl_lora_module mod;
        wl_adapter_module(a, i, &mod);
        for (int o = 0; o < mod.out_features; o++) mod.magnitude[o] *= 1.0f + jitter[o % 64];
    }
    batch b = make_batch(2, 5, cfg.vocab_size, 7, 0);
    train_pass(m, a, &b);
    for (int i = 0; i < wl_adapter_n_modules(a); i++) {
        wl_lora_module mod;
        wl_adapter_module(a, i, &mod);
        size_t off = (size_t)(mod.magnitude - p);
        memcpy(d + off, mod.dmagnitude, (size_t)mod.out_features * sizeof(float));
    }
    check_along_gradient(what, m, &b, p, d, n);
    CHECK_OK(wl_model_set_lora_dropout(m, 0.1f, 1, 1));
    float loss;
    CHECK_STATUS(wl_model_forward(m, b.tokens, b.targets, 2, 5, 0, WL_FORWARD_TRAIN, -100, &loss), WL_STATUS_UNSUPPORTED);
    CHECK_OK(wl_model_set_lora_dropout(m, 0.0f, 0, 0));

    /* (m / ||W + s B A||) (W + s B A) merged against the unmerged pass: float32 sums in another order, measured up
     * to 3.4e-6 on logits up to 3.3 (both kernel tables); 1e-4 leaves a factor 30. */
    const size_t n_logits = (size_t)2 * 5 * cfg.vocab_size;
    float *unmerged = logits_of(m, &b);
    size_t n_w;
    float *w = wl_model_params(m, &n_w);
    float *w0 = malloc(n_w * sizeof(float));
    memcpy(w0, w, n_w * sizeof(float));
    CHECK_STATUS(wl_model_merge(m, a, 0.5f), WL_STATUS_UNSUPPORTED);
    CHECK_OK(wl_model_merge(m, a, 1.0f));
    float *merged = logits_of(m, &b);
    CHECK_MSG(max_abs_diff(merged, unmerged, n_logits) < 1e-4f, "%s: merged logits differ by %g", what,
              (double)max_abs_diff(merged, unmerged, n_logits));
    CHECK_OK(wl_model_unmerge(m, a));
    CHECK(memcmp(w, w0, n_w * sizeof(float)) == 0);

    wl_adapter *plain = make_adapter(m, slot_rank, 0, 14, 0, 0);
    wl_adapter *both[2] = {a, plain};
    const float half = 0.5f;
    CHECK_STATUS(wl_model_set_adapters(m, both, NULL, 2), WL_STATUS_UNSUPPORTED);
    CHECK_STATUS(wl_model_set_adapters(m, &a, &half, 1), WL_STATUS_UNSUPPORTED);
    wl_adapter *out = NULL;
    CHECK_STATUS(wl_adapter_resize(a, 1, 0.0f, &out, NULL, NULL), WL_STATUS_UNSUPPORTED);
    const float ones[2] = {1.0f, 1.0f};
    const wl_adapter *both_const[2] = {a, plain};
    CHECK_STATUS(wl_adapter_combine(both_const, ones, 2, WL_COMBINE_CAT, 0, &out, NULL), WL_STATUS_UNSUPPORTED);
    CHECK_STATUS(wl_adapter_init_dora(m, plain), WL_STATUS_INVALID_ARGUMENT);
    CHECK(out == NULL);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(plain);
    wl_adapter_free(a);
    free(d);
    free(unmerged);
    free(merged);
    free(w0);
    wl_model_free(m);
}

/* LoRA on the token embedding and the LM head (model-level modules), with or without block modules: every gradient
 * against finite differences. embed_rank / head_rank 0 leave that module out. */
static void model_level_case(const char *what, wl_config cfg, const int *slot_rank, int embed_rank, int head_rank,
                             float dropout) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    if (!m) return;
    randomize(m, 13);
    const int B = 2, T = 5;
    CHECK_OK(wl_model_reserve(m, B, T, WL_RESERVE_TRAIN));
    /* scales 8 and 6: gradients large enough for float32 differences of a loss near 3 (at 0.75 the head-only
     * case's directional derivatives were 2e-3, where the differences' own error of ~6e-5 is 3% of it) */
    wl_adapter *a = wl_test_adapter(m, &(wl_test_adapter_spec){.slot_rank = slot_rank, .alpha = 3.0f,
                                                               .embed_rank = embed_rank, .embed_alpha = 8.0f * (float)embed_rank,
                                                               .head_rank = head_rank, .head_alpha = 6.0f * (float)head_rank,
                                                               .fill_seed = 21, .fill_scale = 0.3f});
    if (!a) {
        wl_model_free(m);
        return;
    }
    size_t n;
    float *p = wl_adapter_params(a, &n);
    CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
    CHECK_OK(wl_model_set_trainable(m, a));
    CHECK_OK(wl_model_set_lora_dropout(m, dropout, 5, 1));
    batch b = make_batch(B, T, cfg.vocab_size, 31, 1);
    CHECK_OK(wl_adapter_zero_grad(a));
    loss_of(m, &b);
    CHECK_OK(wl_model_backward(m));
    check_grad(what, m, &b, p, wl_adapter_grads(a), n);
    CHECK_OK(wl_model_set_lora_dropout(m, 0.0f, 0, 0));
    /* a fresh adapter (PEFT's init: embedding A = 0, B ~ N(0, 1); head B = 0) leaves the logits bit for bit */
    float *with = NULL, *base = NULL;
    CHECK_OK(wl_adapter_init(a, WL_LORA_INIT_DEFAULT, 3));
    with = logits_of(m, &b);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    base = logits_of(m, &b);
    CHECK_MSG(max_abs_diff(with, base, (size_t)B * T * cfg.vocab_size) == 0.0f, "%s: a fresh adapter changes the logits", what);
    free(with);
    free(base);
    /* merging into a tied embedding / head is refused */
    if (cfg.tied_embeddings || cfg.arch == WL_ARCH_GPT2) CHECK(wl_model_merge(m, a, 1.0f) == WL_STATUS_UNSUPPORTED);
    wl_adapter_free(a);
    wl_model_free(m);
}

/* loralib MergedLinear on GPT-2's c_attn (q and v of [q; k; v], rank 2 each): the gradient is the loss's derivative
 * restricted to A and B's blocks, zero elsewhere, so B stays block-structured; bad block layouts are refused. */
static void merged_linear_case(void) {
    wl_config cfg = gpt2_config();
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    if (!m) return;
    randomize(m, 41);
    CHECK_OK(wl_model_reserve(m, 2, 5, WL_RESERVE_TRAIN));
    const int c_attn[WL_MAX_SLOTS] = {4, 0, 0, 0};
    wl_adapter *a = make_adapter(m, c_attn, 0, 17, 0, 0);
    CHECK_STATUS(wl_adapter_set_row_blocks(a, 0, 5, 5), WL_STATUS_INVALID_ARGUMENT);  /* 36 rows do not split in 5 */
    CHECK_STATUS(wl_adapter_set_row_blocks(a, 0, 3, 0), WL_STATUS_INVALID_ARGUMENT);  /* no block */
    CHECK_STATUS(wl_adapter_set_row_blocks(a, 0, 3, 8), WL_STATUS_INVALID_ARGUMENT);  /* beyond the 3 blocks */
    CHECK_STATUS(wl_adapter_set_row_blocks(a, 0, 3, 7), WL_STATUS_INVALID_ARGUMENT);  /* rank 4 in 3 slices */
    for (int i = 0; i < wl_adapter_n_modules(a); i++) CHECK_OK(wl_adapter_set_row_blocks(a, i, 3, 5));
    batch b = make_batch(2, 5, cfg.vocab_size, 8, 0);
    train_pass(m, a, &b);
    size_t n;
    float *p = wl_adapter_params(a, &n);
    float *g = malloc(n * sizeof(float));
    memcpy(g, wl_adapter_grads(a), n * sizeof(float));
    for (int i = 0; i < wl_adapter_n_modules(a); i++) {
        wl_lora_module mod;
        wl_adapter_module(a, i, &mod);
        const int rows = mod.out_features / 3;
        for (int o = 0; o < mod.out_features; o++) {
            for (int c = 0; c < mod.rank; c++) {
                const int inside = (o < rows && c < 2) || (o >= 2 * rows && c >= 2);
                const size_t at = (size_t)o * mod.rank + c;
                if (!inside) CHECK_MSG(mod.B[at] == 0.0f && mod.dB[at] == 0.0f, "B or dB nonzero outside the blocks at %d,%d", o, c);
                else CHECK(mod.B[at] != 0.0f);
            }
        }
    }
    check_along_gradient("gpt2 MergedLinear c_attn q,v: gradient of A and B's blocks", m, &b, p, g, n);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
    free(g);
    wl_model_free(m);
}

static void full_case(const char *what, wl_config cfg, int with_adapter) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    if (!m) return;
    randomize(m, 23);
    CHECK_OK(wl_model_reserve(m, 2, 6, WL_RESERVE_TRAIN));
    wl_adapter *a = NULL;
    if (with_adapter) {
        /* a frozen adapter is attached: its path must still carry gradient to the layers below */
        int ranks[WL_MAX_SLOTS] = {2, 2, 2, 2, 2, 2, 2};
        a = make_adapter(m, ranks, 0, 8, 0, 0);
        CHECK_OK(wl_model_set_adapters(m, &a, (float[]){0.7f}, 1));
    }
    CHECK_OK(wl_model_set_full_training(m, 1));
    CHECK_OK(wl_model_zero_grad(m));
    batch b = make_batch(2, 6, cfg.vocab_size, 41, 1);
    loss_of(m, &b);
    CHECK_OK(wl_model_backward(m));
    size_t n;
    float *p = wl_model_params(m, &n);
    check_grad(what, m, &b, p, wl_model_grads(m), n);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
    wl_model_free(m);
}

/* Attention alone: dq, dk, dv against finite differences of sum(out * w) for a random w, over T = 5 (one block of
 * queries) and T = 2 WL_ATTENTION_ROWS + 5 (two whole blocks and a part); then the last queries of sequence 0 alone,
 * at pos0 > 0 over the same cache, give the rows the whole sequence gave. */
static void attention_case(const wl_kernels *k, int T) {
    enum { B = 2, H = 4, HKV = 2, HS = 3 };
    const int qd = H * HS, kvd = HKV * HS, N = B * T;
    const size_t nq = (size_t)N * qd, nkv = (size_t)N * kvd, ns = wl_attention_scratch_floats(T, T);
    float *q = malloc(nq * sizeof(float)), *out = malloc(nq * sizeof(float)), *w = malloc(nq * sizeof(float));
    float *dq = malloc(nq * sizeof(float)), *kc = malloc(nkv * sizeof(float)), *vc = malloc(nkv * sizeof(float));
    float *dk = malloc(nkv * sizeof(float)), *dv = malloc(nkv * sizeof(float)), *scratch = malloc(ns * sizeof(float));
    wl_test_fill(q, nq, 1, 1.0f);
    wl_test_fill(kc, nkv, 2, 1.0f);
    wl_test_fill(vc, nkv, 3, 1.0f);
    wl_test_fill(w, nq, 4, 1.0f);
    wl_attention_forward(k, out, scratch, ns, q, kc, vc, B, T, 0, H, HKV, HS);
    wl_attention_backward(k, dq, dk, dv, scratch, ns, w, q, kc, vc, B, T, H, HKV, HS);
    float *bufs[3] = {q, kc, vc}, *grads[3] = {dq, dk, dv};
    size_t sizes[3] = {nq, nkv, nkv};
    const char *names[3] = {"attention dq", "attention dk", "attention dv"};
    /* every element of the short case; every 13th of the long one (13 is prime to the row widths, so each column and
     * block is hit) */
    const size_t stride = T > 8 ? 13 : 1;
    for (int which = 0; which < 3; which++) {
        const size_t n = (sizes[which] + stride - 1) / stride;
        float *fd = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
        for (size_t i = 0; i < sizes[which]; i += stride) {
            float saved = bufs[which][i];
            double obj[2];
            for (int side = 0; side < 2; side++) {
                bufs[which][i] = saved + (side ? -1e-2f : 1e-2f);
                wl_attention_forward(k, out, scratch, ns, q, kc, vc, B, T, 0, H, HKV, HS);
                double s = 0.0;
                for (size_t j = 0; j < nq; j++) s += (double)out[j] * w[j];
                obj[side] = s;
            }
            bufs[which][i] = saved;
            fd[i / stride] = (float)((obj[0] - obj[1]) / 2e-2);
            got[i / stride] = grads[which][i];
        }
        /* central differences with h 1e-2 on a smooth objective: truncation error O(h^2) ~ 1e-4, float32 noise
         * ~1e-5 / h; measured 1.2e-5 abs at most (gradients of order 1) */
        wl_test_close(names[which], got, fd, n, 2e-3f, 2e-3f);
        free(fd);
        free(got);
    }
    /* queries T0 .. T-1 of sequence 0 after a prefill of T0: its rows of the whole-sequence output (the same sums;
     * measured: equal, or within 6e-8) */
    const int T0 = T > 8 ? WL_ATTENTION_ROWS + 3 : 2;
    float *tail = malloc((size_t)(T - T0) * qd * sizeof(float));
    wl_attention_forward(k, out, scratch, ns, q, kc, vc, B, T, 0, H, HKV, HS);
    wl_attention_forward(k, tail, scratch, ns, q + (size_t)T0 * qd, kc, vc, 1, T - T0, T0, H, HKV, HS);
    wl_test_close("attention after a prefill == whole sequence", tail, out + (size_t)T0 * qd, (size_t)(T - T0) * qd,
                  1e-6f, 1e-6f);
    free(tail);
    float *all[] = {q, out, w, dq, kc, vc, dk, dv, scratch};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
}

/* Prefill + token-by-token decoding with the KV cache reproduces whole-sequence logits. */
static void decode_case(const char *what, wl_config cfg) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    if (!m) return;
    randomize(m, 5);
    int ranks[WL_MAX_SLOTS] = {2, 1, 2, 3, 2, 1, 2};
    wl_adapter *a = make_adapter(m, ranks, 0, 3, 0, 0);
    CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
    const int T = 12, V = cfg.vocab_size;
    CHECK_OK(wl_model_reserve(m, 1, 16, 0));
    batch b = make_batch(1, T, V, 7, 0);
    CHECK_OK(wl_model_forward(m, b.tokens, NULL, 1, T, 0, 0, -100, NULL));
    float *full = malloc((size_t)T * V * sizeof(float));
    memcpy(full, wl_model_logits(m), (size_t)T * V * sizeof(float));
    float *step = malloc((size_t)T * V * sizeof(float));
    /* prefill 5 tokens, keep the last row, then one token at a time */
    CHECK_OK(wl_model_forward(m, b.tokens, NULL, 1, 5, 0, WL_FORWARD_LAST_LOGITS, -100, NULL));
    memcpy(step + 4 * V, wl_model_logits(m), (size_t)V * sizeof(float));
    for (int t = 5; t < T; t++) {
        CHECK_OK(wl_model_forward(m, b.tokens + t, NULL, 1, 1, t, 0, -100, NULL));
        memcpy(step + (size_t)t * V, wl_model_logits(m), (size_t)V * sizeof(float));
    }
    /* measured: bit for bit on these small models (same arithmetic per row) */
    wl_test_close(what, step + 4 * V, full + 4 * V, (size_t)(T - 4) * V, 1e-5f, 1e-5f);
    free(full);
    free(step);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
    wl_model_free(m);
}

/* A reserve for several short sequences holds one long one too (B T rows of KV cache): after wl_model_reserve(4, 16),
 * one sequence of 64 tokens in chunks of 16 attends over up to 64 keys, more than the 16 of a reserved sequence,
 * and gives the logits of the whole sequence at once (computed after, as a reserve only ever grows). */
static void long_decode_after_short_reserve_case(const char *what, wl_config cfg) {
    cfg.max_seq_len = 64;
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    if (!m) return;
    randomize(m, 5);
    const int T = 64, chunk = 16, V = cfg.vocab_size;
    batch b = make_batch(1, T, V, 11, 0);
    float *whole = malloc((size_t)T * V * sizeof(float)), *chunks = malloc((size_t)T * V * sizeof(float));
    CHECK_OK(wl_model_reserve(m, 4, chunk, 0));
    for (int t0 = 0; t0 < T; t0 += chunk) {
        CHECK_OK(wl_model_forward(m, b.tokens + t0, NULL, 1, chunk, t0, 0, -100, NULL));
        memcpy(chunks + (size_t)t0 * V, wl_model_logits(m), (size_t)chunk * V * sizeof(float));
    }
    CHECK_OK(wl_model_reserve(m, 1, T, 0));
    CHECK_OK(wl_model_forward(m, b.tokens, NULL, 1, T, 0, 0, -100, NULL));
    memcpy(whole, wl_model_logits(m), (size_t)T * V * sizeof(float));
    /* the same sums per row in both ways (measured: equal, or within 3e-6) */
    wl_test_close(what, chunks, whole, (size_t)T * V, 1e-5f, 1e-5f);
    free(whole);
    free(chunks);
    wl_model_free(m);
}

/* B = 0 adapter: logits bit-identical to the base model. */
static void fresh_adapter_case(wl_config cfg) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    if (!m) return;
    randomize(m, 9);
    CHECK_OK(wl_model_reserve(m, 2, 7, 0));
    batch b = make_batch(2, 7, cfg.vocab_size, 1, 0);
    const size_t n = (size_t)2 * 7 * cfg.vocab_size;
    CHECK_OK(wl_model_forward(m, b.tokens, NULL, 2, 7, 0, 0, -100, NULL));
    float *base = malloc(n * sizeof(float));
    memcpy(base, wl_model_logits(m), n * sizeof(float));
    int ranks[WL_MAX_SLOTS] = {4, 4, 4, 4, 4, 4, 4};
    wl_adapter *a = make_adapter(m, ranks, 0, 3, 0, 0);
    CHECK_OK(wl_adapter_init(a, WL_LORA_INIT_DEFAULT, 42));
    CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
    CHECK_OK(wl_model_forward(m, b.tokens, NULL, 2, 7, 0, 0, -100, NULL));
    CHECK_MSG(memcmp(base, wl_model_logits(m), n * sizeof(float)) == 0, "fresh adapter changed the logits");
    /* and A really is nonzero (so the test above could fail) */
    wl_lora_module mod;
    wl_adapter_module(a, 0, &mod);
    CHECK(mod.A[0] != 0.0f && mod.B[0] == 0.0f);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
    free(base);
    wl_model_free(m);
}

/* What one training step of a recompute case produces: the loss, every trainable gradient, the activation bytes. */
typedef struct step_result {
    float loss;
    float *grads;
    size_t n;
    size_t activation_bytes;
} step_result;

/* Reserve with reserve_flags, then one training forward and backward over b from zeroed gradients. */
static step_result train_step(wl_model *m, wl_adapter *a, const batch *b, int reserve_flags) {
    step_result r = {NAN, NULL, 0, 0};
    CHECK_OK(wl_model_reserve(m, b->B, b->T, WL_RESERVE_TRAIN | reserve_flags));
    const float *g = a ? wl_adapter_grads(a) : wl_model_grads(m);
    if (a) {
        wl_adapter_params(a, &r.n);
        CHECK_OK(wl_adapter_zero_grad(a));
    } else {
        wl_model_params(m, &r.n);
        CHECK_OK(wl_model_zero_grad(m));
    }
    CHECK_OK(wl_model_forward(m, b->tokens, b->targets, b->B, b->T, 0, WL_FORWARD_TRAIN, -100, &r.loss));
    CHECK_OK(wl_model_backward(m));
    r.grads = malloc(r.n * sizeof(float));
    memcpy(r.grads, g, r.n * sizeof(float));
    wl_model_memory_split(m, NULL, &r.activation_bytes);
    return r;
}

typedef struct recompute_spec {
    const char *what;
    wl_config cfg;
    int storage;
    const int *slot_rank; /* NULL: full-parameter training, no adapter */
    int first_layer, dora, embed_rank, head_rank;
    float dropout;
} recompute_spec;

/* Activation recomputation must not change a training step at all: the loss and every gradient bit for bit against
 * the plan that keeps every layer's activations (the same kernels run on the same inputs, and dropout masks are a
 * hash of (seed, step, module, element)), while the activations take less memory; then back to the full plan. */
static void recompute_case(const recompute_spec *c) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create_quantized(&c->cfg, c->storage, &m));
    if (!m) return;
    randomize(m, 17);
    const int L = c->cfg.n_layers, S = wl_model_n_slots(m);
    wl_adapter *a = NULL;
    if (c->slot_rank) {
        a = wl_test_adapter(m, &(wl_test_adapter_spec){.slot_rank = c->slot_rank, .first_layer = c->first_layer,
                                                       .alpha = 4.0f, .dora = c->dora, .embed_rank = c->embed_rank,
                                                       .embed_alpha = 8.0f, .head_rank = c->head_rank, .head_alpha = 6.0f,
                                                       .fill_seed = 29, .fill_scale = 0.3f});
        if (!a) {
            wl_model_free(m);
            return;
        }
        if (c->dora) CHECK_OK(wl_adapter_init_dora(m, a));
        CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
        CHECK_OK(wl_model_set_trainable(m, a));
        CHECK_OK(wl_model_set_lora_dropout(m, c->dropout, 91, 4));
    } else {
        CHECK_OK(wl_model_set_full_training(m, 1));
    }
    batch b = make_batch(2, 6, c->cfg.vocab_size, 53, 1);
    step_result full = train_step(m, a, &b, 0);
    step_result re = train_step(m, a, &b, WL_RESERVE_RECOMPUTE);
    step_result back = train_step(m, a, &b, 0);
    CHECK_MSG(memcmp(&re.loss, &full.loss, sizeof(float)) == 0, "%s: recomputed loss %.9g, kept %.9g", c->what,
              (double)re.loss, (double)full.loss);
    CHECK_MSG(memcmp(re.grads, full.grads, full.n * sizeof(float)) == 0, "%s: recomputed gradients differ by up to %g",
              c->what, (double)max_abs_diff(re.grads, full.grads, full.n));
    CHECK_MSG(memcmp(back.grads, full.grads, full.n * sizeof(float)) == 0, "%s: gradients after returning to the full "
              "plan differ by up to %g", c->what, (double)max_abs_diff(back.grads, full.grads, full.n));
    /* every block but its (N, C) input leaves the plan: at least the MLP's three (N, hidden) buffers per layer but one */
    size_t saved = (size_t)(L - 1) * 3 * (size_t)(b.B * b.T) * (size_t)c->cfg.hidden_dim * sizeof(float);
    /* and DoRA keeps one z (N, out) per slot instead of one per module */
    for (int s = 0; c->dora && s < S; s++) {
        wl_module_info info;
        wl_model_module(m, s, &info);
        saved += (size_t)(L - 1) * (size_t)(b.B * b.T) * (size_t)info.out_features * sizeof(float);
    }
    CHECK_MSG(re.activation_bytes + saved <= full.activation_bytes && back.activation_bytes == full.activation_bytes,
              "%s: activations %zu bytes with recomputation, %zu without, %zu again without", c->what,
              re.activation_bytes, full.activation_bytes, back.activation_bytes);
    double norm = 0.0;
    for (size_t i = 0; i < full.n; i++) norm += (double)full.grads[i] * full.grads[i];
    CHECK_MSG(norm > 0.0, "%s: zero gradient (nothing would be compared)", c->what);
    printf("  recompute: %-60s %zu -> %zu activation bytes\n", c->what, full.activation_bytes, re.activation_bytes);
    free(full.grads);
    free(re.grads);
    free(back.grads);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
    wl_model_free(m);
}

static void recompute_cases(void) {
    const int all[WL_MAX_SLOTS] = {2, 3, 1, 2, 2, 3, 2};
    const int qv[WL_MAX_SLOTS] = {3, 0, 2, 0, 0, 0, 0};
    const int gpt2_all[WL_MAX_SLOTS] = {2, 3, 2, 1};
    const wl_config half = llama_config(WL_ROPE_HALF, 0, 0), inter = llama_config(WL_ROPE_INTERLEAVED, 0, 1);
    const wl_config bias = llama_config(WL_ROPE_HALF, 1, 1), gpt2 = gpt2_config();
    const recompute_spec specs[] = {
        {"llama LoRA all modules, untied", half, WL_STORAGE_F32, all, 0, 0, 0, 0, 0.0f},
        {"llama LoRA all modules, qkv bias, dropout 0.3", bias, WL_STORAGE_F32, all, 0, 0, 0, 0, 0.3f},
        {"llama LoRA q,v from layer 1 (layer 0 never recomputed)", inter, WL_STORAGE_F32, qv, 1, 0, 0, 0, 0.0f},
        {"llama DoRA all modules, qkv bias", bias, WL_STORAGE_F32, all, 0, 1, 0, 0, 0.0f},
        {"llama embedding + head + q,v LoRA, dropout 0.2", half, WL_STORAGE_F32, qv, 0, 0, 2, 3, 0.2f},
        {"llama q8 base, LoRA all modules, dropout 0.1", bias, WL_STORAGE_Q8, all, 0, 0, 0, 0, 0.1f},
        {"llama q4 base, LoRA all + embedding + head", half, WL_STORAGE_Q4, all, 0, 0, 2, 2, 0.0f},
        {"llama q4 base, DoRA all modules", inter, WL_STORAGE_Q4, all, 0, 1, 0, 0, 0.0f},
        {"llama full-parameter", half, WL_STORAGE_F32, NULL, 0, 0, 0, 0, 0.0f},
        {"gpt2 LoRA all modules, dropout 0.2", gpt2, WL_STORAGE_F32, gpt2_all, 0, 0, 0, 0, 0.2f},
        {"gpt2 DoRA all modules, q8 base", gpt2, WL_STORAGE_Q8, gpt2_all, 0, 1, 0, 0, 0.0f},
        {"gpt2 wte + lm_head + all LoRA", gpt2, WL_STORAGE_F32, gpt2_all, 0, 0, 2, 2, 0.0f},
        {"gpt2 full-parameter", gpt2, WL_STORAGE_F32, NULL, 0, 0, 0, 0, 0.0f},
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) recompute_case(&specs[i]);
}

static void error_cases(void) {
    wl_config cfg = llama_config(WL_ROPE_HALF, 0, 0);
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&cfg, &m));
    batch b = make_batch(1, 4, cfg.vocab_size, 1, 0);
    CHECK_STATUS(wl_model_forward(m, b.tokens, NULL, 1, 4, 0, 0, -100, NULL), WL_STATUS_BAD_STATE);
    CHECK_OK(wl_model_reserve(m, 1, 4, WL_RESERVE_TRAIN));
    CHECK_STATUS(wl_model_reserve(m, 1, 33, 0), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_reserve(m, 1, 4, 8), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_reserve(m, 1, 4, WL_RESERVE_RECOMPUTE), WL_STATUS_INVALID_ARGUMENT); /* without TRAIN */
    {
        /* an inference plan does not allow training, and a last-logits plan does not allow every position */
        wl_model *g = NULL;
        CHECK_OK(wl_model_create(&cfg, &g));
        CHECK_OK(wl_model_reserve(g, 1, 4, WL_RESERVE_LAST_LOGITS));
        CHECK_STATUS(wl_model_forward(g, b.tokens, b.targets, 1, 4, 0, WL_FORWARD_TRAIN, -100, NULL), WL_STATUS_BAD_STATE);
        CHECK_STATUS(wl_model_forward(g, b.tokens, NULL, 1, 4, 0, 0, -100, NULL), WL_STATUS_BAD_STATE);
        CHECK_OK(wl_model_forward(g, b.tokens, NULL, 1, 4, 0, WL_FORWARD_LAST_LOGITS, -100, NULL));
        wl_model_free(g);
    }
    CHECK_STATUS(wl_model_backward(m), WL_STATUS_BAD_STATE);
    int32_t bad[4] = {0, 1, 23, 2};
    CHECK_STATUS(wl_model_forward(m, bad, NULL, 1, 4, 0, 0, -100, NULL), WL_STATUS_INVALID_ARGUMENT);
    int32_t bad_t[4] = {0, -5, 1, 2};
    CHECK_STATUS(wl_model_forward(m, b.tokens, bad_t, 1, 4, 0, WL_FORWARD_TRAIN, -100, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_forward(m, b.tokens, NULL, 1, 2, 3, 0, -100, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_forward(m, b.tokens, NULL, 1, 4, 0, WL_FORWARD_TRAIN, -100, NULL), WL_STATUS_INVALID_ARGUMENT);
    /* forward with targets but no trainable parameters, then backward */
    float loss;
    CHECK_OK(wl_model_forward(m, b.tokens, b.targets, 1, 4, 0, WL_FORWARD_TRAIN, -100, &loss));
    CHECK_STATUS(wl_model_backward(m), WL_STATUS_BAD_STATE);
    /* every target ignored: NaN loss, no backward */
    int32_t none[4] = {-100, -100, -100, -100};
    CHECK_OK(wl_model_forward(m, b.tokens, none, 1, 4, 0, WL_FORWARD_TRAIN, -100, &loss));
    CHECK(isnan(loss));
    /* adapter errors */
    int S = wl_model_n_slots(m), L = cfg.n_layers;
    int *ranks = calloc((size_t)L * S, sizeof(int));
    float *alphas = calloc((size_t)L * S, sizeof(float));
    wl_lora_spec spec = {ranks, alphas, 0, 0, 0, 0.0f, 0, 0.0f};
    wl_adapter *a = NULL;
    CHECK_STATUS(wl_adapter_create(m, &spec, &a), WL_STATUS_INVALID_ARGUMENT);
    ranks[0] = 25; /* > min(in 16, out 24) */
    CHECK_STATUS(wl_adapter_create(m, &spec, &a), WL_STATUS_INVALID_ARGUMENT);
    ranks[0] = -1;
    CHECK_STATUS(wl_adapter_create(m, &spec, &a), WL_STATUS_INVALID_ARGUMENT);
    ranks[0] = 2;
    alphas[0] = NAN;
    CHECK_STATUS(wl_adapter_create(m, &spec, &a), WL_STATUS_INVALID_ARGUMENT);
    alphas[0] = 4;
    CHECK_OK(wl_adapter_create(m, &spec, &a));
    CHECK_STATUS(wl_model_set_trainable(m, a), WL_STATUS_BAD_STATE);
    /* an adapter for another shape */
    wl_config other = gpt2_config();
    wl_model *g = NULL;
    CHECK_OK(wl_model_create(&other, &g));
    CHECK_STATUS(wl_model_set_adapters(g, &a, NULL, 1), WL_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(wl_model_set_adapters(m, (wl_adapter *[]){a, a}, NULL, 2), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_model_set_lora_dropout(m, 1.0f, 0, 0), WL_STATUS_INVALID_ARGUMENT);
    /* config validation */
    wl_model *bad_model = NULL;
    wl_config c2 = cfg;
    c2.n_kv_heads = 3;
    CHECK_STATUS(wl_model_create(&c2, &bad_model), WL_STATUS_BAD_FORMAT);
    c2 = cfg;
    c2.dim = 1 << 20;
    CHECK_STATUS(wl_model_create(&c2, &bad_model), WL_STATUS_BAD_FORMAT);
    c2 = cfg;
    c2.head_dim = 7;
    CHECK_STATUS(wl_model_create(&c2, &bad_model), WL_STATUS_BAD_FORMAT);
    CHECK(bad_model == NULL);
    free(ranks);
    free(alphas);
    wl_adapter_free(a);
    wl_model_free(g);
    wl_model_free(m);
}

static void run_all(void) {
    const int all[WL_MAX_SLOTS] = {2, 3, 1, 2, 2, 3, 2};
    const int qv[WL_MAX_SLOTS] = {4, 0, 4, 0, 0, 0, 0};
    const int down_only[WL_MAX_SLOTS] = {0, 0, 0, 0, 0, 0, 3};
    const int gpt2_all[WL_MAX_SLOTS] = {2, 3, 2, 1};
    const int gpt2_fc[WL_MAX_SLOTS] = {0, 0, 4, 0};
    wl_config half = llama_config(WL_ROPE_HALF, 0, 0);
    wl_config inter = llama_config(WL_ROPE_INTERLEAVED, 0, 1);
    wl_config bias = llama_config(WL_ROPE_HALF, 1, 1);
    wl_config gpt2 = gpt2_config();
    lora_case("llama LoRA all modules, rotate_half, untied", half, all, 0, 0, 0.0f, 2, 6, 1, WL_STORAGE_F32);
    lora_case("llama LoRA q,v rsLoRA, interleaved, tied", inter, qv, 0, 1, 0.0f, 2, 5, 0, WL_STORAGE_F32);
    lora_case("llama LoRA down_proj on the top layer only", half, down_only, 2, 0, 0.0f, 2, 6, 0, WL_STORAGE_F32);
    lora_case("llama LoRA q,v from layer 1 (skips layer 0)", half, qv, 1, 0, 0.0f, 1, 7, 0, WL_STORAGE_F32);
    lora_case("llama LoRA all modules, qkv bias, dropout 0.3", bias, all, 0, 0, 0.3f, 2, 6, 1, WL_STORAGE_F32);
    lora_case("gpt2 LoRA all modules", gpt2, gpt2_all, 0, 0, 0.0f, 2, 6, 1, WL_STORAGE_F32);
    lora_case("gpt2 LoRA c_fc, dropout 0.2", gpt2, gpt2_fc, 1, 1, 0.2f, 2, 5, 0, WL_STORAGE_F32);
    lora_case("llama q8 base, LoRA all modules, qkv bias, dropout 0.3", bias, all, 0, 0, 0.3f, 2, 6, 1, WL_STORAGE_Q8);
    lora_case("llama q4 base, LoRA all modules, rotate_half, untied", half, all, 0, 0, 0.0f, 2, 6, 1, WL_STORAGE_Q4);
    lora_case("gpt2 q4 base, LoRA all modules", gpt2, gpt2_all, 0, 0, 0.0f, 2, 6, 1, WL_STORAGE_Q4);
    full_case("llama full-parameter, rotate_half, untied", half, 0);
    full_case("llama full-parameter, interleaved, tied, + frozen LoRA", inter, 1);
    full_case("llama full-parameter, qkv bias", bias, 0);
    full_case("gpt2 full-parameter + frozen LoRA", gpt2, 1);
    decode_case("llama KV-cache decode == whole-sequence logits", half);
    decode_case("gpt2 KV-cache decode == whole-sequence logits", gpt2);
    long_decode_after_short_reserve_case("llama: 64 tokens in chunks after reserve(4, 16) == whole", half);
    fresh_adapter_case(half);
    fresh_adapter_case(gpt2);
    dora_case("llama DoRA all modules, qkv bias: magnitude gradient", bias, all);
    dora_case("gpt2 DoRA all modules: magnitude gradient", gpt2, gpt2_all);
    merged_linear_case();
    const int qv_only[WL_MAX_SLOTS] = {3, 0, 2, 0, 0, 0, 0};
    model_level_case("llama embedding + head + q,v LoRA, untied, head dropout 0.2", half, qv_only, 2, 3, 0.2f);
    model_level_case("llama embedding + head LoRA only, interleaved, tied", inter, NULL, 3, 2, 0.0f);
    model_level_case("llama head LoRA only, untied", half, NULL, 0, 2, 0.0f);
    model_level_case("gpt2 wte LoRA only (tied head)", gpt2, NULL, 2, 0, 0.0f);
    model_level_case("gpt2 wte + lm_head + c_fc LoRA", gpt2, gpt2_fc, 2, 2, 0.0f);
}

int main(void) {
    const char *tables[3] = {"scalar", "wasmsimd", "wasmrelaxed"};
    for (int i = 0; i < 3; i++) {
        const wl_kernels *k = wl_kernels_by_name(tables[i]);
        if (!k) {
            printf("kernels %s: not built here\n", tables[i]);
            continue;
        }
        printf("kernels %s\n", tables[i]);
        wl_kernels_set_default(k);
        attention_case(k, 5);
        attention_case(k, 2 * WL_ATTENTION_ROWS + 5);
        run_all();
        recompute_cases();
    }
    wl_kernels_set_default(NULL);
    /* recomputation on the thread pool: every block's work is split again the same way */
    if (wl_threads_start(2) == WL_OK) {
        printf("2 threads\n");
        recompute_cases();
        wl_threads_stop();
    } else {
        printf("2 threads: this build has no threads\n");
    }
    error_cases();
    return wl_test_summary("test_model_grad");
}
