// embedded.js: the package's Worker scripts and builds of the core carried inside its JavaScript, for bundlers that
// do not follow `new URL('./x', import.meta.url)` and so emit no worker.js, thread.js or *.wasm (esbuild, Rollup).
// The same three functions as assets.js. tools/bundle.js makes the data when the package is packed
// (dist/embedded-data.js): the thread script (web/runtime/thread.js) as one self-contained module, the four builds of the
// core, each gzip-compressed and in base64, and the engine's worker (web/runtime/worker.js) as one self-contained module
// whose own copy of this file reads the other two from a constant (HANDOVER) that the page puts before its script,
// so the package and a bundle hold each once. The Workers start from blob: URLs (a Content-Security-Policy must
// allow worker-src blob:); a build of the core is decoded only when it is loaded, so a page spends time and memory
// on the one build it runs.
import { CORES, HANDOVER, THREAD, WORKER } from '#embedded-data';
import { UnsupportedError } from '../errors.js';

/** One blob: URL per script for the page's life, so every Worker of a kind starts from the same script. */
const scriptUrls = new Map();

/**
 * @param {'engine worker' | 'thread worker'} what
 * @param {() => string} source the script's text
 * @param {string} name
 */
function startEmbedded(what, source, name) {
  let url = scriptUrls.get(what);
  if (!url) {
    url = URL.createObjectURL(new Blob([source()], { type: 'text/javascript' }));
    scriptUrls.set(what, url);
  }
  try {
    return new Worker(url, { type: 'module', name });
  } catch (err) {
    throw new UnsupportedError(`the ${what} could not start from the script this bundle carries (${err?.message ?? err}); `
      + 'a Content-Security-Policy must allow it with worker-src blob:', { cause: err });
  }
}

/** The engine's worker script whole: the thread script and the core builds handed over, then the worker. */
export function engineWorkerScript() {
  if (!WORKER) throw new UnsupportedError('this build of weblora carries no engine worker script');
  return `const ${HANDOVER} = ${JSON.stringify({ THREAD, CORES })};\n${WORKER}`;
}

/** @param {string} name shown in the browser's developer tools @returns {Worker | null} */
export function carriedEngineWorker(name) {
  return startEmbedded('engine worker', engineWorkerScript, name);
}

/** @param {string} name @returns {Worker} */
export function startThreadWorker(name) {
  return startEmbedded('thread worker', () => {
    if (!THREAD) throw new UnsupportedError('this build of weblora carries no thread script');
    return THREAD;
  }, name);
}

/**
 * A build of the core, decompressed.
 * @param {string} file e.g. 'weblora-relaxed-threads.wasm'
 * @returns {Promise<Uint8Array<ArrayBuffer>>}
 */
export async function coreBuild(file) {
  const packed = Object.hasOwn(CORES, file) ? CORES[file] : null;
  if (!packed) throw new UnsupportedError(`this build of weblora carries no ${file}`);
  const gzip = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
  const bytes = new Blob([gzip]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(bytes).arrayBuffer());
}
