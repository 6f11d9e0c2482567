// library.js: an engine's saved adapters and training checkpoints (engine.adapters). It joins the IndexedDB store
// (store.js, opened on first use) to the loaded model: records are checked against the model's fingerprint,
// imported files are validated by loading them before they are stored, and checkpoints travel as bytes.
import { BaseModelMismatchError, NotFoundError } from '../errors.js';
import { AdapterStore } from './store.js';

/** Adapter files from the store (AdapterStore.load gives { meta, config, weights }) as importAdapter takes them. */
function filesOf(record) {
  return { 'adapter_config.json': JSON.stringify(record.config), 'adapter_model.safetensors': record.weights };
}

/** A training state (Trainer's checkpoint hook) as the store keeps it: bytes plus a small config. */
export function encodeCheckpoint(state, adapterId, fingerprint) {
  const opt = state.m ? new Float32Array(state.m.length + state.v.length) : new Float32Array(0);
  if (state.m) {
    opt.set(state.m);
    opt.set(state.v, state.m.length);
  }
  return {
    adapterBytes: new Uint8Array(state.params.buffer.slice(0)),
    optimizerBytes: new Uint8Array(opt.buffer),
    position: state.position,
    step: state.step,
    config: { adapterId, fingerprint, microStep: state.microStep, totalSteps: state.totalSteps, options: state.options, history: state.history },
  };
}

/** The inverse of encodeCheckpoint: the state Trainer resumes from. */
export function decodeCheckpoint(cp) {
  const floats = (/** @type {Uint8Array} */ b) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  const params = floats(cp.adapterBytes);
  const opt = floats(cp.optimizerBytes);
  const half = opt.length / 2;
  return {
    step: cp.step, microStep: cp.config?.microStep ?? 0, position: cp.position, params,
    m: half ? opt.subarray(0, half) : null, v: half ? opt.subarray(half) : null, history: cp.config?.history ?? [],
  };
}

/** The stored adapters and checkpoints of one engine (its `adapters`). */
export class AdapterLibrary {
  /**
   * @param {import('../engine/engine.js').LocalEngine} engine
   * @param {import('./store.js').StoreOptions} [storeOptions] dbName, passphrase, indexedDB (Node: fake-indexeddb)
   */
  constructor(engine, storeOptions = {}) {
    this.engine = engine;
    this.storeOptions = storeOptions;
    /** @type {Promise<AdapterStore> | null} */
    this.opening = null;
  }

  /** The IndexedDB store, opened on first use (a failed open is retried on the next call); refused once the core died. */
  store() {
    this.engine.core.wasm.assertAlive();
    if (!this.opening) {
      this.opening = AdapterStore.open(this.storeOptions);
      this.opening.catch(() => { this.opening = null; });
    }
    return this.opening;
  }

  /**
   * Save a loaded adapter under a name; one whose last training run diverged is refused unless allowDiverged.
   * @param {string} name @param {string} id @param {{ overwrite?: boolean, allowDiverged?: boolean }} [opts]
   */
  async save(name, id, opts = {}) {
    const e = this.engine;
    const info = e.adapterInfo(id);
    const peft = /** @type {import('../formats/peft-save.js').PeftFiles} */ (e.exportAdapter(id, { allowDiverged: !!opts.allowDiverged }));
    const s = await this.store();
    await s.save(name, {
      config: peft.config, weights: peft.files['adapter_model.safetensors'], baseFingerprint: e.fingerprint,
      baseModel: e.name, meta: { steps: info.steps, finalLoss: info.finalLoss },
    }, { overwrite: !!opts.overwrite });
    return (await s.list()).find((r) => r.name === name);
  }

  /**
   * Load a saved adapter onto the model (refused when saved on another base, unless allowFingerprintMismatch).
   * @param {string} name @param {{ allowFingerprintMismatch?: boolean, onWarning?: (w: object) => void }} [opts]
   */
  async load(name, opts = {}) {
    const e = this.engine;
    const s = await this.store();
    const record = await s.load(name, { baseFingerprint: opts.allowFingerprintMismatch ? undefined : e.fingerprint });
    return e.importAdapter(filesOf(record), { onWarning: opts.onWarning, name, steps: record.meta.steps,
      finalLoss: record.meta.finalLoss, allowFingerprintMismatch: !!opts.allowFingerprintMismatch });
  }

  async list() {
    return (await this.store()).list();
  }

  /** @param {string} from @param {string} to */
  async rename(from, to) {
    return (await this.store()).rename(from, to);
  }

  /** @param {string} name */
  async delete(name) {
    return (await this.store()).delete(name);
  }

  /** @param {string} name */
  async export(name) {
    return (await this.store()).exportFiles(name);
  }

  /**
   * Store PEFT files under a name, after checking that they load on this model.
   * @param {Array<{ name: string, data: Uint8Array | string | Blob }>} files
   * @param {{ name: string, allowFingerprintMismatch?: boolean, onWarning?: (w: object) => void }} opts
   */
  async import(files, opts) {
    const e = this.engine;
    const s = await this.store();
    /** @type {Record<string, string | Uint8Array>} */
    const byName = {};
    for (const f of files) {
      const data = globalThis.Blob && f.data instanceof globalThis.Blob ? new Uint8Array(await f.data.arrayBuffer()) : f.data;
      byName[String(f.name).split(/[\\/]/).pop()] = /** @type {string | Uint8Array} */ (data);
    }
    const trial = e.importAdapter(byName, { onWarning: opts.onWarning, allowFingerprintMismatch: !!opts.allowFingerprintMismatch });
    e.freeAdapter(trial.id);
    await s.importFiles(Object.entries(byName).map(([name, data]) => ({ name, data })), { name: opts.name, baseFingerprint: e.fingerprint,
      baseModel: e.name });
    return { ...(await s.list()).find((r) => r.name === opts.name), baseModelCheck: trial.baseModelCheck };
  }

  async checkpoints() {
    return (await this.store()).listCheckpoints();
  }

  /** @param {string} runId */
  async deleteCheckpoint(runId) {
    return (await this.store()).deleteCheckpoint(runId);
  }

  /**
   * Write a training state as the run's checkpoint.
   * @param {string} runId @param {object} state Trainer's checkpoint @param {string} adapterId
   */
  async saveCheckpoint(runId, state, adapterId) {
    await (await this.store()).saveCheckpoint(runId, encodeCheckpoint(state, adapterId, this.engine.fingerprint));
  }

  /**
   * The state to resume a run from: its checkpoint, refused when it was saved on another base model.
   * @param {string} runId
   */
  async resumeState(runId) {
    const e = this.engine;
    const cp = /** @type {any} */ (await (await this.store()).loadCheckpoint(runId));
    if (!cp) throw new NotFoundError(`no checkpoint for run "${runId}"`, { details: { runId } });
    if (cp.config?.fingerprint && cp.config.fingerprint !== e.fingerprint) {
      throw new BaseModelMismatchError(`checkpoint "${runId}" was saved on another base model (fingerprint ${cp.config.fingerprint}); `
        + `the loaded model's is ${e.fingerprint}`, { details: { runId, expected: cp.config.fingerprint, actual: e.fingerprint } });
    }
    return decodeCheckpoint(cp);
  }
}
