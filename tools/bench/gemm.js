// gemm.js: GEMM throughput of the wasm SIMD kernels, one thread, on every GEMM shape of a LoRA step on
// SmolLM2-135M (the forward X W^T and input gradient dY W of each linear module and the LM head, and the weight
// products and gradients of the LoRA factors, for 128 and 512 tokens), next to the machine's register-bound peak of the
// instruction set the kernel uses, measured in the same run (exports from src/wasm/bench.c): f32x4.mul + f32x4.add for
// the SIMD128 build, f32x4.relaxed_madd for the relaxed-SIMD build (whose GEMM uses it). For the products with a frozen weight it also times the
// GEMM's packing of that weight alone: the most pre-packing the weight once at load time could save on that shape
// (in training steps pre-packed weights ran no faster: see src/kernels/wasmsimd/gemm.c).
//
// The cores this runs on are shared, and other processes steal time and caches, at times for minutes on end. So every
// rate is the best of many short samples, each taken between two samples of the peak, and its ratio to the peak is
// to the best of the peak samples taken with it: a shape measured in a slow minute is compared with the peak of that
// minute (the ratio to the best peak of the whole run stands beside it); medians are reported beside them. A shape's
// samples are spread over 3 sweeps of all the shapes, so a slow stretch takes some of each shape's samples (in one
// sweep of 48 samples per shape, a stretch of slow minutes read 0.6-0.7 for a row of shapes that read 0.85-0.9
// before and after). Each
// sample is timed by the process's CPU time (the core runs on this thread alone) and by the wall
// clock: a sample longer than the scheduler's time slice (the LM head's 60-600 ms) is always cut by other programs
// when they share the cores, so its wall-clock rate measures the machine's load, not the kernel (on this machine's
// loaded cores the LM head read 0.29-0.40 of the peak by wall clock where its CPU time read 0.76-0.81). Ratios to the
// peak come from CPU time; the wall-clock rates stand beside them.

const DIM = 576;
const HIDDEN = 1536;
const KV = 192;
const VOCAB = 49152;
/** LoRA ranks whose factor products are measured. */
const RANKS = [8, 16];
/** Weights (out, in) of the model's linear layers and head. */
const WEIGHTS = [
  { name: 'q_proj, o_proj', out: DIM, in: DIM },
  { name: 'k_proj, v_proj', out: KV, in: DIM },
  { name: 'gate_proj, up_proj', out: HIDDEN, in: DIM },
  { name: 'down_proj', out: DIM, in: HIDDEN },
  { name: 'lm_head', out: VOCAB, in: DIM },
];

const PEAK_FLOPS_PER_ITER = 96; // 12 f32x4 multiply-adds of 4 lanes (see wl_bench_peak)
const PEAK_ITERS = 50000; // about 1 ms
// About 0.2 ms of GEMM per sample, as long as a peak sample: on shared cores a longer sample is more often cut by
// another process, which would bias the ratio of the best samples against the GEMM.
const SAMPLE_FLOPS = 1e7;
/** Sweeps over all the shapes, each taking a share of every shape's samples. */
const SWEEPS = 3;

/**
 * Samples of the machine's f32x4 peak for the instructions this build's GEMM uses (wl_bench_peak_madd in the
 * relaxed-SIMD build, wl_bench_peak's multiply then add otherwise), taken in turns with the products they are
 * compared with; with fused multiply-adds the mul + add peak is sampled beside it. Warmed up when made: V8 first runs
 * wasm in its baseline compiler and switches to optimised code after a tiering budget.
 * @param {any} ex the core's exports
 */
