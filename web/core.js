// core.js: a JavaScript object layer over the C core's exports: models, adapters, optimizers, safetensors
// parsing. Everything here runs where the wasm instance lives (the Worker, Node, tests); views into wasm memory
// it returns are live and stay valid only until the next call into the core.
import { CoreError } from './errors.js';
import { F32_SAFE_MAGNITUDE, firstOutOfRange } from './divergence.js';
export { CoreError } from './errors.js';
import { instantiateCore } from './wasm.js';


const STATUS_CODES = [
  'OK', 'INVALID_ARGUMENT', 'BAD_FORMAT', 'UNSUPPORTED', 'SHAPE_MISMATCH', 'OUT_OF_MEMORY', 'NOT_FOUND', 'NUMERIC',
  'BAD_STATE',
];

export const Arch = Object.freeze({ LLAMA: 1, GPT2: 2 });
export const RopeLayout = Object.freeze({ HALF: 0, INTERLEAVED: 1 });
export const ForwardFlags = Object.freeze({ TRAIN: 1, LAST_LOGITS: 2 });
export const DType = Object.freeze({
  F32: 0, F16: 1, BF16: 2, F64: 3, I32: 4, I64: 5, U8: 6, I8: 7, BOOL: 8, I16: 9, U16: 10, U32: 11, U64: 12,
  F8_E4M3: 13, F8_E5M2: 14,
});
export const DTYPE_NAMES = Object.freeze(Object.fromEntries(Object.entries(DType).map(([k, v]) => [v, k])));
export const LoraInit = Object.freeze({ default: 0, gaussian: 1, zero: 2 });
/** How a model stores its matrices (wl_storage): f32, or llama.cpp Q8_0 / Q4_1 blocks (q4: the embedding and head in Q8). */
export const STORAGE_NAMES = Object.freeze(['f32', 'q8', 'q4']);

/** The wl_storage id of a dtype name; anything else is a clear error. */
export function storageId(dtype) {
  const id = STORAGE_NAMES.indexOf(dtype);
  if (id < 0) throw new CoreError(`dtype must be 'f32', 'q8' or 'q4', got ${JSON.stringify(dtype)}`, { code: 'INVALID_ARGUMENT' });
  return id;
}
export const IGNORE_ID = -100;

// wl_config: 16 four-byte fields (asserted in src/wasm/exports.c).
const CONFIG_FIELDS = [
  ['arch', 'i'], ['dim', 'i'], ['hiddenDim', 'i'], ['nLayers', 'i'], ['nHeads', 'i'], ['nKvHeads', 'i'],
  ['headDim', 'i'], ['vocabSize', 'i'], ['maxSeqLen', 'i'], ['tiedEmbeddings', 'i'], ['qkvBias', 'i'],
  ['ropeLayout', 'i'], ['ropeTheta', 'f'], ['normEps', 'f'], ['bosId', 'i'], ['eosId', 'i'],
];
const CONFIG_BYTES = 64;

/** Split a non-negative integer seed into u32 halves (the exports take no i64). */
function seedHalves(seed) {
  const s = BigInt.asUintN(64, BigInt(seed ?? 0));
  return [Number(s & 0xffffffffn), Number(s >> 32n)];
}

/** The C core instance. */
export class Core {
  /** @param {import('./wasm.js').WasmCore} wasm */
  constructor(wasm) {
    this.wasm = wasm;
    this.x = wasm.exports;
  }

  /**
   * @param {{ module?: WebAssembly.Module, source?: any, threadsModule?: WebAssembly.Module, threadsSource?: any,
   *   threads?: number | 'auto', simd?: 'auto' | 'relaxed' | 'simd128', wasmUrl?: string | URL }} [options]
   *   threads: default 1; simd: default 'auto' (see web/wasm.js)
   */
  static async create(options) {
    return new Core(await instantiateCore(options));
  }

  /** The SIMD flavour the core runs: 'relaxed' (fused multiply-adds) or 'simd128'. */
  get simd() {
    return this.wasm.simd;
  }

  /** Threads the core runs on. */
  get threads() {
    return this.wasm.threads;
  }

  /** Why the core runs on fewer threads than were asked for, or null. */
  get threadsNote() {
    return this.wasm.threadsNote;
  }

  /** Stop the core's worker threads (it keeps working on one). */
  stopThreads() {
    return this.wasm.stopThreads();
  }

  /** Throw a CoreError for a failed status. @param {number} status @param {string} what */
  check(status, what) {
    if (status === 0) return;
    const reason = this.wasm.lastError() || this.wasm.statusName(status);
    throw new CoreError(`${what}: ${reason}`, { code: STATUS_CODES[status] ?? 'CORE_ERROR', details: { status } });
  }

  /** Run fn with n bytes of scratch memory, freed afterwards. */
  withScratch(bytes, fn) {
    const p = this.wasm.malloc(bytes);
    try {
      return fn(p);
    } finally {
      this.wasm.free(p);
    }
  }

  /** Call an export that writes a pointer through its last argument; returns that pointer. */
  callOut(what, fn) {
    return this.withScratch(4, (out) => {
      this.wasm.u32[out >>> 2] = 0;
      this.check(fn(out), what);
      return this.wasm.u32[out >>> 2];
    });
  }

