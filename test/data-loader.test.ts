/**
 * DataLoader and its sample order: the permutation and sharding are the official get_train_sampler
 * (checked against Python's torch for the same seeds), shuffling is deterministic per seed, a
 * resumed loader continues exactly where an uninterrupted one would be, ranks take disjoint slices
 * that cover each epoch, prefetching changes nothing but timing and does overlap loading with
 * compute, failures leave the state on the failed batch, and no tensor is leaked.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { DataLoader, type Batch, type Dataset, type LoaderState } from '../lib/tim/data/loader.js';
import { ShardedOrder, randpermSeeded, sampleUniform } from '../lib/tim/data/sampler.js';
import { py } from './helpers/python.js';

/** Sample i is the constant image i (1x2x2), label i % 7; optional artificial latency and failures. */
class Synthetic implements Dataset {
  readonly name = 'synthetic';
  readonly sampleShape = [1, 2, 2] as const;
  readonly numClasses = 7;
  readonly starts: number[] = [];
  readonly us: number[] = [];
  constructor(readonly length: number, private readonly delayMs = 0, readonly failOn: Set<number> = new Set()) {}
  async load(index: number, out: Float32Array, u: number): Promise<number> {
    this.starts.push(index);
    this.us.push(u);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failOn.has(index)) throw Object.assign(new Error(`synthetic: sample ${index} is broken`), { code: 'E_FORMAT' });
    out.fill(index);
    return index % 7;
  }
}

/** Dataset indices of the next k batches (checking x and y agree with them), tensors freed. */
async function take(loader: DataLoader, k: number): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < k; i++) {
    const b: Batch = await loader.next();
    try {
      expect(b.x.shape).toEqual([loader.batchSize, 1, 2, 2]);
      expect(b.x.dtype).toBe('float32');
      expect(b.y.dtype).toBe('int64');
      const idx = Array.from(b.indices);
      const x = Array.from(b.x.toTypedArray() as Float32Array);
      expect(x).toEqual(idx.flatMap((v) => [v, v, v, v]));
      expect(Array.from(b.y.toTypedArray() as BigInt64Array, Number)).toEqual(idx.map((v) => v % 7));
      out.push(idx);
    } finally {
      b.x.dispose();
      b.y.dispose();
    }
  }
  return out;
}

const SHARD_CASE = { n: 10, seed: 3, cases: [[1, 0], [3, 0], [3, 1], [3, 2], [4, 3]] as const };
let ref: { rp: { a: number[]; b: number[]; c: number[] }; streams: Record<string, number[]> };

beforeAll(() => {
  // one Python run for every reference (starting it costs seconds on this machine)
  const { n, seed, cases } = SHARD_CASE;
  ref = py(`
    def rp(n, s):
        g = torch.Generator(); g.manual_seed(s); return torch.randperm(n, generator=g).tolist()
    out['rp'] = {'a': rp(10, 0), 'b': rp(1000, 1234), 'c': rp(57, 2**32 + 3)}
    # tim/data/sampler_utils.py, verbatim but for the dataset length argument
    def get_train_sampler(n, rank, world_size, total, seed):
        sample_indices = torch.empty([total], dtype=torch.long)
        epoch_id, fill_ptr, offs = 0, 0, 0
        while fill_ptr < sample_indices.size(0):
            g = torch.Generator(); g.manual_seed(seed + epoch_id)
            epoch_sample_indices = torch.randperm(n, generator=g)
            epoch_id += 1
            epoch_sample_indices = epoch_sample_indices[(rank + offs) % world_size::world_size]
            offs = (offs + world_size - n % world_size) % world_size
            epoch_sample_indices = epoch_sample_indices[:sample_indices.size(0) - fill_ptr]
            sample_indices[fill_ptr: fill_ptr + epoch_sample_indices.size(0)] = epoch_sample_indices
            fill_ptr += epoch_sample_indices.size(0)
        return sample_indices.tolist()
    out['streams'] = {}
    for ws, r in ${JSON.stringify(cases)}:
        out['streams'][f'{ws}:{r}'] = get_train_sampler(${n}, r, ws, 40, ${seed})
  `);
});

