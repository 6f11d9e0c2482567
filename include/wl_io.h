/* wl_io.h: parsers over memory buffers: safetensors, llama2.c checkpoints, Hugging Face config.json.
 *
 * Nothing here reads files: every parser takes (pointer, length), bounds-checks every read and never trusts a
 * length, offset, shape or dtype found in the data.
 *
 * safetensors format (as the reference implementation, huggingface/safetensors, defines it):
 *  1. 8 bytes: little-endian u64 N, the size of the JSON header; N <= 100,000,000.
 *  2. N bytes: a UTF-8 JSON object; each key is a tensor name mapping to {"dtype", "shape", "data_offsets"}
 *     with data_offsets [begin, end] relative to the byte after the header; the optional key "__metadata__"
 *     maps to an object of string values. The header may be padded at its end with spaces (0x20).
 *  3. The data: tensors sorted by begin cover it exactly, without holes or overlaps, and end at the end of the
 *     buffer; each tensor's byte size is numel * dtype size.
 *
 * llama2.c checkpoint (.bin, version 0, karpathy/llama2.c run.c):
 *  1. 7 little-endian int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
 *     a negative vocab_size means an unshared classifier follows the other weights.
 *  2. f32 tensors: token_embedding (V, C), rms_att (L, C), wq (L, C, C), wk (L, kv, C), wv (L, kv, C),
 *     wo (L, C, C), rms_ffn (L, C), w1 (L, I, C), w2 (L, C, I), w3 (L, I, C), rms_final (C),
 *     two legacy RoPE tables (seq_len, hs/2) each (skipped), then wcls (V, C) if unshared.
 *  3. The file ends exactly there.
 */
#ifndef WL_IO_H
#define WL_IO_H

#include <stddef.h>
#include <stdint.h>

#include "wl_model.h"
#include "wl_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum wl_dtype {
    WL_DTYPE_F32 = 0,
    WL_DTYPE_F16 = 1,
    WL_DTYPE_BF16 = 2,
    WL_DTYPE_F64 = 3,
    WL_DTYPE_I32 = 4,
    WL_DTYPE_I64 = 5,
    WL_DTYPE_U8 = 6,
    WL_DTYPE_I8 = 7,
    WL_DTYPE_BOOL = 8,
    WL_DTYPE_I16 = 9,
    WL_DTYPE_U16 = 10,
    WL_DTYPE_U32 = 11,
    WL_DTYPE_U64 = 12,
    WL_DTYPE_F8_E4M3 = 13,
    WL_DTYPE_F8_E5M2 = 14,
    WL_DTYPE_COUNT
} wl_dtype;

size_t wl_dtype_size(int dtype);          /* bytes per element, 0 for an unknown dtype */
const char *wl_dtype_name(int dtype);     /* "F32", ... as in safetensors */
/* Convert n values of a floating dtype (F32, F16, BF16, F64) to f32. Other dtypes: WL_STATUS_UNSUPPORTED. */
wl_status wl_convert_to_f32(float *dst, const void *src, int dtype, size_t n);
/* Convert n f32 values to F32, F16 or BF16 (little-endian, round-to-nearest-even; what writers of half-precision
 * files store). Other dtypes: WL_STATUS_UNSUPPORTED. */
wl_status wl_convert_from_f32(void *dst, const float *src, int dtype, size_t n);

/* ---- safetensors ---- */

#define WL_ST_MAX_HEADER 100000000ull
#define WL_ST_MAX_DIMS 8

