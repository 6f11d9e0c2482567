// app.js: the demo page. It loads a model (the built-in one, or the ?model= and ?tokenizer= URLs), takes the
// person's own text, trains a LoRA adapter in the package's Worker with live progress, compares generations before
// and after, keeps adapters in IndexedDB (save, use, rename, delete, export as PEFT files, import), shows the
// storage used, and registers the service worker that makes the page work offline.
import {
  AlreadyExistsError, StorageFullError, WebLoRA, cachedSize, deleteCachedModel, listCachedModels,
} from '../web/index.js';

const $ = (id) => /** @type {any} */ (document.getElementById(id));

const params = new URLSearchParams(location.search);
/** @param {string | null} value @returns {string | null} */
const absolute = (value) => (value ? new URL(value, location.href).href : null);
const MODEL_URL = absolute(params.get('model')) ?? new URL('./models/default/', location.href).href;
const TOKENIZER_URL = absolute(params.get('tokenizer'));
/** ?threads=N sets the core's threads; the package's 'auto' (every core, at most 8) otherwise. */
const THREADS = /^\d+$/.test(params.get('threads') ?? '') ? Number(params.get('threads')) : 'auto';
/** Set for the one reload that lets the service worker make the page cross-origin isolated. */
const ISOLATION_RELOAD = 'weblora-demo-isolation-reload';
const SAMPLE_URL = new URL('./data/personal-style.txt', location.href).href;
/** Adapter targets in order of preference; the ones the model has are used. */
const PREFERRED_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'c_attn', 'c_proj', 'c_fc'];
const GENERATION_SEED = 42;

const state = {
  /** @type {import('../web/client.js').Engine | null} */
  engine: null,
  /** the adapter trained in this session (a handle into the Worker) */
  trained: null,
  /** the adapter generations use: the trained one or one loaded from the store */
  current: null,
  currentLabel: '',
  /** @type {{ done: Promise<any>, abort: (reason?: any) => void } | null} */
  run: null,
  busy: false,
  /** @type {number[]} */
  losses: [],
  evalBefore: /** @type {number | null} */ (null),
};

// ---------------------------------------------------------------------------------------------------------------
// Small helpers

/** @param {number | null | undefined} n */
function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** @param {number} seconds */
function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '–';
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/**
 * A status line: text plus a kind that styles it (and errors are announced assertively).
 * @param {HTMLElement} node @param {string} text @param {'' | 'ok' | 'error' | 'busy'} [kind]
 */
function say(node, text, kind = '') {
  node.textContent = text;
  node.dataset.kind = kind;
  node.setAttribute('aria-live', kind === 'error' ? 'assertive' : 'polite');
}

/** A short label for a URL: its last meaningful path segments. @param {string | null} url */
function shortName(url) {
  if (!url) return '–';
  try {
    const u = new URL(url, location.href);
    const parts = u.pathname.split('/').filter(Boolean);
    const tail = parts.slice(-2).join('/');
    return u.origin === location.origin ? tail || u.pathname : `${u.host}/…/${tail}`;
  } catch {
    return url;
  }
}

/** Entries of a text: blocks separated by blank lines. @param {string} text */
function entriesOf(text) {
  return text.split(/\n\s*\n/).map((s) => s.trim()).filter(Boolean);
}

