/**
 * Learning-rate schedules: torch's LambdaLR and the lambdas of HuggingFace diffusers'
 * `get_scheduler` (diffusers/optimization.py), which the official TiM trainer uses
 * (`get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps, num_training_steps)`, stepped once
 * after every optimizer.step()). The lambdas are copied operation for operation, in float64 as
 * Python computes them; powers go through libm as in Python, cosines use Math.cos (libm's cos is not
 * reachable through ATen, whose cos is SLEEF's), which can differ from Python's in the last bit.
 */
import { argError } from '../errors.js';
import type { Optimizer, BaseHyper } from './optimizer.js';
import { libmPow } from './pow.js';

/** lr multiplier as a function of the scheduler's step count (torch's last_epoch). */
export type LrLambda = (step: number) => number;

// ---- diffusers' lambdas ----------------------------------------------------------------------------

/** constant: 1 */
export function constantLambda(): LrLambda {
  return () => 1;
}

/** linear warmup from 0 over `w` steps: step / max(1, w) while step < w. */
function warmup(step: number, w: number): number {
  return step / Math.max(1, w);
}

/** constant_with_warmup: step/max(1, w) for step < w, then 1. */
export function constantWithWarmupLambda(numWarmupSteps: number): LrLambda {
  return (s) => (s < numWarmupSteps ? warmup(s, numWarmupSteps) : 1);
}

/** linear: warmup, then max(0, (T - step) / max(1, T - w)). */
export function linearLambda(numWarmupSteps: number, numTrainingSteps: number): LrLambda {
  return (s) => (s < numWarmupSteps ? warmup(s, numWarmupSteps) : Math.max(0, (numTrainingSteps - s) / Math.max(1, numTrainingSteps - numWarmupSteps)));
}

/** progress through the decay phase: (step - w) / max(1, T - w) */
function progress(s: number, w: number, t: number): number {
  return (s - w) / Math.max(1, t - w);
}

/** cosine: warmup, then max(0, 0.5 (1 + cos(pi * numCycles * 2 * progress))); numCycles 0.5 = half a cosine to 0. */
export function cosineLambda(numWarmupSteps: number, numTrainingSteps: number, numCycles = 0.5): LrLambda {
  return (s) => {
    if (s < numWarmupSteps) return warmup(s, numWarmupSteps);
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress(s, numWarmupSteps, numTrainingSteps))));
  };
}

/** cosine_with_restarts: warmup, then 0 once progress >= 1, else max(0, 0.5 (1 + cos(pi * ((numCycles * progress) % 1)))). */
export function cosineWithRestartsLambda(numWarmupSteps: number, numTrainingSteps: number, numCycles = 1): LrLambda {
  return (s) => {
    if (s < numWarmupSteps) return warmup(s, numWarmupSteps);
    const p = progress(s, numWarmupSteps, numTrainingSteps);
    if (p >= 1) return 0;
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * pyMod(numCycles * p, 1))));
  };
}

/** polynomial: warmup, then ((lrInit - lrEnd) * (1 - (step - w)/(T - w))^power + lrEnd) / lrInit; lrEnd/lrInit past T. */
export function polynomialLambda(numWarmupSteps: number, numTrainingSteps: number, lrInit: number, lrEnd = 1e-7, power = 1): LrLambda {
  if (!(lrInit > lrEnd)) throw argError('range', `polynomial schedule: lr_end (${lrEnd}) must be smaller than initial lr (${lrInit})`);
  return (s) => {
    if (s < numWarmupSteps) return warmup(s, numWarmupSteps);
    if (s > numTrainingSteps) return lrEnd / lrInit;
    const lrRange = lrInit - lrEnd;
    const decaySteps = numTrainingSteps - numWarmupSteps;
    const pctRemaining = 1 - (s - numWarmupSteps) / decaySteps;
    // Python's float ** (libm pow): V8's differs in the last bit for some inputs
    const decay = lrRange * libmPow(pctRemaining, power) + lrEnd;
    return decay / lrInit;
  };
}

/** Python's float %: the result takes the divisor's sign. */
function pyMod(a: number, b: number): number {
  const r = a % b;
  return r !== 0 && r < 0 !== b < 0 ? r + b : r;
}

// ---- LambdaLR ---------------------------------------------------------------------------------------

export interface LrSchedulerState {
  lastEpoch: number;
  baseLrs: number[];
  stepCount: number;
}

/**
 * torch.optim.lr_scheduler.LambdaLR: lr_i = baseLr_i * lambda_i(lastEpoch). Construction records
 * each group's `initialLr` (when absent) and takes the first step, so right after it
 * lastEpoch = 0 and lr = baseLr * lambda(0) (0 during warmup), exactly as torch.
 */
export class LambdaLR {
  lastEpoch: number;
  readonly baseLrs: number[];
  private stepCount = 0;
  private readonly lambdas: LrLambda[];
  private lastLr: number[] = [];

