// wasm.js: instantiates the standalone weblora.wasm identically in Node and in browsers (no Emscripten glue),
// and offers the small memory helpers everything else uses: allocation, strings, typed views that survive growth.

const WASM_URL = new URL('./weblora.wasm', import.meta.url);
const isNode = typeof process !== 'undefined' && !!process.versions?.node && typeof window === 'undefined';

/** @type {Promise<WebAssembly.Module> | null} */
let modulePromise = null;

/**
 * Compile the module once per thread.
 * @param {BufferSource | URL | string} [source] wasm bytes or URL (defaults to weblora.wasm next to this file)
 * @returns {Promise<WebAssembly.Module>}
 */
export function compileWasm(source) {
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) return WebAssembly.compile(source);
  if (!source && modulePromise) return modulePromise;
  const url = source ? new URL(String(source), WASM_URL) : WASM_URL;
  const promise = (async () => {
    if (isNode && url.protocol === 'file:') {
      const { readFile } = await import('node:fs/promises');
      return WebAssembly.compile(await readFile(url));
    }
    const response = await fetch(url);
    if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
    if (WebAssembly.compileStreaming && response.headers.get('content-type') === 'application/wasm') {
      return WebAssembly.compileStreaming(response);
    }
    return WebAssembly.compile(await response.arrayBuffer());
  })();
  if (!source) modulePromise = promise;
  return promise;
}

/** Thrown when the C core aborts on a broken internal invariant (never for bad input). */
export class WasmAbort extends Error {
  constructor(message) {
    super(message);
    this.name = 'WasmAbort';
    this.code = 'internal';
  }
}

/**
 * A live instance of the C core with memory helpers.
 */
export class WasmCore {
  /** @param {WebAssembly.Instance} instance */
  constructor(instance) {
    this.instance = instance;
    /** @type {any} */
    this.exports = instance.exports;
    /** @type {WebAssembly.Memory} */
    this.memory = /** @type {any} */ (instance.exports.memory);
    this.refreshViews();
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
    if (p === 0) throw new RangeError(`out of wasm memory allocating ${bytes} bytes`);
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
    return new TextDecoder().decode(u8.subarray(ptr, end));
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

  statusName(status) {
    return this.readString(this.exports.wl_status_name(status));
  }
}

/**
 * Instantiate the core. Every instance gets its own memory.
 * @param {{ module?: WebAssembly.Module, source?: BufferSource | URL | string }} [options]
 * @returns {Promise<WasmCore>}
 */
export async function instantiateCore(options = {}) {
  const module = options.module ?? (await compileWasm(options.source));
  /** @type {WasmCore | null} */
  let core = null;
  let stderr = '';
  const imports = {
    env: {
      emscripten_notify_memory_growth() {
        core?.refreshViews();
      },
    },
    // The core writes to stderr only when an internal invariant breaks, just before it aborts.
    wasi_snapshot_preview1: {
      fd_write(fd, iovs, iovsLen, nwrittenPtr) {
        const c = /** @type {WasmCore} */ (core);
        const view = new DataView(c.memory.buffer);
        let written = 0;
        for (let i = 0; i < iovsLen; i++) {
          const ptr = view.getUint32(iovs + 8 * i, true);
          const len = view.getUint32(iovs + 8 * i + 4, true);
          stderr += new TextDecoder().decode(new Uint8Array(c.memory.buffer, ptr, len));
          written += len;
        }
        view.setUint32(nwrittenPtr, written, true);
        return 0;
      },
      fd_close: () => 0,
      fd_seek: () => 0,
      proc_exit(code) {
        throw new WasmAbort(stderr.trim() || `weblora core aborted (exit ${code})`);
      },
    },
  };
  const instance = await WebAssembly.instantiate(module, imports);
  core = new WasmCore(instance);
  core.exports._initialize();
  return core;
}