/** @param {string} tag @param {Record<string, any>} [props] @param {(Node | string)[]} [children] */
function h(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** Error text for people: the package's messages are written for them already. @param {any} err */
function explain(err) {
  if (err instanceof StorageFullError || err?.name === 'StorageFullError') {
    return `${err.message}. Delete adapters you no longer need, or remove the downloaded model files, and try again.`;
  }
  return err?.message ? String(err.message) : String(err);
}

// ---------------------------------------------------------------------------------------------------------------
// Offline support

async function registerServiceWorker() {
  const pill = $('offline-status');
  if (!('serviceWorker' in navigator)) {
    say(pill, 'Offline use is not available in this browser', '');
    return;
  }
  try {
    // Scope '/' also covers the package's Worker under ../web/, so it starts offline too; a server that does not
    // send Service-Worker-Allowed refuses that, and the demo's own folder is the fallback.
    await navigator.serviceWorker.register('./sw.js', { scope: '../' }).catch(() => navigator.serviceWorker.register('./sw.js'));
    await navigator.serviceWorker.ready;
    say(pill, navigator.onLine ? 'Ready to work offline' : 'Offline: running from this device', 'ok');
    reloadForIsolation();
  } catch (err) {
    say(pill, `Offline use unavailable: ${explain(err)}`, 'error');
  }
  addEventListener('online', () => say(pill, 'Ready to work offline', 'ok'));
  addEventListener('offline', () => say(pill, 'Offline: running from this device', 'ok'));
}

/**
 * The service worker adds the cross-origin isolation headers the core's threads need, but only to pages it serves:
 * on a host that does not send them itself, the first visit reloads once, as soon as the worker controls the page
 * (unless a model is already loading; then the next visit gets the threads).
 */
function reloadForIsolation() {
  if (globalThis.crossOriginIsolated || sessionStorage.getItem(ISOLATION_RELOAD)) return;
  const reload = () => {
    if (state.engine || state.busy || globalThis.crossOriginIsolated) return;
    sessionStorage.setItem(ISOLATION_RELOAD, '1');
    location.reload();
  };
  if (navigator.serviceWorker.controller) reload();
  else navigator.serviceWorker.addEventListener('controllerchange', reload, { once: true });
}

// ---------------------------------------------------------------------------------------------------------------
// Model

/** The URL of the model's weights as the package caches it. */
function weightsUrl() {
  return MODEL_URL.endsWith('/') ? new URL('model.safetensors', MODEL_URL).href : MODEL_URL;
}

async function modelIsCached() {
  try {
    const models = await listCachedModels();
    return models.some((m) => m.files.some((f) => f.url === weightsUrl()));
  } catch {
    return false;
  }
}

async function loadModel() {
  if (state.engine || state.busy) return;
  setBusy(true);
  const bar = $('load-progress');
  const status = $('model-status');
  bar.hidden = false;
  bar.value = 0;
  /** @type {Map<string, { loaded: number, total: number }>} */
  const files = new Map();
  let downloaded = false;
  const onProgress = (e) => {
    if (e.status === 'initiate') say(status, `Checking ${e.file}…`, 'busy');
    else if (e.status === 'download') downloaded = true;
    else if (e.status === 'progress') {
      files.set(e.file, { loaded: e.loaded, total: e.total });
      let loaded = 0;
      let total = 0;
      for (const f of files.values()) {
        loaded += f.loaded;
        total += f.total;
      }
      bar.value = total ? (loaded / total) * 100 : 0;
      say(status, `${downloaded ? 'Downloading' : 'Reading'} ${e.file}: ${formatBytes(e.loaded)} of ${formatBytes(e.total)}`, 'busy');
    } else if (e.status === 'ready') {
      bar.value = 100;
    }
  };
  /** @type {Record<string, any>} */
  const options = { onProgress, threads: THREADS };
  if (TOKENIZER_URL) {
    // A folder's plan has its own tokenizer slot; single-file models take the tokenizer as an extra file.
    if (MODEL_URL.endsWith('/')) options.tokenizer = TOKENIZER_URL;
    else options.tokenizerUrl = TOKENIZER_URL;
  }
  try {
    state.engine = await WebLoRA.load(MODEL_URL, options);
  } catch (err) {
    const missing = err?.name === 'NotFoundError' && MODEL_URL.endsWith('/models/default/');
    say(status, missing
      ? `The built-in model is not at ${MODEL_URL}. Open this page with ?model=<url> (and ?tokenizer=<url>) to use another one.`
      : `Could not load the model: ${explain(err)}`, 'error');
    bar.hidden = true;
    setBusy(false);
    return;
  }
  bar.hidden = true;
  const info = state.engine.info;
  say(status, downloaded ? 'Model downloaded and ready. It is kept on this device for next time.' : 'Model ready (from this device).', 'ok');
  const c = info.config;
  const facts = [
    ['Model', shortName(info.name)],
    ['Architecture', `${info.arch}, ${c.nLayers} layers, width ${c.dim}, ${c.nHeads} heads`],
    ['Parameters', `${(info.parameters / 1e6).toFixed(2)} M`],
    ['Vocabulary', `${c.vocabSize.toLocaleString()} tokens`],
    ['Context', `${c.maxSeqLen.toLocaleString()} tokens`],
    ['Memory', formatBytes(info.memoryBytes)],
    ['Threads', info.threadsNote ? `${info.threads} (${info.threadsNote})` : String(info.threads)],
  ];
  $('model-info').replaceChildren(...facts.flatMap(([k, v]) => [h('dt', { textContent: k }), h('dd', { textContent: v })]));
  $('model-info').hidden = false;
  $('load-model').hidden = true;
  $('forget-model').hidden = false;
  $('seq-len').max = String(c.maxSeqLen);
  if (Number($('seq-len').value) > c.maxSeqLen) $('seq-len').value = String(c.maxSeqLen);
  setBusy(false);
  await refreshAdapters();
  await refreshStorage();
}

let confirmForget = 0;
async function forgetModel() {
  const button = $('forget-model');
  if (Date.now() - confirmForget > 5000) {
    confirmForget = Date.now();
    button.textContent = 'Remove them? Click again to confirm';
    setTimeout(() => { button.textContent = 'Remove downloaded model files'; }, 5000);
    return;
  }
  confirmForget = 0;
  button.textContent = 'Remove downloaded model files';
  let removed = 0;
  for (const m of await listCachedModels()) removed += await deleteCachedModel(m.base);
  say($('model-status'), `Removed ${removed} downloaded file${removed === 1 ? '' : 's'}. The model stays loaded in this tab; it downloads again next time.`, 'ok');
  await refreshStorage();
}

// ---------------------------------------------------------------------------------------------------------------
// Text

function updateTextStats() {
  const text = $('train-text').value;
  const entries = entriesOf(text).length;
  $('text-stats').textContent = text.trim()
    ? `${text.length.toLocaleString()} characters, ${entries} ${entries === 1 ? 'entry' : 'entries'}`
    : '';
  updateButtons();
}

/** Appends dropped or picked text files to the text box. @param {Iterable<File>} files */
async function addTextFiles(files) {
  const parts = [];
  for (const f of files) {
    if (f.type && !f.type.startsWith('text/') && !/\.(txt|md|markdown)$/i.test(f.name)) continue;
    parts.push((await f.text()).trim());
  }
  if (!parts.length) return;
  const box = $('train-text');
  box.value = [box.value.trim(), ...parts].filter(Boolean).join('\n\n');
  updateTextStats();
}

/** The sample text, read once (a plain GET, so the service worker can answer it offline). */
let sample = null;
async function offerSample() {
  try {
    const res = await fetch(SAMPLE_URL);
    sample = res.ok ? (await res.text()).trim() : null;
  } catch {
    sample = null;
  }
  $('use-sample').hidden = !sample;
}

function useSample() {
  if (!sample) return;
  $('train-text').value = sample;
  updateTextStats();
}

// ---------------------------------------------------------------------------------------------------------------
// Training

/** @param {string} id @param {number} lo @param {number} hi @param {number} fallback */
function numberField(id, lo, hi, fallback) {
  const v = Number($(id).value);
  return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
}

async function train() {
  const engine = state.engine;
  if (!engine || state.busy) return;
  const texts = entriesOf($('train-text').value);
  const status = $('train-status');
  if (!texts.length) {
    say(status, 'Add some text first (step 2).', 'error');
    return;
  }
  const info = engine.info;
  const steps = Math.round(numberField('steps', 1, 5000, 100));
  const lr = numberField('lr', 1e-5, 0.1, 2e-3);
  const rank = Math.round(numberField('rank', 1, 64, 8));
  const seqLen = Math.round(numberField('seq-len', 8, info.config.maxSeqLen, 64));
  const have = new Set(info.modules.map((m) => m.split('.').pop()));
  const targets = PREFERRED_TARGETS.filter((t) => have.has(t));
  const chars = texts.reduce((n, t) => n + t.length, 0);
  // Hold out some text to measure the change only when there is enough of it for a few sequences.
  const evalSplit = chars >= 3000 ? 0.15 : 0;

  setBusy(true, { training: true });
  state.losses = [];
  state.evalBefore = null;
  drawLosses();
  $('loss-now').textContent = '–';
  $('eval-loss').textContent = '–';
  $('speed').textContent = '–';
  const bar = $('train-progress');
  bar.hidden = false;
  bar.value = 0;
  say(status, 'Preparing…', 'busy');
  let adapter = null;
  let lastStep = 0;
  try {
    if (state.trained && state.trained !== state.current) await engine.freeAdapter(state.trained).catch(() => {});
    adapter = await engine.createAdapter({ rank, alpha: 2 * rank, targets, seed: 1 });
    const run = engine.train(adapter, texts, {
      steps, lr, batchSize: 8, seqLen, evalSplit, seed: 1, schedule: 'cosine', warmupSteps: Math.min(10, Math.floor(steps / 10)),
      onStep: (r) => {
        lastStep = r.step;
        state.losses.push(r.loss);
        bar.value = (r.step / r.totalSteps) * 100;
        $('loss-now').textContent = r.loss.toFixed(3);
        const threads = engine.info.threads;
        $('speed').textContent = `${Math.round(r.tokensPerSecond).toLocaleString()} tokens/s on ${threads} thread${threads === 1 ? '' : 's'}`;
        const eta = (r.elapsed / r.step) * (r.totalSteps - r.step);
        say(status, `Step ${r.step} of ${r.totalSteps} · loss ${r.loss.toFixed(3)} · about ${formatDuration(eta)} left`, 'busy');
        scheduleDraw();
      },
      onEval: (r) => {
        if (r.step === 0) state.evalBefore = r.loss;
        $('eval-loss').textContent = state.evalBefore !== null && r.step > 0
          ? `${state.evalBefore.toFixed(3)} → ${r.loss.toFixed(3)}`
          : r.loss.toFixed(3);
      },
    });
    state.run = run;
    const summary = await run.done;
    const held = summary.evalLoss !== null && summary.evalLossBefore !== null
      ? `; held-out loss ${summary.evalLossBefore.toFixed(3)} → ${summary.evalLoss.toFixed(3)}`
      : '';
    say(status, `Training finished: ${summary.steps} steps in ${formatDuration(summary.seconds)}, `
      + `loss ${state.losses[0]?.toFixed(3)} → ${summary.trainLoss.toFixed(3)}${held}.`, 'ok');
  } catch (err) {
    if (err?.name === 'AbortError') {
      say(status, `Stopped after step ${lastStep}. The adapter keeps what it learnt so far.`, 'ok');
    } else {
      say(status, `Training failed: ${explain(err)}`, 'error');
      if (adapter && lastStep === 0) {
        await engine.freeAdapter(adapter).catch(() => {});
        adapter = null;
      }
    }
  } finally {
    state.run = null;
    bar.hidden = true;
    drawLosses();
  }
  if (adapter) {
    state.trained = adapter;
    await useAdapter(adapter, 'the adapter you just trained');
    if (!$('adapter-name').value.trim()) $('adapter-name').value = `my style ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`;
  }
  setBusy(false);
}

function stop() {
  state.run?.abort(new DOMException('stopped by the user', 'AbortError'));
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawLosses();
  });
}

