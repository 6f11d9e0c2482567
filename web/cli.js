#!/usr/bin/env node
// cli.js: the `weblora` command, a thin front end over the same API the browser uses (WebLoRA.load runs the
// engine in a worker thread). Every command takes --json for one JSON object per line; on a terminal, training
// shows a progress bar. Errors print one line and exit non-zero; outputs are written to a temporary folder and
// renamed into place only when complete.
import { mkdir, readFile, readdir, rename, rm, stat, writeFile, copyFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { WebLoRA } from './client.js';
import { Core } from './core.js';
import { combineAdapterFiles, resizeAdapterFiles } from './tools.js';
import { MAX_THREADS } from './wasm.js';

const USAGE = `usage: weblora <command> [options]

commands:
  generate --model M [--tokenizer T] [--adapter DIR[:W]]... --prompt P [--max-tokens N] [--temperature X]
           [--top-k K] [--top-p P] [--seed S] [--stop STR]... [--json]
  train    --model M [--tokenizer T] --data FILE... [--adapter-init DIR] [--rank R] [--alpha A]
           [--targets q_proj,v_proj] [--init default|gaussian] [--rslora] [--dropout P] [--optimizer adamw|sgd]
           [--lr X] [--steps N | --epochs E] [--batch B] [--seq T] [--grad-accum N] [--clip X] [--weight-decay X]
           [--schedule constant|cosine|linear] [--warmup N] [--eval-split F] [--eval-every N] [--seed S] [--full]
           --out DIR [--json]
  eval     --model M [--tokenizer T] [--adapter DIR]... --data FILE... [--seq T] [--json]
  merge    --model M --adapter DIR[:W]... --out DIR [--json]            (a merged model in Hugging Face layout)
  resize   --adapter DIR (--rank R | --energy F) [--rank R --energy F] --out DIR [--json]
  extract  --base M --tuned M2 --rank R [--targets q_proj,v_proj] [--energy F] --out DIR [--json]
  combine  --adapter DIR:W ... --type linear|cat|svd [--rank R] --out DIR [--json]

Every command takes --threads N|auto: the threads the core computes on ('auto', the default: every core, at most 8).
Data files are plain text (one document each) or .jsonl (one {"text": ...} document per line).
M is a llama2.c .bin, a Hugging Face model folder (config.json, model.safetensors, tokenizer.json) or an http(s)
URL of either (a folder URL ends in "/").`;

const OPTIONS = {
  model: { type: 'string' }, tokenizer: { type: 'string' }, adapter: { type: 'string', multiple: true },
  prompt: { type: 'string' }, 'max-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
  'top-p': { type: 'string' }, seed: { type: 'string' }, stop: { type: 'string', multiple: true }, json: { type: 'boolean' },
  data: { type: 'string', multiple: true }, 'adapter-init': { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' },
  targets: { type: 'string' }, init: { type: 'string' }, rslora: { type: 'boolean' }, dropout: { type: 'string' },
  optimizer: { type: 'string' }, lr: { type: 'string' }, steps: { type: 'string' }, epochs: { type: 'string' },
  batch: { type: 'string' }, seq: { type: 'string' }, 'grad-accum': { type: 'string' }, clip: { type: 'string' },
  'weight-decay': { type: 'string' }, schedule: { type: 'string' }, warmup: { type: 'string' }, 'eval-split': { type: 'string' },
  'eval-every': { type: 'string' },
  full: { type: 'boolean' }, out: { type: 'string' }, energy: { type: 'string' }, base: { type: 'string' }, tuned: { type: 'string' },
  type: { type: 'string' }, force: { type: 'boolean' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' },
};

class UsageError extends Error {}

function num(opts, name, { integer = false, min = -Infinity } = {}) {
  const raw = opts[name];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'}${min > -Infinity ? ` >= ${min}` : ''}, got "${raw}"`);
  }
  return v;
}

/** --threads: 'auto' (the default) or a whole number of threads. */
function threads(opts) {
  if (opts.threads === undefined || opts.threads === 'auto') return 'auto';
  const n = num(opts, 'threads', { integer: true, min: 1 });
  if (n > MAX_THREADS) throw new UsageError(`--threads must be 'auto' or at most ${MAX_THREADS}, got "${opts.threads}"`);
  return n;
}

function need(opts, name) {
  if (opts[name] === undefined) throw new UsageError(`--${name} is required`);
  return opts[name];
}

/** Local path or URL of the model; a path is resolved against the working directory. */
function modelSource(m) {
  return /^https?:\/\//i.test(m) ? m : path.resolve(m);
}

async function readAdapterDir(dir) {
  const spec = dir.match(/^(.*?)(?::([-+0-9.eE]+))?$/);
  const folder = spec[1];
  const weight = spec[2] === undefined ? 1 : Number(spec[2]);
  let files;
  try {
    files = {
      'adapter_config.json': await readFile(path.join(folder, 'adapter_config.json'), 'utf8'),
      'adapter_model.safetensors': new Uint8Array(await readFile(path.join(folder, 'adapter_model.safetensors'))),
    };
  } catch (err) {
    if (err.code === 'ENOENT') throw new UsageError(`adapter folder ${folder} has no ${path.basename(err.path ?? '')}`);
    throw err;
  }
  return { folder, weight, files };
}

async function readTexts(files) {
  if (!files?.length) throw new UsageError('--data needs at least one text file');
  const out = [];
  for (const f of files) {
    let text;
    try {
      text = await readFile(f, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read data file ${f}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
    }
    if (/\.jsonl$/i.test(f)) {
      // JSON Lines: one document per line, {"text": "..."} (the common dataset layout).
      text.split('\n').forEach((line, i) => {
        if (line.trim() === '') return;
        let doc;
        try {
          doc = JSON.parse(line);
        } catch {
          throw new UsageError(`${f}:${i + 1}: not a JSON object`);
        }
        if (!doc || typeof doc.text !== 'string') throw new UsageError(`${f}:${i + 1}: needs a "text" string`);
        out.push(doc.text);
      });
    } else {
      out.push(text);
    }
  }
  if (out.every((t) => t.trim() === '')) throw new UsageError(`the data file${files.length > 1 ? 's are' : ' is'} empty`);
  return out;
}

/** Write files into dir atomically: a temporary sibling folder renamed into place when everything is written. */
async function writeOutput(dir, files, force) {
  const target = path.resolve(dir);
  const exists = await stat(target).then(() => true, () => false);
  if (exists && !force) {
    const entries = await readdir(target).catch(() => null);
    if (entries === null || entries.length > 0) throw new UsageError(`output ${dir} exists and is not empty (use --force to replace it)`);
  }
  const tmp = `${target}.partial-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    for (const [name, data] of Object.entries(files)) {
      if (data && data.copyFrom) await copyFile(data.copyFrom, path.join(tmp, name));
      else await writeFile(path.join(tmp, name), data);
    }
    if (exists) await rm(target, { recursive: true, force: true });
    await mkdir(path.dirname(target), { recursive: true });
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

function formatTime(s) {
  if (!Number.isFinite(s)) return '--:--';
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}

/** A one-line progress bar on stderr (only on a terminal). */
function progressBar(enabled) {
  let last = 0;
  return {
    update(r) {
      if (!enabled) return;
      const now = Date.now();
      if (now - last < 100 && r.step < r.totalSteps) return;
      last = now;
      const width = 24;
      const fill = Math.round((r.step / r.totalSteps) * width);
      const eta = (r.elapsed / r.step) * (r.totalSteps - r.step);
      process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] step ${r.step}/${r.totalSteps}  loss ${r.loss.toFixed(4)}  `
        + `${r.tokensPerSecond.toFixed(0)} tok/s  ${formatTime(r.elapsed)} elapsed, ${formatTime(eta)} left \x1b[K`);
    },
    end() {
      if (enabled) process.stderr.write('\n');
    },
  };
}

