/* test_threads.c: the thread pool (POSIX threads here) and the promise that results are bit-identical for any
 * number of threads. The pool: every task runs exactly once, nested parallel-fors run inline, thread identities
 * and scratch are per thread, thousands of back-to-back regions and restarts. Then every parallel kernel path
 * (GEMM column and row splits, the transposed form, GEMV, terms with a residual and a bias, row and elementwise
 * kernels, the optimizer's reductions) and whole training runs of Llama and GPT-2 models with LoRA (with and
 * without dropout) are compared byte for byte between 1, 2, 3 and 4 threads, for both kernel tables. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_fixture.h"
#include "core/parallel.h"
#include "kernels/kernels.h"
#include "testutil.h"
#include "weblora.h"
#include "wl_threads.h"

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------------------------------------------------------
 * The pool. */

typedef struct count_job {
    _Atomic int *hits;
    _Atomic int seen_threads;
    _Atomic int nested_ok;
    _Atomic int scratch_ok;
    float *_Atomic scratch_of[WL_MAX_THREADS]; /* the first scratch pointer each thread reported */
    int inner;
} count_job;

static void inner_task(void *ctx, int t) {
    /* Runs inline on the caller's thread: the outer task's thread writes all of it. */
    int *marks = ctx;
    marks[t] = wl_thread_self() + 1;
}

static void count_task(void *ctx, int t) {
    count_job *j = ctx;
    atomic_fetch_add(&j->hits[t], 1);
    int self = wl_thread_self();
    atomic_fetch_or(&j->seen_threads, 1 << self);
    if (wl_parallel_width() != 1) atomic_store(&j->nested_ok, 0);
    float *s = wl_thread_scratch(), *first = NULL;
    if (!atomic_compare_exchange_strong(&j->scratch_of[self], &first, s) && first != s) atomic_store(&j->scratch_ok, 0);
    if (j->inner) {
        int marks[7] = {0};
        wl_parallel_for(7, inner_task, marks);
        for (int i = 0; i < 7; i++)
            if (marks[i] != self + 1) atomic_store(&j->nested_ok, 0);
    }
}

static void test_pool(int threads) {
    CHECK_OK(wl_threads_start(threads));
    CHECK(wl_threads_count() == threads);
    count_job j;
    memset(&j, 0, sizeof j);
    const int n = 1000;
    j.hits = calloc(n, sizeof(_Atomic int));
    j.nested_ok = 1;
    j.scratch_ok = 1;
    j.inner = 1;
    /* Back-to-back regions, as the kernels issue them. */
    for (int region = 0; region < 2000; region++) wl_parallel_for(region % 2 ? n : 3, count_task, &j);
    int bad = 0;
    for (int t = 0; t < n; t++) {
        int want = t < 3 ? 2000 : 1000;
        if (atomic_load(&j.hits[t]) != want) bad++;
    }
    CHECK_MSG(!bad, "%d threads: %d tasks did not run exactly once per region", threads, bad);
    CHECK_MSG(atomic_load(&j.nested_ok), "%d threads: nested parallel-for did not run inline on the task's thread",
              threads);
    CHECK_MSG(atomic_load(&j.scratch_ok), "%d threads: a thread saw another thread's scratch", threads);
    /* On a loaded machine the workers may not have been scheduled during those regions: run more until one joins
     * (waiting for that state, not for a time), so a pool whose workers never run still fails. */
    for (int more = 0; threads > 1 && atomic_load(&j.seen_threads) == 1 && more < 100000; more++)
        wl_parallel_for(n, count_task, &j);
    int seen = atomic_load(&j.seen_threads);
    CHECK_MSG((seen & ~((1 << threads) - 1)) == 0, "%d threads: thread index out of range (mask %x)", threads, seen);
    if (threads > 1) CHECK_MSG(seen != 1, "%d threads: only thread 0 ever ran a task", threads);
    int distinct = 1;
    for (int a = 0; a < threads; a++)
        for (int b = a + 1; b < threads; b++)
            if (j.scratch_of[a] && j.scratch_of[a] == j.scratch_of[b]) distinct = 0;
    CHECK_MSG(distinct, "%d threads: two threads share scratch", threads);
    CHECK(wl_threads_running() == threads - 1);
    free(j.hits);
    wl_threads_stop();
    CHECK(wl_threads_count() == 1 && wl_threads_running() == 0);
    /* Serial again: everything on the calling thread, in order. */
    int marks[5] = {0};
    wl_parallel_for(5, inner_task, marks);
    CHECK(marks[0] == 1 && marks[4] == 1);
}

