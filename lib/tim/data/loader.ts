/**
 * DataLoader: batches of a Dataset in the official TiM sample order (see sampler.ts), sharded by
 * rank, resumable from a small state object, with the next batches loaded while the caller computes.
 *
 *   const loader = new DataLoader(dataset, { batchSize: 64, seed: 0, state: ckpt.data });
 *   for (;;) {
 *     const { x, y } = await loader.next();     // x (B,C,H,W) float32, y (B) int64
 *     ...train step...
 *     ckpt.data = loader.state;                 // {epoch, index, seed}: resume continues here
 *   }
 *
 * Loading happens on host memory only (file reads, decoding): no tensor is made until next()
 * hands a batch over, so batches belong to the caller's scope like any other tensor it makes.
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import type { Device } from '../../torch/dtype.js';
import { argError } from '../../torch/errors.js';
import { ShardedOrder, checkSeed, sampleUniform } from './sampler.js';

/** A source of labelled samples of one shape. */
export interface Dataset {
  /** Where the data comes from (a folder, 'mnist:train'...), for messages. */
  readonly name: string;
  readonly length: number;
  /** [C, H, W] of every sample. */
  readonly sampleShape: readonly [number, number, number];
  /** Labels are in [0, numClasses) when known. */
  readonly numClasses: number | null;
  /**
   * Writes sample `index` (C*H*W float32, CHW order) into `out` and resolves to its label.
   * `u` in [0, 1) is this sample's reproducible random number for the epoch (latents: the flip).
   * Rejects with an error that names the file and what is wrong with it.
   */
  load(index: number, out: Float32Array, u: number): Promise<number>;
}

/** Where a loader stands: the next sample it will read is `index` of this rank's slice of `epoch`. */
export interface LoaderState {
  epoch: number;
  index: number;
  seed: number;
}

export interface LoaderOptions {
  /** Samples per batch on this rank (the official per-device batch_size). */
  batchSize: number;
  /** Epoch e is shuffled with seed + e (default 0). A restored state must carry the same seed. */
  seed?: number;
  /** This process's rank and the number of ranks: each takes a disjoint slice of every epoch. */
  rank?: number;
  worldSize?: number;
  /** false: every epoch in dataset order (evaluation). Default true. */
  shuffle?: boolean;
  /**
   * true (default, the official loader): one endless stream of samples; a batch that reaches the
   * end of an epoch continues into the next, so no sample is ever dropped. false: batches stay
   * inside an epoch and the incomplete last one is dropped (torch DataLoader drop_last=True); every
   * rank then has the same number of batches per epoch.
   */
  crossEpochs?: boolean;
  /** Batches loaded ahead of the one being used (default 1; 0 loads each batch when asked). */
  prefetch?: number;
  /** Where batches go (default 'cpu'). */
  device?: Device;
  /** Continue from a state saved by `loader.state`. */
  state?: LoaderState;
}

export interface Batch {
  /** (B, C, H, W) float32 on the loader's device. */
  x: Tensor;
  /** (B) int64 labels. */
  y: Tensor;
  /** Dataset indices of the samples, in batch order. */
  indices: Int32Array;
  /** The loader state right after this batch (what a checkpoint taken now must store). */
  state: LoaderState;
}

/** Time spent loading versus time next() had to wait: overlap = 1 - waitMs / loadMs. */
export interface LoaderStats {
  batches: number;
  /** Sum over batches of the wall time from the start of its loading to its end. */
  loadMs: number;
  /** Sum over next() calls of the time spent waiting for the batch's data. */
  waitMs: number;
}

interface Plan {
  indices: Int32Array;
  /** Epoch of each sample (a batch can span two epochs). */
  epochs: Int32Array;
  after: { epoch: number; index: number };
}

interface HostBatch {
  x: Float32Array;
  y: BigInt64Array;
  ms: number;
}

interface Pending {
  plan: Plan;
  promise: Promise<HostBatch>;
}

function intOpt(v: unknown, name: string, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw argError('type', `DataLoader: ${name} must be an integer, got ${String(v)}`);
  if (v < min) throw argError('range', `DataLoader: ${name} must be >= ${min}, got ${v}`);
  return v;
}

