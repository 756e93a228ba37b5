/**
 * Improved precision and recall (lib/tim/eval/precision_recall.ts): golden values from a numpy port
 * of the ADM evaluator's ManifoldEstimator (scripts/golden/precision_recall.py), block sizes that cut
 * the sets mid-way, properties (identical sets, far sets, a collapsed generator, swapping the sides)
 * and typed errors.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { manifoldRadii, precisionRecall } from '../lib/tim/eval/precision_recall.js';
import { codeOf } from './helpers/error_code.js';

const GOLDEN = join(__dirname, 'fixtures', 'golden', 'precision_recall');

interface Case { k: number; n_reference: number; n_samples: number; dim: number; precision: number; recall: number; fp16_path: { precision: number; recall: number } | null }

function loadCase(name: string): { c: Case; t: Record<string, Tensor> } {
  const c = JSON.parse(readFileSync(join(GOLDEN, name, 'case.json'), 'utf8')) as Case;
  const { tensors } = torch.loadSafetensors(join(GOLDEN, name, 'features.safetensors'));
  return { c, t: tensors };
}

describe('precisionRecall: ADM golden values', () => {
  for (const name of ['shifted', 'mode_drop', 'duplicates']) {
    it(`${name}: precision, recall and radii equal the numpy port of ADM's ManifoldEstimator`, () => {
      const { c, t } = loadCase(name);
      try {
        expect(t.reference!.shape).toEqual([c.n_reference, c.dim]);
        expect(t.samples!.shape).toEqual([c.n_samples, c.dim]);
        // default blocks (one block here) and blocks that cut both sets mid-way: same counts
        for (const blockRows of [1000, 37, 1]) {
          const r = precisionRecall(t.reference!, t.samples!, { blockRows });
          expect(r).toEqual({ precision: c.precision, recall: c.recall, k: 3 });
        }
        // ADM's float16 attempt gives the same values on these cases (the port is float32 only)
        expect(c.fp16_path).toEqual({ precision: c.precision, recall: c.recall });
        torch.scope(() => {
          for (const [f, want] of [[t.reference!, t.reference_radii!], [t.samples!, t.sample_radii!]] as const) {
            const got = manifoldRadii(f, { blockRows: 50 });
            expect(got.shape).toEqual([f.shape[0]]);
            // float32 |u|² − 2u·v + |v|² cancels: errors ~ 1e-7 |u|², up to 1.1e-5 of a radius here
            expect(got.sub(want).abs().div(want.abs().add(1e-6)).max().item()).toBeLessThan(5e-5);
          }
        });
      } finally {
        for (const x of Object.values(t)) x.dispose();
      }
    });
  }

  it('the cases are not trivial: values strictly between 0 and 1, mode dropping shows as low recall', () => {
    const shifted = loadCase('shifted'), drop = loadCase('mode_drop');
    for (const x of [...Object.values(shifted.t), ...Object.values(drop.t)]) x.dispose();
    for (const v of [shifted.c.precision, shifted.c.recall, drop.c.precision, drop.c.recall]) {
      expect(v).toBeGreaterThan(0);
      expect(v).toBeLessThan(1);
    }
    expect(drop.c.precision).toBeGreaterThan(0.9);
    expect(drop.c.recall).toBeLessThan(0.5);
  });
});

describe('precisionRecall: properties', () => {
  it('identical sets give precision = recall = 1; a far-away set gives 0 and 0', () => {
    torch.scope(() => {
      torch.manualSeed(1);
      const a = torch.randn([120, 10]);
      expect(precisionRecall(a, a.clone())).toEqual({ precision: 1, recall: 1, k: 3 });
      expect(precisionRecall(a, a.add(1000))).toEqual({ precision: 0, recall: 0, k: 3 });
    });
  });

  it('a collapsed generator (every sample equal to one reference point): precision 1, recall near 0', () => {
    torch.scope(() => {
      torch.manualSeed(2);
      const ref = torch.randn([300, 16]);
      const collapsed = ref.narrow(0, 7, 1).repeat(200, 1);
      const r = precisionRecall(ref, collapsed);
      expect(r.precision).toBe(1);
      // the sample balls have radius ~0: at most the one reference point they sit on is covered
      expect(r.recall).toBeLessThanOrEqual(1 / 300);
      // a slightly spread mode: still all samples on the manifold, still few reference points covered
      const mode = collapsed.add(torch.randn([200, 16]).mul(0.05));
      const m = precisionRecall(ref, mode);
      expect(m.precision).toBe(1);
      expect(m.recall).toBeLessThan(0.05);
    });
  });

  it('swapping reference and samples swaps precision and recall; k changes the radii', () => {
    torch.scope(() => {
      torch.manualSeed(3);
      const a = torch.randn([150, 6]), b = torch.randn([90, 6]).mul(1.5).add(0.3);
      const ab = precisionRecall(a, b), ba = precisionRecall(b, a);
      expect(ba.precision).toBe(ab.recall);
      expect(ba.recall).toBe(ab.precision);
      // a larger neighbourhood means larger balls: neither value can drop
      const k5 = precisionRecall(a, b, { k: 5 });
      expect(k5.k).toBe(5);
      expect(k5.precision).toBeGreaterThanOrEqual(ab.precision);
      expect(k5.recall).toBeGreaterThanOrEqual(ab.recall);
      expect(k5.precision + k5.recall).toBeGreaterThan(ab.precision + ab.recall);
      // float64 features are computed in float32, as ADM does
      expect(precisionRecall(a.double(), b.double())).toEqual(ab);
    });
  });

  it('radii are the k-th neighbour excluding self: points on a line', () => {
    torch.scope(() => {
      // 0, 1, ..., 9 on a line: the 3rd neighbour of 0 is 3 (squared distance 9), of 1 it is 3
      // (0 and 2 at 1, then 3 at 2: squared 4), of any inner point one of the pair at distance 2
      const x = torch.arange(0, 10).float().unsqueeze(1);
      const r = Array.from(manifoldRadii(x).toTypedArray() as Float32Array);
      expect(r).toEqual([9, 4, 4, 4, 4, 4, 4, 4, 4, 9]);
      // k = 1: the nearest neighbour, 1 away for every point
      expect(Array.from(manifoldRadii(x, { k: 1 }).toTypedArray() as Float32Array)).toEqual(new Array(10).fill(1));
    });
  });

  it('leaves no tensor live', () => {
    torch.manualSeed(4);
    const a = torch.randn([64, 5]), b = torch.randn([40, 5]);
    const before = torch.memory().liveTensors;
    precisionRecall(a, b, { blockRows: 16 });
    manifoldRadii(a, { blockRows: 16 }).dispose();
    expect(torch.memory().liveTensors).toBe(before);
    a.dispose();
    b.dispose();
  });
});

describe('precisionRecall: typed errors', () => {
  it('rejects bad shapes, dtypes, values and options', () => {
    torch.scope(() => {
      const a = torch.randn([20, 4]);
      expect(codeOf(() => precisionRecall(a.flatten(), a))).toBe('E_SHAPE');
      expect(codeOf(() => precisionRecall(a, torch.randn([20, 5])))).toBe('E_SHAPE');
      expect(codeOf(() => precisionRecall(a, torch.randn([3, 4])))).toBe('E_SHAPE'); // N <= k
      expect(codeOf(() => precisionRecall(a, torch.randn([5, 4]), { k: 5 }))).toBe('E_SHAPE');
      expect(codeOf(() => precisionRecall(a, a.long()))).toBe('E_DTYPE');
      expect(codeOf(() => precisionRecall(a, a.div(0)))).toBe('E_VALUE');
      expect(codeOf(() => precisionRecall(a, null as unknown as Tensor))).toBe('E_ARG');
      for (const k of [0, -1, 1.5, Number.NaN]) expect(codeOf(() => precisionRecall(a, a, { k }))).toBe('E_RANGE');
      for (const blockRows of [0, 2.5]) expect(codeOf(() => precisionRecall(a, a, { blockRows }))).toBe('E_RANGE');
      expect(codeOf(() => manifoldRadii(torch.randn([3, 4])))).toBe('E_SHAPE');
    });
  });
});
