// platform-browser.js: the browser's (and every bundler's) side of #platform (package.json "imports"): no Node.
// platform-node.js is the Node side; code asks `if (node)` and never imports node: modules itself.

/**
 * What Node offers the package.
 * @typedef {{ Worker: typeof import('node:worker_threads').Worker, parentPort: import('node:worker_threads').MessagePort | null,
 *   createReadStream: typeof import('node:fs').createReadStream, fs: typeof import('node:fs/promises'),
 *   path: typeof import('node:path'), os: typeof import('node:os') }} NodePlatform
 */

/** @type {NodePlatform | null} */
export const node = null;
