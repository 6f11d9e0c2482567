// The weblora package in real headless Chromium: models over HTTP with transformers.js-shaped progress, training in
// the Worker with a responsive main thread, adapters in IndexedDB across a reload, the model from the Cache API with
// the server stopped, no network from training to generation, no third-party requests; and all of it on a page that
// is not cross-origin isolated, where the core falls back to one thread, says so once, and keeps working.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

import path from 'node:path';

import {
  DATA, TRAIN_TEXT, checkPrerequisites, launch, newProfileDir, openPage, removeProfileDir, screenshot, sharedDir, startTestServer,
  thirdParty,
} from './helpers.js';

const PROMPT = 'Tom had a';
const GEN = { maxTokens: 24, temperature: 0 };
const ADAPTER_NAME = 'red boat stories';
const STEPS = 12;
/** The share of a heartbeat's time the main thread stood still on its own account (gaps over 40 ms, own part). */
const ownStalledShare = (beat) => beat.ownGapsMs.reduce((sum, ms) => sum + ms, 0) / beat.durationMs;
/** Long tasks (50 ms or more) still that long once the part the probe Worker shared is taken out. */
const ownLongTasks = (beat) => beat.ownLongTasksMs.filter((ms) => ms >= 50).length;
/** The longest few, for the log. @param {number[]} longestFirst */
const longest = (longestFirst) => longestFirst.slice(0, 4).map((ms) => ms.toFixed(0)).join('/') || '-';
/** What the criteria below read, for the log. */
const stallSummary = (beat) => `stood still ${(100 * ownStalledShare(beat)).toFixed(1)}% of the time on its own `
  + `(longest own gaps ${longest(beat.ownGapsMs)} ms), ${ownLongTasks(beat)} long tasks of its own (${longest(beat.ownLongTasksMs)} ms)`;

/** Checks one file's events: initiate, (download, progress..., done) with sane numbers. */
function checkFileEvents(events, file, { downloaded }) {
  const mine = events.filter((e) => e.file === file);
  const statuses = mine.map((e) => e.status);
  expect(statuses[0]).toBe('initiate');
  expect(statuses.at(-1)).toBe('done');
  expect(statuses.includes('download')).toBe(downloaded);
  const progress = mine.filter((e) => e.status === 'progress');
  expect(progress.length).toBeGreaterThan(0);
  for (const e of mine) expect(typeof e.name).toBe('string');
  let last = -1;
  for (const p of progress) {
    expect(p.total).toBeGreaterThan(0);
    expect(p.loaded).toBeGreaterThan(last);
    expect(p.loaded).toBeLessThanOrEqual(p.total);
    expect(p.progress).toBeCloseTo((p.loaded / p.total) * 100, 6);
    last = p.loaded;
  }
  expect(progress.at(-1).loaded).toBe(progress.at(-1).total);
  return { count: mine.length, total: progress.at(-1).total };
}

