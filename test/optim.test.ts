/**
 * Optimizers against Python's torch 1.13 (bit for bit), parameter groups, zeroGrad, memory, errors.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { py } from './helpers/python.js';
import { libmPow } from '../lib/torch/optim/pow.js';
import { pythonRuns, fromPy, expectSameBits, setGrad, type RefCase, type RefRun } from './helpers/optim_ref.js';

const { AdamW, Adam, SGD } = torch.optim;
type Opt = InstanceType<typeof AdamW> | InstanceType<typeof Adam> | InstanceType<typeof SGD>;

/** Replays a Python reference run in TS and checks every step's parameters and the final state bit for bit. */
function replay(ref: RefRun, make: (ps: Tensor[]) => Opt, stateNames: string[]): void {
  const ps = ref.init.map((t) => fromPy(t, true));
  const opt = make(ps);
  try {
    ref.grads.forEach((gs, k) => {
      ps.forEach((p, i) => setGrad(p, gs[i]!));
      opt.step();
      ps.forEach((p, i) => expectSameBits(p, ref.params[k]![i]!, `step ${k + 1} param ${i}`));
    });
    const sd = opt.stateDict();
    ps.forEach((_, i) => {
      for (const name of stateNames) expectSameBits(sd.tensors[`state.${i}.${name}`]!, ref.state[i]![name]!, `state ${i} ${name}`);
    });
    for (const t of Object.values(sd.tensors)) t.dispose();
  } finally {
    opt.dispose();
    for (const p of ps) p.dispose();
  }
}

/** Python reference runs, all computed in one Python process before the tests. */
const CASES = {
  adamwSingle: { ctor: 'torch.optim.AdamW(ps, lr=3e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1)', steps: 6, seed: 1 },
  adamwForeach: { ctor: 'torch.optim.AdamW(ps, lr=3e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1, foreach=True)', steps: 6, seed: 1 },
  adamwDefaults: { ctor: 'torch.optim.AdamW(ps)', steps: 4, seed: 2 },
  adam: { ctor: 'torch.optim.Adam(ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05)', steps: 6, seed: 3 },
  sgdDamp: { ctor: 'torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)', steps: 5, seed: 4 },
  sgdNesterovWd: { ctor: 'torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)', steps: 5, seed: 5 },
  sgdNesterov: { ctor: 'torch.optim.SGD(ps, lr=0.05, momentum=0.7, nesterov=True)', steps: 4, seed: 6 },
  sgdPlain: { ctor: 'torch.optim.SGD(ps, lr=0.2)', steps: 3, seed: 7 },
  adamwGroups: { ctor: `torch.optim.AdamW([{'params': ps[:2], 'lr': 1e-1}, {'params': ps[2:], 'weight_decay': 0.5, 'betas': (0.5, 0.9)}], lr=1e-2)`, steps: 4, seed: 8 },
  sgdGroups: { ctor: `torch.optim.SGD([{'params': ps[:1]}, {'params': ps[1:], 'lr': 0.01, 'momentum': 0.5}], lr=0.3, momentum=0.9)`, steps: 3, seed: 9 },
  adamwFloat64: { ctor: 'torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1)', steps: 4, seed: 10, dtype: 'float64' },
  adamwBf16: { ctor: 'torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1)', steps: 4, seed: 11, dtype: 'bfloat16' },
  adamBf16: { ctor: 'torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1)', steps: 3, seed: 12, dtype: 'bfloat16' },
  sgdFloat64: { ctor: 'torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)', steps: 3, seed: 13, dtype: 'float64' },
} satisfies Record<string, RefCase>;
const REF = {} as Record<keyof typeof CASES, RefRun>;

