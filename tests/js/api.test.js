// The public API is listed once (web/runtime/api.js): LocalEngine implements it, the worker serves it, the client's Engine
// is built from it, and index.d.ts declares it. These checks fail when a method is added to one of them and not to
// the others, and when index.d.ts and web/index.js disagree on what the package exports.
import { describe, test, expect } from '@jest/globals';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as pkg from '../../web/index.js';
import { Engine } from '../../web/runtime/client.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { AdapterLibrary } from '../../web/storage/library.js';
import { ENGINE_METHODS, STORE_METHODS, methodSpec } from '../../web/runtime/api.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DTS = readFileSync(path.join(repoRoot, 'web/index.d.ts'), 'utf8');

/** LocalEngine members that are not API methods: what the engine uses itself, and Node-side views of its state. */
const ENGINE_INTERNALS = ['info', 'adapterBytes', 'memory', 'requireTokenizer', 'entry', 'register', 'mergedLinearPlan', 'adapterInfo',
  'listAdapters', 'namedErrors', 'requireWeights', 'trainFrom', 'evaluatePrepared', 'useAdapters', 'adapterTensors', 'prepareDataStreamed', 'prepareData',
  'checkSeqLen', 'packData', 'dispose'];
/** AdapterLibrary members that only the engine calls (training checkpoints, the store itself). */
const LIBRARY_INTERNALS = ['store', 'saveCheckpoint', 'resumeState'];

/** The members of one `declare class X {` or `interface X {` block of index.d.ts, with their parameter counts. */
function declaredMembers(header) {
  const start = DTS.indexOf(header);
  if (start < 0) throw new Error(`index.d.ts has no "${header}"`);
  let depth = 0;
  let end = start;
  for (let i = DTS.indexOf('{', start); i < DTS.length; i++) {
    if (DTS[i] === '{') depth++;
    else if (DTS[i] === '}' && --depth === 0) {
      end = i;
      break;
    }
  }
  const body = DTS.slice(DTS.indexOf('{', start) + 1, end).replace(/\/\*\*[\s\S]*?\*\//g, '');
  /** @type {Map<string, { kind: 'method' | 'property', params: number[] }>} */
  const members = new Map();
  for (const m of body.matchAll(/^ {2}(?:readonly )?(\w+)(\(|\??:)/gm)) {
    const entry = members.get(m[1]) ?? { kind: m[2] === '(' ? 'method' : 'property', params: [] };
    if (m[2] === '(') entry.params.push(topLevelParams(body, m.index + m[0].length));
    members.set(m[1], entry);
  }
  return members;
}

/** The number of parameters of a declaration whose list starts at `at` (just after its "("). */
function topLevelParams(text, at) {
  let depth = 0;
  let count = 0;
  let any = false;
  for (let i = at; i < text.length; i++) {
    const c = text[i];
    if ('({[<'.includes(c)) depth++;
    else if (c === ')' && depth === 0) return any ? count + 1 : 0;
    else if (')}]>'.includes(c) && text[i - 1] !== '=') depth--;
    else if (c === ',' && depth === 0) count++;
    else if (!/\s/.test(c)) any = true;
  }
  throw new Error('unterminated parameter list');
}

/** Own methods of a class prototype, constructor left out. */
function protoMethods(cls) {
  return Object.getOwnPropertyNames(cls.prototype).filter((n) => n !== 'constructor' && typeof cls.prototype[n] === 'function').sort();
}

describe('the API is written once', () => {
  test('LocalEngine implements every engine method, and every other public member is a listed internal', () => {
    const names = Object.keys(ENGINE_METHODS).sort();
    for (const name of names) expect([name, typeof LocalEngine.prototype[name]]).toEqual([name, 'function']);
    const unlisted = protoMethods(LocalEngine).filter((n) => !names.includes(n) && !ENGINE_INTERNALS.includes(n));
    expect(unlisted).toEqual([]); // a new LocalEngine method must go into api.js (and index.d.ts) or ENGINE_INTERNALS
    for (const name of ENGINE_INTERNALS) expect([name, typeof LocalEngine.prototype[name]]).toEqual([name, 'function']);
  });

  test('the engine\'s adapter library implements every store method', () => {
    expect(protoMethods(AdapterLibrary)).toEqual([...Object.keys(STORE_METHODS), ...LIBRARY_INTERNALS].sort());
  });

  test('the client\'s Engine has exactly the engine methods and dispose; its adapters exactly the store methods', () => {
    expect(protoMethods(Engine)).toEqual([...Object.keys(ENGINE_METHODS), 'dispose'].sort());
    const client = new Engine(/** @type {any} */ ({}), {});
    expect(Object.keys(client.adapters).sort()).toEqual(Object.keys(STORE_METHODS).sort());
  });

  test('index.d.ts declares the engine\'s and the store\'s methods, no more, with the parameters api.js sends', () => {
    const engine = declaredMembers('export declare class Engine {');
    const methods = [...engine].filter(([, m]) => m.kind === 'method').map(([n]) => n).sort();
    expect(methods).toEqual([...Object.keys(ENGINE_METHODS), 'dispose'].sort());
    expect([...engine].filter(([, m]) => m.kind === 'property').map(([n]) => n).sort()).toEqual(['adapters', 'info']);
    const store = declaredMembers('export interface AdapterStoreApi {');
    expect([...store.keys()].sort()).toEqual(Object.keys(STORE_METHODS).sort());
    for (const [table, members] of [[ENGINE_METHODS, engine], [STORE_METHODS, store]]) {
      for (const [name, spec] of Object.entries(table)) {
        // every overload takes at most the arguments the protocol sends
        for (const n of members.get(name).params) expect([name, n <= spec.args.length]).toEqual([name, true]);
        expect([name, Math.max(...members.get(name).params)]).toEqual([name, spec.args.length]);
      }
    }
  });

  test('every callback the protocol turns into events is declared in index.d.ts', () => {
    for (const spec of [...Object.values(ENGINE_METHODS), ...Object.values(STORE_METHODS)]) {
      for (const callback of Object.keys(spec.events ?? {})) expect([callback, DTS.includes(`${callback}?:`)]).toEqual([callback, true]);
    }
  });

  test('the worker protocol names store methods with their prefix and nothing else', () => {
    expect(methodSpec('generate')).toBe(ENGINE_METHODS.generate);
    expect(methodSpec('adapters.list')).toBe(STORE_METHODS.list);
    expect(methodSpec('adapters.generate')).toBeUndefined();
    expect(methodSpec('toString')).toBeUndefined();
    expect(methodSpec('dispatchEvent')).toBeUndefined();
  });

  test('index.d.ts declares exactly the values web/index.js exports', () => {
    const declared = [...DTS.matchAll(/^export declare (?:const|class|function) (\w+)/gm)].map((m) => m[1]).sort();
    expect(declared).toEqual(Object.keys(pkg).sort());
  });
});
