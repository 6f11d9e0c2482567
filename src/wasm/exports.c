/* exports.c: the only file that knows about JavaScript. It exports the C API to the wasm module's export table
 * with an ABI of i32 / f32 / f64 only (no i64, so JavaScript never needs BigInt): pointers are i32, 64-bit seeds
 * arrive as two u32 halves, sizes as u32. The layouts of the structs the caller reads and writes (wl_config,
 * wl_tensor_info, wl_lora_module, wl_module_info, wl_llama2c_part) are described by the module itself (abi.c). */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "weblora.h"
#include "wl_svd.h"
#include "wl_threads.h"
#include "core/core.h"
#include "kernels/kernels.h"

#define EXPORT(name) __attribute__((export_name(#name), used))

static uint64_t join64(uint32_t lo, uint32_t hi) { return ((uint64_t)hi << 32) | lo; }

/* ---- memory and errors ---- */

EXPORT(wl_malloc) void *wlx_malloc(size_t n) { return malloc(n ? n : 1); }
EXPORT(wl_free_ptr) void wlx_free(void *p) { free(p); }
EXPORT(wl_last_error) const char *wlx_last_error(void) { return wl_last_error(); }
/* The kernel table the model runs on: "wasmsimd" (SIMD128 build) or "wasmrelaxed" (relaxed-SIMD build). */
EXPORT(wl_kernels_name) const char *wlx_kernels_name(void) { return wl_kernels_default()->name; }
EXPORT(wl_status_name) const char *wlx_status_name(int s) { return wl_status_name((wl_status)s); }

/* ---- model ---- */

EXPORT(wl_model_create_quantized) int wlx_model_create_quantized(const wl_config *c, int storage, wl_model **out) {
    return wl_model_create_quantized(c, storage, out);
}
EXPORT(wl_model_weight_bytes_for) double wlx_model_weight_bytes_for(const wl_config *c, int storage) {
    uint64_t bytes = 0;
    return wl_model_weight_bytes_for(c, storage, &bytes) == WL_OK ? (double)bytes : -1.0;
}
EXPORT(wl_model_storage) int wlx_model_storage(const wl_model *m) { return wl_model_storage(m); }
EXPORT(wl_model_free) void wlx_model_free(wl_model *m) { wl_model_free(m); }
EXPORT(wl_model_config) const wl_config *wlx_model_config(const wl_model *m) { return wl_model_config(m); }
EXPORT(wl_model_n_tensors) int wlx_model_n_tensors(const wl_model *m) { return wl_model_n_tensors(m); }
EXPORT(wl_model_tensor) int wlx_model_tensor(const wl_model *m, int i, wl_tensor_info *info) {
    return wl_model_tensor(m, i, info);
}
EXPORT(wl_model_write_tensor) int wlx_model_write_tensor(wl_model *m, int index, int dtype, double first, double n,
                                                         const void *src) {
    return wl_model_write_tensor(m, index, dtype, (uint64_t)first, (uint64_t)n, src);
}
EXPORT(wl_model_read_tensor) int wlx_model_read_tensor(const wl_model *m, int index, double first, double n, float *dst) {
    return wl_model_read_tensor(m, index, (uint64_t)first, (uint64_t)n, dst);
}
EXPORT(wl_model_read_tensor_file) int wlx_model_read_tensor_file(const wl_model *m, int index, float *dst) {
    return wl_model_read_tensor_file(m, index, dst);
}
EXPORT(wl_model_tensor_sample) double wlx_model_tensor_sample(const wl_model *m, int index, int k) {
    float v = 0.0f;
    return wl_model_tensor_sample(m, index, k, &v) == WL_OK ? (double)v : NAN;
}
EXPORT(wl_model_n_slots) int wlx_model_n_slots(const wl_model *m) { return wl_model_n_slots(m); }
EXPORT(wl_model_module) int wlx_model_module(const wl_model *m, int slot, wl_module_info *info) {
    return wl_model_module(m, slot, info);
}
EXPORT(wl_model_module_path) int wlx_model_module_path(const wl_model *m, int layer, int slot, char *buf, size_t cap) {
    return wl_model_module_path(m, layer, slot, buf, cap);
}
EXPORT(wl_model_reserve) int wlx_model_reserve(wl_model *m, int B, int T, int flags) {
    return wl_model_reserve(m, B, T, flags);
}
EXPORT(wl_model_forward) int wlx_model_forward(wl_model *m, const int32_t *tokens, const int32_t *targets, int B,
                                               int T, int pos0, int flags, int ignore_id, float *loss) {
    return wl_model_forward(m, tokens, targets, B, T, pos0, flags, ignore_id, loss);
}
EXPORT(wl_model_logits) float *wlx_model_logits(wl_model *m) { return wl_model_logits(m); }
EXPORT(wl_model_backward) int wlx_model_backward(wl_model *m) { return wl_model_backward(m); }
EXPORT(wl_model_set_full_training) int wlx_model_set_full_training(wl_model *m, int on) {
    return wl_model_set_full_training(m, on);
}
EXPORT(wl_model_zero_grad) int wlx_model_zero_grad(wl_model *m) { return wl_model_zero_grad(m); }
EXPORT(wl_model_params) float *wlx_model_params(wl_model *m, size_t *n) { return wl_model_params(m, n); }
EXPORT(wl_model_grads) float *wlx_model_grads(wl_model *m) { return wl_model_grads(m); }
EXPORT(wl_model_memory_bytes) double wlx_model_memory_bytes(const wl_model *m) {
    return (double)wl_model_memory_bytes(m);
}
/* 0: weights, 1: activations and scratch. */
EXPORT(wl_model_memory_part) double wlx_model_memory_part(const wl_model *m, int part) {
    size_t w, a;
    wl_model_memory_split(m, &w, &a);
    return (double)(part == 0 ? w : a);
}