static void test_pool_errors(void) {
    CHECK_STATUS(wl_threads_init(0), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_threads_init(WL_MAX_THREADS + 1), WL_STATUS_INVALID_ARGUMENT);
    CHECK(wl_thread_stack(1) == NULL);
}

/* ------------------------------------------------------------------------------------------------------------
 * Kernels: outputs for 1 thread are the reference; 2, 3 and 4 threads must match them byte for byte. */

#define MAX_OUT 32
typedef struct outputs {
    int n;
    float *buf[MAX_OUT];
    size_t len[MAX_OUT];
    const char *name[MAX_OUT];
} outputs;

static void keep(outputs *o, const char *name, const float *x, size_t n) {
    if (o->n == MAX_OUT) {
        fprintf(stderr, "test_threads: more than %d outputs\n", MAX_OUT);
        exit(2);
    }
    o->buf[o->n] = falloc(n);
    memcpy(o->buf[o->n], x, n * sizeof(float));
    o->len[o->n] = n;
    o->name[o->n] = name;
    o->n++;
}

static void compare(const char *what, int threads, const outputs *ref, const outputs *got) {
    CHECK_MSG(ref->n == got->n, "%s: %d outputs vs %d", what, got->n, ref->n);
    for (int i = 0; i < ref->n && i < got->n; i++) {
        size_t first = ref->len[i];
        for (size_t e = 0; e < ref->len[i]; e++) {
            if (memcmp(&ref->buf[i][e], &got->buf[i][e], sizeof(float)) != 0) {
                first = e;
                break;
            }
        }
        CHECK_MSG(first == ref->len[i], "%s %s with %d threads: differs from 1 thread at [%zu]: %.9g vs %.9g", what,
                  ref->name[i], threads, first, first < ref->len[i] ? got->buf[i][first] : 0.0,
                  first < ref->len[i] ? ref->buf[i][first] : 0.0);
    }
}

static void release(outputs *o) {
    for (int i = 0; i < o->n; i++) free(o->buf[i]);
    o->n = 0;
}

typedef void (*case_fn)(const wl_kernels *k, outputs *out);

/* Run a case with 1 thread, then 2, 3, 4, comparing every output. */
static void across_threads(const char *what, const wl_kernels *k, case_fn f) {
    outputs ref = {0}, got = {0};
    CHECK_OK(wl_threads_start(1));
    f(k, &ref);
    for (int threads = 2; threads <= 4; threads++) {
        CHECK_OK(wl_threads_start(threads));
        f(k, &got);
        compare(what, threads, &ref, &got);
        release(&got);
    }
    wl_threads_stop();
    printf("  %-10s %-40s identical for 1-4 threads (%d outputs)\n", k->name, what, ref.n);
    release(&ref);
}

/* GEMMs covering each way of splitting the work: column pieces (with several k blocks and row blocks), the thin
 * row split (packed and in-place A), the transposed form, GEMV, two terms with a residual and a bias. */
