"""Python side of bench/train-step.ts: one full TiM training step the way the official trainer
(projects/train/trainer_c2i.py + tim/schedulers/transition.py) does it, in eager PyTorch on the same
libtorch: noise, label dropout, transition loss (OT-FM, diffusion_ratio 0.5, consistency_ratio 0.1,
DDE derivative eps 0.005 as two no-grad forwards of the transition rows, 'sqrt' tangent time weight,
adaptive weight, directional loss), backward, clip_grad_norm_(1.0), AdamW step, zero_grad(set_to_none),
EMA update (ema.mul_(d).add_(p, alpha=1-d)). Model: test/fixtures/tim_reference.py (the official TiM).

argv[1] = {"params": official network.params, "weights": safetensors path, "inputs": safetensors path
           (x, y), "threads": n, "steps": k, "repo": repo root, "seed": s,
           optional "device": "cpu" (default) | "cuda", "amp": null (default) | "bfloat16" (the whole loss
           under torch.autocast; the DDE forwards with autocast off, as the Node side's default)}
On CUDA every timed step ends with torch.cuda.synchronize(), and the replies carry the peak CUDA memory
(torch.cuda.max_memory_allocated / max_memory_reserved, MiB) and the process id.
Prints {"ready": ..., "loss": first weighted loss}; then per stdin line:
  "run"       -> {"ms": [...], "cpu": [...], "loss": [...]}  (`steps` timed steps)
  "curve N S" -> reseeds with S, runs N steps from the current weights, {"loss": [...], "denoising": [...]}
  "quit"
"""
import contextlib
import json
import math
import os
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
DEVICE = torch.device(cfg.get("device", "cpu"))
AMP = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.get("amp")]
CUDA = DEVICE.type == "cuda"
sys.path.insert(0, os.path.join(cfg["repo"], "test", "fixtures"))
from tim_reference import TiM  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import st_read  # noqa: E402
from transports_ref import OT_FM  # noqa: E402



torch.manual_seed(cfg.get("seed", 0))
P = cfg["params"]
model = TiM(**P)
model.load_state_dict(st_read(cfg["weights"]), strict=True)
model.to(DEVICE)
model.train()
ema = TiM(**P)
ema.load_state_dict(model.state_dict())
ema.to(DEVICE)
ema.eval()
ema.requires_grad_(False)
params = list(model.parameters())
opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01, eps=1e-6)
EMA_DECAY = 0.9999
inp = st_read(cfg["inputs"])
X, Y = inp["x"].to(DEVICE), inp["y"].to(DEVICE)
transport = OT_FM(P_mean=-0.4, P_std=1.0, sigma_d=1.0)
DIFF_RATIO, CONS_RATIO, EPS = 0.5, 0.1, 0.005
NUM_CLASSES, DROP = P["num_classes"], P.get("class_dropout_prob", 0.1)


def nan0(v):
    return torch.nan_to_num(v, nan=0.0, posinf=1e5, neginf=-1e5)


def bshape(t, x):
    return t.view(-1, *([1] * (x.dim() - 1)))


def transition_loss(x, z, y):
    B = x.shape[0]
    t1 = transport.sample_t(torch.randn(B, device=DEVICE))
    t2 = transport.sample_t(torch.randn(B, device=DEVICE))
    t, r = torch.maximum(t1, t2), torch.minimum(t1, t2)
    nd, nc = round(DIFF_RATIO * B), round(CONS_RATIO * B)
    r[:nd] = t[:nd]
    if nc > 0:
        r[-nc:] = transport.T_min
    tt, rr = bshape(t, x), bshape(r, x)
    a, s, da, ds = transport.interpolant(tt)
    x_t = a * x + s * z
    v_t = da * x + ds * z
    F_pred = model(x_t, transport.c_noise(t), transport.c_noise(r), y)
    dF = torch.zeros_like(x)
    if nd < B:
        with torch.no_grad(), torch.autocast(DEVICE.type, enabled=False):
            xs, zs, ts, rs, ys = x[nd:], z[nd:], t[nd:], r[nd:], y[nd:]
            tp, tm = ts + EPS, ts - EPS
            ap, sp, _, _ = transport.interpolant(bshape(tp, xs))
            am, sm, _, _ = transport.interpolant(bshape(tm, xs))
            Fp = model(ap * xs + sp * zs, transport.c_noise(tp), transport.c_noise(rs), ys) / (2 * EPS)
            Fm = model(am * xs + sm * zs, transport.c_noise(tm), transport.c_noise(rs), ys) / (2 * EPS)
            dF[nd:] = Fp - Fm
    F_target = transport.target(x_t, v_t, x, z, tt, rr, dF).detach()
    mse = nan0(((F_pred - F_target) ** 2).mean(dim=(1, 2, 3)))
    dirl = nan0((1 - torch.nn.functional.cosine_similarity(F_pred, F_target, dim=1, eps=1e-8)).mean(dim=(1, 2)))
    den = mse + dirl
    tw = 1.0 / torch.sqrt(torch.tan(t) - torch.tan(r) + transport.sigma_d)
    tw[:nd] = 1.0
    aw = 1.0 / (den.detach() + 10e-6)
    weighted = nan0((tw * aw * den).mean())
    return weighted, den.mean()


def amp():
    if AMP is None:
        return contextlib.nullcontext()
    return torch.autocast(DEVICE.type, dtype=AMP)


def sync():
    if CUDA:
        torch.cuda.synchronize(DEVICE)


def mem():
    if not CUDA:
        return {}
    return {"peak_allocated_mib": torch.cuda.max_memory_allocated(DEVICE) / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(DEVICE) / 2**20}


def step():
    x = X
    z = torch.randn_like(x)
    y = torch.where(torch.rand(x.shape[0], device=DEVICE) < DROP, torch.full_like(Y, NUM_CLASSES), Y)
    with amp():  # the official trainer runs the whole loss under accelerator.autocast()
        loss, den = transition_loss(x, z, y)
    loss.backward()  # proj loss: 0 (no REPA target), as the Node side's Trainer step
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        for e, p in zip(ema.parameters(), params):
            e.mul_(EMA_DECAY).add_(p.data, alpha=1 - EMA_DECAY)
    return loss.item(), den.item()


first = step()[0]
sync()
print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__, "loss": first,
                  "device": str(DEVICE), "amp": cfg.get("amp"), "pid": os.getpid(), **mem()}), flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
        break
    if cmd[0] == "curve":
        torch.manual_seed(int(cmd[2]))
        losses, dens = [], []
        for _ in range(int(cmd[1])):
            l, d = step()
            losses.append(l)
            dens.append(d)
        print(json.dumps({"loss": losses, "denoising": dens}), flush=True)
        continue
    times, cpu, losses = [], [], []
    for _ in range(cfg["steps"]):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(step()[0])
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    print(json.dumps({"ms": times, "cpu": cpu, "loss": losses, **mem()}), flush=True)
