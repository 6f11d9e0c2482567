// The llama2.c tokenizer.bin format and the BPE rules of karpathy/llama2.c run.c (encode/decode), with a
// priority queue over merge candidates so megabytes of training text encode in well under a second.

import { TokenizerError } from '../errors.js';

/** Ids fixed by llama2.c's SentencePiece export: unknown, begin and end of sequence, then 256 byte tokens. */
export const LLAMA2C_UNK_ID = 0;
export const LLAMA2C_BOS_ID = 1;
export const LLAMA2C_EOS_ID = 2;
const BYTE_OFFSET = 3;
// run.c starts each merge scan with best_score = -1e10 and only takes strictly better scores.
const MIN_MERGE_SCORE = -1e10;
const SPACE = 0x20;

// ignoreBOM: a leading U+FEFF is text (Llama-2 even has it as a piece), not a byte-order mark to drop.
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/**
 * Bytes as a "binary string" (one char per byte), so pieces are compared and concatenated byte for byte like
 * run.c's C strings, even where a piece is not valid UTF-8 on its own.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
function binaryString(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/**
 * Reads tokenizer.bin: int32 max_token_length, then per id f32 score, int32 byte length, bytes (little-endian).
 * @param {Uint8Array} bytes
 * @param {number|undefined} vocabSize entries to read (run.c reads the model's vocab_size); undefined: to the end
 * @returns {{ pieces: Uint8Array[], scores: Float32Array, maxTokenLength: number }}
 */
export function parseLlama2cTokenizer(bytes, vocabSize) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 4) {
    throw new TokenizerError(`llama2.c tokenizer.bin is truncated: ${bytes.byteLength} bytes, ` +
      'too short for its int32 max_token_length header', { code: 'BAD_TOKENIZER' });
  }
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength < 1) {
    throw new TokenizerError(`llama2.c tokenizer.bin has max_token_length ${maxTokenLength}; ` +
      'expected a positive length (is this a tokenizer.bin?)', { code: 'BAD_TOKENIZER' });
  }
  /** @type {Uint8Array[]} */
  const pieces = [];
  /** @type {number[]} */
  const scores = [];
  let offset = 4;
  while (vocabSize === undefined ? offset < bytes.byteLength : pieces.length < vocabSize) {
    const id = pieces.length;
    if (offset + 8 > bytes.byteLength) {
      throw new TokenizerError(`llama2.c tokenizer.bin is truncated: entry ${id} at byte ${offset} ` +
        `needs an 8-byte score and length, only ${bytes.byteLength - offset} bytes left` +
        (vocabSize === undefined ? '' : ` (expected ${vocabSize} entries)`), { code: 'BAD_TOKENIZER' });
    }
    const score = view.getFloat32(offset, true);
    const len = view.getInt32(offset + 4, true);
    offset += 8;
    if (Number.isNaN(score)) {
      throw new TokenizerError(`llama2.c tokenizer.bin entry ${id} has a NaN score`, { code: 'BAD_TOKENIZER' });
    }
    if (len < 0 || len > maxTokenLength) {
      throw new TokenizerError(`llama2.c tokenizer.bin entry ${id} has length ${len}, outside ` +
        `0..${maxTokenLength} (max_token_length)`, { code: 'BAD_TOKENIZER' });
    }
    if (offset + len > bytes.byteLength) {
      throw new TokenizerError(`llama2.c tokenizer.bin is truncated: entry ${id} needs ${len} ` +
        `bytes at byte ${offset}, only ${bytes.byteLength - offset} left`, { code: 'BAD_TOKENIZER' });
    }
    pieces.push(bytes.slice(offset, offset + len));
    scores.push(score);
    offset += len;
  }
  // Byte fallback writes byte b as id b + 3 and decode reads <0xNN> pieces back: a vocabulary without them at
  // 3..258 would encode to ids that decode to other text, so refuse it here rather than corrupt training data.
  if (pieces.length < BYTE_OFFSET + 256) {
    throw new TokenizerError(vocabSize === undefined
      ? `llama2.c tokenizer.bin holds only ${pieces.length} entries: truncated or not a tokenizer.bin (needs at ` +
        `least ${BYTE_OFFSET + 256}: unk, BOS, EOS and 256 byte tokens)`
      : `llama2.c vocabSize ${vocabSize} is too small: needs at least ${BYTE_OFFSET + 256} (unk, BOS, EOS and 256 ` +
        'byte tokens)', { code: 'BAD_TOKENIZER' });
  }
  for (let b = 0; b < 256; b++) {
    const want = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    if (binaryString(pieces[b + BYTE_OFFSET]) !== want) {
      throw new TokenizerError(`llama2.c tokenizer.bin entry ${b + BYTE_OFFSET} is ` +
        `${JSON.stringify(utf8Decoder.decode(pieces[b + BYTE_OFFSET]))}, expected the byte token ${want}`,
      { code: 'BAD_TOKENIZER' });
    }
  }
  return { pieces, scores: Float32Array.from(scores), maxTokenLength };
}

