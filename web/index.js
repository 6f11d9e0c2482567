// index.js: the public entry of the `weblora` package.
export { WebLoRA, Engine } from './runtime/client.js';
export {
  WebLoRAError, InvalidArgumentError, NetworkError, NotFoundError, IntegrityError, FormatError, StorageFullError, BaseModelMismatchError,
  AlreadyExistsError, InvalidAdapterError, PassphraseError, UnsupportedError, CoreError, DataError, EngineError,
  ModelSourceError, LoraSpecError, UnsupportedAdapterError, AdapterShapeError, AdapterModelMismatchError,
  SafetensorsError, SamplingError, TokenizerError, NumericError, WasmAbortError,
} from './errors.js';
export { listCachedModels, cachedSize, deleteCachedModel, DEFAULT_CACHE_NAME } from './fetch/cache.js';
export { env } from './env.js';
export { formatBytes } from './units.js';
