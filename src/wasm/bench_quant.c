/* bench_quant.c: wasm exports used only by the benchmarks (tools/bench/quant.js): a quantised weight made from f32
 * values, and the products with it (forward X W^T, input gradient dY W) through the default kernel table. */
#include <stdlib.h>

#include "core/core.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

#ifdef __wasm_simd128__

#define WL_BENCH_EXPORT(name) __attribute__((export_name(name), used))

/* A (rows, cols) weight of `storage` quantised from w, or NULL (a bad storage or no memory). */
WL_BENCH_EXPORT("wl_bench_qweight_make")
wl_qweight *wl_bench_qweight_make(int storage, int rows, int cols, const float *w) {
    if (storage != WL_STORAGE_Q8 && storage != WL_STORAGE_Q4) return NULL;
    wl_qweight *q = malloc(sizeof *q);
    if (!q || wl_qweight_alloc(q, storage, rows, cols) != WL_OK) {
        free(q);
        return NULL;
    }
    for (int r = 0; r < rows; r++) {
        if (wl_qweight_quantize_row(q, r, w + (size_t)r * cols, "bench weight") != WL_OK) {
            wl_qweight_free(q);
            free(q);
            return NULL;
        }
    }
    return q;
}

WL_BENCH_EXPORT("wl_bench_qweight_free") void wl_bench_qweight_free(wl_qweight *q) {
    wl_qweight_free(q);
    free(q);
}

/* reps products with q: op 0 the input gradient C (M, cols) = A (M, rows) W (kernel a); op 1 forward
 * C (M, rows) = A (M, cols) W^T with kernel (a), or for M <= 3 the decoding GEMV; op 2 forward with kernel (b)
 * (integer dot products).
 * Returns 0, or -1 when the panel cannot be allocated. */
WL_BENCH_EXPORT("wl_bench_qgemm")
int wl_bench_qgemm(const wl_qweight *q, int op, int M, const float *A, float *C, int reps) {
    const size_t tile_floats = wl_qgemm_tile_floats(q->cols, (size_t)q->rows * q->cols);
    float *tile = wl_alloc_array(tile_floats, sizeof(float), "bench panel");
    if (!tile) return -1;
    const wl_kernels *k = wl_kernels_default();
    for (int r = 0; r < reps; r++) {
        if (op > 0) {
            wl_qgemm_nt(k, M, A, q->cols, q, NULL, NULL, NULL, C, q->rows, tile, tile_floats,
                        op == 2 || M <= 3 ? WL_QGEMM_INTEGER : WL_QGEMM_EXACT);
        } else {
            wl_qgemm_nn(k, M, A, q->rows, q, NULL, NULL, C, q->cols, tile, tile_floats);
        }
    }
    wl_free(tile);
    return 0;
}

#endif
