/* dense.c: double-precision Householder QR, one-sided Jacobi SVD and orthonormal completion on vector sets
 * (see svd_internal.h), plus the workspace arena. Double because the Jacobi and QR results end up in f32:
 * computing them in double keeps the f32 outputs accurate even for ill-conditioned inputs. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "svd/svd_internal.h"

/* Enough for float32 outputs by a wide margin; the one-sided Jacobi converges quadratically, so a sweep that
 * rotates nothing typically follows within 6 to 10 sweeps. */
#define WL_JACOBI_MAX_SWEEPS 60

#define WL_ARENA_ALIGN 64

void *wl_arena_take(wl_arena *arena, size_t count, size_t elem_size) {
    size_t bytes, end;
    if (!wl_mul_size(count, elem_size, &bytes) || !wl_add_size(bytes, WL_ARENA_ALIGN - 1, &bytes)) {
        arena->overflow = 1;
        return NULL;
    }
    bytes &= ~(size_t)(WL_ARENA_ALIGN - 1);
    if (!wl_add_size(arena->used, bytes, &end)) {
        arena->overflow = 1;
        return NULL;
    }
    void *p = arena->base ? arena->base + arena->used : NULL;
    arena->used = end;
    return p;
}

/* Two partial sums: independent chains the compiler can pipeline (the order is fixed, so results are
 * reproducible). */
static double ddot(const double *x, const double *y, int n) {
    double s0 = 0.0, s1 = 0.0;
    int i = 0;
    for (; i + 1 < n; i += 2) {
        s0 += x[i] * y[i];
        s1 += x[i + 1] * y[i + 1];
    }
    if (i < n) s0 += x[i] * y[i];
    return s0 + s1;
}

void wl_dqr_factor(double *X, int L, int p, double *tau) {
    int t = L < p ? L : p;
    /* What is left of a column after the earlier reflectors is rounding noise when it is no longer than
     * eps * ||X||_F; it is set to zero (H_j = I), a perturbation within the backward error. Building reflectors
     * from such noise instead cascades on exactly rank-deficient inputs (integer data): each level leaves a
     * smaller residue, down into subnormals, where the reflectors stop being orthogonal. */
    double fro2 = 0.0;
    for (int j = 0; j < p; j++) fro2 += ddot(X + (size_t)j * L, X + (size_t)j * L, L);
    double noise2 = fro2 * DBL_EPSILON * DBL_EPSILON;
    for (int j = 0; j < t; j++) {
        double *v = X + (size_t)j * L;
        double alpha = v[j], tail = 0.0;
        for (int i = j + 1; i < L; i++) tail += v[i] * v[i];
        if (tail == 0.0 || alpha * alpha + tail <= noise2) {
            /* Already upper triangular in this column (as LAPACK's dlarfg), or only noise below: H_j = I. */
            tau[j] = 0.0;
            for (int i = j + 1; i < L; i++) v[i] = 0.0;
            continue;
        }
        /* beta takes the sign opposite to alpha so alpha - beta never cancels. */
        double beta = -copysign(sqrt(alpha * alpha + tail), alpha);
        tau[j] = (beta - alpha) / beta;
        double scale = 1.0 / (alpha - beta);
        for (int i = j + 1; i < L; i++) v[i] *= scale;
        v[j] = beta;
        for (int c = j + 1; c < p; c++) {
            double *y = X + (size_t)c * L;
            double w = y[j];
            for (int i = j + 1; i < L; i++) w += v[i] * y[i];
            w *= tau[j];
            y[j] -= w;
            for (int i = j + 1; i < L; i++) y[i] -= w * v[i];
        }
    }
}

void wl_dqr_form_q(double *X, int L, int p, const double *tau) {
    WL_ASSERT(p <= L);
    /* Backward accumulation (LAPACK dorg2r): column j becomes H_j ... H_{p-1} e_j once the columns to its
     * right already hold the product of the later reflectors. */
    for (int j = p - 1; j >= 0; j--) {
        double *v = X + (size_t)j * L;
        if (j < p - 1) {
            v[j] = 1.0;
            for (int c = j + 1; c < p; c++) {
                double *y = X + (size_t)c * L;
                double w = 0.0;
                for (int i = j; i < L; i++) w += v[i] * y[i];
                w *= tau[j];
                for (int i = j; i < L; i++) y[i] -= w * v[i];
            }
        }
        for (int i = j + 1; i < L; i++) v[i] *= -tau[j];
        v[j] = 1.0 - tau[j];
        for (int i = 0; i < j; i++) v[i] = 0.0;
    }
}

