/* product.c: truncated SVD of a product B A (a LoRA update) without forming it: QR of B and of A^T, exact SVD
 * of the small core R_B R_A^T, factors mapped back through the two Q's. Everything runs in double. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "svd/svd_internal.h"
#include "wl_svd.h"

typedef struct product_job {
    int m, n, r, rank;
    int t, s;        /* t = min(m, r) rows of R_B, s = min(n, r) rows of R_A */
    int q;           /* min(t, s): the core's singular values, an upper bound on rank(B A) */
    int want;        /* min(rank, q): singular vectors that come from the core */
    int core_tall;   /* t >= s: the core's columns are the Jacobi vectors, else its rows */
    double *XB;      /* (m, r) vector set: B's columns, then their QR */
    double *tauB;    /* (t) */
    double *XA;      /* (n, r) vector set: A's rows (A^T's columns), then their QR */
    double *tauA;    /* (s) */
    double *Xc;      /* the core C = R_B R_A^T (t, s) as a vector set along its long side */
    double *sigma;   /* (q) */
    double *Pc;      /* (want, max(t, s)) long-side core vectors */
    double *Vc;      /* (want, min(t, s)) short-side core vectors */
    double *Ud;      /* (rank, m) left singular vectors */
    double *Vd;      /* (rank, n) right singular vectors */
    wl_dsvd dsvd;
} product_job;

static void product_reserve(product_job *job, wl_arena *arena) {
    int cl = job->core_tall ? job->t : job->s, cp = job->core_tall ? job->s : job->t;
    job->XB = wl_arena_take(arena, (size_t)job->m * job->r, sizeof(double));
    job->tauB = wl_arena_take(arena, (size_t)job->t, sizeof(double));
    job->XA = wl_arena_take(arena, (size_t)job->n * job->r, sizeof(double));
    job->tauA = wl_arena_take(arena, (size_t)job->s, sizeof(double));
    job->Xc = wl_arena_take(arena, (size_t)cl * cp, sizeof(double));
    wl_dsvd_reserve(&job->dsvd, arena, cl, cp, job->want);
    job->sigma = wl_arena_take(arena, (size_t)job->q, sizeof(double));
    job->Pc = wl_arena_take(arena, (size_t)job->want * cl, sizeof(double));
    job->Vc = wl_arena_take(arena, (size_t)job->want * cp, sizeof(double));
    job->Ud = wl_arena_take(arena, (size_t)job->rank * job->m, sizeof(double));
    job->Vd = wl_arena_take(arena, (size_t)job->rank * job->n, sizeof(double));
}

/* Columns 0..want-1 of `out` (rank, len) become Q [core vector; 0] for the reflectors in X (len, r); the
 * remaining columns complete them to an orthonormal set (the product has no singular values there). */
static void map_back(double *out, int len, int rank, int want, const double *core, int core_len, const double *X,
                     int t, const double *tau) {
    for (int c = 0; c < want; c++) {
        double *y = out + (size_t)c * len;
        memcpy(y, core + (size_t)c * core_len, (size_t)core_len * sizeof(double));
        memset(y + core_len, 0, (size_t)(len - core_len) * sizeof(double));
        wl_dqr_apply_q(X, len, t, tau, y);
    }
    wl_dcomplete_orthonormal(out, len, want, rank);
}

static wl_status product_run(product_job *job, const float *B, int ldb, const float *A, int lda) {
    int m = job->m, n = job->n, r = job->r, t = job->t, s = job->s;
    for (int i = 0; i < m; i++) {
        for (int k = 0; k < r; k++) job->XB[(size_t)k * m + i] = B[(size_t)i * ldb + k];
    }
    for (int k = 0; k < r; k++) {
        for (int j = 0; j < n; j++) job->XA[(size_t)k * n + j] = A[(size_t)k * lda + j];
    }
    wl_dqr_factor(job->XB, m, r, job->tauB);
    wl_dqr_factor(job->XA, n, r, job->tauA);
    /* B A = Q_B R_B (Q_A R_A)^T = Q_B (R_B R_A^T) Q_A^T with R_B (t, r) and R_A (s, r) upper trapezoidal:
     * R_B[i][k] = XB[k][i] for i <= k. */
    for (int i = 0; i < t; i++) {
        for (int j = 0; j < s; j++) {
            double sum = 0.0;
            for (int k = i > j ? i : j; k < r; k++) {
                sum += job->XB[(size_t)k * m + i] * job->XA[(size_t)k * n + j];
            }
            if (job->core_tall) {
                job->Xc[(size_t)j * t + i] = sum;
            } else {
                job->Xc[(size_t)i * s + j] = sum;
            }
        }
    }
    wl_status st = wl_dsvd_run(&job->dsvd, job->Xc, job->sigma, job->Pc, job->Vc);
    if (st) return st;
    /* Core vectors along t map through Q_B, those along s through Q_A. */
    const double *left = job->core_tall ? job->Pc : job->Vc;
    const double *right = job->core_tall ? job->Vc : job->Pc;
    map_back(job->Ud, m, job->rank, job->want, left, t, job->XB, t, job->tauB);
    map_back(job->Vd, n, job->rank, job->want, right, s, job->XA, s, job->tauA);
    return WL_OK;
}

