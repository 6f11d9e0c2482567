// Shared plumbing of the browser tests: the static test server (tools/serve.js with ../shared mounted), Debian's
// Chromium through playwright-core with a fresh profile, request logs from both ends, and screenshots.
import {
  copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { startServer } from '../../tools/serve.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The third-party test material: ../shared, or WL_SHARED_DIR. */
export const sharedDir = path.resolve(process.env.WL_SHARED_DIR || path.join(repoRoot, '../shared'));
export const artifactsDir = path.join(repoRoot, 'test-artifacts');
export const CHROMIUM = process.env.WEBLORA_CHROMIUM ?? '/usr/bin/chromium';

/** Flags that keep Chromium quiet on a closed network and reproducible in CI. */
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** Files from ../shared the tests serve; a missing one fails the test with its path. */
export const DATA = {
  storiesBin: 'models/stories260K/stories260K.bin',
  storiesTok: 'models/stories260K/tok512.bin',
  tinyLlamaDir: 'models/tiny-random-llama/',
  tinyLlamaConfig: 'models/tiny-random-llama/config.json',
  tinyLlamaWeights: 'models/tiny-random-llama/model.safetensors',
  llamaTokenizer: 'tokenizers/llama2-tinyllama/tokenizer.json',
  llamaTokenizerConfig: 'tokenizers/llama2-tinyllama/tokenizer_config.json',
};

/** Training text the tests use: short, repetitive, so a few steps measurably lower the loss. */
export const TRAIN_TEXT = [
  'Tom had a small red boat. Every morning he took the boat to the pond and sailed it with his sister Sue.',
  'One day the wind was strong and the boat went far away. Sue ran around the pond and caught it.',
  'Tom said thank you and they sailed the red boat together until the sun went down.',
].join(' ');

/** Throws naming every missing prerequisite (browser, wasm build, test data). */
export function checkPrerequisites() {
  const missing = [];
  if (!existsSync(CHROMIUM)) missing.push(`${CHROMIUM} (install Debian's chromium: sh tools/setup.sh --browser)`);
  if (!existsSync(path.join(repoRoot, 'web/runtime/weblora.wasm'))) missing.push('web/runtime/weblora.wasm (build it: sh tools/build.sh wasm)');
  if (!existsSync(path.join(repoRoot, 'dist/weblora.js'))) missing.push('dist/weblora.js (build it: sh tools/build.sh wasm dist)');
  for (const rel of Object.values(DATA)) {
    if (!existsSync(path.join(sharedDir, rel))) missing.push(path.join(sharedDir, rel));
  }
  if (missing.length) throw new Error(`browser tests cannot run, missing:\n  ${missing.join('\n  ')}`);
}

/**
 * The test server: the repository at /, ../shared at /shared/. Code may be kept in the browser's HTTP cache for
 * an hour (so a page can come back with the server stopped), test data never (so a model that loads without the
 * server can only have come from the package's Cache API copy). Pages are cross-origin isolated (COOP/COEP) unless
 * isolation is false.
 * @param {{ codeMaxAge?: number, mounts?: Record<string, string>, isolation?: boolean }} [options] mounts: more
 *   folders by URL prefix
 */
export async function startTestServer(options = {}) {
  const codeMaxAge = options.codeMaxAge ?? 3600;
  const server = await startServer({
    isolation: options.isolation ?? true,
    mounts: { '/shared/': sharedDir, ...options.mounts },
    headers: (urlPath) => (urlPath.startsWith('/shared/')
      ? { 'cache-control': 'no-store' }
      : { 'cache-control': codeMaxAge > 0 ? `max-age=${codeMaxAge}` : 'no-cache' }),
  });
  return {
    ...server,
    /** @param {string} rel a path inside ../shared */
    shared: (rel) => server.url(`/shared/${rel}`),
    page: server.url('/tests/browser/page.html'),
  };
}

/**
 * A second origin laid out like the Hugging Face Hub, /<org>/<name>/resolve/main/<file>, and serving like it: CORS
 * on every response (errors too), Range requests, ETags, no Cross-Origin-Resource-Policy or isolation headers. Files are links to ../shared (never copies) or generated
 * text (a tokenizer_config.json with a chat template, say).
 * @param {Record<string, Record<string, string | { text: string }>>} repos repo ("org/name") -> file path in the
 *   repo -> a path inside ../shared, or { text }
 */
export async function startHubServer(repos) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'weblora-hub-'));
  for (const [repo, files] of Object.entries(repos)) {
    for (const [name, from] of Object.entries(files)) {
      const target = path.join(dir, repo, 'resolve/main', name);
      mkdirSync(path.dirname(target), { recursive: true });
      if (typeof from === 'string') {
        const source = path.join(sharedDir, from);
        if (!existsSync(source)) throw new Error(`test data missing: ${source}`);
        symlinkSync(source, target);
      } else {
        writeFileSync(target, from.text);
      }
    }
  }
  // CORS and nothing about isolation, as the Hub serves files: enough for a cross-origin isolated page's fetch().
  const server = await startServer({ root: dir, cors: true, isolation: false, headers: () => ({ 'cache-control': 'no-store' }) });
  return {
    ...server,
    /** @param {string} repo */
    folder: (repo) => server.url(`/${repo}/resolve/main/`),
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A copy of demo/ whose files link to the real ones, except sw.js, which is copied so a test can deploy a new
 * version of it. Serve it at /demo/ (startTestServer's mounts).
 */
export function demoCopy() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'weblora-demo-copy-'));
  const demo = path.join(repoRoot, 'demo');
  for (const name of readdirSync(demo)) {
    if (name === 'sw.js') copyFileSync(path.join(demo, name), path.join(dir, name));
    else symlinkSync(path.join(demo, name), path.join(dir, name));
  }
  const sw = path.join(dir, 'sw.js');
  return {
    dir,
    /** Rewrites the copy's sw.js, as deploying a new version of the demo does. @param {(text: string) => string} edit */
    editServiceWorker: (edit) => writeFileSync(sw, edit(readFileSync(sw, 'utf8'))),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Collects what a page, its workers and the service workers log as errors, and uncaught exceptions.
 * @param {import('playwright-core').Page} page
 * @returns {string[]}
 */
export function watchErrors(page) {
  const errors = [];
  const onConsole = (where) => (msg) => {
    if (msg.type() === 'error') errors.push(`${where} console: ${msg.text()}`);
  };
  page.on('pageerror', (err) => errors.push(`page error: ${err.message}`));
  page.on('console', onConsole('page'));
  page.on('worker', (worker) => worker.on('console', onConsole(`worker ${worker.url()}`)));
  return errors;
}

/** A new, empty Chromium profile folder. */
export function newProfileDir(name) {
  return mkdtempSync(path.join(os.tmpdir(), `weblora-${name}-`));
}

export function removeProfileDir(dir) {
  if (dir) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/**
 * Chromium with a persistent profile (so IndexedDB, the Cache API and the HTTP cache survive a relaunch).
 * @param {string} profileDir
 */
export async function launch(profileDir) {
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1000, height: 760 },
  });
  /** Every request any page or worker of this context makes, in order. */
  const requests = [];
  context.on('request', (r) => requests.push({ time: Date.now(), method: r.method(), url: r.url() }));
  return { context, requests };
}

