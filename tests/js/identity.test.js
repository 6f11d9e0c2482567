// The base model an imported adapter names (PEFT's base_model_name_or_path and revision) against the loaded model:
// how sources and names are normalised, the verdicts, and how a doubt reaches an app (the import result's
// baseModelCheck, onWarning, console.warn), the IndexedDB store's import and load, and the CLI (a line on stderr).
import { describe, test, expect, beforeAll, afterAll, jest } from '@jest/globals';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { WebLoRA } from '../../web/index.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { checkAdapterBase, hubFolderUrl, loadedModelRef, modelRef, recordedBase, sourceKind, sourceRef } from '../../web/storage/identity.js';
import { FINGERPRINT_KEY } from '../../web/formats/peft.js';
import { readSafetensors, writeSafetensors } from '../../web/formats/safetensors.js';
import { repoRoot, sharedPath, wasmSource } from './helpers/core.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
// An HF folder whose config.json (saved by transformers) names its Hub repository in _name_or_path.
const TINY_LLAMA = sharedPath('models/tiny-random-llama');
const TINY_LLAMA_ID = 'trl-internal-testing/tiny-random-LlamaForCausalLM';
const TOKENIZER = sharedPath('tokenizers/llama2-tinyllama/tokenizer.json');
// A real PEFT adapter for stories260K made by the PyTorch reference; it names its base "stories260K".
const ADAPTER_DIR = path.join(repoRoot, 'tests/ref/golden/sgd_contract/stories260K');
const IDB_WORKER = pathToFileURL(path.join(repoRoot, 'tests/js/helpers/idb-worker.js')).href;
const HUB_URL = 'https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/main/';

const status = (nameOrPath, revision, source, fingerprints = {}) =>
  checkAdapterBase({ nameOrPath, revision, fingerprint: fingerprints.adapter }, { ref: sourceRef(source), fingerprint: fingerprints.model }).status;

