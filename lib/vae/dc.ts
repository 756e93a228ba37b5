/**
 * DC-AE (Deep Compression Autoencoder; diffusers' AutoencoderDC, the `dc-ae-f32c32-sana-1.1`
 * autoencoder of TiM-C2I-512 and TiM-T2I) as a plain-data ModuleSpec (lib/torch/modules/spec.ts), built
 * in-process into TorchScript by lib/torch/modules/build.ts.
 *
 * - `parseDcConfig` reads a diffusers config.json object with AutoencoderDC's __init__ defaults;
 * - `dcModuleSpec` gives one root module whose state_dict keys are exactly diffusers' (encoder.conv_in.weight,
 *   encoder.down_blocks.0.0.conv1.weight, ..., decoder.norm_out.bias), with methods
 *   `encode(x) -> latent` (AutoencoderDC.encode(x).latent) and `decode(z) -> image` (AutoencoderDC._decode);
 * - `dcFacts` gives what a caller needs around it (latent channels, downsampling factor, scaling factor).
 *
 * The official TiM wrapper (tim/models/vae/dc_ae.py MyEncoder/MyDecoder) re-implements the encoder and
 * decoder forwards only to add gradient checkpointing; without checkpointing they are diffusers'
 * Encoder.forward / Decoder.forward line for line, so this follows diffusers. Tiled encode/decode is
 * not reproduced (TiM calls encode(x).latent and _decode(z), which do not tile unless enabled).
 */
import { argError } from '../torch/errors.js';
import { floatAttr, hashedModuleSpec, intAttr, type InitSpec, type ModuleSpec, type ParamSpec } from '../torch/modules/spec.js';
import type { AttentionImpl } from '../torch/modules/sources.js';
import * as src from './dc_sources.js';
import type { DcActivation, DcNorm } from './dc_sources.js';

export type DcBlockType = 'ResBlock' | 'EfficientViTBlock';
export type { DcActivation, DcNorm };

/** An AutoencoderDC configuration with every per-block option expanded to one entry per block. */
export interface DcConfig {
  inChannels: number;
  latentChannels: number;
  attentionHeadDim: number;
  encoderBlockTypes: DcBlockType[];
  decoderBlockTypes: DcBlockType[];
  encoderBlockOutChannels: number[];
  decoderBlockOutChannels: number[];
  encoderLayersPerBlock: number[];
  decoderLayersPerBlock: number[];
  encoderQkvMultiscales: number[][];
  decoderQkvMultiscales: number[][];
  /** 'pixel_shuffle': conv then pixel_shuffle; 'interpolate': nearest ×2 then conv. */
  upsampleBlockType: 'pixel_shuffle' | 'interpolate';
  /** 'pixel_unshuffle': conv then pixel_unshuffle; 'conv': stride-2 conv (diffusers' "Conv"/"conv"). */
  downsampleBlockType: 'pixel_unshuffle' | 'conv';
  decoderNormTypes: DcNorm[];
  /** 'identity' where the config has null (diffusers' ResBlock then uses nn.Identity). */
  decoderActFns: DcActivation[];
  encoderOutShortcut: boolean;
  decoderInShortcut: boolean;
  decoderConvActFn: Exclude<DcActivation, 'identity'>;
  scalingFactor: number;
  /** Keys of the config that AutoencoderDC does not take (other than '_'-prefixed metadata); diffusers ignores them too. */
  unknownKeys: string[];
}

// ---- config -------------------------------------------------------------------------------------

/** AutoencoderDC.__init__ defaults (diffusers 58eb52c0). */
const DEFAULTS = {
  in_channels: 3,
  latent_channels: 32,
  attention_head_dim: 32,
  encoder_block_types: 'ResBlock',
  decoder_block_types: 'ResBlock',
  encoder_block_out_channels: [128, 256, 512, 512, 1024, 1024],
  decoder_block_out_channels: [128, 256, 512, 512, 1024, 1024],
  encoder_layers_per_block: [2, 2, 2, 3, 3, 3],
  decoder_layers_per_block: [3, 3, 3, 3, 3, 3],
  encoder_qkv_multiscales: [[], [], [], [5], [5], [5]],
  decoder_qkv_multiscales: [[], [], [], [5], [5], [5]],
  upsample_block_type: 'pixel_shuffle',
  downsample_block_type: 'pixel_unshuffle',
  decoder_norm_types: 'rms_norm',
  decoder_act_fns: 'silu',
  encoder_out_shortcut: true,
  decoder_in_shortcut: true,
  decoder_conv_act_fn: 'relu',
  scaling_factor: 1.0,
} as const;

