// client.js: the main-thread side of the package. WebLoRA.load starts a module Worker (worker_threads in Node)
// that owns the wasm instance; every engine call becomes a message matched by id, with progress events, an
// AbortSignal per call, errors rebuilt with their class, code and stack, and big buffers transferred.
import { node } from '#platform';
import { WebLoRAError, deserializeError } from './errors.js';
import { carriedEngineWorker } from '#assets';
import { besidePackage, moduleWorker, sameOrigin } from './workers.js';
import { env } from './env.js';
import { sourceKind } from './identity.js';

/** Why the core runs on fewer threads than asked (no cross-origin isolation) is said once per page. */
let threadsNoted = false;

/** Functions and signals stay on this side; everything else must survive structured clone. */
function splitOptions(options = {}) {
  const local = {};
  const remote = {};
  for (const [k, v] of Object.entries(options ?? {})) {
    if (typeof v === 'function' || k === 'signal') local[k] = v;
    else remote[k] = v;
  }
  return { local, remote };
}

/**
 * A load's source and options as the worker needs them. The worker runs at its own URL (a bundler's assets folder),
 * so a relative model URL or wasmUrl is resolved here, against the page (document.baseURI); URL objects travel as
 * their text; the page's env.remoteHost goes along, since the worker has its own copy of env.
 * @param {unknown} source @param {Record<string, unknown>} options
 */
function forWorker(source, options) {
  const base = node ? null : (globalThis.document?.baseURI ?? globalThis.location?.href);
  const resolve = (/** @type {unknown} */ value) => {
    if (value instanceof URL) return value.href;
    if (base && typeof value === 'string' && value.trim() && sourceKind(value.trim()) === 'relative') return new URL(value.trim(), base).href;
    return value;
  };
  const out = { remoteHost: env.remoteHost, ...options };
  for (const key of ['wasmUrl', 'tokenizerUrl', 'configUrl']) if (key in out) out[key] = resolve(out[key]);
  return { source: resolve(source), options: out };
}

/** ArrayBuffers in call arguments (transferred: the caller's copies become detached). */
function collectTransfer(value, out = new Set(), depth = 0) {
  if (!value || typeof value !== 'object' || depth > 4) return out;
  if (value instanceof ArrayBuffer) out.add(value);
  else if (ArrayBuffer.isView(value)) {
    if (value.byteOffset === 0 && value.byteLength === value.buffer.byteLength && value.buffer instanceof ArrayBuffer) out.add(value.buffer);
  } else if (Array.isArray(value)) value.forEach((v) => collectTransfer(v, out, depth + 1));
  else if (Object.getPrototypeOf(value) === Object.prototype) Object.values(value).forEach((v) => collectTransfer(v, out, depth + 1));
  return out;
}

/** A worker and its message plumbing. */
class Channel {
  /**
   * @param {any} worker @param {boolean} nodeWorker
   * @param {string} [why] what most likely stopped the worker when it fails to start without saying why
   */
  constructor(worker, nodeWorker, why = 'its script or one of its imports could not be loaded') {
    this.worker = worker;
    this.nodeWorker = nodeWorker;
    this.nextId = 1;
    /** @type {Map<number, { resolve: Function, reject: Function, handlers: Record<string, Function> }>} */
    this.pending = new Map();
    this.closed = null;
    const onMessage = (msg) => this.onMessage(msg);
    const onFailure = (err) => this.fail(err instanceof Error ? err : new WebLoRAError(`worker failed: ${err?.message ?? err}`, { code: 'WORKER_FAILED' }));
    if (nodeWorker) {
      worker.on('message', onMessage);
      worker.on('error', onFailure);
      worker.on('exit', (code) => this.fail(new WebLoRAError(`worker exited (code ${code})`, { code: 'WORKER_EXITED' })));
    } else {
      worker.addEventListener('message', (e) => onMessage(e.data));
      worker.addEventListener('error', (e) => onFailure(new WebLoRAError(e.message ? `worker error: ${e.message}`
        : `the worker failed to start: ${why}`, { code: 'WORKER_FAILED' })));
      worker.addEventListener('messageerror', () => onFailure(new WebLoRAError('a worker message could not be read', { code: 'WORKER_FAILED' })));
    }
    // A worker that never starts (a script or import that cannot load) must fail the load, not hang it.
    this.ready = new Promise((resolve, reject) => {
      this.onReady = resolve;
      this.onStartFailure = reject;
    });
  }

