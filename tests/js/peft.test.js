// PEFT adapter files: the safetensors writer/reader, PEFT's module-selection rules, exact save -> load round trips,
// the real PEFT adapters in ../shared/adapters on models of their shapes, and hostile files.
import { describe, test, expect, beforeAll } from '@jest/globals';
import { readFileSync } from 'node:fs';

import { Adapter } from '../../web/core/core.js';
import { BaseModelMismatchError, InvalidAdapterError, InvalidArgumentError } from '../../web/errors.js';
import {
  AdapterModelMismatchError, AdapterShapeError, LoraSpecError, UnsupportedAdapterError, getPatternKey, resolveLoraSpec,
} from '../../web/formats/peft.js';
import { peftToAdapter } from '../../web/formats/peft-load.js';
import { adapterToPeft } from '../../web/formats/peft-save.js';
import { loadModel } from '../../web/formats/loader.js';
import { SafetensorsError, readSafetensors, writeSafetensors } from '../../web/formats/safetensors.js';
import { halfBytes, loadCore, readShared, sharedPath } from './helpers/core.js';

const CFG = 'adapter_config.json';
const WTS = 'adapter_model.safetensors';

// Hand-written configs of the real adapters' base models (weights stay zero: only shapes matter there).
const GPT2_124M = { arch: 2, dim: 768, hiddenDim: 3072, nLayers: 12, nHeads: 12, nKvHeads: 12, headDim: 64,
  vocabSize: 50257, maxSeqLen: 1024, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 10000, normEps: 1e-5,
  bosId: 50256, eosId: 50256 };
const SMOLLM_135M = { arch: 1, dim: 576, hiddenDim: 1536, nLayers: 30, nHeads: 9, nKvHeads: 3, headDim: 64,
  vocabSize: 49152, maxSeqLen: 2048, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 10000, normEps: 1e-5,
  bosId: 1, eosId: 2 };
// Small models for everything else.
const TINY_LLAMA = { arch: 1, dim: 64, hiddenDim: 172, nLayers: 4, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 97,
  maxSeqLen: 64, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 10000, normEps: 1e-5, bosId: 1, eosId: 2 };
const TINY_GPT2 = { arch: 2, dim: 32, hiddenDim: 128, nLayers: 3, nHeads: 4, nKvHeads: 4, headDim: 8, vocabSize: 101,
  maxSeqLen: 64, tiedEmbeddings: 1, qkvBias: 0, ropeLayout: 0, ropeTheta: 10000, normEps: 1e-5, bosId: 0, eosId: 0 };

let core;
beforeAll(async () => {
  core = await loadCore();
});

/** Deterministic uniform numbers in [-1, 1) (mulberry32). */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  };
}

function withModel(cfg, fn) {
  const model = core.createModel(cfg);
  try {
    return fn(model);
  } finally {
    model.free();
  }
}

/** An adapter from resolveLoraSpec with random A and B. */
function randomAdapter(model, spec, seed = 1) {
  const adapter = Adapter.create(model, spec);
  const rand = rng(seed);
  for (const m of adapter.modules()) {
    const A = adapter.view(m.A, m.rank * m.inFeatures);
    for (let i = 0; i < A.length; i++) A[i] = rand() * 0.5;
    const B = adapter.view(m.B, m.outFeatures * m.rank);
    for (let i = 0; i < B.length; i++) B[i] = rand() * 0.5;
  }
  return adapter;
}

function maxAbsDiff(a, b) {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Everything about an adapter, copied out of wasm memory. */
function snapshot(model, adapter) {
  return adapter.modules().map((m) => ({
    path: model.modulePath(m.layer, m.slot), layer: m.layer, slot: m.slot, rank: m.rank, scale: m.scale, alpha: m.alpha,
    A: adapter.view(m.A, m.rank * m.inFeatures).slice(), B: adapter.view(m.B, m.outFeatures * m.rank).slice(),
  }));
}

function expectSameAdapter(got, want) {
  expect(got.map((m) => [m.path, m.rank, m.scale])).toEqual(want.map((m) => [m.path, m.rank, m.scale]));
  for (let i = 0; i < want.length; i++) {
    // Bit-exact: Buffer comparison of the raw bytes.
    expect(Buffer.from(got[i].A.buffer).equals(Buffer.from(want[i].A.buffer))).toBe(true);
    expect(Buffer.from(got[i].B.buffer).equals(Buffer.from(want[i].B.buffer))).toBe(true);
  }
}

function sharedAdapter(name) {
  return {
    [CFG]: readFileSync(sharedPath(`adapters/${name}/${CFG}`), 'utf8'),
    [WTS]: new Uint8Array(readFileSync(sharedPath(`adapters/${name}/${WTS}`))),
  };
}

/** Rewrite a safetensors file: edit(entries) gets [{ name, shape, dtype, bytes }] and returns the new list. */
function rewrite(bytes, edit, metadata) {
  const st = readSafetensors(core, bytes);
  const entries = [...st.tensors.values()].map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype, bytes: t.bytes.slice() }));
  return writeSafetensors(edit(entries), { metadata: metadata ?? st.metadata });
}

/** Expect fn to throw an instance of cls whose message contains every string in parts. */
function expectError(fn, cls, code, ...parts) {
  let err = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  if (!err) throw new Error(`expected ${cls.name} (${code}) but nothing was thrown`);
  if (!(err instanceof cls) || err.code !== code) throw new Error(`expected ${cls.name} (${code}), got ${err.name} (${err.code}): ${err.message}`);
  for (const p of parts) expect(err.message).toContain(p);
  return err;
}

