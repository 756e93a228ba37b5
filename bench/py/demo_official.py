"""Python side of bench/demo-vs-official.ts: the official TiM code trained on the demo's MNIST digits for
the demo's wall-clock budget on the same machine, then sampled with the official sampler.

The official pieces are imported unchanged from a snapshot of WZDTHU/TiM (`official`: a folder holding
its tim/ package): tim.schedulers.transition.TransitionSchedule (t/r sampling, DDE derivative, target,
losses, weights, and its `sample` method, the official any-step sampler) and
tim.schedulers.transports.OT_FM. The network is test/fixtures/tim_reference.py, the project's
statement-by-statement copy of tim/models/c2i/tim_model.py (checked against the official golden
vectors): the official file imports timm, einops, flash_attn and triton. Two CPU shims, no code change:
torch.cuda.get_rng_state / set_rng_state become no-ops, and the network takes the loss's extra keyword
arguments (jvp, attn_type).

The loop is the official trainer's (projects/train/trainer_c2i.py) without accelerate: a shuffled
epoch-by-epoch DataLoader order (drop_last), label dropout to the null class, loss_fn(model, ema, model,
..., use_dir_loss=True), backward, clip_grad_norm_(1.0), AdamW, zero_grad(set_to_none=True),
update_ema (tim/utils/train_utils.update_ema's formula); proj_coeff 0 (no REPA encoder on MNIST: the
projection loss is computed, as the official loss always does, against a zero target and not used).
Mixed precision as accelerate's bf16 autocast: the whole step, DDE forwards included, under
torch.autocast("cpu", bfloat16).

Sampling: TransitionSchedule.sample(model, y, y_null, z, T_max=1, T_min=0, num_steps=NFE, cfg_scale=1)
(no classifier-free guidance: one forward per step, as the demo samples), [-1], from the EMA, with the
noise the TypeScript side passes in (the same noise the demo uses).

argv[1] = JSON {official, repo, data (safetensors: x float32 (N,1,32,32) in [-1,1], y int64),
  noise (safetensors: z float32 (M,1,32,32), y int64 (M)), out (folder), budget_s, seed, threads,
  amp: null|"bfloat16", network (tim_reference.TiM kwargs), lr, betas, weight_decay, eps, ema_decay,
  batch, diffusion_ratio, consistency_ratio, nfes, log_every_s}
Writes out/nfe-<N>.safetensors (images float32 (M,1,32,32) clamped to [-1,1], labels int64),
out/train.json ({steps, train_seconds, ms_per_step, losses, torch, threads}); progress on stderr.
"""
import json
import os
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(cfg["seed"])
AMP = {None: None, "bfloat16": torch.bfloat16}[cfg.get("amp")]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_tim import OfficialCall, load  # noqa: E402
from safetensors_io import st_read, st_write  # noqa: E402

TransitionSchedule, OT_FM, TiM = load(cfg["official"], cfg["repo"])


def log(s):
    sys.stderr.write(f"official: {s}\n")
    sys.stderr.flush()


P = cfg["network"]
net = TiM(**P)  # the official initialize_weights
net.train()
model = OfficialCall(net)
ema_net = TiM(**P)
ema_net.load_state_dict(net.state_dict())
ema_net.train()  # as the official trainer keeps it (ema_model.train()); it has no dropout
ema_net.requires_grad_(False)
ema = OfficialCall(ema_net)
params = list(net.parameters())
opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"], eps=cfg["eps"])
transport = OT_FM(P_mean=-0.4, P_std=1.0, sigma_d=1.0)
loss_fn = TransitionSchedule(transport=transport, diffusion_ratio=cfg["diffusion_ratio"], consistency_ratio=cfg["consistency_ratio"],
                             derivative_type="dde", differential_epsilon=0.005, weight_time_type="sqrt", weight_time_tangent=True)
