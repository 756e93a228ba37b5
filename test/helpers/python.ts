/**
 * Reference values from Python's torch (Debian's python3-torch, run as /usr/bin/python3: the python3
 * on PATH may lack torch). A test sends one Python snippet per file (starting Python and importing
 * torch costs about a second) that fills a dict `out`; tensors in it come back as PyTensor objects
 * and NaN/±Infinity survive the trip (JSON has no token for them).
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

export const PYTHON = process.env.TIM_TORCH_PYTHON ?? '/usr/bin/python3';

/**
 * The environment for a Python reference process: one intra-op thread (tests run two files at once
 * on a small machine), but OpenBLAS with as many threads as this Node process's OpenBLAS has, which
 * reads OPENBLAS_NUM_THREADS or OMP_NUM_THREADS when libtorch loads and otherwise takes every CPU.
 * OpenBLAS's sgemm rounds differently with 1 and 2 threads on some CPUs (seen on an AMD EPYC: a TiM
 * forward differed by 1.3e-7), and bit-for-bit comparisons need the same kernel on both sides.
 */
export function pythonEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const blas = process.env.OPENBLAS_NUM_THREADS ?? process.env.OMP_NUM_THREADS ?? String(availableParallelism());
  return { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: blas, ...extra };
}

/** A tensor as Python's torch saw it: dtype name without 'torch.', shape, and nested values. */
export interface PyTensor {
  __tensor__: true;
  dtype: string;
  shape: number[];
  data: unknown;
  repr: string;
}

const PRELUDE = `
import json, math, sys
import torch
out = {}
def _enc(v):
    if isinstance(v, torch.Tensor):
        t = v.detach()
        d = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
        return {'__tensor__': True, 'dtype': str(t.dtype).replace('torch.', ''), 'shape': list(t.shape),
                'data': _enc(d.tolist()), 'repr': repr(v)}
    if isinstance(v, float):
        if math.isnan(v): return {'__num__': 'NaN'}
        if math.isinf(v): return {'__num__': 'Infinity' if v > 0 else '-Infinity'}
        return v
    if isinstance(v, (list, tuple)): return [_enc(x) for x in v]
    if isinstance(v, dict): return {str(k): _enc(x) for k, x in v.items()}
    if isinstance(v, torch.dtype): return str(v).replace('torch.', '')
    if isinstance(v, torch.Size): return list(v)
    return v
`;

const EPILOGUE = `
sys.stdout.write(json.dumps(_enc(out)))
`;

function revive(_key: string, v: unknown): unknown {
  if (v && typeof v === 'object' && '__num__' in (v as Record<string, unknown>)) {
    return Number((v as { __num__: string }).__num__);
  }
  return v;
}

/** Runs `code` (which fills `out`) in Python with torch imported; returns `out` decoded. */
export function py<T = Record<string, any>>(code: string): T {
  const script = PRELUDE + '\n' + dedent(code) + '\n' + EPILOGUE;
  const stdout = execFileSync(PYTHON, ['-c', script], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    env: pythonEnv(),
  });
  return JSON.parse(stdout, revive) as T;
}

function dedent(s: string): string {
  const lines = s.replace(/^\n+/, '').split('\n');
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => l.match(/^ */)![0].length));
  return lines.map((l) => l.slice(indent)).join('\n');
}

export function isPyTensor(v: unknown): v is PyTensor {
  return !!v && typeof v === 'object' && (v as { __tensor__?: unknown }).__tensor__ === true;
}
