#!/usr/bin/env node
// train-tokenizer.js: learns a GPT-2 style byte-level BPE tokenizer on a .jsonl corpus and writes tokenizer.json
// (loadable by @huggingface/tokenizers and transformers) and tokenizer_config.json.
// Usage: node tools/default-model/train-tokenizer.js --data corpus.jsonl --vocab 4096 --out DIR [--max-length 256]
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { ByteLevelPreTokenizer } from '@huggingface/tokenizers';

export const EOS = '<|endoftext|>';

/** GPT-2's byte-to-character table: printable bytes map to themselves, the rest to code points from U+0100 up. */
export function bytesToUnicode() {
  const printable = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable.includes(b) ? b : 256 + extra++);
  return table;
}

/**
 * A binary max-heap of merge candidates: higher count first, then the smaller pair key, so equal counts always
 * merge in the same order. Entries go stale when a count changes; pop() callers re-check them.
 */
class PairHeap {
  constructor() {
    /** @type {number[]} */ this.counts = [];
    /** @type {number[]} */ this.keys = [];
  }

  get size() { return this.keys.length; }

  above(i, j) {
    const c = this.counts;
    return c[i] > c[j] || (c[i] === c[j] && this.keys[i] < this.keys[j]);
  }

  swap(i, j) {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }

