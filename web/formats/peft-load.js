// peft-load.js: PEFT files (adapter_config.json + adapter_model.safetensors) read into a core Adapter, with a clear
// error for everything in them that cannot be used.
import { AdapterModelMismatchError, AdapterShapeError, BaseModelMismatchError, InvalidAdapterError, UnsupportedAdapterError } from '../errors.js';
import { Adapter, EMBED_SLOT, MODEL_LAYER } from '../core/core.js';
import {
  ALL_LINEAR, CONFIG_FILE, ENABLE_LORA_KEY, FINGERPRINT_KEY, KEY_PREFIX, PEFT_DEFAULT_ALPHA, PEFT_DEFAULT_RANK, WEIGHTS_FILE,
  compileRegex, entryAt, entryOf, factorKey, fullMatchRegex, getPatternKey, isAlpha, isRank, isTargeted, listSome,
  moduleTable, patternEntries, patternValue, permuteRopeRows, qkvMask, uniqueSorted,
} from './peft.js';
import { halfPrecisionMixup, readSafetensors } from './safetensors.js';

/**
 * @typedef {import('./peft.js').ModuleEntry} ModuleEntry
 * @typedef {import('./peft.js').ModuleTable} ModuleTable
 * @typedef {import('./peft.js').TargetRule} TargetRule
 */

// init_lora_weights values whose adapters only work on a base model PEFT modified (residual or quantized weights).
const BASE_CHANGING_INITS = ['pissa', 'olora', 'corda', 'loftq'];
const FLOAT_DTYPES = ['F32', 'F16', 'BF16', 'F64'];

/**
 * @typedef {object} PeftConfigInfo the parts of adapter_config.json that decide which modules and scales
 * @property {number} r
 * @property {number} alpha
 * @property {[string, number][]} rankPattern
 * @property {[string, number][]} alphaPattern
 * @property {boolean} useRslora
 * @property {boolean} useDora DoRA modules (use_dora): each has a lora_magnitude_vector
 * @property {TargetRule | null} rule null when target_modules is absent (the file's tensors decide)
 * @property {string[] | null} modulesToSave
 */

/** @param {unknown} v */
const isAbsent = (v) => v === undefined || v === null;
/** @param {unknown} v */
const isEmpty = (v) => isAbsent(v) || v === false || (Array.isArray(v) && v.length === 0) ||
  (typeof v === 'object' && v !== null && Object.keys(v).length === 0) || v === '';

/** @param {unknown} v @param {string} what @param {ModuleTable} table @returns {string[] | RegExp | null} */
function namesOrRegex(v, what, table) {
  if (isAbsent(v)) return null;
  if (typeof v === 'string') {
    if (v.toLowerCase() === ALL_LINEAR) return uniqueSorted(table.modules.map((m) => m.slotName));
    return fullMatchRegex(v, `${CONFIG_FILE}: ${what}`, InvalidAdapterError);
  }
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  throw new InvalidAdapterError(`${CONFIG_FILE}: ${what} must be a list of module names or a regex string, got ${JSON.stringify(v)}`);
}

/**
 * Validate adapter_config.json and extract what loading needs.
 * @param {Record<string, any>} c
 * @param {ModuleTable} table
 * @returns {PeftConfigInfo}
 */
