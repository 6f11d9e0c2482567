// start.js: the main job `npm start` runs, offline, on the built-in default model: fine-tune a LoRA adapter on a
// bundled sample of personal-style text and show what changed (held-out loss, generations), then save the adapter
// as PEFT files. It uses the same public API a web app uses (the engine runs in a worker thread).
import { mkdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { WebLoRA } from '../web/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'demo/models/default');
const DATA = path.join(root, 'demo/data/personal-style.txt');
const OUT = path.join(root, 'build/personal-adapter');
const PROMPTS = ['The sea', 'Biscuit the cat'];

const tty = process.stderr.isTTY;
const say = (s = '') => process.stdout.write(`${s}\n`);

function bar(r) {
  if (!tty) {
    if (r.step % 20 === 0 || r.step === r.totalSteps) say(`  step ${r.step}/${r.totalSteps}  loss ${r.loss.toFixed(4)}  ${r.tokensPerSecond.toFixed(0)} tok/s`);
    return;
  }
  const width = 30;
  const fill = Math.round((r.step / r.totalSteps) * width);
  const eta = (r.elapsed / r.step) * (r.totalSteps - r.step);
  process.stderr.write(`\r  [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${r.step}/${r.totalSteps}  loss ${r.loss.toFixed(4)}  `
    + `${r.tokensPerSecond.toFixed(0)} tok/s  ${eta.toFixed(0)} s left\x1b[K`);
  if (r.step === r.totalSteps) process.stderr.write('\n');
}

async function generations(engine, adapter) {
  const out = [];
  for (const prompt of PROMPTS) {
    const g = await engine.generate(prompt, { adapter, maxTokens: 40, temperature: 0.6, topK: 40, seed: 7 });
    out.push(`${prompt}${g.text}`.replace(/\s+/g, ' ').trim());
  }
  return out;
}

async function main() {
  const started = Date.now();
  const text = await readFile(DATA, 'utf8');
  // Entries are separated by blank lines: each is one document.
  const entries = text.split(/\n\s*\n/).map((s) => s.trim()).filter(Boolean);
  say(`weblora: fine-tuning the built-in model on ${entries.length} entries of personal-style text (${text.length} characters)`);
  const engine = await WebLoRA.load(MODEL, {});
  const info = engine.info;
  say(`model: ${path.relative(root, MODEL)} (${info.arch}, ${(info.parameters / 1e6).toFixed(2)} M parameters, `
    + `${info.config.nLayers} layers, dim ${info.config.dim}, vocab ${info.config.vocabSize})`);
  try {
    const before = await generations(engine, undefined);
    const adapter = await engine.createAdapter({
      rank: 8, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 1,
    });
    say(`adapter: rank ${adapter.rank}, alpha ${adapter.alpha}, ${adapter.parameters} trainable parameters on ${adapter.targets.join(', ')}`);
    say('training:');
    const run = engine.train(adapter, entries, {
      steps: 100, lr: 3e-3, batchSize: 4, seqLen: 128, evalSplit: 0.15, seed: 1, schedule: 'cosine', warmupSteps: 10, onStep: bar,
    });
    const summary = await run.done;
    const after = await generations(engine, adapter);
    say();
    say(`held-out loss: ${summary.evalLossBefore.toFixed(4)} before -> ${summary.evalLoss.toFixed(4)} after `
      + `(perplexity ${Math.exp(summary.evalLossBefore).toFixed(1)} -> ${summary.perplexity.toFixed(1)}; `
      + `${summary.evalSequences} held-out sequences)`);
    say(`trained ${summary.steps} steps in ${summary.seconds.toFixed(1)} s, ${summary.tokensPerSecond.toFixed(0)} tokens/s`);
    say();
    PROMPTS.forEach((p, i) => {
      say(`prompt "${p}"`);
      say(`  before: ${before[i]}`);
      say(`  after:  ${after[i]}`);
    });
    const peft = await engine.exportAdapter(adapter);
    const tmp = `${OUT}.partial-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    for (const [name, data] of Object.entries(peft.files)) await writeFile(path.join(tmp, name), data);
    await rm(OUT, { recursive: true, force: true });
    await rename(tmp, OUT);
    say();
    say(`saved the adapter (PEFT files) to ${path.relative(root, OUT)}/ in ${((Date.now() - started) / 1000).toFixed(0)} s in total`);
    say(`try it: node web/cli.js generate --model ${path.relative(root, MODEL)} --adapter ${path.relative(root, OUT)} --prompt "The sea" --temperature 0.6`);
  } finally {
    await engine.dispose();
  }
}

main().catch((err) => {
  process.stderr.write(`weblora start: error: ${err.message}\n`);
  process.exitCode = 1;
});
