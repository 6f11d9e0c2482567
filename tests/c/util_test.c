/* util_test.c: the helpers declared in testutil.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wl_status.h"

int wl_test_failures = 0;
int wl_test_checks = 0;

int wl_test_close(const char *what, const float *got, const float *want, size_t n, float atol, float rtol) {
    double max_abs = 0.0, max_rel = 0.0;
    size_t worst = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        double rel = d / (fabs((double)want[i]) + 1e-12);
        int ok = d <= atol + rtol * fabs((double)want[i]);
        if (!(d == d)) ok = 0; /* NaN */
        if (!ok && bad++ == 0) worst = i;
        if (d > max_abs || !(d == d)) {
            max_abs = d;
            if (bad == 0) worst = i;
        }
        if (rel > max_rel) max_rel = rel;
    }
    wl_test_checks++;
    printf("  %-48s n=%-8zu max_abs=%.3g max_rel=%.3g%s\n", what, n, max_abs, max_rel, bad ? "  FAIL" : "");
    if (bad) {
        wl_test_failures++;
        fprintf(stderr, "FAIL %s: %zu of %zu values outside atol=%g rtol=%g; first at [%zu]: got %.9g want %.9g\n",
                what, bad, n, atol, rtol, worst, got[worst], want[worst]);
        return 0;
    }
    return 1;
}

int wl_test_summary(const char *name) {
    printf("%s: %d checks, %d failures\n", name, wl_test_checks, wl_test_failures);
    if (wl_test_checks == 0) {
        fprintf(stderr, "FAIL %s: no check ran, so nothing was tested\n", name);
        return 1;
    }
    return wl_test_failures ? 1 : 0;
}

uint8_t *wl_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        /* Every file a test reads is required: a missing one is a failure, never a silent skip. */
        wl_test_checks++;
        wl_test_failures++;
        fprintf(stderr, "FAIL test data missing: %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    if (!buf || (size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size)) {
        wl_test_checks++;
        wl_test_failures++;
        fprintf(stderr, "FAIL cannot read %s\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static const char *join(const char *dir, const char *rel) {
    static char slots[8][1024];
    static int next = 0;
    char *out = slots[next++ & 7];
    snprintf(out, sizeof slots[0], "%s/%s", dir, rel);
    return out;
}

const char *wl_shared_path(const char *rel) { return join(WL_SHARED_DIR, rel); }
const char *wl_repo_path(const char *rel) { return join(WL_REPO_DIR, rel); }

void wl_test_fill(float *x, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = scale * (2.0f * (float)(s >> 40) / 16777216.0f - 1.0f);
    }
}
