/**
 * The TiM trainer: the official projects/train/trainer_c2i.py loop over this package's pieces.
 *
 * One optimizer step (gradient_accumulation_steps micro-batches):
 *   for each micro-batch:  z ~ N(0, I); labels dropped to the null class with class_dropout_prob
 *                          (official: torch.rand(B) < p, drawn after the noise); the transition loss
 *                          (its DDE forwards run without grad, in float32); (weighted + proj_coeff·proj)
 *                          / accumulation → backward
 *   then                   clip (max_grad_norm > 0) → optimizer.step → scheduler.step → zeroGrad
 *                          → EMA update → CPU block cache trimmed to its between-steps budget
 * Each micro-batch runs inside torch.scope, so only the model, EMA and optimizer state outlive it.
 *
 * Reproducibility: the only random draws are the process RNG's (noise, dropout, times) and the
 * data order (a pure function of seed and position). A checkpoint stores the RNG state, the
 * loader position, the optimizer, scheduler and EMA, so a resumed run continues bit for bit
 * (tested by killing a real process). Sample grids save and restore the RNG state around
 * themselves and so change nothing in training.
 *
 * Data parallel (several processes, lib/torch/distributed/data_parallel.ts; docs/distributed.md): every rank
 * holds the whole model and reads its own shard of the global stream (batch_size per process, as
 * the official trainer: the global batch is batch_size · processes · accumulation). Each rank draws
 * the randomness of the whole global micro-batch from the same generator and keeps its own rows, so
 * every sample gets the noise, times and dropout coin it would get on one process: N processes at
 * batch B/N train the same run as one at B, and a checkpoint (RNG state, global data position)
 * resumes with any number of processes. Gradients are averaged by bucketed all-reduce before the
 * clip, so optimizer, schedule and EMA stay identical on every rank; rank 0 alone writes.
 *
 * Text to image (a T2I network, data_type image_ms; projects/train/trainer_t2i.py): the batches are
 * the packed aspect buckets (data/t2i_data.ts), the frozen VAE and caption encoder run online and
 * captions are replaced by "" with model.proportion_empty_prompts (t2i_step.ts). One process only;
 * no sample grids (sample a checkpoint with tim sample --prompt).
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve as resolvePath } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import * as torch from '../../torch/index.js';
import { TorchError, argError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
import * as dist from '../../torch/distributed/process_group.js';
import type { Tensor } from '../../torch/tensor.js';
import type { Device } from '../../torch/dtype.js';
import { AdamW, Adam, SGD, getScheduler, type LambdaLR, type Optimizer, type BaseHyper } from '../../torch/optim/index.js';
import type { ScriptModule } from '../../torch/jit.js';
import { TiM } from '../network/model.js';
import { EMA, cloneScriptModule } from './ema.js';
import { TransitionLoss, type LossDict } from '../objective/loss.js';
import type { Transport } from '../transports/transport.js';
import { DataLoader, type Dataset, type LoaderState } from '../data/loader.js';
import { sample, decodeLatents, type Decoder } from '../sampling/sampler.js';
import { makeGrid, savePng } from '../../torch/io/image.js';
import {
  parseTrainConfig, readTrainConfig, effectiveLearningRate, transportFromOfficialConfig, optimizerOptions,
  type TrainConfig, type MixedPrecision,
} from './config.js';
import { datasetFromConfig, t2iDatasetFromConfig } from './data.js';
import { T2IBatchLoader } from '../data/t2i_data.js';
import { loadT2IParts, t2iInputs, type T2IParts } from './t2i_step.js';
import type { CaptionEncoder } from '../../text/caption_encoder.js';
import type { VAE } from '../../vae/vae.js';
import {
  writeCheckpoint, pruneCheckpoints, resolveResume, readCheckpointState, removeStaleTemps, writeFileAtomicSync, checkpointsDir,
  listCheckpoints, STATE_FILE, type CheckpointState,
} from './checkpoints.js';
import { RunLock, fsError } from './run_lock.js';
import { DataParallel, type DataParallelOptions } from '../../torch/distributed/data_parallel.js';
import { MetricsLog, ProgressDisplay, RateMeter, progressLine, type StepMetrics, type StepLosses } from './progress.js';

export interface TrainerOptions {
  /** a TrainConfig, a parsed official-layout document, or the path of a YAML file */
  config: TrainConfig | Record<string, unknown> | string;
  /** run folder: checkpoints/, samples/, metrics.jsonl, config.yaml */
  outDir: string;
  /**
   * stop after this step (default training.max_train_steps). The LR schedule still spans
   * max_train_steps, so stopping early and resuming later is the same run.
   */
  maxSteps?: number;
  /** 'latest' (fresh start when there is none), a step, a checkpoint folder, or null (fresh); default: training.resume_from_checkpoint */
  resume?: string | null;
  /** train on this dataset instead of the config's data block */
  dataset?: Dataset;
  /** default 'cuda' when available, else 'cpu' */
  device?: Device;
  /** overrides training.mixed_precision */
  mixedPrecision?: MixedPrecision;
  /** overrides training.seed */
  seed?: number;
  /** turns latents into images for the sample grids (a VAE decoder); without it latent models get a channel preview */
  decoder?: Decoder;
  /** messages and progress (default: stderr) */
  write?: (s: string) => void;
  /** rewrite the progress line in place (default: stderr is a terminal) */
  tty?: boolean;
  /** batches loaded ahead (default 1) */
  prefetch?: number;
  /**
   * Data-parallel training over torch.distributed. Default: on when the env says this process is
   * one of several (WORLD_SIZE > 1, as set by `tim train --nproc` or torchrun), or when the caller
   * already initialized torch.distributed. true: join from the env even with one process; false:
   * never; an object: init options (rank, worldSize, masterAddr, masterPort, timeoutMs, backend,
   * bucketBytes), the env filling the rest. timeoutMs defaults to training.dist_timeout.
   */
  distributed?: boolean | DataParallelOptions;
  /**
   * Divergence guard: a step whose loss inputs (prediction, target: before the loss's nan_to_num
   * hides them) or gradient norm are not finite is skipped (no optimizer or EMA update); this many
   * such steps in a row stop the run with a TorchError E_DIVERGED (default 3). No checkpoint with
   * non-finite weights is ever written.
   */
  maxNonFiniteSteps?: number;
  /**
   * Text to image: the caption encoder, a Gemma-3 folder or a loaded CaptionEncoder (the caller's);
   * default model.text_encoder_dir.
   */
  textEncoder?: string | CaptionEncoder;
  /** Text to image: the VAE, a diffusers folder or a loaded VAE (the caller's); default model.vae_dir. */
  vae?: string | VAE;
}

