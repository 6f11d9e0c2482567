// The core's thread pool under Node: training, gradients, decoding and the adapter files are bit-identical for 1,
// 2, 3 and 4 threads (1 thread runs weblora.wasm, more run weblora-threads.wasm on a shared memory), in both SIMD
// flavours (SIMD128 and relaxed SIMD), on the real stories260K model and on a wider synthetic model whose GEMMs take
// every blocked path (several k blocks, thin LoRA-gradient outputs, transposed short outputs); the `threads` and
// `simd` options and engine.info; the client's worker reports its threads.
import { describe, test, expect, afterAll } from '@jest/globals';
import { createHash } from 'node:crypto';
import v8 from 'node:v8';

import { LocalEngine } from '../../web/engine/engine.js';
import { WebLoRA } from '../../web/runtime/client.js';
import { Adapter, Arch, Core } from '../../web/core/core.js';
import { Trainer } from '../../web/engine/train.js';
import { Rng } from '../../web/engine/rng.js';
import { sharedPath, wasmSource } from './helpers/core.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TOKENIZER = sharedPath('models/stories260K/tok512.bin');
const TEXT = [
  'Tom had a small red boat. Every morning he took the boat to the pond and sailed it with his sister Sue.',
  'One day the wind was strong and the boat went far away. Sue ran around the pond and caught it.',
  'Tom said thank you and they sailed the red boat together until the sun went down.',
];
const THREADS = [1, 2, 3, 4];

// Node 20 validates relaxed SIMD only behind this flag (Node 22 has it on); set before any module compiles, it applies
// to this process and the thread workers it starts.
v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const FLAVOURS = ['simd128', 'relaxed'];
/** stories260K losses of each flavour, to compare the flavours with each other. */
const flavourLosses = {};

const sha = (bytes) => createHash('sha256').update(bytes).digest('hex');
const bytesOf = (view) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();

