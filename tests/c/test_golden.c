/* test_golden.c: the whole model (logits, loss, every LoRA gradient and, where recorded, every full-parameter
 * gradient) against the PyTorch reference in tests/ref/golden, for every case folder; LoRA dropout with the masks
 * the reference replays; logits at long positions and the RoPE tables there; stories260K greedy decoding with the
 * KV cache token for token. Runs once per kernel table built here.
 *
 * The C core has no adapter_config.json parser (web/formats/peft.js is the one, and the Jest golden suite loads every
 * case through it): here each adapter is built from the per-module r and alpha PyTorch resolved (case.json
 * lora_modules) with the core's own scale computation, which is checked against PyTorch's scaling. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "testutil.h"

static const char *CASES[] = {"llama_gqa_qv", "llama_all_rslora", "llama_qwen_bias", "llama_head_dim",
                              "llama2c_interleaved", "llama_patterns", "gpt2_attn", "gpt2_mlp", "stories260K",
                              "tiny_random_llama", "tiny_gpt2", "hf_f16", "hf_bf16_sharded", "rope_long_hf",
                              "stories260K_long", "embed_llama", "embed_llama_tied", "embed_gpt2"};

typedef struct tol {
    float atol, rtol;
} tol;

static tol tolerance(const wl_json *cs, const char *what) {
    const wl_json *t = wl_json_get(wl_json_get(cs, "tolerance"), what);
    CHECK_MSG(t != NULL, "case.json has no tolerance for %s", what);
    return (tol){(float)wl_json_num(t, "atol", 0.0), (float)wl_json_num(t, "rtol", 0.0)};
}

/* Logits rows of the stored positions (all of them without case.json logits_positions). */
static void check_logits(wl_model *m, const wl_json *cs, const wl_safetensors *st, const uint8_t *io,
                         const char *name, int B, int T) {
    const int V = wl_model_config(m)->vocab_size;
    const wl_json *pos = wl_json_get(cs, "logits_positions");
    const int P = pos ? (int)pos->n : T;
    size_t n;
    const float *want = wl_st_f32(st, io, name, &n);
    CHECK_MSG(want && n == (size_t)B * P * V, "%s missing or of the wrong size", name);
    if (!want || n != (size_t)B * P * V) return;
    float *got = malloc(n * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int p = 0; p < P; p++) {
            int t = pos ? (int)pos->items[p].integer : p;
            memcpy(got + ((size_t)b * P + p) * V, wl_model_logits(m) + ((size_t)b * T + t) * V, (size_t)V * sizeof(float));
        }
    tol lt = tolerance(cs, "logits");
    wl_test_close(name, got, want, n, lt.atol, lt.rtol);
    free(got);
}

/* Every LoRA gradient against <prefix>base_model.model.<path>.lora_{A,B}.weight. */
static void check_lora_grads(const wl_model *m, const wl_adapter *a, const wl_json *cs, const wl_safetensors *st,
                             const uint8_t *io, const char *prefix) {
    tol gt = tolerance(cs, "grads");
    char path[256], what[600];
    for (int i = 0; i < wl_adapter_n_modules(a); i++) {
        wl_lora_module mod;
        wl_adapter_module(a, i, &mod);
        wl_model_module_path(m, mod.layer, mod.slot, path, sizeof path);
        for (int which = 0; which < 2; which++) {
            wl_golden_peft_key(what, sizeof what, prefix, path, mod.layer, mod.slot, which ? 'B' : 'A');
            size_t n;
            const float *want = wl_st_f32(st, io, what, &n);
            size_t expect = (size_t)mod.rank * (which ? mod.out_features : mod.in_features);
            CHECK_MSG(want && n == expect, "%s missing", what);
            if (want && n == expect) wl_test_close(what, which ? mod.dB : mod.dA, want, n, gt.atol, gt.rtol);
        }
    }
}

static void check_full_grads(const wl_model *m, const wl_json *cs, const wl_safetensors *st, const uint8_t *io) {
    tol ft = tolerance(cs, "fullgrads");
    char what[600];
    for (int i = 0; i < wl_model_n_tensors(m); i++) {
        wl_tensor_info t;
        wl_model_tensor(m, i, &t);
        snprintf(what, sizeof what, "fullgrad.%s", t.name);
        size_t n;
        const float *want = wl_st_f32(st, io, what, &n);
        CHECK_MSG(want && n == t.numel, "%s missing", what);
        if (!want || n != t.numel) continue;
        float *got = t.grad, *tmp = NULL;
        if (t.transposed) { /* files hold (in, out); memory (out, in) */
            tmp = malloc(n * sizeof(float));
            const size_t in = (size_t)t.shape[0], out = (size_t)t.shape[1];
            for (size_t o = 0; o < out; o++)
                for (size_t k = 0; k < in; k++) tmp[k * out + o] = t.grad[o * in + k];
            got = tmp;
        }
        wl_test_close(what, got, want, n, ft.atol, ft.rtol);
        free(tmp);
    }
}

