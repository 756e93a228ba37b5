/**
 * Creating tensors: torch.tensor, the filled/range/random constructors, the *Like variants,
 * fromBuffer (zero-copy), dtypes and devices, checked against Python's torch 1.13 (same libtorch).
 */
import { execFileSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { py, type PyTensor } from './helpers/python.js';
import { expectError, expectTensor, scoped } from './helpers/tensor-expect.js';

const DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'uint8', 'bool'] as const;
const INTS = [[0, 1, 2], [3, 100, 127]];
const FLOATS = [[0.5, 1.25, 3.75], [2.5, 1e-3, 100.7]];
const CONV = [0, 0.5, 1.5, 2.5, 3.99, 100.25, 127];
const FILL_SHAPE = [2, 3];

let R: Record<string, any>;
beforeAll(() => {
  R = py(`
    DT = {n: getattr(torch, n) for n in ${JSON.stringify(DTYPES)}}
    ints = ${JSON.stringify(INTS)}
    floats = ${JSON.stringify(FLOATS)}
    out['infer'] = {'float': torch.tensor([[1.5, 2], [3, 4]]), 'int': torch.tensor([[1, 2], [3, 4]]),
                    'bool': torch.tensor([True, False]), 'mixed': torch.tensor([True, 2]),
                    'empty': torch.tensor([]), 'empty2': torch.tensor([[], []]),
                    'scalar': torch.tensor(3.5), 'scalar_int': torch.tensor(7), 'scalar_bool': torch.tensor(True)}
    out['ints'] = {n: torch.tensor(ints, dtype=d) for n, d in DT.items()}
    out['floats'] = {n: torch.tensor(floats, dtype=d) for n, d in DT.items()}
    out['neg'] = {n: torch.tensor([-2.75, -1.5, -0.5, 1.5], dtype=getattr(torch, n)) for n in ['int64', 'int32', 'bool']}
    out['boolnan'] = torch.tensor([0.5, float('nan'), 0.0], dtype=torch.bool)
    out['zeros'] = {n: torch.zeros(${JSON.stringify(FILL_SHAPE)}, dtype=d) for n, d in DT.items()}
    out['ones'] = {n: torch.ones(${JSON.stringify(FILL_SHAPE)}, dtype=d) for n, d in DT.items()}
    out['full'] = {n: torch.full(${JSON.stringify(FILL_SHAPE)}, 2.5 if d.is_floating_point else 3, dtype=d) for n, d in DT.items()}
    out['arange'] = [torch.arange(5), torch.arange(2, 9, 3), torch.arange(10, 0, -3), torch.arange(0, 1, 0.25),
                     torch.arange(1, 2.5, 0.5), torch.arange(5, dtype=torch.float64), torch.arange(-1.5, 1.5, 0.7)]
    out['linspace'] = [torch.linspace(0, 1, 5), torch.linspace(-3, 7.5, 8), torch.linspace(2, 2, 1),
                       torch.linspace(0, 10, 4, dtype=torch.float64), torch.linspace(1, 0, 0)]
    torch.manual_seed(1234)
    out['seeded'] = {'randn': torch.randn(2, 3), 'rand': torch.rand(4), 'randint': torch.randint(3, 10, (5,)),
                     'randn64': torch.randn(3, dtype=torch.float64)}
    x = torch.tensor(${JSON.stringify(CONV)})
    out['conv'] = {a: {b: x.to(DT[a]).to(DT[b]) for b in DT} for a in DT}
    h = torch.tensor([1.1, 2.2, -3.3, 65504.0, 1e-5, 0.1])
    out['roundtrip'] = {'float16': h.half().float(), 'bfloat16': h.bfloat16().float(), 'f16bf16': h.half().bfloat16()}
  `);
});

