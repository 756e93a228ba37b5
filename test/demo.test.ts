/**
 * The CPU demo end to end at a tiny budget (lib/cli/demo/recipe.ts, lib/cli/demo/command.ts): a tiny TiM trained
 * for a few steps, sampled at 1 and 2 NFE, evaluated with the project's evaluator (a classifier
 * trained for one epoch into a temporary cache: seconds, not minutes), and the report written.
 * Checks the files and their contents, that a second run resumes instead of redoing work, and that
 * a run stopped by a signal and resumed ends with the same weights as an uninterrupted one.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { decodePngHost } from '../lib/torch/io/image.js';
import { ensureClassifierAsync } from '../lib/tim/eval/classifier.js';
import { runDemo, demoLr, emaWarmupDecay, demoConfig, type DemoOptions, type DemoResult } from '../lib/cli/demo/recipe.js';
import { parseTrainConfig } from '../lib/tim/train/config.js';
import { main } from '../lib/cli/tim.js';

const dir = mkdtempSync(join(tmpdir(), 'demo-'));
const cache = join(dir, 'cache');
const PER_CLASS = 3;
const base = (out: string, extra: Partial<DemoOptions> = {}): DemoOptions => ({
  outDir: join(dir, out), size: 'tiny', steps: 6, perClass: PER_CLASS, nfes: [1, 2], cacheDir: cache, seed: 3, log: () => {}, ...extra,
});
let first: DemoResult;

beforeAll(async () => {
  // a one-epoch classifier is enough to exercise the metrics; the real demo trains the full one
  const c = await ensureClassifierAsync({ cacheDir: cache, epochs: 1 });
  c.module.dispose();
  first = await runDemo(base('a'));
}, 300_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('tim demo (tiny budget)', () => {
  it('trains, samples at each NFE and writes class-major samples files', () => {
    expect(first.complete).toBe(true);
    expect(first.step).toBe(6);
    expect(first.nfes.map((x) => x.nfe)).toEqual([1, 2]);
    const out = join(dir, 'a');
    for (const nfe of [1, 2]) {
      const f = torch.loadSafetensors(join(out, 'eval', `nfe-${nfe}.safetensors`));
      try {
        const { images, labels } = f.tensors;
        expect(images!.dtype).toBe('float32');
        expect(images!.shape).toEqual([10 * PER_CLASS, 1, 32, 32]);
        expect(labels!.dtype).toBe('int64');
        expect(Array.from(labels!.toTypedArray() as BigInt64Array, Number)).toEqual(Array.from({ length: 10 * PER_CLASS }, (_, i) => Math.floor(i / PER_CLASS)));
        const [lo, hi, finite] = torch.scope(() => [images!.min().item(), images!.max().item(), images!.isfinite().allTrue()]);
        expect(finite).toBe(true);
        expect(lo).toBeGreaterThanOrEqual(-1);
        expect(hi).toBeLessThanOrEqual(1);
        expect(hi - lo).toBeGreaterThan(0.1); // not a constant image
        expect(f.metadata?.step).toBe('6');
      } finally {
        for (const t of Object.values(f.tensors)) t.dispose();
      }
      // a row per class, PER_CLASS columns of 32-pixel images 2 pixels apart
      const png = decodePngHost(readFileSync(join(out, 'samples', `grid-nfe${nfe}.png`)));
      expect(png.height).toBe(10 * 34 + 2);
      expect(png.width).toBe(PER_CLASS * 34 + 2);
    }
    expect(existsSync(join(out, 'train', 'checkpoints', '6', 'ema.safetensors'))).toBe(true);
    // the written config is the official layout tim train reads
    const cfg = parseTrainConfig(demoConfig({ size: 'tiny', seed: 3 }));
    expect(cfg.network.patchSize).toBe(8);
    expect(readFileSync(join(out, 'train', 'config.yaml'), 'utf8')).toContain('data_type: mnist');
    const lines = readFileSync(join(out, 'train', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number });
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(lines.every((l) => Number.isFinite(l.loss))).toBe(true);
  });

  it('evaluates each NFE and writes a report with the metrics table', () => {
    const out = join(dir, 'a');
    for (const x of first.nfes) {
      const e = x.eval!;
      expect(e.n).toBe(10 * PER_CLASS);
      expect(e.fd).toBeGreaterThan(0);
      expect(Number.isFinite(e.fd)).toBe(true);
      expect(e.floor!.fd).toBeGreaterThan(0);
      expect(e.classAccuracy).toBeGreaterThanOrEqual(0);
      expect(e.classAccuracy).toBeLessThanOrEqual(1);
      // diversity beside FD: precision/recall of the samples and of the floor's real digits
      for (const v of [e.precision, e.recall, e.floor!.precision, e.floor!.recall]) {
        expect(v).toBeGreaterThanOrEqual(0);
        expect(v).toBeLessThanOrEqual(1);
      }
      const j = JSON.parse(readFileSync(join(out, 'eval', `nfe-${x.nfe}.json`), 'utf8')) as { fd: number; step: number };
      expect(j.fd).toBe(e.fd);
      expect(j.step).toBe(6);
      expect(x.secondsPerImage).toBeGreaterThan(0);
    }
    const report = readFileSync(first.report!, 'utf8');
    expect(first.report).toBe(join(out, 'report.md'));
    expect(report).toContain('| NFE | FD');
    for (const x of first.nfes) {
      const row = report.split('\n').find((l) => l.startsWith(`| ${x.nfe} |`));
      expect(row, `row for NFE ${x.nfe}`).toBeDefined();
      expect(row).toContain(x.eval!.fd.toFixed(2));
      expect(row).toContain(`${(100 * x.eval!.classAccuracy!).toFixed(1)}%`);
    }
    expect(report).toMatch(/Trained 6 optimizer steps/);
    expect(report).toMatch(/held-out accuracy \d+\.\d+%/);
    expect(report).toContain('patch 8, hidden 32, depth 2');
  });

  it('a second run resumes: no training, the finished files are kept', async () => {
    const out = join(dir, 'a');
    const files = ['eval/nfe-1.safetensors', 'samples/grid-nfe2.png', 'eval/nfe-2.json'].map((f) => join(out, f));
    const before = files.map((f) => statSync(f).mtimeMs);
    const logs: string[] = [];
    const again = await runDemo(base('a', { log: (s) => logs.push(s) }));
    expect(again.complete).toBe(true);
    expect(again.step).toBe(6);
    expect(files.map((f) => statSync(f).mtimeMs)).toEqual(before);
    expect(logs.some((l) => l.startsWith('train step'))).toBe(false);
    expect(again.nfes.map((x) => x.eval!.fd)).toEqual(first.nfes.map((x) => x.eval!.fd));
    // --fresh starts over
    const fresh = await runDemo(base('a', { fresh: true, steps: 2, nfes: [1], evaluate: false }));
    expect(fresh.step).toBe(2);
    expect(existsSync(join(out, 'eval', 'nfe-2.safetensors'))).toBe(false);
  }, 120_000);

  it('refuses to resume a folder trained with another network, pointing at --fresh', async () => {
    await expect(runDemo(base('a', { size: 'demo' }))).rejects.toMatchObject({ code: 'E_CONFIG', message: expect.stringContaining('--fresh') });
  });

  it('stopped by a signal and run again, it ends with the weights of an uninterrupted run', async () => {
    const opts = { steps: 5, nfes: [1], evaluate: false, checkpointEverySec: 0 };
    const whole = await runDemo(base('whole', opts));
    const signal = { stop: false };
    const stopped = await runDemo(base('cut', { ...opts, signal, log: (s) => { if (s === 'checkpoint: step 2') signal.stop = true; } }));
    expect(stopped.complete).toBe(false);
    expect(stopped.step).toBe(2);
    expect(existsSync(join(dir, 'cut', 'eval'))).toBe(false);
    const resumed = await runDemo(base('cut', opts));
    expect(resumed.complete).toBe(true);
    expect(resumed.step).toBe(5);
    expect(whole.step).toBe(5);
    for (const f of ['train/checkpoints/5/ema.safetensors', 'train/checkpoints/5/model.safetensors', 'eval/nfe-1.safetensors']) {
      expect(readFileSync(join(dir, 'cut', f)).equals(readFileSync(join(dir, 'whole', f))), f).toBe(true);
    }
    // only the newest checkpoints are kept
    expect(readdirSync(join(dir, 'cut', 'train', 'checkpoints')).filter((n) => /^\d+$/.test(n)).length).toBeLessThanOrEqual(2);
  }, 120_000);
});

describe('demo schedule', () => {
  it('LR: linear warmup, then linear decay to 2% of the base over the budget', () => {
    expect(demoLr(1e-3, 50, 0, 0)).toBeCloseTo(2e-5, 12);
    expect(demoLr(1e-3, 50, 49, 0)).toBeCloseTo(1e-3, 12);
    expect(demoLr(1e-3, 50, 100, 0.5)).toBeCloseTo(5e-4, 12);
    expect(demoLr(1e-3, 50, 100, 1.2)).toBeCloseTo(2e-5, 12);
  });
  it('EMA warmup: min(decay, (1 + n) / (10 + n))', () => {
    expect(emaWarmupDecay(0.999, 1)).toBeCloseTo(2 / 11, 12);
    expect(emaWarmupDecay(0.999, 90)).toBeCloseTo(0.91, 12);
    expect(emaWarmupDecay(0.999, 100_000)).toBe(0.999);
  });
});

describe('tim demo CLI', () => {
  it('shows help and rejects bad usage with exit 2', async () => {
    const out: string[] = [];
    const err: string[] = [];
    expect(await main(['demo', '--help'], (s) => out.push(s), (s) => err.push(s))).toBe(0);
    expect(out.join('\n')).toContain('--budget-min');
    expect(await main(['demo', '--budget-min', 'soon'], (s) => out.push(s), (s) => err.push(s))).toBe(2);
    expect(await main(['demo', '--steps', '0'], (s) => out.push(s), (s) => err.push(s))).toBe(2);
    expect(await main(['demo', '--nfe', '1,x'], (s) => out.push(s), (s) => err.push(s))).toBe(2);
    expect(err.join('\n')).toContain('--nfe must be');
  });
  it('runs a tiny demo and prints a JSON summary', async () => {
    const out: string[] = [];
    const code = await main(['demo', '--size', 'tiny', '--steps', '2', '--per-class', '2', '--nfe', '1', '--out', join(dir, 'cli'), '--cache', cache], (s) => out.push(s), () => {});
    expect(code).toBe(0);
    const j = JSON.parse(out.at(-1)!) as { complete: boolean; step: number; nfe: { nfe: number; fd: number; classAccuracy: number; precision: number | null; recall: number | null }[] };
    expect(j.complete).toBe(true);
    expect(j.step).toBe(2);
    expect(j.nfe[0]!.nfe).toBe(1);
    expect(j.nfe[0]!.fd).toBeGreaterThan(0);
    expect(typeof j.nfe[0]!.precision).toBe('number');
    expect(typeof j.nfe[0]!.recall).toBe('number');
    expect(existsSync(join(dir, 'cli', 'report.md'))).toBe(true);
  }, 120_000);
});
