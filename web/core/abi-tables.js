// abi-tables.js: the C core's enums, limits, architectures and struct layouts as the binding uses them, all taken
// from web/core/abi.js (which the build writes from the module's own description, src/wasm/abi.c).
import { ABI } from './abi.js';
import { CoreError } from '../errors.js';

export const Arch = Object.freeze({ ...ABI.arch });
export const RopeLayout = Object.freeze({ ...ABI.ropeLayout });
export const ForwardFlags = Object.freeze({ ...ABI.forwardFlags });
export const ReserveFlags = Object.freeze({ ...ABI.reserveFlags });
export const DType = Object.freeze({ ...ABI.dtype });

/** The value a name has in one of the ABI's enums, or undefined for a name it does not have. */
export const enumValue = (table, name) => (Object.hasOwn(table, name) ? table[name] : undefined);
export const DTYPE_NAMES = Object.freeze(Object.fromEntries(Object.entries(DType).map(([k, v]) => [v, k])));
/** Bytes per element of each dtype, by its safetensors name. */
export const DTYPE_SIZES = Object.freeze(Object.fromEntries(Object.entries(DType).map(([k, v]) => [k, ABI.dtypeSize[v]])));
export const LoraInit = Object.freeze({ ...ABI.loraInit });
/** How a model stores its matrices (wl_storage): f32, or llama.cpp Q8_0 / Q4_1 blocks (q4: the embedding and head in Q8). */
export const STORAGE_NAMES = Object.freeze(Object.keys(ABI.storage).sort((a, b) => ABI.storage[a] - ABI.storage[b]));
/** The C parser's limit on a safetensors JSON header (bytes). */
export const SAFETENSORS_MAX_HEADER = ABI.limits.safetensorsMaxHeader;
/** Model-level LoRA modules (token embedding, LM head) sit at this layer, in these slots. */
export const MODEL_LAYER = ABI.limits.loraModelLayer;
export const EMBED_SLOT = ABI.limits.loraEmbedSlot;
export const HEAD_SLOT = ABI.limits.loraHeadSlot;

/** @param {{ blocks: string, slots: readonly (readonly [string, number, number])[] }} arch */
const archModules = ({ blocks, slots }) => Object.freeze({
  blocks, slots: slots.map(([name, hasBias, conv1d]) => Object.freeze({ name, hasBias: hasBias === 1, conv1d: conv1d === 1 })),
});
/**
 * Each architecture's LoRA-capable block modules: where its blocks sit ('model.layers') and per slot the module's
 * path inside a block ('self_attn.q_proj'), whether it has a bias and whether files store it (in, out) (Conv1D).
 */
export const ARCHITECTURES = Object.freeze({ llama: archModules(ABI.architectures.llama), gpt2: archModules(ABI.architectures.gpt2) });

/**
 * A struct of the C API as this binding uses it: the fields it reads, at the offsets and with the types web/core/abi.js
 * gives. `complete`: the binding also writes the struct, so it must know every field. A field the core lacks (or,
 * when complete, one the binding lacks) is an error as soon as this module loads.
 * @param {string} struct @param {string[]} fields @param {{ complete?: boolean }} [opts]
 */
export function structLayout(struct, fields, { complete = false } = {}) {
  const desc = /** @type {Record<string, { size: number, fields: readonly (readonly [string, number, string, number])[] }>} */ (ABI.structs)[struct];
  if (!desc) throw new CoreError(`web/core/abi.js describes no struct ${struct}`, { code: 'ABI_MISMATCH' });
  const byName = new Map(desc.fields.map(([name, offset, type, count]) => [name, { offset, type, count }]));
  const missing = fields.filter((f) => !byName.has(f));
  const unknown = complete ? [...byName.keys()].filter((f) => !fields.includes(f)) : [];
  if (missing.length || unknown.length) {
    throw new CoreError(`web/core/core.js and the C core disagree on ${struct}: `
      + [missing.length ? `the core has no ${missing.join(', ')}` : '', unknown.length ? `the binding does not know ${unknown.join(', ')}` : '']
        .filter(Boolean).join('; '), { code: 'ABI_MISMATCH' });
  }
  return { size: desc.size, fields: fields.map((name) => ({ name, ...byName.get(name) })) };
}

const I64_HIGH = 2 ** 32;
/** The fields of a struct at ptr, by C name (i64 and u32 as numbers, str as a string, arrays for count > 1). */
export function readStruct(wasm, layout, ptr) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const { name, offset, type, count } of layout.fields) {
    const at = ptr + offset;
    const one = (k) => {
      switch (type) {
        case 'i32': return wasm.i32[(at >>> 2) + k];
        case 'f32': return wasm.f32[(at >>> 2) + k];
        case 'f64': return wasm.f64[(at >>> 3) + k];
        case 'i64': return wasm.u32[(at >>> 2) + 2 * k] + wasm.i32[(at >>> 2) + 2 * k + 1] * I64_HIGH;
        case 'str': return wasm.readString(wasm.u32[(at >>> 2) + k]);
        default: return wasm.u32[(at >>> 2) + k]; // u32, ptr
      }
    };
    out[name] = count === 1 ? one(0) : Array.from({ length: count }, (_, k) => one(k));
  }
  return out;
}

export const IGNORE_ID = -100;

/** Split a non-negative integer seed into u32 halves (the exports take no i64). */
export function seedHalves(seed) {
  const s = BigInt.asUintN(64, BigInt(seed ?? 0));
  return [Number(s & 0xffffffffn), Number(s >> 32n)];
}
