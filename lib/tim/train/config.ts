/**
 * The training configuration: the official TiM YAML layout (configs/c2i/*.yaml of github WZDTHU/TiM,
 * read by projects/train/trainer_c2i.py) parsed, checked and turned into typed, camelCased values.
 *
 *   model:     transport {target, params}, transition_loss {...}, network {target, params},
 *              proj_coeff, use_ema, ema_decay (+ vae_dir, enc_dir, ckpt: recognised, unused here)
 *   data:      data_type, dataset {...}, dataloader {batch_size, num_workers}
 *   training:  max_train_steps, checkpointing_steps, checkpoints_total_limit, learning_rate,
 *              learning_rate_base_batch_size, scale_lr, lr_scheduler, lr_warmup_steps,
 *              gradient_accumulation_steps, optimizer {target, params}, max_grad_norm,
 *              mixed_precision, validation_steps, checkpoint_list, resume_from_checkpoint (+ tracker,
 *              allow_tf32, ...: recognised, unused)
 *
 * Keys this package adds (all optional, all under `training`): seed, log_steps, sample_steps,
 * sample_classes, sample_num_steps, sample_cfg_scale, dist_timeout. Unknown keys are errors (a typo must not
 * silently train something else); recognised-but-unused official keys are listed in `ignored`.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { TorchError, argError } from '../../torch/errors.js';
import { configFromValue } from '../network/model.js';
import type { TiMConfig } from '../network/config.js';
import * as transports from '../transports/index.js';
import type { Transport } from '../transports/transport.js';
import type { SchedulerName } from '../../torch/optim/lr_scheduler.js';

export type MixedPrecision = 'no' | 'bf16' | 'fp16';
export type OptimizerName = 'AdamW' | 'Adam' | 'SGD';

export interface TrainingSection {
  maxTrainSteps: number;
  checkpointingSteps: number;
  /** keep this many periodic checkpoints (null: all) */
  checkpointsTotalLimit: number | null;
  /** steps whose checkpoints are never pruned (official checkpoint_list) */
  checkpointList: number[];
  /** 'latest', a checkpoint path/step, or null (the CLI's --resume overrides it) */
  resumeFromCheckpoint: string | null;
  learningRate: number;
  learningRateBaseBatchSize: number;
  scaleLr: boolean;
  lrScheduler: SchedulerName;
  lrWarmupSteps: number;
  gradientAccumulationSteps: number;
  optimizer: { name: OptimizerName; params: Record<string, unknown> };
  /** clip when > 0 (official: `if max_grad_norm > 0`) */
  maxGradNorm: number;
  mixedPrecision: MixedPrecision;
  /** sample grids every this many steps (0: never); official validation_steps, or sample_steps */
  sampleSteps: number;
  /** labels shown in sample grids (default: 8 spread over the classes) */
  sampleClasses: number[] | null;
  /** sampler step counts, one grid each (default [1, 4]) */
  sampleNumSteps: number[];
  sampleCfgScale: number;
  /** global seed (official --seed; default 0) */
  seed: number;
  /** progress/metrics every this many steps (default 1) */
  logSteps: number;
  /**
   * seconds a rank waits for its peers (process group start, every collective) before failing with
   * E_DIST (ours; null: env TIM_DIST_TIMEOUT_MS, else 300). Must exceed rank 0's longest pause
   * (checkpoint writes, sample grids), during which the others wait.
   */
  distTimeout: number | null;
}

export interface DataSection {
  dataType: string;
  /** data.dataset as written (snake_case keys) */
  dataset: Record<string, unknown>;
  /**
   * per micro-batch and process (official data.dataloader.batch_size, per device): the global batch of
   * an optimizer step is batchSize · processes · gradient_accumulation_steps
   */
  batchSize: number;
}

export interface TrainConfig {
  /** the document as read (saved next to the checkpoints) */
  raw: Record<string, unknown>;
  network: TiMConfig;
  transport: { target: string; params: Record<string, unknown> };
  transitionLoss: Record<string, unknown>;
  projCoeff: number;
  useEma: boolean;
  emaDecay: number;
  data: DataSection;
  training: TrainingSection;
  /** official keys that were recognised but have no effect here (e.g. enc_dir: no REPA encoder) */
  ignored: string[];
}

