// data.js: turning a person's texts into training sequences: documents with BOS/EOS as the model expects,
// packed into fixed-length sequences, a held-out split, and seeded shuffling into batches.
import { DataError } from './errors.js';
export { DataError } from './errors.js';
import { Rng } from './rng.js';
import { IGNORE_ID } from './core.js';


/**
 * Tokenize documents: [BOS] + ids + [EOS] per document (BOS only when the tokenizer's model expects it).
 * @param {{ encode(text: string): number[], bosId: number|null, eosId: number|null, addsBos: boolean }} tokenizer
 * @param {string[]} texts
 * @returns {Int32Array} the concatenated token stream
 */
export function tokenizeDocuments(tokenizer, texts) {
  if (!Array.isArray(texts)) throw new DataError('training data must be an array of strings');
  const parts = [];
  let total = 0;
  texts.forEach((text, i) => {
    if (typeof text !== 'string') throw new DataError(`document ${i} is a ${typeof text}, not a string`);
    if (text.trim() === '') return;
    // A file's final newline(s) belong to the file, not to the document: the document ends with EOS instead.
    const ids = tokenizer.encode(text.replace(/\s+$/u, ''));
    const doc = [];
    if (tokenizer.addsBos && tokenizer.bosId !== null && tokenizer.bosId !== undefined) doc.push(tokenizer.bosId);
    for (const id of ids) doc.push(id);
    if (tokenizer.eosId !== null && tokenizer.eosId !== undefined) doc.push(tokenizer.eosId);
    parts.push(doc);
    total += doc.length;
  });
  if (parts.length === 0) throw new DataError('the training data is empty (no document has any text)');
  const stream = new Int32Array(total);
  let at = 0;
  for (const p of parts) {
    stream.set(p, at);
    at += p.length;
  }
  return stream;
}

/**
 * Pack a token stream into sequences of T inputs with next-token targets: sequence i covers stream positions
 * [i*T, i*T + T] (consecutive sequences share one boundary token, so every adjacent pair is a target once). The
 * last, shorter sequence is padded: pad inputs with padId and their targets with IGNORE_ID.
 * @param {Int32Array} stream
 * @param {number} T
 * @param {number} padId
 * @returns {{ tokens: Int32Array, targets: Int32Array, valid: number }[]}
 */
export function packSequences(stream, T, padId = 0) {
  if (!Number.isInteger(T) || T < 1) throw new DataError(`sequence length must be a positive integer, got ${T}`);
  if (stream.length < 2) {
    throw new DataError(`the data is too short: ${stream.length} token(s), at least 2 are needed for one next-token target`);
  }
  const out = [];
  for (let start = 0; start + 1 < stream.length; start += T) {
    const tokens = new Int32Array(T).fill(padId);
    const targets = new Int32Array(T).fill(IGNORE_ID);
    const n = Math.min(T, stream.length - 1 - start);
    tokens.set(stream.subarray(start, start + n));
    targets.set(stream.subarray(start + 1, start + 1 + n));
    out.push({ tokens, targets, valid: n });
  }
  return out;
}

/**
 * Split sequences into train and held-out sets with a seeded permutation. With fewer than 2 sequences there is
 * nothing to hold out: everything trains and `eval` is empty (callers report that instead of a held-out loss).
 * @template S
 * @param {S[]} sequences
 * @param {number} evalFraction in [0, 1)
 * @param {number} seed
 * @returns {{ train: S[], eval: S[] }}
 */
export function splitHeldOut(sequences, evalFraction, seed) {
  if (!(evalFraction >= 0 && evalFraction < 1)) throw new DataError(`eval split must be in [0, 1), got ${evalFraction}`);
  if (evalFraction === 0 || sequences.length < 2) return { train: sequences.slice(), eval: [] };
  const order = new Rng(seed ^ 0x5eed).shuffle(sequences.map((_, i) => i));
  const nEval = Math.min(sequences.length - 1, Math.max(1, Math.round(sequences.length * evalFraction)));
  const evalIdx = order.slice(0, nEval).sort((a, b) => a - b);
  const evalSet = new Set(evalIdx);
  return {
    train: sequences.filter((_, i) => !evalSet.has(i)),
    eval: evalIdx.map((i) => sequences[i]),
  };
}

/**
 * Endless seeded batches over the training sequences, reshuffled every epoch; its position is serialisable so
 * an interrupted run resumes on the same batch.
 */
export class BatchStream {
  /**
   * @param {{ tokens: Int32Array, targets: Int32Array, valid: number }[]} sequences
   * @param {number} batchSize
   * @param {number} seed
   * @param {{ epoch: number, index: number }} [position]
   */
  constructor(sequences, batchSize, seed, position) {
    if (sequences.length === 0) throw new DataError('no training sequences');
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new DataError(`batch size must be a positive integer, got ${batchSize}`);
    this.sequences = sequences;
    this.batchSize = batchSize;
    this.seed = seed;
    this.epoch = position?.epoch ?? 0;
    this.index = position?.index ?? 0;
    this.order = this.orderFor(this.epoch);
  }

  orderFor(epoch) {
    return new Rng((this.seed + Math.imul(epoch + 1, 0x9e3779b1)) >>> 0).shuffle(this.sequences.map((_, i) => i));
  }

  /** Sequences per epoch divided into batches (the last may wrap into the next epoch). */
  get batchesPerEpoch() {
    return Math.ceil(this.sequences.length / this.batchSize);
  }

  position() {
    return { epoch: this.epoch, index: this.index };
  }

  /** @returns {{ tokens: Int32Array, targets: Int32Array, B: number, T: number, valid: number, epoch: number }} */
  next() {
    const T = this.sequences[0].tokens.length;
    const B = Math.min(this.batchSize, this.sequences.length);
    const tokens = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    let valid = 0;
    const epoch = this.epoch;
    for (let b = 0; b < B; b++) {
      if (this.index >= this.order.length) {
        this.epoch++;
        this.index = 0;
        this.order = this.orderFor(this.epoch);
      }
      const s = this.sequences[this.order[this.index++]];
      tokens.set(s.tokens, b * T);
      targets.set(s.targets, b * T);
      valid += s.valid;
    }
    return { tokens, targets, B, T, valid, epoch };
  }
}
