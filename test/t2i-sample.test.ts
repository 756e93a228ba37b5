/**
 * Text to image end to end (lib/tim/sampling/text_to_image.ts): tiny random-weight pieces that fit
 * together — a T2I TiM whose cap_feat_dim is the tiny Gemma-3's hidden size (32, the gemma3_legacy
 * golden folder with the tiny WordPiece tokenizer) and whose in_channels are the tiny DC-AE's latent
 * channels (4, the vae_dc_a golden folder, downsampling 4) — give images of the asked size, finite,
 * in [-1, 1], the same for the same seed; the guided path equals a hand-composed reference (the
 * official forward_with_cfg written out: two separate forwards, Fu + s·(Fc − Fu), the OT-FM step,
 * the VAE decode) on the official caption truncation; bad options are typed errors.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch, TiM, CaptionEncoder, VAE, textToImage } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import type { TiMConfigInput } from '../lib/tim/network/model.js';

import { GOLDEN_DIR, maxAbsDiff, repoRoot } from './helpers/golden.js';
import { thrown } from './helpers/tensor-expect.js';

const TMP = mkdtempSync(join(tmpdir(), 'tim-t2i-'));
const MAX_LENGTH = 16;

/** The tiny Gemma-3 folder: gemma3_legacy's config and weights (hidden 32) + the tiny tokenizer. */
function tinyTextEncoderFolder(dir: string): string {
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(GOLDEN_DIR, 'gemma3_legacy', 'config.json'), join(dir, 'config.json'));
  copyFileSync(join(GOLDEN_DIR, 'gemma3_legacy', 'model.safetensors'), join(dir, 'model.safetensors'));
  copyFileSync(join(repoRoot, 'test', 'fixtures', 'text', 'tiny-tokenizer.json'), join(dir, 'tokenizer.json'));
  copyFileSync(join(repoRoot, 'test', 'fixtures', 'text', 'tiny-tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  return dir;
}
const TINY_VAE_DIR = join(GOLDEN_DIR, 'vae_dc_a');
const TINY_T2I: TiMConfigInput = {
  variant: 't2i', inputSize: 4, patchSize: 1, inChannels: 4, hiddenSize: 32, depth: 2, numHeads: 2, encoderDepth: 1,
  zDim: 16, projectorDim: 32, qkNorm: true, newCondition: 't-r', useNewEmbed: true, distanceAware: true, capFeatDim: 32,
};

/** A tiny T2I TiM with seeded random weights everywhere (the official init zeroes the output layer, which would prove nothing). */
function tinyT2IModel(config: TiMConfigInput = TINY_T2I, seed = 11): TiM {
  const model = TiM.create(config);
  const saved = torch.getRngState();
  torch.manualSeed(seed);
  torch.scope(() => {
    const rec: Record<string, Tensor> = {};
    for (const [k, p] of model.namedParameters()) rec[k] = torch.randn(p.shape).mul(0.2);
    model.loadStateDict(rec);
  });
  torch.setRngState(saved);
  return model;
}

let model: TiM;
let encoder: CaptionEncoder;
let vae: VAE;
const PROMPTS = ['a red cube', 'a dog'];

beforeAll(() => {
  model = tinyT2IModel();
  encoder = CaptionEncoder.load(tinyTextEncoderFolder(join(TMP, 'gemma')), { maxLength: MAX_LENGTH });
  vae = VAE.load(TINY_VAE_DIR);
});
afterAll(() => {
  model?.dispose();
  encoder?.dispose();
  vae?.dispose();
  rmSync(TMP, { recursive: true, force: true });
});

describe('textToImage', () => {
  it('the tiny pieces fit: DC-AE downsampling 4, 4 latent channels, 32-wide captions', () => {
    expect(vae.downsampleFactor).toBe(4);
    expect(vae.latentChannels).toBe(model.config.inChannels);
    expect(encoder.config.hiddenSize).toBe(model.config.capFeatDim);
  });

  it('prompts → (N, 3, H, W) images in [-1, 1], finite, deterministic for a seed, no tensor left behind', () => {
    const before = torch.memory().liveTensors;
    const rng = torch.getRngState();
    const steps: string[] = [];
    const a = textToImage({
      model, encoder, vae, prompts: PROMPTS, height: 16, width: 24, steps: 2, cfg: 2.5, seed: 3,
      onProgress: (p) => steps.push(`${p.batch}/${p.batches}:${p.step}/${p.steps}`),
    });
    try {
      expect(a.images.shape).toEqual([2, 3, 16, 24]);
      expect(a.images.dtype).toBe('float32');
      expect(a.images.device).toBe('cpu');
      torch.scope(() => {
        expect(a.images.isfinite().allTrue()).toBe(true);
        expect(a.images.abs().max().item()).toBeLessThanOrEqual(1);
        // random weights give a non-constant image
        expect(a.images.std().item()).toBeGreaterThan(1e-3);
      });
      expect(steps).toEqual(['0/1:1/2', '0/1:2/2']);
      // the caption length is the batch's longest mask: <bos> a r ##e ##d c ##u ##b ##e = 9 tokens
      expect(a.captionLengths).toEqual([9]);
      // the global generator is left as it was
      expect(Buffer.from(torch.getRngState()).equals(Buffer.from(rng))).toBe(true);

      const again = textToImage({ model, encoder, vae, prompts: PROMPTS, height: 16, width: 24, steps: 2, cfg: 2.5, seed: 3 });
      const other = textToImage({ model, encoder, vae, prompts: PROMPTS, height: 16, width: 24, steps: 2, cfg: 2.5, seed: 4 });
      try {
        expect(maxAbsDiff(again.images, a.images)).toBe(0);
        expect(maxAbsDiff(other.images, a.images)).toBeGreaterThan(1e-3);
      } finally {
        again.images.dispose();
        other.images.dispose();
      }
    } finally {
      a.images.dispose();
    }
    expect(torch.memory().liveTensors, 'live tensors after textToImage + dispose').toBe(before);
  });

  it('the guided path equals the official forward_with_cfg written out by hand (2 steps: t = 1 unguided, t = 0.5 guided)', () => {
    const seed = 5;
    const cfg = 2.5;
    const got = textToImage({ model, encoder, vae, prompts: PROMPTS, height: 16, width: 24, steps: 2, cfg, seed });
    const plain = textToImage({ model, encoder, vae, prompts: PROMPTS, height: 16, width: 24, steps: 2, cfg: 1, seed });
    try {
      torch.scope(() => {
        // sample_t2i_geneval_ddp.py l. 138-154: z, the captions cut to the longest mask, y_null expanded
        torch.manualSeed(seed);
        const z = torch.randn([2, 4, 4, 6]);
        const enc = encoder.encode(PROMPTS);
        const nul = encoder.encode(['']);
        const L = enc.attentionMask.sum(-1).max().item();
        const y = enc.features.narrow(1, 0, L);
        const yNull = nul.features.narrow(1, 0, L).expand(2, L, 32);
        const times = (v: number) => torch.full([2], v);
        // transition.py sample(): t_steps = linspace(1, 0, 3); OT-FM c_noise(t) = t; the state in float64;
        // OT_FM.from_x_t_to_x_r with s_ratio 0: x_r = x_t − (t − r)·F.
        // Step 0 at t = 1: forward_with_cfg guides only for cfg_low < t < cfg_high = 1, so not here.
        const f0 = model.forward(z, times(1), times(0.5), y);
        const x1 = z.double().sub(f0.double().mul(0.5));
        // Step 1 at t = 0.5: two separate forwards, F = Fu + s·(Fc − Fu)
        const x1f = x1.float();
        const fc = model.forward(x1f, times(0.5), times(0), y);
        const fu = model.forward(x1f, times(0.5), times(0), yNull);
        const F = fu.add(fc.sub(fu).mul(cfg));
        const want = vae.decodeLatents(x1.sub(F.double().mul(0.5)).float()).clamp(-1, 1);
        expect(maxAbsDiff(got.images, want)).toBeLessThan(1e-4);
        // guidance is not a no-op here: cfg 1 is the conditional prediction alone, other images
        const wantPlain = vae.decodeLatents(x1.sub(fc.double().mul(0.5)).float()).clamp(-1, 1);
        expect(maxAbsDiff(plain.images, wantPlain)).toBeLessThan(1e-4);
        expect(maxAbsDiff(plain.images, got.images)).toBeGreaterThan(1e-3);
        for (const e of [enc, nul]) {
          e.features.dispose();
          e.attentionMask.dispose();
        }
      });
    } finally {
      got.images.dispose();
      plain.images.dispose();
    }
  });

  it('one step is unguided whatever cfg, as in the official code (its only step is at t = T_max, outside t < cfg_high·T_max)', () => {
    const o = { model, encoder, vae, prompts: PROMPTS, height: 8, width: 8, steps: 1, seed: 1 };
    const guided = textToImage({ ...o, cfg: 2.5 });
    const plain = textToImage({ ...o, cfg: 1 });
    try {
      expect(maxAbsDiff(guided.images, plain.images)).toBe(0);
    } finally {
      guided.images.dispose();
      plain.images.dispose();
    }
  });

  it('batches: z of a prompt depends on (seed, index) only; each batch has its own caption length', () => {
    const prompts = ['a dog', 'a red cube', 'a dog'];
    const all = textToImage({ model, encoder, vae, prompts, height: 8, width: 8, steps: 1, cfg: 1, seed: 9 });
    const ones = textToImage({ model, encoder, vae, prompts, height: 8, width: 8, steps: 1, cfg: 1, seed: 9, batchSize: 1 });
    try {
      expect(all.captionLengths).toEqual([9]);
      expect(ones.captionLengths).toEqual([5, 9, 5]); // <bos> a d ##o ##g
      // the middle prompt is the longest of the batch either way: same z, same caption length, same image
      expect(maxAbsDiff(all.images.narrow(0, 1, 1), ones.images.narrow(0, 1, 1))).toBeLessThan(1e-5);
      // the short prompts see 4 fewer padded positions alone (TiM-T2I has no caption mask): other images
      expect(maxAbsDiff(all.images.narrow(0, 0, 1), ones.images.narrow(0, 0, 1))).toBeGreaterThan(1e-4);
    } finally {
      all.images.dispose();
      ones.images.dispose();
    }
  });

  it('a stochastic sampler is seeded too', () => {
    const o = { model, encoder, vae, prompts: ['a dog'], height: 8, width: 8, steps: 3, cfg: 1, seed: 2, stochasticity: 0.5 };
    const a = textToImage(o);
    const b = textToImage(o);
    const det = textToImage({ ...o, stochasticity: 0 });
    try {
      expect(maxAbsDiff(a.images, b.images)).toBe(0);
      expect(maxAbsDiff(a.images, det.images)).toBeGreaterThan(1e-4);
    } finally {
      for (const r of [a, b, det]) r.images.dispose();
    }
  });

  it('bad options are typed errors before anything runs', () => {
    const base = { model, encoder, vae, prompts: PROMPTS, height: 16, width: 16, steps: 1 };
    const code = (o: object): string | undefined => thrown(() => textToImage(o as Parameters<typeof textToImage>[0])).code;
    expect(code({ ...base, height: 18 })).toBe('E_SHAPE');
    expect(thrown(() => textToImage({ ...base, width: 10 })).message).toMatch(/width must be a multiple of 4 \(VAE downsampling 4 × patch size 1\), got 10/);
    expect(code({ ...base, height: 0 })).toBe('E_RANGE');
    expect(code({ ...base, prompts: [] })).toBe('E_ARG');
    expect(code({ ...base, prompts: ['ok', 3] })).toBe('E_ARG');
    expect(code({ ...base, steps: 0 })).toBe('E_RANGE');
    expect(code({ ...base, captionTransform: 'rot13' })).toBe('E_OPTION');
    expect(code({ ...base, stpes: 2 })).toBe('E_OPTION');
    using wide = TiM.create({ ...TINY_T2I, capFeatDim: 40 });
    const e = thrown(() => textToImage({ ...base, model: wide }));
    expect(e.code).toBe('E_SHAPE');
    expect(e.message).toMatch(/32-wide features but the model's cap_feat_dim is 40/);
    using c2i = TiM.create({ ...TINY_T2I, variant: 'c2i', numClasses: 3 });
    expect(code({ ...base, model: c2i })).toBe('E_MODEL');
    using eight = TiM.create({ ...TINY_T2I, inChannels: 8 });
    expect(thrown(() => textToImage({ ...base, model: eight })).message).toMatch(/4 latent channels but the model's in_channels is 8/);
  });
});