/** How this process takes part in data-parallel training (null: alone). */
interface DistributedPlan {
  rank: number;
  worldSize: number;
  localRank: number;
  init: DataParallelOptions;
}

function distributedPlan(opt: TrainerOptions['distributed'], timeoutS: number | null): DistributedPlan | null {
  if (opt === false) return null;
  if (opt !== undefined && opt !== true && (opt === null || typeof opt !== 'object')) {
    throw argError('type', 'Trainer.create: distributed must be a boolean or an options object');
  }
  const init: DataParallelOptions = typeof opt === 'object' ? { ...opt } : {};
  if (init.timeoutMs === undefined && timeoutS !== null) init.timeoutMs = Math.round(timeoutS * 1000);
  if (dist.isInitialized()) return { rank: dist.rank(), worldSize: dist.worldSize(), localRank: dist.localRank(), init };
  if (opt === undefined) {
    // automatic: only when a launcher said this process is one of several
    const ws = (init.env ?? process.env).WORLD_SIZE;
    if (ws === undefined || ws.trim() === '' || Number(ws) <= 1) return null;
  }
  const r = dist.resolveInitOptions(init); // validates the env now (E_DIST), before any model is built
  return { rank: r.rank, worldSize: r.worldSize, localRank: r.localRank, init };
}

export interface TrainResult {
  step: number;
  /** the last logged metrics */
  metrics: StepMetrics | null;
  /** the checkpoint folder written at the end */
  checkpoint: string | null;
  /** steps per second over the run (this process) */
  stepsPerSecond: number;
}

/** Whether every element of v is finite (call inside a scope). */
function allFinite(v: Tensor): boolean {
  return Number(v.detach().isfinite().logicalNot().sum().item()) === 0;
}

/** Whether the folder holds a run (a checkpoint or a metrics log) that a fresh start would wipe. */
function refuseExistingRun(outDir: string): void {
  const cks = listCheckpoints(outDir);
  const metrics = join(outDir, 'metrics.jsonl');
  let logged = false;
  try { logged = statSync(metrics).size > 0; } catch { /* none */ }
  if (!cks.length && !logged) return;
  const what = cks.length ? `checkpoints up to step ${cks[cks.length - 1]!.step}` : 'a metrics.jsonl of an earlier start';
  throw new TorchError(
    `'${outDir}' already holds a run (${what}); a fresh start would overwrite its log and prune its checkpoints. ` +
    'Continue it with --resume latest (Trainer option resume: \'latest\'), or train into another --out (or delete the folder to start over)',
    'E_RUN_EXISTS',
  );
}

/** The first line of the config.yaml tim train writes: a file without it is the user's. */
const CONFIG_HEADER = '# written by tim train: the training config of this run (a fresh run rewrites this file)\n';

/** Keys sorted at every level, for comparing two parsed documents. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x && typeof x === 'object' && !Array.isArray(x)
    ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x));
}

/**
 * Whether to (re)write <out>/config.yaml: not on a resume that has one; never over a file the user
 * wrote (no header) unless it is the same config, which is then kept as it is, comments and all.
 */
function configToWrite(outDir: string, config: TrainConfig, source: string | null, resumed: boolean): boolean {
  const path = join(outDir, 'config.yaml');
  if (!existsSync(path)) return true;
  if (resumed) return false;
  if (source !== null && resolvePath(source) === resolvePath(path)) return false;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw fsError('cannot read', path, e);
  }
  if (text.startsWith(CONFIG_HEADER)) return true;
  let same = false;
  try { same = canonical(parseYaml(text)) === canonical(config.raw); } catch { /* not YAML: differs */ }
  if (same) return false;
  throw new TorchError(
    `'${path}' was not written by tim train and differs from the training config: starting here would overwrite it. ` +
    'Move it away, pass it as --config, or train into another --out',
    'E_RUN_EXISTS',
  );
}

function base64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

function unbase64(s: unknown, what: string): Uint8Array {
  if (typeof s !== 'string') throw new TorchError(`checkpoint state: ${what} is missing`, 'E_FORMAT');
  return new Uint8Array(Buffer.from(s, 'base64'));
}

function makeOptimizer(name: string, params: Tensor[], lr: number, raw: Record<string, unknown>): Optimizer<BaseHyper> {
  const o = { ...optimizerOptions(raw), lr };
  try {
    if (name === 'AdamW') return new AdamW(params, o as ConstructorParameters<typeof AdamW>[1]) as unknown as Optimizer<BaseHyper>;
    if (name === 'Adam') return new Adam(params, o as ConstructorParameters<typeof Adam>[1]) as unknown as Optimizer<BaseHyper>;
    return new SGD(params, o as ConstructorParameters<typeof SGD>[1]) as unknown as Optimizer<BaseHyper>;
  } catch (e) {
    throw new TorchError(`training config: training.optimizer.params: ${(e as Error).message}`, 'E_CONFIG');
  }
}

/** Official transition_loss keys (snake_case) → TransitionLoss options. */
function lossFromConfig(transport: Transport, cfg: Record<string, unknown>): TransitionLoss {
  try {
    return TransitionLoss.fromOfficialConfig(transport, cfg);
  } catch (e) {
    throw new TorchError(`training config: model.transition_loss: ${(e as Error).message}`, 'E_CONFIG');
  }
}

/** Images in [-1, 1] for a grid: decoded latents, pixel samples as they are, or a preview of latent channels. */
function toImages(x: Tensor, decoder: Decoder | undefined): Tensor {
  return torch.scope(() => {
    if (decoder) return decodeLatents(decoder, x).clamp(-1, 1);
    const c = x.shape[1]!;
    if (c === 1 || c === 3) return x.clamp(-1, 1);
    // Latents without a decoder: the first three channels, each image scaled into [-1, 1].
    const v = x.narrow(1, 0, Math.min(3, c));
    const m = v.abs().amax([1, 2, 3], true).clamp(1e-6, Infinity);
    return v.div(m);
  });
}

