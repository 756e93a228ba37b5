/**
 * Text-to-image training data in the official layout (tim/data/t2i_data.py T2IDatasetMS,
 * tim/data/sampler_utils.py get_packed_batch_sampler; configs/t2i/*.yaml data.dataset):
 *
 *   jsonl_dir     one JSON object a line: {"image_file": path under root_dir, "captions": [str, ...],
 *                 "bucket": "...-HxW"}; line k is sample k. Other fields are allowed and unused.
 *   packed_json   a JSON list of batches, each a list of sample indices (lines of the jsonl): a batch
 *                 is one bucket, so every batch may have its own size and aspect ratio.
 *   root_dir      the folder image_file is relative to.
 *
 * A sample (get_one_data): the image converted to RGB, resized (Pillow bicubic, no crop) to the
 * bucket's H x W each rounded down to a multiple of 32 (`int(int(h)/32)*32`), scaled to [-1, 1];
 * the caption is one of its captions passed through `.encode('unicode-escape').decode('utf-8')`.
 *
 * The batch order is get_packed_batch_sampler's for one process: epoch e is
 * `torch.randperm(len(packed), generator=manual_seed(seed + e))` over the packed batches, epochs
 * concatenated (ShardedOrder, bit-identical to torch's randperm), so a position {epoch, index} is
 * all a resume needs.
 *
 * Where this differs from the official code, and why:
 *   - the caption choice: the official `random.choice(captions)` runs in DataLoader worker
 *     processes whose Python RNG no checkpoint holds; here it is a hash of (seed, epoch, sample),
 *     uniform over the captions, so a resumed run picks the same captions as an uninterrupted one.
 *   - a missing or unreadable image: the official prints a warning and drops the sample (the batch
 *     shrinks); here it is an error naming the file (E_IO / E_FORMAT), and malformed jsonl or packed
 *     JSON (bad fields, indices out of range, a batch mixing sizes, which the official collate would
 *     fail on in torch.stack) are E_DATA errors when the dataset is opened, not hours into a run.
 *   - data parallel is not supported (one process reads the whole stream).
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as torch from '../../torch/index.js';
import { TorchError, argError } from '../../torch/errors.js';
import type { Tensor } from '../../torch/tensor.js';
import type { Device } from '../../torch/dtype.js';
import { decodeImageHost } from '../../torch/io/image.js';
import { unicodeEscapeCaption } from '../../text/caption_transform.js';
import { ShardedOrder, checkSeed, sampleUniform } from './sampler.js';
import { convertChannels, resize, toUnitRange } from './transforms.js';
import type { LoaderState } from './loader.js';

/** One line of the jsonl, checked. */
export interface T2IRecord {
  imageFile: string;
  captions: string[];
  bucket: string;
  /** the bucket's height and width rounded down to multiples of 32 */
  height: number;
  width: number;
}

export interface T2IDatasetPaths {
  /** data.dataset.root_dir */
  rootDir: string;
  /** data.dataset.packed_json */
  packedJson: string;
  /** data.dataset.jsonl_dir (the official name; it is a file) */
  jsonlDir: string;
}

function dataError(msg: string): TorchError {
  return new TorchError(msg, 'E_DATA');
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new TorchError(`'${path}': cannot read the ${what}: ${(e as Error).message}`, 'E_IO');
  }
}

/**
 * The bucket's image size, as get_one_data: the text after the last '-' is 'HxW'; each side
 * rounded down to a multiple of 32. Null when the name does not follow that form or a side
 * rounds to 0.
 */
export function bucketSize(bucket: string): { height: number; width: number } | null {
  const parts = bucket.split('-').pop()!.split('x');
  if (parts.length !== 2 || !parts.every((p) => /^\s*[+]?\d+\s*$/.test(p))) return null;
  const [h, w] = parts.map((p) => Math.floor(Number(p) / 32) * 32) as [number, number];
  if (!(h > 0 && w > 0)) return null;
  return { height: h, width: w };
}

/** Parses the jsonl text (one record a line; a final newline is allowed). */
export function parseT2IJsonl(text: string, path: string): T2IRecord[] {
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length === 0) throw dataError(`'${path}': the jsonl has no samples`);
  return lines.map((line, k) => {
    const where = `'${path}' line ${k + 1}`;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch (e) {
      throw dataError(`${where}: not JSON (${(e as Error).message})`);
    }
    if (o === null || typeof o !== 'object' || Array.isArray(o)) throw dataError(`${where}: must be an object {image_file, captions, bucket}`);
    const r = o as Record<string, unknown>;
    if (typeof r.image_file !== 'string' || r.image_file === '') throw dataError(`${where}: image_file must be a non-empty string`);
    if (!Array.isArray(r.captions) || r.captions.length === 0 || !r.captions.every((c) => typeof c === 'string')) {
      throw dataError(`${where}: captions must be a non-empty list of strings`);
    }
    if (typeof r.bucket !== 'string') throw dataError(`${where}: bucket must be a string like '1024-768x1344' (its last 'HxW' is the size)`);
    const size = bucketSize(r.bucket);
    if (!size) throw dataError(`${where}: bucket '${r.bucket}' does not end in HxW with both sides at least 32`);
    return { imageFile: r.image_file, captions: r.captions as string[], bucket: r.bucket, ...size };
  });
}

