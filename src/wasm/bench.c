/* bench.c: wasm exports used only by the benchmarks (tools/bench): the machine's register-bound f32x4 multiply-add
 * peaks (multiply then add, and relaxed SIMD's fused multiply-add in the build that has it), direct entries to the
 * selected GEMM kernel, so JS can report kernel speed as a fraction of the peak measured in the same run, the
 * multiply-add rates of integer dot products next to f32 ones in the same register tile, and the GEMM's weight
 * packing alone. */
#include "kernels/kernels.h"
#include "kernels/wasmsimd/simd.h"

#ifdef __wasm_simd128__
#include <wasm_simd128.h>

#define WL_BENCH_EXPORT(name) __attribute__((export_name(name), used))

/* iters x 12 f32x4 multiply-adds (48 per lane-set = 96 flops per iteration) on registers only: 12 independent
 * chains acc = acc * m + c, with c + a * b computed by `madd`. Each chain is a multiply then an add (3 + 3 cycles
 * here), or one fused multiply-add (4 cycles), and 12 chains cover either latency at the machine's throughput
 * (two multiplies and two adds, or two fused multiply-adds, per cycle), so the loop runs at the machine's f32x4
 * multiply-add peak for that instruction set (variants with an extra operation per iteration, or fewer chains,
 * were slower). With |m| < 1 the values converge to c / (1 - m), so no overflow or denormals slow it down. Returns
 * a value depending on every chain so nothing is optimised away. */
#define WL_PEAK_LOOP(madd)                                                                                       \
    const v128_t m = wasm_f32x4_splat(0.999f), c = wasm_f32x4_splat(0.001f);                                   \
    v128_t a0 = wasm_f32x4_splat(0.1f), a1 = wasm_f32x4_splat(0.2f), a2 = wasm_f32x4_splat(0.3f),            \
           a3 = wasm_f32x4_splat(0.4f), a4 = wasm_f32x4_splat(0.5f), a5 = wasm_f32x4_splat(0.6f),            \
           a6 = wasm_f32x4_splat(0.7f), a7 = wasm_f32x4_splat(0.8f), a8 = wasm_f32x4_splat(0.9f),            \
           a9 = wasm_f32x4_splat(1.1f), a10 = wasm_f32x4_splat(1.2f), a11 = wasm_f32x4_splat(1.3f);          \
    for (int i = 0; i < iters; i++) {                                                                           \
        a0 = madd(a0, m, c);                                                                                    \
        a1 = madd(a1, m, c);                                                                                    \
        a2 = madd(a2, m, c);                                                                                    \
        a3 = madd(a3, m, c);                                                                                    \
        a4 = madd(a4, m, c);                                                                                    \
        a5 = madd(a5, m, c);                                                                                    \
        a6 = madd(a6, m, c);                                                                                    \
        a7 = madd(a7, m, c);                                                                                    \
        a8 = madd(a8, m, c);                                                                                    \
        a9 = madd(a9, m, c);                                                                                    \
        a10 = madd(a10, m, c);                                                                                  \
        a11 = madd(a11, m, c);                                                                                  \
    }                                                                                                           \
    v128_t s = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3)),                 \
                              wasm_f32x4_add(wasm_f32x4_add(a4, a5), wasm_f32x4_add(a6, a7)));                \
    s = wasm_f32x4_add(s, wasm_f32x4_add(wasm_f32x4_add(a8, a9), wasm_f32x4_add(a10, a11)));                  \
    return wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 1) + wasm_f32x4_extract_lane(s, 2) +     \
           wasm_f32x4_extract_lane(s, 3);

static inline v128_t mul_add(v128_t a, v128_t b, v128_t c) { return wasm_f32x4_add(wasm_f32x4_mul(a, b), c); }

/* The f32x4 multiply-then-add peak (SIMD128), in every build. */
WL_BENCH_EXPORT("wl_bench_peak") float wl_bench_peak(int iters) { WL_PEAK_LOOP(mul_add) }

#ifdef __wasm_relaxed_simd__
/* The f32x4.relaxed_madd peak, in the relaxed-SIMD build. */
WL_BENCH_EXPORT("wl_bench_peak_madd") float wl_bench_peak_madd(int iters) { WL_PEAK_LOOP(wasm_f32x4_relaxed_madd) }
#endif

