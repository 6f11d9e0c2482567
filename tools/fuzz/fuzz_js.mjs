// fuzz_js.mjs: a mutation fuzzer for the parsers written in JavaScript: llama2.c tokenizer.bin
// (parseLlama2cTokenizer) and PEFT adapter_config.json (through importAdapter, onto the small llama2.c model of
// tests/ref/golden). Inputs start from the seed corpus in tests/fuzz/corpus/<target>/ and are mutated with a
// seeded generator (bit flips, hostile bytes and integers, truncation, splicing; for JSON also hostile values in
// place of fields). The oracle: a parser either accepts or throws one of weblora's own errors with a message; any
// other exception (TypeError, RangeError, stack overflow) or an input slower than a second is a failure, saved
// under build/fuzz/crashes/. Prints one JSON line per target with runs and V8 block coverage of the parser file.
// Usage: node tools/fuzz/fuzz_js.mjs <seconds per target> [target...]
import { Session } from 'node:inspector/promises';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { WebLoRAError } from '../../web/errors.js';
import { parseLlama2cTokenizer } from '../../web/formats/tokenizer-llama2c.js';
import { LocalEngine } from '../../web/engine/engine.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const seconds = Number(process.argv[2] ?? 10);
const only = process.argv.slice(3);
const SLOW_MS = 1000;

let state = 0x243f6a8885a308d3n;
/** xorshift64: the same runs for the same seconds budget order. */
function rnd(n) {
  state ^= (state << 13n) & 0xffffffffffffffffn;
  state ^= state >> 7n;
  state ^= (state << 17n) & 0xffffffffffffffffn;
  return Number(state % BigInt(n));
}

const HOSTILE_BYTES = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x0a];
const HOSTILE_INT32 = [0, -1, 1, 0x7fffffff, -0x80000000, 256, 65536, 1 << 30];

/** @param {Uint8Array} input @param {Uint8Array[]} corpus */
function mutateBytes(input, corpus) {
  let b = Uint8Array.from(input);
  const n = 1 + rnd(4);
  for (let k = 0; k < n; k++) {
    switch (rnd(7)) {
      case 0: if (b.length) b[rnd(b.length)] ^= 1 << rnd(8); break;
      case 1: if (b.length) b[rnd(b.length)] = HOSTILE_BYTES[rnd(HOSTILE_BYTES.length)]; break;
      case 2: if (b.length >= 4) new DataView(b.buffer).setInt32(rnd(b.length - 3), HOSTILE_INT32[rnd(HOSTILE_INT32.length)], true); break;
      case 3: b = b.slice(0, rnd(b.length + 1)); break;
      case 4: { // duplicate a run
        const s = rnd(b.length + 1);
        const e = Math.min(b.length, s + rnd(64));
        const out = new Uint8Array(b.length + (e - s));
        out.set(b.subarray(0, e));
        out.set(b.subarray(s), e);
        b = out;
        break;
      }
      case 5: { // splice with another corpus entry
        const other = corpus[rnd(corpus.length)];
        const cut = rnd(b.length + 1);
        const from = rnd(other.length + 1);
        const out = new Uint8Array(cut + other.length - from);
        out.set(b.subarray(0, cut));
        out.set(other.subarray(from), cut);
        b = out;
        break;
      }
      default: { // delete a run
        const s = rnd(b.length + 1);
        const e = Math.min(b.length, s + rnd(32));
        b = Uint8Array.from([...b.subarray(0, s), ...b.subarray(e)]);
      }
    }
  }
  return b;
}

const HOSTILE_VALUES = [null, true, -1, 0, 1e308, -1e308, 2 ** 53, 0.5, '', 'all-linear', '.*', '(a+)+$', '[', 'q_proj', [], [null],
  ['q_proj', 'q_proj'], {}, { 'q_proj': 1e9 }, { '(a+)+$': 2 }, 'x'.repeat(10000), Array(1000).fill('v_proj')];

