// The package's worker with one way added to make its core trap, for the test of a dead engine through the client:
// unmerge('trap') reads an adapter at an address far outside the core's memory, as a corrupted pointer would.
// (Imports run before this body, but the worker answers no message before it has run.)
import { LocalEngine } from '../../../web/engine/engine.js';
import '../../../web/runtime/worker.js';

const unmerge = LocalEngine.prototype.unmerge;
LocalEngine.prototype.unmerge = function (id) {
  if (id === 'trap') return this.core.x.wl_adapter_n_modules(0x7ffffff0);
  return unmerge.call(this, id);
};
