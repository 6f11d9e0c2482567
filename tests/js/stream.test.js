// Tests for web/fetch/http.js, web/fetch/sources.js, web/fetch/cache.js and web/errors.js against a real local HTTP server that misbehaves on
// purpose, with the in-memory Cache API fake.

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { startServer } from './helpers/http-server.js';
import { MemoryCache, MemoryCacheStorage } from './helpers/memory-cache.js';
import { RemoteFile } from '../../web/fetch/http.js';
import { resolveModelSource, validateIndex } from '../../web/fetch/sources.js';
import { listCachedModels, cachedSize, deleteCachedModel, DEFAULT_CACHE_NAME } from '../../web/fetch/cache.js';
import {
  WebLoRAError, NetworkError, NotFoundError, IntegrityError, InvalidArgumentError, FormatError, ModelSourceError, StorageFullError,
  isAbortError,
  serializeError, deserializeError,
} from '../../web/errors.js';

/** Deterministic bytes that differ at every offset pattern (a byte shifted by one would be caught). */
function bytesOf(n, seed = 1) {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

/** Byte equality that reports the first difference (toEqual walks typed arrays element by element: slow). */
function expectBytes(actual, expected) {
  expect(actual).toBeInstanceOf(Uint8Array);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(e)) return;
  let i = 0;
  while (i < a.length && i < e.length && a[i] === e[i]) i++;
  throw new Error(`bytes differ: lengths ${a.length} vs ${e.length}, first difference at ${i}`);
}

/** A real safetensors file: u64 little-endian header length, JSON header, tensor data. */
function safetensors(dataBytes) {
  const header = new TextEncoder().encode(JSON.stringify({
    w: { dtype: 'U8', shape: [dataBytes.byteLength], data_offsets: [0, dataBytes.byteLength] },
  }));
  const out = new Uint8Array(8 + header.byteLength + dataBytes.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.byteLength), true);
  out.set(header, 8);
  out.set(dataBytes, 8 + header.byteLength);
  return out;
}

/** Streams a whole file and returns the bytes, checking chunks are consecutive and never overlap. */
async function collect(file, start = 0, end = null, opts = {}) {
  const parts = [];
  let next = start;
  await file.stream(start, end, async (chunk, offset) => {
    expect(offset).toBe(next);
    next += chunk.byteLength;
    parts.push(chunk.slice());
    if (opts.onChunk) await opts.onChunk(chunk, offset);
  }, opts);
  const out = new Uint8Array(next - start);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.byteLength; }
  return out;
}

const FAST = { backoffMs: 1, maxBackoffMs: 5, cache: null };
const BIG = bytesOf(300_000, 7);
const SMALL_JSON = new TextEncoder().encode(JSON.stringify({ model_type: 'llama', hidden_size: 64 }));

let server;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server.close();
});

/** Registers a route under a fresh path so tests never share request logs or counters. */
let routeId = 0;
function serve(route, name = 'file.bin') {
  const path = `/t${++routeId}/${name}`;
  server.route(path, route);
  return { path, url: server.url(path) };
}

describe('RemoteFile basics', () => {
  test('size from HEAD, then Range reads of a safetensors header', async () => {
    const file = safetensors(bytesOf(5000, 3));
    const { path, url } = serve({ body: file }, 'model.safetensors');
    const f = await RemoteFile.open(url, FAST);
    expect(f.size).toBe(file.byteLength);
    expect(f.file).toBe('model.safetensors');
    const lenBytes = await f.readRange(0, 8);
    const n = Number(new DataView(lenBytes.buffer, lenBytes.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(await f.readRange(8, 8 + n)));
    expect(header.w.shape).toEqual([5000]);
    const tail = await f.readRange(8 + n + 100, 8 + n + 200);
    expectBytes(tail, file.subarray(8 + n + 100, 8 + n + 200));
    const gets = server.requestsTo(path, 'GET');
    expect(gets.map((r) => [r.range, r.status])).toEqual([
      ['bytes=0-7', 206], [`bytes=8-${8 + n - 1}`, 206], [`bytes=${8 + n + 100}-${8 + n + 199}`, 206],
    ]);
    expect(f.acceptsRanges).toBe(true);
  });

  test('a read inside the kept prefix needs no request', async () => {
    const { path, url } = serve({ body: BIG });
    const f = await RemoteFile.open(url, FAST);
    await f.readRange(0, 1000);
    const before = server.requestsTo(path, 'GET').length;
    expectBytes(await f.readRange(10, 20), BIG.subarray(10, 20));
    expect(server.requestsTo(path, 'GET').length).toBe(before);
  });

  test('HEAD refused: a one-byte Range probe gives the size', async () => {
    const { path, url } = serve({ body: BIG, head: false });
    const f = await RemoteFile.open(url, FAST);
    expect(f.size).toBe(BIG.byteLength);
    expect(server.requestsTo(path).map((r) => `${r.method} ${r.range} ${r.status}`))
      .toEqual(['HEAD null 405', 'GET bytes=0-0 206']);
  });

  test('chunked delivery without any length: streamed to the end, size learnt at the end', async () => {
    const { url } = serve({ body: BIG, chunked: true, head: false, ranges: false, chunkSize: 1000 });
    const f = await RemoteFile.open(url, FAST);
    expect(f.size).toBe(null);
    expect(f.acceptsRanges).toBe(false);
    let calls = 0;
    const got = await collect(f, 0, null, { onChunk: () => { calls++; } });
    expectBytes(got, BIG);
    expect(calls).toBeGreaterThan(10);
    expect(f.size).toBe(BIG.byteLength);
  });

  test('onChunk is awaited before the next chunk (backpressure)', async () => {
    const { url } = serve({ body: BIG, chunkSize: 4096 });
    const f = await RemoteFile.open(url, FAST);
    let active = 0;
    let maxActive = 0;
    const got = await collect(f, 0, null, {
      onChunk: async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        await new Promise((r) => setTimeout(r, 1));
        active--;
      },
    });
    expectBytes(got, BIG);
    expect(maxActive).toBe(1);
  });

  test('a sub-range stream, and ranges served in capped parts', async () => {
    const { path, url } = serve({ body: BIG, maxRangeBytes: 50_000 });
    const f = await RemoteFile.open(url, FAST);
    expectBytes(await collect(f, 1234, 200_000), BIG.subarray(1234, 200_000));
    expectBytes(await collect(f, 250_000), BIG.subarray(250_000));
    expect(server.requestsTo(path, 'GET').length).toBeGreaterThanOrEqual(5);
  });

  test('bad ranges are rejected before any request', async () => {
    const { path, url } = serve({ body: BIG });
    const f = await RemoteFile.open(url, FAST);
    const before = server.requestsTo(path, 'GET').length;
    await expect(f.readRange(10, 5)).rejects.toThrow(InvalidArgumentError);
    await expect(f.readRange(0, BIG.byteLength + 1)).rejects.toThrow(InvalidArgumentError);
    await expect(f.stream(0, BIG.byteLength + 1, () => {})).rejects.toThrow(InvalidArgumentError);
    await expect(f.stream(0, null)).rejects.toThrow(InvalidArgumentError);
    await expect(f.readRange(-1, 5)).rejects.toMatchObject({ name: 'InvalidArgumentError', code: 'INVALID_ARGUMENT' });
    expect(server.requestsTo(path, 'GET').length).toBe(before);
  });
});

