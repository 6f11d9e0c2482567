/* test_quant.c: 8-bit and 4-bit frozen weights. Block quantisation against the numpy reference of ggml's Q8_0 /
 * Q4_1 rules (tests/ref/make_quant_ref.py), the per-value error bound of every block, refusals; the SIMD twin against
 * the scalar kernels; the quantised products (panels and decoding GEMV) against a double-precision product with the
 * dequantised weight, on odd shapes and with panels forced small; a quantised model: streaming F16 / BF16 chunks
 * equals quantising the f32 tensor, its logits and LoRA gradients equal an f32 model holding the dequantised weights,
 * PiSSA keeps its residual quantised again (QPiSSA), and the operations a quantised base cannot do are refused. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_fixture.h"
#include "io/io.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "model/model.h"
#include "testutil.h"
#include "weblora.h"
#include "wl_threads.h"

static const int STORAGES[2] = {WL_STORAGE_Q8, WL_STORAGE_Q4};
static const char *storage_name(int s) { return s == WL_STORAGE_Q8 ? "q8" : "q4"; }

static wl_qweight quantise(int storage, const float *x, int rows, int cols) {
    wl_qweight w;
    CHECK_OK(wl_qweight_alloc(&w, storage, rows, cols));
    for (int r = 0; r < rows; r++) CHECK_OK(wl_qweight_quantize_row(&w, r, x + (size_t)r * cols, "test weight"));
    return w;
}

/* ---- blocks ---- */

static const float *st_f32(const uint8_t *buf, const wl_safetensors *st, const char *name, size_t want) {
    int i = wl_st_find(st, name);
    CHECK_MSG(i >= 0 && st->tensors[i].numel == want, "reference tensor %s missing or of the wrong size", name);
    return i >= 0 ? (const float *)(buf + st->data_start + st->tensors[i].begin) : NULL;
}

static void test_reference_blocks(void) {
    size_t len;
    const char *path = wl_repo_path("tests/ref/quant/blocks.safetensors");
    uint8_t *buf = wl_test_read_file(path, &len);
    if (!buf) return;
    wl_safetensors *st = NULL;
    CHECK_OK(wl_st_parse(buf, len, &st));
    if (!st) return;
    const int ix = wl_st_find(st, "x");
    CHECK(ix >= 0 && st->tensors[ix].ndim == 2);
    const int rows = (int)st->tensors[ix].shape[0], cols = (int)st->tensors[ix].shape[1], blocks = (cols + 31) / 32;
    const float *x = st_f32(buf, st, "x", (size_t)rows * cols);
    for (int si = 0; si < 2 && x; si++) {
        const int s = STORAGES[si];
        char name[16];
        snprintf(name, sizeof name, "%s_d", storage_name(s));
        const float *d = st_f32(buf, st, name, (size_t)rows * blocks);
        const float *mins = s == WL_STORAGE_Q4 ? st_f32(buf, st, "q4_m", (size_t)rows * blocks) : NULL;
        snprintf(name, sizeof name, "%s_q", storage_name(s));
        const int iq = wl_st_find(st, name);
        CHECK(iq >= 0 && st->tensors[iq].numel == (uint64_t)rows * blocks * 32);
        if (!d || iq < 0 || (s == WL_STORAGE_Q4 && !mins)) continue;
        const int8_t *q = (const int8_t *)(buf + st->data_start + st->tensors[iq].begin);
        wl_qweight w = quantise(s, x, rows, cols);
        int bad_d = 0, bad_q = 0;
        for (int r = 0; r < rows; r++) {
            for (int b = 0; b < blocks; b++) {
                bad_d += memcmp(&w.d[r * blocks + b], &d[r * blocks + b], 4) != 0;
                if (mins) bad_d += memcmp(&w.m[r * blocks + b], &mins[r * blocks + b], 4) != 0;
            }
            for (int c = 0; c < blocks * 32; c++) {
                /* past cols the stored quants must stand for 0 (the reference pads with 0) */
                bad_q += wl_qweight_int(&w, r, c) != q[(size_t)r * blocks * 32 + c];
            }
        }
        CHECK_MSG(bad_d == 0 && bad_q == 0, "%s: %d scales or minimums and %d quants differ from the numpy reference",
                  storage_name(s), bad_d, bad_q);
        printf("  %s vs numpy reference: %d rows x %d cols, scales and quants identical\n", storage_name(s), rows, cols);
        wl_qweight_free(&w);
    }
    wl_st_free(st);
    free(buf);
}

/* The bound of quant.h on |x - dequantised x| for every value of block b of row r of w, quantised from the n values
 * at xb: Q8 d / 2 + 127 |d - d16|, Q4 d / 2 + 15 |d - d16| + |m - m16|, with d and m the unrounded scale and
 * minimum (and a relative 1e-6 for their f32 arithmetic). */
static double block_bound(const wl_qweight *w, int r, int b, const float *xb, int n) {
    float amax = 0.0f, lo = xb[0], hi = xb[0];
    for (int j = 0; j < n; j++) {
        amax = fmaxf(amax, fabsf(xb[j]));
        lo = fminf(lo, xb[j]);
        hi = fmaxf(hi, xb[j]);
    }
    const double d = w->storage == WL_STORAGE_Q8 ? amax / 127.0 : ((double)hi - lo) / 15.0;
    const double d16 = w->d[r * w->blocks + b];
    return (w->storage == WL_STORAGE_Q8 ? 0.5 * d + 127.0 * fabs(d - d16)
                                        : 0.5 * d + 15.0 * fabs(d - d16) + fabs(lo - w->m[r * w->blocks + b])) *
               (1.0 + 1e-6) +
           1e-30;
}

/* Every value within the bound of quant.h, for widths around the block size and scales from tiny to large. The
 * bound is tight: a rounding off by one (or a scale not rounded to f16 where it is used) breaks it. */
static void test_error_bounds(void) {
    const int widths[] = {1, 5, 31, 32, 33, 64, 77, 100};
    const float scales[] = {1e-6f, 0.02f, 1.0f, 300.0f};
    for (int si = 0; si < 2; si++) {
        const int s = STORAGES[si];
        double worst = 0.0;
        int violations = 0;
        for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
            for (size_t ki = 0; ki < sizeof scales / sizeof *scales; ki++) {
                const int rows = 5, cols = widths[wi];
                float *x = malloc((size_t)rows * cols * sizeof(float));
                wl_test_fill(x, (size_t)rows * cols, 17 + wi * 31 + ki, scales[ki]);
                wl_qweight w = quantise(s, x, rows, cols);
                for (int r = 0; r < rows; r++) {
                    for (int b = 0; b * 32 < cols; b++) {
                        const int n = cols - b * 32 < 32 ? cols - b * 32 : 32;
                        const float *xb = x + (size_t)r * cols + b * 32;
                        float amax = 0.0f;
                        for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(xb[j]));
                        const double bound = block_bound(&w, r, b, xb, n);
                        for (int j = 0; j < n; j++) {
                            const double err = fabs((double)wl_qweight_value(&w, r, b * 32 + j) - xb[j]);
                            if (err > bound) violations++;
                            /* (the 1e-6 scale's f16 scales and minimums are subnormal or 0, which the bound
                             * allows; the worst error is reported for blocks in f16's normal range) */
                            if (amax >= 6.2e-5f && err / amax > worst) worst = err / amax;
                        }
                    }
                }
                wl_qweight_free(&w);
                free(x);
            }
        }
        CHECK_MSG(violations == 0, "%s: %d values outside the per-block bound", storage_name(s), violations);
        printf("  %s per-block bound holds; worst error / block amax = %.4g\n", storage_name(s), worst);
    }
}

