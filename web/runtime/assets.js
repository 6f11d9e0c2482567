// assets.js: the package's Worker scripts (worker.js, thread.js) and builds of the core (*.wasm) as files: beside
// this module (Node, the package served as it is, the no-bundler build dist/), or wherever a bundler that follows
// `new URL('./x', import.meta.url)` emitted them (Vite, webpack, Turbopack: they build each Worker script with its
// imports). Bundlers recognise only that form written out at the call site, so it is written out here (and, for
// the engine's worker, in client.js: the worker's own imports lead here, and Vite refuses a Worker script that
// starts itself). embedded.js offers the same three functions for bundlers that emit no such files; package.json's
// "#assets" chooses between them.
import { besidePackage, moduleWorker, sameOrigin } from './workers.js';
import { InvalidArgumentError } from '../errors.js';

/**
 * The engine's Worker when this bundle carries its script: never here, where client.js starts worker.js.
 * @param {string} _name shown in the browser's developer tools
 * @returns {Worker | null}
 */
export function carriedEngineWorker(_name) {
  return null;
}

/**
 * Start one thread of the core's pool (thread.js) in a browser.
 * @param {string} name
 * @returns {Worker}
 */
export function startThreadWorker(name) {
  if (sameOrigin(import.meta.url)) return new Worker(new URL('./thread.js', import.meta.url), { type: 'module', name });
  return moduleWorker(besidePackage('thread.js'), name);
}

/**
 * Where a build of the core is: SIMD128 or relaxed SIMD, with or without threads (wasm.js chooses). Resolved when
 * asked for, not at load, so that this module loads anywhere (a blob: script has no folder to resolve against).
 * Always a URL here; embedded.js, which shares this interface, gives the bytes.
 * @param {'weblora.wasm' | 'weblora-threads.wasm' | 'weblora-relaxed.wasm' | 'weblora-relaxed-threads.wasm'} file
 * @returns {URL | Promise<Uint8Array<ArrayBuffer>>}
 */
export function coreBuild(file) {
  switch (file) {
    case 'weblora.wasm': return onThisSite(new URL('./weblora.wasm', import.meta.url));
    case 'weblora-threads.wasm': return onThisSite(new URL('./weblora-threads.wasm', import.meta.url));
    case 'weblora-relaxed.wasm': return onThisSite(new URL('./weblora-relaxed.wasm', import.meta.url));
    case 'weblora-relaxed-threads.wasm': return onThisSite(new URL('./weblora-relaxed-threads.wasm', import.meta.url));
    default: throw new InvalidArgumentError(`no build of the core is called ${String(file)}`);
  }
}

/**
 * An emitted file's URL as this context can fetch it. Turbopack (Next.js) hands over a stand-in for URL that holds
 * only the site path it gave the file ('/_next/static/media/…', no protocol), which fetch() would resolve against
 * nothing useful: it is resolved here against this context's location. A bundler that resolved such a path against
 * the file: URL it put in place of import.meta.url gets it moved to the page's origin. Node (no location) and pages
 * opened from file: keep what they were given.
 * @param {URL} url
 */
function onThisSite(url) {
  const here = globalThis.location;
  if (!here) return url;
  if (!url.protocol) return new URL(String(url), here.href);
  if (url.protocol === 'file:' && here.protocol !== 'file:') return new URL(`${url.pathname}${url.search}`, here.origin);
  return url;
}