describe('torch.tensor from nested arrays', () => {
  it('infers dtype and shape like Python', scoped(() => {
    expectTensor(torch.tensor([[1.5, 2], [3, 4]]), R.infer.float);
    expectTensor(torch.tensor([[1, 2], [3, 4]]), R.infer.int);
    expectTensor(torch.tensor([true, false]), R.infer.bool);
    expectTensor(torch.tensor([true, 2]), R.infer.mixed);
    expectTensor(torch.tensor([]), R.infer.empty);
    expectTensor(torch.tensor([[], []]), R.infer.empty2);
    // a bare number is a 0-d tensor
    expectTensor(torch.tensor(3.5), R.infer.scalar);
    expectTensor(torch.tensor(7), R.infer.scalar_int);
    expectTensor(torch.tensor(true), R.infer.scalar_bool);
  }));

  for (const dt of DTYPES) {
    it(`stores integers and fractions as ${dt}`, scoped(() => {
      expectTensor(torch.tensor(INTS, { dtype: dt }), R.ints[dt]);
      expectTensor(torch.tensor(FLOATS, { dtype: dt }), R.floats[dt]);
    }));
  }

  it('truncates fractions toward zero for integer dtypes; NaN is true as bool', scoped(() => {
    for (const dt of ['int64', 'int32', 'bool'] as const) expectTensor(torch.tensor([-2.75, -1.5, -0.5, 1.5], { dtype: dt }), R.neg[dt]);
    expectTensor(torch.tensor([0.5, NaN, 0], { dtype: 'bool' }), R.boolnan);
  }));

  it('keeps int64 values exactly up to 2^53 and rejects what int64 cannot hold', scoped(() => {
    const big = 2 ** 53;
    expect(torch.tensor([big, -big]).toTypedArray()).toEqual(new BigInt64Array([BigInt(big), BigInt(-big)]));
    expectError(() => torch.tensor([2 ** 64]), RangeError, 'E_DTYPE');
  }));

  it('rejects ragged arrays, non-numbers and unknown dtypes with typed errors', scoped(() => {
    expectError(() => torch.tensor([[1, 2], [3]]), RangeError, 'E_SHAPE');
    expectError(() => torch.tensor([[1, 2], 3] as never), RangeError, 'E_SHAPE');
    expectError(() => torch.tensor(['a'] as never), TypeError, 'E_ARG');
    expectError(() => torch.tensor([null] as never), TypeError, 'E_ARG');
    expectError(() => torch.tensor([1], { dtype: 'float8' as never }), TypeError, 'E_DTYPE');
  }));

  it('accepts Python-style dtype aliases', scoped(() => {
    expect(torch.tensor([1], { dtype: 'half' as never }).dtype).toBe('float16');
    expect(torch.tensor([1], { dtype: 'long' as never }).dtype).toBe('int64');
    expect(torch.tensor([1], { dtype: 'double' as never }).dtype).toBe('float64');
  }));

  it('sets requiresGrad on request', scoped(() => {
    const t = torch.tensor([1.5, 2], { requiresGrad: true });
    expect(t.requiresGrad).toBe(true);
    expect(torch.tensor([1.5, 2]).requiresGrad).toBe(false);
    expect(t.requiresGrad_(false).requiresGrad).toBe(false);
  }));
});

