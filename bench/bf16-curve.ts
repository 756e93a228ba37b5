/**
 * Does bf16 autocast train as well as float32? The demo's network and loss (lib/cli/demo/recipe.ts
 * demoConfig: MNIST, the full transition loss with DDE, AdamW, EMA) trained for N
 * steps three times from the same initial weights:
 *
 *   fp32 seed s      the reference curve
 *   fp32 seed s+1    the same precision with another seed (initial weights, noise draws, data
 *                    order): the run-to-run noise
 *   bf16 seed s      autocast bfloat16, everything else as the reference (same initial weights,
 *                    data order and noise draws; the DDE forwards stay float32, as the Trainer does)
 *
 * and compares the denoising loss in windows of W steps (window means). "Within noise" means the
 * bf16 curve is no farther from the fp32 curve than another fp32 seed is: the mean absolute window
 * difference of bf16 vs fp32 is at most 1.5x that of fp32 vs fp32 (seed). It also prints the step
 * time ratio of the two precisions on this CPU (info: it depends on AMX / AVX512-BF16).
 *
 * Node only: the comparison is between precisions, not languages.
 *
 *   npx tsx bench/bf16-curve.ts [--steps 500] [--window 50] [--seed 0] [--quick]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { torch } from '../lib/index.js';
import { Trainer } from '../lib/tim/train/trainer.js';
import { demoConfig } from '../lib/cli/demo/recipe.js';
import type { MixedPrecision } from '../lib/tim/train/config.js';
import { formatTable, median, newResult, writeResult, type Result, cliArgs } from './harness.js';

export interface CurveOptions { quick: boolean; steps?: number; window?: number; seed?: number }

interface Curve { losses: number[]; msPerStep: number }

/** Trains `steps` steps with the demo config and returns the per-step denoising losses. */
async function trainCurve(precision: MixedPrecision, seed: number, steps: number): Promise<Curve> {
  const dir = mkdtempSync(join(os.tmpdir(), 'tim-bf16-curve-'));
  const doc = demoConfig({ precision, seed, steps });
  const trainer = Trainer.create({ config: doc, outDir: dir, resume: null, device: 'cpu', write: () => {} });
  const losses: number[] = [];
  const times: number[] = [];
  try {
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      const m = await trainer.trainStep();
      times.push(performance.now() - t0);
      losses.push(m.loss_denoising);
    }
  } finally {
    await trainer.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { losses, msPerStep: median(times.slice(Math.min(10, times.length - 1))) };
}

function windowMeans(xs: number[], w: number): number[] {
  const out: number[] = [];
  for (let i = 0; i + w <= xs.length; i += w) out.push(xs.slice(i, i + w).reduce((a, b) => a + b, 0) / w);
  return out;
}

const meanAbsDiff = (a: number[], b: number[]): number => a.reduce((s, v, i) => s + Math.abs(v - b[i]!), 0) / a.length;

export async function run(o: CurveOptions): Promise<Result> {
  const steps = o.steps ?? (o.quick ? 60 : 500);
  const window = o.window ?? (o.quick ? 20 : 50);
  const seed = o.seed ?? 0;
  const r = newResult('bf16-curve', `bf16 autocast vs float32 training curve: demo network and loss on MNIST, ${steps} steps, ${window}-step windows`, o.quick,
    { steps, window, seed, threads: torch.getNumThreads() });
  const ref = await trainCurve('no', seed, steps);
  const other = await trainCurve('no', seed + 1, steps);
  const bf = await trainCurve('bf16', seed, steps);
  const [wr, wo, wb] = [ref, other, bf].map((c) => windowMeans(c.losses, window)) as [number[], number[], number[]];
  const noise = meanAbsDiff(wo, wr);
  const dev = meanAbsDiff(wb, wr);
  r.rows.push({ case: 'mean |window(bf16) - window(fp32)|, vs fp32 seed-to-seed', node: dev, python: noise, unit: 'loss', ratio: dev / noise,
    goal: 'ratio <= 1.5 (within noise)', status: dev <= 1.5 * noise ? 'PASS' : 'MISS' });
  r.rows.push({ case: 'last window: bf16 / fp32 denoising loss', node: wb.at(-1)!, python: wr.at(-1)!, unit: 'loss', ratio: wb.at(-1)! / wr.at(-1)!, goal: 'info', status: 'INFO' });
  r.rows.push({ case: 'ms / step: bf16 vs fp32 (both Node; "python" column = fp32)', node: bf.msPerStep, python: ref.msPerStep, unit: 'ms', ratio: bf.msPerStep / ref.msPerStep, goal: 'info', status: 'INFO' });
  r.notes.push(`window means fp32 seed ${seed}: ${wr.map((x) => x.toFixed(4)).join(' ')}`);
  r.notes.push(`window means fp32 seed ${seed + 1}: ${wo.map((x) => x.toFixed(4)).join(' ')}`);
  r.notes.push(`window means bf16 seed ${seed}: ${wb.map((x) => x.toFixed(4)).join(' ')}`);
  r.machine.loadavg = os.loadavg().map((x) => +x.toFixed(2));
  return r;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const val = cliArgs(argv).num;
  const res = await run({ quick: argv.includes('--quick'), steps: val('steps'), window: val('window'), seed: val('seed') });
  console.log(formatTable(res));
  console.log(`  -> ${writeResult(res)}`);
}
