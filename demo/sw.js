// sw.js: the demo's service worker. It precaches the app shell and the whole module graph of the package under
// ../web/ (found by following imports from its entry points, so nothing is forgotten when files change), including
// both builds of the core, and serves them network-first with the cache as the offline fallback. Everything it serves
// carries the cross-origin isolation headers (COOP/COEP), so the demo gets the package's threads even on a static
// host that cannot set headers (the page reloads once into isolation when this worker first takes control). Model
// files are left to the package's own Cache API layer, which reads them by ranges and keeps them across versions
// of this worker.
// A new version (a changed byte in this file: bump VERSION with every release) installs in the background and
// waits; the page offers a reload and sends 'skip-waiting' when the person accepts, so a running training job or an
// unsaved adapter is never lost to an update.
const VERSION = 'v3';
const CACHE = `weblora-demo-shell-${VERSION}`;
const CACHE_PREFIX = 'weblora-demo-shell-';
/** Give up on a network that does not answer in this time and use the cached copy. */
const NETWORK_TIMEOUT_MS = 4000;

const here = (path) => new URL(path, self.location.href).href;
const SHELL = [
  './', './index.html', './app.js', './style.css', './manifest.webmanifest', './icon.svg',
  './icons/icon-192.png', './icons/icon-512.png', './icons/maskable-512.png', './icons/apple-touch-icon.png',
].map(here);
/** Optional: cached when present (the sample text exists only in some builds). */
const OPTIONAL = ['./data/personal-style.txt'].map(here);
/** Module graph roots: the page imports index.js, the package starts worker.js and thread.js in Workers. */
const ROOTS = ['./app.js', '../web/index.js', '../web/worker.js', '../web/thread.js'].map(here);
/** Both builds of the core in both SIMD flavours (the package picks relaxed SIMD where the browser has it). */
const WASM = ['weblora', 'weblora-threads', 'weblora-relaxed', 'weblora-relaxed-threads'].map((n) => here(`../web/${n}.wasm`));
/** The headers that make a page cross-origin isolated (SharedArrayBuffer, so the core can run on several threads). */
const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
/** Paths the shell owns; everything else (models above all) goes straight to the network untouched. */
const OWNED = [here('./'), here('../web/')];
const NOT_OWNED = [here('./models/')];

/** Static import specifiers of a module: `from '...'`, `import '...'`, literal `import('...')`. */
function importsOf(source) {
  const out = new Set();
  const patterns = [
    /\b(?:import|export)\b[\s\w{},*$]*?\bfrom\s*(['"])([^'"\n]+)\1/g,
    /\bimport\s*(['"])([^'"\n]+)\1/g,
    /\bimport\s*\(\s*(['"])([^'"\n]+)\1\s*\)/g,
  ];
  for (const re of patterns) for (const m of source.matchAll(re)) out.add(m[2]);
  return [...out];
}

/**
 * Fetches every module reachable from the roots (same origin only; node: and other schemes are Node-only paths the
 * browser never takes) and stores them with the shell.
 */
async function precache() {
  const cache = await caches.open(CACHE);
  const put = async (url, required) => {
    const res = await fetch(url, { cache: 'no-cache' });
    if (!res.ok) {
      if (required) throw new Error(`cannot precache ${url}: HTTP ${res.status}`);
      return null;
    }
    await cache.put(url, res.clone());
    return res;
  };
  await Promise.all(SHELL.map((u) => put(u, true)));
  await Promise.all(OPTIONAL.map((u) => put(u, false).catch(() => null)));
  await Promise.all(WASM.map((u) => put(u, true)));
  const seen = new Set();
  const queue = [...ROOTS];
  while (queue.length) {
    const batch = queue.splice(0).filter((u) => !seen.has(u));
    batch.forEach((u) => seen.add(u));
    await Promise.all(batch.map(async (url) => {
      const res = await put(url, true);
      const source = await res.text();
      for (const spec of importsOf(source)) {
        if (!/^(\.{1,2}\/|\/)/.test(spec)) continue; // bare or scheme specifiers: not fetchable as they are
        const next = new URL(spec, url);
        if (next.origin === self.location.origin && !seen.has(next.href)) queue.push(next.href);
      }
    }));
  }
}

self.addEventListener('install', (event) => {
  event.waitUntil(precache());
});

self.addEventListener('message', (event) => {
  if (event.data?.type === 'skip-waiting') self.skipWaiting();
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    // Only this worker's own old caches: the package's model cache is not ours to drop.
    for (const name of await caches.keys()) {
      if (name.startsWith(CACHE_PREFIX) && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

/** @param {Request} request */
function owned(request) {
  if (request.method !== 'GET' || request.headers.has('range')) return false;
  const url = request.url.split('#')[0];
  if (!url.startsWith(self.location.origin)) return false;
  if (NOT_OWNED.some((p) => url.startsWith(p))) return false;
  return OWNED.some((p) => url.startsWith(p));
}

/**
 * The response with the isolation headers added (the server's own, when it sends them, stay as they are).
 * @param {Response} res
 */
function isolated(res) {
  if (res.type !== 'basic' && res.type !== 'default') return res;
  const headers = new Headers(res.headers);
  for (const [name, value] of Object.entries(ISOLATION)) if (!headers.has(name)) headers.set(name, value);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

/**
 * Network first, so a deployed update shows at once; the cache when the network fails, errs or stalls. Pages are
 * matched without their query (?model=...) so any demo URL opens offline.
 * @param {Request} request
 */
async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  const navigate = request.mode === 'navigate';
  const cached = () => cache.match(request, { ignoreSearch: navigate });
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), NETWORK_TIMEOUT_MS);
  try {
    const res = await fetch(request, { signal: controller.signal });
    if (res.ok && res.type === 'basic') {
      const key = navigate ? new URL(request.url).origin + new URL(request.url).pathname : request;
      await cache.put(key, res.clone());
      return res;
    }
    if (res.ok) return res;
    return (await cached()) ?? res;
  } catch (err) {
    const hit = await cached();
    if (hit) return hit;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

self.addEventListener('fetch', (event) => {
  if (!owned(event.request)) return;
  event.respondWith(networkFirst(event.request).then(isolated));
});