describe('names and sources', () => {
  test('Hub URLs, mirrors, the Hugging Face cache, revisions and local paths normalise to one form', () => {
    expect(modelRef('https://user:secret@huggingface.co/org/name/resolve/refs%2Fpr%2F3/sub/model.safetensors?download=1#x')).toEqual({
      text: 'https://huggingface.co/org/name/resolve/refs%2Fpr%2F3/sub/model.safetensors', hubId: 'org/name', revision: 'refs/pr/3',
      url: 'https://huggingface.co/org/name/resolve/refs%2Fpr%2F3/sub/model.safetensors', folders: ['org', 'name'], names: ['name', 'sub'],
    });
    expect(modelRef('https://huggingface.co/openai-community/gpt2')).toMatchObject({ hubId: 'openai-community/gpt2', revision: null });
    expect(modelRef('https://hf-mirror.com/org/name/resolve/v2/')).toMatchObject({ hubId: 'org/name', revision: 'v2' });
    expect(modelRef('https://cdn.example.com/models/org/name/model.safetensors')).toMatchObject({ hubId: null, folders: ['models', 'org', 'name'], names: ['name'] });
    const snapshot = `/root/.cache/huggingface/hub/models--org--name/snapshots/${'ab12'.repeat(10)}/config.json`;
    expect(modelRef(snapshot)).toMatchObject({ hubId: 'org/name', revision: 'ab12'.repeat(10) });
    expect(modelRef('HuggingFaceTB/SmolLM2-135M')).toMatchObject({ hubId: 'HuggingFaceTB/SmolLM2-135M', names: ['SmolLM2-135M'] });
    expect(modelRef('/home/me/models/SmolLM2-135M/')).toMatchObject({ hubId: null, names: ['SmolLM2-135M'] });
    expect(modelRef('C:\\models\\SmolLM2-135M\\model.safetensors')).toMatchObject({ hubId: null, folders: ['models', 'SmolLM2-135M'], names: ['SmolLM2-135M'] });
    expect(modelRef('./checkpoints/stories260K.bin')).toMatchObject({ hubId: null, names: ['stories260K', 'checkpoints'] });
    // A model source given as a path is a path even when it looks like "org/name".
    expect(sourceRef('models/SmolLM2-135M')).toMatchObject({ hubId: null, names: ['SmolLM2-135M'] });
    expect(sourceRef([{ name: 'config.json', webkitRelativePath: 'SmolLM2-135M/config.json' }])).toMatchObject({ names: ['SmolLM2-135M'] });
    expect(sourceRef(new ArrayBuffer(8))).toBeNull();
    expect(sourceRef('blob:https://app.example/0b8f7c1e-2d4a-4f4e-9a57-3c1d2e5f6a7b')).toBeNull();
    expect(sourceRef('data:application/octet-stream;base64,AAAA')).toBeNull();
    expect(sourceRef(new URL(HUB_URL))).toMatchObject({ hubId: 'HuggingFaceTB/SmolLM2-135M', revision: 'main' });
    expect(modelRef(null)).toBeNull();
    expect(modelRef('  ')).toBeNull();
  });

  test('what exported adapters record: a Hub id and revision, a URL without credentials, never a local path', () => {
    const recorded = (source, nameOrPath, named = {}) => recordedBase(loadedModelRef(source, { nameOrPath, ...named }));
    expect(recorded(HUB_URL, null)).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: 'main' });
    expect(recorded('https://hf.co/org/m/resolve/refs%2Fpr%2F3/model.safetensors?download=true', null)).toEqual({ id: 'org/m', revision: 'refs/pr/3' });
    expect(recorded('https://user:secret@cdn.example.com/models/m.bin?token=x#frag', null))
      .toEqual({ id: 'https://cdn.example.com/models/m.bin', revision: null });
    const snapshot = '/home/me/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/0123456789abcdef0123456789abcdef01234567/';
    expect(recorded(snapshot, null)).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: '0123456789abcdef0123456789abcdef01234567' });
    // config.json's _name_or_path names a local folder's model when it is a Hub id, never when it is a path.
    expect(recorded('/data/my-model', 'HuggingFaceTB/SmolLM2-135M')).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: null });
    for (const local of ['/data/my-model', './my-model', '..', 'C:\\models\\x']) expect(recorded('/data/my-model', local)).toEqual({ id: null, revision: null });
    expect(recorded('/data/my-model', null)).toEqual({ id: null, revision: null });
    expect(recorded(new Uint8Array(8), 'HuggingFaceTB/SmolLM2-135M')).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: null });
    // The source's own name comes before config.json's: a Hub URL of a fine-tune whose config names its parent.
    expect(recorded('https://huggingface.co/me/tuned/resolve/v1/', 'HuggingFaceTB/SmolLM2-135M')).toEqual({ id: 'me/tuned', revision: 'v1' });
    expect(recorded('https://cdn.example.com/m/', 'HuggingFaceTB/SmolLM2-135M')).toEqual({ id: 'https://cdn.example.com/m/', revision: null });
    // load()'s baseModel and revision come before both.
    const base = modelRef('me/tuned');
    expect(recorded('/data/my-model', 'HuggingFaceTB/SmolLM2-135M', { base, revision: 'v2' })).toEqual({ id: 'me/tuned', revision: 'v2' });
    expect(recorded(HUB_URL, null, { base })).toEqual({ id: 'me/tuned', revision: null });
    expect(recorded(HUB_URL, null, { revision: 'abc1234' })).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M', revision: 'abc1234' });
    expect(recorded('/data/my-model', null, { base: modelRef('https://cdn.example.com/m/') })).toEqual({ id: 'https://cdn.example.com/m/', revision: null });
    // A revision alone names nothing.
    expect(recorded('/data/my-model', null, { revision: 'main' })).toEqual({ id: null, revision: null });
  });

  test('a local folder named by its config.json or by load() is compared as that Hub id, and said so in messages', () => {
    const ref = loadedModelRef('/data/tiny-random-llama', { nameOrPath: TINY_LLAMA_ID });
    expect(ref).toMatchObject({ text: '/data/tiny-random-llama', hubId: TINY_LLAMA_ID, revision: null, url: null });
    expect(checkAdapterBase({ nameOrPath: TINY_LLAMA_ID }, { ref }).status).toBe('match');
    expect(checkAdapterBase({ nameOrPath: TINY_LLAMA_ID, revision: 'main' }, { ref }).status).toBe('unverified');
    expect(checkAdapterBase({ nameOrPath: 'HuggingFaceTB/SmolLM2-135M' }, { ref }).message)
      .toContain(`but the loaded model is /data/tiny-random-llama (${TINY_LLAMA_ID}):`);
    // Its folder's own name still counts for names without an organisation.
    expect(checkAdapterBase({ nameOrPath: '/elsewhere/tiny-random-llama' }, { ref }).status).toBe('unverified');
    // The caller's word is compared, revision included.
    const told = loadedModelRef('/data/tiny-random-llama', { base: modelRef('me/tuned'), revision: 'v2', nameOrPath: TINY_LLAMA_ID });
    expect(checkAdapterBase({ nameOrPath: 'me/tuned', revision: 'v2' }, { ref: told }).status).toBe('match');
    expect(checkAdapterBase({ nameOrPath: 'me/tuned', revision: 'v1' }, { ref: told }).status).toBe('mismatch');
    expect(checkAdapterBase({ nameOrPath: TINY_LLAMA_ID }, { ref: told }).status).toBe('mismatch');
  });

  test.each([
    // same Hub id: on the Hub, a mirror laid out like it, a mirror path ending in org/name, a legacy id without org
    ['HuggingFaceTB/SmolLM2-135M', null, HUB_URL, 'match'],
    ['huggingfacetb/smollm2-135m', null, HUB_URL, 'match'],
    ['HuggingFaceTB/SmolLM2-135M', null, 'https://hf-mirror.com/HuggingFaceTB/SmolLM2-135M/resolve/main/', 'match'],
    ['HuggingFaceTB/SmolLM2-135M', null, 'https://cdn.example.com/mirror/HuggingFaceTB/SmolLM2-135M/', 'match'],
    ['gpt2', null, 'https://huggingface.co/openai-community/gpt2/resolve/main/', 'match'],
    ['https://huggingface.co/HuggingFaceTB/SmolLM2-135M', null, 'https://cdn.example.com/HuggingFaceTB/SmolLM2-135M/model.safetensors', 'match'],
    ['https://cdn.example.com/m/tiny/', null, 'https://cdn.example.com/m/tiny/model.safetensors', 'match'],
    [`/cache/models--HuggingFaceTB--SmolLM2-135M/snapshots/${'0123456789'.repeat(4)}`, null,
      'https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/0123456/', 'match'],
    // revisions: equal, other, a branch against a commit, unknown on the model's side
    ['HuggingFaceTB/SmolLM2-135M', 'main', HUB_URL, 'match'],
    ['HuggingFaceTB/SmolLM2-135M', 'v1', 'https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/v2/', 'mismatch'],
    ['HuggingFaceTB/SmolLM2-135M', 'a'.repeat(40), `https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/${'b'.repeat(40)}/`, 'mismatch'],
    ['HuggingFaceTB/SmolLM2-135M', 'abc1234', HUB_URL, 'unverified'],
    ['HuggingFaceTB/SmolLM2-135M', 'abc1234', 'https://cdn.example.com/HuggingFaceTB/SmolLM2-135M/', 'unverified'],
    [HUB_URL, null, 'https://cdn.example.com/HuggingFaceTB/SmolLM2-135M/model.safetensors', 'unverified'], // main, on a mirror
    // another model
    ['HuggingFaceTB/SmolLM-135M-Instruct', null, HUB_URL, 'mismatch'],
    ['meta-llama/Llama-2-7b-hf', null, 'https://cdn.example.com/mirror/HuggingFaceTB/SmolLM2-135M/', 'mismatch'],
    // local copies: the same name is worth an info, another name a warning
    ['HuggingFaceTB/SmolLM2-135M', null, '/data/models/SmolLM2-135M', 'unverified'],
    ['HuggingFaceTB/SmolLM2-135M', null, '/data/models/my-model', 'mismatch'],
    ['/home/someone/SmolLM2-135M', null, '/data/SmolLM2-135M', 'unverified'],
    ['/home/someone/SmolLM2-135M', null, HUB_URL, 'unverified'],
    ['stories260K', null, STORIES, 'unverified'],
    ['stories260K', null, 'https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin', 'unverified'],
    // a source that says nothing, an adapter that says nothing
    ['HuggingFaceTB/SmolLM2-135M', null, new Uint8Array(8), 'unverified'],
    [null, null, HUB_URL, 'unnamed'],
    ['', 'main', HUB_URL, 'unnamed'],
  ])('%s (revision %s) on %s: %s', (name, revision, source, expected) => {
    expect(status(name, revision, source)).toBe(expected);
  });

  test('base fingerprints, when both sides have one, settle it whatever the names say', () => {
    expect(status('meta-llama/Llama-2-7b-hf', null, HUB_URL, { adapter: 'fp1', model: 'fp1' })).toBe('match');
    expect(status('HuggingFaceTB/SmolLM2-135M', null, HUB_URL, { adapter: 'fp1', model: 'fp2' })).toBe('mismatch');
    expect(checkAdapterBase({ nameOrPath: 'HuggingFaceTB/SmolLM2-135M', fingerprint: 'fp1' }, { ref: sourceRef(HUB_URL), fingerprint: 'fp2' }).message)
      .toBe(`the adapter was trained on other base weights (fingerprint fp1, HuggingFaceTB/SmolLM2-135M) than the loaded model's (fingerprint fp2, ${HUB_URL} (HuggingFaceTB/SmolLM2-135M))`);
    expect(status(null, null, null, { adapter: 'fp1', model: 'fp2' })).toBe('mismatch');
  });

  test('messages name both sides; levels follow the status', () => {
    const c = checkAdapterBase({ nameOrPath: 'HuggingFaceTB/SmolLM-135M-Instruct', revision: 'v1' }, { ref: sourceRef(HUB_URL) });
    expect(c).toMatchObject({ status: 'mismatch', level: 'warning', adapterBase: 'HuggingFaceTB/SmolLM-135M-Instruct', adapterRevision: 'v1', model: HUB_URL });
    expect(c.message).toBe('the adapter names its base model HuggingFaceTB/SmolLM-135M-Instruct at revision v1 but the loaded model is '
      + `${HUB_URL} (HuggingFaceTB/SmolLM2-135M): it may have been trained on another model (its shapes fit, so it was loaded; `
      + 'its outputs are only right on the model it was trained on)');
    const local = checkAdapterBase({ nameOrPath: 'HuggingFaceTB/SmolLM2-135M' }, { ref: sourceRef('/data/SmolLM2-135M') });
    expect(local).toMatchObject({ level: 'info', message: expect.stringContaining('/data/SmolLM2-135M, which has the same name') });
    expect(checkAdapterBase({ nameOrPath: null }, { ref: null })).toMatchObject({ status: 'unnamed', level: null, message: null });
  });
});

