// train.js: the training loop over the core: AdamW or SGD, learning-rate schedules, gradient accumulation,
// global-norm clipping, held-out evaluation, checkpoints and resumption, deterministic for a seed and a build.
import { CoreError, NumericError } from '../errors.js';
export { NumericError } from '../errors.js';
import { BatchStream, DataError } from './data.js';
import { DivergenceGuard } from './divergence.js';


/** Held-out tokens evaluated before and after training (and every evalEvery steps), whatever the data size. */
export const DEFAULT_EVAL_TOKENS = 16384;

/** Upper bounds on the knobs whose cost grows with them: past these a value is a typo, not a plan. */
const UPPER_BOUNDS = { gradAccum: 1024, batchSize: 4096, steps: 10_000_000, epochs: 10_000, warmupSteps: 10_000_000, evalTokens: 1 << 26 };
const UPPER_BOUND_WHY = {
  gradAccum: 'each step would run that many forward and backward passes',
  batchSize: 'activations grow with it; use gradAccum for larger effective batches',
  steps: 'use epochs, or several runs with checkpoints',
  epochs: 'the data would be repeated that many times',
  warmupSteps: 'warmup longer than any run',
  evalTokens: 'each evaluation would take longer than training',
};

/** Defaults. SGD defaults to plain steps: constant rate, no clipping, no decay (p <- p - lr g). */
export function trainOptions(opts = {}) {
  const optimizer = opts.optimizer ?? 'adamw';
  if (optimizer !== 'adamw' && optimizer !== 'sgd') throw new DataError(`optimizer must be "adamw" or "sgd", got ${optimizer}`);
  const o = {
    optimizer,
    lr: opts.lr ?? (optimizer === 'sgd' ? 1e-2 : 1e-3),
    beta1: opts.beta1 ?? 0.9,
    beta2: opts.beta2 ?? 0.999,
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? 0,
    schedule: opts.schedule ?? 'constant',
    warmupSteps: opts.warmupSteps ?? 0,
    minLrRatio: opts.minLrRatio ?? 0,
    gradAccum: opts.gradAccum ?? 1,
    clipNorm: opts.clipNorm ?? (optimizer === 'sgd' ? 0 : 1.0),
    batchSize: opts.batchSize ?? 4,
    seqLen: opts.seqLen ?? 128,
    steps: opts.steps ?? null,
    epochs: opts.epochs ?? null,
    evalSplit: opts.evalSplit ?? 0.1,
    evalTokens: opts.evalTokens ?? DEFAULT_EVAL_TOKENS,
    evalEvery: opts.evalEvery ?? 0,
    dropout: opts.dropout ?? 0,
    // keep only each layer's input and recompute its activations in backward: less memory, one more forward pass
    recompute: opts.recompute ?? false,
    // LoRA+ (PEFT's create_loraplus_optimizer): B learns at this multiple of A's learning rate
    loraPlusRatio: opts.loraPlusRatio ?? 1,
    seed: opts.seed ?? 0,
    // false turns off the checks for a finite but diverged run (divergence.js); NaN and inf are always refused
    divergenceGuard: opts.divergenceGuard ?? true,
  };
  const positive = ['lr', 'eps', 'gradAccum', 'batchSize', 'seqLen'];
  for (const k of positive) {
    if (typeof o[k] !== 'number' || !(o[k] > 0) || !Number.isFinite(o[k])) throw new DataError(`${k} must be a positive number, got ${o[k]}`);
  }
  for (const k of ['gradAccum', 'batchSize', 'seqLen', 'warmupSteps']) {
    if (!Number.isInteger(o[k]) || o[k] < 0) throw new DataError(`${k} must be a non-negative integer, got ${o[k]}`);
  }
  for (const [k, max] of Object.entries(UPPER_BOUNDS)) {
    if (o[k] !== null && o[k] > max) throw new DataError(`${k} ${o[k]} is above the limit of ${max}: ${UPPER_BOUND_WHY[k]}`);
  }
  if (!Number.isInteger(o.evalTokens) || o.evalTokens < 1) throw new DataError(`evalTokens must be a positive integer, got ${o.evalTokens}`);
  if (!(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1)) throw new DataError('betas must be in [0, 1)');
  if (!(o.weightDecay >= 0) || !(o.clipNorm >= 0) || !(o.minLrRatio >= 0 && o.minLrRatio <= 1)) {
    throw new DataError('weight decay and clip norm must be >= 0 and the minimum lr ratio in [0, 1]');
  }
  if (typeof o.loraPlusRatio !== 'number' || !(o.loraPlusRatio > 0) || !(o.loraPlusRatio <= 1e6)) {
    throw new DataError(`loraPlusRatio must be a positive number (B's learning rate over A's), got ${o.loraPlusRatio}`);
  }
  if (typeof o.recompute !== 'boolean') throw new DataError(`recompute must be true or false, got ${JSON.stringify(o.recompute) ?? typeof o.recompute}`);
  if (!(o.dropout >= 0 && o.dropout < 1)) throw new DataError(`dropout must be in [0, 1), got ${o.dropout}`);
  if (!['constant', 'cosine', 'linear'].includes(o.schedule)) throw new DataError(`schedule must be constant, cosine or linear, got ${o.schedule}`);
  if (o.steps !== null && (!Number.isInteger(o.steps) || o.steps < 1)) throw new DataError(`steps must be a positive integer, got ${o.steps}`);
  if (o.epochs !== null && !(o.epochs > 0)) throw new DataError(`epochs must be positive, got ${o.epochs}`);
  if (o.steps !== null && o.epochs !== null) throw new DataError('give steps or epochs, not both');
  return o;
}

