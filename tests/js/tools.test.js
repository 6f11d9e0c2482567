// The adapter toolkit on the wasm build: merge/unmerge (bit-exact restore, idempotence, the real PEFT adapters'
// maths against numpy), several adapters at once, PiSSA (step-0 output and faster early training than the default
// init, curves printed), resize / extract / combine (exact recovery of known low-rank updates, reported errors),
// the public low-rank approximation, and bad input.
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { LocalEngine } from '../../web/engine.js';
import { Adapter, Arch } from '../../web/core.js';
import { peftToAdapter } from '../../web/peft.js';
import { combineAdapterFiles, resizeAdapterFiles } from '../../web/tools.js';
import { loadCore, repoRoot, sharedPath, wasmSource } from './helpers/core.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TEXT = [
  'The fox ran to the old mill by the river. The fox ate bread and slept under the wheel.',
  'The fox ran to the old barn by the hill. The fox ate corn and slept under the cart.',
  'The fox ran to the old tree by the lake. The fox ate fish and slept under the roots.',
  'The fox ran to the old house by the road. The fox ate cake and slept under the stairs.',
  'The fox ran to the old boat by the shore. The fox ate grapes and slept under the sail.',
  'The fox ran to the old shed by the field. The fox ate apples and slept under the shelf.',
];
const IDS = [1, 403, 407, 261, 378, 430, 375, 259, 271, 297];

let engine;
let core;
beforeAll(async () => {
  engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource() });
  core = await loadCore();
});
afterAll(() => engine?.dispose());

function logits(e, sel) {
  e.useAdapters(sel);
  e.model.reserve(1, IDS.length);
  e.model.forward(IDS);
  return e.model.logits().slice();
}

function maxDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function randomize(adapter, seed) {
  const p = adapter.params();
  let s = seed;
  for (let i = 0; i < p.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    p[i] = ((s >>> 8) / 16777216 - 0.5) * 0.3;
  }
}

