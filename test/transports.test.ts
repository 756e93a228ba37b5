/**
 * Transports: mathematical identities (derivatives by finite differences, exact transport of the
 * ideal prediction, the identity step), time ranges, replayable randomness, argument errors, inputs
 * left untouched and no leaked tensors. Values against the official formulas are in
 * transports-ref.test.ts and transports-golden.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { EDM, OTFM, TrigFlow, VESDE, VPSDE, type Transport } from '../lib/tim/transports/index.js';
import { expectError, scoped } from './helpers/tensor-expect.js';

const ALL: [string, () => Transport][] = [
  ['OTFM', () => new OTFM()],
  ['TrigFlow', () => new TrigFlow()],
  ['EDM', () => new EDM()],
  ['EDM sigmaD 1', () => new EDM({ sigmaD: 1.0 })],
  ['VPSDE', () => new VPSDE()],
  ['VESDE', () => new VESDE()],
];

/** Times strictly inside (tMin, tMax), spread over the range, float64. */
function interiorTimes(tr: Transport, n = 7): Tensor {
  const lo = tr.tMin, hi = tr.tMax;
  // EDM's and VESDE's t is a noise level spanning decades: spread geometrically there
  const geometric = tr instanceof EDM || tr instanceof VESDE;
  const ts: number[] = [];
  for (let i = 1; i <= n; i++) {
    const u = i / (n + 1);
    ts.push(geometric ? lo * (hi / lo) ** u : lo + (hi - lo) * u);
  }
  return torch.tensor(ts, { dtype: 'float64' });
}

function maxAbs(a: Tensor): number {
  return torch.scope(() => a.abs().max().item());
}

/** max |a − b| / max(1, max |b|) */
function relErr(a: Tensor, b: Tensor): number {
  expect(a.shape).toEqual(b.shape);
  return torch.scope(() => a.sub(b).abs().max().item() / Math.max(1, b.abs().max().item()));
}

