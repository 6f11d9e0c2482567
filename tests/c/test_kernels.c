/* test_kernels.c: the kernel tables. GEMM (scalar and SIMD) against a double-precision reference with a
 * rounding-error bound, every SIMD kernel against its scalar twin at awkward sizes, every backward kernel against
 * central finite differences of its forward (for both tables), and the accuracy of the vectorised exp/sigmoid. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "testutil.h"
#include "wl_model.h"
#ifdef WL_HAVE_WASMSIMD
#include "kernels/wasmsimd/vmath.h"
#endif

static float *falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static float *fdup(const float *x, size_t n) {
    float *p = falloc(n);
    memcpy(p, x, (n ? n : 1) * sizeof(float));
    return p;
}

static void fill_const(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

/* ------------------------------------------------------------------------------------------------------------
 * GEMM */

/* Largest |C - ref| as a fraction of its bound (below) seen per table over all cases: must stay <= 1. */
static double g_gemm_worst[3];
static int g_gemm_cases;

/* One GEMM case on one table. A, B and C live in buffers with row padding `pad`; padding holds NaN in A and B
 * (reading it would poison the result) and a sentinel in C (writing it is caught). With beta 0, C starts as
 * NaN everywhere it may be written, so reading C is caught too. The check is the classic bound for a sum of K
 * products in f32, |err| <= (K + 2) eps sum |terms|, so it can neither flake nor hide a wrong term. */
static void gemm_case(int which, const wl_kernels *k, int ta, int tb, int M, int N, int K, float alpha, float beta,
                      int pad, uint64_t seed) {
    const float sentinel = 12345.0f;
    int a_rows = ta ? K : M, a_cols = ta ? M : K;
    int b_rows = tb ? N : K, b_cols = tb ? K : N;
    int lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
    if (lda < 1) lda = 1;
    if (ldb < 1) ldb = 1;
    size_t na = (size_t)a_rows * lda, nb = (size_t)b_rows * ldb, nc = (size_t)M * ldc;
    float *A = falloc(na), *B = falloc(nb), *C = falloc(nc), *C0 = falloc(nc);
    fill_const(A, na, NAN);
    fill_const(B, nb, NAN);
    for (int r = 0; r < a_rows; r++) wl_test_fill(A + (size_t)r * lda, (size_t)a_cols, seed * 131 + r, 1.0f);
    for (int r = 0; r < b_rows; r++) wl_test_fill(B + (size_t)r * ldb, (size_t)b_cols, seed * 137 + r + 7, 1.0f);
    fill_const(C0, nc, sentinel);
    for (int i = 0; i < M; i++) {
        if (beta == 0.0f) fill_const(C0 + (size_t)i * ldc, (size_t)N, NAN);
        else wl_test_fill(C0 + (size_t)i * ldc, (size_t)N, seed * 139 + i, 1.0f);
    }
    memcpy(C, C0, nc * sizeof(float));
    wl_sgemm(k, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);

    double worst = 0.0;
    int bad = 0, wi = -1, wj = -1;
    double wgot = 0, wref = 0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < ldc; j++) {
            float got = C[(size_t)i * ldc + j];
            if (j >= N) {
                if (got != sentinel && !bad++) wi = i, wj = j, wgot = got, wref = sentinel;
                continue;
            }
            double ref = 0.0, mag = 0.0;
            for (int p = 0; p < K; p++) {
                double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                ref += a * b;
                mag += fabs(a * b);
            }
            ref *= alpha;
            mag *= fabs(alpha);
            if (beta != 0.0f) {
                double c0 = C0[(size_t)i * ldc + j];
                ref += beta * c0;
                mag += fabs(beta * c0);
            }
            double err = fabs(got - ref);
            double bound = (K + 2) * (double)FLT_EPSILON * mag + 1e-30;
            double rel = err / bound;
            if (rel > worst || got != got) worst = got != got ? INFINITY : rel;
            if (!(err <= bound) && !bad++) wi = i, wj = j, wgot = got, wref = ref;
        }
    }
    if (worst > g_gemm_worst[which]) g_gemm_worst[which] = worst;
    g_gemm_cases++;
    CHECK_MSG(!bad, "%s sgemm ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g pad=%d: %d bad values, first C[%d][%d] = %.9g, "
              "want %.9g", k->name, ta, tb, M, N, K, alpha, beta, pad, bad, wi, wj, wgot, wref);
    free(A);
    free(B);
    free(C);
    free(C0);
}

