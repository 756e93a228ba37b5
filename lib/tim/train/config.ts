/**
 * The training configuration: the official TiM YAML layout (configs/c2i/*.yaml of github WZDTHU/TiM,
 * read by projects/train/trainer_c2i.py) parsed, checked and turned into typed, camelCased values.
 *
 *   model:     transport {target, params}, transition_loss {...}, network {target, params},
 *              proj_coeff, use_ema, ema_decay (+ enc_dir, ckpt: recognised, unused here);
 *              text-to-image (configs/t2i/*.yaml, projects/train/trainer_t2i.py): vae_dir,
 *              text_encoder_dir, proportion_empty_prompts, use_last_hidden_state, max_seq_length
 *              (recognised and unused for a class-conditional network)
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
import * as v from 'valibot';
import { TorchError, argError } from '../../torch/errors.js';
import { configFromValue } from '../network/model.js';
import type { TiMConfig } from '../network/config.js';
import * as transports from '../transports/index.js';
import type { Transport } from '../transports/transport.js';
import type { SchedulerName } from '../../torch/optim/lr_scheduler.js';
import {
  bool, checkDocument, finiteNumber, mustBe, integer, integerList, mapping, oneOf, positiveNumber, readConfigDocument, section, strict, text,
} from '../config_file.js';

const PRECISIONS = ['no', 'bf16', 'fp16'] as const;
const OPTIMIZERS = ['AdamW', 'Adam', 'SGD'] as const;
export type MixedPrecision = (typeof PRECISIONS)[number];
export type OptimizerName = (typeof OPTIMIZERS)[number];

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
  /** the text-to-image keys of the model section (used when the network is T2I) */
  t2i: T2ISection;
  /** official keys that were recognised but have no effect here (e.g. enc_dir: no REPA encoder) */
  ignored: string[];
}

/** model.* keys of the official T2I trainer (trainer_t2i.py). */
export interface T2ISection {
  /** model.text_encoder_dir: the Gemma-3 folder (tim train --text-encoder overrides it) */
  textEncoderDir: string | null;
  /** model.vae_dir: the VAE folder (tim train --vae overrides it) */
  vaeDir: string | null;
  /** model.proportion_empty_prompts: captions replaced by "" with this probability (official: torch.rand(B) < p) */
  proportionEmptyPrompts: number;
  /** model.use_last_hidden_state: last hidden state (true) or hidden_states[-2] */
  useLastHiddenState: boolean;
  /** model.max_seq_length: tokenizer max_length (256) */
  maxSeqLength: number;
}

// ---- the schema: the layout above, with the official defaults --------------------------------------

// Recognised official keys that have no effect here: accepted, listed in TrainConfig.ignored.
const IGNORED = {
  model: ['enc_dir', 'ckpt'],
  training: ['tracker', 'tracker_project_name', 'tracker_kwargs', 'allow_tf32', 'proportion_empty_prompts', 'fsdp_config'],
  'data.dataloader': ['num_workers'],
} as const;
/** The model keys only a text-to-image run reads. */
const T2I_KEYS = ['vae_dir', 'text_encoder_dir', 'proportion_empty_prompts', 'use_last_hidden_state', 'max_seq_length'] as const;
const SCHEDULERS = ['linear', 'cosine', 'cosine_with_restarts', 'polynomial', 'constant', 'constant_with_warmup'] as const satisfies readonly SchedulerName[];

const ignoredKeys = <K extends string>(keys: readonly K[]) => Object.fromEntries(keys.map((k) => [k, v.optional(v.unknown())])) as Record<K, v.OptionalSchema<v.UnknownSchema, undefined>>;
/** A value that may be left out or null (the official YAMLs write `key: null` for "the default"). */
const orDefault = v.nullish;

/** model.transport: {target, params}; the params are checked by transportFromOfficialConfig. */
const TRANSPORT = strict({
  target: v.optional(text, 'tim.schedulers.transports.OT_FM'),
  params: v.optional(mapping, {}),
});

