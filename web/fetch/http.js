// The HTTP transport of model files: a file on a CDN or any static host read without holding it whole: size probing,
// Range reads, retries and resume after dropped connections, optional SHA-256 pins, progress events, and a Cache API
// copy for next time. Which files make up a model is web/fetch/sources.js.

import {
  FormatError, IntegrityError, InvalidArgumentError, NetworkError, NotFoundError, UnsupportedError, abortError, throwIfAborted,
} from '../errors.js';
import { createSha256, normalizeSha256, sha256Hex } from '../storage/crypto.js';
import { CACHE_HEADERS, CacheWriter, cacheKeyFn, openCache, urlDirectory } from './cache.js';

/**
 * @typedef {import('./cache.js').CacheOptions} CacheOptions
 */

/**
 * Progress events, the same union transformers.js emits (the engine adds 'ready' itself).
 * @typedef {{ status: 'initiate' | 'download' | 'done', name: string, file: string }
 *   | { status: 'progress', name: string, file: string, loaded: number, total: number, progress: number }} ProgressEvent
 */

/**
 * @typedef {object} RemoteFileOptions
 * @property {typeof fetch} [fetch] defaults to globalThis.fetch
 * @property {AbortSignal} [signal] cancels every operation on the file
 * @property {number} [retries] failed requests in a row tolerated before giving up (default 4); a request that
 *   delivers new bytes resets the count, so long downloads survive many drops
 * @property {number} [backoffMs] base of the exponential backoff (default 500): the n-th retry in a row waits a
 *   random time between half and all of backoffMs * 2^(n-1)
 * @property {number} [maxBackoffMs] cap on one wait, also on a server's Retry-After (default 30000)
 * @property {number} [connectRetries] of those, how many in a row may be requests that got no answer at all
 *   (connection refused, no network, unknown host, a cross-origin read the server does not allow); default:
 *   retries. A first contact with a server uses few, so one that cannot be reached is reported at once.
 * @property {(event: ProgressEvent) => void} [onProgress]
 * @property {string} [sha256] expected SHA-256 (hex) of the whole file
 * @property {string} [name] model label in progress events (default: `base`)
 * @property {string} [file] file name in progress events and cache listings (default: last URL segment)
 * @property {string} [base] the model this file belongs to, for grouping in the cache (default: URL directory)
 * @property {HeadersInit} [headers] extra request headers (e.g. Authorization for gated models; note that
 *   non-safelisted headers make cross-origin requests preflighted)
 * @property {'online' | 'never'} [revalidate] whether a cached copy is checked against the server before use:
 *   'online' (default) asks once (a HEAD request, conditional on the copy's ETag / Last-Modified) unless the
 *   browser is offline, and drops the copy when the server has another version; 'never' trusts the cache. A copy
 *   the sha256 pin vouches for, or one from a URL that names a commit, is never asked about.
 */

/**
 * @typedef {object} BodySource a response body positioned in the file
 * @property {ReadableStream<Uint8Array>} body
 * @property {number} bodyStart file offset of the body's first byte
 * @property {number | null} bodyEnd file offset where the body must end, when announced
 * @property {boolean} partial a 206 whose end is known: stopping there is not a failure
 * @property {boolean} [cached] read from the Cache API
 */

const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);
/** Answers to HEAD that say nothing about GET. */
const HEAD_REFUSED = new Set([400, 403, 405, 406, 501]);
/** Errors that another attempt may fix (dropped connections, 5xx); everything else fails at once. */
const transient = new WeakSet();
/** Requests that got no HTTP answer at all (fetch itself failed), a subset of the transient ones. */
const unanswered = new WeakSet();

/**
 * Whether a request failed without any HTTP answer (connection refused, no network, unknown host, a cross-origin
 * read the server does not allow), as opposed to a dropped download or an HTTP error.
 * @param {unknown} err
 */
export function gotNoAnswer(err) {
  return typeof err === 'object' && err !== null && unanswered.has(err);
}
/** Bytes read by readRange from offset 0 are kept up to this size, so a later whole-file stream can still be
 * hashed and cached from byte 0 (a safetensors header is far smaller). */
const PREFIX_LIMIT = 64 << 20;
/** How long a revalidation may take before the cached copy is used anyway (a network that hangs, not one that fails). */
const REVALIDATE_TIMEOUT_MS = 5000;
/** A Hub URL that names a commit (/resolve/<40 hex digits>/): its files never change. */
const COMMIT_URL = /\/resolve\/[0-9a-f]{40}\//i;
const CONSTRUCT = Symbol('RemoteFile.open');

/** @template {Error} E @param {E} err @returns {E} */
function retryable(err) {
  transient.add(err);
  return err;
}

