/**
 * diffusers' AutoencoderKL (the SD-VAE: stabilityai/sd-vae-ft-ema, sd-vae-ft-mse, ...) as one
 * TorchScript module built in-process from a plain-data ModuleSpec, the way lib/tim/network builds
 * the TiM network. Parameter and buffer names are exactly diffusers' state-dict names, so a
 * diffusers folder's weights load strictly into it.
 *
 * Followed files (diffusers commit 58eb52c0, src/diffusers/models/): autoencoders/autoencoder_kl.py
 * (AutoencoderKL: encoder → quant_conv → DiagonalGaussianDistribution; post_quant_conv → decoder),
 * autoencoders/vae.py (Encoder, Decoder, DiagonalGaussianDistribution), unets/unet_2d_blocks.py
 * (DownEncoderBlock2D, UpDecoderBlock2D, UNetMidBlock2D), resnet.py (ResnetBlock2D),
 * downsampling.py / upsampling.py (Downsample2D, Upsample2D), attention_processor.py (Attention +
 * AttnProcessor2_0 with group norm, one head of width C, residual).
 *
 * Root methods: `encode(x) -> Tuple[Tensor, Tensor]` (posterior mean, logvar clamped to [−30, 20]
 * as DiagonalGaussianDistribution does) and `decode(z) -> Tensor`. Inference only: no dropout
 * (diffusers' is p = 0), no gradient checkpointing, no tiling.
 *
 * The sources follow lib/torch/modules/sources.ts's rules (aten ops through `torch.`, children by
 * `getattr`, structure in the text rather than in run-time branches) so they compile on libtorch
 * 1.13 and 2.x alike.
 */
import { argError } from '../torch/errors.js';
import { floatAttr, hashedModuleSpec, intAttr, type InitSpec, type ModuleSpec } from '../torch/modules/spec.js';
import { LINEAR_SOURCES, type AttentionImpl } from '../torch/modules/sources.js';

/** Activations diffusers' get_activation knows ('swish' is SiLU). */
export const KL_ACTIVATIONS = ['silu', 'swish', 'mish', 'gelu', 'relu'] as const;
export type KlActivation = (typeof KL_ACTIVATIONS)[number];

/** An AutoencoderKL config.json with diffusers' constructor defaults filled in (camelCase). */
export interface KlConfig {
  inChannels: number;
  outChannels: number;
  downBlockTypes: string[];
  upBlockTypes: string[];
  blockOutChannels: number[];
  layersPerBlock: number;
  actFn: KlActivation;
  latentChannels: number;
  normNumGroups: number;
  sampleSize: number | number[];
  scalingFactor: number;
  /** null when the config has none (diffusers' default); the VAE front end reads it as 0. */
  shiftFactor: number | null;
  /** Per-channel latent statistics some configs carry (SDXL-style); read, not used by TiM. */
  latentsMean: number[] | null;
  latentsStd: number[] | null;
  /** Read and ignored: diffusers' pipelines use it to run the VAE in float32; VAE.load takes a dtype. */
  forceUpcast: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  midBlockAddAttention: boolean;
}

/** Spatial reduction of the encoder: one stride-2 Downsample2D per block but the last. */
export function klDownsampleFactor(cfg: KlConfig): number {
  return 2 ** (cfg.blockOutChannels.length - 1);
}

// ---- config -------------------------------------------------------------------------------------

function configError(message: string): Error {
  return argError('range', `AutoencoderKL config: ${message}`, 'E_VAE_CONFIG');
}

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

