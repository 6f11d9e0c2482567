/* kernels_wasmsimd.c: the wasm SIMD (f32x4) twins of the scalar kernels: vectorised norms, rope, softmax,
 * activations and cross-entropy, and the table that adds the GEMM of gemm.c (in either flavour of simd.h). Natively
 * it compiles through SIMDe so the native and sanitizer tests check exactly this code against the scalar oracle. */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/wasmsimd/simd.h"
#include "kernels/wasmsimd/vmath.h"
#include "wl_model.h"

/* pmax is one x86 maxps; f32x4.max would add a NaN-propagation fix-up sequence to every step. Like the scalar
 * `a > m ? a : m`, it does not promise anything about NaN inputs. */
static inline float vhmax(vf v) {
    vf s = wasm_f32x4_pmax(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
    s = wasm_f32x4_pmax(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(s, 0);
}

/* ---------------------------------------------------------------------------------------------------------
 * Reductions. Sums over whole rows run in f32 vectors over blocks of 64 elements and add each block into a
 * double, which keeps them within a few f32 ulp of the scalar double sums at the cost of one horizontal add
 * per block. */
#define WL_RBLOCK 64

/* sum x[i] * y[i] */
static double vdot_d(const float *x, const float *y, size_t n) {
    double total = 0.0;
    size_t i = 0;
    while (i + 4 <= n) {
        size_t end = i + WL_RBLOCK <= n ? i + WL_RBLOCK : n;
        vf a0 = vsplat(0.0f), a1 = vsplat(0.0f);
        for (; i + 8 <= end; i += 8) {
            a0 = vadd(a0, vmul(vld(x + i), vld(y + i)));
            a1 = vadd(a1, vmul(vld(x + i + 4), vld(y + i + 4)));
        }
        for (; i + 4 <= end; i += 4) a0 = vadd(a0, vmul(vld(x + i), vld(y + i)));
        total += vhsum(vadd(a0, a1));
    }
    if (i < n) total += vhsum(vmul(vld_part(x + i, n - i), vld_part(y + i, n - i)));
    return total;
}

/* sum x[i] * y[i] * z[i] */
static double vdot3_d(const float *x, const float *y, const float *z, size_t n) {
    double total = 0.0;
    size_t i = 0;
    while (i + 4 <= n) {
        size_t end = i + WL_RBLOCK <= n ? i + WL_RBLOCK : n;
        vf a0 = vsplat(0.0f);
        for (; i + 4 <= end; i += 4) a0 = vadd(a0, vmul(vmul(vld(x + i), vld(y + i)), vld(z + i)));
        total += vhsum(a0);
    }
    if (i < n) {
        size_t t = n - i;
        total += vhsum(vmul(vmul(vld_part(x + i, t), vld_part(y + i, t)), vld_part(z + i, t)));
    }
    return total;
}

static double vsum_d(const float *x, size_t n) {
    double total = 0.0;
    size_t i = 0;
    while (i + 4 <= n) {
        size_t end = i + WL_RBLOCK <= n ? i + WL_RBLOCK : n;
        vf a0 = vsplat(0.0f);
        for (; i + 4 <= end; i += 4) a0 = vadd(a0, vld(x + i));
        total += vhsum(a0);
    }
    if (i < n) total += vhsum(vld_part(x + i, n - i));
    return total;
}

/* sum (x[i] - m)^2 */
static double vsumsqdev_d(const float *x, float m, size_t n) {
    const vf vm = vsplat(m);
    double total = 0.0;
    size_t i = 0;
    while (i + 4 <= n) {
        size_t end = i + WL_RBLOCK <= n ? i + WL_RBLOCK : n;
        vf a0 = vsplat(0.0f);
        for (; i + 4 <= end; i += 4) {
            vf d = vsub(vld(x + i), vm);
            a0 = vadd(a0, vmul(d, d));
        }
        total += vhsum(a0);
    }
    if (i < n) {
        /* Padding lanes would contribute m^2: mask them out. */
        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (size_t j = 0; j < n - i; j++) t[j] = x[i + j] - m;
        vf d = vld(t);
        total += vhsum(vmul(d, d));
    }
    return total;
}

static float vmax_f(const float *x, size_t n) {
    vf m0 = vsplat(-INFINITY), m1 = m0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        m0 = wasm_f32x4_pmax(m0, vld(x + i));
        m1 = wasm_f32x4_pmax(m1, vld(x + i + 4));
    }
    for (; i + 4 <= n; i += 4) m0 = wasm_f32x4_pmax(m0, vld(x + i));
    float mx = vhmax(wasm_f32x4_pmax(m0, m1));
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* x[i] = exp(x[i] - mx) in place; returns the sum of the results. */
static double vexp_sub_store(float *x, float mx, size_t n) {
    const vf vm = vsplat(mx);
    double total = 0.0;
    size_t i = 0;
    while (i + 4 <= n) {
        size_t end = i + WL_RBLOCK <= n ? i + WL_RBLOCK : n;
        vf a0 = vsplat(0.0f);
        for (; i + 4 <= end; i += 4) {
            vf e = wl_vexp(vsub(vld(x + i), vm));
            vst(x + i, e);
            a0 = vadd(a0, e);
        }
        total += vhsum(a0);
    }
    if (i < n) {
        vf e = wl_vexp(vsub(vld_part(x + i, n - i), vm));
        vst_part(x + i, e, n - i);
        float t[4];
        vst(t, e);
        for (size_t j = 0; j < n - i; j++) total += t[j];
    }
    return total;
}

/* sum exp(x[i] - mx) without storing. */
static double vexp_sub_sum(const float *x, float mx, size_t n) {
    const vf vm = vsplat(mx);
    double total = 0.0;
    size_t i = 0;
    while (i + 4 <= n) {
        size_t end = i + WL_RBLOCK <= n ? i + WL_RBLOCK : n;
        vf a0 = vsplat(0.0f);
        for (; i + 4 <= end; i += 4) a0 = vadd(a0, wl_vexp(vsub(vld(x + i), vm)));
        total += vhsum(a0);
    }
    if (i < n) {
        float t[4];
        vst(t, wl_vexp(vsub(vld_part(x + i, n - i), vm)));
        for (size_t j = 0; j < n - i; j++) total += t[j];
    }
    return total;
}

static void vscale_inplace(float *x, float s, size_t n) {
    const vf vs = vsplat(s);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst(x + i, vmul(vld(x + i), vs));
    for (; i < n; i++) x[i] *= s;
}

/* ---------------------------------------------------------------------------------------------------------
 * Norms. */
static void rmsnorm_forward_wasmsimd(float *out, float *rstd, const float *x, const float *w, int N, int C,
                                     float eps) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        double ss = vdot_d(xi, xi, (size_t)C);
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        rstd[i] = r;
        const vf vr = vsplat(r);
        int c = 0;
        for (; c + 4 <= C; c += 4) vst(oi + c, vmul(vmul(vld(xi + c), vr), vld(w + c)));
        for (; c < C; c++) oi[c] = xi[c] * r * w[c];
    }
}

