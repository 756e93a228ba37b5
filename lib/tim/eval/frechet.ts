/**
 * Fréchet distance between two Gaussians fitted to feature sets (FID when the features are
 * Inception-v3 pool features):
 *
 *   d² = |μ1 − μ2|² + Tr(Σ1) + Tr(Σ2) − 2 Tr((Σ1^½ Σ2 Σ1^½)^½)
 *
 * All in float64. Σ1^½ Σ2 Σ1^½ is symmetric positive semi-definite and has the eigenvalues of Σ1Σ2,
 * so its square root comes from a symmetric eigendecomposition (aten::linalg_eigh) with tiny
 * negative eigenvalues (rounding) clamped to 0: no complex parts to drop, unlike scipy's sqrtm of
 * the non-symmetric Σ1Σ2 that pytorch-fid uses (same value, tested against it).
 *
 * Statistics are (μ, Σ) with Σ the unbiased covariance (numpy's np.cov default, as pytorch-fid and
 * the ADM evaluation suite). They are stored as safetensors `mu` (D) and `sigma` (D, D).
 */
import { existsSync } from 'node:fs';
import * as torch from '../../torch/index.js';
import { saveSafetensors } from '../../torch/io/index.js';
import type { Tensor } from '../../torch/index.js';
import { TorchError, argError } from '../../torch/errors.js';
import { handleOf } from '../../torch/tensor.js';

/** Mean and covariance of a feature set, float64. */
export interface FeatureStats {
  mu: Tensor;
  sigma: Tensor;
  /** Number of feature vectors they came from (0 when unknown, e.g. loaded from a file without it). */
  n: number;
}

/** Tr(A): the sum of the diagonal. */
export function trace(a: Tensor): number {
  return torch.scope(() => torch.trace(a).item());
}

/** Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix. */
export function eighSymmetric(a: Tensor): { values: Tensor; vectors: Tensor } {
  return torch.eigh(a, 'L');
}

/** (A + Aᵀ) / 2: removes the rounding asymmetry of products that are symmetric in exact arithmetic. */
export function symmetrize(a: Tensor): Tensor {
  return torch.scope(() => a.add(a.t()).mul(0.5));
}

/** Square root of a symmetric positive semi-definite matrix: V diag(√max(λ, 0)) Vᵀ. */
export function sqrtmPsd(a: Tensor): Tensor {
  return torch.scope(() => {
    const { values, vectors } = eighSymmetric(symmetrize(a));
    return vectors.mul(values.clamp(0).sqrt().unsqueeze(0)).matmul(vectors.t());
  });
}

/** Tr((Σ1^½ Σ2 Σ1^½)^½) = Σ √λᵢ over the eigenvalues of Σ1^½ Σ2 Σ1^½ (clamped at 0). */
export function traceSqrtProduct(sigma1: Tensor, sigma2: Tensor): number {
  return torch.scope(() => {
    const r = sqrtmPsd(sigma1);
    const { values } = eighSymmetric(symmetrize(r.matmul(sigma2).matmul(r)));
    return values.clamp(0).sqrt().sum().item();
  });
}

function checkStats(s: FeatureStats, what: string): number {
  const mu = s?.mu, sigma = s?.sigma;
  handleOf(mu, `${what}.mu`);
  handleOf(sigma, `${what}.sigma`);
  const d = mu.shape[0]!;
  if (mu.dim !== 1 || sigma.dim !== 2 || sigma.shape[0] !== d || sigma.shape[1] !== d) {
    throw argError('range', `${what}: mu must be (D) and sigma (D, D), got mu [${mu.shape.join(', ')}] and sigma [${sigma.shape.join(', ')}]`, 'E_SHAPE');
  }
  return d;
}

/** d² = |μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½), in float64. */
export function frechetDistance(a: FeatureStats, b: FeatureStats): number {
  const da = checkStats(a, 'frechetDistance a'), db = checkStats(b, 'frechetDistance b');
  if (da !== db) throw argError('range', `frechetDistance: feature dimensions differ (${da} vs ${db})`, 'E_SHAPE');
  return torch.scope(() => {
    const mu1 = a.mu.double(), mu2 = b.mu.double(), s1 = a.sigma.double(), s2 = b.sigma.double();
    const meanTerm = mu1.sub(mu2).square().sum().item();
    const traces = trace(s1) + trace(s2);
    return meanTerm + traces - 2 * traceSqrtProduct(s1, s2);
  });
}

/**
 * Running sums Σx and ΣxxᵀΣ in float64, so statistics of any number of batches take O(D²) memory.
 * Sums are taken about the first batch's mean (a shift) to keep the covariance exact when the
 * features have a large common offset.
 */
export class FeatureMoments {
  private n = 0;
  private shift: Tensor | null = null;
  private sum: Tensor | null = null;
  private outer: Tensor | null = null;

  get count(): number {
    return this.n;
  }

