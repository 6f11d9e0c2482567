// Error classes shared by every weblora module: each carries a stable `code`, and all of them (plus the
// DOMException AbortError used for cancellation) survive a postMessage round trip via toJSON/fromJSON.

/**
 * @typedef {object} SerializedError
 * @property {string} name
 * @property {string} [code]
 * @property {string} message
 * @property {string} [stack]
 * @property {Record<string, unknown>} [details]
 * @property {SerializedError} [cause]
 */

/**
 * @typedef {object} ErrorOptions
 * @property {string} [code] overrides the class's default code for a more specific reason
 * @property {unknown} [cause] the lower-level error that led to this one
 * @property {Record<string, unknown>} [details] structured facts (url, status, sizes...), kept when serialised
 */

/** Classes that fromJSON can revive, by `name`; subclasses defined elsewhere call registerErrorClass. */
const registry = new Map();

/** Base class: `code` is stable and machine-readable, `message` is for people. */
export class WebLoRAError extends Error {
  static code = 'WEBLORA_ERROR';

  /**
   * @param {string} message
   * @param {ErrorOptions} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    /** @type {string} */
    this.code = options.code ?? /** @type {typeof WebLoRAError} */ (new.target).code;
    /** @type {Record<string, unknown>} */
    this.details = options.details ?? {};
  }

  /** @returns {SerializedError} a structured-clone-safe object (no class instances, no functions) */
  toJSON() {
    return serializeError(this);
  }

  /**
   * Rebuilds an error serialised by toJSON (or serializeError) as an instance of its original class when that
   * class is registered, keeping name, code, message, stack, details and cause.
   * @param {SerializedError} json
   * @returns {Error}
   */
  static fromJSON(json) {
    return deserializeError(json);
  }
}

/** Download failed after retries, or the server answered with a status that retrying cannot fix. */
export class NetworkError extends WebLoRAError {
  static code = 'NETWORK_ERROR';
}

/** An argument of the wrong type or out of range, to any call of the package or the core. */
export class InvalidArgumentError extends WebLoRAError {
  static code = 'INVALID_ARGUMENT';
}

/** A URL (404/410) or a stored item (adapter, checkpoint) that does not exist. */
export class NotFoundError extends WebLoRAError {
  static code = 'NOT_FOUND';
}

/** Bytes are not what they should be: hash mismatch, a file that changed or disagrees with its length. */
export class IntegrityError extends WebLoRAError {
  static code = 'INTEGRITY_ERROR';
}

/** Input that cannot be parsed or does not follow the expected format (JSON index, PEFT config, ...). */
export class FormatError extends WebLoRAError {
  static code = 'BAD_FORMAT';
}

/** The browser's storage quota is exhausted; details carry `needed`, `available`, `quota`, `usage` (bytes). */
export class StorageFullError extends WebLoRAError {
  static code = 'STORAGE_FULL';
}

/** An adapter trained on one base model was about to be applied to another. */
export class BaseModelMismatchError extends WebLoRAError {
  static code = 'BASE_MODEL_MISMATCH';
}

/** A name is taken and overwriting was not requested. */
export class AlreadyExistsError extends WebLoRAError {
  static code = 'ALREADY_EXISTS';
}

/** Imported adapter files are not a usable PEFT LoRA adapter. */
export class InvalidAdapterError extends WebLoRAError {
  static code = 'INVALID_ADAPTER';
}

/** Encrypted data cannot be opened: wrong passphrase (code WRONG_PASSPHRASE) or none given (PASSPHRASE_REQUIRED). */
export class PassphraseError extends WebLoRAError {
  static code = 'WRONG_PASSPHRASE';
}

/** Something this environment lacks (IndexedDB, WebCrypto, relaxed SIMD...) or this library does not do. */
export class UnsupportedError extends WebLoRAError {
  static code = 'UNSUPPORTED';
}

/**
 * A failure of the C core that no more specific class names: code SHAPE_MISMATCH, OUT_OF_MEMORY, ABI_MISMATCH (a core build from another version) or CORE_ERROR. The
 * core's other statuses arrive as the class of their meaning (InvalidArgumentError, FormatError, UnsupportedError,
 * NotFoundError, NumericError, EngineError for BAD_STATE); see Core.check.
 */