function posInt(raw: Record<string, unknown>, key: string, dflt: number): number {
  const v = raw[key] ?? dflt;
  if (!isPosInt(v)) throw configError(`${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}
function bool(raw: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = raw[key] ?? dflt;
  if (typeof v !== 'boolean') throw configError(`${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}
function finite(raw: Record<string, unknown>, key: string, dflt: number): number {
  const v = raw[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw configError(`${key} must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}
function list<T>(raw: Record<string, unknown>, key: string, dflt: T[], ok: (x: unknown) => x is T, what: string): T[] {
  const v = raw[key] ?? dflt;
  if (!Array.isArray(v) || v.length === 0 || !v.every(ok)) throw configError(`${key} must be a non-empty list of ${what}, got ${JSON.stringify(v)}`);
  return [...v];
}
function numbersOrNull(raw: Record<string, unknown>, key: string): number[] | null {
  const v = raw[key];
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw configError(`${key} must be null or a list of numbers, got ${JSON.stringify(v)}`);
  }
  return [...(v as number[])];
}

/**
 * A config.json object (diffusers' snake_case keys) → KlConfig, with AutoencoderKL.__init__'s
 * defaults for missing keys. Keys diffusers itself ignores (`_class_name`, `_diffusers_version`,
 * `_name_or_path`, keys of other versions) are ignored too, as from_pretrained does. Bad values and
 * structures this module cannot build (other block types, a block-type list of another length than
 * block_out_channels, group counts that do not divide the channels) → RangeError E_VAE_CONFIG.
 */
export function parseKlConfig(raw: Record<string, unknown>): KlConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw configError('must be a JSON object');
  const isStr = (x: unknown): x is string => typeof x === 'string';
  const blockOutChannels = list(raw, 'block_out_channels', [64], isPosInt, 'positive integers');
  const downBlockTypes = list(raw, 'down_block_types', ['DownEncoderBlock2D'], isStr, 'strings');
  const upBlockTypes = list(raw, 'up_block_types', ['UpDecoderBlock2D'], isStr, 'strings');
  // get_down_block / get_up_block strip a 'UNetRes' prefix before matching.
  const strip = (s: string): string => (s.startsWith('UNetRes') ? s.slice(7) : s);
  for (const t of downBlockTypes) {
    if (strip(t) !== 'DownEncoderBlock2D') throw configError(`down block type '${t}' is not supported (only DownEncoderBlock2D)`);
  }
  for (const t of upBlockTypes) {
    if (strip(t) !== 'UpDecoderBlock2D') throw configError(`up block type '${t}' is not supported (only UpDecoderBlock2D)`);
  }
  const n = blockOutChannels.length;
  if (downBlockTypes.length !== n || upBlockTypes.length !== n) {
    throw configError(
      `down_block_types (${downBlockTypes.length}) and up_block_types (${upBlockTypes.length}) must have one entry per block_out_channels entry (${n})`,
    );
  }
  const actRaw = raw.act_fn ?? 'silu';
  const act = typeof actRaw === 'string' ? actRaw.toLowerCase() : actRaw;
  if (!(KL_ACTIVATIONS as readonly unknown[]).includes(act)) {
    throw configError(`act_fn ${JSON.stringify(actRaw)} is not supported (known: ${KL_ACTIVATIONS.join(', ')})`);
  }
  const normNumGroups = posInt(raw, 'norm_num_groups', 32);
  for (const c of blockOutChannels) {
    if (c % normNumGroups !== 0) throw configError(`norm_num_groups ${normNumGroups} does not divide block_out_channels entry ${c}`);
  }
  const sampleSize = raw.sample_size ?? 32;
  if (!isPosInt(sampleSize) && !(Array.isArray(sampleSize) && sampleSize.length > 0 && sampleSize.every(isPosInt))) {
    throw configError(`sample_size must be a positive integer or a list of them, got ${JSON.stringify(sampleSize)}`);
  }
  const scalingFactor = finite(raw, 'scaling_factor', 0.18215);
  if (scalingFactor === 0) throw configError('scaling_factor must not be 0');
  const shift = raw.shift_factor;
  if (shift !== undefined && shift !== null && (typeof shift !== 'number' || !Number.isFinite(shift))) {
    throw configError(`shift_factor must be null or a finite number, got ${JSON.stringify(shift)}`);
  }
  return {
    inChannels: posInt(raw, 'in_channels', 3),
    outChannels: posInt(raw, 'out_channels', 3),
    downBlockTypes,
    upBlockTypes,
    blockOutChannels,
    layersPerBlock: posInt(raw, 'layers_per_block', 1),
    actFn: act as KlActivation,
    latentChannels: posInt(raw, 'latent_channels', 4),
    normNumGroups,
    sampleSize: Array.isArray(sampleSize) ? [...(sampleSize as number[])] : (sampleSize as number),
    scalingFactor,
    shiftFactor: shift === undefined || shift === null ? null : (shift as number),
    latentsMean: numbersOrNull(raw, 'latents_mean'),
    latentsStd: numbersOrNull(raw, 'latents_std'),
    forceUpcast: bool(raw, 'force_upcast', true),
    useQuantConv: bool(raw, 'use_quant_conv', true),
    usePostQuantConv: bool(raw, 'use_post_quant_conv', true),
    midBlockAddAttention: bool(raw, 'mid_block_add_attention', true),
  };
}

// ---- TorchScript sources ------------------------------------------------------------------------

const lines = (...ls: string[]): string => ls.join('\n') + '\n';

/** nn.Conv2d with square stride/padding as attributes (3×3 pad 1, 1×1 pad 0, 3×3 stride 2 pad 0). */
const CONV_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    return torch.conv2d(x, self.weight, self.bias, [self.stride, self.stride], [self.padding, self.padding])',
  ),
];

/** nn.GroupNorm(num_groups, C, eps, affine=True) → F.group_norm → aten::group_norm. */
const GROUP_NORM_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, True)',
  ),
];

/** The TorchScript expression of a diffusers activation (nn.SiLU, nn.Mish, nn.GELU(), nn.ReLU). */
function activation(act: KlActivation, x: string): string {
  switch (act) {
    case 'silu':
    case 'swish':
      return `torch.silu(${x})`;
    case 'mish':
      return `torch.mish(${x})`;
    case 'gelu':
      return `torch.gelu(${x})`;
    case 'relu':
      return `torch.relu(${x})`;
  }
}

/** ResnetBlock2D without a time embedding: (shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))))))) / 1. */
function resnetSources(act: KlActivation, shortcut: boolean): string[] {
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      '    h = self.norm1.forward(x)',
      `    h = ${activation(act, 'h')}`,
      '    h = self.conv1.forward(h)',
      '    h = self.norm2.forward(h)',
      `    h = ${activation(act, 'h')}`,
      '    h = self.conv2.forward(h)',
      // output_scale_factor is 1 in every VAE block: the division is exact, so it is left out.
      shortcut ? '    return self.conv_shortcut.forward(x) + h' : '    return x + h',
    ),
  ];
}

/**
 * Downsample2D(use_conv=True, padding=0): F.pad(x, (0, 1, 0, 1)) (one zero column on the right,
 * one zero row at the bottom) before the 3×3 stride-2 convolution, so odd sizes round up and even
 * ones halve, exactly as diffusers.
 */
const DOWNSAMPLE_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    x = torch.constant_pad_nd(x, [0, 1, 0, 1], 0.0)',
    '    return self.conv.forward(x)',
  ),
];

/**
 * Upsample2D(use_conv=True): F.interpolate(scale_factor=2, mode='nearest'), then a 3×3 conv. The
 * nearest ×2 upsampling copies each value into a 2×2 block; it is written as expand + reshape (the
 * same values bit for bit) because upsample_nearest2d has no bfloat16 CPU kernel before torch 2.1,
 * which diffusers works around by a float32 round trip.
 */
const UPSAMPLE_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    B = x.size(0)',
    '    C = x.size(1)',
    '    H = x.size(2)',
    '    W = x.size(3)',
    '    x = x.reshape([B, C, H, 1, W, 1]).expand([B, C, H, 2, W, 2]).reshape([B, C, H * 2, W * 2])',
    '    return self.conv.forward(x)',
  ),
];

/**
 * The mid-block Attention (heads = 1, dim_head = C, group norm, residual, bias) as AttnProcessor2_0
 * runs it: tokens are the H·W positions. 'sdpa' is scaled_dot_product_attention (what diffusers
 * calls on torch 2); 'math' is softmax(q·kᵀ/√C)·v for libtorch 1.13.
 */
function attentionSources(impl: AttentionImpl): string[] {
  const core =
    impl === 'sdpa'
      ? ['    a = torch.scaled_dot_product_attention(q, k, v)']
      : [
          '    a = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(-1)',
          '    a = torch.matmul(a, v)',
        ];
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      '    B = x.size(0)',
      '    C = x.size(1)',
      '    H = x.size(2)',
      '    W = x.size(3)',
      '    h = self.group_norm.forward(x.reshape([B, C, H * W])).transpose(1, 2)',
      '    q = self.to_q.forward(h).reshape([B, H * W, 1, C]).transpose(1, 2)',
      '    k = self.to_k.forward(h).reshape([B, H * W, 1, C]).transpose(1, 2)',
      '    v = self.to_v.forward(h).reshape([B, H * W, 1, C]).transpose(1, 2)',
      ...core,
      '    a = a.transpose(1, 2).reshape([B, H * W, C]).to(q.dtype)',
      '    a = getattr(self.to_out, "0").forward(a)',
      '    a = a.transpose(-1, -2).reshape([B, C, H, W])',
      // rescale_output_factor is 1: the division is exact and left out.
      '    return a + x',
    ),
  ];
}

// ---- spec helpers -------------------------------------------------------------------------------

const ZEROS: InitSpec = { kind: 'zeros' };
const int = intAttr;
const float = floatAttr;

/** A module whose TorchScript class name carries a hash of its signature (same name ⇒ same class). */
const mod = (base: string, parts: Partial<Omit<ModuleSpec, 'typeName'>>): ModuleSpec => hashedModuleSpec(`VaeKL_${base}`, parts);

/** A container (nn.ModuleList) of numbered children; the parent calls them by getattr. */
function moduleList(base: string, items: ModuleSpec[]): ModuleSpec {
  return mod(base, { children: items.map((spec, i) => ({ name: String(i), spec })) });
}

// The InitSpecs are only a usable start for buildModule's 'official' mode (smoke runs, benches with
// random weights); VAE.load builds with init 'empty' and overwrites every tensor from the folder.
function conv(inC: number, outC: number, k: number, o: { stride?: number; padding?: number } = {}): ModuleSpec {
  return mod('Conv2d', {
    params: [
      { name: 'weight', shape: [outC, inC, k, k], init: { kind: 'xavier_uniform', fanIn: inC * k * k, fanOut: outC * k * k } },
      { name: 'bias', shape: [outC], init: ZEROS },
    ],
    attributes: [int('stride', o.stride ?? 1), int('padding', o.padding ?? (k === 3 ? 1 : 0))],
    methods: CONV_SOURCES,
  });
}

function groupNorm(groups: number, channels: number, eps: number): ModuleSpec {
  return mod('GroupNorm', {
    params: [
      { name: 'weight', shape: [channels], init: { kind: 'ones' } },
      { name: 'bias', shape: [channels], init: ZEROS },
    ],
    attributes: [int('num_groups', groups), float('eps', eps)],
    methods: GROUP_NORM_SOURCES,
  });
}

function linear(inF: number, outF: number): ModuleSpec {
  return mod('Linear', {
    params: [
      { name: 'weight', shape: [outF, inF], init: { kind: 'xavier_uniform', fanIn: inF, fanOut: outF } },
      { name: 'bias', shape: [outF], init: ZEROS },
    ],
    methods: LINEAR_SOURCES,
  });
}

const EPS = 1e-6; // resnet_eps and the attention group norm's eps in every VAE block

function resnet(cfg: KlConfig, inC: number, outC: number): ModuleSpec {
  const g = cfg.normNumGroups;
  const shortcut = inC !== outC;
  return mod('ResnetBlock2D', {
    children: [
      { name: 'norm1', spec: groupNorm(g, inC, EPS) },
      { name: 'conv1', spec: conv(inC, outC, 3) },
      { name: 'norm2', spec: groupNorm(g, outC, EPS) },
      { name: 'conv2', spec: conv(outC, outC, 3) },
      ...(shortcut ? [{ name: 'conv_shortcut', spec: conv(inC, outC, 1) }] : []),
    ],
    methods: resnetSources(cfg.actFn, shortcut),
  });
}

function attention(cfg: KlConfig, C: number, impl: AttentionImpl): ModuleSpec {
  return mod('Attention', {
    children: [
      { name: 'group_norm', spec: groupNorm(cfg.normNumGroups, C, EPS) },
      { name: 'to_q', spec: linear(C, C) },
      { name: 'to_k', spec: linear(C, C) },
      { name: 'to_v', spec: linear(C, C) },
      // to_out = ModuleList([Linear, Dropout]); the dropout has no state and p = 0.
      { name: 'to_out', spec: moduleList('AttnOut', [linear(C, C)]) },
    ],
    attributes: [float('scale', 1 / Math.sqrt(C))],
    methods: attentionSources(impl),
  });
}

/** UNetMidBlock2D(num_layers=1): resnets.0, [attentions.0], resnets.1 (attentions registered first, as diffusers). */
function midBlock(cfg: KlConfig, C: number, impl: AttentionImpl): ModuleSpec {
  const attn = cfg.midBlockAddAttention;
  return mod('UNetMidBlock2D', {
    children: [
      ...(attn ? [{ name: 'attentions', spec: moduleList('MidAttentions', [attention(cfg, C, impl)]) }] : []),
      { name: 'resnets', spec: moduleList('MidResnets', [resnet(cfg, C, C), resnet(cfg, C, C)]) },
    ],
    methods: [
      lines(
        'def forward(self, x: Tensor) -> Tensor:',
        '    x = getattr(self.resnets, "0").forward(x)',
        ...(attn ? ['    x = getattr(self.attentions, "0").forward(x)'] : []),
        '    return getattr(self.resnets, "1").forward(x)',
      ),
    ],
  });
}

/** DownEncoderBlock2D / UpDecoderBlock2D: `layers` resnets, then the optional resampler. */
function block(cfg: KlConfig, kind: 'down' | 'up', inC: number, outC: number, layers: number, resample: boolean): ModuleSpec {
  const resnets = Array.from({ length: layers }, (_, i) => resnet(cfg, i === 0 ? inC : outC, outC));
  const samplerName = kind === 'down' ? 'downsamplers' : 'upsamplers';
  const sampler =
    kind === 'down'
      ? mod('Downsample2D', { children: [{ name: 'conv', spec: conv(outC, outC, 3, { stride: 2, padding: 0 }) }], methods: DOWNSAMPLE_SOURCES })
      : mod('Upsample2D', { children: [{ name: 'conv', spec: conv(outC, outC, 3) }], methods: UPSAMPLE_SOURCES });
  return mod(kind === 'down' ? 'DownEncoderBlock2D' : 'UpDecoderBlock2D', {
    children: [
      { name: 'resnets', spec: moduleList('Resnets', resnets) },
      ...(resample ? [{ name: samplerName, spec: moduleList('Samplers', [sampler]) }] : []),
    ],
    methods: [
      lines(
        'def forward(self, x: Tensor) -> Tensor:',
        ...resnets.map((_, i) => `    x = getattr(self.resnets, "${i}").forward(x)`),
        ...(resample ? [`    x = getattr(self.${samplerName}, "0").forward(x)`] : []),
        '    return x',
      ),
    ],
  });
}

/** The encoder's / decoder's tail: conv_norm_out → SiLU (always nn.SiLU, whatever act_fn) → conv_out. */
const TAIL = ['    x = self.conv_norm_out.forward(x)', '    x = torch.silu(x)', '    return self.conv_out.forward(x)'];

function encoder(cfg: KlConfig, impl: AttentionImpl): ModuleSpec {
  const ch = cfg.blockOutChannels;
  const n = ch.length;
  const blocks = ch.map((c, i) => block(cfg, 'down', i === 0 ? ch[0]! : ch[i - 1]!, c, cfg.layersPerBlock, i !== n - 1));
  const last = ch[n - 1]!;
  return mod('Encoder', {
    children: [
      { name: 'conv_in', spec: conv(cfg.inChannels, ch[0]!, 3) },
      { name: 'down_blocks', spec: moduleList('DownBlocks', blocks) },
      { name: 'mid_block', spec: midBlock(cfg, last, impl) },
      { name: 'conv_norm_out', spec: groupNorm(cfg.normNumGroups, last, EPS) },
      // double_z: mean and logvar channels.
      { name: 'conv_out', spec: conv(last, 2 * cfg.latentChannels, 3) },
    ],
    methods: [
      lines(
        'def forward(self, x: Tensor) -> Tensor:',
        '    x = self.conv_in.forward(x)',
        ...blocks.map((_, i) => `    x = getattr(self.down_blocks, "${i}").forward(x)`),
        '    x = self.mid_block.forward(x)',
        ...TAIL,
      ),
    ],
  });
}

function decoder(cfg: KlConfig, impl: AttentionImpl): ModuleSpec {
  const rev = [...cfg.blockOutChannels].reverse();
  const n = rev.length;
  // UpDecoderBlock2D i: prev_output_channel → reversed[i], layers_per_block + 1 resnets, upsample but the last.
  const blocks = rev.map((c, i) => block(cfg, 'up', i === 0 ? rev[0]! : rev[i - 1]!, c, cfg.layersPerBlock + 1, i !== n - 1));
  return mod('Decoder', {
    children: [
      { name: 'conv_in', spec: conv(cfg.latentChannels, rev[0]!, 3) },
      // Registration order is diffusers' (up_blocks is created before mid_block), so stateDict() lists keys as diffusers does.
      { name: 'up_blocks', spec: moduleList('UpBlocks', blocks) },
      { name: 'mid_block', spec: midBlock(cfg, rev[0]!, impl) },
      { name: 'conv_norm_out', spec: groupNorm(cfg.normNumGroups, rev[n - 1]!, EPS) },
      { name: 'conv_out', spec: conv(rev[n - 1]!, cfg.outChannels, 3) },
    ],
    methods: [
      lines(
        'def forward(self, x: Tensor) -> Tensor:',
        '    x = self.conv_in.forward(x)',
        '    x = self.mid_block.forward(x)',
        ...blocks.map((_, i) => `    x = getattr(self.up_blocks, "${i}").forward(x)`),
        ...TAIL,
      ),
    ],
  });
}

/**
 * The AutoencoderKL module tree for `cfg`: state-dict names and order exactly diffusers'
 * (encoder.*, decoder.*, quant_conv.*, post_quant_conv.*), methods `encode` and `decode`.
 * `attention`: 'math' (default; any libtorch) or 'sdpa' (libtorch ≥ 2.0, what diffusers runs).
 */
export function klModuleSpec(cfg: KlConfig, opts: { attention?: AttentionImpl } = {}): ModuleSpec {
  const impl = opts.attention ?? 'math';
  if (impl !== 'math' && impl !== 'sdpa') throw argError('range', `klModuleSpec: attention must be 'math' or 'sdpa', got ${JSON.stringify(impl)}`, 'E_OPTION');
  const L = cfg.latentChannels;
  const quant = cfg.useQuantConv;
  const postQuant = cfg.usePostQuantConv;
  return mod('AutoencoderKL', {
    children: [
      { name: 'encoder', spec: encoder(cfg, impl) },
      { name: 'decoder', spec: decoder(cfg, impl) },
      ...(quant ? [{ name: 'quant_conv', spec: conv(2 * L, 2 * L, 1) }] : []),
      ...(postQuant ? [{ name: 'post_quant_conv', spec: conv(L, L, 1) }] : []),
    ],
    methods: [
      lines(
        'def encode(self, x: Tensor) -> Tuple[Tensor, Tensor]:',
        '    h = self.encoder.forward(x)',
        ...(quant ? ['    h = self.quant_conv.forward(h)'] : []),
        '    mean, logvar = h.chunk(2, 1)',
        '    return mean, torch.clamp(logvar, -30.0, 20.0)',
      ),
      lines(
        'def decode(self, z: Tensor) -> Tensor:',
        ...(postQuant ? ['    z = self.post_quant_conv.forward(z)'] : []),
        '    return self.decoder.forward(z)',
      ),
    ],
  });
}
