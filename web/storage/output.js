// output.js: crash-safe output folders for the Node CLI (adapters, merged models, exports). A new folder is
// written beside the target, every file and the folder are fsynced, then swapped in: the old folder is renamed
// aside, the new one renamed into place, and only then is the old one deleted. Whatever instant the process dies
// at, the target or its aside copy holds a complete old or new output, and the next run over the same target
// finishes the job (restores the old folder if the new one never arrived; deletes leftovers).
//
// Linux's renameat2(RENAME_EXCHANGE) would swap two folders in one step, but Node has no binding for it and a
// native addon is not worth its build cost for a window that recovery already covers.
import { constants as fsc } from 'node:fs';
import { access, copyFile, mkdir, open, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { WebLoRAError, registerErrorClass } from '../errors.js';
import { formatBytes } from '../units.js';

const PARTIAL = '.partial-';
const ASIDE = '.old-';
/** Spare room asked for beyond the output itself, for the file system's own bookkeeping. */
const ROOM_MARGIN = 1 << 20;

/** An output that cannot be written: code OUTPUT_EXISTS, OUTPUT_NOT_WRITABLE, OUTPUT_NO_ROOM or OUTPUT_WRITE_FAILED. */
export class OutputError extends WebLoRAError {
  static code = 'OUTPUT_WRITE_FAILED';
}
registerErrorClass(OutputError, 'OutputError');

/**
 * Test-only fault injection: WEBLORA_CRASH_AT=<step> kills the process with SIGKILL (no cleanup, like a power cut
 * or kill -9) when the swap reaches that step. Steps in order: files-written, files-synced, folder-synced,
 * old-aside, new-in, old-deleted.
 * @param {string} step
 */
function crashPoint(step) {
  if (process.env.WEBLORA_CRASH_AT === step) process.kill(process.pid, 'SIGKILL');
}

/** @param {string} p */
async function fsyncPath(p) {
  const fh = await open(p, fsc.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** @param {string} name @returns {number | null} the pid in a leftover's name */
function pidOf(name) {
  const m = /-(\d+)$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** @param {number} pid */
function isAlive(pid) {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return /** @type {any} */ (err).code === 'EPERM';
  }
}

/** @param {string} p */
const exists = (p) => stat(p).then(() => true, () => false);

/**
 * Repairs what an interrupted write to `target` left behind (skipping folders of processes still running): an
 * old output renamed aside whose replacement never arrived goes back into place; unfinished new folders and
 * old folders already replaced are deleted.
 * @param {string} target
 * @returns {Promise<{ restored: boolean, removed: string[] }>}
 */
export async function recoverOutput(target) {
  target = path.resolve(target);
  const dir = path.dirname(target);
  const base = path.basename(target);
  const entries = await readdir(dir).catch(() => []);
  const leftovers = entries
    .filter((n) => (n.startsWith(base + PARTIAL) || n.startsWith(base + ASIDE)) && /-\d+$/.test(n))
    .filter((n) => !isAlive(/** @type {number} */ (pidOf(n))));
  let restored = false;
  const asides = leftovers.filter((n) => n.startsWith(base + ASIDE)).sort();
  if (asides.length && !(await exists(target))) {
    // The crash came between moving the old output aside and moving the new one in: put the old one back.
    await rename(path.join(dir, asides[asides.length - 1]), target);
    await fsyncPath(dir);
    restored = true;
  }
  const removed = [];
  for (const n of leftovers) {
    if (!(await exists(path.join(dir, n)))) continue;
    await rm(path.join(dir, n), { recursive: true, force: true });
    removed.push(n);
  }
  return { restored, removed };
}

/**
 * An output being prepared. prepare() checks everything that can be checked before a long job (the target may be
 * replaced, its folder is writable, there is room) so a full disk or a read-only location is found before
 * training, not after, and reserves the temporary sibling; commit() fills it and moves it into place; discard()
 * abandons it. OutputFolder and OutputFile differ only in what the target is and how the new one replaces the old.
 */
class Output {
  /** @param {string} target @param {string} tmp */
  constructor(target, tmp) {
    this.target = target;
    this.tmp = tmp;
  }

  /**
   * @template {typeof OutputFolder | typeof OutputFile} T
   * @this {T}
   * @param {string} given the output path as given (for messages)
   * @param {{ force?: boolean, bytesNeeded?: number }} [options] force replaces an existing output; bytesNeeded
   *   (when known) is checked against the free space of the file system
   * @returns {Promise<InstanceType<T>>}
   */
  static async prepare(given, { force = false, bytesNeeded = 0 } = {}) {
    const target = path.resolve(given);
    await recoverOutput(target);
    await this.checkTarget(target, given, force);
    const parent = path.dirname(target);
    try {
      await mkdir(parent, { recursive: true });
      await access(parent, fsc.W_OK);
    } catch (err) {
      throw new OutputError(`cannot write the output ${given}: ${/** @type {any} */ (err).code ?? ''} ${/** @type {Error} */ (err).message}`.trim(), { code: 'OUTPUT_NOT_WRITABLE' });
    }
    const tmp = `${target}${PARTIAL}${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    try {
      // Creating it now proves the location really takes writes (read-only mounts, ACLs, root squash).
      await this.createTemporary(tmp);
    } catch (err) {
      throw new OutputError(`cannot write the output ${given}: ${/** @type {Error} */ (err).message}`, { code: 'OUTPUT_NOT_WRITABLE' });
    }
    const output = /** @type {InstanceType<T>} */ (new this(target, tmp));
    try {
      await output.checkRoom(bytesNeeded);
    } catch (err) {
      await output.discard();
      throw err;
    }
    return output;
  }

  /**
   * Refuses to go on when the file system has less free space than the output needs (when statfs can tell).
   * @param {number} bytesNeeded
   */
  async checkRoom(bytesNeeded) {
    if (!(bytesNeeded > 0)) return;
    const fsInfo = await statfs(this.tmp).catch(() => null);
    const free = fsInfo ? Number(fsInfo.bavail) * Number(fsInfo.bsize) : Infinity;
    if (free < bytesNeeded + ROOM_MARGIN) {
      throw new OutputError(`not enough room for the output ${this.target}: it needs about ${formatBytes(bytesNeeded)}, `
        + `the file system has ${formatBytes(free)} free`, { code: 'OUTPUT_NO_ROOM' });
    }
  }

  /** Deletes the unfinished output (a failed or abandoned job). */
  async discard() {
    await rm(this.tmp, { recursive: true, force: true });
  }

  /** @param {unknown} err @returns {OutputError} */
  writeFailed(err) {
    return new OutputError(`writing the output ${this.target} failed, nothing was replaced: ${/** @type {Error} */ (err).message}`, { code: 'OUTPUT_WRITE_FAILED' });
  }
}

/** A folder of files (an adapter, a Hugging Face model): written whole, then swapped in for the old folder. */
export class OutputFolder extends Output {
  /** @param {string} target @param {string} given @param {boolean} force */
  static async checkTarget(target, given, force) {
    const info = await stat(target).catch(() => null);
    if (info && !info.isDirectory()) throw new OutputError(`output ${given} exists and is not a folder`, { code: 'OUTPUT_EXISTS' });
    const entries = info ? await readdir(target) : [];
    if (entries.length > 0 && !force) {
      throw new OutputError(`output ${given} exists and is not empty (use --force to replace it)`, { code: 'OUTPUT_EXISTS' });
    }
  }

  /** @param {string} tmp */
  static async createTemporary(tmp) {
    await mkdir(tmp);
  }

  /**
   * Writes the files, makes them durable and swaps them into place. On failure the target is unchanged.
   * @param {Record<string, Uint8Array | string | { copyFrom: string }>} files
   */
  async commit(files) {
    const { target, tmp } = this;
    const dir = path.dirname(target);
    try {
      for (const [name, data] of Object.entries(files)) {
        const file = path.join(tmp, name);
        if (typeof data === 'string' || data instanceof Uint8Array) {
          const fh = await open(file, 'w');
          try {
            await fh.writeFile(data);
          } finally {
            await fh.close();
          }
        } else await copyFile(data.copyFrom, file);
      }
      crashPoint('files-written');
      for (const name of Object.keys(files)) await fsyncPath(path.join(tmp, name));
      crashPoint('files-synced');
      await fsyncPath(tmp);
      crashPoint('folder-synced');
    } catch (err) {
      await this.discard();
      throw this.writeFailed(err);
    }
    const aside = `${target}${ASIDE}${process.pid}`;
    const hadOld = await exists(target);
    if (hadOld) {
      await rm(aside, { recursive: true, force: true });
      await rename(target, aside);
      crashPoint('old-aside');
    }
    try {
      await rename(tmp, target);
    } catch (err) {
      if (hadOld) await rename(aside, target).catch(() => {});
      await this.discard();
      throw err;
    }
    await fsyncPath(dir);
    crashPoint('new-in');
    if (hadOld) {
      await rm(aside, { recursive: true, force: true });
      crashPoint('old-deleted');
    }
  }
}

/**
 * One file (a GGUF model or adapter): written beside the target, fsynced, and renamed over it, which replaces the
 * old file in one step, so no aside copy is needed.
 */
export class OutputFile extends Output {
  /** @param {string} target @param {string} given @param {boolean} force */
  static async checkTarget(target, given, force) {
    const info = await stat(target).catch(() => null);
    if (!info) return;
    if (info.isDirectory()) throw new OutputError(`output ${given} is a folder: give the path of the file to write`, { code: 'OUTPUT_EXISTS' });
    // A rename would replace a device or a socket with a plain file.
    if (!info.isFile()) throw new OutputError(`output ${given} exists and is not a regular file`, { code: 'OUTPUT_EXISTS' });
    if (!force) throw new OutputError(`output ${given} exists (use --force to replace it)`, { code: 'OUTPUT_EXISTS' });
  }

  /** @param {string} tmp */
  static async createTemporary(tmp) {
    await (await open(tmp, 'wx')).close();
  }

  /**
   * Writes the bytes, makes them durable and renames them into place. On failure the target is unchanged.
   * @param {Uint8Array | string} data
   */
  async commit(data) {
    const { target, tmp } = this;
    try {
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(data);
        crashPoint('files-written');
        await fh.sync();
      } finally {
        await fh.close();
      }
      crashPoint('files-synced');
    } catch (err) {
      await this.discard();
      throw this.writeFailed(err);
    }
    try {
      await rename(tmp, target);
    } catch (err) {
      await this.discard();
      throw err;
    }
    await fsyncPath(path.dirname(target));
    crashPoint('new-in');
  }
}
