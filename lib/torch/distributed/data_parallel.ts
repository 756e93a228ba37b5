/**
 * Data parallelism for the trainer, on torch.distributed (c10d: TCPStore + Gloo, or NCCL on CUDA
 * builds that have it). Every rank holds the whole model; per optimizer step each rank runs its own
 * shard of the global batch, then:
 *
 *   allReduceGradients  gradients flattened into ~25 MB buckets (reverse parameter order, one dtype
 *                       per bucket), all-reduced (sum), divided by worldSize, copied back — so the
 *                       clip, the optimizer, the schedule and the EMA then run identically everywhere
 *   allReduceSum        a few host numbers (the step's loss terms, the stop flag) summed in float64
 *   broadcast           rank 0's parameters and buffers into every rank (start and resume)
 *   checkInSync         a float64 checksum of the weights compared across ranks (at checkpoints)
 *
 * Collectives pair up by call order (c10d), so every rank must make the same calls in the same
 * order: the trainer calls these at the same points of every step on every rank. A dead peer or one
 * that does not answer within timeoutMs makes the pending call reject with E_DIST naming the rank
 * (lib/torch/distributed/process_group.ts); the group is then broken and the process should exit non-zero.
 */
import * as torch from '../index.js';
import * as dist from './process_group.js';
import { TorchError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import type { DType, Device } from '../dtype.js';

/** Bucket size of the gradient all-reduce (DDP's default bucket_cap_mb is 25). */
export const BUCKET_BYTES = 25 * 2 ** 20;

export interface DataParallelOptions extends dist.InitOptions {
  /** bytes per gradient bucket (default 25 MB) */
  bucketBytes?: number;
}

const ELEMENT_BYTES: Record<string, number> = {
  float64: 8, float32: 4, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

/** Dtypes Gloo cannot reduce or send travel as one it can (exact: bfloat16 ⊂ float32, bool as 0/1). */
const COMM_DTYPE: Partial<Record<string, DType>> = { bfloat16: 'float32', bool: 'uint8', int16: 'int32' };

/**
 * Groups tensors into buckets of at most `bytes` each (a bigger tensor is a bucket of its own),
 * same dtype and device within a bucket, in the order given.
 */
export function planBuckets(tensors: readonly Tensor[], bytes: number): number[][] {
  const buckets: number[][] = [];
  const open = new Map<string, { idx: number[]; bytes: number }>();
  tensors.forEach((t, i) => {
    const key = `${t.dtype}@${t.device}`;
    const size = t.numel * (ELEMENT_BYTES[t.dtype] ?? 4);
    let b = open.get(key);
    if (b && b.bytes + size > bytes && b.idx.length > 0) {
      buckets.push(b.idx);
      b = undefined;
    }
    if (!b) {
      b = { idx: [], bytes: 0 };
      open.set(key, b);
    }
    b.idx.push(i);
    b.bytes += size;
  });
  for (const b of open.values()) if (b.idx.length) buckets.push(b.idx);
  return buckets;
}

export class DataParallel {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly backend: dist.Backend;
  readonly timeoutMs: number;
  readonly bucketBytes: number;
  /** gradient all-reduces so far: calls, total wall ms (flatten + collective + copy back), bytes of the last */
  readonly stats = { gradientCalls: 0, gradientMs: 0, gradientBytes: 0 };
  /** whether join() initialized the group (and destroy() should close it) */
  private readonly owned: boolean;
  private broken = false;

  private constructor(p: { rank: number; worldSize: number; localRank: number; backend: dist.Backend; timeoutMs: number; bucketBytes: number; owned: boolean }) {
    this.rank = p.rank;
    this.worldSize = p.worldSize;
    this.localRank = p.localRank;
    this.backend = p.backend;
    this.timeoutMs = p.timeoutMs;
    this.bucketBytes = p.bucketBytes;
    this.owned = p.owned;
  }

  /**
   * Joins the process group (options, then RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT /
   * TIM_DIST_TIMEOUT_MS from the env), or uses the one the caller already initialized.
   */
  static async join(o: DataParallelOptions = {}): Promise<DataParallel> {
    const bucketBytes = o.bucketBytes ?? BUCKET_BYTES;
    if (!Number.isSafeInteger(bucketBytes) || bucketBytes < 1) throw new TorchError(`data parallel: bucketBytes must be a positive integer, got ${bucketBytes}`, 'E_DIST');
    const { bucketBytes: _b, ...initOpts } = o;
    if (dist.isInitialized()) {
      const r = dist.resolveInitOptions({ ...initOpts, rank: dist.rank(), worldSize: dist.worldSize(), localRank: dist.localRank() });
      return new DataParallel({ rank: r.rank, worldSize: r.worldSize, localRank: r.localRank, backend: dist.backend(), timeoutMs: r.timeoutMs, bucketBytes, owned: false });
    }
    const r = dist.resolveInitOptions(initOpts);
    await dist.init(initOpts);
    return new DataParallel({ rank: r.rank, worldSize: r.worldSize, localRank: r.localRank, backend: r.backend, timeoutMs: r.timeoutMs, bucketBytes, owned: true });
  }

  /** Where collectives' tensors must live: the GPU for NCCL, host memory for Gloo. */
  private commDevice(d: Device): Device {
    return this.backend === 'nccl' ? d : 'cpu';
  }

  /** Where host numbers go for a collective: this rank's GPU for NCCL (one process per GPU), else the CPU. */
  private get numbersDevice(): Device {
    return this.backend === 'nccl' ? `cuda:${this.localRank}` : 'cpu';
  }

  /** Runs a collective; a failure marks the group broken and says what the trainer was doing. */
  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.broken) throw new TorchError(`data parallel: the process group is broken (an earlier collective failed); ${what} not attempted`, 'E_DIST');
    try {
      return await fn();
    } catch (e) {
      this.broken = true;
      if (e instanceof TorchError && e.code === 'E_DIST') {
        const err = new TorchError(`${what}: ${e.message}`, 'E_DIST');
        (err as Error & { cause?: unknown }).cause = e;
        throw err;
      }
      throw e;
    }
  }

  /**
   * Flattens each bucket of `tensors` into one contiguous buffer (in the communication dtype and
   * device), runs `op` on every buffer — all issued before any is awaited, which c10d allows since
   * order is kept — then copies the results back into the tensors when `writeBack` says so.
   */
  private async bucketed(tensors: Tensor[], op: (flat: Tensor) => Promise<unknown>, writeBack: boolean, after?: (flat: Tensor) => void): Promise<void> {
    await torch.scopeAsync(async () => {
      const flats: { flat: Tensor; members: Tensor[] }[] = [];
      for (const idx of planBuckets(tensors, this.bucketBytes)) {
        const members = idx.map((i) => tensors[i]!);
        const first = members[0]!;
        const dtype = COMM_DTYPE[first.dtype] ?? first.dtype;
        const device = this.commDevice(first.device);
        const flat = torch.noGrad(() => {
          const parts = members.map((t) => t.detach().reshape([-1]));
          const cat = parts.length === 1 ? parts[0]!.clone() : torch.cat(parts);
          return cat.dtype === dtype && cat.device === device ? cat.contiguous() : cat.to({ dtype, device }).contiguous();
        });
        flats.push({ flat, members });
      }
      await Promise.all(flats.map((f) => op(f.flat)));
      torch.noGrad(() => {
        for (const { flat, members } of flats) {
          after?.(flat);
          if (!writeBack) continue;
          let off = 0;
          for (const t of members) {
            const n = t.numel;
            t.copy_(flat.narrow(0, off, n).view(t.shape));
            off += n;
          }
        }
      });
    });
  }

  /**
   * Replaces every gradient by the mean over ranks. Parameters without a gradient are skipped (as
   * on one process, where the optimizer then skips them too); all ranks must agree on which have one,
   * checked through `allReduceSum` by the caller (see gradient count in the trainer).
   */
  async allReduceGradients(params: readonly Tensor[], what = 'gradient all-reduce'): Promise<void> {
    await this.guard(what, () => torch.scopeAsync(async () => {
      // Reverse order: the last layers' gradients are ready first in backward, as DDP buckets them.
      const t0 = performance.now();
      const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null).reverse();
      if (grads.length === 0) return;
      const ws = this.worldSize;
      await this.bucketed(grads, (flat) => dist.allReduce(flat, 'sum'), true, (flat) => { flat.div_(ws); });
      this.stats.gradientCalls++;
      this.stats.gradientMs += performance.now() - t0;
      this.stats.gradientBytes = grads.reduce((n, g) => n + g.numel * (ELEMENT_BYTES[g.dtype] ?? 4), 0);
    }));
  }

  /** Sums a few numbers over the ranks (float64, exact for integers below 2^53). */
  async allReduceSum(values: readonly number[], what = 'metrics all-reduce'): Promise<number[]> {
    return this.guard(what, () => torch.scopeAsync(async () => {
      const t = torch.tensor(values.length ? [...values] : [0], { dtype: 'float64', device: this.numbersDevice });
      await dist.allReduce(t, 'sum');
      return Array.from(t.toTypedArray() as Float64Array).slice(0, values.length);
    }));
  }

  /** Every rank's `values` (same length everywhere), indexed by rank; float64, exact for integers below 2^53. */
  async allGatherNumbers(values: readonly number[], what = 'all-gather'): Promise<number[][]> {
    return this.guard(what, () => torch.scopeAsync(async () => {
      const t = torch.tensor([...values], { dtype: 'float64', device: this.numbersDevice });
      const g = await dist.allGather(t);
      return g.map((x) => Array.from(x.toTypedArray() as Float64Array));
    }));
  }

  /** Copies rank 0's values into `tensors` (in place) on every rank. */
  async broadcast(tensors: readonly Tensor[], what = 'broadcast from rank 0'): Promise<void> {
    const ts = [...tensors];
    if (ts.length === 0) return;
    await this.guard(what, () => this.bucketed(ts, (flat) => dist.broadcast(flat, 0), this.rank !== 0));
  }

  /**
   * Fails with E_DIST when the ranks' `tensors` differ: a float64 sum and absolute sum of every
   * tensor, gathered and compared exactly. After an all-reduce every rank applies the same update to
   * the same bytes, so any difference is a bug (or a rank that resumed from something else).
   */
  async checkInSync(tensors: readonly Tensor[], what = 'weights check'): Promise<void> {
    const mine = torch.scope(() => {
      let s = 0, a = 0;
      for (const t of tensors) {
        const d = t.detach().to('float64');
        s += d.sum().item() as number;
        a += d.abs().sum().item() as number;
      }
      return [s, a];
    });
    const all = await this.allGatherNumbers(mine, what);
    const bad = all.findIndex((v) => v[0] !== all[0]![0] || v[1] !== all[0]![1]);
    if (bad >= 0) {
      throw new TorchError(`${what}: the ranks' weights differ (rank 0 checksum ${all[0]!.join(', ')}, rank ${bad} ${all[bad]!.join(', ')}): they are out of sync`, 'E_DIST');
    }
  }

  /** Resolves when every rank got here (e.g. rank 0 finished writing a checkpoint). */
  async barrier(what = 'barrier'): Promise<void> {
    await this.guard(what, () => dist.barrier());
  }

  /**
   * Leaves the group if join() made it. After a failed collective the group is not destroyed (that
   * would wait up to timeoutMs for peers that are gone): the process is expected to exit.
   */
  async destroy(): Promise<void> {
    if (!this.owned || this.broken || !dist.isInitialized()) return;
    await dist.destroy();
  }
}
