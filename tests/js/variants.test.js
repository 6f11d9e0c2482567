// Adapter variants through the engine on the wasm build: DoRA adapters (createAdapter({ dora }), train, generate,
// merge/unmerge, PEFT export and import with PEFT's lora_magnitude_vector keys and use_dora, and the operations
// that refuse DoRA clearly), and a DoRA adapter saved to IndexedDB and loaded back through the worker. Their logits and gradients against PyTorch are in core.golden.test.js (dora_* cases).
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { WebLoRA } from '../../web/index.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { Trainer } from '../../web/engine/train.js';
import { engineLogits, maxDiff, repoRoot, sharedPath, wasmSource } from './helpers/core.js';
import { GOLDEN } from './helpers/golden.js';
import { expectStoreRoundTrip, loraPlusSgdStep } from './helpers/steps.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TEXT = [
  'The owl sat on the old gate by the farm. The owl ate mice and slept in the hay.',
  'The owl sat on the old post by the road. The owl ate bugs and slept in the barn.',
  'The owl sat on the old wall by the pond. The owl ate frogs and slept in the reeds.',
  'The owl sat on the old roof by the mill. The owl ate seeds and slept in the loft.',
];
const IDS = [1, 403, 407, 261, 378, 430, 375, 259, 271, 297];

let engine;
beforeAll(async () => {
  engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource() });
});
afterAll(() => engine?.dispose());

const logits = (sel) => engineLogits(engine, IDS, sel);

/** A trained-looking DoRA adapter: random A and B, magnitudes 0.8 to 1.2 times ||W + s B A||_row. */
function randomDora(id, seed) {
  const adapter = engine.entry(id).adapter;
  const p = adapter.params();
  let s = seed;
  const next = () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return (s >>> 8) / 16777216;
  };
  for (let i = 0; i < p.length; i++) p[i] = (next() - 0.5) * 0.3;
  adapter.initDora(engine.model);
  for (const m of adapter.modules()) {
    const mag = adapter.view(m.magnitude, m.outFeatures);
    for (let i = 0; i < mag.length; i++) mag[i] *= 0.8 + 0.4 * next();
  }
  return adapter;
}

