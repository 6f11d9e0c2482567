// Loading models through the streaming loader: sharded safetensors with an index, F16/BF16 weights converted on
// the fly, chunks that split tensors and elements at odd offsets, an HF-style folder URL over HTTP with a dropped
// connection that resumes, SHA-256 pins, and the errors for missing, mismatched and tampered files.
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';

import { LocalEngine } from '../../web/engine.js';
import { writeSafetensors } from '../../web/safetensors.js';
import { loadCore, readSafetensors, sharedPath, wasmSource } from './helpers/core.js';
import { startServer } from './helpers/http-server.js';

const MODEL = sharedPath('models/tiny-random-llama');
const TOKENIZER = sharedPath('tokenizers/llama2-tinyllama/tokenizer.json');
const IDS = [1, 15043, 3186, 29892, 920, 526, 366, 29973];
let tmp;
let core;
let reference;

function logitsOf(engine) {
  engine.model.reserve(1, IDS.length);
  engine.model.forward(IDS);
  return engine.model.logits().slice();
}

function f16(x) {
  // round-to-nearest-even f32 -> f16 bits, enough for test data (no subnormal outputs needed beyond rounding)
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  let exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (exp << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'weblora-loader-'));
  core = await loadCore();
  const e = await LocalEngine.load(MODEL, { wasmSource: wasmSource(), tokenizer: TOKENIZER });
  reference = logitsOf(e);
  e.dispose();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('safetensors variants', () => {
  test('two shards with an index, read in 997-byte chunks, give bit-identical logits', async () => {
    const dir = path.join(tmp, 'sharded');
    mkdirSync(dir);
    const st = readSafetensors(core, new Uint8Array(readFileSync(path.join(MODEL, 'model.safetensors'))));
    const names = [...st.keys()];
    const halves = [names.slice(0, 9), names.slice(9)];
    const weightMap = {};
    halves.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeFileSync(path.join(dir, file), writeSafetensors(part.map((n) => ({ name: n, shape: st.get(n).shape, data: st.get(n).data }))));
      part.forEach((n) => { weightMap[n] = file; });
    });
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(MODEL, 'config.json')));
    const e = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER, chunkSize: 997 });
    expect(Buffer.from(logitsOf(e).buffer).equals(Buffer.from(reference.buffer))).toBe(true);
    e.dispose();
    // a shard the index names but the folder lacks
    rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    await expect(LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER })).rejects.toThrow(/shard model-00002-of-00002\.safetensors/);
  });

  test('F16 and BF16 weights are widened per tensor, across chunk and element boundaries', async () => {
    const st = readSafetensors(core, new Uint8Array(readFileSync(path.join(MODEL, 'model.safetensors'))));
    for (const dtype of ['F16', 'BF16']) {
      const dir = path.join(tmp, dtype);
      mkdirSync(dir);
      const tensors = [...st.entries()].map(([name, t]) => {
        const bits = new Uint16Array(t.data.length);
        for (let i = 0; i < t.data.length; i++) {
          bits[i] = dtype === 'F16' ? f16(t.data[i]) : new Uint16Array(new Float32Array([t.data[i]]).buffer)[1];
        }
        return { name, shape: t.shape, dtype, bytes: new Uint8Array(bits.buffer) };
      });
      writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors(tensors));
      writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(MODEL, 'config.json')));
      const e = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER, chunkSize: 4093 });
      // the widened weights equal the rounded values exactly
      const emb = e.model.tensors().find((t) => t.name === 'model.embed_tokens.weight');
      const got = e.model.tensorView(emb);
      const src = st.get('model.embed_tokens.weight').data;
      let worst = 0;
      for (let i = 0; i < 5000; i++) worst = Math.max(worst, Math.abs(got[i] - src[i]) / (Math.abs(src[i]) + 1e-6));
      expect(worst).toBeLessThan(dtype === 'F16' ? 1e-3 : 8e-3);
      const lg = logitsOf(e);
      let maxd = 0;
      for (let i = 0; i < lg.length; i++) maxd = Math.max(maxd, Math.abs(lg[i] - reference[i]));
      expect(maxd).toBeLessThan(dtype === 'F16' ? 1e-3 : 1e-2);
      e.dispose();
    }
  });

  test('a tensor of the wrong shape or an unknown tensor is refused with its name', async () => {
    const st = readSafetensors(core, new Uint8Array(readFileSync(path.join(MODEL, 'model.safetensors'))));
    const dir = path.join(tmp, 'bad');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'config.json'), readFileSync(path.join(MODEL, 'config.json')));
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

describe('sha256 pins on local files', () => {
  test('a local model is hashed as it streams; a wrong pin or a pin for a file it lacks is refused', async () => {
    const bytes = readFileSync(path.join(MODEL, 'model.safetensors'));
    const good = createHash('sha256').update(bytes).digest('hex');
    const e = await LocalEngine.load(MODEL, { wasmSource: wasmSource(), tokenizer: TOKENIZER, chunkSize: 4093, sha256: { 'model.safetensors': good } });
    e.dispose();
    await expect(LocalEngine.load(MODEL, { wasmSource: wasmSource(), tokenizer: TOKENIZER, sha256: { 'model.safetensors': 'b'.repeat(64) } }))
      .rejects.toMatchObject({ name: 'IntegrityError', message: expect.stringContaining(`is ${good}, expected bbbb`) });
    await expect(LocalEngine.load(MODEL, { wasmSource: wasmSource(), tokenizer: TOKENIZER, sha256: { 'model.safetensor': good } }))
      .rejects.toThrow(/pin names model\.safetensor, which is not a file/);
  });
});

describe('over HTTP', () => {
  let server;
  let weights;
  beforeAll(async () => {
    weights = new Uint8Array(readFileSync(path.join(MODEL, 'model.safetensors')));
    server = await startServer({
      '/m/config.json': { body: new Uint8Array(readFileSync(path.join(MODEL, 'config.json'))) },
      '/m/model.safetensors': { body: weights, chunkSize: 3001, dropAfter: [undefined, 1500000] },
      '/m/tokenizer.json': { body: new Uint8Array(readFileSync(TOKENIZER)) },
    });
  });
  afterAll(() => server?.close());

  test('an HF-style folder URL streams in, resumes a dropped connection and matches the local load', async () => {
    const events = [];
    const e = await LocalEngine.load(server.url('/m/'), { wasmSource: wasmSource(), onProgress: (ev) => events.push(ev), backoffMs: 10 });
    expect(Buffer.from(logitsOf(e).buffer).equals(Buffer.from(reference.buffer))).toBe(true);
    expect(e.tokenizer.vocabSize).toBe(32000);
    // the weights were read by ranges: the header first, then the body resumed after the drop
    const ranges = server.requestsTo('/m/model.safetensors', 'GET').map((r) => r.range).filter(Boolean);
    expect(ranges.length).toBeGreaterThanOrEqual(3);
    expect(events.some((ev) => ev.status === 'progress' && ev.file === 'model.safetensors')).toBe(true);
    expect(events.at(-1).status).toBe('ready');
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
    const config = new Uint8Array(readFileSync(path.join(MODEL, 'config.json')));
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

  test('a 404 for the weights is a clear error', async () => {
    await expect(LocalEngine.load(server.url('/nothing/'), { wasmSource: wasmSource(), retries: 0 })).rejects.toThrow(/404|not found/i);
  });
});
