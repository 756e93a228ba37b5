/**
 * The five transports against a Python transcription of the official formulas
 * (test/fixtures/transports_ref.py, run with Debian's python3-torch): sampleT from the same draws,
 * c_noise, interpolant, target (plain, dF/dt = 0, enhanced, enhanced with wCond 0), step
 * (deterministic, with sRatio, and sampler-style in float64 with 0-d float32 times).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { EDM, OTFM, TrigFlow, VESDE, VPSDE, type Transport } from '../lib/tim/transports/index.js';
import { PYTHON, pythonEnv } from './helpers/python.js';
import { get, repoRoot } from './helpers/golden.js';

type PyKwargs = Record<string, number | boolean>;

/** The official constructor parameter names and ours. */
const CAMEL: Record<string, string> = {
  P_mean: 'pMean', P_std: 'pStd', sigma_d: 'sigmaD', T_max: 'tMax', T_min: 'tMin', enhance_target: 'enhanceTarget',
  w_gt: 'wGt', w_cond: 'wCond', w_start: 'wStart', w_end: 'wEnd', beta_min: 'betaMin', beta_d: 'betaD',
  epsilon_t: 'epsilonT', T: 'T', sigma_min: 'sigmaMin', sigma_max: 'sigmaMax',
};

function camel(kw: PyKwargs): Record<string, number | boolean> {
  const out: Record<string, number | boolean> = {};
  for (const [k, v] of Object.entries(kw)) {
    const c = CAMEL[k];
    if (c === undefined) throw new Error(`no camelCase name for official parameter ${k}`);
    out[c] = v;
  }
  return out;
}

function make(cls: string, kw: PyKwargs): Transport {
  const o = camel(kw);
  switch (cls) {
    case 'OT_FM': return new OTFM(o);
    case 'TrigFlow': return new TrigFlow(o);
    case 'EDM': return new EDM(o);
    case 'VP_SDE': return new VPSDE(o);
    case 'VE_SDE': return new VESDE(o);
    default: throw new Error(`unknown transport ${cls}`);
  }
}

/**
 * Both computations run the same float32 operations in the same order, so they agree to rounding;
 * the bound is relative to the reference's magnitude (VPSDE's dSigma reaches 1e3 near tMin).
 */
function expectClose(got: Tensor, want: Tensor, what: string, rel = 1e-6): number {
  expect(got.shape, `${what}: shape`).toEqual(want.shape);
  expect(got.dtype, `${what}: dtype`).toBe(want.dtype);
  const [diff, scale] = torch.scope(() => [
    got.double().sub(want.double()).abs().max().item(),
    Math.max(1, want.double().abs().max().item()),
  ]);
  expect(Number.isFinite(diff), `${what}: finite difference`).toBe(true);
  expect(diff, `${what}: max |diff| ${diff} (scale ${scale})`).toBeLessThanOrEqual(rel * scale);
  return diff;
}

let dir = '';
let ref: Record<string, Tensor> = {};
let cases: Record<string, [string, PyKwargs, PyKwargs]> = {};
const worst: Record<string, number> = {};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tim-transports-'));
  const out = join(dir, 'ref.safetensors');
  execFileSync(PYTHON, [join(repoRoot, 'test', 'fixtures', 'transports_ref.py'), out], {
    env: pythonEnv(),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const { tensors, metadata } = torch.loadSafetensors(out, { lazy: false });
  ref = tensors;
  cases = JSON.parse(metadata!.cases!) as typeof cases;
});

afterAll(() => {
  for (const t of Object.values(ref)) t.dispose();
  rmSync(dir, { recursive: true, force: true });
  // the largest differences seen, for the report
  console.log('transports vs Python reference, max |diff|:', JSON.stringify(worst));
});

function note(name: string, d: number): void {
  worst[name] = Math.max(worst[name] ?? 0, d);
}

const NAMES = ['OTFM', 'OTFM_p', 'TrigFlow', 'EDM', 'EDM_sd', 'VPSDE', 'VESDE'];