export class Trainer {
  readonly config: TrainConfig;
  readonly outDir: string;
  readonly maxSteps: number;
  readonly device: Device;
  readonly mixedPrecision: MixedPrecision;
  readonly seed: number;
  readonly model: TiM;
  readonly ema: EMA | null;
  readonly transport: Transport;
  readonly loss: TransitionLoss;
  readonly optimizer: Optimizer<BaseHyper>;
  readonly scheduler: LambdaLR;
  /** the batches: a DataLoader (C2I) or the packed-bucket T2IBatchLoader (T2I) */
  readonly data: DataLoader | T2IBatchLoader;
  /** text to image: the frozen encoders and the empty-prompt counts (null for C2I) */
  readonly t2i: T2IParts | null;
  readonly learningRate: number;
  /** this process's rank and the number of processes (0 and 1 when not data parallel) */
  readonly rank: number;
  readonly worldSize: number;
  /** optimizer steps done */
  step = 0;
  /** the checkpoint this run resumed from, or null */
  readonly resumedFrom: string | null;
  private readonly params: Tensor[];
  private readonly decoder: Decoder | undefined;
  private readonly display: ProgressDisplay;
  private readonly write: (s: string) => void;
  private metrics: MetricsLog | null = null;
  private closed = false;
  private stopRequested = false;
  /** data parallel: a stop all ranks agreed on at the last step (any rank's request counts) */
  private stopAgreed = false;
  private warmedUp = false;
  private readonly distPlan: DistributedPlan | null;
  private dp: DataParallel | null = null;
  /** a step or collective threw: close() then does no collective (the peers may be gone) */
  private failed = false;
  /** the run folder's lock (rank 0), released by close() */
  private readonly lock: RunLock | null;
  private readonly writeConfig: boolean;
  private readonly maxNonFinite: number;
  /** consecutive steps skipped for non-finite values */
  private nonFiniteRun = 0;
  /** the step of the last checkpoint written by this run (or resumed from) */
  private lastGood: string | null = null;
  /** set by microStep when the network's prediction or the target was not finite */
  private nonFiniteSeen = false;

  private constructor(p: {
    config: TrainConfig; outDir: string; maxSteps: number; device: Device; mixedPrecision: MixedPrecision; seed: number;
    model: TiM; ema: EMA | null; transport: Transport; loss: TransitionLoss; optimizer: Optimizer<BaseHyper>; scheduler: LambdaLR;
    loader: DataLoader | T2IBatchLoader; t2i: T2IParts | null; params: Tensor[]; learningRate: number; step: number; resumedFrom: string | null; decoder?: Decoder;
    write: (s: string) => void; tty: boolean; distPlan: DistributedPlan | null;
    lock: RunLock | null; writeConfig: boolean; maxNonFinite: number;
  }) {
    this.lock = p.lock;
    this.writeConfig = p.writeConfig;
    this.maxNonFinite = p.maxNonFinite;
    this.config = p.config;
    this.outDir = p.outDir;
    this.maxSteps = p.maxSteps;
    this.device = p.device;
    this.mixedPrecision = p.mixedPrecision;
    this.seed = p.seed;
    this.model = p.model;
    this.ema = p.ema;
    this.transport = p.transport;
    this.loss = p.loss;
    this.optimizer = p.optimizer;
    this.scheduler = p.scheduler;
    this.data = p.loader;
    this.t2i = p.t2i;
    this.params = p.params;
    this.learningRate = p.learningRate;
    this.step = p.step;
    this.resumedFrom = p.resumedFrom;
    this.lastGood = p.resumedFrom;
    this.decoder = p.decoder;
    this.distPlan = p.distPlan;
    this.rank = p.distPlan?.rank ?? 0;
    this.worldSize = p.distPlan?.worldSize ?? 1;
    // Only rank 0 reports (progress, messages); the others would repeat it N times.
    this.write = this.rank === 0 ? p.write : () => {};
    this.display = new ProgressDisplay(this.write, p.tty);
  }

