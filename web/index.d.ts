// Type declarations of the public weblora API (web/index.js).

/** Progress events while a model loads, in the transformers.js shape. */
export type ProgressEvent =
  | { status: 'initiate' | 'download' | 'done'; name: string; file: string }
  | { status: 'progress'; name: string; file: string; loaded: number; total: number; progress: number }
  | { status: 'ready'; name: string; task: string; model: string };

/** A model source: an HF-style base URL ending in "/", a .safetensors or llama2.c .bin URL, local files, or
 * (Node) a local path. */
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
  /** Tokenizer override: URL, path, File or bytes of tokenizer.json or a llama2.c tokenizer.bin. */
  tokenizer?: string | URL | Blob | ArrayBuffer | ArrayBufferView;
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
  workerUrl?: string | URL;
}

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
  arch: 'llama' | 'gpt2';
  config: ModelConfig;
  parameters: number;
  fingerprint: string;
  memoryBytes: number;
  hasTokenizer: boolean;
  modules: string[];
  /** Threads the core runs on. */
  threads: number;
  /** Why fewer threads run than were asked for (no cross-origin isolation, workers that did not start), or null. */
  threadsNote: string | null;
}

export interface AdapterOptions {
  rank?: number;
  alpha?: number;
  /** Module names matched PEFT's way ("q_proj", "c_attn", "all-linear") or one regex string. */
  targets?: string[] | string;
  init?: 'default' | 'gaussian' | 'pissa' | 'pissa_fast';
  useRslora?: boolean;
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  layers?: number[];
  dropout?: number;
  seed?: number;
  name?: string;
}

/** A LoRA adapter held by the engine (plain data; pass it or its id to other calls). */
export interface Adapter {
  id: string;
  name: string | null;
  rank: number;
  alpha: number;
  targets: string[] | string;
  useRslora: boolean;
  parameters: number;
  baseModel: string;
  baseFingerprint: string;
  created: number;
  steps: number;
  finalLoss: number | null;
}

export type AdapterSelection = Adapter | string | Array<Adapter | string> | Record<string, number>;

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
  gradAccum?: number;
  clipNorm?: number;
  evalSplit?: number;
  evalEvery?: number;
  dropout?: number;
  /** Train every weight of the base model (pass null as the adapter). */
  full?: boolean;
  /** Save adapter, optimizer state and data position to IndexedDB every `every` steps. */
  checkpoint?: { every: number; runId?: string; keep?: boolean };
  /** Resume a run from its last checkpoint. */
  resume?: string;
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
  dataTokens: number;
}

export interface TrainRun {
  done: Promise<TrainSummary>;
  abort(reason?: unknown): void;
}

export interface GenerateOptions {
  adapter?: AdapterSelection;
  maxTokens?: number;
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
  save(name: string, adapter: Adapter | string, options?: { overwrite?: boolean }): Promise<StoredAdapter>;
  load(name: string, options?: { allowFingerprintMismatch?: boolean }): Promise<Adapter>;
  list(): Promise<StoredAdapter[]>;
  rename(from: string, to: string): Promise<void>;
  delete(name: string): Promise<void>;
  export(name: string): Promise<Array<{ name: string; data: Uint8Array }>>;
  import(files: Array<{ name: string; data: Uint8Array | string | Blob }>, options: { name: string }): Promise<StoredAdapter>;
  checkpoints(): Promise<Array<{ runId: string; step: number }>>;
  deleteCheckpoint(runId: string): Promise<void>;
}

export declare class Engine {
  readonly info: EngineInfo;
  readonly adapters: AdapterStoreApi;
  createAdapter(options?: AdapterOptions): Promise<Adapter>;
  freeAdapter(adapter: Adapter | string): Promise<void>;
  train(adapter: Adapter | string | null, texts: string | string[], options?: TrainOptions): TrainRun;
  evaluate(texts: string | string[], options?: { adapter?: AdapterSelection; seqLen?: number; batchSize?: number; signal?: AbortSignal }): Promise<{ loss: number; perplexity: number; tokens: number; sequences: number }>;
  generate(prompt: string, options?: GenerateOptions): Promise<Generation>;
  exportAdapter(adapter: Adapter | string): Promise<PeftFiles>;
  importAdapter(files: { 'adapter_config.json': string | Uint8Array; 'adapter_model.safetensors': Uint8Array }, options?: { name?: string; allowFingerprintMismatch?: boolean }): Promise<Adapter>;
  exportModel(): Promise<{ 'config.json': string; 'model.safetensors': Uint8Array }>;
  merge(adapter: Adapter | string, weight?: number): Promise<Adapter & { merged: boolean; editBytes: number }>;
  unmerge(adapter: Adapter | string): Promise<Adapter & { merged: boolean; editBytes: number }>;
  resize(adapter: Adapter | string, options: { rank?: number; energy?: number; name?: string }): Promise<{ adapter: Adapter; modules: ModuleError[]; totalError: number }>;
  combine(inputs: Array<Adapter | string | { adapter?: Adapter; id?: string; weight?: number }>, options?: { type?: 'linear' | 'cat' | 'svd'; rank?: number; name?: string }): Promise<{ adapter: Adapter; modules: ModuleError[] }>;
  extract(tuned: ModelSource, options?: { rank?: number; targets?: string[] | string; energy?: number; name?: string; signal?: AbortSignal }): Promise<{ adapter: Adapter; modules: ModuleError[]; totalError: number }>;
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
export declare class NetworkError extends WebLoRAError {}
export declare class NotFoundError extends WebLoRAError {}
export declare class IntegrityError extends WebLoRAError {}
export declare class FormatError extends WebLoRAError {}
export declare class StorageFullError extends WebLoRAError {}
export declare class BaseModelMismatchError extends WebLoRAError {}
export declare class AlreadyExistsError extends WebLoRAError {}
export declare class InvalidAdapterError extends WebLoRAError {}
export declare class PassphraseError extends WebLoRAError {}
export declare class UnsupportedError extends WebLoRAError {}

export declare const DEFAULT_CACHE_NAME: string;
export declare function listCachedModels(options?: { cacheName?: string }): Promise<Array<{ base: string; files: Array<{ url: string; file: string; size: number }>; size: number }>>;
export declare function cachedSize(options?: { cacheName?: string }): Promise<number>;
export declare function deleteCachedModel(base: string, options?: { cacheName?: string }): Promise<boolean>;
