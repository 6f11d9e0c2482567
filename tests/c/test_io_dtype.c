/* test_io_dtype.c: dtype names and sizes, and the conversions to f32: every F16 and BF16 bit pattern against
 * an independent formula, round-to-nearest-even back to F16/BF16, F64 narrowing at the float range edges,
 * unaligned sources and the refused dtypes. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "io/io.h"
#include "testutil.h"
#include "wl_io.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_names(void) {
    static const struct {
        int dtype;
        const char *name;
        size_t size;
    } want[] = {
        {WL_DTYPE_F32, "F32", 4},   {WL_DTYPE_F16, "F16", 2},   {WL_DTYPE_BF16, "BF16", 2},
        {WL_DTYPE_F64, "F64", 8},   {WL_DTYPE_I32, "I32", 4},   {WL_DTYPE_I64, "I64", 8},
        {WL_DTYPE_U8, "U8", 1},     {WL_DTYPE_I8, "I8", 1},     {WL_DTYPE_BOOL, "BOOL", 1},
        {WL_DTYPE_I16, "I16", 2},   {WL_DTYPE_U16, "U16", 2},   {WL_DTYPE_U32, "U32", 4},
        {WL_DTYPE_U64, "U64", 8},   {WL_DTYPE_F8_E4M3, "F8_E4M3", 1}, {WL_DTYPE_F8_E5M2, "F8_E5M2", 1},
    };
    CHECK(sizeof want / sizeof want[0] == WL_DTYPE_COUNT);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_MSG(wl_dtype_size(want[i].dtype) == want[i].size, "size of %s", want[i].name);
        CHECK_MSG(strcmp(wl_dtype_name(want[i].dtype), want[i].name) == 0, "name of %d", want[i].dtype);
        CHECK_MSG(wl_dtype_from_name(want[i].name, strlen(want[i].name)) == want[i].dtype, "lookup of %s", want[i].name);
    }
    CHECK(wl_dtype_size(-1) == 0 && wl_dtype_size(WL_DTYPE_COUNT) == 0);
    CHECK(strcmp(wl_dtype_name(99), "unknown") == 0);
    CHECK(wl_dtype_from_name("f32", 3) == -1);
    CHECK(wl_dtype_from_name("F4", 2) == -1);
    CHECK(wl_dtype_from_name("F8_E8M0", 7) == -1);
    CHECK(wl_dtype_from_name("F32", 2) == -1); /* "F3" */
    CHECK(wl_dtype_from_name("F32x", 4) == -1);
    CHECK(wl_dtype_from_name(NULL, 0) == -1);
}

