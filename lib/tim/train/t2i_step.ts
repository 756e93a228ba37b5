/**
 * The text-to-image parts of a training step (projects/train/trainer_t2i.py, l. "for batch in
 * train_dataloader"): the frozen VAE and caption encoder run online, as the official trainer does
 * (it has no cached-feature path), and the inputs of the transition loss in the official order:
 *
 *   batch_latent = encode_func(batch_image)          VAE.encodeLatents (DC-AE: no draw; SD-VAE: posterior sample)
 *   noises       = torch.randn_like(batch_latent)
 *   mask         = torch.rand(batch_size) < model.proportion_empty_prompts      (CPU generator)
 *   captions     = "" where mask, else the caption
 *   feat, mask   = encode_prompt(captions)           CaptionEncoder (bf16, max_seq_length, last or penultimate)
 *   L            = the longest caption mask of the batch
 *   y = feat[:, :L];  y_null = null_cap_feat[:, :L].expand(B, L, D)   (null_cap_feat: encode_prompt([""]))
 *   loss(model(x, y), ema(x, y), null(x, y_null))
 *
 * The REPA target (the RADIO encoder on the images) is not computed, as for C2I here: proj loss
 * is 0 (docs/training.md).
 */
import * as torch from '../../torch/index.js';
import { TorchError } from '../../torch/errors.js';
import type { Tensor } from '../../torch/tensor.js';
import type { Device } from '../../torch/dtype.js';
import { CaptionEncoder } from '../../text/caption_encoder.js';
import { VAE } from '../../vae/vae.js';
import { captionConditions } from '../sampling/text_to_image.js';
import type { TrainConfig } from './config.js';

/** The frozen encoders of a T2I run and the null caption. */
export interface T2IParts {
  encoder: CaptionEncoder;
  vae: VAE;
  /** encode_prompt([""]): (1, max_seq_length, D) float32, kept */
  nullFeatures: Tensor;
  /** captions seen and captions replaced by "" so far in this process (the measured empty-prompt proportion) */
  stats: { captions: number; empty: number };
  dispose(): void;
}

export interface T2IPartsOptions {
  /** a Gemma-3 folder or a loaded CaptionEncoder (the caller's); default model.text_encoder_dir */
  textEncoder?: string | CaptionEncoder;
  /** a diffusers VAE folder or a loaded VAE (the caller's); default model.vae_dir */
  vae?: string | VAE;
}

function cfgError(msg: string): TorchError {
  return new TorchError(`training config: ${msg}`, 'E_CONFIG');
}

/**
 * Loads (or takes) the caption encoder (bfloat16 as the official load_text_encoder) and the VAE
 * (float32 as the official get_dc_ae / get_sd_vae) and checks that they fit the network.
 */
export function loadT2IParts(config: TrainConfig, o: T2IPartsOptions, device: Device): T2IParts {
  const net = config.network;
  if (net.variant !== 't2i') throw cfgError('loadT2IParts: the network is not text-to-image');
  const c = config.t2i;
  const owned: { dispose(): void }[] = [];
  try {
    let encoder: CaptionEncoder;
    if (o.textEncoder instanceof CaptionEncoder) encoder = o.textEncoder;
    else {
      const dir = o.textEncoder ?? c.textEncoderDir;
      if (typeof dir !== 'string' || dir === '') throw cfgError('a text-to-image run needs the caption encoder: model.text_encoder_dir or tim train --text-encoder DIR');
      encoder = CaptionEncoder.load(dir, { maxLength: c.maxSeqLength, dtype: 'bfloat16', device, hiddenState: c.useLastHiddenState ? 'last' : 'penultimate' });
      owned.push(encoder);
    }
    let vae: VAE;
    if (o.vae instanceof VAE) vae = o.vae;
    else {
      const dir = o.vae ?? c.vaeDir;
      if (typeof dir !== 'string' || dir === '') throw cfgError('a text-to-image run needs the VAE: model.vae_dir or tim train --vae DIR');
      vae = VAE.load(dir, { device });
      owned.push(vae);
    }
    if (encoder.config.hiddenSize !== net.capFeatDim) {
      throw cfgError(`the caption encoder gives ${encoder.config.hiddenSize}-wide features but model.network cap_feat_dim is ${net.capFeatDim}`);
    }
    if (encoder.maxLength !== c.maxSeqLength) {
      throw cfgError(`the caption encoder was loaded with maxLength ${encoder.maxLength} but model.max_seq_length is ${c.maxSeqLength}`);
    }
    if (vae.latentChannels !== net.inChannels) {
      throw cfgError(`the VAE has ${vae.latentChannels} latent channels but model.network in_channels is ${net.inChannels}`);
    }
    const nullFeatures = torch.scope(() => torch.noGrad(() => {
      const e = encoder.encode(['']);
      return e.features.to({ dtype: 'float32', device });
    }));
    torch.keep(nullFeatures);
    return {
      encoder, vae, nullFeatures, stats: { captions: 0, empty: 0 },
      dispose() {
        nullFeatures.dispose();
        for (const x of owned.reverse()) x.dispose();
      },
    };
  } catch (e) {
    for (const x of owned.reverse()) x.dispose();
    throw e;
  }
}

/**
 * The official CFG caption dropout: `torch.rand(B) < p` from the CPU generator (drawn for every
 * batch, also when p is 0, as the official loop does), "" where true.
 */
export function dropCaptions(captions: readonly string[], p: number): { captions: string[]; dropped: number } {
  const u = torch.scope(() => torch.rand([captions.length]).toTypedArray() as Float32Array);
  let dropped = 0;
  const out = captions.map((c, i) => {
    if (u[i]! < p) {
      dropped++;
      return '';
    }
    return c;
  });
  return { captions: out, dropped };
}

/**
 * One micro-batch's loss inputs (call inside a scope): latents x, noise z, caption features y and
 * the null features yNull cut to the batch's caption length L. The VAE and the encoder run without
 * grad.
 */
export function t2iInputs(parts: T2IParts, images: Tensor, captions: readonly string[], p: number, device: Device): { x: Tensor; z: Tensor; y: Tensor; yNull: Tensor; length: number } {
  const x = torch.noGrad(() => parts.vae.encodeLatents(images).to({ dtype: 'float32' }));
  const z = torch.randnLike(x);
  const d = dropCaptions(captions, p);
  parts.stats.captions += captions.length;
  parts.stats.empty += d.dropped;
  const enc = torch.noGrad(() => parts.encoder.encode(d.captions));
  const { y, yNull, length } = captionConditions(enc.features, enc.attentionMask, parts.nullFeatures, { dtype: 'float32', device });
  return { x, z, y, yNull, length };
}
