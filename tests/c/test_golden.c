/* test_golden.c: the whole model (logits, loss, every LoRA gradient and, where recorded, every full-parameter
 * gradient) against the PyTorch reference in tests/ref/golden, for every case folder; and stories260K greedy
 * decoding with the KV cache token for token. Runs once per kernel table built here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "kernels/kernels.h"
#include "testutil.h"
#include "weblora.h"

static const char *CASES[] = {"llama_gqa_qv",  "llama_all_rslora", "llama_qwen_bias", "llama_head_dim",
                              "llama2c_interleaved", "gpt2_attn", "gpt2_mlp", "stories260K",
                              "tiny_random_llama", "tiny_gpt2"};

typedef struct file {
    uint8_t *data;
    size_t len;
} file;

static file read_rel(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    file f = {NULL, 0};
    f.data = wl_test_read_file(path, &f.len);
    return f;
}

static int exists(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    return fp != NULL;
}

static const float *st_f32(const wl_safetensors *st, const uint8_t *buf, const char *name, size_t *numel) {
    if (numel) *numel = 0;
    int i = wl_st_find(st, name);
    if (i < 0 || st->tensors[i].dtype != WL_DTYPE_F32) return NULL;
    if (numel) *numel = st->tensors[i].numel;
    return (const float *)(const void *)(buf + st->data_start + st->tensors[i].begin);
}

static const int32_t *st_i32(const wl_safetensors *st, const uint8_t *buf, const char *name) {
    int i = wl_st_find(st, name);
    if (i < 0 || st->tensors[i].dtype != WL_DTYPE_I32) return NULL;
    return (const int32_t *)(const void *)(buf + st->data_start + st->tensors[i].begin);
}

static double num(const wl_json *o, const char *key, double fallback) {
    const wl_json *v = wl_json_get(o, key);
    return v && v->type == WL_JSON_NUMBER ? v->number : fallback;
}

/* Load the case's base model from its folder or from ../shared. */
static wl_model *load_model(const char *dir, const wl_json *cs) {
    wl_model *m = NULL;
    const wl_json *ref = wl_json_get(cs, "model_ref");
    char shared_dir[1024] = {0};
    if (ref && ref->type == WL_JSON_STRING) snprintf(shared_dir, sizeof shared_dir, "%s", wl_shared_path(ref->str));
    if (exists(dir, "model.bin") || (shared_dir[0] && strstr(shared_dir, ".bin"))) {
        file f = exists(dir, "model.bin") ? read_rel(dir, "model.bin") : (file){0};
        if (!f.data) f.data = wl_test_read_file(shared_dir, &f.len);
        if (!f.data) return NULL;
        CHECK_OK(wl_model_load_llama2c(f.data, f.len, &m));
        free(f.data);
        return m;
    }
    const char *mdir = shared_dir[0] ? shared_dir : dir;
    file cfg = read_rel(mdir, "config.json"), w = read_rel(mdir, "model.safetensors");
    if (cfg.data && w.data) {
        wl_buffer shard = {w.data, w.len};
        CHECK_OK(wl_model_load_hf((const char *)cfg.data, cfg.len, &shard, 1, &m));
    }
    free(cfg.data);
    free(w.data);
    return m;
}

/* Find (layer, slot) of a module path. */
static int find_module(const wl_model *m, const char *path, int *layer, int *slot) {
    char buf[256];
    for (int l = 0; l < wl_model_config(m)->n_layers; l++) {
        for (int s = 0; s < wl_model_n_slots(m); s++) {
            wl_model_module_path(m, l, s, buf, sizeof buf);
            if (strcmp(buf, path) == 0) {
                *layer = l;
                *slot = s;
                return 1;
            }
        }
    }
    return 0;
}