/** The reference adapter's files with base_model_name_or_path / revision replaced and optional safetensors metadata. */
function adapterFiles(base, { revision, metadata } = {}) {
  const config = JSON.parse(readFileSync(path.join(ADAPTER_DIR, 'adapter_config.json'), 'utf8'));
  let weights = new Uint8Array(readFileSync(path.join(ADAPTER_DIR, 'adapter_model.safetensors')));
  if (base !== undefined) config.base_model_name_or_path = base;
  if (revision !== undefined) config.revision = revision;
  if (metadata) {
    const st = readSafetensors(engine.core, weights);
    weights = writeSafetensors([...st.tensors.values()].map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype, bytes: t.bytes.slice() })),
      { metadata: { ...st.metadata, ...metadata } });
  }
  return { 'adapter_config.json': JSON.stringify(config), 'adapter_model.safetensors': weights };
}

/** Adapter files naming another base, without weblora's base fingerprint (as PEFT would write them). */
function renamedFiles(files, base) {
  const config = JSON.parse(files['adapter_config.json']);
  config.base_model_name_or_path = base;
  const st = readSafetensors(engine.core, files['adapter_model.safetensors']);
  const { [FINGERPRINT_KEY]: fingerprint, ...metadata } = st.metadata;
  expect(fingerprint).toMatch(/\S/);
  return {
    'adapter_config.json': JSON.stringify(config),
    'adapter_model.safetensors': writeSafetensors([...st.tensors.values()].map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype, bytes: t.bytes.slice() })),
      { metadata }),
  };
}

