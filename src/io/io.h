/* io.h: internal helpers of the parsers in src/io shared with other C code: dtype names and single-value
 * half-precision conversions (exact, including subnormals, infinities and NaN payloads). */
#ifndef WL_IO_INTERNAL_H
#define WL_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "wl_io.h"

/* The wl_dtype whose safetensors name is the len bytes at name ("F32", "BF16", ...), or -1. */
int wl_dtype_from_name(const char *name, size_t len);

/* IEEE binary16 and bfloat16 bit patterns to f32 (exact: every value of both formats is a float). */
float wl_f16_to_f32(uint16_t h);
float wl_bf16_to_f32(uint16_t b);
/* f32 to binary16 / bfloat16 with round-to-nearest-even (NaN stays NaN, overflow gives infinity). */
uint16_t wl_f32_to_f16(float f);
uint16_t wl_f32_to_bf16(float f);

/* Little-endian reads from unaligned bytes. */
static inline uint16_t wl_rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t wl_rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t wl_rd_u64(const uint8_t *p) {
    return (uint64_t)wl_rd_u32(p) | ((uint64_t)wl_rd_u32(p + 4) << 32);
}

#endif
