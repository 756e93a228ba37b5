/**
 * Listing dataset folders: recursive, sorted by relative path compared as strings (so the order
 * is the same on every file system and machine, which os.listdir's is not), dot-entries skipped.
 */
import { readdirSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { TorchError } from '../../torch/errors.js';

/** Every file under dir that `accept` takes (hidden files and folders skipped), sorted by relative path. */
export function listFiles(dir: string, accept: (name: string) => boolean): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch (e) {
      throw new TorchError(`'${d}': cannot list the folder: ${(e as Error).message}`, 'E_IO');
    }
    for (const ent of entries) {
      // dot-files include the temporary files of atomic writes still in progress
      if (ent.name.startsWith('.')) continue;
      const p = join(d, ent.name);
      if (ent.isDirectory() || (ent.isSymbolicLink() && isDir(p))) walk(p);
      else if (accept(ent.name)) out.push(p);
    }
  };
  walk(dir);
  const key = (p: string): string => relative(dir, p).split(sep).join('/');
  return out.map((p) => [key(p), p] as const).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