describe('merge and unmerge', () => {
  test('merged logits equal unmerged ones; unmerge restores every weight bit for bit; merging twice is a no-op', () => {
    const a = engine.createAdapter({ rank: 4, targets: 'all-linear', seed: 1 });
    randomize(engine.entry(a.id).adapter, 7);
    const base = engine.model.params().slice();
    const unmerged = logits(engine, a.id);
    engine.merge(a.id, 1);
    expect(engine.model.editBytes()).toBeGreaterThan(0);
    const merged = logits(engine, null);
    expect(maxDiff(merged, unmerged)).toBeLessThan(5e-5);
    engine.merge(a.id, 1);
    expect(maxDiff(logits(engine, null), merged)).toBe(0);
    expect(() => engine.useAdapters(a.id)).toThrow(/merged/);
    engine.unmerge(a.id);
    expect(Buffer.from(engine.model.params().slice().buffer).equals(Buffer.from(base.buffer))).toBe(true);
    expect(engine.model.editBytes()).toBe(0);
    engine.freeAdapter(a.id);
  });

  test('several adapters over one base: switching copies no weights, mixing sums the scaled updates', () => {
    const a = engine.createAdapter({ rank: 4, targets: ['q_proj', 'v_proj'], seed: 2 });
    const b = engine.createAdapter({ rank: 2, targets: ['down_proj'], seed: 3 });
    randomize(engine.entry(a.id).adapter, 11);
    randomize(engine.entry(b.id).adapter, 13);
    const base = engine.model.params().slice();
    const la = logits(engine, a.id);
    const lb = logits(engine, b.id);
    const mix = logits(engine, { [a.id]: 0.5, [b.id]: 2 });
    expect(Buffer.from(engine.model.params().slice().buffer).equals(Buffer.from(base.buffer))).toBe(true);
    expect(maxDiff(la, lb)).toBeGreaterThan(1e-3);
    engine.merge(a.id, 0.5);
    engine.merge(b.id, 2);
    expect(maxDiff(logits(engine, null), mix)).toBeLessThan(5e-5);
    engine.unmerge(b.id);
    engine.unmerge(a.id);
    const none = logits(engine, null);
    engine.useAdapters([]);
    expect(maxDiff(none, logits(engine, undefined))).toBe(0);
    engine.freeAdapter(a.id);
    engine.freeAdapter(b.id);
  });

  test('the real PEFT adapters merge as numpy computes (GPT-2 fan_in_fan_out, SmolLM r16 large updates)', async () => {
    const ref = JSON.parse(readFileSync(path.join(repoRoot, 'tests/ref/merge/real_adapters.json'), 'utf8'));
    const configs = {
      'gpt2-lora-r8-causallm': { arch: Arch.GPT2, dim: 768, hiddenDim: 3072, nLayers: 12, nHeads: 12, nKvHeads: 12, headDim: 64,
        vocabSize: 50257, maxSeqLen: 1024, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 10000, normEps: 1e-5, bosId: 50256, eosId: 50256 },
      'smollm-135m-lora-r16': { arch: Arch.LLAMA, dim: 576, hiddenDim: 1536, nLayers: 30, nHeads: 9, nKvHeads: 3, headDim: 64,
        vocabSize: 49152, maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 10000, normEps: 1e-5, bosId: 1, eosId: 2 },
    };
    for (const c of ref.cases) {
      const model = core.createModel(configs[c.adapter]);
      try {
        const table = model.tensors();
        const byName = new Map(table.map((t) => [t.name, t]));
        // synthetic base weights in file layout: (((7 i + 13 j) mod 97) - 48) / 256
        const fill = (t) => {
          const v = model.tensorView(t);
          const [r0, c0] = t.shape;
          for (let i = 0; i < r0; i++) {
            for (let j = 0; j < c0; j++) {
              const val = ((((7 * i + 13 * j) % 97) - 48) / 256);
              if (t.transposed) v[j * r0 + i] = val; else v[i * c0 + j] = val;
            }
          }
        };
        for (const m of c.modules) fill(byName.get(`${m.path}.weight`));
        const files = {
          'adapter_config.json': readFileSync(sharedPath(`adapters/${c.adapter}/adapter_config.json`), 'utf8'),
          'adapter_model.safetensors': new Uint8Array(readFileSync(sharedPath(`adapters/${c.adapter}/adapter_model.safetensors`))),
        };
        const adapter = peftToAdapter(core, model, files);
        const before = model.params().slice();
        model.merge(adapter, 1);
        for (const m of c.modules) {
          const t = byName.get(`${m.path}.weight`);
          const v = model.tensorView(t);
          const [r0, c0] = t.shape;
          expect([r0, c0]).toEqual(m.file_shape);
          let worst = 0;
          for (const [i, j, want] of m.samples) {
            const got = t.transposed ? v[j * r0 + i] : v[i * c0 + j];
            worst = Math.max(worst, Math.abs(got - want) / (1 + Math.abs(want)));
          }
          expect(worst).toBeLessThan(2e-6);
          // the whole update, not just samples: Frobenius norm of merged - base
          let sq = 0;
          for (let i = 0; i < r0; i++) {
            for (let j = 0; j < c0; j++) {
              const idx = t.transposed ? j * r0 + i : i * c0 + j;
              sq += (v[idx] - ((((7 * i + 13 * j) % 97) - 48) / 256)) ** 2;
            }
          }
          expect(Math.abs(Math.sqrt(sq) - m.delta_fro) / m.delta_fro).toBeLessThan(1e-5);
        }
        model.unmerge(adapter);
        expect(Buffer.from(model.params().slice().buffer).equals(Buffer.from(before.buffer))).toBe(true);
        adapter.free();
      } finally {
        model.free();
      }
    }
  });
});

