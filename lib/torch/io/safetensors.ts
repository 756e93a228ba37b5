/**
 * Safetensors files (read and written natively, memory-mapped, zero-copy): the format's header
 * parser and writer, and `SafetensorsFile` for lazy per-tensor reads. The public `torch.load` /
 * `torch.save` front end is lib/torch/io/index.ts.
 *
 * A safetensors header is parsed here by a strict, schema-directed JSON parser (it never builds
 * anything the format does not have, so a hostile 100 MB header cannot blow up memory) and fully
 * validated before any tensor is made; the native side checks every request again against the real
 * file size. See docs/checkpoints.md.
 */
import { native } from '../native.js';
import { TorchError, argError } from '../errors.js';
import { type DType, type Device, dtypeCode, normalizeDevice } from '../dtype.js';
import { type Tensor, _wrap as wrap } from '../tensor.js';
import { replaceAtomically, replaceAtomicallyAsync } from './atomic.js';
import { LONE_SURROGATE, type StFile, type TensorRecord, defineEntry, tensorEntries } from './record.js';

/** Safetensors dtype names: byte size, torch dtype (when libtorch has one) and the rank of the
 *  reference writer's ordering (its Dtype enum order; tensors are written by descending rank). */
const ST_DTYPES: Readonly<Record<string, { size: number; dtype: DType | null; rank: number }>> = {
  BOOL: { size: 1, dtype: 'bool', rank: 0 },
  U8: { size: 1, dtype: 'uint8', rank: 1 },
  I8: { size: 1, dtype: 'int8', rank: 2 },
  F8_E5M2: { size: 1, dtype: null, rank: 3 },
  F8_E4M3: { size: 1, dtype: null, rank: 4 },
  F8_E8M0: { size: 1, dtype: null, rank: 4.5 },
  I16: { size: 2, dtype: 'int16', rank: 5 },
  U16: { size: 2, dtype: null, rank: 6 },
  F16: { size: 2, dtype: 'float16', rank: 7 },
  BF16: { size: 2, dtype: 'bfloat16', rank: 8 },
  I32: { size: 4, dtype: 'int32', rank: 9 },
  U32: { size: 4, dtype: null, rank: 10 },
  F32: { size: 4, dtype: 'float32', rank: 11 },
  C64: { size: 8, dtype: null, rank: 11.5 },
  F64: { size: 8, dtype: 'float64', rank: 12 },
  I64: { size: 8, dtype: 'int64', rank: 13 },
  U64: { size: 8, dtype: null, rank: 14 },
};
const TORCH_TO_ST: Readonly<Record<DType, string>> = {
  bool: 'BOOL', uint8: 'U8', int8: 'I8', int16: 'I16', float16: 'F16', bfloat16: 'BF16', int32: 'I32',
  float32: 'F32', float64: 'F64', int64: 'I64',
};

const MAX_HEADER = 100_000_000; // the reference implementation's bound
const MAX_DIMS = 64; // no real tensor has more; bounds the work a hostile header can ask for

function formatError(path: string, msg: string): TorchError {
  return new TorchError(`'${path}': invalid safetensors file: ${msg}`, 'E_FORMAT');
}

// ---- header parsing -------------------------------------------------------------------------

/** One tensor of a safetensors file, as its header describes it. */
export interface SafetensorsTensorInfo {
  /** Safetensors dtype name ('F32', 'BF16', ...). */
  dtype: string;
  /** The torch dtype, or null for a valid safetensors dtype libtorch cannot hold (U16, F8_*...). */
  torchDtype: DType | null;
  shape: number[];
  /** [begin, end) byte offsets inside the data section (after the header). */
  dataOffsets: [number, number];
}

interface ParsedHeader {
  metadata: Record<string, string> | null;
  /** In data order (by offset). */
  tensors: Map<string, SafetensorsTensorInfo>;
}

/** Strict JSON for exactly the safetensors header schema; everything else is an E_FORMAT error. */
class HeaderParser {
  private i = 0;
  constructor(private readonly s: string, private readonly path: string) {}

