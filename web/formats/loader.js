// loader.js: builds a core model and its tokenizer from any source: an HF-style base URL, a direct .safetensors
// or llama2.c .bin URL, local Files/Blobs/ArrayBuffers, or (in Node) a local path. Weights are streamed: the
// safetensors header comes first, then tensor bytes go straight into their place in wasm memory chunk by chunk,
// so no second copy of the model is ever held in JavaScript.
import { node } from '#platform';
import { FormatError, IntegrityError, NotFoundError, throwIfAborted, ModelSourceError } from '../errors.js';
import { createSha256, normalizeSha256, sha256Hex } from '../storage/crypto.js';
export { ModelSourceError } from '../errors.js';
import { DType, DTYPE_SIZES, SAFETENSORS_MAX_HEADER, STORAGE_NAMES, ShardLoad, storageId } from '../core/core.js';
import { RemoteFile } from '../fetch/http.js';
import { resolveModelSource } from '../fetch/sources.js';
import { halfPrecisionMixup } from './safetensors.js';
import { isCached } from '../fetch/cache.js';
import { loadTokenizer } from './tokenizer.js';
import { hubFolderUrl, sourceKind } from '../storage/identity.js';
import { env } from '../env.js';

const DEFAULT_CHUNK = 1 << 20;

/**
 * A file that can be read by ranges and streamed: the common face of remote files, Blobs, buffers and paths.
 * @typedef {{ name: string, size: number, readRange(start: number, end: number): Promise<Uint8Array>,
 *   stream(start: number, end: number|null, onChunk: (chunk: Uint8Array, offset: number) => unknown,
 *     opts?: { signal?: AbortSignal }): Promise<number>,
 *   bytes(): Promise<Uint8Array>, text(): Promise<string> }} ByteSource
 */

/**
 * A ByteSource over a function reading bytes [start, end), streamed in chunks of `chunk` bytes.
 * @returns {ByteSource}
 */
function rangeSource(name, size, read, chunk, signal) {
  return {
    name,
    size,
    readRange: read,
    async stream(start, end, onChunk) {
      const stop = end ?? size;
      for (let at = start; at < stop; at += chunk) {
        throwIfAborted(signal);
        await onChunk(await read(at, Math.min(stop, at + chunk)), at);
      }
      return stop;
    },
    bytes: () => read(0, size),
    async text() { return new TextDecoder().decode(await read(0, size)); },
  };
}

/** @returns {ByteSource} bytes already in memory */
function bufferSource(name, data, chunk = DEFAULT_CHUNK) {
  const u8 = data instanceof Uint8Array ? data : new Uint8Array(data);
  return rangeSource(name, u8.byteLength, async (s, e) => u8.subarray(s, e), chunk);
}

/** @returns {ByteSource} a File or Blob read slice by slice */
function blobSource(name, blob, signal, chunk = DEFAULT_CHUNK) {
  return rangeSource(name, blob.size, async (s, e) => new Uint8Array(await blob.slice(s, e).arrayBuffer()), chunk, signal);
}

/** @returns {Promise<ByteSource>} a local file in Node, read by ranges */
async function pathSource(path, signal, chunk = DEFAULT_CHUNK) {
  const { open, stat } = /** @type {NonNullable<typeof node>} */ (node).fs;
  const info = await stat(path);
  const name = path.split(/[\\/]/).pop();
  const read = async (s, e) => {
    const fh = await open(path, 'r');
    try {
      const out = new Uint8Array(e - s);
      let done = 0;
      while (done < out.length) {
        const { bytesRead } = await fh.read(out, done, out.length - done, s + done);
        if (bytesRead === 0) throw new FormatError(`${path}: file ended at byte ${s + done}, expected ${e}`);
        done += bytesRead;
      }
      return out;
    } finally {
      await fh.close();
    }
  };
  return rangeSource(name, info.size, read, chunk, signal);
}

