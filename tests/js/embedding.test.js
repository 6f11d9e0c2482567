// LoRA on the token embedding and the LM head through the engine on the wasm build: createAdapter targets
// (embed_tokens, wte, lm_head), PEFT's initialisation, training and generation, merge / unmerge on an untied model and
// the refusal on a tied one, PEFT files with PEFT's keys (lora_embedding_A / _B, lm_head lora_A / lora_B) read back
// to the same logits, LoRA+ groups, what is refused (DoRA, PiSSA, resize, combine, GGUF), and an adapter saved to
// IndexedDB and loaded back through the worker. Logits and gradients against PyTorch are in core.golden.test.js
// (embed_* cases).
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { WebLoRA } from '../../web/index.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { engineLogits, maxDiff, repoRoot, sharedPath, wasmSource } from './helpers/core.js';
import { GOLDEN } from './helpers/golden.js';
import { expectStoreRoundTrip, loraPlusSgdStep } from './helpers/steps.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin'); // tied embedding and head
const TEXT = [
  'The owl sat on the old gate by the farm. The owl ate mice and slept in the hay.',
  'The owl sat on the old post by the road. The owl ate bugs and slept in the barn.',
  'The owl sat on the old wall by the pond. The owl ate frogs and slept in the reeds.',
];
const IDS = [1, 403, 407, 261, 378, 430, 375, 259, 271, 297];
const TARGETS = ['embed_tokens', 'lm_head', 'q_proj'];

let engine;
beforeAll(async () => {
  engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource() });
});
afterAll(() => engine?.dispose());

/** Random factors in [-0.15, 0.15) for every module (a trained-looking adapter). */
function randomize(adapter, seed) {
  let s = seed;
  const p = adapter.params();
  for (let i = 0; i < p.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    p[i] = ((s >>> 8) / 16777216 - 0.5) * 0.3;
  }
}

const modelLevel = (adapter) => {
  const mods = adapter.modules();
  return { embed: mods.find((m) => m.layer === -1 && m.slot === 0), head: mods.find((m) => m.layer === -1 && m.slot === 1) };
};

