/**
 * Exact resume: 10 steps uninterrupted == 5 steps, saveState (safetensors + JSON meta), a new
 * optimizer (and scheduler) over copies of the parameters, loadState, 5 more steps — bit for bit,
 * for AdamW with a warmup-cosine schedule, Adam with weight decay and SGD with Nesterov momentum.
 * Also the in-memory stateDict round trip and the errors of a mismatched state.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';

const { AdamW, Adam, SGD, getScheduler } = torch.optim;
type Opt = torch.optim.Optimizer<torch.optim.BaseHyper>;
const dir = mkdtempSync(join(tmpdir(), 'tim-optim-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SHAPES = [[40, 30], [30], [], [3, 7, 5]];

function makeParams(): Tensor[] {
  torch.manualSeed(1);
  return SHAPES.map((s) => torch.randn(s, { requiresGrad: true }));
}
function copies(ps: Tensor[]): Tensor[] {
  return ps.map((p) => torch.scope(() => p.detach().clone().requiresGrad_(true)));
}
/** Deterministic gradients for step k (also depend on the parameters, like a real loss). */
function setGrads(ps: Tensor[], k: number): void {
  torch.manualSeed(100 + k);
  torch.scope(() => {
    for (const p of ps) p.grad = torch.randnLike(p).add(p.detach().mul(0.1));
  });
}
function sameBits(a: Tensor[], b: Tensor[]): boolean {
  return a.every((x, i) => {
    const u = x.toTypedArray() as Float32Array, v = b[i]!.toTypedArray() as Float32Array;
    return u.every((e, j) => Object.is(e, v[j]));
  });
}

interface Setup {
  name: string;
  make(ps: Tensor[]): Opt;
  schedule: boolean;
}
const SETUPS: Setup[] = [
  { name: 'AdamW + cosine warmup', make: (ps) => new AdamW([{ params: ps.slice(0, 2) }, { params: ps.slice(2), weightDecay: 0 }], { lr: 1e-2, betas: [0.9, 0.95], eps: 1e-6 }), schedule: true },
  { name: 'Adam (weight decay)', make: (ps) => new Adam(ps, { lr: 1e-2, weightDecay: 0.1 }), schedule: false },
  { name: 'SGD (Nesterov, weight decay)', make: (ps) => new SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 }), schedule: true },
];

