#!/usr/bin/env node
// Writes web/core/abi.js, the C/JS boundary as JavaScript sees it, from the description the freshly built core gives of
// itself (the wl_abi export, src/wasm/abi.c): status names, enum values, struct layouts, LoRA module slots, limits.
// Run by tools/build.sh after the wasm builds. `node tools/abi.js --check` writes nothing and exits 1 when
// web/core/abi.js differs from what the build would write.
import { readFile, writeFile } from 'node:fs/promises';
import { instantiateCore } from '../web/runtime/wasm.js';

const WASM = new URL('../build/wasm/weblora.wasm', import.meta.url);
const OUT = new URL('../web/core/abi.js', import.meta.url);

/** The description of the core built at build/wasm/weblora.wasm. */
export async function describeBuiltCore() {
  const core = await instantiateCore({ source: await readFile(WASM) });
  const text = core.readString(core.exports.wl_abi());
  if (!text) throw new Error('wl_abi() returned nothing: the description outgrew its buffer in src/wasm/abi.c');
  return JSON.parse(text);
}

/** JSON with lists of numbers and strings (a struct field, a status list) kept on one line. */
function format(value, indent = '') {
  const flat = (v) => v === null || typeof v !== 'object' || (Array.isArray(v) && v.every((x) => x === null || typeof x !== 'object'));
  if (flat(value)) return JSON.stringify(value).replaceAll(',', ', ');
  const inner = `${indent}  `;
  const items = Array.isArray(value)
    ? value.map((v) => `${inner}${format(v, inner)}`)
    : Object.entries(value).map(([k, v]) => `${inner}${/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k)}: ${format(v, inner)}`);
  const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  return `${open}\n${items.join(',\n')},\n${indent}${close}`;
}

/** The text of web/core/abi.js for a description. */
export function abiModule(abi) {
  return `// abi.js: the C/JS boundary, written by tools/abi.js (npm run build) from the description the C core gives of
// itself (src/wasm/abi.c, from the headers in include/). Do not edit: change the headers and rebuild. web/core/core.js
// refuses a core whose description differs, and tests/js/abi.test.js checks it against every build of the core.
//   status        status names by code (wl_status); a failing call's CoreError carries the name as its code
//   structs       layouts of the structs JavaScript reads and writes: size and [field, byte offset, type, count]
//                 (types: i32, u32 (size_t), f32, f64, i64, ptr, str: a pointer to a NUL-terminated string)
//   architectures where each architecture's blocks sit and its LoRA module slots: [path, has_bias, conv1d]
//   limits        the parsers' limits (safetensors header size and rank) and the model-level module coordinates

export const ABI = Object.freeze(/** @type {const} */ (${format(abi)}));
`;
}

async function main() {
  const text = abiModule(await describeBuiltCore());
  if (process.argv.includes('--check')) {
    const current = await readFile(OUT, 'utf8').catch(() => '');
    if (current !== text) {
      process.stderr.write('web/core/abi.js does not match the core built from the headers: run sh tools/build.sh wasm\n');
      process.exit(1);
    }
    return;
  }
  await writeFile(OUT, text);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