  /**
   * Builds everything a run needs: seeds the RNG, creates the model (official init) and its EMA,
   * the optimizer with the (scaled) learning rate and the schedule, the data loader, and restores a
   * checkpoint when resuming.
   */
  static create(opts: TrainerOptions): Trainer {
    if (!check.isObject(opts)) throw argError('type', 'Trainer.create: options {config, outDir} required');
    check.knownKeys(opts, ['config', 'outDir', 'maxSteps', 'resume', 'dataset', 'device', 'mixedPrecision', 'seed', 'decoder', 'write', 'tty',
      'prefetch', 'distributed', 'maxNonFiniteSteps', 'textEncoder', 'vae'], 'Trainer.create');
    const config = typeof opts.config === 'string' ? readTrainConfig(opts.config)
      : isTrainConfig(opts.config) ? opts.config : parseTrainConfig(opts.config);
    if (typeof opts.outDir !== 'string' || opts.outDir === '') throw argError('type', 'Trainer.create: outDir must be a non-empty string');
    const t = config.training;
    const maxSteps = opts.maxSteps ?? t.maxTrainSteps;
    if (!Number.isSafeInteger(maxSteps) || maxSteps < 1) throw argError('range', `Trainer.create: maxSteps must be a positive integer, got ${maxSteps}`);
    const distPlan = distributedPlan(opts.distributed, t.distTimeout);
    let device: Device = opts.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');
    // One process per GPU: a plain 'cuda' means this rank's own device.
    if (distPlan && device === 'cuda') device = `cuda:${distPlan.localRank}`;
    if (distPlan && distPlan.init.backend === undefined) {
      distPlan.init.backend = String(device).startsWith('cuda') && dist.isAvailable('nccl') ? 'nccl' : 'gloo';
    }
    const mixedPrecision = check.oneOf(opts.mixedPrecision ?? t.mixedPrecision, 'mixedPrecision', 'Trainer.create', ['no', 'bf16', 'fp16'] as const, 'E_RANGE');
    if (mixedPrecision === 'fp16' && !String(device).startsWith('cuda')) {
      throw new TorchError('training config: mixed_precision fp16 needs CUDA (CPU autocast is bfloat16 only); use bf16 or no', 'E_CONFIG');
    }
    const seed = opts.seed ?? t.seed;
    if (!Number.isSafeInteger(seed) || seed < 0) throw argError('range', `Trainer.create: seed must be a non-negative integer, got ${seed}`);
    const write = opts.write ?? ((s: string) => process.stderr.write(s));
    const outDir = opts.outDir;
    const maxNonFinite = opts.maxNonFiniteSteps ?? 3;
    if (!Number.isSafeInteger(maxNonFinite) || maxNonFinite < 1) throw argError('range', `Trainer.create: maxNonFiniteSteps must be a positive integer, got ${maxNonFinite}`);

    const resumeSpec = opts.resume === undefined ? t.resumeFromCheckpoint : opts.resume;
    // The run folder is owned by one trainer: rank 0 (which alone writes) holds its lock until
    // close() or exit; only the owner clears the leftovers of a killed run.
    const main = (distPlan?.rank ?? 0) === 0;
    let lock: RunLock | null = null;
    if (main) lock = RunLock.acquire(outDir);
    else if (!existsSync(outDir)) {
      try { mkdirSync(outDir, { recursive: true }); } catch (e) { throw fsError('cannot create the run folder', outDir, e); }
    }
    let resume: { step: number; dir: string } | null;
    let state: CheckpointState | null;
    let writeConfig: boolean;
    try {
      if (main) removeStaleTemps(outDir);
      resume = resumeSpec ? resolveResume(outDir, resumeSpec) : null;
      state = resume ? readCheckpointState(resume.dir) : null;
      if (state && JSON.stringify(state.network) !== JSON.stringify(config.network)) {
        throw new TorchError(`resume: checkpoint '${resume!.dir}' was trained with another network config`, 'E_CONFIG');
      }
      if (!resume && resumeSpec !== 'latest') refuseExistingRun(outDir);
      // (a resume exactly at maxSteps is a finished run: train() says so and trains nothing)
      if (state && state.step > maxSteps) {
        throw new TorchError(
          `resume: checkpoint '${resume!.dir}' is at step ${state.step}, past maxSteps ${maxSteps} (--max-steps / training.max_train_steps): nothing to train. Pass a --max-steps above ${state.step}, or resume from an earlier checkpoint`,
          'E_RANGE',
        );
      }
      writeConfig = main && configToWrite(outDir, config, typeof opts.config === 'string' ? opts.config : null, resume !== null);
    } catch (e) {
      lock?.release();
      throw e;
    }

    const isT2I = config.network.variant === 't2i';
    if (isT2I && distPlan) {
      lock?.release();
      throw new TorchError('training config: text-to-image training runs on one process (data parallel is C2I only)', 'E_CONFIG');
    }
    if (!isT2I && (opts.textEncoder !== undefined || opts.vae !== undefined)) {
      lock?.release();
      throw argError('type', 'Trainer.create: textEncoder and vae (tim train --text-encoder / --vae) are for a text-to-image network; this one is class-conditional', 'E_OPTION');
    }
    if (isT2I && opts.dataset) {
      lock?.release();
      throw argError('type', 'Trainer.create: a text-to-image run reads its captioned images from data (data_type image_ms), not the dataset option', 'E_OPTION');
    }
    let dataset: Dataset | null;
    let t2iData: ReturnType<typeof t2iDatasetFromConfig> | null = null;
    try {
      dataset = isT2I ? null : opts.dataset ?? datasetFromConfig(config);
      if (isT2I) t2iData = t2iDatasetFromConfig(config);
    } catch (e) {
      lock?.release();
      throw e;
    }
    const transport = transportFromOfficialConfig(config.transport);
    const loss = lossFromConfig(transport, config.transitionLoss);

    // official: set_seed(args.seed) before the model is built, so the initialization is seeded too
    torch.manualSeed(seed);
    const owned: { dispose(): void }[] = [];
    if (lock) owned.push({ dispose: () => lock!.release() });
    try {
      const t2i = isT2I ? loadT2IParts(config, { textEncoder: opts.textEncoder, vae: opts.vae }, device) : null;
      if (t2i) owned.push(t2i);
      const model = TiM.create(config.network, { device, init: 'official' });
      owned.push(model);
      model.train();
      const ema = config.useEma ? new EMA(model, { decay: config.emaDecay }) : null;
      if (ema) owned.push(ema);
      const params = torch.keep(model.parameters());
      owned.push({ dispose: () => params.forEach((p) => p.dispose()) });
      const learningRate = effectiveLearningRate(config, distPlan?.worldSize ?? 1);
      const optimizer = makeOptimizer(t.optimizer.name, params, learningRate, t.optimizer.params);
      owned.push(optimizer);
      const scheduler = getScheduler(t.lrScheduler, optimizer, { numWarmupSteps: t.lrWarmupSteps, numTrainingSteps: t.maxTrainSteps });

      let step = 0;
      let loaderState: LoaderState | undefined;
      if (resume && state) {
        const rdir = resume.dir;
        // every failure names the file it comes from
        let file = join(rdir, 'model.safetensors');
        try {
          torch.scope(() => {
            const m = torch.loadSafetensors(file);
            model.loadStateDict(m.tensors);
            if (ema) {
              file = join(rdir, 'ema.safetensors');
              ema.module.loadStateDict(torch.loadSafetensors(file).tensors);
            }
          });
          file = join(rdir, 'optimizer.safetensors');
          optimizer.loadState(file);
          file = join(rdir, STATE_FILE);
          scheduler.loadStateDict(state.scheduler as Parameters<LambdaLR['loadStateDict']>[0]);
          const rng = state.rng as Record<string, unknown> | undefined;
          torch.setRngState(unbase64(rng?.cpu, 'rng.cpu'));
          if (String(device).startsWith('cuda') && rng?.cuda !== undefined) torch.setRngState(unbase64(rng.cuda, 'rng.cuda'), device);
        } catch (e) {
          if (e instanceof Error && !e.message.includes(file)) e.message = `resume from '${file}': ${e.message}`;
          throw e;
        }
        // the global stream position: independent of the number of processes that wrote it
        const d = state.data as Partial<LoaderState> | undefined;
        loaderState = { epoch: d?.epoch as number, index: d?.index as number, seed: d?.seed as number };
        step = state.step;
      }
      const loader = t2iData
        ? new T2IBatchLoader(t2iData, { seed, device, prefetch: opts.prefetch ?? 1, ...(loaderState ? { globalState: loaderState } : {}) })
        : new DataLoader(dataset!, {
          batchSize: config.data.batchSize, seed, device, prefetch: opts.prefetch ?? 1,
          rank: distPlan?.rank ?? 0, worldSize: distPlan?.worldSize ?? 1, ...(loaderState ? { globalState: loaderState } : {}),
        });
      const trainer = new Trainer({
        config, outDir, maxSteps, device, mixedPrecision, seed, model, ema, transport, loss, optimizer, scheduler, loader, t2i, params,
        learningRate, step, resumedFrom: resume?.dir ?? null, decoder: opts.decoder, write,
        tty: opts.tty ?? Boolean(process.stderr.isTTY), distPlan, lock, writeConfig, maxNonFinite,
      });
      return trainer;
    } catch (e) {
      for (const o of owned.reverse()) o.dispose();
      throw e;
    }
  }

  /** The C2I DataLoader (E_STATE for a text-to-image run, whose batches are `data`, a T2IBatchLoader). */
  get loader(): DataLoader {
    if (!(this.data instanceof DataLoader)) throw new TorchError('Trainer.loader: a text-to-image run reads packed buckets (Trainer.data, a T2IBatchLoader)', 'E_STATE');
    return this.data;
  }

  /** Micro-batches per optimizer step. */
  get accumulation(): number {
    return this.config.training.gradientAccumulationSteps;
  }

  /** Samples per optimizer step over all processes: batch_size · processes · accumulation. */
  get globalBatchSize(): number {
    return this.config.data.batchSize * this.worldSize * this.accumulation;
  }

  /** The data-parallel group once connected (null when training alone or before connect()). */
  get dataParallel(): DataParallel | null {
    return this.dp;
  }

