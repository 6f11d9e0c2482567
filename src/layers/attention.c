/* attention.c: causal multi-head self-attention with grouped KV heads, forward and backward, written as
 * per-head GEMMs plus a row softmax so both run on the SIMD GEMM kernel. Backward recomputes the probabilities
 * of one head at a time instead of keeping (B, H, T, T) of them from the forward pass. */
#include <math.h>
#include <string.h>

#include "layers/layers.h"

/* P = softmax_causal(scale * Q_h K_h^T), (T, Tk). */
static void head_probs(const wl_kernels *k, float *P, const float *qh, int qd, const float *kh, int kvd, int T, int Tk,
                       int pos0, int hs, float scale) {
    k->sgemm(0, 1, T, Tk, hs, scale, qh, qd, kh, kvd, 0.0f, P, Tk);
    k->softmax_causal(P, T, Tk, pos0);
}

void wl_attention_forward(const wl_kernels *k, float *out, float *scores, const float *q, const float *k_cache,
                          const float *v_cache, int B, int T, int pos0, int H, int Hkv, int hs) {
    const int Tk = pos0 + T, qd = H * hs, kvd = Hkv * hs, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++) {
        const float *qb = q + (size_t)b * T * qd;
        const float *kb = k_cache + (size_t)b * T * kvd;
        const float *vb = v_cache + (size_t)b * T * kvd;
        float *ob = out + (size_t)b * T * qd;
        for (int h = 0; h < H; h++) {
            const int kvh = h / group;
            head_probs(k, scores, qb + h * hs, qd, kb + kvh * hs, kvd, T, Tk, pos0, hs, scale);
            /* O_h = P V_h  (T, hs) */
            k->sgemm(0, 0, T, hs, Tk, 1.0f, scores, Tk, vb + kvh * hs, kvd, 0.0f, ob + h * hs, qd);
        }
    }
}

void wl_attention_backward(const wl_kernels *k, float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *q, const float *k_cache, const float *v_cache, int B, int T, int H, int Hkv,
                           int hs) {
    const int qd = H * hs, kvd = Hkv * hs, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)hs);
    float *P = scratch, *dS = scratch + (size_t)T * T;
    memset(dk, 0, (size_t)B * T * kvd * sizeof(float));
    memset(dv, 0, (size_t)B * T * kvd * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float *qb = q + (size_t)b * T * qd;
        const float *kb = k_cache + (size_t)b * T * kvd;
        const float *vb = v_cache + (size_t)b * T * kvd;
        const float *gb = dout + (size_t)b * T * qd;
        float *dqb = dq + (size_t)b * T * qd;
        float *dkb = dk + (size_t)b * T * kvd;
        float *dvb = dv + (size_t)b * T * kvd;
        for (int h = 0; h < H; h++) {
            const int kvh = h / group;
            head_probs(k, P, qb + h * hs, qd, kb + kvh * hs, kvd, T, T, 0, hs, scale);
            /* O = P V  =>  dP = dO V^T, dV += P^T dO */
            k->sgemm(0, 1, T, T, hs, 1.0f, gb + h * hs, qd, vb + kvh * hs, kvd, 0.0f, dS, T);
            k->sgemm(1, 0, T, hs, T, 1.0f, P, T, gb + h * hs, qd, 1.0f, dvb + kvh * hs, kvd);
            /* P = softmax(S)  =>  dS = P (dP - rowsum(dP P)) */
            k->softmax_backward(dS, P, T, T, 0);
            /* S = scale Q K^T  =>  dQ = scale dS K, dK += scale dS^T Q */
            k->sgemm(0, 0, T, hs, T, scale, dS, T, kb + kvh * hs, kvd, 0.0f, dqb + h * hs, qd);
            k->sgemm(1, 0, T, hs, T, scale, dS, T, qb + h * hs, qd, 1.0f, dkb + kvh * hs, kvd);
        }
    }
}
