/**
 * One full TiM training step on the CPU, side by side with Python (bench/py/train_step.py, the
 * official trainer's step in eager PyTorch over test/fixtures/tim_reference.py, same libtorch):
 *
 *   z ~ N(0,I); label dropout 0.1; TransitionLoss (OT-FM P_mean -0.4, diffusion_ratio 0.5,
 *   consistency_ratio 0.1, DDE ε 0.005, 'sqrt' tangent weight, directional loss); backward;
 *   clip_grad_norm 1.0; AdamW(lr 1e-4, β (0.9, 0.95), wd 0.01, eps 1e-6); zero_grad(set_to_none);
 *   EMA update (0.9999).
 *
 * This is Trainer.trainStep's body (lib/tim/train/trainer.ts microStep + clip/step/zeroGrad/EMA) without the
 * data loader and LR scheduler (Python has neither). No REPA target on either side (proj loss 0), as
 * the project's Trainer. Same weights (official init, written by Node, loaded by Python), same data,
 * same intra-op threads; rounds interleaved after warm-up; medians.
 *
 * Cases:
 *   fp32 step    Node vs Python, goal ratio <= 1.05 (judged on process CPU time when threads = 1,
 *                on wall time otherwise)
 *   bf16 step    Node under torch.autocast({dtype:'bfloat16'}) vs the Python fp32 step, goal >= 3x faster
 *   memory       --mem-steps training steps of a tiny model (Node): live tensors every 100 steps, RSS
 *                growth after warm-up < 5%
 *   bf16 curve   --curve-steps steps, Node bf16 vs Python fp32 from the same weights (denoising loss)
 *
 *   npx tsx bench/train-step.ts [--quick] [--hidden 256] [--depth 4] [--heads 4] [--patch 2] [--input 32]
 *       [--batch 64] [--threads 1] [--rounds N] [--mem-steps 2000] [--curve-steps 0] [--skip-mem] [--skip-bf16]
 *       [--attention auto|math|sdpa] [--out DIR]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TiM, torch, EMA, TransitionLoss, transports } from '../lib/index.js';
import { defaultAttention, preset, type TiMConfig } from '../lib/tim/network/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import type { Device } from '../lib/torch/dtype.js';
import { benchDir, formatTable, median, newResult, ratioRow, writeResult, type Result, startPyScript, cliArgs } from './harness.js';

export interface TrainStepOptions {
  quick: boolean;
  hidden?: number; depth?: number; heads?: number; patch?: number; input?: number; batch?: number;
  threads?: number; rounds?: number; memSteps?: number; curveSteps?: number; skipMem?: boolean; skipBf16?: boolean;
  /** Node's attention (TiM.create's option; default 'auto': sdpa on libtorch 2.x). The Python model computes it the math way. */
  attention?: 'auto' | 'math' | 'sdpa';
}

interface PySide {
  info: Record<string, unknown>;
  ask(cmd?: string): Promise<Record<string, number[]>>;
  close(): void;
}

async function startPython(cfg: Record<string, unknown>): Promise<PySide> {
  const py = await startPyScript('py/train_step.py', cfg);
  return {
    info: py.info,
    async ask(cmd = 'run') {
      return (await py.request(cmd)) as Record<string, number[]>;
    },
    close: () => py.close('quit'),
  };
}

export interface SetupOptions {
  batch: number;
  seed?: number;
  device?: Device;
  /** TiM.create's `attention` (default 'auto') */
  attention?: 'auto' | 'math' | 'sdpa';
  /** also train the REPA projector: a fixed random target h (batch, tokens, zDim), loss + 0.5 * projLoss */
  projection?: boolean;
  /**
   * what the CPU block cache keeps between steps: 'trim' (the default, torch.cpuCache.trim() after
   * each step as the Trainer does), 'empty' (emptyCache after each step), 'keep' (no trim)
   */
  betweenSteps?: 'trim' | 'empty' | 'keep';
  /** TransitionLoss's derivativePrecision: 'float32' (the default: DDE forwards without autocast) or 'autocast' (the official all-bf16) */
  derivativePrecision?: 'float32' | 'autocast';
}