describe('optimizers match torch.optim bit for bit', () => {
  beforeAll(() => {
    torch.setNumThreads(1);
    const names = Object.keys(CASES) as (keyof typeof CASES)[];
    pythonRuns(names.map((n) => CASES[n])).forEach((r, i) => { REF[names[i]!] = r; });
  });
  const ADAM_STATE = ['exp_avg', 'exp_avg_sq'];

  it('AdamW (torch single-tensor and foreach paths both equal ours), 6 steps', () => {
    const make = (ps: Tensor[]) => new AdamW(ps, { lr: 3e-2, betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.1 });
    replay(REF.adamwSingle, make, ADAM_STATE);
    replay(REF.adamwForeach, make, ADAM_STATE);
  });

  it("the fused CPU denominator gives the same bits as torch's literal _foreach sequence", () => {
    const make = (ps: Tensor[]) => new AdamW(ps, { lr: 3e-2, betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.1 });
    replay(REF.adamwForeach, (ps) => Object.assign(make(ps), { _literalDenominator: true }), ADAM_STATE);
    replay(REF.adam, (ps) => Object.assign(new Adam(ps, { lr: 1e-2, betas: [0.8, 0.99], eps: 1e-8, weightDecay: 0.05 }), { _literalDenominator: true }), ADAM_STATE);
  });

  it('float64 and bfloat16 parameters (the bfloat16 denominator takes the literal path)', () => {
    const adamw = (ps: Tensor[]) => new AdamW(ps, { lr: 1e-2, betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.1 });
    replay(REF.adamwFloat64, adamw, ADAM_STATE);
    replay(REF.adamwBf16, adamw, ADAM_STATE);
    replay(REF.adamBf16, (ps) => new Adam(ps, { lr: 1e-2, weightDecay: 0.1 }), ADAM_STATE);
    replay(REF.sgdFloat64, (ps) => new SGD(ps, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 }), ['momentum_buffer']);
  });

  it('AdamW with torch defaults', () => {
    replay(REF.adamwDefaults, (ps) => new AdamW(ps), ADAM_STATE);
  });

  it('Adam with weight decay, 6 steps', () => {
    replay(REF.adam, (ps) => new Adam(ps, { lr: 1e-2, betas: [0.8, 0.99], eps: 1e-8, weightDecay: 0.05 }), ADAM_STATE);
  });

  it('SGD: momentum with dampening and weight decay; Nesterov; plain', () => {
    replay(REF.sgdDamp, (ps) => new SGD(ps, { lr: 0.1, momentum: 0.9, dampening: 0.3, weightDecay: 0.01 }), ['momentum_buffer']);
    replay(REF.sgdNesterovWd, (ps) => new SGD(ps, { lr: 0.05, momentum: 0.8, nesterov: true, weightDecay: 0.02 }), ['momentum_buffer']);
    replay(REF.sgdNesterov, (ps) => new SGD(ps, { lr: 0.05, momentum: 0.7, nesterov: true }), ['momentum_buffer']);
    replay(REF.sgdPlain, (ps) => new SGD(ps, { lr: 0.2 }), []);
  });

  it('parameter groups with their own lr, betas, weight decay and momentum', () => {
    replay(REF.adamwGroups, (ps) => new AdamW([{ params: ps.slice(0, 2), lr: 1e-1 }, { params: ps.slice(2), weightDecay: 0.5, betas: [0.5, 0.9] }], { lr: 1e-2 }), ADAM_STATE);
    replay(REF.sgdGroups, (ps) => new SGD([{ params: ps.slice(0, 1) }, { params: ps.slice(1), lr: 0.01, momentum: 0.5 }], { lr: 0.3, momentum: 0.9 }), ['momentum_buffer']);
  });
});

describe("bias corrections use Python's float power", () => {
  it('libmPow(beta, k) equals Python beta ** k, where JS ** does not', () => {
    const betas = [0.9, 0.95, 0.99, 0.999, 0.9999, 0.999999];
    const ks = [...Array.from({ length: 600 }, (_, i) => i), 2104, 2148, 2258, 2904, 50_000, 1_000_000];
    const ref = py<{ v: number[][] }>(`out['v'] = [[b ** float(k) for k in ${JSON.stringify(ks)}] for b in ${JSON.stringify(betas)}]`).v;
    let jsDiffers = 0;
    betas.forEach((b, i) => ks.forEach((k, j) => {
      expect(libmPow(b, k), `${b} ** ${k}`).toBe(ref[i]![j]);
      if (b ** k !== ref[i]![j]) jsDiffers++;
    }));
    expect(jsDiffers).toBeGreaterThan(10); // the reason libmPow exists: 0.9 ** 4 is 0.6561000000000001 in JS
    expect(0.9 ** 4).not.toBe(libmPow(0.9, 4));
  });
});

