/**
 * Fuzz: at least 10,000 random (mostly bad) calls across the public torch API, from a seeded PRNG so
 * a failure reproduces. Every call must either succeed or throw a TorchError / TypeError /
 * RangeError carrying a string `code`; the process must survive; afterwards no tensor is leaked and
 * grad mode / autocast are as they were.
 *
 * Sizes are drawn so that nothing can legitimately allocate more than a few KiB: dimensions are
 * tiny (<= 7) or absurd (>= 2^40 elements, which the allocator refuses), never in between.
 */
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { mulberry32 } from '../lib/tim/data/host_rng.js';

type Tensor = torch.Tensor;
type Err = Error & { code?: unknown };
type Rng = () => number;

const SEED = Number(process.env.TIM_FUZZ_SEED ?? 20261129);
const CALLS = Number(process.env.TIM_FUZZ_CALLS ?? 20_000);


const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;

const BIG = [2 ** 40, 2 ** 45, 2 ** 53, 2 ** 60];
const SMALL_INTS = [0, 1, 2, 3, 7, -1, -2, -7];
// No integer between ~10 and 2^40 anywhere: as a size it could make a legitimate multi-GB tensor.
const ODD_NUMBERS = [0.5, -1.5, NaN, Infinity, -Infinity, 1e308, -0, Number.MIN_VALUE, -(2 ** 31), -(2 ** 40) + 0.5];
const STRINGS = ['', 'float32', 'bfloat16', 'int64', 'bool', 'cuda', 'cuda:7', 'cpu', 'meta', 'nope', ':', '1:3', '...', '::-1', 'ij,jk->ik', 'mean', 'sum'];
const DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'uint8', 'bool', 'complex64', 'x'];

class Pool {
  tensors: Tensor[] = [];
  disposed: Tensor[] = [];
  refill(rng: Rng): void {
    for (const t of this.tensors) t.dispose();
    this.tensors = [];
    const add = (t: Tensor): void => void this.tensors.push(torch.keep(t));
    torch.scope(() => {
      add(torch.randn([2, 3]));
      add(torch.randn([3]));
      add(torch.randn([3, 3], { dtype: 'float64' }));
      add(torch.randn([1, 2, 4, 4]));
      add(torch.randn([2, 2]).bfloat16());
      add(torch.tensor([1, 0, 2, 5], { dtype: 'int64' }));
      add(torch.tensor([[true, false, true], [false, false, true]]));
      add(torch.zeros([0, 3]));
      add(torch.scalarTensor(3.5));
      add(torch.tensor([NaN, Infinity, -Infinity, 0]));
      add(torch.randn([2, 3]).requiresGrad_());
      add(torch.randn([4]).mul(2).expand([3, 4])); // a non-contiguous view
      add(torch.ones([2, 3]).t());
    });
    // a few disposed tensors, recreated each refill
    for (const d of this.disposed) d.dispose();
    this.disposed = [torch.ones([2]), torch.zeros([2, 3])];
    for (const d of this.disposed) d.dispose();
    void rng;
  }
  tensor(rng: Rng): Tensor {
    return rng() < 0.12 ? pick(rng, this.disposed) : pick(rng, this.tensors);
  }
}

function shape(rng: Rng): unknown {
  const r = rng();
  if (r < 0.6) return Array.from({ length: Math.floor(rng() * 4) }, () => Math.floor(rng() * 8));
  if (r < 0.75) return [pick(rng, BIG), ...(rng() < 0.5 ? [Math.floor(rng() * 8)] : [])];
  if (r < 0.85) return [pick(rng, [-1, -3, 1.5, NaN, Infinity, '2', null])];
  if (r < 0.92) return pick(rng, [3, -2, 2 ** 50, 'x', null, {}, [[2]], [2n]]);
  return [];
}

