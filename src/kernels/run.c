/* run.c: the parallel entry points of kernels.h. Row kernels run on ranges of whole rows and elementwise kernels
 * on ranges of elements, one range per task, so every value is computed exactly as a single call would compute
 * it; sums over rows are never split. */
#include <string.h>

#include "core/parallel.h"
#include "kernels/kernels.h"

/* Rows per piece worth a task: about 16k values of work, so a norm or RoPE over a short sequence (128 tokens of 576)
 * still spreads over the threads; a region right after another costs about a microsecond, as its workers still
 * poll (core/parallel.c). */
static int row_pieces(int N, int C) { return wl_parallel_pieces(N, 16384 / (C > 0 ? C : 1) + 1); }

static int elem_pieces(size_t n) { return wl_parallel_pieces(n > 0x7fffffff ? 0x7fffffff : (int)n, 65536); }

/* Element range of piece p, in multiples of 16 so vector loops keep their alignment. */
static void elem_range(size_t n, int pieces, int p, size_t *b, size_t *e) {
    size_t blocks = (n + 15) / 16;
    *b = blocks * (size_t)p / (size_t)pieces * 16;
    *e = blocks * (size_t)(p + 1) / (size_t)pieces * 16;
    if (*b > n) *b = n;
    if (*e > n) *e = n;
}

void wl_sgemm(const wl_kernels *k, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (beta != 0.0f && beta != 1.0f) {
        /* Outside the usual contract (beta 0 or 1) but cheap to honour: scale C once, then add. */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] *= beta;
        beta = 1.0f;
    }
    wl_gemm_term t = {A, B, lda, ldb, K, trans_a, trans_b, alpha};
    k->gemm(M, N, &t, 1, beta != 0.0f ? C : NULL, NULL, C, ldc);
}

/* ---- row kernels ---- */

typedef struct rows_job {
    const wl_kernels *k;
    int N, C, pieces, layout, inverse, n_heads, hs, stride, V, ignore_id;
    float *out, *aux1, *aux2, *dx, *dw, *db;
    const float *x, *w, *b, *dout, *rstd, *mean, *cos_t, *sin_t;
    const int *pos, *targets;
    float eps, scale;
} rows_job;

static void rmsnorm_forward_task(void *ctx, int p) {
    const rows_job *j = ctx;
    int r0, r1;
    wl_split(j->N, j->pieces, p, &r0, &r1);
    size_t o = (size_t)r0 * j->C;
    j->k->rmsnorm_forward(j->out + o, j->aux1 + r0, j->x + o, j->w, r1 - r0, j->C, j->eps);
}

void wl_rmsnorm_forward(const wl_kernels *k, float *out, float *rstd, const float *x, const float *w, int N, int C,
                        float eps) {
    rows_job j = {.k = k, .N = N, .C = C, .out = out, .aux1 = rstd, .x = x, .w = w, .eps = eps};
    j.pieces = row_pieces(N, C);
    wl_parallel_for(j.pieces, rmsnorm_forward_task, &j);
}

static void rmsnorm_backward_task(void *ctx, int p) {
    const rows_job *j = ctx;
    int r0, r1;
    wl_split(j->N, j->pieces, p, &r0, &r1);
    size_t o = (size_t)r0 * j->C;
    j->k->rmsnorm_backward(j->dx + o, NULL, j->dout + o, j->x + o, j->w, j->rstd + r0, r1 - r0, j->C);
}

/* dw sums over every row: with it (full-parameter training) the kernel runs as one piece. */
void wl_rmsnorm_backward(const wl_kernels *k, float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int N, int C) {
    if (dw) {
        k->rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
        return;
    }
    rows_job j = {.k = k, .N = N, .C = C, .dx = dx, .dout = dout, .x = x, .w = w, .rstd = rstd};
    j.pieces = row_pieces(N, C);
    wl_parallel_for(j.pieces, rmsnorm_backward_task, &j);
}

static void layernorm_forward_task(void *ctx, int p) {
    const rows_job *j = ctx;
    int r0, r1;
    wl_split(j->N, j->pieces, p, &r0, &r1);
    size_t o = (size_t)r0 * j->C;
    j->k->layernorm_forward(j->out + o, j->aux1 + r0, j->aux2 + r0, j->x + o, j->w, j->b, r1 - r0, j->C, j->eps);
}

void wl_layernorm_forward(const wl_kernels *k, float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C, float eps) {
    rows_job j = {.k = k, .N = N, .C = C, .out = out, .aux1 = mean, .aux2 = rstd, .x = x, .w = w, .b = b, .eps = eps};
    j.pieces = row_pieces(N, C);
    wl_parallel_for(j.pieces, layernorm_forward_task, &j);
}

static void layernorm_backward_task(void *ctx, int p) {
    const rows_job *j = ctx;
    int r0, r1;
    wl_split(j->N, j->pieces, p, &r0, &r1);
    size_t o = (size_t)r0 * j->C;
    j->k->layernorm_backward(j->dx + o, NULL, NULL, j->dout + o, j->x + o, j->w, j->mean + r0, j->rstd + r0, r1 - r0,
                             j->C);
}

/* As for RMSNorm: dw and db sum over rows, so with them the kernel runs as one piece. */
void wl_layernorm_backward(const wl_kernels *k, float *dx, float *dw, float *db, const float *dout, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C) {
    if (dw || db) {
        k->layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
        return;
    }
    rows_job j = {.k = k, .N = N, .C = C, .dx = dx, .dout = dout, .x = x, .w = w, .mean = mean, .rstd = rstd};
    j.pieces = row_pieces(N, C);
    wl_parallel_for(j.pieces, layernorm_backward_task, &j);
}

