/**
 * PyTorch `torch.save` checkpoints (zip format, torch >= 1.6: `.pt`, `.pth`, `.bin`) whose content
 * is a dict of tensors, read without Python.
 *
 * Why not libtorch's own unpickler (torch::jit::Unpickler / pickle_load)? In libtorch 1.13 it
 * rejects what torch.save actually writes for a state_dict: the OrderedDict's `_metadata`
 * attribute (BUILD), `torch._utils._rebuild_parameter` and list APPENDs; and it trusts a storage's
 * element count from the pickle over the size of the record holding its bytes. So the pickle is
 * interpreted here, in memory-safe TypeScript, by a small stack machine that knows only the
 * opcodes of protocols 2-5 and never calls anything: a global is a name, reduced to a value only
 * for the few torch globals a tensor needs (`_rebuild_tensor_v2`, storage types, OrderedDict...);
 * every other object becomes an inert placeholder. Tensor bytes are then mapped (or copied) by the
 * native reader straight from the zip's stored records, bounds-checked against the file.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { TorchError } from '../errors.js';
import { type DType } from '../dtype.js';

function formatError(path: string, msg: string): TorchError {
  return new TorchError(`'${path}' is not a readable PyTorch checkpoint: ${msg}`, 'E_FORMAT');
}

// ---- zip ------------------------------------------------------------------------------------

interface ZipRecord {
  /** absolute offset of the record's bytes in the file */
  offset: number;
  size: number;
}

function readAt(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got === len ? b : b.subarray(0, got);
}

function u64(b: Buffer, at: number, path: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw formatError(path, 'zip64 value out of range');
  return Number(v);
}

/**
 * The records of a zip archive, from its central directory (zip64 aware). Every record must be
 * stored uncompressed (torch.save never compresses) and lie inside the file, so no record can
 * make anyone allocate or read more than the file holds.
 */