/** Any value at all, biased to what an API might almost accept. */
function value(rng: Rng, pool: Pool, depth = 0): unknown {
  const r = rng();
  if (r < 0.3) return pool.tensor(rng);
  if (r < 0.45) return pick(rng, SMALL_INTS);
  if (r < 0.52) return pick(rng, ODD_NUMBERS);
  if (r < 0.55) return pick(rng, BIG);
  if (r < 0.65) return pick(rng, STRINGS);
  if (r < 0.72) return shape(rng);
  if (r < 0.75) return pick(rng, [null, undefined, true, false]);
  if (r < 0.78) return pick(rng, [1n, -1n, 2n ** 70n]);
  if (r < 0.82 && depth < 2) return Array.from({ length: Math.floor(rng() * 4) }, () => value(rng, pool, depth + 1));
  if (r < 0.9 && depth < 2) {
    return pick(rng, [
      {}, { dtype: pick(rng, DTYPES) }, { device: pick(rng, ['cpu', 'cuda', 'cuda:1', 'x']) }, { requiresGrad: true },
      { dtype: pick(rng, DTYPES), device: 'cpu', requiresGrad: rng() < 0.5 }, { stride: value(rng, pool, depth + 1) },
      { padding: value(rng, pool, depth + 1), groups: value(rng, pool, depth + 1) }, { retainGraph: true },
      { createGraph: value(rng, pool, depth + 1) }, { gradOutputs: [value(rng, pool, depth + 1)] }, { shape: shape(rng) },
      { reduction: pick(rng, ['mean', 'sum', 'x']) }, { labelSmoothing: pick(rng, [0.1, -1, NaN]) }, { start: 1, stop: 'x' },
    ]);
  }
  if (r < 0.93) return pick(rng, [new Float32Array(6), new Uint8Array(3), new ArrayBuffer(5), new Float64Array(0), new BigInt64Array(2)]);
  if (r < 0.96) return pick(rng, [() => torch.ones([2]), () => 7, async () => 1, (x: unknown) => x]);
  // (Symbols are left out: JS itself throws a code-less TypeError when one reaches a template
  // string or arithmetic, and guarding every such spot is not worth it.)
  if (r < 0.98) return pick(rng, [new Map(), new Date(0), /re/, new WeakMap()]);
  return pick(rng, [{ _h: 0, _kept: false }, Object.create(torch.Tensor.prototype) as unknown, new Proxy({}, {})]);
}

// The public functions under test. I/O (save/load, jit files) is left to its own tests: random
// strings would become file paths.
const TORCH_FNS = [
  'tensor', 'zeros', 'ones', 'full', 'empty', 'arange', 'linspace', 'randn', 'rand', 'randint', 'randperm', 'eye',
  'scalarTensor', 'zerosLike', 'onesLike', 'fullLike', 'emptyLike', 'randnLike', 'randLike', 'randintLike', 'fromBuffer',
  'cat', 'stack', 'where', 'broadcastTensors', 'einsum', 'linear', 'conv2d', 'layerNorm', 'groupNorm', 'cosineSimilarity',
  'softmax', 'logSoftmax', 'silu', 'gelu', 'relu', 'sigmoid', 'dropout', 'embedding', 'mseLoss', 'crossEntropy',
  'avgPool2d', 'maxPool2d', 'pad', 'interpolateNearest', 'pixelShuffle',
  'noGrad', 'enableGrad', 'setGradEnabled', 'manualSeed', 'getRngState', 'setRngState', 'setNumThreads', 'getNumThreads',
  'autocast', 'isAutocastEnabled', 'scope', 'keep', 'memory', 'hasOp', 'schemaOf',
];
const TORCH_ASYNC_FNS = ['matmulAsync', 'linearAsync', 'conv2dAsync', 'cloneAsync', 'callOpAsync', 'scopeAsync'];
const AUTOGRAD_FNS = ['grad', 'backward', 'backwardAsync'];
const OP_NAMES = ['aten::mm', 'aten::add', 'aten::cat', 'aten::zeros', 'aten::index', 'aten::nope', 'aten::size', 'aten::sum', ''];

