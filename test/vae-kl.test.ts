/**
 * lib/vae/kl.ts: diffusers' AutoencoderKL as a TorchScript module built in-process. Checked against
 * diffusers itself (scripts/golden/vae_kl.py → test/fixtures/golden/vae_kl_a, vae_kl_b: tiny random
 * weights, non-square 24×16 images) with both attention paths this libtorch has, and against the
 * state-dict names, shapes and parameter count of the published sd-vae-ft-ema config.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { buildModule, countParameters, defaultAttention, stateDictEntries } from '../lib/tim/network/index.js';
import { klDownsampleFactor, klModuleSpec, parseKlConfig } from '../lib/vae/kl.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { GOLDEN_DIR, get, loadGolden, maxAbsDiff, repoRoot } from './helpers/golden.js';
import { thrown } from './helpers/tensor-expect.js';

/** float32 vs diffusers' float32 (case.json: float32 itself is ≤ 6e-6 from float64 on these cases). */
const TOL = 2e-5;

const readJson = (p: string): Record<string, unknown> => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;

describe('parseKlConfig', () => {
  it("fills diffusers' AutoencoderKL defaults", () => {
    const c = parseKlConfig({ _class_name: 'AutoencoderKL', _diffusers_version: '0.4.2' });
    expect(c).toMatchObject({
      inChannels: 3, outChannels: 3, blockOutChannels: [64], layersPerBlock: 1, actFn: 'silu', latentChannels: 4,
      normNumGroups: 32, sampleSize: 32, scalingFactor: 0.18215, shiftFactor: null, forceUpcast: true,
      useQuantConv: true, usePostQuantConv: true, midBlockAddAttention: true,
      downBlockTypes: ['DownEncoderBlock2D'], upBlockTypes: ['UpDecoderBlock2D'],
    });
    expect(klDownsampleFactor(c)).toBe(1);
  });

  it('reads the published sd-vae-ft-ema config (f8, 4 latent channels)', () => {
    const c = parseKlConfig(readJson(join(repoRoot, 'test', 'fixtures', 'vae-configs', 'sd-vae-ft-ema.json')));
    expect(c.blockOutChannels).toEqual([128, 256, 512, 512]);
    expect(c.layersPerBlock).toBe(2);
    expect(c.scalingFactor).toBe(0.18215);
    expect(klDownsampleFactor(c)).toBe(8);
  });

  it.each([
    [{ act_fn: 'tanh' }, /act_fn "tanh" is not supported/],
    [{ down_block_types: ['AttnDownEncoderBlock2D'] }, /down block type 'AttnDownEncoderBlock2D' is not supported/],
    [{ up_block_types: ['UpBlock2D'] }, /up block type 'UpBlock2D'/],
    [{ block_out_channels: [64, 128] }, /one entry per block_out_channels entry \(2\)/],
    [{ block_out_channels: [48], norm_num_groups: 32 }, /norm_num_groups 32 does not divide block_out_channels entry 48/],
    [{ layers_per_block: 0 }, /layers_per_block must be a positive integer/],
    [{ latent_channels: 2.5 }, /latent_channels must be a positive integer/],
    [{ use_quant_conv: 'yes' }, /use_quant_conv must be true or false/],
    [{ scaling_factor: 0 }, /scaling_factor must not be 0/],
    [{ shift_factor: 'x' }, /shift_factor must be null or a finite number/],
    [{ block_out_channels: [] }, /block_out_channels must be a non-empty list/],
  ])('rejects %j with E_VAE_CONFIG', (raw, msg) => {
    const e = thrown(() => parseKlConfig(raw as Record<string, unknown>));
    expect(e.code).toBe('E_VAE_CONFIG');
    expect(e.message).toMatch(msg);
  });
});

describe('klModuleSpec: published sd-vae-ft-ema', () => {
  it("has diffusers' state-dict names, shapes, order and 83,653,863 parameters", () => {
    const ref = readJson(join(GOLDEN_DIR, 'vae_kl_sd_vae_ft_ema', 'state_dict.json')) as { parameters: number; state_dict: [string, number[]][] };
    const cfg = parseKlConfig(readJson(join(repoRoot, 'test', 'fixtures', 'vae-configs', 'sd-vae-ft-ema.json')));
    const spec = klModuleSpec(cfg);
    const ours = stateDictEntries(spec).map((e) => [e.key, e.shape]);
    expect(ours).toEqual(ref.state_dict);
    expect(ref.parameters).toBe(83_653_863);
    expect(countParameters(spec)).toBe(ref.parameters);
  });
});

function built(name: string, attention: 'math' | 'sdpa'): torch.jit.ModuleBuilder {
  const dir = join(GOLDEN_DIR, name);
  const cfg = parseKlConfig(readJson(join(dir, 'config.json')));
  const m = buildModule(klModuleSpec(cfg, { attention }), { init: 'empty' });
  const w = torch.load(join(dir, 'diffusion_pytorch_model.safetensors'), { lazy: false });
  try {
    m.loadStateDict(w);
  } finally {
    for (const t of Object.values(w)) t.dispose();
  }
  return m;
}

const attentions = [...new Set(['math', defaultAttention()] as const)];

describe.each(['vae_kl_a', 'vae_kl_b'])('AutoencoderKL golden %s (diffusers, float32)', (name) => {
  it.each(attentions)('encode and decode match diffusers (attention %s)', (attention) => {
    const g = loadGolden(name);
    const m = built(name, attention);
    try {
      torch.scope(() => torch.noGrad(() => {
        const images = get(g.inputs, 'images');
        expect(images.shape[2]).not.toBe(images.shape[3]);
        const [mean, logvar] = m.call<[Tensor, Tensor]>('encode', images);
        expect(maxAbsDiff(mean, get(g.outputs, 'mean'))).toBeLessThan(TOL);
        expect(maxAbsDiff(logvar, get(g.outputs, 'logvar'))).toBeLessThan(TOL);
        expect(maxAbsDiff(m.call<Tensor>('decode', get(g.inputs, 'z')), get(g.outputs, 'decode'))).toBeLessThan(TOL);
        expect(maxAbsDiff(m.call<Tensor>('decode', mean), get(g.outputs, 'roundtrip'))).toBeLessThan(TOL);
        // The outputs are not trivially small: a tolerance of 2e-5 means something.
        expect(get(g.outputs, 'decode').abs().max().item()).toBeGreaterThan(0.5);
      }));
    } finally {
      m.dispose();
      g.dispose();
    }
  });
});

describe('klModuleSpec structure', () => {
  it('leaves out quant_conv and the mid attention when the config says so', () => {
    const cfg = parseKlConfig(readJson(join(GOLDEN_DIR, 'vae_kl_b', 'config.json')));
    const keys = stateDictEntries(klModuleSpec(cfg)).map((e) => e.key);
    expect(keys.some((k) => k.startsWith('quant_conv.'))).toBe(false);
    expect(keys).toContain('post_quant_conv.weight');
    expect(keys.some((k) => k.includes('attentions'))).toBe(false);
    expect(keys).toContain('decoder.up_blocks.2.resnets.2.conv2.weight');
  });

  it('rejects an unknown attention implementation', () => {
    const cfg = parseKlConfig({});
    expect(thrown(() => klModuleSpec(cfg, { attention: 'flash' as 'math' })).code).toBe('E_OPTION');
  });
});