static void test_refusals(void) {
    for (int si = 0; si < 2; si++) {
        wl_qweight w;
        CHECK_OK(wl_qweight_alloc(&w, STORAGES[si], 1, 40));
        float x[40];
        wl_test_fill(x, 40, 3, 1.0f);
        x[35] = NAN;
        CHECK_STATUS(wl_qweight_quantize_row(&w, 0, x, "w"), WL_STATUS_NUMERIC);
        x[35] = INFINITY;
        CHECK_STATUS(wl_qweight_quantize_row(&w, 0, x, "w"), WL_STATUS_NUMERIC);
        x[35] = 1e10f; /* its scale would be beyond f16 */
        CHECK_STATUS(wl_qweight_quantize_row(&w, 0, x, "w"), WL_STATUS_NUMERIC);
        wl_qweight_free(&w);
    }
}

/* ---- kernels ---- */

/* out (M, rows) = A (M, cols) W^T in double, with W dequantised by the scalar reference. */
static void ref_nt(const float *A, int M, const wl_qweight *w, double *out, double *mag) {
    for (int m = 0; m < M; m++)
        for (int j = 0; j < w->rows; j++) {
            double s = 0.0, g = 0.0;
            for (int c = 0; c < w->cols; c++) {
                const double p = (double)A[(size_t)m * w->cols + c] * wl_qweight_value(w, j, c);
                s += p;
                g += fabs(p);
            }
            out[(size_t)m * w->rows + j] = s;
            mag[(size_t)m * w->rows + j] = g;
        }
}

static int close_to(const float *got, const double *want, const double *mag, size_t n, double *worst) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        /* f32 sums of up to a few hundred products: measured relative error to sum |p| below 3e-7 */
        const double e = fabs(got[i] - want[i]) / (mag[i] + 1e-30);
        if (!(e <= 1e-5)) bad++;
        if (e > *worst) *worst = e;
    }
    return bad;
}

/* The SIMD twins, one per flavour of the f32 tables (both compile kernels/wasmsimd/quant_wasmsimd.c). */
static const char *const TWINS[2] = {"wasmsimd", "wasmrelaxed"};

static void test_kernels_twin(void) {
#ifdef WL_HAVE_WASMSIMD
    const int shapes[][2] = {{1, 1}, {3, 7}, {7, 31}, {17, 33}, {5, 77}, {9, 160}};
    for (int si = 0; si < 2; si++) {
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            const int rows = shapes[k][0], cols = shapes[k][1];
            float *x = malloc((size_t)rows * cols * sizeof(float));
            wl_test_fill(x, (size_t)rows * cols, 5 + k, 1.0f);
            wl_qweight w = quantise(STORAGES[si], x, rows, cols);
            float *a = malloc((size_t)rows * cols * sizeof(float)), *b = malloc((size_t)rows * cols * sizeof(float));
            wl_qkernels_scalar.dequantize_rows(&w, 0, rows, a, cols);
            for (int t = 0; t < 2; t++) {
                const wl_kernels *table = wl_kernels_by_name(TWINS[t]);
                if (!table) continue;
                wl_qkernels_for(table)->dequantize_rows(&w, 0, rows, b, cols);
                CHECK_MSG(memcmp(a, b, (size_t)rows * cols * sizeof(float)) == 0,
                          "%s %s dequantize_rows %dx%d: SIMD != scalar", TWINS[t], storage_name(STORAGES[si]), rows, cols);
            }
            float *x1 = malloc((size_t)cols * sizeof(float)), *xhat = malloc((size_t)cols * sizeof(float));
            int16_t *xq = malloc((size_t)w.blocks * 32 * sizeof(int16_t));
            int32_t *xs = malloc((size_t)w.blocks * 4 * sizeof(int32_t));
            wl_test_fill(x1, (size_t)cols, 99, 1.0f);
            const float sx = wl_quantize_activation(x1, cols, w.blocks * 32, xq, xs);
            for (int c = 0; c < cols; c++) {
                xhat[c] = (float)xq[c] * sx;
                CHECK(fabsf(xhat[c] - x1[c]) <= 0.5001f * sx); /* the quantised activation is the nearest step */
            }
            float ys[17], yv[17];
            wl_qkernels_scalar.gemv_rows(&w, xq, xs, sx, 0, rows, ys);
            for (int t = 0; t < 2; t++) {
                const wl_kernels *table = wl_kernels_by_name(TWINS[t]);
                if (!table) continue;
                wl_qkernels_for(table)->gemv_rows(&w, xq, xs, sx, 0, rows, yv);
                CHECK_MSG(memcmp(ys, yv, (size_t)rows * sizeof(float)) == 0, "%s %s gemv %dx%d: SIMD != scalar",
                          TWINS[t], storage_name(STORAGES[si]), rows, cols);
            }
            double want[17], mag[17], worst = 0.0;
            ref_nt(xhat, 1, &w, want, mag); /* the product of the quantised activation with the dequantised weight */
            CHECK_MSG(close_to(ys, want, mag, (size_t)rows, &worst) == 0, "%s gemv %dx%d: worst relative error %.3g",
                      storage_name(STORAGES[si]), rows, cols, worst);
            /* kernel (b) on 3 rows of X (the middle one x1): each row bit for bit the GEMV's, SIMD == scalar */
            const size_t width = (size_t)w.blocks * 32;
            int16_t *wq = malloc((size_t)rows * width * sizeof(int16_t)), *wq2 = malloc((size_t)rows * width * sizeof(int16_t));
            int16_t *xq3 = malloc(3 * width * sizeof(int16_t));
            int32_t *xs3 = malloc((size_t)3 * w.blocks * 4 * sizeof(int32_t));
            float sx3[3], *x3 = malloc((size_t)3 * cols * sizeof(float)), c3[3 * 17], c3v[3 * 17];
            wl_test_fill(x3, (size_t)3 * cols, 123, 2.0f);
            memcpy(x3 + cols, x1, (size_t)cols * sizeof(float));
            for (int i = 0; i < 3; i++)
                sx3[i] = wl_quantize_activation(x3 + (size_t)i * cols, cols, (int)width, xq3 + i * width,
                                                xs3 + (size_t)i * w.blocks * 4);
            wl_qkernels_scalar.unpack_rows(&w, 0, rows, wq);
            wl_qkernels_scalar.idot_rows(&w, wq, 0, rows, 3, xq3, xs3, sx3, c3, 17);
            CHECK_MSG(memcmp(c3 + 17, ys, (size_t)rows * sizeof(float)) == 0, "%s idot_rows %dx%d != gemv_rows",
                      storage_name(STORAGES[si]), rows, cols);
            for (int t = 0; t < 2; t++) {
                const wl_kernels *table = wl_kernels_by_name(TWINS[t]);
                if (!table) continue;
                wl_qkernels_for(table)->unpack_rows(&w, 0, rows, wq2);
                CHECK(memcmp(wq, wq2, (size_t)rows * width * sizeof(int16_t)) == 0);
                memset(c3v, 0, sizeof c3v);
                wl_qkernels_for(table)->idot_rows(&w, wq2, 0, rows, 3, xq3, xs3, sx3, c3v, 17);
                int diff = 0;
                for (int i = 0; i < 3; i++) diff += memcmp(c3 + 17 * i, c3v + 17 * i, (size_t)rows * sizeof(float)) != 0;
                CHECK_MSG(diff == 0, "%s %s idot_rows %dx%d: SIMD != scalar", TWINS[t], storage_name(STORAGES[si]),
                          rows, cols);
            }
            free(wq);
            free(wq2);
            free(xq3);
            free(xs3);
            free(x3);
            free(x1);
            free(xhat);
            free(xq);
            free(xs);
            free(a);
            free(b);
            wl_qweight_free(&w);
            free(x);
        }
    }
    printf("  dequantize_rows, the integer gemv and idot_rows: SIMD == scalar bit for bit; idot_rows == gemv; gemv within\n"
           "  1e-5 of the double product\n");