/** The first index where two byte arrays differ, or -1. */
function firstDifference(a, b) {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

const engines = [];
afterAll(() => engines.forEach((e) => e.dispose()));

describe.each(FLAVOURS)('bit-identical results for any number of threads (%s)', (simd) => {
  test('stories260K: LoRA training (AdamW, dropout; embedding, block and head modules), gradients, evaluation, generation and PEFT files', async () => {
    const runs = [];
    for (const threads of THREADS) {
      const e = await LocalEngine.load(STORIES, { wasmSource: wasmSource(), tokenizer: TOKENIZER, threads, simd });
      engines.push(e);
      expect(e.info().threads).toBe(threads);
      expect(e.info().threadsNote).toBeNull();
      expect(e.info().simd).toBe(simd);
      const a = e.createAdapter({ rank: 4, alpha: 8, targets: ['embed_tokens', 'q_proj', 'v_proj', 'down_proj', 'lm_head'], seed: 5, dropout: 0.1 });
      const losses = [];
      const summary = await e.train(a.id, TEXT, { steps: 6, batchSize: 2, seqLen: 24, evalSplit: 0.2, seed: 3, lr: 5e-3,
        onStep: (s) => losses.push(s.loss, s.gradNorm) });
      // One more forward/backward to read the gradients themselves.
      const { adapter } = e.entry(a.id);
      const seq = e.prepareData(TEXT, { seqLen: 24 }).train.at(0);
      e.model.setAdapters([adapter]);
      e.model.reserve(1, 24, { train: true });
      e.model.setTrainable(adapter);
      adapter.zeroGrad();
      e.model.forward(seq.tokens, { targets: seq.targets, train: true });
      e.model.backward();
      const grads = bytesOf(adapter.grads());
      e.model.setTrainable(null);
      const generated = await e.generate('Once upon a time', { adapter: a.id, maxTokens: 24, temperature: 0.8, seed: 9 });
      const files = e.exportAdapter(a.id).files;
      runs.push({ threads, losses: new Float64Array(losses), evalLoss: summary.evalLoss, grads, text: generated.text,
        weights: files['adapter_model.safetensors'] });
    }
    const [ref] = runs;
    expect(ref.losses.length).toBe(12);
    for (const run of runs.slice(1)) {
      expect([run.threads, [...run.losses]]).toEqual([run.threads, [...ref.losses]]);
      expect([run.threads, run.evalLoss]).toEqual([run.threads, ref.evalLoss]);
      expect([run.threads, firstDifference(run.grads, ref.grads)]).toEqual([run.threads, -1]);
      expect([run.threads, run.text]).toEqual([run.threads, ref.text]);
      expect([run.threads, sha(run.weights)]).toEqual([run.threads, sha(ref.weights)]);
    }
    flavourLosses[simd] = ref.losses;
    console.log(`stories260K (${simd}) with 1-4 threads: losses ${[...ref.losses.filter((_, i) => i % 2 === 0)].map((x) => x.toFixed(4)).join(' ')}, `
      + `adapter sha256 ${sha(ref.weights).slice(0, 16)}, identical`);
  }, 120_000);

  test('a wider model: every GEMM path of a LoRA step on all linear modules, full forward logits and decoding', async () => {
    const cfg = { arch: Arch.LLAMA, dim: 160, hiddenDim: 560, nLayers: 2, nHeads: 5, nKvHeads: 1, headDim: 32,
      vocabSize: 1300, maxSeqLen: 64, tiedEmbeddings: 0, qkvBias: 0, ropeLayout: 0, ropeTheta: 10000, normEps: 1e-5,
      bosId: 1, eosId: 2 };
    const rng = new Rng(4);
    const seqs = Array.from({ length: 6 }, () => {
      const tokens = Int32Array.from({ length: 40 }, () => rng.int(cfg.vocabSize));
      const targets = Int32Array.from({ length: 40 }, () => rng.int(cfg.vocabSize));
      return { tokens, targets, valid: 40 };
    });
    const results = [];
    for (const threads of THREADS) {
      const core = await Core.create({ source: wasmSource(), threads, simd });
      expect(core.threads).toBe(threads);
      expect(core.simd).toBe(simd);
      const model = core.createModel(cfg);
      const fill = new Rng(11);
      for (const t of model.tensors()) {
        const v = model.tensorView(t);
        for (let i = 0; i < v.length; i++) v[i] = t.ndim === 1 ? 1 + 0.1 * (fill.next() - 0.5) : (fill.next() - 0.5) * 0.15;
      }
      const S = model.modules().length;
      const ranks = new Int32Array(cfg.nLayers * S).fill(8);
      const alphas = new Float32Array(cfg.nLayers * S).fill(16);
      const adapter = Adapter.create(model, { ranks, alphas });
      const p = adapter.params();
      for (let i = 0; i < p.length; i++) p[i] = (fill.next() - 0.5) * 0.1;
      const trainer = new Trainer({ model, adapter, train: seqs, options: { steps: 3, batchSize: 3, seqLen: 40, evalSplit: 0, lr: 1e-2 } });
      const losses = [trainer.trainStep().loss, trainer.trainStep().loss, trainer.trainStep().loss];
      trainer.dispose();
      model.reserve(2, 40);
      model.forward(Int32Array.from([...seqs[0].tokens, ...seqs[1].tokens]), { B: 2, T: 40 });
      const logits = bytesOf(model.logits());
      model.reserve(1, 48, { lastLogits: true });
      model.forward(seqs[2].tokens.subarray(0, 30), { lastLogits: true });
      for (let t = 0; t < 4; t++) model.forward([seqs[3].tokens[t]], { pos0: 30 + t });
      const decoded = bytesOf(model.logits());
      results.push({ threads, losses, logits, decoded, adapter: bytesOf(adapter.params()) });
      model.setAdapters([]);
      adapter.free();
      model.free();
      await core.stopThreads();
    }
    const [ref] = results;
    for (const r of results.slice(1)) {
      expect([r.threads, r.losses]).toEqual([r.threads, ref.losses]);
      expect([r.threads, firstDifference(r.logits, ref.logits)]).toEqual([r.threads, -1]);
      expect([r.threads, firstDifference(r.decoded, ref.decoded)]).toEqual([r.threads, -1]);
      expect([r.threads, firstDifference(r.adapter, ref.adapter)]).toEqual([r.threads, -1]);
    }
  }, 120_000);
});

describe('the simd option', () => {
  test('both flavours train the same model alike; engine.info.simd reports what runs; bad values are refused', async () => {
    // The flavours differ only in rounding (one fused multiply-add against a multiply and an add): over 6 steps of
    // stories260K the losses measured 7.2e-7 apart at most; the bound leaves a factor 100 above that, and a flavour
    // that dropped or misweighted a term of its GEMM would be off by far more.
    expect(flavourLosses.simd128?.length).toBe(12);
    expect(flavourLosses.relaxed?.length).toBe(12);
    let most = 0;
    for (let i = 0; i < 12; i += 2) most = Math.max(most, Math.abs(flavourLosses.relaxed[i] - flavourLosses.simd128[i]));
    console.log(`stories260K losses, relaxed against simd128: at most ${most.toExponential(2)} apart`);
    expect(most).toBeLessThan(1e-4);
    expect(flavourLosses.relaxed).not.toEqual(flavourLosses.simd128);
    await expect(LocalEngine.load(STORIES, { simd: 'avx' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(LocalEngine.load(STORIES, { simd: 'avx' })).rejects.toThrow(/simd must be one of 'auto', 'relaxed', 'simd128'/);
    const e = await LocalEngine.load(STORIES, { wasmSource: wasmSource(), tokenizer: TOKENIZER, threads: 1 });
    engines.push(e);
    expect(e.info().simd).toBe('relaxed'); // 'auto' with relaxed SIMD validated
  });
});

describe('the threads option', () => {
  test('engine.info.threads reports what runs; bad values are refused with a clear error', async () => {
    await expect(LocalEngine.load(STORIES, { threads: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(LocalEngine.load(STORIES, { threads: 1.5 })).rejects.toThrow(/threads must be 'auto' or a whole number/);
    await expect(LocalEngine.load(STORIES, { threads: 'many' })).rejects.toThrow(/threads/);
    const e = await LocalEngine.load(STORIES, { wasmSource: wasmSource(), tokenizer: TOKENIZER });
    engines.push(e);
    const os = await import('node:os');
    expect(e.info().threads).toBe(Math.min(8, os.availableParallelism()));
  });

  test('the client loads its worker with threads and says how many run', async () => {
    const engine = await WebLoRA.load(STORIES, { tokenizer: TOKENIZER, threads: 3 });
    try {
      expect(engine.info.threads).toBe(3);
      expect(engine.info.threadsNote).toBeNull();
      const a = await engine.createAdapter({ rank: 2 });
      const run = engine.train(a, TEXT, { steps: 2, batchSize: 1, seqLen: 16, evalSplit: 0 });
      await expect(run.done).resolves.toMatchObject({ steps: 2 });
    } finally {
      await engine.dispose();
    }
  });
});
