// Tokenizers for the package: Hugging Face tokenizer.json (through @huggingface/tokenizers) and llama2.c
// tokenizer.bin, behind one Tokenizer with checked inputs, exact decoding, a UTF-8-safe stream decoder and the
// model's chat template (tokenizer_config.json chat_template, rendered by @huggingface/jinja).

import * as tokenizers from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { InvalidArgumentError, TokenizerError } from '../errors.js';
export { TokenizerError } from '../errors.js';
import { Llama2cTokenizer, parseLlama2cTokenizer } from './tokenizer-llama2c.js';

const HfTokenizer = tokenizers.Tokenizer;
/** The library's pre-tokenizer base class: its modules export it, its type declarations do not (yet). */
const PreTokenizer = /** @type {any} */ (tokenizers).PreTokenizer;

/**
 * @typedef {object} HfTokenizerSource
 * @property {object|string} json tokenizer.json, parsed or as text
 * @property {object|string} [config] tokenizer_config.json (bos/eos tokens, add_bos_token, chat_template)
 */
/**
 * @typedef {object} ChatMessage
 * @property {string} role 'system', 'user' or 'assistant' (the template decides which it accepts)
 * @property {string} content
 */
/**
 * @typedef {object} Llama2cTokenizerSource
 * @property {ArrayBuffer|ArrayBufferView} llama2c tokenizer.bin bytes
 * @property {number} [vocabSize] entries to read (the model's vocab_size); default: all entries in the file
 */
/** @typedef {HfTokenizerSource | Llama2cTokenizerSource} TokenizerSource */
/**
 * @typedef {object} StreamDecoder
 * @property {(id: number) => string} push adds one id; returns the text it completed ('' while a multi-byte
 *   character is still incomplete)
 * @property {() => string} flush returns whatever is still held back and resets the decoder
 */

/**
 * Loads a tokenizer from tokenizer.json (+ optional tokenizer_config.json) or a llama2.c tokenizer.bin.
 * @param {TokenizerSource} source
 * @returns {Tokenizer}
 */
export function loadTokenizer(source) {
  if (!source || typeof source !== 'object') {
    throw new InvalidArgumentError('loadTokenizer(source): source must be { json, config? } or ' +
      '{ llama2c, vocabSize? }');
  }
  const hasJson = 'json' in source && source.json !== undefined;
  const hasBin = 'llama2c' in source && source.llama2c !== undefined;
  if (hasJson && hasBin) {
    throw new InvalidArgumentError('loadTokenizer(source): give either `json` or `llama2c`, not both');
  }
  if (hasBin) {
    const { llama2c, vocabSize } = /** @type {Llama2cTokenizerSource} */ (source);
    let bytes;
    if (llama2c instanceof ArrayBuffer) {
      bytes = new Uint8Array(llama2c);
    } else if (ArrayBuffer.isView(llama2c)) {
      bytes = new Uint8Array(llama2c.buffer, llama2c.byteOffset, llama2c.byteLength);
    } else {
      throw new InvalidArgumentError('loadTokenizer: llama2c must be an ArrayBuffer or Uint8Array');
    }
    if (vocabSize !== undefined && !(Number.isInteger(vocabSize) && vocabSize > 0)) {
      throw new InvalidArgumentError(`loadTokenizer: vocabSize must be a positive integer, got ${vocabSize}`);
    }
    return new Tokenizer(new Llama2cTokenizer(parseLlama2cTokenizer(bytes, vocabSize)));
  }
  if (hasJson) {
    const { json, config } = /** @type {HfTokenizerSource} */ (source);
    return new Tokenizer(new HfBackend(parseJson(json, 'tokenizer.json'),
      config === undefined || config === null ? {} : parseJson(config, 'tokenizer_config.json')));
  }
  throw new InvalidArgumentError('loadTokenizer(source): source must have a `json` (tokenizer.json) or ' +
    'a `llama2c` (tokenizer.bin) property');
}

