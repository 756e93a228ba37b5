/**
 * The official preprocessed latent format (projects/preprocess/image_latent_c2i.py, read by
 * ImagenetLatentDataset in tim/data/c2i_data.py): one `.safetensors` file per image, usually in one
 * subfolder per class, holding
 *   latent  (2, C, H, W) floating point: the VAE latent of the image and of its horizontal flip,
 *           already normalized by the preprocessing ((z - mean) / std), so it is used as stored;
 *   label   one number: the class index (the official preprocessing stores it as a float32 scalar).
 * Each time a sample is read, one of the two latents is picked with probability 1/2, as the
 * official `torch.rand(1) < 0.5 -> latent[0] else latent[1]`; the coin here is reproducible (see
 * sampleUniform in sampler.ts). The official loader also pairs each latent with its image for REPA;
 * this dataset reads latents only.
 *
 * Files are listed recursively and sorted by relative path (the official loader lists with
 * os.listdir, whose order depends on the file system, so no order can match it; sorted is stable).
 */
import * as torch from '../../torch/index.js';
import { TorchError, argError } from '../../torch/errors.js';
import type { Tensor } from '../../torch/tensor.js';
import type { Dataset } from './loader.js';
import { listFiles } from './files.js';

export interface LatentFolderOptions {
  /** Labels must be below this (e.g. 1000 for ImageNet); checked on every read when given. */
  numClasses?: number;
}

const FLOAT_DTYPES = new Set(['float32', 'float16', 'bfloat16', 'float64']);

function bad(path: string, msg: string): TorchError {
  return new TorchError(`'${path}': ${msg}`, 'E_FORMAT');
}

export class LatentFolderDataset implements Dataset {
  readonly name: string;
  readonly files: readonly string[];
  readonly sampleShape: readonly [number, number, number];
  readonly numClasses: number | null;

  constructor(readonly dir: string, o: LatentFolderOptions = {}) {
    if (typeof dir !== 'string' || dir === '') throw argError('type', 'LatentFolderDataset: dir must be a non-empty string');
    if (o.numClasses !== undefined && (!Number.isInteger(o.numClasses) || o.numClasses < 1)) {
      throw argError('range', `LatentFolderDataset: numClasses must be a positive integer, got ${o.numClasses}`);
    }
    this.name = dir;
    this.numClasses = o.numClasses ?? null;
    this.files = listFiles(dir, (n) => n.endsWith('.safetensors'));
    if (this.files.length === 0) throw new TorchError(`'${dir}': no .safetensors latent files in the folder`, 'E_DATA');
    // The first file fixes the shape every other file must have.
    const first = this.files[0]!;
    using f = torch.openSafetensors(first);
    if (!f.has('latent')) throw bad(first, `no 'latent' tensor (has: ${f.keys().join(', ') || 'nothing'})`);
    if (!f.has('label')) throw bad(first, `no 'label' tensor (has: ${f.keys().join(', ')})`);
    const info = f.info('latent');
    if (info.shape.length !== 4 || info.shape[0] !== 2) {
      throw bad(first, `'latent' must be (2, C, H, W) (the image and its flip), got [${info.shape.join(', ')}]`);
    }
    this.sampleShape = [info.shape[1]!, info.shape[2]!, info.shape[3]!];
  }

  get length(): number {
    return this.files.length;
  }

  async load(index: number, out: Float32Array, u: number): Promise<number> {
    const path = this.files[index];
    if (path === undefined) throw argError('range', `LatentFolderDataset: index ${index} out of range [0, ${this.files.length})`, 'E_INDEX');
    try {
      return await torch.scopeAsync(async () => {
        // lazy: false copies the bytes on a worker thread, so the read overlaps the caller's compute
        const rec = await torch.loadAsync(path, { lazy: false });
        return this.extract(path, rec, out, u);
      });
    } catch (e) {
      if (e instanceof Error && !e.message.includes(path)) {
        throw new TorchError(`'${path}': ${e.message}`, ((e as { code?: string }).code ?? 'E_IO'));
      }
      throw e;
    }
  }

  private extract(path: string, rec: Record<string, Tensor>, out: Float32Array, u: number): number {
    const latent = rec.latent, label = rec.label;
    if (!latent) throw bad(path, `no 'latent' tensor (has: ${Object.keys(rec).join(', ') || 'nothing'})`);
    if (!label) throw bad(path, `no 'label' tensor (has: ${Object.keys(rec).join(', ')})`);
    const [c, h, w] = this.sampleShape;
    const s = latent.shape;
    if (s.length !== 4 || s[0] !== 2 || s[1] !== c || s[2] !== h || s[3] !== w) {
      throw bad(path, `'latent' has shape [${s.join(', ')}], expected [2, ${c}, ${h}, ${w}] like '${this.files[0]}'`);
    }
    if (!FLOAT_DTYPES.has(latent.dtype)) throw bad(path, `'latent' has dtype ${latent.dtype}, expected floating point`);
    if (label.numel !== 1) throw bad(path, `'label' must hold one number, got shape [${label.shape.join(', ')}]`);
    const y = label.to('float64').item();
    if (!Number.isInteger(y) || y < 0) throw bad(path, `'label' is ${y}, not a class index (a non-negative integer)`);
    if (this.numClasses !== null && y >= this.numClasses) throw bad(path, `'label' is ${y}, not below numClasses ${this.numClasses}`);
    // official: torch.rand(1) < 0.5 -> latent[0] (the image), else latent[1] (its flip)
    const picked = latent.select(0, u < 0.5 ? 0 : 1).to('float32').contiguous();
    const data = picked.toTypedArray() as Float32Array;
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) throw bad(path, `'latent' holds a non-finite value (${data[i]}) at element ${i}`);
    }
    out.set(data);
    return y;
  }
}