function readZip(path: string, fd: number, size: number, compressed: string[]): Map<string, ZipRecord> {
  const tailLen = Math.min(size, 65535 + 22);
  const tail = readAt(fd, size - tailLen, tailLen);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw formatError(path, 'no zip end-of-directory record (not a zip file, or truncated)');
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const eocdAbs = size - tailLen + eocd;
    if (eocdAbs < 20) throw formatError(path, 'bad zip64 locator');
    const loc = readAt(fd, eocdAbs - 20, 20);
    if (loc.length !== 20 || loc.readUInt32LE(0) !== 0x07064b50) throw formatError(path, 'bad zip64 locator');
    const at = u64(loc, 8, path);
    const rec = at <= size - 56 ? readAt(fd, at, 56) : Buffer.alloc(0);
    if (rec.length !== 56 || rec.readUInt32LE(0) !== 0x06064b50) throw formatError(path, 'bad zip64 end-of-directory record');
    count = u64(rec, 32, path);
    cdSize = u64(rec, 40, path);
    cdOffset = u64(rec, 48, path);
  }
  if (cdOffset > size || cdSize > size - cdOffset || count > cdSize / 46 + 1) throw formatError(path, 'zip directory out of bounds');
  const cd = readAt(fd, cdOffset, cdSize);
  if (cd.length !== cdSize) throw formatError(path, 'truncated zip directory');
  const out = new Map<string, ZipRecord>();
  let pos = 0;
  let total = 0;
  for (let k = 0; k < count; k++) {
    if (cdSize - pos < 46 || cd.readUInt32LE(pos) !== 0x02014b50) throw formatError(path, 'corrupt zip directory entry');
    const method = cd.readUInt16LE(pos + 10);
    let comp = cd.readUInt32LE(pos + 20);
    let uncomp = cd.readUInt32LE(pos + 24);
    const nameLen = cd.readUInt16LE(pos + 28), extraLen = cd.readUInt16LE(pos + 30), commentLen = cd.readUInt16LE(pos + 32);
    let local = cd.readUInt32LE(pos + 42);
    if (cdSize - pos - 46 < nameLen + extraLen + commentLen) throw formatError(path, 'corrupt zip directory entry');
    const name = cd.toString('utf8', pos + 46, pos + 46 + nameLen);
    // zip64 extra field: the 64-bit values present are those whose 32-bit field is all ones.
    const x = pos + 46 + nameLen;
    for (let q = 0; q + 4 <= extraLen;) {
      const id = cd.readUInt16LE(x + q), sz = cd.readUInt16LE(x + q + 2);
      if (q + 4 + sz > extraLen) throw formatError(path, 'corrupt zip extra field');
      if (id === 0x0001) {
        let r = x + q + 4;
        const end = r + sz;
        const take = (v: number): number => {
          if (v !== 0xffffffff) return v;
          if (r + 8 > end) throw formatError(path, 'corrupt zip64 extra field');
          const w = u64(cd, r, path);
          r += 8;
          return w;
        };
        uncomp = take(uncomp);
        comp = take(comp);
        local = take(local);
      }
      q += 4 + sz;
    }
    // A compressed entry is an error, reported once the archive is known not to be a TorchScript
    // one (torch.jit.save compresses its code records; that refusal says more).
    if (method !== 0) compressed.push(name);
    else if (comp !== uncomp) throw formatError(path, `zip entry '${name}' has inconsistent sizes`);
    if (method !== 0) uncomp = comp;
    total += uncomp;
    if (total > size) throw formatError(path, 'zip entries claim more bytes than the file holds');
    // The bytes start after the local header, whose name and extra lengths may differ from the
    // central directory's (miniz pads the extra field to align records to 64 bytes).
    if (local > size - 30) throw formatError(path, `zip entry '${name}' lies outside the file`);
    const lh = readAt(fd, local, 30);
    if (lh.length !== 30 || lh.readUInt32LE(0) !== 0x04034b50) throw formatError(path, `zip entry '${name}' has no local header`);
    const offset = local + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
    if (offset > size || uncomp > size - offset) throw formatError(path, `zip entry '${name}' lies outside the file`);
    if (out.has(name)) throw formatError(path, `duplicate zip entry '${name}'`);
    out.set(name, { offset, size: uncomp });
    pos += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

// ---- pickle ---------------------------------------------------------------------------------

/** A Python global (module.name), never resolved to code. */
class Global {
  constructor(readonly module: string, readonly name: string) {}
  get full(): string { return `${this.module}.${this.name}`; }
}
/** Any object this reader does not model (argparse.Namespace, numpy scalars, ...): inert. */
class Opaque {
  constructor(readonly what: string) {}
}
/** dict / OrderedDict. Keys compare by value for str/int/bool/None, by identity otherwise. */
class PDict {
  readonly map = new Map<unknown, unknown>();
}
const MARK: unique symbol = Symbol('mark');

/** ('storage', torch.FloatStorage, key, location, numel) */
export class StorageRef {
  constructor(readonly key: string, readonly typeName: string, readonly dtype: DType | null, readonly numel: number) {}
}
export class TensorSpec {
  constructor(readonly storage: StorageRef, readonly offset: number, readonly size: number[], readonly stride: number[]) {}
}

const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'float32', DoubleStorage: 'float64', HalfStorage: 'float16', BFloat16Storage: 'bfloat16',
  LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16', CharStorage: 'int8', ByteStorage: 'uint8',
  BoolStorage: 'bool', UntypedStorage: 'uint8',
};

function intList(v: unknown): number[] | null {
  if (!Array.isArray(v) || v.length > 64) return null;
  for (const x of v) if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) return null;
  return v as number[];
}

