/* qgemm.c: products with a quantised frozen weight (see quant.h). Kernel (a): a panel of the weight's rows is
 * dequantised into an f32 tile, then the f32 GEMM of the kernel table runs on it, so every product is the f32
 * product with the dequantised weight. Kernel (b): integer dot products with activations quantised per row; decoding
 * (M <= 3) is memory-bound and reads the blocks directly, a few more rows widen panels of quants to int16 first. */
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
    const int32_t *xs;
    float sx;
    int pieces;
    float *y;
} gemv_job;

static void gemv_task(void *ctx, int p) {
    const gemv_job *j = ctx;
    int b, e;
    wl_split(j->w->rows, j->pieces, p, &b, &e);
    j->qk->gemv_rows(j->w, j->xq, j->xs, j->sx, b, e, j->y + b);
}

/* Decoding: the weight streams once through the integer GEMV per row of A; x, quantised to int16 and zero-padded
 * to whole blocks, and its lane sums sit in the tile (32 int16 and 4 int32 per block: 20 floats). */
static void qgemv(const wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w, float *C, int ldc,
                  float *tile, size_t tile_floats) {
    const int N = w->rows, K = w->cols;
    WL_ASSERT((size_t)w->blocks * 20 <= tile_floats);
    int16_t *xq = (int16_t *)tile;
    int32_t *xs = (int32_t *)(tile + (size_t)w->blocks * (WL_QBLOCK / 2));
    for (int m = 0; m < M; m++) {
        const float sx = wl_quantize_activation(A + (size_t)m * lda, K, w->blocks * WL_QBLOCK, xq, xs);
        gemv_job j = {wl_qkernels_for(k), w, xq, xs, sx, 1, C + (size_t)m * ldc};
        j.pieces = wl_parallel_pieces(N, 65536 / (K > 0 ? K : 1) + 1);
        wl_parallel_for(j.pieces, gemv_task, &j);
    }
}

typedef struct unpack_job {
    const wl_qkernels *qk;
    const wl_qweight *w;
    int r0, n, pieces;
    int16_t *dst;
} unpack_job;

static void unpack_task(void *ctx, int p) {
    const unpack_job *j = ctx;
    int b, e;
    wl_split(j->n, j->pieces, p, &b, &e);
    j->qk->unpack_rows(j->w, j->r0 + b, e - b, j->dst + (size_t)b * j->w->blocks * WL_QBLOCK);
}

typedef struct idot_job {
    const wl_qkernels *qk;
    const wl_qweight *w;
    const int16_t *wq, *xq;
    const int32_t *xs;
    const float *sx;
    int j0, n, n_x, pieces, ldc;
    float *C;
} idot_job;

static void idot_task(void *ctx, int p) {
    const idot_job *j = ctx;
    int b, e;
    wl_split(j->n / 4, j->pieces, p, &b, &e); /* whole groups of 4 rows of W, the kernel's pass */
    b *= 4;
    e = p == j->pieces - 1 ? j->n : 4 * e;
    j->qk->idot_rows(j->w, j->wq + (size_t)b * j->w->blocks * WL_QBLOCK, j->j0 + b, j->j0 + e, j->n_x, j->xq, j->xs,
                     j->sx, j->C + j->j0 + b, j->ldc);
}

/* Kernel (b): rows of A quantised to int16 in chunks (each with its lane sums and scale) in the first half of the
 * tile, panels of W widened to int16 in the second, and every product of the two in integer dot products, each as
 * the decoding GEMV computes it. */
static void qgemm_int(const wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w, float *C, int ldc,
                      float *tile, size_t tile_floats) {
    const wl_qkernels *qk = wl_qkernels_for(k);
    const int N = w->rows, K = w->cols;
    const size_t width = (size_t)w->blocks * WL_QBLOCK, half = tile_floats / 2 * sizeof(float);
    const size_t row_bytes = width * sizeof(int16_t) + (size_t)w->blocks * 4 * sizeof(int32_t) + sizeof(float);
    const int chunk = half / row_bytes < (size_t)M ? (int)(half / row_bytes) : M;
    const int P = (int)(half / (width * sizeof(int16_t))) < N ? (int)(half / (width * sizeof(int16_t))) & ~3 : N;
    WL_ASSERT(chunk >= 1 && (P >= 4 || P == N));
    int16_t *xq = (int16_t *)tile, *wq = (int16_t *)((char *)tile + half);
    int32_t *xs = (int32_t *)(xq + (size_t)chunk * width);
    float *sx = (float *)(xs + (size_t)chunk * w->blocks * 4);
    for (int m0 = 0; m0 < M; m0 += chunk) {
        const int n_x = M - m0 < chunk ? M - m0 : chunk;
        for (int i = 0; i < n_x; i++)
            sx[i] = wl_quantize_activation(A + (size_t)(m0 + i) * lda, K, (int)width, xq + (size_t)i * width,
                                           xs + (size_t)i * w->blocks * 4);
        for (int j0 = 0; j0 < N; j0 += P) {
            const int n = N - j0 < P ? N - j0 : P;
            unpack_job u = {qk, w, j0, n, 1, wq};
            u.pieces = wl_parallel_pieces(n, 16384 / (K > 0 ? K : 1) + 1);
            wl_parallel_for(u.pieces, unpack_task, &u);
            idot_job d = {qk, w, wq, xq, xs, sx, j0, n, n_x, 1, ldc, C + (size_t)m0 * ldc};
            d.pieces = wl_parallel_pieces(n / 4 > 0 ? n / 4 : 1, 1 + 16384 / (4 * n_x * K + 1));
            wl_parallel_for(d.pieces, idot_task, &d);
        }
    }
}

void wl_qgemm_nt(const wl_kernels *k, int M, const float *A, int lda, const wl_qweight *w, const wl_gemm_term *extra,
                 const float *add, const float *bias, float *C, int ldc, float *tile, size_t tile_floats,
                 int kernel) {
    const int N = w->rows, K = w->cols;
    WL_ASSERT(!extra || extra->trans_b == 1);
    const int integer = kernel == WL_QGEMM_INTEGER || (kernel == WL_QGEMM_FORWARD && M <= WL_QGEMM_INT_MAX_ROWS);
    if (integer && add != C) {
        /* The integer products write C before adding `add`, so add == C takes the panels. */
        if (M <= 3)
            qgemv(k, M, A, lda, w, C, ldc, tile, tile_floats);
        else
            qgemm_int(k, M, A, lda, w, C, ldc, tile, tile_floats);
        for (int m = 0; m < M; m++) {
            float *c = C + (size_t)m * ldc;
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
