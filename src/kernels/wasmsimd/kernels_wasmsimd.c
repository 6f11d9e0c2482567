/* kernels_wasmsimd.c: the wasm SIMD (f32x4) twins of the scalar kernels: a packed, register-tiled GEMM plus
 * vectorised norms, rope, softmax, activations and cross-entropy. Natively it compiles through SIMDe so the
 * native and sanitizer tests check exactly this code against the scalar oracle. */
#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#else
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/wasm/simd128.h>
#endif

#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/wasmsimd/vmath.h"
#include "wl_model.h"

/* Unrolling the GEMM k loop lets clang (or V8's scheduler) hoist the loads of later steps, which raises the
 * number of live vectors past the 15 xmm registers V8 leaves wasm: the 5x8 kernel unrolled by 2 or 4 ran 20-30%
 * slower here. Keep one k step per iteration. */
#if defined(__clang__)
#define WL_NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define WL_NO_UNROLL
#endif

typedef v128_t vf;

static inline vf vsplat(float x) { return wasm_f32x4_splat(x); }
static inline vf vld(const float *p) { return wasm_v128_load(p); }
static inline void vst(float *p, vf v) { wasm_v128_store(p, v); }
static inline vf vadd(vf a, vf b) { return wasm_f32x4_add(a, b); }
static inline vf vsub(vf a, vf b) { return wasm_f32x4_sub(a, b); }
static inline vf vmul(vf a, vf b) { return wasm_f32x4_mul(a, b); }

/* Tails: load / store the first n (< 4) floats through a small buffer so tail elements go through exactly the
 * same vector arithmetic as the body (results never depend on where an element sits). */
static inline vf vld_part(const float *p, size_t n) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(t, p, n * sizeof(float));
    return wasm_v128_load(t);
}
static inline void vst_part(float *p, vf v, size_t n) {
    float t[4];
    wasm_v128_store(t, v);
    memcpy(p, t, n * sizeof(float));
}

