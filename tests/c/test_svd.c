/* test_svd.c: wl_svd_truncated, wl_lowrank_approx and wl_svd_of_product against LAPACK singular values
 * (tests/ref/svd/<case>.bin from tests/ref/make_svd_ref.py) and against matrices of known spectrum built here. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "kernels/kernels.h"
#include "testutil.h"
#include "weblora.h"

/* The large known-spectrum shapes (an attention projection and an MLP projection of a 576-wide model). */
#define BIG_M 576
#define BIG_N1 576
#define BIG_N2 1536

/* Processor time (standard C, also in standalone wasm); one thread, so close to wall time. */
static double now_ms(void) { return (double)clock() * 1e3 / CLOCKS_PER_SEC; }

/* ---- reference files (format in make_svd_ref.py) ---- */

typedef struct ref_case {
    const char *name;
    int kind, m, n, r, q;
    float *A;  /* (m, n) for kind 0, (r, n) for kind 1 */
    float *B;  /* (m, r) for kind 1 */
    double *S; /* (q) LAPACK singular values */
} ref_case;

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static int load_ref(const char *name, ref_case *rc) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/ref/svd/%s.bin", name);
    size_t len = 0;
    uint8_t *buf = wl_test_read_file(wl_repo_path(rel), &len);
    memset(rc, 0, sizeof *rc);
    rc->name = name;
    if (!buf) {
        CHECK_MSG(0, "reference %s is missing", rel);
        return 0;
    }
    int ok = len >= 28 && memcmp(buf, "WLSV", 4) == 0 && rd32(buf + 4) == 1;
    if (ok) {
        rc->kind = (int)rd32(buf + 8);
        rc->m = (int)rd32(buf + 12);
        rc->n = (int)rd32(buf + 16);
        rc->r = (int)rd32(buf + 20);
        rc->q = (int)rd32(buf + 24);
        size_t nf = rc->kind == 0 ? (size_t)rc->m * rc->n : (size_t)rc->m * rc->r + (size_t)rc->r * rc->n;
        ok = (rc->kind == 0 || rc->kind == 1) && rc->m > 0 && rc->n > 0 && rc->q > 0 &&
             len == 28 + 4 * nf + 8 * (size_t)rc->q;
        if (ok) {
            float *f = malloc(4 * nf);
            rc->S = malloc(8 * (size_t)rc->q);
            memcpy(f, buf + 28, 4 * nf);
            memcpy(rc->S, buf + 28 + 4 * nf, 8 * (size_t)rc->q);
            if (rc->kind == 0) {
                rc->A = f;
            } else {
                rc->B = f;
                rc->A = f + (size_t)rc->m * rc->r;
            }
        }
    }
    free(buf);
    CHECK_MSG(ok, "reference %s is malformed", rel);
    return ok;
}

static void free_ref(ref_case *rc) {
    free(rc->kind == 0 ? rc->A : rc->B);
    free(rc->S);
}

/* ---- measurements ---- */

/* max |G - I| for the Gram matrix of `count` vectors of length len; element i of vector c is at
 * M[c * vstride + i * estride]. */
static double ortho_err(const float *M, int len, int count, size_t estride, size_t vstride) {
    double worst = 0.0;
    for (int a = 0; a < count; a++) {
        for (int b = a; b < count; b++) {
            double s = 0.0;
            for (int i = 0; i < len; i++) {
                s += (double)M[a * vstride + i * estride] * M[b * vstride + i * estride];
            }
            double d = fabs(s - (a == b ? 1.0 : 0.0));
            if (d > worst) worst = d;
        }
    }
    return worst;
}

/* ||M - U diag(S) Vt||_F in double, with M given in double (m, n) or f32 with stride lda. */
static double residual(const double *Md, const float *Mf, int lda, int m, int n, const float *U, const float *S,
                       const float *Vt, int r) {
    double ss = 0.0;
    double *row = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) row[j] = Md ? Md[(size_t)i * n + j] : Mf[(size_t)i * lda + j];
        for (int c = 0; c < r; c++) {
            double us = (double)U[(size_t)i * r + c] * S[c];
            const float *v = Vt + (size_t)c * n;
            for (int j = 0; j < n; j++) row[j] -= us * v[j];
        }
        for (int j = 0; j < n; j++) ss += row[j] * row[j];
    }
    free(row);
    return sqrt(ss);
}

/* sqrt(sum of S[i]^2 for i >= r): the Eckart-Young optimum of a rank-r truncation. */
static double tail_norm(const double *S, int q, int r) {
    double s = 0.0;
    for (int i = r; i < q; i++) s += S[i] * S[i];
    return sqrt(s);
}

typedef struct tolerance {
    double s_rel, s_abs; /* |S - Sref| <= s_rel * Sref + s_abs * Sref[0] */
    double ortho;        /* max |U^T U - I|, |Vt Vt^T - I| */
    double err_rel, err_abs; /* |err - opt| <= err_rel * opt + err_abs * ||A||_F */
} tolerance;

/* Exact path and products: float32 precision throughout (measured on the reference matrices: singular values
 * within 5.5e-8 relative of LAPACK's, orthonormality 4.7e-8, error equal to the optimum in its 7 printed digits). */