#else
    printf("  SIMD twin not built here\n");
#endif
}

/* wl_qgemm_nt and wl_qgemm_nn against the double product, with an extra (LoRA-like) term, add and bias, for the
 * whole panel range and for panels forced to 16 rows; every kernel table. */
static void test_qgemm(void) {
    const int Ms[] = {1, 2, 3, 4, 7, 17};
    const int shapes[][2] = {{1, 1}, {7, 33}, {33, 17}, {100, 77}, {41, 64}};
    const char *tables[3] = {"scalar", "wasmsimd", "wasmrelaxed"};
    double worst = 0.0;
    int cases = 0;
    for (int ti = 0; ti < 3; ti++) {
        const wl_kernels *k = wl_kernels_by_name(tables[ti]);
        if (!k) continue;
        for (int si = 0; si < 2; si++) {
            for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
                const int rows = shapes[sh][0], cols = shapes[sh][1], r = 3;
                float *wf = malloc((size_t)rows * cols * sizeof(float));
                wl_test_fill(wf, (size_t)rows * cols, 300 + sh, 0.5f);
                wl_qweight w = quantise(STORAGES[si], wf, rows, cols);
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                    for (int mode = 0; mode < 4; mode++) {
                        /* modes 0, 1: training products (kernel a, exact); 2, 3: kernel b (integer: the GEMV for
                         * M <= 3, idot_rows beyond); 1 and 3 with the tile forced to 16 rows (kernel b: 12 rows of
                         * A per chunk, panels of 16 rows of W) */
                        const int M = Ms[mi], small = mode == 1 || mode == 3, decode = mode >= 2;
                        const int kernel = decode ? WL_QGEMM_INTEGER : WL_QGEMM_EXACT;
                        const size_t tile_n = small ? (size_t)16 * ((cols + 31) / 32 * 32) : wl_qgemm_tile_floats(cols, (size_t)rows * cols);
                        float *tile = malloc(tile_n * sizeof(float));
                        float *A = malloc((size_t)M * cols * sizeof(float)), *dY = malloc((size_t)M * rows * sizeof(float));
                        float *xa = malloc((size_t)M * r * sizeof(float)), *Bl = malloc((size_t)rows * r * sizeof(float));
                        float *Al = malloc((size_t)r * cols * sizeof(float)), *bias = malloc((size_t)rows * sizeof(float));
                        float *C = malloc((size_t)M * rows * sizeof(float)), *add = malloc((size_t)M * rows * sizeof(float));
                        float *dX = malloc((size_t)M * cols * sizeof(float)), *addx = malloc((size_t)M * cols * sizeof(float));
                        wl_test_fill(A, (size_t)M * cols, 1 + mi, 1.0f);
                        wl_test_fill(dY, (size_t)M * rows, 2 + mi, 1.0f);
                        wl_test_fill(xa, (size_t)M * r, 3, 1.0f);
                        wl_test_fill(Bl, (size_t)rows * r, 4, 1.0f);
                        wl_test_fill(Al, (size_t)r * cols, 5, 1.0f);
                        wl_test_fill(bias, (size_t)rows, 6, 1.0f);
                        wl_test_fill(add, (size_t)M * rows, 7, 1.0f);
                        wl_test_fill(addx, (size_t)M * cols, 8, 1.0f);
                        /* forward: C = add + A W^T + 0.5 xa Bl^T + bias */
                        wl_gemm_term extra = {xa, Bl, r, r, r, 0, 1, 0.5f};
                        wl_qgemm_nt(k, M, A, cols, &w, &extra, add, bias, C, rows, tile, tile_n, kernel);
                        double *want = malloc((size_t)M * (rows > cols ? rows : cols) * sizeof(double));
                        double *mag = malloc((size_t)M * (rows > cols ? rows : cols) * sizeof(double));
                        ref_nt(A, M, &w, want, mag);
                        if (decode) {
                            /* each activation may move by half a step of its row's int16 scale: that bound, scaled
                             * by 1e5 so close_to's 1e-5 relative tolerance adds exactly it */
                            for (int m = 0; m < M; m++) {
                                float amax = 0.0f;
                                for (int c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(A[(size_t)m * cols + c]));
                                for (int j = 0; j < rows; j++) {
                                    double wabs = 0.0;
                                    for (int c = 0; c < cols; c++) wabs += fabs(wl_qweight_value(&w, j, c));
                                    mag[(size_t)m * rows + j] += 1e5 * 0.5 * (amax / 32767.0) * wabs;
                                }
                            }
                        }
                        for (int m = 0; m < M; m++)
                            for (int j = 0; j < rows; j++) {
                                double e = 0.0, g = 0.0;
                                for (int q = 0; q < r; q++) {
                                    e += 0.5 * xa[m * r + q] * Bl[j * r + q];
                                    g += fabs(0.5 * xa[m * r + q] * Bl[j * r + q]);
                                }
                                const size_t i = (size_t)m * rows + j;
                                want[i] += e + add[i] + bias[j];
                                mag[i] += g + fabs(add[i]) + fabs(bias[j]);
                            }
                        int bad = close_to(C, want, mag, (size_t)M * rows, &worst);
                        CHECK_MSG(!bad, "%s %s qgemm_nt M=%d %dx%d tile %zu: %d bad", tables[ti],
                                  storage_name(STORAGES[si]), M, rows, cols, tile_n, bad);
                        /* accumulating into C itself (add == C) gives the same */
                        memcpy(C, add, (size_t)M * rows * sizeof(float));
                        wl_qgemm_nt(k, M, A, cols, &w, &extra, C, bias, C, rows, tile, tile_n, kernel);
                        bad = close_to(C, want, mag, (size_t)M * rows, &worst);
                        CHECK_MSG(!bad, "%s %s qgemm_nt add == C, M=%d %dx%d decode %d: %d bad", tables[ti],
                                  storage_name(STORAGES[si]), M, rows, cols, decode, bad);
                        /* backward: dX = addx + dY W + xa Al */
                        wl_gemm_term extra_nn = {xa, Al, r, cols, r, 0, 0, 1.0f};
                        wl_qgemm_nn(k, M, dY, rows, &w, &extra_nn, addx, dX, cols, tile, tile_n);
                        for (int m = 0; m < M; m++)
                            for (int c = 0; c < cols; c++) {
                                double s = addx[(size_t)m * cols + c], g = fabs(s);
                                for (int j = 0; j < rows; j++) {
                                    const double p = (double)dY[(size_t)m * rows + j] * wl_qweight_value(&w, j, c);
                                    s += p;
                                    g += fabs(p);
                                }
                                for (int q = 0; q < r; q++) {
                                    s += (double)xa[m * r + q] * Al[(size_t)q * cols + c];
                                    g += fabs((double)xa[m * r + q] * Al[(size_t)q * cols + c]);
                                }
                                want[(size_t)m * cols + c] = s;
                                mag[(size_t)m * cols + c] = g;
                            }
                        bad = close_to(dX, want, mag, (size_t)M * cols, &worst);
                        CHECK_MSG(!bad, "%s %s qgemm_nn M=%d %dx%d tile %zu: %d bad", tables[ti],
                                  storage_name(STORAGES[si]), M, rows, cols, tile_n, bad);
                        cases++;
                        free(want);
                        free(mag);
                        free(tile);
                        free(A);
                        free(dY);
                        free(xa);
                        free(Bl);
                        free(Al);
                        free(bias);
                        free(C);
                        free(add);
                        free(dX);
                        free(addx);
                    }
                }
                wl_qweight_free(&w);
                free(wf);
            }
        }
    }
    printf("  qgemm nt/nn: %d cases, worst error / sum|products| = %.3g\n", cases, worst);
}

