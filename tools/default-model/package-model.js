#!/usr/bin/env node
// package-model.js: copies a trained model folder into its committed place (demo/models/default): config.json
// with tidy numbers, model.safetensors as F32 or halved to F16 by the core (the loader widens F16 back), and the
// tokenizer.
// Usage: node tools/default-model/package-model.js --from DIR --to demo/models/default [--dtype f16|f32]
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { Core } from '../../web/core/core.js';
import { readSafetensors, writeSafetensors } from '../../web/formats/safetensors.js';

/** Hugging Face config with the f32 round-off of decimal settings removed (1e-5, not 0.000009999999747378752). */
export function tidyConfig(config) {
  const out = { ...config };
  for (const k of ['rms_norm_eps', 'rope_theta', 'layer_norm_epsilon']) {
    if (typeof out[k] === 'number') out[k] = Number(out[k].toPrecision(7));
  }
  return out;
}

async function main() {
  const { values } = parseArgs({ options: {
    from: { type: 'string' },
    to: { type: 'string', default: 'demo/models/default' },
    dtype: { type: 'string', default: 'f16' },
  } });
  if (!values.from) throw new Error('--from DIR is required');
  if (values.dtype !== 'f16' && values.dtype !== 'f32') throw new Error('--dtype must be f16 or f32');
  const config = tidyConfig(JSON.parse(await readFile(path.join(values.from, 'config.json'), 'utf8')));
  const core = await Core.create();
  const file = readSafetensors(core, new Uint8Array(await readFile(path.join(values.from, 'model.safetensors'))));
  const tensors = [...file.tensors.values()].map((t) => {
    const data = file.float32(t.name);
    return values.dtype === 'f16' ? { name: t.name, shape: t.shape, dtype: 'F16', bytes: core.encodeFloats(data, 'F16') }
      : { name: t.name, shape: t.shape, data };
  });
  config.torch_dtype = values.dtype === 'f16' ? 'float16' : 'float32';
  await mkdir(values.to, { recursive: true });
  await writeFile(path.join(values.to, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await writeFile(path.join(values.to, 'model.safetensors'), writeSafetensors(tensors, { metadata: { ...file.metadata, format: 'pt' } }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(path.join(values.from, f), path.join(values.to, f));
  process.stdout.write(`packaged ${tensors.length} tensors as ${values.dtype.toUpperCase()} -> ${values.to}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
