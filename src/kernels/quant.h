/* quant.h: the 8-bit and 4-bit storage of frozen weights (llama.cpp's Q8_0 and Q4_1 blocks), its reference
 * quantisation and dequantisation, and the kernels that read it.
 *
 * A quantised weight W (rows, cols) = (out, in) is cut into blocks of WL_QBLOCK = 32 consecutive values along a row
 * (the input dimension); a row whose length is not a multiple of 32 ends with a shorter block, padded with quants
 * that are never read as values (dequantising stops at cols; the integer GEMV meets them with activations of 0).
 * Each block has a scale d, a Q4 block also a minimum m (f16 values, kept as the f32 they convert to exactly), and
 * 32 small integers q:
 *  - Q8 (llama.cpp Q8_0): value d q; d = amax / 127 (amax = the largest |x| of the block), q = roundf(x / d) in
 *    [-127, 127].
 *  - Q4 (llama.cpp Q4_1): value d q + m; m = the block's smallest value, d = (max - m) / 15,
 *    q = min(15, (int)((x - m) / d + 0.5)) in [0, 15].
 * Both compute q with the unrounded d and m (through 1 / d, as ggml-quants.c does) and keep d and m rounded to f16
 * (round-to-nearest-even). Error bounds per value: Q8 |x - d q| <= |d| / 2 + 127 |d - d16|; Q4
 * |x - (d16 q + m16)| <= d / 2 + 15 |d - d16| + |m - m16|. NaN or infinite values and blocks too large for f16
 * scales are refused.
 *
 * Why Q4_1 and not Q4_0 or NF4: on stories260K (held-out perplexity, f32 4.271) Q4_0 costs 18.7%, Q4_0 with a
 * least-squares scale (llama.cpp's make_qx_quants) 17.5%, NF4 (QLoRA's normal-float codebook, absmax scale) 16.6%,
 * Q4_1 11.5%; on the default model all stay within 1.7%. A quantised model also keeps its token embedding and LM head
 * in Q8 when its matrices are Q4 (wl_model.h), as llama.cpp's 4-bit mixes keep output.weight at 6 or 8 bits: with it
 * Q4_1 costs stories260K 8.4% (Q4_0 14.8%, NF4 15.6%).
 *
 * Memory layout (struct of arrays, so the kernels read rows of quants with plain vector loads): quants row by row,
 * `row_bytes` bytes per row; Q8 one int8 per value; Q4 16 bytes per block, byte j holding value j in its low nibble
 * and value j + 16 in its high nibble (Q4_1's nibble order). Scales (and Q4 minimums) row by row, `blocks` per row.
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
    float *d;         /* (rows, blocks) scales */
    float *m;         /* (rows, blocks) minimums of Q4 blocks; NULL for Q8 */
} wl_qweight;

/* Bytes of a (rows, cols) weight of a quantised storage type: its quants, scales and minimums. */
size_t wl_qweight_bytes_for(int storage, int rows, int cols);

/* Allocate the quants and scales of w (storage, rows, cols set by this call); wl_qweight_free releases them. */
wl_status wl_qweight_alloc(wl_qweight *w, int storage, int rows, int cols);
void wl_qweight_free(wl_qweight *w);
size_t wl_qweight_bytes(const wl_qweight *w);
/* dst: a new allocation holding src's quants, scales and minimums (free with wl_qweight_free). */
wl_status wl_qweight_clone(wl_qweight *dst, const wl_qweight *src);
/* src's quants, scales and minimums into dst, a weight of the same storage and shape. */
void wl_qweight_copy(wl_qweight *dst, const wl_qweight *src);

/* Quantise one block of n <= 32 values into its scale, minimum (Q4; *min is not written for Q8) and quants (Q8: n
 * bytes at q, the rest of 32 set to 0; Q4: the 16-byte block at q, nibbles past n set to 0). Returns 0 on success,
 * -1 when a value is not finite, -2 when the block's magnitude is too large for f16 scales. */
