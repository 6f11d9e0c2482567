/* quant.c: the reference quantisation of one block (llama.cpp's Q8_0 and Q4_0 rules, see quant.h), the storage of
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

size_t wl_qweight_quant_bytes(int storage, int rows, int cols) {
    size_t blocks = ((size_t)cols + WL_QBLOCK - 1) / WL_QBLOCK;
    return (size_t)rows * blocks * block_bytes(storage);
}

size_t wl_qweight_scale_count(int rows, int cols) { return (size_t)rows * (((size_t)cols + WL_QBLOCK - 1) / WL_QBLOCK); }

wl_status wl_qweight_alloc(wl_qweight *w, int storage, int rows, int cols) {
    WL_ASSERT(storage == WL_STORAGE_Q8 || storage == WL_STORAGE_Q4);
    memset(w, 0, sizeof *w);
    w->storage = storage;
    w->rows = rows;
    w->cols = cols;
    w->blocks = (cols + WL_QBLOCK - 1) / WL_QBLOCK;
    w->row_bytes = (size_t)w->blocks * block_bytes(storage);
    w->q = wl_alloc(wl_qweight_quant_bytes(storage, rows, cols), "quantised weights");
    w->d = wl_alloc_array(wl_qweight_scale_count(rows, cols), sizeof(float), "quantisation scales");
    if (!w->q || !w->d) {
        wl_qweight_free(w);
        return WL_STATUS_OUT_OF_MEMORY;
    }
    return WL_OK;
}

void wl_qweight_free(wl_qweight *w) {
    if (!w) return;
    wl_free(w->q);
    wl_free(w->d);
    w->q = NULL;
    w->d = NULL;
}

size_t wl_qweight_bytes(const wl_qweight *w) {
    if (!w->q) return 0;
    return (size_t)w->rows * w->row_bytes + (size_t)w->rows * w->blocks * sizeof(float);
}

/* The f32 value of the f16 nearest to x (round-to-nearest-even). */
static float round_to_f16(float x) { return wl_f16_to_f32(wl_f32_to_f16(x)); }

/* 1 / d, or 0 for d = 0 and for a d so small that 1 / d overflows (its f16 scale is 0 either way, so the block is
 * all zeros; ggml would convert infinities to integers there). */
static float safe_inverse(float d) {
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    return isfinite(id) ? id : 0.0f;
}

int wl_quantize_block(int storage, const float *x, int n, float *scale, uint8_t *q) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (!isfinite(x[j])) return -1;
        /* The first value of the largest magnitude wins, as in ggml's quantize_row_q4_0_ref. */
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
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
    if (amax >= WL_F16_MAX * 8.0f) return -2;
    const float d = max / -8.0f;
    const float id = safe_inverse(d);
    *scale = round_to_f16(d);
    memset(q, 0x88, WL_QBLOCK / 2); /* nibble 8 stands for 0 */
    for (int j = 0; j < n; j++) {
        /* x * id lies in [-8, 8] (up to rounding), so x * id + 8.5 is in [0.5, 16.5] and truncates like ggml's
         * (int8_t) cast. */
        const int v = (int)(x[j] * id + 8.5f);
        const uint8_t nib = (uint8_t)(v < 15 ? v : 15);
        const int at = j % (WL_QBLOCK / 2);
        q[at] = j < WL_QBLOCK / 2 ? (uint8_t)((q[at] & 0xf0) | nib) : (uint8_t)((q[at] & 0x0f) | (nib << 4));
    }
    return 0;
}

wl_status wl_qweight_quantize_row(wl_qweight *w, int r, const float *x, const char *what) {
    uint8_t *q = w->q + (size_t)r * w->row_bytes;
    float *d = w->d + (size_t)r * w->blocks;
    for (int b = 0; b < w->blocks; b++) {
        const int c0 = b * WL_QBLOCK, n = w->cols - c0 < WL_QBLOCK ? w->cols - c0 : WL_QBLOCK;
        const int rc = wl_quantize_block(w->storage, x + c0, n, &d[b], q + (size_t)b * block_bytes(w->storage));
        if (rc == -1) return wl_fail(WL_STATUS_NUMERIC, "%s: row %d holds a NaN or infinite value", what, r);
        if (rc == -2)
            return wl_fail(WL_STATUS_NUMERIC, "%s: row %d, values %d..%d are too large for an f16 block scale", what, r,
                           c0, c0 + n - 1);
    }
    return WL_OK;
}

/* ---- scalar kernels (the oracle) ---- */

static void dequantize_rows_scalar(const wl_qweight *w, int r0, int n_rows, float *dst, int ldd) {
    for (int r = 0; r < n_rows; r++)
        for (int c = 0; c < w->cols; c++) dst[(size_t)r * ldd + c] = wl_qweight_value(w, r0 + r, c);
}

float wl_quantize_activation(const float *x, int n, int padded_n, int16_t *xq) {
    float amax = 0.0f;
    for (int c = 0; c < n; c++) amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
    const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
    for (int c = 0; c < n; c++) xq[c] = (int16_t)nearbyintf(x[c] * inv);
    for (int c = n; c < padded_n; c++) xq[c] = 0;
    return amax / 32767.0f;
}

static void gemv_rows_scalar(const wl_qweight *w, const int16_t *xq, float sx, int j0, int j1, float *y) {
    for (int j = j0; j < j1; j++) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int b = 0; b < w->blocks; b++) {
            const float d = w->d[(size_t)j * w->blocks + b];
            for (int lane = 0; lane < 4; lane++) {
                int32_t s = 0;
                for (int k = 0; k < 4; k++) {
                    for (int e = 0; e < 2; e++) {
                        /* padding quants stand for 0, so whole blocks can be summed */
                        const int c = b * WL_QBLOCK + 8 * k + 2 * lane + e;
                        const int q = c < w->cols ? wl_qweight_int(w, j, c) : 0;
                        s += (int32_t)xq[c] * q;
                    }
                }
                acc[lane] += (float)s * d;
            }
        }
        y[j - j0] = ((acc[0] + acc[2]) + (acc[1] + acc[3])) * sx;
    }
}

const wl_qkernels wl_qkernels_scalar = {"scalar", dequantize_rows_scalar, gemv_rows_scalar};

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