/** The loss curve; its numbers are also in the text next to it, for people who cannot see the chart. */
function drawLosses() {
  const canvas = $('loss-chart');
  const ratio = devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const losses = state.losses;
  const styles = getComputedStyle(canvas);
  ctx.font = '12px system-ui, sans-serif';
  ctx.fillStyle = styles.getPropertyValue('--chart-text') || '#555';
  if (losses.length < 2) {
    ctx.fillText(losses.length ? `loss ${losses[0].toFixed(3)}` : 'The loss curve appears here while training.', 8, height / 2);
    return;
  }
  const lo = Math.min(...losses);
  const hi = Math.max(...losses);
  const pad = 24;
  const x = (i) => pad + (i / (losses.length - 1)) * (width - 2 * pad);
  const y = (v) => pad / 2 + (hi === lo ? 0.5 : (hi - v) / (hi - lo)) * (height - pad * 1.5);
  ctx.strokeStyle = styles.getPropertyValue('--chart-line') || '#1f4fa8';
  ctx.lineWidth = 2;
  ctx.beginPath();
  losses.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.stroke();
  ctx.fillText(hi.toFixed(2), 2, y(hi) + 4);
  ctx.fillText(lo.toFixed(2), 2, y(lo) + 4);
  ctx.fillText(`step ${losses.length}`, width - 60, height - 4);
}