  private fail(msg: string): never {
    throw formatError(this.path, `${msg} (header character ${this.i})`);
  }
  private ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.i++;
      else break;
    }
  }
  private peek(): string {
    return this.s[this.i] ?? '';
  }
  private expect(ch: string, what: string): void {
    this.ws();
    if (this.s[this.i] !== ch) this.fail(`expected ${what}`);
    this.i++;
  }

  private str(): string {
    const s = this.s;
    if (s[this.i] !== '"') this.fail('expected a string');
    let i = ++this.i;
    let out = '';
    let start = i;
    for (;;) {
      if (i >= s.length) { this.i = i; this.fail('unterminated string'); }
      const c = s.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20) { this.i = i; this.fail('unescaped control character in a string'); }
      if (c !== 0x5c) { i++; continue; }
      out += s.slice(start, i);
      const e = s[i + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && simple[e] !== undefined) {
        out += simple[e];
        i += 2;
      } else if (e === 'u') {
        const hex = s.slice(i + 2, i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) { this.i = i; this.fail('bad \\u escape'); }
        out += String.fromCharCode(parseInt(hex, 16));
        i += 6;
      } else {
        this.i = i;
        this.fail('bad escape in a string');
      }
      start = i;
    }
    out += s.slice(start, i);
    this.i = i + 1;
    // Escapes can spell a lone surrogate, which is not a Unicode string (the reference rejects it).
    if (LONE_SURROGATE.test(out)) this.fail('string holds a lone surrogate escape');
    return out;
  }

  /** A non-negative JSON integer that fits a double exactly. */
  private uint(what: string): number {
    this.ws();
    const s = this.s;
    const start = this.i;
    if (s[start] === '-') this.fail(`${what} is negative`);
    let i = start;
    while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) i++;
    if (i === start) this.fail(`${what} must be a non-negative integer`);
    if (s[i] === '.' || s[i] === 'e' || s[i] === 'E') this.fail(`${what} must be an integer`);
    if (i - start > 1 && s[start] === '0') this.fail('leading zero in a number');
    if (i - start > 16) this.fail(`${what} is too large`);
    const v = Number(s.slice(start, i));
    if (!Number.isSafeInteger(v)) this.fail(`${what} is too large`);
    this.i = i;
    return v;
  }

  /** Skips one JSON value of a field this reader does not know (future format additions). */
  private skip(depth: number): void {
    if (depth > 32) this.fail('nesting too deep');
    this.ws();
    const c = this.peek();
    if (c === '"') { this.str(); return; }
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      this.i++;
      this.ws();
      if (this.peek() === close) { this.i++; return; }
      for (;;) {
        if (c === '{') { this.ws(); this.str(); this.expect(':', "':'"); }
        this.skip(depth + 1);
        this.ws();
        if (this.peek() === ',') { this.i++; continue; }
        this.expect(close, `',' or '${close}'`);
        return;
      }
    }
    const lit = /^(?:true|false|null|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)/.exec(this.s.slice(this.i, this.i + 400));
    if (!lit) this.fail('invalid JSON value');
    this.i += lit[0].length;
  }

  private uintArray(what: string, max: number): number[] {
    this.expect('[', `an array for ${what}`);
    const out: number[] = [];
    this.ws();
    if (this.peek() === ']') { this.i++; return out; }
    for (;;) {
      if (out.length >= max) this.fail(`${what} has more than ${max} entries`);
      out.push(this.uint(`${what} entry`));
      this.ws();
      if (this.peek() === ',') { this.i++; continue; }
      this.expect(']', `',' or ']' in ${what}`);
      return out;
    }
  }

  private tensorInfo(name: string): { dtype: string; shape: number[]; begin: number; end: number } {
    this.expect('{', `an object for tensor '${name}'`);
    let dtype: string | undefined, shape: number[] | undefined, offsets: number[] | undefined;
    this.ws();
    if (this.peek() !== '}') {
      for (;;) {
        this.ws();
        const field = this.str();
        this.expect(':', "':'");
        this.ws();
        if (field === 'dtype') {
          if (dtype !== undefined) this.fail(`duplicate field 'dtype' in tensor '${name}'`);
          dtype = this.str();
        } else if (field === 'shape') {
          if (shape !== undefined) this.fail(`duplicate field 'shape' in tensor '${name}'`);
          shape = this.uintArray(`shape of '${name}'`, MAX_DIMS);
        } else if (field === 'data_offsets') {
          if (offsets !== undefined) this.fail(`duplicate field 'data_offsets' in tensor '${name}'`);
          offsets = this.uintArray(`data_offsets of '${name}'`, 2);
          if (offsets.length !== 2) this.fail(`data_offsets of '${name}' must be [begin, end]`);
        } else {
          this.skip(0);
        }
        this.ws();
        if (this.peek() === ',') { this.i++; continue; }
        break;
      }
    }
    this.expect('}', `',' or '}' in tensor '${name}'`);
    if (dtype === undefined) this.fail(`tensor '${name}' has no dtype`);
    if (shape === undefined) this.fail(`tensor '${name}' has no shape`);
    if (offsets === undefined) this.fail(`tensor '${name}' has no data_offsets`);
    return { dtype, shape, begin: offsets[0]!, end: offsets[1]! };
  }

  private metadata(): Record<string, string> | null {
    this.ws();
    if (this.s.startsWith('null', this.i)) { this.i += 4; return null; }
    this.expect('{', "an object (str -> str) for '__metadata__'");
    const out: Record<string, string> = {};
    const seen = new Set<string>();
    this.ws();
    if (this.peek() === '}') { this.i++; return out; }
    for (;;) {
      this.ws();
      const k = this.str();
      if (seen.has(k)) this.fail(`duplicate key '${k}' in __metadata__`);
      seen.add(k);
      this.expect(':', "':'");
      this.ws();
      if (this.peek() !== '"') this.fail(`__metadata__ value of '${k}' must be a string`);
      defineEntry(out, k, this.str());
      this.ws();
      if (this.peek() === ',') { this.i++; continue; }
      this.expect('}', "',' or '}' in __metadata__");
      return out;
    }
  }

  parse(): { metadata: Record<string, string> | null; entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] } {
    // Like the reference reader: the JSON must start right away with '{'.
    if (this.s[0] !== '{') this.fail("the header must start with '{'");
    this.i = 1;
    let metadata: Record<string, string> | null = null;
    const entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] = [];
    const seen = new Set<string>();
    this.ws();
    if (this.peek() === '}') {
      this.i++;
    } else {
      for (;;) {
        this.ws();
        const key = this.str();
        if (seen.has(key)) this.fail(`duplicate key '${key}'`);
        seen.add(key);
        this.expect(':', "':'");
        if (key === '__metadata__') metadata = this.metadata();
        else entries.push({ name: key, ...this.tensorInfo(key) });
        this.ws();
        if (this.peek() === ',') { this.i++; continue; }
        this.expect('}', "',' or '}'");
        break;
      }
    }
    this.ws(); // the padding
    if (this.i !== this.s.length) this.fail('unexpected characters after the header object');
    return { metadata, entries };
  }
}

