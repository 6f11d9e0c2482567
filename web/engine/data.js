// data.js: turning a person's texts into training sequences: documents with BOS/EOS as the model expects,
// packed into fixed-length sequences, a held-out split, and seeded shuffling into batches.
import { DataError } from '../errors.js';
export { DataError } from '../errors.js';
import { Rng } from './rng.js';
import { IGNORE_ID } from '../core/core.js';


/** A long document is encoded this many characters at a time (cut at a line break), so the tokenizer's working
 * memory stays bounded; shorter documents are encoded in one call, exactly as a whole. */
export const ENCODE_BLOCK_CHARS = 1 << 20;

/**
 * Encodes documents into a token stream: [BOS] + ids + [EOS] per document (BOS only when the tokenizer's model
 * expects it). Text arrives in pieces (a document may be streamed from a file); a document longer than
 * ENCODE_BLOCK_CHARS is encoded one block of whole lines at a time.
 */
export class DocumentEncoder {
  /**
   * @param {{ encode(text: string): number[], bosId: number|null, eosId: number|null, addsBos: boolean }} tokenizer
   * @param {{ push(ids: ArrayLike<number>): void }} out
   * @param {number} [vocabSize] ids at or above it are refused (a tokenizer that does not fit the model)
   */
  constructor(tokenizer, out, vocabSize = Infinity) {
    this.tok = tokenizer;
    this.out = out;
    this.vocabSize = vocabSize;
    this.pending = '';
    this.started = false;
    this.documents = 0;
  }

  /** @param {string} text more of the current document */
  write(text) {
    this.pending += text;
    while (this.pending.length >= ENCODE_BLOCK_CHARS) {
      const cut = blockEnd(this.pending);
      if (cut <= 0) break;
      this.#emit(this.pending.slice(0, cut));
      this.pending = this.pending.slice(cut);
    }
  }

  /** Ends the current document (an empty one adds nothing). */
  end() {
    // A file's final newline(s) belong to the file, not to the document: the document ends with EOS instead.
    const rest = this.pending.replace(/\s+$/u, '');
    this.pending = '';
    if (rest !== '') this.#emit(rest);
    if (this.started && this.tok.eosId !== null && this.tok.eosId !== undefined) this.out.push([this.tok.eosId]);
    if (this.started) this.documents++;
    this.started = false;
  }

  /** @param {string} text */
  #emit(text) {
    if (!this.started) {
      if (text.trim() === '') {
        this.pending = text + this.pending;
        return;
      }
      this.started = true;
      if (this.tok.addsBos && this.tok.bosId !== null && this.tok.bosId !== undefined) this.out.push([this.tok.bosId]);
    }
    const ids = this.tok.encode(text);
    for (const id of ids) {
      if (!(id >= 0 && id < this.vocabSize)) {
        throw new DataError(`the tokenizer produced id ${id}, outside the model's vocabulary of ${this.vocabSize}`);
      }
    }
    this.out.push(ids);
  }
}

/** Where to cut a long text: after its last line break (or space) within the block, never inside a surrogate pair. */
function blockEnd(text) {
  const window = text.slice(0, ENCODE_BLOCK_CHARS);
  const nl = window.lastIndexOf('\n');
  if (nl > 0) return nl + 1;
  const sp = window.lastIndexOf(' ');
  if (sp > 0) return sp + 1;
  const c = window.charCodeAt(window.length - 1);
  return c >= 0xd800 && c < 0xdc00 ? window.length - 1 : window.length;
}

/**
 * Tokenize documents: [BOS] + ids + [EOS] per document (BOS only when the tokenizer's model expects it).
 * @param {{ encode(text: string): number[], bosId: number|null, eosId: number|null, addsBos: boolean }} tokenizer
 * @param {string[]} texts
 * @param {number} [vocabSize]
 * @returns {Int32Array} the concatenated token stream
 */
export function tokenizeDocuments(tokenizer, texts, vocabSize) {
  if (!Array.isArray(texts)) throw new DataError('training data must be an array of strings');
  const buffer = new TokenBuffer();
  const enc = new DocumentEncoder(tokenizer, buffer, vocabSize);
  texts.forEach((text, i) => {
    if (typeof text !== 'string') throw new DataError(`document ${i} is a ${typeof text}, not a string`);
    enc.write(text);
    enc.end();
  });
  if (enc.documents === 0) throw new DataError('the training data is empty (no document has any text)');
  const stream = new Int32Array(buffer.length);
  buffer.copyTo(stream, 0, buffer.length);
  return stream;
}

/**
 * Token ids in fixed-size blocks, appended as a corpus is tokenized: growing never copies what is there, so memory
 * stays at 4 bytes per token (plus one partly filled block).
 */
export class TokenBuffer {
  /** @param {number} [blockSize] tokens per block */
  constructor(blockSize = 1 << 20) {
    this.blockSize = blockSize;
    /** @type {Int32Array[]} */
    this.blocks = [];
    this.length = 0;
  }

  /** @param {Int32Array} array one block holding a whole stream */
  static of(array) {
    const b = new TokenBuffer(Math.max(1, array.length));
    b.blocks.push(array);
    b.length = array.length;
    return b;
  }

  /** @param {ArrayLike<number>} ids */
  push(ids) {
    let i = 0;
    while (i < ids.length) {
      const at = this.length % this.blockSize;
      if (at === 0) this.blocks.push(new Int32Array(this.blockSize));
      const block = this.blocks[this.blocks.length - 1];
      const n = Math.min(ids.length - i, this.blockSize - at);
      for (let k = 0; k < n; k++) block[at + k] = ids[i + k];
      i += n;
      this.length += n;
    }
  }

