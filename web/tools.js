// tools.js: adapter tools that need only PEFT files, not the base model: rank reduction and PEFT-style combination.
// The model shape is read off the files (module paths and factor shapes), and the work is done by the core's SVD.
import { InvalidAdapterError, UnsupportedAdapterError } from './errors.js';
import { ARCHITECTURES, Arch } from './core.js';
import { CONFIG_FILE, FINGERPRINT_KEY, WEIGHTS_FILE, adapterToPeft, peftToAdapter } from './peft.js';

const BLOCKS = Object.values(ARCHITECTURES).map((a) => a.blocks.replaceAll('.', '\\.')).join('|');
const KEY = new RegExp(`^base_model\\.model\\.(${BLOCKS})\\.(\\d+)\\.(.+)\\.lora_([AB])(?:\\.[^.]+)?\\.weight$`);
// LoRA on the token embedding or the LM head (PEFT's Embedding and lm_head keys)
const MODEL_LEVEL_KEY = /^base_model\.model\.(?:(?:model\.embed_tokens|transformer\.wte)\.lora_embedding_[AB]|lm_head\.lora_[AB](?:\.[^.]+)?\.weight)$/;

function bytesOf(files, name) {
  const v = files[name];
  if (v === undefined) throw new InvalidAdapterError(`${name} is missing`, { details: { file: name } });
  return typeof v === 'string' ? new TextEncoder().encode(v) : v instanceof ArrayBuffer ? new Uint8Array(v) : v;
}

/**
 * A stand-in for a model that answers what the PEFT code asks (module table, paths), built from the shapes of the
 * factors in one or more adapters' files. Slots no file mentions stay unknown (0 x 0).
 * @param {import('./core.js').Core} core
 * @param {Array<Record<string, any>>} fileSets
 * @returns {import('./core.js').ModelLike}
 */
export function shapeFromFiles(core, fileSets) {
  /** @type {'gpt2' | 'llama' | null} */
  let arch = null;
  let nLayers = 0;
  const inF = new Map();
  const outF = new Map();
  for (const files of fileSets) {
    const st = core.parseSafetensors(bytesOf(files, WEIGHTS_FILE));
    for (const t of st.tensors) {
      if (MODEL_LEVEL_KEY.test(t.name)) {
        throw new UnsupportedAdapterError(`${t.name}: adapters with LoRA on the token embedding or the LM head cannot be resized or combined (only block modules can)`,
          { details: { key: t.name } });
      }
      const m = KEY.exec(t.name);
      if (!m) continue;
      const a = /** @type {'gpt2' | 'llama'} */ (Object.keys(ARCHITECTURES).find((k) => ARCHITECTURES[k].blocks === m[1]));
      if (arch && arch !== a) throw new InvalidAdapterError('the adapters were made for different model architectures');
      arch = a;
      const slot = ARCHITECTURES[a].slots.findIndex((s) => s.name === m[3]);
      if (slot < 0) throw new InvalidAdapterError(`${t.name}: ${m[3]} is not a LoRA-capable module of a ${a} model`);
      nLayers = Math.max(nLayers, Number(m[2]) + 1);
      const [rows, cols] = t.shape;
      const set = (map, v, what) => {
        if (map.has(slot) && map.get(slot) !== v) throw new InvalidAdapterError(`${m[3]} has ${what} ${map.get(slot)} in one place and ${v} in another`);
        map.set(slot, v);
      };
      if (m[4] === 'A') set(inF, cols, 'input size');
      else set(outF, rows, 'output size');
    }
  }
  if (!arch) throw new InvalidAdapterError(`${WEIGHTS_FILE} holds no LoRA weights of a Llama or GPT-2 model`);
  const { blocks, slots } = ARCHITECTURES[arch];
  const names = slots.map((s) => s.name);
  const shape = { arch: arch === 'gpt2' ? Arch.GPT2 : Arch.LLAMA, nLayers, inFeatures: names.map((_, s) => inF.get(s) ?? 0),
    outFeatures: names.map((_, s) => outF.get(s) ?? 0) };
  return {
    core, ptr: 0, shape, arch,
    config: { arch: shape.arch, nLayers, ropeLayout: 0, nHeads: 0, nKvHeads: 0, headDim: 0 },
    modules: () => slots.map(({ name, hasBias, conv1d }, slot) => ({ slot, name, shortName: name.split('.').pop(),
      inFeatures: shape.inFeatures[slot], outFeatures: shape.outFeatures[slot], hasBias, conv1d })),
    modulePath: (layer, slot) => `${blocks}.${layer}.${names[slot]}`,
  };
}

