/**
 * Where `tim eval` reads samples from, read batch by batch so that memory does not grow with N:
 *
 *   file.safetensors   `images` (N, C, H, W) float in [-1, 1], optional `labels` (N) (readSamples)
 *   file.npz           uint8 `arr_0` (N, H, W, 3) or (N, H, W): the ADM evaluator's sample batch,
 *                      as `tim sample --num` and the official sample_c2i_ddp.py write it
 *   folder             PNG/JPEG images (sorted by path, all of one size); the labels of a
 *                      `tim sample --num` run when the folder is the run folder or its images/
 *
 * Bytes become [-1, 1] as ToTensor + Normalize(0.5, 0.5): v / 255 · 2 − 1.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { TorchError } from '../../torch/errors.js';
import { decodeImageHost } from '../../torch/io/image.js';
import { NpzFile } from '../../torch/io/npz.js';
import { listFiles } from '../data/files.js';
import { convertChannels } from '../data/transforms.js';

export interface SampleSource {
  /** the path, for reports */
  readonly name: string;
  readonly n: number;
  /** C, H, W of every image */
  readonly shape: readonly [number, number, number];
  /** (N) int64, or null */
  readonly labels: Tensor | null;
  /** images [start, start + len) as float32 (len, C, H, W) in [-1, 1] */
  batch(start: number, len: number): Tensor;
  dispose(): void;
}

/** A source over tensors held in memory (images float32 in [-1, 1], already checked); takes ownership. */
export function tensorSource(images: Tensor, labels: Tensor | null, name: string): SampleSource {
  return {
    name,
    n: images.shape[0]!,
    shape: [images.shape[1]!, images.shape[2]!, images.shape[3]!],
    labels,
    batch: (start, len) => images.narrow(0, start, len),
    dispose: () => {
      images.dispose();
      labels?.dispose();
    },
  };
}

/** uint8 pixels (len, H, W, C) → float32 (len, C, H, W) in [-1, 1]. */
function fromBytes(bytes: Uint8Array, len: number, h: number, w: number, c: number): Tensor {
  return torch.scope(() => torch.fromBuffer(bytes, 'uint8', [len, h, w, c], { copy: true }).permute(0, 3, 1, 2).float().div(127.5).sub(1).contiguous());
}

/** An .npz sample batch: arr_0 uint8 (N, H, W, 3|1) or (N, H, W). */
export function npzSource(path: string): SampleSource {
  const f = new NpzFile(path);
  try {
    const a = f.arrays.get('arr_0');
    if (!a) throw new TorchError(`samples '${path}': no 'arr_0' array (has: ${[...f.arrays.keys()].join(', ')}); expected uint8 images (N, H, W, 3)`, 'E_FORMAT');
    const s = a.shape;
    const c = s.length === 3 ? 1 : s[3]!;
    if ((s.length !== 3 && s.length !== 4) || s[0] === 0 || (c !== 1 && c !== 3)) {
      throw new TorchError(`samples '${path}': arr_0 has shape (${s.join(', ')}); expected images (N, H, W, 3), (N, H, W, 1) or (N, H, W) with N > 0`, 'E_SHAPE');
    }
    const [n, h, w] = s as [number, number, number];
    return {
      name: path, n, shape: [c, h, w], labels: null,
      batch: (start, len) => fromBytes(f.readRows('arr_0', start, len), len, h, w, c),
      dispose: () => f.close(),
    };
  } catch (e) {
    f.close();
    throw e;
  }
}

const IMAGE = (n: string): boolean => /\.(png|jpe?g)$/i.test(n);

/** The labels of a `tim sample --num` run whose images are in `dir` (the run folder or its images/), or null. */
function runLabels(dir: string, n: number): number[] | null {
  for (const run of [join(dir, 'run.json'), basename(dir) === 'images' ? join(dirname(dir), 'run.json') : null]) {
    if (run === null || !existsSync(run)) continue;
    let doc: { format?: string; labels?: unknown };
    try {
      doc = JSON.parse(readFileSync(run, 'utf8'));
    } catch {
      continue;
    }
    if (doc.format === 'tim-torch.sample-run' && Array.isArray(doc.labels) && doc.labels.length === n && doc.labels.every((v) => Number.isInteger(v) && v >= 0)) {
      return doc.labels as number[];
    }
  }
  return null;
}

/** A folder of PNG/JPEG images, sorted by path; RGB unless every image is gray. */
export function folderSource(dir: string): SampleSource {
  const root = existsSync(join(dir, 'images')) && existsSync(join(dir, 'run.json')) ? join(dir, 'images') : dir;
  const files = listFiles(root, IMAGE);
  if (files.length === 0) throw new TorchError(`samples '${dir}': no .png/.jpg/.jpeg images in the folder`, 'E_DATA');
  const first = decodeImageHost(readFileSync(files[0]!), files[0]!);
  const c = first.channels <= 2 ? 1 : 3;
  const [h, w] = [first.height, first.width];
  const known = runLabels(root, files.length);
  const labels = known ? torch.tensor(known, { dtype: 'int64' }) : null;
  return {
    name: dir, n: files.length, shape: [c, h, w], labels,
    batch: (start, len) => {
      const bytes = new Uint8Array(len * h * w * c);
      for (let k = 0; k < len; k++) {
        const f = files[start + k]!;
        const img = convertChannels(decodeImageHost(readFileSync(f), f), c as 1 | 3);
        if (img.width !== w || img.height !== h) throw new TorchError(`samples '${dir}': '${f}' is ${img.width}x${img.height}, '${files[0]}' ${w}x${h}; every image must have one size`, 'E_SHAPE');
        bytes.set(img.data, k * h * w * c);
      }
      return fromBytes(bytes, len, h, w, c);
    },
    dispose: () => labels?.dispose(),
  };
}

/** The source a path names: a folder, an .npz, or a safetensors samples file (via `readSafetensors`). */
export function openSamples(path: string, readSafetensors: (p: string) => { images: Tensor; labels: Tensor | null }): SampleSource {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new TorchError(`samples: no file at ${path}`, 'E_IO');
  }
  if (st.isDirectory()) return folderSource(path);
  if (path.toLowerCase().endsWith('.npz')) return npzSource(path);
  const s = readSafetensors(path);
  return tensorSource(s.images, s.labels, path);
}