/**
 * Learning rate of a 0-based step: linear warmup from 0, then constant, cosine or linear decay to lr * minLrRatio.
 * @param {number} step @param {number} total @param {ReturnType<typeof trainOptions>} o
 */
export function learningRate(step, total, o) {
  if (o.warmupSteps > 0 && step < o.warmupSteps) return o.lr * (step + 1) / o.warmupSteps;
  if (o.schedule === 'constant') return o.lr;
  const span = Math.max(1, total - o.warmupSteps);
  const t = Math.min(1, (step - o.warmupSteps) / span);
  const floor = o.lr * o.minLrRatio;
  if (o.schedule === 'linear') return floor + (o.lr - floor) * (1 - t);
  return floor + (o.lr - floor) * 0.5 * (1 + Math.cos(Math.PI * t));
}

/**
 * Mean next-token loss (token-weighted over every valid target) and perplexity of packed sequences, in batches.
 * The model must have room for them (reserve); null for no sequences.
 * @param {import('../core/core.js').Model} model
 * @param {{ tokens: Int32Array, targets: Int32Array, valid: number }[] | import('./data.js').PackedSequences} sequences
 * @param {number} batchSize
 */
export function evaluateSequences(model, sequences, batchSize) {
  if (sequences.length === 0) return null;
  let sum = 0;
  let count = 0;
  for (let i = 0; i < sequences.length; i += batchSize) {
    const chunk = [];
    for (let k = i; k < Math.min(sequences.length, i + batchSize); k++) chunk.push(sequences.at(k));
    const T = chunk[0].tokens.length;
    const tokens = new Int32Array(chunk.length * T);
    const targets = new Int32Array(chunk.length * T);
    let valid = 0;
    chunk.forEach((s, b) => {
      tokens.set(s.tokens, b * T);
      targets.set(s.targets, b * T);
      valid += s.valid;
    });
    sum += model.forward(tokens, { B: chunk.length, T, targets }) * valid;
    count += valid;
  }
  return { loss: sum / count, perplexity: Math.exp(sum / count), tokens: count, sequences: sequences.length };
}

const yieldToEventLoop = () => new Promise((resolve) => setTimeout(resolve, 0));

function throwIfAborted(signal) {
  if (signal?.aborted) {
    throw signal.reason instanceof Error ? signal.reason : new DOMException('training was aborted', 'AbortError');
  }
}

/**
 * Trains a LoRA adapter (or every weight, in full-parameter mode) of a core model.
 */
