// The production loaders (web/formats/loader.js behind LocalEngine.load) against PyTorch's logits (tests/ref/golden):
// weights streamed from files in odd-sized chunks and over HTTP (an HF-style folder URL with a dropped connection
// that resumes, a llama2.c .bin URL), in F32, F16 and BF16, in one file or in shards with an index. Also the
// errors for missing shards, wrong or unknown tensors, SHA-256 pins and a 404.
import { describe, test, expect, beforeAll, afterAll, jest } from '@jest/globals';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';

import { LocalEngine } from '../../web/engine/engine.js';
import { Model } from '../../web/core/model.js';
import { FormatError } from '../../web/errors.js';
import { loadModel } from '../../web/formats/loader.js';
import { halfPrecisionMixup, writeSafetensors } from '../../web/formats/safetensors.js';
import { expectAllClose, halfBytes, loadCore, readSafetensors, repoRoot, sharedPath, wasmSource } from './helpers/core.js';
import { GOLDEN, readCase, storedLogits } from './helpers/golden.js';
import { startServer } from './helpers/http-server.js';

const TINY_LLAMA = sharedPath('models/tiny-random-llama');
const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TOKENIZER = sharedPath('tokenizers/llama2-tinyllama/tokenizer.json');
let tmp;
let core;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'weblora-loader-'));
  core = await loadCore();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * The loaded model's logits for the case's tokens against PyTorch's (at the stored positions), within the case's
 * tolerance: 20 times the float32 error PyTorch itself makes on this computation (tests/ref/README.md).
 */
function expectGoldenLogits(engine, name) {
  const { cs, io } = readCase(core, name);
  const { B, T } = cs;
  engine.model.reserve(B, T);
  engine.model.forward(io.get('tokens').data, { B, T });
  expectAllClose(`${name} logits`, storedLogits(engine.model.logits(), cs, engine.model.config.vocabSize), io.get('logits').data,
    cs.tolerance.logits);
}

/** The model files of a golden case folder (without its reference files), as a model folder of their own. */
function modelFolder(name) {
  const dir = path.join(tmp, `model-${name}`);
  mkdirSync(dir);
  for (const f of MODEL_FILES(name)) writeFileSync(path.join(dir, f), readFileSync(path.join(GOLDEN, name, f)));
  return dir;
}
const MODEL_FILES = (name) => readdirSync(path.join(GOLDEN, name)).filter((f) => f !== 'case.json' && f !== 'io.safetensors');

describe('from files, streamed in odd-sized chunks that split tensors and elements', () => {
  test.each([
    ['F32, one file (tiny-random-llama)', 'tiny_random_llama', () => TINY_LLAMA],
    ['F16, one file', 'hf_f16', () => modelFolder('hf_f16')],
    ['BF16, two shards and an index', 'hf_bf16_sharded', () => modelFolder('hf_bf16_sharded')],
    ['llama2.c checkpoint (stories260K over its 512 positions)', 'stories260K_long', () => STORIES],
  ])('%s', async (_what, name, source) => {
    const e = await LocalEngine.load(source(), { wasmSource: wasmSource(), chunkSize: 4093 });
    expectGoldenLogits(e, name);
    e.dispose();
  });

  test('F32 in two shards with an index, read in 997-byte chunks; a missing shard is named, a corrupt index refused', async () => {
    const dir = path.join(tmp, 'sharded');
    mkdirSync(dir);
    const st = readSafetensors(core, new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'model.safetensors'))));
    const names = [...st.keys()];
    const halves = [names.slice(0, 9), names.slice(9)];
    const weightMap = {};
    halves.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeFileSync(path.join(dir, file), writeSafetensors(part.map((n) => ({ name: n, shape: st.get(n).shape, data: st.get(n).data }))));
      part.forEach((n) => { weightMap[n] = file; });
    });
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(TINY_LLAMA, 'config.json')));
    const e = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER, chunkSize: 997 });
    expectGoldenLogits(e, 'tiny_random_llama');
    e.dispose();
    rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    await expect(LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER })).rejects.toThrow(/shard model-00002-of-00002\.safetensors/);
    // A corrupt index is a FormatError naming the file, whether it is not JSON or has no weight_map.
    for (const [text, message] of [['{"weight_map": {', /index\.json is not valid JSON/], ['{"metadata": {}}', /index\.json has no weight_map/],
      ['{"weight_map": {"a": 1}}', /index\.json has no weight_map/]]) {
      writeFileSync(path.join(dir, 'model.safetensors.index.json'), text);
      await expect(LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER }))
        .rejects.toMatchObject({ name: 'FormatError', code: 'BAD_FORMAT', message: expect.stringMatching(message) });
    }
  });

  test('a tensor of the wrong shape or an unknown tensor is refused with its name', async () => {
    const st = readSafetensors(core, new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'model.safetensors'))));
    const dir = path.join(tmp, 'bad');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(TINY_LLAMA, 'config.json')));
    const tensors = [...st.entries()].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
    tensors.push({ name: 'model.extra.weight', shape: [2], data: new Float32Array(2) });
    writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors(tensors));
    await expect(LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER })).rejects.toThrow(/model\.extra\.weight/);
    tensors.pop();
    tensors[0] = { ...tensors[0], shape: [tensors[0].shape[1], tensors[0].shape[0]] };
    writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors(tensors));
    await expect(LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER })).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
  });
});

