"""Golden vectors for lib/vae/kl.ts: diffusers' AutoencoderKL on tiny random-weight configs.

Run (writes test/fixtures/golden/vae_kl_*/ and test/fixtures/vae-configs/):
  PYTHONPATH=/work/src/diffusers/src /work/venvs/diffusers/bin/python scripts/golden/vae_kl.py

Each case folder is a diffusers model folder (config.json + diffusion_pytorch_model.safetensors, or
.bin for the torch.save case) that VAE.load reads as it is, plus
  inputs.safetensors   images (B,3,H,W) in [-1,1] and latents z (B,C,h,w), float32
  outputs.safetensors  encode mean / logvar (logvar clamped as DiagonalGaussianDistribution does),
                       decode(z), decode(mean) (the round trip), and for the BatchNorm case the
                       official wrapper's normalisation (to_latents, from_latents)
  case.json            what each tensor is, the versions, and the float32-vs-float64 differences.
Every weight is diffusers' init plus seeded noise (norm weights 1 + 0.1·N, biases 0.1·N), so no
path is trivially the identity.
"""
import json
import os
import sys

import torch
import diffusers
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
GOLDEN = os.path.join(ROOT, 'test', 'fixtures', 'golden')
CONFIGS = os.path.join(ROOT, 'test', 'fixtures', 'vae-configs')
DIFFUSERS_COMMIT = '58eb52c0803ea9af3abec60841c2a093bdf1f951'

torch.set_num_threads(1)


def perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith('bias'):
                p.copy_(noise * 0.1)
            elif p.dim() == 1:  # group-norm weight
                p.copy_(1 + noise * 0.1)
            else:
                p.add_(noise * 0.02)


def run(model: AutoencoderKL, images: torch.Tensor, z: torch.Tensor):
    with torch.no_grad():
        post = model.encode(images).latent_dist
        mean, logvar = post.mean, post.logvar
        dec = model.decode(z).sample
        rt = model.decode(mean).sample
    return {'mean': mean.contiguous(), 'logvar': logvar.contiguous(), 'decode': dec.contiguous(), 'roundtrip': rt.contiguous()}


def write_config(model: AutoencoderKL, path: str) -> None:
    cfg = dict(model.config)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if not k.startswith('_')}
    cfg = {'_class_name': 'AutoencoderKL', '_diffusers_version': diffusers.__version__, **cfg}
    with open(path, 'w') as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write('\n')