/**
 * A binary heap of merge candidates ordered by (score descending, position ascending): popping it gives the pair
 * run.c's linear scan would pick (highest score, leftmost on ties). Entries live in typed arrays and never move;
 * the heap orders their indices.
 */
class PairHeap {
  /** @param {number} capacity */
  constructor(capacity) {
    this.size = 0;
    this.count = 0;
    this.heap = new Int32Array(capacity);
    this.score = new Float64Array(capacity);
    this.pos = new Int32Array(capacity);
    this.left = new Int32Array(capacity);
    this.right = new Int32Array(capacity);
  }

  /** @param {number} a @param {number} b entry indices @returns {boolean} whether entry a pops before entry b */
  before(a, b) {
    const sa = this.score[a];
    const sb = this.score[b];
    return sa > sb || (sa === sb && this.pos[a] < this.pos[b]);
  }

  grow() {
    const cap = this.score.length * 2;
    const score = new Float64Array(cap);
    score.set(this.score);
    this.score = score;
    for (const key of /** @type {const} */ (['heap', 'pos', 'left', 'right'])) {
      const a = new Int32Array(cap);
      a.set(this[key]);
      this[key] = a;
    }
  }

  /** @param {number} score @param {number} pos @param {number} left @param {number} right */
  push(score, pos, left, right) {
    if (this.count === this.score.length) this.grow();
    const e = this.count++;
    this.score[e] = score;
    this.pos[e] = pos;
    this.left[e] = left;
    this.right[e] = right;
    const heap = this.heap;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(e, heap[parent])) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = e;
  }

  /** @returns {number} the entry index of the best candidate, removed from the heap */
  pop() {
    const heap = this.heap;
    const top = heap[0];
    const last = heap[--this.size];
    const n = this.size;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.before(heap[child + 1], heap[child])) child++;
      if (!this.before(heap[child], last)) break;
      heap[i] = heap[child];
      i = child;
    }
    heap[i] = last;
    return top;
  }
}

