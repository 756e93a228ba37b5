/**
 * CUDA benchmarks, TypeScript vs the Python eager twins on the same torch and GPU, side by side in one
 * run (scripts/gpu-check.sh runs this on a GPU machine):
 *
 *   train step   a TiM-XL/2-shaped network (hidden 1152, depth 28, 16 heads, patch 2, 32×32×4 latents)
 *                in bf16 autocast: Trainer.trainStep's body (bench/train-step.ts makeSetup: transition
 *                loss with DDE in float32, backward, clip, AdamW, EMA) vs bench/py/train_step.py (the
 *                official trainer's step on test/fixtures/tim_reference.py) with device cuda, amp bf16.
 *                Like for like, Node's model computes attention the math way (as the Python reference);
 *                a second Node row runs the default ('auto': SDPA / flash kernels) for information.
 *   sampling     sample() at 1 and 8 NFE (cfg 1.5) vs bench/py/sampler.py over torch.jit.load of the same
 *                saved module (same graph on both sides), float32.
 *
 * Every timed call ends with a device synchronize on both sides; rounds alternate which side goes first;
 * medians. Memory: GPU memory held by each process (nvidia-smi, after the timed steps: the caching
 * allocator keeps its peak reservation, plus the CUDA context), Python's own peak allocated/reserved,
 * and Node's live tensors before/after the timed steps (must be equal).
 *
 * Without a CUDA device it prints why and returns a result with no rows (settings.skipped).
 *
 *   npx tsx bench/cuda.ts [--quick] [--batch 16] [--sample-batch 16] [--depth 28] [--rounds 4] [--out DIR]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { torch, transports } from '../lib/index.js';
import { sample } from '../lib/tim/sampling/sampler.js';
import { preset, type TiMConfig } from '../lib/tim/network/index.js';
import { benchDir, formatTable, median, newResult, pairedRatio, ratioRow, startPyScript, writeResult, type Result, cliArgs } from './harness.js';
import { makeSetup } from './train-step.js';

export interface CudaBenchOptions {
  quick: boolean;
  batch?: number;
  sampleBatch?: number;
  depth?: number;
  rounds?: number;
  /** called with the partial result after each stage (the CLI writes it, so a timeout keeps what was measured) */
  checkpoint?: (r: Result) => void;
}

