// Tokenizer tests against real third-party tokenizers in ../shared: published ids, vocab files, the other file
// format of the same vocabulary, and small reference encoders (OpenAI's GPT-2 BPE, llama2.c run.c's merge loop).

import { describe, test, expect } from '@jest/globals';
import fs from 'node:fs';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { loadTokenizer, TokenizerError } from '../../web/formats/tokenizer.js';
import { InvalidArgumentError, WebLoRAError } from '../../web/errors.js';
import { sharedPath } from './helpers/core.js';

const readBytes = (rel) => new Uint8Array(fs.readFileSync(sharedPath(rel)));
const readText = (rel) => fs.readFileSync(sharedPath(rel), 'utf8');
const readJson = (rel) => JSON.parse(readText(rel));

const cache = new Map();
/** Loads each tokenizer once per file. */
function tok(name) {
  if (!cache.has(name)) {
    const make = {
      gpt2: () => loadTokenizer({ json: readText('tokenizers/gpt2/tokenizer.json'),
        config: readText('tokenizers/gpt2/tokenizer_config.json') }),
      tinyGpt2: () => loadTokenizer({ json: readJson('models/tiny-gpt2/tokenizer.json'),
        config: readJson('models/tiny-gpt2/tokenizer_config.json') }),
      smollm: () => loadTokenizer({ json: readJson('tokenizers/smollm-135m/tokenizer.json'),
        config: readJson('tokenizers/smollm-135m/tokenizer_config.json') }),
      llama: () => loadTokenizer({ json: readText('tokenizers/llama2-tinyllama/tokenizer.json'),
        config: readJson('tokenizers/llama2-tinyllama/tokenizer_config.json') }),
      llama2c32k: () => loadTokenizer({ llama2c: readBytes('tokenizers/llama2-tinyllama/tokenizer.llama2c.bin') }),
      stories: () => loadTokenizer({ llama2c: readBytes('models/stories260K/tok512.bin').buffer, vocabSize: 512 }),
      aidreams: () => loadTokenizer({ llama2c: readBytes('models/aidreams260K/tok512.bin') }),
    }[name];
    cache.set(name, make());
  }
  return cache.get(name);
}
const ALL = ['gpt2', 'tinyGpt2', 'smollm', 'llama', 'llama2c32k', 'stories', 'aidreams'];

/** Asserts fn throws a TokenizerError with `code` and a message matching `message`. */
function expectError(fn, code, message) {
  let err;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  // a wrong type of argument is an InvalidArgumentError, everything else a TokenizerError
  expect(err).toBeInstanceOf(code === 'INVALID_ARGUMENT' ? InvalidArgumentError : TokenizerError);
  expect(err.code).toBe(code);
  if (message) expect(err.message).toMatch(message);
}

// Texts for round trips: accents (precomposed and combining), CJK, emoji with ZWJ sequences, skin tones and flags
// (surrogate pairs), astral letters, whitespace runs, tabs, newlines, CRLF, digits.
const ROUND_TRIP_TEXTS = [
  'Hello world',
  'Café crème brûlée, naïve façade, Ångström, Øresund; e\u0301 (combining acute)',
  '日本語のテキストと中文文本，还有한국어 텍스트。',
  'Family: 👨‍👩‍👧‍👦, 👩🏽‍💻, 🏳️‍🌈, flags 🇫🇷🇯🇵, party 🎉🎉, thumbs 👍🏿',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 and 𠜎𠜱𠝹 (astral CJK)',
  'spaces:   three,      six, trailing   ',
  '   leading spaces',
  'tabs\tone\t\ttwo\t\t\tthree',
  'lines\none\n\ntwo\n\n\nthree\r\nwindows\r\n',
  'digits 0123456789 3.14159 1,000,000 2024-01-31, Arabic-Indic ١٢٣, fullwidth １２, ½ ² Ⅻ ①',
  '\uFEFFa text that starts with a byte-order mark, and one\uFEFFinside',
  'Mixed: naïve café — “quotes” ‘single’ … ellipsis • bullet ™ © ®',
  'x',
  ' ',
  '\n',
];

const DOCS_TEXT = readText('docs/DESIGN.md') + readText('docs/STYLE.md');

