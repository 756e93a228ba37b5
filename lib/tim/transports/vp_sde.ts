/**
 * Variance-preserving SDE (Song et al., "Score-Based Generative Modeling through SDEs") as a TiM
 * transport, written with β(t) = sqrt(exp(βd·t²/2 + βmin·t) − 1) (the VP noise-to-signal ratio):
 * x_t = (x + β(t)·z) / sqrt(β(t)² + 1), t uniform in [εt, 1], c_noise = (T − 1)·t.
 * Official: VP_SDE in tim/schedulers/transports.py (tMax = 1, tMin = εt).
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { argError } from '../../torch/errors.js';
import {
  BaseTransport, batchSize, finiteParam, positiveParam, tensorArg, timeDraw,
  type Interpolant, type SampleTOptions, type StepOptions, type TargetInputs, type TransportOptions,
} from './transport.js';

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
    const epsilonT = positiveParam(opts.epsilonT ?? 1e-5, 'epsilonT', 'VPSDE');
    if (!(epsilonT < 1)) throw argError('range', `VPSDE: epsilonT must be < 1, got ${epsilonT}`);
    super('VPSDE', opts as VPSDEOptions & Record<string, unknown>, ['betaMin', 'betaD', 'epsilonT', 'T'], {
      sigmaD: 1.0, tMax: 1.0, tMin: epsilonT,
    });
    this.betaMin = finiteParam(opts.betaMin ?? 0.1, 'betaMin', 'VPSDE');
    this.betaD = finiteParam(opts.betaD ?? 19.9, 'betaD', 'VPSDE');
    this.epsilonT = epsilonT;
    this.T = finiteParam(opts.T ?? 1000, 'T', 'VPSDE');
  }

  /** β(t) = sqrt(exp(βd·t²/2 + βmin·t) − 1). */
  beta(t: Tensor): Tensor {
    tensorArg(t, 't', 'VPSDE.beta');
    return torch.scope(() => t.pow(2).mul(0.5 * this.betaD).add(t.mul(this.betaMin)).exp().sub(1).sqrt());
  }

  /** t = 1 + u·(εt − 1), u uniform in [0, 1): t ∈ (εt, 1]. */
  sampleT(n: number, opts?: SampleTOptions): Tensor {
    batchSize(n, 'VPSDE.sampleT');
    return torch.scope(() => timeDraw('uniform', n, opts, 'VPSDE.sampleT').mul(this.epsilonT - 1).add(1));
  }

  /** c_noise = (T − 1)·t. */
  cNoise(t: Tensor): Tensor {
    tensorArg(t, 't', 'VPSDE.cNoise');
    return torch.scope(() => t.mul(this.T - 1));
  }

  /**
   * alpha = 1/sqrt(β² + 1), sigma = β/sqrt(β² + 1), dAlpha = −(βd·t + βmin)/(2·sqrt(β² + 1)),
   * dSigma = (βd·t + βmin)/(2·β·sqrt(β² + 1)) (infinite at t = 0, where β = 0).
   */
  interpolant(t: Tensor): Interpolant {
    tensorArg(t, 't', 'VPSDE.interpolant');
    return torch.scope(() => {
      const b = this.beta(t);
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
  target(inputs: TargetInputs): Tensor {
    return torch.scope(() => {
      const a = this.targetArgs(inputs);
      const zHat = a.enhance ? this.enhancedMix(a.z, a.t, a.fTCond, a.fTUncond) : a.z;
      const bt = this.beta(a.t);
      const br = this.beta(a.r);
      const dBeta = a.t.mul(this.betaD).add(this.betaMin).mul(bt.pow(2).add(1)).div(bt.mul(2));
      const dF = typeof a.dFdvdt === 'number' ? bt.sub(br).mul(a.dFdvdt) : a.dFdvdt.mul(bt.sub(br));
      return zHat.sub(dF.div(dBeta));
    });
  }

  /**
   * x_r = A·x_t + B·F, A = sqrt(β(t)² + 1)/sqrt(β(r)² + 1), B = (β(r) − β(t))/sqrt(β(r)² + 1).
   * Deterministic: sRatio is ignored, as in the official code.
   */
  step(xT: Tensor, t: Tensor | number, r: Tensor | number, F: Tensor, opts?: StepOptions): Tensor {
    return torch.scope(() => {
      const a = this.stepArgs(xT, t, r, F, opts);
      const bt = this.beta(a.t);
      const br = this.beta(a.r);
      const normR = br.pow(2).add(1).sqrt();
      const A = bt.pow(2).add(1).sqrt().div(normR);
      const B = br.sub(bt).div(normR);
      return A.mul(xT).add(B.mul(F));
    });
  }
}
