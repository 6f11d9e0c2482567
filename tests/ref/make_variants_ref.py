#!/usr/bin/python3
"""make_variants_ref.py: PyTorch references for the adapter variants (LoRA+ training); writes golden cases in
tests/ref/golden/ next to make_ref.py's, reusing its model, adapter and file code.

LoRA+ (Hayou et al. 2024, PEFT's peft/optimizers/loraplus.py create_loraplus_optimizer): the optimizer gets two
parameter groups, lora_A at the learning rate lr and lora_B at lr * loraplus_lr_ratio, with the same weight decay.

Run: /usr/bin/python3 tests/ref/make_variants_ref.py [--shared DIR] [--out DIR]
Deterministic like make_ref.py (fixed seeds, one thread).
"""
import argparse
import os
import sys
import tempfile

import torch

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.environ.get("WL_SHARED_DIR",
                                                       os.path.join(os.path.dirname(R.REPO), "shared")))
    ap.add_argument("--out", default=os.path.join(R.HERE, "golden"))
    args = ap.parse_args()
    g = R.Golden(os.path.abspath(args.out), os.path.abspath(args.shared))
    with tempfile.TemporaryDirectory() as tmp:
        # make_ref's llama_patterns model and adapter, rebuilt from its seeds (its files are not rewritten)
        pcfg, pW, plora, _mods, _acfg = R.pattern_case(R.Golden(tmp, g.shared))
        for f in ("model.safetensors", "adapter_model.safetensors"):  # tests load the committed files
            with open(os.path.join(tmp, "llama_patterns", f), "rb") as a, \
                    open(os.path.join(g.out, "llama_patterns", f), "rb") as b:
                assert a.read() == b.read(), f"llama_patterns/{f} differs from the committed golden file"
    train_loraplus(g, pcfg, pW, plora)


if __name__ == "__main__":
    main()
