// identity.js: which model a source or a name refers to. One normalisation (modelRef) for model sources (URLs,
// paths, Files) and for PEFT's base_model_name_or_path / revision, and its way back from a Hub id to the files'
// URLs (sourceKind, hubFolderUrl); the loaded model's reference built from
// everything that names it (loadedModelRef); what exported adapters record as their base (recordedBase); and the
// comparison an imported adapter's named base gets against the loaded model (checkAdapterBase). Weights decide in
// the end: a matching base fingerprint settles it; names can only raise a doubt.

import { InvalidArgumentError } from '../errors.js';

const HUB_HOSTS = new Set(['huggingface.co', 'www.huggingface.co', 'hf.co']);
/** Path segments after <org>/<name> in a Hub file URL (…/org/name/resolve/<revision>/file). */
const HUB_FILE_ROUTES = new Set(['resolve', 'blob', 'raw', 'tree']);
// A Hugging Face repository id: "name" (legacy models such as gpt2) or "org/name"; letters, digits, - _ .
const HUB_ID = /^[A-Za-z0-9][\w.-]*(?:\/[A-Za-z0-9][\w.-]*)?$/;
// A folder of the Hugging Face cache: models--<org>--<name>/snapshots/<commit>.
const HF_CACHE = /(?:^|[\\/])models--([\w.-]+?)--([\w.-]+)[\\/]snapshots[\\/]([0-9a-f]{40})(?:[\\/]|$)/;
// Weight and config files whose name says nothing about the model (the folder above them does).
const GENERIC_FILE = /^(?:model|pytorch_model|adapter_model|config|tokenizer|model-\d+-of-\d+|pytorch_model-\d+-of-\d+)\.(?:safetensors|bin|json|pt|pth|gguf)$|\.safetensors\.index\.json$/i;
const MODEL_FILE = /\.(?:safetensors|bin|json|pt|pth|gguf)$/i;

/**
 * What a model source or a recorded base name says about which model it is.
 * @typedef {object} ModelRef
 * @property {string} text the source as given (credentials removed from URLs), for messages
 * @property {string | null} hubId Hugging Face repository id ("org/name" or a legacy "name"), when known
 * @property {string | null} revision branch, tag or commit, when the source names one
 * @property {string | null} url an http(s) source without credentials, query or fragment
 * @property {string[]} folders the folder names leading to the model (URL path or local path, file names dropped)
 * @property {string[]} names what the model may be called: the Hub id's last part, the last folder, a checkpoint
 *   file's stem (stories260K.bin), folders inside a Hub repository
 */

/** @param {string} s */
function decode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A folder list without its last entry when that is a file, and the names it gives the model. */
function foldersAndNames(segments) {
  const folders = segments.filter((s) => s && s !== '.');
  const last = folders[folders.length - 1];
  // A checkpoint named after its model (stories260K.bin) names it; model.safetensors does not.
  const file = last && MODEL_FILE.test(last) ? /** @type {string} */ (folders.pop()) : null;
  const names = folders.length ? [folders[folders.length - 1]] : [];
  if (file && !GENERIC_FILE.test(file)) names.unshift(file.replace(MODEL_FILE, ''));
  return { folders, names };
}

/**
 * Normalise a model source or a recorded base name: a Hugging Face URL on the Hub or a mirror with its layout
 * (…/<org>/<name>/resolve/<revision>/…) gives the Hub id and revision; a folder of the Hugging Face cache
 * (models--<org>--<name>/snapshots/<commit>) too; another URL keeps its path; a bare "org/name" is a Hub id
 * (unless `path` says the string is a local path); anything else is a local path, named by its last folder.
 * @param {unknown} value a string or URL; anything else, or an empty string, gives null
 * @param {{ path?: boolean }} [options] path: the string is a local path (a model source), never a Hub id
 * @returns {ModelRef | null}
 */
