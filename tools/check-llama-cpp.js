#!/usr/bin/env node
// check-llama-cpp.js (`npm run check:llama.cpp`): runs the GGUF files weblora writes in a real llama.cpp and
// compares greedy decoding token for token with weblora's own. llama.cpp comes prebuilt from npm (node-llama-cpp
// and its CPU binary package, pinned, installed once into build/llama-cpp-check; about 70 MB, nothing is compiled).
// For the built-in default model, stories260K (a llama2.c checkpoint) and a tiny GPT-2, it trains a small adapter
// with rsLoRA and rank/alpha patterns, then checks: base model GGUF, base GGUF + LoRA GGUF (llama.cpp's --lora),
// and the merged model GGUF. F32 files must match exactly; F16 files are reported (their rounded weights may
// legitimately flip a near-tie). Exit 1 on any F32 mismatch. Usage: node tools/check-llama-cpp.js [--keep DIR]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { LocalEngine } from '../web/engine/engine.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const NODE_LLAMA_CPP = '3.21.1';
const installDir = path.join(root, 'build/llama-cpp-check');

/** node-llama-cpp's prebuilt CPU binary package for this machine. */
function binaryPackage() {
  const os_ = { linux: 'linux', darwin: 'mac', win32: 'win' }[process.platform];
  if (!os_) throw new Error(`no prebuilt llama.cpp for ${process.platform}`);
  return `@node-llama-cpp/${os_}-${process.arch}${os_ === 'mac' && process.arch === 'arm64' ? '-metal' : ''}`;
}

