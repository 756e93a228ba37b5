/**
 * Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
 * for Assessing Generative Models") exactly as the ADM evaluator computes them (the official TiM
 * repo's projects/evaluate/adm_evaluator.py: Evaluator.compute_prec_recall → ManifoldEstimator with
 * its defaults nhood_sizes=[3], clamp_to_percentile=None, and DistanceBlock):
 *
 * - distances are squared euclidean, |u|² − 2 u·v + |v|² clamped at 0 (DistanceBlock's formula);
 * - each point's radius is the (k+1)-th smallest distance to its own set, the zero self-distance
 *   included (ADM: column k of np.partition(row, arange(k+1))), i.e. the k-th neighbour excluding
 *   itself; duplicates count as neighbours, as in ADM;
 * - precision = share of samples inside at least one reference ball (d ≤ reference radius),
 *   recall = share of reference points inside at least one sample ball (d ≤ sample radius);
 * - each side uses all of its rows: ADM never subsamples to equal counts (its reference batch has
 *   10,000 images, the sample batch usually 50,000).
 *
 * One difference: ADM's DistanceBlock first computes the distances in float16 (a GPU speed trick)
 * and falls back to float32 when any is not finite; here they are always float32 (the fallback).
 * On the golden cases both give the same values (test/fixtures/golden/precision_recall/).
 *
 * Memory: distances are computed in blocks of `blockRows` rows against the whole other set, so the
 * peak is blockRows × N floats (1,000 × 10,000 = 40 MB), never N × N.
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/index.js';
import { argError } from '../../torch/errors.js';
import { isFloating } from '../../torch/dtype.js';

export interface PrecisionRecall {
  /** Share of samples on the reference manifold (fidelity). */
  precision: number;
  /** Share of reference points on the samples' manifold (diversity / coverage). */
  recall: number;
  /** Neighbourhood size of the radii. */
  k: number;
}

export interface PrecisionRecallOptions {
  /** Neighbourhood size (ADM: 3). */
  k?: number;
  /** Rows per distance block (memory: blockRows × N float32). Default 1,000. */
  blockRows?: number;
}

/** Checks one feature matrix: a finite floating (N, D) tensor with N > k. */
function checkFeatures(t: unknown, name: string, k: number): Tensor {
  if (!(t instanceof torch.Tensor)) throw argError('type', `precisionRecall: ${name} must be a tensor (N, D), got ${t === null ? 'null' : typeof t}`);
  if (t.dim !== 2 || t.shape[1] === 0) throw argError('range', `precisionRecall: ${name} must be (N, D) features, got [${t.shape.join(', ')}]`, 'E_SHAPE');
  if (!isFloating(t.dtype)) throw argError('type', `precisionRecall: ${name} must be floating point, got ${t.dtype}`, 'E_DTYPE');
  // k-th neighbour excluding self needs k + 1 rows (ADM's np.partition fails likewise)
  if (t.shape[0]! <= k) throw argError('range', `precisionRecall: ${name} has ${t.shape[0]} rows; k = ${k} neighbours need at least ${k + 1}`, 'E_SHAPE');
  if (!torch.scope(() => t.isfinite().allTrue())) throw argError('range', `precisionRecall: ${name} has NaN or infinite values`, 'E_VALUE');
  return t;
}

function checkOptions(o: PrecisionRecallOptions): { k: number; blockRows: number } {
  const k = o.k ?? 3;
  const blockRows = o.blockRows ?? 1000;
  if (!Number.isInteger(k) || k < 1) throw argError('range', `precisionRecall: k must be a positive integer, got ${String(k)}`);
  if (!Number.isInteger(blockRows) || blockRows < 1) throw argError('range', `precisionRecall: blockRows must be a positive integer, got ${String(blockRows)}`);
  return { k, blockRows };
}

