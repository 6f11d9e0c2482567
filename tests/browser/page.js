// page.js: the browser tests' page glue. It imports the package the way an app would (/web/index.js) and exposes
// it, a main-thread heartbeat, a raw IndexedDB inspector and a visible log to the tests' page.evaluate calls.
import * as weblora from '/dist/weblora.js';

const logEl = /** @type {HTMLElement} */ (document.getElementById('log'));
const statusEl = /** @type {HTMLElement} */ (document.getElementById('status'));
const beatEl = /** @type {HTMLElement} */ (document.querySelector('#beat span'));

/** Appends a line to the on-page log (what the screenshots show). @param {string} line */
function log(line) {
  logEl.textContent += `${line}\n`;
}

/** @param {string} text */
function setStatus(text) {
  statusEl.textContent = text;
}

/** Gaps longer than this are recorded as intervals (epoch ms) so the two threads' stalls can be compared. */
const GAP_RECORD_MS = 40;

/**
 * An idle Worker ticking like the main thread's heartbeat. On a busy machine (or a container at its CPU quota) the
 * OS stalls whole processes now and then; such a stall shows up in both threads, while a stall caused by work on
 * the main thread shows up on the main thread only. Created once at page load, so measuring makes no request.
 */
const probe = new Worker(URL.createObjectURL(new Blob([`
  let timer = 0, last = 0, gaps = [], max = 0;
  const now = () => performance.timeOrigin + performance.now();
  onmessage = (e) => {
    if (e.data === 'start') {
      clearInterval(timer);
      gaps = []; max = 0; last = now();
      timer = setInterval(() => {
        const t = now();
        if (t - last > ${GAP_RECORD_MS}) gaps.push([last, t]);
        max = Math.max(max, t - last);
        last = t;
      }, 10);
    } else if (e.data === 'stop') {
      clearInterval(timer);
      const t = now();
      if (t - last > ${GAP_RECORD_MS}) gaps.push([last, t]);
      postMessage({ maxGapMs: Math.max(max, t - last), gaps });
    }
  };
`], { type: 'text/javascript' })), { name: 'heartbeat-probe' });

/** Length of the part of [a, b] not covered by any of the intervals. */
function uncovered(a, b, intervals) {
  const parts = intervals.map(([x, y]) => [Math.max(a, x), Math.min(b, y)]).filter(([x, y]) => y > x).sort((p, q) => p[0] - q[0]);
  let covered = 0;
  let reach = a;
  for (const [x, y] of parts) {
    if (y <= reach) continue;
    covered += y - Math.max(x, reach);
    reach = y;
  }
  return b - a - covered;
}

/**
 * How long the main thread goes without running a timer callback or painting a frame, and what ran on it. Training
 * runs in the Worker, so the main thread must stay free while it trains: no long tasks, and no gap of its own (a
 * gap the idle probe Worker saw at the same time is the machine's, not the page's).
 */
class Heartbeat {
  #timer = 0;
  #frame = 0;
  #running = false;
  #last = 0;
  #lastFrame = 0;
  /** @type {[number, number][]} */
  #gaps = [];
  /** @type {[number, number][]} long tasks, as [start, end] on the epoch clock */
  #longTaskSpans = [];
  #stats = { maxIntervalGapMs: 0, maxFrameGapMs: 0, ticks: 0, frames: 0, longTasks: 0, maxLongTaskMs: 0, startedAt: 0 };
  /** @type {PerformanceObserver | null} */
  #observer = null;

  start() {
    this.#halt();
    this.#running = true;
    probe.postMessage('start');
    const now = performance.now();
    this.#stats = { maxIntervalGapMs: 0, maxFrameGapMs: 0, ticks: 0, frames: 0, longTasks: 0, maxLongTaskMs: 0, startedAt: now };
    this.#gaps = [];
    this.#longTaskSpans = [];
    // Long tasks (over 50 ms) are main-thread work, but their length is wall time: a stall of the whole machine in the
    // middle of one lengthens it, so like gaps they are judged by their own part too.
    this.#observer = new PerformanceObserver((list) => this.#countLongTasks(list.getEntries()));
    this.#observer.observe({ type: 'longtask' });
    this.#last = now;
    this.#lastFrame = 0;
    this.#timer = setInterval(() => this.#tick(performance.now()), 10);
    const frame = (t) => {
      if (!this.#running) return;
      if (this.#lastFrame) this.#stats.maxFrameGapMs = Math.max(this.#stats.maxFrameGapMs, t - this.#lastFrame);
      this.#lastFrame = t;
      this.#stats.frames++;
      // Visible motion, so a screenshot shows the page was alive.
      beatEl.style.left = `${(t / 8) % 176}px`;
      this.#frame = requestAnimationFrame(frame);
    };
    this.#frame = requestAnimationFrame(frame);
  }

  /** @param {number} t performance.now() */
  #tick(t) {
    const gap = t - this.#last;
    this.#stats.maxIntervalGapMs = Math.max(this.#stats.maxIntervalGapMs, gap);
    if (gap > GAP_RECORD_MS) this.#gaps.push([performance.timeOrigin + this.#last, performance.timeOrigin + t]);
    this.#stats.ticks++;
    this.#last = t;
  }

  /** @param {PerformanceEntryList} entries */
  #countLongTasks(entries) {
    for (const e of entries) {
      this.#stats.longTasks++;
      this.#stats.maxLongTaskMs = Math.max(this.#stats.maxLongTaskMs, e.duration);
      const start = performance.timeOrigin + e.startTime;
      this.#longTaskSpans.push([start, start + e.duration]);
    }
  }

