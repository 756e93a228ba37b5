/**
 * TransitionLoss against the golden case computed by the official TransitionSchedule
 * (test/fixtures/golden/loss: OT-FM P_mean −0.4, diffusion 0.5, consistency 0.1, DDE ε 0.005, 'sqrt'
 * weight with tangent, directional loss, REPA target): every intermediate within the README's
 * tolerances, t and r replayed from the recorded normals. Also: the math helpers against their
 * formulas, sampled times, enhanced targets with an EMA model, the network kinds accepted, edge
 * cases, typed errors, inputs left untouched and no leaked tensors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { torch, TiM, EMA } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { OTFM, VPSDE, type Transport } from '../lib/tim/transports/index.js';
import {
  TransitionLoss, directionalTerm, meanFlat, mseTerm, projectionTerm, pythonRound, rowCounts, transitionTimes,
  type LossOutput,
} from '../lib/tim/objective/loss.js';
import { adaptiveWeight, timeWeight, type WeightTimeType } from '../lib/tim/objective/time_weights.js';
import { GOLDEN_DIR, get, loadGolden, maxAbsDiff, type GoldenCase } from './helpers/golden.js';
import { expectError, scoped } from './helpers/tensor-expect.js';

/** README tolerances (float32, absolute); the exact-by-construction terms get float32 rounding only. */
const TOL: Record<string, number> = {
  t: 1e-7, r: 1e-7, t_1: 1e-7, t_2: 1e-7, x_t: 1e-6, v_t: 1e-6,
  F_pred: 2e-6, h_proj: 1e-7, F_t_plus_eps: 2e-6, F_t_minus_eps: 2e-6,
  dF_dv_dt: 2e-4, F_target: 1e-4,
  mse_loss: 1e-5, dir_loss: 1e-5, denoising_loss: 1e-5,
  time_weight: 1e-6, adaptive_weight: 1e-6, weight: 1e-6,
  weighted_loss: 1e-6, proj_loss: 1e-6, proj_loss_per_sample: 1e-6,
};

let g: GoldenCase;
let model: TiM;
const errors: Record<string, number> = {};

beforeAll(() => {
  g = loadGolden('loss');
  model = TiM.load(join(GOLDEN_DIR, 'loss', 'weights.safetensors'));
  model.train();
});
afterAll(() => {
  model?.dispose();
  g?.dispose();
  console.log('TransitionLoss vs golden, max |diff|:', JSON.stringify(errors));
});

const I = (k: string): Tensor => get(g.inputs, k);
const O = (k: string): Tensor => get(g.outputs, k);

/** The transport and loss of the case, from its case.json (snake_case, as the official YAML). */
function caseTransport(extra: Record<string, unknown> = {}): OTFM {
  const p = g.meta.transport_params as Record<string, number>;
  return new OTFM({ pMean: p.P_mean, pStd: p.P_std, sigmaD: p.sigma_d, tMax: p.T_max, tMin: p.T_min, ...extra });
}
function caseLoss(extra: Record<string, unknown> = {}, transport: Transport = caseTransport()): TransitionLoss {
  const base = TransitionLoss.fromOfficialConfig(transport, g.meta.transition_loss as Record<string, unknown>);
  return Object.keys(extra).length === 0 ? base : new TransitionLoss(transport, { ...optionsOf(base), ...extra });
}
function optionsOf(l: TransitionLoss): Record<string, unknown> {
  return {
    diffusionRatio: l.diffusionRatio, consistencyRatio: l.consistencyRatio, derivativeType: l.derivativeType,
    differentialEpsilon: l.differentialEpsilon, weightTimeType: l.weightTimeType, weightTimeTangent: l.weightTimeTangent,
    weightTimeSigmoid: l.weightTimeSigmoid, weightTAndR: l.weightTAndR, derivativePrecision: l.derivativePrecision,
  };
}

