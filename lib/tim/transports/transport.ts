/**
 * What every transport (OTFM, TrigFlow, EDM, VPSDE, VESDE) provides, and the parts they share: the
 * common parameters, the enhanced-target mixing weights, argument checks and time reshaping.
 *
 * A transport is the official TiM `Transport` (tim/schedulers/transports.py): a noising path
 * x_t = alpha(t)·x + sigma(t)·z, how training times are drawn, the network's time input c_noise(t),
 * the transition target F_target, and the solver step x_t → x_r. Every method is a pure function of
 * its arguments: inputs are never mutated, results are new tensors, intermediates are freed.
 */
import * as torch from '../../torch/index.js';
import { argError } from '../../torch/errors.js';
import type { Tensor } from '../../torch/tensor.js';
import type { DType, Device } from '../../torch/dtype.js';

/** x_t = alpha·x + sigma·z and its time derivative v_t = dAlpha·x + dSigma·z; each has t's shape. */
export interface Interpolant {
  alpha: Tensor;
  sigma: Tensor;
  dAlpha: Tensor;
  dSigma: Tensor;
}

/** Arguments of target(): the official target(x_t, v_t, x, z, t, r, dF_dv_dt, F_t_cond, F_t_uncond, enhance_target). */
export interface TargetInputs {
  xT: Tensor;
  vT: Tensor;
  /** clean data */
  x: Tensor;
  /** noise */
  z: Tensor;
  /** (B,) or already shaped like x, e.g. (B,1,1,1) */
  t: Tensor;
  r: Tensor;
  /** d F / d t along the path; the number 0 where every row is a diffusion row (t == r) */
  dFdvdt: Tensor | number;
  /** EMA conditional prediction at (c_noise(t), c_noise(t)); may be omitted when wCond is 0 */
  fTCond?: Tensor;
  /** EMA unconditional prediction at (c_noise(t), c_noise(t)); needed when enhancing */
  fTUncond?: Tensor;
  /** mix the EMA predictions into the target (default: the transport's enhanceTarget) */
  enhance?: boolean;
}

export interface StepOptions {
  /** stochasticity ratio s (only OTFM uses it, as in the official code); default 0 */
  sRatio?: number;
  /** the standard normal draw of the stochastic step (default: a fresh randn like x_t) */
  eps?: Tensor;
}

export interface SampleTOptions {
  /** replay a standard normal draw (n,) instead of drawing (OTFM, TrigFlow, EDM) */
  normals?: Tensor;
  /** replay a uniform [0, 1) draw (n,) instead of drawing (VPSDE, VESDE) */
  uniforms?: Tensor;
  /** of a fresh draw (default float32) */
  dtype?: DType;
  device?: Device;
}

/** The network's time inputs for one forward: c_noise(t) and c_noise(r), flattened to (B,). */
export interface ModelTimes {
  tInput: Tensor;
  rInput: Tensor;
}

/** Parameters every transport has (official Transport.__init__), camelCased. */
export interface TransportOptions {
  /** data scale, used by the loss's time weighting (and by EDM's formulas) */
  sigmaD?: number;
  /** mix EMA predictions into the target (official enhance_target) */
  enhanceTarget?: boolean;
  /** weight of the ground-truth target inside the window [wStart, wEnd] (1 outside) */
  wGt?: number;
  /** weight of the conditional EMA prediction inside the window (0 outside) */
  wCond?: number;
  wStart?: number;
  wEnd?: number;
}

/** Which standard draw sampleT transforms. */
export type TimeDraw = 'normal' | 'uniform';

export interface Transport {
  readonly name: string;
  readonly sigmaD: number;
  /** the noise end of the path (sampling starts here) */
  readonly tMax: number;
  /** the data end of the path */
  readonly tMin: number;
  readonly enhanceTarget: boolean;
  readonly wGt: number;
  readonly wCond: number;
  readonly wStart: number;
  readonly wEnd: number;
  /** 'normal' (log-normal times) or 'uniform' */
  readonly timeDraw: TimeDraw;
  /** whether step() uses sRatio (draws noise): only OTFM, as in the official code */
  readonly stochasticStep: boolean;
  /** n training times (official sample_t) */
  sampleT(n: number, opts?: SampleTOptions): Tensor;
  /** the network's time input (official c_noise) */
  cNoise(t: Tensor): Tensor;
  /** c_noise(t), c_noise(r) flattened: what the network sees (c_noise applied exactly once) */
  modelTimes(t: Tensor, r: Tensor): ModelTimes;
  interpolant(t: Tensor): Interpolant;
  /** the transition target F_target (official target) */
  target(inputs: TargetInputs): Tensor;
  /** one solver step x_t → x_r given the network output F (official from_x_t_to_x_r) */
  step(xT: Tensor, t: Tensor | number, r: Tensor | number, F: Tensor, opts?: StepOptions): Tensor;
}

