// catalog.js: the models the demo offers, as data: the built-in one and a short list of real small models on the
// Hugging Face Hub, each with the part of its config.json that the size, memory and speed estimates need. A new
// entry (another model, or the same download held quantised, with its own `baseDtype`) is one more object here.

/** Where catalogue models are downloaded from unless the person names a mirror with the same URL layout. */
export const DEFAULT_HUB = 'https://huggingface.co/';

/**
 * @typedef {object} CatalogEntry
 * @property {string} id stable key (kept in localStorage as the last choice)
 * @property {string} label
 * @property {string | null} repo Hub repository ("org/name"); null for the built-in model
 * @property {string} blurb one line on what the model is good for
 * @property {boolean} chat tuned for conversations (its tokenizer_config.json has a chat template)
 * @property {'f32' | 'f16' | 'bf16'} dtype how the weights are stored in the download
 * @property {'f32' | 'q8' | 'q4'} [baseDtype] how the engine holds the frozen weights (WebLoRA.load's dtype; f32
 *   when absent): q8 and q4 quantise them as they stream in, so a bigger model fits the tab's memory
 * @property {number} tokenizerBytes size of tokenizer.json (the rest of the download is the weights)
 * @property {string} licence
 * @property {Record<string, any>} config the config.json fields the estimates read
 */

/** @type {CatalogEntry} */
export const BUILT_IN = {
  id: 'built-in',
  label: 'Built-in model',
  repo: null,
  blurb: 'A 5.5 M-parameter model trained on Debian\'s fortune cookies: tiny, offline, instant. Good for trying the steps; its English is quirky.',
  chat: false,
  dtype: 'f16',
  tokenizerBytes: 103_309,
  licence: 'MIT (corpus: BSD, Debian fortunes)',
  // Checked against demo/models/default/config.json by the demo's tests.
  config: {
    model_type: 'llama', hidden_size: 256, intermediate_size: 704, num_hidden_layers: 6, num_attention_heads: 8,
    num_key_value_heads: 4, head_dim: 32, vocab_size: 4096, max_position_embeddings: 256, tie_word_embeddings: true,
  },
};

const SMOLLM2_135M_CONFIG = {
  model_type: 'llama', hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9,
  num_key_value_heads: 3, vocab_size: 49152, max_position_embeddings: 8192, tie_word_embeddings: true,
};
const SMOLLM2_360M_CONFIG = {
  model_type: 'llama', hidden_size: 960, intermediate_size: 2560, num_hidden_layers: 32, num_attention_heads: 15,
  num_key_value_heads: 5, vocab_size: 49152, max_position_embeddings: 8192, tie_word_embeddings: true,
};
/** SmolLM2's tokenizer.json (the same file for every size, base and Instruct). */
const SMOLLM2_TOKENIZER_BYTES = 2_104_556;

/** Real small models that fit in a browser tab, smallest first. */
/** @type {CatalogEntry[]} */
export const HUB_MODELS = [
  {
    id: 'smollm2-135m',
    label: 'SmolLM2 135M',
    repo: 'HuggingFaceTB/SmolLM2-135M',
    blurb: 'Real English from a 135 M-parameter model: continues your text in your style.',
    chat: false,
    dtype: 'bf16',
    tokenizerBytes: SMOLLM2_TOKENIZER_BYTES,
    licence: 'Apache-2.0',
    config: SMOLLM2_135M_CONFIG,
  },
  {
    id: 'smollm2-135m-instruct',
    label: 'SmolLM2 135M Instruct',
    repo: 'HuggingFaceTB/SmolLM2-135M-Instruct',
    blurb: 'The 135 M model tuned to follow instructions: answers messages in your style.',
    chat: true,
    dtype: 'bf16',
    tokenizerBytes: SMOLLM2_TOKENIZER_BYTES,
    licence: 'Apache-2.0',
    config: SMOLLM2_135M_CONFIG,
  },
  {
    id: 'smollm2-360m',
    label: 'SmolLM2 360M',
    repo: 'HuggingFaceTB/SmolLM2-360M',
    blurb: 'Better English than the 135 M model, about three times slower to train.',
    chat: false,
    dtype: 'bf16',
    tokenizerBytes: SMOLLM2_TOKENIZER_BYTES,
    licence: 'Apache-2.0',
    config: SMOLLM2_360M_CONFIG,
  },
  {
    id: 'smollm2-360m-instruct',
    label: 'SmolLM2 360M Instruct',
    repo: 'HuggingFaceTB/SmolLM2-360M-Instruct',
    blurb: 'The 360 M model tuned to follow instructions.',
    chat: true,
    dtype: 'bf16',
    tokenizerBytes: SMOLLM2_TOKENIZER_BYTES,
    licence: 'Apache-2.0',
    config: SMOLLM2_360M_CONFIG,
  },
  {
    id: 'qwen2.5-0.5b-instruct',
    label: 'Qwen2.5 0.5B Instruct',
    repo: 'Qwen/Qwen2.5-0.5B-Instruct',
    blurb: 'The strongest here, many languages, follows instructions; needs a desktop-class device.',
    chat: true,
    dtype: 'bf16',
    tokenizerBytes: 7_031_645,
    licence: 'Apache-2.0',
    config: {
      model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
      num_key_value_heads: 2, vocab_size: 151936, max_position_embeddings: 32768, tie_word_embeddings: true,
    },
  },
];