  constructor(readonly optimizer: Optimizer<BaseHyper>, lrLambda: LrLambda | LrLambda[], lastEpoch = -1) {
    const groups = optimizer.paramGroups;
    if (Array.isArray(lrLambda)) {
      if (lrLambda.length !== groups.length) throw argError('range', `LambdaLR: expected ${groups.length} lr lambdas, got ${lrLambda.length}`);
      this.lambdas = lrLambda.slice();
    } else {
      if (typeof lrLambda !== 'function') throw argError('type', 'LambdaLR: lrLambda must be a function or one function per group');
      this.lambdas = groups.map(() => lrLambda);
    }
    if (lastEpoch === -1) {
      for (const g of groups) g.initialLr ??= g.lr;
    } else {
      groups.forEach((g, i) => {
        if (g.initialLr === undefined) throw argError('type', `LambdaLR: param group ${i} has no initialLr, required when resuming (lastEpoch != -1)`);
      });
    }
    this.baseLrs = groups.map((g) => g.initialLr!);
    this.lastEpoch = lastEpoch;
    this.step();
  }

  /** lr of each group at the current lastEpoch. */
  getLr(): number[] {
    return this.baseLrs.map((b, i) => b * this.lambdas[i]!(this.lastEpoch));
  }

  /** The lrs set by the latest step(). */
  getLastLr(): number[] {
    return this.lastLr.slice();
  }

  /** Advances one step (call after optimizer.step()) and writes the new lrs into the groups. */
  step(): void {
    this.stepCount++;
    this.lastEpoch++;
    this.apply();
  }

  private apply(): void {
    const lrs = this.getLr();
    this.optimizer.paramGroups.forEach((g, i) => {
      g.lr = lrs[i]!;
    });
    this.lastLr = lrs;
  }

  stateDict(): LrSchedulerState {
    return { lastEpoch: this.lastEpoch, baseLrs: this.baseLrs.slice(), stepCount: this.stepCount };
  }

  /**
   * Restores lastEpoch and base lrs, and (unlike torch, which waits for the next step()) re-applies
   * the lr for that epoch, so the next optimizer.step() uses the same lr as the uninterrupted run.
   */
  loadStateDict(s: LrSchedulerState): void {
    if (!s || !Number.isInteger(s.lastEpoch) || !Array.isArray(s.baseLrs) || s.baseLrs.length !== this.baseLrs.length) {
      throw argError('type', 'LambdaLR.loadStateDict: expected {lastEpoch, baseLrs (one per group), stepCount}', 'E_FORMAT');
    }
    this.lastEpoch = s.lastEpoch;
    this.baseLrs.splice(0, this.baseLrs.length, ...s.baseLrs);
    this.stepCount = s.stepCount ?? this.stepCount;
    this.apply();
  }
}

// ---- get_scheduler -------------------------------------------------------------------------------

export type SchedulerName = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine' | 'cosine_with_restarts' | 'polynomial';
export const SCHEDULER_NAMES: readonly SchedulerName[] = ['constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_restarts', 'polynomial'];

export interface GetSchedulerOptions {
  numWarmupSteps?: number;
  numTrainingSteps?: number;
  /** cosine_with_restarts only (default 1), as diffusers' get_scheduler; 'cosine' keeps its 0.5. */
  numCycles?: number;
  /** polynomial only (default 1). */
  power?: number;
  /** polynomial only (default 1e-7; diffusers' get_scheduler does not expose it). */
  lrEnd?: number;
  lastEpoch?: number;
}

/** The lambda that diffusers' get_scheduler(name, ...) builds. `lrInit` is optimizer.defaults.lr (polynomial). */
export function schedulerLambda(name: SchedulerName, o: GetSchedulerOptions, lrInit: number): LrLambda {
  if (!SCHEDULER_NAMES.includes(name)) throw argError('range', `getScheduler: unknown schedule '${String(name)}' (expected one of ${SCHEDULER_NAMES.join(', ')})`);
  if (name === 'constant') return constantLambda();
  const w = o.numWarmupSteps;
  if (w === undefined) throw argError('type', `${name} requires numWarmupSteps`);
  checkSteps(w, 'numWarmupSteps');
  if (name === 'constant_with_warmup') return constantWithWarmupLambda(w);
  const t = o.numTrainingSteps;
  if (t === undefined) throw argError('type', `${name} requires numTrainingSteps`);
  checkSteps(t, 'numTrainingSteps');
  switch (name) {
    case 'linear': return linearLambda(w, t);
    case 'cosine': return cosineLambda(w, t);
    case 'cosine_with_restarts': return cosineWithRestartsLambda(w, t, o.numCycles ?? 1);
    default:
      // polynomial divides by T - w (as diffusers): equal values would give NaN there
      if (t <= w) throw argError('range', `polynomial: numTrainingSteps (${t}) must exceed numWarmupSteps (${w})`);
      return polynomialLambda(w, t, lrInit, o.lrEnd ?? 1e-7, o.power ?? 1);
  }
}

function checkSteps(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0) throw argError('range', `${what} must be a non-negative integer, got ${n}`);
}

/** diffusers.optimization.get_scheduler: a LambdaLR over `optimizer` with the named schedule. */
export function getScheduler(name: SchedulerName, optimizer: Optimizer<BaseHyper>, o: GetSchedulerOptions = {}): LambdaLR {
  return new LambdaLR(optimizer, schedulerLambda(name, o, optimizer.defaults.lr), o.lastEpoch ?? -1);
}