void wl_dqr_apply_q(const double *X, int L, int t, const double *tau, double *y) {
    for (int j = t - 1; j >= 0; j--) {
        if (tau[j] == 0.0) continue;
        const double *v = X + (size_t)j * L;
        double w = y[j];
        for (int i = j + 1; i < L; i++) w += v[i] * y[i];
        w *= tau[j];
        y[j] -= w;
        for (int i = j + 1; i < L; i++) y[i] -= w * v[i];
    }
}

void wl_dcomplete_orthonormal(double *Q, int L, int have, int want) {
    WL_ASSERT(want <= L);
    for (int c = have; c < want; c++) {
        double *q = Q + (size_t)c * L;
        /* The unit vector e_i least covered by the set (smallest sum of squares of row i) keeps a residual of
         * at least (L - c) / L after projection, so the normalisation below is always well conditioned. */
        memset(q, 0, (size_t)L * sizeof *q);
        for (int d = 0; d < c; d++) {
            const double *u = Q + (size_t)d * L;
            for (int i = 0; i < L; i++) q[i] += u[i] * u[i];
        }
        int best = 0;
        for (int i = 1; i < L; i++) {
            if (q[i] < q[best]) best = i;
        }
        memset(q, 0, (size_t)L * sizeof *q);
        q[best] = 1.0;
        /* Gram-Schmidt twice ("twice is enough") for orthogonality to working precision. */
        for (int pass = 0; pass < 2; pass++) {
            for (int d = 0; d < c; d++) {
                const double *u = Q + (size_t)d * L;
                double h = ddot(q, u, L);
                for (int i = 0; i < L; i++) q[i] -= h * u[i];
            }
        }
        double nrm = sqrt(ddot(q, q, L));
        for (int i = 0; i < L; i++) q[i] /= nrm;
    }
}

/* Squared norms and inner product of two vectors in one pass. */
static void dot3(const double *x, const double *y, int n, double *xx, double *yy, double *xy) {
    double a0 = 0.0, a1 = 0.0, b0 = 0.0, b1 = 0.0, c0 = 0.0, c1 = 0.0;
    int i = 0;
    for (; i + 1 < n; i += 2) {
        a0 += x[i] * x[i];
        a1 += x[i + 1] * x[i + 1];
        b0 += y[i] * y[i];
        b1 += y[i + 1] * y[i + 1];
        c0 += x[i] * y[i];
        c1 += x[i + 1] * y[i + 1];
    }
    if (i < n) {
        a0 += x[i] * x[i];
        b0 += y[i] * y[i];
        c0 += x[i] * y[i];
    }
    *xx = a0 + a1;
    *yy = b0 + b1;
    *xy = c0 + c1;
}

static void rotate(double *x, double *y, int n, double c, double s) {
    for (int i = 0; i < n; i++) {
        double a = x[i], b = y[i];
        x[i] = c * a - s * b;
        y[i] = s * a + c * b;
    }
}

/* One-sided Jacobi (Hestenes): rotate pairs of columns of the L x p vector set X until every pair is
 * orthogonal to tol relative to the product of their norms, applying the same rotations to V (p x p).
 * Returns the number of sweeps, or -1 without convergence. */
