/* attention.c: causal multi-head self-attention with grouped KV heads, forward and backward, written as
 * per-head GEMMs plus a row softmax so both run on the SIMD GEMM kernel. */
#include <math.h>
#include <string.h>

#include "layers/layers.h"

void wl_attention_forward(const wl_kernels *k, float *out, float *probs, float *scores, const float *q,
                          const float *k_cache, const float *v_cache, int B, int T, int pos0, int Tcap, int H,
                          int Hkv, int hs) {
    const int Tk = pos0 + T, qd = H * hs, kvd = Hkv * hs, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++) {
        const float *qb = q + (size_t)b * T * qd;
        const float *kb = k_cache + (size_t)b * Tcap * kvd;
        const float *vb = v_cache + (size_t)b * Tcap * kvd;
        float *ob = out + (size_t)b * T * qd;
        for (int h = 0; h < H; h++) {
            const int kvh = h / group;
            float *S = probs ? probs + ((size_t)b * H + h) * T * Tk : scores + (size_t)h * T * Tk;
            /* S = scale * Q_h K_h^T  (T, Tk), then the causal softmax row by row */
            k->sgemm(0, 1, T, Tk, hs, scale, qb + h * hs, qd, kb + kvh * hs, kvd, 0.0f, S, Tk);
            k->softmax_causal(S, T, Tk, pos0);
            /* O_h = P V_h  (T, hs) */
            k->sgemm(0, 0, T, hs, Tk, 1.0f, S, Tk, vb + kvh * hs, kvd, 0.0f, ob + h * hs, qd);
        }
    }
}

void wl_attention_backward(const wl_kernels *k, float *dq, float *dk, float *dv, float *d_scores, const float *dout,
                           const float *probs, const float *q, const float *k_cache, const float *v_cache, int B,
                           int T, int Tcap, int H, int Hkv, int hs) {
    const int qd = H * hs, kvd = Hkv * hs, group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)hs);
    memset(dk, 0, (size_t)B * T * kvd * sizeof(float));
    memset(dv, 0, (size_t)B * T * kvd * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float *qb = q + (size_t)b * T * qd;
        const float *kb = k_cache + (size_t)b * Tcap * kvd;
        const float *vb = v_cache + (size_t)b * Tcap * kvd;
        const float *gb = dout + (size_t)b * T * qd;
        float *dqb = dq + (size_t)b * T * qd;
        float *dkb = dk + (size_t)b * T * kvd;
        float *dvb = dv + (size_t)b * T * kvd;
        for (int h = 0; h < H; h++) {
            const int kvh = h / group;
            const float *P = probs + ((size_t)b * H + h) * T * T;
            /* O = P V  =>  dP = dO V^T, dV += P^T dO */
            k->sgemm(0, 1, T, T, hs, 1.0f, gb + h * hs, qd, vb + kvh * hs, kvd, 0.0f, d_scores, T);
            k->sgemm(1, 0, T, hs, T, 1.0f, P, T, gb + h * hs, qd, 1.0f, dvb + kvh * hs, kvd);
            /* P = softmax(S)  =>  dS = P (dP - rowsum(dP P)) */
            k->softmax_backward(d_scores, P, T, T, 0);
            /* S = scale Q K^T  =>  dQ = scale dS K, dK += scale dS^T Q */
            k->sgemm(0, 0, T, hs, T, scale, d_scores, T, kb + kvh * hs, kvd, 0.0f, dqb + h * hs, qd);
            k->sgemm(1, 0, T, hs, T, scale, d_scores, T, qb + h * hs, qd, 1.0f, dkb + kvh * hs, kvd);
        }
    }
}
