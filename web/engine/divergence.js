// divergence.js: telling a training run that has blown up from one that is merely noisy, and refusing weights
// whose magnitudes would overflow f32 arithmetic. Non-finite losses, gradients and weights are caught where they
// arise (train.js); this adds what stays finite but is already broken: a loss far above where it started, an
// update larger than the weights it changes, weights beyond any trained adapter's range.
import { NumericError } from '../errors.js';

/**
 * Magnitudes at or beyond this make f32 arithmetic overflow: a norm layer sums squares, and 65536 squares of
 * 7.2e16 already pass f32's maximum (3.4e38). Trained weights stay many orders of magnitude below.
 */
export const F32_SAFE_MAGNITUDE = 1e16;

/**
 * Guard thresholds. The largest LoRA weight in a heavily trained real PEFT adapter (SmolLM-135M, r 16) is 2.26, in
 * a GPT-2 one 0.12; a step whose update is ten times the size of all the weights together is no longer learning.
 */
export const DIVERGENCE_DEFAULTS = Object.freeze({
  /** largest |weight| an adapter may reach (full-parameter runs: this or 100x the largest starting weight) */
  maxWeight: 1e3,
  /** largest ||update|| / ||weights before it|| of one step */
  maxUpdateRatio: 10,
  /** the smoothed loss may rise this many nats, or this fraction of the starting loss if more, above the start */
  lossRiseNats: 1,
  lossRiseFraction: 0.5,
});

/**
 * Index of the first value that is not finite or is at least `bound` in magnitude, or -1.
 * @param {Float32Array} values
 * @param {number} bound
 */
export function firstOutOfRange(values, bound) {
  for (let i = 0; i < values.length; i++) {
    if (!(Math.abs(values[i]) < bound)) return i;
  }
  return -1;
}

/**
 * Throws NumericError naming the tensor when any value would overflow f32 arithmetic (or is NaN/inf).
 * @param {Iterable<{ name: string, values: Float32Array }>} tensors
 * @param {string} what e.g. 'the adapter' or 'the model'
 */
export function assertSafeMagnitudes(tensors, what) {
  for (const { name, values } of tensors) {
    const i = firstOutOfRange(values, F32_SAFE_MAGNITUDE);
    if (i >= 0) {
      const v = values[i];
      const why = Number.isFinite(v) ? `beyond ±${F32_SAFE_MAGNITUDE.toExponential(0)}, so f32 arithmetic on it would overflow` : 'not a finite number';
      throw new NumericError(`${what}: ${name} holds ${Number.isFinite(v) ? v.toExponential(3) : v} at element ${i}, ${why}`, { details: { tensor: name, index: i, value: v } });
    }
  }
}

/**
 * Watches one training run: the loss against where it started, each update against the weights, and the weights
 * against a bound. Each check returns a reason string when the run has diverged, or null.
 */
export class DivergenceGuard {
  /**
   * @param {Float32Array} params the weights being trained, as they start
   * @param {{ full?: boolean } & Partial<typeof DIVERGENCE_DEFAULTS>} [options]
   */
  constructor(params, options = {}) {
    this.o = { ...DIVERGENCE_DEFAULTS, ...options };
    let startMax = 0;
    for (let i = 0; i < params.length; i++) startMax = Math.max(startMax, Math.abs(params[i]));
    this.maxWeight = options.full ? Math.max(this.o.maxWeight, 100 * startMax) : this.o.maxWeight;
    /** @type {number | null} */
    this.startLoss = null;
    /** @type {number | null} */
    this.smoothLoss = null;
  }

  /** @param {number} loss mean loss of a step, computed on the weights before its update */
  checkLoss(loss) {
    if (this.startLoss === null) {
      this.startLoss = this.smoothLoss = loss;
      return null;
    }
    // An exponential average over about five steps: one hard batch does not trip it, a run that left its basin does.
    this.smoothLoss = 0.7 * /** @type {number} */ (this.smoothLoss) + 0.3 * loss;
    const limit = this.startLoss + Math.max(this.o.lossRiseNats, this.o.lossRiseFraction * this.startLoss);
    if (this.smoothLoss > limit) {
      return `the loss rose to ${this.smoothLoss.toFixed(3)} (smoothed) from ${this.startLoss.toFixed(3)} at the start, above the limit ${limit.toFixed(3)}`;
    }
    return null;
  }

  /**
   * @param {Float32Array} after weights after the update
   * @param {Float32Array | null} before weights before it (null: not kept, the update-size check is skipped)
   */
  checkUpdate(after, before) {
    let worst = 0;
    let at = 0;
    for (let i = 0; i < after.length; i++) {
      const a = Math.abs(after[i]);
      if (a > worst) {
        worst = a;
        at = i;
      }
    }
    if (worst > this.maxWeight) return `a weight reached ${worst.toExponential(3)} (element ${at}), beyond the bound ${this.maxWeight.toExponential(1)}`;
    if (!before) return null;
    let du = 0;
    let w = 0;
    for (let i = 0; i < after.length; i++) {
      const d = after[i] - before[i];
      du += d * d;
      w += before[i] * before[i];
    }
    const ratio = Math.sqrt(du) / Math.max(Math.sqrt(w), 1e-12);
    if (ratio > this.o.maxUpdateRatio) {
      return `one update changed the weights by ${ratio.toExponential(3)} times their size (norm ${Math.sqrt(du).toExponential(3)}), above ${this.o.maxUpdateRatio}`;
    }
    return null;
  }
}
