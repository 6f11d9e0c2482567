#!/usr/bin/env python3
"""check_golden.py: consistency checks of the golden files in tests/ref/golden, with the standard library only
(no torch, no numpy), so anyone can run it after regenerating or before committing.

It checks the safetensors layout of every file, that case.json, adapter_config.json, the adapter and io tensors
agree with each other and with the model config (shapes, PEFT key names, target / rank_pattern / alpha_pattern
resolution), recomputes every stored loss from the stored logits, checks the SGD contract arithmetic and the
greedy file, and the size budget. Exit status 1 with a list of problems if anything is off.

Run: python3 tests/ref/check_golden.py [golden_dir] [--shared DIR]
"""
import array
import json
import math
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BUDGET = 3.2e6
problems = []


def fail(msg):
    problems.append(msg)
    print("PROBLEM:", msg)


# ---- safetensors (strict: contiguous data, no holes, sizes match) ----

_DT = {"F32": ("f", 4), "I32": ("i", 4), "F16": ("e", 2), "BF16": ("H", 2)}


def st_load(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    spans = []
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        spans.append((b, e, name))
        if info["dtype"] not in _DT:
            fail(f"{path}: {name} has dtype {info['dtype']} (expected F32 or I32)")
            continue
        code, size = _DT[info["dtype"]]
        numel = 1
        for d in info["shape"]:
            numel *= d
        if e - b != numel * size:
            fail(f"{path}: {name} byte size {e - b} != numel {numel} * {size}")
            continue
        if code == "e":  # half floats: array has no such type
            a = list(struct.unpack(f"<{numel}e", buf[base + b:base + e]))
        elif code == "H":  # bfloat16: the high half of a float32
            a = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in struct.unpack(f"<{numel}H", buf[base + b:base + e])]
        else:
            a = array.array(code)
            a.frombytes(buf[base + b:base + e])
            if sys.byteorder != "little":
                a.byteswap()
        out[name] = (info["dtype"], list(info["shape"]), a)
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            fail(f"{path}: data of {name} starts at {b}, expected {pos}")
        pos = e
    if base + pos != len(buf):
        fail(f"{path}: data ends at {base + pos}, file has {len(buf)} bytes")
    return out, meta


def load_json(path):
    with open(path) as f:
        return json.load(f)


# ---- model shapes from config.json or a llama2.c header ----

def model_from_case(d, case, shared):
    if case.get("model_ref"):
        ref = os.path.join(shared, case["model_ref"])
        if not os.path.exists(ref):
            print(f"note: {ref} not found; skipping model checks of {d}")
            return None
        if ref.endswith(".bin"):
            return llama2c_model(ref)
        return hf_model(os.path.join(ref, "config.json"), os.path.join(ref, "model.safetensors"))
    if os.path.exists(os.path.join(d, "model.bin")):
        return llama2c_model(os.path.join(d, "model.bin"))
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        shards = sorted(set(load_json(index)["weight_map"].values()))
        return hf_model(os.path.join(d, "config.json"), [os.path.join(d, s) for s in shards], index)
    return hf_model(os.path.join(d, "config.json"), os.path.join(d, "model.safetensors"))


def llama2c_model(path):
    with open(path, "rb") as f:
        buf = f.read()
    dim, hidden, L, H, Hkv, vocab, seq_len = struct.unpack_from("<7i", buf, 0)
    V, hs = abs(vocab), dim // H
    kv = Hkv * hs
    n = V * dim + L * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * dim * hidden) + dim + seq_len * hs
    n += 0 if vocab > 0 else V * dim
    if len(buf) != 28 + 4 * n:
        fail(f"{path}: size {len(buf)} does not match its header ({28 + 4 * n})")
    cfg = {"family": "llama", "dim": dim, "hidden": hidden, "L": L, "H": H, "Hkv": Hkv, "hs": hs, "V": V,
           "tied": vocab > 0, "qkv_bias": False}
    return cfg, tensor_shapes(cfg)


