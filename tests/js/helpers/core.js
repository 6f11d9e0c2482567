// Test helpers: a core instance over the built wasm (WEBLORA_WASM overrides web/runtime/weblora.wasm), paths to test
// data, and safetensors reading through the C parser.
import { readFileSync, existsSync } from 'node:fs';
import { expect } from '@jest/globals';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { Core } from '../../../web/core/core.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** The third-party test material: ../shared, or WL_SHARED_DIR (as for the C tests and tests/ref/make_ref.py). */
export const sharedDir = path.resolve(process.env.WL_SHARED_DIR || path.join(repoRoot, '../shared'));

/** Absolute path of a file in ../shared; throws naming the path if it is missing. */
export function sharedPath(rel) {
  const p = path.join(sharedDir, rel);
  if (!existsSync(p)) throw new Error(`test data missing: ${p}`);
  return p;
}

export function readShared(rel) {
  return new Uint8Array(readFileSync(sharedPath(rel)));
}

export function wasmSource() {
  return process.env.WEBLORA_WASM ? pathToFileURL(path.resolve(process.env.WEBLORA_WASM)) : undefined;
}

export async function loadCore() {
  return Core.create({ source: wasmSource() });
}

const CTORS = { F32: Float32Array, I32: Int32Array, F64: Float64Array, I64: BigInt64Array, U8: Uint8Array };

/** Parse a safetensors file; returns name -> { dtype, shape, data (typed array copy) }. */
export function readSafetensors(core, bytes) {
  const st = core.parseSafetensors(bytes);
  const out = new Map();
  for (const t of st.tensors) {
    const Ctor = CTORS[t.dtype];
    if (!Ctor) throw new Error(`test reader: unsupported dtype ${t.dtype}`);
    const raw = bytes.slice(st.dataStart + t.begin, st.dataStart + t.end);
    out.set(t.name, { dtype: t.dtype, shape: t.shape, data: new Ctor(raw.buffer) });
  }
  return out;
}

/** Max abs / rel error and whether |got - want| <= atol + rtol |want| everywhere. */
export function compare(got, want, atol, rtol) {
  let maxAbs = 0;
  let maxRel = 0;
  let bad = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= atol + rtol * Math.abs(want[i])) && bad < 0) bad = i;
    if (d > maxAbs || Number.isNaN(d)) maxAbs = Number.isNaN(d) ? NaN : d;
    maxRel = Math.max(maxRel, d / (Math.abs(want[i]) + 1e-12));
  }
  if (got.length !== want.length) bad = Math.min(got.length, want.length);
  return { ok: bad < 0, maxAbs, maxRel, first: bad, got: got[bad], want: want[bad] };
}

/**
 * Asserts |got - want| <= atol + rtol |want| everywhere (an expect, so it counts as the test's check); a failure
 * names the first bad element, the values and the largest difference. Returns compare()'s result.
 */
export function expectAllClose(label, got, want, tol) {
  const r = compare(got, want, tol.atol, tol.rtol);
  const verdict = r.ok ? 'within tolerance'
    : `${label}: first bad [${r.first}] got ${r.got} want ${r.want}; max abs ${r.maxAbs} (atol ${tol.atol}, rtol ${tol.rtol})`;
  expect(verdict).toBe('within tolerance');
  return r;
}

/** f32 -> F16 bits, rounding to nearest even (test data: written independently of the core's conversion). */
export function f16(x) {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  let exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (exp << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** f32 values as the little-endian bytes of a 16-bit dtype (BF16: the top half of each f32, truncated). */
export function halfBytes(values, dtype) {
  const bits = new Uint16Array(values.length);
  const top = new Uint16Array(Float32Array.from(values).buffer);
  for (let i = 0; i < values.length; i++) bits[i] = dtype === 'F16' ? f16(values[i]) : top[2 * i + 1];
  return new Uint8Array(bits.buffer);
}

/** The largest absolute difference between two arrays of the same length. */
export function maxDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * An engine's logits for one sequence of token ids with the adapters `sel` applied (a copy).
 * @param {any} engine a LocalEngine
 * @param {number[]} ids
 * @param {any} sel what engine.useAdapters takes
 */
export function engineLogits(engine, ids, sel) {
  engine.useAdapters(sel);
  engine.model.reserve(1, ids.length);
  engine.model.forward(ids);
  return engine.model.logits().slice();
}
