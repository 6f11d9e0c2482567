/* kernels_scalar.c: plain C kernels. They are the reference the SIMD twins are tested against, so they favour
 * obvious correctness: straightforward loops, double accumulation where a sum runs over a whole row. */
#include <math.h>
#include <string.h>

#include "core/parallel.h"
#include "kernels/kernels.h"
#include "wl_model.h"

typedef struct gemm_rows {
    int M, N, n_terms, ldc, pieces;
    const wl_gemm_term *terms;
    const float *add, *bias;
    float *C;
} gemm_rows;

/* Rows of piece p: each row is summed on its own, term after term, k after k. */
static void gemm_rows_task(void *ctx, int piece) {
    const gemm_rows *g = ctx;
    int i0, i1;
    wl_split(g->M, g->pieces, piece, &i0, &i1);
    for (int i = i0; i < i1; i++) {
        float *c = g->C + (size_t)i * g->ldc;
        if (!g->add) memset(c, 0, (size_t)g->N * sizeof(float));
        else if (g->add != g->C) memcpy(c, g->add + (size_t)i * g->ldc, (size_t)g->N * sizeof(float));
        for (int t = 0; t < g->n_terms; t++) {
            const wl_gemm_term *tm = &g->terms[t];
            for (int p = 0; p < tm->K; p++) {
                float a = tm->trans_a ? tm->A[(size_t)p * tm->lda + i] : tm->A[(size_t)i * tm->lda + p];
                a *= tm->alpha;
                if (tm->trans_b) {
                    for (int j = 0; j < g->N; j++) c[j] += a * tm->B[(size_t)j * tm->ldb + p];
                } else {
                    const float *b = tm->B + (size_t)p * tm->ldb;
                    for (int j = 0; j < g->N; j++) c[j] += a * b[j];
                }
            }
        }
        if (g->bias)
            for (int j = 0; j < g->N; j++) c[j] += g->bias[j];
    }
}

static void gemm_scalar(int M, int N, const wl_gemm_term *terms, int n_terms, const float *add, const float *bias,
                        float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    gemm_rows g = {M, N, n_terms, ldc, 1, terms, add, bias, C};
    g.pieces = wl_parallel_pieces(M, 1);
    wl_parallel_for(g.pieces, gemm_rows_task, &g);
}

static void rmsnorm_forward_scalar(float *out, float *rstd, const float *x, const float *w, int N, int C,
                                   float eps) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)xi[c] * xi[c];
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        rstd[i] = r;
        for (int c = 0; c < C; c++) oi[c] = xi[c] * r * w[c];
    }
}

/* y = x * r * w with r = (mean(x^2) + eps)^-1/2:
 * dx = r * (w * dy) - x * r^3 / C * sum(w * dy * x); dw += dy * x * r. */
static void rmsnorm_backward_scalar(float *dx, float *dw, const float *dout, const float *x, const float *w,
                                    const float *rstd, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        const float *gi = dout + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        float r = rstd[i];
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)gi[c] * w[c] * xi[c];
        float k = (float)(dot * r * r * r / C);
        for (int c = 0; c < C; c++) dxi[c] += r * w[c] * gi[c] - k * xi[c];
        if (dw) {
            for (int c = 0; c < C; c++) dw[c] += gi[c] * xi[c] * r;
        }
    }
}

static void layernorm_forward_scalar(float *out, float *mean, float *rstd, const float *x, const float *w,
                                     const float *b, int N, int C, float eps) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        double s = 0.0;
        for (int c = 0; c < C; c++) s += xi[c];
        float m = (float)(s / C);
        double v = 0.0;
        for (int c = 0; c < C; c++) v += (double)(xi[c] - m) * (xi[c] - m);
        float r = 1.0f / sqrtf((float)(v / C) + eps);
        mean[i] = m;
        rstd[i] = r;
        for (int c = 0; c < C; c++) oi[c] = (xi[c] - m) * r * w[c] + b[c];
    }
}

/* xhat = (x - m) r; y = xhat w + b: dx = r (g - mean(g) - xhat mean(g xhat)) with g = dy w. */
static void layernorm_backward_scalar(float *dx, float *dw, float *db, const float *dout, const float *x,
                                      const float *w, const float *mean, const float *rstd, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        const float *gi = dout + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        float m = mean[i], r = rstd[i];
        double sg = 0.0, sgx = 0.0;
        for (int c = 0; c < C; c++) {
            float g = gi[c] * w[c];
            float xhat = (xi[c] - m) * r;
            sg += g;
            sgx += (double)g * xhat;
        }
        float mg = (float)(sg / C), mgx = (float)(sgx / C);
        for (int c = 0; c < C; c++) {
            float xhat = (xi[c] - m) * r;
            dxi[c] += r * (gi[c] * w[c] - mg - xhat * mgx);
            if (dw) dw[c] += gi[c] * xhat;
            if (db) db[c] += gi[c];
        }
    }
}

