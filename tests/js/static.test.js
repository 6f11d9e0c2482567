// Static checks in the test run: the package's JSDoc types (tsc over web/, tsconfig.json), its declarations as a
// TypeScript app sees them (tests/types/consumer.ts, whose @ts-expect-error lines must each be an error), and ESLint.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, test } from '@jest/globals';

import { repoRoot } from './helpers/core.js';

const run = promisify(execFile);
const bin = (name) => path.join(repoRoot, 'node_modules/.bin', name);

/** Runs a checker; resolves to its exit code and output whatever the code. */
async function check(cmd, args) {
  try {
    const { stdout, stderr } = await run(cmd, args, { cwd: repoRoot, timeout: 240_000, maxBuffer: 16 << 20 });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    if (typeof err.code !== 'number') throw err;
    return { code: err.code, output: `${err.stdout}${err.stderr}` };
  }
}

describe('static checks', () => {
  test('tsc: the package modules type-check against their JSDoc', async () => {
    const { code, output } = await check(bin('tsc'), ['-p', 'tsconfig.json']);
    expect(output).toBe('');
    expect(code).toBe(0);
  }, 240_000);

  test('tsc: every module under web/ is in that check, with checkJs on and none opting out', async () => {
    const config = JSON.parse(readFileSync(path.join(repoRoot, 'tsconfig.json'), 'utf8'));
    expect(config.compilerOptions.checkJs).toBe(true);
    const modules = readdirSync(path.join(repoRoot, 'web'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.js')).map((f) => path.join(repoRoot, 'web', f)).sort();
    expect(modules.length).toBeGreaterThan(20);
    const { code, output } = await check(bin('tsc'), ['-p', 'tsconfig.json', '--listFilesOnly']);
    expect(code).toBe(0);
    const listed = new Set(output.split('\n').map((f) => path.resolve(f.trim())));
    expect(modules.filter((f) => !listed.has(f))).toEqual([]);
    expect(modules.filter((f) => /@ts-nocheck/.test(readFileSync(f, 'utf8')))).toEqual([]);
  }, 240_000);

  test('tsc: a TypeScript app type-checks against index.d.ts, and each mistake in it is an error', async () => {
    const { code, output } = await check(bin('tsc'), ['-p', 'tests/types/tsconfig.json']);
    expect(output).toBe('');
    expect(code).toBe(0);
  }, 240_000);

  test('tsc: the same app with a misspelt option and no @ts-expect-error fails, naming the option', async () => {
    // Inside the repository, so `weblora` resolves to this package as it does for tests/types.
    const dir = path.join(repoRoot, 'build/types-check');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const consumer = readFileSync(path.join(repoRoot, 'tests/types/consumer.ts'), 'utf8');
    const mistake = "  // @ts-expect-error a misspelt option name is refused\n";
    expect(consumer).toContain(mistake);
    writeFileSync(path.join(dir, 'consumer.ts'), consumer.replace(mistake, ''));
    writeFileSync(path.join(dir, 'tsconfig.json'), readFileSync(path.join(repoRoot, 'tests/types/tsconfig.json')));
    const { code, output } = await check(bin('tsc'), ['-p', path.join(dir, 'tsconfig.json')]);
    expect(code).not.toBe(0);
    expect(output).toMatch(/consumer\.ts\(\d+,\d+\): error TS\d+: Object literal may only specify known properties, .*'revalidte' does not exist in type 'LoadOptions'/);
    rmSync(dir, { recursive: true, force: true });
  }, 240_000);

  test('ESLint (eslint.config.js) finds no problem', async () => {
    const { code, output } = await check(bin('eslint'), ['--max-warnings=0', '.']);
    expect(output).toBe('');
    expect(code).toBe(0);
  }, 240_000);
});
