/* kernels.h: the compute kernels every layer uses, as one table of function pointers, and the parallel entry
 * points the layers call.
 *
 * Three tables exist: scalar (plain C, always built, the oracle in tests), wasmsimd and wasmrelaxed (wasm_simd128.h;
 * the second fuses the GEMM's multiply-adds with relaxed SIMD; built for wasm with -msimd128 and -mrelaxed-simd, and
 * natively through SIMDe so the sanitizer build tests them too). wl_kernels_default() in select.c is the one place
 * that picks the table the model uses.
 *
 * Conventions: row-major f32, sizes in elements, restrict pointers never alias unless stated; kernels never
 * allocate and never fail (callers validate sizes). Shape legend: N rows, C channels, T queries, Tk keys.
 *
 * Threads: gemm spreads its work over the thread pool itself (core/parallel.h); every other table entry is a
 * serial kernel over whole rows or elements, which the wl_* entry points below run on row or element ranges in
 * parallel. Either way no result depends on the number of threads: a GEMM never splits the sum over k between
 * threads, a row is never split, and the few sums over rows run in a fixed order.
 */
#ifndef WL_KERNELS_H
#define WL_KERNELS_H

#include <stddef.h>

/* One product of a GEMM: alpha op(A) op(B), op(A) (M, K), op(B) (K, N).
 * trans_a = 0: A is (M, K) with row stride lda; 1: A is (K, M) with row stride lda.
 * trans_b = 0: B is (K, N) with row stride ldb; 1: B is (N, K) with row stride ldb (a weight W of y = x W^T).
 * K = 0 is allowed (the term adds nothing). */
typedef struct wl_gemm_term {
    const float *A, *B;
    int lda, ldb, K;
    int trans_a, trans_b;
    float alpha;
} wl_gemm_term;

typedef struct wl_kernels {
    const char *name;

    /* C (M, N) = add + sum of the terms + bias, in that order (each term's product added to the running C).
     * add: C itself (accumulate), another (M, N) matrix with row stride ldc (a residual), or NULL (C is
     * overwritten, never read, and may hold NaN). bias: (N), added to every row, or NULL. Parallel. */
    void (*gemm)(int M, int N, const wl_gemm_term *terms, int n_terms, const float *add, const float *bias, float *C,
                 int ldc);

    /* out (N, C) = x / sqrt(mean(x^2) + eps) * w; rstd (N) = 1 / sqrt(mean(x^2) + eps). */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);
    /* dx (N, C) += d/dx; dw (C) += d/dw unless dw is NULL. */
    void (*rmsnorm_backward)(float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int N, int C);

    /* out = (x - mean) * rstd * w + b, with biased variance; mean, rstd (N). */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                              int N, int C, float eps);
    /* dx += ; dw += and db += unless NULL. */
    void (*layernorm_backward)(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                               const float *mean, const float *rstd, int N, int C);

    /* Rotate n_heads heads of head size hs in each of N rows (row stride `stride`), in place, by the angles of
     * positions pos[i]: cos_t/sin_t are (max_pos, hs/2) tables. layout: WL_ROPE_HALF or WL_ROPE_INTERLEAVED.
     * inverse = 1 rotates by the negative angle (the backward pass of a rotation). */
    void (*rope)(float *x, int N, int n_heads, int hs, int stride, const int *pos, const float *cos_t,
                 const float *sin_t, int layout, int inverse);

    /* Causal softmax of a (T, Tk) score matrix in place, for query t at absolute position pos0 + t attending to
     * keys 0 .. pos0 + t; masked entries become exactly 0. */
    void (*softmax_causal)(float *s, int T, int Tk, int pos0);
    /* dS (T, Tk) = P * (dP - rowsum(dP * P)), in place on dp; rows are causal as above (entries past the mask
     * are set to 0). */
    void (*softmax_backward)(float *dp, const float *p, int T, int Tk, int pos0);

    /* out[i] = silu(gate[i]) * up[i]. */
    void (*swiglu_forward)(float *out, const float *gate, const float *up, size_t n);
    /* dgate[i] = dout * up * silu'(gate); dup[i] = dout * silu(gate). (Overwrite, not accumulate.) */
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                            size_t n);
    /* GELU, tanh approximation (GPT-2's gelu_new). */
    void (*gelu_forward)(float *out, const float *x, size_t n);
    /* dx[i] = dout[i] * gelu'(x[i]) (overwrite; dx may alias dout). */
    void (*gelu_backward)(float *dx, const float *x, const float *dout, size_t n);

    /* Cross-entropy per row of logits (N, V): losses[i] = logsumexp(row) - row[target[i]], or 0 where
     * target[i] == ignore_id. Returns the sum of losses over non-ignored rows (accumulated in double). */
    double (*xent_forward)(float *losses, const float *logits, const int *targets, int N, int V, int ignore_id);
    /* In place: logits row i becomes scale * (softmax(row) - onehot(target[i])), or 0 where ignored. */
    void (*xent_backward)(float *logits, const int *targets, int N, int V, int ignore_id, float scale);

    /* y[i] += a * x[i]. */
    void (*axpy)(float *y, float a, const float *x, size_t n);
    /* y[i] = a[i] + b[i] (y may alias a or b). */
    void (*add)(float *y, const float *a, const float *b, size_t n);
    /* sum of x[i] * y[i]. */
    float (*dot)(const float *x, const float *y, size_t n);
} wl_kernels;

