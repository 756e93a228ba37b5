/**
 * The MNIST classifier whose features the evaluation measures distances on: a small CNN built as a
 * TorchScript module in TypeScript and trained with tim-torch itself (no Python, no downloaded
 * weights), so `tim eval` works anywhere the package installs.
 *
 *   conv 3x3 (1 -> 32, pad 1) + ReLU + maxpool 2      32x32 -> 16x16
 *   conv 3x3 (32 -> 64, pad 1) + ReLU + maxpool 2     16x16 -> 8x8
 *   linear 4096 -> 128 + ReLU                         the feature layer (FD is measured here)
 *   dropout 0.3 (training only), linear 128 -> 10     the logits
 *
 * Methods: `forward(x)` logits (N, 10); `features(x)` (N, 128); `logits_and_features(x)` both from
 * one pass. Inputs are (N, 1, 32, 32) in [-1, 1], as MnistDataset gives and the samplers write.
 * The trained module is saved with ScriptModule.save (atomic; loads in Python's torch.jit.load) and
 * carries its own held-out accuracy, seed and epochs as attributes, so a cached copy reports them.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/index.js';
import { TorchError, argError } from '../../torch/errors.js';
import { MnistDataset } from '../data/mnist.js';
import { mulberry32 } from '../data/host_rng.js';

export const FEATURE_DIM = 128;
export const NUM_CLASSES = 10;
/** Bumped when the architecture or training recipe changes, so an old cache is not taken for a new one. */
export const CLASSIFIER_VERSION = 1;
export const CLASSIFIER_FILE = 'mnist-classifier.pt';
const IMAGE = 32;

export interface ClassifierTrainOptions {
  /** Seed of initialization, shuffling, augmentation and dropout (default 0). */
  seed?: number;
  /** Passes over the 8,000 training digits (default 10). */
  epochs?: number;
  batchSize?: number;
  lr?: number;
  weightDecay?: number;
  /** Random shifts of up to this many pixels (default 2). */
  maxShift?: number;
  /** Random rotations up to ± this many degrees (default 12; 0 with scale 0: whole-pixel shifts only). */
  rotate?: number;
  /** Random scaling by 1 ± this (default 0.1). */
  scale?: number;
  /** Called after each epoch. */
  onEpoch?: (info: { epoch: number; loss: number; seconds: number }) => void;
}

export interface EnsureClassifierOptions extends ClassifierTrainOptions {
  /** Folder of the cached module (default: $TIM_CACHE_DIR or runs/cache). */
  cacheDir?: string;
  /** Retrain even if the cache has a module. */
  retrain?: boolean;
}

export interface ClassifierInfo {
  module: torch.jit.ScriptModule;
  path: string;
  /** Held-out accuracy on the 1,756 MNIST test digits, measured right after training. */
  testAccuracy: number;
  /** false: loaded from the cache. */
  trained: boolean;
  trainSeconds: number;
}

/** Default cache folder: $TIM_CACHE_DIR, else runs/cache under the working directory. */
export function defaultCacheDir(): string {
  return resolve(process.env.TIM_CACHE_DIR || join('runs', 'cache'));
}

/** PyTorch's default Linear/Conv init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
function uniformInit(shape: number[], fanIn: number): Tensor {
  const b = 1 / Math.sqrt(fanIn);
  return torch.scope(() => torch.rand(shape).mul(2 * b).sub(b));
}

const SOURCE = `
def features(self, x: Tensor) -> Tensor:
    h = torch.max_pool2d(torch.relu(torch.conv2d(x, self.conv1_weight, self.conv1_bias, [1, 1], [1, 1])), [2, 2], [2, 2])
    h = torch.max_pool2d(torch.relu(torch.conv2d(h, self.conv2_weight, self.conv2_bias, [1, 1], [1, 1])), [2, 2], [2, 2])
    return torch.relu(torch.linear(torch.flatten(h, 1), self.fc1_weight, self.fc1_bias))

def logits_of(self, f: Tensor) -> Tensor:
    return torch.linear(torch.dropout(f, 0.3, self.training), self.fc2_weight, self.fc2_bias)

def forward(self, x: Tensor) -> Tensor:
    return self.logits_of(self.features(x))

def logits_and_features(self, x: Tensor) -> Tuple[Tensor, Tensor]:
    f = self.features(x)
    return self.logits_of(f), f
`;

/** A freshly initialized classifier (draws from the process RNG: seed it first). */
export function buildClassifier(): torch.jit.ScriptModule {
  const m = torch.jit.createModule('MnistClassifier');
  const params: [string, number[], number][] = [
    ['conv1_weight', [32, 1, 3, 3], 9], ['conv1_bias', [32], 9],
    ['conv2_weight', [64, 32, 3, 3], 288], ['conv2_bias', [64], 288],
    ['fc1_weight', [FEATURE_DIM, 64 * 8 * 8], 4096], ['fc1_bias', [FEATURE_DIM], 4096],
    ['fc2_weight', [NUM_CLASSES, FEATURE_DIM], FEATURE_DIM], ['fc2_bias', [NUM_CLASSES], FEATURE_DIM],
  ];
  for (const [name, shape, fanIn] of params) {
    const t = uniformInit(shape, fanIn);
    m.registerParameter(name, t);
    t.dispose();
  }
  m.registerAttribute('tim_eval_classifier', CLASSIFIER_VERSION);
  m.registerAttribute('feature_dim', FEATURE_DIM);
  m.registerAttribute('test_accuracy', 0, 'float');
  m.registerAttribute('seed', 0);
  m.registerAttribute('epochs', 0);
  m.define(SOURCE);
  return m;
}