wl_status wl_svd_of_product(const float *B, int m, int r, int ldb, const float *A, int n, int lda, int rank,
                            float *U, float *S, float *Vt, wl_lowrank_info *info) {
    static const char fn[] = "wl_svd_of_product";
    wl_status st;
    if ((st = wl_svd_check_matrix(fn, "B", B, m, r, ldb))) return st;
    if ((st = wl_svd_check_matrix(fn, "A", A, r, n, lda))) return st;
    if (!S) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: S is NULL", fn);
    int p = m < n ? m : n;
    if (rank < 1 || rank > p) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: rank = %d must be in [1, min(m, n) = %d]", fn, rank, p);
    }
    /* M itself is never formed, but U (m, rank) and Vt (rank, n) are: the same element limit applies. */
    if ((long long)m * rank > WL_SVD_MAX_ELEMENTS || (long long)n * rank > WL_SVD_MAX_ELEMENTS) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: U (%d x %d) or Vt (%d x %d) exceeds %lld elements", fn, m,
                       rank, rank, n, (long long)WL_SVD_MAX_ELEMENTS);
    }
    double amax = 0.0, sumsq = 0.0;
    if ((st = wl_svd_scan(fn, "B", B, m, r, ldb, &amax, &sumsq))) return st;
    if ((st = wl_svd_scan(fn, "A", A, r, n, lda, &amax, &sumsq))) return st;

    product_job job;
    memset(&job, 0, sizeof job);
    job.m = m;
    job.n = n;
    job.r = r;
    job.rank = rank;
    job.t = m < r ? m : r;
    job.s = n < r ? n : r;
    job.q = job.t < job.s ? job.t : job.s;
    job.want = rank < job.q ? rank : job.q;
    job.core_tall = job.t >= job.s;

    wl_arena arena = {NULL, 0, 0};
    product_reserve(&job, &arena);
    if (arena.overflow) {
        return wl_fail(WL_STATUS_OUT_OF_MEMORY, "%s: the workspace size for (%d x %d)(%d x %d) overflows", fn, m, r,
                       r, n);
    }
    void *block = wl_alloc(arena.used, "svd workspace");
    if (!block) return WL_STATUS_OUT_OF_MEMORY;
    arena = (wl_arena){(unsigned char *)block, 0, 0};
    product_reserve(&job, &arena);

    st = product_run(&job, B, ldb, A, lda);
    if (st == WL_OK && job.sigma[0] > FLT_MAX) {
        st = wl_fail(WL_STATUS_NUMERIC, "%s: the largest singular value (%.4g) overflows float32", fn, job.sigma[0]);
    }
    if (st == WL_OK) {
        for (int c = 0; c < rank; c++) S[c] = c < job.q ? (float)job.sigma[c] : 0.0f;
        if (U) {
            for (int i = 0; i < m; i++) {
                for (int c = 0; c < rank; c++) U[(size_t)i * rank + c] = (float)job.Ud[(size_t)c * m + i];
            }
        }
        if (Vt) {
            for (size_t i = 0; i < (size_t)rank * n; i++) Vt[i] = (float)job.Vd[i];
        }
        if (info) {
            /* ||B A||_F^2 is the sum of all the core's sigma^2 (the Q's are orthonormal); summing the dropped
             * ones directly keeps the relative error exact even when it is tiny. */
            double total = 0.0, dropped = 0.0;
            for (int c = 0; c < job.q; c++) {
                double s2 = job.sigma[c] * job.sigma[c];
                total += s2;
                if (c >= rank) dropped += s2;
            }
            info->rank = rank;
            info->norm = sqrt(total);
            info->rel_error = total > 0.0 ? sqrt(dropped / total) : 0.0;
            info->energy = total > 0.0 ? (total - dropped) / total : 1.0;
        }
    }
    wl_free(block);
    return st;
}
