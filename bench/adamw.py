"""Python side of bench/adamw.ts: torch.optim.AdamW(foreach=True) steps over the same parameter layout.

Protocol (one JSON object per line): argv[1] = {"sizes": [...], "threads": n, "steps": k, "seed": s};
prints {"ready": ...} then, for every "run" line on stdin, {"ms": [one time per step]}; "quit" ends.
"""
import json
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(cfg["seed"])
params = [torch.randn(n, requires_grad=True) for n in cfg["sizes"]]
for p in params:
    p.grad = torch.randn_like(p)
opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.01, foreach=True)
opt.step()  # state allocation happens here, outside the timed steps (as on the Node side)
print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)

for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit":
        break
    times = []
    for _ in range(cfg["steps"]):
        t0 = time.perf_counter()
        opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"ms": times}), flush=True)