static void test_gemm(const wl_kernels *tables[], int ntables) {
    /* Every trans combination over awkward sizes: around the 5x8 tile, the GEMV paths (M <= 3) and K = 0. */
    static const int Ms[] = {1, 2, 3, 4, 5, 6, 11, 17, 37};
    static const int Ns[] = {1, 3, 7, 8, 9, 17, 33};
    static const int Ks[] = {0, 1, 3, 7, 17, 33};
    static const float alphas[] = {1.0f, -0.75f, 2.5f};
    int n = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++)
                for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++)
                    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++, n++)
                        for (int t = 0; t < ntables; t++)
                            gemm_case(t, tables[t], ta, tb, Ms[mi], Ns[ni], Ks[ki], alphas[n % 3],
                                      (n / 3) % 2 ? 1.0f : 0.0f, (n / 2) % 2 ? 3 : 0, (uint64_t)n);
    /* Sizes that cross the blocking of the packed path (k blocks of <= 576, 510-row A blocks, 96-column chunks of a
     * transposed B, chunks of a plain B as wide as the scratch holds beside the A block: 2 at 510 x 403 x 576, the
     * second ending in a partial panel), its
     * thin form (N <= 16: rows split, a transposed A read in place in k blocks of <= 64, a partial last sliver), a
     * last sliver of 1 or 2 rows (two panels at a time, the second partial), the rows-in-place form (op(A) rows
     * contiguous, N up to 16: a partial last tile of rows) or the dot-product form (N a multiple of 4 up to 16: an
     * odd last row, K not a multiple of 4),
     * the transposed form (M <= 9 and N >= 64, or A^T B with M <= 16: C^T summed in scratch and transposed, M and N
     * not multiples of 4, or, past the scratch, stored transposed tile by tile) and the GEMV paths (1024-column
     * chunks; K > 8192 with trans_a; one row times B^T: 16 k at a time, then 4, then one). */
    struct {
        int ta, tb, M, N, K;
    } big[] = {
        {0, 1, 171, 300, 1301}, {0, 0, 167, 131, 700}, {1, 0, 163, 77, 650}, {1, 1, 45, 270, 661},
        {0, 1, 128, 64, 576},   {0, 0, 7, 4103, 5},    {0, 1, 6, 4101, 3},   {1, 0, 2, 1030, 67},
        {0, 0, 3, 1030, 67},    {0, 1, 1, 1030, 67},   {1, 1, 2, 5, 8200},   {1, 1, 3, 9, 70},
        {0, 0, 23, 520, 37},    {1, 0, 13, 300, 330},   {1, 0, 203, 8, 96},   {1, 0, 576, 16, 128},
        {0, 1, 203, 13, 40},    {1, 1, 97, 11, 513},    {1, 0, 8, 300, 48},   {0, 1, 9, 64, 1025},
        {1, 1, 4, 77, 100},     {0, 0, 520, 33, 1031},  {1, 0, 8, 301, 600},    {1, 0, 150, 16, 520},
        {1, 0, 16, 97, 257},    {1, 0, 577, 8, 512},    {0, 1, 203, 8, 577},   {0, 0, 129, 16, 193},
        {0, 1, 37, 12, 70},     {0, 0, 64, 4, 1536},    {1, 0, 16, 3001, 70},   {1, 0, 5, 2900, 130},
        {1, 1, 98, 13, 96},     {0, 1, 128, 100, 40},   {0, 0, 510, 403, 576},  {0, 1, 1, 300, 583},
        {1, 1, 1, 77, 45},
    };
    for (size_t c = 0; c < sizeof big / sizeof big[0]; c++, n++)
        for (int t = 0; t < ntables; t++)
            for (int beta = 0; beta < 2; beta++)
                gemm_case(t, tables[t], big[c].ta, big[c].tb, big[c].M, big[c].N, big[c].K, c % 2 ? 0.5f : 1.0f,
                          (float)beta, (int)(c % 3), 1000 + (uint64_t)n);
    /* A deterministic random sweep over everything at once. */
    uint64_t st = 0x5eed;
    for (int c = 0; c < 400; c++) {
        int r[8];
        for (int q = 0; q < 8; q++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            r[q] = (int)(st >> 33);
        }
        int M = 1 + r[0] % 70, N = 1 + r[1] % 70, K = r[2] % 90, ta = r[3] & 1, tb = (r[3] >> 1) & 1;
        float alpha = (r[4] & 1) ? 1.0f : 0.5f - (float)(r[4] % 7);
        float beta = (r[5] & 1) ? 1.0f : 0.0f;
        for (int t = 0; t < ntables; t++) gemm_case(t, tables[t], ta, tb, M, N, K, alpha, beta, r[6] % 4, 3000 + c);
    }
    /* beta outside {0, 1} is beyond the contract, but both tables honour it. */
    for (int t = 0; t < ntables; t++) {
        gemm_case(t, tables[t], 0, 1, 9, 13, 21, 1.0f, 0.5f, 1, 2000);
        gemm_case(t, tables[t], 0, 0, 2, 13, 21, 1.0f, -2.0f, 0, 2001);
    }
    for (int t = 0; t < ntables; t++)
        printf("  sgemm %-10s %d cases, largest error = %.3f of the bound (K + 2) eps sum|terms|\n", tables[t]->name,
               g_gemm_cases / ntables, g_gemm_worst[t]);
}

/* The general form: C = add + sum of up to three terms (each with its own transposes, K (0 included) and alpha)
 * + bias, where add is nothing, C itself or another matrix, against a double reference with the bound
 * (sum K + terms + 2) eps (|add| + sum |products| + |bias|). Shapes reach every path of the SIMD GEMM. */
