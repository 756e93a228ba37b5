/**
 * Checkpoint files, the public front end (`torch.load`, `torch.save`, ...): which format a file is,
 * and the record of tensors in and out. The formats are the neighbours of this file:
 * safetensors.ts (safetensors, memory-mapped, zero-copy), torch_zip.ts (PyTorch `torch.save` zip
 * checkpoints, over zip.ts and pickle.ts) and image.ts (PNG/JPEG); every file is replaced
 * atomically by atomic.ts's one rule.
 *
 *   const w = torch.load('model.safetensors');             // { name: Tensor }
 *   const sd = torch.load('pytorch_model.bin');            // a torch.save state_dict
 *   torch.save(w, 'copy.safetensors', { config: '{...}' }); // atomic, byte-compatible
 *   torch.save(w, 'copy.bin');                             // a torch.save checkpoint Python reads
 *   using f = torch.openSafetensors('model.safetensors');   // lazy: f.keys(), f.metadata, f.get(name)
 *
 * See docs/checkpoints.md.
 */
import { closeSync, readSync } from 'node:fs';
import { extname } from 'node:path';
import { native } from '../native.js';
import { TorchError, argError } from '../errors.js';
import { type Device, normalizeDevice } from '../dtype.js';
import { type Tensor, _wrap as wrap } from '../tensor.js';
import {
  SafetensorsFile, saveSafetensors, saveSafetensorsAsync,
} from './safetensors.js';
import { type StFile, type TensorRecord, defineEntry } from './record.js';
import { readTorchZip, saveTorchZip } from './torch_zip.js';
import { isZip, openForReading } from './zip.js';

export {
  SafetensorsFile, openSafetensors, safetensorsHeader, saveSafetensors, saveSafetensorsAsync,
  type GetOptions, type SafetensorsTensorInfo,
} from './safetensors.js';
export { type TensorRecord } from './record.js';
export { archiveKind, saveTorchZip } from './torch_zip.js';

// ---- reading --------------------------------------------------------------------------------

export interface LoadOptions {
  /** Where the tensors go (default 'cpu'). */
  device?: Device;
  /** Safetensors: true (default) maps the file and makes zero-copy tensors whose pages are read when
   *  first touched; false reads every tensor into its own memory now. */
  lazy?: boolean;
  /** Default: detected from the file's first bytes (a zip archive is a torch.save checkpoint). */
  format?: 'safetensors' | 'torch';
  /** torch.save checkpoints: load the dict of tensors stored under this top-level key (e.g. 'ema'). */
  key?: string;
}

function checkLoadOptions(path: unknown, o: LoadOptions): void {
  if (typeof path !== 'string') throw argError('type', `load: path must be a string, got ${typeof path}`);
  if (o === null || typeof o !== 'object') throw argError('type', 'load: options must be an object');
  if (o.format !== undefined && o.format !== 'safetensors' && o.format !== 'torch') {
    throw argError('range', `load: unknown format '${String(o.format)}' (expected 'safetensors' or 'torch')`);
  }
  if (o.key !== undefined && typeof o.key !== 'string') throw argError('type', 'load: key must be a string');
  if (o.device !== undefined) normalizeDevice(o.device);
}

/** load / loadAsync's options checked: where the tensors go and which format the file is. */
function loadPlan(path: string, o: LoadOptions, what: string): { device: Device; format: 'safetensors' | 'torch' } {
  checkLoadOptions(path, o);
  const device = o.device === undefined ? 'cpu' : normalizeDevice(o.device);
  const format = o.format ?? detectFormat(path);
  if (format === 'safetensors' && o.key !== undefined) throw argError('type', `${what}: 'key' applies to torch.save checkpoints, not safetensors files`);
  return { device, format };
}

function detectFormat(path: string): 'safetensors' | 'torch' {
  const fd = openForReading(path);
  try {
    const b = Buffer.alloc(4);
    const n = readSync(fd, b, 0, 4, 0);
    // A zip local-file signature (torch.save since 1.6), or legacy torch.save: pickle PROTO 2..5
    // then LONG1 (its magic number). A safetensors length prefix never looks like either: as a
    // length they would exceed the 100 MB header bound, or name a 67 MB header.
    if (isZip(b.subarray(0, n))) return 'torch';
    if (n >= 3 && b[0] === 0x80 && b[1]! >= 2 && b[1]! <= 5 && b[2] === 0x8a) return 'torch';
    return 'safetensors';
  } catch (e) {
    throw new TorchError(`cannot read '${path}': ${(e as Error).message}`, 'E_IO');
  } finally {
    closeSync(fd);
  }
}

function record(names: string[], tensors: Tensor[]): TensorRecord {
  const out: TensorRecord = {};
  names.forEach((n, i) => defineEntry(out, n, tensors[i]!));
  return out;
}

function moveAll(names: string[], tensors: Tensor[], device: Device): TensorRecord {
  const moved: Tensor[] = [];
  try {
    for (const t of tensors) moved.push(device === 'cpu' ? t : t.to(device));
  } catch (e) {
    for (const t of moved) if (!tensors.includes(t)) t.dispose();
    for (const t of tensors) t.dispose();
    throw e;
  }
  if (device !== 'cpu') for (const t of tensors) t.dispose();
  return record(names, moved);
}

