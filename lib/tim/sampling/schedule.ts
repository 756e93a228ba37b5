/**
 * The any-step sampler's schedule: which times each step uses, and where classifier-free guidance
 * and the stochastic step apply. Functions of numbers (timeSteps asks libtorch's linspace), so the
 * decisions of a whole run can be computed, printed and tested before any network runs. Semantics are those of the
 * official TransitionSchedule.sample (github WZDTHU/TiM, tim/schedulers/transition.py).
 */
import * as torch from '../../torch/index.js';
import { argError } from '../../torch/errors.js';
import type { DType } from '../../torch/dtype.js';

/** 'transition' feeds the network r = t_next (a jump); 'diffusion' feeds r = t_cur (an ODE step). */
export type SampleType = 'transition' | 'diffusion';

/** Accepted spellings: the official code spells the diffusion sampler 'ddiffusion'. */
export type SampleTypeInput = SampleType | 'ddiffusion';

/** The floating dtypes a time can be held in (the dtype of the initial noise z). */
export type TimeDType = Extract<DType, 'float32' | 'float64' | 'float16' | 'bfloat16'>;

export function sampleTypeOf(value: unknown): SampleType {
  if (value === 'transition') return 'transition';
  if (value === 'diffusion' || value === 'ddiffusion') return 'diffusion';
  throw argError('type', `sample: sampleType must be 'transition', 'diffusion' or 'ddiffusion', got ${JSON.stringify(value)}`, 'E_OPTION');
}

/**
 * v rounded to dtype, as torch does when it stores a double in a tensor of that dtype (round to
 * nearest even). The official sampler keeps its times in z's dtype, and compares them with Python
 * floats in that dtype too (a Python float is a "wrapped number": it does not promote the tensor).
 * float16 and bfloat16 are rounded by libtorch itself (a float64 → dtype tensor cast).
 */
export function roundToDType(v: number, dtype: TimeDType): number {
  return roundAllToDType([v], dtype)[0]!;
}

/** Every value rounded to dtype (one tensor cast for the lot; see roundToDType). */
export function roundAllToDType(values: readonly number[], dtype: TimeDType): number[] {
  if (dtype === 'float64') return values.slice();
  if (dtype === 'float32') return values.map(Math.fround); // the IEEE double → float conversion, as torch's
  if (values.length === 0) return [];
  return torch.scope(() => Array.from(
    torch.tensor(values as number[], { dtype: 'float64' }).to(dtype).to('float64').toTypedArray() as Float64Array,
  ));
}

/**
 * The official schedule t_0 = tMax > t_1 > ... > t_n = tMin: `torch.linspace(T_max, T_min, n+1,
 * dtype=float64).to(z)`, computed by libtorch's own linspace (its vectorised CPU kernel rounds some
 * interior points differently from the textbook start + i·step, by an ulp) and cast to z's dtype.
 */
export function timeSteps(numSteps: number, tMax: number, tMin: number, dtype: TimeDType = 'float32'): number[] {
  if (!Number.isInteger(numSteps) || numSteps < 1) throw argError('range', `sample: numSteps must be an integer >= 1, got ${String(numSteps)}`);
  if (!Number.isFinite(tMax) || !Number.isFinite(tMin)) throw argError('range', `sample: tMax and tMin must be finite, got ${tMax}, ${tMin}`);
  if (!(tMax > tMin)) throw argError('range', `sample: tMax (${tMax}) must be > tMin (${tMin})`);
  return torch.scope(() => {
    const t = torch.linspace(tMax, tMin, numSteps + 1, { dtype: 'float64' }).to(dtype).to('float64');
    return Array.from(t.toTypedArray() as Float64Array);
  });
}

/** The r the network is given at a step: the next time (transition) or the current one (diffusion). */
export function modelR(tCur: number, tNext: number, type: SampleType): number {
  return type === 'transition' ? tNext : tCur;
}

/**
 * Whether guidance applies at time t: scale > 1 and t strictly inside (low·tMax, high·tMax), the
 * window bounds rounded to the time dtype as the official tensor-vs-float comparison does.
 */
export function cfgActive(t: number, scale: number, low: number, high: number, tMax: number, dtype: TimeDType = 'float32'): boolean {
  return scale > 1.0 && t > roundToDType(low * tMax, dtype) && t < roundToDType(high * tMax, dtype);
}

/**
 * Whether the stochastic step applies: a positive ratio, not at the very first step (t_cur < tMax:
 * the input is pure noise there) and not when the network is asked for the clean end (r > tMin).
 */
export function stochasticActive(ratio: number, tCur: number, rModel: number, tMax: number, tMin: number, dtype: TimeDType = 'float32'): boolean {
  return ratio > 0.0 && tCur < roundToDType(tMax, dtype) && rModel > roundToDType(tMin, dtype);
}

/** One step of a run, as decided before any network call. */
export interface PlannedStep {
  index: number;
  tCur: number;
  /** the r given to the network */
  rModel: number;
  tNext: number;
  /** one batched forward on [cond; uncond], combined as Fu + s(Fc − Fu) */
  cfg: boolean;
  /** the stochasticity ratio the step uses (0: deterministic) */
  sRatio: number;
  /** whether this step draws (or takes from `noise`) a standard normal epsilon */
  noise: boolean;
}

export interface PlanOptions {
  /** t_0 > t_1 > ... > t_n, already in the time dtype */
  timesteps: readonly number[];
  sampleType: SampleType;
  cfgScale: number;
  cfgLow: number;
  cfgHigh: number;
  stochasticityRatio: number;
  tMax: number;
  tMin: number;
  dtype?: TimeDType;
  /** false for transports whose step is deterministic (all but OT-FM): then no step draws noise */
  stochasticTransport?: boolean;
}

/** Every step's decisions for a run (what the official loop decides, step by step). */
export function samplingPlan(o: PlanOptions): PlannedStep[] {
  const dtype = o.dtype ?? 'float32';
  const ts = o.timesteps;
  const steps: PlannedStep[] = [];
  for (let i = 0; i + 1 < ts.length; i++) {
    const tCur = ts[i]!, tNext = ts[i + 1]!;
    const rModel = modelR(tCur, tNext, o.sampleType);
    const sto = stochasticActive(o.stochasticityRatio, tCur, rModel, o.tMax, o.tMin, dtype);
    steps.push({
      index: i,
      tCur,
      rModel,
      tNext,
      cfg: cfgActive(tCur, o.cfgScale, o.cfgLow, o.cfgHigh, o.tMax, dtype),
      sRatio: sto ? o.stochasticityRatio : 0,
      noise: sto && (o.stochasticTransport ?? true),
    });
  }
  return steps;
}

/**
 * A caller's explicit schedule: finite, strictly decreasing, at least two times; rounded to the time
 * dtype like the official linspace is (the network and the step see the rounded values).
 */
export function explicitTimeSteps(values: readonly number[], dtype: TimeDType = 'float32'): number[] {
  if (!Array.isArray(values) || values.length < 2) throw argError('range', 'sample: timesteps must list at least two times (t_0 > ... > t_n)');
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw argError('type', `sample: timesteps[${i}] must be a finite number, got ${String(v)}`);
  });
  const out = roundAllToDType(values, dtype);
  for (let i = 1; i < out.length; i++) {
    if (!(out[i]! < out[i - 1]!)) {
      throw argError('range', `sample: timesteps must be strictly decreasing (in ${dtype}); timesteps[${i}] = ${out[i]} follows ${out[i - 1]}`);
    }
  }
  return out;
}