/** Wraps an error thrown by the caller's onChunk so it is rethrown as is, never retried. */
class ConsumerFailure {
  /** @param {unknown} cause */
  constructor(cause) { this.cause = cause; }
}

/**
 * A file on a web server (or in the cache), read by ranges or streamed chunk by chunk.
 */
export class RemoteFile {
  /** @type {RemoteFileOptions & CacheOptions} */
  #o;
  /** @type {typeof fetch} */
  #fetch;
  /** @type {Cache | null} */
  #cache = null;
  #key;
  /** @type {string | null} */
  #pin;
  #retries;
  #connectRetries;
  /** @type {number | null} */
  #size = null;
  /** @type {string | null} */
  #etag = null;
  /** @type {{ etag: string | null, lastModified: string | null }} the server's validators as it sent them */
  #validators = { etag: null, lastModified: null };
  /** @type {boolean | null} null until a response shows whether Range is honoured */
  #acceptsRanges = null;
  #fromCache = false;
  /** the cached entry records the pinned hash, verified when it was written */
  #cacheVouches = false;
  #prefix = new Uint8Array(0);
  #announcedDownload = false;
  #announcedDone = false;
  #verified = false;
  /** @type {unknown} */
  #cacheError = null;

  /**
   * Use RemoteFile.open.
   * @param {symbol} token
   * @param {string} url
   * @param {RemoteFileOptions & CacheOptions} options
   */
  constructor(token, url, options) {
    if (token !== CONSTRUCT) throw new InvalidArgumentError('use RemoteFile.open(url, options)');
    this.url = new URL(url, /** @type {any} */ (globalThis).location?.href).href;
    this.#o = options;
    this.#fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (typeof this.#fetch !== 'function') throw new UnsupportedError('no fetch implementation: pass options.fetch');
    this.#pin = options.sha256 == null ? null : normalizeSha256(options.sha256);
    this.#retries = Math.max(0, options.retries ?? 4);
    this.#connectRetries = Math.min(this.#retries, Math.max(0, options.connectRetries ?? this.#retries));
    if (options.revalidate !== undefined && options.revalidate !== 'online' && options.revalidate !== 'never') {
      throw new InvalidArgumentError(`revalidate must be 'online' or 'never', got ${JSON.stringify(options.revalidate)}`);
    }
    this.#key = cacheKeyFn(options)(this.url);
    /** @type {string} */
    this.file = options.file ?? lastSegment(this.url);
    /** @type {string} */
    this.base = options.base ?? urlDirectory(this.url);
    /** @type {string} */
    this.name = options.name ?? this.base;
  }

  /**
   * Opens a file: from the cache when it holds a complete copy (no network at all), otherwise by asking the
   * server for its size (HEAD, or a one-byte Range request when HEAD is refused or says nothing).
   * @param {string | URL} url
   * @param {RemoteFileOptions & CacheOptions} [options]
   * @returns {Promise<RemoteFile>}
   */
  static async open(url, options = {}) {
    const f = new RemoteFile(CONSTRUCT, String(url), options);
    await f.#init();
    return f;
  }

