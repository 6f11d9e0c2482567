// A local HTTP server for download tests: serves byte arrays with or without Range support and misbehaves on
// request (dropped connections, short bodies, error statuses, slow delivery, content that changes).

import http from 'node:http';

/**
 * @typedef {object} Route
 * @property {Uint8Array} body what the file contains
 * @property {boolean} [ranges] honour Range requests (default true); false answers every GET with 200 + whole body
 * @property {boolean} [chunked] omit Content-Length on 200 responses (chunked transfer encoding)
 * @property {number} [chunkSize] bytes per write (default 16 KiB)
 * @property {number} [delayMs] pause before each write (slow delivery)
 * @property {(number | undefined)[]} [dropAfter] the k-th GET of this path is cut (socket destroyed) after
 *   dropAfter[k] body bytes
 * @property {number} [truncateAt] every GET stops at this absolute byte by dropping the connection, while the
 *   headers announce the whole file
 * @property {number} [cleanEndAt] every GET ends cleanly at this absolute byte, without Content-Length (so
 *   there is no framing error: only the size announced elsewhere shows that bytes are missing)
 * @property {boolean} [head] answer HEAD requests (default true; false answers 405)
 * @property {number[]} [statuses] error statuses answered to the next requests, one each, before serving
 * @property {string | ((getIndex: number) => string)} [etag]
 * @property {number} [maxRangeBytes] serve at most this many bytes per 206 response
 * @property {Record<string, string>} [headers] extra response headers
 */

/**
 * @typedef {object} LoggedRequest
 * @property {string} method
 * @property {string} path
 * @property {string | null} range the Range header as received
 * @property {number} status
 */

/**
 * Starts a server on 127.0.0.1 with a random port.
 * @param {Record<string, Route>} [routes] keyed by path ('/model.bin')
 */
export async function startServer(routes = {}) {
  /** @type {Map<string, Route>} */
  const table = new Map(Object.entries(routes));
  /** @type {LoggedRequest[]} */
  const requests = [];
  /** @type {Map<string, number>} */
  const getCounts = new Map();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => res.destroy(err));
  });

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  async function handle(req, res) {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    /** @type {LoggedRequest} */
    const log = { method: req.method ?? 'GET', path, range: req.headers.range ?? null, status: 0 };
    requests.push(log);
    const route = table.get(path);
    if (!route) {
      log.status = 404;
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    if (route.statuses?.length) {
      log.status = /** @type {number} */ (route.statuses.shift());
      res.writeHead(log.status, { 'content-type': 'text/plain' });
      res.end(`status ${log.status}`);
      return;
    }
    const body = route.body;
    const size = body.byteLength;
    const ranges = route.ranges !== false;
    const index = req.method === 'GET' ? (getCounts.get(path) ?? 0) : -1;
    if (req.method === 'GET') getCounts.set(path, index + 1);
    /** @type {Record<string, string>} */
    const headers = { 'content-type': 'application/octet-stream', ...route.headers };
    const etag = typeof route.etag === 'function' ? route.etag(Math.max(0, index)) : route.etag;
    if (etag) headers.etag = etag;
    if (ranges) headers['accept-ranges'] = 'bytes';

    if (req.method === 'HEAD') {
      if (route.head === false) {
        log.status = 405;
        res.writeHead(405);
        res.end();
        return;
      }
      log.status = 200;
      res.writeHead(200, { ...headers, 'content-length': String(size) });
      res.end();
      return;
    }
    if (req.method !== 'GET') {
      log.status = 405;
      res.writeHead(405);
      res.end();
      return;
    }

    let start = 0;
    let end = size;
    let status = 200;
    const range = ranges ? parseRange(req.headers.range, size) : null;
    if (range === 'unsatisfiable') {
      log.status = 416;
      res.writeHead(416, { 'content-range': `bytes */${size}` });
      res.end();
      return;
    }
    if (range) {
      start = range.start;
      end = Math.min(range.end + 1, size, route.maxRangeBytes ? start + route.maxRangeBytes : Infinity);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end - 1}/${size}`;
      headers['content-length'] = String(end - start);
    } else if (!route.chunked) {
      headers['content-length'] = String(size);
    }

    let stopAt = end;
    let drop = false;
    const cut = route.dropAfter?.[index];
    if (cut !== undefined && start + cut < stopAt) {
      stopAt = start + cut;
      drop = true;
    }
    if (route.truncateAt !== undefined && route.truncateAt < stopAt) {
      stopAt = Math.max(start, route.truncateAt);
      drop = true;
    }
    if (route.cleanEndAt !== undefined && route.cleanEndAt < stopAt) {
      stopAt = Math.max(start, route.cleanEndAt);
      delete headers['content-length'];
    }

    log.status = status;
    res.writeHead(status, headers);
    res.flushHeaders();
    const chunkSize = route.chunkSize ?? 16 << 10;
    for (let o = start; o < stopAt; o += chunkSize) {
      if (route.delayMs) await sleep(route.delayMs);
      if (res.destroyed || res.socket?.destroyed) return;
      const piece = body.subarray(o, Math.min(stopAt, o + chunkSize));
      // Wait until the bytes are handed to the socket, so a drop that follows happens after them.
      await new Promise((resolve) => res.write(piece, () => resolve(undefined)));
    }
    if (drop) {
      res.socket?.destroy();
      return;
    }
    res.end();
  }

  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  const origin = `http://127.0.0.1:${port}`;

  return {
    origin,
    requests,
    /** @param {string} path @returns {string} absolute URL */
    url: (path) => origin + path,
    /** @param {string} path @param {Route} route */
    route(path, route) {
      table.set(path, route);
    },
    /** @param {string} path */
    get(path) {
      return table.get(path);
    },
    /** Requests to a path, optionally of one method. @param {string} path @param {string} [method] */
    requestsTo(path, method) {
      return requests.filter((r) => r.path === path && (!method || r.method === method));
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
    },
  };
}

/**
 * @param {string | undefined} header
 * @param {number} size
 * @returns {{ start: number, end: number } | 'unsatisfiable' | null} end inclusive; null: no usable Range
 */
function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    return n === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
