/**
 * The official T2I data layout (tim/data/t2i_data.py, sampler_utils.py): jsonl + packed buckets,
 * sizes rounded down to 32, Pillow bicubic resize, the packed batch order, resumable position,
 * unicode-escaped captions, and typed errors for bad files.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { T2IDataset, T2IBatchLoader, bucketSize } from '../lib/tim/data/t2i_data.js';
import { makeT2IDataset } from './helpers/t2i_dataset.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-t2i-data-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const paths = makeT2IDataset(join(dir, 'ds'));

async function drain(loader: T2IBatchLoader, n: number) {
  const out: { indices: number[]; shape: number[]; captions: string[] }[] = [];
  for (let i = 0; i < n; i++) {
    const b = await loader.next();
    out.push({ indices: b.indices, shape: b.images.shape, captions: b.captions });
    b.images.dispose();
  }
  return out;
}

describe('T2I data', () => {
  it('bucket sizes round down to multiples of 32 as int(int(h)/32)*32', () => {
    expect(bucketSize('1024-768x1344')).toEqual({ height: 768, width: 1344 });
    expect(bucketSize('a-b-70x40')).toEqual({ height: 64, width: 32 });
    expect(bucketSize('1-31x64')).toBeNull();
    expect(bucketSize('nosize')).toBeNull();
  });

  it('reads the records and resizes images to their bucket like Pillow (bicubic, no crop)', async () => {
    const ds = new T2IDataset(paths);
    expect(ds.length).toBe(6);
    expect(ds.batches.length).toBe(5);
    expect(ds.records[0]).toMatchObject({ height: 64, width: 32, bucket: '1-70x40' });
    const out = new Float32Array(3 * 64 * 32);
    await ds.loadImage(0, out);
    // torch 2.13 + Pillow: Image.resize((32, 64), BICUBIC), ToTensor, Normalize(0.5, 0.5)
    const sum = out.reduce((a, b) => a + b, 0);
    expect(sum).toBeCloseTo(-4.1881327629089355, 3);
    expect(Array.from(out.subarray(0, 5))).toEqual([-0.9843137264251709, -0.9137254953384399, -0.8509804010391235, -0.7803921699523926, -0.7098039388656616].map(Math.fround));
    expect(out[2 * 64 * 32 + 63 * 32 + 31]).toBe(Math.fround(0.9137254953384399));
  });

  it('walks the packed batches in get_packed_batch_sampler order and resumes at a position', async () => {
    const ds = new T2IDataset(paths);
    const loader = new T2IBatchLoader(ds, { seed: 3 });
    const got = await drain(loader, 15);
    await loader.close();
    // torch: cat over e of randperm(5, manual_seed(3 + e))
    const order = [1, 0, 3, 4, 2, 0, 3, 1, 4, 2, 1, 3, 0, 4, 2];
    expect(got.map((b) => b.indices)).toEqual(order.map((i) => ds.batches[i]));
    for (const b of got) {
      const r = ds.records[b.indices[0]!]!;
      expect(b.shape).toEqual([b.indices.length, 3, r.height, r.width]);
    }
    // both aspect ratios occur
    expect(new Set(got.map((b) => b.shape.slice(2).join('x')))).toEqual(new Set(['64x32', '32x64']));
    // resume after 7 batches: the same continuation, captions included
    const first = new T2IBatchLoader(ds, { seed: 3 });
    await drain(first, 7);
    const state = first.globalState;
    expect(state).toEqual({ epoch: 1, index: 2, seed: 3 });
    expect(first.globalSamples).toBe(7);
    await first.close();
    const resumed = new T2IBatchLoader(ds, { seed: 3, globalState: state, prefetch: 0 });
    expect(await drain(resumed, 8)).toEqual(got.slice(7));
    await resumed.close();
  });

  it('picks captions among a sample\'s captions and unicode-escapes them', async () => {
    const ds = new T2IDataset(paths);
    const seen = new Set<string>();
    for (let e = 0; e < 60; e++) seen.add(ds.caption(4, 0, e));
    expect(seen).toEqual(new Set(['a wide picture', 'caf\\xe9 \\xfcn\\xefc\\xf6d\\xe9 \\U0001f600', 'third']));
    expect(ds.caption(4, 0, 7)).toBe(ds.caption(4, 0, 7));
  });

  it('bad files are typed errors naming the file and line', () => {
    const bad = (name: string, text: string) => {
      const p = join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    const jsonl = (t: string) => () => new T2IDataset({ ...paths, jsonlDir: bad('bad.jsonl', t) });
    expect(jsonl('{"image_file": "a.png", "captions": ["x"], "bucket": "1-64x64"}\nnot json\n')).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('line 2') }));
    expect(jsonl('{"image_file": "a.png", "captions": [], "bucket": "1-64x64"}\n')).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('captions') }));
    expect(jsonl('{"image_file": "a.png", "captions": ["x"], "bucket": "1-16x64"}\n')).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('bucket') }));
    expect(jsonl('{"captions": ["x"], "bucket": "1-64x64"}\n')).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('image_file') }));
    expect(jsonl('')).toThrow(expect.objectContaining({ code: 'E_DATA' }));
    const packed = (t: string) => () => new T2IDataset({ ...paths, packedJson: bad('bad.json', t) });
    expect(packed('[[0, 6]]')).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('sample 6') }));
    expect(packed('[[0, 3]]')).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('mixes image sizes') }));
    expect(packed('{"a": 1}')).toThrow(expect.objectContaining({ code: 'E_DATA' }));
    expect(packed('[[0], []]')).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('batch 1') }));
    expect(() => new T2IDataset({ ...paths, jsonlDir: join(dir, 'missing.jsonl') })).toThrow(expect.objectContaining({ code: 'E_IO' }));
  });

  it('a missing image is an E_IO error naming it when its batch is asked for', async () => {
    const jsonlDir = join(dir, 'missing-image.jsonl');
    writeFileSync(jsonlDir, JSON.stringify({ image_file: 'images/nope.png', captions: ['x'], bucket: '1-64x32' }) + '\n');
    const packedJson = join(dir, 'one.json');
    writeFileSync(packedJson, '[[0]]');
    const loader = new T2IBatchLoader(new T2IDataset({ ...paths, jsonlDir, packedJson }), { seed: 0 });
    await expect(loader.next()).rejects.toMatchObject({ code: 'E_IO', message: expect.stringContaining('nope.png') });
    await loader.close();
  });
});

