/**
 * `tim preprocess` (lib/cli/preprocess.ts): a few generated images in class folders (non-square,
 * large enough for the BOX halvings, PNG and JPEG) encoded with a tiny diffusers AutoencoderKL folder
 * (test/fixtures/golden/vae_kl_a) into the official C2I latent layout; the files hold what the VAE
 * gives for the centre-cropped image and its flip with the documented noise; a SIGKILLed run resumes
 * to the bytes of an uninterrupted one; other settings in the folder and bad flags are refused; and
 * `tim train` trains 2 steps on the folder.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import jpeg from 'jpeg-js';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { VAE } from '../lib/vae/index.js';
import { runTim } from './helpers/cli.js';
import { encodePngHost } from '../lib/torch/io/image.js';
import { ImageFolderDataset } from '../lib/tim/data/image_folder.js';
import { LatentFolderDataset } from '../lib/tim/data/latents.js';
import { imageNoiseSeed } from '../lib/cli/preprocess.js';
import { repoRoot } from './helpers/golden_adamw.js';

const VAE_DIR = join(repoRoot, 'test', 'fixtures', 'golden', 'vae_kl_a'); // AutoencoderKL, 4 latent channels, factor 2
const dir = mkdtempSync(join(tmpdir(), 'tim-preprocess-'));
const images = join(dir, 'images');
const SIZE = 16;

/** Smooth deterministic pixels (a VAE sees structure, not just noise) of w x h x c. */
function pixels(w: number, h: number, c: number, seed: number): Uint8Array {
  const d = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) {
    d[(y * w + x) * c + k] = Math.floor(127.5 + 120 * Math.sin((x * (k + 1) + seed) / 5) * Math.cos((y + 3 * seed * (k + 1)) / 7));
  }
  return d;
}

