/* svd.c: truncated SVD of f32 matrices (the exact Jacobi path and the randomized range finder) and the best
 * low-rank approximation at a fixed rank or an energy threshold. The GEMMs of the randomized path go through
 * the kernel table; QR and the small SVDs run in double (dense.c). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "kernels/kernels.h"
#include "svd/svd_internal.h"
#include "wl_svd.h"

/* The randomized path works on a power-of-two rescaled copy of A when max |A| lies outside this range, so its
 * f32 products can neither overflow nor lose the small entries to underflow; the exact path runs in double
 * and needs no rescaling. */
#define WL_SVD_SCALE_LIMIT 0x1p40

wl_svd_options wl_svd_default_options(void) {
    wl_svd_options o;
    o.method = WL_SVD_AUTO;
    o.power_iters = 4;
    o.oversample = 10;
    o.seed = 0;
    return o;
}

wl_status wl_svd_check_matrix(const char *fn, const char *name, const float *M, int rows, int cols, int ld) {
    if (!M) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: %s is NULL", fn, name);
    if (rows < 1 || rows > WL_SVD_MAX_DIM || cols < 1 || cols > WL_SVD_MAX_DIM) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: %s is %d x %d; each dimension must be in [1, %d]", fn,
                       name, rows, cols, WL_SVD_MAX_DIM);
    }
    if ((long long)rows * cols > WL_SVD_MAX_ELEMENTS) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: %s is %d x %d = %lld elements, more than the %lld supported",
                       fn, name, rows, cols, (long long)rows * cols, (long long)WL_SVD_MAX_ELEMENTS);
    }
    if (ld < cols) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: the row stride of %s (%d) is smaller than its %d columns",
                       fn, name, ld, cols);
    }
    size_t span, bytes;
    if (!wl_mul_size((size_t)(rows - 1), (size_t)ld, &span) || !wl_add_size(span, (size_t)cols, &span) ||
        !wl_mul_size(span, sizeof(float), &bytes)) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: %s, %d rows with a stride of %d, exceeds the address space",
                       fn, name, rows, ld);
    }
    return WL_OK;
}

wl_status wl_svd_scan(const char *fn, const char *name, const float *M, int rows, int cols, int ld, double *amax,
                      double *sumsq) {
    double mx = 0.0, ss = 0.0;
    for (int i = 0; i < rows; i++) {
        const float *row = M + (size_t)i * ld;
        for (int j = 0; j < cols; j++) {
            float v = row[j];
            if (!isfinite(v)) {
                return wl_fail(WL_STATUS_NUMERIC, "%s: %s[%d, %d] is %s", fn, name, i, j, isnan(v) ? "NaN" : "Inf");
            }
            double a = fabs((double)v);
            if (a > mx) mx = a;
            ss += a * a;
        }
    }
    *amax = mx;
    *sumsq = ss;
    return WL_OK;
}

static wl_status resolve_options(const char *fn, const wl_svd_options *opt, wl_svd_options *out) {
    *out = opt ? *opt : wl_svd_default_options();
    if (out->method < WL_SVD_AUTO || out->method > WL_SVD_RANDOMIZED) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: unknown method %d", fn, out->method);
    }
    if (out->power_iters < 0 || out->power_iters > 64) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: power_iters = %d must be in [0, 64]", fn, out->power_iters);
    }
    if (out->oversample < 0 || out->oversample > 4096) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: oversample = %d must be in [0, 4096]", fn, out->oversample);
    }
    return WL_OK;
}

/* One truncated SVD: the decisions, then the workspace pointers (filled by job_reserve). */
typedef struct svd_job {
    const float *A;
    int m, n, lda, rank;
    int exact;     /* 1: Jacobi on the whole matrix; 0: randomized */
    int k;         /* sketch width of the randomized path, min(rank + oversample, p) */
    int q;         /* power iterations */
    uint64_t seed;
    double scale;  /* the randomized path factors scale * A (a power of two) */
    float *As;     /* (m, n) scale * A when scale != 1 */
    float *Zn;     /* (n, k) Omega, then A^T Q */
    float *Ym;     /* (m, k) A Z, then its orthonormal basis Q */
    float *Ub;     /* (k, rank) left singular vectors of Q^T A, in f32 for the sgemm */
    double *X;     /* vector set: (max(m, n), p) exact; (max(m, n), k) randomized */
    double *tau;   /* (k) */
    double *sigma; /* (p) exact; (k) randomized: every singular value the small SVD produced */
    double *P;     /* long-side singular vectors: (rank, max(m, n)) exact, (rank, n) randomized */
    double *Vs;    /* short-side singular vectors: (rank, p) exact, (rank, k) randomized */
    wl_dsvd dsvd;
} svd_job;