/* binary16 value by its definition. */
static double f16_reference(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double v;
    if (exp == 0) v = ldexp(mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

static void test_f16(void) {
    int bad = 0, bad_back = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = wl_f16_to_f32((uint16_t)h);
        double ref = f16_reference((uint16_t)h);
        int exp = (h >> 10) & 31, mant = h & 1023;
        if (exp == 31 && mant) {
            /* NaN: keeps its sign and payload in the top mantissa bits. */
            if (!isnan(f) || (bits(f) >> 31) != (h >> 15) || ((bits(f) >> 13) & 1023) != (uint32_t)mant) bad++;
            if (!isnan(wl_f16_to_f32(wl_f32_to_f16(f)))) bad_back++;
            continue;
        }
        if ((double)f != ref || !signbit(f) != !signbit(ref)) {
            if (bad++ < 5) fprintf(stderr, "f16 0x%04x -> %.9g, want %.9g\n", h, (double)f, ref);
        }
        if (wl_f32_to_f16(f) != h && bad_back++ < 5) fprintf(stderr, "f16 0x%04x back to 0x%04x\n", h, wl_f32_to_f16(f));
    }
    CHECK_MSG(bad == 0, "%d F16 patterns convert wrongly", bad);
    CHECK_MSG(bad_back == 0, "%d F16 patterns do not round-trip", bad_back);

    /* Round to nearest even between neighbouring finite halves (the midpoint is exact in f32). */
    int bad_mid = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float lo = wl_f16_to_f32((uint16_t)h), hi = wl_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)(((double)lo + (double)hi) / 2);
        uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (wl_f32_to_f16(mid) != want) bad_mid++;
        if (wl_f32_to_f16(nextafterf(mid, 0.0f)) != h) bad_mid++;
        if (wl_f32_to_f16(nextafterf(mid, INFINITY)) != h + 1) bad_mid++;
        if (wl_f32_to_f16(-mid) != (want | 0x8000)) bad_mid++;
    }
    CHECK_MSG(bad_mid == 0, "%d F16 rounding cases wrong", bad_mid);
    CHECK(wl_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(wl_f32_to_f16(65519.99f) == 0x7bff);
    CHECK(wl_f32_to_f16(65520.0f) == 0x7c00); /* the tie goes to the even neighbour, infinity */
    CHECK(wl_f32_to_f16(1e10f) == 0x7c00 && wl_f32_to_f16(-1e10f) == 0xfc00);
    CHECK(wl_f32_to_f16(ldexpf(1.0f, -25)) == 0);                    /* half the smallest subnormal: tie to 0 */
    CHECK(wl_f32_to_f16(nextafterf(ldexpf(1.0f, -25), 1.0f)) == 1); /* just above: smallest subnormal */
    CHECK(wl_f32_to_f16(ldexpf(1.0f, -26)) == 0);
    CHECK(wl_f32_to_f16(FLT_MIN / 4) == 0);
    CHECK(wl_f32_to_f16(-0.0f) == 0x8000);
    CHECK(wl_f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400); /* rounds up from the largest subnormal into the normals */
    CHECK(wl_f32_to_f16(INFINITY) == 0x7c00 && (wl_f32_to_f16(NAN) & 0x7fff) > 0x7c00);
    CHECK(wl_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(wl_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    CHECK(wl_f16_to_f32(0x3c00) == 1.0f && wl_f16_to_f32(0xc000) == -2.0f);
    CHECK(isinf(wl_f16_to_f32(0xfc00)) && wl_f16_to_f32(0xfc00) < 0);
}

static void test_bf16(void) {
    int bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float f = wl_bf16_to_f32((uint16_t)b);
        if (bits(f) != b << 16) bad++;
        int is_nan = ((b >> 7) & 0xff) == 0xff && (b & 0x7f);
        if (!is_nan && wl_f32_to_bf16(f) != b) bad++;
        if (is_nan && !isnan(wl_bf16_to_f32(wl_f32_to_bf16(f)))) bad++;
    }
    CHECK_MSG(bad == 0, "%d BF16 patterns wrong", bad);
    CHECK(wl_bf16_to_f32(0x3f80) == 1.0f && wl_bf16_to_f32(0xc040) == -3.0f);
    /* Rounding: 1 + 2^-8 is the tie between 1 and 1 + 2^-7 (even: 1); a hair above goes up. */
    CHECK(wl_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80);
    CHECK(wl_f32_to_bf16(1.0f + ldexpf(1.0f, -8) + ldexpf(1.0f, -20)) == 0x3f81);
    CHECK(wl_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)) == 0x3f82); /* tie from odd 0x3f81 goes up to even */
    CHECK(wl_f32_to_bf16(FLT_MAX) == 0x7f80);                      /* rounds to infinity */
}

