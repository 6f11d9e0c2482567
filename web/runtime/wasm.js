// wasm.js: instantiates the standalone core identically in Node and in browsers (no Emscripten glue), with or
// without its thread pool, and offers the small memory helpers everything else uses: allocation, strings, typed
// views that survive growth.
//
// Two builds of the core: weblora.wasm (its own memory, one thread) and weblora-threads.wasm (a shared memory it
// imports), each in two SIMD flavours: SIMD128 (weblora*.wasm) and relaxed SIMD (weblora-relaxed*.wasm, whose GEMM
// uses fused multiply-adds: faster, and rounded once per multiply-add instead of twice). 'auto' takes the relaxed
// flavour where the engine validates relaxed SIMD (Chromium 114+, Node 22+, Node 20 with
// --experimental-wasm-relaxed-simd) and SIMD128 elsewhere. Results are bit-identical for any thread count within a
// flavour; the two flavours differ in the last bits. With threads, this thread instantiates the threads build, the
// core allocates a stack and scratch per worker, and N - 1 workers (thread.js) instantiate the same module on the
// same memory and wait in the core's pool. Threads need SharedArrayBuffer: always there in Node, only on cross-origin
// isolated pages in browsers.

import { node } from '#platform';
import { coreBuild, startThreadWorker as startBrowserThread } from '#assets';
import { coreImports } from './core-imports.js';
import { besidePackage } from './workers.js';
import { CoreError, InvalidArgumentError, NetworkError, UnsupportedError, WasmAbortError } from '../errors.js';

/** @typedef {Parameters<typeof coreBuild>[0]} CoreFile a build of the core by file name */
/** The builds: SIMD128 and relaxed SIMD, each with and without threads (#assets says where each is). */
const CORE_FILES = ['weblora.wasm', 'weblora-threads.wasm', 'weblora-relaxed.wasm', 'weblora-relaxed-threads.wasm'];

/** @type {Record<'simd128' | 'relaxed', { single: CoreFile, threads: CoreFile }>} */
const FLAVOUR_FILES = {
  simd128: { single: 'weblora.wasm', threads: 'weblora-threads.wasm' },
  relaxed: { single: 'weblora-relaxed.wasm', threads: 'weblora-relaxed-threads.wasm' },
};

/**
 * A build of the core, compiled once per thread: from the folder an app serves the builds from (options.wasmUrl,
 * an escape hatch), under its own file name, or else where #assets has it (beside this module, where a bundler
 * put it, or carried in the bundle).
 * @param {CoreFile} file
 * @param {string | URL} [folder] absolute, or relative to this context's location; ends in '/'
 * @returns {Promise<WebAssembly.Module>}
 */
function compileBuild(file, folder) {
  if (folder === undefined || folder === null) {
    const build = coreBuild(file);
    if (build instanceof URL) return compileWasm(build);
    return once(`carried ${file}`, async () => WebAssembly.compile(await build));
  }
  const url = new URL(String(folder), globalThis.location?.href);
  if (!url.pathname.endsWith('/')) {
    throw new InvalidArgumentError(`wasmUrl must be the folder the core's builds are served from, ending in "/" (it holds ${CORE_FILES.join(', ')}), got ${url.href}`);
  }
  return compileWasm(new URL(file, url));
}

/** The shared memory's limits in 64 KB pages: -sINITIAL_MEMORY=32MB and -sMAXIMUM_MEMORY=4GB in CMakeLists.txt (and the
 * relaxed builds' --initial-memory and --max-memory in tools/build.sh). */
const INITIAL_PAGES = 512;
const MAXIMUM_PAGES = 65536;
/** 'auto' uses every core up to this many: the model's GEMMs stop scaling well beyond it (memory bandwidth). */
export const AUTO_THREADS_CAP = 8;
/** The core's limit (WL_MAX_THREADS). */
export const MAX_THREADS = 64;
/** How long workers may take to start before the core runs with those that did. */
const START_TIMEOUT_MS = 20000;

/** @type {Map<string, Promise<WebAssembly.Module>>} */
const modules = new Map();

/** A module of one function that returns f32x4.relaxed_madd of three constants: valid only where relaxed SIMD is. */
const RELAXED_SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type section: () -> v128
  0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
  0x0a, 0x3d, 0x01, 0x3b, 0x00, // code section: one body of 59 bytes, no locals
  0xfd, 0x0c, ...new Array(16).fill(0), // v128.const 0
  0xfd, 0x0c, ...new Array(16).fill(0),
  0xfd, 0x0c, ...new Array(16).fill(0),
  0xfd, 0x85, 0x02, // f32x4.relaxed_madd
  0x0b, // end
]);

