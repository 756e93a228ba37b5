/**
 * `VAE`: the autoencoders TiM's released checkpoints sample in (SD-VAE = diffusers AutoencoderKL,
 * DC-AE = diffusers AutoencoderDC), loaded from a diffusers model folder and run as in-process
 * TorchScript modules (lib/vae/kl.ts, lib/vae/dc.ts), with the official TiM code's latent
 * normalisation (tim/models/vae/__init__.py, sd_vae.py, dc_ae.py):
 *
 *   const vae = VAE.load('sd-vae-ft-ema');                 // config.json + diffusion_pytorch_model.safetensors
 *   const latents = vae.encodeLatents(images);             // sd_vae_encode: (posterior.sample() − mean) / std
 *   const images = vae.decodeLatents(latents, { sliceSize: 1 });  // sd_vae_decode(slice_vae=True)
 *
 * The official wrappers (MyAutoencoderKL / MyAutoencoderDC) add `bn = BatchNorm2d(latent_channels,
 * eps=1e-4, affine=False)` whose running statistics *are* the normalisation: mean = running_mean,
 * std = sqrt(running_var) (the BatchNorm eps is not used by the helpers). Without saved statistics
 * (a plain diffusers folder) init_bn sets running_mean = 0, running_var = 1 / scaling_factor², so
 * latents = z · scaling_factor, the usual diffusers scaling.
 */
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/tensor.js';
import { TorchError, argError } from '../torch/errors.js';
import * as check from '../torch/check.js';
import { isFloating, normalizeDevice, type Device } from '../torch/dtype.js';
import { buildModule, defaultAttention } from '../torch/modules/build.js';
import type { AttentionImpl } from '../torch/modules/sources.js';
import type { ModuleSpec } from '../torch/modules/spec.js';
import { loadStrict, openFolderWeights, readDiffusersFolder, type DiffusersFolder } from './config.js';
import { dcFacts, dcModuleSpec, parseDcConfig } from './dc.js';
import { klDownsampleFactor, klModuleSpec, parseKlConfig } from './kl.js';

export type VaeFamily = 'AutoencoderKL' | 'AutoencoderDC';
export type VaeDType = 'float32' | 'bfloat16' | 'float16';
export const VAE_FAMILIES: readonly VaeFamily[] = ['AutoencoderKL', 'AutoencoderDC'];

export interface VaeLoadOptions {
  /** The module's dtype (default float32, what the official sampler uses for the VAE). */
  dtype?: VaeDType;
  /** 'cpu' (default), 'cuda', 'cuda:N'. */
  device?: Device | string;
  /** 'auto' (default): scaled_dot_product_attention where this libtorch has it (2.x), else the math path. */
  attention?: AttentionImpl | 'auto';
}

export interface VaeEncodeLatentsOptions {
  /** KL: draw z = mean + exp(0.5·logvar)·noise like the official sd_vae_encode (default true); false: z = mean. DC has no posterior. */
  sample?: boolean;
  /** The standard-normal noise (the posterior mean's shape); default: drawn by torch.randn. */
  noise?: Tensor;
  /** Draw the noise on the CPU from this seed, leaving the global CPU generator as it was. */
  seed?: number;
}

export interface VaeDecodeOptions {
  /** Decode this many latents at a time and concatenate (the official slice_vae is 1); default: the whole batch. */
  sliceSize?: number;
}

/** The BatchNorm statistics keys of the official TiM wrappers (MyAutoencoderKL / MyAutoencoderDC). */
export const BN_KEYS = ['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked'] as const;

/** What VAE.load needs from a family: its module tree and the numbers the front end reports. */
interface FamilyPlan {
  spec: ModuleSpec;
  inChannels: number;
  latentChannels: number;
  downsampleFactor: number;
  scalingFactor: number;
  shiftFactor: number;
}

