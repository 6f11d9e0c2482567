// quant.js: the 8-bit and 4-bit frozen base in `npm run bench`. GEMM throughput with a q8 / q4 weight, kernel (a)
// (dequantised panel by panel into the f32 GEMM) and kernel (b) (activations quantised per row, integer dot
// products; the decoding GEMV for one token), next to the same product with the f32 weight and the f32x4 peak of the
// GEMM's instructions (gemm.js peakSampler), one thread, in turns like gemm.js; and the random-weight models whose
// peak memory the bench reports per dtype (exports from src/wasm/bench.c and src/wasm/bench_quant.c).
import { Arch } from '../../web/core/core.js';
import { peakSampler, timeSample } from './gemm.js';

const SAMPLE_FLOPS = 1e8;
const STORAGE = { q8: 1, q4: 2 };

/** Model shapes of the memory table (Hugging Face configs of these models; weights are random). */
export const MODEL_SHAPES = {
  'SmolLM2-135M': { arch: Arch.LLAMA, dim: 576, hiddenDim: 1536, nLayers: 30, nHeads: 9, nKvHeads: 3, headDim: 64, vocabSize: 49152,
    maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 100000, normEps: 1e-5, bosId: 1, eosId: 2 },
  'SmolLM2-360M': { arch: Arch.LLAMA, dim: 960, hiddenDim: 2560, nLayers: 32, nHeads: 15, nKvHeads: 5, headDim: 64, vocabSize: 49152,
    maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 100000, normEps: 1e-5, bosId: 1, eosId: 2 },
  'Qwen2.5-0.5B': { arch: Arch.LLAMA, dim: 896, hiddenDim: 4864, nLayers: 24, nHeads: 14, nKvHeads: 2, headDim: 64, vocabSize: 151936,
    maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 1, ropeLayout: 0, ropeTheta: 1000000, normEps: 1e-6, bosId: -1, eosId: 151643 },
  'Llama-3.2-1B': { arch: Arch.LLAMA, dim: 2048, hiddenDim: 8192, nLayers: 16, nHeads: 32, nKvHeads: 8, headDim: 64, vocabSize: 128256,
    maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 500000, normEps: 1e-5, bosId: 128000, eosId: 128001 },
};

/**
 * Fill every tensor of a model (any dtype) with random weights, norm weights 1, one tensor at a time through the
 * core's writer (a quantised model quantises them as they arrive, as when a model streams in).
 */
