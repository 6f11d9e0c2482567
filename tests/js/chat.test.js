// Chat templates and token counts: tokenizer_config.json chat_template rendered by the tokenizer (SmolLM's real
// template from ../shared, and a Llama-2-style template that writes BOS itself), the engine's rendering for training
// and generation (no doubled BOS), and countTokens agreeing with what a training run reports it saw. The expected
// strings are written out by hand from the templates' Jinja source.
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';

import { LocalEngine } from '../../web/engine/engine.js';
import { loadTokenizer, TokenizerError } from '../../web/formats/tokenizer.js';
import { sharedPath, wasmSource } from './helpers/core.js';

const readText = (rel) => readFileSync(sharedPath(rel), 'utf8');
const smollm = () => loadTokenizer({ json: readText('tokenizers/smollm-135m/tokenizer.json'), config: readText('tokenizers/smollm-135m/tokenizer_config.json') });

/** Llama-2 chat's shape: BOS written by the template, [INST] turns, eos_token after each answer. */
const LLAMA_CHAT = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
  + "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}";

function llamaConfig(extra) {
  return { ...JSON.parse(readText('tokenizers/llama2-tinyllama/tokenizer_config.json')), ...extra };
}

describe('chat templates in the tokenizer', () => {
  test("SmolLM's template from its tokenizer_config.json", () => {
    const tok = smollm();
    expect(tok.chatTemplate).toBe(JSON.parse(readText('tokenizers/smollm-135m/tokenizer_config.json')).chat_template);
    const messages = [{ role: 'user', content: 'Write a line.' }, { role: 'assistant', content: 'Wind from the west.' }];
    expect(tok.applyChatTemplate(messages)).toBe('<|im_start|>user\nWrite a line.<|im_end|>\n<|im_start|>assistant\nWind from the west.<|im_end|>\n');
    expect(tok.applyChatTemplate(messages.slice(0, 1), { addGenerationPrompt: true }))
      .toBe('<|im_start|>user\nWrite a line.<|im_end|>\n<|im_start|>assistant\n');
    // The special tokens in the rendered text are the tokenizer's special ids, not their spelling.
    expect(tok.encode('<|im_start|>user\n').slice(0, 1)).toEqual([1]);
  });

  test('special token texts reach the template; a list of named templates gives "default"', () => {
    const named = [{ name: 'tool_use', template: 'tools' }, { name: 'default', template: LLAMA_CHAT }];
    const tok = loadTokenizer({ json: readText('tokenizers/llama2-tinyllama/tokenizer.json'), config: llamaConfig({ chat_template: named }) });
    expect(tok.chatTemplate).toBe(LLAMA_CHAT);
    expect(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }]))
      .toBe('<s>[INST] Hi [/INST] Hello </s>');
  });

  test('no template, bad messages, a template that cannot be parsed, a chat_template of the wrong type', () => {
    const plain = loadTokenizer({ json: readText('tokenizers/llama2-tinyllama/tokenizer.json'), config: llamaConfig({}) });
    expect(plain.chatTemplate).toBeNull();
    expect(() => plain.applyChatTemplate([])).toThrow(expect.objectContaining({ code: 'NO_CHAT_TEMPLATE' }));
    const stories = loadTokenizer({ llama2c: new Uint8Array(readFileSync(sharedPath('models/stories260K/tok512.bin'))) });
    expect(stories.chatTemplate).toBeNull();
    const tok = smollm();
    for (const bad of [null, 'hi', [{ role: 'user' }], [{ role: 1, content: 'x' }]]) {
      expect(() => tok.applyChatTemplate(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    const broken = loadTokenizer({ json: readText('tokenizers/llama2-tinyllama/tokenizer.json'), config: llamaConfig({ chat_template: '{% for m in messages %}' }) });
    const err = (() => { try { broken.applyChatTemplate([{ role: 'user', content: 'x' }]); return null; } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(TokenizerError);
    expect(err.code).toBe('BAD_CHAT_TEMPLATE');
    expect(() => loadTokenizer({ json: readText('tokenizers/llama2-tinyllama/tokenizer.json'), config: llamaConfig({ chat_template: 42 }) }))
      .toThrow(/chat_template must be a string/);
  });
});

describe('the engine with a chat model (tiny-random-llama, the Llama-2 tokenizer, a chat template)', () => {
  let engine;
  beforeAll(async () => {
    const files = {
      'config.json': readText('models/tiny-random-llama/config.json'),
      'model.safetensors': new Uint8Array(readFileSync(sharedPath('models/tiny-random-llama/model.safetensors'))),
      'tokenizer.json': readText('tokenizers/llama2-tinyllama/tokenizer.json'),
      'tokenizer_config.json': JSON.stringify(llamaConfig({ chat_template: LLAMA_CHAT })),
    };
    engine = await LocalEngine.load(files, { wasmSource: wasmSource() });
  });
  afterAll(() => engine?.dispose());

  test('info names the template; rendered text leaves BOS to the tokenizer, so a document has exactly one', async () => {
    expect(engine.info().chatTemplate).toBe(LLAMA_CHAT);
    const messages = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }];
    const text = engine.applyChatTemplate(messages);
    expect(text).toBe('[INST] Hi [/INST] Hello </s>');
    expect(engine.applyChatTemplate(messages.slice(0, 1), { addGenerationPrompt: true })).toBe('[INST] Hi [/INST]');
    // A document is BOS + the text + EOS: the template's own "<s>" would have made two BOS tokens.
    const { tokens } = await engine.countTokens([text]);
    expect(tokens).toBe(1 + engine.tokenizer.encode(text).length + 1);
    expect(engine.tokenizer.encode(text)[0]).not.toBe(engine.tokenizer.bosId);
  });

  test('countTokens counts what a training run sees', async () => {
    const texts = ['[INST] Hi [/INST] Hello </s>', 'A second document, a little longer than the first one.'];
    const counted = await engine.countTokens(texts);
    expect(counted.documents).toBe(2);
    const adapter = engine.createAdapter({ rank: 2, targets: ['q_proj'] });
    const summary = await engine.train(adapter.id, texts, { steps: 1, seqLen: 8, batchSize: 1, evalSplit: 0 });
    expect(counted.tokens).toBe(summary.dataTokens);
    engine.freeAdapter(adapter.id);
  });
});