  /**
   * Data parallel: joins the process group, checks that every rank stands at the same step and data
   * position (resumed from the same checkpoint), and copies rank 0's parameters and buffers (model
   * and EMA) into every rank. train() and trainStep() call it; once is enough, later calls return.
   */
  async connect(): Promise<void> {
    this.alive();
    if (this.dp || !this.distPlan) return;
    const plan = this.distPlan;
    const dp = await DataParallel.join(plan.init);
    this.dp = dp;
    try {
      if (dp.rank !== this.rank || dp.worldSize !== this.worldSize) {
        throw new TorchError(`data parallel: joined as rank ${dp.rank} of ${dp.worldSize}, but the data were sharded for rank ${this.rank} of ${this.worldSize}`, 'E_DIST');
      }
      const where = await dp.allGatherNumbers([this.step, this.data.globalSamples], 'data parallel start: step check');
      const odd = where.findIndex((w) => w[0] !== where[0]![0] || w[1] !== where[0]![1]);
      if (odd >= 0) {
        throw new TorchError(
          `data parallel start: rank 0 is at step ${where[0]![0]} (sample ${where[0]![1]}) but rank ${odd} at step ${where[odd]![0]} (sample ${where[odd]![1]}): ` +
          'the ranks resumed from different checkpoints (do they share the run folder?)', 'E_DIST');
      }
      await torch.scopeAsync(async () => {
        const tensors = Object.values(this.model.stateDict());
        if (this.ema) tensors.push(...Object.values(this.ema.module.stateDict()));
        await dp.broadcast(tensors, 'data parallel start: broadcast of rank 0\'s weights');
      });
    } catch (e) {
      this.failed = true;
      throw e;
    }
  }

  /** Runs fn under the configured autocast (bf16 on CPU/CUDA, fp16 on CUDA) or as it is. */
  private autocast<T>(fn: () => T): T {
    if (this.mixedPrecision === 'no') return fn();
    const dev = String(this.device).startsWith('cuda') ? 'cuda' : 'cpu';
    return torch.autocast({ device: dev, dtype: this.mixedPrecision === 'bf16' ? 'bfloat16' : 'float16' }, fn);
  }

  /**
   * One optimizer step over `gradient_accumulation_steps` micro-batches. Returns the step's
   * metrics (loss terms averaged over the micro-batches, the lr it used, the gradient norm).
   * `emaDecay` replaces the EMA's decay for this step's update (an EMA warm-up schedule, as the
   * demo's, without a second pass over the weights).
   */
  async trainStep(opts: { emaDecay?: number } = {}): Promise<StepLosses> {
    const emaDecay = opts.emaDecay === undefined ? undefined : check.inRange(opts.emaDecay, 'emaDecay', 'Trainer.trainStep', 0, 1);
    return this.guarded(() => this.runStep(emaDecay));
  }

  /** Joins the process group if needed, then runs fn; a failure marks the trainer failed (closing it is all that is left). */
  private async guarded<T>(fn: () => Promise<T>): Promise<T> {
    this.alive();
    try {
      await this.connect();
      return await fn();
    } catch (e) {
      this.failed = true;
      throw e;
    }
  }

  private async runStep(emaDecay: number | undefined): Promise<StepLosses> {
    if (!this.warmedUp) this.warmUp();
    const accum = this.accumulation;
    const sums = { w: 0, d: 0, p: 0, nonFinite: 0 };
    this.nonFiniteSeen = false;
    for (let k = 0; k < accum; k++) {
      if (this.data instanceof T2IBatchLoader) {
        const b = await this.data.next();
        try {
          torch.scope(() => {
            const d = this.microStepT2I(b.images, b.captions, accum);
            sums.w += d.weightedLoss / accum;
            sums.d += d.denoisingLoss / accum;
            sums.p += d.projLoss / accum;
          });
        } finally {
          b.images.dispose();
        }
        continue;
      }
      const batch = await this.loader.next();
      try {
        torch.scope(() => {
          const d = this.microStep(batch.x, batch.y, batch.rows, accum);
          sums.w += d.weightedLoss / accum;
          sums.d += d.denoisingLoss / accum;
          sums.p += d.projLoss / accum;
        });
      } finally {
        batch.x.dispose();
        batch.y.dispose();
      }
    }
    sums.nonFinite = this.nonFiniteSeen ? 1 : 0;
    if (this.dp) await this.syncStep(sums);
    else this.stopAgreed = this.stopRequested;
    const lr = this.optimizer.paramGroups[0]!.lr;
    const maxNorm = this.config.training.maxGradNorm;
    // the norm is computed in any case (maxNorm Infinity scales nothing) for the divergence guard
    const norm = torch.nn.utils.clipGradNorm_(this.params, maxNorm > 0 ? maxNorm : Infinity);
    const gradNorm = maxNorm > 0 ? norm : null;
    // (data parallel: the flag is summed over the ranks and the norm is of the averaged gradients,
    // so every rank decides alike)
    const bad = sums.nonFinite > 0 || !Number.isFinite(norm);
    if (!bad) {
      this.optimizer.step();
      this.nonFiniteRun = 0;
    } else {
      this.nonFiniteRun++;
    }
    this.scheduler.step();
    this.optimizer.zeroGrad({ setToNone: true });
    if (this.ema && !bad) this.ema.update(this.model, emaDecay === undefined ? {} : { decay: emaDecay });
    this.step++;
    // between steps the CPU block cache keeps only its budget of the step's free blocks (lib/torch/cpu_cache.ts)
    torch.cpuCache.trim();
    // a non-finite step shows as NaN, not as the 0 nan_to_num makes of it
    const m: StepLosses = bad && sums.nonFinite > 0
      ? { step: this.step, loss: NaN, loss_weighted: NaN, loss_denoising: NaN, loss_projector: NaN, lr, grad_norm: gradNorm }
      : { step: this.step, loss: sums.w + this.config.projCoeff * sums.p, loss_weighted: sums.w, loss_denoising: sums.d, loss_projector: sums.p, lr, grad_norm: gradNorm };
    // (and the norm shows even when clipping is off)
    if (bad) m.grad_norm = norm;
    if (bad) {
      const what = sums.nonFinite > 0 ? `the network output or target is not finite (gradient norm ${norm})` : `the gradient norm is ${norm}`;
      if (this.nonFiniteRun >= this.maxNonFinite) {
        this.display.update(progressLine({ ...m, it_s: 0, sps: 0 }, this.maxSteps, NaN));
        throw new TorchError(
          `training diverged at step ${this.step}: ${what}, for ${this.nonFiniteRun} step(s) in a row (the updates were skipped). ` +
          `Stopped without writing a checkpoint; ${this.lastGood ? `the last good one is '${this.lastGood}'` : 'no checkpoint was written by this run'}. ` +
          'Lower the learning rate (training.learning_rate), or enable gradient clipping (training.max_grad_norm)',
          'E_DIVERGED',
        );
      }
      this.display.message(`step ${this.step}: ${what}; update skipped (${this.nonFiniteRun} of ${this.maxNonFinite} allowed in a row)`);
    }
    return m;
  }

