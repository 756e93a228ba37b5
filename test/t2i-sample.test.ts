/**
 * Text to image end to end (lib/tim/sampling/text_to_image.ts): tiny random-weight pieces that fit
 * together — a T2I TiM whose cap_feat_dim is the tiny Gemma-3's hidden size (32, the gemma3_legacy
 * golden folder with the tiny WordPiece tokenizer) and whose in_channels are the tiny DC-AE's latent
 * channels (4, the vae_dc_a golden folder, downsampling 4) — give images of the asked size, finite,
 * in [-1, 1], the same for the same seed; the guided path equals a hand-composed reference (the
 * official forward_with_cfg written out: two separate forwards, Fu + s·(Fc − Fu), the OT-FM step,
 * the VAE decode) on the official caption truncation; bad options are typed errors.
 * The `tim sample` T2I path (lib/cli/sample_t2i.ts) runs the same pieces from files: a torch.save
 * .bin of the model and an official-layout YAML (with the T2I-only model keys) → the PNGs of
 * textToImage, byte for byte, and a grid; bad command lines are UsageErrors or typed errors.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch, TiM, CaptionEncoder, VAE, textToImage, encodePng } from '../lib/index.js';
import { decodePngHost } from '../lib/torch/io/image.js';
import { UsageError } from '../lib/cli/args.js';
import { isTextToImageArgs, parseSampleT2IArgs, runSampleT2I } from '../lib/cli/sample_t2i.js';
import { main } from '../lib/cli/tim.js';
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

describe('tim sample (text to image)', () => {
  const dir = join(TMP, 'cli');
  const ckpt = join(dir, 't2i_model.bin');
  const config = join(dir, 'tim_t2i_tiny.yaml');
  const c2iConfig = join(dir, 'tim_c2i_tiny.yaml');
  const gemma = join(TMP, 'gemma');
  const network = (target: string, extra: string) => `
  network:
    target: ${target}
    params:
      input_size: 4
      patch_size: 1
      in_channels: 4
      depth: 2
      hidden_size: 32
      num_heads: 2
      encoder_depth: 1
      qk_norm: True
      z_dim: 16
      projector_dim: 32
      new_condition: t-r
      use_new_embed: True
      distance_aware: True${extra}`;
  // the model section of configs/t2i/tim_xl_p1_t2i.yaml with a tiny network and max_seq_length 16
  const yaml = (target: string, extra: string) => `model:
  transport:
    target: tim.schedulers.transports.OT_FM
    params:
      P_mean: 0.0
      P_std: 1.6
      sigma_d: 1.0
  transition_loss:
    diffusion_ratio: 0.5
    consistency_ratio: 0.1
    derivative_type: dde
    differential_epsilon: 0.005
    weight_time_type: sqrt
    weight_time_tangent: True${network(target, extra)}
  vae_dir: mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers
  text_encoder_dir: google/gemma-3-1b-it
  proportion_empty_prompts: 0.1
  use_last_hidden_state: True
  max_seq_length: ${MAX_LENGTH}
  enc_dir: checkpoints/radio/radio-v2.5-b_half.pth.tar
  proj_coeff: 1.0
  use_ema: True
  ema_decay: 0.9999
`;
  beforeAll(() => {
    mkdirSync(dir, { recursive: true });
    model.save(ckpt);
    writeFileSync(config, yaml('tim.models.t2i.tim_model.TiM', '\n      cap_feat_dim: 32'));
    writeFileSync(c2iConfig, yaml('tim.models.c2i.tim_model.TiM', '\n      num_classes: 3'));
  });
  /** The flags of a run; `over` replaces one (undefined: leaves it out). */
  const args = (out: string, more: string[] = [], over: Record<string, string | undefined> = {}) => {
    const flags: Record<string, string | undefined> = {
      ckpt, config, 'text-encoder': gemma, vae: TINY_VAE_DIR, out, height: '16', width: '24', steps: '2', cfg: '2.5', seed: '3', batch: '2', 'vae-slice': '1', ...over,
    };
    return [...Object.entries(flags).flatMap(([k, v]) => (v === undefined ? [] : [`--${k}`, v])), ...more];
  };
  const run = (argv: string[]) => {
    const printed: string[] = [];
    const progress: string[] = [];
    const code = runSampleT2I(parseSampleT2IArgs(argv), (x) => printed.push(x), (x) => progress.push(x));
    return { code, summary: JSON.parse(printed.join('')) as Record<string, any>, progress: progress.join('') };
  };

  it('--prompt (repeated) → <i>.png per prompt and grid.png: the PNGs of textToImage with the same settings', () => {
    const out = join(dir, 'flags');
    const argv = args(out, ['--prompt', 'a red cube', '--prompt=a dog']);
    expect(isTextToImageArgs(argv)).toBe(true);
    const r = run(argv);
    expect(r.code).toBe(0);
    expect(r.summary.images.map((i: { prompt: string }) => i.prompt)).toEqual(PROMPTS);
    expect(r.summary.maxLength).toBe(MAX_LENGTH); // from the YAML's max_seq_length
    expect(r.summary.captionLengths).toEqual([9]);
    expect(r.progress).toMatch(/batch 1\/1, step 2\/2/);
    const want = textToImage({ model, encoder, vae, prompts: PROMPTS, height: 16, width: 24, steps: 2, cfg: 2.5, seed: 3 });
    try {
      for (let i = 0; i < 2; i++) {
        const file = join(out, `0000${i}.png`);
        const png = readFileSync(file);
        const img = decodePngHost(png);
        expect([img.width, img.height, img.channels]).toEqual([24, 16, 3]);
        expect(png.equals(torch.scope(() => encodePng(want.images.select(0, i)))), `${file} = textToImage's image ${i}`).toBe(true);
      }
    } finally {
      want.images.dispose();
    }
    const grid = decodePngHost(readFileSync(join(out, 'grid.png')));
    // 2 images, 2 per row, torchvision's 2-pixel padding
    expect([grid.width, grid.height]).toEqual([2 + 2 * (24 + 2), 2 + 16 + 2]);
  });

  it('--prompts FILE (one per line, blank lines skipped) gives the same images', () => {
    const file = join(dir, 'prompts.txt');
    writeFileSync(file, 'a red cube\r\n\n  \na dog\n\n');
    const out = join(dir, 'file');
    const before = torch.memory().liveTensors;
    const r = run(args(out, ['--prompts', file]));
    expect(torch.memory().liveTensors, 'live tensors after a run').toBe(before);
    expect(r.summary.images.map((i: { prompt: string }) => i.prompt)).toEqual(PROMPTS);
    for (const f of ['00000.png', '00001.png', 'grid.png']) {
      expect(readFileSync(join(out, f)).equals(readFileSync(join(dir, 'flags', f))), f).toBe(true);
    }
  });

  it('--dtype bf16 samples the network in bfloat16 (the official sampling dtype): images close to float32', () => {
    const out = join(dir, 'bf16');
    const r = run(args(out, ['--prompt', 'a dog', '--dtype', 'bf16'], { height: '8', width: '8' }));
    expect(r.summary.dtype).toBe('bfloat16');
    const bf = decodePngHost(readFileSync(join(out, '00000.png')));
    const fp = textToImage({ model, encoder, vae, prompts: ['a dog'], height: 8, width: 8, steps: 2, cfg: 2.5, seed: 3 });
    try {
      const ref = decodePngHost(torch.scope(() => encodePng(fp.images.select(0, 0))));
      // bfloat16 has 8 bits of mantissa: pixels move a little, not wholesale
      let worst = 0;
      for (let i = 0; i < ref.data.length; i++) worst = Math.max(worst, Math.abs(ref.data[i]! - bf.data[i]!));
      expect(worst).toBeLessThan(16); // measured 3 of 255
      expect(Buffer.from(ref.data).equals(Buffer.from(bf.data))).toBe(false);
    } finally {
      fp.images.dispose();
    }
  });

  it('bad command lines: UsageErrors naming the flag, typed errors naming the file; nothing written', () => {
    const out = join(dir, 'bad');
    const usage = (argv: string[]): string => {
      const e = thrown(() => run(argv));
      expect(e, e.message).toBeInstanceOf(UsageError);
      return e.message;
    };
    expect(usage(args(out))).toMatch(/no prompts: pass --prompt/);
    expect(usage(args(out, ['--prompt', 'x', '--prompts', 'f.txt']))).toMatch(/not both/);
    expect(usage(args(out, ['--prompt']))).toMatch(/'--prompt' needs a value/);
    expect(usage(args(out, ['--prompt', '--height', '8']))).toMatch(/'--prompt' needs a value/);
    expect(usage(args(out, ['--prompt', 'x'], { cfg: '0.5' }))).toMatch(/--cfg must be a number >= 1/);
    expect(usage(args(out, ['--prompt', 'x', '--caption-transform', 'rot13']))).toMatch(/--caption-transform must be unicode-escape or none/);
    expect(usage(args(out, ['--prompt', 'x'], { ckpt: undefined }))).toMatch(/--ckpt <file> is required/);
    // the VAE says what sizes work: a usage error before the network loads
    expect(usage(args(out, ['--prompt', 'x'], { width: '18' }))).toMatch(/--width must be a multiple of 4 \(VAE downsampling 4 × patch size 1\), got 18/);
    const typed = (argv: string[]) => thrown(() => run(argv));
    const c2i = typed(args(out, ['--prompt', 'x'], { config: c2iConfig }));
    expect(c2i.code).toBe('E_CONFIG');
    expect(c2i.message).toMatch(/is a C2I model/);
    const noEnc = typed(args(out, ['--prompt', 'x'], { 'text-encoder': join(dir, 'nope') }));
    expect([noEnc.code, noEnc.message]).toEqual(['E_IO', `--text-encoder '${join(dir, 'nope')}': no such folder`]);
    expect(typed(args(out, ['--prompt', 'x'], { ckpt: join(dir, 'nope.bin') })).code).toBe('E_IO');
    expect(existsSync(out)).toBe(false);
    expect(isTextToImageArgs(['--ckpt', 'x', '--steps', '4'])).toBe(false);
    expect(isTextToImageArgs(['--ckpt', 'x', '--', '--prompt'])).toBe(false);
  });

  it('`tim sample` dispatches to it on --prompt / --prompts / --text-encoder: same PNGs, its own help and usage errors', async () => {
    const cli = async (argv: string[]) => {
      const out: string[] = [], err: string[] = [];
      const code = await main(['sample', ...argv], (x) => out.push(x), (x) => err.push(x));
      return { code, out: out.join('\n'), err: err.join('\n') };
    };
    const out = join(dir, 'main');
    const r = await cli(args(out, ['--prompt', 'a red cube', '--prompt=a dog']));
    expect(r.code, r.err).toBe(0);
    for (const f of ['00000.png', '00001.png', 'grid.png']) {
      expect(readFileSync(join(out, f)).equals(readFileSync(join(dir, 'flags', f))), f).toBe(true);
    }
    const help = await cli(['--prompt', 'x', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/--text-encoder <dir>/);
    const bad = await cli(args(join(dir, 'main-bad'), ['--prompt', 'x'], { cfg: '0.5' }));
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--cfg must be a number >= 1/);
    expect(bad.err).toMatch(/--text-encoder <dir>/); // the T2I command's help, not the C2I one's
    // a T2I config sampled without prompts: the C2I command says how to sample it
    const c2i = await cli(['--ckpt', ckpt, '--config', config, '--out', join(dir, 'main-c2i'), '--steps', '1']);
    expect(c2i.code).toBe(1);
    expect(c2i.err).toMatch(/is a T2I model: sample it from prompts \(--prompt TEXT or --prompts FILE/);
    expect(existsSync(join(dir, 'main-bad'))).toBe(false);
  });
});
