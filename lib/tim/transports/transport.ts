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
import * as check from '../../torch/check.js';
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

// ---- argument checks (public entry points only) --------------------------------------------------

/**
 * The standard draw sampleT transforms: the replayed one (checked to be (n,)) or a fresh one.
 * Passing the other kind of draw is an error, not ignored, because it would silently draw anew.
 */
export function timeDraw(kind: TimeDraw, n: number, opts: SampleTOptions | undefined, owner: string): Tensor {
  const o = check.knownKeys(opts ?? {}, ['normals', 'uniforms', 'dtype', 'device'], owner);
  const wrong = kind === 'normal' ? o.uniforms : o.normals;
  if (wrong !== undefined) {
    throw argError('type', `${owner}: this transport draws ${kind === 'normal' ? 'standard normals (pass normals)' : 'uniforms (pass uniforms)'}`, 'E_OPTION');
  }
  const given = kind === 'normal' ? o.normals : o.uniforms;
  if (given !== undefined) {
    const d = check.floatTensor(given, kind === 'normal' ? 'normals' : 'uniforms', owner);
    if (d.dim !== 1 || d.shape[0] !== n) {
      throw argError('range', `${owner}: the replayed draw must have shape [${n}], got [${d.shape.join(', ')}]`, 'E_SHAPE');
    }
    return d;
  }
  return freshDraw(kind, n, o.dtype ?? 'float32', o.device ?? 'cpu');
}

function freshDraw(kind: TimeDraw, n: number, dtype: DType, device: Device): Tensor {
  return kind === 'normal' ? torch.randn([n], { dtype, device }) : torch.rand([n], { dtype, device });
}

/** t shaped to broadcast against x (B, ...): (B,) becomes (B, 1, ..., 1); other shapes pass as views. Unchecked. */
export function expandTimeLike(t: Tensor, x: Tensor): Tensor {
  if (t.dim === 1 && x.dim > 1) return t.view([t.shape[0]!, ...new Array<number>(x.dim - 1).fill(1)]);
  return t.view(t.shape);
}

/**
 * Times shaped to broadcast against a batch x (B, ...): a (B,) vector becomes (B, 1, ..., 1), like the
 * official expand_t_like_x (a plain (B,) would broadcast along x's last axis instead: wrong, silently).
 * 0-d tensors and tensors already shaped (B, 1, ..., 1) pass through; numbers become 0-d tensors of
 * x's dtype. The result is a view or a new tensor, never the caller's tensor modified. Checked.
 */
export function timeLike(t: Tensor | number, x: Tensor, name: string, owner: string): Tensor {
  if (typeof t === 'number') {
    check.number(t, name, owner);
    return torch.scalarTensor(t, { dtype: x.dtype, device: x.device });
  }
  const tt = check.floatTensor(t, name, owner);
  if (tt.dim === 1 && x.dim > 1) {
    const n = tt.shape[0]!;
    if (n !== x.shape[0] && n !== 1) {
      throw argError('range', `${owner}: ${name} has ${n} entries but the batch has ${x.shape[0]}`, 'E_SHAPE');
    }
  }
  return expandTimeLike(tt, x);
}

// ---- the unchecked math ----------------------------------------------------------------------------

/** target()'s inputs once checked: times shaped like x, the EMA predictions 0 where absent. */
export interface TargetParts {
  xT: Tensor; vT: Tensor; x: Tensor; z: Tensor;
  /** shaped to broadcast against x */
  t: Tensor; r: Tensor;
  dFdvdt: Tensor | number;
  enhance: boolean;
  fTCond: Tensor | number;
  fTUncond: Tensor | number;
}

/**
 * A transport's math without argument checks, for callers that checked their inputs where they
 * entered (TransitionLoss.compute, sample): nothing here re-checks on every training or sampling
 * step. Results are new tensors or views; inputs are never modified.
 */
