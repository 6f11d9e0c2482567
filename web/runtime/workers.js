// workers.js: starting the package's module Workers (the engine's worker.js, the core's thread.js) in a browser
// from wherever the package is served. Bundlers only see `new Worker(new URL('./x.js', import.meta.url), ...)`
// written out at the call site, so the callers keep that form for the usual case and come here for the rest: a
// worker script given by URL, or the package imported from another origin (a CDN), which browsers will not start
// a Worker from directly.

/**
 * Whether a module URL can start a Worker on this page as it is. A bundler that rewrote import.meta.url to a
 * build-time file: URL (webpack) or a data:/blob: chunk has already put the scripts where the page can load them.
 * @param {string | URL} url
 */
export function sameOrigin(url) {
  const u = new URL(String(url), globalThis.location?.href);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return true;
  return !globalThis.location || u.origin === globalThis.location.origin;
}

/**
 * A file beside the package's own modules (worker.js, thread.js): in Node, or in the package served unbundled.
 * Not in the form `new URL('…', import.meta.url)`, which bundlers would take for an asset of their own to emit.
 * @param {string} name
 */
export function besidePackage(name) {
  const here = import.meta.url;
  return new URL(name, here);
}

/**
 * A module Worker running the script at url; one on another origin starts through a same-origin blob: module that
 * imports it (the script's host must allow CORS, as CDNs do; the page's CSP must allow worker-src blob:).
 * @param {URL} url
 * @param {string} name shown in the browser's developer tools
 */
export function moduleWorker(url, name) {
  if (sameOrigin(url)) return new Worker(url, { type: 'module', name });
  const trampoline = URL.createObjectURL(new Blob([`import ${JSON.stringify(url.href)};\n`], { type: 'text/javascript' }));
  return new Worker(trampoline, { type: 'module', name });
}