/** Qwen2.5-0.5B-Instruct's download, offered in f32 and held in 8 or 4 bits. */
const QWEN = HUB_MODELS.find((e) => e.id === 'qwen2.5-0.5b-instruct');
HUB_MODELS.push(
  {
    ...QWEN,
    id: 'qwen2.5-0.5b-instruct-q8',
    label: 'Qwen2.5 0.5B Instruct, 8-bit',
    blurb: 'The same download held in 8 bits: about half the memory, answers almost exactly as the full model.',
    baseDtype: 'q8',
  },
  {
    ...QWEN,
    id: 'qwen2.5-0.5b-instruct-q4',
    label: 'Qwen2.5 0.5B Instruct, 4-bit',
    blurb: 'Held in 4 bits: fits phones and small laptops; a little less accurate than 8 bits.',
    baseDtype: 'q4',
  },
);

/** Every catalogue entry, the built-in model first. */
export const CATALOG = [BUILT_IN, ...HUB_MODELS];

/**
 * The folder URL of a Hub repository's main branch on `hub` (the Hub itself or a mirror with its layout).
 * @param {string} repo "org/name"
 * @param {string} hub base URL ending in "/"
 */
export function hubFolder(repo, hub = DEFAULT_HUB) {
  return `${hub}${repo.split('/').map(encodeURIComponent).join('/')}/resolve/main/`;
}

/**
 * Checks a typed "download from" base URL: http(s), ends in "/" (added when missing).
 * @param {string} text
 * @returns {{ url: string } | { error: string }}
 */
export function parseHubBase(text) {
  const value = text.trim();
  if (!value) return { url: DEFAULT_HUB };
  let url;
  try {
    url = new URL(value);
  } catch {
    return { error: 'This is not a web address. It should look like https://huggingface.co/' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { error: 'The address must start with https:// (or http://).' };
  if (url.search || url.hash) return { error: 'The address must not have a ? or # part.' };
  return { url: url.href.endsWith('/') ? url.href : `${url.href}/` };
}

/**
 * What a typed model address means: a Hub repository ("org/name", or its https://huggingface.co/org/name page),
 * a model folder URL ending in "/", or a .safetensors / llama2.c .bin file URL.
 * @param {string} text
 * @param {string} hub the base that "org/name" is resolved against
 * @returns {{ url: string, single: boolean } | { error: string }}
 */
export function parseModelAddress(text, hub = DEFAULT_HUB) {
  const value = text.trim();
  if (!value) return { error: 'Type a model address, or a Hugging Face model name such as HuggingFaceTB/SmolLM2-135M.' };
  if (/^[\w.-]+\/[\w.-]+$/.test(value)) return { url: hubFolder(value, hub), single: false };
  let url;
  try {
    url = new URL(value);
  } catch {
    return { error: 'This is neither a web address nor a model name like HuggingFaceTB/SmolLM2-135M.' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { error: 'The address must start with https:// (or http://).' };
  // A model's page on the Hub (https://huggingface.co/org/name, maybe /tree/main) means its files.
  const page = /^\/([\w.-]+\/[\w.-]+)(?:\/tree\/main)?\/?$/.exec(url.pathname);
  if (url.origin === new URL(DEFAULT_HUB).origin && page) return { url: hubFolder(page[1], DEFAULT_HUB), single: false };
  if (url.pathname.endsWith('/')) return { url: url.href, single: false };
  if (/\.(safetensors|bin)$/i.test(url.pathname)) return { url: url.href, single: true };
  return { error: 'Give the model\'s folder (ending in /, like https://huggingface.co/org/name/resolve/main/), or a .safetensors or .bin file.' };
}
