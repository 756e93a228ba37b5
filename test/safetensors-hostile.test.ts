/**
 * Corrupt, truncated and hostile safetensors files: each must give a TorchError with code
 * E_FORMAT (E_IO for unreadable paths), never a crash, a hang or a huge allocation.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { torch } from '../lib/index.js';
import { native } from '../lib/torch/native.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-st-hostile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let counter = 0;

/** Writes a file from a header (object or raw JSON text) and data bytes; `len` overrides the length prefix. */
function file(header: unknown, data: Buffer | number = 0, len?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(len ?? BigInt(json.length));
  const path = join(dir, `f${counter++}.safetensors`);
  writeFileSync(path, Buffer.concat([head, json, typeof data === 'number' ? Buffer.alloc(data) : data]));
  return path;
}

function expectCode(path: string, code: string, message?: RegExp): void {
  let err: unknown;
  try {
    const r = torch.load(path);
    for (const t of Object.values(r)) t.dispose();
  } catch (e) {
    err = e;
  }
  expect(err, `${path} should not load`).toBeInstanceOf(torch.TorchError);
  expect((err as { code: string }).code, String(err)).toBe(code);
  if (message) expect((err as Error).message).toMatch(message);
}

const T = (dtype: string, shape: unknown, offsets: unknown): unknown => ({ dtype, shape, data_offsets: offsets });