static void rope_task(void *ctx, int p) {
    const rows_job *j = ctx;
    int r0, r1;
    wl_split(j->N, j->pieces, p, &r0, &r1);
    j->k->rope(j->out + (size_t)r0 * j->stride, r1 - r0, j->n_heads, j->hs, j->stride, j->pos + r0, j->cos_t, j->sin_t,
               j->layout, j->inverse);
}

void wl_rope(const wl_kernels *k, float *x, int N, int n_heads, int hs, int stride, const int *pos, const float *cos_t,
             const float *sin_t, int layout, int inverse) {
    rows_job j = {.k = k, .N = N, .out = x, .n_heads = n_heads, .hs = hs, .stride = stride, .pos = pos, .cos_t = cos_t,
                  .sin_t = sin_t, .layout = layout, .inverse = inverse};
    j.pieces = row_pieces(N, n_heads * hs);
    wl_parallel_for(j.pieces, rope_task, &j);
}

static void xent_forward_task(void *ctx, int p) {
    const rows_job *j = ctx;
    int r0, r1;
    wl_split(j->N, j->pieces, p, &r0, &r1);
    j->k->xent_forward(j->out + r0, j->x + (size_t)r0 * j->V, j->targets + r0, r1 - r0, j->V, j->ignore_id);
}

double wl_xent_forward(const wl_kernels *k, float *losses, const float *logits, const int *targets, int N, int V,
                       int ignore_id) {
    rows_job j = {.k = k, .N = N, .V = V, .out = losses, .x = logits, .targets = targets, .ignore_id = ignore_id};
    j.pieces = row_pieces(N, V);
    wl_parallel_for(j.pieces, xent_forward_task, &j);
    /* The same sum a single call makes: row after row, in double. */
    double total = 0.0;
    for (int i = 0; i < N; i++) {
        if (targets[i] != ignore_id) total += losses[i];
    }
    return total;
}

static void xent_backward_task(void *ctx, int p) {
    const rows_job *j = ctx;
    int r0, r1;
    wl_split(j->N, j->pieces, p, &r0, &r1);
    j->k->xent_backward(j->out + (size_t)r0 * j->V, j->targets + r0, r1 - r0, j->V, j->ignore_id, j->scale);
}

void wl_xent_backward(const wl_kernels *k, float *logits, const int *targets, int N, int V, int ignore_id,
                      float scale) {
    rows_job j = {.k = k, .N = N, .V = V, .out = logits, .targets = targets, .ignore_id = ignore_id, .scale = scale};
    j.pieces = row_pieces(N, V);
    wl_parallel_for(j.pieces, xent_backward_task, &j);
}

/* ---- elementwise kernels ---- */

typedef struct elem_job {
    const wl_kernels *k;
    size_t n;
    int pieces, op;
    float *y, *y2;
    const float *a, *b, *c;
    float s;
} elem_job;

enum { OP_SWIGLU, OP_SWIGLU_BWD, OP_GELU, OP_GELU_BWD, OP_AXPY };

static void elem_task(void *ctx, int p) {
    const elem_job *j = ctx;
    size_t b, e;
    elem_range(j->n, j->pieces, p, &b, &e);
    size_t n = e - b;
    if (n == 0) return;
    switch (j->op) {
    case OP_SWIGLU: j->k->swiglu_forward(j->y + b, j->a + b, j->b + b, n); break;
    case OP_SWIGLU_BWD: j->k->swiglu_backward(j->y + b, j->y2 + b, j->a + b, j->b + b, j->c + b, n); break;
    case OP_GELU: j->k->gelu_forward(j->y + b, j->a + b, n); break;
    case OP_GELU_BWD: j->k->gelu_backward(j->y + b, j->a + b, j->b + b, n); break;
    case OP_AXPY: j->k->axpy(j->y + b, j->s, j->a + b, n); break;
    }
}

static void run_elem(elem_job *j) {
    j->pieces = elem_pieces(j->n);
    wl_parallel_for(j->pieces, elem_task, j);
}

void wl_swiglu_forward(const wl_kernels *k, float *out, const float *gate, const float *up, size_t n) {
    elem_job j = {.k = k, .n = n, .op = OP_SWIGLU, .y = out, .a = gate, .b = up};
    run_elem(&j);
}

void wl_swiglu_backward(const wl_kernels *k, float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, size_t n) {
    elem_job j = {.k = k, .n = n, .op = OP_SWIGLU_BWD, .y = dgate, .y2 = dup, .a = dout, .b = gate, .c = up};
    run_elem(&j);
}

void wl_gelu_forward(const wl_kernels *k, float *out, const float *x, size_t n) {
    elem_job j = {.k = k, .n = n, .op = OP_GELU, .y = out, .a = x};
    run_elem(&j);
}

void wl_gelu_backward(const wl_kernels *k, float *dx, const float *x, const float *dout, size_t n) {
    elem_job j = {.k = k, .n = n, .op = OP_GELU_BWD, .y = dx, .a = x, .b = dout};
    run_elem(&j);
}

void wl_axpy(const wl_kernels *k, float *y, float a, const float *x, size_t n) {
    elem_job j = {.k = k, .n = n, .op = OP_AXPY, .y = y, .a = x, .s = a};
    run_elem(&j);
}