export interface TransportMath {
  /** c_noise(t); may return t itself where c_noise is the identity (OTFM, TrigFlow) */
  cNoiseOf(t: Tensor): Tensor;
  /** c_noise of t and r, flattened to (B,) */
  modelTimesOf(t: Tensor, r: Tensor): ModelTimes;
  /** alpha, sigma and their derivatives at t (t shaped like x) */
  interpolantOf(t: Tensor): Interpolant;
  /** n fresh training times of a dtype on a device */
  drawTimes(n: number, dtype: DType, device: Device): Tensor;
  targetOf(a: TargetParts): Tensor;
  /** x_t → x_r; t, r already broadcastable against xT, sRatio >= 0 (used only where stochasticStep) */
  stepOf(xT: Tensor, t: Tensor, r: Tensor, F: Tensor, sRatio: number, eps?: Tensor): Tensor;
}

const viaPublic = new WeakMap<Transport, TransportMath>();

/**
 * The unchecked math of a transport: a BaseTransport's own, or (for another Transport
 * implementation) its public, checked methods.
 */
export function unchecked(tr: Transport): TransportMath {
  if (tr instanceof BaseTransport) return tr;
  let m = viaPublic.get(tr);
  if (!m) {
    m = {
      cNoiseOf: (t) => tr.cNoise(t),
      modelTimesOf: (t, r) => tr.modelTimes(t, r),
      interpolantOf: (t) => tr.interpolant(t),
      drawTimes: (n, dtype, device) => tr.sampleT(n, { dtype, device }),
      targetOf: (a) => tr.target({
        xT: a.xT, vT: a.vT, x: a.x, z: a.z, t: a.t, r: a.r, dFdvdt: a.dFdvdt, enhance: a.enhance,
        ...(typeof a.fTCond === 'number' ? {} : { fTCond: a.fTCond }),
        ...(typeof a.fTUncond === 'number' ? {} : { fTUncond: a.fTUncond }),
      }),
      stepOf: (xT, t, r, F, sRatio, eps) => tr.step(xT, t, r, F, { sRatio, ...(eps ? { eps } : {}) }),
    };
    viaPublic.set(tr, m);
  }
  return m;
}

// ---- shared behaviour ---------------------------------------------------------------------------------

const COMMON_KEYS = ['sigmaD', 'enhanceTarget', 'wGt', 'wCond', 'wStart', 'wEnd'] as const;
const TARGET_KEYS = ['xT', 'vT', 'x', 'z', 't', 'r', 'dFdvdt', 'fTCond', 'fTUncond', 'enhance'] as const;

/**
 * The common parameters, and the public methods: each checks its arguments once, then runs the
 * unchecked math (TransportMath) that subclasses supply: the path (interpolantOf), the time draw
 * (timesFrom), c_noise (cNoiseOf), the target (targetOf) and the step (stepOf).
 */
