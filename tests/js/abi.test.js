// The C/JS boundary: web/core/abi.js (written by the build from the module's own description, src/wasm/abi.c) agrees with
// every build of the core, describes every byte of each struct it lays out, and web/core/'s use of it (the fields
// it reads and writes) agrees with the description; a failing call carries the status name of the headers.
import { describe, test, expect } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import v8 from 'node:v8';

import { ABI } from '../../web/core/abi.js';
import { Core, structLayout } from '../../web/core/core.js';
import { abiModule, describeBuiltCore } from '../../tools/abi.js';

// Node 20 validates relaxed SIMD only behind this flag; set before any module compiles.
v8.setFlagsFromString('--experimental-wasm-relaxed-simd');

const repo = (path) => new URL(`../../${path}`, import.meta.url);
const TYPE_BYTES = { i32: 4, u32: 4, f32: 4, f64: 8, i64: 8, ptr: 4, str: 4 };

describe('web/core/abi.js and the builds of the core', () => {
  test('web/core/abi.js is what the build writes from the core built from the headers', async () => {
    const text = await readFile(repo('web/core/abi.js'), 'utf8');
    expect(text).toBe(abiModule(await describeBuiltCore()));
  });

  // Core's constructor compares the module's description with web/core/abi.js and refuses a difference.
  test.each([
    ['web/runtime/weblora.wasm', 'simd128', 1], ['web/runtime/weblora-relaxed.wasm', 'relaxed', 1],
    ['web/runtime/weblora-threads.wasm', 'simd128', 2], ['web/runtime/weblora-relaxed-threads.wasm', 'relaxed', 2],
  ])('%s describes itself as web/core/abi.js does', async (_file, simd, threads) => {
    const core = await Core.create({ simd: /** @type {'simd128' | 'relaxed'} */ (simd), threads });
    expect(core.threads).toBe(threads);
    expect(JSON.parse(core.wasm.readString(core.x.wl_abi()))).toEqual(ABI);
    await core.stopThreads();
  });

  test.each(['build/wasm/weblora-bench.wasm', 'build/wasm-relaxed/weblora-bench-relaxed.wasm'])(
    '%s (npm run bench) describes itself as web/core/abi.js does', async (file) => {
      const core = await Core.create({ source: await readFile(repo(file)) });
      expect(typeof core.x.wl_bench_sgemm).toBe('function');
    });

  test('the package builds of the core carry no benchmark exports', async () => {
    for (const simd of /** @type {const} */ (['simd128', 'relaxed'])) {
      const core = await Core.create({ simd });
      expect(Object.keys(core.x).filter((name) => name.startsWith('wl_bench'))).toEqual([]);
    }
  });

  test('a core that describes itself differently is refused', async () => {
    const core = await Core.create();
    const fake = { ...core.wasm, exports: { ...core.x, wl_abi: () => core.wasm.allocString('{"status":["OK"]}') } };
    fake.readString = (p) => core.wasm.readString(p);
    expect(() => new Core(/** @type {any} */ (fake))).toThrow(/does not match the JavaScript package/);
  });
});

describe('the description', () => {
  test.each(Object.keys(ABI.structs))('every byte of %s is a described field or alignment padding', (name) => {
    const { size, fields } = /** @type {Record<string, { size: number, fields: readonly (readonly [string, number, string, number])[] }>} */ (ABI.structs)[name];
    const sorted = [...fields].sort((a, b) => a[1] - b[1]);
    let end = 0;
    let align = 1;
    for (const [field, offset, type, count] of sorted) {
      const bytes = TYPE_BYTES[type];
      expect({ field, type: bytes ? type : `unknown type ${type}` }).toEqual({ field, type });
      // A gap as large as the field's alignment could hold an undescribed field.
      expect({ field, gapBefore: offset - end }).toEqual({ field, gapBefore: (bytes - (end % bytes)) % bytes });
      end = offset + bytes * count;
      align = Math.max(align, bytes);
    }
    expect({ name, tail: size - end }).toEqual({ name, tail: (align - (end % align)) % align });
  });

  test('statuses, enums and slots are well formed', () => {
    expect(ABI.status[0]).toBe('OK');
    expect(new Set(ABI.status).size).toBe(ABI.status.length);
    for (const s of ABI.status) expect(s).toMatch(/^[A-Z][A-Z_]*$/);
    expect(ABI.dtypeSize.length).toBe(Object.keys(ABI.dtype).length);
    for (const { blocks, slots } of Object.values(ABI.architectures)) {
      expect(blocks).toMatch(/^[a-z_.]+$/);
      expect(slots.length).toBeGreaterThan(0);
      expect(slots.length).toBeLessThanOrEqual(ABI.limits.maxSlots);
    }
  });

  test('a failing call carries the name of its status', async () => {
    const core = await Core.create();
    let err;
    try {
      core.configFromHF('{');
    } catch (e) {
      err = e;
    }
    expect(err?.code).toBe('BAD_FORMAT');
    expect(err?.details.status).toBe(ABI.status.indexOf('BAD_FORMAT'));
  });
});

describe('the binding and the description', () => {
  test('web/core/ reads fields the core has and writes every field of the structs it fills', () => {
    // web/core/ lays out its structs when it loads (this file imported it), so agreement is already proven;
    // here the guard itself must refuse each kind of disagreement.
    expect(() => structLayout('wl_tensor_info', ['name', 'n_elements'])).toThrow(/the core has no n_elements/);
    expect(() => structLayout('wl_config', ['arch', 'dim'], { complete: true })).toThrow(/the binding does not know hidden_dim/);
    expect(() => structLayout('wl_no_such_struct', [])).toThrow(/describes no struct/);
    const config = ABI.structs.wl_config.fields.map(([name]) => name);
    expect(structLayout('wl_config', config, { complete: true }).size).toBe(ABI.structs.wl_config.size);
  });
});