/* ---- a quantised model ---- */

static wl_config small_llama(int dim, int tied, int qkv_bias) {
    wl_config c = {0};
    c.arch = WL_ARCH_LLAMA;
    c.dim = dim;
    c.hidden_dim = 72; /* two full blocks and a partial one */
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = dim / 4;
    c.vocab_size = 37;
    c.max_seq_len = 16;
    c.tied_embeddings = tied;
    c.qkv_bias = qkv_bias;
    c.rope_layout = WL_ROPE_HALF;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

static wl_config small_gpt2(void) {
    wl_config c = small_llama(40, 1, 0);
    c.arch = WL_ARCH_GPT2;
    c.n_kv_heads = 4;
    c.hidden_dim = 50;
    return c;
}

/* Values of tensor i in file layout (deterministic). */
static float *tensor_values(const wl_tensor_info *t, int i) {
    float *v = malloc(t->numel * sizeof(float));
    wl_test_fill(v, t->numel, 1000 + (uint64_t)i, 0.3f);
    if (t->ndim == 1 && strstr(t->name, "weight"))
        for (size_t j = 0; j < t->numel; j++) v[j] = 1.0f + v[j];
    return v;
}

/* Fill every tensor of m from tensor_values, as `dtype` bytes in chunks of `chunk` elements. */
static void fill_model(wl_model *m, int dtype, size_t chunk) {
    for (int i = 0; i < wl_model_n_tensors(m); i++) {
        wl_tensor_info t;
        CHECK_OK(wl_model_tensor(m, i, &t));
        float *v = tensor_values(&t, i);
        const size_t es = wl_dtype_size(dtype);
        uint8_t *bytes = malloc(t.numel * es);
        CHECK_OK(wl_convert_from_f32(bytes, v, dtype, t.numel));
        for (size_t e = 0; e < t.numel; e += chunk) {
            const size_t n = t.numel - e < chunk ? t.numel - e : chunk;
            CHECK_OK(wl_model_write_tensor(m, i, dtype, e, n, bytes + e * es));
        }
        free(bytes);
        free(v);
    }
}

/* The same tensors as fill_model's values after a trip through `dtype`, as f32, whole. */
static void fill_model_rounded(wl_model *m, int dtype) {
    for (int i = 0; i < wl_model_n_tensors(m); i++) {
        wl_tensor_info t;
        CHECK_OK(wl_model_tensor(m, i, &t));
        float *v = tensor_values(&t, i);
        uint8_t *bytes = malloc(t.numel * 4);
        CHECK_OK(wl_convert_from_f32(bytes, v, dtype, t.numel));
        CHECK_OK(wl_convert_to_f32(v, bytes, dtype, t.numel));
        CHECK_OK(wl_model_write_tensor(m, i, WL_DTYPE_F32, 0, t.numel, v));
        free(bytes);
        free(v);
    }
}

static int same_quantised(const wl_model *a, const wl_model *b) {
    if (a->n_qweights != b->n_qweights) return 0;
    for (int i = 0; i < a->n_qweights; i++) {
        const wl_qweight *x = &a->qweights[i], *y = &b->qweights[i];
        if (memcmp(x->q, y->q, (size_t)x->rows * x->row_bytes) != 0) return 0;
        if (memcmp(x->d, y->d, (size_t)x->rows * x->blocks * sizeof(float)) != 0) return 0;
    }
    return 1;
}

/* An f32 model holding the dequantised weights of q (and q's f32 tensors as they are). */
static wl_model *dequantised_twin(const wl_model *q) {
    wl_model *m = NULL;
    CHECK_OK(wl_model_create(wl_model_config(q), &m));
    if (!m) return NULL;
    for (int i = 0; i < wl_model_n_tensors(q); i++) {
        wl_tensor_info tq, tm;
        wl_model_tensor(q, i, &tq);
        wl_model_tensor(m, i, &tm);
        const int qi = q->tensors[i].qindex;
        if (qi < 0) {
            memcpy(tm.data, tq.data, tq.numel * sizeof(float));
        } else {
            /* memory layout (out, in) in both models */
            wl_qkernels_scalar.dequantize_rows(&q->qweights[qi], 0, q->qweights[qi].rows, tm.data, q->qweights[qi].cols);
        }
    }
    return m;
}

static void test_streaming(void) {
    const wl_config cfgs[3] = {small_llama(40, 0, 1), small_llama(64, 1, 0), small_gpt2()};
    for (int ci = 0; ci < 3; ci++) {
        for (int si = 0; si < 2; si++) {
            for (int di = 0; di < 3; di++) {
                const int dtype = di == 0 ? WL_DTYPE_F16 : di == 1 ? WL_DTYPE_BF16 : WL_DTYPE_F32;
                wl_model *streamed = NULL, *whole = NULL;
                CHECK_OK(wl_model_create_quantized(&cfgs[ci], STORAGES[si], &streamed));
                CHECK_OK(wl_model_create_quantized(&cfgs[ci], STORAGES[si], &whole));
                if (!streamed || !whole) return;
                fill_model(streamed, dtype, 13); /* chunks that split rows and blocks */
                fill_model_rounded(whole, dtype);
                CHECK_MSG(same_quantised(streamed, whole), "cfg %d %s: streaming %s chunks != quantising the f32 tensor", ci,
                          storage_name(STORAGES[si]), wl_dtype_name(dtype));
                /* the samples a model's identity is computed from are the values received, as in an f32 model */
                wl_model *plain = NULL;
                CHECK_OK(wl_model_create(&cfgs[ci], &plain));
                fill_model_rounded(plain, dtype);
                int differ = 0;
                for (int i = 0; i < wl_model_n_tensors(plain); i++) {
                    for (int k = 0; k < WL_TENSOR_SAMPLES && k < (int)plain->tensors[i].numel; k++) {
                        float a = 0.0f, b = 1.0f;
                        CHECK_OK(wl_model_tensor_sample(streamed, i, k, &a));
                        CHECK_OK(wl_model_tensor_sample(plain, i, k, &b));
                        differ += a != b;
                    }
                }
                CHECK_MSG(differ == 0, "cfg %d %s %s: %d tensor samples differ from the f32 model's", ci,
                          storage_name(STORAGES[si]), wl_dtype_name(dtype), differ);
                wl_model_free(plain);
                wl_model_free(streamed);
                wl_model_free(whole);
            }
        }
    }
    printf("  streaming F16 / BF16 / F32 in 13-element chunks == quantising the whole f32 tensor (Llama, GPT-2)\n");

    /* out of order, and a tensor started over */
    wl_config c = small_llama(40, 0, 0);
    wl_model *m = NULL;
    CHECK_OK(wl_model_create_quantized(&c, WL_STORAGE_Q8, &m));
    int idx;
    CHECK_OK(wl_model_find_tensor(m, "model.layers.0.self_attn.q_proj.weight", &idx));
    float v[80];
    wl_test_fill(v, 80, 1, 1.0f);
    CHECK_OK(wl_model_write_tensor(m, idx, WL_DTYPE_F32, 0, 50, v));
    CHECK_STATUS(wl_model_write_tensor(m, idx, WL_DTYPE_F32, 60, 10, v), WL_STATUS_INVALID_ARGUMENT);
    CHECK_OK(wl_model_write_tensor(m, idx, WL_DTYPE_F32, 0, 80, v));
    v[45] = NAN;
    CHECK_STATUS(wl_model_write_tensor(m, idx, WL_DTYPE_F32, 0, 80, v), WL_STATUS_NUMERIC);
    wl_tensor_info t;
    CHECK_OK(wl_model_tensor(m, idx, &t));
    CHECK(t.data == NULL && t.storage == WL_STORAGE_Q8);
    CHECK_OK(wl_model_find_tensor(m, "model.layers.0.input_layernorm.weight", &idx));
    CHECK_OK(wl_model_tensor(m, idx, &t));
    CHECK(t.data != NULL && t.storage == WL_STORAGE_F32);
    CHECK_STATUS(wl_model_create_quantized(&c, 7, &(wl_model *){NULL}), WL_STATUS_INVALID_ARGUMENT);
    wl_model_free(m);
}

static wl_adapter *every_module_adapter(wl_model *m, uint64_t seed, int dora) {
    const int model_rank = dora ? 0 : 2; /* embedding and head LoRA too (DoRA adapts linear modules only) */
    return wl_test_adapter(m, &(wl_test_adapter_spec){.rank = 2, .rank_cycle = 3, .alpha = 4.0f, .dora = dora,
                                                      .embed_rank = model_rank, .embed_alpha = 4.0f,
                                                      .head_rank = model_rank, .head_alpha = 4.0f, .fill_seed = seed,
                                                      .fill_scale = 0.3f});
}

/* Logits (training forward, prefill and decoding) and LoRA gradients of a quantised model equal those of an f32
 * model holding its dequantised weights: the quantised products are f32 products with the dequantised values. The
 * same for DoRA, whose row norms are those of the dequantised W + s B A. */
static void test_model_vs_dequantised(const char *table) {
    const wl_kernels *k = wl_kernels_by_name(table);
    if (!k) return;
    wl_kernels_set_default(k);
    const wl_config cfgs[3] = {small_llama(40, 0, 1), small_llama(64, 1, 0), small_gpt2()};
    for (int ci = 0; ci < 3; ci++) {
        for (int si = 0; si < 4; si++) {
            const int dora = si >= 2;
            wl_model *q = NULL;
            CHECK_OK(wl_model_create_quantized(&cfgs[ci], STORAGES[si % 2], &q));
            if (!q) return;
            fill_model(q, WL_DTYPE_F32, 1 << 20);
            wl_model *f = dequantised_twin(q);
            wl_model *ms[2] = {q, f};
            wl_adapter *ad[2];
            float loss[2], *logits[2], *grads[2];
            const int B = 2, T = 7, N = B * T, V = cfgs[ci].vocab_size;
            int32_t tok[14], tgt[14];
            for (int n = 0; n < N; n++) {
                tok[n] = (n * 11 + 3) % V;
                tgt[n] = (n * 5 + 1) % V;
            }
            for (int i = 0; i < 2; i++) {
                ad[i] = every_module_adapter(ms[i], 77, dora);
                CHECK_OK(wl_model_reserve(ms[i], B, T, WL_RESERVE_TRAIN));
                CHECK_OK(wl_model_set_adapters(ms[i], &ad[i], NULL, 1));
                CHECK_OK(wl_model_set_trainable(ms[i], ad[i]));
                CHECK_OK(wl_adapter_zero_grad(ad[i]));
                CHECK_OK(wl_model_forward(ms[i], tok, tgt, B, T, 0, WL_FORWARD_TRAIN, -100, &loss[i]));
                logits[i] = malloc((size_t)N * V * sizeof(float));
                memcpy(logits[i], wl_model_logits(ms[i]), (size_t)N * V * sizeof(float));
                CHECK_OK(wl_model_backward(ms[i]));
                grads[i] = wl_adapter_grads(ad[i]);
            }
            char what[96];
            size_t np;
            wl_adapter_params(ad[0], &np);
            /* measured: bit-identical here (each weight fits one panel); 1e-5 leaves room for panel cuts, while a
             * weight dequantised wrongly or a term left out is off by far more */
            snprintf(what, sizeof what, "%s cfg %d %s%s logits == dequantised f32", table, ci, storage_name(STORAGES[si % 2]),
                     dora ? " DoRA" : "");
            wl_test_close(what, logits[0], logits[1], (size_t)N * V, 1e-5f, 1e-5f);
            snprintf(what, sizeof what, "%s cfg %d %s%s LoRA grads == dequantised f32", table, ci, storage_name(STORAGES[si % 2]),
                     dora ? " DoRA" : "");
            wl_test_close(what, grads[0], grads[1], np, 1e-5f, 1e-4f);
            /* decoding one token at a time (the GEMV path) against the whole-sequence pass */
            CHECK_OK(wl_model_reserve(q, 1, T, 0));
            CHECK_OK(wl_model_forward(q, tok, NULL, 1, 3, 0, WL_FORWARD_LAST_LOGITS, -100, NULL));
            float *step = malloc((size_t)T * V * sizeof(float));
            for (int t = 3; t < T; t++) {
                CHECK_OK(wl_model_forward(q, tok + t, NULL, 1, 1, t, 0, -100, NULL));
                memcpy(step + (size_t)t * V, wl_model_logits(q), (size_t)V * sizeof(float));
            }
            /* decoding quantises each activation row to int16 (the whole sequence is exact): measured up to 4.4e-4
             * on logits of order 1; a wrong block, scale or lane would be off by far more than 2e-3 */
            snprintf(what, sizeof what, "%s cfg %d %s%s decode == whole sequence", table, ci, storage_name(STORAGES[si % 2]),
                     dora ? " DoRA" : "");
            wl_test_close(what, step + 3 * V, logits[0] + 3 * V, (size_t)(T - 3) * V, 2e-3f, 2e-3f);
            free(step);
            for (int i = 0; i < 2; i++) {
                CHECK_OK(wl_model_set_adapters(ms[i], NULL, NULL, 0));
                wl_adapter_free(ad[i]);
                free(logits[i]);
                wl_model_free(ms[i]);
            }
        }
    }
    wl_kernels_set_default(NULL);
}

/* ---- PiSSA on a quantised base (QPiSSA) ---- */

/* Rank 2..4 on every linear module (PiSSA adapts no embedding or head), alpha 8 so no scale is 1. */
static wl_adapter *linear_adapter(wl_model *m) {
    return wl_test_adapter(m, &(wl_test_adapter_spec){.rank = 2, .rank_cycle = 3, .alpha = 8.0f});
}

/* (s B A)[o, j] of a module, in double. */
static double module_update(const wl_lora_module *mod, float s, int o, int j) {
    double acc = 0.0;
    for (int k = 0; k < mod->rank; k++) acc += (double)mod->B[(size_t)o * mod->rank + k] * mod->A[(size_t)k * mod->in_features + j];
    return s * acc;
}

/* The residual W0 - s B A, each value rounded once from double (the products of floats are exact in double, so this
 * is the value whatever the order of operations or fused multiply-adds). */
static float *residual_of(const float *W0, const wl_lora_module *mod, float s) {
    const int out = mod->out_features, in = mod->in_features;
    float *R = malloc((size_t)out * in * sizeof(float));
    for (int o = 0; o < out; o++) {
        for (int j = 0; j < in; j++) {
            const double update = module_update(mod, s, o, j);
            R[(size_t)o * in + j] = (float)((double)W0[(size_t)o * in + j] - update);
        }
    }
    return R;
}

/* Values where dequantised rq + s B A is further from W0 than quant.h's bound for quantising the residual R (the
 * block bound of rq's scales over R's values), plus the f32 rounding of R and of the product (a few ulps). */
static int outside_bound(const wl_qweight *rq, const float *R, const float *W0, const wl_lora_module *mod) {
    int violations = 0;
    for (int r = 0; r < rq->rows; r++) {
        for (int b = 0; b < rq->blocks; b++) {
            const int c0 = b * WL_QBLOCK, n = rq->cols - c0 < WL_QBLOCK ? rq->cols - c0 : WL_QBLOCK;
            const double bound = block_bound(rq, r, b, R + (size_t)r * rq->cols + c0, n);
            for (int c = c0; c < c0 + n; c++) {
                const double w0 = W0[(size_t)r * rq->cols + c], update = module_update(mod, mod->scale, r, c);
                const double err = fabs(wl_qweight_value(rq, r, c) + update - w0);
                if (err > bound + 8.0 * FLT_EPSILON * (fabs(w0) + fabs(update))) violations++;
            }
        }
    }
    return violations;
}

static int same_qweight(const wl_qweight *x, const wl_qweight *y) {
    const size_t n_blocks = (size_t)x->rows * x->blocks;
    return x->storage == y->storage && x->rows == y->rows && x->cols == y->cols &&
           memcmp(x->q, y->q, (size_t)x->rows * x->row_bytes) == 0 && memcmp(x->d, y->d, n_blocks * sizeof(float)) == 0 &&
           (!x->m || memcmp(x->m, y->m, n_blocks * sizeof(float)) == 0);
}

static float *logits_now(wl_model *m, const int32_t *tok, int T) {
    CHECK_OK(wl_model_forward(m, tok, NULL, 1, T, 0, 0, -100, NULL));
    const size_t n = (size_t)T * wl_model_config(m)->vocab_size;
    float *out = malloc(n * sizeof(float));
    memcpy(out, wl_model_logits(m), n * sizeof(float));
    return out;
}

static double max_abs_diff(const float *x, const float *y, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)x[i] - y[i]));
    return worst;
}

