/**
 * Autograd: gradients against Python torch 1.13, retainGraph, double backward (createGraph), grad
 * mode nesting, detach, .grad access and backwardAsync.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { py, type PyTensor } from './helpers/python.js';
import { native } from '../lib/torch/native.js';
import { op } from '../lib/torch/ops.js';
import { expectTensor, scoped, thrown } from './helpers/tensor-expect.js';

type Tensor = torch.Tensor;

// Inputs are exact float32 values known to both sides.
const X = [[0.5, -1.25, 2.0], [0.125, 0.75, -0.375]];
const W = [[1.5, -0.5], [0.25, 2.0], [-1.0, 0.5]];
const T = [1, 0];

let ref: Record<string, PyTensor>;

beforeAll(() => {
  ref = py<Record<string, PyTensor>>(`
    X = torch.tensor(${JSON.stringify(X)}, requires_grad=True)
    W = torch.tensor(${JSON.stringify(W)}, requires_grad=True)
    # f1: elementwise chain
    (X.sin() * X.exp()).sum().backward()
    out['f1_x'] = X.grad.clone(); X.grad = None
    # f2: matmul + tanh + mean, gradient for both operands
    (X @ W).tanh().pow(2).mean().backward()
    out['f2_x'] = X.grad.clone(); out['f2_w'] = W.grad.clone(); X.grad = None; W.grad = None
    # f3: cross entropy of a linear layer
    torch.nn.functional.cross_entropy(X @ W, torch.tensor(${JSON.stringify(T)})).backward()
    out['f3_x'] = X.grad.clone(); out['f3_w'] = W.grad.clone(); X.grad = None; W.grad = None
    # f4: layer norm + softmax, with a non-scalar output and an explicit upstream gradient
    y = torch.softmax(torch.nn.functional.layer_norm(X, [3]), dim=1)
    y.backward(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]))
    out['f4_x'] = X.grad.clone(); X.grad = None
    # double backward: Hessian-vector product of sum(x^3 * sin(x))
    x = torch.tensor([0.5, -1.5, 2.0], requires_grad=True)
    g, = torch.autograd.grad((x.pow(3) * x.sin()).sum(), x, create_graph=True)
    out['g1'] = g.detach().clone()
    h, = torch.autograd.grad((g * torch.tensor([1.0, -2.0, 0.5])).sum(), x)
    out['hvp'] = h
  `);
});

function leaf(data: number[][] | number[]): Tensor {
  return torch.tensor(data, { dtype: 'float32' }).requiresGrad_();
}

describe('gradients match Python torch 1.13', () => {
  it('elementwise chain: sum(sin(x) * exp(x))', scoped(() => {
    const x = leaf(X);
    x.sin().mul(x.exp()).sum().backward();
    expectTensor(x.grad!, ref.f1_x!);
  }));

  it('matmul, tanh, pow, mean (both operands)', scoped(() => {
    const x = leaf(X), w = leaf(W);
    x.matmul(w).tanh().pow(2).mean().backward();
    expectTensor(x.grad!, ref.f2_x!);
    expectTensor(w.grad!, ref.f2_w!);
  }));

  it('cross entropy of a linear map', scoped(() => {
    const x = leaf(X), w = leaf(W);
    torch.crossEntropy(x.matmul(w), torch.tensor(T, { dtype: 'int64' })).backward();
    expectTensor(x.grad!, ref.f3_x!);
    expectTensor(w.grad!, ref.f3_w!);
  }));

  it('non-scalar output with an explicit upstream gradient (layerNorm + softmax)', scoped(() => {
    const x = leaf(X);
    const y = torch.softmax(torch.layerNorm(x, [3]), 1);
    y.backward(torch.tensor([[1, 2, 3], [-1, 0.5, 0]], { dtype: 'float32' }));
    expectTensor(x.grad!, ref.f4_x!);
  }));

  it('a non-scalar output without an upstream gradient is a typed E_SHAPE error', scoped(() => {
    const x = leaf(X);
    const e = thrown(() => x.mul(2).backward());
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(e.code).toBe('E_SHAPE');
    expect(e.message).toMatch(/scalar outputs.*Tensor\[2, 3\] Float/);
  }));
});

describe('retainGraph', () => {
  it('a second backward through a freed graph throws E_AUTOGRAD; with retainGraph it accumulates', scoped(() => {
    const x = leaf([1, 2, 3]);
    const y = x.mul(x).sum(); // MulBackward saves x; backward frees saved tensors unless retained
    y.backward(null, { retainGraph: true });
    expect(x.grad!.toArray()).toEqual([2, 4, 6]);
    y.backward(); // graph was retained: works, and gradients accumulate
    expect(x.grad!.toArray()).toEqual([4, 8, 12]);
    const e = thrown(() => y.backward()); // the previous call freed the graph
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(e.code).toBe('E_AUTOGRAD');
    expect(e.message).toMatch(/backward through the graph a second time/);
    expect(e.message).not.toMatch(/Exception raised from/);
    expect(x.grad!.toArray()).toEqual([4, 8, 12]); // the failed call changed nothing
  }));

  it('backward on a tensor that does not require grad is E_AUTOGRAD', scoped(() => {
    const e = thrown(() => torch.ones([2]).sum().backward());
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(e.code).toBe('E_AUTOGRAD');
  }));

  it('an in-place op on a leaf that requires grad is E_AUTOGRAD', scoped(() => {
    const e = thrown(() => leaf([1, 2]).add_(1));
    expect(e.code).toBe('E_AUTOGRAD');
    expect(e.message).toMatch(/^aten::add_\.Scalar\(Tensor\[2\] Float/);
  }));
});

describe('torch.autograd.grad', () => {
  it('createGraph gives a differentiable gradient: Hessian-vector product matches Python', scoped(() => {
    const x = leaf([0.5, -1.5, 2.0]);
    const [g] = torch.autograd.grad(x.pow(3).mul(x.sin()).sum(), x, { createGraph: true });
    expect(g!.requiresGrad).toBe(true);
    expect(g!.gradFn).not.toBeNull();
    expectTensor(g!, ref.g1!);
    const [h] = torch.autograd.grad(g!.mul(torch.tensor([1, -2, 0.5], { dtype: 'float32' })).sum(), x);
    expectTensor(h!, ref.hvp!);
    expect(x.grad).toBeNull(); // grad() returns gradients, it does not accumulate them
  }));

  it('exact second derivative of x^3 through backward(createGraph)', scoped(() => {
    const x = leaf([1, 2, -3]);
    x.pow(3).sum().backward(null, { createGraph: true });
    const g = x.grad!; // 3x^2, with a graph
    expect(g.toArray()).toEqual([3, 12, 27]);
    const [h] = torch.autograd.grad(g.sum(), x);
    expect(h!.toArray()).toEqual([6, 12, -18]); // 6x
  }));

  it('without createGraph the gradient has no graph', scoped(() => {
    const x = leaf([1, 2]);
    const [g] = torch.autograd.grad(x.pow(2).sum(), [x]);
    expect(g!.requiresGrad).toBe(false);
    expect(g!.toArray()).toEqual([2, 4]);
  }));

  it('allowUnused returns null for inputs the output does not depend on; otherwise E_AUTOGRAD', scoped(() => {
    const x = leaf([1, 2]), z = leaf([3]);
    const y = x.sum();
    expect(thrown(() => torch.autograd.grad(y, [x, z], { retainGraph: true })).code).toBe('E_AUTOGRAD');
    const [gx, gz] = torch.autograd.grad(y, [x, z], { allowUnused: true });
    expect(gx!.toArray()).toEqual([1, 1]);
    expect(gz).toBeNull();
  }));

  it('gradOutputs weight a non-scalar output', scoped(() => {
    const x = leaf([1, 2, 3]);
    const [g] = torch.autograd.grad(x.mul(x), x, { gradOutputs: [torch.tensor([1, 0, -1], { dtype: 'float32' })] });
    expect(g!.toArray()).toEqual([2, 0, -6]);
  }));
});

describe('grad mode', () => {
  it('noGrad / enableGrad nest and restore the outer mode', scoped(() => {
    const x = leaf([1, 2]);
    expect(torch.isGradEnabled()).toBe(true);
    const seen: boolean[] = [];
    const r = torch.noGrad(() => {
      seen.push(torch.isGradEnabled());
      const a = x.mul(2);
      const b = torch.enableGrad(() => {
        seen.push(torch.isGradEnabled());
        const inner = torch.noGrad(() => (seen.push(torch.isGradEnabled()), x.mul(4)));
        seen.push(torch.isGradEnabled());
        return [x.mul(3), inner] as const;
      });
      seen.push(torch.isGradEnabled());
      return [a, ...b] as const;
    });
    expect(seen).toEqual([false, true, false, true, false]);
    expect(torch.isGradEnabled()).toBe(true);
    const [a, b, c] = r;
    expect(a.requiresGrad).toBe(false);
    expect(a.gradFn).toBeNull();
    expect(b.requiresGrad).toBe(true);
    expect(b.gradFn).toMatch(/^MulBackward/);
    expect(c.requiresGrad).toBe(false);
  }));

  it('an exception inside noGrad still restores grad mode', () => {
    expect(() => torch.noGrad(() => {
      throw new Error('boom');
    })).toThrow('boom');
    expect(torch.isGradEnabled()).toBe(true);
  });

  it('noGrad rejects async functions (grad mode is per thread) and restores the mode', () => {
    const e = thrown(() => torch.noGrad(async () => 1));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.code).toBe('E_ARG');
    expect(torch.isGradEnabled()).toBe(true);
  });

  it('setGradEnabled returns the previous mode', () => {
    expect(torch.setGradEnabled(false)).toBe(true);
    expect(torch.isGradEnabled()).toBe(false);
    expect(torch.setGradEnabled(true)).toBe(false);
    expect(torch.isGradEnabled()).toBe(true);
  });
});

describe('detach and .grad', () => {
  it('detach shares memory, has no grad, and stops gradient flow', scoped(() => {
    const x = leaf([1, 2, 3]);
    const y = x.mul(2);
    const d = y.detach();
    expect(d.requiresGrad).toBe(false);
    expect(d.gradFn).toBeNull();
    expect(d.isLeaf).toBe(true);
    // the gradient only flows through the non-detached path: d(y*d)/dx = 2*d = [4, 8, 12]
    y.mul(d).sum().backward();
    expect(x.grad!.toArray()).toEqual([4, 8, 12]); // without detach it would be 8x
    const dx = x.detach();
    dx.mul_(10); // shares storage with x
    expect(x.toArray()).toEqual([10, 20, 30]);
  }));

  it('.grad is null before backward, can be set, cleared, and shape/dtype are checked', scoped(() => {
    const x = leaf([1, 2]);
    expect(x.grad).toBeNull();
    x.grad = torch.tensor([5, 6], { dtype: 'float32' });
    expect(x.grad!.toArray()).toEqual([5, 6]);
    x.sum().backward(); // accumulates into the set gradient
    expect(x.grad!.toArray()).toEqual([6, 7]);
    x.grad = null;
    expect(x.grad).toBeNull();
    expect(thrown(() => (x.grad = torch.ones([3]))).code).toBe('E_SHAPE');
    expect(thrown(() => (x.grad = torch.ones([2], { dtype: 'float64' }))).code).toBe('E_DTYPE');
  }));

  it('requiresGrad_ toggles and is reported', scoped(() => {
    const x = torch.ones([2]);
    expect(x.requiresGrad).toBe(false);
    expect(x.requiresGrad_().requiresGrad).toBe(true);
    expect(x.requiresGrad_(false).requiresGrad).toBe(false);
    // integer tensors cannot require grad: a typed dtype error
    expect(thrown(() => torch.ones([2], { dtype: 'int64' }).requiresGrad_()).code).toBe('E_DTYPE');
  }));
});

describe('backwardAsync', () => {
  it('computes the same gradients as backward, off the main thread', async () => {
    const before = torch.memory().liveTensors;
    await torch.scopeAsync(async () => {
      const x = leaf(X), w = leaf(W);
      await torch.autograd.backwardAsync(x.matmul(w).tanh().pow(2).mean());
      expectTensor(x.grad!, ref.f2_x!);
      expectTensor(w.grad!, ref.f2_w!);
      // errors reject with a typed error
      const err = await torch.autograd.backwardAsync(x.mul(2)).then(() => null, (e: Error & { code?: string }) => e);
      expect(err).toBeInstanceOf(torch.TorchError);
      expect(err!.code).toBe('E_SHAPE');
    });
    expect(torch.memory().liveTensors).toBe(before);
  });
});

describe('forward-mode AD: autograd.jvp', () => {
  it('gives J·v of a composite function, like torch.func.jvp, and leaks nothing', () => {
    const before = torch.memory().liveTensors;
    torch.scope(() => {
      const x = torch.tensor([0.5, -1, 2]), v = torch.tensor([1, 2, 3], { dtype: 'float32' });
      const w = torch.tensor([[1, 2, 3], [4, 5, 6]], { dtype: 'float32' });
      // f(x) = W·(x³) + sin(x)·0 → J = W·diag(3x²)
      const { output, jvp } = torch.autograd.jvp((a) => w.matmul(a.pow(3)), [x], [v]);
      expect(output.toArray()).toEqual(w.matmul(x.pow(3)).toArray());
      const want = w.matmul(x.square().mul(3).mul(v));
      expect(jvp.sub(want).abs().max().item()).toBeLessThan(1e-5);
      expect(jvp.requiresGrad).toBe(false);
      // two primals; an output that ignores the primals has a zero JVP
      const two = torch.autograd.jvp((a, b) => a.mul(b), [x, v], [v, x]);
      expect(two.jvp.sub(v.mul(v).add(x.mul(x))).abs().max().item()).toBeLessThan(1e-6); // d(ab) = b·da + a·db
      expect(torch.autograd.jvp(() => w.sum(), [x], [v]).jvp.item()).toBe(0);
    });
    expect(torch.memory().liveTensors).toBe(before);
  });

  it('rejects bad arguments with typed errors and leaves no dual level open', () => {
    const x = torch.tensor([1, 2], { dtype: 'float32' });
    expect(() => torch.autograd.jvp(null as never, [x], [x])).toThrow(TypeError);
    expect(() => torch.autograd.jvp((a) => a, [torch.tensor([1, 2])], [x])).toThrow(/floating/);
    expect(() => torch.autograd.jvp((a) => a, [x], [])).toThrow(/1 primals but 0 tangents/);
    expect(() => torch.autograd.jvp(() => 3 as never, [x], [x])).toThrow(/must return a Tensor/);
    expect(() => torch.autograd.jvp(() => { throw new Error('boom'); }, [x], [x])).toThrow('boom');
    // still usable after the failures (levels were released)
    expect(torch.autograd.jvp((a) => a.mul(2), [x], [x]).jvp.toArray()).toEqual([2, 4]);
  });
});

describe('sdpaKernel', () => {
  it("['math'] makes scaled_dot_product_attention forward-differentiable (2.x); restores the backends after, also on a throw", () => {
    torch.scope(() => {
      const q = torch.randn([1, 2, 5, 4]), k = torch.randn([1, 2, 5, 4]), v = torch.randn([1, 2, 5, 4]);
      if (torch.hasOp('aten::scaled_dot_product_attention')) {
        const sdpa = (a: Tensor) => new torch.Tensor(native.call(op('aten::scaled_dot_product_attention')(), a._h, k._h, v._h) as number);
        // the fused CPU kernel has no forward derivative: the default backends fail, math works
        expect(() => torch.autograd.jvp(sdpa, [q], [q])).toThrow(/forward AD|not implemented/);
        const { jvp } = torch.sdpaKernel(['math'], () => torch.autograd.jvp(sdpa, [q], [q]));
        expect(jvp.abs().max().item()).toBeGreaterThan(0);
        expect(() => torch.autograd.jvp(sdpa, [q], [q])).toThrow(/forward AD|not implemented/);
        expect(native.sdpBackends()).toBeGreaterThan(1);
      } else {
        expect(native.sdpBackends()).toBe(0); // libtorch 1.13: no such op, nothing to switch
      }
      const before = native.sdpBackends();
      expect(torch.sdpaKernel(['math'], () => 7)).toBe(7);
      expect(() => torch.sdpaKernel(['math'], () => { throw new RangeError('x'); })).toThrow(RangeError);
      expect(native.sdpBackends()).toBe(before);
      expect(() => torch.sdpaKernel(['fast' as never], () => 1)).toThrow(TypeError);
      expect(() => torch.sdpaKernel(['math'], (async () => 1) as never)).toThrow(/synchronous/);
      expect(native.sdpBackends()).toBe(before);
    });
  });
});