// ---- argument checks ------------------------------------------------------------------------------

/** A finite number, else a typed error naming the parameter. */
export function finiteParam(value: unknown, name: string, owner: string): number {
  if (typeof value !== 'number') throw argError('type', `${owner}: ${name} must be a number, got ${typeof value}`);
  if (!Number.isFinite(value)) throw argError('range', `${owner}: ${name} must be finite, got ${value}`);
  return value;
}

export function positiveParam(value: unknown, name: string, owner: string): number {
  const v = finiteParam(value, name, owner);
  if (!(v > 0)) throw argError('range', `${owner}: ${name} must be > 0, got ${v}`);
  return v;
}

export function boolParam(value: unknown, name: string, owner: string): boolean {
  if (typeof value !== 'boolean') throw argError('type', `${owner}: ${name} must be a boolean, got ${typeof value}`);
  return value;
}

/** Rejects keys the constructor does not know (a misspelt `pmean` would otherwise be ignored silently). */
export function checkKnownKeys(opts: object, known: readonly string[], owner: string): void {
  if (opts === null || typeof opts !== 'object') throw argError('type', `${owner}: options must be an object`);
  for (const k of Object.keys(opts)) {
    if (!known.includes(k)) throw argError('type', `${owner}: unknown option '${k}' (known: ${known.join(', ')})`, 'E_OPTION');
  }
}

export function tensorArg(value: unknown, name: string, owner: string): Tensor {
  if (!(value instanceof torch.Tensor)) throw argError('type', `${owner}: ${name} must be a Tensor`);
  if (value.isDisposed) throw new torch.TorchError(`${owner}: ${name} was disposed`, 'E_DISPOSED');
  if (!isFloatingDtype(value.dtype)) throw argError('type', `${owner}: ${name} must be a floating-point tensor, got ${value.dtype}`, 'E_DTYPE');
  return value;
}

function isFloatingDtype(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}

/** A batch size: a positive integer. */
export function batchSize(n: unknown, owner: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n)) throw argError('type', `${owner}: n must be an integer, got ${String(n)}`);
  if (n < 1) throw argError('range', `${owner}: n must be >= 1, got ${n}`);
  return n;
}

/**
 * The standard draw sampleT transforms: the replayed one (checked to be (n,)) or a fresh one.
 * Passing the other kind of draw is an error, not ignored, because it would silently draw anew.
 */
export function timeDraw(kind: TimeDraw, n: number, opts: SampleTOptions | undefined, owner: string): Tensor {
  const o = opts ?? {};
  if (o === null || typeof o !== 'object') throw argError('type', `${owner}: options must be an object`);
  checkKnownKeys(o, ['normals', 'uniforms', 'dtype', 'device'], owner);
  const wrong = kind === 'normal' ? o.uniforms : o.normals;
  if (wrong !== undefined) {
    throw argError('type', `${owner}: this transport draws ${kind === 'normal' ? 'standard normals (pass normals)' : 'uniforms (pass uniforms)'}`, 'E_OPTION');
  }
  const given = kind === 'normal' ? o.normals : o.uniforms;
  if (given !== undefined) {
    const d = tensorArg(given, kind === 'normal' ? 'normals' : 'uniforms', owner);
    if (d.dim !== 1 || d.shape[0] !== n) {
      throw argError('range', `${owner}: the replayed draw must have shape [${n}], got [${d.shape.join(', ')}]`, 'E_SHAPE');
    }
    return d;
  }
  const to = { dtype: o.dtype ?? 'float32', device: o.device ?? 'cpu' } as const;
  return kind === 'normal' ? torch.randn([n], to) : torch.rand([n], to);
}

/**
 * Times shaped to broadcast against a batch x (B, ...): a (B,) vector becomes (B, 1, ..., 1), like the
 * official expand_t_like_x (a plain (B,) would broadcast along x's last axis instead: wrong, silently).
 * 0-d tensors and tensors already shaped (B, 1, ..., 1) pass through; numbers become 0-d tensors of
 * x's dtype. The result is a view or a new tensor, never the caller's tensor modified.
 */