function parseHeader(path: string, headerBytes: Uint8Array, fileSize: number): ParsedHeader {
  let text: string;
  try {
    // fatal: invalid UTF-8 is an error; ignoreBOM: a BOM is kept, so it fails the '{' check.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw formatError(path, 'the header is not valid UTF-8');
  }
  const { metadata, entries } = new HeaderParser(text, path).parse();
  const dataLen = fileSize - 8 - headerBytes.length;
  for (const e of entries) {
    const dt = ST_DTYPES[e.dtype];
    if (!dt) throw formatError(path, `tensor '${e.name}' has unknown dtype '${e.dtype}'`);
    if (e.begin > e.end) throw formatError(path, `tensor '${e.name}' has data_offsets [${e.begin}, ${e.end}] with begin > end`);
    if (e.end > dataLen) throw formatError(path, `tensor '${e.name}' ends at byte ${e.end} but the data section has ${dataLen} bytes (truncated?)`);
    let numel = 1;
    if (!e.shape.includes(0)) {
      for (const d of e.shape) {
        numel *= d;
        // No tensor with elements can be larger than the data section: stop before overflowing.
        if (numel > dataLen) throw formatError(path, `tensor '${e.name}' has shape [${e.shape.join(', ')}], larger than the file`);
      }
    } else numel = 0;
    if (numel * dt.size !== e.end - e.begin) {
      throw formatError(path, `tensor '${e.name}': ${e.dtype} [${e.shape.join(', ')}] needs ${numel * dt.size} bytes but data_offsets [${e.begin}, ${e.end}] hold ${e.end - e.begin}`);
    }
  }
  // The tensors must tile the data section exactly: no gap, no overlap, nothing left over.
  const sorted = entries.slice().sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const e of sorted) {
    if (e.begin !== pos) {
      throw formatError(path, e.begin < pos ? `tensor '${e.name}' overlaps the previous tensor (starts at ${e.begin}, previous ends at ${pos})` : `gap in the data section before tensor '${e.name}' (bytes ${pos}..${e.begin})`);
    }
    pos = e.end;
  }
  if (pos !== dataLen) throw formatError(path, `the tensors cover ${pos} bytes but the data section has ${dataLen}`);
  const tensors = new Map<string, SafetensorsTensorInfo>();
  for (const e of sorted) {
    tensors.set(e.name, { dtype: e.dtype, torchDtype: ST_DTYPES[e.dtype]!.dtype, shape: e.shape, dataOffsets: [e.begin, e.end] });
  }
  return { metadata, tensors };
}

