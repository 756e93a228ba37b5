/**
 * TiM network configuration: the official constructor arguments (tim/models/{c2i,t2i}/tim_model.py,
 * `TiM(**network.params)`) in camelCase, with every default the official code applies made explicit,
 * plus the options that only this implementation has (`ropeGrid`).
 */
import * as v from 'valibot';
import { bool, checkDocument, finiteNumber, strict } from '../config_file.js';

/** How the second conditioning embedding is formed from (t, r); the official `new_condition`. */
export type NewCondition = 't-r' | 'r' | 't,r' | 't,t-r' | 'r,t-r' | 't,r,t-r';
export const NEW_CONDITIONS: readonly NewCondition[] = ['t-r', 'r', 't,r', 't,t-r', 'r,t-r', 't,r,t-r'];

/**
 * RoPE token positions. 'official' reproduces the official grid (meshgrid(arange(h), arange(w),
 * indexing='xy')), which for a non-square token grid gives token n the positions (n % h, n // h)
 * instead of its (column, row); released weights were trained with it. 'rowcol' uses (n % w, n // w),
 * i.e. the true (column, row); it equals 'official' whenever h == w.
 */
export type RopeGrid = 'official' | 'rowcol';

/** 'c2i': class-conditional model (tim.models.c2i); 't2i': text-conditional model (tim.models.t2i). */
export type TiMVariant = 'c2i' | 't2i';

export interface TiMConfig {
  variant: TiMVariant;
  /** Latent size the model was trained at (PatchEmbed's img_size); forward accepts any H, W divisible by patchSize. */
  inputSize: number;
  patchSize: number;
  inChannels: number;
  hiddenSize: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  /** h_proj (REPA) is taken after block encoderDepth − 1 (1-based: after the encoderDepth-th block). */
  encoderDepth: number;
  zDim: number;
  projectorDim: number;
  /** c2i only: number of real classes; the label table gets one more row (the null class) when classDropoutProb > 0. */
  numClasses: number;
  /** c2i only: probability that a training label is replaced by the null class. */
  classDropoutProb: number;
  qkNorm: boolean;
  newCondition: NewCondition;
  /** true: a separate delta_embedder; false: the t_embedder is reused for the delta term. */
  useNewEmbed: boolean;
  /** true: qkv += qkv_d(delta_embed) in every self-attention (bias-free linear). */
  distanceAware: boolean;
  /** Hidden width of the blocks' SwiGLU adaLN; official default (hiddenSize // 4) * 3. */
  loraHiddenSize: number;
  /** t2i only: width of the text encoder's features fed to the caption embedder. */
  capFeatDim: number;
  ropeGrid: RopeGrid;
}

/** The official network.params dictionary (snake_case), as in configs/*.yaml. */
export type OfficialNetworkParams = Record<string, unknown>;

/**
 * network.params with the official constructor defaults (tim_model.py `TiM.__init__` and `TiMBlock`);
 * null is the default too. The ranges are validateConfig's, on the camelCase result.
 */
const OFFICIAL_PARAMS = strict({
  input_size: v.nullish(finiteNumber, 32),
  patch_size: v.nullish(finiteNumber, 2),
  in_channels: v.nullish(finiteNumber, 4),
  hidden_size: v.nullish(finiteNumber, 1152),
  encoder_depth: v.nullish(finiteNumber, 8),
  depth: v.nullish(finiteNumber, 28),
  num_heads: v.nullish(finiteNumber, 16),
  mlp_ratio: v.nullish(finiteNumber, 4.0),
  class_dropout_prob: v.nullish(finiteNumber, 0.1),
  num_classes: v.nullish(finiteNumber, 1000),
  cap_feat_dim: v.nullish(finiteNumber, 2048),
  z_dim: v.nullish(finiteNumber, 768),
  projector_dim: v.nullish(finiteNumber, 2048),
  new_condition: v.nullish(v.unknown(), 't-r'), // validateConfig names the choices
  use_new_embed: v.nullish(bool, false),
  distance_aware: v.nullish(bool, false),
  qk_norm: bool, // the official TiMBlock reads block_kwargs["qk_norm"] without a default
  // Official: `if block_kwargs.get('lora_hidden_size', None) != None ... else (hidden_size // 4) * 3`.
  lora_hidden_size: v.nullish(finiteNumber),
  use_checkpoint: v.optional(v.unknown()), // gradient checkpointing: a training-memory switch with no effect on the math
}, { qk_norm: 'the official TiMBlock has no default' });

/**
 * Converts an official `network.params` dict (snake_case) into a TiMConfig, applying the official
 * defaults. `target` (the YAML's network.target) selects the variant when given: a path containing
 * '.t2i.' means the text-to-image model. Unknown keys are rejected so a typo cannot silently fall
 * back to a default.
 */
