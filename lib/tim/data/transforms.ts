/**
 * The official image preprocessing (ADM's center_crop_arr in tim/data/c2i_data.py) on host pixels,
 * bit-exact with Pillow: halve with a BOX filter while the short side is at least twice the target,
 * resize the short side to the target with BICUBIC, crop the center; then ToTensor + Normalize(0.5,
 * 0.5) maps bytes to [-1, 1] in float32.
 *
 * Resampling follows Pillow's Resample.c: separable (horizontal pass first), antialiased (the
 * kernel widens by the scale when shrinking), coefficients in 22-bit fixed point and an 8-bit
 * image between the passes. That is what makes the result byte-for-byte Pillow's.
 */
import type { HostImage } from '../../torch/io/image.js';

const PRECISION_BITS = 32 - 8 - 2;

interface Filter {
  support: number;
  fn(x: number): number;
}

const BOX: Filter = { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) };
const BICUBIC: Filter = {
  support: 2,
  fn: (x) => {
    const a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  },
};

/** Per output pixel: first input pixel, count, and fixed-point weights (Pillow's precompute_coeffs). */
function coeffs(inSize: number, outSize: number, f: Filter): { bounds: Int32Array; kk: Int32Array; ksize: number } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = f.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    // C's (int) cast truncates toward zero
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = f.fn((x + xmin - center + 0.5) * ss);
      ww += w[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x]! / ww : w[x]!;
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

function clip8(v: number): number {
  // v is a 32-bit accumulator in Pillow; >> PRECISION_BITS of a non-negative value below 2^30
  if (v >= 1 << (PRECISION_BITS + 8)) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

function resampleH(img: HostImage, outW: number, f: Filter): HostImage {
  const { width, height, channels: c, data } = img;
  const { bounds, kk, ksize } = coeffs(width, outW, f);
  const out = new Uint8Array(outW * height * c);
  for (let y = 0; y < height; y++) {
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2]!, xmax = bounds[xx * 2 + 1]!;
      for (let ch = 0; ch < c; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < xmax; x++) ss += data[(y * width + x + xmin) * c + ch]! * kk[xx * ksize + x]!;
        out[(y * outW + xx) * c + ch] = clip8(ss);
      }
    }
  }
  return { width: outW, height, channels: c, data: out };
}

function resampleV(img: HostImage, outH: number, f: Filter): HostImage {
  const { width, height, channels: c, data } = img;
  const { bounds, kk, ksize } = coeffs(height, outH, f);
  const out = new Uint8Array(width * outH * c);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2]!, ymax = bounds[yy * 2 + 1]!;
    for (let x = 0; x < width; x++) {
      for (let ch = 0; ch < c; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += data[((y + ymin) * width + x) * c + ch]! * kk[yy * ksize + y]!;
        out[(yy * width + x) * c + ch] = clip8(ss);
      }
    }
  }
  return { width, height: outH, channels: c, data: out };
}

/** Pillow's Image.resize((w, h), filter) for 8-bit images without alpha premultiplication (L, RGB). */
export function resize(img: HostImage, w: number, h: number, filter: 'box' | 'bicubic'): HostImage {
  const f = filter === 'box' ? BOX : BICUBIC;
  let out = img;
  if (w !== img.width) out = resampleH(out, w, f);
  if (h !== img.height) out = resampleV(out, h, f);
  return out;
}

/** Pillow's convert('RGB') (gray is replicated, alpha dropped) or convert('L') (ITU-R 601-2 luma). */
export function convertChannels(img: HostImage, channels: 1 | 3): HostImage {
  const { width, height, channels: c, data } = img;
  if (c === channels) return img;
  const n = width * height;
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    if (channels === 3) {
      if (c <= 2) {
        out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = data[i * c]!;
      } else {
        out[i * 3] = data[i * c]!; out[i * 3 + 1] = data[i * c + 1]!; out[i * 3 + 2] = data[i * c + 2]!;
      }
    } else if (c <= 2) {
      out[i] = data[i * c]!;
    } else {
      // Pillow: L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16
      out[i] = (data[i * c]! * 19595 + data[i * c + 1]! * 38470 + data[i * c + 2]! * 7471 + 0x8000) >>> 16;
    }
  }
  return { width, height, channels, data: out };
}

/** ADM's center_crop_arr: a size x size image. */
export function centerCropArr(img: HostImage, size: number): HostImage {
  let cur = img;
  while (Math.min(cur.width, cur.height) >= 2 * size) {
    cur = resize(cur, Math.floor(cur.width / 2), Math.floor(cur.height / 2), 'box');
  }
  const scale = size / Math.min(cur.width, cur.height);
  // Python's round() is half-to-even
  cur = resize(cur, roundHalfEven(cur.width * scale), roundHalfEven(cur.height * scale), 'bicubic');
  const cy = Math.floor((cur.height - size) / 2), cx = Math.floor((cur.width - size) / 2);
  const c = cur.channels;
  const out = new Uint8Array(size * size * c);
  for (let y = 0; y < size; y++) {
    out.set(cur.data.subarray(((y + cy) * cur.width + cx) * c, ((y + cy) * cur.width + cx + size) * c), y * size * c);
  }
  return { width: size, height: size, channels: c, data: out };
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** ToTensor + Normalize(mean 0.5, std 0.5) into `out` (CHW float32), computed in float32 as torch does. */
export function toUnitRange(img: HostImage, out: Float32Array): void {
  const { width, height, channels: c, data } = img;
  const plane = width * height;
  if (out.length !== plane * c) throw new RangeError(`toUnitRange: ${out.length} floats for a ${width}x${height}x${c} image`);
  const lut = new Float32Array(256);
  for (let v = 0; v < 256; v++) lut[v] = (Math.fround(v / 255) - 0.5) / 0.5;
  for (let i = 0; i < plane; i++) for (let ch = 0; ch < c; ch++) out[ch * plane + i] = lut[data[i * c + ch]!]!;
}
