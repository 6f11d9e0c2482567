// peft.js: Hugging Face PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors) to and from core
// Adapters, and PEFT's rules for choosing modules (target_modules, layers_to_transform, rank/alpha patterns).
import { BaseModelMismatchError, InvalidAdapterError, LoraSpecError, UnsupportedAdapterError, AdapterShapeError, AdapterModelMismatchError } from '../errors.js';
export { LoraSpecError, UnsupportedAdapterError, AdapterShapeError, AdapterModelMismatchError } from '../errors.js';
import { Adapter, Arch, EMBED_SLOT, HEAD_SLOT, MODEL_LAYER, RopeLayout } from '../core/core.js';
import { halfPrecisionMixup, readSafetensors, writeSafetensors } from './safetensors.js';


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
const qkvNames = (mask) => QKV.filter((_, i) => mask & (1 << i)).join(',');

const KEY_PREFIX = 'base_model.model.';
// PEFT's own defaults (LoraConfig r=8, lora_alpha=8; TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
const PEFT_DEFAULT_RANK = 8;
const PEFT_DEFAULT_ALPHA = 8;
const DEFAULT_TARGETS = { llama: ['q_proj', 'v_proj'], gpt2: ['c_attn'] };
const ALL_LINEAR = 'all-linear';
// init_lora_weights values whose adapters only work on a base model PEFT modified (residual or quantized weights).
const BASE_CHANGING_INITS = ['pissa', 'olora', 'corda', 'loftq'];
const FLOAT_DTYPES = ['F32', 'F16', 'BF16', 'F64'];

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
function moduleTable(model) {
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
function entryOf(table, layer, slot) {
  if (layer === MODEL_LAYER) return table.modelModules[slot] ?? null;
  return layer >= 0 && layer < table.L && slot >= 0 && slot < table.S ? table.modules[layer * table.S + slot] : null;
}

/** The table entry with this index. */
function entryAt(table, index) {
  return index < table.L * table.S ? table.modules[index] : table.modelModules[index - table.L * table.S];
}

/** PEFT's key of a module's factor: lora_embedding_A / _B (plain Parameters) for an Embedding, else lora_A.weight. */
function factorKey(entry, which) {
  return entry.layer === MODEL_LAYER && entry.slot === EMBED_SLOT
    ? `${KEY_PREFIX}${entry.path}.lora_embedding_${which}` : `${KEY_PREFIX}${entry.path}.lora_${which}.weight`;
}

/** "a, b, c and 4 more" */
function listSome(items, max = 8) {
  const shown = items.slice(0, max).join(', ');
  return items.length > max ? `${shown} and ${items.length - max} more` : shown;
}

function uniqueSorted(items) {
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
function compileRegex(source, what, ErrorClass) {
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
function isTargeted(rule, path) {
  if (rule.exclude && matchesNames(rule.exclude, path)) return false;
  if (rule.targets instanceof RegExp) return rule.targets.test(path);
  if (rule.targets.includes(path)) return true;
  if (!rule.targets.some((t) => path.endsWith(`.${t}`))) return false;
  if (!rule.layers) return true;
  const index = layerIndexOf(path, rule.layersPattern);
  return index !== null && rule.layers.includes(index);
}

/** A full-match regex for a Python re.fullmatch pattern. */
function fullMatchRegex(source, what, ErrorClass) {
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
function patternEntries(pattern, what, check, expected, ErrorClass) {
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
function patternValue(entries, path, fallback) {
  const key = getPatternKey(entries.map(([k]) => k), path);
  return key === null ? fallback : /** @type {[string, number]} */ (entries.find(([k]) => k === key))[1];
}

const isRank = (v) => Number.isInteger(v) && /** @type {number} */ (v) > 0;
const isAlpha = (v) => typeof v === 'number' && Number.isFinite(v);

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

// ---------------------------------------------------------------------------------------------------------------
// Saving

/** The scale the C core computes for (alpha, r): f32 alpha / r, or alpha / sqrtf(r) with rsLoRA. */
export function coreScale(alpha, r, rslora) {
  const a = Math.fround(alpha);
  return Math.fround(rslora ? a / Math.fround(Math.sqrt(r)) : a / r);
}

const f32Box = new Float32Array(1);
const i32Box = new Int32Array(f32Box.buffer);
/** The f32 `steps` representable values away from x (x finite). */
function f32Step(x, steps) {
  f32Box[0] = x;
  // Stepping the integer image walks ordered floats for positive numbers; mirror it for negative ones.
  i32Box[0] += x < 0 || Object.is(x, -0) ? -steps : steps;
  return f32Box[0];
}

/** An alpha that makes the core reproduce a module's scale exactly (its own alpha unless the scale was overridden). */
function effectiveAlpha(m, rslora) {
  if (coreScale(m.alpha, m.rank, rslora) === m.scale) return m.alpha;
  const guess = Math.fround(m.scale * (rslora ? Math.fround(Math.sqrt(m.rank)) : m.rank));
  for (const d of [0, 1, -1, 2, -2, 3, -3]) {
    const a = f32Step(guess, d);
    if (Number.isFinite(a) && coreScale(a, m.rank, rslora) === m.scale) return a;
  }
  return guess;
}

/**
 * The adapter written with one alpha and plain alpha / r scaling: the alpha most modules need for their scale, and
 * for each module the factor that folds the rest of its scale (rsLoRA, rank and alpha patterns, an overridden
 * scale) into B, so fround(alpha / r) * factor is the module's scale. Modules the single alpha already gives
 * exactly keep factor 1 and an unchanged B. This is the form for tools that read only one alpha: llama.cpp's
 * --lora (which scales by adapter.lora.alpha / r and treats alpha 0 as "no scaling") and converters that ignore
 * use_rslora and the patterns.
 * @param {{ rank: number, alpha: number, scale: number }[]} mods adapter.modules()
 * @returns {{ alpha: number, factors: number[] }} factors in the order of mods
 */
export function singleAlphaForm(mods) {
  let alpha = mostCommon(mods.map((m) => effectiveAlpha(m, false)));
  // An alpha of 0 would mean "unscaled" to llama.cpp: express zero scales as alpha = r with B folded to zero.
  if (alpha === 0 || !Number.isFinite(alpha)) alpha = mostCommon(mods.map((m) => m.rank));
  const factors = mods.map((m) => {
    const given = coreScale(alpha, m.rank, false);
    return given === m.scale ? 1 : m.scale / given;
  });
  return { alpha, factors };
}

/** B times a folded scale factor (a copy; B itself when the factor is 1). @param {Float32Array} B @param {number} factor */
export function foldIntoB(B, factor) {
  if (factor === 1) return B;
  const out = new Float32Array(B.length);
  for (let i = 0; i < B.length; i++) out[i] = B[i] * factor;
  return out;
}

/** The shortest decimal that reads back as the same f32 (so JSON says 0.1, not 0.10000000149011612). */
export function shortestF32(x) {
  for (let p = 1; p <= 9; p++) {
    const v = Number(x.toPrecision(p));
    if (Math.fround(v) === x) return v;
  }
  return x;
}

/** The value occurring most often; ties go to the one seen first. */
function mostCommon(values) {
  /** @type {Map<number, number>} */
  const counts = new Map();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = values[0];
  for (const [v, c] of counts) if (c > /** @type {number} */ (counts.get(best))) best = v;
  return best;
}

/**
 * target_modules (plus layers_to_transform) that select exactly the adapter's modules under PEFT's rules:
 * short names when they do, then block-relative names, each without and with a layer list, else full paths.
 * @param {ModuleTable} table @param {Set<number>} present module indices
 */
function coverTargets(table, present) {
  const mods = table.all.filter((m) => present.has(m.index));
  const layerList = [...new Set(mods.map((m) => m.layer))].sort((a, b) => a - b);
  const layerChoices = layerList.length < table.L ? [null, layerList] : [null];
  for (const kind of /** @type {const} */ (['shortName', 'slotName'])) {
    const names = uniqueSorted(mods.map((m) => m[kind]));
    for (const layers of layerChoices) {
      /** @type {TargetRule} */
      const rule = { targets: names, exclude: null, layers, layersPattern: layers ? [table.container] : null };
      if (table.all.every((m) => isTargeted(rule, m.path) === present.has(m.index))) {
        return { targets: names, layers, layersPattern: rule.layersPattern };
      }
    }
  }
  return { targets: mods.map((m) => m.path).sort(), layers: null, layersPattern: null };
}

/**
 * @typedef {object} PeftFiles
 * @property {Record<string, unknown>} config the adapter_config.json object
 * @property {{ 'adapter_config.json': string, 'adapter_model.safetensors': Uint8Array }} files
 */

/**
 * Export an adapter in PEFT's layout: keys base_model.model.<module path>.lora_A.weight (r, in) and .lora_B.weight
 * (out, r) (Linear orientation for GPT-2's Conv1D too, with fan_in_fan_out true, as PEFT does), r and lora_alpha the
 * most common values and rank_pattern / alpha_pattern (keyed by full module path) for the modules that differ.
 * For a llama2.c model, q_proj / k_proj lora_B rows are written in Hugging Face's rotate-half order.
 * With `portable`, the same adapter is written in the form every tool reads alike: use_rslora false, no
 * alpha_pattern, one lora_alpha, and each module's remaining scale folded into its lora_B (see singleAlphaForm);
 * rank_pattern stays when ranks differ, since the tensor shapes need it.
 * @param {import('../core/core.js').ModelLike} model the model the adapter was created for
 * @param {import('../core/core.js').Adapter} adapter
 * @param {{ baseModel?: string | null, revision?: string | null, baseFingerprint?: string | null, dropout?: number,
 *   useRslora?: boolean, portable?: boolean, extraMetadata?: Record<string, string> }} [options] useRslora overrides
 *   what the module scales imply; baseModel / revision: the Hub id or URL the base came from, and its revision
 * @returns {PeftFiles}
 */
export function adapterToPeft(model, adapter, options = {}) {
  const { baseModel = null, revision = null, baseFingerprint = null, dropout = 0, portable = false, extraMetadata = {} } = options;
  if (baseModel !== null && typeof baseModel !== 'string') throw new LoraSpecError('baseModel must be a string or null');
  if (revision !== null && typeof revision !== 'string') throw new LoraSpecError('revision must be a string or null');
  if (typeof portable !== 'boolean') throw new LoraSpecError('portable must be a boolean');
  if (baseFingerprint !== null && typeof baseFingerprint !== 'string') throw new LoraSpecError('baseFingerprint must be a string or null');
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new LoraSpecError(`dropout must be in [0, 1), got ${JSON.stringify(dropout)}`);
  if (!extraMetadata || typeof extraMetadata !== 'object' || Array.isArray(extraMetadata)) throw new LoraSpecError('extraMetadata must be an object of strings');
  const table = moduleTable(model);
  const mods = adapter.modules();
  if (!mods.length) throw new LoraSpecError('the adapter has no modules');
  for (const m of mods) {
    const entry = entryOf(table, m.layer, m.slot);
    if (!entry || entry.inFeatures !== m.inFeatures || entry.outFeatures !== m.outFeatures) {
      throw new AdapterModelMismatchError(`adapter module (layer ${m.layer}, slot ${m.slot}, ${m.outFeatures}x${m.inFeatures}) does not fit this ${table.arch} model`);
    }
  }

  // The core keeps alpha and scale per module but not whether the scale came from rsLoRA: the scales tell.
  let useRslora = options.useRslora;
  if (useRslora !== undefined && typeof useRslora !== 'boolean') throw new LoraSpecError('useRslora must be a boolean');
  if (portable && useRslora) throw new LoraSpecError('a portable adapter has plain alpha / r scaling: useRslora cannot be true');
  if (useRslora === undefined) {
    const plain = mods.filter((m) => coreScale(m.alpha, m.rank, false) === m.scale).length;
    const rs = mods.filter((m) => coreScale(m.alpha, m.rank, true) === m.scale).length;
    useRslora = !portable && rs > plain;
  }
  const single = portable ? singleAlphaForm(mods) : null;
  const rows = mods.map((m, i) => ({ m, entry: /** @type {ModuleEntry} */ (entryOf(table, m.layer, m.slot)),
    alpha: single ? single.alpha : effectiveAlpha(m, useRslora), factor: single ? single.factors[i] : 1 }));
  const r = mostCommon(rows.map((x) => x.m.rank));
  const alpha = mostCommon(rows.map((x) => x.alpha));
  /** @type {Record<string, number>} */
  const rankPattern = {};
  /** @type {Record<string, number>} */
  const alphaPattern = {};
  const tensors = [];
  for (const { m, entry, alpha: a, factor } of rows) {
    if (m.rank !== r) rankPattern[entry.path] = m.rank;
    if (a !== alpha) alphaPattern[entry.path] = shortestF32(a);
    // Copies: the views are live wasm memory.
    tensors.push({ name: factorKey(entry, 'A'), shape: [m.rank, m.inFeatures], data: adapter.view(m.A, m.rank * m.inFeatures).slice() });
    let B = foldIntoB(adapter.view(m.B, m.outFeatures * m.rank).slice(), factor);
    const heads = m.layer === MODEL_LAYER ? undefined : table.ropeHeads.get(m.slot);
    if (heads) B = permuteRopeRows(B, heads, table.headDim, m.rank, true);
    tensors.push({ name: factorKey(entry, 'B'), shape: [m.outFeatures, m.rank], data: B });
    if (m.magnitude) {
      let mag = adapter.view(m.magnitude, m.outFeatures).slice();
      if (heads) mag = permuteRopeRows(mag, heads, table.headDim, 1, true);
      tensors.push({ name: `${KEY_PREFIX}${entry.path}.lora_magnitude_vector`, shape: [m.outFeatures], data: mag });
    }
  }
  const cover = coverTargets(table, new Set(rows.map((x) => x.entry.index)));

  /** @type {Record<string, string>} */
  const metadata = { format: 'pt' };
  if (baseFingerprint !== null) metadata[FINGERPRINT_KEY] = baseFingerprint;
  const blocked = rows.filter((x) => x.m.rowBlocks);
  if (blocked.length) {
    const masks = new Set(blocked.map((x) => x.m.blockMask));
    if (masks.size > 1 || blocked.some((x) => x.m.rowBlocks !== 3 || x.entry.shortName !== 'c_attn')) {
      throw new LoraSpecError('only GPT-2 c_attn modules that all adapt the same q, k, v blocks can be written as MergedLinear files');
    }
    metadata[ENABLE_LORA_KEY] = qkvNames(blocked[0].m.blockMask);
  }
  for (const [k, v] of Object.entries(extraMetadata)) {
    if (k in metadata) throw new LoraSpecError(`extraMetadata cannot set "${k}"`);
    if (typeof v !== 'string') throw new LoraSpecError(`extraMetadata["${k}"] must be a string`);
    metadata[k] = v;
  }
  const bytes = writeSafetensors(tensors, { metadata });

  // Key order as PEFT writes it (json.dumps(sort_keys=True)).
  const config = {
    alpha_pattern: alphaPattern,
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: table.conv1d,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: cover.layersPattern ? cover.layersPattern[0] : null,
    layers_to_transform: cover.layers,
    lora_alpha: shortestF32(alpha),
    lora_dropout: dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r,
    rank_pattern: rankPattern,
    revision,
    target_modules: cover.targets,
    task_type: 'CAUSAL_LM',
    use_dora: adapter.isDora,
    use_rslora: useRslora,
  };
  return { config, files: { [CONFIG_FILE]: JSON.stringify(config, null, 2), [WEIGHTS_FILE]: bytes } };
}

// ---------------------------------------------------------------------------------------------------------------
// Loading

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

  const fileFingerprint = st.metadata[FINGERPRINT_KEY];
  if (baseFingerprint !== null && fileFingerprint !== undefined && fileFingerprint !== baseFingerprint && !allowFingerprintMismatch) {
    throw new BaseModelMismatchError(`this adapter was trained on other base weights (fingerprint ${fileFingerprint}); the loaded model's fingerprint is ${baseFingerprint}`,
      { details: { expected: fileFingerprint, actual: baseFingerprint } });
  }

  // Sort every tensor into a LoRA factor of one of the model's modules, a LoRA factor of a module the model
  // lacks, or something this library cannot use.
  /** @type {Map<number, { A?: string, B?: string, M?: string }>} tensor names of each module's factors (M: DoRA magnitude) */
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

  if (cfg.rule) {
    const rule = cfg.rule;
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
