/* parallel.c: the thread pool behind wl_threads.h and wl_parallel_for.
 *
 * A parallel region publishes a job (function, context, task count) and a new generation number, wakes the
 * sleeping workers, and takes tasks itself like any worker. The tasks are dealt out as one contiguous range per
 * thread, and each thread claims its own range's tasks first, in order, then takes what is left of the others'
 * ranges: so thread i usually runs the same part of every region (the same rows of consecutive row kernels, the
 * A slivers it packed), and that data stays in its core's caches, while a thread that was descheduled still has
 * its work taken over. A range's tasks are claimed from one 64-bit word holding (generation, next task), so a
 * worker that wakes late can never claim a task of a later region. The caller
 * returns when the count of unfinished tasks reaches zero. Workers sleep in memory.atomic.wait (WebAssembly) or
 * on a condition variable (POSIX) after polling for a few microseconds, so an idle pool costs no CPU; thread 0 polls
 * longer at the end of a region. A region notifies workers only when one sleeps, and the last task notifies thread
 * 0 only when it sleeps.
 *
 * Three builds: WebAssembly with shared memory (-matomics), native with POSIX threads, and WebAssembly without
 * atomics, where the pool always has one thread.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/parallel.h"

#if defined(__wasm__) && !defined(__wasm_atomics__)
#define WL_POOL_THREADS 0
#else
#define WL_POOL_THREADS 1
#include <stdatomic.h>
#endif

#if WL_POOL_THREADS && defined(__wasm__)
#include <emscripten/stack.h>
#define WL_THREAD_STACK_BYTES ((size_t)512 * 1024)
#elif WL_POOL_THREADS
#include <pthread.h>
#endif

/* Thread 0 always has scratch, so kernels work before (and without) any pool. */
static float g_scratch0[WL_SCRATCH_FLOATS] __attribute__((aligned(64)));
static int g_nthreads = 1;

int wl_threads_count(void) { return g_nthreads; }

int wl_parallel_pieces(int n, int grain) {
    int width = wl_parallel_width();
    if (width <= 1 || n <= grain) return 1;
    if (grain < 1) grain = 1;
    /* Many pieces per thread: the threads finish within a small piece of each other (one idling at the end of
     * a region costs CPU time while it waits), and one that started late or was descheduled catches up. */
    long long pieces = (long long)width * WL_PIECES_PER_THREAD, most = n / grain;
    return (int)(pieces < most ? pieces : most);
}

#if !WL_POOL_THREADS

wl_status wl_threads_init(int n) {
    if (n != 1)
        return wl_fail(WL_STATUS_UNSUPPORTED, "this build of the core has no threads (asked for %d)", n);
    return WL_OK;
}
int wl_threads_running(void) { return 0; }
wl_status wl_threads_start(int n) { return wl_threads_init(n); }
void *wl_thread_stack(int i) {
    (void)i;
    return NULL;
}
void wl_thread_main(int i) { (void)i; }
void wl_threads_stop(void) {}
void wl_thread_failed(void) {}
int wl_parallel_width(void) { return 1; }
int wl_thread_self(void) { return 0; }
float *wl_thread_scratch(void) { return g_scratch0; }
float *wl_shared_scratch(void) { return NULL; }

void wl_parallel_for(int n_tasks, wl_task_fn fn, void *ctx) {
    for (int t = 0; t < n_tasks; t++) fn(ctx, t);
}

#else

typedef struct job {
    wl_task_fn fn;
    void *ctx;
    _Atomic int n_tasks; /* also read by workers holding a stale claim word, before their CAS fails */
} job;

/* Two job slots: the one of generation g is only rewritten for generation g + 2, which cannot start before every
 * task of g has finished; a worker holding a stale claim word fails its compare-and-swap instead. */
static job g_jobs[2];
/* Thread i's range of the current region: (generation << 32) | its next task; each on its own cache line, so that
 * claims on one range do not evict the line another thread claims from. */
static struct {
    _Alignas(64) _Atomic uint64_t word;
} g_claims[WL_MAX_THREADS];
static _Atomic int g_generation;   /* low 32 bits of the current generation: the word workers sleep on */
static _Atomic int g_pending;      /* tasks of the current region not finished */
static _Atomic int g_in_region;    /* a region runs: nested wl_parallel_for calls run serially */
static _Atomic int g_quit;
static _Atomic int g_sleepers;     /* workers asleep on g_generation: a region wakes them only if there are any */
static _Atomic int g_caller_asleep; /* thread 0 sleeps on g_pending: the last task wakes it only then */
static _Atomic int g_running;      /* workers inside wl_thread_main */
static _Atomic int g_failed;       /* a worker died inside a task */
static uint32_t g_gen_counter;     /* thread 0 only */
static float *g_scratch[WL_MAX_THREADS] = {g_scratch0};
static float *g_shared;

