/**
 * PyTorch `torch.save` checkpoints (zip format, torch >= 1.6: `.pt`, `.pth`, `.bin`) whose content
 * is a dict of tensors: read and written without Python.
 *
 * Reading: the zip directory (lib/torch/io/zip.ts) and the pickle (lib/torch/io/pickle.ts, a
 * restricted reader that never calls anything) give which tensors the file holds and where their
 * bytes are; the native reader then maps (or copies) each storage record, bounds-checked against
 * the file, and every tensor is an `as_strided` view of its storage, so tensors that shared memory
 * in Python share it here too.
 *
 * Writing: `archive/data.pkl` (a protocol-2 pickle of an OrderedDict name -> tensor, each tensor
 * rebuilt by torch._utils._rebuild_tensor_v2 from a persistent storage reference), one
 * `archive/data/<k>` record per tensor and `archive/version`, replaced atomically
 * (lib/torch/io/atomic.ts). Python's `torch.load(path, weights_only=True)` reads it. Each tensor
 * gets its own storage (written contiguously; CUDA tensors are copied to the CPU); no zip64, so
 * the file must stay under 4 GiB.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { native } from '../native.js';
import { TorchError } from '../errors.js';
import { type DType, DTYPE_SIZE, dtypeCode } from '../dtype.js';
import { type Tensor, _wrap as wrap } from '../tensor.js';
import { op } from '../ops.js';
import { Global, Opaque, PDict, PickleWriter, OP, STORAGE_DTYPES, StorageRef, TensorSpec, unpickle } from './pickle.js';
import { ZipWriter, checkpointError as formatError, isZip, openForReading, readAt, readZip } from './zip.js';
import { replaceAtomically, writeAllSync } from './atomic.js';
import { type StFile, type TensorRecord, tensorEntries } from './record.js';

/** Only TorchScript archives (torch.jit.save) have a constants.pkl record or a code/ folder. */
function isTorchScript(names: Iterable<string>): boolean {
  for (const n of names) if (/^[^/]+\/constants\.pkl$/.test(n) || /^[^/]+\/code\//.test(n)) return true;
  return false;
}

/**
 * What a zip archive holds, sniffed from its content (never its name): 'torchscript' for a
 * torch.jit.save archive (code), 'torch' for any other zip (a torch.save checkpoint, or a damaged
 * archive the checkpoint reader will report), null when the file is not a zip archive.
 */
export function archiveKind(path: string): 'torchscript' | 'torch' | null {
  const fd = openForReading(path);
  try {
    const size = fstatSync(fd).size;
    if (!isZip(readAt(fd, 0, Math.min(size, 4)))) return null;
    let names: Iterable<string>;
    try {
      names = readZip(path, fd, size, []).keys();
    } catch (e) {
      if (e instanceof TorchError && e.code === 'E_FORMAT') return 'torch';
      throw e;
    }
    return isTorchScript(names) ? 'torchscript' : 'torch';
  } finally {
    closeSync(fd);
  }
}

// ---- reading --------------------------------------------------------------------------------

interface CheckpointPlan {
  names: string[];
  specs: TensorSpec[];
  /** distinct storages, with the absolute byte range of each one's record */
  storages: { ref: StorageRef; offset: number; nbytes: number }[];
}

function describe(v: unknown): string {
  if (v instanceof TensorSpec) return 'a tensor';
  if (v instanceof PDict) return `a dict of ${v.map.size} entries`;
  if (v instanceof Opaque) return `an object (${v.what})`;
  if (Array.isArray(v)) return 'a list/tuple';
  if (v === null) return 'None';
  return `a ${typeof v === 'number' || typeof v === 'bigint' ? 'number' : typeof v}`;
}

/**
 * Reads a checkpoint's structure: the zip directory and the pickle. Returns which tensors it
 * holds and where their bytes are; reads no tensor data.
 */
function planCheckpoint(path: string, key: string | undefined): CheckpointPlan {
  const fd = openForReading(path);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new TorchError(`'${path}' is not a regular file`, 'E_IO');
    const size = st.size;
    const head = readAt(fd, 0, Math.min(size, 4));
    if (head.length >= 3 && head[0] === 0x80 && head[2] === 0x8a) {
      throw formatError(path, 'it uses the legacy (pre-1.6) torch.save format; re-save it with torch.save(obj, path) in Python >= 1.6');
    }
    if (!isZip(head)) throw formatError(path, 'not a zip archive');
    const compressed: string[] = [];
    const zip = readZip(path, fd, size, compressed);
    // The archive's top folder is named after the file it was first saved as: find it by data.pkl.
    const pkl = [...zip.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkl.length !== 1) throw formatError(path, pkl.length ? 'several data.pkl records' : 'no data.pkl record (a TorchScript archive? use torch.jit.load)');
    const prefix = pkl[0]!.slice(0, -'data.pkl'.length);
    if (isTorchScript(zip.keys())) {
      throw new TorchError(
        `'${path}' is a TorchScript archive (torch.jit.save), not a torch.save checkpoint: it holds code, which torch.load never runs. ` +
        'If you trust it as you would a script, load it with torch.jit.load (or TiM.load with { allowTorchScript: true })',
        'E_UNSAFE',
      );
    }
    if (compressed.length) throw formatError(path, `zip entry '${compressed[0]}' is compressed (torch.save never compresses)`);
    const order = zip.get(`${prefix}byteorder`);
    if (order) {
      const b = readAt(fd, order.offset, Math.min(order.size, 16)).toString('latin1');
      if (b !== 'little') throw formatError(path, `byte order '${b}' is not supported`);
    }
    const rec = zip.get(pkl[0]!)!;
    const pickle = readAt(fd, rec.offset, rec.size);
    if (pickle.length !== rec.size) throw formatError(path, 'truncated data.pkl');

    const storages = new Map<string, StorageRef>();
    const root = unpickle(pickle, path, (pid) => {
      if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) return new Opaque('persistent id');
      const [, type, k, , numel] = pid as unknown[];
      if (!(type instanceof Global) || typeof k !== 'string' || typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) {
        throw formatError(path, 'malformed storage reference');
      }
      const prev = storages.get(k);
      if (prev) return prev;
      const ref = new StorageRef(k, type.name, STORAGE_DTYPES[type.name] ?? null, numel);
      storages.set(k, ref);
      return ref;
    });

    let obj = root;
    if (key !== undefined) {
      if (!(obj instanceof PDict)) throw formatError(path, `its content is ${describe(obj)}, so it has no key '${key}'`);
      if (!obj.map.has(key)) throw formatError(path, `it has no top-level key '${key}' (keys: ${[...obj.map.keys()].map(String).slice(0, 20).join(', ')})`);
      obj = obj.map.get(key);
    }
    if (!(obj instanceof PDict)) throw formatError(path, `its content is ${describe(obj)}, not a dict of tensors`);
    const names: string[] = [];
    const specs: TensorSpec[] = [];
    for (const [k, v] of obj.map) {
      if (typeof k !== 'string') throw formatError(path, `dict key ${String(k)} is not a string`);
      if (!(v instanceof TensorSpec)) {
        const hint = v instanceof PDict ? ` (load a nested dict with { key: '${k}' })` : '';
        throw formatError(path, `entry '${k}' is ${describe(v)}, not a tensor${hint}`);
      }
      const s = v.storage;
      if (s.dtype === null) throw new TorchError(`'${path}': entry '${k}' has storage type ${s.typeName}, which is not supported`, 'E_DTYPE');
      // The view must lie inside its storage (as_strided would check too; fail with a clear message).
      let last = v.offset;
      let empty = false;
      for (let i = 0; i < v.size.length; i++) {
        if (v.size[i] === 0) empty = true;
        else last += (v.size[i]! - 1) * v.stride[i]!;
      }
      if (!empty && last >= s.numel) throw formatError(path, `entry '${k}' reaches past the end of its storage`);
      names.push(k);
      specs.push(v);
    }
    // Only the storages the chosen tensors use, each checked against its record.
    const used = new Map<string, { ref: StorageRef; offset: number; nbytes: number }>();
    for (const sp of specs) {
      const s = sp.storage;
      if (used.has(s.key)) continue;
      const r = zip.get(`${prefix}data/${s.key}`);
      if (!r) throw formatError(path, `storage record '${s.key}' is missing`);
      const nbytes = s.numel * DTYPE_SIZE[s.dtype!];
      if (nbytes > r.size) throw formatError(path, `storage '${s.key}' claims ${nbytes} bytes but its record holds ${r.size}`);
      used.set(s.key, { ref: s, offset: r.offset, nbytes });
    }
    return { names, specs, storages: [...used.values()] };
  } finally {
    closeSync(fd);
  }
}


