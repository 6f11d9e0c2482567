#!/usr/bin/python3
"""make_ref.py: the PyTorch reference for weblora's model tests; writes the golden files in tests/ref/golden/.

An independent implementation in plain PyTorch (no transformers, peft or safetensors packages) of
Hugging Face LlamaForCausalLM (with the Qwen2 q/k/v bias and llama2.c's interleaved RoPE as variants) and
GPT2LMHeadModel, PEFT LoRA on Linear and Conv1D modules, the safetensors and llama2.c file formats, and the
llama2.c (tok512) and GPT-2 byte-level BPE tokenizers. Everything is computed in float64 from weights that are
exactly representable in float32 and stored as float32; the greedy decoding file is the one thing computed in
float32 (see README.md).

Run: /usr/bin/python3 tests/ref/make_ref.py [--shared DIR] [--out DIR]
Deterministic: fixed seeds, no dependence on time or environment. Only developers run it; CI reads its output.
"""
import argparse
import ctypes
import ctypes.util
import json
import math
import os
import re
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)  # a fixed reduction order, so reruns give identical bytes

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IGNORE_ID = -100
GPT2_BUFFER = re.compile(r"\.attn\.(masked_)?bias$")  # non-parameter buffers older GPT-2 files carry

# ----------------------------------------------------------------------------------------------------------
# safetensors (huggingface/safetensors format: u64 header size, JSON header, packed little-endian data)

_ST_NP = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def st_read(path):
    """Read a safetensors file into {name: torch tensor} (BF16 widened to float32) and its metadata."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = int(np.prod(shape)) if shape else 1
        if info["dtype"] == "BF16":
            raw = np.frombuffer(buf, dtype="<u2", count=count, offset=base + begin)
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            dt = np.dtype(_ST_NP[info["dtype"]]).newbyteorder("<")
            arr = np.frombuffer(buf, dtype=dt, count=count, offset=base + begin)
            assert arr.nbytes == end - begin, name
        out[name] = torch.from_numpy(arr.reshape(shape).copy())
    return out, meta


def st_write(path, tensors, metadata=None, float_dtype="F32"):
    """Write {name: tensor} as safetensors; float tensors are stored as float_dtype (F32, F16 or BF16, rounded to
    nearest even by torch), integer tensors I32."""
    header = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.is_floating_point():
            dtype = float_dtype
            if dtype == "F32":
                arr = t.to(torch.float32).contiguous().numpy().astype("<f4")
            elif dtype == "F16":
                arr = t.to(torch.float16).contiguous().numpy().astype("<f2")
            else:  # BF16: numpy has no bfloat16, so write the bits
                arr = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().astype("<i2")
        else:
            arr, dtype = t.to(torch.int32).contiguous().numpy().astype("<i4"), "I32"
        data = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad so the data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------------------------------------
# Model configs (one internal dict for every architecture)

def llama_cfg(dim, hidden, n_layers, n_heads, n_kv_heads, vocab, max_pos, tied, eps, theta, head_dim=None,
              qkv_bias=False, rope="half", arch="llama"):
    return dict(arch=arch, family="llama", dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads,
                n_kv_heads=n_kv_heads, head_dim=head_dim or dim // n_heads, explicit_head_dim=head_dim is not None,
                vocab=vocab, max_pos=max_pos, tied=tied, eps=eps, theta=theta, qkv_bias=qkv_bias, rope=rope)


def gpt2_cfg(dim, n_layers, n_heads, vocab, n_positions, eps=1e-5, n_inner=None):
    return dict(arch="gpt2", family="gpt2", dim=dim, hidden=n_inner or 4 * dim, n_inner=n_inner,
                n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads, head_dim=dim // n_heads, vocab=vocab,
                max_pos=n_positions, tied=True, eps=eps)


def cfg_from_hf(cj):
    """Internal config from a Hugging Face config.json dict."""
    mt = cj.get("model_type")
    if mt == "gpt2":
        return gpt2_cfg(cj["n_embd"], cj["n_layer"], cj["n_head"], cj["vocab_size"], cj["n_positions"],
                        cj.get("layer_norm_epsilon", 1e-5), cj.get("n_inner"))
    assert mt in ("llama", "qwen2"), mt
    assert not cj.get("rope_scaling"), "rope_scaling is not part of this reference"
    return llama_cfg(cj["hidden_size"], cj["intermediate_size"], cj["num_hidden_layers"],
                     cj["num_attention_heads"], cj.get("num_key_value_heads") or cj["num_attention_heads"],
                     cj["vocab_size"], cj["max_position_embeddings"], cj.get("tie_word_embeddings", False),
                     cj["rms_norm_eps"], cj.get("rope_theta", 10000.0), cj.get("head_dim"),
                     qkv_bias=(mt == "qwen2") or cj.get("attention_bias", False), arch=mt)


def hf_config_json(cfg):
    """config.json as transformers writes it for LlamaForCausalLM / Qwen2ForCausalLM / GPT2LMHeadModel."""
    if cfg["arch"] == "gpt2":
        return {
            "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.0,
            "bos_token_id": cfg["vocab"] - 1, "embd_pdrop": 0.0, "eos_token_id": cfg["vocab"] - 1,
            "initializer_range": 0.02, "layer_norm_epsilon": cfg["eps"], "model_type": "gpt2",
            "n_ctx": cfg["max_pos"], "n_embd": cfg["dim"], "n_head": cfg["n_heads"], "n_inner": cfg["n_inner"],
            "n_layer": cfg["n_layers"], "n_positions": cfg["max_pos"], "reorder_and_upcast_attn": False,
            "resid_pdrop": 0.0, "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
            "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True, "vocab_size": cfg["vocab"],
        }
    cj = {
        "architectures": ["Qwen2ForCausalLM" if cfg["arch"] == "qwen2" else "LlamaForCausalLM"],
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": cfg["dim"], "initializer_range": 0.02, "intermediate_size": cfg["hidden"],
        "max_position_embeddings": cfg["max_pos"], "model_type": cfg["arch"],
        "num_attention_heads": cfg["n_heads"], "num_hidden_layers": cfg["n_layers"],
        "num_key_value_heads": cfg["n_kv_heads"], "rms_norm_eps": cfg["eps"], "rope_scaling": None,
        "rope_theta": cfg["theta"], "tie_word_embeddings": cfg["tied"], "torch_dtype": "float32",
        "use_cache": True, "vocab_size": cfg["vocab"],
    }
    if cfg["arch"] == "qwen2":
        cj.update({"max_window_layers": cfg["n_layers"], "sliding_window": None, "use_sliding_window": False})
    else:
        cj.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    if cfg["explicit_head_dim"]:
        cj["head_dim"] = cfg["head_dim"]
    return dict(sorted(cj.items()))


def weight_shapes(cfg):
    """Every base tensor as (HF name, shape as stored in a HF file), in HF named_parameters order."""
    C, I, V, L = cfg["dim"], cfg["hidden"], cfg["vocab"], cfg["n_layers"]
    out = []
    if cfg["family"] == "gpt2":
        out += [("transformer.wte.weight", (V, C)), ("transformer.wpe.weight", (cfg["max_pos"], C))]
        for l in range(L):
            p = f"transformer.h.{l}."
            out += [(p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
                    (p + "attn.c_attn.weight", (C, 3 * C)), (p + "attn.c_attn.bias", (3 * C,)),
                    (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
                    (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
                    (p + "mlp.c_fc.weight", (C, I)), (p + "mlp.c_fc.bias", (I,)),
                    (p + "mlp.c_proj.weight", (I, C)), (p + "mlp.c_proj.bias", (C,))]
        out += [("transformer.ln_f.weight", (C,)), ("transformer.ln_f.bias", (C,))]
        return out
    H, Hkv, hs = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    out.append(("model.embed_tokens.weight", (V, C)))
    for l in range(L):
        p = f"model.layers.{l}."
        out.append((p + "self_attn.q_proj.weight", (H * hs, C)))
        if cfg["qkv_bias"]:
            out.append((p + "self_attn.q_proj.bias", (H * hs,)))
        out.append((p + "self_attn.k_proj.weight", (Hkv * hs, C)))
        if cfg["qkv_bias"]:
            out.append((p + "self_attn.k_proj.bias", (Hkv * hs,)))
        out.append((p + "self_attn.v_proj.weight", (Hkv * hs, C)))
        if cfg["qkv_bias"]:
            out.append((p + "self_attn.v_proj.bias", (Hkv * hs,)))
        out += [(p + "self_attn.o_proj.weight", (C, H * hs)),
                (p + "mlp.gate_proj.weight", (I, C)), (p + "mlp.up_proj.weight", (I, C)),
                (p + "mlp.down_proj.weight", (C, I)),
                (p + "input_layernorm.weight", (C,)), (p + "post_attention_layernorm.weight", (C,))]
    out.append(("model.norm.weight", (C,)))
    if not cfg["tied"]:
        out.append(("lm_head.weight", (V, C)))
    return out


def linear_modules(cfg):
    """LoRA-targetable linear modules as (module path, in_features, out_features, conv1d)."""
    C, I, L = cfg["dim"], cfg["hidden"], cfg["n_layers"]
    mods = []
    if cfg["family"] == "gpt2":
        for l in range(L):
            p = f"transformer.h.{l}."
            mods += [(p + "attn.c_attn", C, 3 * C, True), (p + "attn.c_proj", C, C, True),
                     (p + "mlp.c_fc", C, I, True), (p + "mlp.c_proj", I, C, True)]
        return mods
    H, Hkv, hs = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    for l in range(L):
        p = f"model.layers.{l}."
        mods += [(p + "self_attn.q_proj", C, H * hs, False), (p + "self_attn.k_proj", C, Hkv * hs, False),
                 (p + "self_attn.v_proj", C, Hkv * hs, False), (p + "self_attn.o_proj", H * hs, C, False),
                 (p + "mlp.gate_proj", C, I, False), (p + "mlp.up_proj", C, I, False),
                 (p + "mlp.down_proj", I, C, False)]
    return mods


# ----------------------------------------------------------------------------------------------------------
# llama2.c checkpoints (version 0, karpathy/llama2.c run.c), mapped onto HF Llama names without permutation

def read_llama2c(path):
    with open(path, "rb") as f:
        buf = f.read()
    dim, hidden, L, H, Hkv, vocab, seq_len = struct.unpack_from("<7i", buf, 0)
    shared = vocab > 0
    V = abs(vocab)
    hs = dim // H
    kv = dim * Hkv // H
    cfg = llama_cfg(dim, hidden, L, H, Hkv, V, seq_len, shared, 1e-5, 10000.0, rope="interleaved", arch="llama2c")
    floats = np.frombuffer(buf, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        assert pos + n <= floats.size, "llama2.c file too short"
        t = torch.from_numpy(floats[pos:pos + n].reshape(shape).copy())
        pos += n
        return t

    W = {"model.embed_tokens.weight": take(V, dim)}
    stacked = [("input_layernorm.weight", (dim,)), ("self_attn.q_proj.weight", (dim, dim)),
               ("self_attn.k_proj.weight", (kv, dim)), ("self_attn.v_proj.weight", (kv, dim)),
               ("self_attn.o_proj.weight", (dim, dim)), ("post_attention_layernorm.weight", (dim,)),
               ("mlp.gate_proj.weight", (hidden, dim)), ("mlp.down_proj.weight", (dim, hidden)),
               ("mlp.up_proj.weight", (hidden, dim))]
    for name, shape in stacked:
        t = take(L, *shape)
        for l in range(L):
            W[f"model.layers.{l}.{name}"] = t[l].clone()
    W["model.norm.weight"] = take(dim)
    take(seq_len, hs // 2)  # legacy freq_cis_real
    take(seq_len, hs // 2)  # legacy freq_cis_imag
    if not shared:
        W["lm_head.weight"] = take(V, dim)
    assert pos == floats.size, "llama2.c file has trailing data"
    return cfg, W


def write_llama2c(path, cfg, W):
    dim, hidden, L, H, Hkv, V = (cfg[k] for k in ("dim", "hidden", "n_layers", "n_heads", "n_kv_heads", "vocab"))
    hs = dim // H
    assert cfg["head_dim"] == hs and cfg["rope"] == "interleaved"
    seq_len = cfg["max_pos"]
    parts = [W["model.embed_tokens.weight"]]
    for name in ("input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                 "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                 "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight"):
        parts += [W[f"model.layers.{l}.{name}"] for l in range(L)]
    parts.append(W["model.norm.weight"])
    freq = 1.0 / (10000.0 ** (torch.arange(0, hs, 2) / hs))
    ang = torch.arange(seq_len)[:, None] * freq[None, :]
    parts += [torch.cos(ang), torch.sin(ang)]
    if not cfg["tied"]:
        parts.append(W["lm_head.weight"])
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, L, H, Hkv, V if cfg["tied"] else -V, seq_len))
        for t in parts:
            f.write(t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())


# ----------------------------------------------------------------------------------------------------------
# Tokenizers

class Llama2cTokenizer:
    """llama2.c tokenizer.bin: int32 max_token_length, then per id: f32 score, int32 len, bytes. Encoding as
    run.c encode(): optional BOS, a dummy-prefix " " token, one token per UTF-8 code point (byte fallback
    <0xNN> = byte + 3 when the code point is not in the vocabulary), then repeatedly merge the adjacent pair
    whose concatenation is in the vocabulary with the highest score (leftmost on ties)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            buf = f.read()
        (self.max_len,) = struct.unpack_from("<i", buf, 0)
        p = 4
        self.pieces, self.scores = [], []
        while p < len(buf):
            score, n = struct.unpack_from("<fi", buf, p)
            p += 8
            self.pieces.append(buf[p:p + n])
            self.scores.append(score)
            p += n
        self.lookup = {}
        for i, piece in enumerate(self.pieces):
            self.lookup.setdefault(piece, i)

    def encode(self, text, bos=True, eos=False):
        data = text.encode("utf-8")
        toks = [1] if bos else []
        if data:
            toks.append(self.lookup[b" "])
        i = 0
        while i < len(data):
            j = i + 1
            while j < len(data) and (data[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            cp = data[i:j]
            if cp in self.lookup:
                toks.append(self.lookup[cp])
            else:
                toks += [b + 3 for b in cp]
            i = j
        while True:
            best, best_id, best_idx = -1e10, -1, -1
            for k in range(len(toks) - 1):
                tid = self.lookup.get(self.pieces[toks[k]] + self.pieces[toks[k + 1]], -1)
                if tid != -1 and self.scores[tid] > best:
                    best, best_id, best_idx = self.scores[tid], tid, k
            if best_idx == -1:
                break
            toks[best_idx:best_idx + 2] = [best_id]
        if eos:
            toks.append(2)
        return toks

    def decode(self, ids, prev=None):
        out = b""
        for t in ids:
            piece = self.pieces[t]
            if prev == 1 and piece.startswith(b" "):
                piece = piece[1:]
            m = re.fullmatch(rb"<0x([0-9A-F]{2})>", piece)
            out += bytes([int(m.group(1), 16)]) if m else piece
            prev = t
        return out.decode("utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2 byte-level BPE from vocab.json + merges.txt. The pre-tokenizer is GPT-2's pattern
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+, written here for ASCII
    text only (Python's re has no \\p{L}); encode() refuses anything else."""

    PAT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")

    def __init__(self, vocab_path, merges_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.inv = {v: k for k, v in self.vocab.items()}
        with open(merges_path, encoding="utf-8") as f:
            lines = [ln for ln in f.read().split("\n") if ln and not ln.startswith("#version")]
        self.ranks = {tuple(ln.split(" ")): i for i, ln in enumerate(lines)}
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_enc = {b: chr(c) for b, c in zip(bs, cs)}
        self.byte_dec = {v: k for k, v in self.byte_enc.items()}

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text):
        assert text.isascii(), "this reference pre-tokenizer handles ASCII text only"
        ids = []
        for piece in self.PAT.findall(text):
            word = "".join(self.byte_enc[b] for b in piece.encode("utf-8"))
            ids += [self.vocab[p] for p in self.bpe(word)]
        return ids

    def decode(self, ids):
        return bytes(self.byte_dec[c] for t in ids for c in self.inv[t]).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------------------
# The models (functional: W maps HF tensor names to tensors in HF file layout; lora maps module paths to
# (A (r, in), B (out, r), scaling))

def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def linear(x, W, lora, path, conv1d=False, drop=None):
    """HF Linear (W (out, in)) or Conv1D (W (in, out)), plus PEFT LoRA: base(x) + scaling * B(A(dropout(x))).
    drop maps a module path to the dropout multiplier of its LoRA input (mask / (1 - p), shaped like x)."""
    w = W[path + ".weight"]
    y = x @ w if conv1d else x @ w.t()
    if path + ".bias" in W:
        y = y + W[path + ".bias"]
    if path in lora:
        A, B, s = lora[path]
        xl = x * drop[path] if drop and path in drop else x
        y = y + ((xl @ A.t()) @ B.t()) * s
    return y


def embedding(tokens, W, lora, path):
    """nn.Embedding plus PEFT's lora.Embedding (tuners/lora/layer.py Embedding.forward): the lookup plus
    F.embedding(x, lora_embedding_A.T) @ lora_embedding_B.T * scaling, A (r, V) and B (C, r); no dropout."""
    x = W[path + ".weight"][tokens]
    if path in lora:
        A, B, s = lora[path]
        x = x + (F.embedding(tokens, A.t()) @ B.t()) * s
    return x


def lm_head(x, weight, lora):
    """The output projection (an nn.Linear, its weight shared with the embedding when tied) with PEFT's Linear LoRA
    on the module "lm_head": a LoRA on a tied head changes only this use of the shared weight."""
    y = x @ weight.t()
    if "lm_head" in lora:
        A, B, s = lora["lm_head"]
        y = y + ((x @ A.t()) @ B.t()) * s
    return y


_LIBM = ctypes.CDLL(ctypes.util.find_library("m"))
_LIBM.powf.restype = ctypes.c_float
_LIBM.powf.argtypes = [ctypes.c_float, ctypes.c_float]


def rope_angles(T, hs, theta, layout, exact=False):
    """RoPE angles (T, hs/2) as each checkpoint's reference implementation computes them, in float32:
    Hugging Face LlamaRotaryEmbedding: inv_freq = 1.0 / (base ** (arange(0, hs, 2).float() / hs)), then
    position.float() * inv_freq, all torch float32 ops; llama2.c run.c: freq = 1.0f / powf(10000.0f,
    head_dim / (float)head_size), val = pos * freq, C float (libm powf, called here through ctypes; numpy's own
    float32 power differs from it in the last bit for some exponents). With exact=True: both in float64, which is
    what a careless implementation computes; at long positions the difference is visible (see rope_long_hf)."""
    if exact:
        inv = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
        return torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    if layout == "half":
        inv = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.int64).float() / hs))
        ang = torch.arange(T, dtype=torch.int64).float()[:, None] * inv[None, :]
        assert ang.dtype == torch.float32
    else:
        inv = np.array([np.float32(1.0) / np.float32(_LIBM.powf(theta, np.float32(i) / np.float32(hs)))
                        for i in range(0, hs, 2)], dtype=np.float32)
        ang = torch.from_numpy(np.arange(T, dtype=np.float32)[:, None] * inv[None, :])
    return ang.to(torch.float64)


def rope_tables(T, hs, theta, layout, dtype, exact=False):
    """cos and sin (T, hs/2) of the reference angles, taken in float64 (then cast to dtype)."""
    ang = rope_angles(T, hs, theta, layout, exact)
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin, layout):
    """x (B, heads, T, hs). half: HF rotate_half, pairs (i, i + hs/2); interleaved: llama2.c, pairs (2i, 2i+1)."""
    if layout == "half":
        c = torch.cat([cos, cos], -1)
        s = torch.cat([sin, sin], -1)
        h = x.shape[-1] // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * c + rot * s
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1).flatten(-2)