  push(count, key) {
    this.counts.push(count);
    this.keys.push(key);
    for (let i = this.keys.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** @returns {{ count: number, key: number }} */
  pop() {
    const top = { count: this.counts[0], key: this.keys[0] };
    const last = this.keys.length - 1;
    this.swap(0, last);
    this.counts.pop();
    this.keys.pop();
    for (let i = 0; ;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < this.keys.length && this.above(l, m)) m = l;
      if (r < this.keys.length && this.above(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
}

// Pairs of symbol ids packed into one number (ids stay below 2^16).
const pairKey = (a, b) => a * 65536 + b;

/**
 * Learn BPE merges over pre-tokenized words.
 * @param {Map<string, number>} wordCounts byte-level word -> occurrences
 * @param {{ vocabSize: number, minFrequency?: number, onProgress?: (n: number, count: number) => void }} opts
 * @returns {{ vocab: string[], merges: [string, string][] }} vocab[id] (id 0 is the special token)
 */
export function learnBpe(wordCounts, { vocabSize, minFrequency = 2, onProgress }) {
  const byteChars = bytesToUnicode();
  const vocab = [EOS, ...byteChars];
  const idOf = new Map(vocab.map((t, i) => [t, i]));
  /** @type {[string, string][]} */
  const merges = [];
  // Words sorted for a deterministic order whatever the Map's insertion history.
  const entries = [...wordCounts.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const words = entries.map(([w]) => Array.from(w, (ch) => idOf.get(ch)));
  const freq = entries.map(([, c]) => c);
  /** @type {Map<number, number>} */
  const pairCount = new Map();
  /** @type {Map<number, Set<number>>} */
  const pairWords = new Map();
  const addPairs = (wi, sign) => {
    const w = words[wi];
    for (let i = 0; i + 1 < w.length; i++) {
      const k = pairKey(w[i], w[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * freq[wi]);
      if (sign > 0) {
        let s = pairWords.get(k);
        if (!s) pairWords.set(k, (s = new Set()));
        s.add(wi);
      }
    }
  };
  words.forEach((_, wi) => addPairs(wi, 1));
  const heap = new PairHeap();
  for (const [k, c] of pairCount) heap.push(c, k);

  while (vocab.length < vocabSize && heap.size > 0) {
    const { count, key } = heap.pop();
    if (pairCount.get(key) !== count) continue; // stale entry; the current count was pushed separately
    if (count < minFrequency) break;
    const a = Math.floor(key / 65536), b = key % 65536;
    const merged = vocab[a] + vocab[b];
    let id = idOf.get(merged);
    if (id === undefined) {
      id = vocab.length;
      vocab.push(merged);
      idOf.set(merged, id);
    }
    merges.push([vocab[a], vocab[b]]);
    const touched = new Set();
    for (const wi of pairWords.get(key) ?? []) {
      const w = words[wi];
      // Remove the word's pairs, merge left to right, add its pairs back: words are short, so this is cheap and
      // handles overlapping runs ("aaa") without special cases.
      for (let i = 0; i + 1 < w.length; i++) touched.add(pairKey(w[i], w[i + 1]));
      addPairs(wi, -1);
      const out = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          out.push(id);
          i++;
        } else out.push(w[i]);
      }
      words[wi] = out;
      addPairs(wi, 1);
      for (let i = 0; i + 1 < out.length; i++) touched.add(pairKey(out[i], out[i + 1]));
    }
    pairWords.delete(key);
    pairCount.delete(key);
    touched.delete(key);
    for (const k of [...touched].sort((x, y) => x - y)) {
      const c = pairCount.get(k) ?? 0;
      if (c > 0) heap.push(c, k);
      else {
        pairCount.delete(k);
        pairWords.delete(k);
      }
    }
    onProgress?.(merges.length, count);
  }
  return { vocab, merges };
}

/**
 * Count the byte-level words of documents as the tokenizer's own pre-tokenizer splits them (GPT-2 regex), so
 * the merges are learned on exactly the pieces encoding will see.
 * @param {string[]} texts
 */
export function countWords(texts) {
  const pre = new ByteLevelPreTokenizer({ add_prefix_space: false, trim_offsets: true, use_regex: true });
  /** @type {Map<string, number>} */
  const counts = new Map();
  for (const t of texts) {
    for (const w of pre.pre_tokenize_text(t)) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  return counts;
}

/**
 * tokenizer.json in the layout of GPT-2's (model BPE, ByteLevel pre-tokenizer, post-processor and decoder).
 * @param {{ vocab: string[], merges: [string, string][] }} bpe
 */
export function tokenizerJson({ vocab, merges }) {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 0, content: EOS, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
      merges,
    },
  };
}

/** tokenizer_config.json: one special token that ends (and so separates) documents; no BOS is added. */
export function tokenizerConfig(maxLength) {
  return {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: {
      0: { content: EOS, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    },
    bos_token: EOS,
    eos_token: EOS,
    unk_token: null,
    pad_token: null,
    clean_up_tokenization_spaces: false,
    model_max_length: maxLength,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
}

/** @param {string} file @returns {Promise<string[]>} */
export async function readJsonl(file) {
  const text = await readFile(file, 'utf8');
  return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l).text);
}

async function main() {
  const { values } = parseArgs({ options: {
    data: { type: 'string', default: 'build/default-model/corpus.jsonl' },
    vocab: { type: 'string', default: '4096' },
    'min-frequency': { type: 'string', default: '2' },
    'max-length': { type: 'string', default: '256' },
    out: { type: 'string', default: 'build/default-model/tokenizer' },
  } });
  const vocabSize = Number(values.vocab);
  if (!Number.isInteger(vocabSize) || vocabSize < 258 || vocabSize > 65536) throw new Error('--vocab must be an integer in 258..65536');
  const started = performance.now();
  const texts = await readJsonl(values.data);
  const counts = countWords(texts);
  const bpe = learnBpe(counts, {
    vocabSize, minFrequency: Number(values['min-frequency']),
    onProgress: (n, c) => {
      if (n % 500 === 0) process.stderr.write(`  ${n} merges (last pair seen ${c} times)\n`);
    },
  });
  await mkdir(values.out, { recursive: true });
  await writeFile(path.join(values.out, 'tokenizer.json'), `${JSON.stringify(tokenizerJson(bpe))}\n`);
  await writeFile(path.join(values.out, 'tokenizer_config.json'),
    `${JSON.stringify(tokenizerConfig(Number(values['max-length'])), null, 2)}\n`);
  const secs = (performance.now() - started) / 1000;
  process.stdout.write(`tokenizer: ${bpe.vocab.length} tokens (${bpe.merges.length} merges) from ${counts.size} distinct words `
    + `in ${secs.toFixed(1)} s -> ${values.out}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
