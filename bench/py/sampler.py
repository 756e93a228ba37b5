"""Python side of bench/sampler.ts: the official TiM sampler's algorithm over a TorchScript TiM.

The loop is TransitionSchedule.sample + forward_with_cfg + OT_FM.from_x_t_to_x_r of the official code
(github WZDTHU/TiM, tim/schedulers/), written out here because the official package is not installed:
float64 state, network input in z's dtype, guidance on a batched [cond; uncond] forward inside the
strict window (cfg_low*T_max, cfg_high*T_max), the OT-FM step with the stochastic term where the
official code applies it. The network is torch.jit.load of the archive the Node side saved, so both
sides run the same graph on the same libtorch.

Protocol (one JSON object per line): argv[1] = {"model", "z", "y", "threads", "shape", "runs": {name: {num_steps, ...}},
optional "device": "cpu" (default) | "cuda"}; prints {"ready": ...}; then for every line {"run": name, "reps": k,
"final": path} prints {"ms": [wall per call], "cpu_ms": [process CPU time per call]} (on CUDA each call ends with
torch.cuda.synchronize(), and the peak CUDA memory in MiB comes along) and writes the last sample to path;
"quit" ends.
"""
import json
import os
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.set_grad_enabled(False)
DEVICE = torch.device(cfg.get("device", "cpu"))
CUDA = DEVICE.type == "cuda"
model = torch.jit.load(cfg["model"], map_location=DEVICE)
model.eval()
shape = cfg["shape"]
with open(cfg["z"], "rb") as f:
    z = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(shape)
with open(cfg["y"], "rb") as f:
    y = torch.frombuffer(bytearray(f.read()), dtype=torch.int64)
z, y = z.to(DEVICE), y.to(DEVICE)
y_null = torch.full_like(y, cfg["null_class"])


def forward_with_cfg(x_t, t, r, cfg_scale, cfg_low, cfg_high):
    apply_cfg = cfg_scale > 1.0 and t > cfg_low and t < cfg_high
    x_in = torch.cat([x_t, x_t], dim=0) if apply_cfg else x_t
    y_in = torch.cat([y, y_null], dim=0) if apply_cfg else y
    # OT-FM: c_noise is the identity
    t_in = torch.ones(x_in.size(0)).to(x_in) * t
    r_in = torch.ones(x_in.size(0)).to(x_in) * r
    out = model(x_in, t_in, r_in, y_in)
    if apply_cfg:
        f_cond, f_uncond = out.chunk(2)
        out = f_uncond + cfg_scale * (f_cond - f_uncond)
    return out


def ot_fm_step(x_t, t, r, F, s_ratio):
    x_r = x_t - (t - r) * F
    if s_ratio > 0.0:
        z_hat = x_t + (1 - t) * F
        eps = torch.randn_like(z_hat)
        dt = t - r
        x_r = x_r - s_ratio * z_hat * dt + torch.sqrt(s_ratio * 2 * t * dt) * eps
    return x_r


def sample(num_steps, cfg_scale, cfg_low, cfg_high, stochasticity_ratio, sample_type, T_max=1.0, T_min=0.0):
    dtype = z.dtype
    t_steps = torch.linspace(T_max, T_min, num_steps + 1, dtype=torch.float64).to(z)
    cfg_low, cfg_high = cfg_low * T_max, cfg_high * T_max
    x_cur = z.clone().to(torch.float64)
    for t_cur, t_next in zip(t_steps[:-1], t_steps[1:]):
        r = t_next if sample_type == "transition" else t_cur
        F = forward_with_cfg(x_cur.to(dtype), t_cur, r, cfg_scale, cfg_low, cfg_high).to(torch.float64)
        s = stochasticity_ratio if (stochasticity_ratio > 0.0 and t_cur < T_max and r > T_min) else 0.0
        x_cur = ot_fm_step(x_cur, t_cur, t_next, F, s)
    return x_cur.to(torch.float32)


def tensor_bytes(t):
    t = t.cpu().contiguous()
    try:
        return t.numpy().tobytes()
    except (ImportError, RuntimeError):  # a torch without numpy (some CUDA wheels' venvs)
        return bytes(t.untyped_storage())


def mem():
    if not CUDA:
        return {}
    return {"peak_allocated_mib": torch.cuda.max_memory_allocated(DEVICE) / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(DEVICE) / 2**20}


print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(DEVICE),
                  "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("quit"):
        break
    run = cfg["runs"][msg["run"]]
    times, cpu = [], []
    out = None
    for _ in range(msg["reps"]):
        c0, t0 = time.process_time(), time.perf_counter()
        out = sample(**run)
        if CUDA:
            torch.cuda.synchronize(DEVICE)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    with open(msg["final"], "wb") as f:
        f.write(tensor_bytes(out))
    print(json.dumps({"ms": times, "cpu_ms": cpu, **mem()}), flush=True)
