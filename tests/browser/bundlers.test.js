// The packed package (npm pack) in a small web app built by each common bundler, and in a static folder that loads
// the no-bundler build from a CDN origin through an import map, each served from 127.0.0.1 to headless Chromium:
// a Hugging Face id loaded from a second origin laid out like the Hub (CORS, Range), a few training steps with no
// request sent, a generation, the adapter saved to IndexedDB, then a reload that revalidates the cached model with
// one HEAD per file, restores the adapter and generates the same text; and not one console error or warning. Each
// bundler runs with its defaults (Rollup with its node-resolve plugin, without which it finds no npm package) and
// nothing is copied; each app is served under a strict Content-Security-Policy that allows Workers only from where
// that build must start them. The bundlers are the repository's devDependencies (the lock file pins them): nothing
// is installed from the network here.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

import { startServer } from '../../tools/serve.js';
import {
  DATA, TRAIN_TEXT, checkPrerequisites, launch, newProfileDir, removeProfileDir, repoRoot, screenshot, startHubServer,
} from './helpers.js';

const APPS = path.join(repoRoot, 'build/bundler-apps');
/** Where the tarball is unpacked: node_modules above every app, so each resolves `weblora` to it. */
const PACKAGE = path.join(APPS, 'node_modules/weblora');
const APP_SOURCE = path.join(repoRoot, 'tests/browser/app');
const REPO = 'HuggingFaceTB/tiny-random-llama';
const ADAPTER = 'my style';
const PROMPT = 'Tom had a';
const GEN = { maxTokens: 12, temperature: 0 };
const TRAIN = { steps: 4, lr: 3e-3, batchSize: 2, seqLen: 64, evalSplit: 0, seed: 1 };

const bin = (name) => path.join(repoRoot, 'node_modules/.bin', name);
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 240_000 });

/** A page for a bundle that has none of its own. @param {string} script the tag that loads the app */
const page = (script) => `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>weblora app</title>
<link rel="icon" href="data:,"></head><body><pre id="log"></pre>${script}</body></html>\n`;

/**
 * The strict Content-Security-Policy README.md gives: scripts from the app's origin, WebAssembly compiled, Workers
 * from `workers`, connections to the app's origin and the model host, and only the other sources `more` adds.
 * @param {{ workers: string, more?: string[] }} app @param {string} modelHost
 */
const contentSecurityPolicy = ({ workers, more = [] }, modelHost) => [
  `script-src 'self' 'wasm-unsafe-eval' ${more.join(' ')}`.trim(), `worker-src ${workers}`,
  `connect-src 'self' ${new URL(modelHost).origin} ${more.filter((s) => !s.startsWith("'")).join(' ')}`.trim(),
  "object-src 'none'", "base-uri 'none'",
].join('; ');

/**
 * How many builds of the core the JavaScript under `dir` carries: string literals of gzip streams in base64 (they
 * open with "H4sI"; only at a quote, since the same four characters turn up inside a build's base64 by chance).
 * @param {string} dir
 */