#ifdef __wasm__
static unsigned char *g_stacks[WL_MAX_THREADS]; /* worker i's stack block (WL_THREAD_STACK_BYTES) */

static void wait_while_equal(_Atomic int *word, int value) {
    __builtin_wasm_memory_atomic_wait32((int *)word, value, -1);
}
static void wake_all(_Atomic int *word) { __builtin_wasm_memory_atomic_notify((int *)word, 0xffffffffu); }

/* Worker i's stack pointer lies in (its block, block end]: it starts at the end, and frames that keep nothing in
 * memory leave it there. */
int wl_thread_self(void) {
    uintptr_t sp = emscripten_stack_get_current();
    for (int i = 1; i < g_nthreads; i++) {
        uintptr_t lo = (uintptr_t)g_stacks[i];
        if (g_stacks[i] && sp > lo && sp <= lo + WL_THREAD_STACK_BYTES) return i;
    }
    return 0;
}

void *wl_thread_stack(int i) {
    if (i < 1 || i >= g_nthreads || !g_stacks[i]) return NULL;
    return g_stacks[i] + WL_THREAD_STACK_BYTES;
}
#else
/* One mutex and condition variable serve both words; waiters re-check their word after every wake-up. */
static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static pthread_t g_pthreads[WL_MAX_THREADS];
static int g_started;
static _Thread_local int tl_self;

static void wait_while_equal(_Atomic int *word, int value) {
    pthread_mutex_lock(&g_mutex);
    while (atomic_load(word) == value) pthread_cond_wait(&g_cond, &g_mutex);
    pthread_mutex_unlock(&g_mutex);
}
/* The store that changed the word happened before: taking the mutex orders it against a waiter's check. */
static void wake_all(_Atomic int *word) {
    (void)word;
    pthread_mutex_lock(&g_mutex);
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_mutex);
}

int wl_thread_self(void) { return tl_self; }

void *wl_thread_stack(int i) {
    (void)i;
    return NULL;
}
#endif

/* Polls before sleeping, one poll a fraction of a nanosecond (2000 take about a microsecond in V8's optimised wasm on
 * this machine; the loop is its own function so V8 optimises it even inside wl_thread_main, which never leaves its
 * first, unoptimised tier). Sleeping and waking cost tens of microseconds of latency and several of CPU time on both
 * sides, so each side polls for about as long as it usually waits:
 * - a thread that found no task left while the region still runs waits for the others' last pieces, about one piece
 *   at most (regions have many pieces per thread): about 20 microseconds of polls cover that. Then no thread sleeps
 *   at the end of a region, nobody needs waking, and the next region starts at once and finds the workers polling;
 *   sleeping there instead cost a sleep and a wake-up per region.
 * - a worker after a region waits for thread 0's serial work (a GEMM's set-up, a small kernel, or JavaScript between
 *   calls, which can last any time): a couple of microseconds of polls catch back-to-back regions without burning
 *   CPU through long serial stretches (longer polls cost more CPU per step, measured). */
#define WL_REGION_END_POLLS 50000 /* the first case, on any thread */
#define WL_BETWEEN_REGIONS_POLLS 5000 /* the second */

/* 1 when *word no longer holds value within `polls` polls. */
__attribute__((noinline)) static int spin_until_changed(_Atomic int *word, int value, int polls) {
    for (int i = 0; i < polls; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != value) return 1;
    }
    return 0;
}

/* A worker's polls for the region after generation `seen`: while that region still runs, then WL_BETWEEN_REGIONS_POLLS more.
 * 1 when a new region started. */
__attribute__((noinline)) static int poll_next_region(int seen) {
    for (int i = 0; i < WL_REGION_END_POLLS && atomic_load_explicit(&g_pending, memory_order_relaxed) != 0; i++) {
        if (atomic_load_explicit(&g_generation, memory_order_acquire) != seen) return 1;
    }
    return spin_until_changed(&g_generation, seen, WL_BETWEEN_REGIONS_POLLS);
}