/** @returns {boolean} whether this engine runs relaxed SIMD */
export function relaxedSimdSupported() {
  try {
    return WebAssembly.validate(RELAXED_SIMD_PROBE);
  } catch {
    return false;
  }
}

/** The SIMD flavours a caller may ask for. */
export const SIMD_FLAVOURS = ['auto', 'relaxed', 'simd128'];

/**
 * The flavour of the core to load: 'relaxed' or 'simd128'.
 * @param {string} requested 'auto' (relaxed where the engine has it), 'relaxed' or 'simd128'
 * @returns {'relaxed' | 'simd128'}
 */
export function resolveSimd(requested) {
  if (!SIMD_FLAVOURS.includes(requested)) {
    throw new InvalidArgumentError(`simd must be one of ${SIMD_FLAVOURS.map((f) => `'${f}'`).join(', ')}, got ${String(requested)}`);
  }
  if (requested === 'simd128') return 'simd128';
  if (relaxedSimdSupported()) return 'relaxed';
  if (requested === 'relaxed') {
    throw new UnsupportedError('simd: \'relaxed\' was asked for, but this JavaScript engine has no relaxed SIMD '
      + '(Node 20 needs --experimental-wasm-relaxed-simd)');
  }
  return 'simd128';
}

/**
 * The module compiled under a key, compiled once per thread (a failure is not kept).
 * @param {string} key @param {() => Promise<WebAssembly.Module>} compile
 */
function once(key, compile) {
  const cached = modules.get(key);
  if (cached) return cached;
  const promise = compile();
  modules.set(key, promise);
  promise.catch(() => modules.delete(key));
  return promise;
}

/**
 * Compile a module once per thread and URL.
 * @param {BufferSource | URL | string} [source] wasm bytes or URL (relative: to this package's modules; default:
 *   weblora.wasm where #assets has it)
 * @returns {Promise<WebAssembly.Module>}
 */
export function compileWasm(source) {
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) return WebAssembly.compile(source);
  if (!source) return compileBuild('weblora.wasm');
  const url = new URL(String(source), besidePackage('weblora.wasm'));
  return once(url.href, async () => {
    if (node && url.protocol === 'file:') return WebAssembly.compile(await node.fs.readFile(url));
    const response = await fetch(url);
    if (!response.ok) {
      throw new NetworkError(`cannot fetch ${url}: HTTP ${response.status}`, { details: { url: url.href, status: response.status } });
    }
    if (WebAssembly.compileStreaming && response.headers.get('content-type') === 'application/wasm') {
      return WebAssembly.compileStreaming(response);
    }
    return WebAssembly.compile(await response.arrayBuffer());
  });
}

/**
 * The exports of an instance, each function wrapped so that an abort or a trap (WebAssembly.RuntimeError) marks the
 * instance dead: its memory may then hold half-updated state, so every later call fails with a WasmAbortError naming
 * the first failure instead of computing on it.
 * @param {WebAssembly.Exports} raw @param {WasmCore} state
 */
function guardExports(raw, state) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const [name, value] of Object.entries(raw)) {
    if (typeof value !== 'function') {
      out[name] = value;
      continue;
    }
    const fn = /** @type {Function} */ (value);
    out[name] = (/** @type {any[]} */ ...args) => {
      state.assertAlive();
      try {
        return fn(...args);
      } catch (err) {
        if (err instanceof WasmAbortError) state.aborted = err;
        else if (err instanceof WebAssembly.RuntimeError) state.aborted = new WasmAbortError(`the core trapped in ${name}: ${err.message}`, { cause: err });
        else throw err;
        throw state.aborted;
      }
    };
  }
  return out;
}

/**
 * A live instance of the C core with memory helpers.
 */
export class WasmCore {
  /** @param {WebAssembly.Instance} instance @param {WebAssembly.Memory} memory */
  constructor(instance, memory) {
    this.instance = instance;
    /** Why the instance died (an abort or a trap), or null while it runs. @type {WasmAbortError | null} */
    this.aborted = null;
    /** The instance's exports; after an abort or a trap every function refuses to run (guardExports). @type {any} */
    this.exports = guardExports(instance.exports, this);
    /** @type {WebAssembly.Memory} */
    this.memory = memory;
    /** Threads the core runs on (this one included). */
    this.threads = 1;
    /** Why fewer threads run than were asked for, or null. */
    this.threadsNote = null;
    /** @type {{ terminate: () => any }[]} */
    this.workers = [];
    this.refreshViews();
  }

  /** Throws, once the instance has died, a WasmAbortError that names the first failure. */
  assertAlive() {
    if (!this.aborted) return;
    throw new WasmAbortError(`the core stopped earlier (${this.aborted.message}) and cannot be used any more: load the model again`,
      { cause: this.aborted });
  }