describe('loadTokenizer arguments', () => {
  test('rejects a missing or unrecognised source', () => {
    expectError(() => loadTokenizer(/** @type {any} */ (null)), 'INVALID_ARGUMENT', /source/);
    expectError(() => loadTokenizer(/** @type {any} */ ({})), 'INVALID_ARGUMENT', /json.*llama2c/);
    expectError(() => loadTokenizer(/** @type {any} */ ({ llama2c: 'not bytes' })), 'INVALID_ARGUMENT', /ArrayBuffer/);
    expectError(() => loadTokenizer({ llama2c: readBytes('models/stories260K/tok512.bin'), vocabSize: -3 }),
      'INVALID_ARGUMENT', /vocabSize/);
    expectError(() => loadTokenizer(/** @type {any} */ ({ json: '{}', llama2c: new Uint8Array(4) })),
      'INVALID_ARGUMENT', /not both/);
  });

  test('TokenizerError is a WebLoRAError with a name and code', () => {
    const e = new TokenizerError('x', { code: 'BAD_ID' });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('TokenizerError');
    expect(e.code).toBe('BAD_ID');
    expect(new TokenizerError('y').code).toBe('BAD_TOKENIZER');
    expect(e).toBeInstanceOf(WebLoRAError);
    // It crosses the worker boundary as itself.
    const back = WebLoRAError.fromJSON(JSON.parse(JSON.stringify(e.toJSON())));
    expect(back).toBeInstanceOf(TokenizerError);
    expect([back.code, back.message]).toEqual(['BAD_ID', 'x']);
  });
});

describe('GPT-2 byte-level BPE (tokenizer.json, old and new merges formats)', () => {
  const vocab = readJson('tokenizers/gpt2/vocab.json');

  test.each(['gpt2', 'tinyGpt2'])('%s: published ids', (name) => {
    const t = tok(name);
    expect(t.kind).toBe('hf');
    expect(t.vocabSize).toBe(50257);
    expect(t.encode('Hello')).toEqual([15496]);
    expect(t.encode(' world')).toEqual([995]);
    expect(t.encode('Hello world')).toEqual([15496, 995]);
    expect(t.encode('<|endoftext|>')).toEqual([50256]);
    expect(t.encode('The quick brown fox')).toEqual(['The', 'Ġquick', 'Ġbrown', 'Ġfox'].map((p) => vocab[p]));
    expect(t.idToToken(15496)).toBe('Hello');
    expect(t.tokenToId('Ġworld')).toBe(995);
    expect(t.tokenToId('no such piece')).toBeNull();
  });

  test.each(['gpt2', 'tinyGpt2'])('%s: no BOS for documents, <|endoftext|> is BOS and EOS', (name) => {
    const t = tok(name);
    expect(t.addsBos).toBe(false);
    expect(t.bosId).toBe(50256);
    expect(t.eosId).toBe(50256);
    expect(t.encode('Hello world', { addSpecialTokens: true })).toEqual([15496, 995]);
  });

  test('without tokenizer_config.json the single special token is still BOS and EOS', () => {
    const t = loadTokenizer({ json: readJson('tokenizers/gpt2/tokenizer.json') });
    expect([t.bosId, t.eosId, t.addsBos]).toEqual([50256, 50256, false]);
  });

  test.each(['gpt2', 'tinyGpt2'])('%s: agrees with a reference BPE over vocab.json + merges.txt', (name) => {
    const ref = gpt2Reference('tokenizers/gpt2', false);
    for (const text of [...ROUND_TRIP_TEXTS, DOCS_TEXT.slice(0, 20000)]) {
      expect(tok(name).encode(text)).toEqual(ref(text));
    }
  });

  test('tokenizer.json truncation settings do not cut encodings', () => {
    // The old gpt2 tokenizer.json carries truncation max_length 50; a training encoder must not apply it.
    expect(tok('gpt2').encode(`${'word '.repeat(199)}word`).length).toBe(200);
  });

  test('decode keeps spaces before punctuation (its config sets clean_up_tokenization_spaces)', () => {
    const text = 'Hello , world . It is ok !';
    expect(tok('gpt2').decode(tok('gpt2').encode(text))).toBe(text);
  });
});

