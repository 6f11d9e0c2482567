// dora.js: DoRA against plain LoRA at the same rank on the demo's sample diary and the built-in default model, the
// way `npm start` trains (same steps, data split, schedule and seed): held-out loss before and after each, and the
// CPU time a run costs (DoRA adds the row norms of W + s B A each step and a rescaling of every adapted output).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { LocalEngine } from '../../web/engine/engine.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SETUP = { rank: 4, alpha: 8, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 1 };
const TRAIN = { steps: 100, lr: 3e-3, batchSize: 4, seqLen: 128, evalSplit: 0.15, seed: 1, schedule: 'cosine', warmupSteps: 10 };

export async function benchDoraDiary({ log = () => {} } = {}) {
  const text = await readFile(path.join(root, 'demo/data/personal-style.txt'), 'utf8');
  const entries = text.split(/\n\s*\n/).map((s) => s.trim()).filter(Boolean);
  const engine = await LocalEngine.load(path.join(root, 'demo/models/default'), { threads: 1 });
  const runs = {};
  try {
    for (const dora of [false, true]) {
      log(`  ${dora ? 'DoRA' : 'LoRA'} rank ${SETUP.rank}, ${TRAIN.steps} steps...`);
      const a = engine.createAdapter({ ...SETUP, dora });
      const cpu = process.cpuUsage();
      const s = await engine.train(a.id, entries, TRAIN);
      const used = process.cpuUsage(cpu);
      runs[dora ? 'dora' : 'lora'] = { eval_loss_before: +s.evalLossBefore.toFixed(5), eval_loss: +s.evalLoss.toFixed(5),
        train_loss_recent: +s.trainLossRecent.toFixed(5), cpu_seconds: +((used.user + used.system) / 1e6).toFixed(2),
        eval_sequences: s.evalSequences };
      engine.freeAdapter(a.id);
    }
  } finally {
    engine.dispose();
  }
  return { setup: { model: 'demo/models/default', data: 'demo/data/personal-style.txt', ...SETUP, ...TRAIN, threads: 1 }, ...runs,
    dora_minus_lora_eval_loss: +(runs.dora.eval_loss - runs.lora.eval_loss).toFixed(5),
    dora_cpu_time_ratio: +(runs.dora.cpu_seconds / runs.lora.cpu_seconds).toFixed(3) };
}
