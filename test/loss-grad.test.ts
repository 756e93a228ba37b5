/**
 * Gradients of the transition loss and its derivative estimators:
 * - backward of weightedLoss + 1.0·projLoss on the golden loss case gives the official per-parameter
 *   gradients (test/fixtures/golden/adamw grad/<name>) within 1e-6, for every parameter;
 * - the exact JVP (double backward) and the DDE agree within the finite-difference error, and the DDE
 *   error shrinks with ε as a central difference should;
 * - under bfloat16 autocast the DDE loses its accuracy unless its forwards stay in float32 (the
 *   default): the relative RMS error of dF/dt is measured and printed;
 * - tensors and memory stay flat across repeated compute + backward.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { torch, TiM } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { OTFM } from '../lib/tim/transports/index.js';
import { TransitionLoss, type LossOutput, type TransitionLossOptions } from '../lib/tim/objective/loss.js';
import { GOLDEN_DIR, get, loadGolden, maxAbsDiff, type GoldenCase } from './helpers/golden.js';
import { scoped } from './helpers/tensor-expect.js';

/** README: adamw grads within 1e-6; the loss case's dF_dv_dt within 2e-4. */
const GRAD_TOL = 1e-6;
const DF_TOL = 2e-4;

let lossCase: GoldenCase;
let adamwOut: Record<string, Tensor>;
let adamwMeta: { outputs: Record<string, unknown>; loss: string };
let model: TiM;
const report: Record<string, number | string> = {};

beforeAll(() => {
  lossCase = loadGolden('loss');
  adamwOut = torch.load(join(GOLDEN_DIR, 'adamw', 'outputs.safetensors'), { lazy: false });
  adamwMeta = JSON.parse(readFileSync(join(GOLDEN_DIR, 'adamw', 'case.json'), 'utf8'));
  model = TiM.load(join(GOLDEN_DIR, 'adamw', 'weights.safetensors'));
  model.train();
});
afterAll(() => {
  model?.dispose();
  lossCase?.dispose();
  for (const t of Object.values(adamwOut ?? {})) t.dispose();
  console.log('TransitionLoss gradients / derivatives:', JSON.stringify(report));
});

const I = (k: string): Tensor => get(lossCase.inputs, k);
const O = (k: string): Tensor => get(lossCase.outputs, k);

function caseLoss(extra: TransitionLossOptions = {}): TransitionLoss {
  const p = lossCase.meta.transport_params as Record<string, number>;
  const tr = new OTFM({ pMean: p.P_mean, pStd: p.P_std, sigmaD: p.sigma_d, tMax: p.T_max, tMin: p.T_min });
  const base = TransitionLoss.fromOfficialConfig(tr, lossCase.meta.transition_loss as Record<string, unknown>);
  return new TransitionLoss(tr, {
    diffusionRatio: base.diffusionRatio, consistencyRatio: base.consistencyRatio, derivativeType: base.derivativeType,
    differentialEpsilon: base.differentialEpsilon, weightTimeType: base.weightTimeType, weightTimeTangent: base.weightTimeTangent,
    ...extra,
  });
}

function compute(loss: TransitionLoss, hTarget: Tensor | null = I('h_target')): LossOutput {
  const { t, r } = loss.sampleTimes(8, { normals: [I('rnd_normal_1'), I('rnd_normal_2')] });
  return loss.compute({ model, x: I('x'), z: I('z'), y: I('y'), hTarget, useDirLoss: true, t, r });
}

/** Sets every parameter's .grad to None (like zero_grad(set_to_none=True)). */
function clearGrads(): void {
  torch.scope(() => {
    for (const p of model.parameters()) p.grad = null;
  });
}

/** ‖a − b‖ / ‖b‖ over rows ≥ 4 (the transition rows of the case). */
function relRms(a: Tensor, b: Tensor): number {
  return torch.scope(() => {
    const x = a.narrow(0, 4, 4).double(), y = b.narrow(0, 4, 4).double();
    return x.sub(y).square().sum().sqrt().div(y.square().sum().sqrt()).item();
  });
}

