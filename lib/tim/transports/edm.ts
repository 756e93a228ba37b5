/**
 * EDM ("Elucidating the Design Space of Diffusion-Based Generative Models") as a TiM transport:
 * t is the noise level sigma ∈ (0, ∞), log-normal t = exp(pMean + pStd·n), c_noise = log(t)/4, and the
 * path x_t = (x + t·z) / sqrt(t² + σ_d²) (the EDM input scaling c_in applied to x + t·z).
 * Official: EDM in tim/schedulers/transports.py. The formulas below keep the official ones exactly,
 * including where they use σ_d³ (the target's B_t·dv/dB_t and the step's A_t, B_t).
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { LogNormalTransport, type Interpolant, type LogNormalOptions, type TargetParts } from './transport.js';

/** EDM options; defaults pMean −1.2, pStd 1.2, tMax 80, tMin 0.01. */
export type EDMOptions = LogNormalOptions;

export class EDM extends LogNormalTransport {
  readonly name = 'EDM';
  readonly stochasticStep = false;

  constructor(opts: EDMOptions = {}) {
    super('EDM', opts, { sigmaD: 0.5, tMax: 80.0, tMin: 0.01, pMean: -1.2, pStd: 1.2 });
  }

  /** t = s = exp(pMean + pStd·n). */
  timesFrom(normals: Tensor): Tensor {
    return torch.scope(() => this.logNormal(normals));
  }

  /** c_noise = log(t) / 4. */
  cNoiseOf(t: Tensor): Tensor {
    return torch.scope(() => t.log().div(4));
  }

  /**
   * alpha = 1/sqrt(t² + σ_d²), sigma = t/sqrt(t² + σ_d²), dAlpha = −t/(σ_d² + t²)^1.5,
   * dSigma = σ_d²/(σ_d² + t²)^1.5.
   */
  interpolantOf(t: Tensor): Interpolant {
    const sd2 = this.sigmaD ** 2;
    return torch.scope(() => {
      const t2 = t.pow(2);
      const norm = t2.add(sd2).sqrt();
      const cube = t2.add(sd2).pow(1.5);
      return {
        alpha: norm.reciprocal(),
        sigma: t.div(norm),
        dAlpha: t.neg().div(cube),
        dSigma: cube.reciprocal().mul(sd2),
      };
    });
  }

  /**
   * F_target = D + B·(dα̂·x + dσ̂·z − dF/dt), where D = α̂·x + σ̂·z is the diffusion target
   * (α̂ = t/(σ_d·sqrt(t² + σ_d²)), σ̂ = −σ_d/sqrt(t² + σ_d²); D is the enhanced mix when enhancing)
   * and B = (t − r)(σ_d² + t²)(σ_d³ + t²) / (2t(r − t)(σ_d² + t²) − t(r − t)(σ_d³ + t²) + (σ_d² + t²)(σ_d³ + t²)).
   */
  targetOf({ x, z, t, r, dFdvdt, enhance, fTCond, fTUncond }: TargetParts): Tensor {
    const sd = this.sigmaD;
    return torch.scope(() => {
      const t2 = t.pow(2);
      const sd2t2 = t2.add(sd ** 2);
      const sd3t2 = t2.add(sd ** 3);
      const alphaHat = t.div(sd2t2.sqrt().mul(sd));
      const sigmaHat = sd2t2.sqrt().reciprocal().mul(-sd);
      const dAlphaHat = t2.neg().div(sd2t2.pow(3 / 2).mul(sd)).add(sd2t2.sqrt().mul(sd).reciprocal());
      const dSigmaHat = t.mul(sd).div(sd2t2.pow(3 / 2));
      let diffusionTarget = alphaHat.mul(x).add(sigmaHat.mul(z));
      const rt = r.sub(t);
      const denominator = t.mul(2).mul(rt).mul(sd2t2).sub(t.mul(rt).mul(sd3t2)).add(sd2t2.mul(sd3t2));
      const bDvDb = t.sub(r).mul(sd2t2).mul(sd3t2).div(denominator);
      if (enhance) diffusionTarget = this.enhancedMix(diffusionTarget, t, fTCond, fTUncond);
      return diffusionTarget.add(bDvDb.mul(dAlphaHat.mul(x).add(dSigmaHat.mul(z)).sub(dFdvdt)));
    });
  }

  /**
   * x_r = A·x_t + B·F with k = sqrt(t² + σ_d²)/sqrt(r² + σ_d²)/(σ_d³ + t²), A = (σ_d³ + t·r)·k,
   * B = σ_d²·(t − r)·k. Deterministic: sRatio is ignored, as in the official code.
   */
  stepOf(xT: Tensor, t: Tensor, r: Tensor, F: Tensor): Tensor {
    const sd = this.sigmaD;
    return torch.scope(() => {
      const k = t.pow(2).add(sd ** 2).sqrt().div(r.pow(2).add(sd ** 2).sqrt()).div(t.pow(2).add(sd ** 3));
      const A = t.mul(r).add(sd ** 3).mul(k);
      const B = t.sub(r).mul(sd ** 2).mul(k);
      return A.mul(xT).add(B.mul(F));
    });
  }
}
