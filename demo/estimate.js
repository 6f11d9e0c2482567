// estimate.js: what a model costs before it is downloaded or trained: parameters, download size, memory for a
// training run, and speed on this device. Speed is never guessed from the CPU's name: it is a rate measured here
// (training tokens per second on some model, turned into arithmetic per second) divided by the arithmetic another
// model needs per token. Small models use the CPU less efficiently than big ones, so a rate measured on the built-in
// model is a cautious figure for a bigger one; a measurement on the loaded model itself replaces it. A rate holds for
// the number of threads it was measured on: figures for another number are scaled cautiously (threadScaling) until a
// measurement on that number replaces it.

/** Bytes per stored weight, by dtype (the download). */
export const DTYPE_BYTES = Object.freeze({ f32: 4, f16: 2, bf16: 2 });
/**
 * Bytes per frozen weight in the engine, by the dtype it holds the base in (WebLoRA.load's `dtype`): f32, or blocks
 * of 32 weights with f32 block values (src/kernels/quant.h: 32 bytes and a scale for q8, 16 bytes, a scale and a
 * minimum for q4). Norms and biases stay f32 but are a tiny share.
 */
export const ENGINE_WEIGHT_BYTES = Object.freeze({ f32: 4, q8: 36 / 32, q4: 24 / 32 });
/** A q4 base keeps its token embedding and LM head in q8 (src/model/model.c matrix_storage). */
const OUTER_DTYPE = Object.freeze({ f32: 'f32', q8: 'q8', q4: 'q8' });
/** The most a page's WebAssembly memory can grow to (the package builds with 4 GB memory growth). */
export const WASM_MEMORY_LIMIT = 4 * 1024 ** 3;
/** A quantised base's dequantisation panel holds at most this many floats (src/kernels/qgemm.c WL_QTILE_FLOATS). */
const QTILE_CAP_FLOATS = 1024 ** 2;
/** Worker, wasm module, tokenizer and JavaScript heap on top of the counted buffers (measured to be well under). */
const OVERHEAD_BYTES = 64 * 1024 ** 2;
/** The core's thread pool (src/core/parallel.h, parallel.c): a scratch per worker and one shared, a stack per worker. */
const POOL_SCRATCH_BYTES = 512 * 1024 * 4;
const POOL_STACK_BYTES = 512 * 1024;
/** Attention scores kept for all threads at once are capped at this many floats (src/model/model.c plan_acts). */
const SCORES_CAP_FLOATS = 4 * 1024 ** 2;
/** Attention works on a head's queries this many at a time (src/layers/layers.h WL_ATTENTION_ROWS). */
const ATTENTION_ROWS = 48;
/**
 * The share of a training step that runs in parallel, for scaling a speed to another number of threads (Amdahl):
 * two threads train 1.5x as fast as one on the test machine (README, `npm run bench`), so 2/3. Machines with
 * cores of their own do better (8 threads there run 5-6x, not the 2.4x this predicts): a cautious figure.
 */
const PARALLEL_SHARE = 2 / 3;

/**
 * @typedef {object} Shape the numbers of a Llama- or GPT-2-style model that decide its cost
 * @property {'llama' | 'gpt2'} arch
 * @property {number} dim
 * @property {number} hidden MLP width
 * @property {number} layers
 * @property {number} heads
 * @property {number} kvHeads
 * @property {number} headDim
 * @property {number} vocab
 * @property {boolean} tied output head shares the embedding
 * @property {boolean} qkvBias
 * @property {number} maxSeqLen
 */

/**
 * The shape of a Hugging Face config.json (Llama family: Llama, SmolLM2, Qwen2).
 * @param {Record<string, any>} c
 * @returns {Shape}
 */
export function shapeFromHfConfig(c) {
  const heads = c.num_attention_heads;
  return {
    arch: 'llama',
    dim: c.hidden_size,
    hidden: c.intermediate_size,
    layers: c.num_hidden_layers,
    heads,
    kvHeads: c.num_key_value_heads ?? heads,
    headDim: c.head_dim ?? c.hidden_size / heads,
    vocab: c.vocab_size,
    tied: c.tie_word_embeddings !== false,
    qkvBias: c.model_type === 'qwen2' || !!c.attention_bias,
    maxSeqLen: c.max_position_embeddings,
  };
}