function parseConfig(c, table) {
  const bad = (msg) => new InvalidAdapterError(`${CONFIG_FILE}: ${msg}`);
  const unsupported = (msg, details = {}) => new UnsupportedAdapterError(`${CONFIG_FILE}: ${msg}`, { details });
  if (c.peft_type !== 'LORA') {
    if (isAbsent(c.peft_type)) throw bad('peft_type is missing (a PEFT LoRA adapter has "peft_type": "LORA")');
    throw unsupported(`peft_type ${JSON.stringify(c.peft_type)} is not supported: only LORA adapters load here`, { peft_type: c.peft_type });
  }
  const r = c.r ?? PEFT_DEFAULT_RANK;
  if (!isRank(r)) throw bad(`r must be a positive integer, got ${JSON.stringify(c.r)}`);
  const alpha = c.lora_alpha ?? PEFT_DEFAULT_ALPHA;
  if (!isAlpha(alpha)) throw bad(`lora_alpha must be a finite number, got ${JSON.stringify(c.lora_alpha)}`);
  const useRslora = c.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') throw bad(`use_rslora must be true or false, got ${JSON.stringify(c.use_rslora)}`);
  const useDora = c.use_dora ?? false;
  if (typeof useDora !== 'boolean') throw bad(`use_dora must be true or false, got ${JSON.stringify(c.use_dora)}`);
  const bias = c.bias ?? 'none';
  if (bias !== 'none') {
    throw unsupported(`bias ${JSON.stringify(bias)} is not supported: the adapter trains bias terms of the base model; only "none" is`, { bias });
  }
  // Each of these changes the LoRA computation itself, so loading A and B alone would give wrong outputs.
  const features = [
    ['use_qalora', 'QA-LoRA'], ['lora_bias', 'a bias on lora_B'],
    ['layer_replication', 'layer replication'], ['target_parameters', 'LoRA on parameters (target_parameters)'],
    ['alora_invocation_tokens', 'activated LoRA (aLoRA)'], ['trainable_token_indices', 'trainable tokens'],
  ];
  for (const [key, name] of features) {
    if (!isEmpty(c[key])) throw unsupported(`${key} = ${JSON.stringify(c[key])}: ${name} is not supported`, { [key]: c[key] });
  }
  const init = c.init_lora_weights;
  if (typeof init === 'string' && BASE_CHANGING_INITS.some((k) => init.toLowerCase().startsWith(k))) {
    throw unsupported(`init_lora_weights ${JSON.stringify(init)}: this adapter only works on the base model PEFT modified when it was created (convert it to a plain LoRA with PEFT's path_initial_model_for_weight_conversion first)`,
      { init_lora_weights: init });
  }
  const rankPattern = patternEntries(c.rank_pattern, `${CONFIG_FILE}: rank_pattern`, isRank, 'a positive integer', InvalidAdapterError);
  const alphaPattern = patternEntries(c.alpha_pattern, `${CONFIG_FILE}: alpha_pattern`, isAlpha, 'a finite number', InvalidAdapterError);

  const targets = namesOrRegex(c.target_modules, 'target_modules', table);
  const exclude = namesOrRegex(c.exclude_modules, 'exclude_modules', table);
  let layersPattern = null;
  if (!isAbsent(c.layers_pattern)) {
    const lp = typeof c.layers_pattern === 'string' ? [c.layers_pattern] : c.layers_pattern;
    if (!Array.isArray(lp) || !lp.every((p) => typeof p === 'string')) throw bad(`layers_pattern must be a string or a list of strings, got ${JSON.stringify(c.layers_pattern)}`);
    for (const p of lp) compileRegex(p, `${CONFIG_FILE}: layers_pattern`, InvalidAdapterError);
    layersPattern = lp;
  }
  let layers = null;
  if (!isAbsent(c.layers_to_transform)) {
    const lt = typeof c.layers_to_transform === 'number' ? [c.layers_to_transform] : c.layers_to_transform;
    if (!Array.isArray(lt) || !lt.every((i) => Number.isInteger(i) && i >= 0)) {
      throw bad(`layers_to_transform must be a layer index or a list of them, got ${JSON.stringify(c.layers_to_transform)}`);
    }
    layers = lt.length ? lt : null;
  }
  const rule = targets ? { targets, exclude, layers, layersPattern } : null;
  const modulesToSave = Array.isArray(c.modules_to_save) ? c.modules_to_save.map(String) : null;
  return { r, alpha, rankPattern, alphaPattern, useRslora, useDora, rule, modulesToSave };
}