describe('DoRA through the engine', () => {
  test('a new DoRA adapter starts at the base model and trains; generation runs with it', async () => {
    const base = logits(null);
    const a = engine.createAdapter({ rank: 4, targets: 'all-linear', dora: true, seed: 3 });
    expect(a.dora).toBe(true);
    const adapter = engine.entry(a.id).adapter;
    expect(adapter.isDora).toBe(true);
    // Every magnitude is ||W||_row (B = 0), so the adapter computes the base function: the scaling by m / ||W|| = 1
    // and the bias added after it reorder a few float32 additions (measured 0 here); a magnitude off by 1% would
    // move logits by ~1e-2.
    expect(maxDiff(logits(a.id), base)).toBeLessThan(1e-5);
    const before = adapter.params().slice();
    const summary = await engine.train(a.id, TEXT, { steps: 6, lr: 5e-3, seqLen: 32, batchSize: 2, seed: 1 });
    expect(summary.trainLoss).toBeLessThan(summary.evalLossBefore ?? Infinity);
    // every kind of parameter moved, the magnitudes included
    let movedMagnitude = 0;
    for (const m of adapter.modules()) {
      const off = (m.magnitude - adapter.params().byteOffset) / 4;
      for (let i = 0; i < m.outFeatures; i++) movedMagnitude = Math.max(movedMagnitude, Math.abs(adapter.params()[off + i] - before[off + i]));
    }
    expect(movedMagnitude).toBeGreaterThan(1e-3);
    const g = await engine.generate('The owl', { adapter: a.id, maxTokens: 8, temperature: 0 });
    expect(g.ids.length).toBeGreaterThan(0);
    engine.freeAdapter(a.id);
  });

  test('merge equals the unmerged DoRA output; unmerge restores the weights bit for bit', () => {
    const a = engine.createAdapter({ rank: 4, targets: 'all-linear', dora: true, seed: 4 });
    randomDora(a.id, 17);
    const baseWeights = engine.model.params().slice();
    const baseLogits = logits(null);
    const unmerged = logits(a.id);
    expect(maxDiff(unmerged, baseLogits)).toBeGreaterThan(0.1); // the adapter matters
    engine.merge(a.id, 1);
    // (m / ||W + s B A||) (W + s B A) x against m / ||W + s B A|| (W x + s B A x): float32 sums in another order,
    // measured 2.7e-5 on logits up to ~20 (PyTorch's own float32 error on this model is 1.6e-5); 2e-4 as for plain
    // LoRA. The adapter moves the logits by 15.
    expect(maxDiff(logits(null), unmerged)).toBeLessThan(2e-4);
    expect(() => engine.merge(a.id, 0.5)).not.toThrow(); // merged already: nothing changes
    engine.unmerge(a.id);
    expect(Buffer.from(engine.model.params().slice().buffer).equals(Buffer.from(baseWeights.buffer))).toBe(true);
    expect(maxDiff(logits(null), baseLogits)).toBe(0);
    // a DoRA merge is defined for weight 1 only
    expect(() => engine.merge(a.id, 0.5)).toThrow(/weight 1/);
    engine.freeAdapter(a.id);
  });

  test('PEFT files: use_dora, lora_magnitude_vector per module, and identical logits after reading them back', () => {
    const a = engine.createAdapter({ rank: 2, targets: ['q_proj', 'k_proj', 'down_proj'], dora: true, seed: 5 });
    randomDora(a.id, 23);
    const want = logits(a.id);
    const { config, files } = engine.exportAdapter(a.id);
    expect(config.use_dora).toBe(true);
    const st = engine.core.parseSafetensors(files['adapter_model.safetensors']);
    const mags = st.tensors.filter((t) => t.name.endsWith('.lora_magnitude_vector'));
    expect(mags).toHaveLength(3 * engine.model.config.nLayers);
    expect(mags.map((t) => t.name)).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector');
    expect(mags.find((t) => t.name === 'base_model.model.model.layers.0.mlp.down_proj.lora_magnitude_vector').shape).toEqual([engine.model.config.dim]);
    const b = engine.importAdapter(files);
    expect(b.dora).toBe(true);
    // same factors and magnitudes (q/k rows permuted to Hugging Face order and back): the very same logits
    expect(maxDiff(logits(b.id), want)).toBe(0);
    // portable files fold the scales into lora_B and keep computing the same function
    const portable = engine.importAdapter(engine.exportAdapter(a.id, { portable: true }).files);
    // measured 0 (one alpha, nothing to fold); a factor folded into B would round B by an ulp: ~1e-6 on the logits
    expect(maxDiff(logits(portable.id), want)).toBeLessThan(1e-5);
    // magnitudes without use_dora, or use_dora without magnitudes, are refused
    const cfg = JSON.parse(files['adapter_config.json']);
    expect(() => engine.importAdapter({ ...files, 'adapter_config.json': JSON.stringify({ ...cfg, use_dora: false }) }))
      .toThrow(/used only when adapter_config.json has use_dora true/);
    const plain = engine.createAdapter({ rank: 2, targets: ['q_proj', 'k_proj', 'down_proj'], seed: 5 });
    const plainFiles = engine.exportAdapter(plain.id).files;
    expect(() => engine.importAdapter({ ...plainFiles, 'adapter_config.json': JSON.stringify({ ...JSON.parse(plainFiles['adapter_config.json']), use_dora: true }) }))
      .toThrow(/lora_magnitude_vector \(use_dora is true\)/);
    for (const x of [a, b, portable, plain]) engine.freeAdapter(x.id);
  });

  test('what DoRA does not support is refused clearly', async () => {
    const a = engine.createAdapter({ rank: 2, targets: ['q_proj', 'v_proj'], dora: true, seed: 6 });
    const p = engine.createAdapter({ rank: 2, targets: ['q_proj', 'v_proj'], seed: 6 });
    expect(() => engine.resize(a.id, { rank: 1 })).toThrow(/DoRA adapter cannot be resized/);
    expect(() => engine.combine([a.id, p.id], { type: 'cat' })).toThrow(/DoRA/);
    expect(() => engine.exportAdapter(a.id, { format: 'gguf' })).toThrow(/DoRA magnitudes/);
    expect(() => engine.useAdapters({ [a.id]: 0.5 })).toThrow(/DoRA adapter applies alone/);
    expect(() => engine.useAdapters([a.id, p.id])).toThrow(/DoRA adapter applies alone/);
    expect(() => engine.createAdapter({ rank: 2, dora: true, dropout: 0.1 })).toThrow(/dropout/);
    expect(() => engine.createAdapter({ rank: 2, dora: true, init: 'pissa' })).toThrow(/PiSSA/);
    expect(() => engine.createAdapter({ rank: 2, dora: 'yes' })).toThrow(/dora must be/);
    await expect(engine.train(a.id, TEXT, { steps: 1, seqLen: 32, dropout: 0.1 })).rejects.toThrow(/dropout/);
    engine.freeAdapter(a.id);
    engine.freeAdapter(p.id);
  });
});