def hf_model(config_path, st_path, index_path=None):
    """Shapes of an HF model; st_path is one file or the list of shards an index names."""
    cj = load_json(config_path)
    if cj["model_type"] == "gpt2":
        C = cj["n_embd"]
        cfg = {"family": "gpt2", "dim": C, "hidden": cj.get("n_inner") or 4 * C, "L": cj["n_layer"],
               "H": cj["n_head"], "V": cj["vocab_size"], "npos": cj["n_positions"], "tied": True}
    else:
        H = cj["num_attention_heads"]
        cfg = {"family": "llama", "dim": cj["hidden_size"], "hidden": cj["intermediate_size"],
               "L": cj["num_hidden_layers"], "H": H, "Hkv": cj.get("num_key_value_heads") or H,
               "hs": cj.get("head_dim") or cj["hidden_size"] // H, "V": cj["vocab_size"],
               "tied": cj.get("tie_word_embeddings", False), "qkv_bias": cj["model_type"] == "qwen2"}
    shapes = tensor_shapes(cfg)
    st = {}
    for path in st_path if isinstance(st_path, list) else [st_path]:
        part, _meta = st_load(path)
        if index_path:
            wmap = load_json(index_path)["weight_map"]
            if any(wmap.get(k) != os.path.basename(path) for k in part):
                fail(f"{path}: holds tensors {index_path} places elsewhere")
        st.update(part)
    got = {k: v[1] for k, v in st.items() if not re.search(r"\.attn\.(masked_)?bias$", k)}
    if got != shapes:
        fail(f"{st_path}: tensors differ from what {config_path} implies: "
             f"{sorted(set(got) ^ set(shapes)) or 'shapes'}")
    return cfg, shapes


def tensor_shapes(cfg):
    C, I, L, V = cfg["dim"], cfg["hidden"], cfg["L"], cfg["V"]
    s = {}
    if cfg["family"] == "gpt2":
        s["transformer.wte.weight"] = [V, C]
        s["transformer.wpe.weight"] = [cfg["npos"], C]
        for l in range(L):
            p = f"transformer.h.{l}."
            for n, sh in (("ln_1", [C]), ("ln_2", [C])):
                s[p + n + ".weight"] = sh
                s[p + n + ".bias"] = sh
            for n, fi, fo in (("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, I),
                              ("mlp.c_proj", I, C)):
                s[p + n + ".weight"] = [fi, fo]
                s[p + n + ".bias"] = [fo]
        s["transformer.ln_f.weight"] = [C]
        s["transformer.ln_f.bias"] = [C]
        return s
    H, Hkv, hs = cfg["H"], cfg["Hkv"], cfg["hs"]
    s["model.embed_tokens.weight"] = [V, C]
    for l in range(L):
        p = f"model.layers.{l}."
        for n, fi, fo in modules_of_layer(cfg):
            s[p + n + ".weight"] = [fo, fi]
        if cfg["qkv_bias"]:
            s[p + "self_attn.q_proj.bias"] = [H * hs]
            s[p + "self_attn.k_proj.bias"] = [Hkv * hs]
            s[p + "self_attn.v_proj.bias"] = [Hkv * hs]
        s[p + "input_layernorm.weight"] = [C]
        s[p + "post_attention_layernorm.weight"] = [C]
    s["model.norm.weight"] = [C]
    if not cfg["tied"]:
        s["lm_head.weight"] = [V, C]
    return s


def modules_of_layer(cfg):
    C, I = cfg["dim"], cfg["hidden"]
    if cfg["family"] == "gpt2":
        return [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, I), ("mlp.c_proj", I, C)]
    H, Hkv, hs = cfg["H"], cfg["Hkv"], cfg["hs"]
    return [("self_attn.q_proj", C, H * hs), ("self_attn.k_proj", C, Hkv * hs), ("self_attn.v_proj", C, Hkv * hs),
            ("self_attn.o_proj", H * hs, C), ("mlp.gate_proj", C, I), ("mlp.up_proj", C, I),
            ("mlp.down_proj", I, C)]


