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
 * Several ranks read the global stream of epochs dealt round-robin; `loader.globalState` is where
 * that global stream stands (the same for every rank, and independent of the number of ranks), and
 * `options.globalState` starts a rank there, so a run saved with N ranks resumes with M.
 *
 * Loading happens on host memory only (file reads, decoding): no tensor is made until next()
 * hands a batch over, so batches belong to the caller's scope like any other tensor it makes.
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import type { Device } from '../../torch/dtype.js';
import { argError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
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

/**
 * Where a loader stands: the next sample it will read is `index` of this rank's slice of `epoch`.
 * As a global state (`loader.globalState`, `options.globalState`): the next sample of the global
 * stream is element `index` of epoch `epoch`'s permutation — what a 1-rank loader's state says.
 */
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
  /** Continue from a state saved by `loader.state` (this rank's own position). */
  state?: LoaderState;
  /**
   * Continue from a position of the global stream (`loader.globalState` of a run with any number of
   * ranks): this rank starts at its first sample at or after it. Needs crossEpochs (or worldSize 1).
   */
  globalState?: LoaderState;
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
  /**
   * Rows of this batch's samples in the global batch (the worldSize·B samples all ranks read in
   * this step, in global stream order): sample k is row rows[k]. 0..B-1 on one rank. Null when the
   * global position is unknown (a rank-local `state` with worldSize > 1, or crossEpochs false).
   */
  rows: Int32Array | null;
}

/** Time spent loading versus time next() had to wait: overlap = 1 - waitMs / loadMs. */
export interface LoaderStats {
  batches: number;
  /** Sum over batches of the wall time from the start of its loading to its end. */
  loadMs: number;
  /** Sum over next() calls of the time spent waiting for the batch's data. */
  waitMs: number;
}

interface Pos { epoch: number; index: number }

