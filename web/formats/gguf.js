// gguf.js: GGUF files (ggml's format, version 3) for llama.cpp, Ollama and LM Studio: a LoRA adapter that
// llama.cpp's --lora loads, and a whole model (as loaded, or with adapters merged) with its tokenizer that
// `llama-cli -m` runs. Layout facts follow ggml's gguf.h and llama.cpp's converters (names, ne order, RoPE rows).
import { EngineError, FormatError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Arch, RopeLayout } from '../core/core.js';
import { permuteRopeRows } from './peft.js';
import { foldIntoB, singleAlphaForm } from './peft-save.js';

export const GGUF_ADAPTER_FILE = 'adapter.gguf';
export const GGUF_MODEL_FILE = 'model.gguf';

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const GGUF_VERSION = 3;
const ALIGNMENT = 32; // general.alignment's default: tensor data offsets are multiples of it
/** ggml tensor types written here. */
const GGML_TYPE = Object.freeze({ F32: 0, F16: 1 });
/** llama.cpp's general.file_type (llama_ftype): all F32, or F16 except 1-D tensors. */
const FILE_TYPE = Object.freeze({ F32: 0, F16: 1 });
/** GGUF metadata value types. */
const T = Object.freeze({ U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 });
/** llama.cpp's token types (tokenizer.ggml.token_type). */
const TOKEN = Object.freeze({ NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 });

// ---------------------------------------------------------------------------------------------------------------
// The container

/**
 * @typedef {[string, 'string' | 'u32' | 'i32' | 'f32' | 'bool' | 'string[]' | 'i32[]' | 'f32[]', unknown]} GgufKV
 *   key, type, value (strings may be given as UTF-8 bytes)
 * @typedef {{ name: string, ne: number[], type: 'F32' | 'F16', data: Float32Array }} GgufTensor ne: ggml's
 *   dimension order, innermost first (a row-major (rows, cols) matrix has ne = [cols, rows])
 */

const utf8 = new TextEncoder();

/** Growing little-endian byte buffer for the header. */
class ByteWriter {
  constructor() {
    this.buf = new Uint8Array(1 << 16);
    this.view = new DataView(this.buf.buffer);
    this.length = 0;
  }