const AS_STRIDED = op('aten::as_strided');
type Request = [number, number[], number, number];

/**
 * The tensors of a torch.save checkpoint (those of the dict under `key`, if given), read on the
 * CPU by `read` (native.stTensor one by one, or native.stReadAsync on a worker): zero-copy from the
 * file mapping unless `copy`.
 */
export function readTorchZip<R extends number[] | Promise<number[]>>(
  path: string, key: string | undefined, copy: boolean, read: (file: StFile, reqs: Request[], copy: boolean) => R,
): R extends Promise<number[]> ? Promise<{ names: string[]; tensors: Tensor[] }> : { names: string[]; tensors: Tensor[] } {
  const plan = planCheckpoint(path, key);
  const f = native.stOpen(path, true);
  const reqs: Request[] = plan.storages.map((s) => [dtypeCode(s.ref.dtype!), [s.ref.numel], s.offset, s.offset + s.nbytes]);
  const finish = (handles: number[]): { names: string[]; tensors: Tensor[] } => {
    const bases = new Map<string, Tensor>();
    plan.storages.forEach((s, i) => bases.set(s.ref.key, wrap(handles[i]!)));
    const views: Tensor[] = [];
    try {
      for (const sp of plan.specs) {
        views.push(wrap(native.call(AS_STRIDED(), bases.get(sp.storage.key)!._h, sp.size, sp.stride, sp.offset)));
      }
    } catch (e) {
      for (const v of views) v.dispose();
      throw e;
    } finally {
      for (const b of bases.values()) b.dispose(); // the views keep the storages alive
    }
    return { names: plan.names, tensors: views };
  };
  let r: number[] | Promise<number[]>;
  try {
    r = read(f.file, reqs, copy);
  } finally {
    // Tensors already made (or being made by a worker, which holds its own reference) keep the
    // mapping alive; the file object itself is no longer needed.
    native.stClose(f.file);
  }
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return (r instanceof Promise ? r.then(finish) : finish(r)) as any;
}

