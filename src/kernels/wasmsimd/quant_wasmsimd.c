/* quant_wasmsimd.c: the wasm SIMD twin of the quantised-weight kernels of quant.c: dequantising rows into f32 (a
 * block's 32 quants widen int8 -> int16 -> int32 -> f32, after Q4's nibbles are split) and the decoding GEMV, whose
 * int16 blocks meet the int16 activations in i32x4.dot_i16x8_s. */
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
        const v128_t bytes = wasm_v128_load(p + (size_t)b * (WL_QBLOCK / 2));
        lo = wasm_v128_and(bytes, wasm_i8x16_splat(15));
        hi = wasm_u8x16_shr(bytes, 4);
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
        const size_t at = (size_t)(r0 + r) * w->blocks;
        for (int b = 0; b < w->blocks; b++) {
            vf v[8];
            block_values(w, r0 + r, b, v);
            const vf s = vsplat(w->d[at + b]), m = vsplat(w->m ? w->m[at + b] : 0.0f);
            const int c0 = b * WL_QBLOCK, n = w->cols - c0 < WL_QBLOCK ? w->cols - c0 : WL_QBLOCK;
            for (int i = 0; i < 8 && 4 * i < n; i++) {
                /* as the scalar reference rounds it: d q, then + m for Q4 */
                const vf x = w->m ? vadd(vmul(v[i], s), m) : vmul(v[i], s);
                if (4 * i + 4 <= n) {
                    vst(out + c0 + 4 * i, x);
                } else {
                    vst_part(out + c0 + 4 * i, x, (size_t)(n - 4 * i));
                }
            }
        }
    }
}

static void gemv_rows_wasmsimd(const wl_qweight *w, const int16_t *xq, const int32_t *xs, float sx, int j0, int j1,
                               float *y) {
    for (int j = j0; j < j1; j++) {
        const float *d = w->d + (size_t)j * w->blocks, *m = w->m ? w->m + (size_t)j * w->blocks : NULL;
        vf acc = vsplat(0.0f);
        for (int b = 0; b < w->blocks; b++) {
            v128_t h[4];
            block_i16(w, j, b, h);
            const int16_t *x = xq + (size_t)b * WL_QBLOCK;
            v128_t s = wasm_i32x4_dot_i16x8(h[0], wasm_v128_load(x));
            s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(h[1], wasm_v128_load(x + 8)));
            s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(h[2], wasm_v128_load(x + 16)));
            s = wasm_i32x4_add(s, wasm_i32x4_dot_i16x8(h[3], wasm_v128_load(x + 24)));
            const vf sd = vmul(wasm_f32x4_convert_i32x4(s), vsplat(d[b]));
            if (m)
                acc = vadd(acc, vadd(sd, vmul(wasm_f32x4_convert_i32x4(wasm_v128_load(xs + 4 * b)), vsplat(m[b]))));
            else
                acc = vadd(acc, sd);
        }
        y[j - j0] = vhsum(acc) * sx;
    }
}

static void unpack_rows_wasmsimd(const wl_qweight *w, int r0, int n, int16_t *wq) {
    const size_t width = (size_t)w->blocks * WL_QBLOCK;
    for (int r = 0; r < n; r++)
        for (int b = 0; b < w->blocks; b++) {
            v128_t h[4];
            block_i16(w, r0 + r, b, h);
            int16_t *out = wq + (size_t)r * width + (size_t)b * WL_QBLOCK;
            for (int i = 0; i < 4; i++) wasm_v128_store(out + 8 * i, h[i]);
        }
}

/* The lane sums of one block: quants w (32 int16) against x (4 i16x8 vectors). */
static inline v128_t block_dot(const int16_t *w, const v128_t x[4]) {
    const v128_t s01 = wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_v128_load(w), x[0]),
                                      wasm_i32x4_dot_i16x8(wasm_v128_load(w + 8), x[1]));
    const v128_t s23 = wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_v128_load(w + 16), x[2]),
                                      wasm_i32x4_dot_i16x8(wasm_v128_load(w + 24), x[3]));
    return wasm_i32x4_add(s01, s23);
}

/* y[0..3] = the products of four rows of W (quants w0 .. w0 + 3 width, scales d, minimums m or NULL, nb per row)
 * with one quantised row of X, as gemv_rows computes them (s01 + s23 is the exact integer lane sum in any order). */
