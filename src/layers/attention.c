/* attention.c: causal multi-head self-attention with grouped KV heads, forward and backward, written as
 * per-head GEMMs plus a row softmax so both run on the SIMD GEMM kernel. Backward recomputes the probabilities
 * of one head at a time instead of keeping (B, H, T, T) of them from the forward pass.
 *
 * Causality: a head's queries go in blocks of WL_ATTENTION_ROWS, and a block whose last query sits at position p
 * only computes scores against keys 0..p (and the products that follow only run over those), so the work is about
 * half of the full T x T and the scratch holds one block's rows instead of all T.
 *
 * Threads: the forward pass gives each (sequence, head) to a task, the backward pass each (sequence, KV head)
 * with the query heads sharing it in order, so the sums into a KV head's gradients keep one order. Each task
 * works in its own slice of the scratch; when the scratch has fewer slices than threads (a long prefill), the
 * heads run one after another and the GEMMs inside spread over the threads instead. Both ways compute the same
 * numbers. */
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "core/parallel.h"
#include "layers/layers.h"

/* P = softmax_causal(scale * Q_h K_h^T), (T, Tk). */
static void head_probs(const wl_kernels *k, float *P, const float *qh, int qd, const float *kh, int kvd, int T, int Tk,
                       int pos0, int hs, float scale) {
    wl_sgemm(k, 0, 1, T, Tk, hs, scale, qh, qd, kh, kvd, 0.0f, P, Tk);
    k->softmax_causal(P, T, Tk, pos0);
}

size_t wl_attention_scratch_floats(int T, int Tk) {
    const size_t rows = (size_t)(T < WL_ATTENTION_ROWS ? T : WL_ATTENTION_ROWS);
    size_t floats;
    return wl_mul_size(2 * rows, (size_t)Tk, &floats) ? floats : SIZE_MAX;
}

typedef struct attn_job {
    const wl_kernels *k;
    float *out, *dq, *dk, *dv, *scratch;
    const float *q, *k_cache, *v_cache, *dout;
    int B, T, Tk, pos0, H, Hkv, hs;
    size_t slice; /* floats of scratch per task; 0: one slice, tasks run in order */
} attn_job;

static float *slice_of(const attn_job *j) { return j->scratch + (j->slice ? (size_t)wl_thread_self() * j->slice : 0); }

/* Task b * H + h: O_h = softmax(scale Q_h K^T) V for sequence b, query head h, a block of queries at a time. */
static void forward_head(void *ctx, int task) {
    const attn_job *j = ctx;
    const int b = task / j->H, h = task % j->H;
    const int qd = j->H * j->hs, kvd = j->Hkv * j->hs, kvh = h / (j->H / j->Hkv);
    const float scale = 1.0f / sqrtf((float)j->hs);
    const float *qb = j->q + (size_t)b * j->T * qd + h * j->hs;
    const float *kb = j->k_cache + (size_t)b * j->T * kvd + kvh * j->hs;
    const float *vb = j->v_cache + (size_t)b * j->T * kvd + kvh * j->hs;
    float *ob = j->out + (size_t)b * j->T * qd + h * j->hs;
    float *P = slice_of(j);
    for (int r0 = 0; r0 < j->T; r0 += WL_ATTENTION_ROWS) {
        const int rows = j->T - r0 < WL_ATTENTION_ROWS ? j->T - r0 : WL_ATTENTION_ROWS;
        const int keys = j->pos0 + r0 + rows; /* the block's last query sees keys 0 .. keys-1 */
        head_probs(j->k, P, qb + (size_t)r0 * qd, qd, kb, kvd, rows, keys, j->pos0 + r0, j->hs, scale);
        /* O_h = P V_h  (rows, hs) */
        wl_sgemm(j->k, 0, 0, rows, j->hs, keys, 1.0f, P, keys, vb, kvd, 0.0f, ob + (size_t)r0 * qd, qd);
    }
}

/* Slices of `need` floats the scratch holds, or 0 when there are fewer than the threads (run tasks in order). */
static size_t slice_for(size_t scratch_floats, size_t need) {
    int width = wl_parallel_width();
    return width > 1 && need > 0 && scratch_floats / need >= (size_t)width ? need : 0;
}

