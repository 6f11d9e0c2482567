// core.js: a JavaScript object layer over the C core's exports: models, adapters, optimizers, safetensors
// parsing. Everything here runs where the wasm instance lives (the Worker, Node, tests); views into wasm memory
// it returns are live and stay valid only until the next call into the core.
import { CoreError, EngineError, FormatError, InvalidArgumentError, NotFoundError, NumericError, UnsupportedError } from '../errors.js';
import { F32_SAFE_MAGNITUDE, firstOutOfRange } from '../engine/divergence.js';
export { CoreError } from '../errors.js';
import { instantiateCore } from '../runtime/wasm.js';
import { ABI } from './abi.js';

// The C core's status names, enums, struct layouts and limits come from web/core/abi.js, which the build writes from
// the module's own description (src/wasm/abi.c); Core refuses a module that describes itself differently.
const STATUS_CODES = ABI.status;

/** The class each failed status is thrown as, so that one code always comes with one class (errors.js). */
const STATUS_CLASSES = {
  INVALID_ARGUMENT: InvalidArgumentError, BAD_FORMAT: FormatError, UNSUPPORTED: UnsupportedError, NOT_FOUND: NotFoundError,
  NUMERIC: NumericError, BAD_STATE: EngineError, SHAPE_MISMATCH: CoreError, OUT_OF_MEMORY: CoreError,
};

export const Arch = Object.freeze({ ...ABI.arch });
export const RopeLayout = Object.freeze({ ...ABI.ropeLayout });
export const ForwardFlags = Object.freeze({ ...ABI.forwardFlags });
export const ReserveFlags = Object.freeze({ ...ABI.reserveFlags });
export const DType = Object.freeze({ ...ABI.dtype });

/** The value a name has in one of the ABI's enums, or undefined for a name it does not have. */
const enumValue = (table, name) => (Object.hasOwn(table, name) ? table[name] : undefined);
export const DTYPE_NAMES = Object.freeze(Object.fromEntries(Object.entries(DType).map(([k, v]) => [v, k])));
/** Bytes per element of each dtype, by its safetensors name. */
export const DTYPE_SIZES = Object.freeze(Object.fromEntries(Object.entries(DType).map(([k, v]) => [k, ABI.dtypeSize[v]])));
export const LoraInit = Object.freeze({ ...ABI.loraInit });
/** How a model stores its matrices (wl_storage): f32, or llama.cpp Q8_0 / Q4_1 blocks (q4: the embedding and head in Q8). */
export const STORAGE_NAMES = Object.freeze(Object.keys(ABI.storage).sort((a, b) => ABI.storage[a] - ABI.storage[b]));
/** The C parser's limit on a safetensors JSON header (bytes). */
export const SAFETENSORS_MAX_HEADER = ABI.limits.safetensorsMaxHeader;
/** Model-level LoRA modules (token embedding, LM head) sit at this layer, in these slots. */
export const MODEL_LAYER = ABI.limits.loraModelLayer;
export const EMBED_SLOT = ABI.limits.loraEmbedSlot;
export const HEAD_SLOT = ABI.limits.loraHeadSlot;

/** @param {{ blocks: string, slots: readonly (readonly [string, number, number])[] }} arch */
const archModules = ({ blocks, slots }) => Object.freeze({
  blocks, slots: slots.map(([name, hasBias, conv1d]) => Object.freeze({ name, hasBias: hasBias === 1, conv1d: conv1d === 1 })),
});
/**
 * Each architecture's LoRA-capable block modules: where its blocks sit ('model.layers') and per slot the module's
 * path inside a block ('self_attn.q_proj'), whether it has a bias and whether files store it (in, out) (Conv1D).
 */
export const ARCHITECTURES = Object.freeze({ llama: archModules(ABI.architectures.llama), gpt2: archModules(ABI.architectures.gpt2) });

/**
 * A struct of the C API as this binding uses it: the fields it reads, at the offsets and with the types web/core/abi.js
 * gives. `complete`: the binding also writes the struct, so it must know every field. A field the core lacks (or,
 * when complete, one the binding lacks) is an error as soon as this module loads.
 * @param {string} struct @param {string[]} fields @param {{ complete?: boolean }} [opts]
 */