/** The golden computation: times from the recorded normals, then compute. */
function goldenCompute(loss = caseLoss(), extra: Record<string, unknown> = {}): LossOutput {
  const { t, r } = loss.sampleTimes(8, { normals: [I('rnd_normal_1'), I('rnd_normal_2')] });
  return loss.compute({
    model, x: I('x'), z: I('z'), y: I('y'), hTarget: I('h_target'), useDirLoss: g.meta.use_dir_loss as boolean, t, r, ...extra,
  });
}

function check(name: string, got: Tensor | null, tol = TOL[name]!): void {
  expect(got, name).not.toBeNull();
  const d = maxAbsDiff(got!, O(name));
  errors[name] = Math.max(errors[name] ?? 0, d);
  expect(d, `${name}: max |diff|`).toBeLessThanOrEqual(tol);
}

describe('TransitionLoss vs the official TransitionSchedule (golden)', () => {
  it('is configured from the case: fromOfficialConfig reads the official transition_loss block', () => {
    const l = caseLoss();
    const c = g.meta.transition_loss as Record<string, unknown>;
    expect([l.diffusionRatio, l.consistencyRatio, l.derivativeType, l.differentialEpsilon, l.weightTimeType, l.weightTimeTangent])
      .toEqual([c.diffusion_ratio, c.consistency_ratio, c.derivative_type, c.differential_epsilon, c.weight_time_type, c.weight_time_tangent]);
    // the official defaults for what the block leaves out
    expect([l.weightTimeSigmoid, l.weightTAndR, l.derivativePrecision]).toEqual([false, true, 'float32']);
  });

  it('t and r from the recorded normals, with the diffusion and consistency rows', scoped(() => {
    const l = caseLoss();
    const { t, r, nDiffusion } = l.sampleTimes(8, { normals: [I('rnd_normal_1'), I('rnd_normal_2')] });
    expect(nDiffusion).toBe(O('n_diffusion').item());
    check('t', t);
    check('r', r);
    check('t_1', l.transport.sampleT(8, { normals: I('rnd_normal_1') }));
    check('t_2', l.transport.sampleT(8, { normals: I('rnd_normal_2') }));
  }));

  it('every intermediate within the README tolerances', scoped(() => {
    const out = goldenCompute();
    expect(out.nDiffusion).toBe(4);
    for (const [name, v] of [
      ['t', out.t], ['r', out.r], ['x_t', out.xT], ['v_t', out.vT], ['F_pred', out.fPred], ['h_proj', out.hProj],
      ['F_t_plus_eps', out.fTPlusEps], ['F_t_minus_eps', out.fTMinusEps], ['dF_dv_dt', out.dFdvdt], ['F_target', out.fTarget],
      ['mse_loss', out.mseLoss], ['dir_loss', out.dirLoss], ['denoising_loss', out.denoisingLoss],
      ['time_weight', out.timeWeight], ['adaptive_weight', out.adaptiveWeight], ['weight', out.weight],
      ['weighted_loss', out.weightedLoss], ['proj_loss', out.projLoss], ['proj_loss_per_sample', out.projLossPerSample],
    ] as [string, Tensor | null][]) check(name, v);
    // the diffusion rows' derivative is exactly 0; the loss_dict matches the official one
    expect(out.dFdvdt.narrow(0, 0, 4).abs().max().item()).toBe(0);
    const dict = TransitionLoss.lossDict(out);
    const want = g.meta.loss_dict as { weighted_loss: number; denoising_loss: number; proj_loss: number };
    expect(Math.abs(dict.weightedLoss - want.weighted_loss)).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(dict.denoisingLoss - want.denoising_loss)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(dict.projLoss - want.proj_loss)).toBeLessThanOrEqual(1e-6);
    // the trainable outputs carry gradient, the target does not
    expect([out.weightedLoss.requiresGrad, out.projLoss.requiresGrad, out.fPred.requiresGrad, out.denoisingLoss.requiresGrad]).toEqual([true, true, true, true]);
    expect([out.fTarget.requiresGrad, out.dFdvdt.requiresGrad, out.adaptiveWeight.requiresGrad, out.timeWeight.requiresGrad]).toEqual([false, false, false, false]);
  }));

  it('the raw TorchScript module and the TiM wrapper give the same loss', scoped(() => {
    const a = goldenCompute();
    const b = goldenCompute(caseLoss(), { model: model.module });
    expect(maxAbsDiff(a.fTarget, b.fTarget)).toBe(0);
    expect(maxAbsDiff(a.weightedLoss, b.weightedLoss)).toBe(0);
    expect(maxAbsDiff(a.projLoss, b.projLoss)).toBe(0);
  }));

  it('leaves every input as it was (values, requires_grad) even after backward', scoped(() => {
    const names = ['x', 'z', 'y', 'h_target', 'rnd_normal_1', 'rnd_normal_2'];
    const copies = Object.fromEntries(names.map((n) => [n, I(n).clone()]));
    const l = caseLoss();
    const { t, r } = l.sampleTimes(8, { normals: [I('rnd_normal_1'), I('rnd_normal_2')] });
    const t0 = t.clone(), r0 = r.clone();
    for (const derivativeType of ['dde', 'jvp'] as const) {
      const out = caseLoss({ derivativeType }).compute({ model, x: I('x'), z: I('z'), y: I('y'), hTarget: I('h_target'), useDirLoss: true, t, r });
      out.weightedLoss.add(out.projLoss).backward();
      // the returned times are copies: disposing them must not free the caller's
      out.t.dispose();
      out.r.dispose();
    }
    for (const p of model.parameters()) p.grad = null;
    for (const n of names) {
      expect(maxAbsDiff(I(n), copies[n]!), n).toBe(0);
      expect(I(n).requiresGrad, n).toBe(false);
    }
    expect([t.isDisposed, r.isDisposed, t.requiresGrad, r.requiresGrad]).toEqual([false, false, false, false]);
    expect([maxAbsDiff(t, t0), maxAbsDiff(r, r0)]).toEqual([0, 0]);
  }));
});