export class Trainer {
  /**
   * @param {{ model: import('../core/core.js').Model, adapter?: import('../core/core.js').Adapter|null, full?: boolean,
   *   train: {tokens: Int32Array, targets: Int32Array, valid: number}[], eval?: {tokens: Int32Array, targets: Int32Array, valid: number}[],
   *   options?: object, state?: object }} args  state: a checkpoint from checkpoint() to resume from
   */
  constructor({ model, adapter = null, full = false, train, eval: evalSet = [], options = {}, state = null }) {
    if (!adapter && !full) throw new DataError('nothing to train: give an adapter or full-parameter mode');
    this.model = model;
    this.core = model.core;
    this.adapter = adapter;
    this.full = full;
    this.o = trainOptions(options);
    if (full && this.o.loraPlusRatio !== 1) throw new DataError('loraPlusRatio applies to LoRA adapters, not to full-parameter training');
    this.trainSet = train;
    this.evalSet = evalSet;
    if (train.length === 0) throw new DataError('no training sequences');
    const T = train.at(0).tokens.length;
    const microPerStep = this.o.gradAccum;
    const perEpoch = Math.ceil(train.length / (Math.min(this.o.batchSize, train.length) * microPerStep));
    this.totalSteps = this.o.steps ?? Math.max(1, Math.ceil((this.o.epochs ?? 1) * perEpoch));
    try {
      model.reserve(Math.min(this.o.batchSize, train.length), T, { train: true, recompute: this.o.recompute });
    } catch (err) {
      if (err?.code !== 'OUT_OF_MEMORY' || this.o.recompute) throw err;
      throw new CoreError(`${err.message}: training activations for batches of ${Math.min(this.o.batchSize, train.length)} x ${T} `
        + 'tokens do not fit; train with { recompute: true } to keep only each layer\'s input (a fraction of the memory, '
        + 'about a third more time per step), or with a smaller batchSize or seqLen', { code: err.code, details: err.details, cause: err });
    }
    if (evalSet.length) model.reserve(Math.min(this.o.batchSize, evalSet.length), T);
    if (full) model.setFullTraining(true);
    if (adapter) {
      if (!model.attached.includes(adapter)) model.setAdapters([...model.attached, adapter]);
      model.setTrainable(adapter);
    }
    const n = this.paramView().length;
    this.m = this.o.optimizer === 'adamw' ? this.core.allocF32(n) : null;
    this.v = this.o.optimizer === 'adamw' ? this.core.allocF32(n) : null;
    this.step = 0;
    this.microStep = 0;
    this.batches = new BatchStream(train, this.o.batchSize, this.o.seed);
    this.history = [];
    if (state) this.restore(state);
    this.guard = this.o.divergenceGuard ? new DivergenceGuard(this.paramView(), { full }) : null;
    this.updateRanges = this.parameterGroups();
  }

  /**
   * Parameter ranges whose update differs from the plain one over the whole buffer, or null when none does.
   * Full-parameter AdamW decays matrices only (not norms, biases, position tables), as common practice; LoRA+
   * steps every B, and DoRA's magnitudes (PEFT puts 1-D parameters in B's group), at loraPlusRatio times the learning
   * rate of A. Offsets are from the start of the parameter buffer; together the ranges cover all of it.
   * @returns {{ offset: number, numel: number, decay: boolean, lrScale: number }[] | null}
   */
  parameterGroups() {
    if (this.full) {
      const base = this.paramView().byteOffset;
      return this.model.tensors().map((t) => ({ offset: t.dataPtr - base, numel: t.numel, decay: t.decay, lrScale: 1 }));
    }
    if (this.o.loraPlusRatio === 1) return null;
    const base = this.paramView().byteOffset;
    // PEFT's create_loraplus_optimizer sorts by name: "lora_B" in the name or a 1-D parameter goes to B's group, the
    // rest to A's. A token embedding's factors are named lora_embedding_A / lora_embedding_B, so both stay at lr (its
    // separate embedding group at loraplus_lr_embedding tests isinstance(param, Embedding) and never matches).
    const embedding = (m) => m.layer === -1 && m.slot === 0;
    return this.adapter.modules().flatMap((m) => [
      { offset: m.A - base, numel: m.rank * m.inFeatures, decay: true, lrScale: 1 },
      { offset: m.B - base, numel: m.outFeatures * m.rank + (m.magnitude ? m.outFeatures : 0), decay: true,
        lrScale: embedding(m) ? 1 : this.o.loraPlusRatio },
    ]);
  }

  paramView() {
    return this.full ? this.model.params() : this.adapter.params();
  }

  gradView() {
    return this.full ? this.model.grads() : this.adapter.grads();
  }

  zeroGrads() {
    if (this.adapter) this.adapter.zeroGrad();
    if (this.full) this.model.zeroGrad();
  }

  /** Mean next-token loss over a set of sequences (token-weighted), and its perplexity. */
  evaluate(sequences = this.evalSet) {
    const r = evaluateSequences(this.model, sequences, this.o.batchSize);
    if (r && !Number.isFinite(r.loss)) {
      throw new NumericError(`training stopped after step ${this.step}: the held-out loss is ${r.loss}`, { code: 'DIVERGED' });
    }
    return r;
  }

