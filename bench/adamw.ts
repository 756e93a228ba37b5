/**
 * AdamW step over ~50M float32 parameters: tim-torch's torch.optim.AdamW versus Python's
 * torch.optim.AdamW(foreach=True) on the same libtorch, side by side in one run (same layout, same
 * intra-op thread count, rounds interleaved N,P,P,N,...; medians of per-step times). Goal: ratio ≤ 1.0.
 *
 *   npx tsx bench/adamw.ts [--quick] [--threads N] [--out DIR]
 *
 * The layout is two transformer blocks of hidden size 1152 (TiM-XL widths: qkv, proj, SwiGLU MLP,
 * adaLN, biases and qk-norm weights) plus one filler tensor up to 50M elements: a realistic mix of
 * large matrices and small vectors, 31 tensors.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { torch } from '../lib/index.js';
import { formatTable, median, newResult, ratioRow, writeResult, type Options, type Result, startPyScript, cliArgs } from './harness.js';

const H = 1152;
const BLOCK = [H * 3 * H, 3 * H, H * H, H, H * 3072, 3072, H * 3072, 3072, 3072 * H, H, H * 6 * H, 6 * H, 64, 64, H];

/** Parameter sizes (flat) summing to `total`. */
export function layout(total: number): number[] {
  const sizes: number[] = [];
  let sum = 0;
  for (let i = 0; ; i = (i + 1) % BLOCK.length) {
    const n = BLOCK[i]!;
    if (sum + n > total) break;
    sizes.push(n);
    sum += n;
  }
  if (total > sum) sizes.push(total - sum);
  return sizes;
}

interface PyWorker {
  ask(): Promise<number[]>;
  close(): void;
  info: Record<string, unknown>;
}

async function startPython(cfg: Record<string, unknown>): Promise<PyWorker> {
  const py = await startPyScript('adamw.py', cfg);
  return {
    info: py.info,
    async ask() {
      return (await py.request('run')).ms as number[];
    },
    close: () => py.close('quit'),
  };
}

interface Measured {
  node: number[];
  python: number[];
  info: Record<string, unknown>;
}

/** Per-step times of both sides over the same layout, rounds interleaved. */
async function measure(sizes: number[], threads: number, steps: number, rounds: number): Promise<Measured> {
  const py = await startPython({ sizes, threads, steps, seed: 0 });
  const params = sizes.map((n) => torch.randn([n], { requiresGrad: true }));
  for (const p of params) {
    const g = torch.randnLike(p);
    p.grad = g;
    g.dispose();
  }
  const opt = new torch.optim.AdamW(params, { lr: 1e-4, betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.01 });
  try {
    opt.step(); // allocates the state, as the Python side does before timing
    const node: number[] = [], python: number[] = [];
    const nodeRound = (): void => {
      for (let i = 0; i < steps; i++) {
        const t0 = performance.now();
        opt.step();
        node.push(performance.now() - t0);
      }
    };
    for (let k = 0; k < rounds; k++) {
      // alternate who goes first, so neither side always runs on a warmer machine
      if (k % 2 === 0) { nodeRound(); python.push(...(await py.ask())); }
      else { python.push(...(await py.ask())); nodeRound(); }
    }
    return { node, python, info: py.info };
  } finally {
    py.close();
    opt.dispose();
    for (const p of params) p.dispose();
  }
}

export async function run(o: Options): Promise<Result> {
  const total = o.quick ? 5_000_000 : 50_000_000;
  const threads = o.threads ?? 1;
  const steps = o.quick ? 3 : 5;
  const rounds = o.quick ? 2 : 4;
  const sizes = layout(total);
  torch.setNumThreads(threads);
  const r = newResult('adamw', `AdamW step over ${(total / 1e6).toFixed(0)}M fp32 parameters (${sizes.length} tensors)`, o.quick,
    { threads, steps, rounds, params: total, tensors: sizes.length, hyper: 'lr 1e-4, betas (0.9, 0.95), eps 1e-6, wd 0.01' });
  const big = await measure(sizes, threads, steps, rounds);
  r.rows.push(ratioRow('AdamW.step() median', median(big.node), median(big.python), { max: 1.0, text: 'ratio <= 1.0' }));
  r.rows.push(ratioRow('AdamW.step() min', Math.min(...big.node), Math.min(...big.python), { text: 'info' }));
  // many small tensors: per-tensor overhead (grad handles, dispatcher calls) rather than memory bandwidth
  const small = await measure(new Array<number>(500).fill(1000), threads, o.quick ? 10 : 20, rounds);
  r.rows.push(ratioRow('500 x 1000 params, median', median(small.node), median(small.python), { text: 'info' }));
  r.notes.push(`Python: torch ${String(big.info.torch)}, threads ${String(big.info.threads)}; Node threads ${torch.getNumThreads()}`);
  r.notes.push(`per-step ms, Node: ${big.node.map((x) => x.toFixed(0)).join(' ')}`);
  r.notes.push(`per-step ms, Python: ${big.python.map((x) => x.toFixed(0)).join(' ')}`);
  return r;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const val = cliArgs(argv).str;
  const r = await run({ quick: argv.includes('--quick'), threads: val('threads') ? Number(val('threads')) : undefined });
  console.log(formatTable(r));
  console.log(`  -> ${writeResult(r, val('out'))}`);
}
