/**
 * The any-step sampler: parity with the official TransitionSchedule.sample on all 32 golden runs
 * (test/fixtures/golden/sampler: steps {1,2,4,8} × cfg {1, 2.5} × stochasticity {0, 0.2} × type), the
 * per-step decisions against case.json, the schedule's pure functions, and the CFG / noise / option
 * logic on a fake model whose output is known in closed form.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TiM, sample, torch, transports, type SampleOptions, type SamplerModel, type SamplerStep } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { decodeLatents, guided, resolveSample } from '../lib/tim/sampling/sampler.js';
import {
  cfgActive, explicitTimeSteps, modelR, roundAllToDType, roundToDType, sampleTypeOf, samplingPlan, stochasticActive, timeSteps,
} from '../lib/tim/sampling/schedule.js';
import { get, GOLDEN_DIR, loadGolden, maxAbsDiff, type GoldenCase } from './helpers/golden.js';
import { join } from 'node:path';

/** The README's suggested tolerance for the sampler (traj and F_pred, absolute). */
const TOL = 1e-5;

/** Runs a test body in a scope and checks that it freed everything it made. */
function leakFree(fn: () => void): () => void {
  return () => {
    const before = torch.memory().liveTensors;
    torch.scope(fn);
    expect(torch.memory().liveTensors, 'live tensors').toBe(before);
  };
}

/**
 * sample() with the trajectory and the per-step F collected through onStep (what the removed
 * returnTrajectory / returnFPred options returned): traj (numSteps + 1, ...) float32 with z first,
 * fPred (numSteps, ...) in z's dtype, and sample, the return value.
 */
function sampleCollect(model: SamplerModel, tr: transports.Transport, o: SampleOptions): { sample: Tensor; traj: Tensor; fPred: Tensor } {
  const xs: Tensor[] = [o.z.to({ dtype: 'float32', copy: true })];
  const fs: Tensor[] = [];
  const out = sample(model, tr, { ...o, onStep: ({ x, F }) => { xs.push(x.to('float32')); fs.push(F.clone()); } });
  return { sample: out, traj: torch.stack(xs, 0), fPred: torch.stack(fs, 0) };
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return String((e as { code?: unknown }).code);
  }
  throw new Error('expected a throw');
}

// ---- golden parity ------------------------------------------------------------------------------

describe('golden: official TransitionSchedule.sample', () => {
  let g: GoldenCase;
  let model: TiM;
  const worst = { traj: 0, fPred: 0 };
  const ot = new transports.OTFM({ pMean: -0.4, pStd: 1.0 });

  beforeAll(() => {
    g = loadGolden('sampler');
    model = TiM.load(join(GOLDEN_DIR, 'sampler', 'weights.safetensors'));
  });
  afterAll(() => {
    model?.dispose();
    g?.dispose();
    console.log('sampler vs golden, worst max |diff| over 32 runs:', JSON.stringify(worst));
  });

  const runOptions = (run: Record<string, any>): SampleOptions => ({
    z: get(g.inputs, 'z'), y: get(g.inputs, 'y'), yNull: get(g.inputs, 'y_null'),
    numSteps: run.num_steps, tMax: 1.0, tMin: 0.0, cfgScale: run.cfg_scale, cfgLow: 0.0, cfgHigh: 0.6,
    stochasticityRatio: run.stochasticity_ratio, sampleType: run.sample_type,
    noise: run.eps_input ? get(g.inputs, run.eps_input) : undefined,
  });

  it('has the 32 runs', () => {
    expect(Object.keys(g.meta.runs)).toHaveLength(32);
  });

  it('every run: trajectory and F_pred within 1e-5, nothing leaked', leakFree(() => {
    for (const [name, run] of Object.entries<Record<string, any>>(g.meta.runs)) {
      const out = sampleCollect(model, ot, runOptions(run));
      expect(out.traj.dtype).toBe('float32');
      const dT = maxAbsDiff(out.traj, get(g.outputs, `${name}/traj`));
      const dF = maxAbsDiff(out.fPred, get(g.outputs, `${name}/F_pred`));
      worst.traj = Math.max(worst.traj, dT);
      worst.fPred = Math.max(worst.fPred, dF);
      expect(dT, `${name}/traj`).toBeLessThanOrEqual(TOL);
      expect(dF, `${name}/F_pred`).toBeLessThanOrEqual(TOL);
      // the return value is the last row of the trajectory, with or without onStep
      expect(maxAbsDiff(out.sample, out.traj.select(0, run.num_steps))).toBe(0);
      const last = sample(model, ot, runOptions(run));
      expect(maxAbsDiff(last, out.sample)).toBe(0);
    }
  }));

  it('every run: the per-step decisions equal case.json (t_cur, r, t_next, CFG, noise, s_ratio)', () => {
    for (const [name, run] of Object.entries<Record<string, any>>(g.meta.runs)) {
      const plan = resolveSample(model, ot, runOptions(run)).plan;
      expect(plan.map((s) => [s.tCur, s.rModel, s.tNext, s.cfg, s.noise, s.sRatio]), name).toEqual(
        run.steps.map((s: any) => [s.t_cur, s.r_model, s.t_next, s.cfg_applied, s.noise_drawn, s.s_ratio]),
      );
    }
  });

  it("'diffusion' is the official 'ddiffusion'; a C2I TiM defaults yNull to the null class", leakFree(() => {
    const run = g.meta.runs['ddiffusion_n4_cfg2.5_sto0.2'];
    const a = sampleCollect(model, ot, { ...runOptions(run), sampleType: 'diffusion', yNull: undefined }).traj;
    expect(maxAbsDiff(a, get(g.outputs, 'ddiffusion_n4_cfg2.5_sto0.2/traj'))).toBeLessThanOrEqual(TOL);
  }));
});