function readAllSync(file: StFile, reqs: [number, number[], number, number][], copy: boolean): number[] {
  const hs: number[] = [];
  try {
    for (const q of reqs) hs.push(native.stTensor(file, ...q, copy) as number);
  } catch (e) {
    for (const h of hs) native.free(h);
    throw e;
  }
  return hs;
}

/**
 * Loads a checkpoint as `{ name: Tensor }`: a `.safetensors` file (zero-copy, memory-mapped unless
 * `lazy: false`) or a PyTorch `torch.save` zip checkpoint holding a dict of tensors.
 */
export function load(path: string, o: LoadOptions = {}): TensorRecord {
  const { device, format } = loadPlan(path, o, 'load');
  if (format === 'torch') {
    const r = readTorchZip(path, o.key, o.lazy === false, readAllSync);
    return moveAll(r.names, r.tensors, device);
  }
  return loadSafetensors(path, o).tensors;
}

/** A safetensors file's tensors and its `__metadata__`. */
export function loadSafetensors(path: string, o: Omit<LoadOptions, 'format' | 'key'> = {}): { tensors: TensorRecord; metadata: Record<string, string> | null } {
  checkLoadOptions(path, o);
  const device = o.device === undefined ? 'cpu' : normalizeDevice(o.device);
  const f = new SafetensorsFile(path);
  try {
    const names = f.keys();
    const tensors: Tensor[] = [];
    try {
      for (const n of names) tensors.push(f.get(n, { copy: o.lazy === false }));
    } catch (e) {
      for (const t of tensors) t.dispose();
      throw e;
    }
    return { tensors: moveAll(names, tensors, device), metadata: f.metadata };
  } finally {
    f.close();
  }
}

/**
 * load() off the JS thread: safetensors bytes are read (or, mapped, paged in) by a libuv worker,
 * torch.save checkpoints are unpickled there. Resolves to the same record load() returns.
 */
export async function loadAsync(path: string, o: LoadOptions = {}): Promise<TensorRecord> {
  const { device, format } = loadPlan(path, o, 'loadAsync');
  if (format === 'torch') {
    const r = await readTorchZip(path, o.key, o.lazy === false, (file, reqs, copy) => native.stReadAsync(file, reqs, copy) as Promise<number[]>);
    return moveAll(r.names, r.tensors, device);
  }
  const f = new SafetensorsFile(path);
  try {
    const names = f.keys();
    const reqs = names.map((n) => f._request(n));
    const handles = (await native.stReadAsync(f._file!, reqs, o.lazy === false)) as number[];
    return moveAll(names, handles.map(wrap), device);
  } finally {
    f.close();
  }
}


// ---- writing --------------------------------------------------------------------------------

/** The format `save` writes for a file name: `.safetensors`, or `.bin` / `.pt` / `.pth` (torch.save). */
export function saveFormat(path: unknown, what = 'save'): 'safetensors' | 'torch' {
  if (typeof path !== 'string' || path === '') throw argError('type', `${what}: path must be a non-empty string`);
  const ext = extname(path).toLowerCase();
  if (ext === '.safetensors') return 'safetensors';
  if (ext === '.bin' || ext === '.pt' || ext === '.pth') return 'torch';
  throw argError('range', `${what}: cannot tell the format from the name '${path}': use .safetensors, or .bin / .pt / .pth for a torch.save checkpoint`, 'E_ARG');
}

function noMetadata(format: 'safetensors' | 'torch', metadata: unknown, what: string): void {
  if (format === 'torch' && metadata !== undefined) {
    throw argError('type', `${what}: metadata is stored only in .safetensors files (a torch.save checkpoint has no place for it)`, 'E_ARG');
  }
}

/**
 * Saves a record of tensors (an object or a Map of name -> Tensor), replacing `path` atomically;
 * the format follows the extension: `.safetensors` (with `metadata` as `__metadata__`), or `.bin`
 * / `.pt` / `.pth`, a torch.save zip checkpoint of the state dict (no metadata) that torch.load and
 * Python's `torch.load(path, weights_only=True)` read. Any other extension is an error (E_ARG).
 */
export function save(rec: TensorRecord | Map<string, Tensor>, path: string, metadata?: Record<string, string>): void {
  const format = saveFormat(path, 'save');
  noMetadata(format, metadata, 'save');
  if (format === 'torch') saveTorchZip(rec, path, 'save');
  else saveSafetensors(rec, path, metadata, 'save');
}

/** save() with a safetensors file's copy and write on a libuv worker (a torch.save checkpoint is
 *  written on the JS thread). Do not modify the tensors until it resolves. */
export async function saveAsync(rec: TensorRecord | Map<string, Tensor>, path: string, metadata?: Record<string, string>): Promise<void> {
  const format = saveFormat(path, 'saveAsync');
  noMetadata(format, metadata, 'saveAsync');
  if (format === 'torch') saveTorchZip(rec, path, 'saveAsync');
  else await saveSafetensorsAsync(rec, path, metadata, 'saveAsync');
}
