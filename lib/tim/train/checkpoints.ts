/**
 * Training checkpoints on disk: `<out>/checkpoints/<step>/{model,ema,optimizer}.safetensors` and
 * `state.json`. A checkpoint directory is complete or absent: its files are written into a hidden
 * temporary directory beside it, flushed, and the directory is renamed into place (rename is atomic
 * on one filesystem), then the parent is flushed. A run killed at any moment leaves at worst a
 * `.tmp-*` directory, which the next run removes; `latest` only ever sees whole checkpoints.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fsyncDir, writeAllSync } from '../../torch/io/atomic.js';
import { TorchError, argError } from '../../torch/errors.js';
import { fsError } from './run_lock.js';

export const STATE_FILE = 'state.json';
const STEP_DIR = /^\d+$/;

/** `<out>/checkpoints`. */
export function checkpointsDir(outDir: string): string {
  return join(outDir, 'checkpoints');
}

/** Writes a file and flushes it (the directory rename that publishes it comes later). */
export function writeFileSynced(path: string, data: string | Uint8Array): void {
  const fd = openSync(path, 'w');
  try {
    writeAllSync(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A file written atomically on its own (config.yaml, metrics.jsonl, reports): lib/torch/io/atomic.ts. */
export { writeFileAtomic as writeFileAtomicSync } from '../../torch/io/atomic.js';

/** Complete checkpoints (numeric directories holding state.json), oldest first. */
export function listCheckpoints(outDir: string): { step: number; dir: string }[] {
  const root = checkpointsDir(outDir);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => STEP_DIR.test(n) && existsSync(join(root, n, STATE_FILE)))
    .map((n) => ({ step: Number(n), dir: join(root, n) }))
    .sort((a, b) => a.step - b.step);
}

/** The highest complete checkpoint, or null. */
export function latestCheckpoint(outDir: string): { step: number; dir: string } | null {
  const all = listCheckpoints(outDir);
  return all.length ? all[all.length - 1]! : null;
}

/**
 * Where to resume from: 'latest' (null when there is none yet: a fresh start, as the official
 * trainer), a step number of this run, or a checkpoint directory path (errors if it is not one).
 */
export function resolveResume(outDir: string, spec: string): { step: number; dir: string } | null {
  if (spec === 'latest') return latestCheckpoint(outDir);
  const dir = STEP_DIR.test(spec) ? join(checkpointsDir(outDir), String(Number(spec))) : resolve(spec);
  if (!existsSync(join(dir, STATE_FILE))) {
    throw new TorchError(`resume: '${dir}' is not a complete checkpoint (no ${STATE_FILE})`, 'E_IO');
  }
  const state = readCheckpointState(dir);
  return { step: state.step, dir };
}

/** The JSON state of a checkpoint (step, RNG, data position, scheduler, ...). */
export interface CheckpointState {
  format: 'tim-torch.train';
  version: 1;
  step: number;
  [key: string]: unknown;
}

export function readCheckpointState(dir: string): CheckpointState {
  const path = join(dir, STATE_FILE);
  let s: unknown;
  try {
    s = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new TorchError(`cannot read checkpoint state '${path}': ${(e as Error).message}`, 'E_FORMAT');
  }
  const st = s as Partial<CheckpointState>;
  if (!st || st.format !== 'tim-torch.train' || st.version !== 1 || !Number.isSafeInteger(st.step) || st.step! < 0) {
    throw new TorchError(`'${path}' is not a tim-torch training state (format/version/step)`, 'E_FORMAT');
  }
  // <run>/checkpoints/<step>: the folder's name and the state must agree (a copied or edited
  // state.json would otherwise resume at a step its weights are not from)
  const name = basename(resolve(dir));
  if (STEP_DIR.test(name) && basename(dirname(resolve(dir))) === 'checkpoints' && Number(name) !== st.step) {
    throw new TorchError(
      `'${path}' says step ${st.step} but its folder is checkpoint ${name}: the checkpoint was copied or edited; ` +
      'resume from another checkpoint (--resume <step>) or fix the folder name',
      'E_FORMAT',
    );
  }
  return st as CheckpointState;
}

/** The files a checkpoint folder holds (what a half-removed one may have left). */
const CHECKPOINT_FILES = new Set(['model.safetensors', 'ema.safetensors', 'optimizer.safetensors']);

/**
 * Removes the leftovers of a run killed while writing (`.tmp-*`) or pruning (`.old-*`) a
 * checkpoint, and step folders without state.json that hold nothing but checkpoint files (what
 * pruning of earlier versions could leave when killed). Only the run folder's owner (the holder
 * of its lock) may call this: another run's `.tmp-*` may be in the middle of being written.
 */
export function removeStaleTemps(outDir: string): string[] {
  const root = checkpointsDir(outDir);
  if (!existsSync(root)) return [];
  const gone: string[] = [];
  for (const n of readdirSync(root)) {
    const p = join(root, n);
    let remove = n.startsWith('.tmp-') || n.startsWith('.old-');
    if (!remove && STEP_DIR.test(n) && !existsSync(join(p, STATE_FILE))) {
      try {
        remove = statSync(p).isDirectory() && readdirSync(p).every((f) => CHECKPOINT_FILES.has(f));
      } catch {
        remove = false;
      }
    }
    if (remove) {
      rmSync(p, { recursive: true, force: true });
      gone.push(n);
    }
  }
  return gone;
}

/**
 * Writes checkpoint `step`: `writeFiles(tmpDir)` puts the tensor files into a temporary directory,
 * then state.json is written last and flushed, the directory flushed and renamed to `<step>`.
 * An existing `<step>` (a resumed run that went back in time) is replaced only after the new one
 * is complete.
 */
export function writeCheckpoint(outDir: string, state: CheckpointState, writeFiles: (dir: string) => void): string {
  if (!Number.isSafeInteger(state.step) || state.step < 0) throw argError('range', `writeCheckpoint: bad step ${state.step}`);
  const root = checkpointsDir(outDir);
  const final = join(root, String(state.step));
  const tmp = join(root, `.tmp-${state.step}-${process.pid}`);
  try {
    mkdirSync(root, { recursive: true });
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
  } catch (e) {
    throw fsError(`cannot write checkpoint ${state.step}: cannot create`, tmp, e);
  }
  try {
    writeFiles(tmp);
    writeFileSynced(join(tmp, STATE_FILE), JSON.stringify(state, null, 1) + '\n');
    fsyncDir(tmp);
    if (existsSync(final)) {
      const old = join(root, `.old-${state.step}-${process.pid}`);
      renameSync(final, old);
      renameSync(tmp, final);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, final);
    }
    fsyncDir(root);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (e instanceof TorchError) throw e;
    throw fsError(`cannot write checkpoint ${state.step} in`, root, e);
  }
  return final;
}

/**
 * Keeps the newest `keep` checkpoints (null: all), never deleting the steps in `protect` (official
 * checkpoint_list), which do not count towards `keep`. With `newest` (the step just written), only
 * checkpoints up to it are considered, so it is always kept and later ones are never deleted. Call after the newest checkpoint is complete, so a crash while
 * pruning can never leave fewer than `keep` whole ones. Returns the removed steps.
 */
export function pruneCheckpoints(outDir: string, keep: number | null, protect: readonly number[] = [], newest?: number): number[] {
  if (keep === null) return [];
  const root = checkpointsDir(outDir);
  let prunable = listCheckpoints(outDir).filter((c) => !protect.includes(c.step));
  // Checkpoints past the one just written (a run resumed from an earlier step) are not this
  // timeline's to judge: never removed here. The one just written is the newest kept.
  if (newest !== undefined) {
    prunable = prunable.filter((c) => c.step <= newest);
    keep = Math.max(1, keep);
  }
  const removed: number[] = [];
  for (const c of prunable.slice(0, Math.max(0, prunable.length - keep))) {
    // Crash-safe: the rename takes the whole folder out of the checkpoint list at once; a run
    // killed before the delete leaves a `.old-*` folder, which the next start removes.
    const aside = join(root, `.old-${c.step}-${process.pid}`);
    try {
      renameSync(c.dir, aside);
    } catch (e) {
      throw new TorchError(`cannot remove old checkpoint '${c.dir}': ${(e as Error).message} (check the folder's permissions)`, 'E_IO');
    }
    removed.push(c.step);
  }
  if (removed.length) fsyncDir(root);
  for (const step of removed) rmSync(join(root, `.old-${step}-${process.pid}`), { recursive: true, force: true });
  return removed;
}