// ---- schedule: pure functions -------------------------------------------------------------------

describe('schedule', () => {
  it('timeSteps casts to the time dtype like .to(z)', leakFree(() => {
    const ts = timeSteps(3, 1, 0);
    expect(ts).toEqual(Array.from(torch.linspace(1, 0, 4, { dtype: 'float64' }).float().toTypedArray() as Float64Array));
    expect(ts[1]).toBe(Math.fround(2 / 3));
    expect(ts[1]).not.toBe(2 / 3);
    // libtorch's float64 linspace, bit for bit (its vectorised kernel is not start + i·step everywhere)
    for (const [a, b, n] of [[1, 0, 3], [80, 0.01, 18], [1.57, 0, 50]] as const) {
      expect(timeSteps(n, a, b, 'float64')).toEqual(Array.from(torch.linspace(a, b, n + 1, { dtype: 'float64' }).toTypedArray() as Float64Array));
    }
    expect(() => timeSteps(0, 1, 0)).toThrow(RangeError);
    expect(() => timeSteps(2, 0, 1)).toThrow(/tMax/);
  }));

  it('roundToDType matches torch casts for float32, bfloat16 and float16', leakFree(() => {
    const vals = [1 / 3, 0.6, 2 / 3, 0.1, 79.99, 1e-6, 70000, -0.30000001, 0.5 + 2 ** -12];
    for (const dt of ['float32', 'bfloat16', 'float16'] as const) {
      const want = Array.from(torch.tensor(vals, { dtype: 'float64' }).to(dt).double().toTypedArray() as Float64Array);
      expect(vals.map((v) => roundToDType(v, dt)), dt).toEqual(want);
    }
  }));

  it('roundToDType (now a libtorch cast) gives what the former hand-written rounding gave', leakFree(() => {
    // The former schedule.ts rounding, kept here as the reference for parity.
    const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
    const legacy = (v: number, dtype: 'bfloat16' | 'float16'): number => {
      if (dtype === 'bfloat16') {
        if (!Number.isFinite(v)) return v;
        f32[0] = v;
        u32[0] = ((u32[0]! + 0x7fff + ((u32[0]! >>> 16) & 1)) >>> 16) << 16;
        return f32[0];
      }
      if (!Number.isFinite(v) || v === 0) return v;
      const a = Math.abs(v);
      if (a >= 65520) return Math.sign(v) * Infinity;
      let e = Math.floor(Math.log2(a));
      if (2 ** e > a) e -= 1;
      const ulp = 2 ** (Math.max(e, -14) - 10);
      const q = a / ulp;
      let r = Math.round(q);
      if (q - Math.trunc(q) === 0.5 && r % 2 === 1) r -= 1;
      return Math.sign(v) * r * ulp;
    };
    const vals: number[] = [];
    // every default schedule of every transport up to 64 steps (in float64), and the guidance bounds
    for (const [hi, lo] of [[1, 0], [1.57, 0], [80, 0.01], [1, 1e-5], [100, 0.02]] as const) {
      for (let n = 1; n <= 64; n++) vals.push(...timeSteps(n, hi, lo, 'float64'));
      for (let k = 0; k <= 20; k++) vals.push((k / 20) * hi);
    }
    // magnitudes from half subnormals to past the half range, both signs, and exact ties
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 2000; i++) vals.push((rnd() < 0.5 ? -1 : 1) * 2 ** (rnd() * 44 - 26) * (1 + rnd()));
    vals.push(0, -0, 65504, 65519.99, 65520, 1e6, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8);
    for (const dt of ['bfloat16', 'float16'] as const) {
      const got = roundAllToDType(vals, dt);
      expect(vals.slice(-13).map((v) => roundToDType(v, dt)), dt).toEqual(got.slice(-13));
      const want = vals.map((v) => legacy(v, dt));
      const diff = vals.filter((_, i) => !Object.is(got[i], want[i]) && !(got[i] === 0 && want[i] === 0));
      expect(diff, dt).toEqual([]);
    }
    // The one place they part: a double within float32 rounding of a float16 tie. libtorch casts
    // double → float16 through float32 (so does the official .to(z)), the former code rounded once.
    expect(roundToDType(1 + 2 ** -11 + 2 ** -40, 'float16')).toBe(1);
    expect(legacy(1 + 2 ** -11 + 2 ** -40, 'float16')).toBe(1 + 2 ** -10);
    const t16 = torch.tensor([1 + 2 ** -11 + 2 ** -40], { dtype: 'float64' }).to('float16').double().item();
    expect(t16).toBe(1);
    // explicit schedules round the same way
    const sched = [1, 0.7, 0.30000001, 0.1, 1e-6];
    for (const dt of ['bfloat16', 'float16'] as const) expect(explicitTimeSteps(sched, dt)).toEqual(sched.map((v) => legacy(v, dt)));
  }));

  it('cfgActive: scale > 1, strict window scaled by tMax, bounds compared in the time dtype', () => {
    expect(cfgActive(0.5, 2.5, 0, 0.6, 1)).toBe(true);
    expect(cfgActive(0.5, 1.0, 0, 0.6, 1)).toBe(false);
    expect(cfgActive(Math.fround(0.6), 2.5, 0, 0.6, 1)).toBe(false); // t == high (in float32): strict
    expect(cfgActive(0, 2.5, 0, 0.6, 1)).toBe(false); // t == low: strict
    expect(cfgActive(40, 2.5, 0, 0.6, 80)).toBe(true); // window 0..48 for tMax 80
    expect(cfgActive(50, 2.5, 0, 0.6, 80)).toBe(false);
    // float64 times compare against the unrounded bound
    expect(cfgActive(0.6, 2.5, 0, 0.6, 1, 'float64')).toBe(false);
    expect(cfgActive(0.6 - 1e-12, 2.5, 0, 0.6, 1, 'float64')).toBe(true);
    expect(cfgActive(Math.fround(0.6 - 1e-12), 2.5, 0, 0.6, 1)).toBe(false); // the same time in float32 is 0.6
  });

  it('stochasticActive: never at t = tMax, never when r = tMin', () => {
    expect(stochasticActive(0.2, 1, 0.5, 1, 0)).toBe(false);
    expect(stochasticActive(0.2, 0.5, 0, 1, 0)).toBe(false);
    expect(stochasticActive(0.2, 0.5, 0.25, 1, 0)).toBe(true);
    expect(stochasticActive(0, 0.5, 0.25, 1, 0)).toBe(false);
  });

  it('modelR and sample types', () => {
    expect(modelR(0.5, 0.25, 'transition')).toBe(0.25);
    expect(modelR(0.5, 0.25, 'diffusion')).toBe(0.5);
    expect(sampleTypeOf('ddiffusion')).toBe('diffusion');
    expect(sampleTypeOf('transition')).toBe('transition');
    expect(codeOf(() => sampleTypeOf('ode'))).toBe('E_OPTION');
  });

  it('samplingPlan: no noise for a deterministic transport; explicit schedules checked', () => {
    const base = { timesteps: [1, 0.5, 0.25, 0], sampleType: 'transition' as const, cfgScale: 1, cfgLow: 0, cfgHigh: 1, stochasticityRatio: 0.3, tMax: 1, tMin: 0 };
    expect(samplingPlan(base).map((s) => s.noise)).toEqual([false, true, false]);
    expect(samplingPlan({ ...base, stochasticTransport: false }).map((s) => s.noise)).toEqual([false, false, false]);
    expect(samplingPlan({ ...base, stochasticTransport: false })[1]!.sRatio).toBe(0.3);
    expect(explicitTimeSteps([1, 0.3, 0])).toEqual([1, Math.fround(0.3), 0]);
    expect(() => explicitTimeSteps([1, 1, 0])).toThrow(/strictly decreasing/);
    expect(() => explicitTimeSteps([1])).toThrow(RangeError);
    expect(() => explicitTimeSteps([1, Number.NaN])).toThrow(TypeError);
  });
});

