#!/usr/bin/python3
"""make_variants_ref.py: PyTorch references for the adapter variants (LoRA+ training, DoRA, loralib's MergedLinear);
writes golden cases in tests/ref/golden/ next to make_ref.py's, reusing its model, adapter and file code.

LoRA+ (Hayou et al. 2024, PEFT's peft/optimizers/loraplus.py create_loraplus_optimizer): the optimizer gets two
parameter groups, lora_A at the learning rate lr and lora_B at lr * loraplus_lr_ratio, with the same weight decay.

DoRA (Liu et al. 2024, PEFT's tuners/lora/dora.py DoraLinearLayer, use_dora=True) on a Linear or Conv1D module
without dropout: weight = W (out, in) (Conv1D transposed), weight_norm = ||weight + scaling * B A|| over dim 1
(one per output row), detached from the graph; mag_norm_scale = magnitude / weight_norm; the layer returns
base(x) + (mag_norm_scale - 1) * (x weight^T) + mag_norm_scale * scaling * B(A(x)), bias included in base(x).
Merging (PEFT's merge with DoRA) writes mag_norm_scale[:, None] * (W + scaling * B A). The magnitude is saved as
base_model.model.<module>.lora_magnitude_vector (shape (out,)).

MergedLinear (microsoft/LoRA loralib/layers.py) on GPT-2's fused c_attn with enable_lora [q, k, v] flags: lora_A
(r * k, in) for the k enabled blocks, lora_B (C * k, r); after_A = x A^T, after_B = conv1d(after_A, B, groups=k)
(block i: the i-th r channels of after_A through rows [i C, (i + 1) C) of B), zero-padded into the rows of the enabled
blocks of the (3C) output, times scaling = lora_alpha / r. Its PEFT form is one rank-stacked LoRA: A as is and
B (3C, r k) with B_i in the rows of enabled block i and the i-th r columns, zero elsewhere; PEFT r = r k and
lora_alpha = alpha k give the same scaling.

Run: /usr/bin/python3 tests/ref/make_variants_ref.py [--shared DIR] [--out DIR]
Deterministic like make_ref.py (fixed seeds, one thread).
"""
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_ref as R  # noqa: E402


def loraplus_steps(cfg, W, lora, tokens, targets, opts, dtype):
    """torch.optim.AdamW with PEFT's LoRA+ groups ({A: lr}, {B: lr * ratio}) after clip_grad_norm_ over all
    factors, `steps` times on the whole batch. Returns the losses, gradient norms and final factors."""
    Wd = {k: v.to(dtype) for k, v in W.items()}
    Ld = {k: (A.to(dtype).clone().requires_grad_(True), B.to(dtype).clone().requires_grad_(True), s)
          for k, (A, B, s) in lora.items()}
    group_a = [A for A, _B, _s in Ld.values()]
    group_b = [B for _A, B, _s in Ld.values()]
    opt = torch.optim.AdamW([{"params": group_a, "lr": opts["lr"]},
                             {"params": group_b, "lr": opts["lr"] * opts["loraplus_lr_ratio"]}],
                            lr=opts["lr"], betas=(opts["beta1"], opts["beta2"]), eps=opts["eps"],
                            weight_decay=opts["weight_decay"])
    losses, norms = [], []
    for _ in range(opts["steps"]):
        opt.zero_grad()
        loss = R.xent(R.forward(cfg, Wd, Ld, tokens.long()), targets)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(group_a + group_b, opts["clip_norm"])))
        losses.append(float(loss))
        opt.step()
    return losses, norms, {k: (A.detach(), B.detach()) for k, (A, B, _s) in Ld.items()}