export function modelRef(value, options = {}) {
  const raw = value instanceof URL ? value.href : typeof value === 'string' ? value.trim() : '';
  if (!raw) return null;
  if (/^https?:\/\//i.test(raw)) {
    let url;
    try {
      url = new URL(raw);
    } catch {
      return { text: raw, hubId: null, revision: null, url: null, folders: [], names: [] };
    }
    url.username = '';
    url.password = '';
    url.search = '';
    url.hash = '';
    const segments = url.pathname.split('/').filter(Boolean).map(decode);
    const route = segments.findIndex((s, i) => i >= 2 && HUB_FILE_ROUTES.has(s));
    const onHub = HUB_HOSTS.has(url.hostname.toLowerCase());
    if (route >= 2 && !(onHub && ['datasets', 'spaces'].includes(segments[0]))) {
      // Files inside the repository may be models of their own (tinyllamas/…/stories260K.bin).
      const inside = foldersAndNames(segments.slice(route + 2)).names;
      return { text: url.href, hubId: `${segments[route - 2]}/${segments[route - 1]}`, revision: segments[route + 1] ?? null,
        url: url.href, folders: segments.slice(0, route), names: [segments[route - 1], ...inside] };
    }
    if (onHub && (segments.length === 1 || segments.length === 2) && HUB_ID.test(segments.join('/'))) {
      return { text: url.href, hubId: segments.join('/'), revision: null, url: url.href, folders: segments, names: [segments[segments.length - 1]] };
    }
    return { text: url.href, hubId: null, revision: null, url: url.href, ...foldersAndNames(segments) };
  }
  const cached = HF_CACHE.exec(raw);
  if (cached) {
    return { text: raw, hubId: `${cached[1]}/${cached[2]}`, revision: cached[3], url: null, folders: [], names: [cached[2]] };
  }
  if (!options.path && HUB_ID.test(raw) && !raw.includes('--') && !raw.includes('..')) {
    return { text: raw, hubId: raw, revision: null, url: null, folders: raw.split('/'), names: [/** @type {string} */ (raw.split('/').pop())] };
  }
  return { text: raw, hubId: null, revision: null, url: null, ...foldersAndNames(raw.split(/[\\/]+/).filter((s) => !/^[A-Za-z]:$/.test(s))) };
}

/**
 * How a model source given as a string reads: 'url' (absolute, with a scheme), 'hub' (a Hugging Face id
 * "org/name": two parts, and the second not a model file such as "models/model.bin"), or 'relative' (a path in
 * Node, a URL relative to the page or worker in browsers).
 * @param {string} text
 * @returns {'url' | 'hub' | 'relative'}
 */
export function sourceKind(text) {
  // Two letters at least before the colon, so a Windows drive (C:\models) is a path.
  if (/^[a-z][a-z0-9+.-]+:/i.test(text)) return 'url';
  if (HUB_ID.test(text) && text.includes('/') && !text.includes('--') && !text.includes('..') && !MODEL_FILE.test(text)) return 'hub';
  return 'relative';
}

/**
 * The folder URL of a Hub repository's files at a revision, on the Hub or a mirror with its layout.
 * @param {string} hubId "org/name"
 * @param {{ revision?: string, host?: string | URL }} [options] revision: branch, tag or commit (default main);
 *   host: the Hub or a mirror (default https://huggingface.co/), maybe with a path prefix
 */
export function hubFolderUrl(hubId, { revision = 'main', host = 'https://huggingface.co/' } = {}) {
  let base;
  try {
    base = new URL(String(host));
  } catch {
    throw new InvalidArgumentError(`remoteHost must be an absolute http(s) URL, got ${JSON.stringify(String(host))}`);
  }
  if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new InvalidArgumentError(`remoteHost must be an http(s) URL, got ${base.href}`);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  const repo = hubId.split('/').map(encodeURIComponent).join('/');
  return new URL(`${repo}/resolve/${encodeURIComponent(revision)}/`, base).href;
}

/**
 * The ModelRef of what LocalEngine.load was given: a URL, a local path (Node), or Files whose relative path
 * (a picked folder) names their folder. Bytes and unnamed files say nothing: null.
 * @param {unknown} source
 * @returns {ModelRef | null}
 */