async function loadEngine(opts, json) {
  const model = need(opts, 'model');
  const tty = process.stderr.isTTY && !json;
  const seen = new Set();
  return WebLoRA.load(modelSource(model), {
    tokenizer: opts.tokenizer ? modelSource(opts.tokenizer) : undefined,
    threads: threads(opts),
    onProgress: (e) => {
      if (tty && e.status === 'progress' && e.total) {
        process.stderr.write(`\rdownloading ${e.file}: ${(e.loaded / 1e6).toFixed(1)} / ${(e.total / 1e6).toFixed(1)} MB\x1b[K`);
        seen.add(e.file);
      } else if (tty && e.status === 'done' && seen.has(e.file)) process.stderr.write('\n');
    },
  });
}

function emit(json, obj, text) {
  if (json) process.stdout.write(`${JSON.stringify(obj)}\n`);
  else if (text !== undefined) process.stdout.write(text);
}

async function cmdGenerate(opts) {
  const json = !!opts.json;
  const prompt = need(opts, 'prompt');
  const adapters = await Promise.all((opts.adapter ?? []).map(readAdapterDir));
  const engine = await loadEngine(opts, json);
  try {
    const sel = {};
    for (const a of adapters) {
      const h = await engine.importAdapter(a.files, { name: a.folder });
      sel[h.id] = a.weight;
    }
    const streaming = !json;
    if (streaming) process.stdout.write(prompt);
    const out = await engine.generate(prompt, {
      adapter: adapters.length ? sel : undefined, maxTokens: num(opts, 'max-tokens', { integer: true, min: 0 }) ?? 128,
      temperature: num(opts, 'temperature', { min: 0 }), topK: num(opts, 'top-k', { integer: true, min: 0 }),
      topP: num(opts, 'top-p'), seed: num(opts, 'seed', { integer: true }), stop: opts.stop,
      onToken: streaming ? (t) => process.stdout.write(t.text) : undefined,
    });
    if (streaming) process.stdout.write('\n');
    emit(json, { ids: out.ids, text: out.text, promptIds: out.promptIds, finishReason: out.finishReason, tokensPerSecond: out.tokensPerSecond });
  } finally {
    await engine.dispose();
  }
}