def resolve_lora(cfg, acfg):
    """PEFT semantics: targets match a module path exactly or as a suffix after a dot; rank_pattern and
    alpha_pattern keys are regexes, the first (insertion order) with re.match(r"(.*\\.)?(key)$", path) wins."""
    def pattern(d, path, default):
        for k, v in d.items():
            if re.match(rf"(.*\.)?({k})$", path):
                return v
        return default

    prefix = "transformer.h." if cfg["family"] == "gpt2" else "model.layers."
    emb = "transformer.wte" if cfg["family"] == "gpt2" else "model.embed_tokens"
    C, V = cfg["dim"], cfg["V"]
    # PEFT's model-level targets: the embedding (in V, out C) and lm_head (in C, out V), also when tied
    candidates = [(emb, V, C)] + [(f"{prefix}{l}.{n}", fi, fo) for l in range(cfg["L"])
                                  for n, fi, fo in modules_of_layer(cfg)] + [("lm_head", C, V)]
    out = {}
    for path, fi, fo in candidates:
        targets = acfg["target_modules"]
        if isinstance(targets, str):
            if not re.fullmatch(targets, path):
                continue
        elif not any(path == t or path.endswith("." + t) for t in targets):
            continue
        r = pattern(acfg["rank_pattern"], path, acfg["r"])
        a = pattern(acfg["alpha_pattern"], path, acfg["lora_alpha"])
        s = a / math.sqrt(r) if acfg["use_rslora"] else a / r
        out[path] = (r, a, s, fi, fo)
    return out


# ---- checks ----

def close(a, b, atol, rtol):
    return abs(a - b) <= atol + rtol * abs(b)


