// Personal LoRA adapters and training checkpoints in IndexedDB (through idb): each item saved in one transaction,
// optionally encrypted at rest with a passphrase, quota failures reported as StorageFullError.

import { wrap } from 'idb';
import {
  AlreadyExistsError, BaseModelMismatchError, IntegrityError, InvalidAdapterError, InvalidArgumentError, NotFoundError, PassphraseError,
  StorageFullError, UnsupportedError, WebLoRAError,
} from '../errors.js';
import { createKeyRecord, randomBytes, seal, unlockKeyRecord, unseal } from './crypto.js';
import { formatBytes } from '../units.js';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';

const DB_VERSION = 1;
const KEY_ID = 'master';

/**
 * What a file's ciphertext is bound to (AEAD associated data): the record it belongs to, its name and the metadata
 * shown by list(), so files moved between records, a record renamed or edited in the database, or metadata
 * swapped between records all fail authentication. Timestamps stay out: they change on overwrite.
 * @param {any} record @param {string} file
 */
function adapterAad(record, file) {
  const { id, name, baseFingerprint, baseModel, rank, targets, steps, finalLoss, sizeBytes } = record;
  return JSON.stringify({ v: 2, kind: 'adapter', file, id, name, baseFingerprint, baseModel, rank, targets, steps, finalLoss, sizeBytes });
}

/** @param {any} record @param {string} file */
function checkpointAad(record, file) {
  const { id, runId, step, position, config, sizeBytes } = record;
  return JSON.stringify({ v: 2, kind: 'checkpoint', file, id, runId, step, position, config, sizeBytes });
}

/**
 * @typedef {object} AdapterRecord what list() shows; readable even when the files are encrypted
 * @property {string} name
 * @property {string | null} baseModel human label of the base model
 * @property {string | null} baseFingerprint identifies the exact base weights (null: unknown, never checked)
 * @property {number | null} rank
 * @property {string[]} targets module names the adapter applies to
 * @property {number} sizeBytes stored size of both files (before encryption)
 * @property {number} created ms since the epoch
 * @property {number} updated
 * @property {number | null} steps
 * @property {number | null} finalLoss
 * @property {boolean} encrypted
 */

/**
 * @typedef {object} CheckpointRecord
 * @property {string} runId
 * @property {number} step
 * @property {unknown} position where training resumes (data order, epoch...), any structured-cloneable value
 * @property {unknown} config the training options
 * @property {number} sizeBytes
 * @property {number} created
 * @property {number} updated
 * @property {boolean} encrypted
 */

/**
 * @typedef {object} StoreOptions
 * @property {string} [dbName] default 'weblora'
 * @property {string} [passphrase] encrypts file contents at rest; metadata stays readable
 * @property {IDBFactory} [indexedDB] default globalThis.indexedDB (idb also needs the IDB* classes as globals:
 *   in Node, import 'fake-indexeddb/auto')
 * @property {StorageManager | null} [storage] default navigator.storage: persistence request and free space
 * @property {number} [iterations] PBKDF2 iterations when a new passphrase is set up (>= 310000)
 */

/** @typedef {{ name: string, data: Uint8Array }} AdapterFile */

/**
 * The adapter store. Every write is one readwrite transaction in which nothing but IndexedDB requests is
 * awaited (serialising and encrypting happen before it opens), so a crash or failure leaves either the old
 * state or the new one, never half an adapter.
 */
export class AdapterStore {
  /** @type {import('idb').IDBPDatabase} */
  #db;
  /** @type {CryptoKey | null} */
  #key;
  /** @type {StorageManager | null} */
  #storage;
  /** @type {Promise<boolean | null> | null} */
  #persist = null;

  /**
   * Use AdapterStore.open.
   * @param {import('idb').IDBPDatabase} db
   * @param {CryptoKey | null} key
   * @param {StorageManager | null} storage
   */
  constructor(db, key, storage) {
    this.#db = db;
    this.#key = key;
    this.#storage = storage;
  }