/**
 * @typedef {object} Backend
 * @property {'hf'|'llama2c'} kind
 * @property {number} vocabSize
 * @property {number|null} bosId
 * @property {number|null} eosId
 * @property {boolean} addsBos
 * @property {(text: string, addSpecialTokens: boolean) => number[]} encode
 * @property {(ids: number[], skipSpecialTokens: boolean) => string} decode
 * @property {(id: number) => boolean} hasId whether an in-range id has a token (tokenizer.json may leave gaps)
 * @property {(id: number) => string|undefined} idToToken
 * @property {(piece: string) => number|null} tokenToId
 * @property {Tokenizer['source']} source
 * @property {string|null} chatTemplate Jinja source of the chat template, when the model has one
 * @property {Record<string, string|string[]>} specialTokens the special token texts templates may use (bos_token...)
 */

/** A loaded tokenizer: the same surface for tokenizer.json and llama2.c tokenizer.bin. */
export class Tokenizer {
  /** @type {Backend} */
  #backend;

  /** @param {Backend} backend (use loadTokenizer) */
  constructor(backend) {
    this.#backend = backend;
  }

  /** @returns {'hf'|'llama2c'} */
  get kind() { return this.#backend.kind; }
  /** @returns {number} ids are 0..vocabSize-1 */
  get vocabSize() { return this.#backend.vocabSize; }
  /** @returns {number|null} */
  get bosId() { return this.#backend.bosId; }
  /** @returns {number|null} */
  get eosId() { return this.#backend.eosId; }
  /** @returns {boolean} whether documents for this model start with BOS (what encode adds with addSpecialTokens) */
  get addsBos() { return this.#backend.addsBos; }
  /**
   * What the tokenizer was built from, for writers of other formats (GGUF): the parsed tokenizer.json and
   * tokenizer_config.json, or a llama2.c vocabulary's pieces (bytes, spaces as 0x20) and scores.
   * @returns {{ kind: 'hf', json: Record<string, any>, config: Record<string, any> } |
   *   { kind: 'llama2c', pieces: Uint8Array[], scores: Float32Array }}
   */
  get source() { return this.#backend.source; }

  /** @returns {string|null} the chat template (Jinja) from tokenizer_config.json, null when there is none */
  get chatTemplate() { return this.#backend.chatTemplate; }

  /** @type {Template|null} compiled on first use */
  #template = null;

  /**
   * Renders a conversation with the model's chat template, as transformers' apply_chat_template(tokenize=False)
   * does: the template sees `messages`, `add_generation_prompt` and the special token texts (bos_token,
   * eos_token, ...).
   * @param {ChatMessage[]} messages
   * @param {{ addGenerationPrompt?: boolean }} [options] addGenerationPrompt: end with the opening of the
   *   assistant's turn, for generation
   * @returns {string}
   */
  applyChatTemplate(messages, { addGenerationPrompt = false } = {}) {
    const source = this.#backend.chatTemplate;
    if (source === null) {
      throw new TokenizerError('this tokenizer has no chat template (tokenizer_config.json has no chat_template)',
        { code: 'NO_CHAT_TEMPLATE' });
    }
    if (!Array.isArray(messages) || messages.some((m) => !m || typeof m.role !== 'string' || typeof m.content !== 'string')) {
      throw new InvalidArgumentError('applyChatTemplate: messages must be an array of { role, content } with string values');
    }
    try {
      this.#template ??= new Template(source);
      return this.#template.render({
        ...this.#backend.specialTokens,
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: Boolean(addGenerationPrompt),
      });
    } catch (e) {
      throw new TokenizerError(`the chat template cannot be rendered: ${/** @type {Error} */ (e).message}`,
        { code: 'BAD_CHAT_TEMPLATE', cause: e });
    }
  }

  /**
   * @param {string} text
   * @param {{ addSpecialTokens?: boolean }} [options] addSpecialTokens: add what the model expects around a
   *   document (BOS for Llama-style tokenizers)
   * @returns {number[]}
   */
  encode(text, { addSpecialTokens = false } = {}) {
    if (typeof text !== 'string') {
      throw new InvalidArgumentError(`encode: text must be a string, got ${describe(text)}`);
    }
    return this.#backend.encode(text, Boolean(addSpecialTokens));
  }

  /**
   * The exact text the ids stand for (no clean-up of spaces before punctuation), so decode(encode(x)) === x up to
   * the tokenizer's own normalisation.
   * @param {ArrayLike<number>} ids
   * @param {{ skipSpecialTokens?: boolean }} [options]
   * @returns {string}
   */
  decode(ids, { skipSpecialTokens = false } = {}) {
    return this.#backend.decode(this.#checkIds(ids, 'decode'), Boolean(skipSpecialTokens));
  }

  /** @param {number} id @returns {string} the vocabulary piece of `id` (e.g. 'ĠHello', '▁Hello', ' Hello') */
  idToToken(id) {
    this.#checkIds([id], 'idToToken');
    return /** @type {string} */ (this.#backend.idToToken(id));
  }

  /** @param {string} piece a vocabulary piece as idToToken returns it @returns {number|null} */
  tokenToId(piece) {
    if (typeof piece !== 'string') {
      throw new InvalidArgumentError(`tokenToId: piece must be a string, got ${describe(piece)}`);
    }
    return this.#backend.tokenToId(piece);
  }

  /**
   * Decodes ids one at a time for streaming generation. The pieces it returns add up to exactly
   * decode(allIds, options); text is held back while it ends inside a multi-byte character, so no U+FFFD is
   * emitted for valid output.
   * @param {{ skipSpecialTokens?: boolean }} [options]
   * @returns {StreamDecoder}
   */
  createStreamDecoder(options = {}) {
    /** @type {number[]} */
    let ids = [];
    // Decoding a short window [prefix, read) vs [prefix, end) and emitting the difference keeps each step cheap
    // and keeps context for decoders that look at the first token of a string (SentencePiece drops its space).
    let prefix = 0;
    let read = 0;
    const window = (/** @type {number} */ from, /** @type {number} */ to) =>
      (to > from ? this.decode(ids.slice(from, to), options) : '');
    return {
      push: (id) => {
        this.#checkIds([id], 'push');
        ids.push(id);
        const before = window(prefix, read);
        const after = window(prefix, ids.length);
        if (after.length <= before.length || after.endsWith('\uFFFD') || !after.startsWith(before)) return '';
        prefix = read;
        read = ids.length;
        // Drop ids no window can reach again, so a long generation keeps constant memory.
        if (prefix > 0) {
          ids = ids.slice(prefix);
          read -= prefix;
          prefix = 0;
        }
        return after.slice(before.length);
      },
      flush: () => {
        const before = window(prefix, read);
        const after = window(prefix, ids.length);
        ids = [];
        prefix = 0;
        read = 0;
        return after.startsWith(before) ? after.slice(before.length) : after;
      },
    };
  }

  /**
   * @param {unknown} ids
   * @param {string} where
   * @returns {number[]}
   */
  #checkIds(ids, where) {
    if (ids === null || typeof ids !== 'object' || typeof (/** @type {any} */ (ids).length) !== 'number') {
      throw new InvalidArgumentError(`${where}: ids must be an array of integers, got ${describe(ids)}`);
    }
    const list = Array.from(/** @type {ArrayLike<unknown>} */ (ids));
    const n = this.#backend.vocabSize;
    for (let i = 0; i < list.length; i++) {
      const id = list[i];
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= n || !this.#backend.hasId(id)) {
        throw new TokenizerError(`${where}: id ${describe(id)} at index ${i} is not a token id ` +
          `(vocabulary has ids 0..${n - 1})`, { code: 'BAD_ID' });
      }
    }
    return /** @type {number[]} */ (list);
  }
}

/** @param {unknown} v */
function describe(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  return typeof v;
}

/**
 * @param {unknown} value
 * @param {string} what
 * @returns {Record<string, any>}
 */
function parseJson(value, what) {
  let obj = value;
  if (typeof value === 'string') {
    try {
      obj = JSON.parse(value);
    } catch (e) {
      throw new TokenizerError(`${what} is not valid JSON: ${/** @type {Error} */ (e).message}`,
        { code: 'BAD_TOKENIZER', cause: e });
    }
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new TokenizerError(`${what} must be a JSON object, got ${describe(obj)}`, { code: 'BAD_TOKENIZER' });
  }
  return /** @type {Record<string, any>} */ (obj);
}

/**
 * The content of a tokenizer_config.json token entry: a string or an AddedToken object { content }.
 * @param {unknown} entry
 * @returns {string|null}
 */
function tokenContent(entry) {
  if (typeof entry === 'string') return entry;
  if (entry && typeof entry === 'object' && typeof (/** @type {any} */ (entry).content) === 'string') {
    return /** @type {any} */ (entry).content;
  }
  return null;
}

/**
 * The chat template of a tokenizer_config.json: a Jinja string, or a list of named templates of which "default"
 * (else the first) is the one for conversations.
 * @param {unknown} value
 * @returns {string|null}
 */
function chatTemplateOf(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && value.length > 0
      && value.every((t) => t && typeof t.name === 'string' && typeof t.template === 'string')) {
    return (value.find((t) => t.name === 'default') ?? value[0]).template;
  }
  throw new TokenizerError('tokenizer_config.json: chat_template must be a string or a list of { name, template }',
    { code: 'BAD_TOKENIZER' });
}

/**
 * The TemplateProcessing that builds single sequences, also inside a Sequence post-processor.
 * @param {any} pp
 * @returns {any|null}
 */
function findTemplate(pp) {
  if (!pp || typeof pp !== 'object') return null;
  if (pp.type === 'TemplateProcessing' && Array.isArray(pp.single)) return pp;
  if (pp.type === 'Sequence' && Array.isArray(pp.processors)) {
    for (const p of pp.processors) {
      const t = findTemplate(p);
      if (t) return t;
    }
  }
  return null;
}

/**
 * The single id of a template special token (its entry in special_tokens, else its vocabulary id).
 * @param {any} template
 * @param {any} item a { SpecialToken: { id } } template item
 * @param {(piece: string) => number|null} lookup
 */
function templateTokenId(template, item, lookup) {
  const name = item?.SpecialToken?.id;
  if (typeof name !== 'string') return null;
  const ids = template.special_tokens?.[name]?.ids;
  if (Array.isArray(ids)) return ids.length === 1 && Number.isInteger(ids[0]) ? ids[0] : null;
  return lookup(name);
}

/**
 * A pre-tokenizer wrapper that cuts long words where no BPE merge can ever join the two sides: between code points
 * a and b such that "ab" occurs in no vocabulary token and no merge result. BPE on the pieces then gives exactly the
 * tokens of BPE on the whole word, but the library's BPE is superlinear in word length, and SentencePiece-style
 * tokenizer.json files (Llama-2) have no pre-tokenizer at all, making a whole document one word (14 s per MB).
 */
class MergeBoundaryPreTokenizer extends PreTokenizer {
  /**
   * @param {((text: string, options?: any) => string[]) | null} inner the tokenizer's own pre-tokenizer
   * @param {() => Set<string>} pairs adjacent code-point pairs that some token contains (built on first use)
   */
  constructor(inner, pairs) {
    super();
    this.inner = inner;
    this.getPairs = pairs;
    /** @type {Set<string>|null} */
    this.pairs = null;
  }

  /**
   * @param {string} text
   * @param {any} [options]
   * @returns {string[]}
   */
  pre_tokenize_text(text, options) {
    const words = this.inner ? this.inner(text, options) : [text];
    // Short words are cheap for the BPE and cached by it; only long ones are worth the pair lookups.
    if (words.every((w) => w.length <= 64)) return words;
    this.pairs ??= this.getPairs();
    /** @type {string[]} */
    const out = [];
    for (const word of words) {
      if (word.length <= 64) {
        out.push(word);
        continue;
      }
      let start = 0;
      let prev = '';
      for (let i = 0; i < word.length;) {
        const cp = /** @type {number} */ (word.codePointAt(i));
        const ch = cp > 0xffff ? word.slice(i, i + 2) : word[i];
        if (i > 0 && !this.pairs.has(prev + ch)) {
          out.push(word.slice(start, i));
          start = i;
        }
        prev = ch;
        i += ch.length;
      }
      out.push(word.slice(start));
    }
    return out;
  }
}

/** Model types the library implements (it would guess at others and encode nothing). */
const SUPPORTED_MODELS = ['BPE', 'WordPiece', 'Unigram'];

/**
 * Replaces Digits pre-tokenizers (also inside a Sequence) with the equivalent Split on \p{N}. The Rust
 * implementation splits on char::is_numeric (Unicode categories Nd, Nl, No), but @huggingface/tokenizers 0.2 uses
 * JavaScript's ASCII-only \d, so SmolLM encoded " ١٢٣" (Arabic-Indic digits) as "ĠÙ" + ... instead of isolating
 * each digit. Split with an Isolated pattern behaves like Digits in both modes (runs of numerals are one match
 * when not individual).
 * @param {any} pre a pre_tokenizer config
 * @returns {any}
 */
function rewriteDigits(pre) {
  if (!pre || typeof pre !== 'object') return pre;
  if (pre.type === 'Digits') {
    return { type: 'Split', pattern: { Regex: pre.individual_digits ? '\\p{N}' : '\\p{N}+' },
      behavior: 'Isolated', invert: false };
  }
  if (pre.type === 'Sequence' && Array.isArray(pre.pretokenizers)) {
    return { ...pre, pretokenizers: pre.pretokenizers.map(rewriteDigits) };
  }
  return pre;
}

/** tokenizer.json through @huggingface/tokenizers. */
class HfBackend {
  /**
   * @param {Record<string, any>} json
   * @param {Record<string, any>} config
   */
  constructor(json, config) {
    const model = json.model;
    if (!model || typeof model !== 'object' || typeof model.type !== 'string' ||
        !model.vocab || typeof model.vocab !== 'object') {
      throw new TokenizerError('tokenizer.json has no model with a type and a vocab ' +
        '(is this a Hugging Face tokenizer.json?)', { code: 'BAD_TOKENIZER' });
    }
    if (json.added_tokens !== undefined && json.added_tokens !== null && !Array.isArray(json.added_tokens)) {
      throw new TokenizerError('tokenizer.json: added_tokens must be an array', { code: 'BAD_TOKENIZER' });
    }
    if (!SUPPORTED_MODELS.includes(model.type)) {
      throw new TokenizerError(`tokenizer.json model type ${JSON.stringify(model.type)} is not ` +
        `supported (supported: ${SUPPORTED_MODELS.join(', ')})`, { code: 'BAD_TOKENIZER' });
    }
    const addedTokens = json.added_tokens ?? [];
    /** @readonly */
    this.kind = /** @type {const} */ ('hf');
    this.vocabSize = vocabSizeOf(model, addedTokens);
    // Fields the file may omit are null for the library, which requires them present; the caller's object is not
    // modified.
    const spec = {
      ...json,
      normalizer: json.normalizer ?? null,
      pre_tokenizer: rewriteDigits(json.pre_tokenizer ?? null),
      post_processor: json.post_processor ?? null,
      decoder: json.decoder ?? null,
      added_tokens: addedTokens,
    };
    try {
      this.tok = new HfTokenizer(spec, config);
    } catch (e) {
      throw new TokenizerError(`tokenizer.json could not be loaded: ${/** @type {Error} */ (e).message}`,
        { code: 'BAD_TOKENIZER', cause: e });
    }
    /** @type {Set<number>} */
    this.specialIds = new Set(addedTokens.filter((/** @type {any} */ t) => t.special)
      .map((/** @type {any} */ t) => t.id));
    this.installMergeBoundaries(model);
    /** @readonly */
    this.source = { kind: /** @type {const} */ ('hf'), json, config };

    const lookup = (/** @type {string} */ piece) => this.tokenToId(piece);
    const template = findTemplate(json.post_processor);
    const single = template ? template.single : [];
    const first = single[0]?.SpecialToken ? templateTokenId(template, single[0], lookup) : null;
    const lastItem = single[single.length - 1];
    const last = single.length > 1 && lastItem?.SpecialToken ? templateTokenId(template, lastItem, lookup) : null;
    const configId = (/** @type {string} */ key) => {
      const content = tokenContent(config[key]);
      return content === null ? null : lookup(content);
    };
    // tokenizer_config.json names the tokens; without it the post-processor template does (Llama's "<s> $A"), and
    // a file with one special token uses it for both (GPT-2's <|endoftext|>).
    const onlySpecial = this.specialIds.size === 1 ? [...this.specialIds][0] : null;
    this.bosId = configId('bos_token') ?? first ?? onlySpecial;
    this.eosId = configId('eos_token') ?? last ?? onlySpecial;
    // transformers rebuilds the template from add_bos_token/add_eos_token when the config sets them; otherwise
    // documents start with BOS exactly when the post-processor puts it first (Llama-2 yes; GPT-2, SmolLM no).
    this.configSetsSpecials = typeof config.add_bos_token === 'boolean' || typeof config.add_eos_token === 'boolean';
    this.addsBos = typeof config.add_bos_token === 'boolean'
      ? config.add_bos_token && this.bosId !== null
      : first !== null && first === this.bosId;
    this.addsEos = typeof config.add_eos_token === 'boolean'
      ? config.add_eos_token && this.eosId !== null
      : last !== null && last === this.eosId;
    this.chatTemplate = chatTemplateOf(config.chat_template);
    /** @type {Record<string, string|string[]>} */
    this.specialTokens = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const content = tokenContent(config[key]);
      if (content !== null) this.specialTokens[key] = content;
    }
    if (Array.isArray(config.additional_special_tokens)) {
      this.specialTokens.additional_special_tokens = config.additional_special_tokens
        .map(tokenContent).filter((/** @type {string|null} */ t) => t !== null);
    }
  }

  /**
   * Puts MergeBoundaryPreTokenizer in front of a BPE model when cutting words cannot change its output: not with
   * ignore_merges (whole words looked up first), suffixes or prefixes tied to word ends, or dropout.
   * @param {Record<string, any>} model
   */
  installMergeBoundaries(model) {
    const bpe = /** @type {any} */ (this.tok.model);
    if (model.type !== 'BPE' || model.ignore_merges || model.dropout || model.end_of_word_suffix ||
        model.continuing_subword_prefix || model.continuing_subword_suffix ||
        !Array.isArray(bpe?.vocab) || !Array.isArray(bpe?.merges)) {
      return;
    }
    const pairs = () => {
      /** @type {Set<string>} */
      const set = new Set();
      const add = (/** @type {string} */ s) => {
        let prev = '';
        for (const ch of s) {
          if (prev) set.add(prev + ch);
          prev = ch;
        }
      };
      for (const token of bpe.vocab) if (typeof token === 'string') add(token);
      for (const merge of bpe.merges) add(merge.join(''));
      return set;
    };
    this.tok.pre_tokenizer = /** @type {any} */ (new MergeBoundaryPreTokenizer(this.tok.pre_tokenizer, pairs));
  }

  /** @param {string} text @param {boolean} addSpecialTokens */
  encode(text, addSpecialTokens) {
    if (!addSpecialTokens || !this.configSetsSpecials) {
      return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    }
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    if (this.addsBos) ids.unshift(/** @type {number} */ (this.bosId));
    if (this.addsEos) ids.push(/** @type {number} */ (this.eosId));
    return ids;
  }

  /** @param {number[]} ids @param {boolean} skipSpecialTokens */
  decode(ids, skipSpecialTokens) {
    // The library refuses empty input; no cleanup of spaces before punctuation, so text round-trips exactly.
    if (ids.length === 0) return '';
    return this.tok.decode(ids, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /** @param {number} id */
  hasId(id) {
    return this.tok.id_to_token(id) !== undefined;
  }

  /** @param {number} id */
  idToToken(id) {
    return this.tok.id_to_token(id);
  }

  /** @param {string} piece */
  tokenToId(piece) {
    return this.tok.token_to_id(piece) ?? null;
  }
}

/**
 * One more than the largest id in the model vocabulary (object piece -> id, or Unigram's [piece, score] list) and
 * the added tokens.
 * @param {Record<string, any>} model
 * @param {any[]} addedTokens
 */
function vocabSizeOf(model, addedTokens) {
  let max = -1;
  const check = (/** @type {unknown} */ id, /** @type {string} */ what) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new TokenizerError(`tokenizer.json: ${what} has id ${describe(id)}, not a ` +
        'non-negative integer', { code: 'BAD_TOKENIZER' });
    }
    if (id > max) max = id;
  };
  if (Array.isArray(model.vocab)) model.vocab.forEach((_, i) => check(i, 'vocab'));
  else for (const [piece, id] of Object.entries(model.vocab)) check(id, `vocab entry ${JSON.stringify(piece)}`);
  for (const t of addedTokens) {
    if (!t || typeof t.content !== 'string') {
      throw new TokenizerError('tokenizer.json: every added token needs a string content', { code: 'BAD_TOKENIZER' });
    }
    check(t.id, `added token ${JSON.stringify(t.content)}`);
  }
  if (max < 0) throw new TokenizerError('tokenizer.json: the vocabulary is empty', { code: 'BAD_TOKENIZER' });
  return max + 1;
}
