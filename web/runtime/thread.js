// thread.js: one worker thread of the C core's thread pool (a module Worker in browsers, a worker_thread in Node).
// It instantiates the same weblora-threads.wasm on the shared memory it is handed, moves its stack pointer to the
// stack the core allocated for it, and runs wl_thread_main, which sleeps in memory.atomic.wait until the core has
// work and returns only when the pool stops. It never allocates and never calls anything else.
import { node } from '#platform';
import { coreImports } from './core-imports.js';
import { UnsupportedError } from '../errors.js';

/** The channel to the thread that started this one (synchronous: no top-level await in a worker entry). */
function connect() {
  if (node) {
    const { parentPort } = node;
    if (!parentPort) throw new UnsupportedError('web/runtime/thread.js must run in a Worker');
    return { post: (msg) => parentPort.postMessage(msg), once: (fn) => parentPort.once('message', fn) };
  }
  return {
    post: (msg) => self.postMessage(msg),
    once: (fn) => self.addEventListener('message', (e) => fn(e.data), { once: true }),
  };
}

const port = connect();
port.once(async (/** @type {{ module: WebAssembly.Module, memory: WebAssembly.Memory, index: number, stack: number }} */ { module, memory, index, stack }) => {
  /** @type {any} */
  let exports = null;
  try {
    const imports = coreImports(memory, () => memory, (message) => console.error(message));
    const instance = await WebAssembly.instantiate(module, imports);
    exports = instance.exports;
    exports.stackRestore(stack);
    port.post({ type: 'started', index });
    exports.wl_thread_main(index);
    port.post({ type: 'stopped', index });
  } catch (err) {
    // A trap or abort inside a task: tell the core, so the thread waiting for that task fails instead of hanging.
    exports?.wl_thread_failed();
    port.post({ type: 'failed', index, message: String(err?.message ?? err) });
  }
});
port.post({ type: 'ready' });