  /**
   * f32 values as little-endian bytes of F32, F16 or BF16 (round-to-nearest-even), for writers of half-precision
   * files. Converted in blocks, so a tensor of any size needs little scratch memory.
   * @param {Float32Array} values @param {'F32'|'F16'|'BF16'} dtype @returns {Uint8Array}
   */
  encodeFloats(values, dtype) {
    const id = DType[dtype];
    if (!['F32', 'F16', 'BF16'].includes(dtype)) throw new CoreError(`cannot encode floats as ${dtype}: only F32, F16, BF16`, { code: 'INVALID_ARGUMENT' });
    const esize = this.x.wl_dtype_size(id);
    const out = new Uint8Array(values.length * esize);
    const block = Math.min(values.length, 1 << 18);
    if (block === 0) return out;
    this.withScratch(block * (4 + esize), (p) => {
      const dst = p + 4 * block;
      for (let at = 0; at < values.length; at += block) {
        const n = Math.min(block, values.length - at);
        this.wasm.f32.set(values.subarray(at, at + n), p >>> 2);
        this.check(this.x.wl_convert_from_f32(dst, p, id, n), 'encode floats');
        out.set(this.wasm.u8.subarray(dst, dst + n * esize), at * esize);
      }
    });
    return out;
  }

  /** @param {number} ptr @returns {Record<string, number>} */
  readConfig(ptr) {
    /** @type {Record<string, number>} */
    const cfg = {};
    const base = ptr >>> 2;
    CONFIG_FIELDS.forEach(([name, kind], i) => {
      cfg[name] = kind === 'f' ? this.wasm.f32[base + i] : this.wasm.i32[base + i];
    });
    return cfg;
  }