describe('math helpers', () => {
  it('pythonRound rounds halves to even like Python round()', () => {
    expect([0.5, 1.5, 2.5, 3.5, 4.5, 0.4999, 0.8, 4, 2.6].map(pythonRound)).toEqual([0, 2, 2, 4, 4, 0, 1, 4, 3]);
    expect(rowCounts(8, 0.5, 0.1)).toEqual({ nDiffusion: 4, nConsistency: 1 });
    // round(0.5·5) = round(2.5) = 2 and round(0.1·5) = round(0.5) = 0: no consistency row
    expect(rowCounts(5, 0.5, 0.1)).toEqual({ nDiffusion: 2, nConsistency: 0 });
    expect(rowCounts(7, 0.5, 0.5)).toEqual({ nDiffusion: 4, nConsistency: 4 });
  });

  it('transitionTimes: diffusion rows get t, then consistency rows T_min (overriding on overlap)', scoped(() => {
    const t = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]);
    const rMin = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.45]);
    expect(transitionTimes(t, rMin, 2, 1, 0).toArray()).toEqual((torch.tensor([0.9, 0.8, 0.3, 0.4, 0]).toArray()));
    expect(transitionTimes(t, rMin, 0, 0, 0).toArray()).toEqual(rMin.toArray());
    expect(transitionTimes(t, rMin, 3, 3, 0.01).toArray()).toEqual(torch.tensor([0.9, 0.8, 0.01, 0.01, 0.01]).toArray());
  }));

  it('sampleTimes replays uniform draws for uniform-time transports, and T_min is the transport\'s', scoped(() => {
    const vp = new VPSDE();
    const l = new TransitionLoss(vp, { diffusionRatio: 0.25, consistencyRatio: 0.25 });
    const u1 = torch.tensor([0.1, 0.9, 0.4, 0.6], { dtype: 'float32' }), u2 = torch.tensor([0.8, 0.2, 0.5, 0.3], { dtype: 'float32' });
    const { t, r, nDiffusion } = l.sampleTimes(4, { uniforms: [u1, u2] });
    const a = vp.sampleT(4, { uniforms: u1 }), b = vp.sampleT(4, { uniforms: u2 });
    expect(nDiffusion).toBe(1);
    expect(maxAbsDiff(t, a.maximum(b))).toBe(0);
    const want = a.minimum(b).toArray() as number[];
    want[0] = (t.toArray() as number[])[0]!;
    want[3] = vp.tMin;
    expect(r.toArray()).toEqual(torch.tensor(want, { dtype: 'float32' }).toArray());
    // the wrong kind of draw is refused by the transport
    expectError(() => l.sampleTimes(4, { normals: [u1, u2] }), TypeError);
  }));

  it('timeWeight: each official type against its formula in float64', scoped(() => {
    const tv = [0.9, 0.7, 0.5, 0.3], rv = [0.9, 0.2, 0.1, 0.0];
    const t = torch.tensor(tv, { dtype: 'float64' }), r = torch.tensor(rv, { dtype: 'float64' });
    const sigmaD = 0.5;
    const f: Record<WeightTimeType, (d: number) => number> = {
      constant: () => 1, reciprocal: (d) => 1 / (d + sigmaD), sqrt: (d) => 1 / Math.sqrt(d + sigmaD),
      square: (d) => 1 / (d + sigmaD) ** 2, 'Soft-Min-SNR': (d) => 1 / (d * d + sigmaD * sigmaD),
    };
    const warps: [string, { tangent?: boolean; sigmoid?: boolean }, (u: number) => number][] = [
      ['identity', {}, (u) => u], ['tan', { tangent: true }, Math.tan], ['sigmoid', { sigmoid: true }, (u) => u / (1 - u)],
      ['tan wins', { tangent: true, sigmoid: true }, Math.tan],
    ];
    for (const type of Object.keys(f) as WeightTimeType[]) {
      for (const [label, w, warp] of warps) {
        for (const tAndR of [true, false]) {
          const got = timeWeight(t, r, 1, { type, ...w, tAndR, sigmaD }).toArray() as number[];
          const want = tv.map((ti, i) => (i < 1 ? 1 : f[type](tAndR ? warp(ti) - warp(rv[i]!) : warp(ti))));
          for (let i = 0; i < 4; i++) expect(Math.abs(got[i]! - want[i]!), `${type} ${label} tAndR=${tAndR} row ${i}`).toBeLessThan(1e-12);
        }
      }
    }
    // (B, 1, 1, 1) times give a (B,) weight too
    expect(timeWeight(t.view(4, 1, 1, 1), r.view(4, 1, 1, 1), 0, { type: 'sqrt' }).shape).toEqual([4]);
  }));

  it('adaptiveWeight is 1/(L + 1e-5) with the gradient cut', scoped(() => {
    const L = torch.tensor([0.5, 2.0, 0.0], { dtype: 'float32' }).requiresGrad_();
    const a = adaptiveWeight(L.mul(1));
    expect(a.requiresGrad).toBe(false);
    const v = a.toArray() as number[];
    [0.5, 2.0, 0.0].forEach((l, i) => expect(Math.abs(v[i]! - 1 / (l + 1e-5)) / v[i]!).toBeLessThan(1e-6));
  }));

  it('loss terms: mean over non-batch dims, channel cosine, projector cosine, nan_to_num', scoped(() => {
    const F = { dtype: 'float32' } as const;
    const a = torch.tensor([[[[1]], [[0]]], [[[0]], [[2]]]], F); // (2, 2, 1, 1)
    const b = torch.tensor([[[[0]], [[1]]], [[[0]], [[4]]]], F);
    expect(mseTerm(a, b).toArray()).toEqual([1, 2]); // ((1)²+(−1)²)/2, ((0)²+(−2)²)/2
    expect(directionalTerm(a, b).toArray()).toEqual([1, 0]); // orthogonal, parallel
    expect(meanFlat(torch.ones([3, 2, 5], F)).toArray()).toEqual([1, 1, 1]);
    const h = torch.tensor([[[1, 0], [0, 1]]], F), ht = torch.tensor([[[1, 0], [1, 0]]], F);
    expect(projectionTerm(h, ht).toArray()).toEqual([0.5]);
    const bad = torch.tensor([[[[Number.NaN]]], [[[Number.POSITIVE_INFINITY]]]]);
    expect(mseTerm(bad, torch.zerosLike(bad)).toArray()).toEqual([0, 1e5]);
  }));
});

