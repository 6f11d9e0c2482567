// worker.js: the module Worker (or Node worker_thread) that owns the wasm instance. It runs one LocalEngine and
// answers the client's messages: calls matched by id, progress events back, aborts, errors with their code and
// stack, big buffers transferred. Calls run one at a time, in order, so a generation never interleaves with a
// training step on the same model.
import { node } from '#platform';
import { BaseModelMismatchError, serializeError, WebLoRAError, UnsupportedError } from './errors.js';
import { LocalEngine } from './engine.js';
import { AdapterStore } from './store.js';

/**
 * The channel to the client: parentPort in Node, the Worker global in browsers. Synchronous, because some
 * bundlers' worker formats (Vite's default) cannot take a top-level await.
 */
function connect() {
  if (node) {
    const { parentPort } = node;
    if (!parentPort) throw new Error('web/worker.js must run in a Worker');
    return {
      post: (msg, transfer) => parentPort.postMessage(msg, transfer ?? []),
      listen: (fn) => parentPort.on('message', fn),
    };
  }
  return {
    post: (msg, transfer) => self.postMessage(msg, transfer ?? []),
    listen: (fn) => self.addEventListener('message', (e) => fn(e.data)),
  };
}

/** ArrayBuffers inside a result, to transfer instead of clone. */
function transferables(value, out = new Set(), depth = 0) {
  if (!value || typeof value !== 'object' || depth > 4) return out;
  if (value instanceof ArrayBuffer) out.add(value);
  else if (ArrayBuffer.isView(value)) {
    if (value.buffer instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength) out.add(value.buffer);
  } else if (Array.isArray(value)) value.forEach((v) => transferables(v, out, depth + 1));
  else if (Object.getPrototypeOf(value) === Object.prototype) Object.values(value).forEach((v) => transferables(v, out, depth + 1));
  return out;
}

const port = connect();
/** @type {LocalEngine | null} */
let engine = null;
/** @type {AdapterStore | null} */
let store = null;
let storeOptions = {};
const controllers = new Map();
let queue = Promise.resolve();

async function getStore() {
  if (store) return store;
  if (!globalThis.indexedDB && !storeOptions.indexedDB) {
    throw new UnsupportedError('IndexedDB is not available here: adapters cannot be stored (export them as files instead)');
  }
  store = await AdapterStore.open(storeOptions);
  return store;
}

function requireEngine() {
  if (!engine) throw new WebLoRAError('the engine is not loaded (or was disposed)', { code: 'NOT_LOADED' });
  return engine;
}

/**
 * Import options with the warning callback: events to the client when it listens (reportWarnings), else the
 * engine's own console note.
 */
function withWarnings(ctx, opts = {}) {
  const { reportWarnings, ...rest } = opts ?? {};
  return reportWarnings ? { ...rest, onWarning: (w) => ctx.event('warning', w) } : rest;
}

/** Adapter files from the store (AdapterStore.load gives { meta, config, weights }) as the engine's import expects them. */
function filesOf(record) {
  return { 'adapter_config.json': JSON.stringify(record.config), 'adapter_model.safetensors': record.weights };
}

