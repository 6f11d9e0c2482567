// Type declarations of the public weblora API (web/index.js).

/** Progress events while a model loads, in the transformers.js shape. */
export type ProgressEvent =
  | { status: 'initiate' | 'download' | 'done'; name: string; file: string }
  | { status: 'progress'; name: string; file: string; loaded: number; total: number; progress: number }
  | { status: 'ready'; name: string; task: string; model: string };

/** A model source: an HF-style base URL ending in "/", a .safetensors or llama2.c .bin URL, a URL relative to the
 * page ('./model/', '/models/x/'), a Hugging Face id ('HuggingFaceTB/SmolLM2-135M', fetched from `remoteHost` at
 * `revision`), local files, or (Node) a local path. */
export type ModelSource =
  | string
  | URL
  | ArrayBuffer
  | ArrayBufferView
  | File[]
  | Blob[]
  | Array<{ name: string; data: Blob | ArrayBuffer | ArrayBufferView | string }>
  | Record<string, Blob | ArrayBuffer | ArrayBufferView | string>;

export interface LoadOptions {
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
  /**
   * Threads the core computes on: 'auto' (the default: navigator.hardwareConcurrency or os.availableParallelism(), at
   * most 8) or a whole number from 1 to 64. Results are bit-identical for any number. Browsers need a cross-origin
   * isolated page (Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy: require-corp); elsewhere the
   * core runs on one thread, `info.threads` says 1 and a console note says why. Node always has threads.
   */
  threads?: number | 'auto';
  /**
   * Which build of the core runs: 'auto' (the default) takes relaxed SIMD, whose matrix products use fused
   * multiply-adds, where the JavaScript engine validates it (Chromium 114+, Node 22+, Node 20 with
   * --experimental-wasm-relaxed-simd), and plain SIMD128 elsewhere. 'relaxed' fails (code UNSUPPORTED) where the engine
   * lacks it. The two differ in the last bits of results; each is bit-identical for any number of threads.
   */
  simd?: 'auto' | 'relaxed' | 'simd128';
  /**
   * How the frozen base holds its matrices (linear weights, token embedding, LM head): 'f32' (the default), 'q8'
   * (int8 blocks of 32 with an f16 scale, llama.cpp Q8_0) or 'q4' (4-bit blocks with a scale and minimum, Q4_1;
   * the token embedding and LM head in q8). Quantised weights are
   * converted as they stream in, so the full-precision model is never held; norms and biases stay f32, and LoRA
   * adapters, their gradients and the optimizer stay f32. Forward and backward are exact with respect to the
   * dequantised weights. PiSSA on a quantised base keeps the residual W - s B A quantised again (QPiSSA). A quantised
   * base cannot be merged into or fully fine-tuned. A model
   * whose weights would not fit the core's 4 GB in the dtype asked for is refused before loading, naming the dtype
   * that would fit.
   */
  dtype?: 'f32' | 'q8' | 'q4';
  /**
   * Tokenizer override: URL, path (a tokenizer.json, its folder, or a llama2.c tokenizer.bin), File or bytes. A
   * tokenizer_config.json beside a URL or path is read with it (never the model folder's).
   */
  tokenizer?: string | URL | Blob | ArrayBuffer | ArrayBufferView;
  /**
   * Hub id or URL of this model, over what the source (a Hub URL or cache folder) or config.json's `_name_or_path`
   * says: exported adapters record it as their base (base_model_name_or_path), and the base imported adapters name
   * is compared with it.
   */
  baseModel?: string;
  /**
   * Revision of baseModel (or of the Hub model the source is), recorded as the adapters' `revision` and compared. For a
   * Hugging Face id source, also the branch, tag or commit whose files are fetched (default 'main').
   */
  revision?: string;
  /**
   * Where a Hugging Face id source is fetched from, for this load: the Hub or a mirror with its layout
   * (<remoteHost>/<org>/<name>/resolve/<revision>/<file>). Default: env.remoteHost.
   */
  remoteHost?: string | URL;
  /**
   * Whether a cached model file is checked against its server: 'online' (the default) sends one conditional request
   * per file (ETag / Last-Modified) when the browser is online and refetches only what changed; 'never' trusts the
   * cache. Offline, or for a file pinned by sha256, the cache is used without asking.
   */
  revalidate?: 'online' | 'never';
  tokenizerUrl?: string;
  configUrl?: string;
  /** SHA-256 pins (hex) by file name; a mismatch refuses the file. */
  sha256?: Record<string, string>;
  cacheName?: string;
  cacheKey?: (url: string) => string;
  retries?: number;
  backoffMs?: number;
  name?: string;
  /** IndexedDB adapter store options (dbName, passphrase for encryption at rest). */
  store?: { dbName?: string; passphrase?: string };
  /**
   * Where the engine's worker script is (relative to the page), for apps that serve it themselves (built with the
   * `weblora-files` condition, say). Default: beside the package's modules, where the bundler emitted it (Vite,
   * webpack), or carried inside the bundle (esbuild, Rollup).
   */
  workerUrl?: string | URL;
  /**
   * The folder (ending in "/", relative to the page) that serves the core's builds, weblora.wasm,
   * weblora-threads.wasm, weblora-relaxed.wasm and weblora-relaxed-threads.wasm, when not where the default
   * (as for workerUrl) has them.
   */
  wasmUrl?: string | URL;
}

