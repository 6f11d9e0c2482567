/* simd.h: the f32x4 vocabulary the wasm SIMD kernels share (wasm_simd128.h in wasm builds, SIMDe natively, which
 * reproduces the wasm operations bit for bit).
 *
 * The sources in this folder build two kernel tables, which differ only in how vmadd (a * b + c) is computed:
 * "wasmsimd" (SIMD128: a multiply, then an add, each rounded) and "wasmrelaxed" (relaxed SIMD's f32x4.relaxed_madd:
 * a fused multiply-add with one rounding, which V8 emits as one FMA instruction on CPUs that have one, as x86-64
 * CPUs of the last decade and ARM64 do). A wasm build
 * compiled with -mrelaxed-simd makes the second; natively both are compiled (WL_SIMD_RELAXED selects the second,
 * with the fused operation computed by fmaf, as x64's FMA computes it), so the C tests check both. The GEMM
 * kernels use vmadd; the other kernels round the same in both tables. */
#ifndef WL_SIMD_H
#define WL_SIMD_H

#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#else
#include <math.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/wasm/simd128.h>
#endif

#include <stddef.h>
#include <string.h>

#if defined(__wasm_relaxed_simd__) || defined(WL_SIMD_RELAXED)
#define WL_SIMD_FUSED 1
/* The flavour's name for an external symbol: wl_gemm_wasmrelaxed, wl_kernels_wasmrelaxed. */
#define WL_SIMD_NAME(name) name##_wasmrelaxed
#define WL_SIMD_TABLE_NAME "wasmrelaxed"
#else
#define WL_SIMD_FUSED 0
#define WL_SIMD_NAME(name) name##_wasmsimd
#define WL_SIMD_TABLE_NAME "wasmsimd"
#endif

typedef v128_t vf;

static inline vf vsplat(float x) { return wasm_f32x4_splat(x); }
static inline vf vld(const float *p) { return wasm_v128_load(p); }
static inline void vst(float *p, vf v) { wasm_v128_store(p, v); }
static inline vf vadd(vf a, vf b) { return wasm_f32x4_add(a, b); }
static inline vf vsub(vf a, vf b) { return wasm_f32x4_sub(a, b); }
static inline vf vmul(vf a, vf b) { return wasm_f32x4_mul(a, b); }

/* a * b + c: fused in the relaxed flavour, a multiply then an add otherwise (see the top of the file). */
static inline vf vmadd(vf a, vf b, vf c) {
#if !WL_SIMD_FUSED
    return wasm_f32x4_add(wasm_f32x4_mul(a, b), c);
#elif defined(__wasm_relaxed_simd__)
    return wasm_f32x4_relaxed_madd(a, b, c);
#else
    float x[4], y[4], z[4];
    wasm_v128_store(x, a);
    wasm_v128_store(y, b);
    wasm_v128_store(z, c);
    for (int i = 0; i < 4; i++) x[i] = fmaf(x[i], y[i], z[i]);
    return wasm_v128_load(x);
#endif
}

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
void WL_SIMD_NAME(wl_gemm)(int M, int N, const struct wl_gemm_term *terms, int n_terms, const float *add,
                           const float *bias, float *C, int ldc);
/* The GEMM's packing of op(B) alone, for the benchmarks. */
void WL_SIMD_NAME(wl_gemm_pack_b)(int trans_b, const float *B, int ldb, int N, int K, float *dst);

#endif