int wl_quantize_block(int storage, const float *x, int n, float *scale, float *min, uint8_t *q);

/* Quantise row r of w from cols values at x. Fails (WL_STATUS_NUMERIC, naming `what`) like wl_quantize_block. */
wl_status wl_qweight_quantize_row(wl_qweight *w, int r, const float *x, const char *what);

/* The quantised integer of value c (< blocks * 32) of row r, and the dequantised value of c < cols (the scalar
 * reference: d q for Q8, d q + m for Q4). */
static inline int wl_qweight_int(const wl_qweight *w, int r, int c) {
    const uint8_t *row = w->q + (size_t)r * w->row_bytes;
    if (w->storage == WL_STORAGE_Q8) return (int8_t)row[c];
    const uint8_t byte = row[(size_t)(c / WL_QBLOCK) * (WL_QBLOCK / 2) + (c % WL_QBLOCK) % (WL_QBLOCK / 2)];
    return (c % WL_QBLOCK) < WL_QBLOCK / 2 ? byte & 15 : byte >> 4;
}
static inline float wl_qweight_value(const wl_qweight *w, int r, int c) {
    const size_t b = (size_t)r * w->blocks + c / WL_QBLOCK;
    const float dq = w->d[b] * (float)wl_qweight_int(w, r, c);
    return w->m ? dq + w->m[b] : dq;
}

/* Kernels over quantised weights, scalar reference and wasm SIMD twin. They never allocate and never fail. */
typedef struct wl_qkernels {
    const char *name;
    /* dst (n_rows, ldd): rows [r0, r0 + n_rows) of w dequantised, w->cols values each. */
    void (*dequantize_rows)(const wl_qweight *w, int r0, int n_rows, float *dst, int ldd);
    /* The decoding GEMV with integer dot products: y[j - j0] = sx * sum over c of xq[c] * W[j, c] for j in [j0, j1),
     * where xq (blocks * 32 int16, zero past cols), its lane sums xs and sx come from wl_quantize_activation.
     * Exactly: in each block b, lane i (0..3) of the block's integer sum s_i takes the values 8k + 2i and
     * 8k + 2i + 1 (k = 0..3) (the lanes of i32x4.dot_i16x8_s), acc[i] += (float)s_i * d_b (Q8) or
     * acc[i] += (float)s_i * d_b + (float)xs[4b + i] * m_b (Q4) block after block in f32, and
     * y = ((acc[0] + acc[2]) + (acc[1] + acc[3])) * sx. Integer sums are exact (|sum| < 32 * 32767 * 128), so the
     * scalar and SIMD twins are bit-identical. */
    void (*gemv_rows)(const wl_qweight *w, const int16_t *xq, const int32_t *xs, float sx, int j0, int j1, float *y);
    /* wq (n, blocks * 32 int16): the quants of rows [r0, r0 + n) of w widened to int16 (padding quants kept), the
     * panel kernel (b) multiplies. */
    void (*unpack_rows)(const wl_qweight *w, int r0, int n, int16_t *wq);
    /* Kernel (b), integer dot products for many rows of X: C[i * ldc + j - j0] for i < n_x, j in [j0, j1) is exactly
     * gemv_rows's y[j - j0] for the quantised row i of X (xq + i * blocks * 32, xs + i * blocks * 4, sx[i]), with
     * the quants of row j read from wq + (j - j0) * blocks * 32 (unpack_rows of row j0 onwards). */
    void (*idot_rows)(const wl_qweight *w, const int16_t *wq, int j0, int j1, int n_x, const int16_t *xq,
                      const int32_t *xs, const float *sx, float *C, int ldc);
} wl_qkernels;

