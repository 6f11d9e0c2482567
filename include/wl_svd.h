/* wl_svd.h: truncated SVD of f32 matrices and the low-rank tools built on it: PiSSA initialisation (top-r
 * triplets of a weight), LoRA extraction from a weight delta, rank reduction and combination of adapters.
 *
 * Shape legend: m rows, n columns, p = min(m, n), r rank, k = r + oversample (width of the random sketch).
 * Every matrix is row-major f32; an `ld*` argument is the row stride in elements (>= the number of columns).
 * Outputs are dense (row stride = their column count) and owned by the caller; nothing here keeps a pointer.
 *
 * Two algorithms compute a truncated SVD A ~ U diag(S) Vt:
 *  - exact: one-sided (Hestenes) Jacobi in double on the whole matrix, after a Householder QR that shrinks the
 *    long side to p when the matrix is not square. Singular values and vectors to float32 precision whatever
 *    the spectrum. Cost about 2 max(m,n) p^2 + 40 p^3 flops (in double), memory 8 (m n + 2 p^2) bytes.
 *  - randomized (Halko, Martinsson, Tropp 2011): a Gaussian sketch Y = A Omega with k columns, q power
 *    iterations (Z = A^T Q, Y = A Z) re-orthonormalised by Householder QR after every product, then the exact
 *    Jacobi SVD of the small k x n matrix Q^T A. Cost about (4 + 4q) m n k flops in the kernel table's sgemm,
 *    memory 4 (m + n) k + 8 max(m, n) k bytes. Its accuracy depends on the spectrum: singular value j is
 *    accurate when (S[k] / S[j])^(2q+1) is negligible; with a flat spectrum (a random matrix) the error of the
 *    approximation is still close to optimal, but single singular values are not float32-accurate.
 * WL_SVD_AUTO picks exact when p <= WL_SVD_EXACT_MAX_DIM or r + oversample >= p (a sketch would cover the
 * whole space anyway), randomized otherwise.
 *
 * Results depend only on the inputs, the options (including the seed) and the kernel table in use.
 * Singular values are sorted in decreasing order; singular vectors are orthonormal to about 1e-6 (float32);
 * when A has fewer than r non-zero singular values the extra singular vectors still complete an orthonormal set
 * and their singular values are 0 or at rounding level (whatever lies below about 2e-16 ||A||_F is treated as
 * exactly 0: directions that small are rounding noise of the double computation).
 *
 * Errors (status plus a message from wl_last_error()):
 *   WL_STATUS_INVALID_ARGUMENT  NULL pointer, m or n < 1 or > WL_SVD_MAX_DIM, m * n > WL_SVD_MAX_ELEMENTS, a stride
 *                               smaller than the column count, rank <= 0 or > min(m, n), bad options
 *   WL_STATUS_NUMERIC           NaN or Inf in an input, or a singular value too large for float32
 *   WL_STATUS_OUT_OF_MEMORY     the workspace (allocated once per call, freed before returning) is unavailable
 */
#ifndef WL_SVD_H
#define WL_SVD_H

#include <stddef.h>
#include <stdint.h>

#include "wl_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WL_SVD_MAX_DIM (1 << 24)             /* largest m or n (or adapter rank) accepted */
#define WL_SVD_MAX_ELEMENTS (1ll << 31)      /* largest m * n accepted (8 GB of f32: already beyond wasm32) */
#define WL_SVD_EXACT_MAX_DIM 64              /* WL_SVD_AUTO uses the exact path when p is at most this */

typedef enum wl_svd_method {
    WL_SVD_AUTO = 0,       /* exact for small p or near-full rank, else randomized (see above) */
    WL_SVD_EXACT = 1,      /* one-sided Jacobi on the whole matrix */
    WL_SVD_RANDOMIZED = 2, /* randomized range finder + Jacobi on the projection (k is capped at p) */
} wl_svd_method;

typedef struct wl_svd_options {
    int method;      /* wl_svd_method */
    int power_iters; /* q in [0, 64]: power iterations of the randomized path */
    int oversample;  /* in [0, 4096]: sketch columns beyond the rank */
    uint64_t seed;   /* seed of the Gaussian test matrix (the core's wl_rng) */
} wl_svd_options;

