// client.js: the main-thread side of the package. WebLoRA.load starts a module Worker (worker_threads in Node)
// that owns the wasm instance; every engine call becomes a message matched by id, with progress events, an
// AbortSignal per call, errors rebuilt with their class, code and stack, and big buffers transferred.
import { node } from '#platform';
import { InvalidArgumentError, WebLoRAError, deserializeError } from '../errors.js';
import { carriedEngineWorker } from '#assets';
import { besidePackage, moduleWorker, sameOrigin } from './workers.js';
import { env } from '../env.js';
import { sourceKind } from '../storage/identity.js';
import { ENGINE_METHODS, STORE_METHODS, STORE_PREFIX } from './api.js';

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
   * @param {{ signal?: AbortSignal, handlers?: Record<string, Function>, events?: string[] }} [opts] events: the
   *   names of the handlers given, so that the worker sends only those
   */
  call(method, args, { signal, handlers = {}, events = [] } = {}) {
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
        this.post({ type: 'call', id, method, args, events }, [...collectTransfer(args)]);
      } catch (err) {
        this.pending.delete(id);
        reject(new InvalidArgumentError(`cannot send ${method} to the worker: ${err.message}`, { cause: err }));
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
  throw new InvalidArgumentError('expected an adapter (from createAdapter or adapters.load) or its id');
}

function adapterSelection(sel) {
  if (sel === undefined || sel === null) return sel;
  if (Array.isArray(sel)) return sel.map(adapterId);
  if (typeof sel === 'string' || typeof sel.id === 'string') return adapterId(sel);
  if (typeof sel === 'object') return Object.fromEntries(Object.entries(sel).map(([k, w]) => [k, w]));
  return sel;
}

/** combine's inputs: handles, ids or { adapter | id, weight }, as [{ id, weight }]. */
function weightedAdapters(inputs) {
  if (!Array.isArray(inputs)) throw new InvalidArgumentError('expected a list of adapters to combine');
  return inputs.map((x) => (typeof x === 'string' || x.rank !== undefined ? { id: adapterId(x), weight: 1 }
    : { id: adapterId(x.adapter ?? x.id), weight: x.weight ?? 1 }));
}

/**
 * One call of the API (api.js) through the channel: arguments converted by their kind, the option callbacks the
 * spec names as events listened to, the signal forwarded as an abort. A `run` method returns { done, abort }.
 * @param {Channel} channel @param {string} method @param {import('./api.js').MethodSpec} spec @param {any[]} given
 */
function remoteCall(channel, method, spec, given) {
  /** @type {Record<string, Function>} */
  const handlers = {};
  /** @type {AbortSignal | undefined} */
  let signal;
  const args = spec.args.map((kind, i) => {
    const value = given[i];
    if (kind === 'adapter') return adapterId(value);
    if (kind === 'adapterOrNull') return value === null ? null : adapterId(value);
    if (kind === 'weightedAdapters') return weightedAdapters(value);
    if (kind === 'copy') return value?.slice();
    if (kind !== 'options') return value;
    const { local, remote } = splitOptions(value);
    signal = local.signal;
    for (const [callback, event] of Object.entries(spec.events ?? {})) if (local[callback]) handlers[event] = local[callback];
    if ('adapter' in remote) remote.adapter = adapterSelection(remote.adapter);
    return remote;
  });
  const events = Object.keys(handlers);
  if (!spec.run) return channel.call(method, args, { signal, handlers, events });
  const controller = new AbortController();
  if (signal) {
    if (signal.aborted) controller.abort(signal.reason);
    else signal.addEventListener('abort', () => controller.abort(signal?.reason), { once: true });
  }
  const done = channel.call(method, args, { signal: controller.signal, handlers, events });
  return { done, abort: (/** @type {unknown} */ reason) => controller.abort(reason) };
}

/**
 * The engine: a proxy whose calls run in the worker. Its methods are those of api.js (declared in index.d.ts),
 * added below from that table.
 */
export class Engine {
  /** @param {Channel} channel @param {object} info */
  constructor(channel, info) {
    this.channel = channel;
    /** What was loaded: name, arch, config, parameters, fingerprint, ... */
    this.info = info;
    /** The IndexedDB adapter store (in the worker). @type {Record<string, Function>} */
    this.adapters = Object.fromEntries(Object.entries(STORE_METHODS).map(([name, spec]) =>
      [name, (/** @type {any[]} */ ...args) => remoteCall(channel, STORE_PREFIX + name, spec, args)]));
  }

  /** Release the worker and its memory. */
  async dispose() {
    await this.channel.call('dispose', []).catch(() => {});
    await this.channel.terminate();
  }
}

for (const [name, spec] of Object.entries(ENGINE_METHODS)) {
  Object.defineProperty(Engine.prototype, name, {
    value: function (/** @type {any[]} */ ...args) {
      return remoteCall(this.channel, name, spec, args);
    },
    writable: true, configurable: true,
  });
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
   * @returns {Promise<import('../index.js').Engine>}
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
      // Its methods come from api.js; index.d.ts declares them.
      return /** @type {import('../index.js').Engine} */ (/** @type {unknown} */ (new Engine(channel, info)));
    } catch (err) {
      await channel.terminate();
      throw err;
    }
  }
}