/* Build the adapter from case.json's resolved module list and fill it from the PEFT file. */
static wl_adapter *load_adapter(wl_model *m, const char *dir, const wl_json *cs) {
    const wl_json *mods = wl_json_get(cs, "lora_modules");
    if (!mods || mods->type != WL_JSON_ARRAY || mods->n == 0) return NULL;
    const int L = wl_model_config(m)->n_layers, S = wl_model_n_slots(m);
    int *ranks = calloc((size_t)L * S, sizeof(int));
    float *alphas = calloc((size_t)L * S, sizeof(float));
    for (size_t i = 0; i < mods->n; i++) {
        const wl_json *md = &mods->items[i];
        int l, s;
        const wl_json *path = wl_json_get(md, "path");
        CHECK_MSG(path && find_module(m, path->str, &l, &s), "module %s not found", path ? path->str : "?");
        if (!path || !find_module(m, path->str, &l, &s)) continue;
        ranks[l * S + s] = (int)num(md, "r", 0);
        alphas[l * S + s] = (float)num(md, "alpha", 0);
    }
    wl_lora_spec spec = {ranks, alphas, 0};
    wl_adapter *a = NULL;
    CHECK_OK(wl_adapter_create(m, &spec, &a));
    free(ranks);
    free(alphas);
    if (!a) return NULL;
    file f = read_rel(dir, "adapter_model.safetensors");
    wl_safetensors *st = NULL;
    CHECK_OK(wl_st_parse(f.data, f.len, &st));
    for (size_t i = 0; st && i < mods->n; i++) {
        const wl_json *md = &mods->items[i];
        int l, s;
        if (!find_module(m, wl_json_get(md, "path")->str, &l, &s)) continue;
        int idx = wl_adapter_find(a, l, s);
        wl_lora_module mod;
        wl_adapter_module(a, idx, &mod);
        CHECK_OK(wl_adapter_set_scale(a, idx, (float)num(md, "scaling", 0)));
        char key[512];
        size_t n;
        snprintf(key, sizeof key, "base_model.model.%s.lora_A.weight", wl_json_get(md, "path")->str);
        const float *A = st_f32(st, f.data, key, &n);
        CHECK_MSG(A && n == (size_t)mod.rank * mod.in_features, "%s missing or wrong size", key);
        if (A) memcpy(mod.A, A, n * sizeof(float));
        snprintf(key, sizeof key, "base_model.model.%s.lora_B.weight", wl_json_get(md, "path")->str);
        const float *B = st_f32(st, f.data, key, &n);
        CHECK_MSG(B && n == (size_t)mod.rank * mod.out_features, "%s missing or wrong size", key);
        if (B) memcpy(mod.B, B, n * sizeof(float));
    }
    wl_st_free(st);
    free(f.data);
    return a;
}

static void tol(const wl_json *cs, const char *what, float *atol, float *rtol) {
    const wl_json *t = wl_json_get(wl_json_get(cs, "tolerance"), what);
    *atol = (float)num(t, "atol", 1e-5);
    *rtol = (float)num(t, "rtol", 1e-5);
}

