/**
 * The any-step TiM sampler: official TransitionSchedule.sample (github WZDTHU/TiM,
 * tim/schedulers/transition.py) over a transport's step (its from_x_t_to_x_r).
 *
 *   for each step (t_cur → t_next):  r = t_next ('transition') or t_cur ('diffusion')
 *     F = model(x, c_noise(t_cur), c_noise(r), y)           guided: F = Fu + s·(Fc − Fu) in the window
 *     x = transport.step(x, t_cur, t_next, F, { sRatio })   stochastic only where the official code is
 *
 * Precision as the official code: the state x accumulates in float64, the network sees x and the
 * times in z's dtype, the times are 0-d tensors of z's dtype inside the step, and the sample comes
 * back as float32. The decisions of each step (times, guidance, noise) are pure functions in
 * schedule.ts; this file runs them, and hands each step to an optional onStep callback (which is how
 * a trajectory or the network outputs are collected).
 */
import * as torch from '../../torch/index.js';
import { Tensor } from '../../torch/tensor.js';
import { argError, TorchError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
import { isFloating } from '../../torch/dtype.js';
import type { ScriptModule } from '../../torch/jit.js';
import { unchecked, type Transport, type TransportMath } from '../transports/transport.js';
import {
  explicitTimeSteps, samplingPlan, sampleTypeOf, timeSteps,
  type PlannedStep, type SampleType, type SampleTypeInput, type TimeDType,
} from './schedule.js';

/** Anything with the TiM network's call: the TiM class, a TorchScript wrapper, a test double. */
export interface SamplerModel {
  forward(x: Tensor, t: Tensor, r: Tensor, y: Tensor): Tensor;
}

/** Latents → images: a TorchScript module (its forward) or a function. */
export type Decoder = ScriptModule | ((latents: Tensor) => Tensor);

export interface SampleOptions {
  /** initial noise (B, C, H, W) at t = tMax; its dtype is the network's input dtype; never modified */
  z: Tensor;
  /** conditions (B,) int64 labels or (B, M, D) caption features */
  y: Tensor;
  /** the unconditional conditions, y's shape; default for a C2I TiM: the null class numClasses */
  yNull?: Tensor;
  /** default 4 (the official default), or timesteps.length − 1 */
  numSteps?: number;
  /** the noise end (default: timesteps[0], else the transport's tMax); scales the guidance window */
  tMax?: number;
  /** the data end (default: the last of timesteps, else the transport's tMin) */
  tMin?: number;
  /** guidance scale s; guidance is off for s <= 1 (default 1) */
  cfgScale?: number;
  /** guidance applies for cfgLow·tMax < t_cur < cfgHigh·tMax (strict; defaults 0 and 1) */
  cfgLow?: number;
  cfgHigh?: number;
  /** stochasticity ratio of the OT-FM step (default 0: deterministic) */
  stochasticityRatio?: number;
  /** 'transition' (default) or 'diffusion' ('ddiffusion', the official spelling, is accepted) */
  sampleType?: SampleTypeInput;
  /** an explicit schedule t_0 > ... > t_n instead of linspace(tMax, tMin, numSteps + 1) */
  timesteps?: readonly number[] | Tensor;
  /**
   * per-step standard normal draws (entry i is used when step i draws noise; the others are not
   * read and may be null): an array of z-shaped tensors or one (numSteps, ...z.shape) tensor
   */
  noise?: readonly (Tensor | null | undefined)[] | Tensor;
  /**
   * called after every step with that step's state and network output (see SamplerStep: the tensors
   * are valid during the call only; clone what you keep). A trajectory or the per-step F is collected here.
   */
  onStep?: (step: SamplerStep) => void;
  /** decodes the final sample (a VAE for latent models; pixel-space models leave it out) */
  decoder?: Decoder;
  /** the decoder sees latents·latentStd + latentMean (official sd_vae_decode); numbers or (C,) tensors */
  latentMean?: number | Tensor;
  latentStd?: number | Tensor;
}

/**
 * One finished step x_t → x_r, as onStep sees it. The tensors belong to the sampler and are valid
 * only during the call: x is the live state the next step continues from, F is freed after the call.
 * Do not modify or dispose them; to keep one, copy it (`x.to('float32')`, `F.clone()`): the copy is
 * created in the caller's current scope and is the caller's, like any tensor made there.
 */
export interface SamplerStep {
  /** the step's index, 0 … numSteps − 1 */
  i: number;
  /** the state after the step, at time r: float64 (the sampler's accumulator), z's shape */
  x: Tensor;
  /** the network output this step used (after guidance), in z's dtype, z's shape */
  F: Tensor;
  /** the step's start time t_i (in z's dtype, as a number) */
  t: number;
  /** the step's end time t_{i+1}: x is at r */
  r: number;
  /** the r the network was given: r for 'transition', t for 'diffusion' */
  rModel: number;
}

const OPTION_KEYS = [
  'z', 'y', 'yNull', 'numSteps', 'tMax', 'tMin', 'cfgScale', 'cfgLow', 'cfgHigh', 'stochasticityRatio', 'sampleType',
  'timesteps', 'noise', 'onStep', 'decoder', 'latentMean', 'latentStd',
] as const;
const OWNER = 'sample';

/** Classifier-free guidance: Fu + s·(Fc − Fu), in that order of operations (as the official code). */
export function guided(fCond: Tensor, fUncond: Tensor, scale: number): Tensor {
  return torch.scope(() => fUncond.add(fCond.sub(fUncond).mul(scale)));
}

/** A fully checked run: everything sample() needs, decided before the first network call. */
export interface ResolvedSample {
  z: Tensor;
  y: Tensor;
  yNull: Tensor | null;
  dtype: TimeDType;
  sampleType: SampleType;
  cfgScale: number;
  timesteps: number[];
  plan: PlannedStep[];
  /** per-step draws: the caller's array, or its stacked (numSteps, ...) tensor; null: draw afresh */
  noise: (Tensor | null)[] | Tensor | null;
  onStep: ((step: SamplerStep) => void) | null;
  decoder: Decoder | null;
  latentMean: number | Tensor;
  latentStd: number | Tensor;
  /** a default yNull the sampler made (it frees it) */
  ownsYNull: boolean;
}

/**
 * Checks the options and decides every step (times, r, guidance, noise) without running anything;
 * sample() runs exactly this plan. Bad input is a TypeError/RangeError with a code.
 */
export function resolveSample(model: SamplerModel, transport: Transport, opts: SampleOptions): ResolvedSample {
  if (model === null || typeof model !== 'object' || typeof (model as { forward?: unknown }).forward !== 'function') {
    throw argError('type', 'sample: model must have forward(x, t, r, y)');
  }
  if (transport === null || typeof transport !== 'object' || typeof transport.step !== 'function' || typeof transport.cNoise !== 'function' ||
      typeof transport.stochasticStep !== 'boolean') {
    throw argError('type', 'sample: transport must be a Transport (transports.OTFM, ...)');
  }
  check.knownKeys(opts, OPTION_KEYS, OWNER);

  const z = check.floatTensor(opts.z, 'z', OWNER);
  const dtype = z.dtype as TimeDType;
  if (z.dim < 1 || z.shape[0]! < 1) throw argError('range', `sample: z must be (B, ...) with B >= 1, got [${z.shape.join(', ')}]`, 'E_SHAPE');
  const B = z.shape[0]!;
  const y = check.tensor(opts.y, 'y', OWNER);
  if (y.dim < 1 || y.shape[0] !== B) throw argError('range', `sample: y must have z's batch size ${B} first, got [${y.shape.join(', ')}]`, 'E_SHAPE');

  const sampleType = sampleTypeOf(opts.sampleType ?? 'transition');
  const cfgScale = check.number(opts.cfgScale ?? 1.0, 'cfgScale', OWNER);
  const cfgLow = check.number(opts.cfgLow ?? 0.0, 'cfgLow', OWNER);
  const cfgHigh = check.number(opts.cfgHigh ?? 1.0, 'cfgHigh', OWNER);
  const ratio = check.nonNegative(opts.stochasticityRatio ?? 0.0, 'stochasticityRatio', OWNER);

  let timesteps: number[];
  let tMax: number;
  let tMin: number;
  if (opts.timesteps !== undefined) {
    timesteps = explicitTimeSteps(timestepValues(opts.timesteps), dtype);
    if (opts.numSteps !== undefined && opts.numSteps !== timesteps.length - 1) {
      throw argError('range', `sample: numSteps ${String(opts.numSteps)} disagrees with ${timesteps.length} timesteps (numSteps + 1 expected)`);
    }
    // The official schedule always starts at T_max and ends at T_min; keeping that for an explicit
    // schedule keeps the first step deterministic and the guidance window relative to the start.
    tMax = check.number(opts.tMax ?? timesteps[0]!, 'tMax', OWNER);
    tMin = check.number(opts.tMin ?? timesteps[timesteps.length - 1]!, 'tMin', OWNER);
  } else {
    tMax = check.number(opts.tMax ?? transport.tMax, 'tMax', OWNER);
    tMin = check.number(opts.tMin ?? transport.tMin, 'tMin', OWNER);
    timesteps = timeSteps(opts.numSteps ?? 4, tMax, tMin, dtype); // checks numSteps, tMax > tMin
  }

  const plan = samplingPlan({
    timesteps, sampleType, cfgScale, cfgLow, cfgHigh, stochasticityRatio: ratio, tMax, tMin, dtype,
    // the official from_x_t_to_x_r draws noise only in OT_FM; the transport says whether its step does
    stochasticTransport: transport.stochasticStep,
  });

  let yNull: Tensor | null = null;
  let ownsYNull = false;
  if (opts.yNull !== undefined) {
    yNull = check.tensor(opts.yNull, 'yNull', OWNER);
    if (yNull.dtype !== y.dtype || yNull.shape.length !== y.shape.length || yNull.shape.some((d, i) => d !== y.shape[i])) {
      throw argError('range', `sample: yNull must be like y (${y.dtype} [${y.shape.join(', ')}]), got ${yNull.dtype} [${yNull.shape.join(', ')}]`, 'E_SHAPE');
    }
  } else if (plan.some((s) => s.cfg)) {
    const nullClass = c2iNullClass(model);
    if (nullClass === null || y.dtype !== 'int64' || y.dim !== 1) {
      throw argError('type', 'sample: guidance applies at some step (cfgScale > 1 inside the window) and needs yNull', 'E_OPTION');
    }
    yNull = torch.full([B], nullClass, { dtype: 'int64', device: y.device });
    ownsYNull = true;
  }

  try {
    const noise = opts.noise === undefined ? null : noiseEntries(opts.noise, plan, z);
    if (opts.onStep !== undefined && typeof opts.onStep !== 'function') {
      throw argError('type', `sample: onStep must be a function ({ i, x, F, t, r, rModel }) => void, got ${check.describe(opts.onStep)}`);
    }
    const onStep = opts.onStep ?? null;
    const decoder = opts.decoder === undefined ? null : decoderOpt(opts.decoder);
    const latentMean = scaleOpt(opts.latentMean ?? 0, 'latentMean');
    const latentStd = scaleOpt(opts.latentStd ?? 1, 'latentStd');
    if (decoder === null && (opts.latentMean !== undefined || opts.latentStd !== undefined)) {
      throw argError('type', 'sample: latentMean/latentStd apply to the decoder input; pass a decoder', 'E_OPTION');
    }
    return { z, y, yNull, dtype, sampleType, cfgScale, timesteps, plan, noise, onStep, decoder, latentMean, latentStd, ownsYNull };
  } catch (e) {
    if (ownsYNull) yNull!.dispose();
    throw e;
  }
}

/**
 * Samples from the model (see the file comment and docs/sampler.md). Returns the final sample
 * (float32, z's shape), or the decoded images with `decoder`: one tensor, the caller's to dispose.
 * onStep, when given, sees every step (its tensors valid during the call: SamplerStep). Runs without
 * autograd, with the model in eval mode (its mode is restored), and frees every intermediate.
 */
export function sample(model: SamplerModel, transport: Transport, opts: SampleOptions): Tensor {
  const a = resolveSample(model, transport, opts);
  try {
    return inEvalMode(model, () => torch.noGrad(() => run(model, unchecked(transport), a)));
  } finally {
    if (a.ownsYNull) a.yNull!.dispose();
  }
}

/**
 * Runs fn with a model that has train()/isTraining (the TiM class, a ScriptModule wrapper) in eval
 * mode, and restores its mode afterwards, however fn ends. The official sampling scripts call
 * model.eval(); the TiM forward computes the same in both modes, but TorchScript runs the training
 * graph markedly slower (about 1.3x for a small TiM on CPU), and a user network with dropout would
 * sample wrongly in training mode.
 */
function inEvalMode<T>(model: SamplerModel, fn: () => T): T {
  const m = model as { isTraining?: unknown; train?: unknown };
  if (m.isTraining !== true || typeof m.train !== 'function') return fn();
  const train = m.train as (on: boolean) => unknown;
  train.call(model, false);
  try {
    return fn();
  } finally {
    train.call(model, true);
  }
}

/**
 * The loop. Each step's work runs in its own scope; onStep runs outside it, in the caller's scope,
 * so what the callback copies is the caller's. One float64 state is alive at a time.
 */
function run(model: SamplerModel, math: TransportMath, a: ResolvedSample): Tensor {
  // x accumulates in float64 (a copy even when z already is float64: z is the caller's).
  let x = torch.scope(() => a.z.to({ dtype: 'float64', copy: true }));
  try {
    for (const step of a.plan) {
      const { xNext, F } = torch.scope(() => transitionStep(model, math, x, step, a));
      x.dispose();
      x = xNext;
      try {
        a.onStep?.({ i: step.index, x, F, t: step.tCur, r: step.tNext, rModel: step.rModel });
      } finally {
        F.dispose();
      }
    }
    return torch.scope(() => {
      const out = x.to('float32');
      return a.decoder ? decodeLatents(a.decoder, out, { mean: a.latentMean, std: a.latentStd }) : out;
    });
  } finally {
    x.dispose();
  }
}

/**
 * One step x_t → x_r: F = the (guided) network output at (x_t, t, rModel), then the transport's
 * step from t to r with it (and, where the plan says, the stochastic term with its ε).
 */
function transitionStep(model: SamplerModel, math: TransportMath, x: Tensor, step: PlannedStep, a: ResolvedSample): { xNext: Tensor; F: Tensor } {
  const F = guidedForward(model, math, x, step, a);
  // the draw is used as float64 (official: randn_like of the float64 state; recorded ones cast exactly)
  const eps = step.noise && a.noise ? noiseAt(a.noise, step.index).to('float64') : undefined;
  const xNext = math.stepOf(x, timeScalar(step.tCur, a.z), timeScalar(step.tNext, a.z), F.to('float64'), step.sRatio, eps);
  return { xNext, F };
}

/** One network evaluation at a step, guided where the plan says: one forward on [cond; uncond]. */
function guidedForward(model: SamplerModel, math: TransportMath, x: Tensor, step: PlannedStep, a: ResolvedSample): Tensor {
  const xIn = x.to(a.dtype);
  const B = xIn.shape[0]!;
  const n = step.cfg ? 2 * B : B;
  // ones(n) · c_noise(t) with t a 0-d tensor of z's dtype: the official model times.
  const times = (v: number): Tensor => torch.ones([n], { dtype: a.dtype, device: a.z.device }).mul(math.cNoiseOf(timeScalar(v, a.z)));
  const out = model.forward(
    step.cfg ? torch.cat([xIn, xIn], 0) : xIn,
    times(step.tCur),
    times(step.rModel),
    step.cfg ? torch.cat([a.y, a.yNull!], 0) : a.y,
  );
  if (!(out instanceof Tensor)) throw new TorchError('sample: model.forward must return a Tensor', 'E_VALUE');
  const want = [n, ...xIn.shape.slice(1)];
  if (out.shape.length !== want.length || out.shape.some((d, i) => d !== want[i])) {
    throw new TorchError(`sample: model.forward returned [${out.shape.join(', ')}], expected [${want.join(', ')}]`, 'E_SHAPE');
  }
  if (!step.cfg) return out;
  const [fCond, fUncond] = out.chunk(2, 0);
  return guided(fCond!, fUncond!, a.cfgScale);
}

function noiseAt(noise: (Tensor | null)[] | Tensor, i: number): Tensor {
  return noise instanceof Tensor ? noise.select(0, i) : noise[i]!;
}

/** A time as the official loop holds it: a 0-d tensor of z's dtype on z's device. */
function timeScalar(v: number, z: Tensor): Tensor {
  return torch.scalarTensor(v, { dtype: z.dtype, device: z.device });
}

/**
 * Latents → images through a decoder: decoder(latents·std + mean) without autograd (official
 * sd_vae_decode / dc_ae_decode; for SD-VAE latents std = 1/0.18215, mean = 0). Tensor mean/std of
 * shape (C,) broadcast over channels. The latents are not modified.
 */
export function decodeLatents(decoder: Decoder, latents: Tensor, o: { mean?: number | Tensor; std?: number | Tensor } = {}): Tensor {
  const d = decoderOpt(decoder);
  const lat = check.tensor(latents, 'latents', 'decodeLatents');
  const mean = scaleOpt(o.mean ?? 0, 'mean');
  const std = scaleOpt(o.std ?? 1, 'std');
  return torch.noGrad(() => torch.scope(() => {
    const zz = lat.mul(channelwise(std, lat)).add(channelwise(mean, lat));
    const images = typeof d === 'function' ? d(zz) : d.forward<Tensor>(zz);
    if (!(images instanceof Tensor)) throw new TorchError('decodeLatents: the decoder must return a Tensor', 'E_VALUE');
    return images;
  }));
}

function channelwise(v: number | Tensor, x: Tensor): number | Tensor {
  if (typeof v === 'number') return v;
  if (v.dim === 1 && x.dim >= 2) {
    if (v.shape[0] !== x.shape[1]) throw argError('range', `decodeLatents: a (C,) mean/std needs C = ${x.shape[1]}, got ${v.shape[0]}`, 'E_SHAPE');
    return v.view([1, v.shape[0]!, ...new Array<number>(x.dim - 2).fill(1)]);
  }
  return v;
}

// ---- option checks ----------------------------------------------------------------------------------

function scaleOpt(v: unknown, name: string): number | Tensor {
  if (typeof v === 'number') return check.number(v, name, OWNER);
  return check.tensor(v, name, OWNER);
}

function decoderOpt(v: unknown): Decoder {
  if (typeof v === 'function') return v as (latents: Tensor) => Tensor;
  if (v !== null && typeof v === 'object' && typeof (v as { forward?: unknown }).forward === 'function') return v as ScriptModule;
  throw argError('type', 'sample: decoder must be a TorchScript module or a function (latents) => images');
}

function timestepValues(v: readonly number[] | Tensor): number[] {
  if (v instanceof Tensor) {
    check.tensor(v, 'timesteps', OWNER);
    if (v.dim !== 1) throw argError('range', `sample: a timesteps tensor must be 1-D, got [${v.shape.join(', ')}]`, 'E_SHAPE');
    return torch.scope(() => Array.from(v.to('float64').toTypedArray() as Float64Array));
  }
  if (!Array.isArray(v)) throw argError('type', 'sample: timesteps must be an array of numbers or a 1-D tensor');
  return v as number[];
}

/** The noise entry of every step that draws; checked before anything runs. */
function noiseEntries(v: readonly (Tensor | null | undefined)[] | Tensor, plan: PlannedStep[], z: Tensor): (Tensor | null)[] | Tensor {
  const n = plan.length;
  if (v instanceof Tensor) {
    check.tensor(v, 'noise', OWNER);
    if (v.dim !== z.dim + 1 || v.shape[0] !== n || v.shape.slice(1).some((d, i) => d !== z.shape[i])) {
      throw argError('range', `sample: a noise tensor must be (${n}, ${z.shape.join(', ')}), got [${v.shape.join(', ')}]`, 'E_SHAPE');
    }
    if (!isFloating(v.dtype)) {
      throw argError('type', `sample: noise must be floating-point, got ${v.dtype}`, 'E_DTYPE');
    }
    // rows are taken (as views) inside each step's scope, so nothing is allocated here
    return v;
  }
  let entries: (Tensor | null)[];
  if (Array.isArray(v)) {
    if (v.length !== n) throw argError('range', `sample: noise must have one entry per step (${n}), got ${v.length}`);
    entries = v.map((e) => (e === null || e === undefined ? null : check.tensor(e, 'noise entry', OWNER)));
  } else {
    throw argError('type', 'sample: noise must be an array of tensors or one (numSteps, ...) tensor');
  }
  for (const s of plan) {
    if (!s.noise) continue;
    const e = entries[s.index];
    if (!e) throw argError('type', `sample: step ${s.index} draws noise but noise[${s.index}] is missing`, 'E_OPTION');
    if (e.shape.length !== z.shape.length || e.shape.some((d, i) => d !== z.shape[i])) {
      throw argError('range', `sample: noise[${s.index}] must have z's shape [${z.shape.join(', ')}], got [${e.shape.join(', ')}]`, 'E_SHAPE');
    }
    if (!isFloating(e.dtype)) {
      throw argError('type', `sample: noise[${s.index}] must be floating-point, got ${e.dtype}`, 'E_DTYPE');
    }
  }
  return entries;
}

/** The null class of a class-conditional TiM (its label table's last row), else null. */
function c2iNullClass(model: SamplerModel): number | null {
  const c = (model as { config?: { variant?: unknown; numClasses?: unknown } }).config;
  return c && c.variant === 'c2i' && typeof c.numClasses === 'number' ? c.numClasses : null;
}
