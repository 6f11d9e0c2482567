// Tests for web/storage/store.js (and the encryption in web/storage/crypto.js) on fake-indexeddb: round trips, overwrite and
// rename rules, atomic writes under injected failures, quota errors, encryption at rest, checkpoints.

import 'fake-indexeddb/auto';
import { afterEach, describe, expect, test } from '@jest/globals';
import { IDBFactory } from 'fake-indexeddb';
import { wrap } from 'idb';
import { AdapterStore, CONFIG_FILE, WEIGHTS_FILE } from '../../web/storage/store.js';
import {
  AlreadyExistsError, BaseModelMismatchError, IntegrityError, InvalidAdapterError, InvalidArgumentError, NotFoundError,
  PassphraseError, StorageFullError,
} from '../../web/errors.js';

const CONFIG = {
  peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: 'HuggingFaceTB/SmolLM2-135M',
  r: 8, lora_alpha: 16, lora_dropout: 0.0, target_modules: ['q_proj', 'v_proj'], bias: 'none',
};

function bytesOf(n, seed = 1) {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const WEIGHTS = bytesOf(4096, 3);

/** A navigator.storage stand-in that counts persist() calls and reports 1000 bytes free. */
function fakeStorage() {
  return {
    persistCalls: 0,
    async persisted() { return false; },
    async persist() { this.persistCalls++; return true; },
    async estimate() { return { quota: 1_000_000, usage: 999_000 }; },
  };
}

/** Each test gets its own empty IndexedDB. */
function freshDb() {
  return new IDBFactory();
}

async function openStore(extra = {}) {
  const indexedDB = extra.indexedDB ?? freshDb();
  const storage = extra.storage === undefined ? fakeStorage() : extra.storage;
  const store = await AdapterStore.open({ indexedDB, storage, ...extra });
  return { store, indexedDB, storage };
}

const adapter = (overrides = {}) => ({
  config: CONFIG, weights: WEIGHTS, baseFingerprint: 'fp-smollm2-135m', baseModel: 'SmolLM2-135M',
  meta: { steps: 120, finalLoss: 1.25 }, ...overrides,
});

/** Replaces IDBObjectStore.prototype.put for one store name; undone after each test. */
const restores = [];
function failPuts(storeName, makeError) {
  const proto = globalThis.IDBObjectStore.prototype;
  const original = proto.put;
  proto.put = function put(...args) {
    if (this.name === storeName) throw makeError();
    return original.apply(this, args);
  };
  restores.push(() => { proto.put = original; });
}
/**
 * Makes the next put() into one store fail asynchronously, when the request executes (the way browsers report
 * a full disk), through fake-indexeddb's backing store.
 */
function failPutsLater(storeName, makeError) {
  const proto = globalThis.IDBObjectStore.prototype;
  const original = proto.put;
  proto.put = function put(...args) {
    if (this.name !== storeName) return original.apply(this, args);
    const raw = this._rawObjectStore;
    const store = raw.storeRecord;
    raw.storeRecord = () => { throw makeError(); };
    try {
      return original.apply(this, args); // binds the failing operation
    } finally {
      raw.storeRecord = store;
    }
  };
  restores.push(() => { proto.put = original; });
}
afterEach(() => {
  while (restores.length) restores.pop()();
});

/** Reads a raw record, bypassing the store (to see what is really on disk). */
async function rawGet(indexedDB, storeName, key, dbName = 'weblora') {
  const db = await wrap(indexedDB.open(dbName));
  try {
    return await db.get(storeName, key);
  } finally {
    db.close();
  }
}

function contains(haystack, needle) {
  return Buffer.from(haystack).includes(Buffer.from(needle));
}

describe('adapters', () => {
  test('save, list and load round trip', async () => {
    const { store } = await openStore();
    const t0 = Date.now();
    const rec = await store.save('my-style', adapter());
    const configBytes = new TextEncoder().encode(JSON.stringify(CONFIG, null, 2)).byteLength;
    expect(rec).toEqual({
      name: 'my-style', baseModel: 'SmolLM2-135M', baseFingerprint: 'fp-smollm2-135m', rank: 8,
      targets: ['q_proj', 'v_proj'], sizeBytes: configBytes + WEIGHTS.byteLength,
      created: rec.created, updated: rec.created, steps: 120, finalLoss: 1.25, encrypted: false,
    });
    expect(rec.created).toBeGreaterThanOrEqual(t0);
    expect(await store.list()).toEqual([rec]);
    const loaded = await store.load('my-style');
    expect(loaded.meta).toEqual(rec);
    expect(loaded.config).toEqual(CONFIG);
    expect(Buffer.from(loaded.weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    store.close();
  });

  test('the weights are copied at save time, and a view stores only its own bytes', async () => {
    const { store, indexedDB } = await openStore();
    const big = bytesOf(100_000, 5);
    const view = big.subarray(1000, 1100);
    await store.save('view', adapter({ weights: view }));
    big.fill(0); // the caller goes on using its buffer
    const { weights } = await store.load('view');
    expect(Buffer.from(weights).equals(Buffer.from(bytesOf(100_000, 5).subarray(1000, 1100)))).toBe(true);
    const raw = await rawGet(indexedDB, 'files', 'view');
    expect(raw[WEIGHTS_FILE].buffer.byteLength).toBe(100);
    store.close();
  });

  test('list is most recent first', async () => {
    const { store } = await openStore();
    await store.save('a', adapter());
    await new Promise((r) => setTimeout(r, 5));
    await store.save('b', adapter());
    expect((await store.list()).map((r) => r.name)).toEqual(['b', 'a']);
    store.close();
  });

  test('overwrite rules: refused by default, replaces (keeping created) when asked', async () => {
    const { store } = await openStore();
    const first = await store.save('x', adapter());
    const err = await store.save('x', adapter({ weights: bytesOf(10, 9) })).catch((e) => e);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect(err.code).toBe('ALREADY_EXISTS');
    expect(Buffer.from((await store.load('x')).weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    await new Promise((r) => setTimeout(r, 5));
    const second = await store.save('x', adapter({ weights: bytesOf(10, 9), meta: { steps: 500 } }), { overwrite: true });
    expect(second.created).toBe(first.created);
    expect(second.updated).toBeGreaterThan(first.updated);
    expect(second.steps).toBe(500);
    expect(second.finalLoss).toBe(null);
    expect(Buffer.from((await store.load('x')).weights).equals(Buffer.from(bytesOf(10, 9)))).toBe(true);
    expect((await store.list()).length).toBe(1);
    store.close();
  });

  test('rename moves both files; missing source and taken target are refused', async () => {
    const { store } = await openStore();
    await store.save('old', adapter());
    await store.save('other', adapter({ weights: bytesOf(8) }));
    await store.rename('old', 'new');
    expect((await store.list()).map((r) => r.name).sort()).toEqual(['new', 'other']);
    expect(Buffer.from((await store.load('new')).weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    await expect(store.load('old')).rejects.toThrow(NotFoundError);
    await expect(store.rename('old', 'x')).rejects.toThrow(NotFoundError);
    await expect(store.rename('new', 'other')).rejects.toThrow(AlreadyExistsError);
    expect(Buffer.from((await store.load('other')).weights).equals(Buffer.from(bytesOf(8)))).toBe(true);
    expect(Buffer.from((await store.load('new')).weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    store.close();
  });

  test('delete removes the record and its files', async () => {
    const { store, indexedDB } = await openStore();
    await store.save('gone', adapter());
    expect(await store.delete('gone')).toBe(true);
    expect(await store.delete('gone')).toBe(false);
    expect(await store.list()).toEqual([]);
    await expect(store.load('gone')).rejects.toThrow(NotFoundError);
    expect(await rawGet(indexedDB, 'files', 'gone')).toBeUndefined();
    store.close();
  });

  test('base model fingerprint: a different one is a BaseModelMismatchError', async () => {
    const { store } = await openStore();
    await store.save('fp', adapter());
    await store.save('nofp', adapter({ baseFingerprint: null }));
    expect((await store.load('fp', { baseFingerprint: 'fp-smollm2-135m' })).config).toEqual(CONFIG);
    const err = await store.load('fp', { baseFingerprint: 'fp-tinyllama' }).catch((e) => e);
    expect(err).toBeInstanceOf(BaseModelMismatchError);
    expect(err.code).toBe('BASE_MODEL_MISMATCH');
    expect(err.details).toMatchObject({ expected: 'fp-smollm2-135m', actual: 'fp-tinyllama' });
    expect(err.message).toContain('SmolLM2-135M');
    await expect(store.exportFiles('fp')).resolves.toHaveLength(2);
    // An adapter whose base is unknown cannot be checked, so it is not refused.
    expect((await store.load('nofp', { baseFingerprint: 'fp-tinyllama' })).config).toEqual(CONFIG);
    store.close();
  });

  test('bad arguments are InvalidArgumentErrors', async () => {
    const { store } = await openStore();
    const invalid = { name: 'InvalidArgumentError', code: 'INVALID_ARGUMENT' };
    await expect(store.save('', adapter())).rejects.toMatchObject(invalid);
    await expect(store.save('x', adapter({ config: null }))).rejects.toMatchObject(invalid);
    await expect(store.save('x', adapter({ weights: [1, 2, 3] }))).rejects.toMatchObject(invalid);
    expect(await store.list()).toEqual([]);
    store.close();
  });
});

describe('PEFT export and import', () => {
  test('export gives the two PEFT files; import into another store round-trips them byte for byte', async () => {
    const { store } = await openStore();
    await store.save('mine', adapter());
    const files = await store.exportFiles('mine');
    expect(files.map((f) => f.name)).toEqual([CONFIG_FILE, WEIGHTS_FILE]);
    expect(JSON.parse(new TextDecoder().decode(files[0].data))).toEqual(CONFIG);
    expect(Buffer.from(files[1].data).equals(Buffer.from(WEIGHTS))).toBe(true);

    const { store: other } = await openStore();
    const seen = [];
    const rec = await other.importFiles(files, {
      name: 'imported', baseFingerprint: 'fp-smollm2-135m',
      validate: (f) => { seen.push(f.map((x) => [x.name, x.data.byteLength])); },
    });
    expect(seen).toEqual([[[CONFIG_FILE, files[0].data.byteLength], [WEIGHTS_FILE, WEIGHTS.byteLength]]]);
    expect(rec).toMatchObject({
      name: 'imported', baseModel: CONFIG.base_model_name_or_path, baseFingerprint: 'fp-smollm2-135m', rank: 8,
      targets: ['q_proj', 'v_proj'], steps: null, finalLoss: null, encrypted: false,
    });
    const again = await other.exportFiles('imported');
    expect(Buffer.from(again[0].data).equals(Buffer.from(files[0].data))).toBe(true);
    expect(Buffer.from(again[1].data).equals(Buffer.from(files[1].data))).toBe(true);
    store.close();
    other.close();
  });

  test('File objects with paths, and the original config text is kept exactly', async () => {
    const { store } = await openStore();
    const text = '{"peft_type":"LORA","r":4,"lora_alpha":1e-05,"target_modules":"q_proj|v_proj"}\n';
    await store.importFiles([
      new File([text], 'dir/adapter_config.json'),
      new File([bytesOf(64)], 'dir/adapter_model.safetensors'),
      new File(['ignored'], 'README.md'),
    ], { name: 'from-files', baseModel: 'label' });
    const [config] = await store.exportFiles('from-files');
    expect(new TextDecoder().decode(config.data)).toBe(text);
    expect((await store.list())[0]).toMatchObject({ baseModel: 'label', rank: 4, targets: ['q_proj|v_proj'] });
    store.close();
  });

  test.each([
    ['a missing weights file', [{ name: CONFIG_FILE, data: JSON.stringify(CONFIG) }], /needs/],
    ['a config that is not JSON', [{ name: CONFIG_FILE, data: '{' }, { name: WEIGHTS_FILE, data: bytesOf(4) }], /JSON/],
    ['another PEFT type', [{ name: CONFIG_FILE, data: JSON.stringify({ ...CONFIG, peft_type: 'IA3' }) },
      { name: WEIGHTS_FILE, data: bytesOf(4) }], /LORA/],
    ['a zero rank', [{ name: CONFIG_FILE, data: JSON.stringify({ ...CONFIG, r: 0 }) }, { name: WEIGHTS_FILE, data: bytesOf(4) }], /r must/],
    ['no target modules', [{ name: CONFIG_FILE, data: JSON.stringify({ ...CONFIG, target_modules: [] }) },
      { name: WEIGHTS_FILE, data: bytesOf(4) }], /target_modules/],
  ])('import refuses %s and stores nothing', async (_, files, message) => {
    const { store } = await openStore();
    const err = await store.importFiles(files, { name: 'bad' }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidAdapterError);
    expect(err.message).toMatch(message);
    expect(await store.list()).toEqual([]);
    store.close();
  });

  test('the validate callback can reject the safetensors; nothing is stored', async () => {
    const { store } = await openStore();
    const files = [{ name: CONFIG_FILE, data: JSON.stringify(CONFIG) }, { name: WEIGHTS_FILE, data: bytesOf(4) }];
    const err = await store.importFiles(files, {
      name: 'bad',
      validate: ([, w]) => { if (w.data.byteLength < 8) throw new Error('safetensors header truncated'); },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidAdapterError);
    expect(err.message).toContain('safetensors header truncated');
    expect(err.cause.message).toBe('safetensors header truncated');
    expect(await store.list()).toEqual([]);
    store.close();
  });
});

describe('atomic writes', () => {
  test('a failure between the two writes of a save leaves nothing visible', async () => {
    const { store, indexedDB } = await openStore();
    failPuts('files', () => new Error('disk on fire'));
    await expect(store.save('half', adapter())).rejects.toThrow('disk on fire');
    restores.pop()();
    expect(await store.list()).toEqual([]);
    expect(await rawGet(indexedDB, 'adapters', 'half')).toBeUndefined();
    await expect(store.load('half')).rejects.toThrow(NotFoundError);
    store.close();
  });

  test('a failed overwrite keeps the previous version whole', async () => {
    const { store } = await openStore();
    const before = await store.save('keep', adapter());
    failPuts('files', () => new Error('disk on fire'));
    await expect(store.save('keep', adapter({ weights: bytesOf(10), meta: { steps: 9 } }), { overwrite: true }))
      .rejects.toThrow('disk on fire');
    restores.pop()();
    const { meta, weights } = await store.load('keep');
    expect(meta).toEqual(before);
    expect(Buffer.from(weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    store.close();
  });

  test('a failed rename leaves the adapter under its old name', async () => {
    const { store } = await openStore();
    await store.save('a', adapter());
    failPuts('files', () => new Error('disk on fire'));
    await expect(store.rename('a', 'b')).rejects.toThrow('disk on fire');
    restores.pop()();
    expect((await store.list()).map((r) => r.name)).toEqual(['a']);
    expect(Buffer.from((await store.load('a')).weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    store.close();
  });

  test('a failed checkpoint save keeps the previous checkpoint', async () => {
    const { store } = await openStore();
    await store.saveCheckpoint('run', { adapterBytes: bytesOf(16), optimizerBytes: bytesOf(32), position: { i: 1 }, step: 10 });
    failPuts('checkpointFiles', () => new Error('disk on fire'));
    await expect(store.saveCheckpoint('run', { adapterBytes: bytesOf(16, 2), optimizerBytes: bytesOf(32, 2), step: 20 }))
      .rejects.toThrow('disk on fire');
    restores.pop()();
    const ck = await store.loadCheckpoint('run');
    expect(ck.step).toBe(10);
    expect(Buffer.from(ck.adapterBytes).equals(Buffer.from(bytesOf(16)))).toBe(true);
    store.close();
  });
});

describe('storage quota', () => {
  test('QuotaExceededError becomes StorageFullError with the sizes; nothing existing is lost', async () => {
    const { store } = await openStore();
    await store.save('existing', adapter());
    failPuts('files', () => new DOMException('The quota has been exceeded.', 'QuotaExceededError'));
    const err = await store.save('existing', adapter({ weights: bytesOf(50_000) }), { overwrite: true }).catch((e) => e);
    restores.pop()();
    expect(err).toBeInstanceOf(StorageFullError);
    expect(err.code).toBe('STORAGE_FULL');
    const configBytes = new TextEncoder().encode(JSON.stringify(CONFIG, null, 2)).byteLength;
    const needed = 50_000 + configBytes;
    expect(err.details).toEqual({ needed, available: 1000, quota: 1_000_000, usage: 999_000 });
    expect(err.message).toContain(`${needed} bytes`);
    expect(err.message).toContain('1000 B free of 977 KB');
    expect(err.cause.name).toBe('QuotaExceededError');
    expect(Buffer.from((await store.load('existing')).weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    store.close();
  });

  test('a quota error reported later by the request aborts the whole save the same way', async () => {
    const { store } = await openStore();
    const before = await store.save('existing', adapter());
    failPutsLater('files', () => new DOMException('The quota has been exceeded.', 'QuotaExceededError'));
    const err = await store.save('existing', adapter({ weights: bytesOf(2000), meta: { steps: 1 } }), { overwrite: true })
      .catch((e) => e);
    restores.pop()();
    expect(err).toBeInstanceOf(StorageFullError);
    expect(err.details.needed).toBeGreaterThan(2000);
    const { meta, weights } = await store.load('existing');
    expect(meta).toEqual(before);
    expect(Buffer.from(weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    store.close();
  });

  test("Firefox's NS_ERROR_DOM_QUOTA_REACHED too, and without an estimate the message says so", async () => {
    const { store } = await openStore({ storage: null });
    failPuts('checkpointFiles', () => Object.assign(new Error('quota reached'), { name: 'NS_ERROR_DOM_QUOTA_REACHED' }));
    const err = await store.saveCheckpoint('r', { adapterBytes: bytesOf(100), optimizerBytes: bytesOf(200), step: 1 })
      .catch((e) => e);
    expect(err).toBeInstanceOf(StorageFullError);
    expect(err.message).toContain('300 bytes');
    expect(err.message).toContain('free space unknown');
    expect(await store.listCheckpoints()).toEqual([]);
    store.close();
  });

  test('persistent storage is requested once per store', async () => {
    const { store, storage } = await openStore();
    expect(await store.persistence()).toBe(null);
    await store.save('a', adapter());
    await store.save('b', adapter());
    await store.saveCheckpoint('r', { adapterBytes: bytesOf(1), optimizerBytes: bytesOf(1), step: 0 });
    expect(await store.persistence()).toBe(true);
    expect(storage.persistCalls).toBe(1);
    store.close();
  });
});

describe('encryption at rest', () => {
  test('contents are ciphertext, metadata readable, the passphrase opens them', async () => {
    const indexedDB = freshDb();
    const { store } = await openStore({ indexedDB, passphrase: 'correct horse battery staple' });
    expect(store.encrypted).toBe(true);
    const rec = await store.save('secret', adapter());
    expect(rec.encrypted).toBe(true);
    store.close();

    const raw = await rawGet(indexedDB, 'files', 'secret');
    const weights = raw[WEIGHTS_FILE];
    const config = raw[CONFIG_FILE];
    expect(weights.iv.byteLength).toBe(12);
    expect(weights.data.byteLength).toBe(WEIGHTS.byteLength + 16); // AES-GCM tag
    expect(contains(weights.data, WEIGHTS.subarray(0, 32))).toBe(false);
    expect(typeof config).toBe('object');
    expect(contains(config.data, new TextEncoder().encode('q_proj'))).toBe(false);
    const keyRecord = await rawGet(indexedDB, 'keys', 'master');
    expect(keyRecord.salt.byteLength).toBe(16);
    expect(keyRecord.iterations).toBeGreaterThanOrEqual(310_000);

    // Without the passphrase: list works, contents do not.
    const { store: locked } = await openStore({ indexedDB });
    expect((await locked.list())[0]).toMatchObject({ name: 'secret', encrypted: true, rank: 8 });
    const err = await locked.load('secret').catch((e) => e);
    expect(err).toBeInstanceOf(PassphraseError);
    expect(err.code).toBe('PASSPHRASE_REQUIRED');
    locked.close();

    const { store: unlocked } = await openStore({ indexedDB, passphrase: 'correct horse battery staple' });
    const loaded = await unlocked.load('secret');
    expect(loaded.config).toEqual(CONFIG);
    expect(Buffer.from(loaded.weights).equals(Buffer.from(WEIGHTS))).toBe(true);
    await unlocked.rename('secret', 'still-secret');
    expect((await unlocked.exportFiles('still-secret'))[0].data.byteLength).toBeGreaterThan(10);
    unlocked.close();
  });

  test('a wrong passphrase is a clear error at open', async () => {
    const indexedDB = freshDb();
    (await openStore({ indexedDB, passphrase: 'right' })).store.close();
    const err = await openStore({ indexedDB, passphrase: 'wrong' }).catch((e) => e);
    expect(err).toBeInstanceOf(PassphraseError);
    expect(err.code).toBe('WRONG_PASSPHRASE');
    expect(err.message).toMatch(/wrong passphrase/);
  });

  test('each file gets a fresh IV, and ciphertexts cannot be swapped between adapters', async () => {
    const indexedDB = freshDb();
    const { store } = await openStore({ indexedDB, passphrase: 'pw' });
    await store.save('one', adapter());
    await store.save('two', adapter());
    const a = await rawGet(indexedDB, 'files', 'one');
    const b = await rawGet(indexedDB, 'files', 'two');
    expect(Buffer.from(a[WEIGHTS_FILE].iv).equals(Buffer.from(b[WEIGHTS_FILE].iv))).toBe(false);
    expect(Buffer.from(a[WEIGHTS_FILE].data).equals(Buffer.from(b[WEIGHTS_FILE].data))).toBe(false);
    // Move adapter one's files under adapter two's record: authentication must fail.
    const db = await wrap(indexedDB.open('weblora'));
    await db.put('files', a, 'two');
    db.close();
    await expect(store.load('two')).rejects.toThrow(IntegrityError);
    store.close();
  });

  test('too few PBKDF2 iterations are refused', async () => {
    await expect(openStore({ passphrase: 'pw', iterations: 1000 })).rejects.toThrow(/iterations/);
  });

  test('checkpoints are encrypted too', async () => {
    const indexedDB = freshDb();
    const { store } = await openStore({ indexedDB, passphrase: 'pw' });
    const adapterBytes = bytesOf(256, 4);
    await store.saveCheckpoint('run', { adapterBytes, optimizerBytes: bytesOf(512, 5), step: 3, position: { epoch: 0, i: 7 } });
    const raw = await rawGet(indexedDB, 'checkpointFiles', 'run');
    expect(contains(raw.adapter.data, adapterBytes.subarray(0, 32))).toBe(false);
    const ck = await store.loadCheckpoint('run');
    expect(Buffer.from(ck.adapterBytes).equals(Buffer.from(adapterBytes))).toBe(true);
    expect(ck.position).toEqual({ epoch: 0, i: 7 });
    store.close();
  });
});

describe('checkpoints', () => {
  test('save, load, replace, list and delete', async () => {
    const { store } = await openStore();
    expect(await store.loadCheckpoint('none')).toBe(null);
    const first = await store.saveCheckpoint('run-1', {
      adapterBytes: bytesOf(100), optimizerBytes: bytesOf(300), position: { epoch: 1, offset: 4096 }, step: 50,
      config: { lr: 1e-3, batchSize: 4 },
    });
    expect(first).toEqual({
      runId: 'run-1', step: 50, position: { epoch: 1, offset: 4096 }, config: { lr: 1e-3, batchSize: 4 },
      sizeBytes: 400, created: first.created, updated: first.created, encrypted: false,
    });
    await new Promise((r) => setTimeout(r, 5));
    await store.saveCheckpoint('run-2', { adapterBytes: bytesOf(1), optimizerBytes: bytesOf(1), step: 0 });
    await new Promise((r) => setTimeout(r, 5));
    const second = await store.saveCheckpoint('run-1', {
      adapterBytes: bytesOf(100, 7), optimizerBytes: bytesOf(300, 7), position: { epoch: 1, offset: 8192 }, step: 60,
    });
    expect(second.created).toBe(first.created);
    const ck = await store.loadCheckpoint('run-1');
    expect(ck.step).toBe(60);
    expect(ck.position).toEqual({ epoch: 1, offset: 8192 });
    expect(Buffer.from(ck.adapterBytes).equals(Buffer.from(bytesOf(100, 7)))).toBe(true);
    expect(Buffer.from(ck.optimizerBytes).equals(Buffer.from(bytesOf(300, 7)))).toBe(true);
    expect((await store.listCheckpoints()).map((c) => c.runId)).toEqual(['run-1', 'run-2']);
    expect(await store.deleteCheckpoint('run-1')).toBe(true);
    expect(await store.deleteCheckpoint('run-1')).toBe(false);
    expect(await store.loadCheckpoint('run-1')).toBe(null);
    expect((await store.listCheckpoints()).map((c) => c.runId)).toEqual(['run-2']);
    // Checkpoints and adapters are separate.
    expect(await store.list()).toEqual([]);
    store.close();
  });

  test('a negative or fractional step is refused', async () => {
    const { store } = await openStore();
    await expect(store.saveCheckpoint('r', { adapterBytes: bytesOf(1), optimizerBytes: bytesOf(1), step: -1 }))
      .rejects.toThrow(InvalidArgumentError);
    await expect(store.saveCheckpoint('r', { adapterBytes: bytesOf(1), optimizerBytes: bytesOf(1), step: 1.5 }))
      .rejects.toThrow(InvalidArgumentError);
    store.close();
  });
});

describe('durability', () => {
  test('every write (save, overwrite, rename, delete, import, checkpoints) asks for strict durability', async () => {
    const proto = globalThis.IDBDatabase.prototype;
    const original = proto.transaction;
    const writes = [];
    proto.transaction = function transaction(stores, mode, options) {
      if (mode === 'readwrite') writes.push(options?.durability ?? null);
      return original.call(this, stores, mode, options);
    };
    restores.push(() => { proto.transaction = original; });
    const { store } = await openStore();
    await store.save('a', adapter());
    await store.save('a', adapter(), { overwrite: true });
    await store.rename('a', 'b');
    await store.importFiles([{ name: CONFIG_FILE, data: JSON.stringify(CONFIG) }, { name: WEIGHTS_FILE, data: WEIGHTS }], { name: 'c' });
    await store.saveCheckpoint('run', { adapterBytes: bytesOf(8), optimizerBytes: bytesOf(8), step: 1 });
    await store.deleteCheckpoint('run');
    await store.delete('b');
    store.close();
    expect(writes.length).toBeGreaterThanOrEqual(7);
    expect(writes.filter((d) => d !== 'strict')).toEqual([]);
  });
});

describe('opening', () => {
  test('separate databases by name; the schema is created once', async () => {
    const indexedDB = freshDb();
    const { store: a } = await openStore({ indexedDB, dbName: 'one' });
    const { store: b } = await openStore({ indexedDB, dbName: 'two' });
    await a.save('only-in-one', adapter());
    expect(await b.list()).toEqual([]);
    a.close();
    const { store: again } = await openStore({ indexedDB, dbName: 'one' });
    expect((await again.list()).map((r) => r.name)).toEqual(['only-in-one']);
    again.close();
    b.close();
  });
});