static void test_gemm_terms(const wl_kernels *tables[], int ntables) {
    static const int shapes[][2] = {{1, 300}, {3, 70}, {6, 130}, {8, 64}, {37, 17}, {203, 8}, {61, 97}, {260, 45}};
    int cases = 0;
    double worst = 0.0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int variant = 0; variant < 12; variant++) {
            const int M = shapes[s][0], N = shapes[s][1], n_terms = 1 + variant % 3, add_mode = variant / 3 % 3;
            const int with_bias = variant % 2, ldc = N + (variant % 4 == 1 ? 3 : 0);
            wl_gemm_term terms[3];
            float *bufs[6];
            for (int t = 0; t < n_terms; t++) {
                int K = (int)((s * 37 + (size_t)variant * 11 + (size_t)t * 53) % 700);
                if (t == 1 && variant % 5 == 0) K = 0;
                int ta = (variant + t) & 1, tb = ((variant >> 1) + t) & 1;
                int lda = (ta ? M : K) + t, ldb = (tb ? K : N) + 1;
                size_t na = (size_t)(ta ? K : M) * (lda ? lda : 1), nb = (size_t)(tb ? N : K) * ldb;
                bufs[2 * t] = falloc(na);
                bufs[2 * t + 1] = falloc(nb);
                wl_test_fill(bufs[2 * t], na, 900 + s * 31 + (size_t)variant * 7 + (size_t)t, 1.0f);
                wl_test_fill(bufs[2 * t + 1], nb, 950 + s * 31 + (size_t)variant * 7 + (size_t)t, 1.0f);
                terms[t] = (wl_gemm_term){bufs[2 * t], bufs[2 * t + 1], lda ? lda : 1, ldb, K, ta, tb, 0.5f + (float)t};
            }
            float *bias = falloc((size_t)N), *other = falloc((size_t)M * ldc), *C0 = falloc((size_t)M * ldc);
            float *C = falloc((size_t)M * ldc);
            wl_test_fill(bias, (size_t)N, 990 + s, 1.0f);
            wl_test_fill(other, (size_t)M * ldc, 991 + s, 1.0f);
            wl_test_fill(C0, (size_t)M * ldc, 992 + s, 1.0f);
            for (int tb = 0; tb < ntables; tb++) {
                const wl_kernels *k = tables[tb];
                memcpy(C, C0, (size_t)M * ldc * sizeof(float));
                const float *add = add_mode == 0 ? NULL : add_mode == 1 ? C : other;
                k->gemm(M, N, terms, n_terms, add, with_bias ? bias : NULL, C, ldc);
                int bad = 0, bi = 0, bj = 0;
                double bgot = 0.0, bref = 0.0;
                for (int i = 0; i < M; i++) {
                    for (int j = 0; j < N; j++) {
                        double ref = 0.0, mag = 0.0, Ksum = 0.0;
                        const float *base_row = add_mode == 1 ? C0 + (size_t)i * ldc : other + (size_t)i * ldc;
                        double base = add_mode == 0 ? 0.0 : base_row[j];
                        ref += base;
                        mag += fabs(base);
                        for (int t = 0; t < n_terms; t++) {
                            const wl_gemm_term *tm = &terms[t];
                            for (int p = 0; p < tm->K; p++) {
                                double a = tm->trans_a ? tm->A[(size_t)p * tm->lda + i] : tm->A[(size_t)i * tm->lda + p];
                                double b = tm->trans_b ? tm->B[(size_t)j * tm->ldb + p] : tm->B[(size_t)p * tm->ldb + j];
                                ref += tm->alpha * a * b;
                                mag += fabs(tm->alpha * a * b);
                            }
                            Ksum += tm->K;
                        }
                        if (with_bias) {
                            ref += bias[j];
                            mag += fabs(bias[j]);
                        }
                        double got = C[(size_t)i * ldc + j], bound = (Ksum + n_terms + 2) * FLT_EPSILON * mag + 1e-30;
                        double rel = fabs(got - ref) / bound;
                        if (rel > worst || got != got) worst = got != got ? INFINITY : rel;
                        if (!(fabs(got - ref) <= bound) && !bad++) bi = i, bj = j, bgot = got, bref = ref;
                    }
                    for (int j = N; j < ldc; j++)
                        if (C[(size_t)i * ldc + j] != C0[(size_t)i * ldc + j] && !bad++) bi = i, bj = j;
                }
                cases++;
                CHECK_MSG(!bad,
                          "%s gemm M=%d N=%d terms=%d add=%d bias=%d: %d bad values, first C[%d][%d] = %.9g, want %.9g",
                          k->name, M, N, n_terms, add_mode, with_bias, bad, bi, bj, bgot, bref);
            }
            for (int b = 0; b < 2 * n_terms; b++) free(bufs[b]);
            free(bias), free(other), free(C0), free(C);
        }
    }
    printf("  gemm with terms, residual and bias: %d cases, largest error = %.3f of the bound\n", cases, worst);
}

/* ------------------------------------------------------------------------------------------------------------
 * SIMD against scalar, forward and backward, at awkward sizes. */

#ifdef WL_HAVE_WASMSIMD
static const wl_kernels *S = &wl_kernels_scalar;
static const wl_kernels *V = &wl_kernels_wasmsimd;

/* Tolerances of the SIMD twins against the scalar oracle: both round in float32 but sum in another order (4-lane
 * partial sums), so they differ by a few ulp of the largest term. Measured over the sizes of each test (native
 * SIMDe build), the largest differences are quoted next to each group; the tolerances leave at least a factor 2
 * above them, and a kernel that drops or misweights a term misses by orders of magnitude more (see the mutation
 * runs in the history of this file's tests). */
