// One error taxonomy: every code the package throws belongs to one class (errors of that code are all instances of
// it), the core's statuses arrive as those classes, and a core that aborts or traps leaves an engine that refuses
// every later call with a WasmAbortError, in one thread (LocalEngine) and through the worker (the class and code
// survive postMessage).
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import * as errors from '../../web/errors.js';
import { WebLoRA, WasmAbortError as PublicWasmAbortError } from '../../web/index.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { EngineError, InvalidArgumentError, WasmAbortError, WebLoRAError, deserializeError, serializeError } from '../../web/errors.js';
import { OutputError } from '../../web/storage/output.js';
import { repoRoot, sharedPath, wasmSource } from './helpers/core.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const TRAP_WORKER = pathToFileURL(path.join(repoRoot, 'tests/js/helpers/trap-worker.js')).href;
/** An address far outside the core's memory (which starts at 16 MB and grows on demand): reading it traps. */
const WILD_POINTER = 0x7ffffff0;

/** Every `new XError(..., { code: 'Y' })` (or without a code: the class's own) in web/: [class, code, file]. */
function throwSites() {
  const sites = [];
  const dir = path.join(repoRoot, 'web');
  const files = readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.js'));
  for (const file of files) {
    const src = readFileSync(path.join(dir, file), 'utf8');
    for (const m of src.matchAll(/new\s+([A-Z]\w*Error)\s*\(/g)) {
      const cls = m[1];
      if (!(cls in errors) && cls !== 'OutputError') continue; // TypeError and the like: not the package's taxonomy
      let depth = 0;
      let end = m.index + m[0].length - 1;
      for (; end < src.length; end++) {
        if (src[end] === '(') depth++;
        else if (src[end] === ')' && --depth === 0) break;
      }
      const call = src.slice(m.index, end);
      const code = /code: '([A-Za-z_]+)'/.exec(call)?.[1] ?? (/code:/.test(call) ? null : classes()[cls].code);
      if (code !== null) sites.push([cls, code, file]);
    }
  }
  return sites;
}

/**
 * Every construction of a built-in error class (Error, TypeError, RangeError...) or a DOMException other than the
 * AbortError/TimeoutError of cancellation in web/, as 'file:line: text'. throwSites cannot see them: it keeps only the
 * package's own classes, and its pattern does not even match a bare `new Error(`.
 */
function plainErrorSites() {
  const builtIn = /new\s+(Error|TypeError|RangeError|SyntaxError|ReferenceError|EvalError|URIError|AggregateError)\s*\(|new\s+DOMException\s*\((?![^)]*'(AbortError|TimeoutError)'\s*\))/g;
  const sites = [];
  const dir = path.join(repoRoot, 'web');
  for (const file of readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.js'))) {
    const src = readFileSync(path.join(dir, file), 'utf8');
    for (const m of src.matchAll(builtIn)) {
      // json.name: deserializeError rebuilds an AbortError or TimeoutError that crossed a thread
      if (/json\.name\)/.test(src.slice(m.index, m.index + 60))) continue;
      const line = src.slice(0, m.index).split('\n').length;
      sites.push(`${file}:${line}: ${src.slice(m.index, m.index + 60).split('\n')[0]}`);
    }
  }
  return sites;
}

function classes() {
  return { ...Object.fromEntries(Object.entries(errors).filter(([, v]) => typeof v === 'function' && v.prototype instanceof Error
    || v === errors.WebLoRAError)), OutputError };
}

describe('one code, one class', () => {
  test('every code thrown in web/ is owned by one class: all its errors are instances of that class', () => {
    const sites = throwSites();
    expect(sites.length).toBeGreaterThan(200);
    const all = classes();
    /** @type {Map<string, Set<string>>} */
    const byCode = new Map();
    for (const [cls, code] of sites) byCode.set(code, (byCode.get(code) ?? new Set()).add(cls));
    const shared = [];
    for (const [code, names] of byCode) {
      const list = [...names];
      const owner = list.find((o) => list.every((c) => all[c] === all[o] || all[c].prototype instanceof all[o]));
      if (!owner) shared.push(`${code}: ${list.join(', ')} (${sites.filter((s) => s[1] === code).map((s) => s[2]).join(', ')})`);
    }
    expect(shared).toEqual([]);
    expect(byCode.has('BAD_ARGUMENT')).toBe(false); // INVALID_ARGUMENT is the one name for a wrong argument
  });

  test('web/ makes no error outside the taxonomy: no plain Error, TypeError or RangeError reaches a caller', () => {
    expect(plainErrorSites()).toEqual([]);
  });

  test('every error class is registered, so it is rebuilt as itself after postMessage', () => {
    for (const [name, cls] of Object.entries(classes())) {
      const back = deserializeError(serializeError(new cls('m', { code: cls.code })));
      expect([name, back instanceof cls, back.name, back.code]).toEqual([name, true, name, cls.code]);
    }
    expect(new OutputError('x')).toBeInstanceOf(WebLoRAError);
  });

  test('the core\'s statuses arrive as the class of their meaning', async () => {
    const engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource(), threads: 1 });
    try {
      // INVALID_ARGUMENT from C (a rank of 0)
      const bad = (() => { try { engine.lowRankApprox(new Float32Array(6), 2, 3, { rank: 0 }); } catch (e) { return e; } })();
      expect(bad).toBeInstanceOf(InvalidArgumentError);
      expect(bad.code).toBe('INVALID_ARGUMENT');
      // threads are checked once, where they are used
      await expect(LocalEngine.load(STORIES, { wasmSource: wasmSource(), threads: 0 })).rejects.toBeInstanceOf(InvalidArgumentError);
    } finally {
      engine.dispose();
    }
  });
});

