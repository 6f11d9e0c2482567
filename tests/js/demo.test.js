// The demo's logic without a browser: the catalogue against the built-in model's files, the size and memory
// estimates against what the C core really allocates, every setting's message (nothing clamped), the advice on
// short text, errors in the person's words, and entries turned into conversations.
import { beforeAll, describe, expect, test } from '@jest/globals';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

import { BUILT_IN, CATALOG, DEFAULT_HUB, hubFolder, parseHubBase, parseModelAddress } from '../../demo/catalog.js';
import {
  betterMeasurement, downloadBytes, expectedTokensPerSecond, forwardFlopsPerToken, parameterCount, shapeFromEngine,
  shapeFromHfConfig, speedMeasurement, threadPoolBytes, threadScaling, trainingMemoryBytes, trainingSeconds,
} from '../../demo/estimate.js';
import { checkGeneration, checkTraining, textAdvice } from '../../demo/checks.js';
import { explainError } from '../../demo/explain.js';
import { conversationOf, conversationsOf } from '../../demo/chat.js';
import { Arch } from '../../web/core/core.js';
import { LocalEngine } from '../../web/engine/engine.js';
import { formatBytes } from '../../web/index.js';
import {
  FormatError, NetworkError, NotFoundError, NumericError, StorageFullError,
} from '../../web/errors.js';
import { loadCore, repoRoot, wasmSource } from './helpers/core.js';

const BUILT_IN_DIR = path.join(repoRoot, 'demo/models/default');
const VALID = { steps: '100', lr: '0.002', rank: '8', seqLen: '64', batchSize: '8' };
const MB = 1024 ** 2;
/** A model's limits as the page builds them, for a small context and a memory function that grows with B * T. */
const LIMITS = { maxSeqLen: 256, memoryFor: (B, T) => B * T * MB, memoryLimit: 4096 * MB, deviceBytes: null };

