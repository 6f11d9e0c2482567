// peft.js: Hugging Face PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors): the file names and
// keys, the model's LoRA-capable modules under PEFT's names, and PEFT's rules for choosing modules (target_modules,
// layers_to_transform, rank/alpha patterns). Writing the files is peft-save.js, reading them peft-load.js.
import { LoraSpecError } from '../errors.js';
export { LoraSpecError, UnsupportedAdapterError, AdapterShapeError, AdapterModelMismatchError } from '../errors.js';
import { Arch, EMBED_SLOT, HEAD_SLOT, MODEL_LAYER, RopeLayout } from '../core/core.js';


export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';
/** safetensors __metadata__ key holding the fingerprint of the base weights an adapter was trained on. */
export const FINGERPRINT_KEY = 'weblora.base_fingerprint';
/** safetensors metadata naming the q, k, v blocks of every GPT-2 c_attn that is a loralib MergedLinear ("q,v"): the
 *  PEFT file itself holds the same function as a rank-stacked c_attn LoRA whose lora_B is zero outside them. */
export const ENABLE_LORA_KEY = 'weblora.enable_lora';
const QKV = ['q', 'k', 'v'];

/**
 * loralib's enable_lora for GPT-2's c_attn as a bit mask over its q, k, v row blocks: names (['q', 'v']) or
 * loralib's flags ([true, false, true]).
 * @param {unknown} enable
 */
export function qkvMask(enable) {
  const list = Array.isArray(enable) ? enable : [];
  const flags = list.length === 3 && list.every((x) => typeof x === 'boolean');
  const names = list.length > 0 && list.every((x) => QKV.includes(/** @type {string} */ (x))) && new Set(list).size === list.length;
  if (!flags && !names) {
    throw new LoraSpecError(`enableLora must name a subset of q, k, v (e.g. ['q', 'v']) or give loralib's three flags, got ${JSON.stringify(enable)}`);
  }
  const mask = flags ? list.reduce((m, on, i) => m | (on ? 1 << i : 0), 0) : list.reduce((m, n) => m | (1 << QKV.indexOf(n)), 0);
  if (!mask) throw new LoraSpecError('enableLora enables none of q, k, v');
  return mask;
}

/** @param {number} mask @returns {string} e.g. "q,v" */
export const qkvNames = (mask) => QKV.filter((_, i) => mask & (1 << i)).join(',');

export const KEY_PREFIX = 'base_model.model.';
// PEFT's own defaults (LoraConfig r=8, lora_alpha=8; TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
export const PEFT_DEFAULT_RANK = 8;
export const PEFT_DEFAULT_ALPHA = 8;
const DEFAULT_TARGETS = { llama: ['q_proj', 'v_proj'], gpt2: ['c_attn'] };
export const ALL_LINEAR = 'all-linear';

// ---------------------------------------------------------------------------------------------------------------
// The model's LoRA-capable modules

/**
 * @typedef {object} ModuleEntry
 * @property {number} layer
 * @property {number} slot
 * @property {number} index layer * nSlots + slot (the position in rank / alpha tables); L * nSlots + slot for the
 *   model-level modules (layer -1: slot 0 the token embedding, slot 1 the LM head)
 * @property {string} path full module path, e.g. "model.layers.3.self_attn.q_proj"
 * @property {string} slotName path inside a block, e.g. "self_attn.q_proj"
 * @property {string} shortName last path segment, e.g. "q_proj"
 * @property {number} inFeatures
 * @property {number} outFeatures
 */