const methods = {
  async load(ctx, source, options = {}) {
    storeOptions = options.store ?? {};
    const { store: _s, ...rest } = options;
    engine = await LocalEngine.load(source, { ...rest, signal: ctx.signal, onProgress: (e) => ctx.event('progress', e) });
    return engine.info();
  },
  info: () => requireEngine().info(),
  createAdapter: (ctx, opts) => requireEngine().createAdapter(opts),
  adapterInfo: (ctx, id) => requireEngine().adapterInfo(id),
  listLoadedAdapters: () => requireEngine().listAdapters(),
  freeAdapter: (ctx, id) => requireEngine().freeAdapter(id),
  async train(ctx, id, texts, opts = {}) {
    const e = requireEngine();
    const { checkpoint, resume, ...trainOpts } = opts;
    let resumeState = null;
    if (resume) {
      const s = await getStore();
      const cp = /** @type {any} */ (await s.loadCheckpoint(resume));
      if (!cp) throw new WebLoRAError(`no checkpoint for run "${resume}"`, { code: 'NOT_FOUND' });
      if (cp.config?.fingerprint && cp.config.fingerprint !== e.fingerprint) {
        throw new BaseModelMismatchError(`checkpoint "${resume}" was saved on another base model (fingerprint ${cp.config.fingerprint}); `
          + `the loaded model's is ${e.fingerprint}`, { details: { runId: resume, expected: cp.config.fingerprint, actual: e.fingerprint } });
      }
      resumeState = decodeCheckpoint(cp);
    }
    const hooks = {
      signal: ctx.signal,
      onStep: (r) => ctx.event('step', r),
      onEval: (r) => ctx.event('eval', r),
      onTokenize: (r) => ctx.event('tokenize', r),
    };
    if (checkpoint?.every > 0) {
      const runId = checkpoint.runId ?? resume ?? `run-${Date.now()}`;
      hooks.checkpointEvery = checkpoint.every;
      hooks.onCheckpoint = async (state) => {
        const s = await getStore();
        await s.saveCheckpoint(runId, encodeCheckpoint(state, id, e.fingerprint));
        ctx.event('checkpoint', { runId, step: state.step });
      };
    }
    const summary = await e.train(id, texts, { ...trainOpts, resume: resumeState }, hooks);
    if (checkpoint?.every > 0 && checkpoint.keep !== true) {
      const s = await getStore();
      await s.deleteCheckpoint(checkpoint.runId ?? resume).catch(() => {});
    }
    return summary;
  },
  evaluate: (ctx, sel, texts, opts) => requireEngine().evaluate(sel, texts, opts),
  countTokens: (ctx, texts) => requireEngine().countTokens(texts, { signal: ctx.signal }),
  applyChatTemplate: (ctx, messages, opts) => requireEngine().applyChatTemplate(messages, opts),
  generate: (ctx, prompt, opts = {}) => requireEngine().generate(prompt, { ...opts, signal: ctx.signal,
    onToken: opts.streamTokens ? (t) => ctx.event('token', t) : undefined }),
  exportAdapter: (ctx, id, opts) => requireEngine().exportAdapter(id, opts),
  importAdapter: (ctx, files, opts) => requireEngine().importAdapter(files, withWarnings(ctx, opts)),
  exportModel: (ctx, opts) => requireEngine().exportModel(opts),
  lowRankApprox: (ctx, matrix, m, n, opts) => requireEngine().core.lowRankApprox(matrix, m, n, opts),
  merge: (ctx, id, weight) => requireEngine().merge(id, weight),
  unmerge: (ctx, id) => requireEngine().unmerge(id),
  resize: (ctx, id, opts) => requireEngine().resize(id, opts),
  combine: (ctx, inputs, opts) => requireEngine().combine(inputs, opts),
  extract: (ctx, source, opts = {}) => requireEngine().extract(source, { ...opts, signal: ctx.signal, onProgress: (e) => ctx.event('progress', e) }),
  // IndexedDB store
  async storeSave(ctx, name, id, opts = {}) {
    const e = requireEngine();
    const info = e.adapterInfo(id);
    const peft = /** @type {import('./peft.js').PeftFiles} */ (e.exportAdapter(id, { allowDiverged: !!opts.allowDiverged }));
    const s = await getStore();
    await s.save(name, {
      config: peft.config, weights: peft.files['adapter_model.safetensors'], baseFingerprint: e.fingerprint,
      baseModel: e.name, meta: { steps: info.steps, finalLoss: info.finalLoss },
    }, { overwrite: !!opts.overwrite });
    return (await s.list()).find((r) => r.name === name);
  },
  async storeLoad(ctx, name, opts = {}) {
    const e = requireEngine();
    const s = await getStore();
    const record = await s.load(name, { baseFingerprint: opts.allowFingerprintMismatch ? undefined : e.fingerprint });
    return e.importAdapter(filesOf(record), withWarnings(ctx, { reportWarnings: opts.reportWarnings, name, steps: record.meta.steps,
      finalLoss: record.meta.finalLoss, allowFingerprintMismatch: !!opts.allowFingerprintMismatch }));
  },
  storeList: async () => (await getStore()).list(),
  storeRename: async (ctx, from, to) => (await getStore()).rename(from, to),
  storeDelete: async (ctx, name) => (await getStore()).delete(name),
  storeExport: async (ctx, name) => (await getStore()).exportFiles(name),
  async storeImport(ctx, files, opts = {}) {
    const e = requireEngine();
    const s = await getStore();
    // The engine's parser validates the files (and that they fit this model) before they are stored.
    /** @type {Record<string, string | Uint8Array>} */
    const byName = {};
    for (const f of files) {
      const data = globalThis.Blob && f.data instanceof globalThis.Blob ? new Uint8Array(await f.data.arrayBuffer()) : f.data;
      byName[String(f.name).split(/[\\/]/).pop()] = data;
    }
    const trial = e.importAdapter(byName, withWarnings(ctx, { reportWarnings: opts.reportWarnings,
      allowFingerprintMismatch: !!opts.allowFingerprintMismatch }));
    e.freeAdapter(trial.id);
    await s.importFiles(files, { name: opts.name, baseFingerprint: e.fingerprint, baseModel: e.name });
    return { ...(await s.list()).find((r) => r.name === opts.name), baseModelCheck: trial.baseModelCheck };
  },
  listCheckpoints: async () => (await getStore()).listCheckpoints(),
  deleteCheckpoint: async (ctx, runId) => (await getStore()).deleteCheckpoint(runId),
  dispose() {
    engine?.dispose();
    engine = null;
    return true;
  },
};

