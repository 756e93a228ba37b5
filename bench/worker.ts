/**
 * Node side of the side-by-side benchmarks. The harness (bench/harness.ts) spawns this process and
 * bench/py/worker.py with the same environment and sends both the same tasks, one JSON line each;
 * each task answers one JSON line with the time it measured in-process (no IPC in the timing).
 * Every task here has a line-for-line twin in bench/py/worker.py.
 */
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import type { Tensor } from '../lib/torch/tensor.js';
import type { Handle, OpId } from '../lib/torch/native_binding.js';

// TIM_BENCH_LIB points the worker at another copy of the library (A/B-test a change without editing lib/).
type Lib = typeof import('../lib/index.js');
const libUrl = process.env.TIM_BENCH_LIB ? pathToFileURL(process.env.TIM_BENCH_LIB).href : new URL('../lib/index.js', import.meta.url).href;
const { torch } = (await import(libUrl)) as Lib;
// The raw binding, for the per-op floor (no Tensor objects): internal API, benchmarks only.
const { native } = (await import(new URL('./torch/native.js', libUrl).href)) as typeof import('../lib/torch/native.js');

type Msg = { task: string; [k: string]: unknown };
const now = (): number => performance.now();
const rssMb = (): number => process.memoryUsage.rss() / 2 ** 20;
const gc = (): void => (globalThis as { gc?: () => void }).gc?.();

// Persistent inputs, kept out of any scope (the caller owns them).
const a1 = torch.keep(torch.tensor([1], { dtype: 'float32' }));
const b1 = torch.keep(torch.tensor([2], { dtype: 'float32' }));
let big: { a: Tensor; b: Tensor } | null = null;
let mats: Map<number, [Tensor, Tensor]> = new Map();

function perop(style: string, n: number, chunk: number): number {
  const a = a1, b = b1;
  const t0 = now();
  if (style === 'raw') {
    // the binding alone: op call and free by handle, no Tensor object, no scope, no GC registration
    const id = native.resolveOp('aten::add', 'Tensor') as OpId<Handle>, ha = a._h, hb = b._h;
    for (let i = 0; i < n; i++) native.free(native.call(id, ha, hb, 1));
  } else if (style === 'scope') {
    for (let c = 0; c < n / chunk; c++) torch.scope(() => { for (let i = 0; i < chunk; i++) a.add(b); });
  } else {
    for (let i = 0; i < n; i++) a.add(b).dispose();
  }
  return now() - t0;
}

function elementwise(op: string, numel: number, iters: number): number {
  if (!big || big.a.numel !== numel) {
    big?.a.dispose(); big?.b.dispose();
    torch.manualSeed(0);
    big = { a: torch.keep(torch.rand([numel])), b: torch.keep(torch.rand([numel]).add(0.5)) };
  }
  const { a, b } = big;
  const t0 = now();
  for (let i = 0; i < iters; i++) {
    const r = op === 'add' ? a.add(b) : op === 'mul' ? a.mul(b) : op === 'exp' ? a.exp() : a.div(b);
    r.dispose();
  }
  return now() - t0;
}

function matmul(n: number, iters: number): number {
  let m = mats.get(n);
  if (!m) { torch.manualSeed(0); m = [torch.keep(torch.randn([n, n])), torch.keep(torch.randn([n, n]))]; mats.set(n, m); }
  const [x, y] = m;
  const t0 = now();
  for (let i = 0; i < iters; i++) x.matmul(y).dispose();
  return now() - t0;
}

// CPU time the whole process uses for one 512x512 matmul and one 1M add followed by `sleepMs` of
// idleness on the main thread: the ops take a few ms; the rest is pool threads spinning while idle.
function idleCpu(sleepMs: number): number {
  matmul(512, 1);
  elementwise('add', 1_000_000, 1);
  const c0 = process.cpuUsage();
  matmul(512, 1);
  elementwise('add', 1_000_000, 1);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, sleepMs);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

