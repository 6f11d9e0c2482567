/* svd_internal.h: the double-precision dense linear algebra behind wl_svd.h (Householder QR, one-sided Jacobi
 * SVD, orthonormal completion) and the workspace arena that lets each public call allocate exactly once.
 *
 * Storage: a "vector set" (L, p) is p vectors of length L, vector j contiguous at X + j * L; read as a matrix
 * it is the L x p matrix whose column j is vector j (column-major), which is what the column algorithms want.
 */
#ifndef WL_SVD_INTERNAL_H
#define WL_SVD_INTERNAL_H

#include <stddef.h>

#include "wl_status.h"

/* A bump allocator over one block. Run the same sequence of wl_arena_take calls twice: first with base NULL
 * to measure (every take returns NULL), then over a block of `used` bytes to get the pointers. */
typedef struct wl_arena {
    unsigned char *base;
    size_t used;
    int overflow; /* a size computation overflowed: the plan is unusable */
} wl_arena;
void *wl_arena_take(wl_arena *arena, size_t count, size_t elem_size);

/* Householder QR of the L x p matrix X (vector set), in place, t = min(L, p) reflectors (LAPACK dgeqr2):
 * on return R is on and above the diagonal, reflector j's vector (implicit 1 at row j) below it, tau (t). */
void wl_dqr_factor(double *X, int L, int p, double *tau);
/* Turn a factored X with p <= L into the thin Q (L x p) with orthonormal columns, in place (dorg2r). */
void wl_dqr_form_q(double *X, int L, int p, const double *tau);
/* y (L) = Q y with Q = H_0 H_1 ... H_{t-1} from a factored X (t reflectors). */
void wl_dqr_apply_q(const double *X, int L, int t, const double *tau, double *y);

/* Vectors have..want-1 of the set Q (length L, want <= L) become an orthonormal completion of vectors
 * 0..have-1 (which must be orthonormal): unit vectors least covered by the set, Gram-Schmidt twice. */
void wl_dcomplete_orthonormal(double *Q, int L, int have, int want);

/* SVD of an L x p matrix with p <= L held as a vector set X: M = P diag(sigma) V^T, P (L x p) and V (p x p)
 * with orthonormal columns, sigma sorted in decreasing order. X is overwritten. When L > p a Householder QR
 * first reduces the Jacobi iterations to the p x p factor R. */
typedef struct wl_dsvd {
    int L, p, want, use_qr;
    double *tau;   /* (p) when use_qr */
    double *R;     /* (p, p) vector set when use_qr */
    double *V;     /* (p, p) accumulated rotations */
    double *norms; /* (p) */
    double *Pn;    /* (want, p) long-side vectors in R's space when use_qr */
    int *order;    /* (p) */
} wl_dsvd;
/* Reserve the workspace of an SVD of an L x p vector set of which `want` <= p triplets are returned. */
void wl_dsvd_reserve(wl_dsvd *s, wl_arena *arena, int L, int p, int want);
/* sigma (p): all singular values; P (want, L): the first `want` long-side vectors (columns of P), may be NULL;
 * Vout (want, p): the first `want` short-side vectors (columns of V), may be NULL. Fails only when Jacobi
 * does not converge (WL_STATUS_NUMERIC), which finite input should never cause. */
wl_status wl_dsvd_run(wl_dsvd *s, double *X, double *sigma, double *P, double *Vout);

/* Argument checks shared by the public calls (defined in svd.c); `fn` names the public call in messages.
 * check_matrix: M non-NULL, 1 <= rows, cols <= WL_SVD_MAX_DIM, rows * cols <= WL_SVD_MAX_ELEMENTS,
 * ld >= cols and the addressed span fits in size_t (WL_STATUS_INVALID_ARGUMENT). */
wl_status wl_svd_check_matrix(const char *fn, const char *name, const float *M, int rows, int cols, int ld);
/* NaN / Inf anywhere is WL_STATUS_NUMERIC (naming the first one); else max |M| and the sum of squares. */
wl_status wl_svd_scan(const char *fn, const char *name, const float *M, int rows, int cols, int ld, double *amax,
                      double *sumsq);

#endif
