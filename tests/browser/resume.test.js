// A training run interrupted by closing its tab resumes in a new tab from its last IndexedDB checkpoint: it goes
// on from the checkpoint's step, with the checkpoint's weights, optimizer state and data position, so its losses
// match an uninterrupted run step for step. A checkpoint never resumes on another base model.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';

import {
  DATA, TRAIN_TEXT, checkPrerequisites, launch, newProfileDir, openPage, removeProfileDir, screenshot, startTestServer,
} from './helpers.js';

const RUN_ID = 'story-run-1';
const ADAPTER = { rank: 8, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], seed: 7 };
const TRAIN = { lr: 3e-3, batchSize: 4, seqLen: 64, evalSplit: 0, seed: 3 };

describe('checkpointed training in headless Chromium', () => {
  let server;
  let profile;
  let browser;

  beforeAll(async () => {
    checkPrerequisites();
    server = await startTestServer();
    profile = newProfileDir('resume');
    browser = await launch(profile);
  }, 30_000);

  afterAll(async () => {
    await browser?.context.close().catch(() => {});
    await server?.close();
    removeProfileDir(profile);
  });

  test('a run killed by closing the tab continues from its last checkpoint in a new tab, not from step 0', async () => {
    const errors = [];
    const load = (page) => page.evaluate(async ({ model, tokenizerUrl }) => {
      window.state.engine = await weblora.WebLoRA.load(model, { tokenizerUrl });
    }, { model: server.shared(DATA.storiesBin), tokenizerUrl: server.shared(DATA.storiesTok) });

    // 1. A long run that checkpoints every 2 steps into IndexedDB; the tab closes while it is going.
    let { page } = await openPage(browser.context, server.page, errors);
    await load(page);
    await page.evaluate(({ adapterOpts, train, text, runId }) => {
      const engine = window.state.engine;
      window.state.steps = [];
      window.state.checkpoints = [];
      engine.createAdapter(adapterOpts).then((adapter) => {
        setStatus('training (the tab will be closed mid-run)');
        const run = engine.train(adapter, [text], {
          ...train, steps: 400, checkpoint: { every: 2, runId, keep: true },
          onStep: (r) => window.state.steps.push(r.step),
          onCheckpoint: (c) => window.state.checkpoints.push(c),
        });
        run.done.catch(() => {});
      });
    }, { adapterOpts: ADAPTER, train: TRAIN, text: TRAIN_TEXT, runId: RUN_ID });
    await page.waitForFunction(() => window.state.checkpoints.some((c) => c.step >= 6), null, { timeout: 60_000 });
    const seenBeforeClose = await page.evaluate(() => ({ step: window.state.steps.at(-1), checkpoints: window.state.checkpoints.map((c) => c.step) }));
    await page.close();
    expect(seenBeforeClose.step).toBeLessThan(400);

    // 2. A new tab: the checkpoint is there; resuming goes on from its step, reproducing an uninterrupted run.
    ({ page } = await openPage(browser.context, server.page, errors));
    await load(page);
    const result = await page.evaluate(async ({ adapterOpts, train, text, runId }) => {
      const engine = window.state.engine;
      const stored = (await engine.adapters.checkpoints()).find((c) => c.runId === runId);
      const raw = await inspectStore();
      const from = stored.step;
      const extra = 4;
      // What an uninterrupted run gives at every step up to from + extra (training is deterministic).
      const reference = [];
      const fresh = await engine.createAdapter(adapterOpts);
      await engine.train(fresh, [text], { ...train, steps: from + extra, onStep: (r) => reference.push({ step: r.step, loss: r.loss }) }).done;
      // The resumed run, on a newly created adapter whose weights the checkpoint replaces.
      const resumedSteps = [];
      const adapter = await engine.createAdapter(adapterOpts);
      const summary = await engine.train(adapter, [text], {
        ...train, steps: from + extra, resume: runId, checkpoint: { every: 2, runId },
        onStep: (r) => resumedSteps.push({ step: r.step, loss: r.loss }),
      }).done;
      const after = (await engine.adapters.checkpoints()).map((c) => c.runId);
      log(`checkpoint "${runId}" was at step ${from}; resumed steps ${resumedSteps.map((s) => s.step).join(', ')}`);
      log(`resumed losses ${resumedSteps.map((s) => s.loss.toFixed(5)).join(', ')}`);
      log(`uninterrupted ${reference.slice(from).map((s) => s.loss.toFixed(5)).join(', ')} (step 1: ${reference[0].loss.toFixed(5)})`);
      setStatus('resumed');
      return { stored, raw, reference, resumedSteps, summary, after };
    }, { adapterOpts: ADAPTER, train: TRAIN, text: TRAIN_TEXT, runId: RUN_ID });

    const from = result.stored.step;
    console.log(`tab closed after step ${seenBeforeClose.step} (checkpoints seen: ${seenBeforeClose.checkpoints.join(', ')}); `
      + `stored checkpoint at step ${from}; resumed at step ${result.resumedSteps[0].step} with loss `
      + `${result.resumedSteps[0].loss.toFixed(6)} (uninterrupted run at that step: ${result.reference[from].loss.toFixed(6)}, at step 1: `
      + `${result.reference[0].loss.toFixed(6)})`);
    expect(from % 2).toBe(0);
    // The last checkpoint the page reported, or one written while the tab was closing.
    expect(from).toBeGreaterThanOrEqual(Math.max(...seenBeforeClose.checkpoints));
    expect(from).toBeLessThan(400);
    expect(result.raw.checkpoints).toEqual([{ runId: RUN_ID, step: from }]);
    expect(result.raw.checkpointFiles).toEqual([RUN_ID]);
    // Continues from the checkpoint, not from 0 ...
    expect(result.resumedSteps.map((s) => s.step)).toEqual([from + 1, from + 2, from + 3, from + 4]);
    expect(result.summary.steps).toBe(from + 4);
    // ... with the checkpoint's weights, optimizer moments and data position: the same losses as never stopping.
    result.resumedSteps.forEach((s, i) => {
      const ref = result.reference[from + i];
      expect(ref.step).toBe(s.step);
      // measured: bit for bit; 1e-4 relative leaves room for another summation order (threads), while resuming
      // without the optimizer moments moved a loss by 0.011
      expect(Math.abs(s.loss - ref.loss)).toBeLessThan(1e-4 * Math.max(1, ref.loss));
    });
    // (A restart from scratch would begin near the untrained loss instead.)
    expect(result.resumedSteps[0].loss).toBeLessThan(result.reference[0].loss * 0.9); // measured 1.02 vs 1.94
    // The finished run removed its checkpoint (keep was not set this time).
    expect(result.after).not.toContain(RUN_ID);
    await screenshot(page, 'resume');
    expect(errors).toEqual([]);
  }, 120_000);

  test('a checkpoint made on another base model is refused, and stays for the model it belongs to', async () => {
    const errors = [];
    const { page } = await openPage(browser.context, server.page, errors);
    const result = await page.evaluate(async ({ model, tokenizerUrl, adapterOpts, train, text }) => {
      const runId = 'made-on-another-base';
      const original = await weblora.WebLoRA.load(model, { tokenizerUrl });
      await original.train(await original.createAdapter(adapterOpts), [text], { ...train, steps: 3, checkpoint: { every: 1, runId, keep: true } }).done;
      // The same model with one weight changed: same shapes, other weights, another fingerprint.
      const bytes = await (await fetch(model)).arrayBuffer();
      const view = new DataView(bytes);
      view.setFloat32(28, view.getFloat32(28, true) + 0.5, true); // the first value of the token embedding
      const changed = await weblora.WebLoRA.load(bytes, { tokenizer: tokenizerUrl });
      const err = await changed.train(await changed.createAdapter(adapterOpts), [text], { ...train, steps: 5, resume: runId }).done
        .then(() => null, (e) => ({ name: e.name, code: e.code, message: e.message }));
      const kept = (await changed.adapters.checkpoints()).find((c) => c.runId === runId) ?? null;
      // The model it was made on still resumes it.
      const steps = [];
      await original.train(await original.createAdapter(adapterOpts), [text], { ...train, steps: 5, resume: runId,
        onStep: (r) => steps.push(r.step) }).done;
      const fingerprints = [original.info.fingerprint, changed.info.fingerprint];
      await changed.dispose();
      await original.dispose();
      setStatus('a checkpoint of another base was refused');
      return { err, kept, steps, fingerprints };
    }, { model: server.shared(DATA.storiesBin), tokenizerUrl: server.shared(DATA.storiesTok), adapterOpts: ADAPTER, train: TRAIN, text: TRAIN_TEXT });
    const [mine, other] = result.fingerprints;
    expect(mine).not.toBe(other);
    expect(result.err).toEqual({ name: 'BaseModelMismatchError', code: 'BASE_MODEL_MISMATCH',
      message: `checkpoint "made-on-another-base" was saved on another base model (fingerprint ${mine}); the loaded model's is ${other}` });
    // (the last checkpoint of a 3-step run is the one after step 2: a finished run needs none)
    expect(result.kept).toMatchObject({ step: 2 });
    expect(result.steps).toEqual([3, 4, 5]);
    expect(errors).toEqual([]);
  }, 120_000);
});
