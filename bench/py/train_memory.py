"""Python side of bench/train-memory.ts: the official TiM training step on the same libtorch, for time
and memory (RSS) against tim-torch's step.

The loss and transport are the official code, imported unchanged from a snapshot of WZDTHU/TiM
(`official` in the config: a folder holding its tim/ package, e.g. made with
`git archive <commit> tim | tar -x -C DIR` from the fetched mirror): tim.schedulers.transition.
TransitionSchedule (sample_t_and_r, DDE derivative as two no-grad forwards, target, losses, weights)
and tim.schedulers.transports.OT_FM. Two CPU shims, no code change: torch.cuda.get_rng_state /
set_rng_state become no-ops (the official loss saves and restores the CUDA RNG around forwards), and the
network is wrapped to accept the official call's extra keyword arguments (jvp, attn_type). The network
is test/fixtures/tim_reference.py, the project's statement-by-statement copy of the official
tim/models/c2i/tim_model.py (checked against the official golden vectors), because the official file
imports timm, einops, flash_attn and triton, which the Debian python has not.

The step is the official trainer's (projects/train/trainer_c2i.py): label dropout, loss_fn(...,
use_dir_loss=True, h_target=...), (weighted + proj_coeff * proj).backward(), clip_grad_norm_(1.0),
AdamW step, zero_grad(set_to_none=True), EMA update (tim/utils/train_utils.update_ema's formula).

argv[1] = {"params", "weights", "inputs" (x, y, h), "threads", "repo", "official", "seed", "amp": null|"bfloat16"}
Prints {"ready": ...}; then per stdin line "run N" -> {"ms": [...], "cpu": [...], "rss": [...], "hwm": [...]} (MiB
after each step, VmHWM after each step), "quit".
"""
import contextlib
import json
import os
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(cfg.get("seed", 0))
AMP = {None: None, "bfloat16": torch.bfloat16}[cfg.get("amp")]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_tim import OfficialCall, load  # noqa: E402
from safetensors_io import st_read  # noqa: E402

TransitionSchedule, OT_FM, TiM = load(cfg["official"], cfg["repo"])


def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


P = cfg["params"]
net = TiM(**P)
net.load_state_dict(st_read(cfg["weights"]), strict=True)
net.train()
model = OfficialCall(net)
ema = TiM(**P)
ema.load_state_dict(net.state_dict())
ema.eval()
ema.requires_grad_(False)
params = list(net.parameters())
opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01, eps=1e-6)
EMA_DECAY, PROJ_COEFF = 0.9999, 0.5
inp = st_read(cfg["inputs"])
X, Y, H = inp["x"], inp["y"], inp["h"]
transport = OT_FM(P_mean=-0.4, P_std=1.0, sigma_d=1.0)
loss_fn = TransitionSchedule(transport=transport, diffusion_ratio=0.5, consistency_ratio=0.1, derivative_type="dde",
                             differential_epsilon=0.005, weight_time_type="sqrt", weight_time_tangent=True)
NUM_CLASSES, DROP = P["num_classes"], P.get("class_dropout_prob", 0.1)


def step():
    x = X
    z = torch.randn_like(x)
    y = torch.where(torch.rand(x.shape[0]) < DROP, torch.full_like(Y, NUM_CLASSES), Y)
    model_kwargs = dict(y=y, return_zs=True)
    ctx = torch.autocast("cpu", dtype=AMP) if AMP is not None else contextlib.nullcontext()
    with ctx:
        weighted_loss, proj_loss, loss_dict = loss_fn(model, ema, model, x.shape[0], x, z, model_kwargs,
                                                      use_dir_loss=True, h_target=H)
        loss = weighted_loss + PROJ_COEFF * proj_loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():  # tim/utils/train_utils.update_ema
        for e, p in zip(ema.parameters(), params):
            e.mul_(EMA_DECAY).add_(p.data, alpha=1 - EMA_DECAY)
    return loss_dict["weighted_loss"]


print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__, "pid": os.getpid(),
                  "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MALLOC_MMAP_THRESHOLD_")},
                  **status()}), flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
        break
    n = int(cmd[1]) if len(cmd) > 1 else 1
    ms, cpu, rss, hwm, losses = [], [], [], [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(step())
        ms.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
        s = status()
        rss.append(s["VmRSS"])
        hwm.append(s["VmHWM"])
    print(json.dumps({"ms": ms, "cpu": cpu, "rss": rss, "hwm": hwm, "loss": losses}), flush=True)
