/**
 * Images: PNG round trips (uint8 exactly, floats through the official [-1, 1] -> byte rule), files
 * Pillow reads back identically, gray/alpha/16-bit files Pillow writes, JPEG, atomic savePng, the
 * make_grid layout pixel by pixel, typed errors for bad input, and no leaked tensors.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { afterAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { TorchError } from '../lib/torch/errors.js';
import { decodeImageHost, decodePng, encodePng, makeGrid, savePng } from '../lib/torch/io/image.js';
import { py } from './helpers/python.js';
import { noiseBytes } from './helpers/noise.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-image-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function bytesOf(t: ReturnType<typeof torch.tensor>): number[] {
  return Array.from(t.toTypedArray() as Uint8Array);
}


describe('PNG', () => {
  it('round-trips uint8 images of 1, 2, 3 and 4 channels and (H, W) exactly', () => {
    const before = torch.memory().liveTensors;
    torch.scope(() => {
      for (const c of [1, 2, 3, 4]) {
        const t = torch.fromBuffer(noiseBytes(c * 5 * 7, c), 'uint8', [c, 5, 7], { copy: true });
        const back = decodePng(encodePng(t));
        expect(back.shape).toEqual([c, 5, 7]);
        expect(back.dtype).toBe('uint8');
        expect(bytesOf(back)).toEqual(bytesOf(t));
      }
      const hw = torch.fromBuffer(noiseBytes(6 * 4, 9), 'uint8', [6, 4], { copy: true });
      const back = decodePng(encodePng(hw));
      expect(back.shape).toEqual([1, 6, 4]);
      expect(bytesOf(back)).toEqual(bytesOf(hw));
    });
    expect(torch.memory().liveTensors).toBe(before);
  });

  it('maps floats in [-1, 1] to bytes as the official sampler (truncating, clamped, NaN -> 0)', () => {
    torch.scope(() => {
      const vals = [-1, 1, 0, -2, 2, 0.5, -0.999, 0.9999, NaN];
      const t = torch.tensor(vals, { dtype: 'float32' }).reshape(1, 1, 9);
      const got = bytesOf(decodePng(encodePng(t)));
      // uint8(clamp(255 * (x + 1) / 2, 0, 255)) in float32
      const want = vals.map((v) => (Number.isNaN(v) ? 0 : Math.trunc(Math.min(255, Math.max(0, Math.fround(Math.fround((v + 1) / 2) * 255))))));
      expect(got).toEqual(want);
      expect(want.slice(0, 3)).toEqual([0, 255, 127]);
    });
  });

  it('writes files Pillow reads back identically, and reads gray/alpha/16-bit/palette files Pillow writes', () => {
    const rgb = torch.fromBuffer(noiseBytes(3 * 4 * 5, 3), 'uint8', [3, 4, 5], { copy: true });
    const path = join(dir, 'ours.png');
    savePng(path, rgb);
    const ref = py<Record<string, unknown>>(`
      from PIL import Image
      import numpy as np
      im = Image.open(${JSON.stringify(path)}); out['mode'] = im.mode; out['px'] = np.asarray(im).transpose(2, 0, 1).reshape(-1).tolist()
      a = (np.arange(6 * 5, dtype=np.uint32).reshape(6, 5) * 37 % 256).astype(np.uint8)
      Image.fromarray(a, 'L').save(${JSON.stringify(join(dir, 'l.png'))})
      Image.fromarray(np.stack([a, 255 - a], -1), 'LA').save(${JSON.stringify(join(dir, 'la.png'))})
      Image.fromarray(np.stack([a, a // 2, 255 - a], -1), 'RGB').convert('P').save(${JSON.stringify(join(dir, 'p.png'))})
      Image.fromarray((a.astype(np.uint16) * 257), 'I;16').save(${JSON.stringify(join(dir, 'i16.png'))})
      out['l'] = a.reshape(-1).tolist()
      out['p'] = np.asarray(Image.open(${JSON.stringify(join(dir, 'p.png'))}).convert('RGB')).transpose(2, 0, 1).reshape(-1).tolist()
    `);
    expect(ref.mode).toBe('RGB');
    expect(ref.px).toEqual(bytesOf(rgb));
    rgb.dispose();
    torch.scope(() => {
      const l = decodePng(readFileSync(join(dir, 'l.png')));
      expect(l.shape).toEqual([1, 6, 5]);
      expect(bytesOf(l)).toEqual(ref.l);
      const la = decodePng(readFileSync(join(dir, 'la.png')));
      expect(la.shape).toEqual([2, 6, 5]);
      expect(bytesOf(la.select(0, 0))).toEqual(ref.l);
      expect(bytesOf(la.select(0, 1))).toEqual((ref.l as number[]).map((v) => 255 - v));
      const p = decodePng(readFileSync(join(dir, 'p.png')));
      expect(p.shape).toEqual([3, 6, 5]);
      expect(bytesOf(p)).toEqual(ref.p);
      const i16 = decodePng(readFileSync(join(dir, 'i16.png')));
      expect(i16.shape).toEqual([1, 6, 5]);
      expect(bytesOf(i16)).toEqual(ref.l); // v * 257 scaled back to 8 bits is v
    });
  });

  it('decodes JPEG (jpeg-js) close to the encoded pixels', () => {
    const w = 16, h = 8;
    const rgba = new Uint8Array(w * h * 4);
    for (let i = 0; i < w * h; i++) rgba.set([(i % w) * 16, Math.floor(i / w) * 32, 128, 255], i * 4);
    const bytes = jpeg.encode({ data: rgba, width: w, height: h }, 100).data;
    const img = decodeImageHost(bytes, 'mem.jpg');
    expect([img.width, img.height, img.channels]).toEqual([w, h, 3]);
    let maxErr = 0;
    for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) maxErr = Math.max(maxErr, Math.abs(img.data[i * 3 + c]! - rgba[i * 4 + c]!));
    expect(maxErr).toBeLessThan(12);
  });

  it('savePng is atomic: a failed write leaves the old file and no temporary behind', () => {
    const path = join(dir, 'atomic.png');
    writeFileSync(path, 'old');
    const t = torch.zeros([3, 2, 2], { dtype: 'uint8' });
    savePng(path, t);
    expect(bytesOf(decodePng(readFileSync(path)))).toEqual(new Array(12).fill(0));
    expect(() => savePng(join(dir, 'missing-folder', 'x.png'), t)).toThrow(TorchError);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp'))).toEqual([]);
    t.dispose();
  });

  it('rejects bad tensors and bad bytes with typed errors naming the source', () => {
    torch.scope(() => {
      const code = (fn: () => unknown): string | undefined => {
        try { fn(); } catch (e) { return (e as { code?: string }).code; }
        return 'no error';
      };
      expect(code(() => encodePng(torch.zeros([5, 2, 2])))).toBe('E_SHAPE');
      expect(code(() => encodePng(torch.zeros([1, 1, 2, 2])))).toBe('E_SHAPE');
      expect(code(() => encodePng(torch.zeros([3, 2, 2], { dtype: 'int32' })))).toBe('E_DTYPE');
      const good = encodePng(torch.zeros([3, 4, 4], { dtype: 'uint8' }));
      let err: Error & { code?: string } = new Error();
      try { decodePng(good.subarray(0, 40), 'cut.png'); } catch (e) { err = e as Error; }
      expect(err).toBeInstanceOf(TorchError);
      expect(err.code).toBe('E_FORMAT');
      expect(err.message).toContain('cut.png');
      expect(code(() => decodeImageHost(Buffer.from('GIF89a....'), 'x.gif'))).toBe('E_FORMAT');
      expect(code(() => decodeImageHost(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]), 'bad.jpg'))).toBe('E_FORMAT');
    });
  });
});

describe('makeGrid', () => {
  it('lays images out as torchvision make_grid, pixel by pixel', () => {
    const before = torch.memory().liveTensors;
    torch.scope(() => {
      // image k (k = 0..4) is 2x3 with value 10k + pixel; nrow 2, padding 1, padValue 99
      const n = 5, h = 2, w = 3, pad = 1;
      const data = new Float32Array(n * 3 * h * w);
      for (let k = 0; k < n; k++) for (let c = 0; c < 3; c++) for (let i = 0; i < h * w; i++) data[((k * 3 + c) * h * w) + i] = 10 * k + i + 100 * c;
      const imgs = torch.fromBuffer(data, 'float32', [n, 3, h, w], { copy: true });
      const g = makeGrid(imgs, { nrow: 2, padding: pad, padValue: 99 });
      // 2 columns, 3 rows: width 2 * (3 + 1) + 1 = 9, height 3 * (2 + 1) + 1 = 10
      expect(g.shape).toEqual([3, 10, 9]);
      const px = g.toArray() as number[][][];
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < 10; y++) {
          for (let x = 0; x < 9; x++) {
            const row = Math.floor((y - pad) / (h + pad)), col = Math.floor((x - pad) / (w + pad));
            const iy = (y - pad) % (h + pad), ix = (x - pad) % (w + pad);
            const k = row * 2 + col;
            const inside = y >= pad && x >= pad && iy < h && ix < w && k < n;
            expect(px[c]![y]![x], `c${c} y${y} x${x}`).toBe(inside ? 10 * k + iy * w + ix + 100 * c : 99);
          }
        }
      }
      // one channel becomes three, defaults nrow 8 / padding 2 / padValue 0; a single image comes back unpadded
      const gray = makeGrid(torch.ones([3, 1, 4, 4]));
      expect(gray.shape).toEqual([3, 8, 20]);
      expect(gray.sum().item()).toBe(3 * 3 * 16);
      const single = makeGrid(torch.ones([1, 3, 4, 4]));
      expect(single.shape).toEqual([3, 4, 4]);
      expect(makeGrid([torch.zeros([3, 2, 2]), torch.ones([3, 2, 2])], { padding: 0 }).shape).toEqual([3, 2, 4]);
      expect(() => makeGrid(torch.zeros([0, 3, 2, 2]))).toThrow(RangeError);
      expect(() => makeGrid(torch.zeros([2, 3, 2, 2]), { nrow: 0 })).toThrow(RangeError);
    });
    expect(torch.memory().liveTensors).toBe(before);
  });
});
