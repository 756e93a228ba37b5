"""Golden vectors for lib/vae/dc.ts: diffusers' AutoencoderDC (DC-AE) on tiny random-weight configs.

Run (writes test/fixtures/golden/vae_dc_*/ and test/fixtures/vae-configs/dc-ae-f32c32-sana-1.1.json):
  PYTHONPATH=/work/src/diffusers/src /work/venvs/diffusers/bin/python scripts/golden/vae_dc.py

Each case folder is a diffusers model folder (config.json + diffusion_pytorch_model.safetensors),
plus
  inputs.safetensors   images (B,3,H,W) in [-1,1] (non-square) and images_small (1,3,h,w): a map
                       small enough that the deepest EfficientViT blocks take diffusers' quadratic
                       attention path (H*W <= attention_head_dim); float32
  outputs.safetensors  latent = encode(images).latent, decode = _decode(latent), and the same for
                       images_small (latent_small, decode_small); vae_dc_a adds latent_bf16 /
                       decode_bf16 from the model cast to bfloat16 (diffusers' float32 upcast in
                       the linear attention included)
  case.json            the config, what each tensor is, the versions, the float32-vs-float64 differences.
Weights: diffusers' init (seeded), then norm weights 1 + 0.1*N, norm biases 0.1*N, BatchNorm running
means 0.1*N and variances 0.5 + U(0, 1), num_batches_tracked 7, so no norm is the identity.
The model runs in eval mode (BatchNorm uses its running statistics).
"""
import copy
import json
import os
import sys

import torch
import diffusers
from diffusers import AutoencoderDC
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
            if p.dim() == 1 and ('norm' in name):
                noise = torch.randn(p.shape, generator=g)
                p.copy_(1 + noise * 0.1 if name.endswith('weight') else noise * 0.1)
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith('num_batches_tracked'):
                b.fill_(7)


def run(model: AutoencoderDC, images: torch.Tensor, small: torch.Tensor) -> dict:
    with torch.no_grad():
        lat = model.encode(images).latent
        dec = model._decode(lat)
        lat_s = model.encode(small).latent
        dec_s = model._decode(lat_s)
    return {'latent': lat.contiguous(), 'decode': dec.contiguous(),
            'latent_small': lat_s.contiguous(), 'decode_small': dec_s.contiguous()}


def attention_paths(model: AutoencoderDC, images: torch.Tensor, small: torch.Tensor) -> dict:
    """Which SanaMultiscaleLinearAttention calls took the linear / quadratic path, per input."""
    seen = []
    hooks = []
    for name, m in model.named_modules():
        if type(m).__name__ == 'SanaMultiscaleLinearAttention':
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: seen.append(
                    (name, 'linear' if args[0].shape[-2] * args[0].shape[-1] > mod.attention_head_dim else 'quadratic'))))
    out = {}
    with torch.no_grad():
        for key, x in (('images', images), ('images_small', small)):
            seen.clear()
            lat = model.encode(x).latent
            model._decode(lat)
            out[key] = sorted(set(p for _, p in seen))
    for h in hooks:
        h.remove()
    return out


def write_config(model: AutoencoderDC, path: str, given: dict) -> None:
    # Only the keys the case sets (the rest must come from the parser's defaults, as from a hub config
    # that omits them); tuples become lists as in diffusers' own config.json.
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    cfg = {'_class_name': 'AutoencoderDC', '_diffusers_version': diffusers.__version__,
           **{k: plain(v) for k, v in given.items()}}
    with open(path, 'w') as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write('\n')


def run_bf16(model: AutoencoderDC, images: torch.Tensor, latent: torch.Tensor) -> dict:
    """The model cast to bfloat16 (as TiM runs it: .to(dtype=bf16)); its linear attention upcasts to float32."""
    mb = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        lat = mb.encode(images.to(torch.bfloat16)).latent
        dec = mb._decode(latent.to(torch.bfloat16))
    return {'latent_bf16': lat.contiguous(), 'decode_bf16': dec.contiguous()}


