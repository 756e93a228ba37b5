/**
 * The zip container of torch.save and torch.jit.save archives: reading its central directory
 * (zip64 aware, every record bounds-checked against the file) and writing stored (uncompressed)
 * archives the way PyTorch's writer does (records 64-byte aligned, so readers can map them, with
 * CRC-32s, which PyTorch's reader checks). The formats inside are lib/torch/io/torch_zip.ts's.
 */
import { openSync, readSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { TorchError } from '../errors.js';

/** The error for a damaged or unsupported archive (every torch archive reader reports this way). */
export function checkpointError(path: string, msg: string): TorchError {
  return new TorchError(`'${path}' is not a readable PyTorch checkpoint: ${msg}`, 'E_FORMAT');
}
const formatError = checkpointError;

/** An fd for reading `path`, or a TorchError E_IO that names the file (the caller closes the fd). */
export function openForReading(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw new TorchError(`cannot open '${path}': ${(e as Error).message}`, 'E_IO');
  }
}

// ---- reading --------------------------------------------------------------------------------

export interface ZipRecord {
  /** absolute offset of the record's bytes in the file */
  offset: number;
  size: number;
}

export function readAt(fd: number, pos: number, len: number): Buffer {
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
export function readZip(path: string, fd: number, size: number, compressed: string[]): Map<string, ZipRecord> {
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


/** Whether the first bytes of a file are a zip local-file signature. */
export function isZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

// ---- writing --------------------------------------------------------------------------------

/**
 * Writes a stored (uncompressed) zip archive through `put`, record by record, so only one
 * record's bytes are in memory at a time. Like PyTorch's writer, each record's data starts on a
 * 64-byte boundary (the local header's extra field, id 'FB', pads it). No zip64: the archive must
 * stay under 4 GiB and 65535 records (E_NOT_IMPLEMENTED otherwise).
 */
export class ZipWriter {
  private pos = 0;
  private readonly written: { name: Buffer; offset: number; size: number; crc: number }[] = [];
  constructor(private readonly put: (b: Uint8Array) => void, private readonly what: string) {}

  private out(b: Uint8Array): void {
    this.put(b);
    this.pos += b.length;
  }

  add(name: string, data: Uint8Array): void {
    const nameBuf = Buffer.from(name, 'utf8');
    if (this.written.length >= 0xffff) throw this.tooBig('more than 65535 records');
    const base = this.pos + 30 + nameBuf.length + 4;
    const pad = (64 - (base % 64)) % 64;
    if (base + pad + data.length > 0xffffffff) throw this.tooBig('over 4 GiB');
    const crc = crc32(data) >>> 0;
    const h = Buffer.alloc(30 + nameBuf.length + 4 + pad);
    h.writeUInt32LE(0x04034b50, 0);
    h.writeUInt16LE(20, 4); // version needed
    h.writeUInt32LE(crc, 14);
    h.writeUInt32LE(data.length, 18);
    h.writeUInt32LE(data.length, 22);
    h.writeUInt16LE(nameBuf.length, 26);
    h.writeUInt16LE(4 + pad, 28);
    nameBuf.copy(h, 30);
    h.writeUInt16LE(0x4246, 30 + nameBuf.length); // 'FB'
    h.writeUInt16LE(pad, 32 + nameBuf.length);
    h.fill(0x5a, 34 + nameBuf.length); // 'Z' padding bytes, like PyTorch
    this.written.push({ name: nameBuf, offset: this.pos, size: data.length, crc });
    this.out(h);
    this.out(data);
  }

  /** Writes the central directory and the end record. */
  finish(): void {
    const cdStart = this.pos;
    for (const w of this.written) {
      const c = Buffer.alloc(46 + w.name.length);
      c.writeUInt32LE(0x02014b50, 0);
      c.writeUInt16LE(20, 4); // version made by
      c.writeUInt16LE(20, 6); // version needed
      c.writeUInt32LE(w.crc, 16);
      c.writeUInt32LE(w.size, 20);
      c.writeUInt32LE(w.size, 24);
      c.writeUInt16LE(w.name.length, 28);
      c.writeUInt32LE(w.offset, 42);
      w.name.copy(c, 46);
      this.out(c);
    }
    if (this.pos > 0xffffffff) throw this.tooBig('over 4 GiB');
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(this.written.length, 8);
    end.writeUInt16LE(this.written.length, 10);
    end.writeUInt32LE(this.pos - cdStart, 12);
    end.writeUInt32LE(cdStart, 16);
    this.out(end);
  }

  private tooBig(why: string): TorchError {
    return new TorchError(`${this.what}: the archive would have ${why}, which needs zip64 (not written here); save .safetensors`, 'E_NOT_IMPLEMENTED');
  }
}