/* PiSSA on a q8 / q4 base keeps the residual W - s B A in the same blocks, quantised again (QPiSSA): the blocks are
 * exactly quantise(dequant(W) - s B A) computed here, dequant(residual) + s B A is within one quantisation step bound
 * of dequant(W) everywhere, the step-0 logits are those of the base, the result is the same for 1 and 2 threads,
 * and unmerging restores the original blocks bit for bit. A residual not quantised again, or one without the
 * scale, breaks these checks. */
static void test_pissa_on_quantised_base(void) {
    const wl_config cfgs[2] = {small_llama(40, 0, 1), small_llama(64, 1, 0)};
    const int T = 7;
    int32_t tok[7];
    for (int ci = 0; ci < 2; ci++) {
        for (int si = 0; si < 2; si++) {
            const int storage = STORAGES[si], V = cfgs[ci].vocab_size;
            for (int t = 0; t < T; t++) tok[t] = (t * 11 + 3) % V;
            wl_model *qs[2] = {NULL, NULL};
            wl_adapter *as[2] = {NULL, NULL};
            for (int threads = 1; threads <= 2; threads++) {
                CHECK_OK(wl_threads_start(threads));
                CHECK_OK(wl_model_create_quantized(&cfgs[ci], storage, &qs[threads - 1]));
                if (!qs[threads - 1]) return;
                fill_model(qs[threads - 1], WL_DTYPE_F32, 1 << 20);
                as[threads - 1] = linear_adapter(qs[threads - 1]);
                if (threads == 2) CHECK_OK(wl_adapter_init_pissa(qs[1], as[1], -1, 11));
            }
            wl_threads_stop();
            wl_model *q = qs[0];
            wl_adapter *a = as[0];
            const int n_modules = wl_adapter_n_modules(a);
            /* the base before: its blocks and dequantised weights, and its logits */
            wl_qweight *orig = calloc((size_t)n_modules, sizeof *orig);
            float **W0 = calloc((size_t)n_modules, sizeof *W0);
            for (int i = 0; i < n_modules; i++) {
                wl_lora_module mod;
                CHECK_OK(wl_adapter_module(a, i, &mod));
                const wl_qweight *qw = q->blocks[mod.layer].lin[mod.slot].qw;
                CHECK_OK(wl_qweight_clone(&orig[i], qw));
                W0[i] = malloc((size_t)qw->rows * qw->cols * sizeof(float));
                wl_qkernels_scalar.dequantize_rows(qw, 0, qw->rows, W0[i], qw->cols);
            }
            CHECK_OK(wl_model_reserve(q, 1, T, 0));
            float *before = logits_now(q, tok, T);
            /* how far quantising the f32 model moved its logits: the scale of a quantisation error here */
            wl_model *f = NULL;
            CHECK_OK(wl_model_create(&cfgs[ci], &f));
            if (!f) return;
            fill_model(f, WL_DTYPE_F32, 1 << 20);
            CHECK_OK(wl_model_reserve(f, 1, T, 0));
            float *full = logits_now(f, tok, T);
            const double quant_err = max_abs_diff(full, before, (size_t)T * V);
            free(full);
            wl_model_free(f);

            CHECK_OK(wl_adapter_init_pissa(q, a, -1, 11));
            CHECK(wl_adapter_is_pissa(a));
            int differ = 0, violations = 0, unscaled_violations = 0, unquantised_violations = 0;
            size_t edit_bytes = 0;
            for (int i = 0; i < n_modules; i++) {
                wl_lora_module mod;
                CHECK_OK(wl_adapter_module(a, i, &mod));
                const wl_qweight *rq = q->blocks[mod.layer].lin[mod.slot].qw;
                edit_bytes += wl_qweight_bytes(rq);
                float *R = residual_of(W0[i], &mod, mod.scale);
                wl_qweight want = quantise(storage, R, rq->rows, rq->cols);
                differ += !same_qweight(rq, &want);
                violations += outside_bound(rq, R, W0[i], &mod);
                /* broken: the base left as it was (residual not quantised again), or the residual without s */
                unquantised_violations += outside_bound(&orig[i], R, W0[i], &mod);
                float *R1 = residual_of(W0[i], &mod, 1.0f);
                wl_qweight unscaled = quantise(storage, R1, rq->rows, rq->cols);
                unscaled_violations += outside_bound(&unscaled, R, W0[i], &mod);
                wl_qweight_free(&unscaled);
                wl_qweight_free(&want);
                free(R1);
                free(R);
            }
            const char *name = storage_name(storage);
            CHECK_MSG(differ == 0, "cfg %d %s: %d residuals differ from quantise(dequant(W) - s B A)", ci, name, differ);
            CHECK_MSG(violations == 0, "cfg %d %s: %d values of dequant(residual) + s B A outside the block bound", ci, name,
                      violations);
            CHECK_MSG(unquantised_violations > 0 && unscaled_violations > 0,
                      "cfg %d %s: broken residuals not caught (%d values outside without requantising, %d without s)", ci,
                      name, unquantised_violations, unscaled_violations);
            CHECK(wl_model_edit_bytes(q) == edit_bytes);
            /* 2 threads: the same blocks and factors */
            int thread_differ = 0;
            for (int i = 0; i < q->n_qweights; i++) thread_differ += !same_qweight(&q->qweights[i], &qs[1]->qweights[i]);
            size_t np, np2;
            const float *p1 = wl_adapter_params(a, &np), *p2 = wl_adapter_params(as[1], &np2);
            CHECK_MSG(thread_differ == 0 && np == np2 && memcmp(p1, p2, np * sizeof(float)) == 0,
                      "cfg %d %s: PiSSA differs between 1 and 2 threads (%d weights)", ci, name, thread_differ);

            CHECK_OK(wl_model_set_adapters(q, &a, NULL, 1));
            float *step0 = logits_now(q, tok, T);
            const size_t n = (size_t)T * V;
            const double err = max_abs_diff(step0, before, n);
            /* The residual's quantisation error: a second quantisation of matrices of about W's range (random
             * weights have no dominant singular directions), so of the order of quantising the f32 model. Measured
             * 0.69x to 1.34x that error (q8 0.068 / 0.098 and 0.093 / 0.083, q4 0.76 / 0.58 and 1.11 / 0.83);
             * the base left without its residual is 4.5x to 60x off. */
            const double tol = 2.0 * quant_err;
            CHECK_MSG(err <= tol, "cfg %d %s: step-0 logits off by %.3g from the base's (tolerance %.3g)", ci, name, err, tol);
            /* unmerge restores the original blocks; the adapter on them (the update counted twice) is far off */
            CHECK_OK(wl_model_set_adapters(q, NULL, NULL, 0));
            CHECK_OK(wl_model_unmerge(q, a));
            int restored = 1;
            for (int i = 0; i < n_modules; i++) {
                wl_lora_module mod;
                CHECK_OK(wl_adapter_module(a, i, &mod));
                restored &= same_qweight(q->blocks[mod.layer].lin[mod.slot].qw, &orig[i]);
            }
            CHECK_MSG(restored, "cfg %d %s: unmerge did not restore the quantised base bit for bit", ci, name);
            CHECK(wl_model_edit_bytes(q) == 0);
            CHECK_OK(wl_model_set_adapters(q, &a, NULL, 1));
            float *doubled = logits_now(q, tok, T);
            const double broken = max_abs_diff(doubled, before, n);
            CHECK_MSG(broken > tol, "cfg %d %s: the base without its residual is only %.3g off", ci, name, broken);
            printf("  %s cfg %d PiSSA: residual == quantise(dequant(W) - s B A), within the block bound; step-0 logits "
                   "off by %.3g (base without residual: %.3g; quantising the f32 model: %.3g)\n", name, ci, err, broken,
                   quant_err);
            CHECK_OK(wl_model_set_adapters(q, NULL, NULL, 0));
            /* merging stays refused on a quantised base */
            CHECK_STATUS(wl_model_merge(q, a, 1.0f), WL_STATUS_UNSUPPORTED);
            free(before);
            free(step0);
            free(doubled);
            for (int i = 0; i < n_modules; i++) {
                wl_qweight_free(&orig[i]);
                free(W0[i]);
            }
            free(orig);
            free(W0);
            /* the 2-thread model is freed with its residual in place: freeing the model releases the copies */
            for (int t = 0; t < 2; t++) {
                wl_model_free(qs[t]);
                wl_adapter_free(as[t]);
            }
        }
    }
}