/** @param {unknown} files @returns {Map<string, unknown>} */
function fileMap(files) {
  if (files instanceof Map) return files;
  if (Array.isArray(files)) {
    return new Map(files.map((f) => [f?.name, f?.data]));
  }
  if (files && typeof files === 'object') return new Map(Object.entries(files));
  throw new InvalidAdapterError(`adapter files must be an object { "${CONFIG_FILE}": ..., "${WEIGHTS_FILE}": ... }`);
}

/** @param {unknown} data @returns {Record<string, any>} */
function readConfigJson(data) {
  let text;
  if (typeof data === 'string') text = data;
  else if (data instanceof Uint8Array) {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(data);
    } catch {
      throw new InvalidAdapterError(`${CONFIG_FILE} is not UTF-8 text`);
    }
  } else if (data instanceof ArrayBuffer) return readConfigJson(new Uint8Array(data));
  else throw new InvalidAdapterError(`${CONFIG_FILE} must be a string or bytes`);
  let config;
  try {
    config = JSON.parse(text);
  } catch (err) {
    throw new InvalidAdapterError(`${CONFIG_FILE} is not valid JSON: ${/** @type {Error} */ (err).message}`, { cause: err });
  }
  if (!config || typeof config !== 'object' || Array.isArray(config)) throw new InvalidAdapterError(`${CONFIG_FILE} must hold a JSON object`);
  return config;
}

const LORA_KEY = /^base_model\.model\.(.+)\.(lora_A|lora_B)(?:\.([^.]+))?\.weight$/;
// PEFT's Embedding LoRA: plain Parameters lora_embedding_A (r, V) and lora_embedding_B (C, r), no ".weight".
const EMBEDDING_KEY = /^base_model\.model\.(.+)\.lora_embedding_(A|B)$/;
// DoRA magnitudes as PEFT saves them (no adapter name, no ".weight"; older PEFT wrote the same key).
const MAGNITUDE_KEY = /^base_model\.model\.(.+)\.lora_magnitude_vector$/;

/**
 * Every width in which a file's LoRA factors disagree with the model's modules: inputs (lora_A's columns) and
 * outputs (lora_B's rows) per block module, for modules in any layer (a deeper model's blocks are compared with
 * this model's block of the same kind), and the hidden size they imply.
 * @param {ModuleTable} table
 * @param {Map<string, { shape: number[] }>} tensors
 * @returns {{ first: { key: string, expected: number[], found: number[] } | null, text: string }}
 */
function widthMismatches(table, tensors) {
  const { blockPrefix } = table;
  const bySlot = new Map(table.modules.slice(0, table.S).map((m) => [m.slotName, m]));
  /** @type {Map<string, { file: number[], model: number[] }>} slot -> [in, out] widths */
  const seen = new Map();
  let first = null;
  let hidden = null;
  for (const [key, t] of tensors) {
    const k = LORA_KEY.exec(key);
    if (!k || t.shape.length !== 2 || !k[1].startsWith(blockPrefix)) continue;
    const slotName = k[1].slice(blockPrefix.length).replace(/^\d+\./, '');
    const m = bySlot.get(slotName);
    if (!m) continue;
    const isA = k[2] === 'lora_A';
    const found = isA ? t.shape[1] : t.shape[0];
    const want = isA ? m.inFeatures : m.outFeatures;
    const entry = seen.get(slotName) ?? { file: [m.inFeatures, m.outFeatures], model: [m.inFeatures, m.outFeatures] };
    entry.file[isA ? 0 : 1] = found;
    seen.set(slotName, entry);
    if (found !== want) {
      first ??= { key, expected: isA ? [t.shape[0], want] : [want, t.shape[1]], found: [...t.shape] };
      if (want === table.dim) hidden ??= found;
    }
  }
  const parts = [...seen].filter(([, e]) => e.file[0] !== e.model[0] || e.file[1] !== e.model[1])
    .map(([slot, e]) => `${slot} ${e.file[0]} -> ${e.file[1]} in the adapter, ${e.model[0]} -> ${e.model[1]} here`);
  if (!parts.length) return { first: null, text: '' };
  return { first, text: `${hidden !== null ? `hidden size ${hidden} vs ${table.dim}; ` : ''}module widths (inputs -> outputs) differ: ${parts.join('; ')}` };
}

