// app.js: the demo page. A model picker (the built-in model, real small models from the Hugging Face Hub or a
// mirror, any address, or files on this device) with size, memory and speed estimates; the person's own text with
// advice on its amount; checked training settings and a time estimate from a measured warm-up; training in the
// package's Worker with live progress; before/after generations (through the chat template for chat models); saved
// adapters in IndexedDB; offline use, installation and updates through the service worker.
import { AlreadyExistsError, WebLoRA, cachedSize, deleteCachedModel, formatBytes, listCachedModels } from '../dist/weblora.js';
import { BUILT_IN, CATALOG, DEFAULT_HUB, hubFolder, parseHubBase, parseModelAddress } from './catalog.js';
import {
  WASM_MEMORY_LIMIT, betterMeasurement, downloadBytes, expectedTokensPerSecond, parameterCount, shapeFromEngine,
  shapeFromHfConfig, speedMeasurement, trainingMemoryBytes, trainingSeconds,
} from './estimate.js';
import { checkGeneration, checkTraining, textAdvice } from './checks.js';
import { explainError } from './explain.js';
import { DEFAULT_INSTRUCTION, conversationsOf } from './chat.js';

const $ = (id) => /** @type {any} */ (document.getElementById(id));

const params = new URLSearchParams(location.search);
const BUILT_IN_URL = new URL('./models/default/', location.href).href;
/** ?threads=N sets the core's threads; the package's 'auto' (every core, at most 8) otherwise. */
const THREADS = /^\d+$/.test(params.get('threads') ?? '') ? Number(params.get('threads')) : 'auto';
/** Set for the one reload that lets the service worker make the page cross-origin isolated. */
const ISOLATION_RELOAD = 'weblora-demo-isolation-reload';
const SAMPLE_URL = new URL('./data/personal-style.txt', location.href).href;
/** Adapter targets in order of preference; the ones the model has are used. */
const PREFERRED_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'c_attn', 'c_proj', 'c_fc'];
const ALL_LINEAR = { llama: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], gpt2: ['c_attn', 'c_proj', 'c_fc'] };
const GENERATION_SEED = 42;
/** Held-out tokens evaluated before and after training: enough for a steady loss, cheap on big models. */
const EVAL_TOKENS = 4096;
/** The speed warm-up trains two steps of one sequence of at most this many tokens, on this text. */
const WARMUP_TOKENS = 64;
const WARMUP_TEXT = 'A short text to measure how fast this device trains. '.repeat(60);
/** The catalogue's memory and speed figures assume this batch until the person sets one. */
const DEFAULT_RUN = { B: 8, T: 64 };
const GB = 1024 ** 3;

const state = {
  /** @type {import('../web/runtime/client.js').Engine | null} */
  engine: null,
  /** @type {any} engine.info */
  info: null,
  /** @type {import('./estimate.js').Shape | null} */
  shape: null,
  /** label of the loaded model, and the catalogue entry when it came from the catalogue */
  loadedLabel: '',
  /** @type {import('./catalog.js').CatalogEntry | null} */
  loadedEntry: null,
  /** @type {AbortController | null} */
  loading: null,
  /** the chosen source: a catalogue id, 'address' or 'files' */
  choice: BUILT_IN.id,
  /** @type {File[]} model files chosen on this device */
  files: [],
  filesLabel: '',
  hub: DEFAULT_HUB,
  /** the adapter trained in this session (a handle into the Worker), and whether it has been saved since */
  trained: null,
  savedTrained: false,
  /** when the person was told that loading another model drops the unsaved adapter */
  discardAsked: 0,
  /** the adapter generations use: the trained one or one loaded from the store */
  current: null,
  /** @type {{ done: Promise<any>, abort: (reason?: any) => void } | null} */
  run: null,
  busy: false,
  /** @type {number[]} */
  losses: [],
  evalBefore: /** @type {number | null} */ (null),
  /** @type {{ key: string, tokens: number, documents: number } | null} tokens of the training texts (textKey) */
  counted: null,
  /** @type {ReturnType<typeof checkTraining> | null} the settings as last checked */
  checked: null,
  /** @type {ReturnType<typeof checkGeneration> | null} */
  generation: null,
  /** @type {Map<string, number>} seconds per training token measured by warm-ups, by model, rank and length */
  warm: new Map(),
  /** @type {{ key: string, run: { abort: (r?: any) => void } | null, cancelled: boolean, finished: Promise<void> } | null} */
  warmup: null,
  /** @type {import('./estimate.js').SpeedMeasurement | null} */
  speed: null,
  /** @type {number | null} threads the package runs on in this page, once an engine has said (engine.info.threads) */
  threads: null,
  measuringDevice: false,
  /** @type {import('../web/index.js').CachedModel[]} */
  cached: [],
  /** @type {any} the deferred beforeinstallprompt event */
  installPrompt: null,
};

// ---------------------------------------------------------------------------------------------------------------
// Small helpers