// TypeScript-private helpers live on the prototype too; they are not API (they trust their input).
const PRIVATE = new Set(['basicIndex', 'alias', 'flatValues', 'rawValues']);
const proto = torch.Tensor.prototype as unknown as Record<string, unknown>;
const METHODS = Object.getOwnPropertyNames(proto).filter((k) => {
  const d = Object.getOwnPropertyDescriptor(proto, k)!;
  return k !== 'constructor' && typeof d.value === 'function' && !/save|write|file|load/i.test(k) && !PRIVATE.has(k) && !k.startsWith('_');
});
const GETTERS = Object.getOwnPropertyNames(proto).filter((k) => Object.getOwnPropertyDescriptor(proto, k)!.get);
const SETTERS = Object.getOwnPropertyNames(proto).filter((k) => Object.getOwnPropertyDescriptor(proto, k)!.set);

interface Call {
  label: string;
  run: () => unknown;
  args?: unknown[];
}

/** A short description of arguments, for reports. */
function show(args: unknown[] | undefined): string {
  if (!args) return '';
  const one = (v: unknown): string => {
    if (v instanceof torch.Tensor) {
      // the fuzzer also passes Object.create(Tensor.prototype): a "Tensor" with no native handle
      try {
        return v.isDisposed ? 'Tensor<disposed>' : `Tensor${JSON.stringify(v.shape)}:${v.dtype}`;
      } catch {
        return 'Tensor<not a tensor>';
      }
    }
    if (Array.isArray(v)) return `[${v.map(one).join(', ')}]`;
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'function') return 'fn';
    if (typeof v === 'symbol') return 'symbol';
    if (v && typeof v === 'object') return v.constructor?.name === 'Object' ? `{${Object.entries(v).map(([k, x]) => `${k}: ${one(x)}`).join(', ')}}` : String(v.constructor?.name);
    return String(v);
  };
  return args.map(one).join(', ');
}

function makeCall(rng: Rng, pool: Pool): Call {
  const args = (): unknown[] => Array.from({ length: Math.floor(rng() * 5) }, () => value(rng, pool));
  const r = rng();
  const t = pool.tensor(rng);
  const T = torch as unknown as Record<string, (...a: unknown[]) => unknown>;
  if (r < 0.45) {
    const m = pick(rng, METHODS);
    const a = args();
    return { label: `Tensor.${m}`, run: () => (proto[m] as (...x: unknown[]) => unknown).apply(t, a), args: [t, ...a] };
  }
  if (r < 0.5) {
    const g = pick(rng, GETTERS);
    return { label: `get Tensor.${g}`, run: () => (t as unknown as Record<string, unknown>)[g] };
  }
  if (r < 0.52) {
    const s = pick(rng, SETTERS);
    const v = value(rng, pool);
    return { label: `set Tensor.${s}`, run: () => { (t as unknown as Record<string, unknown>)[s] = v; } };
  }
  if (r < 0.9) {
    const f = pick(rng, TORCH_FNS);
    const a = args();
    return { label: `torch.${f}`, run: () => T[f]!(...a), args: a };
  }
  if (r < 0.95) {
    const f = pick(rng, AUTOGRAD_FNS);
    const a = args();
    return { label: `torch.autograd.${f}`, run: () => (torch.autograd as unknown as Record<string, (...x: unknown[]) => unknown>)[f]!(...a), args: a };
  }
  const f = pick(rng, TORCH_ASYNC_FNS);
  const a = f === 'callOpAsync' ? [pick(rng, OP_NAMES), pick(rng, ['', 'Tensor', 'int', 'x']), ...args()] : args();
  return { label: `torch.${f}`, run: () => T[f]!(...a), args: a };
}

function typed(e: unknown): boolean {
  return (e instanceof torch.TorchError || e instanceof TypeError || e instanceof RangeError) && typeof (e as Err).code === 'string';
}

