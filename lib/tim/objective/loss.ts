/**
 * The transition loss of TiM (official TransitionSchedule.__call__, tim/schedulers/transition.py).
 *
 *   t, r          two log-normal (or uniform) draws per sample, t = max, r = min; the first
 *                 round(diffusionRatio·B) rows get r = t (diffusion rows), the last
 *                 round(consistencyRatio·B) rows r = T_min (consistency rows); round is Python's (half to even)
 *   x_t, v_t      alpha(t)·x + sigma(t)·z and its time derivative
 *   F_pred, h     the network at (x_t, c_noise(t), c_noise(r), y), with the REPA projector output h
 *   dF/dt         DDE central difference (default) or exact JVP, rows ≥ nDiffusion (lib/tim/objective/derivative.ts)
 *   F_target      transport.target: v_t (or its EMA-enhanced mix) − (t − r)·dF/dt, a constant
 *   L_i           mean (F_pred − F_target)² + [mean over pixels of 1 − cos over channels]
 *   weighted      mean_i time_weight(t, r)_i · L_i / (L_i + 1e-5)   (lib/tim/objective/time_weights.ts)
 *   proj          mean_i mean_n (1 − cos(h_{i,n}, h_target_{i,n}))  (0 when no h_target is given)
 *
 * Every loss term passes nan_to_num(nan 0, ±inf ±1e5) like the official code. The trainer then
 * minimizes weightedLoss + projCoeff·projLoss.
 */
