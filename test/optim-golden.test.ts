/**
 * AdamW parity with the official TiM trainer step (golden/adamw): the recorded gradients of the tiny
 * TiM, clip_grad_norm_(1.0) (inactive: total norm 0.552), AdamW(lr 1e-4, betas (0.9, 0.95),
 * wd 0.01, eps 1e-6) step, then a second step with the same gradients. Every recorded tensor is
 * compared: clipped grads, params, exp_avg, exp_avg_sq after both steps.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { loadGoldenAdamW, maxAbsDiff, type GoldenAdamW } from './helpers/golden_adamw.js';

const TOL = 1e-6;

describe('AdamW golden parity (official TiM step, torch 1.13)', () => {
  let G: GoldenAdamW;
  let params: Tensor[];
  let opt: InstanceType<typeof torch.optim.AdamW>;
  let totalNorm: number;

  beforeAll(() => {
    torch.setNumThreads(1);
    G = loadGoldenAdamW();
    params = G.names.map((n) => G.weights[n]!.clone().requiresGrad_(true));
    // copies: the recorded tensors must stay as recorded whatever clipping does
    params.forEach((p, i) => torch.scope(() => { p.grad = G.outputs[`grad/${G.names[i]}`]!.clone(); }));
    const h = G.config.optimizer_params;
    opt = new torch.optim.AdamW(params, { lr: h.lr, betas: h.betas, eps: h.eps, weightDecay: h.weight_decay });
  });
  afterAll(() => {
    opt.dispose();
    for (const p of params) p.dispose();
    G.dispose();
  });

  /** Largest |ours - golden| over all parameters for one output group. */
  function worst(group: string, ours: (i: number) => Tensor): number {
    let m = 0;
    G.names.forEach((n, i) => {
      const t = ours(i);
      m = Math.max(m, maxAbsDiff(t, G.outputs[`${group}/${n}`]!));
    });
    return m;
  }
  const grads = (i: number): Tensor => params[i]!.grad!;
  const state = (name: string) => (i: number): Tensor => {
    const sd = opt.stateDict();
    const t = sd.tensors[`state.${i}.${name}`]!;
    for (const [k, v] of Object.entries(sd.tensors)) if (v !== t) v.dispose();
    return t;
  };

  it('has 109 parameters and the case says clipping at 1.0 is inactive', () => {
    expect(G.names.length).toBe(109);
    expect(G.config.max_grad_norm).toBe(1.0);
    expect(G.config.clipping_active).toBe(false);
  });

  it('the recorded grads are what we start from', () => {
    expect(torch.scope(() => worst('grad', grads))).toBe(0);
  });

  it('clipGradNorm_(params, 1.0) returns the recorded total norm and leaves the grads as recorded', () => {
    totalNorm = torch.nn.utils.clipGradNorm_(params, G.config.max_grad_norm);
    expect(Math.abs(totalNorm - G.outputs.grad_norm_total!.item())).toBeLessThan(1e-6);
    expect(totalNorm).toBeGreaterThan(0.5);
    expect(totalNorm).toBeLessThan(0.6);
    expect(torch.scope(() => worst('clipped_grad', grads))).toBeLessThan(TOL);
  });

  it('step 1: params, exp_avg, exp_avg_sq within 1e-6', () => {
    opt.step();
    const errs = torch.scope(() => [worst('param_after_step1', (i) => params[i]!), worst('exp_avg_step1', state('exp_avg')), worst('exp_avg_sq_step1', state('exp_avg_sq'))]);
    console.log(`golden adamw step 1 max|diff|: param ${errs[0]!.toExponential(2)}, exp_avg ${errs[1]!.toExponential(2)}, exp_avg_sq ${errs[2]!.toExponential(2)}`);
    for (const e of errs) expect(e).toBeLessThan(TOL);
    // the step moved the parameters by far more than the tolerance: the comparison is not vacuous
    const moved = torch.scope(() => Math.max(...G.names.map((n, i) => maxAbsDiff(params[i]!, G.weights[n]!))));
    expect(moved).toBeGreaterThan(50 * TOL);
  });

  it('step 2 with the same grads: params, exp_avg, exp_avg_sq within 1e-6', () => {
    opt.step();
    const errs = torch.scope(() => [worst('param_after_step2', (i) => params[i]!), worst('exp_avg_step2', state('exp_avg')), worst('exp_avg_sq_step2', state('exp_avg_sq'))]);
    console.log(`golden adamw step 2 max|diff|: param ${errs[0]!.toExponential(2)}, exp_avg ${errs[1]!.toExponential(2)}, exp_avg_sq ${errs[2]!.toExponential(2)}`);
    for (const e of errs) expect(e).toBeLessThan(TOL);
    expect(opt.stateDict().meta.state['0']).toEqual({ step: 2 });
  });
});
