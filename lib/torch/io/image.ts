/**
 * Images: PNG encode/decode between tensors and bytes, JPEG decode, atomic PNG files and image
 * grids (torchvision's make_grid), for sample sheets and image-folder datasets.
 *
 *   const grid = makeGrid(samples, { nrow: 8 });   // samples (N,C,H,W) in [-1, 1]
 *   savePng('samples.png', grid);                   // written atomically
 *
 * Float tensors are taken to be in [-1, 1] and become bytes as the official TiM sampler makes
 * them: uint8(clamp(255 * (x + 1) / 2, 0, 255)), truncating. uint8 tensors are written as they are.
 * PNG and JPEG codecs are pure JS (pngjs, jpeg-js), so this works wherever the addon does.
 */
import { PNG, type ColorType } from 'pngjs';
import jpeg from 'jpeg-js';
import * as torch from '../index.js';
import type { Tensor } from '../tensor.js';
import { TorchError, argError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

/** Decoded pixels on the host: 8-bit, HWC (row-major, channels interleaved). */
export interface HostImage {
  width: number;
  height: number;
  /** 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. */
  channels: 1 | 2 | 3 | 4;
  data: Uint8Array;
}

const PNG_COLOR_TYPE: Record<number, ColorType> = { 1: 0, 2: 4, 3: 2, 4: 6 };

// ---- encoding ----------------------------------------------------------------------------------

/** The uint8 (H, W, C) pixels of an image tensor (C,H,W) or (H,W), as the official sampler rounds. */
export function toHostImage(t: Tensor): HostImage {
  if (!(t instanceof torch.Tensor) || t.isDisposed) throw argError('type', 'toHostImage: expected a live Tensor');
  const shape = t.shape;
  if (shape.length !== 2 && shape.length !== 3) {
    throw argError('range', `image tensor must be (C,H,W) or (H,W), got shape [${shape.join(', ')}]`, 'E_SHAPE');
  }
  const [c, h, w] = shape.length === 2 ? [1, shape[0]!, shape[1]!] : (shape as [number, number, number]);
  if (c < 1 || c > 4) throw argError('range', `image tensor must have 1 to 4 channels, got ${c} (shape [${shape.join(', ')}])`, 'E_SHAPE');
  if (h < 1 || w < 1) throw argError('range', `image tensor is empty (shape [${shape.join(', ')}])`, 'E_SHAPE');
  const dt = t.dtype;
  if (dt !== 'uint8' && dt !== 'float32' && dt !== 'float64' && dt !== 'float16' && dt !== 'bfloat16') {
    throw argError('type', `image tensor must be uint8 or floating point in [-1, 1], got ${dt}`, 'E_DTYPE');
  }
  const data = torch.scope(() => {
    let u8 = t.detach().to('cpu');
    if (dt !== 'uint8') {
      // (x + 1) / 2 * 255 in float32, as the official sampler; NaN becomes 0 rather than undefined bytes
      u8 = u8.to('float32').add(1).div(2).mul(255).nanToNum(0, 255, 0).clamp(0, 255).to('uint8');
    }
    const hwc = (shape.length === 2 ? u8.unsqueeze(-1) : u8.permute(1, 2, 0)).contiguous();
    return (hwc.toTypedArray() as Uint8Array).slice();
  });
  return { width: w, height: h, channels: c as 1 | 2 | 3 | 4, data };
}

/** PNG bytes of an image tensor (C,H,W) or (H,W): floats in [-1, 1], or uint8. 1/2/3/4 channels
 *  become gray / gray+alpha / RGB / RGBA PNGs. */
export function encodePng(t: Tensor): Buffer {
  return encodePngHost(toHostImage(t));
}

/** PNG bytes of host pixels. */
export function encodePngHost(img: HostImage): Buffer {
  const { width, height, channels, data } = img;
  if (data.length !== width * height * channels) {
    throw argError('range', `encodePngHost: ${data.length} bytes for a ${width}x${height}x${channels} image`, 'E_SHAPE');
  }
  const colorType = PNG_COLOR_TYPE[channels]!;
  const png = new PNG({ width, height, colorType, inputColorType: colorType, inputHasAlpha: channels === 2 || channels === 4, bitDepth: 8 });
  // input and output color types match, so pngjs writes these bytes as they are
  png.data = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return PNG.sync.write(png, { colorType, inputColorType: colorType, inputHasAlpha: channels === 2 || channels === 4, bitDepth: 8 });
}

/** Saves an image tensor as a PNG file, replacing `path` atomically (lib/torch/io/atomic.ts). */
export function savePng(path: string, t: Tensor): void {
  if (typeof path !== 'string' || path === '') throw argError('type', 'savePng: path must be a non-empty string');
  writeFileAtomic(path, encodePng(t), 'savePng');
}

// ---- decoding ----------------------------------------------------------------------------------

function isPng(b: Uint8Array): boolean {
  return b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;
}
function isJpeg(b: Uint8Array): boolean {
  return b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

/** Host pixels of PNG bytes (any color type and bit depth; 16-bit is scaled to 8). `name` is for errors. */
export function decodePngHost(bytes: Uint8Array, name = 'PNG data'): HostImage {
  if (!(bytes instanceof Uint8Array)) throw argError('type', 'decodePng: expected a Buffer or Uint8Array');
  if (!isPng(bytes)) throw new TorchError(`'${name}': not a PNG file (bad signature)`, 'E_FORMAT');
  let png: PNG;
  try {
    png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    throw new TorchError(`'${name}': invalid PNG: ${(e as Error).message}`, 'E_FORMAT');
  }
  const meta = png as PNG & { colorType?: number; alpha?: boolean };
  const color = ((meta.colorType ?? 6) & 3) !== 0; // color or palette
  const alpha = Boolean(meta.alpha);
  const channels = ((color ? 3 : 1) + (alpha ? 1 : 0)) as 1 | 2 | 3 | 4;
  const n = png.width * png.height;
  // pngjs hands back RGBA whatever the file held
  const rgba = png.data;
  if (rgba.length !== n * 4) throw new TorchError(`'${name}': invalid PNG: decoded ${rgba.length} bytes for ${png.width}x${png.height}`, 'E_FORMAT');
  const data = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    const s = i * 4, d = i * channels;
    if (color) {
      data[d] = rgba[s]!; data[d + 1] = rgba[s + 1]!; data[d + 2] = rgba[s + 2]!;
      if (alpha) data[d + 3] = rgba[s + 3]!;
    } else {
      data[d] = rgba[s]!;
      if (alpha) data[d + 1] = rgba[s + 3]!;
    }
  }
  return { width: png.width, height: png.height, channels, data };
}

/** Host pixels (RGB) of JPEG bytes. Corrupt data is an error rather than a half-grey picture. */
export function decodeJpegHost(bytes: Uint8Array, name = 'JPEG data'): HostImage {
  let img: { width: number; height: number; data: Uint8Array };
  try {
    img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, tolerantDecoding: false, maxResolutionInMP: 200, maxMemoryUsageInMB: 1024 });
  } catch (e) {
    throw new TorchError(`'${name}': invalid JPEG: ${(e as Error).message}`, 'E_FORMAT');
  }
  const n = img.width * img.height;
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    data[i * 3] = img.data[i * 4]!;
    data[i * 3 + 1] = img.data[i * 4 + 1]!;
    data[i * 3 + 2] = img.data[i * 4 + 2]!;
  }
  return { width: img.width, height: img.height, channels: 3, data };
}

