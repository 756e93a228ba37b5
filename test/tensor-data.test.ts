/**
 * Data out of tensors: item(), toArray(), toTypedArray(), and toString() compared character for
 * character with Python's repr(), including summarized big tensors (which must stay cheap).
 */
import { inspect } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { py } from './helpers/python.js';
import { expectError, scoped } from './helpers/tensor-expect.js';

type T = torch.Tensor;

/**
 * Each case is a Python expression and the same tensor built in JS. Python's `x` is a fixed 3x4
 * float tensor, mirrored by X() in JS.
 */
const CASES: [string, () => T][] = [
  ['torch.tensor([[1.5, 2], [3, 4]])', () => torch.tensor([[1.5, 2], [3, 4]])],
  ['torch.tensor([1., 2.])', () => torch.tensor([1, 2], { dtype: 'float32' })],
  ['torch.tensor([-1., 20., 300.])', () => torch.tensor([-1, 20, 300], { dtype: 'float32' })],
  ['torch.tensor([1., 2000.])', () => torch.tensor([1, 2000], { dtype: 'float32' })],
  ['torch.tensor([1e-5, 1.])', () => torch.tensor([1e-5, 1])],
  ['torch.tensor([1e10, 1.5])', () => torch.tensor([1e10, 1.5])],
  ['torch.tensor([123456789., 1.])', () => torch.tensor([123456789, 1], { dtype: 'float32' })],
  ['torch.tensor([0.1, -0.25, 3.14159])', () => torch.tensor([0.1, -0.25, 3.14159])],
  ['torch.tensor([0.03125, 1.5, -0.03125])', () => torch.tensor([0.03125, 1.5, -0.03125])],
  ['torch.tensor([12344.5, 0.5])', () => torch.tensor([12344.5, 0.5])],
  ['torch.tensor([-0.0, 1.5])', () => torch.tensor([-0, 1.5])],
  ['torch.tensor([-0.0, 1.0])', () => torch.tensor([-0, 1], { dtype: 'float32' })],
  ["torch.tensor([float('nan'), 1.0])", () => torch.tensor([NaN, 1], { dtype: 'float32' })],
  ["torch.tensor([float('nan'), 1.5, float('inf'), -float('inf')])", () => torch.tensor([NaN, 1.5, Infinity, -Infinity])],
  ["torch.tensor([float('inf'), 0.0])", () => torch.tensor([Infinity, 0], { dtype: 'float32' })],
  ["torch.tensor([float('nan')])", () => torch.tensor([NaN])],
  ['torch.tensor([0., 0.])', () => torch.zeros([2])],
  ['torch.tensor([1e-5, 2e-6, 0.])', () => torch.tensor([1e-5, 2e-6, 0])],
  ['torch.tensor([1e-30, 1e30])', () => torch.tensor([1e-30, 1e30])],
  ['torch.tensor([1e-300, 1e300], dtype=torch.float64)', () => torch.tensor([1e-300, 1e300], { dtype: 'float64' })],
  ['torch.tensor(2.5)', () => torch.tensor(2.5)],
  ["torch.tensor(float('nan'))", () => torch.tensor(NaN)],
  ['torch.tensor(7)', () => torch.tensor(7)],
  ['torch.tensor(True)', () => torch.tensor(true)],
  ['torch.tensor(2.5, dtype=torch.float16)', () => torch.tensor(2.5, { dtype: 'float16' })],
  ['torch.tensor([[1, -20], [300, 4]])', () => torch.tensor([[1, -20], [300, 4]])],
  ['torch.tensor([1, 255], dtype=torch.uint8)', () => torch.tensor([1, 255], { dtype: 'uint8' })],
  ['torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)', () => torch.tensor([[1, 2], [3, 4]], { dtype: 'int32' })],
  ['torch.tensor([2**62, -5])', () => torch.tensor(new BigInt64Array([2n ** 62n, -5n]))],
  ['torch.tensor([True, False])', () => torch.tensor([true, false])],
  ['torch.tensor([[True], [True]])', () => torch.tensor([[true], [true]])],
  ['torch.tensor([1.1, 2.2], dtype=torch.bfloat16)', () => torch.tensor([1.1, 2.2], { dtype: 'bfloat16' })],
  ['torch.tensor([1.1, 2.2], dtype=torch.float16)', () => torch.tensor([1.1, 2.2], { dtype: 'float16' })],
  ['torch.tensor([1., 2.], dtype=torch.float64)', () => torch.tensor([1, 2], { dtype: 'float64' })],
  ['torch.tensor([1.5, 2.25], dtype=torch.float64)', () => torch.tensor([1.5, 2.25], { dtype: 'float64' })],
  ['torch.tensor([])', () => torch.tensor([])],
  ['torch.zeros(2, 0)', () => torch.zeros([2, 0])],
  ['torch.zeros(0, dtype=torch.long)', () => torch.zeros([0], { dtype: 'int64' })],
  ['torch.zeros(0, 3, dtype=torch.bool)', () => torch.zeros([0, 3], { dtype: 'bool' })],
  ['torch.zeros(0, dtype=torch.float16)', () => torch.zeros([0], { dtype: 'float16' })],
  ['torch.zeros(1, 0, 2)', () => torch.zeros([1, 0, 2])],
  ['x', () => X()],
  ['x.t()', () => X().t()],
  ['x.reshape(2, 2, 3)', () => X().reshape(2, 2, 3)],
  ['x.reshape(3, 1, 2, 2)', () => X().reshape(3, 1, 2, 2)],
  ['torch.arange(30.)', () => torch.arange(30, undefined, 1, { dtype: 'float32' })],
  ['torch.arange(100)', () => torch.arange(100)],
  ['torch.linspace(0, 1, 25)', () => torch.linspace(0, 1, 25)],
  ['torch.arange(10, dtype=torch.float64) + 0.5', () => torch.arange(10, undefined, 1, { dtype: 'float64' }).add(0.5)],
  ['torch.arange(11, dtype=torch.int32) * 1000000', () => torch.arange(11, undefined, 1, { dtype: 'int32' }).mul(1000000)],
  ['torch.arange(12, dtype=torch.float16).reshape(3, 4) / 7', () => torch.arange(12, undefined, 1, { dtype: 'float16' }).reshape(3, 4).div(7)],
  ['torch.arange(2000).reshape(40, 50)', () => torch.arange(2000).reshape(40, 50)],
  ['torch.arange(2000.).reshape(40, 50)', () => torch.arange(2000, undefined, 1, { dtype: 'float32' }).reshape(40, 50)],
  ['torch.arange(3000.)', () => torch.arange(3000, undefined, 1, { dtype: 'float32' })],
  ['torch.arange(2000).reshape(10, 10, 20)', () => torch.arange(2000).reshape(10, 10, 20)],
  ['torch.arange(1024.).reshape(4, 4, 4, 4, 4) / 3', () => torch.arange(1024, undefined, 1, { dtype: 'float32' }).reshape(4, 4, 4, 4, 4).div(3)],
  ['torch.arange(1001) % 2 == 0', () => torch.arange(1001).remainder(2).eq(0)],
  ['(torch.arange(1500.) / 7).to(torch.bfloat16)', () => torch.arange(1500, undefined, 1, { dtype: 'float32' }).div(7).to('bfloat16')],
  ['torch.arange(2000.).reshape(2000, 1) - 1000', () => torch.arange(2000, { dtype: 'float32' }).reshape(2000, 1).sub(1000)],
  ['torch.arange(2000).reshape(1, 2000)', () => torch.arange(2000).reshape(1, 2000)],
  ['torch.arange(1001.) / 1000', () => torch.arange(1001, { dtype: 'float32' }).div(1000)],
  ['torch.arange(1200).reshape(20, 60).to(torch.uint8)', () => torch.arange(1200).reshape(20, 60).to('uint8')],
  ['torch.ones(1100, dtype=torch.float16) / 3', () => torch.ones([1100], { dtype: 'float16' }).div(3)],
  ['torch.tensor([1., 2.]) * 1e-3', () => torch.tensor([1, 2], { dtype: 'float32' }).mul(1e-3)],
  ['torch.tensor([100000.5, 1.25])', () => torch.tensor([100000.5, 1.25])],
  ['torch.tensor([99999.5, 3.])', () => torch.tensor([99999.5, 3])],
  ['torch.full((3, 3), 1e8)', () => torch.full([3, 3], 1e8)],
  ['torch.full((2,), 123456.)', () => torch.full([2], 123456)],
  ['torch.tensor([1.5], requires_grad=True)', () => torch.tensor([1.5], { requiresGrad: true })],
  ['torch.tensor([1.5], requires_grad=True).exp()', () => torch.tensor([1.5], { requiresGrad: true }).exp()],
  ['torch.tensor([1.5, 2.], dtype=torch.float64, requires_grad=True) + torch.tensor([1., 1.], dtype=torch.float64)',
    () => torch.tensor([1.5, 2], { dtype: 'float64', requiresGrad: true }).add(torch.tensor([1, 1], { dtype: 'float64' }))],
  ['torch.zeros(2, 0, requires_grad=True)', () => torch.zeros([2, 0], { requiresGrad: true })],
];