static inline float vhsum(vf v) {
    vf s = vadd(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
    s = vadd(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(s, 0);
}
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
 * GEMM.
 *
 * The general path packs op(A) into slivers of WL_MR = 5 rows ([k][5], so each A value is one load32_splat)
 * and op(B) into micro-panels of WL_NR = 8 columns ([k][8], two vector loads per k), then runs a 5x8 register
 * tile: 10 accumulators + 2 B vectors + 1 broadcast + 1 product = 14 of the 15 xmm registers V8 leaves wasm.
 * Loops, outside in: C column blocks of WL_NC (the C block stays in cache across k blocks); k blocks (a B
 * micro-panel, kc x 8, stays in L1 while every A sliver streams past it from L2); A row blocks of WL_MC
 * (packed once per k block); B blocks of WL_NB columns (packed, then used by every A sliver); micro-panels;
 * slivers. Block sizes were chosen by measurement on the model's shapes. Packing happens per call into static
 * buffers (kernels never allocate; single-threaded). M <= 3 (decoding) skips packing and streams the weight once
 * through GEMV kernels.
 *
 * Measured (Node 20, this machine's f32x4 mul+add peak 52-57 GFLOPS): the kernel alone on L1 data runs at about
 * 47 GFLOPS (85%; V8 emits 34 x86 instructions per k step for its 20 multiplies and adds: 7 loads, pointer
 * and loop updates, a stack check), the model's shapes at 40-45 GFLOPS; packing costs 3-8% of that (most on the
 * LM head, whose 113 MB weight comes from DRAM). */
#define WL_MR 5
#define WL_NR 8
#define WL_MC 160 /* A rows per packed block (multiple of WL_MR): MC x KC floats = 400 KB, in L2 */
#define WL_KC 640 /* longest k block: a B micro-panel (KC x 8 floats, 20 KB) stays in L1 */
#define WL_NB 96  /* B columns per packed block: KC x NB floats = 240 KB, in L2 beside the A block */
#define WL_NC 4096
#define WL_GEMV_KMAX 8192

static float g_apack[WL_MC * WL_KC];
static float g_bpack[WL_KC * WL_NB];
static float g_gemv_x[3 * WL_GEMV_KMAX]; /* rows of op(A) gathered for M <= 3 with trans_a */

/* C tile (5 x 8, row stride ldc) = alpha * a-sliver . b-panel (+ C when acc). Kept out of line: inlined into
 * the blocking loops (one big function for V8's register allocator) the whole GEMM ran about 1.4x slower.
 * noinline only binds clang; it also has two call sites, so binaryen (which inlines single-caller functions)
 * leaves it alone. `node --print-wasm-code` shows its loop in xmm0-xmm14 with no stack spills. */
static __attribute__((noinline)) void gemm_ukernel_5x8(int kc, const float *restrict a, const float *restrict b,
                                                       float *restrict c, int ldc, float alpha, int acc) {
    vf c00 = vsplat(0.0f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
       c40 = c00, c41 = c00;
    WL_NO_UNROLL
    for (int k = 0; k < kc; k++) {
        vf b0 = vld(b), b1 = vld(b + 4);
        vf av = wasm_v128_load32_splat(a);
        c00 = vadd(c00, vmul(av, b0));
        c01 = vadd(c01, vmul(av, b1));
        av = wasm_v128_load32_splat(a + 1);
        c10 = vadd(c10, vmul(av, b0));
        c11 = vadd(c11, vmul(av, b1));
        av = wasm_v128_load32_splat(a + 2);
        c20 = vadd(c20, vmul(av, b0));
        c21 = vadd(c21, vmul(av, b1));
        av = wasm_v128_load32_splat(a + 3);
        c30 = vadd(c30, vmul(av, b0));
        c31 = vadd(c31, vmul(av, b1));
        av = wasm_v128_load32_splat(a + 4);
        c40 = vadd(c40, vmul(av, b0));
        c41 = vadd(c41, vmul(av, b1));
        a += WL_MR;
        b += WL_NR;
    }
    const vf va = vsplat(alpha);
    float *c0 = c, *c1 = c + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc, *c4 = c3 + ldc;
    if (acc) {
        vst(c0, vadd(vld(c0), vmul(va, c00)));
        vst(c0 + 4, vadd(vld(c0 + 4), vmul(va, c01)));
        vst(c1, vadd(vld(c1), vmul(va, c10)));
        vst(c1 + 4, vadd(vld(c1 + 4), vmul(va, c11)));
        vst(c2, vadd(vld(c2), vmul(va, c20)));
        vst(c2 + 4, vadd(vld(c2 + 4), vmul(va, c21)));
        vst(c3, vadd(vld(c3), vmul(va, c30)));
        vst(c3 + 4, vadd(vld(c3 + 4), vmul(va, c31)));
        vst(c4, vadd(vld(c4), vmul(va, c40)));
        vst(c4 + 4, vadd(vld(c4 + 4), vmul(va, c41)));
    } else {
        vst(c0, vmul(va, c00));
        vst(c0 + 4, vmul(va, c01));
        vst(c1, vmul(va, c10));
        vst(c1 + 4, vmul(va, c11));
        vst(c2, vmul(va, c20));
        vst(c2 + 4, vmul(va, c21));
        vst(c3, vmul(va, c30));
        vst(c3 + 4, vmul(va, c31));
        vst(c4, vmul(va, c40));
        vst(c4 + 4, vmul(va, c41));
    }
}

/* 4x4 transpose: rows r0..r3 in, columns out. */
static inline void transpose4(vf r0, vf r1, vf r2, vf r3, vf *o0, vf *o1, vf *o2, vf *o3) {
    vf t0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5);
    vf t1 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7);
    vf t2 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5);
    vf t3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);
    *o0 = wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5);
    *o1 = wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7);
    *o2 = wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5);
    *o3 = wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7);
}

/* Pack rows [i0, i0 + mc) and k range [p0, p0 + kc) of op(A) into slivers of WL_MR rows, [k][MR] each;
 * rows past mc are zero. Full slivers move 4 of their 5 rows as vectors (a vector store of rows 0..3 at
 * dst + 5k, then row 4 as a scalar after it). */