interface Plan {
  indices: Int32Array;
  /** Epoch of each sample (a batch can span two epochs). */
  epochs: Int32Array;
  after: Pos;
  /** The global stream's position after this batch (null: unknown), and this batch's global rows. */
  globalAfter: Pos | null;
  rows: Int32Array | null;
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
  return v === undefined ? dflt : check.integer(v, name, 'DataLoader', min);
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
  private cursor: Pos;
  /** Position after the last batch scheduled for loading. */
  private planned: Pos;
  /** The same two in the global stream (null: unknown, see Batch.rows). */
  private globalCursor: Pos | null;
  private globalPlanned: Pos | null;
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
    if (o.state !== undefined && o.globalState !== undefined) {
      throw argError('type', 'DataLoader: give state or globalState, not both', 'E_STATE');
    }
    const given = o.state ?? o.globalState;
    const what = o.state !== undefined ? 'state' : 'globalState';
    if (given !== undefined) {
      const s = given as Partial<LoaderState> | null;
      if (!s || typeof s !== 'object') throw argError('type', `DataLoader: ${what} must be an object {epoch, index, seed}`, 'E_STATE');
      for (const k of ['epoch', 'index', 'seed'] as const) {
        if (typeof s[k] !== 'number' || !Number.isSafeInteger(s[k]) || s[k]! < 0) {
          throw argError('type', `DataLoader: ${what}.${k} must be a non-negative integer, got ${String(s[k])}`, 'E_STATE');
        }
      }
      if (o.seed !== undefined && o.seed !== s.seed) {
        throw argError('range', `DataLoader: the ${what} was saved with seed ${s.seed} but the options ask for seed ${o.seed}`, 'E_STATE');
      }
    }
    this.seed = given?.seed ?? o.seed ?? 0;
    const n = dataset.length;
    if (n < this.worldSize) throw argError('range', `DataLoader: ${dataset.name} has ${n} samples, fewer than worldSize ${this.worldSize}`, 'E_DATA');
    this.order = new ShardedOrder(n, { seed: this.seed, rank: this.rank, worldSize: this.worldSize, shuffle: this.shuffle });
    if (!this.crossEpochs && this.order.minSliceLength < this.batchSize) {
      throw argError('range', `DataLoader: ${dataset.name} gives each of ${this.worldSize} rank(s) ${this.order.minSliceLength} samples per epoch, fewer than batchSize ${this.batchSize}; with crossEpochs: false no batch would be complete`, 'E_DATA');
    }
    const [c, h, w] = dataset.sampleShape;
    this.sampleNumel = c * h * w;
    // With one rank the global stream is this rank's; with several it is known only when the batches
    // cross epochs (drop_last per rank breaks the round-robin) and the start was a global position.
    const globalKnown = this.worldSize === 1 || (this.crossEpochs && o.state === undefined);
    if (o.globalState !== undefined && !globalKnown) {
      throw argError('range', 'DataLoader: globalState needs crossEpochs: true when worldSize > 1', 'E_STATE');
    }
    let start: Pos = { epoch: 0, index: 0 };
    if (o.state) start = { epoch: o.state.epoch, index: o.state.index };
    if (o.globalState) {
      if (o.globalState.index > n) {
        throw argError('range', `DataLoader: globalState index ${o.globalState.index} is past the end of epoch ${o.globalState.epoch} (${n} samples)`, 'E_STATE');
      }
      start = this.localStart(o.globalState);
    }
    const limit = this.crossEpochs ? this.order.slice(start.epoch).length : this.order.minSliceLength;
    if (start.index > limit) {
      throw argError('range', `DataLoader: state index ${start.index} is past the end of epoch ${start.epoch} (${limit} samples on rank ${this.rank} of ${this.worldSize})`, 'E_STATE');
    }
    this.cursor = this.normalize(start);
    this.planned = { ...this.cursor };
    // (start is a global position here: o.state is excluded unless worldSize is 1, where both agree)
    this.globalCursor = !globalKnown ? null : this.worldSize === 1 ? { ...this.cursor } : this.normalizeGlobal(o.globalState ?? { epoch: 0, index: 0 });
    this.globalPlanned = this.globalCursor && { ...this.globalCursor };
  }

  /**
   * Where this rank starts so that, from global position g on, the ranks read the global stream dealt
   * round-robin: its first sample at or after g. Sample p of epoch e's permutation belongs to rank
   * (p - offs_e) mod worldSize (the official sampler's rotation), so this rank's slice of epoch e
   * holds positions start + worldSize·i with start = (rank + offs_e) % worldSize.
   */
  private localStart(g: Pos): Pos {
    const ws = this.worldSize;
    const start = (this.rank + this.order.offset(g.epoch)) % ws;
    return { epoch: g.epoch, index: g.index <= start ? 0 : Math.ceil((g.index - start) / ws) };
  }

  private normalizeGlobal(p: Pos): Pos {
    const n = this.dataset.length;
    return { epoch: p.epoch + Math.floor(p.index / n), index: p.index % n };
  }

  /** The position after the last batch returned by next(); save it to resume there. */
  get state(): LoaderState {
    return { epoch: this.cursor.epoch, index: this.cursor.index, seed: this.seed };
  }

  /**
   * Where the global stream stands after the last batch (every rank in lockstep has consumed the
   * same number of batches): the same on every rank and for any number of ranks, so a checkpoint
   * that stores it resumes with another worldSize (options.globalState). Equals `state` on one rank.
   * Throws E_STATE when unknown (started from a rank-local state with worldSize > 1, or crossEpochs
   * false with worldSize > 1).
   */
  get globalState(): LoaderState {
    if (!this.globalCursor) {
      throw argError('range', 'DataLoader: the global position is unknown (a rank-local state with worldSize > 1, or crossEpochs false)', 'E_STATE');
    }
    return { epoch: this.globalCursor.epoch, index: this.globalCursor.index, seed: this.seed };
  }

  /** Global samples consumed so far (epoch · N + index of globalState). */
  get globalSamples(): number {
    const g = this.globalState;
    return g.epoch * this.dataset.length + g.index;
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
      this.globalPlanned = this.globalCursor && { ...this.globalCursor };
      await Promise.allSettled(rest.map((r) => r.promise));
      throw e;
    }
    this._stats.waitMs += performance.now() - t0;
    this._stats.loadMs += host.ms;
    this._stats.batches++;
    if (this.closed) throw argError('type', 'DataLoader: closed while next() was waiting', 'E_CLOSED');
    this.cursor = p.plan.after;
    this.globalCursor = p.plan.globalAfter;
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
    return { x, y, indices: p.plan.indices, state: this.state, rows: p.plan.rows };
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
  private normalize(p: Pos): Pos {
    const limit = this.crossEpochs ? this.order.slice(p.epoch).length : this.order.minSliceLength;
    const atEnd = this.crossEpochs ? p.index >= limit : p.index + this.batchSize > limit;
    return atEnd ? { epoch: p.epoch + 1, index: 0 } : p;
  }

  private plan(from: Pos, globalFrom: Pos | null): Plan {
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
    let globalAfter: Pos | null = null;
    let rows: Int32Array | null = null;
    if (globalFrom && this.worldSize === 1) {
      globalAfter = null; // set below: one rank's stream is the global stream
      rows = Int32Array.from({ length: B }, (_, k) => k);
    } else if (globalFrom) {
      // The ranks' next B samples are together the next worldSize·B of the global stream; this rank's
      // are every worldSize-th of them, from the first that belongs to it: global sample G + q is
      // rank (G + q) mod worldSize's (the official rotation keeps that true across epochs).
      const ws = this.worldSize;
      const n = this.dataset.length;
      const g = ((globalFrom.epoch % ws) * (n % ws) + globalFrom.index) % ws; // G mod ws
      const first = (((this.rank - g) % ws) + ws) % ws;
      rows = new Int32Array(B);
      for (let k = 0; k < B; k++) rows[k] = first + ws * k;
      globalAfter = this.normalizeGlobal({ epoch: globalFrom.epoch, index: globalFrom.index + ws * B });
    }
    const after = this.normalize({ epoch, index });
    if (globalFrom && this.worldSize === 1) globalAfter = { ...after };
    return { indices, epochs, after, globalAfter, rows };
  }

  private schedule(): void {
    const plan = this.plan(this.planned, this.globalPlanned);
    this.planned = plan.after;
    this.globalPlanned = plan.globalAfter;
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
