/**
 * `tim sample --num N --steps S`: an evaluation run (what the official projects/sample/sample_c2i_ddp.py
 * does for FID): N images at one step count, labels drawn once from the seed, each image from noise
 * seeded by (seed, its label, its index) as in the per-class sweep, written to
 *
 *   <out>/images/<i>.png   image i, 6 digits as the official names them ({index:06d}.png)
 *   <out>/run.json         the settings and all N labels, written once when the run starts
 *   <out>/progress.json    { done, total, npz }: written after every batch's PNGs are all on disk
 *   <out>/samples.npz      uint8 (N, H, W, 3) under arr_0, built from the PNGs at the end as the
 *                          official create_npz_from_sample_folder does; what the ADM evaluator reads
 *
 * Every file is replaced atomically, so a killed run leaves whole files; run again, it reads
 * progress.json and goes on at the first batch not recorded (rewriting any PNG of a batch it had
 * begun). Because an image depends on (seed, label, index) alone, a resumed run writes the same
 * bytes as an uninterrupted one, whatever --batch. A folder holding a different run (other
 * settings) is an error rather than a mix.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as torch from '../torch/index.js';
import { TorchError } from '../torch/errors.js';
import { writeFileAtomic } from '../torch/io/atomic.js';
import { decodePngHost, savePng } from '../torch/io/image.js';
import { writeNpzUint8 } from '../torch/io/npz.js';
import { convertChannels } from '../tim/data/transforms.js';
import { formatDuration } from '../tim/train/progress.js';
import { sampleImages, type SweepJob } from './sample.js';

export const RUN_FILE = 'run.json';
export const PROGRESS_FILE = 'progress.json';
export const NPZ_FILE = 'samples.npz';
export const IMAGES_DIR = 'images';

export interface EvaluationRunOutput {
  nfe: number;
  images: string;
  npz: string | null;
  /** images already on disk when this call started (0: a fresh run) */
  resumedFrom: number;
  done: number;
  seconds: number;
}

/**
 * The labels of a run: 'random' draws indices into `classes` with torch.randint under manualSeed(seed)
 * (the caller's RNG state is restored); 'balanced' takes the classes in turn.
 */
export function runLabels(seed: number, num: number, classes: readonly number[], mode: 'random' | 'balanced'): number[] {
  if (mode === 'balanced') return Array.from({ length: num }, (_, i) => classes[i % classes.length]!);
  const saved = torch.getRngState();
  try {
    torch.manualSeed(seed);
    const idx = torch.scope(() => torch.randint(0, classes.length, [num], { dtype: 'int64' }).toTypedArray() as BigInt64Array);
    return Array.from(idx, (k) => classes[Number(k)]!);
  } finally {
    torch.setRngState(saved);
  }
}

/** The PNG name of image i: at least 6 digits, as the official {index:06d}.png. */
export function imageName(i: number, num: number): string {
  return `${String(i).padStart(Math.max(6, String(num - 1).length), '0')}.png`;
}

interface Progress {
  done: number;
  total: number;
  npz: boolean;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new TorchError(`'${path}': unreadable (${(e as Error).message}); the folder is not a tim sample run, or was damaged: use another --out`, 'E_FORMAT');
  }
}

/** The settings that decide the images: a run resumes only when they are equal. */
function runSettings(job: SweepJob, configPath: string, nfe: number): Record<string, unknown> {
  const { s } = job;
  return {
    ckpt: resolve(job.src.weights),
    config: resolve(configPath),
    nfe,
    num: s.num,
    seed: s.seed,
    labels: s.labelMode,
    classes: job.classes,
    cfg: s.cfg,
    cfg_interval: s.cfgInterval,
    stochasticity: s.stochasticity,
    sample_type: s.sampleType,
    t_max: job.tMax,
    t_min: job.tMin,
    dtype: s.dtype,
    decoder: s.decoder !== null ? resolve(s.decoder) : null,
    vae: s.vae !== null ? resolve(s.vae) : null,
    latent_mean: s.latentMean,
    latent_std: s.latentStd,
  };
}