/* ---- loaders ---- */

EXPORT(wl_config_from_llama2c_header) int wlx_config_from_llama2c_header(const uint8_t *header, size_t header_len,
                                                                         double file_len, wl_config *cfg) {
    return wl_config_from_llama2c_header(header, header_len, (uint64_t)file_len, cfg);
}
EXPORT(wl_llama2c_parts) int wlx_llama2c_parts(const wl_model *m, const uint8_t *header, size_t header_len,
                                               double file_len, wl_llama2c_part *parts, int cap, int *n) {
    return wl_llama2c_parts(m, header, header_len, (uint64_t)file_len, parts, cap, n);
}
EXPORT(wl_config_to_hf_json) int wlx_config_to_hf_json(const wl_config *cfg, char *buf, size_t cap, size_t *len) {
    return wl_config_to_hf_json(cfg, buf, cap, len);
}
EXPORT(wl_config_from_hf_json) int wlx_config_from_hf_json(const char *json, size_t len, wl_config *cfg) {
    return wl_config_from_hf_json(json, len, cfg);
}
EXPORT(wl_config_check_shards) int wlx_config_check_shards(const wl_config *c, const wl_safetensors *const *shards,
                                                           int n_shards) {
    return wl_config_check_shards(c, shards, n_shards);
}
EXPORT(wl_model_plan_shard) int wlx_model_plan_shard(const wl_model *m, const wl_safetensors *st, uint8_t *seen,
                                                     int *index) {
    return wl_model_plan_shard(m, st, seen, index);
}
EXPORT(wl_model_check_loaded) int wlx_model_check_loaded(const wl_model *m, const uint8_t *seen) {
    return wl_model_check_loaded(m, seen);
}
EXPORT(wl_st_parse) int wlx_st_parse(const uint8_t *buf, size_t len, wl_safetensors **out) {
    return wl_st_parse(buf, len, out);
}
EXPORT(wl_st_parse_header) int wlx_st_parse_header(const uint8_t *buf, size_t len, double file_size,
                                                   wl_safetensors **out) {
    return wl_st_parse_header(buf, len, (uint64_t)file_size, out);
}
EXPORT(wl_st_free) void wlx_st_free(wl_safetensors *st) { wl_st_free(st); }
EXPORT(wl_st_count) int wlx_st_count(const wl_safetensors *st) { return st ? st->n_tensors : 0; }
EXPORT(wl_st_data_start) double wlx_st_data_start(const wl_safetensors *st) { return (double)st->data_start; }
EXPORT(wl_st_n_metadata) int wlx_st_n_metadata(const wl_safetensors *st) { return st ? st->n_metadata : 0; }
EXPORT(wl_st_metadata_key) const char *wlx_st_metadata_key(const wl_safetensors *st, int i) {
    return st->metadata_keys[i];
}
EXPORT(wl_st_metadata_value) const char *wlx_st_metadata_value(const wl_safetensors *st, int i) {
    return st->metadata_values[i];
}
EXPORT(wl_st_name) const char *wlx_st_name(const wl_safetensors *st, int i) { return st->tensors[i].name; }
EXPORT(wl_st_dtype) int wlx_st_dtype(const wl_safetensors *st, int i) { return st->tensors[i].dtype; }
EXPORT(wl_st_ndim) int wlx_st_ndim(const wl_safetensors *st, int i) { return st->tensors[i].ndim; }
EXPORT(wl_st_dim) double wlx_st_dim(const wl_safetensors *st, int i, int d) { return (double)st->tensors[i].shape[d]; }
EXPORT(wl_st_begin) double wlx_st_begin(const wl_safetensors *st, int i) { return (double)st->tensors[i].begin; }
EXPORT(wl_st_end) double wlx_st_end(const wl_safetensors *st, int i) { return (double)st->tensors[i].end; }
EXPORT(wl_convert_to_f32) int wlx_convert_to_f32(float *dst, const void *src, int dtype, size_t n) {
    return wl_convert_to_f32(dst, src, dtype, n);
}
EXPORT(wl_convert_from_f32) int wlx_convert_from_f32(void *dst, const float *src, int dtype, size_t n) {
    return wl_convert_from_f32(dst, src, dtype, n);
}

