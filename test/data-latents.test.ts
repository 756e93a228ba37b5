/**
 * The official latent format: per-image safetensors {latent (2,C,H,W), label} in class subfolders,
 * written here with torch.save as the official preprocessing does (label a float32 scalar). Checks
 * the sorted listing, the flip choice (u < 0.5 -> latent[0] else latent[1]) and its reproducibility,
 * labels, batches, resume, and that bad files (missing keys, wrong shapes, corrupt bytes, bad
 * labels) are reported with the file name and a typed error. No leaked tensors.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { TorchError } from '../lib/torch/errors.js';
import { LatentFolderDataset } from '../lib/tim/data/latents.js';
import { DataLoader } from '../lib/tim/data/loader.js';
import { sampleUniform } from '../lib/tim/data/sampler.js';

const root = mkdtempSync(join(tmpdir(), 'tim-latents-'));
const good = join(root, 'good');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const C = 4, H = 2, W = 3;
/** Latent of sample k: image part 100k + i, flip part -(100k + i). */
function latentOf(k: number): Float32Array {
  const a = new Float32Array(2 * C * H * W);
  for (let i = 0; i < C * H * W; i++) {
    a[i] = 100 * k + i;
    a[C * H * W + i] = -(100 * k + i);
  }
  return a;
}
/** [class folder, file stem, label] in the order the dataset must list them. */
const ITEMS: [string, string, number][] = [
  ['n01', 'img_a', 0], ['n01', 'img_b', 0], ['n01', 'img_c', 0],
  ['n02', 'img_a', 1], ['n02', 'img_d', 1],
  ['n03', 'x', 2], ['n03', 'y', 2],
];

function writeLatent(path: string, k: number, label: number, dtype: 'float32' | 'bfloat16' = 'float32'): void {
  torch.scope(() => {
    const latent = torch.fromBuffer(latentOf(k), 'float32', [2, C, H, W], { copy: true }).to(dtype);
    torch.save({ latent, label: torch.scalarTensor(label, { dtype: 'float32' }) }, path);
  });
}

beforeAll(() => {
  // written in reverse so the listing order must come from sorting
  [...ITEMS].reverse().forEach(([cls, stem, label]) => {
    mkdirSync(join(good, cls), { recursive: true });
    writeLatent(join(good, cls, `${stem}.safetensors`), ITEMS.findIndex((it) => it[0] === cls && it[1] === stem), label);
  });
  writeFileSync(join(good, 'n01', '.img_z.safetensors.tmp-1-2'), 'an atomic write in progress');
  writeFileSync(join(good, 'README.txt'), 'not a latent');
});