function planFor(folder: DiffusersFolder, attention: AttentionImpl): FamilyPlan {
  switch (folder.className) {
    case 'AutoencoderKL': {
      const cfg = parseKlConfig(folder.config);
      return {
        spec: klModuleSpec(cfg, { attention }),
        inChannels: cfg.inChannels,
        latentChannels: cfg.latentChannels,
        downsampleFactor: klDownsampleFactor(cfg),
        scalingFactor: cfg.scalingFactor,
        shiftFactor: cfg.shiftFactor ?? 0,
      };
    }
    case 'AutoencoderDC': {
      const cfg = parseDcConfig(folder.config);
      const facts = dcFacts(cfg);
      return {
        spec: dcModuleSpec(cfg, { attention }),
        inChannels: cfg.inChannels,
        latentChannels: facts.latentChannels,
        downsampleFactor: facts.downsampleFactor,
        scalingFactor: facts.scalingFactor,
        // AutoencoderDC has no shift_factor.
        shiftFactor: 0,
      };
    }
    default:
      throw new TorchError(
        `VAE.load: '${folder.dir}/config.json' has _class_name ${JSON.stringify(folder.className || null)}; known: ${VAE_FAMILIES.join(', ')}`,
        'E_VAE_CLASS',
      );
  }
}

const OWNER = 'VAE';

export class VAE implements Disposable {
  readonly family: VaeFamily;
  /** config.json's scaling_factor (diffusers' default 0.18215 for AutoencoderKL when absent). */
  readonly scalingFactor: number;
  /** config.json's shift_factor, 0 when it has none. Reported only: the official normalisation is the BatchNorm statistics. */
  readonly shiftFactor: number;
  readonly inChannels: number;
  readonly latentChannels: number;
  /** Image side / latent side (8 for the SD-VAE, 32 for DC-AE f32). */
  readonly downsampleFactor: number;
  readonly dtype: VaeDType;
  readonly device: Device;
  /** True when the weights carried the official wrapper's bn.running_mean / bn.running_var. */
  readonly hasBatchNormStats: boolean;
  /** The TorchScript module (diffusers' state-dict names; methods encode, decode). */
  readonly module: torch.jit.ScriptModule;
  /** (1, C, 1, 1) float32 on `device`: the official `mean` and `std`. */
  private readonly latentMean: Tensor;
  private readonly latentStd: Tensor;

  private constructor(
    module: torch.jit.ScriptModule, family: VaeFamily, plan: FamilyPlan, dtype: VaeDType, device: Device,
    stats: { mean: Tensor; std: Tensor; fromWeights: boolean },
  ) {
    this.module = module;
    this.family = family;
    this.scalingFactor = plan.scalingFactor;
    this.shiftFactor = plan.shiftFactor;
    this.inChannels = plan.inChannels;
    this.latentChannels = plan.latentChannels;
    this.downsampleFactor = plan.downsampleFactor;
    this.dtype = dtype;
    this.device = device;
    this.latentMean = stats.mean;
    this.latentStd = stats.std;
    this.hasBatchNormStats = stats.fromWeights;
  }

