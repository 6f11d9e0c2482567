#!/usr/bin/env node
// build-corpus.js: the default model's training text, regenerated deterministically from Debian's BSD-licensed
// fortune cookie files (packages fortunes and fortunes-min) into one {"text": ...} JSON line per entry.
// Usage: node tools/default-model/build-corpus.js [--src /usr/share/games/fortunes] [--out build/default-model]
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { Rng } from '../../web/engine/rng.js';

/**
 * Files left out, and why. The offensive collection (fortunes-off) is not installed and never read.
 */
export const EXCLUDED = Object.freeze({
  'ascii-art': 'pictures drawn with punctuation, not prose',
  'translate-me': 'Latin, not English',
  ethnic: 'jokes built on ethnic stereotypes: not what a default model should learn to tell',
  zippy: 'Zippy the Pinhead non sequiturs in random capitals: they teach shouting, not English',
});

/** Every entry of the corpus has at least this share of letters among its visible characters. */
const MIN_LETTER_SHARE = 0.6;
/** Lines with fewer letters and digits than this share are drawings; entries made largely of them are dropped. */
const ART_LINE_SHARE = 0.5;
const SHUFFLE_SEED = 20240611;

// Overstrike pairs that make an accented letter (the files write "Ren'\be" for "René").
const ACCENTS = { "'": '\u0301', '`': '\u0300', '^': '\u0302', '"': '\u0308', '~': '\u0303', ',': '\u0327' };

/**
 * Resolve terminal overstriking as a printer would show it: "_\bx" (underlined x) is "x", "'\be" is "é", and
 * "____\b\b\b\bword" (a word typed over a blank) is "word".
 * @param {string} line
 */
function resolveOverstrike(line) {
  if (!line.includes('\b')) return line;
  /** @type {string[]} */
  const cells = [];
  let at = 0;
  for (const ch of line) {
    if (ch === '\b') {
      at = Math.max(0, at - 1);
      continue;
    }
    const under = cells[at];
    if (under === undefined || under === '_' || under === ' ') cells[at] = ch;
    else if (ch === '_') cells[at] = under;
    else if (ACCENTS[under] && /[a-z]/i.test(ch)) cells[at] = (ch + ACCENTS[under]).normalize('NFC');
    else if (ACCENTS[ch] && /[a-z]/i.test(under)) cells[at] = (under + ACCENTS[ch]).normalize('NFC');
    else cells[at] = ch;
    at++;
  }
  return cells.join('');
}

/**
 * Undo UTF-8 text that was decoded as Latin-1 and encoded again (one file has "donÃ¢ÂÂt" for "don't"), as many
 * times as it was applied. Text that does not decode cleanly is left alone.
 * @param {string} text
 */
function fixMojibake(text) {
  for (let round = 0; round < 3 && /[\u00c2-\u00f4][\u0080-\u00bf]/.test(text); round++) {
    if (/[^\u0000-\u00ff]/.test(text)) break;
    const fixed = Buffer.from(text, 'latin1').toString('utf8');
    if (fixed.includes('\ufffd')) break;
    text = fixed;
  }
  return text;
}

/** @param {string} s @param {RegExp} re share of characters matching re among the non-space characters */
function share(s, re) {
  const visible = s.replace(/\s+/g, '');
  if (visible.length === 0) return 0;
  return (visible.match(re)?.length ?? 0) / visible.length;
}

/**
 * One cleaned entry, or null when it is not prose. Lines lose their indentation (fortune files indent paragraphs
 * and attributions with tabs), runs of spaces become one, trailing spaces go; the line breaks stay.
 * @param {string} raw
 * @returns {string|null}
 */
export function cleanEntry(raw) {
  const text = fixMojibake(raw).replace(/\r/g, '').replace(/\x07/g, '');
  const lines = text.split('\n')
    .map((l) => resolveOverstrike(l).replace(/[\t \u00a0]+/g, ' ').trim())
    .map((l) => l.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, ''));
  // Blank lines at either end carry nothing; blank lines inside separate paragraphs or speakers.
  while (lines.length && lines[0] === '') lines.shift();
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  const cleaned = lines.join('\n').replace(/\n{3,}/g, '\n\n');
  if (cleaned.length < 8) return null;
  if (share(cleaned, /\p{L}/gu) < MIN_LETTER_SHARE) return null;
  const nonBlank = lines.filter((l) => l !== '');
  const artLines = nonBlank.filter((l) => l.length > 3 && share(l, /[\p{L}\p{N}]/gu) < ART_LINE_SHARE).length;
  if (artLines > 0.25 * nonBlank.length) return null;
  return cleaned;
}

/** Key under which two entries count as the same (case, spacing and punctuation ignored). */
function dedupeKey(text) {
  return text.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, '');
}

/**
 * @param {string} srcDir
 * @returns {Promise<{ entries: string[], stats: Record<string, { read: number, kept: number }> }>}
 */
export async function collectEntries(srcDir) {
  const names = (await readdir(srcDir)).filter((n) => !n.includes('.')).sort();
  const seen = new Set();
  /** @type {string[]} */
  const entries = [];
  /** @type {Record<string, { read: number, kept: number }>} */
  const stats = {};
  for (const name of names) {
    if (EXCLUDED[name]) continue;
    const raw = await readFile(path.join(srcDir, name), 'utf8');
    const parts = raw.split(/^%[ \t]*$/m);
    const s = { read: 0, kept: 0 };
    for (const part of parts) {
      if (part.trim() === '') continue;
      s.read++;
      const text = cleanEntry(part);
      if (text === null) continue;
      const key = dedupeKey(text);
      if (seen.has(key)) continue;
      seen.add(key);
      entries.push(text);
      s.kept++;
    }
    stats[name] = s;
  }
  // A fixed shuffle mixes the collections, so packed training sequences and the held-out split cover all of them.
  new Rng(SHUFFLE_SEED).shuffle(entries);
  return { entries, stats };
}

async function main() {
  const { values } = parseArgs({ options: {
    src: { type: 'string', default: '/usr/share/games/fortunes' },
    out: { type: 'string', default: 'build/default-model' },
  } });
  const { entries, stats } = await collectEntries(values.src);
  await mkdir(values.out, { recursive: true });
  const jsonl = entries.map((text) => JSON.stringify({ text })).join('\n') + '\n';
  const file = path.join(values.out, 'corpus.jsonl');
  await writeFile(file, jsonl);
  const chars = entries.reduce((a, t) => a + t.length, 0);
  const report = { file, entries: entries.length, characters: chars, bytes: Buffer.byteLength(jsonl), excluded: EXCLUDED, files: stats };
  await writeFile(path.join(values.out, 'corpus-stats.json'), `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`corpus: ${entries.length} entries, ${(chars / 1e6).toFixed(2)} M characters -> ${file}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
