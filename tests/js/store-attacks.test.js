// Encryption at rest is per store: someone who can write to the database (another script on the origin, a tampered
// profile) must not get plaintext written into an encrypted store, plant plaintext records, or swap records and
// metadata; two openings setting passphrases at once resolve clearly. On fake-indexeddb.
import 'fake-indexeddb/auto';
import { describe, expect, test } from '@jest/globals';
import { IDBFactory } from 'fake-indexeddb';
import { wrap } from 'idb';
import { AdapterStore, CONFIG_FILE, WEIGHTS_FILE } from '../../web/storage/store.js';
import { IntegrityError, PassphraseError } from '../../web/errors.js';

const CONFIG = { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'] };
const weights = (seed) => Uint8Array.from({ length: 512 }, (_, i) => (i * 31 + seed) & 0xff);
const adapter = (seed, meta = {}) => ({ config: CONFIG, weights: weights(seed), baseFingerprint: 'fp-base', baseModel: 'base', meta: { steps: 10, finalLoss: 1.5, ...meta } });
const open = (indexedDB, passphrase) => AdapterStore.open({ indexedDB, storage: null, passphrase });

async function raw(indexedDB, fn) {
  const db = await wrap(indexedDB.open('weblora'));
  try {
    return await fn(db);
  } finally {
    db.close();
  }
}

describe('an encrypted store', () => {
  test('opened without its passphrase it lists but never writes plaintext', async () => {
    const indexedDB = new IDBFactory();
    const keyed = await open(indexedDB, 'pw');
    await keyed.save('work', adapter(1));
    keyed.close();
    const locked = await open(indexedDB, undefined);
    expect((await locked.list()).map((r) => [r.name, r.encrypted])).toEqual([['work', true]]);
    await expect(locked.save('leak', adapter(2))).rejects.toMatchObject({ name: 'PassphraseError', code: 'PASSPHRASE_REQUIRED',
      message: expect.stringMatching(/cannot write adapter "leak": this store is encrypted, and it was opened without its passphrase/) });
    await expect(locked.saveCheckpoint('run', { adapterBytes: weights(3), optimizerBytes: weights(4), step: 1 }))
      .rejects.toMatchObject({ code: 'PASSPHRASE_REQUIRED' });
    await expect(locked.rename('work', 'other')).rejects.toMatchObject({ code: 'PASSPHRASE_REQUIRED' });
    expect(await raw(indexedDB, (db) => db.getAllKeys('files'))).toEqual(['work']);
    locked.close();
  });

  test('a passphrase set up by another opening after this one opened still stops plaintext writes', async () => {
    const indexedDB = new IDBFactory();
    const early = await open(indexedDB, undefined);
    (await open(indexedDB, 'pw')).close();
    await expect(early.save('late', adapter(5))).rejects.toMatchObject({ code: 'PASSPHRASE_REQUIRED' });
    early.close();
  });

  test('a planted plaintext record is refused, with or without the passphrase', async () => {
    const indexedDB = new IDBFactory();
    const store = await open(indexedDB, 'pw');
    await store.save('real', adapter(1));
    const real = await raw(indexedDB, (db) => db.get('adapters', 'real'));
    await raw(indexedDB, async (db) => {
      await db.put('adapters', { ...real, name: 'planted', id: 'x1', encrypted: false });
      await db.put('files', { [CONFIG_FILE]: JSON.stringify(CONFIG), [WEIGHTS_FILE]: weights(9) }, 'planted');
      // and a downgrade: a real record switched to plaintext
      await db.put('adapters', { ...real, encrypted: false });
    });
    for (const name of ['planted', 'real']) {
      await expect(store.load(name)).rejects.toMatchObject({ name: 'IntegrityError', code: 'TAMPERED',
        message: expect.stringMatching(new RegExp(`adapter "${name}" is stored in plaintext in an encrypted store`)) });
    }
    store.close();
    const locked = await open(indexedDB, undefined);
    await expect(locked.load('planted')).rejects.toMatchObject({ code: 'TAMPERED' });
    locked.close();
  });

  test('swapped records and edited metadata fail authentication; a rename re-binds', async () => {
    const indexedDB = new IDBFactory();
    const store = await open(indexedDB, 'pw');
    await store.save('work', adapter(1, { steps: 100 }));
    await store.save('home', adapter(2, { steps: 200 }));
    const [work, home, workFiles, homeFiles] = await raw(indexedDB, (db) => Promise.all([
      db.get('adapters', 'work'), db.get('adapters', 'home'), db.get('files', 'work'), db.get('files', 'home')]));
    // Whole records swapped (record and files together), keeping the names as keys.
    await raw(indexedDB, async (db) => {
      await db.put('adapters', { ...home, name: 'work' });
      await db.put('files', homeFiles, 'work');
    });
    await expect(store.load('work')).rejects.toMatchObject({ code: 'TAMPERED', message: expect.stringMatching(/does not match its record/) });
    // Metadata edited (steps, fingerprint) on the right files.
    for (const edit of [{ steps: 999 }, { baseFingerprint: 'fp-other' }, { finalLoss: 0.01 }]) {
      await raw(indexedDB, async (db) => {
        await db.put('adapters', { ...work, ...edit });
        await db.put('files', workFiles, 'work');
      });
      await expect(store.load('work')).rejects.toThrow(IntegrityError);
    }
    // Restored: it loads again, and a rename re-binds it to the new name.
    await raw(indexedDB, (db) => db.put('adapters', work));
    expect((await store.load('work')).weights).toEqual(weights(1));
    await store.rename('work', 'office');
    expect((await store.load('office')).weights).toEqual(weights(1));
    store.close();
  });

  test('a checkpoint moved to another run or edited fails authentication', async () => {
    const indexedDB = new IDBFactory();
    const store = await open(indexedDB, 'pw');
    await store.saveCheckpoint('a', { adapterBytes: weights(1), optimizerBytes: weights(2), step: 3, position: { epoch: 0, index: 4 } });
    const rec = await raw(indexedDB, (db) => db.get('checkpoints', 'a'));
    await raw(indexedDB, (db) => db.put('checkpoints', { ...rec, step: 30 }));
    await expect(store.loadCheckpoint('a')).rejects.toMatchObject({ code: 'TAMPERED' });
    store.close();
  });

  test('two openings setting up passphrases at once: the same one works for both, another is told clearly', async () => {
    const same = new IDBFactory();
    const [a, b] = await Promise.all([open(same, 'pw'), open(same, 'pw')]);
    await a.save('x', adapter(1));
    expect((await b.load('x')).weights).toEqual(weights(1));
    a.close();
    b.close();
    const other = new IDBFactory();
    const results = await Promise.allSettled([open(other, 'first'), open(other, 'second')]);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    expect(failed[0].reason).toBeInstanceOf(PassphraseError);
    expect(failed[0].reason.code).toBe('PASSPHRASE_CONFLICT');
    expect(failed[0].reason.message).toMatch(/another tab or process set up a different passphrase .* at the same moment/);
    results.filter((r) => r.status === 'fulfilled').forEach((r) => r.value.close());
  });
});
