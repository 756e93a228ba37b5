/**
 * NumPy `.npz` files of one uint8 array, as `np.savez(path, arr_0=samples)` writes them for the ADM
 * evaluator (github openai/guided-diffusion evaluations/evaluator.py reads `np.load(f)['arr_0']`):
 * a stored (uncompressed) zip archive holding `arr_0.npy`, an NPY version 1.0 file (magic, a header
 * dict `{'descr': '|u1', 'fortran_order': False, 'shape': (...), }` padded to 64 bytes, then the
 * bytes in C order).
 *
 * Sample sets reach tens of GB (50,000 × 256 × 256 × 3 = 9.8 GB), beyond the 4 GiB of plain zip, so
 * the writer always writes zip64 records (Python's zipfile and NumPy read them whatever the size),
 * and streams: the array's bytes come chunk by chunk, the CRC-32 is accumulated on the way and
 * written into the local header at the end. The file appears atomically (lib/torch/io/atomic.ts).
 * The reader takes stored archives of NPY 1.0/2.0/3.0 arrays of uint8 in C order (what the writer
 * and np.savez of image samples produce); anything else is a clear E_FORMAT.
 */
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { TorchError, argError } from '../errors.js';
import { replaceAtomically, writeAllSync } from './atomic.js';
import { openForReading, readAt, readZip } from './zip.js';

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
const U32_MAX = 0xffffffff;

