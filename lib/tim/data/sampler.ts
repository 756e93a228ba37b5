/**
 * The sample order of TiM training: the official `get_train_sampler` (tim/data/sampler_utils.py,
 * from LLaMA2-Accessory) as an endless, resumable stream.
 *
 * Epoch e is `torch.randperm(N, generator=torch.Generator().manual_seed(seed + e))`. Rank r of
 * `worldSize` takes every worldSize-th element of it starting at (r + offs_e) % worldSize, where
 * offs rotates by (worldSize - N % worldSize) each epoch so that the ranks' slices, read in
 * lockstep, are exactly the global concatenated stream dealt round-robin: disjoint and covering.
 *
 * The permutation is computed here in JS (MT19937 plus libtorch's randperm loop) rather than with
 * the tensor RNG: it must not disturb the process-wide generator the training step draws noise
 * from, and it is then bit-identical to Python's torch for the same seed (tested against it).
 */
import { argError } from '../../torch/errors.js';

/** MT19937 exactly as at::mt19937 (libtorch's CPU generator): 32-bit outputs. */
class MT19937 {
  private readonly mt = new Uint32Array(624);
  private i = 624;
  constructor(seed: number) {
    // at::mt19937(uint64 seed) keeps only the low 32 bits of the seed.
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let j = 1; j < 624; j++) {
      const p = mt[j - 1]! ^ (mt[j - 1]! >>> 30);
      mt[j] = (Math.imul(p, 1812433253) + j) >>> 0; // 1812433253 * p + j mod 2^32
    }
  }
  next(): number {
    const mt = this.mt;
    if (this.i >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.i = 0;
    }
    let y = mt[this.i++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/** torch.randperm(n, generator=torch.Generator().manual_seed(seed)) on the CPU, as an Int32Array. */
export function randpermSeeded(n: number, seed: number): Int32Array {
  if (!Number.isInteger(n) || n < 0 || n >= 2 ** 31) throw argError('range', `randpermSeeded: n must be an integer in [0, 2^31), got ${n}`);
  checkSeed(seed, 'randpermSeeded');
  const r = new Int32Array(n);
  for (let i = 0; i < n; i++) r[i] = i;
  const g = new MT19937(seed % 2 ** 32);
  // libtorch's randperm_cpu for n < 2^32 / 20: a Fisher-Yates pass from the front, z = random() % (n - i).
  for (let i = 0; i < n - 1; i++) {
    const z = g.next() % (n - i);
    const t = r[i]!;
    r[i] = r[z + i]!;
    r[z + i] = t;
  }
  return r;
}

/**
 * A reproducible number in [0, 1) for one sample of one epoch (the latent flip coin): a hash of
 * (seed, epoch, dataset index), so it does not depend on batch size, rank count, prefetching or
 * where a run was resumed. (The official loader draws torch.rand(1) in a worker process, which no
 * resume can reproduce.)
 */
export function sampleUniform(seed: number, epoch: number, index: number): number {
  let h = mix32(0x9e3779b9 ^ (seed >>> 0));
  h = mix32(h ^ Math.floor(seed / 2 ** 32));
  h = mix32(h ^ (epoch >>> 0));
  h = mix32(h ^ (index >>> 0));
  return h / 2 ** 32;
}

function mix32(x: number): number {
  // murmur3's finalizer: every input bit flips each output bit with probability about 1/2
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

export function checkSeed(seed: unknown, what: string): asserts seed is number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw argError('type', `${what}: seed must be a non-negative safe integer, got ${String(seed)}`);
  }
}


/** How one rank walks the epochs of a dataset of n samples. */
export interface ShardOptions {
  seed: number;
  rank: number;
  worldSize: number;
  /** false: epoch e is 0..n-1 in order (evaluation); the sharding is the same. */
  shuffle: boolean;
}

/**
 * One rank's slices of the per-epoch permutations; the last few epochs are cached (a dataset of a
 * million samples costs 4 MB per epoch).
 */
export class ShardedOrder {
  private readonly cache = new Map<number, Int32Array>();
  constructor(readonly n: number, readonly o: ShardOptions) {}

  /** The rotation offs_e of the official sampler, in closed form: e * (ws - n % ws) mod ws. */
  offset(epoch: number): number {
    const ws = this.o.worldSize;
    return Number((BigInt(epoch) * BigInt((ws - (this.n % ws)) % ws)) % BigInt(ws));
  }

  /** Dataset indices this rank reads in `epoch`, in order. */
  slice(epoch: number): Int32Array {
    const hit = this.cache.get(epoch);
    if (hit) return hit;
    const { worldSize: ws, rank, seed, shuffle } = this.o;
    let perm: Int32Array;
    if (shuffle) {
      // seed + epoch as the official sampler; the generator then keeps the low 32 bits
      perm = randpermSeeded(this.n, (seed + epoch) % 2 ** 32);
    } else {
      perm = new Int32Array(this.n);
      for (let i = 0; i < this.n; i++) perm[i] = i;
    }
    const start = (rank + this.offset(epoch)) % ws;
    const out = new Int32Array(start < this.n ? Math.ceil((this.n - start) / ws) : 0);
    for (let i = start, k = 0; i < this.n; i += ws, k++) out[k] = perm[i]!;
    if (this.cache.size >= 3) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(epoch, out);
    return out;
  }

  /** Fewest samples any rank has in an epoch: what every rank uses when batches stay inside epochs. */
  get minSliceLength(): number {
    return Math.floor(this.n / this.o.worldSize);
  }
}