export class CoreError extends WebLoRAError {
  static code = 'CORE_ERROR';
}

/**
 * The C core stopped on a broken internal invariant or a WebAssembly trap (never on bad input). Its instance is
 * dead from then on: every later call on it fails with this class and code, and the model must be loaded again.
 */
export class WasmAbortError extends WebLoRAError {
  static code = 'WASM_ABORTED';
}

/** The training data cannot make a single training example, or the options do not fit it. */
export class DataError extends WebLoRAError {
  static code = 'BAD_DATA';
}

/** A call that the engine's state does not allow (unknown adapter id, no tokenizer, a merged adapter, ...). */
export class EngineError extends WebLoRAError {
  static code = 'ENGINE_ERROR';
}

/** The source cannot be used as a model (unknown kind, missing files, a tokenizer that does not fit). */
export class ModelSourceError extends WebLoRAError {
  static code = 'BAD_SOURCE';
}

/** resolveLoraSpec was given options it cannot use (code INVALID_LORA_SPEC, or UNKNOWN_TARGET). */
export class LoraSpecError extends WebLoRAError {
  static code = 'INVALID_LORA_SPEC';
}

/** A well-formed PEFT adapter using a feature this library does not implement (DoRA, trained biases, ...). */
export class UnsupportedAdapterError extends InvalidAdapterError {
  static code = 'UNSUPPORTED_ADAPTER';
}

/** A LoRA tensor whose shape does not fit the model's module or the rank adapter_config.json gives. */
export class AdapterShapeError extends InvalidAdapterError {
  static code = 'ADAPTER_SHAPE_MISMATCH';
}

/** LoRA weights for modules the model does not have: an adapter for another architecture or depth. */
export class AdapterModelMismatchError extends InvalidAdapterError {
  static code = 'ADAPTER_MODEL_MISMATCH';
}

/** A safetensors file that cannot be written as asked or read back (code: BAD_FORMAT, UNSUPPORTED_DTYPE, ...). */
export class SafetensorsError extends FormatError {
  static code = 'BAD_SAFETENSORS';
}

/** Sampling options out of range. */
export class SamplingError extends WebLoRAError {
  static code = 'BAD_SAMPLING_OPTIONS';
}

/**
 * A tokenizer file or call that cannot be used. `code`: 'BAD_TOKENIZER' (file not usable), 'BAD_ID' (id outside
 * the vocabulary); a wrong type of argument is an InvalidArgumentError.
 */
export class TokenizerError extends WebLoRAError {
  static code = 'BAD_TOKENIZER';
}

/** A NaN or Inf appeared in the loss or the gradients; the weights are those of the last good step. */
export class NumericError extends WebLoRAError {
  static code = 'NUMERIC';
}

/**
 * Names a WebLoRAError subclass and makes it revivable by fromJSON. The name is given as a string, not taken
 * from `cls.name`, because minifiers rename classes. Names must be unique, and the class's constructor must
 * keep the (message, { code, cause, details }) signature, which fromJSON calls.
 * @param {typeof WebLoRAError} cls
 * @param {string} name
 */
export function registerErrorClass(cls, name) {
  if (registry.has(name) && registry.get(name) !== cls) throw new InvalidArgumentError(`error class ${name} is already registered`);
  Object.defineProperty(cls.prototype, 'name', { value: name, writable: true, configurable: true, enumerable: false });
  registry.set(name, cls);
}

