/**
 * `tim sample` (lib/cli/sample.ts): a tiny class-conditional TiM (the network of
 * test/fixtures/tiny-train.yaml, its weights perturbed so the output depends on them: the official
 * init zeroes the final layer, and a model that predicts 0 returns its noise) saved as a run folder
 * <run>/config.yaml + checkpoints/<step>/{ema,model}.safetensors, then sampled through the CLI.
 * Checks the files and their contents, that the images are exactly what sample() makes from the
 * documented noise, reproducibility, every form of --ckpt, and the exit status and message of bad
 * flags (2) and missing files (1).
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TiM, sample, torch, transports } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { decodeLatents } from '../lib/tim/sampling/sampler.js';
import { decodePngHost, encodePng } from '../lib/torch/io/image.js';
import { readSamples } from '../lib/tim/eval/evaluate.js';
import { main } from '../lib/cli/tim.js';
import { runTim, type CliResult } from './helpers/cli.js';
import { imageSeed } from '../lib/cli/sample.js';
import { repoRoot } from './helpers/golden_adamw.js';

const FIXTURE = join(repoRoot, 'test', 'fixtures', 'tiny-train.yaml');
const dir = mkdtempSync(join(tmpdir(), 'tim-sample-'));
const run = join(dir, 'run');
const ckpt3 = join(run, 'checkpoints', '3');
const ckpt1 = join(run, 'checkpoints', '1');
const latentRun = join(dir, 'latent');
const decoderPath = join(dir, 'decoder.pt');

/** A TiM of `config` with every weight moved off the official init by N(0, 0.05²) noise of `seed`. */
function perturbedModel(config: string, seed: number): TiM {
  torch.manualSeed(seed);
  const m = TiM.fromOfficialConfig(config);
  torch.noGrad(() => {
    for (const p of m.parameters()) {
      torch.scope(() => p.add_(torch.randnLike(p).mul(0.05)));
      p.dispose();
    }
  });
  return m;
}

function writeCheckpoint(at: string, step: number, ema: TiM, model: TiM | null): void {
  mkdirSync(at, { recursive: true });
  ema.save(join(at, 'ema.safetensors'));
  if (model) model.save(join(at, 'model.safetensors'));
  writeFileSync(join(at, 'state.json'), JSON.stringify({ format: 'tim-torch.train', version: 1, step }));
}

