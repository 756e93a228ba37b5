/**
 * Writes a state dict in PyTorch's torch.save zip format (what official `.bin` checkpoints are):
 * `archive/data.pkl` (a protocol-2 pickle of an OrderedDict name -> tensor, each tensor rebuilt by
 * torch._utils._rebuild_tensor_v2 from a persistent storage reference), one `archive/data/<k>`
 * record per tensor, and `archive/version`. Records are stored uncompressed, 64-byte aligned like
 * PyTorch's writer (so readers can map them), with CRC-32s (PyTorch's reader checks them).
 *
 * torch.load only needs the reading side of this project (lib/torch/checkpoint.ts); this is the
 * writing side `tim convert` and TiM.save('.bin') use. Scope: contiguous CPU tensors of the dtypes
 * below, total size under 4 GiB (no zip64 — every released TiM is smaller in float32).
 */
import { closeSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import type { Tensor } from '../tensor.js';
import { TorchError, argError } from '../errors.js';

const STORAGE: Readonly<Record<string, string>> = {
  float32: 'FloatStorage', float64: 'DoubleStorage', int64: 'LongStorage', int32: 'IntStorage',
  int16: 'ShortStorage', int8: 'CharStorage', uint8: 'ByteStorage', bool: 'BoolStorage',
};

/** Pickle opcodes used (protocol 2). */
const OP = { PROTO: 0x80, GLOBAL: 0x63, EMPTY_TUPLE: 0x29, REDUCE: 0x52, MARK: 0x28, BINUNICODE: 0x58, TUPLE: 0x74, BINPERSID: 0x51, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d, LONG1: 0x8a, NEWFALSE: 0x89, SETITEMS: 0x75, STOP: 0x2e } as const;

class PickleWriter {
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

interface Written {
  name: string;
  offset: number;
  size: number;
  crc: number;
}

/** Saves `record` as a torch.save checkpoint (atomic: temporary file, then rename). */
export function saveStateDictBin(record: Record<string, Tensor>, path: string): void {
  if (typeof path !== 'string' || path === '') throw argError('type', 'saveStateDictBin: path must be a non-empty string');
  const names = Object.keys(record);
  const entries = names.map((name, i) => {
    const t = record[name]!;
    if (t.device !== 'cpu') throw new TorchError(`saveStateDictBin: '${name}' is on ${t.device}; move the model to the CPU first`, 'E_DEVICE');
    const storage = STORAGE[t.dtype];
    if (!storage) throw new TorchError(`saveStateDictBin: '${name}' has dtype ${t.dtype}, which this writer does not store (save .safetensors)`, 'E_DTYPE');
    return { name, storage, key: String(i), shape: t.shape, tensor: t };
  });
  if (entries.length + 2 > 0xffff) throw new TorchError('saveStateDictBin: more than 65533 tensors needs zip64 (not written here); save .safetensors', 'E_NOT_IMPLEMENTED');
  const abs = resolve(path);
  const tmp = join(dirname(abs), `.${basename(abs)}.${process.pid}.bin.tmp`);
  let fd: number | null = null;
  try {
    fd = openSync(tmp, 'w');
    let pos = 0;
    const written: Written[] = [];
    const put = (b: Uint8Array): void => {
      let off = 0;
      while (off < b.length) off += writeSync(fd!, b, off, b.length - off);
      pos += b.length;
    };
    const record_ = (name: string, data: Uint8Array): void => {
      const nameBuf = Buffer.from(name, 'utf8');
      // Pad the local header's extra field ('FB' id, as PyTorch's writer) so data starts on 64 bytes.
      const base = pos + 30 + nameBuf.length + 4;
      const pad = (64 - (base % 64)) % 64;
      const crc = crc32(data);
      if (pos + 34 + nameBuf.length + pad + data.length > 0xffffffff) {
        throw new TorchError('saveStateDictBin: the checkpoint would exceed 4 GiB, which needs zip64 (not written here); save .safetensors', 'E_NOT_IMPLEMENTED');
      }
      const h = Buffer.alloc(30 + nameBuf.length + 4 + pad);
      h.writeUInt32LE(0x04034b50, 0);
      h.writeUInt16LE(20, 4); // version needed
      h.writeUInt32LE(crc >>> 0, 14);
      h.writeUInt32LE(data.length, 18);
      h.writeUInt32LE(data.length, 22);
      h.writeUInt16LE(nameBuf.length, 26);
      h.writeUInt16LE(4 + pad, 28);
      nameBuf.copy(h, 30);
      h.writeUInt16LE(0x4246, 30 + nameBuf.length); // 'FB'
      h.writeUInt16LE(pad, 32 + nameBuf.length);
      h.fill(0x5a, 34 + nameBuf.length); // 'Z' padding bytes, like PyTorch
      written.push({ name, offset: pos, size: data.length, crc: crc >>> 0 });
      put(h);
      put(data);
    };
    record_('archive/data.pkl', dataPickle(entries));
    for (const e of entries) {
      // toTypedArray copies a contiguous row-major image of the tensor (views included).
      const ta = e.tensor.toTypedArray();
      record_(`archive/data/${e.key}`, new Uint8Array(ta.buffer, ta.byteOffset, ta.byteLength));
    }
    record_('archive/version', Buffer.from('3\n'));
    const cdStart = pos;
    for (const w of written) {
      const nameBuf = Buffer.from(w.name, 'utf8');
      const c = Buffer.alloc(46 + nameBuf.length);
      c.writeUInt32LE(0x02014b50, 0);
      c.writeUInt16LE(20, 4); // version made by
      c.writeUInt16LE(20, 6); // version needed
      c.writeUInt32LE(w.crc, 16);
      c.writeUInt32LE(w.size, 20);
      c.writeUInt32LE(w.size, 24);
      c.writeUInt16LE(nameBuf.length, 28);
      c.writeUInt32LE(w.offset, 42);
      nameBuf.copy(c, 46);
      put(c);
    }
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(written.length, 8);
    end.writeUInt16LE(written.length, 10);
    end.writeUInt32LE(pos - cdStart, 12);
    end.writeUInt32LE(cdStart, 16);
    put(end);
    closeSync(fd);
    fd = null;
    renameSync(tmp, abs);
  } catch (err) {
    if (fd !== null) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // nothing was created
    }
    const code = (err as { code?: unknown }).code;
    if (!(err instanceof TorchError) && typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
      throw new TorchError(`saveStateDictBin: cannot write '${path}': ${(err as Error).message}`, 'E_IO');
    }
    throw err;
  }
}