describe('SmolLM byte-level BPE', () => {
  const vocab = readJson('tokenizers/smollm-135m/vocab.json');

  test('known ids, digits split one by one', () => {
    const t = tok('smollm');
    expect(t.vocabSize).toBe(49152);
    expect(t.encode('<|im_start|>')).toEqual([1]);
    expect(t.encode('<|endoftext|>')).toEqual([0]);
    expect(t.encode('<|im_end|>')).toEqual([2]);
    expect(t.tokenToId('<|im_start|>')).toBe(1);
    expect(t.encode('12345')).toEqual(['1', '2', '3', '4', '5'].map((d) => vocab[d]));
    expect(t.encode('Hello world')).toEqual([vocab.Hello, vocab['Ġworld']]);
    expect(t.encode('<|im_start|>user\nHi<|im_end|>')).toEqual(
      [1, vocab.user, vocab['Ċ'], vocab.Hi, 2]);
  });

  test('no BOS for documents (no post-processor, no add_bos_token)', () => {
    const t = tok('smollm');
    expect(t.addsBos).toBe(false);
    expect(t.encode('Hello', { addSpecialTokens: true })).toEqual(t.encode('Hello'));
    // tokenizer_config.json names them; bos/eos ids are what it says.
    expect([t.bosId, t.eosId]).toEqual([1, 2]);
  });

  test('agrees with a reference BPE over vocab.json + merges.txt (digits isolated first)', () => {
    const ref = gpt2Reference('tokenizers/smollm-135m', true);
    for (const text of [...ROUND_TRIP_TEXTS, DOCS_TEXT.slice(0, 20000)]) {
      expect(tok('smollm').encode(text)).toEqual(ref(text));
    }
  });
});

