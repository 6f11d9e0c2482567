/* alloc.c: overflow-checked size arithmetic and aligned, zeroed allocation that fails with a clear error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

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
