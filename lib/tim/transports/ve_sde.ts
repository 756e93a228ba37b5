/**
 * Variance-exploding SDE (Song et al., "Score-Based Generative Modeling through SDEs") as a TiM
 * transport: x_t = x + t·z with t the noise level, log-uniform t = σmin·(σmax/σmin)^u,
 * c_noise = log(t/2). Official: VE_SDE in tim/schedulers/transports.py (tMax = σmax, tMin = σmin).
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { argError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
import { BaseTransport, type Interpolant, type TargetParts, type TransportOptions } from './transport.js';

export interface VESDEOptions extends TransportOptions {
  /** default 0.02 (also tMin) */
  sigmaMin?: number;
  /** default 100 (also tMax) */
  sigmaMax?: number;
}

export class VESDE extends BaseTransport {
  readonly name = 'VESDE';
  readonly timeDraw = 'uniform' as const;
  readonly stochasticStep = false;
  readonly sigmaMin: number;
  readonly sigmaMax: number;

  constructor(opts: VESDEOptions = {}) {
    const sigmaMin = check.positive(opts.sigmaMin ?? 0.02, 'sigmaMin', 'VESDE');
    const sigmaMax = check.positive(opts.sigmaMax ?? 100, 'sigmaMax', 'VESDE');
    if (!(sigmaMin < sigmaMax)) throw argError('range', `VESDE: sigmaMin (${sigmaMin}) must be < sigmaMax (${sigmaMax})`);
    super('VESDE', opts as VESDEOptions & Record<string, unknown>, ['sigmaMin', 'sigmaMax'], {
      sigmaD: 1.0, tMax: sigmaMax, tMin: sigmaMin,
    });
    this.sigmaMin = sigmaMin;
    this.sigmaMax = sigmaMax;
  }

  /** t = σmin·(σmax/σmin)^u, u uniform in [0, 1). */
  timesFrom(u: Tensor): Tensor {
    return torch.scope(() => {
      // the official float ** tensor makes a 0-d tensor of u's dtype and raises it to u
      const base = torch.scalarTensor(this.sigmaMax / this.sigmaMin, { dtype: u.dtype, device: u.device });
      return base.pow(u).mul(this.sigmaMin);
    });
  }

  /** c_noise = log(t/2). */
  cNoiseOf(t: Tensor): Tensor {
    return torch.scope(() => t.mul(0.5).log());
  }

  /** alpha = 1, sigma = t, dAlpha = 0, dSigma = 1. */
  interpolantOf(t: Tensor): Interpolant {
    return torch.scope(() => ({
      alpha: torch.onesLike(t),
      sigma: t.clone(),
      dAlpha: torch.zerosLike(t),
      dSigma: torch.onesLike(t),
    }));
  }

  /**
   * F_target = (r − t)·dF/dt − ẑ, ẑ the (possibly enhanced) noise; the network predicts −z, so the
   * EMA predictions enter the mix negated (official).
   */
  targetOf(a: TargetParts): Tensor {
    return torch.scope(() => {
      const neg = (f: Tensor | number): Tensor | number => (typeof f === 'number' ? -f : f.neg());
      const zHat = a.enhance ? this.enhancedMix(a.z, a.t, neg(a.fTCond), neg(a.fTUncond)) : a.z;
      return a.r.sub(a.t).mul(a.dFdvdt).sub(zHat);
    });
  }

  /** x_r = x_t + (t − r)·F. Deterministic: sRatio is ignored, as in the official code. */
  stepOf(xT: Tensor, t: Tensor, r: Tensor, F: Tensor): Tensor {
    return torch.scope(() => {
      return xT.add(t.sub(r).mul(F));
    });
  }
}
