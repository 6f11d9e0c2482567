"""Reference quantisation of weight rows into llama.cpp's Q8_0 and Q4_1 blocks, in numpy, from the rules of ggml's
quantize_row_q8_0_ref / quantize_row_q4_1_ref (ggml-quants.c): blocks of 32 along a row, scale (and Q4_1's minimum)
computed in float32 and stored as float16 (round to nearest even), quants from the unrounded scale's inverse. One deviation, also the
core's: a scale whose float32 inverse overflows (|x| < ~1e-38) quantises to all zeros instead of ggml's undefined
conversion of infinity. Writes tests/ref/quant/blocks.safetensors: x (rows, cols) and, per format, the scales
(rows, blocks), Q4_1's minimums (q4_m) and the quants as integers (rows, blocks * 32, zero-padded). Deterministic; run with
/usr/bin/python3 tests/ref/make_quant_ref.py."""
import json
import os
import struct

import numpy as np

QK = 32
f32 = np.float32


def roundf(v):
    """C roundf: half away from zero (exact: the + 0.5 is done in float64)."""
    a = np.floor(np.abs(v.astype(np.float64)) + 0.5)
    return (np.sign(v) * a).astype(np.int64)


def inverse(d):
    with np.errstate(divide="ignore", over="ignore"):
        inv = f32(1.0) / d if d != 0 else f32(0.0)
    return inv if np.isfinite(inv) else f32(0.0)


def q8_block(x):
    amax = f32(np.max(np.abs(x)))
    d = f32(amax / f32(127.0))
    q = roundf((x * inverse(d)).astype(f32))
    return f32(np.float16(d)), q


def q4_block(x):
    lo, hi = f32(np.min(x)), f32(np.max(x))
    d = f32((hi - lo) / f32(15.0))
    v = (((x - lo).astype(f32) * inverse(d)).astype(f32) + f32(0.5)).astype(f32)
    q = np.minimum(15, np.trunc(v).astype(np.int64))
    return f32(np.float16(d)), f32(np.float16(lo)), q


def quantise(x, block):
    """Per block: (scale, [minimum,] quants) -> arrays (rows, blocks) of each block value and the quants."""
    rows, cols = x.shape
    nb = (cols + QK - 1) // QK
    per_block = None
    q = np.zeros((rows, nb * QK), np.int8)
    for r in range(rows):
        for b in range(nb):
            seg = x[r, b * QK:min(cols, (b + 1) * QK)]
            *values, qb = block(seg)
            if per_block is None:
                per_block = [np.zeros((rows, nb), f32) for _ in values]
            for arr, v in zip(per_block, values):
                arr[r, b] = v
            q[r, b * QK:b * QK + len(seg)] = qb
    return per_block, q


def main():
    rng = np.random.default_rng(20261203)
    cols = 77  # not a multiple of 32: the last block of each row holds 13 values
    rows = [rng.standard_normal(cols).astype(f32) * f32(0.05) for _ in range(6)]
    rows.append(np.zeros(cols, f32))                                   # all zero: scale 0
    tie = rng.standard_normal(cols).astype(f32)
    tie[3], tie[9] = f32(2.5), f32(-2.5)                               # equal magnitudes at both ends
    rows.append(tie)
    rows.append((rng.standard_normal(cols) * 1e-30).astype(f32))       # scale underflows f16 to 0
    rows.append(np.full(cols, 1e-39, f32))                              # inverse overflows float32
    rows.append((rng.standard_normal(cols) * 3e3).astype(f32))          # large values
    grid = (np.arange(cols, dtype=f32) - f32(38.0)) / f32(4.0)           # many exact .5 ties after scaling
    rows.append(grid.astype(f32))
    rows.append(np.full(cols, 0.75, f32))                               # constant: Q4_1 scale 0, minimum 0.75
    x = np.stack(rows)
    tensors = {"x": x}
    for name, block, fields in (("q8", q8_block, ("_d",)), ("q4", q4_block, ("_d", "_m"))):
        per_block, q = quantise(x, block)
        for field, arr in zip(fields, per_block):
            tensors[name + field] = arr
        tensors[name + "_q"] = q
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v).tobytes()
        header[k] = {"dtype": "F32" if v.dtype == f32 else "I8", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant", "blocks.safetensors")
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    print(f"wrote {out}: {x.shape[0]} rows x {cols}")


if __name__ == "__main__":
    main()
