/**
 * Image-folder dataset: classes by sorted subfolder name, files sorted within a class (recursively),
 * every PNG transformed exactly as the official center_crop_arr + ToTensor + Normalize with Pillow
 * and torch (bit-exact against Python), JPEG decoded, bad files named in typed errors, and batches
 * through the DataLoader.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { TorchError } from '../lib/torch/errors.js';
import { encodePngHost } from '../lib/torch/io/image.js';
import { ImageFolderDataset } from '../lib/tim/data/image_folder.js';
import { DataLoader } from '../lib/tim/data/loader.js';
import { py } from './helpers/python.js';
import { noiseBytes } from './helpers/noise.js';

const root = mkdtempSync(join(tmpdir(), 'tim-imgfolder-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));


/** [class, relative file, width, height, channels] */
const FILES: [string, string, number, number, 1 | 3 | 4][] = [
  ['zebra', 'b.png', 70, 45, 3], // halved once (BOX), then BICUBIC down
  ['zebra', 'a.png', 33, 90, 4], // RGBA: alpha dropped by convert('RGB')
  ['ant', 'sub/c.png', 12, 9, 1], // gray, upscaled; in a nested folder
  ['ant', 'd.png', 16, 16, 3], // already the size: untouched
];
const SIZE = 16;

beforeAll(() => {
  FILES.forEach(([cls, rel, w, h, c], i) => {
    mkdirSync(join(root, cls, rel.includes('/') ? rel.split('/')[0]! : ''), { recursive: true });
    writeFileSync(join(root, cls, rel), encodePngHost({ width: w, height: h, channels: c, data: noiseBytes(w * h * c, 100 + i) }));
  });
  writeFileSync(join(root, 'notes.txt'), 'a file at the top level is not a class');
  writeFileSync(join(root, 'ant', 'readme.md'), 'not an image');
});

describe('ImageFolderDataset', () => {
  it('labels classes by sorted subfolder name and lists images sorted, recursively', () => {
    const ds = new ImageFolderDataset(root, { size: SIZE });
    expect(ds.classes).toEqual(['ant', 'zebra']);
    expect(ds.files.map((f) => f.slice(root.length + 1))).toEqual(['ant/d.png', 'ant/sub/c.png', 'zebra/a.png', 'zebra/b.png']);
    expect(Array.from(ds.labels)).toEqual([0, 0, 1, 1]);
    expect(ds.sampleShape).toEqual([3, SIZE, SIZE]);
    expect(ds.numClasses).toBe(2);
  });

  it('matches the official center_crop_arr (Pillow) + ToTensor + Normalize bit for bit', async () => {
    const ds = new ImageFolderDataset(root, { size: SIZE });
    const ref = py<{ x: number[][] }>(`
      import numpy as np
      from PIL import Image
      def center_crop_arr(pil_image, image_size):
          while min(*pil_image.size) >= 2 * image_size:
              pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.Resampling.BOX)
          scale = image_size / min(*pil_image.size)
          pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.Resampling.BICUBIC)
          arr = np.array(pil_image)
          crop_y = (arr.shape[0] - image_size) // 2
          crop_x = (arr.shape[1] - image_size) // 2
          return Image.fromarray(arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size])
      out['x'] = []
      for p in ${JSON.stringify(ds.files)}:
          a = np.asarray(center_crop_arr(Image.open(p).convert('RGB'), ${SIZE}))
          t = torch.from_numpy(a.copy()).permute(2, 0, 1).float().div(255)   # ToTensor
          t = (t - 0.5) / 0.5                                                 # Normalize
          out['x'].append(t.reshape(-1).tolist())
    `);
    for (let i = 0; i < ds.length; i++) {
      const out = new Float32Array(3 * SIZE * SIZE);
      const y = await ds.load(i, out);
      expect(y).toBe(ds.labels[i]);
      let mismatches = 0;
      for (let k = 0; k < out.length; k++) if (out[k] !== Math.fround(ref.x[i]![k]!)) mismatches++;
      expect(mismatches, ds.files[i]).toBe(0);
    }
  });

  it('reads JPEG and gray output, and names broken files in typed errors', async () => {
    const jroot = mkdtempSync(join(tmpdir(), 'tim-imgfolder-j-'));
    try {
      mkdirSync(join(jroot, 'one'));
      const w = 20, h = 20;
      const rgba = new Uint8Array(w * h * 4).fill(200);
      writeFileSync(join(jroot, 'one', 'x.JPG'), jpeg.encode({ data: rgba, width: w, height: h }, 95).data);
      writeFileSync(join(jroot, 'one', 'y.png'), Buffer.from('\x89PNG\r\n\x1a\nthis is not a png'));
      const ds = new ImageFolderDataset(jroot, { size: 8, channels: 1 });
      expect(ds.files.map((f) => f.slice(jroot.length + 1))).toEqual(['one/x.JPG', 'one/y.png']);
      const out = new Float32Array(64);
      await ds.load(0, out);
      for (const v of out) expect(Math.abs(v - (200 / 255 - 0.5) / 0.5)).toBeLessThan(0.03);
      const err = await ds.load(1, out).catch((e: unknown) => e as Error & { code?: string });
      expect(err).toBeInstanceOf(TorchError);
      expect((err as TorchError).code).toBe('E_FORMAT');
      expect((err as Error).message).toContain(join(jroot, 'one', 'y.png'));
      // a loader surfaces the same error
      const loader = new DataLoader(ds, { batchSize: 2, prefetch: 0 });
      await expect(loader.next()).rejects.toThrow(/y\.png/);
      await loader.close();
      // folders without classes or images
      expect(() => new ImageFolderDataset(join(jroot, 'one'), { size: 8 })).toThrow(/no class subfolders/);
      expect(() => new ImageFolderDataset(join(jroot, 'missing'), { size: 8 })).toThrow(TorchError);
      expect(() => new ImageFolderDataset(jroot, { size: 0 })).toThrow(RangeError);
    } finally {
      rmSync(jroot, { recursive: true, force: true });
    }
  });

  it('batches through the DataLoader as (B,3,S,S) float32 in [-1, 1] with int64 labels; memory flat', async () => {
    const ds = new ImageFolderDataset(root, { size: SIZE });
    const before = torch.memory().liveTensors;
    const loader = new DataLoader(ds, { batchSize: 2, seed: 0 });
    for (let i = 0; i < 4; i++) {
      const b = await loader.next();
      expect(b.x.shape).toEqual([2, 3, SIZE, SIZE]);
      expect(b.y.dtype).toBe('int64');
      expect(Array.from(b.y.toTypedArray() as BigInt64Array, Number)).toEqual(Array.from(b.indices, (k) => ds.labels[k]!));
      torch.scope(() => {
        expect(b.x.min().item()).toBeGreaterThanOrEqual(-1);
        expect(b.x.max().item()).toBeLessThanOrEqual(1);
      });
      b.x.dispose();
      b.y.dispose();
    }
    await loader.close();
    expect(torch.memory().liveTensors).toBe(before);
  });
});
