/**
 * lib/torch/io/npz.ts: an .npz of one uint8 (N, H, W, 3) array under arr_0, written in pieces, read
 * back by NumPy (`np.load(f)['arr_0']`, as the ADM evaluator does) with the same shape, dtype and
 * bytes; NumPy's own np.savez read back by NpzFile; a wrong byte count writes nothing.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NpzFile, npyHeader, writeNpzUint8 } from '../lib/torch/io/npz.js';
import { PYTHON, pythonEnv } from './helpers/python.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-npz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Deterministic bytes: element i is (i * 7 + 3) mod 251. */
function pattern(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) % 251;
  return b;
}

function python(code: string): string {
  return execFileSync(PYTHON, ['-c', code], { env: pythonEnv(), encoding: 'utf8' }).trim();
}

describe('npz', () => {
  it('pads the NPY header as NumPy does (a multiple of 64, ending in a newline)', () => {
    const h = npyHeader([5, 8, 8, 3]);
    expect(h.length % 64).toBe(0);
    expect(h[h.length - 1]).toBe(0x0a);
    expect(h.toString('latin1')).toContain("{'descr': '|u1', 'fortran_order': False, 'shape': (5, 8, 8, 3), }");
    expect(npyHeader([4]).toString('latin1')).toContain("'shape': (4,)");
  });

  it('writes an .npz that numpy reads with the same shape, dtype and values', () => {
    const shape = [5, 6, 7, 3];
    const data = pattern(5 * 6 * 7 * 3);
    const path = join(dir, 'samples.npz');
    // three uneven pieces: the CRC and sizes must come out right whatever the chunking
    const n = writeNpzUint8(path, shape, (put) => {
      put(data.subarray(0, 100));
      put(data.subarray(100, 101));
      put(data.subarray(101));
    });
    expect(n).toBe(data.length);
    const out = JSON.parse(python(`
import numpy as np, json, zipfile, hashlib
with zipfile.ZipFile(${JSON.stringify(path)}) as z:
    bad = z.testzip()
    names = z.namelist()
f = np.load(${JSON.stringify(path)})
a = f['arr_0']
print(json.dumps({'files': f.files, 'names': names, 'bad': bad, 'shape': list(a.shape), 'dtype': str(a.dtype), 'sum': int(a.astype(np.int64).sum()), 'first': a.reshape(-1)[:8].tolist(), 'last': int(a.reshape(-1)[-1])}))
`));
    expect(out.bad).toBeNull(); // every CRC checks out
    expect(out.files).toEqual(['arr_0']);
    expect(out.names).toEqual(['arr_0.npy']);
    expect(out.shape).toEqual(shape);
    expect(out.dtype).toBe('uint8');
    expect(out.sum).toBe(data.reduce((a, b) => a + b, 0));
    expect(out.first).toEqual([...data.subarray(0, 8)]);
    expect(out.last).toBe(data[data.length - 1]);

    using f = new NpzFile(path);
    expect(f.arrays.get('arr_0')!.shape).toEqual(shape);
    expect(Buffer.from(f.readRows('arr_0', 0, 5)).equals(Buffer.from(data))).toBe(true);
    expect(Buffer.from(f.readRows('arr_0', 2, 1)).equals(Buffer.from(data.subarray(2 * 126, 3 * 126)))).toBe(true);
    expect(() => f.readRows('arr_0', 4, 2)).toThrow(/out of range/);
  });

  it("reads numpy's own np.savez files", () => {
    const path = join(dir, 'numpy.npz');
    python(`
import numpy as np
a = (np.arange(2 * 3 * 4 * 3) * 5 % 256).astype(np.uint8).reshape(2, 3, 4, 3)
np.savez(${JSON.stringify(path)}, a)
`);
    using f = new NpzFile(path);
    const info = f.arrays.get('arr_0')!;
    expect(info.shape).toEqual([2, 3, 4, 3]);
    const got = f.readRows('arr_0', 0, 2);
    expect([...got.subarray(0, 5)]).toEqual([0, 5, 10, 15, 20]);
    expect(got[71]).toBe((71 * 5) % 256);
  });

  it('refuses compressed and non-uint8 archives with E_FORMAT', () => {
    const c = join(dir, 'compressed.npz'), f32 = join(dir, 'float.npz');
    python(`
import numpy as np
np.savez_compressed(${JSON.stringify(c)}, np.zeros((2, 2), np.uint8))
np.savez(${JSON.stringify(f32)}, np.zeros((2, 2), np.float32))
`);
    expect(() => new NpzFile(c)).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/compressed/) }));
    expect(() => new NpzFile(f32)).toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/dtype '<f4'/) }));
  });

  it('writes nothing when the byte count is wrong or the producer fails', () => {
    const sub = mkdtempSync(join(dir, 'bad-'));
    const path = join(sub, 'x.npz');
    expect(() => writeNpzUint8(path, [2, 2, 2, 3], (put) => put(new Uint8Array(23)))).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(() => writeNpzUint8(path, [2, 2, 2, 3], (put) => put(new Uint8Array(25)))).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(() => writeNpzUint8(path, [2, 2, 2, 3], () => { throw new Error('producer failed'); })).toThrow('producer failed');
    expect(() => writeNpzUint8(path, [2, -1], () => {})).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(existsSync(path)).toBe(false);
    expect(readdirSync(sub)).toEqual([]); // no temporary file left either
  });
});
