// core-imports.js: what a core instance imports (its memory when shared, memory growth, and the WASI stderr and
// exit by which it reports a broken invariant), for wasm.js and for each thread of the pool (thread.js). Its own
// module so that the thread's script does not import the code that starts it: that cycle of Worker scripts makes
// Turbopack (Next.js 16's bundler) wait forever and webpack warn of chunks that depend on each other.
import { WasmAbortError } from '../errors.js';

/**
 * The imports of a core instance.
 * @param {WebAssembly.Memory | null} memory the shared memory to import (threads build), or null
 * @param {() => WebAssembly.Memory} getMemory the instance's memory, once it exists
 * @param {(message: string) => void} onAbort called with the core's stderr when it aborts
 * @param {() => void} [onGrowth] called after the core grew its memory
 */
export function coreImports(memory, getMemory, onAbort, onGrowth) {
  let stderr = '';
  return {
    env: {
      ...(memory ? { memory } : {}),
      emscripten_notify_memory_growth() {
        onGrowth?.();
      },
    },
    // The core writes to stderr only when an internal invariant breaks, just before it aborts.
    wasi_snapshot_preview1: {
      fd_write(fd, iovs, iovsLen, nwrittenPtr) {
        const buffer = getMemory().buffer;
        const view = new DataView(buffer);
        let written = 0;
        for (let i = 0; i < iovsLen; i++) {
          const ptr = view.getUint32(iovs + 8 * i, true);
          const len = view.getUint32(iovs + 8 * i + 4, true);
          stderr += new TextDecoder().decode(new Uint8Array(buffer, ptr, len).slice());
          written += len;
        }
        view.setUint32(nwrittenPtr, written, true);
        return 0;
      },
      fd_close: () => 0,
      fd_seek: () => 0,
      proc_exit(code) {
        const message = stderr.trim() || `weblora core aborted (exit ${code})`;
        onAbort(message);
        throw new WasmAbortError(message);
      },
    },
  };
}