static void rope_scalar(float *x, int N, int n_heads, int hs, int stride, const int *pos, const float *cos_t,
                        const float *sin_t, int layout, int inverse) {
    int half = hs / 2;
    for (int i = 0; i < N; i++) {
        const float *ct = cos_t + (size_t)pos[i] * half;
        const float *st = sin_t + (size_t)pos[i] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)i * stride + (size_t)h * hs;
            for (int j = 0; j < half; j++) {
                float c = ct[j], s = inverse ? -st[j] : st[j];
                int i0 = layout == WL_ROPE_INTERLEAVED ? 2 * j : j;
                int i1 = layout == WL_ROPE_INTERLEAVED ? 2 * j + 1 : j + half;
                float a = v[i0], b = v[i1];
                v[i0] = a * c - b * s;
                v[i1] = a * s + b * c;
            }
        }
    }
}

static void softmax_causal_scalar(float *s, int T, int Tk, int pos0) {
    for (int t = 0; t < T; t++) {
        float *row = s + (size_t)t * Tk;
        int n = pos0 + t + 1;
        if (n > Tk) n = Tk;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < n; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < n; j++) row[j] *= inv;
        for (int j = n; j < Tk; j++) row[j] = 0.0f;
    }
}

static void softmax_backward_scalar(float *dp, const float *p, int T, int Tk, int pos0) {
    for (int t = 0; t < T; t++) {
        float *d = dp + (size_t)t * Tk;
        const float *pr = p + (size_t)t * Tk;
        int n = pos0 + t + 1;
        if (n > Tk) n = Tk;
        double dot = 0.0;
        for (int j = 0; j < n; j++) dot += (double)d[j] * pr[j];
        for (int j = 0; j < n; j++) d[j] = pr[j] * (d[j] - (float)dot);
        for (int j = n; j < Tk; j++) d[j] = 0.0f;
    }
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void swiglu_forward_scalar(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

/* silu(g) = g s(g); silu'(g) = s(g) (1 + g (1 - s(g))). */
static void swiglu_backward_scalar(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                   size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = sigmoidf(g), d = dout[i];
        float silu = g * sg;
        dgate[i] = d * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] = d * silu;
    }
}

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */

static void gelu_forward_scalar(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + 0.044715f * v * v * v)));
    }
}

static void gelu_backward_scalar(float *dx, const float *x, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_K * (v + 0.044715f * v * v * v);
        float t = tanhf(u);
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
        dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

static double xent_forward_scalar(float *losses, const float *logits, const int *targets, int N, int V,
                                  int ignore_id) {
    double total = 0.0;
    for (int i = 0; i < N; i++) {
        if (targets[i] == ignore_id) {
            losses[i] = 0.0f;
            continue;
        }
        const float *row = logits + (size_t)i * V;
        float mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)(row[j] - mx));
        losses[i] = (float)(log(sum) + mx - row[targets[i]]);
        total += losses[i];
    }
    return total;
}

static void xent_backward_scalar(float *logits, const int *targets, int N, int V, int ignore_id, float scale) {
    for (int i = 0; i < N; i++) {
        float *row = logits + (size_t)i * V;
        if (targets[i] == ignore_id) {
            memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)(row[j] - mx));
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++) row[j] = scale * expf(row[j] - mx) * inv;
        row[targets[i]] -= scale;
    }
}

static void axpy_scalar(float *y, float a, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void add_scalar(float *y, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static float dot_scalar(const float *x, const float *y, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * y[i];
    return (float)s;
}

const wl_kernels wl_kernels_scalar = {
    .name = "scalar",
    .gemm = gemm_scalar,
    .rmsnorm_forward = rmsnorm_forward_scalar,
    .rmsnorm_backward = rmsnorm_backward_scalar,
    .layernorm_forward = layernorm_forward_scalar,
    .layernorm_backward = layernorm_backward_scalar,
    .rope = rope_scalar,
    .softmax_causal = softmax_causal_scalar,
    .softmax_backward = softmax_backward_scalar,
    .swiglu_forward = swiglu_forward_scalar,
    .swiglu_backward = swiglu_backward_scalar,
    .gelu_forward = gelu_forward_scalar,
    .gelu_backward = gelu_backward_scalar,
    .xent_forward = xent_forward_scalar,
    .xent_backward = xent_backward_scalar,
    .axpy = axpy_scalar,
    .add = add_scalar,
    .dot = dot_scalar,
};