  /**
   * One optimizer step: gradAccum micro-batches, checks, clipping, update. The loss and its gradient are the mean
   * over every target token of the step's micro-batches (each weighted by its target tokens, as Hugging Face
   * Trainer does), so accumulating micro-batches equals one batch of them, padded sequences included.
   * @returns {{ step: number, loss: number, lr: number, gradNorm: number, tokens: number, epoch: number }}
   */
  trainStep() {
    const { core, o } = this;
    const x = core.x;
    this.zeroGrads();
    // Pointer and length, not the view: a view of wasm memory goes stale if the memory grows during a pass.
    const { byteOffset: gPtr, length: nGrads } = this.gradView();
    let lossSum = 0;
    let tokens = 0;
    let epoch = 0;
    // Each backward adds the gradient g of its micro-batch's mean loss. The sum so far is kept divided by the last
    // micro-batch's target count n: rescaling it by n / n_next before the next backward, and by n / tokens at the
    // end, leaves sum(n_i g_i) / tokens.
    let divisor = 0;
    for (let a = 0; a < o.gradAccum; a++) {
      const batch = this.batches.next();
      epoch = batch.epoch;
      this.model.setLoraDropout(o.dropout, o.seed, this.microStep); // p 0 turns off a previous run's dropout
      this.microStep++;
      const loss = this.model.forward(batch.tokens, { B: batch.B, T: batch.T, targets: batch.targets, train: true });
      if (!Number.isFinite(loss)) throw this.diverged(`the loss is ${loss}`);
      if (divisor > 0 && divisor !== batch.valid) x.wl_scale(gPtr, nGrads, divisor / batch.valid);
      this.model.backward();
      divisor = batch.valid;
      lossSum += loss * batch.valid;
      tokens += batch.valid;
    }
    const rose = this.guard?.checkLoss(lossSum / tokens);
    if (rose) throw this.diverged(`the run diverged: ${rose}`);
    if (divisor !== tokens) x.wl_scale(gPtr, nGrads, divisor / tokens);
    const gradNorm = Math.sqrt(x.wl_sum_squares(gPtr, nGrads));
    if (!Number.isFinite(gradNorm)) throw this.diverged(`the gradient norm is ${gradNorm}`);
    if (o.clipNorm > 0 && gradNorm > o.clipNorm) x.wl_scale(gPtr, nGrads, o.clipNorm / gradNorm);
    const lr = learningRate(this.step, this.totalSteps, o);
    const params = this.paramView();
    const pPtr = params.byteOffset;
    // An update can still overflow (a huge learning rate): keep the adapter's previous weights to fall back to.
    // (Adapters are small; full-parameter runs skip the copy and only report.)
    if (!this.full) {
      if (!this.lastGood || this.lastGood.length !== params.length) this.lastGood = new Float32Array(params.length);
      this.lastGood.set(params);
    }
    this.step++;
    const ranges = this.updateRanges ?? [{ offset: 0, numel: params.length, decay: true, lrScale: 1 }];
    for (const { offset, numel, decay, lrScale } of ranges) {
      if (o.optimizer === 'sgd') {
        core.check(x.wl_sgd_step(lr * lrScale, pPtr + offset, gPtr + offset, numel), 'SGD step');
      } else {
        core.check(x.wl_adamw_step(lr * lrScale, o.beta1, o.beta2, o.eps, decay ? o.weightDecay : 0, this.step, pPtr + offset,
          gPtr + offset, this.m.ptr + offset, this.v.ptr + offset, numel), 'AdamW step');
      }
    }
    if (!x.wl_all_finite(pPtr, params.length)) {
      this.step--;
      throw this.diverged(`the update made weights NaN or infinite (learning rate ${lr})`, true);
    }
    const blown = this.guard?.checkUpdate(params, this.full ? null : this.lastGood);
    if (blown) {
      this.step--;
      throw this.diverged(`the run diverged: ${blown} (learning rate ${lr})`, true);
    }
    const record = { step: this.step, loss: lossSum / tokens, lr, gradNorm, tokens, epoch };
    this.history.push(record.loss);
    return record;
  }