/** @returns {ByteSource} a remote file; RemoteFile itself checks a sha256 pin over every byte it streams */
function remoteSource(file, pin) {
  const src = {
    name: file.file,
    size: file.size,
    pin: pin ?? null,
    used: false,
    get verified() { return file.verified; },
    readRange: (s, e) => { src.used = true; return file.readRange(s, e); },
    stream: (s, e, onChunk, opts) => { src.used = true; return file.stream(s, e, onChunk, opts); },
    bytes: () => { src.used = true; return file.bytes(); },
    text: () => { src.used = true; return file.text(); },
  };
  return src;
}

/**
 * A local source checked against a sha256 pin: a stream that reaches the end of the file hashes every byte from
 * the first (re-reading what lies before its start), so the bytes loaded are the bytes checked.
 * @param {ByteSource} src
 * @param {string} pin normalized hex
 * @returns {ByteSource}
 */
function pinnedLocalSource(src, pin) {
  const out = {
    ...src,
    pin,
    used: false,
    verified: false,
    readRange: (s, e) => { out.used = true; return src.readRange(s, e); },
    async stream(start, end, onChunk, opts) {
      out.used = true;
      const stop = end ?? src.size;
      if (stop !== src.size) return src.stream(start, end, onChunk, opts);
      const hash = createSha256();
      for (let at = 0; at < start; at += DEFAULT_CHUNK) hash.update(await src.readRange(at, Math.min(start, at + DEFAULT_CHUNK)));
      const reached = await src.stream(start, end, async (chunk, offset) => {
        hash.update(chunk);
        await onChunk(chunk, offset);
      }, opts);
      check(hash.hex());
      return reached;
    },
    async bytes() {
      out.used = true;
      const b = await src.bytes();
      check(await sha256Hex(b));
      return b;
    },
    async text() { return new TextDecoder().decode(await out.bytes()); },
  };
  const check = (actual) => {
    if (actual !== pin) throw new IntegrityError(`SHA-256 of ${src.name} is ${actual}, expected ${pin}`, { details: { file: src.name, expected: pin, actual } });
    out.verified = true;
  };
  return out;
}

/**
 * Pins by file name, checked against the files a model really has: a pin for a file that is not there is a typo
 * or a wrong model, never something to skip.
 * @param {Record<string, string> | undefined} pins
 * @param {string[]} names
 * @param {string} model for messages
 */
function checkPinNames(pins, names, model) {
  for (const name of Object.keys(pins ?? {})) {
    if (!names.includes(name)) {
      throw new ModelSourceError(`a SHA-256 pin names ${name}, which is not a file of ${model} (its files: ${names.join(', ')})`, { code: 'UNKNOWN_FILE' });
    }
  }
}

/** After a load: every pinned file that was read must have been verified over all of its bytes. */
function assertPinsVerified(files) {
  for (const [name, src] of files) {
    if (src.pin && src.used && !src.verified) {
      throw new IntegrityError(`${name} is pinned by SHA-256 but was not read in full, so it could not be verified`, { details: { file: name } });
    }
  }
}

function isUrlString(s) {
  return typeof s === 'string' && /^(https?|blob|data):/i.test(s);
}

/** A value as a message shows it. */
function describeValue(value) {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 200 ? `${value.slice(0, 200)}…` : value);
  if (typeof value !== 'object') return `${typeof value} ${String(value)}`;
  return Object.getPrototypeOf(value)?.constructor?.name ?? 'an object';
}

/**
 * Where a model source given as a string or URL is: { url } to fetch, or { path } of a local file or folder (Node).
 * Absolute URLs stay; in Node an existing path is a path; a Hugging Face id ("org/name") is its folder on
 * options.remoteHost (else env.remoteHost) at options.revision; anything else is a URL relative to the page's
 * base URL or the worker's location (the client resolves it against the page before it reaches a worker).
 * @param {string | URL} source
 * @param {{ remoteHost?: string | URL, revision?: string }} options
 * @returns {Promise<{ url: string, hubId?: string } | { path: string }>}
 */