static const tolerance TOL_EXACT = {2e-6, 1e-7, 2e-6, 1e-5, 2e-7};
/* Randomized path on spectra that decay past the sketch: the f32 GEMMs bound the accuracy (measured: singular
 * values 8.7e-8 relative, orthonormality 1.1e-7, error equal to the optimum in 7 digits). */
static const tolerance TOL_RAND = {1e-5, 2e-6, 1e-5, 1e-4, 2e-6};

/* Run one truncated SVD of A (m, n) at `rank` and check it against the reference spectrum Sref (q values). */
static void check_truncated(const char *label, const float *A, int m, int n, int lda, int rank,
                            const wl_svd_options *opt, const double *Sref, int q, tolerance tol) {
    float *U = malloc(sizeof(float) * (size_t)m * rank);
    float *S = malloc(sizeof(float) * (size_t)rank);
    float *Vt = malloc(sizeof(float) * (size_t)rank * n);
    double t0 = now_ms();
    wl_status st = wl_svd_truncated(A, m, n, lda, rank, opt, U, S, Vt);
    double ms = now_ms() - t0;
    CHECK_OK(st);
    if (st == WL_OK) {
        double norm = tail_norm(Sref, q, 0), opt_err = tail_norm(Sref, q, rank);
        double ds_abs = 0.0, ds_rel = 0.0;
        int s_ok = 1;
        for (int c = 0; c < rank; c++) {
            double want = c < q ? Sref[c] : 0.0, d = fabs((double)S[c] - want);
            if (d > ds_abs) ds_abs = d;
            if (want > 0.0 && d / want > ds_rel) ds_rel = d / want;
            if (!(d <= tol.s_rel * want + tol.s_abs * Sref[0])) s_ok = 0;
            if (c > 0 && S[c] > S[c - 1]) s_ok = 0; /* sorted */
        }
        double ou = ortho_err(U, m, rank, (size_t)rank, 1);
        double ov = ortho_err(Vt, n, rank, 1, (size_t)n);
        double err = residual(NULL, A, lda, m, n, U, S, Vt, rank);
        double derr = fabs(err - opt_err);
        printf("  %-34s r=%-3d max|dS|/S0=%.2e max|dS|/S=%.2e orthoU=%.1e orthoV=%.1e err=%.6e opt=%.6e "
               "(%.1f ms)\n",
               label, rank, ds_abs / Sref[0], ds_rel, ou, ov, err / norm, opt_err / norm, ms);
        CHECK_MSG(s_ok, "%s r=%d: singular values off (max abs %.3e of S0, max rel %.3e)", label, rank,
                  ds_abs / Sref[0], ds_rel);
        CHECK_MSG(ou <= tol.ortho && ov <= tol.ortho, "%s r=%d: orthonormality U %.3e V %.3e > %.1e", label, rank,
                  ou, ov, tol.ortho);
        CHECK_MSG(derr <= tol.err_rel * opt_err + tol.err_abs * norm,
                  "%s r=%d: ||A - U S Vt|| = %.9g but the optimum is %.9g", label, rank, err, opt_err);
    }
    free(U);
    free(S);
    free(Vt);
}

static wl_svd_options method_opt(int method) {
    wl_svd_options o = wl_svd_default_options();
    o.method = method;
    return o;
}

/* ---- reference matrices ---- */

static void test_reference_matrices(void) {
    printf("reference matrices (LAPACK singular values), exact path:\n");
    static const char *names[] = {"random_64x48", "random_300x200", "illcond_120x80",
                                  "rankdef_100x80", "tall_256x32", "wide_32x256"};
    wl_svd_options exact = method_opt(WL_SVD_EXACT);
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        ref_case rc;
        if (!load_ref(names[f], &rc)) continue;
        int p = rc.m < rc.n ? rc.m : rc.n;
        int ranks[] = {1, 5, 8, 16, p};
        for (int i = 0; i < 5; i++) {
            if (ranks[i] > p || (i < 4 && ranks[i] == p)) continue;
            check_truncated(names[f], rc.A, rc.m, rc.n, rc.n, ranks[i], &exact, rc.S, rc.q, TOL_EXACT);
        }
        free_ref(&rc);
    }

    /* The randomized path on a spectrum that decays past the sketch (geometric, ratio 0.84 per index) is
     * float32-accurate; on the rank-deficient matrix the sketch captures the whole range. */
    printf("reference matrices, randomized path (q = 4, oversample 10):\n");
    wl_svd_options rnd = method_opt(WL_SVD_RANDOMIZED);
    ref_case rc;
    if (load_ref("illcond_120x80", &rc)) {
        check_truncated("illcond_120x80", rc.A, rc.m, rc.n, rc.n, 8, &rnd, rc.S, rc.q, TOL_RAND);
        check_truncated("illcond_120x80", rc.A, rc.m, rc.n, rc.n, 16, &rnd, rc.S, rc.q, TOL_RAND);
        free_ref(&rc);
    }
    if (load_ref("rankdef_100x80", &rc)) {
        /* Ranks above 5: the extra singular values are at rounding level and the vectors stay orthonormal. */
        int ranks[] = {3, 5, 8, 20};
        for (int i = 0; i < 4; i++) {
            check_truncated("rankdef_100x80", rc.A, rc.m, rc.n, rc.n, ranks[i], &rnd, rc.S, rc.q, TOL_RAND);
        }
        free_ref(&rc);
    }

    /* A flat spectrum (Gaussian matrix): the randomized error stays close to the optimum even though single
     * singular values are only accurate to a few percent (measured 2.6e-2 with q = 4, 8.9e-5 with q = 20; the
     * error 1.7e-3 and 2e-6 above the optimum, relative). */
    if (load_ref("random_300x200", &rc)) {
        const tolerance flat = {0.05, 0.0, 1e-5, 0.01, 0.0};
        check_truncated("random_300x200 (flat, rand)", rc.A, rc.m, rc.n, rc.n, 8, &rnd, rc.S, rc.q, flat);
        check_truncated("random_300x200 (flat, rand)", rc.A, rc.m, rc.n, rc.n, 16, &rnd, rc.S, rc.q, flat);
        /* More power iterations tighten the top singular values. */
        wl_svd_options more = rnd;
        more.power_iters = 20;
        const tolerance flat20 = {0.01, 0.0, 1e-5, 0.005, 0.0};
        check_truncated("random_300x200 (flat, q=20)", rc.A, rc.m, rc.n, rc.n, 8, &more, rc.S, rc.q, flat20);
        /* Near-full rank: AUTO switches to the exact path (r + oversample >= p). */
        check_truncated("random_300x200 (auto, r=195)", rc.A, rc.m, rc.n, rc.n, 195, NULL, rc.S, rc.q, TOL_EXACT);
        free_ref(&rc);
    }
}