/* Validate, scan A and decide the method; shared by wl_svd_truncated and wl_lowrank_approx. */
static wl_status job_prepare(svd_job *job, const char *fn, const float *A, int m, int n, int lda, int rank,
                             const wl_svd_options *opt, double *sumsq) {
    memset(job, 0, sizeof *job);
    wl_status st = wl_svd_check_matrix(fn, "A", A, m, n, lda);
    if (st) return st;
    int p = m < n ? m : n;
    if (rank < 1 || rank > p) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: rank = %d must be in [1, min(m, n) = %d]", fn, rank, p);
    }
    wl_svd_options o;
    if ((st = resolve_options(fn, opt, &o))) return st;
    double amax = 0.0;
    if ((st = wl_svd_scan(fn, "A", A, m, n, lda, &amax, sumsq))) return st;

    job->A = A;
    job->m = m;
    job->n = n;
    job->lda = lda;
    job->rank = rank;
    job->q = o.power_iters;
    job->seed = o.seed;
    int wide = rank + o.oversample;
    job->exact = o.method == WL_SVD_EXACT ||
                 (o.method == WL_SVD_AUTO && (p <= WL_SVD_EXACT_MAX_DIM || wide >= p));
    job->k = wide < p ? wide : p;
    job->scale = 1.0;
    if (!job->exact && amax > 0.0 && (amax > WL_SVD_SCALE_LIMIT || amax < 1.0 / WL_SVD_SCALE_LIMIT)) {
        job->scale = ldexp(1.0, -ilogb(amax));
    }
    return WL_OK;
}

static void job_reserve(svd_job *job, wl_arena *arena) {
    int m = job->m, n = job->n, rank = job->rank;
    int L = m > n ? m : n, p = m < n ? m : n;
    /* Every count below is at most m * n <= WL_SVD_MAX_ELEMENTS, so it fits in size_t even on wasm32; the
     * byte sizes are checked by the arena. */
    if (job->exact) {
        job->X = wl_arena_take(arena, (size_t)L * p, sizeof(double));
        wl_dsvd_reserve(&job->dsvd, arena, L, p, rank);
        job->sigma = wl_arena_take(arena, (size_t)p, sizeof(double));
        job->P = wl_arena_take(arena, (size_t)rank * L, sizeof(double));
        job->Vs = wl_arena_take(arena, (size_t)rank * p, sizeof(double));
        return;
    }
    int k = job->k;
    if (job->scale != 1.0) job->As = wl_arena_take(arena, (size_t)m * n, sizeof(float));
    job->Zn = wl_arena_take(arena, (size_t)n * k, sizeof(float));
    job->Ym = wl_arena_take(arena, (size_t)m * k, sizeof(float));
    job->Ub = wl_arena_take(arena, (size_t)k * rank, sizeof(float));
    job->X = wl_arena_take(arena, (size_t)L * k, sizeof(double));
    job->tau = wl_arena_take(arena, (size_t)k, sizeof(double));
    wl_dsvd_reserve(&job->dsvd, arena, n, k, rank);
    job->sigma = wl_arena_take(arena, (size_t)k, sizeof(double));
    job->P = wl_arena_take(arena, (size_t)rank * n, sizeof(double));
    job->Vs = wl_arena_take(arena, (size_t)rank * k, sizeof(double));
}

/* Measure the job's workspace (plus `extra_floats` for the caller, returned in *extra), allocate it once. */
static wl_status job_alloc(svd_job *job, const char *fn, size_t extra_floats, float **extra, void **block) {
    wl_arena arena = {NULL, 0, 0};
    job_reserve(job, &arena);
    wl_arena_take(&arena, extra_floats, sizeof(float));
    if (arena.overflow) {
        return wl_fail(WL_STATUS_OUT_OF_MEMORY, "%s: the workspace size for %d x %d at rank %d overflows", fn,
                       job->m, job->n, job->rank);
    }
    *block = wl_alloc(arena.used, "svd workspace");
    if (!*block) return WL_STATUS_OUT_OF_MEMORY;
    arena = (wl_arena){(unsigned char *)*block, 0, 0};
    job_reserve(job, &arena);
    float *e = wl_arena_take(&arena, extra_floats, sizeof(float));
    if (extra) *extra = e;
    return WL_OK;
}

