/**
 * Variance-preserving SDE (Song et al., "Score-Based Generative Modeling through SDEs") as a TiM
 * transport, written with β(t) = sqrt(exp(βd·t²/2 + βmin·t) − 1) (the VP noise-to-signal ratio):
 * x_t = (x + β(t)·z) / sqrt(β(t)² + 1), t uniform in [εt, 1], c_noise = (T − 1)·t.
 * Official: VP_SDE in tim/schedulers/transports.py (tMax = 1, tMin = εt).
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { argError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
import { BaseTransport, type Interpolant, type TargetParts, type TransportOptions } from './transport.js';

export interface VPSDEOptions extends TransportOptions {
  /** default 0.1 */
  betaMin?: number;
  /** default 19.9 */
  betaD?: number;
  /** smallest training time, also tMin (default 1e-5) */
  epsilonT?: number;
  /** number of discrete DDPM steps the time input is scaled to (default 1000) */
  T?: number;
}

export class VPSDE extends BaseTransport {
  readonly name = 'VPSDE';
  readonly timeDraw = 'uniform' as const;
  readonly stochasticStep = false;
  readonly betaMin: number;
  readonly betaD: number;
  readonly epsilonT: number;
  readonly T: number;

  constructor(opts: VPSDEOptions = {}) {
    const epsilonT = check.positive(opts.epsilonT ?? 1e-5, 'epsilonT', 'VPSDE');
    if (!(epsilonT < 1)) throw argError('range', `VPSDE: epsilonT must be < 1, got ${epsilonT}`);
    super('VPSDE', opts as VPSDEOptions & Record<string, unknown>, ['betaMin', 'betaD', 'epsilonT', 'T'], {
      sigmaD: 1.0, tMax: 1.0, tMin: epsilonT,
    });
    this.betaMin = check.number(opts.betaMin ?? 0.1, 'betaMin', 'VPSDE');
    this.betaD = check.number(opts.betaD ?? 19.9, 'betaD', 'VPSDE');
    this.epsilonT = epsilonT;
    this.T = check.number(opts.T ?? 1000, 'T', 'VPSDE');
  }

  /** β(t) = sqrt(exp(βd·t²/2 + βmin·t) − 1). */
  beta(t: Tensor): Tensor {
    return this.betaOf(check.floatTensor(t, 't', 'VPSDE.beta'));
  }

  /** β(t), unchecked. */
  betaOf(t: Tensor): Tensor {
    return torch.scope(() => t.pow(2).mul(0.5 * this.betaD).add(t.mul(this.betaMin)).exp().sub(1).sqrt());
  }

  /** t = 1 + u·(εt − 1), u uniform in [0, 1): t ∈ (εt, 1]. */
  timesFrom(u: Tensor): Tensor {
    return torch.scope(() => u.mul(this.epsilonT - 1).add(1));
  }

  /** c_noise = (T − 1)·t. */
  cNoiseOf(t: Tensor): Tensor {
    return torch.scope(() => t.mul(this.T - 1));
  }

  /**
   * alpha = 1/sqrt(β² + 1), sigma = β/sqrt(β² + 1), dAlpha = −(βd·t + βmin)/(2·sqrt(β² + 1)),
   * dSigma = (βd·t + βmin)/(2·β·sqrt(β² + 1)) (infinite at t = 0, where β = 0).
   */
  interpolantOf(t: Tensor): Interpolant {
    return torch.scope(() => {
      const b = this.betaOf(t);
      const norm = b.pow(2).add(1).sqrt();
      const rate = t.mul(this.betaD).add(this.betaMin);
      return {
        alpha: norm.reciprocal(),
        sigma: b.div(norm),
        dAlpha: rate.mul(-0.5).div(norm),
        dSigma: rate.mul(0.5).div(b.mul(norm)),
      };
    });
  }

  /** F_target = ẑ − dF/dt·(β(t) − β(r))/β'(t), β'(t) = (βd·t + βmin)(β² + 1)/(2β); ẑ the (possibly enhanced) noise. */
  targetOf(a: TargetParts): Tensor {
    return torch.scope(() => {
      const zHat = a.enhance ? this.enhancedMix(a.z, a.t, a.fTCond, a.fTUncond) : a.z;
      const bt = this.betaOf(a.t);
      const br = this.betaOf(a.r);
      const dBeta = a.t.mul(this.betaD).add(this.betaMin).mul(bt.pow(2).add(1)).div(bt.mul(2));
      const dF = typeof a.dFdvdt === 'number' ? bt.sub(br).mul(a.dFdvdt) : a.dFdvdt.mul(bt.sub(br));
      return zHat.sub(dF.div(dBeta));
    });
  }

  /**
   * x_r = A·x_t + B·F, A = sqrt(β(t)² + 1)/sqrt(β(r)² + 1), B = (β(r) − β(t))/sqrt(β(r)² + 1).
   * Deterministic: sRatio is ignored, as in the official code.
   */
  stepOf(xT: Tensor, t: Tensor, r: Tensor, F: Tensor): Tensor {
    return torch.scope(() => {
      const bt = this.betaOf(t);
      const br = this.betaOf(r);
      const normR = br.pow(2).add(1).sqrt();
      const A = bt.pow(2).add(1).sqrt().div(normR);
      const B = br.sub(bt).div(normR);
      return A.mul(xT).add(B.mul(F));
    });
  }
}
