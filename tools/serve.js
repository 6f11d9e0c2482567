#!/usr/bin/env node
// serve.js: a small static HTTP server for the repository (web/, demo/, tests/browser/) on 127.0.0.1, with the
// MIME types, Range requests and ETags a browser needs to run the package and the demo without a build, and the
// cross-origin isolation headers that give the package its threads.
//
//   node tools/serve.js [--port 8080] [--mount /shared/=../shared] [--cors] [--no-isolation] [--quiet]
import http from 'node:http';
import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Content types by extension; anything unknown is served as bytes. */
export const MIME_TYPES = Object.freeze({
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.map': 'application/json',
  '.bin': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
  '.model': 'application/octet-stream',
});

/**
 * @typedef {object} RequestLogEntry
 * @property {number} time ms since the epoch, when the request arrived
 * @property {string} method
 * @property {string} path URL path (without query)
 * @property {string | null} range the Range header as received
 * @property {number} status
 * @property {number} bytes body bytes sent
 * @property {string} [userAgent]
 */

/**
 * @typedef {object} ServeOptions
 * @property {string} [root] folder served at '/' (default: the repository root)
 * @property {number} [port] 0 picks a free port (default)
 * @property {string} [host] default '127.0.0.1': never reachable from other machines
 * @property {Record<string, string>} [mounts] extra folders by URL prefix, e.g. { '/shared/': '../shared' }
 *   (relative paths are taken from the root); the longest matching prefix wins
 * @property {(entry: RequestLogEntry) => void} [onRequest] called once per request when its response ends
 * @property {(urlPath: string, filePath: string) => Record<string, string> | undefined} [headers] extra or
 *   overriding response headers per file (e.g. Cache-Control for an offline test)
 * @property {boolean} [cors] let pages of any origin read everything, as a CDN or the Hugging Face Hub does: CORS
 *   headers on every response (errors too, so a page can tell a 404 from a refusal), Range and ETag exposed, and
 *   preflight requests answered. That is all a cross-origin isolated page (Cross-Origin-Embedder-Policy:
 *   require-corp) needs from a model host: the package reads models with fetch() in CORS mode, and COEP accepts a
 *   CORS response without a Cross-Origin-Resource-Policy header
 * @property {boolean} [isolation] default true: send Cross-Origin-Opener-Policy: same-origin and
 *   Cross-Origin-Embedder-Policy: require-corp, which make pages cross-origin isolated (SharedArrayBuffer, so the
 *   package runs its core on several threads); false serves pages as a host without those headers would
 */

/** The headers that make a page cross-origin isolated. */
export const ISOLATION_HEADERS = Object.freeze({
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
});

/**
 * @typedef {object} RunningServer
 * @property {string} origin e.g. http://127.0.0.1:41234
 * @property {number} port
 * @property {(p?: string) => string} url absolute URL of a path on this server
 * @property {RequestLogEntry[]} requests everything served so far, in order
 * @property {() => Promise<void>} close stops listening and drops open connections
 */

/**
 * Starts the server.
 * @param {ServeOptions} [options]
 * @returns {Promise<RunningServer>}
 */