/** All digits of a split as host arrays: images (N*1024, [-1, 1]) and labels. */
export function mnistArrays(split: 'train' | 'test'): { images: Float32Array; labels: Int32Array; n: number } {
  const ds = new MnistDataset({ split });
  const n = ds.length;
  const images = new Float32Array(n * IMAGE * IMAGE);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = ds.read(i, images.subarray(i * IMAGE * IMAGE, (i + 1) * IMAGE * IMAGE));
  return { images, labels, n };
}

/** Copies image `src` shifted by (dx, dy) into `dst`; uncovered pixels are background (-1). */
function shiftImage(src: Float32Array, dst: Float32Array, dx: number, dy: number): void {
  dst.fill(-1);
  for (let y = Math.max(0, dy); y < Math.min(IMAGE, IMAGE + dy); y++) {
    const row = (y - dy) * IMAGE;
    for (let x = Math.max(0, dx); x < Math.min(IMAGE, IMAGE + dx); x++) dst[y * IMAGE + x] = src[row + x - dx]!;
  }
}

/**
 * Copies image `src` into `dst` under a random small affine map (rotation up to ±rotate degrees,
 * scale 1 ± scale, shift up to ±maxShift pixels) about the center, sampled bilinearly; outside
 * the source is background (-1). Digits written by hand vary this way, which 800 per class don't cover.
 */
function affineImage(src: Float32Array, dst: Float32Array, rand: () => number, maxShift: number, rotate: number, scale: number): void {
  const a = ((rand() * 2 - 1) * rotate * Math.PI) / 180, s = 1 + (rand() * 2 - 1) * scale;
  const tx = (rand() * 2 - 1) * maxShift, ty = (rand() * 2 - 1) * maxShift;
  // inverse map: output pixel -> source position
  const c = Math.cos(a) / s, sn = Math.sin(a) / s, mid = (IMAGE - 1) / 2;
  for (let y = 0; y < IMAGE; y++) {
    for (let x = 0; x < IMAGE; x++) {
      const ox = x - mid - tx, oy = y - mid - ty;
      const sx = c * ox + sn * oy + mid, sy = -sn * ox + c * oy + mid;
      const x0 = Math.floor(sx), y0 = Math.floor(sy), fx = sx - x0, fy = sy - y0;
      const at = (xx: number, yy: number): number => (xx < 0 || yy < 0 || xx >= IMAGE || yy >= IMAGE ? -1 : src[yy * IMAGE + xx]!);
      dst[y * IMAGE + x] = (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) + fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
    }
  }
}

/** Batch `idx` of the host arrays as tensors, each image randomly shifted by up to maxShift pixels. */
function augmentedBatch(images: Float32Array, labels: Int32Array, idx: ArrayLike<number>, maxShift: number, rand: () => number, affine: { rotate: number; scale: number } | null): { x: Tensor; y: Tensor } {
  const B = idx.length, P = IMAGE * IMAGE;
  const xb = new Float32Array(B * P);
  const yb = new BigInt64Array(B);
  for (let b = 0; b < B; b++) {
    const i = idx[b]!;
    yb[b] = BigInt(labels[i]!);
    if (affine) {
      affineImage(images.subarray(i * P, (i + 1) * P), xb.subarray(b * P, (b + 1) * P), rand, maxShift, affine.rotate, affine.scale);
      continue;
    }
    const dx = Math.floor(rand() * (2 * maxShift + 1)) - maxShift;
    const dy = Math.floor(rand() * (2 * maxShift + 1)) - maxShift;
    shiftImage(images.subarray(i * P, (i + 1) * P), xb.subarray(b * P, (b + 1) * P), dx, dy);
  }
  return { x: torch.fromBuffer(xb, 'float32', [B, 1, IMAGE, IMAGE]), y: torch.fromBuffer(yb, 'int64', [B]) };
}