export function fillRandom(model, seed = 1, scale = 0.04) {
  let s = seed >>> 0;
  const CHUNK = 1 << 20;
  const buf = new Float32Array(CHUNK);
  for (const t of model.tensors()) {
    for (let at = 0; at < t.numel; at += CHUNK) {
      const n = Math.min(CHUNK, t.numel - at);
      if (t.ndim === 1 && /norm/.test(t.name)) buf.fill(1, 0, n);
      else {
        for (let i = 0; i < n; i++) {
          s = (Math.imul(s, 1103515245) + 12345) >>> 0;
          buf[i] = ((s >>> 8) / (1 << 24) - 0.5) * 2 * scale;
        }
      }
      model.writeTensor(t.index, 0, at, new Uint8Array(buf.buffer, 0, 4 * n));
    }
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * GFLOPS of the products with a frozen weight of SmolLM2-135M's shapes in f32, q8 and q4, at 8, 128 and 512 tokens
 * (forward with kernels a and b, input gradient with kernel a) and 1 token (decoding), with the peak of the same run.
 * @param {{ exports: any, memory: WebAssembly.Memory }} wasm a single-threaded core instance
 */
export function benchQuantGemm(wasm, options = {}) {
  const ex = wasm.exports;
  const memory = wasm.memory;
  const samples = options.samples ?? 12;
  const weights = [
    { name: 'q_proj, o_proj', out: 576, in: 576 }, { name: 'gate_proj, up_proj', out: 1536, in: 576 },
    { name: 'down_proj', out: 576, in: 1536 }, { name: 'lm_head', out: 49152, in: 576 },
  ];
  const cases = [];
  for (const w of weights) {
    // 8 tokens: a short prompt's prefill, where forward-only work uses kernel b; 128 and 512: training and long
    // prefill, where it uses kernel a (src/kernels/quant.h WL_QGEMM_INT_MAX_ROWS)
    for (const M of [8, 128, 512]) {
      cases.push({ w, op: 'forward Y = X W^T', M, forward: 1, kinds: ['f32', 'q8', 'q4', 'q8_int', 'q4_int'] });
      if (M > 8) cases.push({ w, op: 'input gradient dX = dY W', M, forward: 0, kinds: ['f32', 'q8', 'q4'] });
    }
    cases.push({ w, op: 'decode y = x W^T', M: 1, forward: 1, kinds: ['f32', 'q8', 'q4'] });
  }
  const maxW = Math.max(...weights.map((w) => w.out * w.in));
  const maxAC = 512 * Math.max(...weights.map((w) => Math.max(w.out, w.in)));
  const pW = ex.wl_malloc(4 * maxW) >>> 0, pA = ex.wl_malloc(4 * maxAC) >>> 0, pC = ex.wl_malloc(4 * maxAC) >>> 0;
  if (!pW || !pA || !pC) throw new Error('benchQuantGemm: out of wasm memory');
  let seed = 99;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) / (1 << 24) - 0.5;
  };
  const fill = (p, n) => {
    const v = new Float32Array(memory.buffer, p, n);
    for (let i = 0; i < n; i++) v[i] = rnd();
  };
  fill(pW, maxW);
  fill(pA, maxAC);
  const peaks = peakSampler(ex);
  const samplePeak = peaks.sample;
  const rows = [];
  for (const w of weights) {
    const q = { q8: ex.wl_bench_qweight_make(STORAGE.q8, w.out, w.in, pW) >>> 0, q4: ex.wl_bench_qweight_make(STORAGE.q4, w.out, w.in, pW) >>> 0 };
    if (!q.q8 || !q.q4) throw new Error('benchQuantGemm: could not quantise the weight');
    for (const c of cases.filter((x) => x.w === w)) {
      const N = c.forward ? w.out : w.in, K = c.forward ? w.in : w.out;
      const flops = 2 * c.M * N * K;
      const reps = Math.max(1, Math.round(SAMPLE_FLOPS / flops));
      const qgemm = (qw, op) => () => { if (ex.wl_bench_qgemm(qw, op, c.M, pA, pC, reps) !== 0) throw new Error('bench panel'); };
      const runs = {
        f32: () => ex.wl_bench_sgemm(0, c.forward, c.M, N, K, 1.0, pA, K, pW, w.in, 0.0, pC, N, reps),
        q8: qgemm(q.q8, c.forward), q4: qgemm(q.q4, c.forward), q8_int: qgemm(q.q8, 2), q4_int: qgemm(q.q4, 2),
      };
      const kinds = c.kinds;
      const ms = Object.fromEntries(kinds.map((d) => [d, []]));
      const n = flops * reps > 2e9 ? Math.max(3, samples >> 2) : samples;
      // f32 first: its result is the reference the quantised results are checked against
      runs.f32();
      const ref = new Float32Array(memory.buffer, pC, c.M * N).slice();
      const rel = {};
      for (const d of kinds.slice(1)) {
        runs[d]();
        const got = new Float32Array(memory.buffer, pC, c.M * N);
        let num = 0, den = 0;
        for (let i = 0; i < ref.length; i++) {
          num += (got[i] - ref[i]) ** 2;
          den += ref[i] ** 2;
        }
        rel[d] = Math.sqrt(num / den);
      }
      // quantisation error of random weights: q8 about 1%, q4 about 8% (relative RMS); far beyond means broken
      for (const d of kinds.slice(1)) {
        if (!(rel[d] < (d.startsWith('q8') ? 0.05 : 0.3))) throw new Error(`benchQuantGemm: ${w.name} ${c.op} ${d} is wrong (${rel[d]})`);
      }
      for (let s = 0; s < n; s++) {
        samplePeak();
        for (const d of kinds) {
          const t0 = performance.now();
          runs[d]();
          ms[d].push(performance.now() - t0);
        }
      }
      const gf = (d) => +((reps * flops) / (Math.min(...ms[d]) / 1e3) / 1e9).toFixed(2);
      const row = { weight: w.name, op: c.op, M: c.M, N, K };
      for (const d of kinds) row[`${d}_gflops`] = gf(d);
      for (const d of kinds.slice(1)) row[`${d}_vs_f32`] = +(gf(d) / gf('f32')).toFixed(3);
      for (const d of kinds.slice(1)) row[`${d}_rel_rms_vs_f32`] = +rel[d].toExponential(2);
      row.median_gflops = Object.fromEntries(kinds.map((d) => [d, +((reps * flops) / (median(ms[d]) / 1e3) / 1e9).toFixed(2)]));
      rows.push(row);
      options.log?.(`  ${w.name}, ${c.op}, M ${c.M}: ${kinds.map((d) => `${d} ${gf(d)}`).join(', ')} GFLOPS`);
    }
    ex.wl_bench_qweight_free(q.q8);
    ex.wl_bench_qweight_free(q.q4);
  }
  ex.wl_free_ptr(pW);
  ex.wl_free_ptr(pA);
  ex.wl_free_ptr(pC);
  const peak = peaks.best();
  return {
    method: 'one thread; best of short samples taken in turns (f32, each quantised kind and a peak sample); q8 / q4: '
      + 'kernel (a), the weight dequantised panel by panel into the f32 GEMM; q8_int / q4_int: kernel (b), activations '
      + 'quantised per row to int16 and i32x4.dot_i16x8_s with the int16-widened weight; decoding (M = 1) reads the '
      + 'blocks in the integer GEMV',
    peak_instructions: peaks.name,
    peak_gflops: +peak.toFixed(2),
    products: rows.map((r) => ({
      ...r,
      ...Object.fromEntries(['q8', 'q4', 'q8_int', 'q4_int'].filter((d) => r[`${d}_gflops`] !== undefined)
        .map((d) => [`${d}_ratio_to_peak`, +(r[`${d}_gflops`] / peak).toFixed(3)])),
    })),
  };
}