// Python's x, in JS
const X_DATA = [[0.25, -1.5, 3.75, 10.125], [-0.5, 2, 100.5, 7], [1 / 3, -2 / 3, 0.001, 42]];
const X = (): T => torch.tensor(X_DATA);

let R: Record<string, any>;
beforeAll(() => {
  R = py(`
    x = torch.tensor(${JSON.stringify(X_DATA)})
    cases = ${JSON.stringify(CASES.map((c) => c[0]))}
    out['repr'] = [repr(eval(c)) for c in cases]
    torch.manual_seed(7)
    out['randn_repr'] = repr(torch.randn(100, 100))
    out['values'] = {'f16': torch.tensor([1.1, 65504., -0.1], dtype=torch.float16), 'bf16': torch.tensor([1.1, 3e38, -0.1], dtype=torch.bfloat16)}
  `);
});

describe('toString matches Python repr', () => {
  it('for small tensors of every kind', scoped(() => {
    const mismatches: string[] = [];
    CASES.forEach(([expr, make], i) => {
      const got = make().toString();
      if (got !== R.repr[i]) mismatches.push(`${expr}\n  python: ${JSON.stringify(R.repr[i])}\n  js:     ${JSON.stringify(got)}`);
    });
    expect(mismatches.join('\n')).toBe('');
  }));

  it('for a summarized random matrix (same generator as Python)', scoped(() => {
    torch.manualSeed(7);
    expect(torch.randn([100, 100]).toString()).toBe(R.randn_repr);
  }));

  it('is what util.inspect and template strings show; disposed tensors say so', scoped(() => {
    const t = torch.tensor([1, 2]);
    expect(inspect(t)).toBe('tensor([1, 2])');
    expect(`${t}`).toBe('tensor([1, 2])');
    const d = torch.ones([1]);
    d.dispose();
    expect(String(d)).toBe('tensor(<disposed>)');
  }));

  it('stays cheap for big tensors: only the printed edges are read', () => {
    const big = torch.arange(4_000_000, undefined, 1, { dtype: 'float32' }).reshape(2000, 2000);
    const before = torch.memory().liveTensors;
    const t0 = performance.now();
    const s = big.toString();
    const ms = performance.now() - t0;
    // 3 rows, '...', 3 rows; each row wraps once at 80 columns
    expect(s.split('\n').length).toBe(13);
    expect(s.startsWith('tensor([[0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03')).toBe(true);
    expect(s.endsWith('4.0000e+06]])')).toBe(true);
    // reading 4M values into JS takes about a second; the edges take a few milliseconds
    expect(ms).toBeLessThan(100);
    expect(torch.memory().liveTensors).toBe(before);
    big.dispose();
  });
});