static void test_norms_vs_scalar(void) {
    /* measured: rmsnorm forward 4.8e-7 abs (outputs up to ~10), rstd 1.4e-7 rel, backward dx 2.4e-7 abs, dw
     * exact; layernorm forward 4.8e-7 abs, mean 2.4e-7 abs, rstd 1.4e-7 rel, backward dx 4.8e-7 abs, dw and db
     * exact. */
    static const int shapes[][2] = {{1, 1}, {3, 7}, {2, 17}, {5, 33}, {3, 131}, {2, 576}, {1, 1001}};
    char what[96];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)N * C;
        float *x = falloc(n), *w = falloc((size_t)C), *b = falloc((size_t)C), *g = falloc(n);
        wl_test_fill(x, n, 10 + s, 2.0f);
        wl_test_fill(w, (size_t)C, 20 + s, 1.5f);
        wl_test_fill(b, (size_t)C, 30 + s, 0.5f);
        wl_test_fill(g, n, 40 + s, 1.0f);
        float *o1 = falloc(n), *o2 = falloc(n), *r1 = falloc((size_t)N), *r2 = falloc((size_t)N);
        float *m1 = falloc((size_t)N), *m2 = falloc((size_t)N);
        float *dx1 = falloc(n), *dx2 = falloc(n), *dw1 = falloc((size_t)C), *dw2 = falloc((size_t)C);
        float *db1 = falloc((size_t)C), *db2 = falloc((size_t)C);

        S->rmsnorm_forward(o1, r1, x, w, N, C, 1e-5f);
        V->rmsnorm_forward(o2, r2, x, w, N, C, 1e-5f);
        snprintf(what, sizeof what, "rmsnorm_forward N=%d C=%d", N, C);
        wl_test_close(what, o2, o1, n, 1e-6f, 1e-5f);
        wl_test_close("  rstd", r2, r1, (size_t)N, 0.0f, 1e-6f);
        /* Backward adds into dx and dw: start both from the same non-zero values. */
        wl_test_fill(dx1, n, 50 + s, 0.25f);
        memcpy(dx2, dx1, n * sizeof(float));
        wl_test_fill(dw1, (size_t)C, 60 + s, 0.25f);
        memcpy(dw2, dw1, (size_t)C * sizeof(float));
        S->rmsnorm_backward(dx1, dw1, g, x, w, r1, N, C);
        V->rmsnorm_backward(dx2, dw2, g, x, w, r1, N, C);
        snprintf(what, sizeof what, "rmsnorm_backward dx N=%d C=%d", N, C);
        wl_test_close(what, dx2, dx1, n, 1e-6f, 1e-5f);
        wl_test_close("  dw", dw2, dw1, (size_t)C, 1e-6f, 1e-5f);
        V->rmsnorm_backward(dx2, NULL, g, x, w, r1, N, C); /* dw NULL must be accepted */
        S->rmsnorm_backward(dx1, NULL, g, x, w, r1, N, C);
        wl_test_close("  dx (dw NULL, accumulated twice)", dx2, dx1, n, 1e-6f, 1e-5f);

        /* Layernorm on inputs with a large common offset, where a one-pass variance would lose digits. */
        for (size_t i = 0; i < n; i++) x[i] += 3.0f;
        S->layernorm_forward(o1, m1, r1, x, w, b, N, C, 1e-5f);
        V->layernorm_forward(o2, m2, r2, x, w, b, N, C, 1e-5f);
        snprintf(what, sizeof what, "layernorm_forward N=%d C=%d", N, C);
        wl_test_close(what, o2, o1, n, 1e-5f, 1e-4f);
        wl_test_close("  mean", m2, m1, (size_t)N, 1e-6f, 1e-6f);
        wl_test_close("  rstd", r2, r1, (size_t)N, 0.0f, 1e-4f);
        wl_test_fill(dx1, n, 70 + s, 0.25f);
        memcpy(dx2, dx1, n * sizeof(float));
        wl_test_fill(dw1, (size_t)C, 80 + s, 0.25f);
        memcpy(dw2, dw1, (size_t)C * sizeof(float));
        wl_test_fill(db1, (size_t)C, 90 + s, 0.25f);
        memcpy(db2, db1, (size_t)C * sizeof(float));
        S->layernorm_backward(dx1, dw1, db1, g, x, w, m1, r1, N, C);
        V->layernorm_backward(dx2, dw2, db2, g, x, w, m1, r1, N, C);
        snprintf(what, sizeof what, "layernorm_backward dx N=%d C=%d", N, C);
        wl_test_close(what, dx2, dx1, n, 1e-5f, 1e-4f);
        wl_test_close("  dw", dw2, dw1, (size_t)C, 1e-6f, 1e-5f);
        wl_test_close("  db", db2, db1, (size_t)C, 1e-6f, 1e-6f);
        S->layernorm_backward(dx1, NULL, NULL, g, x, w, m1, r1, N, C);
        V->layernorm_backward(dx2, NULL, NULL, g, x, w, m1, r1, N, C);
        wl_test_close("  dx (dw, db NULL, accumulated twice)", dx2, dx1, n, 1e-5f, 1e-4f);

        free(x), free(w), free(b), free(g), free(o1), free(o2), free(r1), free(r2), free(m1), free(m2);
        free(dx1), free(dx2), free(dw1), free(dw2), free(db1), free(db2);
    }
}

static void make_rope_tables(float *cos_t, float *sin_t, int max_pos, int half) {
    for (int p = 0; p < max_pos; p++)
        for (int j = 0; j < half; j++) {
            double ang = p * pow(10000.0, -2.0 * j / (2.0 * half));
            cos_t[(size_t)p * half + j] = (float)cos(ang);
            sin_t[(size_t)p * half + j] = (float)sin(ang);
        }
}

static void test_rope_vs_scalar(void) {
    static const int hss[] = {2, 6, 8, 16, 18, 64};
    const int N = 5, H = 3, max_pos = 40;
    int pos[5] = {0, 39, 7, 7, 23};
    char what[96];
    for (size_t h = 0; h < sizeof hss / sizeof hss[0]; h++) {
        int hs = hss[h], half = hs / 2, stride = H * hs + 3;
        float *ct = falloc((size_t)max_pos * half), *st = falloc((size_t)max_pos * half);
        make_rope_tables(ct, st, max_pos, half);
        size_t n = (size_t)N * stride;
        float *x1 = falloc(n), *x2 = falloc(n);
        for (int layout = 0; layout < 2; layout++)
            for (int inv = 0; inv < 2; inv++) {
                wl_test_fill(x1, n, 100 + h, 1.0f);
                memcpy(x2, x1, n * sizeof(float));
                S->rope(x1, N, H, hs, stride, pos, ct, st, layout, inv);
                V->rope(x2, N, H, hs, stride, pos, ct, st, layout, inv);
                snprintf(what, sizeof what, "rope hs=%d %s%s", hs, layout ? "interleaved" : "half",
                         inv ? " inverse" : "");
                /* Same products in the same order: bit-exact, padding between rows untouched. */
                wl_test_close(what, x2, x1, n, 0.0f, 0.0f);
            }
        free(ct), free(st), free(x1), free(x2);
    }
}

