"""Python side of the side-by-side benchmarks: the twin of bench/worker.ts.

Run by bench/harness.ts as /usr/bin/python3 (Debian's python3-torch, the same libtorch .so files as
the addon) with the same environment as the Node worker. Reads one JSON task per line on stdin,
answers one JSON line with the time measured in-process.
"""
import gc
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

now = lambda: time.perf_counter() * 1000.0


def rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


a1 = torch.tensor([1], dtype=torch.float32)
b1 = torch.tensor([2], dtype=torch.float32)
big = None
mats = {}


def perop(style, n, chunk):
    a, b = a1, b1
    t0 = now()
    if style == 'scope':
        # a scope keeps its chunk's results alive until it closes: keep them in a list, drop it
        for _ in range(n // chunk):
            keep = []
            for _ in range(chunk):
                keep.append(a.add(b))
            del keep
    else:
        # dispose() (and 'raw', the Node binding floor): each result is freed at once, as a dropped
        # Python reference is
        for _ in range(n):
            a.add(b)
    return now() - t0


def elementwise(op, numel, iters):
    global big
    if big is None or big[0].numel() != numel:
        torch.manual_seed(0)
        big = (torch.rand([numel]), torch.rand([numel]).add(0.5))
    a, b = big
    t0 = now()
    for _ in range(iters):
        r = a.add(b) if op == 'add' else a.mul(b) if op == 'mul' else a.exp() if op == 'exp' else a.div(b)
        del r
    return now() - t0


def matmul(n, iters):
    if n not in mats:
        torch.manual_seed(0)
        mats[n] = (torch.randn([n, n]), torch.randn([n, n]))
    x, y = mats[n]
    t0 = now()
    for _ in range(iters):
        x.matmul(y)
    return now() - t0


def idle_cpu(sleep_ms):
    # twin of idleCpu in worker.ts: process CPU time for one matmul + one add, then idling
    matmul(512, 1)
    elementwise('add', 1_000_000, 1)
    t0 = time.process_time()
    matmul(512, 1)
    elementwise('add', 1_000_000, 1)
    time.sleep(sleep_ms / 1000.0)
    return (time.process_time() - t0) * 1000.0


model = None


def make_model(B, T, D, H, L):
    torch.manual_seed(0)
    p = lambda shape, scale: torch.randn(shape).mul(scale).requires_grad_()
    z = lambda shape: torch.zeros(shape).requires_grad_()
    o = lambda shape: torch.ones(shape).requires_grad_()
    params = []
    for _ in range(L):
        params += [o([D]), z([D]), p([3 * D, D], D ** -0.5), z([3 * D]), p([D, D], D ** -0.5), z([D]),
                   o([D]), z([D]), p([4 * D, D], D ** -0.5), z([4 * D]), p([D, 4 * D], (4 * D) ** -0.5), z([D])]
    return dict(params=params, B=B, T=T, D=D, H=H, L=L)


def step(m, x, y, lr):
    B, T, D, H, L, params = m['B'], m['T'], m['D'], m['H'], m['L'], m['params']
    dh = D // H
    h = x
    for l in range(L):
        ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2 = params[12 * l:12 * l + 12]
        qkv = F.linear(F.layer_norm(h, [D], ln1w, ln1b), wqkv, bqkv).reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = q.matmul(k.transpose(-2, -1)).mul(dh ** -0.5).softmax(-1)
        a = att.matmul(v).permute(0, 2, 1, 3).reshape(B, T, D)
        h = h.add(F.linear(a, wo, bo))
        h = h.add(F.linear(F.gelu(F.linear(F.layer_norm(h, [D], ln2w, ln2b), w1, b1)), w2, b2))
    loss = F.mse_loss(h, y)
    loss.backward()
    with torch.no_grad():
        for p in params:
            p.sub_(p.grad, alpha=lr)
            p.grad = None
    return loss.item()


def mlp(B, T, D, H, L, steps):
    global model
    if model is None or (model['B'], model['T'], model['D'], model['L']) != (B, T, D, L):
        model = make_model(B, T, D, H, L)
    torch.manual_seed(1)
    x, y = torch.randn([B, T, D]), torch.randn([B, T, D])
    loss = 0.0
    t0 = now()
    for _ in range(steps):
        loss = step(model, x, y, 1e-3)
    return dict(ms=now() - t0, loss=loss)


def memory(n, chunk):
    x, y = torch.rand([16]), torch.rand([16])
    gc.collect()
    rss0 = rss_mb()
    t0 = now()
    for _ in range(n // chunk):
        keep = []
        for _ in range(0, chunk, 4):
            t1 = x.add(y); t2 = t1.mul(2); t3 = t2.sub(x); t4 = t3.exp()
            keep += [t1, t2, t3, t4]
        del keep
    ms = now() - t0
    rss1 = rss_mb()
    gc.collect()
    return dict(ms=ms, rssBefore=rss0, rssAfter=rss1, rssAfterGc=rss_mb())


def handle(m):
    t = m['task']
    if t == 'info':
        keys = ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OPENBLAS_THREAD_TIMEOUT', 'MKL_NUM_THREADS', 'TIM_TORCH_NUM_THREADS']
        return dict(side='python', threads=torch.get_num_threads(), pid=os.getpid(), torch=torch.__version__,
                    env={k: os.environ.get(k) for k in keys})
    if t == 'setThreads':
        torch.set_num_threads(m['n'])
        return dict(threads=torch.get_num_threads())
    if t == 'perop':
        return dict(ms=perop(m['style'], m['n'], m['chunk']))
    if t == 'elementwise':
        return dict(ms=elementwise(m['op'], m['numel'], m['iters']))
    if t == 'matmul':
        return dict(ms=matmul(m['n'], m['iters']))
    if t == 'idleCpu':
        return dict(ms=idle_cpu(m['sleepMs']))
    if t == 'mlp':
        return mlp(m['B'], m['T'], m['D'], m['H'], m['L'], m['steps'])
    if t == 'memory':
        return memory(m['n'], m['chunk'])
    raise ValueError('unknown task ' + t)


def main():
    sys.stdout.write(json.dumps(dict(ok=True, ready=True)) + '\n')
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            out = dict(ok=True, **handle(json.loads(line)))
        except Exception:
            out = dict(ok=False, error=traceback.format_exc())
        sys.stdout.write(json.dumps(out) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