  /** @returns {number | null} size in bytes; null only when the server never told and nothing was read to the end */
  get size() { return this.#size; }

  /** @returns {boolean} served from the Cache API instead of the network */
  get fromCache() { return this.#fromCache; }

  /** @returns {boolean | null} whether the server honours Range requests (null: not known yet) */
  get acceptsRanges() { return this.#fromCache ? true : this.#acceptsRanges; }

  /** @returns {boolean} the sha256 pin was checked against every byte of the file (false without a pin) */
  get verified() { return this.#verified; }

  /** @returns {unknown} why the Cache API refused to store the file (e.g. quota), if it did */
  get cacheError() { return this.#cacheError; }

  async #init() {
    const signal = this.#o.signal;
    throwIfAborted(signal);
    this.#emit({ status: 'initiate' });
    this.#cache = await openCache(this.#o);
    throwIfAborted(signal);
    if (this.#cache && (await this.#useCachedEntry())) return;
    throwIfAborted(signal);
    await this.#probe(signal);
  }

  async #useCachedEntry() {
    const cache = /** @type {Cache} */ (this.#cache);
    /** @type {Response | undefined} */
    let res;
    try {
      res = await cache.match(this.#key);
    } catch {
      return false;
    }
    if (!res) return false;
    const recorded = res.headers.get(CACHE_HEADERS.sha256);
    if (res.status !== 200 || (this.#pin && recorded && recorded !== this.#pin)) {
      // Not ours, or a copy of another version than the one pinned now: replace it.
      await res.body?.cancel();
      await cache.delete(this.#key).catch(() => {});
      return false;
    }
    const vouched = !!this.#pin && recorded === this.#pin;
    if (!vouched && (await this.#changedOnServer(res.headers))) {
      await res.body?.cancel();
      await cache.delete(this.#key).catch(() => {});
      return false;
    }
    const size = Number(res.headers.get(CACHE_HEADERS.size) ?? NaN);
    if (Number.isFinite(size)) await res.body?.cancel();
    this.#size = Number.isFinite(size) ? size : (await res.blob()).size;
    this.#fromCache = true;
    this.#cacheVouches = vouched;
    return true;
  }

  /**
   * Whether the server now has another version of the cached copy, asked with one HEAD request conditional on the
   * copy's validators (If-None-Match / If-Modified-Since). A cross-origin request from a browser sends no such
   * header, since that would need a CORS preflight most model hosts refuse; the answer's validators are compared
   * here instead. Not asked (false): revalidate 'never', a browser that is offline, a URL that names a commit, a
   * copy with no validator. A server that fails or does not answer in time counts as unchanged: the copy serves.
   * @param {Headers} cached the cached entry's headers
   */
  async #changedOnServer(cached) {
    const etag = cached.get(CACHE_HEADERS.etag);
    const lastModified = cached.get(CACHE_HEADERS.lastModified);
    if ((this.#o.revalidate ?? 'online') === 'never' || globalThis.navigator?.onLine === false || COMMIT_URL.test(this.url)) return false;
    if (!etag && !lastModified) return false;
    const headers = new Headers(this.#o.headers);
    const here = /** @type {any} */ (globalThis).location?.origin;
    if (!here || here === new URL(this.url).origin) {
      if (etag) headers.set('If-None-Match', etag);
      else if (lastModified) headers.set('If-Modified-Since', lastModified);
    }
    const timeout = AbortSignal.timeout(REVALIDATE_TIMEOUT_MS);
    const signal = this.#o.signal ? AbortSignal.any([this.#o.signal, timeout]) : timeout;
    /** @type {Response} */
    let res;
    try {
      res = await this.#fetch(this.url, { method: 'HEAD', headers, signal, cache: 'no-store' });
    } catch {
      throwIfAborted(this.#o.signal);
      return false;
    }
    await res.body?.cancel().catch(() => {});
    if (res.status === 304 || res.status !== 200) return false;
    const nowEtag = res.headers.get('etag');
    if (etag && nowEtag) return weakless(nowEtag) !== weakless(etag);
    const nowModified = res.headers.get('last-modified');
    if (lastModified && nowModified) return nowModified.trim() !== lastModified.trim();
    return false;
  }

  /**
   * Learns the size (and ETag, and maybe Range support) without downloading the body.
   * @param {AbortSignal | undefined} signal
   */
  async #probe(signal) {
    try {
      const head = await this.#retrying('HEAD', () => this.#fetchOnce('HEAD', null, signal), signal);
      this.#checkEtag(head);
      const len = contentLength(head);
      if (len !== null) this.#learnSize(len);
      if (head.headers.get('accept-ranges')?.trim().toLowerCase() === 'none') this.#acceptsRanges = false;
    } catch (err) {
      // Some hosts refuse HEAD (405, or 403 on URLs signed for GET only): a ranged GET tells the same.
      // Anything else (404, 401, retries exhausted) would fail the GET as well.
      const d = /** @type {any} */ (err)?.details;
      if (!(err instanceof NetworkError) || d?.attempts !== undefined || !HEAD_REFUSED.has(d?.status)) throw err;
    }
    if (this.#size !== null) return;
    const res = await this.#retrying('GET', () => this.#fetchOnce('GET', { start: 0, end: 1 }, signal), signal);
    try {
      this.#checkEtag(res);
      if (res.status === 206) {
        this.#acceptsRanges = true;
        const cr = parseContentRange(res.headers.get('content-range'));
        if (cr && cr.total !== null) this.#learnSize(cr.total);
      } else {
        this.#acceptsRanges = false;
        const len = contentLength(res);
        if (len !== null) this.#learnSize(len);
      }
    } finally {
      await res.body?.cancel().catch(() => {});
    }
  }

  /**
   * Reads bytes [start, end) into a new buffer. Meant for small reads such as a safetensors header; bytes read
   * from offset 0 are also kept so a later whole-file stream can hash and cache the file from its first byte.
   * @param {number} start
   * @param {number} end exclusive
   * @param {{ signal?: AbortSignal }} [options]
   * @returns {Promise<Uint8Array>}
   */
  async readRange(start, end, options = {}) {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new InvalidArgumentError(`readRange(${start}, ${end}): need integers with 0 <= start <= end`);
    }
    if (this.#size !== null && end > this.#size) {
      throw new InvalidArgumentError(`readRange(${start}, ${end}) is past the end of ${this.url} (${this.#size} bytes)`);
    }
    const signal = anySignal(this.#o.signal, options.signal);
    throwIfAborted(signal);
    if (end <= this.#prefix.byteLength) return this.#prefix.slice(start, end);
    const out = new Uint8Array(end - start);
    if (end === start) return out;
    await this.#transfer(start, end, async (chunk, offset) => { out.set(chunk, offset - start); }, null, signal);
    const have = this.#prefix.byteLength;
    if (start <= have && end <= PREFIX_LIMIT) {
      const grown = new Uint8Array(end);
      grown.set(this.#prefix);
      grown.set(out.subarray(have - start), have);
      this.#prefix = grown;
    }
    return out;
  }

  /**
   * Streams bytes [start, end) as they arrive, awaiting onChunk before reading on (backpressure). Each byte is
   * delivered exactly once and in order, across any number of resumed connections. When the bytes of the
   * whole file pass through (this stream reaches the end and starts at 0, or readRange already read the part
   * before `start`), the sha256 pin is checked at the end, before this resolves (a mismatch rejects with
   * IntegrityError), and the file is stored in the cache only if it was complete and matched.
   * @param {number} start
   * @param {number | null | undefined} end exclusive; null or undefined is the end of the file
   * @param {(chunk: Uint8Array, offset: number) => unknown} onChunk the chunk is only valid during the call
   *   unless copied; offset is its position in the file
   * @param {{ signal?: AbortSignal }} [options]
   * @returns {Promise<number>} the offset reached (end, or the file size)
   */
  async stream(start, end, onChunk, options = {}) {
    if (typeof onChunk !== 'function') throw new InvalidArgumentError('stream(start, end, onChunk): onChunk must be a function');
    start ??= 0;
    end ??= null;
    if (!Number.isSafeInteger(start) || start < 0 || (end !== null && (!Number.isSafeInteger(end) || end < start))) {
      throw new InvalidArgumentError(`stream(${start}, ${end}): need integers with 0 <= start <= end`);
    }
    if (this.#size !== null && (end ?? start) > this.#size) {
      throw new InvalidArgumentError(`stream(${start}, ${end}) is past the end of ${this.url} (${this.#size} bytes)`);
    }
    const signal = anySignal(this.#o.signal, options.signal);
    throwIfAborted(signal);
    const toEnd = end === null || end === this.#size;
    const hash = toEnd && this.#pin && !this.#cacheVouches ? new FollowingHash() : null;
    const writer = toEnd && this.#cache && !this.#fromCache
      ? new CacheWriter(this.#cache, this.#key, () => this.#cacheHeaders())
      : null;
    const observe = hash || writer
      ? async (/** @type {Uint8Array} */ chunk, /** @type {number} */ offset) => {
        hash?.update(chunk, offset);
        await writer?.feed(chunk, offset, signal);
      }
      : null;
    try {
      if (observe && start > 0) {
        const kept = Math.min(start, this.#prefix.byteLength);
        if (kept > 0) await observe(this.#prefix.subarray(0, kept), 0);
        // Bytes before `start` that readRange did not keep (a header larger than PREFIX_LIMIT) are read again, so
        // the pin and the cached copy still cover every byte from the first.
        if (kept < start) await this.#transfer(kept, start, async () => {}, observe, signal);
      }
      const reached = await this.#transfer(start, end, async (chunk, offset) => {
        await onChunk(chunk, offset);
        this.#emitProgress(offset + chunk.byteLength);
      }, observe, signal);
      if (toEnd) await this.#finishWhole(reached, hash, writer);
      return reached;
    } catch (err) {
      await writer?.abort(err);
      throw err;
    }
  }

  /**
   * @param {number} size
   * @param {FollowingHash | null} hash
   * @param {CacheWriter | null} writer
   */
  async #finishWhole(size, hash, writer) {
    if (hash && hash.covered === size) {
      const actual = hash.hex();
      if (actual !== this.#pin) throw await this.#mismatch(actual);
      this.#verified = true;
    } else if (this.#cacheVouches) {
      this.#verified = true;
    }
    if (this.#pin && !this.#verified) {
      // A pin is a promise about every byte: a load must never finish on bytes it could not check.
      throw new IntegrityError(`${this.url} could not be checked against its SHA-256 pin: only ${hash?.covered ?? 0} of ${size} bytes were hashed`, {
        details: { url: this.url, expected: this.#pin, hashed: hash?.covered ?? 0, size },
      });
    }
    if (writer) {
      // A pinned file goes into the cache only once verified; an unpinned one once complete.
      if (writer.written === size && (!this.#pin || this.#verified)) this.#cacheError = await writer.commit();
      else await writer.abort(new DOMException('not every byte of the file passed through this stream', 'AbortError'));
    }
    this.#emitDone();
  }

  /** @param {string} actual */
  async #mismatch(actual) {
    if (this.#fromCache) {
      // The cached copy itself is bad: drop it so the next open downloads again.
      await this.#cache?.delete(this.#key).catch(() => {});
      this.#fromCache = false;
    }
    return new IntegrityError(`SHA-256 of ${this.url} is ${actual}, expected ${this.#pin}`, {
      details: { url: this.url, expected: this.#pin, actual },
    });
  }

  /**
   * The whole file in one buffer, for small files (config, tokenizer). A pin is checked with
   * crypto.subtle.digest, and the file is cached only after that check.
   * @param {{ signal?: AbortSignal }} [options]
   * @returns {Promise<Uint8Array>}
   */
  async bytes(options = {}) {
    const signal = anySignal(this.#o.signal, options.signal);
    throwIfAborted(signal);
    /** @type {Uint8Array[]} */
    const parts = [];
    const known = this.#size;
    const out = known === null ? null : new Uint8Array(known);
    const reached = await this.#transfer(0, null, async (chunk, offset) => {
      if (out) out.set(chunk, offset);
      else parts.push(chunk.slice());
      this.#emitProgress(offset + chunk.byteLength);
    }, null, signal);
    const buf = out ?? concat(parts, reached);
    if (this.#pin && !this.#cacheVouches) {
      const actual = await sha256Hex(buf);
      if (actual !== this.#pin) throw await this.#mismatch(actual);
    }
    if (this.#pin) this.#verified = true;
    if (this.#cache && !this.#fromCache) {
      try {
        await this.#cache.put(this.#key, new Response(buf.slice(), { status: 200, headers: this.#cacheHeaders() }));
      } catch (err) {
        this.#cacheError = err;
      }
    }
    this.#emitDone();
    return buf;
  }

  /** @param {{ signal?: AbortSignal }} [options] @returns {Promise<string>} the file decoded as UTF-8 */
  async text(options) {
    return new TextDecoder().decode(await this.bytes(options));
  }

  /** @param {{ signal?: AbortSignal }} [options] @returns {Promise<any>} the file parsed as JSON */
  async json(options) {
    const text = await this.text(options);
    try {
      return JSON.parse(text);
    } catch (cause) {
      throw new FormatError(`${this.url} is not valid JSON: ${/** @type {Error} */ (cause).message}`, { cause, details: { url: this.url } });
    }
  }

  /**
   * Delivers bytes [start, end) (end null: to the end of the file) to `deliver` in order, each exactly once,
   * reconnecting after failures. `observe` sees every byte that arrives with its offset, including bytes
   * skipped because they were delivered before (a server that ignores Range restarts at 0): the hash and the
   * cache writer use that to cover the file from byte 0.
   * @param {number} start
   * @param {number | null} end
   * @param {(chunk: Uint8Array, offset: number) => Promise<void>} deliver
   * @param {((chunk: Uint8Array, offset: number) => Promise<void>) | null} observe
   * @param {AbortSignal | undefined} signal
   * @returns {Promise<number>} final offset
   */
  async #transfer(start, end, deliver, observe, signal) {
    let pos = start;
    let failures = 0;
    for (;;) {
      if (end !== null && pos >= end) return pos;
      throwIfAborted(signal);
      /** @type {BodySource | null} */
      let src = null;
      try {
        src = await this.#openBody(pos, end, signal);
        const reader = src.body.getReader();
        let at = src.bodyStart;
        let finished = false;
        try {
          for (;;) {
            /** @type {ReadableStreamReadResult<Uint8Array>} */
            let r;
            try {
              r = await reader.read();
            } catch (cause) {
              if (signal?.aborted) throw abortError(signal);
              throw retryable(new NetworkError(`reading ${this.url} failed at byte ${at}: ${messageOf(cause)}`, {
                cause, details: { url: this.url, offset: at },
              }));
            }
            if (r.done) {
              finished = true;
              break;
            }
            let chunk = r.value;
            let offset = at;
            at += chunk.byteLength;
            if (src.bodyEnd !== null && at > src.bodyEnd) {
              throw new IntegrityError(`${this.url} sent more bytes than announced (past byte ${src.bodyEnd})`, {
                details: { url: this.url, expectedEnd: src.bodyEnd },
              });
            }
            if (end !== null && offset + chunk.byteLength > end) chunk = chunk.subarray(0, Math.max(0, end - offset));
            if (observe && chunk.byteLength) await observe(chunk, offset);
            if (offset + chunk.byteLength > pos) {
              if (offset < pos) {
                chunk = chunk.subarray(pos - offset);
                offset = pos;
              }
              try {
                await deliver(chunk, pos);
              } catch (err) {
                throw new ConsumerFailure(err);
              }
              pos += chunk.byteLength;
              failures = 0;
            }
            throwIfAborted(signal);
            if (end !== null && pos >= end) break;
          }
        } finally {
          if (!finished) await reader.cancel().catch(() => {});
        }
        if (end !== null && pos >= end) return pos;
        // This body ended cleanly.
        const expected = end ?? this.#size;
        if (expected === null) {
          this.#size = pos;
          return pos;
        }
        if (pos >= expected) return pos;
        // Some servers cap how much one range response carries: asking for the rest is not a failure.
        if (src.partial && src.bodyEnd !== null && at === src.bodyEnd) continue;
        throw retryable(new NetworkError(`${this.url} ended early at byte ${pos} of ${expected}`, {
          details: { url: this.url, offset: pos, size: expected },
        }));
      } catch (err) {
        if (err instanceof ConsumerFailure) throw err.cause;
        if (signal?.aborted) throw abortError(signal);
        if (src?.cached) {
          // A cached copy that is short, long or unreadable is dropped; the network has the real file.
          await this.#cache?.delete(this.#key).catch(() => {});
          this.#fromCache = false;
          this.#cacheVouches = false;
          continue;
        }
        if (!transient.has(/** @type {object} */ (err))) throw err;
        failures++;
        if (failures > this.#retries) {
          throw this.#gaveUp(`download of ${this.url} failed at byte ${pos} of ${end ?? this.#size ?? '?'}`, err, failures);
        }
        await sleep(this.#delay(failures, err), signal);
      }
    }
  }

  /**
   * A response whose body holds the file from `pos` onwards (or from an earlier byte, as bodyStart says).
   * @param {number} pos
   * @param {number | null} end
   * @param {AbortSignal | undefined} signal
   * @returns {Promise<BodySource>}
   */
  async #openBody(pos, end, signal) {
    if (this.#fromCache) {
      const res = await /** @type {Cache} */ (this.#cache).match(this.#key).catch(() => undefined);
      throwIfAborted(signal);
      if (res && res.status === 200) {
        return { body: res.body ?? emptyStream(), bodyStart: 0, bodyEnd: this.#size, partial: false, cached: true };
      }
      // Evicted since open(): carry on from the network; the size learnt from the cache must still hold.
      this.#fromCache = false;
      this.#cacheVouches = false;
    }
    if (!this.#announcedDownload) {
      this.#announcedDownload = true;
      this.#emit({ status: 'download' });
    }
    const toEnd = end === null || end === this.#size;
    const ranged = this.#acceptsRanges !== false && !(pos === 0 && toEnd);
    const res = await this.#fetchOnce('GET', ranged ? { start: pos, end: toEnd ? null : end } : null, signal);
    try {
      return this.#describeBody(res, pos, ranged);
    } catch (err) {
      await res.body?.cancel().catch(() => {});
      throw err;
    }
  }

  /**
   * Checks a GET response against what was asked and what is known about the file.
   * @param {Response} res
   * @param {number} pos
   * @param {boolean} ranged
   * @returns {BodySource}
   */
  #describeBody(res, pos, ranged) {
    this.#checkEtag(res);
    const body = res.body ?? emptyStream();
    const len = contentLength(res);
    if (res.status === 206) {
      this.#acceptsRanges = true;
      const cr = parseContentRange(res.headers.get('content-range'));
      if (cr) {
        if (cr.start !== pos) {
          throw new IntegrityError(`asked ${this.url} for bytes from ${pos}, it sent bytes ${cr.start}-${cr.end}`, {
            details: { url: this.url, requested: pos, received: cr.start },
          });
        }
        if (len !== null && len !== cr.end - cr.start + 1) {
          throw new IntegrityError(`${this.url}: Content-Length ${len} disagrees with Content-Range ${cr.start}-${cr.end}`, {
            details: { url: this.url },
          });
        }
        if (cr.total !== null) this.#learnSize(cr.total);
        return { body, bodyStart: pos, bodyEnd: cr.end + 1, partial: true };
      }
      // Content-Range is hidden from cross-origin readers unless exposed; Content-Length still says how much.
      return { body, bodyStart: pos, bodyEnd: len === null ? null : pos + len, partial: len !== null };
    }
    // 200: the whole file from byte 0, even if a range was asked for (#transfer skips what it already has).
    if (ranged) this.#acceptsRanges = false;
    if (len !== null) this.#learnSize(len);
    return { body, bodyStart: 0, bodyEnd: this.#size, partial: false };
  }

  /**
   * One request; statuses other than 200/206 become errors, transient ones marked retryable.
   * @param {'GET' | 'HEAD'} method
   * @param {{ start: number, end: number | null } | null} range end exclusive, null for open-ended
   * @param {AbortSignal | undefined} signal
   * @returns {Promise<Response>}
   */
  async #fetchOnce(method, range, signal) {
    const headers = new Headers(this.#o.headers);
    if (range) headers.set('Range', `bytes=${range.start}-${range.end === null ? '' : range.end - 1}`);
    /** @type {Response} */
    let res;
    try {
      res = await this.#fetch(this.url, { method, headers, signal });
    } catch (cause) {
      if (signal?.aborted) throw abortError(signal);
      const err = retryable(new NetworkError(`${method} ${this.url} failed: ${messageOf(cause)}`, { cause, details: { url: this.url } }));
      unanswered.add(err);
      throw err;
    }
    if (res.status === 200 || res.status === 206) return res;
    await res.body?.cancel().catch(() => {});
    const status = res.status;
    const details = { url: this.url, status };
    if (status === 404 || status === 410) {
      throw new NotFoundError(`${this.url} was not found (HTTP ${status})`, { details });
    }
    if (status === 416) {
      throw new IntegrityError(`${this.url} cannot serve bytes from ${range?.start} (HTTP 416): it is shorter than expected`, { details });
    }
    if (RETRYABLE_STATUS.has(status)) {
      const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
      throw retryable(new NetworkError(`HTTP ${status} from ${this.url}`, { details: { ...details, retryAfterMs } }));
    }
    if (status === 401 || status === 403) {
      throw new NetworkError(`HTTP ${status}: ${this.url} refused access (a private or gated model needs credentials in options.headers)`, { details });
    }
    throw new NetworkError(`unexpected HTTP ${status} from ${this.url}`, { details });
  }

  /**
   * @template T
   * @param {string} what
   * @param {() => Promise<T>} fn
   * @param {AbortSignal | undefined} signal
   * @returns {Promise<T>}
   */
  async #retrying(what, fn, signal) {
    for (let failures = 1; ; failures++) {
      try {
        return await fn();
      } catch (err) {
        if (signal?.aborted) throw abortError(signal);
        if (!transient.has(/** @type {object} */ (err))) throw err;
        const limit = unanswered.has(/** @type {object} */ (err)) ? this.#connectRetries : this.#retries;
        if (failures > limit) throw this.#gaveUp(`${what} ${this.url} failed`, err, failures);
        await sleep(this.#delay(failures, err), signal);
      }
    }
  }

  /** @param {string} what @param {unknown} err @param {number} attempts */
  #gaveUp(what, err, attempts) {
    const e = /** @type {any} */ (err);
    return new NetworkError(`${what} after ${attempts} attempts: ${messageOf(err)}`, {
      cause: err, details: { url: this.url, attempts, status: e?.details?.status ?? null },
    });
  }

  /**
   * Exponential backoff with jitter (so many clients do not retry in lockstep), at least Retry-After.
   * @param {number} failures failures in a row so far
   * @param {unknown} err the last one
   */
  #delay(failures, err) {
    const base = this.#o.backoffMs ?? 500;
    const max = this.#o.maxBackoffMs ?? 30_000;
    const ceiling = Math.min(max, base * 2 ** (failures - 1));
    const jittered = ceiling / 2 + Math.random() * (ceiling / 2);
    const retryAfter = /** @type {any} */ (err)?.details?.retryAfterMs ?? 0;
    return Math.min(max, Math.max(jittered, retryAfter));
  }

  /** @param {number} n */
  #learnSize(n) {
    if (this.#size === null) this.#size = n;
    else if (n !== this.#size) {
      throw new IntegrityError(`${this.url} now reports ${n} bytes, it had ${this.#size}: the file changed or the server is inconsistent`, {
        details: { url: this.url, size: this.#size, reported: n },
      });
    }
  }

  /**
   * Mixing bytes of two versions of a file would corrupt it, so a changed ETag stops the download.
   * @param {Response} res
   */
  #checkEtag(res) {
    this.#validators.lastModified ??= res.headers.get('last-modified');
    const raw = res.headers.get('etag');
    if (!raw) return;
    this.#validators.etag ??= raw.trim();
    const tag = weakless(raw);
    if (this.#etag === null) this.#etag = tag;
    else if (tag !== this.#etag) {
      throw new IntegrityError(`${this.url} changed on the server during the download (ETag ${this.#etag} became ${tag})`, {
        details: { url: this.url },
      });
    }
  }

  #cacheHeaders() {
    /** @type {Record<string, string>} */
    const h = {
      'content-type': 'application/octet-stream',
      [CACHE_HEADERS.base]: this.base,
      [CACHE_HEADERS.file]: encodeURIComponent(this.file),
      [CACHE_HEADERS.cachedAt]: String(Date.now()),
    };
    if (this.#size !== null) h[CACHE_HEADERS.size] = String(this.#size);
    if (this.#validators.etag) h[CACHE_HEADERS.etag] = this.#validators.etag;
    if (this.#validators.lastModified) h[CACHE_HEADERS.lastModified] = this.#validators.lastModified;
    // Written before the hash is known; the entry is only committed when the hash matched this pin.
    if (this.#pin) h[CACHE_HEADERS.sha256] = this.#pin;
    return h;
  }

  /** @param {{ status: 'initiate' | 'download' | 'done' }} ev */
  #emit(ev) {
    this.#o.onProgress?.({ status: ev.status, name: this.name, file: this.file });
  }

  /** @param {number} loaded */
  #emitProgress(loaded) {
    if (!this.#o.onProgress) return;
    const total = this.#size ?? 0;
    this.#o.onProgress({
      status: 'progress', name: this.name, file: this.file, loaded, total,
      progress: total > 0 ? Math.min(100, (loaded / total) * 100) : 0,
    });
  }

  #emitDone() {
    if (this.#announcedDone) return;
    this.#announcedDone = true;
    this.#emit({ status: 'done' });
  }
}

/**
 * An ETag without its weak marker: a weak/strong difference alone is what compressing proxies introduce; the tag
 * itself must match.
 * @param {string} tag
 */
function weakless(tag) {
  return tag.trim().replace(/^W\//, '');
}

/** SHA-256 over the contiguous run of bytes from offset 0; bytes seen twice are hashed once, a gap ends it. */
class FollowingHash {
  #h = createSha256();
  covered = 0;
  #broken = false;

  /** @param {Uint8Array} chunk @param {number} offset */
  update(chunk, offset) {
    if (this.#broken) return;
    if (offset > this.covered) {
      this.#broken = true;
      return;
    }
    const skip = this.covered - offset;
    if (skip >= chunk.byteLength) return;
    this.#h.update(skip ? chunk.subarray(skip) : chunk);
    this.covered += chunk.byteLength - skip;
  }

  hex() {
    return this.#h.hex();
  }
}

/**
 * The file name at the end of a URL, percent-decoded.
 * @param {string} url
 */
export function lastSegment(url) {
  const path = new URL(url, 'http://x/').pathname;
  const seg = path.slice(path.lastIndexOf('/') + 1);
  try {
    return decodeURIComponent(seg);
  } catch {
    return seg;
  }
}

/**
 * @param {string | null} header a Content-Range value such as 'bytes 0-99/1000'
 * @returns {{ start: number, end: number, total: number | null } | null} end inclusive; null when absent or malformed
 */
export function parseContentRange(header) {
  if (!header) return null;
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(header);
  if (!m) return null;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = m[3] === '*' ? null : Number(m[3]);
  if (end < start || (total !== null && end >= total)) return null;
  return { start, end, total };
}

/**
 * Content-Length of the body as delivered, or null when absent or describing compressed bytes.
 * @param {Response} res
 */
function contentLength(res) {
  const enc = res.headers.get('content-encoding');
  if (enc && enc.trim().toLowerCase() !== 'identity') return null;
  const v = res.headers.get('content-length');
  if (v === null || !/^\s*\d+\s*$/.test(v)) return null;
  return Number(v);
}

/** @param {string | null} v @returns {number} ms */
function parseRetryAfter(v) {
  if (!v) return 0;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : 0;
}

/** @param {unknown} err */
export function messageOf(err) {
  const e = /** @type {any} */ (err);
  const msg = e?.message ?? String(err);
  // undici reports a dropped socket as "terminated" with the real reason in `cause`.
  return e?.cause?.message && !msg.includes(e.cause.message) ? `${msg} (${e.cause.message})` : msg;
}

/** @param {Uint8Array[]} parts @param {number} total */
function concat(parts, total) {
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

function emptyStream() {
  return new ReadableStream({ start(c) { c.close(); } });
}

/**
 * @param {number} ms
 * @param {AbortSignal | undefined} signal
 */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(undefined);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * @param {AbortSignal | undefined} a
 * @param {AbortSignal | undefined} b
 * @returns {AbortSignal | undefined}
 */
function anySignal(a, b) {
  if (!a || !b) return a ?? b;
  if (typeof AbortSignal.any === 'function') return AbortSignal.any([a, b]);
  const c = new AbortController();
  const fire = (/** @type {AbortSignal} */ s) => () => c.abort(s.reason);
  if (a.aborted) c.abort(a.reason);
  else if (b.aborted) c.abort(b.reason);
  else {
    a.addEventListener('abort', fire(a), { once: true });
    b.addEventListener('abort', fire(b), { once: true });
  }
  return c.signal;
}
