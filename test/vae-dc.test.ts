/**
 * lib/vae/dc.ts: diffusers' AutoencoderDC (DC-AE) as a TorchScript module built in-process. Checked
 * against diffusers itself (scripts/golden/vae_dc.py → test/fixtures/golden/vae_dc_{a,b,c}: tiny
 * random weights, non-square images, both attention paths, every block and option the config has)
 * and against the state-dict names, shapes and parameter count of the published
 * dc-ae-f32c32-sana-1.1 config.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { buildModule, countParameters, stateDictEntries } from '../lib/tim/network/index.js';
import { dcFacts, dcModuleSpec, parseDcConfig } from '../lib/vae/dc.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { GOLDEN_DIR, get, loadGolden, maxAbsDiff, repoRoot } from './helpers/golden.js';
import { thrown } from './helpers/tensor-expect.js';

/** float32 vs diffusers' float32 (case.json: float32 itself is ≤ 2.6e-6 from float64 on these cases). */
const TOL = 2e-5;

const readJson = (p: string): Record<string, unknown> => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const SANA_CONFIG = join(repoRoot, 'test', 'fixtures', 'vae-configs', 'dc-ae-f32c32-sana-1.1.json');

function built(name: string): torch.jit.ModuleBuilder {
  const dir = join(GOLDEN_DIR, name);
  const m = buildModule(dcModuleSpec(parseDcConfig(readJson(join(dir, 'config.json')))), { init: 'empty' });
  const w = torch.load(join(dir, 'diffusion_pytorch_model.safetensors'), { lazy: false });
  try {
    // strict: every diffusers key is one of ours and none of ours is missing.
    m.loadStateDict(w);
    // The same names as diffusers' state_dict (safetensors stores them sorted; the order is checked
    // against diffusers' own state_dict on the published config below).
    const sd = m.stateDict();
    expect(Object.keys(sd).sort()).toEqual(Object.keys(w).sort());
    for (const t of Object.values(sd)) t.dispose();
  } catch (e) {
    m.dispose();
    throw e;
  } finally {
    for (const t of Object.values(w)) t.dispose();
  }
  return m;
}

describe.each(['vae_dc_a', 'vae_dc_b', 'vae_dc_c'])('AutoencoderDC golden %s (diffusers, float32)', (name) => {
  it('encode and decode match diffusers (linear and quadratic attention)', () => {
    const g = loadGolden(name);
    const m = built(name);
    try {
      torch.scope(() => torch.noGrad(() => {
        const images = get(g.inputs, 'images');
        expect(images.shape[2]).not.toBe(images.shape[3]);
        const latent = m.call<Tensor>('encode', images);
        expect(maxAbsDiff(latent, get(g.outputs, 'latent'))).toBeLessThan(TOL);
        // decode the golden latent, so a decoder error is not hidden behind (or blamed on) the encoder
        expect(maxAbsDiff(m.call<Tensor>('decode', get(g.outputs, 'latent')), get(g.outputs, 'decode'))).toBeLessThan(TOL);
        const small = m.call<Tensor>('encode', get(g.inputs, 'images_small'));
        expect(maxAbsDiff(small, get(g.outputs, 'latent_small'))).toBeLessThan(TOL);
        expect(maxAbsDiff(m.call<Tensor>('decode', get(g.outputs, 'latent_small')), get(g.outputs, 'decode_small'))).toBeLessThan(TOL);
        // The outputs are not trivially small: a tolerance of 2e-5 means something.
        expect(get(g.outputs, 'latent').abs().max().item()).toBeGreaterThan(0.1);
        expect(get(g.outputs, 'decode').abs().max().item()).toBeGreaterThan(0.1);
      }));
      // The small input is what exercises diffusers' quadratic attention path.
      expect(g.meta.attention_paths.images_small).toContain('quadratic');
      expect(g.meta.attention_paths.images).toContain('linear');
    } finally {
      m.dispose();
      g.dispose();
    }
  });
});

