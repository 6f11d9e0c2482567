/* golden.h: reading the PyTorch reference cases of tests/ref/golden in the C tests: a case's model (its own
 * files, a sharded index, or a file in ../shared), its PEFT adapter and tensors of its safetensors files.
 * Every missing file or malformed entry counts as a failed check naming it. */
#ifndef WL_TEST_GOLDEN_H
#define WL_TEST_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include "io/json.h"
#include "weblora.h"

typedef struct wl_test_file {
    uint8_t *data;
    size_t len;
} wl_test_file;

/* dir "/" name, read whole (data NULL on failure, which counted as a failed check). Caller frees data. */
wl_test_file wl_test_read_in(const char *dir, const char *name);
/* Path of golden case folder `name` (static buffer, rotating like wl_repo_path). */
const char *wl_golden_dir(const char *name);

/* A parsed JSON file of a case folder; NULL on failure. Free with wl_json_free. */
wl_json_doc *wl_golden_json(const char *dir, const char *name);
/* Number member of an object, or fallback. */
double wl_json_num(const wl_json *o, const char *key, double fallback);

/* The case's base model: model.bin, config.json with model.safetensors or a model.safetensors.index.json and its
 * shards, or case.json "model_ref" (a llama2.c file or an HF folder in ../shared). NULL on failure. */
wl_model *wl_golden_model(const char *dir, const wl_json *case_json);

/* (layer, slot) of a module path such as "model.layers.1.mlp.down_proj"; 0 if the model has none. */
/* PEFT's key of a module's factor which ('A' or 'B'): lora_embedding_A / _B for the token embedding. */
void wl_golden_peft_key(char *key, size_t cap, const char *prefix, const char *path, int layer, int slot, char which);
int wl_golden_find_module(const wl_model *m, const char *path, int *layer, int *slot);

/* An adapter for m from the module list PyTorch resolved (case.json "lora_modules": path, r, alpha, scaling),
 * use_rslora, and the PEFT file dir/adapter_model.safetensors. The scales come from the core's own computation
 * (alpha / r or alpha / sqrt(r)) and are checked against PyTorch's "scaling". PEFT files hold Hugging Face row
 * order; for a llama2.c model the q_proj / k_proj lora_B rows are put back in interleaved RoPE order. */
wl_adapter *wl_golden_adapter(wl_model *m, const char *dir, const wl_json *modules, int use_rslora);

/* An F32 / I32 tensor of a parsed safetensors buffer, or NULL (wrong dtype or absent); numel may be NULL. */
const float *wl_st_f32(const wl_safetensors *st, const uint8_t *buf, const char *name, size_t *numel);
const int32_t *wl_st_i32(const wl_safetensors *st, const uint8_t *buf, const char *name);

#endif