registerErrorClass(WebLoRAError, 'WebLoRAError');
registerErrorClass(NetworkError, 'NetworkError');
registerErrorClass(InvalidArgumentError, 'InvalidArgumentError');
registerErrorClass(NotFoundError, 'NotFoundError');
registerErrorClass(IntegrityError, 'IntegrityError');
registerErrorClass(FormatError, 'FormatError');
registerErrorClass(StorageFullError, 'StorageFullError');
registerErrorClass(BaseModelMismatchError, 'BaseModelMismatchError');
registerErrorClass(AlreadyExistsError, 'AlreadyExistsError');
registerErrorClass(InvalidAdapterError, 'InvalidAdapterError');
registerErrorClass(PassphraseError, 'PassphraseError');
registerErrorClass(UnsupportedError, 'UnsupportedError');
registerErrorClass(CoreError, 'CoreError');
registerErrorClass(WasmAbortError, 'WasmAbortError');
registerErrorClass(DataError, 'DataError');
registerErrorClass(EngineError, 'EngineError');
registerErrorClass(ModelSourceError, 'ModelSourceError');
registerErrorClass(LoraSpecError, 'LoraSpecError');
registerErrorClass(UnsupportedAdapterError, 'UnsupportedAdapterError');
registerErrorClass(AdapterShapeError, 'AdapterShapeError');
registerErrorClass(AdapterModelMismatchError, 'AdapterModelMismatchError');
registerErrorClass(SafetensorsError, 'SafetensorsError');
registerErrorClass(SamplingError, 'SamplingError');
registerErrorClass(TokenizerError, 'TokenizerError');
registerErrorClass(NumericError, 'NumericError');

/**
 * Turns any thrown value into a plain object that structured clone and JSON both accept.
 * @param {unknown} err
 * @returns {SerializedError}
 */
export function serializeError(err) {
  if (err === null || typeof err !== 'object') {
    return { name: 'Error', message: String(err) };
  }
  const e = /** @type {any} */ (err);
  /** @type {SerializedError} */
  const out = { name: String(e.name ?? 'Error'), message: String(e.message ?? '') };
  if (typeof e.code === 'string') out.code = e.code;
  if (typeof e.stack === 'string') out.stack = e.stack;
  if (e.details && typeof e.details === 'object') out.details = plainDetails(e.details);
  if (e.cause !== undefined) out.cause = serializeError(e.cause);
  return out;
}

/**
 * Inverse of serializeError. AbortError becomes a DOMException again so `err.name === 'AbortError'` checks
 * keep working across threads; unknown names give a WebLoRAError that still reports the original name.
 * @param {SerializedError} json
 * @returns {Error}
 */
export function deserializeError(json) {
  if (!json || typeof json !== 'object') return new WebLoRAError(String(json));
  const cause = json.cause === undefined ? undefined : deserializeError(json.cause);
  /** @type {Error} */
  let err;
  const cls = registry.get(json.name);
  if (cls) {
    err = new cls(json.message, { code: json.code, cause, details: json.details ?? {} });
  } else if (json.name === 'AbortError' || json.name === 'TimeoutError') {
    err = new DOMException(json.message, json.name);
    if (cause !== undefined) Object.defineProperty(err, 'cause', { value: cause, configurable: true, writable: true });
  } else {
    err = new WebLoRAError(json.message, { code: json.code, cause, details: json.details ?? {} });
    err.name = json.name;
  }
  if (json.stack !== undefined) {
    Object.defineProperty(err, 'stack', { value: json.stack, configurable: true, writable: true });
  }
  return err;
}

/**
 * True for cancellations: the DOMException AbortError convention used by fetch and AbortSignal.
 * @param {unknown} err
 */
export function isAbortError(err) {
  return !!err && typeof err === 'object' && /** @type {any} */ (err).name === 'AbortError';
}

/**
 * The error to throw when `signal` has fired: its reason when that is an Error (AbortSignal.timeout gives a
 * TimeoutError), otherwise a DOMException AbortError.
 * @param {AbortSignal} [signal]
 * @returns {Error}
 */
export function abortError(signal) {
  const reason = signal?.reason;
  if (reason instanceof Error || (reason && typeof reason === 'object' && 'name' in reason)) {
    return /** @type {Error} */ (reason);
  }
  return new DOMException('The operation was aborted.', 'AbortError');
}

/**
 * Throws abortError(signal) when the signal has fired; a no-op otherwise.
 * @param {AbortSignal} [signal]
 */
export function throwIfAborted(signal) {
  if (signal?.aborted) throw abortError(signal);
}

/**
 * Keeps only JSON-compatible detail values so a details object never breaks postMessage.
 * @param {object} details
 */
function plainDetails(details) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [k, v] of Object.entries(details)) {
    if (v === null || ['string', 'number', 'boolean'].includes(typeof v)) out[k] = v;
    else if (Array.isArray(v) || typeof v === 'object') {
      try { out[k] = JSON.parse(JSON.stringify(v)); } catch { /* not representable: dropped */ }
    }
  }
  return out;
}