export async function startServer(options = {}) {
  const root = path.resolve(options.root ?? repoRoot);
  const host = options.host ?? '127.0.0.1';
  const isolation = options.isolation === false ? {} : ISOLATION_HEADERS;
  const mounts = Object.entries(options.mounts ?? {})
    .map(([prefix, dir]) => ({ prefix: prefix.endsWith('/') ? prefix : `${prefix}/`, dir: path.resolve(root, dir) }))
    .sort((a, b) => b.prefix.length - a.prefix.length);
  /** @type {RequestLogEntry[]} */
  const requests = [];

  const server = http.createServer((req, res) => {
    /** @type {RequestLogEntry} */
    const entry = {
      time: Date.now(), method: req.method ?? 'GET', path: (req.url ?? '/').split('?')[0], range: req.headers.range ?? null,
      status: 0, bytes: 0, userAgent: req.headers['user-agent'],
    };
    const write = res.write.bind(res);
    const end = res.end.bind(res);
    // Count body bytes whatever way they are written (piped streams included).
    res.write = (chunk, ...rest) => {
      if (chunk) entry.bytes += Buffer.byteLength(chunk);
      return write(chunk, ...rest);
    };
    res.end = (chunk, ...rest) => {
      if (chunk && typeof chunk !== 'function') entry.bytes += Buffer.byteLength(chunk);
      return end(chunk, ...rest);
    };
    res.on('close', () => {
      entry.status = res.statusCode;
      requests.push(entry);
      try {
        options.onRequest?.(entry);
      } catch (err) {
        console.error('serve.js: onRequest hook failed:', err);
      }
    });
    if (options.cors) {
      res.setHeader('access-control-allow-origin', '*');
      res.setHeader('access-control-expose-headers', 'Accept-Ranges, Content-Length, Content-Range, ETag');
      if (req.method === 'OPTIONS') {
        res.writeHead(204, { 'access-control-allow-methods': 'GET, HEAD', 'access-control-allow-headers': 'Range', 'access-control-max-age': '86400' });
        res.end();
        return;
      }
    }
    handle(req, res).catch((err) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`internal error: ${err.message}\n`);
      } else {
        res.destroy(err);
      }
    });
  });

  /** @param {http.IncomingMessage} req @param {http.ServerResponse} res */
  async function handle(req, res) {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return plain(res, 405, 'method not allowed\n', { allow: 'GET, HEAD' });
    }
    let urlPath;
    try {
      urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    } catch {
      return plain(res, 400, 'bad URL\n');
    }
    const target = locate(urlPath);
    if (!target) return plain(res, 404, 'not found\n');
    let info;
    try {
      info = await stat(target);
    } catch {
      return plain(res, 404, 'not found\n');
    }
    if (info.isDirectory()) {
      if (!urlPath.endsWith('/')) return plain(res, 301, 'moved\n', { location: `${urlPath}/` });
      const index = path.join(target, 'index.html');
      // The repository root has no page of its own: send people to the demo.
      if (!existsSync(index) && urlPath === '/' && existsSync(path.join(root, 'demo/index.html'))) {
        return plain(res, 302, 'see /demo/\n', { location: '/demo/' });
      }
      if (!existsSync(index)) return plain(res, 404, 'not found\n');
      return serveFile(req, res, urlPath, index, await stat(index));
    }
    if (!info.isFile()) return plain(res, 404, 'not found\n');
    return serveFile(req, res, urlPath, target, info);
  }

  /**
   * The file a URL path names, or null when it would leave the served folders or touch a dotfile.
   * @param {string} urlPath decoded
   */
  function locate(urlPath) {
    if (urlPath.includes('\0')) return null;
    const segments = urlPath.split('/');
    if (segments.some((s) => s.startsWith('.') && s.length > 0)) return null; // .git, .., .env, ...
    const mount = mounts.find((m) => urlPath.startsWith(m.prefix) || `${urlPath}/` === m.prefix);
    const base = mount ? mount.dir : root;
    const rel = mount ? urlPath.slice(mount.prefix.length) : urlPath.slice(1);
    const full = path.resolve(base, rel);
    if (full !== base && !full.startsWith(base + path.sep)) return null;
    return full;
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   * @param {string} urlPath
   * @param {string} file
   * @param {import('node:fs').Stats} info
   */
  async function serveFile(req, res, urlPath, file, info) {
    const ext = path.extname(file).toLowerCase();
    const type = MIME_TYPES[ext] ?? 'application/octet-stream';
    const size = info.size;
    const etag = `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    /** @type {Record<string, string>} */
    const headers = {
      'content-type': type,
      'accept-ranges': 'bytes',
      etag,
      'last-modified': info.mtime.toUTCString(),
      // Revalidate every time (cheap with the ETag), so edits show up on reload.
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      ...isolation,
    };
    // A service worker under demo/ may control the whole origin: its scope must cover /web/runtime/worker.js too.
    if (path.basename(file) === 'sw.js') headers['service-worker-allowed'] = '/';
    Object.assign(headers, options.headers?.(urlPath, file) ?? {});

    const inm = req.headers['if-none-match'];
    if (inm && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)) {
      res.writeHead(304, pick(headers, ['etag', 'cache-control', 'last-modified', 'service-worker-allowed',
        ...Object.keys(isolation)]));
      return res.end();
    }
    let start = 0;
    let end = size; // exclusive
    let status = 200;
    const ifRange = req.headers['if-range'];
    const rangeAllowed = !ifRange || ifRange.trim() === etag || ifRange.trim() === headers['last-modified'];
    if (req.headers.range && rangeAllowed) {
      const r = parseRange(req.headers.range, size);
      if (r === 'unsatisfiable') {
        return plain(res, 416, 'range not satisfiable\n', { 'content-range': `bytes */${size}`, 'accept-ranges': 'bytes', etag });
      }
      if (r) {
        ({ start, end } = r);
        status = 206;
        headers['content-range'] = `bytes ${start}-${end - 1}/${size}`;
      }
    }
    headers['content-length'] = String(end - start);
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || end === start) return res.end();
    await new Promise((resolve, reject) => {
      const stream = createReadStream(file, { start, end: end - 1 });
      stream.on('error', reject);
      res.on('close', () => {
        stream.destroy();
        resolve(undefined);
      });
      stream.pipe(res);
    });
    return undefined;
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve(undefined);
    });
  });
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  const origin = `http://${host}:${port}`;
  return {
    origin,
    port,
    url: (p = '/') => new URL(p, origin).href,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
    },
  };
}