/**
 * Opens the test page and waits until the package is imported. Page errors are collected (into `errors` when
 * given, so several pages can share one list) for tests to assert there were none.
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} url
 */
export async function openPage(context, url, errors = []) {
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => window.pageReady === true, null, { timeout: 30_000 });
  return { page, errors };
}

/** Saves test-artifacts/browser-<name>.png and returns its path. */
export async function screenshot(page, name) {
  mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `browser-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Requests that left 127.0.0.1 (anything but the test server and in-page data: / blob: URLs). */
export function thirdParty(requests, origin) {
  return requests.filter((r) => !r.url.startsWith(`${origin}/`) && !/^(data|blob):/.test(r.url));
}

/** Polls fn until accept(value) holds (a state, not a moment); returns that value or throws after timeoutMs. */
export async function waitFor(fn, accept, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (accept(value)) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting after ${timeoutMs} ms (last value ${JSON.stringify(value)})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The demo page

/**
 * Waits until a status line settles: an error, or success whose text matches `expected` (status lines keep their
 * last message, so the pattern tells the new one from the old). Returns its kind and text.
 */
export async function settled(page, selector, expected = /./, timeout = 60_000) {
  await page.waitForFunction(({ sel, source }) => {
    const node = document.querySelector(sel);
    return node?.dataset.kind === 'error' || (node?.dataset.kind === 'ok' && new RegExp(source).test(node.textContent));
  }, { sel: selector, source: expected.source }, { timeout });
  return page.evaluate((sel) => ({ kind: document.querySelector(sel).dataset.kind, text: document.querySelector(sel).textContent }), selector);
}

/**
 * Waits until an element's text matches `pattern` (panels are filled asynchronously, after the action that
 * triggers them has reported) and returns the text; on timeout the error shows the last text seen.
 */
export async function textMatching(page, selector, pattern, timeout = 30_000) {
  try {
    await page.waitForFunction(({ sel, source }) => new RegExp(source).test(document.querySelector(sel)?.textContent ?? ''),
      { sel: selector, source: pattern.source }, { timeout });
  } catch (err) {
    const last = await page.locator(selector).textContent().catch(() => null);
    throw new Error(`${selector} never matched ${pattern} (last text: ${JSON.stringify(last)}): ${err.message}`, { cause: err });
  }
  return page.locator(selector).textContent();
}

/** Clicks Generate and returns both outputs once they are complete. */
export async function generateBoth(page) {
  await page.getByRole('button', { name: 'Generate' }).click();
  await page.waitForFunction(() => {
    const done = (id) => {
      const o = document.getElementById(id);
      return o.querySelector('.continuation')?.textContent.length > 0 && !o.hasAttribute('aria-busy');
    };
    return done('out-base') && done('out-tuned') && !document.body.hasAttribute('data-busy');
  }, null, { timeout: 30_000 });
  return page.evaluate(() => ({
    base: document.querySelector('#out-base .continuation').textContent,
    tuned: document.querySelector('#out-tuned .continuation').textContent,
  }));
}