/* AUTO must give bit-identical results to the path the documented rule names. */
static void test_auto_choice(void) {
    ref_case rc;
    if (!load_ref("random_300x200", &rc)) return;
    int n = rc.n;
    struct {
        int rows, cols, rank, want_method;
    } cases[] = {
        {64, 200, 8, WL_SVD_EXACT},        /* p = 64 <= WL_SVD_EXACT_MAX_DIM */
        {300, 65, 8, WL_SVD_RANDOMIZED},   /* p = 65, 8 + 10 < 65 */
        {300, 65, 55, WL_SVD_EXACT},       /* 55 + 10 >= 65 */
        {300, 200, 16, WL_SVD_RANDOMIZED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rows = cases[i].rows, cols = cases[i].cols, r = cases[i].rank;
        float *S1 = malloc(sizeof(float) * r), *S2 = malloc(sizeof(float) * r);
        float *U1 = malloc(sizeof(float) * rows * r), *U2 = malloc(sizeof(float) * rows * r);
        wl_svd_options forced = method_opt(cases[i].want_method);
        CHECK_OK(wl_svd_truncated(rc.A, rows, cols, n, r, NULL, U1, S1, NULL));
        CHECK_OK(wl_svd_truncated(rc.A, rows, cols, n, r, &forced, U2, S2, NULL));
        CHECK_MSG(memcmp(S1, S2, sizeof(float) * r) == 0 && memcmp(U1, U2, sizeof(float) * rows * r) == 0,
                  "AUTO on %dx%d at rank %d is not the %s path", rows, cols, r,
                  cases[i].want_method == WL_SVD_EXACT ? "exact" : "randomized");
        free(S1);
        free(S2);
        free(U1);
        free(U2);
    }
    free_ref(&rc);
}

/* ---- known spectrum, large ---- */

/* `cols` orthonormal vectors of length `rows` (vector set: vector c at Q + c * rows): Gaussian columns from
 * the core's generator, modified Gram-Schmidt twice in double. Independent of the library's QR on purpose. */
static double *random_orthonormal(int rows, int cols, uint64_t seed) {
    double *Q = malloc(sizeof(double) * (size_t)rows * cols);
    wl_rng rng;
    wl_rng_seed(&rng, seed);
    for (size_t i = 0; i < (size_t)rows * cols; i++) Q[i] = wl_rng_normal(&rng);
    for (int c = 0; c < cols; c++) {
        double *q = Q + (size_t)c * rows;
        for (int pass = 0; pass < 2; pass++) {
            for (int d = 0; d < c; d++) {
                const double *u = Q + (size_t)d * rows;
                double h = 0.0;
                for (int i = 0; i < rows; i++) h += q[i] * u[i];
                for (int i = 0; i < rows; i++) q[i] -= h * u[i];
            }
            double nrm = 0.0;
            for (int i = 0; i < rows; i++) nrm += q[i] * q[i];
            nrm = sqrt(nrm);
            for (int i = 0; i < rows; i++) q[i] /= nrm;
        }
    }
    return Q;
}

/* A (m, n) = U diag(S) V^T rounded to f32, U (m, c) and V (n, c) random orthonormal. */
static float *known_spectrum(int m, int n, int c, const double *S, uint64_t seed) {
    double *Uo = random_orthonormal(m, c, seed * 2 + 1), *Vo = random_orthonormal(n, c, seed * 2 + 2);
    float *A = malloc(sizeof(float) * (size_t)m * n);
    double *row = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < m; i++) {
        memset(row, 0, sizeof(double) * (size_t)n);
        for (int k = 0; k < c; k++) {
            double us = Uo[(size_t)k * m + i] * S[k];
            const double *v = Vo + (size_t)k * n;
            for (int j = 0; j < n; j++) row[j] += us * v[j];
        }
        for (int j = 0; j < n; j++) A[(size_t)i * n + j] = (float)row[j];
    }
    free(row);
    free(Uo);
    free(Vo);
    return A;
}

