// The core's threads in headless Chromium. On a cross-origin isolated page (COOP/COEP from the server), LoRA training
// through the package is bit-identical for 1, 2, 3 and 4 threads: the losses, the evaluation and the exported adapter
// file. And the demo on a static host that sends no such headers: its service worker adds them, the page reloads once
// into isolation, and trains on two threads; a page controlled by an older worker that did not add them is not
// reloaded behind the person's back, but isolated by the update they accept.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

import {
  DATA, TRAIN_TEXT, checkPrerequisites, demoCopy, launch, newProfileDir, openPage, removeProfileDir, startTestServer,
} from './helpers.js';

describe('threads in headless Chromium', () => {
  let server;
  let profile;
  let browser;
  const errors = [];

  beforeAll(async () => {
    checkPrerequisites();
    server = await startTestServer();
    profile = newProfileDir('threads');
    browser = await launch(profile);
  }, 60_000);

  afterAll(async () => {
    await browser?.context.close().catch(() => {});
    await server?.close().catch(() => {});
    removeProfileDir(profile);
  });

  test('an isolated page trains bit-identically on 1, 2, 3 and 4 threads', async () => {
    const { page } = await openPage(browser.context, server.page, errors);
    const runs = await page.evaluate(async ({ model, tokenizerUrl, text }) => {
      const out = [];
      for (const threads of [1, 2, 3, 4]) {
        const engine = await weblora.WebLoRA.load(model, { tokenizerUrl, threads });
        const adapter = await engine.createAdapter({ rank: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], seed: 2, dropout: 0.1 });
        const losses = [];
        const summary = await engine.train(adapter, [text], {
          steps: 6, batchSize: 2, seqLen: 32, evalSplit: 0.2, seed: 4, lr: 5e-3, onStep: (s) => losses.push(s.loss),
        }).done;
        const files = (await engine.exportAdapter(adapter)).files;
        const gen = await engine.generate('Tom had a', { adapter, maxTokens: 16, temperature: 0.8, seed: 3 });
        out.push({ threads, running: engine.info.threads, note: engine.info.threadsNote, losses, evalLoss: summary.evalLoss,
          sha: await sha256Hex(files['adapter_model.safetensors']), text: gen.text });
        log(`${threads} threads: losses ${losses.map((l) => l.toFixed(4)).join(' ')}, adapter ${out.at(-1).sha.slice(0, 16)}`);
        await engine.dispose();
      }
      return { isolated: crossOriginIsolated, out };
    }, { model: server.shared(DATA.storiesBin), tokenizerUrl: server.shared(DATA.storiesTok), text: TRAIN_TEXT });

    expect(runs.isolated).toBe(true);
    const [ref] = runs.out;
    expect(ref.losses).toHaveLength(6);
    for (const run of runs.out) {
      expect([run.threads, run.running, run.note]).toEqual([run.threads, run.threads, null]);
      expect([run.threads, run.losses, run.evalLoss, run.sha, run.text]).toEqual([run.threads, ref.losses, ref.evalLoss, ref.sha, ref.text]);
    }
    console.log(`Chromium, 1-4 threads: losses ${ref.losses.map((l) => l.toFixed(4)).join(' ')}; adapter sha256 ${ref.sha.slice(0, 16)}, identical`);
    expect(errors).toEqual([]);
  }, 120_000);

  test('on a host without COOP/COEP the demo reloads once into isolation through its service worker and trains on 2 threads', async () => {
    const plain = await startTestServer({ isolation: false, codeMaxAge: 0 });
    try {
      const page = await browser.context.newPage();
      const pageErrors = [];
      page.on('pageerror', (err) => pageErrors.push(err.message));
      const demo = `${plain.url('/demo/')}?model=${encodeURIComponent(plain.shared(DATA.storiesBin))}`
        + `&tokenizer=${encodeURIComponent(plain.shared(DATA.storiesTok))}&threads=2`;
      await page.goto(demo);
      // The first visit is not isolated; the service worker takes over and the page reloads into isolation.
      await page.waitForFunction(() => crossOriginIsolated === true && document.body?.dataset.ready === 'true', null, { timeout: 60_000 });
      expect(await page.evaluate(() => sessionStorage.getItem('weblora-demo-isolation-reload'))).toBe('1');
      await page.waitForFunction(() => document.body?.dataset.isolation === 'isolated');
      // The server itself never sent the headers.
      const res = await fetch(plain.url('/demo/'));
      expect(res.headers.get('cross-origin-embedder-policy')).toBeNull();
      await page.getByRole('button', { name: 'Load the model' }).click();
      await page.waitForFunction(() => document.getElementById('threads').textContent === '2', null, { timeout: 60_000 });
      await page.getByRole('button', { name: 'Use the sample diary' }).click();
      await page.getByLabel('Steps').fill('6');
      await page.getByRole('button', { name: 'Train', exact: true }).click();
      await page.waitForFunction(() => {
        const s = document.getElementById('train-status');
        return s.dataset.kind === 'error' || (s.dataset.kind === 'ok' && /^Training finished/.test(s.textContent));
      }, null, { timeout: 60_000 });
      const status = await page.evaluate(() => ({ text: document.getElementById('train-status').textContent,
        speed: document.getElementById('speed').textContent }));
      expect(status.text).toMatch(/^Training finished: 6 steps/);
      expect(status.speed).toMatch(/tokens\/s on 2 threads$/);
      expect(pageErrors).toEqual([]);
    } finally {
      await plain.close();
    }
  }, 150_000);

  test('a page under an older service worker that sent no COOP/COEP waits for the update offer, whose reload isolates it', async () => {
    const demo = demoCopy();
    const plain = await startTestServer({ isolation: false, codeMaxAge: 0, mounts: { '/demo/': demo.dir } });
    try {
      let current = '';
      // The release before: the same worker, but without the isolation headers.
      demo.editServiceWorker((text) => {
        current = text;
        const old = text.replace(/const VERSION = '([^']+)';/, "const VERSION = '$1-old';").replace(/const ISOLATION = \{[^}]*\};/, 'const ISOLATION = {};');
        expect(old.match(/const ISOLATION = \{\};|-old'/g)).toHaveLength(2);
        return old;
      });
      const page = await browser.context.newPage();
      const pageErrors = [];
      page.on('pageerror', (err) => pageErrors.push(err.message));
      await page.goto(`${plain.url('/demo/')}?threads=2`);
      // The old worker takes control, adds no headers: no reload could isolate the page, so none happens.
      await page.waitForFunction(() => document.body?.dataset.isolation === 'after-update', null, { timeout: 60_000 });
      await page.evaluate(() => { window.sameDocument = true; });
      expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);

      // The new release: it installs and waits for the person; the page is neither reloaded nor taken over.
      demo.editServiceWorker(() => current);
      await page.evaluate(async () => (await navigator.serviceWorker.getRegistration()).update());
      await page.getByRole('button', { name: 'Reload to update' }).waitFor({ timeout: 30_000 });
      expect(await page.evaluate(async () => {
        const registration = await navigator.serviceWorker.getRegistration();
        return { waiting: registration.waiting !== null, sameDocument: window.sameDocument === true, isolated: crossOriginIsolated };
      })).toEqual({ waiting: true, sameDocument: true, isolated: false });

      await Promise.all([page.waitForEvent('load', { timeout: 30_000 }), page.getByRole('button', { name: 'Reload to update' }).click()]);
      await page.waitForFunction(() => document.body?.dataset.ready === 'true' && document.body?.dataset.isolation === 'isolated', null, { timeout: 30_000 });
      expect(await page.evaluate(() => ({ isolated: crossOriginIsolated, reloadedForIsolation: sessionStorage.getItem('weblora-demo-isolation-reload') })))
        .toEqual({ isolated: true, reloadedForIsolation: null });
      expect(pageErrors).toEqual([]);
    } finally {
      await plain.close();
      demo.remove();
    }
  }, 150_000);
});
