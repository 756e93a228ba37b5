/**
 * `tim sample` from an official-format release file: a state dict with the official parameter names
 * and no metadata, without the REPA projector (as c2i_model_256.safetensors), with an official-layout
 * YAML. Evaluation runs (--num): PNGs, run.json/progress.json, samples.npz as numpy reads it; a run
 * SIGKILLed mid-batch resumes to the same bytes as an uninterrupted one; random labels are
 * torch.randint under the seed; bf16; --vae with a tiny diffusers AutoencoderKL folder; bad
 * arguments and mismatched files are clear errors with exit 2 / 1 and write nothing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TiM, torch } from '../lib/index.js';
import { runTim } from './helpers/cli.js';
import { decodePngHost } from '../lib/torch/io/image.js';
import { NpzFile } from '../lib/torch/io/npz.js';
import { imageName } from '../lib/cli/sample_run.js';
import { repoRoot } from './helpers/golden_adamw.js';
import { PYTHON, pythonEnv } from './helpers/python.js';

const FIXTURE = join(repoRoot, 'test', 'fixtures', 'tiny-train.yaml');
const dir = mkdtempSync(join(tmpdir(), 'tim-sample-vae-'));
const yaml = join(dir, 'tim_tiny_rgb.yaml');
const release = join(dir, 'c2i_model_tiny.safetensors');

/** An official-layout YAML: the tiny network with 3 input channels (RGB pixels, 32x32). */
function writeYaml(path: string, params: Record<string, unknown>): void {
  const doc = parseYaml(readFileSync(FIXTURE, 'utf8')) as { model: { network: { params: Record<string, unknown> } } };
  Object.assign(doc.model.network.params, params);
  writeFileSync(path, toYaml(doc));
}

/** The state dict of a perturbed model with official names and no metadata, minus `drop` prefixes, plus `extra`. */
function writeRelease(path: string, config: string, seed: number, drop: string[], extra: Record<string, number[]> = {}): void {
  torch.manualSeed(seed);
  const m = TiM.fromOfficialConfig(config);
  try {
    const sd = m.stateDict();
    const rec: Record<string, torch.Tensor> = {};
    torch.noGrad(() => {
      for (const [k, t] of Object.entries(sd)) {
        if (drop.some((d) => k.startsWith(d))) continue;
        rec[k] = t.add(torch.randnLike(t).mul(0.05));
      }
    });
    for (const [k, v] of Object.entries(extra)) rec[k] = torch.tensor(v);
    torch.save(rec, path);
    for (const t of [...Object.values(sd), ...Object.values(rec)]) t.dispose();
  } finally {
    m.dispose();
  }
}