def train_loraplus(g, cfg, W, lora):
    """The train_contract batch and adapter (llama_patterns), 3 LoRA+ AdamW steps with ratio 16."""
    d = g.case_dir("train_loraplus")
    rng = R.Rng(1201)  # the train_contract's sequences
    T, valid = 8, [8, 8, 3]
    tokens, targets = R.random_io(rng, cfg["vocab"], 3, T)
    tokens[2, valid[2]:] = 0
    targets[2, valid[2]:] = R.IGNORE_ID
    opts = {"steps": 3, "lr": 0.002, "loraplus_lr_ratio": 16.0, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8,
            "weight_decay": 0.1, "clip_norm": 1e9}
    first = loraplus_steps(cfg, W, lora, tokens, targets, dict(opts, steps=1), torch.float64)[1][0]
    opts["clip_norm"] = float(f"{0.4 * first:.2g}")  # clipping acts on every step
    losses, norms, final = loraplus_steps(cfg, W, lora, tokens, targets, opts, torch.float64)
    l32, n32, f32 = loraplus_steps(cfg, W, lora, tokens, targets, opts, torch.float32)
    assert min(norms) > opts["clip_norm"], "clipping must act on every step"
    # Without the ratio (plain AdamW at lr) B would end elsewhere by this much: the test must see the difference.
    _l, _n, plain = loraplus_steps(cfg, W, lora, tokens, targets, dict(opts, loraplus_lr_ratio=1.0), torch.float64)
    io = {"tokens": tokens, "targets": targets, "valid": torch.tensor(valid, dtype=torch.int32),
          "loss": torch.tensor(losses), "grad_norm": torch.tensor(norms)}
    for path, (A, B) in final.items():
        io["final." + R.peft_key(path, "A")] = A
        io["final." + R.peft_key(path, "B")] = B
    R.st_write(os.path.join(d, "io.safetensors"), io)
    perr, pmag = R.max_err([(a, b) for p in final for a, b in zip(f32[p], final[p])])
    lerr = max(abs(a - b) for a, b in zip(l32, losses))
    nerr = max(abs(a - b) / b for a, b in zip(n32, norms))
    moved = {w: max(float((final[p][i] - lora[p][i]).abs().max()) for p in final) for i, w in enumerate("AB")}
    plain_diff = max(float((final[p][1] - plain[p][1]).abs().max()) for p in final)
    case = {
        "kind": "train_contract",
        "description": "LoRA+ (PEFT create_loraplus_optimizer): torch.optim.AdamW with lora_A at lr and lora_B at "
                       "lr * loraplus_lr_ratio (same betas, eps and decoupled weight decay), after global-norm "
                       "clipping over all factors; otherwise as train_contract (same model, adapter and sequences).",
        "model_case": "llama_patterns", "B": 3, "T": T, "valid": valid, "optimizer": dict(opts),
        "losses": losses, "grad_norms": norms, "max_abs_param_change": moved,
        "max_abs_B_diff_without_ratio": plain_diff,
        "tolerance": {"params": R.recommend(perr, pmag, 1e-6, 1e-5),
                      "loss": R.recommend(lerr, max(losses), 1e-6, 1e-5),
                      "grad_norm_rel": R.nice_up(max(20 * nerr, 1e-6))},
        "float32_torch_error": {"params_max_abs_err": perr, "params_max_abs": pmag, "loss_max_abs_err": lerr,
                                "grad_norm_max_rel_err": nerr},
    }
    R.write_json(os.path.join(d, "case.json"), case)
    print(f"train_loraplus: losses {[f'{x:.5f}' for x in losses]}  clip {opts['clip_norm']}  max |change| A "
          f"{moved['A']:.4f} B {moved['B']:.4f}  B without ratio differs by {plain_diff:.4f}  f32 param err "
          f"{perr:.2e}")


def dora_linear(x, W, lora, path, conv1d=False, drop=None):
    """make_ref.linear, with DoRA for modules whose lora entry carries a magnitude (A, B, s, m) and loralib's
    MergedLinear for entries (A, B, s, enable_lora)."""
    if path in lora and len(lora[path]) == 4 and isinstance(lora[path][3], list):
        return merged_linear(x, W, lora, path, conv1d)
    if path not in lora or len(lora[path]) == 3:
        return PLAIN_LINEAR(x, W, lora, path, conv1d, drop)
    assert not drop, "DoRA is referenced without dropout"
    A, B, s, mag = lora[path]
    w = W[path + ".weight"]
    weight = w.t() if conv1d else w  # (out, in)
    base = x @ weight.t()
    y = base + W[path + ".bias"] if path + ".bias" in W else base
    weight_norm = (weight + s * (B @ A)).norm(p=2, dim=1).detach()
    g = (mag / weight_norm).view(1, -1)
    return y + (g - 1) * base + g * ((x @ A.t()) @ B.t()) * s


PLAIN_LINEAR = R.linear
R.linear = dora_linear  # the model forwards of make_ref call linear() from its module