describe('gradients vs the official backward (golden adamw grad/*)', () => {
  it('backward of weightedLoss + 1.0·projLoss matches every parameter gradient within 1e-6', scoped(() => {
    expect(adamwMeta.loss).toContain('weighted_loss + 1.0 * proj_loss');
    const names = Object.keys(adamwMeta.outputs).filter((k) => k.startsWith('grad/')).map((k) => k.slice(5));
    const params = model.namedParameters();
    expect(params.map(([n]) => n).sort()).toEqual([...names].sort());
    for (const [, p] of params) expect(p.grad).toBeNull();

    const out = compute(caseLoss());
    out.weightedLoss.add(out.projLoss.mul(1.0)).backward();
    let worst = 0, worstName = '';
    for (const [name, p] of params) {
      const g = p.grad;
      expect(g, `${name}.grad`).not.toBeNull();
      const d = maxAbsDiff(g!, get(adamwOut, `grad/${name}`));
      if (d > worst) [worst, worstName] = [d, name];
      expect(d, `grad ${name}`).toBeLessThanOrEqual(GRAD_TOL);
    }
    report.gradMaxAbsDiff = worst;
    report.gradWorstParam = worstName;
    // a wrong loss would not pass: the gradients are far from zero
    expect(get(adamwOut, `grad/${worstName}`).abs().max().item()).toBeGreaterThan(100 * GRAD_TOL);
    clearGrads();
  }));
});

describe("'jvp' (exact: forward-mode AD or double backward) vs 'dde' (central difference)", () => {
  it('forward-mode AD and double backward give the same JVP (to float32 rounding), the default is forward mode', scoped(() => {
    const fwd = compute(caseLoss({ derivativeType: 'jvp', jvpMethod: 'forward' }));
    const dbl = compute(caseLoss({ derivativeType: 'jvp', jvpMethod: 'double-backward' }));
    const d = maxAbsDiff(fwd.dFdvdt, dbl.dFdvdt);
    report.jvpForwardVsDoubleBackwardMaxAbs = d;
    expect(d).toBeLessThanOrEqual(2e-5 * Math.max(1, dbl.dFdvdt.abs().max().item()));
    expect(dbl.dFdvdt.abs().max().item()).toBeGreaterThan(0.1);
    expect(caseLoss({ derivativeType: 'jvp' }).jvpMethod).toBe('forward');
    expect(() => caseLoss({ derivativeType: 'jvp', jvpMethod: 'reverse' as never })).toThrow(/jvpMethod/);
  }));

  it('agree within the finite-difference error, which shrinks with ε', scoped(() => {
    const jvp = compute(caseLoss({ derivativeType: 'jvp' }));
    const dde = compute(caseLoss());
    expect([jvp.fTPlusEps, jvp.fTMinusEps]).toEqual([null, null]);
    expect(jvp.dFdvdt.narrow(0, 0, 4).abs().max().item()).toBe(0);
    expect(jvp.dFdvdt.requiresGrad).toBe(false);
    // the DDE is the golden one
    expect(maxAbsDiff(dde.dFdvdt, O('dF_dv_dt'))).toBeLessThanOrEqual(DF_TOL);
    const maxDiff = maxAbsDiff(jvp.dFdvdt, dde.dFdvdt);
    const rel5 = relRms(dde.dFdvdt, jvp.dFdvdt);
    report.jvpVsDdeMaxAbs = maxDiff;
    report.jvpVsDdeRelRms = rel5;
    expect(maxDiff).toBeLessThanOrEqual(2e-3);
    expect(rel5).toBeLessThanOrEqual(3e-4);
    // central difference: error ~ ε²·F'''/6, so doubling ε roughly quadruples it
    const rel10 = relRms(compute(caseLoss({ differentialEpsilon: 0.01 })).dFdvdt, jvp.dFdvdt);
    report.ddeEps0_01VsJvpRelRms = rel10;
    expect(rel10).toBeGreaterThan(2.5 * rel5);
    // the targets (and so the loss) agree accordingly
    expect(maxAbsDiff(jvp.fTarget, dde.fTarget)).toBeLessThanOrEqual(2e-3);
    expect(maxAbsDiff(jvp.weightedLoss, dde.weightedLoss)).toBeLessThanOrEqual(1e-5);
  }));

  it.each(['forward', 'double-backward'] as const)('the JVP (%s) leaves no gradient on the parameters and its backward matches the DDE one', (jvpMethod) => scoped(() => {
    const out = compute(caseLoss({ derivativeType: 'jvp', jvpMethod }));
    for (const p of model.parameters()) expect(p.grad).toBeNull();
    out.weightedLoss.add(out.projLoss).backward();
    let worst = 0;
    for (const [name, p] of model.namedParameters()) worst = Math.max(worst, maxAbsDiff(p.grad!, get(adamwOut, `grad/${name}`)));
    report.jvpGradVsGoldenMaxAbs = worst;
    // the target differs by the DDE's O(ε²) error only, so the gradients stay close to the DDE ones
    expect(worst).toBeLessThanOrEqual(1e-4);
    expect(worst).toBeGreaterThan(0);
    clearGrads();
  })());
});