  #halt() {
    if (!this.#running) return false;
    this.#running = false;
    clearInterval(this.#timer);
    cancelAnimationFrame(this.#frame);
    this.#countLongTasks(this.#observer?.takeRecords() ?? []);
    this.#observer?.disconnect();
    return true;
  }

  /**
   * @returns {Promise<{ maxIntervalGapMs: number, maxOwnGapMs: number, ownGapsMs: number[], probeMaxGapMs: number,
   *   maxFrameGapMs: number, ticks: number, frames: number, longTasks: number, maxLongTaskMs: number,
   *   maxOwnLongTaskMs: number, ownLongTasksMs: number[], durationMs: number }>}
   *   ownGapsMs: each recorded main-thread gap minus the part of it the probe Worker was stalled too, longest first;
   *   maxOwnGapMs: the longest of them; ownLongTasksMs, maxOwnLongTaskMs: the same for long tasks
   */
  async stop() {
    const probeDone = new Promise((resolve) => probe.addEventListener('message', (e) => resolve(e.data), { once: true }));
    if (!this.#halt()) {
      return { ...this.#stats, maxOwnGapMs: 0, ownGapsMs: [], maxOwnLongTaskMs: 0, ownLongTasksMs: [], probeMaxGapMs: 0, durationMs: 0 };
    }
    // The time since the last tick counts too: a main thread blocked until stop() must not look healthy.
    const t = performance.now();
    this.#tick(t);
    this.#stats.ticks--;
    probe.postMessage('stop');
    const probed = /** @type {{ maxGapMs: number, gaps: [number, number][] }} */ (await probeDone);
    const ownParts = (spans) => spans.map(([a, b]) => uncovered(a, b, probed.gaps)).sort((x, y) => y - x);
    const ownGapsMs = ownParts(this.#gaps);
    const ownLongTasksMs = ownParts(this.#longTaskSpans);
    // Gaps too short to record are all counted as the page's own (a conservative bound).
    const maxOwnGapMs = ownGapsMs.length ? ownGapsMs[0] : this.#stats.maxIntervalGapMs;
    return {
      ...this.#stats, maxOwnGapMs, ownGapsMs, maxOwnLongTaskMs: ownLongTasksMs[0] ?? 0, ownLongTasksMs,
      probeMaxGapMs: probed.maxGapMs, durationMs: t - this.#stats.startedAt,
    };
  }
}

/**
 * Reads the package's database directly (not through the package), to check what is really stored.
 * @param {string} [dbName]
 * @returns {Promise<{ stores: string[], adapters: string[], files: { key: string, weightBytes: number | null }[],
 *   checkpoints: { runId: string, step: number }[], checkpointFiles: string[] }>}
 */
async function inspectStore(dbName = 'weblora') {
  const names = (await indexedDB.databases()).map((d) => d.name);
  if (!names.includes(dbName)) return { stores: [], adapters: [], files: [], checkpoints: [], checkpointFiles: [] };
  const db = await new Promise((resolve, reject) => {
    const req = indexedDB.open(dbName);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  try {
    const stores = [...db.objectStoreNames];
    const tx = db.transaction(stores, 'readonly');
    const all = (store, what) => new Promise((resolve, reject) => {
      const req = what === 'keys' ? tx.objectStore(store).getAllKeys() : tx.objectStore(store).getAll();
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    const [adapters, fileKeys, fileValues, checkpoints, checkpointFiles] = await Promise.all([
      all('adapters', 'keys'), all('files', 'keys'), all('files', 'values'), all('checkpoints', 'values'), all('checkpointFiles', 'keys'),
    ]);
    const files = fileKeys.map((key, i) => {
      const w = fileValues[i]?.['adapter_model.safetensors'];
      return { key, weightBytes: w ? (w.byteLength ?? w.data?.byteLength ?? null) : null };
    });
    return { stores, adapters, files, checkpoints: checkpoints.map((c) => ({ runId: c.runId, step: c.step })), checkpointFiles };
  } finally {
    db.close();
  }
}

/** SHA-256 (hex) of bytes, for comparing stored and exported adapter files. @param {BufferSource} bytes */
async function sha256Hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

Object.assign(window, {
  weblora, heartbeat: new Heartbeat(), log, setStatus, inspectStore, sha256Hex,
  /** Engines, adapters and results the tests keep between evaluate calls. */
  state: {},
});
setStatus('ready');
window.pageReady = true;
