/**
 * Data-parallel step time: one process at global batch B against 2 processes at B/2 each (the same
 * run: lib/torch/distributed/data_parallel.ts), Trainer.trainStep on MNIST 32×32 with a small TiM, the machine's
 * cores split between the processes (1 process × all cores vs 2 processes × cores/2 threads).
 *
 *   npx tsx bench/dp-step.ts [--quick] [--batch 16] [--hidden 128] [--depth 4] [--steps 6] [--rounds 3] [--write]
 *   npm run bench -- --only dp-step
 *
 * Rank 0's wall time per optimizer step (data, forward/backward, all-reduce, clip, AdamW, EMA),
 * after 2 warm-up steps; rounds alternate the two set-ups and pool their steps; medians. The ratio
 * is ms/step with 2 processes over ms/step with 1: below 1 means the 2-process split is faster. On
 * one small machine both set-ups share the same cores, so the ratio shows the cost of the split
 * (two model copies, the gradient all-reduce over loopback, per-process overhead) more than a gain;
 * the gain comes with a device (or machine) per process.
 */
import { spawn } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { benchDir, formatTable, median, newResult, writeResult, type Options, type Result } from './harness.js';
import { freePort } from '../lib/torch/distributed/process_group.js';

const SELF = fileURLToPath(import.meta.url);

interface Shape { batch: number; hidden: number; depth: number; heads: number; patch: number }
interface WorkerTask extends Shape { steps: number; warm: number; out: string }
interface WorkerResult { ms: number[]; params: number; threads: number; allReduceMs: number | null; gradientBytes: number | null }

// ---- one process (rank) ---------------------------------------------------------------------------------

async function workerMain(task: WorkerTask): Promise<void> {
  const { torch } = await import('../lib/index.js');
  const { Trainer } = await import('../lib/tim/train/trainer.js');
  const doc = parseYaml(readFileSync(join(benchDir, '..', 'test', 'fixtures', 'tiny-train.yaml'), 'utf8')) as Record<string, any>;
  Object.assign(doc.model.network.params, {
    hidden_size: task.hidden, depth: task.depth, num_heads: task.heads, patch_size: task.patch, z_dim: task.hidden, lora_hidden_size: Math.max(8, task.hidden / 2),
  });
  doc.data.dataloader.batch_size = task.batch;
  Object.assign(doc.training, {
    max_train_steps: 100_000, gradient_accumulation_steps: 1, lr_warmup_steps: 0, validation_steps: 0, checkpointing_steps: 100_000, resume_from_checkpoint: null,
  });
  // WORLD_SIZE > 1 in the env: the Trainer joins the group (data parallel), else it trains alone
  const tr = Trainer.create({ config: doc, outDir: task.out, resume: null, write: () => {}, device: 'cpu' });
  const ms: number[] = [];
  let reduceMs0 = 0;
  for (let i = 0; i < task.warm + task.steps; i++) {
    if (i === task.warm) reduceMs0 = tr.dataParallel?.stats.gradientMs ?? 0;
    const t0 = performance.now();
    await tr.trainStep();
    if (i >= task.warm) ms.push(performance.now() - t0);
  }
  const params = tr.model.numParameters();
  const dp = tr.dataParallel;
  const allReduceMs = dp ? (dp.stats.gradientMs - reduceMs0) / task.steps : null;
  const gradientBytes = dp ? dp.stats.gradientBytes : null;
  await tr.close();
  if (tr.rank === 0) process.stdout.write(JSON.stringify({ ms, params, threads: torch.getNumThreads(), allReduceMs, gradientBytes } satisfies WorkerResult) + '\n');
}

// ---- parent -----------------------------------------------------------------------------------------------


