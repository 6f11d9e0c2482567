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

  test('a 404 for the weights is a clear error', async () => {
    await expect(LocalEngine.load(server.url('/nothing/'), { wasmSource: wasmSource(), retries: 0 })).rejects.toThrow(/404|not found/i);
  });
});

describe('where the model came from, for adapter files', () => {
  test('Hub URLs and cache folders give an id and revision; other URLs lose credentials; local paths never leak', async () => {
    const { modelOrigin } = await import('../../web/loader.js');
    expect(modelOrigin('https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/main/', null))
      .toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: 'main' });
    expect(modelOrigin('https://hf.co/org/m/resolve/refs%2Fpr%2F3/model.safetensors?download=true', null))
      .toEqual({ id: 'org/m', revision: 'refs/pr/3' });
    expect(modelOrigin('https://user:secret@cdn.example.com/models/m.bin?token=x#frag', null))
      .toEqual({ id: 'https://cdn.example.com/models/m.bin', revision: null });
    const snapshot = '/home/me/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/0123456789abcdef0123456789abcdef01234567/';
    expect(modelOrigin(snapshot, null)).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: '0123456789abcdef0123456789abcdef01234567' });
    expect(modelOrigin('/data/my-model', 'HuggingFaceTB/SmolLM2-135M')).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: null });
    for (const local of ['/data/my-model', './my-model', '..', 'C:\\models\\x']) expect(modelOrigin('/data/my-model', local)).toEqual({ id: null, revision: null });
    expect(modelOrigin('/data/my-model', null)).toEqual({ id: null, revision: null });
  });

  test('exported adapters name the Hub id and revision, or what load() was told, never the local folder', async () => {
    const dir = path.join(tmp, 'origin-model');
    mkdirSync(dir, { recursive: true });
    for (const f of ['config.json', 'model.safetensors']) writeFileSync(path.join(dir, f), readFileSync(path.join(MODEL, f)));
    // The real config.json (saved by transformers) names its Hub repository in _name_or_path.
    const e = await LocalEngine.load(dir, { wasmSource: wasmSource(), tokenizer: TOKENIZER });
    try {
      const config = e.exportAdapter(e.createAdapter({ rank: 2 }).id).config;
      expect(config.base_model_name_or_path).toBe('trl-internal-testing/tiny-random-LlamaForCausalLM');
      expect(config.revision).toBeNull();
    } finally {
      e.dispose();
    }
    const cfg = JSON.parse(readFileSync(path.join(MODEL, 'config.json'), 'utf8'));
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
    for (const f of ['config.json', 'model.safetensors']) writeFileSync(path.join(modelDir, f), readFileSync(path.join(MODEL, f)));
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