describe('catalogue', () => {
  test('the built-in entry describes demo/models/default as its config.json does', () => {
    const config = JSON.parse(readFileSync(path.join(BUILT_IN_DIR, 'config.json'), 'utf8'));
    for (const [key, value] of Object.entries(BUILT_IN.config)) expect([key, config[key]]).toEqual([key, value]);
    expect(BUILT_IN.tokenizerBytes).toBe(readFileSync(path.join(BUILT_IN_DIR, 'tokenizer.json')).byteLength);
    // Download size: the f16 tensor bytes of the real file (all of it but its 8-byte length and JSON header) plus
    // the tokenizer.
    const weights = readFileSync(path.join(BUILT_IN_DIR, 'model.safetensors'));
    const tensorBytes = weights.byteLength - 8 - Number(weights.readBigUInt64LE(0));
    expect(downloadBytes(BUILT_IN, parameterCount(shapeFromHfConfig(BUILT_IN.config)))).toBe(tensorBytes + BUILT_IN.tokenizerBytes);
    expect(new Set(CATALOG.map((e) => e.id)).size).toBe(CATALOG.length);
    for (const e of CATALOG) expect(['f32', 'f16', 'bf16']).toContain(e.dtype);
    for (const e of CATALOG) expect(['f32', 'q8', 'q4']).toContain(e.baseDtype ?? 'f32');
  });

  test('Hub folders, typed addresses and mirrors', () => {
    expect(hubFolder('HuggingFaceTB/SmolLM2-135M')).toBe('https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/main/');
    expect(hubFolder('a/b', 'http://127.0.0.1:9/mirror/')).toBe('http://127.0.0.1:9/mirror/a/b/resolve/main/');
    expect(parseModelAddress('Qwen/Qwen2.5-0.5B-Instruct', 'https://hf-mirror.com/'))
      .toEqual({ url: 'https://hf-mirror.com/Qwen/Qwen2.5-0.5B-Instruct/resolve/main/', single: false });
    expect(parseModelAddress('https://huggingface.co/HuggingFaceTB/SmolLM2-135M/tree/main'))
      .toEqual({ url: 'https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/main/', single: false });
    expect(parseModelAddress(' https://cdn.example/m/model.bin ')).toEqual({ url: 'https://cdn.example/m/model.bin', single: true });
    expect(parseModelAddress('https://cdn.example/m/')).toEqual({ url: 'https://cdn.example/m/', single: false });
    expect(parseModelAddress('')).toEqual({ error: expect.stringMatching(/^Type a model address/) });
    expect(parseModelAddress('ftp://x/y/')).toEqual({ error: 'The address must start with https:// (or http://).' });
    expect(parseModelAddress('https://cdn.example/model.onnx')).toEqual({ error: expect.stringMatching(/^Give the model's folder/) });
    expect(parseHubBase('https://hf-mirror.com')).toEqual({ url: 'https://hf-mirror.com/' });
    expect(parseHubBase('')).toEqual({ url: DEFAULT_HUB });
    expect(parseHubBase('nope')).toEqual({ error: expect.stringMatching(/not a web address/) });
  });
});

describe('estimates against the C core', () => {
  let core;
  beforeAll(async () => {
    core = await loadCore();
  });

  test('parameter counts from config.json match the models the core builds (Llama, GQA, Qwen2 biases, untied heads)', () => {
    const cases = [
      ['built-in', BUILT_IN.config],
      ['SmolLM2-135M', CATALOG.find((e) => e.id === 'smollm2-135m').config],
      ['Qwen2-shaped', { model_type: 'qwen2', hidden_size: 64, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 300, max_position_embeddings: 128, tie_word_embeddings: true }],
      ['untied', { model_type: 'llama', hidden_size: 48, intermediate_size: 96, num_hidden_layers: 3, num_attention_heads: 6, num_key_value_heads: 3, head_dim: 12, vocab_size: 200, max_position_embeddings: 64, tie_word_embeddings: false }],
    ];
    for (const [name, c] of cases) {
      const s = shapeFromHfConfig(c);
      const model = core.createModel({
        arch: Arch.LLAMA, dim: s.dim, hiddenDim: s.hidden, nLayers: s.layers, nHeads: s.heads, nKvHeads: s.kvHeads, headDim: s.headDim,
        vocabSize: s.vocab, maxSeqLen: s.maxSeqLen, tiedEmbeddings: s.tied ? 1 : 0, qkvBias: s.qkvBias ? 1 : 0, ropeLayout: 0, ropeTheta: 10000,
        normEps: 1e-5, bosId: 0, eosId: 0,
      });
      try {
        expect([name, parameterCount(s)]).toEqual([name, model.params().length]);
      } finally {
        model.free();
      }
    }
    expect(parameterCount(shapeFromHfConfig(CATALOG.find((e) => e.id === 'smollm2-135m').config))).toBe(134_515_008);
  });

  describe('training memory against what the core reserves', () => {
    /** What the core reserves to train one step of B x T on `threads` threads (a fresh engine: plans only grow). */
    async function reserved(threads, B, T, dtype = 'f32', recompute = false) {
      const engine = await LocalEngine.load(BUILT_IN_DIR, { wasmSource: wasmSource(), threads, dtype });
      try {
        expect(engine.info().threads).toBe(threads);
        const adapter = engine.createAdapter({ rank: 8, targets: ['q_proj', 'v_proj'] });
        await engine.train(adapter.id, ['Wind from the west, spirits high. '.repeat(200)], { steps: 1, batchSize: B, seqLen: T, evalSplit: 0, recompute });
        return { info: engine.info(), bytes: engine.model.memoryBytes() };
      } finally {
        engine.dispose();
      }
    }

    test.each([[1, 32], [4, 64], [8, 128]])('B %i, T %i: within 1 %, never above', async (B, T) => {
      const { info, bytes: actual } = await reserved(1, B, T);
      const s = shapeFromEngine(info);
      expect(parameterCount(s)).toBe(info.parameters);
      // Measured: the estimate (without the worker's fixed overhead) is 0.999-1.000 of the core's figure (the
      // LoRA factors' own scratch, the RoPE tables and alignment padding are not counted).
      const estimate = trainingMemoryBytes(s, info.parameters, { B, T }) - 64 * MB;
      expect(estimate / actual).toBeGreaterThan(0.99);
      expect(estimate / actual).toBeLessThanOrEqual(1);
    });

    // Measured: 0.998-0.999 of the core's figure (without counting the dequantisation panel, 0.65-0.71 at B 1).
    test.each([['q8', 1, 32], ['q8', 8, 128], ['q4', 1, 32], ['q4', 8, 128]])('a %s base, B %i, T %i: within 1 %, never above', async (dtype, B, T) => {
      const { info, bytes: actual } = await reserved(1, B, T, dtype);
      expect(info.dtype).toBe(dtype);
      const estimate = trainingMemoryBytes(shapeFromEngine(info), info.parameters, { B, T, dtype }) - 64 * MB;
      expect(estimate / actual).toBeGreaterThan(0.99);
      expect(estimate / actual).toBeLessThanOrEqual(1);
    });

    // Measured: 0.999-1.000 of the core's figure.
    test.each([['f32', 1, 32], ['f32', 8, 128], ['q8', 8, 128]])('recompute, a %s base, B %i, T %i: within 1 %, never above', async (dtype, B, T) => {
      const { info, bytes: actual } = await reserved(1, B, T, dtype, true);
      const s = shapeFromEngine(info);
      const estimate = trainingMemoryBytes(s, info.parameters, { B, T, dtype, recompute: true }) - 64 * MB;
      expect(estimate / actual).toBeGreaterThan(0.99);
      expect(estimate / actual).toBeLessThanOrEqual(1);
      // and the plan is smaller than without recompute by what the estimate says
      const kept = trainingMemoryBytes(s, info.parameters, { B, T, dtype }) - 64 * MB;
      expect(actual).toBeLessThan((await reserved(1, B, T, dtype)).bytes - 0.9 * (kept - estimate));
    });

    test.each([[1, 128], [2, 64], [8, 16]])('3 threads, B %i, T %i: the attention scores each thread gets, and the pool', async (B, T) => {
      const threaded = await reserved(3, B, T);
      const s = shapeFromEngine(threaded.info);
      const info = threaded.info;
      // The threads change the plan only where every thread gets a head's scores of its own: exactly by the estimate's
      // difference, less the pool's scratch and stacks (outside the model's count).
      const extra = threaded.bytes - (await reserved(1, B, T)).bytes;
      const estimated = trainingMemoryBytes(s, info.parameters, { B, T, threads: 3 }) - trainingMemoryBytes(s, info.parameters, { B, T });
      expect(extra).toBe(estimated - threadPoolBytes(3));
      expect(threadPoolBytes(3)).toBe(2 * (2 * MB + MB / 2) + 2 * MB);
      expect(threadPoolBytes(1)).toBe(0);
    });
  });

  test('speed scales by arithmetic per token; measurements from bigger models are kept', () => {
    const small = shapeFromHfConfig(BUILT_IN.config);
    const big = shapeFromHfConfig(CATALOG.find((e) => e.id === 'smollm2-135m').config);
    const P = parameterCount(small);
    const Q = parameterCount(big);
    const m = speedMeasurement(small, P, 64, 1000, 'built-in', 1);
    expect(expectedTokensPerSecond(small, P, 64, m)).toBeCloseTo(1000, 6);
    expect(expectedTokensPerSecond(big, Q, 64, m)).toBeCloseTo((1000 * forwardFlopsPerToken(small, P, 64)) / forwardFlopsPerToken(big, Q, 64), 6);
    // Tied heads count the embedding once as a matrix; an untied model's embedding lookup is not arithmetic.
    expect(forwardFlopsPerToken({ ...small, tied: false }, P + small.vocab * small.dim, 1)).toBe(forwardFlopsPerToken(small, P, 1));
    const tiny = speedMeasurement(small, 1000, 64, 5000, 'tiny', 1);
    expect(betterMeasurement(m, tiny)).toBe(false);
    expect(betterMeasurement(m, { ...tiny, at: m.at + 31 * 24 * 3600 * 1000 })).toBe(true);
    expect(betterMeasurement(null, tiny)).toBe(true);
    expect(trainingSeconds({ steps: 10, B: 2, T: 8, evalTokens: 30, secondsPerToken: 0.01 })).toBeCloseTo(0.01 * (160 + 20), 9);
  });

  test('a speed measured on one number of threads is scaled cautiously to another, and replaced by one measured there', () => {
    const s = shapeFromHfConfig(BUILT_IN.config);
    const P = parameterCount(s);
    const one = speedMeasurement(s, P, 64, 1000, 'built-in', 1);
    // More threads: Amdahl with 2/3 of a step parallel (1.5x on two threads, 2.4x on eight), never the linear 8x.
    expect(expectedTokensPerSecond(s, P, 64, one, 2)).toBeCloseTo(1500, 6);
    expect(expectedTokensPerSecond(s, P, 64, one, 8)).toBeCloseTo(1000 / (1 / 3 + 2 / 3 / 8), 6);
    expect(threadScaling(2, 4)).toBeCloseTo((1 / (1 / 3 + 2 / 3 / 4)) / 1.5, 9);
    // Fewer threads: as if the measured ones had all been fully used.
    const eight = speedMeasurement(s, P, 64, 4000, 'built-in', 8);
    expect(expectedTokensPerSecond(s, P, 64, eight, 2)).toBeCloseTo(1000, 6);
    expect(expectedTokensPerSecond(s, P, 64, eight)).toBeCloseTo(4000, 6);
    // A record from before the package had threads ran on one.
    const { threads, ...old } = one;
    expect(threads).toBe(1);
    expect(expectedTokensPerSecond(s, P, 64, old, 2)).toBeCloseTo(1500, 6);
    // A measurement on another number of threads replaces the kept one, even from a smaller model.
    const small = speedMeasurement(s, 1000, 64, 5000, 'tiny', 2);
    expect(betterMeasurement(one, small)).toBe(true);
    expect(betterMeasurement(old, small)).toBe(true);
    expect(betterMeasurement(one, { ...small, threads: 1 })).toBe(false);
  });
});

describe('settings: every wrong value has its message, nothing is clamped', () => {
  test.each([
    ['steps', '-3', 'Steps must be a whole number from 1 to 5,000; -3 is outside that.'],
    ['steps', '2.5', 'Steps must be a whole number from 1 to 5,000.'],
    ['steps', '', 'Enter steps: a whole number from 1 to 5,000 (for example 100).'],
    ['steps', 'NaN', 'Steps must be a whole number from 1 to 5,000.'],
    ['lr', '0', 'The learning rate must be above 0: at 0 the adapter learns nothing. 0.001 to 0.005 suits LoRA.'],
    ['lr', '-1', 'The learning rate must be above 0: at 0 the adapter learns nothing. 0.001 to 0.005 suits LoRA.'],
    ['lr', '0.5', 'A learning rate above 0.05 makes training unstable (the loss jumps instead of falling). 0.001 to 0.005 suits LoRA.'],
    ['lr', '1e-9', 'A learning rate below 0.000001 changes the adapter too little to notice. 0.001 to 0.005 suits LoRA.'],
    ['lr', '', 'Enter a learning rate, for example 0.002.'],
    ['seqLen', '99999', 'This model reads at most 256 tokens at a time: use a sequence length from 8 to 256.'],
    ['seqLen', '4', 'Sequence length must be a whole number from 8 to 256; 4 is outside that.'],
    ['batchSize', '0', 'Batch size must be a whole number from 1 to 64; 0 is outside that.'],
    ['rank', '5', 'Rank must be one of 4, 8, 16, 32.'],
  ])('%s = %j', (key, value, message) => {
    const r = checkTraining({ ...VALID, [key]: value }, LIMITS);
    expect(r.errors).toEqual({ [key]: message });
    expect(r.values).toBeNull();
  });

  test('valid settings pass as typed; a high rate is only a warning', () => {
    expect(checkTraining(VALID, LIMITS)).toEqual({ values: { steps: 100, lr: 0.002, rank: 8, seqLen: 64, batchSize: 8 }, errors: {}, warnings: {} });
    expect(checkTraining({ ...VALID, lr: '0.02' }, LIMITS).warnings).toEqual({ lr: 'This is high for LoRA: if the loss jumps around, lower it.' });
    // Before a model is loaded the length has no upper bound to check.
    expect(checkTraining({ ...VALID, seqLen: '99999' }, null).errors).toEqual({});
  });

  test('memory: more than a tab can hold names the longest length that fits; more than the device has warns', () => {
    const r = checkTraining({ ...VALID, seqLen: '256', batchSize: '32' }, { ...LIMITS, memoryLimit: 2048 * MB });
    expect(r.errors.seqLen).toBe('Training batches of 32 × 256 tokens needs about 8.0 GB, more than a browser tab can use (2.0 GB): '
      + 'use a sequence length of at most 64, or a smaller batch size.');
    const w = checkTraining({ ...VALID, seqLen: '256', batchSize: '4' }, { ...LIMITS, deviceBytes: 512 * MB });
    expect(w.errors).toEqual({});
    expect(w.warnings.seqLen).toMatch(/^Training this way needs about 1\.0 GB, a lot for this device/);
  });

  test('generation settings', () => {
    expect(checkGeneration({ maxTokens: '0', temperature: '5' }).errors).toEqual({
      maxTokens: 'Tokens must be a whole number from 1 to 512; 0 is outside that.',
      temperature: 'Temperature must be a number from 0 to 2: 0 always picks the likeliest word, higher is more adventurous.',
    });
    expect(checkGeneration({ maxTokens: '60', temperature: '0' })).toEqual({ values: { maxTokens: 60, temperature: 0 }, errors: {} });
  });
});

describe('sizes in words', () => {
  test('the package\'s formatBytes: binary units, one decimal below 10, none above, a dash when unknown', () => {
    expect([0, 1023, 1024, 9.94 * 1024, 10 * 1024, 999_999, 3.5 * 2 ** 30, 2 ** 50].map(formatBytes))
      .toEqual(['0 B', '1023 B', '1.0 KB', '9.9 KB', '10 KB', '977 KB', '3.5 GB', '1024 TB']);
    expect([null, undefined, NaN, Infinity].map(formatBytes)).toEqual(['–', '–', '–', '–']);
  });

  test('it is the only one: the demo imports it, and no module of the package or the demo has its own', () => {
    const owners = [];
    for (const dir of ['web', 'demo']) {
      for (const file of readdirSync(path.join(repoRoot, dir), { recursive: true }).map(String).filter((f) => f.endsWith('.js'))) {
        if (/function formatBytes\b|formatBytes\s*=/.test(readFileSync(path.join(repoRoot, dir, file), 'utf8'))) owners.push(`${dir}/${file}`);
      }
    }
    expect(owners).toEqual(['web/units.js']);
    expect(readFileSync(path.join(repoRoot, 'demo/app.js'), 'utf8')).toMatch(/import \{[^}]*\bformatBytes\b[^}]*\} from '\.\.\/dist\/weblora\.js'/);
  });
});

describe('advice on the amount of text', () => {
  test('"hi": shorter than one sequence, and only memorised', () => {
    expect(textAdvice({ tokens: 3, words: 1, seqLen: 64, steps: 100, batchSize: 8 })).toEqual([
      'Your text is 3 tokens, shorter than one training sequence of 64 tokens: training repeats the same padded piece. Add more text.',
      'With only 1 word (3 tokens) the adapter can only memorise this text, not learn your style. A few thousand words of your writing give a much better result.',
    ]);
    expect(textAdvice({ tokens: 40, words: 30, seqLen: 64, steps: 1, batchSize: 1 })[0]).toMatch(/Add more text, or use a sequence length of 32\.$/);
  });

  test('enough text: silence, unless training would go over it too many times', () => {
    expect(textAdvice({ tokens: 20_000, words: 15_000, seqLen: 64, steps: 100, batchSize: 8 })).toEqual([]);
    expect(textAdvice({ tokens: 2000, words: 1500, seqLen: 128, steps: 1000, batchSize: 8 })).toEqual([
      'Training would go over your text about 512 times, so the adapter will tend to repeat it word for word. Use fewer steps, or add more text.',
    ]);
    expect(textAdvice({ tokens: 0, words: 0, seqLen: 64, steps: 1, batchSize: 1 })).toEqual([]);
  });
});

describe('errors in the person\'s words', () => {
  test('each kind says what failed and what to try; the technical detail keeps every cause', () => {
    const refused = new NetworkError('cannot reach 127.0.0.1:9 to load the model at http://127.0.0.1:9/m/: fetch failed', {
      code: 'UNREACHABLE', details: { url: 'http://127.0.0.1:9/m/', host: '127.0.0.1:9' },
      cause: new NetworkError('HEAD http://127.0.0.1:9/m/model.safetensors.index.json failed after 2 attempts'),
    });
    const e = explainError(refused, 'load');
    expect(e.summary).toBe('Could not reach 127.0.0.1:9.');
    expect(`${e.summary} ${e.advice}`).not.toMatch(/index\.json/);
    expect(e.detail).toBe('NetworkError (UNREACHABLE): cannot reach 127.0.0.1:9 to load the model at http://127.0.0.1:9/m/: fetch failed\n'
      + 'caused by NetworkError (NETWORK_ERROR): HEAD http://127.0.0.1:9/m/model.safetensors.index.json failed after 2 attempts');
    expect(explainError(new NotFoundError('x', { details: { url: 'https://h/o/m/resolve/main/config.json', status: 404 } }), 'load').summary)
      .toBe('There is no model at this address (config.json was not found).');
    expect(explainError(new NetworkError('HTTP 403', { details: { status: 403 } }), 'load').summary).toBe('The server refused access to this model.');
    expect(explainError(new FormatError('bad header'), 'load').summary).toBe('These files are not a model this demo can use.');
    expect(explainError(new StorageFullError('full'), 'save').summary).toBe('This browser\'s storage for the site is full.');
    expect(explainError(new NumericError('loss is NaN'), 'train').advice).toMatch(/Lower the learning rate/);
    expect(explainError(new Error('Out of memory'), 'train').summary).toBe('This device ran out of memory.');
    expect(explainError(new Error('strange'), 'generate')).toEqual({
      summary: 'Generating text failed.', advice: 'Try again. If it keeps failing, the technical details say what went wrong.', detail: 'Error: strange',
    });
  });
});

describe('entries as conversations', () => {
  test('the instruction asks, the entry answers; an entry may bring its own question', () => {
    expect(conversationOf('Tea at six.', 'Write a line.')).toEqual([{ role: 'user', content: 'Write a line.' }, { role: 'assistant', content: 'Tea at six.' }]);
    expect(conversationOf('> What did you see?\n> Be brief.\nGulls.', 'x')).toEqual([
      { role: 'user', content: 'What did you see?\nBe brief.' }, { role: 'assistant', content: 'Gulls.' },
    ]);
    expect(conversationOf('> Only a question', 'x')).toBeNull();
    expect(conversationsOf(['> q', 'answer'], 'ask')).toEqual([[{ role: 'user', content: 'ask' }, { role: 'assistant', content: 'answer' }]]);
  });
});