describe('PiSSA', () => {
  test('output unchanged at step 0; trains faster than the default init at the same rate; exports as rank-2r LoRA', async () => {
    const base = logits(engine, null);
    const curves = {};
    for (const init of ['default', 'pissa', 'pissa_fast']) {
      const a = engine.createAdapter({ rank: 4, alpha: 8, targets: 'all-linear', init, seed: 5 });
      if (init !== 'default') expect(maxDiff(logits(engine, a.id), base)).toBeLessThan(5e-4);
      const losses = [];
      await engine.train(a.id, TEXT, { steps: 12, lr: 2e-3, batchSize: 2, seqLen: 32, evalSplit: 0, seed: 1 }, { onStep: (r) => losses.push(r.loss) });
      curves[init] = losses;
      if (init === 'pissa') {
        // the PEFT export is a plain LoRA of rank 2r for the original base: same logits after the base is restored
        const trained = logits(engine, a.id);
        const files = engine.exportAdapter(a.id).files;
        const cfg = JSON.parse(files['adapter_config.json']);
        expect(cfg.r).toBe(8);
        engine.freeAdapter(a.id); // restores the original base
        expect(maxDiff(logits(engine, null), base)).toBe(0);
        const b = engine.importAdapter(files);
        expect(maxDiff(logits(engine, b.id), trained)).toBeLessThan(5e-4);
        engine.freeAdapter(b.id);
      } else {
        engine.freeAdapter(a.id);
      }
    }
    const fmt = (xs) => xs.map((x) => x.toFixed(3)).join(' ');
    process.stdout.write(`PiSSA vs default, loss per step (lr 2e-3, rank 4, same data):\n  default    ${fmt(curves.default)}\n  pissa      ${fmt(curves.pissa)}\n  pissa_fast ${fmt(curves.pissa_fast)}\n`);
    const early = (xs) => xs.slice(3, 8).reduce((s, x) => s + x, 0);
    expect(early(curves.pissa)).toBeLessThan(early(curves.default));
    expect(early(curves.pissa_fast)).toBeLessThan(early(curves.default));
  });
});

describe('resize, extract, combine', () => {
  test('resize recovers a low-rank update exactly and reports the error it keeps', () => {
    const a = engine.createAdapter({ rank: 8, targets: ['q_proj', 'o_proj'], seed: 9 });
    const ad = engine.entry(a.id).adapter;
    randomize(ad, 17);
    for (const m of ad.modules()) { // rank 3 inside rank 8
      const B = ad.view(m.B, m.outFeatures * m.rank);
      for (let o = 0; o < m.outFeatures; o++) for (let k = 3; k < 8; k++) B[o * 8 + k] = 0.3 * B[o * 8 + (k % 3)];
    }
    const want = logits(engine, a.id);
    const r3 = engine.resize(a.id, { rank: 3 });
    expect(r3.totalError).toBeLessThan(1e-5);
    expect(maxDiff(logits(engine, r3.adapter.id), want)).toBeLessThan(5e-4);
    const r1 = engine.resize(a.id, { rank: 1 });
    expect(r1.totalError).toBeGreaterThan(1e-3);
    expect(r1.modules.every((m) => m.rank === 1 && m.relError > 0)).toBe(true);
    const files = engine.exportAdapter(a.id).files;
    const viaFiles = resizeAdapterFiles(core, files, { rank: 3 });
    expect(viaFiles.totalError).toBeLessThan(1e-5);
    expect(JSON.parse(viaFiles.files['adapter_config.json']).r).toBe(3);
    const e = engine.resize(a.id, { energy: 0.999999 });
    expect(e.modules.every((m) => m.rank <= 3)).toBe(true);
    expect(() => engine.resize(a.id, { rank: 0 })).toThrow(/rank|energy/);
    expect(() => engine.resize(a.id, { rank: 2, energy: 2 })).toThrow(/energy/);
    for (const id of [a.id, r3.adapter.id, r1.adapter.id, e.adapter.id]) engine.freeAdapter(id);
  });

  test('extract recovers a merged update from the two models; combine cat/svd equal the weighted sum', async () => {
    const a = engine.createAdapter({ rank: 4, targets: ['q_proj', 'down_proj'], seed: 21 });
    randomize(engine.entry(a.id).adapter, 23);
    const want = logits(engine, a.id);
    engine.merge(a.id);
    const tuned = engine.exportModel();
    engine.unmerge(a.id);
    const x = await engine.extract({ 'config.json': tuned['config.json'], 'model.safetensors': tuned['model.safetensors'] },
      { rank: 4, targets: ['q_proj', 'down_proj'] });
    expect(x.totalError).toBeLessThan(1e-4);
    expect(maxDiff(logits(engine, x.adapter.id), want)).toBeLessThan(5e-4);
    const b = engine.createAdapter({ rank: 4, targets: ['q_proj', 'v_proj'], seed: 31 });
    randomize(engine.entry(b.id).adapter, 37);
    const mix = logits(engine, { [a.id]: 0.7, [b.id]: 1.2 });
    for (const type of ['cat', 'svd']) {
      const c = engine.combine([{ id: a.id, weight: 0.7 }, { id: b.id, weight: 1.2 }], { type, rank: type === 'svd' ? 8 : 0 });
      expect(maxDiff(logits(engine, c.adapter.id), mix)).toBeLessThan(5e-4);
      engine.freeAdapter(c.adapter.id);
    }
    const low = engine.combine([{ id: a.id, weight: 0.7 }, { id: b.id, weight: 1.2 }], { type: 'svd', rank: 1 });
    expect(low.modules.some((m) => m.relError > 1e-3)).toBe(true);
    const fa = engine.exportAdapter(a.id).files;
    const fb = engine.exportAdapter(b.id).files;
    const viaFiles = combineAdapterFiles(core, [{ files: fa, weight: 0.7 }, { files: fb, weight: 1.2 }], { type: 'cat' });
    const back = engine.importAdapter(viaFiles.files);
    expect(maxDiff(logits(engine, back.id), mix)).toBeLessThan(5e-4);
    const lin = engine.combine([a.id, b.id], { type: 'linear' });
    expect(lin.adapter.rank).toBe(4);
    expect(maxDiff(logits(engine, lin.adapter.id), logits(engine, null))).toBeGreaterThan(1e-4);
    engine.freeAdapter(lin.adapter.id);
    expect(() => engine.combine([a.id, b.id], { type: 'mean' })).toThrow(/linear, cat or svd/);
    for (const id of [a.id, b.id, x.adapter.id, low.adapter.id, back.id]) engine.freeAdapter(id);
  });

  test('combining adapters of different shapes or bases is refused', async () => {
    const gpt2 = sharedPath('adapters/gpt2-lora-r8-causallm');
    const smol = sharedPath('adapters/smollm-135m-lora-r16');
    const files = (d) => ({ 'adapter_config.json': readFileSync(`${d}/adapter_config.json`, 'utf8'),
      'adapter_model.safetensors': new Uint8Array(readFileSync(`${d}/adapter_model.safetensors`)) });
    expect(() => combineAdapterFiles(core, [{ files: files(gpt2), weight: 1 }, { files: files(smol), weight: 1 }], { type: 'cat' }))
      .toThrow(/architectures/);
    const r = resizeAdapterFiles(core, files(gpt2), { rank: 4 });
    expect(r.modules).toHaveLength(36);
    expect(r.totalError).toBeGreaterThan(0);
    expect(r.totalError).toBeLessThan(1);
  });
});