/** The files of a fresh adapter made on the tiny-random-llama folder (see TINY_LLAMA). */
async function tinyLlamaAdapter() {
  const tiny = await LocalEngine.load(TINY_LLAMA, { wasmSource: wasmSource(), tokenizer: TOKENIZER });
  try {
    return tiny.exportAdapter(tiny.createAdapter({ rank: 2, seed: 1 }).id);
  } finally {
    tiny.dispose();
  }
}

let engine;
let tmp;
beforeAll(async () => {
  engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource() });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'weblora-identity-'));
});
afterAll(() => {
  engine?.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

describe('importing an adapter', () => {
  test('another named base: loaded, baseModelCheck says mismatch, onWarning hears it once (else console.warn)', () => {
    const warnings = [];
    const a = engine.importAdapter(adapterFiles('HuggingFaceTB/SmolLM2-135M'), { onWarning: (w) => warnings.push(w) });
    expect(a.baseModelCheck).toMatchObject({ status: 'mismatch', level: 'warning', adapterBase: 'HuggingFaceTB/SmolLM2-135M', model: STORIES });
    expect(warnings).toEqual([{ code: 'BASE_MODEL_MISMATCH', ...a.baseModelCheck }]);
    expect(warnings[0].message).toContain(`HuggingFaceTB/SmolLM2-135M but the loaded model is ${STORIES}`);
    engine.freeAdapter(a.id);

    const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const b = engine.importAdapter(adapterFiles('HuggingFaceTB/SmolLM2-135M'));
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0][0]).toBe(`weblora: ${b.baseModelCheck.message}`);
      engine.freeAdapter(b.id);
      // The name it gives (a local file of the same name) is only an info: no console noise.
      const c = engine.importAdapter(adapterFiles());
      expect(c.baseModelCheck).toMatchObject({ status: 'unverified', level: 'info', adapterBase: 'stories260K' });
      expect(engine.adapterInfo(c.id).baseModelCheck.status).toBe('unverified');
      engine.freeAdapter(c.id);
      expect(warn).toHaveBeenCalledTimes(1);
    } finally {
      warn.mockRestore();
    }
  });

  test('the base fingerprint weblora records decides over the names; no name means nothing to compare', () => {
    const warnings = [];
    const onWarning = (w) => warnings.push(w);
    const same = engine.importAdapter(adapterFiles('meta-llama/Llama-2-7b-hf', { metadata: { [FINGERPRINT_KEY]: engine.fingerprint } }), { onWarning });
    expect(same.baseModelCheck.status).toBe('match');
    const unnamed = engine.importAdapter(adapterFiles(null), { onWarning });
    expect(unnamed.baseModelCheck.status).toBe('unnamed');
    expect(warnings).toEqual([]);
    engine.freeAdapter(same.id);
    engine.freeAdapter(unnamed.id);
  });

  test('a local folder whose config.json names its Hub id: adapters naming that id match, others are warned about', async () => {
    const made = await tinyLlamaAdapter();
    // The same identity is written on export...
    expect([made.config.base_model_name_or_path, made.config.revision]).toEqual([TINY_LLAMA_ID, null]);
    const tiny = await LocalEngine.load(TINY_LLAMA, { wasmSource: wasmSource(), tokenizer: TOKENIZER });
    try {
      // ... and checked on import, by name alone (no fingerprint in the files).
      const warnings = [];
      const onWarning = (w) => warnings.push(w);
      const same = tiny.importAdapter(renamedFiles(made.files, TINY_LLAMA_ID), { onWarning });
      expect(same.baseModelCheck).toMatchObject({ status: 'match', level: null, model: TINY_LLAMA });
      const other = tiny.importAdapter(renamedFiles(made.files, 'HuggingFaceTB/SmolLM2-135M'), { onWarning });
      expect(other.baseModelCheck.status).toBe('mismatch');
      expect(warnings.map((w) => w.code)).toEqual(['BASE_MODEL_MISMATCH']);
      expect(warnings[0].message).toContain(`the loaded model is ${TINY_LLAMA} (${TINY_LLAMA_ID})`);
    } finally {
      tiny.dispose();
    }
    // load({ baseModel, revision }) is the caller's word: it is what is compared.
    const told = await LocalEngine.load(TINY_LLAMA, { wasmSource: wasmSource(), tokenizer: TOKENIZER, baseModel: 'me/tiny', revision: 'v2' });
    try {
      expect(told.info().origin).toEqual({ id: 'me/tiny', revision: 'v2' });
      expect(told.importAdapter(renamedFiles(made.files, 'me/tiny'), { onWarning: () => {} }).baseModelCheck.status).toBe('match');
      expect(told.importAdapter(renamedFiles(made.files, TINY_LLAMA_ID), { onWarning: () => {} }).baseModelCheck.status).toBe('mismatch');
    } finally {
      told.dispose();
    }
    await expect(LocalEngine.load(TINY_LLAMA, { wasmSource: wasmSource(), tokenizer: TOKENIZER, baseModel: '/data/my-model' }))
      .rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/baseModel must be a Hub id .* or an http\(s\) URL/) });
  });

  test('through the worker: importAdapter, adapters.import and adapters.load report to onWarning and in their result', async () => {
    const remote = await WebLoRA.load(STORIES, { workerUrl: IDB_WORKER });
    try {
      const warnings = [];
      const onWarning = (w) => warnings.push(w);
      const files = adapterFiles('HuggingFaceTB/SmolLM2-135M', { revision: 'main' });
      const a = await remote.importAdapter({ ...files }, { onWarning });
      expect(a.baseModelCheck).toMatchObject({ status: 'mismatch', adapterRevision: 'main' });
      expect(warnings.map((w) => w.code)).toEqual(['BASE_MODEL_MISMATCH']);
      const stored = await remote.adapters.import(Object.entries(adapterFiles('HuggingFaceTB/SmolLM2-135M')).map(([name, data]) => ({ name, data })),
        { name: 'smol', onWarning });
      expect(stored).toMatchObject({ name: 'smol', baseModelCheck: { status: 'mismatch' } });
      const loaded = await remote.adapters.load('smol', { onWarning });
      expect(loaded.baseModelCheck.status).toBe('mismatch');
      expect(warnings.map((w) => w.code)).toEqual(['BASE_MODEL_MISMATCH', 'BASE_MODEL_MISMATCH', 'BASE_MODEL_MISMATCH']);
      expect(warnings.every((w) => w.message.includes('HuggingFaceTB/SmolLM2-135M'))).toBe(true);
      // Options without a handler still cross the worker boundary.
      expect((await remote.importAdapter(adapterFiles(), { name: 'plain' })).baseModelCheck.status).toBe('unverified');
    } finally {
      await remote.dispose();
    }
  });
});