static void test_softmax_vs_scalar(void) {
    /* measured: softmax 1.2e-7 abs (probabilities <= 1), backward 6e-8 abs. */
    static const int cases[][3] = {{1, 1, 0}, {3, 3, 0}, {5, 9, 4}, {7, 33, 26}, {4, 131, 127}, {3, 17, 0},
                                   {6, 10, 7} /* rows past Tk clip to Tk */};
    char what[96];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int T = cases[c][0], Tk = cases[c][1], pos0 = cases[c][2];
        size_t n = (size_t)T * Tk;
        float *s1 = falloc(n), *s2 = falloc(n), *d1 = falloc(n), *d2 = falloc(n);
        wl_test_fill(s1, n, 200 + c, 8.0f);
        /* A caller's mask inside the causal window of the last row, when that row has another key left. */
        if ((pos0 + T < Tk ? pos0 + T : Tk) >= 2) s1[(size_t)(T - 1) * Tk] = -INFINITY;
        memcpy(s2, s1, n * sizeof(float));
        S->softmax_causal(s1, T, Tk, pos0);
        V->softmax_causal(s2, T, Tk, pos0);
        snprintf(what, sizeof what, "softmax_causal T=%d Tk=%d pos0=%d", T, Tk, pos0);
        wl_test_close(what, s2, s1, n, 1e-7f, 1e-5f);
        int masked_ok = 1;
        for (int t = 0; t < T; t++)
            for (int j = pos0 + t + 1; j < Tk; j++) masked_ok &= s2[(size_t)t * Tk + j] == 0.0f;
        CHECK_MSG(masked_ok, "softmax_causal: masked entries must be exactly 0");
        wl_test_fill(d1, n, 210 + c, 1.0f);
        memcpy(d2, d1, n * sizeof(float));
        S->softmax_backward(d1, s1, T, Tk, pos0);
        V->softmax_backward(d2, s1, T, Tk, pos0);
        snprintf(what, sizeof what, "softmax_backward T=%d Tk=%d pos0=%d", T, Tk, pos0);
        wl_test_close(what, d2, d1, n, 1e-7f, 1e-5f);
        free(s1), free(s2), free(d1), free(d2);
    }
}

static void test_activations_vs_scalar(void) {
    /* measured: swiglu forward 6e-8 abs / 2.1e-7 rel, dgate 2.2e-8 abs / 7.7e-7 rel, dup 4.5e-8 abs / 2.2e-7 rel;
     * gelu forward 4.8e-7 abs, backward 2.0e-6 abs where |dx| ~ 6 (within rtol 1e-5); dot 1.9e-6 abs on sums
     * of up to 1000 terms of size ~10. */
    static const size_t ns[] = {1, 3, 7, 17, 33, 131, 1000};
    char what[96];
    for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
        size_t n = ns[c];
        float *g = falloc(n), *u = falloc(n), *d = falloc(n);
        float *o1 = falloc(n), *o2 = falloc(n), *a1 = falloc(n), *a2 = falloc(n), *b1 = falloc(n), *b2 = falloc(n);
        wl_test_fill(g, n, 300 + c, 12.0f); /* reaches the saturated ends of sigmoid */
        wl_test_fill(u, n, 310 + c, 2.0f);
        wl_test_fill(d, n, 320 + c, 1.0f);
        S->swiglu_forward(o1, g, u, n);
        V->swiglu_forward(o2, g, u, n);
        snprintf(what, sizeof what, "swiglu_forward n=%zu", n);
        wl_test_close(what, o2, o1, n, 1e-7f, 2e-6f);
        S->swiglu_backward(a1, b1, d, g, u, n);
        V->swiglu_backward(a2, b2, d, g, u, n);
        snprintf(what, sizeof what, "swiglu_backward n=%zu dgate", n);
        wl_test_close(what, a2, a1, n, 1e-6f, 1e-5f);
        wl_test_close("  dup", b2, b1, n, 1e-7f, 2e-6f);

        wl_test_fill(g, n, 330 + c, 6.0f);
        S->gelu_forward(o1, g, n);
        V->gelu_forward(o2, g, n);
        snprintf(what, sizeof what, "gelu_forward n=%zu", n);
        /* atol covers the scalar oracle's own cancellation in 1 + tanhf(u) for negative inputs. */
        wl_test_close(what, o2, o1, n, 1e-6f, 1e-5f);
        S->gelu_backward(a1, g, d, n);
        V->gelu_backward(a2, g, d, n);
        snprintf(what, sizeof what, "gelu_backward n=%zu", n);
        wl_test_close(what, a2, a1, n, 1e-6f, 1e-5f);
        memcpy(a2, d, n * sizeof(float));
        V->gelu_backward(a2, g, a2, n); /* dx may alias dout */
        wl_test_close("  aliased dx = dout", a2, a1, n, 1e-6f, 1e-5f);

        memcpy(o2, o1, n * sizeof(float));
        S->axpy(o1, -1.25f, u, n);
        V->axpy(o2, -1.25f, u, n);
        snprintf(what, sizeof what, "axpy n=%zu", n);
        wl_test_close(what, o2, o1, n, 0.0f, 0.0f);
        S->add(a1, g, u, n);
        memcpy(a2, g, n * sizeof(float));
        V->add(a2, a2, u, n); /* y may alias a */
        snprintf(what, sizeof what, "add n=%zu (aliased)", n);
        wl_test_close(what, a2, a1, n, 0.0f, 0.0f);
        float dot1 = S->dot(g, u, n), dot2 = V->dot(g, u, n);
        snprintf(what, sizeof what, "dot n=%zu", n);
        wl_test_close(what, &dot2, &dot1, 1, 1e-5f, 1e-6f);
        free(g), free(u), free(d), free(o1), free(o2), free(a1), free(a2), free(b1), free(b2);
    }
}

