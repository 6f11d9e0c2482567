// Crash-safe outputs: the CLI replacing an adapter folder or a GGUF file is killed with SIGKILL (the
// WEBLORA_CRASH_AT fault point) at every step of the write-and-swap; afterwards the old or the new output is
// complete, and the next run repairs the location. Also: an unwritable or full location is refused before any
// work, and leftovers are cleaned.
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { OutputFile, OutputFolder, recoverOutput } from '../../web/storage/output.js';
import { repoRoot } from './helpers/core.js';

const CLI = path.join(repoRoot, 'web/cli.js');
const ADAPTER = path.join(repoRoot, 'tests/ref/golden/sgd_contract/stories260K');
const STORIES = path.join(repoRoot, '../shared/models/stories260K/stories260K.bin');
const STEPS = ['files-written', 'files-synced', 'folder-synced', 'old-aside', 'new-in', 'old-deleted'];
let tmp;

function run(args, env = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: tmp, env: { ...process.env, ...env }, timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, signal: err?.signal ?? null, stdout, stderr });
    });
  });
}

/** The adapter in a folder as one comparable string (both files), or null when incomplete. */
function snapshot(dir) {
  try {
    const names = readdirSync(dir).sort();
    if (names.join() !== 'adapter_config.json,adapter_model.safetensors') return null;
    return names.map((n) => readFileSync(path.join(dir, n)).toString('base64')).join('|');
  } catch {
    return null;
  }
}

beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'weblora-output-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('kill -9 during the output swap', () => {
  let oldAdapter;
  let newAdapter;
  beforeAll(async () => {
    // The two outputs a resize to rank 2 and to rank 1 write, made without faults.
    for (const rank of ['2', '1']) {
      const r = await run(['resize', '--adapter', ADAPTER, '--rank', rank, '--out', path.join(tmp, `ref-${rank}`)]);
      expect(r.stderr).toBe('');
    }
    oldAdapter = snapshot(path.join(tmp, 'ref-2'));
    newAdapter = snapshot(path.join(tmp, 'ref-1'));
    expect(oldAdapter).not.toBeNull();
    expect(newAdapter).not.toBeNull();
    expect(oldAdapter).not.toBe(newAdapter);
  });

  test.each(STEPS)('killed at %s: the old or the new adapter is complete, and the next run repairs', async (step) => {
    const out = path.join(tmp, `out-${step}`);
    cpSync(path.join(tmp, 'ref-2'), out, { recursive: true });
    const r = await run(['resize', '--adapter', ADAPTER, '--rank', '1', '--out', out, '--force'], { WEBLORA_CRASH_AT: step });
    expect(r.signal).toBe('SIGKILL');
    // Right after the crash, before any repair: a complete adapter exists at the target or, mid-swap, aside.
    const leftovers = readdirSync(tmp).filter((n) => n.startsWith(`out-${step}.`));
    const states = [snapshot(out), ...leftovers.map((n) => snapshot(path.join(tmp, n)))];
    expect(states.includes(oldAdapter) || states.includes(newAdapter)).toBe(true);
    const before = step === 'new-in' || step === 'old-deleted' ? newAdapter : oldAdapter;
    if (step !== 'old-aside') expect(snapshot(out)).toBe(before);
    // The next run over the same folder repairs it: the target is whole, no leftovers remain.
    const rec = await recoverOutput(out);
    expect(rec.restored).toBe(step === 'old-aside');
    expect(snapshot(out)).toBe(before);
    expect(readdirSync(tmp).filter((n) => n.startsWith(`out-${step}.`))).toEqual([]);
    // And a normal run then replaces it.
    expect((await run(['resize', '--adapter', ADAPTER, '--rank', '1', '--out', out, '--force'])).code).toBe(0);
    expect(snapshot(out)).toBe(newAdapter);
  });

  test('the CLI cleans a dead run\'s leftovers itself', async () => {
    const out = path.join(tmp, 'out-cli-repair');
    cpSync(path.join(tmp, 'ref-2'), out, { recursive: true });
    expect((await run(['resize', '--adapter', ADAPTER, '--rank', '1', '--out', out, '--force'], { WEBLORA_CRASH_AT: 'old-aside' })).signal).toBe('SIGKILL');
    expect(existsSync(out)).toBe(false);
    // Without --force the repaired (old, non-empty) output is kept and the command says so.
    const r = await run(['resize', '--adapter', ADAPTER, '--rank', '1', '--out', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/exists and is not empty/);
    expect(snapshot(out)).toBe(oldAdapter);
    expect(readdirSync(tmp).filter((n) => n.startsWith('out-cli-repair.'))).toEqual([]);
  });
});