import * as torch from '../../torch/index.js';
import { TorchError, argError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
import { ScriptModule } from '../../torch/jit.js';
import type { Tensor } from '../../torch/tensor.js';
import type { DType, Device } from '../../torch/dtype.js';
import { expandTimeLike, unchecked, type Transport } from '../transports/transport.js';
import { ddeDerivative, jvpDerivative, jvpMethodDefault, type DerivativePrecision, type JvpMethod, type NetworkFn } from './derivative.js';
import { WEIGHT_TIME_TYPES, adaptiveWeight, timeWeight, type WeightTimeType } from './time_weights.js';

export type DerivativeType = 'dde' | 'jvp';

export interface TransitionLossOptions {
  /** fraction of the batch trained as diffusion (r = t), the leading rows (default 0) */
  diffusionRatio?: number;
  /** fraction trained as consistency (r = T_min), the trailing rows (default 0) */
  consistencyRatio?: number;
  /** how dF/dt is estimated (default 'dde') */
  derivativeType?: DerivativeType;
  /** ε of the DDE central difference (default 0.005) */
  differentialEpsilon?: number;
  /** time weight f(Δ) (default 'constant') */
  weightTimeType?: WeightTimeType;
  /** Δ = tan t − tan r (default false) */
  weightTimeTangent?: boolean;
  /** Δ = t/(1−t) − r/(1−r) (default false; tangent wins when both are set, as in the official code) */
  weightTimeSigmoid?: boolean;
  /** weight by the gap between t and r (default true) or by t alone */
  weightTAndR?: boolean;
  /**
   * 'float32' (default): the derivative's extra forwards run with autocast off, because a bfloat16
   * central difference loses most digits (docs/loss.md); 'autocast': as the caller's autocast state.
   */
  derivativePrecision?: DerivativePrecision;
  /** derivativeType 'jvp': forward-mode AD or double backward (default: the faster on this libtorch, jvpMethodDefault()) */
  jvpMethod?: JvpMethod;
}

/**
 * A network the loss can call: the TiM wrapper (forward with { returnZs }), a TorchScript module
 * with methods forward and forward_with_zs (such as TiM.module), or an object holding one as
 * `module` (such as an EMA).
 */
export interface TransitionNetwork {
  forward(x: Tensor, t: Tensor, r: Tensor, y: Tensor): Tensor;
  forward(x: Tensor, t: Tensor, r: Tensor, y: Tensor, options: { returnZs: true }): { out: Tensor; hProj: Tensor };
}
export type LossModel = TransitionNetwork | ScriptModule | { readonly module: ScriptModule };

export interface SampleTimesOptions {
  /** replay the two standard normal draws (each (B,)) of the two sampleT calls (normal-draw transports) */
  normals?: [Tensor, Tensor];
  /** replay the two uniform draws (uniform-draw transports) */
  uniforms?: [Tensor, Tensor];
  dtype?: DType;
  device?: Device;
}

export interface SampledTimes {
  /** (B,) the later time, t ≥ r */
  t: Tensor;
  r: Tensor;
  /** the leading rows with r = t */
  nDiffusion: number;
}

export interface LossInputs {
  /** the network being trained (gradients flow into it) */
  model: LossModel;
  /** the EMA network for enhanced targets (transport.enhanceTarget); unused otherwise */
  emaModel?: LossModel | null;
  /** clean latents (B, C, H, W) */
  x: Tensor;
  /** noise, the shape of x */
  z: Tensor;
  /** conditioning after label dropout (B,) int64, or (B, M, D) caption features */
  y: Tensor;
  /** undropped conditioning for the EMA's conditional prediction (enhanced target with wCond ≠ 0) */
  yEma?: Tensor | null;
  /** null conditioning for the EMA's unconditional prediction (enhanced target) */
  yNull?: Tensor | null;
  /** REPA target features (B, N, zDim) from any encoder; no projection loss without it */
  hTarget?: Tensor | null;
  /** add the directional (cosine over channels) term (default false, as the official default; its trainer passes true) */
  useDirLoss?: boolean;
  /** replace the sampled times (B,) (both or neither); r ≤ t */
  t?: Tensor;
  r?: Tensor;
  /** the leading diffusion rows of the given t, r (default round(diffusionRatio·B)) */
  nDiffusion?: number;
}

export interface LossOutput {
  /** scalar: mean(timeWeight · adaptiveWeight · denoisingLoss) — backpropagate this */
  weightedLoss: Tensor;
  /** scalar REPA loss (a constant 0 when no hTarget was given) */
  projLoss: Tensor;
  /** (B,) mseLoss + dirLoss, carrying gradient (the official denoising_loss) */
  denoisingLoss: Tensor;
  /** (B,) mean (F_pred − F_target)² after nan_to_num */
  mseLoss: Tensor;
  /** (B,) directional term after nan_to_num, or null when useDirLoss is off */
  dirLoss: Tensor | null;
  /** (B,) */
  timeWeight: Tensor;
  adaptiveWeight: Tensor;
  /** (B,) timeWeight · adaptiveWeight */
  weight: Tensor;
  /** (B, ...) the network's prediction, carrying gradient */
  fPred: Tensor;
  /** REPA projector output (B, N, zDim), carrying gradient; null without hTarget */
  hProj: Tensor | null;
  /** (B,) per-sample projection loss; null without hTarget */
  projLossPerSample: Tensor | null;
  /** (B, ...) the target, a constant */
  fTarget: Tensor;
  /** (B, ...) dF/dt along the path, 0 on diffusion rows */
  dFdvdt: Tensor;
  /** DDE model outputs at t ± ε on rows ≥ nDiffusion (null for 'jvp') */
  fTPlusEps: Tensor | null;
  fTMinusEps: Tensor | null;
  xT: Tensor;
  vT: Tensor;
  /** (B,) the times used */
  t: Tensor;
  r: Tensor;
  nDiffusion: number;
}

/** The official loss_dict: plain numbers for logging. */
export interface LossDict {
  weightedLoss: number;
  denoisingLoss: number;
  projLoss: number;
}

const OWNER = 'TransitionLoss';
const OPTION_KEYS: readonly (keyof TransitionLossOptions)[] = [
  'diffusionRatio', 'consistencyRatio', 'derivativeType', 'differentialEpsilon', 'weightTimeType', 'weightTimeTangent',
  'weightTimeSigmoid', 'weightTAndR', 'derivativePrecision', 'jvpMethod',
];
const INPUT_KEYS: readonly (keyof LossInputs)[] = [
  'model', 'emaModel', 'x', 'z', 'y', 'yEma', 'yNull', 'hTarget', 'useDirLoss', 't', 'r', 'nDiffusion',
];

/** The official loss terms' nan_to_num(nan=0, posinf=1e5, neginf=−1e5). */
export function finiteLoss(v: Tensor): Tensor {
  return v.nanToNum(0, 1e5, -1e5);
}

/** Python's round() of a float: halves go to the even neighbour (round(2.5) = 2, round(3.5) = 4). */
export function pythonRound(x: number): number {
  const f = Math.floor(x);
  const frac = x - f;
  if (frac > 0.5) return f + 1;
  if (frac < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** (nDiffusion, nConsistency) rows of a batch of B (official sample_t_and_r). */
export function rowCounts(batch: number, diffusionRatio: number, consistencyRatio: number): { nDiffusion: number; nConsistency: number } {
  return { nDiffusion: pythonRound(diffusionRatio * batch), nConsistency: pythonRound(consistencyRatio * batch) };
}

/** Mean over every dimension but the first (official mean_flat). */
export function meanFlat(v: Tensor): Tensor {
  if (v.dim <= 1) return v.clone();
  return v.mean(Array.from({ length: v.dim - 1 }, (_, i) => i + 1));
}

/** Per-sample mean squared error (B,). */
export function mseTerm(fPred: Tensor, fTarget: Tensor): Tensor {
  return torch.scope(() => finiteLoss(meanFlat(fPred.sub(fTarget).square())));
}

/** Per-sample mean over pixels of 1 − cos(F_pred, F_target) over channels (dim 1, eps 1e-8). */
export function directionalTerm(fPred: Tensor, fTarget: Tensor): Tensor {
  return torch.scope(() => finiteLoss(meanFlat(torch.cosineSimilarity(fPred, fTarget, 1).rsub(1))));
}

/** Per-sample REPA loss mean_n (1 − cos(h, h_target)) over the feature dim (B,). */
export function projectionTerm(hProj: Tensor, hTarget: Tensor): Tensor {
  return torch.scope(() => finiteLoss(meanFlat(torch.cosineSimilarity(hProj, hTarget, -1).rsub(1))));
}

/**
 * r from the two draws' minimum: rows < nDiffusion take t, then (overriding, as the official code
 * assigns in this order) rows ≥ B − nConsistency take T_min.
 */
export function transitionTimes(t: Tensor, rMin: Tensor, nDiffusion: number, nConsistency: number, tMin: number): Tensor {
  return torch.scope(() => {
    const rows = torch.arange(t.shape[0]!, { device: t.device });
    let r = nDiffusion > 0 ? torch.where(rows.lt(nDiffusion), t, rMin) : rMin.clone();
    if (nConsistency > 0) r = torch.where(rows.ge(t.shape[0]! - nConsistency), torch.fullLike(r, tMin), r);
    return r;
  });
}

// ---- argument checks --------------------------------------------------------------------------

const COMPUTE = `${OWNER}.compute`;

function shapeError(name: string, got: Tensor, want: string): Error {
  return argError('range', `${COMPUTE}: ${name} must be ${want}, got [${got.shape.join(', ')}]`, 'E_SHAPE');
}

/** A batch-leading tensor of B rows. */
function batchIn(v: unknown, name: string, B: number): Tensor {
  const t = check.tensor(v, name, COMPUTE);
  if (t.dim < 1 || t.shape[0] !== B) throw shapeError(name, t, `a batch of ${B} rows`);
  return t;
}

/** An EMA prediction must have x's shape (a wrong network would otherwise broadcast into the target). */
function emaOutput(f: Tensor, x: Tensor, name: string): Tensor {
  if (!check.isSameShape(f, x)) throw shapeError(`the EMA output ${name}`, f, `the shape of x [${x.shape.join(', ')}]`);
  return f;
}

// ---- calling networks -------------------------------------------------------------------------

interface NetworkCalls {
  plain: NetworkFn;
  withZs: (x: Tensor, t: Tensor, r: Tensor, y: Tensor) => { out: Tensor; hProj: Tensor };
}

/** How to call each kind of network the loss accepts. */
export function networkCalls(m: unknown, name: string): NetworkCalls {
  let mod: unknown = m;
  if (mod !== null && typeof mod === 'object' && !(mod instanceof ScriptModule) && typeof (mod as { forward?: unknown }).forward !== 'function') {
    mod = (mod as { module?: unknown }).module;
  }
  if (mod instanceof ScriptModule) {
    const sm = mod;
    if (sm.isDisposed) throw new TorchError(`${COMPUTE}: ${name} was disposed`, 'E_DISPOSED');
    return {
      plain: (x, t, r, y) => sm.forward<Tensor>(x, t, r, y),
      withZs: (x, t, r, y) => {
        const [out, hProj] = sm.call<[Tensor, Tensor]>('forward_with_zs', x, t, r, y);
        return { out, hProj };
      },
    };
  }
  if (mod !== null && typeof mod === 'object' && typeof (mod as { forward?: unknown }).forward === 'function') {
    const net = mod as TransitionNetwork;
    return {
      plain: (x, t, r, y) => net.forward(x, t, r, y),
      withZs: (x, t, r, y) => net.forward(x, t, r, y, { returnZs: true }),
    };
  }
  throw argError('type', `${COMPUTE}: ${name} must be a TiM, a TorchScript module, or an object with a 'module' (such as an EMA)`);
}

// ---- the loss ---------------------------------------------------------------------------------

export class TransitionLoss {
  readonly transport: Transport;
  readonly diffusionRatio: number;
  readonly consistencyRatio: number;
  readonly derivativeType: DerivativeType;
  readonly differentialEpsilon: number;
  readonly weightTimeType: WeightTimeType;
  readonly weightTimeTangent: boolean;
  readonly weightTimeSigmoid: boolean;
  readonly weightTAndR: boolean;
  readonly derivativePrecision: DerivativePrecision;
  readonly jvpMethod: JvpMethod;

  constructor(transport: Transport, opts: TransitionLossOptions = {}) {
    if (transport === null || typeof transport !== 'object' || typeof (transport as Transport).sampleT !== 'function' ||
        typeof (transport as Transport).target !== 'function') {
      throw argError('type', `${OWNER}: the first argument must be a transport (e.g. new transports.OTFM())`);
    }
    check.knownKeys(opts, OPTION_KEYS, OWNER);
    this.transport = transport;
    this.diffusionRatio = check.inRange(opts.diffusionRatio ?? 0, 'diffusionRatio', OWNER, 0, 1);
    this.consistencyRatio = check.inRange(opts.consistencyRatio ?? 0, 'consistencyRatio', OWNER, 0, 1);
    this.derivativeType = check.oneOf(opts.derivativeType ?? 'dde', 'derivativeType', OWNER, ['dde', 'jvp'] as const);
    this.differentialEpsilon = check.positive(opts.differentialEpsilon ?? 0.005, 'differentialEpsilon', OWNER);
    this.weightTimeType = check.oneOf(opts.weightTimeType ?? 'constant', 'weightTimeType', OWNER, WEIGHT_TIME_TYPES);
    this.weightTimeTangent = check.bool(opts.weightTimeTangent ?? false, 'weightTimeTangent', OWNER);
    this.weightTimeSigmoid = check.bool(opts.weightTimeSigmoid ?? false, 'weightTimeSigmoid', OWNER);
    this.weightTAndR = check.bool(opts.weightTAndR ?? true, 'weightTAndR', OWNER);
    this.derivativePrecision = check.oneOf(opts.derivativePrecision ?? 'float32', 'derivativePrecision', OWNER, ['float32', 'autocast'] as const);
    this.jvpMethod = check.oneOf(opts.jvpMethod ?? jvpMethodDefault(), 'jvpMethod', OWNER, ['forward', 'double-backward'] as const);
  }

  /**
   * From the official YAML's model.transition_loss block (snake_case keys: diffusion_ratio,
   * consistency_ratio, derivative_type, differential_epsilon, weight_time_type,
   * weight_time_tangent, weight_time_sigmoid, weight_t_and_r).
   */
  static fromOfficialConfig(transport: Transport, cfg: Record<string, unknown>): TransitionLoss {
    const map: Record<string, keyof TransitionLossOptions> = {
      diffusion_ratio: 'diffusionRatio', consistency_ratio: 'consistencyRatio', derivative_type: 'derivativeType',
      differential_epsilon: 'differentialEpsilon', weight_time_type: 'weightTimeType', weight_time_tangent: 'weightTimeTangent',
      weight_time_sigmoid: 'weightTimeSigmoid', weight_t_and_r: 'weightTAndR',
    };
    check.knownKeys(cfg, Object.keys(map), `${OWNER}.fromOfficialConfig`, 'config');
    const opts: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(cfg)) opts[map[k]!] = v;
    return new TransitionLoss(transport, opts as TransitionLossOptions);
  }

  /** (nDiffusion, nConsistency) for a batch of B. */
  rowCounts(batch: number): { nDiffusion: number; nConsistency: number } {
    return rowCounts(batch, this.diffusionRatio, this.consistencyRatio);
  }

  /**
   * Training times (official sample_t_and_r): two sampleT draws, t = max, r = min, then the
   * diffusion rows (r = t) and the consistency rows (r = T_min). Replay draws for reproducibility.
   */
  sampleTimes(batch: number, opts: SampleTimesOptions = {}): SampledTimes {
    check.knownKeys(opts, ['normals', 'uniforms', 'dtype', 'device'], `${OWNER}.sampleTimes`);
    if (!Number.isInteger(batch) || batch < 1) throw argError('range', `${OWNER}.sampleTimes: batch must be a positive integer, got ${batch}`);
    for (const k of ['normals', 'uniforms'] as const) {
      const d = opts[k];
      if (d !== undefined && (!Array.isArray(d) || d.length !== 2)) {
        throw argError('type', `${OWNER}.sampleTimes: ${k} must be a pair [first draw, second draw]`);
      }
    }
    const draw = (i: 0 | 1) => {
      const o: Record<string, unknown> = {};
      if (opts.normals) o.normals = opts.normals[i];
      if (opts.uniforms) o.uniforms = opts.uniforms[i];
      if (opts.dtype !== undefined) o.dtype = opts.dtype;
      if (opts.device !== undefined) o.device = opts.device;
      return o;
    };
    return torch.scope(() => this.timesFromDraws(this.transport.sampleT(batch, draw(0)), this.transport.sampleT(batch, draw(1))));
  }

  /** sampleTimes(batch, { dtype, device }) without the checks (compute's own draw). */
  private drawTimes(batch: number, dtype: DType, device: Device): SampledTimes {
    const math = unchecked(this.transport);
    return torch.scope(() => this.timesFromDraws(math.drawTimes(batch, dtype, device), math.drawTimes(batch, dtype, device)));
  }

  /** t = max, r = min of two draws of training times, then the diffusion and consistency rows. */
  private timesFromDraws(t1: Tensor, t2: Tensor): SampledTimes {
    const { nDiffusion, nConsistency } = this.rowCounts(t1.shape[0]!);
    const t = t1.maximum(t2);
    const r = transitionTimes(t, t1.minimum(t2), nDiffusion, nConsistency, this.transport.tMin);
    return { t, r, nDiffusion };
  }

  /** Time weight (B,) for (t, r) with the first nDiffusion rows forced to 1. */
  timeWeight(t: Tensor, r: Tensor, nDiffusion: number): Tensor {
    return timeWeight(t, r, nDiffusion, {
      type: this.weightTimeType, tangent: this.weightTimeTangent, sigmoid: this.weightTimeSigmoid,
      tAndR: this.weightTAndR, sigmaD: this.transport.sigmaD,
    });
  }

  /**
   * One loss evaluation. Returns every intermediate (new tensors, owned by the caller's scope);
   * backpropagate `weightedLoss` (+ projCoeff · `projLoss`). The inputs are not modified.
   */
  compute(inputs: LossInputs): LossOutput {
    check.knownKeys(inputs, INPUT_KEYS, COMPUTE, 'inputs');
    const tr = this.transport;
    const math = unchecked(tr);
    const calls = networkCalls(inputs.model, 'model');
    const x = check.floatTensor(inputs.x, 'x', COMPUTE);
    if (x.dim < 2) throw shapeError('x', x, 'a batch (B, C, ...)');
    const B = x.shape[0]!;
    const z = check.floatTensor(inputs.z, 'z', COMPUTE);
    if (!check.isSameShape(z, x)) throw shapeError('z', z, `the shape of x [${x.shape.join(', ')}]`);
    const y = batchIn(inputs.y, 'y', B);
    const useDirLoss = check.bool(inputs.useDirLoss ?? false, 'useDirLoss', COMPUTE);
    const hTarget = inputs.hTarget == null ? null : check.floatTensor(inputs.hTarget, 'hTarget', COMPUTE);
    if (hTarget && hTarget.shape[0] !== B) throw shapeError('hTarget', hTarget, `(${B}, N, zDim)`);

    // Enhanced targets need the EMA's predictions at (t, t): conditional (when wCond ≠ 0) and null.
    const enhance = tr.enhanceTarget;
    let ema: NetworkCalls | null = null, yEma: Tensor | null = null, yNull: Tensor | null = null;
    if (enhance) {
      if (inputs.emaModel == null) throw argError('type', `${COMPUTE}: the transport enhances targets (enhanceTarget) and needs emaModel`);
      ema = networkCalls(inputs.emaModel, 'emaModel');
      if (inputs.yNull == null) throw argError('type', `${COMPUTE}: enhanced targets need yNull (the null conditioning)`);
      yNull = batchIn(inputs.yNull, 'yNull', B);
      if (tr.wCond !== 0) {
        if (inputs.yEma == null) throw argError('type', `${COMPUTE}: enhanced targets with wCond ${tr.wCond} need yEma (the undropped conditioning)`);
        yEma = batchIn(inputs.yEma, 'yEma', B);
      }
    }

    return torch.scope(() => {
      const { t, r, nDiffusion } = this.resolveTimes(inputs, B, x);

      // Everything below runs the transport's unchecked math: the inputs were checked above, once.
      const { xT, vT } = pathAt(tr, x, z, t);

      const { tInput, rInput } = math.modelTimesOf(t, r);
      let fPred: Tensor, hProj: Tensor | null = null;
      if (hTarget) {
        ({ out: fPred, hProj } = calls.withZs(xT, tInput, rInput, y));
        if (!check.isSameShape(hTarget, hProj)) throw shapeError('hTarget', hTarget, `the projector's shape [${hProj.shape.join(', ')}]`);
      } else {
        fPred = calls.plain(xT, tInput, rInput, y);
      }

      const derivativeInputs = {
        network: calls.plain, transport: tr, x, z, xT, vT, t, r, y, nDiffusion, precision: this.derivativePrecision,
        jvpMethod: this.jvpMethod,
      };
      const der = this.derivativeType === 'jvp' ? jvpDerivative(derivativeInputs) : ddeDerivative(derivativeInputs, this.differentialEpsilon);

      let fTCond: Tensor | undefined, fTUncond: Tensor | undefined;
      if (ema) {
        torch.noGrad(() => {
          // c_noise applied once (the official code applies it twice; identical for OT-FM, see docs/loss.md).
          const { tInput: tt, rInput: rr } = math.modelTimesOf(t, t);
          if (yEma) fTCond = emaOutput(ema!.plain(xT, tt, rr, yEma), x, 'fTCond');
          fTUncond = emaOutput(ema!.plain(xT, tt, rr, yNull!), x, 'fTUncond');
        });
      }
      // The target is a constant of the loss (the official code builds it from no-grad pieces).
      const fTarget = torch.noGrad(() => math.targetOf({
        xT, vT, x, z, t: expandTimeLike(t, x), r: expandTimeLike(r, x), dFdvdt: der.dFdvdt, enhance,
        fTCond: fTCond ?? 0, fTUncond: fTUncond ?? 0,
      })).detach();

      const mseLoss = mseTerm(fPred, fTarget);
      const dirLoss = useDirLoss ? directionalTerm(fPred, fTarget) : null;
      const denoisingLoss = dirLoss ? mseLoss.add(dirLoss) : mseLoss.view(mseLoss.shape);
      const tw = this.timeWeight(t, r, nDiffusion);
      const aw = adaptiveWeight(denoisingLoss);
      const weight = tw.mul(aw);
      const weightedLoss = weight.mul(denoisingLoss).mean();

      let projLoss: Tensor, projLossPerSample: Tensor | null = null;
      if (hTarget && hProj) {
        projLossPerSample = projectionTerm(hProj, hTarget);
        projLoss = projLossPerSample.mean();
      } else {
        projLoss = torch.zeros([], { dtype: fPred.dtype, device: fPred.device });
      }

      return {
        weightedLoss, projLoss, denoisingLoss, mseLoss, dirLoss, timeWeight: tw, adaptiveWeight: aw, weight,
        fPred, hProj, projLossPerSample, fTarget, dFdvdt: der.dFdvdt, fTPlusEps: der.fTPlusEps, fTMinusEps: der.fTMinusEps,
        xT, vT, t, r, nDiffusion,
      };
    });
  }

  /** The official loss_dict (three host reads: call it when logging, not every step on a GPU). */
  static lossDict(out: LossOutput): LossDict {
    return torch.scope(() => ({
      weightedLoss: out.weightedLoss.item(),
      denoisingLoss: out.denoisingLoss.detach().mean().item(),
      projLoss: out.projLoss.item(),
    }));
  }

  /** The given (t, r) checked, or freshly sampled ones; copies either way (the caller keeps theirs). */
  private resolveTimes(inputs: LossInputs, B: number, x: Tensor): SampledTimes {
    const { t: tIn, r: rIn } = inputs;
    if (tIn === undefined && rIn === undefined) {
      if (inputs.nDiffusion !== undefined) throw argError('type', `${COMPUTE}: nDiffusion applies to given t and r only`);
      return this.drawTimes(B, x.dtype, x.device);
    }
    if (tIn === undefined || rIn === undefined) throw argError('type', `${COMPUTE}: give both t and r, or neither`);
    const t = check.floatTensor(tIn, 't', COMPUTE), r = check.floatTensor(rIn, 'r', COMPUTE);
    if (t.dim !== 1 || t.shape[0] !== B) throw shapeError('t', t, `(${B},)`);
    if (r.dim !== 1 || r.shape[0] !== B) throw shapeError('r', r, `(${B},)`);
    // Times of another dtype would promote x_t (float64 times → a float64 network input).
    for (const [name, v] of [['t', t], ['r', r]] as const) {
      if (v.dtype !== x.dtype) throw argError('type', `${COMPUTE}: ${name} must have x's dtype ${x.dtype}, got ${v.dtype}`, 'E_DTYPE');
    }
    const nDiffusion = inputs.nDiffusion ?? this.rowCounts(B).nDiffusion;
    if (!Number.isInteger(nDiffusion) || nDiffusion < 0 || nDiffusion > B) {
      throw argError('range', `${COMPUTE}: nDiffusion must be an integer in [0, ${B}], got ${nDiffusion}`);
    }
    // r > t has no meaning (negative gaps make the sqrt weight NaN); one host sync, only for given times.
    if (torch.scope(() => r.gt(t).anyTrue())) throw argError('range', `${COMPUTE}: r must be <= t for every row`, 'E_VALUE');
    return { t: t.detach().clone(), r: r.detach().clone(), nDiffusion };
  }
}

/** x_t = alpha(t)·x + sigma(t)·z and v_t = dAlpha(t)·x + dSigma(t)·z for times (B,), from one interpolant. */
export function pathAt(tr: Transport, x: Tensor, z: Tensor, t: Tensor): { xT: Tensor; vT: Tensor } {
  return torch.scope(() => {
    const ip = unchecked(tr).interpolantOf(t.view([t.shape[0]!, ...new Array<number>(x.dim - 1).fill(1)]));
    return { xT: ip.alpha.mul(x).add(ip.sigma.mul(z)), vT: ip.dAlpha.mul(x).add(ip.dSigma.mul(z)) };
  });
}
