/* testutil.h: a small test harness for the C unit tests: checks that count failures, array comparison that
 * prints the max abs / rel error and where it was, file reading, and the paths to test data. */
#ifndef WL_TESTUTIL_H
#define WL_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int wl_test_failures;
extern int wl_test_checks;

#define CHECK(cond)                                                                                        \
    do {                                                                                                   \
        wl_test_checks++;                                                                                  \
        if (!(cond)) {                                                                                     \
            wl_test_failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                \
        }                                                                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                               \
    do {                                                                                                   \
        wl_test_checks++;                                                                                  \
        if (!(cond)) {                                                                                     \
            wl_test_failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                \
            fprintf(stderr, __VA_ARGS__);                                                                  \
            fputc('\n', stderr);                                                                           \
        }                                                                                                  \
    } while (0)

/* Check a wl_status call succeeds; prints wl_last_error() otherwise. */
#define CHECK_OK(expr)                                                                                     \
    do {                                                                                                   \
        wl_test_checks++;                                                                                  \
        int st_ = (int)(expr);                                                                             \
        if (st_ != 0) {                                                                                    \
            wl_test_failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s -> status %d: %s\n", __FILE__, __LINE__, #expr, st_,           \
                    wl_last_error());                                                                      \
        }                                                                                                  \
    } while (0)

/* Check a call fails with the given status and a non-empty message. */
#define CHECK_STATUS(expr, want)                                                                           \
    do {                                                                                                   \
        wl_test_checks++;                                                                                  \
        wl_clear_error();                                                                                  \
        int st_ = (int)(expr);                                                                             \
        if (st_ != (int)(want) || wl_last_error()[0] == '\0') {                                            \
            wl_test_failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s -> status %d (want %d), message \"%s\"\n", __FILE__, __LINE__, \
                    #expr, st_, (int)(want), wl_last_error());                                             \
        }                                                                                                  \
    } while (0)

/* Compare n floats: passes when |a - b| <= atol + rtol * |b| everywhere. Prints max abs and rel error. */
int wl_test_close(const char *what, const float *got, const float *want, size_t n, float atol, float rtol);

/* End of a test program: prints a summary, returns the exit code (1 on any failure, and when no check ran). */
int wl_test_summary(const char *name);

/* Read a whole file; returns NULL on failure, which counts as a failed check naming the path. Caller frees. */
uint8_t *wl_test_read_file(const char *path, size_t *len);
/* Path helpers: WL_SHARED_DIR "/" rel and WL_REPO_DIR "/" rel into a static buffer (rotating, 8 slots). */
const char *wl_shared_path(const char *rel);
const char *wl_repo_path(const char *rel);

/* Deterministic random fill in [-scale, scale). */
void wl_test_fill(float *x, size_t n, uint64_t seed, float scale);

#endif
