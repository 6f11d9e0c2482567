// steps.js: steps the adapter suites share: one LoRA+ SGD step through the production Trainer, with the gradient it
// took (for checking which rate each parameter moved at: p - rate g, in float32), and an adapter saved to the store
// and loaded back.
import { expect } from '@jest/globals';
import { Trainer } from '../../../web/engine/train.js';

/**
 * One SGD step with loraPlusRatio on a sequence of token ids (next-token targets, the last predicting id 2).
 * @param {any} model the engine's model
 * @param {any} adapter the adapter attached to it, trainable
 * @param {number[]} ids
 * @param {{ lr: number, ratio: number }} rates
 * @returns {{ before: Float32Array, grad: Float32Array, after: Float32Array, base: number }} parameters before and
 *   after, the gradient, and the byte offset of the parameters (module pointers minus base, over 4, index them)
 */
export function loraPlusSgdStep(model, adapter, ids, { lr, ratio }) {
  const seq = { tokens: Int32Array.from(ids), targets: Int32Array.from([...ids.slice(1), 2]), valid: ids.length };
  const trainer = new Trainer({ model, adapter, train: [seq], options: { optimizer: 'sgd', lr, loraPlusRatio: ratio, steps: 1, batchSize: 1, seqLen: ids.length } });
  try {
    const before = adapter.params().slice();
    adapter.zeroGrad();
    model.forward(seq.tokens, { B: 1, T: ids.length, targets: seq.targets, train: true });
    model.backward();
    const grad = adapter.grads().slice();
    trainer.trainStep();
    return { before, grad, after: adapter.params().slice(), base: adapter.params().byteOffset };
  } finally {
    trainer.dispose();
  }
}

/**
 * Saves a trained adapter to the engine's store, loads it back, and expects the same greedy continuation of
 * "The owl", which must differ from the base model's (so the adapter really came back). Returns the loaded handle.
 * @param {any} remote a WebLoRA engine with a store
 * @param {any} adapter the trained adapter's handle
 * @param {string} name the store name to save under
 */
export async function expectStoreRoundTrip(remote, adapter, name) {
  const want = await remote.generate('The owl', { adapter, maxTokens: 12, temperature: 0 });
  await remote.adapters.save(name, adapter);
  const loaded = await remote.adapters.load(name);
  const got = await remote.generate('The owl', { adapter: loaded, maxTokens: 12, temperature: 0 });
  expect(got.ids).toEqual(want.ids);
  const base = await remote.generate('The owl', { maxTokens: 12, temperature: 0 });
  expect(base.ids).not.toEqual(want.ids); // the trained adapter changes the greedy continuation
  return loaded;
}