describe('item()', () => {
  it('returns numbers (booleans for bool) from one-element tensors of any dtype', scoped(() => {
    expect(torch.tensor(2.5).item()).toBe(2.5);
    expect(torch.tensor([[7]]).item()).toBe(7);
    expect(torch.tensor([-3], { dtype: 'int32' }).item()).toBe(-3);
    expect(torch.tensor([200], { dtype: 'uint8' }).item()).toBe(200);
    expect(torch.tensor([true]).item()).toBe(true);
    expect(torch.tensor([1.1], { dtype: 'float16' }).item()).toBe(R.values.f16.data[0]);
    expect(torch.tensor([1.1], { dtype: 'bfloat16' }).item()).toBe(R.values.bf16.data[0]);
    expect(torch.tensor([1.1], { dtype: 'float64' }).item()).toBe(1.1);
    expect(torch.tensor(new BigInt64Array([2n ** 53n])).item()).toBe(2 ** 53);
  }));

  it('throws E_SHAPE for more or fewer than one element', scoped(() => {
    expectError(() => torch.tensor([1, 2]).item(), torch.TorchError, 'E_SHAPE');
    expectError(() => torch.zeros([0]).item(), torch.TorchError, 'E_SHAPE');
  }));
});

describe('toArray()', () => {
  it('nests like the shape, for every dtype', scoped(() => {
    expect(torch.arange(6).reshape(2, 3).toArray()).toEqual([[0, 1, 2], [3, 4, 5]]);
    expect(torch.arange(8).reshape(2, 2, 2).to('float64').div(2).toArray()).toEqual([[[0, 0.5], [1, 1.5]], [[2, 2.5], [3, 3.5]]]);
    expect(torch.tensor([[true, false]]).toArray()).toEqual([[true, false]]);
    expect(torch.tensor([1, 2], { dtype: 'uint8' }).toArray()).toEqual([1, 2]);
    expect(torch.tensor([-1, 2], { dtype: 'int32' }).toArray()).toEqual([-1, 2]);
    expect(torch.tensor([1.1, 65504, -0.1], { dtype: 'float16' }).toArray()).toEqual(R.values.f16.data);
    expect(torch.tensor([1.1, 3e38, -0.1], { dtype: 'bfloat16' }).toArray()).toEqual(R.values.bf16.data);
    expect(torch.tensor([NaN, -Infinity]).toArray()).toEqual([NaN, -Infinity]);
  }));

  it('handles 0-d, empty and zero-size inner dims', scoped(() => {
    expect(torch.tensor(4.5).toArray()).toBe(4.5);
    expect(torch.tensor(false).toArray()).toBe(false);
    expect(torch.tensor([]).toArray()).toEqual([]);
    expect(torch.zeros([2, 0]).toArray()).toEqual([[], []]);
    expect(torch.zeros([2, 0, 3]).toArray()).toEqual([[], []]);
    expect(torch.zeros([0, 3]).toArray()).toEqual([]);
  }));

  it('reads views in logical (row-major) order', scoped(() => {
    const x = torch.arange(6).reshape(2, 3);
    expect(x.t().toArray()).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(x.index(':', '::2').toArray()).toEqual([[0, 2], [3, 5]]);
    expect(torch.tensor([1, 2]).expand(2, 2).toArray()).toEqual([[1, 2], [1, 2]]);
  }));

  it('reads tensors that require grad', scoped(() => {
    const w = torch.tensor([1.5, 2.5], { requiresGrad: true });
    expect(w.mul(2).toArray()).toEqual([3, 5]);
  }));
});