describe('sample order (official get_train_sampler)', () => {
  it('randpermSeeded equals torch.randperm with a seeded generator, across 32-bit seed wrap', () => {
    expect(Array.from(randpermSeeded(10, 0))).toEqual(ref.rp.a);
    expect(Array.from(randpermSeeded(1000, 1234))).toEqual(ref.rp.b);
    expect(Array.from(randpermSeeded(57, 2 ** 32 + 3))).toEqual(ref.rp.c);
    // and it does not touch the process RNG the training step uses
    torch.manualSeed(5);
    const before = torch.getRngState();
    randpermSeeded(100, 9);
    expect(Buffer.from(torch.getRngState()).equals(Buffer.from(before))).toBe(true);
  });

  it('per-rank streams equal the official sampler for several world sizes and epochs', () => {
    const { n, seed, cases } = SHARD_CASE;
    for (const [ws, r] of cases) {
      const o = new ShardedOrder(n, { seed, rank: r, worldSize: ws, shuffle: true });
      const stream: number[] = [];
      for (let e = 0; stream.length < 40; e++) stream.push(...o.slice(e));
      expect(stream.slice(0, 40), `worldSize ${ws} rank ${r}`).toEqual(ref.streams[`${ws}:${r}`]);
    }
  });

  it('sampleUniform is reproducible, in [0, 1), and about half below 0.5', () => {
    expect(sampleUniform(1, 2, 3)).toBe(sampleUniform(1, 2, 3));
    expect(sampleUniform(1, 2, 3)).not.toBe(sampleUniform(1, 3, 3));
    let below = 0;
    for (let i = 0; i < 10000; i++) {
      const u = sampleUniform(7, i % 5, i);
      if (!(u >= 0 && u < 1)) throw new Error(`u = ${u} out of [0, 1)`);
      if (u < 0.5) below++;
    }
    expect(below).toBeGreaterThan(4800);
    expect(below).toBeLessThan(5200);
  });
});