/**
 * Make the c_attn modules of an adapter loaded from a file with ENABLE_LORA_KEY loralib MergedLinear modules again,
 * after checking that their lora_B is zero outside the named blocks (so nothing the file holds is dropped).
 * @param {import('../core/core.js').Adapter} adapter @param {ModuleTable} table @param {string} names
 */
function applyEnableLora(adapter, table, names) {
  const what = `${WEIGHTS_FILE} metadata ${ENABLE_LORA_KEY} ${JSON.stringify(names)}`;
  let mask;
  try {
    mask = qkvMask(names.split(','));
  } catch {
    throw new InvalidAdapterError(`${what} does not name q, k, v blocks`);
  }
  const mods = adapter.modules().filter((m) => entryOf(table, m.layer, m.slot)?.shortName === 'c_attn');
  if (table.arch !== 'gpt2' || !mods.length) throw new InvalidAdapterError(`${what} needs LoRA on a GPT-2 c_attn`);
  for (const m of mods) {
    const path = /** @type {ModuleEntry} */ (entryOf(table, m.layer, m.slot)).path;
    const before = adapter.view(m.B, m.outFeatures * m.rank).slice();
    try {
      adapter.setRowBlocks(m.index, 3, mask);
    } catch (err) {
      throw new InvalidAdapterError(`${what}: ${path} ${/** @type {Error} */ (err).message}`, { cause: err });
    }
    const after = adapter.view(m.B, m.outFeatures * m.rank);
    if (after.some((x, i) => x !== before[i])) {
      throw new InvalidAdapterError(`${what}: ${path}.lora_B is not zero outside the blocks of ${names}`, { details: { key: path } });
    }
  }
}

/**
 * @typedef {object} PeftFileSet the two files of a PEFT adapter, read
 * @property {ModuleTable} table the model's modules
 * @property {PeftConfigInfo} cfg
 * @property {import('./safetensors.js').SafetensorsFile} st the weights
 */

/**
 * @typedef {Map<number, { A?: string, B?: string, M?: string }>} FoundFactors module index -> tensor names of its
 *   factors (M: DoRA magnitude)
 */

/**
 * @typedef {object} ModuleWeights the factors of every module the file holds, in the core's layout, and their scales
 * @property {Int32Array} ranks per block module (0: none)
 * @property {Float32Array} alphas
 * @property {{ embed?: { rank: number, alpha: number }, head?: { rank: number, alpha: number } }} modelLevel
 * @property {Map<number, { A: Float32Array, B: Float32Array, M: Float32Array | null }>} data by module index
 */

/**
 * Both files present, the config valid, the weights a safetensors file.
 * @param {import('../core/core.js').Core} core @param {import('../core/core.js').ModelLike} model @param {unknown} files
 * @returns {PeftFileSet}
 */
function readPeftFiles(core, model, files) {
  const map = fileMap(files);
  if (!map.has(WEIGHTS_FILE)) {
    if (map.has('adapter_model.bin')) {
      throw new UnsupportedAdapterError(`adapter_model.bin (a PyTorch pickle) is not supported: only ${WEIGHTS_FILE} is; convert it with PEFT (save_pretrained(..., safe_serialization=True))`,
        { details: { file: 'adapter_model.bin' } });
    }
    throw new InvalidAdapterError(`${WEIGHTS_FILE} is missing`, { details: { file: WEIGHTS_FILE } });
  }
  if (!map.has(CONFIG_FILE)) throw new InvalidAdapterError(`${CONFIG_FILE} is missing`, { details: { file: CONFIG_FILE } });
  const table = moduleTable(model);
  const cfg = parseConfig(readConfigJson(map.get(CONFIG_FILE)), table);

  let weights = map.get(WEIGHTS_FILE);
  if (weights instanceof ArrayBuffer) weights = new Uint8Array(weights);
  if (!(weights instanceof Uint8Array)) throw new InvalidAdapterError(`${WEIGHTS_FILE} must be bytes (a Uint8Array)`);
  let st;
  try {
    st = readSafetensors(core, weights);
  } catch (err) {
    if (/** @type {any} */ (err)?.name !== 'SafetensorsError') throw err;
    throw new InvalidAdapterError(`${WEIGHTS_FILE} is not a valid safetensors file: ${/** @type {Error} */ (err).message}`, { cause: err });
  }
  return { table, cfg, st };
}