int wl_parallel_width(void) { return atomic_load_explicit(&g_in_region, memory_order_relaxed) ? 1 : g_nthreads; }

float *wl_thread_scratch(void) { return g_scratch[wl_thread_self()]; }

float *wl_shared_scratch(void) { return g_shared; }

int wl_threads_running(void) { return atomic_load(&g_running); }

/* Claim and run the tasks of range r of generation gen, in order, until none are left; 0 when a later region has
 * started. */
static int run_range(uint32_t gen, const job *j, int r) {
    int begin, end;
    wl_split(atomic_load_explicit(&j->n_tasks, memory_order_relaxed), g_nthreads, r, &begin, &end);
    _Atomic uint64_t *word = &g_claims[r].word;
    uint64_t c = atomic_load_explicit(word, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(c >> 32) != gen) return 0;
        if ((uint32_t)c >= (uint32_t)end) return 1;
        if (!atomic_compare_exchange_weak_explicit(word, &c, c + 1, memory_order_acq_rel, memory_order_acquire))
            continue; /* c now holds the current word */
        j->fn(j->ctx, (int)(uint32_t)c);
        if (atomic_fetch_sub_explicit(&g_pending, 1, memory_order_seq_cst) == 1 &&
            atomic_load_explicit(&g_caller_asleep, memory_order_seq_cst))
            wake_all(&g_pending);
        c = atomic_load_explicit(word, memory_order_acquire);
    }
}

/* Run tasks of generation gen: the calling thread's range, then what is left of the others'. Not inlined, so that
 * V8 optimises it for workers too (see spin_until_changed). */
__attribute__((noinline)) static void run_tasks(uint32_t gen) {
    const job *j = &g_jobs[gen & 1];
    const int self = wl_thread_self();
    for (int i = 0; i < g_nthreads; i++)
        if (!run_range(gen, j, (self + i) % g_nthreads)) return;
}

void wl_parallel_for(int n_tasks, wl_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (n_tasks == 1 || g_nthreads == 1 || atomic_load_explicit(&g_in_region, memory_order_relaxed) ||
        wl_thread_self() != 0) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t);
        return;
    }
    atomic_store_explicit(&g_in_region, 1, memory_order_relaxed);
    uint32_t gen = ++g_gen_counter;
    job *j = &g_jobs[gen & 1];
    j->fn = fn;
    j->ctx = ctx;
    atomic_store_explicit(&j->n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&g_pending, n_tasks, memory_order_relaxed);
    for (int i = 0; i < g_nthreads; i++) {
        int begin, end;
        wl_split(n_tasks, g_nthreads, i, &begin, &end);
        atomic_store_explicit(&g_claims[i].word, (uint64_t)gen << 32 | (uint32_t)begin, memory_order_release);
    }
    atomic_store_explicit(&g_generation, (int)gen, memory_order_seq_cst);
    if (atomic_load_explicit(&g_sleepers, memory_order_seq_cst)) wake_all(&g_generation);
    run_tasks(gen);
    int p;
    while ((p = atomic_load_explicit(&g_pending, memory_order_acquire)) != 0) {
        if (atomic_load(&g_failed)) wl_assert_fail("a worker thread of the pool died", __FILE__, __LINE__);
        if (spin_until_changed(&g_pending, p, WL_REGION_END_POLLS)) continue;
        /* Flagged before the last look at the count, so the task that finishes the region sees the flag. */
        atomic_store_explicit(&g_caller_asleep, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&g_pending, memory_order_seq_cst) == p) wait_while_equal(&g_pending, p);
        atomic_store_explicit(&g_caller_asleep, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&g_in_region, 0, memory_order_relaxed);
}

void wl_thread_main(int i) {
    if (i < 1 || i >= g_nthreads) return;
#ifndef __wasm__
    tl_self = i;
#endif
    atomic_fetch_add(&g_running, 1);
    int seen = atomic_load_explicit(&g_generation, memory_order_acquire);
    for (;;) {
        int gen;
        while ((gen = atomic_load_explicit(&g_generation, memory_order_acquire)) == seen &&
               !atomic_load(&g_quit)) {
            if (poll_next_region(seen)) continue;
            /* Counted before the last look at the word, so a region that starts now wakes this thread. */
            atomic_fetch_add_explicit(&g_sleepers, 1, memory_order_seq_cst);
            if (atomic_load_explicit(&g_generation, memory_order_seq_cst) == seen && !atomic_load(&g_quit))
                wait_while_equal(&g_generation, seen);
            atomic_fetch_sub_explicit(&g_sleepers, 1, memory_order_seq_cst);
        }
        if (atomic_load(&g_quit)) break;
        seen = gen;
        run_tasks((uint32_t)gen);
    }
    atomic_fetch_sub(&g_running, 1);
    wake_all(&g_running);
}