  /**
   * Opens (creating or upgrading) the database. With a passphrase, the first opening sets up the key; later
   * openings with another passphrase fail with PassphraseError.
   * @param {StoreOptions} [options]
   * @returns {Promise<AdapterStore>}
   */
  static async open(options = {}) {
    const { dbName = 'weblora', passphrase, iterations } = options;
    const factory = options.indexedDB ?? globalThis.indexedDB;
    if (!factory) throw new UnsupportedError('IndexedDB is not available here; pass { indexedDB } (in Node, from fake-indexeddb)');
    if (typeof globalThis.IDBRequest === 'undefined') {
      throw new UnsupportedError('the IndexedDB classes are not globals here (in Node: import "fake-indexeddb/auto")');
    }
    const db = await openDatabase(factory, dbName);
    try {
      const key = passphrase == null ? null : await unlockOrCreateKey(db, passphrase, iterations);
      const storage = options.storage === undefined ? (globalThis.navigator?.storage ?? null) : options.storage;
      return new AdapterStore(db, key, storage);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** @returns {boolean} files written by this store are encrypted */
  get encrypted() {
    return this.#key !== null;
  }

  /**
   * Resolves to the answer of navigator.storage.persist() once a write has asked for it, null when the
   * environment has no StorageManager or nothing has been written yet.
   * @returns {Promise<boolean | null>}
   */
  persistence() {
    return this.#persist ?? Promise.resolve(null);
  }

  close() {
    this.#db.close();
  }

  /**
   * Saves an adapter as its two PEFT files.
   * @param {string} name
   * @param {{ config: Record<string, unknown>, weights: Uint8Array, baseFingerprint?: string | null,
   *   baseModel?: string | null, meta?: { steps?: number | null, finalLoss?: number | null } }} adapter
   *   config is the PEFT adapter_config.json object, weights the adapter_model.safetensors bytes
   * @param {{ overwrite?: boolean }} [options] without overwrite an existing name is an AlreadyExistsError
   * @returns {Promise<AdapterRecord>}
   */
  async save(name, adapter, options = {}) {
    checkName(name, 'adapter name');
    const { config, weights, baseFingerprint = null, baseModel = null, meta = {} } = adapter ?? {};
    if (!config || typeof config !== 'object' || Array.isArray(config)) throw new InvalidArgumentError('save: config must be the adapter_config.json object');
    return this.#putAdapter(name, {
      configText: JSON.stringify(config, null, 2),
      weights: snapshot(weights, 'save: weights'),
      baseFingerprint, baseModel,
      rank: typeof config.r === 'number' ? config.r : null,
      targets: targetList(config.target_modules),
      steps: meta.steps ?? null,
      finalLoss: meta.finalLoss ?? null,
    }, !!options.overwrite);
  }

  /**
   * @param {string} name
   * @param {{ baseFingerprint?: string | null }} [options] when given (and the adapter's is known), a different
   *   fingerprint is a BaseModelMismatchError
   * @returns {Promise<{ meta: AdapterRecord, config: Record<string, any>, weights: Uint8Array }>}
   */
  async load(name, options = {}) {
    const { record, configText, weights } = await this.#readAdapter(name, options.baseFingerprint);
    return { meta: publicRecord(record), config: JSON.parse(configText), weights };
  }

  /** @returns {Promise<AdapterRecord[]>} most recently updated first */
  async list() {
    const records = await this.#read(['adapters'], (tx) => tx.objectStore('adapters').getAll());
    return records.map(publicRecord).sort(byRecency);
  }