describe('fuzz', () => {
  it(`${CALLS} random bad calls: every error typed with a code, the process survives, nothing leaks`, async () => {
    const rng = mulberry32(SEED);
    const baseline = torch.memory().liveTensors;
    const pool = new Pool();
    pool.refill(rng);
    const threads = torch.getNumThreads();
    const codes = new Map<string, number>();
    const violations: string[] = [];
    let ok = 0;
    const slow = new Map<string, number>(); // total ms per label, to keep the runtime in check
    const seen = new Set<string>();
    let slowestCall = { ms: 0, what: '' };
    const samples = new Map<string, string>(); // one message per kind, for the log
    const t0 = performance.now();
    for (let i = 0; i < CALLS; i++) {
      if (i % 200 === 199) pool.refill(rng);
      const call = makeCall(rng, pool);
      const c0 = performance.now();
      try {
        await torch.scopeAsync(async () => {
          const r = call.run();
          if (r instanceof Promise) await r;
          return undefined;
        });
        ok++;
      } catch (e) {
        if (typed(e)) {
          const key = `${(e as Error).constructor.name}:${String((e as Err).code)}`;
          codes.set(key, (codes.get(key) ?? 0) + 1);
          // verbose: one sample per kind, and every distinct message left unclassified (E_TORCH)
          const skey = (e as Err).code === 'E_TORCH' ? `${key} ${(e as Error).message.replace(/^[^:]*\([^)]*\): /, '').slice(0, 60)}` : key;
          if (!samples.has(skey)) samples.set(skey, `${call.label}: ${(e as Error).message.slice(0, 200)}`);
        } else {
          const what = `${call.label}(${show(call.args).slice(0, 120)}): ${(e as Error)?.constructor?.name} ${String((e as Err)?.code)} ${String((e as Error)?.message ?? e).slice(0, 160)}`;
          if (!seen.has(what) && violations.length < 60) violations.push(`#${i} ${what}`);
          seen.add(what);
        }
      }
      const dt = performance.now() - c0;
      slow.set(call.label, (slow.get(call.label) ?? 0) + dt);
      if (dt > slowestCall.ms) slowestCall = { ms: dt, what: `#${i} ${call.label}(${show(call.args)})` };
      // process-wide state changed by a (valid) random call is put back, and must not leak out of
      // the sync helpers (noGrad/autocast restore what they changed)
      if (!torch.isGradEnabled()) torch.setGradEnabled(true);
      if (torch.getNumThreads() !== threads) torch.setNumThreads(threads);
      if (torch.isAutocastEnabled()) violations.push(`#${i} ${call.label}: left autocast enabled`);
    }
    const ms = performance.now() - t0;
    for (const t of pool.tensors) t.dispose();
    const left = torch.memory().liveTensors - baseline;
    const table = [...codes.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(' ');
    const slowest = [...slow.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => `${k} ${v.toFixed(0)}ms`).join(', ');
    if (process.env.TIM_FUZZ_VERBOSE) for (const [k, v] of samples) console.log(`fuzz sample ${k}: ${v}`);
    console.log(`fuzz: slowest labels (total): ${slowest}; slowest call ${slowestCall.ms.toFixed(0)} ms: ${slowestCall.what}`);
    console.log(`fuzz: ${CALLS} calls in ${(ms / 1000).toFixed(1)} s, ${ok} succeeded; errors: ${table}; left over: ${left}`);
    expect(violations).toEqual([]);
    expect(ok).toBeGreaterThan(100); // the generator also hits valid calls, so success paths run too
    expect(codes.size).toBeGreaterThan(8); // and a real spread of error kinds
    for (const c of ['TorchError:E_SHAPE', 'TorchError:E_DTYPE', 'TorchError:E_INDEX', 'TorchError:E_DISPOSED', 'TypeError:E_ARG']) {
      expect(codes.get(c) ?? 0, c).toBeGreaterThan(0);
    }
    expect(left).toBe(0);
    expect(ms).toBeLessThan(90_000);
  });
});
