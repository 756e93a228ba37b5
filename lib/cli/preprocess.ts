/**
 * `tim preprocess --images <dir> --vae <dir> --out <dir> [--size 256] [--batch N]`: your own images
 * into the official C2I latent folder that `tim train` (data_type latent) reads, as the official
 * projects/preprocess/image_latent_c2i.py does (that script imports a get_va_vae that does not
 * exist, so it does not run as shipped):
 *
 *   images   an ImageFolder: <dir>/<class>/**\/*.png|jpg|jpeg, classes = sorted subfolder names → 0, 1, ...
 *   pixels   ADM's center_crop_arr (BOX halvings while the short side is ≥ 2·size, BICUBIC to size,
 *            centre crop; Pillow's resampling bit for bit, lib/tim/data/transforms.ts), to [-1, 1]
 *   latents  the VAE's official-normalised latents of the image and of its horizontal flip
 *            (sd_vae_encode: posterior sample, (z − mean) / std; dc_ae_encode for DC-AE)
 *   files    lib/tim/data/latent_writer.ts: <out>/<class>/<name>.safetensors {latent (2,C,h,w), label}
 *
 * The official encoder samples the posterior from the global generator; here each image's noise is
 * seeded by (--seed, the image's path below --images), so the files do not depend on --batch, on
 * the order, or on a resume. --latent mean takes the posterior mean instead. Files are written
 * atomically and existing ones are skipped: a killed run is resumed by running it again.
 * <out>/preprocess.json records the settings and the class names; a folder made with other
 * settings is refused rather than mixed.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/tensor.js';
import { TorchError } from '../torch/errors.js';
import type { Device } from '../torch/dtype.js';
import { writeFileAtomic } from '../torch/io/atomic.js';
import { ImageFolderDataset } from '../tim/data/image_folder.js';
import { latentPathFor, writeLatentFile } from '../tim/data/latent_writer.js';
import { ProgressDisplay, formatDuration } from '../tim/train/progress.js';
import { UsageError, choiceOption, deviceOption, intOption, type CommandSpec, type Parsed } from './args.js';

export const PREPROCESS: CommandSpec = {
  name: 'preprocess',
  brief: 'your images (class subfolders) -> the official C2I latent folder `tim train` reads',
  summary: 'Encode a folder of images (one subfolder per class) with a diffusers VAE into the official preprocessed C2I latent layout: per image a safetensors file with the latents of the image and of its horizontal flip and its class label, after the official ADM centre crop.',
  usage: '--images <dir> --vae <dir> --out <dir>',
  positionals: [0, 0],
  details: [
    'Files under --out: <class>/<name>.safetensors for each image <images>/<class>/<name>.<ext> (nested folders',
    'kept), holding latent float32 (2, C, size/f, size/f) (the image, its flip) and label float32 (the class',
    'index: class folders sorted by name), and preprocess.json (settings, class names). Train on it with a config',
    'whose data has data_type: latent and dataset.latent_dir: <out>, and network.params in_channels C,',
    'input_size size/f (f: the VAE\'s downsampling factor, 8 for SD-VAE, 32 for DC-AE), num_classes.',
    'Existing files are skipped (every file is written whole or not at all): run the command again to resume.',
    'Images: PNG and JPEG (JPEG decoded by jpeg-js, which may differ from libjpeg by a level here and there).',
  ].join('\n'),
  options: {
    images: { value: true, arg: 'dir', help: 'image folder: <dir>/<class>/<images> (PNG, JPEG)' },
    vae: { value: true, arg: 'dir', help: 'diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors)' },
    out: { value: true, arg: 'dir', help: 'latent folder to write (created if missing)' },
    size: { value: true, arg: 'px', help: 'image side after the centre crop (default 256)' },
    batch: { value: true, arg: 'N', help: 'images per VAE call (default 8)' },
    latent: { value: true, arg: 'sample|mean', help: 'KL VAEs: the posterior sample as the official script (default) or its mean' },
    seed: { value: true, arg: 'N', help: 'seed of the posterior noise (default 0)' },
    device: { value: true, arg: 'cpu|cuda', help: 'default: cuda when available' },
    threads: { value: true, arg: 'N', help: 'intra-op CPU threads (default: libtorch\'s)' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};

export const PREPROCESS_FILE = 'preprocess.json';

export interface PreprocessSettings {
  images: string;
  vae: string;
  out: string;
  size: number;
  batch: number;
  latent: 'sample' | 'mean';
  seed: number;
  device: Device | null;
  threads: number | null;
}

export function preprocessSettings(p: Parsed): PreprocessSettings {
  const C = 'preprocess';
  const str = (k: string): string => {
    const v = p.options[k];
    if (typeof v !== 'string' || v === '') throw new UsageError(`--${k} <dir> is required`, C);
    return v;
  };
  const images = str('images'), vae = str('vae'), out = str('out');
  if (resolve(out) === resolve(images) || resolve(out).startsWith(resolve(images) + sep)) {
    throw new UsageError(`--out '${out}' is inside --images '${images}': the latent files would be read as a class folder next time`, C);
  }
  return {
    images, vae, out,
    size: intOption(p, 'size', C, 8, 8192) ?? 256,
    batch: intOption(p, 'batch', C, 1, 4096) ?? 8,
    latent: choiceOption(p, 'latent', C, ['sample', 'mean']) ?? 'sample',
    seed: intOption(p, 'seed', C, 0) ?? 0,
    device: deviceOption(p, 'device', C) ?? null,
    threads: intOption(p, 'threads', C, 1) ?? null,
  };
}

/** The posterior-noise seed of one image: SHA-256 of (seed, its path below the image folder), 63 bits. */
export function imageNoiseSeed(seed: number, relPath: string): bigint {
  const h = createHash('sha256').update(`${seed}\0${relPath.split(sep).join('/')}`).digest();
  return h.readBigUInt64LE(0) & ((1n << 63n) - 1n);
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export async function runPreprocess(p: Parsed, print: (s: string) => void, write?: (s: string) => void): Promise<number> {
  const s = preprocessSettings(p);
  if (!isDir(s.images)) throw new TorchError(`--images '${s.images}': no such folder`, 'E_IO');
  if (!isDir(s.vae)) throw new TorchError(`--vae '${s.vae}': no such folder`, 'E_IO');
  const data = new ImageFolderDataset(s.images, { size: s.size, channels: 3 });
  if (s.threads !== null) torch.setNumThreads(s.threads);
  const device: Device = s.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
  const { VAE } = await import('../vae/index.js');
  const vae = VAE.load(s.vae, { device });
  const display = new ProgressDisplay(write ?? ((x) => process.stderr.write(x)), write === undefined && Boolean(process.stderr.isTTY));
  try {
    if (s.size % vae.downsampleFactor !== 0) {
      throw new UsageError(`--size ${s.size} is not a multiple of the VAE's downsampling factor ${vae.downsampleFactor}`, 'preprocess');
    }
    const latentSide = s.size / vae.downsampleFactor;
    const sampled = s.latent === 'sample' && vae.family === 'AutoencoderKL';
    const settings = {
      vae: resolve(s.vae), family: vae.family, size: s.size, latent: sampled ? 'sample' : 'mean', seed: sampled ? s.seed : null,
      latent_shape: [2, vae.latentChannels, latentSide, latentSide],
    };
    const manifest = join(s.out, PREPROCESS_FILE);
    if (existsSync(manifest)) {
      let prev: { settings?: Record<string, unknown>; classes?: string[] };
      try {
        prev = JSON.parse(readFileSync(manifest, 'utf8'));
      } catch (e) {
        throw new TorchError(`'${manifest}': unreadable (${(e as Error).message}); use another --out`, 'E_FORMAT');
      }
      const differ = Object.keys(settings).filter((k) => JSON.stringify((settings as Record<string, unknown>)[k]) !== JSON.stringify(prev.settings?.[k]));
      if (differ.length) {
        throw new TorchError(`--out '${s.out}' holds latents made with other settings (${differ.map((k) => `${k}: ${JSON.stringify(prev.settings?.[k])} there, ${JSON.stringify((settings as Record<string, unknown>)[k])} now`).join('; ')}); use another --out`, 'E_STATE');
      }
      if (JSON.stringify(prev.classes) !== JSON.stringify(data.classes)) {
        throw new TorchError(`--out '${s.out}' was made from other class folders (${(prev.classes ?? []).length} there, ${data.classes.length} now): the labels would not agree; use another --out`, 'E_STATE');
      }
    } else {
      try {
        mkdirSync(s.out, { recursive: true });
      } catch (e) {
        throw new TorchError(`--out '${s.out}': cannot create the folder: ${(e as Error).message}`, 'E_IO');
      }
      writeFileAtomic(manifest, JSON.stringify({ format: 'tim-torch.c2i-latents', version: 1, settings, classes: data.classes }, null, 1) + '\n', 'tim preprocess');
    }

    const todo: number[] = [];
    for (let i = 0; i < data.length; i++) if (!existsSync(latentPathFor(s.images, data.files[i]!, s.out))) todo.push(i);
    const skipped = data.length - todo.length;
    display.message(
      `tim preprocess: ${data.length} images in ${data.classes.length} classes -> ${s.out} (${vae.family}, latents [${settings.latent_shape.join(', ')}], ${settings.latent}, ${device})` +
      (skipped ? `; ${skipped} already done` : ''),
    );
    const killAt = Number(process.env.TIM_PREPROCESS_TEST_KILL_AT ?? NaN); // tests: SIGKILL after this many files
    const t0 = performance.now();
    const plane = 3 * s.size * s.size;
    let written = 0;
    for (let b = 0; b < todo.length; b += s.batch) {
      const idx = todo.slice(b, b + s.batch);
      const n = idx.length;
      const pixels = new Float32Array(n * plane);
      const labels = await Promise.all(idx.map((i, k) => data.load(i, pixels.subarray(k * plane, (k + 1) * plane))));
      const latents = torch.scope(() => {
        const x = torch.fromBuffer(pixels, 'float32', [n, 3, s.size, s.size]);
        // the image and its flip in one VAE call: rows 0..n-1 the images, n..2n-1 their flips
        const both = torch.cat([x, x.flip([3])], 0);
        let noise: Tensor | undefined;
        if (sampled) {
          const saved = torch.getRngState();
          try {
            const per = idx.map((i) => {
              torch.manualSeed(imageNoiseSeed(s.seed, relative(s.images, data.files[i]!)));
              return torch.randn([2, vae.latentChannels, latentSide, latentSide]);
            });
            noise = torch.cat([torch.stack(per.map((t) => t.select(0, 0)), 0), torch.stack(per.map((t) => t.select(0, 1)), 0)], 0);
          } finally {
            torch.setRngState(saved);
          }
        }
        const z = vae.encodeLatents(both.to(device), sampled ? { sample: true, noise: noise! } : { sample: false });
        // (n, 2, C, h, w): the official torch.stack([z_ori, z_hflip], dim=1)
        return torch.stack([z.narrow(0, 0, n), z.narrow(0, n, n)], 1).to({ device: 'cpu', dtype: 'float32' }).contiguous();
      });
      try {
        for (let k = 0; k < n; k++) {
          const path = latentPathFor(s.images, data.files[idx[k]!]!, s.out);
          mkdirSync(dirname(path), { recursive: true });
          torch.scope(() => writeLatentFile(path, latents.select(0, k), labels[k]!));
          written++;
          if (written === killAt) process.kill(process.pid, 'SIGKILL');
        }
      } finally {
        latents.dispose();
      }
      const rate = (written * 1000) / Math.max(1, performance.now() - t0);
      display.update(`tim preprocess: ${skipped + written}/${data.length} images [${Math.floor((100 * (skipped + written)) / data.length)}%]  ${rate.toFixed(2)} img/s  ETA ${formatDuration(rate > 0 ? (todo.length - written) / rate : NaN)}`);
      await new Promise<void>((r) => setImmediate(r));
    }
    display.message(`tim preprocess: ${written} written, ${skipped} skipped in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    print(JSON.stringify({
      out: s.out, images: data.length, classes: data.classes.length, written, skipped, family: vae.family,
      latentShape: settings.latent_shape, latent: settings.latent,
      config: { in_channels: vae.latentChannels, input_size: latentSide, num_classes: data.classes.length },
    }));
    return 0;
  } finally {
    display.end();
    vae.dispose();
  }
}