beforeAll(() => {
  // the run folder: checkpoint 3 (ema = weights A, model = weights B) is the newest; 1 is older
  mkdirSync(run, { recursive: true });
  copyFileSync(FIXTURE, join(run, 'config.yaml'));
  const a = perturbedModel(FIXTURE, 1), b = perturbedModel(FIXTURE, 2), c = perturbedModel(FIXTURE, 3);
  writeCheckpoint(ckpt3, 3, a, b);
  writeCheckpoint(ckpt1, 1, c, c);
  for (const m of [a, b, c]) m.dispose();

  // a latent model (4 channels) and a TorchScript "decoder" to 3-channel images
  const doc = parseYaml(readFileSync(FIXTURE, 'utf8')) as { model: { network: { params: Record<string, unknown> } } };
  doc.model.network.params.in_channels = 4;
  mkdirSync(latentRun, { recursive: true });
  writeFileSync(join(latentRun, 'config.yaml'), toYaml(doc));
  const lat = perturbedModel(join(latentRun, 'config.yaml'), 4);
  writeCheckpoint(join(latentRun, 'checkpoints', '5'), 5, lat, null);
  lat.dispose();
  const dec = torch.jit.createModule('ToyDecoder');
  dec.define(`
def forward(self, x: Tensor) -> Tensor:
    return torch.tanh(x.narrow(1, 0, 3) - 0.5 * x.narrow(1, 1, 3))
`);
  dec.save(decoderPath);
  dec.dispose();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface RunResult extends CliResult { json: SummaryJson | null }
interface SummaryJson { ckpt: string; weights: string | null; step: number | null; classes: number[]; nfe: { nfe: number; grid: string; samples: string | null; images: string }[] }

/** Runs `tim sample ...` in this process (test/helpers/cli.ts); stderr (the progress lines) is captured rather than printed. */
async function tim(...args: string[]): Promise<RunResult> {
  return (await runTim('sample', ...args)) as RunResult;
}

/** The images and labels of a samples file, as arrays (the tensors are freed). */
function readFile(path: string): { shape: number[]; dtype: string; images: Float32Array; labels: number[]; labelsDtype: string; metadata: Record<string, string> } {
  const f = torch.loadSafetensors(path, { lazy: false });
  try {
    const { images, labels } = f.tensors;
    return {
      shape: images!.shape, dtype: images!.dtype, images: (images!.toTypedArray() as Float32Array).slice(),
      labels: Array.from(labels!.toTypedArray() as BigInt64Array, Number), labelsDtype: labels!.dtype, metadata: f.metadata ?? {},
    };
  } finally {
    for (const t of Object.values(f.tensors)) t.dispose();
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** The documented starting noise: per image, manualSeed(imageSeed(seed, class, i)), z = randn, then eps = randn([steps, ...]). */
function documentedNoise(seed: number, labels: number[], indices: number[], shape: number[], steps: number): { z: Tensor; eps: Tensor } {
  const zs: Tensor[] = [], es: Tensor[] = [];
  for (let k = 0; k < labels.length; k++) {
    torch.manualSeed(imageSeed(seed, labels[k]!, indices[k]!));
    zs.push(torch.randn(shape));
    es.push(torch.randn([steps, ...shape]));
  }
  return { z: torch.stack(zs, 0), eps: torch.stack(es, 1) };
}

describe('tim sample', () => {
  it('--help lists the options; tim --help lists the command', async () => {
    const h = await tim('--help');
    expect(h.code).toBe(0);
    for (const o of ['--ckpt <path>', '--config <yaml>', '--weights <ema|model>', '--class <list>', '--steps <list>', '--n <N>', '--cfg <scale>',
      '--cfg-interval <lo,hi>', '--stochasticity <s>', '--sample-type <transition|diffusion>', '--t-max', '--t-min', '--seed <N>', '--batch <N>',
      '--decoder <model.pt>', '--device', '--out <dir>', 'grid-nfe<N>.png', 'nfe-<N>.safetensors']) {
      expect(h.out).toContain(o);
    }
    const top: string[] = [];
    expect(await main(['--help'], (s) => top.push(s))).toBe(0);
    expect(top.join('\n')).toMatch(/^\s+sample\s+--ckpt <path> --out <dir>/m);
  });

  it('a sweep of --steps 1,2 writes a PNG per image, a grid and a samples file per step count', async () => {
    const out = join(dir, 'sweep');
    const r = await tim('--ckpt', run, '--class', '3,7', '--steps', '1,2', '--n', '3', '--out', out);
    expect(r.code, r.err).toBe(0);
    expect(r.json!.nfe.map((x) => x.nfe)).toEqual([1, 2]);
    // progress and a line per step count on stderr
    expect(r.err).toMatch(/nfe 1 +6\/6 images \[100%\]/);
    expect(r.err).toMatch(/nfe 2: 6 images in/);
    const names = ['3-0.png', '3-1.png', '3-2.png', '7-0.png', '7-1.png', '7-2.png'];
    const perNfe: Float32Array[] = [];
    for (const nfe of [1, 2]) {
      expect(readdirSync(join(out, `nfe-${nfe}`)).sort()).toEqual(names);
      const f = readFile(join(out, `nfe-${nfe}.safetensors`));
      expect(f.dtype).toBe('float32');
      expect(f.shape).toEqual([6, 1, 32, 32]);
      expect(f.labelsDtype).toBe('int64');
      expect(f.labels).toEqual([3, 3, 3, 7, 7, 7]);
      expect(f.metadata).toMatchObject({ nfe: String(nfe), seed: '0', step: '3', classes: '3,7', n: '3' });
      expect(Math.min(...f.images)).toBeGreaterThanOrEqual(-1);
      expect(Math.max(...f.images)).toBeLessThanOrEqual(1);
      expect(Math.max(...f.images) - Math.min(...f.images)).toBeGreaterThan(0.5); // not a constant image
      perNfe.push(f.images);
      // each PNG is its row of the samples file (class-major: 7-1 is row 4)
      torch.scope(() => {
        const images = torch.fromBuffer(f.images, 'float32', f.shape, { copy: true });
        names.forEach((name, k) => expect(readFileSync(join(out, `nfe-${nfe}`, name)).equals(encodePng(images.select(0, k))), name).toBe(true));
      });
      // the grid: a row per class, n columns of 32-pixel images 2 pixels apart
      const grid = decodePngHost(readFileSync(join(out, `grid-nfe${nfe}.png`)));
      expect([grid.height, grid.width]).toEqual([2 * 34 + 2, 3 * 34 + 2]);
      // what `tim eval --samples` reads
      const s = readSamples(join(out, `nfe-${nfe}.safetensors`));
      expect(s.images.shape).toEqual([6, 1, 32, 32]);
      s.images.dispose();
      s.labels?.dispose();
    }
    // the step count matters (the same noise gives another image at 2 steps)
    expect(maxDiff(perNfe[0]!, perNfe[1]!)).toBeGreaterThan(0.01);
  });

  it('at 1 step the images are sample() of the documented noise, bit for bit', async () => {
    const out = join(dir, 'direct1');
    const r = await tim('--ckpt', run, '--class', '2,5', '--steps', '1', '--n', '2', '--seed', '11', '--out', out);
    expect(r.code, r.err).toBe(0);
    const got = readFile(join(out, 'nfe-1.safetensors'));
    const want = torch.scope(() => {
      using model = TiM.load(join(ckpt3, 'ema.safetensors'));
      const { z } = documentedNoise(11, [2, 2, 5, 5], [0, 1, 0, 1], [1, 32, 32], 1);
      const y = torch.tensor([2, 2, 5, 5], { dtype: 'int64' });
      const x = sample(model, new transports.OTFM({ pMean: -0.4, pStd: 1.0, sigmaD: 1.0 }), { z, y, numSteps: 1 });
      return (x.clamp(-1, 1).contiguous().toTypedArray() as Float32Array).slice();
    });
    expect(maxDiff(got.images, want)).toBe(0);
  });

  it('guidance, its interval, stochasticity and the sample type reach the sampler', async () => {
    const out = join(dir, 'direct2');
    const r = await tim('--ckpt', run, '--class', '4', '--steps', '2', '--n', '3', '--seed', '5', '--cfg', '2.5', '--cfg-interval', '0.2,0.9',
      '--stochasticity', '0.3', '--sample-type', 'diffusion', '--out', out);
    expect(r.code, r.err).toBe(0);
    const got = readFile(join(out, 'nfe-2.safetensors'));
    expect(got.metadata).toMatchObject({ cfg: '2.5', cfg_interval: '0.2,0.9', stochasticity: '0.3', sample_type: 'diffusion' });
    const run2 = (o: { cfg: number; s: number; type: 'diffusion' | 'transition' }): Float32Array => torch.scope(() => {
      using model = TiM.load(join(ckpt3, 'ema.safetensors'));
      const { z, eps } = documentedNoise(5, [4, 4, 4], [0, 1, 2], [1, 32, 32], 2);
      const y = torch.tensor([4, 4, 4], { dtype: 'int64' });
      const x = sample(model, new transports.OTFM({ pMean: -0.4, pStd: 1.0, sigmaD: 1.0 }), {
        z, y, numSteps: 2, cfgScale: o.cfg, cfgLow: 0.2, cfgHigh: 0.9, stochasticityRatio: o.s, sampleType: o.type, noise: eps,
      });
      return (x.clamp(-1, 1).contiguous().toTypedArray() as Float32Array).slice();
    });
    expect(maxDiff(got.images, run2({ cfg: 2.5, s: 0.3, type: 'diffusion' }))).toBe(0);
    // and each setting changes the result (so the comparison above could fail)
    expect(maxDiff(got.images, run2({ cfg: 1, s: 0.3, type: 'diffusion' }))).toBeGreaterThan(1e-4);
    expect(maxDiff(got.images, run2({ cfg: 2.5, s: 0, type: 'diffusion' }))).toBeGreaterThan(1e-4);
    expect(maxDiff(got.images, run2({ cfg: 2.5, s: 0.3, type: 'transition' }))).toBeGreaterThan(1e-4);
  });

  it('--t-max/--t-min set the time grid; --no-safetensors writes the images only', async () => {
    const out = join(dir, 'tgrid');
    const r = await tim('--ckpt', run, '--class', '6', '--steps', '1', '--n', '1', '--t-max', '0.9', '--t-min', '0.1', '--no-safetensors', '--out', out);
    expect(r.code, r.err).toBe(0);
    expect(existsSync(join(out, 'nfe-1.safetensors'))).toBe(false);
    expect(r.json!.nfe[0]!.samples).toBeNull();
    const png = readFileSync(join(out, 'nfe-1', '6-0.png'));
    // a single image is its own grid, without padding (as torchvision's make_grid; gray becomes RGB)
    const grid = decodePngHost(readFileSync(join(out, 'grid-nfe1.png')));
    const cell = decodePngHost(png);
    expect([grid.width, grid.height, grid.channels]).toEqual([32, 32, 3]);
    expect(Array.from(grid.data.filter((_, k) => k % 3 === 0))).toEqual(Array.from(cell.data));
    const expected = (tMax?: number, tMin?: number): Buffer => torch.scope(() => {
      using model = TiM.load(join(ckpt3, 'ema.safetensors'));
      const { z } = documentedNoise(0, [6], [0], [1, 32, 32], 1);
      const x = sample(model, new transports.OTFM(), { z, y: torch.tensor([6], { dtype: 'int64' }), numSteps: 1, ...(tMax !== undefined ? { tMax, tMin } : {}) });
      return encodePng(x.clamp(-1, 1).select(0, 0));
    });
    expect(png.equals(expected(0.9, 0.1))).toBe(true);
    expect(png.equals(expected())).toBe(false);
  });

  it('frees every tensor and module it made, also when it fails', async () => {
    const live = (): [number, number] => [torch.memory().liveTensors, torch.jit.liveModuleHandles()];
    const before = live();
    const ok = await tim('--ckpt', run, '--class', '1,2', '--steps', '1,3', '--n', '3', '--batch', '4', '--cfg', '2', '--stochasticity', '0.1', '--out', join(dir, 'mem'));
    expect(ok.code, ok.err).toBe(0);
    expect(live()).toEqual(before);
    // a decoder that returns no image fails after the model and decoder are loaded
    const bad = join(dir, 'bad-decoder.pt');
    const dec = torch.jit.createModule('FlatDecoder');
    dec.define('def forward(self, x: Tensor) -> Tensor:\n    return x.flatten(1)\n');
    dec.save(bad);
    dec.dispose();
    const before2 = live();
    const r = await tim('--ckpt', run, '--class', '1', '--steps', '1', '--n', '2', '--decoder', bad, '--out', join(dir, 'mem2'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/the decoder returned \[2, 1024\]; expected images/);
    expect(live()).toEqual(before2);
  });

  it('the same seed writes the same bytes; another seed other images', async () => {
    const flags = ['--ckpt', run, '--class', '1,8', '--steps', '1,2', '--n', '2', '--stochasticity', '0.2'];
    const a = await tim(...flags, '--seed', '7', '--out', join(dir, 'seedA'));
    const b = await tim(...flags, '--seed', '7', '--out', join(dir, 'seedB'));
    const c = await tim(...flags, '--seed', '8', '--out', join(dir, 'seedC'));
    for (const r of [a, b, c]) expect(r.code, r.err).toBe(0);
    const files = ['grid-nfe1.png', 'grid-nfe2.png', 'nfe-1.safetensors', 'nfe-2.safetensors', 'nfe-1/1-0.png', 'nfe-2/8-1.png'];
    for (const f of files) {
      const bytes = (d: string): Buffer => readFileSync(join(dir, d, f));
      expect(bytes('seedA').equals(bytes('seedB')), f).toBe(true);
      expect(bytes('seedA').equals(bytes('seedC')), f).toBe(false);
    }
  });

  it('an image does not depend on the batch size or on the other classes asked for', async () => {
    const both = await tim('--ckpt', run, '--class', '3,7', '--steps', '2', '--n', '3', '--seed', '2', '--out', join(dir, 'both'));
    const alone = await tim('--ckpt', run, '--class', '7', '--steps', '2', '--n', '3', '--seed', '2', '--batch', '1', '--out', join(dir, 'alone'));
    expect(both.code, both.err).toBe(0);
    expect(alone.code, alone.err).toBe(0);
    const x = readFile(join(dir, 'both', 'nfe-2.safetensors')).images;
    const y = readFile(join(dir, 'alone', 'nfe-2.safetensors')).images;
    // the class-7 rows of the first run; batch 1 vs 6 may round differently in the network's matmuls
    expect(maxDiff(x.subarray(3 * 1024), y)).toBeLessThan(1e-4);
    // (other noise would move pixels by ~1; make sure these are not trivially equal images)
    expect(maxDiff(x.subarray(0, 3 * 1024), y)).toBeGreaterThan(0.01);
  });

  it('--ckpt takes a run folder (newest checkpoint), a checkpoint folder (ema or --weights model) or a file with --config', async () => {
    const flags = ['--class', '0', '--steps', '1', '--n', '2', '--seed', '3'];
    const go = async (name: string, ...args: string[]): Promise<{ r: RunResult; images: Float32Array }> => {
      const r = await tim(...flags, ...args, '--out', join(dir, name));
      expect(r.code, `${name}: ${r.err}`).toBe(0);
      return { r, images: readFile(join(dir, name, 'nfe-1.safetensors')).images };
    };
    const fromRun = await go('ck-run', '--ckpt', run);
    expect(fromRun.r.json).toMatchObject({ ckpt: join(ckpt3, 'ema.safetensors'), weights: 'ema', step: 3 });
    const fromDir = await go('ck-dir', '--ckpt', ckpt3);
    const fromFile = await go('ck-file', '--ckpt', join(ckpt3, 'ema.safetensors'), '--config', join(run, 'config.yaml'));
    // a file inside a run folder finds the run's config.yaml by itself
    const fromFileNoCfg = await go('ck-file2', '--ckpt', join(ckpt3, 'ema.safetensors'));
    const model = await go('ck-model', '--ckpt', ckpt3, '--weights', 'model');
    expect(model.r.json).toMatchObject({ ckpt: join(ckpt3, 'model.safetensors'), weights: 'model' });
    const older = await go('ck-old', '--ckpt', ckpt1);
    expect(maxDiff(fromRun.images, fromDir.images)).toBe(0);
    expect(maxDiff(fromRun.images, fromFile.images)).toBe(0);
    expect(maxDiff(fromRun.images, fromFileNoCfg.images)).toBe(0);
    expect(maxDiff(fromRun.images, model.images)).toBeGreaterThan(1e-3);
    expect(maxDiff(fromRun.images, older.images)).toBeGreaterThan(1e-3);
  });

  it('a latent model is decoded by --decoder; without one it is a usage error', async () => {
    const no = await tim('--ckpt', latentRun, '--class', '1', '--steps', '1', '--n', '2', '--out', join(dir, 'lat-no'));
    expect(no.code).toBe(2);
    expect(no.err).toMatch(/--decoder <model\.pt> is required.*4-channel latents/);
    const out = join(dir, 'lat');
    const r = await tim('--ckpt', latentRun, '--class', '1', '--steps', '1', '--n', '2', '--decoder', decoderPath, '--latent-std', '2', '--out', out);
    expect(r.code, r.err).toBe(0);
    const got = readFile(join(out, 'nfe-1.safetensors'));
    expect(got.shape).toEqual([2, 3, 32, 32]);
    expect(decodePngHost(readFileSync(join(out, 'nfe-1', '1-0.png'))).channels).toBe(3);
    const want = torch.scope(() => {
      using model = TiM.load(join(latentRun, 'checkpoints', '5', 'ema.safetensors'));
      const dec = torch.jit.load(decoderPath);
      try {
        const { z } = documentedNoise(0, [1, 1], [0, 1], [4, 32, 32], 1);
        const x = sample(model, new transports.OTFM({ pMean: -0.4, pStd: 1.0, sigmaD: 1.0 }), { z, y: torch.tensor([1, 1], { dtype: 'int64' }), numSteps: 1 });
        return (decodeLatents(dec, x, { std: 2 }).clamp(-1, 1).contiguous().toTypedArray() as Float32Array).slice();
      } finally {
        dec.dispose();
      }
    });
    expect(maxDiff(got.images, want)).toBe(0);
  });

  it('bad flags exit 2 with a message naming the flag, before anything is written', async () => {
    const out = join(dir, 'never');
    const base = ['--ckpt', run, '--out', out];
    const cases: [string[], RegExp][] = [
      [[...base, '--bogus'], /unknown option '--bogus'/],
      [['--out', out], /--ckpt <path> is required/],
      [['--ckpt', run], /--out <dir> is required/],
      [[...base, '--steps', '0'], /--steps must be a comma-separated list of integers/],
      [[...base, '--steps', '1,x'], /--steps must be a comma-separated list of integers/],
      [[...base, '--steps', '2,2'], /--steps lists 2 twice/],
      [[...base, '--class', '10'], /--class 10 is out of range: the model has 10 classes/],
      [[...base, '--class', '-1'], /--class must be/],
      [[...base, '--cfg-interval', '0.5'], /--cfg-interval must be two numbers lo,hi/],
      [[...base, '--cfg-interval', '0.8,0.2'], /--cfg-interval must be lo,hi with 0 <= lo <= hi <= 1/],
      [[...base, '--cfg', '0.5'], /--cfg must be a number >= 1/],
      [[...base, '--stochasticity', 'lots'], /--stochasticity must be a number >= 0/],
      [[...base, '--n', '0'], /--n must be an integer/],
      [[...base, '--weights', 'best'], /--weights must be ema or model/],
      [[...base, '--sample-type', 'euler'], /--sample-type must be transition or diffusion/],
      [[...base, '--t-max', '0.2', '--t-min', '0.5'], /--t-max \(0.2\) must be greater than --t-min/],
      [[...base, '--t-min', '2'], /the time grid must run from --t-max down to --t-min/],
      [[...base, '--latent-std', '2'], /--latent-std and --latent-mean scale the input of --decoder/],
      [[...base, '--device', 'tpu'], /--device must be cpu or cuda/],
      [['--ckpt', join(ckpt3, 'ema.safetensors'), '--weights', 'model', '--out', out], /--weights picks the file of a checkpoint folder/],
    ];
    for (const [args, msg] of cases) {
      const r = await tim(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toMatch(msg);
      expect(r.err, args.join(' ')).toContain('Usage: tim sample');
      expect(r.out).toBe('');
    }
    expect(existsSync(out)).toBe(false);
  });

  it('missing or unreadable files exit 1 with a message naming the file', async () => {
    const out = join(dir, 'never1');
    const alone = join(dir, 'alone-weights');
    mkdirSync(alone, { recursive: true });
    copyFileSync(join(ckpt3, 'ema.safetensors'), join(alone, 'w.safetensors'));
    const noCkptDir = join(dir, 'empty-run');
    mkdirSync(join(noCkptDir, 'checkpoints'), { recursive: true });
    const garbage = join(dir, 'garbage.yaml');
    writeFileSync(garbage, 'just: [a list\n');
    const netOnly = join(dir, 'net-only.yaml');
    writeFileSync(netOnly, 'input_size: 32\n');
    const cases: [string[], RegExp][] = [
      [['--ckpt', join(dir, 'nope.safetensors')], /--ckpt '.*nope\.safetensors': no such file or folder/],
      [['--ckpt', run, '--config', join(dir, 'nope.yaml')], /--config '.*nope\.yaml': no such file/],
      [['--ckpt', run, '--decoder', join(dir, 'nope.pt')], /--decoder '.*nope\.pt': no such file/],
      [['--ckpt', join(alone, 'w.safetensors')], /no config for '.*w\.safetensors': pass --config <yaml>/],
      [['--ckpt', noCkptDir], /run folder has no complete checkpoint/],
      [['--ckpt', dir], /is a folder but neither a run folder/],
      [['--ckpt', join(latentRun, 'checkpoints', '5'), '--weights', 'model'], /no model weights, '.*model\.safetensors' does not exist/],
      [['--ckpt', run, '--config', garbage], /config '.*garbage\.yaml' is not valid YAML/],
      [['--ckpt', run, '--config', netOnly], /config '.*net-only\.yaml' has no model\.network/],
      // weights that do not fit the config
      [['--ckpt', run, '--config', join(latentRun, 'config.yaml'), '--decoder', decoderPath], /cannot load '.*ema\.safetensors' with the network of '.*latent.*config\.yaml'/],
    ];
    for (const [args, msg] of cases) {
      const r = await tim(...args, '--out', out, '--class', '1', '--steps', '1', '--n', '1');
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.err, args.join(' ')).toMatch(msg);
      expect(r.out).toBe('');
    }
  });

  it('runs as a process: progress on stderr, a JSON summary on stdout, exit 0; bad usage exits 2', async () => {
    const cli = (...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> => new Promise((resolve, reject) => {
      const child = spawn('npx', ['tsx', join(repoRoot, 'lib', 'cli', 'tim.ts'), 'sample', ...args], { cwd: repoRoot, env: { ...process.env, OMP_NUM_THREADS: '1' }, timeout: 120_000 });
      let stdout = '', stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    const out = join(dir, 'proc');
    const ok = await cli('--ckpt', run, '--class', '0,9', '--steps', '1,2', '--n', '2', '--batch', '3', '--out', out);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/tim sample: .*ema\.safetensors \(ema, step 3\)/);
    expect(ok.stderr).toMatch(/nfe 2 +3\/4 images \[75%\]/);
    const j = JSON.parse(ok.stdout) as SummaryJson;
    expect(j.nfe.map((x) => x.samples)).toEqual([join(out, 'nfe-1.safetensors'), join(out, 'nfe-2.safetensors')]);
    const bad = await cli('--ckpt', run, '--steps', '0', '--out', out);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--steps must be/);
  });
});