def check_adapter(d, case, model, prefix_files=("adapter_config.json", "adapter_model.safetensors")):
    acfg = load_json(os.path.join(d, prefix_files[0]))
    ad, _ = st_load(os.path.join(d, prefix_files[1]))
    for k, want in (("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("bias", "none"), ("lora_dropout", 0.0)):
        if acfg.get(k) != want:
            fail(f"{d}: adapter_config {k} = {acfg.get(k)!r}, expected {want!r}")
    if model is None:
        return acfg, ad
    cfg, _shapes = model
    if acfg["fan_in_fan_out"] != (cfg["family"] == "gpt2"):
        fail(f"{d}: fan_in_fan_out {acfg['fan_in_fan_out']} for a {cfg['family']} model")
    res = resolve_lora(cfg, acfg)
    listed = {m["path"]: m for m in case["lora_modules"]}
    if set(listed) != set(res):
        fail(f"{d}: case.json lora_modules {sorted(listed)} != resolved targets {sorted(res)}")
    keys = set()
    for path, (r, a, s, fi, fo) in res.items():
        m = listed.get(path)
        if m and (m["r"] != r or m["alpha"] != a or not math.isclose(m["scaling"], s, rel_tol=1e-12)):
            fail(f"{d}: {path}: case.json says r {m['r']} alpha {m['alpha']} scaling {m['scaling']}, PEFT gives "
                 f"r {r} alpha {a} scaling {s}")
        for which, shape in (("A", [r, fi]), ("B", [fo, r])):
            key = (f"base_model.model.{path}.lora_embedding_{which}" if path.endswith(("embed_tokens", "wte"))
                   else f"base_model.model.{path}.lora_{which}.weight")
            keys.add(key)
            if key not in ad:
                fail(f"{d}: adapter lacks {key}")
            elif ad[key][1] != shape:
                fail(f"{d}: {key} shape {ad[key][1]}, expected {shape}")
            elif max(abs(x) for x in ad[key][2]) == 0.0:
                fail(f"{d}: {key} is all zero")
        if acfg.get("use_dora"):  # PEFT DoRA: one magnitude per output row
            key = f"base_model.model.{path}.lora_magnitude_vector"
            keys.add(key)
            if key not in ad or ad[key][1] != [fo]:
                fail(f"{d}: adapter lacks {key} of shape [{fo}]")
    if set(ad) != keys:
        fail(f"{d}: adapter has extra tensors {sorted(set(ad) - keys)}")
    return acfg, ad


def recompute_loss(logits, targets, V, ignore):
    total, n = 0.0, 0
    for i, t in enumerate(targets):
        if t == ignore:
            continue
        row = logits[i * V:(i + 1) * V]
        m = max(row)
        total += m + math.log(sum(math.exp(x - m) for x in row)) - row[t]
        n += 1
    return total / n


def check_case(d, shared):
    case = load_json(os.path.join(d, "case.json"))
    for k in ("arch", "description", "B", "T", "targets", "r", "alpha", "use_rslora", "ignore_id", "full",
              "tolerance"):
        if k not in case:
            fail(f"{d}: case.json lacks {k}")
    model = model_from_case(d, case, shared)
    io, _ = st_load(os.path.join(d, "io.safetensors"))
    B, T = case["B"], case["T"]
    V = model[0]["V"] if model else case["vocab_size"]
    positions = case.get("logits_positions")
    P = len(positions) if positions else T
    if positions and (positions != sorted(set(positions)) or positions[0] < 0 or positions[-1] >= T):
        fail(f"{d}: logits_positions must be increasing positions below T")
    for name, dtype, shape in (("tokens", "I32", [B, T]), ("logits", "F32", [B, P, V])):
        if name not in io or io[name][0] != dtype or io[name][1] != shape:
            fail(f"{d}: io {name} should be {dtype} {shape}, is {io.get(name, (None, None))[:2]}")
    if any(not 0 <= t < V for t in io["tokens"][2]):
        fail(f"{d}: token id out of range")
    if not case["targets"]:
        rope = {"rope.cos", "rope.sin"} if positions else set()
        if set(io) != {"tokens", "logits"} | rope:
            fail(f"{d}: a base-only case holds {sorted(io)}")
        for name in rope:
            if io[name][1] != [P, model[0]["hs"] // 2] if model else False:
                fail(f"{d}: {name} should be (positions, head_dim / 2)")
        return
    targets = io["targets"][2]
    if io["targets"][1] != [B, T] or any(not (0 <= t < V or t == case["ignore_id"]) for t in targets):
        fail(f"{d}: bad targets")
    loss = recompute_loss(io["logits"][2], targets, V, case["ignore_id"])
    tol = case["tolerance"]["loss"]
    if io["loss"][1] != [1] or not close(loss, io["loss"][2][0], tol["atol"], tol["rtol"]):
        fail(f"{d}: loss recomputed from logits {loss} != stored {io['loss'][2][0]}")
    if not math.isclose(io["loss"][2][0], case["loss"], rel_tol=1e-6):
        fail(f"{d}: case.json loss differs from io loss")
    acfg, ad = check_adapter(d, case, model)
    prefixes = ["grad."]
    if case.get("dropout"):
        prefixes.append("dropout.grad.")
        dl = recompute_loss(io["dropout.logits"][2], targets, V, case["ignore_id"])
        if not close(dl, io["dropout.loss"][2][0], tol["atol"], tol["rtol"]):
            fail(f"{d}: dropout loss recomputed from its logits {dl} != stored {io['dropout.loss'][2][0]}")
    for prefix in prefixes:
        for key, (_dt, shape, _a) in ad.items():
            g = io.get(prefix + key)
            if g is None or g[1] != shape:
                fail(f"{d}: {prefix}{key} missing or misshapen")
            elif max(abs(x) for x in g[2]) < 1e-7:
                fail(f"{d}: {prefix}{key} is (nearly) zero")
    full = [k for k in io if k.startswith("fullgrad.")]
    if case["full"] and model:
        want = model[1]
        got = {k[len("fullgrad."):]: io[k][1] for k in full}
        if got != want:
            fail(f"{d}: fullgrad tensors differ from the model's: {sorted(set(got) ^ set(want)) or 'shapes'}")
    elif not case["full"] and full:
        fail(f"{d}: fullgrad.* present but full is false")
    extra = set(io) - {"tokens", "targets", "logits", "loss"} - {p + k for p in prefixes for k in ad} - set(full)
    if case.get("dropout"):
        extra -= {"dropout.logits", "dropout.loss"}
    if extra:
        fail(f"{d}: unexpected io tensors {sorted(extra)}")


def check_sgd(d, shared):
    case = load_json(os.path.join(d, "case.json"))
    ids = load_json(os.path.join(d, "ids.json"))
    with open(os.path.join(d, "text.txt")) as f:
        text = f.read().strip()
    if not text.isascii() or "\n" in text:
        fail(f"{d}: text.txt should be one line of ASCII")
    io, _ = st_load(os.path.join(d, "io.safetensors"))
    if list(io["tokens"][2]) != ids[:-1] or list(io["targets"][2]) != ids[1:]:
        fail(f"{d}: io tokens/targets are not ids[:-1]/ids[1:]")
    if "stories260K" in case["model_ref"] and (ids[0] != 1 or ids[-1] != 2):
        fail(f"{d}: stories260K ids should start with BOS 1 and end with EOS 2")
    if "gpt2" in case["model_ref"] and (ids[-1] != 50256 or 50256 in ids[:-1]):
        fail(f"{d}: gpt2 ids should end with 50256 only")
    model = model_from_case(d, case, shared)
    _acfg, ad = check_adapter(d, case, model)
    exp, _ = st_load(os.path.join(d, "expected_adapter_model.safetensors"))
    lr = case["lr"]
    if set(exp) != set(ad):
        fail(f"{d}: expected adapter keys differ from the initial adapter")
    moved = 0.0
    for key, (_dt, _shape, p0) in ad.items():
        g = io["grad." + key][2]
        p1 = exp[key][2]
        for a, b, c in zip(p0, g, p1):
            want = a - lr * b
            # both sides are float32 roundings of the same float64 value (from rounded inputs): a few ulps
            if abs(c - want) > 4e-7 * max(1.0, abs(want)):
                fail(f"{d}: {key}: expected {c} != initial - lr * grad = {want}")
                break
            moved = max(moved, abs(c - a))
    if moved < 1e-4:
        fail(f"{d}: the SGD step moves parameters by at most {moved}: not visible in float32")


def peft_lora(d, cfg):
    """{path: (A, B, scale, r)} of the PEFT adapter in folder d, resolved by PEFT's rules."""
    acfg = load_json(os.path.join(d, "adapter_config.json"))
    ad, _ = st_load(os.path.join(d, "adapter_model.safetensors"))
    out = {}
    for path, (r, _a, s, fi, fo) in resolve_lora(cfg, acfg).items():
        out[path] = (ad[f"base_model.model.{path}.lora_A.weight"][2], ad[f"base_model.model.{path}.lora_B.weight"][2],
                     s, r, fi, fo)
    return out


def check_train_contract(d, root):
    case = load_json(os.path.join(d, "case.json"))
    io, _ = st_load(os.path.join(d, "io.safetensors"))
    B, T, steps = case["B"], case["T"], case["optimizer"]["steps"]
    targets = io["targets"][2]
    if io["tokens"][1] != [B, T] or io["targets"][1] != [B, T] or len(case["valid"]) != B:
        fail(f"{d}: tokens / targets / valid do not match B {B}, T {T}")
    for b, v in enumerate(case["valid"]):
        row = targets[b * T:(b + 1) * T]
        if any(t == -100 for t in row[:v]) or any(t != -100 for t in row[v:]):
            fail(f"{d}: sequence {b} should have exactly its first {v} targets")
    if io["loss"][1] != [steps] or io["grad_norm"][1] != [steps] or io["valid"][2].tolist() != case["valid"]:
        fail(f"{d}: loss / grad_norm / valid misshapen")
    if min(case["grad_norms"]) <= case["optimizer"]["clip_norm"]:
        fail(f"{d}: clipping does not act on every step")
    base = os.path.join(root, case["model_case"])
    model = model_from_case(base, load_json(os.path.join(base, "case.json")), None)
    lora = peft_lora(base, model[0])
    for path, (_A, _B, _s, r, fi, fo) in lora.items():
        for which, shape in (("A", [r, fi]), ("B", [fo, r])):
            t = io.get(f"final.base_model.model.{path}.lora_{which}.weight")
            if t is None or t[1] != shape:
                fail(f"{d}: final {path} lora_{which} missing or misshapen")


def check_combine(d, root):
    """Recompute the linear and cat factors from the two input adapters (PEFT's formulas)."""
    case = load_json(os.path.join(d, "case.json"))
    io, _ = st_load(os.path.join(d, "io.safetensors"))
    base = os.path.join(root, case["model_case"])
    cfg = model_from_case(base, load_json(os.path.join(base, "case.json")), None)[0]
    ins = [peft_lora(base, cfg), peft_lora(d, cfg)]
    w = case["weights"]
    for path in set(ins[0]) | set(ins[1]):
        parts = [(lo[path], wi) for lo, wi in zip(ins, w) if path in lo]
        key = f"base_model.model.{path}.lora_"
        cat_a = [wi * p[2] * x for p, wi in parts for x in p[0]]
        if not all(close(a, b, 1e-6, 1e-6) for a, b in zip(io["cat." + key + "A.weight"][2], cat_a)):
            fail(f"{d}: cat {path} A is not [w_i s_i A_i]")
        if len({p[3] for p, _ in parts}) == 1:
            n = len(parts[0][0][0])
            lin_a = [sum(math.sqrt(wi * p[2]) * p[0][i] for p, wi in parts) for i in range(n)]
            if not all(close(a, b, 1e-6, 1e-6) for a, b in zip(io["linear." + key + "A.weight"][2], lin_a)):
                fail(f"{d}: linear {path} A is not sum sqrt(w_i s_i) A_i")
        k = min(case["svd_rank"], sum(p[3] for p, _ in parts), parts[0][0][4], parts[0][0][5])
        if io["svd.B." + path][1] != [parts[0][0][5], k] or io["svd.A." + path][1] != [k, parts[0][0][4]]:
            fail(f"{d}: svd factors of {path} misshapen")


def check_pissa(d):
    case = load_json(os.path.join(d, "case.json"))
    io, _ = st_load(os.path.join(d, "io.safetensors"))
    r = case["r"]
    for path in case["modules"]:
        S = list(io["S." + path][2])
        if len(S) != r or S != sorted(S, reverse=True) or S[-1] <= 0:
            fail(f"{d}: S of {path} should be {r} decreasing positive values")
        out, k = io["U." + path][1]
        k2, inp = io["Vh." + path][1]
        if k != r or k2 != r:
            fail(f"{d}: U / Vh of {path} misshapen")


def check_greedy(path):
    g = load_json(path)
    if g.get("precision") != "float32" or len(g["cases"]) < 4:
        fail(f"{path}: needs precision float32 and at least 4 prompts")
    if not any(c["prompt_ids"] == [1] for c in g["cases"]):
        fail(f"{path}: no BOS-only prompt")
    for c in g["cases"]:
        if c["prompt_ids"][0] != 1 or len(c["generated_ids"]) != g["max_new_tokens"] or \
                len(c["margins"]) != len(c["generated_ids"]) or min(c["margins"]) < 0 or \
                any(not 0 <= t < 512 for t in c["prompt_ids"] + c["generated_ids"]):
            fail(f"{path}: malformed case {c['prompt_text']!r}")


def main():
    args = [a for a in sys.argv[1:]]
    shared = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "shared")
    if "--shared" in args:
        i = args.index("--shared")
        shared = args[i + 1]
        del args[i:i + 2]
    root = args[0] if args else os.path.join(HERE, "golden")
    n = 0
    kinds = {"train_contract": lambda d: check_train_contract(d, root), "combine": lambda d: check_combine(d, root),
             "pissa": check_pissa}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isfile(os.path.join(d, "case.json")):
            kind = load_json(os.path.join(d, "case.json")).get("kind")
            kinds[kind](d) if kind else check_case(d, shared)
            n += 1
    sgd = os.path.join(root, "sgd_contract")
    for name in sorted(os.listdir(sgd)) if os.path.isdir(sgd) else []:
        check_sgd(os.path.join(sgd, name), shared)
        n += 1
    check_greedy(os.path.join(root, "stories260K_greedy.json"))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(root) for f in fs)
    if total > BUDGET:
        fail(f"golden files total {total} bytes (budget {BUDGET:.0f})")
    print(f"checked {n} cases and the greedy file, {total / 1e6:.2f} MB: "
          + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
