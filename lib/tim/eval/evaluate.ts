/**
 * The evaluation driver behind `tim eval`: for class-conditional samples (a samples file, an .npz
 * sample batch or an image folder: sources.ts) it reports
 *
 * - FD: the Fréchet distance between the samples' features and the real MNIST test digits'
 *   (or given reference statistics), on the features of the project's own classifier or of any
 *   TorchScript feature extractor (Inception-v3 for real FID);
 * - the real-vs-real floor: the same FD for real training digits (as many as the samples, at most
 *   8,000) against the reference, i.e. what a perfect generator of N samples would score;
 * - class accuracy: how often the classifier recognizes the requested label, overall and per class;
 * - precision and recall (diversity): Kynkäänniemi et al.'s k-NN manifolds in the same feature
 *   space, as the ADM suite computes them (precision_recall.ts), against the reference's features
 *   (the MNIST test digits, or --ref images; not available with reference statistics only).
 *
 * The floor and class accuracy are MNIST's: they are computed for MNIST-shaped samples (1, 32, 32)
 * only. Other samples (e.g. 1000-class ImageNet images) get the FD on a given feature extractor
 * against given reference statistics or reference images.
 *
 * Features and statistics are streamed batch by batch (FeatureMoments), so memory stays flat in N;
 * precision/recall need the features themselves, kept (N × D float32) up to PR_MAX_ROWS per side.
 * Reference statistics of the MNIST test set are cached next to the classifier, keyed by a hash of
 * the extractor's file and preprocessing, and recomputed when either changes.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/index.js';
import { TorchError, argError } from '../../torch/errors.js';
import { FeatureMoments, frechetDistance, loadStats, saveStats, disposeStats, type FeatureStats } from './frechet.js';
import { openSamples, tensorSource, type SampleSource } from './sources.js';
import { precisionRecall } from './precision_recall.js';
import { saveSafetensors } from '../../torch/io/index.js';
import { NUM_CLASSES, defaultCacheDir, ensureClassifier, ensureClassifierAsync, mnistTensors, type ClassifierInfo, type EnsureClassifierOptions } from './classifier.js';

export type InputRange = '-1,1' | '0,1' | '0,255';

/** How images in [-1, 1] are prepared for a custom feature extractor. */
export interface Preprocess {
  /** Bilinear resize to resize x resize pixels (Inception-v3: 299). */
  resize?: number;
  /** 3: repeat a gray channel three times (Inception expects RGB). */
  channels?: 1 | 3;
  /** The value range the extractor expects (default '-1,1', what the samples are in). */
  range?: InputRange;
}

export interface EvaluateOptions extends Preprocess {
  /** Classifier / reference-stats cache folder (default $TIM_CACHE_DIR or runs/cache). */
  cacheDir?: string;
  /** Reference statistics (safetensors mu, sigma) instead of the MNIST test set's. */
  refStats?: string;
  /** Reference images (a samples file, .npz or image folder) whose statistics under the extractor are the reference. */
  ref?: string;
  /** A TorchScript module mapping images (N, C, H, W) to features (N, D) (or (N, D, 1, 1)). */
  features?: string;
  /** Compute the real-vs-real floor (default true). */
  floor?: boolean;
  batchSize?: number;
  /** Which training digits the floor uses (default 0). */
  seed?: number;
  /** Progress lines (training the classifier, computing reference stats). */
  log?: (line: string) => void;
}

export interface ClassAccuracy {
  label: number;
  n: number;
  accuracy: number;
}

export interface EvalResult {
  samples: string;
  n: number;
  /** 'mnist-classifier' or the custom extractor's path. */
  featureExtractor: string;
  featureDim: number;
  /** Fréchet distance of the samples to the reference. */
  fd: number;
  /**
   * FD of real training digits (matched N) to the same reference, and their precision/recall
   * (what a perfect generator of N samples scores; null where the samples' are null); null when
   * not computed.
   */
  floor: { fd: number; n: number; precision: number | null; recall: number | null } | null;
  reference: { source: string; n: number };
  /** Share of samples the classifier labels as requested; null without labels or for non-MNIST-shaped images. */
  classAccuracy: number | null;
  /** Why classAccuracy is null, when it is. */
  classAccuracyNote?: string;
  perClass: ClassAccuracy[];
  /**
   * Improved precision (share of samples on the reference's k-NN manifold: fidelity) and recall
   * (share of reference images on the samples' manifold: diversity), k = 3, in the FD's feature
   * space, every sample against every reference image (ADM's way, no subsampling); null where not
   * computed (reference statistics only, or more than PR_MAX_ROWS images on a side).
   */
  precision: number | null;
  recall: number | null;
  /** Why precision/recall are null, when they are. */
  precisionRecallNote?: string;
  /** The MNIST classifier, when it was used (MNIST-shaped samples, or no extractor given); null otherwise. */
  classifier: { path: string; testAccuracy: number; trained: boolean; trainSeconds: number } | null;
  seconds: number;
}

