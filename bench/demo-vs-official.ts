/**
 * The CPU demo against the official TiM code, on the same data, budget, machine and libtorch
 * (issue "Demo quality"): for each seed, `tim demo` trains for the budget and samples, then
 * bench/py/demo_official.py trains the same network with the official recipe and code for the same
 * budget and samples it with the official sampler from the same noise; the project's evaluator judges
 * both (FD, class accuracy, precision and recall in the MNIST classifier's feature space).
 *
 *   npx tsx bench/demo-vs-official.ts --official DIR [--seeds 0,1] [--budget-min 10] [--threads 2]
 *                                     [--nfe 1,2,4,8,16] [--per-class 100] [--out runs/demo-vs-official]
 *                                     [--only demo|official]
 *
 * --official: a folder holding the official tim/ package (from the fetched mirror:
 *   `git --git-dir=<mirror>/WZDTHU+TiM/repo archive HEAD tim | tar -x -C DIR`).
 * The demo side runs `lib/cli/tim.ts demo` in a child process with this process's TIM_TORCH_ADDON
 * (scripts/demo.sh uses the pip torch 2.13 build); the official side runs TIM_TORCH_PYTHON (default
 * .venv/torch2/bin/python: the same libtorch). One side at a time, interleaved per seed.
 *
 * The official recipe (what the issue measured): the demo's network (patch 8, the official TiM options),
 * OT-FM without model guidance, the official transition loss (diffusion_ratio 0.5, consistency_ratio 0.1,
 * DDE), AdamW lr 1e-3 constant (betas 0.9/0.95, no weight decay, eps 1e-8), clip 1, EMA 0.995, batch 64,
 * no CFG at sampling; bf16 autocast for the whole step where the CPU has native bf16 (the demo's rule),
 * else float32.
 *
 * Writes <out>/<side>-s<seed>/ (samples, evaluations) and bench/results/demo-vs-official.{json,md}.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as torch from '../lib/torch/index.js';
import { MnistDataset } from '../lib/tim/data/mnist.js';
import { evaluateSamples, type EvalResult } from '../lib/tim/eval/evaluate.js';
import { demoNetwork, cpuHasFastBf16 } from '../lib/cli/demo/recipe.js';
import { writeFileAtomic } from '../lib/torch/io/atomic.js';
import { appliedEnvDefaults } from '../lib/torch/native.js';
import { benchDir, cliArgs } from './harness.js';

const repo = resolve(benchDir, '..');
const a = cliArgs();
const official = a.str('official');
if (!official || !existsSync(join(official, 'tim', 'schedulers', 'transition.py'))) {
  throw new Error('--official DIR: a folder holding the official tim/ package (tim/schedulers/transition.py) is required');
}
const list = (s: string | undefined, d: number[]): number[] => (s ? s.split(',').map(Number) : d);
const seeds = list(a.str('seeds'), [0, 1]);
const nfes = list(a.str('nfe'), [1, 2, 4, 8, 16]);
const budgetMin = a.num('budget-min') ?? 10;
const threads = a.num('threads') ?? 2;
const perClass = a.num('per-class') ?? 100;
const only = a.str('only');
const outRoot = resolve(a.str('out') ?? join(repo, 'runs', 'demo-vs-official'));
const python = process.env.TIM_TORCH_PYTHON ?? join(repo, '.venv', 'torch2', 'bin', 'python');
const cacheDir = join(repo, 'runs', 'cache');
const amp = cpuHasFastBf16() ? 'bfloat16' : null;
torch.setNumThreads(threads);
mkdirSync(outRoot, { recursive: true });

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], env, cwd: repo });
    p.on('error', rej);
    p.on('exit', (code) => (code === 0 ? res() : rej(new Error(`${cmd} ${args.join(' ')} exited with ${code}`))));
  });
}

/** The demo's 8,000 training digits and the sampling noise of a seed, as files for Python. */
function writeInputs(seed: number): { data: string; noise: string } {
  const data = join(outRoot, 'mnist-train.safetensors');
  if (!existsSync(data)) {
    const ds = new MnistDataset({ split: 'train' });
    const x = new Float32Array(ds.length * 32 * 32);
    const y = new BigInt64Array(ds.length);
    for (let i = 0; i < ds.length; i++) y[i] = BigInt(ds.read(i, x.subarray(i * 1024, (i + 1) * 1024)));
    torch.scope(() => torch.save({ x: torch.fromBuffer(x, 'float32', [ds.length, 1, 32, 32], { copy: true }), y: torch.fromBuffer(y, 'int64', [ds.length], { copy: true }) }, data));
  }
  const noise = join(outRoot, `noise-s${seed}.safetensors`);
  torch.scope(() => {
    // exactly the demo's sampling noise (lib/cli/demo/recipe.ts): its own seed, class-major labels
    const n = perClass * 10;
    torch.manualSeed(seed + 7919);
    const z = torch.randn([n, 1, 32, 32]);
    const y = torch.arange(10, { dtype: 'int64' }).reshape(10, 1).expand(10, perClass).reshape(n).contiguous();
    torch.save({ z, y }, noise);
  });
  return { data, noise };
}

