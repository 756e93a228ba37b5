"""Golden vectors for lib/tim/eval/precision_recall.ts: improved precision and recall
(Kynkäänniemi et al. 2019) exactly as the ADM evaluator computes them (the official TiM repo's
projects/evaluate/adm_evaluator.py: Evaluator.compute_prec_recall -> ManifoldEstimator with its
defaults nhood_sizes=(3,), clamp_to_percentile=None, and DistanceBlock), ported to numpy.

Run (writes test/fixtures/golden/precision_recall/):
  /work/venvs/diffusers/bin/python scripts/golden/precision_recall.py
(numpy + safetensors only; the venv's torch is not used.)

The port keeps ADM's structure: squared euclidean distances |u|^2 - 2 u.v + |v|^2 clamped at 0,
computed in row x column batches; radii = column k of np.partition(row, arange(k + 1)), i.e. the
(k+1)-th smallest distance of each reference row to its own set *including* its zero self-distance
(the k-th neighbour excluding self); evaluate_pr: a reference point counts for recall when it lies
in at least one sample ball (d <= sample radius), a sample counts for precision when it lies in at
least one reference ball (d <= reference radius); each side uses all of its rows (ADM never
subsamples either set to equal sizes).

DistanceBlock first tries the distances in float16 and falls back to float32 when any is not
finite. The TypeScript port computes float32 (the fallback path) everywhere; `fp16_path` in
case.json records what the float16 attempt (emulated in numpy float16) gives on each case, for
information only. Each case is checked to be robust: float64 distances give the same precision and
recall, and no non-trivial pair lies within 1e-5 (relative) of a ball's boundary, so float32
rounding differences between BLAS libraries cannot flip a point.
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'test', 'fixtures', 'golden', 'precision_recall')


def batch_pairwise_distances(u, v):
    """ADM's _batch_pairwise_distances in numpy, in the dtype of u and v."""
    norm_u = np.sum(np.square(u), 1).reshape(-1, 1)
    norm_v = np.sum(np.square(v), 1).reshape(1, -1)
    return np.maximum(norm_u - 2 * np.matmul(u, v.T) + norm_v, 0.0)


def pairwise(u, v, dtype):
    return batch_pairwise_distances(u.astype(dtype), v.astype(dtype)).astype(dtype)


class ManifoldEstimator:
    def __init__(self, dtype=np.float32, row_batch_size=10000, col_batch_size=10000, nhood_sizes=(3,)):
        self.dtype = dtype
        self.row_batch_size = row_batch_size
        self.col_batch_size = col_batch_size
        self.nhood_sizes = list(nhood_sizes)

    def manifold_radii(self, features):
        n = len(features)
        radii = np.zeros([n, len(self.nhood_sizes)], dtype=self.dtype)
        distance_batch = np.zeros([self.row_batch_size, n], dtype=self.dtype)
        seq = np.arange(max(self.nhood_sizes) + 1, dtype=np.int32)
        for b1 in range(0, n, self.row_batch_size):
            e1 = min(b1 + self.row_batch_size, n)
            for b2 in range(0, n, self.col_batch_size):
                e2 = min(b2 + self.col_batch_size, n)
                distance_batch[0:e1 - b1, b2:e2] = pairwise(features[b1:e1], features[b2:e2], self.dtype)
            radii[b1:e1, :] = np.partition(distance_batch[0:e1 - b1, :], seq, axis=1)[:, self.nhood_sizes]
        return radii

    def evaluate_pr(self, f1, r1, f2, r2):
        s1 = np.zeros([len(f1), r2.shape[1]], dtype=bool)
        s2 = np.zeros([len(f2), r1.shape[1]], dtype=bool)
        for b1 in range(0, len(f1), self.row_batch_size):
            e1 = b1 + self.row_batch_size
            for b2 in range(0, len(f2), self.col_batch_size):
                e2 = b2 + self.col_batch_size
                d = pairwise(f1[b1:e1], f2[b2:e2], self.dtype)[..., None]
                s1[b1:e1] |= np.any(d <= r2[b2:e2], axis=1)
                s2[b2:e2] |= np.any(d <= r1[b1:e1][:, None], axis=0)
        return np.mean(s2.astype(np.float64), axis=0), np.mean(s1.astype(np.float64), axis=0)