export class DataLoader implements AsyncDisposable {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly seed: number;
  readonly rank: number;
  readonly worldSize: number;
  readonly shuffle: boolean;
  readonly crossEpochs: boolean;
  readonly prefetch: number;
  readonly device: Device;
  private readonly order: ShardedOrder;
  private readonly sampleNumel: number;
  /** Position after the last batch handed out. */
  private cursor: { epoch: number; index: number };
  /** Position after the last batch scheduled for loading. */
  private planned: { epoch: number; index: number };
  private pending: Pending[] = [];
  private closed = false;
  private readonly _stats: LoaderStats = { batches: 0, loadMs: 0, waitMs: 0 };

  constructor(dataset: Dataset, o: LoaderOptions) {
    if (!dataset || typeof dataset.load !== 'function' || !Number.isInteger(dataset.length)) {
      throw argError('type', 'DataLoader: dataset must implement the Dataset interface (length, sampleShape, load)');
    }
    if (!o || typeof o !== 'object') throw argError('type', 'DataLoader: options must be an object with batchSize');
    this.dataset = dataset;
    this.batchSize = intOpt(o.batchSize, 'batchSize', NaN, 1);
    if (Number.isNaN(this.batchSize)) throw argError('type', 'DataLoader: batchSize is required');
    this.worldSize = intOpt(o.worldSize, 'worldSize', 1, 1);
    this.rank = intOpt(o.rank, 'rank', 0, 0);
    if (this.rank >= this.worldSize) throw argError('range', `DataLoader: rank ${this.rank} is not below worldSize ${this.worldSize}`);
    this.prefetch = intOpt(o.prefetch, 'prefetch', 1, 0);
    this.shuffle = o.shuffle ?? true;
    this.crossEpochs = o.crossEpochs ?? true;
    this.device = o.device ?? 'cpu';
    if (o.seed !== undefined) checkSeed(o.seed, 'DataLoader');
    if (o.state !== undefined) {
      const s = o.state as Partial<LoaderState> | null;
      if (!s || typeof s !== 'object') throw argError('type', 'DataLoader: state must be an object {epoch, index, seed}', 'E_STATE');
      for (const k of ['epoch', 'index', 'seed'] as const) {
        if (typeof s[k] !== 'number' || !Number.isSafeInteger(s[k]) || s[k]! < 0) {
          throw argError('type', `DataLoader: state.${k} must be a non-negative integer, got ${String(s[k])}`, 'E_STATE');
        }
      }
      if (o.seed !== undefined && o.seed !== s.seed) {
        throw argError('range', `DataLoader: the state was saved with seed ${s.seed} but the options ask for seed ${o.seed}`, 'E_STATE');
      }
    }
    this.seed = o.state?.seed ?? o.seed ?? 0;
    const n = dataset.length;
    if (n < this.worldSize) throw argError('range', `DataLoader: ${dataset.name} has ${n} samples, fewer than worldSize ${this.worldSize}`, 'E_DATA');
    this.order = new ShardedOrder(n, { seed: this.seed, rank: this.rank, worldSize: this.worldSize, shuffle: this.shuffle });
    if (!this.crossEpochs && this.order.minSliceLength < this.batchSize) {
      throw argError('range', `DataLoader: ${dataset.name} gives each of ${this.worldSize} rank(s) ${this.order.minSliceLength} samples per epoch, fewer than batchSize ${this.batchSize}; with crossEpochs: false no batch would be complete`, 'E_DATA');
    }
    const [c, h, w] = dataset.sampleShape;
    this.sampleNumel = c * h * w;
    const start = o.state ? { epoch: o.state.epoch, index: o.state.index } : { epoch: 0, index: 0 };
    const limit = this.crossEpochs ? this.order.slice(start.epoch).length : this.order.minSliceLength;
    if (start.index > limit) {
      throw argError('range', `DataLoader: state index ${start.index} is past the end of epoch ${start.epoch} (${limit} samples on rank ${this.rank} of ${this.worldSize})`, 'E_STATE');
    }
    this.cursor = this.normalize(start);
    this.planned = { ...this.cursor };
  }

  /** The position after the last batch returned by next(); save it to resume there. */
  get state(): LoaderState {
    return { epoch: this.cursor.epoch, index: this.cursor.index, seed: this.seed };
  }

  get stats(): LoaderStats {
    return { ...this._stats };
  }