/** The NPY 1.0 header of a uint8 C-order array, padded as NumPy pads it (total a multiple of 64). */
export function npyHeader(shape: readonly number[]): Buffer {
  const tuple = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '|u1', 'fortran_order': False, 'shape': ${tuple}, }`;
  const pre = MAGIC.length + 2 + 2;
  const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  dict = dict.padEnd(total - pre - 1, ' ') + '\n';
  const h = Buffer.alloc(pre);
  MAGIC.copy(h, 0);
  h[6] = 1;
  h[7] = 0;
  h.writeUInt16LE(dict.length, 8);
  return Buffer.concat([h, Buffer.from(dict, 'latin1')]);
}

function checkShape(shape: readonly number[], who: string): number {
  if (!Array.isArray(shape) || shape.length === 0 || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw argError('range', `${who}: shape must be a non-empty list of non-negative integers, got [${String(shape)}]`, 'E_SHAPE');
  }
  const n = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(n)) throw argError('range', `${who}: shape [${shape.join(', ')}] holds too many elements`, 'E_SHAPE');
  return n;
}

/**
 * Writes `path` as an .npz holding one uint8 array `name` (default 'arr_0') of `shape`, whose bytes
 * (C order) `produce` hands to `put` in any number of pieces; exactly prod(shape) bytes must come
 * (E_SHAPE otherwise, and no file is written). Returns the number of array bytes.
 */
export function writeNpzUint8(path: string, shape: readonly number[], produce: (put: (bytes: Uint8Array) => void) => void, name = 'arr_0'): number {
  if (typeof path !== 'string' || path === '') throw argError('type', 'writeNpzUint8: path must be a non-empty string');
  if (typeof produce !== 'function') throw argError('type', 'writeNpzUint8: produce must be a function');
  if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw argError('range', `writeNpzUint8: name must be an identifier, got '${String(name)}'`);
  const count = checkShape(shape, 'writeNpzUint8');
  const header = npyHeader(shape);
  const member = Buffer.from(`${name}.npy`, 'utf8');
  const size = header.length + count;
  replaceAtomically(path, (tmp) => {
    const fd = openSync(tmp, 'wx');
    try {
      // local header: version 4.5 (zip64), sizes in the zip64 extra field, CRC patched in at the end
      const local = Buffer.alloc(30 + member.length + 20);
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(45, 4);
      local.writeUInt32LE(U32_MAX, 18);
      local.writeUInt32LE(U32_MAX, 22);
      local.writeUInt16LE(member.length, 26);
      local.writeUInt16LE(20, 28);
      member.copy(local, 30);
      local.writeUInt16LE(0x0001, 30 + member.length);
      local.writeUInt16LE(16, 32 + member.length);
      local.writeBigUInt64LE(BigInt(size), 34 + member.length);
      local.writeBigUInt64LE(BigInt(size), 42 + member.length);
      writeAllSync(fd, local);
      writeAllSync(fd, header);
      let crc = crc32(header);
      let got = 0;
      produce((bytes) => {
        if (!(bytes instanceof Uint8Array)) throw argError('type', 'writeNpzUint8: put takes a Uint8Array');
        if (got + bytes.length > count) throw new TorchError(`writeNpzUint8 '${path}': more than the ${count} bytes of shape [${shape.join(', ')}]`, 'E_SHAPE');
        writeAllSync(fd, bytes);
        crc = crc32(bytes, crc);
        got += bytes.length;
      });
      if (got !== count) throw new TorchError(`writeNpzUint8 '${path}': ${got} of the ${count} bytes of shape [${shape.join(', ')}] were given`, 'E_SHAPE');
      const crcBuf = Buffer.alloc(4);
      crcBuf.writeUInt32LE(crc >>> 0, 0);
      writeSync(fd, crcBuf, 0, 4, 14);

      const cdOffset = local.length + size;
      const cd = Buffer.alloc(46 + member.length + 28);
      cd.writeUInt32LE(0x02014b50, 0);
      cd.writeUInt16LE(45, 4); // made by
      cd.writeUInt16LE(45, 6); // needed
      cd.writeUInt32LE(crc >>> 0, 16);
      cd.writeUInt32LE(U32_MAX, 20);
      cd.writeUInt32LE(U32_MAX, 24);
      cd.writeUInt16LE(member.length, 28);
      cd.writeUInt16LE(28, 30);
      cd.writeUInt32LE(U32_MAX, 42);
      member.copy(cd, 46);
      const x = 46 + member.length;
      cd.writeUInt16LE(0x0001, x);
      cd.writeUInt16LE(24, x + 2);
      cd.writeBigUInt64LE(BigInt(size), x + 4); // uncompressed
      cd.writeBigUInt64LE(BigInt(size), x + 12); // compressed
      cd.writeBigUInt64LE(0n, x + 20); // local header offset
      const z64 = Buffer.alloc(56 + 20 + 22);
      const eocd64 = cdOffset + cd.length;
      z64.writeUInt32LE(0x06064b50, 0);
      z64.writeBigUInt64LE(44n, 4);
      z64.writeUInt16LE(45, 12);
      z64.writeUInt16LE(45, 14);
      z64.writeBigUInt64LE(1n, 24);
      z64.writeBigUInt64LE(1n, 32);
      z64.writeBigUInt64LE(BigInt(cd.length), 40);
      z64.writeBigUInt64LE(BigInt(cdOffset), 48);
      z64.writeUInt32LE(0x07064b50, 56); // locator
      z64.writeBigUInt64LE(BigInt(eocd64), 64);
      z64.writeUInt32LE(1, 72);
      z64.writeUInt32LE(0x06054b50, 76); // end record: every field deferred to zip64
      z64.writeUInt16LE(0xffff, 84);
      z64.writeUInt16LE(0xffff, 86);
      z64.writeUInt32LE(U32_MAX, 88);
      z64.writeUInt32LE(U32_MAX, 92);
      writeAllSync(fd, cd);
      writeAllSync(fd, z64);
    } finally {
      closeSync(fd);
    }
  }, 'writeNpzUint8');
  return count;
}

/** Where one uint8 array of an .npz lies in the file. */
export interface NpzArrayInfo {
  shape: number[];
  /** absolute offset of the first element */
  offset: number;
  bytes: number;
}

function npzError(path: string, msg: string): TorchError {
  return new TorchError(`'${path}' is not a readable .npz of uint8 arrays: ${msg}`, 'E_FORMAT');
}

function parseNpyHeader(path: string, fd: number, at: number, size: number): NpzArrayInfo {
  const pre = readAt(fd, at, 12);
  if (pre.length < 10 || !pre.subarray(0, 6).equals(MAGIC)) throw npzError(path, 'the member is not an NPY file (bad magic)');
  const major = pre[6]!;
  let hlen: number, start: number;
  if (major === 1) {
    hlen = pre.readUInt16LE(8);
    start = 10;
  } else if (major === 2 || major === 3) {
    hlen = pre.readUInt32LE(8);
    start = 12;
  } else throw npzError(path, `NPY version ${major} is not supported`);
  if (start + hlen > size) throw npzError(path, 'the NPY header runs past its member');
  const text = readAt(fd, at + start, hlen).toString('latin1');
  const descr = /'descr':\s*'([^']*)'/.exec(text)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(text)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw npzError(path, `unreadable NPY header ${JSON.stringify(text.trim())}`);
  if (descr !== '|u1' && descr !== '<u1' && descr !== '>u1') throw npzError(path, `dtype '${descr}', expected uint8 ('|u1')`);
  if (fortran !== 'False') throw npzError(path, 'Fortran-order arrays are not supported');
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw npzError(path, `bad shape (${shapeText})`);
  const bytes = shape.reduce((a, b) => a * b, 1);
  if (start + hlen + bytes !== size) throw npzError(path, `shape (${shape.join(', ')}) needs ${bytes} bytes, the member holds ${size - start - hlen}`);
  return { shape, offset: at + start + hlen, bytes };
}

/**
 * An .npz opened for reading: the uint8 arrays it holds by name (without '.npy'), read whole or in
 * slices along the first axis. Close it (or `using`).
 */
export class NpzFile implements Disposable {
  private fd: number | null;
  readonly arrays: ReadonlyMap<string, NpzArrayInfo>;

  constructor(readonly path: string) {
    if (typeof path !== 'string' || path === '') throw argError('type', 'NpzFile: path must be a non-empty string');
    const fd = openForReading(path);
    try {
      const compressed: string[] = [];
      const records = readZip(path, fd, fstatSync(fd).size, compressed);
      if (compressed.length) throw npzError(path, `compressed members (${compressed.join(', ')}): np.savez_compressed files are not read; save with np.savez`);
      const arrays = new Map<string, NpzArrayInfo>();
      for (const [name, rec] of records) {
        if (!name.endsWith('.npy')) continue;
        arrays.set(name.slice(0, -4), parseNpyHeader(path, fd, rec.offset, rec.size));
      }
      if (arrays.size === 0) throw npzError(path, 'no .npy members');
      this.arrays = arrays;
      this.fd = fd;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private info(name: string): NpzArrayInfo {
    const a = this.arrays.get(name);
    if (!a) throw new TorchError(`'${this.path}': no array '${name}' (has: ${[...this.arrays.keys()].join(', ')})`, 'E_FORMAT');
    return a;
  }

  /** Rows [start, start + count) along the first axis of array `name`, as bytes in C order. */
  readRows(name: string, start: number, count: number): Uint8Array {
    if (this.fd === null) throw new TorchError(`'${this.path}' is closed`, 'E_STATE');
    const a = this.info(name);
    const n = a.shape[0] ?? 1;
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > n) {
      throw argError('range', `NpzFile.readRows: rows [${start}, ${start + count}) out of range [0, ${n})`, 'E_INDEX');
    }
    const row = n === 0 ? 0 : a.bytes / n;
    const b = readAt(this.fd, a.offset + start * row, count * row);
    if (b.length !== count * row) throw npzError(this.path, 'truncated array data');
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