  /**
   * Data parallel, after the micro-batches: the step's loss terms (the logged loss is the mean over
   * all ranks), the stop flag (any rank's request stops all, at the same step) and the number of
   * gradients (all ranks must have the same) summed in one small all-reduce; then the gradients
   * averaged in buckets. Every rank then clips and steps on the same gradients.
   */
  private async syncStep(sums: { w: number; d: number; p: number; nonFinite: number }): Promise<void> {
    const dp = this.dp!;
    const ws = this.worldSize;
    const next = this.step + 1;
    const grads = torch.scope(() => this.params.reduce((n, p) => n + (p.grad ? 1 : 0), 0));
    const [w, d, p, stop, count, nonFinite] = await dp.allReduceSum(
      [sums.w, sums.d, sums.p, this.stopRequested ? 1 : 0, grads, sums.nonFinite], `step ${next}: metrics all-reduce`);
    if (count !== grads * ws) {
      throw new TorchError(`step ${next}: the ranks disagree on which parameters have gradients (${grads} here, ${count} over ${ws} ranks)`, 'E_DIST');
    }
    sums.w = w! / ws;
    sums.d = d! / ws;
    sums.p = p! / ws;
    sums.nonFinite = nonFinite! > 0 ? 1 : 0;
    this.stopAgreed = stop! > 0;
    await dp.allReduceGradients(this.params, `step ${next}: gradient all-reduce`);
  }

  /**
   * One micro-batch: noise, label dropout, the loss, backward of (weighted + proj_coeff·proj) / accum.
   * `rows`: this rank's rows of the global micro-batch (DataLoader Batch.rows).
   */
  private microStep(x: Tensor, y: Tensor, rows: Int32Array | null, accum: number): LossDict {
    const net = this.config.network;
    const p = net.classDropoutProb;
    const B = x.shape[0]!;
    const ws = this.worldSize;
    let z: Tensor, u: Tensor | null;
    let times: { t?: Tensor; r?: Tensor; nDiffusion?: number } = {};
    if (ws === 1) {
      z = torch.randnLike(x);
      // official order: noise first, then the dropout coin (the times are drawn in the loss)
      u = p > 0 ? torch.rand([B], { device: x.device }) : null;
    } else {
      // The whole global micro-batch's draws, in the same order and shapes as one process with
      // batch ws·B would make them, from a generator that is in the same state on every rank; this
      // rank keeps its own rows. Costs ws× the (small) noise draw; buys equality with one process.
      if (!rows || rows.length !== B) throw new TorchError('data parallel: the batch carries no global rows (Batch.rows)', 'E_STATE');
      const Bg = B * ws;
      const idx = torch.tensor(Array.from(rows), { dtype: 'int64', device: x.device });
      z = torch.randn([Bg, ...x.shape.slice(1)], { dtype: x.dtype, device: x.device }).indexSelect(0, idx);
      u = p > 0 ? torch.rand([Bg], { device: x.device }).indexSelect(0, idx) : null;
      const g = this.loss.sampleTimes(Bg, { dtype: x.dtype, device: x.device });
      // The global batch's diffusion rows (r = t) lead it; rows ascend, so this rank's diffusion rows
      // lead its batch too, as the loss expects. Consistency rows carry r = T_min in r itself.
      let nDiffusion = 0;
      for (const r of rows) if (r < g.nDiffusion) nDiffusion++;
      times = { t: g.t.indexSelect(0, idx), r: g.r.indexSelect(0, idx), nDiffusion };
    }
    const yNull = torch.fullLike(y, net.numClasses);
    const yIn = u ? torch.where(u.lt(p), yNull, y) : y;
    const out = this.autocast(() => this.loss.compute({
      model: this.model, x, z, y: yIn, useDirLoss: true, ...times,
      ...(this.transport.enhanceTarget ? { emaModel: this.ema ? this.ema.module : this.model, yEma: y, yNull } : {}),
    }));
    // The loss terms pass nan_to_num (official), which turns a diverged network into a loss of 0:
    // look at what goes into them instead.
    const raw = [out.fPred, out.fTarget, ...(out.hProj ? [out.hProj] : [])];
    if (!raw.every((v) => torch.noGrad(() => allFinite(v)))) this.nonFiniteSeen = true;
    out.weightedLoss.add(out.projLoss.mul(this.config.projCoeff)).div(accum).backward();
    return TransitionLoss.lossDict(out);
  }

  /**
   * Text to image, one micro-batch: latents, noise, the empty-prompt draw and the caption features
   * in the official order (t2i_step.ts), then the loss against the caption features (EMA target
   * with the same captions, the null target with the null caption cut to the batch's length).
   */
  private microStepT2I(images: Tensor, captions: readonly string[], accum: number): LossDict {
    const { x, z, y, yNull } = t2iInputs(this.t2i!, images, captions, this.config.t2i.proportionEmptyPrompts, this.device);
    return this.lossT2I(x, z, y, yNull, accum);
  }

  private lossT2I(x: Tensor, z: Tensor, y: Tensor, yNull: Tensor, accum: number): LossDict {
    const out = this.autocast(() => this.loss.compute({
      model: this.model, x, z, y, useDirLoss: true,
      ...(this.transport.enhanceTarget ? { emaModel: this.ema ? this.ema.module : this.model, yEma: y, yNull } : {}),
    }));
    const raw = [out.fPred, out.fTarget, ...(out.hProj ? [out.hProj] : [])];
    if (!raw.every((v) => torch.noGrad(() => allFinite(v)))) this.nonFiniteSeen = true;
    out.weightedLoss.add(out.projLoss.mul(this.config.projCoeff)).div(accum).backward();
    return TransitionLoss.lossDict(out);
  }

