/**
 * Evaluation end to end (lib/tim/eval, lib/cli/eval.ts): the MNIST classifier trained with
 * tim-torch (once, into a temporary cache reused by every test here), FD / floor / class accuracy
 * on real and noise samples, the `tim eval` CLI, and a custom TorchScript feature extractor with
 * reference statistics (the real-FID path).
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { ensureClassifier, ensureClassifierAsync, classifierAccuracy, mnistTensors, CLASSIFIER_FILE, type ClassifierInfo } from '../lib/tim/eval/classifier.js';
import { evaluateSamples, preprocess, readSamples } from '../lib/tim/eval/evaluate.js';
import { featureStats, saveStats, disposeStats } from '../lib/tim/eval/frechet.js';
import { main } from '../lib/cli/tim.js';

const dir = mkdtempSync(join(tmpdir(), 'eval-'));
const cache = join(dir, 'cache');
let cls: ClassifierInfo;
let trainLog: string[] = [];
let test: { images: Tensor; labels: Tensor };
let train: { images: Tensor; labels: Tensor };

// Async training yields to the event loop, which the test runner's IPC needs during the minute or two.
let rngAfterTraining: number[] = [];

beforeAll(async () => {
  torch.manualSeed(99);
  cls = await ensureClassifierAsync({ cacheDir: cache, onEpoch: (e) => trainLog.push(`epoch ${e.epoch} loss ${e.loss.toFixed(4)} ${e.seconds.toFixed(1)} s`) });
  rngAfterTraining = torch.scope(() => Array.from(torch.rand([4]).toTypedArray() as Float32Array));
  console.log(`classifier: held-out ${(100 * cls.testAccuracy).toFixed(2)}% in ${cls.trainSeconds.toFixed(1)} s\n  ${trainLog.join('\n  ')}`);
  test = torch.keep(mnistTensors('test'));
  train = torch.keep(mnistTensors('train'));
}, 600_000);

afterAll(() => {
  cls?.module.dispose();
  for (const t of [test?.images, test?.labels, train?.images, train?.labels]) t?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Writes a samples file in the demo's format. */
function writeSamples(name: string, images: Tensor, labels: Tensor | null, extra: Record<string, Tensor> = {}): string {
  const p = join(dir, name);
  torch.save({ images, ...(labels ? { labels } : {}), ...extra }, p);
  return p;
}

/** Every k-th training digit: real digits disjoint from the test set the reference comes from. */
function everyKth(t: Tensor, k: number): Tensor {
  return t.slice(0, 0, undefined, k).contiguous();
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '', err = '';
  const code = await main(['eval', ...argv], (s) => (out += s + '\n'), (s) => (err += s + '\n'));
  return { code, out, err };
}

const refCaches = (): string[] => readdirSync(cache).filter((f) => f.startsWith('mnist-test-stats-'));

describe('MNIST classifier', () => {
  it('trains with tim-torch to >= 98% held-out accuracy, is cached and reused', () => {
    expect(cls.trained).toBe(true);
    // training seeds its own stream and leaves the caller's RNG where it was
    torch.manualSeed(99);
    expect(torch.scope(() => Array.from(torch.rand([4]).toTypedArray() as Float32Array))).toEqual(rngAfterTraining);
    expect(cls.testAccuracy).toBeGreaterThanOrEqual(0.98);
    // the stored accuracy is what the module really scores on the 1,756 test digits
    expect(classifierAccuracy(cls.module, test.images, test.labels)).toBe(cls.testAccuracy);
    const again = ensureClassifier({ cacheDir: cache });
    try {
      expect(again.trained).toBe(false);
      expect(again.path).toBe(join(cache, CLASSIFIER_FILE));
      expect(again.testAccuracy).toBe(cls.testAccuracy);
      torch.scope(() => {
        const x = test.images.narrow(0, 0, 16);
        const a = torch.noGrad(() => cls.module.forward(x)), b = torch.noGrad(() => again.module.forward(x));
        expect(a.sub(b).abs().max().item()).toBe(0);
        expect(cls.module.call<Tensor>('features', x).shape).toEqual([16, 128]);
      });
    } finally {
      again.module.dispose();
    }
  });
});

