/**
 * A tiny captioned dataset in the official T2I layout (tim/data/t2i_data.py): images of two aspect
 * ratios, data_info.jsonl ({image_file, captions, bucket}) and bucket_sampler.json (packed batches,
 * one bucket each).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodePngHost } from '../../lib/torch/io/image.js';

/** w x h RGB, pixel (x, y, c) = (7x + 13y + 50c) mod 256 (the Pillow reference uses the same). */
export function patternImage(w: number, h: number): Buffer {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = (x * 7 + y * 13 + c * 50) % 256;
  return encodePngHost({ width: w, height: h, channels: 3, data });
}

/**
 * root/images/{0..5}.png: 0-2 are 40x70 (bucket '1-70x40': 64x32 after rounding down to 32),
 * 3-5 are 70x40 (bucket '1-40x70': 32x64); 5 packed batches, each of one bucket.
 */
export function makeT2IDataset(root: string): { rootDir: string; packedJson: string; jsonlDir: string } {
  mkdirSync(join(root, 'images'), { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < 6; i++) {
    const tall = i < 3;
    writeFileSync(join(root, 'images', `${i}.png`), tall ? patternImage(40, 70) : patternImage(70, 40));
    const captions = i === 4 ? ['a wide picture', 'café ünïcödé 😀', 'third'] : [tall ? `a tall picture number ${i}` : `a wide picture number ${i}`];
    lines.push(JSON.stringify({ image_file: `images/${i}.png`, captions, bucket: tall ? '1-70x40' : '1-40x70', extra: 'unused' }));
  }
  const jsonlDir = join(root, 'data_info.jsonl');
  const packedJson = join(root, 'bucket_sampler.json');
  writeFileSync(jsonlDir, lines.join('\n') + '\n');
  writeFileSync(packedJson, JSON.stringify([[0, 1], [3, 4], [2], [5, 3], [1, 2]]));
  return { rootDir: root, packedJson, jsonlDir };
}
