// Data far larger than a training run needs: a 200 MB text file (written here, in a temporary folder) trains a step
// through the CLI with bounded memory (the token ids, 4 bytes each, and little more), reports tokenization progress
// as it streams, and evaluates a held-out split capped at the evaluation budget.
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Rng } from '../../web/engine/rng.js';
import { repoRoot, sharedPath } from './helpers/core.js';

const STORIES = sharedPath('models/stories260K/stories260K.bin');
const WORDS = ('the a little girl boy dog cat sun tree park ball red blue big small happy sad ran jumped played saw found '
  + 'wanted liked said went home friend mom dad day night sky bird fish cake toy box car house garden flower rain').split(' ');
const SIZE = 200e6;
let tmp;

beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'weblora-bigdata-'));
  // Seeded story-like sentences, written in 1 MB blocks (four distinct ones, cycled).
  const rng = new Rng(5);
  const blocks = Array.from({ length: 4 }, () => {
    let s = '';
    while (s.length < 1e6) {
      const n = 5 + rng.int(8);
      const words = Array.from({ length: n }, () => WORDS[rng.int(WORDS.length)]);
      s += `${words[0][0].toUpperCase()}${words.join(' ').slice(1)}.${rng.int(6) === 0 ? '\n' : ' '}`;
    }
    return Buffer.from(s);
  });
  const fd = openSync(path.join(tmp, 'big.txt'), 'w');
  for (let written = 0, i = 0; written < SIZE; i++) written += writeSync(fd, blocks[i % blocks.length]);
  closeSync(fd);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('a 200 MB data file', () => {
  test('trains a step with peak memory under 1 GB, progress while tokenizing and a capped evaluation', async () => {
    expect(statSync(path.join(tmp, 'big.txt')).size).toBeGreaterThanOrEqual(SIZE);
    const r = await new Promise((resolve) => {
      execFile(process.execPath, [path.join(repoRoot, 'web/cli.js'), 'train', '--model', STORIES, '--data', 'big.txt', '--steps', '1',
        '--seq', '64', '--out', 'out', '--json'], { cwd: tmp, timeout: 480000, maxBuffer: 1 << 26 },
      (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const progress = events.filter((e) => e.event === 'tokenize');
    // a report about every megabyte, growing to the whole file
    expect(progress.length).toBeGreaterThan(100);
    expect(progress.at(-1).loaded).toBe(progress.at(-1).total);
    expect(progress.at(-1).total).toBeGreaterThanOrEqual(SIZE);
    for (let i = 1; i < progress.length; i++) expect(progress[i].loaded).toBeGreaterThanOrEqual(progress[i - 1].loaded);
    const done = events.find((e) => e.event === 'done');
    expect(done.steps).toBe(1);
    // the held-out tenth of the data would be millions of tokens: it is capped at the budget
    expect(done.evalCapped).toBe(true);
    expect(done.evalTokens).toBeLessThanOrEqual(16384);
    expect(done.dataTokens).toBeGreaterThan(30e6);
    // token ids alone are 4 bytes each (about half the bound here); everything else must stay small
    expect(done.peakMemoryBytes).toBeLessThan(1 << 30);
    console.log(`200 MB: ${done.dataTokens} tokens, peak RSS ${(done.peakMemoryBytes / 1e6).toFixed(0)} MB, ${progress.length} progress events`);
  }, 600000);
});

describe('streamed data files', () => {
  test('a .jsonl with a UTF-8 BOM, CRLF lines and blank lines reads like the same documents as strings', async () => {
    const { tokenizeCorpus } = await import('../../web/engine/corpus.js');
    const { tokenizeDocuments } = await import('../../web/engine/data.js');
    const tok = { encode: (t) => [...t].map((c) => c.codePointAt(0) % 97 + 3), bosId: 1, eosId: 2, addsBos: true };
    const docs = ['first document', 'second, with "quotes" and é', 'third'];
    const file = path.join(tmp, 'bom.jsonl');
    writeFileSync(file, `\uFEFF${docs.map((text) => JSON.stringify({ text })).join('\r\n')}\r\n\r\n`);
    const got = await tokenizeCorpus(tok, [{ path: file, name: 'bom.jsonl' }]);
    const flat = new Int32Array(got.buffer.length);
    got.buffer.copyTo(flat, 0, flat.length);
    expect([...flat]).toEqual([...tokenizeDocuments(tok, docs)]);
    expect(got.documents).toBe(3);
    writeFileSync(file, '{"text": "ok"}\nnot json\n');
    await expect(tokenizeCorpus(tok, [{ path: file, name: 'bad.jsonl' }])).rejects.toThrow('bad.jsonl:2: not a JSON object');
  });
});

describe('on a terminal', () => {
  test('tokenizing and training show progress bars on stderr', async () => {
    // The first 2 MB of the big file; the CLI runs under a pseudo-terminal (script(1), in Debian's essential bsdutils).
    const fd = openSync(path.join(tmp, 'big.txt'), 'r');
    const head = Buffer.alloc(2e6);
    readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    writeFileSync(path.join(tmp, 'head.txt'), head);
    const quote = (s) => `'${s.replace(/'/g, "'\\''")}'`;
    const command = [process.execPath, path.join(repoRoot, 'web/cli.js'), 'train', '--model', STORIES, '--data', 'head.txt', '--steps', '3',
      '--seq', '32', '--out', 'tty-out'].map(quote).join(' ');
    const r = await new Promise((resolve) => {
      execFile('script', ['-qec', command, '/dev/null'], { cwd: tmp, timeout: 120000 }, (err, stdout) => resolve({ code: err ? err.code : 0, stdout }));
    });
    expect(r.code).toBe(0);
    const lines = r.stdout.split(/[\r\n]+/).map((l) => l.replace(/\x1b\[K/g, '').trim()).filter(Boolean);
    const tokenizing = lines.filter((l) => /^tokenizing \[[#.]{24}\] [\d.]+ \/ 2\.0 MB, [\d.]+ M tokens$/.test(l));
    expect(tokenizing.length).toBeGreaterThanOrEqual(2);
    expect(tokenizing.at(-1)).toMatch(/\[#{24}\] 2\.0 \/ 2\.0 MB/);
    expect(lines.some((l) => /^\[#{24}\] step 3\/3 {2}loss \d+\.\d{4} {2}\d+ tok\/s/.test(l))).toBe(true);
    expect(lines.at(-1)).toBe('saved to tty-out');
  });
});

describe('knobs whose cost grows with them have upper bounds', () => {
  test('grad-accum and the like past their limits are clear errors', async () => {
    const { trainOptions } = await import('../../web/engine/train.js');
    expect(() => trainOptions({ gradAccum: 100000 })).toThrow('gradAccum 100000 is above the limit of 1024: each step would run that many forward and backward passes');
    expect(() => trainOptions({ batchSize: 5000 })).toThrow(/batchSize 5000 is above the limit of 4096/);
    expect(() => trainOptions({ epochs: 1e6 })).toThrow(/epochs 1000000 is above the limit/);
    expect(() => trainOptions({ evalTokens: 0 })).toThrow(/evalTokens must be a positive integer/);
    expect(trainOptions({ gradAccum: 1024 }).gradAccum).toBe(1024);
  });
});
