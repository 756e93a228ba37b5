/**
 * Writing the official preprocessed C2I latent layout (projects/preprocess/image_latent_c2i.py,
 * `save_data`), the layout LatentFolderDataset (latents.ts) and the official ImagenetLatentDataset
 * read: one safetensors file per image,
 *
 *   <out>/<class folder>/<name>.safetensors   { latent: float32 (2, C, H, W), label: float32 scalar }
 *
 * latent[0] is the VAE latent of the image and latent[1] that of its horizontal flip, both already
 * normalised ((z − mean) / std); label is the class index as a 0-d float32 tensor (the official
 * script casts the batch's `cls` to its float32 weight dtype before saving). The official script
 * names a file after its image's parent folder and the part of the image's name before the first
 * dot; here the path below the class folder is kept and only the last extension is dropped, which is
 * the same file for the flat <class>/<image> layout and cannot collide for nested folders or dotted
 * names. Each file is written atomically, so a file that exists is whole: that is what lets a
 * preprocessing run resume by skipping existing files.
 */
import { join, relative, sep } from 'node:path';
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { argError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';

/**
 * The latent file of `image` (found under `root/<class>/...`) in the output folder `out`:
 * out/<class>/<path below the class folder without its extension>.safetensors.
 */
export function latentPathFor(root: string, image: string, out: string): string {
  const rel = relative(root, image).split(sep);
  if (rel.length < 2 || rel[0] === '..') throw argError('range', `latentPathFor: '${image}' is not inside a class folder of '${root}'`);
  const last = rel[rel.length - 1]!;
  const dot = last.lastIndexOf('.');
  rel[rel.length - 1] = `${dot > 0 ? last.slice(0, dot) : last}.safetensors`;
  return join(out, ...rel);
}

/**
 * Writes one latent file atomically: `latent` (2, C, H, W) floating point (stored as float32, the
 * official dtype) and `label` a class index.
 */
export function writeLatentFile(path: string, latent: Tensor, label: number): void {
  check.tensor(latent, 'latent', 'writeLatentFile');
  if (latent.dim !== 4 || latent.shape[0] !== 2) {
    throw argError('range', `writeLatentFile: latent must be (2, C, H, W) (the image and its flip), got [${latent.shape.join(', ')}]`, 'E_SHAPE');
  }
  if (!Number.isInteger(label) || label < 0) throw argError('range', `writeLatentFile: label must be a class index (an integer >= 0), got ${label}`);
  torch.scope(() => {
    torch.save({ latent: latent.detach().to({ device: 'cpu', dtype: 'float32' }).contiguous(), label: torch.tensor(label, { dtype: 'float32' }) }, path);
  });
}