/** Fraction of images whose argmax logit is the label, in batches under no-grad (eval mode). */
export function classifierAccuracy(module: torch.jit.ScriptModule, images: Tensor, labels: Tensor, batchSize = 500): number {
  const n = images.shape[0]!;
  const wasTraining = module.isTraining;
  module.eval();
  let correct = 0;
  try {
    torch.noGrad(() => {
      for (let s = 0; s < n; s += batchSize) {
        correct += torch.scope(() => {
          const len = Math.min(batchSize, n - s);
          const pred = module.forward(images.narrow(0, s, len)).argmax(1);
          return pred.eq(labels.narrow(0, s, len)).sum().item();
        });
      }
    });
  } finally {
    module.train(wasTraining);
  }
  return correct / n;
}

/** MNIST test digits as tensors (N, 1, 32, 32) float32 and (N) int64. */
export function mnistTensors(split: 'train' | 'test'): { images: Tensor; labels: Tensor } {
  const { images, labels, n } = mnistArrays(split);
  return {
    images: torch.fromBuffer(images, 'float32', [n, 1, IMAGE, IMAGE], { copy: true }),
    labels: torch.fromBuffer(BigInt64Array.from(labels, (v) => BigInt(v)), 'int64', [n], { copy: true }),
  };
}

/**
 * Trains a classifier on the 8,000 training digits with AdamW and random small affine maps; returns it in eval
 * mode with `test_accuracy` set (measured on the 1,756 test digits). Deterministic for a seed on a
 * given machine; the process RNG is restored afterwards so callers' random streams are untouched.
 */
export function trainClassifier(o: ClassifierTrainOptions = {}): TrainedClassifier {
  return drain(trainSteps(o));
}

/** trainClassifier that yields to the event loop every 25 steps, so timers, I/O and IPC keep running. */
export async function trainClassifierAsync(o: ClassifierTrainOptions = {}): Promise<TrainedClassifier> {
  return drainAsync(trainSteps(o));
}

export interface TrainedClassifier {
  module: torch.jit.ScriptModule;
  testAccuracy: number;
  seconds: number;
}

/** Runs a step generator to its end (synchronously). */
function drain<T>(g: Generator<void, T>): T {
  for (;;) {
    const r = g.next();
    if (r.done) return r.value;
  }
}

async function drainAsync<T>(g: Generator<void, T>): Promise<T> {
  for (;;) {
    const r = g.next();
    if (r.done) return r.value;
    await new Promise((res) => setImmediate(res));
  }
}

/** The training run as a generator that pauses every 25 steps; the drivers above run it. */
function* trainSteps(o: ClassifierTrainOptions): Generator<void, TrainedClassifier> {
  const seed = o.seed ?? 0, epochs = o.epochs ?? 10, batchSize = o.batchSize ?? 32, lr = o.lr ?? 2e-3;
  const weightDecay = o.weightDecay ?? 1e-4, maxShift = o.maxShift ?? 2;
  // 800 digits per class are few: plain training (or whole-pixel shifts) stays near 97.7-98.3%
  // held-out; small random rotations and scalings take it to about 98.6% in the same 10 epochs.
  const rotate = o.rotate ?? 12, scale = o.scale ?? 0.1;
  if (!(rotate >= 0 && rotate <= 45) || !(scale >= 0 && scale < 0.5)) throw argError('range', `trainClassifier: rotate must be in [0, 45] degrees and scale in [0, 0.5), got ${rotate}, ${scale}`);
  const affine = rotate > 0 || scale > 0 ? { rotate, scale } : null;
  if (!Number.isSafeInteger(seed) || seed < 0) throw argError('range', `trainClassifier: seed must be a non-negative integer, got ${seed}`);
  if (!Number.isInteger(epochs) || epochs < 1) throw argError('range', `trainClassifier: epochs must be a positive integer, got ${epochs}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw argError('range', `trainClassifier: batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isInteger(maxShift) || maxShift < 0 || maxShift > 8) throw argError('range', `trainClassifier: maxShift must be an integer in [0, 8], got ${maxShift}`);
  const t0 = Date.now();
  // The process RNG (init, shuffles, dropout) is ours only while we run: the caller's state is put
  // back at every pause and at the end, so an async run neither disturbs nor is disturbed by others.
  let outside = torch.getRngState();
  torch.manualSeed(seed);
  const module = buildClassifier();
  const train = mnistArrays('train');
  const rand = mulberry32(seed ^ 0x5eed);
  const params = module.parameters();
  const opt = new torch.optim.AdamW(params, { lr, weightDecay });
  const stepsPerEpoch = Math.floor(train.n / batchSize);
  try {
    module.train();
    for (let e = 0; e < epochs; e++) {
      const te = Date.now();
      const order = torch.scope(() => torch.randperm(train.n).toTypedArray() as BigInt64Array);
      let lossSum = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
        const k = e * stepsPerEpoch + s;
        // Cosine decay over the whole run: a cheap way to end in a flat minimum in few epochs.
        opt.paramGroups[0]!.lr = lr * 0.5 * (1 + Math.cos((Math.PI * k) / (epochs * stepsPerEpoch)));
        const idx = Array.from(order.subarray(s * batchSize, (s + 1) * batchSize), Number);
        if (s % 25 === 24) {
          const ours = torch.getRngState();
          torch.setRngState(outside);
          yield;
          outside = torch.getRngState();
          torch.setRngState(ours);
        }
        lossSum += torch.scope(() => {
          const { x, y } = augmentedBatch(train.images, train.labels, idx, maxShift, rand, affine);
          const loss = torch.crossEntropy(module.forward(x), y);
          opt.zeroGrad();
          loss.backward();
          opt.step();
          return loss.item();
        });
      }
      o.onEpoch?.({ epoch: e + 1, loss: lossSum / stepsPerEpoch, seconds: (Date.now() - te) / 1000 });
    }
    module.eval();
    const test = mnistTensors('test');
    let acc: number;
    try {
      acc = classifierAccuracy(module, test.images, test.labels);
    } finally {
      test.images.dispose();
      test.labels.dispose();
    }
    module.setAttr('test_accuracy', acc);
    module.setAttr('seed', seed);
    module.setAttr('epochs', epochs);
    return { module, testAccuracy: acc, seconds: (Date.now() - t0) / 1000 };
  } catch (e) {
    module.dispose();
    throw e;
  } finally {
    opt.dispose();
    for (const p of params) p.dispose();
    torch.setRngState(outside);
  }
}