describe('an adapter in use', () => {
  test('freeing an attached or merged adapter is a clear error that leaves the engine working', async () => {
    const engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource(), threads: 1 });
    try {
      const a = engine.createAdapter({ rank: 2, seed: 1 });
      const { adapter } = engine.entry(a.id);
      engine.model.setAdapters([adapter]);
      const err = (() => { try { adapter.free(); } catch (e) { return e; } })();
      expect(err).toBeInstanceOf(EngineError);
      expect(err).toMatchObject({ code: 'BAD_STATE', message: expect.stringMatching(/attached to a model or merged.*detach or unmerge/) });
      engine.merge(a.id);
      expect(() => adapter.free()).toThrow(expect.objectContaining({ code: 'BAD_STATE' }));
      // the engine's own freeAdapter unmerges and detaches first
      engine.freeAdapter(a.id);
      expect(engine.loaded.size).toBe(0);
      expect((await engine.generate('Once', { maxTokens: 3 })).ids.length).toBe(3);
    } finally {
      engine.dispose();
    }
  });
});

describe('a core that traps', () => {
  test('in one thread: the failing call and every later one throw WasmAbortError; dispose still works', async () => {
    const engine = await LocalEngine.load(STORIES, { wasmSource: wasmSource(), threads: 1 });
    const a = engine.createAdapter({ rank: 2, seed: 1 });
    const first = (() => { try { engine.core.x.wl_adapter_n_modules(WILD_POINTER); } catch (e) { return e; } })();
    expect(first).toBeInstanceOf(WasmAbortError);
    expect(first).toMatchObject({ code: 'WASM_ABORTED', message: expect.stringMatching(/trapped in wl_adapter_n_modules/) });
    expect(first.cause).toBeInstanceOf(WebAssembly.RuntimeError);
    const later = [
      () => engine.generate('Once', { maxTokens: 2 }),
      () => engine.createAdapter({ rank: 2 }),
      () => engine.exportAdapter(a.id),
      () => engine.applyChatTemplate([{ role: 'user', content: 'hi' }]), // would not even call into the core
      () => engine.adapters.list(),
    ];
    for (const call of later) {
      const err = await (async () => call())().then(() => null, (e) => e);
      expect(err).toBeInstanceOf(WasmAbortError);
      expect(err.message).toMatch(/stopped earlier \(the core trapped in wl_adapter_n_modules.*load the model again/);
      expect(err.cause).toBe(first);
    }
    expect(() => engine.dispose()).not.toThrow();
  });

  describe('through the worker', () => {
    let engine;
    beforeAll(async () => {
      engine = await WebLoRA.load(STORIES, { workerUrl: TRAP_WORKER, threads: 1 });
    });
    afterAll(() => engine?.dispose());

    test('the trap arrives as WasmAbortError and every later call, engine or store, is refused with it', async () => {
      const a = await engine.createAdapter({ rank: 2, seed: 1 });
      const first = await engine.unmerge('trap').catch((e) => e);
      expect(first).toBeInstanceOf(PublicWasmAbortError);
      expect(first).toMatchObject({ name: 'WasmAbortError', code: 'WASM_ABORTED', message: expect.stringMatching(/trapped/) });
      expect(first.cause?.name).toBe('RuntimeError');
      for (const call of [() => engine.generate('Once'), () => engine.exportAdapter(a), () => engine.adapters.list(),
        () => engine.countTokens('hello')]) {
        const err = await call().catch((e) => e);
        expect(err).toBeInstanceOf(PublicWasmAbortError);
        expect(err).toMatchObject({ code: 'WASM_ABORTED', message: expect.stringMatching(/stopped earlier.*load the model again/) });
      }
    });
  });
});