/**
 * The official trainer's step through the public API (the one definition the benchmarks and the
 * memory test share): a model + EMA + AdamW + transition loss (OT-FM, DDE), and a step function
 * (optionally under bf16 autocast) doing loss inside torch.scope, backward, clipGradNorm_, AdamW,
 * zeroGrad(setToNone), EMA.update. bench/cuda.ts runs it on a GPU.
 */
export function makeSetup(config: TiMConfig, { batch, seed = 0, device = 'cpu', attention, projection = false, betweenSteps = 'trim', derivativePrecision = 'float32' }: SetupOptions) {
  torch.manualSeed(seed);
  const model = TiM.create(config, { init: 'official', ...(device !== 'cpu' ? { device } : {}), ...(attention ? { attention } : {}) });
  model.train();
  const ema = new EMA(model, { decay: 0.9999 });
  const params = torch.keep(model.parameters());
  const opt = new torch.optim.AdamW(params, { lr: 1e-4, betas: [0.9, 0.95], weightDecay: 0.01, eps: 1e-6 });
  const transport = new transports.OTFM({ pMean: -0.4, pStd: 1.0 });
  const loss = new TransitionLoss(transport, {
    diffusionRatio: 0.5, consistencyRatio: 0.1, derivativeType: 'dde', differentialEpsilon: 0.005,
    weightTimeType: 'sqrt', weightTimeTangent: true, derivativePrecision,
  });
  const onDevice = (t: Tensor): Tensor => (device === 'cpu' ? t : t.to(device));
  const tokens = (config.inputSize / config.patchSize) ** 2;
  const data: { x: Tensor; y: Tensor; h?: Tensor } = torch.scope(() => torch.keep({
    x: onDevice(torch.randn([batch, config.inChannels, config.inputSize, config.inputSize])),
    y: onDevice(torch.randint(0, config.numClasses, [batch], { dtype: 'int64' })),
    ...(projection ? { h: onDevice(torch.randn([batch, tokens, config.zDim])) } : {}),
  }));
  const autocastDevice = device === 'cpu' ? 'cpu' : 'cuda';
  const step = (bf16 = false): { loss: number; denoising: number } => {
    const r = torch.scope(() => {
      const { x, y, h } = data;
      const z = torch.randnLike(x);
      const yNull = torch.fullLike(y, config.numClasses);
      const yIn = torch.where(torch.rand([batch], device === 'cpu' ? {} : { device }).lt(config.classDropoutProb), yNull, y);
      const run = () => {
        const out = loss.compute({ model, x, z, y: yIn, useDirLoss: true, ...(h ? { hTarget: h } : {}) });
        return { out, total: h ? out.weightedLoss.add(out.projLoss.mul(0.5)) : out.weightedLoss };
      };
      const { out, total } = bf16 ? torch.autocast({ device: autocastDevice, dtype: 'bfloat16' }, run) : run();
      total.backward();
      return { loss: total.item(), denoising: out.denoisingLoss.mean().item() };
    });
    torch.nn.utils.clipGradNorm_(params, 1.0);
    opt.step();
    opt.zeroGrad({ setToNone: true });
    ema.update(model);
    if (betweenSteps === 'trim') torch.cpuCache.trim();
    else if (betweenSteps === 'empty') torch.cpuCache.emptyCache();
    return r;
  };
  const dispose = (): void => {
    opt.dispose(); ema.dispose(); params.forEach((p) => p.dispose()); data.x.dispose(); data.y.dispose(); data.h?.dispose(); model.dispose();
  };
  return { model, data, step, dispose };
}

const rssMB = (): number => process.memoryUsage().rss / 2 ** 20;