static void pack_a(int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc, float *restrict pa) {
    for (int s = 0; s < mc; s += WL_MR) {
        int mr = mc - s < WL_MR ? mc - s : WL_MR;
        float *dst = pa + (size_t)s * kc;
        int k = 0;
        if (!trans_a) {
            const float *src = A + (size_t)(i0 + s) * lda + p0;
            if (mr == WL_MR) {
                const float *s0 = src, *s1 = s0 + lda, *s2 = s1 + lda, *s3 = s2 + lda, *s4 = s3 + lda;
                for (; k + 4 <= kc; k += 4) {
                    vf c0, c1, c2, c3;
                    transpose4(vld(s0 + k), vld(s1 + k), vld(s2 + k), vld(s3 + k), &c0, &c1, &c2, &c3);
                    float *d = dst + (size_t)k * WL_MR;
                    vst(d, c0);
                    d[4] = s4[k];
                    vst(d + 5, c1);
                    d[9] = s4[k + 1];
                    vst(d + 10, c2);
                    d[14] = s4[k + 2];
                    vst(d + 15, c3);
                    d[19] = s4[k + 3];
                }
            }
            for (; k < kc; k++) {
                for (int r = 0; r < mr; r++) dst[(size_t)k * WL_MR + r] = src[(size_t)r * lda + k];
                for (int r = mr; r < WL_MR; r++) dst[(size_t)k * WL_MR + r] = 0.0f;
            }
        } else {
            /* A is (K, M): the MR values of one k are contiguous. */
            const float *src = A + (size_t)p0 * lda + i0 + s;
            if (mr == WL_MR) {
                for (; k < kc; k++) {
                    const float *row = src + (size_t)k * lda;
                    float *d = dst + (size_t)k * WL_MR;
                    vst(d, vld(row));
                    d[4] = row[4];
                }
            }
            for (; k < kc; k++) {
                const float *row = src + (size_t)k * lda;
                for (int r = 0; r < mr; r++) dst[(size_t)k * WL_MR + r] = row[r];
                for (int r = mr; r < WL_MR; r++) dst[(size_t)k * WL_MR + r] = 0.0f;
            }
        }
    }
}

/* Pack columns [j0, j0 + nb) and k range [p0, p0 + kc) of op(B) into nb / 8 micro-panels ([k][8] each, the
 * panel of columns jr..jr+7 at pb + jr * kc); columns past nb are zero (kept finite: the kernel multiplies them
 * before the edge copy drops them). */
static void pack_b(int trans_b, const float *B, int ldb, int j0, int nb, int p0, int kc, float *restrict pb) {
    int nfull = nb & ~(WL_NR - 1);
    if (!trans_b) {
        /* B is (K, N): read each row piece once, front to back, and deal it out to the panels. */
        for (int k = 0; k < kc; k++) {
            const float *row = B + (size_t)(p0 + k) * ldb + j0;
            float *d = pb + (size_t)k * WL_NR;
            for (int j = 0; j < nfull; j += WL_NR) {
                vst(d + (size_t)j * kc, vld(row + j));
                vst(d + (size_t)j * kc + 4, vld(row + j + 4));
            }
            if (nfull < nb) {
                float *dt = d + (size_t)nfull * kc;
                for (int j = 0; j < WL_NR; j++) dt[j] = nfull + j < nb ? row[nfull + j] : 0.0f;
            }
        }
        return;
    }
    /* B is (N, K): column j of op(B) is row j0 + j of B, contiguous in k; transpose 4x4 blocks. */
    for (int jr = 0; jr < nb; jr += WL_NR) {
        const float *src = B + (size_t)(j0 + jr) * ldb + p0;
        float *panel = pb + (size_t)jr * kc;
        int k = 0;
        if (jr < nfull) {
            for (; k + 4 <= kc; k += 4) {
                for (int h = 0; h < 2; h++) {
                    const float *r = src + (size_t)(4 * h) * ldb + k;
                    vf c0, c1, c2, c3;
                    transpose4(vld(r), vld(r + ldb), vld(r + 2 * (size_t)ldb), vld(r + 3 * (size_t)ldb), &c0, &c1,
                               &c2, &c3);
                    float *d = panel + (size_t)k * WL_NR + 4 * h;
                    vst(d, c0);
                    vst(d + WL_NR, c1);
                    vst(d + 2 * WL_NR, c2);
                    vst(d + 3 * WL_NR, c3);
                }
            }
        }
        int nr = nb - jr < WL_NR ? nb - jr : WL_NR;
        for (; k < kc; k++) {
            for (int j = 0; j < nr; j++) panel[(size_t)k * WL_NR + j] = src[(size_t)j * ldb + k];
            for (int j = nr; j < WL_NR; j++) panel[(size_t)k * WL_NR + j] = 0.0f;
        }
    }
}