/* A residual that cannot be quantised again. Layer 1's q_proj (64 x 64) holds four 32 x 32 blocks of one value each,
 * M [[1, 1], [1, -0.85]], with M at 0.96 of the largest magnitude the storage's f16 scales reach (q8: 65504 * 127,
 * q4: 65504), so the base itself quantises. Its best rank-1 approximation leaves a residual 8% larger than M (numpy:
 * max |S - S_1| = 1.0806 max |S| for S = [[1, 1], [1, -0.85]], singular values 1.437 and 1.287), beyond those
 * scales. PiSSA of rank 1 then fails with WL_STATUS_NUMERIC naming that module, after the residuals of every layer-0
 * module have already replaced their blocks; the base must be as it was bit for bit, and the adapter too (its
 * factors had replaced its weights), and it must not count as PiSSA. */
static void test_pissa_residual_beyond_f16(void) {
    const wl_config cfg = small_llama(64, 0, 0);
    for (int si = 0; si < 2; si++) {
        const int storage = STORAGES[si];
        const char *name = storage_name(storage);
        wl_model *q = NULL;
        CHECK_OK(wl_model_create_quantized(&cfg, storage, &q));
        if (!q) return;
        fill_model(q, WL_DTYPE_F32, 1 << 20);
        int hostile = -1;
        CHECK_OK(wl_model_find_tensor(q, "model.layers.1.self_attn.q_proj.weight", &hostile));
        const float M = 0.96f * (storage == WL_STORAGE_Q8 ? 65504.0f * 127.0f : 65504.0f);
        float *w = malloc(64 * 64 * sizeof(float));
        for (int o = 0; o < 64; o++) {
            for (int c = 0; c < 64; c++) w[o * 64 + c] = o >= 32 && c >= 32 ? -0.85f * M : M;
        }
        CHECK_OK(wl_model_write_tensor(q, hostile, WL_DTYPE_F32, 0, 64 * 64, w));
        free(w);
        wl_adapter *a = wl_test_adapter(q, &(wl_test_adapter_spec){.rank = 1, .alpha = 8.0f, .fill_seed = 5, .fill_scale = 0.3f});
        if (!a) return;
        /* the base's blocks and the adapter's weights before */
        wl_qweight *orig = calloc((size_t)q->n_qweights, sizeof *orig);
        for (int i = 0; i < q->n_qweights; i++) CHECK_OK(wl_qweight_clone(&orig[i], &q->qweights[i]));
        size_t n;
        const float *p = wl_adapter_params(a, &n);
        float *params = malloc(n * sizeof(float));
        memcpy(params, p, n * sizeof(float));

        CHECK_STATUS(wl_adapter_init_pissa(q, a, -1, 11), WL_STATUS_NUMERIC);
        const char *why = wl_last_error();
        CHECK_MSG(strstr(why, "layer 1 self_attn.q_proj") && strstr(why, "too large for f16 block scales") &&
                      strstr(why, "the base and the adapter are unchanged"),
                  "%s: the error does not say which module failed and why: %s", name, why);
        int changed = 0;
        for (int i = 0; i < q->n_qweights; i++) changed += !same_qweight(&q->qweights[i], &orig[i]);
        CHECK_MSG(changed == 0, "%s: %d quantised matrices differ from the base's after the failed PiSSA", name, changed);
        CHECK_MSG(memcmp(p, params, n * sizeof(float)) == 0, "%s: the failed PiSSA changed the adapter's weights", name);
        CHECK(!wl_adapter_is_pissa(a) && q->n_edits == 0 && wl_model_edit_bytes(q) == 0);
        /* the model and the adapter still work together: a plain LoRA on the base it was */
        CHECK_OK(wl_model_set_adapters(q, &a, NULL, 1));
        CHECK_OK(wl_model_set_adapters(q, NULL, NULL, 0));
        for (int i = 0; i < q->n_qweights; i++) wl_qweight_free(&orig[i]);
        free(orig);
        free(params);
        wl_adapter_free(a);
        wl_model_free(q);
    }
}