export function peakSampler(ex) {
  const fused = !!ex.wl_bench_peak_madd;
  const peakLoop = fused ? ex.wl_bench_peak_madd : ex.wl_bench_peak;
  for (let i = 0; i < 5; i++) {
    peakLoop(PEAK_ITERS);
    ex.wl_bench_peak(PEAK_ITERS);
  }
  const ms = { wall: [], cpu: [] };
  const mulAddMs = { wall: [], cpu: [] };
  const perMs = (PEAK_ITERS * PEAK_FLOPS_PER_ITER) / 1e6;
  const record = (into, t) => {
    into.wall.push(t.wall);
    into.cpu.push(t.cpu);
  };
  return {
    fused,
    name: fused ? 'f32x4.relaxed_madd' : 'f32x4.mul + f32x4.add',
    /** Takes a sample of each peak; returns the GFLOPS by CPU time of this build's. */
    sample() {
      const t = timeSample(() => peakLoop(PEAK_ITERS));
      record(ms, t);
      if (fused) record(mulAddMs, timeSample(() => ex.wl_bench_peak(PEAK_ITERS)));
      return perMs / t.cpu;
    },
    /** GFLOPS of the best sample, and of the median one, by `clock` ('wall' by default, or 'cpu') */
    best: (clock = 'wall') => perMs / Math.min(...ms[clock]),
    median: (clock = 'wall') => perMs / median(ms[clock]),
    mulAddBest: (clock = 'wall') => perMs / Math.min(...mulAddMs[clock]),
  };
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e3;
};

/**
 * Milliseconds fn took by the wall clock and by the process's CPU time. With the core on this thread alone, the CPU
 * time is the time fn ran on a core, whatever else the machine was running.
 * @param {() => void} fn
 */