  /**
   * @param {string} from
   * @param {string} to must not exist yet
   */
  async rename(from, to) {
    checkName(to, 'new adapter name');
    if (from === to) return;
    // Ciphertexts are bound to the name: an encrypted adapter is decrypted and sealed again under the new one
    // (before the transaction, which must not wait on WebCrypto), and written only if nothing changed meanwhile.
    const current = await this.#readAdapter(from, null);
    const renamed = { ...current.record, name: to };
    const resealed = current.record.encrypted ? {
      [CONFIG_FILE]: await seal(/** @type {CryptoKey} */ (this.#key), new TextEncoder().encode(current.configText), adapterAad(renamed, CONFIG_FILE)),
      [WEIGHTS_FILE]: await seal(/** @type {CryptoKey} */ (this.#key), current.weights, adapterAad(renamed, WEIGHTS_FILE)),
    } : null;
    await this.#write(['adapters', 'files', 'keys'], 0, `renaming "${from}"`, async (tx) => {
      await this.#refusePlaintextWrite(tx, `adapter "${to}"`);
      const adapters = tx.objectStore('adapters');
      const files = tx.objectStore('files');
      const [record, taken, data] = await Promise.all([adapters.get(from), adapters.getKey(to), files.get(from)]);
      if (!record) throw new NotFoundError(`no adapter named "${from}"`, { details: { name: from } });
      if (taken !== undefined) throw new AlreadyExistsError(`an adapter named "${to}" already exists`, { details: { name: to } });
      if (record.id !== current.record.id) throw new AlreadyExistsError(`adapter "${from}" was replaced while it was being renamed; try again`, { details: { name: from } });
      const r = requests();
      r.add(adapters.delete(from));
      r.add(files.delete(from));
      r.add(adapters.put(renamed));
      r.add(files.put(resealed ?? data, to));
      await r.all();
    });
  }

  /**
   * @param {string} name
   * @returns {Promise<boolean>} whether it existed
   */
  async delete(name) {
    return this.#write(['adapters', 'files'], 0, `deleting "${name}"`, async (tx) => {
      const adapters = tx.objectStore('adapters');
      const existed = (await adapters.getKey(name)) !== undefined;
      const r = requests();
      r.add(adapters.delete(name));
      r.add(tx.objectStore('files').delete(name));
      await r.all();
      return existed;
    });
  }

  /**
   * The adapter as PEFT files, byte for byte as stored (decrypted).
   * @param {string} name
   * @returns {Promise<AdapterFile[]>}
   */
  async exportFiles(name) {
    const { configText, weights } = await this.#readAdapter(name, null);
    return [{ name: CONFIG_FILE, data: new TextEncoder().encode(configText) }, { name: WEIGHTS_FILE, data: weights }];
  }