describe('AutoencoderDC module', () => {
  it("runs in bfloat16 like diffusers' bfloat16 model (float32 linear attention, casts back)", () => {
    const g = loadGolden('vae_dc_a');
    const m = built('vae_dc_a');
    // torch 2.13 (the golden's) gives diffusers' bfloat16 output bit for bit (measured 0); libtorch
    // 1.13's CPU bfloat16 kernels round differently (measured 0.051 of the output's scale, while
    // diffusers' own bfloat16 run is 0.057 from its float32 one).
    const tol = torch.buildInfo().torchMajor >= 2 ? 1e-2 : 0.08;
    const rel = (a: Tensor, b: Tensor): number => maxAbsDiff(a.float(), b.float()) / b.float().abs().max().item();
    try {
      m.to('bfloat16');
      torch.scope(() => torch.noGrad(() => {
        const z = m.call<Tensor>('encode', get(g.inputs, 'images').to('bfloat16'));
        expect(z.dtype).toBe('bfloat16');
        expect(get(g.outputs, 'latent_bf16').dtype).toBe('bfloat16');
        expect(rel(z, get(g.outputs, 'latent_bf16'))).toBeLessThan(tol);
        const x = m.call<Tensor>('decode', get(g.outputs, 'latent').to('bfloat16'));
        expect(x.dtype).toBe('bfloat16');
        expect(rel(x, get(g.outputs, 'decode_bf16'))).toBeLessThan(tol);
      }));
    } finally {
      m.dispose();
      g.dispose();
    }
  });

  it('rejects an image whose size is not a multiple of the factor, or with the wrong channels', () => {
    const m = built('vae_dc_a');
    try {
      torch.scope(() => {
        const e1 = thrown(() => m.call('encode', torch.zeros([1, 3, 30, 24])));
        expect(e1.message).toMatch(/multiples of the downsampling factor/);
        const e2 = thrown(() => m.call('encode', torch.zeros([1, 4, 32, 24])));
        expect(e2.message).toMatch(/expected an image batch/);
        const e3 = thrown(() => m.call('decode', torch.zeros([1, 3, 8, 6])));
        expect(e3.message).toMatch(/expected a latent batch/);
      });
    } finally {
      m.dispose();
    }
  });

  it('rejects an unknown attention implementation', () => {
    expect(thrown(() => dcModuleSpec(parseDcConfig({}), { attention: 'flash' as 'math' })).code).toBe('E_OPTION');
  });
});

describe('dcModuleSpec: published dc-ae-f32c32-sana-1.1', () => {
  it("has diffusers' state-dict names, shapes, order and 312,250,275 parameters", () => {
    const ref = readJson(join(GOLDEN_DIR, 'vae_dc_sana_1_1', 'state_dict.json')) as { parameters: number; state_dict: [string, number[]][] };
    const spec = dcModuleSpec(parseDcConfig(readJson(SANA_CONFIG)));
    const ours = stateDictEntries(spec).map((e) => [e.key, e.shape]);
    expect(ours.length).toBe(ref.state_dict.length);
    expect(ours).toEqual(ref.state_dict);
    expect(ref.parameters).toBe(312_250_275);
    expect(countParameters(spec)).toBe(ref.parameters);
  });

  it('gives f32, 32 latent channels, scaling factor 0.41407', () => {
    const cfg = parseDcConfig(readJson(SANA_CONFIG));
    expect(dcFacts(cfg)).toEqual({ latentChannels: 32, downsampleFactor: 32, scalingFactor: 0.41407 });
    expect(cfg.downsampleBlockType).toBe('conv');
    expect(cfg.upsampleBlockType).toBe('interpolate');
    expect(cfg.encoderOutShortcut && cfg.decoderInShortcut).toBe(true);
    expect(cfg.unknownKeys).toEqual([]);
  });
});

