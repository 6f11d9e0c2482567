// sample.js: choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus), seeded.
import { SamplingError } from '../errors.js';
export { SamplingError } from '../errors.js';


/**
 * Validate and complete sampling options. temperature 0 means greedy.
 * @param {{ temperature?: number, topK?: number, topP?: number }} opts
 */
export function samplingOptions(opts = {}) {
  const temperature = opts.temperature ?? 0;
  const topK = opts.topK ?? 0;
  const topP = opts.topP ?? 1;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new SamplingError(`temperature must be a finite number >= 0, got ${temperature}`);
  }
  if (!Number.isInteger(topK) || topK < 0) throw new SamplingError(`topK must be an integer >= 0, got ${topK}`);
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw new SamplingError(`topP must be in (0, 1], got ${topP}`);
  return { temperature, topK, topP };
}

/** Index of the largest logit (the first one on ties). @param {Float32Array} logits */
export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * Draw the next token.
 * @param {Float32Array} logits (V) of the last position
 * @param {{ temperature: number, topK: number, topP: number }} opts from samplingOptions
 * @param {{ next(): number }} rng uniform [0, 1)
 * @returns {number}
 */
export function sampleToken(logits, opts, rng) {
  const V = logits.length;
  if (opts.temperature === 0) return argmax(logits);
  // Candidates: the top-k (or all), sorted by logit, descending.
  let idx;
  if (opts.topK > 0 && opts.topK < V) {
    idx = topKIndices(logits, opts.topK);
  } else {
    idx = Array.from({ length: V }, (_, i) => i);
  }
  idx.sort((a, b) => logits[b] - logits[a] || a - b);
  const inv = 1 / opts.temperature;
  const max = logits[idx[0]];
  const probs = new Float64Array(idx.length);
  let sum = 0;
  for (let i = 0; i < idx.length; i++) {
    probs[i] = Math.exp((logits[idx[i]] - max) * inv);
    sum += probs[i];
  }
  // Nucleus: keep the smallest prefix whose probability reaches topP.
  let keep = idx.length;
  if (opts.topP < 1) {
    let acc = 0;
    for (let i = 0; i < idx.length; i++) {
      acc += probs[i] / sum;
      if (acc >= opts.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += probs[i];
  let u = rng.next() * kept;
  for (let i = 0; i < keep; i++) {
    u -= probs[i];
    if (u < 0) return idx[i];
  }
  return idx[keep - 1];
}

/** Indices of the k largest logits (unordered), in O(V log k) with a small min-heap. */
function topKIndices(logits, k) {
  const heap = [];
  const less = (a, b) => logits[a] < logits[b] || (logits[a] === logits[b] && a > b);
  const siftUp = (i) => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(heap[i], heap[p])) break;
      [heap[i], heap[p]] = [heap[p], heap[i]];
      i = p;
    }
  };
  const siftDown = (i) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < heap.length && less(heap[l], heap[m])) m = l;
      if (r < heap.length && less(heap[r], heap[m])) m = r;
      if (m === i) break;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (let i = 0; i < logits.length; i++) {
    if (heap.length < k) {
      heap.push(i);
      siftUp(heap.length - 1);
    } else if (less(heap[0], i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap;
}