describe('transports: identities', () => {
  for (const [name, make] of ALL) {
    it(`${name}: dAlpha and dSigma are the time derivatives of alpha and sigma (central differences, float64)`, scoped(() => {
      const tr = make();
      const t = interiorTimes(tr);
      const ip = tr.interpolant(t);
      expect(ip.alpha.dtype).toBe('float64');
      expect(ip.dSigma.shape).toEqual(t.shape);
      const h = t.mul(1e-5); // relative step: the times span several decades for EDM and VESDE
      const up = tr.interpolant(t.add(h)), down = tr.interpolant(t.sub(h));
      const fdAlpha = up.alpha.sub(down.alpha).div(h.mul(2));
      const fdSigma = up.sigma.sub(down.sigma).div(h.mul(2));
      expect(relErr(fdAlpha, ip.dAlpha), 'dAlpha').toBeLessThan(1e-7);
      expect(relErr(fdSigma, ip.dSigma), 'dSigma').toBeLessThan(1e-7);
    }));

    it(`${name}: step from t to t is the identity`, scoped(() => {
      const tr = make();
      const x = torch.randn([3, 2, 4, 4], { dtype: 'float64' });
      const F = torch.randn([3, 2, 4, 4], { dtype: 'float64' });
      const t = interiorTimes(tr, 3);
      expect(relErr(tr.step(x, t, t, F), x)).toBeLessThan(1e-14);
    }));
  }

  // For the ideal prediction on a diffusion row (r = t, so dF/dt drops out) the target is the
  // network output that the step turns into exactly the path point at any r: x_r = alpha(r)x + sigma(r)z.
  const exact: [string, () => Transport][] = ALL.filter(([n]) => n !== 'EDM');
  for (const [name, make] of exact) {
    it(`${name}: step(x_t, t, r, F*) lands on the path at r for the ideal F* = target(r = t, dF/dt = 0)`, scoped(() => {
      const tr = make();
      const x = torch.randn([4, 2, 3, 3], { dtype: 'float64' });
      const z = torch.randn([4, 2, 3, 3], { dtype: 'float64' });
      const ts = interiorTimes(tr, 5);
      const t = ts.slice(0, 1, 5).view(4, 1, 1, 1);
      const r = ts.slice(0, 0, 4).view(4, 1, 1, 1);
      const ip = tr.interpolant(t);
      const xT = ip.alpha.mul(x).add(ip.sigma.mul(z));
      const vT = ip.dAlpha.mul(x).add(ip.dSigma.mul(z));
      const F = tr.target({ xT, vT, x, z, t, r: t, dFdvdt: 0 });
      const at = tr.interpolant(r);
      expect(relErr(tr.step(xT, t, r, F), at.alpha.mul(x).add(at.sigma.mul(z)))).toBeLessThan(1e-12);
    }));
  }

  it('EDM with sigmaD 0.5: the official step (σ_d³ in A and B) does not land exactly on the path (kept as official)', scoped(() => {
    const tr = new EDM();
    const x = torch.randn([2, 8], { dtype: 'float64' });
    const z = torch.randn([2, 8], { dtype: 'float64' });
    const t = torch.tensor([[2.0], [0.7]], { dtype: 'float64' });
    const r = torch.tensor([[0.5], [0.1]], { dtype: 'float64' });
    const ip = tr.interpolant(t);
    const xT = ip.alpha.mul(x).add(ip.sigma.mul(z));
    const F = tr.target({ xT, vT: xT, x, z, t, r: t, dFdvdt: 0 });
    const at = tr.interpolant(r);
    // x's coefficient is (σ³ + σt² + tr(1 − σ)) / (S_r(σ³ + t²)) instead of 1/S_r: off unless σ_d = 1
    expect(relErr(tr.step(xT, t, r, F), at.alpha.mul(x).add(at.sigma.mul(z)))).toBeGreaterThan(1e-3);
  }));

  it('OTFM: the velocity is z − x and the stochastic step adds exactly sqrt(2·s·t·dt)·eps beyond the drift', scoped(() => {
    const tr = new OTFM();
    const x = torch.randn([2, 3, 4, 4]), z = torch.randn([2, 3, 4, 4]), eps = torch.randn([2, 3, 4, 4]);
    const t = torch.tensor([0.8, 0.5]), r = torch.tensor([0.3, 0.5]);
    const ip = tr.interpolant(t.view(2, 1, 1, 1));
    const xT = ip.alpha.mul(x).add(ip.sigma.mul(z));
    const vT = ip.dAlpha.mul(x).add(ip.dSigma.mul(z));
    expect(relErr(vT, z.sub(x))).toBeLessThan(1e-6);
    // with the ideal F = z − x, the implied noise x_t + (1 − t)F is z itself
    const s = 0.2;
    const withNoise = tr.step(xT, t, r, vT, { sRatio: s, eps });
    const zero = tr.step(xT, t, r, vT, { sRatio: s, eps: torch.zerosLike(eps) });
    const dt = t.sub(r).view(2, 1, 1, 1), tt = t.view(2, 1, 1, 1);
    expect(relErr(withNoise.sub(zero), tt.mul(2 * s).mul(dt).sqrt().mul(eps))).toBeLessThan(1e-6);
    expect(relErr(zero, tr.step(xT, t, r, vT).sub(z.mul(s).mul(dt)))).toBeLessThan(1e-6);
    // the diffusion row (t = r) does not move at all, noise included
    expect(maxAbs(withNoise.select(0, 1).sub(xT.select(0, 1)))).toBe(0);
  }));
});

describe('transports: modelTimes applies c_noise once (the official enhanced target applies it twice)', () => {
  it('EDM: c_noise(c_noise(t)) is NaN for t < 1; modelTimes(t, t) is log(t)/4', scoped(() => {
    const tr = new EDM();
    const t = torch.tensor([0.5, 2.0, 30.0]);
    const twice = tr.cNoise(tr.cNoise(t));
    expect(twice.isnan().anyTrue()).toBe(true);
    const { tInput, rInput } = tr.modelTimes(t, t);
    const want = (t.toArray() as number[]).map((v) => Math.log(v) / 4);
    (tInput.toArray() as number[]).forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 6));
    expect(rInput.toArray()).toEqual(tInput.toArray());
  }));

  it('modelTimes flattens (B,1,1,1) times to (B,), as the network takes them', scoped(() => {
    const { tInput, rInput } = new VPSDE().modelTimes(torch.tensor([0.5, 0.25]).view(2, 1, 1, 1), torch.tensor([0.25, 0.1]).view(2, 1, 1, 1));
    expect(tInput.shape).toEqual([2]);
    expect(tInput.toArray()).toEqual([999 * 0.5, 999 * 0.25]);
    expect(rInput.shape).toEqual([2]);
  }));
});