/** A llama2.c vocabulary with run.c's encode and decode. */
export class Llama2cTokenizer {
  /**
   * @param {{ pieces: Uint8Array[], scores: Float32Array, maxTokenLength: number }} vocab
   */
  constructor({ pieces, scores, maxTokenLength }) {
    /** @readonly */
    this.kind = /** @type {const} */ ('llama2c');
    /** @readonly */
    this.vocabSize = pieces.length;
    /** @readonly */
    this.bosId = LLAMA2C_BOS_ID;
    /** @readonly */
    this.eosId = LLAMA2C_EOS_ID;
    // run.c always feeds BOS first, and its models were trained on documents that start with it.
    /** @readonly */
    this.addsBos = true;
    /** @readonly tokenizer.bin carries no chat template */
    this.chatTemplate = null;
    /** @readonly */
    this.specialTokens = {};
    /** @readonly */
    this.maxTokenLength = maxTokenLength;
    this.pieces = pieces;
    this.scores = scores;
    /** @readonly */
    this.source = { kind: /** @type {const} */ ('llama2c'), pieces, scores };
    this.binaryPieces = pieces.map(binaryString);
    /** @type {Map<string, number>} piece -> id; on duplicate pieces the lowest id wins (run.c's bsearch picks any) */
    this.ids = new Map();
    this.binaryPieces.forEach((p, id) => {
      if (!this.ids.has(p)) this.ids.set(p, id);
    });
    /** @type {Int16Array} byte value of a <0xNN> piece, else -1 (run.c parses these with sscanf("<0x%02hhX>")) */
    this.byteValue = new Int16Array(pieces.length).fill(-1);
    this.binaryPieces.forEach((p, id) => {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
      if (m) this.byteValue[id] = parseInt(m[1], 16);
    });
    /** @type {Map<number, number>} (left * vocabSize + right) -> merged id or -1; text repeats pairs a lot */
    this.mergeCache = new Map();
    /** @type {Map<number, number | number[]>} code point -> id or byte-fallback ids */
    this.codepointCache = new Map();
    /** @type {Uint8Array} 1 at (x << 8 | y) when some piece has byte x followed by byte y */
    this.bytePairs = new Uint8Array(1 << 16);
    for (const p of pieces) for (let k = 0; k + 1 < p.length; k++) this.bytePairs[(p[k] << 8) | p[k + 1]] = 1;
    this.heap = new PairHeap(1024);
  }

  /**
   * @param {number} id
   * @returns {boolean} whether `id` is unk, BOS or EOS (skipped by decode's skipSpecialTokens)
   */
  isSpecial(id) {
    return id === LLAMA2C_UNK_ID || id === LLAMA2C_BOS_ID || id === LLAMA2C_EOS_ID;
  }

  /** @returns {boolean} every id below vocabSize has a piece */
  hasId() {
    return true;
  }

  /** @param {number} id @returns {string} the piece as text (SentencePiece's U+2581 is already a space here) */
  idToToken(id) {
    return utf8Decoder.decode(this.pieces[id]);
  }

  /** @param {string} piece @returns {number|null} */
  tokenToId(piece) {
    return this.ids.get(binaryString(utf8Encoder.encode(piece))) ?? null;
  }

  /**
   * The merged id of the pair, or -1 when their concatenation is not a piece that run.c would merge into.
   * @param {number} left
   * @param {number} right
   */
  mergeOf(left, right) {
    const key = left * this.vocabSize + right;
    let merged = this.mergeCache.get(key);
    if (merged === undefined) {
      merged = this.ids.get(this.binaryPieces[left] + this.binaryPieces[right]) ?? -1;
      if (merged !== -1 && !(this.scores[merged] > MIN_MERGE_SCORE)) merged = -1;
      this.mergeCache.set(key, merged);
    }
    return merged;
  }

  /**
   * The initial symbols of one code point: its piece, else one byte token per UTF-8 byte (id = byte + 3).
   * @param {number} cp
   * @returns {number | number[]}
   */
  codepointIds(cp) {
    let ids = this.codepointCache.get(cp);
    if (ids === undefined) {
      const bytes = utf8Encoder.encode(String.fromCodePoint(cp));
      ids = this.ids.get(binaryString(bytes)) ?? Array.from(bytes, (b) => b + BYTE_OFFSET);
      this.codepointCache.set(cp, ids);
    }
    return ids;
  }