describe('hostile header lengths', () => {
  test('are printed exactly, not rounded through a double', async () => {
    const config = readFileSync(path.join(TINY_LLAMA, 'config.json'));
    for (const declared of [2n ** 53n + 1n, 2n ** 64n - 1n, 100_000_001n]) {
      const bytes = new Uint8Array(64).fill(0x20);
      new DataView(bytes.buffer).setBigUint64(0, declared, true);
      bytes[8] = 0x7b;
      const err = await LocalEngine.load({ 'config.json': config, 'model.safetensors': bytes }, { wasmSource: wasmSource() }).catch((e) => e);
      expect(err).toMatchObject({ name: 'FormatError' });
      expect(err.message).toBe(`model.safetensors: header length ${declared} is larger than allowed (100000000 bytes) or than the 64-byte file`);
    }
    // 2^53 + 1 through a double would read 9007199254740992.
    expect(String(Number(2n ** 53n + 1n))).toBe('9007199254740992');
  });
});

describe('shard headers against config.json, before the model is allocated', () => {
  const CONFIG = () => JSON.parse(readFileSync(path.join(TINY_LLAMA, 'config.json'), 'utf8'));

  /**
   * A safetensors file written by hand, so its header can say what no writer would: entries [name, dtype, shape,
   * data_offsets] (offsets default to the next free bytes), with `extra` bytes more data than the entries take (fewer
   * when negative).
   */
  function crafted(entries, extra = 0) {
    const header = {};
    let at = 0;
    for (const [name, dtype, shape, offsets] of entries) {
      const size = shape.reduce((a, d) => a * d, 1) * { F32: 4, I32: 4, F16: 2, BF16: 2 }[dtype];
      header[name] = { dtype, shape, data_offsets: offsets ?? [at, at + size] };
      at += size;
    }
    const json = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(8 + json.byteLength + at + extra);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
    out.set(json, 8);
    return out;
  }

  /** tiny-random-llama's tensors as F32 entries, in its file's order. */
  const TENSORS = () => [...readSafetensors(core, new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'model.safetensors')))).entries()]
    .map(([name, t]) => [name, 'F32', t.shape]);

  /**
   * What loadModel throws for these files, how many models it created on the way and how many tensor writes it made
   * (spied on the core).
   */
  async function refusal(files, config = CONFIG()) {
    const created = jest.spyOn(core, 'createModel');
    const written = jest.spyOn(Model.prototype, 'writeTensorBytes');
    try {
      const source = { 'config.json': new TextEncoder().encode(JSON.stringify(config)), ...files };
      const err = await loadModel(core, source, { tokenizer: TOKENIZER }).then((r) => { r.model.free(); return null; }, (e) => e);
      return { err, created: created.mock.calls.length, written: written.mock.calls.length > 0 };
    } finally {
      created.mockRestore();
      written.mockRestore();
    }
  }
  const LOADED = { err: null, created: 1, written: true };

  test('the crafted file itself loads, so each refusal below is the header\'s doing', async () => {
    expect(await refusal({ 'model.safetensors': crafted(TENSORS()) })).toEqual(LOADED);
  });

  test('a config.json of a far larger model than the files hold: MISSING_TENSOR, nothing allocated', async () => {
    const { err, created } = await refusal({ 'model.safetensors': crafted(TENSORS()) },
      { ...CONFIG(), num_hidden_layers: 40, intermediate_size: 4096 });
    expect(err).toBeInstanceOf(FormatError);
    expect(err).toMatchObject({ code: 'MISSING_TENSOR', message: expect.stringMatching(/^model\.safetensors: safetensors: config\.json describes \d+ parameters but the safetensors file holds only \d+ values/) });
    expect(created).toBe(0);
  });

  // inv_freq carries no weights and is skipped, so a large one used to be downloaded in full and thrown away
  test('a shard declaring far more values than the config implies (a huge "buffer"): BAD_FORMAT, nothing allocated', async () => {
    const tensors = [...TENSORS(), ['model.layers.0.self_attn.rotary_emb.inv_freq', 'F16', [1 << 22]]];
    const { err, created } = await refusal({ 'model.safetensors': crafted(tensors) });
    expect(err).toBeInstanceOf(FormatError);
    expect(err).toMatchObject({ code: 'BAD_FORMAT', message: expect.stringMatching(/the safetensors file declares \d+ values, far more than the \d+ that config\.json's model and its buffers can use/) });
    expect(created).toBe(0);
  });

  test('a buffer larger than the config gives it is named, nothing allocated; genuine ones load', async () => {
    const inv = (layer, n) => [`model.layers.${layer}.self_attn.rotary_emb.inv_freq`, 'F32', [n]];
    const refused = await refusal({ 'model.safetensors': crafted([...TENSORS(), inv(1, 3)]) });
    expect(refused.err).toMatchObject({ name: 'FormatError', code: 'BAD_FORMAT',
      message: 'model.safetensors: safetensors: buffer "model.layers.1.self_attn.rotary_emb.inv_freq" declares 3 values; this model\'s config allows it at most 2' });
    expect([refused.created, refused.written]).toEqual([0, false]);
    // what a real checkpoint carries: an inv_freq of head_dim / 2 per layer
    expect(await refusal({ 'model.safetensors': crafted([...TENSORS(), inv(0, 2), inv(1, 2)]) })).toEqual(LOADED);
  });

  test('a tensor of the wrong shape, dtype or name, one stored twice or one missing: named, nothing allocated', async () => {
    const tensors = TENSORS();
    const [first, , shape] = tensors[0];
    const cases = [
      [[[first, 'F32', [shape[1], shape[0]]], ...tensors.slice(1)], 'SHAPE_MISMATCH', new RegExp(`"${first}" has shape \\[${shape[1]}, ${shape[0]}\\]`)],
      [[[first, 'I32', shape], ...tensors.slice(1)], 'UNSUPPORTED', /has dtype I32; weights must be/],
      [[...tensors, ['model.layers.0.mlp.extra.weight', 'F32', [4]]], 'BAD_FORMAT', /"model\.layers\.0\.mlp\.extra\.weight" is not part of this Llama-family model/],
      [tensors.slice(1), 'MISSING_TENSOR', new RegExp(`"${first}" is missing from the weights`)],
    ];
    for (const [entries, code, why] of cases) {
      const { err, created, written } = await refusal({ 'model.safetensors': crafted(entries) });
      expect(err).toBeInstanceOf(FormatError);
      expect(err).toMatchObject({ code, message: expect.stringMatching(why) });
      expect([created, written]).toEqual([0, false]);
    }
    const shards = await refusal({
      'model-00001-of-00002.safetensors': crafted(tensors.slice(0, 9)),
      'model-00002-of-00002.safetensors': crafted(tensors.slice(8)),
    });
    expect(shards.err).toMatchObject({ name: 'FormatError', code: 'BAD_FORMAT',
      message: expect.stringMatching(new RegExp(`shard 2 of 2: safetensors: tensor "${tensors[8][0]}" is stored more than once`)) });
    expect(shards.created).toBe(0);
  });

  test('offsets inconsistent with the shape, a hole, an overlap or bytes past the file: BAD_FORMAT, nothing allocated', async () => {
    const tensors = TENSORS();
    const [name, , shape] = tensors[0];
    const size = 4 * shape[0] * shape[1];
    const cases = [
      [[[name, 'F32', shape, [0, size - 4]], ...tensors.slice(1)], 0, /data_offsets/],
      [tensors.map((t, i) => (i === 0 ? [...t.slice(0, 3), [4, size + 4]] : t)), 0, /not covered|overlap/],
      [tensors, -1000, /size|bytes/],
      [tensors, 1000, /size|bytes/],
    ];
    for (const [entries, extra, why] of cases) {
      const { err, created } = await refusal({ 'model.safetensors': crafted(entries, extra) });
      expect(err).toBeInstanceOf(FormatError);
      expect(err.message).toMatch(why);
      expect(created).toBe(0);
    }
  });

  test('in shards, the values of all of them count: a second shard with a hostile buffer is refused before the first streams', async () => {
    const tensors = TENSORS();
    const { err, created } = await refusal({
      'model-00001-of-00002.safetensors': crafted(tensors.slice(0, 9)),
      'model-00002-of-00002.safetensors': crafted([...tensors.slice(9), ['model.rotary_emb.inv_freq', 'F16', [1 << 22]]]),
    });
    expect(err).toMatchObject({ name: 'FormatError', code: 'BAD_FORMAT', message: expect.stringMatching(/the safetensors files declare \d+ values/) });
    expect(created).toBe(0);
  });
});

describe('F16 bytes labelled BF16, and BF16 bytes labelled F16', () => {
  const other = { F16: 'BF16', BF16: 'F16' };
  /** Every weight matrix of the real models and adapters in ../shared and of the built-in default model. */
  async function realMatrices() {
    const out = [];
    const fromFile = (label, file) => {
      const bytes = new Uint8Array(readFileSync(file));
      const st = core.parseSafetensors(bytes);
      for (const t of st.tensors) {
        if (t.shape.length !== 2) continue;
        const raw = bytes.subarray(st.dataStart + t.begin, st.dataStart + t.end);
        out.push({ name: `${label}/${t.name}`, dtype: t.dtype, raw, values: core.decodeFloats(raw, t.dtype) });
      }
    };
    fromFile('default', path.join(repoRoot, 'demo/models/default/model.safetensors'));
    for (const m of ['tiny-random-llama', 'tiny-gpt2']) fromFile(m, sharedPath(`models/${m}/model.safetensors`));
    for (const a of ['gpt2-lora-r8-causallm', 'gpt2-lora-r8-seqcls', 'smollm-135m-lora-r16']) fromFile(a, sharedPath(`adapters/${a}/adapter_model.safetensors`));
    for (const m of ['stories260K/stories260K.bin', 'aidreams260K/aidreams260K.bin']) {
      const e = await LocalEngine.load(sharedPath(`models/${m}`), { wasmSource: wasmSource() });
      for (const t of e.model.tensors()) if (t.ndim === 2) out.push({ name: `${m}/${t.name}`, dtype: 'F32', values: e.model.tensorView(t).slice() });
      e.dispose();
    }
    return out;
  }

  test('no matrix of a real model or adapter trips the check as F16 or BF16; under the swapped label every one does', async () => {
    const matrices = await realMatrices();
    let checked = 0;
    let caught = 0;
    const missed = [];
    for (const m of matrices) {
      for (const dtype of ['F16', 'BF16']) {
        // The default model is stored F16: its own bytes; the others' f32 values rounded to each 16-bit type.
        if (m.dtype !== 'F32' && m.dtype !== dtype) continue;
        const raw = m.dtype === dtype ? m.raw : halfBytes(m.values, dtype);
        checked++;
        const right = halfPrecisionMixup(core, core.decodeFloats(raw, dtype), dtype);
        if (right) throw new Error(`${m.name} as ${dtype} was called mislabelled: ${right.message}`);
        const swapped = halfPrecisionMixup(core, core.decodeFloats(raw, other[dtype]), other[dtype]);
        if (swapped?.likely === dtype) caught++;
        // Only matrices too small to tell may pass unnoticed (tiny-gpt2's projections of 4 to 16 values).
        else if (m.values.length >= 128) missed.push(`${m.name} as ${dtype}`);
      }
    }
    console.log(`${matrices.length} real weight matrices, ${checked} checks: none tripped under the right label, ${caught} caught under the swapped one`);
    expect(missed).toEqual([]);
    expect(matrices.length).toBeGreaterThanOrEqual(350);
    expect(caught).toBeGreaterThan(0.97 * checked);
  }, 60000);

  test('odd but genuine matrices are not called mislabelled: the other reading must look like trained weights', () => {
    const rand = (seed) => () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const r1 = rand(1);
    // F16 values all near 1 (a scale matrix): as narrow as BF16 read as F16, and plausible read as BF16, but of
    // one sign, which weight matrices are not.
    const nearOne = Float32Array.from({ length: 4096 }, () => 0.95 + 0.1 * r1());
    // BF16 values around 1e-8: as BF16 they are as small as F16 read as BF16, but as F16 they are no weights either.
    const tiny = Float32Array.from({ length: 4096 }, () => (r1() - 0.5) * 4e-8);
    for (const [values, dtype] of [[nearOne, 'F16'], [tiny, 'BF16']]) {
      expect(halfPrecisionMixup(core, core.decodeFloats(halfBytes(values, dtype), dtype), dtype)).toBeNull();
    }
    // Gaussian-like weights are caught under either swapped label.
    const r2 = rand(2);
    const weights = Float32Array.from({ length: 4096 }, () => 0.02 * (r2() + r2() + r2() - 1.5));
    expect(halfPrecisionMixup(core, core.decodeFloats(halfBytes(weights, 'F16'), 'BF16'), 'BF16')).toMatchObject({ likely: 'F16' });
    expect(halfPrecisionMixup(core, core.decodeFloats(halfBytes(weights, 'BF16'), 'F16'), 'F16')).toMatchObject({ likely: 'BF16' });
  });

  test.each([['F16', 'BF16'], ['BF16', 'F16']])('a model stored %s but labelled %s is refused, naming the tensor and the likely dtype', async (stored, label) => {
    const st = readSafetensors(core, new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'model.safetensors'))));
    const dir = path.join(tmp, `${stored}-as-${label}`);
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors([...st.entries()].map(([name, t]) => ({
      name, shape: t.shape, dtype: label, bytes: halfBytes(t.data, stored) }))));
    writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(TINY_LLAMA, 'config.json')));
    const err = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER }).catch((e) => e);
    expect(err).toMatchObject({ name: 'FormatError', code: 'DTYPE_MISMATCH', details: { dtype: label, likely: stored } });
    expect(err.message).toMatch(new RegExp(`^${dir}: tensor [\\w.]+\\.weight is labelled ${label} but its bytes look like ${stored}: `
      + `read as ${label} its values are unlike trained weights \\(median magnitude .*\\), read as ${stored} they are like them`));
  });

  test('the built-in default model (F16) relabelled BF16 is refused; as it is, it loads', async () => {
    const src = path.join(repoRoot, 'demo/models/default');
    const bytes = new Uint8Array(readFileSync(path.join(src, 'model.safetensors')));
    const st = core.parseSafetensors(bytes);
    expect(new Set(st.tensors.map((t) => t.dtype))).toEqual(new Set(['F16']));
    const dir = path.join(tmp, 'default-as-bf16');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors(st.tensors.map((t) => ({
      name: t.name, shape: t.shape, dtype: 'BF16', bytes: bytes.subarray(st.dataStart + t.begin, st.dataStart + t.end) }))));
    writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(src, 'config.json')));
    await expect(LocalEngine.load(dir, { wasmSource: wasmSource() })).rejects.toMatchObject({ code: 'DTYPE_MISMATCH', details: { likely: 'F16' } });
    (await LocalEngine.load(src, { wasmSource: wasmSource() })).dispose();
  });
});