/**
 * The shape of a loaded model, from engine.info.
 * @param {{ arch: 'llama' | 'gpt2', config: Record<string, any> }} info
 * @returns {Shape}
 */
export function shapeFromEngine(info) {
  const c = info.config;
  return {
    arch: info.arch,
    dim: c.dim,
    hidden: c.hiddenDim,
    layers: c.nLayers,
    heads: c.nHeads,
    kvHeads: c.nKvHeads,
    headDim: c.headDim,
    vocab: c.vocabSize,
    tied: !!c.tiedEmbeddings,
    qkvBias: !!c.qkvBias,
    maxSeqLen: c.maxSeqLen,
  };
}

/** Widths of the attention projections. @param {Shape} s */
function widths(s) {
  return { qd: s.heads * s.headDim, kvd: s.kvHeads * s.headDim };
}

/**
 * Parameters of a Llama-style model (the catalogue's models); loaded models report theirs exactly.
 * @param {Shape} s
 */
export function parameterCount(s) {
  const { qd, kvd } = widths(s);
  const C = s.dim;
  const attention = C * qd + 2 * C * kvd + qd * C + (s.qkvBias ? qd + 2 * kvd : 0);
  const mlp = 3 * C * s.hidden;
  const block = attention + mlp + 2 * C;
  return s.vocab * C + s.layers * block + C + (s.tied ? 0 : s.vocab * C);
}

/**
 * Multiply-adds times two in one forward pass, per token, at sequence length T: every weight matrix once (the
 * output head included, the embedding lookup not), plus causal attention over T / 2 earlier positions on average.
 * Training one LoRA step costs a fixed multiple of this, so ratios of it compare models.
 * @param {Shape} s
 * @param {number} parameters
 * @param {number} T
 */
export function forwardFlopsPerToken(s, parameters, T) {
  const { qd } = widths(s);
  const matrices = s.tied ? parameters : parameters - s.vocab * s.dim;
  return 2 * matrices + 2 * s.layers * T * qd;
}

/**
 * Bytes the core asks for to train with batches of B sequences of T tokens on `threads` threads: the weights (f32, or
 * quantised with `dtype`) and the activations its reserve step lays out (src/model/model.c plan_acts), the thread
 * pool's scratch and stacks, plus the worker's fixed overhead. The adapter and its optimizer state are small beside
 * them and included roughly. With `recompute` (train's option) a layer keeps only its input.
 * @param {Shape} s
 * @param {number} parameters
 * @param {{ B: number, T: number, threads?: number, adapterParameters?: number, dtype?: keyof typeof ENGINE_WEIGHT_BYTES,
 *   recompute?: boolean }} run
 */
export function trainingMemoryBytes(s, parameters, { B, T, threads = 1, adapterParameters = 0, dtype = 'f32', recompute = false }) {
  const { qd, kvd } = widths(s);
  const C = s.dim;
  const I = s.hidden;
  const N = B * T;
  // per layer: its KV cache, and the activations backward reads (all of them, or with recompute only the input)
  const perLayer = 2 * kvd + (recompute ? C : 4 * C + 2 * qd + 3 * I + 2);
  // one layer's activations for inference (and, with recompute, the layer backward works on); the residual stream,
  // final norm, logits and per-token bookkeeping; backward's gradients
  const shared = (3 * C + 2 * qd + 3 * I + 2) + 4 * C + 6 + s.vocab + (2 * C + 2 * qd + 2 * kvd + 3 * I);
  // One head's attention scores and their gradient for a block of queries over every cached position, or enough for
  // every thread to work on a head of its own over T positions (capped).
  const rows = Math.min(T, ATTENTION_ROWS);
  const scores = Math.max(2 * rows * N, Math.min(2 * rows * T * threads, SCORES_CAP_FLOATS));
  // LoRA scratch (src/lora/adapter.c): a module's dropped-out input and its gradient, as wide as the widest input
  const lora = 2 * Math.max(C, qd, I);
  const activations = N * (s.layers * perLayer + shared + lora) + scores;
  // A quantised base dequantises panels of its weights into one tile: its largest weight, at most the cap.
  const tile = dtype === 'f32' ? 0 : Math.min(Math.max(s.vocab, I, qd) * C, QTILE_CAP_FLOATS);
  const outer = s.vocab * C * (s.tied ? 1 : 2); // the token embedding and the LM head
  const weights = (parameters - outer) * ENGINE_WEIGHT_BYTES[dtype] + outer * ENGINE_WEIGHT_BYTES[OUTER_DTYPE[dtype]];
  return weights + (activations + tile) * 4 + threadPoolBytes(threads)
    + adapterParameters * 4 * 4 + OVERHEAD_BYTES;
}

