"""Python side of bench/vae-decode.ts: diffusers' own VAE decode (AutoencoderKL / AutoencoderDC) on
the same torch as the Node side, as the official TiM sampler calls it (sd_vae_decode /
dc_ae_decode: `vae._decode(z)` under no_grad, float32, slice_vae = chunks of one).

Needs diffusers importable (PYTHONPATH=/work/src/diffusers/src with /work/venvs/diffusers/bin/python).

argv[1] = JSON {"mode": "make", "family", "config", "folder", "seed"}: builds the model from the
  config with diffusers' init under `seed`, saves it as a diffusers folder (config.json +
  diffusion_pytorch_model.safetensors) and exits.
argv[1] = JSON {"mode": "serve", "family", "folder", "threads", "z", "shape"}: prints {"torch", ...};
  then per line {"batch": b, "reps": k} → {"ms": [...], "cpu_ms": [...]} (decode of z[:b]);
  {"write": path, "batch": b} writes decode(z[:b]) as raw float32 and prints {"ok": true};
  {"quit": true} ends.
argv[1] = JSON {"mode": "rss", "family", "folder", "threads", "z", "shape", "slice": s or null}: in
  a fresh process, loads, decodes the whole z (sliced by `slice`), prints ru_maxrss before and after.
"""
import json
import resource
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_grad_enabled(False)

import diffusers  # noqa: E402
from diffusers import AutoencoderDC, AutoencoderKL  # noqa: E402

CLS = {'AutoencoderKL': AutoencoderKL, 'AutoencoderDC': AutoencoderDC}[cfg['family']]


def decode(vae, z):
    # AutoencoderKL._decode returns a DecoderOutput (the official code takes .sample), AutoencoderDC._decode a tensor.
    out = vae._decode(z)
    return out.sample if hasattr(out, 'sample') else out


def sliced(vae, z, s):
    if s is None or z.shape[0] <= s:
        return decode(vae, z)
    return torch.cat([decode(vae, part) for part in z.split(s)])


def load():
    vae = CLS.from_pretrained(cfg['folder']).to(torch.float32)
    vae.eval()
    vae.requires_grad_(False)
    return vae


def read_z():
    with open(cfg['z'], 'rb') as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(cfg['shape'])


def maxrss_mb():
    # VmHWM: the peak RSS of this process's own memory map. ru_maxrss would not do: Linux carries the
    # parent's peak into a forked-and-exec'd child's ru_maxrss, so a child of the (big) bench process
    # would report the parent's peak.
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if cfg['mode'] == 'make':
    torch.manual_seed(cfg['seed'])
    conf = {k: v for k, v in cfg['config'].items() if not k.startswith('_')}
    CLS(**conf).save_pretrained(cfg['folder'], safe_serialization=True)
    print(json.dumps({'ok': True, 'parameters': sum(p.numel() for p in CLS.from_pretrained(cfg['folder']).parameters())}))
    sys.exit(0)

torch.set_num_threads(cfg['threads'])
vae = load()
z = read_z()

if cfg['mode'] == 'rss':
    before = maxrss_mb()
    t0 = time.perf_counter()
    out = sliced(vae, z, cfg.get('slice'))
    print(json.dumps({'rss_before_mb': before, 'max_rss_mb': maxrss_mb(), 'ms': (time.perf_counter() - t0) * 1000, 'shape': list(out.shape)}))
    sys.exit(0)

print(json.dumps({'torch': torch.__version__, 'diffusers': diffusers.__version__, 'threads': torch.get_num_threads()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req.get('quit'):
        break
    zb = z[: req['batch']]
    if 'write' in req:
        out = decode(vae, zb).contiguous()
        with open(req['write'], 'wb') as f:
            f.write(out.numpy().tobytes())
        print(json.dumps({'ok': True}), flush=True)
        continue
    ms, cpu = [], []
    for _ in range(req['reps']):
        c0 = time.process_time()
        t0 = time.perf_counter()
        decode(vae, zb)
        ms.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    print(json.dumps({'ms': ms, 'cpu_ms': cpu}), flush=True)
