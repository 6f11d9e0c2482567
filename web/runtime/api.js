// api.js: the public engine API, listed once. LocalEngine (engine.js) implements every method; the worker
// (worker.js) serves exactly these over postMessage; the client (client.js) builds its Engine from them; index.d.ts
// declares them (tests/js/api.test.js holds the four together). Each entry says how a call crosses the thread
// boundary: which arguments name adapters (sent as their ids), and which callbacks in the options are events.

/**
 * How one argument is sent: 'adapter' (an adapter handle or its id, sent as the id), 'adapterOrNull' (the same, or
 * null), 'weightedAdapters' (a list of handles, ids or { adapter | id, weight }, sent as [{ id, weight }]),
 * 'copy' (a typed array sent as a copy, so the caller's stays usable), 'options' (an object whose callbacks and
 * signal stay on the caller's side; its `adapter` field is an adapter selection), 'value' (anything else).
 * @typedef {'adapter' | 'adapterOrNull' | 'weightedAdapters' | 'copy' | 'options' | 'value'} ArgKind
 */

/**
 * @typedef {object} MethodSpec
 * @property {ArgKind[]} args in order
 * @property {Record<string, string>} [events] option callbacks and the event name each is called through
 * @property {boolean} [run] the caller gets { done, abort } at once instead of a promise (a long job)
 */

/** The engine's methods (engine.x(...) in the client, LocalEngine.prototype.x in one thread). @type {Record<string, MethodSpec>} */
export const ENGINE_METHODS = {
  createAdapter: { args: ['options'] },
  freeAdapter: { args: ['adapter'] },
  train: { args: ['adapterOrNull', 'value', 'options'], run: true,
    events: { onStep: 'step', onEval: 'eval', onCheckpoint: 'checkpoint', onTokenize: 'tokenize' } },
  countTokens: { args: ['value', 'options'] },
  applyChatTemplate: { args: ['value', 'options'] },
  evaluate: { args: ['value', 'options'] },
  generate: { args: ['value', 'options'], events: { onToken: 'token' } },
  exportAdapter: { args: ['adapter', 'options'] },
  importAdapter: { args: ['value', 'options'], events: { onWarning: 'warning' } },
  merge: { args: ['adapter', 'value'] },
  unmerge: { args: ['adapter'] },
  resize: { args: ['adapter', 'options'] },
  combine: { args: ['weightedAdapters', 'options'] },
  extract: { args: ['value', 'options'], events: { onProgress: 'progress' } },
  lowRankApprox: { args: ['copy', 'value', 'value', 'options'] },
  exportModel: { args: ['options'] },
};

/** The adapter store's methods (engine.adapters.x(...); IndexedDB, optionally encrypted). @type {Record<string, MethodSpec>} */
export const STORE_METHODS = {
  save: { args: ['value', 'adapter', 'options'] },
  load: { args: ['value', 'options'], events: { onWarning: 'warning' } },
  list: { args: [] },
  rename: { args: ['value', 'value'] },
  delete: { args: ['value'] },
  export: { args: ['value'] },
  import: { args: ['value', 'options'], events: { onWarning: 'warning' } },
  checkpoints: { args: [] },
  deleteCheckpoint: { args: ['value'] },
};

/** The prefix of store methods in the worker protocol ('adapters.save'). */
export const STORE_PREFIX = 'adapters.';

/**
 * The spec of a method as the worker protocol names it ('generate', 'adapters.list'), or undefined.
 * @param {string} name
 * @returns {MethodSpec | undefined}
 */
export function methodSpec(name) {
  const table = name.startsWith(STORE_PREFIX) ? STORE_METHODS : ENGINE_METHODS;
  const key = name.startsWith(STORE_PREFIX) ? name.slice(STORE_PREFIX.length) : name;
  return Object.hasOwn(table, key) ? table[key] : undefined;
}