async function locate(source, options) {
  if (source instanceof URL) return { url: source.href };
  const text = source.trim();
  if (!text) throw new ModelSourceError('the model source is an empty string: pass a URL, a Hugging Face id (org/name) or a path');
  const kind = sourceKind(text);
  if (kind === 'url') {
    if (isUrlString(text)) return { url: text };
    throw new ModelSourceError(`cannot fetch the model source ${describeValue(text)}: only http(s), blob: and data: URLs are read`);
  }
  if (node && (await node.fs.stat(text).then(() => true, () => false))) return { path: text };
  if (kind === 'hub') {
    const url = hubFolderUrl(text, { revision: options.revision, host: options.remoteHost ?? env.remoteHost });
    return { url, hubId: text };
  }
  if (node) {
    throw new ModelSourceError(`model not found: ${describeValue(text)} is neither a file or folder here, an http(s) URL, nor a Hugging Face id (org/name)`);
  }
  const base = globalThis.document?.baseURI ?? globalThis.location?.href;
  if (!base) throw new ModelSourceError(`the model source ${describeValue(text)} is a relative URL and there is no page or worker location to resolve it against`);
  return { url: new URL(text, base).href };
}

/**
 * Gather the files of a source: a map from file name to ByteSource, and what kind of model it is.
 * @returns {Promise<{ kind: 'hf'|'safetensors'|'llama2c', name: string, files: Map<string, ByteSource>,
 *   location: string | null }>} location: the URL or path the files came from
 */
async function gatherFiles(source, options) {
  const { signal, onProgress } = options;
  // Local sources are read in chunks of this size (tests use odd sizes to cross tensor and element boundaries).
  const chunk = options.chunkSize ?? DEFAULT_CHUNK;
  /** @type {Map<string, ByteSource>} */
  const files = new Map();
  const where = source instanceof URL || typeof source === 'string' ? await locate(source, options) : null;
  if (where && 'url' in where) {
    const url = where.url;
    const name = options.name ?? where.hubId ?? url;
    const fileOptions = { fetch: options.fetch, signal, onProgress, cache: options.cache, cacheName: options.cacheName,
      cacheKey: options.cacheKey, retries: options.retries, backoffMs: options.backoffMs, revalidate: options.revalidate, name };
    const plan = await resolveModelSource(url, { ...fileOptions, sha256: options.sha256, tokenizerUrl: options.tokenizerUrl,
      configUrl: options.configUrl });
    // Offline, a cached model must not wait on optional files that were never there (no tokenizer_config.json).
    const weights = plan.files.find((f) => f.required && /\.(safetensors|bin)$/i.test(f.name));
    const cachedModel = !!weights && (await isCached(weights.url, fileOptions));
    for (const f of plan.files) {
      if (!f.required && cachedModel && !(await isCached(f.url, fileOptions))) continue;
      let remote = f.opened;
      try {
        remote ??= await RemoteFile.open(f.url, { ...fileOptions, file: f.name, base: plan.base, sha256: f.sha256 });
      } catch (err) {
        if (!f.required && err instanceof NotFoundError) continue;
        throw err;
      }
      files.set(f.name, remoteSource(remote, f.sha256));
    }
    checkPinNames(options.sha256, plan.files.map((f) => f.name), url);
    return { kind: plan.kind, name, files, location: url };
  }
  if (where && node) {
    const { stat, readdir } = node.fs;
    const pathMod = node.path;
    const source = /** @type {{ path: string }} */ (where).path;
    const info = await stat(source);
    if (info.isDirectory()) {
      for (const entry of await readdir(source)) {
        if (/\.(json|safetensors|bin|model)$/i.test(entry)) files.set(entry, await pathSource(pathMod.join(source, entry), signal, chunk));
      }
    } else {
      files.set(pathMod.basename(source), await pathSource(source, signal, chunk));
      // A llama2.c checkpoint's tokenizer usually sits next to it.
      const dir = pathMod.dirname(source);
      for (const entry of await readdir(dir)) {
        if (/^tok.*\.bin$|^tokenizer\.(bin|json)$/i.test(entry) && entry !== pathMod.basename(source)) {
          files.set(entry, await pathSource(pathMod.join(dir, entry), signal, chunk));
        }
      }
    }
    return { kind: guessKind(files), name: options.name ?? source, files: pinLocal(files, options.sha256, source), location: source };
  }
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    const bytes = source instanceof ArrayBuffer ? new Uint8Array(source) : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    const name = looksLikeSafetensors(bytes) ? 'model.safetensors' : 'model.bin';
    files.set(name, bufferSource(name, bytes, chunk));
    return { kind: name.endsWith('.bin') ? 'llama2c' : 'safetensors', name: options.name ?? 'model', files: pinLocal(files, options.sha256, 'the model'), location: null };
  }
  const list = Array.isArray(source) ? source
    : source && typeof source === 'object' ? Object.entries(source).map(([name, data]) => ({ name, data })) : null;
  if (!list) {
    throw new ModelSourceError(`the model source must be a URL, a Hugging Face id (org/name), a path (Node), an ArrayBuffer, a list of Files or a { name: data } map; got ${describeValue(source)}`);
  }
  for (const item of list) {
    const Blob_ = globalThis.Blob;
    if (Blob_ && item instanceof Blob_) files.set(/** @type {any} */ (item).name, blobSource(/** @type {any} */ (item).name, item, signal, chunk));
    else if (item && typeof item.name === 'string') {
      const d = item.data;
      if (Blob_ && d instanceof Blob_) files.set(item.name, blobSource(item.name, d, signal, chunk));
      else if (typeof d === 'string') files.set(item.name, bufferSource(item.name, new TextEncoder().encode(d), chunk));
      else if (d instanceof ArrayBuffer || ArrayBuffer.isView(d)) files.set(item.name, bufferSource(item.name, d instanceof ArrayBuffer ? d : new Uint8Array(d.buffer, d.byteOffset, d.byteLength), chunk));
      else throw new ModelSourceError(`file ${item.name}: data must be a Blob, ArrayBuffer, typed array or string`);
    } else {
      throw new ModelSourceError('each local file needs a name (File objects, or { name, data })');
    }
  }
  return { kind: guessKind(files), name: options.name ?? 'local model', files: pinLocal(files, options.sha256, 'the local model'), location: null };
}