describe('sampled times, options and edge cases', () => {
  it('draws its own times when none are given: seeded, ordered, with the row structure', scoped(() => {
    const l = caseLoss();
    const run = () => {
      torch.manualSeed(123);
      return l.compute({ model, x: I('x'), z: I('z'), y: I('y') });
    };
    const a = run(), b = run();
    expect(maxAbsDiff(a.t, b.t)).toBe(0);
    expect(maxAbsDiff(a.weightedLoss, b.weightedLoss)).toBe(0);
    const t = a.t.toArray() as number[], r = a.r.toArray() as number[];
    for (let i = 0; i < 8; i++) {
      expect(t[i]!).toBeGreaterThan(0);
      expect(t[i]!).toBeLessThan(1);
      expect(r[i]!).toBeLessThanOrEqual(t[i]!);
      if (i < 4) expect(r[i]).toBe(t[i]);
    }
    expect(r[7]).toBe(0);
    expect(r.slice(4, 7).every((v, i) => v < t[i + 4]!)).toBe(true);
    // a different seed gives different times
    torch.manualSeed(124);
    expect(maxAbsDiff(l.compute({ model, x: I('x'), z: I('z'), y: I('y') }).t, a.t)).toBeGreaterThan(0);
  }));

  it('without hTarget the projection loss is a constant 0 and the rest unchanged', scoped(() => {
    const withH = goldenCompute();
    const l = caseLoss();
    const { t, r } = l.sampleTimes(8, { normals: [I('rnd_normal_1'), I('rnd_normal_2')] });
    const noH = l.compute({ model, x: I('x'), z: I('z'), y: I('y'), useDirLoss: true, t, r });
    expect([noH.hProj, noH.projLossPerSample]).toEqual([null, null]);
    expect(noH.projLoss.item()).toBe(0);
    expect(noH.projLoss.requiresGrad).toBe(false);
    expect(maxAbsDiff(noH.weightedLoss, withH.weightedLoss)).toBeLessThanOrEqual(1e-7);
    expect(maxAbsDiff(noH.fPred, withH.fPred)).toBeLessThanOrEqual(1e-6);
  }));

  it('without the directional term the denoising loss is the MSE alone', scoped(() => {
    const out = goldenCompute(caseLoss(), { useDirLoss: false });
    expect(out.dirLoss).toBeNull();
    check('mse_loss', out.denoisingLoss);
    check('mse_loss', out.mseLoss);
  }));

  it('all rows diffusion: no derivative forwards, F_target = v_t, weights 1', scoped(() => {
    const l = caseLoss({ diffusionRatio: 1, consistencyRatio: 0 });
    const { t, r, nDiffusion } = l.sampleTimes(8, { normals: [I('rnd_normal_1'), I('rnd_normal_2')] });
    expect(nDiffusion).toBe(8);
    expect(maxAbsDiff(t, r)).toBe(0);
    const out = l.compute({ model, x: I('x'), z: I('z'), y: I('y'), t, r });
    expect([out.fTPlusEps, out.fTMinusEps]).toEqual([null, null]);
    expect(out.dFdvdt.abs().max().item()).toBe(0);
    expect(maxAbsDiff(out.fTarget, out.vT)).toBe(0);
    expect(out.timeWeight.toArray()).toEqual(new Array(8).fill(1));
  }));

  it('given t and r with an explicit nDiffusion', scoped(() => {
    const l = caseLoss();
    const t = O('t'), r = torch.where(torch.arange(8).lt(2), O('t'), O('r'));
    const out = l.compute({ model, x: I('x'), z: I('z'), y: I('y'), t, r, nDiffusion: 2 });
    expect(out.nDiffusion).toBe(2);
    expect(out.fTPlusEps!.shape).toEqual([6, 4, 8, 8]);
    // rows 4.. are the golden case's transition rows: same derivative
    expect(maxAbsDiff(out.dFdvdt.narrow(0, 4, 4), O('dF_dv_dt').narrow(0, 4, 4))).toBeLessThanOrEqual(TOL.dF_dv_dt!);
    expect(out.dFdvdt.narrow(0, 0, 2).abs().max().item()).toBe(0);
  }));
});