describe('sha256 pins on local files', () => {
  test('a local model is hashed as it streams; a wrong pin or a pin for a file it lacks is refused', async () => {
    const bytes = readFileSync(path.join(TINY_LLAMA, 'model.safetensors'));
    const good = createHash('sha256').update(bytes).digest('hex');
    const e = await LocalEngine.load(TINY_LLAMA, { wasmSource: wasmSource(), tokenizer: TOKENIZER, chunkSize: 4093, sha256: { 'model.safetensors': good } });
    e.dispose();
    await expect(LocalEngine.load(TINY_LLAMA, { wasmSource: wasmSource(), tokenizer: TOKENIZER, sha256: { 'model.safetensors': 'b'.repeat(64) } }))
      .rejects.toMatchObject({ name: 'IntegrityError', message: expect.stringContaining(`is ${good}, expected bbbb`) });
    await expect(LocalEngine.load(TINY_LLAMA, { wasmSource: wasmSource(), tokenizer: TOKENIZER, sha256: { 'model.safetensor': good } }))
      .rejects.toThrow(/pin names model\.safetensor, which is not a file/);
  });
});

describe('over HTTP', () => {
  let server;
  let weights;
  beforeAll(async () => {
    weights = new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'model.safetensors')));
    const folder = (prefix, name, drop = {}) => Object.fromEntries(MODEL_FILES(name)
      .map((f) => [`${prefix}${f}`, { body: new Uint8Array(readFileSync(path.join(GOLDEN, name, f))), chunkSize: 3001, ...(drop[f] ?? {}) }]));
    server = await startServer({
      '/m/config.json': { body: new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'config.json'))) },
      '/m/model.safetensors': { body: weights, chunkSize: 3001, dropAfter: [undefined, 1500000] },
      '/m/tokenizer.json': { body: new Uint8Array(readFileSync(TOKENIZER)) },
      ...folder('/f16/', 'hf_f16', { 'model.safetensors': { dropAfter: [undefined, 5000] } }),
      ...folder('/bf16/', 'hf_bf16_sharded', { 'model-00002-of-00002.safetensors': { dropAfter: [undefined, 3000] } }),
      '/stories/stories260K.bin': { body: new Uint8Array(readFileSync(STORIES)), chunkSize: 3001, dropAfter: [undefined, 400000] },
    });
  });
  afterAll(() => server?.close());

  test('an HF-style folder URL streams in by ranges and resumes a dropped connection', async () => {
    const events = [];
    const e = await LocalEngine.load(server.url('/m/'), { wasmSource: wasmSource(), onProgress: (ev) => events.push(ev), backoffMs: 10 });
    expectGoldenLogits(e, 'tiny_random_llama');
    expect(e.tokenizer.vocabSize).toBe(32000);
    // the weights were read by ranges: the header first, then the body resumed after the drop
    const ranges = server.requestsTo('/m/model.safetensors', 'GET').map((r) => r.range).filter(Boolean);
    expect(ranges.length).toBeGreaterThanOrEqual(3);
    expect(events.some((ev) => ev.status === 'progress' && ev.file === 'model.safetensors')).toBe(true);
    expect(events.at(-1).status).toBe('ready');
    e.dispose();
  });

  test.each([
    ['F16, one file', '/f16/', 'hf_f16', '/f16/model.safetensors'],
    ['BF16, two shards and an index', '/bf16/', 'hf_bf16_sharded', '/bf16/model-00002-of-00002.safetensors'],
  ])('%s', async (_what, prefix, name, dropped) => {
    const e = await LocalEngine.load(server.url(prefix), { wasmSource: wasmSource(), backoffMs: 10 });
    expectGoldenLogits(e, name);
    expect(server.requestsTo(dropped, 'GET').length).toBeGreaterThanOrEqual(2); // the drop happened and was resumed
    e.dispose();
  });

  test('a llama2.c .bin URL', async () => {
    const e = await LocalEngine.load(server.url('/stories/stories260K.bin'), { wasmSource: wasmSource(), backoffMs: 10 });
    expectGoldenLogits(e, 'stories260K_long');
    e.dispose();
  });

  test('a SHA-256 pin accepts the right file and refuses a tampered one', async () => {
    const good = createHash('sha256').update(weights).digest('hex');
    const e = await LocalEngine.load(server.url('/m/'), { wasmSource: wasmSource(), sha256: { 'model.safetensors': good } });
    e.dispose();
    const bad = good.replace(/^./, (c) => (c === '0' ? '1' : '0'));
    await expect(LocalEngine.load(server.url('/m/'), { wasmSource: wasmSource(), sha256: { 'model.safetensors': bad } }))
      .rejects.toMatchObject({ name: 'IntegrityError' });
  });

  test('a pin covers every byte: weights behind a header larger than the kept prefix are refused', async () => {
    // The attack: other weights, padded with ~65 MB of header metadata so the header is read by range and not kept
    // for hashing, served under the pin of the real file (or any pin). The whole file must still be hashed.
    const st = readSafetensors(core, weights);
    const tensors = [...st.entries()].map(([name, t]) => ({ name, shape: t.shape, data: t.data.map((v) => v * 0.5) }));
    const padded = writeSafetensors(tensors, { metadata: { pad: 'x'.repeat(65 << 20) } });
    const headerLength = Number(new DataView(padded.buffer).getBigUint64(0, true));
    expect(headerLength).toBeGreaterThan(64 << 20);
    const config = new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'config.json')));
    const evil = await startServer({ '/e/config.json': { body: config }, '/e/model.safetensors': { body: padded, chunkSize: 1 << 20 } });
    try {
      const real = createHash('sha256').update(weights).digest('hex');
      for (const pin of [real, 'a'.repeat(64)]) {
        await expect(LocalEngine.load(evil.url('/e/'), { wasmSource: wasmSource(), tokenizer: TOKENIZER, sha256: { 'model.safetensors': pin } }))
          .rejects.toMatchObject({ name: 'IntegrityError', message: expect.stringMatching(/SHA-256 of .*model\.safetensors is [0-9a-f]{64}, expected/) });
      }
      // The same large-header file under its own pin loads: the bytes before the data are read again and hashed.
      const own = createHash('sha256').update(padded).digest('hex');
      const e = await LocalEngine.load(evil.url('/e/'), { wasmSource: wasmSource(), tokenizer: TOKENIZER, sha256: { 'model.safetensors': own } });
      e.dispose();
    } finally {
      evil.close();
    }
  });

  test('a Hugging Face id is fetched from a mirror with the Hub layout, at the revision asked for', async () => {
    const mirror = await startServer({
      '/hub/org/tiny/resolve/v1.0/config.json': { body: new Uint8Array(readFileSync(path.join(TINY_LLAMA, 'config.json'))) },
      '/hub/org/tiny/resolve/v1.0/model.safetensors': { body: weights },
      '/hub/org/tiny/resolve/v1.0/tokenizer.json': { body: new Uint8Array(readFileSync(TOKENIZER)) },
    });
    try {
      const e = await LocalEngine.load('org/tiny', { wasmSource: wasmSource(), remoteHost: mirror.url('/hub'), revision: 'v1.0' });
      expectGoldenLogits(e, 'tiny_random_llama');
      expect(e.info()).toMatchObject({ name: 'org/tiny', origin: { id: 'org/tiny', revision: 'v1.0' } });
      e.dispose();
      // The sharded index of a single-file model is never asked for.
      expect(mirror.requestsTo('/hub/org/tiny/resolve/v1.0/model.safetensors.index.json', 'GET')).toEqual([]);
      // env.remoteHost is the default host; a revision the mirror lacks is a 404 naming the URL it tried.
      const { env } = await import('../../web/env.js');
      const saved = env.remoteHost;
      env.remoteHost = mirror.url('/hub/');
      try {
        await expect(LocalEngine.load('org/tiny', { wasmSource: wasmSource(), revision: 'v2', retries: 0 }))
          .rejects.toMatchObject({ name: 'NotFoundError', message: expect.stringContaining(mirror.url('/hub/org/tiny/resolve/v2/')) });
      } finally {
        env.remoteHost = saved;
      }
    } finally {
      await mirror.close();
    }
  });

  test.each([
    ['a number', 42, /got number 42/],
    ['an empty string', '  ', /the model source is an empty string/],
    ['an unknown scheme', 'ftp://example.com/model/', /cannot fetch the model source "ftp:\/\/example\.com\/model\/": only http\(s\), blob: and data: URLs/],
    ['a path that is not there', './no/such/model.safetensors', /model not found: "\.\/no\/such\/model\.safetensors" is neither a file or folder here/],
    ['a bad remote host', 'org/model', /remoteHost must be an absolute http\(s\) URL, got "not a host"/, { remoteHost: 'not a host' }],
  ])('a wrong source says what was passed: %s', async (_what, source, message, extra = {}) => {
    await expect(LocalEngine.load(source, { wasmSource: wasmSource(), retries: 0, ...extra })).rejects.toThrow(message);
  });

  test('a 404 for the weights is a clear error', async () => {
    await expect(LocalEngine.load(server.url('/nothing/'), { wasmSource: wasmSource(), retries: 0 })).rejects.toThrow(/404|not found/i);
  });
});