// ---- a small transformer block, forward + backward + SGD (the "mixed workload") -------------------
interface Model { params: Tensor[]; B: number; T: number; D: number; H: number; L: number }
let model: Model | null = null;
function makeModel(B: number, T: number, D: number, H: number, L: number): Model {
  torch.manualSeed(0);
  const p = (shape: number[], scale: number): Tensor => torch.keep(torch.randn(shape).mul(scale).requiresGrad_());
  const z = (shape: number[]): Tensor => torch.keep(torch.zeros(shape).requiresGrad_());
  const o = (shape: number[]): Tensor => torch.keep(torch.ones(shape).requiresGrad_());
  const params: Tensor[] = [];
  for (let l = 0; l < L; l++) {
    params.push(o([D]), z([D]), p([3 * D, D], D ** -0.5), z([3 * D]), p([D, D], D ** -0.5), z([D]),
      o([D]), z([D]), p([4 * D, D], D ** -0.5), z([4 * D]), p([D, 4 * D], (4 * D) ** -0.5), z([D]));
  }
  return { params, B, T, D, H, L };
}
function step(m: Model, x: Tensor, y: Tensor, lr: number): number {
  const { B, T, D, H, L, params } = m;
  const dh = D / H;
  return torch.scope(() => {
    let h = x;
    for (let l = 0; l < L; l++) {
      const [ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2] = params.slice(12 * l, 12 * l + 12) as Tensor[];
      const qkv = torch.linear(torch.layerNorm(h, [D], ln1w, ln1b), wqkv!, bqkv).reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4);
      const [q, k, v] = qkv.unbind(0) as [Tensor, Tensor, Tensor];
      const att = q.matmul(k.transpose(-2, -1)).mul(dh ** -0.5).softmax(-1);
      const a = att.matmul(v).permute(0, 2, 1, 3).reshape(B, T, D);
      h = h.add(torch.linear(a, wo!, bo));
      h = h.add(torch.linear(torch.linear(torch.layerNorm(h, [D], ln2w, ln2b), w1!, b1).gelu(), w2!, b2));
    }
    const loss = torch.mseLoss(h, y);
    loss.backward();
    torch.noGrad(() => {
      for (const p of params) { p.sub_(p.grad!, lr); p.grad = null; }
    });
    return loss.item();
  });
}
function mlp(B: number, T: number, D: number, H: number, L: number, steps: number): { ms: number; loss: number } {
  if (!model || model.B !== B || model.T !== T || model.D !== D || model.L !== L) {
    model?.params.forEach((p) => p.dispose());
    model = makeModel(B, T, D, H, L);
  }
  torch.manualSeed(1);
  const x = torch.randn([B, T, D]), y = torch.randn([B, T, D]);
  let loss = 0;
  const t0 = now();
  for (let s = 0; s < steps; s++) loss = step(model, x, y, 1e-3);
  const ms = now() - t0;
  x.dispose(); y.dispose();
  return { ms, loss };
}

// 200k small ops inside scopes: live tensors must return to the baseline and RSS must stay flat.
function memory(n: number, chunk: number): Record<string, number> {
  const x = torch.rand([16]), y = torch.rand([16]);
  gc();
  const live0 = torch.memory().liveTensors, rss0 = rssMb();
  const t0 = now();
  for (let c = 0; c < n / chunk; c++) {
    torch.scope(() => {
      for (let i = 0; i < chunk; i += 4) x.add(y).mul(2).sub(x).exp();
    });
  }
  const ms = now() - t0;
  const live1 = torch.memory().liveTensors, rss1 = rssMb();
  gc();
  const rss2 = rssMb();
  x.dispose(); y.dispose();
  return { ms, liveBefore: live0, liveAfter: live1, rssBefore: rss0, rssAfter: rss1, rssAfterGc: rss2 };
}

function handle(m: Msg): unknown {
  const n = (k: string): number => m[k] as number;
  switch (m.task) {
    case 'info': return {
      side: 'node', threads: torch.getNumThreads(), pid: process.pid,
      env: Object.fromEntries(['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OPENBLAS_THREAD_TIMEOUT', 'MKL_NUM_THREADS', 'TIM_TORCH_NUM_THREADS']
        .map((k) => [k, process.env[k] ?? null])),
    };
    case 'setThreads': torch.setNumThreads(n('n')); return { threads: torch.getNumThreads() };
    case 'perop': return { ms: perop(m.style as string, n('n'), n('chunk')) };
    case 'elementwise': return { ms: elementwise(m.op as string, n('numel'), n('iters')) };
    case 'matmul': return { ms: matmul(n('n'), n('iters')) };
    case 'idleCpu': return { ms: idleCpu(n('sleepMs')) };
    case 'mlp': return mlp(n('B'), n('T'), n('D'), n('H'), n('L'), n('steps'));
    case 'memory': return memory(n('n'), n('chunk'));
    case 'live': return { live: torch.memory().liveTensors };
    default: throw new Error(`unknown task ${m.task}`);
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let out: unknown;
  try { out = { ok: true, ...(handle(JSON.parse(line) as Msg) as object) }; } catch (e) { out = { ok: false, error: String((e as Error)?.stack ?? e) }; }
  process.stdout.write(JSON.stringify(out) + '\n');
});
rl.on('close', () => process.exit(0));
process.stdout.write(JSON.stringify({ ok: true, ready: true }) + '\n');
