/* util_safetensors.c: safetensors fixtures for the C tests and the fuzz seed corpus (st_fixture.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_fixture.h"

static size_t numel_of(const wl_test_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

uint8_t *wl_test_safetensors(const wl_test_tensor *tensors, int n, const char *metadata, size_t *len) {
    size_t cap = 64 + (metadata ? strlen(metadata) : 0), data = 0;
    for (int i = 0; i < n; i++) cap += strlen(tensors[i].name) + 128;
    char *hdr = malloc(cap);
    if (!hdr) return NULL;
    size_t o = (size_t)snprintf(hdr, cap, "{");
    if (metadata) o += (size_t)snprintf(hdr + o, cap - o, "\"__metadata__\":{%s}%s", metadata, n ? "," : "");
    for (int i = 0; i < n; i++) {
        const wl_test_tensor *t = &tensors[i];
        size_t bytes = 4 * numel_of(t);
        o += (size_t)snprintf(hdr + o, cap - o, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", t->name);
        for (int d = 0; d < t->ndim; d++) o += (size_t)snprintf(hdr + o, cap - o, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        o += (size_t)snprintf(hdr + o, cap - o, "],\"data_offsets\":[%zu,%zu]}", data, data + bytes);
        data += bytes;
    }
    o += (size_t)snprintf(hdr + o, cap - o, "}");
    size_t padded = (o + 7) / 8 * 8;
    *len = 8 + padded + data;
    uint8_t *buf = malloc(*len);
    if (buf) {
        for (int b = 0; b < 8; b++) buf[b] = (uint8_t)((uint64_t)padded >> (8 * b));
        memcpy(buf + 8, hdr, o);
        memset(buf + 8 + o, ' ', padded - o);
        uint8_t *p = buf + 8 + padded;
        for (int i = 0; i < n; i++) {
            size_t bytes = 4 * numel_of(&tensors[i]);
            if (bytes) memcpy(p, tensors[i].data, bytes); /* little-endian hosts, as the core requires */
            p += bytes;
        }
    }
    free(hdr);
    return buf;
}