/* The RoPE tables at the stored positions against the reference angles' cos / sin (io rope.cos, rope.sin). Both
 * sides round the cosine of the same float32 angle, so they agree to an ulp of 1 (1.2e-7); angles computed in
 * double instead differ by float64_angles_cos_diff (4e-5 at position 2047 of rope_long_hf, 1.7e-6 at 511 of
 * stories260K). */
static void check_rope_tables(const wl_model *m, const wl_json *cs, const wl_safetensors *st, const uint8_t *io) {
    const wl_json *pos = wl_json_get(cs, "logits_positions");
    const int half = m->cfg.head_dim / 2, P = (int)pos->n;
    size_t nc, ns;
    const float *want_cos = wl_st_f32(st, io, "rope.cos", &nc), *want_sin = wl_st_f32(st, io, "rope.sin", &ns);
    CHECK_MSG(want_cos && want_sin && nc == (size_t)P * half && ns == nc, "rope.cos / rope.sin missing");
    if (!want_cos || !want_sin || nc != (size_t)P * half || ns != nc) return;
    float *got = malloc(2 * nc * sizeof(float));
    for (int p = 0; p < P; p++) {
        const int t = (int)pos->items[p].integer;
        CHECK(t < m->rope_positions);
        memcpy(got + (size_t)p * half, m->rope_cos + (size_t)t * half, (size_t)half * sizeof(float));
        memcpy(got + nc + (size_t)p * half, m->rope_sin + (size_t)t * half, (size_t)half * sizeof(float));
    }
    wl_test_close("RoPE cos at the stored positions", got, want_cos, nc, 1.2e-7f, 0.0f);
    wl_test_close("RoPE sin at the stored positions", got + nc, want_sin, nc, 1.2e-7f, 0.0f);
    free(got);
}

/* The same forward and backward with LoRA dropout (case.json "dropout": p, seed, step). */
static void dropout_run(wl_model *m, wl_adapter *a, const wl_json *cs, const wl_safetensors *st, const uint8_t *io,
                        const int32_t *tokens, const int32_t *targets, int B, int T) {
    const wl_json *d = wl_json_get(cs, "dropout");
    const wl_json *seed = wl_json_get(d, "seed");
    CHECK(seed && seed->is_int);
    CHECK_OK(wl_model_set_lora_dropout(m, (float)wl_json_num(d, "p", 0), seed ? (uint64_t)seed->integer : 0,
                                       (uint64_t)wl_json_num(d, "step", 0)));
    CHECK_OK(wl_adapter_zero_grad(a));
    float loss = NAN;
    CHECK_OK(wl_model_forward(m, tokens, targets, B, T, 0, WL_FORWARD_TRAIN, -100, &loss));
    check_logits(m, cs, st, io, "dropout.logits", B, T); /* before backward, which reuses the logits buffer */
    const float *want_loss = wl_st_f32(st, io, "dropout.loss", NULL);
    tol lt = tolerance(cs, "loss");
    CHECK(want_loss != NULL);
    if (want_loss) wl_test_close("dropout.loss", &loss, want_loss, 1, lt.atol, lt.rtol);
    CHECK_OK(wl_model_backward(m));
    check_lora_grads(m, a, cs, st, io, "dropout.grad.");
    CHECK_OK(wl_model_set_lora_dropout(m, 0.0f, 0, 0));
}

/* Merging the adapter gives the unmerged logits (same tolerance) and unmerging restores every weight bit for bit;
 * on a model whose embedding is its head, an adapter on either is refused (the merge would change both uses). */
static void merge_check(wl_model *m, wl_adapter *a, const wl_json *cs, const wl_safetensors *st, const uint8_t *io,
                        const int32_t *tokens, int B, int T) {
    size_t n;
    float *w = wl_model_params(m, &n);
    float *before = malloc(n * sizeof(float));
    memcpy(before, w, n * sizeof(float));
    wl_status got = wl_model_merge(m, a, 1.0f);
    if (m->wte == m->lm_head) {
        CHECK_MSG(got == WL_STATUS_UNSUPPORTED, "merging an embedding / head adapter into a tied model gave %d", got);
        CHECK(memcmp(before, w, n * sizeof(float)) == 0);
    } else {
        CHECK_OK(got);
        CHECK_OK(wl_model_forward(m, tokens, NULL, B, T, 0, 0, -100, NULL));
        check_logits(m, cs, st, io, "logits", B, T);
        CHECK_OK(wl_model_unmerge(m, a));
        CHECK_MSG(memcmp(before, w, n * sizeof(float)) == 0, "unmerge did not restore the weights bit for bit");
        CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
    }
    free(before);
}

