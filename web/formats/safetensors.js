// safetensors.js: writes safetensors files (F32 from Float32Arrays, or raw bytes of another dtype) with a fixed key
// order, and reads them through the C parser (core.parseSafetensors) so the format rules live in one place.
import { FormatError, InvalidArgumentError, SafetensorsError } from '../errors.js';
import { DTYPE_SIZES } from '../core/core.js';
export { SafetensorsError } from '../errors.js';



// The reference writer pads the header with spaces so the data section starts 8-byte aligned.
const HEADER_ALIGN = 8;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * @typedef {object} F32TensorInput
 * @property {string} name
 * @property {number[]} shape
 * @property {Float32Array} data numel values in row-major order
 */

/**
 * @typedef {object} RawTensorInput
 * @property {string} name
 * @property {number[]} shape
 * @property {keyof typeof DTYPE_SIZES} dtype
 * @property {Uint8Array} bytes numel * dtype size bytes, little-endian, as they go into the file
 */

/** @param {string} message @param {Record<string, unknown>} [details] */
function badInput(message, details) {
  return new InvalidArgumentError(`safetensors writer: ${message}`, { details });
}

/** @param {unknown} shape @param {string} name @returns {number} numel */
function checkShape(shape, name) {
  if (!Array.isArray(shape) || shape.length > 8) throw badInput(`tensor "${name}": shape must be an array of at most 8 dimensions`);
  let numel = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw badInput(`tensor "${name}": shape ${JSON.stringify(shape)} has a bad dimension`);
    numel *= d;
  }
  if (!Number.isSafeInteger(numel)) throw badInput(`tensor "${name}": shape ${JSON.stringify(shape)} is too large`);
  return numel;
}

/**
 * Serialise tensors into a safetensors file. Tensors are laid out in name order (UTF-16 code unit order), so the
 * same tensors always give the same bytes whatever order they were passed in.
 * @param {(F32TensorInput | RawTensorInput)[]} tensors
 * @param {{ metadata?: Record<string, string> }} [options] metadata becomes the header's "__metadata__" (string values)
 * @returns {Uint8Array}
 */