describe('safetensors writer and reader', () => {
  test('writes the reference implementation\'s documented bytes', () => {
    // huggingface/safetensors' own tests: one F32 tensor "attn.0" of shape [1, 2, 3] holding 0..5 is a 64-byte header
    // and no padding; "attn0" of shape [1, 1, 2, 3] pads its 65-byte header with 7 spaces; an empty file is "{}" and
    // 6 spaces.
    const text = (bytes, from, to) => new TextDecoder().decode(bytes.subarray(from, to));
    const header = (bytes) => Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const values = Float32Array.from([0, 1, 2, 3, 4, 5]);
    const one = writeSafetensors([{ name: 'attn.0', shape: [1, 2, 3], data: values }]);
    expect(one.length).toBe(8 + 64 + 24);
    expect(header(one)).toBe(64);
    expect(text(one, 8, 72)).toBe('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}');
    expect(new Float32Array(one.slice(72).buffer)).toEqual(values);
    const padded = writeSafetensors([{ name: 'attn0', shape: [1, 1, 2, 3], data: values }]);
    expect(header(padded)).toBe(72);
    expect(text(padded, 8 + 64, 8 + 72)).toBe('}       ');
    const empty = writeSafetensors([]);
    expect(Array.from(empty)).toEqual([8, 0, 0, 0, 0, 0, 0, 0, ...new TextEncoder().encode('{}      ')]);
    const meta = writeSafetensors([], { metadata: { framework: 'pt' } });
    expect(header(meta)).toBe(40);
    expect(text(meta, 8)).toBe('{"__metadata__":{"framework":"pt"}}     ');
  });

  test('key order and bytes do not depend on input order; the C parser reads everything back', () => {
    const a = { name: 'b.weight', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, -6.5]) };
    const b = { name: 'a.weight', shape: [3], data: Float32Array.from([0.25, Infinity, -0]) };
    const c = { name: 'c.bias', shape: [], data: Float32Array.from([7]) };
    const meta = { format: 'pt', note: 'é ünïcode "quoted"' };
    const one = writeSafetensors([a, b, c], { metadata: meta });
    const two = writeSafetensors([c, a, b], { metadata: meta });
    expect(Buffer.from(one).equals(Buffer.from(two))).toBe(true);
    const headerLen = Number(new DataView(one.buffer).getBigUint64(0, true));
    expect(headerLen % 8).toBe(0);
    const parsed = core.parseSafetensors(one);
    expect(parsed.tensors.map((t) => t.name)).toEqual(['a.weight', 'b.weight', 'c.bias']);
    expect(parsed.tensors.map((t) => t.shape)).toEqual([[3], [2, 3], []]);
    expect(parsed.tensors.every((t) => t.dtype === 'F32')).toBe(true);
    expect(parsed.metadata).toEqual(meta);
    const st = readSafetensors(core, one);
    expect(Array.from(st.float32('b.weight'))).toEqual([1, 2, 3, 4, 5, -6.5]);
    expect(Object.is(st.float32('a.weight')[2], -0)).toBe(true);
    expect(st.float32('a.weight')[1]).toBe(Infinity);
  });

  test('F16 and BF16 bit patterns widen exactly', () => {
    const half = Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x03ff, 0x7c00, 0xfc00, 0x8000, 0x3555, 0x7e00]);
    const halfWant = [1, -2, 65504, 2 ** -24, 2 ** -14, 1023 * 2 ** -24, Infinity, -Infinity, -0, 1365 / 4096, NaN];
    const bf = Uint16Array.from([0x3f80, 0xc0a0, 0x0001, 0x7f80, 0x3dcd]);
    const bfWant = [1, -5, 2 ** -133, Infinity, new Float32Array(new Uint32Array([0x3dcd0000]).buffer)[0]];
    const file = writeSafetensors([
      { name: 'h', shape: [half.length], dtype: 'F16', bytes: new Uint8Array(half.buffer) },
      { name: 'b', shape: [bf.length], dtype: 'BF16', bytes: new Uint8Array(bf.buffer) },
    ]);
    const st = readSafetensors(core, file);
    expect(st.tensors.get('h').dtype).toBe('F16');
    const h = Array.from(st.float32('h'));
    for (let i = 0; i < halfWant.length; i++) expect(Object.is(h[i], halfWant[i])).toBe(true);
    expect(Array.from(st.float32('b'))).toEqual(bfWant);
    const ints = readSafetensors(core, writeSafetensors([{ name: 'i', shape: [1], dtype: 'I32', bytes: new Uint8Array(4) }]));
    expect(() => ints.float32('i')).toThrow(expect.objectContaining({ name: 'SafetensorsError', code: 'UNSUPPORTED_DTYPE' }));
  });

  test('refuses inconsistent input and reports corrupt files with the parser reason', () => {
    const t = (data, shape = [2]) => ({ name: 'x', shape, data });
    expect(() => writeSafetensors([t(new Float32Array(3))])).toThrow(/3 values do not fill shape \[2\]/);
    expect(() => writeSafetensors([t(new Float32Array(2)), t(new Float32Array(2))])).toThrow(/appears twice/);
    expect(() => writeSafetensors([t(new Float64Array(2))])).toThrow(InvalidArgumentError);
    expect(() => writeSafetensors([t(new Float32Array(2), [-2])])).toThrow(/bad dimension/);
    expect(() => writeSafetensors([], { metadata: { n: 1 } })).toThrow(/must be a string/);
    expect(() => writeSafetensors([{ name: '__metadata__', shape: [], data: new Float32Array(1) }])).toThrow(InvalidArgumentError);
    const good = writeSafetensors([t(Float32Array.from([1, 2]))]);
    const err = expectError(() => readSafetensors(core, good.subarray(0, good.length - 1)), SafetensorsError, 'BAD_FORMAT', 'implies');
    expect(err.cause?.name).toBe('FormatError'); // the core's BAD_FORMAT status
    expectError(() => readSafetensors(core, new Uint8Array([1, 2, 3])), SafetensorsError, 'BAD_FORMAT', 'too short');
  });
});