const MODEL_KEYS = ['transport', 'transition_loss', 'network', 'proj_coeff', 'use_ema', 'ema_decay'];
const MODEL_IGNORED = ['vae_dir', 'enc_dir', 'ckpt', 'text_encoder_dir', 'max_seq_length', 'use_last_hidden_state'];
const DATA_KEYS = ['data_type', 'dataset', 'dataloader'];
const TRAINING_KEYS = [
  'max_train_steps', 'checkpointing_steps', 'checkpoints_total_limit', 'resume_from_checkpoint', 'learning_rate',
  'learning_rate_base_batch_size', 'scale_lr', 'lr_scheduler', 'lr_warmup_steps', 'gradient_accumulation_steps', 'optimizer',
  'max_grad_norm', 'mixed_precision', 'validation_steps', 'checkpoint_list',
  // ours
  'seed', 'log_steps', 'sample_steps', 'sample_classes', 'sample_num_steps', 'sample_cfg_scale', 'dist_timeout',
];
const TRAINING_IGNORED = ['tracker', 'tracker_project_name', 'tracker_kwargs', 'allow_tf32', 'proportion_empty_prompts', 'fsdp_config'];
const SCHEDULERS: readonly SchedulerName[] = ['linear', 'cosine', 'cosine_with_restarts', 'polynomial', 'constant', 'constant_with_warmup'];

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function cfgError(msg: string): TorchError {
  return new TorchError(`training config: ${msg}`, 'E_CONFIG');
}

function section(v: unknown, path: string): Record<string, unknown> {
  if (v === undefined) return {};
  if (!isRecord(v)) throw cfgError(`${path} must be a mapping`);
  return v;
}

function checkKeys(o: Record<string, unknown>, path: string, known: string[], ignored: string[], out: string[]): void {
  for (const k of Object.keys(o)) {
    if (known.includes(k)) continue;
    if (ignored.includes(k)) {
      out.push(`${path}.${k}`);
      continue;
    }
    throw cfgError(`unknown key '${path}.${k}' (known: ${[...known, ...ignored].join(', ')})`);
  }
}

function num(o: Record<string, unknown>, k: string, path: string, dflt?: number): number {
  const v = o[k];
  if (v === undefined || v === null) {
    if (dflt === undefined) throw cfgError(`${path}.${k} is required`);
    return dflt;
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw cfgError(`${path}.${k} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function int(o: Record<string, unknown>, k: string, path: string, dflt: number | undefined, min: number): number {
  const v = num(o, k, path, dflt);
  if (!Number.isSafeInteger(v) || v < min) throw cfgError(`${path}.${k} must be an integer >= ${min}, got ${v}`);
  return v;
}

function bool(o: Record<string, unknown>, k: string, path: string, dflt: boolean): boolean {
  const v = o[k];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw cfgError(`${path}.${k} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function intList(v: unknown, path: string, min: number): number[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isSafeInteger(x) || x < min)) {
    throw cfgError(`${path} must be a list of integers >= ${min}, got ${JSON.stringify(v)}`);
  }
  return v as number[];
}

/** Reads a YAML (or JSON) training config file. */
export function readTrainConfig(path: string): TrainConfig {
  if (typeof path !== 'string' || path === '') throw argError('type', 'readTrainConfig: path must be a non-empty string');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TorchError(`cannot read training config '${path}': ${(e as Error).message}`, 'E_IO');
  }
  let doc: unknown;
  try {
    doc = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new TorchError(`training config '${path}' is not valid YAML: ${(e as Error).message}`, 'E_FORMAT');
  }
  try {
    return parseTrainConfig(doc);
  } catch (e) {
    (e as Error).message = `${(e as Error).message} (in '${path}')`;
    throw e;
  }
}

