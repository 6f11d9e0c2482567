// bench.js: `npm run bench`. Measures, in one run on this machine (wasm, one thread, Node), the GEMM kernels next
// to the wasm SIMD peak, LoRA training throughput on a SmolLM2-135M-shaped model with its peak memory, decoding
// speed, SVD times and the cost of switching adapters. Prints one JSON object. Ratios are computed from figures
// of this run only (the machine's cores are shared and noisy).
import os from 'node:os';

import { Adapter, Arch, Core } from '../web/core.js';
import { Trainer } from '../web/train.js';
import { Rng } from '../web/rng.js';
import { benchGemm } from './bench/gemm.js';

const SMOLLM2_135M = {
  arch: Arch.LLAMA, dim: 576, hiddenDim: 1536, nLayers: 30, nHeads: 9, nKvHeads: 3, headDim: 64, vocabSize: 49152,
  maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 100000, normEps: 1e-5, bosId: 1, eosId: 2,
};

const log = (s) => process.stderr.write(`${s}\n`);

function randomFill(view, rng, scale) {
  for (let i = 0; i < view.length; i++) view[i] = (rng.next() * 2 - 1) * scale;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** A SmolLM2-135M-shaped model with random weights (norm weights 1). */
function makeModel(core) {
  const model = core.createModel(SMOLLM2_135M);
  const rng = new Rng(1);
  for (const t of model.tensors()) {
    const v = model.tensorView(t);
    if (t.ndim === 1) v.fill(1);
    else randomFill(v, rng, 0.04);
  }
  return model;
}

function qvAdapter(model, rank = 8) {
  const L = model.config.nLayers;
  const mods = model.modules();
  const S = mods.length;
  const ranks = new Int32Array(L * S);
  const alphas = new Float32Array(L * S);
  for (let l = 0; l < L; l++) {
    for (const m of mods) {
      if (m.shortName === 'q_proj' || m.shortName === 'v_proj') {
        ranks[l * S + m.slot] = rank;
        alphas[l * S + m.slot] = 2 * rank;
      }
    }
  }
  const a = Adapter.create(model, { ranks, alphas });
  a.init('default', 3);
  return a;
}

async function benchTraining(core) {
  const T = 128;
  const model = makeModel(core);
  const adapter = qvAdapter(model);
  const rng = new Rng(7);
  const seqs = Array.from({ length: 16 }, () => {
    const tokens = new Int32Array(T);
    const targets = new Int32Array(T);
    for (let t = 0; t < T; t++) tokens[t] = rng.int(SMOLLM2_135M.vocabSize);
    for (let t = 0; t < T; t++) targets[t] = t + 1 < T ? tokens[t + 1] : rng.int(SMOLLM2_135M.vocabSize);
    return { tokens, targets, valid: T };
  });
  const steps = 6;
  const trainer = new Trainer({ model, adapter, train: seqs, options: { steps: steps + 1, lr: 1e-3, batchSize: 1, seqLen: T, evalSplit: 0 } });
  trainer.trainStep(); // warm-up: first-touch of buffers
  const times = [];
  const cpuTimes = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    trainer.trainStep();
    const c1 = process.cpuUsage(c0);
    times.push((performance.now() - t0) / 1000);
    cpuTimes.push((c1.user + c1.system) / 1e6);
  }
  // forward alone and decoding, on the same model
  const fwd = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    model.forward(seqs[i].tokens, { targets: seqs[i].targets });
    fwd.push((performance.now() - t0) / 1000);
  }
  trainer.dispose();
  model.setAdapters([adapter]);
  model.reserve(1, 256, { lastLogits: true });
  const prompt = Array.from(seqs[0].tokens.subarray(0, 16));
  model.forward(prompt, { lastLogits: true });
  const t0 = performance.now();
  const n = 32;
  for (let i = 0; i < n; i++) model.forward([prompt[i % 16]], { pos0: 16 + i });
  const decode = n / ((performance.now() - t0) / 1000);
  const result = {
    model: 'SmolLM2-135M shape (hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152), random weights',
    setup: 'seq 128, batch 1, LoRA r 8 on q_proj and v_proj, AdamW',
    parameters: model.params().length,
    adapter_parameters: adapter.params().length,
    step_seconds_median: median(times),
    training_tokens_per_second: T / median(times),
    // CPU time of this (single-threaded) process: less disturbed by other jobs on the shared cores than wall time
    training_tokens_per_cpu_second: T / median(cpuTimes),
    forward_tokens_per_second: T / median(fwd),
    decode_tokens_per_second: decode,
    peak_wasm_memory_bytes: core.wasm.memory.buffer.byteLength,
    model_memory_bytes: model.memoryBytes(),
  };
  model.setAdapters([]);
  adapter.free();
  model.free();
  return result;
}

function benchSvd(core) {
  const out = [];
  const rng = new Rng(11);
  for (const [m, n] of [[576, 576], [576, 1536]]) {
    const a = new Float32Array(m * n);
    randomFill(a, rng, 1);
    for (const rank of [8, 16]) {
      const times = [];
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        core.svd(a, m, n, rank);
        times.push(performance.now() - t0);
      }
      out.push({ m, n, rank, method: 'randomized (4 power iterations, oversample 10)', ms_median: median(times) });
    }
  }
  return out;
}

function benchSwitch(core) {
  const model = makeModel(core);
  const a = qvAdapter(model);
  const b = qvAdapter(model);
  model.reserve(1, 128);
  const reps = 2000;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) model.setAdapters([i % 2 ? a : b]);
  const switchUs = ((performance.now() - t0) / reps) * 1000;
  const t1 = performance.now();
  for (let i = 0; i < 20; i++) model.setAdapters(i % 2 ? [a, b] : [a], i % 2 ? [0.5, 0.5] : [1]);
  const mixUs = ((performance.now() - t1) / 20) * 1000;
  model.setAdapters([]);
  const t2 = performance.now();
  model.merge(a, 1);
  const mergeMs = performance.now() - t2;
  const backup = model.editBytes();
  const t3 = performance.now();
  model.unmerge(a);
  const unmergeMs = performance.now() - t3;
  const tokens = new Int32Array(128).map((_, i) => (i * 37) % 49152);
  model.setAdapters([a]);
  const t4 = performance.now();
  model.forward(tokens);
  const forwardMs = performance.now() - t4;
  const res = {
    switch_active_adapter_us: switchUs,
    set_two_adapter_mix_us: mixUs,
    merge_ms: mergeMs,
    unmerge_ms: unmergeMs,
    merge_backup_bytes: backup,
    forward_128_tokens_ms: forwardMs,
    note: 'switching re-points the forward pass at another adapter: no base weight is copied',
  };
  model.setAdapters([]);
  a.free();
  b.free();
  model.free();
  return res;
}

async function main() {
  const core = await Core.create();
  log('weblora bench: GEMM and peak...');
  const gemm = await benchGemm({ exports: core.x, memory: core.wasm.memory });
  log('weblora bench: LoRA training on a SmolLM2-135M-shaped model...');
  const training = await benchTraining(core);
  log('weblora bench: SVD...');
  const svd = benchSvd(core);
  log('weblora bench: adapter switching...');
  const switching = benchSwitch(core);
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, wasm: 'SIMD128, one thread' },
    gemm,
    training,
    svd,
    adapter_switching: switching,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`weblora bench: error: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