beforeAll(() => {
  // class 'cat' (label 0): 3 images, one of them nested; class 'dog' (label 1): 2 images, one JPEG
  const put = (rel: string, w: number, h: number, seed: number): void => {
    const p = join(images, rel);
    mkdirSync(join(p, '..'), { recursive: true });
    if (rel.endsWith('.jpg')) {
      const rgba = new Uint8Array(w * h * 4);
      const rgb = pixels(w, h, 3, seed);
      for (let i = 0; i < w * h; i++) { rgba.set(rgb.subarray(i * 3, i * 3 + 3), i * 4); rgba[i * 4 + 3] = 255; }
      writeFileSync(p, jpeg.encode({ data: rgba, width: w, height: h }, 95).data);
    } else writeFileSync(p, encodePngHost({ width: w, height: h, channels: 3, data: pixels(w, h, 3, seed) }));
  };
  put('cat/a.png', 40, 30, 1); // short side 30 < 2*16: BICUBIC only
  put('cat/b.v2.png', 70, 50, 2); // 50 >= 32: one BOX halving, then BICUBIC; a dotted name
  put('cat/sub/c.png', 16, 16, 3);
  put('dog/d.png', 33, 64, 4);
  put('dog/e.jpg', 48, 36, 5);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const tim = runTim;

const EXPECTED = ['cat/a.safetensors', 'cat/b.v2.safetensors', 'cat/sub/c.safetensors', 'dog/d.safetensors', 'dog/e.safetensors'];

describe('tim preprocess', () => {
  const out = join(dir, 'latents');

  it('writes one official latent file per image: latent (2, C, h, w) float32 of the image and its flip, label float32', async () => {
    const r = await tim('preprocess', '--images', images, '--vae', VAE_DIR, '--out', out, '--size', String(SIZE), '--batch', '2', '--device', 'cpu');
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/5 images in 2 classes/);
    expect(r.json).toMatchObject({ images: 5, classes: 2, written: 5, skipped: 0, family: 'AutoencoderKL', latentShape: [2, 4, 8, 8], config: { in_channels: 4, input_size: 8, num_classes: 2 } });
    expect(JSON.parse(readFileSync(join(out, 'preprocess.json'), 'utf8')).classes).toEqual(['cat', 'dog']);
    for (const f of EXPECTED) expect(existsSync(join(out, f)), f).toBe(true);

    // each file is what the VAE gives for the centre-cropped pixels and their flip, with the documented noise
    const data = new ImageFolderDataset(images, { size: SIZE });
    using vae = VAE.load(VAE_DIR);
    for (let i = 0; i < data.length; i++) {
      const rel = relative(images, data.files[i]!);
      const px = new Float32Array(3 * SIZE * SIZE);
      const label = await data.load(i, px);
      torch.scope(() => {
        const { tensors } = torch.loadSafetensors(join(out, EXPECTED[i]!), { lazy: false });
        expect(tensors.latent!.shape).toEqual([2, 4, 8, 8]);
        expect(tensors.latent!.dtype).toBe('float32');
        expect(tensors.label!.shape).toEqual([]);
        expect(tensors.label!.dtype).toBe('float32');
        expect(tensors.label!.item()).toBe(label);
        expect(label).toBe(EXPECTED[i]!.startsWith('cat') ? 0 : 1);
        torch.manualSeed(imageNoiseSeed(0, rel));
        const noise = torch.randn([2, 4, 8, 8]);
        const x = torch.fromBuffer(px, 'float32', [1, 3, SIZE, SIZE]);
        const zOri = vae.encodeLatents(x, { noise: noise.narrow(0, 0, 1) });
        const zFlip = vae.encodeLatents(x.flip([3]), { noise: noise.narrow(0, 1, 1) });
        const want = torch.cat([zOri, zFlip], 0);
        const err = tensors.latent!.sub(want).abs().max().item();
        expect(err, rel).toBeLessThan(1e-5);
        // the flip's latent is a different latent (the images are not symmetric)
        expect(tensors.latent!.select(0, 0).sub(tensors.latent!.select(0, 1)).abs().max().item()).toBeGreaterThan(1e-3);
      });
    }
    // and LatentFolderDataset (what tim train reads) takes the folder
    const ds = new LatentFolderDataset(out, { numClasses: 2 });
    expect(ds.length).toBe(5);
    expect(ds.sampleShape).toEqual([4, 8, 8]);
  });

  it('a run SIGKILLed after 3 files resumes, skipping them (kept as they were), to the latents of an uninterrupted run', async () => {
    const killed = join(dir, 'killed');
    const child = spawn(process.execPath, ['--import', 'tsx', 'lib/cli/tim.ts', 'preprocess', '--images', images, '--vae', VAE_DIR, '--out', killed, '--size', String(SIZE), '--batch', '4', '--device', 'cpu'], {
      cwd: repoRoot, env: { ...process.env, OMP_NUM_THREADS: '1', TIM_PREPROCESS_TEST_KILL_AT: '3' }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    const signal = await new Promise<string | null>((res) => child.on('exit', (_c, s) => res(s)));
    expect(signal, stderr).toBe('SIGKILL');
    const done = EXPECTED.filter((f) => existsSync(join(killed, f)));
    expect(done).toHaveLength(3);
    const hidden = (d: string): string[] => readdirSync(d, { recursive: true, encoding: 'utf8' }).filter((n) => n.split('/').some((p) => p.startsWith('.')));
    expect(hidden(killed)).toEqual([]); // nothing half-written

    const before = Object.fromEntries(done.map((f) => [f, readFileSync(join(killed, f))]));
    const r = await tim('preprocess', '--images', images, '--vae', VAE_DIR, '--out', killed, '--size', String(SIZE), '--batch', '3', '--device', 'cpu');
    expect(r.code, r.err).toBe(0);
    expect(r.json).toMatchObject({ written: 2, skipped: 3 });
    for (const f of done) expect(readFileSync(join(killed, f)).equals(before[f]!), `${f} kept`).toBe(true);
    // the same latents as the uninterrupted run: the noise is per image; only the VAE's float
    // rounding may differ with the batch grouping (here 4 then 3, there 2)
    torch.scope(() => {
      for (const f of EXPECTED) {
        const a = torch.loadSafetensors(join(killed, f), { lazy: false }).tensors, b = torch.loadSafetensors(join(out, f), { lazy: false }).tensors;
        expect(a.latent!.sub(b.latent!).abs().max().item(), f).toBeLessThan(1e-5);
        expect(a.label!.item()).toBe(b.label!.item());
      }
    });
  }, 120_000);

  it('refuses a folder made with other settings, and bad flags, writing nothing', async () => {
    const before = readFileSync(join(out, 'preprocess.json'));
    let r = await tim('preprocess', '--images', images, '--vae', VAE_DIR, '--out', out, '--size', String(SIZE), '--latent', 'mean');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/holds latents made with other settings \(latent: "sample" there, "mean" now.*\[E_STATE\]/);
    expect(readFileSync(join(out, 'preprocess.json')).equals(before)).toBe(true);

    const never = join(dir, 'never');
    const cases: [string[], number, RegExp][] = [
      [['--vae', VAE_DIR, '--out', never], 2, /--images <dir> is required/],
      [['--images', images, '--vae', VAE_DIR, '--out', join(images, 'latents')], 2, /is inside --images/],
      [['--images', images, '--vae', VAE_DIR, '--out', never, '--size', '15'], 2, /--size 15 is not a multiple of the VAE's downsampling factor 2/],
      [['--images', images, '--vae', VAE_DIR, '--out', never, '--latent', 'mode'], 2, /--latent/],
      [['--images', images, '--vae', join(dir, 'no-vae'), '--out', never], 1, /--vae '.*no-vae': no such folder \[E_IO\]/],
      [['--images', join(dir, 'no-images'), '--vae', VAE_DIR, '--out', never], 1, /--images '.*no-images': no such folder \[E_IO\]/],
    ];
    for (const [flags, code, msg] of cases) {
      r = await tim('preprocess', ...flags);
      expect(r.code, flags.join(' ')).toBe(code);
      expect(r.err, flags.join(' ')).toMatch(msg);
    }
    expect(existsSync(never)).toBe(false);
  });

  it('takes an AutoencoderDC folder too: its latent (no posterior), the image and its flip', async () => {
    const dcDir = join(repoRoot, 'test', 'fixtures', 'golden', 'vae_dc_a');
    const dcOut = join(dir, 'latents-dc');
    const r = await tim('preprocess', '--images', images, '--vae', dcDir, '--out', dcOut, '--size', String(SIZE), '--device', 'cpu');
    expect(r.code, r.err).toBe(0);
    using vae = VAE.load(dcDir);
    const side = SIZE / vae.downsampleFactor;
    expect(r.json).toMatchObject({ family: 'AutoencoderDC', latent: 'mean', latentShape: [2, 4, side, side] });
    expect(JSON.parse(readFileSync(join(dcOut, 'preprocess.json'), 'utf8')).settings).toMatchObject({ family: 'AutoencoderDC', latent: 'mean', seed: null });
    const data = new ImageFolderDataset(images, { size: SIZE });
    const px = new Float32Array(3 * SIZE * SIZE);
    await data.load(3, px); // dog/d.png
    torch.scope(() => {
      const x = torch.fromBuffer(px, 'float32', [1, 3, SIZE, SIZE]);
      const want = torch.cat([vae.encodeLatents(x), vae.encodeLatents(x.flip([3]))], 0);
      const got = torch.loadSafetensors(join(dcOut, 'dog', 'd.safetensors'), { lazy: false }).tensors.latent!;
      expect(got.shape).toEqual([2, 4, side, side]);
      expect(got.sub(want).abs().max().item()).toBeLessThan(1e-5);
    });
  });

  it('tim train trains on the folder (data_type latent): 2 steps, a checkpoint', async () => {
    const doc = parseYaml(readFileSync(join(repoRoot, 'test', 'fixtures', 'tiny-train.yaml'), 'utf8')) as Record<string, any>;
    Object.assign(doc.model.network.params, { in_channels: 4, input_size: 8, patch_size: 2, num_classes: 2 });
    doc.data = { data_type: 'latent', dataset: { latent_dir: out }, dataloader: { num_workers: 0, batch_size: 2 } };
    Object.assign(doc.training, { max_train_steps: 2, checkpointing_steps: 2, validation_steps: 1000, gradient_accumulation_steps: 1 });
    const config = join(dir, 'train.yaml');
    writeFileSync(config, toYaml(doc));
    const run = join(dir, 'run');
    const r = await tim('train', '--config', config, '--out', run, '--max-steps', '2', '--device', 'cpu');
    expect(r.code, r.err).toBe(0);
    expect(existsSync(join(run, 'checkpoints', '2', 'ema.safetensors'))).toBe(true);
    const metrics = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const losses = metrics.filter((m) => typeof m.loss === 'number');
    expect(losses.length).toBeGreaterThanOrEqual(2);
    for (const m of losses) expect(Number.isFinite(m.loss)).toBe(true);
  }, 120_000);
});
