// gemm.js: GEMM throughput of the wasm SIMD kernels on the model's shapes, next to the machine's register-bound
// f32x4 mul+add peak measured in the same run (exports from src/wasm/bench.c).

const SHAPES = [
  { M: 128, K: 576, N: 576 },
  { M: 128, K: 576, N: 1536 },
  { M: 128, K: 1536, N: 576 },
  { M: 128, K: 576, N: 49152 },
];

const MIN_SECONDS = 0.3;
const PEAK_FLOPS_PER_ITER = 96; // 12 f32x4 multiplies + 12 f32x4 adds (see wl_bench_peak)

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

// Process CPU time in ms where the platform offers it (Node): on a shared machine it is less disturbed by other
// processes than the wall clock, so it is reported beside it.
const cpuNow = globalThis.process?.cpuUsage
  ? () => {
      const u = globalThis.process.cpuUsage();
      return (u.user + u.system) / 1e3;
    }
  : null;

// Run fn(reps) with reps grown until one run takes >= MIN_SECONDS, then return the median rates (work per
// second by performance.now(), and by CPU time when available) of 3 such runs; work(reps) is one run's flops.
function measure(fn, work) {
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    fn(reps);
    const s = (performance.now() - t0) / 1e3;
    if (s >= MIN_SECONDS) break;
    reps = Math.max(reps + 1, Math.ceil(reps * Math.min(10, (1.2 * MIN_SECONDS) / Math.max(s, 1e-6))));
  }
  const wall = [];
  const cpu = [];
  for (let r = 0; r < 3; r++) {
    const c0 = cpuNow ? cpuNow() : 0;
    const t0 = performance.now();
    fn(reps);
    wall.push(work(reps) / ((performance.now() - t0) / 1e3));
    if (cpuNow) cpu.push(work(reps) / ((cpuNow() - c0) / 1e3));
  }
  return { wall: median(wall), cpu: cpuNow ? median(cpu) : null };
}

function measurePeak(ex) {
  // V8 first runs wasm in its baseline compiler (Liftoff) and switches a function to optimised code on a call
  // after it has used up its tiering budget: spend that budget before timing.
  for (let i = 0; i < 4; i++) ex.wl_bench_peak(200000);
  return measure((reps) => ex.wl_bench_peak(reps * 1e6), (reps) => reps * 1e6 * PEAK_FLOPS_PER_ITER);
}

/**
 * Measure GFLOPS of sgemm (through the default kernel table) for the model's four main shapes in the forward
 * (Y = X W^T) and backward (dX = dY W) orientations, one weight-gradient case (dW = dY^T X), and the f32x4
 * mul+add peak in the same run (before, between and after the GEMMs; the highest is reported, so ratios are
 * conservative when the clock moves). Rates come from performance.now() (median of 3 runs of >= 0.3 s each);
 * cpu_* fields repeat them by process CPU time under Node (null elsewhere).
 * @param {{exports: WebAssembly.Exports, memory: WebAssembly.Memory}} wasm
 * @returns {Promise<{peak_gflops: number, peak_samples_gflops: number[], cpu_peak_gflops: number|null,
 *   gemm: {M: number, K: number, N: number, orientation: string, trans_a: number, trans_b: number, gflops: number,
 *   ratio_to_peak: number, cpu_gflops: number|null, cpu_ratio_to_peak: number|null, max_rel_err: number}[]}>}
 */
export async function benchGemm(wasm) {
  const ex = wasm.exports;
  const memory = wasm.memory || ex.memory;
  if (!ex.wl_bench_peak || !ex.wl_bench_sgemm || !ex.wl_malloc || !ex.wl_free_ptr) {
    throw new Error('benchGemm: the wasm module lacks wl_bench_peak, wl_bench_sgemm, wl_malloc or wl_free_ptr');
  }
  const alloc = ex.wl_malloc;
  const free = ex.wl_free_ptr;

  const cases = [];
  for (const s of SHAPES) {
    // Forward: X (M, K) times W^T with W (N, K) row-major.
    cases.push({ ...s, orientation: 'forward Y = X W^T', ta: 0, tb: 1, lda: s.K, ldb: s.K });
  }
  for (const s of SHAPES) {
    // Backward data gradient: dY (M, K) times W (K, N) row-major.
    cases.push({ ...s, orientation: 'backward dX = dY W', ta: 0, tb: 0, lda: s.K, ldb: s.N });
  }
  // Weight gradient of a 576 -> 1536 layer over 128 tokens: dW (1536, 576) = dY^T X, dY (128, 1536), X (128, 576).
  cases.push({ M: 1536, K: 128, N: 576, orientation: 'weight grad dW = dY^T X', ta: 1, tb: 0,
    lda: 1536, ldb: 576 });

  // One set of buffers large enough for every case; views are made after all allocations (memory may grow).
  const maxA = Math.max(...cases.map((c) => c.M * c.K));
  const maxB = Math.max(...cases.map((c) => c.K * c.N));
  const maxC = Math.max(...cases.map((c) => c.M * c.N));
  const pA = alloc(maxA * 4) >>> 0;
  const pB = alloc(maxB * 4) >>> 0;
  const pC = alloc(maxC * 4) >>> 0;
  if (!pA || !pB || !pC) throw new Error('benchGemm: out of wasm memory');
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

  const peaks = [measurePeak(ex)];
  const results = [];
  for (const c of cases) {
    if (c === cases[cases.length >> 1]) peaks.push(measurePeak(ex));
    const { M, N, K, ta, tb, lda, ldb } = c;
    const run = (reps) => ex.wl_bench_sgemm(ta, tb, M, N, K, 1.0, pA, lda, pB, ldb, 0.0, pC, N, reps);
    run(1);
    run(1);
    const rate = measure(run, (reps) => 2 * M * N * K * reps);
    // Spot-check a few entries against a double-precision dot product, so a broken kernel cannot post a time.
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
    if (!(maxRel < 1e-4)) {
      throw new Error(`benchGemm: ${M}x${K}->${N} ${c.orientation} is wrong (relative error ${maxRel})`);
    }
    results.push({ M, K, N, orientation: c.orientation, trans_a: ta, trans_b: tb, gflops: rate.wall / 1e9,
      cpu_gflops: rate.cpu === null ? null : rate.cpu / 1e9, max_rel_err: maxRel });
  }
  peaks.push(measurePeak(ex));
  free(pA);
  free(pB);
  free(pC);

  const round = (x, d) => (x === null ? null : +x.toFixed(d));
  const peak = Math.max(...peaks.map((p) => p.wall)) / 1e9;
  const cpuPeak = cpuNow ? Math.max(...peaks.map((p) => p.cpu)) / 1e9 : null;
  for (const r of results) {
    r.ratio_to_peak = round(r.gflops / peak, 3);
    r.cpu_ratio_to_peak = cpuNow ? round(r.cpu_gflops / cpuPeak, 3) : null;
    r.gflops = round(r.gflops, 2);
    r.cpu_gflops = round(r.cpu_gflops, 2);
  }
  return {
    peak_gflops: round(peak, 2),
    peak_samples_gflops: peaks.map((p) => round(p.wall / 1e9, 2)),
    cpu_peak_gflops: round(cpuPeak, 2),
    gemm: results,
  };
}