function trainOptionsFrom(opts) {
  const steps = num(opts, 'steps', { integer: true, min: 1 });
  const epochs = num(opts, 'epochs', { min: 0 });
  if (steps !== undefined && epochs !== undefined) throw new UsageError('give --steps or --epochs, not both');
  const o = {
    optimizer: opts.optimizer, lr: num(opts, 'lr'), steps, epochs, batchSize: num(opts, 'batch', { integer: true, min: 1 }),
    seqLen: num(opts, 'seq', { integer: true, min: 1 }), seed: num(opts, 'seed', { integer: true }),
    gradAccum: num(opts, 'grad-accum', { integer: true, min: 1 }), clipNorm: num(opts, 'clip', { min: 0 }),
    weightDecay: num(opts, 'weight-decay', { min: 0 }), schedule: opts.schedule, warmupSteps: num(opts, 'warmup', { integer: true, min: 0 }),
    evalSplit: num(opts, 'eval-split', { min: 0 }), evalEvery: num(opts, 'eval-every', { integer: true, min: 0 }),
    dropout: num(opts, 'dropout', { min: 0 }),
  };
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

async function cmdTrain(opts, positionals) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const texts = await readTexts([...(opts.data ?? []), ...positionals]);
  const tOpts = trainOptionsFrom(opts);
  const init = opts['adapter-init'] ? await readAdapterDir(opts['adapter-init']) : null;
  if (opts.full && init) throw new UsageError('--full trains the base model: it cannot start from --adapter-init');
  // Fail on an unusable output folder before spending time on training.
  const outExists = await stat(out).then(() => true, () => false);
  if (outExists && !opts.force && (await readdir(out).catch(() => [1])).length > 0) {
    throw new UsageError(`output ${out} exists and is not empty (use --force to replace it)`);
  }
  const engine = await loadEngine(opts, json);
  try {
    let adapter = null;
    if (init) adapter = await engine.importAdapter(init.files, { name: init.folder });
    else if (!opts.full) {
      adapter = await engine.createAdapter({
        rank: num(opts, 'rank', { integer: true, min: 1 }), alpha: num(opts, 'alpha'),
        targets: opts.targets ? opts.targets.split(',').map((s) => s.trim()).filter(Boolean) : undefined,
        init: opts.init, useRslora: !!opts.rslora, seed: tOpts.seed, dropout: tOpts.dropout,
      });
    }
    const bar = progressBar(process.stderr.isTTY && !json);
    const run = engine.train(adapter, texts, {
      ...tOpts, full: !!opts.full,
      onStep: (r) => {
        bar.update(r);
        emit(json, { event: 'step', step: r.step, totalSteps: r.totalSteps, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm, tokensPerSecond: r.tokensPerSecond, elapsed: r.elapsed });
      },
      onEval: (r) => emit(json, { event: 'eval', step: r.step, loss: r.loss, perplexity: r.perplexity }, process.stderr.isTTY ? undefined : ''),
    });
    const summary = await run.done;
    bar.end();
    let files;
    if (opts.full) {
      files = await engine.exportModel();
      for (const name of await tokenizerFilesOf(opts)) files[path.basename(name)] = { copyFrom: name };
    } else {
      files = (await engine.exportAdapter(adapter)).files;
    }
    await writeOutput(out, files, !!opts.force);
    emit(json, { event: 'done', ...summary, out: path.resolve(out) },
      `trained ${summary.steps} steps in ${summary.seconds.toFixed(1)} s (${summary.tokensPerSecond.toFixed(0)} tok/s); `
      + `train loss ${summary.trainLossRecent.toFixed(4)}`
      + (summary.evalLoss !== null ? `; held-out loss ${summary.evalLossBefore.toFixed(4)} -> ${summary.evalLoss.toFixed(4)}` : '; no held-out split (too little data)')
      + `\nsaved to ${out}\n`);
  } finally {
    await engine.dispose();
  }
}