static void gemm_cases(const wl_kernels *k, outputs *out) {
    static const struct {
        int ta, tb, M, N, K;
    } shapes[] = {
        {0, 1, 517, 203, 1100}, /* column pieces, 2 row blocks, 3 k blocks */
        {0, 0, 47, 131, 77},    /* column pieces, B not transposed */
        {1, 0, 203, 8, 600},    /* thin, A read in place in k blocks, a partial last sliver (a LoRA B gradient) */
        {1, 1, 203, 13, 96},    /* thin: rows split, A read in place */
        {0, 1, 203, 13, 40},    /* rows in place (relaxed SIMD), thin with A packed (SIMD128) */
        {0, 1, 517, 16, 300},   /* x A^T of a LoRA factor: rows in place or dot products, split over rows */
        {1, 0, 8, 300, 48},     /* A^T B computed transposed, C^T in scratch (a LoRA A gradient) */
        {1, 0, 16, 301, 200},   /* the same at rank 16 over 4 k blocks */
        {0, 0, 7, 300, 48},     /* short and wide: computed transposed */
        {0, 1, 3, 517, 200},    /* GEMV, weight transposed */
        {1, 0, 2, 517, 90},     /* GEMV, A transposed, B plain */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int ta = shapes[s].ta, tb = shapes[s].tb, M = shapes[s].M, N = shapes[s].N, K = shapes[s].K;
        float *A = falloc((size_t)M * K), *B = falloc((size_t)K * N), *C = falloc((size_t)M * N);
        wl_test_fill(A, (size_t)M * K, 11 + s, 1.0f);
        wl_test_fill(B, (size_t)K * N, 23 + s, 1.0f);
        wl_test_fill(C, (size_t)M * N, 31 + s, 1.0f);
        wl_sgemm(k, ta, tb, M, N, K, 0.75f, A, ta ? M : K, B, tb ? K : N, s % 2 ? 1.0f : 0.0f, C, N);
        keep(out, "sgemm", C, (size_t)M * N);
        free(A), free(B), free(C);
    }
    /* out = res + x W^T + s (x A^T) B^T + b, as a LoRA linear layer with a residual writes it. */
    const int M = 96, N = 140, K = 70, r = 6;
    float *x = falloc((size_t)M * K), *W = falloc((size_t)N * K), *xa = falloc((size_t)M * r);
    float *Bl = falloc((size_t)N * r);
    float *res = falloc((size_t)M * N), *bias = falloc((size_t)N), *C = falloc((size_t)M * N);
    wl_test_fill(x, (size_t)M * K, 41, 1.0f);
    wl_test_fill(W, (size_t)N * K, 42, 1.0f);
    wl_test_fill(xa, (size_t)M * r, 43, 1.0f);
    wl_test_fill(Bl, (size_t)N * r, 44, 1.0f);
    wl_test_fill(res, (size_t)M * N, 45, 1.0f);
    wl_test_fill(bias, (size_t)N, 46, 1.0f);
    wl_gemm_term terms[2] = {{x, W, K, K, K, 0, 1, 1.0f}, {xa, Bl, r, r, r, 0, 1, 2.5f}};
    k->gemm(M, N, terms, 2, res, bias, C, N);
    keep(out, "two terms + residual + bias", C, (size_t)M * N);
    free(x), free(W), free(xa), free(Bl), free(res), free(bias), free(C);
}

/* Row and elementwise kernels through their parallel entry points, and the optimizer's flat loops. The sizes give
 * each entry point several pieces (rows and elements are split in pieces of at least 64k values). */
