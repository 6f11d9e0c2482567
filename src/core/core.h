/* core.h: internal helpers shared by every part of the C core: error reporting, checked allocation, asserts,
 * and the deterministic random number generator. */
#ifndef WL_CORE_H
#define WL_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "wl_status.h"

/* Record a failure reason and return its status: `return wl_fail(WL_STATUS_BAD_FORMAT, "x is %d", x);` */
wl_status wl_fail(wl_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Broken internal invariants (never bad input) abort with a message. */
void wl_assert_fail(const char *expr, const char *file, int line);
#define WL_ASSERT(cond) ((cond) ? (void)0 : wl_assert_fail(#cond, __FILE__, __LINE__))

/* Overflow-checked size arithmetic: return 0 on overflow, else store the result. */
int wl_mul_size(size_t a, size_t b, size_t *out);
int wl_add_size(size_t a, size_t b, size_t *out);

/* Allocation that fails cleanly: returns NULL and records WL_STATUS_OUT_OF_MEMORY with `what`.
 * Memory is 64-byte aligned and zeroed; release with wl_free. n may be 0 (a valid unique pointer). */
void *wl_alloc(size_t n, const char *what);
/* n * size with the overflow check. */
void *wl_alloc_array(size_t n, size_t size, const char *what);
void wl_free(void *p);

/* Counter-based generator (SplitMix64 finaliser): the same (seed, counter) always gives the same value, so
 * streams can be regenerated instead of stored (dropout masks). */
uint64_t wl_hash64(uint64_t seed, uint64_t counter);
/* Uniform float in [0, 1) from 24 random bits. */
static inline float wl_hash_uniform(uint64_t seed, uint64_t counter) {
    return (float)(wl_hash64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

/* Sequential generator for initialisation: xoshiro256** seeded through SplitMix64. */
typedef struct wl_rng {
    uint64_t s[4];
} wl_rng;
void wl_rng_seed(wl_rng *rng, uint64_t seed);
uint64_t wl_rng_next(wl_rng *rng);
/* Uniform in [0, 1) with 24 bits, and in [lo, hi). */
float wl_rng_uniform(wl_rng *rng);
float wl_rng_range(wl_rng *rng, float lo, float hi);
/* Standard normal (Box-Muller). */
float wl_rng_normal(wl_rng *rng);

#endif