  /**
   * The error for a run that went non-finite at step this.step + 1. The weights that step started from gave the
   * non-finite value, so an adapter goes back to the weights before the previous update (the last whose loss was
   * finite); full-parameter runs keep no copy and say so.
   * @param {string} what
   * @param {boolean} [afterUpdate] the current update itself overflowed (its starting weights were fine)
   */
  diverged(what, afterUpdate = false) {
    const at = this.step + 1;
    let kept;
    if (this.full) {
      kept = afterUpdate ? 'the model weights are no longer usable' : `the model keeps the weights after step ${this.step}`;
    } else if (afterUpdate || (this.lastGood && this.step > 0)) {
      if (this.lastGood) this.paramView().set(this.lastGood);
      if (!afterUpdate) this.step--;
      kept = `the adapter is back to the weights after step ${this.step}, the last with a finite loss`;
    } else {
      kept = `the adapter keeps the weights after step ${this.step}`;
    }
    this.lastGood = null;
    return new NumericError(`training stopped at step ${at}: ${what}; ${kept}`, { code: 'DIVERGED' });
  }

  /**
   * Run to totalSteps.
   * @param {{ signal?: AbortSignal, onStep?: (r: object) => void, onEval?: (r: object) => void,
   *   checkpointEvery?: number, onCheckpoint?: (state: object) => (void|Promise<void>) }} [hooks]
   */
  async run(hooks = {}) {
    const { signal, onStep, onEval, checkpointEvery = 0, onCheckpoint } = hooks;
    const started = performance.now();
    let tokens = 0;
    let last = null;
    const evalBefore = this.step === 0 ? this.evaluate() : null;
    if (evalBefore && onEval) onEval({ step: 0, ...evalBefore });
    while (this.step < this.totalSteps) {
      throwIfAborted(signal);
      last = this.trainStep();
      tokens += last.tokens;
      const seconds = (performance.now() - started) / 1000;
      if (onStep) onStep({ ...last, totalSteps: this.totalSteps, tokensPerSecond: tokens / seconds, elapsed: seconds });
      if (this.o.evalEvery > 0 && this.step % this.o.evalEvery === 0 && this.step < this.totalSteps && this.evalSet.length) {
        const ev = this.evaluate();
        if (onEval) onEval({ step: this.step, ...ev });
      }
      if (checkpointEvery > 0 && onCheckpoint && this.step % checkpointEvery === 0 && this.step < this.totalSteps) {
        await onCheckpoint(this.checkpoint());
      }
      await yieldToEventLoop();
    }
    const evalAfter = this.evaluate();
    if (evalAfter && onEval) onEval({ step: this.step, ...evalAfter });
    const seconds = (performance.now() - started) / 1000;
    const recent = this.history.slice(-Math.max(1, Math.min(10, this.history.length)));
    return {
      steps: this.step,
      totalSteps: this.totalSteps,
      trainLoss: last ? last.loss : null,
      trainLossRecent: recent.reduce((a, b) => a + b, 0) / recent.length,
      evalLossBefore: evalBefore ? evalBefore.loss : null,
      evalLoss: evalAfter ? evalAfter.loss : null,
      perplexity: evalAfter ? evalAfter.perplexity : null,
      tokens,
      seconds,
      tokensPerSecond: tokens / seconds,
    };
  }

  /** Serializable state: weights, optimizer moments, counters and data position. */
  checkpoint() {
    return {
      step: this.step,
      microStep: this.microStep,
      totalSteps: this.totalSteps,
      options: { ...this.o },
      position: this.batches.position(),
      params: this.paramView().slice(),
      m: this.m ? this.m.view().slice() : null,
      v: this.v ? this.v.view().slice() : null,
      history: this.history.slice(),
    };
  }

  restore(state) {
    const params = this.paramView();
    if (!state.params || state.params.length !== params.length) {
      throw new DataError(`checkpoint holds ${state.params?.length} parameters, the model expects ${params.length}`);
    }
    params.set(state.params);
    if (this.m && state.m) this.m.view().set(state.m);
    if (this.v && state.v) this.v.view().set(state.v);
    this.step = state.step;
    this.microStep = state.microStep ?? 0;
    this.history = state.history ? state.history.slice() : [];
    this.batches = new BatchStream(this.trainSet, this.o.batchSize, this.o.seed, state.position);
  }

  /** Release optimizer state and the training settings of the model (the adapter stays attached). */
  dispose() {
    this.m?.free();
    this.v?.free();
    this.m = this.v = null;
    this.model.setLoraDropout(0);
    if (this.adapter) this.model.setTrainable(null);
    if (this.full) this.model.setFullTraining(false);
  }
}