/**
 * The file's base fingerprint, when it has one, must be the loaded model's.
 * @param {Record<string, string>} metadata @param {string | null} baseFingerprint @param {boolean} allowMismatch
 */
function checkFingerprint(metadata, baseFingerprint, allowMismatch) {
  const fileFingerprint = metadata[FINGERPRINT_KEY];
  if (baseFingerprint !== null && fileFingerprint !== undefined && fileFingerprint !== baseFingerprint && !allowMismatch) {
    throw new BaseModelMismatchError(`this adapter was trained on other base weights (fingerprint ${fileFingerprint}); the loaded model's fingerprint is ${baseFingerprint}`,
      { details: { expected: fileFingerprint, actual: baseFingerprint } });
  }
}

/**
 * Sort every tensor into a LoRA factor of one of the model's modules; a factor of a module the model lacks, or
 * anything that is no LoRA factor, is an error naming it.
 * @param {PeftFileSet} files
 * @returns {FoundFactors}
 */
function sortTensors({ table, cfg, st }) {
  /** @type {FoundFactors} */
  const found = new Map();
  const unmapped = new Set();
  const extra = [];
  const adapterNames = new Set();
  for (const name of st.tensors.keys()) {
    const mag = cfg.useDora ? MAGNITUDE_KEY.exec(name) : null;
    if (mag) {
      const entry = table.byPath.get(mag[1]);
      if (!entry) {
        unmapped.add(mag[1]);
        continue;
      }
      const slot = found.get(entry.index) ?? {};
      if (slot.M) throw new InvalidAdapterError(`${WEIGHTS_FILE} holds the DoRA magnitude of ${entry.path} twice`);
      slot.M = name;
      found.set(entry.index, slot);
      continue;
    }
    const e = EMBEDDING_KEY.exec(name);
    const m = e ? [e[0], e[1], `lora_${e[2]}`, undefined] : LORA_KEY.exec(name);
    if (!m) {
      extra.push(name);
      continue;
    }
    adapterNames.add(m[3] ?? '');
    const entry = table.byPath.get(m[1]);
    if (!entry) {
      unmapped.add(m[1]);
      continue;
    }
    if ((entry.layer === MODEL_LAYER && entry.slot === EMBED_SLOT) !== !!e) {
      throw new InvalidAdapterError(`${WEIGHTS_FILE}: ${name} is not how PEFT names ${e ? 'a linear module' : 'an embedding'}'s LoRA factor (expected ${factorKey(entry, m[2].slice(-1))})`,
        { details: { key: name } });
    }
    const slot = found.get(entry.index) ?? {};
    const which = /** @type {'A'|'B'} */ (m[2].slice(-1));
    if (slot[which]) throw new InvalidAdapterError(`${WEIGHTS_FILE} holds lora_${which} of ${entry.path} twice (${slot[which]} and ${name})`);
    slot[which] = name;
    found.set(entry.index, slot);
  }
  if (extra.length) {
    const saved = Array.isArray(cfg.modulesToSave) && cfg.modulesToSave.length ? ` (modules_to_save: ${cfg.modulesToSave.join(', ')})` : '';
    const dora = extra.some((k) => MAGNITUDE_KEY.test(k)) ? ` (DoRA magnitudes are used only when ${CONFIG_FILE} has use_dora true)` : '';
    throw new UnsupportedAdapterError(`${WEIGHTS_FILE} holds tensors that are not LoRA factors (lora_A / lora_B, DoRA lora_magnitude_vector) of a linear module and cannot be used: ${listSome(extra)}. Fully trained layers such as a classifier head${saved} are not supported${dora}`,
      { details: { tensors: extra } });
  }
  if (adapterNames.size > 1) {
    throw new InvalidAdapterError(`${WEIGHTS_FILE} mixes adapter names (${[...adapterNames].map((n) => JSON.stringify(n || '(none)')).join(', ')}) in its keys`);
  }
  if (unmapped.size) {
    const paths = [...unmapped].sort();
    // Say why: a block beyond this model's depth, or names from another architecture / outside the blocks.
    const { blockPrefix } = table;
    const deeper = paths.some((p) => p.startsWith(blockPrefix) && table.byPath.has(`${blockPrefix}0${p.slice(blockPrefix.length).replace(/^\d+/, '')}`));
    const layers = 1 + Math.max(...[...unmapped, ...[...found.keys()].map((i) => entryAt(table, i).path)]
      .map((p) => (p.startsWith(blockPrefix) ? Number.parseInt(p.slice(blockPrefix.length), 10) : -1)));
    const widths = widthMismatches(table, st.tensors);
    const hint = found.size === 0 && !deeper
      ? `it was made for another model architecture (this ${table.arch} model's LoRA-capable modules are like ${table.modules[0].path})`
      : deeper
        ? `the adapter was made for a model with ${layers} layers; this ${table.arch} model has ${table.L} layers${widths.text ? `; and for another width: ${widths.text}` : ''}`
        : `LoRA here applies to the linear layers inside the blocks (${table.modules.slice(0, table.S).map((m) => m.slotName).join(', ')}), the token embedding and the head (${table.modelModules.map((m) => m.path).join(', ')})`;
    throw new AdapterModelMismatchError(`${WEIGHTS_FILE} has LoRA weights for modules this model does not have: ${listSome(paths)}; ${hint}`,
      { details: { modules: paths } });
  }
  return found;
}