interface Side { steps: number; msPerStep: number; evals: Record<number, EvalResult> }

async function runDemo(seed: number): Promise<Side> {
  const out = join(outRoot, `demo-s${seed}`);
  await run(process.execPath, ['--import', 'tsx', join(repo, 'lib', 'cli', 'tim.ts'), 'demo', '--fresh', '--out', out, '--seed', String(seed),
    '--threads', String(threads), '--budget-min', String(budgetMin), '--nfe', nfes.join(','), '--per-class', String(perClass), '--cache', cacheDir], process.env);
  const progress = JSON.parse(readFileSync(join(out, 'progress.json'), 'utf8')) as { finished: { step: number; seconds: number } };
  const evals: Record<number, EvalResult> = {};
  for (const nfe of nfes) evals[nfe] = JSON.parse(readFileSync(join(out, 'eval', `nfe-${nfe}.json`), 'utf8')) as EvalResult;
  return { steps: progress.finished.step, msPerStep: (1000 * progress.finished.seconds) / progress.finished.step, evals };
}

async function runOfficial(seed: number): Promise<Side> {
  const out = join(outRoot, `official-s${seed}`);
  const { data, noise } = writeInputs(seed);
  const cfg = {
    official: resolve(official!), repo, data, noise, out, budget_s: budgetMin * 60, seed, threads, amp,
    network: demoNetwork('demo'), lr: 1e-3, betas: [0.9, 0.95], weight_decay: 0.0, eps: 1e-8, ema_decay: 0.995, batch: 64,
    diffusion_ratio: 0.5, consistency_ratio: 0.1, nfes,
  };
  // Python gets the environment its users have: without the variables tim-torch set at load
  const env = { ...process.env };
  for (const k of Object.keys(appliedEnvDefaults)) delete env[k];
  await run(python, [join(benchDir, 'py', 'demo_official.py'), JSON.stringify(cfg)], env);
  const t = JSON.parse(readFileSync(join(out, 'train.json'), 'utf8')) as { steps: number; ms_per_step: number };
  const evals: Record<number, EvalResult> = {};
  for (const nfe of nfes) {
    const jsonPath = join(out, `nfe-${nfe}.json`);
    evals[nfe] = evaluateSamples(join(out, `nfe-${nfe}.safetensors`), { cacheDir });
    writeFileAtomic(jsonPath, JSON.stringify(evals[nfe], null, 2) + '\n');
  }
  return { steps: t.steps, msPerStep: t.ms_per_step, evals };
}

const results: Record<string, Record<number, Side>> = { demo: {}, official: {} };
const resultsPath = join(benchDir, 'results', 'demo-vs-official.json');
if (existsSync(resultsPath)) Object.assign(results, (JSON.parse(readFileSync(resultsPath, 'utf8')) as { runs: typeof results }).runs);
for (const seed of seeds) {
  if (only !== 'official') results.demo![seed] = await runDemo(seed);
  if (only !== 'demo') results.official![seed] = await runOfficial(seed);
  await save();
}

function fmt(v: number | null | undefined, d = 1): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(d);
}

async function save(): Promise<void> {
  const lines = [
    `# Demo vs official TiM code (${budgetMin} min budget, ${threads} threads, ${amp ? 'bf16' : 'float32'}, ${perClass} samples per class)`,
    '',
    '| side | seed | steps | ms/step | NFE | FD ↓ | class acc. ↑ | precision ↑ | recall ↑ |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const side of ['demo', 'official'] as const) {
    for (const [seed, s] of Object.entries(results[side]!)) {
      for (const nfe of nfes) {
        const e = s.evals[nfe] as (EvalResult & { precision?: number | null; recall?: number | null }) | undefined;
        if (!e) continue;
        lines.push(`| ${side} | ${seed} | ${s.steps} | ${fmt(s.msPerStep, 0)} | ${nfe} | ${fmt(e.fd)} | ${fmt(e.classAccuracy === null ? null : 100 * e.classAccuracy)}% | ` +
          `${fmt(e.precision ?? null, 3)} | ${fmt(e.recall ?? null, 3)} |`);
      }
    }
  }
  const md = lines.join('\n') + '\n';
  process.stdout.write('\n' + md);
  writeFileAtomic(resultsPath, JSON.stringify({
    name: 'demo-vs-official', date: new Date().toISOString(), budgetMin, threads, perClass, nfes, amp,
    libtorch: torch.buildInfo().torchVersion, runs: results,
  }, null, 1) + '\n');
  writeFileAtomic(join(benchDir, 'results', 'demo-vs-official.md'), md);
}