describe('kill -9 while replacing a single-file output (GGUF)', () => {
  const FILE_STEPS = ['files-written', 'files-synced', 'new-in'];
  const exportGguf = (out, dtype, env) => run(['export', '--model', STORIES, '--adapter', ADAPTER, '--format', 'gguf', '--dtype', dtype,
    '--out', out, '--force'], env);
  let oldFile;
  let newFile;
  beforeAll(async () => {
    for (const dtype of ['f32', 'f16']) {
      const r = await exportGguf(path.join(tmp, `ref.${dtype}.gguf`), dtype);
      expect([r.code, r.stderr]).toEqual([0, '']);
    }
    oldFile = readFileSync(path.join(tmp, 'ref.f32.gguf'));
    newFile = readFileSync(path.join(tmp, 'ref.f16.gguf'));
    expect(oldFile.equals(newFile)).toBe(false);
  });

  test.each(FILE_STEPS)('killed at %s: the file is the old or the new one, whole, and the next run cleans up', async (step) => {
    const out = path.join(tmp, `single-${step}.gguf`);
    writeFileSync(out, oldFile);
    const r = await exportGguf(out, 'f16', { WEBLORA_CRASH_AT: step });
    expect(r.signal).toBe('SIGKILL');
    expect(readFileSync(out).equals(step === 'new-in' ? newFile : oldFile)).toBe(true);
    const leftovers = readdirSync(tmp).filter((n) => n.startsWith(`single-${step}.gguf.`));
    expect(leftovers).toEqual(step === 'new-in' ? [] : [expect.stringMatching(/\.partial-\d+$/)]);
    expect((await recoverOutput(out)).removed).toEqual(leftovers);
    expect(readdirSync(tmp).filter((n) => n.startsWith(`single-${step}.gguf.`))).toEqual([]);
    expect((await exportGguf(out, 'f16')).code).toBe(0);
    expect(readFileSync(out).equals(newFile)).toBe(true);
  });

  test('export checks the destination before loading anything: an existing file, a folder, an unwritable place', async () => {
    const existing = path.join(tmp, 'existing.gguf');
    writeFileSync(existing, 'keep me');
    // The model does not exist: an error about the output proves the output was checked first.
    const args = (out) => ['export', '--model', path.join(tmp, 'no-such-model.bin'), '--adapter', ADAPTER, '--format', 'gguf', '--out', out];
    let r = await run(args(existing));
    expect([r.code, r.stderr]).toEqual([2, `weblora export: error: output ${existing} exists (use --force to replace it)\n`]);
    expect(readFileSync(existing, 'utf8')).toBe('keep me');
    r = await run(args(tmp));
    expect([r.code, r.stderr]).toEqual([2, `weblora export: error: output ${tmp} is a folder: give the path of the file to write\n`]);
    writeFileSync(path.join(tmp, 'blocker-file'), 'x');
    r = await run(args(path.join(tmp, 'blocker-file', 'x.gguf')));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot write the output .*blocker-file\/x\.gguf/);
    // --format peft writes a folder, checked the same way.
    r = await run(['export', '--model', path.join(tmp, 'no-such-model.bin'), '--adapter', ADAPTER, '--format', 'peft', '--out', existing]);
    expect([r.code, r.stderr]).toEqual([2, `weblora export: error: output ${existing} exists and is not a folder\n`]);
    expect(readdirSync(tmp).filter((n) => /\.partial-|\.old-/.test(n))).toEqual([]);
  });

  test('a device is never replaced, and a reservation without room is given back', async () => {
    await expect(OutputFile.prepare('/dev/null', { force: true })).rejects.toMatchObject({ code: 'OUTPUT_EXISTS',
      message: 'output /dev/null exists and is not a regular file' });
    const out = path.join(tmp, 'huge.gguf');
    await expect(OutputFile.prepare(out, { bytesNeeded: Number.MAX_SAFE_INTEGER })).rejects.toMatchObject({ code: 'OUTPUT_NO_ROOM' });
    expect(readdirSync(tmp).filter((n) => n.startsWith('huge.gguf'))).toEqual([]);
  });
});

describe('the output location is checked before the work', () => {
  test('a location that cannot be written is refused before training, with nothing left behind', async () => {
    const data = path.join(tmp, 'd.txt');
    writeFileSync(data, 'Once upon a time there was a little dog. '.repeat(20));
    const model = path.join(repoRoot, '../shared/models/stories260K/stories260K.bin');
    // A file where a folder is needed cannot be worked around even as root.
    writeFileSync(path.join(tmp, 'blocker'), 'x');
    const r = await run(['train', '--model', model, '--data', data, '--steps', '1', '--out', path.join(tmp, 'blocker', 'out'), '--json']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot write the output .*blocker\/out/);
    expect(r.stdout).not.toMatch(/"event":"step"/);
  });

  test('not enough room is refused with the sizes, and the reserved folder goes away', async () => {
    const out = path.join(tmp, 'huge');
    await expect(OutputFolder.prepare(out, { bytesNeeded: Number.MAX_SAFE_INTEGER })).rejects.toMatchObject({
      code: 'OUTPUT_NO_ROOM', message: expect.stringMatching(/not enough room .* needs about .* free/),
    });
    const ok = await OutputFolder.prepare(out, { bytesNeeded: 1000 });
    await ok.discard();
    expect(readdirSync(tmp).filter((n) => n.startsWith('huge'))).toEqual([]);
  });
});