/** Local files with their pins applied. */
function pinLocal(files, pins, model) {
  checkPinNames(pins, [...files.keys()], model);
  for (const [name, pin] of Object.entries(pins ?? {})) files.set(name, pinnedLocalSource(files.get(name), normalizeSha256(pin)));
  return files;
}

function looksLikeSafetensors(bytes) {
  if (bytes.byteLength < 9) return false;
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  return n > 1n && n < BigInt(SAFETENSORS_MAX_HEADER) && bytes[8] === 0x7b;
}

function guessKind(files) {
  const names = [...files.keys()];
  if (names.some((n) => /\.safetensors$/i.test(n) || /\.safetensors\.index\.json$/i.test(n))) {
    return names.includes('config.json') ? 'hf' : 'safetensors';
  }
  if (names.some((n) => /\.bin$/i.test(n) && !/^tok.*\.bin$|^tokenizer\.bin$/i.test(n))) return 'llama2c';
  throw new ModelSourceError(`no model weights among ${names.join(', ') || 'no files'}: need model.safetensors (+ config.json) or a llama2.c .bin`);
}

/** A sharded model's index (model.safetensors.index.json): its weight_map names each tensor's shard file. */
function parseShardIndex(text, what) {
  let index;
  try {
    index = JSON.parse(text);
  } catch (cause) {
    throw new FormatError(`${what} is not valid JSON: ${/** @type {Error} */ (cause).message}`, { cause });
  }
  const map = index?.weight_map;
  if (!map || typeof map !== 'object' || Array.isArray(map) || !Object.values(map).every((v) => typeof v === 'string')) {
    throw new FormatError(`${what} has no weight_map of tensor names to shard files`);
  }
  return index;
}