describe('bfloat16 autocast and the DDE', () => {
  it('a bfloat16 central difference loses accuracy; the float32 default keeps golden parity', scoped(() => {
    const bf16 = (o: TransitionLossOptions) => torch.autocast({ dtype: 'bfloat16' }, () => compute(caseLoss(o)));
    const kept = bf16({});
    const lost = bf16({ derivativePrecision: 'autocast' });
    // the main forward runs in bfloat16 either way
    expect([kept.fPred.dtype, lost.fPred.dtype]).toEqual(['bfloat16', 'bfloat16']);
    expect(kept.dFdvdt.dtype).toBe('float32');
    const relKept = relRms(kept.dFdvdt, O('dF_dv_dt'));
    const relLost = relRms(lost.dFdvdt, O('dF_dv_dt'));
    const relPred = torch.scope(() => kept.fPred.double().sub(O('F_pred')).square().sum().sqrt().div(O('F_pred').double().square().sum().sqrt()).item());
    report.bf16DdeRelRms = relLost;
    report.fp32DdeUnderAutocastRelRms = relKept;
    report.bf16FPredRelRms = relPred;
    expect(maxAbsDiff(kept.dFdvdt, O('dF_dv_dt'))).toBeLessThanOrEqual(DF_TOL);
    expect(relLost).toBeGreaterThan(0.05);
    expect(relLost).toBeGreaterThan(1000 * relKept);
    // the JVP has no 1/(2ε): in bfloat16 its error is the forward's order, not amplified
    const jvp32 = compute(caseLoss({ derivativeType: 'jvp' }));
    const jvp16 = bf16({ derivativeType: 'jvp', derivativePrecision: 'autocast' });
    const relJvp = relRms(jvp16.dFdvdt, jvp32.dFdvdt);
    report.bf16JvpRelRms = relJvp;
    expect(relJvp).toBeLessThan(relLost / 10);
    // autocast is restored after compute
    expect(torch.isAutocastEnabled()).toBe(false);
  }));
});

describe('memory', () => {
  it('is flat across repeated compute + backward (tensors, bytes, RSS)', () => {
    const loss = caseLoss();
    const step = () => torch.scope(() => {
      const out = compute(loss);
      out.weightedLoss.add(out.projLoss).backward();
    });
    step(); // first backward allocates the .grad tensors
    clearGrads();
    const before = torch.memory();
    const rss: number[] = [];
    for (let i = 0; i < 12; i++) {
      step();
      clearGrads();
      const m = torch.memory();
      expect(m.liveTensors, `live tensors after step ${i}`).toBe(before.liveTensors);
      expect(m.bytes.cpu, `bytes after step ${i}`).toBe(before.bytes.cpu);
      rss.push(process.memoryUsage().rss);
    }
    const growthMiB = (rss[11]! - rss[3]!) / 2 ** 20;
    report.rssGrowthMiBOver8Steps = Number(growthMiB.toFixed(2));
    expect(growthMiB).toBeLessThan(8);
  });
});