// ---- reading --------------------------------------------------------------------------------

export interface GetOptions {
  /** Copy into memory owned by the tensor instead of pointing into the file mapping. */
  copy?: boolean;
  /** Move the tensor to this device (default 'cpu'). */
  device?: Device;
}

/**
 * An open safetensors file: the header is parsed and validated; tensor bytes are read only when
 * get() asks for them. Zero-copy tensors stay valid after close().
 */
export class SafetensorsFile implements Disposable {
  readonly path: string;
  /** The `__metadata__` map (str -> str), or null when the file has none. */
  readonly metadata: Record<string, string> | null;
  /** File size in bytes. */
  readonly byteLength: number;
  /** @internal */ _file: StFile | null;
  private readonly tensors: Map<string, SafetensorsTensorInfo>;

  /** @internal use torch.openSafetensors() */
  constructor(path: string) {
    if (typeof path !== 'string') throw argError('type', `openSafetensors: path must be a string, got ${typeof path}`);
    const r = native.stOpen(path);
    try {
      const h = parseHeader(path, r.header, r.size);
      this.metadata = h.metadata;
      this.tensors = h.tensors;
    } catch (e) {
      native.stClose(r.file);
      throw e;
    }
    this.path = path;
    this.byteLength = r.size;
    this._file = r.file;
  }

  /** Tensor names in file order. */
  keys(): string[] {
    return [...this.tensors.keys()];
  }
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  /** dtype, shape and offsets of one tensor, without reading it. */
  info(name: string): SafetensorsTensorInfo {
    const i = this.tensors.get(name);
    if (!i) throw new TorchError(`'${this.path}' has no tensor named '${name}'`, 'E_VALUE');
    return { ...i, shape: i.shape.slice(), dataOffsets: [i.dataOffsets[0], i.dataOffsets[1]] };
  }
  get closed(): boolean {
    return this._file === null;
  }

  /** @internal the [dtype code, shape, begin, end] the native reader takes */
  _request(name: string): [number, number[], number, number] {
    const i = this.info(name);
    if (i.torchDtype === null) {
      throw new TorchError(`'${this.path}': tensor '${name}' has dtype ${i.dtype}, which libtorch cannot hold`, 'E_DTYPE');
    }
    return [dtypeCode(i.torchDtype), i.shape, i.dataOffsets[0], i.dataOffsets[1]];
  }

  /** Reads one tensor: zero-copy from the mapping when aligned (the default), else a copy. */
  get(name: string, o: GetOptions = {}): Tensor {
    if (this._file === null) throw new TorchError(`'${this.path}' is closed`, 'E_IO');
    const [dt, shape, b, e] = this._request(name);
    const device = o.device === undefined ? 'cpu' : normalizeDevice(o.device);
    const t = wrap(native.stTensor(this._file, dt, shape, b, e, o.copy ?? false));
    return toDevice(t, device);
  }

  /** Releases the file; tensors already read stay valid (they keep the mapping alive). */
  close(): void {
    if (this._file === null) return;
    native.stClose(this._file);
    this._file = null;
  }
  [Symbol.dispose](): void {
    this.close();
  }
}

export function toDevice(t: Tensor, device: Device): Tensor {
  if (device === 'cpu') return t;
  try {
    return t.to(device);
  } finally {
    t.dispose();
  }
}

/** Opens a safetensors file for lazy, per-tensor reads (`using f = torch.openSafetensors(p)`). */
export function openSafetensors(path: string): SafetensorsFile {
  return new SafetensorsFile(path);
}

// ---- writing --------------------------------------------------------------------------------