static void row_cases(const wl_kernels *k, outputs *out) {
    const int N = 1031, C = 256, H = 4, hs = 64, NX = 301, V = 1001, max_pos = 64;
    const size_t n = (size_t)N * C;
    float *x = falloc(n), *w = falloc((size_t)C), *b = falloc((size_t)C), *y = falloc(n), *g = falloc(n);
    float *dx = falloc(n), *dy = falloc(n), *mean = falloc((size_t)N), *r = falloc((size_t)N);
    float *ct = falloc((size_t)max_pos * hs / 2), *st = falloc((size_t)max_pos * hs / 2);
    float *logits = falloc((size_t)NX * V), *losses = falloc((size_t)NX);
    int *pos = malloc((size_t)N * sizeof(int)), *tg = malloc((size_t)NX * sizeof(int));
    wl_test_fill(x, n, 1, 2.0f);
    wl_test_fill(w, (size_t)C, 2, 1.0f);
    wl_test_fill(b, (size_t)C, 3, 1.0f);
    wl_test_fill(g, n, 4, 1.0f);
    wl_test_fill(ct, (size_t)max_pos * hs / 2, 5, 1.0f);
    wl_test_fill(st, (size_t)max_pos * hs / 2, 6, 1.0f);
    for (int i = 0; i < N; i++) pos[i] = (i * 7) % max_pos;
    wl_rmsnorm_forward(k, y, r, x, w, N, C, 1e-5f);
    keep(out, "rmsnorm", y, n);
    keep(out, "rmsnorm rstd", r, (size_t)N);
    wl_rmsnorm_backward(k, dx, NULL, g, x, w, r, N, C);
    keep(out, "rmsnorm backward", dx, n);
    wl_layernorm_forward(k, y, mean, r, x, w, b, N, C, 1e-5f);
    keep(out, "layernorm", y, n);
    wl_layernorm_backward(k, dx, NULL, NULL, g, x, w, mean, r, N, C);
    keep(out, "layernorm backward", dx, n);
    wl_rope(k, y, N, H, hs, C, pos, ct, st, WL_ROPE_INTERLEAVED, 0);
    wl_rope(k, dx, N, H, hs, C, pos, ct, st, WL_ROPE_HALF, 1);
    keep(out, "rope", y, n);
    keep(out, "rope inverse, rotate-half layout", dx, n);
    wl_swiglu_forward(k, y, x, g, n);
    wl_swiglu_backward(k, dx, dy, g, x, y, n);
    keep(out, "swiglu", y, n);
    keep(out, "swiglu backward (gate)", dx, n);
    keep(out, "swiglu backward (up)", dy, n);
    wl_gelu_forward(k, y, x, n);
    wl_gelu_backward(k, dx, x, g, n);
    wl_axpy(k, dx, 0.375f, y, n);
    keep(out, "gelu", y, n);
    keep(out, "gelu backward, axpy", dx, n);
    wl_test_fill(logits, (size_t)NX * V, 7, 8.0f);
    for (int i = 0; i < NX; i++) tg[i] = i % 7 == 3 ? -100 : (i * 131) % V;
    float total = (float)wl_xent_forward(k, losses, logits, tg, NX, V, -100);
    wl_xent_backward(k, logits, tg, NX, V, -100, 0.25f);
    keep(out, "xent losses", losses, (size_t)NX);
    keep(out, "xent total", &total, 1);
    keep(out, "xent backward", logits, (size_t)NX * V);
    /* AdamW, the gradient norm and clipping over a buffer longer than several reduction chunks. */
    const size_t P = 70001;
    float *p = falloc(P), *gr = falloc(P), *m = falloc(P), *v = falloc(P);
    wl_test_fill(p, P, 5, 1.0f);
    wl_test_fill(gr, P, 6, 1.0f);
    wl_adamw opt = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    for (int step = 1; step <= 3; step++) {
        float norm = (float)sqrt(wl_sum_squares(gr, P));
        wl_scale(gr, P, 0.5f / norm);
        CHECK_OK(wl_adamw_step(&opt, step, p, gr, m, v, P));
    }
    float norm = (float)wl_sum_squares(p, P);
    keep(out, "adamw steps", p, P);
    keep(out, "sum of squares", &norm, 1);
    free(x), free(w), free(b), free(y), free(g), free(dx), free(dy), free(mean), free(r), free(ct), free(st);
    free(logits), free(losses), free(pos), free(tg);
    free(p), free(gr), free(m), free(v);
}

/* ------------------------------------------------------------------------------------------------------------
 * Whole training runs. */