/** Checkpoints cross into IndexedDB as bytes. */
function encodeCheckpoint(state, adapterId, fingerprint) {
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

function decodeCheckpoint(cp) {
  const params = new Float32Array(cp.adapterBytes.buffer.slice(cp.adapterBytes.byteOffset, cp.adapterBytes.byteOffset + cp.adapterBytes.byteLength));
  const opt = new Float32Array(cp.optimizerBytes.buffer.slice(cp.optimizerBytes.byteOffset, cp.optimizerBytes.byteOffset + cp.optimizerBytes.byteLength));
  const half = opt.length / 2;
  return {
    step: cp.step, microStep: cp.config?.microStep ?? 0, position: cp.position, params,
    m: half ? opt.subarray(0, half) : null, v: half ? opt.subarray(half) : null, history: cp.config?.history ?? [],
  };
}

port.listen((msg) => {
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === 'abort') {
    controllers.get(msg.id)?.abort(new DOMException(msg.reason ?? 'aborted', 'AbortError'));
    return;
  }
  if (msg.type !== 'call') return;
  const controller = new AbortController();
  controllers.set(msg.id, controller);
  const ctx = {
    signal: controller.signal,
    event: (name, data) => port.post({ type: 'event', id: msg.id, name, data }),
  };
  queue = queue.then(async () => {
    try {
      const fn = methods[msg.method];
      if (!fn) throw new WebLoRAError(`unknown method ${msg.method}`, { code: 'BAD_CALL' });
      if (controller.signal.aborted) throw controller.signal.reason;
      const value = await fn(ctx, ...(msg.args ?? []));
      port.post({ type: 'result', id: msg.id, value }, [...transferables(value)]);
    } catch (err) {
      port.post({ type: 'error', id: msg.id, error: serializeError(err) });
    } finally {
      controllers.delete(msg.id);
    }
  });
});
port.post({ type: 'ready' });