/* dx = r * (w * dy) - x * r^3 / C * sum(w * dy * x); dw += dy * x * r. */
static void rmsnorm_backward_wasmsimd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                                      const float *rstd, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        const float *gi = dout + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        float r = rstd[i];
        double dot = vdot3_d(gi, w, xi, (size_t)C);
        float k = (float)(dot * r * r * r / C);
        const vf vr = vsplat(r), vk = vsplat(k);
        int c = 0;
        for (; c + 4 <= C; c += 4) {
            vf g = vld(gi + c), xv = vld(xi + c);
            vst(dxi + c, vadd(vld(dxi + c), vsub(vmul(vmul(vr, vld(w + c)), g), vmul(vk, xv))));
            if (dw) vst(dw + c, vadd(vld(dw + c), vmul(vmul(g, xv), vr)));
        }
        for (; c < C; c++) {
            dxi[c] += r * w[c] * gi[c] - k * xi[c];
            if (dw) dw[c] += gi[c] * xi[c] * r;
        }
    }
}

static void layernorm_forward_wasmsimd(float *out, float *mean, float *rstd, const float *x, const float *w,
                                       const float *b, int N, int C, float eps) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        float m = (float)(vsum_d(xi, (size_t)C) / C);
        float r = 1.0f / sqrtf((float)(vsumsqdev_d(xi, m, (size_t)C) / C) + eps);
        mean[i] = m;
        rstd[i] = r;
        const vf vm = vsplat(m), vr = vsplat(r);
        int c = 0;
        for (; c + 4 <= C; c += 4)
            vst(oi + c, vadd(vmul(vmul(vsub(vld(xi + c), vm), vr), vld(w + c)), vld(b + c)));
        for (; c < C; c++) oi[c] = (xi[c] - m) * r * w[c] + b[c];
    }
}