export function fromOfficialConfig(
  params: OfficialNetworkParams,
  options: { variant?: TiMVariant; target?: string; ropeGrid?: RopeGrid } = {},
): TiMConfig {
  const p = checkDocument(OFFICIAL_PARAMS, params, (m) => new TypeError(`network.params: ${m}`));
  const config: TiMConfig = {
    variant: options.variant ?? (options.target?.includes('.t2i.') ? 't2i' : 'c2i'),
    inputSize: p.input_size,
    patchSize: p.patch_size,
    inChannels: p.in_channels,
    hiddenSize: p.hidden_size,
    depth: p.depth,
    numHeads: p.num_heads,
    mlpRatio: p.mlp_ratio,
    encoderDepth: p.encoder_depth,
    zDim: p.z_dim,
    projectorDim: p.projector_dim,
    numClasses: p.num_classes,
    classDropoutProb: p.class_dropout_prob,
    qkNorm: p.qk_norm,
    newCondition: p.new_condition as NewCondition,
    useNewEmbed: p.use_new_embed,
    distanceAware: p.distance_aware,
    loraHiddenSize: p.lora_hidden_size ?? Math.floor(p.hidden_size / 4) * 3,
    capFeatDim: p.cap_feat_dim,
    ropeGrid: options.ropeGrid ?? 'official',
  };
  validateConfig(config);
  return config;
}

/** The inverse of fromOfficialConfig: the official network.params for this config. */
export function toOfficialParams(config: TiMConfig): Record<string, number | boolean | string> {
  const common = {
    input_size: config.inputSize,
    patch_size: config.patchSize,
    in_channels: config.inChannels,
    hidden_size: config.hiddenSize,
    depth: config.depth,
    num_heads: config.numHeads,
    mlp_ratio: config.mlpRatio,
    encoder_depth: config.encoderDepth,
    z_dim: config.zDim,
    projector_dim: config.projectorDim,
    qk_norm: config.qkNorm,
    new_condition: config.newCondition,
    use_new_embed: config.useNewEmbed,
    distance_aware: config.distanceAware,
    lora_hidden_size: config.loraHiddenSize,
  };
  return config.variant === 'c2i'
    ? { ...common, num_classes: config.numClasses, class_dropout_prob: config.classDropoutProb }
    : { ...common, cap_feat_dim: config.capFeatDim };
}

function positiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`TiMConfig.${name} must be a positive integer, got ${v}`);
}

/** Rejects configurations the official code would fail on (or silently mis-handle). */
export function validateConfig(c: TiMConfig): void {
  if (c.variant !== 'c2i' && c.variant !== 't2i') throw new RangeError(`TiMConfig.variant must be 'c2i' or 't2i', got ${String(c.variant)}`);
  for (const k of ['inputSize', 'patchSize', 'inChannels', 'hiddenSize', 'depth', 'numHeads', 'encoderDepth', 'zDim', 'projectorDim', 'loraHiddenSize'] as const) {
    positiveInt(k, c[k]);
  }
  if (c.variant === 'c2i') positiveInt('numClasses', c.numClasses);
  if (c.variant === 't2i') positiveInt('capFeatDim', c.capFeatDim);
  if (!(c.mlpRatio > 0)) throw new RangeError(`TiMConfig.mlpRatio must be > 0, got ${c.mlpRatio}`);
  if (!(c.classDropoutProb >= 0 && c.classDropoutProb < 1)) throw new RangeError(`TiMConfig.classDropoutProb must be in [0, 1), got ${c.classDropoutProb}`);
  if (c.hiddenSize % c.numHeads !== 0) throw new RangeError(`hiddenSize ${c.hiddenSize} is not divisible by numHeads ${c.numHeads}`);
  // VisionRotaryEmbedding: dim = head_dim // 2 and `assert dim % 2 == 0`.
  if ((c.hiddenSize / c.numHeads) % 4 !== 0) throw new RangeError(`head dim ${c.hiddenSize / c.numHeads} must be a multiple of 4 (2D RoPE)`);
  // The official forward only defines h_proj when block encoderDepth exists.
  if (c.encoderDepth > c.depth) throw new RangeError(`encoderDepth ${c.encoderDepth} exceeds depth ${c.depth}`);
  if (!NEW_CONDITIONS.includes(c.newCondition)) throw new RangeError(`TiMConfig.newCondition must be one of ${NEW_CONDITIONS.join(' | ')}, got ${String(c.newCondition)}`);
  if (c.ropeGrid !== 'official' && c.ropeGrid !== 'rowcol') throw new RangeError(`TiMConfig.ropeGrid must be 'official' or 'rowcol', got ${String(c.ropeGrid)}`);
  for (const k of ['qkNorm', 'useNewEmbed', 'distanceAware'] as const) {
    if (typeof c[k] !== 'boolean') throw new TypeError(`TiMConfig.${k} must be a boolean`);
  }
}

/** Derived sizes, exactly as the official constructors compute them. */
export function derivedSizes(c: TiMConfig): { headDim: number; mlpHidden: number; finalAdaLNHidden: number; labelRows: number; captionHidden: number } {
  return {
    headDim: c.hiddenSize / c.numHeads,
    // TiMBlock: mlp_hidden_dim = int(hidden_size * mlp_ratio); SwiGLU(hidden_features=(mlp_hidden_dim*2)//3)
    mlpHidden: Math.floor((Math.trunc(c.hiddenSize * c.mlpRatio) * 2) / 3),
    // FinalLayer: SwiGLU(hidden_features=hidden_size//2)
    finalAdaLNHidden: Math.floor(c.hiddenSize / 2),
    // LabelEmbedder: nn.Embedding(num_classes + (dropout_prob > 0), hidden_size)
    labelRows: c.numClasses + (c.classDropoutProb > 0 ? 1 : 0),
    // CaptionEmbedder: SwiGLU(cap_feat_dim, hidden_features=hidden_size*4, out_features=hidden_size)
    captionHidden: c.hiddenSize * 4,
  };
}
