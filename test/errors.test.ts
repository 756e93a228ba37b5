/**
 * The error funnel: libtorch errors become TorchError with a code, a message that names the op and
 * the argument shapes/dtypes and carries no C++ backtrace; JS-side mistakes are TypeError /
 * RangeError with a code. The classifier is checked against real libtorch messages.
 */
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { native } from '../lib/torch/native.js';
import { thrown } from './helpers/tensor-expect.js';

type Err = Error & { code?: string };
type Tensor = torch.Tensor;

/** Runs fn in a scope and returns the error it threw. */
function err(fn: () => unknown): Err {
  return torch.scope(() => thrown(fn));
}

function expectTorch(e: Err, code: string, message?: RegExp): void {
  expect(e, `${e.name}: ${e.message}`).toBeInstanceOf(torch.TorchError);
  expect(e.name).toBe('TorchError');
  expect(e.code, e.message).toBe(code);
  expect(e.message).not.toMatch(/Exception raised from|frame #\d|\.cpp:\d+/);
  if (message) expect(e.message).toMatch(message);
}

const f32 = (shape: number[]): Tensor => torch.ones(shape);
const i64 = (data: number[] | number[][]): Tensor => torch.tensor(data, { dtype: 'int64' });

describe('typed codes for libtorch failures', () => {
  it('shape mismatch: E_SHAPE, message names the op and both shapes', () => {
    expectTorch(err(() => f32([2, 3]).add(f32([4]))), 'E_SHAPE',
      /^aten::add\.Tensor\(Tensor\[2, 3\] Float, Tensor\[4\] Float, 1\): The size of tensor a \(3\) must match/);
    expectTorch(err(() => f32([2, 3]).matmul(f32([4, 5]))), 'E_SHAPE', /aten::matmul\(Tensor\[2, 3\] Float, Tensor\[4, 5\] Float\).*2x3 and 4x5/);
    expectTorch(err(() => f32([2, 3]).view([4])), 'E_SHAPE', /aten::view\(Tensor\[2, 3\] Float, \[4\]\)/);
    expectTorch(err(() => torch.conv2d(f32([1, 3, 8, 8]), f32([4, 2, 3, 3]))), 'E_SHAPE', /aten::conv2d\(Tensor\[1, 3, 8, 8\] Float, Tensor\[4, 2, 3, 3\] Float/);
    expectTorch(err(() => torch.cat([f32([2, 3]), f32([2, 4])], 0)), 'E_SHAPE', /aten::cat\(\[Tensor\[2, 3\] Float, Tensor\[2, 4\] Float\], 0\)/);
  });

  it('dtype mismatch: E_DTYPE', () => {
    expectTorch(err(() => f32([2, 2]).mm(torch.ones([2, 2], { dtype: 'float64' }))), 'E_DTYPE',
      // libtorch's own words differ by version (1.13: "expected scalar type Float but found Double",
      // 2.x: "expected m1 and m2 to have the same dtype, but got: float != double"); the code does not
      /^aten::mm\(Tensor\[2, 2\] Float, Tensor\[2, 2\] Double\): expected (scalar type Float but found Double|m1 and m2 to have the same dtype, but got: float != double)/);
    expectTorch(err(() => torch.crossEntropy(f32([2, 3]), f32([2]))), 'E_DTYPE', /aten::cross_entropy_loss/);
    expectTorch(err(() => torch.ones([2], { dtype: 'uint8' }).add_(f32([2]))), 'E_DTYPE', /can't be cast/);
    expectTorch(err(() => torch.where(f32([2]), f32([2]), f32([2]))), 'E_DTYPE');
    expectTorch(err(() => f32([2, 3]).gather(1, torch.tensor([[0]], { dtype: 'float32' }))), 'E_DTYPE');
    expectTorch(err(() => torch.ones([2], { dtype: 'bool' }).sub(torch.ones([2], { dtype: 'bool' }))), 'E_DTYPE');
  });

  it('index out of range: E_INDEX', () => {
    expectTorch(err(() => f32([2, 3]).select(0, 5)), 'E_INDEX', /aten::select\.int\(Tensor\[2, 3\] Float, 0, 5\)/);
    expectTorch(err(() => f32([2, 3]).gather(1, i64([[5]]))), 'E_INDEX', /out of bounds/);
    expectTorch(err(() => f32([2, 3]).indexSelect(0, i64([7]))), 'E_INDEX');
    expectTorch(err(() => torch.embedding(f32([3, 4]), i64([9]))), 'E_INDEX');
    expectTorch(err(() => f32([2, 3]).transpose(0, 5)), 'E_INDEX', /Dimension out of range/);
    expectTorch(err(() => torch.crossEntropy(f32([2, 3]), i64([0, 5]))), 'E_INDEX');
  });

  it('use after dispose: E_DISPOSED, naming the op and which argument was disposed', () => {
    const a = torch.ones([2]);
    a.dispose();
    expectTorch(err(() => a.add(1)), 'E_DISPOSED', /^aten::add\.Scalar\(<disposed tensor>, 1, 1\): tensor was disposed/);
    expectTorch(err(() => a.shape), 'E_DISPOSED');
    expectTorch(err(() => torch.cat([f32([1]), a])), 'E_DISPOSED');
  });

  it("device 'cuda' without CUDA: E_DEVICE (JS check and libtorch's own error)", async () => {
    if (torch.cuda.isAvailable()) {
      // with CUDA present, mixing devices is the device error
      expectTorch(err(() => f32([2]).add(torch.ones([2], { device: 'cuda' }))), 'E_DEVICE');
      return;
    }
    expectTorch(err(() => torch.ones([2], { device: 'cuda' })), 'E_DEVICE');
    expectTorch(err(() => f32([2]).to('cuda')), 'E_DEVICE');
    // Past the JS check, straight to the dispatcher: a CPU libtorch has no CUDA kernels ("Could not
    // run ... from the 'CUDA' backend"); a CUDA build without a GPU finds no driver.
    const e = await torch.callOpAsync('aten::ones', '', [2], null, null, 'cuda').then(() => null, (x: Err) => x);
    expectTorch(e!, 'E_DEVICE', torch.buildInfo().cudaBuild
      ? /^aten::ones\(\[2\], None, None, 'cuda'\): Found no NVIDIA driver/
      : /^aten::ones\(\[2\], None, None, 'cuda'\): Could not run 'aten::/);
    expect(e!.message).not.toMatch(/Facebook|This could be because/); // developer boilerplate trimmed
  });

  it('a huge allocation is E_OOM, not a crash', () => {
    const before = torch.memory().liveTensors;
    const e = err(() => torch.zeros([2 ** 40]));
    expectTorch(e, 'E_OOM', /^aten::zeros\(\[1099511627776\].*can't allocate memory/);
    expect(e.message).not.toMatch(/enforce fail/);
    expectTorch(err(() => torch.empty([2 ** 24, 2 ** 20], { dtype: 'float64' })), 'E_OOM');
    // beyond the JS-side element limit it is a RangeError before reaching C++
    const r = err(() => torch.zeros([2 ** 30, 2 ** 30]));
    expect(r).toBeInstanceOf(RangeError);
    expect(r.code).toBe('E_OOM');
    expect(torch.memory().liveTensors).toBe(before);
  });

  it('autograd misuse: E_AUTOGRAD', () => {
    expectTorch(err(() => f32([2]).sum().backward()), 'E_AUTOGRAD', /does not require grad/);
    expectTorch(err(() => f32([2]).requiresGrad_().mul_(2)), 'E_AUTOGRAD', /leaf Variable/);
    expectTorch(err(() => {
      const x = f32([2]).requiresGrad_();
      const y = x.exp().sum();
      y.backward();
      y.backward();
    }), 'E_AUTOGRAD', /^backward: Trying to backward through the graph a second time/);
  });

  it('values libtorch rejects (well-typed, well-shaped) are E_VALUE', () => {
    expectTorch(err(() => f32([3]).uniform_(2, 1)), 'E_VALUE', /^aten::uniform_\(Tensor\[3\] Float, 2, 1\): uniform_ expects/);
    expectTorch(err(() => f32([3]).normal_(0, -1)), 'E_VALUE', /std >= 0/);
  });

  it('other libtorch errors still carry a code and no backtrace', () => {
    const e = err(() => i64([2]).pow(-1));
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(typeof e.code).toBe('string');
    expect(e.message).toMatch(/^aten::pow\.Tensor_Scalar\(Tensor\[1\] Long, -1\)/);
  });
});

describe('JS-side argument errors', () => {
  it('wrong types are TypeError, bad values RangeError, each with a code, before C++', () => {
    const cases: [() => unknown, typeof TypeError | typeof RangeError][] = [
      [() => torch.ones('x' as never), TypeError],
      [() => torch.ones([2.5]), TypeError],
      [() => torch.ones([-1]), RangeError],
      [() => torch.ones([2], { dtype: 'float128' as never }), TypeError],
      [() => torch.ones([2], { device: 'tpu' as never }), RangeError],
      [() => f32([2]).add('1' as never), TypeError],
      [() => f32([2]).matmul(null as never), TypeError],
      [() => torch.manualSeed(-3), RangeError],
      [() => torch.setNumThreads(0), RangeError],
      [() => torch.scope(null as never), TypeError],
      [() => torch.noGrad('f' as never), TypeError],
    ];
    for (const [fn, cls] of cases) {
      const e = err(fn);
      expect(e, `${fn.toString()} -> ${e.name}: ${e.message}`).toBeInstanceOf(cls);
      expect(typeof e.code, e.message).toBe('string');
    }
  });

  it('native argument conversion errors are typed too (integers, booleans, strings)', () => {
    const add = torch.schemaOf('aten::add', 'Tensor');
    expect(add).toMatch(/^aten::add\.Tensor\(Tensor self, Tensor other, \*, Scalar alpha=1\) -> Tensor/);
    torch.scope(() => {
      const t = f32([2]);
      // a fraction where libtorch wants an int
      const e1 = thrown(() => t.sum(0.5 as never));
      expect(e1).toBeInstanceOf(TypeError);
      expect(typeof e1.code).toBe('string');
    });
  });

  it('a JS exception raised while native code reads an argument becomes a TypeError with code E_ARG', () => {
    const arr: number[] = [1];
    Object.defineProperty(arr, 0, { get() { throw new Error('getter trap'); } });
    const e = thrown(() => native.freeMany(arr));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.code).toBe('E_ARG');
    expect(e.message).toMatch(/getter trap/);
  });

  it('TorchError is an Error subclass with name, code and a readable stack', () => {
    const e = err(() => f32([2]).add(f32([3])));
    expect(e).toBeInstanceOf(Error);
    expect(String(e)).toMatch(/^TorchError: aten::add/);
    expect(e.stack).toMatch(/errors\.test\.ts/); // the JS call site, not C++
    const made = new torch.TorchError('x', 'E_VALUE');
    expect(made.code).toBe('E_VALUE');
  });
});