/** Weight shards in load order. */
function shardNames(files) {
  const names = [...files.keys()];
  const index = names.find((n) => /\.safetensors\.index\.json$/i.test(n));
  if (index) return { indexName: index, shards: null };
  return { indexName: null, shards: names.filter((n) => /\.safetensors$/i.test(n)).sort() };
}

/**
 * The header of one safetensors file (its first 8 + n bytes) by Range, parsed by the core: a header that does not
 * tile the file exactly is refused here, naming the file.
 * @param {import('../core/core.js').Core} core
 * @param {ByteSource} src
 * @returns {Promise<Uint8Array>}
 */
async function readShardHeader(core, src) {
  if (src.size < 8) throw new FormatError(`${src.name}: ${src.size} bytes is too short for a safetensors file`);
  const first = await src.readRange(0, 8);
  // Kept as a BigInt for the message: a hostile u64 printed through a double would show a rounded number.
  const declared = new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true);
  if (declared > BigInt(SAFETENSORS_MAX_HEADER) || 8n + declared > BigInt(src.size)) {
    throw new FormatError(`${src.name}: header length ${declared} is larger than allowed (${SAFETENSORS_MAX_HEADER} bytes) or than the ${src.size}-byte file`);
  }
  const header = await src.readRange(0, 8 + Number(declared));
  try {
    core.parseSafetensors(header, src.size);
  } catch (err) {
    throw new FormatError(`${src.name}: ${err.message}`, { code: err.code, cause: err });
  }
  return header;
}

/**
 * Every shard's header, checked against the config before the model is allocated (wl_config_check_shards): files
 * that do not belong to the config, a tensor of the wrong name, dtype or shape, one stored twice or missing, or a
 * buffer larger than the config gives it, fail here with nothing reserved and no tensor bytes fetched.
 * @param {import('../core/core.js').Core} core
 * @param {Record<string, number>} cfg
 * @param {string} name
 * @param {ByteSource[]} sources
 * @returns {Promise<Uint8Array[]>} the headers, in the order of sources
 */
async function checkShardHeaders(core, cfg, name, sources) {
  const headers = [];
  for (const src of sources) headers.push(await readShardHeader(core, src));
  try {
    core.checkShards(cfg, headers.map((header, i) => ({ header, fileSize: sources[i].size })));
  } catch (err) {
    // The core's code (BAD_FORMAT, SHAPE_MISMATCH, UNSUPPORTED...); its NOT_FOUND means a model tensor no shard holds.
    const where = sources.length === 1 ? sources[0].name : name;
    throw new FormatError(`${where}: ${err.message}`, { code: err.code === 'NOT_FOUND' ? 'MISSING_TENSOR' : err.code, cause: err });
  }
  return headers;
}

/**
 * Stream one safetensors file into the model: the core's plan of its header, then tensor bytes into place.
 * @param {ShardLoad} load
 * @param {ByteSource} src
 * @param {Uint8Array} header its first bytes, as readShardHeader read them
 * @param {Map<number, string>} halfMatrices model tensor index -> F16 or BF16, for the matrices stored that way
 */
async function streamSafetensors(load, src, header, signal, halfMatrices) {
  const { model } = load;
  let st;
  try {
    st = load.plan(header, src.size);
  } catch (err) {
    // checkShardHeaders planned this header on the config already: a failure here is the core's, not the file's
    throw new FormatError(`${src.name}: ${err.message}`, { code: err.code, cause: err });
  }
  const plan = st.tensors.map((t) => ({ ...t, esize: DTYPE_SIZES[t.dtype] })).sort((a, b) => a.begin - b.begin);
  const table = model.tensors();
  for (const t of plan) {
    if (t.index >= 0 && (t.dtype === 'F16' || t.dtype === 'BF16') && table[t.index].ndim === 2) halfMatrices.set(t.index, t.dtype);
  }
  await streamTensorBytes(model, src, plan, st.dataStart, table, signal);
}