const MODEL = strict({
  transport: section(TRANSPORT),
  transition_loss: v.optional(mapping, {}), // checked by TransitionLoss
  network: mapping, // checked by configFromValue
  proj_coeff: orDefault(finiteNumber, 0),
  use_ema: orDefault(bool, true),
  ema_decay: orDefault(finiteNumber, 0.9999),
  // text to image (a C2I run lists them as ignored)
  vae_dir: orDefault(text, null),
  text_encoder_dir: orDefault(text, null),
  proportion_empty_prompts: orDefault(v.pipe(finiteNumber, v.minValue(0, mustBe('in [0, 1]')), v.maxValue(1, mustBe('in [0, 1]'))), 0),
  use_last_hidden_state: orDefault(bool, true),
  max_seq_length: orDefault(integer(1), 256),
  ...ignoredKeys(IGNORED.model),
}, { network: '{target, params}' });

const DATA = strict({
  data_type: text,
  dataset: v.optional(mapping, {}), // checked by the data_type's reader (train/data.ts)
  dataloader: section(strict({ batch_size: integer(1), ...ignoredKeys(IGNORED['data.dataloader']) })),
}, { data_type: 'latent, image, mnist, image_ms' });

const OPTIMIZER = strict({
  target: v.pipe(
    v.optional(text, 'torch.optim.AdamW'),
    v.check((t) => (OPTIMIZERS as readonly string[]).includes(t.split('.').pop()!), (i) => `'${String(i.input)}' is not supported (${OPTIMIZERS.map((o) => `torch.optim.${o}`).join(', ')})`),
  ),
  params: v.optional(mapping, {}),
});

const TRAINING = strict({
  max_train_steps: integer(1),
  checkpointing_steps: orDefault(integer(1), 500),
  checkpoints_total_limit: orDefault(integer(1), null),
  resume_from_checkpoint: orDefault(v.union([v.string(), v.number(), v.literal(false)], mustBe('latest, a checkpoint step or path, or null')), null),
  learning_rate: orDefault(positiveNumber, 1e-4),
  learning_rate_base_batch_size: orDefault(integer(1), 256),
  scale_lr: orDefault(bool, false),
  lr_scheduler: orDefault(oneOf(SCHEDULERS), 'constant'),
  lr_warmup_steps: orDefault(integer(0), 0),
  gradient_accumulation_steps: orDefault(integer(1), 1),
  optimizer: section(OPTIMIZER),
  max_grad_norm: orDefault(finiteNumber, 0),
  mixed_precision: orDefault(oneOf(PRECISIONS), 'no'),
  validation_steps: orDefault(integer(0), 0),
  checkpoint_list: orDefault(integerList(1), []),
  // ours
  seed: orDefault(integer(0), 0),
  log_steps: orDefault(integer(1), 1),
  sample_steps: orDefault(integer(0), null),
  sample_classes: orDefault(integerList(0), null),
  sample_num_steps: orDefault(integerList(1), [1, 4]),
  sample_cfg_scale: orDefault(finiteNumber, 1),
  dist_timeout: orDefault(v.pipe(positiveNumber, v.maxValue((2 ** 31 - 1) / 1000, mustBe('a number of seconds in (0, 2147483]'))), null),
  ...ignoredKeys(IGNORED.training),
});

const DOCUMENT = strict({ model: section(MODEL), data: section(DATA), training: section(TRAINING) });

/** An E_CONFIG error about the training config. */
export function cfgError(msg: string): TorchError {
  return new TorchError(`training config: ${msg}`, 'E_CONFIG');
}

/** Reads a YAML (or JSON) training config file. */
export function readTrainConfig(path: string): TrainConfig {
  if (typeof path !== 'string' || path === '') throw argError('type', 'readTrainConfig: path must be a non-empty string');
  const doc = readConfigDocument(path, 'training config');
  try {
    return parseTrainConfig(doc);
  } catch (e) {
    (e as Error).message = `${(e as Error).message} (in '${path}')`;
    throw e;
  }
}