/** Samples as read from a file: images (N, C, H, W) float32 in [-1, 1], labels (N) int64 or null. */
export interface Samples {
  images: Tensor;
  labels: Tensor | null;
}

/**
 * Precision/recall keep the features of both sides (N × D float32) and compare every pair: up to
 * 10,000 images per side (10,000 × 2,048 Inception features = 80 MB; the distance blocks are
 * 1,000 × N). ADM's own reference batch is 10,000 images.
 */
export const PR_MAX_ROWS = 10_000;

const INT_DTYPES = new Set(['int64', 'int32', 'int16', 'int8', 'uint8']);

/** (C, H, W) of MNIST as the classifier takes it. */
function isMnistShape(chw: readonly number[]): boolean {
  return chw[0] === 1 && chw[1] === 32 && chw[2] === 32;
}

/**
 * Checked copies of samples: `images` (N, C, H, W) floating point, finite, clamped to [-1, 1] (as
 * the PNG writer does) as float32; `labels` (N) integers in [0, 10) as int64, or null. `where`
 * names the source in errors.
 */
export function prepareSamples(images: Tensor, labels: Tensor | null | undefined, where = 'samples'): Samples {
  if (!(images instanceof torch.Tensor)) throw new TorchError(`${where}: expected a tensor 'images' (N, 1, 32, 32) float32 in [-1, 1]`, 'E_FORMAT');
  if (images.dim !== 4 || images.shape[0] === 0) throw new TorchError(`${where}: 'images' must be (N, C, H, W) with N > 0, got [${images.shape.join(', ')}]`, 'E_SHAPE');
  if (!(images.dtype.startsWith('float') || images.dtype === 'bfloat16')) throw new TorchError(`${where}: 'images' must be floating point (float32 in [-1, 1]), got ${images.dtype}`, 'E_DTYPE');
  const n = images.shape[0]!;
  if (labels) {
    if (!INT_DTYPES.has(labels.dtype)) throw new TorchError(`${where}: 'labels' must be integers (int64), got ${labels.dtype}`, 'E_DTYPE');
    if (labels.dim !== 1 || labels.shape[0] !== n) throw new TorchError(`${where}: 'labels' must be (N) = (${n}) like 'images', got [${labels.shape.join(', ')}]`, 'E_SHAPE');
    const [lo, hi] = torch.scope(() => [labels.min().item(), labels.max().item()]);
    // MNIST-shaped samples are MNIST's 10 classes; others may have any number (ImageNet: 1000)
    const limit = isMnistShape(images.shape.slice(1)) ? NUM_CLASSES : Infinity;
    if (lo < 0 || hi >= limit) throw new TorchError(`${where}: 'labels' must be in [0, ${limit === Infinity ? 'number of classes' : limit}), got values in [${lo}, ${hi}]`, 'E_VALUE');
  }
  const finite = torch.scope(() => images.isfinite().allTrue());
  if (!finite) throw new TorchError(`${where}: 'images' has NaN or infinite values`, 'E_VALUE');
  return torch.scope(() => ({
    // clone: the result is always the caller's own, even when no conversion was needed
    images: images.float().clamp(-1, 1).contiguous(),
    labels: labels ? labels.long().clone() : null,
  }));
}

