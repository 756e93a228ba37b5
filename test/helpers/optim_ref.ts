/**
 * Shared pieces of the optimizer tests: a Python torch 1.13 reference run (same initial parameters
 * and gradients, drawn in Python and sent over as exact float32 values) and exact comparisons.
 */
import { expect } from 'vitest';
import { torch } from '../../lib/index.js';
import type { Tensor } from '../../lib/torch/tensor.js';
import { py, type PyTensor } from './python.js';

// [67, 33] has 2211 elements: the vectorised kernel bodies run, not just their scalar tails
export const SHAPES = [[67, 33], [5], [], [2, 3, 2]];

export interface RefRun {
  init: PyTensor[];
  /** grads[step][param] */
  grads: PyTensor[][];
  /** params[step][param] after that step */
  params: PyTensor[][];
  /** optimizer state tensors after the last step, per param: {name: tensor} */
  state: Record<string, PyTensor>[];
}

export interface RefCase {
  /** Python source building `opt` from the list `ps`, e.g. "torch.optim.AdamW(ps, lr=1e-2)" */
  ctor: string;
  steps: number;
  seed: number;
  /** parameter and gradient dtype (default float32) */
  dtype?: 'float32' | 'float64' | 'bfloat16';
}

/**
 * Runs every case in ONE Python process (starting Python and importing torch costs about a second):
 * seeded random parameters, then `steps` steps with fresh random gradients each.
 */
export function pythonRuns(cases: RefCase[], shapes = SHAPES): RefRun[] {
  const body = cases.map((c) => `
    def make_opt(ps):
        return ${c.ctor}
    runs.append(run(make_opt, ${c.steps}, ${c.seed}, torch.${c.dtype ?? 'float32'}))`).join('');
  return py<{ runs: RefRun[] }>(`
    torch.set_num_threads(1)
    shapes = ${JSON.stringify(shapes)}
    def run(make_opt, steps, seed, dtype):
        torch.manual_seed(seed)
        ps = [torch.randn(s).to(dtype).requires_grad_(True) for s in shapes]
        r = {'init': [p.detach().clone() for p in ps], 'grads': [], 'params': []}
        opt = make_opt(ps)
        for k in range(steps):
            gs = [torch.randn(s).to(dtype) for s in shapes]
            for p, g in zip(ps, gs): p.grad = g.clone()
            r['grads'].append(gs)
            opt.step()
            r['params'].append([p.detach().clone() for p in ps])
        r['state'] = [{k: v for k, v in opt.state[p].items() if isinstance(v, torch.Tensor) and k != 'step'} for p in ps]
        return r
    runs = []${body}
    out['runs'] = runs
  `).runs;
}

/** A tensor of Python's dtype holding exactly the values Python had. */
export function fromPy(t: PyTensor, requiresGrad = false): Tensor {
  const flat = (Array.isArray(t.data) ? (t.data as unknown[]).flat(Infinity) : [t.data]) as number[];
  if (t.dtype === 'float64') return torch.tensor(Float64Array.from(flat), { shape: t.shape, requiresGrad });
  const f = torch.tensor(Float32Array.from(flat), { shape: t.shape });
  if (t.dtype === 'float32') return f.requiresGrad_(requiresGrad);
  // bfloat16 values are exact in float32, so the cast back is exact too
  const h = f.to(t.dtype as 'bfloat16').requiresGrad_(requiresGrad);
  f.dispose();
  return h;
}

/** Bitwise equality of a tensor with a Python one (float32 values round-trip exactly through JSON). */
export function expectSameBits(actual: Tensor, expected: PyTensor, what: string): void {
  expect(actual.shape, what).toEqual(expected.shape);
  expect(actual.dtype, what).toBe(expected.dtype);
  const a = Array.from(actual.toTypedArray() as Float32Array);
  const e = (Array.isArray(expected.data) ? (expected.data as unknown[]).flat(Infinity) : [expected.data]) as number[];
  const bad = a.findIndex((x, i) => !Object.is(x, e[i]));
  expect(bad, `${what}: first differing element ${bad}: ${a[bad]} vs ${e[bad]}`).toBe(-1);
}

/** Sets p.grad to a copy of g (the optimizer must not depend on the caller's handle). */
export function setGrad(p: Tensor, g: PyTensor): void {
  const t = fromPy(g);
  p.grad = t;
  t.dispose();
}