export function sourceRef(source) {
  const text = source instanceof URL ? source.href : source;
  if (typeof text === 'string' && /^https?:\/\//i.test(text)) return modelRef(text);
  // blob: and data: URLs (and file: ones) name nothing anyone else could fetch.
  if (typeof text === 'string' && /^(?:blob|data|file):/i.test(text)) return null;
  if (typeof text === 'string') return modelRef(text, { path: true });
  if (Array.isArray(source)) {
    const folder = source.map((f) => (typeof f?.webkitRelativePath === 'string' ? f.webkitRelativePath : '')).find((p) => p.includes('/'));
    if (folder) return modelRef(folder, { path: true });
  }
  return null;
}

/**
 * The loaded model's ModelRef, from everything that names it, most trusted first: load()'s baseModel option (the
 * caller's word), the source itself (a Hub URL or a Hugging Face cache folder names its id and revision; another
 * URL is a name anyone can fetch), and config.json's _name_or_path when the source names neither and it is a Hub id
 * (a folder saved by transformers names the repository it came from; a local path there says nothing). A revision
 * option replaces the revision. The source's text, folders and names stay for messages and name comparisons.
 * @param {unknown} source what LocalEngine.load was given
 * @param {{ base?: ModelRef | null, revision?: string, nameOrPath?: unknown }} [named] base: modelRef of the
 *   baseModel option; nameOrPath: config.json's _name_or_path
 * @returns {ModelRef | null}
 */
export function loadedModelRef(source, { base = null, revision, nameOrPath } = {}) {
  const own = sourceRef(source);
  let named = base;
  if (!named && !own?.hubId && !own?.url) {
    const fromConfig = modelRef(nameOrPath);
    if (fromConfig?.hubId) named = fromConfig;
  }
  let ref = own;
  if (named && own) {
    // Named as a Hub id: the source keeps its text (messages show "path (org/name)"); named by a URL: both show.
    ref = named.hubId
      ? { ...own, hubId: named.hubId, revision: named.revision, url: named.url ?? own.url, folders: named.url ? named.folders : own.folders }
      : { ...named, text: `${own.text} (${named.text})` };
    ref.names = [...new Set([...named.names, ...own.names])];
  } else if (named) ref = named;
  if (ref && revision !== undefined) ref = { ...ref, revision };
  return ref;
}

/**
 * What adapter files record as their base (PEFT's base_model_name_or_path and revision): the Hub id or the URL
 * anyone can fetch, never a local path (null when nothing better is known).
 * @param {ModelRef | null} ref
 * @returns {{ id: string | null, revision: string | null }}
 */
export function recordedBase(ref) {
  const id = ref?.hubId ?? ref?.url ?? null;
  return { id, revision: id !== null ? ref?.revision ?? null : null };
}

const isCommit = (/** @type {string} */ r) => /^[0-9a-f]{7,40}$/i.test(r);
const lower = (/** @type {string} */ s) => s.toLowerCase();

/** Whether two revisions are the same one: equal, or one commit hash abbreviating the other. */
function sameRevision(a, b) {
  if (a === b) return true;
  return isCommit(a) && isCommit(b) && (lower(a).startsWith(lower(b)) || lower(b).startsWith(lower(a)));
}

/** Hub ids are case-insensitive; a legacy id without organisation ("gpt2") is the repository it moved to. */
function sameHubId(a, b) {
  const [x, y] = [lower(a).split('/'), lower(b).split('/')];
  if (x.length === y.length) return x.join('/') === y.join('/');
  return x[x.length - 1] === y[y.length - 1];
}

/** Whether a URL or path's folders end with a Hub id's parts (a mirror keeping the Hub's layout). */
function foldersEndWith(folders, hubId) {
  const id = lower(hubId).split('/');
  const tail = folders.slice(-id.length).map(lower);
  return tail.length === id.length && tail.every((s, i) => s === id[i]);
}

/** How a ModelRef reads in a message. */
function describe(ref, revision) {
  const id = ref.hubId && ref.hubId !== ref.text ? `${ref.text} (${ref.hubId})` : ref.text;
  return revision && !ref.text.includes(revision) ? `${id} at revision ${revision}` : id;
}

/**
 * @typedef {object} BaseModelCheck how an adapter's named base compares with the loaded model
 * @property {'match'|'unverified'|'mismatch'|'unnamed'} status match: the same weights (fingerprint) or the same
 *   Hub id / URL (and revision, when both name one); unverified: nothing contradicts it but nothing proves it
 *   (a local folder of the same name, a model whose source does not say, a branch against a commit); mismatch:
 *   the names or revisions differ; unnamed: the adapter does not name its base
 * @property {'warning'|'info'|null} level how loudly to tell: warning for mismatch, info for unverified
 * @property {string | null} message
 * @property {string | null} adapterBase base_model_name_or_path as the adapter gives it
 * @property {string | null} adapterRevision the adapter's revision
 * @property {string | null} model the loaded model's source, as compared
 */

/**
 * Compare the base an adapter names (PEFT's base_model_name_or_path and revision, and weblora's base fingerprint
 * when the file has one) with the loaded model.
 * @param {{ nameOrPath?: unknown, revision?: unknown, fingerprint?: string | null }} adapter
 * @param {{ ref: ModelRef | null, fingerprint?: string | null }} model
 * @returns {BaseModelCheck}
 */
export function checkAdapterBase(adapter, model) {
  const a = modelRef(adapter.nameOrPath);
  const aRev = (typeof adapter.revision === 'string' && adapter.revision.trim()) || a?.revision || null;
  const m = model.ref;
  /** @returns {BaseModelCheck} */
  const result = (/** @type {BaseModelCheck['status']} */ status, /** @type {string | null} */ message) => ({ status, level: status === 'mismatch' ? 'warning' : status === 'unverified' ? 'info' : null,
    message, adapterBase: a?.text ?? null, adapterRevision: aRev, model: m?.text ?? null });
  if (adapter.fingerprint && model.fingerprint) {
    // The weights themselves were compared: the names cannot say otherwise.
    if (adapter.fingerprint === model.fingerprint) return result('match', null);
    return result('mismatch', `the adapter was trained on other base weights (fingerprint ${adapter.fingerprint}${a ? `, ${describe(a, aRev)}` : ''}) `
      + `than the loaded model's (fingerprint ${model.fingerprint}${m ? `, ${describe(m, m.revision)}` : ''})`);
  }
  if (!a) return result('unnamed', null);
  const named = `the adapter names its base model ${describe(a, aRev)}`;
  if (!m) {
    return result('unverified', `${named}; the loaded model came from bytes or files that do not say which model they are, so this could not be checked`);
  }
  const loaded = `the loaded model is ${describe(m, m.revision)}`;
  let same = false;
  if (a.hubId && m.hubId) same = sameHubId(a.hubId, m.hubId);
  else if (a.hubId && m.url) same = foldersEndWith(m.folders, a.hubId);
  else if (m.hubId && a.url) same = foldersEndWith(a.folders, m.hubId);
  else if (a.url && m.url) same = new URL(a.url).host === new URL(m.url).host && a.folders.join('/') === m.folders.join('/');
  if (!same) {
    // A local copy, or a URL that is not laid out like the Hub, named like the model: likely it, not provable.
    if (a.names.some((x) => m.names.some((y) => lower(x) === lower(y)))) {
      return result('unverified', `${named}; ${loaded}, which has the same name but could not be checked further`);
    }
    return result('mismatch', `${named} but ${loaded}: it may have been trained on another model (its shapes fit, so it was loaded; its outputs are only right on the model it was trained on)`);
  }
  if (aRev && m.revision && !sameRevision(aRev, m.revision)) {
    if (isCommit(aRev) !== isCommit(m.revision)) {
      return result('unverified', `${named}; ${loaded}, which may or may not be that commit`);
    }
    return result('mismatch', `${named} but ${loaded}: another revision of that model, whose weights may differ`);
  }
  if (aRev && !m.revision) return result('unverified', `${named}; ${loaded}, whose revision is not known`);
  return result('match', null);
}