  /**
   * @param {string | URL | undefined} workerUrl where the worker script is, when not beside this file (an app
   *   that serves it elsewhere); relative to the page
   */
  static async start(workerUrl) {
    if (node) return new Channel(new node.Worker(new URL(String(workerUrl ?? 'worker.js'), besidePackage('worker.js'))), true);
    if (workerUrl) return new Channel(moduleWorker(new URL(String(workerUrl), globalThis.location?.href), 'weblora'), false);
    // A bundle that emits no files for new URL(…) (esbuild, Rollup) carries the worker's script (#assets).
    let carried;
    try {
      carried = await carriedEngineWorker('weblora');
    } catch (err) {
      throw new WebLoRAError(err.message, { code: 'WORKER_FAILED', cause: err });
    }
    if (carried) return new Channel(carried, false, 'it starts from a blob: URL, which a Content-Security-Policy must allow with worker-src blob:');
    // Written out so that bundlers (Vite, webpack) build the worker with its imports and emit it.
    if (sameOrigin(import.meta.url)) return new Channel(new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'weblora' }), false);
    return new Channel(moduleWorker(besidePackage('worker.js'), 'weblora'), false);
  }

  post(msg, transfer = []) {
    this.worker.postMessage(msg, transfer);
  }

  onMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'ready') {
      this.onReady();
      return;
    }
    const call = this.pending.get(msg.id);
    if (!call) return;
    if (msg.type === 'event') {
      try {
        call.handlers[msg.name]?.(msg.data);
      } catch (err) {
        // A throwing callback must not break the protocol; surface it asynchronously.
        setTimeout(() => { throw err; });
      }
    } else if (msg.type === 'result') {
      this.pending.delete(msg.id);
      call.resolve(msg.value);
    } else if (msg.type === 'error') {
      this.pending.delete(msg.id);
      call.reject(deserializeError(msg.error));
    }
  }

  fail(err) {
    if (this.closed) return;
    this.closed = err;
    this.onStartFailure(err);
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
  }

  /**
   * @param {string} method
   * @param {any[]} args
   * @param {{ signal?: AbortSignal, handlers?: Record<string, Function> }} [opts]
   */
  call(method, args, { signal, handlers = {} } = {}) {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason ?? new DOMException('aborted', 'AbortError'));
        return;
      }
      const onAbort = () => this.post({ type: 'abort', id, reason: String(signal?.reason?.message ?? 'aborted') });
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (fn) => (v) => {
        signal?.removeEventListener('abort', onAbort);
        fn(v);
      };
      this.pending.set(id, { resolve: done(resolve), reject: done(reject), handlers });
      try {
        this.post({ type: 'call', id, method, args }, [...collectTransfer(args)]);
      } catch (err) {
        this.pending.delete(id);
        reject(new WebLoRAError(`cannot send ${method} to the worker: ${err.message}`, { code: 'BAD_ARGUMENT', cause: err }));
      }
    });
  }

  async terminate() {
    this.fail(new WebLoRAError('the engine was disposed', { code: 'DISPOSED' }));
    await this.worker.terminate();
  }
}

/** An adapter handle: plain data naming an adapter that lives in the worker. */
function adapterId(adapter) {
  if (typeof adapter === 'string') return adapter;
  if (adapter && typeof adapter.id === 'string') return adapter.id;
  throw new WebLoRAError('expected an adapter (from createAdapter or adapters.load) or its id', { code: 'INVALID_ARGUMENT' });
}

function adapterSelection(sel) {
  if (sel === undefined || sel === null) return sel;
  if (Array.isArray(sel)) return sel.map(adapterId);
  if (typeof sel === 'string' || typeof sel.id === 'string') return adapterId(sel);
  if (typeof sel === 'object') return Object.fromEntries(Object.entries(sel).map(([k, w]) => [k, w]));
  return sel;
}

/** A call that imports adapter files: options.onWarning hears the engine's doubts about their base model. */
function importCall(channel, method, first, options = {}) {
  const { local, remote } = splitOptions(options);
  return channel.call(method, [first, { ...remote, reportWarnings: !!local.onWarning }], { handlers: { warning: local.onWarning } });
}

/**
 * The engine: a proxy whose calls run in the worker.
 */