void wl_attention_forward(const wl_kernels *k, float *out, float *scores, size_t scores_floats, const float *q,
                          const float *k_cache, const float *v_cache, int B, int T, int pos0, int H, int Hkv, int hs) {
    attn_job j = {.k = k, .out = out, .scratch = scores, .q = q, .k_cache = k_cache, .v_cache = v_cache, .B = B,
                  .T = T, .Tk = pos0 + T, .pos0 = pos0, .H = H, .Hkv = Hkv, .hs = hs};
    const size_t need = wl_attention_scratch_floats(T, j.Tk);
    WL_ASSERT(scores_floats >= need);
    j.slice = slice_for(scores_floats, need);
    if (j.slice) {
        wl_parallel_for(B * H, forward_head, &j);
    } else {
        for (int t = 0; t < B * H; t++) forward_head(&j, t);
    }
}

/* Task b * Hkv + g: the query heads of KV head g in sequence b, in order. */
static void backward_group(void *ctx, int task) {
    const attn_job *j = ctx;
    const int b = task / j->Hkv, kvh = task % j->Hkv, group = j->H / j->Hkv, T = j->T, hs = j->hs;
    const int qd = j->H * hs, kvd = j->Hkv * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const float *qb = j->q + (size_t)b * T * qd;
    const float *kb = j->k_cache + (size_t)b * T * kvd + kvh * hs;
    const float *vb = j->v_cache + (size_t)b * T * kvd + kvh * hs;
    const float *gb = j->dout + (size_t)b * T * qd;
    float *dqb = j->dq + (size_t)b * T * qd;
    float *dkb = j->dk + (size_t)b * T * kvd + kvh * hs;
    float *dvb = j->dv + (size_t)b * T * kvd + kvh * hs;
    float *P = slice_of(j), *dS = P + wl_attention_scratch_floats(T, T) / 2;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int r0 = 0; r0 < T; r0 += WL_ATTENTION_ROWS) {
            const int rows = T - r0 < WL_ATTENTION_ROWS ? T - r0 : WL_ATTENTION_ROWS, keys = r0 + rows;
            const float *qr = qb + (size_t)r0 * qd + h * hs, *gr = gb + (size_t)r0 * qd + h * hs;
            head_probs(j->k, P, qr, qd, kb, kvd, rows, keys, r0, hs, scale);
            /* O = P V  =>  dP = dO V^T, dV += P^T dO */
            wl_sgemm(j->k, 0, 1, rows, keys, hs, 1.0f, gr, qd, vb, kvd, 0.0f, dS, keys);
            wl_sgemm(j->k, 1, 0, keys, hs, rows, 1.0f, P, keys, gr, qd, 1.0f, dvb, kvd);
            /* P = softmax(S)  =>  dS = P (dP - rowsum(dP P)) */
            j->k->softmax_backward(dS, P, rows, keys, r0);
            /* S = scale Q K^T  =>  dQ = scale dS K, dK += scale dS^T Q */
            wl_sgemm(j->k, 0, 0, rows, hs, keys, scale, dS, keys, kb, kvd, 0.0f, dqb + (size_t)r0 * qd + h * hs, qd);
            wl_sgemm(j->k, 1, 0, keys, hs, rows, scale, dS, keys, qr, qd, 1.0f, dkb, kvd);
        }
    }
}

void wl_attention_backward(const wl_kernels *k, float *dq, float *dk, float *dv, float *scratch, size_t scratch_floats,
                           const float *dout, const float *q, const float *k_cache, const float *v_cache, int B, int T,
                           int H, int Hkv, int hs) {
    attn_job j = {.k = k, .dq = dq, .dk = dk, .dv = dv, .scratch = scratch, .q = q, .k_cache = k_cache,
                  .v_cache = v_cache, .dout = dout, .B = B, .T = T, .Tk = T, .H = H, .Hkv = Hkv, .hs = hs};
    memset(dk, 0, (size_t)B * T * Hkv * hs * sizeof(float));
    memset(dv, 0, (size_t)B * T * Hkv * hs * sizeof(float));
    const size_t need = wl_attention_scratch_floats(T, T);
    WL_ASSERT(scratch_floats >= need);
    j.slice = slice_for(scratch_floats, need);
    if (j.slice) {
        wl_parallel_for(B * Hkv, backward_group, &j);
    } else {
        for (int t = 0; t < B * Hkv; t++) backward_group(&j, t);
    }
}