  reserve(n) {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u32(v) { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v) { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  f32(v) { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  u64(v) { this.reserve(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  bool(v) { this.reserve(1); this.buf[this.length++] = v ? 1 : 0; }
  /** gguf_str: u64 byte length, then UTF-8 bytes (no terminator). @param {string | Uint8Array} s */
  string(s) {
    const bytes = typeof s === 'string' ? utf8.encode(s) : s;
    this.u64(bytes.length);
    this.reserve(bytes.length);
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }
}

/** @param {ByteWriter} w @param {GgufKV} kv */
function writeKV(w, [key, type, value]) {
  w.string(key);
  const scalar = { string: T.STRING, u32: T.U32, i32: T.I32, f32: T.F32, bool: T.BOOL };
  const put = { string: (v) => w.string(v), u32: (v) => w.u32(v), i32: (v) => w.i32(v), f32: (v) => w.f32(v), bool: (v) => w.bool(v) };
  if (type.endsWith('[]')) {
    const inner = type.slice(0, -2);
    const list = /** @type {ArrayLike<any>} */ (value);
    w.u32(T.ARRAY);
    w.u32(scalar[inner]);
    w.u64(list.length);
    for (let i = 0; i < list.length; i++) put[inner](list[i]);
  } else {
    w.u32(scalar[type]);
    put[type](value);
  }
}

/**
 * Serialise a GGUF file: header, metadata, tensor infos, then tensor data, each tensor at an offset that is a
 * multiple of 32 within the 32-aligned data section.
 * @param {import('../core/core.js').Core} core encodes the tensors (little-endian; F16 rounded to nearest even)
 * @param {GgufKV[]} metadata
 * @param {GgufTensor[]} tensors
 * @returns {Uint8Array}
 */
export function writeGguf(core, metadata, tensors) {
  const names = new Set();
  const encoded = tensors.map((t) => {
    if (names.has(t.name)) throw new FormatError(`GGUF writer: tensor ${t.name} appears twice`);
    names.add(t.name);
    const numel = t.ne.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) throw new FormatError(`GGUF writer: tensor ${t.name} has ${t.data.length} values for ne [${t.ne.join(', ')}]`);
    return { ...t, bytes: core.encodeFloats(t.data, t.type) };
  });
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(encoded.length);
  w.u64(metadata.length);
  for (const kv of metadata) writeKV(w, kv);
  let offset = 0;
  const offsets = encoded.map((t) => {
    const at = offset;
    offset = Math.ceil((offset + t.bytes.length) / ALIGNMENT) * ALIGNMENT;
    return at;
  });
  encoded.forEach((t, i) => {
    w.string(t.name);
    w.u32(t.ne.length);
    for (const d of t.ne) w.u64(d);
    w.u32(GGML_TYPE[t.type]);
    w.u64(offsets[i]);
  });
  const dataStart = Math.ceil(w.length / ALIGNMENT) * ALIGNMENT;
  const out = new Uint8Array(dataStart + offset);
  out.set(w.buf.subarray(0, w.length));
  encoded.forEach((t, i) => out.set(t.bytes, dataStart + offsets[i]));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// llama.cpp's names and layouts

/** @param {import('../core/core.js').Model} model */
function ggufArch(model) {
  const c = model.config;
  if (c.arch === Arch.GPT2) return 'gpt2';
  // Qwen2 is Llama with q/k/v biases; llama.cpp knows it as its own architecture (rotate-half RoPE).
  return c.qkvBias ? 'qwen2' : 'llama';
}

const LLAMA_BLOCK = {
  input_layernorm: 'attn_norm', 'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output', post_attention_layernorm: 'ffn_norm', 'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
};
const LLAMA_GLOBAL = { 'model.embed_tokens': 'token_embd', 'model.norm': 'output_norm', lm_head: 'output' };
const GPT2_BLOCK = {
  ln_1: 'attn_norm', 'attn.c_attn': 'attn_qkv', 'attn.c_proj': 'attn_output', ln_2: 'ffn_norm', 'mlp.c_fc': 'ffn_up',
  'mlp.c_proj': 'ffn_down',
};
const GPT2_GLOBAL = { 'transformer.wte': 'token_embd', 'transformer.wpe': 'position_embd', 'transformer.ln_f': 'output_norm' };

/**
 * llama.cpp's name for a Hugging Face tensor or module path of this model ("model.layers.3.self_attn.q_proj.weight"
 * -> "blk.3.attn_q.weight"), or null for one llama.cpp has no tensor for.
 * @param {'llama'|'gpt2'} family @param {string} name
 */
export function ggufTensorName(family, name) {
  const m = /^(.*?)(\.weight|\.bias|)$/.exec(name);
  const [, path, suffix] = /** @type {RegExpExecArray} */ (m);
  const block = family === 'gpt2' ? /^transformer\.h\.(\d+)\.(.+)$/.exec(path) : /^model\.layers\.(\d+)\.(.+)$/.exec(path);
  if (block) {
    const base = (family === 'gpt2' ? GPT2_BLOCK : LLAMA_BLOCK)[block[2]];
    return base ? `blk.${block[1]}.${base}${suffix}` : null;
  }
  const base = (family === 'gpt2' ? GPT2_GLOBAL : LLAMA_GLOBAL)[path];
  return base ? `${base}${suffix}` : null;
}

/**
 * How many heads' rows of a q/k tensor must go from Hugging Face's rotate-half order into the interleaved pairs
 * llama.cpp's "llama" architecture rotates (0: leave the rows as they are). A llama2.c model keeps its q/k rows
 * interleaved in memory, which is already llama.cpp's order; Qwen2 and GPT-2 are not permuted by llama.cpp either.
 * @param {import('../core/core.js').Model} model @param {string} name HF tensor or module path
 */
function ropeHeadsToPermute(model, name) {
  const c = model.config;
  if (ggufArch(model) !== 'llama' || c.ropeLayout !== RopeLayout.HALF) return 0;
  if (/self_attn\.q_proj(\.weight|\.bias)?$/.test(name)) return c.nHeads;
  if (/self_attn\.k_proj(\.weight|\.bias)?$/.test(name)) return c.nKvHeads;
  return 0;
}

/** The rows (out, cols) of a row-major matrix in llama.cpp's RoPE order. */
function toGgufRows(model, name, data, cols) {
  const heads = ropeHeadsToPermute(model, name);
  return heads ? permuteRopeRows(data, heads, model.config.headDim, cols, false) : data;
}

/** @param {unknown} dtype @returns {'F32'|'F16'} */
function checkDtype(dtype) {
  const d = String(dtype ?? 'f16').toUpperCase();
  if (d !== 'F32' && d !== 'F16') throw new InvalidArgumentError(`GGUF tensors can be written as f32 or f16, not ${JSON.stringify(dtype)}`);
  return d;
}

/** general.* keys shared by both kinds of file. */
function generalKVs(arch, name, type) {
  /** @type {GgufKV[]} */
  const kvs = [['general.architecture', 'string', arch], ['general.type', 'string', type]];
  if (name) kvs.push(['general.name', 'string', name]);
  return kvs;
}

// ---------------------------------------------------------------------------------------------------------------
// LoRA adapters

/**
 * A LoRA adapter as the GGUF file llama.cpp's --lora loads: general.type "adapter", adapter.type "lora", one
 * adapter.lora.alpha, and per module blk.N.<name>.weight.lora_a (ne [in, r]) and .lora_b (ne [r, out]) with
 * llama.cpp's row order. llama.cpp scales every module by adapter.lora.alpha / r, so any other scale (rsLoRA,
 * rank/alpha patterns) is folded into lora_b: the file computes the same update as the adapter.
 * @param {import('../core/core.js').Core} core
 * @param {import('../core/core.js').Model} model the model the adapter belongs to
 * @param {import('../core/core.js').Adapter} adapter
 * @param {{ dtype?: 'f32'|'f16', name?: string | null }} [options] dtype of the tensors (default f16, what
 *   llama.cpp's converter writes); name becomes general.name
 * @returns {Uint8Array}
 */
export function adapterToGguf(core, model, adapter, options = {}) {
  const dtype = checkDtype(options.dtype);
  const arch = ggufArch(model);
  const family = model.arch;
  const slots = model.modules();
  const mods = adapter.modules();
  if (!mods.length) throw new FormatError('the adapter has no modules');
  if (adapter.isDora) {
    throw new UnsupportedError('llama.cpp LoRA files have no DoRA magnitudes, so a DoRA adapter cannot be written as one: '
      + 'merge it and export the model as GGUF instead');
  }
  const modelLevel = mods.filter((m) => m.layer < 0).map((m) => model.modulePath(m.layer, m.slot));
  if (modelLevel.length) {
    throw new UnsupportedError(`this adapter has LoRA on ${modelLevel.join(' and ')}, which is not written as a llama.cpp LoRA file here `
      + '(llama.cpp lays the embedding factors out differently): merge it into an untied model and export the model as GGUF instead');
  }
  const { alpha, factors } = singleAlphaForm(mods);
  /** @type {GgufTensor[]} */
  const tensors = [];
  mods.forEach((m, i) => {
    const path = `${model.modulePath(m.layer, m.slot)}.weight`;
    const target = ggufTensorName(family, path);
    if (!target || !slots[m.slot]) throw new UnsupportedError(`llama.cpp has no tensor for ${path}`);
    // Copies: the views are live wasm memory.
    const A = adapter.view(m.A, m.rank * m.inFeatures).slice();
    const B = foldIntoB(toGgufRows(model, path, adapter.view(m.B, m.outFeatures * m.rank).slice(), m.rank), factors[i]);
    tensors.push({ name: `${target}.lora_a`, ne: [m.inFeatures, m.rank], type: dtype, data: A });
    tensors.push({ name: `${target}.lora_b`, ne: [m.rank, m.outFeatures], type: dtype, data: B });
  });
  const metadata = [
    ...generalKVs(arch, options.name ?? null, 'adapter'),
    /** @type {GgufKV} */ (['adapter.type', 'string', 'lora']),
    /** @type {GgufKV} */ (['adapter.lora.alpha', 'f32', alpha]),
  ];
  return writeGguf(core, metadata, tensors);
}

// ---------------------------------------------------------------------------------------------------------------
// Whole models

/**
 * The model's weights (as they are now: merged adapters included) with its tokenizer as a GGUF model file that
 * llama.cpp runs. Matrices are F16 or F32; 1-D tensors (norms, biases) stay F32 as llama.cpp's converter keeps them.
 * @param {import('../core/core.js').Core} core
 * @param {import('../core/core.js').Model} model
 * @param {import('./tokenizer.js').Tokenizer} tokenizer
 * @param {{ dtype?: 'f32'|'f16', name?: string | null }} [options]
 * @returns {Uint8Array}
 */
export function modelToGguf(core, model, tokenizer, options = {}) {
  const dtype = checkDtype(options.dtype);
  if (!tokenizer) throw new EngineError('a GGUF model file needs the tokenizer: load the model with one', { code: 'NO_TOKENIZER' });
  const arch = ggufArch(model);
  const family = model.arch;
  const c = model.config;
  /** @type {GgufTensor[]} */
  const tensors = [];
  for (const t of model.tensors()) {
    const name = ggufTensorName(family, t.name);
    if (!name) throw new UnsupportedError(`llama.cpp has no tensor for ${t.name}`);
    // Memory holds every matrix as (rows = out, cols = in), GPT-2's Conv1D included: ne = [in, out].
    const rows = t.ndim === 2 ? (t.transposed ? t.shape[1] : t.shape[0]) : t.shape[0];
    const cols = t.ndim === 2 ? t.numel / rows : 1;
    const data = toGgufRows(model, t.name, model.tensorView(t).slice(), cols);
    tensors.push({ name, ne: t.ndim === 2 ? [cols, rows] : [rows], type: t.ndim === 2 ? dtype : 'F32', data });
    // llama.cpp's GPT-2 reads the output head from its own tensor, as the converter writes it for a tied head.
    if (family === 'gpt2' && name === 'token_embd.weight') tensors.push({ ...tensors[tensors.length - 1], name: 'output.weight' });
  }
  const p = `${arch}.`;
  /** @type {GgufKV[]} */
  const metadata = [
    ...generalKVs(arch, options.name ?? null, 'model'),
    ['general.file_type', 'u32', FILE_TYPE[dtype]],
    [`${p}context_length`, 'u32', c.maxSeqLen],
    [`${p}embedding_length`, 'u32', c.dim],
    [`${p}block_count`, 'u32', c.nLayers],
    [`${p}feed_forward_length`, 'u32', c.hiddenDim],
    [`${p}attention.head_count`, 'u32', c.nHeads],
  ];
  if (family === 'gpt2') {
    metadata.push([`${p}attention.layer_norm_epsilon`, 'f32', c.normEps]);
  } else {
    metadata.push(
      [`${p}attention.head_count_kv`, 'u32', c.nKvHeads],
      [`${p}attention.layer_norm_rms_epsilon`, 'f32', c.normEps],
      [`${p}rope.freq_base`, 'f32', c.ropeTheta],
      [`${p}rope.dimension_count`, 'u32', c.headDim],
      [`${p}attention.key_length`, 'u32', c.headDim],
      [`${p}attention.value_length`, 'u32', c.headDim],
      [`${p}vocab_size`, 'u32', c.vocabSize],
    );
  }
  metadata.push(...tokenizerKVs(tokenizer, c.vocabSize));
  return writeGguf(core, metadata, tensors);
}

/**
 * The pre-tokenizer llama.cpp must use for a byte-level BPE tokenizer.json (tokenizer.ggml.pre): the splitting
 * rules are code in llama.cpp, chosen by this name, so only layouts whose rules are known here are accepted.
 * @param {any} pre the pre_tokenizer of tokenizer.json
 */
function preTokenizerName(pre) {
  const isByteLevel = (p) => p?.type === 'ByteLevel' && p.use_regex !== false && !p.add_prefix_space;
  if (isByteLevel(pre)) return 'gpt-2';
  const list = pre?.type === 'Sequence' ? pre.pretokenizers : null;
  if (list?.length === 2 && list[0]?.type === 'Digits' && list[0].individual_digits === true && isByteLevel(list[1])) return 'smollm';
  return null;
}

/**
 * tokenizer.ggml.* metadata: a byte-level BPE tokenizer.json becomes llama.cpp's "gpt2" vocabulary (tokens and
 * merges); a llama2.c tokenizer.bin becomes its "llama" (SentencePiece) vocabulary (pieces with U+2581 for spaces,
 * scores, byte tokens). Ids past the tokenizer's vocabulary (padding rows of the embedding) get unused tokens, since
 * llama.cpp needs one token per row.
 * @param {import('./tokenizer.js').Tokenizer} tokenizer
 * @param {number} vocabSize the model's
 * @returns {GgufKV[]}
 */
function tokenizerKVs(tokenizer, vocabSize) {
  const src = tokenizer.source;
  if (src?.kind !== 'hf' && src?.kind !== 'llama2c') {
    throw new UnsupportedError('this tokenizer cannot be written to GGUF: load the model with its tokenizer.json or llama2.c tokenizer.bin');
  }
  /** @type {(string | Uint8Array)[]} */
  const tokens = new Array(vocabSize);
  const types = new Int32Array(vocabSize).fill(TOKEN.UNUSED);
  for (let id = 0; id < vocabSize; id++) tokens[id] = `[PAD${id}]`;
  /** @type {GgufKV[]} */
  const kvs = [];
  if (src.kind === 'hf') {
    const { json } = src;
    const model = json.model;
    const pre = preTokenizerName(json.pre_tokenizer);
    if (model?.type !== 'BPE' || model.byte_fallback || !pre || json.normalizer) {
      throw new UnsupportedError(`this tokenizer.json (${model?.type} model, pre_tokenizer ${JSON.stringify(json.pre_tokenizer?.type ?? null)}${json.normalizer ? `, normalizer ${json.normalizer.type}` : ''}) cannot be written to GGUF: byte-level BPE tokenizers (GPT-2, SmolLM style) can`);
    }
    for (const [piece, id] of Object.entries(model.vocab)) {
      if (id < vocabSize) {
        tokens[id] = piece;
        types[id] = TOKEN.NORMAL;
      }
    }
    for (const t of json.added_tokens ?? []) {
      if (t.id < vocabSize) {
        tokens[t.id] = t.content;
        types[t.id] = t.special ? TOKEN.CONTROL : TOKEN.USER_DEFINED;
      }
    }
    const merges = (model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m));
    kvs.push(['tokenizer.ggml.model', 'string', 'gpt2'], ['tokenizer.ggml.pre', 'string', pre],
      ['tokenizer.ggml.tokens', 'string[]', tokens], ['tokenizer.ggml.token_type', 'i32[]', types],
      ['tokenizer.ggml.merges', 'string[]', merges]);
  } else {
    const scores = new Float32Array(vocabSize);
    const space = utf8.encode('\u2581');
    src.pieces.forEach((/** @type {Uint8Array} */ piece, /** @type {number} */ id) => {
      if (id >= vocabSize) return;
      // llama2.c's export turned SentencePiece's U+2581 into spaces; llama.cpp's vocabulary has them back.
      const parts = [];
      let start = 0;
      for (let i = 0; i < piece.length; i++) {
        if (piece[i] === 0x20) {
          parts.push(piece.subarray(start, i), space);
          start = i + 1;
        }
      }
      parts.push(piece.subarray(start));
      const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        bytes.set(p, at);
        at += p.length;
      }
      tokens[id] = bytes;
      scores[id] = src.scores[id];
      const text = String.fromCharCode(...piece.subarray(0, 8));
      types[id] = id === 0 ? TOKEN.UNKNOWN : id === tokenizer.bosId || id === tokenizer.eosId ? TOKEN.CONTROL
        : /^<0x[0-9A-Fa-f]{2}>$/.test(text) && piece.length === 6 ? TOKEN.BYTE : TOKEN.NORMAL;
    });
    kvs.push(['tokenizer.ggml.model', 'string', 'llama'], ['tokenizer.ggml.pre', 'string', 'default'],
      ['tokenizer.ggml.tokens', 'string[]', tokens], ['tokenizer.ggml.scores', 'f32[]', scores],
      ['tokenizer.ggml.token_type', 'i32[]', types], ['tokenizer.ggml.unknown_token_id', 'u32', 0],
      ['tokenizer.ggml.add_space_prefix', 'bool', true]);
  }
  if (tokenizer.bosId !== null) kvs.push(['tokenizer.ggml.bos_token_id', 'u32', tokenizer.bosId]);
  if (tokenizer.eosId !== null) kvs.push(['tokenizer.ggml.eos_token_id', 'u32', tokenizer.eosId]);
  kvs.push(['tokenizer.ggml.add_bos_token', 'bool', tokenizer.addsBos], ['tokenizer.ggml.add_eos_token', 'bool', false]);
  return kvs;
}
