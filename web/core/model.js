// model.js: a model in the core (Model), one load of its weights from safetensors shards (ShardLoad), and a model
// known only by its LoRA modules' shapes (ModuleShapes). Views into wasm memory are live until the next core call.
import { EngineError, InvalidArgumentError, NumericError } from '../errors.js';
import { F32_SAFE_MAGNITUDE, firstOutOfRange } from '../engine/divergence.js';
import { ABI } from './abi.js';
import {
  ARCHITECTURES, Arch, DType, ForwardFlags, IGNORE_ID, ReserveFlags, RopeLayout, STORAGE_NAMES, readStruct, seedHalves, structLayout,
} from './abi-tables.js';
import { Adapter } from './adapter.js';

/**
 * @typedef {import('./core.js').Core} Core
 * @typedef {import('./core.js').SafetensorsEntry} SafetensorsEntry
 * @typedef {import('./core.js').SafetensorsHeader} SafetensorsHeader
 */

const TENSOR_INFO = structLayout('wl_tensor_info', ['name', 'data', 'grad', 'ndim', 'shape', 'transposed', 'numel', 'layer',
  'decay', 'storage']);
const MODULE_INFO = structLayout('wl_module_info', ['name', 'in_features', 'out_features', 'has_bias', 'conv1d']);
const LLAMA2C_PART = structLayout('wl_llama2c_part', ['tensor', 'offset', 'numel']);


/**
 * A LoRA-capable linear module of each block.
 * @typedef {{ slot: number, name: string, shortName: string, inFeatures: number, outFeatures: number, hasBias: boolean,
 *   conv1d: boolean }} ModuleInfo
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