describe('failures and resume', () => {
  test('a dropped connection resumes from the last byte received, bytes exact', async () => {
    const { path, url } = serve({ body: BIG, dropAfter: [100_000, 50_000], chunkSize: 10_000 });
    const f = await RemoteFile.open(url, FAST);
    expectBytes(await collect(f), BIG);
    const gets = server.requestsTo(path, 'GET');
    expect(gets.map((r) => r.range)).toEqual([null, 'bytes=100000-', 'bytes=150000-']);
  });

  test('404 is NotFoundError at once, without retries', async () => {
    const url = server.url('/no/such/file.bin');
    const err = await RemoteFile.open(url, { ...FAST, retries: 5 }).catch((e) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.code).toBe('NOT_FOUND');
    expect(err.details.status).toBe(404);
    expect(server.requestsTo('/no/such/file.bin').length).toBe(1);
  });

  test('transient statuses are retried, then the file arrives', async () => {
    const { path, url } = serve({ body: BIG, statuses: [503, 502] });
    const f = await RemoteFile.open(url, FAST);
    expectBytes(await collect(f), BIG);
    expect(server.requestsTo(path).slice(0, 3).map((r) => r.status)).toEqual([503, 502, 200]);
  });

  test('gives up after N attempts with a NetworkError saying what failed', async () => {
    const { path, url } = serve({ body: BIG, statuses: Array(10).fill(503) });
    const err = await RemoteFile.open(url, { ...FAST, retries: 2 }).catch((e) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err.message).toContain('after 3 attempts');
    expect(err.message).toContain('HTTP 503');
    expect(err.details.attempts).toBe(3);
    expect(server.requestsTo(path).length).toBe(3);
  });

  test('connectRetries bounds requests that get no answer at all; HTTP errors keep the full retries', async () => {
    const closed = await startServer();
    const url = closed.url('/gone.bin');
    await closed.close();
    const err = await RemoteFile.open(url, { ...FAST, retries: 4, connectRetries: 1 }).catch((e) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err.details.attempts).toBe(2);
    const flaky = serve({ body: BIG, statuses: [503, 503, 503] });
    const f = await RemoteFile.open(flaky.url, { ...FAST, retries: 4, connectRetries: 0 });
    expect(f.size).toBe(BIG.byteLength);
    expect(server.requestsTo(flaky.path).slice(0, 4).map((r) => r.status)).toEqual([503, 503, 503, 200]);
  });

  test('a connection that always dies at the same byte fails after the retries, never delivering past it', async () => {
    const { url } = serve({ body: BIG, truncateAt: 120_000 });
    const f = await RemoteFile.open(url, { ...FAST, retries: 3 });
    let delivered = 0;
    const err = await f.stream(0, null, (c, off) => {
      expectBytes(c, BIG.subarray(off, off + c.byteLength));
      delivered = off + c.byteLength;
    }).catch((e) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err.message).toContain('at byte 120000 of 300000');
    expect(err.message).toContain('after 4 attempts');
    expect(delivered).toBe(120_000);
  });

  test('a body that ends cleanly but early (truncated file) is an error, never silent', async () => {
    const { url } = serve({ body: BIG, cleanEndAt: 90_000 });
    const f = await RemoteFile.open(url, { ...FAST, retries: 2 });
    expect(f.size).toBe(BIG.byteLength);
    const err = await collect(f).catch((e) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err.message).toContain('ended early at byte 90000 of 300000');
  });

  test('a server ignoring Range: range reads skip to the bytes, a resume restarts without duplicates', async () => {
    const { path, url } = serve({ body: BIG, ranges: false, dropAfter: [undefined, 70_000], chunkSize: 7000 });
    const f = await RemoteFile.open(url, FAST);
    expectBytes(await f.readRange(1000, 1100), BIG.subarray(1000, 1100));
    expect(f.acceptsRanges).toBe(false);
    expectBytes(await collect(f), BIG);
    const gets = server.requestsTo(path, 'GET');
    expect(gets.every((r) => r.status === 200)).toBe(true);
    expect(gets.length).toBe(3); // the range read, the dropped stream, its restart
  });

  test('a server ignoring Range on resume (only): the restart skips what was delivered', async () => {
    // First GET is cut; the server then stops honouring Range.
    const route = { body: BIG, dropAfter: [60_000], chunkSize: 6000 };
    const { path, url } = serve(route);
    const f = await RemoteFile.open(url, FAST);
    const got = await collect(f, 0, null, {
      onChunk: (c, off) => { if (off === 0) route.ranges = false; },
    });
    expectBytes(got, BIG);
    expect(server.requestsTo(path, 'GET').map((r) => [r.range, r.status])).toEqual([[null, 200], ['bytes=60000-', 200]]);
  });

  test('a file that changes on the server mid-download (ETag) is an IntegrityError', async () => {
    const { url } = serve({ body: BIG, dropAfter: [50_000], etag: (i) => (i === 0 ? '"v1"' : '"v2"') });
    const f = await RemoteFile.open(url, FAST);
    const err = await collect(f).catch((e) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect(err.message).toContain('changed on the server');
  });

  test('more bytes than announced is an IntegrityError', async () => {
    const body = bytesOf(12);
    const fetch = async (url, init) => (init.method === 'HEAD'
      ? new Response(null, { status: 200, headers: { 'content-length': '10' } })
      : new Response(body, { status: 200 }));
    const f = await RemoteFile.open('http://example.invalid/x.bin', { ...FAST, fetch });
    const err = await collect(f).catch((e) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect(err.message).toContain('more bytes than announced');
  });

  test('a 206 for the wrong range is an IntegrityError', async () => {
    const fetch = async (url, init) => (init.method === 'HEAD'
      ? new Response(null, { status: 200, headers: { 'content-length': '100' } })
      : new Response(bytesOf(10), { status: 206, headers: { 'content-range': 'bytes 0-9/100' } }));
    const f = await RemoteFile.open('http://example.invalid/x.bin', { ...FAST, fetch });
    await expect(f.readRange(50, 60)).rejects.toThrow(/asked .* for bytes from 50, it sent bytes 0-9/);
  });

  test('a size that disagrees between HEAD and GET is an IntegrityError', async () => {
    const fetch = async (url, init) => (init.method === 'HEAD'
      ? new Response(null, { status: 200, headers: { 'content-length': '100' } })
      : new Response(bytesOf(90), { status: 200, headers: { 'content-length': '90' } }));
    const f = await RemoteFile.open('http://example.invalid/x.bin', { ...FAST, fetch });
    await expect(collect(f)).rejects.toThrow(IntegrityError);
  });

  test('401 says credentials are needed and is not retried', async () => {
    const { path, url } = serve({ body: BIG, statuses: [401, 401, 401] });
    const err = await RemoteFile.open(url, FAST).catch((e) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err.message).toMatch(/HTTP 401.*credentials/);
    expect(server.requestsTo(path).length).toBe(1);
  });
});

describe('abort', () => {
  test('abort mid-stream rejects with an AbortError and caches nothing', async () => {
    const { url } = serve({ body: BIG, chunkSize: 4096, delayMs: 5 });
    const caches = new MemoryCacheStorage();
    const ac = new AbortController();
    const f = await RemoteFile.open(url, { ...FAST, cache: caches, signal: ac.signal });
    let delivered = 0;
    const err = await f.stream(0, null, (c) => {
      delivered += c.byteLength;
      if (delivered >= 20_000) ac.abort();
    }).catch((e) => e);
    expect(isAbortError(err)).toBe(true);
    expect(err).toBeInstanceOf(DOMException);
    expect(delivered).toBeLessThan(BIG.byteLength);
    const cache = await caches.open(DEFAULT_CACHE_NAME);
    expect(cache.putCalls).toBe(1); // the cache copy was being written...
    expect(cache.urls()).toEqual([]); // ...and was dropped
  });

  test('abort during a retry wait ends it at once', async () => {
    const { url } = serve({ body: BIG, statuses: Array(5).fill(503) });
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 50);
    const err = await RemoteFile.open(url, { cache: null, backoffMs: 60_000, maxBackoffMs: 60_000, signal: ac.signal })
      .catch((e) => e);
    expect(isAbortError(err)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5000); // a hang guard, not a timing: measured 51 ms against a 60 s wait
  });

  test('a per-call signal aborts that call only', async () => {
    const { url } = serve({ body: BIG, chunkSize: 4096, delayMs: 2 });
    const f = await RemoteFile.open(url, FAST);
    const ac = new AbortController();
    ac.abort();
    await expect(f.readRange(0, 10, { signal: ac.signal })).rejects.toHaveProperty('name', 'AbortError');
    expectBytes(await f.readRange(0, 10), BIG.subarray(0, 10));
  });

  test('abort reason from AbortSignal.timeout is kept (TimeoutError)', async () => {
    const { url } = serve({ body: BIG, chunkSize: 1024, delayMs: 20 });
    const f = await RemoteFile.open(url, { ...FAST });
    const err = await f.stream(0, null, () => {}, { signal: AbortSignal.timeout(60) }).catch((e) => e);
    expect(err.name).toBe('TimeoutError');
  });
});

describe('sha256 pins', () => {
  test('a matching pin marks the file verified and it is cached', async () => {
    const { url } = serve({ body: BIG });
    const caches = new MemoryCacheStorage();
    const f = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(BIG).toUpperCase() });
    expectBytes(await collect(f), BIG);
    expect(f.verified).toBe(true);
    const cache = await caches.open(DEFAULT_CACHE_NAME);
    expectBytes(cache.bodyOf(url), BIG);
  });

  test('a wrong pin throws IntegrityError and nothing is cached', async () => {
    const { url } = serve({ body: BIG });
    const caches = new MemoryCacheStorage();
    const wrong = sha256(bytesOf(10));
    const f = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: wrong });
    const err = await collect(f).catch((e) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect(err.details).toEqual({ url, expected: wrong, actual: sha256(BIG) });
    const cache = await caches.open(DEFAULT_CACHE_NAME);
    expect(cache.urls()).toEqual([]);
  });

  test('small whole files: bytes() checks the pin with WebCrypto', async () => {
    const { url } = serve({ body: SMALL_JSON }, 'config.json');
    const caches = new MemoryCacheStorage();
    const good = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(SMALL_JSON) });
    expect(await good.json()).toEqual({ model_type: 'llama', hidden_size: 64 });
    expect(good.verified).toBe(true);
    const { url: url2 } = serve({ body: SMALL_JSON }, 'config.json');
    const bad = await RemoteFile.open(url2, { ...FAST, cache: caches, sha256: sha256(BIG) });
    await expect(bad.bytes()).rejects.toThrow(IntegrityError);
    const cache = await caches.open(DEFAULT_CACHE_NAME);
    expect(cache.urls()).toEqual([url]);
  });

  test('a malformed pin is an InvalidArgumentError', async () => {
    await expect(RemoteFile.open('http://example.invalid/x', { ...FAST, sha256: 'abc' })).rejects.toThrow(InvalidArgumentError);
  });

  test('header read by readRange + stream of the rest: the whole file is hashed and cached', async () => {
    const file = safetensors(bytesOf(100_000, 9));
    const { path, url } = serve({ body: file }, 'model.safetensors');
    const caches = new MemoryCacheStorage();
    const f = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(file) });
    const lenBytes = await f.readRange(0, 8);
    const n = Number(new DataView(lenBytes.buffer, lenBytes.byteOffset).getBigUint64(0, true));
    await f.readRange(8, 8 + n);
    const data = await collect(f, 8 + n);
    expectBytes(data, file.subarray(8 + n));
    expect(f.verified).toBe(true);
    expectBytes((await caches.open(DEFAULT_CACHE_NAME)).bodyOf(url), file);
    expect(server.requestsTo(path, 'GET').map((r) => r.range)).toEqual(['bytes=0-7', `bytes=8-${7 + n}`, `bytes=${8 + n}-`]);
  });

  test('a cached copy is trusted only under the pin it was verified with; an unpinned one is hashed again', async () => {
    const { path, url } = serve({ body: BIG });
    const caches = new MemoryCacheStorage();
    const gets = () => server.requestsTo(path, 'GET').length;
    // Cached unpinned, then opened with a pin: read from the cache and hashed on the way, no request.
    await collect(await RemoteFile.open(url, { ...FAST, cache: caches }));
    const before = gets();
    const rehashed = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(BIG) });
    expect(rehashed.fromCache).toBe(true);
    expectBytes(await collect(rehashed), BIG);
    expect(rehashed.verified).toBe(true);
    expect(gets()).toBe(before);
    // An unpinned copy that does not match the pin is an error, and is dropped so the next open downloads.
    const wrongPin = sha256(bytesOf(10));
    const refused = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: wrongPin });
    expect(refused.fromCache).toBe(true);
    await expect(collect(refused)).rejects.toMatchObject({ name: 'IntegrityError', details: { expected: wrongPin, actual: sha256(BIG) } });
    expect((await caches.open(DEFAULT_CACHE_NAME)).urls()).toEqual([]);

    // Verified under a pin, the copy records it and vouches for the bytes under that pin.
    await collect(await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(BIG) }));
    const cached = (await (await caches.open(DEFAULT_CACHE_NAME)).match(url)).headers.get('x-weblora-sha256');
    expect(cached).toBe(sha256(BIG));
    const vouched = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(BIG) });
    expect(vouched.fromCache).toBe(true);
    expectBytes(await collect(vouched, 1000), BIG.subarray(1000));
    expect(vouched.verified).toBe(true);
    // A new version pinned now: the copy recorded under the old pin is replaced from the network, never used.
    const v2 = bytesOf(300_000, 8);
    server.route(path, { body: v2 });
    const requests = gets();
    const updated = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(v2) });
    expect(updated.fromCache).toBe(false);
    expectBytes(await collect(updated), v2);
    expect(updated.verified).toBe(true);
    expect(gets()).toBe(requests + 1);
    expect((await (await caches.open(DEFAULT_CACHE_NAME)).match(url)).headers.get('x-weblora-sha256')).toBe(sha256(v2));
  });

  test('a partial stream is not verified and not cached', async () => {
    const { url } = serve({ body: BIG });
    const caches = new MemoryCacheStorage();
    const f = await RemoteFile.open(url, { ...FAST, cache: caches, sha256: sha256(BIG) });
    expectBytes(await collect(f, 100, 5000), BIG.subarray(100, 5000));
    expect(f.verified).toBe(false);
    expect((await caches.open(DEFAULT_CACHE_NAME)).putCalls).toBe(0);
  });
});

