/* gemm.c: the wasm SIMD GEMM: C = add + sum of terms alpha op(A) op(B) + bias, blocked and packed after BLIS
 * (k blocks, row blocks of packed A slivers, packed B micro-panels, a register tile) and spread over the thread
 * pool. Natively it compiles through SIMDe, so the C tests check this exact code.
 *
 * Micro-kernel: op(A) is read as slivers of WL_MR rows ([k][MR], each value one load32_splat) and op(B) as
 * micro-panels of WL_NR = 8 columns ([k][8], two vector loads per k). SIMD128 build: a 5x8 tile of 10 accumulators
 * + 2 B vectors + 1 broadcast + 1 product, 14 of the 15 xmm registers V8 leaves wasm. V8 (Node 20, x64) runs its
 * loop in 35 instructions per k step for 20 multiplies and adds: 7 loads, 2 pointer updates, 2 index
 * zero-extensions, a stack check and the loop test. On this machine's Zen 4 that is dispatch-bound at about 5.8
 * cycles for 5 cycles of arithmetic: the kernel alone, on data in L1, runs at 82-83% of the f32x4 mul+add peak (the
 * peak loop of src/wasm/bench.c, which is arithmetic-bound), and that is the ceiling of every GEMM built on it.
 * Variants that would cut the overhead were measured and rejected: unrolling k, in C or in hand-written wasm, lets
 * V8 schedule each accumulator's adds of the unrolled steps together, which keeps 4 B vectors live and spills; a 6x8
 * tile spills; V8 folds no load into a SIMD multiply; the x86 "splat from a loaded vector" form needs 5 more
 * registers. Relaxed-SIMD build: f32x4.relaxed_madd (one FMA instruction) needs no product register, so the tile is
 * 6x8 (12 accumulators + 2 B vectors + 1 broadcast = 15 registers) and a k step is 12 fused multiply-adds for 8
 * loads and the same loop overhead: arithmetic-bound, and 1.2x the multiply-adds per step.
 *
 * Loops, outside in: terms; k blocks of a term (equal blocks of at most WL_KC, decided by the shape alone); row
 * blocks of at most WL_MC rows, whose A slivers are packed once (into memory all threads read); column pieces (the
 * parallel tasks), each packing WL_NB columns of a transposed B at a time into its own scratch, or, with B not
 * transposed (dY W), sharing a wide chunk of B that all threads packed first, row by row (run_row_block_plain_b);
 * micro-panels (a kc x 8 panel stays in L1 while every sliver of the row block streams past it from L2); slivers.
 * Packing B costs 1-9% of a GEMM in the last bench runs (most on the LM head, whose weight comes from DRAM, and at 128
 * tokens); `npm run bench` reports it per shape, as the most pre-packing the weights at load time could save, against
 * doubling their memory. In training steps it saves nothing measurable: with every weight packed once, in both layouts,
 * and the GEMM reading those copies (an experiment at three times the weights' memory), interleaved one-thread steps
 * ran at 66.8-90.5 training tokens per CPU-second against 65.6-89.0 without (medians 87.5 and 86.4), since the
 * micro-kernel's first pass over each panel then waits for memory as the packing did. A step streams its 0.54 GB of
 * weights from memory twice either way (at 19-26 GB/s, one core's read rate here), and a forward pass's sequence of
 * weight GEMMs ran at the same rate (51 GFLOPS) with 30 layers' weights as with one layer's reused from cache. Reading
 * a forward product's weight in place instead of packing it (C^T = W X^T, rows_tile broadcasting 6 weight rows against
 * packed panels of X^T, C^T summed in scratch and transposed) was measured in training steps and rejected: wasm
 * addresses have no scaled index, so each of the 6 row pointers costs an add per k step, and that kernel took as long
 * as the packed one and its packing together (44% of a step in a profile against 43%; interleaved steps: no
 * difference).
 * What memory costs there, measured in one process with samples interleaved: packing the 30 layers' weights of a
 * forward pass (0.42 GB, transposed) took 30-34 ms from memory and 12-15 ms from cache, beside 530-585 ms for the
 * products at 128 tokens. Wasm has no prefetch, and loading each cache line of the next column chunk's weight rows
 * while the current chunk's tiles run (spread evenly over them) made those products 3-5% slower: a load that misses
 * holds up the loads and arithmetic behind it. Other packing orders of a transposed weight, from memory: 4 rows at a
 * time over whole rows 11% slower, one row at a time with lane stores 76% slower, 16 rows (two panels) at a time 5-8%
 * faster, which is under 0.5% of the products and was left out.
 * Each element of C is summed over k in the same order whatever the threads, and tiles at the edges go through the
 * same micro-kernel (a last sliver of 1 or 2 rows through ukernel_two_rows, which sums in the same order): results are
 * bit-identical for any thread count.
 *
 * Shapes: M <= 3 (decoding) streams the weight once through GEMV kernels, in parallel over column chunks. A thin C
 * (N up to 16) of an op(A) with rows contiguous in k, as x A^T and dY B of a LoRA factor, reads A in place: with rows
 * broadcast into the 6x8 tile in the relaxed-SIMD build (see gemm_rows_in_place), as dot products in the SIMD128 one
 * (N a multiple of 4, see gemm_dot). Another thin C (N <= 16) is split over rows, and reads a transposed A in place
 * in k blocks of WL_KC_STRIDED (no packing: with 8 columns a packed copy would cost as much as the product): the
 * gradient of a LoRA factor B, dB = s dY^T (X A^T). A short, wide C (M <= 9, or M <= 16 for A^T B: the gradient of a
 * factor A, dA = (dY B)^T X) is computed as its transpose so that form applies.
 *
 * New weight formats (8-bit, 4-bit) plug in at pack_b: the micro-kernel only ever sees f32 panels. */
#include <stdint.h>
#include <string.h>

#include "core/core.h"
#include "core/parallel.h"
#include "kernels/kernels.h"
#include "kernels/wasmsimd/simd.h"

/* Register tile: 6x8 with fused multiply-adds (12 accumulators + 2 B vectors + 1 broadcast = 15 registers, all
 * V8 leaves wasm on x64); 5x8 with multiply then add, which needs one more register for the product. */
#if WL_SIMD_FUSED
#define WL_MR 6
#else
#define WL_MR 5
#endif
#define WL_NR 8
/* Longest k block: a B micro-panel (KC x 8 floats, 18 KB) stays in L1 beside the A sliver streaming past it (6 x KC,
 * 14 KB). At 576 a product with K <= 576 (every weight of a 576-wide model but down_proj) is one k block, so C is
 * written once and each row of a transposed weight is packed whole; against 512 that ran the LM head and gate/up
 * forward products 3-5% faster by CPU time, and the others the same. */
#define WL_KC 576
#define WL_MC 510     /* rows per packed A block (multiple of WL_MR): 512 tokens in one block, B packed once */
/* k block of a transposed A read in place: the kc rows it strides over stay in L1 (on the LoRA-factor gradients with
 * a 576-wide operand, 32 and 128 ran 3-10% slower in interleaved samples) */
#define WL_KC_STRIDED 64
#define WL_NB 96      /* B columns packed at a time: KC x NB floats = 216 KB, in L2 beside the A block */
#define WL_MAX_TERMS 4
#define WL_GEMV_NCH 1024
#define WL_GEMV_KMAX 8192

/* Per-thread scratch: the B chunk, then the A block of the serial path (or of a row piece). The thin form packs all
 * of B (at most WL_KC x 16) at the start of the same scratch (shared when there are threads), and a swapped A^T B
 * (see wl_gemm) keeps its C^T after it. */
#define WL_BPACK_FLOATS ((size_t)WL_KC * WL_NB)
#define WL_THIN_BPACK_FLOATS ((size_t)WL_KC * 2 * WL_NR)
#define WL_CT_FLOATS (WL_BPACK_FLOATS - WL_THIN_BPACK_FLOATS)
_Static_assert(WL_BPACK_FLOATS <= WL_SHARED_SCRATCH_FLOATS, "GEMM C^T scratch");
_Static_assert(WL_BPACK_FLOATS + (size_t)(WL_MC + WL_MR) * WL_KC <= WL_SCRATCH_FLOATS, "GEMM scratch");
_Static_assert((size_t)(WL_MC + WL_MR) * WL_KC <= WL_SHARED_SCRATCH_FLOATS, "GEMM shared scratch");
_Static_assert((size_t)WL_GEMV_NCH * 3 + (size_t)WL_GEMV_KMAX * 3 <= WL_SCRATCH_FLOATS, "GEMV scratch");
_Static_assert(WL_SHARED_SCRATCH_FLOATS == WL_SCRATCH_FLOATS, "a packed A block and B chunk fit either scratch");