  /** Typed views over memory; call after anything that may grow memory (done automatically on growth). */
  refreshViews() {
    const buf = this.memory.buffer;
    this.u8 = new Uint8Array(buf);
    this.i32 = new Int32Array(buf);
    this.u32 = new Uint32Array(buf);
    this.f32 = new Float32Array(buf);
    this.f64 = new Float64Array(buf);
  }

  /** @param {number} bytes @returns {number} pointer (never 0) */
  malloc(bytes) {
    const p = this.exports.wl_malloc(bytes) >>> 0;
    if (p === 0) throw new CoreError(`out of wasm memory allocating ${bytes} bytes`, { code: 'OUT_OF_MEMORY' });
    return p;
  }

  /** @param {number} ptr */
  free(ptr) {
    if (ptr) this.exports.wl_free_ptr(ptr);
  }

  /** Copy bytes into a new allocation. @param {Uint8Array} bytes */
  copyIn(bytes) {
    const p = this.malloc(bytes.byteLength);
    this.u8.set(bytes, p);
    return p;
  }

  /** @param {number} ptr NUL-terminated UTF-8 */
  readString(ptr) {
    ptr >>>= 0;
    if (!ptr) return '';
    let end = ptr;
    const u8 = this.u8;
    while (u8[end] !== 0) end++;
    // A copy: browsers' TextDecoder refuses views of shared memory.
    return new TextDecoder().decode(u8.slice(ptr, end));
  }

  /** Allocate a NUL-terminated UTF-8 copy of a string. */
  allocString(text) {
    const bytes = new TextEncoder().encode(text);
    const p = this.malloc(bytes.length + 1);
    this.u8.set(bytes, p);
    this.u8[p + bytes.length] = 0;
    return p;
  }

  lastError() {
    return this.readString(this.exports.wl_last_error());
  }

  /** The SIMD flavour this instance runs: 'relaxed' or 'simd128'. */
  get simd() {
    return this.readString(this.exports.wl_kernels_name()) === 'wasmrelaxed' ? 'relaxed' : 'simd128';
  }

  statusName(status) {
    return this.readString(this.exports.wl_status_name(status));
  }

  /** Stop the thread pool (the instance stays usable on one thread); resolves when its workers are gone. */
  stopThreads() {
    const workers = this.workers;
    livePools.delete(this);
    if (!workers.length) return Promise.resolve();
    // A dead instance cannot wake its threads: terminating them is all that is left.
    if (!this.aborted) this.exports.wl_threads_stop();
    this.workers = [];
    this.threads = 1;
    return Promise.all(workers.map((w) => w.terminate())).then(() => {});
  }
}

/**
 * Why this context cannot run the core on several threads, or null when it can.
 * @returns {string | null}
 */
export function threadsUnavailable() {
  if (node) return null;
  if (typeof SharedArrayBuffer !== 'function' || !globalThis.crossOriginIsolated) {
    return 'this page is not cross-origin isolated (it needs the headers Cross-Origin-Opener-Policy: same-origin and '
      + 'Cross-Origin-Embedder-Policy: require-corp), so the core runs on one thread';
  }
  if (typeof Worker !== 'function') return 'Workers are not available here, so the core runs on one thread';
  // memory.atomic.wait, which the core's pool sleeps in, is not allowed on a page's main thread.
  if (typeof window !== 'undefined') return 'the core runs on a page\'s main thread, where it cannot wait for other threads: use it in a Worker (WebLoRA.load does)';
  return null;
}

/**
 * The number of threads for a `threads` option: 'auto' (every core, at most AUTO_THREADS_CAP) or a whole
 * number 1 .. MAX_THREADS.
 * @param {number | 'auto' | undefined} requested
 * @returns {Promise<number>}
 */
export async function resolveThreads(requested) {
  if (requested === undefined || requested === 'auto') {
    let cores;
    if (node) {
      cores = node.os.availableParallelism?.() ?? node.os.cpus().length;
    } else {
      cores = globalThis.navigator?.hardwareConcurrency ?? 1;
    }
    return Math.max(1, Math.min(AUTO_THREADS_CAP, cores));
  }
  if (!Number.isInteger(requested) || requested < 1 || requested > MAX_THREADS) {
    throw new InvalidArgumentError(`threads must be 'auto' or a whole number from 1 to ${MAX_THREADS}, got ${String(requested)}`);
  }
  return requested;
}

/**
 * Cores whose pools run. Their workers sleep inside wasm (memory.atomic.wait), where Node cannot stop a thread, so
 * a Node process that ends without disposing of them would never exit: stop them when it is about to.
 * @type {Set<WasmCore>}
 */
const livePools = new Set();
let exitHookInstalled = false;

