/**
 * lib/vae/vae.ts (`VAE`, exported from 'tim-torch'): diffusers folders loaded strictly, encode /
 * decode against diffusers' golden vectors (test/fixtures/golden/vae_kl_*), the official TiM
 * normalisation (BatchNorm statistics of the .bin case, or 1/scaling_factor without them), sliced
 * decode, posterior sampling, typed errors for every bad folder and input, and no leaked tensors.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VAE, torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { GOLDEN_DIR, get, loadGolden, maxAbsDiff } from './helpers/golden.js';
import { thrown } from './helpers/tensor-expect.js';

const TOL = 2e-5;
const A = path.join(GOLDEN_DIR, 'vae_kl_a');
const B = path.join(GOLDEN_DIR, 'vae_kl_b');
const BIN = path.join(GOLDEN_DIR, 'vae_kl_bin');

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'tim-vae-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** A copy of golden folder `from` whose config.json and/or weights were changed. */
function variant(name: string, from: string, o: { config?: (c: Record<string, unknown>) => unknown; weights?: (w: Record<string, Tensor>) => Record<string, Tensor>; noConfig?: boolean; noWeights?: boolean } = {}): string {
  const dir = path.join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(path.join(from, 'config.json'), 'utf8')) as Record<string, unknown>;
  if (!o.noConfig) writeFileSync(path.join(dir, 'config.json'), typeof o.config === 'function' ? JSON.stringify(o.config(cfg)) : JSON.stringify(cfg));
  if (!o.noWeights) {
    const src = path.join(from, 'diffusion_pytorch_model.safetensors');
    if (o.weights) {
      torch.scope(() => torch.save(o.weights!(torch.load(src, { lazy: false })), path.join(dir, 'diffusion_pytorch_model.safetensors')));
    } else {
      copyFileSync(src, path.join(dir, 'diffusion_pytorch_model.safetensors'));
    }
  }
  return dir;
}