def compute_prec_recall(ref, sample, **kw):
    """Evaluator.compute_prec_recall: (precision, recall, ref radii, sample radii)."""
    m = ManifoldEstimator(**kw)
    r1, r2 = m.manifold_radii(ref), m.manifold_radii(sample)
    pr = m.evaluate_pr(ref, r1, sample, r2)
    return float(pr[0][0]), float(pr[1][0]), r1[:, 0], r2[:, 0]


def fp16_path(ref, sample):
    """What DistanceBlock's float16 attempt gives (numpy float16 arithmetic), or None if not finite."""
    for a, b in ((ref, ref), (sample, sample), (ref, sample)):
        if not np.all(np.isfinite(pairwise(a, b, np.float16))):
            return None
    p, r, _, _ = compute_prec_recall(ref.astype(np.float16), sample.astype(np.float16), dtype=np.float16)
    return {'precision': p, 'recall': r}


def boundary_margin(a, ra, b):
    """Smallest |d - r| / r over pairs (row of b, ball of a) that are not trivially inside (d > 1e-3 r)."""
    d = pairwise(b, a, np.float64)
    r = ra.astype(np.float64)[None, :]
    rel = np.abs(d - r) / np.maximum(r, 1e-30)
    rel = np.where(d > 1e-3 * r, rel, np.inf)
    return float(rel.min())


def make_case(name, ref, sample, note):
    ref = ref.astype(np.float32)
    sample = sample.astype(np.float32)
    p, r, r_ref, r_sample = compute_prec_recall(ref, sample)
    # ADM's batching must not matter: small batches that cut both sets mid-way agree
    pb, rb, _, _ = compute_prec_recall(ref, sample, row_batch_size=37, col_batch_size=53)
    assert (p, r) == (pb, rb), (name, p, r, pb, rb)
    p64, r64, _, _ = compute_prec_recall(ref, sample, dtype=np.float64)
    assert (p, r) == (p64, r64), (name, 'float32 vs float64', p, r, p64, r64)
    margin = min(boundary_margin(ref, r_ref, sample), boundary_margin(sample, r_sample, ref))
    assert margin > 1e-5, (name, 'a point lies on a ball boundary', margin)
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    save_file({'reference': ref, 'samples': sample, 'reference_radii': r_ref.astype(np.float32),
               'sample_radii': r_sample.astype(np.float32)}, os.path.join(folder, 'features.safetensors'))
    case = {
        'note': note, 'k': 3, 'n_reference': len(ref), 'n_samples': len(sample), 'dim': ref.shape[1],
        'precision': p, 'recall': r, 'boundary_margin': margin, 'fp16_path': fp16_path(ref, sample),
        'numpy': np.__version__,
    }
    with open(os.path.join(folder, 'case.json'), 'w') as f:
        json.dump(case, f, indent=2)
        f.write('\n')
    print(name, json.dumps(case))


def main():
    rng = np.random.default_rng(2019)
    # Overlapping but different distributions: precision and recall strictly between 0 and 1.
    ref = rng.standard_normal((300, 16))
    sample = 1.3 * rng.standard_normal((200, 16)) + 0.4
    make_case('shifted', ref, sample, 'reference N(0, I); samples 1.3 N(0, I) + 0.4 (wider and shifted)')
    # Mode dropping: samples only from half of a two-cluster reference -> high precision, low recall.
    centers = np.stack([np.full(8, -3.0), np.full(8, 3.0)])
    ref = centers[rng.integers(0, 2, 257)] + rng.standard_normal((257, 8))
    sample = centers[1] + 0.7 * rng.standard_normal((130, 8))
    make_case('mode_drop', ref, sample, 'reference: two clusters at -3 and +3 (8-d); samples: only the +3 cluster, narrower')
    # Exact duplicates in the reference: the radius is the (k+1)-th smallest distance of the row,
    # self and duplicates included (np.partition index k), not the k-th distinct neighbour.
    base = rng.standard_normal((60, 4))
    ref = np.concatenate([base, base[:20], 0.9 * rng.standard_normal((40, 4))])
    sample = rng.standard_normal((90, 4))
    make_case('duplicates', ref, sample, 'reference with 20 points present twice (4-d); samples N(0, I)')


if __name__ == '__main__':
    main()