describe('enhanced targets with an EMA model', () => {
  const W = { enhanceTarget: true, wGt: 0.6, wCond: 0.3, wStart: 0, wEnd: 1 };

  it('F_target mixes v_t with the EMA conditional and null predictions at (t, t)', scoped(() => {
    const tr = caseTransport(W);
    const l = caseLoss({}, tr);
    const ema = new EMA(model);
    try {
      const { t, r } = l.sampleTimes(8, { normals: [I('rnd_normal_1'), I('rnd_normal_2')] });
      const out = l.compute({ model, emaModel: ema, x: I('x'), z: I('z'), y: I('y'), yEma: I('y_ema'), yNull: I('y_null'), t, r, useDirLoss: true });
      const fCond = ema.module.forward<Tensor>(out.xT, t, t, I('y_ema'));
      const fUncond = ema.module.forward<Tensor>(out.xT, t, t, I('y_null'));
      const tt = t.view(8, 1, 1, 1), rr = r.view(8, 1, 1, 1);
      const want = out.vT.mul(0.6).add(fCond.mul(0.3)).add(fUncond.mul(0.1)).sub(tt.sub(rr).mul(out.dFdvdt));
      expect(maxAbsDiff(out.fTarget, want)).toBeLessThanOrEqual(2e-6);
      // and it is not the plain target
      expect(maxAbsDiff(out.fTarget, O('F_target'))).toBeGreaterThan(1e-2);
      // the derivative does not depend on the EMA
      expect(maxAbsDiff(out.dFdvdt, O('dF_dv_dt'))).toBeLessThanOrEqual(TOL.dF_dv_dt!);
    } finally {
      ema.dispose();
    }
  }));

  it('a Transport that is not a BaseTransport gives the same loss (its public methods stand in for the unchecked math)', scoped(() => {
    const own = caseTransport(W);
    const foreign: Transport = {
      name: 'Wrapped', sigmaD: own.sigmaD, tMax: own.tMax, tMin: own.tMin, enhanceTarget: true, wGt: own.wGt, wCond: own.wCond,
      wStart: own.wStart, wEnd: own.wEnd, timeDraw: 'normal', stochasticStep: true,
      sampleT: (n, o) => own.sampleT(n, o), cNoise: (t) => own.cNoise(t), modelTimes: (t, r) => own.modelTimes(t, r),
      interpolant: (t) => own.interpolant(t), target: (i) => own.target(i), step: (xT, t, r, F, o) => own.step(xT, t, r, F, o),
    };
    const inputs = { model, emaModel: model, x: I('x'), z: I('z'), y: I('y'), yEma: I('y_ema'), yNull: I('y_null'), t: O('t'), r: O('r'), useDirLoss: true };
    const a = caseLoss({}, own).compute(inputs), b = caseLoss({}, foreign).compute(inputs);
    for (const k of ['fTarget', 'dFdvdt', 'xT', 'weightedLoss'] as const) expect(maxAbsDiff(a[k], b[k]), k).toBe(0);
    // an EMA network whose output is not x's shape is refused (it would broadcast into the target)
    const wrongEma = { forward: (x: Tensor) => x.sum(1, true) };
    expectError(() => caseLoss({}, own).compute({ ...inputs, emaModel: wrongEma as never }), RangeError, 'E_SHAPE');
  }));

  it('wCond 0 needs no yEma; missing emaModel or yNull are typed errors', scoped(() => {
    const l0 = caseLoss({}, caseTransport({ ...W, wCond: 0 }));
    const out = l0.compute({ model, emaModel: model, x: I('x'), z: I('z'), y: I('y'), yNull: I('y_null'), t: O('t'), r: O('r') });
    expect(out.fTarget.shape).toEqual([8, 4, 8, 8]);
    const l = caseLoss({}, caseTransport(W));
    const base = { model, x: I('x'), z: I('z'), y: I('y'), t: O('t'), r: O('r') };
    expectError(() => l.compute(base), TypeError);
    expectError(() => l.compute({ ...base, emaModel: model, yEma: I('y_ema') }), TypeError);
    expectError(() => l.compute({ ...base, emaModel: model, yNull: I('y_null') }), TypeError);
  }));
});