/** Whether a loaded module is this project's classifier, of the current version. */
function isOurClassifier(m: torch.jit.ScriptModule): boolean {
  return m.hasAttr('tim_eval_classifier') && m.getAttr('tim_eval_classifier') === CLASSIFIER_VERSION && m.hasMethod('logits_and_features');
}

/** Loads a classifier saved by ensureClassifier / trainClassifier (eval mode). */
export function loadClassifier(path: string): torch.jit.ScriptModule {
  if (!existsSync(path)) throw new TorchError(`classifier: no file at ${path}`, 'E_IO');
  const m = torch.jit.load(path, { device: 'cpu' });
  if (!isOurClassifier(m)) {
    m.dispose();
    throw new TorchError(`classifier: ${path} is not a tim-torch MNIST classifier of version ${CLASSIFIER_VERSION} (no tim_eval_classifier attribute / logits_and_features method); delete it to retrain`, 'E_FORMAT');
  }
  return m.eval();
}

/**
 * The cached classifier, trained (and saved atomically) first when the cache has none or an older
 * version. A second process training at the same time only wastes time: each save is a rename.
 */
export function ensureClassifier(o: EnsureClassifierOptions = {}): ClassifierInfo {
  return cachedClassifier(o) ?? saveTrained(o, trainClassifier(o));
}

/** ensureClassifier with training through trainClassifierAsync (the event loop keeps running). */
export async function ensureClassifierAsync(o: EnsureClassifierOptions = {}): Promise<ClassifierInfo> {
  return cachedClassifier(o) ?? saveTrained(o, await trainClassifierAsync(o));
}

function cachePath(o: EnsureClassifierOptions): string {
  return join(resolve(o.cacheDir ?? defaultCacheDir()), CLASSIFIER_FILE);
}

/** The cached classifier when there is one of the current version (and no retrain is asked). */
function cachedClassifier(o: EnsureClassifierOptions): ClassifierInfo | null {
  const path = cachePath(o);
  if (!o.retrain && existsSync(path)) {
    const m = torch.jit.load(path, { device: 'cpu' });
    if (isOurClassifier(m)) return { module: m.eval(), path, testAccuracy: m.getAttr('test_accuracy') as number, trained: false, trainSeconds: 0 };
    m.dispose(); // an older version: retrain over it
  }
  return null;
}

function saveTrained(o: EnsureClassifierOptions, t: TrainedClassifier): ClassifierInfo {
  const path = cachePath(o);
  const { module, testAccuracy, seconds } = t;
  mkdirSync(dirname(path), { recursive: true });
  module.save(path);
  return { module, path, testAccuracy, trained: true, trainSeconds: seconds };
}
