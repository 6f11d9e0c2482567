// engine.js: the whole weblora job in one thread: a loaded base model, its tokenizer, any number of LoRA
// adapters over it, training, evaluation, generation and PEFT files. The Worker (browser, Node worker_threads)
// runs one LocalEngine and forwards the public API's calls to it; tests and tools may use it directly.
import { BaseModelMismatchError, throwIfAborted, EngineError, InvalidArgumentError, NumericError, UnsupportedError } from '../errors.js';
export { EngineError } from '../errors.js';
import { Adapter, Arch, Core, Model, RopeLayout } from '../core/core.js';
import { DataError, packSequences, splitHeldOut, tokenizeDocuments } from './data.js';
import { isStreamedSource, tokenizeCorpus } from './corpus.js';
import { loadModel } from '../formats/loader.js';
import { FINGERPRINT_KEY, WEIGHTS_FILE, permuteRopeRows, qkvMask, resolveLoraSpec } from '../formats/peft.js';
import { peftToAdapter } from '../formats/peft-load.js';
import { adapterToPeft, coreScale } from '../formats/peft-save.js';
import { GGUF_ADAPTER_FILE, GGUF_MODEL_FILE, adapterToGguf, modelToGguf } from '../formats/gguf.js';
import { checkAdapterBase, loadedModelRef, modelRef, recordedBase } from '../storage/identity.js';
import { Rng } from './rng.js';
import { sampleToken, samplingOptions } from './sample.js';
import { sha256Hex } from '../storage/crypto.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { Trainer, evaluateSequences, trainOptions } from './train.js';
import { assertSafeMagnitudes } from './divergence.js';
import { AdapterLibrary } from '../storage/library.js';
import { adapterFileBase, shapeFromFiles } from '../formats/peft-shapes.js';
import { ENGINE_METHODS } from '../runtime/api.js';


const yieldToEventLoop = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * A short, stable identity of a base model: SHA-256 over its config, tensor names and shapes, and an evenly strided
 * sample of every tensor's values. Adapters record it, so one made for another base is refused.
 */
export async function fingerprintModel(model) {
  const parts = [JSON.stringify(model.config)];
  const samples = [];
  for (const t of model.tensors()) {
    parts.push(`${t.name}:${t.shape.join('x')}`);
    // A quantised tensor reports the full-precision values it received there (wl_model_tensor_sample), so a model
    // has one identity whatever its dtype and adapters move between f32 and quantised bases.
    const n = Math.min(64, t.numel);
    const sample = new Float32Array(n);
    if (t.quantized) {
      for (let i = 0; i < n; i++) sample[i] = model.core.x.wl_model_tensor_sample(model.ptr, t.index, i);
    } else {
      const v = model.tensorView(t);
      for (let i = 0; i < n; i++) sample[i] = v[Math.floor((i * v.length) / n)];
    }
    samples.push(sample);
  }
  const text = new TextEncoder().encode(parts.join('\n'));
  const total = samples.reduce((a, s) => a + s.byteLength, text.byteLength);
  const all = new Uint8Array(total);
  all.set(text);
  let at = text.byteLength;
  for (const s of samples) {
    all.set(new Uint8Array(s.buffer), at);
    at += s.byteLength;
  }
  return (await sha256Hex(all)).slice(0, 32);
}

/** The q, k, v blocks of an adapter's MergedLinear c_attn modules (['q', 'v']), or null when it has none. */
function blockNames(adapter) {
  const blocked = adapter.modules().find((m) => m.rowBlocks);
  return blocked ? ['q', 'k', 'v'].filter((_, i) => blocked.blockMask & (1 << i)) : null;
}

/** Hugging Face config.json for the model as it is in memory (written by the core, which also reads config.json). */
export function hfConfig(model) {
  return JSON.parse(model.core.configToHF(model.config));
}

/** Reorder a Llama model's q/k rows in place from rotate-half to interleaved-pair order (the inverse of export). */
function halfToInterleavedInPlace(model) {
  const c = model.config;
  for (const t of model.tensors()) {
    const heads = /self_attn\.q_proj\.(weight|bias)$/.test(t.name) ? c.nHeads : /self_attn\.k_proj\.(weight|bias)$/.test(t.name) ? c.nKvHeads : 0;
    if (!heads) continue;
    const v = model.tensorView(t);
    v.set(permuteRopeRows(v.slice(), heads, c.headDim, t.ndim === 2 ? t.shape[1] : 1, false));
  }
}

/** Model weights as a Hugging Face safetensors file (GPT-2 Conv1D in file layout, by the core; llama2.c q/k permuted). */
export function modelToSafetensors(model, metadata = {}) {
  const c = model.config;
  const tensors = model.tensors().map((t) => {
    let data = t.transposed ? model.readTensorFile(t) : model.tensorView(t).slice();
    if (c.arch === Arch.LLAMA && c.ropeLayout === RopeLayout.INTERLEAVED) {
      if (/self_attn\.q_proj\.(weight|bias)$/.test(t.name)) data = permuteRopeRows(data, c.nHeads, c.headDim, t.ndim === 2 ? t.shape[1] : 1, true);
      if (/self_attn\.k_proj\.(weight|bias)$/.test(t.name)) data = permuteRopeRows(data, c.nKvHeads, c.headDim, t.ndim === 2 ? t.shape[1] : 1, true);
    }
    return { name: t.name, shape: t.shape, data };
  });
  return writeSafetensors(tensors, { metadata: { format: 'pt', ...metadata } });
}

/**
 * What a training run reports to: Trainer.run's hooks, plus progress while the texts are tokenized.
 * @typedef {Parameters<Trainer['run']>[0] & { onTokenize?: (p: import('./corpus.js').TokenizeProgress) => void }} TrainHooks
 */

/**
 * One base model with its adapters.
 */
