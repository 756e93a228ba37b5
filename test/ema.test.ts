/**
 * EMA: against the golden case computed by the official update_ema (test/fixtures/golden/ema: decay 0.9999
 * and 0.5, then a second update after the model parameters are doubled), over a record of tensors and
 * over a TorchScript module (deep copy usable for forward, parameters frozen, buffers copied); the
 * caller's tensors and model untouched; errors; no leaked tensors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import type { ScriptModule } from '../lib/torch/jit.js';
import { EMA, cloneScriptModule } from '../lib/tim/train/ema.js';
import { get, loadGolden, maxAbsDiff, type GoldenCase } from './helpers/golden.js';
import { expectError, scoped } from './helpers/tensor-expect.js';

/** The README's suggested tolerance for the EMA (float32, absolute). */
const TOL = 1e-6;
const NAMES = ['a.weight', 'a.bias', 'b'];
const DECAYS = [0.9999, 0.5];

let g: GoldenCase;
const errors: Record<string, number> = {};

beforeAll(() => {
  g = loadGolden('ema');
});
afterAll(() => {
  g.dispose();
  console.log('EMA vs golden, max |diff|:', JSON.stringify(errors));
});

function group(prefix: string, rec: Record<string, Tensor>): Record<string, Tensor> {
  return Object.fromEntries(NAMES.map((n) => [n, get(rec, `${prefix}/${n}`)]));
}

function check(label: string, got: Record<string, Tensor>, wantPrefix: string): void {
  for (const n of NAMES) {
    const d = maxAbsDiff(get(got, n), get(g.outputs, `${wantPrefix}/${n}`));
    errors[`${label} ${wantPrefix}/${n}`] = d;
    expect(d, `${label} ${wantPrefix}/${n}`).toBeLessThanOrEqual(TOL);
  }
}

/** A module with the golden case's parameter names: submodule a (weight (3,4), bias (3)) and b (5), plus a buffer. */
function makeModel(values: Record<string, Tensor>, bufferName = 'scale'): ScriptModule {
  const a = torch.jit.createModule('EmaA');
  a.registerParameter('weight', get(values, 'a.weight').clone());
  a.registerParameter('bias', get(values, 'a.bias').clone());
  a.define(`
def forward(self, x: Tensor) -> Tensor:
    return torch.matmul(x, self.weight.t()) + self.bias
`);
  const m = torch.jit.createModule('EmaNet');
  m.registerModule('a', a);
  m.registerParameter('b', get(values, 'b').clone());
  m.registerBuffer(bufferName, torch.tensor([2.0]));
  m.define(`
def forward(self, x: Tensor) -> Tensor:
    return self.a.forward(x) * self.${bufferName} + self.b.sum()
`);
  a.dispose();
  return m;
}

function doubled(rec: Record<string, Tensor>): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, v.mul(2)]));
}

describe('EMA vs the official update_ema (golden)', () => {
  it('the case is the one described: decays 0.9999 and 0.5, a second update with the model doubled', () => {
    expect(g.meta.semantics).toContain('ema.mul_(decay).add_(param, alpha=1-decay)');
    expect(g.meta.second_update).toContain('multiplied by 2');
  });

  for (const decay of DECAYS) {
    it(`record EMA, decay ${decay}: one update, then a second with the model doubled`, scoped(() => {
      const model = group('model', g.inputs);
      const ema = new EMA(group('ema', g.inputs), { decay });
      ema.update(model);
      check('record', ema.stateDict(), `ema_after_decay${decay}`);
      ema.update(doubled(model));
      check('record', ema.stateDict(), `ema_after_2_updates_decay${decay}`);
      expect(ema.updates).toBe(2);
      ema.dispose();
    }));

    it(`module EMA, decay ${decay}: same values, and the model is not touched`, scoped(() => {
      const model = makeModel(group('model', g.inputs));
      const ema = new EMA(model, { decay });
      // start the EMA from the case's initial EMA values (not from the model, as a trainer would)
      ema.module.loadStateDict({ ...group('ema', g.inputs), scale: torch.tensor([2.0]) });
      ema.update(model);
      check('module', ema.stateDict(), `ema_after_decay${decay}`);
      const twice = makeModel(doubled(group('model', g.inputs)));
      ema.update(twice);
      check('module', ema.stateDict(), `ema_after_2_updates_decay${decay}`);
      const sd = model.stateDict();
      for (const n of NAMES) expect(maxAbsDiff(get(sd, n), get(g.inputs, `model/${n}`)), `model ${n}`).toBe(0);
      ema.dispose();
      model.dispose();
      twice.dispose();
    }));
  }

  it('a per-update decay overrides the constructor decay', scoped(() => {
    const ema = new EMA(group('ema', g.inputs), { decay: 0.9999 });
    ema.update(group('model', g.inputs), { decay: 0.5 });
    check('override', ema.stateDict(), 'ema_after_decay0.5');
    ema.dispose();
  }));
});

