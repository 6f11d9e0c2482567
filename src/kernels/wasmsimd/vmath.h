/* vmath.h: the f32x4 exp and sigmoid the wasm SIMD kernels use, in a header so the unit tests can measure
 * their accuracy directly (natively through SIMDe, which reproduces the wasm operations bit for bit). */
#ifndef WL_VMATH_H
#define WL_VMATH_H

#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#else
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/wasm/simd128.h>
#endif

#include <math.h>

/* exp(x): Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2 (ln2 split so n * 0.693359375 is exact),
 * the Cephes expf polynomial for e^r, and 2^n built in the exponent bits as 2^(n-1) times an exact doubling,
 * so n = 128 (x up to ln(FLT_MAX)) stays finite.
 * Accuracy: 0.98 ulp max against double exp over 2^20 points of [-86.5, 88.7] (tests/c/test_kernels.c, which
 * fails above 2 ulp).
 * x below about -87.0 (true results under 2^-125.5) gives 0 instead of a tiny or subnormal value;
 * x > ln(FLT_MAX) gives +inf, -inf gives 0, NaN stays NaN. */
static inline v128_t wl_vexp(v128_t x) {
    const v128_t hi = wasm_f32x4_splat(88.72283935546875f);
    const v128_t lo = wasm_f32x4_splat(-87.5f);
    v128_t xc = wasm_f32x4_pmax(wasm_f32x4_pmin(x, hi), lo);
    /* n = x / ln2 rounded to the nearest integer by adding and subtracting 1.5 * 2^23, which leaves n in the low
     * mantissa bits of the sum: cheaper than f32x4.nearest and i32x4.trunc_sat_f32x4 (which V8 expands to six
     * x86 instructions), with the same rounding. */
    const v128_t round = wasm_f32x4_splat(12582912.0f);
    v128_t shifted = wasm_f32x4_add(wasm_f32x4_mul(xc, wasm_f32x4_splat(1.44269504088896341f)), round);
    v128_t n = wasm_f32x4_sub(shifted, round);
    v128_t r = wasm_f32x4_sub(xc, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693359375f)));
    r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, wasm_f32x4_splat(-2.12194440e-4f)));
    v128_t p = wasm_f32x4_splat(1.9875691500e-4f);
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.3981999507e-3f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(8.3334519073e-3f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(4.1665795894e-2f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.6666665459e-1f));
    p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(5.0000001201e-1f));
    v128_t e = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(p, r), r), r), wasm_f32x4_splat(1.0f));
    /* n is in [-126, 128]; n = -126 gives a zero scale, which is the flush to zero described above. */
    /* 2^(n-1) from the bits of shifted, 0x4B400000 + n: shifted by 23, the sum with 126 keeps only its low 9 bits,
     * n + 126. */
    v128_t scale = wasm_i32x4_shl(wasm_i32x4_add(shifted, wasm_i32x4_splat(126)), 23);
    v128_t res = wasm_f32x4_mul(wasm_f32x4_add(e, e), scale);
    res = wasm_v128_bitselect(wasm_f32x4_splat(INFINITY), res, wasm_f32x4_gt(x, hi));
    return wasm_v128_bitselect(x, res, wasm_f32x4_ne(x, x));
}

/* 1 / (1 + exp(-x)): 2.3 ulp max over [-40, 40] (same test, which fails above 4 ulp); 0 below x = -88.7, 1 above
 * about 17. */
static inline v128_t wl_vsigmoid(v128_t x) {
    const v128_t one = wasm_f32x4_splat(1.0f);
    return wasm_f32x4_div(one, wasm_f32x4_add(one, wl_vexp(wasm_f32x4_neg(x))));
}

#endif