/** Parses the packed-bucket JSON and checks it against the records: indices in range, one size a batch. */
export function parsePackedBuckets(text: string, path: string, records: readonly T2IRecord[]): number[][] {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw dataError(`'${path}': the packed bucket file is not JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(o) || o.length === 0) throw dataError(`'${path}': the packed bucket file must be a non-empty list of batches (lists of sample indices)`);
  return o.map((b, i) => {
    if (!Array.isArray(b) || b.length === 0) throw dataError(`'${path}': batch ${i} must be a non-empty list of sample indices`);
    for (const j of b) {
      if (!Number.isInteger(j) || j < 0 || j >= records.length) {
        throw dataError(`'${path}': batch ${i} names sample ${JSON.stringify(j)}, but the jsonl has samples 0..${records.length - 1}`);
      }
    }
    const first = records[b[0] as number]!;
    const odd = (b as number[]).find((j) => records[j]!.height !== first.height || records[j]!.width !== first.width);
    if (odd !== undefined) {
      const r = records[odd]!;
      throw dataError(`'${path}': batch ${i} mixes image sizes (sample ${b[0]} is ${first.height}x${first.width}, sample ${odd} is ${r.height}x${r.width}); a batch must be one bucket`);
    }
    return b as number[];
  });
}

/** The captioned images and their packed batches. */
export class T2IDataset {
  readonly name: string;
  readonly records: readonly T2IRecord[];
  readonly batches: readonly (readonly number[])[];

  constructor(readonly paths: T2IDatasetPaths) {
    if (!paths || typeof paths !== 'object') throw argError('type', 'T2IDataset: paths {rootDir, packedJson, jsonlDir} required');
    for (const k of ['rootDir', 'packedJson', 'jsonlDir'] as const) {
      if (typeof paths[k] !== 'string' || paths[k] === '') throw argError('type', `T2IDataset: ${k} must be a non-empty string`);
    }
    this.name = paths.jsonlDir;
    this.records = parseT2IJsonl(readText(paths.jsonlDir, 'jsonl of the T2I dataset'), paths.jsonlDir);
    this.batches = parsePackedBuckets(readText(paths.packedJson, 'packed bucket JSON'), paths.packedJson, this.records);
  }

  /** Images in the jsonl. */
  get length(): number {
    return this.records.length;
  }

  /** The caption of sample `index` in `epoch` (unicode-escaped as the official loader does). */
  caption(index: number, seed: number, epoch: number): string {
    const caps = this.records[index]!.captions;
    const k = Math.min(caps.length - 1, Math.floor(sampleUniform(seed, epoch, index) * caps.length));
    return unicodeEscapeCaption(caps[k]!);
  }

  /** Sample `index`'s image resized to its bucket, into `out` (3·H·W floats, CHW, in [-1, 1]). */
  async loadImage(index: number, out: Float32Array): Promise<void> {
    const r = this.records[index];
    if (!r) throw argError('range', `T2IDataset: index ${index} out of range [0, ${this.records.length})`, 'E_INDEX');
    const path = join(this.paths.rootDir, r.imageFile);
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (e) {
      throw new TorchError(`'${path}' (sample ${index} of '${this.name}'): cannot read the image: ${(e as Error).message}`, 'E_IO');
    }
    const img = decodeImageHost(bytes, path);
    if (img.width < 1 || img.height < 1) throw new TorchError(`'${path}': the image is empty (${img.width}x${img.height})`, 'E_FORMAT');
    // Image.open(...).convert("RGB").resize((width, height), BICUBIC), ToTensor, Normalize(0.5, 0.5)
    toUnitRange(resize(convertChannels(img, 3), r.width, r.height, 'bicubic'), out);
  }
}

/** One packed batch: the images of one bucket and their captions. */
export interface T2IBatch {
  /** (B, 3, H, W) float32 in [-1, 1] on the loader's device (the caller's to dispose) */
  images: Tensor;
  captions: string[];
  /** the samples (jsonl lines) in batch order */
  indices: number[];
  /** the stream position right after this batch */
  state: LoaderState;
}

export interface T2IBatchLoaderOptions {
  seed: number;
  device?: Device;
  /** start here ({epoch, index} of the batch stream; seed must be this loader's) */
  globalState?: LoaderState;
  /** batches loaded ahead on the host (default 1; 0: none) */
  prefetch?: number;
}

interface HostBatch {
  data: Float32Array;
  shape: [number, number, number, number];
  captions: string[];
  indices: number[];
  state: LoaderState;
}

/**
 * The endless, resumable stream of packed batches (get_packed_batch_sampler on one process).
 * Decoding happens on the host ahead of time; tensors are made only in next().
 */
export class T2IBatchLoader {
  readonly dataset: T2IDataset;
  readonly seed: number;
  readonly device: Device;
  private readonly order: ShardedOrder;
  /** where the next batch to load on the host stands */
  private pos: { epoch: number; index: number };
  /** where the next batch next() hands out stands */
  private handed: { epoch: number; index: number };
  private readonly queue: Promise<HostBatch>[] = [];
  private readonly prefetch: number;
  private closed = false;

  constructor(dataset: T2IDataset, o: T2IBatchLoaderOptions) {
    if (!(dataset instanceof T2IDataset)) throw argError('type', 'T2IBatchLoader: dataset must be a T2IDataset');
    if (!o || typeof o !== 'object') throw argError('type', 'T2IBatchLoader: options {seed} required');
    checkSeed(o.seed, 'T2IBatchLoader');
    this.dataset = dataset;
    this.seed = o.seed;
    this.device = o.device ?? 'cpu';
    this.prefetch = o.prefetch ?? 1;
    if (!Number.isInteger(this.prefetch) || this.prefetch < 0) throw argError('range', `T2IBatchLoader: prefetch must be a non-negative integer, got ${o.prefetch}`);
    this.order = new ShardedOrder(dataset.batches.length, { seed: o.seed, rank: 0, worldSize: 1, shuffle: true });
    const s = o.globalState;
    if (s !== undefined) {
      if (!s || typeof s !== 'object' || !Number.isSafeInteger(s.epoch) || s.epoch < 0 || !Number.isSafeInteger(s.index) || s.index < 0) {
        throw argError('type', 'T2IBatchLoader: globalState must be {epoch, index, seed} of non-negative integers', 'E_STATE');
      }
      if (s.seed !== o.seed) throw argError('range', `T2IBatchLoader: globalState was saved with seed ${s.seed}, this loader has seed ${o.seed}`, 'E_STATE');
      if (s.index > dataset.batches.length) {
        throw argError('range', `T2IBatchLoader: globalState index ${s.index} is past the ${dataset.batches.length} packed batches (another dataset?)`, 'E_STATE');
      }
    }
    this.pos = s ? { epoch: s.epoch, index: s.index } : { epoch: 0, index: 0 };
    this.handed = { ...this.pos };
  }

  /** Where the stream stands: the next batch is packed batch perm_epoch[index]. */
  get globalState(): LoaderState {
    const n = this.dataset.batches.length;
    const { epoch, index } = this.handed;
    return index >= n ? { epoch: epoch + 1, index: 0, seed: this.seed } : { epoch, index, seed: this.seed };
  }

  /** Batches handed out since the start of the stream (epoch · batches + index). */
  get globalSamples(): number {
    const s = this.globalState;
    return s.epoch * this.dataset.batches.length + s.index;
  }

  private loadNext(): Promise<HostBatch> {
    const n = this.dataset.batches.length;
    if (this.pos.index >= n) this.pos = { epoch: this.pos.epoch + 1, index: 0 };
    const { epoch, index } = this.pos;
    this.pos = { epoch, index: index + 1 };
    const state: LoaderState = { epoch, index: index + 1, seed: this.seed };
    const which = this.order.slice(epoch)[index]!;
    const indices = [...this.dataset.batches[which]!];
    const first = this.dataset.records[indices[0]!]!;
    const plane = 3 * first.height * first.width;
    const data = new Float32Array(plane * indices.length);
    const captions = indices.map((i) => this.dataset.caption(i, this.seed, epoch));
    return Promise.all(indices.map((i, k) => this.dataset.loadImage(i, data.subarray(k * plane, (k + 1) * plane))))
      .then(() => ({ data, shape: [indices.length, 3, first.height, first.width], captions, indices, state }));
  }

  /** The next packed batch. */
  async next(): Promise<T2IBatch> {
    if (this.closed) throw new TorchError('T2IBatchLoader was closed', 'E_DISPOSED');
    while (this.queue.length < this.prefetch + 1) {
      const p = this.loadNext();
      p.catch(() => {}); // a prefetched failure is reported when its batch is asked for
      this.queue.push(p);
    }
    const h = await this.queue.shift()!;
    this.handed = { epoch: h.state.epoch, index: h.state.index };
    // Zero-copy on the CPU: the tensor keeps the host buffer alive.
    let images = torch.fromBuffer(h.data, 'float32', [...h.shape]);
    if (this.device !== 'cpu') {
      const d = images.to(this.device);
      images.dispose();
      images = d;
    }
    return { images, captions: h.captions, indices: h.indices, state: { ...h.state } };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.queue.splice(0));
  }
}
