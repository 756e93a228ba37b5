/**
 * Process state: RNG (manualSeed, state round trip, same draws as Python torch 1.13), thread count,
 * and autocast (bfloat16 on CPU, nesting, gradients).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { py, type PyTensor } from './helpers/python.js';
import { expectTensor, scoped, thrown } from './helpers/tensor-expect.js';

let ref: Record<string, unknown>;

const A = [[0.5, -1.25, 2.0, 0.1], [0.3, 0.7, -0.9, 1.1]];
const B = [[1.5, -0.5], [0.25, 2.0], [-1.0, 0.5], [0.33, -0.66]];

beforeAll(() => {
  ref = py(`
    for seed in (0, 42, 2**40 + 7):
        torch.manual_seed(seed)
        out[f'randn5_{seed}'] = torch.randn(5)
        out[f'randn100_{seed}'] = torch.randn(100)   # >= 16 elements: the vectorised normal path
        out[f'rand7_{seed}'] = torch.rand(7)
        out[f'randint_{seed}'] = torch.randint(0, 1000, (6,))
        out[f'randperm_{seed}'] = torch.randperm(10)
    torch.manual_seed(7)
    out['state7'] = list(torch.get_rng_state().tolist())
    a = torch.tensor(${JSON.stringify(A)}); b = torch.tensor(${JSON.stringify(B)})
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out['ac_mm'] = a @ b
    a.requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = (a @ b).float().sum()
    y.backward()
    out['ac_grad'] = a.grad
  `);
});

describe('RNG', () => {
  it('manualSeed makes draws reproducible; another seed gives other draws', scoped(() => {
    torch.manualSeed(123);
    const a = torch.randn([50]).toArray();
    torch.manualSeed(123);
    const b = torch.randn([50]).toArray();
    torch.manualSeed(124);
    const c = torch.randn([50]).toArray();
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
  }));

  for (const seed of [0, 42, 2 ** 40 + 7]) {
    it(`seed ${seed}: randn/rand/randint/randperm equal Python torch 1.13 bit for bit`, scoped(() => {
      torch.manualSeed(seed);
      // exact: rtol = atol = 0 (same mt19937 generator and the same sampling kernels)
      expectTensor(torch.randn([5]), ref[`randn5_${seed}`] as PyTensor, { rtol: 0, atol: 0 });
      expectTensor(torch.randn([100]), ref[`randn100_${seed}`] as PyTensor, { rtol: 0, atol: 0 });
      expectTensor(torch.rand([7]), ref[`rand7_${seed}`] as PyTensor, { rtol: 0, atol: 0 });
      expectTensor(torch.randint(0, 1000, [6]), ref[`randint_${seed}`] as PyTensor);
      expectTensor(torch.randperm(10), ref[`randperm_${seed}`] as PyTensor);
    }));
  }

  it('a BigInt seed is the same seed as the equal number', scoped(() => {
    torch.manualSeed(42n);
    expectTensor(torch.randn([5]), ref.randn5_42 as PyTensor, { rtol: 0, atol: 0 });
  }));

  it('the generator state after manualSeed is byte-identical to Python (the same mt19937)', () => {
    torch.manualSeed(7);
    const s = torch.getRngState();
    expect(s).toBeInstanceOf(Uint8Array);
    expect(Array.from(s)).toEqual(ref.state7);
  });

  it('getRngState / setRngState round trip reproduces the same draws', scoped(() => {
    torch.manualSeed(99);
    torch.randn([3]); // advance the generator somewhere arbitrary
    const state = torch.getRngState();
    const a = torch.randn([40]).toArray();
    const u = torch.rand([9]).toArray();
    torch.randn([1000]); // move on
    torch.setRngState(state);
    expect(torch.randn([40]).toArray()).toEqual(a);
    expect(torch.rand([9]).toArray()).toEqual(u);
  }));

  it('bad seeds and states are typed errors', () => {
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 60]) expect(thrown(() => torch.manualSeed(bad)).code, String(bad)).toBe('E_RANGE');
    expect(thrown(() => torch.manualSeed(-1n)).code).toBe('E_RANGE');
    expect(thrown(() => torch.manualSeed('1' as never))).toBeInstanceOf(TypeError);
    expect(thrown(() => torch.setRngState([1, 2] as never))).toBeInstanceOf(TypeError);
    const e = thrown(() => torch.setRngState(new Uint8Array(10)));
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(typeof e.code).toBe('string');
    expect(e.message).not.toMatch(/Exception raised from/);
  });

  it('CUDA generator: round trip when CUDA is present, E_DEVICE when it is not', scoped(() => {
    if (torch.cuda.isAvailable()) {
      torch.manualSeed(5);
      const s = torch.getRngState('cuda');
      const a = torch.randn([8], { device: 'cuda' }).cpu().toArray();
      torch.setRngState(s, 'cuda');
      expect(torch.randn([8], { device: 'cuda' }).cpu().toArray()).toEqual(a);
    } else {
      const e = thrown(() => torch.getRngState('cuda'));
      expect(e).toBeInstanceOf(torch.TorchError);
      expect(e.code).toBe('E_DEVICE');
    }
  }));
});

describe('threads', () => {
  it('setNumThreads / getNumThreads round trip', () => {
    const n0 = torch.getNumThreads();
    expect(n0).toBeGreaterThanOrEqual(1);
    try {
      torch.setNumThreads(1);
      expect(torch.getNumThreads()).toBe(1);
      torch.setNumThreads(3);
      expect(torch.getNumThreads()).toBe(3);
    } finally {
      torch.setNumThreads(n0);
    }
    expect(torch.getNumThreads()).toBe(n0);
    expect(torch.parallelInfo()).toMatch(/ATen/);
  });

  it('bad thread counts are RangeError/TypeError and change nothing', () => {
    const n0 = torch.getNumThreads();
    for (const bad of [0, -1, 1.5, NaN, 1e9, 2 ** 31]) {
      const e = thrown(() => torch.setNumThreads(bad));
      expect(e, String(bad)).toBeInstanceOf(RangeError);
      expect(e.code).toBe('E_RANGE');
    }
    expect(thrown(() => torch.setNumThreads('2' as never))).toBeInstanceOf(TypeError);
    expect(torch.getNumThreads()).toBe(n0);
  });
});

describe('autocast', () => {
  const a = () => torch.tensor(A, { dtype: 'float32' });
  const b = () => torch.tensor(B, { dtype: 'float32' });

  it('matmul is bfloat16 inside (same values as Python), float32 outside', scoped(() => {
    expect(torch.isAutocastEnabled()).toBe(false);
    const inside = torch.autocast({ dtype: 'bfloat16', device: 'cpu' }, () => {
      expect(torch.isAutocastEnabled('cpu')).toBe(true);
      return a().matmul(b());
    });
    expect(inside.dtype).toBe('bfloat16');
    expectTensor(inside, ref.ac_mm as PyTensor, { rtol: 0, atol: 0 });
    expect(torch.isAutocastEnabled()).toBe(false);
    expect(a().matmul(b()).dtype).toBe('float32');
    // linear and conv2d are autocast ops too
    torch.autocast({ dtype: 'bfloat16' }, () => {
      expect(torch.linear(a(), b().t()).dtype).toBe('bfloat16');
      expect(torch.conv2d(torch.ones([1, 2, 4, 4]), torch.ones([3, 2, 3, 3])).dtype).toBe('bfloat16');
    });
  }));

  it('nested autocast (enabled: false inside) restores the outer state on exit', scoped(() => {
    torch.autocast({ dtype: 'bfloat16' }, () => {
      expect(a().matmul(b()).dtype).toBe('bfloat16');
      torch.autocast({ dtype: 'bfloat16', enabled: false }, () => {
        expect(torch.isAutocastEnabled()).toBe(false);
        expect(a().matmul(b()).dtype).toBe('float32');
      });
      expect(torch.isAutocastEnabled()).toBe(true);
      expect(a().matmul(b()).dtype).toBe('bfloat16');
    });
    expect(torch.isAutocastEnabled()).toBe(false);
  }));

  it('an exception inside autocast restores the state', () => {
    expect(() => torch.autocast({ dtype: 'bfloat16' }, () => {
      throw new Error('inside');
    })).toThrow('inside');
    expect(torch.isAutocastEnabled()).toBe(false);
  });

  it('gradients flow through autocast regions to float32 leaves (matches Python)', scoped(() => {
    const x = a().requiresGrad_();
    const y = torch.autocast({ dtype: 'bfloat16' }, () => x.matmul(b()).float().sum());
    y.backward();
    expect(x.grad!.dtype).toBe('float32');
    expectTensor(x.grad!, ref.ac_grad as PyTensor, { rtol: 0, atol: 0 });
  }));

  it('bad autocast requests are typed errors and leave autocast off', () => {
    const f16 = thrown(() => torch.autocast({ dtype: 'float16', device: 'cpu' }, () => 0));
    expect(f16).toBeInstanceOf(RangeError);
    expect(f16.code).toBe('E_DTYPE');
    expect(thrown(() => torch.autocast({ dtype: 'nope' as never }, () => 0)).code).toBe('E_DTYPE');
    expect(thrown(() => torch.autocast({ device: 'tpu' as never }, () => 0)).code).toBe('E_DEVICE');
    expect(thrown(() => torch.autocast(null as never, () => 0))).toBeInstanceOf(TypeError);
    expect(thrown(() => torch.autocast({}, 5 as never))).toBeInstanceOf(TypeError);
    if (!torch.cuda.isAvailable()) {
      const e = thrown(() => torch.autocast({ device: 'cuda', dtype: 'float16' }, () => 0));
      expect(e).toBeInstanceOf(torch.TorchError);
      expect(e.code).toBe('E_DEVICE');
    }
    expect(torch.isAutocastEnabled()).toBe(false);
  });
});
