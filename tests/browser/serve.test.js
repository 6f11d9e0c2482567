// tools/serve.js, the static server the browser tests and the demo run on: MIME types, Range and HEAD, ETags and
// conditional requests, mounts, the request log, refusal of paths outside the served folders, bare-import rewriting,
// the cross-origin isolation headers.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

import { startServer } from '../../tools/serve.js';
import { DATA, repoRoot, sharedDir, waitFor } from './helpers.js';

describe('tools/serve.js', () => {
  let server;
  const log = [];

  beforeAll(async () => {
    server = await startServer({ mounts: { '/shared/': sharedDir }, onRequest: (e) => log.push(e) });
  });

  afterAll(async () => {
    await server?.close();
  });

  const get = (p, init) => fetch(server.url(p), init);

  test('binds 127.0.0.1 and serves MIME types browsers insist on', async () => {
    expect(server.origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const types = {
      '/web/runtime/weblora.wasm': 'application/wasm',
      '/web/index.js': 'text/javascript; charset=utf-8',
      '/package.json': 'application/json',
      [`/shared/${DATA.storiesBin}`]: 'application/octet-stream',
      '/shared/models/tiny-random-llama/model.safetensors': 'application/octet-stream',
      '/tests/browser/page.html': 'text/html; charset=utf-8',
    };
    for (const [p, type] of Object.entries(types)) {
      const res = await get(p, { method: 'HEAD' });
      expect([p, res.status, res.headers.get('content-type')]).toEqual([p, 200, type]);
    }
  });

  test('answers Range requests with 206 and Content-Range, HEAD with the size and no body', async () => {
    const file = path.join(sharedDir, DATA.storiesBin);
    const bytes = readFileSync(file);
    const head = await get(`/shared/${DATA.storiesBin}`, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(String(bytes.length));
    expect(head.headers.get('accept-ranges')).toBe('bytes');
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    const mid = await get(`/shared/${DATA.storiesBin}`, { headers: { Range: 'bytes=100-227' } });
    expect(mid.status).toBe(206);
    expect(mid.headers.get('content-range')).toBe(`bytes 100-227/${bytes.length}`);
    expect(Buffer.from(await mid.arrayBuffer())).toEqual(bytes.subarray(100, 228));

    const open = await get(`/shared/${DATA.storiesBin}`, { headers: { Range: `bytes=${bytes.length - 10}-` } });
    expect(Buffer.from(await open.arrayBuffer())).toEqual(bytes.subarray(bytes.length - 10));
    const suffix = await get(`/shared/${DATA.storiesBin}`, { headers: { Range: 'bytes=-7' } });
    expect(Buffer.from(await suffix.arrayBuffer())).toEqual(bytes.subarray(bytes.length - 7));

    const past = await get(`/shared/${DATA.storiesBin}`, { headers: { Range: `bytes=${bytes.length}-` } });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${bytes.length}`);
  });

  test('ETags make conditional requests cheap and stale If-Range falls back to the whole file', async () => {
    const first = await get('/web/runtime/weblora.wasm');
    const etag = first.headers.get('etag');
    expect(etag).toMatch(/^"[0-9a-f-]+"$/);
    await first.arrayBuffer();
    const again = await get('/web/runtime/weblora.wasm', { headers: { 'If-None-Match': etag } });
    expect(again.status).toBe(304);
    const ranged = await get('/web/runtime/weblora.wasm', { headers: { Range: 'bytes=0-3', 'If-Range': etag } });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer())).toEqual(Buffer.from([0, 0x61, 0x73, 0x6d])); // "\0asm"
    const stale = await get('/web/runtime/weblora.wasm', { headers: { Range: 'bytes=0-3', 'If-Range': '"something-else"' } });
    expect(stale.status).toBe(200);
    expect((await stale.arrayBuffer()).byteLength).toBe(readFileSync(path.join(repoRoot, 'web/runtime/weblora.wasm')).length);
  });

  test('refuses dotfiles and paths that climb out of the served folders', async () => {
    // Sent raw: fetch would normalise the dot segments away before they reach the server.
    const status = (rawPath) => new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: server.port, path: rawPath, method: 'GET' }, (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on('error', reject);
      req.end();
    });
    // Dot segments the URL parser resolves stay inside the root ('/../x' is '/x'); encoded slashes hide '..' from
    // it, so those must be refused after decoding.
    const outside = ['/.git/config', '/web/.%2e/.git/config', '/..%2fshared/DATA.md', '/web/..%2f..%2f..%2fetc/passwd',
      '/shared/..%2f..%2fmain/package.json', '/../../etc/passwd', '/nope.js'];
    for (const p of outside) expect([p, await status(p)]).toEqual([p, 404]);
    expect(await status('/shared/DATA.md')).toBe(200);
    const redirect = await get('/demo', { redirect: 'manual' });
    expect([redirect.status, redirect.headers.get('location')]).toEqual([301, '/demo/']);
  });

  test('sends the cross-origin isolation headers (COOP/COEP) on every file unless told not to', async () => {
    for (const p of ['/demo/', '/web/runtime/worker.js', '/web/runtime/thread.js', '/web/runtime/weblora-threads.wasm', `/shared/${DATA.storiesBin}`]) {
      const res = await get(p, { method: 'HEAD' });
      expect([p, res.headers.get('cross-origin-opener-policy'), res.headers.get('cross-origin-embedder-policy')])
        .toEqual([p, 'same-origin', 'require-corp']);
    }
    const plain = await startServer({ isolation: false });
    try {
      const res = await fetch(plain.url('/demo/'), { method: 'HEAD' });
      expect([res.status, res.headers.get('cross-origin-opener-policy'), res.headers.get('cross-origin-embedder-policy')])
        .toEqual([200, null, null]);
    } finally {
      await plain.close();
    }
  });

  test('the no-bundler build needs no import rewriting: dist/ modules import nothing and name no source map', async () => {
    for (const file of ['/dist/weblora.js', '/dist/worker.js', '/dist/thread.js', '/dist/engine.js']) {
      const source = await (await get(file)).text();
      expect(source.length).toBeGreaterThan(1000);
      // Comments may mention imports (JSDoc types); code may not.
      const text = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
      expect([file, [...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s*(['"])([^'"]+)\1/gm)].map((m) => m[2])]).toEqual([file, []]);
      expect([file, /import\(\s*['"]/.test(text), /sourceMappingURL/.test(text)]).toEqual([file, false, false]);
    }
  });

  test('logs every request with method, path, range, status and bytes', async () => {
    const before = log.length;
    await (await get(`/shared/${DATA.storiesTok}`, { headers: { Range: 'bytes=0-9' } })).arrayBuffer();
    await (await get('/missing')).arrayBuffer();
    // The server logs a request when its response finishes, which can be just after the client has the body.
    await waitFor(() => log.length, (n) => n >= before + 2, 10_000);
    const entries = log.slice(before).map(({ method, path: p, range, status, bytes }) => ({ method, path: p, range, status, bytes }));
    expect(entries).toEqual([
      { method: 'GET', path: `/shared/${DATA.storiesTok}`, range: 'bytes=0-9', status: 206, bytes: 10 },
      { method: 'GET', path: '/missing', range: null, status: 404, bytes: 10 },
    ]);
    expect(server.requests.length).toBe(log.length);
  });

  test('cors: every response, errors too, lets other origins read it; preflights are answered', async () => {
    const open = await startServer({ mounts: { '/shared/': sharedDir }, cors: true });
    try {
      const ranged = await fetch(open.url(`/shared/${DATA.storiesBin}`), { headers: { Range: 'bytes=0-3' } });
      expect(ranged.status).toBe(206);
      expect(ranged.headers.get('access-control-allow-origin')).toBe('*');
      expect(ranged.headers.get('access-control-expose-headers')).toMatch(/Content-Range/);
      const missing = await fetch(open.url('/shared/no-such-file.json'));
      expect([missing.status, missing.headers.get('access-control-allow-origin')]).toEqual([404, '*']);
      const preflight = await fetch(open.url(`/shared/${DATA.storiesBin}`), { method: 'OPTIONS' });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get('access-control-allow-headers')).toBe('Range');
      // Without the option nothing is shared.
      expect((await get('/package.json', { method: 'HEAD' })).headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await open.close();
    }
  });
});