/** The network and the transport of a checked model section (the transport built now checks its params, not step 0). */
function modelParts(model: v.InferOutput<typeof MODEL>): { network: TiMConfig; transport: Transport } {
  let network: TiMConfig;
  try {
    network = configFromValue({ model: { network: model.network } });
  } catch (e) {
    throw cfgError(`model.network: ${(e as Error).message}`);
  }
  return { network, transport: transportFromOfficialConfig(model.transport) };
}

/**
 * The network and the transport of an official-layout document's model section (what `tim sample`
 * needs; the other sections are not read).
 */
export function parseModelConfig(doc: unknown): { network: TiMConfig; transport: Transport } {
  return modelParts(checkDocument(v.looseObject({ model: MODEL }), doc, cfgError).model);
}

/** Checks a parsed official-layout document and fills in the official defaults. */
export function parseTrainConfig(doc: unknown): TrainConfig {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw cfgError('the document must be a mapping with model, data and training');
  const { model, data, training: t } = checkDocument(DOCUMENT, doc, cfgError);
  const { network } = modelParts(model);
  if (t.sample_classes && network.variant === 'c2i' && t.sample_classes.some((c) => c > network.numClasses)) {
    throw cfgError(`training.sample_classes must be below num_classes ${network.numClasses} (or equal: the null class)`);
  }
  const present = (o: object, path: keyof typeof IGNORED): string[] => IGNORED[path].filter((k) => k in o).map((k) => `${path}.${k}`);
  const ignored = [...present(model, 'model'), ...present(t, 'training'), ...present(data.dataloader, 'data.dataloader')];
  if (network.variant !== 't2i') {
    ignored.push(...T2I_KEYS.filter((k) => k in (doc as { model: object }).model).map((k) => `model.${k}`));
  }
  return {
    raw: doc as Record<string, unknown>,
    network,
    transport: model.transport,
    transitionLoss: model.transition_loss,
    projCoeff: model.proj_coeff,
    useEma: model.use_ema,
    emaDecay: model.ema_decay,
    data: { dataType: data.data_type, dataset: data.dataset, batchSize: data.dataloader.batch_size },
    training: {
      maxTrainSteps: t.max_train_steps,
      checkpointingSteps: t.checkpointing_steps,
      checkpointsTotalLimit: t.checkpoints_total_limit,
      checkpointList: t.checkpoint_list,
      resumeFromCheckpoint: t.resume_from_checkpoint === null || t.resume_from_checkpoint === false ? null : String(t.resume_from_checkpoint),
      learningRate: t.learning_rate,
      learningRateBaseBatchSize: t.learning_rate_base_batch_size,
      scaleLr: t.scale_lr,
      lrScheduler: t.lr_scheduler,
      lrWarmupSteps: t.lr_warmup_steps,
      gradientAccumulationSteps: t.gradient_accumulation_steps,
      optimizer: { name: t.optimizer.target.split('.').pop() as OptimizerName, params: t.optimizer.params },
      maxGradNorm: t.max_grad_norm,
      mixedPrecision: t.mixed_precision,
      sampleSteps: t.sample_steps ?? t.validation_steps,
      sampleClasses: t.sample_classes,
      sampleNumSteps: t.sample_num_steps,
      sampleCfgScale: t.sample_cfg_scale,
      seed: t.seed,
      logSteps: t.log_steps,
      distTimeout: t.dist_timeout,
    },
    t2i: {
      textEncoderDir: model.text_encoder_dir,
      vaeDir: model.vae_dir,
      proportionEmptyPrompts: model.proportion_empty_prompts,
      useLastHiddenState: model.use_last_hidden_state,
      maxSeqLength: model.max_seq_length,
    },
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