function trackPool(core) {
  livePools.add(core);
  if (node && !exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => livePools.forEach((c) => c.stopThreads()));
  }
}

/** A Worker running thread.js, as { post, terminate, on(message|error) }. */
async function startThreadWorker(index) {
  const name = `weblora thread ${index}`;
  if (node) {
    const w = new node.Worker(besidePackage('thread.js'), { name });
    return {
      post: (msg) => w.postMessage(msg),
      terminate: () => w.terminate(),
      onMessage: (fn) => w.on('message', fn),
      onError: (fn) => w.on('error', fn),
      // An idle pool must not keep Node running; a listener added after this would hold it again.
      unref: () => w.unref(),
    };
  }
  const w = await startBrowserThread(name);
  return {
    post: (msg) => w.postMessage(msg),
    terminate: () => w.terminate(),
    onMessage: (fn) => w.addEventListener('message', (e) => fn(e.data)),
    onError: (fn) => w.addEventListener('error', (e) => fn(new UnsupportedError(e.message || 'the thread worker could not start'))),
    unref: () => {},
  };
}

/**
 * Instantiate a module (threads build when memory is given) and run its constructors once.
 * @param {WebAssembly.Module} module @param {WebAssembly.Memory | null} memory
 */
async function instantiate(module, memory) {
  /** @type {WasmCore | null} */
  let core = null;
  const imports = coreImports(memory, () => /** @type {WasmCore} */ (core).memory, () => {}, () => core?.refreshViews());
  const instance = await WebAssembly.instantiate(module, imports);
  core = new WasmCore(instance, memory ?? /** @type {WebAssembly.Memory} */ (instance.exports.memory));
  core.exports._initialize();
  return core;
}

/** Start n - 1 workers on core's pool; resolves once they run (or the time is up) with how many do. */
async function startPool(core, module, n) {
  const x = core.exports;
  const status = x.wl_threads_init(n);
  if (status !== 0) throw new CoreError(core.lastError() || `the core could not set up ${n} threads`);
  const failures = [];
  for (let i = 1; i < n; i++) {
    const stack = x.wl_thread_stack(i) >>> 0;
    let worker;
    try {
      worker = await startThreadWorker(i);
    } catch (err) {
      failures.push(err.message);
      continue;
    }
    core.workers.push(worker);
    worker.onError((err) => failures.push(err.message ?? String(err)));
    worker.onMessage((msg) => {
      if (msg?.type === 'ready') worker.post({ module, memory: core.memory, index: i, stack });
      else if (msg?.type === 'failed') {
        failures.push(msg.message);
        console.error(`weblora: thread ${i} of the core stopped: ${msg.message}`);
      }
    });
    worker.unref();
  }
  const started = Date.now();
  while (x.wl_threads_running() + failures.length < n - 1 && Date.now() - started < START_TIMEOUT_MS) {
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const running = x.wl_threads_running();
  if (running < n - 1) {
    core.threadsNote = `${n - 1 - running} of ${n - 1} thread workers did not start${failures.length ? ` (${failures[0]})` : ''}`;
  }
  return 1 + running;
}

/**
 * Instantiate the core. Every instance gets its own memory (and, with threads, its own pool).
 * @param {{ module?: WebAssembly.Module, source?: BufferSource | URL | string,
 *   threadsModule?: WebAssembly.Module, threadsSource?: BufferSource | URL | string,
 *   threads?: number | 'auto', simd?: 'auto' | 'relaxed' | 'simd128', wasmUrl?: string | URL }} [options]
 *   threads: default 1; simd: which flavour of the core to load when no module or source is given (default
 *   'auto'); wasmUrl: the folder holding every build of the core, when not beside this module
 * @returns {Promise<WasmCore>}
 */
export async function instantiateCore(options = {}) {
  const want = await resolveThreads(options.threads ?? 1);
  const files = FLAVOUR_FILES[resolveSimd(options.simd ?? 'auto')];
  let note = null;
  if (want > 1) {
    note = threadsUnavailable();
    if (!note) {
      let core = null;
      try {
        const module = options.threadsModule
          ?? (await (options.threadsSource ? compileWasm(options.threadsSource) : compileBuild(files.threads, options.wasmUrl)));
        const memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAXIMUM_PAGES, shared: true });
        core = await instantiate(module, memory);
        trackPool(core);
        core.threads = await startPool(core, module, want);
        return core;
      } catch (err) {
        await core?.stopThreads().catch(() => {});
        note = `the core could not start ${want} threads (${err.message}), so it runs on one thread`;
      }
    }
  }
  const module = options.module ?? (await (options.source ? compileWasm(options.source) : compileBuild(files.single, options.wasmUrl)));
  const core = await instantiate(module, null);
  core.threadsNote = note;
  return core;
}