def case(name: str, kwargs: dict, seed: int, batch: int, hw: tuple, hw_small: tuple, note: str, bf16: bool = False) -> None:
    torch.manual_seed(seed)
    model = AutoencoderDC(**kwargs).eval()
    perturb(model, seed + 1)
    f = model.spatial_compression_ratio
    assert hw[0] % f == 0 and hw[1] % f == 0 and hw_small[0] % f == 0 and hw_small[1] % f == 0
    g = torch.Generator().manual_seed(seed + 2)
    images = torch.rand(batch, kwargs.get('in_channels', 3), *hw, generator=g) * 2 - 1
    small = torch.rand(1, kwargs.get('in_channels', 3), *hw_small, generator=g) * 2 - 1
    out = run(model, images, small)
    paths = attention_paths(model, images, small)
    out_bf16 = run_bf16(model, images, out['latent']) if bf16 else {}
    # float64 rerun: how far float32 itself is from the exact result (the tests' tolerance floor).
    m64 = AutoencoderDC(**kwargs).eval().double()
    m64.load_state_dict(model.state_dict())
    out64 = run(m64, images.double(), small.double())
    diffs = {k: float((out[k].double() - out64[k]).abs().max()) for k in out}

    d = os.path.join(GOLDEN, name)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    write_config(model, os.path.join(d, 'config.json'), kwargs)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(d, 'diffusion_pytorch_model.safetensors'))
    save_file({'images': images.contiguous(), 'images_small': small.contiguous()}, os.path.join(d, 'inputs.safetensors'))
    save_file({**out, **out_bf16}, os.path.join(d, 'outputs.safetensors'))
    meta = {
        'generator': 'scripts/golden/vae_dc.py',
        'diffusers': diffusers.__version__, 'diffusers_commit': DIFFUSERS_COMMIT, 'torch': torch.__version__,
        'note': note,
        'config': kwargs,
        'spatial_compression_ratio': f,
        'state_dict_entries': len(sd),
        'parameters': sum(p.numel() for p in model.parameters()),
        'attention_paths': paths,
        'inputs': {'images': list(images.shape), 'images_small': list(small.shape)},
        'outputs': {
            'latent': 'encode(images).latent', 'decode': '_decode(latent)',
            'latent_small': 'encode(images_small).latent', 'decode_small': '_decode(latent_small)',
            **({'latent_bf16': 'the model and images cast to bfloat16: encode(images).latent (bfloat16)',
                'decode_bf16': 'the bfloat16 model: _decode(latent cast to bfloat16) (bfloat16)'} if bf16 else {}),
        },
        'float32_vs_float64_max_abs': diffs,
    }
    with open(os.path.join(d, 'case.json'), 'w') as fh:
        json.dump(meta, fh, indent=2)
        fh.write('\n')
    print(name, {k: list(v.shape) for k, v in out.items()}, paths, diffs, 'bytes', os.path.getsize(os.path.join(d, 'diffusion_pytorch_model.safetensors')))


# mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers config.json. diffusers' conversion script
# (scripts/convert_dcae_to_diffusers.py, get_ae_config) lists dc-ae-f32c32-sana-1.0; efficientvit's
# model zoo builds sana-1.0 and sana-1.1 from the same config (1.1 = retrained decoder weights), and
# the hub configs spell the downsampling "Conv" and carry no shortcut / conv_act keys (defaults apply).
SANA_1_1 = {
    '_class_name': 'AutoencoderDC',
    '_diffusers_version': '0.32.0.dev0',
    'attention_head_dim': 32,
    'decoder_act_fns': 'silu',
    'decoder_block_out_channels': [128, 256, 512, 512, 1024, 1024],
    'decoder_block_types': ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'EfficientViTBlock', 'EfficientViTBlock'],
    'decoder_layers_per_block': [3, 3, 3, 3, 3, 3],
    'decoder_norm_types': 'rms_norm',
    'decoder_qkv_multiscales': [[], [], [], [5], [5], [5]],
    'downsample_block_type': 'Conv',
    'encoder_block_out_channels': [128, 256, 512, 512, 1024, 1024],
    'encoder_block_types': ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'EfficientViTBlock', 'EfficientViTBlock'],
    'encoder_layers_per_block': [2, 2, 2, 3, 3, 3],
    'encoder_qkv_multiscales': [[], [], [], [5], [5], [5]],
    'in_channels': 3,
    'latent_channels': 32,
    'scaling_factor': 0.41407,
    'upsample_block_type': 'interpolate',
}


def published() -> None:
    os.makedirs(CONFIGS, exist_ok=True)
    with open(os.path.join(CONFIGS, 'dc-ae-f32c32-sana-1.1.json'), 'w') as f:
        json.dump(SANA_1_1, f, indent=2)
        f.write('\n')
    kwargs = {k: v for k, v in SANA_1_1.items() if not k.startswith('_')}
    with torch.device('meta'):  # shapes only: no 1.3 GB of random weights
        model = AutoencoderDC(**kwargs)
    entries = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    total = sum(p.numel() for p in model.parameters())
    d = os.path.join(GOLDEN, 'vae_dc_sana_1_1')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'state_dict.json'), 'w') as f:
        json.dump({'config': 'test/fixtures/vae-configs/dc-ae-f32c32-sana-1.1.json', 'diffusers': diffusers.__version__,
                   'diffusers_commit': DIFFUSERS_COMMIT, 'torch': torch.__version__,
                   'spatial_compression_ratio': model.spatial_compression_ratio,
                   'parameters': total, 'state_dict': entries}, f, indent=1)
        f.write('\n')
    print('dc-ae-f32c32-sana-1.1 parameters', total, 'state_dict entries', len(entries))