/* Unrolling the k loop raises the live vectors past what V8 keeps in registers (see the top of the file). */
#if defined(__clang__)
#define WL_NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define WL_NO_UNROLL
#endif

/* ---------------------------------------------------------------------------------------------------------
 * Micro-kernel. */

/* LLVM's loop strength reduction rewrites a pointer that steps by a run-time stride into integer arithmetic, and
 * the loads at constant offsets from it then each need an add of their own, which V8 turns into more live
 * registers and spills in the k loop. An empty asm statement that may change the k loop's two induction variables
 * (pointers, or a pointer and an index) hides them from that pass; it emits nothing. */
#define WL_OPAQUE_POINTERS(a, b) __asm__("" : "+r"(a), "+r"(b))

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

/* C tile (WL_MR x 8, row stride ldc) = alpha * sliver . panel (+ C when acc); sliver row values for step k at
 * a + k * as. The row loops are unrolled by the compiler, so the tile lives in 2 * WL_MR vector registers. The
 * two instances below are kept out of line: inlined into the blocking loops (one big function for V8's register
 * allocator) the whole GEMM ran about 1.4x slower. `opaque` when the stride is only known at run time (see
 * WL_OPAQUE_POINTERS). */
static inline __attribute__((always_inline)) void ukernel(int kc, const float *restrict a, size_t as,
                                                           const float *restrict b, float *restrict c, int ldc,
                                                           float alpha, int acc, int opaque) {
    vf c0[WL_MR], c1[WL_MR];
    for (int r = 0; r < WL_MR; r++) c0[r] = c1[r] = vsplat(0.0f);
    /* Ending on the panel pointer instead of a counter saves V8 an add per step. */
    const float *b_end = b + (size_t)kc * WL_NR;
    WL_NO_UNROLL
    while (b != b_end) {
        vf b0 = vld(b), b1 = vld(b + 4);
        for (int r = 0; r < WL_MR; r++) {
            vf av = wasm_v128_load32_splat(a + r);
            c0[r] = vmadd(av, b0, c0[r]);
            c1[r] = vmadd(av, b1, c1[r]);
        }
        a += as;
        b += WL_NR;
        if (opaque) WL_OPAQUE_POINTERS(a, b);
    }
    const vf va = vsplat(alpha);
    for (int r = 0; r < WL_MR; r++) {
        float *cr = c + (size_t)r * ldc;
        if (acc) {
            vst(cr, vmadd(va, c0[r], vld(cr)));
            vst(cr + 4, vmadd(va, c1[r], vld(cr + 4)));
        } else {
            vst(cr, vmul(va, c0[r]));
            vst(cr + 4, vmul(va, c1[r]));
        }
    }
}

/* A packed into [k][WL_MR] slivers. */
static __attribute__((noinline)) void ukernel_packed(int kc, const float *restrict a, const float *restrict b,
                                                     float *restrict c, int ldc, float alpha, int acc) {
    ukernel(kc, a, WL_MR, b, c, ldc, alpha, acc, 0);
}

/* A read in place from a transposed operand: row values of step k at a + k * lda. */
static __attribute__((noinline)) void ukernel_strided(int kc, const float *restrict a, size_t lda,
                                                      const float *restrict b, float *restrict c, int ldc, float alpha,
                                                      int acc) {
    ukernel(kc, a, lda, b, c, ldc, alpha, acc, 1);
}

/* The last sliver when it has at most 2 rows (128 tokens = 21 x 6 + 2): rows 0-1 of a packed sliver against two
 * panels at once (b0, b1), 8 accumulators, so its 2 useful rows take 8 multiply-adds a step where the full tile would
 * spend 12 on each panel. Each accumulator sums k in the same order as the full tile's. tile0, tile1: rows 0-1 of the
 * two panels' tiles (row stride WL_NR), alpha applied, as ukernel writes a tile. */