  /** Adds a batch of features (B, D) (any float dtype). */
  add(features: Tensor): void {
    handleOf(features, 'FeatureMoments.add');
    if (features.dim !== 2) throw argError('range', `FeatureMoments.add: features must be (N, D), got [${features.shape.join(', ')}]`, 'E_SHAPE');
    if (this.shift && features.shape[1] !== this.shift.shape[0]) {
      throw argError('range', `FeatureMoments.add: feature dimension changed from ${this.shift.shape[0]} to ${features.shape[1]}`, 'E_SHAPE');
    }
    if (features.shape[0] === 0) return;
    torch.scope(() => {
      const x = features.detach().double();
      if (!this.shift) this.shift = torch.keep(x.mean(0));
      const c = x.sub(this.shift);
      const s = c.sum(0), o = c.t().matmul(c);
      const prevS = this.sum, prevO = this.outer;
      this.sum = torch.keep(prevS ? prevS.add(s) : s);
      this.outer = torch.keep(prevO ? prevO.add(o) : o);
      prevS?.dispose();
      prevO?.dispose();
    });
    this.n += features.shape[0]!;
  }

  /** μ and the unbiased Σ (needs at least 2 vectors). New tensors, owned by the caller's scope. */
  stats(): FeatureStats {
    if (this.n < 2 || !this.shift || !this.sum || !this.outer) {
      throw argError('range', `FeatureMoments.stats: need at least 2 feature vectors, have ${this.n}`, 'E_VALUE');
    }
    const n = this.n, shift = this.shift, sum = this.sum, outer = this.outer;
    const [mu, sigma] = torch.scope(() => {
      const m = sum.div(n); // mean of the shifted features
      // Σ = (Σcᵢcᵢᵀ − n m mᵀ) / (n − 1), c = x − shift; shifting leaves Σ unchanged.
      const cov = symmetrize(outer.sub(m.outer(m).mul(n)).div(n - 1));
      return [m.add(shift), cov];
    });
    return { mu, sigma, n };
  }

  dispose(): void {
    for (const t of [this.shift, this.sum, this.outer]) t?.dispose();
    this.shift = this.sum = this.outer = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** μ and unbiased Σ of features (N, D), float64. */
export function featureStats(features: Tensor): FeatureStats {
  const m = new FeatureMoments();
  try {
    m.add(features);
    return m.stats();
  } finally {
    m.dispose();
  }
}

/** Writes stats as safetensors `mu`, `sigma` (float64), atomically; `n` and extra metadata in the header. */
export function saveStats(path: string, s: FeatureStats, metadata: Record<string, string> = {}): void {
  checkStats(s, 'saveStats');
  torch.scope(() => saveSafetensors({ mu: s.mu.double().contiguous(), sigma: s.sigma.double().contiguous() }, path, { ...metadata, n: String(s.n) }, 'saveStats'));
}

/**
 * Reads reference statistics: a safetensors file with `mu` (D) and `sigma` (D, D), any float dtype
 * (e.g. converted from pytorch-fid's / ADM's .npz). Returned as float64, with the header's metadata.
 */
export function loadStats(path: string): FeatureStats & { metadata: Record<string, string> } {
  if (typeof path !== 'string' || !existsSync(path)) throw new TorchError(`reference stats: no file at ${String(path)}`, 'E_IO');
  const { tensors, metadata } = torch.loadSafetensors(path);
  const names = Object.keys(tensors);
  const release = (): void => {
    for (const t of Object.values(tensors)) t.dispose();
  };
  const mu = tensors.mu, sigma = tensors.sigma;
  if (!mu || !sigma) {
    release();
    throw new TorchError(`reference stats ${path}: expected tensors 'mu' (D) and 'sigma' (D, D), found ${names.length ? names.map((k) => `'${k}'`).join(', ') : 'none'}`, 'E_FORMAT');
  }
  if (!mu.dtype.startsWith('float') && mu.dtype !== 'bfloat16') {
    release();
    throw new TorchError(`reference stats ${path}: 'mu' must be floating point, got ${mu.dtype}`, 'E_FORMAT');
  }
  const d = mu.shape[0];
  if (mu.dim !== 1 || sigma.dim !== 2 || sigma.shape[0] !== d || sigma.shape[1] !== d) {
    const msg = `reference stats ${path}: 'mu' must be (D) and 'sigma' (D, D), got [${mu.shape.join(', ')}] and [${sigma.shape.join(', ')}]`;
    release();
    throw new TorchError(msg, 'E_SHAPE');
  }
  const out = { mu: mu.double(), sigma: sigma.double(), n: Number(metadata?.n ?? 0) || 0, metadata: metadata ?? {} };
  release();
  return out;
}

/** Disposes both tensors of stats. */
export function disposeStats(s: FeatureStats): void {
  s.mu.dispose();
  s.sigma.dispose();
}