export class Engine {
  /** @param {Channel} channel @param {object} info */
  constructor(channel, info) {
    this.channel = channel;
    /** What was loaded: name, arch, config, parameters, fingerprint, ... */
    this.info = info;
    const call = (m, ...a) => channel.call(m, a);
    /** The IndexedDB adapter store (in the worker). */
    this.adapters = {
      save: (name, adapter, opts) => call('storeSave', name, adapterId(adapter), opts),
      load: (name, opts) => importCall(channel, 'storeLoad', name, opts),
      list: () => call('storeList'),
      rename: (from, to) => call('storeRename', from, to),
      delete: (name) => call('storeDelete', name),
      export: (name) => call('storeExport', name),
      import: (files, opts) => importCall(channel, 'storeImport', files, opts),
      checkpoints: () => call('listCheckpoints'),
      deleteCheckpoint: (runId) => call('deleteCheckpoint', runId),
    };
  }

  /** @param {object} [opts] rank, alpha, targets, init, pissaIters, useRslora, dora, enableLora, rankPattern, alphaPattern, dropout, seed, name */
  createAdapter(opts = {}) {
    return this.channel.call('createAdapter', [opts]);
  }

  /** Free an adapter held in the worker. */
  freeAdapter(adapter) {
    return this.channel.call('freeAdapter', [adapterId(adapter)]);
  }

  /**
   * Train an adapter on texts. Returns at once; `done` resolves to the summary.
   * @param {any} adapter from createAdapter (or null with { full: true })
   * @param {import('./corpus.js').CorpusSource | import('./corpus.js').CorpusSource[]} texts strings (one document each) or Files/Blobs streamed as they are
   *   tokenized (a .jsonl name: one {"text": ...} document per line); in Node also { path } of local files
   * @param {object} [options] steps, epochs, lr, batchSize, seqLen, seed, optimizer, schedule, ..., onStep, onEval,
   *   onTokenize (progress of tokenization), onCheckpoint, signal, checkpoint: { every, runId }, resume: runId
   */
  train(adapter, texts, options = {}) {
    const { local, remote } = splitOptions(options);
    const controller = new AbortController();
    if (local.signal) {
      if (local.signal.aborted) controller.abort(local.signal.reason);
      else local.signal.addEventListener('abort', () => controller.abort(local.signal.reason), { once: true });
    }
    const done = this.channel.call('train', [adapter === null ? null : adapterId(adapter), texts, remote], {
      signal: controller.signal,
      handlers: { step: local.onStep, eval: local.onEval, checkpoint: local.onCheckpoint, tokenize: local.onTokenize },
    });
    return { done, abort: (reason) => controller.abort(reason) };
  }

  /**
   * How many tokens training would see in texts (BOS/EOS around each document included): { tokens, documents }.
   * @param {import('./corpus.js').CorpusSource | import('./corpus.js').CorpusSource[]} texts @param {{ signal?: AbortSignal }} [options]
   */
  countTokens(texts, options = {}) {
    return this.channel.call('countTokens', [texts], { signal: options.signal });
  }

  /**
   * A conversation ([{ role, content }]) rendered with the model's chat template (engine.info.chatTemplate) into
   * the text train and generate take; addGenerationPrompt ends it with the opening of the assistant's turn.
   * @param {{ role: string, content: string }[]} messages @param {{ addGenerationPrompt?: boolean }} [options]
   */
  applyChatTemplate(messages, options = {}) {
    return this.channel.call('applyChatTemplate', [messages, { addGenerationPrompt: !!options.addGenerationPrompt }]);
  }

  /** Held-out style loss of texts with the given adapters (or the base model). */
  evaluate(texts, options = {}) {
    const { local, remote } = splitOptions(options);
    return this.channel.call('evaluate', [adapterSelection(remote.adapter), texts, remote], { signal: local.signal });
  }

  /**
   * @param {string} prompt
   * @param {object} [options] adapter (handle, id, list, or { id: weight }), maxTokens, temperature, topK, topP,
   *   seed, stop, onToken, signal
   */
  generate(prompt, options = {}) {
    const { local, remote } = splitOptions(options);
    remote.adapter = adapterSelection(remote.adapter);
    remote.streamTokens = !!local.onToken;
    return this.channel.call('generate', [prompt, remote], { signal: local.signal, handlers: { token: local.onToken } });
  }

  /**
   * Files of a loaded adapter: PEFT { config, files: { 'adapter_config.json', 'adapter_model.safetensors' } } (with
   * { portable: true }, every module's scale folded into lora_B under one plain lora_alpha), or with
   * { format: 'gguf', dtype: 'f16'|'f32' } { files: { 'adapter.gguf' } } for llama.cpp's --lora. An adapter whose
   * last training run diverged is refused in every format unless options.allowDiverged (as is adapters.save).
   * @param {any} adapter
   * @param {{ format?: 'peft'|'gguf', portable?: boolean, dtype?: 'f16'|'f32', allowDiverged?: boolean }} [options]
   */
  exportAdapter(adapter, options = {}) {
    return this.channel.call('exportAdapter', [adapterId(adapter), options]);
  }

