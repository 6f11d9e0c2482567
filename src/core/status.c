/* status.c: error messages and the abort on a broken internal invariant. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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