  /** Complete batches per epoch when batches stay inside epochs; the average number otherwise. */
  get batchesPerEpoch(): number {
    return this.crossEpochs ? this.dataset.length / this.worldSize / this.batchSize : Math.floor(this.order.minSliceLength / this.batchSize);
  }

  /** The next batch. Loads of the following `prefetch` batches start before this one is awaited. */
  async next(): Promise<Batch> {
    if (this.closed) throw argError('type', 'DataLoader: next() after close()', 'E_CLOSED');
    // Waiting counts from here: scheduling runs the synchronous start of each load (file opens,
    // header parsing) on this thread, which is time the caller does not get to compute in.
    const t0 = performance.now();
    while (this.pending.length < 1 + this.prefetch) this.schedule();
    const p = this.pending.shift()!;
    let host: HostBatch;
    try {
      host = await p.promise;
    } catch (e) {
      // Nothing moves on: the state still points at the failed batch and later loads are dropped,
      // so a retry (or a resume from the saved state) reads the same samples again.
      const rest = this.pending;
      this.pending = [];
      this.planned = { ...this.cursor };
      await Promise.allSettled(rest.map((r) => r.promise));
      throw e;
    }
    this._stats.waitMs += performance.now() - t0;
    this._stats.loadMs += host.ms;
    this._stats.batches++;
    if (this.closed) throw argError('type', 'DataLoader: closed while next() was waiting', 'E_CLOSED');
    this.cursor = p.plan.after;
    const [c, h, w] = this.dataset.sampleShape;
    const b = p.plan.indices.length;
    // Zero-copy: the tensors keep the freshly filled host buffers alive.
    let x = torch.fromBuffer(host.x, 'float32', [b, c, h, w]);
    let y = torch.fromBuffer(host.y, 'int64', [b]);
    if (this.device !== 'cpu') {
      const [xd, yd] = [x.to(this.device), y.to(this.device)];
      x.dispose();
      y.dispose();
      [x, y] = [xd, yd];
    }
    return { x, y, indices: p.plan.indices, state: this.state };
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Batch, void, undefined> {
    while (!this.closed) yield await this.next();
  }

  /** Stops prefetching and waits for loads in flight (so no file stays open). */
  async close(): Promise<void> {
    this.closed = true;
    const rest = this.pending;
    this.pending = [];
    await Promise.allSettled(rest.map((r) => r.promise));
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** A position moved past the end of its epoch goes to the start of the next one. */
  private normalize(p: { epoch: number; index: number }): { epoch: number; index: number } {
    const limit = this.crossEpochs ? this.order.slice(p.epoch).length : this.order.minSliceLength;
    const atEnd = this.crossEpochs ? p.index >= limit : p.index + this.batchSize > limit;
    return atEnd ? { epoch: p.epoch + 1, index: 0 } : p;
  }

  private plan(from: { epoch: number; index: number }): Plan {
    const B = this.batchSize;
    const indices = new Int32Array(B);
    const epochs = new Int32Array(B);
    let { epoch, index } = from;
    let k = 0;
    while (k < B) {
      const slice = this.order.slice(epoch);
      const end = this.crossEpochs ? slice.length : this.order.minSliceLength;
      while (k < B && index < end) {
        indices[k] = slice[index]!;
        epochs[k++] = epoch;
        index++;
      }
      if (k < B) {
        epoch++;
        index = 0;
      }
    }
    return { indices, epochs, after: this.normalize({ epoch, index }) };
  }

  private schedule(): void {
    const plan = this.plan(this.planned);
    this.planned = plan.after;
    const promise = this.load(plan);
    // Rejections surface in next(); this only keeps an unawaited prefetch from being "unhandled".
    promise.catch(() => {});
    this.pending.push({ plan, promise });
  }

  private async load(plan: Plan): Promise<HostBatch> {
    const t0 = performance.now();
    const b = plan.indices.length;
    const n = this.sampleNumel;
    const x = new Float32Array(b * n);
    const y = new BigInt64Array(b);
    const labels = await Promise.all(
      Array.from(plan.indices, (idx, k) => this.dataset.load(idx, x.subarray(k * n, (k + 1) * n), sampleUniform(this.seed, plan.epochs[k]!, idx))),
    );
    for (let k = 0; k < b; k++) y[k] = BigInt(labels[k]!);
    return { x, y, ms: performance.now() - t0 };
  }
}