/**
 * @typedef {object} ModuleTable
 * @property {number} L
 * @property {number} S
 * @property {string} arch
 * @property {string} container the name of the block list in paths ("layers", "h")
 * @property {string} blockPrefix what every block module path starts with before its layer index ("model.layers.")
 * @property {boolean} conv1d whether the modules are GPT-2 Conv1D (PEFT fan_in_fan_out)
 * @property {ModuleEntry[]} modules the block modules, layer-major, slot-minor
 * @property {ModuleEntry[]} modelModules [token embedding, LM head] (PEFT's Embedding and lm_head Linear LoRA)
 * @property {ModuleEntry[]} all every LoRA-capable module: embedding, block modules, head
 * @property {Map<string, ModuleEntry>} byPath
 * @property {Map<number, number>} ropeHeads slots whose output rows are in llama2.c's interleaved RoPE order
 *   (q_proj, k_proj of a llama2.c model) -> number of heads; empty otherwise
 * @property {number} headDim
 * @property {number} dim hidden size
 */

/** @type {WeakMap<object, ModuleTable>} */
const tables = new WeakMap();

/** @param {import('../core/core.js').ModelLike} model @returns {ModuleTable} */
export function moduleTable(model) {
  const cached = tables.get(model);
  if (cached) return cached;
  const slots = model.modules();
  const L = model.config.nLayers;
  const S = slots.length;
  /** @type {ModuleEntry[]} */
  const modules = [];
  for (let layer = 0; layer < L; layer++) {
    for (const s of slots) {
      modules.push({ layer, slot: s.slot, index: layer * S + s.slot, path: model.modulePath(layer, s.slot), slotName: s.name,
        shortName: s.shortName, inFeatures: s.inFeatures, outFeatures: s.outFeatures });
    }
  }
  const head = modules[0].path.slice(0, -(modules[0].slotName.length + 1)).split('.');
  const c = model.config;
  /** @type {Map<number, number>} */
  const ropeHeads = new Map();
  if (c.arch === Arch.LLAMA && c.ropeLayout === RopeLayout.INTERLEAVED) {
    for (const s of slots) {
      if (s.shortName === 'q_proj') ropeHeads.set(s.slot, c.nHeads);
      if (s.shortName === 'k_proj') ropeHeads.set(s.slot, c.nKvHeads);
    }
  }
  // Module shapes read from adapter files alone (peft-shapes.js) know no vocabulary: block modules only.
  const modelModules = !c.vocabSize ? [] : [EMBED_SLOT, HEAD_SLOT].map((slot) => {
    const path = model.modulePath(MODEL_LAYER, slot);
    const embed = slot === EMBED_SLOT;
    return { layer: MODEL_LAYER, slot, index: L * S + slot, path, slotName: path, shortName: path.split('.').pop(),
      inFeatures: embed ? c.vocabSize : c.dim, outFeatures: embed ? c.dim : c.vocabSize };
  });
  const all = [...modelModules.slice(0, 1), ...modules, ...modelModules.slice(1)];
  const table = { L, S, arch: model.arch, container: head[head.length - 2], blockPrefix: `${head.slice(0, -1).join('.')}.`,
    conv1d: slots.some((s) => s.conv1d), modules, modelModules, all, byPath: new Map(all.map((m) => [m.path, m])), ropeHeads,
    headDim: c.headDim, dim: c.dim };
  tables.set(model, table);
  return table;
}

/** The table entry of the module at (layer, slot) (layer -1: the embedding or the head). */
export function entryOf(table, layer, slot) {
  if (layer === MODEL_LAYER) return table.modelModules[slot] ?? null;
  return layer >= 0 && layer < table.L && slot >= 0 && slot < table.S ? table.modules[layer * table.S + slot] : null;
}

/** The table entry with this index. */
export function entryAt(table, index) {
  return index < table.L * table.S ? table.modules[index] : table.modelModules[index - table.L * table.S];
}

/** PEFT's key of a module's factor: lora_embedding_A / _B (plain Parameters) for an Embedding, else lora_A.weight. */
export function factorKey(entry, which) {
  return entry.layer === MODEL_LAYER && entry.slot === EMBED_SLOT
    ? `${KEY_PREFIX}${entry.path}.lora_embedding_${which}` : `${KEY_PREFIX}${entry.path}.lora_${which}.weight`;
}