static wl_status run_exact(svd_job *job, float *U, float *Vt) {
    int m = job->m, n = job->n, rank = job->rank;
    /* The Jacobi vectors run along the long side: columns of A when tall, rows when wide. */
    for (int i = 0; i < m; i++) {
        const float *a = job->A + (size_t)i * job->lda;
        if (m >= n) {
            for (int c = 0; c < n; c++) job->X[(size_t)c * m + i] = a[c];
        } else {
            double *x = job->X + (size_t)i * n;
            for (int c = 0; c < n; c++) x[c] = a[c];
        }
    }
    wl_status st = wl_dsvd_run(&job->dsvd, job->X, job->sigma, job->P, job->Vs);
    if (st) return st;
    const double *left = m >= n ? job->P : job->Vs;  /* (rank, m) */
    const double *right = m >= n ? job->Vs : job->P; /* (rank, n) */
    if (U) {
        for (int i = 0; i < m; i++) {
            for (int c = 0; c < rank; c++) U[(size_t)i * rank + c] = (float)left[(size_t)c * m + i];
        }
    }
    if (Vt) {
        for (size_t i = 0; i < (size_t)rank * n; i++) Vt[i] = (float)right[i];
    }
    return WL_OK;
}

/* Y (rows, k) in place becomes the thin Q of its Householder QR (exactly orthonormal columns in double, then
 * rounded to f32), whatever its rank: columns Y does not span are completed by the reflectors. */
static void orth_columns(float *Y, int rows, int k, double *X, double *tau) {
    for (int i = 0; i < rows; i++) {
        for (int c = 0; c < k; c++) X[(size_t)c * rows + i] = Y[(size_t)i * k + c];
    }
    wl_dqr_factor(X, rows, k, tau);
    wl_dqr_form_q(X, rows, k, tau);
    for (int i = 0; i < rows; i++) {
        for (int c = 0; c < k; c++) Y[(size_t)i * k + c] = (float)X[(size_t)c * rows + i];
    }
}

static wl_status run_randomized(svd_job *job, float *U, float *Vt) {
    const wl_kernels *K = wl_kernels_default();
    int m = job->m, n = job->n, k = job->k, rank = job->rank;
    const float *A = job->A;
    int lda = job->lda;
    if (job->As) {
        float s = (float)job->scale;
        for (int i = 0; i < m; i++) {
            for (int c = 0; c < n; c++) job->As[(size_t)i * n + c] = A[(size_t)i * lda + c] * s;
        }
        A = job->As;
        lda = n;
    }
    wl_rng rng;
    wl_rng_seed(&rng, job->seed);
    for (size_t i = 0; i < (size_t)n * k; i++) job->Zn[i] = wl_rng_normal(&rng);

    /* Range finder with subspace iteration: every product is re-orthonormalised, otherwise the columns all
     * align with the top singular vector in f32 and the smaller directions are lost (Halko et al., alg. 4.4). */
    wl_sgemm(K, 0, 0, m, k, n, 1.0f, A, lda, job->Zn, k, 0.0f, job->Ym, k);
    orth_columns(job->Ym, m, k, job->X, job->tau);
    for (int it = 0; it < job->q; it++) {
        wl_sgemm(K, 1, 0, n, k, m, 1.0f, A, lda, job->Ym, k, 0.0f, job->Zn, k);
        orth_columns(job->Zn, n, k, job->X, job->tau);
        wl_sgemm(K, 0, 0, m, k, n, 1.0f, A, lda, job->Zn, k, 0.0f, job->Ym, k);
        orth_columns(job->Ym, m, k, job->X, job->tau);
    }
    /* Z = A^T Q is the transpose of the projection B = Q^T A; computing it this way reads A in the same
     * pattern as the power iterations rather than streaming all of A k times. */
    wl_sgemm(K, 1, 0, n, k, m, 1.0f, A, lda, job->Ym, k, 0.0f, job->Zn, k);
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < k; c++) job->X[(size_t)c * n + i] = job->Zn[(size_t)i * k + c];
    }
    /* B^T = P diag(sigma) Vs^T, so B = Vs diag(sigma) P^T: A ~ (Q Vs) diag(sigma) P^T. */
    wl_status st = wl_dsvd_run(&job->dsvd, job->X, job->sigma, job->P, job->Vs);
    if (st) return st;
    for (int c = 0; c < k; c++) job->sigma[c] /= job->scale;
    if (U) {
        for (int i = 0; i < k; i++) {
            for (int c = 0; c < rank; c++) job->Ub[(size_t)i * rank + c] = (float)job->Vs[(size_t)c * k + i];
        }
        wl_sgemm(K, 0, 0, m, rank, k, 1.0f, job->Ym, k, job->Ub, rank, 0.0f, U, rank);
    }
    if (Vt) {
        for (size_t i = 0; i < (size_t)rank * n; i++) Vt[i] = (float)job->P[i];
    }
    return WL_OK;
}

static wl_status job_run(svd_job *job, const char *fn, float *U, float *Vt) {
    wl_status st = job->exact ? run_exact(job, U, Vt) : run_randomized(job, U, Vt);
    if (st) return st;
    if (job->sigma[0] > FLT_MAX) {
        return wl_fail(WL_STATUS_NUMERIC, "%s: the largest singular value (%.4g) overflows float32", fn,
                       job->sigma[0]);
    }
    return WL_OK;
}