describe('low-rank approximation of any matrix', () => {
  test('rank and energy modes, Eckart-Young error, bad input', () => {
    const m = 40, n = 30;
    const a = new Float32Array(m * n);
    // exact rank 3 plus a small tail
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) a[i * n + j] = Math.sin(i * 0.3) * Math.cos(j * 0.2) + 0.5 * Math.sin(i * j * 0.01) + 0.25 * Math.cos(i - j) + 1e-4 * Math.sin(i * 7 + j * 3);
    const full = core.svd(a, m, n, Math.min(m, n), { method: 'exact' });
    const r = core.lowRankApprox(a, m, n, { rank: 3 });
    let tail = 0;
    let total = 0;
    full.S.forEach((s, i) => { total += s * s; if (i >= 3) tail += s * s; });
    expect(Math.abs(r.relError - Math.sqrt(tail / total))).toBeLessThan(1e-6);
    const e = core.lowRankApprox(a, m, n, { maxRank: 10, energy: 0.99 });
    let acc = 0;
    let want = 0;
    while (acc < 0.99 * total) acc += full.S[want++] ** 2;
    expect(e.rank).toBe(want);
    expect(e.energy).toBeGreaterThanOrEqual(0.99);
    expect(e.L).toHaveLength(m * e.rank);
    expect(() => core.lowRankApprox(a, m, n, { rank: 0 })).toThrow(/rank/);
    expect(() => core.lowRankApprox(a, m, n, { rank: 31 })).toThrow(/rank/);
    const bad = a.slice();
    bad[5] = NaN;
    expect(() => core.lowRankApprox(bad, m, n, { rank: 2 })).toThrow(expect.objectContaining({ code: 'NUMERIC' }));
  });
});

test('Adapter.createShaped refuses inconsistent shapes', () => {
  expect(() => Adapter.createShaped(core, { arch: Arch.LLAMA, nLayers: 2, inFeatures: [8, 0, 0, 0, 0, 0, 0], outFeatures: [8, 0, 0, 0, 0, 0, 0] },
    { ranks: [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], alphas: new Array(14).fill(1) })).toThrow(/rank/);
});