export function writeSafetensors(tensors, options = {}) {
  if (!Array.isArray(tensors)) throw badInput('tensors must be an array');
  const items = tensors.map((t) => {
    if (!t || typeof t.name !== 'string' || t.name.length === 0) throw badInput('every tensor needs a non-empty string name');
    if (t.name === '__metadata__') throw badInput('"__metadata__" cannot name a tensor');
    const numel = checkShape(t.shape, t.name);
    if ('data' in t && t.data !== undefined) {
      if (!(t.data instanceof Float32Array)) throw badInput(`tensor "${t.name}": data must be a Float32Array`);
      if (t.data.length !== numel) {
        throw badInput(`tensor "${t.name}": ${t.data.length} values do not fill shape ${JSON.stringify(t.shape)} (${numel})`);
      }
      return { name: t.name, shape: t.shape, dtype: 'F32', byteLength: numel * 4, f32: t.data, bytes: null };
    }
    // Without data it must be a raw tensor: its dtype and bytes are checked here.
    const { dtype, bytes } = /** @type {RawTensorInput} */ (t);
    const size = DTYPE_SIZES[dtype];
    if (!size) throw badInput(`tensor "${t.name}": unknown dtype ${JSON.stringify(dtype)}`);
    if (!(bytes instanceof Uint8Array)) throw badInput(`tensor "${t.name}": give data (Float32Array) or dtype and bytes (Uint8Array)`);
    if (bytes.byteLength !== numel * size) {
      throw badInput(`tensor "${t.name}": ${bytes.byteLength} bytes do not fill shape ${JSON.stringify(t.shape)} of ${dtype}`);
    }
    return { name: t.name, shape: t.shape, dtype, byteLength: bytes.byteLength, f32: null, bytes };
  });
  items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (let i = 1; i < items.length; i++) {
    if (items[i].name === items[i - 1].name) throw badInput(`tensor name "${items[i].name}" appears twice`);
  }

  /** @type {Record<string, unknown>} */
  const header = {};
  const metadata = options.metadata;
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== 'object' || Array.isArray(metadata)) throw badInput('metadata must be an object of strings');
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw badInput(`metadata value of "${k}" must be a string, got ${typeof v}`);
    }
    // An empty __metadata__ object is valid but pointless; readers treat both the same.
    if (Object.keys(metadata).length) header.__metadata__ = { ...metadata };
  }
  let offset = 0;
  for (const it of items) {
    header[it.name] = { dtype: it.dtype, shape: it.shape, data_offsets: [offset, offset + it.byteLength] };
    offset += it.byteLength;
  }
  if (!Number.isSafeInteger(offset)) throw badInput('the tensors are too large for one file');

  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLen = Math.ceil(json.length / HEADER_ALIGN) * HEADER_ALIGN;
  const out = new Uint8Array(8 + headerLen + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerLen, true);
  view.setUint32(4, Math.floor(headerLen / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  let at = 8 + headerLen;
  for (const it of items) {
    if (it.bytes) {
      out.set(it.bytes, at);
    } else if (LITTLE_ENDIAN) {
      const f = /** @type {Float32Array} */ (it.f32);
      out.set(new Uint8Array(f.buffer, f.byteOffset, f.byteLength), at);
    } else {
      const f = /** @type {Float32Array} */ (it.f32);
      for (let i = 0; i < f.length; i++) view.setFloat32(at + 4 * i, f[i], true);
    }
    at += it.byteLength;
  }
  return out;
}

// F16 bytes labelled BF16 (or the reverse) decode to finite numbers of the wrong size, so nothing else notices.
// What the magnitudes of trained weight matrices look like (the |values| of every matrix of the models and
// adapters in ../shared and of demo/models/default, stored as F16 and as BF16): the upper quartile is 1.72 to
// 4.67 times the lower one, the median 0.003 to 0.21. The same bytes under the other label: F16 read as BF16 spreads
// the quartiles 93 or more apart (median 1.7e-8 or less); BF16 read as F16 squeezes them to 1.07-1.24 apart
// around 0.9-1.6. The bounds below sit between those ranges. A tensor is only called mislabelled when its other
// reading looks like trained weights and it has both signs, as weight matrices do (the rarer sign is at least 37%
// of the values in every one of them; either reading keeps the signs): a genuine matrix of values all near one
// (as narrow as BF16 read as F16) is left alone.
const MIXUP_SAMPLE = 1024;
const MIXUP_MIN_VALUES = 128;
const MIN_SIGN_SHARE = 0.1;
const SPREAD_MIN = 1.45;
const SPREAD_MAX = 30;
const plausible = (s) => s.spread >= SPREAD_MIN && s.spread <= SPREAD_MAX && s.median >= 1e-6 && s.median <= 1e3;

/**
 * Median and quartile ratio of the magnitudes of the nonzero finite values among a strided sample, and the share
 * of the rarer sign.
 */
function magnitudeStats(values) {
  const step = Math.max(1, Math.floor(values.length / MIXUP_SAMPLE));
  const mags = [];
  let negative = 0;
  for (let i = 0; i < values.length && mags.length < MIXUP_SAMPLE; i += step) {
    const m = Math.abs(values[i]);
    if (m > 0 && m < Infinity) {
      mags.push(m);
      if (values[i] < 0) negative++;
    }
  }
  if (mags.length < MIXUP_MIN_VALUES) return null;
  mags.sort((a, b) => a - b);
  const at = (q) => mags[Math.floor(q * (mags.length - 1))];
  return { median: at(0.5), spread: at(0.75) / at(0.25), signShare: Math.min(negative, mags.length - negative) / mags.length };
}

/**
 * A weight matrix stored as F16 or BF16 whose bytes look like the other 16-bit type: its values as labelled are
 * implausible for trained weights (see above) and plausible when read the other way. Cheap: a strided sample.
 * @param {import('../core/core.js').Core} core converts between the two readings
 * @param {Float32Array} values the matrix as decoded under its label
 * @param {'F16'|'BF16'} dtype the label
 * @returns {{ likely: 'F16'|'BF16', message: string } | null} null when nothing is wrong (or too few values tell)
 */
export function halfPrecisionMixup(core, values, dtype) {
  const sample = new Float32Array(Math.min(values.length, MIXUP_SAMPLE));
  const step = Math.max(1, Math.floor(values.length / sample.length));
  for (let i = 0; i < sample.length; i++) sample[i] = values[i * step];
  const asLabelled = magnitudeStats(sample);
  if (!asLabelled || asLabelled.signShare < MIN_SIGN_SHARE) return null;
  const suspicious = dtype === 'BF16'
    ? asLabelled.spread > SPREAD_MAX || asLabelled.median < 1e-6
    : asLabelled.spread < SPREAD_MIN && asLabelled.median >= 0.25 && asLabelled.median <= 4;
  if (!suspicious) return null;
  // The 16 bits each value came from (the core's encoding is exact: f32 holds every F16 and BF16 value), read as
  // the other type.
  const likely = dtype === 'BF16' ? 'F16' : 'BF16';
  const asOther = magnitudeStats(core.decodeFloats(core.encodeFloats(sample, dtype), likely));
  if (!asOther || !plausible(asOther)) return null;
  const show = (s) => `median magnitude ${s.median.toPrecision(2)}, quartiles ${s.spread.toPrecision(3)}x apart`;
  return {
    likely,
    message: `is labelled ${dtype} but its bytes look like ${likely}: read as ${dtype} its values are unlike trained weights `
      + `(${show(asLabelled)}), read as ${likely} they are like them (${show(asOther)}); the file's dtype labels are likely wrong`,
  };
}

/**
 * @typedef {object} SafetensorsEntry
 * @property {string} name
 * @property {string} dtype safetensors dtype name (F32, F16, ...)
 * @property {number[]} shape
 * @property {number} numel
 * @property {Uint8Array} bytes the tensor's bytes (a view into the file buffer)
 */

/**
 * @typedef {object} SafetensorsFile
 * @property {Record<string, string>} metadata the header's __metadata__ ({} when absent)
 * @property {Map<string, SafetensorsEntry>} tensors in header order
 * @property {(name: string) => Float32Array} float32 a tensor widened to f32 (throws for non-float dtypes)
 */

/**
 * Parse and validate a whole safetensors file with the C core's parser.
 * @param {import('../core/core.js').Core} core
 * @param {Uint8Array} bytes
 * @returns {SafetensorsFile}
 */
export function readSafetensors(core, bytes) {
  if (!(bytes instanceof Uint8Array)) {
    throw new InvalidArgumentError('safetensors: expected the file as a Uint8Array');
  }
  let parsed;
  try {
    parsed = core.parseSafetensors(bytes);
  } catch (err) {
    // The core's BAD_FORMAT (a FormatError) is a safetensors file that does not parse; other failures keep their class.
    if (!(err instanceof FormatError) || err instanceof SafetensorsError) throw err;
    throw new SafetensorsError(err.message, { code: err.code, cause: err });
  }
  /** @type {Map<string, SafetensorsEntry>} */
  const tensors = new Map();
  for (const t of parsed.tensors) {
    const begin = parsed.dataStart + t.begin;
    tensors.set(t.name, {
      name: t.name, dtype: t.dtype, shape: t.shape, numel: t.shape.reduce((a, b) => a * b, 1),
      bytes: bytes.subarray(begin, parsed.dataStart + t.end),
    });
  }
  return {
    metadata: parsed.metadata,
    tensors,
    float32(name) {
      const t = tensors.get(name);
      if (!t) throw new SafetensorsError(`safetensors: no tensor named "${name}"`, { code: 'NO_SUCH_TENSOR' });
      try {
        return core.decodeFloats(t.bytes, t.dtype);
      } catch (err) {
        throw new SafetensorsError(`safetensors: tensor "${name}": ${err.message}`, { code: err.code === 'UNSUPPORTED' ? 'UNSUPPORTED_DTYPE' : err.code,
          cause: err, details: { dtype: t.dtype } });
      }
    },
  };
}
