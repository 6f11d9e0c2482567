/* quant.c: the reference quantisation of one block (llama.cpp's Q8_0 and Q4_1 rules, see quant.h), the storage of
 * a quantised weight and the scalar kernels that read it (the oracle of the SIMD twin). */
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

/* f16's largest finite value: a block scale must stay below it. */
#define WL_F16_MAX 65504.0f

static size_t block_bytes(int storage) { return storage == WL_STORAGE_Q8 ? WL_QBLOCK : WL_QBLOCK / 2; }

/* f32 values per block beside the quants: a scale, and for Q4 a minimum. */
static size_t block_floats(int storage) { return storage == WL_STORAGE_Q8 ? 1 : 2; }

size_t wl_qweight_bytes_for(int storage, int rows, int cols) {
    size_t blocks = (size_t)rows * (((size_t)cols + WL_QBLOCK - 1) / WL_QBLOCK);
    return blocks * (block_bytes(storage) + block_floats(storage) * sizeof(float));
}

wl_status wl_qweight_alloc(wl_qweight *w, int storage, int rows, int cols) {
    WL_ASSERT(storage == WL_STORAGE_Q8 || storage == WL_STORAGE_Q4);
    memset(w, 0, sizeof *w);
    w->storage = storage;
    w->rows = rows;
    w->cols = cols;
    w->blocks = (cols + WL_QBLOCK - 1) / WL_QBLOCK;
    w->row_bytes = (size_t)w->blocks * block_bytes(storage);
    const size_t n_blocks = (size_t)rows * w->blocks;
    w->q = wl_alloc(n_blocks * block_bytes(storage), "quantised weights");
    w->d = wl_alloc_array(n_blocks, sizeof(float), "quantisation scales");
    if (storage == WL_STORAGE_Q4) w->m = wl_alloc_array(n_blocks, sizeof(float), "quantisation minimums");
    if (!w->q || !w->d || (storage == WL_STORAGE_Q4 && !w->m)) {
        wl_qweight_free(w);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    return WL_OK;
}

void wl_qweight_free(wl_qweight *w) {
    if (!w) return;
    wl_free(w->q);
    wl_free(w->d);
    wl_free(w->m);
    w->q = NULL;
    w->d = NULL;
    w->m = NULL;
}

size_t wl_qweight_bytes(const wl_qweight *w) {
    if (!w->q) return 0;
    return wl_qweight_bytes_for(w->storage, w->rows, w->cols);
}

wl_status wl_qweight_clone(wl_qweight *dst, const wl_qweight *src) {
    wl_status st = wl_qweight_alloc(dst, src->storage, src->rows, src->cols);
    if (st == WL_OK) wl_qweight_copy(dst, src);
    return st;
}

void wl_qweight_copy(wl_qweight *dst, const wl_qweight *src) {
    WL_ASSERT(dst->storage == src->storage && dst->rows == src->rows && dst->cols == src->cols);
    const size_t n_blocks = (size_t)src->rows * src->blocks;
    memcpy(dst->q, src->q, (size_t)src->rows * src->row_bytes);
    memcpy(dst->d, src->d, n_blocks * sizeof(float));
    if (src->m) memcpy(dst->m, src->m, n_blocks * sizeof(float));
}

/* The f32 value of the f16 nearest to x (round-to-nearest-even). */
static float round_to_f16(float x) { return wl_f16_to_f32(wl_f32_to_f16(x)); }

/* 1 / d, or 0 for d = 0 and for a d so small that 1 / d overflows (its f16 scale is 0 either way, so the block is
 * all zeros; ggml would convert infinities to integers there). */
static float safe_inverse(float d) {
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    return isfinite(id) ? id : 0.0f;
}

int wl_quantize_block(int storage, const float *x, int n, float *scale, float *min, uint8_t *q) {
    float amax = 0.0f, lo = n > 0 ? x[0] : 0.0f, hi = lo;
    for (int j = 0; j < n; j++) {
        if (!isfinite(x[j])) return -1;
        amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        lo = x[j] < lo ? x[j] : lo;
        hi = x[j] > hi ? x[j] : hi;
    }
    if (storage == WL_STORAGE_Q8) {
        if (amax >= WL_F16_MAX * 127.0f) return -2;
        const float d = amax / 127.0f;
        const float id = safe_inverse(d);
        *scale = round_to_f16(d);
        memset(q, 0, WL_QBLOCK);
        for (int j = 0; j < n; j++) q[j] = (uint8_t)(int8_t)roundf(x[j] * id);
        return 0;
    }
    /* the minimum and the scale (max - min) / 15 <= 2 amax / 15 both as f16 */
    if (amax >= WL_F16_MAX) return -2;
    const float d = (hi - lo) / 15.0f;
    const float id = safe_inverse(d);
    *scale = round_to_f16(d);
    *min = round_to_f16(lo);
    memset(q, 0, WL_QBLOCK / 2);
    for (int j = 0; j < n; j++) {
        /* (x - min) * id lies in [0, 15] (up to rounding), so + 0.5 truncates to the nearest like ggml's (int8_t)
         * cast in quantize_row_q4_1_ref */
        const int v = (int)((x[j] - lo) * id + 0.5f);
        const uint8_t nib = (uint8_t)(v < 15 ? v : 15);
        const int at = j % (WL_QBLOCK / 2);
        q[at] = j < WL_QBLOCK / 2 ? (uint8_t)((q[at] & 0xf0) | nib) : (uint8_t)((q[at] & 0x0f) | (nib << 4));
    }
    return 0;
}

wl_status wl_qweight_quantize_row(wl_qweight *w, int r, const float *x, const char *what) {
    uint8_t *q = w->q + (size_t)r * w->row_bytes;
    const size_t at = (size_t)r * w->blocks;
    for (int b = 0; b < w->blocks; b++) {
        const int c0 = b * WL_QBLOCK, n = w->cols - c0 < WL_QBLOCK ? w->cols - c0 : WL_QBLOCK;
        float unused;
        const int rc = wl_quantize_block(w->storage, x + c0, n, &w->d[at + b], w->m ? &w->m[at + b] : &unused,
                                         q + (size_t)b * block_bytes(w->storage));
        if (rc == -1) return wl_fail(WL_STATUS_NUMERIC, "%s: row %d holds a NaN or infinite value", what, r);
        if (rc == -2)
            return wl_fail(WL_STATUS_NUMERIC, "%s: row %d, values %d..%d are too large for f16 block scales", what, r,
                           c0, c0 + n - 1);
    }
    return WL_OK;
}

/* ---- scalar kernels (the oracle) ---- */

static void dequantize_rows_scalar(const wl_qweight *w, int r0, int n_rows, float *dst, int ldd) {
    for (int r = 0; r < n_rows; r++)
        for (int c = 0; c < w->cols; c++) dst[(size_t)r * ldd + c] = wl_qweight_value(w, r0 + r, c);
}

float wl_quantize_activation(const float *x, int n, int padded_n, int16_t *xq, int32_t *xs) {
    float amax = 0.0f;
    for (int c = 0; c < n; c++) amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
    const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
    for (int c = 0; c < n; c++) xq[c] = (int16_t)nearbyintf(x[c] * inv);
    for (int c = n; c < padded_n; c++) xq[c] = 0;
    for (int b = 0; b < padded_n / WL_QBLOCK; b++)
        for (int lane = 0; lane < 4; lane++) {
            int32_t s = 0;
            for (int k = 0; k < 4; k++) s += xq[b * WL_QBLOCK + 8 * k + 2 * lane] + xq[b * WL_QBLOCK + 8 * k + 2 * lane + 1];
            xs[4 * b + lane] = s;
        }
    return amax / 32767.0f;
}

/* The integer product of row j of w with one quantised activation row, in gemv_rows's order; the quants of row j come
 * from wq (blocks * 32 int16) or, when wq is NULL, from the blocks themselves. */
static float idot_row_scalar(const wl_qweight *w, const int16_t *wq, int j, const int16_t *xq, const int32_t *xs,
                             float sx) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int b = 0; b < w->blocks; b++) {
        const size_t at = (size_t)j * w->blocks + b;
        for (int lane = 0; lane < 4; lane++) {
            int32_t s = 0;
            for (int k = 0; k < 4; k++) {
                for (int e = 0; e < 2; e++) {
                    /* padding activations are 0, so whole blocks can be summed */
                    const int c = b * WL_QBLOCK + 8 * k + 2 * lane + e;
                    s += (int32_t)xq[c] * (wq ? wq[c] : wl_qweight_int(w, j, c));
                }
            }
            if (w->m)
                acc[lane] += (float)s * w->d[at] + (float)xs[4 * b + lane] * w->m[at];
            else
                acc[lane] += (float)s * w->d[at];
        }
    }
    return ((acc[0] + acc[2]) + (acc[1] + acc[3])) * sx;
}