CASES = {
    # pixel_unshuffle / pixel_shuffle, RMSNorm everywhere, both shortcuts, per-block act list with gelu,
    # EfficientViT blocks in both halves (single and 3-kernel multiscale), factor 4.
    'vae_dc_a': dict(
        kwargs=dict(
            in_channels=3, latent_channels=4, attention_head_dim=8,
            encoder_block_types=['ResBlock', 'ResBlock', 'EfficientViTBlock'],
            decoder_block_types=['ResBlock', 'EfficientViTBlock', 'EfficientViTBlock'],
            encoder_block_out_channels=[8, 16, 16], decoder_block_out_channels=[8, 16, 16],
            encoder_layers_per_block=[1, 1, 2], decoder_layers_per_block=[1, 1, 1],
            encoder_qkv_multiscales=[[], [], [5]], decoder_qkv_multiscales=[[], [3], [5]],
            upsample_block_type='pixel_shuffle', downsample_block_type='pixel_unshuffle',
            decoder_norm_types='rms_norm', decoder_act_fns=['gelu', 'silu', 'silu'],
            encoder_out_shortcut=True, decoder_in_shortcut=True, decoder_conv_act_fn='relu', scaling_factor=0.5),
        seed=11, batch=2, hw=(32, 24), hw_small=(8, 12), bf16=True,
        note='pixel_unshuffle/pixel_shuffle, rms_norm, shortcuts on, gelu+silu decoder acts, relu conv_act'),
    # 0-layer first stages (DCDownBlock2d conv_in, DCUpBlock2d conv_out without shortcut), strided-conv
    # downsampling ("Conv"), interpolate upsampling, BatchNorm decoder (ResBlocks and an EfficientViT
    # attention norm), a null act (Identity), two qkv scales, shortcuts off, silu conv_act.
    'vae_dc_b': dict(
        kwargs=dict(
            in_channels=3, latent_channels=8, attention_head_dim=8,
            encoder_block_types=['ResBlock', 'ResBlock', 'EfficientViTBlock'],
            decoder_block_types=['ResBlock', 'ResBlock', 'EfficientViTBlock'],
            encoder_block_out_channels=[8, 16, 32], decoder_block_out_channels=[8, 16, 32],
            encoder_layers_per_block=[0, 1, 1], decoder_layers_per_block=[0, 2, 1],
            encoder_qkv_multiscales=[[], [], [3, 5]], decoder_qkv_multiscales=[[], [], [5]],
            upsample_block_type='interpolate', downsample_block_type='Conv',
            decoder_norm_types=['batch_norm', 'batch_norm', 'batch_norm'], decoder_act_fns=['relu', None, 'silu'],
            encoder_out_shortcut=False, decoder_in_shortcut=False, decoder_conv_act_fn='silu', scaling_factor=0.41407),
        seed=22, batch=2, hw=(24, 32), hw_small=(8, 8),
        note='0-layer first stages, Conv/interpolate, batch_norm decoder, null act, two qkv scales, shortcuts off'),
    # Single-string options, defaults for the shortcuts / conv_act / scaling_factor, a head dim that
    # does not divide the channels (heads = C // 12), EfficientViT with no multiscale branch, mish,
    # lower-case "conv" downsampling, two blocks (factor 2).
    'vae_dc_c': dict(
        kwargs=dict(
            in_channels=3, latent_channels=8, attention_head_dim=12,
            encoder_block_types='EfficientViTBlock', decoder_block_types='ResBlock',
            encoder_block_out_channels=[16, 32], decoder_block_out_channels=[16, 32],
            encoder_layers_per_block=[1, 1], decoder_layers_per_block=[2, 1],
            encoder_qkv_multiscales=[[3], []], decoder_qkv_multiscales=[[], []],
            upsample_block_type='pixel_shuffle', downsample_block_type='conv',
            decoder_norm_types='batch_norm', decoder_act_fns='mish'),
        seed=33, batch=1, hw=(20, 12), hw_small=(4, 6),
        note='string options, default shortcuts/conv_act/scaling_factor, heads = C // 12, no-multiscale EfficientViT, mish'),
}

if __name__ == '__main__':
    for name, c in CASES.items():
        case(name, **c)
    if '--no-published' not in sys.argv:
        published()
