/* optim.c: AdamW and SGD steps, and the reductions a training loop needs, over flat f32 buffers. Elementwise
 * updates run on element ranges in parallel; the sum of squares adds fixed chunks in a fixed order, so every
 * result is the same for any number of threads. */
#include <math.h>

#include "core/core.h"
#include "core/parallel.h"
#include "wl_optim.h"

/* Elements per chunk of a reduction (doubled for very long buffers), whatever the threads. */
#define WL_REDUCE_CHUNK 8192

typedef struct flat_job {
    size_t n;
    int pieces, op;
    float *p, *m, *v;
    const float *g;
    float lr, beta1, beta2, eps, step_size, bc2_sqrt, decay, scale;
    size_t chunk;
    double *partial; /* one per chunk */
    int *finite;     /* one per piece */
} flat_job;

enum { OP_ADAMW, OP_SGD, OP_SCALE, OP_SUMSQ, OP_FINITE };

static void range(const flat_job *j, int piece, size_t *b, size_t *e) {
    *b = j->n * (size_t)piece / (size_t)j->pieces;
    *e = j->n * (size_t)(piece + 1) / (size_t)j->pieces;
}

static void flat_task(void *ctx, int piece) {
    const flat_job *j = ctx;
    size_t b, e;
    if (j->op == OP_SUMSQ) {
        /* Pieces are whole chunks here: piece p sums chunks [c0, c1) into their own slots. */
        size_t chunks = (j->n + j->chunk - 1) / j->chunk;
        size_t c0 = chunks * (size_t)piece / (size_t)j->pieces, c1 = chunks * (size_t)(piece + 1) / (size_t)j->pieces;
        for (size_t c = c0; c < c1; c++) {
            size_t i0 = c * j->chunk, i1 = i0 + j->chunk < j->n ? i0 + j->chunk : j->n;
            double s = 0.0;
            for (size_t i = i0; i < i1; i++) s += (double)j->g[i] * j->g[i];
            j->partial[c] = s;
        }
        return;
    }
    range(j, piece, &b, &e);
    switch (j->op) {
    case OP_ADAMW:
        for (size_t i = b; i < e; i++) {
            float gi = j->g[i];
            j->m[i] = j->beta1 * j->m[i] + (1.0f - j->beta1) * gi;
            j->v[i] = j->beta2 * j->v[i] + (1.0f - j->beta2) * gi * gi;
            float denom = sqrtf(j->v[i]) / j->bc2_sqrt + j->eps;
            j->p[i] = j->p[i] * j->decay - j->step_size * j->m[i] / denom;
        }
        break;
    case OP_SGD:
        for (size_t i = b; i < e; i++) j->p[i] -= j->lr * j->g[i];
        break;
    case OP_SCALE:
        for (size_t i = b; i < e; i++) j->p[i] *= j->scale;
        break;
    case OP_FINITE: {
        int ok = 1;
        for (size_t i = b; i < e && ok; i++) ok = isfinite(j->g[i]);
        j->finite[piece] = ok;
        break;
    }
    }
}

static void run(flat_job *j) {
    j->pieces = wl_parallel_pieces(j->n > 0x7fffffff ? 0x7fffffff : (int)j->n, 16384);
    wl_parallel_for(j->pieces, flat_task, j);
}

wl_status wl_adamw_step(const wl_adamw *o, int64_t step, float *p, const float *g, float *m, float *v, size_t n) {
    if (!o || (n && (!p || !g || !m || !v))) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adamw_step: NULL argument");
    if (step < 1)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_adamw_step: step %lld must start at 1", (long long)step);
    if (!isfinite(o->lr) || !(o->beta1 >= 0.0f && o->beta1 < 1.0f) || !(o->beta2 >= 0.0f && o->beta2 < 1.0f) ||
        !(o->eps > 0.0f) || !isfinite(o->weight_decay))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "AdamW: lr %g, betas (%g, %g), eps %g, weight decay %g out of range",
                       (double)o->lr, (double)o->beta1, (double)o->beta2, (double)o->eps, (double)o->weight_decay);
    /* torch.optim.AdamW: p *= 1 - lr*wd; m, v moments; p -= lr * m_hat / (sqrt(v_hat) + eps) */
    const double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
    flat_job j = {.n = n, .op = OP_ADAMW, .p = p, .m = m, .v = v, .g = g, .beta1 = o->beta1, .beta2 = o->beta2,
                  .eps = o->eps, .step_size = (float)(o->lr / bc1), .bc2_sqrt = (float)sqrt(bc2),
                  .decay = 1.0f - o->lr * o->weight_decay};
    run(&j);
    return WL_OK;
}

wl_status wl_sgd_step(float lr, float *p, const float *g, size_t n) {
    if (n && (!p || !g)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_sgd_step: NULL argument");
    if (!isfinite(lr)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "SGD: learning rate is not finite");
    flat_job j = {.n = n, .op = OP_SGD, .p = p, .g = g, .lr = lr};
    run(&j);
    return WL_OK;
}

double wl_sum_squares(const float *g, size_t n) {
    /* Chunk sums go in the calling thread's scratch (one double per chunk), then add up in chunk order. */
    size_t chunk = WL_REDUCE_CHUNK;
    while ((n + chunk - 1) / chunk > WL_SCRATCH_FLOATS / 2) chunk *= 2;
    size_t chunks = (n + chunk - 1) / chunk;
    double *partial = (double *)wl_thread_scratch();
    flat_job j = {.n = n, .op = OP_SUMSQ, .g = g, .chunk = chunk, .partial = partial};
    j.pieces = wl_parallel_pieces(chunks > 0x7fffffff ? 0x7fffffff : (int)chunks, 2);
    wl_parallel_for(j.pieces, flat_task, &j);
    double s = 0.0;
    for (size_t c = 0; c < chunks; c++) s += partial[c];
    return s;
}

void wl_scale(float *g, size_t n, float s) {
    flat_job j = {.n = n, .op = OP_SCALE, .p = g, .scale = s};
    run(&j);
}

int wl_all_finite(const float *x, size_t n) {
    int finite[WL_MAX_THREADS * WL_PIECES_PER_THREAD];
    flat_job j = {.n = n, .op = OP_FINITE, .g = x, .finite = finite};
    run(&j);
    int ok = 1;
    for (int p = 0; p < j.pieces; p++) ok &= finite[p];
    return ok;
}
