// Which files make up a model and where they are: an HF-style folder URL (config, tokenizer, one weights file or a
// shard index and its shards), a single .safetensors file or a llama2.c checkpoint. The files themselves are read
// by web/fetch/http.js.

import { FormatError, InvalidArgumentError, ModelSourceError, NetworkError, NotFoundError, throwIfAborted } from '../errors.js';
import { normalizeSha256 } from '../storage/crypto.js';
import { isCached } from './cache.js';
import { RemoteFile, gotNoAnswer, lastSegment, messageOf } from './http.js';

/**
 * @typedef {import('./cache.js').CacheOptions} CacheOptions
 * @typedef {import('./http.js').RemoteFileOptions} RemoteFileOptions
 */

/**
 * @typedef {object} PlanFile
 * @property {string} name file name relative to the model (e.g. 'config.json')
 * @property {string} url
 * @property {boolean} required whether loading must fail without it
 * @property {string} [sha256] pin from options.sha256
 * @property {RemoteFile} [opened] the file, already opened while planning (its size known): open it only once
 */

/**
 * @typedef {object} ModelPlan
 * @property {'hf' | 'safetensors' | 'llama2c'} kind
 * @property {string} base HF-style base URL (ending in '/'), or the weights URL for single-file sources
 * @property {PlanFile[]} files
 * @property {{ metadata?: Record<string, unknown>, weight_map: Record<string, string> }} [index] the validated
 *   shard index when the weights are sharded
 */


/**
 * Works out which files make up a model and where they are.
 *
 * - A URL ending in '/' (e.g. https://huggingface.co/org/model/resolve/main/) is an HF-style folder:
 *   config.json, tokenizer.json and tokenizer_config.json (both optional), and either model.safetensors or
 *   model.safetensors.index.json with its shards. The index is fetched (from the cache when it is there) and
 *   checked: every shard must be a plain file name in the same folder.
 * - A URL of a .safetensors file, or of a llama2.c .bin checkpoint; options.tokenizerUrl and options.configUrl
 *   add those files.
 * @param {string | URL} source
 * @param {Omit<RemoteFileOptions, 'sha256' | 'file' | 'base'> & CacheOptions & { tokenizerUrl?: string,
 *   configUrl?: string, sha256?: Record<string, string> }} [options] sha256 maps file names to pins; the rest
 *   is passed to RemoteFile.open for the index
 * @returns {Promise<ModelPlan>}
 */