static void test_known_spectrum(void) {
    /* S_i = 4 exp(-i / 12) for i < 200 (then 0): a decaying spectrum like a trained weight's top part; the
     * f32 rounding of A puts every other singular value near 1e-7 S_0. */
    enum { C = 200 };
    double S[C];
    for (int i = 0; i < C; i++) S[i] = 4.0 * exp(-i / 12.0);
    int shapes[2][2] = {{BIG_M, BIG_N1}, {BIG_M, BIG_N2}};
    printf("known spectrum, randomized (default options: q = 4, oversample 10):\n");
    for (int s = 0; s < 2; s++) {
        int m = shapes[s][0], n = shapes[s][1];
        float *A = known_spectrum(m, n, C, S, 100 + s);
        char label[64];
        snprintf(label, sizeof label, "exp-decay %dx%d", m, n);
        check_truncated(label, A, m, n, n, 8, NULL, S, C, TOL_RAND);
        check_truncated(label, A, m, n, n, 16, NULL, S, C, TOL_RAND);
        /* The low-rank call on the same matrix measures its residual in several row blocks (about 1 MB each),
         * the last one partial. */
        float *L = malloc(sizeof(float) * (size_t)m * 16), *R = malloc(sizeof(float) * (size_t)16 * n);
        wl_lowrank_info info;
        CHECK_OK(wl_lowrank_approx(A, m, n, n, 16, 0.0f, WL_SPLIT_BALANCED, NULL, L, R, NULL, &info));
        double opt = tail_norm(S, C, 16) / tail_norm(S, C, 0);
        printf("  %-34s r=16  lowrank rel_error %.7e (optimum %.7e)\n", label, info.rel_error, opt);
        /* measured: equal to the optimum in its 8 printed digits */
        CHECK_MSG(fabs(info.rel_error - opt) <= 1e-4 * opt && info.rank == 16,
                  "%s: low-rank rel_error %.9g, optimum %.9g", label, info.rel_error, opt);
        free(L);
        free(R);
        /* The transpose goes through the same code with the roles of m and n swapped. */
        if (s == 1) {
            float *At = malloc(sizeof(float) * (size_t)m * n);
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) At[(size_t)j * m + i] = A[(size_t)i * n + j];
            }
            snprintf(label, sizeof label, "exp-decay %dx%d (tall)", n, m);
            check_truncated(label, At, n, m, m, 16, NULL, S, C, TOL_RAND);
            free(At);
        }
        free(A);
    }
}

/* ---- determinism, strides, scaling, exact rank deficiency ---- */

static void test_determinism_and_strides(void) {
    enum { M = 150, N = 120, R = 6 };
    double S[40];
    for (int i = 0; i < 40; i++) S[i] = pow(0.8, i);
    float *A = known_spectrum(M, N, 40, S, 7);
    float U1[M * R], U2[M * R], S1[R], S2[R], V1[R * N], V2[R * N];
    wl_svd_options o = method_opt(WL_SVD_RANDOMIZED);
    o.seed = 42;
    CHECK_OK(wl_svd_truncated(A, M, N, N, R, &o, U1, S1, V1));
    CHECK_OK(wl_svd_truncated(A, M, N, N, R, &o, U2, S2, V2));
    CHECK_MSG(!memcmp(U1, U2, sizeof U1) && !memcmp(S1, S2, sizeof S1) && !memcmp(V1, V2, sizeof V1),
              "same seed, different results");
    o.seed = 43;
    CHECK_OK(wl_svd_truncated(A, M, N, N, R, &o, U2, S2, V2));
    CHECK_MSG(memcmp(U1, U2, sizeof U1) != 0, "the seed does not reach the sketch");
    wl_test_close("other seed: S", S2, S1, R, 0.0f, 1e-5f);

    /* Row stride > n with NaN padding: the padding must never be read. */
    int lda = N + 5;
    float *Ap = malloc(sizeof(float) * (size_t)M * lda);
    for (int i = 0; i < M; i++) {
        memcpy(Ap + (size_t)i * lda, A + (size_t)i * N, sizeof(float) * N);
        for (int j = N; j < lda; j++) Ap[(size_t)i * lda + j] = NAN;
    }
    for (int method = WL_SVD_EXACT; method <= WL_SVD_RANDOMIZED; method++) {
        wl_svd_options om = method_opt(method);
        CHECK_OK(wl_svd_truncated(A, M, N, N, R, &om, U1, S1, V1));
        CHECK_OK(wl_svd_truncated(Ap, M, N, lda, R, &om, U2, S2, V2));
        CHECK_MSG(!memcmp(U1, U2, sizeof U1) && !memcmp(S1, S2, sizeof S1) && !memcmp(V1, V2, sizeof V1),
                  "lda = n + 5 changes the result (method %d)", method);
    }
    /* U or Vt may be skipped. */
    CHECK_OK(wl_svd_truncated(A, M, N, N, R, NULL, NULL, S2, NULL));
    wl_test_close("S without vectors", S2, S1, R, 0.0f, 0.0f);
    free(Ap);

    /* Huge and tiny magnitudes: the randomized path rescales by a power of two, so S scales exactly (measured:
     * bit for bit; vectors orthonormal to 1e-7 as for unscaled input). */
    float *As = malloc(sizeof(float) * (size_t)M * N);
    float ref_S[R];
    wl_svd_options rnd = method_opt(WL_SVD_RANDOMIZED);
    CHECK_OK(wl_svd_truncated(A, M, N, N, R, &rnd, NULL, ref_S, NULL));
    double scales[] = {0x1p100, 0x1p-100};
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; i < (size_t)M * N; i++) As[i] = (float)(A[i] * scales[s]);
        CHECK_OK(wl_svd_truncated(As, M, N, N, R, &rnd, U2, S2, V2));
        float back[R];
        for (int c = 0; c < R; c++) back[c] = (float)(S2[c] / scales[s]);
        wl_test_close(s == 0 ? "A * 2^100: S / 2^100" : "A * 2^-100: S * 2^100", back, ref_S, R, 0.0f, 1e-6f);
        CHECK(ortho_err(U2, M, R, R, 1) < 1e-5 && ortho_err(V2, N, R, 1, N) < 1e-5);
    }
    free(As);
    free(A);
}