/**
 * The factors fit the model's widths, and every module has all of its factors.
 * @param {PeftFileSet} files @param {FoundFactors} found
 */
function checkFactorsComplete({ table, cfg, st }, found) {
  // Same depth, other widths: name every mismatching width at once, not only the first tensor's.
  const widths = widthMismatches(table, st.tensors);
  if (widths.first) {
    const { key, expected, found: shape } = widths.first;
    throw new AdapterShapeError(`${key} has shape [${shape.join(', ')}] but [${expected.join(', ')}] is expected: the adapter was made for a model of another width (${widths.text})`,
      { details: { key, expected, found: shape } });
  }
  if (found.size === 0) throw new InvalidAdapterError(`${WEIGHTS_FILE} holds no LoRA weights`);

  const lonely = [];
  for (const [index, pair] of found) {
    const entry = entryAt(table, index);
    if (!pair.A) lonely.push(`${factorKey(entry, 'A')} (its B is present)`);
    if (!pair.B) lonely.push(`${factorKey(entry, 'B')} (its A is present)`);
    if (cfg.useDora && !pair.M) lonely.push(`${KEY_PREFIX}${entry.path}.lora_magnitude_vector (use_dora is true)`);
  }
  if (lonely.length) throw new InvalidAdapterError(`${WEIGHTS_FILE} is missing ${listSome(lonely)}`, { details: { missing: lonely } });
}

/**
 * The modules the config targets are exactly the ones the file has weights for.
 * @param {ModuleTable} table @param {TargetRule} rule @param {FoundFactors} found
 */