const KNOWN_KEYS = new Set(Object.keys(DEFAULTS));

function bad(key: string, message: string): Error {
  return argError('range', `AutoencoderDC config: ${key} ${message}`, 'E_VAE_CONFIG');
}
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);
/** xs[i] (from the end for i < 0); the parser has checked every length, so a miss is a bug here. */
function at<T>(xs: readonly T[], i: number): T {
  const v = xs[i < 0 ? xs.length + i : i];
  if (v === undefined) throw new RangeError(`internal: index ${i} outside a list of ${xs.length}`);
  return v;
}

function int(key: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw bad(key, `must be an integer >= ${min}, got ${show(v)}`);
  return v;
}
function bool(key: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw bad(key, `must be true or false, got ${show(v)}`);
  return v;
}
function intList(key: string, v: unknown, min: number): number[] {
  if (!Array.isArray(v) || v.length === 0) throw bad(key, `must be a non-empty list of integers, got ${show(v)}`);
  return v.map((x, i) => int(`${key}[${i}]`, x, min));
}

/**
 * A per-block option given as one value (applies to every block) or as a list with at least `n`
 * entries (diffusers indexes it by block; extra entries are unused).
 */
function perBlock<T>(key: string, v: unknown, n: number, one: (k: string, x: unknown) => T): T[] {
  if (Array.isArray(v)) {
    if (v.length < n) throw bad(key, `has ${v.length} entries for ${n} blocks`);
    return v.slice(0, n).map((x, i) => one(`${key}[${i}]`, x));
  }
  if (typeof v !== 'string') throw bad(key, `must be a string or a list of one per block, got ${show(v)}`);
  const x = one(key, v);
  return Array.from({ length: n }, () => x);
}

function blockType(key: string, v: unknown): DcBlockType {
  if (v === 'ResBlock' || v === 'EfficientViTBlock') return v;
  throw bad(key, `must be 'ResBlock' or 'EfficientViTBlock', got ${show(v)}`);
}

function normType(key: string, v: unknown): DcNorm {
  if (v === 'rms_norm' || v === 'batch_norm') return v;
  if (v === 'layer_norm') {
    // diffusers builds nn.LayerNorm(C) and applies it to the NCHW tensor, i.e. over W: it only runs when W == C.
    throw bad(key, "'layer_norm' is not supported (diffusers applies it over the width axis of NCHW maps); use 'rms_norm' or 'batch_norm'");
  }
  throw bad(key, `must be 'rms_norm' or 'batch_norm', got ${show(v)}`);
}

/** get_activation: case-insensitive, 'swish' is SiLU; null (only inside a per-block list) is nn.Identity. */
function act(key: string, v: unknown, allowNull: boolean): DcActivation {
  if (v === null && allowNull) return 'identity';
  if (typeof v === 'string') {
    const s = v.toLowerCase();
    if (s === 'silu' || s === 'swish') return 'silu';
    if (s === 'relu' || s === 'gelu' || s === 'mish') return s;
  }
  throw bad(key, `must be one of 'silu', 'swish', 'relu', 'gelu', 'mish'${allowNull ? ' or null' : ''}, got ${show(v)}`);
}

function multiscales(key: string, v: unknown, n: number): number[][] {
  if (!Array.isArray(v) || v.length < n || !v.every(Array.isArray)) {
    throw bad(key, `must be a list of ${n} kernel-size lists (one per block, e.g. [[], [5]]), got ${show(v)}`);
  }
  return v.slice(0, n).map((ks: unknown[], i) =>
    ks.map((k, j) => {
      const kk = int(`${key}[${i}][${j}]`, k, 1);
      // padding k // 2 keeps the map size only for odd k; an even k would break the concatenation.
      if (kk % 2 === 0) throw bad(`${key}[${i}][${j}]`, `must be an odd kernel size, got ${kk}`);
      return kk;
    }),
  );
}