  /**
   * Load PEFT files ({ 'adapter_config.json': string|bytes, 'adapter_model.safetensors': bytes }) onto the model.
   * The result's baseModelCheck compares the base the files name with this model; options.onWarning hears of a
   * mismatch (level 'warning') or of a base that could not be checked (level 'info').
   * @param {object} files @param {{ name?: string, allowFingerprintMismatch?: boolean, onWarning?: Function }} [options]
   */
  importAdapter(files, options = {}) {
    return importCall(this.channel, 'importAdapter', files, options);
  }

  /** Merge an adapter into the base weights (no LoRA work at generation); undo with unmerge, bit for bit. */
  merge(adapter, weight = 1) {
    return this.channel.call('merge', [adapterId(adapter), weight]);
  }

  unmerge(adapter) {
    return this.channel.call('unmerge', [adapterId(adapter)]);
  }

  /** A lower-rank copy of an adapter: { adapter, modules: [{ module, rank, relError }], totalError }. */
  resize(adapter, options = {}) {
    return this.channel.call('resize', [adapterId(adapter), options]);
  }

  /** Combine adapters ([adapter | { id, weight }]) with type 'linear' | 'cat' | 'svd' and an optional rank. */
  combine(inputs, options = {}) {
    const list = inputs.map((x) => (typeof x === 'string' || x.rank !== undefined ? { id: adapterId(x), weight: 1 } : { id: adapterId(x.adapter ?? x.id), weight: x.weight ?? 1 }));
    return this.channel.call('combine', [list, options]);
  }

  /** Extract an adapter from a fine-tuned model of the same shape ({ rank, targets, energy }). */
  extract(tunedSource, options = {}) {
    const { local, remote } = splitOptions(options);
    return this.channel.call('extract', [tunedSource, remote], { signal: local.signal, handlers: { progress: local.onProgress } });
  }

  /**
   * Best low-rank approximation of any row-major (m, n) matrix: { rank, L (m, rank), R (rank, n), S, relError, energy,
   * norm }, with a fixed rank or the smallest rank (up to maxRank) keeping `energy` of the squared Frobenius norm.
   * @param {Float32Array} matrix @param {number} m @param {number} n
   * @param {{ rank?: number, maxRank?: number, energy?: number, split?: 'left'|'balanced', seed?: number }} [options]
   */
  lowRankApprox(matrix, m, n, options = {}) {
    return this.channel.call('lowRankApprox', [matrix.slice(), m, n, options]);
  }

  /**
   * The base model's current weights (merged adapters included) as Hugging Face files, or with
   * { format: 'gguf', dtype: 'f16'|'f32' } as { 'model.gguf' } with the tokenizer, for llama.cpp.
   */
  exportModel(options = {}) {
    return this.channel.call('exportModel', [options]);
  }

  /** Release the worker and its memory. */
  async dispose() {
    await this.channel.call('dispose', []).catch(() => {});
    await this.channel.terminate();
  }
}

/** Entry point. */
export class WebLoRA {
  /**
   * Load a base model in a new worker.
   * @param {any} source HF-style base URL, .safetensors or llama2.c .bin URL, File list / ArrayBuffer / { name: data }
   *   map, or (Node) a local path
   * @param {{ onProgress?: (e: object) => void, signal?: AbortSignal, threads?: number | 'auto', tokenizer?: any,
   *   sha256?: Record<string, string>, cacheName?: string, store?: object, workerUrl?: string|URL } & object} [options]
   *   threads: 'auto' (default: every core, at most 8) or a number. A browser page that is not cross-origin isolated
   *   runs one thread (engine.info.threads and a console note say so).
   * @returns {Promise<Engine>}
   */
  static async load(source, options = {}) {
    const { local, remote } = splitOptions(options);
    const { workerUrl, ...rest } = remote;
    const channel = await Channel.start(workerUrl);
    try {
      await channel.ready;
    } catch (err) {
      await channel.terminate().catch(() => {});
      throw err;
    }
    try {
      const sent = forWorker(source, rest);
      const info = await channel.call('load', [sent.source, sent.options], { signal: local.signal, handlers: { progress: local.onProgress } });
      if (info.threadsNote && !threadsNoted) {
        threadsNoted = true;
        console.warn(`weblora: ${info.threadsNote}.`);
      }
      return new Engine(channel, info);
    } catch (err) {
      await channel.terminate();
      throw err;
    }
  }
}
