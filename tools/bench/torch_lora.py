#!/usr/bin/python3
"""torch_lora.py: the PyTorch reference point of `npm run bench`: one LoRA training step on the same
SmolLM2-135M-shaped model as tools/bench.js (hidden 576, 30 layers, 9 heads / 3 kv heads, intermediate 1536,
vocab 49152, tied embeddings; random weights), LoRA r 8 / alpha 16 on q_proj and v_proj, sequence 128, batch 1,
AdamW, on ONE native thread (torch.set_num_threads(1) and OPENBLAS_NUM_THREADS=1: PyTorch's CPU matmul runs on the
system BLAS, OpenBLAS on Debian when libopenblas0-pthread is installed). Plain PyTorch, no transformers / peft.
With --blas-threads N the matrix products run on N OpenBLAS threads and everything else stays on one: of the ways
tried to give this step two threads on the 2-core test machine, the fastest by wall clock and by CPU time.
In runs by hand, torch.set_num_threads(2) besides (OpenMP threads for the elementwise work) ran 0.89-0.95x as fast
as one thread with OpenBLAS on one thread, and 0.39-0.43x with OpenBLAS on two, likely because each runtime's idle
threads poll for work while the other's run.

Prints one JSON object: tokens per second by wall clock and by process CPU time, the median step time, and the
versions it ran with. tools/bench.js runs it with /usr/bin/python3 when torch is importable.

usage: /usr/bin/python3 tools/bench/torch_lora.py [--steps 6] [--blas-threads 1]
"""
import argparse
import json
import math
import os
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--blas-threads", type=int, default=1)
    args = ap.parse_args()
    if args.blas_threads < 1:
        ap.error(f"--blas-threads must be at least 1, not {args.blas_threads}")
    return args


# Parsed before torch loads, which reads these thread counts. OpenBLAS (the pthread build Debian installs) otherwise
# starts a thread per core whatever torch.set_num_threads says.
ARGS = parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads)
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import torch  # noqa: E402

CFG = dict(dim=576, hidden=1536, layers=30, heads=9, kv_heads=3, head_dim=64, vocab=49152, eps=1e-5, theta=100000.0)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    # Hugging Face rotate_half: pairs (i, i + hs/2).
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class LoraLlama(torch.nn.Module):
    def __init__(self, c, rank, alpha, generator):
        super().__init__()
        C, I, V, hs = c["dim"], c["hidden"], c["vocab"], c["head_dim"]
        qd, kvd = c["heads"] * hs, c["kv_heads"] * hs
        self.c = c
        self.scale = alpha / rank

        def frozen(*shape):
            return torch.nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * 0.04, requires_grad=False)

        self.embed = frozen(V, C)
        self.blocks = []
        self.lora = torch.nn.ParameterList()
        for _ in range(c["layers"]):
            b = dict(n1=torch.ones(C), n2=torch.ones(C), q=frozen(qd, C), k=frozen(kvd, C), v=frozen(kvd, C),
                     o=frozen(C, qd), gate=frozen(I, C), up=frozen(I, C), down=frozen(C, I))
            for name, out in (("q", qd), ("v", kvd)):
                a = torch.nn.Parameter((torch.rand(rank, C, generator=generator) * 2 - 1) / math.sqrt(C))
                bb = torch.nn.Parameter((torch.rand(out, rank, generator=generator) * 2 - 1) * 0.01)
                self.lora.append(a)
                self.lora.append(bb)
                b[name + "_lora"] = (a, bb)
            self.blocks.append(b)
        self.norm = torch.ones(C)
        inv = 1.0 / c["theta"] ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        ang = torch.arange(4096, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos, self.sin = ang.cos().float(), ang.sin().float()

    def linear(self, x, w, lora=None):
        y = x @ w.t()
        if lora is not None:
            a, b = lora
            y = y + self.scale * ((x @ a.t()) @ b.t())
        return y

    def forward(self, tokens, targets):
        c = self.c
        B, T = tokens.shape
        H, Hkv, hs = c["heads"], c["kv_heads"], c["head_dim"]
        cos, sin = self.cos[:T], self.sin[:T]
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed[tokens]
        for b in self.blocks:
            h = rmsnorm(x, b["n1"], c["eps"])
            q = self.linear(h, b["q"], b["q_lora"]).view(B, T, H, hs).transpose(1, 2)
            k = self.linear(h, b["k"]).view(B, T, Hkv, hs).transpose(1, 2)
            v = self.linear(h, b["v"], b["v_lora"]).view(B, T, Hkv, hs).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hs) + mask, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, H * hs)
            x = x + self.linear(y, b["o"])
            h = rmsnorm(x, b["n2"], c["eps"])
            x = x + self.linear(torch.nn.functional.silu(self.linear(h, b["gate"])) * self.linear(h, b["up"]), b["down"])
        logits = rmsnorm(x, self.norm, c["eps"]) @ self.embed.t()
        return torch.nn.functional.cross_entropy(logits.view(B * T, -1), targets.view(-1))


def main(args):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    model = LoraLlama(CFG, rank=8, alpha=16, generator=g)
    opt = torch.optim.AdamW(model.lora.parameters(), lr=1e-3, weight_decay=0.0)
    T = 128
    tokens = torch.randint(0, CFG["vocab"], (1, T), generator=g)
    targets = torch.randint(0, CFG["vocab"], (1, T), generator=g)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.lora.parameters(), 1.0)
        opt.step()
        return loss.item()

    step()  # warm-up
    wall, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(json.dumps({
        "setup": ("PyTorch, one native thread" if args.blas_threads == 1 else
                  f"PyTorch, matrix products on {args.blas_threads} OpenBLAS threads, the rest on one")
        + ": seq 128, batch 1, LoRA r 8 on q_proj and v_proj, AdamW",
        "torch": torch.__version__,
        "blas": f"system BLAS (OpenBLAS on Debian with libopenblas0-pthread), OPENBLAS_NUM_THREADS={args.blas_threads}",
        "threads": torch.get_num_threads(),
        "blas_threads": args.blas_threads,
        "step_seconds_median": med(wall),
        "training_tokens_per_second": T / med(wall),
        "training_tokens_per_cpu_second": T / med(cpu),
        "loss": loss,
    }))


if __name__ == "__main__":
    sys.exit(main(ARGS))