describe('resolveLoraSpec follows PEFT matching', () => {
  const selected = (spec) => spec.modules.map((m) => m.path);

  test('names match a path equal to them or ending in "." + name', () => {
    withModel(TINY_GPT2, (model) => {
      expect(selected(resolveLoraSpec(model, { targets: ['c_proj'] }))).toEqual([
        'transformer.h.0.attn.c_proj', 'transformer.h.0.mlp.c_proj', 'transformer.h.1.attn.c_proj',
        'transformer.h.1.mlp.c_proj', 'transformer.h.2.attn.c_proj', 'transformer.h.2.mlp.c_proj']);
      expect(selected(resolveLoraSpec(model, { targets: ['attn.c_proj'] }))).toEqual([
        'transformer.h.0.attn.c_proj', 'transformer.h.1.attn.c_proj', 'transformer.h.2.attn.c_proj']);
      expect(selected(resolveLoraSpec(model, { targets: ['transformer.h.1.mlp.c_fc'] }))).toEqual(['transformer.h.1.mlp.c_fc']);
      // "proj" is not a dotted suffix of "c_proj".
      expectError(() => resolveLoraSpec(model, { targets: ['proj'] }), LoraSpecError, 'UNKNOWN_TARGET', '"proj"');
      expect(selected(resolveLoraSpec(model))).toEqual(['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn', 'transformer.h.2.attn.c_attn']);
    });
  });

  test('a string is a regex that must match the whole path; all-linear takes every slot; layers filter', () => {
    withModel(TINY_LLAMA, (model) => {
      expect(selected(resolveLoraSpec(model, { targets: 'model\\.layers\\.[13]\\.self_attn\\.(q|v)_proj' }))).toEqual([
        'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj', 'model.layers.3.self_attn.q_proj',
        'model.layers.3.self_attn.v_proj']);
      // re.fullmatch, not re.search: a bare name matches nothing.
      expectError(() => resolveLoraSpec(model, { targets: 'q_proj' }), LoraSpecError, 'UNKNOWN_TARGET', 'model.layers.0.self_attn.q_proj');
      expect(resolveLoraSpec(model, { targets: 'all-linear' }).modules).toHaveLength(4 * 7);
      expect(selected(resolveLoraSpec(model, { targets: ['v_proj', 'down_proj'], layers: [0, 2] }))).toEqual([
        'model.layers.0.self_attn.v_proj', 'model.layers.0.mlp.down_proj', 'model.layers.2.self_attn.v_proj',
        'model.layers.2.mlp.down_proj']);
      expect(selected(resolveLoraSpec(model, { targets: 'ALL-LINEAR', layers: 3 }))).toHaveLength(7);
      expect(selected(resolveLoraSpec(model))).toEqual([0, 1, 2, 3].flatMap((l) => [
        `model.layers.${l}.self_attn.q_proj`, `model.layers.${l}.self_attn.v_proj`]));
      expectError(() => resolveLoraSpec(model, { targets: 'model\\..*', layers: [1] }), LoraSpecError, 'INVALID_LORA_SPEC', 'regex');
      expectError(() => resolveLoraSpec(model, { targets: ['q_proj'], layers: [4] }), LoraSpecError, 'INVALID_LORA_SPEC', '4 layers');
      expectError(() => resolveLoraSpec(model, { targets: '(?P<x>q_proj)' }), LoraSpecError, 'INVALID_LORA_SPEC', 'not a regular expression');
    });
  });

  test('unknown target names list the modules that exist', () => {
    withModel(TINY_LLAMA, (model) => {
      const err = expectError(() => resolveLoraSpec(model, { targets: ['q_proj', 'qkv_proj', 'c_attn'] }), LoraSpecError,
        'UNKNOWN_TARGET', '"qkv_proj"', '"c_attn"', 'q_proj, up_proj, v_proj', 'self_attn.q_proj');
      expect(err.details.unknown).toEqual(['qkv_proj', 'c_attn']);
      expect(err.details.available).toEqual(['down_proj', 'embed_tokens', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    });
  });

  test('rank and alpha patterns: (.*\\.)?(key)$ on the full path, first key in insertion order wins', () => {
    expect(getPatternKey(['q_proj'], 'model.layers.1.self_attn.q_proj')).toBe('q_proj');
    expect(getPatternKey(['proj'], 'model.layers.1.self_attn.q_proj')).toBe(null);
    expect(getPatternKey(['layers.1.self_attn.q_proj'], 'model.layers.11.self_attn.q_proj')).toBe(null);
    expect(getPatternKey(['model.layers.1.self_attn.q_proj'], 'model.layers.1.self_attn.q_proj')).toBe('model.layers.1.self_attn.q_proj');
    expect(getPatternKey(['layers\\.[0-2]\\..*q_proj', 'q_proj'], 'model.layers.2.self_attn.q_proj')).toBe('layers\\.[0-2]\\..*q_proj');
    expect(getPatternKey(['q_proj', 'layers\\.[0-2]\\..*q_proj'], 'model.layers.2.self_attn.q_proj')).toBe('q_proj');
    // The key is one group: an alternation inside it stays anchored on both alternatives.
    expect(getPatternKey(['q_proj|v_proj'], 'model.layers.0.self_attn.v_proj')).toBe('q_proj|v_proj');
    expect(getPatternKey(['q_proj|v_proj'], 'model.layers.0.self_attn.v_proj_x')).toBe(null);
    withModel(TINY_LLAMA, (model) => {
      const spec = resolveLoraSpec(model, { targets: ['q_proj', 'v_proj'], rank: 8, alpha: 16,
        rankPattern: { 'layers.1.self_attn.q_proj': 4, q_proj: 2 }, alphaPattern: { 'v_proj': 3.5 } });
      const byPath = Object.fromEntries(spec.modules.map((m) => [m.path, [m.rank, m.alpha]]));
      expect(byPath['model.layers.1.self_attn.q_proj']).toEqual([4, 16]);
      expect(byPath['model.layers.0.self_attn.q_proj']).toEqual([2, 16]);
      expect(byPath['model.layers.3.self_attn.v_proj']).toEqual([8, 3.5]);
      const S = model.modules().length;
      expect(spec.ranks[1 * S + 0]).toBe(4);
      expect(spec.ranks[1 * S + 1]).toBe(0); // k_proj: not targeted
      // Reversed, q_proj takes every module first and the specific key never applies: reported, not ignored.
      expectError(() => resolveLoraSpec(model, { targets: ['q_proj'], rankPattern: { q_proj: 2, 'layers.1.self_attn.q_proj': 4 } }),
        LoraSpecError, 'UNUSED_PATTERN', '"layers.1.self_attn.q_proj"', 'earlier key');
      expectError(() => resolveLoraSpec(model, { targets: ['q_proj'], rankPattern: { k_proj: 4 } }), LoraSpecError, 'UNUSED_PATTERN', '"k_proj"');
    });
  });

  test('rank and alpha are validated', () => {
    withModel(TINY_LLAMA, (model) => {
      for (const rank of [0, -1, 1.5, '8', NaN]) expectError(() => resolveLoraSpec(model, { rank }), LoraSpecError, 'INVALID_LORA_SPEC', 'rank');
      for (const alpha of [NaN, Infinity, '16', null]) expectError(() => resolveLoraSpec(model, { alpha }), LoraSpecError, 'INVALID_LORA_SPEC', 'alpha');
      expectError(() => resolveLoraSpec(model, { rankPattern: { q_proj: 0 } }), LoraSpecError, 'INVALID_LORA_SPEC', 'rankPattern');
      expectError(() => resolveLoraSpec(model, { alphaPattern: { q_proj: Infinity } }), LoraSpecError, 'INVALID_LORA_SPEC', 'alphaPattern');
      // v_proj is 64 -> 32 (4 kv heads of 8): rank 33 cannot fit.
      expectError(() => resolveLoraSpec(model, { targets: ['v_proj'], rank: 33 }), LoraSpecError, 'INVALID_LORA_SPEC', 'exceeds 32');
      expectError(() => resolveLoraSpec(model, { targets: [] }), LoraSpecError, 'INVALID_LORA_SPEC', 'non-empty');
    });
  });

  test('Adapter.create takes the spec; scales are alpha / r, or alpha / sqrt(r) with rsLoRA', () => {
    withModel(TINY_LLAMA, (model) => {
      for (const useRslora of [false, true]) {
        const spec = resolveLoraSpec(model, { targets: ['q_proj', 'o_proj'], rank: 16, alpha: 8, useRslora, rankPattern: { o_proj: 4 } });
        const adapter = Adapter.create(model, spec);
        for (const m of adapter.modules()) {
          const r = m.slot === 0 ? 16 : 4;
          expect(m.rank).toBe(r);
          expect(m.scale).toBe(useRslora ? 8 / Math.sqrt(r) : 8 / r);
        }
        adapter.free();
      }
    });
  });
});

describe('save -> load round trip', () => {
  test('llama: rank/alpha patterns and an overridden scale come back bit-exact; the file parses in C', () => {
    withModel(TINY_LLAMA, (model) => {
      const spec = resolveLoraSpec(model, { targets: 'all-linear', rank: 8, alpha: 16,
        rankPattern: { 'layers.2.mlp.down_proj': 3, k_proj: 4 }, alphaPattern: { up_proj: 0.1, 'model.layers.0.self_attn.q_proj': 5 } });
      const adapter = randomAdapter(model, spec, 7);
      const gateIndex = adapter.modules().find((m) => model.modulePath(m.layer, m.slot) === 'model.layers.3.mlp.gate_proj').index;
      adapter.setScale(gateIndex, 0.3);
      const before = snapshot(model, adapter);
      const out = adapterToPeft(model, adapter, { baseModel: 'tiny', baseFingerprint: 'sha256:abc', dropout: 0.05, extraMetadata: { run: '3' } });
      adapter.free();

      const cfg = JSON.parse(out.files[CFG]);
      expect(cfg).toEqual(out.config);
      expect(cfg).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, bias: 'none',
        fan_in_fan_out: false, use_rslora: false, lora_dropout: 0.05, init_lora_weights: true, inference_mode: true,
        base_model_name_or_path: 'tiny', layers_to_transform: null,
        target_modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'] });
      expect(cfg.rank_pattern).toEqual({ 'model.layers.0.self_attn.k_proj': 4, 'model.layers.1.self_attn.k_proj': 4,
        'model.layers.2.self_attn.k_proj': 4, 'model.layers.2.mlp.down_proj': 3, 'model.layers.3.self_attn.k_proj': 4 });
      expect(cfg.alpha_pattern).toMatchObject({ 'model.layers.0.self_attn.q_proj': 5, 'model.layers.0.mlp.up_proj': 0.1 });
      // 0.3 = alpha / 8 -> alpha 2.4 (as the shortest decimal that is the same f32).
      expect(cfg.alpha_pattern['model.layers.3.mlp.gate_proj']).toBe(2.4);
      expect(Object.keys(cfg.alpha_pattern)).toHaveLength(6);
      expect(Object.keys(cfg)).toEqual([...Object.keys(cfg)].sort());

      const parsed = core.parseSafetensors(out.files[WTS]);
      expect(parsed.metadata).toEqual({ format: 'pt', 'weblora.base_fingerprint': 'sha256:abc', run: '3' });
      expect(parsed.tensors).toHaveLength(2 * 28);
      const names = parsed.tensors.map((t) => t.name);
      expect(names).toEqual([...names].sort());
      const down2 = parsed.tensors.filter((t) => t.name.startsWith('base_model.model.model.layers.2.mlp.down_proj.'));
      expect(down2.map((t) => [t.name.split('.').slice(-2).join('.'), t.shape])).toEqual([['lora_A.weight', [3, 172]], ['lora_B.weight', [64, 3]]]);

      const loaded = peftToAdapter(core, model, out.files, { baseFingerprint: 'sha256:abc' });
      const after = snapshot(model, loaded);
      expectSameAdapter(after, before);
      expect(after.find((m) => m.path === 'model.layers.3.mlp.gate_proj').scale).toBe(Math.fround(0.3));
      // Same adapter, same bytes.
      const again = adapterToPeft(model, loaded, { baseModel: 'tiny', baseFingerprint: 'sha256:abc', dropout: 0.05, extraMetadata: { run: '3' } });
      expect(again.files[CFG]).toBe(out.files[CFG]);
      expect(Buffer.from(again.files[WTS]).equals(Buffer.from(out.files[WTS]))).toBe(true);
      loaded.free();
    });
  });

  test('a llama2.c checkpoint exports under Hugging Face Llama module names', async () => {
    const model = (await loadModel(core, { 'model.bin': readShared('models/stories260K/stories260K.bin') })).model;
    try {
      const adapter = randomAdapter(model, resolveLoraSpec(model, { targets: 'all-linear', rank: 2, alpha: 4 }), 13);
      const before = snapshot(model, adapter);
      const out = adapterToPeft(model, adapter, { baseModel: 'stories260K' });
      adapter.free();
      expect(out.config.target_modules).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
      const names = core.parseSafetensors(out.files[WTS]).tensors.map((t) => t.name);
      expect(names).toHaveLength(5 * 7 * 2);
      expect(names).toContain('base_model.model.model.layers.4.mlp.gate_proj.lora_A.weight'); // llama2.c w1
      expect(names.filter((n) => n.includes('mlp.down_proj.lora_A')).length).toBe(5); // w2, (r, hidden 172)
      expect(core.parseSafetensors(out.files[WTS]).tensors.find((t) => t.name.endsWith('layers.0.mlp.down_proj.lora_A.weight')).shape).toEqual([2, 172]);
      const loaded = peftToAdapter(core, model, out.files);
      expectSameAdapter(snapshot(model, loaded), before);
      loaded.free();
    } finally {
      model.free();
    }
  });

  // llama2.c keeps q/k rows in interleaved RoPE order; Hugging Face's conversion permutes them to rotate-half order.
  // An adapter saved from the llama2.c model must act on the converted model exactly as on the original.
  test('a llama2.c adapter works on the Hugging Face conversion of its model (q/k lora_B rows permuted)', async () => {
    const src = (await loadModel(core, { 'model.bin': readShared('models/stories260K/stories260K.bin') })).model;
    const hf = core.createModel({ ...src.config, ropeLayout: 1 - src.config.ropeLayout });
    try {
      expect(src.config.ropeLayout).toBe(1); // interleaved
      const c = src.config;
      const hfByName = new Map(hf.tensors().map((t) => [t.name, t]));
      for (const t of src.tensors()) {
        let w = src.tensorView(t).slice();
        const heads = /self_attn\.q_proj\.weight$/.test(t.name) ? c.nHeads : /self_attn\.k_proj\.weight$/.test(t.name) ? c.nKvHeads : 0;
        if (heads) { // HF convert_llama_weights_to_hf permute: row (h, 2i + p) -> (h, p * hs/2 + i)
          const cols = t.shape[1];
          const out = new Float32Array(w.length);
          for (let h = 0; h < heads; h++) {
            for (let i = 0; i < c.headDim / 2; i++) {
              for (let p = 0; p < 2; p++) {
                const from = (h * c.headDim + 2 * i + p) * cols;
                out.set(w.subarray(from, from + cols), (h * c.headDim + p * (c.headDim / 2) + i) * cols);
              }
            }
          }
          w = out;
        }
        hf.tensorView(hfByName.get(t.name)).set(w);
      }
      const tokens = [1, 403, 407, 261, 378, 430, 375, 259];
      src.reserve(1, tokens.length);
      hf.reserve(1, tokens.length);
      src.forward(tokens);
      const srcBase = src.logits().slice();
      hf.forward(tokens);
      // the conversion itself is right: the two RoPE layouts round differently, measured 1.6e-5 (PyTorch's own float32
      // error on stories260K is 1.6e-5, golden); 2e-4 leaves a factor 4 on the next check too
      expect(maxAbsDiff(hf.logits(), srcBase)).toBeLessThan(2e-4);

      const adapter = randomAdapter(src, resolveLoraSpec(src, { targets: ['q_proj', 'k_proj', 'v_proj'], rank: 4, alpha: 8 }), 17);
      const before = snapshot(src, adapter);
      src.setAdapters([adapter]);
      src.forward(tokens);
      const srcTuned = src.logits().slice();
      src.setAdapters([]);
      const { files } = adapterToPeft(src, adapter);
      adapter.free();

      const onHf = peftToAdapter(core, hf, files);
      hf.setAdapters([onHf]);
      hf.forward(tokens);
      const hfTuned = hf.logits().slice();
      hf.setAdapters([]);
      onHf.free();
      expect(maxAbsDiff(srcTuned, srcBase)).toBeGreaterThan(0.05);
      expect(maxAbsDiff(hfTuned, srcTuned)).toBeLessThan(2e-4); // measured 4.8e-5; unpermuted rows move it by ~1

      // And back onto the llama2.c model: the same adapter, bit for bit.
      const back = peftToAdapter(core, src, files);
      expectSameAdapter(snapshot(src, back), before);
      back.free();
    } finally {
      src.free();
      hf.free();
    }
  });

  test('rsLoRA scales are recognised and written as use_rslora', () => {
    withModel(TINY_LLAMA, (model) => {
      const spec = resolveLoraSpec(model, { targets: ['q_proj', 'v_proj'], rank: 16, alpha: 8, useRslora: true, rankPattern: { v_proj: 9 } });
      const adapter = randomAdapter(model, spec, 3);
      const before = snapshot(model, adapter);
      const out = adapterToPeft(model, adapter);
      adapter.free();
      expect(out.config).toMatchObject({ use_rslora: true, r: 16, lora_alpha: 8, alpha_pattern: {}, target_modules: ['q_proj', 'v_proj'] });
      const loaded = peftToAdapter(core, model, out.files);
      expectSameAdapter(snapshot(model, loaded), before);
      expect(before[0].scale).toBe(Math.fround(8 / 4));
      expect(before[1].scale).toBe(Math.fround(8 / 3));
      loaded.free();
    });
  });

  test('target_modules select exactly the saved modules (block-relative names and layers_to_transform)', () => {
    withModel(TINY_GPT2, (model) => {
      const cases = [
        [{ targets: ['attn.c_proj'], layers: [0, 2] }, ['attn.c_proj'], [0, 2]],
        [{ targets: ['c_proj', 'c_attn'] }, ['c_attn', 'c_proj'], null],
        [{ targets: ['transformer.h.1.mlp.c_fc', 'transformer.h.2.attn.c_attn'] }, ['transformer.h.1.mlp.c_fc', 'transformer.h.2.attn.c_attn'], null],
      ];
      for (const [opts, targets, layers] of cases) {
        const adapter = randomAdapter(model, resolveLoraSpec(model, { rank: 2, alpha: 4, ...opts }), 11);
        const before = snapshot(model, adapter);
        const out = adapterToPeft(model, adapter);
        adapter.free();
        expect(out.config.target_modules).toEqual(targets);
        expect(out.config.layers_to_transform).toEqual(layers);
        expect(out.config.layers_pattern).toBe(layers ? 'h' : null);
        expect(out.config.fan_in_fan_out).toBe(true);
        const loaded = peftToAdapter(core, model, out.files);
        expectSameAdapter(snapshot(model, loaded), before);
        loaded.free();
      }
    });
  });

  test('PEFT keys with an adapter name, and F16 / BF16 weights, load', () => {
    withModel(TINY_LLAMA, (model) => {
      const adapter = randomAdapter(model, resolveLoraSpec(model, { targets: ['q_proj'], rank: 2, alpha: 2, layers: [0] }), 5);
      const out = adapterToPeft(model, adapter);
      adapter.free();
      const named = rewrite(out.files[WTS], (es) => es.map((e) => ({ ...e, name: e.name.replace(/\.weight$/, '.default.weight') })));
      const viaName = peftToAdapter(core, model, { ...out.files, [WTS]: named });
      expect(snapshot(model, viaName).map((m) => m.path)).toEqual(['model.layers.0.self_attn.q_proj']);
      viaName.free();

      // A: 2 x 64 f16 values k/64 (exact in f16); B: 64 x 2 bf16 values.
      const aBits = new Uint16Array(128);
      const aWant = new Float32Array(128);
      for (let i = 0; i < 128; i++) {
        const k = (i % 31) - 15; // -15..15
        aWant[i] = k / 64;
        // f16 of k/64: sign, exponent and 10-bit mantissa built by hand.
        if (k === 0) aBits[i] = 0;
        else {
          const e = Math.floor(Math.log2(Math.abs(k) / 64));
          aBits[i] = (k < 0 ? 0x8000 : 0) | ((e + 15) << 10) | Math.round((Math.abs(k) / 64 / 2 ** e - 1) * 1024);
        }
      }
      const bBits = new Uint16Array(128);
      for (let i = 0; i < 128; i++) bBits[i] = 0x3f00 + i; // 0.5 .. ~0.996 and beyond, exact in bf16
      const bWant = Array.from(bBits, (_, i) => 0.5 * (1 + i / 128));
      const mixed = rewrite(out.files[WTS], (es) => es.map((e) => (e.name.includes('lora_A')
        ? { ...e, dtype: 'F16', bytes: new Uint8Array(aBits.buffer) }
        : { ...e, dtype: 'BF16', bytes: new Uint8Array(bBits.buffer) })));
      const loaded = peftToAdapter(core, model, { ...out.files, [WTS]: mixed });
      const [m] = snapshot(model, loaded);
      expect(Array.from(m.A)).toEqual(Array.from(aWant));
      expect(Array.from(m.B)).toEqual(bWant);
      expect(m.B[0]).toBe(0.5);
      loaded.free();
    });
  });

  test('the base fingerprint in the file must match the model unless the mismatch is allowed', () => {
    withModel(TINY_LLAMA, (model) => {
      const adapter = randomAdapter(model, resolveLoraSpec(model, { rank: 2 }), 9);
      const out = adapterToPeft(model, adapter, { baseFingerprint: 'fp-A' });
      const plain = adapterToPeft(model, adapter);
      adapter.free();
      const err = expectError(() => peftToAdapter(core, model, out.files, { baseFingerprint: 'fp-B' }), BaseModelMismatchError,
        'BASE_MODEL_MISMATCH', 'fp-A', 'fp-B');
      expect(err.details).toEqual({ expected: 'fp-A', actual: 'fp-B' });
      peftToAdapter(core, model, out.files, { baseFingerprint: 'fp-B', allowFingerprintMismatch: true }).free();
      peftToAdapter(core, model, out.files, { baseFingerprint: 'fp-A' }).free();
      peftToAdapter(core, model, out.files).free();
      peftToAdapter(core, model, plain.files, { baseFingerprint: 'fp-B' }).free(); // unknown: nothing to check
    });
  });

  // The loaded adapter must compute what PEFT computes: W x + (alpha / r) B A x, with r / alpha from the patterns.
  // The reference merges s * B A, built here from the file and the config alone, into the base weights.
  test.each([['llama', TINY_LLAMA], ['gpt2', TINY_GPT2]])('%s: logits with the loaded adapter equal logits with s*B*A merged by hand', (_, cfg) => {
    withModel(cfg, (model) => {
      const rand = rng(42);
      for (const t of model.tensors()) {
        const v = model.tensorView(t);
        const norm = t.ndim === 1 && /norm|ln_/.test(t.name) && t.name.endsWith('weight');
        for (let i = 0; i < v.length; i++) v[i] = norm ? 1 + 0.1 * rand() : 0.2 * rand();
      }
      const opts = cfg.arch === 1
        ? { targets: ['q_proj', 'v_proj', 'down_proj'], rank: 4, alpha: 6, rankPattern: { down_proj: 2 }, alphaPattern: { 'layers.1.self_attn.v_proj': 1.5 } }
        : { targets: ['c_attn', 'mlp.c_proj'], rank: 4, alpha: 6, rankPattern: { c_attn: 3 }, alphaPattern: { 'h.2.mlp.c_proj': 1.5 }, useRslora: true };
      const src = randomAdapter(model, resolveLoraSpec(model, opts), 8);
      const { files } = adapterToPeft(model, src);
      src.free();
      const tokens = [1, 5, 9, 3, 7, 2, 8, 4];
      model.reserve(1, tokens.length);
      model.forward(tokens);
      const base = model.logits().slice();

      const adapter = peftToAdapter(core, model, files);
      model.setAdapters([adapter]);
      model.forward(tokens);
      const withAdapter = model.logits().slice();
      model.setAdapters([]);
      adapter.free();

      // What PEFT's rules give for these options, written out by hand rather than resolved by peft.js: rank_pattern
      // "down_proj" / "c_attn" takes every layer's module, alpha_pattern keys with a layer take that layer's only.
      const expected = (p) => (cfg.arch === 1
        ? { r: p.endsWith('.down_proj') ? 2 : 4, alpha: p === 'model.layers.1.self_attn.v_proj' ? 1.5 : 6 }
        : { r: p.endsWith('.c_attn') ? 3 : 4, alpha: p === 'transformer.h.2.mlp.c_proj' ? 1.5 : 6 });
      const st = readSafetensors(core, files[WTS]);
      const byName = new Map(model.tensors().map((t) => [t.name, t]));
      let merged = 0;
      for (const key of st.tensors.keys()) {
        if (!key.endsWith('lora_A.weight')) continue;
        const path = key.slice('base_model.model.'.length, -'.lora_A.weight'.length);
        const { r, alpha } = expected(path);
        const s = cfg.arch === 1 ? alpha / r : alpha / Math.sqrt(r);
        const A = st.float32(key);
        const B = st.float32(key.replace('lora_A', 'lora_B'));
        const t = byName.get(`${path}.weight`);
        const W = model.tensorView(t); // memory layout (out, in), Conv1D included
        const outF = B.length / r;
        const inF = A.length / r;
        expect(W.length).toBe(outF * inF);
        for (let o = 0; o < outF; o++) {
          for (let i = 0; i < inF; i++) {
            let d = 0;
            for (let k = 0; k < r; k++) d += B[o * r + k] * A[k * inF + i];
            W[o * inF + i] += s * d;
          }
        }
        merged++;
      }
      expect(merged).toBe(cfg.arch === 1 ? 12 : 6);
      model.forward(tokens);
      const mergedLogits = model.logits();
      let maxDiff = 0;
      let effect = 0;
      for (let i = 0; i < base.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(mergedLogits[i] - withAdapter[i]));
        effect = Math.max(effect, Math.abs(withAdapter[i] - base[i]));
      }
      // The adapter moves logits by far more than the f32 difference between the two evaluation orders (measured:
      // effects 3.5 and 4.0, differences 1.9e-6 and 5.3e-6, so 1e-4 of the effect leaves a factor 60; a wrong r or
      // alpha in any module changes its contribution by a third or more).
      expect(effect).toBeGreaterThan(0.05);
      expect(maxDiff).toBeLessThan(effect * 1e-4);
    });
  });
});

describe('real PEFT adapters on models of their shapes', () => {
  test('gpt2 causal-LM adapter: c_attn and both c_proj, r 8, alpha 32 -> scale 4, 72 tensors; seq-cls adapter rejected', () => {
    withModel(GPT2_124M, (model) => {
      const files = sharedAdapter('gpt2-lora-r8-causallm');
      const st = readSafetensors(core, files[WTS]);
      expect(st.tensors.size).toBe(72);
      const adapter = peftToAdapter(core, model, files);
      const mods = snapshot(model, adapter);
      expect(mods).toHaveLength(36);
      const slots = model.modules();
      expect(new Set(mods.map((m) => slots[m.slot].name))).toEqual(new Set(['attn.c_attn', 'attn.c_proj', 'mlp.c_proj']));
      expect(new Set(mods.map((m) => m.layer))).toEqual(new Set([...Array(12).keys()]));
      for (const m of mods) {
        expect(m.rank).toBe(8);
        expect(m.scale).toBe(4);
        const inF = { 'attn.c_attn': 768, 'attn.c_proj': 768, 'mlp.c_proj': 3072 }[slots[m.slot].name];
        const outF = { 'attn.c_attn': 2304, 'attn.c_proj': 768, 'mlp.c_proj': 768 }[slots[m.slot].name];
        expect(m.A.length).toBe(8 * inF);
        expect(m.B.length).toBe(outF * 8);
        expect(Array.from(m.A)).toEqual(Array.from(st.float32(`base_model.model.${m.path}.lora_A.weight`)));
        expect(Array.from(m.B)).toEqual(Array.from(st.float32(`base_model.model.${m.path}.lora_B.weight`)));
      }
      // A trained adapter: B is not zero.
      expect(mods.some((m) => m.B.some((x) => x !== 0))).toBe(true);

      // Written back it is the same adapter in the same PEFT terms.
      const out = adapterToPeft(model, adapter, { baseModel: 'gpt2' });
      adapter.free();
      expect(out.config).toMatchObject({ r: 8, lora_alpha: 32, target_modules: ['c_attn', 'c_proj'], fan_in_fan_out: true,
        rank_pattern: {}, alpha_pattern: {}, layers_to_transform: null });
      const back = readSafetensors(core, out.files[WTS]);
      expect([...back.tensors.keys()].sort()).toEqual([...st.tensors.keys()].sort());
      for (const [name, t] of st.tensors) {
        expect(back.tensors.get(name).shape).toEqual(t.shape);
        expect(Buffer.from(back.tensors.get(name).bytes).equals(Buffer.from(t.bytes))).toBe(true);
      }

      const err = expectError(() => peftToAdapter(core, model, sharedAdapter('gpt2-lora-r8-seqcls')), UnsupportedAdapterError,
        'UNSUPPORTED_ADAPTER', 'base_model.model.score.weight');
      expect(err.details.tensors).toEqual(['base_model.model.score.weight']);
      expect(err).toBeInstanceOf(InvalidAdapterError);

      // The SmolLM adapter is for another architecture.
      expectError(() => peftToAdapter(core, model, sharedAdapter('smollm-135m-lora-r16')), AdapterModelMismatchError,
        'ADAPTER_MODEL_MISMATCH', 'model.layers.0.self_attn.q_proj', 'another model architecture');
    });
  });

  test('SmolLM-135M adapter: q_proj and v_proj, r 16, alpha 32 -> scale 2, 120 tensors', () => {
    withModel(SMOLLM_135M, (model) => {
      const files = sharedAdapter('smollm-135m-lora-r16');
      const st = readSafetensors(core, files[WTS]);
      expect(st.tensors.size).toBe(120);
      const adapter = peftToAdapter(core, model, files);
      const mods = snapshot(model, adapter);
      adapter.free();
      expect(mods).toHaveLength(60);
      for (const m of mods) {
        expect(m.rank).toBe(16);
        expect(m.scale).toBe(2);
        expect(m.path).toMatch(/^model\.layers\.\d+\.self_attn\.(q|v)_proj$/);
        expect(m.A.length).toBe(16 * 576);
        expect(m.B.length).toBe((m.path.endsWith('q_proj') ? 576 : 192) * 16);
        expect(Array.from(m.B)).toEqual(Array.from(st.float32(`base_model.model.${m.path}.lora_B.weight`)));
      }
      expect(new Set(mods.map((m) => m.layer)).size).toBe(30);
      expectError(() => peftToAdapter(core, model, sharedAdapter('gpt2-lora-r8-causallm')), AdapterModelMismatchError,
        'ADAPTER_MODEL_MISMATCH', 'transformer.h.0.attn.c_attn');
    });
  });
});

describe('hostile adapter files', () => {
  /** A valid small adapter (q_proj, v_proj in 4 layers, r 4) to break in various ways. */
  function validFiles(model) {
    const adapter = randomAdapter(model, resolveLoraSpec(model, { rank: 4, alpha: 8 }), 21);
    const out = adapterToPeft(model, adapter);
    adapter.free();
    return out.files;
  }
  const withConfig = (files, patch) => ({ ...files, [CFG]: JSON.stringify({ ...JSON.parse(files[CFG]), ...patch }) });
  const Q0 = 'base_model.model.model.layers.0.self_attn.q_proj';

  test('corrupt safetensors', () => {
    withModel(TINY_LLAMA, (model) => {
      const files = validFiles(model);
      const w = files[WTS];
      const n = Number(new DataView(w.buffer, w.byteOffset).getBigUint64(0, true));
      const badEntry = w.slice();
      badEntry.set(new TextEncoder().encode('{"x": 1}'.padEnd(n)), 8); // same length, a tensor entry that is a number
      const cases = [w.subarray(0, w.length - 4), w.subarray(0, 20), new Uint8Array(64).fill(0xff), new Uint8Array(0), badEntry,
        Uint8Array.from([...w, 0])];
      for (const bytes of cases) {
        const err = expectError(() => peftToAdapter(core, model, { ...files, [WTS]: bytes }), InvalidAdapterError, 'INVALID_ADAPTER',
          'not a valid safetensors file');
        expect(err.cause).toBeInstanceOf(SafetensorsError);
      }
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: 'text' }), InvalidAdapterError, 'INVALID_ADAPTER', 'bytes');
      // Header lengths beyond 2^53 are printed exactly.
      const huge = w.slice();
      new DataView(huge.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: huge }), InvalidAdapterError, 'INVALID_ADAPTER',
        'header length 18446744073709551615 exceeds the limit');
    });
  });

  test('wrong shapes name the key, the expected and the found shape', () => {
    withModel(TINY_LLAMA, (model) => {
      const files = validFiles(model);
      const wider = rewrite(files[WTS], (es) => es.map((e) => (e.name === `${Q0}.lora_A.weight`
        ? { ...e, shape: [4, 65], bytes: new Uint8Array(4 * 65 * 4) } : e)));
      let err = expectError(() => peftToAdapter(core, model, { ...files, [WTS]: wider }), AdapterShapeError, 'ADAPTER_SHAPE_MISMATCH',
        `${Q0}.lora_A.weight`, '[4, 65]', '[4, 64]');
      expect(err.details).toEqual({ key: `${Q0}.lora_A.weight`, expected: [4, 64], found: [4, 65] });
      // The file's rank disagrees with r in the config.
      err = expectError(() => peftToAdapter(core, model, withConfig(files, { r: 8 })), AdapterShapeError, 'ADAPTER_SHAPE_MISMATCH',
        `${Q0}.lora_A.weight`, '[4, 64]', '[8, 64]', 'rank 8');
      err = expectError(() => peftToAdapter(core, model, withConfig(files, { rank_pattern: { 'layers.2.self_attn.v_proj': 2 } })),
        AdapterShapeError, 'ADAPTER_SHAPE_MISMATCH', 'model.layers.2.self_attn.v_proj.lora_A.weight', 'rank_pattern');
      // lora_A and lora_B swapped.
      const swapped = rewrite(files[WTS], (es) => es.map((e) => (e.name.startsWith(Q0)
        ? { ...e, name: e.name.includes('lora_A') ? e.name.replace('lora_A', 'lora_B') : e.name.replace('lora_B', 'lora_A') } : e)));
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: swapped }), AdapterShapeError, 'ADAPTER_SHAPE_MISMATCH', Q0);
      const flat = rewrite(files[WTS], (es) => es.map((e) => (e.name === `${Q0}.lora_B.weight` ? { ...e, shape: [256] } : e)));
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: flat }), AdapterShapeError, 'ADAPTER_SHAPE_MISMATCH', '[256]');
    });
  });

  test.each([['F16', 'BF16'], ['BF16', 'F16']])('weights stored %s but labelled %s are refused, naming the tensor and the likely dtype', (stored, label) => {
    withModel(TINY_LLAMA, (model) => {
      const files = validFiles(model);
      const relabelled = rewrite(files[WTS], (es) => es.map((e) => ({ ...e, dtype: label, bytes: halfBytes(new Float32Array(e.bytes.slice().buffer), stored) })));
      const err = expectError(() => peftToAdapter(core, model, { ...files, [WTS]: relabelled }), InvalidAdapterError, 'ADAPTER_DTYPE_MISMATCH',
        `${WTS}: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight is labelled ${label} but its bytes look like ${stored}`);
      expect(err.details).toMatchObject({ dtype: label, likely: stored });
      // Labelled rightly, the same bytes load.
      const right = rewrite(files[WTS], (es) => es.map((e) => ({ ...e, dtype: stored, bytes: halfBytes(new Float32Array(e.bytes.slice().buffer), stored) })));
      peftToAdapter(core, model, { ...files, [WTS]: right }).free();
    });
  });

  test('an adapter for another model', () => {
    const files = withModel({ ...TINY_LLAMA, nLayers: 6 }, validFiles);
    const narrow = withModel({ ...TINY_LLAMA, dim: 48, nHeads: 6, nKvHeads: 3 }, validFiles);
    withModel(TINY_LLAMA, (model) => {
      const err = expectError(() => peftToAdapter(core, model, files), AdapterModelMismatchError, 'ADAPTER_MODEL_MISMATCH',
        'model.layers.4.self_attn.q_proj', '4 layers');
      expect(err.details.modules).toEqual(['model.layers.4.self_attn.q_proj', 'model.layers.4.self_attn.v_proj',
        'model.layers.5.self_attn.q_proj', 'model.layers.5.self_attn.v_proj']);
      expectError(() => peftToAdapter(core, model, narrow), AdapterShapeError, 'ADAPTER_SHAPE_MISMATCH', '[4, 48]', '[4, 64]',
        'hidden size 48 vs 64', 'self_attn.q_proj 48 -> 48 in the adapter, 64 -> 64 here', 'self_attn.v_proj 48 -> 24 in the adapter, 64 -> 32 here');
    });
    // PEFT's gpt2 adapter (12 layers, width 768) on a 2-layer GPT-2 of width 2 (sshleifer/tiny-gpt2's shape):
    // both the depth and the widths are named.
    withModel({ ...GPT2_124M, dim: 2, hiddenDim: 8, nLayers: 2, nHeads: 2, nKvHeads: 2, headDim: 1 }, (model) => {
      expectError(() => peftToAdapter(core, model, sharedAdapter('gpt2-lora-r8-causallm')), AdapterModelMismatchError,
        'ADAPTER_MODEL_MISMATCH', 'transformer.h.11.attn.c_attn', 'a model with 12 layers', 'this gpt2 model has 2 layers',
        'hidden size 768 vs 2', 'attn.c_attn 768 -> 2304 in the adapter, 2 -> 6 here', 'mlp.c_proj 3072 -> 768 in the adapter, 8 -> 2 here');
    });
    // A shallower model's adapter: the config targets every layer, the file stops after the second.
    const shallow = withModel({ ...TINY_LLAMA, nLayers: 2 }, validFiles);
    withModel(TINY_LLAMA, (model) => {
      expectError(() => peftToAdapter(core, model, shallow), InvalidAdapterError, 'INVALID_ADAPTER', 'model.layers.2.self_attn.q_proj',
        'it has weights for layers 0 to 1 only, as an adapter made for a model with 2 layers would (this llama model has 4)');
    });
    const gpt2Files = withModel(TINY_GPT2, validFiles);
    withModel(TINY_LLAMA, (model) => {
      expectError(() => peftToAdapter(core, model, gpt2Files), AdapterModelMismatchError, 'ADAPTER_MODEL_MISMATCH', 'transformer.h.0.attn.c_attn');
    });
  });

  test('missing files, factors and modules', () => {
    withModel(TINY_LLAMA, (model) => {
      const files = validFiles(model);
      const noB = rewrite(files[WTS], (es) => es.filter((e) => e.name !== `${Q0}.lora_B.weight`));
      let err = expectError(() => peftToAdapter(core, model, { ...files, [WTS]: noB }), InvalidAdapterError, 'INVALID_ADAPTER',
        `${Q0}.lora_B.weight`);
      expect(err.details.missing).toHaveLength(1);
      const noModule = rewrite(files[WTS], (es) => es.filter((e) => !e.name.startsWith(Q0)));
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: noModule }), InvalidAdapterError, 'INVALID_ADAPTER',
        'targets modules', 'model.layers.0.self_attn.q_proj');
      // The config targets fewer modules than the file holds.
      expectError(() => peftToAdapter(core, model, withConfig(files, { target_modules: ['q_proj'] })), InvalidAdapterError,
        'INVALID_ADAPTER', 'does not target', 'model.layers.0.self_attn.v_proj');
      expectError(() => peftToAdapter(core, model, withConfig(files, { layers_to_transform: [0, 1] })), InvalidAdapterError,
        'INVALID_ADAPTER', 'model.layers.2.self_attn.q_proj');
      // Without target_modules the tensors decide.
      peftToAdapter(core, model, withConfig(files, { target_modules: null })).free();
      expectError(() => peftToAdapter(core, model, { [CFG]: files[CFG] }), InvalidAdapterError, 'INVALID_ADAPTER', `${WTS} is missing`);
      expectError(() => peftToAdapter(core, model, { [WTS]: files[WTS] }), InvalidAdapterError, 'INVALID_ADAPTER', `${CFG} is missing`);
      err = expectError(() => peftToAdapter(core, model, { [CFG]: files[CFG], 'adapter_model.bin': new Uint8Array(8) }),
        UnsupportedAdapterError, 'UNSUPPORTED_ADAPTER', 'adapter_model.bin', `only ${WTS}`);
      const empty = writeSafetensors([], { metadata: { format: 'pt' } });
      expectError(() => peftToAdapter(core, model, withConfig({ ...files, [WTS]: empty }, { target_modules: null })), InvalidAdapterError,
        'INVALID_ADAPTER', 'no LoRA weights');
      expectError(() => peftToAdapter(core, model, null), InvalidAdapterError, 'INVALID_ADAPTER');
    });
  });

  test('unknown keys are named, never dropped', () => {
    withModel(TINY_LLAMA, (model) => {
      const files = validFiles(model);
      const extra = [
        { name: `${Q0}.lora_magnitude_vector`, shape: [64], data: new Float32Array(64) },
        { name: 'base_model.model.lm_head.weight', shape: [97, 64], data: new Float32Array(97 * 64) },
        { name: 'model.layers.0.self_attn.q_proj.lora_A.weight', shape: [4, 64], data: new Float32Array(256) },
      ];
      const bytes = rewrite(files[WTS], (es) => [...es, ...extra]);
      const err = expectError(() => peftToAdapter(core, model, { ...files, [WTS]: bytes }), UnsupportedAdapterError,
        'UNSUPPORTED_ADAPTER', `${Q0}.lora_magnitude_vector`, 'base_model.model.lm_head.weight', 'model.layers.0.self_attn.q_proj.lora_A.weight');
      expect(err.details.tensors.sort()).toEqual(extra.map((e) => e.name).sort());
      // LoRA on a module the model has no LoRA for (the final norm) is named; the head's lora_A alone misses its B.
      const norm = rewrite(files[WTS], (es) => [...es, { name: 'base_model.model.model.norm.lora_A.weight', shape: [4, 64], data: new Float32Array(256) }]);
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: norm }), AdapterModelMismatchError, 'ADAPTER_MODEL_MISMATCH', 'model.norm');
      const head = rewrite(files[WTS], (es) => [...es, { name: 'base_model.model.lm_head.lora_A.weight', shape: [4, 64], data: new Float32Array(256) }]);
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: head }), InvalidAdapterError, 'INVALID_ADAPTER', 'base_model.model.lm_head.lora_B.weight');
      // PEFT names an Embedding's factors lora_embedding_A / _B; Linear-style keys on it are not PEFT's.
      const emb = rewrite(files[WTS], (es) => [...es, { name: 'base_model.model.model.embed_tokens.lora_A.weight', shape: [4, 97], data: new Float32Array(4 * 97) }]);
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: emb }), InvalidAdapterError, 'INVALID_ADAPTER', 'base_model.model.model.embed_tokens.lora_embedding_A');
      const twoNames = rewrite(files[WTS], (es) => es.map((e) => (e.name.startsWith(Q0) ? { ...e, name: e.name.replace('.weight', '.other.weight') } : e)));
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: twoNames }), InvalidAdapterError, 'INVALID_ADAPTER', 'mixes adapter names');
      const ints = rewrite(files[WTS], (es) => es.map((e) => (e.name === `${Q0}.lora_A.weight` ? { ...e, dtype: 'I32' } : e)));
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: ints }), UnsupportedAdapterError, 'UNSUPPORTED_ADAPTER', 'I32', `${Q0}.lora_A.weight`);
      const nan = rewrite(files[WTS], (es) => es.map((e) => (e.name === `${Q0}.lora_B.weight`
        ? { ...e, bytes: new Uint8Array(Float32Array.from({ length: 256 }, (_, i) => (i === 17 ? NaN : 0)).buffer) } : e)));
      expectError(() => peftToAdapter(core, model, { ...files, [WTS]: nan }), InvalidAdapterError, 'INVALID_ADAPTER', 'non-finite', 'element 17');
    });
  });

  test('configs that are not plain LoRA, or not JSON', () => {
    withModel(TINY_LLAMA, (model) => {
      const files = validFiles(model);
      const load = (f) => () => peftToAdapter(core, model, f);
      expectError(load(withConfig(files, { peft_type: 'IA3' })), UnsupportedAdapterError, 'UNSUPPORTED_ADAPTER', '"IA3"', 'only LORA');
      expectError(load(withConfig(files, { peft_type: undefined })), InvalidAdapterError, 'INVALID_ADAPTER', 'peft_type is missing');
      expectError(load(withConfig(files, { bias: 'all' })), UnsupportedAdapterError, 'UNSUPPORTED_ADAPTER', 'bias "all"');
      expectError(load(withConfig(files, { bias: 'lora_only' })), UnsupportedAdapterError, 'UNSUPPORTED_ADAPTER', 'bias "lora_only"');
      // DoRA loads (tests/js/variants.test.js) when every module has its magnitude
      expectError(load(withConfig(files, { use_dora: true })), InvalidAdapterError, 'INVALID_ADAPTER', 'lora_magnitude_vector (use_dora is true)');
      expectError(load(withConfig(files, { use_dora: 'yes' })), InvalidAdapterError, 'INVALID_ADAPTER', 'use_dora must be');
      expectError(load(withConfig(files, { init_lora_weights: 'pissa_niter_4' })), UnsupportedAdapterError, 'UNSUPPORTED_ADAPTER', 'pissa_niter_4');
      expectError(load(withConfig(files, { layer_replication: [[0, 2]] })), UnsupportedAdapterError, 'UNSUPPORTED_ADAPTER', 'layer_replication');
      expectError(load(withConfig(files, { r: '4' })), InvalidAdapterError, 'INVALID_ADAPTER', 'r must be a positive integer');
      expectError(load(withConfig(files, { r: 0 })), InvalidAdapterError, 'INVALID_ADAPTER', 'r must be a positive integer');
      expectError(load(withConfig(files, { lora_alpha: 'x' })), InvalidAdapterError, 'INVALID_ADAPTER', 'lora_alpha');
      expectError(load(withConfig(files, { use_rslora: 'yes' })), InvalidAdapterError, 'INVALID_ADAPTER', 'use_rslora');
      expectError(load(withConfig(files, { rank_pattern: { q_proj: -1 } })), InvalidAdapterError, 'INVALID_ADAPTER', 'rank_pattern');
      expectError(load(withConfig(files, { target_modules: 7 })), InvalidAdapterError, 'INVALID_ADAPTER', 'target_modules');
      expectError(load({ ...files, [CFG]: '{"peft_type": "LORA", ' }), InvalidAdapterError, 'INVALID_ADAPTER', 'not valid JSON');
      expectError(load({ ...files, [CFG]: '[1, 2]' }), InvalidAdapterError, 'INVALID_ADAPTER', 'JSON object');
      expectError(load({ ...files, [CFG]: Uint8Array.from([0x7b, 0xff, 0x7d]) }), InvalidAdapterError, 'INVALID_ADAPTER', 'UTF-8');
      // Bytes, an adapter name in keys, a regex target, exclude_modules and use_rslora: all PEFT, all accepted.
      const cfgText = withConfig(files, { target_modules: 'model\\.layers\\.\\d+\\.self_attn\\.[qvk]_proj',
        exclude_modules: ['k_proj'], use_rslora: true })[CFG];
      const ok = peftToAdapter(core, model, { ...files, [CFG]: new TextEncoder().encode(cfgText) });
      expect(ok.modules().every((m) => m.scale === Math.fround(8 / 2))).toBe(true);
      ok.free();
    });
  });
});
