// The package's worker with fake-indexeddb installed first, so tests in Node can reach the IndexedDB adapter store
// through the public API (WebLoRA.load(source, { workerUrl })). Each worker has its own in-memory database.
import 'fake-indexeddb/auto';
import '../../../web/runtime/worker.js';
