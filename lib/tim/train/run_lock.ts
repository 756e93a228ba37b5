/**
 * Ownership of a run folder: one trainer at a time. `tim train` (rank 0 of a data-parallel run)
 * holds `<out>/.tim-train.lock` from start-up to exit: a file created exclusively (O_EXCL) holding
 * the owner's pid, host and process start time. It is removed by close() and, failing that, when
 * the process exits; a process killed outright (SIGKILL, power loss) leaves it behind, and the next
 * trainer finds it stale (same host, and no process with that pid and start time runs) and takes
 * the folder over. A lock from another host cannot be checked from here: it is refused, and the
 * message names the file to delete once that run is known to be gone.
 */
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { TorchError } from '../../torch/errors.js';

export const LOCK_FILE = '.tim-train.lock';

interface LockBody {
  pid: number;
  host: string;
  /** the process's start time (Linux: /proc/<pid>/stat field 22), to tell a reused pid */
  start: string | null;
  since: string;
  token: string;
}

function processStart(pid: number): string | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the fields after it follow the last ')'
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process a lock names may still run (true when that cannot be told). */
function holderAlive(b: LockBody): boolean {
  if (b.host !== hostname()) return true;
  try {
    process.kill(b.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  // a killed holder stays a zombie (state Z) until its parent reaps it, and kill(pid, 0) still
  // succeeds on it: it holds nothing any more
  try {
    const st = readFileSync(`/proc/${b.pid}/stat`, 'utf8');
    if (/^[ZX]/.test(st.slice(st.lastIndexOf(')') + 2))) return false;
  } catch {
    /* no /proc: fall through */
  }
  if (b.start !== null) {
    const now = processStart(b.pid);
    if (now !== null && now !== b.start) return false; // the pid was reused
  }
  return true;
}

const held = new Set<RunLock>();
let exitHook = false;

/** An E_IO error for a file-system failure on `path`, with what to do about it. */
export function fsError(what: string, path: string, e: unknown): TorchError {
  const code = (e as NodeJS.ErrnoException).code;
  const hint = code === 'EEXIST' || code === 'ENOTDIR' ? `'${path}' or a folder above it is a file, not a folder: pass another path`
    : code === 'EACCES' || code === 'EPERM' ? 'no permission: pass a path you can write, or fix its permissions'
    : code === 'EROFS' ? 'the file system is read-only: pass a path on a writable disk'
    : code === 'ENOSPC' || code === 'EDQUOT' ? 'the disk is full: free space or pass a path on another disk'
    : code === 'ENOENT' ? 'a folder on the way does not exist or was removed'
    : 'check the path';
  return new TorchError(`${what} '${path}': ${(e as Error).message} (${hint})`, 'E_IO');
}

export class RunLock {
  private released = false;
  private constructor(readonly path: string, private readonly token: string) {}

  /**
   * Takes `<outDir>/.tim-train.lock` (creating outDir), or throws E_LOCKED naming the owner. A
   * stale lock of a dead process on this host is replaced.
   */
  static acquire(outDir: string): RunLock {
    try {
      mkdirSync(outDir, { recursive: true });
    } catch (e) {
      throw fsError('cannot create the run folder', outDir, e);
    }
    const path = join(outDir, LOCK_FILE);
    const token = `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const body: LockBody = { pid: process.pid, host: hostname(), start: processStart(process.pid), since: new Date().toISOString(), token };
    for (let attempt = 0; attempt < 5; attempt++) {
      let fd: number;
      try {
        fd = openSync(path, 'wx');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError('cannot create the run lock', path, e);
        RunLock.checkHolder(path);
        continue; // it was stale and is gone: try again
      }
      try {
        const b = Buffer.from(JSON.stringify(body) + '\n');
        writeSync(fd, b, 0, b.length);
        fsyncSync(fd);
      } catch (e) {
        closeSync(fd);
        rmSync(path, { force: true });
        throw fsError('cannot write the run lock', path, e);
      }
      closeSync(fd);
      const lock = new RunLock(path, token);
      held.add(lock);
      if (!exitHook) {
        exitHook = true;
        process.on('exit', () => { for (const l of held) l.release(); });
      }
      return lock;
    }
    throw new TorchError(`cannot take the run lock '${path}': other processes keep taking it`, 'E_LOCKED');
  }

  /** Throws E_LOCKED if a live process holds `path`; removes it when its holder is dead. */
  private static checkHolder(path: string): void {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // released meanwhile
      throw fsError('cannot read the run lock', path, e);
    }
    let b: LockBody | null = null;
    try {
      const o = JSON.parse(text) as LockBody;
      if (o && Number.isSafeInteger(o.pid) && typeof o.host === 'string') b = o;
    } catch {
      // being written right now (a few bytes, a moment), or damaged
    }
    if (b === null) {
      let age = Infinity;
      try { age = Date.now() - statSync(path).mtimeMs; } catch { return; }
      if (age < 10_000) throw new TorchError(`run folder is locked: '${path}' is being created by another trainer`, 'E_LOCKED');
    } else if (holderAlive(b)) {
      const who = b.pid === process.pid && b.host === hostname() ? 'this process (another Trainer on the same folder is still open: close() it first)'
        : `process ${b.pid} on ${b.host}`;
      throw new TorchError(
        `run folder '${join(path, '..')}' is in use by ${who}, since ${b.since}: two trainers on one folder would destroy each other's checkpoints. ` +
        `Wait for it to finish, or train into another --out. If no such process runs${b.host !== hostname() ? ' (it is on another machine, which cannot be checked from here)' : ''}, delete '${path}'`,
        'E_LOCKED',
      );
    }
    // stale: move it out of the way (rename is atomic: one of several takers wins), then drop it
    const aside = `${path}.stale-${process.pid}`;
    try {
      renameSync(path, aside);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw fsError('cannot remove the stale run lock', path, e);
    }
    try {
      // Another taker may have replaced the stale lock between our read and the rename: then this
      // is its live lock, which goes back (link fails if yet another lock is in place meanwhile).
      if (readFileSync(aside, 'utf8') !== text) {
        try { linkSync(aside, path); } catch { /* a newer lock stands; its owner goes on */ }
      }
    } finally {
      rmSync(aside, { force: true });
    }
  }

  /** Removes the lock if it is still this one's. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    held.delete(this);
    try {
      const o = JSON.parse(readFileSync(this.path, 'utf8')) as LockBody;
      if (o.token === this.token) rmSync(this.path, { force: true });
    } catch {
      // gone already, or not ours any more
    }
  }
}
