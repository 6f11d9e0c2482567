/* dtype.c: safetensors dtypes (names, sizes) and the conversion of floating-point tensor data to f32,
 * bit-exact for F16 and BF16 (subnormals, infinities, NaN) and correctly rounded for F64. */
#include <math.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"

/* F32 data is copied with memcpy, which is only a conversion on a little-endian host (x86, wasm). */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "weblora reads little-endian tensor data with memcpy; big-endian hosts are not supported"
#endif

static const struct {
    const char *name;
    size_t size;
} DTYPES[WL_DTYPE_COUNT] = {
    [WL_DTYPE_F32] = {"F32", 4},       [WL_DTYPE_F16] = {"F16", 2},         [WL_DTYPE_BF16] = {"BF16", 2},
    [WL_DTYPE_F64] = {"F64", 8},       [WL_DTYPE_I32] = {"I32", 4},         [WL_DTYPE_I64] = {"I64", 8},
    [WL_DTYPE_U8] = {"U8", 1},         [WL_DTYPE_I8] = {"I8", 1},           [WL_DTYPE_BOOL] = {"BOOL", 1},
    [WL_DTYPE_I16] = {"I16", 2},       [WL_DTYPE_U16] = {"U16", 2},         [WL_DTYPE_U32] = {"U32", 4},
    [WL_DTYPE_U64] = {"U64", 8},       [WL_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [WL_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};

size_t wl_dtype_size(int dtype) { return dtype >= 0 && dtype < WL_DTYPE_COUNT ? DTYPES[dtype].size : 0; }

const char *wl_dtype_name(int dtype) { return dtype >= 0 && dtype < WL_DTYPE_COUNT ? DTYPES[dtype].name : "unknown"; }

int wl_dtype_from_name(const char *name, size_t len) {
    if (!name) return -1;
    for (int d = 0; d < WL_DTYPE_COUNT; d++) {
        if (strlen(DTYPES[d].name) == len && memcmp(DTYPES[d].name, name, len) == 0) return d;
    }
    return -1;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float wl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mant << 13)); /* inf, NaN keeps its payload */
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);
        /* Subnormal mant * 2^-24: normalise so the leading one becomes the implicit bit of a normal f32. */
        int e = 1;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        mant &= 0x3ffu;
        return f32_from_bits(sign | ((uint32_t)(e + 112) << 23) | (mant << 13));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

float wl_bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

uint16_t wl_f32_to_f16(float f) {
    uint32_t u = bits_from_f32(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    int exp = (int)((u >> 23) & 0xffu);
    uint32_t mant = u & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
    int e = exp - 112; /* binary16 biased exponent */
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        /* Below 2^-25 everything rounds to zero (2^-25 itself is the tie, which goes to the even zero). */
        if (e < -10) return sign;
        uint32_t m = mant | 0x800000u;
        int shift = 14 - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++; /* may carry into the smallest normal: correct */
        return (uint16_t)(sign | q);
    }
    uint32_t q = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++; /* a carry into exponent 31 gives infinity */
    return (uint16_t)(sign | q);
}

uint16_t wl_f32_to_bf16(float f) {
    uint32_t u = bits_from_f32(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays a (quiet) NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Nearest float; values at or beyond the midpoint between FLT_MAX and 2^128 round to infinity (done here
 * explicitly because an out-of-range double to float conversion is undefined in C). */
static float f64_to_f32(double d) {
    if (d != d) return signbit(d) ? -NAN : NAN;
    if (d >= 0x1.ffffffp+127) return INFINITY;
    if (d <= -0x1.ffffffp+127) return -INFINITY;
    return (float)d;
}

wl_status wl_convert_to_f32(float *dst, const void *src, int dtype, size_t n) {
    if (n == 0) return WL_OK;
    if (!dst || !src) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_convert_to_f32: NULL buffer");
    const uint8_t *s = src;
    switch (dtype) {
    case WL_DTYPE_F32:
        memmove(dst, s, n * sizeof(float)); /* n floats exist in dst, so the size cannot overflow */
        return WL_OK;
    case WL_DTYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = wl_f16_to_f32(wl_rd_u16(s + 2 * i));
        return WL_OK;
    case WL_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = wl_bf16_to_f32(wl_rd_u16(s + 2 * i));
        return WL_OK;
    case WL_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, sizeof d);
            dst[i] = f64_to_f32(d);
        }
        return WL_OK;
    default:
        return wl_fail(WL_STATUS_UNSUPPORTED, "cannot convert dtype %s to F32 (only F32, F16, BF16, F64)",
                       wl_dtype_name(dtype));
    }
}

wl_status wl_convert_from_f32(void *dst, const float *src, int dtype, size_t n) {
    if (n == 0) return WL_OK;
    if (!dst || !src) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_convert_from_f32: NULL buffer");
    uint8_t *d = dst;
    switch (dtype) {
    case WL_DTYPE_F32:
        memmove(d, src, n * sizeof(float));
        return WL_OK;
    case WL_DTYPE_F16:
    case WL_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = dtype == WL_DTYPE_F16 ? wl_f32_to_f16(src[i]) : wl_f32_to_bf16(src[i]);
            d[2 * i] = (uint8_t)(h & 0xffu);
            d[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return WL_OK;
    default:
        return wl_fail(WL_STATUS_UNSUPPORTED, "cannot convert F32 to dtype %s (only F32, F16, BF16)", wl_dtype_name(dtype));
    }
}
