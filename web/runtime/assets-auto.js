// assets-auto.js: package.json's "#assets" for the bundlers its conditions cannot tell apart. Vite and Turbopack
// (Next.js), which emit the files named by `new URL('./x', import.meta.url)`, resolve the same conditions as Rollup
// with @rollup/plugin-node-resolve, which emits none. Those two define import.meta.env (Vite replaces it at build
// time, so its build folds each choice below to assets.js and leaves embedded.js out); esbuild and Rollup keep
// import.meta.env as it is, undefined when the page runs, and take embedded.js. That is imported when first needed,
// so a bundler that cannot fold the choice (Turbopack) makes it a chunk the page never loads.
import * as files from './assets.js';

const embedded = () => import('./embedded.js');

/** @param {string} name @returns {Worker | null | Promise<Worker | null>} */
export function carriedEngineWorker(name) {
  return import.meta.env?.MODE ? files.carriedEngineWorker(name) : embedded().then((m) => m.carriedEngineWorker(name));
}

/** @param {string} name @returns {Worker | Promise<Worker>} */
export function startThreadWorker(name) {
  return import.meta.env?.MODE ? files.startThreadWorker(name) : embedded().then((m) => m.startThreadWorker(name));
}

/** @param {Parameters<typeof files.coreBuild>[0]} file @returns {URL | Promise<Uint8Array<ArrayBuffer>>} */
export function coreBuild(file) {
  return import.meta.env?.MODE ? files.coreBuild(file) : embedded().then((m) => m.coreBuild(file));
}