export async function run(o: TrainStepOptions): Promise<Result> {
  const threads = o.threads ?? 1;
  const batch = o.batch ?? 64;
  const rounds = o.rounds ?? (o.quick ? 2 : 4);
  const steps = 2; // timed steps per round and side
  const warmup = 3;
  torch.setNumThreads(threads);
  const config: TiMConfig = {
    ...preset('TiM-B/4'), hiddenSize: o.hidden ?? 256, depth: o.depth ?? 4, numHeads: o.heads ?? 4, patchSize: o.patch ?? 2,
    inputSize: o.input ?? 32, inChannels: 4, numClasses: 10, encoderDepth: Math.min(2, o.depth ?? 4), classDropoutProb: 0.1,
    zDim: 64, projectorDim: 128,
  };
  const memSteps = o.memSteps ?? (o.quick ? 300 : 2000);
  const r = newResult('train-step', `TiM training step (loss+DDE, backward, clip, AdamW, EMA), hidden ${config.hiddenSize}, depth ${config.depth}, patch ${config.patchSize}, ${config.inputSize}x${config.inputSize}x4, batch ${batch}, CPU`, o.quick,
    { hidden: config.hiddenSize, depth: config.depth, heads: config.numHeads, patch: config.patchSize, input: config.inputSize, batch, threads, rounds, stepsPerRound: steps, warmup, memSteps, curveSteps: o.curveSteps ?? 0,
      libtorch: torch.buildInfo().torchVersion, attention: o.attention === undefined || o.attention === 'auto' ? `auto (${defaultAttention()})` : o.attention,
      env: Object.fromEntries(['OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'DNNL_MAX_CPU_ISA'].map((k) => [k, process.env[k] ?? null])) });
  // The memory run goes first, in a process that has not yet held the big model's activations
  // (freed memory stays in the process's heap, which would dilute a relative RSS growth).
  if (!o.skipMem) memoryRun(r, memSteps);
  const dir = mkdtempSync(join(os.tmpdir(), 'tim-ts-'));
  const S = makeSetup(config, { batch, attention: o.attention });
  let py: PySide | null = null;
  try {
    S.model.save(join(dir, 'weights.safetensors'));
    torch.save({ x: S.data.x, y: S.data.y }, join(dir, 'inputs.safetensors'));
    py = await startPython({ params: S.model.officialParams(), weights: join(dir, 'weights.safetensors'), inputs: join(dir, 'inputs.safetensors'), threads, steps, repo: join(benchDir, '..'), seed: 0 });
    // curve first (both from the same initial weights), if asked
    if (o.curveSteps) {
      torch.manualSeed(123);
      const C = makeSetup(config, { batch }); // same init seed -> same weights as S at creation
      try {
        const nd: number[] = [];
        for (let i = 0; i < o.curveSteps; i++) nd.push(C.step(true).denoising);
        // Python: fresh process state is already one step ahead (its 'ready' step), so compare trends, not bits
        const pd = (await py.ask(`curve ${o.curveSteps} 123`)).denoising!;
        const k = Math.max(1, Math.floor(o.curveSteps / 4));
        const avg = (xs: number[], a: number, b: number): number => xs.slice(a, b).reduce((s, v) => s + v, 0) / (b - a);
        const n0 = avg(nd, 0, k), n1 = avg(nd, nd.length - k, nd.length), p0 = avg(pd, 0, k), p1 = avg(pd, pd.length - k, pd.length);
        r.rows.push({ case: `bf16 curve: Node bf16 denoising, last ${k} / first ${k}`, node: n1 / n0, python: p1 / p0, unit: 'x', ratio: (n1 / n0) / (p1 / p0), goal: 'info', status: 'INFO' });
        r.notes.push(`curve (denoising loss, ${o.curveSteps} steps, ${k}-step means) Node bf16 first/last ${n0.toFixed(4)}/${n1.toFixed(4)}, Python fp32 ${p0.toFixed(4)}/${p1.toFixed(4)}; different noise draws, same initial weights/data`);
      } finally { C.dispose(); }
    }
    const nodeLoss = S.step().loss;
    // Warm-up in the timed pattern: TorchScript re-profiles after the bf16 (autocast) calls, so the
    // fp32 graph is warmed again after them.
    for (let i = 1; i < warmup; i++) S.step();
    if (!o.skipBf16) { for (let i = 0; i < 3; i++) S.step(true); for (let i = 0; i < 2; i++) S.step(); S.step(true); }
    await py.ask();
    const fp = { node: [] as number[], py: [] as number[], nodeCpu: [] as number[], pyCpu: [] as number[], bf: [] as number[], bfCpu: [] as number[] };
    const timed = (bf16: boolean, wall: number[], cpu: number[]): void => {
      for (let i = 0; i < steps; i++) {
        const c0 = process.cpuUsage(); const t0 = performance.now();
        S.step(bf16);
        wall.push(performance.now() - t0);
        const c = process.cpuUsage(c0); cpu.push((c.user + c.system) / 1e3);
      }
    };
    const pyRound = async (): Promise<void> => { const p = await py!.ask(); fp.py.push(...p.ms!); fp.pyCpu.push(...p.cpu!); };
    for (let k = 0; k < rounds; k++) {
      if (k % 2 === 0) { timed(false, fp.node, fp.nodeCpu); await pyRound(); if (!o.skipBf16) timed(true, fp.bf, fp.bfCpu); }
      else { if (!o.skipBf16) timed(true, fp.bf, fp.bfCpu); await pyRound(); timed(false, fp.node, fp.nodeCpu); }
    }
    const cpuJudged = threads === 1;
    r.rows.push(ratioRow('fp32 step, CPU time, median', median(fp.nodeCpu), median(fp.pyCpu), cpuJudged ? { max: 1.05, text: 'ratio <= 1.05' } : { text: 'info' }));
    r.rows.push(ratioRow('fp32 step, wall, median', median(fp.node), median(fp.py), cpuJudged ? { text: 'info (load-sensitive)' } : { max: 1.05, text: 'ratio <= 1.05' }));
    r.rows.push(ratioRow('fp32 step, wall, min', Math.min(...fp.node), Math.min(...fp.py), { text: 'info' }));
    if (!o.skipBf16) {
      // goal: Node bf16 at least 3x faster than Python fp32, i.e. node/python <= 1/3
      r.rows.push(ratioRow('bf16 step (Node) vs fp32 (Py), CPU time', median(fp.bfCpu), median(fp.pyCpu), cpuJudged ? { max: 1 / 3, text: 'ratio <= 0.33 (>= 3x)' } : { text: 'info' }));
      r.rows.push(ratioRow('bf16 step (Node) vs fp32 (Py), wall', median(fp.bf), median(fp.py), cpuJudged ? { text: 'info' } : { max: 1 / 3, text: 'ratio <= 0.33 (>= 3x)' }));
      r.rows.push(ratioRow('bf16 vs fp32, both Node, wall', median(fp.bf), median(fp.node), { text: 'info' }));
    }
    r.notes.push(`first weighted loss: Node ${nodeLoss.toFixed(5)}, Python ${(py.info.loss as number).toFixed(5)} (≈ mean time weight; independent noise draws)`);
    r.notes.push(`Python: torch ${String(py.info.torch)}, threads ${String(py.info.threads)}; Node threads ${torch.getNumThreads()}; CPU flags avx512_bf16=${cpuFlag('avx512_bf16')} amx_bf16=${cpuFlag('amx_bf16')}`);
    r.notes.push(`per-step wall ms, Node fp32: ${fp.node.map((x) => x.toFixed(0)).join(' ')}`);
    r.notes.push(`per-step wall ms, Python fp32: ${fp.py.map((x) => x.toFixed(0)).join(' ')}`);
    r.notes.push(`per-step CPU ms, Node fp32: ${fp.nodeCpu.map((x) => x.toFixed(0)).join(' ')}; Python: ${fp.pyCpu.map((x) => x.toFixed(0)).join(' ')}`);
    if (!o.skipBf16) r.notes.push(`per-step wall ms, Node bf16: ${fp.bf.map((x) => x.toFixed(0)).join(' ')}`);
  } finally {
    py?.close();
    S.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  r.notes.push(`Node RSS after the timed runs: ${rssMB().toFixed(0)} MB`);
  r.machine.loadavg = os.loadavg().map((x) => +x.toFixed(2));
  return r;
}

function cpuFlag(f: string): boolean {
  try { return new RegExp(`\\b${f}\\b`).test(readFileSync('/proc/cpuinfo', 'utf8')); } catch { return false; }
}

/** `n` training steps of a tiny model: live tensors sampled every 100 steps, RSS growth after warm-up. */
function memoryRun(r: Result, n: number): void {
  const cfg: TiMConfig = { ...preset('TiM-B/4'), hiddenSize: 32, depth: 2, numHeads: 2, patchSize: 2, inputSize: 8, inChannels: 4, numClasses: 10, encoderDepth: 1, classDropoutProb: 0.1, zDim: 16, projectorDim: 32 };
  const S = makeSetup(cfg, { batch: 8, seed: 1 });
  try {
    const warm = Math.min(200, Math.floor(n / 10));
    for (let i = 0; i < warm; i++) S.step();
    (globalThis as { gc?: () => void }).gc?.();
    const live0 = torch.memory().liveTensors, rss0 = rssMB();
    const lives: number[] = [];
    const t0 = performance.now();
    for (let i = 1; i <= n; i++) {
      S.step();
      if (i % 100 === 0) lives.push(torch.memory().liveTensors);
    }
    const ms = performance.now() - t0;
    (globalThis as { gc?: () => void }).gc?.();
    const live1 = torch.memory().liveTensors, rss1 = rssMB();
    const growth = (rss1 - rss0) / rss0;
    const flat = lives.every((v) => v === live0) && live1 === live0;
    r.rows.push({ case: `memory: live tensors over ${n} steps (max - start)`, node: Math.max(...lives, live1) - live0, python: null, unit: 'tensors', ratio: null, goal: 'flat (0)', status: flat ? 'PASS' : 'MISS' });
    r.rows.push({ case: `memory: RSS growth after ${warm}-step warm-up`, node: growth * 100, python: null, unit: '%', ratio: null, goal: '< 5%', status: growth < 0.05 ? 'PASS' : 'MISS' });
    r.notes.push(`memory run: tiny TiM (hidden 32, depth 2, 8x8x4, batch 8), ${n} steps in ${(ms / 1000).toFixed(1)} s; live tensors at start ${live0}, every 100 steps: ${lives.join(' ')}; end ${live1}; RSS ${rss0.toFixed(1)} -> ${rss1.toFixed(1)} MB${(globalThis as { gc?: unknown }).gc ? ' (after gc)' : ' (no --expose-gc)'}`);
  } finally { S.dispose(); }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const val = cliArgs(argv).num;
  const res = await run({
    quick: argv.includes('--quick'), hidden: val('hidden'), depth: val('depth'), heads: val('heads'), patch: val('patch'), input: val('input'),
    batch: val('batch'), threads: val('threads'), rounds: val('rounds'), memSteps: val('mem-steps'), curveSteps: val('curve-steps'),
    skipMem: argv.includes('--skip-mem'), skipBf16: argv.includes('--skip-bf16'),
    attention: argv.includes('--attention') ? argv[argv.indexOf('--attention') + 1] as TrainStepOptions['attention'] : undefined,
  });
  console.log(formatTable(res));
  console.log(`  -> ${writeResult(res, cliArgs(argv).str('out'))}`);
}
