// In-memory stand-in for the Cache API (CacheStorage and Cache) for Node tests. Like the real one, put() reads the
// whole body first and stores nothing if the body errors, and refuses 206 responses and non-GET requests.

/** @param {RequestInfo | URL} request */
function keyOf(request) {
  if (typeof request === 'object' && request !== null && 'method' in request && request.method !== 'GET') {
    throw new TypeError(`Cache only stores GET requests, not ${request.method}`);
  }
  const url = new URL(typeof request === 'string' || request instanceof URL ? String(request) : request.url);
  url.hash = ''; // the Cache API ignores fragments
  return url.href;
}

/** One named cache. */
export class MemoryCache {
  /** @type {Map<string, { body: Uint8Array, status: number, statusText: string, headers: [string, string][] }>} */
  #entries = new Map();

  /**
   * @param {{ quotaBytes?: number }} [options] quotaBytes makes put() fail like a full disk once the total
   *   stored size would exceed it
   */
  constructor(options = {}) {
    this.quotaBytes = options.quotaBytes ?? Infinity;
    /** every put() call, settled or not, for tests that check nothing was attempted */
    this.putCalls = 0;
  }

  /** @param {RequestInfo | URL} request */
  async match(request) {
    const e = this.#entries.get(keyOf(request));
    if (!e) return undefined;
    return new Response(e.body.slice(), { status: e.status, statusText: e.statusText, headers: e.headers });
  }

  /**
   * @param {RequestInfo | URL} request
   * @param {Response} response
   */
  async put(request, response) {
    this.putCalls++;
    const key = keyOf(request);
    if (response.status === 206) throw new TypeError('Partial response (status code 206) is unsupported');
    if ((response.headers.get('vary') ?? '').includes('*')) throw new TypeError('Vary: * is unsupported');
    if (response.bodyUsed) throw new TypeError('Response body is already used');
    // Rejects if the body stream errors: then nothing is stored, as in browsers.
    const body = new Uint8Array(await response.arrayBuffer());
    const used = [...this.#entries].reduce((n, [k, e]) => n + (k === key ? 0 : e.body.byteLength), 0);
    if (used + body.byteLength > this.quotaBytes) {
      throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    }
    this.#entries.set(key, {
      body,
      status: response.status,
      statusText: response.statusText,
      headers: [...response.headers],
    });
  }

  /** @param {RequestInfo | URL} request */
  async delete(request) {
    return this.#entries.delete(keyOf(request));
  }

  /** @returns {Promise<Request[]>} */
  async keys() {
    return [...this.#entries.keys()].map((url) => new Request(url));
  }

  /** Test helper: the stored URLs. */
  urls() {
    return [...this.#entries.keys()];
  }

  /** Test helper: the stored bytes of one URL, or undefined. */
  bodyOf(url) {
    return this.#entries.get(keyOf(url))?.body;
  }
}

/** The CacheStorage (globalThis.caches) shape: named caches created on open(). */
export class MemoryCacheStorage {
  /** @type {Map<string, MemoryCache>} */
  #caches = new Map();

  /** @param {{ quotaBytes?: number }} [options] passed to each cache */
  constructor(options = {}) {
    this.options = options;
  }

  /** @param {string} name */
  async open(name) {
    let c = this.#caches.get(name);
    if (!c) this.#caches.set(name, (c = new MemoryCache(this.options)));
    return c;
  }

  /** @param {string} name */
  async has(name) {
    return this.#caches.has(name);
  }

  /** @param {string} name */
  async delete(name) {
    return this.#caches.delete(name);
  }

  async keys() {
    return [...this.#caches.keys()];
  }

  /** @param {RequestInfo | URL} request */
  async match(request) {
    for (const c of this.#caches.values()) {
      const r = await c.match(request);
      if (r) return r;
    }
    return undefined;
  }
}