describe('VAE.load + encode/decode (AutoencoderKL, diffusers golden)', () => {
  it.each([
    ['vae_kl_a', { scalingFactor: 0.18215, shiftFactor: 0, latentChannels: 4, downsampleFactor: 2 }],
    ['vae_kl_b', { scalingFactor: 0.5, shiftFactor: 0.1, latentChannels: 3, downsampleFactor: 4 }],
  ])('%s: facts, encode, decode, sliced decode', (name, facts) => {
    const g = loadGolden(name);
    const vae = VAE.load(path.join(GOLDEN_DIR, name));
    try {
      expect(vae).toMatchObject({ family: 'AutoencoderKL', dtype: 'float32', device: 'cpu', inChannels: 3, hasBatchNormStats: false, ...facts });
      torch.scope(() => {
        const { mean, logvar } = vae.encode(get(g.inputs, 'images'));
        expect(maxAbsDiff(mean, get(g.outputs, 'mean'))).toBeLessThan(TOL);
        expect(maxAbsDiff(logvar!, get(g.outputs, 'logvar'))).toBeLessThan(TOL);
        expect(mean.requiresGrad).toBe(false);
        const z = get(g.inputs, 'z');
        const whole = vae.decode(z);
        expect(maxAbsDiff(whole, get(g.outputs, 'decode'))).toBeLessThan(TOL);
        // Slices are decoded one by one and concatenated (batch-size-dependent kernels differ by ~1e-6).
        const sliced = vae.decode(z, { sliceSize: 1 });
        expect(maxAbsDiff(sliced, get(g.outputs, 'decode'))).toBeLessThan(TOL);
        expect(maxAbsDiff(sliced.narrow(0, 0, 1), vae.decode(z.narrow(0, 0, 1)))).toBe(0);
        // Without BatchNorm statistics the official normalisation is z · scaling_factor (init_bn).
        const lat = vae.toLatents(mean);
        expect(maxAbsDiff(lat, mean.mul(facts.scalingFactor))).toBeLessThan(1e-6);
        expect(maxAbsDiff(vae.fromLatents(lat), mean)).toBeLessThan(1e-6);
        expect(maxAbsDiff(vae.decodeLatents(lat), get(g.outputs, 'roundtrip'))).toBeLessThan(TOL);
      });
    } finally {
      vae.dispose();
      g.dispose();
    }
  });

  it(".bin folder with the official wrapper's BatchNorm statistics: normalisation and sliced decodeLatents", () => {
    const g = loadGolden('vae_kl_bin');
    const vae = VAE.load(BIN);
    try {
      expect(vae.hasBatchNormStats).toBe(true);
      torch.scope(() => {
        const images = get(g.inputs, 'images');
        expect(images.shape).toEqual([2, 3, 16, 24]);
        const lat = vae.encodeLatents(images, { sample: false });
        expect(maxAbsDiff(lat, get(g.outputs, 'to_latents'))).toBeLessThan(TOL);
        expect(maxAbsDiff(vae.fromLatents(get(g.outputs, 'to_latents')), get(g.outputs, 'from_latents'))).toBeLessThan(1e-6);
        const dec = vae.decodeLatents(get(g.outputs, 'to_latents'), { sliceSize: 1 });
        expect(maxAbsDiff(dec, get(g.outputs, 'roundtrip'))).toBeLessThan(TOL);
        const { mean, std } = vae.latentStats();
        expect(mean.shape).toEqual([1, 4, 1, 1]);
        // running_var was drawn in [5, 25): std in [√5, 5), not the 1/0.18215 default.
        expect(std.min().item()).toBeGreaterThan(2.2);
      });
    } finally {
      vae.dispose();
      g.dispose();
    }
  });

  it('encodeLatents samples the posterior: mean + exp(logvar/2)·noise, seeded without touching the global generator', () => {
    const vae = VAE.load(A);
    const g = loadGolden('vae_kl_a');
    try {
      torch.scope(() => {
        const images = get(g.inputs, 'images');
        const { mean, logvar } = vae.encode(images);
        const noise = torch.randn(mean.shape);
        const expected = vae.toLatents(mean.add(logvar!.mul(0.5).exp().mul(noise)));
        expect(maxAbsDiff(vae.encodeLatents(images, { noise }), expected)).toBeLessThan(1e-6);
        // Default: sampled, so two calls differ; sample false is the mean.
        expect(maxAbsDiff(vae.encodeLatents(images), vae.encodeLatents(images))).toBeGreaterThan(1e-3);
        expect(maxAbsDiff(vae.encodeLatents(images, { sample: false }), vae.toLatents(mean))).toBe(0);
        torch.manualSeed(5);
        const s1 = vae.encodeLatents(images, { seed: 11 });
        const after = torch.randn([4]);
        torch.manualSeed(5);
        const s2 = vae.encodeLatents(images, { seed: 11 });
        expect(maxAbsDiff(s1, s2)).toBe(0);
        expect(maxAbsDiff(torch.randn([4]), after)).toBe(0);
        expect(thrown(() => vae.encodeLatents(images, { noise: torch.randn([1, 4, 12, 8]) })).code).toBe('E_SHAPE');
      });
    } finally {
      vae.dispose();
      g.dispose();
    }
  });

  it('bfloat16: decodes in bf16 close to float32', () => {
    const g = loadGolden('vae_kl_a');
    const vae = VAE.load(A, { dtype: 'bfloat16' });
    try {
      expect(vae.dtype).toBe('bfloat16');
      torch.scope(() => {
        const out = vae.decode(get(g.inputs, 'z'));
        expect(out.dtype).toBe('bfloat16');
        const err = maxAbsDiff(out.to('float32'), get(g.outputs, 'decode'));
        expect(err).toBeLessThan(0.15);
        expect(err).toBeGreaterThan(0); // really ran in bf16
      });
    } finally {
      vae.dispose();
      g.dispose();
    }
  });
});

