// explain.js: errors in the person's words. The package's errors carry a class name and a stable code; each kind
// gets a sentence on what failed and one on what to try. The technical message (with its causes) is kept for a
// "Technical details" disclosure, never thrown away.

/**
 * @typedef {object} Explanation
 * @property {string} summary what failed
 * @property {string} advice what to try
 * @property {string} detail the technical message and its causes
 */

const FOLDER_HINT = 'A Hugging Face model\'s files are at https://huggingface.co/<org>/<name>/resolve/main/ (or type just <org>/<name>).';
const MODEL_KINDS = 'The demo needs a Llama-family (SmolLM, Qwen2, TinyLlama, Llama) or GPT-2 model in Hugging Face form '
  + '(config.json, tokenizer.json and model.safetensors), or a llama2.c .bin checkpoint with its tokenizer.';

/** @param {any} err */
function detailOf(err) {
  const lines = [];
  for (let e = err, depth = 0; e && depth < 6; e = e.cause, depth++) {
    const head = typeof e === 'object' ? `${e.name ?? 'Error'}${e.code ? ` (${e.code})` : ''}: ${e.message ?? ''}` : String(e);
    lines.push(depth ? `caused by ${head}` : head);
  }
  return lines.join('\n');
}

/** @param {any} err @param {string} name */
const is = (err, name) => err?.name === name;

/**
 * @param {any} err
 * @param {'load' | 'train' | 'generate' | 'save' | 'import' | 'storage'} task
 * @returns {Explanation}
 */
export function explainError(err, task) {
  const detail = detailOf(err);
  const code = err?.code;
  const status = err?.details?.status ?? err?.cause?.details?.status;
  const message = String(err?.message ?? err ?? '');
  const say = (/** @type {string} */ summary, /** @type {string} */ advice) => ({ summary, advice, detail });

  if (code === 'UNREACHABLE') {
    const host = err.details?.host ?? 'the server';
    return say(`Could not reach ${host}.`, 'Check the address and your connection. If both are right, the server may be down, or it may not '
      + 'let other sites read its files (it must send CORS headers, as huggingface.co does).');
  }
  if (is(err, 'StorageFullError')) {
    return say('This browser\'s storage for the site is full.', 'Remove downloaded models you no longer need (step 1) or delete adapters (step 5), then try again.');
  }
  if (code === 'MODEL_TOO_LARGE') {
    const fits = err.details?.fits;
    return say('This model\'s weights do not fit in the 4 GB a WebAssembly core can address.',
      fits ? `Load it in ${fits === 'q4' ? '4' : '8'} bits (${fits}), or choose a smaller model.` : 'Choose a smaller model.');
  }
  if (code === 'OUT_OF_MEMORY' || /out of memory|Memory\.grow|could not allocate/i.test(message)) {
    return say('This device ran out of memory.', 'Choose a smaller model, or train with a shorter sequence length or a smaller batch size.');
  }
  if (task === 'load') {
    if (is(err, 'NotFoundError')) {
      const url = err.details?.url;
      const file = url ? decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '') : '';
      return say(`There is no model at this address${file ? ` (${file} was not found)` : ''}.`, `Check the address. ${FOLDER_HINT}`);
    }
    if (is(err, 'NetworkError') && (status === 401 || status === 403)) {
      return say('The server refused access to this model.', 'Gated and private models need a sign-in, which this demo does not do: choose a public model.');
    }
    if (is(err, 'NetworkError')) {
      return say('The download failed: the connection kept dropping.', 'Check your connection and try again.');
    }
    if (is(err, 'IntegrityError')) {
      return say('The model\'s files arrived damaged or changed during the download.', 'Try again. If it keeps happening, the server is serving inconsistent files.');
    }
    if (code === 'TOKENIZER_MISMATCH') {
      return say('The tokenizer does not belong to this model.', 'Use the tokenizer that came with the model.');
    }
    if (['FormatError', 'ModelSourceError', 'SafetensorsError', 'TokenizerError', 'CoreError'].includes(err?.name)) {
      return say('These files are not a model this demo can use.', MODEL_KINDS);
    }
  }
  if (task === 'train') {
    if (is(err, 'NumericError')) {
      return say('Training became unstable and stopped; the adapter keeps its last good weights.', 'Lower the learning rate (0.001 to 0.005 suits LoRA) and train again.');
    }
    if (is(err, 'DataError')) return say(`Training could not start: ${message}.`, 'Add more text, or use a shorter sequence length.');
  }
  if (task === 'import') {
    if (is(err, 'BaseModelMismatchError') || code === 'ADAPTER_MODEL_MISMATCH' || code === 'ADAPTER_SHAPE_MISMATCH') {
      return say('This adapter was made for another model.', 'Load the model it was trained on, then import it again.');
    }
    if (['InvalidAdapterError', 'UnsupportedAdapterError', 'FormatError', 'SafetensorsError'].includes(err?.name)) {
      return say('These files are not a LoRA adapter the demo can use.', 'Choose the adapter_config.json and adapter_model.safetensors that PEFT or this demo wrote.');
    }
  }
  if (is(err, 'BaseModelMismatchError')) {
    return say('This adapter was trained on another model.', 'Load the model it was made for (its base model is shown in the adapters table), then use it.');
  }
  if (is(err, 'UnsupportedError')) return say('This browser lacks something the demo needs.', message);
  const what = { load: 'Loading the model', train: 'Training', generate: 'Generating text', save: 'Saving the adapter', import: 'Importing the adapter', storage: 'Reading saved data' }[task];
  return say(`${what} failed.`, 'Try again. If it keeps failing, the technical details say what went wrong.');
}