extern const wl_kernels wl_kernels_scalar;
/* The wasm SIMD tables (kernels/wasmsimd/simd.h): a SIMD128 wasm build has wasmsimd, a relaxed-SIMD build
 * wasmrelaxed (fused multiply-adds in the GEMM), a native build with SIMDe both. */
#if (defined(__wasm_simd128__) && !defined(__wasm_relaxed_simd__)) || defined(WL_HAVE_SIMDE)
#define WL_HAVE_WASMSIMD 1
extern const wl_kernels wl_kernels_wasmsimd;
#endif
#if defined(__wasm_relaxed_simd__) || defined(WL_HAVE_SIMDE)
#define WL_HAVE_WASMRELAXED 1
extern const wl_kernels wl_kernels_wasmrelaxed;
#endif

/* The table the model uses: the wasm build's SIMD table, scalar natively unless WL_KERNELS=wasmsimd or
 * WL_KERNELS=wasmrelaxed is set in the environment of a SIMDe build (so native tests can run the whole model through
 * a SIMD twin). */
const wl_kernels *wl_kernels_default(void);
/* Look a table up by name ("scalar", "wasmsimd", "wasmrelaxed"); NULL if not built. */
const wl_kernels *wl_kernels_by_name(const char *name);
/* Replace the default table (tests and benchmarks); NULL restores the built-in choice. */
void wl_kernels_set_default(const wl_kernels *k);

/* ---- Parallel entry points (run.c). Same contracts as the table entries they run. ---- */

/* C = alpha op(A) op(B) + beta C as one-term gemm (beta 0: C is not read; other values scale C first). */
void wl_sgemm(const wl_kernels *k, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void wl_rmsnorm_forward(const wl_kernels *k, float *out, float *rstd, const float *x, const float *w, int N, int C,
                        float eps);
void wl_rmsnorm_backward(const wl_kernels *k, float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int N, int C);
void wl_layernorm_forward(const wl_kernels *k, float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C, float eps);
void wl_layernorm_backward(const wl_kernels *k, float *dx, float *dw, float *db, const float *dout, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C);
void wl_rope(const wl_kernels *k, float *x, int N, int n_heads, int hs, int stride, const int *pos, const float *cos_t,
             const float *sin_t, int layout, int inverse);
void wl_swiglu_forward(const wl_kernels *k, float *out, const float *gate, const float *up, size_t n);
void wl_swiglu_backward(const wl_kernels *k, float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, size_t n);
void wl_gelu_forward(const wl_kernels *k, float *out, const float *x, size_t n);
void wl_gelu_backward(const wl_kernels *k, float *dx, const float *x, const float *dout, size_t n);
/* The total is summed over rows in row order (in double), whatever the threads. */
double wl_xent_forward(const wl_kernels *k, float *losses, const float *logits, const int *targets, int N, int V,
                       int ignore_id);
void wl_xent_backward(const wl_kernels *k, float *logits, const int *targets, int N, int V, int ignore_id, float scale);
void wl_axpy(const wl_kernels *k, float *y, float a, const float *x, size_t n);

#endif
