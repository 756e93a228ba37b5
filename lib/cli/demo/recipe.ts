/**
 * The CPU demo behind `tim demo` / `npm run demo`: train a small pixel-space TiM on the embedded MNIST
 * digits for a wall-clock budget, sample 100 digits per class at several NFEs with the EMA weights,
 * evaluate them with the project's own evaluator, and write a report.
 *
 *   <out>/train/             the Trainer's run folder (config.yaml, metrics.jsonl, checkpoints/)
 *   <out>/progress.json      training seconds per checkpointed step (how much budget is spent)
 *   <out>/samples/grid-nfe<N>.png       a row per class
 *   <out>/eval/nfe-<N>.safetensors      images float32 (1000, 1, 32, 32) in [-1, 1], labels int64 (1000)
 *   <out>/eval/nfe-<N>.json             the evaluation of that file
 *   <out>/report.md                     the metrics table, the config, the timings
 *
 * Resumable at every phase: training continues from the newest checkpoint with the budget that is
 * left (progress.json records how much each checkpoint had used), and sample/eval files already
 * written for the final training step are kept (their metadata names the step they came from).
 * Every file is written atomically, so a killed run never leaves a torn one.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { stringify as toYaml } from 'yaml';
import { cpus } from 'node:os';
import { join } from 'node:path';
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { Trainer } from '../../tim/train/trainer.js';
import { sample } from '../../tim/sampling/sampler.js';
import { makeGrid, savePng } from '../../torch/io/image.js';
import { writeFileAtomicSync } from '../../tim/train/checkpoints.js';
import { MetricsLog, formatDuration, type StepMetrics } from '../../tim/train/progress.js';
import { evaluateSamples, type EvalResult } from '../../tim/eval/evaluate.js';
import { ensureClassifierAsync } from '../../tim/eval/classifier.js';
import type { MixedPrecision } from '../../tim/train/config.js';

/** Network sizes: `demo` is the default; `tiny` is for tests (seconds, not minutes). */
export type DemoSize = 'demo' | 'tiny';

export interface DemoOptions {
  /** Run folder (default runs/demo). */
  outDir?: string;
  /** Training wall-clock budget in minutes (default 10; checkpointing counts, sampling/eval do not). */
  budgetMin?: number;
  /** Train exactly this many optimizer steps instead of a time budget (deterministic). */
  steps?: number;
  /** Delete the run folder first instead of resuming. */
  fresh?: boolean;
  /** Sampler step counts (default 1, 2, 4, 8, 16). */
  nfes?: number[];
  /** Samples per class per NFE (default 100). */
  perClass?: number;
  /** Images per column of the grids (default 10: the first of each class). */
  gridColumns?: number;
  size?: DemoSize;
  /** 'auto' (default): bf16 autocast when the CPU has native bf16 (avx512_bf16 / amx_bf16), else fp32. */
  precision?: MixedPrecision | 'auto';
  seed?: number;
  /** Classifier and reference-stats cache of the evaluator (default $TIM_CACHE_DIR or runs/cache). */
  cacheDir?: string;
  /** Skip the evaluation (the report then has no metrics). */
  evaluate?: boolean;
  /** Seconds of training between checkpoints (default 60). */
  checkpointEverySec?: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
  /** Set by a signal handler: stop after the current step with a checkpoint. */
  signal?: { stop: boolean };
}

export interface NfeResult {
  nfe: number;
  samples: string;
  grid: string;
  /** seconds per image (network + sampler, batch 250, float32) */
  secondsPerImage: number;
  eval: EvalResult | null;
}

export interface DemoResult {
  outDir: string;
  step: number;
  trainSeconds: number;
  /** false: stopped by a signal before the budget was spent (resume by running again) */
  complete: boolean;
  nfes: NfeResult[];
  report: string | null;
}

/**
 * The chosen network per size. `demo`: patch 8 on 32×32 (16 tokens), hidden 192, depth 6, 3 heads
 * (4.96M parameters), the network the official code was measured with on this demo (issue "Demo
 * quality"; bench/demo-vs-official.ts). Patch 4 (64 tokens) costs ~4× per step, and steps in the
 * budget are the demo's quality (docs/demo.md). `tiny` is for tests.
 */