// ---------------------------------------------------------------------------------------------------------------
// Generation

/** @param {any} adapter @param {string} label */
async function useAdapter(adapter, label) {
  const previous = state.current;
  state.current = adapter;
  state.currentLabel = label;
  // Loaded copies are cheap to make again; the trained adapter may not be saved yet, so it is kept.
  if (previous && previous !== adapter && previous !== state.trained) await state.engine?.freeAdapter(previous).catch(() => {});
  $('adapter-in-use').textContent = `Comparing with ${label} (rank ${adapter.rank}, ${adapter.parameters.toLocaleString()} trained parameters).`;
  updateButtons();
}

/** Streams one generation into an output element, after the prompt. */
async function generateInto(output, prompt, options) {
  const continuation = h('span', { className: 'continuation' });
  output.replaceChildren(h('strong', { textContent: prompt }), continuation);
  output.setAttribute('aria-busy', 'true');
  try {
    const result = await state.engine.generate(prompt, { ...options, onToken: (t) => { continuation.textContent += t.text; } });
    continuation.textContent = result.text;
    return result;
  } finally {
    output.removeAttribute('aria-busy');
  }
}

async function compare() {
  if (!state.engine || state.busy) return;
  const prompt = $('prompt').value;
  const temperature = numberField('temperature', 0, 2, 0.8);
  const options = {
    maxTokens: Math.round(numberField('max-tokens', 1, 512, 60)), temperature, topK: temperature > 0 ? 40 : 0, seed: GENERATION_SEED,
  };
  setBusy(true);
  try {
    await generateInto($('out-base'), prompt, options);
    if (state.current) await generateInto($('out-tuned'), prompt, { ...options, adapter: state.current });
    else $('out-tuned').textContent = 'Train an adapter (step 3) or use a saved one (step 5) to see the difference.';
  } catch (err) {
    say($('train-status'), `Generation failed: ${explain(err)}`, 'error');
  } finally {
    setBusy(false);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Saved adapters

async function refreshAdapters() {
  const body = $('adapters-body');
  if (!state.engine) {
    body.replaceChildren();
    $('no-adapters').textContent = 'Load the model to see your saved adapters.';
    $('no-adapters').hidden = false;
    return;
  }
  let list = [];
  try {
    list = await state.engine.adapters.list();
  } catch (err) {
    say($('adapters-status'), `Cannot read saved adapters: ${explain(err)}`, 'error');
  }
  body.replaceChildren(...list.map(adapterRow));
  $('no-adapters').textContent = 'No saved adapters yet.';
  $('no-adapters').hidden = list.length > 0;
  updateButtons();
}

/** @param {any} r an AdapterRecord */
function adapterRow(r) {
  const button = (text, onClick, label) => {
    const b = h('button', { type: 'button', textContent: text, className: 'small' });
    b.setAttribute('aria-label', `${label ?? text} ${r.name}`);
    b.addEventListener('click', () => onClick(b));
    return b;
  };
  const nameCell = h('th', { scope: 'row', textContent: r.name });
  const actions = h('td', {}, [h('div', { className: 'actions' }, [
    button('Use', () => runAction(async () => {
      const handle = await state.engine.adapters.load(r.name);
      await useAdapter(handle, `"${r.name}"`);
      say($('adapters-status'), `Using "${r.name}". Generate in step 4 to compare.`, 'ok');
    })),
    button('Rename', () => startRename(nameCell, r.name)),
    button('Export', () => runAction(() => exportAdapter(r.name))),
    button('Delete', (b) => confirmDelete(b, r.name)),
  ])]);
  const created = new Date(r.created);
  return h('tr', {}, [
    nameCell,
    h('td', { textContent: shortName(r.baseModel), title: r.baseModel ?? '' }),
    h('td', { textContent: r.rank ?? '–' }),
    h('td', { textContent: (r.targets ?? []).map((t) => t.replace(/_proj$/, '')).join(', '), title: (r.targets ?? []).join(', ') }),
    h('td', { textContent: formatBytes(r.sizeBytes) }),
    h('td', {}, [h('time', { dateTime: created.toISOString(), textContent: created.toLocaleString() })]),
    h('td', { textContent: r.steps ?? '–' }),
    h('td', { textContent: typeof r.finalLoss === 'number' ? r.finalLoss.toFixed(3) : '–' }),
    actions,
  ]);
}

/** Runs an adapter action with the page marked busy and errors shown. @param {() => Promise<void>} fn */
async function runAction(fn) {
  if (state.busy) return;
  setBusy(true);
  try {
    await fn();
  } catch (err) {
    say($('adapters-status'), explain(err), 'error');
  } finally {
    setBusy(false);
  }
  await refreshAdapters();
  await refreshStorage();
}

/** @param {HTMLElement} cell @param {string} name */
function startRename(cell, name) {
  const input = h('input', { type: 'text', value: name });
  input.setAttribute('aria-label', `New name for ${name}`);
  const ok = h('button', { type: 'button', textContent: 'OK', className: 'small' });
  const cancel = h('button', { type: 'button', textContent: 'Cancel', className: 'small quiet' });
  const commit = () => runAction(async () => {
    const to = input.value.trim();
    if (!to || to === name) return;
    await state.engine.adapters.rename(name, to);
    say($('adapters-status'), `Renamed "${name}" to "${to}".`, 'ok');
  });
  ok.addEventListener('click', commit);
  cancel.addEventListener('click', () => refreshAdapters());
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') commit();
    if (e.key === 'Escape') refreshAdapters();
  });
  cell.replaceChildren(input, ok, cancel);
  input.focus();
  input.select();
}