static void test_xent_vs_scalar(void) {
    /* measured: per-row loss 2.4e-7 abs (losses up to ~30), dlogits 7.5e-9 abs / 2.8e-7 rel. */
    static const int cases[][2] = {{1, 1}, {3, 7}, {4, 33}, {5, 131}, {2, 1000}, {3, 49153}};
    char what[96];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int N = cases[c][0], V_ = cases[c][1];
        size_t n = (size_t)N * V_;
        float *l1 = falloc(n), *l2 = falloc(n), *loss1 = falloc((size_t)N), *loss2 = falloc((size_t)N);
        int *tg = malloc((size_t)N * sizeof(int));
        wl_test_fill(l1, n, 400 + c, 15.0f);
        for (int i = 0; i < N; i++) tg[i] = (int)((i * 7919u + c) % (unsigned)V_);
        if (N > 2) tg[1] = -100; /* ignored row */
        memcpy(l2, l1, n * sizeof(float));
        double t1 = S->xent_forward(loss1, l1, tg, N, V_, -100);
        double t2 = V->xent_forward(loss2, l2, tg, N, V_, -100);
        snprintf(what, sizeof what, "xent_forward N=%d V=%d", N, V_);
        wl_test_close(what, loss2, loss1, (size_t)N, 1e-5f, 1e-5f);
        CHECK_MSG(fabs(t1 - t2) <= 1e-5 * (fabs(t1) + 1.0), "xent_forward totals %.9g vs %.9g", t2, t1);
        S->xent_backward(l1, tg, N, V_, -100, 0.125f);
        V->xent_backward(l2, tg, N, V_, -100, 0.125f);
        snprintf(what, sizeof what, "xent_backward N=%d V=%d", N, V_);
        wl_test_close(what, l2, l1, n, 1e-8f, 1e-5f);
        free(l1), free(l2), free(loss1), free(loss2), free(tg);
    }
}

/* Accuracy of the vectorised exp and sigmoid against double, in units in the last place of the correctly
 * rounded float result, over a dense sweep; these are the numbers quoted in vmath.h. */
static double ulp_err(float got, double ref) {
    float rf = (float)ref;
    if (rf == 0.0f) return got == 0.0f ? 0.0 : INFINITY;
    double ulp = nextafterf(fabsf(rf), INFINITY) - fabsf(rf);
    return fabs((double)got - ref) / ulp;
}

static void test_vmath(void) {
    const int n = 1 << 20;
    double worst_exp = 0.0, worst_sig = 0.0, worst_sig_neg = 0.0;
    float xs[4], ys[4];
    for (int i = 0; i < n; i += 4) {
        for (int l = 0; l < 4; l++) xs[l] = -86.5f + (88.7f + 86.5f) * (float)(i + l) / (float)n;
        wasm_v128_store(ys, wl_vexp(wasm_v128_load(xs)));
        for (int l = 0; l < 4; l++) {
            double e = ulp_err(ys[l], exp((double)xs[l]));
            if (e > worst_exp) worst_exp = e;
        }
        for (int l = 0; l < 4; l++) xs[l] = -40.0f + 80.0f * (float)(i + l) / (float)n;
        wasm_v128_store(ys, wl_vsigmoid(wasm_v128_load(xs)));
        for (int l = 0; l < 4; l++) {
            double e = ulp_err(ys[l], 1.0 / (1.0 + exp(-(double)xs[l])));
            if (xs[l] < 0.0f && e > worst_sig_neg) worst_sig_neg = e;
            if (e > worst_sig) worst_sig = e;
        }
    }
    printf("  vexp max error on [-86.5, 88.7]: %.2f ulp; vsigmoid on [-40, 40]: %.2f ulp (x < 0: %.2f ulp)\n",
           worst_exp, worst_sig, worst_sig_neg);
    /* measured 0.98 ulp (exp) and 2.32 ulp (sigmoid): the bounds vmath.h promises. */
    CHECK_MSG(worst_exp <= 2.0, "vexp max error %.2f ulp > 2", worst_exp);
    CHECK_MSG(worst_sig <= 4.0, "vsigmoid max error %.2f ulp > 4", worst_sig);

    /* Special values. */
    float sp[4] = {-INFINITY, INFINITY, NAN, 0.0f}, r[4];
    wasm_v128_store(r, wl_vexp(wasm_v128_load(sp)));
    CHECK(r[0] == 0.0f && r[1] == INFINITY && r[2] != r[2] && r[3] == 1.0f);
    float sp2[4] = {-100.0f, 100.0f, 88.72f, -86.0f};
    wasm_v128_store(r, wl_vexp(wasm_v128_load(sp2)));
    CHECK(r[0] == 0.0f && r[1] == INFINITY && isfinite(r[2]) && r[2] > 3.3e38f && r[3] > 0.0f);
    wasm_v128_store(r, wl_vsigmoid(wasm_v128_load(sp)));
    CHECK(r[0] == 0.0f && r[1] == 1.0f && r[2] != r[2] && r[3] == 0.5f);

    /* gelu through the kernel against double gelu_new: the remaining error comes from forming u in f32. */
    const int m = 200001;
    float *x = falloc((size_t)m), *y = falloc((size_t)m);
    for (int i = 0; i < m; i++) x[i] = -10.0f + 20.0f * (float)i / (float)(m - 1);
    V->gelu_forward(y, x, (size_t)m);
    double worst_abs = 0.0, worst_rel = 0.0;
    for (int i = 0; i < m; i++) {
        double v = x[i];
        /* 0.5 v (1 + tanh u) written as v / (1 + e^-2u): the tanh form cancels even in double below v = -7. */
        double ref = v / (1.0 + exp(-2.0 * 0.7978845608028654 * (v + 0.044715 * v * v * v)));
        double e = fabs(y[i] - ref);
        if (e > worst_abs) worst_abs = e;
        if (fabs(ref) > 1e-30 && e / fabs(ref) > worst_rel) worst_rel = e / fabs(ref);
    }
    printf("  gelu_forward (wasmsimd) on [-10, 10] vs double: max abs %.3g, max rel %.3g\n", worst_abs, worst_rel);
    /* measured 5.2e-7 abs and 1.2e-5 rel (the f32 rounding of u, amplified where gelu is near 0) */
    CHECK_MSG(worst_abs <= 1e-6 && worst_rel <= 2e-5, "gelu error abs %.3g rel %.3g", worst_abs, worst_rel);
    free(x), free(y);
}
#endif