export class LocalEngine {
  /**
   * @param {Core} core
   * @param {{ model: import('../core/core.js').Model, tokenizer: any, name: string, kind: string,
   *   ref?: import('../storage/identity.js').ModelRef | null, store?: import('../storage/store.js').StoreOptions }} loaded ref: which
   *   model it is (identity.js loadedModelRef); store: where its adapters are saved (library.js)
   * @param {string} fingerprint
   */
  constructor(core, loaded, fingerprint) {
    this.core = core;
    this.model = loaded.model;
    this.tokenizer = loaded.tokenizer;
    this.name = loaded.name;
    this.kind = loaded.kind;
    /** Which model this is: compared with imported adapters' named base, recorded in exported ones. */
    this.ref = loaded.ref ?? null;
    this.fingerprint = fingerprint;
    /** The adapters held in the core, by id. @type {Map<string, { adapter: Adapter, info: object }>} */
    this.loaded = new Map();
    /** Saved adapters and training checkpoints (IndexedDB; options.store of load). */
    this.adapters = new AdapterLibrary(this, loaded.store);
    this.nextId = 1;
    /** The Trainer of a run in progress (its optimizer state counts in info().memory), else null. */
    this.activeTrainer = null;
  }

  /**
   * @param {any} source URL, path (Node), ArrayBuffer, Files, or a { name: data } map
   * @param {{ onProgress?: (e: object) => void, signal?: AbortSignal, threads?: number | 'auto',
   *   simd?: 'auto' | 'relaxed' | 'simd128', wasmModule?: WebAssembly.Module, wasmSource?: any, tokenizer?: any,
   *   baseModel?: string, revision?: string, dtype?: 'f32'|'q8'|'q4', store?: import('../storage/store.js').StoreOptions } & object} [options]
   *   store: the IndexedDB store of engine.adapters (in Node, { indexedDB } from fake-indexeddb); dtype: how the frozen
   *   matrices are held ('q8' and 'q4' quantise them as they stream in; LoRA still trains in f32). threads: 'auto'
   *   (default: every core, at most 8) or a number; one where threads are unavailable. simd: 'auto' (default:
   *   relaxed SIMD where the engine has it) or a flavour (runtime/wasm.js). baseModel / revision: the Hub id or URL (and revision) this model is, over what the source or
   *   config.json says; exported adapters record it, imported ones are compared with it (identity.js loadedModelRef)
   */
  static async load(source, options = {}) {
    for (const key of ['baseModel', 'revision']) {
      if (options[key] !== undefined && (typeof options[key] !== 'string' || options[key].trim() === '')) {
        throw new InvalidArgumentError(`${key} must be a non-empty string`);
      }
    }
    const base = options.baseModel === undefined ? null : modelRef(options.baseModel);
    if (base && !base.hubId && !base.url) {
      throw new InvalidArgumentError(`baseModel must be a Hub id (org/name) or an http(s) URL, got ${JSON.stringify(options.baseModel)}`);
    }
    // threads and simd are checked where they are used (wasm.js), before anything is compiled.
    const core = await Core.create({ module: options.wasmModule, source: options.wasmSource, wasmUrl: options.wasmUrl,
      threads: options.threads ?? 'auto', simd: options.simd ?? 'auto' });
    try {
      const loaded = await loadModel(core, source, options);
      const ref = loadedModelRef(loaded.location ?? source, { base, revision: options.revision, nameOrPath: loaded.nameOrPath });
      const fingerprint = await fingerprintModel(loaded.model);
      const engine = new LocalEngine(core, { ...loaded, ref, store: options.store }, fingerprint);
      options.onProgress?.({ status: 'ready', name: loaded.name, task: 'text-generation', model: loaded.name });
      return engine;
    } catch (err) {
      core.stopThreads();
      throw err;
    }
  }

  /**
   * An engine over adapter files alone, without their base model: its model is the module shapes the files imply
   * (formats/peft-shapes.js), so adapters load onto it, resize, combine and export as on the real model, and nothing else runs
   * (EngineError NO_WEIGHTS). Adapters trained on different base models (by weblora's fingerprint) are refused.
   * @param {Array<Record<string, string | Uint8Array | ArrayBuffer>>} fileSets PEFT files of each adapter
   * @param {{ threads?: number | 'auto', simd?: 'auto' | 'relaxed' | 'simd128', wasmModule?: WebAssembly.Module,
   *   wasmSource?: any, wasmUrl?: string | URL }} [options]
   */
  static async forAdapters(fileSets, options = {}) {
    if (!Array.isArray(fileSets) || !fileSets.length) throw new InvalidArgumentError('forAdapters needs the files of at least one adapter');
    const core = await Core.create({ module: options.wasmModule, source: options.wasmSource, wasmUrl: options.wasmUrl,
      threads: options.threads ?? 'auto', simd: options.simd ?? 'auto' });
    try {
      const shapes = shapeFromFiles(core, fileSets);
      const bases = fileSets.map((files) => adapterFileBase(core, files));
      const prints = [...new Set(bases.map((b) => b.fingerprint).filter(Boolean))];
      if (prints.length > 1) throw new BaseModelMismatchError(`the adapters were trained on different base models (fingerprints ${prints.join(', ')})`);
      const named = bases.find((b) => b.baseModel) ?? null;
      const ref = named ? { ...modelRef(named.baseModel), revision: named.revision } : null;
      // Typed as a Model, which it stands for in the methods that do not requireWeights.
      return new LocalEngine(core, { model: /** @type {Model} */ (/** @type {unknown} */ (shapes)), tokenizer: null, name: named?.baseModel ?? 'adapter files', kind: 'adapters', ref },
        prints[0] ?? null);
    } catch (err) {
      core.stopThreads();
      throw err;
    }
  }

  /** The loaded model; refused for an engine over adapter files alone (forAdapters). @param {string} what */
  requireWeights(what) {
    if (!(this.model instanceof Model)) {
      throw new EngineError(`${what} needs the base model's weights, and this engine holds adapter files alone: load the model`, { code: 'NO_WEIGHTS' });
    }
    return this.model;
  }