/**
 * @param {http.ServerResponse} res
 * @param {number} status
 * @param {string} text
 * @param {Record<string, string>} [headers]
 */
function plain(res, status, text, headers = {}) {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

/** @param {Record<string, string>} obj @param {string[]} keys */
function pick(obj, keys) {
  return Object.fromEntries(keys.filter((k) => obj[k] !== undefined).map((k) => [k, obj[k]]));
}

/**
 * One byte range (multiple ranges are answered with the whole file, which HTTP allows).
 * @param {string} header
 * @param {number} size
 * @returns {{ start: number, end: number } | 'unsatisfiable' | null} end exclusive; null: ignore the header
 */
export function parseRange(header, size) {
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size };
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || last < start) return 'unsatisfiable';
  return { start, end: last + 1 };
}

/** Command line: serve until interrupted. */
async function main(argv) {
  let port = 8080;
  let quiet = false;
  let cors = false;
  let isolation = true;
  /** @type {Record<string, string>} */
  const mounts = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--port' || a === '-p') port = Number(argv[++i]);
    else if (a.startsWith('--port=')) port = Number(a.slice(7));
    else if (a === '--mount') {
      const [prefix, dir] = String(argv[++i]).split('=');
      mounts[prefix] = path.resolve(process.cwd(), dir);
    } else if (a === '--cors') cors = true;
    else if (a === '--no-isolation') isolation = false;
    else if (a === '--quiet' || a === '-q') quiet = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: node tools/serve.js [--port 8080] [--mount /prefix/=folder] [--cors] [--no-isolation] [--quiet]\n');
      return;
    } else {
      throw new Error(`unknown argument ${a} (try --help)`);
    }
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port must be an integer from 0 to 65535');
  const server = await startServer({
    port,
    mounts,
    cors,
    isolation,
    onRequest: quiet ? undefined : (e) => process.stderr.write(`${e.status} ${e.method} ${e.path}${e.range ? ` (${e.range})` : ''} ${e.bytes} B\n`),
  });
  process.stdout.write(`weblora: serving ${repoRoot} at ${server.origin}/  (demo: ${server.origin}/demo/)\n`);
  const stop = async () => {
    await server.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`serve.js: ${err.message}\n`);
    process.exit(1);
  });
}