static wl_config small_llama(void) {
    wl_config c = {0};
    c.arch = WL_ARCH_LLAMA;
    c.dim = 64;
    c.hidden_dim = 96;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.vocab_size = 211;
    c.max_seq_len = 64;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

static wl_config small_gpt2(void) {
    wl_config c = {0};
    c.arch = WL_ARCH_GPT2;
    c.dim = 48;
    c.hidden_dim = 96;
    c.n_layers = 2;
    c.n_heads = 3;
    c.n_kv_heads = 3;
    c.head_dim = 16;
    c.vocab_size = 150;
    c.max_seq_len = 64;
    c.tied_embeddings = 1;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.bos_id = -1;
    c.eos_id = 149;
    return c;
}

static float g_dropout;
static wl_config g_config;

/* Three AdamW steps of LoRA (every module, rank 8) on B = 2 sequences of 53 tokens, then a prefill of 52 and a decode
 * of 3 tokens: more than WL_ATTENTION_ROWS queries, so attention works in whole and partial blocks of them. */
static void training_case(const wl_kernels *k, outputs *out) {
    wl_kernels_set_default(k);
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(&g_config, &m));
    if (!m) return;
    for (int i = 0; i < wl_model_n_tensors(m); i++) {
        wl_tensor_info t;
        wl_model_tensor(m, i, &t);
        wl_test_fill(t.data, t.numel, 100 + (uint64_t)i, 0.3f);
        if (t.ndim == 1 && strstr(t.name, "weight"))
            for (size_t e = 0; e < t.numel; e++) t.data[e] += 1.0f;
    }
    const int B = 2, T = 53;
    /* B != 0, so every gradient is live from the first step */
    wl_adapter *a = wl_test_adapter(m, &(wl_test_adapter_spec){.rank = 8, .alpha = 16.0f, .fill_seed = 7, .fill_scale = 0.2f});
    if (!a) return;
    size_t n;
    float *p = wl_adapter_params(a, &n), *g = wl_adapter_grads(a);
    CHECK_OK(wl_model_reserve(m, B, T, WL_RESERVE_TRAIN));
    CHECK_OK(wl_model_set_adapters(m, &a, NULL, 1));
    CHECK_OK(wl_model_set_trainable(m, a));
    float *mo = falloc(n), *vo = falloc(n), losses[3];
    int32_t tokens[B * T], targets[B * T];
    wl_adamw opt = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f};
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < B * T; i++) {
            tokens[i] = (i * 37 + step * 11) % g_config.vocab_size;
            targets[i] = i % 9 == 4 ? -100 : (i * 53 + step) % g_config.vocab_size;
        }
        CHECK_OK(wl_model_set_lora_dropout(m, g_dropout, 99, (uint64_t)step));
        CHECK_OK(wl_adapter_zero_grad(a));
        CHECK_OK(wl_model_forward(m, tokens, targets, B, T, 0, WL_FORWARD_TRAIN, -100, &losses[step - 1]));
        CHECK_OK(wl_model_backward(m));
        if (step == 1) keep(out, "gradients", g, n);
        CHECK_OK(wl_adamw_step(&opt, step, p, g, mo, vo, n));
    }
    keep(out, "losses", losses, 3);
    keep(out, "adapter after 3 steps", p, n);
    /* Decoding with the trained adapter: prefill, then one token at a time. */
    CHECK_OK(wl_model_set_trainable(m, NULL));
    CHECK_OK(wl_model_reserve(m, 1, 56, WL_RESERVE_LAST_LOGITS));
    CHECK_OK(wl_model_forward(m, tokens, NULL, 1, 52, 0, WL_FORWARD_LAST_LOGITS, -100, NULL));
    for (int t = 0; t < 3; t++)
        CHECK_OK(wl_model_forward(m, tokens + t, NULL, 1, 1, 52 + t, WL_FORWARD_LAST_LOGITS, -100, NULL));
    keep(out, "decoded logits", wl_model_logits(m), (size_t)g_config.vocab_size);
    free(mo), free(vo);
    CHECK_OK(wl_model_set_adapters(m, NULL, NULL, 0));
    wl_adapter_free(a);
    wl_model_free(m);
    wl_kernels_set_default(NULL);
}

int main(void) {
    printf("thread pool\n");
    test_pool_errors();
    for (int threads = 1; threads <= 4; threads++) test_pool(threads);

    const wl_kernels *tables[3] = {&wl_kernels_scalar, NULL, NULL};
    int ntables = 1;
#ifdef WL_HAVE_WASMSIMD
    tables[ntables++] = &wl_kernels_wasmsimd;
#endif
#ifdef WL_HAVE_WASMRELAXED
    tables[ntables++] = &wl_kernels_wasmrelaxed;
#endif
    printf("bit-identical results for any number of threads\n");
    for (int t = 0; t < ntables; t++) {
        across_threads("GEMM paths", tables[t], gemm_cases);
        across_threads("row kernels, cross-entropy, AdamW", tables[t], row_cases);
        g_config = small_llama();
        g_dropout = 0.0f;
        across_threads("Llama LoRA training and decoding", tables[t], training_case);
        g_dropout = 0.1f;
        across_threads("Llama LoRA training with dropout", tables[t], training_case);
        g_config = small_gpt2();
        g_dropout = 0.0f;
        across_threads("GPT-2 LoRA training and decoding", tables[t], training_case);
    }
    return wl_test_summary("test_threads");
}
