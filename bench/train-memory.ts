/**
 * Training-step memory and time, tim-torch against the official TiM code, on the same libtorch and
 * intra-op threads (issue: "Training step memory and time: at or below the official Python code").
 *
 * Each side runs in a fresh process of its own. Both stay loaded and take turns, one training step
 * at a time, the other waiting idle on its stdin (never both computing at once): this VM's speed drifts
 * by up to 2x within a minute, and taking turns puts both sides under the same drift. `--steps` full
 * training steps each; RSS (VmRSS) and peak RSS (VmHWM from /proc/self/status, per process) after every
 * step, wall and CPU time per step, and tim-torch's minor page faults per step.
 *
 *   Node   tim-torch's public API: TransitionLoss.compute (OT-FM P_mean -0.4, diffusion 0.5,
 *          consistency 0.1, DDE ε 0.005, 'sqrt' tangent weight, directional loss, REPA target h) inside
 *          torch.scope, (weighted + 0.5·proj).backward(), clipGradNorm_(1.0), AdamW, zeroGrad(setToNone),
 *          EMA.update; under torch.autocast bf16 for the bf16 cases.
 *   Python bench/py/train_memory.py: the official TransitionSchedule / OT_FM imported unchanged from a
 *          snapshot of WZDTHU/TiM (--official DIR, a folder holding its tim/ package), the official
 *          trainer's step around it (network: test/fixtures/tim_reference.py; see that script).
 *
 * Same weights (official init written by Node, loaded by Python), same x, y, h.
 *
 *   npx tsx bench/train-memory.ts --official DIR [--steps 6] [--threads 2] [--batch 64]
 *       [--sizes 256x4,128x2] [--dtypes fp32,bf16,bf16-all] [--node-env K=V,...] [--name train-memory] [--out DIR]
 *
 * dtypes: fp32; bf16 = tim-torch's default under bf16 autocast (the DDE forwards in float32,
 * derivativePrecision 'float32'); bf16-all = the DDE forwards in bf16 too ('autocast'), as the
 * official code runs them. The official side runs all-bf16 in both bf16 cases.
 *
 * Goals (issue): peak and steady RSS ≤ 1.1× official, step time ≤ 1.0×.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TiMConfig } from '../lib/tim/network/index.js';
import { benchDir, cliArgs, formatTable, median, newResult, ratioRow, startJsonChild, startPyScript, writeResult, type PyScript } from './harness.js';

interface Case { hidden: number; depth: number; batch: number; dtype: 'fp32' | 'bf16' | 'bf16-all' }
interface SideResult { ms: number[]; cpu: number[]; rss: number[]; hwm: number[]; live?: number[]; faults?: number[]; startRss?: number; info?: Record<string, unknown> }

const status = (): { rss: number; hwm: number } => {
  const s = readFileSync('/proc/self/status', 'utf8');
  const g = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)![1]) / 1024;
  return { rss: g('VmRSS'), hwm: g('VmHWM') };
};

/** The benchmark's network at size `c` (the official constructor arguments go to Python). */
async function caseConfig(c: Case): Promise<TiMConfig> {
  const { preset } = await import('../lib/tim/network/index.js');
  return {
    ...preset('TiM-B/4'), hiddenSize: c.hidden, depth: c.depth, numHeads: Math.max(2, c.hidden / 64), patchSize: 2, inputSize: 32,
    inChannels: 4, numClasses: 10, encoderDepth: Math.min(2, c.depth), classDropoutProb: 0.1, zDim: 64, projectorDim: 128,
  };
}

/**
 * The Node side, in this (child) process: writes weights/inputs for Python into dir, prints
 * {"ready", params}, then answers each stdin line "run N" with the N steps' figures (the same protocol
 * as bench/py/train_memory.py), until "quit".
 */