/** "a, b, c and 4 more" */
export function listSome(items, max = 8) {
  const shown = items.slice(0, max).join(', ');
  return items.length > max ? `${shown} and ${items.length - max} more` : shown;
}

export function uniqueSorted(items) {
  return [...new Set(items)].sort();
}

// ---------------------------------------------------------------------------------------------------------------
// PEFT's matching rules

/**
 * Compile a regular expression given in Python syntax (PEFT configs are written for Python's `re`).
 * @param {string} source
 * @param {string} what where it came from, for the message
 * @param {new (message: string, options?: object) => Error} ErrorClass
 */
export function compileRegex(source, what, ErrorClass) {
  try {
    return new RegExp(source);
  } catch (err) {
    throw new ErrorClass(`${what}: ${JSON.stringify(source)} is not a regular expression JavaScript can run (${/** @type {Error} */ (err).message})`,
      { details: { pattern: source } });
  }
}

/**
 * @typedef {object} TargetRule the module selection of a LoraConfig
 * @property {string[] | RegExp} targets target_modules: names, or a regex that must match a whole path
 * @property {string[] | RegExp | null} exclude exclude_modules, same forms
 * @property {number[] | null} layers layers_to_transform (null: every layer)
 * @property {string[] | null} layersPattern layers_pattern (null: any "<name>.<index>." segment)
 */

/** @param {string[] | RegExp} names @param {string} path */
function matchesNames(names, path) {
  if (names instanceof RegExp) return names.test(path);
  return names.includes(path) || names.some((n) => path.endsWith(`.${n}`));
}

/**
 * Layer index of a module path as PEFT reads it: re.match(rf".*\.{pattern}\.(\d+)\.", key) for each layers_pattern,
 * or re.match(r".*\.[^.]*\.(\d+)\.", key) without one.
 * @param {string} path @param {string[] | null} layersPattern
 */
function layerIndexOf(path, layersPattern) {
  const patterns = layersPattern?.length ? layersPattern : ['[^.]*'];
  for (const p of patterns) {
    const m = new RegExp(`^.*\\.${p}\\.(\\d+)\\.`).exec(path);
    if (m) return Number(m[1]);
  }
  return null;
}

/**
 * Whether PEFT targets a module, following peft.tuners.tuners_utils.check_target_module_exists: excluded modules
 * never; a string target_modules must fully match the path (re.fullmatch); a list entry matches a path equal to it
 * (then layers_to_transform is not consulted) or a path ending in "." + entry (then it is).
 * @param {TargetRule} rule @param {string} path
 */
export function isTargeted(rule, path) {
  if (rule.exclude && matchesNames(rule.exclude, path)) return false;
  if (rule.targets instanceof RegExp) return rule.targets.test(path);
  if (rule.targets.includes(path)) return true;
  if (!rule.targets.some((t) => path.endsWith(`.${t}`))) return false;
  if (!rule.layers) return true;
  const index = layerIndexOf(path, rule.layersPattern);
  return index !== null && rule.layers.includes(index);
}

/** A full-match regex for a Python re.fullmatch pattern. */
export function fullMatchRegex(source, what, ErrorClass) {
  compileRegex(source, what, ErrorClass); // reports the pattern as written when it does not compile
  return new RegExp(`^(?:${source})$`);
}

/**
 * The key of a rank_pattern / alpha_pattern that applies to a module, or null. Follows PEFT's get_pattern_key
 * (peft/utils/other.py): the first key, in insertion order, for which re.match(rf"(.*\.)?({key})$", path) matches;
 * so a key applies to a path equal to it or ending in "." + key, and keys are regular expressions.
 * @param {string[]} keys
 * @param {string} path full module path
 * @returns {string | null}
 */
export function getPatternKey(keys, path) {
  for (const key of keys) {
    if (patternRegex(key).test(path)) return key;
  }
  return null;
}