/** Two clicks delete, so a slip of the mouse does not lose an adapter. */
function confirmDelete(button, name) {
  if (button.dataset.armed) {
    runAction(async () => {
      await state.engine.adapters.delete(name);
      say($('adapters-status'), `Deleted "${name}".`, 'ok');
    });
    return;
  }
  button.dataset.armed = '1';
  button.textContent = 'Confirm delete';
  button.classList.add('danger');
  setTimeout(() => {
    delete button.dataset.armed;
    button.textContent = 'Delete';
    button.classList.remove('danger');
  }, 5000);
}

/** Offers the adapter's PEFT files as downloads (one link each, so no browser blocks a second download). */
async function exportAdapter(name) {
  const files = await state.engine.adapters.export(name);
  const links = files.map((f) => {
    const url = URL.createObjectURL(new Blob([f.data], { type: f.name.endsWith('.json') ? 'application/json' : 'application/octet-stream' }));
    setTimeout(() => URL.revokeObjectURL(url), 10 * 60_000);
    return h('a', { href: url, download: f.name, textContent: `${f.name} (${formatBytes(f.data.byteLength)})` });
  });
  const status = $('adapters-status');
  status.dataset.kind = 'ok';
  status.replaceChildren(`PEFT files of "${name}" (put both in one folder to load them with PEFT): `, ...links.flatMap((a, i) => (i ? [' · ', a] : [a])));
}

