/**
 * Replacing a file atomically: the one durability rule every writer in the project follows.
 *
 *   replaceAtomically(path, (tmp) => writeSomething(tmp));
 *
 * The new content goes to a fresh temporary file in the target's folder
 * (`.<name>.tmp-<pid>-<random>`), which is flushed (fsync), renamed over the target, and then the
 * folder is flushed (fsync) so the rename itself survives a power loss. Readers see the old file
 * or the new one, never a partial one. Any failure (the write callback throwing, a full disk, the
 * rename) removes the temporary file and leaves an existing target untouched. Consequences of the
 * rename: the new file gets default permissions (0666 & ~umask), a symlink at `path` is replaced,
 * not followed, and tensors still mapped from the old file keep reading the old bytes (new inode).
 *
 * The folder fsync is best effort (some filesystems refuse fsync on a directory); atomicity never
 * depends on it. Node's fs errors become TorchError E_IO naming the target; TorchErrors pass as
 * they are.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { TorchError } from '../errors.js';

/** A fresh temporary name beside `path` (same folder, so the rename never crosses filesystems). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** A Node fs error (it has an errno code such as ENOENT or ENOSPC) as a TorchError E_IO. */
export function ioError(e: unknown, path: string, what?: string): unknown {
  if (e instanceof TorchError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code)) return e;
  return new TorchError(`${what ? `${what}: ` : ''}cannot write '${path}': ${(e as Error).message}`, 'E_IO');
}

/** Flushes a file or folder by path (fsync through a read-only descriptor). */
function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function fsyncPathAsync(path: string): Promise<void> {
  const f = await open(path, 'r');
  try {
    await f.sync();
  } finally {
    await f.close();
  }
}

/** Flushes a folder's entry list (best effort: some filesystems refuse fsync on directories). */
export function fsyncDir(dir: string): void {
  try {
    fsyncPath(dir);
  } catch {
    // durability of the rename is best effort; atomicity does not depend on it
  }
}

/** Writes all of `data` to an open descriptor. */
export function writeAllSync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

/**
 * Replaces `path` with what `write(tmp)` writes to the temporary path `tmp` (it creates the file),
 * atomically and durably (see the file comment). Returns what `write` returns.
 */
export function replaceAtomically<T>(path: string, write: (tmp: string) => T, what?: string): T {
  const tmp = tempPathFor(path);
  let result: T;
  try {
    result = write(tmp);
    fsyncPath(tmp);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw ioError(e, path, what);
  }
  fsyncDir(dirname(path));
  return result;
}

/** replaceAtomically with an asynchronous writer; the flushes run off the JS thread too. */
export async function replaceAtomicallyAsync<T>(path: string, write: (tmp: string) => Promise<T>, what?: string): Promise<T> {
  const tmp = tempPathFor(path);
  let result: T;
  try {
    result = await write(tmp);
    await fsyncPathAsync(tmp);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw ioError(e, path, what);
  }
  await fsyncPathAsync(dirname(path)).catch(() => { /* best effort, as fsyncDir */ });
  return result;
}

/** Replaces `path` with `data` (a string is written as UTF-8), atomically and durably. */
export function writeFileAtomic(path: string, data: string | Uint8Array, what?: string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  replaceAtomically(path, (tmp) => {
    const fd = openSync(tmp, 'wx');
    try {
      writeAllSync(fd, bytes);
    } finally {
      closeSync(fd);
    }
  }, what);
}

/**
 * A file written in pieces over time (a stream of batches) that replaces `path` only when
 * commit() is called, under the same rule as replaceAtomically; abort() (or any failure) drops
 * the temporary file. The temporary file is created on the first write.
 */
export class AtomicFile {
  readonly tmp: string;
  private fd: number | null = null;
  private done = false;
  private readonly errorOf: (e: unknown) => unknown;
  /** `what` names the writer in error messages, or maps a failure to the error to throw. */
  constructor(readonly path: string, what?: string | ((e: unknown) => unknown)) {
    this.tmp = tempPathFor(path);
    this.errorOf = typeof what === 'function' ? what : (e) => ioError(e, path, what);
  }

  /** Appends bytes; a failure aborts the file (E_IO). */
  write(data: Uint8Array): void {
    if (this.done) throw new TorchError(`'${this.path}' was already committed or aborted`, 'E_STATE');
    try {
      if (this.fd === null) this.fd = openSync(this.tmp, 'wx');
      writeAllSync(this.fd, data);
    } catch (e) {
      this.abort();
      throw this.errorOf(e);
    }
  }

  /** Flushes and renames the file into place, then flushes the folder. */
  commit(): void {
    if (this.done) throw new TorchError(`'${this.path}' was already committed or aborted`, 'E_STATE');
    try {
      if (this.fd === null) this.fd = openSync(this.tmp, 'wx');
      fsyncSync(this.fd);
      closeSync(this.fd);
      this.fd = null;
      renameSync(this.tmp, this.path);
    } catch (e) {
      this.abort();
      throw this.errorOf(e);
    }
    this.done = true;
    fsyncDir(dirname(this.path));
  }

  /** Drops the temporary file unless commit() published it. Safe to call more than once. */
  abort(): void {
    if (this.done) return;
    this.done = true;
    if (this.fd !== null) {
      try { closeSync(this.fd); } catch { /* closing anyway */ }
      this.fd = null;
    }
    rmSync(this.tmp, { force: true });
  }
}
