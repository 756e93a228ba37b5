/**
 * The per-sample weights of the transition loss (official TransitionSchedule.time_weighting and
 * adaptive_weighting, tim/schedulers/transition.py):
 *
 *   time weight   w(t, r) = f(Δ)   with Δ = g(t) − g(r) (or g(t) alone), g = tan, t/(1−t) or identity,
 *                 f = 1, 1/(Δ+σ_d), 1/√(Δ+σ_d), 1/(Δ+σ_d)², 1/(Δ²+σ_d²); diffusion rows (t = r) get 1;
 *   adaptive      a = 1 / (L.detach() + 1e-5), which makes w·a·L ≈ w in value while keeping ∇L/L.
 *
 * Pure functions of (B,) tensors; results are new tensors, inputs are never modified.
 */
import * as torch from '../../torch/index.js';
import { argError } from '../../torch/errors.js';
import type { Tensor } from '../../torch/tensor.js';

/** The official weight_time_type values. */
export const WEIGHT_TIME_TYPES = ['constant', 'reciprocal', 'sqrt', 'square', 'Soft-Min-SNR'] as const;
export type WeightTimeType = (typeof WEIGHT_TIME_TYPES)[number];

export interface TimeWeightOptions {
  /** official weight_time_type (default 'constant') */
  type?: WeightTimeType;
  /** map times through tan before differencing (official weight_time_tangent) */
  tangent?: boolean;
  /** map times through t/(1−t) (official weight_time_sigmoid; ignored when tangent is set, as there) */
  sigmoid?: boolean;
  /** weight by the gap g(t) − g(r) (default true) or by g(t) alone (official weight_t_and_r) */
  tAndR?: boolean;
  /** the data scale σ_d of the transport (default 1) */
  sigmaD?: number;
}

/** The official adaptive_weighting eps, written `10e-6` there (= 1e-5). */
export const ADAPTIVE_EPS = 1e-5;

/** g(t): the time warp applied before taking the gap (tan wins over the sigmoid map, as in the official elif). */
export function warpTime(t: Tensor, tangent: boolean, sigmoid: boolean): Tensor {
  if (tangent) return t.tan();
  if (sigmoid) return torch.scope(() => t.div(t.rsub(1)));
  return t.clone();
}

/** f(Δ) for one weight type; each formula is the official one operation for operation (float32 parity). */
export function weightOfGap(delta: Tensor, type: WeightTimeType, sigmaD: number): Tensor {
  return torch.scope(() => {
    switch (type) {
      case 'constant': return torch.onesLike(delta);
      case 'reciprocal': return delta.add(sigmaD).reciprocal();
      case 'sqrt': return delta.add(sigmaD).sqrt().reciprocal();
      case 'square': return delta.add(sigmaD).pow(2).reciprocal();
      case 'Soft-Min-SNR': return delta.pow(2).add(sigmaD ** 2).reciprocal();
      default: throw argError('range', `timeWeight: unknown type '${String(type)}' (known: ${WEIGHT_TIME_TYPES.join(', ')})`, 'E_OPTION');
    }
  });
}

/** Row i → 1 for i < n: the first n rows are diffusion rows (t = r), whose weight the official code forces to 1. */
export function forceLeadingRows(w: Tensor, n: number, value = 1.0): Tensor {
  if (n <= 0) return w.clone();
  return torch.scope(() => {
    const rows = torch.arange(w.shape[0]!, { device: w.device });
    return torch.where(rows.lt(n), torch.fullLike(w, value), w);
  });
}

/**
 * The time weight (B,) of each sample: f(g(t) − g(r)) (or f(g(t))), rows < nDiffusion set to 1.
 * t and r are (B,) or shaped (B, 1, …, 1); the result is (B,).
 */
export function timeWeight(t: Tensor, r: Tensor, nDiffusion: number, opts: TimeWeightOptions = {}): Tensor {
  const type = opts.type ?? 'constant';
  if (!(WEIGHT_TIME_TYPES as readonly string[]).includes(type)) {
    throw argError('range', `timeWeight: unknown type '${String(type)}' (known: ${WEIGHT_TIME_TYPES.join(', ')})`, 'E_OPTION');
  }
  if (!Number.isInteger(nDiffusion) || nDiffusion < 0) throw argError('range', `timeWeight: nDiffusion must be an integer >= 0, got ${nDiffusion}`);
  const tangent = opts.tangent ?? false, sigmoid = opts.sigmoid ?? false;
  return torch.scope(() => {
    const gt = warpTime(t, tangent, sigmoid);
    const delta = (opts.tAndR ?? true) ? gt.sub(warpTime(r, tangent, sigmoid)).flatten() : gt.flatten();
    return forceLeadingRows(weightOfGap(delta, type, opts.sigmaD ?? 1.0), nDiffusion);
  });
}

/** 1 / (L + eps) with the gradient cut: the weight rescales each sample's gradient to ∇L / L. */
export function adaptiveWeight(loss: Tensor, eps = ADAPTIVE_EPS): Tensor {
  return torch.scope(() => loss.detach().add(eps).reciprocal());
}