  /**
   * Loads a diffusers VAE folder: `config.json` (`_class_name` AutoencoderKL or AutoencoderDC) and
   * `diffusion_pytorch_model.safetensors` (or `.bin`). Every tensor must fit (strict), except the
   * official wrapper's `bn.*` statistics, which become the latent normalisation.
   */
  static load(dir: string, opts: VaeLoadOptions = {}): VAE {
    check.knownKeys(opts, ['dtype', 'device', 'attention'], 'VAE.load');
    const dtype = check.oneOf(opts.dtype ?? 'float32', 'dtype', 'VAE.load', ['float32', 'bfloat16', 'float16'] as const);
    const device = normalizeDevice(opts.device ?? 'cpu');
    const attention =
      opts.attention === undefined || opts.attention === 'auto'
        ? defaultAttention()
        : check.oneOf(opts.attention, 'attention', 'VAE.load', ['math', 'sdpa'] as const);
    if (attention === 'sdpa' && !torch.hasOp('aten::scaled_dot_product_attention')) {
      throw argError('range', `VAE.load: attention 'sdpa' needs libtorch >= 2.0 (this is ${torch.buildInfo().torchVersion}); use 'math' or 'auto'`, 'E_OPTION');
    }
    if (dtype === 'float16' && device === 'cpu' && !torch.libtorchAtLeast(2, 0)) {
      // libtorch 1.13 has no float16 CPU convolution kernels: refuse now rather than at the first decode.
      throw argError('type', `VAE.load: float16 on the CPU needs libtorch >= 2.0 (this is ${torch.buildInfo().torchVersion}); use float32 or bfloat16, or a CUDA device`, 'E_DTYPE');
    }
    const folder = readDiffusersFolder(dir, 'VAE.load');
    const plan = planFor(folder, attention);
    const family = folder.className as VaeFamily;

    const weights = openFolderWeights(folder, 'VAE.load');
    let module: torch.jit.ModuleBuilder | null = null;
    let stats: { mean: Tensor; std: Tensor; fromWeights: boolean } | null = null;
    try {
      const bn: Record<string, Tensor> = {};
      try {
        for (const k of BN_KEYS) if (weights.keys().includes(k)) bn[k] = weights.take(k);
        stats = latentStats(bn, plan, folder.weightsPath);
      } finally {
        for (const t of Object.values(bn)) t.dispose();
      }
      module = buildModule(plan.spec, { init: 'empty' });
      loadStrict(module, weights, folder.dir, BN_KEYS, 'VAE.load');
      module.eval();
      if (device !== 'cpu' || dtype !== 'float32') module.to({ device, dtype });
      if (device !== 'cpu') {
        const moved = { mean: stats.mean.to(device), std: stats.std.to(device), fromWeights: stats.fromWeights };
        stats.mean.dispose();
        stats.std.dispose();
        stats = moved;
      }
      return new VAE(module, family, plan, dtype, device, stats);
    } catch (e) {
      module?.dispose();
      stats?.mean.dispose();
      stats?.std.dispose();
      throw e;
    } finally {
      weights.close();
    }
  }

  // ---- the autoencoder (diffusers' raw latent space) ----------------------------------------------

  /**
   * Images (B, 3, H, W) in [−1, 1], H and W multiples of downsampleFactor → the raw latent
   * (diffusers' space, no scaling). KL: the posterior `mean` and `logvar` (clamped to [−30, 20] as
   * DiagonalGaussianDistribution does); DC: `mean` is the latent, no logvar. The images are moved
   * to the VAE's device and dtype; results are in its dtype on its device.
   */
  encode(images: Tensor): { mean: Tensor; logvar?: Tensor } {
    this.checkImages(images, 'encode');
    return torch.scope(() => torch.noGrad(() => this.rawEncode(this.prepare(images))));
  }

  /**
   * Raw latents (B, latentChannels, h, w) → images (B, 3, h·f, w·f), nominally in [−1, 1] but not
   * clamped (what diffusers' decode returns). `sliceSize` decodes that many at a time (the official
   * slice_vae) and concatenates: less peak memory, same values.
   */
  decode(z: Tensor, opts: VaeDecodeOptions = {}): Tensor {
    this.checkLatents(z, 'decode');
    const slice = this.sliceSize(opts, 'decode');
    return torch.scope(() => torch.noGrad(() => this.rawDecode(this.prepare(z), slice)));
  }

  // ---- the official normalisation ----------------------------------------------------------------

  /** (z − mean) / std: raw latents → the space TiM models are trained and sampled in. Keeps z's dtype. */
  toLatents(z: Tensor): Tensor {
    this.checkLatents(z, 'toLatents');
    return torch.scope(() => torch.noGrad(() => this.normalise(z)));
  }

  /** latents · std + mean: TiM's latents → the raw space decode takes. Keeps the input's dtype. */
  fromLatents(latents: Tensor): Tensor {
    this.checkLatents(latents, 'fromLatents');
    return torch.scope(() => torch.noGrad(() => this.denormalise(latents)));
  }