  /**
   * Imports PEFT files (e.g. from a file picker or another tool). adapter_config.json must describe a LoRA
   * adapter; `validate` (supplied by the engine, whose parser is the authority on safetensors) checks the rest
   * and throws to reject.
   * @param {Iterable<{ name: string, data?: Uint8Array | ArrayBuffer | string } | Blob>} files
   *   {name, data} pairs or File objects; names may carry a path
   * @param {{ name: string, baseFingerprint?: string | null, baseModel?: string | null,
   *   validate?: (files: AdapterFile[]) => unknown, overwrite?: boolean }} options
   * @returns {Promise<AdapterRecord>}
   */
  async importFiles(files, options) {
    const { name, baseFingerprint = null, validate, overwrite = false } = options ?? /** @type {any} */ ({});
    checkName(name, 'importFiles: options.name');
    const list = await Promise.all([...files].map(toAdapterFile));
    const configFile = list.find((f) => f.name === CONFIG_FILE);
    const weightsFile = list.find((f) => f.name === WEIGHTS_FILE);
    if (!configFile || !weightsFile) {
      throw new InvalidAdapterError(`a PEFT adapter needs ${CONFIG_FILE} and ${WEIGHTS_FILE}; got ${list.map((f) => f.name).join(', ') || 'no files'}`);
    }
    let configText;
    let config;
    try {
      configText = new TextDecoder('utf-8', { fatal: true }).decode(configFile.data);
      config = JSON.parse(configText);
    } catch (cause) {
      throw new InvalidAdapterError(`${CONFIG_FILE} is not valid UTF-8 JSON: ${/** @type {Error} */ (cause).message}`, { cause });
    }
    checkLoraConfig(config);
    if (validate) {
      try {
        await validate([configFile, weightsFile]);
      } catch (cause) {
        if (cause instanceof WebLoRAError) throw cause;
        throw new InvalidAdapterError(`the adapter files were rejected: ${/** @type {Error} */ (cause)?.message ?? cause}`, { cause });
      }
    }
    return this.#putAdapter(name, {
      configText,
      weights: weightsFile.data,
      baseFingerprint,
      baseModel: options.baseModel ?? (typeof config.base_model_name_or_path === 'string' ? config.base_model_name_or_path : null),
      rank: config.r,
      targets: targetList(config.target_modules),
      steps: null,
      finalLoss: null,
    }, overwrite);
  }

  /**
   * Saves (replacing) the checkpoint of a training run.
   * @param {string} runId
   * @param {{ adapterBytes: Uint8Array, optimizerBytes: Uint8Array, position?: unknown, step: number,
   *   config?: unknown }} checkpoint
   * @returns {Promise<CheckpointRecord>}
   */
  async saveCheckpoint(runId, checkpoint) {
    checkName(runId, 'runId');
    const { position = null, step, config = null } = checkpoint ?? {};
    if (!Number.isSafeInteger(step) || step < 0) throw new InvalidArgumentError('saveCheckpoint: step must be a non-negative integer');
    const adapterBytes = snapshot(checkpoint.adapterBytes, 'saveCheckpoint: adapterBytes');
    const optimizerBytes = snapshot(checkpoint.optimizerBytes, 'saveCheckpoint: optimizerBytes');
    const id = newId();
    const now = Date.now();
    const record = {
      runId, id, step, position, config,
      sizeBytes: adapterBytes.byteLength + optimizerBytes.byteLength,
      created: now, updated: now, encrypted: this.#key !== null,
    };
    const blobs = {
      adapter: await this.#sealIfKeyed(adapterBytes, checkpointAad(record, 'adapter')),
      optimizer: await this.#sealIfKeyed(optimizerBytes, checkpointAad(record, 'optimizer')),
    };
    this.#requestPersistence();
    await this.#write(['checkpoints', 'checkpointFiles', 'keys'], record.sizeBytes, `checkpoint "${runId}"`, async (tx) => {
      await this.#refusePlaintextWrite(tx, `checkpoint "${runId}"`);
      const meta = tx.objectStore('checkpoints');
      const existing = await meta.get(runId);
      if (existing) record.created = existing.created;
      const r = requests();
      r.add(meta.put(record));
      r.add(tx.objectStore('checkpointFiles').put(blobs, runId));
      await r.all();
    });
    return publicRecord(record);
  }

  /**
   * @param {string} runId
   * @returns {Promise<(CheckpointRecord & { adapterBytes: Uint8Array, optimizerBytes: Uint8Array }) | null>}
   *   null when the run has no checkpoint
   */
  async loadCheckpoint(runId) {
    const [record, blobs] = await this.#read(['checkpoints', 'checkpointFiles'], (tx) => Promise.all([
      tx.objectStore('checkpoints').get(runId), tx.objectStore('checkpointFiles').get(runId)]));
    if (!record) return null;
    if (!blobs) throw new IntegrityError(`checkpoint "${runId}" has no data`);
    const what = `checkpoint "${runId}"`;
    await this.#checkRecord(record, what);
    return {
      ...publicRecord(record),
      adapterBytes: await this.#openIfSealed(record, blobs.adapter, checkpointAad(record, 'adapter'), what),
      optimizerBytes: await this.#openIfSealed(record, blobs.optimizer, checkpointAad(record, 'optimizer'), what),
    };
  }

  /** @param {string} runId @returns {Promise<boolean>} whether it existed */
  async deleteCheckpoint(runId) {
    return this.#write(['checkpoints', 'checkpointFiles'], 0, `deleting checkpoint "${runId}"`, async (tx) => {
      const meta = tx.objectStore('checkpoints');
      const existed = (await meta.getKey(runId)) !== undefined;
      const r = requests();
      r.add(meta.delete(runId));
      r.add(tx.objectStore('checkpointFiles').delete(runId));
      await r.all();
      return existed;
    });
  }

  /** @returns {Promise<CheckpointRecord[]>} most recently updated first */
  async listCheckpoints() {
    const records = await this.#read(['checkpoints'], (tx) => tx.objectStore('checkpoints').getAll());
    return records.map(publicRecord).sort(byRecency);
  }

  /**
   * @param {string} name
   * @param {{ configText: string, weights: Uint8Array, baseFingerprint: string | null, baseModel: string | null,
   *   rank: number | null, targets: string[], steps: number | null, finalLoss: number | null }} a
   * @param {boolean} overwrite
   * @returns {Promise<AdapterRecord>}
   */
  async #putAdapter(name, a, overwrite) {
    const configBytes = new TextEncoder().encode(a.configText);
    const id = newId();
    const now = Date.now();
    const record = {
      name, id,
      baseModel: a.baseModel, baseFingerprint: a.baseFingerprint, rank: a.rank, targets: a.targets,
      sizeBytes: configBytes.byteLength + a.weights.byteLength,
      created: now, updated: now, steps: a.steps, finalLoss: a.finalLoss,
      encrypted: this.#key !== null,
    };
    // Encrypt before the transaction: awaiting WebCrypto inside it would let it auto-commit half done.
    const files = {
      [CONFIG_FILE]: this.#key ? await seal(this.#key, configBytes, adapterAad(record, CONFIG_FILE)) : a.configText,
      [WEIGHTS_FILE]: await this.#sealIfKeyed(a.weights, adapterAad(record, WEIGHTS_FILE)),
    };
    this.#requestPersistence();
    await this.#write(['adapters', 'files', 'keys'], record.sizeBytes, `adapter "${name}"`, async (tx) => {
      await this.#refusePlaintextWrite(tx, `adapter "${name}"`);
      const adapters = tx.objectStore('adapters');
      const existing = await adapters.get(name);
      if (existing && !overwrite) {
        throw new AlreadyExistsError(`an adapter named "${name}" already exists (pass { overwrite: true } to replace it)`, { details: { name } });
      }
      if (existing) record.created = existing.created;
      const r = requests();
      r.add(adapters.put(record));
      r.add(tx.objectStore('files').put(files, name));
      await r.all();
    });
    return publicRecord(record);
  }

  /**
   * @param {string} name
   * @param {string | null | undefined} baseFingerprint
   */
  async #readAdapter(name, baseFingerprint) {
    const [record, files] = await this.#read(['adapters', 'files'], (tx) => Promise.all([
      tx.objectStore('adapters').get(name), tx.objectStore('files').get(name)]));
    if (!record) throw new NotFoundError(`no adapter named "${name}"`, { details: { name } });
    if (baseFingerprint != null && record.baseFingerprint != null && record.baseFingerprint !== baseFingerprint) {
      throw new BaseModelMismatchError(
        `adapter "${name}" was trained on another base model (${record.baseModel ?? 'unnamed'}, fingerprint ${record.baseFingerprint}); the loaded model's fingerprint is ${baseFingerprint}`,
        { details: { name, expected: record.baseFingerprint, actual: baseFingerprint, baseModel: record.baseModel } });
    }
    if (!files) throw new IntegrityError(`adapter "${name}" has no files`);
    await this.#checkRecord(record, `adapter "${name}"`);
    const what = `adapter "${name}"`;
    const configText = record.encrypted
      ? new TextDecoder().decode(await this.#openIfSealed(record, files[CONFIG_FILE], adapterAad(record, CONFIG_FILE), what))
      : files[CONFIG_FILE];
    const weights = await this.#openIfSealed(record, files[WEIGHTS_FILE], adapterAad(record, WEIGHTS_FILE), what);
    return { record, configText, weights };
  }

  /**
   * Before a record's files are read: it is encrypted when the store is (a
   * plaintext record in an encrypted store was planted or downgraded) and the key to read it is here.
   * @param {{ encrypted: boolean }} record @param {string} what
   */
  async #checkRecord(record, what) {
    if (!record.encrypted && (this.#key || (await this.#storeIsEncrypted()))) {
      throw new IntegrityError(`${what} is stored in plaintext in an encrypted store: it was not written by this store (planted or downgraded) and is refused`,
        { code: 'TAMPERED' });
    }
    if (record.encrypted && !this.#key) {
      throw new PassphraseError(`${what} is encrypted: open the store with its passphrase`, { code: 'PASSPHRASE_REQUIRED' });
    }
  }

  /** @returns {Promise<boolean>} a passphrase has been set up for this store (by this or any other opening) */
  async #storeIsEncrypted() {
    return (await this.#db.getKey('keys', KEY_ID)) !== undefined;
  }

  /** @param {Uint8Array} bytes @param {string} aad */
  async #sealIfKeyed(bytes, aad) {
    return this.#key ? seal(this.#key, bytes, aad) : bytes;
  }

  /**
   * @param {{ encrypted: boolean }} record @param {any} stored @param {string} aad @param {string} what
   * @returns {Promise<Uint8Array>}
   */
  async #openIfSealed(record, stored, aad, what) {
    if (!record.encrypted) return asBytes(stored);
    try {
      return await unseal(/** @type {CryptoKey} */ (this.#key), { iv: asBytes(stored?.iv), data: asBytes(stored?.data) }, aad);
    } catch (cause) {
      throw new IntegrityError(`${what}: its encrypted data does not match its record (files swapped between records, metadata `
        + 'edited, or corrupted); it is refused', { cause, code: 'TAMPERED' });
    }
  }

  /**
   * Inside a write transaction (which includes the 'keys' store): a store with a passphrase is never written in
   * plaintext, even when the passphrase was set up by another tab after this store was opened.
   * @param {any} tx @param {string} what
   */
  async #refusePlaintextWrite(tx, what) {
    if (this.#key) return;
    if ((await tx.objectStore('keys').getKey(KEY_ID)) !== undefined) {
      throw new PassphraseError(`cannot write ${what}: this store is encrypted, and it was opened without its passphrase (it can list, not write)`,
        { code: 'PASSPHRASE_REQUIRED' });
    }
  }

  /**
   * Runs fn in a readonly transaction.
   * @template T
   * @param {string[]} stores
   * @param {(tx: any) => Promise<T>} fn
   * @returns {Promise<T>}
   */
  async #read(stores, fn) {
    const tx = this.#db.transaction(stores, 'readonly');
    tx.done.catch(() => {});
    return fn(tx);
  }

  /**
   * Runs fn in one readwrite transaction and waits for it to commit; on any failure the transaction is
   * aborted, so none of its writes happen. Quota failures (at a request or at commit) become StorageFullError.
   * @template T
   * @param {string[]} stores
   * @param {number} neededBytes
   * @param {string} what for messages
   * @param {(tx: any) => Promise<T>} fn
   * @returns {Promise<T>}
   */
  async #write(stores, neededBytes, what, fn) {
    // 'strict' asks the browser to flush to disk before reporting the commit (where supported; ignored elsewhere).
    const tx = this.#db.transaction(stores, 'readwrite', { durability: 'strict' });
    const done = tx.done;
    done.catch(() => {});
    try {
      const result = await fn(tx);
      await done;
      return result;
    } catch (err) {
      try { tx.abort(); } catch { /* already aborted or committed */ }
      await done.catch(() => {});
      if (isQuotaError(err)) throw await this.#storageFull(err, neededBytes, what);
      throw err;
    }
  }

  /** @param {unknown} cause @param {number} needed @param {string} what */
  async #storageFull(cause, needed, what) {
    /** @type {{ quota?: number, usage?: number }} */
    let est = {};
    try {
      est = (await this.#storage?.estimate?.()) ?? {};
    } catch { /* no estimate available */ }
    const quota = typeof est.quota === 'number' ? est.quota : null;
    const usage = typeof est.usage === 'number' ? est.usage : null;
    const available = quota !== null && usage !== null ? Math.max(0, quota - usage) : null;
    const free = available === null ? 'free space unknown' : `${formatBytes(available)} free of ${formatBytes(/** @type {number} */ (quota))}`;
    return new StorageFullError(`not enough storage for ${what}: it needs ${formatBytes(needed)} (${needed} bytes), ${free}; nothing was changed`, {
      cause, details: { needed, available, quota, usage },
    });
  }

  /** Asks once for persistent storage so the browser does not evict adapters under storage pressure. */
  #requestPersistence() {
    if (this.#persist || !this.#storage || typeof this.#storage.persist !== 'function') return;
    const storage = this.#storage;
    this.#persist = (async () => {
      try {
        if (typeof storage.persisted === 'function' && (await storage.persisted())) return true;
        return await storage.persist();
      } catch {
        return null;
      }
    })();
  }
}