/**
 * Stream the bytes of a file from dataStart to its end into the model tensors of `plan` (entries { index, dtypeId,
 * esize, begin, end } with byte offsets relative to dataStart, sorted, bytes between entries skipped; index -1 skips an
 * entry), each written as its
 * bytes arrive: the full-precision model is never held, in wasm or in JS.
 */
async function streamTensorBytes(model, src, plan, dataStart, table, signal) {
  // Chunks arrive at arbitrary byte boundaries: carry a partial element over to the next chunk.
  let k = 0;
  let carry = new Uint8Array(0);
  await src.stream(dataStart, src.size, (chunk, offset) => {
    throwIfAborted(signal);
    let pos = offset - dataStart; // position in the data section
    let bytes = chunk;
    while (bytes.byteLength > 0 && k < plan.length) {
      const t = plan[k];
      if (pos >= t.end) {
        k++;
        continue;
      }
      if (pos < t.begin) { // bytes between tensors (a llama2.c header or its legacy RoPE tables)
        const gap = Math.min(bytes.byteLength, t.begin - pos);
        pos += gap;
        bytes = bytes.subarray(gap);
        continue;
      }
      const take = Math.min(bytes.byteLength, t.end - pos);
      if (t.index >= 0) {
        let seg = bytes.subarray(0, take);
        let segStart = pos - t.begin;
        if (carry.byteLength) {
          const joined = new Uint8Array(carry.byteLength + seg.byteLength);
          joined.set(carry);
          joined.set(seg, carry.byteLength);
          segStart -= carry.byteLength;
          seg = joined;
          carry = new Uint8Array(0);
        }
        const whole = seg.byteLength - (seg.byteLength % t.esize);
        if (whole > 0) model.writeTensorBytes(t.index, t.dtypeId, segStart / t.esize, seg.subarray(0, whole), table[t.index]);
        if (whole < seg.byteLength) carry = seg.slice(whole);
      }
      pos += take;
      bytes = bytes.subarray(take);
      if (pos >= t.end) k++;
    }
  }, { signal });
  if (carry.byteLength) throw new FormatError(`${src.name}: a tensor ends in the middle of an element`);
}

/** Room kept beside the weights for activations, KV cache, the adapter and its optimizer, the tokenizer. */
export const MEMORY_HEADROOM_BYTES = 512 * 2 ** 20;
/** wasm32's address space: the most memory a core can grow to. */
export const WASM_MEMORY_LIMIT_BYTES = 4 * 2 ** 30;

/**
 * Refuse, before any weights arrive, a model whose weights in `dtype` plus the headroom would not fit the core's
 * memory, naming the dtype that would.
 */
export function checkMemory(core, cfg, dtype, name) {
  const inUse = core.wasm.memory?.buffer?.byteLength ?? 0;
  const room = WASM_MEMORY_LIMIT_BYTES - inUse - MEMORY_HEADROOM_BYTES;
  const need = core.weightBytes(cfg, dtype);
  if (need <= room) return;
  const fits = STORAGE_NAMES.find((d) => core.weightBytes(cfg, d) <= room);
  const gb = (n) => `${(n / 2 ** 30).toFixed(2)} GB`;
  throw new ModelSourceError(`${name}: its weights take ${gb(need)} in ${dtype}, more than the ${gb(room)} a WebAssembly core `
    + `has left for them (4 GB address space, ${gb(MEMORY_HEADROOM_BYTES)} kept for activations and the adapter); `
    + (fits ? `load it with { dtype: '${fits}' } (${gb(core.weightBytes(cfg, fits))})` : 'no dtype makes it fit'),
  { code: 'MODEL_TOO_LARGE', details: { dtype, needBytes: need, roomBytes: room, fits: fits ?? null } });
}

