// A training run that blows up must stop with a clear error and save nothing; weights whose magnitudes would
// overflow f32 arithmetic are refused by generation and evaluation with the tensor's name. On stories260K (real
// weights), through the engine and through the CLI.
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { pathToFileURL } from 'node:url';

import { WebLoRA } from '../../web/index.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { DivergenceGuard } from '../../web/engine/divergence.js';
import { NumericError } from '../../web/errors.js';
import { repoRoot, sharedPath, wasmSource } from './helpers/core.js';
import { writeSafetensors } from '../../web/formats/safetensors.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TEXT = 'Once upon a time there was a little girl named Lily. She liked to play in the park with her dog. '.repeat(12);
let engine;
let tmp;

beforeAll(async () => {
  engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource() });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'weblora-diverge-'));
});
afterAll(() => {
  engine?.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

describe('training that diverges', () => {
  test.each(['adamw', 'sgd'])('lr 1e9 with %s stops with a DIVERGED error; the adapter is not exported unless asked', async (optimizer) => {
    const a = engine.createAdapter({ rank: 4, seed: 1 });
    const start = engine.entry(a.id).adapter.params().slice();
    const err = await engine.train(a.id, TEXT, { steps: 5, seqLen: 32, evalSplit: 0.2, optimizer, lr: 1e9 }).catch((e) => e);
    expect(err).toBeInstanceOf(NumericError);
    expect(err.code).toBe('DIVERGED');
    expect(err.message).toMatch(/training stopped at step \d+: the run diverged: .*(update changed the weights|weight reached|loss rose)/);
    // the weights went back to those before the bad update: here the starting ones
    const now = engine.entry(a.id).adapter.params();
    let worst = 0;
    for (let i = 0; i < now.length; i++) worst = Math.max(worst, Math.abs(now[i]));
    expect(worst).toBeLessThan(1e3);
    expect(Buffer.from(now.slice().buffer).equals(Buffer.from(start.buffer))).toBe(true);
    // Refused in every format: PEFT, portable PEFT and GGUF.
    for (const format of [{}, { portable: true }, { format: 'gguf' }]) {
      expect(() => engine.exportAdapter(a.id, format)).toThrow(/not exported: its last training run diverged/);
    }
    expect(engine.exportAdapter(a.id, { allowDiverged: true }).files['adapter_model.safetensors'].byteLength).toBeGreaterThan(0);
    expect(engine.exportAdapter(a.id, { allowDiverged: true, portable: true }).config.use_rslora).toBe(false);
    expect(engine.exportAdapter(a.id, { allowDiverged: true, format: 'gguf' }).files['adapter.gguf'].byteLength).toBeGreaterThan(0);
    // a sound run afterwards clears the mark
    await engine.train(a.id, TEXT, { steps: 2, seqLen: 32, evalSplit: 0, lr: 1e-3 });
    expect(engine.exportAdapter(a.id).files['adapter_model.safetensors'].byteLength).toBeGreaterThan(0);
    engine.freeAdapter(a.id);
  });

  test('the guard: a loss far above its start trips it, noise around the start does not', () => {
    const g = new DivergenceGuard(new Float32Array([0.1, -0.2]));
    expect(g.checkLoss(2.0)).toBeNull();
    for (const l of [2.6, 1.7, 2.4, 1.9, 2.8, 2.0]) expect(g.checkLoss(l)).toBeNull();
    let reason = null;
    for (let i = 0; i < 6 && !reason; i++) reason = g.checkLoss(6.2);
    expect(reason).toMatch(/loss rose to .* from 2\.000/);
    expect(g.checkUpdate(new Float32Array([2e3, 0]), null)).toMatch(/weight reached 2\.000e\+3/);
    expect(g.checkUpdate(new Float32Array([0.1, 5]), new Float32Array([0.1, -0.2]))).toMatch(/changed the weights by/);
    expect(g.checkUpdate(new Float32Array([0.11, -0.19]), new Float32Array([0.1, -0.2]))).toBeNull();
  });
});

describe('a checkpointed run that diverges (through the worker, on fake-indexeddb)', () => {
  test('keeps its last checkpoint from before the bad step, saves nothing, and the run resumes with a sound learning rate', async () => {
    const remote = await WebLoRA.load(STORIES, { workerUrl: pathToFileURL(path.join(repoRoot, 'tests/js/helpers/idb-worker.js')).href });
    try {
      const run = { steps: 30, seqLen: 32, evalSplit: 0, optimizer: 'sgd' };
      const a = await remote.createAdapter({ rank: 4, seed: 1 });
      const saved = [];
      const err = await remote.train(a, TEXT, { ...run, lr: 30, checkpoint: { every: 1, runId: 'blowup' }, onCheckpoint: (c) => saved.push(c.step) })
        .done.catch((e) => e);
      expect(err).toMatchObject({ name: 'NumericError', code: 'DIVERGED' });
      const stoppedAt = Number(/training stopped at step (\d+)/.exec(err.message)?.[1]);
      expect(stoppedAt).toBeGreaterThan(1); // this learning rate takes a few steps to blow up: there is a checkpoint
      const kept = (await remote.adapters.checkpoints()).find((c) => c.runId === 'blowup');
      expect(kept.step).toBe(stoppedAt - 1);
      expect(saved.at(-1)).toBe(kept.step);
      await expect(remote.adapters.save('blown', a)).rejects.toMatchObject({ code: 'DIVERGED' });
      expect(await remote.adapters.list()).toEqual([]);
      const steps = [];
      const b = await remote.createAdapter({ rank: 4, seed: 1 });
      const summary = await remote.train(b, TEXT, { ...run, steps: kept.step + 2, lr: 0.05, resume: 'blowup', onStep: (r) => steps.push(r.step) }).done;
      expect(steps).toEqual([kept.step + 1, kept.step + 2]);
      expect(Number.isFinite(summary.trainLoss)).toBe(true);
    } finally {
      await remote.dispose();
    }
  });
});

describe('weights that would overflow f32 arithmetic', () => {
  test('a finite 3e38 in a loaded lora_B is refused by generate and evaluate, naming the tensor', async () => {
    const a = engine.createAdapter({ rank: 2, targets: ['q_proj'], seed: 3 });
    const files = engine.exportAdapter(a.id).files;
    engine.freeAdapter(a.id);
    const st = engine.core.parseSafetensors(files['adapter_model.safetensors'], files['adapter_model.safetensors'].byteLength);
    const key = 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight';
    expect(st.tensors.map((t) => t.name)).toContain(key);
    const tensors = st.tensors.map((t) => {
      const data = new Float32Array(files['adapter_model.safetensors'].slice(st.dataStart + t.begin, st.dataStart + t.end).buffer);
      if (t.name === key) data[3] = 3e38;
      return { name: t.name, shape: t.shape, data };
    });
    const bad = engine.importAdapter({ ...files, 'adapter_model.safetensors': writeSafetensors(tensors) });
    const message = new RegExp(`adapter ${bad.id}: ${key.replace(/\./g, '\\.')} holds 3\\.000e\\+38 at element \\d+, beyond ±1e\\+16, so f32 arithmetic on it would overflow`);
    await expect(engine.generate('Once', { adapter: bad.id, maxTokens: 3 })).rejects.toThrow(message);
    expect(() => engine.evaluate(TEXT, { adapter: bad.id, seqLen: 32 })).toThrow(message);
    engine.freeAdapter(bad.id);
  });

  test('a model weight beyond the bound is refused at load with its name', async () => {
    const bin = new Uint8Array(readFileSync(STORIES));
    const f32 = new Float32Array(bin.buffer.slice(28 + 4 * 100, 28 + 4 * 101));
    expect(Number.isFinite(f32[0])).toBe(true);
    new DataView(bin.buffer).setFloat32(28 + 4 * 100, 1e20, true); // inside the token embedding
    await expect(LocalEngine.load(bin, { wasmSource: wasmSource() })).rejects.toThrow(/model weight model\.embed_tokens\.weight holds 1\.000e\+20 at element 100, beyond ±1e\+16/);
  });
});

describe('the CLI', () => {
  test('train --lr 1e9 exits non-zero with a clear error and leaves no adapter', async () => {
    const data = path.join(tmp, 'stories.txt');
    writeFileSync(data, TEXT);
    const out = path.join(tmp, 'diverged');
    const r = await new Promise((resolve) => {
      execFile(process.execPath, [path.join(repoRoot, 'web/cli.js'), 'train', '--model', STORIES, '--data', data, '--steps', '4',
        '--seq', '32', '--lr', '1e9', '--out', out], { cwd: tmp, timeout: 120000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
    });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/weblora train: error: training stopped at step 1: the run diverged/);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(tmp).filter((n) => n.startsWith('diverged'))).toEqual([]);
  });
});

describe('prompts longer than the context', () => {
  test('keep their most recent tokens, say how many were dropped, and still generate the tokens asked for', async () => {
    const prompt = 'Once upon a time there was a big red ball. '.repeat(60);
    const promptLen = engine.tokenizer.encode(prompt).length + 1; // + BOS
    expect(promptLen).toBeGreaterThan(512);
    const r = await engine.generate(prompt, { maxTokens: 20, temperature: 0 });
    expect(r.promptTokensDropped).toBe(promptLen + 20 - 512);
    expect(r.promptIds.length).toBe(512 - 20);
    expect(r.finishReason === 'eos' || r.ids.length === 20).toBe(true);
  });
});

describe('a model with a single position', () => {
  test('generate refuses with a clear error; evaluation and training at sequence length 1 work', async () => {
    const dir = sharedPath('models/tiny-random-llama');
    const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    const one = await LocalEngine.load({ 'config.json': JSON.stringify({ ...cfg, max_position_embeddings: 1 }),
      'model.safetensors': new Uint8Array(readFileSync(path.join(dir, 'model.safetensors'))) },
    { wasmSource: wasmSource(), tokenizer: sharedPath('tokenizers/llama2-tinyllama/tokenizer.json') });
    try {
      expect(one.model.config.maxSeqLen).toBe(1);
      const err = await one.generate('Hello there', { maxTokens: 4 }).catch((e) => e);
      expect(err).toMatchObject({ name: 'InvalidArgumentError', code: 'INVALID_ARGUMENT', message: 'this model has 1 position: it cannot read a token and generate another' });
      const text = 'Hello there, how are you today? I am fine, thank you. '.repeat(4);
      expect(one.evaluate(text, { seqLen: 1 }).loss).toBeGreaterThan(0);
      const a = one.createAdapter({ rank: 2, seed: 1 });
      expect((await one.train(a.id, text, { steps: 2, seqLen: 1, evalSplit: 0 })).steps).toBe(2);
    } finally {
      one.dispose();
    }
  });
});