  /** What the model is. */
  info() {
    const m = this.model;
    const nParams = m.tensors().reduce((n, t) => n + t.numel, 0); // every weight, f32 or quantised (a tied head once)
    return {
      name: this.name, kind: this.kind, origin: recordedBase(this.ref), arch: m.arch, config: { ...m.config }, parameters: nParams,
      fingerprint: this.fingerprint, memoryBytes: m.memoryBytes() + this.adapterBytes(), memory: this.memory(), dtype: m.dtype,
      hasTokenizer: !!this.tokenizer,
      chatTemplate: this.tokenizer?.chatTemplate ?? null,
      threads: this.core.threads, threadsNote: this.core.threadsNote, simd: this.core.simd,
      modules: m.modules().map((x) => x.name),
      adapters: [...this.loaded.values()].map((a) => ({ ...a.info })),
    };
  }

  /** Bytes of every adapter's weights and gradients, and of the optimizer state of a training run in progress. */
  adapterBytes() {
    let n = 0;
    for (const e of this.loaded.values()) n += 8 * e.adapter.params().length;
    const t = this.activeTrainer;
    if (t) n += 4 * ((t.m?.length ?? 0) + (t.v?.length ?? 0));
    return n;
  }

  /** Where the core's memory goes: the base weights, adapters with gradients and optimizer, activations and scratch. */
  memory() {
    const { weights, activations } = this.model.memoryParts();
    return { weights, adapters: this.adapterBytes(), activations };
  }

  requireTokenizer() {
    if (!this.tokenizer) throw new EngineError('this model was loaded without a tokenizer: pass options.tokenizer', { code: 'NO_TOKENIZER' });
    return this.tokenizer;
  }

  entry(id) {
    const e = this.loaded.get(id);
    if (!e) throw new EngineError(`no adapter with id ${JSON.stringify(id)}`, { code: 'NO_ADAPTER' });
    return e;
  }

  /** Record an adapter under a new id; info fields not given take the defaults of a fresh adapter on this base. */
  register(adapter, info) {
    const id = `adapter-${this.nextId++}`;
    const defaults = { name: null, useRslora: false, dora: false, enableLora: null, rankPattern: {}, alphaPattern: {}, dropout: 0,
      baseModel: this.name, baseFingerprint: this.fingerprint, created: Date.now(), steps: 0, finalLoss: null };
    const full = { ...defaults, ...info, id, parameters: adapter.params().length };
    this.loaded.set(id, { adapter, info: full });
    return { ...full };
  }