/**
 * Load a model and its tokenizer.
 * @param {import('../core/core.js').Core} core
 * @param {any} source
 * @param {{ signal?: AbortSignal, onProgress?: (e: object) => void, tokenizer?: any, name?: string,
 *   fetch?: typeof fetch, cache?: any, cacheName?: string, cacheKey?: any, sha256?: Record<string, string>,
 *   tokenizerUrl?: string, configUrl?: string, retries?: number, backoffMs?: number, dtype?: 'f32'|'q8'|'q4' }} [options]
 * @returns {Promise<{ model: import('../core/core.js').Model, tokenizer: import('./tokenizer.js').Tokenizer|null, name: string,
 *   kind: string, nameOrPath: unknown, location: string | null }>} nameOrPath: config.json's _name_or_path (identity.js
 *   reads it), or null; location: the URL (a Hub id's included) or path the model came from, null for bytes and Files
 */
export async function loadModel(core, source, options = {}) {
  const { signal } = options;
  const dtype = options.dtype ?? 'f32';
  storageId(dtype); // a wrong dtype fails before anything is fetched
  throwIfAborted(signal);
  const { kind, name, files, location } = await gatherFiles(source, options);
  let model = null;
  let nameOrPath = null;
  try {
    if (kind === 'llama2c') {
      const weights = [...files.keys()].find((n) => /\.bin$/i.test(n) && !/^tok.*\.bin$|^tokenizer\.bin$/i.test(n));
      const src = files.get(/** @type {string} */ (weights));
      // Each tensor is written (and, in q8 / q4, quantised) as its bytes stream past: the checkpoint is never held
      // whole beside the model.
      const header = await src.readRange(0, Math.min(28, src.size));
      const cfg = core.configFromLlama2cHeader(header, src.size);
      checkMemory(core, cfg, dtype, name);
      model = core.createModel(cfg, dtype);
      const table = model.tensors();
      const plan = model.llama2cParts(header, src.size).map((p) => ({ index: p.tensor, dtypeId: DType.F32, esize: 4,
        begin: p.offset, end: p.offset + 4 * p.numel }));
      await streamTensorBytes(model, src, plan, 0, table, signal);
    } else {
      const cfgSrc = files.get('config.json');
      if (!cfgSrc) throw new ModelSourceError(`${name}: config.json is missing (a safetensors model needs its Hugging Face config)`);
      const cfgText = await cfgSrc.text();
      const cfg = core.configFromHF(cfgText);
      nameOrPath = JSON.parse(cfgText)?._name_or_path ?? null;
      let { indexName, shards } = shardNames(files);
      if (indexName) {
        const index = parseShardIndex(await files.get(indexName).text(), `${name}: ${indexName}`);
        shards = [...new Set(Object.values(index.weight_map))];
        for (const s of shards) if (!files.has(s)) throw new ModelSourceError(`${name}: shard ${s} named by ${indexName} is missing`);
      }
      if (!shards.length) throw new ModelSourceError(`${name}: no .safetensors weights`);
      const sources = shards.map((s) => files.get(s));
      const headers = await checkShardHeaders(core, cfg, name, sources);
      checkMemory(core, cfg, dtype, name);
      model = core.createModel(cfg, dtype);
      const halfMatrices = new Map();
      const load = new ShardLoad(model);
      try {
        for (const [i, src] of sources.entries()) await streamSafetensors(load, src, headers[i], signal, halfMatrices);
        try {
          load.finish();
        } catch (err) {
          // the core's NOT_FOUND here means a model tensor no shard held
          throw new FormatError(`${name}: ${err.message}`, { code: err.code === 'NOT_FOUND' ? 'MISSING_TENSOR' : err.code, cause: err });
        }
      } finally {
        load.free();
      }
      const table = model.tensors();
      for (const [index, fileDtype] of halfMatrices) {
        // A quantised matrix is judged on its first million dequantised values (enough for the statistics).
        const t = table[index];
        const values = t.quantized ? model.readTensor(t, 0, Math.min(t.numel, 1 << 20)) : model.tensorView(t);
        const mixup = halfPrecisionMixup(core, values, /** @type {'F16'|'BF16'} */ (fileDtype));
        if (mixup) {
          throw new FormatError(`${name}: tensor ${table[index].name} ${mixup.message}`, { code: 'DTYPE_MISMATCH',
            details: { tensor: table[index].name, dtype: fileDtype, likely: mixup.likely } });
        }
      }
    }
    model.checkFinite();
    const tokenizer = await loadModelTokenizer(files, options.tokenizer, model, signal);
    assertPinsVerified(files);
    return { model, tokenizer, name, kind, nameOrPath, location };
  } catch (err) {
    model?.free();
    throw err;
  }
}