  writeConfig(ptr, cfg) {
    const base = ptr >>> 2;
    CONFIG_FIELDS.forEach(([name, kind], i) => {
      const v = cfg[name];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new CoreError(`model config field ${name} must be a finite number, got ${v}`, { code: 'INVALID_ARGUMENT' });
      }
      if (kind === 'f') this.wasm.f32[base + i] = v;
      else this.wasm.i32[base + i] = v;
    });
  }

  /** Parse a Hugging Face config.json. @param {string|object} json */
  configFromHF(json) {
    const text = typeof json === 'string' ? json : JSON.stringify(json);
    const bytes = new TextEncoder().encode(text);
    return this.withScratch(CONFIG_BYTES, (cfgPtr) => {
      const p = this.wasm.copyIn(bytes);
      try {
        this.check(this.x.wl_config_from_hf_json(p, bytes.length, cfgPtr), 'config.json');
      } finally {
        this.wasm.free(p);
      }
      return this.readConfig(cfgPtr);
    });
  }

  /**
   * A model with zeroed weights from a config object (fields as readConfig returns), its matrices stored as
   * `dtype`: 'f32', or 'q8' / 'q4' (quantised as the weights are written).
   */
  createModel(cfg, dtype = 'f32') {
    const storage = storageId(dtype);
    const ptr = this.withScratch(CONFIG_BYTES, (cfgPtr) => {
      this.writeConfig(cfgPtr, cfg);
      return this.callOut('create model', (out) => this.x.wl_model_create_quantized(cfgPtr, storage, out));
    });
    return new Model(this, ptr);
  }

  /** Bytes the weights of a model of this config take in `dtype` (no activations), without allocating them. */
  weightBytes(cfg, dtype = 'f32') {
    const storage = storageId(dtype);
    return this.withScratch(CONFIG_BYTES, (cfgPtr) => {
      this.writeConfig(cfgPtr, cfg);
      const n = this.x.wl_model_weight_bytes_for(cfgPtr, storage);
      if (n < 0) this.check(1, 'weight size');
      return n;
    });
  }

  /** The config of a llama2.c checkpoint of fileSize bytes from its first 28 bytes. @param {Uint8Array} header */
  configFromLlama2cHeader(header, fileSize) {
    return this.withScratch(Math.max(header.byteLength, 1) + CONFIG_BYTES + 8, (p) => {
      this.wasm.u8.set(header, p);
      const cfgPtr = (p + header.byteLength + 7) & ~7;
      this.check(this.x.wl_config_from_llama2c_header(p, header.byteLength, fileSize, cfgPtr), 'llama2.c checkpoint');
      return this.readConfig(cfgPtr);
    });
  }

  /** Load a llama2.c checkpoint. @param {Uint8Array} bytes */
  loadLlama2c(bytes) {
    const p = this.wasm.copyIn(bytes);
    try {
      return this.loadLlama2cAt(p, bytes.length);
    } finally {
      this.wasm.free(p);
    }
  }

  /** Load a llama2.c checkpoint already in wasm memory at ptr. */
  loadLlama2cAt(ptr, len) {
    return new Model(this, this.callOut('llama2.c checkpoint', (out) => this.x.wl_model_load_llama2c(ptr, len, out)));
  }

  /** Load an HF model from config.json text and safetensors shards. @param {string} configJson @param {Uint8Array[]} shards */
  loadHF(configJson, shards) {
    const cfgBytes = new TextEncoder().encode(configJson);
    const ptrs = [];
    try {
      const cfgPtr = this.wasm.copyIn(cfgBytes);
      ptrs.push(cfgPtr);
      const pairs = this.wasm.malloc(8 * Math.max(1, shards.length));
      ptrs.push(pairs);
      shards.forEach((s, i) => {
        const sp = this.wasm.copyIn(s);
        ptrs.push(sp);
        this.wasm.u32[(pairs >>> 2) + 2 * i] = sp;
        this.wasm.u32[(pairs >>> 2) + 2 * i + 1] = s.byteLength;
      });
      const ptr = this.callOut('model.safetensors', (out) =>
        this.x.wl_model_load_hf(cfgPtr, cfgBytes.length, pairs, shards.length, out));
      return new Model(this, ptr);
    } finally {
      ptrs.forEach((p) => this.wasm.free(p));
    }
  }

  /**
   * Parse a safetensors file (whole, or only its header when fileSize is given) with the C parser.
   * @param {Uint8Array} bytes
   * @param {number} [fileSize] total size of the file when bytes hold only its beginning
   * @returns {{ headerSize: number, dataStart: number, tensors: {name: string, dtype: string, dtypeId: number, shape: number[], begin: number, end: number}[], metadata: Record<string, string> }}
   */
  parseSafetensors(bytes, fileSize) {
    const p = this.wasm.copyIn(bytes);
    let st = 0;
    try {
      st = this.callOut('safetensors', (out) =>
        fileSize === undefined
          ? this.x.wl_st_parse(p, bytes.byteLength, out)
          : this.x.wl_st_parse_header(p, bytes.byteLength, fileSize, out));
      const x = this.x;
      const tensors = [];
      for (let i = 0; i < x.wl_st_count(st); i++) {
        const ndim = x.wl_st_ndim(st, i);
        const shape = [];
        for (let d = 0; d < ndim; d++) shape.push(x.wl_st_dim(st, i, d));
        const dtypeId = x.wl_st_dtype(st, i);
        tensors.push({
          name: this.wasm.readString(x.wl_st_name(st, i)),
          dtype: DTYPE_NAMES[dtypeId], dtypeId, shape,
          begin: x.wl_st_begin(st, i), end: x.wl_st_end(st, i),
        });
      }
      /** @type {Record<string, string>} */
      const metadata = {};
      for (let i = 0; i < x.wl_st_n_metadata(st); i++) {
        metadata[this.wasm.readString(x.wl_st_metadata_key(st, i))] = this.wasm.readString(x.wl_st_metadata_value(st, i));
      }
      const dataStart = x.wl_st_data_start(st);
      return { headerSize: dataStart - 8, dataStart, tensors, metadata };
    } finally {
      if (st) this.x.wl_st_free(st);
      this.wasm.free(p);
    }
  }

  /**
   * Best low-rank approximation of a matrix (row-major (m, n)): a fixed rank, or the smallest rank (up to maxRank)
   * keeping `energy` of the squared Frobenius norm. split 'left': L = U S, R = Vt; 'balanced': sqrt(S) on both sides.
   * @param {Float32Array} a @param {number} m @param {number} n
   * @param {{ rank?: number, maxRank?: number, energy?: number, split?: 'left'|'balanced', powerIters?: number, seed?: number }} [opts]
   * @returns {{ rank: number, L: Float32Array, R: Float32Array, S: Float32Array, relError: number, energy: number, norm: number }}
   */
  lowRankApprox(a, m, n, opts = {}) {
    if (!(a instanceof Float32Array) || a.length !== m * n) {
      throw new CoreError(`lowRankApprox: expected a Float32Array of ${m} x ${n} values`, { code: 'INVALID_ARGUMENT' });
    }
    const maxRank = opts.maxRank ?? opts.rank ?? Math.min(m, n);
    const energy = opts.energy ?? 0;
    const split = opts.split === 'balanced' ? 1 : 0;
    const w = this.wasm;
    const ptrs = [];
    try {
      const A = w.copyIn(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
      ptrs.push(A);
      const bytes = (k) => 4 * Math.max(1, k);
      const L = w.malloc(bytes(m * maxRank)); ptrs.push(L);
      const R = w.malloc(bytes(maxRank * n)); ptrs.push(R);
      const S = w.malloc(bytes(maxRank)); ptrs.push(S);
      const info = w.malloc(32); ptrs.push(info);
      const [lo, hi] = seedHalves(opts.seed ?? 0);
      this.check(this.x.wl_lowrank_approx(A, m, n, n, maxRank, energy, split, opts.powerIters ?? -1, lo, hi, L, R, S, info), 'low-rank approximation');
      const f64 = w.f64.subarray(info >>> 3, (info >>> 3) + 4);
      const rank = f64[0];
      return {
        rank, L: w.f32.slice(L >>> 2, (L >>> 2) + m * rank), R: w.f32.slice(R >>> 2, (R >>> 2) + rank * n),
        S: w.f32.slice(S >>> 2, (S >>> 2) + rank), relError: f64[1], energy: f64[2], norm: f64[3],
      };
    } finally {
      ptrs.forEach((p) => w.free(p));
    }
  }

  /**
   * Truncated SVD A (m, n) ~ U diag(S) Vt.
   * @param {{ method?: 'auto'|'exact'|'randomized', powerIters?: number, oversample?: number, seed?: number }} [opts]
   */
  svd(a, m, n, rank, opts = {}) {
    if (!(a instanceof Float32Array) || a.length !== m * n) throw new CoreError(`svd: expected a Float32Array of ${m} x ${n} values`, { code: 'INVALID_ARGUMENT' });
    const method = { auto: 0, exact: 1, randomized: 2 }[opts.method ?? 'auto'];
    if (method === undefined) throw new CoreError(`svd: unknown method ${opts.method}`, { code: 'INVALID_ARGUMENT' });
    const w = this.wasm;
    const ptrs = [];
    try {
      const A = w.copyIn(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)); ptrs.push(A);
      const U = w.malloc(4 * Math.max(1, m * rank)); ptrs.push(U);
      const S = w.malloc(4 * Math.max(1, rank)); ptrs.push(S);
      const Vt = w.malloc(4 * Math.max(1, rank * n)); ptrs.push(Vt);
      const [lo, hi] = seedHalves(opts.seed ?? 0);
      this.check(this.x.wl_svd_truncated(A, m, n, n, rank, method, opts.powerIters ?? 4, opts.oversample ?? 10, lo, hi, U, S, Vt), 'SVD');
      return { U: w.f32.slice(U >>> 2, (U >>> 2) + m * rank), S: w.f32.slice(S >>> 2, (S >>> 2) + rank), Vt: w.f32.slice(Vt >>> 2, (Vt >>> 2) + rank * n) };
    } finally {
      ptrs.forEach((p) => w.free(p));
    }
  }

  /** Errors array (f64) of n entries read from a scratch pointer. */
  readF64(ptr, n) {
    return Array.from(this.wasm.f64.subarray(ptr >>> 3, (ptr >>> 3) + n));
  }

  /**
   * A LoRA adapter extracted from the difference of two models' weights.
   * @param {Model} base @param {Model} tuned @param {ArrayLike<number>} ranks (L * nSlots)
   * @param {{ energy?: number, powerIters?: number, seed?: number }} [opts]
   */
  extractAdapter(base, tuned, ranks, opts = {}) {
    const n = ranks.length;
    return this.withScratch(4 * n + 8 * (n + 1) + 8, (p) => {
      this.wasm.i32.set(ranks, p >>> 2);
      const errs = (p + 4 * n + 7) & ~7;
      const total = errs + 8 * n;
      const [lo, hi] = seedHalves(opts.seed ?? 0);
      const ptr = this.callOut('extract adapter', (out) => this.x.wl_adapter_extract(base.ptr, tuned.ptr, p, opts.energy ?? 0,
        opts.powerIters ?? -1, lo, hi, out, errs, total));
      const adapter = new Adapter(this, ptr);
      const count = adapter.modules().length;
      return { adapter, errors: this.readF64(errs, count), totalError: this.readF64(total, 1)[0] };
    });
  }

  /**
   * Combine adapters as PEFT's add_weighted_adapter does: 'linear', 'cat' or 'svd' (result scale 1).
   * @param {Adapter[]} adapters @param {number[]} weights @param {{ type?: 'linear'|'cat'|'svd', rank?: number }} [opts]
   */
  combineAdapters(adapters, weights, opts = {}) {
    const type = { linear: 0, cat: 1, svd: 2 }[opts.type ?? 'svd'];
    if (type === undefined) throw new CoreError(`combination type must be linear, cat or svd, got ${opts.type}`, { code: 'INVALID_ARGUMENT' });
    const n = adapters.length;
    const maxModules = Math.max(1, ...adapters.map((a) => a.modules().length)) * Math.max(1, n);
    return this.withScratch(8 * n + 8 * maxModules + 16, (p) => {
      adapters.forEach((a, i) => {
        this.wasm.u32[(p >>> 2) + i] = a.ptr;
        this.wasm.f32[(p >>> 2) + n + i] = weights[i];
      });
      const errs = (p + 8 * n + 7) & ~7;
      const ptr = this.callOut('combine adapters', (out) => this.x.wl_adapter_combine(p, p + 4 * n, n, type, opts.rank ?? 0, out, errs));
      const adapter = new Adapter(this, ptr);
      return { adapter, errors: this.readF64(errs, adapter.modules().length) };
    });
  }

  /** A persistent f32 buffer in wasm memory (optimizer state and the like). */
  allocF32(n) {
    const ptr = this.wasm.malloc(Math.max(4, 4 * n));
    this.wasm.f32.fill(0, ptr >>> 2, (ptr >>> 2) + n);
    return new F32Buffer(this, ptr, n);
  }
}

