/**
 * torch.nn.utils.clipGradNorm_ against Python's torch 1.13 clip_grad_norm_ on the same gradients
 * (the golden TiM gradients, exchanged as safetensors files): clipping active (maxNorm 0.1 and
 * 0.3), the infinity norm, then AdamW steps after active clipping, all bit for bit.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { ADAMW_DIR, PY_SAFETENSORS, loadGoldenAdamW } from './helpers/golden_adamw.js';
import { py } from './helpers/python.js';

const { clipGradNorm_, clipCoefficient } = torch.nn.utils;
const dir = mkdtempSync(join(tmpdir(), 'tim-clip-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function bitsEqual(a: Tensor, b: Tensor): boolean {
  const x = a.toTypedArray() as Float32Array, y = b.toTypedArray() as Float32Array;
  return x.length === y.length && x.every((v, i) => Object.is(v, y[i]));
}

describe('clipGradNorm_ vs torch.nn.utils.clip_grad_norm_', () => {
  torch.setNumThreads(1);

  it('active clipping on the golden TiM gradients, then two AdamW steps: identical to Python', () => {
    const G = loadGoldenAdamW();
    const out = join(dir, 'py.safetensors');
    const ref = py<{ norms: Record<string, number> }>(`
      ${PY_SAFETENSORS.replace(/\n/g, '\n      ')}
      torch.set_num_threads(1)
      names = ${JSON.stringify(G.names)}
      W = st_read(${JSON.stringify(join(ADAMW_DIR, 'weights.safetensors'))})
      O = st_read(${JSON.stringify(join(ADAMW_DIR, 'outputs.safetensors'))})
      res, norms = {}, {}
      for mx in (0.1, 0.3):
          ps = [W[n].clone().requires_grad_(True) for n in names]
          for p, n in zip(ps, names): p.grad = O['grad/' + n].clone()
          norms[str(mx)] = torch.nn.utils.clip_grad_norm_(ps, mx).item()
          for p, n in zip(ps, names): res[f'clip{mx}/{n}'] = p.grad
          if mx == 0.1:
              opt = torch.optim.AdamW(ps, lr=1e-4, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.01)
              for k in (1, 2):
                  opt.step()
                  for p, n in zip(ps, names): res[f'step{k}/{n}'] = p.detach().clone()
      ps = [W[n].clone().requires_grad_(True) for n in names]
      for p, n in zip(ps, names): p.grad = O['grad/' + n].clone()
      norms['inf'] = torch.nn.utils.clip_grad_norm_(ps, 0.01, norm_type=float('inf')).item()
      for p, n in zip(ps, names): res[f'clipinf/{n}'] = p.grad
      st_write(${JSON.stringify(out)}, res)
      out['norms'] = norms
    `);
    const R = torch.load(out, { lazy: false });
    const fresh = (): Tensor[] => G.names.map((n) => torch.scope(() => {
      const p = G.weights[n]!.clone().requiresGrad_(true);
      p.grad = G.outputs[`grad/${n}`]!.clone();
      return p;
    }));
    const checkGrads = (ps: Tensor[], prefix: string): void => {
      G.names.forEach((n, i) => torch.scope(() => expect(bitsEqual(ps[i]!.grad!, R[`${prefix}/${n}`]!), `${prefix}/${n}`).toBe(true)));
    };
    try {
      for (const mx of [0.1, 0.3]) {
        const ps = fresh();
        const total = clipGradNorm_(ps, mx);
        expect(total).toBe(ref.norms[String(mx)]);
        // clipping really is active: every gradient shrank by the same coefficient < 1
        const coef = clipCoefficient(total, mx);
        expect(coef).toBeLessThan(mx === 0.1 ? 0.2 : 0.6);
        checkGrads(ps, `clip${mx}`);
        if (mx === 0.1) {
          const opt = new torch.optim.AdamW(ps, { lr: 1e-4, betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.01 });
          for (const k of [1, 2]) {
            opt.step();
            G.names.forEach((n, i) => expect(bitsEqual(ps[i]!, R[`step${k}/${n}`]!), `step${k}/${n}`).toBe(true));
          }
          opt.dispose();
        }
        for (const p of ps) p.dispose();
      }
      const ps = fresh();
      expect(clipGradNorm_(ps, 0.01, { normType: Infinity })).toBe(ref.norms.inf);
      checkGrads(ps, 'clipinf');
      for (const p of ps) p.dispose();
    } finally {
      for (const t of Object.values(R)) t.dispose();
      G.dispose();
    }
  });

  it('inactive clipping leaves gradients bit-identical; a single tensor is accepted', () => {
    const p = torch.tensor([3, 4], { dtype: 'float32', requiresGrad: true });
    const g = torch.tensor([3, 4], { dtype: 'float32' });
    p.grad = g;
    expect(clipGradNorm_(p, 10)).toBe(5);
    expect(g.toArray()).toEqual([3, 4]);
    expect(clipGradNorm_([p], 1)).toBe(5);
    expect(g.toArray()).toEqual([3 * clipCoefficient(5, 1), 4 * clipCoefficient(5, 1)].map(Math.fround));
    p.dispose();
    g.dispose();
  });

  it('no gradients: returns 0 and changes nothing; frees every temporary', () => {
    const p = torch.zeros([3], { requiresGrad: true });
    const before = torch.memory().liveTensors;
    expect(clipGradNorm_([p], 1)).toBe(0);
    const q = torch.ones([2, 2], { requiresGrad: true });
    const g = torch.ones([2, 2]);
    q.grad = g;
    const live = torch.memory().liveTensors;
    clipGradNorm_([p, q], 0.5);
    clipGradNorm_([p, q], 0.5, { normType: Infinity });
    expect(torch.memory().liveTensors).toBe(live);
    expect(live).toBe(before + 2);
    for (const t of [p, q, g]) t.dispose();
  });

  it('non-finite norms: NaN scales like torch; errorIfNonfinite throws E_VALUE; bad args are typed errors', () => {
    const p = torch.zeros([2], { requiresGrad: true });
    const g = torch.tensor([Number.NaN, 1], { dtype: 'float32' });
    p.grad = g;
    expect(() => clipGradNorm_(p, 1, { errorIfNonfinite: true })).toThrow(expect.objectContaining({ code: 'E_VALUE' }));
    expect(Number.isNaN(clipGradNorm_(p, 1))).toBe(true);
    expect((g.toArray() as number[]).every(Number.isNaN)).toBe(true); // torch multiplies by the NaN coefficient too
    expect(() => clipGradNorm_('x' as unknown as Tensor, 1)).toThrow(TypeError);
    expect(() => clipGradNorm_(p, Number.NaN)).toThrow(TypeError);
    expect(() => clipGradNorm_([p], '1' as unknown as number)).toThrow(TypeError);
    p.dispose();
    g.dispose();
  });
});