describe('transports: sampleT', () => {
  const ranges: [string, () => Transport, number, number][] = [
    ['OTFM', () => new OTFM(), 0, 1],
    ['TrigFlow', () => new TrigFlow(), 0, Math.PI / 2],
    ['EDM', () => new EDM(), 0, Infinity],
    ['VPSDE', () => new VPSDE(), 1e-5, 1],
    ['VESDE', () => new VESDE(), 0.02, 100],
  ];
  for (const [name, make, lo, hi] of ranges) {
    it(`${name}: fresh draws lie in [${lo}, ${hi}], have the requested dtype, and replay under a seed`, scoped(() => {
      const tr = make();
      const t = tr.sampleT(4096, { dtype: 'float64' });
      expect(t.shape).toEqual([4096]);
      expect(t.dtype).toBe('float64');
      const [mn, mx] = [t.min().item(), t.max().item()];
      expect(mn).toBeGreaterThanOrEqual(lo * (1 - 1e-6));
      expect(mx).toBeLessThanOrEqual(hi * (1 + 1e-6));
      expect(mx).toBeGreaterThan(mn);
      expect(tr.sampleT(3).dtype).toBe('float32');
      torch.manualSeed(7);
      const a = tr.sampleT(16);
      torch.manualSeed(7);
      const draw = tr.timeDraw === 'normal' ? torch.randn([16]) : torch.rand([16]);
      const b = tr.sampleT(16, tr.timeDraw === 'normal' ? { normals: draw } : { uniforms: draw });
      expect(a.toArray()).toEqual(b.toArray());
    }));
  }

  it('OTFM: the median time is 1/2 for pMean 0 (s = 1 at the median normal)', scoped(() => {
    const t = new OTFM().sampleT(3, { normals: torch.tensor([0, -1, 1], { dtype: 'float32' }) }).toArray() as number[];
    expect(t[0]).toBe(0.5);
    expect(t[1]! + t[2]!).toBeCloseTo(1, 6); // s and 1/s map to t and 1 − t
  }));

  it('OTFM: the stochastic step without eps draws randn like x_t (replayable under a seed)', scoped(() => {
    const tr = new OTFM();
    const xT = torch.randn([2, 3, 4]), F = torch.randn([2, 3, 4]);
    const t = torch.tensor([0.9, 0.6]), r = torch.tensor([0.4, 0.2]);
    torch.manualSeed(11);
    const a = tr.step(xT, t, r, F, { sRatio: 0.3 });
    torch.manualSeed(11);
    const eps = torch.randnLike(xT);
    const b = tr.step(xT, t, r, F, { sRatio: 0.3, eps });
    expect(a.toArray()).toEqual(b.toArray());
  }));
});

describe('transports: time shapes and inputs', () => {
  it('a (B,) time equals the (B,1,1,1) time and a number equals a 0-d tensor of that value', scoped(() => {
    for (const [, make] of ALL) {
      const tr = make();
      const x = torch.randn([2, 3, 4, 4]), F = torch.randn([2, 3, 4, 4]);
      const ts = interiorTimes(tr, 3).float();
      const t = ts.slice(0, 1, 3), r = ts.slice(0, 0, 2);
      expect(tr.step(x, t, r, F).toArray()).toEqual(tr.step(x, t.view(2, 1, 1, 1), r.view(2, 1, 1, 1), F).toArray());
      const [tv, rv] = [ts.select(0, 2).item(), ts.select(0, 0).item()];
      expect(tr.step(x, tv, rv, F).toArray()).toEqual(tr.step(x, torch.scalarTensor(tv), torch.scalarTensor(rv), F).toArray());
    }
  }));

  it('stochasticStep says whether sRatio changes the step', scoped(() => {
    for (const [name, make] of ALL) {
      const tr = make();
      const x = torch.randn([2, 3, 4]), F = torch.randn([2, 3, 4]), eps = torch.randn([2, 3, 4]);
      const ts = interiorTimes(tr, 3).float();
      const t = ts.slice(0, 1, 3), r = ts.slice(0, 0, 2);
      const changed = tr.step(x, t, r, F, { sRatio: 0.3, eps }).sub(tr.step(x, t, r, F)).abs().max().item() > 0;
      expect(changed, name).toBe(tr.stochasticStep);
    }
  }));

  it('never modifies its inputs', scoped(() => {
    for (const [, make] of [...ALL, ['OTFM enhanced', () => new OTFM({ enhanceTarget: true, wGt: 0.5, wCond: 0.2 })] as const]) {
      const tr = make();
      const x = torch.randn([2, 3, 4]), z = torch.randn([2, 3, 4]), dF = torch.randn([2, 3, 4]);
      const c = torch.randn([2, 3, 4]), u = torch.randn([2, 3, 4]), eps = torch.randn([2, 3, 4]);
      const ts = interiorTimes(tr, 3).float();
      const t = ts.slice(0, 1, 3), r = ts.slice(0, 0, 2);
      const all = [x, z, dF, c, u, eps, t, r];
      const snapshot = all.map((a) => a.toArray());
      const ip = tr.interpolant(t.view(2, 1, 1));
      const xT = ip.alpha.mul(x).add(ip.sigma.mul(z));
      const vT = ip.dAlpha.mul(x).add(ip.dSigma.mul(z));
      all.push(xT, vT);
      snapshot.push(xT.toArray(), vT.toArray());
      tr.cNoise(t);
      tr.modelTimes(t, r);
      tr.target({ xT, vT, x, z, t, r, dFdvdt: dF, fTCond: c, fTUncond: u, enhance: true });
      tr.step(xT, t, r, dF, { sRatio: 0.5, eps });
      tr.sampleT(3, tr.timeDraw === 'normal' ? { normals: t.slice(0, 0, 1).expand(3) } : { uniforms: torch.tensor([0.1, 0.5, 0.9]) });
      all.forEach((a, i) => expect(a.toArray(), `input ${i}`).toEqual(snapshot[i]));
    }
  }));

  it('cNoise of an identity c_noise returns a new tensor, not the caller\'s', scoped(() => {
    const t = torch.tensor([0.25, 0.5]);
    const c = new OTFM().cNoise(t);
    c.dispose();
    expect(t.isDisposed).toBe(false);
    expect(t.toArray()).toEqual([0.25, 0.5]);
  }));
});