const carriedCores = (dir) => readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js'))
  .reduce((n, f) => n + (readFileSync(path.join(dir, f), 'utf8').match(/(?<=["'`])H4sI[A-Za-z0-9+/]{10000}/g) ?? []).length, 0);

/**
 * Each way to ship the app: build it in `dir`; the folder to serve (the page is its index.html), what its
 * Content-Security-Policy must allow beyond the app's own origin, and how many builds of the core it carries.
 * @type {Record<string, (dir: string, cdn: any) => { out: string, workers: string, more?: string[], carries: number }>}
 */
const BUILDS = {
  vite(dir) {
    run(bin('vite'), ['build', '--logLevel', 'warn'], dir);
    return { out: path.join(dir, 'dist'), workers: "'self'", carries: 0 };
  },
  webpack(dir) {
    run(bin('webpack'), ['--mode', 'production'], dir);
    writeFileSync(path.join(dir, 'dist/index.html'), page('<script src="main.js"></script>'));
    return { out: path.join(dir, 'dist'), workers: "'self'", carries: 0 };
  },
  // esbuild and Rollup emit no files for new URL(…, import.meta.url): the bundle carries the package's Worker
  // scripts and core builds, and starts the Workers from blob: URLs.
  esbuild(dir) {
    run(bin('esbuild'), ['src/index.js', '--bundle', '--format=esm', '--outdir=dist', '--log-level=warning'], dir);
    writeFileSync(path.join(dir, 'dist/index.html'), page('<script type="module" src="index.js"></script>'));
    return { out: path.join(dir, 'dist'), workers: 'blob:', carries: 4 };
  },
  rollup(dir) {
    // Rollup resolves no package names without its node-resolve plugin: the one line of config it needs.
    writeFileSync(path.join(dir, 'rollup.config.js'), "import { nodeResolve } from '@rollup/plugin-node-resolve';\n"
      + "export default { input: 'src/index.js', output: { dir: 'dist', format: 'es' }, plugins: [nodeResolve()] };\n");
    run(bin('rollup'), ['-c', '--silent'], dir);
    writeFileSync(path.join(dir, 'dist/index.html'), page('<script type="module" src="index.js"></script>'));
    return { out: path.join(dir, 'dist'), workers: 'blob:', carries: 4 };
  },
  // No bundler: the app's own files as they are, the package's dist/ build from a CDN origin by an import map (an
  // inline script, allowed by its hash); a Worker from another origin starts through a blob: module that imports it,
  // and a module Worker's imports answer to worker-src, so that names the CDN too; the core is fetched from it.
  static(dir, cdn) {
    const out = path.join(dir, 'site');
    cpSync(path.join(dir, 'src'), path.join(out, 'src'), { recursive: true });
    const imports = JSON.stringify({ imports: { weblora: cdn.url('/npm/weblora/dist/weblora.js') } });
    writeFileSync(path.join(out, 'index.html'), page(`<script type="importmap">${imports}</script>\n<script type="module" src="src/index.js"></script>`));
    const hash = createHash('sha256').update(imports).digest('base64');
    const cdnOrigin = new URL(cdn.url('/')).origin;
    return { out, workers: `blob: ${cdnOrigin}`, more: [cdnOrigin, `'sha256-${hash}'`], carries: 0 };
  },
};

describe('the packed package in apps built by each bundler, and from a CDN without one, in Chromium', () => {
  let hub;
  let cdn;

  beforeAll(async () => {
    checkPrerequisites();
    rmSync(APPS, { recursive: true, force: true });
    mkdirSync(PACKAGE, { recursive: true });
    // The tarball as a user installs it (dist/ is built by tools/build.sh dist before the tests).
    const tarball = run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', APPS], repoRoot).trim().split('\n').pop();
    run('tar', ['-xzf', path.join(APPS, tarball), '-C', PACKAGE, '--strip-components=1'], repoRoot);
    for (const f of ['web/index.js', 'web/runtime/worker.js', 'web/runtime/assets.js', 'web/runtime/embedded.js', 'dist/weblora.js', 'dist/worker.js', 'dist/weblora.wasm', 'dist/embedded-data.js']) {
      if (!existsSync(path.join(PACKAGE, f))) throw new Error(`the packed package has no ${f}`);
    }
    hub = await startHubServer({
      [REPO]: {
        'config.json': DATA.tinyLlamaConfig, 'model.safetensors': DATA.tinyLlamaWeights,
        'tokenizer.json': DATA.llamaTokenizer, 'tokenizer_config.json': DATA.llamaTokenizerConfig,
      },
    });
    // A CDN serves packages from npm as they are: CORS, no isolation headers.
    cdn = await startServer({ root: APPS, mounts: { '/npm/weblora/': PACKAGE }, cors: true, isolation: false });
  }, 120_000);

  afterAll(async () => {
    await hub?.close().catch(() => {});
    await cdn?.close().catch(() => {});
  });

  test.each(Object.keys(BUILDS))('%s: load a Hub id from the mirror, train, generate, save, reload, restore', async (name) => {
    const dir = path.join(APPS, name);
    cpSync(APP_SOURCE, dir, { recursive: true });
    // Its own package.json, as an app has (and so `weblora` resolves to the unpacked tarball, not this repository).
    writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify({ name: `app-${name}`, private: true, type: 'module', dependencies: { weblora: '*' } }, null, 2)}\n`);
    const app = BUILDS[name](dir, cdn);
    // Vite and webpack emit the package's own files (no embedded copy); esbuild and Rollup carry each build once.
    expect(carriedCores(app.out)).toBe(app.carries);
    // Cross-origin isolated, so the core runs on two threads and the bundle's thread script is used; under the CSP.
    const csp = contentSecurityPolicy(app, hub.url('/'));
    const site = await startServer({ root: app.out, isolation: true, headers: () => ({ 'cache-control': 'no-cache', 'content-security-policy': csp }) });
    const profile = newProfileDir(`bundler-${name}`);
    const browser = await launch(profile);
    /** Every console error and warning of the pages and their workers, and uncaught errors. */
    const noise = [];
    const listen = (where) => (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') noise.push(`${where}: ${msg.type()}: ${msg.text()}`);
    };
    browser.context.on('page', (p) => {
      p.on('console', listen('page'));
      p.on('pageerror', (err) => noise.push(`page error: ${err.message}`));
      p.on('worker', (w) => w.on('console', listen(`worker ${w.url()}`)));
    });
    try {
      const tab = await browser.context.newPage();
      const open = async () => {
        await tab.goto(site.url('/'));
        await tab.waitForFunction(() => window.appReady === true, null, { timeout: 30_000 });
      };
      const load = () => tab.evaluate(({ repo, host }) => window.app.load(repo, { remoteHost: host, threads: 2 }), { repo: REPO, host: hub.url('/') });
      await open();
      expect(await tab.evaluate(() => crossOriginIsolated)).toBe(true);
      const hubBefore = hub.requests.length;
      expect(await load()).toEqual({ name: REPO, threads: 2, threadsNote: null });
      const fetched = hub.requests.slice(hubBefore);
      expect(fetched.map((r) => r.path)).toContain(`/${REPO}/resolve/main/model.safetensors`);
      expect(fetched.some((r) => r.range)).toBe(true);

      const logs = [site, hub, cdn].map((s) => s.requests.length);
      const pageLog = browser.requests.length;
      const trained = await tab.evaluate(({ text, options }) => window.app.train([text], options), { text: Array(4).fill(TRAIN_TEXT).join('\n\n'), options: TRAIN });
      // Nothing leaves the page while it trains: not a request from the page or its workers, none at any server.
      expect(browser.requests.slice(pageLog)).toEqual([]);
      expect([site, hub, cdn].map((s, i) => s.requests.slice(logs[i]))).toEqual([[], [], []]);
      expect(trained.steps).toBe(TRAIN.steps);
      expect(trained.losses.every(Number.isFinite)).toBe(true);
      const tuned = await tab.evaluate(({ prompt, gen }) => window.app.generate(prompt, gen), { prompt: PROMPT, gen: GEN });
      expect(tuned.length).toBeGreaterThan(0);
      await tab.evaluate((adapter) => window.app.save(adapter), ADAPTER);

      await open();
      const hubReload = hub.requests.length;
      await load();
      // The cached model is only revalidated: one plain HEAD per file (no preflight, no download), the answers'
      // ETags compared with the copies'.
      const revalidated = hub.requests.slice(hubReload);
      expect(revalidated.map((r) => `${r.method} ${r.status}`)).toEqual(revalidated.map(() => 'HEAD 200'));
      expect(revalidated.map((r) => r.path)).toContain(`/${REPO}/resolve/main/model.safetensors`);
      expect(await tab.evaluate((adapter) => window.app.restore(adapter), ADAPTER)).toContain(ADAPTER);
      // The restored adapter is the trained one: greedy decoding says the same again.
      expect(await tab.evaluate(({ prompt, gen }) => window.app.generate(prompt, gen), { prompt: PROMPT, gen: GEN })).toBe(tuned);
      await screenshot(tab, `bundler-${name}`);
      expect(noise).toEqual([]);
    } finally {
      await browser.context.close().catch(() => {});
      await site.close().catch(() => {});
      removeProfileDir(profile);
    }
  }, 180_000);

  test('esbuild: a page whose CSP refuses blob: Workers gets WORKER_FAILED, which names worker-src blob:', async () => {
    const out = path.join(APPS, 'esbuild/dist');
    if (!existsSync(path.join(out, 'index.js'))) throw new Error(`${out} was not built: run the esbuild test first`);
    const csp = contentSecurityPolicy({ workers: "'self'" }, hub.url('/'));
    const site = await startServer({ root: out, isolation: true, headers: () => ({ 'cache-control': 'no-cache', 'content-security-policy': csp }) });
    const profile = newProfileDir('bundler-csp');
    const browser = await launch(profile);
    try {
      const tab = await browser.context.newPage();
      await tab.goto(site.url('/'));
      await tab.waitForFunction(() => window.appReady === true, null, { timeout: 30_000 });
      const failure = await tab.evaluate(({ repo, host }) => window.app.load(repo, { remoteHost: host, threads: 1 })
        .then(() => null, (err) => ({ name: err.name, code: err.code, message: err.message })), { repo: REPO, host: hub.url('/') });
      expect(failure).toEqual({ name: 'WebLoRAError', code: 'WORKER_FAILED', message: expect.stringContaining('worker-src blob:') });
    } finally {
      await browser.context.close().catch(() => {});
      await site.close().catch(() => {});
      removeProfileDir(profile);
    }
  }, 120_000);
});
