// LocalEngine in Node has the adapter store and training checkpoints the worker's clients have: the engine owns
// them (web/storage/library.js), here on fake-indexeddb. A run stopped after a checkpoint and resumed from it ends with the
// same weights as the run that never stopped.
import 'fake-indexeddb/auto';
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';

import { LocalEngine } from '../../web/engine/engine.js';
import { BaseModelMismatchError, NotFoundError } from '../../web/errors.js';
import { sharedPath, wasmSource } from './helpers/core.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TEXT = ['The cat sat by the warm fire and purred. The cat slept until the sun came up over the hill.'.repeat(6)];
const RUN = { lr: 5e-3, batchSize: 2, seqLen: 32, evalSplit: 0, seed: 7 };

let engine;
beforeAll(async () => {
  engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource(), threads: 1, store: { dbName: 'engine-store-test' } });
});
afterAll(() => engine?.dispose());

const params = (id) => engine.entry(id).adapter.params().slice();

describe('LocalEngine with a store', () => {
  test('checkpoints every N steps, and a resumed run ends where the uninterrupted one does, bit for bit', async () => {
    const straight = engine.createAdapter({ rank: 4, seed: 3 });
    await engine.train(straight.id, TEXT, { ...RUN, steps: 6 });

    const stopped = engine.createAdapter({ rank: 4, seed: 3 });
    const saved = [];
    await engine.train(stopped.id, TEXT, { ...RUN, steps: 6, checkpoint: { every: 2, runId: 'cat', keep: true },
      onCheckpoint: (c) => saved.push(c),
      onStep: (s) => {
        if (s.step === 4) throw new Error('power cut');
      } }).catch((e) => expect(e.message).toBe('power cut'));
    expect(saved).toEqual([{ runId: 'cat', step: 2 }]);
    expect(await engine.adapters.checkpoints()).toEqual([expect.objectContaining({ runId: 'cat', step: 2 })]);

    const resumed = engine.createAdapter({ rank: 4, seed: 99 }); // its own weights are replaced by the checkpoint's
    const steps = [];
    const summary = await engine.train(resumed.id, TEXT, { ...RUN, steps: 6, resume: 'cat', checkpoint: { every: 2 },
      onStep: (s) => steps.push(s.step) });
    expect(steps).toEqual([3, 4, 5, 6]);
    expect(summary.steps).toBe(6);
    expect(params(resumed.id)).toEqual(params(straight.id));
    expect(await engine.adapters.checkpoints()).toEqual([]); // finished without keep: deleted
    for (const id of [straight.id, stopped.id, resumed.id]) engine.freeAdapter(id);
  });

  test('a missing run or one saved on another base model is refused', async () => {
    const a = engine.createAdapter({ rank: 2, seed: 1 });
    await expect(engine.train(a.id, TEXT, { ...RUN, steps: 1, resume: 'nope' })).rejects.toBeInstanceOf(NotFoundError);
    await engine.train(a.id, TEXT, { ...RUN, steps: 2, checkpoint: { every: 1, runId: 'other', keep: true } });
    const other = await LocalEngine.load(sharedPath('models/aidreams260K/aidreams260K.bin'), { wasmSource: wasmSource(), threads: 1,
      store: { dbName: 'engine-store-test' } });
    try {
      const b = other.createAdapter({ rank: 2 });
      await expect(other.train(b.id, TEXT, { ...RUN, steps: 3, resume: 'other' })).rejects.toBeInstanceOf(BaseModelMismatchError);
    } finally {
      other.dispose();
    }
    await engine.adapters.deleteCheckpoint('other');
    engine.freeAdapter(a.id);
  });

  test('saves, lists, loads and deletes adapters', async () => {
    const a = engine.createAdapter({ rank: 2, seed: 5 });
    await engine.train(a.id, TEXT, { ...RUN, steps: 2 });
    const record = await engine.adapters.save('diary', a.id);
    expect(record).toMatchObject({ name: 'diary', baseFingerprint: engine.fingerprint, steps: 2 });
    const back = await engine.adapters.load('diary');
    expect(params(back.id)).toEqual(params(a.id));
    expect((await engine.adapters.list()).map((r) => r.name)).toEqual(['diary']);
    await engine.adapters.delete('diary');
    expect(await engine.adapters.list()).toEqual([]);
    engine.freeAdapter(a.id);
    engine.freeAdapter(back.id);
  });
});