/**
 * Multiply-adds per CPU-second of one register tile (src/wasm/bench.c WL_TILE_LOOP) with each instruction a product
 * can be built on: f32x4.relaxed_madd (the f32 GEMM's), i32x4.dot_i16x8_s + add (kernel (b)'s) and relaxed
 * SIMD's i32x4.relaxed_dot_i8x16_i7x16_add_s (whose second operand must fit in 7 bits). What an integer product can
 * gain over the f32 one on this machine. Best of `rounds` samples taken in turns.
 * @param {any} ex exports of the relaxed-SIMD bench build
 */
export function benchDotTiles(ex, { rounds = 9, iters = 4e5 } = {}) {
  if (!ex.wl_bench_tile_madd) return { measured: false, reason: 'needs the relaxed-SIMD bench build' };
  const loops = {
    f32_relaxed_madd: [ex.wl_bench_tile_madd, 36], i16_dot_add: [ex.wl_bench_tile_i16, 72],
    i8_relaxed_dot: [ex.wl_bench_tile_i8, 144],
  };
  const best = {};
  for (const [name, [fn]] of Object.entries(loops)) {
    fn(iters); // compiled by V8's optimising tier before timing
    best[name] = 0;
  }
  for (let r = 0; r < rounds; r++) {
    for (const [name, [fn, macs]] of Object.entries(loops)) {
      const { cpu } = timeSample(() => fn(iters));
      if (cpu > 0) best[name] = Math.max(best[name], (iters * macs) / (cpu / 1e3) / 1e9);
    }
  }
  return {
    measured: true,
    method: 'one register tile (3 x 3 vectors, 9 accumulators, operands loaded from L1) per instruction; best of '
      + `${rounds} samples taken in turns, by CPU time; vs_f32 = rate / the f32x4.relaxed_madd rate`,
    giga_multiply_adds_per_second: Object.fromEntries(Object.entries(best).map(([k, v]) => [k, +v.toFixed(2)])),
    vs_f32: Object.fromEntries(Object.entries(best).map(([k, v]) => [k, +(v / best.f32_relaxed_madd).toFixed(3)])),
  };
}
