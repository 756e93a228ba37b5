/**
 * Threading defaults: a mixed workload (a small transformer's forward + backward + SGD step, the shape
 * of a TiM training step), a 512x512 matmul and a 1M-element add, under intra-op threads 1 vs all
 * cores, GOMP_SPINCOUNT=10000 (the package's default) vs OMP_WAIT_POLICY PASSIVE vs unset (libgomp's own
 * 300,000 spins), OPENBLAS_NUM_THREADS unset vs 1, and OpenBLAS's idle spin
 * (OPENBLAS_THREAD_TIMEOUT, shown as BLAS_TIMEOUT) default vs short, plus the CPU time that idle
 * pool threads burn after an op.
 *
 * One Node and one Python worker per environment, all started up front and measured round-robin
 * (config after config, rep after rep), so that a burst of load on a shared machine hits every
 * configuration alike. Both workers of a configuration get exactly the same environment (the
 * package's ENV_DEFAULTS are switched off with TIM_TORCH_NO_ENV_DEFAULTS=1, so "unset" is unset)
 * and the same intra-op thread count.
 */
import os from 'node:os';
import { Pair, median, newResult, pairedRatio, ratioRow, type Options, type Result } from './harness.js';

export const MODEL = { B: 8, T: 64, D: 128, H: 4, L: 2 };

interface Cell { label: string; pair: Pair; threads: number; m: Record<string, { node: number[]; py: number[] }>; warm: number }

export async function run(o: Options): Promise<Result> {
  const cores = os.availableParallelism();
  const threadCounts = [...new Set([1, cores])];
  const envs: { label: string; env: Record<string, string | undefined> }[] = [
    { label: 'GOMP_SPINCOUNT=10000 (package)', env: { OMP_WAIT_POLICY: undefined, GOMP_SPINCOUNT: '10000' } },
    { label: 'PASSIVE', env: { OMP_WAIT_POLICY: 'PASSIVE' } },
    // OpenBLAS's idle workers spin (sched_yield) for 2^28 TSC ticks (~0.1 s) after each call; 4 means 2^4
    { label: 'PASSIVE, BLAS_TIMEOUT=4', env: { OMP_WAIT_POLICY: 'PASSIVE', OPENBLAS_THREAD_TIMEOUT: '4' } },
    { label: 'wait unset', env: { OMP_WAIT_POLICY: undefined } },
    { label: 'PASSIVE, OPENBLAS=1', env: { OMP_WAIT_POLICY: 'PASSIVE', OPENBLAS_NUM_THREADS: '1' } },
    { label: 'wait unset, OPENBLAS=1', env: { OMP_WAIT_POLICY: undefined, OPENBLAS_NUM_THREADS: '1' } },
  ];
  const reps = o.quick ? 1 : 4, steps = o.quick ? 2 : 3, mmIters = o.quick ? 3 : 6, ewIters = o.quick ? 10 : 20;
  const used = o.quick ? envs.slice(0, 1) : envs;
  const r = newResult('threads', 'Threads: intra-op threads x OMP_WAIT_POLICY x OpenBLAS settings (ms per step / op; CPU ms)', o.quick,
    { model: MODEL, steps, mmIters, ewIters, reps, cores, configs: used.map((e) => e.label), threadCounts });
  const pairs: Pair[] = [];
  try {
    const cells: Cell[] = [];
    for (const e of used) {
      const pair = await Pair.start({ ...o, env: { ...o.env, OMP_WAIT_POLICY: undefined, GOMP_SPINCOUNT: undefined, OPENBLAS_NUM_THREADS: undefined, OPENBLAS_THREAD_TIMEOUT: undefined, ...e.env, OMP_NUM_THREADS: undefined, TIM_TORCH_NUM_THREADS: undefined, TIM_TORCH_NO_ENV_DEFAULTS: '1' }, threads: 1 });
      pairs.push(pair);
      for (const t of threadCounts) cells.push({ label: `t=${t}, ${e.label}`, pair, threads: t, m: {}, warm: 0 });
    }
    const tasks: [string, string, Record<string, unknown>, number][] = [
      ['transformer step', 'mlp', { ...MODEL, steps }, steps],
      ['matmul 512', 'matmul', { n: 512, iters: mmIters }, mmIters],
      ['add 1M', 'elementwise', { op: 'add', numel: 1_000_000, iters: ewIters }, ewIters],
      // process CPU time (not wall time, so it hardly depends on the machine's load) for a matmul and
      // an add followed by 100 ms of idleness: a few ms of work, the rest is idle threads spinning
      ['CPU ms burned: matmul+add, then 100 ms idle', 'idleCpu', { sleepMs: 100 }, 1],
    ];
    // rep -1 warms up; a configuration more than 4x slower than the best there (spinning OpenMP
    // workers on a busy machine) is measured twice only, to keep the suite short.
    let fastest = Infinity;
    for (let rep = -1; rep < reps; rep++) {
      if (rep === 0) fastest = Math.min(...cells.map((c) => c.warm));
      for (const c of cells) {
        if (rep >= 2 && c.warm > 4 * fastest) continue;
        await c.pair.setThreads(c.threads);
        for (const [name, task, args, per] of tasks) {
          const ws = rep % 2 === 0 ? [c.pair.node, c.pair.py] : [c.pair.py, c.pair.node];
          for (const w of ws) {
            const ms = (await w.ask(task, args)).ms! / per;
            if (rep < 0) { if (task === 'mlp') c.warm += ms; continue; }
            const slot = (c.m[name] ??= { node: [], py: [] });
            (w === c.pair.node ? slot.node : slot.py).push(ms);
          }
        }
      }
    }
    const best: { label: string; ms: number; py: number }[] = [];
    for (const c of cells) {
      for (const [name] of tasks) {
        const s = c.m[name]!;
        r.rows.push(ratioRow(`${c.label}: ${name}`, median(s.node), median(s.py), { text: 'info' }, name.startsWith('CPU') ? 'ms CPU' : 'ms', pairedRatio(s.node, s.py)));
        if (name === 'transformer step') best.push({ label: c.label, ms: median(s.node), py: median(s.py) });
      }
    }
    best.sort((a, b) => a.ms - b.ms);
    r.notes.push(`transformer step, Node, fastest first: ${best.map((b) => `${b.label} ${b.ms.toFixed(1)}`).join('; ')} (ms)`);
    r.notes.push(`transformer step, Python, same configs: ${best.map((b) => `${b.label} ${b.py.toFixed(1)}`).join('; ')} (ms)`);
    return r;
  } finally {
    await Promise.all(pairs.map((p) => p.close()));
  }
}