  /**
   * run.c encode(): optional BOS, a dummy-prefix " " token when the text is non-empty, one symbol per UTF-8 code
   * point (byte fallback when it is not a piece), then merge the best-scoring adjacent pair until none is left.
   * @param {string} text
   * @param {boolean} addBos
   * @returns {number[]}
   */
  encode(text, addBos) {
    /** @type {number[]} */
    const symbols = [];
    if (addBos) symbols.push(LLAMA2C_BOS_ID);
    if (text.length > 0) {
      // run.c looks the dummy prefix up as the piece " "; a vocabulary without it falls back to the byte token,
      // as it would for any other character that is not a piece.
      const space = this.codepointIds(SPACE);
      if (typeof space === 'number') symbols.push(space);
      else symbols.push(...space);
    }
    for (let i = 0; i < text.length; i++) {
      let cp = text.charCodeAt(i);
      if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
        const lo = text.charCodeAt(i + 1);
        if (lo >= 0xdc00 && lo <= 0xdfff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i++;
        }
      }
      // A lone surrogate has no UTF-8 form; TextEncoder (and so run.c fed its output) sees U+FFFD.
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
      const ids = this.codepointIds(cp);
      if (typeof ids === 'number') symbols.push(ids);
      else for (const id of ids) symbols.push(id);
    }
    return this.merge(symbols);
  }

  /**
   * Whether a merge could ever join symbols a and b: only if some piece contains the last byte of a's piece
   * followed by the first byte of b's piece, since any merge across them would produce such a piece.
   * @param {number} a
   * @param {number} b
   */
  canJoin(a, b) {
    const pa = this.pieces[a];
    const pb = this.pieces[b];
    return pa.length === 0 || pb.length === 0 || this.bytePairs[(pa[pa.length - 1] << 8) | pb[0]] === 1;
  }

  /**
   * Applies run.c's merge loop to `symbols` with a heap instead of a full rescan per merge: same choices, since
   * each step takes the highest score and, among equal scores, the leftmost pair. The sequence is worked through
   * in runs that no merge can cross (see canJoin), so the heap stays small; merges in one run never change another,
   * so the order between runs does not matter.
   * @param {number[]} symbols
   * @returns {number[]}
   */
  merge(symbols) {
    const n = symbols.length;
    if (n < 2) return symbols;
    const tok = Int32Array.from(symbols);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = this.heap;
    const offer = (/** @type {number} */ pos) => {
      const right = next[pos];
      if (right < 0) return;
      const merged = this.mergeOf(tok[pos], tok[right]);
      if (merged !== -1) heap.push(this.scores[merged], pos, tok[pos], tok[right]);
    };
    let start = 0;
    for (let end = 1; end <= n; end++) {
      if (end < n && this.canJoin(tok[end - 1], tok[end])) continue;
      heap.size = 0;
      heap.count = 0;
      for (let i = start; i + 1 < end; i++) offer(i);
      while (heap.size > 0) {
        const top = heap.pop();
        const pos = heap.pos[top];
        const right = next[pos];
        // An entry is stale once either symbol has changed: merging only ever lengthens a piece, so equal ids
        // mean the very same pair is still there.
        if (!alive[pos] || right < 0 || tok[pos] !== heap.left[top] || tok[right] !== heap.right[top]) continue;
        tok[pos] = this.mergeOf(tok[pos], tok[right]);
        alive[right] = 0;
        next[pos] = next[right];
        if (next[right] >= 0) prev[next[right]] = pos;
        if (prev[pos] >= 0) offer(prev[pos]);
        offer(pos);
      }
      start = end;
    }
    /** @type {number[]} */
    const out = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(tok[i]);
    return out;
  }

  /**
   * run.c decode(): a piece's leading space is dropped right after BOS (SentencePiece's dummy prefix), <0xNN>
   * pieces are raw bytes, and the bytes are read as UTF-8. The dummy prefix is dropped at the start of `ids` too,
   * because encode() adds it with or without BOS and decode(encode(text)) must give back text.
   * @param {ArrayLike<number>} ids valid ids (checked by the caller)
   * @param {boolean} skipSpecialTokens leave out unk, BOS and EOS
   * @returns {string}
   */
  decode(ids, skipSpecialTokens) {
    let length = 0;
    for (let i = 0; i < ids.length; i++) length += this.pieces[ids[i]].length;
    const out = new Uint8Array(length);
    let o = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const afterBos = i === 0 || ids[i - 1] === LLAMA2C_BOS_ID;
      if (skipSpecialTokens && this.isSpecial(id)) continue;
      const byte = this.byteValue[id];
      if (byte >= 0) {
        out[o++] = byte;
        continue;
      }
      const piece = this.pieces[id];
      const start = afterBos && piece.length > 0 && piece[0] === SPACE ? 1 : 0;
      out.set(start ? piece.subarray(start) : piece, o);
      o += piece.length - start;
    }
    return utf8Decoder.decode(out.subarray(0, o));
  }
}