describe('torch.tensor from TypedArrays', () => {
  it('maps each TypedArray to its dtype and copies the data', scoped(() => {
    const cases: [ArrayLike<number | bigint> & ArrayBufferView, string][] = [
      [new Float32Array([1.5, -2]), 'float32'], [new Float64Array([1.5, -2]), 'float64'],
      [new Int32Array([7, -8]), 'int32'], [new Int16Array([7, -8]), 'int16'], [new Int8Array([7, -8]), 'int8'],
      [new Uint8Array([7, 200]), 'uint8'], [new BigInt64Array([7n, -8n]), 'int64'],
    ];
    for (const [arr, dt] of cases) {
      const t = torch.tensor(arr as never);
      expect(t.dtype).toBe(dt);
      expect(t.shape).toEqual([2]);
      const before = Array.from(arr as ArrayLike<number>);
      (arr as unknown as number[])[0] = (typeof arr[0] === 'bigint' ? 99n : 99) as never; // a copy: the tensor keeps the old value
      expect(Array.from(t.toTypedArray() as ArrayLike<number>)).toEqual(before);
    }
  }));

  it('takes a shape and a target dtype', scoped(() => {
    const t = torch.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3], dtype: 'int32' });
    expect(t.dtype).toBe('int32');
    expect(t.toArray()).toEqual([[1, 2, 3], [4, 5, 6]]);
    expectError(() => torch.tensor(new Float32Array(5), { shape: [2, 3] }), RangeError, 'E_SHAPE');
    expectError(() => torch.tensor(new Uint16Array(2) as never), TypeError, 'E_DTYPE');
  }));
});

