/* status.c: error messages, checked allocation and the random number generators. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* One message per thread; the wasm build is single-threaded per instance. */
#if defined(__STDC_NO_THREADS__) || defined(__wasm__)
#define WL_THREAD_LOCAL
#else
#define WL_THREAD_LOCAL _Thread_local
#endif

static WL_THREAD_LOCAL char g_error[512];

const char *wl_last_error(void) { return g_error; }

void wl_clear_error(void) { g_error[0] = '\0'; }

wl_status wl_fail(wl_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, args);
    va_end(args);
    return status;
}

const char *wl_status_name(wl_status status) {
    switch (status) {
    case WL_OK: return "ok";
    case WL_STATUS_INVALID_ARGUMENT: return "invalid_argument";
    case WL_STATUS_BAD_FORMAT: return "bad_format";
    case WL_STATUS_UNSUPPORTED: return "unsupported";
    case WL_STATUS_SHAPE_MISMATCH: return "shape_mismatch";
    case WL_STATUS_OUT_OF_MEMORY: return "out_of_memory";
    case WL_STATUS_NOT_FOUND: return "not_found";
    case WL_STATUS_NUMERIC: return "numeric";
    case WL_STATUS_BAD_STATE: return "bad_state";
    }
    return "unknown";
}

void wl_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "weblora: internal error: %s (%s:%d)\n", expr, file, line);
    abort();
}

int wl_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int wl_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}

#define WL_ALIGN 64

void *wl_alloc(size_t n, const char *what) {
    size_t rounded;
    /* aligned_alloc needs a size that is a multiple of the alignment. */
    if (!wl_add_size(n, WL_ALIGN - 1, &rounded)) {
        wl_fail(WL_STATUS_OUT_OF_MEMORY, "out of memory: %s needs %zu bytes", what, n);
        return NULL;
    }
    rounded &= ~(size_t)(WL_ALIGN - 1);
    if (rounded == 0) rounded = WL_ALIGN;
    void *p = aligned_alloc(WL_ALIGN, rounded);
    if (!p) {
        wl_fail(WL_STATUS_OUT_OF_MEMORY, "out of memory: %s needs %zu bytes", what, n);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

void *wl_alloc_array(size_t n, size_t size, const char *what) {
    size_t bytes;
    if (!wl_mul_size(n, size, &bytes)) {
        wl_fail(WL_STATUS_OUT_OF_MEMORY, "out of memory: %s needs %zu x %zu bytes", what, n, size);
        return NULL;
    }
    return wl_alloc(bytes, what);
}

void wl_free(void *p) { free(p); }

uint64_t wl_hash64(uint64_t seed, uint64_t counter) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (counter + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void wl_rng_seed(wl_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = wl_hash64(seed, (uint64_t)i);
}

uint64_t wl_rng_next(wl_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float wl_rng_uniform(wl_rng *rng) { return (float)(wl_rng_next(rng) >> 40) * (1.0f / 16777216.0f); }

float wl_rng_range(wl_rng *rng, float lo, float hi) { return lo + (hi - lo) * wl_rng_uniform(rng); }

float wl_rng_normal(wl_rng *rng) {
    /* Box-Muller in double; u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(wl_rng_next(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(wl_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
