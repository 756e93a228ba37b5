/**
 * Text to image: prompts → caption features (CaptionEncoder) → the any-step sampler with
 * classifier-free guidance against the null caption (sampler.ts) → DC-AE / SD-VAE decode (VAE).
 * The official counterpart is the loop of projects/sample/sample_t2i_geneval_ddp.py (github
 * WZDTHU/TiM; line numbers below are that file's):
 *
 *   prompts   caption.encode('unicode-escape').decode('utf-8')                    (l. 114)
 *   null      encode_prompt([""]) once, with the same tokenizer settings           (l. 79-83)
 *   y         encode_prompt(batch)[:, :L], L = the batch's longest caption mask    (l. 145-151)
 *   y_null    null[:, :L].expand(B, L, D)                                          (l. 153-154)
 *   z         randn(B, C, H/f, W/f), f the VAE's downsampling                     (l. 72-73, 138-141)
 *   sample    TransitionSchedule.sample(model, y, y_null, z, T_max=1, T_min=0, num_steps,
 *             cfg_scale, cfg_low=0, cfg_high=1, stochasticity_ratio=0, 'transition')  (l. 159-169, 231-238)
 *   decode    dc_ae_decode(latents · std + mean), slice_vae                        (l. 171)
 *
 * Defaults are the released GenEval settings (scripts/sample/t2i/sample_t2i_geneval.sh: 1024×1024,
 * --cfg-scale 2.5, --num-steps 4; the guidance window, stochasticity and sample type are the
 * script's argparse defaults), and the transport is the YAML's OT_FM (configs/t2i/tim_xl_p1_t2i.yaml).
 * Guidance applies for cfg_low·T_max < t < cfg_high·T_max, strictly (transition.py forward_with_cfg),
 * so the first step (t = T_max) is never guided: a 1-step sample is unguided whatever cfg, in the
 * official code as here.
 * The caption length L depends on the longest prompt of the batch, as in the official loop: TiM-T2I
 * has no caption mask, so the padded positions up to L enter the network, and an image depends on
 * its batch mates' lengths. Batches are `batchSize` prompts in order (default: all in one).
 *
 * Noise: the CPU generator seeded with `seed` draws z for every prompt at once (float32, cast to the
 * network's dtype and device), then, for a stochastic sampler, each batch's per-step draws; the
 * global generator is restored afterwards. So z of prompt i depends on (seed, i) only.
 */
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { argError, TorchError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
import type { DType, Device } from '../../torch/dtype.js';
import type { TiM } from '../network/model.js';
import type { CaptionEncoder } from '../../text/caption_encoder.js';
import { unicodeEscapeCaption } from '../../text/caption_transform.js';
import type { VAE } from '../../vae/vae.js';
import { OTFM } from '../transports/ot_fm.js';
import type { Transport } from '../transports/transport.js';
import { sample } from './sampler.js';
import type { SampleTypeInput } from './schedule.js';

/** The released GenEval sampling settings (scripts/sample/t2i/sample_t2i_geneval.sh). */
export const T2I_DEFAULTS = Object.freeze({
  height: 1024,
  width: 1024,
  steps: 4,
  cfg: 2.5,
  cfgLow: 0,
  cfgHigh: 1,
  stochasticity: 0,
  sampleType: 'transition' as const,
  seed: 0,
});

export interface TextToImageProgress {
  /** 0-based batch index, and how many batches there are */
  batch: number;
  batches: number;
  /** sampler steps done in this batch (1 … steps) */
  step: number;
  steps: number;
}

export interface TextToImageOptions {
  /** a T2I TiM (config.variant 't2i'); z is drawn in the dtype and on the device of its parameters */
  model: TiM;
  encoder: CaptionEncoder;
  vae: VAE;
  prompts: readonly string[];
  /** image size in pixels (default 1024 × 1024); multiples of vae.downsampleFactor · model patch size */
  height?: number;
  width?: number;
  /** sampler steps = NFE without guidance (default 4) */
  steps?: number;
  /** guidance scale, 1 = none (default 2.5) */
  cfg?: number;
  /** guidance applies for cfgLow·tMax < t < cfgHigh·tMax (default 0, 1) */
  cfgLow?: number;
  cfgHigh?: number;
  /** OT-FM stochasticity ratio (default 0) */
  stochasticity?: number;
  sampleType?: SampleTypeInput;
  /** default: OT_FM as configs/t2i/tim_xl_p1_t2i.yaml (sampling reads only its time range and step) */
  transport?: Transport;
  /** the time grid's ends (default: the transport's, 1 and 0 for OT-FM as the official script passes) */
  tMax?: number;
  tMin?: number;
  /** noise seed (default 0) */
  seed?: number | bigint;
  /** prompts per sampler call (default: all of them); guidance doubles the network's batch */
  batchSize?: number;
  /**
   * 'unicode-escape' (default): the prompt transform of the official GenEval sampler and of the
   * training captions (tim/data/t2i_data.py); 'none': prompts as given (the DPG-Bench and MJHQ
   * samplers pass them unchanged). Only non-ASCII characters, backslashes and \t \n \r differ.
   */
  captionTransform?: 'unicode-escape' | 'none';
  /** decode this many latents at a time (the official --slice_vae is 1; default: the whole batch) */
  vaeSliceSize?: number;
  /** called after every sampler step */
  onProgress?: (p: TextToImageProgress) => void;
}

export interface TextToImageResult {
  /** (N, 3, H, W) float32 on the CPU, clamped to [-1, 1], in prompt order; the caller's to dispose */
  images: Tensor;
  /** the caption length L of each batch (the longest caption mask in it) */
  captionLengths: number[];
}

const OWNER = 'textToImage';
const OPTION_KEYS = [
  'model', 'encoder', 'vae', 'prompts', 'height', 'width', 'steps', 'cfg', 'cfgLow', 'cfgHigh', 'stochasticity', 'sampleType',
  'transport', 'tMax', 'tMin', 'seed', 'batchSize', 'captionTransform', 'vaeSliceSize', 'onProgress',
] as const;

/** Everything textToImage needs, checked before anything is encoded or drawn. */
interface Plan {
  prompts: string[];
  latentShape: [number, number, number];
  steps: number;
  cfg: number;
  batchSize: number;
  seed: number | bigint;
  dtype: DType;
  device: Device;
  transport: Transport;
}

function plan(o: TextToImageOptions): Plan {
  if (o === null || typeof o !== 'object') throw argError('type', `${OWNER}: options must be an object`);
  check.knownKeys(o, OPTION_KEYS, OWNER);
  const { model, encoder, vae } = o;
  const cfg = model?.config as { variant?: unknown } | undefined;
  if (!model || typeof model.forward !== 'function' || !cfg) throw argError('type', `${OWNER}: model must be a TiM`, 'E_ARG');
  if (cfg.variant !== 't2i') throw argError('type', `${OWNER}: model must be a text-to-image TiM (variant 't2i'), got a ${String(cfg.variant).toUpperCase()} model`, 'E_MODEL');
  if (!encoder || typeof encoder.encode !== 'function' || !encoder.config) throw argError('type', `${OWNER}: encoder must be a CaptionEncoder`, 'E_ARG');
  if (!vae || typeof vae.decodeLatents !== 'function') throw argError('type', `${OWNER}: vae must be a VAE`, 'E_ARG');
  for (const [what, m] of [['model', model], ['encoder', encoder], ['vae', vae]] as const) {
    if (m.isDisposed) throw new TorchError(`${OWNER}: the ${what} was disposed`, 'E_DISPOSED');
  }
  const net = model.config;
  // The pieces must fit each other: caption width, latent channels.
  if (encoder.config.hiddenSize !== net.capFeatDim) {
    throw argError('range', `${OWNER}: the caption encoder gives ${encoder.config.hiddenSize}-wide features but the model's cap_feat_dim is ${net.capFeatDim}: this text encoder does not belong to this model`, 'E_SHAPE');
  }
  if (vae.latentChannels !== net.inChannels) {
    throw argError('range', `${OWNER}: the VAE has ${vae.latentChannels} latent channels but the model's in_channels is ${net.inChannels}: this VAE does not belong to this model`, 'E_SHAPE');
  }

  if (!Array.isArray(o.prompts) || o.prompts.length === 0) throw argError('type', `${OWNER}: prompts must be a non-empty array of strings`, 'E_ARG');
  o.prompts.forEach((p, i) => {
    if (typeof p !== 'string') throw argError('type', `${OWNER}: prompts[${i}] must be a string, got ${check.describe(p)}`, 'E_ARG');
  });
  const transform = check.oneOf(o.captionTransform ?? 'unicode-escape', 'captionTransform', OWNER, ['unicode-escape', 'none'] as const);
  const prompts = transform === 'unicode-escape' ? o.prompts.map(unicodeEscapeCaption) : [...o.prompts];

  const f = vae.downsampleFactor * net.patchSize;
  const side = (v: unknown, name: 'height' | 'width'): number => {
    const n = check.integer(v ?? T2I_DEFAULTS[name], name, OWNER, 1);
    if (n % f !== 0) {
      throw argError('range', `${OWNER}: ${name} must be a multiple of ${f} (VAE downsampling ${vae.downsampleFactor} × patch size ${net.patchSize}), got ${n}`, 'E_SHAPE');
    }
    return n;
  };
  const H = side(o.height, 'height');
  const W = side(o.width, 'width');

  const seed = o.seed ?? T2I_DEFAULTS.seed;
  if (typeof seed !== 'bigint') check.integer(seed, 'seed', OWNER, 0);

  const { dtype, device } = parameterPlacement(model);
  return {
    prompts,
    latentShape: [net.inChannels, H / vae.downsampleFactor, W / vae.downsampleFactor],
    steps: check.integer(o.steps ?? T2I_DEFAULTS.steps, 'steps', OWNER, 1),
    cfg: check.number(o.cfg ?? T2I_DEFAULTS.cfg, 'cfg', OWNER),
    batchSize: check.integer(o.batchSize ?? prompts.length, 'batchSize', OWNER, 1),
    seed,
    dtype,
    device,
    transport: o.transport ?? new OTFM({ pMean: 0.0, pStd: 1.6, sigmaD: 1.0 }),
  };
}

/** The dtype and device of the model's parameters (what its forward expects x in). */
function parameterPlacement(model: TiM): { dtype: DType; device: Device } {
  const ps = model.parameters();
  try {
    const p = ps[0];
    if (!p) throw new TorchError(`${OWNER}: the model has no parameters`, 'E_VALUE');
    return { dtype: p.dtype, device: p.device };
  } finally {
    for (const p of ps) p.dispose();
  }
}

/**
 * The official caption inputs of one batch: y = features[:, :L] and y_null = null[:, :L] expanded
 * to the batch, L = the longest caption mask of the batch; both in the network's dtype and device.
 */
export function captionConditions(
  features: Tensor, attentionMask: Tensor, nullFeatures: Tensor, o: { dtype: DType; device: Device },
): { y: Tensor; yNull: Tensor; length: number } {
  return torch.scope(() => {
    const B = features.shape[0]!;
    const length = attentionMask.sum(-1).max().item();
    if (length < 1) throw new TorchError(`${OWNER}: a batch of captions without a single token (the tokenizer adds <bos>; is the tokenizer right?)`, 'E_VALUE');
    const y = features.narrow(1, 0, length).to({ dtype: o.dtype, device: o.device });
    const yNull = nullFeatures.narrow(1, 0, length).to({ dtype: o.dtype, device: o.device }).expand(B, length, nullFeatures.shape[2]!);
    return { y, yNull, length };
  });
}

/**
 * Samples one image per prompt (see the file comment). Runs without autograd and frees every
 * intermediate; returns the images (the caller's) and each batch's caption length. Bad options
 * are typed errors before anything runs: E_ARG / E_OPTION, E_MODEL (not a T2I model), E_SHAPE
 * (a height or width that is not a multiple of the VAE's downsampling × the patch size; an encoder
 * or a VAE that does not fit the model).
 */
export function textToImage(o: TextToImageOptions): TextToImageResult {
  const p = plan(o);
  const { model, encoder, vae } = o;
  const N = p.prompts.length;
  const batches = Math.ceil(N / p.batchSize);
  const stochastic = (o.stochasticity ?? T2I_DEFAULTS.stochasticity) > 0;
  const saved = torch.getRngState();
  const parts: Tensor[] = [];
  const captionLengths: number[] = [];
  let nullCaption: { features: Tensor; attentionMask: Tensor } | null = null;
  let zAll: Tensor | null = null;
  try {
    torch.manualSeed(p.seed);
    zAll = torch.randn([N, ...p.latentShape]);
    // The null caption, once: the encoding of "" (l. 79-83), with the same maxLength as the prompts.
    nullCaption = encoder.encode(['']);
    for (let b = 0; b < batches; b++) {
      const start = b * p.batchSize;
      const count = Math.min(p.batchSize, N - start);
      const batch = p.prompts.slice(start, start + count);
      const { images, length } = torch.scope(() => {
        const enc = encoder.encode(batch);
        const { y, yNull, length } = captionConditions(enc.features, enc.attentionMask, nullCaption!.features, p);
        const z = zAll!.narrow(0, start, count).to({ dtype: p.dtype, device: p.device });
        const noise = stochastic ? torch.randn([p.steps, count, ...p.latentShape]).to({ dtype: p.dtype, device: p.device }) : undefined;
        const out = sample(model, p.transport, {
          z, y, yNull, numSteps: p.steps, cfgScale: p.cfg,
          cfgLow: o.cfgLow ?? T2I_DEFAULTS.cfgLow, cfgHigh: o.cfgHigh ?? T2I_DEFAULTS.cfgHigh,
          stochasticityRatio: o.stochasticity ?? T2I_DEFAULTS.stochasticity,
          sampleType: o.sampleType ?? T2I_DEFAULTS.sampleType,
          ...(o.tMax !== undefined ? { tMax: o.tMax } : {}),
          ...(o.tMin !== undefined ? { tMin: o.tMin } : {}),
          ...(noise ? { noise } : {}),
          // the VAE applies the official latent normalisation itself (dc_ae_decode / sd_vae_decode)
          decoder: (latents: Tensor) => vae.decodeLatents(latents, o.vaeSliceSize === undefined ? {} : { sliceSize: o.vaeSliceSize }),
          onStep: o.onProgress ? (s) => o.onProgress!({ batch: b, batches, step: s.i + 1, steps: p.steps }) : undefined,
        });
        return { images: out.to({ device: 'cpu', dtype: 'float32' }).clamp(-1, 1), length };
      });
      parts.push(images);
      captionLengths.push(length);
    }
    return { images: parts.length === 1 ? parts.pop()! : torch.cat(parts, 0), captionLengths };
  } finally {
    torch.setRngState(saved);
    for (const t of parts) t.dispose();
    zAll?.dispose();
    nullCaption?.features.dispose();
    nullCaption?.attentionMask.dispose();
  }
}