/** Squared distances (B, N) of rows `a` (B, D) to `b` (N, D), given their squared norms; ADM's formula. */
function sqDistances(a: Tensor, aNorm: Tensor, b: Tensor, bNorm: Tensor): Tensor {
  return aNorm.unsqueeze(1).sub(a.mm(b.t()).mul(2)).add(bNorm.unsqueeze(0)).clamp(0);
}

/** Radii (N) float32: each row's (k+1)-th smallest squared distance to its own set (self included). */
function radiiOf(f: Tensor, norm: Tensor, k: number, blockRows: number): Tensor {
  const n = f.shape[0]!;
  const parts: Tensor[] = [];
  for (let s = 0; s < n; s += blockRows) {
    parts.push(torch.scope(() => {
      const len = Math.min(blockRows, n - s);
      const d = sqDistances(f.narrow(0, s, len), norm.narrow(0, s, len), f, norm);
      // topk smallest k+1, sorted ascending: column k is np.partition's index k
      return d.topk(k + 1, 1, false, true).values.select(1, k).contiguous();
    }));
  }
  return torch.scope(() => {
    const r = torch.cat(parts, 0);
    for (const p of parts) p.dispose();
    return r;
  });
}

/**
 * The k-NN radii of a feature set (N) float32, as ADM's ManifoldEstimator.manifold_radii: the
 * (k+1)-th smallest squared euclidean distance of each row to the set, its own zero included.
 */
export function manifoldRadii(features: Tensor, o: PrecisionRecallOptions = {}): Tensor {
  const { k, blockRows } = checkOptions(o);
  checkFeatures(features, 'features', k);
  return torch.noGrad(() => torch.scope(() => {
    const f = features.float().contiguous();
    return radiiOf(f, f.square().sum(1), k, blockRows);
  }));
}

/**
 * Precision and recall of `samples` (N, D) against `reference` (M, D), ADM's way (see the top of
 * this file). Both are used in full, in float32; no tensor stays live afterwards.
 */
export function precisionRecall(reference: Tensor, samples: Tensor, o: PrecisionRecallOptions = {}): PrecisionRecall {
  const { k, blockRows } = checkOptions(o);
  checkFeatures(reference, 'reference', k);
  checkFeatures(samples, 'samples', k);
  if (reference.shape[1] !== samples.shape[1]) {
    throw argError('range', `precisionRecall: reference features are ${reference.shape[1]}-d, samples ${samples.shape[1]}-d`, 'E_SHAPE');
  }
  return torch.noGrad(() => torch.scope(() => {
    const ref = reference.float().contiguous(), smp = samples.float().contiguous();
    const refNorm = ref.square().sum(1), smpNorm = smp.square().sum(1);
    const refRadii = radiiOf(ref, refNorm, k, blockRows);
    const smpRadii = radiiOf(smp, smpNorm, k, blockRows);
    const m = ref.shape[0]!;
    // ADM's evaluate_pr: one distance block (reference rows × all samples) gives both statuses
    let samplesIn = torch.zeros([smp.shape[0]!], { dtype: 'bool' });
    let refInCount = 0;
    for (let s = 0; s < m; s += blockRows) {
      const len = Math.min(blockRows, m - s);
      const next = torch.scope(() => {
        const d = sqDistances(ref.narrow(0, s, len), refNorm.narrow(0, s, len), smp, smpNorm);
        // recall: reference row i inside some sample ball j (d[i, j] <= r_sample[j])
        const refIn = d.le(smpRadii.unsqueeze(0)).sum(1).gt(0).sum().item();
        // precision: sample j inside some reference ball i of this block (d[i, j] <= r_ref[i])
        const inBlock = d.le(refRadii.narrow(0, s, len).unsqueeze(1)).sum(0).gt(0);
        return { refIn, samplesIn: samplesIn.logicalOr(inBlock) };
      });
      samplesIn.dispose();
      samplesIn = next.samplesIn;
      refInCount += next.refIn;
    }
    const precision = samplesIn.sum().item() / smp.shape[0]!;
    samplesIn.dispose();
    return { precision, recall: refInCount / m, k };
  }));
}
