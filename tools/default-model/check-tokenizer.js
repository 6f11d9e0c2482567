#!/usr/bin/env node
// check-tokenizer.js: proves a trained tokenizer works through the package's own loader: decode(encode(x)) == x on
// every corpus document and on awkward Unicode, ids agree with a plain rank-order BPE over the same merges, and the
// special token is EOS. Exits non-zero on the first failure.
// Usage: node tools/default-model/check-tokenizer.js --tokenizer DIR --data corpus.jsonl
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { ByteLevelPreTokenizer } from '@huggingface/tokenizers';
import { loadTokenizer } from '../../web/formats/tokenizer.js';
import { EOS, readJsonl } from './train-tokenizer.js';

const UNICODE_SAMPLES = [
  'Hello, world!',
  '  leading spaces, trailing spaces   ',
  'tabs\tand\r\nWindows line ends\n\n\nand blank lines',
  'naïve café, Ærøskøbing, Straße, façade, señor',
  'Ελληνικά, русский текст, עברית, العربية',
  '日本語のテキストと中文文本、한국어',
  'emoji 🙂🚀 and a family 👩‍👩‍👧 and flags 🇩🇪🇯🇵',
  'combining: e\u0301 a\u0308 n\u0303; zero width\u200bspace; BOM\ufeff',
  'math: ∀x ∈ ℝ, x² ≥ 0; ½ ≠ 0.5?',
  'control \u0001\u0007\u001b[0m chars and NUL \u0000 end',
  `text around the special ${EOS} token`,
  '',
  ' ',
  '\n',
  "It's, we're, they'll, I'd, you've, 'quoted', \"double\"",
  '1234567890 3.14159 1e-9 0x7fff',
];

function fail(msg) {
  process.stderr.write(`check-tokenizer: FAIL: ${msg}\n`);
  process.exit(1);
}

/** The BPE written out plainly: repeatedly merge the lowest-rank adjacent pair of each pre-tokenized word. */
function referenceEncoder(json) {
  const rank = new Map(json.model.merges.map(([a, b], i) => [`${a} ${b}`, i]));
  const vocab = json.model.vocab;
  const pre = new ByteLevelPreTokenizer(json.pre_tokenizer);
  return (text) => {
    const ids = [];
    for (const word of pre.pre_tokenize_text(text)) {
      let parts = Array.from(word);
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i + 1 < parts.length; i++) {
          const r = rank.get(`${parts[i]} ${parts[i + 1]}`);
          if (r !== undefined && r < bestRank) {
            bestRank = r;
            best = i;
          }
        }
        if (best < 0) break;
        parts = [...parts.slice(0, best), parts[best] + parts[best + 1], ...parts.slice(best + 2)];
      }
      for (const p of parts) ids.push(vocab[p]);
    }
    return ids;
  };
}

async function main() {
  const { values } = parseArgs({ options: {
    tokenizer: { type: 'string', default: 'build/default-model/tokenizer' },
    data: { type: 'string', default: 'build/default-model/corpus.jsonl' },
  } });
  const jsonText = await readFile(path.join(values.tokenizer, 'tokenizer.json'), 'utf8');
  const config = await readFile(path.join(values.tokenizer, 'tokenizer_config.json'), 'utf8');
  const json = JSON.parse(jsonText);
  const tok = loadTokenizer({ json: jsonText, config });
  if (tok.eosId !== 0 || tok.bosId !== 0) fail(`expected ${EOS} at id 0 as EOS and BOS, got eos ${tok.eosId}, bos ${tok.bosId}`);
  if (tok.addsBos) fail('documents must not start with BOS');
  if (tok.vocabSize !== Object.keys(json.model.vocab).length) fail(`vocab size ${tok.vocabSize} differs from the file`);
  const special = tok.encode(EOS);
  if (special.length !== 1 || special[0] !== 0) fail(`"${EOS}" encodes to ${JSON.stringify(special)}, not [0]`);

  const texts = await readJsonl(values.data);
  const reference = referenceEncoder(json);
  const started = performance.now();
  let chars = 0;
  let tokens = 0;
  texts.forEach((t, i) => {
    const ids = tok.encode(t);
    const back = tok.decode(ids);
    if (back !== t) fail(`corpus document ${i} does not round-trip: ${JSON.stringify(t.slice(0, 80))} -> ${JSON.stringify(back.slice(0, 80))}`);
    // The plain encoder is slow; every 7th document is plenty to catch a misread merge list.
    if (i % 7 === 0) {
      const want = reference(t);
      if (want.join(',') !== ids.join(',')) fail(`corpus document ${i}: ids differ from plain BPE (${ids.slice(0, 12)} vs ${want.slice(0, 12)})`);
    }
    chars += t.length;
    tokens += ids.length;
  });
  const secs = (performance.now() - started) / 1000;
  for (const s of UNICODE_SAMPLES) {
    const ids = tok.encode(s);
    const back = tok.decode(ids);
    if (back !== s) fail(`sample ${JSON.stringify(s)} decodes as ${JSON.stringify(back)}`);
    // Streaming decode must add up to the same text.
    const dec = tok.createStreamDecoder();
    let streamed = '';
    for (const id of ids) streamed += dec.push(id);
    streamed += dec.flush();
    if (streamed !== s) fail(`sample ${JSON.stringify(s)} streams as ${JSON.stringify(streamed)}`);
  }
  process.stdout.write(`tokenizer ok: ${tok.vocabSize} tokens; ${texts.length} corpus documents and ${UNICODE_SAMPLES.length} `
    + `Unicode samples round-trip; ${tokens} tokens, ${(chars / tokens).toFixed(2)} characters per token `
    + `(encode + decode in ${secs.toFixed(1)} s)\n`);
}

await main();