describe('transports vs a transcription of the official formulas', () => {
  it('covers every case the reference computed', () => {
    expect(Object.keys(cases).sort()).toEqual([...NAMES].sort());
  });

  for (const name of NAMES) {
    describe(name, () => {
      const R = (k: string): Tensor => get(ref, `${name}/${k}`);
      const build = (enh = false, extra: PyKwargs = {}): Transport => {
        const [cls, kw, ekw] = cases[name]!;
        return make(cls, { ...kw, ...(enh ? ekw : {}), ...extra });
      };

      it('sampleT from the replayed draw, cNoise, and the double c_noise the official enhanced target applies', () => {
        const before = torch.memory().liveTensors;
        torch.scope(() => {
          const tr = build();
          const draw = R('draw');
          const opts = tr.timeDraw === 'normal' ? { normals: draw } : { uniforms: draw };
          note('sampleT', expectClose(tr.sampleT(draw.shape[0]!, opts), R('sample_t'), 'sampleT'));
          note('cNoise', expectClose(tr.cNoise(R('t')), R('c_noise_t'), 'cNoise(t)'));
          note('cNoise', expectClose(tr.cNoise(R('r')), R('c_noise_r'), 'cNoise(r)'));
          const { tInput, rInput } = tr.modelTimes(R('t'), R('t'));
          note('cNoise', expectClose(tInput, R('c_noise_t'), 'modelTimes(t, t).tInput'));
          note('cNoise', expectClose(rInput, R('c_noise_t'), 'modelTimes(t, t).rInput'));
          // c_noise is the identity for OTFM and TrigFlow, so the double application is harmless
          // there; for the others the official EMA inputs differ from c_noise(t) (our fix matters)
          const twiceSame = torch.scope(() => R('c_noise_twice_t').sub(R('c_noise_t')).abs().max().item() === 0);
          expect(twiceSame, 'c_noise(c_noise(t)) == c_noise(t)').toBe(tr instanceof OTFM || tr instanceof TrigFlow);
        });
        expect(torch.memory().liveTensors).toBe(before);
      });

      it('interpolant and the x_t, v_t it builds', () => {
        const before = torch.memory().liveTensors;
        torch.scope(() => {
          const tr = build();
          const t4 = R('t').view(4, 1, 1, 1);
          const ip = tr.interpolant(t4);
          note('interpolant', expectClose(ip.alpha, R('alpha'), 'alpha'));
          note('interpolant', expectClose(ip.sigma, R('sigma'), 'sigma'));
          note('interpolant', expectClose(ip.dAlpha, R('d_alpha'), 'dAlpha'));
          note('interpolant', expectClose(ip.dSigma, R('d_sigma'), 'dSigma'));
          note('x_t', expectClose(ip.alpha.mul(R('x')).add(ip.sigma.mul(R('z'))), R('x_t'), 'x_t'));
          note('x_t', expectClose(ip.dAlpha.mul(R('x')).add(ip.dSigma.mul(R('z'))), R('v_t'), 'v_t'));
        });
        expect(torch.memory().liveTensors).toBe(before);
      });

      it('target: plain, with dF/dt the number 0, enhanced, enhanced with wCond 0', () => {
        const before = torch.memory().liveTensors;
        torch.scope(() => {
          const base = {
            xT: R('x_t'), vT: R('v_t'), x: R('x'), z: R('z'), t: R('t'), r: R('r'), dFdvdt: R('dF_dv_dt'),
            fTCond: R('F_t_cond'), fTUncond: R('F_t_uncond'),
          };
          note('target', expectClose(build().target(base), R('target'), 'target'));
          note('target', expectClose(build().target({ ...base, dFdvdt: 0 }), R('target_dF0'), 'target dF=0'));
          const enh = build(true);
          // the window must hold some rows and miss others, or the test would not see where() at work
          const inWindow = torch.scope(() => R('t').ge(enh.wStart).logicalAnd(R('t').le(enh.wEnd)).sum().item());
          expect(inWindow, 'rows inside [wStart, wEnd]').toBeGreaterThan(0);
          expect(inWindow, 'rows inside [wStart, wEnd]').toBeLessThan(4);
          note('target_enhanced', expectClose(enh.target(base), R('target_enhanced'), 'target enhanced'));
          // enhance defaults to the constructor's enhanceTarget, and enhance: false overrides it
          note('target', expectClose(enh.target({ ...base, enhance: false }), R('target'), 'enhance: false'));
          const enh0 = build(true, { w_cond: 0 });
          const { fTCond: _omit, ...noCond } = base;
          note('target_enhanced', expectClose(enh0.target(noCond), R('target_enhanced_wcond0'), 'target enhanced wCond 0'));
        });
        expect(torch.memory().liveTensors).toBe(before);
      });

      it('step: deterministic, with sRatio 0.2 (only OTFM uses it), and a float64 sampler step', () => {
        const before = torch.memory().liveTensors;
        torch.scope(() => {
          const tr = build();
          const xT = R('x_t'), F = R('F');
          note('step', expectClose(tr.step(xT, R('t'), R('r'), F), R('x_r'), 'x_r'));
          note('step', expectClose(tr.step(xT, R('t'), R('r'), F, { sRatio: 0.2, eps: R('eps') }), R('x_r_sto'), 'x_r stochastic'));
          const x64 = xT.double(), F64 = F.double(), eps64 = R('eps').double();
          const tCur = R('step64_t'), tNext = R('step64_r');
          expect(tCur.dim).toBe(0);
          note('step64', expectClose(tr.step(x64, tCur, tNext, F64), R('step64_x_r'), 'float64 step', 1e-12));
          note('step64', expectClose(tr.step(x64, tCur, tNext, F64, { sRatio: 0.2, eps: eps64 }), R('step64_x_r_sto'), 'float64 stochastic step', 1e-12));
        });
        expect(torch.memory().liveTensors).toBe(before);
      });
    });
  }
});
