/* wl_status.h: status codes returned by every public weblora C function, and the error message.
 *
 * Every function that can fail returns a wl_status. On failure a human-readable reason is kept and can be read
 * with wl_last_error() until the next failing call. Bad input (files, shapes, arguments) never aborts the
 * process; only a broken internal invariant does (WL_ASSERT in src/core/core.h).
 */
#ifndef WL_STATUS_H
#define WL_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum wl_status {
    WL_OK = 0,
    WL_STATUS_INVALID_ARGUMENT = 1, /* an argument from the caller is out of range or NULL */
    WL_STATUS_BAD_FORMAT = 2,       /* a file or buffer is malformed, truncated or inconsistent */
    WL_STATUS_UNSUPPORTED = 3,      /* well-formed but not supported (dtype, architecture, option) */
    WL_STATUS_SHAPE_MISMATCH = 4,   /* a tensor's shape disagrees with the model or adapter */
    WL_STATUS_OUT_OF_MEMORY = 5,    /* an allocation failed (or the size would overflow) */
    WL_STATUS_NOT_FOUND = 6,        /* a named tensor, module or adapter does not exist */
    WL_STATUS_NUMERIC = 7,          /* a NaN or Inf appeared where a finite number is required */
    WL_STATUS_BAD_STATE = 8,        /* the object is not in a state that allows the call */
} wl_status;

/* Reason for the most recent failure, or "" if none. The pointer stays valid until the next failing call. */
const char *wl_last_error(void);

/* Short stable name of a status ("ok", "bad_format", ...). */
const char *wl_status_name(wl_status status);

/* Forget the last error message. */
void wl_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