/** Host pixels of PNG or JPEG bytes (told apart by their signature). */
export function decodeImageHost(bytes: Uint8Array, name = 'image data'): HostImage {
  if (isPng(bytes)) return decodePngHost(bytes, name);
  if (isJpeg(bytes)) return decodeJpegHost(bytes, name);
  throw new TorchError(`'${name}': not a PNG or JPEG file (unknown signature)`, 'E_FORMAT');
}

/** A uint8 (C, H, W) tensor of host pixels. */
export function hostImageToTensor(img: HostImage): Tensor {
  return torch.scope(() => {
    const hwc = torch.fromBuffer(img.data, 'uint8', [img.height, img.width, img.channels], { copy: true });
    return hwc.permute(2, 0, 1).contiguous();
  });
}

/** A uint8 (C, H, W) tensor of PNG bytes; C is the file's channel count (1, 2, 3 or 4). */
export function decodePng(bytes: Uint8Array, name?: string): Tensor {
  return hostImageToTensor(decodePngHost(bytes, name));
}

// ---- grids -------------------------------------------------------------------------------------

export interface GridOptions {
  /** Images per row (default 8). */
  nrow?: number;
  /** Pixels between images and around the border (default 2). */
  padding?: number;
  /** Value of the padding, in the images' own range (default 0 as torchvision; -1 is black for [-1, 1] images). */
  padValue?: number;
}

/**
 * torchvision.utils.make_grid: a (C, H', W') tensor of the images (N, C, H, W) (or a list of
 * (C, H, W)) in rows of `nrow`, `padding` pixels apart. As torchvision, one-channel images become
 * three-channel and a single image comes back as it is, without padding.
 */
export function makeGrid(images: Tensor | Tensor[], o: GridOptions = {}): Tensor {
  const nrow = o.nrow ?? 8;
  const padding = o.padding ?? 2;
  const padValue = o.padValue ?? 0;
  if (!Number.isInteger(nrow) || nrow < 1) throw argError('range', `makeGrid: nrow must be a positive integer, got ${nrow}`);
  if (!Number.isInteger(padding) || padding < 0) throw argError('range', `makeGrid: padding must be a non-negative integer, got ${padding}`);
  if (typeof padValue !== 'number') throw argError('type', 'makeGrid: padValue must be a number');
  return torch.scope(() => {
    let t: Tensor;
    if (Array.isArray(images)) {
      if (images.length === 0) throw argError('range', 'makeGrid: no images', 'E_SHAPE');
      t = torch.stack(images, 0);
    } else {
      if (!(images instanceof torch.Tensor)) throw argError('type', 'makeGrid: expected a Tensor (N,C,H,W) or a list of (C,H,W) tensors');
      t = images;
    }
    if (t.dim === 3) t = t.unsqueeze(0);
    if (t.dim !== 4) throw argError('range', `makeGrid: expected (N,C,H,W), got shape [${t.shape.join(', ')}]`, 'E_SHAPE');
    if (t.shape[1] === 1) t = torch.cat([t, t, t], 1);
    const [n, c, h, w] = t.shape as [number, number, number, number];
    if (n === 0) throw argError('range', 'makeGrid: no images', 'E_SHAPE');
    if (n === 1) return t.squeeze(0).clone();
    const xmaps = Math.min(nrow, n);
    const ymaps = Math.ceil(n / xmaps);
    const cellH = h + padding, cellW = w + padding;
    const grid = torch.full([c, cellH * ymaps + padding, cellW * xmaps + padding], padValue, { dtype: t.dtype, device: t.device });
    for (let k = 0; k < n; k++) {
      const y = Math.floor(k / xmaps), x = k % xmaps;
      grid.narrow(1, y * cellH + padding, h).narrow(2, x * cellW + padding, w).copy_(t.select(0, k));
    }
    return grid;
  });
}
