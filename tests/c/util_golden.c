/* util_golden.c: the helpers declared in golden.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "testutil.h"

wl_test_file wl_test_read_in(const char *dir, const char *name) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    wl_test_file f = {NULL, 0};
    f.data = wl_test_read_file(path, &f.len);
    return f;
}

const char *wl_golden_dir(const char *name) {
    static char slots[4][2048];
    static int next = 0;
    char *out = slots[next++ & 3];
    snprintf(out, sizeof slots[0], "%s/%s", wl_repo_path("tests/ref/golden"), name);
    return out;
}

wl_json_doc *wl_golden_json(const char *dir, const char *name) {
    wl_test_file f = wl_test_read_in(dir, name);
    wl_json_doc *doc = NULL;
    if (f.data) CHECK_OK(wl_json_parse((const char *)f.data, f.len, &doc));
    free(f.data);
    return doc;
}

double wl_json_num(const wl_json *o, const char *key, double fallback) {
    const wl_json *v = wl_json_get(o, key);
    return v && v->type == WL_JSON_NUMBER ? v->number : fallback;
}

static int exists(const char *dir, const char *name) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    return fp != NULL;
}

/* config.json plus one model.safetensors, or the shards a model.safetensors.index.json names (in first-use order). */
static wl_model *load_hf_folder(const char *dir) {
    enum { MAX_SHARDS = 16 };
    const char *names[MAX_SHARDS];
    int n = 0;
    wl_json_doc *index = NULL;
    if (exists(dir, "model.safetensors.index.json")) {
        index = wl_golden_json(dir, "model.safetensors.index.json");
        const wl_json *map = index ? wl_json_get(wl_json_root(index), "weight_map") : NULL;
        CHECK_MSG(map && map->type == WL_JSON_OBJECT && map->n > 0, "%s: index without a weight_map", dir);
        for (size_t i = 0; map && i < map->n; i++) {
            const char *file = map->items[i].str;
            int seen = 0;
            for (int j = 0; j < n; j++) seen |= strcmp(names[j], file) == 0;
            if (!seen && n < MAX_SHARDS) names[n++] = file;
        }
    } else {
        names[n++] = "model.safetensors";
    }
    wl_test_file cfg = wl_test_read_in(dir, "config.json");
    wl_test_file files[MAX_SHARDS];
    wl_buffer shards[MAX_SHARDS];
    int ok = cfg.data != NULL;
    for (int i = 0; i < n; i++) {
        files[i] = wl_test_read_in(dir, names[i]);
        shards[i] = (wl_buffer){files[i].data, files[i].len};
        ok &= files[i].data != NULL;
    }
    wl_model *m = NULL;
    if (ok) CHECK_OK(wl_model_load_hf((const char *)cfg.data, cfg.len, shards, n, &m));
    for (int i = 0; i < n; i++) free(files[i].data);
    free(cfg.data);
    wl_json_free(index);
    return m;
}

wl_model *wl_golden_model(const char *dir, const wl_json *cs) {
    const wl_json *ref = wl_json_get(cs, "model_ref");
    char where[1024];
    snprintf(where, sizeof where, "%s", ref && ref->type == WL_JSON_STRING ? wl_shared_path(ref->str) : dir);
    const int llama2c = exists(dir, "model.bin") || strstr(where, ".bin") != NULL;
    if (!llama2c) return load_hf_folder(where);
    wl_test_file f = exists(dir, "model.bin") ? wl_test_read_in(dir, "model.bin") : (wl_test_file){NULL, 0};
    if (!f.data) f.data = wl_test_read_file(where, &f.len);
    wl_model *m = NULL;
    if (f.data) CHECK_OK(wl_model_load_llama2c(f.data, f.len, &m));
    free(f.data);
    return m;
}

const float *wl_st_f32(const wl_safetensors *st, const uint8_t *buf, const char *name, size_t *numel) {
    if (numel) *numel = 0;
    int i = st ? wl_st_find(st, name) : -1;
    if (i < 0 || st->tensors[i].dtype != WL_DTYPE_F32) return NULL;
    if (numel) *numel = st->tensors[i].numel;
    return (const float *)(const void *)(buf + st->data_start + st->tensors[i].begin);
}

const int32_t *wl_st_i32(const wl_safetensors *st, const uint8_t *buf, const char *name) {
    int i = st ? wl_st_find(st, name) : -1;
    if (i < 0 || st->tensors[i].dtype != WL_DTYPE_I32) return NULL;
    return (const int32_t *)(const void *)(buf + st->data_start + st->tensors[i].begin);
}