export function timeLike(t: Tensor | number, x: Tensor, name: string, owner: string): Tensor {
  if (typeof t === 'number') {
    finiteParam(t, name, owner);
    return torch.scalarTensor(t, { dtype: x.dtype, device: x.device });
  }
  const tt = tensorArg(t, name, owner);
  if (tt.dim === 1 && x.dim > 1) {
    const n = tt.shape[0]!;
    if (n !== x.shape[0] && n !== 1) {
      throw argError('range', `${owner}: ${name} has ${n} entries but the batch has ${x.shape[0]}`, 'E_SHAPE');
    }
    return tt.view([n, ...new Array<number>(x.dim - 1).fill(1)]);
  }
  return tt.view(tt.shape);
}

/** Same shape as the reference, else E_SHAPE (broadcasting a wrong-sized eps or F would be silent). */
export function sameShape(a: Tensor, ref: Tensor, name: string, refName: string, owner: string): void {
  const sa = a.shape, sr = ref.shape;
  if (sa.length !== sr.length || sa.some((d, i) => d !== sr[i])) {
    throw argError('range', `${owner}: ${name} [${sa.join(', ')}] must have the shape of ${refName} [${sr.join(', ')}]`, 'E_SHAPE');
  }
}

// ---- shared behaviour ---------------------------------------------------------------------------------

const COMMON_KEYS = ['sigmaD', 'enhanceTarget', 'wGt', 'wCond', 'wStart', 'wEnd'] as const;

/**
 * The common parameters and methods. Subclasses supply the path (interpolant), the time draw, c_noise,
 * the target and the step.
 */
export abstract class BaseTransport implements Transport {
  abstract readonly name: string;
  abstract readonly timeDraw: TimeDraw;
  abstract readonly stochasticStep: boolean;
  readonly sigmaD: number;
  readonly tMax: number;
  readonly tMin: number;
  readonly enhanceTarget: boolean;
  readonly wGt: number;
  readonly wCond: number;
  readonly wStart: number;
  readonly wEnd: number;

  protected constructor(
    owner: string,
    opts: TransportOptions & Record<string, unknown>,
    extraKeys: readonly string[],
    defaults: { sigmaD: number; tMax: number; tMin: number },
  ) {
    checkKnownKeys(opts, [...COMMON_KEYS, ...extraKeys], owner);
    this.sigmaD = positiveParam(opts.sigmaD ?? defaults.sigmaD, 'sigmaD', owner);
    this.tMax = finiteParam(defaults.tMax, 'tMax', owner);
    this.tMin = finiteParam(defaults.tMin, 'tMin', owner);
    if (!(this.tMin < this.tMax)) throw argError('range', `${owner}: tMin (${this.tMin}) must be < tMax (${this.tMax})`);
    this.enhanceTarget = boolParam(opts.enhanceTarget ?? false, 'enhanceTarget', owner);
    this.wGt = finiteParam(opts.wGt ?? 1.0, 'wGt', owner);
    this.wCond = finiteParam(opts.wCond ?? 0.0, 'wCond', owner);
    this.wStart = finiteParam(opts.wStart ?? 0.0, 'wStart', owner);
    this.wEnd = finiteParam(opts.wEnd ?? 1.0, 'wEnd', owner);
  }

  abstract sampleT(n: number, opts?: SampleTOptions): Tensor;
  abstract cNoise(t: Tensor): Tensor;
  abstract interpolant(t: Tensor): Interpolant;
  abstract target(inputs: TargetInputs): Tensor;
  abstract step(xT: Tensor, t: Tensor | number, r: Tensor | number, F: Tensor, opts?: StepOptions): Tensor;

  /**
   * The network's time inputs, c_noise applied once to the raw times. The official
   * get_enhanced_target passes c_noise(t) to model_forward, which applies c_noise again; for EDM,
   * VPSDE and VESDE that feeds the EMA model a wrong time (log(log(t)/4)/4 is NaN for t < 1 under
   * EDM). Use modelTimes(t, t) for the enhanced target's EMA predictions (see docs/transports.md).
   */
  modelTimes(t: Tensor, r: Tensor): ModelTimes {
    const owner = `${this.name}.modelTimes`;
    tensorArg(t, 't', owner);
    tensorArg(r, 'r', owner);
    return torch.scope(() => ({ tInput: this.cNoise(t.flatten()), rInput: this.cNoise(r.flatten()) }));
  }