describe('the CLI', () => {
  function run(args) {
    return new Promise((resolve) => {
      execFile(process.execPath, [path.join(repoRoot, 'web/cli.js'), ...args], { cwd: tmp, timeout: 120000 },
        (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
    });
  }

  test('an adapter naming another base model gets a warning line on stderr, and the command goes on', async () => {
    const dir = path.join(tmp, 'smol-adapter');
    mkdirSync(dir);
    for (const [name, data] of Object.entries(adapterFiles('HuggingFaceTB/SmolLM2-135M'))) writeFileSync(path.join(dir, name), data);
    const r = await run(['generate', '--model', STORIES, '--adapter', dir, '--prompt', 'Once', '--max-tokens', '4', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`weblora generate: warning: ${dir}: the adapter names its base model HuggingFaceTB/SmolLM2-135M but the loaded model is `
      + `${STORIES}: it may have been trained on another model (its shapes fit, so it was loaded; its outputs are only right on the model it was trained on)\n`);
    expect(JSON.parse(r.stdout).ids.length).toBeGreaterThan(0);
    // A local folder whose config.json names its Hub id: an adapter naming that id is not worth a line either.
    const made = await tinyLlamaAdapter();
    const named = path.join(tmp, 'tiny-named');
    const other = path.join(tmp, 'tiny-other');
    for (const [dir, base] of [[named, TINY_LLAMA_ID], [other, 'HuggingFaceTB/SmolLM2-135M']]) {
      mkdirSync(dir);
      for (const [name, data] of Object.entries(renamedFiles(made.files, base))) writeFileSync(path.join(dir, name), data);
    }
    const tinyArgs = ['generate', '--model', TINY_LLAMA, '--tokenizer', TOKENIZER, '--prompt', 'Hi', '--max-tokens', '2', '--json'];
    const quiet = await run([...tinyArgs, '--adapter', named]);
    expect([quiet.code, quiet.stderr]).toEqual([0, '']);
    const loud = await run([...tinyArgs, '--adapter', other]);
    expect(loud.code).toBe(0);
    expect(loud.stderr).toContain(`weblora generate: warning: ${other}: the adapter names its base model HuggingFaceTB/SmolLM2-135M but the loaded model is ${TINY_LLAMA} (${TINY_LLAMA_ID})`);
    // Its own name (a local file called stories260K) is not worth a line.
    const own = await run(['generate', '--model', STORIES, '--adapter', ADAPTER_DIR, '--prompt', 'Once', '--max-tokens', '4', '--json']);
    expect(own.code).toBe(0);
    expect(own.stderr).toBe('');
  });
});

describe('model sources given as text', () => {
  test.each([
    ['HuggingFaceTB/SmolLM2-135M', 'hub'],
    ['https://huggingface.co/org/m/resolve/main/', 'url'],
    ['blob:https://app.example/1234', 'url'],
    ['./model/', 'relative'],
    ['/models/tiny/', 'relative'],
    ['models/model.safetensors', 'relative'],
    ['models/tiny/', 'relative'],
    ['C:\\models\\tiny', 'relative'],
    ['../org/model', 'relative'],
  ])('%s is a %s source', (text, kind) => {
    expect(sourceKind(text)).toBe(kind);
  });

  test('a Hub id maps to its resolve folder on the Hub or a mirror, at a revision', () => {
    expect(hubFolderUrl('HuggingFaceTB/SmolLM2-135M')).toBe('https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/main/');
    expect(hubFolderUrl('org/m', { revision: 'refs/pr/1', host: 'https://mirror.example/hf' }))
      .toBe('https://mirror.example/hf/org/m/resolve/refs%2Fpr%2F1/');
    expect(() => hubFolderUrl('org/m', { host: 'file:///tmp/' })).toThrow('remoteHost must be an http(s) URL, got file:///tmp/');
  });
});