describe('LoRA+ on a DoRA adapter', () => {
  test('one SGD step moves A by lr g, and B and the magnitudes (PEFT groups 1-D parameters with B) by ratio lr g', () => {
    const a = engine.createAdapter({ rank: 2, targets: ['q_proj', 'down_proj'], dora: true, seed: 8 });
    const adapter = randomDora(a.id, 29);
    const { model } = engine;
    const lr = 0.05, ratio = 8;
    const { before, grad, after, base } = loraPlusSgdStep(model, adapter, IDS, { lr, ratio });
    const rateOf = new Float32Array(before.length);
    for (const m of adapter.modules()) {
      rateOf.fill(lr, (m.A - base) / 4, (m.A - base) / 4 + m.rank * m.inFeatures);
      rateOf.fill(lr * ratio, (m.B - base) / 4, (m.B - base) / 4 + m.rank * m.outFeatures);
      rateOf.fill(lr * ratio, (m.magnitude - base) / 4, (m.magnitude - base) / 4 + m.outFeatures);
    }
    let worst = 0, movedMagnitude = 0;
    for (let i = 0; i < before.length; i++) {
      expect(rateOf[i]).toBeGreaterThan(0); // the groups cover every parameter
      worst = Math.max(worst, Math.abs(after[i] - Math.fround(before[i] - Math.fround(rateOf[i] * grad[i]))));
    }
    for (const m of adapter.modules()) {
      const off = (m.magnitude - base) / 4;
      for (let i = 0; i < m.outFeatures; i++) movedMagnitude = Math.max(movedMagnitude, Math.abs(after[off + i] - before[off + i]));
    }
    // p - (lr s) g in float32 both ways: at most an ulp of p apart (|p| < 20 here); a group at the wrong rate is off
    // by 7 lr |g| (> 1e-3 for the largest gradients).
    expect(worst).toBeLessThan(4e-6);
    expect(movedMagnitude).toBeGreaterThan(1e-4);
    engine.useAdapters(null);
    engine.freeAdapter(a.id);
  });
});

describe('DoRA through the worker and IndexedDB (fake-indexeddb)', () => {
  test('a trained DoRA adapter saved and loaded back generates the same tokens and stays DoRA', async () => {
    const remote = await WebLoRA.load(STORIES, { workerUrl: pathToFileURL(path.join(repoRoot, 'tests/js/helpers/idb-worker.js')).href });
    try {
      const a = await remote.createAdapter({ rank: 4, targets: ['q_proj', 'v_proj', 'down_proj'], dora: true, seed: 2 });
      await remote.train(a, TEXT, { steps: 4, lr: 1e-2, seqLen: 32, batchSize: 2, seed: 1, loraPlusRatio: 4 }).done;
      const b = await expectStoreRoundTrip(remote, a, 'owl-dora');
      expect(b.dora).toBe(true);
    } finally {
      await remote.dispose();
    }
  });
});