/* ---- LoRA ---- */

/* model_level: embedding rank, embedding alpha, head rank, head alpha (as floats; ranks are small integers) */
EXPORT(wl_adapter_create) int wlx_adapter_create(const wl_model *m, const int *ranks, const float *alphas,
                                                 int use_rslora, int use_dora, const float *model_level,
                                                 wl_adapter **out) {
    wl_lora_spec spec = {ranks, alphas, use_rslora, use_dora, 0, 0.0f, 0, 0.0f};
    if (model_level) {
        spec.embed_rank = (int)model_level[0];
        spec.embed_alpha = model_level[1];
        spec.head_rank = (int)model_level[2];
        spec.head_alpha = model_level[3];
    }
    return wl_adapter_create(m, &spec, out);
}
EXPORT(wl_adapter_create_shaped) int wlx_adapter_create_shaped(int arch, int n_layers, int n_slots, const int *in_f,
                                                               const int *out_f, const int *ranks, const float *alphas,
                                                               int use_rslora, int use_dora, wl_adapter **out) {
    wl_lora_spec spec = {ranks, alphas, use_rslora, use_dora, 0, 0.0f, 0, 0.0f};
    return wl_adapter_create_shaped(arch, n_layers, n_slots, in_f, out_f, &spec, out);
}
/* Refused with a status, not the core's abort: JavaScript may hold an adapter that is still attached or merged. */
EXPORT(wl_adapter_free) int wlx_adapter_free(wl_adapter *a) {
    if (wl_adapter_in_use(a))
        return wl_fail(WL_STATUS_BAD_STATE, "the adapter is attached to a model or merged into its weights: detach or unmerge it first");
    wl_adapter_free(a);
    return WL_OK;
}
EXPORT(wl_adapter_set_row_blocks) int wlx_adapter_set_row_blocks(wl_adapter *a, int i, int row_blocks, int mask) {
    return wl_adapter_set_row_blocks(a, i, row_blocks, mask);
}
EXPORT(wl_adapter_is_dora) int wlx_adapter_is_dora(const wl_adapter *a) { return wl_adapter_is_dora(a); }
EXPORT(wl_adapter_init_dora) int wlx_adapter_init_dora(const wl_model *m, wl_adapter *a) { return wl_adapter_init_dora(m, a); }
EXPORT(wl_adapter_init) int wlx_adapter_init(wl_adapter *a, int init, uint32_t seed_lo, uint32_t seed_hi) {
    return wl_adapter_init(a, init, join64(seed_lo, seed_hi));
}
EXPORT(wl_adapter_n_modules) int wlx_adapter_n_modules(const wl_adapter *a) { return wl_adapter_n_modules(a); }
EXPORT(wl_adapter_module) int wlx_adapter_module(const wl_adapter *a, int i, wl_lora_module *mod) {
    return wl_adapter_module(a, i, mod);
}
EXPORT(wl_adapter_params) float *wlx_adapter_params(wl_adapter *a, size_t *n) { return wl_adapter_params(a, n); }
EXPORT(wl_adapter_grads) float *wlx_adapter_grads(wl_adapter *a) { return wl_adapter_grads(a); }
EXPORT(wl_adapter_zero_grad) int wlx_adapter_zero_grad(wl_adapter *a) { return wl_adapter_zero_grad(a); }
EXPORT(wl_adapter_set_scale) int wlx_adapter_set_scale(wl_adapter *a, int i, float s) {
    return wl_adapter_set_scale(a, i, s);
}
EXPORT(wl_model_set_adapters) int wlx_model_set_adapters(wl_model *m, wl_adapter *const *as, const float *w, int n) {
    return wl_model_set_adapters(m, as, w, n);
}
EXPORT(wl_model_set_trainable) int wlx_model_set_trainable(wl_model *m, wl_adapter *a) {
    return wl_model_set_trainable(m, a);
}
EXPORT(wl_model_set_lora_dropout) int wlx_model_set_lora_dropout(wl_model *m, float p, uint32_t seed_lo,
                                                                 uint32_t seed_hi, double step) {
    return wl_model_set_lora_dropout(m, p, join64(seed_lo, seed_hi), (uint64_t)step);
}