static void gemm_packed(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, int beta_one, float *C, int ldc) {
    /* Equal k blocks of at most WL_KC, so no block is a short remainder. With K up to 640 (the model's 576)
     * a B block of (N, K) rows is then one sequential stream. */
    int nkb = (K + WL_KC - 1) / WL_KC;
    int kcb = (K + nkb - 1) / nkb;
    float tile[WL_MR * WL_NR];
    for (int j0 = 0; j0 < N; j0 += WL_NC) {
        int nc = N - j0 < WL_NC ? N - j0 : WL_NC;
        for (int p0 = 0; p0 < K; p0 += kcb) {
            int kc = K - p0 < kcb ? K - p0 : kcb;
            int acc = p0 > 0 || beta_one;
            for (int i0 = 0; i0 < M; i0 += WL_MC) {
                int mc = M - i0 < WL_MC ? M - i0 : WL_MC;
                pack_a(trans_a, A, lda, i0, mc, p0, kc, g_apack);
                for (int jb = 0; jb < nc; jb += WL_NB) {
                    int nb = nc - jb < WL_NB ? nc - jb : WL_NB;
                    pack_b(trans_b, B, ldb, j0 + jb, nb, p0, kc, g_bpack);
                    for (int jr = 0; jr < nb; jr += WL_NR) {
                        int nr = nb - jr < WL_NR ? nb - jr : WL_NR;
                        const float *pb = g_bpack + (size_t)jr * kc;
                        for (int ir = 0; ir < mc; ir += WL_MR) {
                            int mr = mc - ir < WL_MR ? mc - ir : WL_MR;
                            float *c = C + (size_t)(i0 + ir) * ldc + j0 + jb + jr;
                            const float *pa = g_apack + (size_t)ir * kc;
                            if (mr == WL_MR && nr == WL_NR) {
                                gemm_ukernel_5x8(kc, pa, pb, c, ldc, alpha, acc);
                            } else {
                                gemm_ukernel_5x8(kc, pa, pb, tile, WL_NR, alpha, 0);
                                for (int r = 0; r < mr; r++) {
                                    float *cr = c + (size_t)r * ldc;
                                    const float *t = tile + r * WL_NR;
                                    if (acc) {
                                        for (int j = 0; j < nr; j++) cr[j] += t[j];
                                    } else {
                                        for (int j = 0; j < nr; j++) cr[j] = t[j];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/* C (m <= 3 rows) = alpha * op(A) B (+ C), B (K, N) row-major: each k adds a_ik * B[k, :] into accumulators
 * held in L1 for a chunk of columns, so the weight streams through once in row order. a(i, k) is
 * A[i * sai + k * sak] (covers both trans_a). m is a constant at each call site so the row loops unroll. */
#define WL_GEMV_NCH 1024
static float g_gemv_acc[3 * WL_GEMV_NCH];

static inline __attribute__((always_inline)) void gemv_rows_nn(int m, int N, int K, float alpha, const float *A,
                                                                size_t sai, size_t sak, const float *B, int ldb,
                                                                int beta_one, float *C, int ldc) {
    for (int j0 = 0; j0 < N; j0 += WL_GEMV_NCH) {
        int nc = N - j0 < WL_GEMV_NCH ? N - j0 : WL_GEMV_NCH;
        int nv = nc & ~3;
        memset(g_gemv_acc, 0, sizeof g_gemv_acc);
        int k = 0;
        for (; k + 2 <= K; k += 2) {
            const float *b0 = B + (size_t)k * ldb + j0, *b1 = b0 + ldb;
            vf a0[3], a1[3];
            for (int i = 0; i < m; i++) {
                a0[i] = vsplat(A[i * sai + (size_t)k * sak]);
                a1[i] = vsplat(A[i * sai + (size_t)(k + 1) * sak]);
            }
            for (int j = 0; j < nv; j += 4) {
                vf x0 = vld(b0 + j), x1 = vld(b1 + j);
                for (int i = 0; i < m; i++) {
                    float *acc = g_gemv_acc + i * WL_GEMV_NCH + j;
                    vst(acc, vadd(vld(acc), vadd(vmul(a0[i], x0), vmul(a1[i], x1))));
                }
            }
            for (int j = nv; j < nc; j++) {
                for (int i = 0; i < m; i++) {
                    g_gemv_acc[i * WL_GEMV_NCH + j] +=
                        wasm_f32x4_extract_lane(a0[i], 0) * b0[j] + wasm_f32x4_extract_lane(a1[i], 0) * b1[j];
                }
            }
        }
        for (; k < K; k++) {
            const float *b0 = B + (size_t)k * ldb + j0;
            for (int i = 0; i < m; i++) {
                float a = A[i * sai + (size_t)k * sak];
                vf av = vsplat(a);
                float *acc = g_gemv_acc + i * WL_GEMV_NCH;
                for (int j = 0; j < nv; j += 4) vst(acc + j, vadd(vld(acc + j), vmul(av, vld(b0 + j))));
                for (int j = nv; j < nc; j++) acc[j] += a * b0[j];
            }
        }
        for (int i = 0; i < m; i++) {
            float *c = C + (size_t)i * ldc + j0;
            const float *acc = g_gemv_acc + i * WL_GEMV_NCH;
            for (int j = 0; j < nc; j++) c[j] = beta_one ? c[j] + alpha * acc[j] : alpha * acc[j];
        }
    }
}

/* C (m <= 3 rows) = alpha * X B^T (+ C) with X rows contiguous in k and B (N, K): dot products of each X row
 * with jb rows of B at a time, sharing the loads. m and jb are constants at each call site. */
static inline __attribute__((always_inline)) void gemv_rows_nt_block(int m, int jb, int K, float alpha,
                                                                      const float *X, size_t ldx, const float *B,
                                                                      int ldb, int beta_one, float *C, int ldc) {
    vf acc[3][4];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < jb; j++) acc[i][j] = vsplat(0.0f);
    int k = 0;
    for (; k + 4 <= K; k += 4) {
        vf x[3];
        for (int i = 0; i < m; i++) x[i] = vld(X + i * ldx + k);
        for (int j = 0; j < jb; j++) {
            vf w = vld(B + (size_t)j * ldb + k);
            for (int i = 0; i < m; i++) acc[i][j] = vadd(acc[i][j], vmul(x[i], w));
        }
    }
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < jb; j++) {
            float s = vhsum(acc[i][j]);
            for (int kk = k; kk < K; kk++) s += X[i * ldx + kk] * B[(size_t)j * ldb + kk];
            float *c = C + (size_t)i * ldc + j;
            *c = beta_one ? *c + alpha * s : alpha * s;
        }
    }
}

static inline __attribute__((always_inline)) void gemv_rows_nt(int m, int jb, int N, int K, float alpha,
                                                                const float *X, size_t ldx, const float *B,
                                                                int ldb, int beta_one, float *C, int ldc) {
    int j = 0;
    for (; j + jb <= N; j += jb)
        gemv_rows_nt_block(m, jb, K, alpha, X, ldx, B + (size_t)j * ldb, ldb, beta_one, C + j, ldc);
    for (; j < N; j++) gemv_rows_nt_block(m, 1, K, alpha, X, ldx, B + (size_t)j * ldb, ldb, beta_one, C + j, ldc);
}

static void sgemm_wasmsimd(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                           const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (beta != 0.0f && beta != 1.0f) {
        /* Outside the documented contract (beta is 0 or 1) but cheap to honour: scale C once, then add. */
        for (int i = 0; i < M; i++) vscale_inplace(C + (size_t)i * ldc, beta, (size_t)N);
        beta = 1.0f;
    }
    int beta_one = beta != 0.0f;
    if (K <= 0) {
        if (!beta_one)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    if (M <= 3 && !trans_b) {
        size_t sai = trans_a ? 1 : (size_t)lda, sak = trans_a ? (size_t)lda : 1;
        if (M == 1) gemv_rows_nn(1, N, K, alpha, A, sai, sak, B, ldb, beta_one, C, ldc);
        else if (M == 2) gemv_rows_nn(2, N, K, alpha, A, sai, sak, B, ldb, beta_one, C, ldc);
        else gemv_rows_nn(3, N, K, alpha, A, sai, sak, B, ldb, beta_one, C, ldc);
        return;
    }
    if (M <= 3 && (!trans_a || K <= WL_GEMV_KMAX)) {
        const float *X = A;
        size_t ldx = (size_t)lda;
        if (trans_a) {
            /* A is (K, M): gather the few rows of op(A) so the dot products read contiguous k. */
            for (int i = 0; i < M; i++)
                for (int k = 0; k < K; k++) g_gemv_x[(size_t)i * K + k] = A[(size_t)k * lda + i];
            X = g_gemv_x;
            ldx = (size_t)K;
        }
        if (M == 1) gemv_rows_nt(1, 4, N, K, alpha, X, ldx, B, ldb, beta_one, C, ldc);
        else if (M == 2) gemv_rows_nt(2, 4, N, K, alpha, X, ldx, B, ldb, beta_one, C, ldc);
        else gemv_rows_nt(3, 3, N, K, alpha, X, ldx, B, ldb, beta_one, C, ldc);
        return;
    }
    gemm_packed(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta_one, C, ldc);
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

const wl_kernels wl_kernels_wasmsimd = {
    .name = "wasmsimd",
    .sgemm = sgemm_wasmsimd,
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