async function nodeChild(c: Case, threads: number, dir: string): Promise<void> {
  const { torch } = await import('../lib/index.js');
  const { makeSetup } = await import('./train-step.js');
  torch.setNumThreads(threads);
  // between steps the CPU block cache is trimmed to its budget, as the Trainer does (--node-env
  // TIM_TORCH_CPU_CACHE_KEEP=<fraction> sets the budget); --node-env TIM_BENCH_BETWEEN_STEPS=empty|keep
  // empties it or keeps everything instead (the trade-off's two ends)
  const between = process.env.TIM_BENCH_BETWEEN_STEPS ?? 'trim';
  if (between !== 'trim' && between !== 'empty' && between !== 'keep') throw new Error(`TIM_BENCH_BETWEEN_STEPS must be trim, empty or keep, got '${between}'`);
  const S = makeSetup(await caseConfig(c), { batch: c.batch, projection: true, betweenSteps: between, derivativePrecision: c.dtype === 'bf16-all' ? 'autocast' : 'float32' });
  // --node-env TIM_BENCH_GRAPH_OPT=on|off|auto: TiM.graphOptimization (auto, the default: off on the CPU)
  const g = process.env.TIM_BENCH_GRAPH_OPT ?? 'auto';
  if (g !== 'auto' && g !== 'on' && g !== 'off') throw new Error(`TIM_BENCH_GRAPH_OPT must be auto, on or off, got '${g}'`);
  S.model.graphOptimization = g;
  S.model.save(join(dir, 'weights.safetensors'));
  torch.save(S.data, join(dir, 'inputs.safetensors'));
  console.log(JSON.stringify({ ready: true, params: S.model.officialParams(), VmRSS: status().rss }));
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = line.trim().split(/\s+/);
    if (cmd[0] !== 'run') break;
    const n = Number(cmd[1] ?? 1);
    const r: SideResult = { ms: [], cpu: [], rss: [], hwm: [], live: [], faults: [] };
    for (let i = 0; i < n; i++) {
      const c0 = process.cpuUsage(); const f0 = process.resourceUsage().minorPageFault; const t0 = performance.now();
      S.step(c.dtype !== 'fp32');
      r.ms.push(performance.now() - t0);
      const cu = process.cpuUsage(c0); r.cpu.push((cu.user + cu.system) / 1e3);
      r.faults!.push(process.resourceUsage().minorPageFault - f0);
      const s = status(); r.rss.push(s.rss); r.hwm.push(s.hwm); r.live!.push(torch.memory().liveTensors);
    }
    console.log(JSON.stringify(r));
  }
  S.dispose();
}

/** One side's per-step answers as one result (arrays concatenated in step order). */
const merged = (parts: SideResult[]): SideResult => {
  const cat = (k: 'ms' | 'cpu' | 'rss' | 'hwm' | 'live' | 'faults'): number[] => parts.flatMap((p) => p[k] ?? []);
  return { ms: cat('ms'), cpu: cat('cpu'), rss: cat('rss'), hwm: cat('hwm'), live: cat('live'), faults: cat('faults') };
};

/**
 * Both sides stay loaded and take turns, one step each (the idle one waits on its stdin): this VM's
 * speed drifts by up to 2x within a minute, and interleaving puts both sides' steps under the same drift.
 */