describe('evaluateSamples', () => {
  it('real digits: test digits score the classifier accuracy and FD 0; training digits score FD near the floor', () => {
    const self = evaluateSamples({ images: test.images, labels: test.labels }, { cacheDir: cache, floor: false });
    expect(self.classAccuracy).toBe(cls.testAccuracy);
    // the samples are the reference set: 0 up to the eigensolver's rounding (near-zero eigenvalues of
    // dead ReLU units get square-rooted), far below the floor (~20)
    expect(Math.abs(self.fd)).toBeLessThan(1e-3);
    expect(self.perClass).toHaveLength(10);
    expect(self.perClass.reduce((s, c) => s + c.n, 0)).toBe(1756);
    // identical sets: every sample sits on its own reference point (ADM's k-NN manifolds, k = 3)
    expect(self.precision).toBe(1);
    expect(self.recall).toBe(1);
    expect(self.precisionRecallNote).toBeUndefined();
    expect(readdirSync(cache).filter((f) => f.startsWith('mnist-test-features-'))).toHaveLength(1);

    const images = everyKth(train.images, 8), labels = everyKth(train.labels, 8);
    try {
      const r = evaluateSamples({ images, labels }, { cacheDir: cache });
      expect(r.n).toBe(1000);
      expect(r.classAccuracy!).toBeGreaterThanOrEqual(0.98);
      expect(r.floor!.n).toBe(1000);
      expect(r.floor!.fd).toBeGreaterThan(0);
      // another 1,000 real digits: the same distance as the floor's up to sampling noise
      expect(r.fd / r.floor!.fd).toBeGreaterThan(0.5);
      expect(r.fd / r.floor!.fd).toBeLessThan(2);
      // precision/recall: numbers in [0, 1], and another 1,000 real digits score as the floor's do
      for (const v of [r.precision, r.recall, r.floor!.precision, r.floor!.recall]) {
        expect(typeof v).toBe('number');
        expect(v!).toBeGreaterThan(0.5);
        expect(v!).toBeLessThanOrEqual(1);
      }
      expect(Math.abs(r.precision! - r.floor!.precision!)).toBeLessThan(0.1);
      expect(Math.abs(r.recall! - r.floor!.recall!)).toBeLessThan(0.1);
      console.log(`real train digits (1000): FD ${r.fd.toFixed(3)}, floor ${r.floor!.fd.toFixed(3)}, accuracy ${(100 * r.classAccuracy!).toFixed(2)}%, ` +
        `precision ${r.precision!.toFixed(4)} recall ${r.recall!.toFixed(4)} (floor ${r.floor!.precision!.toFixed(4)} / ${r.floor!.recall!.toFixed(4)})`);
    } finally {
      images.dispose();
      labels.dispose();
    }
  });

  it('noise images: low class accuracy and an FD far above the floor', () => {
    torch.manualSeed(0);
    const images = torch.rand([500, 1, 32, 32]).mul(2).sub(1);
    const labels = torch.randint(0, 10, [500]);
    try {
      const r = evaluateSamples({ images, labels }, { cacheDir: cache });
      expect(r.classAccuracy!).toBeLessThan(0.3);
      expect(r.fd).toBeGreaterThan(20 * r.floor!.fd);
      // noise is off the digits' manifold: (almost) no sample inside a test digit's ball
      expect(r.precision!).toBeLessThan(0.2);
      expect(r.precision!).toBeLessThan(r.floor!.precision! - 0.5);
      console.log(`noise (500): FD ${r.fd.toFixed(1)}, floor ${r.floor!.fd.toFixed(3)}, accuracy ${(100 * r.classAccuracy!).toFixed(1)}%, precision ${r.precision!.toFixed(4)} recall ${r.recall!.toFixed(4)}`);
    } finally {
      images.dispose();
      labels.dispose();
    }
  });

  it('a collapsed generator (one real digit per class, repeated): high precision, low recall', () => {
    torch.scope(() => {
      // the first test digit of each class, 50 times each: perfect fidelity, no diversity
      const want = Array.from(test.labels.toTypedArray() as BigInt64Array, Number);
      const firsts = Array.from({ length: 10 }, (_, c) => want.indexOf(c));
      const idx = torch.tensor(firsts.flatMap((i) => new Array<number>(50).fill(i)), { dtype: 'int64' });
      const r = evaluateSamples({ images: test.images.indexSelect(0, idx), labels: test.labels.indexSelect(0, idx) }, { cacheDir: cache, floor: false });
      expect(r.precision).toBe(1);
      // the samples' balls have radius 0: only the 10 digits they copy are covered
      expect(r.recall!).toBeLessThanOrEqual(10 / 1756);
      console.log(`collapsed (10 digits x 50): FD ${r.fd.toFixed(1)}, precision ${r.precision}, recall ${r.recall!.toFixed(4)}`);
    });
  });

  it('reads samples files strictly: names, dtypes, shapes, label range, NaN', () => {
    torch.scope(() => {
      const img = test.images.narrow(0, 0, 8).contiguous(), lab = test.labels.narrow(0, 0, 8).contiguous();
      const ok = readSamples(writeSamples('ok.safetensors', img.mul(1.5), lab));
      expect(ok.images.max().item()).toBeLessThanOrEqual(1); // clamped as the PNG writer does
      expect(ok.labels!.dtype).toBe('int64');
      expect(() => readSamples(join(dir, 'missing.safetensors'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
      torch.save({ x: img }, join(dir, 'names.safetensors'));
      expect(() => readSamples(join(dir, 'names.safetensors'))).toThrow(/expected a tensor 'images'.*found 'x'/);
      expect(() => readSamples(writeSamples('shape.safetensors', img.flatten(1), lab))).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
      expect(() => readSamples(writeSamples('dtype.safetensors', img.long(), lab))).toThrow(expect.objectContaining({ code: 'E_DTYPE' }));
      expect(() => readSamples(writeSamples('nlab.safetensors', img, lab.narrow(0, 0, 4).contiguous()))).toThrow(/'labels' must be \(N\) = \(8\)/);
      expect(() => readSamples(writeSamples('range.safetensors', img, lab.add(10)))).toThrow(/in \[0, 10\)/);
      expect(() => readSamples(writeSamples('flab.safetensors', img, lab.float()))).toThrow(/'labels' must be integers/);
      expect(() => readSamples(writeSamples('nan.safetensors', img.div(0).mul(0), lab))).toThrow(/NaN/);
    });
  });
});

describe('tim eval', () => {
  it('prints a table and JSON for a samples file', async () => {
    const p = writeSamples('cli.safetensors', everyKth(test.images, 9), everyKth(test.labels, 9));
    const t = await run(['--samples', p, '--cache', cache]);
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/FD\s+\d/);
    expect(t.out).toMatch(/class accuracy\s+\d+\.\d+%/);
    expect(t.out).toMatch(/real-vs-real floor \d/);
    expect(t.out).toMatch(/precision \/ recall [01]\.\d{4} \/ [01]\.\d{4} \(k = 3\); floor [01]\.\d{4} \/ [01]\.\d{4}/);
    const j = await run(['--samples', p, '--cache', cache, '--json', '--no-floor']);
    expect(j.code).toBe(0);
    const r = JSON.parse(j.out);
    expect(r.n).toBe(196);
    expect(r.featureDim).toBe(128);
    expect(r.floor).toBeNull();
    expect(r.classAccuracy).toBeGreaterThan(0.95);
    expect(r.classifier.trained).toBe(false);
    for (const v of [r.precision, r.recall]) expect(v).toBeGreaterThan(0.5);
  });

  it('exits 2 on bad flags and 1 with a clear message on bad files', async () => {
    const p = join(dir, 'cli.safetensors');
    expect((await run([])).code).toBe(2);
    expect((await run(['--samples', p, '--bogus'])).code).toBe(2);
    expect((await run(['--samples', p, '--resize', '299'])).err).toMatch(/prepare images for --features/);
    expect((await run(['--samples', p, '--features', 'f.pt', '--channels', '2'])).code).toBe(2);
    expect((await run(['--samples', p, '--features', 'f.pt', '--range', '0,2'])).code).toBe(2);
    expect((await run(['--samples', p, '--batch-size', '0'])).code).toBe(2);
    expect((await run(['--samples', p, 'extra'])).code).toBe(2);
    const missing = await run(['--samples', join(dir, 'nope.safetensors'), '--cache', cache]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/no file at .*nope\.safetensors/);
    torch.scope(() => torch.save({ samples: torch.zeros([2, 1, 32, 32]) }, join(dir, 'wrong.safetensors')));
    const wrong = await run(['--samples', join(dir, 'wrong.safetensors'), '--cache', cache]);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/expected a tensor 'images'/);
    torch.scope(() => torch.save({ images: torch.zeros([2, 3, 32, 32]), labels: torch.zeros([2], { dtype: 'int64' }) }, join(dir, 'rgb.safetensors')));
    const rgb = await run(['--samples', join(dir, 'rgb.safetensors'), '--cache', cache]);
    expect(rgb.code).toBe(1);
    expect(rgb.err).toMatch(/needs images \(N, 1, 32, 32\)/);
    const badRef = await run(['--samples', p, '--cache', cache, '--ref-stats', join(dir, 'wrong.safetensors')]);
    expect(badRef.code).toBe(1);
    expect(badRef.err).toMatch(/expected tensors 'mu'/);
  });

  it('takes any TorchScript feature extractor (resized, RGB) and reference statistics', async () => {
    // A stand-in for Inception: expects (N, 3, 16, 16) in [0, 1] (the conv fails on anything else)
    // and returns pooled maps (N, 24, 1, 1), as Inception's pool3 does.
    torch.manualSeed(11);
    const ex = torch.jit.createModule('ToyExtractor');
    const w = torch.randn([24, 3, 3, 3]).mul(0.3);
    ex.registerParameter('w', w, false);
    w.dispose();
    ex.define(`
def forward(self, x: Tensor) -> Tensor:
    assert x.size(2) == 16 and x.size(3) == 16
    assert bool(x.min() >= 0.0)
    h = torch.tanh(torch.conv2d(x, self.w, None, [2, 2]))
    return torch.mean(h, [2, 3], True)
`);
    const exPath = join(dir, 'toy.pt');
    ex.save(exPath);

    const samples = writeSamples('toy-samples.safetensors', everyKth(train.images, 16), everyKth(train.labels, 16));
    const flags = ['--samples', samples, '--cache', cache, '--features', exPath, '--resize', '16', '--channels', '3', '--range', '0,1', '--json'];
    const before = refCaches().length;
    const a = await run(flags);
    expect(refCaches().length).toBe(before + 1); // reference statistics under this extractor, cached
    expect(a.code).toBe(0);
    const ra = JSON.parse(a.out);
    expect(ra.featureDim).toBe(24);
    expect(ra.featureExtractor).toBe(exPath);
    expect(ra.classAccuracy).toBeGreaterThanOrEqual(0.98); // still from the MNIST classifier
    expect(ra.fd).toBeGreaterThan(0);
    // precision/recall in the extractor's space, against the test digits' features under it
    for (const v of [ra.precision, ra.recall]) {
      expect(v).toBeGreaterThan(0);
      expect(v).toBeLessThanOrEqual(1);
    }

    // The same reference as a user-supplied stats file: same FD.
    const refPath = join(dir, 'toy-ref.safetensors');
    torch.scope(() => {
      const f = torch.noGrad(() => ex.forward(preprocess(test.images, { resize: 16, channels: 3, range: '0,1' }))).flatten(1);
      const s = featureStats(f);
      saveStats(refPath, s);
      disposeStats(s);
    });
    const b = await run([...flags, '--ref-stats', refPath]);
    expect(b.code).toBe(0);
    const rb = JSON.parse(b.out);
    expect(rb.reference.source).toBe(refPath);
    expect(Math.abs(rb.fd - ra.fd)).toBeLessThan(1e-6 * Math.max(1, ra.fd));
    // statistics only: no reference features, so no precision/recall, and the result says why
    expect(rb.precision).toBeNull();
    expect(rb.recall).toBeNull();
    expect(rb.precisionRecallNote).toMatch(/--ref-stats/);
    expect(refCaches().length).toBe(before + 1);
    ex.dispose();
  });

  it('keeps memory flat across evaluations', async () => {
    const p = join(dir, 'cli.safetensors');
    await run(['--samples', p, '--cache', cache, '--no-floor']);
    const tensors = torch.memory().liveTensors, modules = torch.jit.liveModuleHandles();
    for (let i = 0; i < 2; i++) expect((await run(['--samples', p, '--cache', cache])).code).toBe(0);
    expect(torch.memory().liveTensors).toBe(tensors);
    expect(torch.jit.liveModuleHandles()).toBe(modules);
  });
});
