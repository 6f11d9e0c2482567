"""Reference for merging the real PEFT adapters in ../shared/adapters into base weights (numpy, float64).

The base weights are synthetic but of the right shapes, defined by a formula both sides evaluate exactly in float32:
W_file[i, j] = (((7 i + 13 j) mod 97) - 48) / 256, in the layout the model file uses (GPT-2 Conv1D: (in, out)).
For a few modules of each adapter this writes the merged value W_file + s * dW_file at seeded sample positions,
where dW = B @ A (out, in) and dW_file = dW.T for fan_in_fan_out (GPT-2), plus ||s dW||_F and max |s dW|; and for
the GPT-2 adapter the errors a rank reduction to 4 keeps (numpy's SVD of every module's update).
Run: /usr/bin/python3 tests/ref/make_merge_ref.py   (CI does not run it; the JSON output is committed.)
"""
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("WL_SHARED_DIR", os.path.join(os.path.dirname(os.path.dirname(HERE)), "..", "shared"))


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack_from("<Q", buf, 0)[0]
    header = json.loads(buf[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(buf[8 + n + b:8 + n + e], dtype="<f4").reshape(v["shape"]).astype(np.float64)
    return out


def base(shape):
    i = np.arange(shape[0])[:, None]
    j = np.arange(shape[1])[None, :]
    return ((((7 * i + 13 * j) % 97) - 48) / 256.0).astype(np.float64)


def case(name, modules, samples=384, seed=0):
    d = os.path.join(SHARED, "adapters", name)
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    t = read_safetensors(os.path.join(d, "adapter_model.safetensors"))
    r, alpha = cfg["r"], cfg["lora_alpha"]
    s = alpha / (r ** 0.5 if cfg.get("use_rslora") else r)
    rng = np.random.default_rng(seed)
    out = {"adapter": name, "scale": s, "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")), "modules": []}
    for path in modules:
        A = t[f"base_model.model.{path}.lora_A.weight"]
        B = t[f"base_model.model.{path}.lora_B.weight"]
        dW = s * (B @ A)
        file_dw = dW.T if cfg.get("fan_in_fan_out") else dW
        W = base(file_dw.shape)
        merged = W + file_dw
        rows = rng.integers(0, file_dw.shape[0], samples)
        cols = rng.integers(0, file_dw.shape[1], samples)
        out["modules"].append({
            "path": path, "file_shape": list(file_dw.shape),
            "delta_fro": float(np.linalg.norm(file_dw)), "delta_max_abs": float(np.abs(file_dw).max()),
            "samples": [[int(a), int(b), float(merged[a, b])] for a, b in zip(rows, cols)],
        })
        print(f"{name} {path}: file shape {file_dw.shape}, ||s dW|| = {np.linalg.norm(file_dw):.4f}, max {np.abs(file_dw).max():.4f}")
    return out


def resize(name, rank):
    """Rank reduction of every module of a real adapter (what wl_adapter_resize reports): the truncated SVD of
    s B A keeps the top `rank` singular values; the relative error is sqrt(sum of the dropped S^2) / ||s B A||_F,
    and the total sqrt(sum of dropped S^2 over modules / sum of ||s B A||_F^2). float32_error: the largest change of
    those errors when numpy computes them from the float32 product instead (what a float32 implementation sees)."""
    d = os.path.join(SHARED, "adapters", name)
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    t = read_safetensors(os.path.join(d, "adapter_model.safetensors"))
    s = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
    modules, dropped, total, err32 = {}, 0.0, 0.0, 0.0
    for key in sorted(t):
        if not key.endswith(".lora_A.weight"):
            continue
        path = key[len("base_model.model."):-len(".lora_A.weight")]
        delta = s * (t[key.replace("lora_A", "lora_B")] @ t[key])
        S = np.linalg.svd(delta, compute_uv=False)
        S32 = np.linalg.svd(delta.astype(np.float32), compute_uv=False).astype(np.float64)
        rel = float(np.sqrt(np.sum(S[rank:] ** 2) / np.sum(S ** 2)))
        err32 = max(err32, abs(rel - float(np.sqrt(np.sum(S32[rank:] ** 2) / np.sum(S32 ** 2)))))
        modules[path] = rel
        dropped += float(np.sum(S[rank:] ** 2))
        total += float(np.sum(S ** 2))
    out = {"adapter": name, "rank": rank, "modules": modules, "total_rel_error": float(np.sqrt(dropped / total)),
           "float32_error": err32}
    print(f"{name} resized to rank {rank}: {len(modules)} modules, total relative error {out['total_rel_error']:.6f}, "
          f"float32 error {err32:.2e}")
    return out


def main():
    res = [
        case("gpt2-lora-r8-causallm", ["transformer.h.0.attn.c_attn", "transformer.h.5.attn.c_proj", "transformer.h.11.mlp.c_proj"]),
        case("smollm-135m-lora-r16", ["model.layers.0.self_attn.q_proj", "model.layers.14.self_attn.v_proj", "model.layers.29.self_attn.q_proj"], seed=1),
    ]
    with open(os.path.join(HERE, "merge", "real_adapters.json"), "w") as f:
        json.dump({"base_formula": "(((7 i + 13 j) mod 97) - 48) / 256 in file layout", "cases": res,
                   "resize": [resize("gpt2-lora-r8-causallm", 4)]}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
