/**
 * Fréchet distance math (lib/tim/eval/frechet.ts): closed forms, and random features against a
 * numpy reference that takes pytorch-fid's route (the eigenvalues of the non-symmetric Σ1Σ2, not our
 * symmetric Σ1^½Σ2Σ1^½), run with Debian's python3 (scipy is not installed there, so no sqrtm).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PYTHON } from './helpers/python.js';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import {
  FeatureMoments, featureStats, frechetDistance, loadStats, saveStats, sqrtmPsd, trace, disposeStats, type FeatureStats,
} from '../lib/tim/eval/frechet.js';

const PY = PYTHON;
const dir = mkdtempSync(join(tmpdir(), 'eval-frechet-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// pytorch-fid's calculate_frechet_distance with sqrtm replaced by the eigenvalues of sigma1 @ sigma2
// (Tr sqrtm(A) = Σ √λ(A) for a diagonalizable A with non-negative spectrum).
const PY_REF = `
import sys, json, numpy as np
d = int(sys.argv[3])
a = np.fromfile(sys.argv[1], dtype=np.float64).reshape(-1, d)
b = np.fromfile(sys.argv[2], dtype=np.float64).reshape(-1, d)
mu1, mu2 = a.mean(0), b.mean(0)
s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
ev = np.linalg.eigvals(s1.dot(s2))
tr_covmean = np.sqrt(np.clip(ev.real, 0, None)).sum()
fd = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
print(json.dumps({"fd": float(fd), "mu1": mu1.tolist(), "s1": s1.ravel().tolist()}))
`;

function stats(mu: number[], sigma: number[][]): FeatureStats {
  return { mu: torch.tensor(mu, { dtype: 'float64' }), sigma: torch.tensor(sigma, { dtype: 'float64' }), n: 0 };
}
const diag = (v: number[]): number[][] => v.map((x, i) => v.map((_, j) => (i === j ? x : 0)));

/** Correlated random features: z A + m, so covariances are full, not diagonal. */
function features(n: number, d: number, shift: number): Tensor {
  return torch.scope(() => torch.randn([n, d], { dtype: 'float64' }).matmul(torch.randn([d, d], { dtype: 'float64' }).mul(0.5)).add(shift));
}

