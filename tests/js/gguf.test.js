// GGUF export read back by an independent reader (@huggingface/gguf): LoRA adapter files checked against the PEFT
// adapters and PyTorch's per-module scalings in tests/ref/golden (rsLoRA, rank/alpha patterns, llama2.c and
// Hugging Face row orders, GPT-2 Conv1D), the single-alpha (portable) PEFT form, and whole models with their
// tokenizers checked against the Hugging Face files they came from.
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gguf } from '@huggingface/gguf';

import { Adapter } from '../../web/core/core.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { adapterToGguf } from '../../web/formats/gguf.js';
import { peftToAdapter } from '../../web/formats/peft-load.js';
import { adapterToPeft } from '../../web/formats/peft-save.js';
import { compare, loadCore, readSafetensors, repoRoot, sharedPath, wasmSource } from './helpers/core.js';
import { loadCaseModel } from './helpers/golden.js';

const GOLDEN = path.join(repoRoot, 'tests/ref/golden');
const DEFAULT_MODEL = path.join(repoRoot, 'demo/models/default');
let core;
let tmp;
let fileNo = 0;

beforeAll(async () => {
  core = await loadCore();
  tmp = mkdtempSync(path.join(os.tmpdir(), 'weblora-gguf-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------------------------
// Reading, with the reader's parse of the header and our own decoding of the tensor bytes it locates

/** f16 bits -> number (IEEE binary16, subnormals included), written here independently of the package. */
function f16ToNumber(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Parse GGUF bytes with @huggingface/gguf; tensors by name with ne and f64 values. */
async function readGguf(bytes) {
  const file = path.join(tmp, `f${fileNo++}.gguf`);
  writeFileSync(file, bytes);
  const parsed = await gguf(file, { allowLocalFile: true });
  const tensors = new Map();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const t of parsed.tensorInfos) {
    const ne = t.shape.map(Number);
    const n = ne.reduce((a, b) => a * b, 1);
    const at = Number(parsed.tensorDataOffset + t.offset);
    expect(at % 32).toBe(0); // general.alignment's default
    const values = new Float64Array(n);
    if (t.dtype === 0) for (let i = 0; i < n; i++) values[i] = view.getFloat32(at + 4 * i, true);
    else if (t.dtype === 1) for (let i = 0; i < n; i++) values[i] = f16ToNumber(view.getUint16(at + 2 * i, true));
    else throw new Error(`unexpected ggml type ${t.dtype} for ${t.name}`);
    tensors.set(t.name, { ne, dtype: t.dtype === 0 ? 'F32' : 'F16', values });
  }
  return { metadata: parsed.metadata, tensors };
}

// ---------------------------------------------------------------------------------------------------------------
// Independent facts about llama.cpp's layout (from its converter), written out here rather than imported

const LLAMA_NAMES = { 'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output', 'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down' };
const GPT2_NAMES = { 'attn.c_attn': 'attn_qkv', 'attn.c_proj': 'attn_output', 'mlp.c_fc': 'ffn_up', 'mlp.c_proj': 'ffn_down' };

/** "model.layers.3.self_attn.q_proj" -> "blk.3.attn_q.weight". */
function llamaCppName(modulePath) {
  const m = /^(?:model\.layers|transformer\.h)\.(\d+)\.(.+)$/.exec(modulePath);
  return `blk.${m[1]}.${(LLAMA_NAMES[m[2]] ?? GPT2_NAMES[m[2]])}.weight`;
}

/**
 * Hugging Face rotate-half rows -> llama.cpp's interleaved rows: output row (h, i, j) = input row (h, j, i), for
 * head h, i < hd/2, j in {0, 1}. `inverse` goes back.
 */
function permuteRows(values, heads, hd, cols, inverse = false) {
  const out = new Float64Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < hd / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const inter = h * hd + 2 * i + j;
        const half = h * hd + j * (hd / 2) + i;
        const [to, from] = inverse ? [half, inter] : [inter, half];
        out.set(values.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

/** s * B A in float64: B (out, r), A (r, in). */
function delta(B, A, out, r, inF, s) {
  const d = new Float64Array(out * inF);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const b = s * B[o * r + k];
      for (let i = 0; i < inF; i++) d[o * inF + i] += b * A[k * inF + i];
    }
  }
  return d;
}

/** |got - want| <= rel * max|want| everywhere; rel is the measured rounding of folding a scale into f32 B. */
function expectSameDelta(got, want, rel, label) {
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const r = compare(got, want, rel * scale, 0);
  if (!r.ok) throw new Error(`${label}: [${r.first}] got ${r.got} want ${r.want} (max abs ${r.maxAbs}, scale ${scale})`);
  expect(scale).toBeGreaterThan(0);
}

/** The PEFT rule: the value of the first pattern key with re.match(r"(.*\.)?(key)$", path), else the default. */
function peftPattern(pattern, modulePath, fallback) {
  for (const [key, value] of Object.entries(pattern ?? {})) if (new RegExp(`^(.*\\.)?(${key})$`).test(modulePath)) return value;
  return fallback;
}

// ---------------------------------------------------------------------------------------------------------------
// The golden PEFT cases as adapters in the core (as tests/js/core.golden.test.js builds them)

async function loadCase(name) {
  const dir = path.join(GOLDEN, name);
  const cs = JSON.parse(readFileSync(path.join(dir, 'case.json'), 'utf8'));
  const model = await loadCaseModel(core, dir, cs);
  const S = model.modules().length;
  const pathOf = new Map();
  for (let l = 0; l < model.config.nLayers; l++) for (let s = 0; s < S; s++) pathOf.set(model.modulePath(l, s), l * S + s);
  const ranks = new Int32Array(model.config.nLayers * S);
  const alphas = new Float32Array(ranks.length);
  for (const m of cs.lora_modules) {
    ranks[pathOf.get(m.path)] = m.r;
    alphas[pathOf.get(m.path)] = m.alpha;
  }
  const adapter = Adapter.create(model, { ranks, alphas, useRslora: cs.use_rslora });
  const file = readSafetensors(core, new Uint8Array(readFileSync(path.join(dir, 'adapter_model.safetensors'))));
  for (const m of adapter.modules()) {
    const p = model.modulePath(m.layer, m.slot);
    expect(m.scale).toBe(Math.fround(cs.lora_modules.find((x) => x.path === p).scaling));
    adapter.view(m.A, m.rank * m.inFeatures).set(file.get(`base_model.model.${p}.lora_A.weight`).data);
    let B = file.get(`base_model.model.${p}.lora_B.weight`).data;
    // The file holds Hugging Face rows; a llama2.c model holds its q/k rows interleaved, as its checkpoint does.
    const heads = ropeHeads(model.config, p);
    if (cs.model_format === 'llama2c' && heads) B = Float32Array.from(permuteRows(Float64Array.from(B), heads, model.config.headDim, m.rank));
    adapter.view(m.B, m.rank * m.outFeatures).set(B);
  }
  return { cs, dir, model, adapter, file, free: () => { adapter.free(); model.free(); } };
}

/** The heads whose rows RoPE rotates in a module's output (q_proj, k_proj), else 0. */
function ropeHeads(cfg, modulePath) {
  return /q_proj$/.test(modulePath) ? cfg.nHeads : /k_proj$/.test(modulePath) ? cfg.nKvHeads : 0;
}

// The golden files hold B in Hugging Face's rotate-half row order, also for the llama2.c case (PEFT's layout).
// llama.cpp wants interleaved q/k rows for its "llama" architecture: the GGUF's rows are permuted back to compare.
const LORA_CASES = [
  ['llama_all_rslora', 'rsLoRA r 8 alpha 16 on all 7 modules, HF rotate-half q/k rows, GQA', 'llama'],
  ['llama2c_interleaved', 'rank_pattern and alpha_pattern, a llama2.c checkpoint (q/k rows interleaved in the model)', 'llama'],
  ['gpt2_attn', 'GPT-2 Conv1D c_attn / c_proj, alpha 32 r 4', 'gpt2'],
  ['llama_qwen_bias', 'Qwen2 (llama.cpp arch qwen2, rotate-half kept), alpha 5 r 2', 'qwen2'],
];

describe('LoRA adapter as llama.cpp GGUF', () => {
  test.each(LORA_CASES)('%s: %s', async (name, _what, arch) => {
    const c = await loadCase(name);
    try {
      const bytes = adapterToGguf(core, c.model, c.adapter, { dtype: 'f32', name: 'my-style' });
      const { metadata, tensors } = await readGguf(bytes);
      expect(metadata.version).toBe(3);
      expect(metadata['general.architecture']).toBe(arch);
      expect(metadata['general.type']).toBe('adapter');
      expect(metadata['general.name']).toBe('my-style');
      expect(metadata['adapter.type']).toBe('lora');
      const alpha = metadata['adapter.lora.alpha'];
      expect(alpha).toBeGreaterThan(0);
      const expectedNames = c.cs.lora_modules.flatMap((m) => [`${llamaCppName(m.path)}.lora_a`, `${llamaCppName(m.path)}.lora_b`]);
      expect([...tensors.keys()].sort()).toEqual(expectedNames.sort());

      const cfg = c.model.config;
      const permuted = arch === 'llama';
      let unchangedB = 0;
      for (const m of c.cs.lora_modules) {
        const A = c.file.get(`base_model.model.${m.path}.lora_A.weight`);
        const B = c.file.get(`base_model.model.${m.path}.lora_B.weight`);
        const [r, inF] = A.shape;
        const out = B.shape[0];
        const a = tensors.get(`${llamaCppName(m.path)}.lora_a`);
        const b = tensors.get(`${llamaCppName(m.path)}.lora_b`);
        expect(a.ne).toEqual([inF, r]);
        expect(b.ne).toEqual([r, out]);
        expect(Array.from(a.values)).toEqual(Array.from(A.data)); // A is never touched
        // llama.cpp: scale = alpha / rank with rank = lora_b's ne[0], in f32.
        const llamaScale = Math.fround(alpha / b.ne[0]);
        let gotB = b.values;
        const heads = ropeHeads(cfg, m.path);
        if (permuted && heads) gotB = permuteRows(gotB, heads, cfg.headDim, r, true);
        // The folded single alpha reproduces PyTorch's scaling (rsLoRA, patterns) to f32 rounding of B (2^-24
        // relative, measured <= 1.2e-7 here); a missing fold is off by the scale ratio, a wrong row order by O(1).
        expectSameDelta(delta(gotB, A.data, out, r, inF, llamaScale), delta(B.data, A.data, out, r, inF, m.scaling), 3e-7, m.path);
        if (gotB.every((v, i) => v === B.data[i])) unchangedB++;
      }
      // Modules whose scale the single alpha gives exactly are written bit for bit.
      expect(unchangedB).toBeGreaterThan(0);
    } finally {
      c.free();
    }
  });

  test('f16 tensors are the f32 values rounded to half precision', async () => {
    const c = await loadCase('llama_all_rslora');
    try {
      const f32 = await readGguf(adapterToGguf(core, c.model, c.adapter, { dtype: 'f32' }));
      const f16 = await readGguf(adapterToGguf(core, c.model, c.adapter));
      expect(f16.metadata['adapter.lora.alpha']).toBe(f32.metadata['adapter.lora.alpha']);
      for (const [name, t] of f32.tensors) {
        const h = f16.tensors.get(name);
        expect(h.dtype).toBe('F16');
        expect(h.ne).toEqual(t.ne);
        // Round to nearest: within half an f16 ulp (2^-11 relative; 2^-25 absolute below the normal range).
        const r = compare(h.values, t.values, 2 ** -25, 2 ** -11);
        if (!r.ok) throw new Error(`${name}: [${r.first}] ${r.got} vs ${r.want}`);
        expect(h.values.some((v, i) => v !== t.values[i])).toBe(true);
      }
    } finally {
      c.free();
    }
  });
});

describe('portable PEFT: one plain lora_alpha, scales folded into lora_B', () => {
  test.each([['llama_all_rslora'], ['llama2c_interleaved']])('%s computes the same update and the same logits', async (name) => {
    const c = await loadCase(name);
    let loaded = null;
    try {
      const { config, files } = adapterToPeft(c.model, c.adapter, { portable: true });
      expect(config.use_rslora).toBe(false);
      expect(config.alpha_pattern).toEqual({});
      const written = readSafetensors(core, files['adapter_model.safetensors']);
      for (const m of c.cs.lora_modules) {
        const A = c.file.get(`base_model.model.${m.path}.lora_A.weight`);
        const B = c.file.get(`base_model.model.${m.path}.lora_B.weight`);
        const [r, inF] = A.shape;
        const out = B.shape[0];
        // What a tool that reads only r / lora_alpha / rank_pattern computes from the portable file.
        const rPeft = peftPattern(config.rank_pattern, m.path, config.r);
        expect(rPeft).toBe(r);
        // PEFT files hold HF row order, as the golden file does.
        const gotB = written.get(`base_model.model.${m.path}.lora_B.weight`).data;
        expectSameDelta(delta(gotB, A.data, out, r, inF, config.lora_alpha / rPeft), delta(B.data, A.data, out, r, inF, m.scaling), 3e-7, m.path);
      }
      // Loaded back, the portable adapter gives PyTorch's logits for the original adapter.
      loaded = peftToAdapter(core, c.model, files);
      const io = readSafetensors(core, new Uint8Array(readFileSync(path.join(c.dir, 'io.safetensors'))));
      c.model.reserve(c.cs.B, c.cs.T);
      c.model.setAdapters([loaded]);
      c.model.forward(io.get('tokens').data, { B: c.cs.B, T: c.cs.T });
      const r = compare(c.model.logits(), io.get('logits').data, c.cs.tolerance.logits.atol, c.cs.tolerance.logits.rtol);
      if (!r.ok) throw new Error(`logits [${r.first}] ${r.got} vs ${r.want}`);
    } finally {
      c.model.setAdapters([]);
      loaded?.free();
      c.free();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Whole models

function hfTensors(dir) {
  const bytes = new Uint8Array(readFileSync(path.join(dir, 'model.safetensors')));
  const st = core.parseSafetensors(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const out = new Map();
  for (const t of st.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const v = new Float64Array(n);
    const at = st.dataStart + t.begin;
    for (let i = 0; i < n; i++) v[i] = t.dtype === 'F16' ? f16ToNumber(view.getUint16(at + 2 * i, true)) : view.getFloat32(at + 4 * i, true);
    out.set(t.name, { shape: t.shape, values: v });
  }
  return out;
}

const LLAMA_MODEL_NAMES = { input_layernorm: 'attn_norm', post_attention_layernorm: 'ffn_norm', ...LLAMA_NAMES };

describe('whole models as llama.cpp GGUF', () => {
  test('the default model with a merged adapter: metadata, tokenizer, names, shapes and W + s B A', async () => {
    const engine = await LocalEngine.load(DEFAULT_MODEL, { wasmSource: wasmSource() });
    try {
      const cfg = JSON.parse(readFileSync(path.join(DEFAULT_MODEL, 'config.json'), 'utf8'));
      const tokJson = JSON.parse(readFileSync(path.join(DEFAULT_MODEL, 'tokenizer.json'), 'utf8'));
      const h = engine.createAdapter({ rank: 4, alpha: 8, targets: 'all-linear', useRslora: true });
      const ad = engine.entry(h.id).adapter;
      for (const m of ad.modules()) {
        const v = ad.view(m.B, m.outFeatures * m.rank);
        for (let i = 0; i < v.length; i++) v[i] = Math.sin(0.7 * i + m.index) * 0.05;
      }
      const peft = engine.exportAdapter(h.id);
      const adapterFile = readSafetensors(core, peft.files['adapter_model.safetensors']);
      engine.merge(h.id);
      const f32 = await readGguf(engine.exportModel({ format: 'gguf', dtype: 'f32' })['model.gguf']);
      const f16 = await readGguf(engine.exportModel({ format: 'gguf' })['model.gguf']);

      const md = f32.metadata;
      expect(md['general.architecture']).toBe('llama');
      expect(md['general.type']).toBe('model');
      expect(md['general.file_type']).toBe(0);
      expect(f16.metadata['general.file_type']).toBe(1);
      expect(md['llama.context_length']).toBe(cfg.max_position_embeddings);
      expect(md['llama.embedding_length']).toBe(cfg.hidden_size);
      expect(md['llama.block_count']).toBe(cfg.num_hidden_layers);
      expect(md['llama.feed_forward_length']).toBe(cfg.intermediate_size);
      expect(md['llama.attention.head_count']).toBe(cfg.num_attention_heads);
      expect(md['llama.attention.head_count_kv']).toBe(cfg.num_key_value_heads);
      expect(md['llama.rope.dimension_count']).toBe(cfg.head_dim);
      expect(md['llama.rope.freq_base']).toBe(cfg.rope_theta);
      expect(md['llama.attention.layer_norm_rms_epsilon']).toBe(Math.fround(cfg.rms_norm_eps));
      // Tokenizer: every id's token and the merges in rank order, as in tokenizer.json.
      expect(md['tokenizer.ggml.model']).toBe('gpt2');
      expect(md['tokenizer.ggml.pre']).toBe('gpt-2');
      const byId = [];
      for (const [piece, id] of Object.entries(tokJson.model.vocab)) byId[id] = piece;
      for (const t of tokJson.added_tokens) byId[t.id] = t.content;
      expect(md['tokenizer.ggml.tokens']).toEqual(byId);
      expect(md['tokenizer.ggml.merges']).toEqual(tokJson.model.merges.map((x) => (Array.isArray(x) ? x.join(' ') : x)));
      expect(md['tokenizer.ggml.token_type'][0]).toBe(3); // <|endoftext|> is a control token
      expect(md['tokenizer.ggml.token_type'].slice(1).every((t) => t === 1)).toBe(true);
      expect(md['tokenizer.ggml.bos_token_id']).toBe(cfg.bos_token_id);
      expect(md['tokenizer.ggml.eos_token_id']).toBe(cfg.eos_token_id);
      expect(md['tokenizer.ggml.add_bos_token']).toBe(false);

      // Weights: the HF file's (f16) values plus the merged s B A, q/k rows interleaved, ne = [in, out].
      const hf = hfTensors(DEFAULT_MODEL);
      const expected = new Map([['token_embd.weight', 'model.embed_tokens.weight'], ['output_norm.weight', 'model.norm.weight']]);
      for (let l = 0; l < cfg.num_hidden_layers; l++) {
        for (const [k, v] of Object.entries(LLAMA_MODEL_NAMES)) expected.set(`blk.${l}.${v}.weight`, `model.layers.${l}.${k}.weight`);
      }
      expect([...f32.tensors.keys()].sort()).toEqual([...expected.keys()].sort()); // tied head: no output.weight
      const scaling = 8 / Math.sqrt(4);
      for (const [gname, hname] of expected) {
        const t = f32.tensors.get(gname);
        const src = hf.get(hname);
        expect(t.ne).toEqual([...src.shape].reverse());
        expect(t.dtype).toBe('F32');
        expect(f16.tensors.get(gname).dtype).toBe(src.shape.length === 2 ? 'F16' : 'F32');
        let want = src.values;
        const modulePath = hname.replace(/\.weight$/, '');
        const A = adapterFile.get(`base_model.model.${modulePath}.lora_A.weight`);
        if (A) {
          const B = adapterFile.get(`base_model.model.${modulePath}.lora_B.weight`);
          const d = delta(B.data, A.data, B.shape[0], 4, A.shape[1], scaling);
          want = want.map((w, i) => w + d[i]);
        }
        const heads = /q_proj/.test(hname) ? cfg.num_attention_heads : /k_proj/.test(hname) ? cfg.num_key_value_heads : 0;
        if (heads) want = permuteRows(want, heads, cfg.head_dim, src.shape[1]);
        // f32 merge of W + s B A: a few ulps of |W| (measured max 1.5e-7 relative to the tensor's max).
        const r = compare(t.values, want, 1e-6 * want.reduce((m, v) => Math.max(m, Math.abs(v)), 0), 0);
        if (!r.ok) throw new Error(`${gname}: [${r.first}] ${r.got} vs ${r.want}`);
      }
    } finally {
      await engine.dispose();
    }
  });

  test('a llama2.c model keeps its interleaved q/k rows and gets a SentencePiece vocabulary', async () => {
    const engine = await LocalEngine.load(sharedPath('models/stories260K/stories260K.bin'), { wasmSource: wasmSource() });
    try {
      const { metadata: md, tensors } = await readGguf(engine.exportModel({ format: 'gguf', dtype: 'f32' })['model.gguf']);
      expect(md['tokenizer.ggml.model']).toBe('llama');
      const tokens = md['tokenizer.ggml.tokens'];
      expect(tokens).toHaveLength(512);
      expect(tokens[3]).toBe('<0x00>');
      expect(md['tokenizer.ggml.token_type'].slice(0, 5)).toEqual([2, 3, 3, 6, 6]);
      expect(md['tokenizer.ggml.token_type'][259]).toBe(1);
      expect(tokens.filter((t) => t.startsWith('\u2581')).length).toBeGreaterThan(50);
      expect(md['tokenizer.ggml.add_bos_token']).toBe(true);
      expect(md['tokenizer.ggml.bos_token_id']).toBe(1);
      expect(md['tokenizer.ggml.eos_token_id']).toBe(2);
      // Checkpoint values straight through (tok512.bin and stories260K.bin read independently here).
      const bin = readFileSync(sharedPath('models/stories260K/stories260K.bin'));
      const header = new Int32Array(bin.buffer, bin.byteOffset, 7);
      const [dim, , , nHeads] = header;
      const f = new Float32Array(bin.buffer, bin.byteOffset + 28, (bin.byteLength - 28) / 4);
      const vocab = Math.abs(header[5]);
      const embLen = vocab * dim;
      const wq0 = f.subarray(embLen + header[2] * dim, embLen + header[2] * dim + dim * dim);
      expect(Array.from(tensors.get('blk.0.attn_q.weight').values)).toEqual(Array.from(wq0)); // no permutation
      expect(nHeads).toBe(8);
      const tok = readFileSync(sharedPath('models/stories260K/tok512.bin'));
      const dv = new DataView(tok.buffer, tok.byteOffset);
      const scores = md['tokenizer.ggml.scores'];
      let at = 4;
      for (let id = 0; id < 512; id++) {
        const len = dv.getInt32(at + 4, true);
        const piece = new TextDecoder().decode(tok.subarray(at + 8, at + 8 + len));
        // SentencePiece's U+2581 for the spaces llama2.c's export wrote.
        if (tokens[id] !== piece.replaceAll(' ', '\u2581')) throw new Error(`token ${id}: ${JSON.stringify(tokens[id])} vs ${JSON.stringify(piece)}`);
        expect(scores[id]).toBe(dv.getFloat32(at, true));
        at += 8 + len;
      }
    } finally {
      await engine.dispose();
    }
  });

  test('GPT-2: Conv1D weights transposed to ne [in, out], the tied head written as output.weight', async () => {
    const dir = sharedPath('models/tiny-gpt2');
    const engine = await LocalEngine.load(dir, { wasmSource: wasmSource() });
    try {
      const { metadata: md, tensors } = await readGguf(engine.exportModel({ format: 'gguf', dtype: 'f32' })['model.gguf']);
      expect(md['general.architecture']).toBe('gpt2');
      expect(md['gpt2.embedding_length']).toBe(2);
      expect(md['tokenizer.ggml.tokens']).toHaveLength(50257);
      const hf = hfTensors(dir);
      const conv = hf.get('transformer.h.1.attn.c_attn.weight'); // (in 2, out 6)
      const qkv = tensors.get('blk.1.attn_qkv.weight');
      expect(qkv.ne).toEqual([2, 6]);
      for (let o = 0; o < 6; o++) for (let i = 0; i < 2; i++) expect(qkv.values[o * 2 + i]).toBe(conv.values[i * 6 + o]);
      expect(Array.from(tensors.get('output.weight').values)).toEqual(Array.from(hf.get('transformer.wte.weight').values));
      expect(tensors.get('position_embd.weight').ne).toEqual([2, 1024]);
      expect(tensors.has('blk.0.attn_norm.bias')).toBe(true);
    } finally {
      await engine.dispose();
    }
  });

  test('refusals name the reason: tokenizers llama.cpp would split differently, unknown dtypes', async () => {
    const engine = await LocalEngine.load(sharedPath('models/tiny-random-llama'), { wasmSource: wasmSource(),
      tokenizer: sharedPath('tokenizers/llama2-tinyllama/tokenizer.json') });
    try {
      expect(() => engine.exportModel({ format: 'gguf' })).toThrow(/cannot be written to GGUF: byte-level BPE/);
      const h = engine.createAdapter({ rank: 2 });
      expect(() => engine.exportAdapter(h.id, { format: 'gguf', dtype: 'q8_0' })).toThrow(/f32 or f16/);
      expect(() => engine.exportAdapter(h.id, { format: 'onnx' })).toThrow(/"peft" or "gguf"/);
      // A tokenizer given as an object of functions has no vocabulary to write.
      engine.tokenizer = { encode: () => [], decode: () => '', vocabSize: 32000, bosId: 1, eosId: 2, addsBos: true };
      expect(() => engine.exportModel({ format: 'gguf' })).toThrow(/tokenizer cannot be written to GGUF/);
      engine.tokenizer = null;
      expect(() => engine.exportModel({ format: 'gguf' })).toThrow(/needs the tokenizer/);
    } finally {
      await engine.dispose();
    }
  });
});
