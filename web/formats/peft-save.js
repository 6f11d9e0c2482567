// peft-save.js: a core Adapter written as PEFT files (adapter_config.json + adapter_model.safetensors), in PEFT's own
// form or in the portable single-alpha form, and the scale arithmetic both need.
import { AdapterModelMismatchError, LoraSpecError } from '../errors.js';
import { MODEL_LAYER } from '../core/core.js';
import {
  CONFIG_FILE, ENABLE_LORA_KEY, FINGERPRINT_KEY, KEY_PREFIX, WEIGHTS_FILE, entryOf, factorKey, isTargeted, moduleTable,
  permuteRopeRows, qkvNames, uniqueSorted,
} from './peft.js';
import { writeSafetensors } from './safetensors.js';

/**
 * @typedef {import('./peft.js').ModuleEntry} ModuleEntry
 * @typedef {import('./peft.js').ModuleTable} ModuleTable
 * @typedef {import('./peft.js').TargetRule} TargetRule
 */

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