/**
 * @param {IDBFactory} factory
 * @param {string} name
 * @returns {Promise<import('idb').IDBPDatabase>}
 */
async function openDatabase(factory, name) {
  // idb's openDB always uses the global indexedDB; wrapping the request keeps the factory injectable.
  const request = factory.open(name, DB_VERSION);
  request.addEventListener('upgradeneeded', (event) => {
    const db = request.result;
    if (event.oldVersion < 1) {
      db.createObjectStore('adapters', { keyPath: 'name' });
      db.createObjectStore('files');
      db.createObjectStore('checkpoints', { keyPath: 'runId' });
      db.createObjectStore('checkpointFiles');
      db.createObjectStore('keys');
    }
  });
  const db = /** @type {import('idb').IDBPDatabase} */ (await wrap(request));
  // Another tab wants a newer schema: step aside rather than block it forever.
  db.addEventListener('versionchange', () => db.close());
  return db;
}

/**
 * @param {import('idb').IDBPDatabase} db
 * @param {string} passphrase
 * @param {number | undefined} iterations
 */
async function unlockOrCreateKey(db, passphrase, iterations) {
  const stored = await db.get('keys', KEY_ID);
  if (stored) return unlockKeyRecord(normalizeKeyRecord(stored), passphrase);
  const { record, key } = await createKeyRecord(passphrase, iterations);
  try {
    await db.add('keys', record, KEY_ID);
    return key;
  } catch (err) {
    // Another tab set a passphrase between our read and write: theirs wins and ours must match it.
    if (/** @type {any} */ (err)?.name !== 'ConstraintError') throw err;
    try {
      return await unlockKeyRecord(normalizeKeyRecord(await db.get('keys', KEY_ID)), passphrase);
    } catch (cause) {
      if (!(cause instanceof PassphraseError)) throw cause;
      throw new PassphraseError('another tab or process set up a different passphrase for this adapter store at the same moment; '
        + 'it was kept: open the store with that passphrase', { cause, code: 'PASSPHRASE_CONFLICT' });
    }
  }
}