describe('EMA over a module', () => {
  it('ema.module is a separate deep copy: same forward at first, frozen parameters, own storage', scoped(() => {
    const model = makeModel(group('model', g.inputs));
    const ema = new EMA(model, { decay: 0.9 });
    const x = torch.randn([2, 4]);
    expect(ema.module.forward(x).toArray()).toEqual(model.forward(x).toArray());
    expect(ema.module.isSameModule(model)).toBe(false);
    for (const p of ema.module.parameters()) expect(p.requiresGrad).toBe(false);
    for (const p of model.parameters()) expect(p.requiresGrad).toBe(true);
    // changing the model does not change the EMA until update()
    torch.noGrad(() => {
      for (const p of model.parameters()) p.add_(1);
    });
    expect(ema.module.forward(x).toArray()).not.toEqual(model.forward(x).toArray());
    const before = ema.stateDict();
    const snapshot = Object.fromEntries(Object.entries(before).map(([k, v]) => [k, v.clone()]));
    ema.update(model);
    const after = ema.stateDict();
    const now = model.stateDict();
    for (const n of NAMES) {
      const want = get(snapshot, n).mul(0.9).add(get(now, n), 1 - 0.9);
      expect(maxAbsDiff(get(after, n), want), n).toBe(0);
    }
    ema.dispose();
    model.dispose();
  }));

  it('buffers are copied on update (copyBuffers, default) or left as at the copy (copyBuffers: false, official)', scoped(() => {
    const model = makeModel(group('model', g.inputs));
    const copying = new EMA(model);
    const official = new EMA(model, { copyBuffers: false });
    torch.noGrad(() => get(model.stateDict(), 'scale').fill_(3));
    copying.update(model);
    official.update(model);
    expect(get(copying.stateDict(), 'scale').toArray()).toEqual([3]);
    expect(get(official.stateDict(), 'scale').toArray()).toEqual([2]);
    copying.dispose();
    official.dispose();
    model.dispose();
  }));

  it('copyTo writes the EMA weights into another module', scoped(() => {
    const model = makeModel(group('model', g.inputs));
    const ema = new EMA(model, { decay: 0.5 });
    ema.update(makeModel(group('ema', g.inputs)));
    const target = makeModel(group('model', g.inputs));
    ema.copyTo(target);
    const x = torch.randn([3, 4]);
    expect(target.forward(x).toArray()).toEqual(ema.module.forward(x).toArray());
    ema.dispose();
    model.dispose();
    target.dispose();
  }));

  it('an object holding the module as `module` (a model wrapper) is unwrapped, like the official .module', scoped(() => {
    const model = makeModel(group('model', g.inputs));
    const ema = new EMA({ module: model }, { decay: 0.5 });
    expect(ema.module.isSameModule(model)).toBe(false);
    const start = get(ema.stateDict(), 'b').clone();
    torch.noGrad(() => get(model.stateDict(), 'b').add_(2));
    ema.update({ module: model });
    expect(maxAbsDiff(get(ema.stateDict(), 'b'), start.add(1))).toBeLessThan(1e-6);
    ema.dispose();
    model.dispose();
  }));

  it('cloneScriptModule keeps the training mode and the methods', scoped(() => {
    const model = makeModel(group('model', g.inputs));
    model.eval();
    const c = cloneScriptModule(model);
    expect(c.isTraining).toBe(false);
    expect(c.methods()).toEqual(model.methods());
    c.dispose();
    model.dispose();
  }));
});