/* x (n values) quantised for gemv_rows: xq[c] = nearest-even(x[c] * (32767 / amax)) (0 for amax = 0), zero up to
 * padded_n (a multiple of 32); xs (padded_n / 8 values): xs[4b + i] = the sum of xq over lane i of block b (values
 * 32b + 8k + 2i and 32b + 8k + 2i + 1, k = 0..3), which meets a Q4 block's minimum. Returns sx = amax / 32767. Each
 * value is off by at most sx / 2 (relative 2^-16 of the row's largest). */
float wl_quantize_activation(const float *x, int n, int padded_n, int16_t *xq, int32_t *xs);

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

/* ---- Products with a quantised weight (qgemm.c) ----
 * Kernel (a): dequantise a panel of rows into tile, run the f32 GEMM on it. Exact with respect to the dequantised
 * weight: the f32 GEMM sees the very values d q (+ m). The weight is dequantised in panels of rows that fill `tile`
 * (at least 16 rows of the widest weight, padded to whole blocks, as wl_qgemm_tile_floats gives), each panel once per
 * call, in parallel; panel sizes depend on the shape alone, so results do not depend on the threads.
 * Kernel (b), integer: each row of A is quantised to int16 (wl_quantize_activation) and meets the quants in
 * i32x4.dot_i16x8_s, scaled per block in f32 (the decoding GEMV's arithmetic, gemv_rows); for M > 3 the quants are
 * widened to int16 panel by panel first (idot_rows). Not exact with respect to the dequantised weights: each
 * activation is off by up to a relative 2^-16 of its row's largest. */

/* Floats of tile the products below want for weights of up to max_cols columns and max_numel values. */
size_t wl_qgemm_tile_floats(int max_cols, size_t max_numel);

/* C (M, w->rows) = add + A (M, w->cols; row stride lda) W^T + extra + bias. extra (NULL or one term with
 * trans_b = 1 whose op(B) has w->rows columns: a LoRA update s (x A^T) B^T) joins each panel's GEMM. add: NULL, C
 * or an (M, rows) matrix with row stride ldc. kernel: WL_QGEMM_EXACT (training: kernel a, every product the f32 one),
 * WL_QGEMM_FORWARD (forward-only work: decoding, prefill, evaluation: kernel b where it is faster, with add != C:
 * the GEMV straight from the blocks for M <= 3, idot_rows up to WL_QGEMM_INT_MAX_ROWS rows; kernel a beyond) or
 * WL_QGEMM_INTEGER (kernel b at every M with add != C; the benchmark's comparison).
 * Measured in `npm run bench` on SmolLM2-135M's shapes (one thread, relaxed build): kernel b runs 1.5-4x kernel a's
 * rate at 4-8 rows, where a is bound by dequantising the whole weight for few rows, and no faster from about 32
 * rows on: each block of 32 takes 4 dot_i16x8 and 3 adds for its integer sum, then a conversion, a multiply and an
 * add to scale it, about as many instructions per multiply-add as the f32 micro-kernel's fused multiply-adds. */
enum { WL_QGEMM_EXACT = 0, WL_QGEMM_FORWARD = 1, WL_QGEMM_INTEGER = 2 };
#define WL_QGEMM_INT_MAX_ROWS 16
void wl_qgemm_nt(const struct wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w,
                 const struct wl_gemm_term *extra, const float *add, const float *bias, float *C, int ldc, float *tile,
                 size_t tile_floats, int kernel);

/* C (M, w->cols) = add + A (M, w->rows; row stride lda) W + extra: the input gradient dY W of y = x W^T. The sum
 * over w->rows runs panel by panel; extra (NULL or one term with trans_b = 0 and w->cols columns) joins the first. */
void wl_qgemm_nn(const struct wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w,
                 const struct wl_gemm_term *extra, const float *add, float *C, int ldc, float *tile, size_t tile_floats);

/* dst (rows [r0, r0 + n) of w, row stride ldd) dequantised in parallel. */
void wl_qweight_dequantize_rows(const struct wl_kernels *k, const wl_qweight *w, int r0, int n, float *dst, int ldd);

#endif