/** Tokenizer files that travel with a fully trained model. */
async function tokenizerFilesOf(opts) {
  if (opts.tokenizer) return [path.resolve(opts.tokenizer)];
  const m = path.resolve(opts.model);
  const info = await stat(m).catch(() => null);
  if (!info) return [];
  const dir = info.isDirectory() ? m : path.dirname(m);
  const names = (await readdir(dir)).filter((n) => /^(tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|tok.*\.bin|tokenizer\.bin)$/i.test(n));
  return names.map((n) => path.join(dir, n));
}

async function cmdEval(opts, positionals) {
  const json = !!opts.json;
  const texts = await readTexts([...(opts.data ?? []), ...positionals]);
  const adapters = await Promise.all((opts.adapter ?? []).map(readAdapterDir));
  const engine = await loadEngine(opts, json);
  try {
    const sel = {};
    for (const a of adapters) sel[(await engine.importAdapter(a.files, { name: a.folder })).id] = a.weight;
    const r = await engine.evaluate(texts, { adapter: adapters.length ? sel : undefined, seqLen: num(opts, 'seq', { integer: true, min: 1 }) });
    emit(json, r, `loss ${r.loss.toFixed(4)}  perplexity ${r.perplexity.toFixed(3)}  (${r.tokens} tokens)\n`);
  } finally {
    await engine.dispose();
  }
}

/** Adapter files and tokenizer files that travel with a merged model. */
async function cmdMerge(opts) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  if (!opts.adapter?.length) throw new UsageError('--adapter is required');
  const adapters = await Promise.all(opts.adapter.map(readAdapterDir));
  await assertWritable(out, opts.force);
  const engine = await loadEngine(opts, json);
  try {
    const merged = [];
    for (const a of adapters) {
      const h = await engine.importAdapter(a.files, { name: a.folder });
      merged.push(await engine.merge(h, a.weight));
    }
    const files = await engine.exportModel();
    for (const name of await tokenizerFilesOf(opts)) files[path.basename(name)] = { copyFrom: name };
    await writeOutput(out, files, !!opts.force);
    emit(json, { out: path.resolve(out), adapters: adapters.map((a) => ({ folder: a.folder, weight: a.weight })), parameters: engine.info.parameters },
      `merged ${adapters.length} adapter${adapters.length > 1 ? 's' : ''} into ${opts.model}\nsaved a Hugging Face model to ${out}\n`);
  } finally {
    await engine.dispose();
  }
}

async function assertWritable(out, force) {
  const exists = await stat(out).then(() => true, () => false);
  if (exists && !force && (await readdir(out).catch(() => [1])).length > 0) {
    throw new UsageError(`output ${out} exists and is not empty (use --force to replace it)`);
  }
}