def case(name: str, kwargs: dict, seed: int, batch: int, hw: tuple, weights: str = 'safetensors', bn: bool = False) -> None:
    torch.manual_seed(seed)
    model = AutoencoderKL(**kwargs).eval()
    perturb(model, seed + 1)
    f = 2 ** (len(kwargs['block_out_channels']) - 1)
    H, W = hw
    g = torch.Generator().manual_seed(seed + 2)
    images = torch.rand(batch, 3, H, W, generator=g) * 2 - 1
    z = torch.randn(batch, kwargs.get('latent_channels', 4), H // f, W // f, generator=g)
    out = run(model, images, z)
    # float64 rerun: how far float32 itself is from the exact result (the tests' tolerance floor).
    m64 = AutoencoderKL(**kwargs).eval().double()
    m64.load_state_dict(model.state_dict())
    out64 = run(m64, images.double(), z.double())
    diffs = {k: float((out[k].double() - out64[k]).abs().max()) for k in out}

    d = os.path.join(GOLDEN, name)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    write_config(model, os.path.join(d, 'config.json'))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    extra = {}
    if bn:
        # The official TiM wrapper (tim/models/vae/sd_vae.py MyAutoencoderKL) adds
        # bn = BatchNorm2d(latent_channels, eps=1e-4, affine=False); its running stats are the latent
        # normalisation: mean = running_mean, std = sqrt(running_var) (no eps).
        C = kwargs.get('latent_channels', 4)
        rm = torch.randn(C, generator=g) * 0.3
        rv = torch.rand(C, generator=g) * 20 + 5
        sd['bn.running_mean'] = rm
        sd['bn.running_var'] = rv
        sd['bn.num_batches_tracked'] = torch.tensor(1234, dtype=torch.int64)
        mean = rm.view(1, -1, 1, 1)
        std = rv.sqrt().view(1, -1, 1, 1)
        lat = (out['mean'] - mean) / std
        extra = {'to_latents': lat.contiguous(), 'from_latents': (lat * std + mean).contiguous()}
    if weights == 'safetensors':
        save_file(sd, os.path.join(d, 'diffusion_pytorch_model.safetensors'))
    else:
        torch.save(sd, os.path.join(d, 'diffusion_pytorch_model.bin'))
    save_file({'images': images.contiguous(), 'z': z.contiguous()}, os.path.join(d, 'inputs.safetensors'))
    save_file({**out, **extra}, os.path.join(d, 'outputs.safetensors'))
    meta = {
        'generator': 'scripts/golden/vae_kl.py',
        'diffusers': diffusers.__version__, 'diffusers_commit': DIFFUSERS_COMMIT, 'torch': torch.__version__,
        'attention_processor': type(model.decoder.mid_block.attentions[0].processor).__name__ if kwargs.get('mid_block_add_attention', True) else None,
        'config': kwargs, 'weights': weights, 'bn_stats': bn,
        'inputs': {'images': list(images.shape), 'z': list(z.shape)},
        'outputs': {
            'mean': 'encode(images).latent_dist.mean', 'logvar': 'encode(images).latent_dist.logvar (clamped to [-30, 20])',
            'decode': 'decode(z).sample', 'roundtrip': 'decode(mean).sample',
            **({'to_latents': '(mean - bn.running_mean) / sqrt(bn.running_var)', 'from_latents': 'to_latents * std + mean'} if bn else {}),
        },
        'float32_vs_float64_max_abs': diffs,
    }
    with open(os.path.join(d, 'case.json'), 'w') as fh:
        json.dump(meta, fh, indent=2)
        fh.write('\n')
    print(name, {k: list(v.shape) for k, v in out.items()}, diffs)


SD_VAE_FT_EMA = {
    # stabilityai/sd-vae-ft-ema config.json as published (diffusers 0.4.2; no scaling_factor key:
    # diffusers' default 0.18215 applies).
    '_class_name': 'AutoencoderKL',
    '_diffusers_version': '0.4.2',
    'act_fn': 'silu',
    'block_out_channels': [128, 256, 512, 512],
    'down_block_types': ['DownEncoderBlock2D'] * 4,
    'in_channels': 3,
    'latent_channels': 4,
    'layers_per_block': 2,
    'norm_num_groups': 32,
    'out_channels': 3,
    'sample_size': 256,
    'up_block_types': ['UpDecoderBlock2D'] * 4,
}


def published() -> None:
    os.makedirs(CONFIGS, exist_ok=True)
    with open(os.path.join(CONFIGS, 'sd-vae-ft-ema.json'), 'w') as f:
        json.dump(SD_VAE_FT_EMA, f, indent=2)
        f.write('\n')
    kwargs = {k: v for k, v in SD_VAE_FT_EMA.items() if not k.startswith('_')}
    model = AutoencoderKL(**kwargs)
    entries = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    total = sum(p.numel() for p in model.parameters())
    d = os.path.join(GOLDEN, 'vae_kl_sd_vae_ft_ema')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'state_dict.json'), 'w') as f:
        json.dump({'config': 'test/fixtures/vae-configs/sd-vae-ft-ema.json', 'diffusers': diffusers.__version__,
                   'diffusers_commit': DIFFUSERS_COMMIT, 'torch': torch.__version__,
                   'parameters': total, 'state_dict': entries}, f, indent=1)
        f.write('\n')
    print('sd-vae-ft-ema parameters', total, 'state_dict entries', len(entries))


if __name__ == '__main__':
    base = dict(down_block_types=['DownEncoderBlock2D'] * 2, up_block_types=['UpDecoderBlock2D'] * 2,
                block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, latent_channels=4)
    case('vae_kl_a', base, seed=1, batch=2, hw=(24, 16))
    case('vae_kl_b', dict(down_block_types=['DownEncoderBlock2D'] * 3, up_block_types=['UpDecoderBlock2D'] * 3,
                          block_out_channels=[8, 16, 16], layers_per_block=2, norm_num_groups=4, latent_channels=3,
                          use_quant_conv=False, mid_block_add_attention=False, scaling_factor=0.5, shift_factor=0.1),
         seed=2, batch=1, hw=(24, 16))
    case('vae_kl_bin', base, seed=3, batch=2, hw=(16, 24), weights='bin', bn=True)
    if '--no-published' not in sys.argv:
        published()