static void gemv_rows_scalar(const wl_qweight *w, const int16_t *xq, const int32_t *xs, float sx, int j0, int j1,
                             float *y) {
    for (int j = j0; j < j1; j++) y[j - j0] = idot_row_scalar(w, NULL, j, xq, xs, sx);
}

static void unpack_rows_scalar(const wl_qweight *w, int r0, int n, int16_t *wq) {
    const size_t width = (size_t)w->blocks * WL_QBLOCK;
    for (int r = 0; r < n; r++)
        for (size_t c = 0; c < width; c++) wq[(size_t)r * width + c] = (int16_t)wl_qweight_int(w, r0 + r, (int)c);
}

static void idot_rows_scalar(const wl_qweight *w, const int16_t *wq, int j0, int j1, int n_x, const int16_t *xq,
                             const int32_t *xs, const float *sx, float *C, int ldc) {
    const size_t width = (size_t)w->blocks * WL_QBLOCK;
    for (int i = 0; i < n_x; i++)
        for (int j = j0; j < j1; j++)
            C[(size_t)i * ldc + j - j0] = idot_row_scalar(w, wq + (size_t)(j - j0) * width, j, xq + (size_t)i * width,
                                                          xs + (size_t)i * w->blocks * 4, sx[i]);
}

const wl_qkernels wl_qkernels_scalar = {"scalar", dequantize_rows_scalar, gemv_rows_scalar, unpack_rows_scalar,
                                        idot_rows_scalar};

const wl_qkernels *wl_qkernels_for(const wl_kernels *k) {
#ifdef WL_HAVE_WASMSIMD
    if (k == &wl_kernels_wasmsimd) return &wl_qkernels_wasmsimd;
#endif
#ifdef WL_HAVE_WASMRELAXED
    if (k == &wl_kernels_wasmrelaxed) return &wl_qkernels_wasmrelaxed;
#endif
    (void)k;
    return &wl_qkernels_scalar;
}