/** Starts or resumes the run in s.out; returns where it left everything. */
export async function evaluationRun(job: SweepJob, configPath: string): Promise<EvaluationRunOutput> {
  const { s, decoder, display } = job;
  const num = s.num!;
  const nfe = s.steps[0]!;
  const out = s.out;
  const imagesDir = join(out, IMAGES_DIR);
  const runPath = join(out, RUN_FILE), progressPath = join(out, PROGRESS_FILE), npzPath = join(out, NPZ_FILE);
  const settings = runSettings(job, configPath, nfe);

  let labels: number[];
  let progress: Progress = { done: 0, total: num, npz: false };
  if (existsSync(runPath)) {
    const prev = readJson(runPath) as { format?: string; settings?: Record<string, unknown>; labels?: number[] };
    if (prev.format !== 'tim-torch.sample-run' || !prev.settings || !Array.isArray(prev.labels)) {
      throw new TorchError(`--out '${out}': '${runPath}' is not a tim sample run file; use another --out`, 'E_FORMAT');
    }
    const differ = Object.keys(settings).filter((k) => JSON.stringify(settings[k]) !== JSON.stringify(prev.settings![k]));
    if (differ.length) {
      throw new TorchError(
        `--out '${out}' holds another run (it differs in ${differ.map((k) => `${k}: ${JSON.stringify(prev.settings![k])} there, ${JSON.stringify(settings[k])} now`).join('; ')}); ` +
        'use another --out, or the same settings to resume it', 'E_STATE');
    }
    labels = prev.labels;
    if (existsSync(progressPath)) {
      const p = readJson(progressPath) as Partial<Progress>;
      if (!Number.isInteger(p.done) || p.done! < 0 || p.done! > num) throw new TorchError(`'${progressPath}': bad 'done' ${String(p.done)}; use another --out`, 'E_FORMAT');
      progress = { done: p.done!, total: num, npz: p.npz === true && existsSync(npzPath) };
    }
  } else {
    labels = runLabels(s.seed, num, job.classes, s.labelMode);
    writeFileAtomic(runPath, JSON.stringify({ format: 'tim-torch.sample-run', version: 1, settings, labels }) + '\n', 'tim sample');
  }
  try {
    mkdirSync(imagesDir, { recursive: true });
  } catch (e) {
    throw new TorchError(`cannot create '${imagesDir}': ${(e as Error).message}`, 'E_IO');
  }

  const resumedFrom = progress.done;
  if (resumedFrom > 0) display.message(`tim sample: resuming '${out}': ${resumedFrom} of ${num} images done`);
  const killAt = Number(process.env.TIM_SAMPLE_TEST_KILL_AT ?? NaN); // tests: SIGKILL after this many images
  const t0 = performance.now();
  for (let start = progress.done; start < num; start += s.batch) {
    const len = Math.min(s.batch, num - start);
    const batchLabels = labels.slice(start, start + len);
    const batchIdx = Array.from({ length: len }, (_, k) => start + k);
    const images = sampleImages(job, nfe, batchLabels, batchIdx);
    try {
      const sh = images.shape;
      if (sh.length !== 4 || sh[0] !== len || (sh[1] !== 1 && sh[1] !== 3)) {
        throw new TorchError(`${decoder ? 'the decoder' : 'the sampler'} returned [${sh.join(', ')}]; expected images (${len}, 1 or 3, H, W)`, 'E_SHAPE');
      }
      for (let k = 0; k < len; k++) {
        torch.scope(() => savePng(join(imagesDir, imageName(start + k, num)), images.select(0, k)));
        if (start + k + 1 === killAt) process.kill(process.pid, 'SIGKILL');
      }
    } finally {
      images.dispose();
    }
    progress = { done: start + len, total: num, npz: false };
    writeFileAtomic(progressPath, JSON.stringify(progress) + '\n', 'tim sample');
    const doneNow = progress.done - resumedFrom;
    const rate = (doneNow * 1000) / Math.max(1, performance.now() - t0);
    display.update(`tim sample: nfe ${nfe}  ${progress.done}/${num} images [${Math.floor((100 * progress.done) / num)}%]  ${rate.toFixed(2)} img/s  ETA ${formatDuration(rate > 0 ? (num - progress.done) / rate : NaN)}`);
    await new Promise<void>((r) => setImmediate(r));
  }

  let npz: string | null = null;
  if (s.npz) {
    if (!progress.npz) {
      display.message(`tim sample: building ${npzPath} from ${num} PNGs`);
      buildNpz(imagesDir, num, npzPath, (i) => {
        if (i % 500 === 0) display.update(`tim sample: samples.npz  ${i}/${num} images`);
      });
      progress = { ...progress, npz: true };
      writeFileAtomic(progressPath, JSON.stringify(progress) + '\n', 'tim sample');
    }
    npz = npzPath;
  }
  const seconds = (performance.now() - t0) / 1000;
  display.message(`tim sample: nfe ${nfe}: ${num} images${resumedFrom ? ` (${num - resumedFrom} this time)` : ''} in ${seconds.toFixed(1)} s -> ${imagesDir}/${npz ? `, ${npz}` : ''}`);
  return { nfe, images: imagesDir, npz, resumedFrom, done: progress.done, seconds };
}

/**
 * samples.npz from the run's PNGs, as the official create_npz_from_sample_folder: every image as
 * uint8 (H, W, 3) (a gray image is repeated to RGB, as PIL's convert('RGB')), stacked to (N, H, W, 3)
 * under arr_0, streamed one image at a time.
 */
export function buildNpz(imagesDir: string, num: number, path: string, onImage: (i: number) => void = () => {}): void {
  let hw: [number, number] | null = null;
  const read = (i: number): Uint8Array => {
    const f = join(imagesDir, imageName(i, num));
    let bytes: Buffer;
    try {
      bytes = readFileSync(f);
    } catch (e) {
      throw new TorchError(`cannot build the .npz: image ${i} ('${f}') is unreadable: ${(e as Error).message}`, 'E_IO');
    }
    const img = convertChannels(decodePngHost(bytes, f), 3);
    if (hw === null) hw = [img.height, img.width];
    else if (img.height !== hw[0] || img.width !== hw[1]) {
      throw new TorchError(`cannot build the .npz: '${f}' is ${img.width}x${img.height}, image 0 is ${hw[1]}x${hw[0]}`, 'E_SHAPE');
    }
    return img.data;
  };
  const first = read(0);
  const [h, w] = hw!;
  writeNpzUint8(path, [num, h, w, 3], (put) => {
    put(first);
    for (let i = 1; i < num; i++) {
      onImage(i);
      put(read(i));
    }
  });
}
