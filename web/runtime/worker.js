// worker.js: the module Worker (or Node worker_thread) that owns the wasm instance: a plain RPC host over one
// LocalEngine. It answers the client's messages for the methods api.js lists (and load and dispose): calls matched
// by id, the callbacks the client listens to sent back as events, aborts, errors with their class, code and stack,
// big buffers transferred. Calls run one at a time, in order, so a generation never interleaves with a training
// step on the same model. Everything the API does is done by the engine; nothing here but the crossing.
import { node } from '#platform';
import { serializeError, EngineError, UnsupportedError, WebLoRAError } from '../errors.js';
import { LocalEngine } from '../engine/engine.js';
import { STORE_PREFIX, methodSpec } from './api.js';

/**
 * The channel to the client: parentPort in Node, the Worker global in browsers. Synchronous, because some
 * bundlers' worker formats (Vite's default) cannot take a top-level await.
 */
function connect() {
  if (node) {
    const { parentPort } = node;
    if (!parentPort) throw new UnsupportedError('web/runtime/worker.js must run in a Worker');
    return {
      post: (msg, transfer) => parentPort.postMessage(msg, transfer ?? []),
      listen: (fn) => parentPort.on('message', fn),
    };
  }
  return {
    post: (msg, transfer) => self.postMessage(msg, transfer ?? []),
    listen: (fn) => self.addEventListener('message', (e) => fn(e.data)),
  };
}

/** ArrayBuffers inside a result, to transfer instead of clone. */
function transferables(value, out = new Set(), depth = 0) {
  if (!value || typeof value !== 'object' || depth > 4) return out;
  if (value instanceof ArrayBuffer) out.add(value);
  else if (ArrayBuffer.isView(value)) {
    if (value.buffer instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength) out.add(value.buffer);
  } else if (Array.isArray(value)) value.forEach((v) => transferables(v, out, depth + 1));
  else if (Object.getPrototypeOf(value) === Object.prototype) Object.values(value).forEach((v) => transferables(v, out, depth + 1));
  return out;
}

const port = connect();
/** @type {LocalEngine | null} */
let engine = null;
const controllers = new Map();
let queue = Promise.resolve();

function requireEngine() {
  if (!engine) throw new EngineError('the engine is not loaded (or was disposed)', { code: 'NOT_LOADED' });
  return engine;
}

/**
 * Runs one call: load and dispose here, every other method (api.js) on the engine or its adapter library, with the
 * callbacks the client listens to (msg.events) and the call's abort signal put into its options argument.
 * @param {{ method: string, args?: any[], events?: string[] }} msg
 * @param {{ signal: AbortSignal, event: (name: string, data: unknown) => void }} ctx
 */
async function invoke(msg, ctx) {
  const args = msg.args ?? [];
  if (msg.method === 'load') {
    const [source, options = {}] = args;
    engine = await LocalEngine.load(source, { ...options, signal: ctx.signal, onProgress: (e) => ctx.event('progress', e) });
    return engine.info();
  }
  if (msg.method === 'dispose') {
    engine?.dispose();
    engine = null;
    return true;
  }
  const spec = methodSpec(msg.method);
  if (!spec) throw new WebLoRAError(`unknown method ${msg.method}`, { code: 'BAD_CALL' });
  const e = requireEngine();
  const at = spec.args.indexOf('options');
  if (at >= 0) {
    /** @type {Record<string, unknown>} */
    const options = { ...(args[at] ?? {}), signal: ctx.signal };
    const listened = new Set(msg.events ?? []);
    for (const [callback, event] of Object.entries(spec.events ?? {})) {
      if (listened.has(event)) options[callback] = (/** @type {unknown} */ data) => ctx.event(event, data);
    }
    args[at] = options;
  }
  const target = msg.method.startsWith(STORE_PREFIX) ? e.adapters : e;
  const name = msg.method.startsWith(STORE_PREFIX) ? msg.method.slice(STORE_PREFIX.length) : msg.method;
  return target[name](...args);
}

port.listen((msg) => {
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === 'abort') {
    controllers.get(msg.id)?.abort(new DOMException(msg.reason ?? 'aborted', 'AbortError'));
    return;
  }
  if (msg.type !== 'call') return;
  const controller = new AbortController();
  controllers.set(msg.id, controller);
  const ctx = {
    signal: controller.signal,
    event: (name, data) => port.post({ type: 'event', id: msg.id, name, data }),
  };
  queue = queue.then(async () => {
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      const value = await invoke(msg, ctx);
      port.post({ type: 'result', id: msg.id, value }, [...transferables(value)]);
    } catch (err) {
      port.post({ type: 'error', id: msg.id, error: serializeError(err) });
    } finally {
      controllers.delete(msg.id);
    }
  });
});
port.post({ type: 'ready' });
