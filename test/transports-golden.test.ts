/**
 * OTFM against the golden case computed by the official code (test/fixtures/golden/transport_OT_FM):
 * sample_t from the recorded normals, interpolant terms, c_noise, target (plain and enhanced with
 * w_gt 0.6, w_cond 0.3, window [0, 1]), x_r (s_ratio 0) and x_r_stochastic (s_ratio 0.2, recorded eps).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { OTFM } from '../lib/tim/transports/index.js';
import { get, loadGolden, maxAbsDiff, type GoldenCase } from './helpers/golden.js';

/** The README's suggested tolerance for transports (float32, absolute). */
const TOL = 2e-5;

let g: GoldenCase;
const errors: Record<string, number> = {};

beforeAll(() => {
  g = loadGolden('transport_OT_FM');
});
afterAll(() => {
  g.dispose();
  console.log('OTFM vs golden, max |diff|:', JSON.stringify(errors));
});

const I = (k: string): Tensor => get(g.inputs, k);
const O = (k: string): Tensor => get(g.outputs, k);

function check(name: string, got: Tensor, want: Tensor): void {
  const d = maxAbsDiff(got, want);
  errors[name] = d;
  expect(d, `${name}: max |diff|`).toBeLessThanOrEqual(TOL);
}

/** Runs a test body in a scope and checks that it freed everything it made. */
function leakFree(fn: () => void): () => void {
  return () => {
    const before = torch.memory().liveTensors;
    torch.scope(fn);
    expect(torch.memory().liveTensors, 'live tensors').toBe(before);
  };
}

describe('OTFM vs the official OT_FM (golden)', () => {
  it('uses the official default parameters the case was made with', () => {
    const d = g.meta.defaults as Record<string, number>;
    const tr = new OTFM();
    expect([tr.pMean, tr.pStd, tr.sigmaD, tr.tMax, tr.tMin]).toEqual([d.P_mean, d.P_std, d.sigma_d, d.T_max, d.T_min]);
    expect(g.meta.transport).toBe('OT_FM');
  });

  it('sampleT from the recorded normals, and t, r taken from it', leakFree(() => {
    const tr = new OTFM();
    const s = tr.sampleT(8, { normals: I('sample_randn') });
    check('sample_t', s, O('sample_t'));
    check('t', s.slice(0, 0, 4), O('t'));
    // r as the case describes it: T_min + (t − T_min)·u_r, then r[0] = t[0], r[1] = T_min
    const r = s.slice(0, 0, 4).sub(tr.tMin).mul(I('u_r')).add(tr.tMin);
    const rows = r.toArray() as number[];
    rows[0] = (O('t').toArray() as number[])[0]!;
    rows[1] = tr.tMin;
    check('r', torch.tensor(rows, { dtype: 'float32' }), O('r'));
  }));

  it('interpolant terms, c_noise, x_t and v_t', leakFree(() => {
    const tr = new OTFM();
    const t = O('t').view(4, 1, 1, 1);
    const ip = tr.interpolant(t);
    check('alpha_t', ip.alpha, O('alpha_t'));
    check('sigma_t', ip.sigma, O('sigma_t'));
    check('d_alpha_t', ip.dAlpha, O('d_alpha_t'));
    check('d_sigma_t', ip.dSigma, O('d_sigma_t'));
    check('c_noise_t', tr.cNoise(O('t')), O('c_noise_t'));
    check('c_noise_r', tr.cNoise(O('r')), O('c_noise_r'));
    check('x_t', ip.alpha.mul(I('x')).add(ip.sigma.mul(I('z'))), O('x_t'));
    check('v_t', ip.dAlpha.mul(I('x')).add(ip.dSigma.mul(I('z'))), O('v_t'));
  }));

  it('target, plain and enhanced (w_gt 0.6, w_cond 0.3, window [0, 1])', leakFree(() => {
    const inputs = {
      xT: O('x_t'), vT: O('v_t'), x: I('x'), z: I('z'), t: O('t'), r: O('r'), dFdvdt: I('dF_dv_dt'),
      fTCond: I('F_t_cond'), fTUncond: I('F_t_uncond'),
    };
    check('target', new OTFM().target({ ...inputs, enhance: false }), O('target'));
    const e = g.meta.enhanced_ctor as Record<string, number | boolean>;
    const enhanced = new OTFM({
      enhanceTarget: e.enhance_target as boolean, wGt: e.w_gt as number, wCond: e.w_cond as number,
      wStart: e.w_start as number, wEnd: e.w_end as number,
    });
    check('target_enhanced', enhanced.target(inputs), O('target_enhanced'));
    // the two differ, so the enhanced comparison is not the plain one passing twice
    expect(maxAbsDiff(O('target'), O('target_enhanced'))).toBeGreaterThan(0.1);
  }));

  it('step: x_r with sRatio 0 and with sRatio 0.2 and the recorded eps', leakFree(() => {
    const tr = new OTFM();
    check('x_r', tr.step(O('x_t'), O('t'), O('r'), I('F')), O('x_r'));
    expect(g.meta.s_ratio).toBe(0.2);
    check('x_r_stochastic', tr.step(O('x_t'), O('t'), O('r'), I('F'), { sRatio: 0.2, eps: I('eps') }), O('x_r_stochastic'));
  }));
});