describe('EMA: inputs and errors', () => {
  it('a record EMA copies its start values and never writes to the caller\'s tensors', scoped(() => {
    const start = { w: torch.tensor([1, 2, 3], { dtype: 'float32' }) };
    const src = { w: torch.tensor([3, 2, 1], { dtype: 'float32' }) };
    const ema = new EMA(start, { decay: 0.5 });
    ema.update(src);
    expect(get(ema.stateDict(), 'w').toArray()).toEqual([2, 2, 2]);
    expect(start.w.toArray()).toEqual([1, 2, 3]);
    expect(src.w.toArray()).toEqual([3, 2, 1]);
    ema.dispose();
  }));

  it('the EMA\'s tensors outlive the scope it was made in, and dispose() frees them', () => {
    const before = torch.memory().liveTensors;
    const ema = torch.scope(() => new EMA({ w: torch.ones([4]) }, { decay: 0.5 }));
    expect(torch.memory().liveTensors).toBe(before + 1);
    torch.scope(() => {
      ema.update({ w: torch.zeros([4]) });
      expect(get(ema.stateDict(), 'w').toArray()).toEqual([0.5, 0.5, 0.5, 0.5]);
    });
    ema.dispose();
    expect(torch.memory().liveTensors).toBe(before);
    expectError(() => ema.stateDict(), torch.TorchError, 'E_DISPOSED');
  });

  it('bad arguments are typed errors and leave the EMA unchanged', scoped(() => {
    expectError(() => new EMA({ w: torch.ones([2]) }, { decay: 1.5 }), RangeError, 'E_RANGE');
    expectError(() => new EMA({ w: torch.ones([2]) }, { decay: '0.9' as never }), TypeError, 'E_ARG');
    expectError(() => new EMA({ w: torch.ones([2]) }, { beta: 0.9 } as never), TypeError, 'E_OPTION');
    expectError(() => new EMA({ w: [1, 2] } as never), TypeError, 'E_ARG');
    const ema = new EMA({ w: torch.ones([2]), v: torch.ones([3]) }, { decay: 0.5 });
    expectError(() => ema.update({ w: torch.zeros([2]) }), RangeError, 'E_KEYS');
    expectError(() => ema.update({ w: torch.zeros([2]), v: torch.zeros([3]), u: torch.zeros([1]) }), RangeError, 'E_KEYS');
    expectError(() => ema.update({ w: torch.zeros([2]), v: torch.zeros([4]) }), RangeError, 'E_SHAPE');
    expectError(() => ema.update({ w: torch.zeros([2]), v: torch.zeros([3]) }, { decay: -1 }), RangeError, 'E_RANGE');
    expectError(() => ema.module, TypeError, 'E_NO_MODULE');
    const model = makeModel(group('model', g.inputs));
    expectError(() => ema.update(model), TypeError, 'E_ARG');
    // nothing was applied by the failed updates
    expect(get(ema.stateDict(), 'w').toArray()).toEqual([1, 1]);
    expect(ema.updates).toBe(0);
    const mod = new EMA(model);
    expectError(() => mod.update({ w: torch.zeros([2]) }), TypeError, 'E_ARG');
    const other = torch.jit.createModule('EmaOther');
    other.registerParameter('w', torch.zeros([2]));
    expectError(() => mod.update(other), RangeError, 'E_KEYS');
    // same parameters, another buffer: refused before any parameter moves
    const renamed = makeModel(group('ema', g.inputs), 'gain');
    const start = get(mod.stateDict(), 'b').clone();
    expectError(() => mod.update(renamed), RangeError, 'E_KEYS');
    expect(maxAbsDiff(get(mod.stateDict(), 'b'), start)).toBe(0);
    expect(mod.updates).toBe(0);
    renamed.dispose();
    ema.dispose();
    mod.dispose();
    model.dispose();
    other.dispose();
  }));
});