function checkTargets(table, rule, found) {
  const targeted = table.all.filter((m) => isTargeted(rule, m.path));
  const missing = targeted.filter((m) => !found.has(m.index));
  const notInFile = missing.map((m) => m.path);
  if (notInFile.length) {
    // Weights for the first k blocks only, and none after: the adapter was made for a shallower model.
    const depth = 1 + Math.max(...[...found.keys()].map((i) => entryAt(table, i).layer));
    const shallower = missing.every((m) => m.layer >= depth)
      ? `; it has weights for layers 0 to ${depth - 1} only, as an adapter made for a model with ${depth} layers would (this ${table.arch} model has ${table.L})` : '';
    throw new InvalidAdapterError(`${CONFIG_FILE} targets modules that ${WEIGHTS_FILE} has no LoRA weights for: ${listSome(notInFile)}${shallower}`,
      { details: { modules: notInFile } });
  }
  const notTargeted = table.all.filter((m) => found.has(m.index) && !isTargeted(rule, m.path)).map((m) => m.path);
  if (notTargeted.length) {
    throw new InvalidAdapterError(`${WEIGHTS_FILE} has LoRA weights for modules ${CONFIG_FILE} does not target: ${listSome(notTargeted)}`, { details: { modules: notTargeted } });
  }
}

/**
 * Every module's factors as f32 in the core's layout (shapes, dtypes and values checked), and its rank and alpha
 * from r / lora_alpha / rank_pattern / alpha_pattern.
 * @param {import('../core/core.js').Core} core @param {PeftFileSet} files @param {FoundFactors} found
 * @returns {ModuleWeights}
 */
function readFactors(core, { table, cfg, st }, found) {
  const ranks = new Int32Array(table.L * table.S);
  const alphas = new Float32Array(table.L * table.S);
  /** @type {Map<number, { A: Float32Array, B: Float32Array, M: Float32Array | null }>} */
  const data = new Map();
  /** @type {{ embed?: { rank: number, alpha: number }, head?: { rank: number, alpha: number } }} */
  const modelLevel = {};
  const keys = (entries) => entries.map(([k]) => k);
  for (const m of table.all) {
    const pair = found.get(m.index);
    if (!pair) continue;
    const r = patternValue(cfg.rankPattern, m.path, cfg.r);
    const rSource = getPatternKey(keys(cfg.rankPattern), m.path) === null ? 'r' : 'rank_pattern';
    /** @type {[string, number[]][]} */
    const expect = [[/** @type {string} */ (pair.A), [r, m.inFeatures]], [/** @type {string} */ (pair.B), [m.outFeatures, r]]];
    if (pair.M) expect.push([pair.M, [m.outFeatures]]);
    const arrays = expect.map(([key, shape]) => {
      const t = /** @type {import('./safetensors.js').SafetensorsEntry} */ (st.tensors.get(key));
      if (t.shape.length !== shape.length || shape.some((n, i) => t.shape[i] !== n)) {
        throw new AdapterShapeError(`${key} has shape [${t.shape.join(', ')}] but [${shape.join(', ')}] is expected for ${m.path} (rank ${r} from ${CONFIG_FILE} ${rSource}, ${m.inFeatures} inputs, ${m.outFeatures} outputs)`,
          { details: { key, expected: shape, found: t.shape } });
      }
      if (!FLOAT_DTYPES.includes(t.dtype)) {
        throw new UnsupportedAdapterError(`${key} has dtype ${t.dtype}; LoRA weights must be F32, F16, BF16 or F64`, { details: { key, dtype: t.dtype } });
      }
      const values = st.float32(key);
      for (let i = 0; i < values.length; i++) {
        if (!Number.isFinite(values[i])) {
          throw new InvalidAdapterError(`${key} holds a non-finite value (${values[i]}) at element ${i}`, { details: { key, index: i } });
        }
      }
      const mixup = t.dtype === 'F16' || t.dtype === 'BF16' ? halfPrecisionMixup(core, values, t.dtype) : null;
      if (mixup) {
        throw new InvalidAdapterError(`${WEIGHTS_FILE}: ${key} ${mixup.message}`, { code: 'ADAPTER_DTYPE_MISMATCH',
          details: { key, dtype: t.dtype, likely: mixup.likely } });
      }
      return values;
    });
    const alpha = patternValue(cfg.alphaPattern, m.path, cfg.alpha);
    if (m.layer === MODEL_LAYER) modelLevel[m.slot === EMBED_SLOT ? 'embed' : 'head'] = { rank: r, alpha };
    else {
      ranks[m.index] = r;
      alphas[m.index] = alpha;
    }
    const heads = m.layer === MODEL_LAYER ? undefined : table.ropeHeads.get(m.slot);
    const toCore = (rows, cols) => (heads ? permuteRopeRows(rows, heads, table.headDim, cols, false) : rows);
    data.set(m.index, { A: arrays[0], B: toCore(arrays[1], r), M: arrays[2] ? toCore(arrays[2], 1) : null });
  }
  return { ranks, alphas, modelLevel, data };
}