  /**
   * The official sd_vae_encode / dc_ae_encode: images → normalised latents. KL samples the
   * posterior by default (z = mean + exp(0.5·logvar)·noise, as `latent_dist.sample()`); `sample:
   * false` takes the mean. The noise is `noise` when given, else drawn (from `seed` on the CPU, the
   * global generator untouched, when given; else torch.randn on the VAE's device).
   */
  encodeLatents(images: Tensor, opts: VaeEncodeLatentsOptions = {}): Tensor {
    check.knownKeys(opts, ['sample', 'noise', 'seed'], 'VAE.encodeLatents');
    this.checkImages(images, 'encodeLatents');
    const sample = opts.sample === undefined ? this.family === 'AutoencoderKL' : check.bool(opts.sample, 'sample', 'VAE.encodeLatents');
    if (opts.noise !== undefined) check.floatTensor(opts.noise, 'noise', 'VAE.encodeLatents');
    if (opts.seed !== undefined) check.integer(opts.seed, 'seed', 'VAE.encodeLatents', 0);
    return torch.scope(() => torch.noGrad(() => {
      const { mean, logvar } = this.rawEncode(this.prepare(images));
      let z = mean;
      if (sample && logvar !== undefined) {
        const noise = this.posteriorNoise(mean, opts);
        z = mean.add(logvar.mul(0.5).exp().mul(noise));
      }
      return this.normalise(z);
    }));
  }

  /** The official sd_vae_decode / dc_ae_decode: normalised latents → images (sliceSize = slice_vae's chunk). */
  decodeLatents(latents: Tensor, opts: VaeDecodeOptions = {}): Tensor {
    this.checkLatents(latents, 'decodeLatents');
    const slice = this.sliceSize(opts, 'decodeLatents');
    return torch.scope(() => torch.noGrad(() => this.rawDecode(this.prepare(this.denormalise(latents)), slice)));
  }

  /** The official `mean` and `std` as (1, C, 1, 1) float32 copies (the caller disposes them). */
  latentStats(): { mean: Tensor; std: Tensor } {
    return { mean: this.latentMean.clone(), std: this.latentStd.clone() };
  }