static inline void idot_4rows(const int16_t *w0, size_t width, const float *d, const float *m, int nb,
                              const int16_t *xr, const int32_t *xsr, float sx, float *y) {
    const int16_t *w1 = w0 + width, *w2 = w1 + width, *w3 = w2 + width;
    const float *d1 = d + nb, *d2 = d1 + nb, *d3 = d2 + nb;
    vf a0 = vsplat(0.0f), a1 = a0, a2 = a0, a3 = a0;
    if (m) {
        const float *m1 = m + nb, *m2 = m1 + nb, *m3 = m2 + nb;
        for (int b = 0; b < nb; b++) {
            const int16_t *xb = xr + (size_t)b * WL_QBLOCK;
            const v128_t x[4] = {wasm_v128_load(xb), wasm_v128_load(xb + 8), wasm_v128_load(xb + 16),
                                 wasm_v128_load(xb + 24)};
            const vf xsf = wasm_f32x4_convert_i32x4(wasm_v128_load(xsr + 4 * b));
            const size_t o = (size_t)b * WL_QBLOCK;
            a0 = vadd(a0, vadd(vmul(wasm_f32x4_convert_i32x4(block_dot(w0 + o, x)), vsplat(d[b])), vmul(xsf, vsplat(m[b]))));
            a1 = vadd(a1, vadd(vmul(wasm_f32x4_convert_i32x4(block_dot(w1 + o, x)), vsplat(d1[b])), vmul(xsf, vsplat(m1[b]))));
            a2 = vadd(a2, vadd(vmul(wasm_f32x4_convert_i32x4(block_dot(w2 + o, x)), vsplat(d2[b])), vmul(xsf, vsplat(m2[b]))));
            a3 = vadd(a3, vadd(vmul(wasm_f32x4_convert_i32x4(block_dot(w3 + o, x)), vsplat(d3[b])), vmul(xsf, vsplat(m3[b]))));
        }
    } else {
        for (int b = 0; b < nb; b++) {
            const int16_t *xb = xr + (size_t)b * WL_QBLOCK;
            const v128_t x[4] = {wasm_v128_load(xb), wasm_v128_load(xb + 8), wasm_v128_load(xb + 16),
                                 wasm_v128_load(xb + 24)};
            const size_t o = (size_t)b * WL_QBLOCK;
            a0 = vadd(a0, vmul(wasm_f32x4_convert_i32x4(block_dot(w0 + o, x)), vsplat(d[b])));
            a1 = vadd(a1, vmul(wasm_f32x4_convert_i32x4(block_dot(w1 + o, x)), vsplat(d1[b])));
            a2 = vadd(a2, vmul(wasm_f32x4_convert_i32x4(block_dot(w2 + o, x)), vsplat(d2[b])));
            a3 = vadd(a3, vmul(wasm_f32x4_convert_i32x4(block_dot(w3 + o, x)), vsplat(d3[b])));
        }
    }
    y[0] = vhsum(a0) * sx;
    y[1] = vhsum(a1) * sx;
    y[2] = vhsum(a2) * sx;
    y[3] = vhsum(a3) * sx;
}

/* Four rows of W (9 KB at most for SmolLM2's widths: they stay in L1) against every row of X in turn, then the
 * next four; a last row or three one at a time. */
static void idot_rows_wasmsimd(const wl_qweight *w, const int16_t *wq, int j0, int j1, int n_x, const int16_t *xq,
                               const int32_t *xs, const float *sx, float *C, int ldc) {
    const size_t width = (size_t)w->blocks * WL_QBLOCK;
    const int nb = w->blocks;
    int j = j0;
    for (; j + 4 <= j1; j += 4) {
        const int16_t *wr = wq + (size_t)(j - j0) * width;
        const float *d = w->d + (size_t)j * nb, *m = w->m ? w->m + (size_t)j * nb : NULL;
        for (int i = 0; i < n_x; i++)
            idot_4rows(wr, width, d, m, nb, xq + (size_t)i * width, xs + (size_t)i * nb * 4, sx[i],
                       C + (size_t)i * ldc + (j - j0));
    }
    for (; j < j1; j++) {
        const int16_t *wr = wq + (size_t)(j - j0) * width;
        const float *d = w->d + (size_t)j * nb, *m = w->m ? w->m + (size_t)j * nb : NULL;
        for (int i = 0; i < n_x; i++) {
            const int16_t *xr = xq + (size_t)i * width;
            const int32_t *xsr = xs + (size_t)i * nb * 4;
            vf a = vsplat(0.0f);
            for (int b = 0; b < nb; b++) {
                const int16_t *xb = xr + (size_t)b * WL_QBLOCK;
                const v128_t x[4] = {wasm_v128_load(xb), wasm_v128_load(xb + 8), wasm_v128_load(xb + 16),
                                     wasm_v128_load(xb + 24)};
                const vf sd = vmul(wasm_f32x4_convert_i32x4(block_dot(wr + (size_t)b * WL_QBLOCK, x)), vsplat(d[b]));
                a = m ? vadd(a, vadd(sd, vmul(wasm_f32x4_convert_i32x4(wasm_v128_load(xsr + 4 * b)), vsplat(m[b]))))
                      : vadd(a, sd);
            }
            C[(size_t)i * ldc + (j - j0)] = vhsum(a) * sx[i];
        }
    }
}

const wl_qkernels WL_SIMD_NAME(wl_qkernels) = {WL_SIMD_TABLE_NAME, dequantize_rows_wasmsimd, gemv_rows_wasmsimd,
                                               unpack_rows_wasmsimd, idot_rows_wasmsimd};