#ifdef __wasm_relaxed_simd__
/* Multiply-add rates of a GEMM-like register tile, the same loop for each instruction: every iteration loads 3
 * "row" and 3 "column" vectors from a 4 KB ring (in L1) and updates 9 accumulators, one per pair (15 registers, what
 * V8 gives wasm on x64 without spilling; a multiply then an add would need a 16th, so the f32 reference is the relaxed
 * fused multiply-add the GEMM uses). What an integer kernel (b) could gain over the f32 one: one f32x4 multiply-add
 * is 4 multiply-adds, i32x4.dot_i16x8_s + i32x4.add 8, and relaxed SIMD's
 * i32x4.relaxed_dot_i8x16_i7x16_add_s 16 (one operand 7-bit). In the relaxed-SIMD build only, as its reference is.
 * Returns a value depending on every accumulator. */
static v128_t g_tile_ring[256];

#define WL_TILE_LOOP(op, zero)                                                                                   \
    v128_t c00 = zero, c01 = zero, c02 = zero, c10 = zero, c11 = zero, c12 = zero, c20 = zero, c21 = zero,     \
           c22 = zero;                                                                                          \
    for (int i = 0; i < iters; i++) {                                                                           \
        const v128_t *p = g_tile_ring + ((i * 6) & 255);                                                        \
        v128_t a0 = p[0], a1 = p[1], a2 = p[2], b0 = p[3], b1 = p[4], b2 = p[5];                                \
        c00 = op(a0, b0, c00);                                                                                  \
        c01 = op(a0, b1, c01);                                                                                  \
        c02 = op(a0, b2, c02);                                                                                  \
        c10 = op(a1, b0, c10);                                                                                  \
        c11 = op(a1, b1, c11);                                                                                  \
        c12 = op(a1, b2, c12);                                                                                  \
        c20 = op(a2, b0, c20);                                                                                  \
        c21 = op(a2, b1, c21);                                                                                  \
        c22 = op(a2, b2, c22);                                                                                  \
    }                                                                                                           \
    v128_t s = wasm_v128_xor(wasm_v128_xor(wasm_v128_xor(c00, c01), wasm_v128_xor(c02, c10)),                   \
                             wasm_v128_xor(wasm_v128_xor(c11, c12), wasm_v128_xor(c20, c21)));                  \
    return wasm_i32x4_extract_lane(wasm_v128_xor(s, c22), 0);

/* Small values (f32 0 to 0.015, integers 0 to 63: valid 7-bit operands), so no denormals or overflow. */
static void fill_tile_ring(int as_float) {
    for (int i = 0; i < 256; i++)
        g_tile_ring[i] = as_float ? wasm_f32x4_splat(0.001f * (float)(i & 15)) : wasm_i8x16_splat((int8_t)((i * 7) & 63));
}

static inline v128_t dot_i16_add(v128_t a, v128_t b, v128_t c) { return wasm_i32x4_add(c, wasm_i32x4_dot_i16x8(a, b)); }

/* iters x 9 i32x4.dot_i16x8_s + i32x4.add (72 multiply-adds per iteration). */
WL_BENCH_EXPORT("wl_bench_tile_i16") int wl_bench_tile_i16(int iters) {
    fill_tile_ring(0);
    WL_TILE_LOOP(dot_i16_add, wasm_i32x4_splat(0))
}

/* iters x 9 f32x4.relaxed_madd (36 multiply-adds per iteration). */
WL_BENCH_EXPORT("wl_bench_tile_madd") int wl_bench_tile_madd(int iters) {
    fill_tile_ring(1);
    WL_TILE_LOOP(wasm_f32x4_relaxed_madd, wasm_f32x4_splat(0.0f))
}

/* iters x 9 i32x4.relaxed_dot_i8x16_i7x16_add_s (144 multiply-adds per iteration). */
WL_BENCH_EXPORT("wl_bench_tile_i8") int wl_bench_tile_i8(int iters) {
    fill_tile_ring(0);
    WL_TILE_LOOP(wasm_i32x4_relaxed_dot_i8x16_i7x16_add, wasm_i32x4_splat(0))
}
#endif

/* C = alpha op(A) op(B) + beta C through the default kernel table, reps times (pointers are wasm addresses). */
WL_BENCH_EXPORT("wl_bench_sgemm")
void wl_bench_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc, int reps) {
    const wl_kernels *k = wl_kernels_default();
    for (int r = 0; r < reps; r++) wl_sgemm(k, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* The GEMM's packing of op(B) (K, N) into dst, reps times: the work a pre-packed weight would not redo. */
WL_BENCH_EXPORT("wl_bench_pack_b")
void wl_bench_pack_b(int trans_b, const float *B, int ldb, int N, int K, float *dst, int reps) {
    for (int r = 0; r < reps; r++) WL_SIMD_NAME(wl_gemm_pack_b)(trans_b, B, ldb, N, K, dst);
}

#endif