describe('progress events', () => {
  test('initiate, download, progress..., done in the transformers.js shape', async () => {
    const { url } = serve({ body: BIG, chunkSize: 50_000 });
    const events = [];
    const f = await RemoteFile.open(url, { ...FAST, name: 'my/model', onProgress: (e) => events.push(e) });
    await collect(f);
    expect(events[0]).toEqual({ status: 'initiate', name: 'my/model', file: 'file.bin' });
    expect(events[1]).toEqual({ status: 'download', name: 'my/model', file: 'file.bin' });
    expect(events.at(-1)).toEqual({ status: 'done', name: 'my/model', file: 'file.bin' });
    const progress = events.slice(2, -1);
    expect(progress.length).toBeGreaterThanOrEqual(2);
    let last = 0;
    for (const p of progress) {
      expect(p.status).toBe('progress');
      expect(p.total).toBe(BIG.byteLength);
      expect(p.loaded).toBeGreaterThan(last);
      expect(p.progress).toBeCloseTo((p.loaded / p.total) * 100, 10);
      last = p.loaded;
    }
    expect(progress.at(-1)).toMatchObject({ loaded: BIG.byteLength, progress: 100 });
  });
});

describe('Cache API', () => {
  test('second load comes from the cache with the server stopped', async () => {
    const local = await startServer();
    const path = '/org/model/resolve/main/model.safetensors';
    local.route(path, { body: BIG });
    const url = local.url(path);
    const caches = new MemoryCacheStorage();
    const first = await RemoteFile.open(url, { ...FAST, cache: caches });
    expect(first.fromCache).toBe(false);
    expectBytes(await collect(first), BIG);
    expect(first.cacheError).toBe(null);
    await local.close();

    const events = [];
    const second = await RemoteFile.open(url, { ...FAST, cache: caches, onProgress: (e) => events.push(e) });
    expect(second.fromCache).toBe(true);
    expect(second.size).toBe(BIG.byteLength);
    expectBytes(await second.readRange(5, 50), BIG.subarray(5, 50));
    expectBytes(await collect(second, 1000), BIG.subarray(1000));
    expectBytes(await collect(second), BIG);
    expect(events.map((e) => e.status).filter((s) => s !== 'progress')).toEqual(['initiate', 'done']);
  });

  test('an entry evicted after open() is fetched again from the network', async () => {
    const { url } = serve({ body: BIG });
    const cache = new MemoryCache();
    await collect(await RemoteFile.open(url, { ...FAST, cache }));
    const f = await RemoteFile.open(url, { ...FAST, cache });
    expect(f.fromCache).toBe(true);
    await cache.delete(url);
    expectBytes(await collect(f), BIG);
  });

  test('a damaged cached copy (shorter than recorded) is dropped and the file comes from the network', async () => {
    const { path, url } = serve({ body: BIG });
    const cache = new MemoryCache();
    await collect(await RemoteFile.open(url, { ...FAST, cache }));
    const stored = await cache.match(url);
    const short = new Uint8Array(await stored.arrayBuffer()).subarray(0, 1000);
    await cache.put(url, new Response(short, { headers: stored.headers }));
    const f = await RemoteFile.open(url, { ...FAST, cache });
    expect(f.fromCache).toBe(true);
    const gets = server.requestsTo(path, 'GET').length;
    expectBytes(await collect(f), BIG);
    expect(f.fromCache).toBe(false);
    expect(server.requestsTo(path, 'GET').length).toBe(gets + 1);
    expect(cache.urls()).toEqual([]);
  });

  test('no cache entry after a failed download', async () => {
    const { url } = serve({ body: BIG, truncateAt: 100_000 });
    const caches = new MemoryCacheStorage();
    const f = await RemoteFile.open(url, { ...FAST, cache: caches, retries: 1 });
    await expect(collect(f)).rejects.toThrow(NetworkError);
    expect((await caches.open(DEFAULT_CACHE_NAME)).urls()).toEqual([]);
    expect(await cachedSize({ cache: caches })).toBe(0);
  });

  test('a resumed download is cached whole and exact', async () => {
    const { url } = serve({ body: BIG, dropAfter: [40_000, 40_000] });
    const caches = new MemoryCacheStorage();
    await collect(await RemoteFile.open(url, { ...FAST, cache: caches }));
    expectBytes((await caches.open(DEFAULT_CACHE_NAME)).bodyOf(url), BIG);
  });

  test('the cache copy is written with backpressure: a slow cache never makes the whole file pile up', async () => {
    const size = 24 << 20; // three times the writer's 8 MiB queue
    const body = bytesOf(size, 11);
    const { url } = serve({ body, chunkSize: 256 << 10 });
    let cacheRead = 0;
    let delivered = 0;
    let maxAhead = 0;
    const hash = createHash('sha256');
    const cache = {
      stored: false,
      async match() { return undefined; },
      async put(req, res) {
        const reader = res.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          hash.update(value);
          cacheRead += value.byteLength;
          await new Promise((r) => setTimeout(r, 1));
        }
        this.stored = true;
      },
      async delete() { return false; },
      async keys() { return []; },
    };
    const f = await RemoteFile.open(url, { ...FAST, cache });
    await f.stream(0, null, (c) => {
      delivered += c.byteLength;
      maxAhead = Math.max(maxAhead, delivered - cacheRead);
    });
    expect(cache.stored).toBe(true);
    expect(hash.digest('hex')).toBe(sha256(body));
    expect(maxAhead).toBeLessThanOrEqual((8 << 20) + (1 << 20));
    expect(maxAhead).toBeGreaterThan(1 << 20);
  });

  test('cache name and cache key are configurable', async () => {
    const { url } = serve({ body: SMALL_JSON }, 'config.json');
    const caches = new MemoryCacheStorage();
    const opts = { ...FAST, cache: caches, cacheName: 'mine', cacheKey: (u) => `${u}?v=1` };
    expectBytes(await (await RemoteFile.open(url, opts)).bytes(), SMALL_JSON);
    expect(await caches.has(DEFAULT_CACHE_NAME)).toBe(false);
    expect((await caches.open('mine')).urls()).toEqual([`${url}?v=1`]);
    expect((await RemoteFile.open(url, opts)).fromCache).toBe(true);
  });

  test('when the cache refuses the entry (quota), the download still succeeds', async () => {
    const { url } = serve({ body: BIG });
    const cache = new MemoryCache({ quotaBytes: 1000 });
    const f = await RemoteFile.open(url, { ...FAST, cache });
    expectBytes(await collect(f), BIG);
    expect(f.cacheError).toHaveProperty('name', 'QuotaExceededError');
    expect(cache.urls()).toEqual([]);
  });

  test('listCachedModels, cachedSize and deleteCachedModel group files by model', async () => {
    const caches = new MemoryCacheStorage();
    const a = serve({ body: BIG }, 'model.safetensors');
    const b = serve({ body: SMALL_JSON }, 'config.json');
    const baseA = 'https://cdn.example/org/a/resolve/main/';
    await collect(await RemoteFile.open(a.url, { ...FAST, cache: caches, base: baseA, file: 'model.safetensors' }));
    await (await RemoteFile.open(b.url, { ...FAST, cache: caches, base: baseA, file: 'config.json' })).bytes();
    const c = serve({ body: bytesOf(777) }, 'stories.bin');
    await collect(await RemoteFile.open(c.url, { ...FAST, cache: caches, base: c.url }));

    const models = await listCachedModels({ cache: caches });
    expect(models.map((m) => [m.base, m.size, m.files.map((f) => f.file)])).toEqual([
      [baseA, BIG.byteLength + SMALL_JSON.byteLength, ['config.json', 'model.safetensors']],
      [c.url, 777, ['stories.bin']],
    ].sort((x, y) => (x[0] < y[0] ? -1 : 1)));
    expect(await cachedSize({ cache: caches })).toBe(BIG.byteLength + SMALL_JSON.byteLength + 777);
    expect(await deleteCachedModel(baseA, { cache: caches })).toBe(2);
    expect((await listCachedModels({ cache: caches })).map((m) => m.base)).toEqual([c.url]);
    expect(await listCachedModels({ cache: null })).toEqual([]);
  });
});