// ---- the loop on a fake model -------------------------------------------------------------------

interface Call { b: number; t: number[]; r: number[]; y: number[]; grad: boolean; xDtype: string }

/**
 * F = y (the label, as a float) everywhere, so a deterministic run is x_n = z − Σ (t_i − t_{i+1})·F_i
 * with F_i = y, or yNull + s·(y − yNull) at guided steps. Records every call.
 */
function fakeModel(): SamplerModel & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    forward(x: Tensor, t: Tensor, r: Tensor, y: Tensor): Tensor {
      calls.push({
        b: x.shape[0]!, t: Array.from(t.toTypedArray() as Float32Array), r: Array.from(r.toTypedArray() as Float32Array),
        y: Array.from(y.toTypedArray() as BigInt64Array, Number), grad: torch.isGradEnabled(), xDtype: x.dtype,
      });
      return torch.scope(() => torch.zerosLike(x).add(y.float().view([-1, 1, 1, 1])));
    },
  };
}

describe('sampler loop (fake model)', () => {
  const ot = new transports.OTFM();
  const mk = () => ({ z: torch.randn([2, 3, 4, 4]), y: torch.tensor([3, 7], { dtype: 'int64' }), yNull: torch.tensor([10, 10], { dtype: 'int64' }) });

  it('batched CFG: one forward on [cond; uncond] inside the window, the plain one outside', leakFree(() => {
    const m = fakeModel();
    const { z, y, yNull } = mk();
    const s = 2.5;
    const x = sample(m, ot, { z, y, yNull, numSteps: 4, cfgScale: s, cfgLow: 0, cfgHigh: 0.6 });
    expect(m.calls.map((c) => c.b)).toEqual([2, 2, 4, 4]); // t = 1, 0.75 outside; 0.5, 0.25 inside
    expect(m.calls[2]!.y).toEqual([3, 7, 10, 10]);
    expect(m.calls[0]!.y).toEqual([3, 7]);
    expect(m.calls.every((c) => !c.grad && c.xDtype === 'float32')).toBe(true);
    expect(m.calls.map((c) => c.t[0])).toEqual([1, 0.75, 0.5, 0.25]);
    expect(m.calls.map((c) => c.r[0])).toEqual([0.75, 0.5, 0.25, 0]);
    expect(m.calls[3]!.t).toEqual([0.25, 0.25, 0.25, 0.25]);
    // closed form, per row
    const F = (lab: number, cfg: boolean) => (cfg ? 10 + s * (lab - 10) : lab);
    for (const [row, lab] of [[0, 3], [1, 7]] as const) {
      const shift = 0.25 * (F(lab, false) * 2 + F(lab, true) * 2);
      const want = z.select(0, row).sub(shift);
      expect(maxAbsDiff(x.select(0, row), want)).toBeLessThan(1e-6);
    }
  }));

  it('runs the model in eval mode and restores its mode, also when the model throws', leakFree(() => {
    const modes: boolean[] = [];
    let training = true;
    let fail = false;
    const m = {
      get isTraining() { return training; },
      train(on: boolean) { training = on; return this; },
      forward(x: Tensor): Tensor {
        modes.push(training);
        if (fail) throw new RangeError('nope');
        return x.mul(0.5);
      },
    };
    const { z, y } = mk();
    sample(m, ot, { z, y, numSteps: 2 });
    expect(modes).toEqual([false, false]);
    expect(training).toBe(true);
    fail = true;
    expect(() => sample(m, ot, { z, y, numSteps: 2 })).toThrow('nope');
    expect(training).toBe(true);
    training = false; // a model already in eval mode stays there
    fail = false;
    sample(m, ot, { z, y, numSteps: 1 });
    expect(training).toBe(false);
  }));

  it("'diffusion' gives r = t_cur", leakFree(() => {
    const m = fakeModel();
    const { z, y } = mk();
    sample(m, ot, { z, y, numSteps: 2, sampleType: 'diffusion' });
    expect(m.calls.map((c) => [c.t[0], c.r[0]])).toEqual([[1, 1], [0.5, 0.5]]);
  }));

  it('noise: a stacked tensor and an array give the same run; seeded fresh draws are the same draws', leakFree(() => {
    const m = fakeModel();
    const { z, y } = mk();
    const o = { z, y, numSteps: 4, stochasticityRatio: 0.3 };
    // steps 1 and 2 draw (not the first, not the last with r = 0)
    const plan = resolveSample(m, ot, o).plan;
    expect(plan.map((s) => s.noise)).toEqual([false, true, true, false]);
    const eps = torch.randn([4, 2, 3, 4, 4]);
    const a = sample(m, ot, { ...o, noise: eps });
    const b = sample(m, ot, { ...o, noise: [null, eps.select(0, 1), eps.select(0, 2), undefined] });
    expect(maxAbsDiff(a, b)).toBe(0);
    const det = sample(m, ot, { ...o, stochasticityRatio: 0 });
    expect(maxAbsDiff(a, det)).toBeGreaterThan(1e-3); // the noise did something
    // fresh draws: randn_like of the float64 state, in step order
    torch.manualSeed(123);
    const fresh = sample(m, ot, o);
    torch.manualSeed(123);
    const d1 = torch.randn([2, 3, 4, 4], { dtype: 'float64' });
    const d2 = torch.randn([2, 3, 4, 4], { dtype: 'float64' });
    const replay = sample(m, ot, { ...o, noise: [null, d1, d2, null] });
    expect(maxAbsDiff(fresh, replay)).toBe(0);
  }));

  it('never mutates the inputs; z is trajectory[0]', leakFree(() => {
    const m = fakeModel();
    const { z, y, yNull } = mk();
    const eps = torch.randn([3, 2, 3, 4, 4]);
    const [z0, y0, n0, e0] = [z.clone(), y.clone(), yNull.clone(), eps.clone()];
    const { traj } = sampleCollect(m, ot, { z, y, yNull, numSteps: 3, cfgScale: 2, stochasticityRatio: 0.2, noise: eps });
    expect(traj.shape).toEqual([4, 2, 3, 4, 4]);
    expect(maxAbsDiff(traj.select(0, 0), z)).toBe(0);
    expect(maxAbsDiff(z, z0) + maxAbsDiff(eps, e0) + maxAbsDiff(y.double(), y0.double()) + maxAbsDiff(yNull.double(), n0.double())).toBe(0);
    // float64 z: the float64 state is a copy, z survives
    const z64 = z.double();
    const z64c = z64.clone();
    sample(m, ot, { z: z64, y, numSteps: 2 });
    expect(z64.isDisposed).toBe(false);
    expect(maxAbsDiff(z64, z64c)).toBe(0);
    expect(m.calls.at(-1)!.xDtype).toBe('float64');
  }));

  it('explicit timesteps: the linspace schedule reproduces the default; tMax/tMin default to its ends', leakFree(() => {
    const m = fakeModel();
    const { z, y, yNull } = mk();
    const o = { z, y, yNull, cfgScale: 2, cfgHigh: 0.6 };
    const a = sample(m, ot, { ...o, numSteps: 3 });
    const b = sample(m, ot, { ...o, timesteps: [1, 2 / 3, 1 / 3, 0] });
    const c = sample(m, ot, { ...o, timesteps: torch.tensor([1, 2 / 3, 1 / 3, 0], { dtype: 'float64' }), numSteps: 3 });
    expect(maxAbsDiff(a, b) + maxAbsDiff(a, c)).toBe(0);
    m.calls.length = 0;
    sample(m, ot, { ...o, timesteps: [0.8, 0.3, 0] });
    expect(m.calls.map((c) => [c.b, c.t[0]])).toEqual([[2, Math.fround(0.8)], [4, Math.fround(0.3)]]); // window 0..0.48
    expect(codeOf(() => sample(m, ot, { ...o, timesteps: [1, 0.5, 0], numSteps: 3 }))).toBe('E_RANGE');
  }));

  it('resolveSample outside any scope allocates nothing that outlives it', () => {
    const m = fakeModel();
    const ts = torch.tensor([1, 0.5, 0], { dtype: 'float64' });
    const { z, y } = torch.scope(() => torch.keep({ z: torch.zeros([2, 3, 4, 4]), y: torch.tensor([1, 2], { dtype: 'int64' }) }));
    const before = torch.memory().liveTensors;
    const plan = resolveSample(m, ot, { z, y, timesteps: ts, stochasticityRatio: 0.1 }).plan;
    sample(m, ot, { z, y, numSteps: 3 }).dispose();
    expect(torch.memory().liveTensors).toBe(before);
    expect(plan.map((s) => s.tCur)).toEqual([1, 0.5]);
    for (const t of [ts, z, y]) t.dispose();
  });

  it('deterministic transports ignore the stochasticity ratio (as the official step does)', leakFree(() => {
    const m = fakeModel();
    const { z, y } = mk();
    const tf = new transports.TrigFlow();
    const a = sample(m, tf, { z, y, numSteps: 3, stochasticityRatio: 0.5 });
    const b = sample(m, tf, { z, y, numSteps: 3 });
    expect(maxAbsDiff(a, b)).toBe(0);
    expect(resolveSample(m, tf, { z, y, numSteps: 3, stochasticityRatio: 0.5 }).plan.some((s) => s.noise)).toBe(false);
    expect(m.calls[0]!.t[0]).toBe(Math.fround(tf.tMax));
  }));

  it('onStep F: the guided output of every step', leakFree(() => {
    const m = fakeModel();
    const { z, y, yNull } = mk();
    const { sample: x, fPred } = sampleCollect(m, ot, { z, y, yNull, numSteps: 2, cfgScale: 3, cfgHigh: 0.9 });
    expect(x.shape).toEqual([2, 3, 4, 4]);
    expect(fPred.shape).toEqual([2, 2, 3, 4, 4]);
    expect(fPred.select(0, 0).select(0, 0).max().item()).toBe(3); // step 0 (t = 1): unguided
    expect(fPred.select(0, 1).select(0, 0).max().item()).toBe(10 + 3 * (3 - 10));
    expect(maxAbsDiff(guided(torch.ones([2]), torch.zeros([2]), 4), torch.full([2], 4))).toBe(0);
    const u = sampleCollect(m, ot, { z, y, numSteps: 1 });
    expect(u.sample instanceof torch.Tensor).toBe(true);
    expect(maxAbsDiff(u.fPred.select(0, 0), torch.zerosLike(z).add(y.float().view([-1, 1, 1, 1])))).toBe(0);
  }));

  it('decoder: a TorchScript module or a function, on latents·std + mean', leakFree(() => {
    const m = fakeModel();
    const { z, y } = mk();
    const dec = torch.jit.createModule('Dec');
    try {
      dec.define('def forward(self, x: Tensor) -> Tensor:\n    return x * 2.0 + 1.0\n');
      const lat = sample(m, ot, { z, y, numSteps: 2 });
      const img = sample(m, ot, { z, y, numSteps: 2, decoder: dec, latentStd: 4, latentMean: 0.5 });
      expect(maxAbsDiff(img, lat.mul(4).add(0.5).mul(2).add(1))).toBeLessThan(1e-5);
      const chStd = torch.tensor([1, 2, 3]);
      const img2 = sample(m, ot, { z, y, numSteps: 2, decoder: (v: Tensor) => v.neg(), latentStd: chStd });
      expect(maxAbsDiff(img2, lat.mul(chStd.view([1, 3, 1, 1])).neg())).toBeLessThan(1e-6);
      expect(maxAbsDiff(decodeLatents((v: Tensor) => v.clone(), lat), lat)).toBe(0);
      // onStep still sees the latents (float64 state) while the return value is decoded
      let lastX: Tensor | null = null;
      const img3 = sample(m, ot, { z, y, numSteps: 2, decoder: dec, onStep: ({ x }) => { lastX?.dispose(); lastX = x.to('float32'); } });
      expect(maxAbsDiff(lastX!, lat)).toBe(0);
      expect(maxAbsDiff(img3, lat.mul(2).add(1))).toBeLessThan(1e-5);
      expect(codeOf(() => decodeLatents(dec, lat, { std: torch.ones([5]) }))).toBe('E_SHAPE');
    } finally {
      dec.dispose();
    }
  }));

  it('bad input is a typed error, checked before the model runs, and leaks nothing', leakFree(() => {
    const m = fakeModel();
    const { z, y, yNull } = mk();
    const bad: [Partial<SampleOptions> & Record<string, unknown>, string][] = [
      [{ sampleType: 'ode' as never }, 'E_OPTION'],
      [{ numSteps: 0 }, 'E_RANGE'],
      [{ numSteps: 2.5 }, 'E_RANGE'],
      [{ cfgScale: Number.NaN }, 'E_RANGE'],
      [{ stochasticityRatio: -1 }, 'E_RANGE'],
      [{ tMax: 0, tMin: 1 }, 'E_RANGE'],
      [{ timesteps: [0, 1] }, 'E_RANGE'],
      [{ cfgScale: 2 }, 'E_OPTION'], // guidance without yNull on a model that is not a C2I TiM
      [{ yNull: torch.tensor([1, 2, 3], { dtype: 'int64' }), cfgScale: 2 }, 'E_SHAPE'],
      [{ y: torch.tensor([1], { dtype: 'int64' }) }, 'E_SHAPE'],
      [{ z: torch.zeros([2, 3], { dtype: 'int64' }) }, 'E_DTYPE'],
      [{ numSteps: 3, stochasticityRatio: 0.2, noise: [null, null, null] }, 'E_OPTION'],
      [{ numSteps: 3, stochasticityRatio: 0.2, noise: torch.zeros([2, 2, 3, 4, 4]) }, 'E_SHAPE'],
      [{ numSteps: 3, stochasticityRatio: 0.2, noise: [null, torch.zeros([2, 3]), null] }, 'E_SHAPE'],
      [{ numSteps: 3, noise: [null] }, 'E_RANGE'],
      [{ onStep: 1 as never }, 'E_ARG'],
      [{ returnTrajectory: true } as never, 'E_OPTION'], // removed: collect the trajectory in onStep
      [{ returnFPred: true } as never, 'E_OPTION'],
      [{ cfgScale: '2' as never }, 'E_ARG'],
      [{ latentStd: 2 }, 'E_OPTION'],
      [{ nuMSteps: 2 } as never, 'E_OPTION'],
    ];
    for (const [o, code] of bad) {
      expect(codeOf(() => sample(m, ot, { z, y, ...o } as SampleOptions)), JSON.stringify(Object.keys(o))).toBe(code);
    }
    expect(m.calls).toHaveLength(0);
    expect(codeOf(() => sample({} as SamplerModel, ot, { z, y }))).toBe('E_ARG');
    expect(codeOf(() => sample(m, {} as never, { z, y }))).toBe('E_ARG');
    const dead = torch.zeros([2, 3, 4, 4]);
    dead.dispose();
    expect(codeOf(() => sample(m, ot, { z: dead, y }))).toBe('E_DISPOSED');
    // a model that returns the wrong shape, and one that throws mid-run: typed, and nothing leaks
    const wrong: SamplerModel = { forward: (x: Tensor) => x.sum(1) };
    expect(codeOf(() => sample(wrong, ot, { z, y, numSteps: 2 }))).toBe('E_SHAPE');
    let n = 0;
    const dies: SamplerModel = {
      forward: (x: Tensor) => {
        if (++n === 3) throw new TypeError('boom');
        return x.mul(0.5);
      },
    };
    expect(() => sampleCollect(dies, ot, { z, y, yNull, numSteps: 4 })).toThrow('boom');
    // an onStep that throws: the error comes out, the sampler frees its state and F
    expect(() => sample(m, ot, { z, y, numSteps: 3, onStep: ({ i }) => { if (i === 1) throw new RangeError('stop'); } })).toThrow('stop');
  }));
});

