/**
 * LR schedules: diffusers' get_scheduler lambdas (copied verbatim into Python below, from
 * diffusers/optimization.py) driven by torch 1.13's LambdaLR, versus getScheduler here, lr by lr
 * over hundreds of steps; hand-computed values at known points; state dict resume; errors.
 */
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { py } from './helpers/python.js';

const { getScheduler, LambdaLR, SGD, AdamW } = torch.optim;
type Name = torch.optim.SchedulerName;

interface Case { name: Name; w?: number; t?: number; cycles?: number; power?: number; lr: number; steps: number }

const CASES: Case[] = [
  { name: 'constant', lr: 1e-4, steps: 50 },
  { name: 'constant_with_warmup', w: 10, lr: 3e-4, steps: 50 },
  { name: 'constant_with_warmup', w: 0, lr: 3e-4, steps: 20 },
  { name: 'linear', w: 10, t: 100, lr: 1e-3, steps: 130 },
  { name: 'linear', w: 0, t: 77, lr: 2e-4, steps: 90 },
  { name: 'cosine', w: 20, t: 200, lr: 1e-4, steps: 230 },
  { name: 'cosine', w: 0, t: 63, lr: 5e-4, steps: 80 },
  { name: 'cosine_with_restarts', w: 10, t: 150, cycles: 3, lr: 1e-4, steps: 170 },
  { name: 'cosine_with_restarts', w: 5, t: 100, lr: 1e-4, steps: 110 },
  { name: 'polynomial', w: 10, t: 100, power: 2, lr: 1e-3, steps: 120 },
  { name: 'polynomial', w: 0, t: 50, lr: 1e-4, steps: 60 },
  { name: 'polynomial', w: 7, t: 90, power: 0.7, lr: 3e-4, steps: 100 },
];

/** diffusers.optimization (get_scheduler and the lambdas), verbatim apart from LambdaLR import. */
const DIFFUSERS = `
from torch.optim.lr_scheduler import LambdaLR
def get_constant_schedule(optimizer, last_epoch=-1):
    return LambdaLR(optimizer, lambda _: 1, last_epoch=last_epoch)
def get_constant_schedule_with_warmup(optimizer, num_warmup_steps, last_epoch=-1):
    def lr_lambda(current_step: int):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1.0, num_warmup_steps))
        return 1.0
    return LambdaLR(optimizer, lr_lambda, last_epoch=last_epoch)
def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    def lr_lambda(current_step: int):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        return max(
            0.0, float(num_training_steps - current_step) / float(max(1, num_training_steps - num_warmup_steps))
        )
    return LambdaLR(optimizer, lr_lambda, last_epoch)
def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5, last_epoch=-1):
    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    return LambdaLR(optimizer, lr_lambda, last_epoch)
def get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=1, last_epoch=-1):
    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))
    return LambdaLR(optimizer, lr_lambda, last_epoch)
def get_polynomial_decay_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, lr_end=1e-7, power=1.0, last_epoch=-1):
    lr_init = optimizer.defaults["lr"]
    if not (lr_init > lr_end):
        raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
    def lr_lambda(current_step: int):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        elif current_step > num_training_steps:
            return lr_end / lr_init  # as LambdaLR multiplies by lr_init
        else:
            lr_range = lr_init - lr_end
            decay_steps = num_training_steps - num_warmup_steps
            pct_remaining = 1 - (current_step - num_warmup_steps) / decay_steps
            decay = lr_range * pct_remaining**power + lr_end
            return decay / lr_init  # as LambdaLR multiplies by lr_init
    return LambdaLR(optimizer, lr_lambda, last_epoch)
FN = {'linear': get_linear_schedule_with_warmup, 'cosine': get_cosine_schedule_with_warmup,
      'cosine_with_restarts': get_cosine_with_hard_restarts_schedule_with_warmup,
      'polynomial': get_polynomial_decay_schedule_with_warmup, 'constant': get_constant_schedule,
      'constant_with_warmup': get_constant_schedule_with_warmup}
def get_scheduler(name, optimizer, num_warmup_steps=None, num_training_steps=None, num_cycles=1, power=1.0, last_epoch=-1):
    f = FN[name]
    if name == 'constant': return f(optimizer, last_epoch=last_epoch)
    if name == 'constant_with_warmup': return f(optimizer, num_warmup_steps=num_warmup_steps, last_epoch=last_epoch)
    if name == 'cosine_with_restarts':
        return f(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, num_cycles=num_cycles, last_epoch=last_epoch)
    if name == 'polynomial':
        return f(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, power=power, last_epoch=last_epoch)
    return f(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, last_epoch=last_epoch)
`;