/** @param {any} r */
function normalizeKeyRecord(r) {
  return { ...r, salt: asBytes(r.salt), verifier: { iv: asBytes(r.verifier.iv), data: asBytes(r.verifier.data) } };
}

/**
 * Collects the requests of a transaction. If issuing one throws or one fails, the transaction aborts and the
 * others reject too: those rejections are observed here so they are never reported as unhandled, while all()
 * still rejects with the first failure.
 */
function requests() {
  /** @type {Promise<unknown>[]} */
  const list = [];
  return {
    /** @param {Promise<unknown>} p */
    add(p) {
      p.catch(() => {});
      list.push(p);
    },
    all() {
      return Promise.all(list);
    },
  };
}

/** @param {unknown} err */
function isQuotaError(err) {
  const e = /** @type {any} */ (err);
  if (!e || typeof e !== 'object') return false;
  if (e.name === 'QuotaExceededError' || e.name === 'NS_ERROR_DOM_QUOTA_REACHED') return true;
  if (e.code === 22 && e.name !== 'NotFoundError') return true; // legacy DOMException.QUOTA_EXCEEDED_ERR
  return e.name === 'UnknownError' && /quota/i.test(String(e.message));
}

/**
 * @param {unknown} name
 * @param {string} what
 */
function checkName(name, what) {
  if (typeof name !== 'string' || name.length === 0 || name.length > 512) {
    throw new InvalidArgumentError(`${what} must be a non-empty string of at most 512 characters`);
  }
}