  /**
   * Two throwaway micro-batches (random data, RNG saved and restored, gradients dropped) before the
   * first real step of a process. TorchScript's profiling executor runs a method's first calls on
   * a profiling graph and later ones on an optimized graph whose backward rounds differently; a
   * process that resumed at step k would otherwise compute step k+1 on first-call graphs while the
   * uninterrupted run is long past them. Warmed up, every real step of every process runs on the
   * same graphs, which is what makes resume bit-exact.
   */
  private warmUp(): void {
    this.warmedUp = true;
    const saved = torch.getRngState();
    try {
      if (this.t2i) {
        // T2I: the network on random latents of the config's size and a 4-token random caption
        // (fixed shapes: the same warm-up in every process, whatever bucket comes first)
        const net = this.config.network;
        for (let i = 0; i < 2; i++) {
          torch.scope(() => {
            const x = torch.randn([2, net.inChannels, net.inputSize, net.inputSize], { device: this.device });
            const y = torch.randn([2, 4, net.capFeatDim], { device: this.device });
            this.lossT2I(x, torch.randnLike(x), y, torch.randnLike(y), 1);
          });
        }
        return;
      }
      torch.scope(() => {
        const [c, h, w] = this.loader.dataset.sampleShape;
        const B = this.config.data.batchSize;
        // the rows the real steps will have (fixed for a run: ranks advance by worldSize·B samples)
        const ws = this.worldSize;
        const first = (((this.rank - (this.data.globalSamples % ws)) % ws) + ws) % ws;
        const rows = Int32Array.from({ length: B }, (_, k) => first + ws * k);
        for (let i = 0; i < 2; i++) {
          torch.scope(() => {
            const x = torch.randn([B, c, h, w], { device: this.device });
            const y = torch.randint(0, this.config.network.numClasses, [B], { device: this.device });
            this.microStep(x, y, rows, 1);
          });
        }
      });
    } finally {
      this.optimizer.zeroGrad({ setToNone: true });
      torch.setRngState(saved);
    }
  }

  /**
   * The whole state a resume needs, as checkpoint `<out>/checkpoints/<step>`; prunes old ones.
   * Data parallel: only rank 0 writes (the others return the folder it writes); train() checks
   * the ranks are in sync before and holds them at a barrier after.
   *
   * The data position is the global stream's ({epoch, index} of the epoch's permutation, and
   * `samples` consumed in all), the RNG state is the one every rank shares: both are the same for
   * any number of processes, so a run saved with N processes resumes with M.
   */
  saveCheckpoint(): string {
    this.alive();
    // never a checkpoint of non-finite weights (every rank checks: they hold the same weights)
    const badParam = torch.scope(() => {
      const named: [string, Tensor][] = [...this.model.namedParameters(), ...(this.ema ? this.ema.module.namedParameters().map(([k, v]) => [`ema.${k}`, v] as [string, Tensor]) : [])];
      return named.find(([, v]) => !allFinite(v))?.[0] ?? null;
    });
    if (badParam !== null) {
      throw new TorchError(
        `refusing to write checkpoint ${this.step}: parameter '${badParam}' holds non-finite values (training diverged). ` +
        `${this.lastGood ? `The last good checkpoint, '${this.lastGood}', is left as it is.` : 'No checkpoint was written.'} Lower the learning rate or enable gradient clipping`,
        'E_DIVERGED',
      );
    }
    if (this.rank !== 0) return join(checkpointsDir(this.outDir), String(this.step));
    const t = this.config.training;
    const rng: Record<string, string> = { cpu: base64(torch.getRngState()) };
    if (String(this.device).startsWith('cuda')) rng.cuda = base64(torch.getRngState(this.device));
    const state: CheckpointState = {
      format: 'tim-torch.train', version: 1, step: this.step,
      rng, data: { ...this.data.globalState, samples: this.data.globalSamples },
      scheduler: this.scheduler.stateDict(), seed: this.seed,
      lr: this.optimizer.paramGroups[0]!.lr, mixedPrecision: this.mixedPrecision, network: this.config.network,
      keep: t.checkpointList.includes(this.step),
      worldSize: this.worldSize, globalBatchSize: this.globalBatchSize,
    };
    const dir = writeCheckpoint(this.outDir, state, (tmp) => {
      this.model.save(join(tmp, 'model.safetensors'));
      if (this.ema) {
        const sd = this.ema.stateDict();
        try {
          torch.save(sd, join(tmp, 'ema.safetensors'), this.model.safetensorsMetadata());
        } finally {
          for (const v of Object.values(sd)) v.dispose();
        }
      }
      this.optimizer.saveState(join(tmp, 'optimizer.safetensors'), { scheduler: JSON.stringify(this.scheduler.stateDict()) });
    });
    this.lastGood = dir;
    // keeps the newest K up to this one: never this one, never a later one (of a run resumed from
    // an earlier step)
    pruneCheckpoints(this.outDir, t.checkpointsTotalLimit, t.checkpointList, this.step);
    return dir;
  }

  /**
   * Sample grids of the EMA (or the model): a few classes, one PNG per configured step count, from
   * fixed noise (the same every time, so grids of different steps compare). The training RNG is
   * saved and restored around it. Returns the files written.
   */
  sampleGrids(): string[] {
    this.alive();
    const t = this.config.training;
    const net = this.config.network;
    const classes = t.sampleClasses ?? Array.from({ length: Math.min(8, net.numClasses) }, (_, i) => Math.floor((i * net.numClasses) / Math.min(8, net.numClasses)));
    const dir = join(this.outDir, 'samples');
    mkdirSync(dir, { recursive: true });
    // A throwaway copy: sampling calls the network with other shapes and in eval mode, which would
    // change the TorchScript executor state (and so the rounding) of the module training uses.
    const module: ScriptModule = cloneScriptModule(this.ema ? this.ema.module : this.model.module);
    const saved = torch.getRngState();
    const files: string[] = [];
    try {
      module.train(false);
      torch.manualSeed(this.seed + 1_000_003);
      torch.noGrad(() => torch.scope(() => {
        const n = classes.length;
        const z = torch.randn([n, net.inChannels, net.inputSize, net.inputSize], { device: this.device });
        const y = torch.tensor(classes, { dtype: 'int64', device: this.device });
        const model = { forward: (a: Tensor, b: Tensor, c: Tensor, d: Tensor) => module.forward<Tensor>(a, b, c, d) };
        for (const steps of t.sampleNumSteps) {
          torch.scope(() => {
            const x = sample(model, this.transport, { z, y, numSteps: steps, cfgScale: t.sampleCfgScale });
            const grid = makeGrid(toImages(x, this.decoder), { nrow: n, padValue: -1 });
            const path = join(dir, `${String(this.step).padStart(7, '0')}_steps${steps}.png`);
            savePng(path, grid);
            files.push(path);
          });
        }
      }));
    } finally {
      module.dispose();
      torch.setRngState(saved);
    }
    return files;
  }

  /**
   * Trains until maxSteps: progress line and metrics.jsonl every log_steps, sample grids every
   * sample_steps (validation_steps), checkpoints every checkpointing_steps and at the end.
   */
  async train(): Promise<TrainResult> {
    return this.guarded(() => this.trainLoop());
  }