/** The lr in force for each optimizer step 0..steps-1 (read before each scheduler.step()). */
function jsLrs(c: Case): number[] {
  const p = torch.zeros([1], { requiresGrad: true });
  const opt = new SGD([p], { lr: c.lr });
  const s = getScheduler(c.name, opt, { numWarmupSteps: c.w, numTrainingSteps: c.t, numCycles: c.cycles, power: c.power });
  const lrs: number[] = [];
  for (let k = 0; k < c.steps; k++) {
    lrs.push(opt.paramGroups[0]!.lr);
    expect(s.getLastLr()[0]).toBe(opt.paramGroups[0]!.lr);
    s.step();
  }
  opt.dispose();
  p.dispose();
  return lrs;
}

describe('getScheduler = diffusers get_scheduler on torch LambdaLR', () => {
  it('every schedule, lr at every step, equals Python (cosines within 1 ulp)', () => {
    const ref = py<{ lrs: number[][] }>(`
      ${DIFFUSERS.replace(/\n/g, '\n      ')}
      cases = json.loads(${JSON.stringify(JSON.stringify(CASES))})
      out['lrs'] = []
      for c in cases:
          p = torch.zeros(1, requires_grad=True)
          opt = torch.optim.SGD([p], lr=c['lr'])
          kw = {}
          if 'cycles' in c: kw['num_cycles'] = c['cycles']
          if 'power' in c: kw['power'] = c['power']
          s = get_scheduler(c['name'], opt, num_warmup_steps=c.get('w'), num_training_steps=c.get('t'), **kw)
          lrs = []
          for k in range(c['steps']):
              lrs.append(opt.param_groups[0]['lr'])
              opt.step()
              s.step()
          out['lrs'].append(lrs)
    `);
    CASES.forEach((c, i) => {
      const ours = jsLrs(c), theirs = ref.lrs[i]!;
      expect(ours.length).toBe(theirs.length);
      ours.forEach((x, k) => {
        // Math.cos and libm's cos may differ in the last bit; everything else is exact
        if (c.name.startsWith('cosine')) expect(Math.abs(x - theirs[k]!), `${c.name} step ${k}`).toBeLessThanOrEqual(2 * Number.EPSILON * c.lr);
        else expect(x, `${c.name} step ${k}`).toBe(theirs[k]);
      });
    });
  });

  it('known values: warmup ramps from 0, linear halfway is lr/2, cosine halfway is lr/2, polynomial ends at lrEnd', () => {
    expect(jsLrs({ name: 'constant_with_warmup', w: 4, lr: 1, steps: 6 })).toEqual([0, 0.25, 0.5, 0.75, 1, 1]);
    const lin = jsLrs({ name: 'linear', w: 10, t: 110, lr: 1, steps: 112 });
    expect(lin[0]).toBe(0);
    expect(lin[10]).toBe(1);
    expect(lin[60]).toBe(0.5);
    expect(lin[110]).toBe(0);
    expect(lin[111]).toBe(0);
    const cos = jsLrs({ name: 'cosine', w: 0, t: 100, lr: 2, steps: 101 });
    expect(cos[0]).toBe(2);
    expect(cos[50]).toBeCloseTo(1, 14);
    expect(cos[100]).toBeCloseTo(0, 14);
    const rs = jsLrs({ name: 'cosine_with_restarts', w: 0, t: 100, cycles: 2, lr: 1, steps: 101 });
    expect(rs[50]).toBe(1); // restart
    expect(rs[25]).toBeCloseTo(0.5, 14);
    expect(rs[100]).toBe(0);
    const poly = jsLrs({ name: 'polynomial', w: 0, t: 10, power: 2, lr: 1, steps: 12 });
    expect(poly[5]).toBeCloseTo((1 - 1e-7) * 0.25 + 1e-7, 15);
    expect(poly[10]).toBeCloseTo(1e-7, 20);
    expect(poly[11]).toBeCloseTo(1e-7, 20);
  });

  it('per-group base lrs; the state dict resumes the schedule exactly', () => {
    const a = torch.zeros([1], { requiresGrad: true }), b = torch.zeros([1], { requiresGrad: true });
    const opt = new AdamW([{ params: [a], lr: 1e-3 }, { params: [b], lr: 1e-4 }]);
    const s = getScheduler('cosine', opt, { numWarmupSteps: 5, numTrainingSteps: 40 });
    for (let k = 0; k < 17; k++) s.step();
    const saved = JSON.parse(JSON.stringify(s.stateDict())) as ReturnType<typeof s.stateDict>;
    const lrsAtSave = opt.paramGroups.map((g) => g.lr);
    const expected = [];
    for (let k = 0; k < 10; k++) { s.step(); expected.push(opt.paramGroups.map((g) => g.lr)); }
    expect(expected[0]![0]! / expected[0]![1]!).toBeCloseTo(10, 12);

    const opt2 = new AdamW([{ params: [a], lr: 1e-3 }, { params: [b], lr: 1e-4 }]);
    const s2 = getScheduler('cosine', opt2, { numWarmupSteps: 5, numTrainingSteps: 40 });
    s2.loadStateDict(saved);
    // the lr in force right after loading is the saved epoch's, not lambda(0)'s (0 during warmup)
    expect(opt2.paramGroups.map((g) => g.lr)).toEqual(lrsAtSave);
    expect(lrsAtSave[0]).toBeGreaterThan(0);
    const got = [];
    for (let k = 0; k < 10; k++) { s2.step(); got.push(opt2.paramGroups.map((g) => g.lr)); }
    expect(got).toEqual(expected);
    for (const o of [opt, opt2]) o.dispose();
    a.dispose();
    b.dispose();
  });

  it('LambdaLR with one lambda per group', () => {
    const a = torch.zeros([1], { requiresGrad: true }), b = torch.zeros([1], { requiresGrad: true });
    const opt = new SGD([{ params: [a] }, { params: [b], lr: 2 }], { lr: 1 });
    const s = new LambdaLR(opt, [(k) => k, (k) => 1 / (k + 1)]);
    expect(s.getLastLr()).toEqual([0, 2]);
    s.step();
    s.step();
    expect(s.getLastLr()).toEqual([2, 2 / 3]);
    expect(opt.paramGroups[0]!.initialLr).toBe(1);
    opt.dispose();
    a.dispose();
    b.dispose();
  });

  it('bad names and missing arguments are typed errors, as diffusers raises ValueError', () => {
    const p = torch.zeros([1], { requiresGrad: true });
    const opt = new SGD([p], { lr: 1e-4 });
    expect(() => getScheduler('exponential' as Name, opt)).toThrow(RangeError);
    expect(() => getScheduler('linear', opt, { numTrainingSteps: 10 })).toThrow(/requires numWarmupSteps/);
    expect(() => getScheduler('cosine', opt, { numWarmupSteps: 10 })).toThrow(/requires numTrainingSteps/);
    expect(() => getScheduler('linear', opt, { numWarmupSteps: -1, numTrainingSteps: 10 })).toThrow(RangeError);
    expect(() => getScheduler('polynomial', opt, { numWarmupSteps: 0, numTrainingSteps: 10, lrEnd: 1e-3 })).toThrow(/lr_end/);
    expect(() => new LambdaLR(opt, [() => 1, () => 1])).toThrow(RangeError);
    expect(() => new LambdaLR(opt, 3 as unknown as () => number)).toThrow(TypeError);
    const s = getScheduler('constant', opt);
    expect(() => s.loadStateDict({ lastEpoch: 1.5, baseLrs: [1], stepCount: 1 })).toThrow(TypeError);
    opt.dispose();
    p.dispose();
  });
});