describe('embedding and head LoRA on a tied model (stories260K)', () => {
  test("PEFT's initialisation, so a new adapter changes nothing; it trains and generates", async () => {
    const base = engineLogits(engine, IDS, null);
    const a = engine.createAdapter({ rank: 4, alpha: 8, targets: TARGETS, seed: 3 });
    const adapter = engine.entry(a.id).adapter;
    const { embed, head } = modelLevel(adapter);
    const { vocabSize: V, dim: C } = engine.model.config;
    expect(embed).toMatchObject({ rank: 4, inFeatures: V, outFeatures: C, scale: 2 });
    expect(head).toMatchObject({ rank: 4, inFeatures: C, outFeatures: V, scale: 2 });
    // embedding: A = 0, B ~ N(0, 1); head: A ~ U(-1/sqrt(C), 1/sqrt(C)), B = 0
    expect(adapter.view(embed.A, 4 * V).every((x) => x === 0)).toBe(true);
    const eb = adapter.view(embed.B, C * 4);
    const std = Math.sqrt(eb.reduce((s, x) => s + x * x, 0) / eb.length);
    expect(std).toBeGreaterThan(0.75); // 256 draws of N(0, 1): std within 0.75 to 1.25 unless something is off
    expect(std).toBeLessThan(1.25);
    expect(adapter.view(head.B, V * 4).every((x) => x === 0)).toBe(true);
    expect(Math.max(...adapter.view(head.A, 4 * C).map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(C));
    expect(maxDiff(engineLogits(engine, IDS, a.id), base)).toBe(0);

    const before = adapter.params().slice();
    const summary = await engine.train(a.id, TEXT, { steps: 6, lr: 1e-2, seqLen: 32, batchSize: 2, seed: 1 });
    // held-out loss 2.51 -> 1.76 here (q_proj alone at the same rank and steps: 2.19)
    expect(summary.evalLoss).toBeLessThan(summary.evalLossBefore - 0.3);
    const moved = (m, ptr, n) => {
      const off = (ptr - adapter.params().byteOffset) / 4;
      let worst = 0;
      for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(adapter.params()[off + i] - before[off + i]));
      return worst;
    };
    expect(moved(embed, embed.A, 4 * V)).toBeGreaterThan(1e-3); // the embedding's A learns first (its B is not 0)
    expect(moved(head, head.B, V * 4)).toBeGreaterThan(1e-3);
    const g = await engine.generate('The owl', { adapter: a.id, maxTokens: 8, temperature: 0 });
    expect(g.ids.length).toBeGreaterThan(0);
    engine.freeAdapter(a.id);
  });

  test('merging into the shared embedding / head tensor is refused and changes nothing', () => {
    const a = engine.createAdapter({ rank: 2, targets: ['embed_tokens', 'q_proj'], seed: 4 });
    randomize(engine.entry(a.id).adapter, 5);
    const weights = engine.model.params().slice();
    expect(() => engine.merge(a.id, 1)).toThrow(/one tensor.*adapts the embedding: merging would change the head as well/);
    expect(Buffer.from(engine.model.params().slice().buffer).equals(Buffer.from(weights.buffer))).toBe(true);
    const h = engine.createAdapter({ rank: 2, targets: ['lm_head'], seed: 4 });
    expect(() => engine.merge(h.id, 1)).toThrow(/adapts the head: merging would change the embedding as well/);
    engine.freeAdapter(a.id);
    engine.freeAdapter(h.id);
  });

  test("PEFT files with PEFT's keys, shapes and target_modules; read back they give the very same logits", () => {
    const a = engine.createAdapter({ rank: 3, alpha: 5, targets: TARGETS, seed: 6 });
    randomize(engine.entry(a.id).adapter, 7);
    const want = engineLogits(engine, IDS, a.id);
    const { config, files } = engine.exportAdapter(a.id);
    expect(config.target_modules).toEqual(['embed_tokens', 'lm_head', 'q_proj']);
    const st = engine.core.parseSafetensors(files['adapter_model.safetensors']);
    const shapes = Object.fromEntries(st.tensors.map((t) => [t.name, t.shape]));
    const { vocabSize: V, dim: C } = engine.model.config;
    expect(shapes['base_model.model.model.embed_tokens.lora_embedding_A']).toEqual([3, V]);
    expect(shapes['base_model.model.model.embed_tokens.lora_embedding_B']).toEqual([C, 3]);
    expect(shapes['base_model.model.lm_head.lora_A.weight']).toEqual([3, C]);
    expect(shapes['base_model.model.lm_head.lora_B.weight']).toEqual([V, 3]);
    expect(Object.keys(shapes).filter((k) => k.includes('embed_tokens'))).toHaveLength(2); // no ".weight" variants
    const b = engine.importAdapter(files);
    expect(maxDiff(engineLogits(engine, IDS, b.id), want)).toBe(0);
    expect(maxDiff(engineLogits(engine, IDS, null), want)).toBeGreaterThan(0.1); // the adapter matters
    for (const x of [a, b]) engine.freeAdapter(x.id);
  });

  test("LoRA+ steps the head's B at ratio times lr and both embedding factors at lr, as PEFT's groups do", () => {
    const a = engine.createAdapter({ rank: 2, targets: TARGETS, seed: 8 });
    const adapter = engine.entry(a.id).adapter;
    randomize(adapter, 9);
    const { model } = engine;
    const lr = 0.05, ratio = 8;
    const { before, grad, after, base } = loraPlusSgdStep(model, adapter, IDS, { lr, ratio });
    const worstAt = (ptr, n, rate) => {
      let worst = 0;
      for (let i = (ptr - base) / 4; i < (ptr - base) / 4 + n; i++) worst = Math.max(worst, Math.abs(after[i] - Math.fround(before[i] - Math.fround(rate * grad[i]))));
      return worst;
    };
    const { embed, head } = modelLevel(adapter);
    // p - (lr s) g in float32 both ways: an ulp of p apart (|p| < 0.2); the wrong rate is off by 7 lr |g|
    expect(worstAt(embed.B, embed.outFeatures * 2, lr)).toBeLessThan(1e-7);
    expect(worstAt(embed.A, embed.inFeatures * 2, lr)).toBeLessThan(1e-7);
    expect(worstAt(head.B, head.outFeatures * 2, lr * ratio)).toBeLessThan(1e-7);
    expect(worstAt(embed.B, embed.outFeatures * 2, lr * ratio)).toBeGreaterThan(1e-5); // the check can fail
    engine.useAdapters(null);
    engine.freeAdapter(a.id);
  });

  test('what embedding and head LoRA do not support is refused clearly', () => {
    const a = engine.createAdapter({ rank: 2, targets: TARGETS, seed: 10 });
    const p = engine.createAdapter({ rank: 2, targets: ['q_proj'], seed: 10 });
    expect(() => engine.createAdapter({ rank: 2, targets: ['embed_tokens'], dora: true })).toThrow(/DoRA on the token embedding/);
    expect(() => engine.createAdapter({ rank: 2, targets: ['lm_head'], init: 'pissa' })).toThrow(/PiSSA initialisation of the token embedding or LM head/);
    expect(() => engine.resize(a.id, { rank: 1 })).toThrow(/token embedding or LM head are not resized/);
    expect(() => engine.combine([a.id, p.id], { type: 'cat' })).toThrow(/adapts the token embedding or LM head/);
    expect(() => engine.exportAdapter(a.id, { format: 'gguf' })).toThrow(/LoRA on model.embed_tokens and lm_head/);
    expect(() => engine.createAdapter({ rank: 2, targets: ['embed'] })).toThrow(/embed_tokens/); // the names on offer
    // all-linear is PEFT's: every linear layer of the blocks, never the head or the embedding
    const all = engine.createAdapter({ rank: 2, targets: 'all-linear', seed: 10 });
    expect(engine.entry(all.id).adapter.modules().every((m) => m.layer >= 0)).toBe(true);
    for (const x of [a, p, all]) engine.freeAdapter(x.id);
  });
});

