/* abi.c: the C/JS boundary described by the module itself. wl_abi() returns one JSON text with everything
 * JavaScript must agree on with the headers: status names, enum values, the layouts of the structs it reads and
 * writes (offsets and sizes as this compiler laid them out for wasm32), the LoRA module slots of each architecture
 * and the parsers' limits. tools/abi.js turns it into web/core/abi.js at build time; web/core/core.js checks at start-up that
 * the module it loaded describes itself exactly so, and tests/js/abi.test.js checks the description against the
 * structs' sizes (so a field the description misses is caught). */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "weblora.h"
#include "wl_svd.h"

#define EXPORT(name) __attribute__((export_name(#name), used))

typedef struct text {
    char buf[8192];
    size_t len;
    int overflow;
} text;

static void put(text *t, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, args);
    va_end(args);
    if (n < 0 || (size_t)n >= sizeof t->buf - t->len) t->overflow = 1;
    else t->len += (size_t)n;
}

/* Ends a list or object: drops the comma after its last item and appends closer. */
static void close_list(text *t, const char *closer) {
    if (t->len && t->buf[t->len - 1] == ',') t->len--;
    put(t, "%s", closer);
}

/* A struct: its size and [name, offset, type, count] per field. Types: i32, u32 (size_t), f32, f64, i64, ptr,
 * str (a const char * to a NUL-terminated string). */