describe('weblora in headless Chromium', () => {
  let server;
  let profile;
  let browser;
  let page;
  /** Page errors and console errors of every page this suite opens. */
  const errors = [];
  /** Everything learnt along the way that a later test compares against. */
  const seen = {};
  /** The package's console warnings. */
  const warnings = [];

  beforeAll(async () => {
    checkPrerequisites();
    // ../shared's models also below the page, for a model URL relative to it (./models/...).
    server = await startTestServer({ isolation: false, mounts: { '/tests/browser/models/': path.join(sharedDir, 'models') } });
    profile = newProfileDir('package');
    browser = await launch(profile);
    ({ page } = await openPage(browser.context, server.page, errors));
    page.on('console', (msg) => {
      if (msg.type() === 'warning' && msg.text().startsWith('weblora:')) warnings.push(msg.text());
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.context.close().catch(() => {});
    await server?.close().catch(() => {});
    removeProfileDir(profile);
  });

  test('the page is not cross-origin isolated and still runs the package', async () => {
    const env = await page.evaluate(() => ({ isolated: crossOriginIsolated, secure: isSecureContext, caches: typeof caches }));
    expect(env).toEqual({ isolated: false, secure: true, caches: 'object' });
  });

  test('loads stories260K from a .bin URL plus tokenizer URL, with transformers.js-shaped progress events', async () => {
    const result = await page.evaluate(async ({ model, tokenizerUrl, prompt, gen }) => {
      const events = [];
      const engine = await weblora.WebLoRA.load(model, { tokenizerUrl, onProgress: (e) => events.push(e) });
      window.state.engine = engine;
      const base = await engine.generate(prompt, gen);
      log(`loaded ${engine.info.name}: ${engine.info.parameters} parameters on ${engine.info.threads} thread; `
        + `base model says "${prompt}${base.text}"`);
      const { arch, parameters, config, threads, threadsNote } = engine.info;
      return { events, info: { arch, parameters, config, threads, threadsNote }, base, cores: navigator.hardwareConcurrency };
    }, { model: server.shared(DATA.storiesBin), tokenizerUrl: server.shared(DATA.storiesTok), prompt: PROMPT, gen: GEN });

    const { events, info } = result;
    // Not isolated: one thread, whatever the cores, and the reason is given.
    expect(result.cores).toBeGreaterThan(0);
    expect(info.threads).toBe(1);
    expect(info.threadsNote).toMatch(/not cross-origin isolated/);
    expect(info.arch).toBe('llama');
    expect(info.config).toMatchObject({ dim: 64, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512 });
    const weights = checkFileEvents(events, 'stories260K.bin', { downloaded: true });
    const tokenizer = checkFileEvents(events, 'tok512.bin', { downloaded: true });
    expect(weights.total).toBe(1056540);
    expect(tokenizer.total).toBe(6227);
    expect(events.at(-1)).toMatchObject({ status: 'ready', task: 'text-generation' });
    expect(events.filter((e) => e.status === 'ready')).toHaveLength(1);
    // A real pretrained model: greedy decoding gives TinyStories-like words, not noise.
    expect(result.base.ids).toHaveLength(GEN.maxTokens);
    expect(result.base.text).toMatch(/[a-z]+ [a-z]+/);
    seen.baseText = result.base.text;
    console.log(`stories260K over HTTP: ${events.length} progress events; base greedy: "${PROMPT}${result.base.text}"`);
  });

  test('loads an HF-style folder (tiny-random-llama) with a tokenizer.json URL from another folder', async () => {
    const result = await page.evaluate(async ({ model, tokenizer }) => {
      const events = [];
      const engine = await weblora.WebLoRA.load(model, { tokenizer, onProgress: (e) => events.push(e) });
      const gen = await engine.generate('Hello world', { maxTokens: 6, temperature: 0 });
      const out = { events, info: { arch: engine.info.arch, config: engine.info.config, hasTokenizer: engine.info.hasTokenizer,
        threads: engine.info.threads }, gen };
      await engine.dispose();
      log(`loaded the HF folder ${model} (${out.events.length} progress events) and disposed it`);
      return out;
    }, { model: server.shared(DATA.tinyLlamaDir), tokenizer: server.shared(DATA.llamaTokenizer) });

    expect(result.info).toMatchObject({ arch: 'llama', hasTokenizer: true, threads: 1 });
    // The console note came once, for the first engine of the page.
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^weblora: this page is not cross-origin isolated .* so the core runs on one thread\.$/);
    expect(result.info.config).toMatchObject({ dim: 16, nLayers: 2, nHeads: 4, vocabSize: 32000 });
    checkFileEvents(result.events, 'config.json', { downloaded: true });
    const weights = checkFileEvents(result.events, 'model.safetensors', { downloaded: true });
    expect(weights.total).toBe(4131280);
    expect(result.events.at(-1)).toMatchObject({ status: 'ready' });
    expect(result.gen.ids).toHaveLength(6);
    expect(result.gen.ids.every((id) => id >= 0 && id < 32000)).toBe(true);
  });

  test('trains in the Worker while the main thread keeps ticking; no network from training to generation', async () => {
    const pageBefore = browser.requests.length;
    const serverBefore = server.requests.length;
    const windowStart = Date.now();
    const result = await page.evaluate(async ({ text, prompt, gen, name, steps }) => {
      const engine = window.state.engine;
      const adapter = await engine.createAdapter({ rank: 8, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], seed: 1 });
      setStatus('training');
      const losses = [];
      const stepMs = [];
      heartbeat.start();
      const started = performance.now();
      let last = started;
      // Long steps (8 x 256 tokens): run on the main thread, each of them would be one long task.
      const run = engine.train(adapter, [text], {
        steps, lr: 3e-3, batchSize: 8, seqLen: 256, evalSplit: 0, seed: 1,
        onStep: (r) => {
          const now = performance.now();
          stepMs.push(now - last);
          last = now;
          losses.push(r.loss);
        },
      });
      const summary = await run.done;
      const trainMs = performance.now() - started;
      const beat = await heartbeat.stop();
      const record = await engine.adapters.save(name, adapter);
      const tuned = await engine.generate(prompt, { ...gen, adapter });
      window.state.adapter = adapter;
      setStatus('trained');
      log(`trained ${summary.steps} steps in ${(trainMs / 1000).toFixed(2)} s, loss ${losses[0].toFixed(3)} -> ${losses.at(-1).toFixed(3)}`);
      log(`main thread: longest timer gap ${beat.maxIntervalGapMs.toFixed(1)} ms (${beat.maxOwnGapMs.toFixed(1)} ms its own), longest frame gap ${beat.maxFrameGapMs.toFixed(1)} ms (${beat.ticks} ticks, ${beat.frames} frames, ${beat.longTasks} long tasks)`);
      log(`saved "${record.name}" (${record.sizeBytes} bytes); tuned model says "${prompt}${tuned.text}"`);
      return { summary, losses, stepMs, trainMs, beat, record, tuned };
    }, { text: Array(12).fill(TRAIN_TEXT).join('\n\n'), prompt: PROMPT, gen: GEN, name: ADAPTER_NAME, steps: STEPS });
    const windowEnd = Date.now();

    const { beat, losses } = result;
    const medianStepMs = [...result.stepMs].sort((a, b) => a - b)[Math.floor(result.stepMs.length / 2)];
    console.log(`training: ${result.summary.steps} steps in ${result.trainMs.toFixed(0)} ms (median step ${medianStepMs.toFixed(0)} ms); `
      + `loss ${losses[0].toFixed(3)} -> ${losses.at(-1).toFixed(3)}; main thread: max gap ${beat.maxIntervalGapMs.toFixed(1)} ms `
      + `(timer; ${beat.maxOwnGapMs.toFixed(1)} ms not shared with the idle probe Worker, whose own max gap was `
      + `${beat.probeMaxGapMs.toFixed(1)} ms), ${beat.maxFrameGapMs.toFixed(1)} ms (frames), ${beat.ticks} ticks / ${beat.frames} frames, `
      + `${beat.longTasks} long tasks (longest ${beat.maxLongTaskMs.toFixed(0)} ms, ${beat.maxOwnLongTaskMs.toFixed(0)} ms its own); `
      + stallSummary(beat));
    expect(result.summary.steps).toBe(STEPS);
    expect(losses.at(-1)).toBeLessThan(losses[0] * 0.8); // measured 1.60 -> 0.45
    // The heartbeat ran all through training and the main thread stayed free. (Steps of 8 x 256 tokens take 130-260 ms
    // each here: the control below shows what running them on the main thread does to the same measurements.)
    expect(beat.durationMs).toBeGreaterThanOrEqual(result.trainMs);
    expect(beat.ticks).toBeGreaterThan(result.trainMs / 50);
    expect(beat.frames).toBeGreaterThan(result.trainMs / 100);
    // Gaps and long tasks are judged by their own part: a stall the idle probe Worker shared is the machine's (a loaded
    // CI box, a container at its CPU quota), not the page's (once a 254 ms long task while the probe Worker itself
    // stood still for 126 ms). Even so the OS can hold back the main thread alone now and then: CI once showed a
    // 494 ms gap while the probe Worker's longest was 141 ms and no long task passed 95 ms, with another suite busy
    // on the second core. So the criteria are not the longest stall but how much of the run the main thread stood
    // still and how many long tasks it ran. Work on the main thread stalls it at every step (the control: 12 long
    // tasks and 99.4-99.9% of the time still, also with 1-3 busy processes beside it); the machine's stalls come once
    // in a while (0 long tasks and 0.0% in the same runs; that CI run: one gap of 14% of the run, 2 long tasks). The
    // bounds sit at half the scale, and the control must reach two thirds of it.
    expect(ownStalledShare(beat)).toBeLessThan(1 / 2);
    expect(ownLongTasks(beat)).toBeLessThan(STEPS / 2);
    // The adapter changes what the model says.
    expect(result.tuned.text).not.toBe(seen.baseText);
    expect(result.record).toMatchObject({ name: ADAPTER_NAME, rank: 8, steps: STEPS });
    seen.tunedText = result.tuned.text;
    seen.record = result.record;
    seen.workerBeat = beat;

    const pageDuring = browser.requests.slice(pageBefore).filter((r) => r.time >= windowStart && r.time <= windowEnd);
    const serverDuring = server.requests.slice(serverBefore).filter((r) => r.time >= windowStart && r.time <= windowEnd);
    console.log(`requests from training start to generation end: page ${pageDuring.length}, server ${serverDuring.length}`);
    expect(pageDuring).toEqual([]);
    expect(serverDuring).toEqual([]);
    await screenshot(page, 'train');
  });

  test('control: the same training run on the main thread does stall it, so the heartbeat can see a stall', async () => {
    const result = await page.evaluate(async ({ model, tokenizerUrl, text, steps }) => {
      // The engine the Worker runs, imported into the page itself.
      const { LocalEngine } = await import('/dist/engine.js');
      const engine = await LocalEngine.load(model, { tokenizerUrl });
      const adapter = engine.createAdapter({ rank: 8, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], seed: 1 });
      heartbeat.start();
      await engine.train(adapter.id, [text], { steps, lr: 3e-3, batchSize: 8, seqLen: 256, evalSplit: 0, seed: 1 });
      const beat = await heartbeat.stop();
      engine.dispose();
      log(`control, training on the main thread: longest timer gap ${beat.maxIntervalGapMs.toFixed(1)} ms `
        + `(${beat.maxOwnGapMs.toFixed(1)} ms its own), ${beat.longTasks} long tasks`);
      return beat;
    }, { model: server.shared(DATA.storiesBin), tokenizerUrl: server.shared(DATA.storiesTok), text: Array(12).fill(TRAIN_TEXT).join('\n\n'), steps: STEPS });
    console.log(`control on the main thread: max gap ${result.maxIntervalGapMs.toFixed(1)} ms (${result.maxOwnGapMs.toFixed(1)} ms `
      + `not shared with the probe Worker, whose max gap was ${result.probeMaxGapMs.toFixed(1)} ms), ${result.longTasks} long tasks `
      + `(longest ${result.maxLongTaskMs.toFixed(0)} ms, ${result.maxOwnLongTaskMs.toFixed(0)} ms its own); `
      + stallSummary(result));
    // Every step is a long task now, and the heartbeat shows it: the measurement above could have failed.
    expect(ownLongTasks(result)).toBeGreaterThan((2 * STEPS) / 3);
    expect(ownStalledShare(result)).toBeGreaterThan(2 / 3);
  });

  test('after a reload the adapter is listed with its metadata, loads, and generates the same text', async () => {
    await page.reload();
    await page.waitForFunction(() => window.pageReady === true);
    const result = await page.evaluate(async ({ model, tokenizerUrl, prompt, gen, name }) => {
      const events = [];
      const engine = await weblora.WebLoRA.load(model, { tokenizerUrl, onProgress: (e) => events.push(e) });
      window.state.engine = engine;
      const list = await engine.adapters.list();
      const adapter = await engine.adapters.load(name);
      const again = await engine.generate(prompt, { ...gen, adapter });
      for (const r of list) {
        log(`stored: "${r.name}" on ${r.baseModel}, rank ${r.rank}, ${r.targets.join('+')}, ${r.sizeBytes} bytes, `
          + `created ${new Date(r.created).toISOString()}, ${r.steps} steps, final loss ${r.finalLoss?.toFixed(3)}`);
      }
      log(`after the reload the adapter says "${prompt}${again.text}"`);
      setStatus('reloaded');
      return { statuses: [...new Set(events.map((e) => e.status))], list, adapter, again };
    }, { model: server.shared(DATA.storiesBin), tokenizerUrl: server.shared(DATA.storiesTok), prompt: PROMPT, gen: GEN, name: ADAPTER_NAME });

    expect(result.list).toHaveLength(1);
    const r = result.list[0];
    expect(r).toMatchObject({
      name: ADAPTER_NAME, baseModel: server.shared(DATA.storiesBin), rank: 8, steps: STEPS, encrypted: false,
    });
    expect([...r.targets].sort()).toEqual(['k_proj', 'o_proj', 'q_proj', 'v_proj']);
    expect(r.sizeBytes).toBe(seen.record.sizeBytes);
    // 5 layers of rank-8 A and B for q (64->64), k and v (64->32), o (64->64), in f32.
    const parameters = 5 * 8 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64));
    expect(r.sizeBytes).toBeGreaterThan(parameters * 4);
    expect(r.created).toBe(seen.record.created);
    expect(r.finalLoss).toBeCloseTo(seen.record.finalLoss, 6);
    expect(result.adapter).toMatchObject({ name: ADAPTER_NAME, rank: 8, alpha: 16, steps: STEPS });
    expect(result.again.text).toBe(seen.tunedText);
    // Reloaded from the package's cache: nothing was downloaded.
    expect(result.statuses).not.toContain('download');
    await screenshot(page, 'reload');
  });

  test('a model URL relative to the page is resolved against the page, not the worker\'s own location', async () => {
    const result = await page.evaluate(async ({ dir, tokenizer }) => {
      const engine = await weblora.WebLoRA.load(dir, { tokenizerUrl: tokenizer, threads: 1 });
      const { name } = engine.info;
      await engine.dispose();
      return { name, base: document.baseURI };
    }, { dir: `./${DATA.tinyLlamaDir}`, tokenizer: `../../shared/${DATA.llamaTokenizer}` });
    // The worker runs at /dist/worker.js: resolved there, ./models/ would be a 404.
    expect(result.name).toBe(`${server.origin}/tests/browser/${DATA.tinyLlamaDir}`);
  });

  test('offline, with the server stopped, the model comes from the Cache API in a relaunched browser on the same profile', async () => {
    const origin = server.origin;
    await server.close();
    await browser.context.close();
    const before = browser.requests;
    browser = await launch(profile);
    browser.requests.unshift(...before);
    // The browser is offline (navigator.onLine false), so the package does not even ask whether the model changed.
    await browser.context.setOffline(true);
    const firstOffline = browser.requests.length;
    // The page and the package come from the HTTP cache (served with max-age); test data was served no-store.
    ({ page } = await openPage(browser.context, `${origin}/tests/browser/page.html`, errors));
    const result = await page.evaluate(async ({ model, tokenizerUrl, prompt, gen, name }) => {
      const events = [];
      const engine = await weblora.WebLoRA.load(model, { tokenizerUrl, onProgress: (e) => events.push(e) });
      const adapter = await engine.adapters.load(name);
      const again = await engine.generate(prompt, { ...gen, adapter });
      const cached = await weblora.listCachedModels();
      log(`server stopped: loaded ${model} from the Cache API (${cached.map((m) => m.files.map((f) => `${f.file} ${f.size} B`).join(', ')).join('; ')})`);
      log(`offline the adapter says "${prompt}${again.text}"`);
      setStatus('offline');
      return { events, again, cached };
    }, { model: `${origin}/shared/${DATA.storiesBin}`, tokenizerUrl: `${origin}/shared/${DATA.storiesTok}`, prompt: PROMPT, gen: GEN, name: ADAPTER_NAME });

    const statuses = result.events.map((e) => e.status);
    expect(statuses).not.toContain('download');
    expect(statuses).toContain('progress');
    expect(statuses.at(-1)).toBe('ready');
    const files = result.cached.flatMap((m) => m.files.map((f) => [f.file, f.size]));
    expect(files).toEqual(expect.arrayContaining([['stories260K.bin', 1056540], ['tok512.bin', 6227]]));
    expect(result.again.text).toBe(seen.tunedText);
    // Not one attempt to reach the model files: they were read from the Cache API, not the network or HTTP cache.
    const modelRequests = browser.requests.slice(firstOffline).filter((r) => r.url.includes('/shared/'));
    expect(modelRequests).toEqual([]);
    await screenshot(page, 'offline');
  });

  test('made no third-party requests and no page errors', async () => {
    const origin = new URL(server.page).origin;
    expect(thirdParty(browser.requests, origin)).toEqual([]);
    expect(browser.requests.length).toBeGreaterThan(0);
    expect(errors).toEqual([]);
  });
});