describe('errors', () => {
  it('bad options are typed errors', () => {
    const tr = new OTFM();
    expectError(() => new TransitionLoss(tr, { diffusionRatio: 1.5 }), RangeError);
    expectError(() => new TransitionLoss(tr, { consistencyRatio: -0.1 }), RangeError);
    expectError(() => new TransitionLoss(tr, { diffusionRatio: '0.5' as unknown as number }), TypeError);
    expectError(() => new TransitionLoss(tr, { derivativeType: 'fd' as 'dde' }), RangeError, 'E_OPTION');
    expectError(() => new TransitionLoss(tr, { differentialEpsilon: 0 }), RangeError);
    expectError(() => new TransitionLoss(tr, { differentialEpsilon: Number.NaN }), RangeError);
    expectError(() => new TransitionLoss(tr, { weightTimeType: 'cubic' as 'sqrt' }), RangeError, 'E_OPTION');
    expectError(() => new TransitionLoss(tr, { weightTimeTangent: 1 as unknown as boolean }), TypeError);
    expectError(() => new TransitionLoss(tr, { derivativePrecision: 'bf16' as 'float32' }), RangeError, 'E_OPTION');
    expectError(() => new TransitionLoss(tr, { diffusion_ratio: 0.5 } as never), TypeError, 'E_OPTION');
    expectError(() => new TransitionLoss({} as never), TypeError);
    expectError(() => TransitionLoss.fromOfficialConfig(tr, { diffusionRatio: 0.5 }), TypeError, 'E_OPTION');
  });

  it('bad compute inputs are typed errors, and nothing leaks when they throw', scoped(() => {
    const l = caseLoss();
    const base = { model, x: I('x'), z: I('z'), y: I('y'), t: O('t'), r: O('r') };
    expectError(() => l.compute({ ...base, z: I('z').narrow(0, 0, 4) }), RangeError, 'E_SHAPE');
    expectError(() => l.compute({ ...base, y: I('y').narrow(0, 0, 4) }), RangeError, 'E_SHAPE');
    expectError(() => l.compute({ ...base, x: I('y') }), TypeError, 'E_DTYPE');
    expectError(() => l.compute({ ...base, r: undefined }), TypeError);
    expectError(() => l.compute({ ...base, t: O('r'), r: O('t') }), RangeError, 'E_VALUE');
    expectError(() => l.compute({ ...base, t: O('t').narrow(0, 0, 4), r: O('r').narrow(0, 0, 4) }), RangeError, 'E_SHAPE');
    expectError(() => l.compute({ ...base, nDiffusion: 9 }), RangeError);
    expectError(() => l.compute({ ...base, t: O('t').double(), r: O('r').double() }), TypeError, 'E_DTYPE');
    expectError(() => l.compute({ ...base, hTarget: I('h_target').narrow(2, 0, 16) }), RangeError, 'E_SHAPE');
    expectError(() => l.compute({ ...base, model: {} as never }), TypeError);
    expectError(() => l.compute({ ...base, useDirLoss: 'yes' as unknown as boolean }), TypeError);
    expectError(() => l.compute({ ...base, extra: 1 } as never), TypeError, 'E_OPTION');
    expectError(() => l.sampleTimes(8, { normals: [I('rnd_normal_1')] as never }), TypeError);
    expectError(() => l.sampleTimes(0), RangeError);
    const gone = I('x').clone();
    gone.dispose();
    expectError(() => l.compute({ ...base, x: gone }), torch.TorchError, 'E_DISPOSED');
  }));
});