/** Install node-llama-cpp with only this machine's CPU binary (not its optional CUDA/Vulkan builds). */
function install() {
  const marker = path.join(installDir, 'node_modules/node-llama-cpp/package.json');
  if (existsSync(marker) && JSON.parse(readFileSync(marker, 'utf8')).version === NODE_LLAMA_CPP) return;
  mkdirSync(installDir, { recursive: true });
  writeFileSync(path.join(installDir, 'package.json'), JSON.stringify({
    name: 'weblora-llama-cpp-check', private: true, type: 'module',
    dependencies: { 'node-llama-cpp': NODE_LLAMA_CPP, [binaryPackage()]: NODE_LLAMA_CPP },
  }, null, 2));
  process.stderr.write(`installing node-llama-cpp ${NODE_LLAMA_CPP} and ${binaryPackage()} into ${installDir}\n`);
  // The prebuilt binary is used as shipped: no download or source build of llama.cpp.
  execFileSync('npm', ['install', '--omit=optional', '--no-audit', '--no-fund', '--no-package-lock'],
    { cwd: installDir, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' } });
}

async function loadLlamaCpp() {
  const pkgDir = path.join(installDir, 'node_modules/node-llama-cpp');
  const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  const mod = await import(pathToFileURL(path.join(pkgDir, pkg.exports['.'].import)).href);
  const llama = await mod.getLlama({ gpu: false, build: 'never', logLevel: mod.LlamaLogLevel.error });
  return { llama, release: llama.llamaCppRelease };
}

/** Greedy ids from llama.cpp for each prompt (our prompt ids, so tokenization is compared separately). */
async function llamaCppGreedy(llama, modelPath, loraPath, prompts, n) {
  const model = await llama.loadModel({ modelPath });
  // One thread: ggml's spinning workers crawl on a small machine that is busy with anything else.
  const context = await model.createContext({ contextSize: 256, sequences: 1, threads: 1,
    ...(loraPath ? { lora: { adapters: [{ filePath: loraPath, scale: 1 }] } } : {}) });
  try {
    const out = [];
    for (const p of prompts) {
      const seq = context.getSequence();
      const ids = [];
      for await (const t of seq.evaluate(p.promptIds, { temperature: 0 })) {
        ids.push(t);
        if (ids.length >= n) break;
      }
      seq.dispose();
      // node-llama-cpp's evaluate ends by itself after an end-of-generation token.
      out.push({ ids, ended: ids.length < n, tokenized: [...model.tokenize(p.prompt)] });
    }
    return out;
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

const MODELS = [
  { name: 'default', source: path.join(root, 'demo/models/default'), data: path.join(root, 'demo/data/personal-style.txt'),
    prompts: ['The meaning of life', 'Dear diary, today', 'Onward'], rank: 8, dtypes: ['f32', 'f16'] },
  { name: 'stories260K', source: path.join(shared, 'models/stories260K/stories260K.bin'), data: path.join(root, 'demo/data/personal-style.txt'),
    prompts: ['Once upon a time', 'The little dog'], rank: 4, dtypes: ['f32'] },
  { name: 'tiny-gpt2', source: path.join(shared, 'models/tiny-gpt2'), data: path.join(root, 'demo/data/personal-style.txt'),
    prompts: ['Hello world, this is'], rank: 2, dtypes: ['f32'] },
];
const N = 40;

async function main() {
  const keep = process.argv.indexOf('--keep');
  const work = keep > 0 ? path.resolve(process.argv[keep + 1]) : mkdtempSync(path.join(os.tmpdir(), 'weblora-llama-cpp-'));
  mkdirSync(work, { recursive: true });
  install();
  const { llama, release } = await loadLlamaCpp();
  process.stdout.write(`llama.cpp ${release.repo} ${release.release} via node-llama-cpp ${NODE_LLAMA_CPP}; files in ${work}\n`);
  let failures = 0;
  let tokenizerDiffs = 0;
  try {
    for (const spec of MODELS) {
      const engine = await LocalEngine.load(spec.source);
      try {
        // A small adapter with every per-module scaling llama.cpp does not know: rsLoRA, rank and alpha patterns.
        const arch = engine.model.arch;
        const h = engine.createAdapter({ rank: spec.rank, alpha: 2 * spec.rank, targets: 'all-linear', useRslora: true,
          rankPattern: arch === 'gpt2' ? { 'c_fc': 1 } : { down_proj: spec.rank / 2 }, alphaPattern: arch === 'gpt2' ? { c_proj: 1 } : { v_proj: 3 } });
        await engine.train(h.id, [readFileSync(spec.data, 'utf8')], { steps: 20, lr: 5e-3, seqLen: 64, batchSize: 4, seed: 1 });
        const files = {};
        for (const dtype of spec.dtypes) {
          files[`base-${dtype}`] = engine.exportModel({ format: 'gguf', dtype })['model.gguf'];
          files[`lora-${dtype}`] = engine.exportAdapter(h.id, { format: 'gguf', dtype }).files['adapter.gguf'];
        }
        const ours = { base: [], lora: [] };
        for (const text of spec.prompts) {
          ours.base.push({ prompt: text, ...(await engine.generate(text, { maxTokens: N, temperature: 0 })) });
          ours.lora.push({ prompt: text, ...(await engine.generate(text, { maxTokens: N, temperature: 0, adapter: h.id })) });
        }
        engine.merge(h.id);
        for (const dtype of spec.dtypes) files[`merged-${dtype}`] = engine.exportModel({ format: 'gguf', dtype })['model.gguf'];
        const file = (k) => {
          const p = path.join(work, `${spec.name}-${k}.gguf`);
          writeFileSync(p, files[k]);
          return p;
        };
        const eos = engine.tokenizer.eosId;
        for (const dtype of spec.dtypes) {
          const runs = [
            ['base', file(`base-${dtype}`), null, ours.base],
            ['base + LoRA', file(`base-${dtype}`), file(`lora-${dtype}`), ours.lora],
            ['merged', file(`merged-${dtype}`), null, ours.lora],
          ];
          for (const [what, modelPath, loraPath, want] of runs) {
            process.stderr.write(`llama.cpp: ${spec.name} ${dtype} ${what}\n`);
            const got = await llamaCppGreedy(llama, modelPath, loraPath, want, N);
            want.forEach((w, i) => {
              const g = got[i].ids;
              // Ours stops at EOS; llama.cpp must then yield EOS next (or end there), having produced the same ids.
              let same = 0;
              while (same < w.ids.length && g[same] === w.ids[same]) same++;
              const endsAlike = w.finishReason === 'eos' ? (g.length === w.ids.length && got[i].ended) || g[w.ids.length] === eos : g.length === w.ids.length;
              const ok = same === w.ids.length && endsAlike;
              const tokensMatch = JSON.stringify(got[i].tokenized) === JSON.stringify(w.promptIds.filter((id, k) => !(k === 0 && id === engine.tokenizer.bosId && engine.tokenizer.addsBos)));
              if (!tokensMatch) tokenizerDiffs++;
              if (!ok && dtype === 'f32') failures++;
              process.stdout.write(`${ok ? 'same' : dtype === 'f32' ? 'DIFF' : 'diff'}  ${spec.name.padEnd(11)} ${dtype} ${what.padEnd(11)} `
                + `${JSON.stringify(w.prompt)}: ${w.ids.length} ids${w.finishReason === 'eos' ? ' + EOS' : ''}`
                + `${ok ? '' : `, first difference at token ${same}`}; prompt tokenization ${tokensMatch ? 'same' : 'differs'}; `
                + `${JSON.stringify(w.prompt + w.text).slice(0, 70)}\n`);
            });
          }
        }
      } finally {
        engine.dispose();
      }
    }
  } finally {
    if (keep < 0) rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(failures ? `${failures} F32 generation(s) differ\n` : 'every F32 generation is identical in llama.cpp\n');
  if (tokenizerDiffs) process.stdout.write(`${tokenizerDiffs} prompt(s) tokenized differently by llama.cpp (prompts are fed as weblora's ids)\n`);
  return failures ? 1 : 0;
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`check:llama.cpp: ${err.stack ?? err}\n`);
  process.exit(1);
});