describe('VAE.load + encode/decode (AutoencoderDC, diffusers golden from lib/vae/dc.ts)', () => {
  it('vae_dc_a: facts, encode (the latent, no logvar), decode, normalisation, sliced decodeLatents', () => {
    const g = loadGolden('vae_dc_a');
    const vae = VAE.load(path.join(GOLDEN_DIR, 'vae_dc_a'));
    try {
      expect(vae).toMatchObject({ family: 'AutoencoderDC', inChannels: 3, latentChannels: 4, downsampleFactor: 4, scalingFactor: 0.5, shiftFactor: 0, hasBatchNormStats: false });
      torch.scope(() => {
        const images = get(g.inputs, 'images');
        const enc = vae.encode(images);
        expect(enc.logvar).toBeUndefined();
        const latent = get(g.outputs, 'latent');
        expect(maxAbsDiff(enc.mean, latent)).toBeLessThan(TOL);
        expect(maxAbsDiff(vae.decode(latent), get(g.outputs, 'decode'))).toBeLessThan(TOL);
        // DC has no posterior: encodeLatents is toLatents(latent) = latent · scaling_factor, sampled or not.
        const lat = vae.encodeLatents(images);
        expect(maxAbsDiff(lat, latent.mul(0.5))).toBeLessThan(TOL);
        expect(maxAbsDiff(vae.encodeLatents(images, { sample: true }), lat)).toBe(0);
        expect(maxAbsDiff(vae.decodeLatents(lat, { sliceSize: 1 }), get(g.outputs, 'decode'))).toBeLessThan(TOL);
        expect(thrown(() => vae.encode(torch.zeros([1, 3, 30, 24]))).code).toBe('E_SHAPE');
      });
    } finally {
      vae.dispose();
      g.dispose();
    }
  });

  it("reads the official MyAutoencoderDC's BatchNorm statistics too", () => {
    const dir = variant('dc-bn', path.join(GOLDEN_DIR, 'vae_dc_a'), {
      weights: (w) => ({ ...w, 'bn.running_mean': torch.tensor([0.1, -0.2, 0.3, 0], { dtype: 'float32' }), 'bn.running_var': torch.tensor([4, 9, 16, 1], { dtype: 'float32' }), 'bn.num_batches_tracked': torch.tensor([7], { dtype: 'int64' }).reshape([]) }),
    });
    const vae = VAE.load(dir);
    try {
      expect(vae.hasBatchNormStats).toBe(true);
      torch.scope(() => {
        const z = torch.ones([1, 4, 2, 2]);
        expect(vae.toLatents(z).index(0, torch.tensor([0, 1, 2, 3], { dtype: 'int64' }), 0, 0).toArray()).toEqual([
          Math.fround(0.9 / 2), Math.fround(1.2 / 3), Math.fround(0.7 / 4), 1,
        ]);
      });
    } finally {
      vae.dispose();
    }
  });
});

describe('VAE input checks', () => {
  let vae: VAE;
  beforeAll(() => {
    vae = VAE.load(A);
  });
  afterAll(() => vae.dispose());

  it.each([
    ['rank 3', () => torch.zeros([3, 24, 16]), 'E_SHAPE'],
    ['4 channels', () => torch.zeros([1, 4, 24, 16]), 'E_SHAPE'],
    ['H not a multiple of 2', () => torch.zeros([1, 3, 23, 16]), 'E_SHAPE'],
    ['empty batch', () => torch.zeros([0, 3, 24, 16]), 'E_SHAPE'],
    ['int64 images', () => torch.zeros([1, 3, 24, 16], { dtype: 'int64' }), 'E_DTYPE'],
  ])('encode rejects %s', (_n, make, code) => {
    torch.scope(() => {
      const x = make();
      expect(thrown(() => vae.encode(x)).code).toBe(code);
      expect(thrown(() => vae.encodeLatents(x)).code).toBe(code);
    });
  });

  it('decode rejects wrong latents, bad sliceSize, unknown options, non-tensors and disposed tensors', () => {
    torch.scope(() => {
      expect(thrown(() => vae.decode(torch.zeros([1, 3, 6, 4]))).code).toBe('E_SHAPE');
      expect(thrown(() => vae.decodeLatents(torch.zeros([4, 6, 4]))).code).toBe('E_SHAPE');
      expect(thrown(() => vae.toLatents(torch.zeros([1, 5, 6, 4]))).code).toBe('E_SHAPE');
      const z = torch.zeros([2, 4, 6, 4]);
      expect(thrown(() => vae.decode(z, { sliceSize: 0 })).code).toBe('E_RANGE');
      expect(thrown(() => vae.decode(z, { sliceSize: 1.5 })).code).toBeDefined();
      expect(thrown(() => vae.decode(z, { slices: 1 } as never)).code).toBe('E_OPTION');
      expect(thrown(() => vae.decode([1, 2] as never)).code).toBe('E_ARG');
      const d = torch.zeros([1, 4, 6, 4]);
      d.dispose();
      expect(thrown(() => vae.decode(d)).code).toBe('E_DISPOSED');
    });
  });

  it('rejects bad load options', () => {
    expect(thrown(() => VAE.load(A, { dtype: 'int8' as never })).code).toBe('E_OPTION');
    expect(thrown(() => VAE.load(A, { device: 'tpu' })).code).toBe('E_DEVICE');
    expect(thrown(() => VAE.load(A, { slice: 1 } as never)).code).toBe('E_OPTION');
    expect(thrown(() => VAE.load(A, null as never)).code).toBe('E_ARG');
    expect(thrown(() => VAE.load(A, { attention: 'flash' as never })).code).toBe('E_OPTION');
    if (!torch.libtorchAtLeast(2, 0)) expect(thrown(() => VAE.load(A, { dtype: 'float16' })).code).toBe('E_DTYPE');
    if (!torch.hasOp('aten::scaled_dot_product_attention')) {
      expect(thrown(() => VAE.load(A, { attention: 'sdpa' })).message).toMatch(/needs libtorch >= 2.0/);
    }
    torch.scope(() => {
      const x = torch.zeros([1, 3, 24, 16]);
      expect(thrown(() => vae.encodeLatents(x, null as never)).code).toBe('E_ARG');
      expect(thrown(() => vae.encodeLatents(x, { sample: 1 as never })).code).toBe('E_ARG');
      expect(thrown(() => vae.encodeLatents(x, { seed: -1 })).code).toBe('E_RANGE');
    });
  });
});

