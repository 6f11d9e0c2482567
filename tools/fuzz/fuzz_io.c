/* fuzz_io.c: libFuzzer targets for the parsers over untrusted bytes: 0 safetensors (whole file), 1 safetensors
 * (header only, with the streaming loader's checks of it against a config), 2 JSON, 3 config.json, 4 llama2.c.
 * Built once per parser with -DWL_FUZZ_TARGET=<n> (the input is the data); without it the first input byte picks
 * the parser. Build and run with tools/fuzz/run.sh (clang, -fsanitize=fuzzer,address,undefined). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "wl_io.h"

static wl_model *g_llama, *g_gpt2;

/* Headers with more tensors than this are parsed but not planned (the fuzz models have fewer than 64 tensors). */
#define WL_ST_MAX_TENSORS_FUZZ 256

/* A status must come with a message; anything else is a bug worth stopping for. */
static void expect_message(wl_status st) {
    if (st != WL_OK && wl_last_error()[0] == '\0') {
        fprintf(stderr, "status %d without a message\n", (int)st);
        abort();
    }
}

static void fuzz_safetensors(const uint8_t *data, size_t size, int header_only) {
    wl_safetensors *st = NULL;
    wl_clear_error();
    wl_status s = header_only ? wl_st_parse_header(data, size, (uint64_t)size + (size & 0xff), &st)
                              : wl_st_parse(data, size, &st);
    expect_message(s);
    if (s != WL_OK) return;
    uint64_t covered = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const wl_st_tensor *t = &st->tensors[i];
        if (t->end - t->begin != t->numel * wl_dtype_size(t->dtype) || st->data_start + t->end > st->file_size) abort();
        if (wl_st_find(st, t->name) != i) abort();
        covered += t->end - t->begin;
        if (header_only) continue;
        float tmp[16];
        for (uint64_t k = 0; k < t->numel; k += 16) {
            size_t n = t->numel - k < 16 ? (size_t)(t->numel - k) : 16;
            wl_convert_to_f32(tmp, data + st->data_start + t->begin + k * wl_dtype_size(t->dtype), t->dtype, n);
        }
    }
    if (covered != st->file_size - st->data_start) abort();
    if (header_only) {
        /* The streaming loader's checks on a header (web/formats/loader.js): against each config before allocating,
         * then the plan on the model, which must then succeed, fill model tensors with exactly their element counts
         * and skip only buffers no larger than their config's (so the bytes a loader fetches stay within what the
         * config implies). */
        wl_model *models[2] = {g_llama, g_gpt2};
        for (int m = 0; m < 2; m++) {
            const wl_safetensors *shards[1] = {st};
            wl_clear_error();
            wl_status checked = wl_config_check_shards(wl_model_config(models[m]), shards, 1);
            expect_message(checked);
            if (checked != WL_OK) continue;
            uint8_t seen[256] = {0};
            int index[WL_ST_MAX_TENSORS_FUZZ];
            if (st->n_tensors > WL_ST_MAX_TENSORS_FUZZ) continue;
            wl_clear_error();
            if (wl_model_plan_shard(models[m], st, seen, index) != WL_OK) abort(); /* the check said it would plan */
            for (int i = 0; i < st->n_tensors; i++) {
                wl_tensor_info info;
                if (index[i] >= 0 && (wl_model_tensor(models[m], index[i], &info) != WL_OK || info.numel != st->tensors[i].numel))
                    abort();
                if (index[i] < 0 && st->tensors[i].numel > 64) abort(); /* the fuzz configs' largest buffer: V * C = 48 */
            }
        }
    } else {
        wl_model *models[2] = {g_llama, g_gpt2};
        for (int m = 0; m < 2; m++) {
            uint8_t seen[256] = {0};
            wl_clear_error();
            expect_message(wl_model_fill_from_safetensors(models[m], st, data, size, seen));
        }
    }
    wl_st_free(st);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    wl_config lc = {WL_ARCH_LLAMA, 8, 12, 1, 2, 1, 4, 6, 8, 1, 1, WL_ROPE_HALF, 10000.0f, 1e-5f, -1, -1};
    wl_config gc = {WL_ARCH_GPT2, 4, 8, 1, 2, 2, 2, 5, 3, 1, 0, WL_ROPE_HALF, 10000.0f, 1e-5f, -1, -1};
    if (wl_model_create(&lc, &g_llama) != WL_OK || wl_model_create(&gc, &g_gpt2) != WL_OK) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#ifdef WL_FUZZ_TARGET
    int which = WL_FUZZ_TARGET;
#else
    if (size < 1) return 0;
    int which = data[0] % 5;
    data++, size--;
#endif
    /* An exact-size copy, so a read one byte past the end is caught. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    switch (which) {
    case 0: fuzz_safetensors(buf, size, 0); break;
    case 1: fuzz_safetensors(buf, size, 1); break;
    case 2: {
        wl_json_doc *doc = NULL;
        wl_clear_error();
        expect_message(wl_json_parse((const char *)buf, size, &doc));
        wl_json_free(doc);
        break;
    }
    case 3: {
        wl_config c;
        wl_clear_error();
        wl_status s = wl_config_from_hf_json((const char *)buf, size, &c);
        expect_message(s);
        if (s == WL_OK && wl_config_validate(&c) != WL_OK) abort();
        break;
    }
    default: {
        wl_config c;
        wl_model *m = NULL;
        wl_clear_error();
        wl_status s1 = wl_config_from_llama2c(buf, size, &c);
        expect_message(s1);
        wl_clear_error();
        wl_status s2 = wl_model_load_llama2c(buf, size, &m);
        expect_message(s2);
        if ((s1 == WL_OK) != (s2 == WL_OK) && s2 != WL_STATUS_OUT_OF_MEMORY) abort();
        wl_model_free(m);
        break;
    }
    }
    free(buf);
    return 0;
}