export function structLayout(struct, fields, { complete = false } = {}) {
  const desc = /** @type {Record<string, { size: number, fields: readonly (readonly [string, number, string, number])[] }>} */ (ABI.structs)[struct];
  if (!desc) throw new Error(`web/core/abi.js describes no struct ${struct}`);
  const byName = new Map(desc.fields.map(([name, offset, type, count]) => [name, { offset, type, count }]));
  const missing = fields.filter((f) => !byName.has(f));
  const unknown = complete ? [...byName.keys()].filter((f) => !fields.includes(f)) : [];
  if (missing.length || unknown.length) {
    throw new Error(`web/core/core.js and the C core disagree on ${struct}: `
      + [missing.length ? `the core has no ${missing.join(', ')}` : '', unknown.length ? `the binding does not know ${unknown.join(', ')}` : '']
        .filter(Boolean).join('; '));
  }
  return { size: desc.size, fields: fields.map((name) => ({ name, ...byName.get(name) })) };
}

const I64_HIGH = 2 ** 32;
/** The fields of a struct at ptr, by C name (i64 and u32 as numbers, str as a string, arrays for count > 1). */
function readStruct(wasm, layout, ptr) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const { name, offset, type, count } of layout.fields) {
    const at = ptr + offset;
    const one = (k) => {
      switch (type) {
        case 'i32': return wasm.i32[(at >>> 2) + k];
        case 'f32': return wasm.f32[(at >>> 2) + k];
        case 'f64': return wasm.f64[(at >>> 3) + k];
        case 'i64': return wasm.u32[(at >>> 2) + 2 * k] + wasm.i32[(at >>> 2) + 2 * k + 1] * I64_HIGH;
        case 'str': return wasm.readString(wasm.u32[(at >>> 2) + k]);
        default: return wasm.u32[(at >>> 2) + k]; // u32, ptr
      }
    };
    out[name] = count === 1 ? one(0) : Array.from({ length: count }, (_, k) => one(k));
  }
  return out;
}

const camelCase = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const CONFIG = structLayout('wl_config', ['arch', 'dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'head_dim',
  'vocab_size', 'max_seq_len', 'tied_embeddings', 'qkv_bias', 'rope_layout', 'rope_theta', 'norm_eps', 'bos_id', 'eos_id'],
{ complete: true });
const TENSOR_INFO = structLayout('wl_tensor_info', ['name', 'data', 'grad', 'ndim', 'shape', 'transposed', 'numel', 'layer',
  'decay', 'storage']);
const MODULE_INFO = structLayout('wl_module_info', ['name', 'in_features', 'out_features', 'has_bias', 'conv1d']);
const LORA_MODULE = structLayout('wl_lora_module', ['layer', 'slot', 'rank', 'in_features', 'out_features', 'scale',
  'alpha', 'A', 'B', 'dA', 'dB', 'magnitude', 'dmagnitude', 'row_blocks', 'block_mask']);
const LLAMA2C_PART = structLayout('wl_llama2c_part', ['tensor', 'offset', 'numel']);

/** The wl_storage id of a dtype name; anything else is a clear error. */
export function storageId(dtype) {
  const id = STORAGE_NAMES.indexOf(dtype);
  if (id < 0) throw new InvalidArgumentError(`dtype must be 'f32', 'q8' or 'q4', got ${JSON.stringify(dtype)}`);
  return id;
}
export const IGNORE_ID = -100;

const CONFIG_BYTES = CONFIG.size;

/** Split a non-negative integer seed into u32 halves (the exports take no i64). */
function seedHalves(seed) {
  const s = BigInt.asUintN(64, BigInt(seed ?? 0));
  return [Number(s & 0xffffffffn), Number(s >> 32n)];
}

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
    throw new ErrorClass(`${what}: ${reason}`, { code, details: { status } });
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
 * A LoRA-capable linear module of each block.
 * @typedef {{ slot: number, name: string, shortName: string, inFeatures: number, outFeatures: number, hasBias: boolean,
 *   conv1d: boolean }} ModuleInfo
 */

/**
 * What adapters and the PEFT code need of a model: a loaded Model, or ModuleShapes (adapter files without a model).
 * @typedef {Model | ModuleShapes} ModelLike
 */

/**
 * A model known only by the shapes of its LoRA-capable modules, as adapter files give them (formats/peft-shapes.js
 * shapeFromFiles): it has no weights and no vocabulary. Adapters for it are created, loaded, resized, combined and
 * written like any other, but nothing runs on it, so none is ever attached to it or merged into it.
 */