/**
 * A private copy: the caller may keep changing its buffer (training goes on), and a view into a large buffer
 * (wasm memory) would otherwise make IndexedDB clone the whole buffer.
 * @param {unknown} bytes
 * @param {string} what
 */
function snapshot(bytes, what) {
  if (bytes instanceof ArrayBuffer) return new Uint8Array(bytes.slice(0));
  if (ArrayBuffer.isView(bytes)) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength).slice();
  throw new InvalidArgumentError(`${what} must be a Uint8Array`);
}

/** @param {any} v @returns {Uint8Array} */
function asBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new IntegrityError('stored data is not binary');
}

/** @param {unknown} t @returns {string[]} */
function targetList(t) {
  if (typeof t === 'string') return [t];
  return Array.isArray(t) ? t.filter((x) => typeof x === 'string') : [];
}

/** @param {any} f @returns {Promise<AdapterFile>} */
async function toAdapterFile(f) {
  if (!f || typeof f.name !== 'string') throw new InvalidArgumentError('importFiles: each file needs a name');
  const name = f.name.slice(Math.max(f.name.lastIndexOf('/'), f.name.lastIndexOf('\\')) + 1);
  let data = f.data;
  if (data === undefined && typeof f.arrayBuffer === 'function') data = await f.arrayBuffer();
  if (typeof data === 'string') return { name, data: new TextEncoder().encode(data) };
  if (data && typeof data === 'object' && typeof data.arrayBuffer === 'function' && !ArrayBuffer.isView(data)) {
    data = await data.arrayBuffer();
  }
  return { name, data: snapshot(data, `importFiles: ${name}`) };
}