  /** Checkpoint at this step: in sync check, rank 0 writes, every rank waits for it. */
  private async checkpointAll(): Promise<string> {
    if (this.dp) {
      const dp = this.dp;
      await torch.scopeAsync(async () => {
        const tensors = [...this.params, ...(this.ema ? this.ema.module.parameters() : [])];
        await dp.checkInSync(tensors, `step ${this.step}: weights check before the checkpoint`);
      });
    }
    const dir = this.saveCheckpoint();
    if (this.dp) await this.dp.barrier(`step ${this.step}: barrier after rank 0's checkpoint`);
    return dir;
  }

  private async trainLoop(): Promise<TrainResult> {
    const t = this.config.training;
    const main = this.rank === 0;
    if (this.step >= this.maxSteps) {
      this.display.message(
        `tim train: the run is already at step ${this.step} = maxSteps (${this.resumedFrom ?? 'no checkpoint'}): nothing to train. ` +
        'Pass a larger --max-steps to train on (the LR schedule spans training.max_train_steps)');
      return { step: this.step, metrics: null, checkpoint: this.resumedFrom, stepsPerSecond: 0 };
    }
    mkdirSync(this.outDir, { recursive: true });
    const cfgPath = join(this.outDir, 'config.yaml');
    if (main && this.writeConfig) writeFileAtomicSync(cfgPath, CONFIG_HEADER + toYaml(this.config.raw));
    // rank 0 alone logs; the others keep no file open
    this.metrics = main ? new MetricsLog(join(this.outDir, 'metrics.jsonl'), this.resumedFrom ? this.step : null) : null;
    const meter = new RateMeter();
    meter.tick();
    const t0 = performance.now();
    const startStep = this.step;
    let last: StepMetrics | null = null;
    let lastTick = performance.now();
    let lastLoggedStep = this.step;
    let checkpoint: string | null = null;
    let checkpointStep = -1;
    const ws = this.worldSize;
    const baseLr = this.scheduler.baseLrs[0]!;
    this.display.message(
      `tim train: ${this.model.numParameters().toLocaleString('en-US')} parameters, ${this.data.dataset.name} (${this.data.dataset.length} samples), ` +
      (ws > 1
        ? `${ws} processes (${this.dp!.backend}), global batch ${this.globalBatchSize} = ${this.config.data.batchSize}×${ws}×${this.accumulation}`
        : `batch ${this.config.data.batchSize}×${this.accumulation}`) +
      `, lr ${this.learningRate.toExponential(3)}, ${this.mixedPrecision === 'no' ? 'float32' : this.mixedPrecision}, ${this.device}` +
      (this.resumedFrom ? `, resumed at step ${this.step} from ${this.resumedFrom}` : '') +
      // a resume keeps the checkpoint's schedule (as accelerate's load_state), also when scale_lr
      // with another number of processes would now give another learning rate
      (this.resumedFrom && Math.abs(baseLr - this.learningRate) > 1e-12 * this.learningRate
        ? `\n  note: the checkpoint's learning rate ${baseLr.toExponential(3)} is kept (scale_lr with this global batch would give ${this.learningRate.toExponential(3)})`
        : '') +
      (this.t2i ? `\n  text to image: ${this.data.dataset.length} captioned images in ${(this.data as T2IBatchLoader).dataset.batches.length} packed batches, empty prompts ${this.config.t2i.proportionEmptyPrompts}` +
        (t.sampleSteps > 0 ? ' (no sample grids for T2I: sample a checkpoint with tim sample --prompt)' : '') : '') +
      (this.config.ignored.length ? `\n  unused official keys: ${this.config.ignored.join(', ')}` : ''),
    );
    try {
      while (this.step < this.maxSteps) {
        // A prefetched batch resolves in a microtask, so a run could go from step to step without
        // the event loop ever turning: signals (SIGINT → requestStop), timers and I/O callbacks
        // would wait for the end of training. One macrotask turn per step lets them in.
        await new Promise<void>((r) => setImmediate(r));
        // (data parallel: a stop all ranks agreed on in the last step, so they all stop here)
        if (this.dp ? this.stopAgreed : this.stopRequested) {
          if (checkpointStep !== this.step) {
            checkpoint = await this.checkpointAll();
            this.display.message(`checkpoint: ${checkpoint}`);
          }
          break;
        }
        const m = await this.runStep(undefined);
        meter.tick();
        const s = this.step;
        if (s % t.logSteps === 0 || s === this.maxSteps) {
          const now = performance.now();
          const itS = ((s - lastLoggedStep) * 1000) / Math.max(1e-9, now - lastTick);
          lastTick = now;
          lastLoggedStep = s;
          last = { ...m, it_s: itS, sps: itS * this.globalBatchSize };
          this.metrics?.add(last);
          this.metrics?.flush();
          const rate = meter.rate;
          this.display.update(progressLine(last, this.maxSteps, rate > 0 ? (this.maxSteps - s) / rate : NaN));
        }
        // rank 0 alone samples; the others go on and wait for it in the next step's all-reduce
        if (main && !this.t2i && t.sampleSteps > 0 && s % t.sampleSteps === 0) {
          const files = this.sampleGrids();
          this.display.message(`samples: ${files.join(', ')}`);
        }
        if (s % t.checkpointingSteps === 0 || t.checkpointList.includes(s) || s === this.maxSteps) {
          checkpoint = await this.checkpointAll();
          checkpointStep = s;
          this.display.message(`checkpoint: ${checkpoint}`);
        }
      }
    } finally {
      this.display.end();
      this.metrics?.close();
      this.metrics = null;
    }
    const secs = (performance.now() - t0) / 1000;
    return { step: this.step, metrics: last, checkpoint, stepsPerSecond: secs > 0 ? (this.step - startStep) / secs : 0 };
  }

  /** Asks train() to stop after the step in progress, with a checkpoint (e.g. on SIGINT). */
  requestStop(): void {
    this.stopRequested = true;
  }

  /**
   * Stops the loader and frees the model, EMA, optimizer state and parameter handles. Data parallel:
   * after a normal end, waits for every rank and leaves the group; after a failure it does no
   * collective (the peers may be gone or elsewhere) and the process is expected to exit.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (this.dp && !this.failed) {
        // rank 0 hosts the store: nobody leaves before all got here
        await this.dp.barrier('close: barrier');
        await this.dp.destroy();
      }
    } finally {
      await this.data.close();
      this.metrics?.close();
      this.optimizer.dispose();
      for (const p of this.params) p.dispose();
      this.ema?.dispose();
      this.model.dispose();
      this.t2i?.dispose();
      this.lock?.release();
    }
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private alive(): void {
    if (this.closed) throw new TorchError('Trainer was closed', 'E_DISPOSED');
  }
}

function isTrainConfig(v: unknown): v is TrainConfig {
  return v !== null && typeof v === 'object' && 'training' in v && 'network' in v && 'raw' in v && 'ignored' in v;
}