/** An f32 array owned by the caller inside wasm memory. */
export class F32Buffer {
  constructor(core, ptr, length) {
    this.core = core;
    this.ptr = ptr;
    this.length = length;
  }

  view() {
    return this.core.wasm.f32.subarray(this.ptr >>> 2, (this.ptr >>> 2) + this.length);
  }

  free() {
    this.core.wasm.free(this.ptr);
    this.ptr = 0;
  }
}

/**
 * A LoRA-capable linear module of each block.
 * @typedef {{ slot: number, name: string, shortName: string, inFeatures: number, outFeatures: number, hasBias: boolean,
 *   conv1d: boolean }} ModuleInfo
 */

/**
 * What adapters and the PEFT code need of a model: a loaded Model, or a stand-in that knows only the module shapes
 * read from adapter files (ptr 0 and `shape` set; tools.js), which has no vocabulary and no weights.
 * @typedef {object} ModelLike
 * @property {Core} core
 * @property {number} ptr the core's model, 0 for a stand-in
 * @property {{ arch: number, nLayers: number, inFeatures: number[], outFeatures: number[] }} [shape] a stand-in's shapes
 * @property {'gpt2' | 'llama'} arch
 * @property {Record<string, number>} config the fields readConfig returns (a stand-in lacks vocabSize and dim)
 * @property {() => ModuleInfo[]} modules
 * @property {(layer: number, slot: number) => string} modulePath
 */

/** A model in the core. */
export class Model {
  /** @param {Core} core @param {number} ptr */
  constructor(core, ptr) {
    this.core = core;
    this.ptr = ptr;
    this.config = core.readConfig(core.x.wl_model_config(ptr));
    /** Number of weights (fixed for the model's life). */
    this.nParams = core.withScratch(4, (np) => {
      core.x.wl_model_params(ptr, np);
      return core.wasm.u32[np >>> 2];
    });
    this.ioCapacity = 0;
    this.ioPtr = 0; // tokens, targets (i32) and the loss (f32)
    /** @type {Adapter[]} */
    this.attached = [];
    this.trainable = null;
  }