/** Runs `nproc` ranks of the worker (each at batch/nproc, threads each) and returns rank 0's result. */
async function group(nproc: number, threads: number, shape: Shape, steps: number, warm: number): Promise<WorkerResult> {
  const port = await freePort();
  const out = mkdtempSync(join(os.tmpdir(), 'tim-dp-bench-'));
  const task: WorkerTask = { ...shape, batch: shape.batch / nproc, steps, warm, out };
  try {
    const outs = await Promise.all(Array.from({ length: nproc }, (_, rank) => new Promise<string>((resolve, reject) => {
      const env: NodeJS.ProcessEnv = { ...process.env, TIM_TORCH_NUM_THREADS: String(threads) };
      delete env.OMP_NUM_THREADS;
      if (nproc > 1) Object.assign(env, { RANK: String(rank), WORLD_SIZE: String(nproc), LOCAL_RANK: String(rank), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TIM_DIST_TIMEOUT_MS: '600000' });
      else for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT']) delete env[k];
      const p = spawn(process.execPath, ['--import', 'tsx', SELF, '--worker', JSON.stringify(task)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let o = '', e = '';
      p.stdout.on('data', (d: Buffer) => { o += d.toString(); });
      p.stderr.on('data', (d: Buffer) => { e += d.toString(); });
      p.on('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(`rank ${rank} of ${nproc} exited ${code}: ${e.slice(-2000)}`))));
    })));
    return JSON.parse(outs[0]!.trim().split('\n').pop()!) as WorkerResult;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

export async function run(o: Options & Partial<Shape> & { steps?: number; rounds?: number }): Promise<Result> {
  const shape: Shape = o.quick
    ? { batch: o.batch ?? 8, hidden: o.hidden ?? 32, depth: o.depth ?? 2, heads: o.heads ?? 2, patch: o.patch ?? 8 }
    : { batch: o.batch ?? 16, hidden: o.hidden ?? 128, depth: o.depth ?? 4, heads: o.heads ?? 4, patch: o.patch ?? 4 };
  if (shape.batch % 2) throw new Error(`dp-step: batch must be even (2 processes take half each), got ${shape.batch}`);
  const steps = o.steps ?? (o.quick ? 3 : 6);
  const rounds = o.rounds ?? (o.quick ? 1 : 3);
  const warm = 2;
  const cores = o.threads ?? Math.max(1, os.availableParallelism());
  const half = Math.max(1, Math.floor(cores / 2));
  const r = newResult('dp-step', `data-parallel step time: 1 process at batch ${shape.batch} vs 2 processes at ${shape.batch / 2} each (gloo, 127.0.0.1)`, o.quick,
    { ...shape, steps, warm, rounds, threads_one: cores, threads_each_of_two: half, dataset: 'mnist 1x32x32', precision: 'fp32' });
  const one: number[] = [], two: number[] = [], reduce: number[] = [];
  let params = 0, bytes = 0;
  for (let round = 0; round < rounds; round++) {
    // alternate, so a noisy minute on a shared machine does not land on one set-up only
    const a = await group(1, cores, shape, steps, warm);
    const b = await group(2, half, shape, steps, warm);
    one.push(...a.ms);
    two.push(...b.ms);
    reduce.push(b.allReduceMs ?? NaN);
    params = a.params;
    bytes = b.gradientBytes ?? 0;
  }
  const m1 = median(one), m2 = median(two);
  const info = (name: string, v: number, unit: string) => ({ case: name, node: v, python: null, unit, ratio: null, goal: 'info', status: 'INFO' as const });
  r.rows.push(info(`1 process, batch ${shape.batch}, ${cores} thread(s)`, m1, 'ms/step'));
  r.rows.push(info(`2 processes, batch ${shape.batch / 2} each, ${half} thread(s) each`, m2, 'ms/step'));
  r.rows.push(info('  of which the gradient all-reduce (rank 0)', median(reduce), 'ms/step'));
  r.rows.push({ ...info('step-time ratio 2 processes / 1 process', m2 / m1, 'x'), ratio: m2 / m1 });
  r.rows.push(info('samples per second, 1 process', (1000 * shape.batch) / m1, 'samples/s'));
  r.rows.push(info('samples per second, 2 processes', (1000 * shape.batch) / m2, 'samples/s'));
  r.notes.push(`${params.toLocaleString('en-US')} parameters; ${(bytes / 2 ** 20).toFixed(2)} MB of gradients all-reduced per step (the REPA projector gets none: no REPA target)`);
  r.notes.push('both set-ups share this machine\'s cores; the 2-process figure includes the gradient all-reduce over loopback TCP');
  return r;
}

// ---- command line -----------------------------------------------------------------------------------------

const argv = process.argv.slice(2);
const value = (name: string): number | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : undefined;
};
if (process.argv[1] === SELF) {
  if (argv[0] === '--worker') {
    await workerMain(JSON.parse(argv[1]!) as WorkerTask);
  } else {
    const opts: Parameters<typeof run>[0] = { quick: argv.includes('--quick') };
    for (const k of ['batch', 'hidden', 'depth', 'heads', 'patch', 'steps', 'rounds', 'threads'] as const) {
      const v = value(k);
      if (v !== undefined) (opts as unknown as Record<string, unknown>)[k] = v;
    }
    const res = await run(opts);
    console.log(formatTable(res));
    if (argv.includes('--write')) console.log(`  -> ${writeResult(res)}`);
  }
}