describe('cached copies stay current', () => {
  /** A fetch that counts its calls, so "no request" and "one attempt" can be checked even with the server gone. */
  const counting = () => {
    const calls = [];
    return { calls, fetch: (url, init) => { calls.push(init?.method ?? 'GET'); return fetch(url, init); } };
  };
  const V1 = bytesOf(50_000, 1);
  const V2 = bytesOf(60_000, 2);
  const V3 = bytesOf(70_000, 3);

  test('a new ETag brings the new bytes; unchanged costs one HEAD; never and offline use the copy without asking', async () => {
    const local = await startServer();
    const path = '/org/model/resolve/main/model.safetensors';
    local.route(path, { body: V1, etag: '"v1"' });
    const url = local.url(path);
    const caches = new MemoryCacheStorage();
    const open = (extra = {}) => {
      const c = counting();
      return RemoteFile.open(url, { ...FAST, cache: caches, fetch: c.fetch, ...extra }).then((f) => ({ f, calls: c.calls }));
    };
    expectBytes(await collect((await open()).f), V1);

    // Unchanged: one HEAD, and the bytes come from the cache.
    let { f, calls } = await open();
    expect([f.fromCache, calls]).toEqual([true, ['HEAD']]);
    expectBytes(await collect(f), V1);

    // The server publishes a new version under the same URL.
    local.route(path, { body: V2, etag: '"v2"' });
    ({ f, calls } = await open({ revalidate: 'never' }));
    expect([f.fromCache, calls]).toEqual([true, []]);
    expectBytes(await collect(f), V1);
    ({ f, calls } = await open());
    expect(f.fromCache).toBe(false);
    expect(calls[0]).toBe('HEAD');
    expectBytes(await collect(f), V2);
    ({ f, calls } = await open());
    expect([f.fromCache, calls]).toEqual([true, ['HEAD']]);
    expectBytes(await collect(f), V2);

    // Offline (the browser says so): the copy at once, no request, even though the server has moved on again.
    local.route(path, { body: V3, etag: '"v3"' });
    const navigator = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
    Object.defineProperty(globalThis, 'navigator', { value: { onLine: false }, configurable: true, writable: true });
    try {
      ({ f, calls } = await open({ retries: 4 }));
    } finally {
      if (navigator) Object.defineProperty(globalThis, 'navigator', navigator);
      else delete globalThis.navigator;
    }
    expect([f.fromCache, calls]).toEqual([true, []]);
    expectBytes(await collect(f), V2);

    // A server that cannot be reached: one attempt, no retries or backoff, and the copy serves.
    await local.close();
    ({ f, calls } = await open({ retries: 4, backoffMs: 60_000 }));
    expect([f.fromCache, calls]).toEqual([true, ['HEAD']]);
    expectBytes(await collect(f), V2);
  });

  test('Last-Modified alone is enough to notice a change', async () => {
    const local = await startServer();
    local.route('/lm.bin', { body: V1, headers: { 'last-modified': 'Tue, 01 Dec 2026 10:00:00 GMT' } });
    const url = local.url('/lm.bin');
    const caches = new MemoryCacheStorage();
    expectBytes(await collect(await RemoteFile.open(url, { ...FAST, cache: caches })), V1);
    expect((await RemoteFile.open(url, { ...FAST, cache: caches })).fromCache).toBe(true);
    local.route('/lm.bin', { body: V2, headers: { 'last-modified': 'Wed, 02 Dec 2026 10:00:00 GMT' } });
    const f = await RemoteFile.open(url, { ...FAST, cache: caches });
    expect(f.fromCache).toBe(false);
    expectBytes(await collect(f), V2);
    await local.close();
  });

  test('a copy the sha256 pin vouches for, or from a URL naming a commit, is used without a request', async () => {
    const local = await startServer();
    const pinned = '/pinned/model.safetensors';
    const commit = `/org/m/resolve/${'a1'.repeat(20)}/model.safetensors`;
    local.route(pinned, { body: V1, etag: '"v1"' });
    local.route(commit, { body: V1, etag: '"v1"' });
    const caches = new MemoryCacheStorage();
    const pin = sha256(V1);
    await collect(await RemoteFile.open(local.url(pinned), { ...FAST, cache: caches, sha256: pin }));
    await collect(await RemoteFile.open(local.url(commit), { ...FAST, cache: caches }));
    local.route(pinned, { body: V2, etag: '"v2"' });
    local.route(commit, { body: V2, etag: '"v2"' });
    for (const [path, extra] of [[pinned, { sha256: pin }], [commit, {}]]) {
      const c = counting();
      const f = await RemoteFile.open(local.url(path), { ...FAST, cache: caches, fetch: c.fetch, ...extra });
      expect([path, f.fromCache, c.calls]).toEqual([path, true, []]);
      expectBytes(await collect(f), V1);
    }
    await local.close();
  });

  test('revalidate takes only its two values', async () => {
    await expect(RemoteFile.open('http://127.0.0.1:9/x.bin', { ...FAST, revalidate: 'always' }))
      .rejects.toThrow(`revalidate must be 'online' or 'never', got "always"`);
  });
});