  /** @returns {'gpt2' | 'llama'} */
  get arch() {
    return this.config.arch === Arch.GPT2 ? 'gpt2' : 'llama';
  }

  /** Tensor table entries. */
  tensors() {
    const { core } = this;
    const out = [];
    core.withScratch(56, (info) => {
      const n = core.x.wl_model_n_tensors(this.ptr);
      for (let i = 0; i < n; i++) {
        core.check(core.x.wl_model_tensor(this.ptr, i, info), 'tensor table');
        const u32 = core.wasm.u32, i32 = core.wasm.i32, b = info >>> 2;
        const ndim = i32[b + 3];
        const shape = [u32[b + 4] + u32[b + 5] * 2 ** 32];
        if (ndim === 2) shape.push(u32[b + 6] + u32[b + 7] * 2 ** 32);
        out.push({
          index: i, name: core.wasm.readString(u32[b]), dataPtr: u32[b + 1], gradPtr: u32[b + 2], ndim, shape,
          transposed: i32[b + 8] === 1, numel: u32[b + 9], layer: i32[b + 10], decay: i32[b + 11] === 1,
          quantized: i32[b + 12] !== 0,
        });
      }
    });
    return out;
  }

  /**
   * A tensor's data in memory layout ((out, in) for linears): a live view of an f32 tensor, a dequantised copy of a
   * quantised one (writing to that copy changes nothing).
   */
  tensorView(entry) {
    if (entry.quantized) return this.readTensor(entry, 0, entry.numel);
    const f32 = this.core.wasm.f32;
    return f32.subarray(entry.dataPtr >>> 2, (entry.dataPtr >>> 2) + entry.numel);
  }

  /** Elements [first, first + n) of a tensor in memory layout, dequantised if it is stored quantised (a copy). */
  readTensor(entry, first, n) {
    const { core } = this;
    const out = new Float32Array(n);
    const CHUNK = 1 << 18;
    core.withScratch(4 * Math.min(Math.max(n, 1), CHUNK), (p) => {
      for (let at = 0; at < n; at += CHUNK) {
        const k = Math.min(CHUNK, n - at);
        core.check(core.x.wl_model_read_tensor(this.ptr, entry.index, first + at, k, p), 'read tensor');
        out.set(core.wasm.f32.subarray(p >>> 2, (p >>> 2) + k), at);
      }
    });
    return out;
  }

  /**
   * Where each tensor of this model (created from the checkpoint's header) lies in a llama2.c file of fileSize bytes:
   * [{ tensor (index), offset (bytes), numel }] in file order. @param {Uint8Array} header its first 28 bytes
   */
  llama2cParts(header, fileSize) {
    const { core } = this;
    const cap = this.tensors().length;
    return core.withScratch(header.byteLength + 8 + 24 * cap + 4, (p) => {
      core.wasm.u8.set(header, p);
      const parts = (p + header.byteLength + 7) & ~7;
      const nPtr = parts + 24 * cap;
      core.check(core.x.wl_llama2c_parts(this.ptr, p, header.byteLength, fileSize, parts, cap, nPtr), 'llama2.c checkpoint');
      const out = [];
      for (let i = 0; i < core.wasm.i32[nPtr >>> 2]; i++) {
        const b = parts + 24 * i;
        out.push({ tensor: core.wasm.i32[b >>> 2], offset: core.wasm.f64[(b + 8) >>> 3], numel: core.wasm.f64[(b + 16) >>> 3] });
      }
      return out;
    });
  }

  /** 'f32', 'q8' or 'q4': how the matrices are stored. */
  get dtype() {
    return STORAGE_NAMES[this.core.x.wl_model_storage(this.ptr)];
  }

  /** Write elements of a tensor in file layout from raw bytes of the given dtype. */
  writeTensor(index, dtypeId, firstElement, bytes) {
    const { core } = this;
    const n = bytes.byteLength / core.x.wl_dtype_size(dtypeId);
    core.withScratch(Math.max(1, bytes.byteLength), (p) => {
      core.wasm.u8.set(bytes, p);
      core.check(core.x.wl_model_write_tensor(this.ptr, index, dtypeId, firstElement, n, p), 'write tensor');
    });
  }

  /**
   * The model tensor a safetensors entry fills: its index, or -1 for entries that carry no weights (buffers,
   * a stored copy of a tied head). Unknown names, unsupported dtypes and wrong shapes throw.
   * @param {{ name: string, dtypeId: number, shape: number[] }} t
   */
  matchTensor(t) {
    const { core } = this;
    const nameBytes = new TextEncoder().encode(t.name);
    return core.withScratch(nameBytes.length + 1 + 8 * Math.max(1, t.shape.length) + 8, (p) => {
      core.wasm.u8.set(nameBytes, p);
      core.wasm.u8[p + nameBytes.length] = 0;
      const shapePtr = (p + nameBytes.length + 1 + 7) & ~7;
      core.wasm.f64.set(t.shape, shapePtr >>> 3);
      const outPtr = shapePtr + 8 * Math.max(1, t.shape.length);
      core.check(core.x.wl_model_match_tensor(this.ptr, p, t.dtypeId, t.shape.length, shapePtr, outPtr), 'safetensors');
      return core.wasm.i32[outPtr >>> 2];
    });
  }

  /**
   * Write whole elements of a tensor (file layout) from raw bytes. F32 tensors stored as in memory are copied
   * straight into place; others go through the core's conversion (f16/bf16, GPT-2 Conv1D transpose).
   */
  writeTensorBytes(index, dtypeId, firstElement, bytes, entry) {
    if (dtypeId === DType.F32 && !entry.transposed && !entry.quantized) {
      this.core.wasm.u8.set(bytes, entry.dataPtr + 4 * firstElement);
      return;
    }
    this.writeTensor(index, dtypeId, firstElement, bytes);
  }

