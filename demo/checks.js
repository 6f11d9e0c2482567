// checks.js: the demo's guidance as pure functions. Every setting is checked and a wrong one gets a message for the
// person next to its field (nothing is silently clamped); the amount of text gets advice before training starts.

/** Whole numbers and bounds the demo accepts; the sequence length's upper bound is the loaded model's context. */
export const LIMITS = Object.freeze({
  steps: { min: 1, max: 5000 },
  batchSize: { min: 1, max: 64 },
  lr: { min: 1e-6, max: 0.05 },
  seqLen: { min: 8 },
  maxTokens: { min: 1, max: 512 },
  temperature: { min: 0, max: 2 },
});
export const RANKS = Object.freeze([4, 8, 16, 32]);
/** Below this many training tokens an adapter has too little to generalise from. */
export const FEW_TOKENS = 1000;
/** Above this many passes over a small text an adapter tends to repeat it word for word. */
export const MANY_PASSES = 50;

const fmt = (/** @type {number} */ n) => n.toLocaleString('en-US');
const gb = (/** @type {number} */ bytes) => `${(bytes / 1024 ** 3).toFixed(1)} GB`;

/**
 * A typed number: null when empty, NaN when it is not a number (an <input type=number> reports that as badInput
 * with an empty value, so callers pass 'NaN' then).
 * @param {string} raw
 */
function parse(raw) {
  const text = String(raw ?? '').trim();
  if (text === '') return null;
  const n = Number(text);
  return Number.isFinite(n) ? n : NaN;
}

/**
 * @param {string} raw @param {string} what e.g. 'Steps' @param {{ min: number, max?: number }} range
 * @param {string} example
 * @returns {{ value: number | null, error: string | null }}
 */
function wholeNumber(raw, what, range, example) {
  const n = parse(raw);
  const span = range.max === undefined ? `of at least ${fmt(range.min)}` : `from ${fmt(range.min)} to ${fmt(range.max)}`;
  if (n === null) return { value: null, error: `Enter ${what.toLowerCase()}: a whole number ${span} (for example ${example}).` };
  if (Number.isNaN(n) || !Number.isInteger(n)) return { value: null, error: `${what} must be a whole number ${span}.` };
  if (n < range.min || (range.max !== undefined && n > range.max)) {
    return { value: null, error: `${what} must be a whole number ${span}; ${fmt(n)} is outside that.` };
  }
  return { value: n, error: null };
}

/**
 * @typedef {object} ModelLimits what the loaded model allows
 * @property {number} maxSeqLen tokens it reads at most at a time
 * @property {(B: number, T: number) => number} memoryFor estimated bytes to train with B sequences of T tokens
 * @property {number} memoryLimit bytes a page can have (WebAssembly memory)
 * @property {number | null} deviceBytes a cautious share of this device's memory, when the browser tells
 */

/**
 * Checks the training settings as typed.
 * @param {{ steps: string, lr: string, rank: string, seqLen: string, batchSize: string }} raw
 * @param {ModelLimits | null} model null before a model is loaded (the length is then checked against no context)
 * @returns {{ values: { steps: number, lr: number, rank: number, seqLen: number, batchSize: number } | null,
 *   errors: Record<string, string>, warnings: Record<string, string> }}
 */