  dispose(): void {
    if (this.module.isDisposed) return;
    this.module.dispose();
    this.latentMean.dispose();
    this.latentStd.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  get isDisposed(): boolean {
    return this.module.isDisposed;
  }

  // ---- internals (inputs already checked, inside a scope and noGrad) -----------------------------

  private prepare(x: Tensor): Tensor {
    return x.dtype === this.dtype && x.device === this.device ? x : x.to({ device: this.device, dtype: this.dtype });
  }

  private rawEncode(x: Tensor): { mean: Tensor; logvar?: Tensor } {
    if (this.family === 'AutoencoderKL') {
      const [mean, logvar] = this.module.call<[Tensor, Tensor]>('encode', x);
      return { mean, logvar };
    }
    return { mean: this.module.call<Tensor>('encode', x) };
  }

  private rawDecode(z: Tensor, slice: number | null): Tensor {
    const B = z.shape[0]!;
    if (slice === null || slice >= B) return this.module.call<Tensor>('decode', z);
    // The official slice_vae: decode chunks one after another, keeping only each chunk's images.
    const parts: Tensor[] = [];
    for (let i = 0; i < B; i += slice) {
      parts.push(torch.scope(() => this.module.call<Tensor>('decode', z.narrow(0, i, Math.min(slice, B - i)))));
    }
    return torch.cat(parts, 0);
  }

  private normalise(z: Tensor): Tensor {
    const zz = z.device === this.device ? z : z.to(this.device);
    const out = zz.to('float32').sub(this.latentMean).div(this.latentStd);
    return out.dtype === z.dtype ? out : out.to(z.dtype);
  }

  private denormalise(latents: Tensor): Tensor {
    const l = latents.device === this.device ? latents : latents.to(this.device);
    const out = l.to('float32').mul(this.latentStd).add(this.latentMean);
    return out.dtype === latents.dtype ? out : out.to(latents.dtype);
  }

  private posteriorNoise(mean: Tensor, opts: VaeEncodeLatentsOptions): Tensor {
    if (opts.noise !== undefined) {
      check.sameShape(opts.noise, mean, 'noise', 'the posterior mean', 'VAE.encodeLatents');
      return opts.noise.to({ device: this.device, dtype: mean.dtype });
    }
    if (opts.seed !== undefined) {
      const saved = torch.getRngState('cpu');
      try {
        torch.manualSeed(opts.seed);
        return torch.randn(mean.shape).to({ device: this.device, dtype: mean.dtype });
      } finally {
        torch.setRngState(saved, 'cpu');
      }
    }
    return torch.randn(mean.shape, { device: this.device, dtype: mean.dtype });
  }

  private sliceSize(opts: VaeDecodeOptions, what: string): number | null {
    if (opts === null || typeof opts !== 'object') throw argError('type', `${OWNER}.${what}: options must be an object`);
    check.knownKeys(opts, ['sliceSize'], `${OWNER}.${what}`);
    return opts.sliceSize === undefined ? null : check.integer(opts.sliceSize, 'sliceSize', `${OWNER}.${what}`, 1);
  }

  private live(what: string): void {
    if (this.module.isDisposed) throw new TorchError(`${OWNER}.${what}: this VAE was disposed`, 'E_DISPOSED');
  }

  private checkImages(x: unknown, what: string): void {
    this.live(what);
    const t = check.floatTensor(x, 'images', `${OWNER}.${what}`);
    const s = t.shape;
    const f = this.downsampleFactor;
    if (s.length !== 4 || s[0]! < 1 || s[1] !== this.inChannels || s[2]! < 1 || s[3]! < 1 || s[2]! % f !== 0 || s[3]! % f !== 0) {
      throw argError(
        'range',
        `${OWNER}.${what}: images must be (B, ${this.inChannels}, H, W) with B ≥ 1 and H, W positive multiples of ${f}, got [${s.join(', ')}]`,
        'E_SHAPE',
      );
    }
  }

  private checkLatents(x: unknown, what: string): void {
    this.live(what);
    const t = check.floatTensor(x, 'latents', `${OWNER}.${what}`);
    const s = t.shape;
    if (s.length !== 4 || s[0]! < 1 || s[1] !== this.latentChannels || s[2]! < 1 || s[3]! < 1) {
      throw argError('range', `${OWNER}.${what}: latents must be (B, ${this.latentChannels}, h, w) with B, h, w ≥ 1, got [${s.join(', ')}]`, 'E_SHAPE');
    }
  }
}

/**
 * The official normalisation from the wrapper's BatchNorm buffers when the weights carry them,
 * else what init_bn sets: running_mean = 0, running_var = 1 / scaling_factor² (computed as the
 * official float32 ops do: ones / sf², then sqrt).
 */
function latentStats(bn: Record<string, Tensor>, plan: FamilyPlan, path: string): { mean: Tensor; std: Tensor; fromWeights: boolean } {
  const C = plan.latentChannels;
  const rm = bn['bn.running_mean'];
  const rv = bn['bn.running_var'];
  if ((rm === undefined) !== (rv === undefined)) {
    throw new TorchError(`VAE.load: '${path}' has ${rm ? 'bn.running_mean' : 'bn.running_var'} without ${rm ? 'bn.running_var' : 'bn.running_mean'}`, 'E_VAE_WEIGHTS');
  }
  return torch.scope(() => {
    if (rm === undefined || rv === undefined) {
      return torch.keep({
        mean: torch.zeros([1, C, 1, 1]),
        std: torch.ones([1, C, 1, 1]).div(plan.scalingFactor ** 2).sqrt(),
        fromWeights: false,
      });
    }
    for (const [k, t] of [['bn.running_mean', rm], ['bn.running_var', rv]] as const) {
      if (t.shape.length !== 1 || t.shape[0] !== C) {
        throw new TorchError(`VAE.load: '${path}': ${k} has shape [${t.shape.join(', ')}], expected [${C}] (latent_channels)`, 'E_VAE_WEIGHTS');
      }
      if (!isFloating(t.dtype)) {
        throw new TorchError(`VAE.load: '${path}': ${k} must be a floating-point tensor, got ${t.dtype}`, 'E_VAE_WEIGHTS');
      }
    }
    const mean = rm.to('float32').reshape([1, C, 1, 1]).clone();
    const std = rv.to('float32').sqrt().reshape([1, C, 1, 1]);
    if (std.le(0).anyTrue() || !std.isfinite().allTrue() || !mean.isfinite().allTrue()) {
      throw new TorchError(`VAE.load: '${path}': bn.running_var must be positive and the statistics finite`, 'E_VAE_WEIGHTS');
    }
    return torch.keep({ mean, std, fromWeights: true });
  });
}
