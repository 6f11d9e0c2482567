/* quant.h: the 8-bit and 4-bit storage of frozen weights (llama.cpp's Q8_0 and Q4_0 blocks), its reference
 * quantisation and dequantisation, and the kernels that read it.
 *
 * A quantised weight W (rows, cols) = (out, in) is cut into blocks of WL_QBLOCK = 32 consecutive values along a row
 * (the input dimension); a row whose length is not a multiple of 32 ends with a shorter block, padded with quants
 * that stand for 0. Each block has one scale d (an f16 value, kept as the f32 it converts to exactly) and 32 small
 * integers q, and stands for the values d * q:
 *  - Q8 (llama.cpp Q8_0): d = amax / 127 (amax = the largest |x| of the block), q = roundf(x / d) in [-127, 127].
 *  - Q4 (llama.cpp Q4_0): m = the value of largest magnitude (the first one on ties), d = m / -8,
 *    q = min(15, (int)(x / d + 8.5)) - 8 in [-8, 7]: m itself becomes -8 exactly.
 * Both compute q with the unrounded d (through 1 / d, as ggml-quants.c does) and keep d rounded to f16
 * (round-to-nearest-even). Error bounds per value: Q8 |x - d q| <= |d| / 2 + 127 |d - d16|; Q4 the same with |d|
 * (the value opposite the block's extreme may clamp from +8 to +7) and 8 |d - d16|. NaN or infinite values and
 * blocks too large for an f16 scale are refused. (A least-squares choice of the Q4 scale, as llama.cpp's
 * make_qx_quants does, was measured: it cut stories260K's q4 perplexity cost only from 18.7% to 17.8%, at 20 times
 * the quantisation work while loading, so the plain rule stays.)
 *
 * Memory layout (struct of arrays, so the kernels read rows of quants with plain vector loads): quants row by row,
 * `row_bytes` bytes per row; Q8 one int8 per value; Q4 16 bytes per block, byte j holding value j in its low nibble
 * and value j + 16 in its high nibble, both stored as q + 8 (Q4_0's nibble order). Scales row by row, `blocks` per
 * row.
 */
#ifndef WL_QUANT_H
#define WL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "wl_model.h"
#include "kernels/kernels.h"

struct wl_kernels;   /* kernels.h */
struct wl_gemm_term; /* kernels.h */

#define WL_QBLOCK 32

/* A quantised weight (rows, cols) = (out, in). */
typedef struct wl_qweight {
    int storage;      /* WL_STORAGE_Q8 or WL_STORAGE_Q4 */
    int rows, cols;
    int blocks;       /* blocks per row: ceil(cols / 32) */
    size_t row_bytes; /* quant bytes per row: blocks * 32 (Q8) or blocks * 16 (Q4) */
    uint8_t *q;       /* (rows, row_bytes) */
    float *d;         /* (rows, blocks) */
} wl_qweight;

/* Bytes of quants and number of scales of a (rows, cols) weight of a quantised storage type. */
size_t wl_qweight_quant_bytes(int storage, int rows, int cols);
size_t wl_qweight_scale_count(int rows, int cols);

/* Allocate the quants and scales of w (storage, rows, cols set by this call); wl_qweight_free releases them. */
wl_status wl_qweight_alloc(wl_qweight *w, int storage, int rows, int cols);
void wl_qweight_free(wl_qweight *w);
size_t wl_qweight_bytes(const wl_qweight *w);

/* Quantise one block of n <= 32 values into its scale and quants (Q8: n bytes at q, the rest of 32 set to 0; Q4:
 * the 16-byte block at q, whose nibbles past n stand for 0). Returns 0 on success, -1 when a value is not finite,
 * -2 when the block's magnitude is too large for an f16 scale. */
int wl_quantize_block(int storage, const float *x, int n, float *scale, uint8_t *q);

/* Quantise row r of w from cols values at x. Fails (WL_STATUS_NUMERIC, naming `what`) like wl_quantize_block. */
wl_status wl_qweight_quantize_row(wl_qweight *w, int r, const float *x, const char *what);

/* The quantised integer of value c (< cols) of row r, and its dequantised value (the scalar reference). */
static inline int wl_qweight_int(const wl_qweight *w, int r, int c) {
    const uint8_t *row = w->q + (size_t)r * w->row_bytes;
    if (w->storage == WL_STORAGE_Q8) return (int8_t)row[c];
    const uint8_t byte = row[(size_t)(c / WL_QBLOCK) * (WL_QBLOCK / 2) + (c % WL_QBLOCK) % (WL_QBLOCK / 2)];
    return (int)((c % WL_QBLOCK) < WL_QBLOCK / 2 ? byte & 15 : byte >> 4) - 8;
}
static inline float wl_qweight_value(const wl_qweight *w, int r, int c) {
    return w->d[(size_t)r * w->blocks + c / WL_QBLOCK] * (float)wl_qweight_int(w, r, c);
}

