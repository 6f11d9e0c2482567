// Shared plumbing of the browser tests: the static test server (tools/serve.js with ../shared mounted), Debian's
// Chromium through playwright-core with a fresh profile, request logs from both ends, and screenshots.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { startServer } from '../../tools/serve.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const sharedDir = path.resolve(repoRoot, '../shared');
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
  llamaTokenizer: 'tokenizers/llama2-tinyllama/tokenizer.json',
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
  if (!existsSync(path.join(repoRoot, 'web/weblora.wasm'))) missing.push('web/weblora.wasm (build it: sh tools/build.sh wasm)');
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
 * @param {{ codeMaxAge?: number, isolation?: boolean }} [options]
 */
export async function startTestServer(options = {}) {
  const codeMaxAge = options.codeMaxAge ?? 3600;
  const server = await startServer({
    isolation: options.isolation ?? true,
    mounts: { '/shared/': sharedDir },
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
