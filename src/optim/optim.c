/* optim.c: AdamW and SGD steps, and the reductions a training loop needs, over flat f32 buffers. */
#include <math.h>

#include "core/core.h"
#include "wl_optim.h"

wl_status wl_adamw_step(const wl_adamw *o, int64_t step, float *p, const float *g, float *m, float *v, size_t n) {
    if (!o || (n && (!p || !g || !m || !v))) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adamw_step: NULL argument");
    if (step < 1) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adamw_step: step %lld must start at 1", (long long)step);
    if (!isfinite(o->lr) || !(o->beta1 >= 0.0f && o->beta1 < 1.0f) || !(o->beta2 >= 0.0f && o->beta2 < 1.0f) ||
        !(o->eps > 0.0f) || !isfinite(o->weight_decay))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "AdamW: lr %g, betas (%g, %g), eps %g, weight decay %g out of range",
                       (double)o->lr, (double)o->beta1, (double)o->beta2, (double)o->eps, (double)o->weight_decay);
    /* torch.optim.AdamW: p *= 1 - lr*wd; m, v moments; p -= lr * m_hat / (sqrt(v_hat) + eps) */
    const double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
    const float step_size = (float)(o->lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - o->lr * o->weight_decay;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        m[i] = o->beta1 * m[i] + (1.0f - o->beta1) * gi;
        v[i] = o->beta2 * v[i] + (1.0f - o->beta2) * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + o->eps;
        p[i] = p[i] * decay - step_size * m[i] / denom;
    }
    return WL_OK;
}

wl_status wl_sgd_step(float lr, float *p, const float *g, size_t n) {
    if (n && (!p || !g)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_sgd_step: NULL argument");
    if (!isfinite(lr)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "SGD: learning rate is not finite");
    for (size_t i = 0; i < n; i++) p[i] -= lr * g[i];
    return WL_OK;
}

double wl_sum_squares(const float *g, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

void wl_scale(float *g, size_t n, float s) {
    for (size_t i = 0; i < n; i++) g[i] *= s;
}

int wl_all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return 0;
    }
    return 1;
}