describe('transports: parameters', () => {
  it('defaults are the official ones', () => {
    const o = new OTFM(), tf = new TrigFlow(), e = new EDM(), vp = new VPSDE(), ve = new VESDE();
    expect([o.pMean, o.pStd, o.sigmaD, o.tMax, o.tMin]).toEqual([0, 1, 1, 1, 0]);
    expect([tf.pMean, tf.pStd, tf.sigmaD, tf.tMax, tf.tMin]).toEqual([-1, 1.6, 0.5, 1.57, 0]);
    expect([e.pMean, e.pStd, e.sigmaD, e.tMax, e.tMin]).toEqual([-1.2, 1.2, 0.5, 80, 0.01]);
    expect([vp.betaMin, vp.betaD, vp.epsilonT, vp.T, vp.sigmaD, vp.tMax, vp.tMin]).toEqual([0.1, 19.9, 1e-5, 1000, 1, 1, 1e-5]);
    expect([ve.sigmaMin, ve.sigmaMax, ve.sigmaD, ve.tMax, ve.tMin]).toEqual([0.02, 100, 1, 100, 0.02]);
    for (const tr of [o, tf, e, vp, ve]) {
      expect([tr.enhanceTarget, tr.wGt, tr.wCond, tr.wStart, tr.wEnd]).toEqual([false, 1, 0, 0, 1]);
    }
    expect([o.timeDraw, tf.timeDraw, e.timeDraw, vp.timeDraw, ve.timeDraw]).toEqual(['normal', 'normal', 'normal', 'uniform', 'uniform']);
    expect([o.stochasticStep, tf.stochasticStep, e.stochasticStep, vp.stochasticStep, ve.stochasticStep]).toEqual([true, false, false, false, false]);
  });

  it('constructor parameters are read in camelCase', () => {
    const tr = new OTFM({ pMean: -0.4, pStd: 1.3, sigmaD: 0.5, tMax: 0.99, tMin: 0.01, enhanceTarget: true, wGt: 0.6, wCond: 0.3, wStart: 0.1, wEnd: 0.9 });
    expect([tr.pMean, tr.pStd, tr.sigmaD, tr.tMax, tr.tMin, tr.enhanceTarget, tr.wGt, tr.wCond, tr.wStart, tr.wEnd])
      .toEqual([-0.4, 1.3, 0.5, 0.99, 0.01, true, 0.6, 0.3, 0.1, 0.9]);
    const vp = new VPSDE({ betaMin: 0.2, betaD: 10, epsilonT: 1e-3, T: 500 });
    expect([vp.betaMin, vp.betaD, vp.epsilonT, vp.T, vp.tMin]).toEqual([0.2, 10, 1e-3, 500, 1e-3]);
    const ve = new VESDE({ sigmaMin: 0.01, sigmaMax: 50 });
    expect([ve.tMin, ve.tMax]).toEqual([0.01, 50]);
  });

  it('bad parameters are typed errors', () => {
    expectError(() => new OTFM({ pmean: 1 } as never), TypeError, 'E_OPTION');
    expectError(() => new OTFM({ betaMin: 1 } as never), TypeError, 'E_OPTION');
    expectError(() => new OTFM({ pStd: 0 }), RangeError, 'E_RANGE');
    expectError(() => new OTFM({ pMean: Number.NaN }), RangeError, 'E_RANGE');
    expectError(() => new OTFM({ pMean: '0' as never }), TypeError, 'E_ARG');
    expectError(() => new OTFM({ tMin: 1, tMax: 1 }), RangeError, 'E_RANGE');
    expectError(() => new TrigFlow({ enhanceTarget: 1 as never }), TypeError, 'E_ARG');
    expectError(() => new EDM({ sigmaD: -1 }), RangeError, 'E_RANGE');
    expectError(() => new VPSDE({ epsilonT: 1 }), RangeError, 'E_RANGE');
    expectError(() => new VPSDE({ tMax: 2 } as never), TypeError, 'E_OPTION');
    expectError(() => new VESDE({ sigmaMin: 5, sigmaMax: 1 }), RangeError, 'E_RANGE');
  });
});