int wl_golden_find_module(const wl_model *m, const char *path, int *layer, int *slot) {
    char buf[256];
    for (int s = WL_LORA_EMBED; s <= WL_LORA_HEAD; s++) {
        wl_model_module_path(m, WL_LORA_MODEL_LAYER, s, buf, sizeof buf);
        if (strcmp(buf, path) == 0) {
            *layer = WL_LORA_MODEL_LAYER;
            *slot = s;
            return 1;
        }
    }
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

void wl_golden_peft_key(char *key, size_t cap, const char *prefix, const char *path, int layer, int slot, char which) {
    if (layer == WL_LORA_MODEL_LAYER && slot == WL_LORA_EMBED) {
        snprintf(key, cap, "%sbase_model.model.%s.lora_embedding_%c", prefix, path, which);
    } else {
        snprintf(key, cap, "%sbase_model.model.%s.lora_%c.weight", prefix, path, which);
    }
}

/* Hugging Face lora_B rows (h, c * hs/2 + i) -> llama2.c's interleaved (h, 2 i + c), the inverse of the permutation
 * HF's checkpoint converter applies to wq / wk (see ../shared/docs/DESIGN.md). */
static void rows_to_interleaved(float *dst, const float *src, int heads, int hs, int r) {
    const int half = hs / 2;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < half; i++)
            for (int c = 0; c < 2; c++)
                memcpy(dst + (size_t)(h * hs + 2 * i + c) * r, src + (size_t)(h * hs + c * half + i) * r, (size_t)r * sizeof(float));
}

wl_adapter *wl_golden_adapter(wl_model *m, const char *dir, const wl_json *mods, int use_rslora) {
    CHECK_MSG(mods && mods->type == WL_JSON_ARRAY && mods->n > 0, "%s: no lora_modules", dir);
    if (!mods || mods->type != WL_JSON_ARRAY || mods->n == 0) return NULL;
    const wl_config *c = wl_model_config(m);
    const int L = c->n_layers, S = wl_model_n_slots(m);
    int *ranks = calloc((size_t)L * S, sizeof(int));
    float *alphas = calloc((size_t)L * S, sizeof(float));
    int model_ranks[2] = {0, 0};
    float model_alphas[2] = {0.0f, 0.0f};
    for (size_t i = 0; i < mods->n; i++) {
        const wl_json *path = wl_json_get(&mods->items[i], "path");
        int l, s;
        int found = path && path->type == WL_JSON_STRING && wl_golden_find_module(m, path->str, &l, &s);
        CHECK_MSG(found, "%s: module %s not in the model", dir, path && path->str ? path->str : "?");
        if (!found) continue;
        const int r = (int)wl_json_num(&mods->items[i], "r", 0);
        const float alpha = (float)wl_json_num(&mods->items[i], "alpha", 0);
        if (l == WL_LORA_MODEL_LAYER) {
            model_ranks[s] = r;
            model_alphas[s] = alpha;
        } else {
            ranks[l * S + s] = r;
            alphas[l * S + s] = alpha;
        }
    }
    wl_lora_spec spec = {ranks, alphas, use_rslora, 0, model_ranks[WL_LORA_EMBED], model_alphas[WL_LORA_EMBED],
                         model_ranks[WL_LORA_HEAD], model_alphas[WL_LORA_HEAD]};
    wl_adapter *a = NULL;
    CHECK_OK(wl_adapter_create(m, &spec, &a));
    free(ranks);
    free(alphas);
    wl_test_file f = wl_test_read_in(dir, "adapter_model.safetensors");
    wl_safetensors *st = NULL;
    if (f.data) CHECK_OK(wl_st_parse(f.data, f.len, &st));
    if (!a || !st) {
        wl_adapter_free(a);
        wl_st_free(st);
        free(f.data);
        return NULL;
    }
    float *tmp = NULL;
    for (size_t i = 0; i < mods->n; i++) {
        const wl_json *md = &mods->items[i], *pj = wl_json_get(md, "path");
        int l, s;
        if (!pj || pj->type != WL_JSON_STRING || !wl_golden_find_module(m, pj->str, &l, &s)) continue;
        const char *path = pj->str;
        wl_lora_module mod;
        wl_adapter_module(a, wl_adapter_find(a, l, s), &mod);
        /* The core's scale against PyTorch's (float64): one float32 division or square root, so within 2 ulp. */
        const double want = wl_json_num(md, "scaling", NAN);
        CHECK_MSG(fabs(mod.scale - want) <= 2.4e-7 * fabs(want), "%s: scale %.9g, PyTorch + PEFT give %.9g", path,
                  (double)mod.scale, want);
        char key[512];
        size_t n;
        wl_golden_peft_key(key, sizeof key, "", path, l, s, 'A');
        const float *A = wl_st_f32(st, f.data, key, &n);
        CHECK_MSG(A && n == (size_t)mod.rank * mod.in_features, "%s missing or of the wrong size", key);
        if (A && n == (size_t)mod.rank * mod.in_features) memcpy(mod.A, A, n * sizeof(float));
        wl_golden_peft_key(key, sizeof key, "", path, l, s, 'B');
        const float *B = wl_st_f32(st, f.data, key, &n);
        CHECK_MSG(B && n == (size_t)mod.rank * mod.out_features, "%s missing or of the wrong size", key);
        if (!B || n != (size_t)mod.rank * mod.out_features) continue;
        const int heads = s == WL_LLAMA_Q ? c->n_heads : s == WL_LLAMA_K ? c->n_kv_heads : 0;
        if (c->arch == WL_ARCH_LLAMA && c->rope_layout == WL_ROPE_INTERLEAVED && heads) {
            tmp = realloc(tmp, n * sizeof(float));
            rows_to_interleaved(tmp, B, heads, c->head_dim, mod.rank);
            B = tmp;
        }
        memcpy(mod.B, B, n * sizeof(float));
    }
    free(tmp);
    wl_st_free(st);
    free(f.data);
    return a;
}