describe('Fréchet distance', () => {
  it('closed forms: identical stats, shifted mean, diagonal and scaled covariances', () => {
    torch.scope(() => {
      const a = stats([0.5, -1, 2], [[2, 0.3, 0], [0.3, 1, 0.2], [0, 0.2, 0.5]]);
      expect(Math.abs(frechetDistance(a, a))).toBeLessThan(1e-10);
      // shifted mean, same covariance: |Δμ|²
      const b = { ...a, mu: a.mu.add(torch.tensor([1, 2, -2], { dtype: 'float64' })) };
      expect(frechetDistance(a, b)).toBeCloseTo(9, 10);
      // diagonal covariances: Σ (√a_i − √b_i)²
      const va = [4, 1, 9, 0.25], vb = [1, 1, 16, 1];
      const want = va.reduce((s, x, i) => s + (Math.sqrt(x) - Math.sqrt(vb[i]!)) ** 2, 0);
      expect(frechetDistance(stats([0, 0, 0, 0], diag(va)), stats([0, 0, 0, 0], diag(vb)))).toBeCloseTo(want, 10);
      // Σ2 = c² Σ1 (full): Tr Σ1 (1 − c)²; plus the mean term
      const c = 3;
      const s2 = { mu: a.mu.add(1), sigma: a.sigma.mul(c * c), n: 0 };
      expect(frechetDistance(a, s2)).toBeCloseTo(3 + 3.5 * (1 - c) ** 2, 9);
      // symmetric in its arguments
      expect(frechetDistance(s2, a)).toBeCloseTo(frechetDistance(a, s2), 9);
    });
  });

  it('matches a numpy reference on random correlated features (pytorch-fid route)', () => {
    torch.manualSeed(7);
    const d = 24;
    const [fa, fb] = [features(400, d, 0), features(300, d, 0.3)];
    writeFileSync(join(dir, 'a.bin'), fa.toTypedArray() as Float64Array);
    writeFileSync(join(dir, 'b.bin'), fb.toTypedArray() as Float64Array);
    const ref = JSON.parse(execFileSync(PY, ['-c', PY_REF, join(dir, 'a.bin'), join(dir, 'b.bin'), String(d)], { encoding: 'utf8' })) as { fd: number; mu1: number[]; s1: number[] };
    const sa = featureStats(fa), sb = featureStats(fb);
    expect(sa.n).toBe(400);
    const mu = Array.from(sa.mu.toTypedArray() as Float64Array), s1 = Array.from(sa.sigma.toTypedArray() as Float64Array);
    mu.forEach((v, i) => expect(v).toBeCloseTo(ref.mu1[i]!, 12));
    s1.forEach((v, i) => expect(v).toBeCloseTo(ref.s1[i]!, 11));
    const fd = frechetDistance(sa, sb);
    expect(ref.fd).toBeGreaterThan(1); // the sets really differ
    expect(Math.abs(fd - ref.fd) / ref.fd).toBeLessThan(1e-9);
    for (const t of [fa, fb]) t.dispose();
    disposeStats(sa);
    disposeStats(sb);
  });

  it('streams: moments over batches equal one-shot stats; float32 input works', () => {
    torch.manualSeed(1);
    torch.scope(() => {
      const f = features(500, 8, 100); // a large common offset: the shifted sums keep Σ exact
      const m = new FeatureMoments();
      for (const b of f.split([1, 199, 300])) m.add(b);
      const s = m.stats(), whole = featureStats(f);
      m.dispose();
      expect(s.n).toBe(500);
      expect(s.mu.sub(whole.mu).abs().max().item()).toBeLessThan(1e-10);
      expect(s.sigma.sub(whole.sigma).abs().max().item()).toBeLessThan(1e-9);
      const f32 = featureStats(f.float());
      expect(f32.mu.dtype).toBe('float64');
      expect(() => new FeatureMoments().stats()).toThrow(/at least 2/);
      const bad = new FeatureMoments();
      bad.add(torch.zeros([2, 3]));
      expect(() => bad.add(torch.zeros([2, 4]))).toThrow(/dimension changed/);
      bad.dispose();
    });
  });

  it('sqrtmPsd squares back; rank-deficient covariances (N < D) give a finite, non-negative FD', () => {
    torch.manualSeed(3);
    torch.scope(() => {
      const a = features(50, 6, 0);
      const s = a.t().matmul(a);
      const r = sqrtmPsd(s);
      expect(r.matmul(r).sub(s).abs().max().item() / s.abs().max().item()).toBeLessThan(1e-10);
      expect(trace(torch.eye(5, { dtype: 'float64' }))).toBe(5);
      const low1 = featureStats(features(5, 20, 0)), low2 = featureStats(features(5, 20, 0));
      const fd = frechetDistance(low1, low2);
      expect(Number.isFinite(fd)).toBe(true);
      expect(fd).toBeGreaterThan(0);
      expect(() => frechetDistance(low1, stats([0, 0], diag([1, 1])))).toThrow(/dimensions differ/);
    });
  });

  it('stats files: round trip, clear errors for missing file, names and shapes', () => {
    torch.scope(() => {
      const s = stats([1, 2], [[1, 0.5], [0.5, 2]]);
      const p = join(dir, 'ref.safetensors');
      saveStats(p, { ...s, n: 42 }, { source: 'test' });
      const back = loadStats(p);
      expect(back.n).toBe(42);
      expect(back.metadata.source).toBe('test');
      expect(frechetDistance(s, back)).toBeCloseTo(0, 12);
      // float32 stats from elsewhere are accepted and promoted
      torch.save({ mu: torch.tensor([1, 2], { dtype: 'float32' }), sigma: torch.tensor([[1, 0.5], [0.5, 2]], { dtype: 'float32' }) }, join(dir, 'f32.safetensors'));
      expect(loadStats(join(dir, 'f32.safetensors')).sigma.dtype).toBe('float64');
      torch.save({ mean: torch.zeros([2]) }, join(dir, 'names.safetensors'));
      expect(() => loadStats(join(dir, 'names.safetensors'))).toThrow(/expected tensors 'mu'.*found 'mean'/);
      torch.save({ mu: torch.zeros([3]), sigma: torch.zeros([2, 2]) }, join(dir, 'shape.safetensors'));
      torch.save({ mu: torch.zeros([2], { dtype: 'int64' }), sigma: torch.zeros([2, 2]) }, join(dir, 'int.safetensors'));
      expect(() => loadStats(join(dir, 'int.safetensors'))).toThrow(/floating point/);
      expect(() => loadStats(join(dir, 'shape.safetensors'))).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
      expect(() => loadStats(join(dir, 'nope.safetensors'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
    });
  });

  it('keeps memory flat', () => {
    torch.manualSeed(5);
    const before = torch.memory().liveTensors;
    for (let i = 0; i < 3; i++) {
      const f = features(100, 16, i);
      const s = featureStats(f);
      frechetDistance(s, s);
      disposeStats(s);
      f.dispose();
    }
    expect(torch.memory().liveTensors).toBe(before);
  });
});
