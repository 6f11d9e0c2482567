// bench.js: `npm run bench`. Measures, in one run on this machine (wasm under Node): the GEMM kernels of both SIMD
// flavours of the core on every shape of a LoRA step, each next to the peak of the instructions it uses; LoRA
// training, a forward pass and decoding on a SmolLM2-135M-shaped model with 1, 2 and 'auto' threads (relaxed SIMD,
// as browsers run it; each in its own process) and with 1 thread of the SIMD128 build, by wall clock and by CPU time,
// with the scaling between them (also from 1- and 2-thread training steps interleaved in one process) and the peak
// memory; the 8-bit and 4-bit base (products, training and decoding, the
// cost of recomputing activations, peak training memory of four real models' shapes with and without recomputation,
// perplexity); PyTorch's one-thread LoRA step on the same shape when
// /usr/bin/python3 has torch; SVD times, the cost of switching adapters, and DoRA against LoRA on the demo diary
// (held-out loss, CPU time). Prints one JSON object. Ratios come from figures of this run only (the machine's cores
// are shared and noisy, which is also why CPU-time figures stand beside wall-clock ones).
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import v8 from 'node:v8';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { Adapter, Arch, Core } from '../web/core/core.js';
import { Trainer } from '../web/engine/train.js';
import { Rng } from '../web/engine/rng.js';
import { benchGemm } from './bench/gemm.js';
import { benchDoraDiary } from './bench/dora.js';
import { benchDotTiles, benchQuantGemm, fillRandom, MODEL_SHAPES } from './bench/quant.js';
import { checkMemory } from '../web/formats/loader.js';

const SMOLLM2_135M = {
  arch: Arch.LLAMA, dim: 576, hiddenDim: 1536, nLayers: 30, nHeads: 9, nKvHeads: 3, headDim: 64, vocabSize: 49152,
  maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 100000, normEps: 1e-5, bosId: 1, eosId: 2,
};

const log = (s) => process.stderr.write(`${s}\n`);

// Node 20 validates relaxed SIMD only behind this flag (Node 22 and Chromium have it on): set before any module
// compiles, so the bench can measure the relaxed-SIMD build browsers run.
v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const execFileAsync = promisify(execFile);