async function saveAdapter(overwrite = false) {
  const adapter = state.current ?? state.trained;
  if (!state.engine || !adapter || state.busy) return;
  const name = $('adapter-name').value.trim() || `adapter ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`;
  setBusy(true);
  const status = $('adapters-status');
  try {
    const record = await state.engine.adapters.save(name, adapter, { overwrite });
    say(status, `Saved "${record.name}" (${formatBytes(record.sizeBytes)}) in this browser.`, 'ok');
  } catch (err) {
    if (err instanceof AlreadyExistsError || err?.name === 'AlreadyExistsError') {
      const replace = h('button', { type: 'button', textContent: 'Replace it', className: 'small danger' });
      replace.addEventListener('click', () => saveAdapter(true));
      status.dataset.kind = 'error';
      status.replaceChildren(`An adapter named "${name}" already exists. Choose another name, or `, replace);
    } else {
      say(status, `Could not save: ${explain(err)}`, 'error');
    }
  } finally {
    setBusy(false);
  }
  await refreshAdapters();
  await refreshStorage();
}

/** PEFT files from the picker; downloads may have been renamed ("adapter_config (1).json"), so go by type. */
async function importAdapter(fileList) {
  const files = [...fileList];
  $('import-files').value = '';
  const config = files.find((f) => /\.json$/i.test(f.name));
  const weights = files.find((f) => /\.safetensors$/i.test(f.name));
  if (!config || !weights || files.length !== 2) {
    say($('adapters-status'), 'Choose the two PEFT files together: adapter_config.json and adapter_model.safetensors.', 'error');
    return;
  }
  const name = $('adapter-name').value.trim() || `imported ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`;
  await runAction(async () => {
    const record = await state.engine.adapters.import([
      { name: 'adapter_config.json', data: new Uint8Array(await config.arrayBuffer()) },
      { name: 'adapter_model.safetensors', data: new Uint8Array(await weights.arrayBuffer()) },
    ], { name });
    say($('adapters-status'), `Imported "${record.name}" (rank ${record.rank}, ${formatBytes(record.sizeBytes)}).`, 'ok');
  });
}

