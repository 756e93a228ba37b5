/**
 * Python pickles as torch.save uses them (lib/torch/io/torch_zip.ts has the archive around them):
 * a restricted reader and a minimal writer.
 *
 * Why not libtorch's own unpickler (torch::jit::Unpickler / pickle_load)? In libtorch 1.13 it
 * rejects what torch.save actually writes for a state_dict: the OrderedDict's `_metadata`
 * attribute (BUILD), `torch._utils._rebuild_parameter` and list APPENDs; and it trusts a storage's
 * element count from the pickle over the size of the record holding its bytes. So the pickle is
 * interpreted here, in memory-safe TypeScript, by a small stack machine that knows only the
 * opcodes of protocols 2-5 and never calls anything: a global is a name, reduced to a value only
 * for the few torch globals a tensor needs (`_rebuild_tensor_v2`, storage types, OrderedDict...);
 * every other object becomes an inert placeholder.
 */
import { type DType } from '../dtype.js';
import { checkpointError as formatError } from './zip.js';

// ---- reading --------------------------------------------------------------------------------


/** A Python global (module.name), never resolved to code. */
export class Global {
  constructor(readonly module: string, readonly name: string) {}
  get full(): string { return `${this.module}.${this.name}`; }
}
/** Any object this reader does not model (argparse.Namespace, numpy scalars, ...): inert. */
export class Opaque {
  constructor(readonly what: string) {}
}
/** dict / OrderedDict. Keys compare by value for str/int/bool/None, by identity otherwise. */
export class PDict {
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

export const STORAGE_DTYPES: Record<string, DType> = {
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


// ---- writing --------------------------------------------------------------------------------

/** The pickle opcodes the writer uses (protocol 2). */
export const OP = { PROTO: 0x80, GLOBAL: 0x63, EMPTY_TUPLE: 0x29, REDUCE: 0x52, MARK: 0x28, BINUNICODE: 0x58, TUPLE: 0x74, BINPERSID: 0x51, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d, LONG1: 0x8a, NEWFALSE: 0x89, SETITEMS: 0x75, STOP: 0x2e } as const;

/** A pickle built opcode by opcode: just what torch.save's state dicts need (torch_zip.ts). */
export class PickleWriter {
  private parts: Buffer[] = [];
  op(...bytes: number[]): this {
    this.parts.push(Buffer.from(bytes));
    return this;
  }
  global(module: string, name: string): this {
    this.parts.push(Buffer.from([OP.GLOBAL]), Buffer.from(`${module}\n${name}\n`, 'utf8'));
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    this.parts.push(Buffer.from([OP.BINUNICODE]), len, b);
    return this;
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(OP.BININT1, n);
    if (n >= 0 && n < 65536) return this.op(OP.BININT2, n & 0xff, n >> 8);
    if (n >= -(2 ** 31) && n < 2 ** 31) {
      const b = Buffer.alloc(5);
      b[0] = OP.BININT;
      b.writeInt32LE(n, 1);
      this.parts.push(b);
      return this;
    }
    const b = Buffer.alloc(10);
    b[0] = OP.LONG1;
    b[1] = 8;
    b.writeBigInt64LE(BigInt(n), 2);
    this.parts.push(b);
    return this;
  }
  tuple(items: number[]): this {
    this.op(OP.MARK);
    for (const i of items) this.int(i);
    return this.op(OP.TUPLE);
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}