// ---- writing --------------------------------------------------------------------------------

/** The storage type torch.save names for each dtype (the reader's table, inverted). */
const STORAGE_OF: Readonly<Partial<Record<DType, string>>> = Object.fromEntries(
  Object.entries(STORAGE_DTYPES).filter(([name]) => name !== 'UntypedStorage').map(([name, d]) => [d, name]),
);

function dataPickle(entries: { name: string; storage: string; key: string; shape: number[] }[]): Buffer {
  const p = new PickleWriter().op(OP.PROTO, 2);
  p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE, OP.REDUCE, OP.MARK);
  for (const e of entries) {
    const numel = e.shape.reduce((a, b) => a * b, 1);
    const stride = e.shape.map((_, i) => e.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    p.str(e.name).global('torch._utils', '_rebuild_tensor_v2').op(OP.MARK);
    // persistent id ('storage', torch.<T>Storage, key, location, numel)
    p.op(OP.MARK).str('storage').global('torch', e.storage).str(e.key).str('cpu').int(numel).op(OP.TUPLE, OP.BINPERSID);
    p.int(0).tuple(e.shape).tuple(stride).op(OP.NEWFALSE);
    p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE, OP.REDUCE); // backward hooks
    p.op(OP.TUPLE, OP.REDUCE);
  }
  return p.op(OP.SETITEMS, OP.STOP).bytes();
}

/** Saves `record` (name -> Tensor) as a torch.save checkpoint, atomically. */
export function saveTorchZip(record: TensorRecord | Map<string, Tensor>, path: string, what = 'save'): void {
  const entries = tensorEntries(record, what).map(({ name, tensor }, i) => {
    const storage = STORAGE_OF[tensor.dtype];
    if (!storage) throw new TorchError(`${what}: '${name}' has dtype ${tensor.dtype}, which torch.save checkpoints do not store here`, 'E_DTYPE');
    return { name, storage, key: String(i), shape: tensor.shape, tensor };
  });
  replaceAtomically(path, (tmp) => {
    const fd = openSync(tmp, 'wx');
    try {
      const zip = new ZipWriter((b) => writeAllSync(fd, b), what);
      zip.add('archive/data.pkl', dataPickle(entries));
      // toBuffer: a contiguous row-major CPU copy of the tensor's bytes (views, CUDA included)
      for (const e of entries) zip.add(`archive/data/${e.key}`, new Uint8Array(native.toBuffer(e.tensor._h) as ArrayBuffer));
      zip.add('archive/version', Buffer.from('3\n'));
      zip.finish();
    } finally {
      closeSync(fd);
    }
  }, what);
}