/**
 * Reads a diffusers AutoencoderDC config (config.json as an object). Missing keys take
 * AutoencoderDC.__init__'s defaults; '_'-prefixed keys (_class_name, _diffusers_version) are metadata.
 * Anything diffusers would reject, would build into a network that cannot run (channel counts the
 * shortcuts cannot split, a middle block without layers, an even qkv kernel), or would silently read
 * as something else (an upsample type other than its two, e.g. efficientvit's "InterpolateConv",
 * becomes pixel_shuffle there) is an E_VAE_CONFIG RangeError naming the key. Keys AutoencoderDC does
 * not take are listed in `unknownKeys` (diffusers ignores them with a warning).
 */
export function parseDcConfig(raw: Record<string, unknown>): DcConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw argError('type', `AutoencoderDC config must be an object, got ${show(raw)}`, 'E_VAE_CONFIG');
  }
  const get = (k: keyof typeof DEFAULTS): unknown => (Object.prototype.hasOwnProperty.call(raw, k) ? raw[k] : DEFAULTS[k]);
  if (typeof raw._class_name === 'string' && raw._class_name !== 'AutoencoderDC') {
    throw bad('_class_name', `must be 'AutoencoderDC', got ${show(raw._class_name)}`);
  }

  const inChannels = int('in_channels', get('in_channels'), 1);
  const latentChannels = int('latent_channels', get('latent_channels'), 1);
  const attentionHeadDim = int('attention_head_dim', get('attention_head_dim'), 1);
  const encCh = intList('encoder_block_out_channels', get('encoder_block_out_channels'), 1);
  const decCh = intList('decoder_block_out_channels', get('decoder_block_out_channels'), 1);
  const ne = encCh.length;
  const nd = decCh.length;

  const layers = (key: 'encoder_layers_per_block' | 'decoder_layers_per_block', n: number): number[] => {
    const v = get(key);
    if (!Array.isArray(v) || v.length < n) throw bad(key, `must be a list of ${n} layer counts (one per block), got ${show(v)}`);
    const l = v.slice(0, n).map((x, i) => int(`${key}[${i}]`, x, 0));
    for (let i = 1; i < n; i++) {
      // diffusers skips a 0-layer block's resampling too, which leaves the channels of the next block wrong.
      if (l[i] === 0) throw bad(`${key}[${i}]`, 'must be >= 1: only the first block may have 0 layers');
    }
    if (l[0] === 0 && n < 2) throw bad(`${key}[0]`, 'may be 0 only with at least two blocks (the first resampling then uses the second block\'s channels)');
    return l;
  };
  const encLayers = layers('encoder_layers_per_block', ne);
  const decLayers = layers('decoder_layers_per_block', nd);

  const encTypes = perBlock('encoder_block_types', get('encoder_block_types'), ne, blockType);
  const decTypes = perBlock('decoder_block_types', get('decoder_block_types'), nd, blockType);
  const encMs = multiscales('encoder_qkv_multiscales', get('encoder_qkv_multiscales'), ne);
  const decMs = multiscales('decoder_qkv_multiscales', get('decoder_qkv_multiscales'), nd);
  const decNorms = perBlock('decoder_norm_types', get('decoder_norm_types'), nd, normType);
  const decActsRaw = get('decoder_act_fns');
  const decActs = Array.isArray(decActsRaw)
    ? perBlock('decoder_act_fns', decActsRaw, nd, (k, x) => act(k, x, true))
    : perBlock('decoder_act_fns', decActsRaw, nd, (k, x) => act(k, x, false));
  const convAct = act('decoder_conv_act_fn', get('decoder_conv_act_fn'), false) as Exclude<DcActivation, 'identity'>;

  const up = get('upsample_block_type');
  if (up !== 'pixel_shuffle' && up !== 'interpolate') throw bad('upsample_block_type', `must be 'pixel_shuffle' or 'interpolate', got ${show(up)}`);
  const down = get('downsample_block_type');
  let downsampleBlockType: 'pixel_unshuffle' | 'conv';
  // diffusers tests `== "pixel_unshuffle"`; every other value is the strided conv (the hub configs say "Conv").
  if (down === 'pixel_unshuffle') downsampleBlockType = 'pixel_unshuffle';
  else if (typeof down === 'string' && down.toLowerCase() === 'conv') downsampleBlockType = 'conv';
  else throw bad('downsample_block_type', `must be 'pixel_unshuffle' or 'conv' ('Conv'), got ${show(down)}`);

  const encoderOutShortcut = bool('encoder_out_shortcut', get('encoder_out_shortcut'));
  const decoderInShortcut = bool('decoder_in_shortcut', get('decoder_in_shortcut'));
  const sf = get('scaling_factor');
  if (typeof sf !== 'number' || !Number.isFinite(sf) || sf <= 0) throw bad('scaling_factor', `must be a finite number > 0, got ${show(sf)}`);

  // Channel arithmetic the shortcuts and pixel (un)shuffles need (diffusers fails at run time otherwise).
  for (let i = 0; i + 1 < ne; i++) {
    const [a, b] = [at(encCh, i), at(encCh, i + 1)];
    // A 0-layer first block has no shortcut downsampling: conv_in (no shortcut) goes straight to block 1.
    const shortcut = !(i === 0 && encLayers[0] === 0);
    if (shortcut && (4 * a) % b !== 0) throw bad(`encoder_block_out_channels[${i + 1}]`, `(${b}) must divide 4 × ${a} (the downsampling shortcut averages groups of channels)`);
    if (downsampleBlockType === 'pixel_unshuffle' && b % 4 !== 0) throw bad(`encoder_block_out_channels[${i + 1}]`, `(${b}) must be a multiple of 4 with pixel_unshuffle downsampling`);
  }
  for (let i = 0; i + 1 < nd; i++) {
    const [a, b] = [at(decCh, i + 1), at(decCh, i)];
    if (!(i === 0 && decLayers[0] === 0) && (4 * b) % a !== 0) throw bad(`decoder_block_out_channels[${i + 1}]`, `(${a}) must divide 4 × ${b} (the upsampling shortcut repeats channels)`);
  }
  if (encoderOutShortcut && at(encCh, -1) % latentChannels !== 0) {
    throw bad('latent_channels', `(${latentChannels}) must divide encoder_block_out_channels[-1] (${at(encCh, -1)}) with encoder_out_shortcut`);
  }
  if (decoderInShortcut && at(decCh, -1) % latentChannels !== 0) {
    throw bad('latent_channels', `(${latentChannels}) must divide decoder_block_out_channels[-1] (${at(decCh, -1)}) with decoder_in_shortcut`);
  }
  const checkHeads = (key: string, ch: number[], types: DcBlockType[], l: number[]): void => {
    for (let i = 0; i < ch.length; i++) {
      if (types[i] === 'EfficientViTBlock' && at(l, i) > 0 && Math.floor(at(ch, i) / attentionHeadDim) < 1) {
        throw bad('attention_head_dim', `(${attentionHeadDim}) is larger than ${key}[${i}] (${at(ch, i)}): an EfficientViTBlock there would have no attention head`);
      }
    }
  };
  checkHeads('encoder_block_out_channels', encCh, encTypes, encLayers);
  checkHeads('decoder_block_out_channels', decCh, decTypes, decLayers);

  return {
    inChannels,
    latentChannels,
    attentionHeadDim,
    encoderBlockTypes: encTypes,
    decoderBlockTypes: decTypes,
    encoderBlockOutChannels: encCh,
    decoderBlockOutChannels: decCh,
    encoderLayersPerBlock: encLayers,
    decoderLayersPerBlock: decLayers,
    encoderQkvMultiscales: encMs,
    decoderQkvMultiscales: decMs,
    upsampleBlockType: up,
    downsampleBlockType,
    decoderNormTypes: decNorms,
    decoderActFns: decActs,
    encoderOutShortcut,
    decoderInShortcut,
    decoderConvActFn: convAct,
    scalingFactor: sf,
    unknownKeys: Object.keys(raw).filter((k) => !k.startsWith('_') && !KNOWN_KEYS.has(k)),
  };
}