def dora_merged_weights(cfg, W, lora):
    """PEFT's DoRA merge: W' = (m / ||W + s B A||_row) (W + s B A), back in file layout for Conv1D."""
    M = dict(W)
    conv = {p: c for p, _i, _o, c in R.linear_modules(cfg)}
    for path, (A, B, s, mag) in lora.items():
        w = W[path + ".weight"]
        weight = (w.t() if conv[path] else w) + s * (B @ A)
        merged = (mag / weight.norm(p=2, dim=1)).view(-1, 1) * weight
        M[path + ".weight"] = merged.t() if conv[path] else merged
    return M


def dora_run(cfg, W, lora, tokens, targets, dtype, detach=True):
    """Logits, loss and the gradients of A, B and the magnitude in `dtype`. detach=False differentiates through
    the norm too (what the DoRA paper and PEFT do not do): a check that the test can tell the two apart."""
    Wd = {k: v.to(dtype) for k, v in W.items()}
    Ld = {k: tuple(t.to(dtype).clone().requires_grad_(True) for t in (A, B)) + (s,) +
          (mag.to(dtype).clone().requires_grad_(True),) for k, (A, B, s, mag) in lora.items()}
    if not detach:
        R.linear = undetached_linear
    try:
        logits = R.forward(cfg, Wd, Ld, tokens.long())
    finally:
        R.linear = dora_linear
    loss = R.xent(logits, targets)
    loss.backward()
    grads = {k: (A.grad, B.grad, m.grad) for k, (A, B, _s, m) in Ld.items()}
    return logits.detach(), loss.detach(), grads


def undetached_linear(x, W, lora, path, conv1d=False, drop=None):
    if path not in lora:
        return PLAIN_LINEAR(x, W, lora, path, conv1d, drop)
    A, B, s, mag = lora[path]
    w = W[path + ".weight"]
    weight = w.t() if conv1d else w
    y = x @ weight.t() + (W[path + ".bias"] if path + ".bias" in W else 0)
    g = (mag / (weight + s * (B @ A)).norm(p=2, dim=1)).view(1, -1)
    return y + (g - 1) * (x @ weight.t()) + g * ((x @ A.t()) @ B.t()) * s


