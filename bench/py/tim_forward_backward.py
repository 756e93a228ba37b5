"""Python side of bench/tim-forward-backward.ts: the eager reference of the official TiM
(test/fixtures/tim_reference.py, the official code statement by statement, vanilla attention) on the
same libtorch build, weights and inputs as the Node side, timing forward + backward.

argv[1] = {"params": official network.params, "weights": path, "inputs": path, "threads": n,
           "steps": k, "repo": repo root}
Prints {"ready": ..., "loss": first loss} then, for every "run" line on stdin, {"ms": [wall time per
step], "cpu": [process CPU time per step]};
"quit" ends. Weights/inputs are safetensors files (F32/I64) written by the Node side.
"""
import json
import os
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
sys.path.insert(0, os.path.join(cfg["repo"], "test", "fixtures"))
from tim_reference import TiM  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import st_read  # noqa: E402



model = TiM(**cfg["params"])
model.load_state_dict(st_read(cfg["weights"]), strict=True)
model.train()
params = [p for p in model.parameters()]
inp = st_read(cfg["inputs"])
x, t, r, y = inp["x"], inp["t"], inp["r"], inp["y"]


def step():
    out, h = model(x, t, r, y, return_zs=True)
    loss = out.square().mean() + h.square().mean()
    loss.backward()
    for p in params:
        p.grad = None
    return loss


first = step().item()
print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__, "loss": first}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit":
        break
    times, cpu = [], []
    for _ in range(cfg["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    print(json.dumps({"ms": times, "cpu": cpu}), flush=True)