describe('MergedLinear on GPT-2 c_attn (enableLora)', () => {
  // The merged_gpt2_qv golden model (GPT-2, n_embd 12, 2 layers, vocab 24, real biases), copied without its adapter files.
  let gpt2;
  let dir;
  const TOKENS = [3, 17, 5, 21, 22, 9, 13, 2];
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'weblora-merged-'));
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(path.join(GOLDEN, 'merged_gpt2_qv', f), path.join(dir, f));
    gpt2 = await LocalEngine.load(dir, { wasmSource: wasmSource() });
  });
  afterAll(() => {
    gpt2?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const gptLogits = (sel) => {
    gpt2.useAdapters(sel);
    gpt2.model.reserve(1, TOKENS.length);
    gpt2.model.forward(TOKENS);
    return gpt2.model.logits().slice();
  };
  /** Largest |B| outside the (row block, column slice) pairs of q and v. */
  const outsideBlocks = (adapter) => {
    let worst = 0;
    for (const m of adapter.modules()) {
      const B = adapter.view(m.B, m.outFeatures * m.rank);
      const rows = m.outFeatures / 3, slice = m.rank / 2;
      for (let o = 0; o < m.outFeatures; o++) {
        const blk = Math.floor(o / rows);
        for (let c = 0; c < m.rank; c++) {
          const inside = (blk === 0 && c < slice) || (blk === 2 && c >= slice);
          if (!inside) worst = Math.max(worst, Math.abs(B[o * m.rank + c]));
        }
      }
    }
    return worst;
  };

  test('q and v blocks get their own rank-r factors and scale alpha / r; training leaves the k block and the cross '
    + 'slices at zero; merge and unmerge as for LoRA', () => {
    const whole = gpt2.createAdapter({ rank: 2, alpha: 4, targets: ['c_attn'], seed: 1 });
    expect(gpt2.entry(whole.id).adapter.modules()[0]).toMatchObject({ rank: 2, rowBlocks: 0 }); // today's whole-matrix LoRA
    const a = gpt2.createAdapter({ rank: 2, alpha: 4, targets: ['c_attn'], enableLora: ['q', 'v'], seed: 1 });
    expect(a.enableLora).toEqual(['q', 'v']);
    const adapter = gpt2.entry(a.id).adapter;
    for (const m of adapter.modules()) expect(m).toMatchObject({ rank: 4, rowBlocks: 3, blockMask: 5, scale: 2 });
    const base = gptLogits(null);
    expect(gptLogits(a.id)).toEqual(base); // B = 0
    gpt2.model.reserve(2, 4, { train: true });
    const seqs = [0, 1].map((i) => ({ tokens: Int32Array.from(TOKENS.slice(i * 4, i * 4 + 4)), targets: Int32Array.from(TOKENS.slice(i * 4 + 1, i * 4 + 5).concat([7]).slice(0, 4)), valid: 4 }));
    const trainer = new Trainer({ model: gpt2.model, adapter, train: seqs, options: { lr: 0.05, steps: 5, batchSize: 2, seqLen: 4 } });
    for (let i = 0; i < 5; i++) trainer.trainStep();
    trainer.dispose();
    expect(outsideBlocks(adapter)).toBe(0);
    let inside = 0;
    for (const m of adapter.modules()) for (const x of adapter.view(m.B, m.outFeatures * m.rank)) inside = Math.max(inside, Math.abs(x));
    expect(inside).toBeGreaterThan(1e-2); // the blocks themselves trained
    const unmerged = gptLogits(a.id);
    const weights = gpt2.model.params().slice();
    gpt2.merge(a.id);
    // plain LoRA's merge tolerance (tools.test.js): float32 sums in another order
    expect(maxDiff(gptLogits(null), unmerged)).toBeLessThan(2e-4);
    gpt2.unmerge(a.id);
    expect(Buffer.from(gpt2.model.params().slice().buffer).equals(Buffer.from(weights.buffer))).toBe(true);
    gpt2.freeAdapter(a.id);
    gpt2.freeAdapter(whole.id);
  });

  test('exported as a rank-stacked PEFT c_attn LoRA with zero B blocks, read back as MergedLinear with the same logits', () => {
    const a = gpt2.createAdapter({ rank: 2, alpha: 3, targets: ['c_attn'], enableLora: [true, false, true], seed: 2 });
    const adapter = gpt2.entry(a.id).adapter;
    const p = adapter.params();
    for (let i = 0; i < p.length; i++) p[i] = Math.sin(i) * 0.2;
    for (const m of adapter.modules()) adapter.setRowBlocks(m.index, 3, 5); // zero B outside the blocks again
    const want = gptLogits(a.id);
    const { config, files } = gpt2.exportAdapter(a.id);
    expect({ r: config.r, lora_alpha: config.lora_alpha, target_modules: config.target_modules }).toEqual({ r: 4, lora_alpha: 3, target_modules: ['c_attn'] });
    expect(gpt2.core.parseSafetensors(files['adapter_model.safetensors']).metadata['weblora.enable_lora']).toBe('q,v');
    const b = gpt2.importAdapter(files);
    expect(b.enableLora).toEqual(['q', 'v']);
    for (const m of gpt2.entry(b.id).adapter.modules()) expect(m).toMatchObject({ rank: 4, rowBlocks: 3, blockMask: 5, scale: 1.5 });
    expect(maxDiff(gptLogits(b.id), want)).toBe(0);
    // The metadata edited in place (same length, so the header stays valid): blocks the factors do not fit are
    // refused; without weblora's key (a file PEFT wrote) it is a whole-matrix LoRA of the same function.
    const bytes = files['adapter_model.safetensors'];
    const { headerSize } = gpt2.core.parseSafetensors(bytes);
    const withHeader = (from, to) => {
      const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerSize));
      expect(header).toContain(from);
      const out = bytes.slice();
      out.set(new TextEncoder().encode(header.replace(from, to)), 8);
      return { ...files, 'adapter_model.safetensors': out };
    };
    expect(() => gpt2.importAdapter(withHeader('"weblora.enable_lora":"q,v"', '"weblora.enable_lora":"k,v"')))
      .toThrow(/not zero outside the blocks of k,v/);
    expect(() => gpt2.importAdapter(withHeader('"weblora.enable_lora":"q,v"', '"weblora.enable_lora":"q,x"')))
      .toThrow(/does not name q, k, v blocks/);
    const c = gpt2.importAdapter(withHeader('"weblora.enable_lora"', '"weblora.other_key_"'));
    expect(gpt2.entry(c.id).adapter.modules()[0].rowBlocks).toBe(0);
    expect(maxDiff(gptLogits(c.id), want)).toBe(0);
    for (const x of [a, b, c]) gpt2.freeAdapter(x.id);
  });

  test('resize and combine of a MergedLinear adapter give plain LoRA adapters of the (truncated, summed) update', () => {
    const a = gpt2.createAdapter({ rank: 2, alpha: 4, targets: ['c_attn'], enableLora: ['q', 'v'], seed: 3 });
    const adapter = gpt2.entry(a.id).adapter;
    const p = adapter.params();
    for (let i = 0; i < p.length; i++) p[i] = Math.cos(3 * i) * 0.2;
    for (const m of adapter.modules()) adapter.setRowBlocks(m.index, 3, 5);
    const want = gptLogits(a.id);
    // rank 4 keeps the whole update (the stacked rank is 4): the same function as a whole-matrix LoRA
    const r = gpt2.resize(a.id, { rank: 4 });
    expect(r.adapter.enableLora).toBeNull();
    // measured: relative error 0 and logits 2.9e-6 apart (the same update refactored by an SVD in float32)
    expect(r.totalError).toBeLessThan(1e-5);
    expect(maxDiff(gptLogits(r.adapter.id), want)).toBeLessThan(1e-4);
    const c = gpt2.combine([{ id: a.id, weight: 1 }], { type: 'cat' });
    expect(c.adapter.enableLora).toBeNull();
    expect(maxDiff(gptLogits(c.adapter.id), want)).toBeLessThan(1e-5); // cat of one adapter: measured 0
    for (const x of [a, r.adapter, c.adapter]) gpt2.freeAdapter(x.id);
  });

  test('bad enableLora is refused clearly', () => {
    expect(() => gpt2.createAdapter({ rank: 2, targets: ['c_attn'], enableLora: ['q', 'x'] })).toThrow(/subset of q, k, v/);
    expect(() => gpt2.createAdapter({ rank: 2, targets: ['c_attn'], enableLora: [false, false, false] })).toThrow(/none of q, k, v/);
    expect(() => gpt2.createAdapter({ rank: 2, targets: ['c_fc'], enableLora: ['q'] })).toThrow(/c_attn, which the targets do not include/);
    expect(() => engine.createAdapter({ rank: 2, targets: ['q_proj'], enableLora: ['q'] })).toThrow(/GPT-2/);
  });
});