  /**
   * A new LoRA adapter (B = 0, so it changes nothing until trained).
   * @param {{ rank?: number, alpha?: number, targets?: string[]|string, init?: 'default'|'gaussian'|'pissa'|'pissa_fast',
   *   pissaIters?: number, useRslora?: boolean, dora?: boolean, rankPattern?: Record<string, number>,
   *   alphaPattern?: Record<string, number>, layers?: number[], dropout?: number, seed?: number, name?: string,
   *   enableLora?: string[] | boolean[] }} [opts] init 'pissa': PiSSA from the top singular triplets of each target
   *   weight; 'pissa_fast': from a randomised SVD with pissaIters (0..64, default 4) power iterations, as PEFT's
   *   pissa_niter_N; dora: DoRA modules
   *   (PEFT use_dora), magnitudes from the norms of the base weights; enableLora: GPT-2 only, loralib's MergedLinear on
   *   c_attn adapting only the named q, k, v blocks (['q', 'v'] or [true, false, true]), each with its own rank-`rank`
   *   factors and scale alpha / rank (c_attn's stacked rank is rank times the number of blocks)
   */
  createAdapter(opts = {}) {
    this.requireWeights('a new adapter');
    const rank = opts.rank ?? 8;
    const alpha = opts.alpha ?? 2 * rank;
    const targets = opts.targets ?? (this.model.arch === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj']);
    const init = opts.init ?? 'default';
    if (!['default', 'gaussian', 'pissa', 'pissa_fast'].includes(init)) {
      throw new InvalidArgumentError(`init must be "default", "gaussian", "pissa" or "pissa_fast", got ${init}`);
    }
    if (opts.pissaIters !== undefined) {
      if (init !== 'pissa_fast') throw new InvalidArgumentError(`pissaIters applies to init "pissa_fast" only (init is "${init}")`);
      if (!Number.isInteger(opts.pissaIters) || opts.pissaIters < 0 || opts.pissaIters > 64) {
        throw new InvalidArgumentError(`pissaIters must be an integer from 0 to 64, got ${JSON.stringify(opts.pissaIters)}`);
      }
    }
    const dora = opts.dora ?? false;
    if (typeof dora !== 'boolean') throw new InvalidArgumentError(`dora must be true or false, got ${JSON.stringify(dora)}`);
    if (dora && init.startsWith('pissa')) throw new UnsupportedError('PiSSA initialisation of a DoRA adapter is not supported');
    if (dora && opts.dropout > 0) throw new UnsupportedError('LoRA dropout is not supported with DoRA: use dropout 0');
    const spec = resolveLoraSpec(this.model, { rank, alpha, targets, useRslora: !!opts.useRslora, rankPattern: opts.rankPattern,
      alphaPattern: opts.alphaPattern, layers: opts.layers });
    const blocks = opts.enableLora === undefined ? null : this.mergedLinearPlan(spec, opts.enableLora, init);
    const adapter = Adapter.create(this.model, { ranks: blocks?.ranks ?? spec.ranks, alphas: spec.alphas, useRslora: !!opts.useRslora, dora,
      embed: spec.embed, head: spec.head });
    try {
      if (blocks) {
        const S = this.model.modules().length;
        for (const m of adapter.modules()) {
          if (!blocks.slots.has(m.layer * S + m.slot)) continue;
          // scale alpha / r of one block's rank, as loralib's MergedLinear (the stacked rank would give alpha / (k r))
          adapter.setScale(m.index, coreScale(spec.alphas[m.layer * S + m.slot], m.rank / blocks.k, !!opts.useRslora));
          adapter.setRowBlocks(m.index, 3, blocks.mask);
        }
      }
      if (init === 'pissa' || init === 'pissa_fast') {
        // PiSSA moves the top singular directions of each target weight into the adapter; the base keeps the residual.
        adapter.initPissa(this.model, init === 'pissa' ? -1 : (opts.pissaIters ?? 4), opts.seed ?? 0);
      } else {
        adapter.init(init, opts.seed ?? 0);
      }
      // DoRA starts from the magnitudes of W + s B A = W (PEFT's), so the new adapter changes nothing either.
      if (dora) adapter.initDora(this.model);
    } catch (err) {
      adapter.free();
      throw err;
    }
    return this.register(adapter, {
      name: opts.name ?? null, rank, alpha, targets: Array.isArray(targets) ? targets.slice() : targets, useRslora: !!opts.useRslora,
      dora, enableLora: blockNames(adapter), rankPattern: opts.rankPattern ?? {}, alphaPattern: opts.alphaPattern ?? {},
      dropout: opts.dropout ?? 0, init,
    });
  }

  /**
   * The stacked ranks for loralib MergedLinear c_attn modules: each targeted c_attn gets k times its rank.
   * slots: the (layer * slots + slot) indices of those modules.
   * @returns {{ ranks: Int32Array, mask: number, k: number, slots: Set<number> }}
   */
  mergedLinearPlan(spec, enableLora, init) {
    const bad = (msg) => new InvalidArgumentError(msg);
    if (this.model.arch !== 'gpt2') throw bad('enableLora splits GPT-2\'s fused c_attn into q, k, v; this model has separate projections: target them by name');
    if (init.startsWith('pissa')) throw new UnsupportedError('PiSSA initialisation of MergedLinear blocks is not supported');
    const mask = qkvMask(enableLora);
    const k = [0, 1, 2].filter((i) => mask & (1 << i)).length;
    const S = this.model.modules().length;
    const slots = new Set();
    const ranks = Int32Array.from(spec.ranks);
    for (const m of spec.modules) {
      if (!m.path.endsWith('.c_attn')) continue;
      ranks[m.layer * S + m.slot] = m.rank * k;
      slots.add(m.layer * S + m.slot);
    }
    if (!slots.size) throw bad('enableLora applies to c_attn, which the targets do not include');
    return { ranks, mask, k, slots };
  }

  adapterInfo(id) {
    return { ...this.entry(id).info };
  }

  listAdapters() {
    return [...this.loaded.values()].map((e) => ({ ...e.info }));
  }

  freeAdapter(id) {
    const e = this.entry(id);
    this.model.setAdapters(this.model.attached.filter((a) => a !== e.adapter));
    // A merged adapter or a PiSSA residual lives in the base weights: restore them first.
    if (this.model.isMerged(e.adapter) || e.adapter.isPissa) this.model.unmerge(e.adapter);
    e.adapter.free();
    this.loaded.delete(id);
  }

  /** Merge an adapter into the base weights (W += weight s B A); generation then runs with no LoRA work for it. */
  merge(id, weight = 1) {
    this.requireWeights('merging');
    const e = this.entry(id);
    if (e.adapter.isPissa) throw new EngineError('a PiSSA adapter already shares the base weights: export it, or train it unmerged', { code: 'BAD_STATE' });
    this.model.merge(e.adapter, weight);
    e.info.merged = true;
    return { ...e.info, editBytes: this.model.editBytes() };
  }

  /** Undo a merge bit for bit. */
  unmerge(id) {
    this.requireWeights('unmerging');
    const e = this.entry(id);
    this.model.unmerge(e.adapter);
    e.info.merged = false;
    return { ...e.info, editBytes: this.model.editBytes() };
  }

  /**
   * Best low-rank approximation of any row-major (m, n) matrix (Core.lowRankApprox).
   * @param {Float32Array} matrix @param {number} m @param {number} n @param {object} [opts]
   */
  lowRankApprox(matrix, m, n, opts = {}) {
    return this.core.lowRankApprox(matrix, m, n, opts);
  }

  /** Per-module errors with paths. */
  namedErrors(adapter, errors) {
    return adapter.modules().map((m, i) => ({ module: this.model.modulePath(m.layer, m.slot), rank: m.rank, relError: errors[i] }));
  }

  /** A lower-rank copy of an adapter (truncated SVD of each update); the original stays. */
  resize(id, { rank = 0, energy = 0, name = null } = {}) {
    const e = this.entry(id);
    const r = e.adapter.resize(rank, energy);
    const info = this.register(r.adapter, { ...e.info, name, rank: rank || e.info.rank, created: Date.now(), merged: false, init: 'resized',
      enableLora: blockNames(r.adapter) });
    return { adapter: info, modules: this.namedErrors(r.adapter, r.errors), totalError: r.totalError };
  }

  /**
   * Combine adapters: [{ id, weight }], type 'linear' | 'cat' | 'svd' as PEFT's add_weighted_adapter.
   * @param {Array<string | { id: string, weight?: number }>} inputs
   * @param {{ type?: 'linear' | 'cat' | 'svd', rank?: number, name?: string | null }} [opts]
   */
  combine(inputs, { type = 'svd', rank = 0, name = null } = {}) {
    const list = inputs.map((x) => (typeof x === 'string' ? { id: x, weight: 1 } : x));
    const adapters = list.map((x) => this.entry(x.id).adapter);
    const r = this.core.combineAdapters(adapters, list.map((x) => x.weight ?? 1), { type, rank });
    const mods = r.adapter.modules();
    const info = this.register(r.adapter, { name, rank: mods[0]?.rank ?? 0, alpha: mods[0]?.rank ?? 0, init: `combined-${type}`,
      targets: [...new Set(mods.map((m) => this.model.modulePath(m.layer, m.slot).split('.').pop()))] });
    return { adapter: info, modules: this.namedErrors(r.adapter, r.errors) };
  }

  /**
   * Extract a LoRA adapter from a fine-tuned model of the same shape: the best rank-r approximation of each target's
   * W_tuned - W_base.
   * @param {any} tunedSource a model source like load()'s
   * @param {{ rank?: number, targets?: string[]|string, energy?: number, name?: string, signal?: AbortSignal, onProgress?: (e: object) => void }} [opts]
   */
  async extract(tunedSource, opts = {}) {
    this.requireWeights('extraction');
    const rank = opts.rank ?? 8;
    const targets = opts.targets ?? (this.model.arch === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj']);
    const spec = resolveLoraSpec(this.model, { rank, alpha: rank, targets });
    if (spec.embed || spec.head) {
      throw new UnsupportedError('extraction works on the linear layers of the blocks: leave the token embedding and lm_head out of targets');
    }
    const tuned = await loadModel(this.core, tunedSource, { signal: opts.signal, onProgress: opts.onProgress, tokenizer: this.tokenizer ?? undefined });
    try {
      // A llama2.c checkpoint and its Hugging Face export store q/k rows in different RoPE orders: compare like with like.
      const bc = this.model.config, tc = tuned.model.config;
      if (bc.arch === Arch.LLAMA && tc.arch === Arch.LLAMA && bc.ropeLayout !== tc.ropeLayout) {
        if (bc.ropeLayout === RopeLayout.INTERLEAVED) halfToInterleavedInPlace(tuned.model);
        else throw new EngineError('the base model uses interleaved RoPE and the tuned one rotate-half: load the base in Hugging Face form', { code: 'ROPE_LAYOUT_MISMATCH' });
      }
      const r = this.core.extractAdapter(this.model, tuned.model, spec.ranks, { energy: opts.energy ?? 0 });
      const mods = r.adapter.modules();
      const info = this.register(r.adapter, { name: opts.name ?? null, rank, alpha: rank, targets, init: 'extracted' });
      return { adapter: info, modules: this.namedErrors(r.adapter, r.errors), totalError: r.totalError, ranks: mods.map((m) => m.rank) };
    } finally {
      tuned.model.free();
    }
  }

  /**
   * Attach the adapters a call asks for: none, one id, a list of ids, or { id: weight } to mix.
   * @param {undefined|null|string|string[]|Record<string, number>} sel
   */
  useAdapters(sel) {
    let ids = [];
    let weights = [];
    if (sel === undefined || sel === null) {
      ids = [];
    } else if (typeof sel === 'string') {
      ids = [sel];
      weights = [1];
    } else if (Array.isArray(sel)) {
      ids = sel.slice();
      weights = sel.map(() => 1);
    } else if (typeof sel === 'object') {
      ids = Object.keys(sel);
      weights = ids.map((k) => sel[k]);
    } else {
      throw new InvalidArgumentError('adapter must be an id, a list of ids or an { id: weight } map');
    }
    const adapters = ids.map((id) => this.entry(id).adapter);
    for (const [i, a] of adapters.entries()) assertSafeMagnitudes(this.adapterTensors(a), `adapter ${ids[i]}`);
    this.model.setAdapters(adapters, weights);
  }

  /** An adapter's A and B matrices under their PEFT names (views into wasm memory). */
  *adapterTensors(adapter) {
    for (const m of adapter.modules()) {
      const name = `base_model.model.${this.model.modulePath(m.layer, m.slot)}`;
      const [a, b] = m.layer === -1 && m.slot === 0 ? ['lora_embedding_A', 'lora_embedding_B'] : ['lora_A.weight', 'lora_B.weight'];
      yield { name: `${name}.${a}`, values: adapter.view(m.A, m.rank * m.inFeatures) };
      yield { name: `${name}.${b}`, values: adapter.view(m.B, m.outFeatures * m.rank) };
    }
  }

  /**
   * Tokenize texts (strings, Blobs/Files or, in Node, { path } of files; see corpus.js) and pack them into
   * sequences with a held-out split of at most evalTokens tokens.
   * @param {any} texts
   * @param {{ seqLen: number, evalSplit?: number, seed?: number, evalTokens?: number,
   *   onTokenize?: (p: import('./corpus.js').TokenizeProgress) => void, signal?: AbortSignal }} opts
   */
  async prepareDataStreamed(texts, opts) {
    const tok = this.requireTokenizer();
    this.checkSeqLen(opts.seqLen);
    const { buffer } = await tokenizeCorpus(tok, typeof texts === 'string' ? [texts] : texts, {
      vocabSize: this.model.config.vocabSize, onProgress: opts.onTokenize, signal: opts.signal,
    });
    return this.packData(buffer, opts);
  }

  /** prepareDataStreamed for in-memory strings only, without waiting. */
  prepareData(texts, opts) {
    const tok = this.requireTokenizer();
    this.checkSeqLen(opts.seqLen);
    if (typeof texts === 'string') texts = [texts];
    return this.packData(tokenizeDocuments(tok, texts, this.model.config.vocabSize), opts);
  }

  /**
   * How many tokens training would see in texts (strings, or Files/Blobs as train takes them): every document
   * with the BOS/EOS tokens the model expects around it.
   * @param {any} texts
   * @param {{ signal?: AbortSignal }} [opts]
   * @returns {Promise<{ tokens: number, documents: number }>}
   */
  async countTokens(texts, opts = {}) {
    const tok = this.requireTokenizer();
    const { buffer, documents } = await tokenizeCorpus(tok, typeof texts === 'string' ? [texts] : texts, {
      vocabSize: this.model.config.vocabSize, signal: opts.signal,
    });
    return { tokens: buffer.length, documents };
  }

  /**
   * A conversation rendered with the model's chat template into the text train() and generate() take. A BOS the
   * template writes first is left out when the tokenizer starts every document with BOS itself, so it is not
   * doubled.
   * @param {{ role: string, content: string }[]} messages
   * @param {{ addGenerationPrompt?: boolean }} [opts]
   * @returns {string}
   */
  applyChatTemplate(messages, opts = {}) {
    const tok = this.requireTokenizer();
    const text = tok.applyChatTemplate(messages, opts);
    const bos = tok.addsBos && tok.bosId !== null ? tok.idToToken(tok.bosId) : null;
    return bos && text.startsWith(bos) ? text.slice(bos.length) : text;
  }

  checkSeqLen(seqLen) {
    const maxT = this.model.config.maxSeqLen;
    if (seqLen > maxT) throw new DataError(`sequence length ${seqLen} exceeds the model's ${maxT} positions`);
  }

  packData(stream, { seqLen, evalSplit = 0, seed = 0, evalTokens = Infinity }) {
    const seqs = packSequences(stream, seqLen, this.tokenizer?.eosId ?? 0);
    const maxEval = Math.max(1, Math.floor(evalTokens / seqLen));
    return { ...splitHeldOut(seqs, evalSplit, seed, maxEval), tokens: stream.length, sequences: seqs.length };
  }

  /**
   * Train an adapter (or, with id null and opts.full, every weight of the base model).
   * @param {string|null} id
   * @param {import('./corpus.js').CorpusSource | import('./corpus.js').CorpusSource[]} texts
   * @param {object & { full?: boolean, checkpoint?: { every: number, runId?: string, keep?: boolean }, resume?: string,
   *   signal?: AbortSignal, onTokenize?: (p: import('./corpus.js').TokenizeProgress) => void, onStep?: (r: object) => void,
   *   onEval?: (r: object) => void, onCheckpoint?: (c: { runId: string, step: number }) => void }} [opts] trainOptions
   *   fields; checkpoint: save the run to engine.adapters every `every` steps (deleted at the end unless keep);
   *   resume: the runId whose last checkpoint to continue from
   */
  async train(id, texts, opts = {}) {
    const { checkpoint, resume } = opts;
    const state = resume ? await this.adapters.resumeState(resume) : null;
    /** @type {TrainHooks} */
    const hooks = { signal: opts.signal, onStep: opts.onStep, onEval: opts.onEval, onTokenize: opts.onTokenize };
    const runId = checkpoint?.runId ?? resume ?? `run-${Date.now()}`;
    if (checkpoint?.every > 0) {
      hooks.checkpointEvery = checkpoint.every;
      hooks.onCheckpoint = async (/** @type {any} */ st) => {
        await this.adapters.saveCheckpoint(runId, st, id);
        opts.onCheckpoint?.({ runId, step: st.step });
      };
    }
    const summary = await this.trainFrom(id, texts, opts, state, hooks);
    if (checkpoint?.every > 0 && checkpoint.keep !== true) await this.adapters.deleteCheckpoint(runId).catch(() => {});
    return summary;
  }

  /**
   * The training run itself, from a checkpoint state or from the start.
   * @param {string|null} id @param {any} texts @param {any} opts @param {object | null} resumeState
   * @param {TrainHooks} hooks
   */
  async trainFrom(id, texts, opts, resumeState, hooks) {
    this.requireWeights('training');
    const o = trainOptions(opts);
    const data = await this.prepareDataStreamed(texts, { seqLen: o.seqLen, evalSplit: o.evalSplit, seed: o.seed, evalTokens: o.evalTokens,
      onTokenize: hooks.onTokenize, signal: hooks.signal });
    if (opts.evalSplit > 0 && data.eval.length === 0) {
      throw new DataError(`the text is shorter than two sequences of ${o.seqLen} tokens (${data.tokens} tokens): nothing can be held out `
        + 'for evaluation; use a shorter sequence length or no held-out split');
    }
    const full = id === null || id === undefined;
    if (full && !opts.full) throw new InvalidArgumentError('train needs an adapter id (or full: true to train every weight)');
    const entry = full ? null : this.entry(id);
    if (entry) this.model.setAdapters([entry.adapter]);
    else this.model.setAdapters([]);
    const trainer = new Trainer({ model: this.model, adapter: entry?.adapter ?? null, full, train: data.train, eval: data.eval,
      options: { ...o, dropout: opts.dropout ?? entry?.info.dropout ?? 0 }, state: resumeState });
    this.activeTrainer = trainer;
    try {
      let summary;
      try {
        summary = await trainer.run(hooks);
      } catch (err) {
        // A diverged adapter keeps its last good weights but is not exported or saved without an explicit override.
        if (entry && err instanceof NumericError) entry.info.diverged = err.message;
        throw err;
      }
      if (entry) {
        delete entry.info.diverged;
        entry.info.steps += summary.steps - (resumeState?.step ?? 0);
        entry.info.finalLoss = summary.evalLoss ?? summary.trainLossRecent;
        entry.info.updated = Date.now();
      }
      return { ...summary, trainSequences: data.train.length, evalSequences: data.eval.length, evalTokens: data.eval.length * o.seqLen,
        evalCapped: data.capped, dataTokens: data.tokens };
    } finally {
      this.activeTrainer = null;
      trainer.dispose();
    }
  }

  /**
   * Mean next-token loss and perplexity of texts under the base model plus the given adapters.
   * @param {string|string[]|any} texts
   * @param {{ adapter?: any, seqLen?: number, batchSize?: number, signal?: AbortSignal }} [opts] adapter: an id, a list
   *   of ids or { id: weight } (none: the base model); signal: stops reading streamed files
   */
  evaluate(texts, opts = {}) {
    this.requireWeights('evaluation');
    const seqLen = Math.min(opts.seqLen ?? 128, this.model.config.maxSeqLen);
    const list = typeof texts === 'string' ? [texts] : texts;
    if (Array.isArray(list) && list.some(isStreamedSource)) {
      // Files are read as they stream: the answer is then a promise.
      return this.prepareDataStreamed(list, { seqLen, signal: opts.signal }).then((data) => this.evaluatePrepared(data, seqLen, opts));
    }
    return this.evaluatePrepared(this.prepareData(texts, { seqLen, evalSplit: 0 }), seqLen, opts);
  }

  evaluatePrepared(data, seqLen, opts) {
    this.useAdapters(opts.adapter);
    const B = opts.batchSize ?? 4;
    this.model.reserve(Math.min(B, data.train.length), seqLen);
    return evaluateSequences(this.model, data.train, B);
  }

  /**
   * Generate text after a prompt.
   * @param {string} prompt
   * @param {{ adapter?: any, maxTokens?: number, minTokens?: number, ignoreEos?: boolean, temperature?: number,
   *   topK?: number, topP?: number, seed?: number, stop?: string[], addBos?: boolean,
   *   onToken?: (t: { id: number, text: string }) => void, signal?: AbortSignal }} [opts] minTokens: EOS cannot be
   *   chosen before this many tokens; ignoreEos: never (benchmarks, long samples), as llama.cpp's --ignore-eos
   */
  async generate(prompt, opts = {}) {
    this.requireWeights('generation');
    const tok = this.requireTokenizer();
    if (typeof prompt !== 'string') throw new InvalidArgumentError('prompt must be a string');
    const samp = samplingOptions(opts);
    const maxTokens = opts.maxTokens ?? 128;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new InvalidArgumentError(`maxTokens must be a non-negative integer, got ${maxTokens}`);
    const minTokens = opts.minTokens ?? 0;
    if (!Number.isInteger(minTokens) || minTokens < 0) throw new InvalidArgumentError(`minTokens must be a non-negative integer, got ${minTokens}`);
    const ignoreEos = opts.ignoreEos ?? false;
    if (typeof ignoreEos !== 'boolean') throw new InvalidArgumentError(`ignoreEos must be true or false, got ${JSON.stringify(ignoreEos)}`);
    const stops = (opts.stop ?? []).filter((s) => typeof s === 'string' && s.length > 0);
    const model = this.model;
    const cfg = model.config;
    this.useAdapters(opts.adapter);
    let ids = tok.encode(prompt);
    const addBos = opts.addBos ?? tok.addsBos;
    if (addBos && tok.bosId !== null) ids = [tok.bosId, ...ids];
    if (ids.length === 0) {
      // An empty prompt on a model without BOS: start from its end-of-text token, as GPT-2 does.
      if (tok.eosId === null) throw new InvalidArgumentError('the prompt is empty and the model has no BOS/EOS token to start from');
      ids = [tok.eosId];
    }
    const context = cfg.maxSeqLen;
    if (context < 2 && maxTokens > 0) {
      throw new InvalidArgumentError(`this model has ${context} position: it cannot read a token and generate another`);
    }
    // A prompt that leaves no room keeps its most recent tokens and at least half the context for the answer;
    // the result says how many were dropped.
    const room = Math.min(maxTokens, Math.floor(context / 2));
    const dropped = Math.max(0, ids.length + room - context);
    if (dropped > 0) ids = ids.slice(dropped);
    const limit = Math.min(context, ids.length + maxTokens);
    model.reserve(1, limit, { lastLogits: true });
    const rng = new Rng(opts.seed ?? 0);
    const decoder = tok.createStreamDecoder();
    // Decode in context: a SentencePiece decoder drops the leading space of the first piece of a string.
    for (const id of ids.slice(-4)) decoder.push(id);
    const started = performance.now();
    const out = [];
    let text = '';
    let emitted = 0;
    let finishReason = 'length';
    const emit = (upTo) => {
      if (upTo > emitted && opts.onToken) opts.onToken({ id: out[out.length - 1], text: text.slice(emitted, upTo) });
      emitted = Math.max(emitted, upTo);
    };
    if (maxTokens > 0) model.forward(ids, { lastLogits: true });
    for (let i = 0; i < maxTokens; i++) {
      throwIfAborted(opts.signal);
      // Ids past the tokenizer's vocabulary (padding rows of the embedding) are never produced.
      const logits = model.logits().subarray(0, tok.vocabSize);
      if (tok.eosId !== null && (ignoreEos || out.length < minTokens)) logits[tok.eosId] = -Infinity;
      const next = sampleToken(logits, samp, rng);
      if (next === tok.eosId) {
        finishReason = 'eos';
        break;
      }
      out.push(next);
      text += decoder.push(next);
      const hit = firstStop(text, stops);
      if (hit) {
        text = text.slice(0, hit.index);
        finishReason = 'stop';
        break;
      }
      emit(text.length - heldBack(text, stops));
      const pos = ids.length + out.length - 1;
      if (pos + 1 >= limit) break;
      model.forward([next], { pos0: pos });
      if (i % 8 === 7) await yieldToEventLoop();
    }
    if (finishReason !== 'stop') {
      text += decoder.flush();
      const hit = firstStop(text, stops);
      if (hit) {
        text = text.slice(0, hit.index);
        finishReason = 'stop';
      }
    }
    emit(text.length);
    const seconds = (performance.now() - started) / 1000;
    return { text, ids: out, promptIds: ids, promptTokensDropped: dropped, finishReason, tokensPerSecond: out.length / seconds };
  }

  /**
   * An adapter's files. A PiSSA adapter is written as a plain LoRA of rank 2r for the original base. An adapter
   * whose last training run diverged is refused in every format unless opts.allowDiverged.
   * - format 'peft' (default): { config, files: { adapter_config.json, adapter_model.safetensors } }; with
   *   portable: true, rsLoRA and the rank/alpha patterns' scales are folded into lora_B under one plain lora_alpha.
   * - format 'gguf': { files: { adapter.gguf } }, the LoRA file llama.cpp's --lora loads (dtype 'f16' or 'f32').
   * @param {string} id
   * @param {{ format?: 'peft'|'gguf', portable?: boolean, dtype?: 'f16'|'f32', allowDiverged?: boolean }} [opts]
   */
  exportAdapter(id, opts = {}) {
    const e = this.entry(id);
    const format = opts.format ?? 'peft';
    if (format !== 'peft' && format !== 'gguf') throw new InvalidArgumentError(`format must be "peft" or "gguf", got ${JSON.stringify(format)}`);
    if (e.info.diverged && !opts.allowDiverged) {
      throw new NumericError(`adapter ${id} is not exported: its last training run diverged (${e.info.diverged}); `
        + 'pass allowDiverged: true to export its last good weights anyway', { code: 'DIVERGED' });
    }
    const plain = e.adapter.isPissa ? e.adapter.pissaToLora() : e.adapter;
    try {
      if (format === 'gguf') {
        return { files: { [GGUF_ADAPTER_FILE]: adapterToGguf(this.core, this.model, plain, { dtype: opts.dtype, name: e.info.name }) } };
      }
      const base = recordedBase(this.ref);
      return adapterToPeft(this.model, plain, {
        baseModel: base.id, revision: base.revision, baseFingerprint: this.fingerprint, dropout: e.info.dropout,
        portable: opts.portable ?? false,
        extraMetadata: { 'weblora.steps': String(e.info.steps), 'weblora.final_loss': String(e.info.finalLoss ?? '') },
      });
    } finally {
      if (plain !== e.adapter) plain.free();
    }
  }

  /**
   * Load PEFT files onto this base model. The base model the files name (base_model_name_or_path and revision,
   * or weblora's base fingerprint) is compared with this one (identity.js): the result is the adapter's
   * baseModelCheck, and a doubt is reported to opts.onWarning (without one, a mismatch goes to console.warn).
   * @param {Record<string, string | Uint8Array | ArrayBuffer>} files
   * @param {{ name?: string, steps?: number, finalLoss?: number | null, allowFingerprintMismatch?: boolean,
   *   onWarning?: (w: { code: string } & import('../storage/identity.js').BaseModelCheck) => void }} [opts]
   */
  importAdapter(files, opts = {}) {
    const adapter = peftToAdapter(this.core, this.model, files, { baseFingerprint: this.fingerprint,
      allowFingerprintMismatch: !!opts.allowFingerprintMismatch });
    const cfgText = typeof files['adapter_config.json'] === 'string' ? files['adapter_config.json']
      : new TextDecoder().decode(files['adapter_config.json']);
    const cfg = JSON.parse(cfgText);
    // peftToAdapter has refused weights that are not bytes.
    const weights = /** @type {Uint8Array | ArrayBuffer} */ (files[WEIGHTS_FILE]);
    const fileFingerprint = this.core.parseSafetensors(weights instanceof ArrayBuffer ? new Uint8Array(weights) : weights).metadata[FINGERPRINT_KEY];
    const baseModelCheck = checkAdapterBase({ nameOrPath: cfg.base_model_name_or_path, revision: cfg.revision, fingerprint: fileFingerprint },
      { ref: this.ref, fingerprint: this.fingerprint });
    const info = this.register(adapter, {
      name: opts.name ?? null, rank: cfg.r, alpha: cfg.lora_alpha, targets: cfg.target_modules, useRslora: !!cfg.use_rslora,
      dora: !!cfg.use_dora, enableLora: blockNames(adapter), rankPattern: cfg.rank_pattern ?? {}, alphaPattern: cfg.alpha_pattern ?? {},
      dropout: cfg.lora_dropout ?? 0, init: 'imported',
      steps: opts.steps ?? 0, finalLoss: opts.finalLoss ?? null, baseModelCheck,
    });
    if (baseModelCheck.level) {
      const warning = { code: baseModelCheck.status === 'mismatch' ? 'BASE_MODEL_MISMATCH' : 'BASE_MODEL_UNVERIFIED', ...baseModelCheck };
      if (opts.onWarning) opts.onWarning(warning);
      else if (warning.level === 'warning') console.warn(`weblora: ${warning.message}`);
    }
    return info;
  }

  /**
   * The base model with every weight as it is now (merged adapters included): Hugging Face files (config.json and
   * model.safetensors), or with format 'gguf' one model.gguf with the tokenizer that llama.cpp runs (dtype 'f16'
   * or 'f32').
   * @param {{ format?: 'hf'|'gguf', dtype?: 'f16'|'f32', name?: string }} [opts]
   */
  exportModel(opts = {}) {
    this.requireWeights('exporting the model');
    const format = opts.format ?? 'hf';
    if (format === 'gguf') return { [GGUF_MODEL_FILE]: modelToGguf(this.core, this.model, this.tokenizer, { dtype: opts.dtype, name: opts.name ?? recordedBase(this.ref).id }) };
    if (format !== 'hf') throw new InvalidArgumentError(`format must be "hf" or "gguf", got ${JSON.stringify(format)}`);
    return {
      'config.json': JSON.stringify(hfConfig(this.model), null, 2),
      'model.safetensors': modelToSafetensors(this.model),
    };
  }

  /** Frees the model and its adapters and stops the core's threads; of a dead core, only its threads are stopped. */
  dispose() {
    if (!this.core.wasm.aborted) {
      for (const id of [...this.loaded.keys()]) this.freeAdapter(id);
      this.model.free();
    }
    this.core.stopThreads();
  }
}

// Every API method first refuses an engine whose core has died (an abort or a trap: its memory may hold half-done
// work), with the WasmAbortError of that first failure, even methods that would not call into the core.
for (const name of Object.keys(ENGINE_METHODS)) {
  const proto = /** @type {any} */ (LocalEngine.prototype);
  const method = proto[name];
  proto[name] = function (/** @type {any[]} */ ...args) {
    this.core.wasm.assertAlive();
    return method.apply(this, args);
  };
}

/** The earliest occurrence of any stop string. */
function firstStop(text, stops) {
  let best = null;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (!best || i < best.index)) best = { index: i, stop: s };
  }
  return best;
}

/** Length of the longest suffix of text that could still grow into a stop string (not streamed yet). */
function heldBack(text, stops) {
  let n = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, text.length); k > n; k--) {
      if (text.endsWith(s.slice(0, k))) {
        n = k;
        break;
      }
    }
  }
  return n;
}