export abstract class BaseTransport implements Transport, TransportMath {
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
    check.knownKeys(opts, [...COMMON_KEYS, ...extraKeys], owner);
    this.sigmaD = check.positive(opts.sigmaD ?? defaults.sigmaD, 'sigmaD', owner);
    this.tMax = check.number(defaults.tMax, 'tMax', owner);
    this.tMin = check.number(defaults.tMin, 'tMin', owner);
    if (!(this.tMin < this.tMax)) throw argError('range', `${owner}: tMin (${this.tMin}) must be < tMax (${this.tMax})`);
    this.enhanceTarget = check.bool(opts.enhanceTarget ?? false, 'enhanceTarget', owner);
    this.wGt = check.number(opts.wGt ?? 1.0, 'wGt', owner);
    this.wCond = check.number(opts.wCond ?? 0.0, 'wCond', owner);
    this.wStart = check.number(opts.wStart ?? 0.0, 'wStart', owner);
    this.wEnd = check.number(opts.wEnd ?? 1.0, 'wEnd', owner);
  }

  // ---- the math, unchecked (subclasses) ----

  /** Training times from a standard draw (normal or uniform, as timeDraw says), shape kept. */
  abstract timesFrom(draw: Tensor): Tensor;
  abstract cNoiseOf(t: Tensor): Tensor;
  abstract interpolantOf(t: Tensor): Interpolant;
  abstract targetOf(a: TargetParts): Tensor;
  abstract stepOf(xT: Tensor, t: Tensor, r: Tensor, F: Tensor, sRatio: number, eps?: Tensor): Tensor;

  drawTimes(n: number, dtype: DType, device: Device): Tensor {
    return torch.scope(() => this.timesFrom(freshDraw(this.timeDraw, n, dtype, device)));
  }

  /**
   * The network's time inputs, c_noise applied once to the raw times. The official
   * get_enhanced_target passes c_noise(t) to model_forward, which applies c_noise again; for EDM,
   * VPSDE and VESDE that feeds the EMA model a wrong time (log(log(t)/4)/4 is NaN for t < 1 under
   * EDM). Use modelTimes(t, t) for the enhanced target's EMA predictions (see docs/transports.md).
   */
  modelTimesOf(t: Tensor, r: Tensor): ModelTimes {
    return torch.scope(() => ({ tInput: this.cNoiseOf(t.flatten()), rInput: this.cNoiseOf(r.flatten()) }));
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

  // ---- the public methods: check once, then the math ----

  sampleT(n: number, opts?: SampleTOptions): Tensor {
    const owner = `${this.name}.sampleT`;
    check.integer(n, 'n', owner, 1);
    return torch.scope(() => this.timesFrom(timeDraw(this.timeDraw, n, opts, owner)));
  }

  /** The network's time input (a new tensor: the caller may dispose either). */
  cNoise(t: Tensor): Tensor {
    const tt = check.floatTensor(t, 't', `${this.name}.cNoise`);
    return torch.scope(() => {
      const c = this.cNoiseOf(tt);
      return c === tt ? tt.clone() : c;
    });
  }

  modelTimes(t: Tensor, r: Tensor): ModelTimes {
    const owner = `${this.name}.modelTimes`;
    check.floatTensor(t, 't', owner);
    check.floatTensor(r, 'r', owner);
    return torch.scope(() => {
      const m = this.modelTimesOf(t, r);
      // c_noise may be the identity: the public result never aliases the caller's tensors
      return { tInput: m.tInput.clone(), rInput: m.rInput.clone() };
    });
  }

  interpolant(t: Tensor): Interpolant {
    return this.interpolantOf(check.floatTensor(t, 't', `${this.name}.interpolant`));
  }

  target(inputs: TargetInputs): Tensor {
    return torch.scope(() => this.targetOf(this.targetArgs(inputs)));
  }

  step(xT: Tensor, t: Tensor | number, r: Tensor | number, F: Tensor, opts?: StepOptions): Tensor {
    return torch.scope(() => {
      const a = this.stepArgs(xT, t, r, F, opts);
      return this.stepOf(xT, a.t, a.r, F, a.sRatio, a.eps);
    });
  }

  /** Checks the target's arguments and shapes its times like x. */
  private targetArgs(inputs: TargetInputs): TargetParts {
    const owner = `${this.name}.target`;
    check.knownKeys(inputs, TARGET_KEYS, owner, 'inputs');
    const x = check.floatTensor(inputs.x, 'x', owner);
    const xT = check.sameShape(check.floatTensor(inputs.xT, 'xT', owner), x, 'xT', 'x', owner);
    const vT = check.sameShape(check.floatTensor(inputs.vT, 'vT', owner), x, 'vT', 'x', owner);
    const z = check.sameShape(check.floatTensor(inputs.z, 'z', owner), x, 'z', 'x', owner);
    const dFdvdt = typeof inputs.dFdvdt === 'number'
      ? check.number(inputs.dFdvdt, 'dFdvdt', owner)
      : check.sameShape(check.floatTensor(inputs.dFdvdt, 'dFdvdt', owner), x, 'dFdvdt', 'x', owner);
    const enhance = check.bool(inputs.enhance ?? this.enhanceTarget, 'enhance', owner);
    let fTCond: Tensor | number = 0;
    let fTUncond: Tensor | number = 0;
    if (enhance) {
      // The official code substitutes 0 for F_t_cond when w_cond is 0 (it skips that EMA forward).
      if (inputs.fTCond !== undefined) {
        fTCond = check.sameShape(check.floatTensor(inputs.fTCond, 'fTCond', owner), x, 'fTCond', 'x', owner);
      } else if (this.wCond !== 0) {
        throw argError('type', `${owner}: enhance with wCond ${this.wCond} needs fTCond`);
      }
      if (inputs.fTUncond === undefined) throw argError('type', `${owner}: enhance needs fTUncond`);
      fTUncond = check.sameShape(check.floatTensor(inputs.fTUncond, 'fTUncond', owner), x, 'fTUncond', 'x', owner);
    }
    const t = timeLike(inputs.t, x, 't', owner);
    const r = timeLike(inputs.r, x, 'r', owner);
    return { xT, vT, x, z, t, r, dFdvdt, enhance, fTCond, fTUncond };
  }

  /** Checks step's arguments; returns times shaped like x_t and the options. */
  private stepArgs(xT: Tensor, t: Tensor | number, r: Tensor | number, F: Tensor, opts: StepOptions | undefined): {
    t: Tensor; r: Tensor; sRatio: number; eps: Tensor | undefined;
  } {
    const owner = `${this.name}.step`;
    check.floatTensor(xT, 'xT', owner);
    check.sameShape(check.floatTensor(F, 'F', owner), xT, 'F', 'xT', owner);
    const o = check.knownKeys(opts ?? {}, ['sRatio', 'eps'], owner);
    const sRatio = check.nonNegative(o.sRatio ?? 0, 'sRatio', owner);
    const eps = o.eps === undefined ? undefined : check.sameShape(check.floatTensor(o.eps, 'eps', owner), xT, 'eps', 'xT', owner);
    return { t: timeLike(t, xT, 't', owner), r: timeLike(r, xT, 'r', owner), sRatio, eps };
  }
}

