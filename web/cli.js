#!/usr/bin/env node
// cli.js: the `weblora` command, a thin front end over the same engine the browser uses (WebLoRA.load runs it in a
// worker thread; resize and combine, which need no base model, run LocalEngine.forAdapters in this thread). Every command takes --json for one JSON object per line; on a terminal, training
// shows a progress bar. Errors print one line and exit non-zero; outputs are checked before the work starts and
// written crash-safely (output.js): a killed run leaves the old or the new output, never neither.
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { WebLoRA } from './runtime/client.js';
import { LocalEngine } from './engine/engine.js';
import { OutputFile, OutputFolder } from './storage/output.js';
import { DEFAULT_EVAL_TOKENS } from './engine/train.js';
import { GGUF_ADAPTER_FILE, GGUF_MODEL_FILE } from './formats/gguf.js';
import { MAX_THREADS } from './runtime/wasm.js';

const USAGE = `usage: weblora <command> [options]

commands:
  generate --model M [--tokenizer T] [--adapter DIR[:W]]... --prompt P [--max-tokens N] [--min-tokens N]
           [--ignore-eos] [--temperature X] [--top-k K] [--top-p P] [--seed S] [--stop STR]... [--json]
  train    --model M [--tokenizer T] --data FILE... [--adapter-init DIR] [--rank R] [--alpha A]
           [--targets TARGETS] [--layers 0,1] [--rank-pattern KEY=R]... [--alpha-pattern KEY=A]...
           [--init default|gaussian] [--rslora] [--dora] [--enable-lora q,v] [--dropout P] [--optimizer adamw|sgd]
           [--lr X] [--steps N | --epochs E] [--batch B] [--seq T] [--grad-accum N] [--clip X] [--weight-decay X]
           [--lora-plus-ratio R] [--schedule constant|cosine|linear] [--warmup N] [--eval-split F] [--eval-every N]
           [--eval-tokens N] [--seed S] [--recompute] [--full] [--base-model ID [--revision REV]] --out DIR [--json]
  eval     --model M [--tokenizer T] [--adapter DIR]... --data FILE... [--seq T] [--json]
  merge    --model M --adapter DIR[:W]... [--format hf|gguf [--dtype f16|f32]] --out DIR|FILE.gguf [--json]
           (the merged model: a Hugging Face folder, or one GGUF file llama.cpp runs)
  export   --model M [--tokenizer T] [--adapter DIR] --format gguf|peft [--dtype f16|f32] [--portable]
           [--base-model ID [--revision REV]] --out FILE.gguf|DIR [--json]
           (gguf with --adapter: the LoRA file for llama.cpp's --lora; without: the model as GGUF; peft: the
           adapter's PEFT files, --portable folding rsLoRA and rank/alpha patterns into lora_B under one lora_alpha)
  resize   --adapter DIR (--rank R | --energy F) [--rank R --energy F] --out DIR [--json]
  extract  --base M --tuned M2 --rank R [--targets TARGETS] [--energy F] --out DIR [--json]
  combine  --adapter DIR:W ... --type linear|cat|svd [--rank R] --out DIR [--json]

TARGETS, as PEFT's target_modules: module names separated by commas (q_proj,v_proj or self_attn.q_proj),
all-linear, or a regular expression matched against whole module paths (e.g. '.*\\.(q|v)_proj'). embed_tokens
(GPT-2: wte) and lm_head add LoRA on the token embedding and the output head (merge refuses them on a tied model).
Every command that loads a model takes --sha256 FILE=HEX (repeatable): the model file FILE (e.g. model.safetensors)
must have that SHA-256, checked over every byte as it loads.
--base-model names the model (a Hub id or URL) over what its source or config.json says: adapter files record it as
their base, and the base an imported adapter names is compared with it.
Data files are plain text (one document each) or .jsonl (one {"text": ...} document per line); they are tokenized as
they stream, of any size. The held-out split is evaluated on at most --eval-tokens tokens (default 16384).
train --recompute keeps only each layer's input and recomputes the layer in backward: a fraction of the activation
memory for about a third more time per step, the same result bit for bit.
Every command takes --threads N|auto: the threads the core computes on ('auto', the default: every core, at most 8).
generate, train and eval take --dtype f32|q8|q4: how the base holds its matrices (q8, q4: llama.cpp Q8_0 / Q4_1
blocks, quantised as the model streams in, about 1/4 and 1/5 of the f32 memory; the adapter still trains in f32).
M is a llama2.c .bin, a Hugging Face model folder (config.json, model.safetensors, tokenizer.json) or an http(s)
URL of either (a folder URL ends in "/").`;

