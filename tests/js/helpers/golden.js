// Reading the reference data of tests/ref: a golden case's description, tensors, model (through the package's
// loader, as apps load models) and PEFT adapter (through web/formats/peft-load.js, checked against the resolution PyTorch +
// PEFT's rules give), and the numpy SVD references of tests/ref/svd.
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';

import { expect } from '@jest/globals';

import { loadModel } from '../../../web/formats/loader.js';
import { peftToAdapter } from '../../../web/formats/peft-load.js';
import { readSafetensors, repoRoot, sharedPath } from './core.js';

export const GOLDEN = path.join(repoRoot, 'tests/ref/golden');

const read = (dir, name) => new Uint8Array(readFileSync(path.join(dir, name)));

/** { dir, cs (case.json), io (io.safetensors tensors) } of golden case `name`. */
export function readCase(core, name) {
  const dir = path.join(GOLDEN, name);
  const cs = JSON.parse(readFileSync(path.join(dir, 'case.json'), 'utf8'));
  return { dir, cs, io: readSafetensors(core, read(dir, 'io.safetensors')) };
}

/** The case's base model through the package's loader (web/formats/loader.js, as an app loads a model): model.bin, a
 *  model_ref into ../shared, or config.json with one model.safetensors or an index of shards. */
export async function loadCaseModel(core, dir, cs) {
  const ref = cs.model_ref;
  const load = async (files) => (await loadModel(core, files)).model;
  if (existsSync(path.join(dir, 'model.bin'))) return load({ 'model.bin': read(dir, 'model.bin') });
  if (ref && ref.endsWith('.bin')) return load({ 'model.bin': new Uint8Array(readFileSync(sharedPath(ref))) });
  const mdir = ref ? sharedPath(ref) : dir;
  const index = 'model.safetensors.index.json';
  const shards = existsSync(path.join(mdir, index))
    ? [index, ...new Set(Object.values(JSON.parse(readFileSync(path.join(mdir, index), 'utf8')).weight_map))]
    : ['model.safetensors'];
  return load(Object.fromEntries(['config.json', ...shards].map((f) => [f, read(mdir, f)])));
}

/** The PEFT files (adapter_config.json, adapter_model.safetensors) of a folder. */
export function peftFiles(dir) {
  return {
    'adapter_config.json': readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'),
    'adapter_model.safetensors': read(dir, 'adapter_model.safetensors'),
  };
}

/**
 * The adapter of folder `dir` loaded through web/formats/peft-load.js (the core computes the scales); every module's r, alpha
 * and scale must equal PyTorch's resolution (`loraModules`, case.json lora_modules).
 */
export function loadCaseAdapter(core, model, dir, loraModules) {
  const adapter = peftToAdapter(core, model, peftFiles(dir));
  const got = adapter.modules().map((m) => ({ path: model.modulePath(m.layer, m.slot), r: m.rank, alpha: m.alpha, scaling: m.scale }));
  expect(got.map((m) => m.path).sort()).toEqual(loraModules.map((m) => m.path).sort());
  for (const want of loraModules) {
    const m = got.find((x) => x.path === want.path);
    expect({ path: m.path, r: m.r, alpha: m.alpha }).toEqual({ path: want.path, r: want.r, alpha: Math.fround(want.alpha) });
    // One float32 division or square root of exact inputs: within 2 ulp of PyTorch's float64 scaling.
    expect(Math.abs(m.scaling - want.scaling) <= 2.4e-7 * Math.abs(want.scaling)
      ? 'scale as PEFT' : `${want.path}: scale ${m.scaling}, PyTorch + PEFT give ${want.scaling}`).toBe('scale as PEFT');
  }
  return adapter;
}

/** The rows of `logits` (B*T, V) at the case's stored positions (all T without logits_positions). */
export function storedLogits(logits, cs, V) {
  const { B, T } = cs;
  const positions = cs.logits_positions ?? [...Array(T).keys()];
  const out = new Float32Array(B * positions.length * V);
  for (let b = 0; b < B; b++) {
    positions.forEach((t, p) => out.set(logits.subarray((b * T + t) * V, (b * T + t + 1) * V), (b * positions.length + p) * V));
  }
  return out;
}

/** A matrix and its singular values from numpy (tests/ref/svd/*.bin, written by tests/ref/make_svd_ref.py). */
export function readSvdRef(name) {
  const buf = readFileSync(path.join(repoRoot, 'tests/ref/svd', `${name}.bin`));
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const [kind, m, n, , q] = [8, 12, 16, 20, 24].map((o) => dv.getUint32(o, true));
  if (buf.subarray(0, 4).toString() !== 'WLSV' || kind !== 0) throw new Error(`${name}: not a single-matrix reference`);
  const a = new Float32Array(buf.buffer.slice(buf.byteOffset + 28, buf.byteOffset + 28 + 4 * m * n));
  const S = new Float64Array(buf.buffer.slice(buf.byteOffset + 28 + 4 * m * n, buf.byteOffset + 28 + 4 * m * n + 8 * q));
  return { a, m, n, S };
}