  /** Copies ids [from, to) into out at offset. */
  copyTo(out, from, to, offset = 0) {
    while (from < to) {
      const b = Math.floor(from / this.blockSize);
      const at = from - b * this.blockSize;
      const n = Math.min(to - from, this.blockSize - at);
      out.set(this.blocks[b].subarray(at, at + n), offset);
      from += n;
      offset += n;
    }
  }
}

/**
 * Sequences of T inputs with next-token targets over a token stream, made on demand: sequence i covers stream
 * positions [i*T, i*T + T] (consecutive sequences share one boundary token, so every adjacent pair is a target
 * once). The last, shorter sequence is padded: pad inputs with padId and their targets with IGNORE_ID. Holds no
 * copy of the stream; a subset is a list of sequence numbers (4 bytes each).
 */
export class PackedSequences {
  /**
   * @param {TokenBuffer} buffer
   * @param {number} T
   * @param {number} padId
   * @param {Uint32Array | null} [indices] the sequences of this set (null: all)
   */
  constructor(buffer, T, padId, indices = null) {
    this.buffer = buffer;
    this.T = T;
    this.padId = padId;
    this.indices = indices;
    this.total = Math.ceil((buffer.length - 1) / T);
  }

  get length() {
    return this.indices ? this.indices.length : this.total;
  }

  /** @param {number} i (negative counts from the end) @returns {{ tokens: Int32Array, targets: Int32Array, valid: number }} */
  at(i) {
    if (i < 0) i += this.length;
    if (!(i >= 0 && i < this.length)) return /** @type {any} */ (undefined);
    const start = (this.indices ? this.indices[i] : i) * this.T;
    const tokens = new Int32Array(this.T).fill(this.padId);
    const targets = new Int32Array(this.T).fill(IGNORE_ID);
    const n = Math.min(this.T, this.buffer.length - 1 - start);
    this.buffer.copyTo(tokens, start, start + n);
    this.buffer.copyTo(targets, start + 1, start + 1 + n);
    return { tokens, targets, valid: n };
  }

  /** @param {Uint32Array} positions positions in this set */
  subset(positions) {
    const indices = this.indices ? positions.map((p) => /** @type {Uint32Array} */ (this.indices)[p]) : positions;
    return new PackedSequences(this.buffer, this.T, this.padId, indices);
  }

  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }
}

/**
 * Pack a token stream into sequences of T inputs with next-token targets (see PackedSequences).
 * @param {Int32Array | TokenBuffer} stream
 * @param {number} T
 * @param {number} padId
 * @returns {PackedSequences}
 */
export function packSequences(stream, T, padId = 0) {
  if (!Number.isInteger(T) || T < 1) throw new DataError(`sequence length must be a positive integer, got ${T}`);
  if (stream.length < 2) {
    throw new DataError(`the data is too short: ${stream.length} token(s), at least 2 are needed for one next-token target`);
  }
  return new PackedSequences(stream instanceof TokenBuffer ? stream : TokenBuffer.of(stream), T, padId);
}

/**
 * Split sequences into train and held-out sets with a seeded permutation. With fewer than 2 sequences there is
 * nothing to hold out: everything trains and `eval` is empty (callers report that instead of a held-out loss).
 * At most maxEval sequences are held out (the evaluation budget); the rest of the fraction trains.
 * @template S
 * @param {S[] | PackedSequences} sequences
 * @param {number} evalFraction in [0, 1)
 * @param {number} seed
 * @param {number} [maxEval]
 * @returns {{ train: any, eval: any, capped: boolean }}
 */
export function splitHeldOut(sequences, evalFraction, seed, maxEval = Infinity) {
  if (!(evalFraction >= 0 && evalFraction < 1)) throw new DataError(`eval split must be in [0, 1), got ${evalFraction}`);
  const n = sequences.length;
  const all = () => (sequences instanceof PackedSequences ? sequences : sequences.slice());
  if (evalFraction === 0 || n < 2) return { train: all(), eval: sequences instanceof PackedSequences ? sequences.subset(new Uint32Array(0)) : [], capped: false };
  const order = new Rng(seed ^ 0x5eed).shuffle(Uint32Array.from({ length: n }, (_, i) => i));
  const wanted = Math.min(n - 1, Math.max(1, Math.round(n * evalFraction)));
  const nEval = Math.max(1, Math.min(wanted, maxEval));
  const evalIdx = order.slice(0, nEval).sort();
  const isEval = new Uint8Array(n);
  for (const i of evalIdx) isEval[i] = 1;
  const trainIdx = new Uint32Array(n - nEval);
  for (let i = 0, k = 0; i < n; i++) if (!isEval[i]) trainIdx[k++] = i;
  if (sequences instanceof PackedSequences) {
    return { train: sequences.subset(trainIdx), eval: sequences.subset(evalIdx), capped: nEval < wanted };
  }
  return { train: Array.from(trainIdx, (i) => sequences[i]), eval: Array.from(evalIdx, (i) => sequences[i]), capped: nEval < wanted };
}

/**
 * Endless seeded batches over the training sequences, reshuffled every epoch; its position is serialisable so
 * an interrupted run resumes on the same batch.
 */
export class BatchStream {
  /**
   * @param {{ tokens: Int32Array, targets: Int32Array, valid: number }[] | PackedSequences} sequences
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
    return new Rng((this.seed + Math.imul(epoch + 1, 0x9e3779b1)) >>> 0).shuffle(Uint32Array.from({ length: this.sequences.length }, (_, i) => i));
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
    const T = this.sequences.at(0).tokens.length;
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
      const s = this.sequences.at(this.order[this.index++]);
      tokens.set(s.tokens, b * T);
      targets.set(s.targets, b * T);
      valid += s.valid;
    }
    return { tokens, targets, B, T, valid, epoch };
  }
}