export function demoNetwork(size: DemoSize): Record<string, unknown> {
  const common = {
    input_size: 32, in_channels: 1, class_dropout_prob: 0.1, num_classes: 10, qk_norm: true,
    new_condition: 't-r', use_new_embed: true, distance_aware: true,
    // the REPA projector only feeds the projection loss, which has no target here: keep it small
    projector_dim: 64,
  };
  return size === 'tiny'
    ? { ...common, patch_size: 8, depth: 2, hidden_size: 32, num_heads: 2, encoder_depth: 1, z_dim: 32, lora_hidden_size: 16 }
    : { ...common, patch_size: 8, depth: 6, hidden_size: 192, num_heads: 3, encoder_depth: 2, z_dim: 64 };
}

/** Whether this CPU runs bfloat16 natively (Linux /proc/cpuinfo flags); elsewhere bf16 is emulated and slower. */
export function cpuHasFastBf16(): boolean {
  try {
    return /\b(avx512_bf16|amx_bf16)\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

/**
 * The demo's training config in the official YAML layout (so `tim train --config <out>/train/config.yaml`
 * reproduces it). The time budget, not max_train_steps, ends training: the LR is constant after
 * warmup, so the schedule does not depend on how many steps the budget allows.
 */
export function demoConfig(o: { size?: DemoSize; precision?: MixedPrecision; seed?: number; steps?: number } = {}): Record<string, unknown> {
  const size = o.size ?? 'demo';
  const tiny = size === 'tiny';
  return {
    model: {
      // The official OT-FM without model guidance: guidance trained into the target (the *_mg configs,
      // widened to t ≤ 1 in an earlier demo) made the samples class-specific but collapsed each class
      // to a few modes, so FD rose with the steps (docs/demo.md, "History").
      transport: {
        target: 'tim.schedulers.transports.OT_FM',
        params: { P_mean: -0.4, P_std: 1.0, sigma_d: 1.0 },
      },
      // the official transition loss
      transition_loss: {
        diffusion_ratio: 0.5, consistency_ratio: 0.1, derivative_type: 'dde', differential_epsilon: 0.005,
        weight_time_type: 'sqrt', weight_time_tangent: true,
      },
      network: { target: 'tim.models.c2i.tim_model.TiM', params: demoNetwork(size) },
      proj_coeff: 0.0, // no REPA encoder on MNIST
      use_ema: true,
      // with the warmup in runDemo (min(d, (1+n)/(10+n))) the EMA spans ~10% of the run; 0.999 caps it for long runs
      ema_decay: tiny ? 0.9 : 0.999,
    },
    data: { data_type: 'mnist', dataset: { split: 'train' }, dataloader: { batch_size: tiny ? 8 : 64 } },
    training: {
      seed: o.seed ?? 0,
      max_train_steps: o.steps ?? 1_000_000,
      checkpointing_steps: 1_000_000, // the demo checkpoints by time (checkpointEverySec)
      checkpoints_total_limit: 2,
      learning_rate: 2e-3,
      scale_lr: false,
      lr_scheduler: 'constant_with_warmup',
      lr_warmup_steps: tiny ? 2 : 50,
      gradient_accumulation_steps: 1,
      optimizer: { target: 'torch.optim.AdamW', params: { betas: [0.9, 0.95], weight_decay: 0.0, eps: 1e-8 } },
      max_grad_norm: 1.0,
      mixed_precision: o.precision ?? 'no',
      validation_steps: 0,
      log_steps: 1,
    },
  };
}

/** The demo's LR: linear warmup over `warmup` steps, then linear decay to 2% at fraction 1 of the budget. */
export function demoLr(base: number, warmup: number, step: number, fraction: number): number {
  const w = warmup > 0 ? Math.min(1, (step + 1) / warmup) : 1;
  const f = Math.min(1, Math.max(0, fraction));
  return base * w * Math.max(0.02, 1 - f);
}

/** The EMA decay at optimizer step `n` (1-based) with warmup: min(decay, (1 + n) / (10 + n)). */
export function emaWarmupDecay(decay: number, n: number): number {
  return Math.min(decay, (1 + n) / (10 + n));
}

interface Progress {
  /** training seconds used when the checkpoint of each step was written */
  seconds: Record<string, number>;
  /** the step training ended at (budget spent or --steps reached) */
  finished: { step: number; seconds: number } | null;
}

function readProgress(path: string): Progress {
  if (!existsSync(path)) return { seconds: {}, finished: null };
  try {
    const p = JSON.parse(readFileSync(path, 'utf8')) as Progress;
    return { seconds: p.seconds ?? {}, finished: p.finished ?? null };
  } catch {
    return { seconds: {}, finished: null };
  }
}

function writeJson(path: string, v: unknown): void {
  writeFileAtomicSync(path, JSON.stringify(v, null, 2) + '\n');
}

function fmtNum(v: number, digits = 2): string {
  return Number.isFinite(v) ? v.toFixed(digits) : '-';
}

/** Reads the `step` a samples file was made from (its metadata), or null. */
function samplesStep(path: string): number | null {
  if (!existsSync(path)) return null;
  try {
    const f = torch.loadSafetensors(path);
    for (const t of Object.values(f.tensors)) t.dispose();
    const s = Number(f.metadata?.step);
    return Number.isSafeInteger(s) ? s : null;
  } catch {
    return null;
  }
}

/** Runs (or resumes) the demo. */
export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const out = opts.outDir ?? join('runs', 'demo');
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const nfes = opts.nfes ?? [1, 2, 4, 8, 16];
  const perClass = opts.perClass ?? 100;
  const size = opts.size ?? 'demo';
  const seed = opts.seed ?? 0;
  const budgetSec = (opts.budgetMin ?? 10) * 60;
  const ckptEvery = opts.checkpointEverySec ?? 60;
  const signal = opts.signal ?? { stop: false };
  const precision: MixedPrecision = opts.precision === undefined || opts.precision === 'auto' ? (cpuHasFastBf16() ? 'bf16' : 'no') : opts.precision;
  if (opts.steps !== undefined && !(Number.isSafeInteger(opts.steps) && opts.steps >= 1)) throw new RangeError(`demo: steps must be a positive integer, got ${opts.steps}`);
  if (!(budgetSec > 0)) throw new RangeError(`demo: budgetMin must be > 0, got ${opts.budgetMin}`);

  if (opts.fresh && existsSync(out)) {
    log(`demo: --fresh: removing ${out}`);
    rmSync(out, { recursive: true, force: true });
  }
  const trainDir = join(out, 'train');
  const progressPath = join(out, 'progress.json');
  mkdirSync(trainDir, { recursive: true });
  const progress = readProgress(progressPath);

  // ---- training -------------------------------------------------------------------------------
  const doc = demoConfig({ size, precision, seed, ...(opts.steps !== undefined ? { steps: opts.steps } : {}) });
  let trainer: Trainer;
  try {
    trainer = Trainer.create({ config: doc, outDir: trainDir, resume: 'latest', device: 'cpu', write: (s) => process.stderr.write(s) });
  } catch (e) {
    // e.g. a checkpoint of another network (an older demo, another --size) in the same folder
    if ((e as { code?: unknown }).code === 'E_CONFIG') (e as Error).message += ` — use --fresh to start over in ${out}, or another --out`;
    throw e;
  }
  // what `tim train --config` reads (the demo drives the LR and EMA warmup itself: see docs/demo.md)
  writeFileAtomicSync(join(trainDir, 'config.yaml'), toYaml(doc));
  const result: DemoResult = { outDir: out, step: 0, trainSeconds: 0, complete: false, nfes: [], report: null };
  try {
    let trainSec = trainer.step === 0 ? 0 : progress.seconds[String(trainer.step)] ?? NaN;
    if (!Number.isFinite(trainSec)) {
      // a checkpoint without a progress entry (killed between the two writes): count it as fully spent
      log(`demo: no budget record for step ${trainer.step}; assuming the budget is spent`);
      trainSec = budgetSec;
    }
    if (trainer.step === 0) {
      progress.seconds = {};
      progress.finished = null;
    }
    const params = trainer.model.numParameters();
    const baseLr = trainer.learningRate;
    const warmup = (doc.training as { lr_warmup_steps: number }).lr_warmup_steps;
    const progressFraction = (): number => (opts.steps !== undefined ? trainer.step / opts.steps : trainSec / budgetSec);
    const stopAt = (): boolean => (opts.steps !== undefined ? trainer.step >= opts.steps : trainSec >= budgetSec);
    log(`demo: TiM ${size} (${params.toLocaleString('en-US')} parameters, patch ${(doc.model as { network: { params: { patch_size: number } } }).network.params.patch_size}), ` +
      `MNIST 8,000 digits, batch ${(doc.data as { dataloader: { batch_size: number } }).dataloader.batch_size}, ${precision === 'bf16' ? 'bf16 autocast' : 'float32'}, ${cpus().length} CPU cores, ` +
      (opts.steps !== undefined ? `${opts.steps} steps` : `budget ${formatDuration(budgetSec)}`) +
      (trainer.step > 0 ? ` — resuming at step ${trainer.step} (${formatDuration(trainSec)} spent)` : ''));

    log(`demo: writing to ${out}; Ctrl-C stops with a checkpoint, running the demo again resumes`);
    const metrics = new MetricsLog(join(trainDir, 'metrics.jsonl'), trainer.step > 0 ? trainer.step : null);
    let lastCkptSec = trainSec;
    // the step of the newest checkpoint (a resumed run starts at one)
    let ckptStep = trainer.step > 0 ? trainer.step : -1;
    let lastLog = performance.now();
    let lossAvg = NaN;
    const checkpoint = (): void => {
      // the budget record first: a checkpoint whose record is missing is treated as spent
      progress.seconds[String(trainer.step)] = trainSec;
      writeJson(progressPath, progress);
      const t0 = performance.now();
      trainer.saveCheckpoint();
      // the write is part of training's wall clock: it counts towards the budget (from the next record on)
      trainSec += (performance.now() - t0) / 1000;
      lastCkptSec = trainSec;
      ckptStep = trainer.step;
    };
    try {
      while (!stopAt() && !signal.stop) {
        // a turn of the event loop per step, so signal handlers run between steps
        await new Promise<void>((r) => setImmediate(r));
        // The LR follows the budget, not a step count (the trainer's constant schedule is overridden
        // here, before each step): linear warmup, then a linear decay to 2% at the end of the budget.
        // Annealing to the end of a fixed budget beats a constant LR for short runs (budgeted training,
        // Li et al. 2020); the fraction is of time, so a slower machine anneals over fewer steps.
        for (const g of trainer.optimizer.paramGroups) g.lr = demoLr(baseLr, warmup, trainer.step, progressFraction());
        const t0 = performance.now();
        // EMA warmup: this step's update uses d_w = min(d, (1 + n)/(10 + n)) at step n (the usual
        // warmup), so the EMA follows a window of ~10% of the run whatever the machine's speed, instead
        // of averaging in the untrained start of a short run (d = 0.999 alone would keep 37% of the
        // initialization after 1,000 steps). Deterministic in the step, so resumes see the same decays.
        const m = await trainer.trainStep(trainer.ema ? { emaDecay: emaWarmupDecay(trainer.ema.decay, trainer.step + 1) } : {});
        const dt = (performance.now() - t0) / 1000;
        trainSec += dt;
        lossAvg = Number.isFinite(lossAvg) ? 0.98 * lossAvg + 0.02 * m.loss_denoising : m.loss_denoising;
        const sm: StepMetrics = { ...m, it_s: 1 / dt, sps: trainer.config.data.batchSize / dt };
        metrics.add({ ...sm, train_seconds: Number(trainSec.toFixed(3)) });
        if (performance.now() - lastLog > 5000 || stopAt()) {
          metrics.flush();
          lastLog = performance.now();
          const left = opts.steps !== undefined ? (opts.steps - trainer.step) * dt : budgetSec - trainSec;
          log(`train step ${trainer.step}  loss ${m.loss_weighted.toFixed(4)}  denoise ${lossAvg.toFixed(4)} (avg)  lr ${m.lr.toExponential(2)}  ` +
            `${(1 / dt).toFixed(2)} it/s  ${formatDuration(trainSec)} spent, ${formatDuration(Math.max(0, left))} left`);
        }
        if (trainSec - lastCkptSec >= ckptEvery && !stopAt()) {
          checkpoint();
          log(`checkpoint: step ${trainer.step}`);
        }
      }
    } finally {
      metrics.close();
    }
    if (ckptStep !== trainer.step && trainer.step > 0) checkpoint();
    result.step = trainer.step;
    result.trainSeconds = trainSec;
    if (signal.stop && !stopAt()) {
      log(`demo: stopped at step ${trainer.step} with a checkpoint; run again to continue`);
      return result;
    }
    progress.finished = { step: trainer.step, seconds: trainSec };
    writeJson(progressPath, progress);
    log(`demo: training done: ${trainer.step} steps in ${formatDuration(trainSec)}`);

    // ---- sampling -------------------------------------------------------------------------------
    const module = trainer.ema ? trainer.ema.module : trainer.model.module;
    module.train(false);
    const model = { forward: (a: Tensor, b: Tensor, c: Tensor, d: Tensor) => module.forward<Tensor>(a, b, c, d) };
    const net = trainer.config.network;
    const evalDir = join(out, 'eval');
    const sampleDir = join(out, 'samples');
    mkdirSync(evalDir, { recursive: true });
    mkdirSync(sampleDir, { recursive: true });
    const cols = Math.min(opts.gridColumns ?? 10, perClass);
    const n = perClass * net.numClasses;
    const batch = 250;
    for (const nfe of nfes) {
      if (signal.stop) return result;
      const file = join(evalDir, `nfe-${nfe}.safetensors`);
      const grid = join(sampleDir, `grid-nfe${nfe}.png`);
      const timingFile = join(evalDir, `nfe-${nfe}.timing.json`);
      let secondsPerImage = NaN;
      if (samplesStep(file) === trainer.step && existsSync(grid) && existsSync(timingFile)) {
        secondsPerImage = (JSON.parse(readFileSync(timingFile, 'utf8')) as { secondsPerImage: number }).secondsPerImage;
        log(`sample nfe ${nfe}: kept ${file} (step ${trainer.step})`);
      } else {
        log(`sample nfe ${nfe}: ${n} images (${perClass} per class) with the EMA weights...`);
        const t0 = performance.now();
        torch.noGrad(() => torch.scope(() => {
          // The same noise for every NFE (so the grids compare row by row), drawn from its own seed.
          const saved = torch.getRngState();
          torch.manualSeed(seed + 7919);
          const z = torch.randn([n, net.inChannels, net.inputSize, net.inputSize]);
          torch.setRngState(saved);
          // class-major: the first perClass images are 0s, the next 1s, ...
          const y = torch.arange(net.numClasses, { dtype: 'int64' }).reshape(net.numClasses, 1).expand(net.numClasses, perClass).reshape(n);
          const parts: Tensor[] = [];
          for (let s = 0; s < n; s += batch) {
            const len = Math.min(batch, n - s);
            parts.push(sample(model, trainer.transport, { z: z.narrow(0, s, len), y: y.narrow(0, s, len), numSteps: nfe }));
          }
          const images = torch.cat(parts, 0).clamp(-1, 1).contiguous();
          secondsPerImage = (performance.now() - t0) / 1000 / n;
          torch.save({ images, labels: y.contiguous() }, file, { step: String(trainer.step), nfe: String(nfe), seed: String(seed) });
          // a row per class: its first `cols` samples
          const rows = torch.cat(Array.from({ length: net.numClasses }, (_, c) => images.narrow(0, c * perClass, cols)), 0);
          savePng(grid, makeGrid(rows, { nrow: cols, padValue: -1 }));
        }));
        writeJson(timingFile, { nfe, step: trainer.step, secondsPerImage });
        log(`sample nfe ${nfe}: ${n} images in ${(secondsPerImage * n).toFixed(1)} s (${(secondsPerImage * 1000).toFixed(2)} ms/image) -> ${file}, ${grid}`);
      }
      result.nfes.push({ nfe, samples: file, grid, secondsPerImage, eval: null });
    }
  } finally {
    await trainer.close();
  }

  // ---- evaluation -----------------------------------------------------------------------------
  if (opts.evaluate ?? true) {
    // Trained once per cache (a few minutes on 2 cores, with progress), asynchronously so that
    // Ctrl-C still gets through; evaluateSamples then loads it from the cache.
    const cls = await ensureClassifierAsync({
      ...(opts.cacheDir ? { cacheDir: opts.cacheDir } : {}),
      onEpoch: (e) => log(`eval: training the MNIST classifier (once per cache): epoch ${e.epoch}, loss ${e.loss.toFixed(4)} (${e.seconds.toFixed(1)} s)`),
    });
    cls.module.dispose();
    for (const r of result.nfes) {
      if (signal.stop) return result;
      const jsonPath = join(out, 'eval', `nfe-${r.nfe}.json`);
      let ev: (EvalResult & { step?: number }) | null = null;
      if (existsSync(jsonPath)) {
        try {
          const j = JSON.parse(readFileSync(jsonPath, 'utf8')) as EvalResult & { step?: number };
          // a result from before precision/recall were measured is evaluated again
          if (j.step === result.step && j.precision !== undefined) ev = j;
        } catch { /* torn or old: evaluate again */ }
      }
      if (!ev) {
        ev = { ...evaluateSamples(r.samples, { ...(opts.cacheDir ? { cacheDir: opts.cacheDir } : {}), log: (s) => log(`eval: ${s}`) }), step: result.step };
        writeJson(jsonPath, ev);
      }
      r.eval = ev;
      log(`eval nfe ${r.nfe}: FD ${fmtNum(ev.fd)} (floor ${ev.floor ? fmtNum(ev.floor.fd) : '-'}), class accuracy ${ev.classAccuracy === null ? '-' : (100 * ev.classAccuracy).toFixed(1) + '%'}, ` +
        `precision ${fmtPr(ev.precision)}, recall ${fmtPr(ev.recall)}`);
    }
  }

  const report = join(out, 'report.md');
  writeFileAtomicSync(report, formatReport(result, { doc, size, perClass, precision, budgetSec, steps: opts.steps }));
  result.report = report;
  result.complete = true;
  log(`demo: report ${report}`);
  return result;
}

/** The transport block of the config in words (OT-FM and its parameters, model guidance when on). */
function describeTransport(doc: Record<string, unknown>): string {
  const t = (doc.model as { transport: { target: string; params: Record<string, unknown> } }).transport;
  const p = t.params;
  const name = t.target.split('.').pop()!.replace('OT_FM', 'OT-FM');
  const guided = p.enhance_target === true
    ? `, model guidance (enhanced target: w_gt ${p.w_gt}, w_cond ${p.w_cond} for t in [${p.w_start}, ${p.w_end}], from the EMA)`
    : '';
  return `${name} (P_mean ${p.P_mean}, P_std ${p.P_std})${guided}`;
}

/** The transition_loss block of the config in words. */
function describeLoss(doc: Record<string, unknown>): string {
  const l = (doc.model as { transition_loss: Record<string, unknown> }).transition_loss;
  return `diffusion_ratio ${l.diffusion_ratio}, consistency_ratio ${l.consistency_ratio}, ${String(l.derivative_type).toUpperCase()} (ε ${l.differential_epsilon}), ` +
    `${l.weight_time_type} time weighting${l.weight_time_tangent ? ' with tangent' : ''}`;
}

/** Precision or recall with 3 decimals; '-' where not measured (null, or an eval file from before they were). */
function fmtPr(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : v.toFixed(3);
}

/** report.md: the metrics per NFE, the classifier, training steps and time, the config. */
export function formatReport(r: DemoResult, c: { doc: Record<string, unknown>; size: DemoSize; perClass: number; precision: MixedPrecision; budgetSec: number; steps: number | undefined }): string {
  const net = (c.doc.model as { network: { params: Record<string, unknown> } }).network.params;
  const tr = c.doc.training as Record<string, unknown>;
  const first = r.nfes.find((x) => x.eval)?.eval ?? null;
  const lines = [
    '# TiM demo report',
    '',
    `Trained ${r.step} optimizer steps in ${formatDuration(r.trainSeconds)} of training time ` +
      `(${c.steps !== undefined ? `fixed --steps ${c.steps}` : `budget ${formatDuration(c.budgetSec)}`}), ` +
      `${(r.step / Math.max(1e-9, r.trainSeconds)).toFixed(2)} steps/s, on ${cpus().length} CPU cores. ` +
      'Samples: the EMA weights, deterministic transition sampling (OT-FM), no classifier-free guidance at sampling ' +
      `(${(c.doc.model as { transport: { params: { enhance_target?: boolean } } }).transport.params.enhance_target ? 'the guidance is trained in: model guidance' : 'nor in training'}), ` +
      `${c.perClass} per class.`,
    '',
    '| NFE | FD ↓ | real-vs-real floor | class accuracy ↑ | precision ↑ | recall ↑ | ms / image | samples | grid |',
    '|---:|---:|---:|---:|---:|---:|---:|---|---|',
  ];
  for (const x of r.nfes) {
    const e = x.eval;
    lines.push(`| ${x.nfe} | ${e ? fmtNum(e.fd) : '-'} | ${e?.floor ? fmtNum(e.floor.fd) : '-'} | ${e?.classAccuracy != null ? (100 * e.classAccuracy).toFixed(1) + '%' : '-'} | ` +
      `${fmtPr(e?.precision)} | ${fmtPr(e?.recall)} | ` +
      `${fmtNum(x.secondsPerImage * 1000)} | eval/nfe-${x.nfe}.safetensors | samples/grid-nfe${x.nfe}.png |`);
  }
  const sampleSec = r.nfes.reduce((a, x) => a + x.secondsPerImage * c.perClass * 10, 0);
  const evalSec = r.nfes.reduce((a, x) => a + (x.eval?.seconds ?? 0), 0);
  lines.push('', `Time: training ${formatDuration(r.trainSeconds)}, sampling ${formatDuration(sampleSec)} (all NFEs), evaluation ${formatDuration(evalSec)}` +
    ` (ms / image: sampling only, batches of 250, float32).`);
  lines.push('');
  const one = r.nfes.find((x) => x.nfe === 1)?.eval;
  const last = [...r.nfes].reverse().find((x) => x.eval && x.nfe > 1);
  if (one && one.classAccuracy !== null) {
    lines.push(`Class accuracy at 1 NFE per digit: ${one.perClass.map((p) => `${p.label}: ${(100 * p.accuracy).toFixed(0)}%`).join(', ')}.`, '');
    // More steps should not make samples worse (TiM's any-step property); how the demo compares with
    // the official code at the same budget is bench/demo-vs-official.ts's job (docs/demo.md).
    const fds = r.nfes.filter((x) => x.eval).map((x) => x.eval!.fd);
    const worst = fds.reduce((m, fd, i) => Math.max(m, fd - Math.min(...fds.slice(0, i + 1))), 0);
    lines.push(`1-NFE class accuracy ${(100 * one.classAccuracy).toFixed(1)}%. ` +
      (last?.eval ? `FD from 1 to ${last.nfe} NFE: ${fmtNum(one.fd)} → ${fmtNum(last.eval.fd)} ` +
        `(${worst === 0 ? 'never rises with more steps' : `rises by up to ${fmtNum(worst)} over its best so far`}).` : ''), '');
  }
  if (first) {
    lines.push(
      `FD: Fréchet distance between the features (${first.featureDim}-d) of the project's MNIST classifier for the samples and for the ` +
      `${first.reference.n} MNIST test digits; the floor is the same distance for ${first.floor?.n ?? '-'} real training digits (what a perfect ` +
      `generator of that many samples scores). Class accuracy: how often the classifier sees the requested digit. ` +
      'Precision / recall (k = 3, in the same feature space, as the ADM suite): the share of samples that lie on the test digits\' ' +
      'k-NN manifold (fidelity), and of test digits that lie on the samples\' (diversity: a generator that repeats a few digits ' +
      `scores high precision, low recall); the ${first.floor?.n ?? '-'} real training digits score ${fmtPr(first.floor?.precision)} / ${fmtPr(first.floor?.recall)}.`,
      '',
      `Classifier: ${first.classifier?.path ?? '-'}, held-out accuracy ${first.classifier ? (100 * first.classifier.testAccuracy).toFixed(2) : '-'}% on the MNIST test digits.`,
      '',
    );
  } else {
    lines.push('(evaluation skipped)', '');
  }
  lines.push(
    '## Config',
    '',
    `- network: TiM c2i, patch ${net.patch_size}, hidden ${net.hidden_size}, depth ${net.depth}, heads ${net.num_heads}, ` +
      `encoder_depth ${net.encoder_depth}, input 32×32×1, 10 classes + null class (dropout ${net.class_dropout_prob})`,
    `- transport ${describeTransport(c.doc)}; transition loss: ${describeLoss(c.doc)}`,
    `- AdamW lr ${tr.learning_rate} (${tr.lr_warmup_steps} warmup steps, then linear decay to 2% at the end of the ${c.steps !== undefined ? 'steps' : 'time budget'}), ` +
      `betas (0.9, 0.95), clip 1.0; batch ${(c.doc.data as { dataloader: { batch_size: number } }).dataloader.batch_size}; ` +
      `EMA decay min(${(c.doc.model as { ema_decay: number }).ema_decay}, (1 + n)/(10 + n)) at step n`,
    `- precision: ${c.precision === 'bf16' ? 'bf16 autocast (the CPU has native bf16), DDE forwards in float32' : 'float32'}; sampling in float32`,
    `- full config: train/config.yaml (official layout: \`tim train --config ${join(r.outDir, 'train', 'config.yaml')}\` trains the same network and loss, with the trainer's step-based LR and a fixed EMA decay)`,
    '',
  );
  return lines.join('\n');
}
