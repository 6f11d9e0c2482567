// corpus.js: training and evaluation text of any size, tokenized as it streams. Sources are strings (one document
// each), Blobs/Files (browser; a .jsonl name means one {"text": ...} document per line, anything else is one
// document) and, in Node, { path } of a local file read in chunks. Memory holds the token ids (4 bytes each, in
// blocks) and one chunk of text, never the whole corpus; progress is reported as bytes are read.
import { node } from '#platform';
import { DataError, throwIfAborted } from '../errors.js';
import { DocumentEncoder, TokenBuffer } from './data.js';

const READ_CHUNK = 1 << 20;

/**
 * @typedef {string | Blob | { path: string, name?: string }} CorpusSource
 * @typedef {{ status: 'tokenize', loaded: number, total: number, tokens: number, documents: number, file: string }} TokenizeProgress
 */

/** @param {unknown} s @returns {boolean} a source read in chunks (not an in-memory string) */
export function isStreamedSource(s) {
  return (!!globalThis.Blob && s instanceof globalThis.Blob) || (!!s && typeof s === 'object' && typeof (/** @type {any} */ (s).path) === 'string');
}

/** @param {Exclude<CorpusSource, string>} s */
function sourceName(s) {
  return /** @type {any} */ (s).name || /** @type {any} */ (s).path || 'data';
}

/**
 * Bytes of a source in chunks, with its size.
 * @param {Exclude<CorpusSource, string>} s
 * @returns {Promise<{ size: number, chunks: AsyncIterable<Uint8Array> }>}
 */
async function openBytes(s) {
  if (globalThis.Blob && s instanceof globalThis.Blob) {
    const reader = s.stream().getReader();
    return {
      size: s.size,
      chunks: (async function* read() {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          yield value;
        }
      })(),
    };
  }
  const { path } = /** @type {{ path: string }} */ (s);
  if (!node) throw new DataError(`data given as { path: ${JSON.stringify(path)} } can only be read in Node: pass strings or Files`);
  let size;
  try {
    size = (await node.fs.stat(path)).size;
  } catch (err) {
    throw new DataError(`cannot read data file ${sourceName(s)}: ${/** @type {any} */ (err).code === 'ENOENT' ? 'no such file' : /** @type {Error} */ (err).message}`);
  }
  return { size, chunks: node.createReadStream(path, { highWaterMark: READ_CHUNK }) };
}

/**
 * Tokenizes sources into one token stream.
 * @param {{ encode(text: string): number[], bosId: number|null, eosId: number|null, addsBos: boolean }} tokenizer
 * @param {CorpusSource | CorpusSource[]} sources
 * @param {{ vocabSize?: number, onProgress?: (p: TokenizeProgress) => void, signal?: AbortSignal }} [options]
 * @returns {Promise<{ buffer: TokenBuffer, documents: number, bytes: number }>}
 */
export async function tokenizeCorpus(tokenizer, sources, options = {}) {
  const list = Array.isArray(sources) ? sources : [sources];
  const buffer = new TokenBuffer();
  const enc = new DocumentEncoder(tokenizer, buffer, options.vocabSize);
  let bytes = 0;
  const streamed = list.filter(isStreamedSource);
  const opened = new Map();
  for (const s of streamed) opened.set(s, await openBytes(/** @type {any} */ (s)));
  const total = [...opened.values()].reduce((a, o) => a + o.size, 0);
  let lastReport = -Infinity;
  const report = (file, force = false) => {
    if (!options.onProgress || (!force && bytes - lastReport < READ_CHUNK)) return;
    lastReport = bytes;
    options.onProgress({ status: 'tokenize', loaded: bytes, total, tokens: buffer.length, documents: enc.documents, file });
  };
  for (const [i, s] of list.entries()) {
    throwIfAborted(options.signal);
    if (typeof s === 'string') {
      enc.write(s);
      enc.end();
      continue;
    }
    if (!isStreamedSource(s)) throw new DataError(`document ${i} is a ${typeof s}, not a string, a Blob or a { path }`);
    const name = sourceName(/** @type {any} */ (s));
    const jsonl = /\.jsonl$/i.test(name);
    // TextDecoder drops a leading UTF-8 byte order mark, as a data file written by Windows tools may have.
    const decoder = new TextDecoder();
    let line = 1;
    let partial = '';
    const takeLines = (/** @type {string} */ text, /** @type {boolean} */ last) => {
      partial += text;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0 || (last && partial !== '')) {
        const raw = nl >= 0 ? partial.slice(0, nl) : partial;
        partial = nl >= 0 ? partial.slice(nl + 1) : '';
        jsonlDocument(enc, raw, name, line++);
      }
    };
    for await (const chunk of opened.get(s).chunks) {
      throwIfAborted(options.signal);
      bytes += chunk.byteLength;
      const text = decoder.decode(chunk, { stream: true });
      if (jsonl) takeLines(text, false);
      else enc.write(text);
      report(name);
      // Let progress events and abort messages through between chunks.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    const tail = decoder.decode();
    if (jsonl) takeLines(tail, true);
    else {
      enc.write(tail);
      enc.end();
    }
    report(name, true);
  }
  if (enc.documents === 0) {
    throw new DataError(streamed.length ? `the data file${streamed.length > 1 ? 's are' : ' is'} empty (no document has any text)`
      : 'the training data is empty (no document has any text)');
  }
  return { buffer, documents: enc.documents, bytes };
}

/**
 * One line of a .jsonl file: a {"text": ...} document, or blank.
 * @param {DocumentEncoder} enc @param {string} raw @param {string} name @param {number} line
 */
function jsonlDocument(enc, raw, name, line) {
  const text = raw.replace(/^\uFEFF/, '');
  if (text.trim() === '') return;
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new DataError(`${name}:${line}: not a JSON object`);
  }
  if (!doc || typeof doc.text !== 'string') throw new DataError(`${name}:${line}: needs a "text" string`);
  enc.write(doc.text);
  enc.end();
}