describe('optimizer behaviour', () => {
  it('skips parameters without gradients and leaves .grad untouched (Adam/SGD weight decay)', () => {
    const a = torch.tensor([1, 2, 3], { dtype: 'float32', requiresGrad: true });
    const b = torch.tensor([4, 5], { dtype: 'float32', requiresGrad: true });
    const opt = new Adam([a, b], { lr: 0.1, weightDecay: 0.5 });
    setGrad(a, { __tensor__: true, dtype: 'float32', shape: [3], data: [0.5, -1, 2], repr: '' });
    opt.step();
    expect(b.toArray()).toEqual([4, 5]);
    expect(a.toArray()).not.toEqual([1, 2, 3]);
    const g = a.grad!;
    expect(g.toArray()).toEqual([0.5, -1, 2]);
    g.dispose();
    expect(opt.stateDict().meta.state).toEqual({ '0': { step: 1 } });
    opt.dispose();
    a.dispose();
    b.dispose();
  });

  it('zeroGrad: setToNone drops gradients; setToNone false zero-fills them in place', () => {
    const p = torch.tensor([1, 2], { dtype: 'float32', requiresGrad: true });
    const opt = new SGD([p], { lr: 0.1 });
    const y = p.mul(p).sum();
    y.backward();
    const g = p.grad!;
    opt.zeroGrad({ setToNone: false });
    expect(g.toArray()).toEqual([0, 0]); // same storage, zeroed
    const g2 = p.grad!;
    expect(g2.toArray()).toEqual([0, 0]);
    opt.zeroGrad();
    expect(p.grad).toBeNull();
    opt.zeroGrad({ setToNone: false }); // no gradients: nothing to do, no error
    expect(p.grad).toBeNull();
    for (const t of [y, g, g2, p]) t.dispose();
    opt.dispose();
  });

  it('step() leaks no tensors over 100 steps, inside and outside scopes', () => {
    const ps = [torch.randn([8, 8], { requiresGrad: true }), torch.randn([8], { requiresGrad: true })];
    const opts = [new AdamW(ps, { lr: 1e-3 }), new Adam(ps, { lr: 1e-3, weightDecay: 0.1 }), new SGD(ps, { lr: 1e-3, momentum: 0.9, nesterov: true, weightDecay: 0.1 })];
    for (const opt of opts) {
      const run = (): void => {
        torch.scope(() => ps[0]!.sum().add(ps[1]!.mul(ps[1]!).sum()).backward());
        torch.nn.utils.clipGradNorm_(ps, 0.5);
        opt.step();
        opt.zeroGrad();
      };
      run(); // creates the state
      const before = torch.memory().liveTensors;
      for (let i = 0; i < 50; i++) run();
      for (let i = 0; i < 50; i++) torch.scope(run);
      expect(torch.memory().liveTensors).toBe(before);
    }
    // state tensors created inside a scope survive it
    const fresh = new AdamW(ps, { lr: 1e-3 });
    torch.scope(() => {
      const loss = ps[0]!.sum();
      loss.backward();
      fresh.step();
    });
    const sd = fresh.stateDict();
    expect(sd.tensors['state.0.exp_avg']!.shape).toEqual([8, 8]);
    for (const t of Object.values(sd.tensors)) t.dispose();
    const live = torch.memory().liveTensors;
    for (const o of [...opts, fresh]) o.dispose();
    expect(torch.memory().liveTensors).toBeLessThan(live);
    for (const p of ps) p.dispose();
  });

  it('rejects bad hyperparameters and bad parameter lists with typed errors', () => {
    const p = torch.zeros([2], { requiresGrad: true });
    expect(() => new AdamW([p], { lr: -1 })).toThrow(RangeError);
    expect(() => new AdamW([p], { betas: [1, 0.9] })).toThrow(/beta parameter at index 0/);
    expect(() => new Adam([p], { eps: -1 })).toThrow(RangeError);
    expect(() => new Adam([p], { weightDecay: -0.1 })).toThrow(RangeError);
    expect(() => new SGD([p], { lr: 0.1, nesterov: true })).toThrow(/Nesterov/);
    expect(() => new SGD([p], {} as { lr: number })).toThrow(RangeError);
    expect(() => new AdamW([])).toThrow(TypeError);
    expect(() => new AdamW([{ params: [p] }, { params: [p] }])).toThrow(/appears more than once/);
    expect(() => new AdamW([p, p])).toThrow(/appears more than once/);
    const nonLeaf = p.mul(2);
    expect(() => new SGD([nonLeaf], { lr: 1 })).toThrow(/non-leaf/);
    nonLeaf.dispose();
    expect(() => new AdamW([1, 2] as unknown as Tensor[])).toThrow(TypeError);
    // unsupported torch options and typos are errors, not silently ignored
    expect(() => new AdamW([p], { amsgrad: true } as never)).toThrow(/unknown option 'amsgrad'/);
    expect(() => new SGD([p], { lr: 0.1, momentun: 0.9 } as never)).toThrow(/unknown option 'momentun'/);
    expect(() => new Adam([{ params: [p], weight_decay: 0.1 } as never])).toThrow(/unknown option 'weight_decay'/);
    const opt = new AdamW([p]);
    opt.paramGroups[0]!.lr = Number.NaN;
    const g = torch.ones([2]);
    p.grad = g;
    expect(() => opt.step()).toThrow(RangeError);
    opt.dispose();
    expect(() => opt.step()).toThrow(/after dispose/);
    const q = torch.zeros([2], { requiresGrad: true });
    q.dispose();
    expect(() => new AdamW([q])).toThrow(TypeError);
    // a parameter disposed by its owner after construction: a typed error, not a crash
    const r = torch.zeros([2], { requiresGrad: true });
    const optR = new SGD([r], { lr: 1 });
    r.dispose();
    expect(() => optR.step()).toThrow(expect.objectContaining({ code: 'E_DISPOSED' }));
    optR.dispose();
    g.dispose();
    p.dispose();
  });
});