export async function resolveModelSource(source, options = {}) {
  if (typeof source !== 'string' && !(source instanceof URL)) {
    throw new InvalidArgumentError('resolveModelSource: source must be a URL string');
  }
  const { tokenizerUrl, configUrl, sha256: pins = {}, ...fileOptions } = options;
  throwIfAborted(fileOptions.signal);
  const url = new URL(String(source), /** @type {any} */ (globalThis).location?.href);
  /** @param {string} name @param {string} href @param {boolean} required @returns {PlanFile} */
  const file = (name, href, required) => (pins[name] ? { name, url: href, required, sha256: normalizeSha256(pins[name]) } : { name, url: href, required });
  const extras = () => [
    ...(configUrl ? [file(lastSegment(configUrl), new URL(configUrl, url).href, true)] : []),
    ...(tokenizerUrl ? [file(lastSegment(tokenizerUrl), new URL(tokenizerUrl, url).href, true)] : []),
  ];
  const path = url.pathname;
  if (path.endsWith('/')) {
    const base = url.href;
    const at = (/** @type {string} */ name) => new URL(encodeURIComponent(name), base).href;
    const files = [
      file('config.json', at('config.json'), true),
      file('tokenizer.json', at('tokenizer.json'), false),
      file('tokenizer_config.json', at('tokenizer_config.json'), false),
    ];
    const indexName = 'model.safetensors.index.json';
    const indexUrl = at(indexName);
    const singleUrl = at('model.safetensors');
    /**
     * Opens a weights file, or null when the server has none. The first request to the server: one that does not
     * answer at all is reported after one quick retry, not after the long backoff meant for dropped downloads.
     * @param {string} name @param {string} href
     */
    const openWeights = async (name, href) => {
      try {
        return await RemoteFile.open(href, { ...fileOptions, base, file: name, sha256: pins[name], connectRetries: fileOptions.connectRetries ?? 1 });
      } catch (err) {
        if (gotNoAnswer(/** @type {any} */ (err)?.cause)) {
          throw new NetworkError(`cannot reach ${url.host} to load the model at ${base}: ${messageOf(/** @type {any} */ (err).cause.cause)}`, {
            code: 'UNREACHABLE', cause: err, details: { url: base, host: url.host },
          });
        }
        if (err instanceof NotFoundError) return null;
        throw err;
      }
    };
    // A cached model plans without the network. Otherwise the single file comes first: most small models are one
    // file, and its size is needed anyway, so the sharded index is asked for (and a browser logs the 404 of the
    // other one) only for models without a model.safetensors.
    let sharded;
    if (await isCached(indexUrl, fileOptions)) sharded = true;
    else if (await isCached(singleUrl, fileOptions)) sharded = false;
    if (sharded === false) {
      files.push(file('model.safetensors', singleUrl, true));
      return { kind: 'hf', base, files };
    }
    if (sharded === undefined) {
      const single = await openWeights('model.safetensors', singleUrl);
      if (single) {
        files.push({ ...file('model.safetensors', singleUrl, true), opened: single });
        return { kind: 'hf', base, files };
      }
    }
    const indexFile = await openWeights(indexName, indexUrl);
    if (!indexFile) {
      // Nothing to load here: say first whether there is a model folder at all (config.json is what every one has).
      const config = await openWeights('config.json', at('config.json'));
      if (!config) {
        throw new NotFoundError(`there is no model at ${base}: config.json was not found (HTTP 404)`, { details: { url: at('config.json') } });
      }
      throw new NotFoundError(`${base} has no model weights: neither model.safetensors nor ${indexName} was found (HTTP 404)`, {
        details: { url: singleUrl },
      });
    }
    const index = validateIndex(await indexFile.json(), indexUrl);
    files.push(file(indexName, indexUrl, true));
    for (const shard of new Set(Object.values(index.weight_map))) files.push(file(shard, at(shard), true));
    return { kind: 'hf', base, files, index };
  }
  const name = lastSegment(url.href);
  if (/\.safetensors$/i.test(path)) {
    return { kind: 'safetensors', base: url.href, files: [file(name, url.href, true), ...extras()] };
  }
  if (/\.bin$/i.test(path)) {
    return { kind: 'llama2c', base: url.href, files: [file(name, url.href, true), ...extras()] };
  }
  throw new ModelSourceError(`cannot tell what ${url.href} is: use a folder URL ending in "/" (e.g. https://huggingface.co/<org>/<model>/resolve/main/), a .safetensors URL or a llama2.c .bin URL`, {
    code: 'BAD_SOURCE', details: { url: url.href },
  });
}

/**
 * Checks a parsed model.safetensors.index.json. Shard names come from a downloaded file, so they must not be
 * able to point anywhere but into the model's own folder.
 * @param {unknown} json
 * @param {string} url for messages
 * @returns {{ metadata?: Record<string, unknown>, weight_map: Record<string, string> }}
 */
export function validateIndex(json, url) {
  const bad = (/** @type {string} */ why) => new FormatError(`${url}: ${why}`, { details: { url } });
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw bad('not a JSON object');
  const { weight_map: map, metadata } = /** @type {any} */ (json);
  if (!map || typeof map !== 'object' || Array.isArray(map)) throw bad('"weight_map" is missing or not an object');
  if (metadata !== undefined && (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))) {
    throw bad('"metadata" is not an object');
  }
  const entries = Object.entries(map);
  if (entries.length === 0) throw bad('"weight_map" is empty');
  for (const [tensor, shard] of entries) {
    if (typeof shard !== 'string' || !isPlainFileName(shard) || !/\.safetensors$/i.test(shard)) {
      throw bad(`weight_map["${tensor}"] = ${JSON.stringify(shard)} is not a .safetensors file name in the same folder`);
    }
  }
  return metadata === undefined ? { weight_map: { ...map } } : { metadata: { ...metadata }, weight_map: { ...map } };
}

/** @param {string} name */
function isPlainFileName(name) {
  return name.length > 0 && name.length <= 255 && name !== '.' && name !== '..' && !name.startsWith('.')
    && !/[/\\:%?#\u0000-\u001f\u007f]/.test(name);
}