static void run_case(const char *name) {
    const char *dir = wl_golden_dir(name);
    printf(" case %s\n", name);
    wl_json_doc *doc = wl_golden_json(dir, "case.json");
    if (!doc) return;
    const wl_json *cs = wl_json_root(doc);
    wl_model *m = wl_golden_model(dir, cs);
    CHECK_MSG(m != NULL, "case %s: model did not load", name);
    wl_test_file io = wl_test_read_in(dir, "io.safetensors");
    wl_safetensors *st = NULL;
    if (io.data) CHECK_OK(wl_st_parse(io.data, io.len, &st));
    if (!m || !st) goto done;
    const int B = (int)wl_json_num(cs, "B", 1), T = (int)wl_json_num(cs, "T", 1);
    const int full = wl_json_get(cs, "full") && wl_json_get(cs, "full")->boolean;
    const wl_json *use_rslora = wl_json_get(cs, "use_rslora");
    CHECK_OK(wl_model_reserve(m, B, T, WL_RESERVE_TRAIN));
    const wl_json *mods = wl_json_get(cs, "lora_modules");
    wl_adapter *a = mods ? wl_golden_adapter(m, dir, mods, use_rslora && use_rslora->boolean) : NULL;
    if (a) {
        CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
        CHECK_OK(wl_model_set_trainable(m, a));
    }
    if (full) CHECK_OK(wl_model_set_full_training(m, 1));
    const int32_t *tokens = wl_st_i32(st, io.data, "tokens");
    const int32_t *targets = wl_st_i32(st, io.data, "targets");
    CHECK(tokens != NULL);
    if (!tokens) goto detach;
    const int train = targets && (a || full);
    float loss = NAN;
    CHECK_OK(wl_model_forward(m, tokens, targets, B, T, 0, train ? WL_FORWARD_TRAIN : 0, -100, &loss));
    check_logits(m, cs, st, io.data, "logits", B, T);
    if (wl_st_f32(st, io.data, "rope.cos", NULL)) check_rope_tables(m, cs, st, io.data);
    const float *want_loss = wl_st_f32(st, io.data, "loss", NULL);
    if (want_loss && targets) {
        tol lt = tolerance(cs, "loss");
        wl_test_close("loss", &loss, want_loss, 1, lt.atol, lt.rtol);
    }
    if (train) {
        CHECK_OK(wl_model_backward(m));
        if (a) check_lora_grads(m, a, cs, st, io.data, "grad.");
        if (full) check_full_grads(m, cs, st, io.data);
    }
    if (a && wl_json_get(cs, "dropout")) dropout_run(m, a, cs, st, io.data, tokens, targets, B, T);
    if (a && strncmp(name, "embed_", 6) == 0) merge_check(m, a, cs, st, io.data, tokens, B, T);
detach:
    if (a) CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
done:
    wl_st_free(st);
    free(io.data);
    wl_model_free(m);
    wl_json_free(doc);
}

/* stories260K greedy decoding: prefill the prompt, then one token at a time from the KV cache. */
static void greedy_case(void) {
    wl_json_doc *doc = wl_golden_json(wl_repo_path("tests/ref/golden"), "stories260K_greedy.json");
    wl_test_file mf = {NULL, 0};
    mf.data = wl_test_read_file(wl_shared_path("models/stories260K/stories260K.bin"), &mf.len);
    wl_model *m = NULL;
    if (mf.data) CHECK_OK(wl_model_load_llama2c(mf.data, mf.len, &m));
    if (!doc || !m) goto done;
    const wl_json *cases = wl_json_get(wl_json_root(doc), "cases");
    const int V = wl_model_config(m)->vocab_size;
    CHECK_OK(wl_model_reserve(m, 1, 256, WL_RESERVE_LAST_LOGITS));
    CHECK(cases && cases->n > 0);
    for (size_t c = 0; cases && c < cases->n; c++) {
        const wl_json *pr = wl_json_get(&cases->items[c], "prompt_ids");
        const wl_json *gen = wl_json_get(&cases->items[c], "generated_ids");
        int32_t ids[256];
        int n = 0;
        for (size_t i = 0; i < pr->n; i++) ids[n++] = (int32_t)pr->items[i].integer;
        int matched = 0;
        CHECK_OK(wl_model_forward(m, ids, NULL, 1, n, 0, WL_FORWARD_LAST_LOGITS, -100, NULL));
        for (size_t step = 0; step < gen->n; step++) {
            const float *lg = wl_model_logits(m);
            int best = 0;
            for (int v = 1; v < V; v++) best = lg[v] > lg[best] ? v : best;
            if (best != (int)gen->items[step].integer) break;
            matched++;
            ids[n] = best;
            if (step + 1 < gen->n) CHECK_OK(wl_model_forward(m, ids + n, NULL, 1, 1, n, 0, -100, NULL));
            n++;
        }
        CHECK_MSG(matched == (int)gen->n, "greedy prompt %zu: matched %d of %zu tokens", c, matched, gen->n);
        printf("  greedy prompt %zu: %d/%zu tokens match\n", c, matched, gen->n);
    }
done:
    wl_model_free(m);
    free(mf.data);
    wl_json_free(doc);
}

int main(void) {
    const char *tables[3] = {"scalar", "wasmsimd", "wasmrelaxed"};
    for (int t = 0; t < 3; t++) {
        const wl_kernels *k = wl_kernels_by_name(tables[t]);
        if (!k) continue;
        printf("kernels %s\n", tables[t]);
        wl_kernels_set_default(k);
        for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) run_case(CASES[i]);
        greedy_case();
    }
    return wl_test_summary("test_golden");
}
