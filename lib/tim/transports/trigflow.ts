/**
 * TrigFlow (sCM, "Simplifying, Stabilizing & Scaling Continuous-Time Consistency Models"):
 * x_t = cos(t)·x + sin(t)·z, t ∈ [0, π/2], log-normal times t = atan(s) with s = exp(pMean + pStd·n).
 * Official: TrigFlow in tim/schedulers/transports.py.
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { LogNormalTransport, type Interpolant, type LogNormalOptions, type TargetParts } from './transport.js';

/** TrigFlow options; defaults pMean −1.0, pStd 1.6, tMax 1.57 (the official value, just under π/2), tMin 0. */
export type TrigFlowOptions = LogNormalOptions;

export class TrigFlow extends LogNormalTransport {
  readonly name = 'TrigFlow';
  readonly stochasticStep = false;

  constructor(opts: TrigFlowOptions = {}) {
    super('TrigFlow', opts, { sigmaD: 0.5, tMax: 1.57, tMin: 0.0, pMean: -1.0, pStd: 1.6 });
  }

  /** t = atan(s), s log-normal. */
  timesFrom(normals: Tensor): Tensor {
    return torch.scope(() => this.logNormal(normals).atan());
  }

  /** The network sees t itself (cNoise() returns a copy). */
  cNoiseOf(t: Tensor): Tensor {
    return t;
  }

  /** alpha = cos t, sigma = sin t, dAlpha = −sin t, dSigma = cos t. */
  interpolantOf(t: Tensor): Interpolant {
    return torch.scope(() => {
      const sin = t.sin();
      const cos = t.cos();
      return { alpha: cos, sigma: sin, dAlpha: sin.neg(), dSigma: cos.clone() };
    });
  }

  /** F_target = v − tan(t − r)·(x_t + dF/dt), v the (possibly enhanced) velocity. */
  targetOf(a: TargetParts): Tensor {
    return torch.scope(() => {
      const v = a.enhance ? this.enhancedMix(a.vT, a.t, a.fTCond, a.fTUncond) : a.vT;
      return v.sub(a.t.sub(a.r).tan().mul(a.xT.add(a.dFdvdt)));
    });
  }

  /**
   * x_r = cos(t − r)·x_t − sin(t − r)·F. Deterministic: sRatio is ignored, as in the official code
   * (TrigFlow has no stochastic step there).
   */
  stepOf(xT: Tensor, t: Tensor, r: Tensor, F: Tensor): Tensor {
    return torch.scope(() => {
      const d = t.sub(r);
      return d.cos().mul(xT).sub(d.sin().mul(F));
    });
  }
}
