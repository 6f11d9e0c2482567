// core.js: a JavaScript object layer over the C core's exports: the core instance (statuses, scratch memory,
// safetensors parsing, optimizers, SVD tools); models (model.js) and adapters (adapter.js) are re-exported from here.
// Everything here runs where the wasm instance lives (the Worker, Node, tests); views into wasm memory it returns
// are live and stay valid only until the next call into the core.
import { CoreError, EngineError, FormatError, InvalidArgumentError, NotFoundError, NumericError, UnsupportedError } from '../errors.js';
export { CoreError } from '../errors.js';
import { instantiateCore } from '../runtime/wasm.js';
import { ABI } from './abi.js';
import { DTYPE_NAMES, DType, STORAGE_NAMES, enumValue, readStruct, seedHalves, structLayout } from './abi-tables.js';
import { Adapter } from './adapter.js';
import { Model, ModuleShapes, ShardLoad } from './model.js';
export {
  Arch, RopeLayout, ForwardFlags, ReserveFlags, DType, DTYPE_NAMES, DTYPE_SIZES, LoraInit, STORAGE_NAMES, SAFETENSORS_MAX_HEADER,
  MODEL_LAYER, EMBED_SLOT, HEAD_SLOT, ARCHITECTURES, IGNORE_ID, structLayout,
} from './abi-tables.js';
export { Adapter, Model, ModuleShapes, ShardLoad };

// The C core's status names, enums, struct layouts and limits come from web/core/abi.js, which the build writes from
// the module's own description (src/wasm/abi.c); Core refuses a module that describes itself differently.
const STATUS_CODES = ABI.status;

/** The class each failed status is thrown as, so that one code always comes with one class (errors.js). */
const STATUS_CLASSES = {
  INVALID_ARGUMENT: InvalidArgumentError, BAD_FORMAT: FormatError, UNSUPPORTED: UnsupportedError, NOT_FOUND: NotFoundError,
  NUMERIC: NumericError, BAD_STATE: EngineError, SHAPE_MISMATCH: CoreError, OUT_OF_MEMORY: CoreError,
};

const camelCase = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const CONFIG = structLayout('wl_config', ['arch', 'dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'head_dim',
  'vocab_size', 'max_seq_len', 'tied_embeddings', 'qkv_bias', 'rope_layout', 'rope_theta', 'norm_eps', 'bos_id', 'eos_id'],
{ complete: true });

/** The wl_storage id of a dtype name; anything else is a clear error. */
export function storageId(dtype) {
  const id = STORAGE_NAMES.indexOf(dtype);
  if (id < 0) throw new InvalidArgumentError(`dtype must be 'f32', 'q8' or 'q4', got ${JSON.stringify(dtype)}`);
  return id;
}

const CONFIG_BYTES = CONFIG.size;

/** The C core instance. */
export class Core {
  /** @param {import('../runtime/wasm.js').WasmCore} wasm */
  constructor(wasm) {
    this.wasm = wasm;
    this.x = wasm.exports;
    const described = wasm.readString(wasm.exports.wl_abi());
    if (described !== JSON.stringify(ABI)) {
      throw new CoreError('this build of the C core (weblora.wasm) does not match the JavaScript package (web/core/abi.js): '
        + 'they come from different versions', { code: 'ABI_MISMATCH' });
    }
  }