/* Exactly rank-deficient and zero matrices: vectors for zero singular values are completed, never NaN.
 * The modular matrix (7i + 3j) mod 5 (rank 5) has noise columns that are exactly parallel after QR and
 * rotations; without deflating them to zero, QR and Jacobi cascade into subnormals and lose orthogonality. */
static void test_exact_rank_deficiency(void) {
    enum { M0 = 40, N0 = 30, M1 = 62, N1 = 76 };
    float *A = malloc(sizeof(float) * M0 * N0), *B = malloc(sizeof(float) * M1 * N1);
    float *Z = calloc(M0 * N0, sizeof(float));
    /* Three independent integer rows repeated: rank exactly 3, and columns 20.. are zero. */
    for (int i = 0; i < M0; i++) {
        for (int j = 0; j < N0; j++) {
            int v = i % 3 == 0 ? j % 7 : i % 3 == 1 ? 2 * (j % 7) - 3 : (j % 5) * (j % 3);
            A[i * N0 + j] = j < 20 ? (float)v : 0.0f;
        }
    }
    for (int i = 0; i < M1; i++) {
        for (int j = 0; j < N1; j++) B[i * N1 + j] = (float)((i * 7 + j * 3) % 5);
    }
    struct {
        const char *label;
        const float *A;
        int m, n, rank, true_rank;
    } cases[] = {
        {"integer rank 3", A, M0, N0, 12, 3},
        {"modular rank 5", B, M1, N1, 58, 5},
        {"zero matrix", Z, M0, N0, 12, 0},
    };
    for (int t = 0; t < 3; t++) {
        int m = cases[t].m, n = cases[t].n, R = cases[t].rank;
        float *U = malloc(sizeof(float) * m * R), *S = malloc(sizeof(float) * R), *Vt = malloc(sizeof(float) * R * n);
        for (int method = WL_SVD_EXACT; method <= WL_SVD_RANDOMIZED; method++) {
            wl_svd_options o = method_opt(method);
            CHECK_OK(wl_svd_truncated(cases[t].A, m, n, n, R, &o, U, S, Vt));
            double ou = ortho_err(U, m, R, R, 1), ov = ortho_err(Vt, n, R, 1, n);
            double err = residual(NULL, cases[t].A, n, m, n, U, S, Vt, R);
            double small = 0.0;
            for (int c = cases[t].true_rank; c < R; c++) small = fmax(small, fabs(S[c]));
            printf("  %-20s %-10s r=%-3d orthoU=%.1e orthoV=%.1e ||A - USVt||=%.2e max S[rank..]=%.2e\n",
                   cases[t].label, method == WL_SVD_EXACT ? "exact" : "randomized", R, ou, ov, err, small);
            /* measured: orthonormality 2.6e-7, residual 5.0e-5 (randomized, modular rank 5; A's entries are up
             * to ~100), singular values beyond the rank 3.7e-6 */
            CHECK_MSG(ou < 1e-5 && ov < 1e-5, "%s: U/V not orthonormal (%.3e %.3e)", cases[t].label, ou, ov);
            CHECK_MSG(err < 1e-4 && small < 1e-4, "%s: residual %.3e, S beyond the rank %.3e", cases[t].label, err,
                      small);
        }
        free(U);
        free(S);
        free(Vt);
    }
    free(A);
    free(B);
    free(Z);
}

/* ---- low-rank approximation ---- */

