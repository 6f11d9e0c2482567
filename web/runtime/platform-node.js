// platform-node.js: what the package takes from Node (worker threads, files, paths, the core count). Selected by the
// "node" condition of package.json's "imports" (#platform); browsers and bundlers get platform-browser.js, so no
// node: module ever enters a browser build.
import { Worker, parentPort } from 'node:worker_threads';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';

/** @type {import('./platform-browser.js').NodePlatform | null} */
export const node = { Worker, parentPort, createReadStream, fs, path, os };