/** @satisfies {import('node:util').ParseArgsConfig['options']} */
const OPTIONS = /** @type {const} */ ({
  model: { type: 'string' }, tokenizer: { type: 'string' }, adapter: { type: 'string', multiple: true },
  prompt: { type: 'string' }, 'max-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
  'top-p': { type: 'string' }, seed: { type: 'string' }, stop: { type: 'string', multiple: true }, json: { type: 'boolean' },
  data: { type: 'string', multiple: true }, 'adapter-init': { type: 'string' }, rank: { type: 'string' }, alpha: { type: 'string' },
  targets: { type: 'string' }, init: { type: 'string' }, rslora: { type: 'boolean' }, dora: { type: 'boolean' },
  'enable-lora': { type: 'string' }, dropout: { type: 'string' }, recompute: { type: 'boolean' },
  optimizer: { type: 'string' }, lr: { type: 'string' }, steps: { type: 'string' }, epochs: { type: 'string' },
  batch: { type: 'string' }, seq: { type: 'string' }, 'grad-accum': { type: 'string' }, clip: { type: 'string' },
  'weight-decay': { type: 'string' }, 'lora-plus-ratio': { type: 'string' }, schedule: { type: 'string' }, warmup: { type: 'string' },
  'eval-split': { type: 'string' },
  'eval-every': { type: 'string' }, 'eval-tokens': { type: 'string' }, 'min-tokens': { type: 'string' }, 'ignore-eos': { type: 'boolean' },
  layers: { type: 'string' }, 'rank-pattern': { type: 'string', multiple: true }, 'alpha-pattern': { type: 'string', multiple: true },
  format: { type: 'string' }, dtype: { type: 'string' }, portable: { type: 'boolean' }, 'base-model': { type: 'string' },
  revision: { type: 'string' },
  full: { type: 'boolean' }, out: { type: 'string' }, energy: { type: 'string' }, base: { type: 'string' }, tuned: { type: 'string' },
  type: { type: 'string' }, force: { type: 'boolean' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  sha256: { type: 'string', multiple: true },
});

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

/**
 * PEFT target_modules from --targets: names separated by commas (a list), all-linear, or anything else as a regular
 * expression that must match whole module paths (PEFT's string form). Module names never hold regex syntax, so
 * the two cannot be confused.
 */
function targetsFrom(opts) {
  const raw = opts.targets?.trim();
  if (raw === undefined) return undefined;
  if (raw === '') throw new UsageError('--targets is empty');
  if (raw.toLowerCase() === 'all-linear') return 'all-linear';
  if (/^[\w.-]+(\s*,\s*[\w.-]+)*$/.test(raw)) return raw.split(',').map((x) => x.trim());
  return raw;
}

/** --layers 0,1,5 as PEFT's layers_to_transform. */
function layersFrom(opts) {
  if (opts.layers === undefined) return undefined;
  const list = opts.layers.split(',').map((x) => x.trim());
  if (!list.every((x) => /^\d+$/.test(x))) throw new UsageError(`--layers takes layer indices separated by commas, got "${opts.layers}"`);
  return list.map(Number);
}

/** Repeated --rank-pattern / --alpha-pattern KEY=VALUE as PEFT's pattern object (keys are regexes, order kept). */
function patternFrom(opts, name) {
  if (!opts[name]) return undefined;
  /** @type {Record<string, number>} */
  const pattern = {};
  for (const item of opts[name]) {
    const at = item.lastIndexOf('=');
    const value = Number(item.slice(at + 1));
    if (at <= 0 || item.slice(at + 1).trim() === '' || !Number.isFinite(value)) {
      throw new UsageError(`--${name} takes KEY=NUMBER (e.g. v_proj=16 or layers\\.0\\..*=4), got "${item}"`);
    }
    pattern[item.slice(0, at)] = value;
  }
  return pattern;
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

/**
 * Loads an adapter folder read by readAdapterDir onto the engine; when the base model it names is not the loaded
 * one, a warning line goes to stderr (and the command goes on: the shapes fit).
 */
function importAdapterDir(engine, a, command, name = a.folder) {
  return engine.importAdapter(a.files, {
    name,
    onWarning: (w) => {
      if (w.level === 'warning') process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}weblora ${command}: warning: ${a.folder}: ${w.message}\n`);
    },
  });
}

/**
 * The data files as sources the engine streams and tokenizes (so data of any size never sits whole in memory);
 * a missing file is reported here, before the model loads.
 */
async function dataSources(files) {
  if (!files?.length) throw new UsageError('--data needs at least one text file');
  const out = [];
  for (const f of files) {
    const info = await stat(f).catch((err) => {
      throw new UsageError(`cannot read data file ${f}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
    });
    if (!info.isFile()) throw new UsageError(`cannot read data file ${f}: not a file`);
    out.push({ path: path.resolve(f), name: f });
  }
  return out;
}

/** Tokenization progress: a bar on a terminal, events with --json. */
function tokenizeProgress(json) {
  const tty = process.stderr.isTTY && !json;
  let shown = false;
  return {
    update(p) {
      if (json) emit(true, { event: 'tokenize', loaded: p.loaded, total: p.total, tokens: p.tokens, documents: p.documents });
      else if (tty) {
        shown = true;
        const width = 24;
        const fill = p.total ? Math.round((p.loaded / p.total) * width) : 0;
        process.stderr.write(`\rtokenizing [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(p.loaded / 1e6).toFixed(1)} / `
          + `${(p.total / 1e6).toFixed(1)} MB, ${(p.tokens / 1e6).toFixed(2)} M tokens\x1b[K`);
      }
    },
    end() {
      if (shown) process.stderr.write('\n');
      shown = false;
    },
  };
}

/** Outputs prepared but not committed yet: discarded when the command fails. */
const pendingOutputs = new Set();

/**
 * Checks the output location before any long work (replaceable, writable, room when known) and reserves its
 * temporary sibling. Outputs are crash-safe: see output.js.
 * @param {string} out @param {boolean} force
 * @param {{ file?: boolean, bytesNeeded?: number }} [options] file: the output is one file (GGUF), not a folder
 * @returns {Promise<OutputFolder | OutputFile>}
 */
async function prepareOutput(out, force, { file = false, bytesNeeded = 0 } = {}) {
  const output = await (file ? OutputFile : OutputFolder).prepare(out, { force, bytesNeeded });
  pendingOutputs.add(output);
  return output;
}

/** Writes the files (a folder's { name: data }, or one file's bytes) and moves them into place. */
async function writeOutput(output, files) {
  await output.commit(files);
  pendingOutputs.delete(output);
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

/** --sha256 FILE=HEX options as the { file: hex } pins the loader checks. */
function sha256Pins(opts) {
  if (!opts.sha256?.length) return undefined;
  const pins = {};
  for (const spec of opts.sha256) {
    const m = /^(.+)=([0-9a-fA-F]{64})$/.exec(spec);
    if (!m) throw new UsageError(`--sha256 takes FILE=HEX with 64 hex digits (e.g. model.safetensors=<sha256>), got "${spec}"`);
    pins[path.basename(m[1])] = m[2].toLowerCase();
  }
  return pins;
}

/** --dtype of generate, train and eval: how the base holds its matrices ('f32', 'q8' or 'q4'). */
function baseDtype(opts) {
  const d = opts.dtype ?? 'f32';
  if (!['f32', 'q8', 'q4'].includes(d)) throw new UsageError(`--dtype must be f32, q8 or q4, got "${d}"`);
  return d;
}

async function loadEngine(opts, json, dtype = 'f32') {
  const model = need(opts, 'model');
  const sha256 = sha256Pins(opts);
  const tty = process.stderr.isTTY && !json;
  const seen = new Set();
  if (opts.revision !== undefined && opts['base-model'] === undefined) throw new UsageError('--revision goes with --base-model');
  return WebLoRA.load(modelSource(model), {
    tokenizer: opts.tokenizer ? modelSource(opts.tokenizer) : undefined,
    sha256, baseModel: opts['base-model'], revision: opts.revision, threads: threads(opts), dtype,
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
  const engine = await loadEngine(opts, json, baseDtype(opts));
  try {
    /** @type {Record<string, number>} */
    const sel = {};
    for (const a of adapters) {
      const h = await importAdapterDir(engine, a, 'generate');
      sel[h.id] = a.weight;
    }
    const streaming = !json;
    if (streaming) process.stdout.write(prompt);
    const out = await engine.generate(prompt, {
      adapter: adapters.length ? sel : undefined, maxTokens: num(opts, 'max-tokens', { integer: true, min: 0 }) ?? 128,
      minTokens: num(opts, 'min-tokens', { integer: true, min: 0 }), ignoreEos: !!opts['ignore-eos'],
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
    evalTokens: num(opts, 'eval-tokens', { integer: true, min: 1 }),
    dropout: num(opts, 'dropout', { min: 0 }), loraPlusRatio: num(opts, 'lora-plus-ratio'),
    recompute: opts.recompute ? true : undefined,
  };
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

async function cmdTrain(opts, positionals) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const texts = await dataSources([...(opts.data ?? []), ...positionals]);
  const tOpts = trainOptionsFrom(opts);
  const init = opts['adapter-init'] ? await readAdapterDir(opts['adapter-init']) : null;
  if (opts.full && init) throw new UsageError('--full trains the base model: it cannot start from --adapter-init');
  // Fail on an unusable output folder before spending time on training.
  const output = await prepareOutput(out, !!opts.force);
  const engine = await loadEngine(opts, json, baseDtype(opts));
  try {
    let adapter = null;
    if (init) adapter = await importAdapterDir(engine, init, 'train');
    else if (!opts.full) {
      adapter = await engine.createAdapter({
        rank: num(opts, 'rank', { integer: true, min: 1 }), alpha: num(opts, 'alpha'),
        targets: targetsFrom(opts), layers: layersFrom(opts), rankPattern: patternFrom(opts, 'rank-pattern'),
        alphaPattern: patternFrom(opts, 'alpha-pattern'), init: opts.init, useRslora: !!opts.rslora, dora: !!opts.dora,
        enableLora: opts['enable-lora']?.split(',').map((x) => x.trim()), seed: tOpts.seed, dropout: tOpts.dropout,
      });
    }
    // f32 weights plus headers and config; a full run writes the whole model.
    await output.checkRoom(4 * (adapter ? adapter.parameters : engine.info.parameters) + (1 << 16));
    const bar = progressBar(process.stderr.isTTY && !json);
    const tokenizing = tokenizeProgress(json);
    const run = engine.train(adapter, texts, {
      ...tOpts, full: !!opts.full,
      onTokenize: (p) => tokenizing.update(p),
      onStep: (r) => {
        tokenizing.end();
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
    await writeOutput(output, files);
    emit(json, { event: 'done', ...summary, out: path.resolve(out), peakMemoryBytes: process.resourceUsage().maxRSS * 1024 },
      `trained ${summary.steps} steps in ${summary.seconds.toFixed(1)} s (${summary.tokensPerSecond.toFixed(0)} tok/s); `
      + `train loss ${summary.trainLossRecent.toFixed(4)}`
      + (summary.evalLoss !== null ? `; held-out loss ${summary.evalLossBefore.toFixed(4)} -> ${summary.evalLoss.toFixed(4)}`
        + ` (${summary.evalSequences} sequences${summary.evalCapped ? `, capped at the evaluation budget of ${tOpts.evalTokens ?? DEFAULT_EVAL_TOKENS} tokens` : ''})`
        : '; no held-out split (too little data)')
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
  const texts = await dataSources([...(opts.data ?? []), ...positionals]);
  const adapters = await Promise.all((opts.adapter ?? []).map(readAdapterDir));
  const engine = await loadEngine(opts, json, baseDtype(opts));
  try {
    /** @type {Record<string, number>} */
    const sel = {};
    for (const a of adapters) sel[(await importAdapterDir(engine, a, 'eval')).id] = a.weight;
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
  const format = opts.format ?? 'hf';
  if (format !== 'hf' && format !== 'gguf') throw new UsageError(`--format must be hf or gguf, got "${format}"`);
  if (opts.dtype !== undefined && format !== 'gguf') throw new UsageError('--dtype applies to --format gguf');
  const adapters = await Promise.all(opts.adapter.map(readAdapterDir));
  const output = await prepareOutput(out, !!opts.force, { file: format === 'gguf' });
  const engine = await loadEngine(opts, json);
  try {
    // f32 weights (f16 GGUF: half of that) plus headers, config and tokenizer.
    await output.checkRoom(4 * engine.info.parameters + (1 << 16));
    const merged = [];
    for (const a of adapters) {
      const h = await importAdapterDir(engine, a, 'merge');
      merged.push(await engine.merge(h, a.weight));
    }
    if (format === 'gguf') {
      await writeOutput(output, (await engine.exportModel({ format, dtype: opts.dtype }))[GGUF_MODEL_FILE]);
    } else {
      const files = await engine.exportModel();
      for (const name of await tokenizerFilesOf(opts)) files[path.basename(name)] = { copyFrom: name };
      await writeOutput(output, files);
    }
    emit(json, { out: path.resolve(out), format, adapters: adapters.map((a) => ({ folder: a.folder, weight: a.weight })), parameters: engine.info.parameters },
      `merged ${adapters.length} adapter${adapters.length > 1 ? 's' : ''} into ${opts.model}\nsaved ${format === 'gguf' ? 'a GGUF model' : 'a Hugging Face model'} to ${out}\n`);
  } finally {
    await engine.dispose();
  }
}

async function cmdExport(opts) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const format = need(opts, 'format');
  if (format !== 'gguf' && format !== 'peft') throw new UsageError(`--format must be gguf or peft, got "${format}"`);
  if ((opts.adapter?.length ?? 0) > 1) throw new UsageError('export takes one --adapter DIR');
  if (format === 'peft' && !opts.adapter) throw new UsageError('--format peft writes an adapter: give --adapter DIR');
  if (opts.portable && format !== 'peft') throw new UsageError('--portable applies to --format peft (a GGUF adapter always has one alpha)');
  if (opts.dtype !== undefined && format !== 'gguf') throw new UsageError('--dtype applies to --format gguf');
  const a = opts.adapter ? await readAdapterDir(opts.adapter[0]) : null;
  if (a && a.weight !== 1) throw new UsageError('export writes an adapter as it is: no :W weight');
  // Fail on an unusable output before loading the model.
  const output = await prepareOutput(out, !!opts.force, { file: format === 'gguf' });
  const engine = await loadEngine(opts, json);
  try {
    let what;
    if (a) {
      // The folder's name (not its path) becomes the GGUF file's general.name.
      const h = await importAdapterDir(engine, a, 'export', path.basename(path.resolve(a.folder)));
      // f32 tensors at most, plus headers (and for a model, the tokenizer).
      await output.checkRoom(4 * h.parameters + (1 << 16));
      const { files } = await engine.exportAdapter(h, { format, dtype: opts.dtype, portable: !!opts.portable });
      await writeOutput(output, format === 'gguf' ? files[GGUF_ADAPTER_FILE] : files);
      what = format === 'gguf' ? 'a GGUF LoRA adapter (llama.cpp --lora)' : `${opts.portable ? 'portable ' : ''}PEFT adapter files`;
    } else {
      await output.checkRoom(4 * engine.info.parameters + (1 << 16));
      await writeOutput(output, (await engine.exportModel({ format: 'gguf', dtype: opts.dtype }))[GGUF_MODEL_FILE]);
      what = 'a GGUF model (llama.cpp -m)';
    }
    emit(json, { out: path.resolve(out), format, adapter: a ? a.folder : null }, `saved ${what} to ${out}\n`);
  } finally {
    await engine.dispose();
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
  const output = await prepareOutput(out, !!opts.force);
  // No base model is needed: the engine works on the module shapes the adapter's files give.
  const engine = await LocalEngine.forAdapters([a.files], { threads: threads(opts) });
  try {
    const h = await importAdapterDir(engine, a, 'resize');
    const r = engine.resize(h.id, { rank, energy });
    await writeOutput(output, engine.exportAdapter(r.adapter.id).files);
    reportModules(json, r, out, 'resized');
  } finally {
    engine.dispose();
  }
}

async function cmdCombine(opts) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const type = opts.type ?? 'svd';
  if (!['linear', 'cat', 'svd'].includes(type)) throw new UsageError(`--type must be linear, cat or svd, got "${type}"`);
  if (!opts.adapter || opts.adapter.length < 2) throw new UsageError('combine needs at least two --adapter DIR[:W]');
  const inputs = await Promise.all(opts.adapter.map(readAdapterDir));
  const output = await prepareOutput(out, !!opts.force);
  const engine = await LocalEngine.forAdapters(inputs.map((x) => x.files), { threads: threads(opts) });
  try {
    const list = [];
    for (const [i, x] of inputs.entries()) list.push({ id: (await importAdapterDir(engine, x, 'combine', `input ${i}`)).id, weight: x.weight });
    const r = engine.combine(list, { type, rank: num(opts, 'rank', { integer: true, min: 1 }) ?? 0 });
    await writeOutput(output, engine.exportAdapter(r.adapter.id).files);
    reportModules(json, r, out, `combined (${type})`);
  } finally {
    engine.dispose();
  }
}

async function cmdExtract(opts) {
  const json = !!opts.json;
  const out = need(opts, 'out');
  const base = need(opts, 'base');
  const tuned = need(opts, 'tuned');
  const rank = num(opts, 'rank', { integer: true, min: 1 });
  if (rank === undefined) throw new UsageError('--rank is required');
  const output = await prepareOutput(out, !!opts.force);
  const engine = await loadEngine({ ...opts, model: base }, json);
  try {
    const targets = targetsFrom(opts);
    const r = await engine.extract(modelSource(tuned), { rank, targets, energy: num(opts, 'energy', { min: 0 }) ?? 0 });
    const files = (await engine.exportAdapter(r.adapter)).files;
    await writeOutput(output, files);
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
  const commands = { generate: cmdGenerate, train: cmdTrain, eval: cmdEval, merge: cmdMerge, export: cmdExport, resize: cmdResize,
    extract: cmdExtract, combine: cmdCombine };
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
    for (const output of pendingOutputs) await output.discard().catch(() => {});
    pendingOutputs.clear();
    const msg = (err?.message ?? String(err)).split('\n')[0] + (err?.code === 'DIVERGED' ? ' (nothing was saved)' : '');
    process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}weblora ${command}: error: ${msg}\n`);
    return err instanceof UsageError || err?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || err?.code === 'OUTPUT_EXISTS' ? 2 : 1;
  }
}

const invokedDirectly = process.argv[1] && path.resolve(process.argv[1]) === new URL(import.meta.url).pathname;
if (invokedDirectly || process.argv[1]?.endsWith('/weblora') || process.argv[1]?.endsWith('\\weblora')) {
  main().then((code) => {
    process.exitCode = code;
  });
}