export function timeSample(fn) {
  const t0 = performance.now();
  const c0 = cpuMs();
  fn();
  const cpu = cpuMs() - c0;
  return { wall: performance.now() - t0, cpu };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** The GEMMs of one LoRA step on n tokens, as (trans_a, trans_b, M, N, K, lda, ldb). */
export function loraStepShapes(tokens) {
  const cases = [];
  for (const w of WEIGHTS) {
    cases.push({ tokens, weight: w.name, op: 'forward Y = X W^T', ta: 0, tb: 1, M: tokens, N: w.out, K: w.in, lda: w.in, ldb: w.in });
  }
  for (const w of WEIGHTS) {
    cases.push({ tokens, weight: w.name, op: 'input gradient dX = dY W', ta: 0, tb: 0, M: tokens, N: w.in, K: w.out, lda: w.out, ldb: w.in });
  }
  // LoRA on q and v: xa = X A^T (tokens, r) in the forward pass, dxa = s dY B (tokens, r) in the backward one (the
  // products by the other factor, s xa B^T and dxa A, run as extra terms of the weight's own GEMM).
  for (const rank of RANKS) {
    cases.push({ tokens, rank, weight: 'q_proj, v_proj', op: 'LoRA forward X A^T', ta: 0, tb: 1, M: tokens, N: rank, K: DIM, lda: DIM, ldb: DIM });
    for (const out of [DIM, KV]) {
      cases.push({ tokens, rank, weight: out === DIM ? 'q_proj' : 'v_proj', op: 'LoRA input gradient dY B', ta: 0, tb: 0, M: tokens, N: rank, K: out, lda: out, ldb: rank });
    }
    // dB (out, r) += s dY^T (X A^T), dA (r, in) += (dY B)^T X.
    for (const out of [DIM, KV]) {
      cases.push({ tokens, rank, weight: out === DIM ? 'q_proj' : 'v_proj', op: 'LoRA dB = dY^T (X A^T)', ta: 1, tb: 0, M: out, N: rank, K: tokens, lda: out, ldb: rank });
    }
    cases.push({ tokens, rank, weight: 'q_proj, v_proj', op: 'LoRA dA = (dY B)^T X', ta: 1, tb: 0, M: rank, N: DIM, K: tokens, lda: rank, ldb: DIM });
  }
  return cases;
}

/**
 * GFLOPS of the default kernel table's GEMM for every LoRA-step shape at 128 and 512 tokens, and the peak of the
 * instruction set it uses (the relaxed-SIMD build exports wl_bench_peak_madd: its GEMM multiplies and adds with
 * f32x4.relaxed_madd, so that is its peak; the SIMD128 build's is the f32x4.mul + f32x4.add one).
 * @param {{exports: any, memory: WebAssembly.Memory}} wasm a single-threaded core instance
 * @param {{ samples?: number, log?: (s: string) => void }} [options]
 */
export async function benchGemm(wasm, options = {}) {
  const ex = wasm.exports;
  const memory = wasm.memory || ex.memory;
  if (!ex.wl_bench_peak || !ex.wl_bench_sgemm || !ex.wl_malloc || !ex.wl_free_ptr) {
    throw new Error('benchGemm: the wasm module lacks wl_bench_peak, wl_bench_sgemm, wl_malloc or wl_free_ptr');
  }
  const samples = options.samples ?? 48;
  const cases = [...loraStepShapes(128), ...loraStepShapes(512)];
  const maxA = Math.max(...cases.map((c) => c.M * c.K));
  const maxB = Math.max(...cases.map((c) => c.K * c.N));
  const maxC = Math.max(...cases.map((c) => c.M * c.N));
  const pA = ex.wl_malloc(maxA * 4) >>> 0;
  const pB = ex.wl_malloc(maxB * 4) >>> 0;
  const pC = ex.wl_malloc(maxC * 4) >>> 0;
  const pPack = ex.wl_malloc((maxB + 8 * 1536) * 4) >>> 0;
  if (!pA || !pB || !pC || !pPack) throw new Error('benchGemm: out of wasm memory');
  const view = (p, n) => new Float32Array(memory.buffer, p, n);
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) / (1 << 24) - 0.5;
  };
  for (const [p, n] of [[pA, maxA], [pB, maxB]]) {
    const v = view(p, n);
    for (let i = 0; i < n; i++) v[i] = rnd();
  }

  // A shape's work per sample: reps calls of `flops` each, about SAMPLE_FLOPS.
  const work = (c) => {
    const flops = 2 * c.M * c.N * c.K;
    return { flops, reps: Math.max(1, Math.round(SAMPLE_FLOPS / flops)) };
  };
  const hasWeight = (c) => c.op.startsWith('forward') || c.op.startsWith('input');
  const peaks = peakSampler(ex);
  const samplePeak = peaks.sample;
  // Every shape's samples are spread over SWEEPS sweeps of all the shapes, so that a slow stretch of minutes on the
  // shared cores takes a part of each shape's samples rather than all of one shape's.
  const state = cases.map(() => ({ ms: { wall: [], cpu: [] }, packMs: [], casePeaks: [], sweepRatios: [], maxRel: null }));
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    for (const [ci, c] of cases.entries()) {
      const { M, N, K, ta, tb, lda, ldb } = c;
      const st = state[ci];
      const { flops, reps } = work(c);
      const run = () => ex.wl_bench_sgemm(ta, tb, M, N, K, 1.0, pA, lda, pB, ldb, 0.0, pC, N, reps);
      run();
      // The LM head takes 150-600 ms a call: fewer samples there.
      const n = Math.max(2, Math.round((flops > 2e9 ? Math.max(4, samples >> 3) : samples) / SWEEPS));
      const pack = () => ex.wl_bench_pack_b(tb, pB, ldb, N, K, pPack, reps);
      let sweepBest = Infinity, sweepPeak = 0;
      for (let s = 0; s < n; s++) {
        const before = samplePeak();
        const t = timeSample(run);
        const after = samplePeak();
        st.ms.wall.push(t.wall);
        st.ms.cpu.push(t.cpu);
        st.casePeaks.push(before, after);
        sweepBest = Math.min(sweepBest, t.cpu);
        sweepPeak = Math.max(sweepPeak, before, after);
        if (hasWeight(c)) st.packMs.push(timeSample(pack).cpu);
      }
      st.sweepRatios.push((reps * flops) / (sweepBest / 1e3) / 1e9 / sweepPeak);
      if (st.maxRel !== null) continue;
      // Spot-check entries against a double-precision dot product, so a broken kernel cannot post a time.
      const A = view(pA, maxA), B = view(pB, maxB), C = view(pC, M * N);
      let maxRel = 0;
      for (let t = 0; t < 16; t++) {
        const i = (t * 7919) % M, j = (t * 104729) % N;
        let sum = 0, mag = 0;
        for (let k = 0; k < K; k++) {
          const a = ta ? A[k * lda + i] : A[i * lda + k];
          const b = tb ? B[j * ldb + k] : B[k * ldb + j];
          sum += a * b;
          mag += Math.abs(a * b);
        }
        maxRel = Math.max(maxRel, Math.abs(C[i * N + j] - sum) / (mag + 1e-30));
      }
      if (!(maxRel < 1e-4)) throw new Error(`benchGemm: ${c.op} ${M}x${K}->${N} is wrong (relative error ${maxRel})`);
      st.maxRel = maxRel;
    }
  }
  const results = cases.map((c, ci) => {
    const { ms, packMs, casePeaks, sweepRatios, maxRel } = state[ci];
    const { flops, reps } = work(c);
    const rate = (t) => (reps * flops) / (t / 1e3);
    const best = Math.min(...ms.cpu);
    options.log?.(`  ${c.tokens} tokens, ${c.weight}, ${c.op}: ${(rate(best) / 1e9).toFixed(1)} GFLOPS`);
    return { ...c, best: rate(best), median: rate(median(ms.cpu)), wallBest: rate(Math.min(...ms.wall)), maxRel,
      casePeak: Math.max(...casePeaks), casePeakMedian: median(casePeaks), sweepRatios,
      packShare: hasWeight(c) ? Math.min(...packMs) / best : null };
  });
  ex.wl_free_ptr(pA);
  ex.wl_free_ptr(pB);
  ex.wl_free_ptr(pC);
  ex.wl_free_ptr(pPack);

  const peak = peaks.best('cpu');
  const peakMedian = peaks.median('cpu');
  const wallPeak = peaks.best('wall');
  const round = (x, d) => +x.toFixed(d);
  const peakName = peaks.name;
  return {
    method: `one thread; each rate is the best of many short samples (the median beside it) by CPU time, each taken `
      + `between two samples of the ${peakName} peak, the instruction set this build's GEMM uses; ratio_to_peak = best `
      + 'GEMM rate / best rate of the peak samples taken with that shape\'s (median_ratio_to_peak: the medians), by '
      + 'CPU time: other programs slow this machine for minutes at a time, so a shape measured then is compared with '
      + 'the peak of the same minutes; ratio_to_best_peak = best GEMM rate / best peak rate of the whole run; '
      + 'wall_ratio_to_peak the same by the wall clock (which counts other programs\' turns on a shared core). The '
      + `samples of each shape are spread over ${SWEEPS} sweeps of all the shapes; ratio_to_peak_by_sweep: the same `
      + 'ratio within each sweep',
    peak_instructions: peakName,
    peak_gflops: round(peak, 2),
    peak_median_gflops: round(peakMedian, 2),
    wall_peak_gflops: round(wallPeak, 2),
    ...(peaks.fused ? { mul_add_peak_gflops: round(peaks.mulAddBest('cpu'), 2) } : {}),
    gemm: results.map((r) => ({
      tokens: r.tokens, ...(r.rank ? { rank: r.rank } : {}), weight: r.weight, op: r.op, M: r.M, N: r.N, K: r.K, trans_a: r.ta, trans_b: r.tb,
      gflops: round(r.best / 1e9, 2), peak_gflops: round(r.casePeak, 2), ratio_to_peak: round(r.best / 1e9 / r.casePeak, 3),
      median_gflops: round(r.median / 1e9, 2), median_ratio_to_peak: round(r.median / 1e9 / r.casePeakMedian, 3),
      ratio_to_best_peak: round(r.best / 1e9 / peak, 3),
      ratio_to_peak_by_sweep: r.sweepRatios.map((x) => round(x, 3)),
      wall_gflops: round(r.wallBest / 1e9, 2), wall_ratio_to_peak: round(r.wallBest / 1e9 / wallPeak, 3),
      max_rel_err: r.maxRel,
      ...(r.packShare === null ? {} : {
        weight_packing_share: round(r.packShare, 3),
        ratio_to_peak_if_prepacked: round(r.best / (1 - r.packShare) / 1e9 / r.casePeak, 3),
      }),
    })),
    lowest_ratio_to_peak: round(Math.min(...results.map((r) => r.best / 1e9 / r.casePeak)), 3),
  };
}