/**
 * A new Adapter holding the weights (freed again when they do not fit it).
 * @param {import('../core/core.js').ModelLike} model @param {PeftFileSet} files @param {FoundFactors} found
 * @param {ModuleWeights} weights
 */
function buildAdapter(model, { table, cfg, st }, found, { ranks, alphas, modelLevel, data }) {
  if (cfg.useDora && (modelLevel.embed || modelLevel.head)) {
    throw new UnsupportedAdapterError(`${CONFIG_FILE}: DoRA (use_dora) on the token embedding or LM head is not supported`,
      { details: { modules: table.modelModules.filter((m) => found.has(m.index)).map((m) => m.path) } });
  }
  const adapter = Adapter.create(model, { ranks, alphas, useRslora: cfg.useRslora, dora: cfg.useDora, ...modelLevel });
  try {
    for (const mod of adapter.modules()) {
      const d = /** @type {{ A: Float32Array, B: Float32Array, M: Float32Array | null }} */ (data.get(/** @type {ModuleEntry} */ (entryOf(table, mod.layer, mod.slot)).index));
      adapter.view(mod.A, d.A.length).set(d.A);
      adapter.view(mod.B, d.B.length).set(d.B);
      if (d.M) adapter.view(mod.magnitude, d.M.length).set(d.M);
    }
    if (st.metadata[ENABLE_LORA_KEY] !== undefined) applyEnableLora(adapter, table, st.metadata[ENABLE_LORA_KEY]);
  } catch (err) {
    adapter.free();
    throw err;
  }
  return adapter;
}

/**
 * Load a PEFT LoRA adapter for `model`: an Adapter attached nowhere, with A and B from the file and each module's
 * scale from r / lora_alpha / rank_pattern / alpha_pattern / use_rslora. Everything the file holds must be used;
 * what cannot be (other PEFT methods, saved classifier heads...) is an error naming it. DoRA adapters (use_dora) load
 * with their lora_magnitude_vector. Files hold Hugging Face
 * row order, so q_proj / k_proj lora_B rows are put back in interleaved RoPE order for a llama2.c model.
 * @param {import('../core/core.js').Core} core
 * @param {import('../core/core.js').ModelLike} model
 * @param {Record<string, string | Uint8Array | ArrayBuffer> | Map<string, string | Uint8Array | ArrayBuffer>
 *   | { name: string, data: string | Uint8Array | ArrayBuffer }[]} files (the weights as bytes)
 * @param {{ baseFingerprint?: string | null, allowFingerprintMismatch?: boolean }} [options]
 * @returns {import('../core/core.js').Adapter}
 */
export function peftToAdapter(core, model, files, options = {}) {
  const { baseFingerprint = null, allowFingerprintMismatch = false } = options;
  const peft = readPeftFiles(core, model, files);
  checkFingerprint(peft.st.metadata, baseFingerprint, allowFingerprintMismatch);
  const found = sortTensors(peft);
  checkFactorsComplete(peft, found);
  if (peft.cfg.rule) checkTargets(peft.table, peft.cfg.rule, found);
  return buildAdapter(model, peft, found, readFactors(core, peft, found));
}