describe('DataLoader', () => {
  it('shuffles deterministically per seed, covers each epoch once, and differs between seeds', async () => {
    const ds = new Synthetic(12);
    const a = await take(new DataLoader(ds, { batchSize: 4, seed: 1 }), 6);
    const b = await take(new DataLoader(ds, { batchSize: 4, seed: 1 }), 6);
    const c = await take(new DataLoader(ds, { batchSize: 4, seed: 2 }), 6);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    const flat = a.flat();
    expect([...flat.slice(0, 12)].sort((x, y) => x - y)).toEqual([...Array(12).keys()]);
    expect([...flat.slice(12)].sort((x, y) => x - y)).toEqual([...Array(12).keys()]);
    expect(flat.slice(0, 12)).toEqual(Array.from(randpermSeeded(12, 1)));
    expect(flat.slice(12)).toEqual(Array.from(randpermSeeded(12, 2)));
    expect(flat.slice(0, 12)).not.toEqual(flat.slice(12));
    // shuffle: false reads in dataset order
    expect((await take(new DataLoader(ds, { batchSize: 4, shuffle: false }), 3)).flat()).toEqual([...Array(12).keys()]);
  });

  it('crossEpochs (official) runs batches across epoch ends; crossEpochs: false drops the incomplete tail', async () => {
    const ds = new Synthetic(10);
    const stream = new DataLoader(ds, { batchSize: 4, seed: 0 });
    const s = (await take(stream, 5)).flat();
    expect(s).toEqual([...randpermSeeded(10, 0), ...randpermSeeded(10, 1)]);
    expect(stream.state).toEqual({ epoch: 2, index: 0, seed: 0 });

    const dropping = new DataLoader(ds, { batchSize: 4, seed: 0, crossEpochs: false });
    expect(dropping.batchesPerEpoch).toBe(2);
    const d = await take(dropping, 4);
    const p0 = Array.from(randpermSeeded(10, 0)), p1 = Array.from(randpermSeeded(10, 1));
    expect(d).toEqual([p0.slice(0, 4), p0.slice(4, 8), p1.slice(0, 4), p1.slice(4, 8)]);
    expect(dropping.state).toEqual({ epoch: 2, index: 0, seed: 0 });

    // a batch larger than the dataset spans several epochs
    const big = new DataLoader(new Synthetic(4), { batchSize: 10, seed: 0 });
    const [first] = await take(big, 1);
    expect(first).toEqual([...randpermSeeded(4, 0), ...randpermSeeded(4, 1), ...Array.from(randpermSeeded(4, 2)).slice(0, 2)]);
    expect(big.state).toEqual({ epoch: 2, index: 2, seed: 0 });
    await big.close();
  });

  it('resuming from a mid-epoch state continues exactly as an uninterrupted loader', async () => {
    const ds = new Synthetic(23);
    for (const crossEpochs of [true, false]) {
      const full = new DataLoader(ds, { batchSize: 5, seed: 11, crossEpochs, rank: 1, worldSize: 2 });
      const whole = await take(full, 9);
      const first = new DataLoader(ds, { batchSize: 5, seed: 11, crossEpochs, rank: 1, worldSize: 2, prefetch: 2 });
      const head = await take(first, 3);
      const saved: LoaderState = JSON.parse(JSON.stringify(first.state));
      await first.close();
      expect(saved.index).toBeGreaterThan(0); // mid-epoch: 11 or 12 samples per epoch on this rank
      const resumed = new DataLoader(ds, { batchSize: 5, crossEpochs, rank: 1, worldSize: 2, state: saved });
      expect(resumed.seed).toBe(11);
      const tail = await take(resumed, 6);
      expect([...head, ...tail], `crossEpochs ${crossEpochs}`).toEqual(whole);
    }
  });

  it('ranks take disjoint slices that together cover every epoch', async () => {
    const n = 17, ws = 4, B = 2;
    const ds = new Synthetic(n);
    const per: number[][] = [];
    for (let r = 0; r < ws; r++) per.push((await take(new DataLoader(ds, { batchSize: B, seed: 5, rank: r, worldSize: ws }), 17)).flat());
    // read in lockstep, rank after rank, the ranks' streams are the global stream of epochs
    const lockstep: number[] = [];
    for (let i = 0; i < per[0]!.length; i++) for (let r = 0; r < ws; r++) lockstep.push(per[r]![i]!);
    for (let e = 0; e < 7; e++) {
      const epoch = lockstep.slice(e * n, (e + 1) * n);
      expect(epoch, `epoch ${e}`).toEqual(Array.from(randpermSeeded(n, 5 + e)));
    }
    // and per epoch the rank slices are pairwise disjoint
    for (let e = 0; e < 3; e++) {
      const seen = new Set<number>();
      let total = 0;
      for (let r = 0; r < ws; r++) {
        const sl = new ShardedOrder(n, { seed: 5, rank: r, worldSize: ws, shuffle: true }).slice(e);
        for (const v of sl) seen.add(v);
        total += sl.length;
      }
      expect(total).toBe(n);
      expect(seen.size).toBe(n);
    }
  });

  it('prefetching gives the same batches and flip numbers as loading on demand', async () => {
    const runs: number[][][] = [];
    const us: number[][] = [];
    for (const prefetch of [0, 1, 4]) {
      const ds = new Synthetic(31);
      runs.push(await take(new DataLoader(ds, { batchSize: 3, seed: 4, prefetch }), 15));
      us.push(ds.us.slice(0, 45)); // prefetching reads ahead, in the same order
    }
    expect(runs[1]).toEqual(runs[0]);
    expect(runs[2]).toEqual(runs[0]);
    expect(us[1]).toEqual(us[0]);
    expect(us[2]).toEqual(us[0]);
  });

  it('loads the next batch while the current one is in use (measured)', async () => {
    const delay = 30, compute = 60, steps = 6;
    const time = async (prefetch: number): Promise<{ ms: number; order: string[]; wait: number; load: number }> => {
      const ds = new Synthetic(64, delay);
      const loader = new DataLoader(ds, { batchSize: 4, seed: 0, prefetch });
      const order: string[] = [];
      const t0 = performance.now();
      for (let s = 0; s < steps; s++) {
        const b = await loader.next();
        order.push(`got${s}:started${ds.starts.length / 4}`);
        // the "train step": compute off the main thread, as libtorch's async ops do
        await new Promise((r) => setTimeout(r, compute));
        b.x.dispose();
        b.y.dispose();
      }
      const ms = performance.now() - t0;
      await loader.close();
      return { ms, order, wait: loader.stats.waitMs, load: loader.stats.loadMs };
    };
    const serial = await time(0);
    const overlapped = await time(1);
    // deterministic: with prefetch the batch after the one handed out is already being read
    expect(serial.order[2]).toBe('got2:started3');
    expect(overlapped.order[2]).toBe('got2:started4');
    const overlap = 1 - overlapped.wait / overlapped.load;
    console.log(`prefetch: ${steps} steps of ${delay} ms load + ${compute} ms compute: serial ${serial.ms.toFixed(0)} ms, prefetch ${overlapped.ms.toFixed(0)} ms, load hidden ${(overlap * 100).toFixed(0)}%`);
    expect(overlapped.ms).toBeLessThan(serial.ms * 0.85);
    expect(overlap).toBeGreaterThan(0.5);
    expect(1 - serial.wait / serial.load).toBeLessThan(0.2);
  });

  it('batches go to the requested device and belong to the caller scope; memory stays flat', async () => {
    const ds = new Synthetic(40);
    const before = torch.memory().liveTensors;
    const loader = new DataLoader(ds, { batchSize: 8, seed: 0, prefetch: 2 });
    for (let i = 0; i < 12; i++) {
      const b = await loader.next();
      const s = torch.scope(() => b.x.sum().item());
      expect(s).toBe(Array.from(b.indices).reduce((a, v) => a + 4 * v, 0));
      b.x.dispose();
      b.y.dispose();
    }
    await loader.close();
    expect(torch.memory().liveTensors).toBe(before);
    await expect(loader.next()).rejects.toMatchObject({ code: 'E_CLOSED' });
  });

  it('a failing sample rejects next() with its error and leaves the state on that batch', async () => {
    const ds = new Synthetic(12, 0, new Set([Array.from(randpermSeeded(12, 0))[5]!]));
    const loader = new DataLoader(ds, { batchSize: 4, seed: 0, prefetch: 2 });
    await take(loader, 1);
    const st = loader.state;
    await expect(loader.next()).rejects.toThrow(/sample \d+ is broken/);
    expect(loader.state).toEqual(st);
    ds.failOn.clear();
    const again = await take(loader, 1);
    expect(again[0]).toEqual(Array.from(randpermSeeded(12, 0)).slice(4, 8));
    await loader.close();
  });

  it('rejects bad options and states with typed errors', () => {
    const ds = new Synthetic(10);
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return 'no error';
    };
    expect(code(() => new DataLoader(ds, { batchSize: 0 }))).toBe('E_RANGE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, rank: 2, worldSize: 2 }))).toBe('E_RANGE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, worldSize: 11 }))).toBe('E_DATA');
    expect(code(() => new DataLoader(ds, { batchSize: 11, crossEpochs: false }))).toBe('E_DATA');
    expect(code(() => new DataLoader(ds, { batchSize: 2, seed: 1, state: { epoch: 0, index: 2, seed: 2 } }))).toBe('E_STATE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, state: { epoch: 0, index: 11, seed: 0 } }))).toBe('E_STATE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, state: { epoch: -1, index: 0, seed: 0 } }))).toBe('E_STATE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, seed: -3 }))).toBe('E_ARG');
  });
});