/* xhat = (x - m) r; y = xhat w + b: dx = r (g - mean(g) - xhat mean(g xhat)) with g = dy w. */
static void layernorm_backward_wasmsimd(float *dx, float *dw, float *db, const float *dout, const float *x,
                                        const float *w, const float *mean, const float *rstd, int N, int C) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        const float *gi = dout + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        float m = mean[i], r = rstd[i];
        const vf vm = vsplat(m), vr = vsplat(r);
        /* Both row sums in one pass, blocked into doubles like the helpers above. */
        double sg = 0.0, sgx = 0.0;
        int c = 0;
        while (c + 4 <= C) {
            int end = c + WL_RBLOCK <= C ? c + WL_RBLOCK : C;
            vf s0 = vsplat(0.0f), s1 = vsplat(0.0f);
            for (; c + 4 <= end; c += 4) {
                vf g = vmul(vld(gi + c), vld(w + c));
                vf xhat = vmul(vsub(vld(xi + c), vm), vr);
                s0 = vadd(s0, g);
                s1 = vadd(s1, vmul(g, xhat));
            }
            sg += vhsum(s0);
            sgx += vhsum(s1);
        }
        for (int t = c; t < C; t++) {
            float g = gi[t] * w[t];
            float xhat = (xi[t] - m) * r;
            sg += g;
            sgx += (double)g * xhat;
        }
        float mg = (float)(sg / C), mgx = (float)(sgx / C);
        const vf vmg = vsplat(mg), vmgx = vsplat(mgx);
        c = 0;
        for (; c + 4 <= C; c += 4) {
            vf g = vld(gi + c);
            vf xhat = vmul(vsub(vld(xi + c), vm), vr);
            vst(dxi + c, vadd(vld(dxi + c), vmul(vr, vsub(vsub(vmul(g, vld(w + c)), vmg), vmul(xhat, vmgx)))));
            if (dw) vst(dw + c, vadd(vld(dw + c), vmul(g, xhat)));
            if (db) vst(db + c, vadd(vld(db + c), g));
        }
        for (; c < C; c++) {
            float xhat = (xi[c] - m) * r;
            dxi[c] += r * (gi[c] * w[c] - mg - xhat * mgx);
            if (dw) dw[c] += gi[c] * xhat;
            if (db) db[c] += gi[c];
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Rotary position embedding. */
static void rope_wasmsimd(float *x, int N, int n_heads, int hs, int stride, const int *pos, const float *cos_t,
                          const float *sin_t, int layout, int inverse) {
    int half = hs / 2;
    /* Negating the sine table values flips the rotation; done with a sign mask so it is exact. */
    const vf sflip = inverse ? vsplat(-0.0f) : vsplat(0.0f);
    for (int i = 0; i < N; i++) {
        const float *ct = cos_t + (size_t)pos[i] * half;
        const float *st = sin_t + (size_t)pos[i] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)i * stride + (size_t)h * hs;
            int j = 0;
            if (layout == WL_ROPE_INTERLEAVED) {
                for (; j + 4 <= half; j += 4) {
                    vf v0 = vld(v + 2 * j), v1 = vld(v + 2 * j + 4);
                    vf a = wasm_i32x4_shuffle(v0, v1, 0, 2, 4, 6);
                    vf b = wasm_i32x4_shuffle(v0, v1, 1, 3, 5, 7);
                    vf c = vld(ct + j), s = wasm_v128_xor(vld(st + j), sflip);
                    vf na = vsub(vmul(a, c), vmul(b, s));
                    vf nb = vadd(vmul(a, s), vmul(b, c));
                    vst(v + 2 * j, wasm_i32x4_shuffle(na, nb, 0, 4, 1, 5));
                    vst(v + 2 * j + 4, wasm_i32x4_shuffle(na, nb, 2, 6, 3, 7));
                }
            } else {
                for (; j + 4 <= half; j += 4) {
                    vf a = vld(v + j), b = vld(v + j + half);
                    vf c = vld(ct + j), s = wasm_v128_xor(vld(st + j), sflip);
                    vst(v + j, vsub(vmul(a, c), vmul(b, s)));
                    vst(v + j + half, vadd(vmul(a, s), vmul(b, c)));
                }
            }
            for (; j < half; j++) {
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

/* ---------------------------------------------------------------------------------------------------------
 * Softmax. */
static void softmax_causal_wasmsimd(float *s, int T, int Tk, int pos0) {
    for (int t = 0; t < T; t++) {
        float *row = s + (size_t)t * Tk;
        int n = pos0 + t + 1;
        if (n > Tk) n = Tk;
        float mx = vmax_f(row, (size_t)n);
        double sum = vexp_sub_store(row, mx, (size_t)n);
        vscale_inplace(row, (float)(1.0 / sum), (size_t)n);
        memset(row + n, 0, (size_t)(Tk - n) * sizeof(float));
    }
}

static void softmax_backward_wasmsimd(float *dp, const float *p, int T, int Tk, int pos0) {
    for (int t = 0; t < T; t++) {
        float *d = dp + (size_t)t * Tk;
        const float *pr = p + (size_t)t * Tk;
        int n = pos0 + t + 1;
        if (n > Tk) n = Tk;
        float dot = (float)vdot_d(d, pr, (size_t)n);
        const vf vdot = vsplat(dot);
        int j = 0;
        for (; j + 4 <= n; j += 4) vst(d + j, vmul(vld(pr + j), vsub(vld(d + j), vdot)));
        for (; j < n; j++) d[j] = pr[j] * (d[j] - dot);
        memset(d + n, 0, (size_t)(Tk - n) * sizeof(float));
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Activations. Tails go through the vector code on a padded copy (vld_part / vst_part). */
static inline vf swiglu_fwd_v(vf g, vf u) { return vmul(vmul(g, wl_vsigmoid(g)), u); }

static void swiglu_forward_wasmsimd(float *out, const float *gate, const float *up, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst(out + i, swiglu_fwd_v(vld(gate + i), vld(up + i)));
    if (i < n) vst_part(out + i, swiglu_fwd_v(vld_part(gate + i, n - i), vld_part(up + i, n - i)), n - i);
}

/* silu(g) = g s(g); silu'(g) = s(g) (1 + g (1 - s(g))). */
static inline void swiglu_bwd_v(vf d, vf g, vf u, vf *dg, vf *du) {
    const vf one = vsplat(1.0f);
    vf sg = wl_vsigmoid(g);
    *dg = vmul(vmul(vmul(d, u), sg), vadd(one, vmul(g, vsub(one, sg))));
    *du = vmul(d, vmul(g, sg));
}

static void swiglu_backward_wasmsimd(float *dgate, float *dup, const float *dout, const float *gate,
                                     const float *up, size_t n) {
    size_t i = 0;
    vf dg, du;
    for (; i + 4 <= n; i += 4) {
        swiglu_bwd_v(vld(dout + i), vld(gate + i), vld(up + i), &dg, &du);
        vst(dgate + i, dg);
        vst(dup + i, du);
    }
    if (i < n) {
        size_t t = n - i;
        swiglu_bwd_v(vld_part(dout + i, t), vld_part(gate + i, t), vld_part(up + i, t), &dg, &du);
        vst_part(dgate + i, dg, t);
        vst_part(dup + i, du, t);
    }
}

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */

/* gelu(v) = 0.5 v (1 + tanh(u)), u = K (v + 0.044715 v^3). Since 1 + tanh(u) = 2 sigmoid(2u), this is
 * v * sigmoid(2u): one exp, and no cancellation in 1 + tanh(u) for negative v (where the tanhf form loses
 * every bit). */
static inline vf gelu_fwd_v(vf v) {
    vf u = vmul(vsplat(GELU_K), vadd(v, vmul(vmul(vmul(vsplat(0.044715f), v), v), v)));
    return vmul(v, wl_vsigmoid(vadd(u, u)));
}

static void gelu_forward_wasmsimd(float *out, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst(out + i, gelu_fwd_v(vld(x + i)));
    if (i < n) vst_part(out + i, gelu_fwd_v(vld_part(x + i, n - i)), n - i);
}

/* With s = sigmoid(2u): 0.5 (1 + tanh u) = s and 0.5 v (1 - tanh^2 u) u' = 2 v s (1 - s) u'. */
static inline vf gelu_bwd_v(vf v, vf d) {
    const vf one = vsplat(1.0f);
    vf v2 = vmul(v, v);
    vf u = vmul(vsplat(GELU_K), vadd(v, vmul(vmul(vsplat(0.044715f), v2), v)));
    vf s = wl_vsigmoid(vadd(u, u));
    vf du = vmul(vsplat(GELU_K), vadd(one, vmul(vsplat(3.0f * 0.044715f), v2)));
    vf vs = vmul(v, s);
    return vmul(d, vadd(s, vmul(vmul(vadd(vs, vs), vsub(one, s)), du)));
}

static void gelu_backward_wasmsimd(float *dx, const float *x, const float *dout, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst(dx + i, gelu_bwd_v(vld(x + i), vld(dout + i)));
    if (i < n) vst_part(dx + i, gelu_bwd_v(vld_part(x + i, n - i), vld_part(dout + i, n - i)), n - i);
}

/* ---------------------------------------------------------------------------------------------------------
 * Cross-entropy. */
static double xent_forward_wasmsimd(float *losses, const float *logits, const int *targets, int N, int V,
                                    int ignore_id) {
    double total = 0.0;
    for (int i = 0; i < N; i++) {
        if (targets[i] == ignore_id) {
            losses[i] = 0.0f;
            continue;
        }
        const float *row = logits + (size_t)i * V;
        float mx = vmax_f(row, (size_t)V);
        double sum = vexp_sub_sum(row, mx, (size_t)V);
        losses[i] = (float)(log(sum) + mx - row[targets[i]]);
        total += losses[i];
    }
    return total;
}

static void xent_backward_wasmsimd(float *logits, const int *targets, int N, int V, int ignore_id, float scale) {
    for (int i = 0; i < N; i++) {
        float *row = logits + (size_t)i * V;
        if (targets[i] == ignore_id) {
            memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = vmax_f(row, (size_t)V);
        double sum = vexp_sub_store(row, mx, (size_t)V);
        vscale_inplace(row, (float)(scale / sum), (size_t)V);
        row[targets[i]] -= scale;
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Vector helpers. */
static void axpy_wasmsimd(float *y, float a, const float *x, size_t n) {
    const vf va = vsplat(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst(y + i, vadd(vld(y + i), vmul(va, vld(x + i))));
        vst(y + i + 4, vadd(vld(y + i + 4), vmul(va, vld(x + i + 4))));
    }
    for (; i + 4 <= n; i += 4) vst(y + i, vadd(vld(y + i), vmul(va, vld(x + i))));
    for (; i < n; i++) y[i] += a * x[i];
}

static void add_wasmsimd(float *y, const float *a, const float *b, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst(y + i, vadd(vld(a + i), vld(b + i)));
    for (; i < n; i++) y[i] = a[i] + b[i];
}

static float dot_wasmsimd(const float *x, const float *y, size_t n) { return (float)vdot_d(x, y, n); }

/* wl_kernels_wasmsimd, or wl_kernels_wasmrelaxed in the relaxed flavour (see simd.h). */
const wl_kernels WL_SIMD_NAME(wl_kernels) = {
    .name = WL_SIMD_TABLE_NAME,
    .gemm = WL_SIMD_NAME(wl_gemm),
    .rmsnorm_forward = rmsnorm_forward_wasmsimd,
    .rmsnorm_backward = rmsnorm_backward_wasmsimd,
    .layernorm_forward = layernorm_forward_wasmsimd,
    .layernorm_backward = layernorm_backward_wasmsimd,
    .rope = rope_wasmsimd,
    .softmax_causal = softmax_causal_wasmsimd,
    .softmax_backward = softmax_backward_wasmsimd,
    .swiglu_forward = swiglu_forward_wasmsimd,
    .swiglu_backward = swiglu_backward_wasmsimd,
    .gelu_forward = gelu_forward_wasmsimd,
    .gelu_backward = gelu_backward_wasmsimd,
    .xent_forward = xent_forward_wasmsimd,
    .xent_backward = xent_backward_wasmsimd,
    .axpy = axpy_wasmsimd,
    .add = add_wasmsimd,
    .dot = dot_wasmsimd,
};