/**
 * Rejects configs that are not PEFT LoRA adapters before anything is stored.
 * @param {any} c
 */
function checkLoraConfig(c) {
  const bad = (/** @type {string} */ why) => new InvalidAdapterError(`${CONFIG_FILE}: ${why}`);
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw bad('not a JSON object');
  if (c.peft_type !== 'LORA') throw bad(`peft_type is ${JSON.stringify(c.peft_type)}, only "LORA" adapters are supported`);
  if (!Number.isInteger(c.r) || c.r <= 0) throw bad(`r must be a positive integer, got ${JSON.stringify(c.r)}`);
  const t = c.target_modules;
  const okTargets = (typeof t === 'string' && t.length > 0)
    || (Array.isArray(t) && t.length > 0 && t.every((x) => typeof x === 'string' && x.length > 0));
  if (!okTargets) throw bad('target_modules must be a non-empty list of module names (or a regex string)');
  if (c.lora_alpha !== undefined && (typeof c.lora_alpha !== 'number' || !Number.isFinite(c.lora_alpha))) {
    throw bad('lora_alpha must be a number');
  }
}

/**
 * Internal ids (which bind ciphertexts to their record) stay inside the store.
 * @param {any} record
 * @returns {any}
 */
function publicRecord({ id: _id, ...rest }) {
  return rest;
}

/** @param {{ updated: number, name?: string, runId?: string }} a @param {{ updated: number, name?: string, runId?: string }} b */
function byRecency(a, b) {
  if (a.updated !== b.updated) return b.updated - a.updated;
  const ka = a.name ?? a.runId ?? '';
  const kb = b.name ?? b.runId ?? '';
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function newId() {
  return Array.from(randomBytes(16), (b) => b.toString(16).padStart(2, '0')).join('');
}