/**
 * Latent channels, the spatial downsampling factor (diffusers' spatial_compression_ratio,
 * 2^(blocks − 1)) and the scaling factor (diffusion latents are z · scalingFactor).
 */
export function dcFacts(cfg: DcConfig): { latentChannels: number; downsampleFactor: number; scalingFactor: number } {
  return {
    latentChannels: cfg.latentChannels,
    downsampleFactor: 2 ** (cfg.encoderBlockOutChannels.length - 1),
    scalingFactor: cfg.scalingFactor,
  };
}

// ---- module tree --------------------------------------------------------------------------------

const ZEROS: InitSpec = { kind: 'zeros' };
const ONES: InitSpec = { kind: 'ones' };
/**
 * PyTorch's default Conv2d/Linear init (kaiming_uniform(a=√5) weight, bias U(±1/√fan_in)) is
 * U(±1/√fan_in) for both; xavier_uniform with fan_out = 5·fan_in has exactly that bound
 * (√(6 / 6·fan_in)). Checkpoints overwrite it; it only matters for a freshly built, unloaded module.
 */
const torchDefault = (fanIn: number): InitSpec => ({ kind: 'xavier_uniform', fanIn, fanOut: 5 * fanIn });

/** Names the TorchScript class by a hash of everything two modules must share to share a class. */
const mod = hashedModuleSpec;
const seq = (children: ModuleSpec[]): { name: string; spec: ModuleSpec }[] => children.map((spec, i) => ({ name: String(i), spec }));

