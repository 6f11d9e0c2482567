/* seeds.c: writes the starting corpus of the fuzz targets: one folder per parser under <directory> (safetensors,
 * safetensors_header, json, config, llama2c) with valid inputs (safetensors from the C tests' fixture writer,
 * tests/c/st_fixture.h). Usage: seeds <directory>. The output is committed as tests/fuzz/corpus. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_fixture.h"
#include "wl_io.h"

static const char *const TARGET_DIRS[5] = {"safetensors", "safetensors_header", "json", "config", "llama2c"};

static int put(const char *dir, const char *name, int which, const void *data, size_t len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", dir, TARGET_DIRS[which], name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "seeds: cannot write %s\n", path);
        return 1;
    }
    fwrite(data, 1, len, f);
    return fclose(f) != 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: seeds <directory>\n");
        return 2;
    }
    const char *dir = argv[1];
    int bad = 0;

    /* safetensors: a matrix, a vector, a scalar, metadata. */
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7}, b[3] = {0.5f, 0.25f, -1}, s[1] = {42};
    wl_test_tensor t[3] = {{"model.layers.0.self_attn.q_proj.weight", a, 2, {2, 3}}, {"b", b, 1, {3}}, {"s", s, 0, {0}}};
    size_t size;
    uint8_t *st = wl_test_safetensors(t, 3, "\"format\":\"pt\"", &size);
    if (!st) return 1;
    bad |= put(dir, "st_whole", 0, st, size);
    bad |= put(dir, "st_header", 1, st, (size_t)(8 + (st[0] | st[1] << 8)));
    free(st);
    /* Non-F32 dtypes and a zero-size tensor, written by hand. */
    const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                      "\"z\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[4,4]},"
                      "\"g\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[4,8]}}";
    size_t n = strlen(hdr);
    uint8_t mixed[512] = {0};
    for (int i = 0; i < 8; i++) mixed[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(mixed + 8, hdr, n);
    bad |= put(dir, "st_mixed", 0, mixed, 8 + n + 8);

    const char *json = "[1,-2.5e3,\"a\\u00e9\\ud83d\\ude00\",{\"k\":[true,false,null]},12345678901234567890]";
    bad |= put(dir, "json", 2, json, strlen(json));
    const char *llama = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,"
                        "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                        "\"vocab_size\":100,\"rope_scaling\":null,\"eos_token_id\":[2,3]}";
    bad |= put(dir, "config_llama", 3, llama, strlen(llama));
    const char *gpt2 = "{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":8,\"n_layer\":2,\"n_head\":2,"
                       "\"vocab_size\":50,\"n_inner\":null,\"activation_function\":\"gelu_new\"}";
    bad |= put(dir, "config_gpt2", 3, gpt2, strlen(gpt2));

    /* llama2.c: dim 8, hidden 12, 1 layer, 2 heads, 1 kv head, vocab 6 (shared), seq_len 4. */
    const int32_t h[7] = {8, 12, 1, 2, 1, 6, 4};
    size_t floats = 6 * 8 + 8 + 64 + 2 * 4 * 8 + 64 + 8 + 3 * 12 * 8 + 8 + 2 * (4 * 4 / 2);
    uint8_t *l2c = calloc(28 + 4 * floats, 1);
    if (!l2c) return 1;
    memcpy(l2c, h, sizeof h);
    wl_config cfg;
    if (wl_config_from_llama2c(l2c, 28 + 4 * floats, &cfg) != WL_OK) {
        fprintf(stderr, "seeds: llama2.c seed rejected: %s\n", wl_last_error());
        bad = 1;
    }
    bad |= put(dir, "llama2c", 4, l2c, 28 + 4 * floats);
    free(l2c);
    return bad;
}
