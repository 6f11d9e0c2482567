/* st_fixture.h: safetensors files for the C tests and the fuzz seed corpus. The package writes safetensors in
 * web/formats/safetensors.js; the C core only parses them, so its tests build their inputs here. */
#ifndef WL_ST_FIXTURE_H
#define WL_ST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

typedef struct wl_test_tensor {
    const char *name; /* written into the header as given: JSON-escaped by the caller */
    const float *data;
    int ndim;
    int64_t shape[4];
} wl_test_tensor;

/* A safetensors file of F32 tensors in the given order, with `metadata` (the members of an object, e.g.
 * "\"format\":\"pt\"", or NULL) as its __metadata__, the header padded with spaces to a multiple of 8 bytes as the
 * reference writer does. Returns malloc'd bytes (NULL when out of memory), *len their size. */
uint8_t *wl_test_safetensors(const wl_test_tensor *tensors, int n, const char *metadata, size_t *len);

#endif