function conv2d(inC: number, outC: number, k: number, o: { stride?: number; padding?: number; groups?: number; bias?: boolean } = {}): ModuleSpec {
  const groups = o.groups ?? 1;
  const bias = o.bias ?? true;
  const fanIn = (inC / groups) * k * k;
  const params: ParamSpec[] = [{ name: 'weight', shape: [outC, inC / groups, k, k], init: torchDefault(fanIn) }];
  if (bias) params.push({ name: 'bias', shape: [outC], init: torchDefault(fanIn) });
  return mod(bias ? 'DCConv2d' : 'DCConv2dNoBias', {
    params,
    attributes: [intAttr('stride', o.stride ?? 1), intAttr('padding', o.padding ?? 0), intAttr('groups', groups)],
    methods: src.conv2dSources(bias),
  });
}

function linearNoBias(inF: number, outF: number): ModuleSpec {
  return mod('DCLinearNoBias', { params: [{ name: 'weight', shape: [outF, inF], init: torchDefault(inF) }], methods: src.LINEAR_NO_BIAS_SOURCES });
}

/** diffusers RMSNorm(C, eps=1e-5, elementwise_affine=True, bias=True). */
function rmsNorm(c: number): ModuleSpec {
  return mod('DCRMSNorm', {
    params: [
      { name: 'weight', shape: [c], init: ONES },
      { name: 'bias', shape: [c], init: ZEROS },
    ],
    attributes: [floatAttr('eps', 1e-5)],
    methods: src.RMS_NORM_SOURCES,
  });
}

/** nn.BatchNorm2d(C, eps=1e-5): weight, bias, running_mean, running_var, num_batches_tracked (int64). */
function batchNorm(c: number): ModuleSpec {
  return mod('DCBatchNorm2d', {
    params: [
      { name: 'weight', shape: [c], init: ONES },
      { name: 'bias', shape: [c], init: ZEROS },
    ],
    buffers: [
      { name: 'running_mean', shape: [c], dtype: 'float32', init: ZEROS, persistent: true },
      { name: 'running_var', shape: [c], dtype: 'float32', init: ONES, persistent: true },
      { name: 'num_batches_tracked', shape: [], dtype: 'int64', init: ZEROS, persistent: true },
    ],
    attributes: [floatAttr('eps', 1e-5)],
    methods: src.BATCH_NORM_SOURCES,
  });
}

const norm = (type: DcNorm, c: number): ModuleSpec => (type === 'rms_norm' ? rmsNorm(c) : batchNorm(c));

function resBlock(c: number, normType: DcNorm, a: DcActivation): ModuleSpec {
  return mod('DCResBlock', {
    children: [
      { name: 'conv1', spec: conv2d(c, c, 3, { padding: 1 }) },
      { name: 'conv2', spec: conv2d(c, c, 3, { padding: 1, bias: false }) },
      { name: 'norm', spec: norm(normType, c) },
    ],
    methods: src.resBlockSources(normType, a),
  });
}