static void test_lowrank(void) {
    ref_case rc;
    if (!load_ref("illcond_120x80", &rc)) return;
    int m = rc.m, n = rc.n, max_rank = 30;
    double total = tail_norm(rc.S, rc.q, 0);
    float *L = malloc(sizeof(float) * (size_t)m * max_rank), *R = malloc(sizeof(float) * (size_t)max_rank * n);
    float S[30];
    float energies[] = {0.5f, 0.9f, 0.99f, 0.9999f};
    printf("low-rank approximation at an energy threshold (illcond_120x80, max_rank 30):\n");
    for (int e = 0; e < 4; e++) {
        for (int split = WL_SPLIT_LEFT; split <= WL_SPLIT_BALANCED; split++) {
            /* The reference rank from LAPACK's values. */
            int want = max_rank;
            double acc = 0.0;
            for (int c = 0; c < max_rank; c++) {
                acc += rc.S[c] * rc.S[c];
                if (acc >= energies[e] * total * total) {
                    want = c + 1;
                    break;
                }
            }
            wl_lowrank_info info;
            memset(&info, 0, sizeof info);
            CHECK_OK(wl_lowrank_approx(rc.A, m, n, n, max_rank, energies[e], split, NULL, L, R, S, &info));
            int r = info.rank;
            double opt = tail_norm(rc.S, rc.q, r) / total;
            /* L R against A directly (L is packed with stride r). */
            float *ones = malloc(sizeof(float) * (size_t)r);
            for (int c = 0; c < r; c++) ones[c] = 1.0f;
            double err = residual(NULL, rc.A, n, m, n, L, ones, R, r) / total;
            free(ones);
            /* The split: LEFT has orthonormal rows in R; BALANCED has L^T L = R R^T = diag(S). */
            double split_err = 0.0;
            for (int a = 0; a < r; a++) {
                for (int b = 0; b < r; b++) {
                    double rr = 0.0, ll = 0.0;
                    for (int j = 0; j < n; j++) rr += (double)R[a * n + j] * R[b * n + j];
                    for (int i = 0; i < m; i++) ll += (double)L[i * r + a] * L[i * r + b];
                    double want_rr = a != b ? 0.0 : split == WL_SPLIT_LEFT ? 1.0 : S[a];
                    double want_ll = a != b ? 0.0 : split == WL_SPLIT_LEFT ? (double)S[a] * S[a] : S[a];
                    split_err = fmax(split_err, fabs(rr - want_rr) / (want_rr > 0 ? fmax(want_rr, 1.0) : 1.0));
                    split_err = fmax(split_err, fabs(ll - want_ll) / (want_ll > 0 ? fmax(want_ll, 1.0) : 1.0));
                }
            }
            printf("  energy %-7g %-8s rank %2d (LAPACK: %2d) rel_error %.6e (measured %.6e, optimum %.6e) "
                   "energy %.6f split %.1e\n",
                   (double)energies[e], split ? "balanced" : "left", r, want, info.rel_error, err, opt, info.energy,
                   split_err);
            /* measured: rel_error equal to the optimum in 6 digits, the factor Gram matrices within 4.3e-8 */
            CHECK_MSG(r == want, "energy %g: rank %d, LAPACK says %d", (double)energies[e], r, want);
            CHECK_MSG(fabs(info.rel_error - opt) <= 1e-4 * opt + 2e-7 && fabs(err - info.rel_error) <= 1e-6,
                      "energy %g: rel_error %.9g, measured %.9g, optimum %.9g", (double)energies[e],
                      info.rel_error, err, opt);
            CHECK_MSG(fabs(info.norm - total) <= 1e-9 * total && info.energy >= energies[e] &&
                          fabs(info.energy - (1.0 - opt * opt)) <= 1e-6,
                      "energy %g: norm %.9g (%.9g), energy %.9g", (double)energies[e], info.norm, total,
                      info.energy);
            CHECK_MSG(split_err < 2e-6, "split %d: factor Gram matrices off by %.3e", split, split_err);
        }
    }
    /* Fixed rank (energy <= 0) and an energy max_rank cannot reach: both return max_rank. */
    wl_lowrank_info info;
    CHECK_OK(wl_lowrank_approx(rc.A, m, n, n, 7, 0.0f, WL_SPLIT_LEFT, NULL, L, R, NULL, &info));
    CHECK_MSG(info.rank == 7 && fabs(info.rel_error - tail_norm(rc.S, rc.q, 7) / total) < 1e-6,
              "fixed rank 7: rank %d rel_error %.9g", info.rank, info.rel_error);
    CHECK_OK(wl_lowrank_approx(rc.A, m, n, n, 3, 0.999f, WL_SPLIT_LEFT, NULL, L, R, NULL, &info));
    CHECK_MSG(info.rank == 3 && info.energy < 0.999, "unreachable energy: rank %d energy %.6f", info.rank,
              info.energy);
    /* Zero matrix: rank 1, no error, nothing lost. */
    float *Z = calloc((size_t)m * n, sizeof(float));
    CHECK_OK(wl_lowrank_approx(Z, m, n, n, 4, 0.9f, WL_SPLIT_BALANCED, NULL, L, R, NULL, &info));
    CHECK_MSG(info.rank == 1 && info.rel_error == 0.0 && info.norm == 0.0 && info.energy == 1.0,
              "zero matrix: rank %d rel_error %g norm %g energy %g", info.rank, info.rel_error, info.norm,
              info.energy);
    free(Z);
    free(L);
    free(R);
    free_ref(&rc);
}

/* ---- SVD of a product ---- */

