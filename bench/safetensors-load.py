"""Python side of bench/safetensors-load.ts (Debian's python3-torch; run as /usr/bin/python3).

  write PATH N ROWS COLS   torch.save N float32 tensors (ROWS, COLS), tensor i filled with i
                           (the same tensors the Node side writes as safetensors)
  load PATH MODE           time torch.load(PATH) plus MODE = 'one' (read one element of every
                           tensor) or 'all' (sum every tensor: every byte read); prints JSON
"""
import json
import sys
import time

import torch

torch.set_num_threads(1)

mode = sys.argv[1]
if mode == 'write':
    path, n, rows, cols = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.save({f'blocks.{i:04d}.weight': torch.full((rows, cols), float(i)) for i in range(n)}, path)
elif mode == 'load':
    path, touch = sys.argv[2], sys.argv[3]
    t0 = time.perf_counter()
    sd = torch.load(path)
    if touch == 'one':
        check = sum(float(t.view(-1)[0]) for t in sd.values())
    else:
        check = sum(float(t.sum()) for t in sd.values())
    ms = (time.perf_counter() - t0) * 1000
    print(json.dumps({'ms': ms, 'check': check, 'tensors': len(sd)}))
else:
    sys.exit(f'unknown mode {mode}')