describe('resume is bit-identical', () => {
  torch.setNumThreads(1);
  for (const setup of SETUPS) {
    it(`${setup.name}: 10 steps == 5 + saveState/loadState + 5`, () => {
      const sched = (o: Opt) => (setup.schedule ? getScheduler('cosine', o, { numWarmupSteps: 3, numTrainingSteps: 10 }) : null);
      const train = (ps: Tensor[], o: Opt, s: ReturnType<typeof sched>, from: number, to: number): void => {
        for (let k = from; k < to; k++) {
          setGrads(ps, k);
          torch.nn.utils.clipGradNorm_(ps, 5);
          o.step();
          s?.step();
          o.zeroGrad();
        }
      };
      // uninterrupted
      const a = makeParams();
      const oa = setup.make(a);
      const sa = sched(oa);
      train(a, oa, sa, 0, 10);

      // interrupted: 5 steps, save params + optimizer (+ scheduler JSON in the same file)
      const b = makeParams();
      const ob = setup.make(b);
      const sb = sched(ob);
      train(b, ob, sb, 0, 5);
      const file = join(dir, `${setup.name.replace(/\W+/g, '_')}.safetensors`);
      ob.saveState(file, sb ? { scheduler: JSON.stringify(sb.stateDict()) } : {});
      const c = copies(b);
      ob.dispose();
      for (const p of b) p.dispose();

      // a new process would start here: fresh parameters (copies), optimizer, scheduler
      const oc = setup.make(c);
      const sc = sched(oc);
      const extra = oc.loadState(file);
      if (sc) sc.loadStateDict(JSON.parse(extra.scheduler!));
      else expect(extra).toEqual({});
      expect(oc.stateDict().meta.paramGroups).toEqual(((): unknown => {
        const m = oa.stateDict().meta.paramGroups; // hyperparameters match except the scheduled lr
        return m.map((g) => ({ ...g, lr: expect.any(Number) }));
      })());
      train(c, oc, sc, 5, 10);

      expect(sameBits(a, c)).toBe(true);
      const sdA = oa.stateDict(), sdC = oc.stateDict();
      expect(Object.keys(sdC.tensors).sort()).toEqual(Object.keys(sdA.tensors).sort());
      expect(sameBits(Object.values(sdA.tensors), Object.keys(sdA.tensors).map((k) => sdC.tensors[k]!))).toBe(true);
      expect(sdC.meta).toEqual(sdA.meta);
      // and the run did move the parameters: the comparison is not vacuous
      const start = makeParams();
      expect(sameBits(a, start)).toBe(false);
      for (const t of [...a, ...c, ...start, ...Object.values(sdA.tensors), ...Object.values(sdC.tensors)]) t.dispose();
      oa.dispose();
      oc.dispose();
    });
  }

  it('in-memory stateDict/loadStateDict: the loaded optimizer owns copies', () => {
    const ps = makeParams();
    const o1 = new AdamW(ps, { lr: 1e-3 });
    setGrads(ps, 0);
    o1.step();
    const sd = o1.stateDict();
    const o2 = new AdamW(ps, { lr: 5 });
    o2.loadStateDict(sd);
    expect(o2.paramGroups[0]!.lr).toBe(1e-3); // hyperparameters come from the state dict, as torch
    for (const t of Object.values(sd.tensors)) t.dispose();
    o1.dispose(); // frees o1's state; o2's copies must survive
    const sd2 = o2.stateDict();
    expect(sd2.tensors['state.0.exp_avg']!.shape).toEqual([40, 30]);
    expect(sd2.meta.state['3']).toEqual({ step: 1 });
    for (const t of Object.values(sd2.tensors)) t.dispose();
    o2.dispose();
    for (const p of ps) p.dispose();
  });

  it('mismatched state dicts and files are rejected with typed errors, leaving the optimizer as it was', () => {
    const ps = makeParams();
    const o = new AdamW(ps, { lr: 1e-3 });
    setGrads(ps, 0);
    o.step();
    const sd = o.stateDict();
    const other = new SGD(ps, { lr: 1 });
    expect(() => other.loadStateDict(sd)).toThrow(/for AdamW/);
    const twoGroups = new AdamW([{ params: ps.slice(0, 1) }, { params: ps.slice(1) }]);
    expect(() => twoGroups.loadStateDict(sd)).toThrow(expect.objectContaining({ code: 'E_FORMAT' }));
    const q = SHAPES.map((s, i) => torch.zeros(i === 0 ? [30, 40] : s, { requiresGrad: true }));
    const wrongShape = new AdamW(q);
    expect(() => wrongShape.loadStateDict(sd)).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(() => wrongShape.loadStateDict({ tensors: {}, meta: { ...sd.meta, version: 2 as 1 } })).toThrow(TypeError);
    const missing = { tensors: { 'state.0.exp_avg': sd.tensors['state.0.exp_avg']! }, meta: sd.meta };
    const fresh = new AdamW(ps);
    expect(() => fresh.loadStateDict(missing)).toThrow(/needs exp_avg and exp_avg_sq/);
    expect(fresh.stateDict().meta.state).toEqual({}); // nothing half-loaded
    // files: not written by saveState, missing, bad JSON
    const plain = join(dir, 'plain.safetensors');
    torch.save({ x: ps[0]! }, plain);
    expect(() => fresh.loadState(plain)).toThrow(expect.objectContaining({ code: 'E_FORMAT' }));
    torch.save({ x: ps[0]! }, plain, { 'tim-torch.optim': '{oops' });
    expect(() => fresh.loadState(plain)).toThrow(/not valid JSON/);
    const junk = join(dir, 'junk.safetensors');
    writeFileSync(junk, 'not a safetensors file at all');
    expect(() => fresh.loadState(junk)).toThrow();
    expect(() => fresh.loadState(join(dir, 'absent.safetensors'))).toThrow();
    expect(() => o.saveState(join(dir, 'x.safetensors'), { 'tim-torch.optim': '' })).toThrow(TypeError);
    for (const t of Object.values(sd.tensors)) t.dispose();
    for (const x of [o, other, twoGroups, wrongShape, fresh]) x.dispose();
    for (const t of [...ps, ...q]) t.dispose();
  });
});