static void test_product(void) {
    static const char *names[] = {"product_96x8x80", "product_64x24x72", "product_20x40x30"};
    printf("SVD of a product B A (LAPACK singular values of the float64 product):\n");
    for (size_t f = 0; f < 3; f++) {
        ref_case rc;
        if (!load_ref(names[f], &rc)) continue;
        int m = rc.m, n = rc.n, r = rc.r, p = m < n ? m : n;
        int qcore = r < p ? r : p; /* rank bound of B A */
        double *M = calloc((size_t)m * n, sizeof(double));
        for (int i = 0; i < m; i++) {
            for (int k = 0; k < r; k++) {
                double b = rc.B[(size_t)i * r + k];
                for (int j = 0; j < n; j++) M[(size_t)i * n + j] += b * rc.A[(size_t)k * n + j];
            }
        }
        double total = tail_norm(rc.S, qcore, 0);
        int ranks[] = {1, 4, qcore / 2, qcore, qcore + 4 <= p ? qcore + 4 : p};
        for (int i = 0; i < 5; i++) {
            int rank = ranks[i];
            if (rank < 1 || (i > 0 && rank == ranks[i - 1])) continue;
            float *U = malloc(sizeof(float) * (size_t)m * rank), *S = malloc(sizeof(float) * rank);
            float *Vt = malloc(sizeof(float) * (size_t)rank * n);
            wl_lowrank_info info;
            memset(&info, 0, sizeof info);
            CHECK_OK(wl_svd_of_product(rc.B, m, r, r, rc.A, n, n, rank, U, S, Vt, &info));
            double ds = 0.0;
            for (int c = 0; c < rank; c++) {
                double want = c < qcore ? rc.S[c] : 0.0;
                ds = fmax(ds, fabs(S[c] - want) / (want > 0 ? want : rc.S[0]));
            }
            double opt = tail_norm(rc.S, qcore, rank);
            double err = residual(M, NULL, 0, m, n, U, S, Vt, rank);
            double ou = ortho_err(U, m, rank, rank, 1), ov = ortho_err(Vt, n, rank, 1, n);
            printf("  %-18s r=%-3d max rel dS=%.2e orthoU=%.1e orthoV=%.1e err=%.6e opt=%.6e info=%.6e\n",
                   names[f], rank, ds, ou, ov, err / total, opt / total, info.rel_error);
            /* measured: singular values 5.5e-8 relative, orthonormality 5.8e-8, error equal to the optimum */
            CHECK_MSG(ds <= 2e-6, "%s rank %d: singular values off by %.3e", names[f], rank, ds);
            CHECK_MSG(ou <= 2e-6 && ov <= 2e-6, "%s rank %d: orthonormality %.3e %.3e", names[f], rank, ou, ov);
            CHECK_MSG(fabs(err - opt) <= 1e-5 * opt + 2e-7 * total, "%s rank %d: error %.9g, optimum %.9g",
                      names[f], rank, err, opt);
            /* The reported error is computed from the core: exact, including when it is 0. */
            CHECK_MSG(fabs(info.rel_error - opt / total) <= 1e-9 + 1e-6 * opt / total && info.rank == rank &&
                          fabs(info.norm - total) <= 1e-9 * total,
                      "%s rank %d: info rel_error %.12g, want %.12g", names[f], rank, info.rel_error, opt / total);
            free(U);
            free(S);
            free(Vt);
        }
        /* Against the truncated SVD of the explicitly formed product. */
        float *Mf = malloc(sizeof(float) * (size_t)m * n);
        for (size_t i = 0; i < (size_t)m * n; i++) Mf[i] = (float)M[i];
        int rank = qcore < 6 ? qcore : 6;
        float S1[6], S2[6];
        wl_svd_options exact = method_opt(WL_SVD_EXACT);
        CHECK_OK(wl_svd_of_product(rc.B, m, r, r, rc.A, n, n, rank, NULL, S1, NULL, NULL));
        CHECK_OK(wl_svd_truncated(Mf, m, n, n, rank, &exact, NULL, S2, NULL));
        wl_test_close("product vs explicit product: S", S1, S2, (size_t)rank, 0.0f, 2e-6f);
        free(Mf);
        free(M);
        free_ref(&rc);
    }
}

/* ---- errors ---- */