function utf8Compare(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

interface Prepared {
  header: Buffer;
  handles: number[];
  nbytes: number[];
}

/** The header exactly as the reference writer makes it: tensors by descending dtype rank then
 *  name (byte order), compact JSON, `__metadata__` first (its keys sorted: the reference keeps a
 *  hash map, whose order is unspecified), padded with spaces to a multiple of 8. */
function prepare(rec: TensorRecord | Map<string, Tensor>, metadata: Record<string, string> | undefined, what: string): Prepared {
  const items = tensorEntries(rec, what).map(({ name, tensor: t }) => {
    if (name === '__metadata__') throw argError('range', `${what}: '__metadata__' is reserved and cannot name a tensor`, 'E_VALUE');
    let dtype: DType;
    try {
      dtype = t.dtype;
    } catch {
      throw new TorchError(`${what}: tensor '${name}' has a dtype safetensors cannot store here (supported: ${Object.keys(TORCH_TO_ST).join(', ')})`, 'E_DTYPE');
    }
    const st = TORCH_TO_ST[dtype];
    const shape = t.shape;
    const nbytes = shape.reduce((a, b) => a * b, 1) * ST_DTYPES[st]!.size;
    return { name, key: Buffer.from(name, 'utf8'), t, st, rank: ST_DTYPES[st]!.rank, shape, nbytes };
  });
  items.sort((a, b) => b.rank - a.rank || utf8Compare(a.key, b.key));
  const parts: string[] = [];
  if (metadata !== undefined) {
    if (metadata === null || typeof metadata !== 'object') throw argError('type', `${what}: metadata must be an object of strings`);
    const keys = Object.keys(metadata).map((k) => ({ k, b: Buffer.from(k, 'utf8') })).sort((x, y) => utf8Compare(x.b, y.b));
    const kv = keys.map(({ k }) => {
      const v = metadata[k];
      if (typeof v !== 'string') throw argError('type', `${what}: metadata value of '${k}' must be a string, got ${typeof v}`);
      if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) throw argError('range', `${what}: metadata '${k}' is not valid Unicode`, 'E_VALUE');
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const it of items) {
    parts.push(`${JSON.stringify(it.name)}:{"dtype":"${it.st}","shape":[${it.shape.join(',')}],"data_offsets":[${offset},${offset + it.nbytes}]}`);
    offset += it.nbytes;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = json.length + ((8 - (json.length % 8)) % 8);
  if (padded > MAX_HEADER) throw argError('range', `${what}: the header would be ${padded} bytes, over the 100 MB safetensors limit`, 'E_VALUE');
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, handles: items.map((i) => i.t._h), nbytes: items.map((i) => i.nbytes) };
}

/** @internal test hook: make the next native write fail after this many bytes */
export const _testing = { failAfterBytes: undefined as number | undefined };

function takeFault(): number | undefined {
  const f = _testing.failAfterBytes;
  _testing.failAfterBytes = undefined;
  return f;
}

/**
 * Saves tensors as a safetensors file, replacing `path` atomically (lib/torch/io/atomic.ts).
 * Non-contiguous tensors are written contiguously and CUDA tensors copied to the CPU. `metadata`
 * is stored as `__metadata__`.
 */
export function saveSafetensors(rec: TensorRecord | Map<string, Tensor>, path: string, metadata?: Record<string, string>, what = 'save'): void {
  const p = prepare(rec, metadata, what);
  const fault = takeFault();
  replaceAtomically(path, (tmp) => native.stWrite(tmp, p.header, p.handles, p.nbytes, false, fault), what);
}

/** saveSafetensors() with the copy and the write on a libuv worker. Do not modify the tensors until it resolves. */
export async function saveSafetensorsAsync(rec: TensorRecord | Map<string, Tensor>, path: string, metadata?: Record<string, string>, what = 'saveAsync'): Promise<void> {
  const p = prepare(rec, metadata, what);
  const fault = takeFault();
  await replaceAtomicallyAsync(path, (tmp) => native.stWrite(tmp, p.header, p.handles, p.nbytes, true, fault) as Promise<void>, what);
}

/** The exact bytes of the header save() would write (8-byte length + JSON + padding). */
export function safetensorsHeader(rec: TensorRecord | Map<string, Tensor>, metadata?: Record<string, string>): Buffer {
  return prepare(rec, metadata, 'safetensorsHeader').header;
}
