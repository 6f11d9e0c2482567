#!/usr/bin/env node
// eval-heldout.js: loss of a model on exactly the held-out sequences `weblora train --eval-split F --seed S --seq T`
// set aside, so a packaged copy (F16) can be compared with the trained F32 model on the same tokens.
// Usage: node tools/default-model/eval-heldout.js --model DIR --data corpus.jsonl [--seq 256 --eval-split 0.02 --seed 1]
import { parseArgs } from 'node:util';
import path from 'node:path';

import { LocalEngine } from '../../web/engine/engine.js';
import { evaluateSequences } from '../../web/engine/train.js';
import { readJsonl } from './train-tokenizer.js';

async function main() {
  const { values } = parseArgs({ options: {
    model: { type: 'string' },
    data: { type: 'string', default: 'build/default-model/corpus.jsonl' },
    seq: { type: 'string', default: '256' },
    'eval-split': { type: 'string', default: '0.02' },
    seed: { type: 'string', default: '1' },
    batch: { type: 'string', default: '4' },
    json: { type: 'boolean' },
  } });
  if (!values.model) throw new Error('--model DIR is required');
  const engine = await LocalEngine.load(path.resolve(values.model));
  const seqLen = Number(values.seq);
  const data = engine.prepareData(await readJsonl(values.data), { seqLen, evalSplit: Number(values['eval-split']), seed: Number(values.seed) });
  const B = Number(values.batch);
  engine.model.reserve(B, seqLen);
  const { loss, tokens: count } = evaluateSequences(engine.model, data.eval, B);
  const result = { model: values.model, loss, perplexity: Math.exp(loss), tokens: count, sequences: data.eval.length };
  process.stdout.write(values.json ? `${JSON.stringify(result)}\n`
    : `held-out loss ${loss.toFixed(4)} (perplexity ${Math.exp(loss).toFixed(2)}) over ${count} tokens in ${data.eval.length} sequences\n`);
  engine.dispose();
}

await main();
