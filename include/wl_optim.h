/* wl_optim.h: optimizers over flat f32 buffers (an adapter's or a model's parameters and gradients).
 *
 * The training loop (in JavaScript) owns the schedule, gradient accumulation and clipping decisions; these
 * functions are the flat loops it calls. State buffers (m, v) are owned by the caller.
 */
#ifndef WL_OPTIM_H
#define WL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "wl_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* AdamW as torch.optim.AdamW (decoupled weight decay: p -= lr * wd * p before the Adam update).
 * step is the 1-based step count used for bias correction. */
typedef struct wl_adamw {
    float lr, beta1, beta2, eps, weight_decay;
} wl_adamw;
wl_status wl_adamw_step(const wl_adamw *opt, int64_t step, float *params, const float *grads, float *m, float *v,
                        size_t n);

/* Plain SGD: p -= lr * g. */
wl_status wl_sgd_step(float lr, float *params, const float *grads, size_t n);

/* Sum of squares of g (accumulated in double). */
double wl_sum_squares(const float *g, size_t n);
/* g *= s. */
void wl_scale(float *g, size_t n, float s);
/* 1 if every value is finite. */
int wl_all_finite(const float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