function efficientViTBlock(c: number, headDim: number, scales: number[], normType: DcNorm): ModuleSpec {
  // SanaMultiscaleLinearAttention(mult=1.0): heads = int(C // head_dim * 1.0).
  const heads = Math.floor(c / headDim);
  const inner = heads * headDim;
  const projections = scales.map((k) =>
    mod('DCMultiscaleProjection', {
      children: [
        { name: 'proj_in', spec: conv2d(3 * inner, 3 * inner, k, { padding: Math.floor(k / 2), groups: 3 * inner, bias: false }) },
        { name: 'proj_out', spec: conv2d(3 * inner, 3 * inner, 1, { groups: 3 * heads, bias: false }) },
      ],
      methods: src.MULTISCALE_PROJECTION_SOURCES,
    }),
  );
  const attn = mod('DCLiteMLA', {
    attributes: [intAttr('attention_head_dim', headDim), floatAttr('eps', 1e-15)],
    children: [
      { name: 'to_q', spec: linearNoBias(c, inner) },
      { name: 'to_k', spec: linearNoBias(c, inner) },
      { name: 'to_v', spec: linearNoBias(c, inner) },
      { name: 'to_qkv_multiscale', spec: mod('DCModuleList', { children: seq(projections) }) },
      { name: 'to_out', spec: linearNoBias(inner * (1 + scales.length), c) },
      { name: 'norm_out', spec: norm(normType, c) },
    ],
    methods: src.liteMlaSources(scales.length, normType),
  });
  // GLUMBConv(C, C, expand_ratio=4, norm_type="rms_norm").
  const hidden = 4 * c;
  const convOut = mod('DCGLUMBConv', {
    children: [
      { name: 'conv_inverted', spec: conv2d(c, 2 * hidden, 1) },
      { name: 'conv_depth', spec: conv2d(2 * hidden, 2 * hidden, 3, { padding: 1, groups: 2 * hidden }) },
      { name: 'conv_point', spec: conv2d(hidden, c, 1, { bias: false }) },
      { name: 'norm', spec: rmsNorm(c) },
    ],
    methods: src.GLUMBCONV_SOURCES,
  });
  return mod('DCEfficientViTBlock', {
    children: [
      { name: 'attn', spec: attn },
      { name: 'conv_out', spec: convOut },
    ],
    methods: src.EFFICIENT_VIT_BLOCK_SOURCES,
  });
}

function block(type: DcBlockType, c: number, headDim: number, scales: number[], normType: DcNorm, a: DcActivation): ModuleSpec {
  return type === 'ResBlock' ? resBlock(c, normType, a) : efficientViTBlock(c, headDim, scales, normType);
}

function downBlock(inC: number, outC: number, downsample: boolean, shortcut: boolean): ModuleSpec {
  const conv = conv2d(inC, downsample ? outC / 4 : outC, 3, { stride: downsample ? 1 : 2, padding: 1 });
  return mod('DCDownBlock2d', {
    attributes: shortcut ? [intAttr('group_size', (inC * 4) / outC)] : [],
    children: [{ name: 'conv', spec: conv }],
    methods: src.downBlockSources(downsample, shortcut),
  });
}

function upBlock(inC: number, outC: number, interpolate: boolean, shortcut: boolean): ModuleSpec {
  return mod('DCUpBlock2d', {
    attributes: shortcut ? [intAttr('repeats', (outC * 4) / inC)] : [],
    children: [{ name: 'conv', spec: conv2d(inC, interpolate ? outC : outC * 4, 3, { padding: 1 }) }],
    methods: src.upBlockSources(interpolate, shortcut),
  });
}

const stage = (children: ModuleSpec[]): ModuleSpec => mod('DCSequential', { children: seq(children), methods: src.sequentialSources(children.length) });

