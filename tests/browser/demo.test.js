// The demo PWA in headless Chromium, driven like a person would: load a tiny model (stories260K via ?model= and
// ?tokenizer=), use the sample text, train a few steps on two threads (the server sends COOP/COEP, so the page is
// cross-origin isolated), compare generations, save, rename, export, import and delete adapters; then stop the
// server and reload: the service worker serves the page and the package, the package's Cache API serves the model,
// and the saved adapter generates the same text as before.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

import {
  DATA, checkPrerequisites, generateBoth, launch, newProfileDir, removeProfileDir, screenshot, settled, startTestServer,
  textMatching, thirdParty, watchErrors,
} from './helpers.js';

/** Names in the saved-adapters table. */
function adapterNames(page) {
  return page.$$eval('#adapters-body th[scope="row"]', (cells) => cells.map((c) => c.textContent));
}

describe('the demo PWA in headless Chromium', () => {
  let server;
  let profile;
  let browser;
  let downloads;

  beforeAll(async () => {
    checkPrerequisites();
    // Code is served no-cache: with the server stopped only the service worker can bring the page back.
    server = await startTestServer({ codeMaxAge: 0 });
    profile = newProfileDir('demo');
    downloads = mkdtempSync(path.join(os.tmpdir(), 'weblora-demo-downloads-'));
    browser = await launch(profile);
  }, 30_000);

  afterAll(async () => {
    await browser?.context.close().catch(() => {});
    await server?.close().catch(() => {});
    removeProfileDir(profile);
    removeProfileDir(downloads);
  });

  test('loads a tiny model, trains, compares, manages adapters, then works offline from the service worker', async () => {
    const page = await browser.context.newPage();
    const errors = watchErrors(page);
    const model = server.shared(DATA.storiesBin);
    const url = `${server.url('/demo/')}?model=${encodeURIComponent(model)}&tokenizer=${encodeURIComponent(server.shared(DATA.storiesTok))}&threads=2`;
    await page.goto(url);
    await page.waitForFunction(() => document.body?.dataset.ready === 'true');
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    // The service worker precached the shell and the package, and controls the page.
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 30_000 });
    const shell = await page.evaluate(async () => {
      const names = await caches.keys();
      const cache = await caches.open(names.find((n) => n.startsWith('weblora-demo-shell-')));
      return (await cache.keys()).map((r) => new URL(r.url).pathname);
    });
    expect(shell).toEqual(expect.arrayContaining([
      '/demo/', '/demo/app.js', '/demo/catalog.js', '/demo/checks.js', '/demo/chat.js', '/demo/estimate.js', '/demo/explain.js',
      '/demo/style.css', '/demo/manifest.webmanifest', '/demo/icon.svg', '/demo/icons/icon-192.png', '/demo/icons/maskable-512.png',
      '/dist/weblora.js', '/dist/worker.js', '/dist/thread.js', '/dist/weblora.wasm', '/dist/weblora-threads.wasm',
      '/dist/weblora-relaxed.wasm', '/dist/weblora-relaxed-threads.wasm',
    ]));
    expect(shell.some((p) => p.startsWith('/shared/'))).toBe(false);

    // 1. Model.
    await page.getByRole('button', { name: 'Load the model' }).click();
    const loaded = await settled(page, '#model-status');
    expect(loaded).toEqual({ kind: 'ok', text: 'stories260K/stories260K.bin: downloaded and ready. It is kept on this device for next time.' });
    await textMatching(page, '#model-info', /llama, 5 layers, width 64/);
    // ?threads=2 on a cross-origin isolated page: the core runs on two threads, shown next to the speed.
    await textMatching(page, '#threads', /^2$/);

    // 2. Text: the sample diary.
    await page.getByRole('button', { name: 'Use the sample diary' }).click();
    await page.waitForFunction(() => document.getElementById('train-text').value.length > 1000);
    await textMatching(page, '#text-stats', /characters, [\d,]+ words, 12 entries/);
    // A dropped text file becomes one more entry.
    const dataTransfer = await page.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['Sunday. A dropped note: the lamp is bright and Biscuit is asleep. Onward, Toby.'], 'note.txt', { type: 'text/plain' }));
      return dt;
    });
    await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer });
    await page.waitForFunction(() => document.getElementById('train-text').value.endsWith('Biscuit is asleep. Onward, Toby.'));
    await textMatching(page, '#text-stats', /characters, [\d,]+ words, 13 entries, [\d,]+ tokens/);

    // 3. Train a few steps.
    await page.getByLabel('Steps').fill('24');
    await page.getByLabel('Learning rate').fill('0.005');
    await page.getByRole('button', { name: 'Train', exact: true }).click();
    const trained = await settled(page, '#train-status');
    console.log(`demo training: ${trained.text}`);
    expect(trained).toEqual({ kind: 'ok', text: expect.stringMatching(/^Training finished: 24 steps/) });
    expect(await page.locator('#speed').textContent()).toMatch(/tokens\/s on 2 threads$/);
    const [first, last] = trained.text.match(/loss ([\d.]+) → ([\d.]+)/).slice(1).map(Number);
    expect(last).toBeLessThan(first);
    await textMatching(page, '#eval-loss', /[\d.]+ → [\d.]+/);

    // 4. Compare, greedily so the offline run can be checked against it.
    await page.getByLabel('Temperature').fill('0');
    await page.getByLabel('Tokens', { exact: true }).fill('40');
    const online = await generateBoth(page);
    console.log(`demo compare: base "${online.base.slice(0, 60)}…" / tuned "${online.tuned.slice(0, 60)}…"`);
    expect(online.tuned).not.toBe(online.base);

    // 5. Adapters: save, rename, export, import the exported files, delete the copy.
    await page.getByLabel('Name', { exact: true }).fill('lighthouse diary');
    await page.getByRole('button', { name: 'Save the current adapter' }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('#adapters-body th')].some((c) => c.textContent === 'lighthouse diary'));
    await page.getByRole('button', { name: 'Rename lighthouse diary' }).click();
    await page.getByLabel('New name for lighthouse diary').fill('keeper');
    await page.getByLabel('New name for lighthouse diary').press('Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('#adapters-body th')].map((c) => c.textContent).join() === 'keeper');
    await page.getByRole('button', { name: 'Export keeper' }).click();
    const links = page.locator('#adapters-status a');
    await links.first().waitFor();
    const files = [];
    for (const name of ['adapter_config.json', 'adapter_model.safetensors']) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: new RegExp(`^${name.replace('.', '\\.')}`) }).click()]);
      expect(download.suggestedFilename()).toBe(name);
      const file = path.join(downloads, name);
      await download.saveAs(file);
      files.push(file);
    }
    await page.getByLabel('Name', { exact: true }).fill('imported copy');
    await page.locator('#import-files').setInputFiles(files);
    const imported = await settled(page, '#adapters-status', /^Imported/);
    expect(imported).toEqual({ kind: 'ok', text: expect.stringContaining('Imported "imported copy" (rank 8') });
    // The status is set before the table's asynchronous refresh: wait for the table to list the import.
    await page.waitForFunction(() => document.querySelectorAll('#adapters-body th[scope="row"]').length === 2);
    expect((await adapterNames(page)).sort()).toEqual(['imported copy', 'keeper']);
    await page.getByRole('button', { name: 'Delete imported copy' }).click();
    await page.getByRole('button', { name: 'Delete imported copy' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#adapters-body tr').length === 1);
    expect(await adapterNames(page)).toEqual(['keeper']);
    // The storage panel refreshes after the adapters table: wait for its new content, not for a moment.
    await textMatching(page, '#storage-info', /Adapters[\d.]+ KB in 1(?!\d)/);
    // The model is kept with its size, and can be removed there.
    await textMatching(page, '#cached-models', /stories260K\/stories260K\.bin 1\.0 MB Remove/);
    await screenshot(page, 'demo');

    // 6. Offline: stop the server, take the browser off the network (so the package asks nothing) and reload.
    const origin = server.origin;
    await server.close();
    await browser.context.setOffline(true);
    const offlineFrom = browser.requests.length;
    const response = await page.reload();
    expect(response.fromServiceWorker()).toBe(true);
    await page.waitForFunction(() => document.body?.dataset.ready === 'true', null, { timeout: 30_000 });
    const offlineModel = await settled(page, '#model-status');
    expect(offlineModel).toEqual({ kind: 'ok', text: 'stories260K/stories260K.bin: ready (from this device).' });
    await page.waitForFunction(() => document.querySelectorAll('#adapters-body tr').length === 1);
    await page.getByRole('button', { name: 'Use the sample diary' }).waitFor();
    await page.getByRole('button', { name: 'Use keeper' }).click();
    await expect(settled(page, '#adapters-status', /^Using/)).resolves.toEqual({ kind: 'ok', text: expect.stringContaining('Using "keeper"') });
    await page.getByLabel('Temperature').fill('0');
    await page.getByLabel('Tokens', { exact: true }).fill('40');
    const offline = await generateBoth(page);
    expect(offline).toEqual(online);
    await screenshot(page, 'demo-offline');

    // Every request after the server stopped was answered by the service worker or never reached the network:
    // none went to the model files (the package read them from its Cache API copy), none left 127.0.0.1.
    const afterStop = browser.requests.slice(offlineFrom);
    expect(afterStop.filter((r) => r.url.includes('/shared/'))).toEqual([]);
    expect(thirdParty(browser.requests, origin)).toEqual([]);
    expect(errors).toEqual([]);
  }, 150_000);
});