data = st_read(cfg["data"])
X, Y = data["x"], data["y"].long()
N, B = X.shape[0], cfg["batch"]
NUM_CLASSES, DROP = P["num_classes"], P["class_dropout_prob"]
EMA_DECAY = cfg["ema_decay"]
h_target = None


def batches():
    while True:  # DataLoader(shuffle=True, drop_last=True), epoch after epoch
        perm = torch.randperm(N)
        for s in range(0, N - B + 1, B):
            idx = perm[s:s + B]
            yield X[idx], Y[idx]


def step(x, y):
    global h_target
    z = torch.randn_like(x)
    drop = torch.rand(y.shape[0]) < DROP
    dropped = torch.where(drop, torch.full_like(y, NUM_CLASSES), y)
    if h_target is None:  # the projection target's shape (zeros: no REPA encoder, proj_coeff 0)
        with torch.no_grad():
            h_target = torch.zeros_like(net(x[:1], torch.zeros(1), torch.zeros(1), y[:1], return_zs=True)[1]).expand(B, -1, -1)
    ctx = torch.autocast("cpu", dtype=AMP) if AMP is not None else torch.autocast("cpu", enabled=False)
    with ctx:
        weighted, proj, d = loss_fn(model, ema, model, B, x, z, dict(y=dropped, return_zs=True), use_dir_loss=True, h_target=h_target)
        loss = weighted + 0.0 * proj
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():  # tim/utils/train_utils.update_ema
        for e, p in zip(ema_net.parameters(), params):
            e.mul_(EMA_DECAY).add_(p.data, alpha=1 - EMA_DECAY)
    return d["denoising_loss"]


budget = cfg["budget_s"]
spent, steps, losses, last_log = 0.0, 0, [], time.perf_counter()
log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'bf16 autocast' if AMP else 'float32'}, "
    f"{sum(p.numel() for p in params):,} parameters, budget {budget:.0f} s")
it = batches()
while spent < budget:
    x, y = next(it)
    t0 = time.perf_counter()
    losses.append(step(x, y))
    spent += time.perf_counter() - t0
    steps += 1
    if time.perf_counter() - last_log > 15:
        last_log = time.perf_counter()
        log(f"step {steps}  denoise {sum(losses[-50:]) / len(losses[-50:]):.4f}  {spent:.0f}/{budget:.0f} s  {1e3 * spent / steps:.0f} ms/step")
log(f"trained {steps} steps in {spent:.1f} s ({1e3 * spent / steps:.0f} ms/step)")

noise = st_read(cfg["noise"])
Z, YS = noise["z"], noise["y"].long()
y_null = torch.full_like(YS, NUM_CLASSES)
os.makedirs(cfg["out"], exist_ok=True)
for nfe in cfg["nfes"]:
    t0 = time.perf_counter()
    parts = []
    with torch.no_grad():
        for s in range(0, Z.shape[0], 250):
            parts.append(loss_fn.sample(ema, YS[s:s + 250], y_null[s:s + 250], Z[s:s + 250], T_max=1.0, T_min=0.0,
                                        num_steps=nfe, cfg_scale=1.0)[-1])
    images = torch.cat(parts).clamp(-1, 1).contiguous()
    path = os.path.join(cfg["out"], f"nfe-{nfe}.safetensors")
    st_write(path + ".tmp", {"images": images, "labels": YS.contiguous()}, {"step": str(steps), "nfe": str(nfe), "seed": str(cfg["seed"])})
    os.replace(path + ".tmp", path)
    log(f"sampled nfe {nfe}: {images.shape[0]} images in {time.perf_counter() - t0:.1f} s")

with open(os.path.join(cfg["out"], "train.json.tmp"), "w") as f:
    json.dump({"steps": steps, "train_seconds": spent, "ms_per_step": 1e3 * spent / steps, "losses": losses,
               "torch": torch.__version__, "threads": torch.get_num_threads(), "amp": cfg.get("amp")}, f)
os.replace(os.path.join(cfg["out"], "train.json.tmp"), os.path.join(cfg["out"], "train.json"))