describe('VAE.load: bad folders give one typed error each', () => {
  it('no folder, no config.json, bad JSON, not an object, no weights', () => {
    expect(thrown(() => VAE.load(path.join(tmp, 'nope'))).code).toBe('E_VAE_FOLDER');
    expect(thrown(() => VAE.load(variant('no-config', A, { noConfig: true }))).code).toBe('E_VAE_FOLDER');
    const bad = variant('bad-json', A);
    writeFileSync(path.join(bad, 'config.json'), '{"_class_name": "AutoencoderKL",');
    expect(thrown(() => VAE.load(bad)).code).toBe('E_VAE_CONFIG');
    expect(thrown(() => VAE.load(variant('array', A, { config: () => [1] }))).code).toBe('E_VAE_CONFIG');
    const e = thrown(() => VAE.load(variant('no-weights', A, { noWeights: true })));
    expect(e.code).toBe('E_VAE_FOLDER');
    expect(e.message).toMatch(/diffusion_pytorch_model\.safetensors or diffusion_pytorch_model\.bin/);
  });

  it('unknown _class_name and AutoencoderDC', () => {
    const e = thrown(() => VAE.load(variant('vq', A, { config: (c) => ({ ...c, _class_name: 'VQModel' }) })));
    expect(e.code).toBe('E_VAE_CLASS');
    expect(e.message).toMatch(/"VQModel"; known: AutoencoderKL, AutoencoderDC/);
    expect(thrown(() => VAE.load(variant('nocls', A, { config: (c) => ({ ...c, _class_name: undefined }) }))).code).toBe('E_VAE_CLASS');
  });

  it('a bad config value', () => {
    const e = thrown(() => VAE.load(variant('badact', A, { config: (c) => ({ ...c, act_fn: 'tanh' }) })));
    expect(e.code).toBe('E_VAE_CONFIG');
  });

  it('a wrong shape, a missing key, an unexpected key: E_VAE_WEIGHTS naming the key', () => {
    const shape = thrown(() => VAE.load(variant('shape', A, {
      weights: (w) => ({ ...w, 'decoder.conv_out.bias': torch.zeros([4]) }),
    })));
    expect(shape.code).toBe('E_VAE_WEIGHTS');
    expect(shape.message).toMatch(/wrong shape decoder\.conv_out\.bias \(model \[3\], file \[4\]\)/);
    const missing = thrown(() => VAE.load(variant('missing', A, {
      weights: (w) => {
        const { ['encoder.mid_block.attentions.0.to_q.weight']: _drop, ...rest } = w;
        return rest;
      },
    })));
    expect(missing.code).toBe('E_VAE_WEIGHTS');
    expect(missing.message).toMatch(/missing encoder\.mid_block\.attentions\.0\.to_q\.weight/);
    const extra = thrown(() => VAE.load(variant('extra', A, { weights: (w) => ({ ...w, 'encoder.extra.weight': torch.zeros([2]) }) })));
    expect(extra.code).toBe('E_VAE_WEIGHTS');
    expect(extra.message).toMatch(/unexpected encoder\.extra\.weight/);
    // The config says no mid attention, the weights have it: every attention key is unexpected.
    const cfgMismatch = thrown(() => VAE.load(variant('noattn', A, { config: (c) => ({ ...c, mid_block_add_attention: false }) })));
    expect(cfgMismatch.code).toBe('E_VAE_WEIGHTS');
    expect(cfgMismatch.message).toMatch(/unexpected .*attentions/);
  });

  it('BatchNorm statistics: half a pair, a wrong shape, a non-positive variance', () => {
    const half = thrown(() => VAE.load(variant('bn-half', A, { weights: (w) => ({ ...w, 'bn.running_mean': torch.zeros([4]) }) })));
    expect(half.code).toBe('E_VAE_WEIGHTS');
    expect(half.message).toMatch(/bn\.running_mean without bn\.running_var/);
    const shape = thrown(() => VAE.load(variant('bn-shape', A, {
      weights: (w) => ({ ...w, 'bn.running_mean': torch.zeros([3]), 'bn.running_var': torch.ones([3]) }),
    })));
    expect(shape.code).toBe('E_VAE_WEIGHTS');
    expect(shape.message).toMatch(/expected \[4\]/);
    const zero = thrown(() => VAE.load(variant('bn-zero', A, {
      weights: (w) => ({ ...w, 'bn.running_mean': torch.zeros([4]), 'bn.running_var': torch.zeros([4]) }),
    })));
    expect(zero.code).toBe('E_VAE_WEIGHTS');
  });

  it('a TorchScript archive named .bin is refused without running it', () => {
    const dir = variant('ts', A, { noWeights: true });
    const m = torch.jit.createModule('Tiny');
    try {
      m.define('def forward(self, x: Tensor) -> Tensor:\n    return x\n');
      m.save(path.join(dir, 'diffusion_pytorch_model.bin'));
    } finally {
      m.dispose();
    }
    const e = thrown(() => VAE.load(dir));
    expect(e.code).toBe('E_VAE_WEIGHTS');
    expect(e.message).toMatch(/TorchScript archive/);
  });
});