  /**
   * @param {{ module?: WebAssembly.Module, source?: any, threadsModule?: WebAssembly.Module, threadsSource?: any,
   *   threads?: number | 'auto', simd?: 'auto' | 'relaxed' | 'simd128', wasmUrl?: string | URL }} [options]
   *   threads: default 1; simd: default 'auto' (see runtime/wasm.js)
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

  /**
   * Throw the error of a failed status: the class of its meaning (STATUS_CLASSES), the status name as its code.
   * @param {number} status @param {string} what
   */
  check(status, what) {
    if (status === 0) return;
    const reason = this.wasm.lastError() || this.wasm.statusName(status);
    const code = STATUS_CODES[status] ?? 'CORE_ERROR';
    const ErrorClass = STATUS_CLASSES[code] ?? CoreError;
    // the core's messages often name their subject already ("safetensors: ..."): not twice
    throw new ErrorClass(reason.startsWith(`${what}: `) ? reason : `${what}: ${reason}`, { code, details: { status } });
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
   * files. Converted by the core in blocks, so a tensor of any size needs little scratch memory.
   * @param {Float32Array} values @param {'F32'|'F16'|'BF16'} dtype @returns {Uint8Array}
   */
  encodeFloats(values, dtype) {
    if (!['F32', 'F16', 'BF16'].includes(dtype)) throw new InvalidArgumentError(`cannot encode floats as ${dtype}: only F32, F16, BF16`);
    const esize = ABI.dtypeSize[DType[dtype]];
    const out = new Uint8Array(values.length * esize);
    this.convertBlocks(values.length, 4, esize, (src, dst, at, n) => {
      this.wasm.f32.set(values.subarray(at, at + n), src >>> 2);
      this.check(this.x.wl_convert_from_f32(dst, src, DType[dtype], n), 'encode floats');
      out.set(this.wasm.u8.subarray(dst, dst + n * esize), at * esize);
    });
    return out;
  }

  /**
   * Little-endian bytes of a floating dtype (F32, F16, BF16, F64) widened to f32 by the core; any other dtype is
   * an error (UNSUPPORTED).
   * @param {Uint8Array} bytes @param {string} dtype a safetensors dtype name @returns {Float32Array}
   */
  decodeFloats(bytes, dtype) {
    const id = DType[dtype];
    if (!['F32', 'F16', 'BF16', 'F64'].includes(dtype)) throw new UnsupportedError(`cannot read ${dtype} values as floats: only F32, F16, BF16, F64`);
    const esize = ABI.dtypeSize[id];
    if (bytes.byteLength % esize) throw new InvalidArgumentError(`${bytes.byteLength} bytes are not whole ${dtype} values`);
    const out = new Float32Array(bytes.byteLength / esize);
    this.convertBlocks(out.length, esize, 4, (src, dst, at, n) => {
      this.wasm.u8.set(bytes.subarray(at * esize, (at + n) * esize), src);
      this.check(this.x.wl_convert_to_f32(dst, src, id, n), 'decode floats');
      out.set(this.wasm.f32.subarray(dst >>> 2, (dst >>> 2) + n), at);
    });
    return out;
  }

  /** Run step(src, dst, at, n) over blocks of n of count values, with scratch for n values of each size. */
  convertBlocks(count, srcSize, dstSize, step) {
    const block = Math.min(count, 1 << 18);
    if (block === 0) return;
    const dstAt = Math.ceil((block * srcSize) / 8) * 8; // either side may hold f32 views: keep both aligned
    this.withScratch(dstAt + block * dstSize, (p) => {
      for (let at = 0; at < count; at += block) step(p, p + dstAt, at, Math.min(block, count - at));
    });
  }

  /** @param {number} ptr @returns {Record<string, number>} */
  readConfig(ptr) {
    const fields = readStruct(this.wasm, CONFIG, ptr);
    return Object.fromEntries(CONFIG.fields.map(({ name }) => [camelCase(name), fields[name]]));
  }

  writeConfig(ptr, cfg) {
    for (const { name, offset, type } of CONFIG.fields) {
      const key = camelCase(name);
      const v = cfg[key];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new InvalidArgumentError(`model config field ${key} must be a finite number, got ${v}`);
      }
      if (type === 'f32') this.wasm.f32[(ptr + offset) >>> 2] = v;
      else this.wasm.i32[(ptr + offset) >>> 2] = v;
    }
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

  /** The Hugging Face config.json text of a config object (fields as readConfig returns), written by the core. */
  configToHF(cfg) {
    return this.withScratch(CONFIG_BYTES + 4, (p) => {
      this.writeConfig(p, cfg);
      const lenPtr = p + CONFIG_BYTES;
      this.wasm.u32[lenPtr >>> 2] = 0;
      // Measures: fails for want of room and says how much is needed (or fails for a bad config, saying nothing).
      const status = this.x.wl_config_to_hf_json(p, 0, 0, lenPtr);
      const len = this.wasm.u32[lenPtr >>> 2];
      if (len === 0) this.check(status, 'config.json');
      return this.withScratch(len + 1, (buf) => {
        this.check(this.x.wl_config_to_hf_json(p, buf, len + 1, lenPtr), 'config.json');
        return this.wasm.readString(buf);
      });
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

  /**
   * Check safetensors shards, from their headers, against a config before a model is allocated for them
   * (wl_config_check_shards): their total size, every tensor's name, dtype and shape, buffers no larger than the
   * config gives them, none stored twice, none missing (code NOT_FOUND).
   * @param {Record<string, number>} cfg @param {{ header: Uint8Array, fileSize: number }[]} shards
   */
  checkShards(cfg, shards) {
    const copies = [];
    const parsed = [];
    try {
      for (const { header, fileSize } of shards) {
        const p = this.wasm.copyIn(header);
        copies.push(p);
        parsed.push(this.callOut('safetensors', (out) => this.x.wl_st_parse_header(p, header.byteLength, fileSize, out)));
      }
      this.withScratch(CONFIG_BYTES + 4 * parsed.length, (cfgPtr) => {
        this.writeConfig(cfgPtr, cfg);
        const list = cfgPtr + CONFIG_BYTES;
        parsed.forEach((st, i) => { this.wasm.u32[(list >>> 2) + i] = st; });
        this.check(this.x.wl_config_check_shards(cfgPtr, list, parsed.length), 'safetensors');
      });
    } finally {
      for (const st of parsed) this.x.wl_st_free(st);
      for (const p of copies) this.wasm.free(p);
    }
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

  /**
   * Parse a safetensors file (whole, or only its header when fileSize is given) with the C parser.
   * @param {Uint8Array} bytes
   * @param {number} [fileSize] total size of the file when bytes hold only its beginning
   * @returns {SafetensorsHeader}
   */
  parseSafetensors(bytes, fileSize) {
    return this.withSafetensors(bytes, fileSize, (st) => this.describeSafetensors(st));
  }

  /** Run fn with the core's parse (a wl_safetensors pointer) of a file or its header, freed afterwards. */
  withSafetensors(bytes, fileSize, fn) {
    const p = this.wasm.copyIn(bytes);
    let st = 0;
    try {
      st = this.callOut('safetensors', (out) =>
        fileSize === undefined
          ? this.x.wl_st_parse(p, bytes.byteLength, out)
          : this.x.wl_st_parse_header(p, bytes.byteLength, fileSize, out));
      return fn(st);
    } finally {
      if (st) this.x.wl_st_free(st);
      this.wasm.free(p);
    }
  }

  /** @param {number} st a wl_safetensors @returns {SafetensorsHeader} */
  describeSafetensors(st) {
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
      throw new InvalidArgumentError(`lowRankApprox: expected a Float32Array of ${m} x ${n} values`);
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
    if (!(a instanceof Float32Array) || a.length !== m * n) throw new InvalidArgumentError(`svd: expected a Float32Array of ${m} x ${n} values`);
    const method = enumValue(ABI.svdMethod, opts.method ?? 'auto');
    if (method === undefined) throw new InvalidArgumentError(`svd: unknown method ${opts.method}`);
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
    const type = enumValue(ABI.combine, opts.type ?? 'svd');
    if (type === undefined) throw new InvalidArgumentError(`combination type must be linear, cat or svd, got ${opts.type}`);
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
 * What adapters and the PEFT code need of a model: a loaded Model, or ModuleShapes (adapter files without a model).
 * @typedef {import('./model.js').Model | import('./model.js').ModuleShapes} ModelLike
 */

/**
 * @typedef {{ name: string, dtype: string, dtypeId: number, shape: number[], begin: number, end: number }} SafetensorsEntry
 * @typedef {{ headerSize: number, dataStart: number, tensors: SafetensorsEntry[], metadata: Record<string, string> }} SafetensorsHeader
 */
