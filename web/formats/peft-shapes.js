// peft-shapes.js: adapter files without their base model: the module shapes they imply and the base they name, so that
// an engine can resize and combine adapters with the core's SVD when the model itself is not at hand.
import { InvalidAdapterError, UnsupportedAdapterError } from '../errors.js';
import { ARCHITECTURES, ModuleShapes } from '../core/core.js';
import { CONFIG_FILE, FINGERPRINT_KEY, WEIGHTS_FILE } from './peft.js';

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
 * The module shapes one or more adapters' files imply (module paths and factor shapes), as a model without weights
 * that adapters can be loaded onto, resized, combined and written from (LocalEngine.forAdapters). Slots no file
 * mentions stay unknown (0 x 0).
 * @param {import('../core/core.js').Core} core
 * @param {Array<Record<string, any>>} fileSets
 * @returns {ModuleShapes}
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
      const slot = ARCHITECTURES[a].slots.findIndex((d) => d.name === m[3]);
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
  const slots = ARCHITECTURES[arch].slots.map((d) => d.name);
  return new ModuleShapes(core, { arch, nLayers, slots, container: ARCHITECTURES[arch].blocks, inFeatures: slots.map((_, s) => inF.get(s) ?? 0),
    outFeatures: slots.map((_, s) => outF.get(s) ?? 0) });
}

/**
 * What adapter files say about the base model they were made for: weblora's fingerprint of its weights, and the
 * Hub id (or URL) and revision PEFT's adapter_config.json names.
 * @param {import('../core/core.js').Core} core
 * @param {Record<string, any>} files
 * @returns {{ fingerprint: string | null, baseModel: string | null, revision: string | null }}
 */
export function adapterFileBase(core, files) {
  const st = core.parseSafetensors(bytesOf(files, WEIGHTS_FILE));
  const cfgText = new TextDecoder().decode(bytesOf(files, CONFIG_FILE));
  let cfg;
  try {
    cfg = JSON.parse(cfgText);
  } catch {
    throw new InvalidAdapterError(`${CONFIG_FILE} is not valid JSON`);
  }
  return { fingerprint: st.metadata[FINGERPRINT_KEY] ?? null, baseModel: cfg.base_model_name_or_path ?? null, revision: cfg.revision ?? null };
}