describe('VAE memory', () => {
  it('load, encode, decode, failed loads and dispose leave no live tensors', () => {
    const g = loadGolden('vae_kl_a');
    const images = get(g.inputs, 'images');
    const z = get(g.inputs, 'z');
    const before = torch.memory().liveTensors;
    for (let i = 0; i < 2; i++) {
      const vae = VAE.load(i === 0 ? A : BIN);
      const { mean, logvar } = vae.encode(images);
      const out = [mean, logvar!, vae.decode(z, { sliceSize: 1 }), vae.encodeLatents(images), vae.decodeLatents(z)];
      for (const t of out) t.dispose();
      torch.scope(() => expect(thrown(() => vae.decode(torch.zeros([1, 9, 1, 1]))).code).toBe('E_SHAPE'));
      expect(torch.memory().liveTensors - before).toBeGreaterThan(0); // the module's statistics
      vae.dispose();
      expect(torch.memory().liveTensors).toBe(before);
      vae.dispose(); // idempotent
      expect(thrown(() => vae.decode(z)).code).toBe('E_DISPOSED');
    }
    const shapeDir = variant('leak-shape', A, { weights: (w) => ({ ...w, 'decoder.conv_out.bias': torch.zeros([4]) }) });
    const bnDir = variant('leak-bn', A, { weights: (w) => ({ ...w, 'bn.running_mean': torch.zeros([3]), 'bn.running_var': torch.ones([3]) }) });
    const before2 = torch.memory().liveTensors;
    expect(thrown(() => VAE.load(shapeDir)).code).toBe('E_VAE_WEIGHTS');
    expect(thrown(() => VAE.load(bnDir)).code).toBe('E_VAE_WEIGHTS');
    expect(torch.memory().liveTensors).toBe(before2);
    g.dispose();
  });

  it('strictly no leak over a scope', () => {
    const before = torch.memory().liveTensors;
    torch.scope(() => {
      const vae = VAE.load(B);
      const z = torch.randn([2, 3, 6, 4]);
      vae.decodeLatents(z, { sliceSize: 1 });
      vae.encode(torch.rand([1, 3, 24, 16]));
      vae.dispose();
    });
    expect(torch.memory().liveTensors).toBe(before);
  });
});