function encoder(c: DcConfig): ModuleSpec {
  const ch = c.encoderBlockOutChannels;
  const l = c.encoderLayersPerBlock;
  const n = ch.length;
  const unshuffle = c.downsampleBlockType === 'pixel_unshuffle';
  const convIn = at(l, 0) > 0 ? conv2d(c.inChannels, at(ch, 0), 3, { padding: 1 }) : downBlock(c.inChannels, at(ch, 1), unshuffle, false);
  const stages = ch.map((out, i) => {
    // Encoder blocks always use rms_norm and silu (diffusers Encoder).
    const blocks = Array.from({ length: at(l, i) }, () => block(at(c.encoderBlockTypes, i), out, c.attentionHeadDim, at(c.encoderQkvMultiscales, i), 'rms_norm', 'silu'));
    if (i < n - 1 && at(l, i) > 0) blocks.push(downBlock(out, at(ch, i + 1), unshuffle, true));
    return stage(blocks);
  });
  return mod('DCEncoder', {
    attributes: c.encoderOutShortcut ? [intAttr('out_shortcut_average_group_size', at(ch, -1) / c.latentChannels)] : [],
    children: [
      { name: 'conv_in', spec: convIn },
      { name: 'down_blocks', spec: mod('DCModuleList', { children: seq(stages) }) },
      { name: 'conv_out', spec: conv2d(at(ch, -1), c.latentChannels, 3, { padding: 1 }) },
    ],
    methods: src.encoderSources(n, c.encoderOutShortcut),
  });
}

function decoder(c: DcConfig): ModuleSpec {
  const ch = c.decoderBlockOutChannels;
  const l = c.decoderLayersPerBlock;
  const n = ch.length;
  const interpolate = c.upsampleBlockType === 'interpolate';
  const stages = ch.map((out, i) => {
    const blocks: ModuleSpec[] = [];
    if (i < n - 1 && at(l, i) > 0) blocks.push(upBlock(at(ch, i + 1), out, interpolate, true));
    for (let j = 0; j < at(l, i); j++) {
      blocks.push(block(at(c.decoderBlockTypes, i), out, c.attentionHeadDim, at(c.decoderQkvMultiscales, i), at(c.decoderNormTypes, i), at(c.decoderActFns, i)));
    }
    return stage(blocks);
  });
  const channels = at(l, 0) > 0 ? at(ch, 0) : at(ch, 1);
  const convOut = at(l, 0) > 0 ? conv2d(channels, c.inChannels, 3, { padding: 1 }) : upBlock(channels, c.inChannels, interpolate, false);
  return mod('DCDecoder', {
    attributes: c.decoderInShortcut ? [intAttr('in_shortcut_repeats', at(ch, -1) / c.latentChannels)] : [],
    children: [
      { name: 'conv_in', spec: conv2d(c.latentChannels, at(ch, -1), 3, { padding: 1 }) },
      { name: 'up_blocks', spec: mod('DCModuleList', { children: seq(stages) }) },
      { name: 'norm_out', spec: rmsNorm(channels) },
      { name: 'conv_out', spec: convOut },
    ],
    methods: src.decoderSources(n, c.decoderInShortcut, c.decoderConvActFn),
  });
}

/**
 * The AutoencoderDC module tree: children `encoder` and `decoder` (diffusers' parameter and buffer
 * names, in diffusers' state_dict order), methods `encode(x: Tensor) -> Tensor` and
 * `decode(z: Tensor) -> Tensor`. Attention here is always the linear (or, for maps of at most
 * attention_head_dim pixels, quadratic) ReLU attention written with matmuls, so `attention` has no
 * effect; it is accepted (and checked) so every VAE family takes the same options.
 */
export function dcModuleSpec(cfg: DcConfig, opts: { attention?: AttentionImpl } = {}): ModuleSpec {
  if (opts.attention !== undefined && opts.attention !== 'math' && opts.attention !== 'sdpa') {
    throw argError('range', `attention must be 'math' or 'sdpa', got ${show(opts.attention)}`, 'E_OPTION');
  }
  const facts = dcFacts(cfg);
  return mod('AutoencoderDC', {
    attributes: [
      intAttr('in_channels', cfg.inChannels),
      intAttr('latent_channels', cfg.latentChannels),
      intAttr('downsample_factor', facts.downsampleFactor),
    ],
    children: [
      { name: 'encoder', spec: encoder(cfg) },
      { name: 'decoder', spec: decoder(cfg) },
    ],
    methods: src.ROOT_SOURCES,
  });
}
