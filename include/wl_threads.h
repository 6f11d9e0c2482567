/* wl_threads.h: the thread pool the C core runs its kernels on.
 *
 * One pool per process (per WebAssembly memory). The thread that calls into the core is thread 0; workers
 * 1 .. n-1 run wl_thread_main() and sleep until the core hands out work. Every parallel kernel splits its work
 * into fixed pieces whose results do not depend on which thread computes them, and reductions run in a fixed
 * order, so results are bit-identical for any number of threads.
 *
 * Natively the pool starts POSIX threads itself (wl_threads_start). In WebAssembly (the build with shared memory),
 * JavaScript starts the workers: after wl_threads_init(n) it instantiates the same module in n - 1 Web Workers (or
 * Node worker threads) on the same shared memory, sets each instance's stack pointer to wl_thread_stack(i) and
 * calls wl_thread_main(i) there. Only thread 0 ever allocates memory. The single-threaded WebAssembly build
 * accepts only n = 1.
 */
#ifndef WL_THREADS_H
#define WL_THREADS_H

#include <stddef.h>

#include "wl_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most threads a pool may have. */
#define WL_MAX_THREADS 64

/* Prepare a pool of n threads (1 .. WL_MAX_THREADS; 1 = serial): per-thread scratch memory, and in WebAssembly the
 * workers' stacks. Stops a previous pool first. Thread 0 only, outside any computation. */
wl_status wl_threads_init(int n);

/* Threads of the current pool (1 when none was set up). */
int wl_threads_count(void);

/* Workers (of the n - 1) that have entered wl_thread_main and not left it. */
int wl_threads_running(void);

/* Natively: wl_threads_init(n) and start the n - 1 workers as POSIX threads. Fails with WL_STATUS_UNSUPPORTED
 * where the build has no threads. */
wl_status wl_threads_start(int n);

/* The top of worker i's stack (1 <= i < n; WebAssembly): the embedder sets the worker instance's stack pointer
 * to it before calling wl_thread_main(i). NULL when out of range or natively. */
void *wl_thread_stack(int i);

/* The loop of worker i: sleeps until work arrives (memory.atomic.wait / a condition variable, never a long spin),
 * runs tasks, and returns when the pool is stopped. */
void wl_thread_main(int i);

/* Stop the workers (they leave wl_thread_main), wait for them, and free the pool; the core is serial again. */
void wl_threads_stop(void);

/* For the embedder of a worker whose wl_thread_main died (a trap, an abort): thread 0, waiting for that worker's
 * task, aborts with a message instead of waiting forever. */
void wl_thread_failed(void);

#ifdef __cplusplus
}
#endif
#endif