  /**
   * Throw if any weight is NaN or infinite (a corrupt file must not load silently) or so large that f32
   * arithmetic on it would overflow (divergence.js F32_SAFE_MAGNITUDE), naming the tensor.
   */
  checkFinite() {
    const p = this.params();
    // Quantised tensors need no check: the quantiser refused non-finite values, and their magnitudes stay below
    // 65504 * 127 (an f16 scale times the largest quant).
    const f32Tensors = this.tensors().filter((t) => !t.quantized);
    if (!this.core.x.wl_all_finite(p.byteOffset, p.length)) {
      const bad = f32Tensors.find((t) => {
        const v = this.tensorView(t);
        return !this.core.x.wl_all_finite(v.byteOffset, v.length);
      });
      throw new CoreError(`model weights contain NaN or infinite values (first in ${bad?.name})`, { code: 'NUMERIC' });
    }
    for (const t of f32Tensors) {
      const v = this.tensorView(t);
      const i = firstOutOfRange(v, F32_SAFE_MAGNITUDE);
      if (i >= 0) {
        throw new CoreError(`model weight ${t.name} holds ${v[i].toExponential(3)} at element ${i}, beyond ±${F32_SAFE_MAGNITUDE.toExponential(0)}: `
          + 'f32 arithmetic on it would overflow', { code: 'NUMERIC', details: { tensor: t.name, index: i, value: v[i] } });
      }
    }
  }

  /** W += weight * s * B A for the adapter's modules (bit-exact undo with unmerge). */
  merge(adapter, weight = 1) {
    this.core.check(this.core.x.wl_model_merge(this.ptr, adapter.ptr, weight), 'merge');
    this.attached = this.attached.filter((a) => a !== adapter);
    if (this.trainable === adapter) this.trainable = null;
  }

  unmerge(adapter) {
    this.core.check(this.core.x.wl_model_unmerge(this.ptr, adapter.ptr), 'unmerge');
  }

  isMerged(adapter) {
    return this.core.x.wl_model_is_merged(this.ptr, adapter.ptr) === 1;
  }

  /** Bytes kept to undo merges and PiSSA residuals exactly. */
  editBytes() {
    return this.core.x.wl_model_edit_bytes(this.ptr);
  }

  /** LoRA-capable linear modules of each block. @returns {ModuleInfo[]} */
  modules() {
    const { core } = this;
    const out = [];
    core.withScratch(20, (info) => {
      for (let s = 0; s < core.x.wl_model_n_slots(this.ptr); s++) {
        core.check(core.x.wl_model_module(this.ptr, s, info), 'module');
        const b = info >>> 2, u32 = core.wasm.u32, i32 = core.wasm.i32;
        const name = core.wasm.readString(u32[b]);
        out.push({ slot: s, name, shortName: name.split('.').pop(), inFeatures: i32[b + 1], outFeatures: i32[b + 2],
          hasBias: i32[b + 3] === 1, conv1d: i32[b + 4] === 1 });
      }
    });
    return out;
  }

  modulePath(layer, slot) {
    const { core } = this;
    return core.withScratch(256, (buf) => {
      core.check(core.x.wl_model_module_path(this.ptr, layer, slot, buf, 256), 'module path');
      return core.wasm.readString(buf);
    });
  }

  /**
   * Plan memory for passes over B sequences of T tokens. train: keep what backward needs; lastLogits: inference
   * that only needs the last position's logits (generation), so a long context stays cheap.
   */
  reserve(B, T, { train = false, lastLogits = false } = {}) {
    const flags = (train ? 1 : 0) | (lastLogits ? 2 : 0);
    this.core.check(this.core.x.wl_model_reserve(this.ptr, B, T, flags), 'reserve');
  }

  ensureIo(n) {
    if (n <= this.ioCapacity) return;
    this.core.wasm.free(this.ioPtr);
    this.ioPtr = this.core.wasm.malloc(8 * n + 16);
    this.ioCapacity = n;
  }

  /**
   * Forward pass. tokens/targets are (B, T) row-major.
   * @param {ArrayLike<number>} tokens
   * @param {{ B?: number, T?: number, targets?: ArrayLike<number> | null, pos0?: number, train?: boolean, lastLogits?: boolean, ignoreId?: number }} [opts]
   * @returns {number} mean loss (NaN without targets)
   */
  forward(tokens, opts = {}) {
    const { core } = this;
    const B = opts.B ?? 1;
    const T = opts.T ?? tokens.length / B;
    if (!Number.isInteger(T) || T * B !== tokens.length) {
      throw new CoreError(`forward: ${tokens.length} tokens do not form a (${B}, T) batch`, { code: 'INVALID_ARGUMENT' });
    }
    const n = B * T;
    this.ensureIo(n);
    const tok = this.ioPtr, tgt = this.ioPtr + 4 * n, lossPtr = this.ioPtr + 8 * n;
    const i32 = core.wasm.i32;
    i32.set(tokens, tok >>> 2);
    if (opts.targets) {
      if (opts.targets.length !== n) throw new CoreError('forward: targets and tokens differ in length', { code: 'INVALID_ARGUMENT' });
      i32.set(opts.targets, tgt >>> 2);
    }
    const flags = (opts.train ? ForwardFlags.TRAIN : 0) | (opts.lastLogits ? ForwardFlags.LAST_LOGITS : 0);
    core.check(core.x.wl_model_forward(this.ptr, tok, opts.targets ? tgt : 0, B, T, opts.pos0 ?? 0, flags,
      opts.ignoreId ?? IGNORE_ID, lossPtr), 'forward');
    this.lastRows = opts.lastLogits ? B : n;
    return core.wasm.f32[lossPtr >>> 2];
  }