describe('resolveModelSource', () => {
  test('an HF-style folder with a single model.safetensors: opened once while planning, no probe of a sharded index', async () => {
    const base = server.url('/hf1/org/model/resolve/main/');
    server.route('/hf1/org/model/resolve/main/model.safetensors', { body: BIG });
    const before = server.requests.length;
    const plan = await resolveModelSource(base, FAST);
    expect(plan).toEqual({
      kind: 'hf', base,
      files: [
        { name: 'config.json', url: `${base}config.json`, required: true },
        { name: 'tokenizer.json', url: `${base}tokenizer.json`, required: false },
        { name: 'tokenizer_config.json', url: `${base}tokenizer_config.json`, required: false },
        { name: 'model.safetensors', url: `${base}model.safetensors`, required: true, opened: expect.any(RemoteFile) },
      ],
    });
    // A browser logs every 404 in red: a single-file model must not cost one for the index it does not have.
    expect(server.requests.slice(before).map((r) => r.path)).not.toContain('/hf1/org/model/resolve/main/model.safetensors.index.json');
  });

  test('a folder with neither weights file nor config.json says there is no model there, by the missing config.json', async () => {
    const base = server.url('/nothing/org/model/resolve/main/');
    const err = await resolveModelSource(base, FAST).catch((e) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toBe(`there is no model at ${base}: config.json was not found (HTTP 404)`);
    expect(err.details.url).toBe(`${base}config.json`);
  });

  test('a sharded model: the index is validated and its shards listed once each', async () => {
    const base = server.url('/hf2/org/model/resolve/main/');
    const index = {
      metadata: { total_size: 123 },
      weight_map: {
        'model.embed_tokens.weight': 'model-00001-of-00002.safetensors',
        'model.layers.0.self_attn.q_proj.weight': 'model-00001-of-00002.safetensors',
        'lm_head.weight': 'model-00002-of-00002.safetensors',
      },
    };
    const body = new TextEncoder().encode(JSON.stringify(index));
    server.route('/hf2/org/model/resolve/main/model.safetensors.index.json', { body });
    const caches = new MemoryCacheStorage();
    const plan = await resolveModelSource(base, { ...FAST, cache: caches, sha256: { 'config.json': sha256(SMALL_JSON) } });
    expect(plan.kind).toBe('hf');
    expect(plan.index).toEqual(index);
    expect(plan.files.map((f) => f.name)).toEqual([
      'config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors.index.json',
      'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors',
    ]);
    expect(plan.files[0].sha256).toBe(sha256(SMALL_JSON));
    expect(plan.files[5].url).toBe(`${base}model-00002-of-00002.safetensors`);
    // Planned again from the cache alone: no request at all.
    const before = server.requests.length;
    expect(await resolveModelSource(base, { ...FAST, cache: caches })).toEqual({ ...plan, files: plan.files.map(({ sha256: _, ...f }) => f) });
    expect(server.requests.length).toBe(before);
  });

  test('a server that cannot be reached is reported at once, by its host, not by a probed file name', async () => {
    const closed = await startServer();
    const base = closed.url('/org/model/resolve/main/');
    await closed.close();
    const err = await resolveModelSource(base, { ...FAST, retries: 4 }).catch((e) => e);
    expect(err).toBeInstanceOf(NetworkError);
    expect(err.code).toBe('UNREACHABLE');
    expect(err.message).toMatch(new RegExp(`^cannot reach 127\\.0\\.0\\.1:\\d+ to load the model at ${base.replace(/[.]/g, '\\.')}: `));
    expect(err.message).not.toContain('index.json');
    // One quick retry, not the four with growing waits that a dropped download gets.
    expect(err.cause.details.attempts).toBe(2);
  });

  test('a cached single-file model is planned without the network', async () => {
    const local = await startServer();
    local.route('/m/model.safetensors', { body: BIG });
    const base = local.url('/m/');
    const caches = new MemoryCacheStorage();
    const plan = await resolveModelSource(base, { ...FAST, cache: caches });
    const weights = plan.files.find((f) => f.name === 'model.safetensors');
    await collect(await RemoteFile.open(weights.url, { ...FAST, cache: caches, base }));
    await local.close();
    const { opened: _, ...weightsPlanned } = weights;
    expect(await resolveModelSource(base, { ...FAST, cache: caches, retries: 0 }))
      .toEqual({ ...plan, files: plan.files.map((f) => (f === weights ? weightsPlanned : f)) });
  });

  test.each([
    ['a parent path', '../evil.safetensors'],
    ['a subfolder', 'sub/model.safetensors'],
    ['an absolute URL', 'https://evil.example/x.safetensors'],
    ['an encoded slash', '..%2Fx.safetensors'],
    ['a hidden file', '.model.safetensors'],
    ['another extension', 'model.bin'],
    ['a non-string', 7],
  ])('an index pointing at %s is refused', async (_, shard) => {
    expect(() => validateIndex({ weight_map: { w: shard } }, 'index.json')).toThrow(FormatError);
  });

  test('malformed indexes are refused', () => {
    expect(() => validateIndex([], 'i')).toThrow(FormatError);
    expect(() => validateIndex({}, 'i')).toThrow(/weight_map/);
    expect(() => validateIndex({ weight_map: {} }, 'i')).toThrow(/empty/);
    expect(() => validateIndex({ weight_map: { a: 'a.safetensors' }, metadata: 3 }, 'i')).toThrow(/metadata/);
  });

  test('an index that is not JSON is a FormatError', async () => {
    const base = server.url('/hf3/');
    server.route('/hf3/model.safetensors.index.json', { body: new TextEncoder().encode('{nope') });
    await expect(resolveModelSource(base, FAST)).rejects.toThrow(FormatError);
  });

  test('direct .safetensors and llama2.c .bin URLs', async () => {
    expect(await resolveModelSource('https://cdn.example/m/weights.safetensors?download=true', { cache: null }))
      .toEqual({
        kind: 'safetensors', base: 'https://cdn.example/m/weights.safetensors?download=true',
        files: [{ name: 'weights.safetensors', url: 'https://cdn.example/m/weights.safetensors?download=true', required: true }],
      });
    expect(await resolveModelSource('https://cdn.example/stories260K.bin', { cache: null, tokenizerUrl: 'tok512.bin' }))
      .toEqual({
        kind: 'llama2c', base: 'https://cdn.example/stories260K.bin',
        files: [
          { name: 'stories260K.bin', url: 'https://cdn.example/stories260K.bin', required: true },
          { name: 'tok512.bin', url: 'https://cdn.example/tok512.bin', required: true },
        ],
      });
  });

  test('anything else is a ModelSourceError with code BAD_SOURCE', async () => {
    const err = await resolveModelSource('https://cdn.example/model.onnx', { cache: null }).catch((e) => e);
    expect(err).toBeInstanceOf(ModelSourceError);
    expect(err.code).toBe('BAD_SOURCE');
    await expect(resolveModelSource(42)).rejects.toThrow(InvalidArgumentError);
  });
});

describe('errors across postMessage', () => {
  test('a WebLoRAError subclass keeps class, name, code, message, stack, details and cause', () => {
    const cause = new TypeError('socket hang up');
    const err = new NetworkError('download failed', { cause, details: { url: 'http://x/', attempts: 3 } });
    const back = deserializeError(structuredClone(err.toJSON()));
    expect(back).toBeInstanceOf(NetworkError);
    expect(back).toBeInstanceOf(WebLoRAError);
    expect(back.name).toBe('NetworkError');
    expect(back.code).toBe('NETWORK_ERROR');
    expect(back.message).toBe('download failed');
    expect(back.stack).toBe(err.stack);
    expect(back.details).toEqual({ url: 'http://x/', attempts: 3 });
    expect(back.cause.name).toBe('TypeError');
    expect(back.cause.message).toBe('socket hang up');
    expect(WebLoRAError.fromJSON(JSON.parse(JSON.stringify(err))).code).toBe('NETWORK_ERROR');
  });

  test('a specific code survives, and StorageFullError details too', () => {
    const e = new StorageFullError('full', { details: { needed: 10, available: 2 } });
    const back = WebLoRAError.fromJSON(structuredClone(e.toJSON()));
    expect(back).toBeInstanceOf(StorageFullError);
    expect(back.details).toEqual({ needed: 10, available: 2 });
    const f = new FormatError('x', { code: 'BAD_SOURCE' });
    expect(WebLoRAError.fromJSON(f.toJSON()).code).toBe('BAD_SOURCE');
  });

  test('AbortError comes back as a DOMException AbortError', () => {
    const back = deserializeError(structuredClone(serializeError(new DOMException('stop', 'AbortError'))));
    expect(back).toBeInstanceOf(DOMException);
    expect(back.name).toBe('AbortError');
    expect(isAbortError(back)).toBe(true);
  });

  test('unknown error names and non-errors are kept readable', () => {
    const back = deserializeError(serializeError(new RangeError('bad')));
    expect(back.name).toBe('RangeError');
    expect(back.message).toBe('bad');
    expect(deserializeError(serializeError('plain string')).message).toBe('plain string');
  });
});