wl_status wl_svd_truncated(const float *A, int m, int n, int lda, int rank, const wl_svd_options *opt, float *U,
                           float *S, float *Vt) {
    static const char fn[] = "wl_svd_truncated";
    if (!S) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: S is NULL", fn);
    svd_job job;
    double sumsq;
    wl_status st = job_prepare(&job, fn, A, m, n, lda, rank, opt, &sumsq);
    if (st) return st;
    void *block;
    if ((st = job_alloc(&job, fn, 0, NULL, &block))) return st;
    st = job_run(&job, fn, U, Vt);
    if (st == WL_OK) {
        for (int c = 0; c < rank; c++) S[c] = (float)job.sigma[c];
    }
    wl_free(block);
    return st;
}

wl_status wl_lowrank_approx(const float *A, int m, int n, int lda, int max_rank, float energy, int split,
                            const wl_svd_options *opt, float *L, float *R, float *S, wl_lowrank_info *info) {
    static const char fn[] = "wl_lowrank_approx";
    if (!L) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: L is NULL", fn);
    if (!R) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: R is NULL", fn);
    if (!(energy <= 1.0f)) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: energy = %g must be <= 1 (<= 0 for a fixed rank)", fn,
                       (double)energy);
    }
    if (split != WL_SPLIT_LEFT && split != WL_SPLIT_BALANCED) {
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "%s: unknown split %d", fn, split);
    }
    svd_job job;
    double sumsq;
    wl_status st = job_prepare(&job, fn, A, m, n, lda, max_rank, opt, &sumsq);
    if (st) return st;
    /* The residual is measured a block of rows at a time (about 1 MB) instead of forming L R whole. */
    int block_rows = (1 << 18) / n;
    if (block_rows < 1) block_rows = 1;
    if (block_rows > m) block_rows = m;
    float *buf;
    void *block;
    if ((st = job_alloc(&job, fn, (size_t)block_rows * n, &buf, &block))) return st;
    /* U lands in L with row stride max_rank and Vt in R; both are repacked once the rank is known. */
    st = job_run(&job, fn, L, R);
    if (st) {
        wl_free(block);
        return st;
    }
    const double *sigma = job.sigma;
    int r = max_rank;
    if (energy > 0.0f) {
        if (sumsq == 0.0) {
            r = 1;
        } else {
            double target = (double)energy * sumsq, kept = 0.0;
            for (int c = 0; c < max_rank; c++) {
                kept += sigma[c] * sigma[c];
                if (kept >= target) {
                    r = c + 1;
                    break;
                }
            }
        }
    }
    /* Rows move towards the front (stride r <= max_rank), so going forward never overwrites unread data. */
    for (int i = 1; i < m; i++) memmove(L + (size_t)i * r, L + (size_t)i * max_rank, (size_t)r * sizeof(float));
    for (int c = 0; c < r; c++) {
        double ls = split == WL_SPLIT_LEFT ? sigma[c] : sqrt(sigma[c]);
        double rs = split == WL_SPLIT_LEFT ? 1.0 : sqrt(sigma[c]);
        for (int i = 0; i < m; i++) L[(size_t)i * r + c] = (float)(L[(size_t)i * r + c] * ls);
        if (rs != 1.0) {
            float *row = R + (size_t)c * n;
            for (int j = 0; j < n; j++) row[j] = (float)(row[j] * rs);
        }
    }
    if (S) {
        for (int c = 0; c < r; c++) S[c] = (float)sigma[c];
    }
    if (info) {
        const wl_kernels *K = wl_kernels_default();
        double res = 0.0, kept = 0.0;
        for (int i0 = 0; i0 < m; i0 += block_rows) {
            int b = m - i0 < block_rows ? m - i0 : block_rows;
            wl_sgemm(K, 0, 0, b, n, r, 1.0f, L + (size_t)i0 * r, r, R, n, 0.0f, buf, n);
            for (int i = 0; i < b; i++) {
                const float *a = A + (size_t)(i0 + i) * lda;
                const float *lr = buf + (size_t)i * n;
                for (int j = 0; j < n; j++) {
                    double d = (double)a[j] - lr[j];
                    res += d * d;
                }
            }
        }
        for (int c = 0; c < r; c++) kept += sigma[c] * sigma[c];
        info->rank = r;
        info->norm = sqrt(sumsq);
        info->rel_error = sumsq > 0.0 ? sqrt(res / sumsq) : 0.0;
        info->energy = sumsq > 0.0 ? kept / sumsq : 1.0;
    }
    wl_free(block);
    return WL_OK;
}