/** Checks a parsed official-layout document and fills in the official defaults. */
export function parseTrainConfig(doc: unknown): TrainConfig {
  if (!isRecord(doc)) throw cfgError('the document must be a mapping with model, data and training');
  const ignored: string[] = [];
  checkKeys(doc, '', ['model', 'data', 'training'], [], ignored);
  const model = section(doc.model, 'model');
  const data = section(doc.data, 'data');
  const training = section(doc.training, 'training');
  checkKeys(model, 'model', MODEL_KEYS, MODEL_IGNORED, ignored);
  checkKeys(data, 'data', DATA_KEYS, [], ignored);
  checkKeys(training, 'training', TRAINING_KEYS, TRAINING_IGNORED, ignored);

  if (!isRecord(model.network)) throw cfgError('model.network {target, params} is required');
  let network: TiMConfig;
  try {
    network = configFromValue({ model: { network: model.network } });
  } catch (e) {
    throw cfgError(`model.network: ${(e as Error).message}`);
  }

  const tr = section(model.transport, 'model.transport');
  checkKeys(tr, 'model.transport', ['target', 'params'], [], ignored);
  const transport = { target: typeof tr.target === 'string' ? tr.target : 'tim.schedulers.transports.OT_FM', params: section(tr.params, 'model.transport.params') };
  transportFromOfficialConfig(transport); // validates the target and the params now, not at step 0

  const transitionLoss = section(model.transition_loss, 'model.transition_loss');

  const dl = section(data.dataloader, 'data.dataloader');
  checkKeys(dl, 'data.dataloader', ['batch_size'], ['num_workers'], ignored);
  if (typeof data.data_type !== 'string') throw cfgError('data.data_type is required (latent, image, mnist, synthetic)');
  const dataSection: DataSection = {
    dataType: data.data_type,
    dataset: section(data.dataset, 'data.dataset'),
    batchSize: int(dl, 'batch_size', 'data.dataloader', undefined, 1),
  };

  const t = training;
  const opt = section(t.optimizer, 'training.optimizer');
  checkKeys(opt, 'training.optimizer', ['target', 'params'], [], ignored);
  const target = typeof opt.target === 'string' ? opt.target : 'torch.optim.AdamW';
  const optName = target.split('.').pop()!;
  if (optName !== 'AdamW' && optName !== 'Adam' && optName !== 'SGD') {
    throw cfgError(`training.optimizer.target '${target}' is not supported (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)`);
  }
  const sched = t.lr_scheduler ?? 'constant';
  if (typeof sched !== 'string' || !(SCHEDULERS as readonly string[]).includes(sched)) {
    throw cfgError(`training.lr_scheduler must be one of ${SCHEDULERS.join(', ')}, got ${JSON.stringify(sched)}`);
  }
  const mp = t.mixed_precision ?? 'no';
  if (mp !== 'no' && mp !== 'bf16' && mp !== 'fp16') throw cfgError(`training.mixed_precision must be no, bf16 or fp16, got ${JSON.stringify(mp)}`);
  const resume = t.resume_from_checkpoint;
  if (resume !== undefined && resume !== null && resume !== false && typeof resume !== 'string' && typeof resume !== 'number') {
    throw cfgError('training.resume_from_checkpoint must be latest, a checkpoint step or path, or null');
  }
  const limit = t.checkpoints_total_limit;
  const sampleClasses = t.sample_classes === undefined || t.sample_classes === null ? null : intList(t.sample_classes, 'training.sample_classes', 0);
  if (sampleClasses && network.variant === 'c2i' && sampleClasses.some((c) => c > network.numClasses)) {
    throw cfgError(`training.sample_classes must be below num_classes ${network.numClasses} (or equal: the null class)`);
  }

  const trainingSection: TrainingSection = {
    maxTrainSteps: int(t, 'max_train_steps', 'training', undefined, 1),
    checkpointingSteps: int(t, 'checkpointing_steps', 'training', 500, 1),
    checkpointsTotalLimit: limit === undefined || limit === null ? null : int(t, 'checkpoints_total_limit', 'training', undefined, 1),
    checkpointList: t.checkpoint_list === undefined || t.checkpoint_list === null ? [] : intList(t.checkpoint_list, 'training.checkpoint_list', 1),
    resumeFromCheckpoint: resume === undefined || resume === null || resume === false ? null : String(resume),
    learningRate: num(t, 'learning_rate', 'training', 1e-4),
    learningRateBaseBatchSize: int(t, 'learning_rate_base_batch_size', 'training', 256, 1),
    scaleLr: bool(t, 'scale_lr', 'training', false),
    lrScheduler: sched as SchedulerName,
    lrWarmupSteps: int(t, 'lr_warmup_steps', 'training', 0, 0),
    gradientAccumulationSteps: int(t, 'gradient_accumulation_steps', 'training', 1, 1),
    optimizer: { name: optName, params: section(opt.params, 'training.optimizer.params') },
    maxGradNorm: num(t, 'max_grad_norm', 'training', 0),
    mixedPrecision: mp,
    sampleSteps: int(t, t.sample_steps !== undefined ? 'sample_steps' : 'validation_steps', 'training', 0, 0),
    sampleClasses,
    sampleNumSteps: t.sample_num_steps === undefined ? [1, 4] : intList(t.sample_num_steps, 'training.sample_num_steps', 1),
    sampleCfgScale: num(t, 'sample_cfg_scale', 'training', 1),
    seed: int(t, 'seed', 'training', 0, 0),
    logSteps: int(t, 'log_steps', 'training', 1, 1),
    distTimeout: t.dist_timeout === undefined || t.dist_timeout === null ? null : num(t, 'dist_timeout', 'training'),
  };
  if (trainingSection.distTimeout !== null && !(trainingSection.distTimeout > 0 && trainingSection.distTimeout * 1000 <= 2 ** 31 - 1)) {
    throw cfgError(`training.dist_timeout must be a number of seconds in (0, 2147483], got ${trainingSection.distTimeout}`);
  }
  if (trainingSection.learningRate <= 0) throw cfgError(`training.learning_rate must be > 0, got ${trainingSection.learningRate}`);

  return {
    raw: doc,
    network,
    transport,
    transitionLoss,
    projCoeff: num(model, 'proj_coeff', 'model', 0),
    useEma: bool(model, 'use_ema', 'model', true),
    emaDecay: num(model, 'ema_decay', 'model', 0.9999),
    data: dataSection,
    training: trainingSection,
    ignored,
  };
}

