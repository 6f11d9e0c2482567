#!/usr/bin/env node
// init-model.js: writes a randomly initialised Llama in Hugging Face layout (config.json + F32 model.safetensors)
// through the wasm core itself, so the file is exactly what the loader and the trainer expect. Seeded and
// deterministic: the same arguments give the same bytes.
// Usage: node tools/default-model/init-model.js --tokenizer DIR --out DIR [--dim 256 --layers 6 --heads 8
//        --kv-heads 4 --hidden 704 --context 256 --seed 1]
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { Arch, Core, RopeLayout } from '../../web/core/core.js';
import { hfConfig, modelToSafetensors } from '../../web/engine/engine.js';
import { Rng } from '../../web/engine/rng.js';

/**
 * Fill a Float32Array with normal(0, std) values (Box-Muller over the package's seeded generator).
 * @param {Float32Array} out @param {number} std @param {Rng} rng
 */
function fillNormal(out, std, rng) {
  for (let i = 0; i < out.length; i += 2) {
    const u1 = 1 - rng.next(); // (0, 1]: log stays finite
    const u2 = rng.next();
    const r = std * Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
}

/**
 * GPT-2 / Llama style initialisation: matrices normal(0, 0.02); the projections that write into the residual
 * stream (o_proj, down_proj) scaled by 1/sqrt(2 L) so the stream's variance does not grow with depth; RMSNorm
 * weights 1. Every tensor draws from its own generator (seed and tensor index), so changing one shape does not
 * reshuffle the others.
 * @param {import('../../web/core/core.js').Model} model @param {number} seed
 */
export function initWeights(model, seed) {
  const L = model.config.nLayers;
  for (const t of model.tensors()) {
    const v = model.tensorView(t);
    if (/norm\.weight$/.test(t.name)) {
      v.fill(1);
      continue;
    }
    if (t.ndim !== 2) throw new Error(`no initialisation rule for ${t.name} (${t.shape})`);
    const residual = /(o_proj|down_proj)\.weight$/.test(t.name);
    const values = new Float32Array(t.numel);
    fillNormal(values, residual ? 0.02 / Math.sqrt(2 * L) : 0.02, new Rng((seed * 1000003 + t.index) >>> 0));
    v.set(values);
  }
}

async function main() {
  const { values } = parseArgs({ options: {
    tokenizer: { type: 'string', default: 'build/default-model/tokenizer' },
    out: { type: 'string', default: 'build/default-model/init' },
    dim: { type: 'string', default: '256' },
    layers: { type: 'string', default: '6' },
    heads: { type: 'string', default: '8' },
    'kv-heads': { type: 'string', default: '4' },
    hidden: { type: 'string', default: '704' },
    context: { type: 'string', default: '256' },
    'rope-theta': { type: 'string', default: '10000' },
    seed: { type: 'string', default: '1' },
  } });
  const int = (k) => {
    const n = Number(values[k]);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${k} must be a positive integer`);
    return n;
  };
  const tokJson = JSON.parse(await readFile(path.join(values.tokenizer, 'tokenizer.json'), 'utf8'));
  const ids = [...Object.values(tokJson.model.vocab), ...tokJson.added_tokens.map((t) => t.id)];
  const vocabSize = Math.max(...ids) + 1;
  const eos = tokJson.added_tokens.find((t) => t.special)?.id ?? 0;
  const dim = int('dim');
  const nHeads = int('heads');
  const nKvHeads = int('kv-heads');
  if (dim % nHeads !== 0 || nHeads % nKvHeads !== 0) throw new Error('dim must divide by heads, heads by kv-heads');
  const cfg = {
    arch: Arch.LLAMA, dim, hiddenDim: int('hidden'), nLayers: int('layers'), nHeads, nKvHeads, headDim: dim / nHeads,
    vocabSize, maxSeqLen: int('context'), tiedEmbeddings: 1, qkvBias: 0, ropeLayout: RopeLayout.HALF,
    ropeTheta: Number(values['rope-theta']), normEps: 1e-5, bosId: eos, eosId: eos,
  };
  const core = await Core.create();
  const model = core.createModel(cfg);
  initWeights(model, int('seed'));
  model.checkFinite();
  const params = model.params().length;
  await mkdir(values.out, { recursive: true });
  await writeFile(path.join(values.out, 'config.json'), `${JSON.stringify(hfConfig(model), null, 2)}\n`);
  await writeFile(path.join(values.out, 'model.safetensors'), modelToSafetensors(model, { 'weblora.init_seed': values.seed }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(path.join(values.tokenizer, f), path.join(values.out, f));
  model.free();
  process.stdout.write(`init: ${(params / 1e6).toFixed(3)} M parameters (dim ${dim}, ${cfg.nLayers} layers, ${nHeads}/${nKvHeads} heads, `
    + `hidden ${cfg.hiddenDim}, vocab ${vocabSize}, context ${cfg.maxSeqLen}) -> ${values.out}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