  /** Checks the target's arguments and shapes its times like x; returns the pieces ready to use. */
  protected targetArgs(inputs: TargetInputs): {
    xT: Tensor; vT: Tensor; x: Tensor; z: Tensor; t: Tensor; r: Tensor; dFdvdt: Tensor | number; enhance: boolean;
    fTCond: Tensor | number; fTUncond: Tensor | number;
  } {
    const owner = `${this.name}.target`;
    if (inputs === null || typeof inputs !== 'object') throw argError('type', `${owner}: expected an object of inputs`);
    checkKnownKeys(inputs, ['xT', 'vT', 'x', 'z', 't', 'r', 'dFdvdt', 'fTCond', 'fTUncond', 'enhance'], owner);
    const x = tensorArg(inputs.x, 'x', owner);
    const xT = tensorArg(inputs.xT, 'xT', owner);
    const vT = tensorArg(inputs.vT, 'vT', owner);
    const z = tensorArg(inputs.z, 'z', owner);
    sameShape(xT, x, 'xT', 'x', owner);
    sameShape(vT, x, 'vT', 'x', owner);
    sameShape(z, x, 'z', 'x', owner);
    let dFdvdt: Tensor | number;
    if (typeof inputs.dFdvdt === 'number') {
      dFdvdt = finiteParam(inputs.dFdvdt, 'dFdvdt', owner);
    } else {
      dFdvdt = tensorArg(inputs.dFdvdt, 'dFdvdt', owner);
      sameShape(dFdvdt, x, 'dFdvdt', 'x', owner);
    }
    const enhance = boolParam(inputs.enhance ?? this.enhanceTarget, 'enhance', owner);
    let fTCond: Tensor | number = 0;
    let fTUncond: Tensor | number = 0;
    if (enhance) {
      // The official code substitutes 0 for F_t_cond when w_cond is 0 (it skips that EMA forward).
      if (inputs.fTCond !== undefined) {
        fTCond = tensorArg(inputs.fTCond, 'fTCond', owner);
        sameShape(fTCond, x, 'fTCond', 'x', owner);
      } else if (this.wCond !== 0) {
        throw argError('type', `${owner}: enhance with wCond ${this.wCond} needs fTCond`);
      }
      if (inputs.fTUncond === undefined) throw argError('type', `${owner}: enhance needs fTUncond`);
      fTUncond = tensorArg(inputs.fTUncond, 'fTUncond', owner);
      sameShape(fTUncond, x, 'fTUncond', 'x', owner);
    }
    const t = timeLike(inputs.t, x, 't', owner);
    const r = timeLike(inputs.r, x, 'r', owner);
    return { xT, vT, x, z, t, r, dFdvdt, enhance, fTCond, fTUncond };
  }

  /**
   * The enhanced-target mix w_gt·gt + w_cond·cond + (1 − w_gt − w_cond)·uncond, with the weights
   * (w_gt, w_cond) inside the window wStart <= t <= wEnd and (1, 0) outside (official: torch.where).
   */
  protected enhancedMix(gt: Tensor, t: Tensor, cond: Tensor | number, uncond: Tensor | number): Tensor {
    const inWindow = t.ge(this.wStart).logicalAnd(t.le(this.wEnd));
    const wGt = torch.where(inWindow, torch.fullLike(t, this.wGt), torch.fullLike(t, 1.0));
    const wCond = torch.where(inWindow, torch.fullLike(t, this.wCond), torch.fullLike(t, 0.0));
    const wUncond = wGt.rsub(1).sub(wCond);
    return wGt.mul(gt).add(wCond.mul(cond)).add(wUncond.mul(uncond));
  }

  /** Checks step's arguments; returns times shaped like x_t and the options. */
  protected stepArgs(xT: Tensor, t: Tensor | number, r: Tensor | number, F: Tensor, opts: StepOptions | undefined): {
    t: Tensor; r: Tensor; sRatio: number; eps: Tensor | undefined;
  } {
    const owner = `${this.name}.step`;
    tensorArg(xT, 'xT', owner);
    tensorArg(F, 'F', owner);
    sameShape(F, xT, 'F', 'xT', owner);
    const o = opts ?? {};
    checkKnownKeys(o, ['sRatio', 'eps'], owner);
    const sRatio = finiteParam(o.sRatio ?? 0, 'sRatio', owner);
    if (sRatio < 0) throw argError('range', `${owner}: sRatio must be >= 0, got ${sRatio}`);
    let eps: Tensor | undefined;
    if (o.eps !== undefined) {
      eps = tensorArg(o.eps, 'eps', owner);
      sameShape(eps, xT, 'eps', 'xT', owner);
    }
    return { t: timeLike(t, xT, 't', owner), r: timeLike(r, xT, 'r', owner), sRatio, eps };
  }
}
