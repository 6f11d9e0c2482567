#!/usr/bin/python3
"""make_embed_ref.py: PyTorch references for LoRA on the token embedding and on the LM head; writes golden cases in
tests/ref/golden/ next to make_ref.py's, with its model, adapter and file code.

PEFT (tuners/lora/layer.py) wraps an nn.Embedding in lora.Embedding: parameters lora_embedding_A (r, V) and
lora_embedding_B (C, r), saved as base_model.model.<path>.lora_embedding_A / _B (no ".weight"); forward adds
F.embedding(x, lora_embedding_A.T) @ lora_embedding_B.T * scaling to the lookup, without dropout; get_delta_weight
is transpose(B A) * scaling, so merging adds (B A)^T s to the (V, C) embedding; initialisation is A = 0 and
B ~ N(0, 1). The head (module "lm_head") is an nn.Linear and gets PEFT's ordinary Linear LoRA (lora_A.weight,
lora_B.weight), also when its weight is the embedding's (tied): the unmerged adapter then changes only the use its
module makes of the shared weight, while PEFT's merge would write into the shared tensor and change both (the case
records how far that moves the logits).

Run: /usr/bin/python3 tests/ref/make_embed_ref.py [--shared DIR] [--out DIR]
Deterministic like make_ref.py (fixed seeds, one thread).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_ref as R  # noqa: E402


def model_level_adapter(cfg, rng, emb_path, block_targets, r, alpha):
    """A PEFT adapter on the embedding, lm_head and the block modules named by block_targets (r, alpha everywhere).
    The factors are random and non-zero (PEFT's init would give A = 0 on the embedding and B = 0 on linears, where
    half of the gradients vanish)."""
    lora, modules, acfg = R.make_adapter(cfg, rng, block_targets, r, alpha)
    C, V, s = cfg["dim"], cfg["vocab"], alpha / r
    lora[emb_path] = (rng.uniform((r, V), -0.5, 0.5), rng.normal((C, r), 1.0), s)
    lora["lm_head"] = (rng.uniform((r, C), -0.5, 0.5), rng.uniform((V, r), -0.3, 0.3), s)
    modules = ([{"path": emb_path, "r": r, "alpha": alpha, "scaling": s}] + modules
               + [{"path": "lm_head", "r": r, "alpha": alpha, "scaling": s}])
    acfg["target_modules"] = [emb_path.split(".")[-1], "lm_head"] + list(block_targets)
    return lora, modules, acfg


def tied_merge_effect(cfg, W, lora, tokens, emb_path):
    """How far PEFT's merge into the shared tensor of a tied model moves the logits from the unmerged adapter."""
    logits = R.run(cfg, W, lora, tokens)[0]
    M = dict(W)
    key = emb_path + ".weight"
    A, B, s = lora[emb_path]
    M[key] = M[key] + (B @ A).t() * s
    A, B, s = lora["lm_head"]
    M[key] = M[key] + (B @ A) * s
    rest = {k: v for k, v in lora.items() if k not in (emb_path, "lm_head")}
    return float((R.run(cfg, M, rest, tokens)[0] - logits).abs().max())


def embed_case(g, name, description, cfg, rng, emb_path, block_targets):
    W = R.random_weights(cfg, rng)
    lora, modules, acfg = model_level_adapter(cfg, rng, emb_path, block_targets, 2, 4)
    tokens, targets = R.random_io(rng, cfg["vocab"], 2, 4)
    g.lora_case(name, description, cfg, W, lora, modules, acfg, tokens, targets, False)
    d = os.path.join(g.out, name)
    case = R.json.load(open(os.path.join(d, "case.json")))
    if cfg["tied"]:
        effect = tied_merge_effect(cfg, W, lora, tokens, emb_path)
        assert effect > 100 * case["tolerance"]["logits"]["atol"], f"{name}: a tied merge moves logits by {effect:.2e}"
        case["tied_merge_logits_diff"] = effect
    # Without the model-level modules the logits must differ far beyond the tolerance (each one matters).
    for path in (emb_path, "lm_head"):
        without = {k: v for k, v in lora.items() if k != path}
        diff = float((R.run(cfg, W, without, tokens)[0] - R.run(cfg, W, lora, tokens)[0]).abs().max())
        assert diff > 100 * case["tolerance"]["logits"]["atol"], f"{name}: {path} moves logits by only {diff:.2e}"
        case[f"logits_diff_without_{path.split('.')[-1]}"] = diff
    R.write_json(os.path.join(d, "case.json"), case)


def main():
    g = R.golden_from_args(__doc__.split("\n")[0])
    # Tiny models: the golden folder keeps to its size budget (make_ref.py).
    cfg = R.llama_cfg(8, 12, 1, 2, 1, 16, 16, False, 1e-5, 10000.0)
    embed_case(g, "embed_llama", "Llama (hidden 8, 1 layer, GQA 2/1, vocab 16, untied lm_head, HF layout); PEFT LoRA "
               "on embed_tokens (lora_embedding_A / _B), lm_head and q_proj, r 2, alpha 4.", cfg, R.Rng(1401),
               "model.embed_tokens", ["q_proj"])
    cfg = R.llama_cfg(8, 12, 1, 2, 1, 16, 16, True, 1e-5, 10000.0)
    embed_case(g, "embed_llama_tied", "Llama with tie_word_embeddings (hidden 8, 1 layer, vocab 16, HF layout); PEFT "
               "LoRA on embed_tokens, lm_head (the same tensor as the embedding) and v_proj, r 2, alpha 4: each "
               "LoRA changes only its own use of the shared weight.", cfg, R.Rng(1402), "model.embed_tokens",
               ["v_proj"])
    cfg = R.gpt2_cfg(8, 1, 2, 16, 8)
    embed_case(g, "embed_gpt2", "GPT-2 (n_embd 8, 2 heads, 1 layer, vocab 16, head tied to wte); PEFT LoRA on wte, "
               "lm_head and c_attn (Conv1D, fan_in_fan_out), r 2, alpha 4.", cfg, R.Rng(1403), "transformer.wte",
               ["c_attn"])
    R.check_budget(g.out)


if __name__ == "__main__":
    main()