/* ---- merging and adapter tools ---- */

EXPORT(wl_model_merge) int wlx_model_merge(wl_model *m, wl_adapter *a, float w) { return wl_model_merge(m, a, w); }
EXPORT(wl_model_unmerge) int wlx_model_unmerge(wl_model *m, wl_adapter *a) { return wl_model_unmerge(m, a); }
EXPORT(wl_model_is_merged) int wlx_model_is_merged(const wl_model *m, const wl_adapter *a) { return wl_model_is_merged(m, a); }
EXPORT(wl_model_edit_bytes) double wlx_model_edit_bytes(const wl_model *m) { return (double)wl_model_edit_bytes(m); }
EXPORT(wl_adapter_init_pissa) int wlx_adapter_init_pissa(wl_model *m, wl_adapter *a, int iters, uint32_t seed_lo,
                                                         uint32_t seed_hi) {
    return wl_adapter_init_pissa(m, a, iters, join64(seed_lo, seed_hi));
}
EXPORT(wl_adapter_is_pissa) int wlx_adapter_is_pissa(const wl_adapter *a) { return wl_adapter_is_pissa(a); }
EXPORT(wl_adapter_pissa_to_lora) int wlx_adapter_pissa_to_lora(const wl_adapter *a, wl_adapter **out) {
    return wl_adapter_pissa_to_lora(a, out);
}
EXPORT(wl_adapter_resize) int wlx_adapter_resize(const wl_adapter *a, int rank, float energy, wl_adapter **out,
                                                 double *errors, double *total) {
    return wl_adapter_resize(a, rank, energy, out, errors, total);
}
EXPORT(wl_adapter_extract) int wlx_adapter_extract(const wl_model *base, const wl_model *tuned, const int *ranks,
                                                   float energy, int power_iters, uint32_t seed_lo, uint32_t seed_hi,
                                                   wl_adapter **out, double *errors, double *total) {
    wl_svd_options opt = wl_svd_default_options();
    if (power_iters >= 0) opt.power_iters = power_iters;
    opt.seed = join64(seed_lo, seed_hi);
    return wl_adapter_extract(base, tuned, ranks, energy, &opt, out, errors, total);
}
EXPORT(wl_adapter_combine) int wlx_adapter_combine(const wl_adapter *const *as, const float *weights, int n, int type,
                                                   int svd_rank, wl_adapter **out, double *errors) {
    return wl_adapter_combine(as, weights, n, type, svd_rank, out, errors);
}
EXPORT(wl_svd_truncated) int wlx_svd_truncated(const float *A, int m, int n, int lda, int rank, int method,
                                               int power_iters, int oversample, uint32_t seed_lo, uint32_t seed_hi,
                                               float *U, float *S, float *Vt) {
    wl_svd_options opt = {method, power_iters, oversample, join64(seed_lo, seed_hi)};
    return wl_svd_truncated(A, m, n, lda, rank, &opt, U, S, Vt);
}
/* info_out: rank (as double), rel_error, energy, norm */
EXPORT(wl_lowrank_approx) int wlx_lowrank_approx(const float *A, int m, int n, int lda, int max_rank, float energy,
                                                 int split, int power_iters, uint32_t seed_lo, uint32_t seed_hi,
                                                 float *L, float *R, float *S, double *info_out) {
    wl_svd_options opt = wl_svd_default_options();
    if (power_iters >= 0) opt.power_iters = power_iters;
    opt.seed = join64(seed_lo, seed_hi);
    wl_lowrank_info info;
    int st = wl_lowrank_approx(A, m, n, lda, max_rank, energy, split, &opt, L, R, S, &info);
    if (st == WL_OK && info_out) {
        info_out[0] = info.rank;
        info_out[1] = info.rel_error;
        info_out[2] = info.energy;
        info_out[3] = info.norm;
    }
    return st;
}