/** Options of the transports with log-normal training times s = exp(pMean + pStd·n): OTFM, TrigFlow, EDM. */
export interface LogNormalOptions extends TransportOptions {
  /** mean of log s */
  pMean?: number;
  /** std of log s (> 0) */
  pStd?: number;
  /** the noise end of the path */
  tMax?: number;
  /** the data end of the path */
  tMin?: number;
}

/** A transport whose training times come from the log-normal s = exp(pMean + pStd·n) (OTFM, TrigFlow, EDM). */
export abstract class LogNormalTransport extends BaseTransport {
  readonly timeDraw = 'normal' as const;
  readonly pMean: number;
  readonly pStd: number;

  protected constructor(
    owner: string,
    opts: LogNormalOptions,
    defaults: { sigmaD: number; tMax: number; tMin: number; pMean: number; pStd: number },
  ) {
    super(owner, opts as LogNormalOptions & Record<string, unknown>, ['pMean', 'pStd', 'tMax', 'tMin'], {
      sigmaD: defaults.sigmaD, tMax: opts.tMax ?? defaults.tMax, tMin: opts.tMin ?? defaults.tMin,
    });
    this.pMean = check.number(opts.pMean ?? defaults.pMean, 'pMean', owner);
    this.pStd = check.positive(opts.pStd ?? defaults.pStd, 'pStd', owner);
  }

  /** s = exp(pMean + pStd·n) of standard normals n. */
  protected logNormal(normals: Tensor): Tensor {
    return normals.mul(this.pStd).add(this.pMean).exp();
  }
}