async function runCase(c: Case, steps: number, threads: number, official: string, nodeEnv: Record<string, string>): Promise<{ node: SideResult; py: SideResult }> {
  const dir = mkdtempSync(join(os.tmpdir(), 'tim-mem-'));
  let nodeSide: PyScript | undefined, pySide: PyScript | undefined;
  try {
    nodeSide = await startJsonChild('tim-torch side', process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify({ c, threads, dir })], { ...process.env, ...nodeEnv });
    const ready = nodeSide.info as { params: Record<string, unknown>; VmRSS: number };
    const cfg = { params: ready.params, weights: join(dir, 'weights.safetensors'), inputs: join(dir, 'inputs.safetensors'), threads,
      repo: join(benchDir, '..'), official, seed: 0, amp: c.dtype === 'fp32' ? null : 'bfloat16' };
    pySide = await startPyScript(join('py', 'train_memory.py'), cfg);
    const nodeSteps: SideResult[] = [], pySteps: SideResult[] = [];
    for (let i = 0; i < steps; i++) {
      // who goes first alternates, so neither side always follows the other's cache and frequency state
      const turns: [PyScript, SideResult[]][] = [[nodeSide, nodeSteps], [pySide, pySteps]];
      for (const [side, out] of i % 2 === 0 ? turns : turns.reverse()) out.push((await side.request('run 1')) as unknown as SideResult);
    }
    return { node: { ...merged(nodeSteps), startRss: ready.VmRSS }, py: { ...merged(pySteps), startRss: pySide.info.VmRSS as number, info: pySide.info } };
  } finally {
    nodeSide?.close('quit'); pySide?.close('quit');
    await new Promise((r) => setTimeout(r, 200));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--child')) {
  const { c, threads, dir } = JSON.parse(process.argv[process.argv.indexOf('--child') + 1]!) as { c: Case; threads: number; dir: string };
  await nodeChild(c, threads, dir);
} else if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = cliArgs().str;
  const official = arg('official');
  if (!official) throw new Error('--official DIR (a snapshot of WZDTHU/TiM holding tim/) is required');
  const steps = Number(arg('steps') ?? 6), threads = Number(arg('threads') ?? 2), batch = Number(arg('batch') ?? 64);
  const sizes = (arg('sizes') ?? '256x4,128x2').split(',').map((s) => s.split('x').map(Number) as [number, number]);
  const dtypes = (arg('dtypes') ?? 'fp32,bf16').split(',') as Case['dtype'][];
  for (const d of dtypes) if (d !== 'fp32' && d !== 'bf16' && d !== 'bf16-all') throw new Error(`--dtypes: fp32, bf16 or bf16-all, got '${d}'`);
  // --node-env K=V[,K=V]: environment for the tim-torch process only (e.g. glibc MALLOC_*_ settings under test)
  const nodeEnv = Object.fromEntries((arg('node-env') ?? '').split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const name = arg('name') ?? 'train-memory';
  const res = newResult(name, `TiM training step memory and time, tim-torch vs official TiM code (same libtorch), batch ${batch}, 32x32x4, ${steps} steps, ${threads} threads`, false,
    { steps, threads, batch, sizes: sizes.map((s) => s.join('x')), dtypes, malloc: process.env.TIM_TORCH_MALLOC ?? 'tuned (default)', MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? null, nodeEnv });
  res.columns = ['tim-torch', 'official'];
  for (const [hidden, depth] of sizes) {
    for (const dtype of dtypes) {
      const c: Case = { hidden: hidden!, depth: depth!, batch, dtype };
      const tag = `h${hidden} d${depth} ${dtype}`;
      let node: SideResult, py: SideResult;
      try {
        ({ node, py } = await runCase(c, steps, threads, official, nodeEnv));
      } catch (e) {
        // e.g. libtorch 1.13's CPU autocast: the reference network's q/k LayerNorm gets a bf16 input and fp32 weights
        res.notes.push(`${tag}: not measured: ${String((e as Error).message).split('\n').filter(Boolean).at(-1)}`);
        console.error(`failed ${tag}`);
        continue;
      }
      const w = (xs: number[]): number[] => xs.slice(1); // step 0 (first call, TorchScript profiling) not timed
      res.rows.push(ratioRow(`${tag}: peak RSS (VmHWM)`, Math.max(...node.hwm), Math.max(...py.hwm), { max: 1.1, text: '<= 1.1x' }, 'MB'));
      res.rows.push(ratioRow(`${tag}: RSS after last step`, node.rss.at(-1)!, py.rss.at(-1)!, { max: 1.1, text: '<= 1.1x' }, 'MB'));
      res.rows.push(ratioRow(`${tag}: step wall, median of steps 2..`, median(w(node.ms)), median(w(py.ms)), { max: 1.0, text: '<= 1.0x' }));
      res.rows.push(ratioRow(`${tag}: step CPU, median of steps 2..`, median(w(node.cpu)), median(w(py.cpu)), { text: 'info' }));
      res.notes.push(`${tag}: RSS MB per step, tim-torch ${node.rss.map((x) => x.toFixed(0)).join(' ')} (live tensors ${node.live!.join(' ')}); official ${py.rss.map((x) => x.toFixed(0)).join(' ')}`);
      res.notes.push(`${tag}: wall ms per step, tim-torch ${node.ms.map((x) => x.toFixed(0)).join(' ')}; official ${py.ms.map((x) => x.toFixed(0)).join(' ')}`);
      res.notes.push(`${tag}: median of the per-turn wall ratios (steps 2..) ${median(w(node.ms).map((m, i) => m / w(py.ms)[i]!)).toFixed(2)}; tim-torch minor page faults per step ${node.faults!.join(' ')}`);
      if (!res.notes.some((n) => n.startsWith('python torch'))) res.notes.push(`python torch ${String(py.info?.torch)}, threads ${String(py.info?.threads)}, environment ${JSON.stringify(py.info?.env)}`);
      console.error(`done ${tag}`);
    }
  }
  console.log(formatTable(res));
  console.log(`  -> ${writeResult(res, arg('out'))}`);
}