/* The defaults used when options are NULL: AUTO, q = 4, oversample = 10, seed = 0. */
wl_svd_options wl_svd_default_options(void);

/* Truncated SVD: A (m, n) ~ U (m, rank) diag(S (rank)) Vt (rank, n), the best rank-`rank` approximation
 * (Eckart-Young) up to the accuracy of the chosen method. 1 <= rank <= min(m, n). opt may be NULL (defaults).
 * U and Vt may be NULL when not wanted; S is required. A is only read. On failure the outputs are unspecified. */
wl_status wl_svd_truncated(const float *A, int m, int n, int lda, int rank, const wl_svd_options *opt,
                           float *U /* (m, rank) */, float *S /* (rank) */, float *Vt /* (rank, n) */);

/* How a low-rank approximation U diag(S) Vt is split into two factors L (m, r) and R (r, n), L R ~ A.
 * For a LoRA update W ~ B A (W is out x in) take B = L and A = R. */
typedef enum wl_lowrank_split {
    WL_SPLIT_LEFT = 0,     /* L = U diag(S), R = Vt (rows of R orthonormal) */
    WL_SPLIT_BALANCED = 1, /* L = U diag(sqrt(S)), R = diag(sqrt(S)) Vt (PiSSA's A and B) */
} wl_lowrank_split;

/* What a low-rank call chose and achieved. */
typedef struct wl_lowrank_info {
    int rank;         /* the rank of the returned factors */
    double rel_error; /* ||A - L R||_F / ||A||_F (0 when A = 0) */
    double energy;    /* sum of the kept S^2 / ||A||_F^2 (1 when A = 0) */
    double norm;      /* ||A||_F */
} wl_lowrank_info;

/* Best low-rank approximation A (m, n) ~ L R with a fixed rank or an energy threshold.
 * energy <= 0: rank = max_rank. 0 < energy <= 1: the smallest rank r <= max_rank whose sum of S^2 reaches
 * energy * ||A||_F^2 (max_rank when even that falls short; info->energy says what was reached).
 * L is written densely as (m, r) with row stride r (the chosen rank), R as (r, n), S (may be NULL) as (r);
 * the buffers must hold m * max_rank, max_rank * n and max_rank floats. info (may be NULL) receives the rank,
 * the relative Frobenius error measured on the returned factors (one extra pass over A), the energy kept and
 * ||A||_F. 1 <= max_rank <= min(m, n); split is a wl_lowrank_split; opt may be NULL. */
wl_status wl_lowrank_approx(const float *A, int m, int n, int lda, int max_rank, float energy, int split,
                            const wl_svd_options *opt, float *L /* (m, r) */, float *R /* (r, n) */,
                            float *S /* (r) */, wl_lowrank_info *info);

/* Truncated SVD of the product M = B A (m, n) of B (m, r) and A (r, n) without forming M: Householder QR of B
 * and of A^T (in double), exact Jacobi SVD of the small core R_B R_A^T (min(m, r) x min(n, r)), and the factors
 * mapped back through the Q's. This is what resizing (r -> rank) and combining LoRA adapters need (for a
 * weighted sum of adapters, concatenate the scaled B's by columns and the A's by rows).
 * Cost about 2 (m + n) r^2 + 40 r^3 flops; everything is computed, so the result is exact to float32 whatever r.
 * 1 <= rank <= min(m, n); a rank above the rank of B A gives zero singular values with orthonormal vectors.
 * info (may be NULL): rank, the exact relative error ||B A - U diag(S) Vt||_F / ||B A||_F of the truncation
 * (from all singular values of the core, in double), the energy kept and ||B A||_F. */
wl_status wl_svd_of_product(const float *B, int m, int r, int ldb, const float *A, int n, int lda, int rank,
                            float *U /* (m, rank) */, float *S /* (rank) */, float *Vt /* (rank, n) */,
                            wl_lowrank_info *info);

#ifdef __cplusplus
}
#endif
#endif