beforeAll(() => {
  writeYaml(yaml, { in_channels: 3 });
  writeRelease(release, yaml, 11, ['projector.']);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const tim = runTim;

const runArgs = (out: string, ...more: string[]): string[] =>
  ['sample', '--ckpt', release, '--config', yaml, '--num', '6', '--steps', '1', '--out', out, '--device', 'cpu', ...more];

function pngs(out: string): Buffer[] {
  return Array.from({ length: 6 }, (_, i) => readFileSync(join(out, 'images', imageName(i, 6))));
}

describe('tim sample: official release files, evaluation runs', () => {
  const full = join(dir, 'full');

  it('loads a release file without projector.* (with a note) and writes PNGs, run.json and samples.npz', async () => {
    const r = await tim(...runArgs(full, '--batch', '4'));
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/note: .* has no projector\.\* weights \(\d+ tensors/);
    expect(r.json).toMatchObject({ num: 6, nfe: 1, done: 6, resumedFrom: 0, npz: join(full, 'samples.npz') });
    expect(readdirSync(join(full, 'images')).sort()).toEqual(['000000.png', '000001.png', '000002.png', '000003.png', '000004.png', '000005.png']);
    const run = JSON.parse(readFileSync(join(full, 'run.json'), 'utf8'));
    expect(run.labels).toHaveLength(6);
    expect(JSON.parse(readFileSync(join(full, 'progress.json'), 'utf8'))).toEqual({ done: 6, total: 6, npz: true });
    for (const b of pngs(full)) {
      const img = decodePngHost(b);
      expect([img.width, img.height, img.channels]).toEqual([32, 32, 3]);
    }
    // the .npz holds exactly the PNGs' pixels, in order, and numpy reads it as the ADM evaluator does
    using f = new NpzFile(join(full, 'samples.npz'));
    expect(f.arrays.get('arr_0')!.shape).toEqual([6, 32, 32, 3]);
    pngs(full).forEach((b, i) => expect(Buffer.from(f.readRows('arr_0', i, 1)).equals(Buffer.from(decodePngHost(b).data))).toBe(true));
    const py = execFileSync(PYTHON, ['-c', `
import numpy as np
a = np.load(${JSON.stringify(join(full, 'samples.npz'))})['arr_0']
print(a.shape, a.dtype, int(a.astype(np.int64).sum()))
`], { env: pythonEnv(), encoding: 'utf8' }).trim();
    let sum = 0;
    for (const b of pngs(full)) for (const v of decodePngHost(b).data) sum += v;
    expect(py).toBe(`(6, 32, 32, 3) uint8 ${sum}`);
  });

  it('random labels are torch.randint(0, classes) under manual_seed(--seed); balanced takes the classes in turn', async () => {
    const run = JSON.parse(readFileSync(join(full, 'run.json'), 'utf8'));
    const want = execFileSync(PYTHON, ['-c', 'import torch; torch.manual_seed(0); print(torch.randint(0, 10, (6,)).tolist())'], { env: pythonEnv(), encoding: 'utf8' }).trim();
    expect(JSON.stringify(run.labels).replace(/,/g, ', ')).toBe(want);
    const bal = join(dir, 'balanced');
    const r = await tim(...runArgs(bal, '--labels', 'balanced', '--class', '3,7', '--no-npz'));
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(readFileSync(join(bal, 'run.json'), 'utf8')).labels).toEqual([3, 7, 3, 7, 3, 7]);
    expect(existsSync(join(bal, 'samples.npz'))).toBe(false);
  });

  it('a run SIGKILLed in the middle of a batch resumes to the bytes of an uninterrupted run', async () => {
    const out = join(dir, 'killed');
    // a real process, killed by itself right after writing image 5 of 6 (batch 2: batches 0-1 and 2-3 recorded)
    const child = spawn(process.execPath, ['--import', 'tsx', 'lib/cli/tim.ts', ...runArgs(out, '--batch', '2')], {
      cwd: repoRoot, env: { ...process.env, OMP_NUM_THREADS: '1', TIM_SAMPLE_TEST_KILL_AT: '5' }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    const { signal } = await new Promise<{ signal: string | null }>((res) => child.on('exit', (_c, s) => res({ signal: s })));
    expect(signal, stderr).toBe('SIGKILL');
    expect(JSON.parse(readFileSync(join(out, 'progress.json'), 'utf8'))).toEqual({ done: 4, total: 6, npz: false });
    expect(existsSync(join(out, 'samples.npz'))).toBe(false);
    expect(readdirSync(join(out, 'images')).filter((n) => n.startsWith('.'))).toEqual([]); // no half-written file

    const r = await tim(...runArgs(out, '--batch', '3'));
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/resuming .*: 4 of 6 images done/);
    expect(r.json).toMatchObject({ resumedFrom: 4, done: 6 });
    pngs(out).forEach((b, i) => expect(b.equals(pngs(full)[i]!), `image ${i}`).toBe(true));
    expect(readFileSync(join(out, 'samples.npz')).equals(readFileSync(join(full, 'samples.npz')))).toBe(true);

    // run again when finished: nothing to do, nothing rewritten
    const again = await tim(...runArgs(out));
    expect(again.code, again.err).toBe(0);
    expect(again.json).toMatchObject({ resumedFrom: 6, done: 6 });
  }, 120_000);

  it('a folder holding another run is an error, and is left as it was', async () => {
    const before = readFileSync(join(full, 'run.json'));
    const r = await tim(...runArgs(full, '--seed', '1'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/holds another run \(it differs in seed: 0 there, 1 now\).*\[E_STATE\]/);
    expect(readFileSync(join(full, 'run.json')).equals(before)).toBe(true);
  });

  it('--dtype bf16 samples with a bfloat16 network: images close to fp32, not equal', async () => {
    const out = join(dir, 'bf16');
    const r = await tim(...runArgs(out, '--dtype', 'bf16', '--no-npz'));
    expect(r.code, r.err).toBe(0);
    expect(r.json).toMatchObject({ dtype: 'bfloat16' });
    let diff = 0, n = 0, same = true;
    pngs(out).forEach((b, i) => {
      const a = decodePngHost(b).data, f = decodePngHost(pngs(full)[i]!).data;
      for (let k = 0; k < a.length; k++) {
        diff += Math.abs(a[k]! - f[k]!);
        if (a[k] !== f[k]) same = false;
        n++;
      }
    });
    expect(same).toBe(false);
    expect(diff / n).toBeLessThan(4); // mean absolute difference in 8-bit levels
  });

  it('a release file with an unknown key, or missing a non-projector weight, is refused (exit 1, E_STATE_DICT)', async () => {
    const extra = join(dir, 'extra.safetensors'), missing = join(dir, 'missing.safetensors');
    writeRelease(extra, yaml, 12, ['projector.'], { 'not_a_tim.weight': [1, 2] });
    writeRelease(missing, yaml, 12, ['projector.', 'final_layer.linear.']);
    const out = join(dir, 'refused');
    let r = await tim('sample', '--ckpt', extra, '--config', yaml, '--num', '2', '--steps', '1', '--out', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/1 unknown key\(s\): not_a_tim\.weight .*\[E_STATE_DICT\]/);
    r = await tim('sample', '--ckpt', missing, '--config', yaml, '--num', '2', '--steps', '1', '--out', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/2 missing weight\(s\): final_layer\.linear\.(weight|bias), final_layer\.linear\.(weight|bias) .*\[E_STATE_DICT\]/);
    expect(existsSync(out)).toBe(false);
  });

  it('bad flags are usage errors (exit 2) and missing files errors (exit 1), before anything is written', async () => {
    const out = join(dir, 'never');
    const cases: [string[], number, RegExp][] = [
      [['--num', '4'], 2, /--num needs --steps N/],
      [['--num', '4', '--steps', '1,2'], 2, /--num samples at one step count; --steps has 2/],
      [['--num', '4', '--steps', '1', '--n', '3'], 2, /--n \(images per class\) is for the per-class sweep/],
      [['--num', '0', '--steps', '1'], 2, /--num/],
      [['--labels', 'random'], 2, /--labels applies to --num runs/],
      [['--num', '4', '--steps', '1', '--labels', 'sorted'], 2, /--labels/],
      [['--dtype', 'fp8'], 2, /--dtype/],
      [['--vae', dir, '--decoder', 'x.pt'], 2, /--vae and --decoder both decode latents/],
      [['--vae-slice', '2'], 2, /--vae-slice applies to --vae/],
      [['--vae', join(dir, 'no-such-vae')], 1, /--vae '.*no-such-vae': no such folder/],
    ];
    for (const [flags, code, msg] of cases) {
      const r = await tim('sample', '--ckpt', release, '--config', yaml, '--out', out, ...flags);
      expect(r.code, flags.join(' ')).toBe(code);
      expect(r.err, flags.join(' ')).toMatch(msg);
    }
    expect(existsSync(out)).toBe(false);
  });
});

describe('tim sample --vae', () => {
  // a tiny diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors) from the golden fixtures
  const vaeDir: string | undefined = join(repoRoot, 'test', 'fixtures', 'golden', 'vae_kl_a');

  it('official-format C2I file + YAML + VAE folder -> decoded PNGs of the VAE\'s size', async () => {
    const cfg = JSON.parse(readFileSync(join(vaeDir!, 'config.json'), 'utf8')) as { latent_channels: number; block_out_channels: number[] };
    const down = 2 ** (cfg.block_out_channels.length - 1);
    const latentYaml = join(dir, 'tim_tiny_latent.yaml');
    writeYaml(latentYaml, { in_channels: cfg.latent_channels, input_size: 8, patch_size: 2 });
    const ckpt = join(dir, 'c2i_model_latent.safetensors');
    writeRelease(ckpt, latentYaml, 13, ['projector.']);
    const out = join(dir, 'vae-run');
    mkdirSync(out, { recursive: true });
    const r = await tim('sample', '--ckpt', ckpt, '--config', latentYaml, '--vae', vaeDir!, '--num', '3', '--steps', '2', '--batch', '2', '--out', out, '--vae-slice', '1');
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/note: .* has no projector\.\* weights/);
    for (let i = 0; i < 3; i++) {
      const img = decodePngHost(readFileSync(join(out, 'images', imageName(i, 3))));
      expect([img.width, img.height, img.channels]).toEqual([8 * down, 8 * down, 3]);
    }
    using f = new NpzFile(join(out, 'samples.npz'));
    expect(f.arrays.get('arr_0')!.shape).toEqual([3, 8 * down, 8 * down, 3]);

    // the per-class sweep decodes with the VAE too: PNGs and a grid
    const sweep = join(dir, 'vae-sweep');
    const s = await tim('sample', '--ckpt', ckpt, '--config', latentYaml, '--vae', vaeDir!, '--class', '1', '--n', '2', '--steps', '1', '--out', sweep);
    expect(s.code, s.err).toBe(0);
    const img = decodePngHost(readFileSync(join(sweep, 'nfe-1', '1-0.png')));
    expect([img.width, img.height]).toEqual([8 * down, 8 * down]);

    // a VAE whose latents do not match the network is one clear error
    const wrong = join(dir, 'tim_tiny_wrong.yaml');
    writeYaml(wrong, { in_channels: cfg.latent_channels + 1, input_size: 8, patch_size: 2 });
    const ck2 = join(dir, 'wrong.safetensors');
    writeRelease(ck2, wrong, 14, []);
    const w = await tim('sample', '--ckpt', ck2, '--config', wrong, '--vae', vaeDir!, '--num', '1', '--steps', '1', '--out', join(dir, 'wrong-run'));
    expect(w.code).toBe(1);
    expect(w.err).toMatch(/latent.*channels.*\[E_CONFIG\]/);
  }, 120_000);
});