describe('hostile safetensors headers', () => {
  it('a valid file truncated at every byte fails cleanly', () => {
    const a = torch.arange(0, 6, 1, { dtype: 'float32' });
    const b = torch.tensor([1, 2], { dtype: 'int64' });
    const good = join(dir, 'good.safetensors');
    torch.save({ a, b }, good, { k: 'v' });
    a.dispose();
    b.dispose();
    const bytes = readFileSync(good);
    for (let n = 0; n < bytes.length; n++) {
      const path = join(dir, 'trunc.safetensors');
      writeFileSync(path, bytes.subarray(0, n));
      expectCode(path, 'E_FORMAT');
    }
    // and one byte too many
    writeFileSync(join(dir, 'long.safetensors'), Buffer.concat([bytes, Buffer.from([0])]));
    expectCode(join(dir, 'long.safetensors'), 'E_FORMAT', /cover/);
  });

  it('bounds the header length before allocating anything', () => {
    expectCode(file('{}', 0, 0xffffffffffffffffn), 'E_FORMAT', /100 MB/);
    expectCode(file('{}', 0, 1n << 40n), 'E_FORMAT', /100 MB/);
    expectCode(file('{}', 0, 100_000_001n), 'E_FORMAT', /100 MB/);
    expectCode(file('{}', 0, 3n), 'E_FORMAT'); // '{}'+space read as '{}' + part of nothing: length mismatch
    expectCode(file('{}      ', 0, 9n), 'E_FORMAT', /past the end/);
  });

  it('rejects offsets out of range, overlapping, with gaps, reversed or not covering the data', () => {
    expectCode(file({ a: T('F32', [2], [0, 8]) }, 4), 'E_FORMAT', /ends at byte 8/);
    expectCode(file({ a: T('F32', [1], [0, 4]), b: T('F32', [1], [2, 6]) }, 6), 'E_FORMAT', /overlaps/);
    expectCode(file({ a: T('F32', [1], [0, 4]), b: T('F32', [1], [8, 12]) }, 12), 'E_FORMAT', /gap/);
    expectCode(file({ a: T('F32', [1], [4, 0]) }, 4), 'E_FORMAT', /begin > end/);
    expectCode(file({ a: T('F32', [1], [0, 4]) }, 8), 'E_FORMAT', /cover 4 bytes but the data section has 8/);
    expectCode(file({ a: T('F32', [1], [0, 4]), b: T('F32', [1], [0, 4]) }, 4), 'E_FORMAT', /overlaps/);
    expectCode(file({ a: T('F32', [1], [2 ** 53, 2 ** 53 + 4]) }, 4), 'E_FORMAT');
  });

  it('rejects dtype x shape mismatches and overflowing shapes', () => {
    expectCode(file({ a: T('F32', [3], [0, 8]) }, 8), 'E_FORMAT', /needs 12 bytes/);
    expectCode(file({ a: T('F16', [2, 2], [0, 4]) }, 4), 'E_FORMAT', /needs 8 bytes/);
    expectCode(file({ a: T('F32', [2 ** 52, 2 ** 52], [0, 16]) }, 16), 'E_FORMAT', /larger than the file/);
    expectCode(file('{"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,16]}}', 16), 'E_FORMAT', /too large/);
    expectCode(file('{"a":{"dtype":"F32","shape":[18446744073709551617],"data_offsets":[0,4]}}', 4), 'E_FORMAT', /too large/);
    expectCode(file({ a: T('F32', new Array(65).fill(1), [0, 4]) }, 4), 'E_FORMAT', /more than 64/);
    // zero-size dims are fine even next to large ones
    const ok = file({ a: T('F32', [0, 2 ** 40], [0, 0]) }, 0);
    const r = torch.load(ok);
    expect(r.a!.shape).toEqual([0, 2 ** 40]);
    r.a!.dispose();
  });

  it('rejects bad JSON, non-object headers and wrong types', () => {
    const bad: [string, RegExp?][] = [
      ['{"a":', /expected/],
      ['[]', /start with/],
      ['"x"', /start with/],
      ['5       ', /start with/],
      [' {}', /start with/],
      ['\uFEFF{}', /start with/],
      ['{}x', /after the header/],
      ['{}\u0000', /after the header/],
      ['{"a":{"dtype":5,"shape":[1],"data_offsets":[0,4]}}', /expected a string/],
      ['{"a":{"dtype":"F32","shape":"x","data_offsets":[0,4]}}', /array/],
      ['{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}', /integer/],
      ['{"a":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}', /integer/],
      ['{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', /negative/],
      ['{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}', /leading zero/],
      ['{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', /\[begin, end\]/],
      ['{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', /more than 2/],
      ['{"a":{"dtype":"F32","shape":[1],"data_offsets":"x"}}', /array/],
      ['{"a":{"dtype":"F32","shape":[1]}}', /no data_offsets/],
      ['{"a":{"shape":[1],"data_offsets":[0,4]}}', /no dtype/],
      ['{"a":{"dtype":"F32","data_offsets":[0,4]}}', /no shape/],
      ['{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', /duplicate field/],
      ['{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', /duplicate key/],
      ['{"a":{"dtype":"X99","shape":[1],"data_offsets":[0,4]}}', /unknown dtype/],
      ['{"a":7}', /object for tensor/],
      ['{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],}}', /expected a string/],
      ['{"__metadata__":{"a":1}}', /must be a string/],
      ['{"__metadata__":["a"]}', /object/],
      ['{"__metadata__":{"a":"1","a":"2"}}', /duplicate key/],
      ['{"a\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', /lone surrogate/],
      ['{"a\u0001":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', /control character/],
      ['{"a\\x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', /bad escape/],
      ['{"a\\u12":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', /\\u escape/],
      ['{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":' + '['.repeat(5000) + ']'.repeat(5000) + '}}', /nesting too deep/],
      ['{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":tru}}', /invalid JSON value/],
    ];
    for (const [h, re] of bad) expectCode(file(h, 4), 'E_FORMAT', re);
    // invalid UTF-8 in the header
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(4n);
    const path = join(dir, 'utf8.safetensors');
    writeFileSync(path, Buffer.concat([head, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]));
    expectCode(path, 'E_FORMAT', /UTF-8/);
    // unknown fields with valid values are skipped, like the reference reader does
    const ok = torch.load(file('{"a":{"future":{"x":[1,null,true,"s",-1.5e3]},"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4));
    expect(ok.a!.shape).toEqual([1]);
    ok.a!.dispose();
  });

  it('unreadable paths give E_IO', () => {
    expectCode(join(dir, 'missing.safetensors'), 'E_IO');
    mkdirSync(join(dir, 'adir'));
    expect(() => torch.openSafetensors(join(dir, 'adir'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
  });

  it('a valid dtype libtorch cannot hold opens, but reading it is E_DTYPE', () => {
    const path = file({ a: T('U16', [2], [0, 4]), b: T('F32', [1], [4, 8]) }, 8);
    using f = torch.openSafetensors(path);
    expect(f.info('a')).toMatchObject({ dtype: 'U16', torchDtype: null, shape: [2] });
    const b = f.get('b');
    expect(b.shape).toEqual([1]);
    b.dispose();
    expect(() => f.get('a')).toThrow(expect.objectContaining({ code: 'E_DTYPE' }));
    expect(() => f.get('nope')).toThrow(expect.objectContaining({ code: 'E_VALUE' }));
    expectCode(path, 'E_DTYPE');
  });

  it('random header corruption never escapes as anything but a TorchError', () => {
    const a = torch.arange(0, 6, 1, { dtype: 'float32' });
    const good = join(dir, 'fuzz-src.safetensors');
    torch.save({ weight: a, 'b.bias': a.long() }, good, { config: '{"x": 1}' });
    a.dispose();
    const bytes = readFileSync(good);
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    let loaded = 0;
    for (let i = 0; i < 400; i++) {
      const m = Buffer.from(bytes);
      for (let k = 0, n = 1 + rnd(3); k < n; k++) m[rnd(Math.min(m.length, 8 + 140))] = rnd(256);
      const path = join(dir, 'fuzz.safetensors');
      writeFileSync(path, m);
      try {
        const r = torch.load(path);
        loaded++;
        for (const t of Object.values(r)) t.dispose();
      } catch (e) {
        expect(e, String(e)).toBeInstanceOf(torch.TorchError);
        expect(['E_FORMAT', 'E_DTYPE']).toContain((e as { code: string }).code);
      }
    }
    expect(loaded).toBeLessThan(400);
  });
});

describe('the native reader checks what it is given', () => {
  it('refuses out-of-bounds or inconsistent requests even when TypeScript validation is bypassed', () => {
    const a = torch.arange(0, 4, 1, { dtype: 'float32' });
    const path = join(dir, 'native.safetensors');
    torch.save({ a }, path);
    a.dispose();
    const r = native.stOpen(path);
    const F32 = 6;
    const bad: [unknown[], string][] = [
      [[F32, [4], 0, 17], 'E_FORMAT'], // past the data section
      [[F32, [8], 0, 32], 'E_FORMAT'],
      [[F32, [4], 8, 4], 'E_FORMAT'], // begin > end
      [[F32, [3], 0, 16], 'E_FORMAT'], // byte length != numel * 4
      [[F32, [2 ** 31, 2 ** 31, 2 ** 31], 0, 16], 'E_FORMAT'], // overflow
      [[F32, [-1], 0, 16], 'E_FORMAT'],
      [[F32, [1.5], 0, 16], 'E_FORMAT'],
      [[F32, new Array(65).fill(1), 0, 4], 'E_FORMAT'],
      [[F32, [4], -8, 8], 'E_FORMAT'],
      [[9, [2], 0, 16], 'E_DTYPE'], // complex64 is not a safetensors dtype here
    ];
    for (const [args, code] of bad) {
      // @ts-expect-error: requests the typed binding would refuse, to reach the native checks
      expect(() => native.stTensor(r.file, ...args, false), JSON.stringify(args)).toThrow(expect.objectContaining({ code }));
    }
    // @ts-expect-error: not a file handle
    expect(() => native.stTensor({}, F32, [4], 0, 16, false)).toThrow(TypeError);
    const h = native.stTensor(r.file, F32, [4], 0, 16, false);
    native.stClose(r.file);
    expect(() => native.stTensor(r.file, F32, [4], 0, 16, false)).toThrow(expect.objectContaining({ code: 'E_IO' }));
    native.free(h);
  });
});
