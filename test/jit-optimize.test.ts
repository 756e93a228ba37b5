/**
 * torch.jit.optimizedExecution (native jitSetOptimize) and TiM.graphOptimization: TorchScript's graph
 * optimizations switched per thread, and the TiM network running without them on the CPU by default.
 * With and without them the network must compute the same values and the same gradients.
 */
import { describe, expect, it } from 'vitest';
import { TiM, torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { preset } from '../lib/tim/network/index.js';

const tiny = { ...preset('TiM-B/4'), hiddenSize: 32, depth: 2, numHeads: 2, patchSize: 2, inputSize: 8, inChannels: 4, numClasses: 10, encoderDepth: 1, zDim: 16, projectorDim: 32 };

describe('torch.jit.optimizedExecution', () => {
  it('switches the setting for fn only, restores it after a throw, and refuses an async fn', () => {
    expect(torch.jit.isOptimizedExecution()).toBe(true);
    expect(torch.jit.optimizedExecution(false, () => torch.jit.isOptimizedExecution())).toBe(false);
    expect(torch.jit.optimizedExecution(false, () => torch.jit.optimizedExecution(true, () => torch.jit.isOptimizedExecution()))).toBe(true);
    expect(torch.jit.isOptimizedExecution()).toBe(true);
    expect(() => torch.jit.optimizedExecution(false, () => { throw new Error('inside'); })).toThrow('inside');
    expect(torch.jit.isOptimizedExecution()).toBe(true);
    expect(() => torch.jit.optimizedExecution(false, (async () => 1) as unknown as () => number)).toThrow(/must be synchronous/);
    expect(torch.jit.isOptimizedExecution()).toBe(true);
    expect(() => torch.jit.optimizedExecution('no' as unknown as boolean, () => 1)).toThrow(TypeError);
  });
});

describe('TiM.graphOptimization', () => {
  const run = (mode: 'auto' | 'on' | 'off', model: TiM, x: Tensor, t: Tensor, r: Tensor, y: Tensor) => torch.scope(() => {
    model.graphOptimization = mode;
    for (const p of model.parameters()) p.grad?.zero_();
    // three calls: the profiling executor optimizes from the second call on
    let out!: Tensor;
    for (let i = 0; i < 3; i++) {
      for (const p of model.parameters()) if (p.grad) p.grad.zero_();
      out = model.forward(x, t, r, y);
      out.square().mean().backward();
    }
    return torch.keep({ out: out.detach(), grads: model.parameters().filter((p) => p.grad).map((p) => p.grad!.clone()) });
  });

  it("computes the same values and gradients with the executor's optimizations on and off", () => {
    torch.manualSeed(0);
    const model = TiM.create(tiny, { init: 'official' });
    model.train();
    const x = torch.randn([4, 4, 8, 8]), t = torch.rand([4]), r = t.mul(0.5), y = torch.tensor([1, 2, 3, 10], { dtype: 'int64' });
    const on = run('on', model, x, t, r, y);
    const off = run('off', model, x, t, r, y);
    const auto = run('auto', model, x, t, r, y);
    try {
      expect(on.out.sub(off.out).abs().max().item()).toBeLessThan(1e-5);
      expect(auto.out.sub(off.out).abs().max().item()).toBe(0); // auto is off on the CPU
      expect(on.grads.length).toBe(off.grads.length);
      expect(on.grads.length).toBeGreaterThan(10);
      for (let i = 0; i < on.grads.length; i++) {
        const scale = Math.max(1e-6, off.grads[i]!.abs().max().item());
        expect(on.grads[i]!.sub(off.grads[i]!).abs().max().item() / scale).toBeLessThan(1e-4);
      }
    } finally {
      for (const s of [on, off, auto]) { s.out.dispose(); for (const g of s.grads) g.dispose(); }
      for (const v of [x, t, r, y]) v.dispose();
      model.dispose();
    }
    expect(torch.jit.isOptimizedExecution()).toBe(true); // the caller's setting is left as it was
  });

  it('a bad value is a typed error', () => {
    const model = TiM.create(tiny, { init: 'official' });
    try {
      model.graphOptimization = 'sometimes' as 'auto';
      const x = torch.randn([1, 4, 8, 8]), t = torch.rand([1]), y = torch.tensor([1], { dtype: 'int64' });
      expect(() => model.forward(x, t, t, y)).toThrow(RangeError);
      for (const v of [x, t, y]) v.dispose();
    } finally {
      model.dispose();
    }
  });
});
