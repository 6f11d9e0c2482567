// The client/worker protocol in Node (worker_threads run web/runtime/worker.js): calls matched by id, progress events,
// AbortSignals, errors rebuilt with their class, code and stack, buffers transferred, and calls serialised so a
// generation never interleaves with a training step.
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { readFileSync } from 'node:fs';

import { WebLoRA } from '../../web/index.js';
import { InvalidArgumentError, LoraSpecError, UnsupportedError, WebLoRAError } from '../../web/errors.js';
import { sharedPath } from './helpers/core.js';
import { readSvdRef } from './helpers/golden.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TEXT = ['The dog ran to the park and played with a ball. The dog was happy and ran home.'.repeat(4)];

let engine;
beforeAll(async () => {
  engine = await WebLoRA.load(STORIES);
});
afterAll(() => engine?.dispose());

describe('client and worker', () => {
  test('load reports what it loaded; bytes sources are transferred, not cloned', async () => {
    expect(engine.info).toMatchObject({ arch: 'llama', kind: 'llama2c', hasTokenizer: true });
    expect(engine.info.config.vocabSize).toBe(512);
    expect(engine.info.fingerprint).toMatch(/^[0-9a-f]{32}$/);
    const bytes = new Uint8Array(readFileSync(STORIES));
    const tok = new Uint8Array(readFileSync(sharedPath('models/stories260K/tok512.bin')));
    const events = [];
    const e2 = await WebLoRA.load(bytes, { tokenizer: tok, onProgress: (e) => events.push(e.status) });
    expect(bytes.byteLength).toBe(0); // transferred to the worker
    expect(events.at(-1)).toBe('ready');
    expect(e2.info.fingerprint).toBe(engine.info.fingerprint);
    await e2.dispose();
  });

  test('errors keep their class, code and stack across the worker boundary', async () => {
    const err = await engine.generate('x', { adapter: 'nope' }).catch((e) => e);
    expect(err).toBeInstanceOf(WebLoRAError);
    expect(err.code).toBe('NO_ADAPTER');
    expect(err.stack).toMatch(/engine\.js/);
    const spec = await engine.createAdapter({ rank: 100 }).catch((e) => e);
    expect(spec).toBeInstanceOf(LoraSpecError);
    const core = await engine.lowRankApprox(new Float32Array(6), 2, 3, { rank: 0 }).catch((e) => e);
    expect(core).toBeInstanceOf(InvalidArgumentError); // the core's INVALID_ARGUMENT status
    expect(core.code).toBe('INVALID_ARGUMENT');
    expect(core.message).toMatch(/rank/);
    const store = await engine.adapters.list().catch((e) => e);
    expect(store).toBeInstanceOf(UnsupportedError); // Node has no IndexedDB
    const bad = await WebLoRA.load('/no/such/model.bin').catch((e) => e);
    expect(bad.code).toBe('BAD_SOURCE');
  });

  test('training streams steps, aborts cleanly mid-run, and a later call still works', async () => {
    const adapter = await engine.createAdapter({ rank: 4, seed: 1 });
    const steps = [];
    const controller = new AbortController();
    const run = engine.train(adapter, TEXT, {
      steps: 500, seqLen: 32, evalSplit: 0, signal: controller.signal,
      onStep: (r) => {
        steps.push(r.step);
        if (r.step === 3) controller.abort();
      },
    });
    const err = await run.done.catch((e) => e);
    expect(err.name).toBe('AbortError');
    expect(steps.length).toBeGreaterThanOrEqual(3);
    expect(steps.length).toBeLessThan(500);
    // the engine keeps working, and calls are answered in order
    const [a, b] = await Promise.all([
      engine.generate('The dog', { adapter, maxTokens: 8 }),
      engine.generate('The dog', { adapter, maxTokens: 8 }),
    ]);
    expect(a.ids).toEqual(b.ids);
    const tokens = [];
    const out = await engine.generate('The dog', { adapter, maxTokens: 8, onToken: (t) => tokens.push(t.text) });
    expect(tokens.join('')).toBe(out.text);
    const files = await engine.exportAdapter(adapter);
    expect(files.files['adapter_model.safetensors']).toBeInstanceOf(Uint8Array);
    const again = await engine.importAdapter(files.files);
    expect(again.parameters).toBe(adapter.parameters);
    await engine.freeAdapter(adapter);
    await engine.freeAdapter(again);
  });

  test('an already-aborted signal rejects at once; generate aborts too', async () => {
    const c = new AbortController();
    c.abort();
    await expect(engine.generate('x', { signal: c.signal })).rejects.toMatchObject({ name: 'AbortError' });
    const c2 = new AbortController();
    const p = engine.generate('Once upon a time', { maxTokens: 400, signal: c2.signal, onToken: () => c2.abort() });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  });

  test('low-rank approximation is part of the public API', async () => {
    const { a, m, n, S } = readSvdRef('random_64x48');
    const r = await engine.lowRankApprox(a, m, n, { rank: 2 });
    expect(r.rank).toBe(2);
    expect(r.L).toHaveLength(m * 2);
    // Eckart-Young against numpy's singular values: the tolerance is 20 times what numpy's own float32 SVD misses
    // by (1.2e-8 relative), rounded up; the core's measured 2e-10.
    const tail = Math.sqrt(S.slice(2).reduce((t, s) => t + s * s, 0) / S.reduce((t, s) => t + s * s, 0));
    expect(Math.abs(r.relError - tail)).toBeLessThan(5e-7 * tail);
  });
});
