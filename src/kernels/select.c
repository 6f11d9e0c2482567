/* select.c: the one place that decides which kernel table the model runs. */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static const wl_kernels *g_override;

const wl_kernels *wl_kernels_by_name(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "scalar") == 0) return &wl_kernels_scalar;
#ifdef WL_HAVE_WASMSIMD
    if (strcmp(name, "wasmsimd") == 0) return &wl_kernels_wasmsimd;
#endif
#ifdef WL_HAVE_WASMRELAXED
    if (strcmp(name, "wasmrelaxed") == 0) return &wl_kernels_wasmrelaxed;
#endif
    return NULL;
}

const wl_kernels *wl_kernels_default(void) {
    if (g_override) return g_override;
#if defined(__wasm_relaxed_simd__)
    return &wl_kernels_wasmrelaxed;
#elif defined(__wasm_simd128__)
    return &wl_kernels_wasmsimd;
#else
    /* Native builds run the scalar oracle unless asked (WL_KERNELS=wasmsimd or wasmrelaxed) to run a SIMD twin via
     * SIMDe. */
    const wl_kernels *k = wl_kernels_by_name(getenv("WL_KERNELS"));
    return k ? k : &wl_kernels_scalar;
#endif
}

void wl_kernels_set_default(const wl_kernels *k) { g_override = k; }