describe('on untied and GPT-2 models (golden models embed_llama, embed_gpt2)', () => {
  let dir;
  let llama;
  let gpt2;
  const TOKENS = [3, 11, 5, 14, 0, 9, 13, 2];
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'weblora-embed-'));
    llama = await loadCopy('embed_llama');
    gpt2 = await loadCopy('embed_gpt2');
  });
  afterAll(() => {
    llama?.dispose();
    gpt2?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The golden case's model, copied without its adapter files. */
  async function loadCopy(name) {
    const d = mkdtempSync(path.join(dir, `${name}-`));
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(path.join(GOLDEN, name, f), path.join(d, f));
    return LocalEngine.load(d, { wasmSource: wasmSource() });
  }

  test('merge equals the unmerged embedding + head LoRA; unmerge restores the weights bit for bit', () => {
    expect(llama.model.config.tiedEmbeddings).toBe(0);
    const a = llama.createAdapter({ rank: 2, alpha: 4, targets: TARGETS, seed: 1 });
    randomize(llama.entry(a.id).adapter, 11);
    const weights = llama.model.params().slice();
    const baseLogits = engineLogits(llama, TOKENS, null);
    const unmerged = engineLogits(llama, TOKENS, a.id);
    expect(maxDiff(unmerged, baseLogits)).toBeGreaterThan(0.05); // the adapter matters
    llama.merge(a.id, 1);
    // W + s B A against W x + s B A x: float32 sums in another order, measured 9.5e-7 on logits up to 4.7 (the golden
    // case's logits tolerance is 2e-5); the adapter itself moves them by more than 0.05.
    expect(maxDiff(engineLogits(llama, TOKENS, null), unmerged)).toBeLessThan(2e-5);
    llama.unmerge(a.id);
    expect(Buffer.from(llama.model.params().slice().buffer).equals(Buffer.from(weights.buffer))).toBe(true);
    expect(maxDiff(engineLogits(llama, TOKENS, null), baseLogits)).toBe(0);
    llama.freeAdapter(a.id);
  });

  test("GPT-2's wte and lm_head: targets, PEFT keys, and the same logits after reading the files back", () => {
    const a = gpt2.createAdapter({ rank: 2, alpha: 4, targets: ['wte', 'lm_head', 'c_attn'], seed: 2 });
    randomize(gpt2.entry(a.id).adapter, 13);
    const want = engineLogits(gpt2, TOKENS, a.id);
    const { config, files } = gpt2.exportAdapter(a.id);
    expect(config.target_modules).toEqual(['c_attn', 'lm_head', 'wte']);
    expect(config.fan_in_fan_out).toBe(true);
    const names = gpt2.core.parseSafetensors(files['adapter_model.safetensors']).tensors.map((t) => t.name);
    expect(names).toEqual(expect.arrayContaining(['base_model.model.transformer.wte.lora_embedding_A',
      'base_model.model.transformer.wte.lora_embedding_B', 'base_model.model.lm_head.lora_A.weight', 'base_model.model.lm_head.lora_B.weight']));
    const b = gpt2.importAdapter(files);
    expect(maxDiff(engineLogits(gpt2, TOKENS, b.id), want)).toBe(0);
    expect(() => gpt2.merge(a.id, 1)).toThrow(/one tensor/); // GPT-2's head is the embedding
    for (const x of [a, b]) gpt2.freeAdapter(x.id);
  });
});

describe('through the worker and IndexedDB (fake-indexeddb)', () => {
  test('a trained embedding + head adapter saved and loaded back generates the same tokens', async () => {
    const remote = await WebLoRA.load(STORIES, { workerUrl: pathToFileURL(path.join(repoRoot, 'tests/js/helpers/idb-worker.js')).href });
    try {
      const a = await remote.createAdapter({ rank: 4, targets: TARGETS, seed: 2 });
      await remote.train(a, TEXT, { steps: 4, lr: 2e-2, seqLen: 32, batchSize: 2, seed: 1 }).done;
      await expectStoreRoundTrip(remote, a, 'owl-embed');
    } finally {
      await remote.dispose();
    }
  });
});