  /** Live view of the last logits: (rows, V). */
  logits() {
    const p = this.core.x.wl_model_logits(this.ptr) >>> 2;
    return this.core.wasm.f32.subarray(p, p + this.lastRows * this.config.vocabSize);
  }

  backward() {
    this.core.check(this.core.x.wl_model_backward(this.ptr), 'backward');
  }

  /** @param {Adapter[]} adapters @param {number[]} [weights] */
  setAdapters(adapters, weights) {
    const { core } = this;
    const n = adapters.length;
    core.withScratch(8 * Math.max(1, n), (p) => {
      adapters.forEach((a, i) => {
        core.wasm.u32[(p >>> 2) + i] = a.ptr;
        core.wasm.f32[(p >>> 2) + n + i] = weights ? weights[i] : 1;
      });
      core.check(core.x.wl_model_set_adapters(this.ptr, p, p + 4 * n, n), 'attach adapters');
    });
    this.attached = adapters.slice();
    if (!this.attached.includes(this.trainable)) this.trainable = null;
  }

  /** @param {Adapter|null} adapter */
  setTrainable(adapter) {
    this.core.check(this.core.x.wl_model_set_trainable(this.ptr, adapter ? adapter.ptr : 0), 'trainable adapter');
    this.trainable = adapter;
  }

  setLoraDropout(p, seed = 0, step = 0) {
    const [lo, hi] = seedHalves(seed);
    this.core.check(this.core.x.wl_model_set_lora_dropout(this.ptr, p, lo, hi, step), 'LoRA dropout');
  }

  setFullTraining(on) {
    this.core.check(this.core.x.wl_model_set_full_training(this.ptr, on ? 1 : 0), 'full-parameter training');
  }

  zeroGrad() {
    this.core.check(this.core.x.wl_model_zero_grad(this.ptr), 'zero grad');
  }

  /** Live views of every weight / gradient (full-parameter mode), in tensor-table order. */
  params() {
    const p = this.core.x.wl_model_params(this.ptr, 0) >>> 2;
    return this.core.wasm.f32.subarray(p, p + this.nParams);
  }

  grads() {
    const p = this.core.x.wl_model_grads(this.ptr) >>> 2;
    if (!p) return null;
    return this.core.wasm.f32.subarray(p, p + this.nParams);
  }

  memoryBytes() {
    return this.core.x.wl_model_memory_bytes(this.ptr);
  }

  /** Bytes of the weights (f32 buffer, quantised blocks, full-parameter gradients) and of activations and scratch. */
  memoryParts() {
    return { weights: this.core.x.wl_model_memory_part(this.ptr, 0), activations: this.core.x.wl_model_memory_part(this.ptr, 1) };
  }

  free() {
    if (!this.ptr) return;
    if (this.attached.length) this.setAdapters([]);
    this.core.wasm.free(this.ioPtr);
    this.core.x.wl_model_free(this.ptr);
    this.ptr = 0;
  }
}

/** A LoRA adapter in the core. */
export class Adapter {
  /** @param {Core} core @param {number} ptr */
  constructor(core, ptr) {
    this.core = core;
    this.ptr = ptr;
    /** Number of A and B values (fixed for the adapter's life). */
    this.nParams = core.withScratch(4, (np) => {
      core.x.wl_adapter_params(ptr, np);
      return core.wasm.u32[np >>> 2];
    });
  }

  /**
   * @param {ModelLike} model a loaded model, or a stand-in from adapter files (createShaped)
   * @param {{ ranks: ArrayLike<number>, alphas: ArrayLike<number>, useRslora?: boolean, dora?: boolean,
   *   embed?: { rank: number, alpha: number }, head?: { rank: number, alpha: number } }} spec (L * nSlots)
   *   tables; dora: DoRA modules (magnitudes start at 0: initDora or a loader sets them); embed, head: LoRA on the
   *   token embedding and on the LM head (modules at layer -1, slots 0 and 1)
   */
  static create(model, spec) {
    const { core } = model;
    const n = spec.ranks.length;
    if (!model.ptr && model.shape) return Adapter.createShaped(core, model.shape, spec);
    const ptr = core.withScratch(8 * n + 16, (p) => {
      core.wasm.i32.set(spec.ranks, p >>> 2);
      core.wasm.f32.set(spec.alphas, (p >>> 2) + n);
      const ml = p + 8 * n;
      core.wasm.f32.set([spec.embed?.rank ?? 0, spec.embed?.alpha ?? 0, spec.head?.rank ?? 0, spec.head?.alpha ?? 0], ml >>> 2);
      return core.callOut('create adapter', (out) =>
        core.x.wl_adapter_create(model.ptr, p, p + 4 * n, spec.useRslora ? 1 : 0, spec.dora ? 1 : 0, ml, out));
    });
    return new Adapter(core, ptr);
  }