describe('Llama-2 SentencePiece BPE with byte fallback (tokenizer.json)', () => {
  const vocab = readJson('tokenizers/llama2-tinyllama/tokenizer.json').model.vocab;

  test('published ids, with the SentencePiece prefix space', () => {
    const t = tok('llama');
    expect(t.vocabSize).toBe(32000);
    expect(t.encode('Hello')).toEqual([15043]);
    expect(t.encode('Hello world')).toEqual([15043, 3186]);
    expect(t.encode('Hello world', { addSpecialTokens: true })).toEqual([1, 15043, 3186]);
    expect(t.encode('Hello world')).toEqual([vocab['▁Hello'], vocab['▁world']]);
    // "\n" is not a piece: byte fallback <0x0A> = 13.
    expect(t.encode('a\nb')).toEqual([vocab['▁a'], 13, vocab.b]);
    expect(t.idToToken(15043)).toBe('▁Hello');
  });

  test('documents start with BOS (from tokenizer_config.json and from the post-processor alone)', () => {
    const t = tok('llama');
    expect([t.addsBos, t.bosId, t.eosId]).toEqual([true, 1, 2]);
    const bare = loadTokenizer({ json: readJson('tokenizers/llama2-tinyllama/tokenizer.json') });
    expect([bare.addsBos, bare.bosId]).toEqual([true, 1]);
    expect(bare.encode('Hello', { addSpecialTokens: true })).toEqual([1, 15043]);
  });

  test('a character outside the vocabulary becomes its UTF-8 bytes', () => {
    // U+1F600 is F0 9F 98 80; byte tokens are <0xNN> = NN + 3.
    expect(tok('llama').encode('😀')).toEqual([29871, 0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
  });

  test('splitting long words at merge boundaries changes no ids (vs. the library on whole text)', () => {
    const raw = new HfTokenizer(readJson('tokenizers/llama2-tinyllama/tokenizer.json'), {});
    const texts = [DOCS_TEXT.slice(0, 30000), ROUND_TRIP_TEXTS.join(' '), 'a'.repeat(300), '你好世界'.repeat(100)];
    for (const text of texts) {
      expect(tok('llama').encode(text)).toEqual(raw.encode(text, { add_special_tokens: false }).ids);
    }
    const rawGpt2 = new HfTokenizer(readJson('tokenizers/gpt2/tokenizer.json'), {});
    for (const text of ['x'.repeat(500), 'https://example.com/' + 'abcdefghij'.repeat(40), '漢字'.repeat(200)]) {
      expect(tok('gpt2').encode(text)).toEqual(rawGpt2.encode(text, { add_special_tokens: false }).ids);
    }
  });
});

describe('llama2.c tokenizer.bin', () => {
  test('the 32000-id tokenizer.bin holds the same vocabulary as tokenizer.json', () => {
    const bin = tok('llama2c32k');
    const hf = tok('llama');
    expect(bin.kind).toBe('llama2c');
    expect(bin.vocabSize).toBe(32000);
    for (let id = 0; id < 32000; id++) {
      // llama2.c's exporter writes U+2581 as a space and wraps BOS/EOS in newlines.
      const want = id === 1 ? '\n<s>\n' : id === 2 ? '\n</s>\n' : hf.idToToken(id).replaceAll('▁', ' ');
      if (bin.idToToken(id) !== want) expect([id, bin.idToToken(id)]).toEqual([id, want]);
    }
    expect(bin.tokenToId(' Hello')).toBe(15043);
  });

  test('agrees with the tokenizer.json encoding of ordinary text', () => {
    const bin = tok('llama2c32k');
    const hf = tok('llama');
    expect(bin.encode('Hello')).toEqual([15043]);
    expect(bin.encode('Hello world', { addSpecialTokens: true })).toEqual([1, 15043, 3186]);
    for (const text of [...DOCS_TEXT.split('\n').filter((l) => l.trim()), ...ROUND_TRIP_TEXTS.slice(0, 5)]) {
      expect(bin.encode(text)).toEqual(hf.encode(text));
    }
    const long = DOCS_TEXT.repeat(4);
    expect(bin.encode(long)).toEqual(hf.encode(long));
  });

  test.each([
    ['stories', 'models/stories260K/tok512.bin'],
    ['aidreams', 'models/aidreams260K/tok512.bin'],
    ['llama2c32k', 'tokenizers/llama2-tinyllama/tokenizer.llama2c.bin'],
  ])('%s: same ids as a direct transcription of run.c encode()', (name, file) => {
    const ref = runcReference(readLlama2cVocab(readBytes(file)));
    const texts = [
      ...ROUND_TRIP_TEXTS,
      'Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.',
      // Equal-score pairs side by side: run.c merges the leftmost first.
      'aaaaaaa bbbbb   oooo eeeee lll ttttt  !!!!! ......',
      DOCS_TEXT.slice(0, 1500),
      '',
    ];
    for (const text of texts) {
      expect(tok(name).encode(text)).toEqual(ref(text, false));
      expect(tok(name).encode(text, { addSpecialTokens: true })).toEqual(ref(text, true));
    }
  });

  test('stories260K tok512.bin matches tok512.vocab.json piece by piece and score by score', () => {
    const { vocab, max_token_length: maxLen } = readJson('models/stories260K/tok512.vocab.json');
    const t = tok('stories');
    expect(t.vocabSize).toBe(vocab.length);
    vocab.forEach(([piece], id) => {
      if (t.idToToken(id) !== piece) expect([id, t.idToToken(id)]).toEqual([id, piece]);
      expect(t.tokenToId(piece)).toBe(id);
    });
    // The reference encoder over the JSON scores gives the same ids as the parsed binary.
    const ref = runcReference({ pieces: vocab.map(([p]) => p), scores: vocab.map(([, s]) => s), maxLen });
    const text = 'Once upon a time, Tom and Sue went to the park. They saw a big dog! "Hi," said Sue.';
    expect(t.encode(text, { addSpecialTokens: true })).toEqual(ref(text, true));
  });

  test('BOS/EOS ids, BOS for documents, decode rules of run.c', () => {
    const t = tok('stories');
    expect([t.bosId, t.eosId, t.addsBos]).toEqual([1, 2, true]);
    const ids = t.encode('Hello world', { addSpecialTokens: true });
    expect(ids[0]).toBe(1);
    // The dummy-prefix space is dropped after BOS (and at the start without BOS); BOS prints as its piece.
    expect(t.decode(ids, { skipSpecialTokens: true })).toBe('Hello world');
    expect(t.decode(ids)).toBe('\n<s>\nHello world');
    expect(t.decode(ids.slice(1))).toBe('Hello world');
    // <0xNN> pieces are raw bytes: "ü" is C3 BC -> ids 0xC3 + 3, 0xBC + 3 as "ü" is not a piece here.
    expect(t.tokenToId('ü')).toBeNull();
    expect(t.decode([0xc3 + 3, 0xbc + 3])).toBe('ü');
    expect(t.encode('ü')).toEqual([t.tokenToId(' '), 0xc3 + 3, 0xbc + 3]);
  });
});

describe('round trips', () => {
  test.each(ALL)('%s: decode(encode(x)) === x', (name) => {
    const t = tok(name);
    for (const text of [...ROUND_TRIP_TEXTS, DOCS_TEXT]) {
      const ids = t.encode(text);
      for (const id of ids) expect(Number.isInteger(id) && id >= 0 && id < t.vocabSize).toBe(true);
      expect(t.decode(ids)).toBe(text);
      // With BOS (where the model uses it) the text comes back once the special token is skipped; SentencePiece
      // tokenizers drop their dummy-prefix space after BOS, so nothing else changes.
      expect(t.decode(t.encode(text, { addSpecialTokens: true }), { skipSpecialTokens: true })).toBe(text);
    }
    expect(t.encode('')).toEqual([]);
    expect(t.decode([])).toBe('');
  });
});

describe('stream decoder', () => {
  const streamAll = (t, ids, options) => {
    const d = t.createStreamDecoder(options);
    const parts = ids.map((id) => d.push(id));
    parts.push(d.flush());
    return parts;
  };

  test.each(ALL)('%s: pieces add up to decode(ids) and never contain U+FFFD', (name) => {
    const t = tok(name);
    for (const text of [...ROUND_TRIP_TEXTS, DOCS_TEXT.slice(0, 3000)]) {
      for (const addSpecialTokens of [false, true]) {
        const ids = t.encode(text, { addSpecialTokens });
        for (const skipSpecialTokens of [false, true]) {
          const parts = streamAll(t, ids, { skipSpecialTokens });
          expect(parts.join('')).toBe(t.decode(ids, { skipSpecialTokens }));
          for (const p of parts) expect(p.includes('\uFFFD')).toBe(false);
        }
      }
    }
  });

  test.each(['llama', 'llama2c32k'])('%s: byte-fallback pieces are held until the character is complete', (name) => {
    const t = tok(name);
    const ids = t.encode('a😀b');
    const bytes = [0xf0, 0x9f, 0x98, 0x80].map((b) => b + 3);
    const at = ids.indexOf(bytes[0]);
    expect(ids.slice(at, at + 4)).toEqual(bytes);
    const d = t.createStreamDecoder();
    const out = ids.map((id) => d.push(id));
    expect(out.slice(at, at + 3)).toEqual(['', '', '']);
    expect(out.join('') + d.flush()).toBe('a😀b');
  });

  test('GPT-2: byte-level pieces of one character are held until it is complete', () => {
    const t = tok('gpt2');
    const ids = t.encode('🎉');
    expect(ids.length).toBeGreaterThan(1);
    const d = t.createStreamDecoder();
    const out = ids.map((id) => d.push(id));
    expect(out.slice(0, -1).every((s) => s === '')).toBe(true);
    expect(out.join('') + d.flush()).toBe('🎉');
  });

  test('flush returns held-back text and resets the decoder', () => {
    const t = tok('llama2c32k');
    const d = t.createStreamDecoder();
    expect(d.push(0xf0 + 3)).toBe('');
    expect(d.flush()).toBe('\uFFFD');
    expect(d.push(15043)).toBe('Hello');
  });

  test('rejects bad ids', () => {
    expectError(() => tok('gpt2').createStreamDecoder().push(50257), 'BAD_ID', /50257/);
  });
});

describe('errors', () => {
  test.each(ALL)('%s: decode and idToToken reject ids outside the vocabulary', (name) => {
    const t = tok(name);
    for (const bad of [t.vocabSize, -1, 1.5, Number.NaN, '3', null]) {
      expectError(() => t.decode([5, /** @type {any} */ (bad)]), 'BAD_ID', /index 1/);
    }
    expectError(() => t.idToToken(t.vocabSize), 'BAD_ID');
    expectError(() => t.decode(/** @type {any} */ (42)), 'INVALID_ARGUMENT');
    expectError(() => t.decode(/** @type {any} */ (null)), 'INVALID_ARGUMENT');
    expect(t.decode(Int32Array.of(5, 6))).toBe(t.decode([5, 6]));
  });

  test.each(ALL)('%s: encode rejects non-strings', (name) => {
    for (const bad of [42, null, undefined, ['a'], new Uint8Array(2)]) {
      expectError(() => tok(name).encode(/** @type {any} */ (bad)), 'INVALID_ARGUMENT', /string/);
    }
    expectError(() => tok(name).tokenToId(/** @type {any} */ (7)), 'INVALID_ARGUMENT');
  });

  test('bad tokenizer.json', () => {
    expectError(() => loadTokenizer({ json: '{"model": {"type": "BPE", "vocab": ' }), 'BAD_TOKENIZER',
      /not valid JSON/);
    expectError(() => loadTokenizer({ json: '[1, 2]' }), 'BAD_TOKENIZER', /JSON object/);
    expectError(() => loadTokenizer({ json: { version: '1.0' } }), 'BAD_TOKENIZER', /model/);
    expectError(() => loadTokenizer({ json: { model: { type: 'BPE', vocab: { a: 'zero' }, merges: [] } } }),
      'BAD_TOKENIZER', /non-negative integer/);
    expectError(() => loadTokenizer({ json: { model: { type: 'NoSuchModel', vocab: { a: 0 } } } }),
      'BAD_TOKENIZER', /NoSuchModel/);
    const good = readJson('models/tiny-gpt2/tokenizer.json');
    expectError(() => loadTokenizer({ json: good, config: '{oops' }), 'BAD_TOKENIZER', /tokenizer_config.json/);
    expectError(() => loadTokenizer({ json: { ...good, added_tokens: 'x' } }), 'BAD_TOKENIZER', /added_tokens/);
  });

  test('truncated tokenizer.bin', () => {
    const bytes = readBytes('models/stories260K/tok512.bin');
    for (const len of [0, 3, 4, 9, 100, bytes.length - 1]) {
      expectError(() => loadTokenizer({ llama2c: bytes.slice(0, len) }), 'BAD_TOKENIZER', /truncated/);
    }
    expectError(() => loadTokenizer({ llama2c: bytes, vocabSize: 513 }), 'BAD_TOKENIZER', /truncated.*513/);
    // Fewer entries than the file holds is allowed (run.c reads the model's vocab_size), but not fewer than the
    // 259 fixed ones.
    expect(loadTokenizer({ llama2c: bytes, vocabSize: 300 }).vocabSize).toBe(300);
    expectError(() => loadTokenizer({ llama2c: bytes, vocabSize: 100 }), 'BAD_TOKENIZER', /at least 259/);
  });

  test('corrupt tokenizer.bin', () => {
    const bytes = readBytes('models/stories260K/tok512.bin');
    const corrupt = (edit) => {
      const copy = bytes.slice();
      edit(new DataView(copy.buffer));
      return copy;
    };
    // Entry 0 starts at byte 4: f32 score, then int32 length.
    expectError(() => loadTokenizer({ llama2c: corrupt((v) => v.setInt32(8, -5, true)) }), 'BAD_TOKENIZER',
      /entry 0 has length -5/);
    expectError(() => loadTokenizer({ llama2c: corrupt((v) => v.setInt32(8, 1 << 30, true)) }), 'BAD_TOKENIZER',
      /entry 0 has length/);
    expectError(() => loadTokenizer({ llama2c: corrupt((v) => v.setInt32(0, 0, true)) }), 'BAD_TOKENIZER',
      /max_token_length/);
    expectError(() => loadTokenizer({ llama2c: corrupt((v) => v.setFloat32(4, Number.NaN, true)) }),
      'BAD_TOKENIZER', /NaN/);
    // Overwrite the "0" of "<0x00>" (entry 3) so the byte-fallback table is wrong.
    const at = findBytes(bytes, new TextEncoder().encode('<0x00>'));
    expectError(() => loadTokenizer({ llama2c: corrupt((v) => v.setUint8(at + 4, 0x37)) }), 'BAD_TOKENIZER',
      /entry 3 .*<0x00>/);
    // A tokenizer.json handed over as bytes is not a tokenizer.bin.
    expectError(() => loadTokenizer({ llama2c: new TextEncoder().encode('{"model": {}}') }), 'BAD_TOKENIZER');
  });
});

/** @param {Uint8Array} hay @param {Uint8Array} needle */
function findBytes(hay, needle) {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('needle not found');
}

// ---------------------------------------------------------------------------------------------------------------
// Reference encoders, written from the published algorithms, sharing no code with web/.

/**
 * OpenAI's GPT-2 encoder.py: bytes -> printable unicode table, regex pre-split, then repeatedly merge every
 * occurrence of the lowest-ranked pair from merges.txt; ids from vocab.json.
 * @param {string} dir folder with vocab.json and merges.txt
 * @param {boolean} isolateDigits SmolLM's Digits(individual_digits) pre-tokenizer runs first
 */
function gpt2Reference(dir, isolateDigits) {
  const vocab = readJson(`${dir}/vocab.json`);
  const ranks = new Map();
  readText(`${dir}/merges.txt`).split('\n').filter((l) => l && !l.startsWith('#version'))
    .forEach((l, i) => ranks.set(l, i));
  const printable = [];
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const byteChar = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    byteChar[b] = String.fromCharCode(printable.includes(b) ? b : 256 + extra++);
  }
  const pattern = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  const bpe = (word) => {
    let parts = Array.from(word);
    for (;;) {
      let best = null;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = ranks.get(`${parts[i]} ${parts[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = [parts[i], parts[i + 1]];
        }
      }
      if (!best) return parts;
      const merged = [];
      for (let i = 0; i < parts.length; i++) {
        if (i + 1 < parts.length && parts[i] === best[0] && parts[i + 1] === best[1]) {
          merged.push(best[0] + best[1]);
          i++;
        } else {
          merged.push(parts[i]);
        }
      }
      parts = merged;
    }
  };
  return (text) => {
    const chunks = isolateDigits ? text.split(/(\p{N})/u).filter((s) => s) : [text];
    const ids = [];
    for (const chunk of chunks) {
      for (const word of chunk.match(pattern) ?? []) {
        const mapped = Array.from(new TextEncoder().encode(word), (b) => byteChar[b]).join('');
        for (const piece of bpe(mapped)) {
          if (!(piece in vocab)) throw new Error(`reference: ${piece} not in vocab`);
          ids.push(vocab[piece]);
        }
      }
    }
    return ids;
  };
}

/**
 * Reads tokenizer.bin for the reference: int32 max_token_length, then per entry f32 score, int32 length, bytes.
 * @param {Uint8Array} bytes
 */
function readLlama2cVocab(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pieces = [];
  const scores = [];
  let o = 4;
  while (o < bytes.length) {
    scores.push(view.getFloat32(o, true));
    const len = view.getInt32(o + 4, true);
    pieces.push(new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes.subarray(o + 8, o + 8 + len)));
    o += 8 + len;
  }
  return { pieces, scores, maxLen: view.getInt32(0, true) };
}

/**
 * llama2.c run.c encode() as written there: BOS, dummy prefix " ", one symbol per code point (else its bytes + 3),
 * then a full scan for the best-scoring mergeable pair (strictly better than -1e10, leftmost on ties) per merge.
 * @param {{ pieces: string[], scores: number[] }} vocab
 */
function runcReference({ pieces, scores }) {
  const lookup = new Map();
  pieces.forEach((p, i) => {
    if (!lookup.has(p)) lookup.set(p, i);
  });
  return (text, bos) => {
    const tokens = [];
    if (bos) tokens.push(1);
    if (text !== '') tokens.push(lookup.get(' '));
    for (const ch of text) {
      const id = lookup.get(ch);
      if (id !== undefined) tokens.push(id);
      else for (const b of new TextEncoder().encode(ch)) tokens.push(b + 3);
    }
    for (;;) {
      let bestScore = -1e10;
      let bestId = -1;
      let bestIdx = -1;
      for (let i = 0; i + 1 < tokens.length; i++) {
        const id = lookup.get(pieces[tokens[i]] + pieces[tokens[i + 1]]);
        if (id !== undefined && scores[id] > bestScore) {
          bestScore = scores[id];
          bestId = id;
          bestIdx = i;
        }
      }
      if (bestIdx === -1) break;
      tokens.splice(bestIdx, 2, bestId);
    }
    return tokens;
  };
}
