// What the package carries for bundlers that emit no files for `new URL('./x', import.meta.url)` (esbuild, Rollup):
// dist/embedded-data.js, made by tools/bundle.js, read through web/runtime/embedded.js as a bundle's page and workers read
// it. Each carried build of the core must decode to the very bytes of the build it stands for (the files in web/),
// and the carried Worker scripts must be whole modules that need nothing beside them. The browser flow runs in
// tests/browser/bundlers.test.js.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, test } from '@jest/globals';
import { build } from 'esbuild';

import { repoRoot } from './helpers/core.js';

const DATA = path.join(repoRoot, 'dist/embedded-data.js');
const BUILDS = ['weblora.wasm', 'weblora-threads.wasm', 'weblora-relaxed.wasm', 'weblora-relaxed-threads.wasm'];

describe('the Worker scripts and core builds a bundle carries', () => {
  if (!existsSync(DATA)) throw new Error(`${DATA} is missing: run sh tools/build.sh wasm dist`);

  test.each(BUILDS)('%s decodes to the build in web/runtime/', async (file) => {
    const { coreBuild } = await import('../../web/runtime/embedded.js');
    const carried = await coreBuild(file);
    const original = readFileSync(path.join(repoRoot, 'web', 'runtime', file));
    expect(carried.byteLength).toBe(original.byteLength);
    expect(Buffer.from(carried).equals(original)).toBe(true);
  });

  test('a build it does not carry is refused by name', async () => {
    const { coreBuild } = await import('../../web/runtime/embedded.js');
    await expect(coreBuild('weblora-nothing.wasm')).rejects.toThrow('this build of weblora carries no weblora-nothing.wasm');
    await expect(coreBuild('toString')).rejects.toThrow('carries no toString');
  });

  test('the engine worker script carries the thread script and every build once; nothing is loaded from beside it', async () => {
    const { CORES, THREAD, WORKER } = await import('../../dist/embedded-data.js');
    const { engineWorkerScript } = await import('../../web/runtime/embedded.js');
    expect(Object.keys(CORES).sort()).toEqual([...BUILDS].sort());
    const worker = engineWorkerScript();
    // The package holds each build once (the worker reads them from what the page puts before it)...
    for (const data of Object.values(CORES)) expect(WORKER).not.toContain(data.slice(0, 1000));
    // ...and the script a page starts holds each once, and the thread script.
    for (const data of Object.values(CORES)) expect(worker.split(data).length).toBe(2);
    expect(worker).toContain(JSON.stringify(THREAD));
    // A blob: script has no folder: not one static or dynamic import (esbuild, bundling each, lists what it would
    // have to resolve), and no source map.
    for (const script of [worker, THREAD]) {
      expect(script.length).toBeGreaterThan(1000);
      expect(script).not.toContain('sourceMappingURL');
      const imports = [];
      await build({
        stdin: { contents: script, loader: 'js' }, bundle: true, write: false, format: 'esm', logLevel: 'silent',
        plugins: [{ name: 'imports', setup: (b) => b.onResolve({ filter: /.*/ }, (args) => { imports.push(args.path); return { external: true }; }) }],
      });
      expect(imports).toEqual([]);
    }
  });
});