/** MiB of GPU memory each pid holds, by nvidia-smi (empty when it is missing). */
function gpuMemByPid(): Map<number, number> {
  const m = new Map<number, number>();
  try {
    const out = execFileSync('nvidia-smi', ['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 10_000 });
    for (const line of out.split('\n')) {
      const [pid, mib] = line.split(',').map((s) => Number(s.trim()));
      if (Number.isFinite(pid) && Number.isFinite(mib)) m.set(pid!, mib!);
    }
  } catch { /* no nvidia-smi: memory rows are left out */ }
  return m;
}

const sync = (): void => torch.cuda.synchronize();
const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join(' ');

export async function run(o: CudaBenchOptions): Promise<Result> {
  const batch = o.batch ?? (o.quick ? 4 : 16);
  const sampleBatch = o.sampleBatch ?? (o.quick ? 4 : 16);
  const depth = o.depth ?? (o.quick ? 4 : 28);
  const rounds = o.rounds ?? (o.quick ? 2 : 4);
  const steps = 3; // timed steps per round and side
  const info = torch.buildInfo();
  const config: TiMConfig = { ...preset('TiM-XL/2-256'), depth, inputSize: 32, inChannels: 4 };
  const r = newResult('cuda', `CUDA: TiM-XL/2-shaped bf16 training step (batch ${batch}) and 1/8-NFE sampling (batch ${sampleBatch}), TypeScript vs Python eager`, o.quick,
    { libtorch: info.torchVersion, cudaBuild: info.cudaBuild, devices: torch.cuda.deviceCount(), hidden: config.hiddenSize, depth, heads: config.numHeads, patch: config.patchSize,
      input: config.inputSize, batch, sampleBatch, rounds, stepsPerRound: steps, python: process.env.TIM_TORCH_PYTHON ?? '/usr/bin/python3' });
  if (!torch.cuda.isAvailable()) {
    const why = info.cudaBuild ? 'this CUDA build sees no GPU' : `this addon is built against a CPU-only libtorch ${info.torchVersion}`;
    r.settings.skipped = `no CUDA device: ${why}`;
    r.notes.push(`skipped: no CUDA device (${why}); GPU-only benchmarks need torch.cuda.isAvailable()`);
    return r;
  }
  const dir = mkdtempSync(join(os.tmpdir(), 'tim-cuda-bench-'));
  try {
    // ---- training step -------------------------------------------------------------------------------
    const S = makeSetup(config, { batch, device: 'cuda', attention: 'math' });
    let py: Awaited<ReturnType<typeof startPyScript>> | null = null;
    try {
      r.notes.push(`model: ${(S.model.numParameters() / 1e6).toFixed(0)}M parameters`);
      S.model.save(join(dir, 'weights.safetensors'));
      torch.save({ x: S.data.x.cpu(), y: S.data.y.cpu() }, join(dir, 'inputs.safetensors'));
      py = await startPyScript('py/train_step.py', {
        params: S.model.officialParams(), weights: join(dir, 'weights.safetensors'), inputs: join(dir, 'inputs.safetensors'),
        threads: torch.getNumThreads(), steps, repo: join(benchDir, '..'), seed: 0, device: 'cuda', amp: 'bfloat16',
      });
      const pyPid = py.info.pid as number;
      for (let i = 0; i < 3; i++) { S.step(true); sync(); }
      await py.request('run'); // Python warm-up round
      const live0 = torch.memory().liveTensors;
      const node: number[] = [], python: number[] = [];
      const nodeRound = (): void => {
        for (let i = 0; i < steps; i++) {
          sync();
          const t0 = performance.now();
          S.step(true);
          sync();
          node.push(performance.now() - t0);
        }
      };
      let pyMem: Record<string, unknown> = {};
      const pyRound = async (): Promise<void> => { pyMem = await py!.request('run'); python.push(...(pyMem.ms as number[])); };
      for (let k = 0; k < rounds; k++) {
        if (k % 2 === 0) { nodeRound(); await pyRound(); } else { await pyRound(); nodeRound(); }
      }
      const live1 = torch.memory().liveTensors;
      r.rows.push(ratioRow('bf16 train step, math attention both sides (median)', median(node), median(python), { text: 'info' }, 'ms', pairedRatio(node, python)));
      r.rows.push(ratioRow('bf16 train step (best)', Math.min(...node), Math.min(...python), { text: 'info' }));
      const mem = gpuMemByPid();
      if (mem.has(process.pid) && mem.has(pyPid)) {
        r.rows.push(ratioRow('GPU memory held after the steps (nvidia-smi)', mem.get(process.pid)!, mem.get(pyPid)!, { text: 'info' }, 'MiB'));
      } else {
        r.notes.push(`nvidia-smi per-process memory unavailable (pids ${process.pid}, ${pyPid}: ${JSON.stringify([...mem])})`);
      }
      r.rows.push({ case: 'Node live tensors after - before the timed steps', node: live1 - live0, python: null, unit: 'tensors', ratio: null, goal: 'flat (0)', status: live1 === live0 ? 'PASS' : 'MISS' });
      r.notes.push(`Python peak CUDA memory (torch.cuda.max_memory_*): allocated ${Number(pyMem.peak_allocated_mib).toFixed(0)} MiB, reserved ${Number(pyMem.peak_reserved_mib).toFixed(0)} MiB; Node tracked tensor bytes on cuda now ${(torch.memory().bytes.cuda / 2 ** 20).toFixed(0)} MiB`);
      r.notes.push(`train step ms, Node: ${fmt(node)}; Python: ${fmt(python)}; first losses Python ${Number(py.info.loss).toFixed(4)}`);
    } finally {
      py?.close('quit');
      S.dispose();
    }
    o.checkpoint?.(r);

    // Node with its default attention (SDPA kernels on 2.x), alone: information for the TS user.
    const D = makeSetup(config, { batch, device: 'cuda' });
    try {
      for (let i = 0; i < 3; i++) { D.step(true); sync(); }
      const ts: number[] = [];
      for (let i = 0; i < rounds * steps; i++) { sync(); const t0 = performance.now(); D.step(true); sync(); ts.push(performance.now() - t0); }
      r.rows.push({ case: "bf16 train step, Node attention 'auto' (median)", node: median(ts), python: null, unit: 'ms', ratio: null, goal: 'info', status: 'INFO' });
      r.notes.push(`train step ms, Node attention auto: ${fmt(ts)}`);

      // ---- sampling (the same network, saved as TorchScript; Python runs that very graph) ---------------
      const model = D.model.eval();
      model.save(join(dir, 'tim.pt'));
      torch.manualSeed(1);
      const zc = torch.randn([sampleBatch, 4, config.inputSize, config.inputSize]);
      const yc = torch.randint(0, config.numClasses, [sampleBatch], { dtype: 'int64' });
      writeFileSync(join(dir, 'z.bin'), zc.toTypedArray() as Float32Array);
      writeFileSync(join(dir, 'y.bin'), yc.toTypedArray() as BigInt64Array);
      const z = zc.to('cuda'), y = yc.to('cuda');
      zc.dispose(); yc.dispose();
      const RUNS = {
        nfe1: { num_steps: 1, cfg_scale: 1.5, cfg_low: 0.0, cfg_high: 1.0, stochasticity_ratio: 0.0, sample_type: 'transition' },
        nfe8: { num_steps: 8, cfg_scale: 1.5, cfg_low: 0.0, cfg_high: 1.0, stochasticity_ratio: 0.0, sample_type: 'transition' },
      } as const;
      const sp = await startPyScript('py/sampler.py', {
        model: join(dir, 'tim.pt'), z: join(dir, 'z.bin'), y: join(dir, 'y.bin'), shape: z.shape, threads: torch.getNumThreads(),
        null_class: config.numClasses, runs: RUNS, device: 'cuda',
      });
      const ot = new transports.OTFM();
      try {
        for (const name of Object.keys(RUNS) as (keyof typeof RUNS)[]) {
          const run_ = RUNS[name];
          const opts = { z, y, numSteps: run_.num_steps, cfgScale: run_.cfg_scale, cfgLow: run_.cfg_low, cfgHigh: run_.cfg_high, stochasticityRatio: 0, sampleType: run_.sample_type };
          const finalPy = join(dir, `${name}.py.bin`);
          const nodeCall = (): number => { sync(); const t0 = performance.now(); sample(model, ot, opts).dispose(); sync(); return performance.now() - t0; };
          const pyCall = async (): Promise<number> => ((await sp.request(JSON.stringify({ run: name, reps: 1, final: finalPy }))).ms as number[])[0]!;
          for (let i = 0; i < 2; i++) { nodeCall(); await pyCall(); }
          const node: number[] = [], python: number[] = [];
          const calls = o.quick ? 3 : run_.num_steps === 1 ? 20 : 10;
          for (let k = 0; k < calls; k++) {
            if (k % 2 === 0) { node.push(nodeCall()); python.push(await pyCall()); } else { python.push(await pyCall()); node.push(nodeCall()); }
          }
          const ips = (ms: number): number => sampleBatch / (ms / 1000);
          r.rows.push(ratioRow(`${run_.num_steps} NFE sampling, images/s (median)`, ips(median(node)), ips(median(python)), { text: 'info' }, 'img/s', pairedRatio(python, node)));
          const mine = sample(model, ot, opts);
          const theirs = torch.fromBuffer(readFileSync(finalPy), 'float32', mine.shape, { copy: true });
          const diff = torch.scope(() => mine.cpu().sub(theirs).abs().max().item());
          mine.dispose(); theirs.dispose();
          r.notes.push(`${run_.num_steps} NFE: final samples (same z, same graph) differ by max ${diff.toExponential(2)}; ms Node ${fmt(node)}; Python ${fmt(python)}`);
        }
        const mem = gpuMemByPid();
        const spPid = sp.info.pid as number;
        if (mem.has(process.pid) && mem.has(spPid)) r.notes.push(`GPU memory held after sampling (nvidia-smi): Node ${mem.get(process.pid)} MiB (also holds the training setup), Python sampler ${mem.get(spPid)} MiB`);
      } finally {
        sp.close(JSON.stringify({ quit: true }));
        z.dispose(); y.dispose();
      }
    } finally {
      D.dispose();
    }
    r.notes.push(`Python: torch ${process.env.TIM_TORCH_PYTHON ?? ''}; Node libtorch ${info.torchVersion}; GPU ${gpuName()}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  r.machine.loadavg = os.loadavg().map((x) => +x.toFixed(2));
  return r;
}

function gpuName(): string {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10_000 }).trim().split('\n')[0] ?? '?';
  } catch { return '?'; }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const val = cliArgs(argv).num;
  const out = cliArgs(argv).str('out');
  const res = await run({
    quick: argv.includes('--quick'), batch: val('batch'), sampleBatch: val('sample-batch'), depth: val('depth'), rounds: val('rounds'),
    checkpoint: (p) => { writeResult(p, out); },
  });
  console.log(formatTable(res));
  console.log(`  -> ${writeResult(res, out)}`);
}