static void test_refused_on_quantised_base(void) {
    wl_config c = small_llama(40, 0, 0);
    wl_model *q = NULL;
    CHECK_OK(wl_model_create_quantized(&c, WL_STORAGE_Q4, &q));
    if (!q) return;
    fill_model(q, WL_DTYPE_F32, 1 << 20);
    wl_adapter *a = every_module_adapter(q, 3, 0);
    CHECK_STATUS(wl_model_merge(q, a, 1.0f), WL_STATUS_UNSUPPORTED);
    CHECK_STATUS(wl_model_set_full_training(q, 1), WL_STATUS_UNSUPPORTED);
    CHECK(strstr(wl_last_error(), "quantised") != NULL);
    wl_adapter_free(a);
    /* the layers' matrices in Q4, the token embedding and the LM head in Q8 */
    wl_tensor_info info;
    int embed = -1, head = -1, q_proj = -1;
    CHECK_OK(wl_model_find_tensor(q, "model.embed_tokens.weight", &embed));
    CHECK_OK(wl_model_find_tensor(q, "lm_head.weight", &head));
    CHECK_OK(wl_model_tensor(q, head, &info));
    CHECK(info.storage == WL_STORAGE_Q8 && q->lm_head_q && q->lm_head_q->storage == WL_STORAGE_Q8);
    CHECK_OK(wl_model_find_tensor(q, "model.layers.0.self_attn.q_proj.weight", &q_proj));
    CHECK_OK(wl_model_tensor(q, embed, &info));
    CHECK(info.storage == WL_STORAGE_Q8 && q->wte_q && q->wte_q->storage == WL_STORAGE_Q8);
    CHECK_OK(wl_model_tensor(q, q_proj, &info));
    CHECK(info.storage == WL_STORAGE_Q4 && q->blocks[0].lin[0].qw->storage == WL_STORAGE_Q4);
    /* memory: the weights take what the estimate said, and about a quarter (q8) or an eighth (q4) of f32 */
    uint64_t est_q = 0, est_f = 0;
    CHECK_OK(wl_model_weight_bytes_for(&c, WL_STORAGE_Q4, &est_q));
    CHECK_OK(wl_model_weight_bytes_for(&c, WL_STORAGE_F32, &est_f));
    size_t w, acts;
    wl_model_memory_split(q, &w, &acts);
    CHECK_MSG(est_q == (uint64_t)w + q->qtile_floats * sizeof(float), "estimate %llu vs weights %zu + tile",
              (unsigned long long)est_q, w);
    wl_model_free(q);
}

int main(void) {
    test_reference_blocks();
    test_error_bounds();
    test_refusals();
    test_kernels_twin();
    test_qgemm();
    test_streaming();
    test_model_vs_dequantised("scalar");
    test_model_vs_dequantised("wasmsimd");
    test_model_vs_dequantised("wasmrelaxed");
    test_pissa_on_quantised_base();
    test_pissa_residual_beyond_f16();
    test_refused_on_quantised_base();
    return wl_test_summary("test_quant");
}