static int jacobi(double *X, int L, int p, double *V) {
    /* LAPACK's dgesvj uses sqrt(L) * eps as its orthogonality threshold: rounding in the dot products of
     * length L cannot certify anything much smaller. */
    double tol = sqrt((double)L) * DBL_EPSILON;
    for (int sweep = 0; sweep < WL_JACOBI_MAX_SWEEPS; sweep++) {
        int rotations = 0;
        for (int i = 0; i < p - 1; i++) {
            double *xi = X + (size_t)i * L;
            for (int j = i + 1; j < p; j++) {
                double *xj = X + (size_t)j * L;
                double a, b, g;
                dot3(xi, xj, L, &a, &b, &g);
                if (a == 0.0 || b == 0.0 || fabs(g) <= tol * sqrt(a) * sqrt(b)) continue;
                /* The rotation that diagonalises the 2x2 Gram matrix [[a, g], [g, b]]; t is the smaller root of
                 * t^2 + 2 zeta t - 1 = 0, so the angle is at most pi/4 (Rutishauser). */
                double zeta = (b - a) / (2.0 * g);
                double t;
                if (fabs(zeta) > 1e150) {
                    t = 0.5 / zeta;
                } else {
                    t = (zeta >= 0.0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                }
                double c = 1.0 / sqrt(1.0 + t * t), s = c * t;
                rotate(xi, xj, L, c, s);
                rotate(V + (size_t)i * p, V + (size_t)j * p, p, c, s);
                rotations++;
            }
        }
        if (rotations == 0) return sweep + 1;
    }
    return -1;
}

void wl_dsvd_reserve(wl_dsvd *s, wl_arena *arena, int L, int p, int want) {
    WL_ASSERT(p >= 1 && p <= L && want >= 0 && want <= p);
    memset(s, 0, sizeof *s);
    s->L = L;
    s->p = p;
    s->want = want;
    s->use_qr = L > p;
    size_t pp = (size_t)p * (size_t)p;
    if (s->use_qr) {
        s->tau = wl_arena_take(arena, (size_t)p, sizeof(double));
        s->R = wl_arena_take(arena, pp, sizeof(double));
        s->Pn = wl_arena_take(arena, (size_t)want * (size_t)p, sizeof(double));
    }
    s->V = wl_arena_take(arena, pp, sizeof(double));
    s->norms = wl_arena_take(arena, (size_t)p, sizeof(double));
    s->order = wl_arena_take(arena, (size_t)p, sizeof(int));
}

wl_status wl_dsvd_run(wl_dsvd *s, double *X, double *sigma, double *P, double *Vout) {
    int L = s->L, p = s->p, want = s->want;
    double *J = X;
    int JL = L;
    if (s->use_qr) {
        /* M = Q R, and the SVD of R gives M's: Jacobi then works on vectors of length p instead of L. */
        wl_dqr_factor(X, L, p, s->tau);
        for (int j = 0; j < p; j++) {
            double *r = s->R + (size_t)j * p;
            const double *x = X + (size_t)j * L;
            for (int i = 0; i < p; i++) r[i] = i <= j ? x[i] : 0.0;
        }
        J = s->R;
        JL = p;
    }
    memset(s->V, 0, (size_t)p * (size_t)p * sizeof(double));
    for (int j = 0; j < p; j++) s->V[(size_t)j * p + j] = 1.0;
    int sweeps = jacobi(J, JL, p, s->V);
    if (sweeps < 0) {
        return wl_fail(WL_STATUS_NUMERIC, "svd: one-sided Jacobi did not converge in %d sweeps (%d x %d)",
                       WL_JACOBI_MAX_SWEEPS, L, p);
    }

    int *order = s->order;
    for (int j = 0; j < p; j++) {
        const double *x = J + (size_t)j * JL;
        s->norms[j] = sqrt(ddot(x, x, JL));
        /* Insertion sort, decreasing, stable: Jacobi output is often nearly sorted and p is small next to
         * the O(p^3) of the sweeps. */
        int at = j;
        while (at > 0 && s->norms[order[at - 1]] < s->norms[j]) {
            order[at] = order[at - 1];
            at--;
        }
        order[at] = j;
    }
    for (int c = 0; c < p; c++) sigma[c] = s->norms[order[c]];
    if (Vout) {
        for (int c = 0; c < want; c++) {
            memcpy(Vout + (size_t)c * p, s->V + (size_t)order[c] * p, (size_t)p * sizeof(double));
        }
    }
    if (P) {
        double *Q = s->use_qr ? s->Pn : P;
        /* Exactly zero columns (a rank-deficient input, or noise the QR set to zero), and any whose norm could
         * not be inverted to full precision: their vectors complete the others to an orthonormal set instead. */
        const double tiny = DBL_MIN / DBL_EPSILON;
        int have = want;
        for (int c = 0; c < want; c++) {
            int j = order[c];
            double nrm = s->norms[j];
            if (!(nrm > tiny)) {
                have = c;
                break;
            }
            const double *x = J + (size_t)j * JL;
            double *q = Q + (size_t)c * JL;
            for (int i = 0; i < JL; i++) q[i] = x[i] / nrm;
        }
        wl_dcomplete_orthonormal(Q, JL, have, want);
        if (s->use_qr) {
            for (int c = 0; c < want; c++) {
                double *y = P + (size_t)c * L;
                memcpy(y, s->Pn + (size_t)c * p, (size_t)p * sizeof(double));
                memset(y + p, 0, (size_t)(L - p) * sizeof(double));
                wl_dqr_apply_q(X, L, p, s->tau, y);
            }
        }
    }
    return WL_OK;
}