export class ModuleShapes {
  /**
   * @param {Core} core
   * @param {{ arch: 'llama' | 'gpt2', nLayers: number, slots: string[], container: string, inFeatures: number[],
   *   outFeatures: number[] }} shape slots: the module paths within a block ('self_attn.q_proj'); container: the
   *   path of the blocks ('model.layers'); a size of 0 for a slot no file mentions
   */
  constructor(core, shape) {
    this.core = core;
    this.shape = shape;
    /** @type {'llama' | 'gpt2'} */
    this.arch = shape.arch;
    /** The config fields adapters need; head counts and sizes the files do not give are 0. @type {Record<string, number>} */
    this.config = { arch: shape.arch === 'gpt2' ? Arch.GPT2 : Arch.LLAMA, nLayers: shape.nLayers, ropeLayout: RopeLayout.HALF,
      nHeads: 0, nKvHeads: 0, headDim: 0 };
    this.dtype = 'f32';
    /** @type {Adapter[]} nothing can be attached: there are no weights to run */
    this.attached = [];
  }

  /** @returns {ModuleInfo[]} */
  modules() {
    const { slots, inFeatures, outFeatures, arch } = this.shape;
    return slots.map((name, slot) => ({ slot, name, shortName: name.split('.').pop() ?? name, inFeatures: inFeatures[slot],
      outFeatures: outFeatures[slot], hasBias: ARCHITECTURES[arch].slots[slot].hasBias, conv1d: ARCHITECTURES[arch].slots[slot].conv1d }));
  }

  /** @param {number} layer @param {number} slot */
  modulePath(layer, slot) {
    return `${this.shape.container}.${layer}.${this.shape.slots[slot]}`;
  }

  /** @returns {ReturnType<Model['tensors']>} none: it holds no weights */
  tensors() {
    return [];
  }

  memoryBytes() {
    return 0;
  }

  memoryParts() {
    return { weights: 0, activations: 0 };
  }

  /** @param {Adapter} _adapter */
  isMerged(_adapter) {
    return false;
  }

  /** @param {Adapter[]} adapters */
  setAdapters(adapters) {
    if (adapters.length) throw new EngineError('adapters cannot be applied to module shapes read from adapter files: load the model', { code: 'NO_WEIGHTS' });
  }

  free() {}