static void run_case(const char *name) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", wl_repo_path("tests/ref/golden"));
    strncat(dir, "/", sizeof dir - strlen(dir) - 1);
    strncat(dir, name, sizeof dir - strlen(dir) - 1);
    file cj = read_rel(dir, "case.json");
    wl_json_doc *doc = NULL;
    CHECK_OK(wl_json_parse((const char *)cj.data, cj.len, &doc));
    if (!doc) return;
    const wl_json *cs = wl_json_root(doc);
    wl_model *m = load_model(dir, cs);
    CHECK_MSG(m != NULL, "case %s: model did not load", name);
    file io = read_rel(dir, "io.safetensors");
    wl_safetensors *st = NULL;
    CHECK_OK(wl_st_parse(io.data, io.len, &st));
    if (!m || !st) goto done;
    const int B = (int)num(cs, "B", 1), T = (int)num(cs, "T", 1), V = wl_model_config(m)->vocab_size;
    const int full = wl_json_get(cs, "full") && wl_json_get(cs, "full")->boolean;
    CHECK_OK(wl_model_reserve(m, B, T, WL_RESERVE_TRAIN));
    wl_adapter *a = load_adapter(m, dir, cs);
    if (a) {
        CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
        CHECK_OK(wl_model_set_trainable(m, a));
    }
    if (full) CHECK_OK(wl_model_set_full_training(m, 1));
    const int32_t *tokens = st_i32(st, io.data, "tokens");
    const int32_t *targets = st_i32(st, io.data, "targets");
    CHECK(tokens != NULL);
    int train = targets && (a || full);
    float loss = NAN;
    CHECK_OK(wl_model_forward(m, tokens, targets, B, T, 0, train ? WL_FORWARD_TRAIN : 0, -100, &loss));
    printf(" case %s\n", name);
    float atol, rtol;
    char what[600];
    size_t n = 0;
    tol(cs, "logits", &atol, &rtol);
    const float *want_logits = st_f32(st, io.data, "logits", &n);
    CHECK(want_logits && n == (size_t)B * T * V);
    if (want_logits) wl_test_close("logits", wl_model_logits(m), want_logits, n, atol, rtol);
    const float *want_loss = st_f32(st, io.data, "loss", NULL);
    if (want_loss && targets) {
        tol(cs, "loss", &atol, &rtol);
        wl_test_close("loss", &loss, want_loss, 1, atol, rtol);
    }
    if (train) {
        CHECK_OK(wl_model_backward(m));
        tol(cs, "grads", &atol, &rtol);
        char path[256];
        for (int i = 0; a && i < wl_adapter_n_modules(a); i++) {
            wl_lora_module mod;
            wl_adapter_module(a, i, &mod);
            wl_model_module_path(m, mod.layer, mod.slot, path, sizeof path);
            for (int which = 0; which < 2; which++) {
                snprintf(what, sizeof what, "grad.base_model.model.%s.lora_%c.weight", path, which ? 'B' : 'A');
                const float *want = st_f32(st, io.data, what, &n);
                const float *got = which ? mod.dB : mod.dA;
                size_t expect = (size_t)mod.rank * (which ? mod.out_features : mod.in_features);
                CHECK_MSG(want && n == expect, "%s missing", what);
                if (want) wl_test_close(what + 22, got, want, n, atol, rtol);
            }
        }
        float full_atol, full_rtol;
        tol(cs, "fullgrads", &full_atol, &full_rtol);
        for (int i = 0; full && i < wl_model_n_tensors(m); i++) {
            wl_tensor_info t;
            wl_model_tensor(m, i, &t);
            snprintf(what, sizeof what, "fullgrad.%s", t.name);
            const float *want = st_f32(st, io.data, what, &n);
            CHECK_MSG(want && n == t.numel, "%s missing", what);
            if (!want) continue;
            float *got = t.grad;
            float *tmp = NULL;
            if (t.transposed) { /* files hold (in, out); memory (out, in) */
                tmp = malloc(n * sizeof(float));
                const size_t in = (size_t)t.shape[0], out = (size_t)t.shape[1];
                for (size_t o = 0; o < out; o++)
                    for (size_t k = 0; k < in; k++) tmp[k * out + o] = t.grad[o * in + k];
                got = tmp;
            }
            wl_test_close(what, got, want, n, full_atol, full_rtol);
            free(tmp);
        }
    }
    if (a) CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
done:
    wl_st_free(st);
    free(io.data);
    wl_model_free(m);
    wl_json_free(doc);
    free(cj.data);
}

/* stories260K greedy decoding: prefill the prompt, then one token at a time from the KV cache. */
static void greedy_case(void) {
    file gj = read_rel(wl_repo_path("tests/ref/golden"), "stories260K_greedy.json");
    wl_json_doc *doc = NULL;
    CHECK_OK(wl_json_parse((const char *)gj.data, gj.len, &doc));
    file mf = {NULL, 0};
    mf.data = wl_test_read_file(wl_shared_path("models/stories260K/stories260K.bin"), &mf.len);
    wl_model *m = NULL;
    if (mf.data) CHECK_OK(wl_model_load_llama2c(mf.data, mf.len, &m));
    if (!doc || !m) goto done;
    const wl_json *cases = wl_json_get(wl_json_root(doc), "cases");
    const int V = wl_model_config(m)->vocab_size;
    CHECK_OK(wl_model_reserve(m, 1, 256, WL_RESERVE_LAST_LOGITS));
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
    free(gj.data);
}

int main(void) {
    const char *tables[2] = {"scalar", "wasmsimd"};
    for (int t = 0; t < 2; t++) {
        const wl_kernels *k = wl_kernels_by_name(tables[t]);
        if (!k) continue;
        printf("kernels %s\n", tables[t]);
        wl_kernels_set_default(k);
        for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) run_case(CASES[i]);
        greedy_case();
    }
    return wl_test_summary("test_golden");
}
