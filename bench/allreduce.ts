/**
 * All-reduce bandwidth between 2 processes on loopback (Gloo over TCP on 127.0.0.1), fp32 buffers of
 * 4 MB to 256 MB: tim-torch's torch.distributed vs Python torch.distributed (gloo), same libtorch.
 *
 *   npx tsx bench/allreduce.ts [--quick] [--sizes 4,16,64,256] [--reps 5]     standalone, prints a table
 *   npm run bench -- --only allreduce                                         through the harness
 *
 * GB/s is algorithm bandwidth: buffer bytes / seconds per all-reduce (median over reps). For 2 ranks
 * torch's "bus bandwidth" (algbw * 2(n-1)/n) is the same number. Both ranks run on this machine, so
 * on a 2-core box the figure is bounded by the CPUs (Gloo's reduction and copying) as much as by TCP.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { formatTable, newResult, ratioRow, writeResult, PYTHON, type Options, type Result } from './harness.js';
import { freePort } from '../lib/torch/distributed/process_group.js';

const SELF = fileURLToPath(import.meta.url);
const MB = 1 << 20;

interface Timing { mb: number; seconds: number[] }

// ---- one rank (node) ------------------------------------------------------------------------------------

async function rankMain(sizes: number[], reps: number): Promise<void> {
  const { torch } = await import('../lib/index.js');
  const dist = torch.distributed;
  await dist.init(); // RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT from the parent
  const out: Timing[] = [];
  for (const mb of sizes) {
    const t = torch.ones([(mb * MB) / 4]);
    await dist.allReduce(t); // warm-up: Gloo builds (and caches) the algorithm for this size
    const seconds: number[] = [];
    for (let i = 0; i < reps; i++) {
      await dist.barrier(); // both ranks start together, so the time is the collective's, not a skew
      const t0 = performance.now();
      await dist.allReduce(t);
      seconds.push((performance.now() - t0) / 1000);
    }
    t.dispose();
    out.push({ mb, seconds });
  }
  await dist.destroy();
  if (dist.isInitialized() === false) process.stdout.write(JSON.stringify(out) + '\n');
}

// ---- one rank (python) ------------------------------------------------------------------------------------

const PY = `
import json, os, sys, time, torch, torch.distributed as dist
sizes = json.loads(sys.argv[1]); reps = int(sys.argv[2])
dist.init_process_group('gloo')  # env:// : RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
out = []
for mb in sizes:
    t = torch.ones(mb * 1024 * 1024 // 4)
    dist.all_reduce(t)
    secs = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter(); dist.all_reduce(t); secs.append(time.perf_counter() - t0)
    out.append({'mb': mb, 'seconds': secs})
dist.destroy_process_group()
print(json.dumps(out))
`;

// ---- parent -----------------------------------------------------------------------------------------------


/** Runs 2 ranks of `cmd` and returns rank 0's timings. */
async function pair(cmd: string, args: string[], threads: number): Promise<Timing[]> {
  const port = await freePort();
  const procs = [0, 1].map((rank) => new Promise<string>((resolve, reject) => {
    const p = spawn(cmd, args, {
      env: {
        ...process.env, RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port),
        TIM_DIST_TIMEOUT_MS: '600000', TIM_TORCH_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${rank} of ${cmd} exited ${code}: ${err.slice(-2000)}`))));
  }));
  const [out0] = await Promise.all(procs);
  const line = out0!.trim().split('\n').pop()!;
  return JSON.parse(line) as Timing[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const gbps = (t: Timing): number => (t.mb * MB) / 1e9 / median(t.seconds);

export async function run(o: Options & { sizes?: number[]; reps?: number }): Promise<Result> {
  const sizes = o.sizes ?? (o.quick ? [4, 16] : [4, 16, 64, 256]);
  const reps = o.reps ?? (o.quick ? 2 : 5);
  const threads = o.threads ?? 1;
  const r = newResult('allreduce', 'all-reduce bandwidth, 2 processes on 127.0.0.1 (gloo), fp32, GB/s = bytes / median time', o.quick,
    { sizes_mb: sizes, reps, threads, world_size: 2, backend: 'gloo' });
  // Node and Python pairs alternate, `rounds` times each, and the samples of all rounds are pooled: on a
  // shared, loaded machine a single back-to-back run mostly measures which one got the quieter minute.
  const rounds = o.quick ? 1 : 3;
  const merge = (acc: Timing[] | null, t: Timing[]): Timing[] =>
    acc ? acc.map((a, i) => ({ mb: a.mb, seconds: [...a.seconds, ...t[i]!.seconds] })) : t;
  let node: Timing[] | null = null;
  let py: Timing[] | null = null;
  let pyFailed = false;
  for (let round = 0; round < rounds; round++) {
    node = merge(node, await pair(process.execPath, ['--import', 'tsx', SELF, '--rank', '--sizes', sizes.join(','), '--reps', String(reps)], threads));
    if (pyFailed) continue;
    try {
      py = merge(py, await pair(PYTHON, ['-c', PY, JSON.stringify(sizes), String(reps)], threads));
    } catch (e) {
      pyFailed = true;
      py = null;
      r.notes.push(`python torch.distributed not run: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  r.settings.rounds = rounds;
  for (const [i, t] of node!.entries()) {
    const p = py?.[i];
    // Higher is better, so the goal is a minimum ratio: our wrapper should not cost bandwidth.
    r.rows.push(p
      ? ratioRow(`allReduce ${t.mb} MB`, gbps(t), gbps(p), { min: 0.8, text: '>= 0.8x python' }, 'GB/s')
      : { case: `allReduce ${t.mb} MB`, node: gbps(t), python: null, unit: 'GB/s', ratio: null, goal: 'info', status: 'INFO' });
  }
  r.notes.push('both ranks share this machine\'s CPUs; on 2 cores Gloo\'s reduce and memcpy bound the number as much as TCP does');
  return r;
}

// ---- command line -----------------------------------------------------------------------------------------

const argv = process.argv.slice(2);
const value = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (process.argv[1] === SELF) {
  const sizes = value('sizes')?.split(',').map(Number);
  const reps = value('reps') ? Number(value('reps')) : undefined;
  if (argv.includes('--rank')) {
    await rankMain(sizes!, reps!);
  } else {
    const res = await run({ quick: argv.includes('--quick'), sizes, reps });
    console.log(formatTable(res));
    if (argv.includes('--write')) console.log(`  -> ${writeResult(res)}`);
  }
}
