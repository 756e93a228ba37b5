/**
 * OT flow matching (linear path, SiT): x_t = (1 − t)·x + t·z, t ∈ [0, 1], log-normal times
 * t = s / (1 + s) with s = exp(pMean + pStd·n). Official: OT_FM in tim/schedulers/transports.py.
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { LogNormalTransport, type Interpolant, type LogNormalOptions, type TargetParts } from './transport.js';

/** OTFM options; defaults pMean 0, pStd 1, tMax 1, tMin 0. */
export type OTFMOptions = LogNormalOptions;

/** t = s / (1 + s): the log-normal "sigma" s mapped onto [0, 1). */
export function otfmTimeFromSigma(s: Tensor): Tensor {
  return torch.scope(() => s.div(s.add(1)));
}

export class OTFM extends LogNormalTransport {
  readonly name = 'OTFM';
  readonly stochasticStep = true;

  constructor(opts: OTFMOptions = {}) {
    super('OTFM', opts, { sigmaD: 1.0, tMax: 1.0, tMin: 0.0, pMean: 0.0, pStd: 1.0 });
  }

  /** t = s / (1 + s), s = exp(pMean + pStd·n). */
  timesFrom(normals: Tensor): Tensor {
    return torch.scope(() => otfmTimeFromSigma(this.logNormal(normals)));
  }

  /** The network sees t itself (cNoise() returns a copy). */
  cNoiseOf(t: Tensor): Tensor {
    return t;
  }

  /** alpha = 1 − t, sigma = t, dAlpha = −1, dSigma = 1. */
  interpolantOf(t: Tensor): Interpolant {
    return torch.scope(() => ({
      alpha: t.rsub(1),
      sigma: t.clone(),
      dAlpha: torch.fullLike(t, -1),
      dSigma: torch.fullLike(t, 1),
    }));
  }

  /** F_target = v − (t − r)·dF/dt, with v the (possibly enhanced) velocity v_t. */
  targetOf(a: TargetParts): Tensor {
    return torch.scope(() => {
      const v = a.enhance ? this.enhancedMix(a.vT, a.t, a.fTCond, a.fTUncond) : a.vT;
      return v.sub(a.t.sub(a.r).mul(a.dFdvdt));
    });
  }

  /**
   * x_r = x_t − (t − r)·F. With sRatio s > 0 (SDE-like step): with ẑ = x_t + (1 − t)·F the implied
   * noise, x_r −= s·ẑ·(t − r) and x_r += sqrt(2·s·t·(t − r))·eps.
   */
  stepOf(xT: Tensor, t: Tensor, r: Tensor, F: Tensor, sRatio: number, eps?: Tensor): Tensor {
    return torch.scope(() => {
      const dt = t.sub(r);
      let xR = xT.sub(dt.mul(F));
      if (sRatio > 0) {
        const zHat = xT.add(t.rsub(1).mul(F));
        const noise = eps ?? torch.randnLike(zHat);
        const noiseScale = t.mul(sRatio * 2).mul(dt).sqrt();
        xR = xR.sub(zHat.mul(sRatio).mul(dt)).add(noiseScale.mul(noise));
      }
      return xR;
    });
  }
}