describe('toTypedArray()', () => {
  it('gives the natural TypedArray per dtype', scoped(() => {
    const cases: [T, new (...a: never[]) => ArrayBufferView, unknown[]][] = [
      [torch.tensor([1.5, 2]), Float32Array, [1.5, 2]],
      [torch.tensor([1.5, 2], { dtype: 'float64' }), Float64Array, [1.5, 2]],
      [torch.tensor([1.5, 2], { dtype: 'float16' }), Float32Array, [1.5, 2]],
      [torch.tensor([1.5, 2], { dtype: 'bfloat16' }), Float32Array, [1.5, 2]],
      [torch.tensor([-1, 2]), BigInt64Array, [-1n, 2n]],
      [torch.tensor([-1, 2], { dtype: 'int32' }), Int32Array, [-1, 2]],
      [torch.tensor([1, 255], { dtype: 'uint8' }), Uint8Array, [1, 255]],
      [torch.tensor([true, false]), Uint8Array, [1, 0]],
    ];
    for (const [t, cls, vals] of cases) {
      const a = t.toTypedArray();
      expect(a, t.dtype).toBeInstanceOf(cls);
      expect(Array.from(a as ArrayLike<unknown>)).toEqual(vals);
    }
  }));

  it('is a copy in row-major order, and int64 stays exact beyond 2^53', scoped(() => {
    const x = torch.arange(6, undefined, 1, { dtype: 'float32' }).reshape(2, 3);
    const a = x.t().toTypedArray() as Float32Array;
    expect(Array.from(a)).toEqual([0, 3, 1, 4, 2, 5]);
    a[0] = 99;
    expect(x.index(0, 0).item()).toBe(0);
    const big = torch.tensor(new BigInt64Array([2n ** 62n + 1n]));
    expect((big.toTypedArray() as BigInt64Array)[0]).toBe(2n ** 62n + 1n);
  }));
});
