#!/usr/bin/python3
"""make_svd_ref.py: reference data for tests/c/test_svd.c, written to tests/ref/svd/*.bin.

Each case stores float32 inputs generated here with numpy and the singular values that LAPACK (numpy.linalg.svd,
float64, gesdd) computes for exactly those float32 values, so the C test compares against the true spectrum of
the matrix it reads. The optimal (Eckart-Young) truncation errors follow from these values.

File format (little-endian):
  1. 4 bytes magic b"WLSV", u32 version (1), u32 kind (0: one matrix A; 1: a product B A)
  2. u32 m, u32 n, u32 r (inner dimension of the product; 0 for kind 0), u32 q (number of singular values)
  3. kind 0: f32 A (m, n) row-major; kind 1: f32 B (m, r) then f32 A (r, n)
  4. f64 S (q): all singular values of A (or of B A, formed in float64), decreasing

Run with /usr/bin/python3 (Debian's python3-numpy); CI never runs it, the outputs are committed.
"""
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "svd")


def haar(rng, rows, cols):
    """A rows x cols matrix with orthonormal columns, Haar distributed (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def write(name, kind, mats, s_ref, r=0):
    m = mats[0].shape[0]
    n = mats[-1].shape[1]
    path = os.path.join(OUT, name + ".bin")
    with open(path, "wb") as f:
        f.write(b"WLSV")
        f.write(struct.pack("<6I", 1, kind, m, n, r, len(s_ref)))
        for a in mats:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
        f.write(np.asarray(s_ref, dtype="<f8").tobytes())
    print(f"{name:24s} {os.path.getsize(path):8d} bytes  S[0]={s_ref[0]:.6g} S[-1]={s_ref[-1]:.3g}")


def matrix_case(name, a64):
    a = a64.astype(np.float32)
    s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    write(name, 0, [a], s)


def product_case(name, b64, a64):
    b = b64.astype(np.float32)
    a = a64.astype(np.float32)
    s = np.linalg.svd(b.astype(np.float64) @ a.astype(np.float64), compute_uv=False)
    write(name, 1, [b, a], s, r=b.shape[1])


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)

    # Flat spectra (Marchenko-Pastur): the hardest case for a randomized method.
    matrix_case("random_64x48", rng.standard_normal((64, 48)))
    matrix_case("random_300x200", rng.standard_normal((300, 200)))
    # Ill-conditioned: singular values geometric from 1 down to 1e-6.
    s = np.geomspace(1.0, 1e-6, 80)
    matrix_case("illcond_120x80", haar(rng, 120, 80) @ np.diag(s) @ haar(rng, 80, 80).T)
    # Rank-deficient: exact rank 5 in float64; rounding to float32 leaves singular values near 1e-7 |A|.
    matrix_case("rankdef_100x80", rng.standard_normal((100, 5)) @ rng.standard_normal((5, 80)))
    # Tall and wide, with a power-law spectrum like a trained weight's (slow decay).
    s = 3.0 / np.sqrt(1.0 + np.arange(32))
    matrix_case("tall_256x32", haar(rng, 256, 32) @ np.diag(s) @ haar(rng, 32, 32).T)
    matrix_case("wide_32x256", haar(rng, 32, 32) @ np.diag(s) @ haar(rng, 256, 32).T)

    # Products B A as LoRA updates: a single adapter (r = 8), three adapters concatenated (r = 24), and an
    # inner dimension larger than both outer ones (the QR factors are then trapezoidal).
    product_case("product_96x8x80", rng.standard_normal((96, 8)), rng.standard_normal((8, 80)) * 0.1)
    product_case("product_64x24x72", rng.standard_normal((64, 24)), rng.standard_normal((24, 72)))
    product_case("product_20x40x30", rng.standard_normal((20, 40)), rng.standard_normal((40, 30)))


if __name__ == "__main__":
    main()