/* ---- optimizers ---- */

EXPORT(wl_adamw_step) int wlx_adamw_step(float lr, float beta1, float beta2, float eps, float wd, double step,
                                         float *p, const float *g, float *m, float *v, size_t n) {
    wl_adamw opt = {lr, beta1, beta2, eps, wd};
    return wl_adamw_step(&opt, (int64_t)step, p, g, m, v, n);
}
EXPORT(wl_sgd_step) int wlx_sgd_step(float lr, float *p, const float *g, size_t n) { return wl_sgd_step(lr, p, g, n); }
EXPORT(wl_sum_squares) double wlx_sum_squares(const float *g, size_t n) { return wl_sum_squares(g, n); }
EXPORT(wl_scale) void wlx_scale(float *g, size_t n, float s) { wl_scale(g, n, s); }
EXPORT(wl_all_finite) int wlx_all_finite(const float *x, size_t n) { return wl_all_finite(x, n); }

/* ---- threads (weblora-threads.wasm; the single-threaded build accepts only 1) ---- */

EXPORT(wl_threads_init) int wlx_threads_init(int n) { return wl_threads_init(n); }
EXPORT(wl_threads_running) int wlx_threads_running(void) { return wl_threads_running(); }
EXPORT(wl_thread_stack) void *wlx_thread_stack(int i) { return wl_thread_stack(i); }
EXPORT(wl_thread_main) void wlx_thread_main(int i) { wl_thread_main(i); }
EXPORT(wl_threads_stop) void wlx_threads_stop(void) { wl_threads_stop(); }
EXPORT(wl_thread_failed) void wlx_thread_failed(void) { wl_thread_failed(); }