/**
 * Memory of the core's thread pool beside the model (none on one thread).
 * @param {number} threads
 */
export function threadPoolBytes(threads) {
  return threads > 1 ? (threads - 1) * (POOL_SCRATCH_BYTES + POOL_STACK_BYTES) + POOL_SCRATCH_BYTES : 0;
}

/**
 * Download size: the weights as stored plus the tokenizer.
 * @param {{ dtype: keyof typeof DTYPE_BYTES, tokenizerBytes: number }} entry
 * @param {number} parameters
 */
export function downloadBytes(entry, parameters) {
  return parameters * DTYPE_BYTES[entry.dtype] + entry.tokenizerBytes;
}

/**
 * @typedef {object} SpeedMeasurement a training speed measured on this device
 * @property {number} flopsPerSecond forward FLOPs per token times training tokens per second
 * @property {string} model which model it was measured on
 * @property {number} parameters that model's size: bigger models use the processor more like the catalogue's do
 * @property {number} [threads] the threads it ran on (measurements from before the package had threads: 1)
 * @property {number} at ms since the epoch
 */

/**
 * A measurement from a training run (or warm-up) of `parameters` parameters at sequence length T on `threads` threads.
 * @param {Shape} s @param {number} parameters @param {number} T @param {number} tokensPerSecond
 * @param {string} model @param {number} threads
 * @returns {SpeedMeasurement}
 */
export function speedMeasurement(s, parameters, T, tokensPerSecond, model, threads) {
  return { flopsPerSecond: tokensPerSecond * forwardFlopsPerToken(s, parameters, T), model, parameters, threads, at: Date.now() };
}

/** Measurements older than this are replaced by any new one (the browser or the device may have changed). */
const MEASUREMENT_LIFETIME_MS = 30 * 24 * 3600 * 1000;

/**
 * Whether a new measurement should replace the kept one: one on another number of threads (new measurements run on
 * the threads the page has now); a model at least as big predicts the catalogue's models better (tiny models spend
 * their time on overheads, not arithmetic); an old one is replaced by anything.
 * @param {SpeedMeasurement | null} kept @param {SpeedMeasurement} measured
 */
export function betterMeasurement(kept, measured) {
  return !kept || (kept.threads ?? 1) !== (measured.threads ?? 1) || measured.parameters >= (kept.parameters ?? 0)
    || measured.at - kept.at > MEASUREMENT_LIFETIME_MS;
}

/**
 * How much faster training runs on `to` threads than on `from`, cautiously: no more than the parallel share allows
 * when there are more, and as if every thread had been fully used when there are fewer.
 * @param {number} from @param {number} to
 */
export function threadScaling(from, to) {
  if (to <= from) return to / from;
  const speedup = (/** @type {number} */ n) => 1 / (1 - PARALLEL_SHARE + PARALLEL_SHARE / n);
  return speedup(to) / speedup(from);
}

/**
 * Training tokens per second expected for a model on `threads` threads, from a measurement made on another (or the
 * same) model and number of threads.
 * @param {Shape} s @param {number} parameters @param {number} T @param {SpeedMeasurement} measured
 * @param {number} [threads] default: the measurement's
 */
export function expectedTokensPerSecond(s, parameters, T, measured, threads = measured.threads ?? 1) {
  return (measured.flopsPerSecond / forwardFlopsPerToken(s, parameters, T)) * threadScaling(measured.threads ?? 1, threads);
}

/**
 * Seconds a training run will take, from seconds per training token measured in a warm-up at the same rank. The
 * held-out tokens are evaluated before and after training, by forward passes only: about a third of a training
 * step's work per token.
 * @param {{ steps: number, B: number, T: number, evalTokens: number, secondsPerToken: number }} run
 */
export function trainingSeconds({ steps, B, T, evalTokens, secondsPerToken }) {
  return secondsPerToken * (steps * B * T + (2 * evalTokens) / 3);
}