export function checkTraining(raw, model) {
  /** @type {Record<string, string>} */
  const errors = {};
  /** @type {Record<string, string>} */
  const warnings = {};
  const steps = wholeNumber(raw.steps, 'Steps', LIMITS.steps, '100');
  if (steps.error) errors.steps = steps.error;
  const batch = wholeNumber(raw.batchSize, 'Batch size', LIMITS.batchSize, '8');
  if (batch.error) errors.batchSize = batch.error;
  const seqRange = { min: LIMITS.seqLen.min, max: model?.maxSeqLen };
  const seq = wholeNumber(raw.seqLen, 'Sequence length', seqRange, '64');
  if (seq.error) {
    const n = parse(raw.seqLen);
    errors.seqLen = model && Number.isInteger(n) && /** @type {number} */ (n) > model.maxSeqLen
      ? `This model reads at most ${fmt(model.maxSeqLen)} tokens at a time: use a sequence length from ${LIMITS.seqLen.min} to ${fmt(model.maxSeqLen)}.`
      : seq.error;
  }
  const rank = parse(raw.rank);
  if (rank === null || !RANKS.includes(/** @type {number} */ (rank))) errors.rank = `Rank must be one of ${RANKS.join(', ')}.`;

  const lr = parse(raw.lr);
  if (lr === null) errors.lr = 'Enter a learning rate, for example 0.002.';
  else if (Number.isNaN(lr)) errors.lr = 'The learning rate must be a number, for example 0.002.';
  else if (lr <= 0) errors.lr = 'The learning rate must be above 0: at 0 the adapter learns nothing. 0.001 to 0.005 suits LoRA.';
  else if (lr < LIMITS.lr.min) errors.lr = `A learning rate below ${LIMITS.lr.min} changes the adapter too little to notice. 0.001 to 0.005 suits LoRA.`;
  else if (lr > LIMITS.lr.max) errors.lr = `A learning rate above ${LIMITS.lr.max} makes training unstable (the loss jumps instead of falling). 0.001 to 0.005 suits LoRA.`;
  else if (lr > 0.01) warnings.lr = 'This is high for LoRA: if the loss jumps around, lower it.';

  if (model && seq.value !== null && batch.value !== null) {
    const need = model.memoryFor(batch.value, seq.value);
    const fits = (/** @type {number} */ T, /** @type {number} */ limit) => model.memoryFor(batch.value ?? 1, T) <= limit;
    const longest = (/** @type {number} */ limit) => {
      let lo = LIMITS.seqLen.min;
      let hi = seq.value ?? lo;
      if (!fits(lo, limit)) return 0;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (fits(mid, limit)) lo = mid;
        else hi = mid - 1;
      }
      return lo;
    };
    if (need > model.memoryLimit) {
      const T = longest(model.memoryLimit);
      errors.seqLen = `Training batches of ${batch.value} × ${fmt(seq.value)} tokens needs about ${gb(need)}, more than a browser tab can use (${gb(model.memoryLimit)}): `
        + (T ? `use a sequence length of at most ${fmt(T)}, or a smaller batch size.` : 'use a smaller batch size.');
    } else if (model.deviceBytes !== null && need > model.deviceBytes) {
      warnings.seqLen = `Training this way needs about ${gb(need)}, a lot for this device: the browser may stop the page. A shorter sequence or smaller batch is safer.`;
    }
  }
  const ok = Object.keys(errors).length === 0;
  return {
    values: ok ? {
      steps: /** @type {number} */ (steps.value), lr: /** @type {number} */ (lr), rank: /** @type {number} */ (rank),
      seqLen: /** @type {number} */ (seq.value), batchSize: /** @type {number} */ (batch.value),
    } : null,
    errors,
    warnings,
  };
}

/**
 * Checks the generation settings of the compare step.
 * @param {{ maxTokens: string, temperature: string }} raw
 * @returns {{ values: { maxTokens: number, temperature: number } | null, errors: Record<string, string> }}
 */
export function checkGeneration(raw) {
  /** @type {Record<string, string>} */
  const errors = {};
  const tokens = wholeNumber(raw.maxTokens, 'Tokens', LIMITS.maxTokens, '60');
  if (tokens.error) errors.maxTokens = tokens.error;
  const t = parse(raw.temperature);
  const { min, max } = LIMITS.temperature;
  if (t === null || Number.isNaN(t) || t < min || t > max) {
    errors.temperature = `Temperature must be a number from ${min} to ${max}: 0 always picks the likeliest word, higher is more adventurous.`;
  }
  return Object.keys(errors).length ? { values: null, errors } : { values: { maxTokens: /** @type {number} */ (tokens.value), temperature: /** @type {number} */ (t) }, errors };
}

/**
 * Advice on the text before training: too short for one sequence, so short the adapter can only memorise it, or
 * gone over so many times that it will be repeated back.
 * @param {{ tokens: number, words: number, seqLen: number | null, steps: number | null, batchSize: number | null }} run
 * @returns {string[]}
 */
export function textAdvice({ tokens, words, seqLen, steps, batchSize }) {
  const out = [];
  if (tokens <= 0) return out;
  // packSequences cuts tokens - 1 next-token pairs into sequences of seqLen
  const pairs = tokens - 1;
  if (seqLen !== null && pairs < seqLen) {
    const shorter = 2 ** Math.floor(Math.log2(Math.max(pairs, 1)));
    out.push(`Your text is ${fmt(tokens)} tokens, shorter than one training sequence of ${fmt(seqLen)} tokens: training repeats the same `
      + `padded piece. Add more text${shorter >= LIMITS.seqLen.min ? `, or use a sequence length of ${fmt(shorter)}` : ''}.`);
  }
  if (tokens < FEW_TOKENS) {
    out.push(`With only ${fmt(words)} word${words === 1 ? '' : 's'} (${fmt(tokens)} tokens) the adapter can only memorise this text, `
      + 'not learn your style. A few thousand words of your writing give a much better result.');
  } else if (seqLen !== null && steps !== null && batchSize !== null) {
    const passes = (steps * batchSize * seqLen) / tokens;
    if (passes > MANY_PASSES) {
      out.push(`Training would go over your text about ${fmt(Math.round(passes))} times, so the adapter will tend to repeat it word for word. `
        + 'Use fewer steps, or add more text.');
    }
  }
  return out;
}
