/* qgemm.c: products with a quantised frozen weight (see quant.h). Kernel (a): a panel of the weight's rows is
 * dequantised into an f32 tile, then the f32 GEMM of the kernel table runs on it, so every product is the f32
 * product with the dequantised weight. Decoding (M <= 3) is memory-bound and reads the blocks directly. */
#include <string.h>

#include "core/core.h"
#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

/* A panel of rows fills up to this many floats (4 MB): wide enough that the GEMM on it splits into many column
 * pieces, small enough to cost little next to the weights. */
#define WL_QTILE_FLOATS ((size_t)1 << 20)
#define WL_QPANEL_MIN_ROWS 16

size_t wl_qgemm_tile_floats(int max_cols, size_t max_numel) {
    /* at least WL_QPANEL_MIN_ROWS rows per panel, and room for a decoded row padded to whole blocks */
    size_t min_panel = (size_t)WL_QPANEL_MIN_ROWS * (((size_t)max_cols + WL_QBLOCK - 1) / WL_QBLOCK * WL_QBLOCK);
    size_t want = max_numel < WL_QTILE_FLOATS ? max_numel : WL_QTILE_FLOATS; /* a whole weight at most */
    return min_panel > want ? min_panel : want;
}

/* Rows of w per panel: as many as fit the tile, a multiple of 8 (the GEMM's column panels). */
static int panel_rows(const wl_qweight *w, size_t tile_floats) {
    size_t rows = tile_floats / (size_t)w->cols;
    WL_ASSERT(rows >= WL_QPANEL_MIN_ROWS);
    if (rows >= (size_t)w->rows) return w->rows;
    return (int)(rows & ~(size_t)7);
}

typedef struct dequant_job {
    const wl_qkernels *qk;
    const wl_qweight *w;
    int r0, n, pieces, ldd;
    float *dst;
} dequant_job;

static void dequant_task(void *ctx, int p) {
    const dequant_job *j = ctx;
    int b, e;
    wl_split(j->n, j->pieces, p, &b, &e);
    j->qk->dequantize_rows(j->w, j->r0 + b, e - b, j->dst + (size_t)b * j->ldd, j->ldd);
}

void wl_qweight_dequantize_rows(const wl_kernels *k, const wl_qweight *w, int r0, int n, float *dst, int ldd) {
    dequant_job j = {wl_qkernels_for(k), w, r0, n, 1, ldd, dst};
    j.pieces = wl_parallel_pieces(n, 16384 / (w->cols > 0 ? w->cols : 1) + 1);
    wl_parallel_for(j.pieces, dequant_task, &j);
}

typedef struct gemv_job {
    const wl_qkernels *qk;
    const wl_qweight *w;
    const int16_t *xq;
    float sx;
    int pieces;
    float *y;
} gemv_job;

static void gemv_task(void *ctx, int p) {
    const gemv_job *j = ctx;
    int b, e;
    wl_split(j->w->rows, j->pieces, p, &b, &e);
    j->qk->gemv_rows(j->w, j->xq, j->sx, b, e, j->y + b);
}

void wl_qgemm_nt(const wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w, const wl_gemm_term *extra,
                 const float *add, const float *bias, float *C, int ldc, float *tile, size_t tile_floats, int decode) {
    const int N = w->rows, K = w->cols;
    WL_ASSERT(!extra || extra->trans_b == 1);
    if (decode && M <= 3 && add != C) {
        /* Decoding: the weight streams once through the integer GEMV; x, quantised to int16 and zero-padded to
         * whole blocks, sits in the tile. (The GEMV writes C before adding `add`, so add == C takes the panels.) */
        WL_ASSERT((size_t)w->blocks * WL_QBLOCK <= 2 * tile_floats);
        int16_t *xq = (int16_t *)tile;
        for (int m = 0; m < M; m++) {
            const float sx = wl_quantize_activation(A + (size_t)m * lda, K, w->blocks * WL_QBLOCK, xq);
            float *c = C + (size_t)m * ldc;
            gemv_job j = {wl_qkernels_for(k), w, xq, sx, 1, c};
            j.pieces = wl_parallel_pieces(N, 65536 / (K > 0 ? K : 1) + 1);
            wl_parallel_for(j.pieces, gemv_task, &j);
            const float *a = add ? add + (size_t)m * ldc : NULL;
            for (int n = 0; n < N; n++) c[n] = (a ? a[n] : 0.0f) + c[n] + (bias ? bias[n] : 0.0f);
        }
        if (extra) k->gemm(M, N, extra, 1, C, NULL, C, ldc);
        return;
    }
    const int P = panel_rows(w, tile_floats);
    for (int j0 = 0; j0 < N; j0 += P) {
        const int n = N - j0 < P ? N - j0 : P;
        wl_qweight_dequantize_rows(k, w, j0, n, tile, K);
        wl_gemm_term terms[2] = {{A, tile, lda, K, K, 0, 1, 1.0f}};
        int n_terms = 1;
        if (extra) {
            terms[1] = *extra;
            terms[1].B = extra->B + (size_t)j0 * extra->ldb;
            n_terms = 2;
        }
        k->gemm(M, n, terms, n_terms, add ? add + j0 : NULL, bias ? bias + j0 : NULL, C + j0, ldc);
    }
}

void wl_qgemm_nn(const wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w, const wl_gemm_term *extra,
                 const float *add, float *C, int ldc, float *tile, size_t tile_floats) {
    const int Kw = w->rows, N = w->cols;
    WL_ASSERT(!extra || extra->trans_b == 0);
    const int P = panel_rows(w, tile_floats);
    for (int k0 = 0; k0 < Kw; k0 += P) {
        const int kc = Kw - k0 < P ? Kw - k0 : P;
        wl_qweight_dequantize_rows(k, w, k0, kc, tile, N);
        wl_gemm_term terms[2] = {{A + k0, tile, lda, N, kc, 0, 0, 1.0f}};
        int n_terms = 1;
        if (extra && k0 == 0) terms[n_terms++] = *extra;
        k->gemm(M, N, terms, n_terms, k0 == 0 ? add : C, NULL, C, ldc);
    }
}
