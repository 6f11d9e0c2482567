// Cache API side of model streaming: which cache to use, writing an entry while its bytes stream past (committed
// only when the caller says the file is complete and verified), and listing/deleting cached models.

import { InvalidArgumentError } from '../errors.js';

/** Bump the suffix when the stored layout changes, so old entries are simply not found. */
export const DEFAULT_CACHE_NAME = 'weblora-models-v1';

/** Metadata stored as headers on each cached Response (the Cache API keeps headers, nothing else). */
export const CACHE_HEADERS = Object.freeze({
  base: 'x-weblora-base',
  file: 'x-weblora-file',
  size: 'x-weblora-size',
  sha256: 'x-weblora-sha256',
  cachedAt: 'x-weblora-cached-at',
  // The server's validators for the cached version, so a later load can ask whether it changed.
  etag: 'x-weblora-etag',
  lastModified: 'x-weblora-last-modified',
});

/**
 * @typedef {object} CacheOptions
 * @property {CacheStorage | Cache | null | false} [cache] a CacheStorage (like globalThis.caches), an opened
 *   Cache, or null/false for no caching; undefined means globalThis.caches when the environment has it
 * @property {string} [cacheName] which cache of the CacheStorage to use (default 'weblora-models-v1')
 * @property {(url: string) => string} [cacheKey] maps a file URL to its cache key (default: the URL itself)
 */

/**
 * @typedef {object} CachedFile
 * @property {string} url the cache key
 * @property {string} file file name within the model
 * @property {number} size bytes
 * @property {string | null} sha256 hex digest when it was verified while caching
 * @property {number | null} cachedAt ms since the epoch
 */

/**
 * @typedef {object} CachedModel
 * @property {string} base the model's base URL (or its single file's URL)
 * @property {number} size total bytes of its cached files
 * @property {CachedFile[]} files
 */

/**
 * Resolves the cache options to an opened Cache, or null when caching is off or unavailable.
 * @param {CacheOptions} [options]
 * @returns {Promise<Cache | null>}
 */
export async function openCache(options = {}) {
  const { cacheName = DEFAULT_CACHE_NAME } = options;
  let cache = options.cache;
  if (cache === null || cache === false) return null;
  const implicit = cache === undefined;
  if (implicit) cache = /** @type {any} */ (globalThis).caches;
  if (!cache) return null;
  if (typeof (/** @type {any} */ (cache).open) === 'function') {
    try {
      return await /** @type {CacheStorage} */ (cache).open(cacheName);
    } catch (err) {
      // The ambient CacheStorage can refuse (e.g. SecurityError in some private modes): then run uncached.
      // An injected one that fails is a configuration error the caller should see.
      if (implicit) return null;
      throw err;
    }
  }
  if (typeof (/** @type {any} */ (cache).match) === 'function' && typeof (/** @type {any} */ (cache).put) === 'function') {
    return /** @type {Cache} */ (cache);
  }
  throw new InvalidArgumentError('options.cache must be a CacheStorage, a Cache, or null');
}

/**
 * @param {CacheOptions} options
 * @returns {(url: string) => string}
 */
export function cacheKeyFn(options) {
  return typeof options.cacheKey === 'function' ? options.cacheKey : (url) => url;
}

/**
 * The directory part of a URL, with its trailing slash: the default grouping key of a file.
 * @param {string} url
 */
export function urlDirectory(url) {
  const u = new URL(url);
  u.search = '';
  u.hash = '';
  return u.href.slice(0, u.href.lastIndexOf('/') + 1);
}

/**
 * Streams bytes into cache.put while they are downloaded, so a file is never held whole in memory. The entry
 * only becomes visible when commit() closes the body; abort() errors the body, which makes cache.put reject
 * without storing anything (and the key is deleted as well, in case an implementation kept a partial entry).
 * Offsets make it safe to feed bytes twice or out of order: only the contiguous extension is written, and a gap
 * disables the writer for good.
 */
export class CacheWriter {
  /** @type {ReadableStreamDefaultController<Uint8Array> | null} */
  #controller = null;
  /** @type {Promise<void> | null} */
  #put = null;
  /** @type {(() => void) | null} */
  #wake = null;
  /** @type {unknown} */
  #failure = null;
  #written = 0;
  #broken = false;
  #finished = false;

  /**
   * @param {Cache} cache
   * @param {string} key
   * @param {Record<string, string> | (() => Record<string, string>)} headers evaluated when the first byte
   *   arrives, by which time the file's size is usually known
   * @param {number} [highWaterMark] bytes queued ahead of the cache before writes wait (backpressure)
   */
  constructor(cache, key, headers, highWaterMark = 8 << 20) {
    this.cache = cache;
    this.key = key;
    this.headers = headers;
    this.highWaterMark = highWaterMark;
  }

  /** True while every byte from offset 0 up to `written` went in and nothing failed. */
  get usable() {
    return !this.#broken && this.#failure === null && !this.#finished;
  }

  /** @returns {number} bytes fed so far */
  get written() {
    return this.#written;
  }

  /** @returns {unknown} why the cache refused the entry, if it did */
  get failure() {
    return this.#failure;
  }