static void test_errors(void) {
    float A[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    float U[12], S[4], Vt[12];
    CHECK_STATUS(wl_svd_truncated(NULL, 3, 4, 4, 2, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 2, NULL, U, NULL, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 0, 4, 4, 1, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 3, -1, 4, 1, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 3, 1, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 0, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, -2, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 4, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(wl_last_error(), "rank = 4") != NULL);
    /* Absurd sizes are refused before anything is read or allocated. */
    CHECK_STATUS(wl_svd_truncated(A, INT_MAX, 4, 4, 1, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_truncated(A, 1 << 20, 1 << 20, 1 << 20, 1, NULL, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(wl_last_error(), "elements") != NULL);
    wl_svd_options bad = wl_svd_default_options();
    bad.power_iters = -1;
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 1, &bad, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    bad = wl_svd_default_options();
    bad.method = 7;
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 1, &bad, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    bad = wl_svd_default_options();
    bad.oversample = 5000;
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 1, &bad, U, S, Vt), WL_STATUS_INVALID_ARGUMENT);
    /* NaN and Inf, with their position in the message. */
    A[6] = NAN;
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 2, NULL, U, S, Vt), WL_STATUS_NUMERIC);
    CHECK_MSG(strstr(wl_last_error(), "A[1, 2] is NaN") != NULL, "message: %s", wl_last_error());
    A[6] = INFINITY;
    CHECK_STATUS(wl_svd_truncated(A, 3, 4, 4, 2, NULL, U, S, Vt), WL_STATUS_NUMERIC);
    CHECK_MSG(strstr(wl_last_error(), "A[1, 2] is Inf") != NULL, "message: %s", wl_last_error());
    /* A singular value beyond float32 from finite entries. */
    float big[4] = {3e38f, 3e38f, 3e38f, 3e38f};
    CHECK_STATUS(wl_svd_truncated(big, 2, 2, 2, 1, NULL, U, S, Vt), WL_STATUS_NUMERIC);
    A[6] = 7.0f;

    float L[12], R[12];
    wl_lowrank_info info;
    CHECK_STATUS(wl_lowrank_approx(A, 3, 4, 4, 2, 1.5f, WL_SPLIT_LEFT, NULL, L, R, NULL, &info),
                 WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_lowrank_approx(A, 3, 4, 4, 2, NAN, WL_SPLIT_LEFT, NULL, L, R, NULL, &info),
                 WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_lowrank_approx(A, 3, 4, 4, 2, 0.5f, 9, NULL, L, R, NULL, &info), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_lowrank_approx(A, 3, 4, 4, 2, 0.5f, WL_SPLIT_LEFT, NULL, NULL, R, NULL, &info),
                 WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_lowrank_approx(A, 3, 4, 4, 5, 0.5f, WL_SPLIT_LEFT, NULL, L, R, NULL, &info),
                 WL_STATUS_INVALID_ARGUMENT);

    float B[6] = {1, 2, 3, 4, 5, 6}; /* (3, 2) */
    float Ar[8] = {1, 0, 2, 1, 0, 1, 1, 3}; /* (2, 4) */
    CHECK_STATUS(wl_svd_of_product(NULL, 3, 2, 2, Ar, 4, 4, 1, U, S, Vt, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_of_product(B, 3, 2, 2, Ar, 4, 4, 4, U, S, Vt, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_of_product(B, 3, 2, 1, Ar, 4, 4, 1, U, S, Vt, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_of_product(B, 3, 0, 2, Ar, 4, 4, 1, U, S, Vt, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_svd_of_product(B, 3, 2, 2, Ar, 4, 4, 1, U, NULL, Vt, NULL), WL_STATUS_INVALID_ARGUMENT);
    Ar[5] = -INFINITY;
    CHECK_STATUS(wl_svd_of_product(B, 3, 2, 2, Ar, 4, 4, 1, U, S, Vt, NULL), WL_STATUS_NUMERIC);
    CHECK_MSG(strstr(wl_last_error(), "A[1, 1] is Inf") != NULL, "message: %s", wl_last_error());
    Ar[5] = 1.0f;
    /* A freshly initialised adapter has B = 0: the product is zero, nothing is lost, vectors orthonormal. */
    float B0[6] = {0};
    CHECK_OK(wl_svd_of_product(B0, 3, 2, 2, Ar, 4, 4, 3, U, S, Vt, &info));
    CHECK_MSG(S[0] == 0.0f && S[2] == 0.0f && info.rel_error == 0.0 && info.norm == 0.0 && info.energy == 1.0 &&
                  ortho_err(U, 3, 3, 3, 1) < 1e-6 && ortho_err(Vt, 4, 3, 1, 4) < 1e-6,
              "B = 0: S[0] = %g, rel_error %g, norm %g", (double)S[0], info.rel_error, info.norm);
    CHECK_OK(wl_svd_of_product(B, 3, 2, 2, Ar, 4, 4, 3, U, S, Vt, &info));
    CHECK_MSG(S[2] == 0.0f && info.rel_error == 0.0, "rank 3 of a rank-2 product: S[2] = %g, rel_error %g",
              (double)S[2], info.rel_error);
}

/* The randomized path through each SIMD kernel table this build has. */
static void test_simd_table(void) {
    enum { C = 120 };
    double S[C];
    for (int i = 0; i < C; i++) S[i] = 4.0 * exp(-i / 12.0);
    float *A = known_spectrum(160, 300, C, S, 11);
    const char *names[2] = {"wasmsimd", "wasmrelaxed"};
    for (int t = 0; t < 2; t++) {
        const wl_kernels *simd = wl_kernels_by_name(names[t]);
        if (!simd) {
            printf("%s kernel table not built: skipped\n", names[t]);
            continue;
        }
        char what[64];
        snprintf(what, sizeof what, "exp-decay 160x300 (%s)", names[t]);
        wl_kernels_set_default(simd);
        printf("through the %s kernel table:\n", names[t]);
        check_truncated(what, A, 160, 300, 300, 12, NULL, S, C, TOL_RAND);
        wl_kernels_set_default(NULL);
    }
    free(A);
}

int main(void) {
    double t0 = now_ms();
    test_errors();
    test_reference_matrices();
    test_auto_choice();
    test_known_spectrum();
    test_determinism_and_strides();
    test_exact_rank_deficiency();
    test_lowrank();
    test_product();
    test_simd_table();
    printf("total %.0f ms\n", now_ms() - t0);
    return wl_test_summary("test_svd");
}