describe('which model was loaded, for adapter files written and read', () => {
  test('exported adapters name the Hub id and revision, or what load() was told, never the local folder', async () => {
    const dir = path.join(tmp, 'origin-model');
    mkdirSync(dir, { recursive: true });
    for (const f of ['config.json', 'model.safetensors']) writeFileSync(path.join(dir, f), readFileSync(path.join(TINY_LLAMA, f)));
    // The real config.json (saved by transformers) names its Hub repository in _name_or_path.
    const e = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER });
    try {
      const config = e.exportAdapter(e.createAdapter({ rank: 2 }).id).config;
      expect(config.base_model_name_or_path).toBe('trl-internal-testing/tiny-random-LlamaForCausalLM');
      expect(config.revision).toBeNull();
      expect(e.info().origin).toEqual({ id: 'trl-internal-testing/tiny-random-LlamaForCausalLM', revision: null });
    } finally {
      e.dispose();
    }
    const cfg = JSON.parse(readFileSync(path.join(TINY_LLAMA, 'config.json'), 'utf8'));
    delete cfg._name_or_path;
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    const unnamed = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER });
    try {
      const config = unnamed.exportAdapter(unnamed.createAdapter({ rank: 2 }).id).config;
      expect(config.base_model_name_or_path).toBeNull();
      expect(JSON.stringify(config)).not.toContain(tmp);
    } finally {
      unnamed.dispose();
    }
    const named = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER,
      baseModel: 'trl-internal-testing/tiny-random-LlamaForCausalLM', revision: 'main' });
    try {
      const config = named.exportAdapter(named.createAdapter({ rank: 2 }).id).config;
      expect(config.base_model_name_or_path).toBe('trl-internal-testing/tiny-random-LlamaForCausalLM');
      expect(config.revision).toBe('main');
    } finally {
      named.dispose();
    }
  });
});