  /**
   * A new adapter of these shapes (wl_adapter_create_shaped); the spec as Adapter.create takes it.
   * @param {{ ranks: ArrayLike<number>, alphas: ArrayLike<number>, useRslora?: boolean, dora?: boolean }} spec
   */
  createAdapter(spec) {
    const { core } = this;
    const { inFeatures, outFeatures, nLayers } = this.shape;
    const S = inFeatures.length;
    const n = spec.ranks.length;
    const ptr = core.withScratch(8 * S + 8 * n, (p) => {
      core.wasm.i32.set(inFeatures, p >>> 2);
      core.wasm.i32.set(outFeatures, (p >>> 2) + S);
      const r = p + 8 * S;
      core.wasm.i32.set(spec.ranks, r >>> 2);
      core.wasm.f32.set(spec.alphas, (r >>> 2) + n);
      return core.callOut('create adapter', (out) => core.x.wl_adapter_create_shaped(this.config.arch, nLayers, S, p, p + 4 * S,
        r, r + 4 * n, spec.useRslora ? 1 : 0, spec.dora ? 1 : 0, out));
    });
    return new Adapter(core, ptr);
  }
}

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
    core.withScratch(TENSOR_INFO.size, (info) => {
      const n = core.x.wl_model_n_tensors(this.ptr);
      for (let i = 0; i < n; i++) {
        core.check(core.x.wl_model_tensor(this.ptr, i, info), 'tensor table');
        const t = readStruct(core.wasm, TENSOR_INFO, info);
        out.push({
          index: i, name: t.name, dataPtr: t.data, gradPtr: t.grad, ndim: t.ndim, shape: t.shape.slice(0, t.ndim),
          transposed: t.transposed === 1, numel: t.numel, layer: t.layer, decay: t.decay === 1, quantized: t.storage !== ABI.storage.f32,
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

  /** A tensor's values in its Hugging Face file layout (a GPT-2 Conv1D weight (in, out)), as the core reads them back. */
  readTensorFile(entry) {
    const { core } = this;
    return core.withScratch(4 * Math.max(1, entry.numel), (p) => {
      core.check(core.x.wl_model_read_tensor_file(this.ptr, entry.index, p), 'read tensor');
      return core.wasm.f32.slice(p >>> 2, (p >>> 2) + entry.numel);
    });
  }

  /**
   * Where each tensor of this model (created from the checkpoint's header) lies in a llama2.c file of fileSize bytes:
   * [{ tensor (index), offset (bytes), numel }] in file order. @param {Uint8Array} header its first 28 bytes
   */
  llama2cParts(header, fileSize) {
    const { core } = this;
    const cap = this.tensors().length;
    const size = LLAMA2C_PART.size;
    return core.withScratch(header.byteLength + 8 + size * cap + 4, (p) => {
      core.wasm.u8.set(header, p);
      const parts = (p + header.byteLength + 7) & ~7;
      const nPtr = parts + size * cap;
      core.check(core.x.wl_llama2c_parts(this.ptr, p, header.byteLength, fileSize, parts, cap, nPtr), 'llama2.c checkpoint');
      const out = [];
      for (let i = 0; i < core.wasm.i32[nPtr >>> 2]; i++) {
        const { tensor, offset, numel } = readStruct(core.wasm, LLAMA2C_PART, parts + size * i);
        out.push({ tensor, offset, numel });
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
    const n = bytes.byteLength / ABI.dtypeSize[dtypeId];
    core.withScratch(Math.max(1, bytes.byteLength), (p) => {
      core.wasm.u8.set(bytes, p);
      core.check(core.x.wl_model_write_tensor(this.ptr, index, dtypeId, firstElement, n, p), 'write tensor');
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
      throw new NumericError(`model weights contain NaN or infinite values (first in ${bad?.name})`);
    }
    for (const t of f32Tensors) {
      const v = this.tensorView(t);
      const i = firstOutOfRange(v, F32_SAFE_MAGNITUDE);
      if (i >= 0) {
        throw new NumericError(`model weight ${t.name} holds ${v[i].toExponential(3)} at element ${i}, beyond ±${F32_SAFE_MAGNITUDE.toExponential(0)}: `
          + 'f32 arithmetic on it would overflow', { details: { tensor: t.name, index: i, value: v[i] } });
      }
    }
  }

  /** A new adapter on this model's modules (the spec of Adapter.create). @param {Parameters<typeof Adapter.create>[1]} spec */
  createAdapter(spec) {
    const { core } = this;
    const n = spec.ranks.length;
    const ptr = core.withScratch(8 * n + 16, (p) => {
      core.wasm.i32.set(spec.ranks, p >>> 2);
      core.wasm.f32.set(spec.alphas, (p >>> 2) + n);
      const ml = p + 8 * n;
      core.wasm.f32.set([spec.embed?.rank ?? 0, spec.embed?.alpha ?? 0, spec.head?.rank ?? 0, spec.head?.alpha ?? 0], ml >>> 2);
      return core.callOut('create adapter', (out) =>
        core.x.wl_adapter_create(this.ptr, p, p + 4 * n, spec.useRslora ? 1 : 0, spec.dora ? 1 : 0, ml, out));
    });
    return new Adapter(core, ptr);
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
    core.withScratch(MODULE_INFO.size, (info) => {
      for (let s = 0; s < core.x.wl_model_n_slots(this.ptr); s++) {
        core.check(core.x.wl_model_module(this.ptr, s, info), 'module');
        const m = readStruct(core.wasm, MODULE_INFO, info);
        out.push({ slot: s, name: m.name, shortName: m.name.split('.').pop(), inFeatures: m.in_features,
          outFeatures: m.out_features, hasBias: m.has_bias === 1, conv1d: m.conv1d === 1 });
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
   * Plan memory for passes over B sequences of T tokens. train: keep what backward needs; recompute (with train):
   * keep only each layer's input and recompute the rest in backward; lastLogits: inference that only needs the last
   * position's logits (generation), so a long context stays cheap.
   */
  reserve(B, T, { train = false, recompute = false, lastLogits = false } = {}) {
    const flags = (train ? ReserveFlags.TRAIN : 0) | (lastLogits ? ReserveFlags.LAST_LOGITS : 0) | (recompute ? ReserveFlags.RECOMPUTE : 0);
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
      throw new InvalidArgumentError(`forward: ${tokens.length} tokens do not form a (${B}, T) batch`);
    }
    const n = B * T;
    this.ensureIo(n);
    const tok = this.ioPtr, tgt = this.ioPtr + 4 * n, lossPtr = this.ioPtr + 8 * n;
    const i32 = core.wasm.i32;
    i32.set(tokens, tok >>> 2);
    if (opts.targets) {
      if (opts.targets.length !== n) throw new InvalidArgumentError('forward: targets and tokens differ in length');
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

/**
 * One load of a model's weights from safetensors shards, whatever carries the bytes: the core plans each shard
 * (wl_model_plan_shard: which model tensor every file tensor fills, none stored twice) and checks at the end that
 * every model tensor came (wl_model_check_loaded); the caller writes the bytes with Model.writeTensorBytes.
 */
export class ShardLoad {
  /** @param {Model} model */
  constructor(model) {
    this.model = model;
    const n = model.core.x.wl_model_n_tensors(model.ptr);
    this.seen = model.core.wasm.malloc(Math.max(1, n));
    model.core.wasm.u8.fill(0, this.seen, this.seen + n);
  }

  /**
   * The plan of one shard from its header (the first bytes of a file of fileSize bytes): the file's tensors, each
   * with `index`, the model tensor it fills (-1: it carries no weights).
   * @param {Uint8Array} header @param {number} fileSize
   * @returns {Omit<SafetensorsHeader, 'tensors'> & { tensors: (SafetensorsEntry & { index: number })[] }}
   */
  plan(header, fileSize) {
    const { core, ptr } = this.model;
    return core.withSafetensors(header, fileSize, (st) => {
      const parsed = core.describeSafetensors(st);
      const n = parsed.tensors.length;
      const indices = core.withScratch(4 * Math.max(1, n), (p) => {
        core.check(core.x.wl_model_plan_shard(ptr, st, this.seen, p), 'safetensors');
        return Array.from(core.wasm.i32.subarray(p >>> 2, (p >>> 2) + n));
      });
      return { ...parsed, tensors: parsed.tensors.map((t, i) => ({ ...t, index: indices[i] })) };
    });
  }

  /** Throw (NOT_FOUND) naming the first model tensor no shard held. */
  finish() {
    this.model.core.check(this.model.core.x.wl_model_check_loaded(this.model.ptr, this.seen), 'safetensors');
  }

  free() {
    this.model.core.wasm.free(this.seen);
    this.seen = 0;
  }
}

/**
 * @typedef {{ name: string, dtype: string, dtypeId: number, shape: number[], begin: number, end: number }} SafetensorsEntry
 * @typedef {{ headerSize: number, dataStart: number, tensors: SafetensorsEntry[], metadata: Record<string, string> }} SafetensorsHeader
 */

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
   * A new adapter for a loaded model or for module shapes read from adapter files (each makes its own).
   * @param {ModelLike} model
   * @param {{ ranks: ArrayLike<number>, alphas: ArrayLike<number>, useRslora?: boolean, dora?: boolean,
   *   embed?: { rank: number, alpha: number }, head?: { rank: number, alpha: number } }} spec (L * nSlots)
   *   tables; dora: DoRA modules (magnitudes start at 0: initDora or a loader sets them); embed, head: LoRA on the
   *   token embedding and on the LM head (modules at layer -1, slots 0 and 1; a loaded model only)
   */
  static create(model, spec) {
    return model.createAdapter(spec);
  }

  /** @param {'default'|'gaussian'|'zero'} kind @param {number|bigint} seed */
  init(kind, seed = 0) {
    const id = LoraInit[kind];
    if (id === undefined) throw new InvalidArgumentError(`unknown LoRA init "${kind}"`);
    const [lo, hi] = seedHalves(seed);
    this.core.check(this.core.x.wl_adapter_init(this.ptr, id, lo, hi), 'init adapter');
  }

  /** Module descriptors with pointers to A (r, in), B (out, r), the DoRA magnitude (out; 0 for plain LoRA) and their
   *  gradients, and the MergedLinear row blocks (rowBlocks 0: the whole matrix). */
  modules() {
    const { core } = this;
    const out = [];
    core.withScratch(LORA_MODULE.size, (p) => {
      for (let i = 0; i < core.x.wl_adapter_n_modules(this.ptr); i++) {
        core.check(core.x.wl_adapter_module(this.ptr, i, p), 'adapter module');
        const m = readStruct(core.wasm, LORA_MODULE, p);
        out.push({ index: i, layer: m.layer, slot: m.slot, rank: m.rank, inFeatures: m.in_features,
          outFeatures: m.out_features, scale: m.scale, alpha: m.alpha, A: m.A, B: m.B, dA: m.dA, dB: m.dB,
          magnitude: m.magnitude, dMagnitude: m.dmagnitude, rowBlocks: m.row_blocks, blockMask: m.block_mask });
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

  /** Frees the adapter; one still attached to a model or merged into it is refused (EngineError BAD_STATE). */
  free() {
    if (!this.ptr) return;
    this.core.check(this.core.x.wl_adapter_free(this.ptr), 'free adapter');
    this.ptr = 0;
  }
}