/** Settings for every load; set them before loading. */
export declare const env: {
  /** Where Hugging Face ids are fetched from (default 'https://huggingface.co/'): a mirror with the Hub's layout. */
  remoteHost: string;
};

export interface ModelConfig {
  arch: number;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxSeqLen: number;
  tiedEmbeddings: number;
  qkvBias: number;
  ropeLayout: number;
  ropeTheta: number;
  normEps: number;
  bosId: number;
  eosId: number;
}

export interface EngineInfo {
  name: string;
  kind: 'hf' | 'safetensors' | 'llama2c';
  /** Where the model came from as adapter files record it: Hub id or URL and revision (null when unknown; never a local path). */
  origin: { id: string | null; revision: string | null };
  arch: 'llama' | 'gpt2';
  config: ModelConfig;
  parameters: number;
  fingerprint: string;
  /** Bytes the model and its adapters hold in the core: the sum of `memory`. */
  memoryBytes: number;
  /** memoryBytes split: base weights; adapters with their gradients and a running optimizer; activations and scratch. */
  memory: { weights: number; adapters: number; activations: number };
  /** How the base's matrices are stored. */
  dtype: 'f32' | 'q8' | 'q4';
  hasTokenizer: boolean;
  /** The chat template (Jinja) from tokenizer_config.json, or null when the model has none. */
  chatTemplate: string | null;
  modules: string[];
  /** Threads the core runs on. */
  threads: number;
  /** Why fewer threads run than were asked for (no cross-origin isolation, workers that did not start), or null. */
  threadsNote: string | null;
  /** The build of the core that runs: 'relaxed' (fused multiply-adds) or 'simd128'. */
  simd: 'relaxed' | 'simd128';
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

export interface AdapterOptions {
  rank?: number;
  alpha?: number;
  /** Module names matched PEFT's way ("q_proj", "c_attn", "all-linear") or one regex string. "embed_tokens" (GPT-2:
   * "wte") and "lm_head" add LoRA on the token embedding (PEFT's lora_embedding_A / _B) and the output head; on a model
   * whose head is its embedding such an adapter is not merged (merging would change both uses). */
  targets?: string[] | string;
  /** 'pissa': PiSSA from the top singular triplets of each target weight (the base keeps the residual);
   * 'pissa_fast': from a randomised SVD with `pissaIters` power iterations (PEFT's pissa_niter_N). */
  init?: 'default' | 'gaussian' | 'pissa' | 'pissa_fast';
  /** Power iterations of init 'pissa_fast' (an integer from 0 to 64, default 4); an error with any other init. */
  pissaIters?: number;
  useRslora?: boolean;
  /** DoRA (PEFT use_dora): each module also learns a magnitude per output row, y = m / ||W + s B A||_row (W x + s B A x)
   * + b, the norm held constant in backward. Starts at m = ||W||_row (no change). Not with dropout or PiSSA; a DoRA
   * adapter applies alone (no weighted mixes), merges with weight 1, and is not resized, combined or written to GGUF. */
  dora?: boolean;
  /** GPT-2 only: loralib's MergedLinear on c_attn, adapting only the named q, k, v blocks (['q', 'v'], or loralib's
   * [true, false, true]), each with its own rank-`rank` factors and scale alpha / rank. Exported as PEFT's
   * rank-stacked c_attn LoRA (r = rank x blocks) whose lora_B is zero outside the blocks, and read back as MergedLinear. */
  enableLora?: string[] | boolean[];
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  layers?: number[];
  dropout?: number;
  seed?: number;
  name?: string;
}

/** How the base model an imported adapter names (PEFT's base_model_name_or_path and revision, or weblora's base
 * fingerprint) compares with the loaded model. Hub ids match Hugging Face URLs and mirrors whose path ends with
 * them; a local folder or file of the same name is only `unverified`. */
export interface BaseModelCheck {
  /** match: same weights (fingerprint) or same Hub id / URL and revision; unverified: nothing contradicts it, nothing
   * proves it; mismatch: other name or revision; unnamed: the adapter does not say. */
  status: 'match' | 'unverified' | 'mismatch' | 'unnamed';
  level: 'warning' | 'info' | null;
  message: string | null;
  adapterBase: string | null;
  adapterRevision: string | null;
  /** The loaded model's source as compared (URL or path), null when it does not say. */
  model: string | null;
}

/** What onWarning hears when an adapter is imported whose named base is not (or not provably) the loaded model. */
export interface AdapterWarning extends BaseModelCheck {
  code: 'BASE_MODEL_MISMATCH' | 'BASE_MODEL_UNVERIFIED';
  level: 'warning' | 'info';
  message: string;
}

/** A LoRA adapter held by the engine (plain data; pass it or its id to other calls). */
export interface Adapter {
  id: string;
  name: string | null;
  rank: number;
  alpha: number;
  targets: string[] | string;
  useRslora: boolean;
  /** DoRA modules (PEFT use_dora). */
  dora: boolean;
  /** The c_attn blocks of a loralib MergedLinear adapter (['q', 'v']), or null for whole modules. */
  enableLora: string[] | null;
  parameters: number;
  baseModel: string;
  baseFingerprint: string;
  created: number;
  steps: number;
  finalLoss: number | null;
  /** For an imported adapter: how the base model its files name compares with the loaded model. */
  baseModelCheck?: BaseModelCheck;
}

export type AdapterSelection = Adapter | string | Array<Adapter | string> | Record<string, number>;

/** Text to train or evaluate on: a string (one document), a Blob or File streamed as it is tokenized (a .jsonl name
 * holds one {"text": ...} document per line), or in Node `{ path }` of a local file read in chunks. */
export type TextSource = string | Blob | { path: string; name?: string };

/** Progress of reading and tokenizing streamed texts. */
export interface TokenizeProgress {
  status: 'tokenize';
  loaded: number;
  total: number;
  tokens: number;
  documents: number;
  file: string;
}

export interface StepReport {
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  epoch: number;
  tokensPerSecond: number;
  elapsed: number;
}

export interface TrainOptions {
  steps?: number;
  epochs?: number;
  lr?: number;
  batchSize?: number;
  seqLen?: number;
  seed?: number;
  optimizer?: 'adamw' | 'sgd';
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  schedule?: 'constant' | 'cosine' | 'linear';
  warmupSteps?: number;
  minLrRatio?: number;
  /** Micro-batches per optimizer step, each weighted by its target tokens: the same step as one batch of them. */
  gradAccum?: number;
  clipNorm?: number;
  evalSplit?: number;
  evalEvery?: number;
  dropout?: number;
  /** Keep only each layer's input during the forward pass and recompute the layer's activations just before its
   * backward (activation checkpointing): the layers' activations shrink to their inputs plus one layer's worth, for
   * one more forward pass of the layers per step (0.66-0.86x the training tokens per CPU second on the SmolLM2-135M
   * shape); losses and gradients are bit for bit the same (default false). */
  recompute?: boolean;
  /** LoRA+ (PEFT's create_loraplus_optimizer): every lora_B learns at this multiple of the learning rate of lora_A
   * (default 1; the LoRA+ paper suggests 8 to 16). Adapters only, not full-parameter training. */
  loraPlusRatio?: number;
  /** Stop a finite but diverged run (loss far above its start, an update larger than the weights, weights beyond
   * 1e3) with a NumericError of code DIVERGED (default true; NaN and infinities always stop a run). */
  divergenceGuard?: boolean;
  /** Train every weight of the base model (pass null as the adapter). */
  full?: boolean;
  /** Save adapter, optimizer state and data position to IndexedDB every `every` steps. */
  checkpoint?: { every: number; runId?: string; keep?: boolean };
  /** Resume a run from its last checkpoint. */
  resume?: string;
  onTokenize?: (progress: TokenizeProgress) => void;
  onStep?: (report: StepReport) => void;
  onEval?: (report: { step: number; loss: number; perplexity: number; tokens: number }) => void;
  onCheckpoint?: (info: { runId: string; step: number }) => void;
  signal?: AbortSignal;
}

export interface TrainSummary {
  steps: number;
  totalSteps: number;
  trainLoss: number | null;
  trainLossRecent: number;
  evalLossBefore: number | null;
  evalLoss: number | null;
  perplexity: number | null;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  trainSequences: number;
  evalSequences: number;
  /** Tokens in the held-out sequences. */
  evalTokens: number;
  /** Whether the held-out split was capped (at most evalTokens tokens are held out). */
  evalCapped: boolean;
  dataTokens: number;
}

export interface TrainRun {
  done: Promise<TrainSummary>;
  abort(reason?: unknown): void;
}

export interface GenerateOptions {
  adapter?: AdapterSelection;
  maxTokens?: number;
  /** The end-of-text token cannot be chosen before this many tokens. */
  minTokens?: number;
  /** Never choose the end-of-text token (benchmarks, long samples), like llama.cpp's --ignore-eos. */
  ignoreEos?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  stop?: string[];
  addBos?: boolean;
  onToken?: (token: { id: number; text: string }) => void;
  signal?: AbortSignal;
}

export interface Generation {
  text: string;
  ids: number[];
  promptIds: number[];
  /** Prompt tokens dropped from the start so the answer has room (at least half the context, or maxTokens). */
  promptTokensDropped: number;
  finishReason: 'length' | 'eos' | 'stop';
  tokensPerSecond: number;
}

export interface ModuleError {
  module: string;
  rank: number;
  relError: number;
}

export interface PeftFiles {
  config: Record<string, unknown>;
  files: { 'adapter_config.json': string; 'adapter_model.safetensors': Uint8Array };
}

export interface GgufAdapterFiles {
  /** The LoRA file llama.cpp's --lora (and Ollama's ADAPTER) loads; every module's scale is exact under its one alpha. */
  files: { 'adapter.gguf': Uint8Array };
}

export interface ExportAdapterOptions {
  format?: 'peft' | 'gguf';
  /** PEFT only: fold rsLoRA and rank/alpha patterns into lora_B under one plain lora_alpha (for tools that read only that). */
  portable?: boolean;
  /** GGUF tensor type (default f16). */
  dtype?: 'f16' | 'f32';
  /** Export the last good weights of an adapter whose last training run diverged (refused otherwise). */
  allowDiverged?: boolean;
}

export interface StoredAdapter {
  name: string;
  baseModel: string;
  baseFingerprint: string;
  rank: number;
  targets: string[];
  sizeBytes: number;
  created: number;
  updated: number;
  steps: number;
  finalLoss: number | null;
  encrypted: boolean;
}

export interface AdapterStoreApi {
  /** Refuses an adapter whose last training run diverged unless allowDiverged. */
  save(name: string, adapter: Adapter | string, options?: { overwrite?: boolean, allowDiverged?: boolean }): Promise<StoredAdapter>;
  load(name: string, options?: { allowFingerprintMismatch?: boolean; onWarning?: (warning: AdapterWarning) => void }): Promise<Adapter>;
  list(): Promise<StoredAdapter[]>;
  rename(from: string, to: string): Promise<void>;
  delete(name: string): Promise<void>;
  export(name: string): Promise<Array<{ name: string; data: Uint8Array }>>;
  import(files: Array<{ name: string; data: Uint8Array | string | Blob }>, options: { name: string; allowFingerprintMismatch?: boolean;
    onWarning?: (warning: AdapterWarning) => void }): Promise<StoredAdapter & { baseModelCheck: BaseModelCheck }>;
  checkpoints(): Promise<Array<{ runId: string; step: number }>>;
  deleteCheckpoint(runId: string): Promise<void>;
}

export declare class Engine {
  readonly info: EngineInfo;
  readonly adapters: AdapterStoreApi;
  createAdapter(options?: AdapterOptions): Promise<Adapter>;
  freeAdapter(adapter: Adapter | string): Promise<void>;
  train(adapter: Adapter | string | null, texts: TextSource | TextSource[], options?: TrainOptions): TrainRun;
  evaluate(texts: TextSource | TextSource[], options?: { adapter?: AdapterSelection; seqLen?: number; batchSize?: number; signal?: AbortSignal }): Promise<{ loss: number; perplexity: number; tokens: number; sequences: number }>;
  generate(prompt: string, options?: GenerateOptions): Promise<Generation>;
  /** Tokens training would see in texts, BOS/EOS around each document included. */
  countTokens(texts: TextSource | TextSource[], options?: { signal?: AbortSignal }): Promise<{ tokens: number; documents: number }>;
  /**
   * A conversation rendered with the model's chat template into the text train and generate take (a leading BOS
   * is left out when the tokenizer adds it to every document). TokenizerError NO_CHAT_TEMPLATE without one.
   */
  applyChatTemplate(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): Promise<string>;
  /** Refuses an adapter whose last training run diverged, in every format, unless allowDiverged. */
  exportAdapter(adapter: Adapter | string, options?: ExportAdapterOptions & { format?: 'peft' }): Promise<PeftFiles>;
  exportAdapter(adapter: Adapter | string, options: ExportAdapterOptions & { format: 'gguf' }): Promise<GgufAdapterFiles>;
  /** A base model named in the files that is not this one is a warning (onWarning, else console.warn), never an
   * error: the shapes decide whether the adapter loads. */
  importAdapter(files: { 'adapter_config.json': string | Uint8Array; 'adapter_model.safetensors': Uint8Array }, options?: { name?: string;
    allowFingerprintMismatch?: boolean; onWarning?: (warning: AdapterWarning) => void }): Promise<Adapter & { baseModelCheck: BaseModelCheck }>;
  exportModel(options?: { format?: 'hf' }): Promise<{ 'config.json': string; 'model.safetensors': Uint8Array }>;
  /** The model with its tokenizer as one GGUF file `llama-cli -m` runs (merged adapters included). */
  exportModel(options: { format: 'gguf'; dtype?: 'f16' | 'f32' }): Promise<{ 'model.gguf': Uint8Array }>;
  merge(adapter: Adapter | string, weight?: number): Promise<Adapter & { merged: boolean; editBytes: number }>;
  unmerge(adapter: Adapter | string): Promise<Adapter & { merged: boolean; editBytes: number }>;
  resize(adapter: Adapter | string, options: { rank?: number; energy?: number; name?: string }): Promise<{ adapter: Adapter; modules: ModuleError[]; totalError: number }>;
  combine(inputs: Array<Adapter | string | { adapter?: Adapter; id?: string; weight?: number }>, options?: { type?: 'linear' | 'cat' | 'svd'; rank?: number; name?: string }): Promise<{ adapter: Adapter; modules: ModuleError[] }>;
  extract(tuned: ModelSource, options?: { rank?: number; targets?: string[] | string; energy?: number; name?: string; signal?: AbortSignal; onProgress?: (event: ProgressEvent) => void }): Promise<{ adapter: Adapter; modules: ModuleError[]; totalError: number }>;
  lowRankApprox(matrix: Float32Array, m: number, n: number, options?: { rank?: number; maxRank?: number; energy?: number; split?: 'left' | 'balanced'; seed?: number }): Promise<{ rank: number; L: Float32Array; R: Float32Array; S: Float32Array; relError: number; energy: number; norm: number }>;
  dispose(): Promise<void>;
}

export declare class WebLoRA {
  static load(source: ModelSource, options?: LoadOptions): Promise<Engine>;
}

export declare class WebLoRAError extends Error {
  code: string;
  details: Record<string, unknown>;
  toJSON(): { name: string; code?: string; message: string; stack?: string; details?: Record<string, unknown> };
  static fromJSON(json: object): Error;
}
/** An argument of the wrong type or out of range (code INVALID_ARGUMENT). */
export declare class InvalidArgumentError extends WebLoRAError {}
export declare class NetworkError extends WebLoRAError {}
export declare class NotFoundError extends WebLoRAError {}
export declare class IntegrityError extends WebLoRAError {}
export declare class FormatError extends WebLoRAError {}
export declare class StorageFullError extends WebLoRAError {}
export declare class BaseModelMismatchError extends WebLoRAError {}
export declare class AlreadyExistsError extends WebLoRAError {}
export declare class InvalidAdapterError extends WebLoRAError {}
export declare class PassphraseError extends WebLoRAError {}
/** Something this environment lacks or this library does not do (code UNSUPPORTED). */
export declare class UnsupportedError extends WebLoRAError {}
/** A failure of the C core that no more specific class names (code SHAPE_MISMATCH, OUT_OF_MEMORY, ABI_MISMATCH or CORE_ERROR). */
export declare class CoreError extends WebLoRAError {}
/** The training data cannot make a training example, or the options do not fit it. */
export declare class DataError extends WebLoRAError {}
/** A call the engine's state does not allow (NO_ADAPTER, NO_TOKENIZER, BAD_STATE, NOT_LOADED, ...). */
export declare class EngineError extends WebLoRAError {}
/** The source cannot be used as a model (BAD_SOURCE, TOKENIZER_MISMATCH, MODEL_TOO_LARGE, ...). */
export declare class ModelSourceError extends WebLoRAError {}
/** Adapter options that cannot be used (INVALID_LORA_SPEC, UNKNOWN_TARGET, UNUSED_PATTERN). */
export declare class LoraSpecError extends WebLoRAError {}
export declare class UnsupportedAdapterError extends InvalidAdapterError {}
export declare class AdapterShapeError extends InvalidAdapterError {}
export declare class AdapterModelMismatchError extends InvalidAdapterError {}
export declare class SafetensorsError extends FormatError {}
export declare class SamplingError extends WebLoRAError {}
export declare class TokenizerError extends WebLoRAError {}
/** NaN or Inf in the loss or gradients (code NUMERIC), or a diverged run (code DIVERGED). */
export declare class NumericError extends WebLoRAError {}
/**
 * The core stopped on a broken internal invariant or a WebAssembly trap (code WASM_ABORTED). The engine is dead from
 * then on: every later call fails with this error; dispose it and load the model again.
 */
export declare class WasmAbortError extends WebLoRAError {}

export declare const DEFAULT_CACHE_NAME: string;
export declare function listCachedModels(options?: { cacheName?: string }): Promise<Array<{ base: string; files: Array<{ url: string; file: string; size: number }>; size: number }>>;
export declare function cachedSize(options?: { cacheName?: string }): Promise<number>;
/** A byte count as people read it: binary units, one decimal below 10 and none above ("9.5 MB", "977 KB"); '–' when unknown. */
export declare function formatBytes(bytes: number | null | undefined): string;
export declare function deleteCachedModel(base: string, options?: { cacheName?: string }): Promise<boolean>;
