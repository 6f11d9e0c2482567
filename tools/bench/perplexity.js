// perplexity.js: held-out perplexity of stories260K (on tools/bench/heldout-stories.txt) and of the default model
// (on demo/data/personal-style.txt, a style it never saw) with the base in f32, q8 and q4; run by tools/bench.js,
// prints JSON. tests/js/quant.test.js checks the same figures (q8 within 1%, q4 within 10%).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { LocalEngine } from '../../web/engine/engine.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const shared = path.resolve(process.env.WL_SHARED_DIR || path.join(root, '../shared'));
const cases = [
  ['stories260K', path.join(shared, 'models/stories260K/stories260K.bin'),
    readFileSync(path.join(root, 'tools/bench/heldout-stories.txt'), 'utf8').trim().split(/\n\n/)],
  ['default model', path.join(root, 'demo/models/default'), [readFileSync(path.join(root, 'demo/data/personal-style.txt'), 'utf8')]],
];
const out = {};
for (const [name, src, texts] of cases) {
  out[name] = {};
  for (const dtype of ['f32', 'q8', 'q4']) {
    const engine = await LocalEngine.load(src, { dtype, threads: 1 });
    const r = await engine.evaluate(texts, { seqLen: 128 });
    out[name][dtype] = { perplexity: +r.perplexity.toFixed(4), tokens: r.tokens, weight_bytes: engine.info().memory.weights };
    engine.dispose();
  }
  for (const dtype of ['q8', 'q4']) out[name][`${dtype}_vs_f32`] = +(out[name][dtype].perplexity / out[name].f32.perplexity).toFixed(4);
}
process.stdout.write(`${JSON.stringify(out)}\n`);