/** @type {Map<string, RegExp>} */
const patternCache = new Map();
function patternRegex(key) {
  let re = patternCache.get(key);
  if (!re) {
    re = new RegExp(`^(?:.*\\.)?(?:${key})$`);
    if (patternCache.size > 1000) patternCache.clear();
    patternCache.set(key, re);
  }
  return re;
}

/**
 * Validate a rank or alpha pattern object: keys compile, values pass `check`.
 * @param {unknown} pattern
 * @param {string} what
 * @param {(v: unknown) => boolean} check
 * @param {string} expected
 * @param {new (message: string, options?: object) => Error} ErrorClass
 * @returns {[string, number][]} entries in insertion order
 */
export function patternEntries(pattern, what, check, expected, ErrorClass) {
  if (pattern === undefined || pattern === null) return [];
  if (typeof pattern !== 'object' || Array.isArray(pattern)) throw new ErrorClass(`${what} must be an object mapping module patterns to values`);
  const entries = Object.entries(pattern);
  for (const [key, value] of entries) {
    compileRegex(key, `${what} key`, ErrorClass);
    if (!check(value)) throw new ErrorClass(`${what}["${key}"] must be ${expected}, got ${JSON.stringify(value)}`, { details: { key, value } });
  }
  return /** @type {[string, number][]} */ (entries);
}

/** @param {[string, number][]} entries @param {string} path @param {number} fallback */
export function patternValue(entries, path, fallback) {
  const key = getPatternKey(entries.map(([k]) => k), path);
  return key === null ? fallback : /** @type {[string, number]} */ (entries.find(([k]) => k === key))[1];
}

export const isRank = (v) => Number.isInteger(v) && /** @type {number} */ (v) > 0;
export const isAlpha = (v) => typeof v === 'number' && Number.isFinite(v);

/** @param {unknown} layers @param {number} L @param {string} what @param {any} ErrorClass @returns {number[] | null} */
function normalizeLayers(layers, L, what, ErrorClass) {
  if (layers === undefined || layers === null) return null;
  const list = typeof layers === 'number' ? [layers] : layers;
  if (!Array.isArray(list) || !list.every((i) => Number.isInteger(i) && i >= 0)) {
    throw new ErrorClass(`${what} must be a layer index or a list of layer indices, got ${JSON.stringify(layers)}`);
  }
  const bad = list.filter((i) => i >= L);
  if (bad.length) throw new ErrorClass(`${what} names layer ${bad.join(', ')} but the model has ${L} layers (0..${L - 1})`);
  // PEFT treats an empty layers_to_transform list as "not restricting layers".
  return list.length ? list : null;
}

// ---------------------------------------------------------------------------------------------------------------
// Creating an adapter from a PEFT-style description

/**
 * @typedef {object} LoraOptions
 * @property {number} [rank] r (PEFT default 8)
 * @property {number} [alpha] lora_alpha (PEFT default 8)
 * @property {string[] | string} [targets] module names (a path equal to a name or ending in "." + name), a regex
 *   that must match whole paths, or 'all-linear'; default PEFT's for the architecture (q_proj, v_proj / c_attn)
 * @property {boolean} [useRslora] scale alpha / sqrt(r) instead of alpha / r
 * @property {Record<string, number>} [rankPattern] PEFT rank_pattern: regex key -> rank; first matching key wins
 * @property {Record<string, number>} [alphaPattern] PEFT alpha_pattern
 * @property {number[] | number} [layers] PEFT layers_to_transform (only with a list of target names)
 */

/**
 * @typedef {object} LoraSpec what Adapter.create takes, plus the chosen modules
 * @property {Int32Array} ranks (L * nSlots), 0 where a module gets no LoRA
 * @property {Float32Array} alphas (L * nSlots)
 * @property {boolean} useRslora
 * @property {{ layer: number, slot: number, path: string, rank: number, alpha: number }[]} modules
 * @property {{ rank: number, alpha: number }} [embed] LoRA on the token embedding (PEFT target "embed_tokens" / "wte")
 * @property {{ rank: number, alpha: number }} [head] LoRA on the LM head (PEFT target "lm_head")
 */

