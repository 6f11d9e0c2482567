// assets-auto.js: package.json's "#assets" for the bundlers its conditions cannot tell apart. Vite, which emits the
// files named by `new URL('./x', import.meta.url)`, resolves the same conditions as Rollup with
// @rollup/plugin-node-resolve, which emits none. Vite alone defines import.meta.env, replaced at build time, so a
// Vite build folds each choice below to assets.js and leaves embedded.js and its data out; esbuild and Rollup keep
// import.meta.env as it is (undefined when the page runs) and take embedded.js. Each export chooses on its own so
// that a bundle keeps only the embedded data it calls for (a page's bundle: the engine's worker alone).
import * as files from './assets.js';
import * as embedded from './embedded.js';

/** @param {string} name @returns {Worker | null} */
export function carriedEngineWorker(name) {
  return import.meta.env?.MODE ? files.carriedEngineWorker(name) : embedded.carriedEngineWorker(name);
}

/** @param {string} name @returns {Worker} */
export function startThreadWorker(name) {
  return import.meta.env?.MODE ? files.startThreadWorker(name) : embedded.startThreadWorker(name);
}

/** @param {Parameters<typeof files.coreBuild>[0]} file @returns {URL | Promise<Uint8Array<ArrayBuffer>>} */
export function coreBuild(file) {
  return import.meta.env?.MODE ? files.coreBuild(file) : embedded.coreBuild(file);
}