/* ------------------------------------------------------------------------------------------------------------
 * Backward kernels against central finite differences of their forward, on one table. */

typedef struct fd_ctx {
    const wl_kernels *k;
    int N, C, T, Tk, pos0, H, hs, stride, layout;
    float *x, *w, *b, *up, *R, *out, *m, *r, *ct, *st;
    const int *pos, *tg;
    size_t n;
} fd_ctx;

typedef double (*fd_loss)(fd_ctx *c);

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Compare grad (n) with (L(in + h) - L(in - h)) / (actual step) for every element of in. */
static void fd_check(const char *what, fd_loss f, fd_ctx *c, float *in, size_t n, const float *grad, float h,
                     float atol, float rtol) {
    float *num = falloc(n);
    for (size_t i = 0; i < n; i++) {
        float v = in[i];
        float hi = v + h, lo = v - h;
        in[i] = hi;
        double lp = f(c);
        in[i] = lo;
        double lm = f(c);
        in[i] = v;
        num[i] = (float)((lp - lm) / ((double)hi - lo));
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%s %s", c->k->name, what);
    wl_test_close(buf, grad, num, n, atol, rtol);
    free(num);
}

static double loss_rmsnorm(fd_ctx *c) {
    c->k->rmsnorm_forward(c->out, c->r, c->x, c->w, c->N, c->C, 1e-5f);
    return dot_d(c->out, c->R, c->n);
}
static double loss_layernorm(fd_ctx *c) {
    c->k->layernorm_forward(c->out, c->m, c->r, c->x, c->w, c->b, c->N, c->C, 1e-5f);
    return dot_d(c->out, c->R, c->n);
}
static double loss_rope(fd_ctx *c) {
    memcpy(c->out, c->x, c->n * sizeof(float));
    c->k->rope(c->out, c->N, c->H, c->hs, c->stride, c->pos, c->ct, c->st, c->layout, 0);
    return dot_d(c->out, c->R, c->n);
}
static double loss_softmax(fd_ctx *c) {
    memcpy(c->out, c->x, c->n * sizeof(float));
    c->k->softmax_causal(c->out, c->T, c->Tk, c->pos0);
    return dot_d(c->out, c->R, c->n);
}
static double loss_swiglu(fd_ctx *c) {
    c->k->swiglu_forward(c->out, c->x, c->up, c->n);
    return dot_d(c->out, c->R, c->n);
}
static double loss_gelu(fd_ctx *c) {
    c->k->gelu_forward(c->out, c->x, c->n);
    return dot_d(c->out, c->R, c->n);
}
static double loss_xent(fd_ctx *c) {
    /* scale * sum of losses, matching xent_backward(scale). */
    return 0.5 * c->k->xent_forward(c->out, c->x, c->tg, c->N, c->C, -100);
}

static void test_fd(const wl_kernels *k) {
    fd_ctx c;
    memset(&c, 0, sizeof c);
    c.k = k;
    /* Tolerances: the forwards run in f32, so L carries about 1e-7 relative noise; divided by 2h = 4e-3 that is
     * about 1e-4 absolute on gradients of order 1, far below what a wrong or missing term produces (measured: at
     * most 1.5e-4 abs, layernorm dx of the SIMD table). */
    const float h = 2e-3f, atol = 2e-3f, rtol = 1e-2f;

    /* rmsnorm and layernorm: 3 rows of 19 channels, gradients w.r.t. x, w (and b). */
    c.N = 3, c.C = 19, c.n = (size_t)c.N * c.C;
    c.x = falloc(c.n), c.w = falloc((size_t)c.C), c.b = falloc((size_t)c.C), c.R = falloc(c.n);
    c.out = falloc(c.n), c.m = falloc((size_t)c.N), c.r = falloc((size_t)c.N);
    float *dx = falloc(c.n), *dw = falloc((size_t)c.C), *db = falloc((size_t)c.C), *base = falloc(c.n);
    wl_test_fill(c.x, c.n, 501, 1.5f);
    wl_test_fill(c.w, (size_t)c.C, 502, 1.0f);
    wl_test_fill(c.b, (size_t)c.C, 503, 0.5f);
    wl_test_fill(c.R, c.n, 504, 1.0f);
    /* Backward adds: start from a known base and compare the difference. */
    wl_test_fill(base, c.n, 505, 0.5f);
    memcpy(dx, base, c.n * sizeof(float));
    memset(dw, 0, (size_t)c.C * sizeof(float));
    loss_rmsnorm(&c);
    k->rmsnorm_backward(dx, dw, c.R, c.x, c.w, c.r, c.N, c.C);
    for (size_t i = 0; i < c.n; i++) dx[i] -= base[i];
    fd_check("rmsnorm dx", loss_rmsnorm, &c, c.x, c.n, dx, h, atol, rtol);
    fd_check("rmsnorm dw", loss_rmsnorm, &c, c.w, (size_t)c.C, dw, h, atol, rtol);

    memcpy(dx, base, c.n * sizeof(float));
    memset(dw, 0, (size_t)c.C * sizeof(float));
    memset(db, 0, (size_t)c.C * sizeof(float));
    loss_layernorm(&c);
    k->layernorm_backward(dx, dw, db, c.R, c.x, c.w, c.m, c.r, c.N, c.C);
    for (size_t i = 0; i < c.n; i++) dx[i] -= base[i];
    fd_check("layernorm dx", loss_layernorm, &c, c.x, c.n, dx, h, atol, rtol);
    fd_check("layernorm dw", loss_layernorm, &c, c.w, (size_t)c.C, dw, h, atol, rtol);
    fd_check("layernorm db", loss_layernorm, &c, c.b, (size_t)c.C, db, h, atol, rtol);
    free(c.x), free(c.w), free(c.b), free(c.R), free(c.out), free(c.m), free(c.r);
    free(dx), free(dw), free(db), free(base);

    /* rope: the backward of a rotation is the inverse rotation of the output gradient. */
    int pos[3] = {5, 0, 11};
    for (int layout = 0; layout < 2; layout++) {
        memset(&c, 0, sizeof c);
        c.k = k, c.N = 3, c.H = 2, c.hs = 10, c.stride = 2 * 10 + 1, c.layout = layout, c.pos = pos;
        c.n = (size_t)c.N * c.stride;
        c.ct = falloc(12 * 5), c.st = falloc(12 * 5);
        make_rope_tables(c.ct, c.st, 12, 5);
        c.x = falloc(c.n), c.R = falloc(c.n), c.out = falloc(c.n);
        wl_test_fill(c.x, c.n, 510, 1.0f);
        wl_test_fill(c.R, c.n, 511, 1.0f);
        float *g = fdup(c.R, c.n);
        k->rope(g, c.N, c.H, c.hs, c.stride, pos, c.ct, c.st, layout, 1);
        /* The padding column is not rotated: its gradient is the loss weight itself. */
        fd_check(layout ? "rope (interleaved) dx" : "rope (half) dx", loss_rope, &c, c.x, c.n, g, h, atol, rtol);
        free(g), free(c.ct), free(c.st), free(c.x), free(c.R), free(c.out);
    }

    /* softmax: 4 queries at positions 3..6 over 6 keys (the first rows are masked, the last one clips). */
    memset(&c, 0, sizeof c);
    c.k = k, c.T = 4, c.Tk = 6, c.pos0 = 3, c.n = (size_t)c.T * c.Tk;
    c.x = falloc(c.n), c.R = falloc(c.n), c.out = falloc(c.n);
    wl_test_fill(c.x, c.n, 520, 3.0f);
    wl_test_fill(c.R, c.n, 521, 1.0f);
    loss_softmax(&c);
    float *p = fdup(c.out, c.n), *g = fdup(c.R, c.n);
    k->softmax_backward(g, p, c.T, c.Tk, c.pos0);
    fd_check("softmax dS", loss_softmax, &c, c.x, c.n, g, h, atol, rtol);
    free(p), free(g), free(c.x), free(c.R), free(c.out);

    /* swiglu and gelu over inputs that include the curved middle and the tails. */
    memset(&c, 0, sizeof c);
    c.k = k, c.n = 37;
    c.x = falloc(c.n), c.up = falloc(c.n), c.R = falloc(c.n), c.out = falloc(c.n);
    wl_test_fill(c.x, c.n, 530, 5.0f);
    wl_test_fill(c.up, c.n, 531, 2.0f);
    wl_test_fill(c.R, c.n, 532, 1.0f);
    float *dg = falloc(c.n), *du = falloc(c.n);
    k->swiglu_backward(dg, du, c.R, c.x, c.up, c.n);
    fd_check("swiglu dgate", loss_swiglu, &c, c.x, c.n, dg, h, atol, rtol);
    fd_check("swiglu dup", loss_swiglu, &c, c.up, c.n, du, h, atol, rtol);
    k->gelu_backward(dg, c.x, c.R, c.n);
    fd_check("gelu dx", loss_gelu, &c, c.x, c.n, dg, h, atol, rtol);
    free(dg), free(du), free(c.x), free(c.up), free(c.R), free(c.out);

    /* cross-entropy: 3 rows of 13 logits, one row ignored. */
    memset(&c, 0, sizeof c);
    int tg[3] = {4, -100, 12};
    c.k = k, c.N = 3, c.C = 13, c.tg = tg, c.n = (size_t)c.N * c.C;
    c.x = falloc(c.n), c.out = falloc((size_t)c.N);
    wl_test_fill(c.x, c.n, 540, 3.0f);
    g = fdup(c.x, c.n);
    k->xent_backward(g, tg, c.N, c.C, -100, 0.5f);
    fd_check("xent dlogits", loss_xent, &c, c.x, c.n, g, h, atol, rtol);
    free(g), free(c.x), free(c.out);
}

int main(void) {
    const wl_kernels *tables[3] = {&wl_kernels_scalar, NULL, NULL};
    int ntables = 1;
#ifdef WL_HAVE_WASMSIMD
    tables[ntables++] = &wl_kernels_wasmsimd;
#endif
#ifdef WL_HAVE_WASMRELAXED
    tables[ntables++] = &wl_kernels_wasmrelaxed;
#endif
#ifndef WL_HAVE_WASMSIMD
    printf("(SIMDe not found: only the scalar table is built and tested)\n");
#endif
    printf("sgemm against a double reference (every table)\n");
    test_gemm(tables, ntables);
    test_gemm_terms(tables, ntables);
#ifdef WL_HAVE_WASMSIMD
    printf("wasmsimd against scalar\n");
    test_norms_vs_scalar();
    test_rope_vs_scalar();
    test_softmax_vs_scalar();
    test_activations_vs_scalar();
    test_xent_vs_scalar();
    printf("vectorised exp / sigmoid accuracy\n");
    test_vmath();
#endif
    printf("backward kernels against central finite differences\n");
    for (int t = 0; t < ntables; t++) test_fd(tables[t]);
    return wl_test_summary("test_kernels");
}