describe('transports: bad arguments', () => {
  it('sampleT', scoped(() => {
    const o = new OTFM(), v = new VPSDE();
    expectError(() => o.sampleT(0), RangeError, 'E_RANGE');
    expectError(() => o.sampleT(2.5), TypeError, 'E_ARG');
    expectError(() => o.sampleT(2, { uniforms: torch.rand([2]) }), TypeError, 'E_OPTION');
    expectError(() => v.sampleT(2, { normals: torch.randn([2]) }), TypeError, 'E_OPTION');
    expectError(() => o.sampleT(3, { normals: torch.randn([2]) }), RangeError, 'E_SHAPE');
    expectError(() => o.sampleT(2, { normals: torch.tensor([1, 2], { dtype: 'int64' }) }), TypeError, 'E_DTYPE');
    expectError(() => o.sampleT(2, { seed: 1 } as never), TypeError, 'E_OPTION');
  }));

  it('target', scoped(() => {
    const x = torch.randn([2, 3]), t = torch.tensor([0.5, 0.4]), r = torch.tensor([0.1, 0.4]);
    const base = { xT: x, vT: x, x, z: x, t, r, dFdvdt: x };
    const enh = new OTFM({ enhanceTarget: true, wGt: 0.5, wCond: 0.2 });
    expectError(() => enh.target({ ...base, fTCond: x }), TypeError, 'E_ARG'); // no fTUncond
    expectError(() => enh.target({ ...base, fTUncond: x }), TypeError, 'E_ARG'); // wCond > 0, no fTCond
    expectError(() => enh.target({ ...base, fTCond: x, fTUncond: torch.randn([2, 4]) }), RangeError, 'E_SHAPE');
    expectError(() => new OTFM().target({ ...base, z: torch.randn([3, 3]) }), RangeError, 'E_SHAPE');
    expectError(() => new OTFM().target({ ...base, t: torch.tensor([0.5, 0.4, 0.3]) }), RangeError, 'E_SHAPE');
    expectError(() => new OTFM().target({ ...base, dFdvdt: Number.POSITIVE_INFINITY }), RangeError, 'E_RANGE');
    expectError(() => new OTFM().target({ ...base, x: [1, 2] as never }), TypeError, 'E_ARG');
    expectError(() => new OTFM().target({ ...base, extra: 1 } as never), TypeError, 'E_OPTION');
    expectError(() => new OTFM().target(null as never), TypeError, 'E_ARG');
  }));

  it('step, interpolant, cNoise', scoped(() => {
    const tr = new OTFM();
    const x = torch.randn([2, 3]), t = torch.tensor([0.5, 0.4]), r = torch.tensor([0.1, 0.2]);
    expectError(() => tr.step(x, t, r, torch.randn([2, 4])), RangeError, 'E_SHAPE');
    expectError(() => tr.step(x, t, r, x, { sRatio: 0.1, eps: torch.randn([1, 3]) }), RangeError, 'E_SHAPE');
    expectError(() => tr.step(x, t, r, x, { sRatio: -0.1 }), RangeError, 'E_RANGE');
    expectError(() => tr.step(x, Number.NaN, r, x), RangeError, 'E_RANGE');
    expectError(() => tr.step(x, t, r, x, { noise: 1 } as never), TypeError, 'E_OPTION');
    expectError(() => tr.interpolant(torch.tensor([1, 2], { dtype: 'int64' })), TypeError, 'E_DTYPE');
    expectError(() => tr.cNoise(0.5 as never), TypeError, 'E_ARG');
    const gone = torch.tensor([0.5]);
    gone.dispose();
    expectError(() => tr.cNoise(gone), torch.TorchError, 'E_DISPOSED');
  }));
});