def causal_attention(q, k, v):
    """q (B, H, T, hs), k/v (B, H, T, hs): softmax(q k^T / sqrt(hs) + causal mask) v."""
    T, hs = q.shape[-2], q.shape[-1]
    att = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    att = att.masked_fill(~mask, float("-inf"))
    return torch.softmax(att, -1) @ v


def llama_forward(cfg, W, lora, tokens, drop=None):
    Bsz, T = tokens.shape
    H, Hkv, hs, eps = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"], cfg["eps"]
    x = embedding(tokens, W, lora, "model.embed_tokens")
    cos, sin = rope_tables(T, hs, cfg["theta"], cfg["rope"], x.dtype, cfg.get("exact_rope", False))
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = linear(h, W, lora, p + "self_attn.q_proj", drop=drop).view(Bsz, T, H, hs).transpose(1, 2)
        k = linear(h, W, lora, p + "self_attn.k_proj", drop=drop).view(Bsz, T, Hkv, hs).transpose(1, 2)
        v = linear(h, W, lora, p + "self_attn.v_proj", drop=drop).view(Bsz, T, Hkv, hs).transpose(1, 2)
        q = apply_rope(q, cos, sin, cfg["rope"])
        k = apply_rope(k, cos, sin, cfg["rope"])
        k = k.repeat_interleave(H // Hkv, dim=1)  # repeat_kv: query head h reads kv head h // (H / Hkv)
        v = v.repeat_interleave(H // Hkv, dim=1)
        y = causal_attention(q, k, v).transpose(1, 2).reshape(Bsz, T, H * hs)
        x = x + linear(y, W, lora, p + "self_attn.o_proj", drop=drop)
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = linear(h, W, lora, p + "mlp.gate_proj", drop=drop)
        u = linear(h, W, lora, p + "mlp.up_proj", drop=drop)
        x = x + linear(F.silu(g) * u, W, lora, p + "mlp.down_proj", drop=drop)
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tied"] else W["lm_head.weight"]
    return lm_head(x, head, lora)


def gpt2_forward(cfg, W, lora, tokens, drop=None):
    Bsz, T = tokens.shape
    C, H, eps = cfg["dim"], cfg["n_heads"], cfg["eps"]
    hs = C // H
    x = embedding(tokens, W, lora, "transformer.wte") + W["transformer.wpe.weight"][torch.arange(T)]
    for l in range(cfg["n_layers"]):
        p = f"transformer.h.{l}."
        h = layernorm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = linear(h, W, lora, p + "attn.c_attn", conv1d=True, drop=drop)
        q, k, v = (t.view(Bsz, T, H, hs).transpose(1, 2) for t in qkv.split(C, dim=-1))
        y = causal_attention(q, k, v).transpose(1, 2).reshape(Bsz, T, C)
        x = x + linear(y, W, lora, p + "attn.c_proj", conv1d=True, drop=drop)
        h = layernorm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        x = x + linear(gelu_new(linear(h, W, lora, p + "mlp.c_fc", conv1d=True, drop=drop)), W, lora,
                       p + "mlp.c_proj", conv1d=True, drop=drop)
    x = layernorm(x, W["transformer.ln_f.weight"], W["transformer.ln_f.bias"], eps)
    return lm_head(x, W["transformer.wte.weight"], lora)


def forward(cfg, W, lora, tokens, drop=None):
    want = dict(weight_shapes(cfg))
    got = {k: tuple(v.shape) for k, v in W.items()}
    assert got == want, f"weights do not match the config: {sorted(set(got) ^ set(want)) or 'shapes'}"
    return (gpt2_forward if cfg["family"] == "gpt2" else llama_forward)(cfg, W, lora, tokens, drop)


def xent(logits, targets):
    """Mean cross-entropy over targets != IGNORE_ID."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(),
                           ignore_index=IGNORE_ID, reduction="mean")


def run(cfg, W, lora, tokens, targets=None, full=False, dtype=torch.float64, drop=None):
    """Forward (and backward with targets) in `dtype`. Returns logits, loss, LoRA grads {path: (dA, dB)}, base
    grads {name: grad in file layout}. drop: LoRA dropout multipliers (dropout_multipliers)."""
    Wd = {k: v.detach().to(dtype).clone().requires_grad_(full) for k, v in W.items()}
    Ld = {k: (A.detach().to(dtype).clone().requires_grad_(True), B.detach().to(dtype).clone().requires_grad_(True), s)
          for k, (A, B, s) in lora.items()}
    Dd = {k: m.to(dtype) for k, m in drop.items()} if drop else None
    logits = forward(cfg, Wd, Ld, tokens.long(), Dd)
    loss, lgrads, wgrads = None, {}, {}
    if targets is not None:
        loss = xent(logits, targets)
        loss.backward()
        lgrads = {k: (A.grad, B.grad) for k, (A, B, _) in Ld.items()}
        if full:
            wgrads = {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in Wd.items()}
    return logits.detach(), (loss.detach() if loss is not None else None), lgrads, wgrads


# ----------------------------------------------------------------------------------------------------------
# PEFT LoRA adapters

def peft_target_match(path, targets):
    """PEFT check_target_module_exists: a string is a regex that must match the whole path (re.fullmatch); a list
    entry matches the path itself or a suffix after a dot."""
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def peft_pattern_key(keys, path):
    """PEFT get_pattern_key: the first key (in insertion order) with re.match(rf"(.*\\.)?({key})$", path);
    keys are regular expressions matched against the end of the module path at a dot boundary."""
    for key in keys:
        if re.match(rf"(.*\.)?({key})$", path):
            return key
    return path


def round32(t):
    return t.to(torch.float32).to(torch.float64)


class Rng:
    """numpy PCG64 with a fixed seed; every value is rounded to float32 before use."""

    def __init__(self, seed):
        self.g = np.random.Generator(np.random.PCG64(seed))

    def uniform(self, shape, lo, hi):
        return round32(torch.from_numpy(self.g.uniform(lo, hi, size=shape)))

    def normal(self, shape, std):
        return round32(torch.from_numpy(self.g.normal(0.0, std, size=shape)))

    def ints(self, shape, lo, hi):
        return torch.from_numpy(self.g.integers(lo, hi, size=shape)).to(torch.int32)


def make_adapter(cfg, rng, targets, r, alpha, use_rslora=False, rank_pattern=None, alpha_pattern=None,
                 base_name=None):
    rank_pattern = rank_pattern or {}
    alpha_pattern = alpha_pattern or {}
    lora, modules = {}, []
    fan_in_fan_out = cfg["family"] == "gpt2"
    for path, fin, fout, _conv in linear_modules(cfg):
        if not peft_target_match(path, targets):
            continue
        rr = rank_pattern.get(peft_pattern_key(rank_pattern.keys(), path), r)
        aa = alpha_pattern.get(peft_pattern_key(alpha_pattern.keys(), path), alpha)
        s = aa / math.sqrt(rr) if use_rslora else aa / rr
        bound = 1.0 / math.sqrt(fin)  # kaiming_uniform_(a=sqrt(5)) on (r, in): U(-1/sqrt(in), 1/sqrt(in))
        A = rng.uniform((rr, fin), -bound, bound)
        B = rng.uniform((fout, rr), -0.1, 0.1)
        lora[path] = (A, B, s)
        modules.append({"path": path, "r": rr, "alpha": aa, "scaling": s})
    assert modules, "no module matched the targets"
    config = {
        "alpha_pattern": alpha_pattern, "auto_mapping": None, "base_model_name_or_path": base_name, "bias": "none",
        "fan_in_fan_out": fan_in_fan_out, "inference_mode": True, "init_lora_weights": True,
        "layers_pattern": None, "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": 0.0,
        "modules_to_save": None, "peft_type": "LORA", "r": r, "rank_pattern": rank_pattern, "revision": None,
        "target_modules": targets if isinstance(targets, str) else list(targets), "task_type": "CAUSAL_LM",
        "use_dora": False, "use_rslora": use_rslora,
    }
    return lora, modules, config


EMBEDDINGS = ("model.embed_tokens", "transformer.wte")


def peft_key(path, which):
    """PEFT's state-dict key; an Embedding's factors are plain Parameters (lora_embedding_A / _B, no .weight)."""
    if path in EMBEDDINGS:
        return f"base_model.model.{path}.lora_embedding_{which}"
    return f"base_model.model.{path}.lora_{which}.weight"


def adapter_tensors(lora):
    out = {}
    for path, (A, B, _s) in lora.items():
        out[peft_key(path, "A")] = A
        out[peft_key(path, "B")] = B
    return out


def hf_row_order(cfg, tensors):
    """PEFT files of a llama2.c model hold lora_B of q_proj / k_proj in Hugging Face row order: HF's converter
    permutes those base rows (interleaved RoPE pairs -> rotate_half halves), so the adapter must follow to apply to
    the converted model. Other tensors and other architectures are unchanged."""
    if cfg.get("rope") != "interleaved":
        return tensors

    def permute(w, heads):
        out, inp = w.shape
        return w.reshape(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)

    res = {}
    for k, v in tensors.items():
        if k.endswith("self_attn.q_proj.lora_B.weight"):
            v = permute(v, cfg["n_heads"])
        elif k.endswith("self_attn.k_proj.lora_B.weight"):
            v = permute(v, cfg["n_kv_heads"])
        res[k] = v
    return res


def merged_weights(cfg, W, lora):
    """W + scaling * B A (PEFT merge; transposed to (in, out) for Conv1D, which is all fan_in_fan_out changes, and
    for an Embedding, whose get_delta_weight is transpose(B A)). None when a LoRA on the embedding or head of a tied
    model would have to merge into the one shared tensor (that changes both uses)."""
    M = dict(W)
    conv = {p: c for p, _i, _o, c in linear_modules(cfg)}
    for path, (A, B, s) in lora.items():
        delta = (B @ A) * s
        if path in EMBEDDINGS or path == "lm_head":
            if cfg["tied"]:
                return None
            M[path + ".weight"] = W[path + ".weight"] + (delta.t() if path in EMBEDDINGS else delta)
            continue
        M[path + ".weight"] = W[path + ".weight"] + (delta.t() if conv[path] else delta)
    return M


# ----------------------------------------------------------------------------------------------------------
# LoRA dropout, replayed from the core's definition of its masks

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def wl_hash64(seed, counter):
    """The core's counter-based hash: SplitMix64's finaliser applied to seed + 0x9e3779b97f4a7c15 * (counter + 1),
    on numpy uint64 arrays (their arithmetic wraps modulo 2^64 as C's does)."""
    z = np.asarray(seed, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15) * (np.asarray(counter, np.uint64) + np.uint64(1))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_multipliers(cfg, lora, Bsz, T, p, seed, step):
    """PEFT's lora_dropout with the masks the core draws: element e of the (B*T, in) input of the LoRA on layer l,
    slot j (the module's index inside its block, in linear_modules order; blocks hold at most 7 slots) is kept
    when u = (hash(hash(seed, step), ((l * 7 + j) << 40) ^ e) >> 40) / 2^24 >= p in float32, and a kept value is
    scaled by 1 / (1 - p). Returns {path: multiplier (B, T, in)} for the modules of `lora`."""
    stream = wl_hash64(np.array([seed], np.uint64), np.array([step], np.uint64))
    per_layer = len(linear_modules(cfg)) // cfg["n_layers"]
    pf = np.float32(p)
    out = {}
    for idx, (path, fin, _fout, _conv) in enumerate(linear_modules(cfg)):
        if path not in lora:
            continue
        layer, slot = divmod(idx, per_layer)
        e = np.arange(Bsz * T * fin, dtype=np.uint64)
        h = wl_hash64(stream, (np.uint64((layer * 7 + slot)) << np.uint64(40)) ^ e)
        u = (h >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)
        keep = torch.from_numpy((u >= pf).reshape(Bsz, T, fin).astype(np.float64))
        out[path] = keep / (1.0 - float(pf))
    return out


# ----------------------------------------------------------------------------------------------------------
# Synthetic models: weights drawn at scales that keep activations O(1), attention visibly non-uniform and
# logits spread over a few units, so every gradient is far from zero.

def random_weights(cfg, rng, embed_std=None):
    W = {}
    C = cfg["dim"]
    for name, shape in weight_shapes(cfg):
        if name.endswith("norm.weight") or re.search(r"ln_\w+\.weight$", name):
            W[name] = rng.uniform(shape, 0.8, 1.2)
        elif name.endswith(".bias"):
            W[name] = rng.uniform(shape, -0.3, 0.3)
        elif name in ("model.embed_tokens.weight", "transformer.wte.weight"):
            W[name] = rng.normal(shape, embed_std or (0.5 if cfg["tied"] else 1.0))
        elif name == "transformer.wpe.weight":
            W[name] = rng.normal(shape, 0.3)
        elif name == "lm_head.weight":
            W[name] = rng.normal(shape, 2.0 / math.sqrt(C))
        else:
            fin = shape[0] if cfg["family"] == "gpt2" else shape[1]
            gain = 2.0 if re.search(r"(q_proj|k_proj|c_attn)\.weight$", name) else 1.5
            b = gain / math.sqrt(fin)
            W[name] = rng.uniform(shape, -b, b)
    return W


def random_io(rng, V, B, T):
    seq = rng.ints((B, T + 1), 0, V)
    return seq[:, :T].contiguous(), seq[:, 1:].contiguous()


# ----------------------------------------------------------------------------------------------------------
# Tolerances: measured float32 error of this same computation (torch CPU float32 against the float64 result),
# times a safety factor for a different summation order and SIMD, with floors; rounded up to 1, 2 or 5 x 10^k.

def nice_up(x):
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * 10 ** e >= x:
            return float(f"{m * 10 ** e:.0e}")
    return x


def max_err(pairs):
    """Max abs error and max |ref| over (got, ref) tensor pairs."""
    err = max(float((g.double() - r.double()).abs().max()) for g, r in pairs)
    mag = max(float(r.abs().max()) for _g, r in pairs)
    return err, mag


def recommend(err, mag, floor_rel, rtol):
    return {"atol": nice_up(max(20 * err, floor_rel * mag, 1e-7)), "rtol": rtol}


# ----------------------------------------------------------------------------------------------------------
# Case writers

def write_json(path, obj):
    """Indented JSON with every list of scalars on one line (token id lists stay readable)."""
    text = json.dumps(obj, indent=2)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\n\s+", ", ", m.group(1)) + "]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


class Golden:
    def __init__(self, out, shared):
        self.out = out
        self.shared = shared
        self.report = []

    def case_dir(self, name):
        d = os.path.join(self.out, name)
        os.makedirs(d, exist_ok=True)
        return d

    def write_model(self, d, cfg, W):
        if cfg["family"] == "llama" and cfg["rope"] == "interleaved":
            write_llama2c(os.path.join(d, "model.bin"), cfg, W)
            cfg2, W2 = read_llama2c(os.path.join(d, "model.bin"))  # the reader must give back what was written
            assert all(torch.equal(W[k], W2[k].double()) for k in W) and set(W) == set(W2)
            assert all(cfg2[k] == cfg[k] for k in ("dim", "hidden", "n_layers", "n_heads", "n_kv_heads", "vocab",
                                                   "tied", "head_dim", "rope"))
            return "llama2c"
        write_json(os.path.join(d, "config.json"), hf_config_json(cfg))
        st_write(os.path.join(d, "model.safetensors"), W, {"format": "pt"})
        W2, _ = st_read(os.path.join(d, "model.safetensors"))
        assert set(W2) == set(W) and all(torch.equal(W[k], W2[k].double()) for k in W)
        return "hf"

    def lora_case(self, name, description, cfg, W, lora, modules, adapter_cfg, tokens, targets, full,
                  model_ref=None, adapter_meta=None, dropout=None):
        d = self.case_dir(name)
        fmt = "llama2c" if cfg["family"] == "llama" and cfg["rope"] == "interleaved" else "hf"
        if model_ref is None:
            fmt = self.write_model(d, cfg, W)
        logits, loss, lg, wg = run(cfg, W, lora, tokens, targets, full)
        l32, loss32, lg32, wg32 = run(cfg, W, lora, tokens, targets, full, torch.float32)
        if dropout:
            drop = dropout_multipliers(cfg, lora, tokens.shape[0], tokens.shape[1], **dropout)
            dlogits, dloss, dlg, _ = run(cfg, W, lora, tokens, targets, drop=drop)
            dl32, dloss32, dlg32, _ = run(cfg, W, lora, tokens, targets, dtype=torch.float32, drop=drop)

        # Self-checks: merged weights give the same logits; float32 agrees loosely; grads are nontrivial.
        merged_w = merged_weights(cfg, W, lora)
        if merged_w is not None:
            merged = run(cfg, merged_w, {}, tokens)[0]
            assert float((merged - logits).abs().max()) < 1e-9, "merge orientation mismatch"
        for path, (dA, dB) in lg.items():
            assert float(dA.abs().max()) > 1e-6 and float(dB.abs().max()) > 1e-6, f"tiny LoRA grad at {path}"

        io = {"tokens": tokens, "targets": targets, "logits": logits, "loss": loss.reshape(1)}
        for path, (dA, dB) in lg.items():
            io["grad." + peft_key(path, "A")] = dA
            io["grad." + peft_key(path, "B")] = dB
        for k, g in wg.items():
            io["fullgrad." + k] = g
        if dropout:
            io["dropout.logits"] = dlogits
            io["dropout.loss"] = dloss.reshape(1)
            for path, (dA, dB) in dlg.items():
                io["dropout.grad." + peft_key(path, "A")] = dA
                io["dropout.grad." + peft_key(path, "B")] = dB
        st_write(os.path.join(d, "io.safetensors"), io)
        # A PEFT file: for a llama2.c model, Hugging Face row order (the gradients above keep the checkpoint's).
        st_write(os.path.join(d, "adapter_model.safetensors"), hf_row_order(cfg, adapter_tensors(lora)),
                 adapter_meta or {"format": "pt"})
        write_json(os.path.join(d, "adapter_config.json"), adapter_cfg)

        lpairs, gpairs = [(l32, logits)], [(a, b) for p in lg for a, b in zip(lg32[p], lg[p])]
        loss_err = abs(float(loss32) - float(loss))
        if dropout:
            lpairs.append((dl32, dlogits))
            gpairs += [(a, b) for p in dlg for a, b in zip(dlg32[p], dlg[p])]
            loss_err = max(loss_err, abs(float(dloss32) - float(dloss)))
        lerr, lmag = max_err(lpairs)
        gerr, gmag = max_err(gpairs)
        tol = {"logits": recommend(lerr, lmag, 1e-6, 1e-5), "grads": recommend(gerr, gmag, 1e-5, 1e-4),
               "loss": recommend(loss_err, float(loss), 1e-6, 1e-5)}
        measured = {"logits_max_abs_err": lerr, "logits_max_abs": lmag, "grads_max_abs_err": gerr,
                    "grads_max_abs": gmag}
        if dropout:
            # A dropout that does nothing, or draws other masks, must fail the logits tolerance by far.
            effect = float((dlogits - logits).abs().max())
            assert effect > 100 * tol["logits"]["atol"], f"{name}: dropout moves logits by only {effect:.2e}"
            measured["dropout_logits_effect"] = effect
        if full:
            ferr, fmag = max_err([(wg32[k], wg[k]) for k in wg])
            tol["fullgrads"] = recommend(ferr, fmag, 1e-5, 1e-4)
            measured.update({"fullgrads_max_abs_err": ferr, "fullgrads_max_abs": fmag})
        case = {
            "arch": cfg["arch"], "description": description, "model_format": fmt,
            "B": int(tokens.shape[0]), "T": int(tokens.shape[1]), "vocab_size": cfg["vocab"],
            "targets": adapter_cfg["target_modules"], "r": adapter_cfg["r"], "alpha": adapter_cfg["lora_alpha"],
            "use_rslora": adapter_cfg["use_rslora"], "rank_pattern": adapter_cfg["rank_pattern"],
            "alpha_pattern": adapter_cfg["alpha_pattern"], "fan_in_fan_out": adapter_cfg["fan_in_fan_out"],
            "lora_modules": modules, "ignore_id": IGNORE_ID,
            "n_ignored": int((targets == IGNORE_ID).sum()), "full": full, "loss": float(loss),
            "tolerance": tol, "float32_torch_error": measured,
        }
        if dropout:
            case["dropout"] = dict(dropout)
        if model_ref:
            case["model_ref"] = model_ref
        write_json(os.path.join(d, "case.json"), case)
        self.report.append((name, float(loss), measured, tol))
        print(f"{name}: loss {float(loss):.6f}  f32 err logits {lerr:.2e} (|max| {lmag:.2f})  grads {gerr:.2e} "
              f"(|max| {gmag:.3f})" + (f"  fullgrads {measured['fullgrads_max_abs_err']:.2e}" if full else ""))

    def base_case(self, name, description, cfg, W, tokens, model_ref=None, write_model=None, positions=None,
                  extra=None):
        """Logits of the base model. The model comes from ../shared (model_ref) or is written into the folder by
        write_model(folder) (default: config.json + model.safetensors, or model.bin). With `positions`, only the
        logits at those positions are stored (io "logits" is (B, len(positions), V))."""
        d = self.case_dir(name)
        fmt = "llama2c" if cfg["family"] == "llama" and cfg["rope"] == "interleaved" else "hf"
        if model_ref is None:
            if write_model:
                write_model(d)
            else:
                self.write_model(d, cfg, W)
        with torch.no_grad():
            logits = run(cfg, W, {}, tokens)[0]
            again = run(cfg, W, {}, tokens)[0]
            l32 = run(cfg, W, {}, tokens, dtype=torch.float32)[0]
        assert torch.equal(logits, again), "nondeterministic forward"
        assert logits.shape == (tokens.shape[0], tokens.shape[1], cfg["vocab"])
        if positions is not None:
            logits, l32 = logits[:, positions], l32[:, positions]
        lerr, lmag = max_err([(l32, logits)])
        st_write(os.path.join(d, "io.safetensors"), {"tokens": tokens, "logits": logits})
        tol = {"logits": recommend(lerr, lmag, 1e-6, 1e-5)}
        case = {"arch": cfg["arch"], "description": description, "model_format": fmt}
        if model_ref:
            case["model_ref"] = model_ref
        case.update({
            "B": int(tokens.shape[0]), "T": int(tokens.shape[1]), "vocab_size": cfg["vocab"], "targets": [],
            "r": None, "alpha": None, "use_rslora": False, "ignore_id": IGNORE_ID, "full": False,
            "tolerance": tol, "float32_torch_error": {"logits_max_abs_err": lerr, "logits_max_abs": lmag},
        })
        if positions is not None:
            case["logits_positions"] = list(positions)
        case.update(extra or {})
        write_json(os.path.join(d, "case.json"), case)
        self.report.append((name, None, {"logits_max_abs_err": lerr}, tol))
        print(f"{name}: logits {tuple(logits.shape)}  max |logit| {lmag:.4f}  f32 err {lerr:.2e}")
        return case


# ----------------------------------------------------------------------------------------------------------
# Independent checks of the building blocks

def check_rope_layouts():
    """HF's checkpoint converter permutes q/k rows so rotate_half on the permuted weights equals llama2.c's
    interleaved RoPE on the originals; both layouts here must agree through that permutation."""
    rng = Rng(7)
    cfg = llama_cfg(32, 48, 2, 4, 2, 50, 16, False, 1e-5, 10000.0, rope="interleaved", arch="llama2c")
    cfg["exact_rope"] = True  # the same angles for both layouts (their float32 recipes differ in the last bit)
    W = random_weights(cfg, rng)
    tokens, _ = random_io(rng, 50, 2, 6)

    def permute(w, heads):
        out, inp = w.shape
        return w.view(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)

    Wp = dict(W)
    for l in range(2):
        Wp[f"model.layers.{l}.self_attn.q_proj.weight"] = permute(W[f"model.layers.{l}.self_attn.q_proj.weight"], 4)
        Wp[f"model.layers.{l}.self_attn.k_proj.weight"] = permute(W[f"model.layers.{l}.self_attn.k_proj.weight"], 2)
    a = run(cfg, W, {}, tokens)[0]
    b = run(dict(cfg, rope="half"), Wp, {}, tokens)[0]
    assert float((a - b).abs().max()) < 1e-10, "interleaved and rotate_half RoPE disagree"


def check_tokenizers(shared):
    gpt2 = GPT2Tokenizer(os.path.join(shared, "models/tiny-gpt2/vocab.json"),
                         os.path.join(shared, "models/tiny-gpt2/merges.txt"))
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("The quick brown fox jumps over the lazy dog") == \
        [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290]
    s = "It's 2024: don't   panic, it'll work!\n"
    assert gpt2.decode(gpt2.encode(s)) == s
    tok = Llama2cTokenizer(os.path.join(shared, "models/stories260K/tok512.bin"))
    assert len(tok.pieces) == 512
    for s in ("Once upon a time", "Lily's cat said: \"Hi!\"", "caf\u00e9 \u00fc\u00df"):
        ids = tok.encode(s)
        assert ids[0] == 1 and tok.decode(ids[1:], prev=1) == s, (s, ids)
    return gpt2, tok


# ----------------------------------------------------------------------------------------------------------
# Cases

def synthetic_cases(g):
    # Llama, GQA 4/2, untied head, rotate_half RoPE; LoRA on q_proj, v_proj.
    rng = Rng(101)
    cfg = llama_cfg(32, 64, 2, 4, 2, 96, 64, False, 1e-5, 10000.0)
    W = random_weights(cfg, rng)
    lora, mods, acfg = make_adapter(cfg, rng, ["q_proj", "v_proj"], 4, 8)
    tokens, targets = random_io(rng, cfg["vocab"], 2, 7)
    g.lora_case("llama_gqa_qv", "Llama, GQA (4 heads, 2 kv heads), untied lm_head, HF rotate_half RoPE; LoRA on "
                "q_proj and v_proj (r 4, alpha 8, scaling 2).", cfg, W, lora, mods, acfg, tokens, targets, False)

    # Llama, all 7 targets, rsLoRA, tied embeddings, some ignored targets.
    rng = Rng(202)
    cfg = llama_cfg(32, 64, 2, 4, 4, 80, 64, True, 1e-6, 10000.0)
    W = random_weights(cfg, rng)
    lora, mods, acfg = make_adapter(cfg, rng, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"], 8, 16, use_rslora=True)
    tokens, targets = random_io(rng, cfg["vocab"], 2, 9)
    targets[0, 2] = IGNORE_ID
    targets[1, 0] = IGNORE_ID
    targets[1, 8] = IGNORE_ID
    g.lora_case("llama_all_rslora", "Llama, 4 heads (hs 8), tied embeddings (no lm_head stored), eps 1e-6; LoRA "
                "on all 7 linear modules, r 8, alpha 16, use_rslora (scaling 16/sqrt(8)); three targets are "
                "-100 (ignored; the loss is the mean over the 15 others).", cfg, W, lora, mods, acfg, tokens,
                targets, False)

    # Qwen2: q/k/v bias, no o bias, rope_theta 5e5, eps 1e-6, full gradients.
    rng = Rng(303)
    cfg = llama_cfg(32, 64, 2, 4, 2, 64, 64, False, 1e-6, 500000.0, qkv_bias=True, arch="qwen2")
    W = random_weights(cfg, rng, embed_std=0.02)  # mean square 4e-4: eps 1e-6 vs 1e-5 shows in the logits
    lora, mods, acfg = make_adapter(cfg, rng, ["o_proj", "down_proj"], 2, 5)
    tokens, targets = random_io(rng, cfg["vocab"], 2, 8)
    g.lora_case("llama_qwen_bias", "Qwen2ForCausalLM: q/k/v biases, no o_proj bias, GQA 4/2, untied head, "
                "rope_theta 500000, rms_norm_eps 1e-6 (small embeddings, std 0.02, so the first RMSNorm is "
                "sensitive to eps); LoRA on o_proj and down_proj, r 2, alpha 5 (scaling 2.5); "
                "full=true: fullgrad.* for every base tensor, biases included.", cfg, W, lora, mods, acfg, tokens,
                targets, True)

    # Llama with an explicit head_dim (12) != hidden / heads (8).
    rng = Rng(404)
    cfg = llama_cfg(32, 64, 2, 4, 2, 72, 64, False, 1e-5, 10000.0, head_dim=12)
    W = random_weights(cfg, rng)
    lora, mods, acfg = make_adapter(cfg, rng, ["q_proj", "k_proj"], 3, 6)
    tokens, targets = random_io(rng, cfg["vocab"], 2, 6)
    g.lora_case("llama_head_dim", "Llama with head_dim 12 set explicitly (hidden 32, 4 heads, 2 kv heads): "
                "q_proj 32->48, k/v_proj 32->24, o_proj 48->32, RoPE over 12 dims; LoRA on q_proj and k_proj, r 3, "
                "alpha 6.", cfg, W, lora, mods, acfg, tokens, targets, False)

    # llama2.c checkpoint: GQA, unshared classifier, interleaved RoPE, rank_pattern / alpha_pattern.
    rng = Rng(505)
    cfg = llama_cfg(32, 48, 2, 4, 2, 90, 32, False, 1e-5, 10000.0, rope="interleaved", arch="llama2c")
    W = random_weights(cfg, rng)
    lora, mods, acfg = make_adapter(cfg, rng, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"], 4, 8, rank_pattern={"layers.1.mlp.down_proj": 6},
                                    alpha_pattern={"v_proj": 4})
    tokens, targets = random_io(rng, cfg["vocab"], 2, 8)
    g.lora_case("llama2c_interleaved", "llama2.c v0 checkpoint (model.bin; dim 32, hidden 48, 2 layers, 4 heads, "
                "2 kv heads, vocab -90 in the header = unshared classifier, seq_len 32) with interleaved RoPE; "
                "LoRA on all 7 modules, r 4, alpha 8, rank_pattern {layers.1.mlp.down_proj: 6} (only "
                "model.layers.1.mlp.down_proj gets r 6, scaling 8/6), alpha_pattern {v_proj: 4} (every v_proj: "
                "scaling 4/4); full=true with HF tensor names.", cfg, W, lora, mods, acfg, tokens, targets, True)

    # GPT-2, LoRA on c_attn and both c_proj (attention and MLP), fan_in_fan_out, full gradients.
    rng = Rng(606)
    cfg = gpt2_cfg(32, 2, 4, 70, 32)
    W = random_weights(cfg, rng)
    lora, mods, acfg = make_adapter(cfg, rng, ["c_attn", "c_proj"], 4, 32)
    tokens, targets = random_io(rng, cfg["vocab"], 2, 8)
    g.lora_case("gpt2_attn", "GPT-2 (n_embd 32, 4 heads, 2 layers, n_positions 32, vocab 70), Conv1D weights "
                "stored (in, out), tied lm_head; LoRA on c_attn and c_proj (matches attn.c_proj and mlp.c_proj), "
                "r 4, alpha 32 (scaling 8), fan_in_fan_out true; full=true: fullgrad.* in file layout (Conv1D "
                "grads (in, out)); fullgrad.transformer.wte.weight sums the embedding and tied-head gradients.",
                cfg, W, lora, mods, acfg, tokens, targets, True)

    # GPT-2, LoRA on c_fc only, rsLoRA.
    rng = Rng(707)
    cfg = gpt2_cfg(24, 3, 3, 60, 16)
    W = random_weights(cfg, rng)
    lora, mods, acfg = make_adapter(cfg, rng, ["c_fc"], 8, 8, use_rslora=True)
    tokens, targets = random_io(rng, cfg["vocab"], 2, 5)
    g.lora_case("gpt2_mlp", "GPT-2 (n_embd 24, 3 heads, 3 layers, n_positions 16, vocab 60); LoRA on mlp.c_fc "
                "only, r 8, alpha 8, use_rslora (scaling 8/sqrt(8)), fan_in_fan_out true.", cfg, W, lora, mods,
                acfg, tokens, targets, False)


STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine with "
         "her friends. One day, she saw a big red ball in the park.")


# ----------------------------------------------------------------------------------------------------------
# PEFT patterns, rsLoRA and LoRA dropout through adapter_config.json; the same model in F16 and sharded BF16

PATTERN_TARGETS = r"model\.layers\.\d+\.(self_attn\.(q|v|o)_proj|mlp\.(up|down)_proj)"
# Traps for a wrong matcher: "proj" and "self_attn" match no path under PEFT's rule (the key must end the path
# at a dot boundary), the first matching key wins ("layers\.0\..." before "v_proj"; "layers\.1\..." before
# "o_proj"), and keys are regular expressions.
PATTERN_RANKS = {"proj": 7, r"layers\.0\.self_attn\.(q|v)_proj": 2, "v_proj": 3, "down_proj": 5}
PATTERN_ALPHAS = {"self_attn": 100, r"layers\.1\.self_attn\..*": 12, "o_proj": 3}


def pattern_case(g):
    rng = Rng(1101)
    cfg = llama_cfg(16, 32, 2, 2, 1, 40, 64, False, 1e-5, 10000.0)
    W = random_weights(cfg, rng)
    lora, mods, acfg = make_adapter(cfg, rng, PATTERN_TARGETS, 4, 6, use_rslora=True, rank_pattern=PATTERN_RANKS,
                                    alpha_pattern=PATTERN_ALPHAS)
    tokens, targets = random_io(rng, cfg["vocab"], 2, 6)
    targets[1, 2] = IGNORE_ID
    dropout = {"p": 0.25, "seed": 0x5EED1234ABCD, "step": 3}
    g.lora_case("llama_patterns", "Llama (hidden 16, 2 layers, 2 heads / 1 kv head, vocab 40, untied); the adapter "
                "as adapter_config.json describes it: target_modules is a regex string (q, v, o, up and down "
                "projections), r 4, lora_alpha 6, use_rslora, rank_pattern and alpha_pattern with regex keys, keys "
                "that match nothing at a dot boundary and keys whose order decides (lora_modules lists the "
                "result). dropout: the same forward/backward with LoRA dropout p 0.25 (seed, step), masks as the "
                "core draws them (dropout.* tensors in io).", cfg, W, lora, mods, acfg, tokens, targets, False,
                dropout=dropout)
    return cfg, W, lora, mods, acfg


def rounded(W, dtype):
    return {k: v.to(dtype).to(torch.float64) for k, v in W.items()}


def dtype_cases(g, cfg, W):
    """The llama_patterns base model stored in F16 (one file) and in BF16 (two shards and an index), each with
    the logits of exactly those rounded weights."""
    rng = Rng(1102)
    tokens = rng.ints((1, 8), 0, cfg["vocab"])

    def write_f16(d):
        write_json(os.path.join(d, "config.json"), dict(hf_config_json(cfg), torch_dtype="float16"))
        st_write(os.path.join(d, "model.safetensors"), W, {"format": "pt"}, float_dtype="F16")
        back, _ = st_read(os.path.join(d, "model.safetensors"))
        assert all(torch.equal(back[k].double(), v) for k, v in rounded(W, torch.float16).items())

    def write_bf16_shards(d):
        write_json(os.path.join(d, "config.json"), dict(hf_config_json(cfg), torch_dtype="bfloat16"))
        names = [n for n, _shape in weight_shapes(cfg)]
        shards = [names[:len(names) // 2], names[len(names) // 2:]]
        weight_map, total = {}, 0
        for i, part in enumerate(shards):
            file = f"model-0000{i + 1}-of-00002.safetensors"
            st_write(os.path.join(d, file), {n: W[n] for n in part}, {"format": "pt"}, float_dtype="BF16")
            back, _ = st_read(os.path.join(d, file))
            assert all(torch.equal(back[n].double(), W[n].to(torch.bfloat16).double()) for n in part)
            weight_map.update({n: file for n in part})
            total += sum(2 * W[n].numel() for n in part)
        write_json(os.path.join(d, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})

    g.base_case("hf_f16", "The llama_patterns base model stored in F16 (torch round-to-nearest-even), one "
                "model.safetensors; logits of those F16 weights for 8 random tokens.", cfg,
                rounded(W, torch.float16), tokens, write_model=write_f16)
    g.base_case("hf_bf16_sharded", "The llama_patterns base model stored in BF16 in two shards with "
                "model.safetensors.index.json; logits of those BF16 weights for 8 random tokens.", cfg,
                rounded(W, torch.bfloat16), tokens, write_model=write_bf16_shards)


# ----------------------------------------------------------------------------------------------------------
# RoPE at long positions

LONG_STORY = STORY + (
    " Lily ran to the ball and picked it up. It was shiny and round. She wanted to show it to her mom. On the way "
    "home, she met a small dog. The dog was sad because he was lost. Lily said, \"Do not worry, I will help you "
    "find your home.\" They walked together down the street. They looked in the garden, behind the big tree and "
    "near the pond. At last they saw a boy who was crying. The boy saw the dog and smiled. \"Thank you, Lily!\" he "
    "said. \"This is my dog, Max. I looked for him all day.\" Lily was happy. She gave the boy a hug and Max "
    "wagged his tail. Then Lily went home with her red ball. Her mom was waiting at the door. Lily told her mom "
    "about the dog and the boy. Her mom said, \"You were very kind today. I am proud of you.\" That night, Lily "
    "went to bed with a big smile. She dreamed of the red ball, the little dog and her new friend. The next day, "
    "the boy came to her house with Max. They played with the ball in the park all morning. They laughed and ran "
    "and had so much fun. When the sun went down, they sat on the grass and shared a big apple. Lily knew that "
    "they would be friends forever. The end.")


def rope_reference(cfg, T, positions):
    """cos / sin tables (len(positions), hs/2) of the reference angles at the stored positions."""
    ang = rope_angles(T, cfg["head_dim"], cfg["theta"], cfg["rope"])[positions]
    return torch.cos(ang), torch.sin(ang)


def rope_long_cases(g, tok):
    # HF: head_dim 32 (16 frequencies), q/k gain 2 so attention is sharp; every one of the 2048 positions of
    # max_position_embeddings is used, logits kept at a few of them. Seed and gain were chosen so that angles
    # computed in float64 (not as HF does) move the logits by several times this case's tolerance.
    rng = Rng(1303)
    cfg = llama_cfg(32, 32, 1, 1, 1, 24, 2048, True, 1e-5, 10000.0)
    W = random_weights(cfg, rng)
    for n in ("q_proj", "k_proj"):
        W[f"model.layers.0.self_attn.{n}.weight"] = round32(2.0 * W[f"model.layers.0.self_attn.{n}.weight"])
    T = cfg["max_pos"]
    tokens = rng.ints((1, T), 0, cfg["vocab"])
    positions = [0, 1, 511, 1023, 1535] + list(range(T - 8, T))
    with torch.no_grad():
        careless = run(dict(cfg, exact_rope=True), W, {}, tokens)[0][:, positions]
        ref = run(cfg, W, {}, tokens)[0][:, positions]
    exact_diff = float((careless - ref).abs().max())
    cos, sin = rope_reference(cfg, T, positions)
    careless_cos = torch.cos(rope_angles(T, cfg["head_dim"], cfg["theta"], cfg["rope"], exact=True)[positions])
    case = g.base_case("rope_long_hf", "HF Llama (hidden 32, 1 head of 32, vocab 24, tied) over all 2048 positions "
                       "of max_position_embeddings, RoPE angles as LlamaRotaryEmbedding computes them (float32); "
                       "logits kept at logits_positions. io rope.cos / rope.sin: the reference tables at those "
                       "positions (hs/2 columns).", cfg, W, tokens, positions=positions,
                       extra={"float64_angles_logits_diff": exact_diff,
                              "float64_angles_cos_diff": float((careless_cos - cos).abs().max())})
    assert exact_diff > 3 * case["tolerance"]["logits"]["atol"], "float64 angles should fail this case's logits"
    add_rope_tables(g, "rope_long_hf", cos, sin)

    # llama2.c: the real stories260K over its whole seq_len (512) on TinyStories-like text.
    cfg, W = read_llama2c(os.path.join(g.shared, "models/stories260K/stories260K.bin"))
    W = {k: v.double() for k, v in W.items()}
    ids = tok.encode(LONG_STORY)
    T = cfg["max_pos"]
    assert len(ids) >= T, len(ids)
    tokens = torch.tensor([ids[:T]], dtype=torch.int32)
    positions = [0, 255] + list(range(T - 6, T))
    cos, sin = rope_reference(cfg, T, positions)
    careless_cos = torch.cos(rope_angles(T, cfg["head_dim"], cfg["theta"], cfg["rope"], exact=True)[positions])
    g.base_case("stories260K_long", "The real stories260K checkpoint over its whole seq_len (512 tok512 ids of "
                "TinyStories-like text), RoPE angles as llama2.c run.c computes them (float32 powf); logits kept at "
                "logits_positions; io rope.cos / rope.sin as in rope_long_hf.", cfg, W, tokens,
                model_ref="models/stories260K/stories260K.bin", positions=positions,
                extra={"text": LONG_STORY, "tokenizer_ref": "models/stories260K/tok512.bin",
                       "float64_angles_cos_diff": float((careless_cos - cos).abs().max())})
    add_rope_tables(g, "stories260K_long", cos, sin)


def add_rope_tables(g, name, cos, sin):
    path = os.path.join(g.out, name, "io.safetensors")
    io, _ = st_read(path)
    io.update({"rope.cos": cos, "rope.sin": sin})
    st_write(path, io)


def stories_case(g, tok):
    cfg, W = read_llama2c(os.path.join(g.shared, "models/stories260K/stories260K.bin"))
    W = {k: v.double() for k, v in W.items()}
    ids = tok.encode(STORY)
    assert len(ids) >= 33
    tokens = torch.tensor([ids[:32]], dtype=torch.int32)
    targets = torch.tensor([ids[1:33]], dtype=torch.int32)
    rng = Rng(808)
    lora, mods, acfg = make_adapter(cfg, rng, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"], 4, 8, base_name="stories260K")
    g.lora_case("stories260K", "The real stories260K checkpoint (read from ../shared, llama2.c format, shared "
                "classifier, GQA 8/4, interleaved RoPE) on the first 33 tok512 ids of a TinyStories-like sentence "
                "(B 1, T 32); LoRA on all 7 modules, r 4, alpha 8.", cfg, W, lora, mods, acfg, tokens, targets,
                False, model_ref="models/stories260K/stories260K.bin")
    with open(os.path.join(g.out, "stories260K", "case.json")) as f:
        case = json.load(f)
    case["text"] = STORY
    case["tokenizer_ref"] = "models/stories260K/tok512.bin"
    write_json(os.path.join(g.out, "stories260K", "case.json"), case)
    return cfg, W


def base_only_cases(g):
    d = os.path.join(g.shared, "models/tiny-random-llama")
    with open(os.path.join(d, "config.json")) as f:
        cfg = cfg_from_hf(json.load(f))
    W = {k: v.double() for k, v in st_read(os.path.join(d, "model.safetensors"))[0].items()}
    rng = Rng(909)
    tokens = rng.ints((1, 5), 0, cfg["vocab"])
    g.base_case("tiny_random_llama", "HF LlamaForCausalLM from ../shared/models/tiny-random-llama (hidden 16, "
                "4 heads, vocab 32000, untied head, eps 1e-6): logits for 5 random tokens (T kept at 5 so the "
                "32000-wide logits stay small).", cfg, W, tokens, model_ref="models/tiny-random-llama")

    d = os.path.join(g.shared, "models/tiny-gpt2")
    with open(os.path.join(d, "config.json")) as f:
        cfg = cfg_from_hf(json.load(f))
    W = {k: v.double() for k, v in st_read(os.path.join(d, "model.safetensors"))[0].items()
         if not GPT2_BUFFER.search(k)}
    tokens = rng.ints((1, 3), 0, cfg["vocab"])
    g.base_case("tiny_gpt2", "HF GPT2LMHeadModel from ../shared/models/tiny-gpt2 (n_embd 2, 2 heads, vocab "
                "50257, tied head): logits for 3 random tokens (T kept at 3 so the 50257-wide logits stay small).",
                cfg, W, tokens, model_ref="models/tiny-gpt2")
    return cfg, W


def greedy_file(g, tok, cfg, W):
    """stories260K greedy decoding in float32 (as an f32 implementation runs it), with the top-2 margins."""
    W32 = {k: v.to(torch.float32) for k, v in W.items()}
    prompts = ["", "Once upon a time", "Lily and Tom went to the park", "The little dog was sad because",
               "One day, a girl named Sue found a"]
    cases = []
    for text in prompts:
        ids = tok.encode(text) if text else [1]
        seq = list(ids)
        margins = []
        with torch.no_grad():
            for _ in range(80):
                logits = forward(cfg, W32, {}, torch.tensor([seq]))[0, -1]
                top = torch.topk(logits, 2)
                nxt = int(torch.argmax(logits))
                assert nxt == int(top.indices[0])
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(nxt)
        gen = seq[len(ids):]
        cont = tok.decode(gen, prev=ids[-1])
        cases.append({"prompt_text": text, "prompt_ids": ids, "generated_ids": gen,
                      "margins": [float(f"{m:.6g}") for m in margins], "min_margin": float(f"{min(margins):.6g}"),
                      "decoded": tok.decode(ids[1:], prev=1) + cont})
        print(f"greedy [{text!r}] min margin {min(margins):.2e}:\n  {(tok.decode(ids[1:], prev=1) + cont)!r}")
    write_json(os.path.join(g.out, "stories260K_greedy.json"), {
        "model_ref": "models/stories260K/stories260K.bin", "tokenizer_ref": "models/stories260K/tok512.bin",
        "description": "Greedy decoding of 80 new tokens per prompt with the base stories260K model, computed in "
                       "float32 (torch CPU, full-sequence forward each step, no KV cache), argmax with ties to the "
                       "lowest id, no stopping at BOS/EOS. margins[i] = top-1 minus top-2 logit at step i: a "
                       "mismatch at a step with a margin below ~1e-4 is a near-tie, not a bug. prompt_ids are "
                       "[BOS=1] + tok512 encode(prompt_text) (dummy-prefix space included), or [1] alone for the "
                       "empty prompt. 'decoded' is prompt + continuation as llama2.c's decode prints it.",
        "precision": "float32", "max_new_tokens": 80, "cases": cases})


def sgd_contract(g, tok, gpt2tok):
    base = os.path.join(g.out, "sgd_contract")
    # stories260K: [BOS] + encode(text) + [EOS], LoRA q_proj, v_proj r 4 alpha 8.
    cfg, W = read_llama2c(os.path.join(g.shared, "models/stories260K/stories260K.bin"))
    W = {k: v.double() for k, v in W.items()}
    text = "The little cat sat on a warm mat and looked at the big red ball."
    ids = tok.encode(text, bos=True, eos=True)
    rng = Rng(1001)
    lora, mods, acfg = make_adapter(cfg, rng, ["q_proj", "v_proj"], 4, 8, base_name="stories260K")
    sgd_write(g, os.path.join(base, "stories260K"), cfg, W, lora, mods, acfg, text, ids, 0.1,
              {"model_ref": "models/stories260K/stories260K.bin", "tokenizer_ref": "models/stories260K/tok512.bin",
               "tokenization": "[BOS=1] + encode(text) (llama2.c algorithm, dummy-prefix space) + [EOS=2]"})

    # tiny-gpt2: encode(text) + [<|endoftext|> = 50256], no BOS; LoRA c_attn r 2 alpha 4.
    d = os.path.join(g.shared, "models/tiny-gpt2")
    with open(os.path.join(d, "config.json")) as f:
        cfg = cfg_from_hf(json.load(f))
    W = {k: v.double() for k, v in st_read(os.path.join(d, "model.safetensors"))[0].items()
         if not GPT2_BUFFER.search(k)}
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    ids = gpt2tok.encode(text) + [50256]
    rng = Rng(1002)
    lora, mods, acfg = make_adapter(cfg, rng, ["c_attn"], 2, 4, base_name="sshleifer/tiny-gpt2")
    sgd_write(g, os.path.join(base, "gpt2"), cfg, W, lora, mods, acfg, text, ids, 1.0,
              {"model_ref": "models/tiny-gpt2", "tokenizer_ref": "models/tiny-gpt2/vocab.json + merges.txt",
               "tokenization": "GPT-2 byte-level BPE encode(text) + [50256], no BOS"})


def sgd_write(g, d, cfg, W, lora, mods, acfg, text, ids, lr, extra):
    os.makedirs(d, exist_ok=True)
    tokens = torch.tensor([ids[:-1]], dtype=torch.int32)
    targets = torch.tensor([ids[1:]], dtype=torch.int32)
    _logits, loss, lg, _ = run(cfg, W, lora, tokens, targets)
    _l32, _loss32, lg32, _ = run(cfg, W, lora, tokens, targets, dtype=torch.float32)
    gmax = max(float(t.abs().max()) for p in lg for t in lg[p])
    assert 1e-3 < lr * gmax < 0.1, "pick an lr whose step is visible in float32 but small"
    new = {p: (A - lr * lg[p][0], B - lr * lg[p][1], s) for p, (A, B, s) in lora.items()}
    with open(os.path.join(d, "text.txt"), "w") as f:
        f.write(text + "\n")
    write_json(os.path.join(d, "ids.json"), ids)
    write_json(os.path.join(d, "adapter_config.json"), acfg)
    # These are PEFT files (the CLI's --adapter-init and its output): Hugging Face row order.
    st_write(os.path.join(d, "adapter_model.safetensors"), hf_row_order(cfg, adapter_tensors(lora)), {"format": "pt"})
    st_write(os.path.join(d, "expected_adapter_model.safetensors"), hf_row_order(cfg, adapter_tensors(new)),
             {"format": "pt"})
    io = {"tokens": tokens, "targets": targets, "loss": loss.reshape(1)}
    grads = {}
    for p, (dA, dB) in lg.items():
        grads[peft_key(p, "A")] = dA
        grads[peft_key(p, "B")] = dB
    for k, v in hf_row_order(cfg, grads).items():
        io["grad." + k] = v
    st_write(os.path.join(d, "io.safetensors"), io)
    gerr, _ = max_err([(a, b) for p in lg for a, b in zip(lg32[p], lg[p])])
    step = max(float((lr * t).abs().max()) for p in lg for t in lg[p])
    pmax = max(float(t.abs().max()) for p in lora for t in lora[p][:2])
    case = {"arch": cfg["arch"], "description": "One SGD step (p -= lr * grad, no momentum, weight decay or "
            "clipping) on the mean next-token cross-entropy of one sequence: inputs ids[:-1], targets ids[1:].",
            "text_file": "text.txt", "ids_file": "ids.json", "n_ids": len(ids), "seq_len": len(ids) - 1, "B": 1,
            "T": len(ids) - 1, "lr": lr, "optimizer": "sgd", "targets": acfg["target_modules"], "r": acfg["r"],
            "alpha": acfg["lora_alpha"], "use_rslora": False, "fan_in_fan_out": acfg["fan_in_fan_out"],
            "lora_modules": mods, "ignore_id": IGNORE_ID, "loss": float(loss), "max_abs_update": step,
            "max_abs_param": pmax,
            "tolerance": {"grads": recommend(gerr, gmax, 1e-5, 1e-4),
                          "params": {"atol": nice_up(max(2e-7 * pmax, 20 * lr * gerr, 1e-7)), "rtol": 1e-5}},
            "float32_torch_error": {"grads_max_abs_err": gerr, "grads_max_abs": gmax},
            "row_order": "PEFT files for the Hugging Face form of the model: for llama2.c models the lora_B rows of "
                         "q_proj and k_proj are permuted as HF's converter permutes the base q/k rows"}
    case.update(extra)
    write_json(os.path.join(d, "case.json"), case)
    print(f"sgd_contract/{os.path.basename(d)}: {len(ids)} ids, loss {float(loss):.6f}, lr {lr}, max |grad| "
          f"{gmax:.3e}, max |update| {step:.3e}, max |param| {pmax:.3f}")


# ----------------------------------------------------------------------------------------------------------
# Training: several AdamW steps with weight decay and clipping on token-weighted micro-batches

def adamw_steps(cfg, W, lora, tokens, targets, opts, dtype):
    """torch.optim.AdamW after torch.nn.utils.clip_grad_norm_, `steps` times on the whole batch: the loss is the
    mean cross-entropy over every target token of the batch, which is what gradient accumulation must reproduce
    when it weights each micro-batch by its target tokens (Hugging Face Trainer's num_items_in_batch). Returns
    the losses, the gradient norms before clipping and the final LoRA factors."""
    Wd = {k: v.to(dtype) for k, v in W.items()}
    Ld = {k: (A.to(dtype).clone().requires_grad_(True), B.to(dtype).clone().requires_grad_(True), s)
          for k, (A, B, s) in lora.items()}
    params = [t for A, B, _s in Ld.values() for t in (A, B)]
    opt = torch.optim.AdamW(params, lr=opts["lr"], betas=(opts["beta1"], opts["beta2"]), eps=opts["eps"],
                            weight_decay=opts["weight_decay"])
    losses, norms = [], []
    for _ in range(opts["steps"]):
        opt.zero_grad()
        loss = xent(forward(cfg, Wd, Ld, tokens.long()), targets)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, opts["clip_norm"])))
        losses.append(float(loss))
        opt.step()
    return losses, norms, {k: (A.detach(), B.detach()) for k, (A, B, _s) in Ld.items()}


def train_contract(g, cfg, W, lora):
    """Three sequences of 8 tokens, the last padded after 3 (targets -100): the llama_patterns model and adapter
    trained for 3 AdamW steps."""
    d = g.case_dir("train_contract")
    rng = Rng(1201)
    T, valid = 8, [8, 8, 3]
    tokens, targets = random_io(rng, cfg["vocab"], 3, T)
    tokens[2, valid[2]:] = 0
    targets[2, valid[2]:] = IGNORE_ID
    opts = {"steps": 3, "lr": 0.02, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1}
    first = adamw_steps(cfg, W, lora, tokens, targets, dict(opts, steps=1, clip_norm=1e9), torch.float64)[1][0]
    opts["clip_norm"] = float(f"{0.4 * first:.2g}")  # clipping acts on every step
    losses, norms, final = adamw_steps(cfg, W, lora, tokens, targets, opts, torch.float64)
    l32, n32, f32 = adamw_steps(cfg, W, lora, tokens, targets, opts, torch.float32)
    assert min(norms) > opts["clip_norm"], "clipping must act on every step"
    # Equal weighting of micro-batches (the mistake this contract catches) moves the first step's gradient by:
    per_seq = [adamw_steps(cfg, W, lora, tokens[i:i + 1], targets[i:i + 1], dict(opts, steps=1, lr=0.0),
                           torch.float64) for i in range(3)]
    io = {"tokens": tokens, "targets": targets, "valid": torch.tensor(valid, dtype=torch.int32),
          "loss": torch.tensor(losses), "grad_norm": torch.tensor(norms)}
    for path, (A, B) in final.items():
        io["final." + peft_key(path, "A")] = A
        io["final." + peft_key(path, "B")] = B
    st_write(os.path.join(d, "io.safetensors"), io)
    perr, pmag = max_err([(a, b) for p in final for a, b in zip(f32[p], final[p])])
    lerr = max(abs(a - b) for a, b in zip(l32, losses))
    nerr = max(abs(a - b) / b for a, b in zip(n32, norms))
    moved = max(float((final[p][i] - lora[p][i]).abs().max()) for p in final for i in (0, 1))
    case = {
        "kind": "train_contract",
        "description": "AdamW (torch.optim.AdamW, decoupled weight decay) after global-norm clipping "
                       "(torch.nn.utils.clip_grad_norm_, which divides by norm + 1e-6), 3 steps, constant lr, "
                       "starting from the llama_patterns model and adapter, on the 3 sequences of io (the last "
                       "padded: valid tokens per sequence in io valid). Every step uses all 3 sequences and the "
                       "loss is the mean over all their target tokens: one batch of 3, or 3 accumulated "
                       "micro-batches of 1 weighted by their target tokens, must both give it. io: loss and "
                       "grad_norm (before clipping) per step, final.<PEFT key> the factors after the 3 steps.",
        "model_case": "llama_patterns", "B": 3, "T": T, "valid": valid, "optimizer": dict(opts),
        "losses": losses, "grad_norms": norms, "first_step_norm_per_sequence": [p[1][0] for p in per_seq],
        "max_abs_param_change": moved,
        "tolerance": {"params": recommend(perr, pmag, 1e-6, 1e-5), "loss": recommend(lerr, max(losses), 1e-6, 1e-5),
                      "grad_norm_rel": nice_up(max(20 * nerr, 1e-6))},
        "float32_torch_error": {"params_max_abs_err": perr, "params_max_abs": pmag, "loss_max_abs_err": lerr,
                                "grad_norm_max_rel_err": nerr},
    }
    write_json(os.path.join(d, "case.json"), case)
    print(f"train_contract: losses {[f'{x:.5f}' for x in losses]}  grad norms {[f'{x:.4f}' for x in norms]}  clip "
          f"{opts['clip_norm']}  max |change| {moved:.3f}  f32 param err {perr:.2e}")


# ----------------------------------------------------------------------------------------------------------
# Adapter toolkit: PEFT's add_weighted_adapter (linear, cat, svd) and PiSSA, with numpy's SVD

def combine_case(g, cfg, W, lora_x, acfg_x):
    """Two PEFT adapters for the llama_patterns model, combined as PEFT's LoraModel.add_weighted_adapter does
    (peft/tuners/lora/model.py): linear A = sum_i sqrt(w_i s_i) A_i, B = sum_i sqrt(w_i s_i) B_i; cat A = [w_i s_i
    A_i] stacked, B = [B_i] side by side; svd: the truncated SVD of sum_i w_i s_i B_i A_i (numpy, float64), B = U_k
    S_k, A = Vh_k. The result has lora_alpha = r (scale 1). Modules only one adapter has contribute alone."""
    d = g.case_dir("combine")
    rng = Rng(1401)
    lora_y, mods_y, acfg_y = make_adapter(cfg, rng, ["q_proj", "v_proj", "gate_proj"], 4, 2,
                                          rank_pattern=dict(acfg_x["rank_pattern"]))
    st_write(os.path.join(d, "adapter_model.safetensors"), adapter_tensors(lora_y), {"format": "pt"})
    write_json(os.path.join(d, "adapter_config.json"), acfg_y)
    weights = [0.7, 1.6]
    svd_rank = 3

    def combine(path, dtype):
        """{kind: (A, B) or the svd update} and the svd relative error for one module, computed in dtype."""
        parts = [(lo[path], w) for lo, w in ((lora_x, weights[0]), (lora_y, weights[1])) if path in lo]
        A = [a.numpy().astype(dtype) for (a, _b, _s), _w in parts]
        B = [b.numpy().astype(dtype) for (_a, b, _s), _w in parts]
        ws = [(dtype(w), dtype(s)) for (_a, _b, s), w in parts]
        out = {}
        if len({a.shape[0] for a in A}) == 1:
            roots = [np.sqrt(w * s) for w, s in ws]
            out["linear"] = (sum(r * a for r, a in zip(roots, A)), sum(r * b for r, b in zip(roots, B)))
        out["cat"] = (np.concatenate([w * s * a for a, (w, s) in zip(A, ws)], 0), np.concatenate(B, 1))
        delta = sum(w * s * (b @ a) for a, b, (w, s) in zip(A, B, ws))
        U, S, Vh = np.linalg.svd(delta, full_matrices=False)
        k = min(svd_rank, len(S))
        out["svd"] = (U[:, :k] * S[:k], Vh[:k])
        return out, S, k

    io, errors, ferr, fmag, derr, dmag, rerr = {}, {}, 0.0, 0.0, 0.0, 0.0, 0.0
    for path, _fin, _fout, _conv in linear_modules(cfg):
        if path not in lora_x and path not in lora_y:
            continue
        out, S, k = combine(path, np.float64)
        if k < len(S) and S[k] > 1e-12:
            assert (S[k - 1] - S[k]) / S[0] > 1e-3, f"{path}: singular values {k - 1}, {k} too close"
        for kind in ("linear", "cat"):
            if kind in out:
                io[f"{kind}." + peft_key(path, "A")] = torch.from_numpy(out[kind][0])
                io[f"{kind}." + peft_key(path, "B")] = torch.from_numpy(out[kind][1])
        io["svd.B." + path] = torch.from_numpy(out["svd"][0])
        io["svd.A." + path] = torch.from_numpy(out["svd"][1])
        errors[path] = float(np.sqrt(np.sum(S[k:] ** 2) / np.sum(S ** 2)))
        # The same in float32: what a float32 implementation is expected to miss by.
        out32, S32, _k = combine(path, np.float32)
        for kind in ("linear", "cat"):
            for a, b in zip(out.get(kind, ()), out32.get(kind, ())):
                ferr, fmag = max(ferr, float(np.abs(a - b).max())), max(fmag, float(np.abs(a).max()))
        d64, d32 = out["svd"][0] @ out["svd"][1], (out32["svd"][0] @ out32["svd"][1]).astype(np.float64)
        derr, dmag = max(derr, float(np.abs(d64 - d32).max())), max(dmag, float(np.abs(d64).max()))
        rerr = max(rerr, abs(errors[path] - float(np.sqrt(np.sum(S32[k:].astype(np.float64) ** 2) /
                                                         np.sum(S32.astype(np.float64) ** 2)))))
    st_write(os.path.join(d, "io.safetensors"), io)
    write_json(os.path.join(d, "case.json"), {
        "kind": "combine", "model_case": "llama_patterns",
        "description": "Combination of the llama_patterns adapter (first) and the adapter in this folder (second; "
                       "lora_modules lists its modules as PEFT resolves them) "
                       "with weights " + str(weights) + ", as PEFT's add_weighted_adapter: io linear.<key> and "
                       "cat.<key> are the combined factors; svd.B.<module path> (U_k S_k) and svd.A.<module path> "
                       "(Vh_k) give the rank-" + str(svd_rank) + " update (their product, unique where the factors "
                       "are not) and svd_rel_errors its relative Frobenius error.",
        "weights": weights, "svd_rank": svd_rank, "svd_rel_errors": errors,
        "lora_modules": mods_y, "use_rslora": acfg_y["use_rslora"],
        "tolerance": {"factors": recommend(ferr, fmag, 1e-6, 1e-5), "delta": recommend(derr, dmag, 1e-6, 1e-4),
                      "rel_error": nice_up(max(20 * rerr, 1e-7))},
        "float32_numpy_error": {"factors_max_abs_err": ferr, "factors_max_abs": fmag, "delta_max_abs_err": derr,
                                "delta_max_abs": dmag, "rel_error_max_abs_err": rerr},
    })
    print(f"combine: {len(errors)} modules, svd rank {svd_rank} rel errors {min(errors.values()):.3f}.."
          f"{max(errors.values()):.3f}")


PISSA_MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.2.self_attn.v_proj", "model.layers.4.mlp.down_proj"]


def pissa_case(g):
    """PiSSA (PEFT init_lora_weights="pissa") on three modules of the real stories260K at r 4, alpha 8: the top-4
    singular triplets of W from numpy's SVD in float64. A = sqrt(S_r / s) Vh_r, B = U_r sqrt(S_r / s), and the base
    keeps W - s B A; the signs of singular vectors are arbitrary, so tests compare the rank-1 terms
    s B[:, k] A[k, :] = U_k S_k Vh_k and the residual."""
    d = g.case_dir("pissa_stories260K")
    _cfg, W = read_llama2c(os.path.join(g.shared, "models/stories260K/stories260K.bin"))
    r, alpha = 4, 8
    io, err, mag = {}, 0.0, 0.0
    for path in PISSA_MODULES:
        w = W[path + ".weight"].double().numpy()
        U, S, Vh = np.linalg.svd(w, full_matrices=False)
        gaps = [(S[k] - S[k + 1]) / S[0] for k in range(r)]
        assert min(gaps) > 1e-3, f"{path}: close singular values {S[:r + 1]}"
        io["U." + path], io["S." + path], io["Vh." + path] = (torch.from_numpy(U[:, :r]), torch.from_numpy(S[:r]),
                                                             torch.from_numpy(Vh[:r]))
        # numpy's float32 SVD of the same matrix: the error of a good float32 implementation
        U32, S32, Vh32 = np.linalg.svd(w.astype(np.float32), full_matrices=False)
        for k in range(r):
            t64 = np.outer(U[:, k] * S[k], Vh[k])
            t32 = np.outer(U32[:, k].astype(np.float64) * S32[k], Vh32[k].astype(np.float64))
            err = max(err, float(np.abs(t64 - t32).max()))
            mag = max(mag, float(np.abs(t64).max()))
    st_write(os.path.join(d, "io.safetensors"), io)
    write_json(os.path.join(d, "case.json"), {
        "kind": "pissa", "model_ref": "models/stories260K/stories260K.bin", "modules": PISSA_MODULES, "r": r,
        "alpha": alpha, "description": pissa_case.__doc__.strip(),
        "tolerance": {"terms": recommend(err, mag, 1e-6, 1e-4)},
        "float32_numpy_error": {"terms_max_abs_err": err, "terms_max_abs": mag},
    })
    print(f"pissa_stories260K: {len(PISSA_MODULES)} modules, float32 SVD term error {err:.2e} (|max| {mag:.3f})")


def check_budget(out):
    """The golden folder's files must stay within the repository's 3.2 MB budget (check_golden.py checks it too)."""
    total = sum(os.path.getsize(os.path.join(root, f)) for root, _d, files in os.walk(out) for f in files)
    print(f"golden total: {total / 1e6:.2f} MB in {out}")
    if total > 3.2e6:
        sys.exit("golden files exceed the ~3 MB budget")


def golden_from_args(description):
    """The Golden writer for the --out folder (default tests/ref/golden) reading reference files from --shared."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--shared", default=os.environ.get("WL_SHARED_DIR", os.path.join(os.path.dirname(REPO), "shared")))
    ap.add_argument("--out", default=os.path.join(HERE, "golden"))
    args = ap.parse_args()
    return Golden(os.path.abspath(args.out), os.path.abspath(args.shared))


def main():
    g = golden_from_args(__doc__.split("\n")[0])
    os.makedirs(g.out, exist_ok=True)

    check_rope_layouts()
    gpt2tok, tok = check_tokenizers(g.shared)
    synthetic_cases(g)
    pcfg, pW, plora, _pmods, pacfg = pattern_case(g)
    dtype_cases(g, pcfg, pW)
    train_contract(g, pcfg, pW, plora)
    combine_case(g, pcfg, pW, plora, pacfg)
    cfg, W = stories_case(g, tok)
    rope_long_cases(g, tok)
    pissa_case(g)
    base_only_cases(g)
    greedy_file(g, tok, cfg, W)
    sgd_contract(g, tok, gpt2tok)

    check_budget(g.out)


if __name__ == "__main__":
    main()