async function refreshStorage() {
  const facts = [];
  try {
    const list = state.engine ? await state.engine.adapters.list() : [];
    if (state.engine) facts.push(['Adapters', `${formatBytes(list.reduce((n, r) => n + r.sizeBytes, 0))} in ${list.length}`]);
  } catch { /* shown in the adapters status */ }
  try {
    facts.push(['Downloaded models', formatBytes(await cachedSize())]);
  } catch { /* no Cache API */ }
  if (navigator.storage?.estimate) {
    const est = await navigator.storage.estimate();
    facts.push(['This site in total', `${formatBytes(est.usage)} of ${formatBytes(est.quota)} available`]);
  }
  if (navigator.storage?.persisted) {
    facts.push(['Protected from automatic clean-up', (await navigator.storage.persisted())
      ? 'yes' : 'no: the browser may clear this site\'s data when the disk runs low (export adapters you want to keep)']);
  }
  $('storage-info').replaceChildren(...facts.flatMap(([k, v]) => [h('dt', { textContent: k }), h('dd', { textContent: v })]));
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

/** @param {boolean} busy @param {{ training?: boolean }} [opts] */
function setBusy(busy, opts = {}) {
  state.busy = busy;
  document.body.toggleAttribute('data-busy', busy);
  $('stop').disabled = !(busy && opts.training);
  updateButtons();
}

function updateButtons() {
  const ready = !!state.engine && !state.busy;
  $('load-model').disabled = state.busy;
  $('train').disabled = !ready || !$('train-text').value.trim();
  $('generate').disabled = !ready;
  $('save-adapter').disabled = !ready || !(state.current ?? state.trained);
  $('import-files').disabled = !ready;
  for (const b of document.querySelectorAll('#adapters-body button')) b.disabled = !ready;
}

function wire() {
  $('model-source').textContent = `Model: ${shortName(MODEL_URL)}${TOKENIZER_URL ? ` with tokenizer ${shortName(TOKENIZER_URL)}` : ''}. `
    + 'It is downloaded once, then kept on this device.';
  $('load-model').addEventListener('click', loadModel);
  $('forget-model').addEventListener('click', forgetModel);
  $('train-text').addEventListener('input', updateTextStats);
  $('text-files').addEventListener('change', (e) => addTextFiles(e.target.files));
  $('use-sample').addEventListener('click', useSample);
  $('clear-text').addEventListener('click', () => {
    $('train-text').value = '';
    updateTextStats();
  });
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('dragging');
    if (e.dataTransfer?.files?.length) addTextFiles(e.dataTransfer.files);
  });
  $('train').addEventListener('click', train);
  $('stop').addEventListener('click', stop);
  $('generate').addEventListener('click', compare);
  $('save-adapter').addEventListener('click', () => saveAdapter(false));
  $('import-files').addEventListener('change', (e) => importAdapter(e.target.files));
  addEventListener('resize', scheduleDraw);
}

async function main() {
  wire();
  updateTextStats();
  drawLosses();
  await refreshAdapters();
  await refreshStorage();
  offerSample();
  registerServiceWorker();
  // A model already on this device loads without asking: no network is needed for it.
  if (await modelIsCached()) await loadModel();
  document.body.dataset.ready = 'true';
}

main();