function randomFill(view, rng, scale) {
  for (let i = 0; i < view.length; i++) view[i] = (rng.next() * 2 - 1) * scale;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** A SmolLM2-135M-shaped model with random weights (norm weights 1); q8 / q4 quantise them as they are written. */
function makeModel(core, dtype = 'f32') {
  const model = core.createModel(SMOLLM2_135M, dtype);
  if (dtype !== 'f32') {
    fillRandom(model);
    return model;
  }
  const rng = new Rng(1);
  for (const t of model.tensors()) {
    const v = model.tensorView(t);
    if (t.ndim === 1) v.fill(1);
    else randomFill(v, rng, 0.04);
  }
  return model;
}

/** An adapter of rank `rank` on every linear module. */
function allLinearAdapter(model, rank) {
  const L = model.config.nLayers, S = model.modules().length;
  const a = Adapter.create(model, { ranks: new Int32Array(L * S).fill(rank), alphas: new Float32Array(L * S).fill(2 * rank) });
  a.init('default', 3);
  return a;
}

/**
 * Peak wasm memory of LoRA training (r 16 on every linear module, AdamW, one sequence of 256 tokens) on a
 * random-weight model of a real model's shape, in `dtype`, keeping every layer's activations or (`recompute`) only
 * each layer's input; or the estimate's refusal when it cannot fit.
 */
async function benchMemory(name, dtype, recompute = false) {
  const cfg = MODEL_SHAPES[name];
  const core = await Core.create({ threads: 'auto' });
  try {
    checkMemory(core, cfg, dtype, name);
  } catch (err) {
    await core.stopThreads();
    return { model: name, dtype, recompute, fits: false, estimated_weight_bytes: core.weightBytes(cfg, dtype), refusal: err.message };
  }
  const t0 = performance.now();
  const model = core.createModel(cfg, dtype);
  fillRandom(model);
  const loadSeconds = (performance.now() - t0) / 1000;
  const adapter = allLinearAdapter(model, 16);
  const rng = new Rng(5);
  const seq = 256;
  const tokens = Int32Array.from({ length: seq }, () => rng.int(cfg.vocabSize));
  const targets = Int32Array.from({ length: seq }, (_, i) => (i + 1 < seq ? tokens[i + 1] : rng.int(cfg.vocabSize)));
  const trainer = new Trainer({ model, adapter, train: [{ tokens, targets, valid: seq }], options: { steps: 1, lr: 1e-4, batchSize: 1, seqLen: seq, evalSplit: 0, recompute } });
  const step = timed(() => trainer.trainStep());
  const parts = model.memoryParts();
  const res = {
    model: name, dtype, recompute, fits: true, threads: core.threads,
    peak_wasm_memory_bytes: core.wasm.memory.buffer.byteLength,
    weight_bytes: parts.weights, estimated_weight_bytes: core.weightBytes(cfg, dtype),
    adapter_and_optimizer_bytes: 4 * adapter.params().length * 4, // weights, gradients, AdamW m and v
    activation_bytes: parts.activations,
    adapter_parameters: adapter.params().length,
    fill_seconds: +loadSeconds.toFixed(1), training_step_seconds: +step.wall.toFixed(2),
  };
  trainer.dispose();
  model.setAdapters([]);
  adapter.free();
  model.free();
  await core.stopThreads();
  return res;
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

const T = 128;
/** Rounds of the runs whose speeds are compared (1, 2 and auto threads, PyTorch): see main. */
const ROUNDS = 3;

/** Random training sequences for the bench model. */
function sequences(n) {
  const rng = new Rng(7);
  return Array.from({ length: n }, () => {
    const tokens = new Int32Array(T);
    const targets = new Int32Array(T);
    for (let t = 0; t < T; t++) tokens[t] = rng.int(SMOLLM2_135M.vocabSize);
    for (let t = 0; t < T; t++) targets[t] = t + 1 < T ? tokens[t + 1] : rng.int(SMOLLM2_135M.vocabSize);
    return { tokens, targets, valid: T };
  });
}

const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** Wall and process CPU seconds (every thread of the process) of fn. */
function timed(fn) {
  const t0 = performance.now();
  const c0 = cpuSeconds();
  fn();
  return { wall: (performance.now() - t0) / 1000, cpu: cpuSeconds() - c0 };
}

/**
 * What benchModel trains: a core on `threads` threads, the SmolLM2-135M-shaped model, a q/v adapter, 16 sequences and a
 * trainer for `steps` more steps after the warm-up step taken here (first touch of the buffers, optimised code).
 */
async function trainingSetup(threads, simd, steps, dtype = 'f32', recompute = false) {
  const core = await Core.create({ threads, simd });
  const model = makeModel(core, dtype);
  const adapter = qvAdapter(model);
  const seqs = sequences(16);
  const trainer = new Trainer({ model, adapter, train: seqs, options: { steps: steps + 1, lr: 1e-3, batchSize: 1, seqLen: T, evalSplit: 0, recompute } });
  trainer.trainStep();
  return { core, model, adapter, seqs, trainer };
}

/** Frees what trainingSetup made, its trainer once disposed. */
async function freeSetup({ core, model, adapter }) {
  model.setAdapters([]);
  adapter.free();
  model.free();
  await core.stopThreads();
}

/**
 * LoRA training, a forward pass and decoding on the SmolLM2-135M-shaped model with the core on `threads` threads
 * (this process runs nothing else meanwhile, so its CPU time is the core's).
 */
async function benchModel(threads, simd, dtype = 'f32', recompute = false) {
  const steps = 5;
  const setup = await trainingSetup(threads, simd, steps, dtype, recompute);
  const { core, model, adapter, seqs, trainer } = setup;
  const train = [];
  for (let i = 0; i < steps; i++) train.push(timed(() => trainer.trainStep()));
  trainer.dispose();
  const fwd = [];
  for (let i = 0; i < 3; i++) fwd.push(timed(() => model.forward(seqs[i].tokens)));
  model.reserve(1, 256, { lastLogits: true });
  const prompt = Array.from(seqs[0].tokens.subarray(0, 16));
  model.forward(prompt, { lastLogits: true });
  const n = 32;
  const decode = timed(() => {
    for (let i = 0; i < n; i++) model.forward([prompt[i % 16]], { pos0: 16 + i });
  });
  const wall = median(train.map((x) => x.wall)), cpu = median(train.map((x) => x.cpu));
  const result = {
    threads: core.threads,
    simd: core.simd,
    dtype,
    recompute,
    training_step_seconds_median: wall,
    training_tokens_per_second: T / wall,
    training_tokens_per_cpu_second: T / cpu,
    forward_tokens_per_second: T / median(fwd.map((x) => x.wall)),
    forward_tokens_per_cpu_second: T / median(fwd.map((x) => x.cpu)),
    decode_tokens_per_second: n / decode.wall,
    decode_tokens_per_cpu_second: n / decode.cpu,
    peak_wasm_memory_bytes: core.wasm.memory.buffer.byteLength,
    model_memory_bytes: model.memoryBytes(),
    parameters: model.params().length,
    adapter_parameters: adapter.params().length,
  };
  await freeSetup(setup);
  return result;
}

/** Pairs of steps benchInterleaved times. */
const INTERLEAVED_PAIRS = 12;

/**
 * LoRA training on one thread and on `threads` threads with their steps interleaved in one process: two cores, each
 * with its own copy of the benchModel setup, take turns step by step, so both see the same minutes of a shared
 * machine; the ratio of tokens per CPU-second is taken within each pair of steps. (While one core works, the other's
 * workers sleep, after polling for a few microseconds.)
 */
async function benchInterleaved(threads) {
  const setups = [];
  for (const n of [1, threads]) setups.push({ ...(await trainingSetup(n, 'relaxed', INTERLEAVED_PAIRS)), steps: [] });
  for (let i = 0; i < INTERLEAVED_PAIRS; i++) for (const s of setups) s.steps.push(timed(() => s.trainer.trainStep()));
  const [one, many] = setups;
  const perCpu = many.steps.map((x, i) => one.steps[i].cpu / x.cpu);
  const speedup = many.steps.map((x, i) => one.steps[i].wall / x.wall);
  const result = {
    threads: many.core.threads,
    pairs: INTERLEAVED_PAIRS,
    training_tokens_per_cpu_second_vs_one_thread: +median(perCpu).toFixed(3),
    training_speedup: +median(speedup).toFixed(3),
    by_pair: perCpu.map((x, i) => ({ training_tokens_per_cpu_second_vs_one_thread: +x.toFixed(3), training_speedup: +speedup[i].toFixed(3) })),
  };
  for (const s of setups) {
    s.trainer.dispose();
    await freeSetup(s);
  }
  return result;
}

/**
 * Floating-point operations one LoRA step of benchModel's setup needs (T tokens, LoRA rank r on q_proj and v_proj):
 * every product with a frozen weight forward and for the input gradient, causal attention (scores and the weighted
 * sum) forward and backward, and the LoRA branch (forward, both factors' gradients, its input gradient). Norms,
 * softmax and the optimizer are left out, so a rate from it is a lower bound of the work done per second.
 */
function loraStepFlops(c, tokens = T, r = 8) {
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  const layerWeights = c.dim * q + 2 * c.dim * kv + q * c.dim + 3 * c.dim * c.hiddenDim;
  const frozen = 2 * 2 * tokens * (c.nLayers * layerWeights + c.vocabSize * c.dim);
  const causalPairs = (tokens * (tokens + 1)) / 2;
  const attention = 3 * c.nLayers * c.nHeads * 2 * 2 * c.headDim * causalPairs;
  const lora = 3 * c.nLayers * 2 * tokens * r * ((c.dim + q) + (c.dim + kv));
  return frozen + attention + lora;
}

/** Runs this script with args in a fresh Node process (its own memory, JIT and thread pool) and returns its JSON. */
async function inChild(args) {
  const { stdout } = await execFileAsync(process.execPath, [fileURLToPath(import.meta.url), ...args], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout);
}

/** benchModel (or, with `memory`, benchMemory) in a fresh Node process. */
function benchModelInChild(threads, simd, dtype = 'f32', memory = null, recompute = false) {
  return inChild((memory ? ['--memory-model', memory, '--model-dtype', dtype]
    : ['--model-threads', String(threads), '--simd', simd, '--model-dtype', dtype]).concat(recompute ? ['--recompute'] : []));
}

/** PyTorch's LoRA step on the same model shape, its matrix products on blasThreads OpenBLAS threads and the rest on
 * one, or why it was not measured. */
async function benchTorch(blasThreads = 1) {
  const python = '/usr/bin/python3';
  try {
    await execFileAsync(python, ['-c', 'import torch']);
  } catch {
    return { measured: false, reason: `not measured: ${python} cannot import torch` };
  }
  const script = fileURLToPath(new URL('./bench/torch_lora.py', import.meta.url));
  const { stdout } = await execFileAsync(python, [script, '--steps', '5', '--blas-threads', String(blasThreads)],
    { maxBuffer: 1 << 20 });
  return { measured: true, ...JSON.parse(stdout) };
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

/**
 * The quantised base: GEMM rates next to f32 and the peak; LoRA training and decoding on the SmolLM2-135M shape in
 * f32, q8, q4 (one thread each; `f32Run`, the f32 one-thread run of this bench, is reused when given) and q8 training
 * recomputing activations; peak memory of LoRA training on random-weight models of four real models' shapes per dtype,
 * keeping every layer's activations and recomputing them; held-out perplexity in each dtype.
 */
async function benchQuant(core, f32Run = null) {
  log('weblora bench: products with q8 / q4 weights next to f32 (one thread)...');
  const gemm = benchQuantGemm({ exports: core.x, memory: core.wasm.memory }, { log });
  log('weblora bench: integer dot products next to f32 multiply-adds (one thread)...');
  const dotTiles = benchDotTiles(core.x);
  const model = {};
  for (const dtype of ['f32', 'q8', 'q4']) {
    if (dtype === 'f32' && f32Run) {
      model.f32 = f32Run;
      continue;
    }
    log(`weblora bench: LoRA training and decoding on the SmolLM2-135M shape, ${dtype}, one thread...`);
    model[dtype] = await benchModelInChild(1, 'auto', dtype);
  }
  log('weblora bench: LoRA training on the SmolLM2-135M shape, q8, one thread, recomputing activations...');
  const q8Recompute = await benchModelInChild(1, 'auto', 'q8', null, true);
  const memory = [];
  for (const name of Object.keys(MODEL_SHAPES)) {
    for (const dtype of ['f32', 'q8', 'q4']) {
      for (const recompute of [false, true]) {
        log(`weblora bench: peak memory of LoRA training (r 16, all linear, 256 tokens), ${name}, ${dtype}`
          + `${recompute ? ', recomputing activations' : ''}...`);
        memory.push(await benchModelInChild('auto', 'auto', dtype, name, recompute));
      }
    }
  }
  const GB = 1e9;
  const peakGB = (name, dtype, recompute) => {
    const run = memory.find((m) => m.model === name && m.dtype === dtype && m.recompute === recompute);
    return run.fits ? +(run.peak_wasm_memory_bytes / GB).toFixed(3) : 'refused';
  };
  // one row per model, one column per dtype and activation plan
  const table = Object.fromEntries(Object.keys(MODEL_SHAPES).map((name) => [name, Object.fromEntries(['f32', 'q8', 'q4']
    .flatMap((dtype) => [[dtype, peakGB(name, dtype, false)], [`${dtype}_recompute`, peakGB(name, dtype, true)]]))]));
  log('weblora bench: held-out perplexity in f32, q8, q4...');
  const { stdout } = await execFileAsync(process.execPath, [fileURLToPath(new URL('./bench/perplexity.js', import.meta.url))], { maxBuffer: 1 << 20 });
  const r = (a, b) => +(a / b).toFixed(3);
  return {
    gemm,
    integer_dot_vs_f32: dotTiles,
    smollm2_135m_shape: {
      setup: `one thread, LoRA r 8 on q_proj and v_proj, batch 1 x ${T} tokens; decode 32 tokens after 16`,
      f32: model.f32, q8: model.q8, q4: model.q4,
      training_tokens_per_second: Object.fromEntries(Object.entries(model).map(([d, m]) => [d, +m.training_tokens_per_second.toFixed(2)])),
      decode_tokens_per_second: Object.fromEntries(Object.entries(model).map(([d, m]) => [d, +m.decode_tokens_per_second.toFixed(2)])),
      q8_training_vs_f32: r(model.q8.training_tokens_per_second, model.f32.training_tokens_per_second),
      q4_training_vs_f32: r(model.q4.training_tokens_per_second, model.f32.training_tokens_per_second),
      q8_decode_vs_f32: r(model.q8.decode_tokens_per_second, model.f32.decode_tokens_per_second),
      q4_decode_vs_f32: r(model.q4.decode_tokens_per_second, model.f32.decode_tokens_per_second),
      q8_recompute: q8Recompute,
      q8_recompute_training_vs_q8: r(q8Recompute.training_tokens_per_second, model.q8.training_tokens_per_second),
      q8_recompute_training_vs_q8_by_cpu_time: r(q8Recompute.training_tokens_per_cpu_second, model.q8.training_tokens_per_cpu_second),
    },
    lora_training_memory: {
      setup: 'random weights of each model\'s exact shape; LoRA r 16 on every linear module, AdamW, batch 1 x 256 tokens, '
        + 'threads auto; peak = the wasm memory size after one training step',
      goals: 'SmolLM2-135M q8 <= 0.45 GB; Llama-3.2-1B q4 within 4 GB',
      peak_gb: table,
      smollm2_135m_q8_goal_met: { kept: table['SmolLM2-135M'].q8 <= 0.45, recompute: table['SmolLM2-135M'].q8_recompute <= 0.45 },
      llama_3_2_1b_q4_goal_met: { kept: table['Llama-3.2-1B'].q4 <= 4.0, recompute: table['Llama-3.2-1B'].q4_recompute <= 4.0 },
      runs: memory,
    },
    perplexity: JSON.parse(stdout),
  };
}

// The builds with the benchmarks' exports (peak loops, bare GEMMs), which the package does not ship.
const BENCH_BUILDS = {
  simd128: new URL('../build/wasm/weblora-bench.wasm', import.meta.url),
  relaxed: new URL('../build/wasm-relaxed/weblora-bench-relaxed.wasm', import.meta.url),
};

/**
 * The core with the benchmarks' exports, in one SIMD flavour ('auto': the one Core.create picks on this machine).
 * @param {'simd128' | 'relaxed' | 'auto'} [simd]
 */
async function benchCore(simd = 'auto') {
  const flavour = simd === 'auto' ? (await Core.create()).simd : simd;
  return Core.create({ source: await readFile(BENCH_BUILDS[flavour]) });
}

/**
 * The work per CPU-second of one-thread training, PyTorch's and ours, as GFLOPS (loraStepFlops) and as a fraction of
 * the relaxed-SIMD f32x4 peak of this run: what one-thread speed relative to PyTorch is within wasm's reach.
 */
function effectiveRates(one, torch, peakGflops) {
  const stepFlops = loraStepFlops(SMOLLM2_135M);
  const gflops = (run) => +((run.training_tokens_per_cpu_second / T) * stepFlops / 1e9).toFixed(2);
  const torchGflops = gflops(torch), wasmGflops = gflops(one);
  return {
    step_gflop: +(stepFlops / 1e9).toFixed(2),
    effective_gflops_by_cpu_time: { pytorch: torchGflops, wasm_one_thread: wasmGflops },
    effective_vs_wasm_relaxed_peak: { pytorch: +(torchGflops / peakGflops).toFixed(3), wasm_one_thread: +(wasmGflops / peakGflops).toFixed(3) },
    note: 'PyTorch runs OpenBLAS with this CPU\'s widest vectors (AVX-512 where present); wasm SIMD is 128 bits wide. '
      + 'A wasm step reaches x times PyTorch\'s speed only at x * effective_vs_wasm_relaxed_peak.pytorch of the f32x4 '
      + 'peak over the whole step',
  };
}

async function main() {
  const modelThreads = process.argv.indexOf('--model-threads');
  const dtypeArg = process.argv.indexOf('--model-dtype');
  const dtype = dtypeArg > 0 ? process.argv[dtypeArg + 1] : 'f32';
  const recompute = process.argv.includes('--recompute');
  if (modelThreads > 0) {
    const t = process.argv[modelThreads + 1];
    const simd = process.argv[process.argv.indexOf('--simd') + 1];
    process.stdout.write(`${JSON.stringify(await benchModel(t === 'auto' ? 'auto' : Number(t), simd, dtype, recompute))}\n`);
    return;
  }
  const interleavedThreads = process.argv.indexOf('--interleaved-threads');
  if (interleavedThreads > 0) {
    process.stdout.write(`${JSON.stringify(await benchInterleaved(Number(process.argv[interleavedThreads + 1])))}\n`);
    return;
  }
  const memoryModel = process.argv.indexOf('--memory-model');
  if (memoryModel > 0) {
    process.stdout.write(`${JSON.stringify(await benchMemory(process.argv[memoryModel + 1], dtype, recompute))}\n`);
    return;
  }
  const only = process.argv.indexOf('--only');
  if (only > 0 && process.argv[only + 1] === 'quant') {
    process.stdout.write(`${JSON.stringify(await benchQuant(await benchCore()), null, 2)}\n`);
    return;
  }
  const gemm = {};
  for (const simd of ['relaxed', 'simd128']) {
    const gemmCore = await benchCore(simd);
    log(`weblora bench: GEMM shapes of a LoRA step (${simd} build), next to the peak of its instructions (one thread)...`);
    gemm[simd] = await benchGemm({ exports: gemmCore.x, memory: gemmCore.wasm.memory }, { log });
  }
  const core = await benchCore();
  // The cores are shared, and other programs take turns on them for minutes at a time: a 1-thread run and a 2-thread
  // run a minute apart can see different machines. So the runs that are compared go in rounds, each comparison is
  // made within its round, and the median over rounds is reported (with every round's figures beside it).
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    log(`weblora bench: LoRA training, forward and decoding on a SmolLM2-135M-shaped model, round ${r + 1} of ${ROUNDS}: `
      + '1 thread, PyTorch (one native thread, same model and step), 2 threads, PyTorch on 2 OpenBLAS threads, '
      + 'auto threads, 1 thread of the SIMD128 build...');
    const round = { one: await benchModelInChild(1, 'relaxed') };
    const torchMeasured = r === 0 || rounds[0].torch.measured;
    round.torch = torchMeasured ? await benchTorch() : rounds[0].torch;
    round.two = await benchModelInChild(2, 'relaxed');
    round.torchTwo = torchMeasured ? await benchTorch(2) : rounds[0].torchTwo;
    round.auto = await benchModelInChild('auto', 'relaxed');
    round.simd128 = await benchModelInChild(1, 'simd128');
    rounds.push(round);
  }
  const runs = {};
  // Each configuration's reported run is its median round by training tokens per CPU-second.
  for (const [key, name] of [['one', 1], ['two', 2], ['auto', 'auto'], ['torch', 'torch'], ['torchTwo', 'torchTwo'],
    ['simd128', 'simd128']]) {
    const byRate = rounds.map((r) => r[key]).filter((x) => x.measured !== false)
      .sort((a, b) => a.training_tokens_per_cpu_second - b.training_tokens_per_cpu_second);
    runs[name] = byRate.length ? byRate[byRate.length >> 1] : rounds[0][key];
  }
  log(`weblora bench: LoRA training on 1 and 2 threads, ${INTERLEAVED_PAIRS} pairs of steps interleaved in one process...`);
  const interleaved = await inChild(['--interleaved-threads', '2']);
  const quantized = await benchQuant(core, runs[1]);
  log('weblora bench: SVD...');
  const svd = benchSvd(core);
  log('weblora bench: adapter switching...');
  const switching = benchSwitch(core);
  log('weblora bench: DoRA vs LoRA at rank 4 on the demo diary...');
  const dora = await benchDoraDiary({ log });
  const one = runs[1], two = runs[2], auto = runs.auto, torch = runs.torch, torchTwo = runs.torchTwo;
  const plainOne = runs.simd128;
  const ratio = (a, b) => +(a / b).toFixed(3);
  // The median over rounds of a ratio taken within each round.
  const pairedRatio = (key, field, base = 'one') => ratio(median(rounds.map((r) => r[key][field] / r[base][field])), 1);
  // Training speed and tokens per CPU-second of configuration key against base: the median over rounds, and each round.
  const trainingScaling = (key, base) => ({
    training_speedup: pairedRatio(key, 'training_tokens_per_second', base),
    training_tokens_per_cpu_second_vs_one_thread: pairedRatio(key, 'training_tokens_per_cpu_second', base),
    by_round: rounds.map((r) => ({
      training_speedup: ratio(r[key].training_tokens_per_second, r[base].training_tokens_per_second),
      training_tokens_per_cpu_second_vs_one_thread: ratio(r[key].training_tokens_per_cpu_second, r[base].training_tokens_per_cpu_second),
    })),
  });
  const scaling = (key) => ({
    threads: runs[key === 'two' ? 2 : 'auto'].threads,
    forward_speedup: pairedRatio(key, 'forward_tokens_per_second'),
    decode_speedup: pairedRatio(key, 'decode_tokens_per_second'),
    ...trainingScaling(key, 'one'),
  });
  // A native reference for what a second core yields on this machine: PyTorch's step with its matrix products on
  // 2 OpenBLAS threads, against its one-thread step of the same round.
  const torchScaling = torchTwo.measured ? {
    setup: torchTwo.setup,
    training_tokens_per_second: torchTwo.training_tokens_per_second,
    training_tokens_per_cpu_second: torchTwo.training_tokens_per_cpu_second,
    ...trainingScaling('torchTwo', 'torch'),
  } : torchTwo;
  const result = {
    date: new Date().toISOString(),
    machine: {
      cpus: os.availableParallelism?.() ?? os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version,
      load_average: os.loadavg().map((x) => +x.toFixed(2)),
    },
    gemm,
    model: {
      name: 'SmolLM2-135M shape (hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab 49152), random weights',
      setup: `LoRA r 8 on q_proj and v_proj, AdamW, batch 1 x ${T} tokens; forward: ${T} tokens; decode: 32 tokens after 16`,
      parameters: one.parameters,
      adapter_parameters: one.adapter_parameters,
    },
    threads: {
      method: `${ROUNDS} rounds of a 1-thread, a 2-thread and an auto-threads run (and PyTorch's on one thread and on `
        + '2 OpenBLAS threads, and a 1-thread run of the SIMD128 build), each in a fresh process; '
        + 'each configuration\'s figures are from its median round by training tokens per CPU-second; every ratio '
        + 'between configurations (to one thread, to PyTorch, relaxed to SIMD128) is the median over rounds of the ratio '
        + 'within a round',
      one_thread: one, two_threads: two, auto_threads: auto, simd128_one_thread: plainOne,
    },
    scaling: {
      two_threads: scaling('two'),
      auto_threads: scaling('auto'),
      two_threads_interleaved: {
        method: '1-thread and 2-thread training steps taking turns in one process (two cores with their own model '
          + 'copies): each ratio is within a pair of consecutive steps, the figures the median over pairs',
        ...interleaved,
      },
      pytorch_two_blas_threads: torchScaling,
    },
    relaxed_vs_simd128_one_thread_training: pairedRatio('one', 'training_tokens_per_second', 'simd128'),
    relaxed_vs_simd128_one_thread_training_by_cpu_time: pairedRatio('one', 'training_tokens_per_cpu_second', 'simd128'),
    pytorch: torch.measured ? {
      ...torch,
      wasm_one_thread_vs_pytorch: pairedRatio('one', 'training_tokens_per_second', 'torch'),
      wasm_one_thread_vs_pytorch_by_cpu_time: pairedRatio('one', 'training_tokens_per_cpu_second', 'torch'),
      wasm_simd128_one_thread_vs_pytorch: pairedRatio('simd128', 'training_tokens_per_second', 'torch'),
      ...effectiveRates(one, torch, gemm.relaxed.peak_gflops),
    } : torch,
    peak_wasm_memory_bytes: Math.max(one.peak_wasm_memory_bytes, two.peak_wasm_memory_bytes, auto.peak_wasm_memory_bytes),
    quantized,
    svd,
    adapter_switching: switching,
    dora_vs_lora_diary: dora,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`weblora bench: error: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