/** JSON-aware mutation: a field gets a hostile value, is removed, or the text is mutated as bytes. */
function mutateJson(input, corpus) {
  const text = new TextDecoder().decode(input);
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    obj = null;
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj) || rnd(4) === 0) return mutateBytes(input, corpus);
  const keys = Object.keys(obj);
  const n = 1 + rnd(3);
  for (let k = 0; k < n && keys.length; k++) {
    const key = keys[rnd(keys.length)];
    if (rnd(5) === 0) delete obj[key];
    else obj[key] = HOSTILE_VALUES[rnd(HOSTILE_VALUES.length)];
  }
  return new TextEncoder().encode(JSON.stringify(obj));
}

/** @returns {Promise<{ file: string, run(input: Uint8Array): unknown, mutate: Function, dispose?: Function }>} */
async function makeTarget(name) {
  if (name === 'tokenizer_bin') {
    return {
      file: 'web/formats/tokenizer-llama2c.js',
      mutate: mutateBytes,
      run: (input) => parseLlama2cTokenizer(input),
    };
  }
  if (name === 'peft_config') {
    const dir = path.join(root, 'tests/ref/golden/llama2c_interleaved');
    const engine = await LocalEngine.load(path.join(dir, 'model.bin'));
    const weights = new Uint8Array(readFileSync(path.join(dir, 'adapter_model.safetensors')));
    return {
      file: 'web/formats/peft-load.js',
      mutate: mutateJson,
      run: (input) => {
        // Doubts about the named base model are part of what runs, but not printed for every input.
        const h = engine.importAdapter({ 'adapter_config.json': input, 'adapter_model.safetensors': weights }, { onWarning: () => {} });
        engine.freeAdapter(h.id);
      },
      dispose: () => engine.dispose(),
    };
  }
  throw new Error(`unknown target ${name}`);
}

/** @param {unknown} err */
function isOwnError(err) {
  return err instanceof WebLoRAError && typeof err.message === 'string' && err.message.length > 0;
}

async function fuzz(name, session) {
  const target = await makeTarget(name);
  const corpusDir = path.join(root, 'tests/fuzz/corpus', name);
  const corpus = readdirSync(corpusDir).sort().map((f) => new Uint8Array(readFileSync(path.join(corpusDir, f))));
  if (!corpus.length) throw new Error(`no seeds in ${corpusDir}`);
  const outcomes = new Set();
  let runs = 0;
  let accepted = 0;
  const failures = [];
  const deadline = performance.now() + seconds * 1000;
  for (const seed of corpus) {
    try { target.run(seed); } catch (err) { if (!isOwnError(err)) failures.push({ input: seed, err }); }
  }
  while (performance.now() < deadline && failures.length < 5) {
    const input = runs % 10 === 0 ? corpus[rnd(corpus.length)] : target.mutate(corpus[rnd(corpus.length)], corpus);
    const t0 = performance.now();
    try {
      target.run(input);
      accepted++;
      outcomes.add('accepted');
    } catch (err) {
      if (isOwnError(err)) outcomes.add(`${err.name}: ${String(err.message).replace(/\d+/g, 'N').slice(0, 80)}`);
      else failures.push({ input, err });
    }
    if (performance.now() - t0 > SLOW_MS) failures.push({ input, err: new Error(`took ${(performance.now() - t0).toFixed(0)} ms`) });
    runs++;
  }
  const cov = await session.post('Profiler.takePreciseCoverage');
  target.dispose?.();
  const fileUrl = pathToFileURL(path.join(root, target.file)).href;
  const script = cov.result.find((r) => r.url === fileUrl);
  let covered = 0;
  let total = 0;
  for (const fn of script?.functions ?? []) {
    for (const r of fn.ranges) {
      total++;
      if (r.count > 0) covered++;
    }
  }
  for (const f of failures) {
    const dir = path.join(root, 'build/fuzz/crashes');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${name}-${createHash('sha256').update(f.input).digest('hex').slice(0, 16)}`);
    writeFileSync(file, f.input);
    process.stderr.write(`fuzz ${name}: ${f.err?.stack ?? f.err}\n  input saved to ${file}\n`);
  }
  process.stdout.write(`${JSON.stringify({ target: name, seconds, runs, accepted, distinctOutcomes: outcomes.size,
    coveredBlocks: covered, blocks: total, failures: failures.length })}\n`);
  return failures.length === 0;
}

const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
let ok = true;
for (const name of only.length ? only : ['tokenizer_bin', 'peft_config']) ok = (await fuzz(name, session)) && ok;
process.exitCode = ok ? 0 : 1;
