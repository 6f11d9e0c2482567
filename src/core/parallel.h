/* parallel.h: the parallel-for every parallel kernel uses, the calling thread's identity and its scratch memory
 * (the pool itself is set up through include/wl_threads.h).
 *
 * The rule that keeps results bit-identical for any thread count: a task's result may depend on its index but
 * never on which thread runs it or on how many threads there are. Kernels split work into pieces whose arithmetic
 * is fixed (GEMM tiles never split the k sum; row kernels own whole rows) and sum partial results in a fixed
 * order; there are no atomic updates of floats anywhere.
 */
#ifndef WL_PARALLEL_H
#define WL_PARALLEL_H

#include <stddef.h>

#include "wl_threads.h"

/* Task t of a parallel-for: work on piece t of ctx. */
typedef void (*wl_task_fn)(void *ctx, int t);

/* Run fn(ctx, t) for every t in [0, n_tasks) and return when all have finished. On the pool when it has more than
 * one thread and the caller is not itself inside a task; otherwise in order on the calling thread (a task that
 * calls wl_parallel_for runs the inner loop itself). Threads take tasks in any order; each starts with its own
 * contiguous share of them, so consecutive regions cut into pieces the same way mostly keep a piece on one thread. */
void wl_parallel_for(int n_tasks, wl_task_fn fn, void *ctx);

/* Threads a wl_parallel_for called here would use: 1 inside a task or without a pool. */
int wl_parallel_width(void);

/* Index of the calling thread: 0 for the thread that called into the core, 1 .. n-1 for workers. */
int wl_thread_self(void);

/* Every thread's private scratch: WL_SCRATCH_FLOATS floats, 64-byte aligned (kernels' packing buffers). A kernel
 * may use it only while it runs; anything it calls may use it too, so a caller must not keep data there across a
 * call into another kernel. */
#define WL_SCRATCH_FLOATS ((size_t)512 * 1024)
float *wl_thread_scratch(void);

/* Scratch shared by all threads, for a kernel that runs at the top level (wl_parallel_width() > 1) to hand data
 * from one parallel-for to the next: WL_SHARED_SCRATCH_FLOATS floats, NULL without a pool. */
#define WL_SHARED_SCRATCH_FLOATS ((size_t)512 * 1024)
float *wl_shared_scratch(void);

/* Part p of [0, n) split into `parts` nearly equal contiguous ranges: [*begin, *end). */
static inline void wl_split(int n, int parts, int p, int *begin, int *end) {
    *begin = (int)((long long)n * p / parts);
    *end = (int)((long long)n * (p + 1) / parts);
}

/* How many pieces to cut n items into so each has at least `grain` items and the pool has many pieces per
 * thread to balance (1 when serial). */
#define WL_PIECES_PER_THREAD 16
int wl_parallel_pieces(int n, int grain);

#endif
