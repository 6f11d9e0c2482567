// adapter.js: a LoRA adapter in the core (Adapter): its modules, factors and scales as live views into wasm memory.
import { InvalidArgumentError } from '../errors.js';
import { LoraInit, readStruct, seedHalves, structLayout } from './abi-tables.js';

/**
 * @typedef {import('./core.js').Core} Core
 * @typedef {import('./core.js').ModelLike} ModelLike
 */

const LORA_MODULE = structLayout('wl_lora_module', ['layer', 'slot', 'rank', 'in_features', 'out_features', 'scale',
  'alpha', 'A', 'B', 'dA', 'dB', 'magnitude', 'dmagnitude', 'row_blocks', 'block_mask']);

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
