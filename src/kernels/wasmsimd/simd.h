/* simd.h: the f32x4 vocabulary the wasm SIMD kernels share (wasm_simd128.h in wasm builds, SIMDe natively, which
 * reproduces the wasm operations bit for bit). */
#ifndef WL_SIMD_H
#define WL_SIMD_H

#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#else
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/wasm/simd128.h>
#endif

#include <stddef.h>
#include <string.h>

typedef v128_t vf;

static inline vf vsplat(float x) { return wasm_f32x4_splat(x); }
static inline vf vld(const float *p) { return wasm_v128_load(p); }
static inline void vst(float *p, vf v) { wasm_v128_store(p, v); }
static inline vf vadd(vf a, vf b) { return wasm_f32x4_add(a, b); }
static inline vf vsub(vf a, vf b) { return wasm_f32x4_sub(a, b); }
static inline vf vmul(vf a, vf b) { return wasm_f32x4_mul(a, b); }

/* Tails: load / store the first n (< 4) floats through a small buffer so tail elements go through exactly the
 * same vector arithmetic as the body (results never depend on where an element sits). */
static inline vf vld_part(const float *p, size_t n) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(t, p, n * sizeof(float));
    return wasm_v128_load(t);
}
static inline void vst_part(float *p, vf v, size_t n) {
    float t[4];
    wasm_v128_store(t, v);
    memcpy(p, t, n * sizeof(float));
}

static inline float vhsum(vf v) {
    vf s = vadd(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
    s = vadd(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(s, 0);
}

/* The wasm SIMD GEMM (gemm.c), the table's gemm entry. */
struct wl_gemm_term;
void wl_gemm_wasmsimd(int M, int N, const struct wl_gemm_term *terms, int n_terms, const float *add,
                      const float *bias, float *C, int ldc);
/* The GEMM's packing of op(B) alone, for the benchmarks. */
void wl_gemm_pack_b_wasmsimd(int trans_b, const float *B, int ldb, int N, int K, float *dst);

#endif