  #start() {
    const body = new ReadableStream({
      start: (c) => { this.#controller = c; },
      pull: () => { this.#release(); },
      cancel: (reason) => {
        this.#failure ??= reason ?? new DOMException('the cache stopped reading', 'AbortError');
        this.#release();
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: this.highWaterMark }));
    this.#put = Promise.resolve()
      .then(() => {
        const headers = typeof this.headers === 'function' ? this.headers() : this.headers;
        return this.cache.put(this.key, new Response(body, { status: 200, headers }));
      })
      .catch((err) => {
        this.#failure ??= err;
        this.#release();
        throw err;
      });
    // Observed in commit/abort; this keeps an early rejection from being reported as unhandled meanwhile.
    this.#put.catch(() => {});
  }

  #release() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /**
   * Appends the part of `chunk` that extends the contiguous prefix written so far.
   * @param {Uint8Array} chunk
   * @param {number} offset absolute offset of chunk[0] in the file
   * @param {AbortSignal} [signal]
   */
  async feed(chunk, offset, signal) {
    if (!this.usable) return;
    if (offset > this.#written) {
      await this.#discard(new DOMException('gap in cached bytes: the entry is dropped', 'AbortError'));
      this.#broken = true;
      return;
    }
    const skip = this.#written - offset;
    if (skip >= chunk.byteLength) return;
    if (!this.#put) this.#start();
    // A copy, because the caller's consumer may reuse or transfer its chunk while the cache still queues it.
    const part = chunk.slice(skip);
    this.#controller?.enqueue(part);
    this.#written += part.byteLength;
    while (this.usable && (this.#controller?.desiredSize ?? 1) <= 0) {
      if (signal?.aborted) return;
      await new Promise((resolve) => {
        const wake = () => {
          signal?.removeEventListener('abort', wake);
          resolve(undefined);
        };
        this.#wake = wake;
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /**
   * Makes the entry visible. Cache failures (quota...) are reported, not thrown: the download itself worked.
   * @returns {Promise<unknown>} null on success, otherwise the reason the cache refused the entry
   */
  async commit() {
    if (this.#finished) return this.#failure;
    this.#finished = true;
    if (this.#broken) return this.#failure;
    if (!this.#put) this.#start(); // an empty file never fed a byte
    if (this.#failure === null) {
      try {
        this.#controller?.close();
        await this.#put;
      } catch (err) {
        this.#failure ??= err;
      }
    }
    if (this.#failure !== null) await this.#deleteQuietly();
    return this.#failure;
  }

  /**
   * Drops the entry: the body errors, so cache.put rejects without storing it.
   * @param {unknown} reason
   */
  async abort(reason) {
    if (this.#finished) return;
    this.#finished = true;
    await this.#discard(reason);
  }

  /** @param {unknown} reason */
  async #discard(reason) {
    if (!this.#put) return;
    try { this.#controller?.error(reason ?? new DOMException('cache write aborted', 'AbortError')); } catch { /* already closed */ }
    await this.#put.catch(() => {});
    await this.#deleteQuietly();
  }

  async #deleteQuietly() {
    try { await this.cache.delete(this.key); } catch { /* nothing to remove */ }
  }
}

/**
 * Reads the weblora metadata of a cached response without reading its body (unless the size is missing).
 * @param {string} url
 * @param {Response} res
 * @returns {Promise<CachedFile & { base: string }>}
 */
async function describeEntry(url, res) {
  const h = res.headers;
  let size = Number(h.get(CACHE_HEADERS.size) ?? h.get('content-length') ?? NaN);
  if (!Number.isFinite(size)) size = (await res.blob()).size;
  else await res.body?.cancel();
  let base = h.get(CACHE_HEADERS.base);
  if (!base) {
    try { base = urlDirectory(url); } catch { base = url; }
  }
  // Header values must be Latin-1, so the file name is stored URI-encoded.
  const file = safeDecode(h.get(CACHE_HEADERS.file) ?? url.slice(url.lastIndexOf('/') + 1));
  const cachedAt = Number(h.get(CACHE_HEADERS.cachedAt) ?? NaN);
  return { base, url, file, size, sha256: h.get(CACHE_HEADERS.sha256), cachedAt: Number.isFinite(cachedAt) ? cachedAt : null };
}

/** @param {string} s */
function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Cached files grouped by model, each with its total size.
 * @param {CacheOptions} [options]
 * @returns {Promise<CachedModel[]>} sorted by base URL
 */
export async function listCachedModels(options = {}) {
  const cache = await openCache(options);
  if (!cache) return [];
  /** @type {Map<string, CachedModel>} */
  const models = new Map();
  for (const req of await cache.keys()) {
    const res = await cache.match(req);
    if (!res) continue; // evicted between keys() and match()
    const { base, ...file } = await describeEntry(req.url, res);
    let m = models.get(base);
    if (!m) models.set(base, (m = { base, size: 0, files: [] }));
    m.files.push(file);
    m.size += file.size;
  }
  const out = [...models.values()].sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
  for (const m of out) m.files.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return out;
}

/**
 * Total bytes of all cached model files.
 * @param {CacheOptions} [options]
 * @returns {Promise<number>}
 */
export async function cachedSize(options = {}) {
  const models = await listCachedModels(options);
  return models.reduce((sum, m) => sum + m.size, 0);
}

/**
 * Removes every cached file of one model.
 * @param {string} base the model's base URL as listed by listCachedModels
 * @param {CacheOptions} [options]
 * @returns {Promise<number>} how many files were removed
 */
export async function deleteCachedModel(base, options = {}) {
  const cache = await openCache(options);
  if (!cache) return 0;
  let removed = 0;
  for (const model of await listCachedModels({ ...options, cache })) {
    if (model.base !== base) continue;
    for (const f of model.files) if (await cache.delete(f.url)) removed++;
  }
  return removed;
}

/**
 * Whether a URL has a cache entry (used to plan a model offline without asking the network).
 * @param {string} url
 * @param {CacheOptions} [options]
 */
export async function isCached(url, options = {}) {
  const cache = await openCache(options);
  if (!cache) return false;
  const res = await cache.match(cacheKeyFn(options)(url));
  await res?.body?.cancel();
  return !!res && res.status === 200;
}