/**
 * The learning rate the optimizer starts from (official: with scale_lr, learning_rate ·
 * total_batch_size / learning_rate_base_batch_size, total = batch_size · processes · accumulation).
 */
export function effectiveLearningRate(c: TrainConfig, worldSize = 1): number {
  const t = c.training;
  if (!t.scaleLr) return t.learningRate;
  const total = c.data.batchSize * worldSize * t.gradientAccumulationSteps;
  return (t.learningRate * total) / t.learningRateBaseBatchSize;
}

/** Official (snake_case, class-named) transport params → our option names. */
const TRANSPORT_PARAM_NAMES: Record<string, string> = {
  P_mean: 'pMean', P_std: 'pStd', sigma_d: 'sigmaD', T_max: 'tMax', T_min: 'tMin', enhance_target: 'enhanceTarget',
  w_gt: 'wGt', w_cond: 'wCond', w_start: 'wStart', w_end: 'wEnd', beta_min: 'betaMin', beta_d: 'betaD',
  epsilon_t: 'epsilonT', T: 'T', sigma_min: 'sigmaMin', sigma_max: 'sigmaMax',
};

/** A transport from the official model.transport block ({target: tim.schedulers.transports.OT_FM, params}). */
export function transportFromOfficialConfig(block: { target: string; params?: Record<string, unknown> }): Transport {
  const cls = block.target.split('.').pop();
  const opts: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(block.params ?? {})) {
    const name = TRANSPORT_PARAM_NAMES[k];
    if (!name) throw cfgError(`model.transport.params: unknown parameter '${k}' (known: ${Object.keys(TRANSPORT_PARAM_NAMES).join(', ')})`);
    opts[name] = v;
  }
  try {
    switch (cls) {
      case 'OT_FM': return new transports.OTFM(opts);
      case 'TrigFlow': return new transports.TrigFlow(opts);
      case 'EDM': return new transports.EDM(opts);
      case 'VP_SDE': return new transports.VPSDE(opts);
      case 'VE_SDE': return new transports.VESDE(opts);
    }
  } catch (e) {
    throw cfgError(`model.transport (${cls}): ${(e as Error).message}`);
  }
  throw cfgError(`model.transport.target '${block.target}' is not a known transport (OT_FM, TrigFlow, EDM, VP_SDE, VE_SDE)`);
}

/** Official optimizer params (betas, weight_decay, eps, momentum, ...) → our option names. */
export function optimizerOptions(params: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    const camel = k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    if (camel === 'lr') throw cfgError('training.optimizer.params.lr: set training.learning_rate instead (the official trainer passes lr separately)');
    out[camel] = v;
  }
  return out;
}