static void test_convert(void) {
    /* Unaligned sources: every reader goes through bytes. */
    uint8_t raw[64 + 1];
    float out[8], want[8];
    const float vals[8] = {1.0f, -2.5f, 0.0f, -0.0f, 3.0e38f, 1e-40f, 65504.0f, 0.333333343f};

    memcpy(raw + 1, vals, sizeof vals);
    CHECK_OK(wl_convert_to_f32(out, raw + 1, WL_DTYPE_F32, 8));
    CHECK(memcmp(out, vals, sizeof vals) == 0);

    for (int i = 0; i < 8; i++) {
        uint16_t h = wl_f32_to_f16(vals[i]);
        raw[1 + 2 * i] = (uint8_t)h;
        raw[2 + 2 * i] = (uint8_t)(h >> 8);
        want[i] = wl_f16_to_f32(h);
    }
    CHECK_OK(wl_convert_to_f32(out, raw + 1, WL_DTYPE_F16, 8));
    CHECK(memcmp(out, want, sizeof want) == 0);
    CHECK(out[0] == 1.0f && out[1] == -2.5f && isinf(out[4]) && out[6] == 65504.0f);

    for (int i = 0; i < 8; i++) {
        uint16_t b = wl_f32_to_bf16(vals[i]);
        raw[1 + 2 * i] = (uint8_t)b;
        raw[2 + 2 * i] = (uint8_t)(b >> 8);
        want[i] = wl_bf16_to_f32(b);
    }
    CHECK_OK(wl_convert_to_f32(out, raw + 1, WL_DTYPE_BF16, 8));
    CHECK(memcmp(out, want, sizeof want) == 0);
    CHECK(out[1] == -2.5f && out[4] > 2.9e38f);

    /* F64 narrowing: correctly rounded; the FLT_MAX / 2^128 midpoint and beyond give infinity. */
    const double dvals[8] = {0.1, -1e-310, 0x1.fffffefffffffp+127, 0x1.ffffffp+127, -0x1.ffffffp+127, 1e300, NAN, -0.0};
    memcpy(raw + 1, dvals, sizeof dvals);
    CHECK_OK(wl_convert_to_f32(out, raw + 1, WL_DTYPE_F64, 8));
    CHECK(out[0] == 0.1f);
    CHECK(out[1] == -0.0f && signbit(out[1]));
    CHECK(out[2] == FLT_MAX);
    CHECK(isinf(out[3]) && out[3] > 0);
    CHECK(isinf(out[4]) && out[4] < 0);
    CHECK(isinf(out[5]));
    CHECK(isnan(out[6]));
    CHECK(out[7] == 0.0f && signbit(out[7]));

    /* Refused dtypes name themselves; arguments. */
    const int refused[] = {WL_DTYPE_I32, WL_DTYPE_I64, WL_DTYPE_U8, WL_DTYPE_I8, WL_DTYPE_BOOL, WL_DTYPE_I16,
                           WL_DTYPE_U16, WL_DTYPE_U32, WL_DTYPE_U64, WL_DTYPE_F8_E4M3, WL_DTYPE_F8_E5M2, 99};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        CHECK_STATUS(wl_convert_to_f32(out, raw, refused[i], 1), WL_STATUS_UNSUPPORTED);
        CHECK_MSG(strstr(wl_last_error(), wl_dtype_name(refused[i])) != NULL, "message \"%s\"", wl_last_error());
    }
    CHECK_OK(wl_convert_to_f32(NULL, NULL, WL_DTYPE_F32, 0));
    CHECK_STATUS(wl_convert_to_f32(NULL, raw, WL_DTYPE_F32, 1), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_convert_to_f32(out, NULL, WL_DTYPE_F16, 1), WL_STATUS_INVALID_ARGUMENT);
}

/* The writer's direction: bytes in file order (little-endian, unaligned destination), values the single-value
 * conversions give (themselves checked bit by bit above). */
static void test_convert_from_f32(void) {
    const float vals[6] = {1.0f, -2.5f, 65520.0f, 1e-8f, -0.0f, 0.1f};
    uint8_t raw[2 * 6 + 1];
    CHECK_OK(wl_convert_from_f32(raw + 1, vals, WL_DTYPE_F16, 6));
    for (int i = 0; i < 6; i++) CHECK(wl_rd_u16(raw + 1 + 2 * i) == wl_f32_to_f16(vals[i]));
    CHECK(raw[1] == 0x00 && raw[2] == 0x3c); /* 1.0 = 0x3c00, low byte first */
    CHECK(wl_rd_u16(raw + 5) == 0x7c00);     /* 65520 rounds to infinity in binary16 */
    CHECK_OK(wl_convert_from_f32(raw + 1, vals, WL_DTYPE_BF16, 6));
    for (int i = 0; i < 6; i++) CHECK(wl_rd_u16(raw + 1 + 2 * i) == wl_f32_to_bf16(vals[i]));
    float back[6];
    CHECK_OK(wl_convert_from_f32(back, vals, WL_DTYPE_F32, 6));
    CHECK(memcmp(back, vals, sizeof vals) == 0);
    CHECK_STATUS(wl_convert_from_f32(raw, vals, WL_DTYPE_F64, 1), WL_STATUS_UNSUPPORTED);
    CHECK_MSG(strstr(wl_last_error(), "F64") != NULL, "message \"%s\"", wl_last_error());
    CHECK_OK(wl_convert_from_f32(NULL, NULL, WL_DTYPE_F16, 0));
    CHECK_STATUS(wl_convert_from_f32(NULL, vals, WL_DTYPE_F16, 1), WL_STATUS_INVALID_ARGUMENT);
}

int main(void) {
    test_names();
    test_f16();
    test_bf16();
    test_convert();
    test_convert_from_f32();
    return wl_test_summary("test_io_dtype");
}