/** One file from a URL, a Node path, a Blob/File or bytes (bytes are taken as tokenizer.bin unless they parse as JSON). */
async function singleFile(source, what, signal) {
  if (source instanceof URL || isUrlString(source)) return remoteSource(await RemoteFile.open(String(source), { signal }));
  if (typeof source === 'string' && node) {
    try {
      return await pathSource(source, signal);
    } catch (err) {
      throw new ModelSourceError(`${what} not found: ${source}`, { cause: err });
    }
  }
  if (globalThis.Blob && source instanceof globalThis.Blob) return blobSource(/** @type {any} */ (source).name ?? what, source, signal);
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    const u8 = source instanceof ArrayBuffer ? new Uint8Array(source) : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    return bufferSource(u8[0] === 0x7b ? 'tokenizer.json' : 'tokenizer.bin', u8);
  }
  throw new ModelSourceError(`${what} must be a URL, a path, a File or bytes`);
}

/**
 * The tokenizer_config.json next to a tokenizer given by URL or path (it names BOS and EOS), or null. The model's
 * own tokenizer_config.json belongs to the model's tokenizer, so it never stands in for this one.
 */
async function configBeside(override, signal) {
  if (override instanceof URL || isUrlString(override)) {
    try {
      return remoteSource(await RemoteFile.open(new URL('tokenizer_config.json', String(override)).href, { signal }));
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      throw err;
    }
  }
  if (typeof override === 'string' && node) {
    const pathMod = node.path;
    return pathSource(pathMod.join(pathMod.dirname(override), 'tokenizer_config.json'), signal).catch(() => null);
  }
  return null;
}

/** The tokenizer given in options, or the one among the model's files; checked against the model's vocabulary. */
async function loadModelTokenizer(files, override, model, signal) {
  let tok = null;
  if (override) {
    if (typeof override.encode === 'function') tok = override;
    else {
      let where = override;
      if (typeof override === 'string' && node && !isUrlString(override)) {
        // A folder stands for the tokenizer file inside it.
        if ((await node.fs.stat(override).catch(() => null))?.isDirectory()) {
          where = node.path.join(override, 'tokenizer.json');
        }
      }
      const f = await singleFile(where, 'tokenizer', signal);
      tok = await tokenizerFrom(f.name, f, /\.json$/i.test(f.name) ? await configBeside(where, signal) : undefined);
    }
  } else if (files.has('tokenizer.json')) {
    tok = await tokenizerFrom('tokenizer.json', files.get('tokenizer.json'), files.get('tokenizer_config.json'));
  } else {
    const bin = [...files.keys()].find((n) => /^tok.*\.bin$|^tokenizer\.bin$/i.test(n));
    if (bin) tok = await tokenizerFrom(bin, files.get(bin));
  }
  // Models may pad their vocabulary past the tokenizer's (for alignment), never by much, and never the other way.
  const V = model.config.vocabSize;
  if (tok && (tok.vocabSize > V || tok.vocabSize < 0.95 * V)) {
    throw new ModelSourceError(`the tokenizer has ${tok.vocabSize} ids but the model has ${V}: they do not belong together`, { code: 'TOKENIZER_MISMATCH' });
  }
  return tok;
}

async function tokenizerFrom(name, src, configSrc) {
  if (/\.json$/i.test(name)) {
    const config = configSrc ? await configSrc.text() : undefined;
    return loadTokenizer({ json: await src.text(), config });
  }
  return loadTokenizer({ llama2c: await src.bytes() });
}

export { DType };