/** What REDUCE / NEWOBJ make of `f(*args)`: only torch's tensor-building globals mean anything. */
function reduce(f: unknown, args: unknown): unknown {
  if (!(f instanceof Global)) return new Opaque('call of a non-global');
  const a = Array.isArray(args) ? args : [];
  switch (f.full) {
    case 'collections.OrderedDict': {
      const d = new PDict();
      // OrderedDict([(k, v), ...]) (protocol 2 writes OrderedDict() then SETITEMS, but be general)
      if (Array.isArray(a[0])) for (const kv of a[0] as unknown[]) if (Array.isArray(kv) && kv.length === 2) d.map.set(kv[0], kv[1]);
      return d;
    }
    case 'torch._utils._rebuild_tensor_v2':
    case 'torch._utils._rebuild_tensor': {
      const [storage, offset, size, stride] = a;
      const sz = intList(size), st = intList(stride);
      if (!(storage instanceof StorageRef) || typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 || !sz || !st || sz.length !== st.length) {
        return new Opaque('malformed tensor');
      }
      return new TensorSpec(storage, offset, sz, st);
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      return a[0];
    case '_codecs.encode':
      // protocol 2 spells a bytes object as _codecs.encode(str, 'latin1')
      return typeof a[0] === 'string' ? Buffer.from(a[0], 'latin1') : new Opaque('bytes');
    default:
      return new Opaque(f.full);
  }
}

/**
 * Interprets a pickle (protocols 2-5). Iterative, every read bounds-checked: a hostile pickle can
 * only produce an E_FORMAT error, and its memory use is bounded by its own length.
 */
export function unpickle(buf: Uint8Array, path: string, persistentLoad: (pid: unknown) => unknown): unknown {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const td = new TextDecoder('utf-8');
  let pos = 0;
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const fail = (msg: string): never => { throw formatError(path, `${msg} (pickle byte ${pos})`); };
  const need = (n: number): void => { if (n > buf.length - pos) fail('truncated pickle'); };
  const u8 = (): number => { need(1); return buf[pos++]!; };
  const u16 = (): number => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const u32 = (): number => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const u64n = (): number => { need(8); const v = dv.getBigUint64(pos, true); pos += 8; if (v > BigInt(buf.length)) fail('length out of range'); return Number(v); };
  const bytes = (n: number): Uint8Array => { need(n); const b = buf.subarray(pos, pos + n); pos += n; return b; };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1]!)) fail('pickle stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1]!)) fail('pickle stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail('pickle MARK missing');
    return stack.splice(m!);
  };
  const line = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 1024) fail('bad GLOBAL');
    const s = td.decode(buf.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const long = (b: Uint8Array): number | bigint => {
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const setItem = (d: unknown, k: unknown, v: unknown): void => {
    if (d instanceof PDict) d.map.set(k, v);
    else if (!(d instanceof Opaque)) fail('SETITEM on a non-dict');
  };
  const append = (l: unknown, vs: unknown[]): void => {
    if (Array.isArray(l)) l.push(...vs);
    else if (!(l instanceof Opaque)) fail('APPEND on a non-list');
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: if (u8() > 5) fail('unsupported pickle protocol'); break; // PROTO
      case 0x95: u64n(); break; // FRAME (a hint; the data follows inline)
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length) fail('malformed pickle end');
        return stack[0];
      }
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x7d: stack.push(new PDict()); break; // EMPTY_DICT
      case 0x8f: stack.push([]); break; // EMPTY_SET
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x4a: { need(4); stack.push(dv.getInt32(pos, true)); pos += 4; break; } // BININT
      case 0x8a: stack.push(long(bytes(u8()))); break; // LONG1
      case 0x8b: stack.push(long(bytes(u32()))); break; // LONG4
      case 0x47: { need(8); stack.push(dv.getFloat64(pos, false)); pos += 8; break; } // BINFLOAT
      case 0x58: stack.push(td.decode(bytes(u32()))); break; // BINUNICODE
      case 0x8c: stack.push(td.decode(bytes(u8()))); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(td.decode(bytes(u64n()))); break; // BINUNICODE8
      case 0x54: stack.push(Buffer.from(bytes(u32())).toString('latin1')); break; // BINSTRING
      case 0x55: stack.push(Buffer.from(bytes(u8())).toString('latin1')); break; // SHORT_BINSTRING
      case 0x42: stack.push(bytes(u32()).slice()); break; // BINBYTES
      case 0x43: stack.push(bytes(u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: stack.push(bytes(u64n()).slice()); break; // BINBYTES8
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const k = op === 0x68 ? u8() : u32();
        if (!memo.has(k)) fail(`memo key ${k} missing`);
        stack.push(memo.get(k));
        break;
      }
      case 0x63: { const m = line(); stack.push(new Global(m, line())); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(), mod = pop();
        if (typeof name !== 'string' || typeof mod !== 'string') fail('bad STACK_GLOBAL');
        stack.push(new Global(mod as string, name as string));
        break;
      }
      case 0x74: stack.push(popMark()); break; // TUPLE
      case 0x85: stack.push([pop()]); break; // TUPLE1
      case 0x86: { const b = pop(), a = pop(); stack.push([a, b]); break; } // TUPLE2
      case 0x87: { const c = pop(), b = pop(), a = pop(); stack.push([a, b, c]); break; } // TUPLE3
      case 0x52: case 0x81: { const args = pop(), f = pop(); stack.push(reduce(f, args)); break; } // REDUCE, NEWOBJ
      case 0x51: stack.push(persistentLoad(pop())); break; // BINPERSID
      case 0x73: { const v = pop(), k = pop(); setItem(top(), k, v); break; } // SETITEM
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) fail('odd SETITEMS');
        const d = top();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        break;
      }
      case 0x61: { const v = pop(); append(top(), [v]); break; } // APPEND
      case 0x65: case 0x90: { const items = popMark(); append(top(), items); break; } // APPENDS, ADDITEMS
      case 0x91: stack.push(popMark()); break; // FROZENSET
      case 0x62: pop(); top(); break; // BUILD: object state (e.g. a state_dict's _metadata); not needed
      case 0x30: { // POP
        if (marks.length && stack.length === marks[marks.length - 1]) marks.pop();
        else pop();
        break;
      }
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16)}`);
    }
  }
}

// ---- checkpoint -----------------------------------------------------------------------------

export interface CheckpointPlan {
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

function itemSize(d: DType): number {
  return { float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 }[d];
}

/** An fd for reading `path`, or a TorchError E_IO that names the file (the caller closes the fd). */
export function openForReading(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw new TorchError(`cannot open '${path}': ${(e as Error).message}`, 'E_IO');
  }
}

/**
 * Reads a checkpoint's structure: the zip directory and the pickle. Returns which tensors it
 * holds and where their bytes are; reads no tensor data.
 */
export function planCheckpoint(path: string, key: string | undefined): CheckpointPlan {
  const fd = openForReading(path);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new TorchError(`'${path}' is not a regular file`, 'E_IO');
    const size = st.size;
    const head = readAt(fd, 0, Math.min(size, 4));
    if (head.length >= 3 && head[0] === 0x80 && head[2] === 0x8a) {
      throw formatError(path, 'it uses the legacy (pre-1.6) torch.save format; re-save it with torch.save(obj, path) in Python >= 1.6');
    }
    if (head.length < 4 || head.readUInt32LE(0) !== 0x04034b50) throw formatError(path, 'not a zip archive');
    const compressed: string[] = [];
    const zip = readZip(path, fd, size, compressed);
    // The archive's top folder is named after the file it was first saved as: find it by data.pkl.
    const pkl = [...zip.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkl.length !== 1) throw formatError(path, pkl.length ? 'several data.pkl records' : 'no data.pkl record (a TorchScript archive? use torch.jit.load)');
    const prefix = pkl[0]!.slice(0, -'data.pkl'.length);
    if (zip.has(`${prefix}constants.pkl`) || [...zip.keys()].some((n) => n.startsWith(`${prefix}code/`))) {
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
      const nbytes = s.numel * itemSize(s.dtype!);
      if (nbytes > r.size) throw formatError(path, `storage '${s.key}' claims ${nbytes} bytes but its record holds ${r.size}`);
      used.set(s.key, { ref: s, offset: r.offset, nbytes });
    }
    return { names, specs, storages: [...used.values()] };
  } finally {
    closeSync(fd);
  }
}