static __attribute__((noinline)) void ukernel_two_rows(int kc, const float *restrict a, const float *restrict b0,
                                                       const float *restrict b1, float alpha, float *restrict tile0,
                                                       float *restrict tile1) {
    vf c[2][4];
    for (int r = 0; r < 2; r++)
        for (int q = 0; q < 4; q++) c[r][q] = vsplat(0.0f);
    const float *b_end = b0 + (size_t)kc * WL_NR;
    WL_NO_UNROLL
    while (b0 != b_end) {
        vf x0 = vld(b0), x1 = vld(b0 + 4), x2 = vld(b1), x3 = vld(b1 + 4);
        for (int r = 0; r < 2; r++) {
            vf av = wasm_v128_load32_splat(a + r);
            c[r][0] = vmadd(av, x0, c[r][0]);
            c[r][1] = vmadd(av, x1, c[r][1]);
            c[r][2] = vmadd(av, x2, c[r][2]);
            c[r][3] = vmadd(av, x3, c[r][3]);
        }
        a += WL_MR;
        b0 += WL_NR;
        b1 += WL_NR;
        WL_OPAQUE_POINTERS(a, b1);
    }
    const vf va = vsplat(alpha);
    for (int r = 0; r < 2; r++) {
        vst(tile0 + r * WL_NR, vmul(va, c[r][0]));
        vst(tile0 + r * WL_NR + 4, vmul(va, c[r][1]));
        vst(tile1 + r * WL_NR, vmul(va, c[r][2]));
        vst(tile1 + r * WL_NR + 4, vmul(va, c[r][3]));
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Packing. */

/* Pack rows [i0, i0 + mc) and k range [p0, p0 + kc) of op(A) into slivers of WL_MR rows, [k][MR] each;
 * rows past mc are zero. Full slivers move rows 0..3 as 4x4 transposed vectors (a vector store at dst + MR k) and
 * the rest as scalars after them. */
static void pack_a(int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc, float *restrict pa) {
    for (int s = 0; s < mc; s += WL_MR) {
        int mr = mc - s < WL_MR ? mc - s : WL_MR;
        float *dst = pa + (size_t)s * kc;
        int k = 0;
        if (!trans_a) {
            const float *src = A + (size_t)(i0 + s) * lda + p0;
            if (mr == WL_MR) {
                const float *s0 = src, *s1 = s0 + lda, *s2 = s1 + lda, *s3 = s2 + lda;
                for (; k + 4 <= kc; k += 4) {
                    vf c[4];
                    transpose4(vld(s0 + k), vld(s1 + k), vld(s2 + k), vld(s3 + k), &c[0], &c[1], &c[2], &c[3]);
                    float *d = dst + (size_t)k * WL_MR;
                    for (int q = 0; q < 4; q++) {
                        vst(d + q * WL_MR, c[q]);
                        for (int r = 4; r < WL_MR; r++) d[q * WL_MR + r] = src[(size_t)r * lda + k + q];
                    }
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
                    for (int r = 4; r < WL_MR; r++) d[r] = row[r];
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
 * panel of columns jr..jr+7 at pb + (jr / 8) * ps, ps >= kc * 8); columns past nb are zero (kept finite: the kernel
 * multiplies them before the edge copy drops them). */
static void pack_b(int trans_b, const float *B, int ldb, int j0, int nb, int p0, int kc, float *restrict pb,
                   size_t ps) {
    int nfull = nb & ~(WL_NR - 1);
    if (!trans_b) {
        /* B is (K, N): read each row piece once, front to back, and deal it out to the panels. */
        for (int k = 0; k < kc; k++) {
            const float *row = B + (size_t)(p0 + k) * ldb + j0;
            float *d = pb + (size_t)k * WL_NR;
            for (int j = 0; j < nfull; j += WL_NR) {
                vst(d + (size_t)(j / WL_NR) * ps, vld(row + j));
                vst(d + (size_t)(j / WL_NR) * ps + 4, vld(row + j + 4));
            }
            if (nfull < nb) {
                float *dt = d + (size_t)(nfull / WL_NR) * ps;
                for (int j = 0; j < WL_NR; j++) dt[j] = nfull + j < nb ? row[nfull + j] : 0.0f;
            }
        }
        return;
    }
    /* B is (N, K): column j of op(B) is row j0 + j of B, contiguous in k; transpose 4x4 blocks. */
    for (int jr = 0; jr < nb; jr += WL_NR) {
        const float *src = B + (size_t)(j0 + jr) * ldb + p0;
        float *panel = pb + (size_t)(jr / WL_NR) * ps;
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

/* ---------------------------------------------------------------------------------------------------------
 * GEMV: M <= 3 rows (decoding). */

/* C (m <= 3 rows, nc <= WL_GEMV_NCH columns) = alpha * op(A) B (+ C), B (K, nc) row-major: each k adds a_ik * B[k, :]
 * into accumulators held in L1, so the weight streams through once in row order. a(i, k) is A[i * sai + k * sak]
 * (covers both trans_a). m is a constant at each call site so the row loops unroll. */
static inline __attribute__((always_inline)) void gemv_rows_nn(int m, int nc, int K, float alpha, const float *A,
                                                                size_t sai, size_t sak, const float *B, int ldb,
                                                                int beta_one, float *C, int ldc, float *acc) {
    int nv = nc & ~3;
    memset(acc, 0, sizeof(float) * 3 * WL_GEMV_NCH);
    int k = 0;
    for (; k + 2 <= K; k += 2) {
        const float *b0 = B + (size_t)k * ldb, *b1 = b0 + ldb;
        vf a0[3], a1[3];
        for (int i = 0; i < m; i++) {
            a0[i] = vsplat(A[i * sai + (size_t)k * sak]);
            a1[i] = vsplat(A[i * sai + (size_t)(k + 1) * sak]);
        }
        for (int j = 0; j < nv; j += 4) {
            vf x0 = vld(b0 + j), x1 = vld(b1 + j);
            for (int i = 0; i < m; i++) {
                float *ai = acc + i * WL_GEMV_NCH + j;
                vst(ai, vadd(vld(ai), vadd(vmul(a0[i], x0), vmul(a1[i], x1))));
            }
        }
        for (int j = nv; j < nc; j++) {
            for (int i = 0; i < m; i++) {
                acc[i * WL_GEMV_NCH + j] +=
                    wasm_f32x4_extract_lane(a0[i], 0) * b0[j] + wasm_f32x4_extract_lane(a1[i], 0) * b1[j];
            }
        }
    }
    for (; k < K; k++) {
        const float *b0 = B + (size_t)k * ldb;
        for (int i = 0; i < m; i++) {
            float a = A[i * sai + (size_t)k * sak];
            vf av = vsplat(a);
            float *ai = acc + i * WL_GEMV_NCH;
            for (int j = 0; j < nv; j += 4) vst(ai + j, vadd(vld(ai + j), vmul(av, vld(b0 + j))));
            for (int j = nv; j < nc; j++) ai[j] += a * b0[j];
        }
    }
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        const float *ai = acc + i * WL_GEMV_NCH;
        for (int j = 0; j < nc; j++) c[j] = beta_one ? c[j] + alpha * ai[j] : alpha * ai[j];
    }
}

/* C (m = 2 or 3 rows; one row goes through gemv_row_nt) = alpha * X B^T (+ C) with X rows contiguous in k and
 * B (N, K): dot products of each X row with jb rows of B at a time, sharing the loads. m and jb are constants at each
 * call site. */
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

/* C (one row) = alpha * x B^T (+ C), B (N, K): one row of B at a time, into four accumulators over 16 consecutive k,
 * so that no multiply-add waits for the one before it and the weights stream at memory speed. Decoding reads every
 * weight once per token through here: on a SmolLM2-135M shape, one thread, decoding in turns in one process, this
 * ran 43.4 tokens per CPU-second (relaxed; 44.3 SIMD128) where 4 rows of B sharing each x load, one accumulator
 * each (gemv_rows_nt_block), ran 24.0 (24.1): ~23 GB/s of weights against ~13. */
static void gemv_row_nt(int N, int K, float alpha, const float *x, const float *B, int ldb, int beta_one, float *C) {
    for (int j = 0; j < N; j++) {
        const float *b = B + (size_t)j * ldb;
        vf a0 = vsplat(0.0f), a1 = a0, a2 = a0, a3 = a0;
        int k = 0;
        for (; k + 16 <= K; k += 16) {
            a0 = vmadd(vld(x + k), vld(b + k), a0);
            a1 = vmadd(vld(x + k + 4), vld(b + k + 4), a1);
            a2 = vmadd(vld(x + k + 8), vld(b + k + 8), a2);
            a3 = vmadd(vld(x + k + 12), vld(b + k + 12), a3);
        }
        for (; k + 4 <= K; k += 4) a0 = vmadd(vld(x + k), vld(b + k), a0);
        float s = vhsum(vadd(vadd(a0, a1), vadd(a2, a3)));
        for (; k < K; k++) s += x[k] * b[k];
        C[j] = beta_one ? C[j] + alpha * s : alpha * s;
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

/* Columns [j0, j0 + nc) of one term added to (beta_one) or written into C, for M <= 3 rows. */
static void gemv_term(const wl_gemm_term *t, int M, int j0, int nc, int beta_one, float *C, int ldc) {
    float *scratch = wl_thread_scratch();
    if (!t->trans_b) {
        size_t sai = t->trans_a ? 1 : (size_t)t->lda, sak = t->trans_a ? (size_t)t->lda : 1;
        for (int n0 = 0; n0 < nc; n0 += WL_GEMV_NCH) {
            int n = nc - n0 < WL_GEMV_NCH ? nc - n0 : WL_GEMV_NCH;
            const float *B = t->B + j0 + n0;
            float *c = C + j0 + n0;
            if (M == 1) gemv_rows_nn(1, n, t->K, t->alpha, t->A, sai, sak, B, t->ldb, beta_one, c, ldc, scratch);
            else if (M == 2) gemv_rows_nn(2, n, t->K, t->alpha, t->A, sai, sak, B, t->ldb, beta_one, c, ldc, scratch);
            else gemv_rows_nn(3, n, t->K, t->alpha, t->A, sai, sak, B, t->ldb, beta_one, c, ldc, scratch);
        }
        return;
    }
    const float *X = t->A;
    size_t ldx = (size_t)t->lda;
    if (t->trans_a) {
        /* A is (K, M): gather the few rows of op(A) so the dot products read contiguous k. */
        float *g = scratch + 3 * WL_GEMV_NCH;
        for (int i = 0; i < M; i++)
            for (int k = 0; k < t->K; k++) g[(size_t)i * t->K + k] = t->A[(size_t)k * t->lda + i];
        X = g;
        ldx = (size_t)t->K;
    }
    const float *B = t->B + (size_t)j0 * t->ldb;
    float *c = C + j0;
    if (M == 1) gemv_row_nt(nc, t->K, t->alpha, X, B, t->ldb, beta_one, c);
    else if (M == 2) gemv_rows_nt(2, 4, nc, t->K, t->alpha, X, ldx, B, t->ldb, beta_one, c, ldc);
    else gemv_rows_nt(3, 3, nc, t->K, t->alpha, X, ldx, B, t->ldb, beta_one, c, ldc);
}

/* ---------------------------------------------------------------------------------------------------------
 * The driver. */

/* How a pass writes C: the first pass starts from add (or nothing), later ones accumulate. */
enum { WRITE_OVER = 0, WRITE_ACC = 1, WRITE_FROM = 2 };

typedef struct gemm_job {
    int M, N, ldc;
    float *C;
    const float *add, *bias;
    int trans_c;           /* computing C^T: tile (i, j) goes to C[j][i] */
    /* the current pass: one k block of one term, over one row block */
    const wl_gemm_term *t;
    int p0, kc;
    int mode;              /* WRITE_* */
    int with_bias;         /* last pass: add the bias */
    int i0, mc;            /* row block */
    const float *apack;    /* packed A of the row block (NULL: each piece packs or reads in place) */
    const float *bpack;    /* packed B of the whole pass (row pieces) or of a column chunk (B not transposed) */
    size_t ps;             /* floats from one packed B panel to the next */
    int jb, nb;            /* the column chunk packed in bpack (B not transposed) */
    int pieces;
    /* GEMV */
    const wl_gemm_term *terms;
    int n_terms;
} gemm_job;

/* Four columns of a tile (v[r]: row r's values there), transposed into C^T: lane q of v[r] goes to c[q ldc + r],
 * added to what is there when acc. Rows 0-3 move as a 4x4 transpose, the rest as lane pairs or lanes. */
static inline __attribute__((always_inline)) void store_columns(float *c, int ldc, const vf *v, int acc) {
    vf col[4];
    transpose4(v[0], v[1], v[2], v[3], &col[0], &col[1], &col[2], &col[3]);
    for (int q = 0; q < 4; q++) {
        float *cq = c + (size_t)q * ldc;
        vst(cq, acc ? vadd(vld(cq), col[q]) : col[q]);
    }
#if WL_MR == 6
    /* (row 4, row 5) of columns 0 and 1, then of columns 2 and 3, as 64-bit lanes. */
    vf lo = wasm_i32x4_shuffle(v[4], v[5], 0, 4, 1, 5), hi = wasm_i32x4_shuffle(v[4], v[5], 2, 6, 3, 7);
    float *c0 = c + 4, *c1 = c + (size_t)ldc + 4, *c2 = c + 2 * (size_t)ldc + 4, *c3 = c + 3 * (size_t)ldc + 4;
    if (acc) {
        lo = vadd(wasm_v128_load64_lane(c1, wasm_v128_load64_zero(c0), 1), lo);
        hi = vadd(wasm_v128_load64_lane(c3, wasm_v128_load64_zero(c2), 1), hi);
    }
    wasm_v128_store64_lane(c0, lo, 0);
    wasm_v128_store64_lane(c1, lo, 1);
    wasm_v128_store64_lane(c2, hi, 0);
    wasm_v128_store64_lane(c3, hi, 1);
#else
    float row4[4];
    vst(row4, v[4]);
    for (int q = 0; q < 4; q++) c[(size_t)q * ldc + 4] = acc ? c[(size_t)q * ldc + 4] + row4[q] : row4[q];
#endif
}

/* A whole tile (WL_MR x 8, alpha applied, row stride WL_NR) to C^T at c = C[j][i], for a short, wide C computed
 * transposed. Value by value, with loops over partial sizes, this store cost 15-20% of a tile of 64 steps of k (a
 * LoRA dA in interleaved samples); transposing in the micro-kernel, from its registers, made V8 spill accumulators in
 * the k loop (39 instructions a step, 11 of them stack accesses, against 29 and 1). */
static void store_whole_tile_transposed(float *c, int ldc, const float *tile, int acc) {
    vf left[WL_MR], right[WL_MR];
    for (int r = 0; r < WL_MR; r++) {
        left[r] = vld(tile + r * WL_NR);
        right[r] = vld(tile + r * WL_NR + 4);
    }
    store_columns(c, ldc, left, acc);
    store_columns(c + 4 * (size_t)ldc, ldc, right, acc);
}

/* Write a tile (mr x nr, alpha applied, row stride WL_NR) to C at (i, j), by the pass's mode. */
static void store_tile(const gemm_job *g, int i, int j, const float *tile, int mr, int nr) {
    if (g->trans_c) {
        if (mr == WL_MR && nr == WL_NR) {
            store_whole_tile_transposed(g->C + (size_t)j * g->ldc + i, g->ldc, tile, g->mode == WRITE_ACC);
            return;
        }
        for (int r = 0; r < mr; r++) {
            for (int q = 0; q < nr; q++) {
                float *c = g->C + (size_t)(j + q) * g->ldc + i + r;
                *c = g->mode == WRITE_ACC ? *c + tile[r * WL_NR + q] : tile[r * WL_NR + q];
            }
        }
        return;
    }
    for (int r = 0; r < mr; r++) {
        float *c = g->C + (size_t)(i + r) * g->ldc + j;
        const float *t = tile + r * WL_NR;
        const float *base = g->mode == WRITE_ACC    ? c
                            : g->mode == WRITE_FROM ? g->add + (size_t)(i + r) * g->ldc + j
                                                    : NULL;
        const float *bias = g->with_bias ? g->bias + j : NULL;
        if (nr == WL_NR) {
            vf v0 = vld(t), v1 = vld(t + 4);
            if (base) {
                v0 = vadd(vld(base), v0);
                v1 = vadd(vld(base + 4), v1);
            }
            if (bias) {
                v0 = vadd(v0, vld(bias));
                v1 = vadd(v1, vld(bias + 4));
            }
            vst(c, v0);
            vst(c + 4, v1);
        } else {
            for (int q = 0; q < nr; q++) {
                float v = base ? base[q] + t[q] : t[q];
                c[q] = bias ? v + bias[q] : v;
            }
        }
    }
}

/* One tile: the micro-kernel straight into C when the tile is whole and the mode allows, else through a tile. */
static void run_tile(const gemm_job *g, int i, int j, int mr, int nr, const float *a, size_t as, const float *b) {
    const int direct = mr == WL_MR && nr == WL_NR && !g->trans_c && !g->with_bias && g->mode != WRITE_FROM;
    if (direct) {
        float *c = g->C + (size_t)i * g->ldc + j;
        if (as == WL_MR) ukernel_packed(g->kc, a, b, c, g->ldc, g->t->alpha, g->mode == WRITE_ACC);
        else ukernel_strided(g->kc, a, as, b, c, g->ldc, g->t->alpha, g->mode == WRITE_ACC);
        return;
    }
    float tile[WL_MR * WL_NR];
    if (as == WL_MR) ukernel_packed(g->kc, a, b, tile, WL_NR, g->t->alpha, 0);
    else ukernel_strided(g->kc, a, as, b, tile, WL_NR, g->t->alpha, 0);
    store_tile(g, i, j, tile, mr, nr);
}

/* Rows [r0, r1) of the row block (multiples of WL_MR from its start) against columns [j0, j1) of packed B
 * panels starting at pb (panel of column j at pb + (j - j0) / 8 * ps). A comes packed (the sliver of row r at
 * pa + (r - r0) * kc) or, when pa is NULL, straight from the transposed operand (a partial last sliver is packed
 * into pack_tail, once for every panel). */
static void run_block(const gemm_job *g, int r0, int r1, int j0, int j1, const float *pa, const float *pb,
                      float *pack_tail) {
    const wl_gemm_term *t = g->t;
    if (r1 <= r0) return;
    const int last = r0 + (r1 - r0 - 1) / WL_MR * WL_MR, last_rows = r1 - last;
    /* Read in place, a partial last sliver would read past the rows: it is packed once (zero padded). */
    if (!pa && last_rows < WL_MR) pack_a(1, t->A, t->lda, g->i0 + last, last_rows, g->p0, g->kc, pack_tail);
    /* A last sliver of 1 or 2 rows goes two panels at a time through ukernel_two_rows, after the others. */
    const int two_rows = last_rows <= 2 && j1 - j0 > WL_NR;
    const int r_end = two_rows ? last : r1;
    for (int jr = j0; jr < j1; jr += WL_NR) {
        const int nr = j1 - jr < WL_NR ? j1 - jr : WL_NR;
        const float *b = pb + (size_t)((jr - j0) / WL_NR) * g->ps;
        for (int r = r0; r < r_end; r += WL_MR) {
            const int mr = r1 - r < WL_MR ? r1 - r : WL_MR, i = g->i0 + r;
            if (pa) run_tile(g, i, jr, mr, nr, pa + (size_t)(r - r0) * g->kc, WL_MR, b);
            else if (mr == WL_MR) run_tile(g, i, jr, mr, nr, t->A + (size_t)g->p0 * t->lda + i, (size_t)t->lda, b);
            else run_tile(g, i, jr, mr, nr, pack_tail, WL_MR, b);
        }
    }
    if (!two_rows) return;
    const int i = g->i0 + last;
    const float *a = pa ? pa + (size_t)(last - r0) * g->kc : pack_tail;
    for (int jr = j0; jr < j1; jr += 2 * WL_NR) {
        const float *b = pb + (size_t)((jr - j0) / WL_NR) * g->ps;
        const int nr = j1 - jr < WL_NR ? j1 - jr : WL_NR;
        if (jr + WL_NR >= j1) {
            run_tile(g, i, jr, last_rows, nr, a, WL_MR, b);
            continue;
        }
        const int nr1 = j1 - jr - WL_NR < WL_NR ? j1 - jr - WL_NR : WL_NR;
        float tile0[2 * WL_NR], tile1[2 * WL_NR];
        ukernel_two_rows(g->kc, a, b, b + g->ps, t->alpha, tile0, tile1);
        store_tile(g, i, jr, tile0, last_rows, nr);
        store_tile(g, i, jr + WL_NR, tile1, last_rows, nr1);
    }
}

/* Task: pack slivers [piece] of the row block into the shared A block. */
static void task_pack_a(void *ctx, int piece) {
    const gemm_job *g = ctx;
    int slivers = (g->mc + WL_MR - 1) / WL_MR, s0, s1;
    wl_split(slivers, g->pieces, piece, &s0, &s1);
    int r0 = s0 * WL_MR, r1 = s1 * WL_MR < g->mc ? s1 * WL_MR : g->mc;
    float *dst = (float *)g->apack + (size_t)r0 * g->kc;
    if (r1 > r0) pack_a(g->t->trans_a, g->t->A, g->t->lda, g->i0 + r0, r1 - r0, g->p0, g->kc, dst);
}

/* Task: columns [piece] (whole panels) of the pass, against the packed A block. */
static void task_columns(void *ctx, int piece) {
    const gemm_job *g = ctx;
    int panels = (g->N + WL_NR - 1) / WL_NR, q0, q1;
    wl_split(panels, g->pieces, piece, &q0, &q1);
    int j1 = q1 * WL_NR < g->N ? q1 * WL_NR : g->N;
    float *bpack = wl_thread_scratch();
    for (int jb = q0 * WL_NR; jb < j1; jb += WL_NB) {
        int nb = j1 - jb < WL_NB ? j1 - jb : WL_NB;
        pack_b(g->t->trans_b, g->t->B, g->t->ldb, jb, nb, g->p0, g->kc, bpack, g->ps);
        run_block(g, 0, g->mc, jb, jb + nb, g->apack, bpack, NULL);
    }
}

/* Task: rows [piece] (whole slivers) of the pass, against the packed B of every column. */
static void task_rows(void *ctx, int piece) {
    const gemm_job *g = ctx;
    int slivers = (g->mc + WL_MR - 1) / WL_MR, s0, s1;
    wl_split(slivers, g->pieces, piece, &s0, &s1);
    int r0 = s0 * WL_MR, r1 = s1 * WL_MR < g->mc ? s1 * WL_MR : g->mc;
    if (r1 <= r0) return;
    float *scratch = wl_thread_scratch() + WL_BPACK_FLOATS;
    const float *pa = NULL;
    if (!g->t->trans_a) {
        pack_a(0, g->t->A, g->t->lda, g->i0 + r0, r1 - r0, g->p0, g->kc, scratch);
        pa = scratch;
    }
    run_block(g, r0, r1, 0, g->N, pa, g->bpack, scratch);
}

/* Task: columns [piece] of every term, M <= 3 rows. */
static void task_gemv(void *ctx, int piece) {
    const gemm_job *g = ctx;
    int panels = (g->N + WL_NR - 1) / WL_NR, q0, q1;
    wl_split(panels, g->pieces, piece, &q0, &q1);
    int j0 = q0 * WL_NR, j1 = q1 * WL_NR < g->N ? q1 * WL_NR : g->N;
    if (j1 <= j0) return;
    int written = g->add == g->C;
    if (g->add && g->add != g->C) {
        for (int i = 0; i < g->M; i++)
            memcpy(g->C + (size_t)i * g->ldc + j0, g->add + (size_t)i * g->ldc + j0, (size_t)(j1 - j0) * sizeof(float));
        written = 1;
    }
    for (int t = 0; t < g->n_terms; t++) {
        if (g->terms[t].K == 0) continue;
        gemv_term(&g->terms[t], g->M, j0, j1 - j0, written, g->C, g->ldc);
        written = 1;
    }
    for (int i = 0; i < g->M; i++) {
        float *c = g->C + (size_t)i * g->ldc + j0;
        if (!written) memset(c, 0, (size_t)(j1 - j0) * sizeof(float));
        if (g->bias)
            for (int j = j0; j < j1; j++) c[j - j0] += g->bias[j];
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Rows in place: C (M, N) = alpha op(A) op(B) (+ add, + bias) with op(A) rows contiguous in k (trans_a = 0) and N
 * at most 16: the LoRA products x A^T and dY B (N = rank). The register tile is the packed GEMM's, WL_MR rows by 8
 * columns, but the rows are read in place: each k step broadcasts the k-th value of WL_MR rows of A (one pointer
 * each, a shared index) against 8 columns of op(B), which is small (K x 16 at most) and packed once, [k][8] per
 * group of 8 columns, zero past N. No packing of A (with 8 or 16 columns a packed copy costs as much as the
 * product), and each C value sums its k in order whatever rows a thread gets. Relaxed-SIMD build only (a multiply
 * then an add needs a 16th register, and the dot products below stay): there the dot products of 2 rows by 4
 * columns have 8 accumulators, and a larger dot tile spills, as V8 loads every plain vector of a step before its
 * multiply-adds, where it places broadcast loads next to their use. In interleaved samples v_proj's dY B (192 steps
 * of k) ran at 0.74-0.78 of the peak as dot products and 0.85-0.92 this way, the other LoRA-factor products at
 * 0.72-0.90 and 0.77-0.97. */

#define WL_ROWS_GROUP WL_NR /* columns per packed group: pack_b's micro-panels */

typedef struct rows_job {
    const wl_gemm_term *terms;
    int n_terms;
    /* term t's op(B), columns 8g..8g+7: wpack[t] + g * K_t * 8, [k][8] */
    const float *wpack[WL_MAX_TERMS];
    int M, N;
    float *C;
    const float *add, *bias;
    int ldc;
    int pieces;
} rows_job;

/* acc[2 r + h] = sum over k < K of a[r * lda + k] * w[8 k + 4 h .. + 3] for r < rows, h < 2. */
static inline __attribute__((always_inline)) void rows_tile(int rows, int K, const float *a, size_t lda,
                                                             const float *restrict w, vf *restrict acc) {
    vf c0[WL_MR], c1[WL_MR];
    const float *row[WL_MR];
    for (int r = 0; r < WL_MR; r++) {
        c0[r] = c1[r] = vsplat(0.0f);
        row[r] = a + (size_t)(r < rows ? r : 0) * lda;
    }
    size_t k = 0;
    const float *w_end = w + (size_t)K * WL_ROWS_GROUP;
    WL_NO_UNROLL
    while (w != w_end) {
        vf b0 = vld(w), b1 = vld(w + 4);
        for (int r = 0; r < WL_MR; r++) {
            if (r >= rows) break;
            vf av = wasm_v128_load32_splat(row[r] + k);
            c0[r] = vmadd(av, b0, c0[r]);
            c1[r] = vmadd(av, b1, c1[r]);
        }
        k++;
        w += WL_ROWS_GROUP;
        WL_OPAQUE_POINTERS(w, k);
    }
    for (int r = 0; r < WL_MR; r++) {
        acc[2 * r] = c0[r];
        acc[2 * r + 1] = c1[r];
    }
}

static __attribute__((noinline)) void rows_full(int K, const float *a, size_t lda, const float *restrict w,
                                                vf *restrict acc) {
    rows_tile(WL_MR, K, a, lda, w, acc);
}

/* The last rows of A (rows < WL_MR): one instance per count, as a count known only at run time puts a branch
 * before every broadcast and spills. */
#define WL_ROWS_PART(n)                                                                                           \
    static __attribute__((noinline)) void rows_part##n(int K, const float *a, size_t lda, const float *restrict w, \
                                                        vf *restrict acc) {                                      \
        rows_tile(n, K, a, lda, w, acc);                                                                          \
    }
WL_ROWS_PART(1)
WL_ROWS_PART(2)
WL_ROWS_PART(3)
WL_ROWS_PART(4)
#if WL_MR > 5
WL_ROWS_PART(5)
#endif

static void rows_part(int rows, int K, const float *a, size_t lda, const float *restrict w, vf *restrict acc) {
    switch (rows) {
    case 1: rows_part1(K, a, lda, w, acc); break;
    case 2: rows_part2(K, a, lda, w, acc); break;
    case 3: rows_part3(K, a, lda, w, acc); break;
    case 4: rows_part4(K, a, lda, w, acc); break;
#if WL_MR > 5
    case 5: rows_part5(K, a, lda, w, acc); break;
#endif
    default: WL_ASSERT(0);
    }
}

/* Task: rows [piece] (whole tiles from row 0), every column group: add, then each term, then the bias, as the other
 * forms sum them, so a term of zeros (a fresh LoRA adapter's) leaves C exactly as without it. */
static void task_rows_in_place(void *ctx, int piece) {
    const rows_job *g = ctx;
    int tiles = (g->M + WL_MR - 1) / WL_MR, t0, t1;
    wl_split(tiles, g->pieces, piece, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        const int i = t * WL_MR, rows = g->M - i < WL_MR ? g->M - i : WL_MR;
        for (int j = 0; j < g->N; j += WL_ROWS_GROUP) {
            const int jn = g->N - j < WL_ROWS_GROUP ? g->N - j : WL_ROWS_GROUP;
            vf sum[2 * WL_MR];
            int first = 1;
            if (g->add) {
                for (int r = 0; r < rows; r++)
                    for (int h = 0; h < 2 && 4 * h < jn; h++) {
                        const float *src = g->add + (size_t)(i + r) * g->ldc + j + 4 * h;
                        sum[2 * r + h] = jn - 4 * h >= 4 ? vld(src) : vld_part(src, (size_t)(jn - 4 * h));
                    }
                first = 0;
            }
            for (int tm = 0; tm < g->n_terms; tm++) {
                const wl_gemm_term *term = &g->terms[tm];
                if (term->K == 0) continue;
                const float *a = term->A + (size_t)i * term->lda;
                const float *w = g->wpack[tm] + (size_t)(j / WL_ROWS_GROUP) * term->K * WL_ROWS_GROUP;
                vf acc[2 * WL_MR];
                if (rows == WL_MR) rows_full(term->K, a, (size_t)term->lda, w, acc);
                else rows_part(rows, term->K, a, (size_t)term->lda, w, acc);
                const vf va = vsplat(term->alpha);
                for (int q = 0; q < 2 * rows; q++) sum[q] = first ? vmul(va, acc[q]) : vadd(sum[q], vmul(va, acc[q]));
                first = 0;
            }
            for (int r = 0; r < rows; r++) {
                for (int h = 0; h < 2 && 4 * h < jn; h++) {
                    const int n = jn - 4 * h < 4 ? jn - 4 * h : 4;
                    vf v = sum[2 * r + h];
                    if (g->bias) v = vadd(v, n == 4 ? vld(g->bias + j + 4 * h) : vld_part(g->bias + j + 4 * h, (size_t)n));
                    float *c = g->C + (size_t)(i + r) * g->ldc + j + 4 * h;
                    if (n == 4) vst(c, v);
                    else vst_part(c, v, (size_t)n);
                }
            }
        }
    }
}

/* The rows-in-place form when it applies (every term with op(A) rows contiguous in k, N at most 16, the packed
 * op(B)s within the scratch); returns whether it ran. */
static int gemm_rows_in_place(int M, int N, const wl_gemm_term *terms, int n_terms, const float *add,
                              const float *bias, float *C, int ldc) {
    if (!WL_SIMD_FUSED || N > 16) return 0;
    rows_job g = {.terms = terms, .n_terms = n_terms, .M = M, .N = N, .C = C, .add = add, .bias = bias, .ldc = ldc};
    const int groups = (N + WL_ROWS_GROUP - 1) / WL_ROWS_GROUP;
    size_t packed = 0;
    long long work = 0;
    for (int t = 0; t < n_terms; t++) {
        if (terms[t].K == 0) continue;
        if (terms[t].trans_a) return 0;
        packed += (size_t)terms[t].K * groups * WL_ROWS_GROUP;
        work += terms[t].K;
    }
    if (packed > WL_SCRATCH_FLOATS) return 0;
    float *wpack = wl_parallel_width() > 1 ? wl_shared_scratch() : wl_thread_scratch();
    for (int t = 0; t < n_terms; t++) {
        const wl_gemm_term *tm = &terms[t];
        if (tm->K == 0) continue;
        g.wpack[t] = wpack;
        pack_b(tm->trans_b, tm->B, tm->ldb, 0, N, 0, tm->K, wpack, (size_t)tm->K * WL_NR);
        wpack += (size_t)tm->K * groups * WL_ROWS_GROUP;
    }
    /* Pieces of about 64k multiply-adds at least. */
    const int tiles = (M + WL_MR - 1) / WL_MR;
    g.pieces = wl_parallel_pieces(tiles, (int)(65536 / ((long long)WL_MR * groups * WL_ROWS_GROUP * work + 1)) + 1);
    wl_parallel_for(g.pieces, task_rows_in_place, &g);
    return 1;
}

/* ---------------------------------------------------------------------------------------------------------
 * Dot products: C (M, N) = alpha op(A) op(B) (+ add, + bias) with op(A) rows contiguous in k (trans_a = 0) and N a
 * multiple of 4 up to 16: the LoRA products x A^T and dY B (N = rank) in the SIMD128 build, where the 5-row form
 * above ran at 0.47-0.56 of the peak and this one at 0.62-0.90. Each C value is a dot product of a row of A,
 * read in place, with a column of op(B). op(B) is small (N x K) and is packed once, 4 columns at a time, with 4
 * consecutive k of each column in one vector ([k / 4][column][4]), so a step of 4 k reads 2 rows of A and the 4
 * columns with 6 plain vector loads at constant offsets and does 8 multiply-adds into 8 accumulators, one per
 * (row, column); at the end a 4x4 transpose and 3 adds turn each row's 4 accumulators into its 4 C values. No packing
 * of A (the packed 6x8 tile spent as long packing A as multiplying with it here: 0.50-0.58 of the peak), and every
 * C value sums its k in the same fixed order whatever the rows a thread gets. */

#define WL_DOT_ROWS 2

typedef struct dot_job {
    const wl_gemm_term *terms;
    int n_terms;
    /* term t's op(B), column group g (columns 4g..4g+3), step s (k = 4s..4s+3): wpack[t] + (g * steps[t] + s) * 16 */
    const float *wpack[WL_MAX_TERMS];
    int steps[WL_MAX_TERMS];
    int M, N;
    float *C;
    const float *add, *bias;
    int ldc;
    int pieces;
} dot_job;

/* out[r] = the dot products of rows r < rows (a + r * lda, K long) with the 4 packed columns at w. */
static inline __attribute__((always_inline)) void dot_tile(int rows, int K, const float *restrict a, size_t lda,
                                                            const float *restrict w, vf *restrict out) {
    vf acc[WL_DOT_ROWS][4];
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = vsplat(0.0f);
    const float *a1 = a + lda;
    const float *w_end = w + (size_t)(K / 4) * 16;
    WL_NO_UNROLL
    while (w != w_end) {
        vf x0 = vld(a), x1 = rows > 1 ? vld(a1) : x0;
        for (int q = 0; q < 4; q++) {
            vf wq = vld(w + 4 * q);
            acc[0][q] = vmadd(x0, wq, acc[0][q]);
            if (rows > 1) acc[1][q] = vmadd(x1, wq, acc[1][q]);
        }
        a += 4;
        a1 += 4;
        w += 16;
    }
    if (K % 4) {
        /* The last k: the packed columns are zero past K, the rows are read only up to K. */
        vf x0 = vld_part(a, (size_t)(K % 4)), x1 = rows > 1 ? vld_part(a1, (size_t)(K % 4)) : x0;
        for (int q = 0; q < 4; q++) {
            vf wq = vld(w + 4 * q);
            acc[0][q] = vmadd(x0, wq, acc[0][q]);
            if (rows > 1) acc[1][q] = vmadd(x1, wq, acc[1][q]);
        }
    }
    for (int r = 0; r < rows; r++) {
        vf t0, t1, t2, t3;
        transpose4(acc[r][0], acc[r][1], acc[r][2], acc[r][3], &t0, &t1, &t2, &t3);
        out[r] = vadd(vadd(t0, t1), vadd(t2, t3));
    }
}

static __attribute__((noinline)) void dot_tile2(int K, const float *restrict a, size_t lda, const float *restrict w,
                                                vf *restrict out) {
    dot_tile(2, K, a, lda, w, out);
}

static __attribute__((noinline)) void dot_tile1(int K, const float *restrict a, const float *restrict w,
                                                vf *restrict out) {
    dot_tile(1, K, a, 0, w, out);
}

/* Task: rows [piece] (whole pairs from row 0), every column group: add, then each term, then the bias, as the
 * other forms sum them, so a term of zeros (a fresh LoRA adapter's) leaves C exactly as without it. */
static void task_dot(void *ctx, int piece) {
    const dot_job *g = ctx;
    int pairs = (g->M + WL_DOT_ROWS - 1) / WL_DOT_ROWS, q0, q1;
    wl_split(pairs, g->pieces, piece, &q0, &q1);
    for (int i = q0 * WL_DOT_ROWS; i < q1 * WL_DOT_ROWS && i < g->M; i += WL_DOT_ROWS) {
        const int rows = g->M - i < WL_DOT_ROWS ? g->M - i : WL_DOT_ROWS;
        for (int j = 0; j < g->N; j += 4) {
            vf sum[WL_DOT_ROWS];
            int first = 1;
            if (g->add) {
                for (int r = 0; r < rows; r++) sum[r] = vld(g->add + (size_t)(i + r) * g->ldc + j);
                first = 0;
            }
            for (int t = 0; t < g->n_terms; t++) {
                const wl_gemm_term *tm = &g->terms[t];
                if (tm->K == 0) continue;
                const float *a = tm->A + (size_t)i * tm->lda;
                const float *w = g->wpack[t] + (size_t)(j / 4) * g->steps[t] * 16;
                vf out[WL_DOT_ROWS];
                if (rows == 2) dot_tile2(tm->K, a, (size_t)tm->lda, w, out);
                else dot_tile1(tm->K, a, w, out);
                const vf va = vsplat(tm->alpha);
                for (int r = 0; r < rows; r++) sum[r] = first ? vmul(va, out[r]) : vadd(sum[r], vmul(va, out[r]));
                first = 0;
            }
            for (int r = 0; r < rows; r++) {
                if (g->bias) sum[r] = vadd(sum[r], vld(g->bias + j));
                vst(g->C + (size_t)(i + r) * g->ldc + j, sum[r]);
            }
        }
    }
}

/* Pack op(B) of a term (K, N) for dot_tile: 4 columns at a time, 4 consecutive k of a column in one vector, zero
 * past K. */
static void pack_dot(const wl_gemm_term *t, int N, int steps, float *restrict wpack) {
    const int kfull = t->K & ~3;
    for (int j0 = 0; j0 < N; j0 += 4) {
        float *dst = wpack + (size_t)(j0 / 4) * steps * 16;
        if (t->trans_b) {
            /* B is (N, K): each column's 4 k are already contiguous. */
            for (int k = 0; k < kfull; k += 4)
                for (int q = 0; q < 4; q++) vst(dst + (size_t)k * 4 + 4 * q, vld(t->B + (size_t)(j0 + q) * t->ldb + k));
        } else {
            /* B is (K, N): transpose 4 k by 4 columns. */
            for (int k = 0; k < kfull; k += 4) {
                const float *b = t->B + (size_t)k * t->ldb + j0;
                vf c0, c1, c2, c3;
                transpose4(vld(b), vld(b + t->ldb), vld(b + 2 * (size_t)t->ldb), vld(b + 3 * (size_t)t->ldb), &c0,
                           &c1, &c2, &c3);
                float *d = dst + (size_t)k * 4;
                vst(d, c0);
                vst(d + 4, c1);
                vst(d + 8, c2);
                vst(d + 12, c3);
            }
        }
        if (kfull < t->K) {
            float *d = dst + (size_t)kfull * 4;
            for (int q = 0; q < 4; q++) {
                for (int l = 0; l < 4; l++) {
                    int k = kfull + l, j = j0 + q;
                    d[4 * q + l] = k >= t->K             ? 0.0f
                                   : t->trans_b ? t->B[(size_t)j * t->ldb + k]
                                                : t->B[(size_t)k * t->ldb + j];
                }
            }
        }
    }
}

/* The dot-product form when it applies (every term with op(A) rows contiguous in k, N a multiple of 4 up to 16, the
 * packed op(B)s within the scratch); returns whether it ran. */
static int gemm_dot(int M, int N, const wl_gemm_term *terms, int n_terms, const float *add, const float *bias,
                    float *C, int ldc) {
    if (N % 4 || N > 16) return 0;
    dot_job g = {.terms = terms, .n_terms = n_terms, .M = M, .N = N, .C = C, .add = add, .bias = bias, .ldc = ldc};
    size_t packed = 0;
    long long work = 0;
    for (int t = 0; t < n_terms; t++) {
        if (terms[t].K == 0) continue;
        if (terms[t].trans_a) return 0;
        g.steps[t] = (terms[t].K + 3) / 4;
        packed += (size_t)g.steps[t] * 4 * N;
        work += terms[t].K;
    }
    if (packed > WL_SCRATCH_FLOATS) return 0;
    float *wpack = wl_parallel_width() > 1 ? wl_shared_scratch() : wl_thread_scratch();
    for (int t = 0; t < n_terms; t++) {
        if (terms[t].K == 0) continue;
        g.wpack[t] = wpack;
        pack_dot(&terms[t], N, g.steps[t], wpack);
        wpack += (size_t)g.steps[t] * 4 * N;
    }
    /* Pieces of about 64k multiply-adds at least. */
    const int pairs = (M + WL_DOT_ROWS - 1) / WL_DOT_ROWS;
    g.pieces = wl_parallel_pieces(pairs, (int)(65536 / ((long long)WL_DOT_ROWS * N * work + 1)) + 1);
    wl_parallel_for(g.pieces, task_dot, &g);
    return 1;
}

/* Column pieces of whole panels with enough work each (about 256k multiply-adds). */
static int column_pieces(int M, int N, int K) {
    long long per_panel = (long long)M * K * WL_NR;
    int grain = (int)(262144 / (per_panel + 1)) + 1;
    return wl_parallel_pieces((N + WL_NR - 1) / WL_NR, grain);
}

/* Pack the row block's A slivers into apack, split over the threads unless the block is too small to split its
 * columns. */
static void pack_a_block(gemm_job *g, float *apack) {
    g->apack = apack;
    const int columns = column_pieces(g->mc, g->N, g->kc);
    g->pieces = columns > 1 ? wl_parallel_pieces((g->mc + WL_MR - 1) / WL_MR, 4) : 1;
    wl_parallel_for(g->pieces, task_pack_a, g);
}

/* Task: rows [piece] of the k block of B (K, N), columns [jb, jb + nb), into the shared panels of the chunk. */
static void task_pack_b_rows(void *ctx, int piece) {
    const gemm_job *g = ctx;
    int k0, k1;
    wl_split(g->kc, g->pieces, piece, &k0, &k1);
    if (k1 > k0)
        pack_b(0, g->t->B, g->t->ldb, g->jb, g->nb, g->p0 + k0, k1 - k0, (float *)g->bpack + (size_t)k0 * WL_NR,
               g->ps);
}

/* Task: panels [piece] of the chunk, against the packed A block. */
static void task_panels(void *ctx, int piece) {
    const gemm_job *g = ctx;
    int q0, q1;
    wl_split((g->nb + WL_NR - 1) / WL_NR, g->pieces, piece, &q0, &q1);
    const int j0 = g->jb + q0 * WL_NR, j1 = g->jb + (q1 * WL_NR < g->nb ? q1 * WL_NR : g->nb);
    if (j1 > j0) run_block(g, 0, g->mc, j0, j1, g->apack, g->bpack + (size_t)q0 * g->ps, NULL);
}

/* Floats from one packed panel of a plain B to the next: kc x 8 and a pad of 16, as kc x 8 floats is a multiple of
 * 4 KB whenever kc is a multiple of 128, and then every panel's row k would share one L1 set. */
static size_t plain_b_panel_stride(int kc) { return (size_t)kc * WL_NR + 16; }

/* One row block of a pass with B (K, N) not transposed, as for an input gradient dY W: B is packed once for all
 * threads, as wide a chunk of columns as the scratch holds beside the A block (all of a 576- or 1536-wide weight
 * at 128 tokens), each row of B read whole, front to back, and dealt out to the chunk's panels, split over rows;
 * then the panels are split over the threads. Packed per column piece, each thread's piece read a 64-384 byte piece of
 * every row and skipped the rest, which the hardware prefetcher follows poorly: with the weight streaming from memory
 * that took 2.7x as long per value as this (a 1536 x 576 weight, one thread). */
static void run_row_block_plain_b(gemm_job *g, int width) {
    float *base = width > 1 ? wl_shared_scratch() : wl_thread_scratch();
    const size_t a_floats = ((size_t)(g->mc + WL_MR - 1) / WL_MR * WL_MR * (size_t)g->kc + 15) & ~(size_t)15;
    pack_a_block(g, base);
    /* Equal chunks of whole panels, as few as fit. */
    g->ps = plain_b_panel_stride(g->kc);
    const int panels = (g->N + WL_NR - 1) / WL_NR;
    const int most = (int)((WL_SCRATCH_FLOATS - a_floats) / g->ps);
    WL_ASSERT(most >= 1);
    const int chunks = (panels + most - 1) / most, chunk = (panels + chunks - 1) / chunks * WL_NR;
    g->bpack = base + a_floats;
    for (g->jb = 0; g->jb < g->N; g->jb += chunk) {
        g->nb = g->N - g->jb < chunk ? g->N - g->jb : chunk;
        g->pieces = wl_parallel_pieces(g->kc, 16);
        wl_parallel_for(g->pieces, task_pack_b_rows, g);
        g->pieces = column_pieces(g->mc, g->nb, g->kc);
        wl_parallel_for(g->pieces, task_panels, g);
    }
}

/* One pass (term t, k block [p0, p0 + kc)) over all rows. */
static void run_pass(gemm_job *g) {
    const int width = wl_parallel_width();
    const int nmb = (g->M + WL_MC - 1) / WL_MC;
    const int mcb = ((g->M + nmb - 1) / nmb + WL_MR - 1) / WL_MR * WL_MR; /* equal row blocks, whole slivers */
    /* A thin C is split over rows (with A read in place when it is transposed); otherwise over columns. */
    const int thin = g->N <= 2 * WL_NR;
    for (g->i0 = 0; g->i0 < g->M; g->i0 += mcb) {
        g->mc = g->M - g->i0 < mcb ? g->M - g->i0 : mcb;
        g->ps = (size_t)g->kc * WL_NR;
        if (!thin && !g->t->trans_b) {
            run_row_block_plain_b(g, width);
            continue;
        }
        if (thin) {
            float *bpack = width > 1 ? wl_shared_scratch() : wl_thread_scratch();
            pack_b(g->t->trans_b, g->t->B, g->t->ldb, 0, g->N, g->p0, g->kc, bpack, g->ps);
            g->bpack = bpack;
            g->pieces = wl_parallel_pieces((g->mc + WL_MR - 1) / WL_MR, 2);
            wl_parallel_for(g->pieces, task_rows, g);
            continue;
        }
        pack_a_block(g, width > 1 ? wl_shared_scratch() : wl_thread_scratch() + WL_BPACK_FLOATS);
        g->pieces = column_pieces(g->mc, g->N, g->kc);
        wl_parallel_for(g->pieces, task_columns, g);
    }
}

/* C, or C^T for a swapped problem, when no term has work: add (or 0) plus bias. */
static void fill(const gemm_job *g) {
    for (int i = 0; i < g->M; i++) {
        float *c = g->C + (size_t)i * g->ldc;
        if (!g->add) memset(c, 0, (size_t)g->N * sizeof(float));
        else if (g->add != g->C) memcpy(c, g->add + (size_t)i * g->ldc, (size_t)g->N * sizeof(float));
        if (g->bias)
            for (int j = 0; j < g->N; j++) c[j] += g->bias[j];
    }
}

/* C (M, N) = ct's transpose (+ C when acc), ct (N, M) row-major: 4x4 blocks as vectors, the edges value by value. */
static void transpose_into(int M, int N, const float *ct, int acc, float *C, int ldc) {
    int i = 0;
    for (; i + 4 <= M; i += 4) {
        int j = 0;
        for (; j + 4 <= N; j += 4) {
            const float *t = ct + (size_t)j * M + i;
            vf row[4];
            transpose4(vld(t), vld(t + M), vld(t + 2 * (size_t)M), vld(t + 3 * (size_t)M), &row[0], &row[1], &row[2],
                       &row[3]);
            for (int q = 0; q < 4; q++) {
                float *c = C + (size_t)(i + q) * ldc + j;
                vst(c, acc ? vadd(vld(c), row[q]) : row[q]);
            }
        }
        for (; j < N; j++)
            for (int q = i; q < i + 4; q++) {
                float *c = C + (size_t)q * ldc + j;
                *c = acc ? *c + ct[(size_t)j * M + q] : ct[(size_t)j * M + q];
            }
    }
    for (; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *c = C + (size_t)i * ldc + j;
            *c = acc ? *c + ct[(size_t)j * M + i] : ct[(size_t)j * M + i];
        }
}

void WL_SIMD_NAME(wl_gemm)(int M, int N, const wl_gemm_term *terms, int n_terms, const float *add, const float *bias,
                           float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    WL_ASSERT(n_terms >= 0 && n_terms <= WL_MAX_TERMS);
    gemm_job g;
    memset(&g, 0, sizeof g);
    g.M = M;
    g.N = N;
    g.C = C;
    g.ldc = ldc;
    g.add = add;
    g.bias = bias;
    int work = 0, gemv = M <= 3;
    for (int t = 0; t < n_terms; t++) {
        work |= terms[t].K > 0;
        if (terms[t].K > 0 && terms[t].trans_a && terms[t].K > WL_GEMV_KMAX) gemv = 0;
    }
    if (!work) {
        fill(&g);
        return;
    }
    if (gemv) {
        g.terms = terms;
        g.n_terms = n_terms;
        g.pieces = wl_parallel_pieces((N + WL_NR - 1) / WL_NR, 8);
        wl_parallel_for(g.pieces, task_gemv, &g);
        return;
    }
    if (gemm_rows_in_place(M, N, terms, n_terms, add, bias, C, ldc)) return;
    if (gemm_dot(M, N, terms, n_terms, add, bias, C, ldc)) return;
    /* A short, wide C is computed as C^T = op(B)^T op(A)^T, which the thin form handles well: M <= 2 WL_MR - 1, or
     * M <= 16 for sums A^T B (the gradient of a LoRA factor A, dA = (dY B)^T X), where the thin form reads B in
     * place. */
    wl_gemm_term swapped[WL_MAX_TERMS];
    int all_at_b = 1;
    for (int t = 0; t < n_terms; t++) all_at_b &= terms[t].trans_a && !terms[t].trans_b;
    if ((M <= 2 * WL_MR - 1 || (all_at_b && M <= 2 * WL_NR)) && N >= 8 * WL_NR && !bias && (!add || add == C)) {
        for (int t = 0; t < n_terms; t++) {
            const wl_gemm_term *s = &terms[t];
            swapped[t] = (wl_gemm_term){s->B, s->A, s->ldb, s->lda, s->K, !s->trans_b, !s->trans_a, s->alpha};
        }
        terms = swapped;
        g.M = N;
        g.N = M;
        g.trans_c = 1;
    }
    /* A^T B swapped this way (dA) is summed as C^T in scratch, written by the micro-kernel as a plain C, and
     * transposed into C once at the end: stored transposed after every k block of WL_KC_STRIDED steps, its tiles
     * ran about 5% slower at 512 tokens. */
    float *ct = NULL;
    if (g.trans_c && all_at_b && (size_t)g.M * (size_t)g.N <= WL_CT_FLOATS) {
        ct = (wl_parallel_width() > 1 ? wl_shared_scratch() : wl_thread_scratch()) + WL_THIN_BPACK_FLOATS;
        g.C = ct;
        g.ldc = g.N;
        g.add = NULL;
        g.trans_c = 0;
    }
    /* Equal k blocks of at most WL_KC, decided by the shape alone; shorter when the thin form reads a transposed
     * A in place, so the rows it strides over stay in L1. */
    int last = -1, last_p0 = 0;
    for (int t = 0; t < n_terms; t++) {
        if (terms[t].K == 0) continue;
        int kmax = g.N <= 2 * WL_NR && terms[t].trans_a ? WL_KC_STRIDED : WL_KC;
        int nkb = (terms[t].K + kmax - 1) / kmax;
        int kcb = (terms[t].K + nkb - 1) / nkb;
        last = t;
        last_p0 = (nkb - 1) * kcb;
    }
    int first = 1;
    for (int t = 0; t < n_terms; t++) {
        const int K = terms[t].K;
        if (K == 0) continue;
        const int kmax = g.N <= 2 * WL_NR && terms[t].trans_a ? WL_KC_STRIDED : WL_KC;
        const int nkb = (K + kmax - 1) / kmax, kcb = (K + nkb - 1) / nkb;
        for (int p0 = 0; p0 < K; p0 += kcb) {
            g.t = &terms[t];
            g.p0 = p0;
            g.kc = K - p0 < kcb ? K - p0 : kcb;
            g.mode = !first ? WRITE_ACC : !g.add ? WRITE_OVER : g.add == C ? WRITE_ACC : WRITE_FROM;
            g.with_bias = bias && t == last && p0 == last_p0;
            run_pass(&g);
            first = 0;
        }
    }
    if (ct) transpose_into(M, N, ct, add != NULL, C, ldc);
}

/* For the benchmarks: pack all of op(B) (K, N) as the GEMM does, k block by k block, each into dst in turn (at least
 * WL_KC x (N rounded up to 8) + 16 floats per 8 columns). Its time next to the GEMM's bounds what pre-packing a frozen
 * weight could save (in training steps, nothing measurable: see the top of this file). */
void WL_SIMD_NAME(wl_gemm_pack_b)(int trans_b, const float *B, int ldb, int N, int K, float *dst) {
    const int nkb = (K + WL_KC - 1) / WL_KC, kcb = nkb ? (K + nkb - 1) / nkb : 0;
    for (int p0 = 0; p0 < K; p0 += kcb) {
        const int kc = K - p0 < kcb ? K - p0 : kcb;
        if (!trans_b) {
            pack_b(0, B, ldb, 0, N, p0, kc, dst, plain_b_panel_stride(kc));
            continue;
        }
        for (int jb = 0; jb < N; jb += WL_NB) {
            int nb = N - jb < WL_NB ? N - jb : WL_NB;
            pack_b(1, B, ldb, jb, nb, p0, kc, dst + (size_t)jb * kc, (size_t)kc * WL_NR);
        }
    }
}