function reportModules(json, result, out, what) {
  const worst = result.modules.reduce((a, m) => (m.relError > a.relError ? m : a), result.modules[0]);
  emit(json, { out: path.resolve(out), totalError: result.totalError ?? null, modules: result.modules },
    `${what}: ${result.modules.length} modules, ranks ${[...new Set(result.modules.map((m) => m.rank))].join('/')}; `
    + (result.totalError !== undefined ? `relative error kept ${result.totalError.toExponential(3)} overall, ` : '')
    + `worst ${worst.relError.toExponential(3)} (${worst.module})\nsaved to ${out}\n`);
}

async function cmdResize(opts) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const rank = num(opts, 'rank', { integer: true, min: 1 }) ?? 0;
  const energy = num(opts, 'energy', { min: 0 }) ?? 0;
  if (!rank && !energy) throw new UsageError('give --rank R or --energy F (a fraction in (0, 1])');
  if (energy > 1) throw new UsageError('--energy is a fraction in (0, 1]');
  if (opts.adapter?.length !== 1) throw new UsageError('resize takes exactly one --adapter DIR');
  const a = await readAdapterDir(opts.adapter[0]);
  await assertWritable(out, opts.force);
  const core = await Core.create({ threads: threads(opts) });
  const r = resizeAdapterFiles(core, a.files, { rank, energy });
  await writeOutput(out, r.files, !!opts.force);
  reportModules(json, r, out, 'resized');
}

async function cmdCombine(opts) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const type = opts.type ?? 'svd';
  if (!['linear', 'cat', 'svd'].includes(type)) throw new UsageError(`--type must be linear, cat or svd, got "${type}"`);
  if (!opts.adapter || opts.adapter.length < 2) throw new UsageError('combine needs at least two --adapter DIR[:W]');
  const inputs = await Promise.all(opts.adapter.map(readAdapterDir));
  await assertWritable(out, opts.force);
  const core = await Core.create({ threads: threads(opts) });
  const r = combineAdapterFiles(core, inputs.map((x) => ({ files: x.files, weight: x.weight })), { type, rank: num(opts, 'rank', { integer: true, min: 1 }) ?? 0 });
  await writeOutput(out, r.files, !!opts.force);
  reportModules(json, r, out, `combined (${type})`);
}

async function cmdExtract(opts) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const base = need(opts, 'base');
  const tuned = need(opts, 'tuned');
  const rank = num(opts, 'rank', { integer: true, min: 1 });
  if (rank === undefined) throw new UsageError('--rank is required');
  await assertWritable(out, opts.force);
  const engine = await loadEngine({ ...opts, model: base }, json);
  try {
    const targets = opts.targets ? opts.targets.split(',').map((x) => x.trim()).filter(Boolean) : undefined;
    const r = await engine.extract(modelSource(tuned), { rank, targets, energy: num(opts, 'energy', { min: 0 }) ?? 0 });
    const files = (await engine.exportAdapter(r.adapter)).files;
    await writeOutput(out, files, !!opts.force);
    reportModules(json, r, out, 'extracted');
  } finally {
    await engine.dispose();
  }
}

export async function main(argv = process.argv.slice(2)) {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const commands = { generate: cmdGenerate, train: cmdTrain, eval: cmdEval, merge: cmdMerge, resize: cmdResize, extract: cmdExtract, combine: cmdCombine };
  const fn = commands[command];
  try {
    if (!fn) throw new UsageError(`unknown command "${command}" (commands: ${Object.keys(commands).join(', ')})`);
    const { values, positionals } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
    if (values.help) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (positionals.length && command === 'generate') throw new UsageError(`unexpected argument "${positionals[0]}"`);
    await fn(values, positionals);
    return 0;
  } catch (err) {
    const msg = (err?.message ?? String(err)).split('\n')[0];
    process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}weblora ${command}: error: ${msg}\n`);
    return err instanceof UsageError || err?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1;
  }
}

const invokedDirectly = process.argv[1] && path.resolve(process.argv[1]) === new URL(import.meta.url).pathname;
if (invokedDirectly || process.argv[1]?.endsWith('/weblora') || process.argv[1]?.endsWith('\\weblora')) {
  main().then((code) => {
    process.exitCode = code;
  });
}
