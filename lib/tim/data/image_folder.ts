/**
 * A folder of images with one subfolder per class (torchvision's ImageFolder layout):
 *   root/<class>/**\/*.png|.jpg|.jpeg
 * Classes are the subfolder names sorted, labelled 0, 1, ... in that order; images are found
 * recursively and sorted by path within a class. Each image is converted to RGB (or gray), resized
 * and center-cropped to `size` exactly as the official center_crop_arr with Pillow (transforms.ts),
 * and scaled to [-1, 1]. PNG is decoded losslessly; JPEG with jpeg-js, whose IDCT may differ from
 * libjpeg's by a level here and there.
 */
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TorchError, argError } from '../../torch/errors.js';
import { decodeImageHost } from '../../torch/io/image.js';
import type { Dataset } from './loader.js';
import { listFiles } from './files.js';
import { centerCropArr, convertChannels, toUnitRange } from './transforms.js';

const EXTENSIONS = ['.png', '.jpg', '.jpeg'];

export interface ImageFolderOptions {
  /** Output height and width. */
  size: number;
  /** 3 (RGB, default, as the official loader's convert('RGB')) or 1 (gray). */
  channels?: 1 | 3;
}

export class ImageFolderDataset implements Dataset {
  readonly name: string;
  readonly classes: readonly string[];
  readonly files: readonly string[];
  readonly labels: Int32Array;
  readonly sampleShape: readonly [number, number, number];
  readonly size: number;
  readonly channels: 1 | 3;

  constructor(readonly root: string, o: ImageFolderOptions) {
    if (typeof root !== 'string' || root === '') throw argError('type', 'ImageFolderDataset: root must be a non-empty string');
    if (!o || !Number.isInteger(o.size) || o.size < 1) throw argError('range', `ImageFolderDataset: size must be a positive integer, got ${String(o?.size)}`);
    const channels = o.channels ?? 3;
    if (channels !== 1 && channels !== 3) throw argError('range', `ImageFolderDataset: channels must be 1 or 3, got ${String(channels)}`);
    this.name = root;
    this.size = o.size;
    this.channels = channels;
    this.sampleShape = [channels, o.size, o.size];
    let entries;
    try {
      entries = readdirSync(root, { withFileTypes: true });
    } catch (e) {
      throw new TorchError(`'${root}': cannot list the image folder: ${(e as Error).message}`, 'E_IO');
    }
    const classes = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (classes.length === 0) throw new TorchError(`'${root}': no class subfolders (expected root/<class>/<image>)`, 'E_DATA');
    const files: string[] = [];
    const labels: number[] = [];
    classes.forEach((cls, label) => {
      for (const f of listFiles(join(root, cls), (n) => EXTENSIONS.some((x) => n.toLowerCase().endsWith(x)))) {
        files.push(f);
        labels.push(label);
      }
    });
    if (files.length === 0) throw new TorchError(`'${root}': no .png/.jpg/.jpeg images in its ${classes.length} class subfolder(s)`, 'E_DATA');
    this.classes = classes;
    this.files = files;
    this.labels = Int32Array.from(labels);
  }

  get length(): number {
    return this.files.length;
  }

  get numClasses(): number {
    return this.classes.length;
  }

  async load(index: number, out: Float32Array): Promise<number> {
    const path = this.files[index];
    if (path === undefined) throw argError('range', `ImageFolderDataset: index ${index} out of range [0, ${this.files.length})`, 'E_INDEX');
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (e) {
      throw new TorchError(`'${path}': cannot read the image: ${(e as Error).message}`, 'E_IO');
    }
    const img = decodeImageHost(bytes, path);
    if (img.width < 1 || img.height < 1) throw new TorchError(`'${path}': the image is empty (${img.width}x${img.height})`, 'E_FORMAT');
    toUnitRange(centerCropArr(convertChannels(img, this.channels), this.size), out);
    return this.labels[index]!;
  }
}