/** @param {number} seconds */
function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '–';
  const s = Math.max(1, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const fmt = (/** @type {number} */ n) => n.toLocaleString('en-US');

/** @param {number} tps */
function formatSpeed(tps) {
  return tps >= 10 ? `${fmt(Math.round(tps))} tokens/s` : `${tps.toFixed(1)} tokens/s`;
}

/** @param {number} n */
function threadsText(n) {
  return `${n} thread${n === 1 ? '' : 's'}`;
}

/**
 * A status line: text plus a kind that styles it (and errors are announced assertively).
 * @param {HTMLElement} node @param {string} text @param {'' | 'ok' | 'error' | 'busy' | 'warn'} [kind]
 */
function say(node, text, kind = '') {
  node.textContent = text;
  node.dataset.kind = kind;
  node.setAttribute('aria-live', kind === 'error' ? 'assertive' : 'polite');
}

/**
 * An error in the person's words, with the technical detail one click away.
 * @param {HTMLElement} node @param {any} err @param {Parameters<typeof explainError>[1]} task
 */
function showError(node, err, task) {
  const { summary, advice, detail } = explainError(err, task);
  const more = h('details', { className: 'tech' }, [h('summary', { textContent: 'Technical details' }), h('pre', { textContent: detail })]);
  node.dataset.kind = 'error';
  node.setAttribute('aria-live', 'assertive');
  node.replaceChildren(h('strong', { textContent: summary }), ` ${advice}`, more);
}

/** A short label for a URL: its last meaningful path segments. @param {string | null} url */
function shortName(url) {
  if (!url) return '–';
  try {
    const u = new URL(url, location.href);
    const parts = u.pathname.split('/').filter(Boolean).filter((p) => p !== 'resolve' && p !== 'main');
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

/** localStorage, which private modes may refuse: preferences are a convenience, never required. */
const prefs = {
  get(key) {
    try {
      return localStorage.getItem(`weblora-demo:${key}`);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`weblora-demo:${key}`, value);
    } catch { /* not kept */ }
  },
};

/** Runs fn once the calls stop for `ms`. */
function debounce(fn, ms) {
  let timer = 0;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Offline support, installation, updates

async function registerServiceWorker() {
  const pill = $('offline-status');
  if (!('serviceWorker' in navigator)) {
    say(pill, 'Offline use is not available in this browser', '');
    return;
  }
  let registration;
  try {
    // Scope '/' also covers the package's Worker under ../web/, so it starts offline too; a server that does not
    // send Service-Worker-Allowed refuses that, and the demo's own folder is the fallback.
    registration = await navigator.serviceWorker.register('./sw.js', { scope: '../' }).catch(() => navigator.serviceWorker.register('./sw.js'));
    await navigator.serviceWorker.ready;
    say(pill, navigator.onLine ? 'Ready to work offline' : 'Offline: running from this device', 'ok');
    reloadForIsolation();
  } catch (err) {
    say(pill, `Offline use unavailable: ${err?.message ?? err}`, 'error');
    return;
  }
  addEventListener('online', () => say(pill, 'Ready to work offline', 'ok'));
  addEventListener('offline', () => say(pill, 'Offline: running from this device', 'ok'));
  watchForUpdates(registration);
}

/**
 * A new version of the demo installs in the background and waits; the page offers a reload that lets it take over
 * (reloading by itself could lose a training run or an unsaved adapter).
 * @param {ServiceWorkerRegistration} registration
 */
function watchForUpdates(registration) {
  let accepted = false;
  const offer = (/** @type {ServiceWorker} */ worker) => {
    if (!navigator.serviceWorker.controller) return; // the first install: nothing older is running
    $('update-banner').hidden = false;
    $('update-note').textContent = state.trained && !state.savedTrained ? 'Save your adapter first: an unsaved adapter is lost on reload.' : '';
    $('update-reload').onclick = () => {
      accepted = true;
      $('update-reload').disabled = true;
      worker.postMessage({ type: 'skip-waiting' });
    };
  };
  if (registration.waiting) offer(registration.waiting);
  registration.addEventListener('updatefound', () => {
    const worker = registration.installing;
    worker?.addEventListener('statechange', () => {
      if (worker.state === 'installed') offer(worker);
    });
  });
  let reloading = false;
  navigator.serviceWorker.addEventListener('controllerchange', () => {
    // Only a reload the person asked for: the first install also changes the controller.
    if (reloading || !accepted) return;
    reloading = true;
    location.reload();
  });
  // A long-lived installed app checks for a new version now and then, not only when it is opened.
  setInterval(() => registration.update().catch(() => {}), 60 * 60 * 1000);
}

function offerInstall() {
  addEventListener('beforeinstallprompt', (event) => {
    event.preventDefault();
    state.installPrompt = event;
    $('install-app').hidden = false;
  });
  $('install-app').addEventListener('click', async () => {
    const prompt = state.installPrompt;
    if (!prompt) return;
    state.installPrompt = null;
    $('install-app').hidden = true;
    await prompt.prompt();
  });
  addEventListener('appinstalled', () => {
    $('install-app').hidden = true;
    say($('offline-status'), 'Installed: open weblora from your apps', 'ok');
  });
  const standalone = matchMedia('(display-mode: standalone)').matches || /** @type {any} */ (navigator).standalone === true;
  $('install-hint').hidden = standalone || !/iPhone|iPad|iPod/.test(navigator.userAgent);
}

/**
 * Cross-origin isolation, which the core's threads need, on a host that does not send COOP/COEP itself: the service
 * worker adds the headers to everything it serves, so only a page it did not serve (the first visit, before it took
 * control) lacks them. Such a page reloads once, as soon as a worker that adds them controls it and a reload loses
 * nothing (no model loaded or loading, no text typed). A page controlled by an older worker that does not add them
 * waits for the update offer instead: the reload the person accepts brings the new worker and isolation together,
 * and the new worker never takes over by itself. body[data-isolation] tells which way it went.
 */
async function reloadForIsolation() {
  const mark = (/** @type {string} */ how) => { document.body.dataset.isolation = how; };
  if (globalThis.crossOriginIsolated) return mark('isolated');
  // The reload happens once per tab: where it did not isolate the page (or the flag cannot be kept), never again.
  try {
    if (sessionStorage.getItem(ISOLATION_RELOAD)) return mark('unavailable');
  } catch {
    return mark('unavailable');
  }
  if (!navigator.serviceWorker.controller) {
    await new Promise((resolve) => navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true }));
  }
  if (!(await controllerIsolates())) return mark('after-update');
  if (state.engine || state.busy || state.loading || $('train-text').value.trim()) return mark('next-visit');
  try {
    sessionStorage.setItem(ISOLATION_RELOAD, '1');
  } catch {
    return mark('unavailable');
  }
  mark('reloading');
  location.reload();
}

/** Whether what the controlling service worker serves carries both isolation headers (versions before v3 did not). */
async function controllerIsolates() {
  try {
    const res = await fetch(new URL('./manifest.webmanifest', location.href), { cache: 'no-store' });
    return res.headers.get('cross-origin-opener-policy') === 'same-origin'
      && res.headers.get('cross-origin-embedder-policy') === 'require-corp';
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Model picker

/** @param {import('./catalog.js').CatalogEntry} entry */
function entryFolder(entry) {
  return entry.repo ? hubFolder(entry.repo, state.hub) : BUILT_IN_URL;
}

/** The cached model whose base is `base`, when its weights are all there. @param {string} base */
function cachedModel(base) {
  const m = state.cached.find((c) => c.base === base);
  return m && m.files.some((f) => /\.(safetensors|bin)$/i.test(f.file) && !/^tok.*\.bin$/i.test(f.file)) ? m : null;
}

/** The memory share a page may use on this device, when the browser says how much it has (Chromium, rounded). */
function deviceBytes() {
  const gb = /** @type {any} */ (navigator).deviceMemory;
  return typeof gb === 'number' && gb > 0 ? (gb * GB) / 2 : null;
}

/** Batch and length the estimates use: the settings when they are valid. */
function runShape() {
  const v = state.checked?.values;
  return v ? { B: v.batchSize, T: v.seqLen } : DEFAULT_RUN;
}

/** @param {import('./catalog.js').CatalogEntry} entry */
function entryFacts(entry) {
  const shape = shapeFromHfConfig(entry.config);
  const P = parameterCount(shape);
  const { B, T } = runShape();
  const run = { B, T: Math.min(T, shape.maxSeqLen) };
  const threads = pageThreads();
  const memory = trainingMemoryBytes(shape, P, { ...run, threads, dtype: entry.baseDtype ?? 'f32' });
  const parts = [`${(P / 1e6).toFixed(P < 1e7 ? 1 : 0)} M parameters`];
  parts.push(entry.repo ? `${formatBytes(downloadBytes(entry, P))} download` : `${formatBytes(downloadBytes(entry, P))}, part of the app, works offline`);
  parts.push(`about ${formatBytes(memory)} of memory to train (batches of ${run.B} × ${run.T})`);
  if (state.speed) {
    const tps = expectedTokensPerSecond(shape, P, run.T, state.speed, threads);
    parts.push(`about ${formatSpeed(tps)} training here, so 100 steps take about ${formatDuration((100 * run.B * run.T) / tps)}`);
  }
  const device = deviceBytes();
  const warning = memory > WASM_MEMORY_LIMIT ? 'Too big for a browser tab at these settings.'
    : device !== null && memory > device ? 'May be too big for this device.' : '';
  return { text: `${parts.join(' · ')}.`, warning };
}

/**
 * The model list: built once, then updated in place (sizes, speeds, badges), so keyboard focus on a radio survives
 * the updates that arrive while the person looks at it.
 */
function renderChoices() {
  const box = $('model-choices');
  if (!box.querySelector('.choice')) buildChoices(box);
  for (const entry of CATALOG) {
    const id = `choice-${entry.id}`;
    const { text, warning } = entryFacts(entry);
    $(`${id}-facts`).textContent = text;
    $(`${id}-warning`).textContent = warning;
    $(`${id}-warning`).hidden = !warning;
    $(`${id}-cached`).hidden = !cachedModel(entryFolder(entry));
  }
  for (const input of box.querySelectorAll('input[name="model"]')) input.checked = input.value === state.choice;
  $('address-panel').hidden = state.choice !== 'address';
  $('files-panel').hidden = state.choice !== 'files';
  const speed = state.speed;
  $('speed-basis').textContent = speed
    ? `Speeds are estimated from a training speed measured on this device (${speed.model}, ${threadsText(speed.threads ?? 1)}); `
      + 'smaller models use the processor less efficiently, so figures scaled from them are cautious. Step 3 measures the loaded '
      + 'model itself.'
    : state.measuringDevice ? 'Measuring how fast this device trains…' : '';
}

/** One radio per catalogue model, then "an address" and "files on this device". @param {HTMLElement} box */
function buildChoices(box) {
  const choice = (/** @type {string} */ value, /** @type {(string | Node)[]} */ name, /** @type {Node[]} */ about) => {
    const id = `choice-${value}`;
    const input = h('input', { type: 'radio', name: 'model', id, value });
    // The radio's name is the model's; what it is and costs is its description, read after the name.
    input.setAttribute('aria-describedby', `${id}-about`);
    return h('div', { className: 'choice' }, [input, h('div', { className: 'choice-text' }, [
      h('label', { htmlFor: id, className: 'choice-name' }, name),
      h('span', { className: 'choice-about', id: `${id}-about` }, about),
    ])]);
  };
  const rows = CATALOG.map((entry) => {
    const id = `choice-${entry.id}`;
    const badges = [h('span', { className: 'badge ok', id: `${id}-cached`, textContent: 'downloaded', hidden: true })];
    if (entry.chat) badges.unshift(h('span', { className: 'badge', textContent: 'chat' }));
    return choice(entry.id, [entry.label, ...badges.flatMap((b) => [' ', b])], [
      h('span', { className: 'choice-blurb', textContent: entry.blurb }),
      h('span', { className: 'choice-facts', id: `${id}-facts` }),
      h('span', { className: 'choice-warning', id: `${id}-warning`, hidden: true }),
    ]);
  });
  box.append(...rows,
    choice('address', ['Another model on the web'], [h('span', { className: 'choice-blurb', textContent: 'Any Hugging Face model name, or the address of a model folder or file.' })]),
    choice('files', ['Model files on this device'], [h('span', { className: 'choice-blurb', textContent: 'A folder you downloaded before, read from your disk: nothing is uploaded.' })]));
}

/** The source, options and label for the chosen model; null (with the reason shown) when it is not usable. */
function chosenSource() {
  if (state.choice === 'address') {
    const parsed = parseModelAddress($('model-address').value, state.hub);
    fieldMessage('model-address', 'error' in parsed ? parsed.error : '', 'error');
    if ('error' in parsed) return null;
    const tokText = $('tokenizer-address').value.trim();
    /** @type {Record<string, any>} */
    const options = {};
    if (tokText) {
      let tokUrl;
      try {
        tokUrl = new URL(tokText, location.href).href;
      } catch {
        fieldMessage('tokenizer-address', 'This is not a web address.', 'error');
        return null;
      }
      // A folder's plan has its own tokenizer slot; single-file models take the tokenizer as an extra file.
      if (parsed.single) options.tokenizerUrl = tokUrl;
      else options.tokenizer = tokUrl;
    }
    fieldMessage('tokenizer-address', '', '');
    return { source: parsed.url, options, label: shortName(parsed.url), entry: null, pref: `address:${parsed.url} ${tokText}` };
  }
  if (state.choice === 'files') {
    if (!state.files.length) {
      fieldMessage('model-files', 'Choose the model\'s folder or files first.', 'error');
      return null;
    }
    return { source: state.files, options: {}, label: state.filesLabel, entry: null, pref: null };
  }
  const entry = CATALOG.find((e) => e.id === state.choice) ?? BUILT_IN;
  const options = entry.baseDtype && entry.baseDtype !== 'f32' ? { dtype: entry.baseDtype } : {};
  return { source: entryFolder(entry), options, label: entry.label, entry, pref: entry.id };
}

/**
 * @param {string} id field id @param {string} text @param {'' | 'error' | 'warn'} kind
 */
function fieldMessage(id, text, kind) {
  const msg = $(`${id}-msg`);
  const input = $(id);
  if (msg) {
    msg.textContent = text;
    msg.dataset.kind = text ? kind : '';
  }
  if (input) {
    if (kind === 'error' && text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
}

/** Files a model folder may hold that the loader reads; PyTorch pickles and the rest are left out. */
function modelFilesOf(/** @type {File[]} */ files) {
  return files.filter((f) => /\.(json|safetensors|bin)$/i.test(f.name) && !/^(pytorch_model.*|training_args)\.bin$/i.test(f.name)
    && !/^(adapter_config|generation_config|special_tokens_map|added_tokens|vocab)\.json$/i.test(f.name));
}

/** @param {File[]} files @param {string} label */
function chooseFiles(files, label) {
  const usable = modelFilesOf(files);
  state.files = usable;
  state.filesLabel = label;
  state.choice = 'files';
  renderChoices();
  if (!usable.length) {
    fieldMessage('model-files', `No model files among the ${files.length} chosen: need config.json, tokenizer.json and model.safetensors, or a llama2.c .bin.`, 'error');
    return;
  }
  const size = usable.reduce((n, f) => n + f.size, 0);
  fieldMessage('model-files', '', '');
  $('model-files-msg').textContent = `${label}: ${usable.map((f) => f.name).sort().join(', ')} (${formatBytes(size)}).`;
  updateButtons();
}

/** Files of a dropped folder: its own files only (a Hub folder's subfolders hold other formats). */
async function droppedFiles(/** @type {DataTransfer} */ dt) {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  const fileOf = (/** @type {any} */ e) => new Promise((resolve, reject) => e.file(resolve, reject));
  const dir = entries.length === 1 && entries[0].isDirectory ? entries[0] : null;
  if (!dir) return { files: [...dt.files], label: `${dt.files.length} dropped file${dt.files.length === 1 ? '' : 's'}` };
  const reader = dir.createReader();
  const children = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    children.push(...batch);
  }
  const files = await Promise.all(children.filter((e) => e.isFile).map(fileOf));
  return { files, label: `folder “${dir.name}”` };
}

async function refreshCached() {
  try {
    state.cached = await listCachedModels();
  } catch {
    state.cached = [];
  }
  const labelOf = (/** @type {string} */ base) => CATALOG.find((e) => entryFolder(e) === base)?.label ?? shortName(base);
  const rows = state.cached.map((m) => {
    const remove = h('button', { type: 'button', className: 'small', textContent: 'Remove' });
    remove.setAttribute('aria-label', `Remove ${labelOf(m.base)}`);
    remove.addEventListener('click', () => confirmTwice(remove, 'Remove', async () => {
      const n = await deleteCachedModel(m.base);
      const loaded = state.info?.name === m.base;
      say($('model-status'), `Removed ${labelOf(m.base)} (${n} file${n === 1 ? '' : 's'}).${loaded ? ' It stays loaded in this tab; it downloads again next time.' : ''}`, 'ok');
      await refreshCached();
      await refreshStorage();
    }));
    return h('li', {}, [h('span', { className: 'cached-name', textContent: labelOf(m.base), title: m.base }), ' ',
      h('span', { className: 'muted', textContent: formatBytes(m.size) }), ' ', remove]);
  });
  $('cached-models').replaceChildren(...rows);
  $('no-cached-models').hidden = rows.length > 0;
  renderChoices();
}

/** Two clicks within 5 s run `action`, so a slip of the mouse does not delete anything. */
function confirmTwice(button, text, action) {
  if (button.dataset.armed) {
    delete button.dataset.armed;
    button.textContent = text;
    button.classList.remove('danger');
    action();
    return;
  }
  button.dataset.armed = '1';
  button.textContent = `Confirm: ${text.toLowerCase()}`;
  button.classList.add('danger');
  setTimeout(() => {
    delete button.dataset.armed;
    button.textContent = text;
    button.classList.remove('danger');
  }, 5000);
}

async function unloadModel() {
  await cancelWarmup();
  const engine = state.engine;
  state.engine = null;
  state.info = null;
  state.shape = null;
  state.trained = null;
  state.current = null;
  state.counted = null;
  $('model-info').hidden = true;
  $('adapter-in-use').textContent = 'No adapter yet: train one or load a saved one.';
  $('out-base').replaceChildren();
  $('out-tuned').replaceChildren();
  if (engine) await engine.dispose();
}

async function loadModel() {
  if (state.busy) return;
  const chosen = chosenSource();
  if (!chosen) return;
  const status = $('model-status');
  say(status, `Loading ${chosen.label}…`, 'busy');
  setBusy(true, { loading: true });
  await unloadModel();
  const bar = $('load-progress');
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
  const controller = new AbortController();
  state.loading = controller;
  $('cancel-load').hidden = false;
  try {
    state.engine = await WebLoRA.load(chosen.source, { ...chosen.options, onProgress, signal: controller.signal, threads: THREADS });
  } catch (err) {
    if (err?.name === 'AbortError') say(status, 'Loading cancelled. Files downloaded completely so far are kept for next time.', 'ok');
    else showError(status, err, 'load');
    bar.hidden = true;
    state.loading = null;
    $('cancel-load').hidden = true;
    setBusy(false);
    await refreshCached();
    return;
  }
  state.loading = null;
  $('cancel-load').hidden = true;
  bar.hidden = true;
  const info = state.engine.info;
  state.info = info;
  state.threads = info.threads;
  state.shape = shapeFromEngine(info);
  state.loadedLabel = chosen.label;
  state.loadedEntry = chosen.entry;
  if (chosen.pref) prefs.set('model', chosen.pref);
  say(status, `${chosen.label}: ${downloaded ? 'downloaded and ready. It is kept on this device for next time.' : 'ready (from this device).'}`, 'ok');
  showModelFacts(info, chosen.label);
  setupChat(info);
  setBusy(false);
  refreshGuidance();
  countTokensSoon();
  await refreshAdapters();
  await refreshStorage();
  await refreshCached();
  scheduleWarmup();
}

function showModelFacts(info, label) {
  const c = info.config;
  const facts = [
    ['Model', label],
    ['Architecture', `${info.arch}, ${c.nLayers} layers, width ${c.dim}, ${c.nHeads} heads`],
    ['Parameters', `${(info.parameters / 1e6).toFixed(2)} M`],
    ['Vocabulary', `${fmt(c.vocabSize)} tokens`],
    ['Context', `${fmt(c.maxSeqLen)} tokens`],
    ['Memory', `${formatBytes(info.memoryBytes)} for the weights`],
    ['Chat template', info.chatTemplate ? 'yes: it can answer messages' : 'no: it continues text'],
  ];
  $('model-info').replaceChildren(...facts.flatMap(([k, v]) => [h('dt', { textContent: k }), h('dd', { textContent: v })]));
  $('model-info').hidden = false;
  // Next to the speed: how many threads it was reached on, and why only one when the page is not isolated.
  $('threads').textContent = info.threadsNote ? `${info.threads}: ${info.threadsNote}` : String(info.threads);
}

/**
 * A speed measured here, kept for the catalogue's estimates when it predicts them better than the one kept.
 * @param {import('./estimate.js').SpeedMeasurement} measured
 */
function rememberSpeed(measured) {
  if (!(measured.flopsPerSecond > 0) || !betterMeasurement(state.speed, measured)) return;
  state.speed = measured;
  prefs.set('speed', JSON.stringify(measured));
  renderChoices();
}

/** A speed measured on the loaded model. @param {number} T @param {number} tokensPerSecond */
function rememberLoadedSpeed(T, tokensPerSecond) {
  if (state.info && state.shape) {
    rememberSpeed(speedMeasurement(state.shape, state.info.parameters, T, tokensPerSecond, state.loadedLabel, state.info.threads));
  }
}

/** Threads the estimates are for: the engines' in this page, else the kept measurement's. */
function pageThreads() {
  return state.threads ?? state.speed?.threads ?? 1;
}

/**
 * Whether the kept speed was measured on one thread while this page can run several (it was measured before the
 * page was cross-origin isolated, or before the package had threads): scaled from one thread, the figures would be
 * far too cautious.
 */
function measuredOnOneThreadOnly() {
  return (state.speed?.threads ?? 1) === 1 && globalThis.crossOriginIsolated === true && THREADS !== 1
    && (navigator.hardwareConcurrency ?? 1) > 1;
}

/**
 * With no measurement yet (or one on a single thread where the page now has several), how fast this device trains is
 * measured on the built-in model in a worker of its own (a few seconds at most), so the catalogue can show speeds
 * before anything else is loaded.
 */
async function measureDevice() {
  if ((state.speed && !measuredOnOneThreadOnly()) || state.measuringDevice) return;
  state.measuringDevice = true;
  renderChoices();
  let engine = null;
  try {
    engine = await WebLoRA.load(BUILT_IN_URL, { threads: THREADS });
    state.threads = engine.info.threads;
    const seconds = await warmupSeconds(engine, 8, WARMUP_TOKENS, () => {});
    if (seconds) {
      rememberSpeed(speedMeasurement(shapeFromEngine(engine.info), engine.info.parameters, WARMUP_TOKENS, 1 / seconds, BUILT_IN.label,
        engine.info.threads));
    }
  } catch {
    // Only an estimate is missing: the catalogue shows sizes without speeds.
  } finally {
    await engine?.dispose();
    state.measuringDevice = false;
    renderChoices();
    await refreshCached();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Chat models

function chatMode() {
  return !!state.info?.chatTemplate && document.querySelector('input[name="format"]:checked')?.value === 'chat';
}

function setupChat(info) {
  const chat = !!info.chatTemplate;
  $('chat-format').hidden = !chat;
  if (chat) {
    // Instruction-tuned models answer messages; a base model with a template may still be trained either way.
    const wantChat = state.loadedEntry ? state.loadedEntry.chat : true;
    document.querySelector(`input[name="format"][value="${wantChat ? 'chat' : 'plain'}"]`).checked = true;
    if (!$('instruction').value) $('instruction').value = DEFAULT_INSTRUCTION;
  }
  updateFormat();
}

/** Labels and defaults that follow the text format. */
function updateFormat() {
  const chat = chatMode();
  $('instruction-field').hidden = !chat;
  $('prompt-label').textContent = chat ? 'Message' : 'Prompt';
  const prompt = $('prompt');
  if (chat && prompt.value === prompt.defaultValue) prompt.value = $('instruction').value || DEFAULT_INSTRUCTION;
  if (!chat && prompt.value === ($('instruction').value || DEFAULT_INSTRUCTION)) prompt.value = prompt.defaultValue;
  $('prompt-details').hidden = !chat;
  state.counted = null;
  countTokensSoon();
  updateChatPreview();
}

async function updateChatPreview() {
  if (!chatMode() || !state.engine) return;
  const [first] = conversationsOf(entriesOf($('train-text').value), $('instruction').value);
  try {
    $('chat-preview').textContent = first ? await state.engine.applyChatTemplate(first) : '(no entry yet)';
  } catch (err) {
    // A template this engine cannot render: plain text still trains, and Train reports the error in full.
    $('chat-preview').textContent = `The model's chat template cannot be used: ${err?.message ?? err}`;
  }
}

/** What training reads: the entries, or in conversation form the entries rendered with the chat template. */
async function trainingTexts() {
  const entries = entriesOf($('train-text').value);
  if (!chatMode() || !state.engine) return entries;
  const engine = state.engine;
  return Promise.all(conversationsOf(entries, $('instruction').value).map((m) => engine.applyChatTemplate(m)));
}

// ---------------------------------------------------------------------------------------------------------------
// Text

function updateTextStats() {
  const text = $('train-text').value;
  const entries = entriesOf(text).length;
  const words = text.trim() ? text.trim().split(/\s+/).length : 0;
  const tokens = state.counted ? `, ${fmt(state.counted.tokens)} tokens` : '';
  $('text-stats').textContent = text.trim()
    ? `${fmt(text.length)} characters, ${fmt(words)} word${words === 1 ? '' : 's'}, ${entries} ${entries === 1 ? 'entry' : 'entries'}${tokens}`
    : '';
}

const countTokensSoon = debounce(countTokens, 300);

/** What decides the training texts: the text, whether it is read as conversations, and their message. */
function textKey() {
  return `${chatMode()}\u0000${$('instruction').value}\u0000${$('train-text').value}`;
}

/** Counts the tokens training would see, so advice and estimates speak of the real amount. */
async function countTokens() {
  const engine = state.engine;
  if (!engine || !$('train-text').value.trim()) {
    state.counted = null;
    refreshGuidance();
    return;
  }
  const key = textKey();
  if (state.counted?.key === key) return;
  try {
    const { tokens, documents } = await engine.countTokens(await trainingTexts());
    // The text, its format or the model may have changed while this was counted: then a newer count follows.
    if (engine !== state.engine || key !== textKey()) return;
    state.counted = { key, tokens, documents };
  } catch {
    if (key === textKey()) state.counted = null; // training reports the problem with the text in full
  }
  refreshGuidance();
}

function onTextChanged() {
  state.counted = null;
  updateTextStats();
  refreshGuidance();
  countTokensSoon();
  updateChatPreviewSoon();
}
const updateChatPreviewSoon = debounce(updateChatPreview, 300);

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
  onTextChanged();
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

// ---------------------------------------------------------------------------------------------------------------
// Settings, advice and the time estimate

function modelLimits() {
  if (!state.info || !state.shape) return null;
  const shape = state.shape;
  const P = state.info.parameters;
  return {
    maxSeqLen: state.info.config.maxSeqLen,
    memoryFor: (B, T) => trainingMemoryBytes(shape, P, { B, T, threads: pageThreads(), dtype: state.info.dtype ?? 'f32' }),
    memoryLimit: WASM_MEMORY_LIMIT,
    deviceBytes: deviceBytes(),
  };
}

function rawTraining() {
  const raw = (id) => ($(id).validity?.badInput ? 'NaN' : $(id).value);
  return { steps: raw('steps'), lr: raw('lr'), rank: raw('rank'), seqLen: raw('seq-len'), batchSize: raw('batch-size') };
}

function rawGeneration() {
  const raw = (id) => ($(id).validity?.badInput ? 'NaN' : $(id).value);
  return { maxTokens: raw('max-tokens'), temperature: raw('temperature') };
}

const FIELD_IDS = { steps: 'steps', lr: 'lr', rank: 'rank', seqLen: 'seq-len', batchSize: 'batch-size', maxTokens: 'max-tokens', temperature: 'temperature' };
const FIELD_NAMES = { steps: 'steps', lr: 'learning rate', rank: 'rank', seqLen: 'sequence length', batchSize: 'batch size' };

/** Checks every setting, shows the messages, the text advice and the estimate, and why Train is disabled. */
function refreshGuidance() {
  const training = checkTraining(rawTraining(), modelLimits());
  const generation = checkGeneration(rawGeneration());
  for (const key of ['steps', 'lr', 'rank', 'seqLen', 'batchSize']) {
    fieldMessage(FIELD_IDS[key], training.errors[key] ?? training.warnings[key] ?? '', training.errors[key] ? 'error' : 'warn');
  }
  for (const key of ['maxTokens', 'temperature']) fieldMessage(FIELD_IDS[key], generation.errors[key] ?? '', 'error');
  state.checked = training;
  state.generation = generation;

  const text = $('train-text').value;
  const words = text.trim() ? text.trim().split(/\s+/).length : 0;
  const v = training.values;
  const advice = state.counted
    ? textAdvice({ tokens: state.counted.tokens, words, seqLen: v?.seqLen ?? null, steps: v?.steps ?? null, batchSize: v?.batchSize ?? null })
    : [];
  $('text-advice').replaceChildren(...advice.map((a) => h('li', { textContent: a })));
  updateTextStats();
  updateEstimate();
  updateButtons();
  renderChoicesSoon();
}
const renderChoicesSoon = debounce(renderChoices, 200);

/** Why Train cannot start now, or '' when it can. */
function trainBlocker() {
  if (state.loading) return 'Wait for the model to finish loading.';
  if (state.run) return '';
  if (!state.engine) return 'Load a model first (step 1).';
  if (state.busy) return 'Wait for the current task to finish.';
  if (!$('train-text').value.trim()) return 'Add some of your writing first (step 2).';
  if (chatMode() && !conversationsOf(entriesOf($('train-text').value), $('instruction').value).length) {
    return 'Every entry is only a message (lines starting with ">"): add the answers in your words.';
  }
  const bad = Object.keys(FIELD_NAMES).filter((k) => state.checked?.errors[k]);
  if (bad.length) return `Fix the ${bad.length === 1 ? 'setting' : 'settings'} marked above: ${bad.map((k) => FIELD_NAMES[k]).join(', ')}.`;
  return '';
}

function warmKey(rank, T) {
  return `${state.info?.fingerprint}|${rank}|${T}`;
}

/** The warm-up's sequence length for a run of sequence length T. */
function warmupLength(T) {
  return Math.min(T, WARMUP_TOKENS, state.info?.config.maxSeqLen ?? WARMUP_TOKENS);
}

function updateEstimate() {
  const out = $('train-estimate');
  const v = state.checked?.values;
  if (!state.engine || !v) {
    out.textContent = '';
    return;
  }
  const key = warmKey(v.rank, warmupLength(v.seqLen));
  const secondsPerToken = state.warm.get(key);
  if (secondsPerToken === undefined) {
    out.textContent = state.warmup ? 'Measuring how fast this device trains this model…' : '';
    scheduleWarmup();
    return;
  }
  const tokens = state.counted?.tokens ?? null;
  const evalTokens = tokens !== null && heldOut(tokens, v.seqLen) ? Math.min(EVAL_TOKENS, Math.round(0.15 * tokens)) : 0;
  const seconds = trainingSeconds({ steps: v.steps, B: v.batchSize, T: v.seqLen, evalTokens, secondsPerToken });
  out.textContent = `Estimated time: about ${formatDuration(seconds)} (measured here: ${formatSpeed(1 / secondsPerToken)} with this model`
    + `${v.seqLen > WARMUP_TOKENS ? '; longer sequences cost a little more per token' : ''}).`;
}

/** Whether the text is long enough to hold some of it out for measuring the change (ten sequences or more). */
function heldOut(tokens, seqLen) {
  return (tokens - 1) / seqLen >= 10;
}

const scheduleWarmup = debounce(runWarmup, 400);

/**
 * Two training steps of one short sequence on a throwaway adapter: the second step's time, per token.
 * @param {any} engine @param {number} rank @param {number} T
 * @param {(run: { abort: (r?: any) => void }) => void} started
 * @returns {Promise<number | null>} seconds per token, null when stopped
 */
async function warmupSeconds(engine, rank, T, started) {
  const have = new Set(engine.info.modules.map((m) => m.split('.').pop()));
  const adapter = await engine.createAdapter({ rank, alpha: 2 * rank, targets: PREFERRED_TARGETS.filter((t) => have.has(t)), seed: 1 });
  const at = [];
  try {
    const run = engine.train(adapter, [WARMUP_TEXT], {
      steps: 2, lr: 1e-4, batchSize: 1, seqLen: T, evalSplit: 0, seed: 1, onStep: () => at.push(performance.now()),
    });
    started(run);
    await run.done;
    return (at[1] - at[0]) / 1000 / T;
  } catch (err) {
    if (err?.name === 'AbortError') return null;
    throw err;
  } finally {
    await engine.freeAdapter(adapter).catch(() => {});
  }
}

async function runWarmup() {
  const engine = state.engine;
  const v = state.checked?.values;
  if (!engine || !v || state.busy || state.warmup) return;
  const T = warmupLength(v.seqLen);
  const key = warmKey(v.rank, T);
  if (state.warm.has(key)) return;
  let resolve = () => {};
  const finished = new Promise((r) => { resolve = r; });
  const warmup = { key, run: null, cancelled: false, finished };
  state.warmup = warmup;
  updateEstimate();
  try {
    const seconds = await warmupSeconds(engine, v.rank, T, (run) => {
      warmup.run = run;
      if (warmup.cancelled) run.abort(new DOMException('training starts', 'AbortError'));
    });
    if (seconds && engine === state.engine) {
      state.warm.set(key, seconds);
      rememberLoadedSpeed(T, 1 / seconds);
    }
  } catch {
    if (engine === state.engine) $('train-estimate').textContent = 'The time could not be estimated; training shows its progress as it goes.';
  } finally {
    state.warmup = null;
    resolve();
  }
  if (engine === state.engine) refreshGuidance();
}

function cancelWarmup() {
  const w = state.warmup;
  if (!w) return Promise.resolve();
  w.cancelled = true;
  w.run?.abort(new DOMException('training starts', 'AbortError'));
  return w.finished;
}

// ---------------------------------------------------------------------------------------------------------------
// Training

async function train() {
  const engine = state.engine;
  if (!engine || state.busy || trainBlocker()) return;
  const v = /** @type {NonNullable<typeof state.checked>} */ (state.checked).values;
  const status = $('train-status');
  say(status, 'Preparing…', 'busy');
  setBusy(true, { training: true });
  await cancelWarmup();
  state.losses = [];
  state.evalBefore = null;
  drawLosses();
  $('loss-now').textContent = '–';
  $('eval-loss').textContent = '–';
  $('speed').textContent = '–';
  const bar = $('train-progress');
  bar.hidden = false;
  bar.value = 0;
  const announce = $('train-announce');
  announce.textContent = 'Training started.';
  let adapter = null;
  let lastStep = 0;
  let announced = 0;
  /** @type {number[]} page times of the step reports, for a speed without the evaluation time */
  const stepTimes = [];
  try {
    const texts = await trainingTexts();
    const tokens = state.counted?.key === textKey() ? state.counted.tokens : (await engine.countTokens(texts)).tokens;
    const evalSplit = heldOut(tokens, v.seqLen) ? 0.15 : 0;
    if (state.trained && state.trained !== state.current) await engine.freeAdapter(state.trained).catch(() => {});
    const have = new Set(state.info.modules.map((m) => m.split('.').pop()));
    adapter = await engine.createAdapter({ rank: v.rank, alpha: 2 * v.rank, targets: PREFERRED_TARGETS.filter((t) => have.has(t)), seed: 1 });
    const run = engine.train(adapter, texts, {
      steps: v.steps, lr: v.lr, batchSize: v.batchSize, seqLen: v.seqLen, evalSplit, evalTokens: EVAL_TOKENS, seed: 1,
      schedule: 'cosine', warmupSteps: Math.min(10, Math.floor(v.steps / 10)),
      onStep: (r) => {
        lastStep = r.step;
        stepTimes.push(performance.now());
        state.losses.push(r.loss);
        bar.value = (r.step / r.totalSteps) * 100;
        $('loss-now').textContent = r.loss.toFixed(3);
        const recent = stepTimes.length > 1 ? ((stepTimes.length - 1) * v.batchSize * v.seqLen) / ((stepTimes.at(-1) - stepTimes[0]) / 1000) : r.tokensPerSecond;
        $('speed').textContent = `${formatSpeed(recent)} on ${threadsText(engine.info.threads)}`;
        const eta = (r.elapsed / r.step) * (r.totalSteps - r.step);
        say(status, `Step ${r.step} of ${r.totalSteps} · loss ${r.loss.toFixed(3)} · about ${formatDuration(eta)} left`, 'busy');
        // The visible line changes every step; screen readers hear a quarter at a time.
        const quarter = Math.floor((4 * r.step) / r.totalSteps);
        if (quarter > announced && r.step < r.totalSteps) {
          announced = quarter;
          announce.textContent = `Training ${quarter * 25}% done, loss ${r.loss.toFixed(2)}.`;
        }
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
    updateButtons();
    const summary = await run.done;
    const held = summary.evalLoss !== null && summary.evalLossBefore !== null
      ? `; held-out loss ${summary.evalLossBefore.toFixed(3)} → ${summary.evalLoss.toFixed(3)}`
      : '';
    const text = `Training finished: ${summary.steps} steps in ${formatDuration(summary.seconds)}, `
      + `loss ${state.losses[0]?.toFixed(3)} → ${summary.trainLoss.toFixed(3)}${held}.`;
    say(status, text, 'ok');
    announce.textContent = text;
    if (stepTimes.length > 2) rememberLoadedSpeed(v.seqLen, ((stepTimes.length - 1) * v.batchSize * v.seqLen) / ((stepTimes.at(-1) - stepTimes[0]) / 1000));
  } catch (err) {
    if (err?.name === 'AbortError') {
      say(status, `Stopped after step ${lastStep}. The adapter keeps what it learnt so far.`, 'ok');
      announce.textContent = status.textContent;
    } else {
      showError(status, err, 'train');
      announce.textContent = explainError(err, 'train').summary;
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
    state.savedTrained = false;
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
  // Loaded copies are cheap to make again; the trained adapter may not be saved yet, so it is kept.
  if (previous && previous !== adapter && previous !== state.trained) await state.engine?.freeAdapter(previous).catch(() => {});
  $('adapter-in-use').textContent = `Comparing with ${label} (rank ${adapter.rank}, ${fmt(adapter.parameters)} trained parameters).`;
  updateButtons();
}

/** Streams one generation into an output element, after what the person asked. */
async function generateInto(output, shown, prompt, options) {
  const continuation = h('span', { className: 'continuation' });
  output.replaceChildren(h('strong', { textContent: shown }), chatMode() ? '\n' : '', continuation);
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
  const checked = checkGeneration(rawGeneration());
  if (!checked.values) {
    refreshGuidance();
    return;
  }
  const { maxTokens, temperature } = checked.values;
  const shown = $('prompt').value;
  const options = { maxTokens, temperature, topK: temperature > 0 ? 40 : 0, seed: GENERATION_SEED };
  setBusy(true);
  say($('compare-status'), '', '');
  try {
    const prompt = chatMode()
      ? await state.engine.applyChatTemplate([{ role: 'user', content: shown }], { addGenerationPrompt: true })
      : shown;
    $('prompt-preview').textContent = prompt;
    await generateInto($('out-base'), shown, prompt, options);
    if (state.current) await generateInto($('out-tuned'), shown, prompt, { ...options, adapter: state.current });
    else $('out-tuned').textContent = 'Train an adapter (step 3) or use a saved one (step 5) to see the difference.';
  } catch (err) {
    showError($('compare-status'), err, 'generate');
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
    $('no-adapters').textContent = 'Load a model to see your saved adapters.';
    $('no-adapters').hidden = false;
    return;
  }
  let list = [];
  try {
    list = await state.engine.adapters.list();
  } catch (err) {
    showError($('adapters-status'), err, 'storage');
  }
  body.replaceChildren(...list.map(adapterRow));
  $('no-adapters').textContent = 'No saved adapters yet.';
  $('no-adapters').hidden = list.length > 0;
  updateButtons();
}

/** Trained layers in a few words: "q, v", "all linear", or the first ones and how many more. @param {string[]} targets */
function targetsLabel(targets) {
  const set = new Set(targets);
  for (const all of Object.values(ALL_LINEAR)) {
    if (all.length === set.size && all.every((t) => set.has(t))) return 'all linear';
  }
  const short = targets.map((t) => t.replace(/_proj$/, ''));
  return short.length <= 3 ? short.join(', ') : `${short.slice(0, 2).join(', ')} +${short.length - 2}`;
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
  const actions = h('td', { className: 'actions-cell' }, [h('div', { className: 'actions' }, [
    button('Use', () => runAction(async () => {
      const handle = await state.engine.adapters.load(r.name);
      await useAdapter(handle, `"${r.name}"`);
      say($('adapters-status'), `Using "${r.name}". Generate in step 4 to compare.`, 'ok');
    })),
    button('Rename', () => startRename(nameCell, r.name)),
    button('Export', () => runAction(() => exportAdapter(r.name))),
    button('Delete', (b) => confirmTwice(b, 'Delete', () => runAction(async () => {
      await state.engine.adapters.delete(r.name);
      say($('adapters-status'), `Deleted "${r.name}".`, 'ok');
    }))),
  ])]);
  const created = new Date(r.created);
  const cell = (label, props, children = []) => {
    const td = h('td', props, children);
    td.dataset.label = label;
    return td;
  };
  const targets = r.targets ?? [];
  return h('tr', {}, [
    nameCell,
    cell('Base model', { textContent: shortName(r.baseModel), title: r.baseModel ?? '' }),
    cell('Rank', { textContent: r.rank ?? '–' }),
    cell('Trained layers', { textContent: targetsLabel(targets), title: targets.join(', ') }),
    cell('Size', { textContent: formatBytes(r.sizeBytes) }),
    cell('Created', {}, [h('time', { dateTime: created.toISOString(), textContent: created.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) })]),
    cell('Steps', { textContent: r.steps ?? '–' }),
    cell('Final loss', { textContent: typeof r.finalLoss === 'number' ? r.finalLoss.toFixed(3) : '–' }),
    actions,
  ]);
}

/** Runs an adapter action with the page marked busy and errors shown. @param {() => Promise<void>} fn */
async function runAction(fn, task = /** @type {'storage' | 'import'} */ ('storage')) {
  if (state.busy) return;
  setBusy(true);
  try {
    await fn();
  } catch (err) {
    showError($('adapters-status'), err, task);
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
  let saved = false;
  try {
    const record = await state.engine.adapters.save(name, adapter, { overwrite });
    say(status, `Saved "${record.name}" (${formatBytes(record.sizeBytes)}) in this browser.`, 'ok');
    if (adapter === state.trained) state.savedTrained = true;
    saved = true;
  } catch (err) {
    if (err instanceof AlreadyExistsError || err?.name === 'AlreadyExistsError') {
      const replace = h('button', { type: 'button', textContent: 'Replace it', className: 'small danger' });
      replace.addEventListener('click', () => saveAdapter(true));
      status.dataset.kind = 'error';
      status.replaceChildren(`An adapter named "${name}" already exists. Choose another name, or `, replace);
    } else {
      showError(status, err, 'save');
    }
  } finally {
    setBusy(false);
  }
  if (saved) await protectStorage();
  await refreshAdapters();
  await refreshStorage();
}

/**
 * After the first save, asks the browser to keep this site's data when space runs low, and says why and what it
 * answered. Browsers decide by themselves (an installed app or a bookmarked site is usually granted).
 */
async function protectStorage() {
  const storage = navigator.storage;
  if (!storage?.persist || !storage.persisted || prefs.get('persist-asked')) return;
  if (await storage.persisted()) return;
  prefs.set('persist-asked', '1');
  const note = $('persist-note');
  note.hidden = false;
  note.textContent = 'Browsers may clear a site\'s data when the disk runs low. To keep your adapters, this page asked the browser to protect it…';
  const granted = await storage.persist().catch(() => false);
  note.textContent = granted
    ? 'Your adapters are protected: this browser will not clear them to free space (you still can, in its site settings).'
    : 'This browser did not agree to protect this site\'s data yet: it may clear it when the disk runs low. Installing the app '
      + 'usually changes that. Export the adapters you want to keep for sure.';
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
    // An adapter made elsewhere may name another base model than the one loaded: say so, it still loaded.
    const doubt = record.baseModelCheck?.level === 'warning' ? ` Careful: ${record.baseModelCheck.message}.` : '';
    say($('adapters-status'), `Imported "${record.name}" (rank ${record.rank}, ${formatBytes(record.sizeBytes)}).${doubt}`, doubt ? 'error' : 'ok');
  }, 'import');
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

/** @param {boolean} busy @param {{ training?: boolean, loading?: boolean }} [opts] */
function setBusy(busy, opts = {}) {
  state.busy = busy;
  document.body.toggleAttribute('data-busy', busy);
  $('stop').disabled = !(busy && opts.training);
  updateButtons();
}

function updateButtons() {
  const ready = !!state.engine && !state.busy;
  $('load-model').disabled = state.busy;
  const blocker = trainBlocker();
  $('train').disabled = !!blocker || !!state.run;
  $('train-why').textContent = state.run ? '' : blocker;
  const genBlocker = !state.engine ? 'Load a model first (step 1).' : state.busy ? 'Wait for the current task to finish.'
    : state.generation && !state.generation.values ? 'Fix the setting marked above.' : '';
  $('generate').disabled = !ready || !!genBlocker;
  $('generate-why').textContent = genBlocker;
  $('save-adapter').disabled = !ready || !(state.current ?? state.trained);
  $('import-files').disabled = !ready;
  for (const b of document.querySelectorAll('#adapters-body button')) b.disabled = !ready;
}

/** Files dropped on `zone` go to `onDrop`; the zone shows when something is held over it. */
function dropZone(zone, onDrop) {
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('dragging');
    if (e.dataTransfer?.files?.length) onDrop(e.dataTransfer);
  });
}

function wire() {
  $('model-choices').addEventListener('click', (e) => {
    // The whole card selects its model, not only the radio and its name.
    const radio = e.target.closest?.('.choice')?.querySelector('input[type="radio"]');
    if (radio && !radio.checked && e.target !== radio) {
      radio.checked = true;
      radio.dispatchEvent(new Event('change', { bubbles: true }));
    }
  });
  $('model-choices').addEventListener('change', (e) => {
    if (e.target.name !== 'model') return;
    state.choice = e.target.value;
    $('address-panel').hidden = state.choice !== 'address';
    $('files-panel').hidden = state.choice !== 'files';
    updateButtons();
  });
  $('hub-base').addEventListener('change', () => {
    const parsed = parseHubBase($('hub-base').value);
    fieldMessage('hub-base', 'error' in parsed ? parsed.error : '', 'error');
    if ('error' in parsed) return;
    state.hub = parsed.url;
    $('hub-base').value = parsed.url;
    prefs.set('hub', parsed.url);
    refreshCached();
  });
  $('model-address').addEventListener('input', () => fieldMessage('model-address', '', ''));
  $('load-model').addEventListener('click', () => {
    // Another model means other adapters: one trained here and not saved would be lost, so it takes a second click.
    if (state.trained && !state.savedTrained && Date.now() - state.discardAsked > 10_000) {
      state.discardAsked = Date.now();
      say($('model-status'), 'The adapter you trained is not saved and would be lost. Save it in step 5, or click "Load the model" again to load anyway.', 'error');
      return;
    }
    state.discardAsked = 0;
    loadModel();
  });
  $('cancel-load').addEventListener('click', () => state.loading?.abort(new DOMException('cancelled', 'AbortError')));
  $('model-folder').addEventListener('change', (e) => {
    // Only the chosen folder's own files: a Hub download's subfolders (onnx/, ...) hold other formats.
    const all = [...e.target.files];
    const top = all.filter((f) => f.webkitRelativePath.split('/').length === 2);
    const name = all[0]?.webkitRelativePath.split('/')[0] ?? 'folder';
    chooseFiles(top.length ? top : all, `folder “${name}”`);
  });
  $('model-files').addEventListener('change', (e) => chooseFiles([...e.target.files], `${e.target.files.length} chosen file${e.target.files.length === 1 ? '' : 's'}`));
  dropZone($('model-drop'), async (dt) => {
    const { files, label } = await droppedFiles(dt);
    chooseFiles(files, label);
  });

  $('train-text').addEventListener('input', onTextChanged);
  $('text-files').addEventListener('change', (e) => addTextFiles(e.target.files));
  $('use-sample').addEventListener('click', () => {
    if (!sample) return;
    $('train-text').value = sample;
    onTextChanged();
  });
  $('clear-text').addEventListener('click', () => {
    $('train-text').value = '';
    onTextChanged();
  });
  dropZone($('drop-zone'), (dt) => addTextFiles(dt.files));
  for (const radio of document.querySelectorAll('input[name="format"]')) radio.addEventListener('change', updateFormat);
  $('instruction').addEventListener('input', () => {
    state.counted = null;
    countTokensSoon();
    updateChatPreviewSoon();
  });

  for (const id of ['steps', 'lr', 'rank', 'seq-len', 'batch-size', 'max-tokens', 'temperature']) {
    $(id).addEventListener('input', refreshGuidance);
    $(id).addEventListener('change', refreshGuidance);
  }
  $('train').addEventListener('click', train);
  $('stop').addEventListener('click', stop);
  $('generate').addEventListener('click', compare);
  $('save-adapter').addEventListener('click', () => saveAdapter(false));
  $('import-files').addEventListener('change', (e) => importAdapter(e.target.files));
  addEventListener('resize', scheduleDraw);
}

/** The last model used (or ?model= / ?tokenizer= in the address) is selected again. */
function restoreChoice() {
  const hub = prefs.get('hub');
  if (hub && !('error' in parseHubBase(hub))) {
    state.hub = hub;
    $('hub-base').value = hub;
  }
  const model = params.get('model');
  const saved = prefs.get('model');
  if (model) {
    state.choice = 'address';
    $('model-address').value = new URL(model, location.href).href;
    const tok = params.get('tokenizer');
    if (tok) $('tokenizer-address').value = new URL(tok, location.href).href;
  } else if (saved?.startsWith('address:')) {
    const [url, tok = ''] = saved.slice('address:'.length).split(' ');
    state.choice = 'address';
    $('model-address').value = url;
    $('tokenizer-address').value = tok;
  } else if (saved && CATALOG.some((e) => e.id === saved)) {
    state.choice = saved;
  }
  try {
    const speed = JSON.parse(prefs.get('speed') ?? 'null');
    if (speed && speed.flopsPerSecond > 0 && typeof speed.model === 'string' && speed.parameters > 0) state.speed = speed;
  } catch { /* measured again */ }
}

/** Whether the chosen model is on this device already, so it can load without asking for the network. */
function choiceIsCached() {
  if (state.choice === 'files') return false;
  if (state.choice === 'address') {
    const parsed = parseModelAddress($('model-address').value, state.hub);
    return !('error' in parsed) && !!cachedModel(parsed.url);
  }
  const entry = CATALOG.find((e) => e.id === state.choice);
  return !!entry && !!cachedModel(entryFolder(entry));
}

async function main() {
  restoreChoice();
  wire();
  offerInstall();
  renderChoices();
  onTextChanged();
  drawLosses();
  await refreshCached();
  await refreshAdapters();
  await refreshStorage();
  offerSample();
  registerServiceWorker();
  document.body.dataset.ready = 'true';
  // A model already on this device loads without asking: no network is needed for it.
  if (choiceIsCached()) await loadModel();
  if (!state.speed || measuredOnOneThreadOnly()) measureDevice();
}

main();