function metaOf(core, files) {
  const st = core.parseSafetensors(bytesOf(files, WEIGHTS_FILE));
  const cfgText = new TextDecoder().decode(bytesOf(files, CONFIG_FILE));
  let cfg;
  try {
    cfg = JSON.parse(cfgText);
  } catch {
    throw new InvalidAdapterError(`${CONFIG_FILE} is not valid JSON`);
  }
  return { fingerprint: st.metadata[FINGERPRINT_KEY] ?? null, baseModel: cfg.base_model_name_or_path ?? null, dropout: cfg.lora_dropout ?? 0 };
}

/** Per-module errors with their paths. */
function named(model, adapter, errors) {
  return adapter.modules().map((m, i) => ({ module: model.modulePath(m.layer, m.slot), rank: m.rank, relError: errors[i] }));
}

/**
 * Reduce an adapter's rank by truncated SVD of each module's update.
 * @param {import('./core.js').Core} core
 * @param {Record<string, any>} files PEFT files
 * @param {{ rank?: number, energy?: number }} opts
 * @returns {{ files: Record<string, any>, config: object, modules: {module: string, rank: number, relError: number}[], totalError: number }}
 */
export function resizeAdapterFiles(core, files, { rank = 0, energy = 0 } = {}) {
  const model = shapeFromFiles(core, [files]);
  const meta = metaOf(core, files);
  const a = peftToAdapter(core, model, files);
  try {
    const r = a.resize(rank, energy);
    try {
      const out = adapterToPeft(model, r.adapter, { baseModel: meta.baseModel, baseFingerprint: meta.fingerprint, dropout: meta.dropout });
      return { ...out, modules: named(model, r.adapter, r.errors), totalError: r.totalError };
    } finally {
      r.adapter.free();
    }
  } finally {
    a.free();
  }
}

/**
 * Combine adapters of the same base model: 'linear', 'cat' or 'svd' (PEFT's add_weighted_adapter).
 * @param {import('./core.js').Core} core
 * @param {Array<{ files: Record<string, any>, weight: number }>} inputs
 * @param {{ type?: 'linear'|'cat'|'svd', rank?: number }} opts
 */
export function combineAdapterFiles(core, inputs, { type = 'svd', rank = 0 } = {}) {
  if (!inputs.length) throw new InvalidAdapterError('nothing to combine');
  const model = shapeFromFiles(core, inputs.map((x) => x.files));
  const metas = inputs.map((x) => metaOf(core, x.files));
  const prints = new Set(metas.map((m) => m.fingerprint).filter(Boolean));
  if (prints.size > 1) {
    throw new InvalidAdapterError(`the adapters were trained on different base models (fingerprints ${[...prints].join(', ')})`, { code: 'BASE_MODEL_MISMATCH' });
  }
  const adapters = [];
  try {
    for (const x of inputs) adapters.push(peftToAdapter(core, model, x.files));
    const r = core.combineAdapters(adapters, inputs.map((x) => x.weight), { type, rank });
    try {
      const out = adapterToPeft(model, r.adapter, { baseModel: metas[0].baseModel, baseFingerprint: [...prints][0] ?? null });
      return { ...out, modules: named(model, r.adapter, r.errors) };
    } finally {
      r.adapter.free();
    }
  } finally {
    adapters.forEach((a) => a.free());
  }
}