/* Kernels over quantised weights, scalar reference and wasm SIMD twin. They never allocate and never fail. */
typedef struct wl_qkernels {
    const char *name;
    /* dst (n_rows, ldd): rows [r0, r0 + n_rows) of w dequantised, w->cols values each. */
    void (*dequantize_rows)(const wl_qweight *w, int r0, int n_rows, float *dst, int ldd);
    /* The decoding GEMV with integer dot products: y[j - j0] = sx * sum over c of xq[c] * W[j, c] for j in [j0, j1),
     * where xq (blocks * 32 int16, zero past cols) and sx come from wl_quantize_activation. Exactly: in each block b,
     * lane i (0..3) of the block's integer sum takes the values 8k + 2i and 8k + 2i + 1 (k = 0..3) (the lanes of
     * i32x4.dot_i16x8_s), acc[i] += (float)lane_i * d_b block after block in f32, and
     * y = ((acc[0] + acc[2]) + (acc[1] + acc[3])) * sx. Integer sums are exact (|sum| < 32 * 32767 * 128), so the
     * scalar and SIMD twins are bit-identical. */
    void (*gemv_rows)(const wl_qweight *w, const int16_t *xq, float sx, int j0, int j1, float *y);
} wl_qkernels;

/* x (n values) quantised for gemv_rows: xq[c] = nearest-even(x[c] * (32767 / amax)) (0 for amax = 0), zero up to
 * padded_n; returns sx = amax / 32767. Each value is off by at most sx / 2 (relative 2^-16 of the row's largest). */
float wl_quantize_activation(const float *x, int n, int padded_n, int16_t *xq);

extern const wl_qkernels wl_qkernels_scalar;
/* One SIMD twin per flavour of the f32 tables (kernels/kernels.h); both flavours compile the same source. */
#ifdef WL_HAVE_WASMSIMD
extern const wl_qkernels wl_qkernels_wasmsimd;
#endif
#ifdef WL_HAVE_WASMRELAXED
extern const wl_qkernels wl_qkernels_wasmrelaxed;
#endif
/* The quantised kernels that go with an f32 kernel table (the SIMD twin with a SIMD table). */
const wl_qkernels *wl_qkernels_for(const struct wl_kernels *k);

/* ---- Products with a quantised weight (qgemm.c): dequantise a panel of rows into tile, run the f32 GEMM on it ----
 * Exact with respect to the dequantised weight: the f32 GEMM sees the very values d * q. The weight is dequantised
 * in panels of rows that fill `tile` (at least 16 rows of the widest weight, padded to whole blocks, as
 * wl_qgemm_tile_floats gives), each panel once per call, in parallel; panel sizes depend on the shape alone, so
 * results do not depend on the threads. */

/* Floats of tile the products below want for weights of up to max_cols columns and max_numel values. */
size_t wl_qgemm_tile_floats(int max_cols, size_t max_numel);

/* C (M, w->rows) = add + A (M, w->cols; row stride lda) W^T + extra + bias. extra (NULL or one term with
 * trans_b = 1 whose op(B) has w->rows columns: a LoRA update s (x A^T) B^T) joins each panel's GEMM. add: NULL, C
 * or an (M, rows) matrix with row stride ldc. With `decode`, M <= 3 and add != C the rows of A are quantised to int16
 * (wl_quantize_activation) and the blocks read directly by the integer GEMV, in parallel over rows: memory-bound
 * decoding, not exact with respect to the dequantised weights (a relative 2^-16 of each row's largest activation);
 * without it (training) every product is the f32 one. */
void wl_qgemm_nt(const struct wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w,
                 const struct wl_gemm_term *extra, const float *add, const float *bias, float *C, int ldc, float *tile,
                 size_t tile_floats, int decode);

/* C (M, w->cols) = add + A (M, w->rows; row stride lda) W + extra: the input gradient dY W of y = x W^T. The sum
 * over w->rows runs panel by panel; extra (NULL or one term with trans_b = 0 and w->cols columns) joins the first. */
void wl_qgemm_nn(const struct wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w,
                 const struct wl_gemm_term *extra, const float *add, float *C, int ldc, float *tile, size_t tile_floats);

/* dst (rows [r0, r0 + n) of w, row stride ldd) dequantised in parallel. */
void wl_qweight_dequantize_rows(const struct wl_kernels *k, const wl_qweight *w, int r0, int n, float *dst, int ldd);

#endif