describe('filled constructors', () => {
  for (const dt of DTYPES) {
    it(`zeros / ones / full / empty in ${dt}`, scoped(() => {
      expectTensor(torch.zeros(FILL_SHAPE, { dtype: dt }), R.zeros[dt]);
      expectTensor(torch.ones(FILL_SHAPE, { dtype: dt }), R.ones[dt]);
      const isFloat = ['float32', 'float64', 'float16', 'bfloat16'].includes(dt);
      expectTensor(torch.full(FILL_SHAPE, isFloat ? 2.5 : 3, { dtype: dt }), R.full[dt]);
      const e = torch.empty(FILL_SHAPE, { dtype: dt });
      expect([e.shape, e.dtype]).toEqual([FILL_SHAPE, dt]);
    }));
  }

  it('full infers float32 from numbers and bool from booleans; a bare number is a 1-d shape', scoped(() => {
    // JS has no 2.0 vs 2: full() defaults numbers to float32 (documented; Python gives int64 for 2)
    expect(torch.full([2], 2).dtype).toBe('float32');
    expect(torch.full([2], true).toArray()).toEqual([true, true]);
    expect(torch.zeros(3).shape).toEqual([3]);
    expect(torch.ones([]).shape).toEqual([]);
    expect(torch.zeros([0, 4]).shape).toEqual([0, 4]);
  }));

  it('eye, scalarTensor', scoped(() => {
    expect(torch.eye(3).toArray()).toEqual([[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
    const s = torch.scalarTensor(2.5);
    expect([s.shape, s.dtype, s.item()]).toEqual([[], 'float32', 2.5]);
  }));

  it('rejects bad shapes before libtorch', scoped(() => {
    expectError(() => torch.zeros([-1]), RangeError, 'E_SHAPE');
    expectError(() => torch.ones([2, -3]), RangeError, 'E_SHAPE');
    expectError(() => torch.zeros([1.5]), TypeError, 'E_ARG');
    expectError(() => torch.empty(['2'] as never), TypeError, 'E_ARG');
    expectError(() => torch.full([2], 'x' as never), TypeError, 'E_ARG');
    expectError(() => torch.zeros({} as never), TypeError, 'E_ARG');
    expectError(() => torch.zeros([2 ** 30, 2 ** 30]), RangeError, 'E_OOM');
  }));
});

describe('ranges', () => {
  it('arange matches Python (int64 from integers, float32 otherwise)', scoped(() => {
    const ts = [torch.arange(5), torch.arange(2, 9, 3), torch.arange(10, 0, -3), torch.arange(0, 1, 0.25),
      torch.arange(1, 2.5, 0.5), torch.arange(5, undefined, 1, { dtype: 'float64' }), torch.arange(-1.5, 1.5, 0.7)];
    ts.forEach((t, i) => expectTensor(t, R.arange[i]));
    // options may follow any of the argument forms
    expectTensor(torch.arange(5, { dtype: 'float64' }), R.arange[5]);
    expect(torch.arange(1, 4, { dtype: 'int32' }).toArray()).toEqual([1, 2, 3]);
    expect(torch.arange(1, 4, { dtype: 'int32' }).dtype).toBe('int32');
    expectError(() => torch.arange(0, 5, 0), RangeError, 'E_RANGE');
    expectError(() => torch.arange(0, Infinity), TypeError, 'E_ARG');
  }));

  it('linspace matches Python', scoped(() => {
    const ts = [torch.linspace(0, 1, 5), torch.linspace(-3, 7.5, 8), torch.linspace(2, 2, 1),
      torch.linspace(0, 10, 4, { dtype: 'float64' }), torch.linspace(1, 0, 0)];
    ts.forEach((t, i) => expectTensor(t, R.linspace[i]));
    expectError(() => torch.linspace(0, 1, -1), RangeError, 'E_RANGE');
    expectError(() => torch.linspace(0, 1, 2.5), RangeError, 'E_RANGE');
  }));
});

describe('random', () => {
  it('after manualSeed, draws the same numbers as Python (same generator)', scoped(() => {
    torch.manualSeed(1234);
    expectTensor(torch.randn([2, 3]), R.seeded.randn);
    expectTensor(torch.rand([4]), R.seeded.rand);
    expectTensor(torch.randint(3, 10, [5]), R.seeded.randint);
    expectTensor(torch.randn([3], { dtype: 'float64' }), R.seeded.randn64);
  }));

  it('has the right distributions', scoped(() => {
    const n = torch.randn([20000]);
    expect(Math.abs(n.mean().item())).toBeLessThan(0.05);
    expect(Math.abs(n.std().item() - 1)).toBeLessThan(0.05);
    const u = torch.rand([20000]);
    expect(u.min().item()).toBeGreaterThanOrEqual(0);
    expect(u.max().item()).toBeLessThan(1);
    expect(Math.abs(u.mean().item() - 0.5)).toBeLessThan(0.02);
    const r = torch.randint(-2, 3, [5000]);
    expect(r.dtype).toBe('int64');
    expect([r.min().item(), r.max().item()]).toEqual([-2, 2]);
    const p = torch.randperm(10);
    expect(p.sort().values.toArray()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const h = torch.randint(3, [1000]); // randint(high, shape): low is 0
    expect([h.min().item(), h.max().item(), h.shape]).toEqual([0, 2, [1000]]);
    expectError(() => torch.randint(5, 5, [2]), RangeError, 'E_RANGE');
    expectError(() => torch.randint(0.5, 5, [2]), TypeError, 'E_ARG');
  }));

  it('random dtypes: float64 / float16 / bfloat16 / int32', scoped(() => {
    expect(torch.randn([2], { dtype: 'float64' }).dtype).toBe('float64');
    expect(torch.rand([2], { dtype: 'bfloat16' }).dtype).toBe('bfloat16');
    expect(torch.randn([2], { dtype: 'float16' }).dtype).toBe('float16');
    expect(torch.randint(0, 4, [3], { dtype: 'int32' }).dtype).toBe('int32');
  }));
});

describe('*Like constructors', () => {
  it('take shape, dtype and device from the model tensor, dtype overridable', scoped(() => {
    const m = torch.zeros([2, 3], { dtype: 'float64' });
    for (const t of [torch.zerosLike(m), torch.onesLike(m), torch.fullLike(m, 4.5), torch.emptyLike(m), torch.randnLike(m), torch.randLike(m), torch.randintLike(m, 0, 5)]) {
      expect([t.shape, t.dtype, t.device]).toEqual([[2, 3], 'float64', 'cpu']);
    }
    expect(torch.onesLike(m).toArray()).toEqual([[1, 1, 1], [1, 1, 1]]);
    expect(torch.fullLike(m, 4.5).toArray()).toEqual([[4.5, 4.5, 4.5], [4.5, 4.5, 4.5]]);
    expect(torch.zerosLike(m, { dtype: 'int32' }).dtype).toBe('int32');
    const ri = torch.randintLike(m, 2, 4);
    expect(ri.ge(2).allTrue() && ri.lt(4).allTrue()).toBe(true);
    expectError(() => torch.randintLike(m, 4, 2), RangeError, 'E_RANGE');
  }));
});

describe('dtype conversion with .to()', () => {
  for (const a of DTYPES) {
    it(`${a} -> every dtype matches Python`, scoped(() => {
      const x = torch.tensor(CONV).to(a);
      for (const b of DTYPES) expectTensor(x.to(b), R.conv[a][b]);
    }));
  }

  it('float16 / bfloat16 round trips round as torch does', scoped(() => {
    const h = torch.tensor([1.1, 2.2, -3.3, 65504.0, 1e-5, 0.1]);
    expectTensor(h.half().float(), R.roundtrip.float16, { rtol: 0, atol: 0 });
    expectTensor(h.bfloat16().float(), R.roundtrip.bfloat16, { rtol: 0, atol: 0 });
    expectTensor(h.half().bfloat16(), R.roundtrip.f16bf16, { rtol: 0, atol: 0 });
    // the shortcuts
    expect([h.double().dtype, h.long().dtype, h.int().dtype, h.bool().dtype, h.float().dtype]).toEqual(['float64', 'int64', 'int32', 'bool', 'float32']);
  }));

  it('to({dtype, device, copy}) and errors', scoped(() => {
    const x = torch.tensor([1.5, 2.5]);
    const same = x.to({ dtype: 'float32' });
    same.fill_(7); // no copy: an alias of x
    expect(x.toArray()).toEqual([7, 7]);
    const copy = x.to({ dtype: 'float32', copy: true });
    copy.fill_(1);
    expect(x.toArray()).toEqual([7, 7]);
    expect(x.to({ device: 'cpu', dtype: 'int64' }).toArray()).toEqual([7, 7]);
    expectError(() => x.to('float128' as never), TypeError, 'E_DTYPE');
    expectError(() => x.to(5 as never), TypeError, 'E_ARG');
  }));
});

describe('devices', () => {
  it("'cpu' is the default and the device property reads it", scoped(() => {
    expect(torch.zeros([1]).device).toBe('cpu');
    expect(torch.tensor([1], { device: 'cpu' }).cpu().device).toBe('cpu');
  }));

  it.skipIf(torch.cuda.isAvailable())("'cuda' requests fail with E_DEVICE when there is no GPU", scoped(() => {
    const x = torch.ones([2]);
    for (const dev of ['cuda', 'cuda:0', 'cuda:1'] as const) {
      expectError(() => torch.zeros([2], { device: dev }), torch.TorchError, 'E_DEVICE');
      expectError(() => torch.tensor([1, 2], { device: dev }), torch.TorchError, 'E_DEVICE');
      expectError(() => torch.randn([2], { device: dev }), torch.TorchError, 'E_DEVICE');
      expectError(() => x.to(dev), torch.TorchError, 'E_DEVICE');
    }
    expectError(() => x.cuda(), torch.TorchError, 'E_DEVICE');
    expectError(() => torch.zerosLike(x, { device: 'cuda' }), torch.TorchError, 'E_DEVICE');
  }));

  it('malformed device strings are RangeErrors', scoped(() => {
    for (const dev of ['gpu', 'cuda:', 'cuda:-1', 'CPU', ''] as const) {
      expectError(() => torch.zeros([2], { device: dev as never }), RangeError, 'E_DEVICE');
    }
  }));
});

describe('fromBuffer', () => {
  it('shares memory with an aligned buffer: writes are visible both ways', scoped(() => {
    const buf = new Float32Array([1, 2, 3, 4, 5, 6]);
    const t = torch.fromBuffer(buf, 'float32', [2, 3]);
    buf[0] = 10;
    expect(t.index(0, 0).item()).toBe(10);
    t.mul_(2);
    expect(Array.from(buf)).toEqual([20, 4, 6, 8, 10, 12]);
    // an ArrayBuffer and a view at an aligned offset share too
    const ab = new ArrayBuffer(24);
    const f64 = torch.fromBuffer(ab, 'float64', [3]);
    f64.fill_(1.5);
    expect(Array.from(new Float64Array(ab))).toEqual([1.5, 1.5, 1.5]);
    const off = torch.fromBuffer(new Uint8Array(ab, 8, 16), 'float64', [2]);
    off.fill_(-1);
    expect(Array.from(new Float64Array(ab))).toEqual([1.5, -1, -1]);
  }));

  it('falls back to a copy at a misaligned offset, and on request', scoped(() => {
    const raw = new Uint8Array(17);
    const dv = new DataView(raw.buffer);
    for (let i = 0; i < 4; i++) dv.setFloat32(1 + 4 * i, i + 0.5, true);
    const t = torch.fromBuffer(new Uint8Array(raw.buffer, 1, 16), 'float32', [4]);
    expect(t.toArray()).toEqual([0.5, 1.5, 2.5, 3.5]);
    t.fill_(0); // a copy: the JS bytes stay as they were
    expect(dv.getFloat32(1, true)).toBe(0.5);
    const src = new Int32Array([1, 2]);
    const c = torch.fromBuffer(src, 'int32', [2], { copy: true });
    src[0] = 5;
    expect(c.toArray()).toEqual([1, 2]);
  }));

  it('reinterprets bytes as the given dtype, and checks the byte count', scoped(() => {
    const u8 = new Uint8Array([0, 0, 128, 63]); // 1.0f little-endian
    expect(torch.fromBuffer(u8, 'float32', [1]).item()).toBe(1);
    expect(torch.fromBuffer(new Uint8Array([1, 0, 1]), 'bool', [3]).toArray()).toEqual([true, false, true]);
    // without a shape: 1-d over the whole buffer
    expect(torch.fromBuffer(new Float64Array([1, 2, 3]).buffer, 'float64').toArray()).toEqual([1, 2, 3]);
    expectError(() => torch.fromBuffer(new Uint8Array(7), 'float32'), RangeError, 'E_SHAPE');
    expectError(() => torch.fromBuffer(new Float32Array(3), 'float32', [2, 2]), RangeError, 'E_SHAPE');
    expectError(() => torch.fromBuffer([1, 2] as never, 'float32', [2]), TypeError, 'E_ARG');
    expectError(() => torch.fromBuffer(new Float32Array(3), 'float32', [-3]), RangeError, 'E_SHAPE');
  }));

  it('keeps the memory alive after the JS buffer is dropped and collected', () => {
    // A child process with --expose-gc: drop every JS reference to the buffer, collect, allocate over
    // the freed space, then read through the tensor.
    const script = `
      import { torch } from './lib/index.js';
      let t;
      (() => {
        const b = new Float64Array(4096);
        for (let i = 0; i < b.length; i++) b[i] = i * 0.5;
        t = torch.fromBuffer(b, 'float64', [4096]);
      })();
      for (let k = 0; k < 5; k++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 5)); }
      const junk = []; for (let k = 0; k < 200; k++) junk.push(new Float64Array(4096).fill(-1));
      const [s, last] = torch.scope(() => [t.sum().item(), t.index(4095).item()]);
      const bytes = torch.memory().bytes.cpu;
      t.dispose();
      console.log(JSON.stringify({ s, last, freed: bytes - torch.memory().bytes.cpu, live: torch.memory().liveTensors, junk: junk.length }));
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: new URL('..', import.meta.url).pathname, encoding: 'utf8',
    });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    expect(r.s).toBe((4095 * 4096) / 2 * 0.5);
    expect(r.last).toBe(4095 * 0.5);
    // disposing the tensor releases its storage (and with it the hold on the JS buffer)
    expect(r.freed).toBe(4096 * 8);
    expect(r.live).toBe(0);
  });
});