typedef struct wl_st_tensor {
    char *name;               /* NUL-terminated, owned by the wl_safetensors */
    int dtype;                /* wl_dtype */
    int ndim;
    int64_t shape[WL_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;      /* byte offsets relative to data_start */
} wl_st_tensor;

typedef struct wl_safetensors {
    uint64_t header_size;     /* N */
    uint64_t data_start;      /* 8 + N: absolute offset of the data section */
    uint64_t file_size;       /* total size the header implies and the buffer had */
    int n_tensors;
    wl_st_tensor *tensors;    /* in header order */
    int n_metadata;
    char **metadata_keys;     /* owned */
    char **metadata_values;   /* owned */
} wl_safetensors;

/* Parse and validate a complete safetensors file held in buf. */
wl_status wl_st_parse(const uint8_t *buf, size_t len, wl_safetensors **out);
/* Parse only the header: buf holds at least the first 8 + N bytes of a file whose total size is file_size
 * (so a streamer can validate the layout after a Range request for the header alone). */
wl_status wl_st_parse_header(const uint8_t *buf, size_t len, uint64_t file_size, wl_safetensors **out);
void wl_st_free(wl_safetensors *st); /* NULL is fine */
int wl_st_find(const wl_safetensors *st, const char *name); /* index or -1 */
const char *wl_st_metadata(const wl_safetensors *st, const char *key); /* value or NULL */

/* ---- model loaders ---- */

/* Parse a Hugging Face config.json (LlamaForCausalLM, MistralForCausalLM-like Llama variants, Qwen2ForCausalLM,
 * GPT2LMHeadModel) into a wl_config. Unknown architectures and unsupported options (rope_scaling, sliding
 * windows, ...) are reported as WL_STATUS_UNSUPPORTED. */
wl_status wl_config_from_hf_json(const char *json, size_t len, wl_config *cfg);
/* The config.json of a model in Hugging Face layout (LlamaForCausalLM, Qwen2ForCausalLM when qkv_bias,
 * GPT2LMHeadModel), which wl_config_from_hf_json reads back to the same config (rope_layout aside: files are
 * rotate-half). Floats are written in the shortest form that reads back as the same float, unknown token ids as
 * null. NUL-terminated into buf (cap bytes); *len receives the length without the NUL, also when cap is too small
 * (WL_STATUS_INVALID_ARGUMENT). */
wl_status wl_config_to_hf_json(const wl_config *cfg, char *buf, size_t cap, size_t *len);

/* Build a model from config.json and one or more safetensors shards (buffers). Every model tensor must be
 * present exactly once with the right shape; tensors the model does not use are an error except known
 * buffers (rotary inv_freq, GPT-2 attn.bias / attn.masked_bias) and a stored copy of a tied head. */
typedef struct wl_buffer {
    const uint8_t *data;
    size_t len;
} wl_buffer;
wl_status wl_model_load_hf(const char *config_json, size_t config_len, const wl_buffer *shards, int n_shards,
                           wl_model **out);

/* Which model tensor a safetensors entry (name, dtype, shape as stored in the file) fills: *index is its table
 * index, or -1 for entries that carry no weights and may be skipped (rotary inv_freq, GPT-2 attention mask
 * buffers, a stored copy of a tied head), as long as they hold no more values than the config gives such a buffer
 * (head_dim / 2, n_positions^2, the embedding's; else WL_STATUS_BAD_FORMAT). Unknown names (WL_STATUS_BAD_FORMAT),
 * non-float dtypes (WL_STATUS_UNSUPPORTED) and wrong shapes (WL_STATUS_SHAPE_MISMATCH) fail with the name in the
 * message. This is the check a streaming loader runs on a header before any tensor bytes arrive. */
wl_status wl_model_match_tensor(const wl_model *model, const char *name, int dtype, int ndim, const int64_t *shape,
                                int *index);

/* Before a model is allocated for safetensors shards: `values` is the sum of the element counts of every tensor
 * their headers declare. Far fewer than the parameters config.json describes (WL_STATUS_NOT_FOUND: the config
 * does not belong to these files) or far more than the model and the buffers a checkpoint may carry can use
 * (WL_STATUS_BAD_FORMAT: a hostile or corrupt header, or files of a larger model) is refused, so a config cannot
 * make a loader reserve memory the files could never fill, nor a header make it fetch bytes the model cannot use.
 * Both bounds leave a factor of two, so that smaller mismatches reach wl_model_plan_shard, which names the tensor. */
wl_status wl_config_check_file_values(const wl_config *cfg, uint64_t values, int n_shards);

/* Every check of safetensors shards (their parsed headers) against a config, before a model is allocated for
 * them: wl_config_check_file_values on their total, then wl_model_plan_shard of each on the config's tensor table
 * (names, dtypes, shapes, buffer sizes, no tensor twice, "shard s of n: " before the reason when n > 1) and
 * wl_model_check_loaded (none missing). A loader that passes this allocates the model and plans each shard again
 * on it for the indices, which then cannot fail. */
wl_status wl_config_check_shards(const wl_config *cfg, const wl_safetensors *const *shards, int n_shards);

/* Loading a model from safetensors shards by any transport (wl_model_fill_from_safetensors from buffers here,
 * web/formats/loader.js streaming over HTTP): wl_config_check_shards on every shard's header first, then for each
 * shard, wl_model_plan_shard maps file tensor i to the model tensor
 * index[i] it fills (-1: the entry carries no weights, as wl_model_match_tensor decides) and refuses a model tensor
 * stored twice, in this shard or an earlier one (WL_STATUS_BAD_FORMAT); seen holds one flag per model tensor
 * (wl_model_n_tensors bytes, zeroed before the first shard) and gets the planned tensors marked. The bytes then go
 * through wl_model_write_tensor. After the last shard wl_model_check_loaded names the first model tensor no shard
 * held (WL_STATUS_NOT_FOUND). */
wl_status wl_model_plan_shard(const wl_model *model, const wl_safetensors *st, uint8_t *seen, int *index);
wl_status wl_model_check_loaded(const wl_model *model, const uint8_t *seen);

/* Fill an already created model from one parsed safetensors shard held in buf (used by wl_model_load_hf and by
 * tests): wl_model_plan_shard, then each tensor's bytes; `seen` as there (may be NULL for a single shard). */
wl_status wl_model_fill_from_safetensors(wl_model *model, const wl_safetensors *st, const uint8_t *buf,
                                         size_t len, uint8_t *seen);

/* Parse a llama2.c header (first 28 bytes) into a config, checking the file size the header implies. */
wl_status wl_config_from_llama2c(const uint8_t *buf, size_t len, wl_config *cfg);
/* The same from the header alone (header_len >= 28 bytes) of a file of file_len bytes, for a streaming loader. */
wl_status wl_config_from_llama2c_header(const uint8_t *header, size_t header_len, uint64_t file_len, wl_config *cfg);
/* Load a llama2.c checkpoint: Llama architecture with interleaved RoPE, theta 10000, eps 1e-5. */
wl_status wl_model_load_llama2c(const uint8_t *buf, size_t len, wl_model **out);
/* The same with the matrices stored as `storage` (wl_storage in wl_model.h). */
wl_status wl_model_load_llama2c_quantized(const uint8_t *buf, size_t len, int storage, wl_model **out);

/* Where a streaming loader finds each model tensor in a llama2.c file of file_len bytes whose header is at header:
 * parts[i] = (model tensor index, byte offset in the file, f32 element count), in file order, every tensor of
 * `model` (created from the header's config) exactly once. *n_parts receives the count (at most cap). */
typedef struct wl_llama2c_part {
    int tensor;
    double offset; /* bytes (a double so JavaScript reads it without BigInt; exact below 2^53) */
    double numel;
} wl_llama2c_part;
wl_status wl_llama2c_parts(const wl_model *model, const uint8_t *header, size_t header_len, uint64_t file_len,
                           wl_llama2c_part *parts, int cap, int *n_parts);

#ifdef __cplusplus
}
#endif
#endif