describe('LatentFolderDataset', () => {
  it('lists .safetensors files sorted by class folder then name and reads shape from the first', () => {
    const ds = new LatentFolderDataset(good, { numClasses: 3 });
    expect(ds.files.map((f) => f.slice(good.length + 1))).toEqual(ITEMS.map(([c, s]) => `${c}/${s}.safetensors`));
    expect(ds.length).toBe(7);
    expect(ds.sampleShape).toEqual([C, H, W]);
  });

  it('picks latent[0] when u < 0.5 and the flip latent[1] otherwise; labels as stored', async () => {
    const ds = new LatentFolderDataset(good);
    const before = torch.memory().liveTensors;
    const n = C * H * W;
    for (let k = 0; k < ds.length; k++) {
      for (const [u, part] of [[0.2, 0], [0.7, 1], [0.4999, 0], [0.5, 1]] as const) {
        const out = new Float32Array(n);
        const y = await ds.load(k, out, u);
        expect(y).toBe(ITEMS[k]![2]);
        expect(Array.from(out)).toEqual(Array.from(latentOf(k).subarray(part * n, (part + 1) * n)));
      }
    }
    expect(torch.memory().liveTensors).toBe(before);
  });

  it('batches through the DataLoader with reproducible flips; a resumed loader continues identically', async () => {
    const ds = new LatentFolderDataset(good);
    const before = torch.memory().liveTensors;
    const n = C * H * W;
    const run = async (state?: { epoch: number; index: number; seed: number }, steps = 5): Promise<{ xs: number[][]; state: object }> => {
      const loader = new DataLoader(ds, { batchSize: 3, seed: 42, prefetch: 2, ...(state ? { state } : {}) });
      const xs: number[][] = [];
      for (let s = 0; s < steps; s++) {
        const b = await loader.next();
        expect(b.x.shape).toEqual([3, C, H, W]);
        expect(b.y.dtype).toBe('int64');
        const x = b.x.toTypedArray() as Float32Array;
        const epochOf = (j: number): number => Math.floor((b.state.epoch * 7 + b.state.index - 3 + j) / 7);
        Array.from(b.indices).forEach((k, j) => {
          // the flip is the one sampleUniform chose for (seed, epoch, index)
          const u = sampleUniform(42, epochOf(j), k);
          expect(Array.from(x.subarray(j * n, (j + 1) * n))).toEqual(Array.from(latentOf(k).subarray((u < 0.5 ? 0 : 1) * n, (u < 0.5 ? 1 : 2) * n)));
        });
        expect(Array.from(b.y.toTypedArray() as BigInt64Array, Number)).toEqual(Array.from(b.indices, (k) => ITEMS[k]![2]));
        xs.push(Array.from(x));
        b.x.dispose();
        b.y.dispose();
      }
      const st = loader.state;
      await loader.close();
      return { xs, state: st };
    };
    const whole = await run(undefined, 5);
    const head = await run(undefined, 2);
    const tail = await run(head.state as { epoch: number; index: number; seed: number }, 3);
    expect([...head.xs, ...tail.xs]).toEqual(whole.xs);
    // both flips occur over the batches
    const flips = whole.xs.flat().filter((v) => v < 0).length;
    expect(flips).toBeGreaterThan(0);
    expect(flips).toBeLessThan(whole.xs.flat().length - 5 * 3);
    expect(torch.memory().liveTensors).toBe(before);
  });

  it('accepts bfloat16 latents and integer labels', async () => {
    const d = join(root, 'bf16');
    mkdirSync(d);
    torch.scope(() => {
      const latent = torch.fromBuffer(latentOf(1), 'float32', [2, C, H, W], { copy: true }).to('bfloat16');
      torch.save({ latent, label: torch.tensor([5]) }, join(d, 'a.safetensors'));
    });
    const ds = new LatentFolderDataset(d);
    const out = new Float32Array(C * H * W);
    expect(await ds.load(0, out, 0.1)).toBe(5);
    expect(out[3]).toBe(103); // small integers are exact in bfloat16
  });

  it('reports bad files by name with typed errors', async () => {
    const bad = join(root, 'bad');
    mkdirSync(join(bad, 'c'), { recursive: true });
    const f = (name: string): string => join(bad, 'c', name);
    writeLatent(f('0_ok.safetensors'), 0, 1);
    torch.scope(() => {
      torch.save({ latent: torch.zeros([2, C, H, W]) }, f('1_nolabel.safetensors'));
      torch.save({ latents: torch.zeros([2, C, H, W]), label: torch.scalarTensor(0) }, f('2_nolatent.safetensors'));
      torch.save({ latent: torch.zeros([2, C, H, W + 1]), label: torch.scalarTensor(0) }, f('3_shape.safetensors'));
      torch.save({ latent: torch.zeros([2, C, H, W]), label: torch.scalarTensor(1.5) }, f('4_label.safetensors'));
      torch.save({ latent: torch.zeros([2, C, H, W]), label: torch.scalarTensor(7) }, f('5_range.safetensors'));
      torch.save({ latent: torch.zeros([2, C, H, W], { dtype: 'int32' }), label: torch.scalarTensor(0) }, f('6_dtype.safetensors'));
      torch.save({ latent: torch.full([2, C, H, W], NaN), label: torch.scalarTensor(0) }, f('7_nan.safetensors'));
    });
    writeFileSync(f('8_corrupt.safetensors'), Buffer.from([1, 2, 3]));
    const ds = new LatentFolderDataset(bad, { numClasses: 3 });
    expect(ds.length).toBe(9);
    const out = new Float32Array(C * H * W);
    expect(await ds.load(0, out, 0)).toBe(1);
    const before = torch.memory().liveTensors;
    const expected: [number, RegExp][] = [
      [1, /no 'label' tensor/], [2, /no 'latent' tensor/], [3, /shape \[2, 4, 2, 4\], expected \[2, 4, 2, 3\]/],
      [4, /'label' is 1\.5/], [5, /not below numClasses 3/], [6, /dtype int32/], [7, /non-finite/], [8, /not a safetensors file/],
    ];
    for (const [i, re] of expected) {
      const err = (await ds.load(i, out, 0).then(() => null, (e: unknown) => e)) as (Error & { code?: string }) | null;
      expect(err, ds.files[i]).toBeInstanceOf(TorchError);
      expect(err!.message).toContain(ds.files[i]);
      expect(err!.message).toMatch(re);
      expect(err!.code).toBe('E_FORMAT');
    }
    expect(torch.memory().liveTensors).toBe(before);
    // the first file fixes the format: a folder starting with a bad one fails at construction
    const worse = join(root, 'worse');
    mkdirSync(worse);
    torch.scope(() => torch.save({ latent: torch.zeros([C, H, W]), label: torch.scalarTensor(0) }, join(worse, 'a.safetensors')));
    expect(() => new LatentFolderDataset(worse)).toThrow(/a\.safetensors.*\(2, C, H, W\)/);
    expect(() => new LatentFolderDataset(join(root, 'nothing-here'))).toThrow(TorchError);
    // a file deleted after listing: an E_IO error naming it
    const gone = new LatentFolderDataset(join(root, 'bf16'));
    rmSync(gone.files[0]!);
    await expect(gone.load(0, out, 0)).rejects.toMatchObject({ code: 'E_IO', message: expect.stringContaining(gone.files[0]!) });
    mkdirSync(join(root, 'empty'));
    expect(() => new LatentFolderDataset(join(root, 'empty'))).toThrow(/no \.safetensors/);
  });
});