  /**
   * An adapter for a model shape known only from adapter files (no model loaded).
   * @param {Core} core
   * @param {{ arch: number, nLayers: number, inFeatures: number[], outFeatures: number[] }} shape
   * @param {{ ranks: ArrayLike<number>, alphas: ArrayLike<number>, useRslora?: boolean, dora?: boolean }} spec
   */
  static createShaped(core, shape, spec) {
    const S = shape.inFeatures.length;
    const n = spec.ranks.length;
    const ptr = core.withScratch(8 * S + 8 * n, (p) => {
      core.wasm.i32.set(shape.inFeatures, p >>> 2);
      core.wasm.i32.set(shape.outFeatures, (p >>> 2) + S);
      const r = p + 8 * S;
      core.wasm.i32.set(spec.ranks, r >>> 2);
      core.wasm.f32.set(spec.alphas, (r >>> 2) + n);
      return core.callOut('create adapter', (out) => core.x.wl_adapter_create_shaped(shape.arch, shape.nLayers, S, p, p + 4 * S,
        r, r + 4 * n, spec.useRslora ? 1 : 0, spec.dora ? 1 : 0, out));
    });
    return new Adapter(core, ptr);
  }

  /** @param {'default'|'gaussian'|'zero'} kind @param {number|bigint} seed */
  init(kind, seed = 0) {
    const id = LoraInit[kind];
    if (id === undefined) throw new CoreError(`unknown LoRA init "${kind}"`, { code: 'INVALID_ARGUMENT' });
    const [lo, hi] = seedHalves(seed);
    this.core.check(this.core.x.wl_adapter_init(this.ptr, id, lo, hi), 'init adapter');
  }

  /** Module descriptors with pointers to A (r, in), B (out, r), the DoRA magnitude (out; 0 for plain LoRA) and their
   *  gradients, and the MergedLinear row blocks (rowBlocks 0: the whole matrix). */
  modules() {
    const { core } = this;
    const out = [];
    core.withScratch(60, (m) => {
      for (let i = 0; i < core.x.wl_adapter_n_modules(this.ptr); i++) {
        core.check(core.x.wl_adapter_module(this.ptr, i, m), 'adapter module');
        const b = m >>> 2, i32 = core.wasm.i32, f32 = core.wasm.f32, u32 = core.wasm.u32;
        out.push({ index: i, layer: i32[b], slot: i32[b + 1], rank: i32[b + 2], inFeatures: i32[b + 3],
          outFeatures: i32[b + 4], scale: f32[b + 5], alpha: f32[b + 6], A: u32[b + 7], B: u32[b + 8],
          dA: u32[b + 9], dB: u32[b + 10], magnitude: u32[b + 11], dMagnitude: u32[b + 12], rowBlocks: i32[b + 13],
          blockMask: i32[b + 14] });
      }
    });
    return out;
  }

  /** Live f32 view of n floats at ptr. */
  view(ptr, n) {
    return this.core.wasm.f32.subarray(ptr >>> 2, (ptr >>> 2) + n);
  }

  params() {
    return this.view(this.core.x.wl_adapter_params(this.ptr, 0), this.nParams);
  }

  grads() {
    return this.view(this.core.x.wl_adapter_grads(this.ptr), this.nParams);
  }

  zeroGrad() {
    this.core.check(this.core.x.wl_adapter_zero_grad(this.ptr), 'zero grad');
  }

  /** PiSSA initialisation on `model` (changes its base weights; undo with model.unmerge(adapter)). */
  initPissa(model, powerIters = -1, seed = 0) {
    const [lo, hi] = seedHalves(seed);
    this.core.check(this.core.x.wl_adapter_init_pissa(model.ptr, this.ptr, powerIters, lo, hi), 'PiSSA initialisation');
  }

  /** loralib MergedLinear: only the output row blocks in mask (bit i: block i of rowBlocks) are adapted, each by its
   *  own slice of the rank; B is zeroed outside them and stays so. rowBlocks 0 makes the module whole again. */
  setRowBlocks(index, rowBlocks, mask) {
    this.core.check(this.core.x.wl_adapter_set_row_blocks(this.ptr, index, rowBlocks, mask), 'MergedLinear blocks');
  }

  get isDora() {
    return this.core.x.wl_adapter_is_dora(this.ptr) === 1;
  }

  /** DoRA magnitudes from `model`'s weights: ||W + s B A|| per output row, as PEFT initialises them. */
  initDora(model) {
    this.core.check(this.core.x.wl_adapter_init_dora(model.ptr, this.ptr), 'DoRA initialisation');
  }

  get isPissa() {
    return this.core.x.wl_adapter_is_pissa(this.ptr) === 1;
  }

  /** A PiSSA adapter as a rank-2r plain LoRA for the original base. */
  pissaToLora() {
    return new Adapter(this.core, this.core.callOut('PiSSA conversion', (out) => this.core.x.wl_adapter_pissa_to_lora(this.ptr, out)));
  }

  /**
   * A lower-rank copy: each module's update is truncated by SVD to `rank` (or by energy).
   * @returns {{ adapter: Adapter, errors: number[], totalError: number }}
   */
  resize(rank, energy = 0) {
    const n = this.modules().length;
    return this.core.withScratch(8 * n + 16, (p) => {
      const errs = (p + 7) & ~7;
      const total = errs + 8 * n;
      const ptr = this.core.callOut('resize adapter', (out) => this.core.x.wl_adapter_resize(this.ptr, rank, energy, out, errs, total));
      return { adapter: new Adapter(this.core, ptr), errors: this.core.readF64(errs, n), totalError: this.core.readF64(total, 1)[0] };
    });
  }

  setScale(index, scale) {
    this.core.check(this.core.x.wl_adapter_set_scale(this.ptr, index, scale), 'adapter scale');
  }

  free() {
    if (!this.ptr) return;
    this.core.x.wl_adapter_free(this.ptr);
    this.ptr = 0;
  }
}