/** Reads a samples file: safetensors with `images` and optionally `labels` (see prepareSamples). */
export function readSamples(path: string): Samples {
  if (typeof path !== 'string' || !existsSync(path)) throw new TorchError(`samples: no file at ${String(path)}`, 'E_IO');
  const { tensors } = torch.loadSafetensors(path);
  try {
    if (!tensors.images) {
      const found = Object.keys(tensors);
      throw new TorchError(`samples ${path}: expected a tensor 'images' (N, 1, 32, 32) float32 in [-1, 1] and 'labels' (N) int64; found ${found.length ? found.map((k) => `'${k}'`).join(', ') : 'no tensors'}`, 'E_FORMAT');
    }
    return prepareSamples(tensors.images, tensors.labels, `samples ${path}`);
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
}

/** Images in [-1, 1] prepared as a custom extractor expects: resized, channel-repeated, rescaled. */
export function preprocess(x: Tensor, p: Preprocess): Tensor {
  return torch.scope(() => {
    let h = x;
    if (p.resize !== undefined && (h.shape[2] !== p.resize || h.shape[3] !== p.resize)) {
      h = torch.interpolateBilinear(h, [p.resize, p.resize]);
    }
    if (p.channels === 3 && h.shape[1] === 1) h = h.repeat(1, 3, 1, 1);
    const range = p.range ?? '-1,1';
    if (range === '0,1') h = h.add(1).mul(0.5);
    else if (range === '0,255') h = h.add(1).mul(127.5);
    return h;
  });
}

/** A feature extractor: features (B, D) of a batch; our classifier also gives logits. */
interface Extractor {
  name: string;
  run(batch: Tensor): { features: Tensor; logits?: Tensor };
  /** Identifies the extractor and preprocessing for the reference-stats cache. */
  fingerprint: string;
}

function fileHash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function classifierExtractor(c: ClassifierInfo): Extractor {
  return {
    name: 'mnist-classifier',
    fingerprint: `mnist-classifier:${fileHash(c.path)}`,
    run: (batch) => {
      const [logits, features] = c.module.call<[Tensor, Tensor]>('logits_and_features', batch);
      return { features, logits };
    },
  };
}

function customExtractor(path: string, p: Preprocess): { extractor: Extractor; module: torch.jit.ScriptModule } {
  if (!existsSync(path)) throw new TorchError(`feature extractor: no file at ${path}`, 'E_IO');
  const module = torch.jit.load(path, { device: 'cpu' }).eval();
  const extractor: Extractor = {
    name: path,
    fingerprint: `custom:${fileHash(path)}:${JSON.stringify({ resize: p.resize ?? null, channels: p.channels ?? 1, range: p.range ?? '-1,1' })}`,
    run: (batch) => {
      const out: unknown = module.forward(preprocess(batch, p));
      if (!(out instanceof torch.Tensor)) throw new TorchError(`feature extractor ${path}: forward must return a Tensor (N, D), got ${Array.isArray(out) ? 'a tuple/list' : typeof out}`, 'E_FORMAT');
      // Inception-style extractors return pooled maps (N, D, 1, 1): flatten them.
      const f = out.dim === 4 && out.shape[2] === 1 && out.shape[3] === 1 ? out.flatten(1) : out;
      if (f.dim !== 2 || f.shape[0] !== batch.shape[0]) {
        throw new TorchError(`feature extractor ${path}: expected features (${batch.shape[0]}, D), got [${out.shape.join(', ')}]`, 'E_SHAPE');
      }
      return { features: f };
    },
  };
  return { extractor, module };
}

interface PassResult {
  stats: FeatureStats;
  /** Per class: [count, correct], when logits and labels are both there. */
  perClass: [number, number][] | null;
  /** The features (N, D) float32 when asked for (precision/recall), else null. */
  features: Tensor | null;
}

/**
 * One pass over images in batches under no-grad: feature moments, (with logits) per-class hits
 * and, with keepFeatures, the features themselves.
 */
function extractPass(ex: Extractor, images: Tensor | SampleSource, labels: Tensor | null, batchSize: number, keepFeatures = false): PassResult {
  const n = images instanceof torch.Tensor ? images.shape[0]! : images.n;
  const batchOf = (s: number, len: number): Tensor => (images instanceof torch.Tensor ? images.narrow(0, s, len) : images.batch(s, len));
  const moments = new FeatureMoments();
  let perClass: [number, number][] | null = null;
  const kept: Tensor[] = [];
  try {
    torch.noGrad(() => {
      for (let s = 0; s < n; s += batchSize) {
        const f = torch.scope(() => {
          const len = Math.min(batchSize, n - s);
          const { features, logits } = ex.run(batchOf(s, len));
          moments.add(features);
          if (logits && labels) {
            const want = labels.narrow(0, s, len).toTypedArray() as BigInt64Array;
            const got = logits.argmax(1).toTypedArray() as BigInt64Array;
            perClass ??= Array.from({ length: NUM_CLASSES }, () => [0, 0] as [number, number]);
            for (let i = 0; i < len; i++) {
              const c = perClass[Number(want[i])]!;
              c[0]++;
              if (got[i] === want[i]) c[1]++;
            }
          }
          return keepFeatures ? features.float().contiguous() : null;
        });
        if (f) kept.push(f);
      }
    });
    const features = keepFeatures ? torch.cat(kept, 0) : null;
    return { stats: moments.stats(), perClass, features };
  } finally {
    moments.dispose();
    for (const t of kept) t.dispose();
  }
}

/** Class accuracy and per-class accuracy from [count, correct] pairs. */
export function accuracyFromCounts(perClass: [number, number][]): { overall: number; perClass: ClassAccuracy[] } {
  let n = 0, c = 0;
  const rows: ClassAccuracy[] = [];
  perClass.forEach(([cn, cc], label) => {
    n += cn;
    c += cc;
    if (cn > 0) rows.push({ label, n: cn, accuracy: cc / cn });
  });
  return { overall: n ? c / n : NaN, perClass: rows };
}

/** A fixed, seeded subset of `k` training digits (for the floor). */
function trainSubset(k: number, seed: number): Tensor {
  return torch.scope(() => {
    const { images, labels } = mnistTensors('train');
    labels.dispose();
    const rng = torch.getRngState();
    torch.manualSeed(seed);
    const idx = torch.randperm(images.shape[0]!).narrow(0, 0, Math.min(k, images.shape[0]!));
    torch.setRngState(rng);
    return images.indexSelect(0, idx);
  });
}

/** Cached reference features (N, D) written for this fingerprint, or null (missing, stale, unreadable: recomputed). */
function loadCachedFeatures(path: string, fingerprint: string): Tensor | null {
  if (!existsSync(path)) return null;
  let file: ReturnType<typeof torch.loadSafetensors>;
  try {
    file = torch.loadSafetensors(path);
  } catch {
    return null;
  }
  const f = file.tensors.features;
  const ok = f !== undefined && f.dim === 2 && f.dtype === 'float32' && file.metadata?.fingerprint === fingerprint;
  for (const [name, t] of Object.entries(file.tensors)) if (!(ok && name === 'features')) t.dispose();
  return ok ? f! : null;
}

/**
 * Reference stats of the 1,756 MNIST test digits under an extractor, and (withFeatures, for
 * precision/recall) their features, both cached by fingerprint in the cache folder.
 */
function mnistTestReference(ex: Extractor, cacheDir: string, batchSize: number, log: (s: string) => void, withFeatures: boolean): { stats: FeatureStats; features: Tensor | null } {
  const key = createHash('sha256').update(ex.fingerprint).digest('hex').slice(0, 16);
  const path = join(cacheDir, `mnist-test-stats-${key}.safetensors`);
  const featuresPath = join(cacheDir, `mnist-test-features-${key}.safetensors`);
  let stats: FeatureStats | null = null;
  if (existsSync(path)) {
    const s = loadStats(path);
    if (s.metadata.fingerprint === ex.fingerprint) stats = { mu: s.mu, sigma: s.sigma, n: s.n };
    else disposeStats(s);
  }
  const cached = withFeatures ? loadCachedFeatures(featuresPath, ex.fingerprint) : null;
  if (stats && (cached || !withFeatures)) return { stats, features: cached };
  cached?.dispose();
  log(`computing reference ${stats ? 'features' : 'statistics'} of the MNIST test digits (${ex.name})`);
  const { images, labels } = mnistTensors('test');
  try {
    const pass = extractPass(ex, images, null, batchSize, withFeatures);
    mkdirSync(cacheDir, { recursive: true });
    if (stats) disposeStats(pass.stats);
    else saveStats(path, pass.stats, { fingerprint: ex.fingerprint, source: 'mnist:test' });
    if (pass.features) saveSafetensors({ features: pass.features }, featuresPath, { fingerprint: ex.fingerprint, source: 'mnist:test' }, 'reference features');
    return { stats: stats ?? pass.stats, features: pass.features };
  } finally {
    images.dispose();
    labels.dispose();
  }
}

function checkOptions(o: EvaluateOptions): void {
  if (o.resize !== undefined && !(Number.isInteger(o.resize) && o.resize >= 8 && o.resize <= 1024)) throw argError('range', `evaluate: resize must be an integer in [8, 1024], got ${o.resize}`);
  if (o.channels !== undefined && o.channels !== 1 && o.channels !== 3) throw argError('range', `evaluate: channels must be 1 or 3, got ${o.channels}`);
  if (o.range !== undefined && !['-1,1', '0,1', '0,255'].includes(o.range)) throw argError('range', `evaluate: range must be '-1,1', '0,1' or '0,255', got ${o.range}`);
  if (o.batchSize !== undefined && !(Number.isInteger(o.batchSize) && o.batchSize > 0)) throw argError('range', `evaluate: batchSize must be a positive integer, got ${o.batchSize}`);
  if ((o.resize !== undefined || o.channels !== undefined || o.range !== undefined) && o.features === undefined) {
    throw argError('range', 'evaluate: resize / channels / range apply to a custom feature extractor (features); the MNIST classifier takes the images as they are');
  }
}

/**
 * Evaluates samples (a safetensors path, or tensors) against real MNIST: FD, the real-vs-real
 * floor, class accuracy. Trains and caches the classifier on first use (one to a few minutes of
 * CPU, blocking: evaluateSamplesAsync keeps the event loop running meanwhile).
 */
export function evaluateSamples(samples: string | Samples, o: EvaluateOptions = {}): EvalResult {
  const classifierOptions = checkInputs(o);
  const src = openSource(samples);
  try {
    return evaluateWith(src, samples, o, needsClassifier(src, o) ? ensureClassifier(classifierOptions) : null);
  } finally {
    src.dispose();
  }
}

/** evaluateSamples that trains the classifier (first use only) without blocking the event loop. */
export async function evaluateSamplesAsync(samples: string | Samples, o: EvaluateOptions = {}): Promise<EvalResult> {
  const classifierOptions = checkInputs(o);
  const src = openSource(samples);
  try {
    return evaluateWith(src, samples, o, needsClassifier(src, o) ? await ensureClassifierAsync(classifierOptions) : null);
  } finally {
    src.dispose();
  }
}

function openSource(samples: string | Samples): SampleSource {
  if (typeof samples === 'string') return openSamples(samples, readSamples);
  const p = prepareSamples(samples.images, samples.labels);
  return tensorSource(p.images, p.labels, '(tensors)');
}

/**
 * The MNIST classifier is needed for MNIST-shaped samples (features by default, accuracy); other
 * samples need an extractor and a reference of their own, checked here before any classifier
 * training could start.
 */
function needsClassifier(src: SampleSource, o: EvaluateOptions): boolean {
  if (isMnistShape(src.shape)) return true;
  if (o.features === undefined) {
    throw new TorchError(
      `samples: the MNIST classifier needs images (N, 1, 32, 32), got [${[src.n, ...src.shape].join(', ')}]; pass a feature extractor for other shapes ` +
      '(--features, e.g. an Inception-v3 TorchScript, with --ref-stats or --ref; or give samples.npz to the ADM evaluator)', 'E_SHAPE');
  }
  if (o.refStats === undefined && o.ref === undefined) {
    throw new TorchError(`samples: images [${src.shape.join(', ')}] are not MNIST's, so the MNIST test digits are no reference: pass reference statistics (--ref-stats) or reference images (--ref)`, 'E_CONFIG');
  }
  return false;
}

/** Options and file checks done before the classifier (maybe a minute of training) is needed. */
function checkInputs(o: EvaluateOptions): EnsureClassifierOptions {
  checkOptions(o);
  if (o.ref !== undefined && o.refStats !== undefined) throw argError('range', 'evaluate: ref (reference images) and refStats (reference statistics) are two references; pass one');
  for (const [what, f] of [['feature extractor', o.features], ['reference stats', o.refStats], ['reference images', o.ref]] as const) {
    if (f !== undefined && !existsSync(f)) throw new TorchError(`${what}: no file at ${resolve(f)}`, 'E_IO');
  }
  const log = o.log ?? (() => {});
  return {
    cacheDir: resolve(o.cacheDir ?? defaultCacheDir()),
    onEpoch: (e) => log(`training the MNIST classifier: epoch ${e.epoch}, loss ${e.loss.toFixed(4)} (${e.seconds.toFixed(1)} s)`),
  };
}

/** The evaluation proper, with the classifier at hand (disposed here). */
function evaluateWith(src: SampleSource, samples: string | Samples, o: EvaluateOptions, cls: ClassifierInfo | null): EvalResult {
  const t0 = Date.now();
  const log = o.log ?? (() => {});
  const batchSize = o.batchSize ?? 250;
  const cacheDir = resolve(o.cacheDir ?? defaultCacheDir());
  const owned: { dispose(): void }[] = cls ? [cls.module] : [];
  try {
    const n = src.n;
    const mnistShaped = isMnistShape(src.shape);
    if (src.labels && !mnistShaped) {
      const lo = torch.scope(() => src.labels!.min().item());
      if (lo < 0) throw new TorchError(`samples ${src.name}: 'labels' must be non-negative class indices, got ${lo}`, 'E_VALUE');
    }
    const ours = cls ? classifierExtractor(cls) : null;
    let ex: Extractor;
    if (o.features !== undefined) {
      const c = customExtractor(resolve(o.features), o);
      owned.push(c.module);
      ex = c.extractor;
    } else {
      ex = ours!; // checkSource: without an extractor the samples are MNIST-shaped, so cls is there
    }

    // Accuracy needs our classifier on MNIST-shaped samples with MNIST labels; FD needs the chosen extractor.
    let perClass: [number, number][] | null = null;
    const mnistLabels = ours !== null && mnistShaped && src.labels !== null && torch.scope(() => src.labels!.max().item()) < NUM_CLASSES;
    // precision/recall need reference features: not with reference statistics only, and both sides bounded
    let prNote: string | undefined = o.refStats !== undefined ? 'precision/recall need reference features: not available with reference statistics (--ref-stats) only'
      : n > PR_MAX_ROWS ? `precision/recall compare every pair of features: computed for at most ${PR_MAX_ROWS} samples, got ${n}` : undefined;
    const pass = extractPass(ex, src, ex === ours && mnistLabels ? src.labels : null, batchSize, prNote === undefined);
    owned.push({ dispose: () => { disposeStats(pass.stats); pass.features?.dispose(); } });
    perClass = pass.perClass;
    if (ex !== ours && mnistLabels) {
      const p2 = extractPass(ours!, src, src.labels, batchSize);
      disposeStats(p2.stats);
      perClass = p2.perClass;
    }

    let ref: FeatureStats;
    let refFeatures: Tensor | null = null;
    let refSource: string;
    if (o.refStats !== undefined) {
      ref = loadStats(resolve(o.refStats));
      refSource = o.refStats;
    } else if (o.ref !== undefined) {
      log(`computing reference statistics of ${o.ref} (${ex.name})`);
      const r = openSamples(resolve(o.ref), readSamples);
      try {
        if (r.shape.join() !== src.shape.join()) throw new TorchError(`reference images ${o.ref} are [${r.shape.join(', ')}], the samples [${src.shape.join(', ')}]`, 'E_SHAPE');
        if (prNote === undefined && r.n > PR_MAX_ROWS) prNote = `precision/recall compare every pair of features: computed for at most ${PR_MAX_ROWS} reference images, got ${r.n}`;
        const rp = extractPass(ex, r, null, batchSize, prNote === undefined);
        ref = rp.stats;
        refFeatures = rp.features;
      } finally {
        r.dispose();
      }
      refSource = o.ref;
    } else {
      ({ stats: ref, features: refFeatures } = mnistTestReference(ex, cacheDir, batchSize, log, prNote === undefined));
      refSource = 'mnist:test';
    }
    owned.push({ dispose: () => { disposeStats(ref); refFeatures?.dispose(); } });
    const fd = frechetDistance(pass.stats, ref);
    // ADM's way: every sample against every reference image (1,000 demo samples against the
    // 1,756 test digits), no subsampling to equal counts. The k-NN radii shrink as a set grows, so
    // like FD the values depend on both N: compare runs at equal N, and against the floor's.
    // (k = 3 neighbours need 4 images a side; smaller sets get null and a note)
    const pr = refFeatures && pass.features && refFeatures.shape[0]! > 3 && pass.features.shape[0]! > 3 ? precisionRecall(refFeatures, pass.features) : null;

    // The floor is real MNIST training digits: meaningful for MNIST-shaped samples only.
    let floor: EvalResult['floor'] = null;
    if ((o.floor ?? true) && mnistShaped) {
      const real = trainSubset(n, o.seed ?? 0);
      try {
        const realPass = extractPass(ex, real, null, batchSize, pr !== null);
        try {
          const realPr = realPass.features ? precisionRecall(refFeatures!, realPass.features) : null;
          floor = { fd: frechetDistance(realPass.stats, ref), n: real.shape[0]!, precision: realPr?.precision ?? null, recall: realPr?.recall ?? null };
        } finally {
          disposeStats(realPass.stats);
          realPass.features?.dispose();
        }
      } finally {
        real.dispose();
      }
    }

    const acc = perClass ? accuracyFromCounts(perClass) : null;
    const note = acc ? undefined
      : !mnistShaped ? 'class accuracy uses the MNIST classifier: MNIST-shaped (1, 32, 32) samples only'
        : 'no labels';
    return {
      samples: typeof samples === 'string' ? samples : '(tensors)',
      n,
      featureExtractor: ex.name,
      featureDim: pass.stats.mu.shape[0]!,
      fd,
      floor,
      reference: { source: refSource, n: ref.n },
      classAccuracy: acc ? acc.overall : null,
      ...(note ? { classAccuracyNote: note } : {}),
      perClass: acc ? acc.perClass : [],
      precision: pr?.precision ?? null,
      recall: pr?.recall ?? null,
      ...(pr ? {} : { precisionRecallNote: prNote ?? 'precision/recall need at least 4 images on each side' }),
      classifier: cls ? { path: cls.path, testAccuracy: cls.testAccuracy, trained: cls.trained, trainSeconds: cls.trainSeconds } : null,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    for (const d of owned.reverse()) d.dispose();
  }
}

/** The result as a text table. */
export function formatEval(r: EvalResult): string {
  const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;
  const lines = [
    `samples            ${r.samples} (${r.n} images)`,
    `features           ${r.featureExtractor} (${r.featureDim}-d)`,
    `reference          ${r.reference.source}${r.reference.n ? ` (${r.reference.n} images)` : ''}`,
    `FD                 ${r.fd.toFixed(4)}`,
    `real-vs-real floor ${r.floor ? `${r.floor.fd.toFixed(4)} (${r.floor.n} real training digits)` : '-'}`,
    `class accuracy     ${r.classAccuracy === null ? `- (${r.classAccuracyNote ?? 'no labels, or not 1x32x32 images'})` : pct(r.classAccuracy)}`,
    `precision / recall ${r.precision === null || r.recall === null ? `- (${r.precisionRecallNote ?? 'not computed'})` : `${r.precision.toFixed(4)} / ${r.recall.toFixed(4)} (k = 3)` +
      (r.floor?.precision != null && r.floor.recall != null ? `; floor ${r.floor.precision.toFixed(4)} / ${r.floor.recall.toFixed(4)}` : '')}`,
    `classifier         ${r.classifier ? `${r.classifier.path}: held-out accuracy ${pct(r.classifier.testAccuracy)}${r.classifier.trained ? ` (trained now, ${r.classifier.trainSeconds.toFixed(1)} s)` : ' (cached)'}` : '- (not used: features from the extractor, no MNIST accuracy)'}`,
  ];
  if (r.perClass.length) {
    lines.push('', '  class      n  accuracy');
    for (const c of r.perClass) lines.push(`  ${String(c.label).padStart(5)}  ${String(c.n).padStart(5)}  ${pct(c.accuracy).padStart(8)}`);
  }
  lines.push('', `(${r.seconds.toFixed(1)} s)`);
  return lines.join('\n');
}