#define STRUCT_BEGIN(t, S) put(t, "\"" #S "\":{\"size\":%zu,\"fields\":[", sizeof(S))
#define FIELD(t, S, f, type) \
    put(t, "[\"" #f "\",%zu,\"" #type "\",%zu],", offsetof(S, f), sizeof(((S *)0)->f) / sizeof_##type)
#define STRUCT_END(t) close_list(t, "]},")
enum { sizeof_i32 = 4, sizeof_u32 = 4, sizeof_f32 = 4, sizeof_f64 = 8, sizeof_i64 = 8, sizeof_ptr = 4, sizeof_str = 4 };

static void describe_structs(text *t) {
    put(t, "\"structs\":{");
    STRUCT_BEGIN(t, wl_config);
    FIELD(t, wl_config, arch, i32);
    FIELD(t, wl_config, dim, i32);
    FIELD(t, wl_config, hidden_dim, i32);
    FIELD(t, wl_config, n_layers, i32);
    FIELD(t, wl_config, n_heads, i32);
    FIELD(t, wl_config, n_kv_heads, i32);
    FIELD(t, wl_config, head_dim, i32);
    FIELD(t, wl_config, vocab_size, i32);
    FIELD(t, wl_config, max_seq_len, i32);
    FIELD(t, wl_config, tied_embeddings, i32);
    FIELD(t, wl_config, qkv_bias, i32);
    FIELD(t, wl_config, rope_layout, i32);
    FIELD(t, wl_config, rope_theta, f32);
    FIELD(t, wl_config, norm_eps, f32);
    FIELD(t, wl_config, bos_id, i32);
    FIELD(t, wl_config, eos_id, i32);
    STRUCT_END(t);
    STRUCT_BEGIN(t, wl_tensor_info);
    FIELD(t, wl_tensor_info, name, str);
    FIELD(t, wl_tensor_info, data, ptr);
    FIELD(t, wl_tensor_info, grad, ptr);
    FIELD(t, wl_tensor_info, ndim, i32);
    FIELD(t, wl_tensor_info, shape, i64);
    FIELD(t, wl_tensor_info, transposed, i32);
    FIELD(t, wl_tensor_info, numel, u32);
    FIELD(t, wl_tensor_info, layer, i32);
    FIELD(t, wl_tensor_info, decay, i32);
    FIELD(t, wl_tensor_info, storage, i32);
    STRUCT_END(t);
    STRUCT_BEGIN(t, wl_module_info);
    FIELD(t, wl_module_info, name, str);
    FIELD(t, wl_module_info, in_features, i32);
    FIELD(t, wl_module_info, out_features, i32);
    FIELD(t, wl_module_info, has_bias, i32);
    FIELD(t, wl_module_info, conv1d, i32);
    STRUCT_END(t);
    STRUCT_BEGIN(t, wl_lora_module);
    FIELD(t, wl_lora_module, layer, i32);
    FIELD(t, wl_lora_module, slot, i32);
    FIELD(t, wl_lora_module, rank, i32);
    FIELD(t, wl_lora_module, in_features, i32);
    FIELD(t, wl_lora_module, out_features, i32);
    FIELD(t, wl_lora_module, scale, f32);
    FIELD(t, wl_lora_module, alpha, f32);
    FIELD(t, wl_lora_module, A, ptr);
    FIELD(t, wl_lora_module, B, ptr);
    FIELD(t, wl_lora_module, dA, ptr);
    FIELD(t, wl_lora_module, dB, ptr);
    FIELD(t, wl_lora_module, magnitude, ptr);
    FIELD(t, wl_lora_module, dmagnitude, ptr);
    FIELD(t, wl_lora_module, row_blocks, i32);
    FIELD(t, wl_lora_module, block_mask, i32);
    STRUCT_END(t);
    STRUCT_BEGIN(t, wl_llama2c_part);
    FIELD(t, wl_llama2c_part, tensor, i32);
    FIELD(t, wl_llama2c_part, offset, f64);
    FIELD(t, wl_llama2c_part, numel, f64);
    STRUCT_END(t);
    close_list(t, "},");
}

#define ENUM_VALUE(t, key, value) put(t, "\"%s\":%d,", key, (int)(value))

static void describe_enums(text *t) {
    put(t, "\"status\":[");
    /* Statuses are numbered from 0 without gaps; wl_status_name knows every one. */
    for (int s = 0; strcmp(wl_status_name((wl_status)s), "unknown") != 0; s++) {
        put(t, "\"");
        for (const char *c = wl_status_name((wl_status)s); *c; c++) put(t, "%c", *c >= 'a' && *c <= 'z' ? *c - 32 : *c);
        put(t, "\",");
    }
    close_list(t, "],\"dtype\":{");
    for (int d = 0; d < WL_DTYPE_COUNT; d++) ENUM_VALUE(t, wl_dtype_name(d), d);
    close_list(t, "},\"dtypeSize\":[");
    for (int d = 0; d < WL_DTYPE_COUNT; d++) put(t, "%zu,", wl_dtype_size(d));
    close_list(t, "],\"arch\":{");
    ENUM_VALUE(t, "LLAMA", WL_ARCH_LLAMA);
    ENUM_VALUE(t, "GPT2", WL_ARCH_GPT2);
    close_list(t, "},\"ropeLayout\":{");
    ENUM_VALUE(t, "HALF", WL_ROPE_HALF);
    ENUM_VALUE(t, "INTERLEAVED", WL_ROPE_INTERLEAVED);
    close_list(t, "},\"storage\":{");
    ENUM_VALUE(t, "f32", WL_STORAGE_F32);
    ENUM_VALUE(t, "q8", WL_STORAGE_Q8);
    ENUM_VALUE(t, "q4", WL_STORAGE_Q4);
    close_list(t, "},\"forwardFlags\":{");
    ENUM_VALUE(t, "TRAIN", WL_FORWARD_TRAIN);
    ENUM_VALUE(t, "LAST_LOGITS", WL_FORWARD_LAST_LOGITS);
    close_list(t, "},\"reserveFlags\":{");
    ENUM_VALUE(t, "TRAIN", WL_RESERVE_TRAIN);
    ENUM_VALUE(t, "LAST_LOGITS", WL_RESERVE_LAST_LOGITS);
    ENUM_VALUE(t, "RECOMPUTE", WL_RESERVE_RECOMPUTE);
    close_list(t, "},\"loraInit\":{");
    ENUM_VALUE(t, "default", WL_LORA_INIT_DEFAULT);
    ENUM_VALUE(t, "gaussian", WL_LORA_INIT_GAUSSIAN);
    ENUM_VALUE(t, "zero", WL_LORA_INIT_ZERO);
    close_list(t, "},\"combine\":{");
    ENUM_VALUE(t, "linear", WL_COMBINE_LINEAR);
    ENUM_VALUE(t, "cat", WL_COMBINE_CAT);
    ENUM_VALUE(t, "svd", WL_COMBINE_SVD);
    close_list(t, "},\"svdMethod\":{");
    ENUM_VALUE(t, "auto", WL_SVD_AUTO);
    ENUM_VALUE(t, "exact", WL_SVD_EXACT);
    ENUM_VALUE(t, "randomized", WL_SVD_RANDOMIZED);
    close_list(t, "},");
}

/* Per architecture: where its blocks sit and its slots as [path inside a block, has_bias, conv1d]. */
static void describe_slots(text *t) {
    static const struct { const char *key; int arch; } ARCHS[] = {{"llama", WL_ARCH_LLAMA}, {"gpt2", WL_ARCH_GPT2}};
    put(t, "\"architectures\":{");
    for (size_t a = 0; a < sizeof ARCHS / sizeof ARCHS[0]; a++) {
        int n = 0;
        const wl_module_info *slots = wl_arch_slots(ARCHS[a].arch, &n);
        put(t, "\"%s\":{\"blocks\":\"%s\",\"slots\":[", ARCHS[a].key, wl_arch_block_prefix(ARCHS[a].arch));
        for (int s = 0; s < n; s++) put(t, "[\"%s\",%d,%d],", slots[s].name, slots[s].has_bias, slots[s].conv1d);
        close_list(t, "]},");
    }
    close_list(t, "},");
}

static void describe_limits(text *t) {
    put(t, "\"limits\":{\"safetensorsMaxHeader\":%llu,\"safetensorsMaxDims\":%d,\"maxSlots\":%d,\"loraModelLayer\":%d,"
           "\"loraEmbedSlot\":%d,\"loraHeadSlot\":%d}",
        (unsigned long long)WL_ST_MAX_HEADER, WL_ST_MAX_DIMS, WL_MAX_SLOTS, WL_LORA_MODEL_LAYER, WL_LORA_EMBED,
        WL_LORA_HEAD);
}

EXPORT(wl_abi) const char *wlx_abi(void) {
    static text t;
    if (t.len) return t.overflow ? "" : t.buf;
    put(&t, "{");
    describe_enums(&t);
    describe_structs(&t);
    describe_slots(&t);
    describe_limits(&t);
    put(&t, "}");
    return t.overflow ? "" : t.buf;
}