def merged_linear(x, W, lora, path, conv1d):
    """loralib MergedLinear.forward (unmerged, no dropout): base + zero_pad(conv1d(x A^T, B, groups=k)) * scaling."""
    A, B, s, enable = lora[path]
    w = W[path + ".weight"]
    y = (x @ w if conv1d else x @ w.t()) + W[path + ".bias"]
    k = sum(enable)
    after_a = x @ A.t()  # (..., r k)
    after_b = F.conv1d(after_a.reshape(-1, after_a.shape[-1]).t().unsqueeze(0), B.unsqueeze(-1), groups=k)
    after_b = after_b.squeeze(0).t()  # (N, C k)
    out = y.shape[-1]
    ind = torch.zeros(len(enable), out // len(enable), dtype=torch.bool)
    ind[torch.tensor(enable), :] = True
    padded = after_b.new_zeros(after_b.shape[0], out)
    padded[:, ind.view(-1)] = after_b
    return y + padded.view(y.shape) * s


def stacked_b(B, enable, r):
    """loralib's lora_B (C k, r) as PEFT's rank-stacked B (3C, r k): block i in its rows and the i-th r columns."""
    k, rows = sum(enable), B.shape[0] // sum(enable)
    out = B.new_zeros(rows * len(enable), r * k)
    i = 0
    for blk, on in enumerate(enable):
        if on:
            out[blk * rows:(blk + 1) * rows, i * r:(i + 1) * r] = B[i * rows:(i + 1) * rows]
            i += 1
    return out


def merged_case(g):
    """GPT-2 (n_embd 12, 2 heads, 2 layers, vocab 24) with loralib MergedLinear(enable_lora=[True, False, True]) on
    every c_attn (q and v, not k), r 2, alpha 4, as the LoRA paper's GPT-2 experiments; written as PEFT's rank-stacked
    c_attn LoRA (r 4, lora_alpha 8) with safetensors metadata weblora.enable_lora = "q,v"."""
    name = "merged_gpt2_qv"
    d = g.case_dir(name)
    rng = R.Rng(1401)
    cfg = R.gpt2_cfg(12, 2, 2, 24, 8)
    W = R.random_weights(cfg, rng)
    fmt = g.write_model(d, cfg, W)
    enable, r, alpha = [True, False, True], 2, 4
    k = sum(enable)
    s = alpha / r
    C = cfg["dim"]
    lora = {}
    for l in range(cfg["n_layers"]):
        path = f"transformer.h.{l}.attn.c_attn"
        bound = 1.0 / math.sqrt(C)  # kaiming_uniform_(a=sqrt(5)) on (r k, in)
        lora[path] = (rng.uniform((r * k, C), -bound, bound), rng.uniform((C * k, r), -0.1, 0.1), s, enable)
    tokens, targets = R.random_io(rng, cfg["vocab"], 2, 5)

    def run(dtype):
        Wd = {kk: v.to(dtype) for kk, v in W.items()}
        Ld = {p: (A.to(dtype).clone().requires_grad_(True), B.to(dtype).clone().requires_grad_(True), sc, en)
              for p, (A, B, sc, en) in lora.items()}
        logits = R.forward(cfg, Wd, Ld, tokens.long())
        loss = R.xent(logits, targets)
        loss.backward()
        return logits.detach(), loss.detach(), {p: (A.grad, B.grad) for p, (A, B, _s, _e) in Ld.items()}

    logits, loss, grads = run(torch.float64)
    l32, loss32, g32 = run(torch.float32)
    # The stacked PEFT form computes the same function as plain LoRA, and merging it is W + s B A.
    plain = {p: (A, stacked_b(B, enable, r), s) for p, (A, B, s, _e) in lora.items()}
    assert float((R.run(cfg, W, plain, tokens)[0] - logits).abs().max()) < 1e-9, "stacked form differs"
    merged = R.run(cfg, R.merged_weights(cfg, W, plain), {}, tokens)[0]
    assert float((merged - logits).abs().max()) < 1e-9, "merge differs"
    io = {"tokens": tokens, "targets": targets, "logits": logits, "loss": loss.reshape(1)}
    tensors = {}
    for path, (dA, dB) in grads.items():
        io["grad." + R.peft_key(path, "A")] = dA
        io["grad." + R.peft_key(path, "B")] = stacked_b(dB, enable, r)
        tensors[R.peft_key(path, "A")] = lora[path][0]
        tensors[R.peft_key(path, "B")] = stacked_b(lora[path][1], enable, r)
    R.st_write(os.path.join(d, "io.safetensors"), io)
    R.st_write(os.path.join(d, "adapter_model.safetensors"), tensors, {"format": "pt", "weblora.enable_lora": "q,v"})
    mods = [{"path": p, "r": r * k, "alpha": alpha * k, "scaling": s} for p in lora]
    acfg = R.make_adapter(cfg, R.Rng(0), ["c_attn"], r * k, alpha * k)[2]  # PEFT's config for the stacked form
    R.write_json(os.path.join(d, "adapter_config.json"), acfg)
    tol, measured = tolerances(logits, l32, loss, loss32, grads, g32)
    # A whole-matrix LoRA of the stacked factors would train B's zero blocks: how large their gradient is there.
    full_b = R.run(cfg, W, plain, tokens, targets)[2]
    outside = stacked_b(torch.ones(C * k, r), enable, r) == 0
    leak = max(float(full_b[p][1][outside].abs().max()) for p in grads)
    assert leak > 100 * tol["grads"]["atol"], f"{name}: the zero blocks' gradient {leak:.2e} is too small to tell"
    inside = max(float((full_b[p][1] - stacked_b(grads[p][1], enable, r))[~outside].abs().max()) for p in grads)
    assert inside < 1e-12, "inside the blocks the stacked LoRA's gradient is loralib's"

    case = {
        "arch": cfg["arch"], "description": merged_case.__doc__.strip(), "model_format": fmt, "B": 2, "T": 5,
        "vocab_size": cfg["vocab"], "targets": ["c_attn"], "r": r * k, "alpha": alpha * k, "use_rslora": False,
        "rank_pattern": {}, "alpha_pattern": {}, "fan_in_fan_out": True, "enable_lora": enable,
        "loralib": {"r": r, "lora_alpha": alpha}, "lora_modules": mods, "ignore_id": R.IGNORE_ID, "n_ignored": 0,
        "full": False, "loss": float(loss), "tolerance": tol, "float32_torch_error": measured,
        "whole_matrix_B_grad_outside_blocks_max": leak,
    }
    R.write_json(os.path.join(d, "case.json"), case)
    print(f"{name}: loss {float(loss):.6f}  f32 err logits {measured['logits_max_abs_err']:.2e} grads "
          f"{measured['grads_max_abs_err']:.2e}")


def tolerances(logits, l32, loss, loss32, grads, g32):
    """Tolerances as make_ref.py's lora_case derives them (20 times torch's own float32 error, with floors) and the
    errors they come from; grads maps a module to its gradient tensors."""
    lerr, lmag = R.max_err([(l32, logits)])
    gerr, gmag = R.max_err([(a, b) for p in grads for a, b in zip(g32[p], grads[p])])
    loss_err = abs(float(loss32) - float(loss))
    tol = {"logits": R.recommend(lerr, lmag, 1e-6, 1e-5), "grads": R.recommend(gerr, gmag, 1e-5, 1e-4),
           "loss": R.recommend(loss_err, float(loss), 1e-6, 1e-5)}
    return tol, {"logits_max_abs_err": lerr, "logits_max_abs": lmag, "grads_max_abs_err": gerr, "grads_max_abs": gmag}


def magnitude_key(path):
    return f"base_model.model.{path}.lora_magnitude_vector"


def dora_case(g, name, description, cfg, W, rng, targets, r, alpha, Bsz, T):
    """A DoRA adapter (magnitudes near the norms of W + s B A, times U(0.7, 1.3), so the norm and the magnitude
    both matter) with PEFT's files, logits, loss and gradients."""
    d = g.case_dir(name)
    fmt = g.write_model(d, cfg, W)
    lora3, mods, acfg = R.make_adapter(cfg, rng, targets, r, alpha)
    conv = {p: c for p, _i, _o, c in R.linear_modules(cfg)}
    lora = {}
    for path, (A, B, s) in lora3.items():
        w = W[path + ".weight"]
        weight = w.t() if conv[path] else w
        norm = (weight + s * (B @ A)).norm(p=2, dim=1)
        lora[path] = (A, B, s, R.round32(norm * rng.uniform(norm.shape, 0.7, 1.3)))
    acfg["use_dora"] = True
    tokens, targets_ = R.random_io(rng, cfg["vocab"], Bsz, T)
    logits, loss, grads = dora_run(cfg, W, lora, tokens, targets_, torch.float64)
    l32, loss32, g32 = dora_run(cfg, W, lora, tokens, targets_, torch.float32)
    _l, _loss, gfull = dora_run(cfg, W, lora, tokens, targets_, torch.float64, detach=False)
    merged = R.run(cfg, dora_merged_weights(cfg, W, lora), {}, tokens)[0]
    assert float((merged - logits).abs().max()) < 1e-9, "DoRA merge mismatch"
    plain = R.run(cfg, W, lora3, tokens)[0]  # the same A, B as plain LoRA: DoRA must differ from it

    io = {"tokens": tokens, "targets": targets_, "logits": logits, "loss": loss.reshape(1)}
    tensors = {}
    for path, (dA, dB, dm) in grads.items():
        A, B, _s, mag = lora[path]
        io["grad." + R.peft_key(path, "A")] = dA
        io["grad." + R.peft_key(path, "B")] = dB
        io["grad." + magnitude_key(path)] = dm
        tensors[R.peft_key(path, "A")] = A
        tensors[R.peft_key(path, "B")] = B
        tensors[magnitude_key(path)] = mag
    R.st_write(os.path.join(d, "io.safetensors"), io)
    R.st_write(os.path.join(d, "adapter_model.safetensors"), hf_row_order_dora(cfg, tensors), {"format": "pt"})
    R.write_json(os.path.join(d, "adapter_config.json"), acfg)

    tol, measured = tolerances(logits, l32, loss, loss32, grads, g32)
    undetached = max(float((grads[p][i] - gfull[p][i]).abs().max()) for p in grads for i in (0, 1))
    plain_diff = float((plain - logits).abs().max())
    assert undetached > 100 * tol["grads"]["atol"], f"{name}: detaching the norm changes grads by {undetached:.2e}"
    assert plain_diff > 100 * tol["logits"]["atol"], f"{name}: DoRA and plain LoRA logits differ by {plain_diff:.2e}"
    case = {
        "arch": cfg["arch"], "description": description, "model_format": fmt, "B": Bsz, "T": T,
        "vocab_size": cfg["vocab"], "targets": acfg["target_modules"], "r": r, "alpha": alpha, "use_rslora": False,
        "use_dora": True, "rank_pattern": {}, "alpha_pattern": {}, "fan_in_fan_out": acfg["fan_in_fan_out"],
        "lora_modules": mods, "ignore_id": R.IGNORE_ID, "n_ignored": 0, "full": False, "loss": float(loss),
        "tolerance": tol, "float32_torch_error": measured,
        "grads_diff_if_norm_not_detached": undetached, "logits_diff_from_plain_lora": plain_diff,
    }
    R.write_json(os.path.join(d, "case.json"), case)
    print(f"{name}: loss {float(loss):.6f}  f32 err logits {measured['logits_max_abs_err']:.2e} grads "
          f"{measured['grads_max_abs_err']:.2e}  undetached grads differ by "
          f"{undetached:.2e}  plain LoRA logits differ by {plain_diff:.2e}")


def hf_row_order_dora(cfg, tensors):
    """make_ref.hf_row_order, and the same permutation of the q_proj / k_proj magnitudes (one per output row)."""
    out = R.hf_row_order(cfg, {k: v for k, v in tensors.items() if not k.endswith("lora_magnitude_vector")})
    for k, v in tensors.items():
        if k.endswith("lora_magnitude_vector"):
            col = v.view(-1, 1)
            fake = k.replace("lora_magnitude_vector", "lora_B.weight")
            out[k] = R.hf_row_order(cfg, {fake: col})[fake].reshape(-1)
    return {k: out[k] for k in tensors}


ALL_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def dora_cases(g):
    # Small models: the golden folder keeps to its size budget (make_ref.py), and every path still matters.
    rng = R.Rng(1301)
    cfg = R.llama_cfg(16, 24, 1, 2, 1, 24, 16, False, 1e-5, 10000.0)
    dora_case(g, "dora_llama", "Llama (hidden 16, 1 layer, GQA 2/1, untied head, HF layout); DoRA (use_dora) on all "
              "7 linear modules, r 2, alpha 4; magnitudes near ||W + s B A||_row.", cfg, R.random_weights(cfg, rng),
              rng, ALL_LLAMA, 2, 4, 2, 5)
    rng = R.Rng(1302)
    cfg = R.llama_cfg(16, 24, 1, 2, 1, 24, 16, True, 1e-5, 10000.0, rope="interleaved", arch="llama2c")
    dora_case(g, "dora_llama2c", "llama2.c checkpoint (model.bin, interleaved RoPE, shared classifier, 1 layer, GQA "
              "2/1); DoRA on all 7 modules, r 2, alpha 4. The PEFT file holds q_proj / k_proj lora_B rows and "
              "magnitudes in Hugging Face row order; the grad.* tensors are in the checkpoint's order.", cfg,
              R.random_weights(cfg, rng), rng, ALL_LLAMA, 2, 4, 2, 5)
    rng = R.Rng(1303)
    cfg = R.gpt2_cfg(12, 1, 2, 24, 8)
    dora_case(g, "dora_gpt2", "GPT-2 (n_embd 12, 2 heads, 1 layer, vocab 24); DoRA on c_attn, attn.c_proj, mlp.c_fc "
              "and mlp.c_proj (Conv1D, fan_in_fan_out), r 2, alpha 8; biases make the base(x) - bias split matter.",
              cfg, R.random_weights(cfg, rng), rng, ["c_attn", "c_proj", "c_fc"], 2, 8, 2, 5)


def main():
    g = R.golden_from_args(__doc__.split("\n")[0])
    with tempfile.TemporaryDirectory() as tmp:
        # make_ref's llama_patterns model and adapter, rebuilt from its seeds (its files are not rewritten)
        pcfg, pW, plora, _mods, _acfg = R.pattern_case(R.Golden(tmp, g.shared))
        for f in ("model.safetensors", "adapter_model.safetensors"):  # tests load the committed files
            with open(os.path.join(tmp, "llama_patterns", f), "rb") as a, \
                    open(os.path.join(g.out, "llama_patterns", f), "rb") as b:
                assert a.read() == b.read(), f"llama_patterns/{f} differs from the committed golden file"
    train_loraplus(g, pcfg, pW, plora)
    dora_cases(g)
    merged_case(g)
    R.check_budget(g.out)


if __name__ == "__main__":
    main()