// ---- onStep -------------------------------------------------------------------------------------

describe('onStep', () => {
  const ot = new transports.OTFM();
  const model: SamplerModel = { forward: (x: Tensor, t: Tensor) => x.mul(t.view([-1, 1, 1, 1])).mul(0.5) };

  it('sees every step with its i, t, r (and rModel), and its last x is the return value', leakFree(() => {
    const z = torch.randn([2, 3, 4, 4]);
    const y = torch.tensor([1, 2], { dtype: 'int64' });
    for (const sampleType of ['transition', 'diffusion'] as const) {
      const seen: Omit<SamplerStep, 'x' | 'F'>[] = [];
      let last: Tensor | null = null;
      const out = sample(model, ot, {
        z, y, numSteps: 4, sampleType,
        onStep: ({ i, x, F, t, r, rModel }) => {
          seen.push({ i, t, r, rModel });
          expect(x.dtype).toBe('float64');
          expect(F.dtype).toBe('float32');
          expect(x.shape).toEqual(z.shape);
          expect(F.shape).toEqual(z.shape);
          last?.dispose();
          last = x.to('float32');
        },
      });
      const plan = resolveSample(model, ot, { z, y, numSteps: 4, sampleType }).plan;
      expect(seen).toEqual(plan.map((s) => ({ i: s.index, t: s.tCur, r: s.tNext, rModel: s.rModel })));
      expect(seen.map((s) => s.i)).toEqual([0, 1, 2, 3]);
      expect(seen.map((s) => s.t)).toEqual(timeSteps(4, 1, 0).slice(0, 4));
      expect(seen.map((s) => s.r)).toEqual(timeSteps(4, 1, 0).slice(1));
      expect(seen.map((s) => s.rModel)).toEqual(sampleType === 'transition' ? seen.map((s) => s.r) : seen.map((s) => s.t));
      expect(maxAbsDiff(last!, out)).toBe(0);
    }
  }));

  it('a Transport that is not a BaseTransport is run through its public methods, with the same result', leakFree(() => {
    const z = torch.randn([2, 3, 4, 4]);
    const y = torch.tensor([1, 2], { dtype: 'int64' });
    const own = new transports.OTFM();
    const calls: string[] = [];
    const foreign: transports.Transport = {
      name: 'MyOTFM', sigmaD: own.sigmaD, tMax: own.tMax, tMin: own.tMin, enhanceTarget: false, wGt: 1, wCond: 0, wStart: 0, wEnd: 1,
      timeDraw: 'normal', stochasticStep: true,
      sampleT: (n, o) => own.sampleT(n, o),
      cNoise: (t) => { calls.push('cNoise'); return own.cNoise(t); },
      modelTimes: (t, r) => own.modelTimes(t, r),
      interpolant: (t) => own.interpolant(t),
      target: (i) => own.target(i),
      step: (xT, t, r, F, o) => { calls.push('step'); return own.step(xT, t, r, F, o); },
    };
    expect(transports.unchecked(foreign)).not.toBe(foreign);
    expect(transports.unchecked(own)).toBe(own);
    const o = { z, y, numSteps: 3, stochasticityRatio: 0.3, noise: torch.randn([3, 2, 3, 4, 4]) };
    expect(maxAbsDiff(sample(model, foreign, o), sample(model, own, o))).toBe(0);
    expect(calls.filter((c) => c === 'step')).toHaveLength(3);
  }));

  it('leaks nothing: the tensors it is given are freed after the call; copies are the caller\'s', () => {
    const z = torch.scope(() => torch.keep(torch.randn([2, 3, 4, 4])));
    const y = torch.scope(() => torch.keep(torch.tensor([1, 2], { dtype: 'int64' })));
    const before = torch.memory().liveTensors;
    // outside any scope: the sampler must free its own intermediates
    const given: Tensor[] = [];
    const kept: Tensor[] = [];
    const out = sample(model, ot, { z, y, numSteps: 3, stochasticityRatio: 0.3, onStep: ({ x, F }) => {
      given.push(x, F);
      kept.push(x.clone());
    } });
    expect(given.every((t) => t.isDisposed)).toBe(true);
    expect(kept.every((t) => !t.isDisposed)).toBe(true);
    expect(torch.memory().liveTensors).toBe(before + 1 + kept.length);
    for (const t of [out, ...kept]) t.dispose();
    // a plain run leaves exactly its result
    sample(model, ot, { z, y, numSteps: 3 }).dispose();
    expect(torch.memory().liveTensors).toBe(before);
    z.dispose();
    y.dispose();
  });
});
