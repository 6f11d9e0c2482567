/* quant_wasmsimd.c: the wasm SIMD twin of the quantised-weight kernels of quant.c: dequantising rows into f32 (a
 * block's 32 quants widen int8 -> int16 -> int32 -> f32, after Q4's nibbles are split and re-centred) and the decoding
 * GEMV, whose int16 blocks meet the int16 activations in i32x4.dot_i16x8_s. */
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "kernels/wasmsimd/simd.h"

/* The 32 quants of block b of row r as four i16x8 vectors (values 8i .. 8i + 7 in h[i]). */
static inline void block_i16(const wl_qweight *w, int r, int b, v128_t h[4]) {
    const uint8_t *p = w->q + (size_t)r * w->row_bytes;
    v128_t lo, hi;
    if (w->storage == WL_STORAGE_Q8) {
        lo = wasm_v128_load(p + (size_t)b * WL_QBLOCK);
        hi = wasm_v128_load(p + (size_t)b * WL_QBLOCK + 16);
    } else {
        const v128_t bytes = wasm_v128_load(p + (size_t)b * (WL_QBLOCK / 2)), eight = wasm_i8x16_splat(8);
        lo = wasm_i8x16_sub(wasm_v128_and(bytes, wasm_i8x16_splat(15)), eight);
        hi = wasm_i8x16_sub(wasm_u8x16_shr(bytes, 4), eight);
    }
    h[0] = wasm_i16x8_extend_low_i8x16(lo);
    h[1] = wasm_i16x8_extend_high_i8x16(lo);
    h[2] = wasm_i16x8_extend_low_i8x16(hi);
    h[3] = wasm_i16x8_extend_high_i8x16(hi);
}

/* The 32 quants of block b of row r as eight f32x4 vectors (values 4i .. 4i + 3 in v[i]). */
static inline void block_values(const wl_qweight *w, int r, int b, vf v[8]) {
    v128_t h[4];
    block_i16(w, r, b, h);
    for (int i = 0; i < 4; i++) {
        v[2 * i] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(h[i]));
        v[2 * i + 1] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(h[i]));
    }
}

static void dequantize_rows_wasmsimd(const wl_qweight *w, int r0, int n_rows, float *dst, int ldd) {
    for (int r = 0; r < n_rows; r++) {
        float *out = dst + (size_t)r * ldd;
        const float *d = w->d + (size_t)(r0 + r) * w->blocks;
        for (int b = 0; b < w->blocks; b++) {
            vf v[8];
            block_values(w, r0 + r, b, v);
            const vf s = vsplat(d[b]);
            const int c0 = b * WL_QBLOCK, n = w->cols - c0 < WL_QBLOCK ? w->cols - c0 : WL_QBLOCK;
            for (int i = 0; i < 8 && 4 * i < n; i++) {
                const vf x = vmul(v[i], s);
                if (4 * i + 4 <= n) {
                    vst(out + c0 + 4 * i, x);
                } else {
                    vst_part(out + c0 + 4 * i, x, (size_t)(n - 4 * i));
                }
            }
        }
    }
}

static void gemv_rows_wasmsimd(const wl_qweight *w, const int16_t *xq, float sx, int j0, int j1, float *y) {
    for (int j = j0; j < j1; j++) {
        const float *d = w->d + (size_t)j * w->blocks;
        vf acc = vsplat(0.0f);
        for (int b = 0; b < w->blocks; b++) {
            v128_t h[4];
            block_i16(w, j, b, h);
            const int16_t *x = xq + (size_t)b * WL_QBLOCK;
            v128_t s = wasm_i32x4_dot_i16x8(h[0], wasm_v128_load(x));
            s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(h[1], wasm_v128_load(x + 8)));
            s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(h[2], wasm_v128_load(x + 16)));
            s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(h[3], wasm_v128_load(x + 24)));
            acc = vadd(acc, vmul(wasm_f32x4_convert_i32x4(s), vsplat(d[b])));
        }
        y[j - j0] = vhsum(acc) * sx;
    }
}

const wl_qkernels WL_SIMD_NAME(wl_qkernels) = {WL_SIMD_TABLE_NAME, dequantize_rows_wasmsimd, gemv_rows_wasmsimd};