/**
 * Turn a PEFT-style LoRA description into the per-module rank and alpha tables of Adapter.create.
 * @param {import('../core/core.js').Model} model
 * @param {LoraOptions} [options]
 * @returns {LoraSpec}
 */
export function resolveLoraSpec(model, options = {}) {
  const { rank = PEFT_DEFAULT_RANK, alpha = PEFT_DEFAULT_ALPHA, useRslora = false, rankPattern, alphaPattern, layers } = options;
  if (!isRank(rank)) throw new LoraSpecError(`rank must be a positive integer, got ${JSON.stringify(rank)}`);
  if (!isAlpha(alpha)) throw new LoraSpecError(`alpha must be a finite number, got ${JSON.stringify(alpha)}`);
  if (typeof useRslora !== 'boolean') throw new LoraSpecError(`useRslora must be a boolean, got ${JSON.stringify(useRslora)}`);
  const table = moduleTable(model);
  const targets = options.targets ?? DEFAULT_TARGETS[/** @type {'llama'|'gpt2'} */ (table.arch)];
  const layerList = normalizeLayers(layers, table.L, 'layers', LoraSpecError);

  /** @type {TargetRule} */
  let rule;
  if (typeof targets === 'string' && targets.toLowerCase() === ALL_LINEAR) {
    rule = { targets: uniqueSorted(table.modules.map((m) => m.slotName)), exclude: null, layers: layerList, layersPattern: null };
  } else if (typeof targets === 'string') {
    // PEFT consults layers_to_transform only for a list of names; refusing beats silently ignoring it.
    if (layerList) throw new LoraSpecError('layers cannot be combined with a regex target: put the layer condition in the regex');
    rule = { targets: fullMatchRegex(targets, 'targets', LoraSpecError), exclude: null, layers: null, layersPattern: null };
    if (!table.all.some((m) => isTargeted(rule, m.path))) {
      throw new LoraSpecError(`targets regex ${JSON.stringify(targets)} matches no module path of this ${table.arch} model; paths look like ${listSome(table.modules.slice(0, table.S).map((m) => m.path))}`,
        { code: 'UNKNOWN_TARGET', details: { unknown: [targets], available: table.modules.slice(0, table.S).map((m) => m.path) } });
    }
  } else {
    if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === 'string' && t.length > 0)) {
      throw new LoraSpecError(`targets must be a non-empty list of module names, a regex string or '${ALL_LINEAR}'`);
    }
    const unknown = targets.filter((t) => !table.all.some((m) => m.path === t || m.path.endsWith(`.${t}`)));
    if (unknown.length) {
      const names = uniqueSorted(table.all.map((m) => m.shortName));
      const slotNames = table.modules.slice(0, table.S).map((m) => m.slotName);
      throw new LoraSpecError(`target module${unknown.length > 1 ? 's' : ''} ${unknown.map((t) => JSON.stringify(t)).join(', ')} match${unknown.length > 1 ? '' : 'es'} no module of this ${table.arch} model; its modules are ${names.join(', ')} (${slotNames.join(', ')} in each of ${table.L} blocks, e.g. ${table.modules[0].path})`,
        { code: 'UNKNOWN_TARGET', details: { unknown, available: names, slots: slotNames } });
    }
    rule = { targets: [...targets], exclude: null, layers: layerList, layersPattern: null };
  }

  const rp = patternEntries(rankPattern, 'rankPattern', isRank, 'a positive integer', LoraSpecError);
  const ap = patternEntries(alphaPattern, 'alphaPattern', isAlpha, 'a finite number', LoraSpecError);
  const ranks = new Int32Array(table.L * table.S);
  const alphas = new Float32Array(table.L * table.S);
  /** @type {LoraSpec['modules']} */
  const modules = [];
  /** @type {{ embed?: { rank: number, alpha: number }, head?: { rank: number, alpha: number } }} */
  const modelLevel = {};
  const usedKeys = new Set();
  for (const m of table.all) {
    if (!isTargeted(rule, m.path)) continue;
    const rKey = getPatternKey(rp.map(([k]) => k), m.path);
    const aKey = getPatternKey(ap.map(([k]) => k), m.path);
    if (rKey !== null) usedKeys.add(`r:${rKey}`);
    if (aKey !== null) usedKeys.add(`a:${aKey}`);
    const r = patternValue(rp, m.path, rank);
    const a = patternValue(ap, m.path, alpha);
    const maxRank = Math.min(m.inFeatures, m.outFeatures);
    if (r > maxRank) {
      throw new LoraSpecError(`rank ${r} for ${m.path} exceeds ${maxRank}, the smaller of its ${m.inFeatures} inputs and ${m.outFeatures} outputs`,
        { details: { path: m.path, rank: r, maxRank } });
    }
    if (m.layer === MODEL_LAYER) modelLevel[m.slot === EMBED_SLOT ? 'embed' : 'head'] = { rank: r, alpha: a };
    else {
      ranks[m.index] = r;
      alphas[m.index] = a;
    }
    modules.push({ layer: m.layer, slot: m.slot, path: m.path, rank: r, alpha: a });
  }
  if (!modules.length) {
    throw new LoraSpecError(`targets ${JSON.stringify(targets)} with layers ${JSON.stringify(layerList)} select no module`, { code: 'UNKNOWN_TARGET' });
  }
  // PEFT ignores pattern keys that match nothing; here they are almost always typos, so they are reported.
  for (const [prefix, entries, what] of /** @type {const} */ ([['r', rp, 'rankPattern'], ['a', ap, 'alphaPattern']])) {
    const unused = entries.map(([k]) => k).filter((k) => !usedKeys.has(`${prefix}:${k}`));
    if (unused.length) {
      throw new LoraSpecError(`${what} key${unused.length > 1 ? 's' : ''} ${unused.map((k) => JSON.stringify(k)).join(', ')} appl${unused.length > 1 ? 'y' : 'ies'} to no targeted module: ${unused.length > 1 ? 'they match' : 'it matches'} none (paths look like ${modules[0].path}), or an earlier key takes every module ${unused.length > 1 ? 'they match' : 'it matches'}`,
        { code: 'UNUSED_PATTERN', details: { unused } });
    }
  }
  return { ranks, alphas, useRslora, modules, ...modelLevel };
}

// ---------------------------------------------------------------------------------------------------------------
// RoPE row order

/**
 * Reorder the output rows of a q_proj / k_proj lora_B (out, r) between llama2.c's interleaved RoPE pairs (2i, 2i+1)
 * and Hugging Face's rotate-half pairs (i, i + hs/2), the permutation HF's Llama conversion applies to wq / wk.
 * The model keeps llama2.c weights interleaved, so an adapter's B is too; PEFT files must hold the HF order so
 * they fit the converted model (and the base exported from here).
 * @param {Float32Array} B (heads * hs, r)
 * @param {number} heads @param {number} hs @param {number} r
 * @param {boolean} toHalf interleaved -> rotate-half (saving) or back (loading)
 */
export function permuteRopeRows(B, heads, hs, r, toHalf) {
  const out = new Float32Array(B.length);
  const half = hs / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let c = 0; c < 2; c++) {
        const inter = (h * hs + 2 * i + c) * r;
        const rot = (h * hs + c * half + i) * r;
        if (toHalf) out.set(B.subarray(inter, inter + r), rot);
        else out.set(B.subarray(rot, rot + r), inter);
      }
    }
  }
  return out;
}