describe('--tokenizer elsewhere: its own tokenizer_config.json, not the model folder\'s', () => {
  test('BOS/EOS come from the config beside the tokenizer used', async () => {
    // The model folder's config names token 0 for BOS and EOS; the tokenizer's own folder says 1 and 2.
    const modelDir = path.join(tmp, 'tok-model');
    const tokDir = path.join(tmp, 'tok-elsewhere');
    mkdirSync(modelDir, { recursive: true });
    mkdirSync(tokDir, { recursive: true });
    for (const f of ['config.json', 'model.safetensors']) writeFileSync(path.join(modelDir, f), readFileSync(path.join(TINY_LLAMA, f)));
    writeFileSync(path.join(modelDir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<unk>', eos_token: '<unk>', add_bos_token: false }));
    writeFileSync(path.join(tokDir, 'tokenizer.json'), readFileSync(TOKENIZER));
    writeFileSync(path.join(tokDir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', add_bos_token: true }));
    for (const tokenizer of [path.join(tokDir, 'tokenizer.json'), tokDir]) {
      const e = await LocalEngine.load(modelDir, { wasmSource: wasmSource(), tokenizer });
      try {
        expect([e.tokenizer.bosId, e.tokenizer.eosId, e.tokenizer.addsBos]).toEqual([1, 2, true]);
      } finally {
        e.dispose();
      }
    }
    // Without a config beside it, the model folder's is still not used.
    const bare = path.join(tmp, 'tok-bare');
    mkdirSync(bare, { recursive: true });
    writeFileSync(path.join(bare, 'tokenizer.json'), readFileSync(TOKENIZER));
    const e = await LocalEngine.load(modelDir, { wasmSource: wasmSource(), tokenizer: path.join(bare, 'tokenizer.json') });
    try {
      expect(e.tokenizer.bosId).toBe(1); // from the tokenizer.json's own template ("<s> $A")
    } finally {
      e.dispose();
    }
  });
});