void wl_thread_failed(void) {
    atomic_store(&g_failed, 1);
    /* Changing the word wakes thread 0 if it waits for the dead worker's task. */
    atomic_fetch_add(&g_pending, 1 << 20);
    wake_all(&g_pending);
    /* The dead worker will not leave wl_thread_main itself. */
    atomic_fetch_sub(&g_running, 1);
    wake_all(&g_running);
}

#ifndef __wasm__
static void *pthread_entry(void *arg) {
    wl_thread_main((int)(intptr_t)arg);
    return NULL;
}
#endif

void wl_threads_stop(void) {
    if (g_nthreads == 1 && !g_shared) return;
    atomic_store(&g_quit, 1);
    /* Bumping the word wakes workers asleep on it even if they missed the quit flag. */
    atomic_fetch_add(&g_generation, 1);
    wake_all(&g_generation);
#ifdef __wasm__
    /* Workers leave within microseconds; one that was killed from outside never does, so give up after a
     * second rather than hang. */
    for (int tries = 0; tries < 100 && atomic_load(&g_running) > 0; tries++) {
        int r = atomic_load(&g_running);
        if (r > 0) __builtin_wasm_memory_atomic_wait32((int *)&g_running, r, 10 * 1000 * 1000);
    }
    for (int i = 1; i < WL_MAX_THREADS; i++) {
        free(g_stacks[i]);
        g_stacks[i] = NULL;
    }
#else
    for (int i = 0; i < g_started; i++) pthread_join(g_pthreads[i], NULL);
    g_started = 0;
#endif
    for (int i = 1; i < WL_MAX_THREADS; i++) {
        free(g_scratch[i]);
        g_scratch[i] = NULL;
    }
    free(g_shared);
    g_shared = NULL;
    g_nthreads = 1;
    atomic_store(&g_running, 0);
    atomic_store(&g_failed, 0);
    atomic_store(&g_pending, 0);
    atomic_store(&g_quit, 0);
}

static void *alloc_block(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p) memset(p, 0, bytes);
    return p;
}

wl_status wl_threads_init(int n) {
    if (n < 1 || n > WL_MAX_THREADS)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "threads: %d is outside [1, %d]", n, WL_MAX_THREADS);
    if (wl_thread_self() != 0 || atomic_load(&g_in_region))
        return wl_fail(WL_STATUS_BAD_STATE, "threads: the pool can only be set up by thread 0 between computations");
    wl_threads_stop();
    if (n == 1) return WL_OK;
    g_shared = alloc_block(WL_SHARED_SCRATCH_FLOATS * sizeof(float));
    int ok = g_shared != NULL;
    for (int i = 1; i < n && ok; i++) {
        g_scratch[i] = alloc_block(WL_SCRATCH_FLOATS * sizeof(float));
        ok = g_scratch[i] != NULL;
#ifdef __wasm__
        g_stacks[i] = ok ? alloc_block(WL_THREAD_STACK_BYTES) : NULL;
        ok = ok && g_stacks[i] != NULL;
#endif
    }
    if (!ok) {
        g_nthreads = n; /* so stop frees what was allocated */
        wl_threads_stop();
        return wl_fail(WL_STATUS_OUT_OF_MEMORY, "threads: no memory for the scratch of %d threads", n);
    }
    g_nthreads = n;
    return WL_OK;
}

wl_status wl_threads_start(int n) {
#ifdef __wasm__
    (void)n;
    return wl_fail(WL_STATUS_UNSUPPORTED, "threads: in WebAssembly the embedder starts the workers");
#else
    wl_status st = wl_threads_init(n);
    if (st != WL_OK) return st;
    for (int i = 1; i < n; i++) {
        if (pthread_create(&g_pthreads[g_started], NULL, pthread_entry, (void *)(intptr_t)i) != 0) {
            wl_threads_stop();
            return wl_fail(WL_STATUS_OUT_OF_MEMORY, "threads: could not start thread %d of %d", i, n);
        }
        g_started++;
    }
    return WL_OK;
#endif
}

#endif