describe('parseDcConfig', () => {
  it("fills diffusers' AutoencoderDC defaults", () => {
    const c = parseDcConfig({ _class_name: 'AutoencoderDC' });
    expect(c).toMatchObject({
      inChannels: 3, latentChannels: 32, attentionHeadDim: 32,
      encoderBlockTypes: Array(6).fill('ResBlock'), decoderBlockTypes: Array(6).fill('ResBlock'),
      encoderBlockOutChannels: [128, 256, 512, 512, 1024, 1024], decoderBlockOutChannels: [128, 256, 512, 512, 1024, 1024],
      encoderLayersPerBlock: [2, 2, 2, 3, 3, 3], decoderLayersPerBlock: [3, 3, 3, 3, 3, 3],
      encoderQkvMultiscales: [[], [], [], [5], [5], [5]], decoderQkvMultiscales: [[], [], [], [5], [5], [5]],
      upsampleBlockType: 'pixel_shuffle', downsampleBlockType: 'pixel_unshuffle',
      decoderNormTypes: Array(6).fill('rms_norm'), decoderActFns: Array(6).fill('silu'),
      encoderOutShortcut: true, decoderInShortcut: true, decoderConvActFn: 'relu', scalingFactor: 1,
    });
    expect(dcFacts(c).downsampleFactor).toBe(32);
  });

  it('expands single values, takes the first n entries of longer lists, maps null/Swish/GELU acts, records unknown keys', () => {
    const c = parseDcConfig({
      encoder_block_out_channels: [8, 16], decoder_block_out_channels: [8, 16],
      encoder_layers_per_block: [0, 1, 9], decoder_layers_per_block: [1, 1],
      encoder_block_types: 'EfficientViTBlock', attention_head_dim: 8, latent_channels: 4,
      decoder_act_fns: [null, 'Swish', 'relu'], decoder_conv_act_fn: 'GELU', decoder_norm_types: ['batch_norm', 'rms_norm'],
      downsample_block_type: 'Conv', some_new_option: 1, _name_or_path: 'x',
    });
    expect(c.encoderBlockTypes).toEqual(['EfficientViTBlock', 'EfficientViTBlock']);
    expect(c.encoderLayersPerBlock).toEqual([0, 1]);
    expect(c.encoderQkvMultiscales).toEqual([[], []]);
    expect(c.decoderActFns).toEqual(['identity', 'silu']);
    expect(c.decoderConvActFn).toBe('gelu');
    expect(c.decoderNormTypes).toEqual(['batch_norm', 'rms_norm']);
    expect(c.downsampleBlockType).toBe('conv');
    expect(c.unknownKeys).toEqual(['some_new_option']);
    const keys = stateDictEntries(dcModuleSpec(c)).map((e) => e.key);
    // 0 layers in the first encoder block: conv_in is a DCDownBlock2d (its conv under conv_in.conv).
    expect(keys).toContain('encoder.conv_in.conv.weight');
    expect(keys).toContain('decoder.up_blocks.0.1.norm.running_var');
    expect(keys).toContain('decoder.up_blocks.0.1.norm.num_batches_tracked');
  });

  it.each([
    [{ in_channels: 0 }, 'in_channels', /integer >= 1/],
    [{ latent_channels: 2.5 }, 'latent_channels', /integer >= 1/],
    [{ attention_head_dim: '32' }, 'attention_head_dim', /integer >= 1/],
    [{ encoder_block_types: 'ViT' }, 'encoder_block_types', /'ResBlock' or 'EfficientViTBlock'/],
    [{ decoder_block_types: ['ResBlock'] }, 'decoder_block_types', /has 1 entries for 6 blocks/],
    [{ encoder_block_out_channels: [] }, 'encoder_block_out_channels', /non-empty list/],
    [{ decoder_block_out_channels: [128, -1] }, 'decoder_block_out_channels[1]', /integer >= 1/],
    [{ encoder_layers_per_block: [2, 0, 2, 3, 3, 3] }, 'encoder_layers_per_block[1]', /only the first block may have 0 layers/],
    [{ decoder_layers_per_block: [3, 3] }, 'decoder_layers_per_block', /list of 6 layer counts/],
    [{ encoder_qkv_multiscales: [5] }, 'encoder_qkv_multiscales', /kernel-size lists/],
    [{ decoder_qkv_multiscales: [[], [], [], [4], [5], [5]] }, 'decoder_qkv_multiscales[3][0]', /odd kernel size/],
    [{ upsample_block_type: 'InterpolateConv' }, 'upsample_block_type', /'pixel_shuffle' or 'interpolate'/],
    [{ downsample_block_type: 'stride' }, 'downsample_block_type', /'pixel_unshuffle' or 'conv'/],
    [{ decoder_norm_types: 'layer_norm' }, 'decoder_norm_types', /'layer_norm' is not supported/],
    [{ decoder_norm_types: ['rms_norm', 'rms_norm', 'rms_norm', 'rms_norm', 'rms_norm', 'group_norm'] }, 'decoder_norm_types[5]', /'rms_norm' or 'batch_norm'/],
    [{ decoder_act_fns: 'relu6' }, 'decoder_act_fns', /must be one of 'silu'/],
    [{ decoder_act_fns: null }, 'decoder_act_fns', /a string or a list/],
    [{ decoder_conv_act_fn: null }, 'decoder_conv_act_fn', /must be one of 'silu'/],
    [{ encoder_out_shortcut: 1 }, 'encoder_out_shortcut', /true or false/],
    [{ decoder_in_shortcut: 'yes' }, 'decoder_in_shortcut', /true or false/],
    [{ scaling_factor: 0 }, 'scaling_factor', /finite number > 0/],
    [{ latent_channels: 24 }, 'latent_channels', /must divide encoder_block_out_channels\[-1\]/],
    [{ latent_channels: 24, encoder_out_shortcut: false }, 'latent_channels', /must divide decoder_block_out_channels\[-1\]/],
    [{ encoder_block_out_channels: [128, 384, 512, 512, 1024, 1024] }, 'encoder_block_out_channels[1]', /must divide 4 × 128/],
    [{ encoder_block_out_channels: [3, 6, 6, 6, 6, 6], latent_channels: 2 }, 'encoder_block_out_channels[1]', /multiple of 4 with pixel_unshuffle/],
    [{ decoder_block_out_channels: [16, 128, 512, 512, 1024, 1024] }, 'decoder_block_out_channels[1]', /must divide 4 × 16/],
    [{ attention_head_dim: 2048, encoder_block_types: 'EfficientViTBlock' }, 'attention_head_dim', /no attention head/],
    [{ _class_name: 'AutoencoderKL' }, '_class_name', /'AutoencoderDC'/],
  ])('rejects %j with E_VAE_CONFIG naming %s', (raw, key, msg) => {
    const e = thrown(() => parseDcConfig(raw as Record<string, unknown>));
    expect(e.code).toBe('E_VAE_CONFIG');
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toContain(`AutoencoderDC config: ${key} `);
    expect(e.message).toMatch(msg);
  });

  it('rejects a config that is not an object with a TypeError', () => {
    const e = thrown(() => parseDcConfig([] as unknown as Record<string, unknown>));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.code).toBe('E_VAE_CONFIG');
  });
});
