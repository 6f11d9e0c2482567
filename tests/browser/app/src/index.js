// The app the bundler tests build: it imports weblora by its package name and offers the steps of a personal
// tuning session (load a model, train, generate, save, restore) to the test as window.app.
import { WebLoRA } from 'weblora';

const log = (line) => { document.getElementById('log').textContent += `${line}\n`; };

let engine = null;
let adapter = null;

window.app = {
  async load(source, options) {
    await engine?.dispose();
    engine = await WebLoRA.load(source, options);
    log(`loaded ${engine.info.name} on ${engine.info.threads} threads`);
    return { name: engine.info.name, threads: engine.info.threads, threadsNote: engine.info.threadsNote ?? null };
  },
  async train(texts, options) {
    adapter = await engine.createAdapter({ rank: 4, alpha: 8, targets: ['q_proj', 'v_proj'], seed: 1 });
    const losses = [];
    const summary = await engine.train(adapter, texts, { ...options, onStep: (s) => losses.push(s.loss) }).done;
    log(`trained ${summary.steps} steps`);
    return { steps: summary.steps, losses };
  },
  async generate(prompt, options) {
    const out = await engine.generate(prompt, { ...options, adapter });
    log(`${prompt}${out.text}`);
    return out.text;
  },
  save: (name) => engine.adapters.save(name, adapter, { overwrite: true }),
  async restore(name) {
    adapter = await engine.adapters.load(name);
    return (await engine.adapters.list()).map((r) => r.name);
  },
};
window.appReady = true;
