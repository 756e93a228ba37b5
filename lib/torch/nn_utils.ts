/**
 * torch.nn.utils: gradient clipping (clip_grad_norm_, torch 1.13 semantics and bits).
 */
import { native } from './native.js';
import { op } from './ops.js';
import { argError, TorchError } from './errors.js';
import { Tensor } from './tensor.js';
import { noGrad } from './autograd.js';
import { mulScalar_ } from './optim/foreach.js';

const O = {
  norm: op('aten::norm', 'ScalarOpt_dim'),
  stack: op('aten::stack'),
  abs: op('aten::abs'),
  max: op('aten::max'),
};

export interface ClipGradNormOptions {
  /** p of the p-norm (default 2; Infinity for the max-norm). */
  normType?: number;
  /** Throw (TorchError E_VALUE) instead of scaling by a NaN/Inf norm. */
  errorIfNonfinite?: boolean;
}

/** The scale torch applies: min(maxNorm / (total + 1e-6), 1), each step rounded to the norm's dtype
 *  as torch's 0-d tensor ops do (add 1e-6, reciprocal, times maxNorm, clamp): float32 unless the
 *  gradients are float64. NaN stays NaN. */
export function clipCoefficient(totalNorm: number, maxNorm: number, float64 = false): number {
  const f = float64 ? (x: number) => x : Math.fround;
  const coef = f(f(1 / f(totalNorm + f(1e-6))) * f(maxNorm));
  return coef > 1 ? 1 : coef;
}

/**
 * Scales the gradients of `params` in place so that their joint norm (as if concatenated) is at
 * most maxNorm; returns that total norm before clipping (a float32 value), 0 if no parameter has a
 * gradient. Norms are computed as torch does: the norm of the stack of per-gradient norms.
 */
export function clipGradNorm_(params: Tensor | Tensor[], maxNorm: number, opts: ClipGradNormOptions = {}): number {
  const list = params instanceof Tensor ? [params] : params;
  if (!Array.isArray(list) || !list.every((p) => p instanceof Tensor)) throw argError('type', 'clipGradNorm_: expected a Tensor or an array of Tensors');
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm)) throw argError('type', `clipGradNorm_: maxNorm must be a number, got ${String(maxNorm)}`);
  const p = opts.normType ?? 2;
  if (typeof p !== 'number' || Number.isNaN(p)) throw argError('type', 'clipGradNorm_: normType must be a number');
  const grads: Tensor[] = [];
  const temps: number[] = [];
  try {
    for (const param of list) {
      const g = param.grad;
      if (g) grads.push(g);
    }
    if (grads.length === 0) return 0;
    return noGrad(() => {
      let total: number;
      const norms: number[] = [];
      for (const g of grads) {
        if (p === Infinity) {
          const a = native.call(O.abs(), g._h) as number;
          temps.push(a);
          norms.push(native.call(O.max(), a) as number);
        } else {
          norms.push(native.call(O.norm(), g._h, p, range(g.dim), false) as number);
        }
        temps.push(norms[norms.length - 1]!);
      }
      if (p === Infinity && norms.length === 1) {
        total = native.item(norms[0]!) as number;
      } else {
        const stacked = native.call(O.stack(), norms, 0) as number;
        temps.push(stacked);
        const t = (p === Infinity ? native.call(O.max(), stacked) : native.call(O.norm(), stacked, p, [0], false)) as number;
        temps.push(t);
        total = native.item(t) as number;
      }
      if (opts.errorIfNonfinite && !Number.isFinite(total)) {
        throw new TorchError(`clipGradNorm_: the total norm of order ${p} of the gradients is non-finite (${total}), so it cannot be clipped`, 'E_VALUE');
      }
      const coef = clipCoefficient(total, maxNorm, grads[0]!.dtype === 'float64');
      // torch multiplies by the clamped coefficient unconditionally; times exactly 1 changes no bit
      if (!(coef >= 1)) mulScalar_(grads, coef);
      return total;
    });
  } finally {
    if (temps.length) native.freeMany(temps);
    for (const g of grads) g.dispose();
  }
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
